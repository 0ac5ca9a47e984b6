/* novacron vm reboot NAME [--no-wait]: POST /v1/vms/{name}/reboot. */
#include "cli/action.h"

int nc_cli_cmd_vm_reboot(struct nc_cli *cli, int argc, char **argv) {
  return nc__cli_vm_simple_action(cli, argc, argv, "reboot", "rebooted");
}
