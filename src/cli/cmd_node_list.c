/* novacron node list: GET /v1/nodes, as NAME STATE ROLE ZONE VCPUS MEMORY
 * VMS CONTROLLER (VCPUS and MEMORY allocated/capacity). */
#include "cli/args.h"
#include "cli/call.h"
#include "cli/nodes.h"

int nc_cli_cmd_node_list(struct nc_cli *cli, int argc, char **argv) {
  const struct nc_cli_argspec spec = {NULL, NULL, 0, 0};
  json_t *resp = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, NULL);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc_cli_call(cli, "GET", "/v1/nodes", NULL, &resp);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, resp);
  } else if (!json_is_array(json_object_get(resp, "nodes"))) {
    rc = nc_cli_fail(cli, "GET /v1/nodes: the answer has no \"nodes\" list");
  } else {
    rc = nc__cli_nodes_print(cli, json_object_get(resp, "nodes"));
  }
  json_decref(resp);
  return rc;
}
