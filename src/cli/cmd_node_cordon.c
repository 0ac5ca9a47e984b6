/* novacron node cordon NODE: POST /v1/nodes/{node}/cordon. The scheduler
 * places nothing new there; what runs there stays. */
#include "cli/nodes.h"

int nc_cli_cmd_node_cordon(struct nc_cli *cli, int argc, char **argv) {
  return nc__cli_node_admin(cli, argc, argv, "cordon", "cordoned");
}
