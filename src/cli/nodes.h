/* What the cluster commands share: the node table of "node list" and
 * "cluster status", and the admin POSTs behind "node cordon|uncordon".
 * The NODE object is the one GET /v1/nodes answers (docs/api.md,
 * "Cluster"). */
#ifndef NC_CLI_NODES_H
#define NC_CLI_NODES_H

#include "cli/cli.h"

#include <jansson.h>

/* Prints nodes (the answer's "nodes" array, borrowed) as the table
 * NAME STATE ZONE VCPUS MEMORY VMS CONTROLLER on cli->out, VCPUS and
 * MEMORY as allocated/capacity. Returns the exit status. */
int nc__cli_nodes_print(struct nc_cli *cli, const json_t *nodes);

/* The element of nodes named name, or NULL. Borrowed from nodes. */
const json_t *nc__cli_nodes_find(const json_t *nodes, const char *name);

/* The whole of "node cordon|uncordon NODE": POST
 * /v1/nodes/{node}/{action}, then `node "NODE" <done_word>`. Returns the
 * exit status. */
int nc__cli_node_admin(struct nc_cli *cli, int argc, char **argv, const char *action,
                       const char *done_word);

#endif
