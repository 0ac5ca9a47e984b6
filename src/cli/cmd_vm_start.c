/* novacron vm start NAME [--no-wait]: POST /v1/vms/{name}/start. */
#include "cli/action.h"

int nc_cli_cmd_vm_start(struct nc_cli *cli, int argc, char **argv) {
  return nc__cli_vm_simple_action(cli, argc, argv, "start", "started");
}
