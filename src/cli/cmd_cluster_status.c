/* novacron cluster status: GET /v1/cluster, as one summary line (this
 * node, the controller, how many nodes hold a lease) over the node table
 * of "node list". On a single node the daemon answers 404 not_clustered,
 * which call.c reports as "this node is not in a cluster". */
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/nodes.h"

#include <inttypes.h>

int nc_cli_cmd_cluster_status(struct nc_cli *cli, int argc, char **argv) {
  const struct nc_cli_argspec spec = {NULL, NULL, 0, 0};
  json_t *st = NULL;
  char line[512], clean[512], ctl[128];
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, NULL);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc_cli_call(cli, "GET", "/v1/cluster", NULL, &st);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, st);
    goto out;
  }
  /* No controller is a normal moment (an election after the last one's
   * lease ran out), so say that rather than print an empty field. */
  const char *controller = nc_cli_jstr(st, "controller");
  if (controller != NULL)
    snprintf(ctl, sizeof ctl, "%s", controller);
  else
    snprintf(ctl, sizeof ctl, "none (election pending)");
  snprintf(line, sizeof line,
           "node %s (lease %s), controller %s, %" PRId64 " of %" PRId64 " nodes alive",
           nc_cli_jstr_or(st, "node", "?"),
           json_is_true(json_object_get(st, "lease_valid")) ? "valid" : "EXPIRED", ctl,
           nc_cli_jint(st, "nodes_alive", 0), nc_cli_jint(st, "nodes_total", 0));
  nc_cli_sanitize(line, clean, sizeof clean);
  fprintf(cli->out, "%s\n\n", clean);
  rc = nc__cli_nodes_print(cli, json_object_get(st, "nodes"));
out:
  json_decref(st);
  return rc;
}
