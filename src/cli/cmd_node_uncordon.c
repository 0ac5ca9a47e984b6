/* novacron node uncordon NODE: POST /v1/nodes/{node}/uncordon. Also
 * abandons a drain in progress (the node is "active" again). */
#include "cli/nodes.h"

int nc_cli_cmd_node_uncordon(struct nc_cli *cli, int argc, char **argv) {
  return nc__cli_node_admin(cli, argc, argv, "uncordon", "uncordoned");
}
