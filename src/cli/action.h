/* Pieces every command uses: building a route path from user input, and
 * the request-then-follow-the-operation tail of mutating commands. */
#ifndef NC_CLI_ACTION_H
#define NC_CLI_ACTION_H

#include "cli/cli.h"

#include <jansson.h>

/* nc_cli_pathf for commands: on failure reports a usage error (a name too
 * long for a path) and returns NC_CLI_EXIT_USAGE; 0 on success. */
int nc__cli_path(struct nc_cli *cli, char *buf, size_t n, const char *fmt, ...);

/* Sends method path body (borrowed, may be NULL), then follows the
 * operation the answer names (its "operation" member, or the answer itself
 * when it is an operation), printing `done` on success. Returns the exit
 * status. */
int nc__cli_mutate(struct nc_cli *cli, const char *method, const char *path, const json_t *body,
                   bool no_wait, const char *done);

/* The whole of "vm <action> NAME [--no-wait]": POST
 * /v1/vms/{name}/{action}, and `vm "NAME" <done_word>` on success. */
int nc__cli_vm_simple_action(struct nc_cli *cli, int argc, char **argv, const char *action,
                             const char *done_word);

#endif
