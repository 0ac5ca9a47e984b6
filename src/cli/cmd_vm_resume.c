/* novacron vm resume NAME [--no-wait]: POST /v1/vms/{name}/resume. */
#include "cli/action.h"

int nc_cli_cmd_vm_resume(struct nc_cli *cli, int argc, char **argv) {
  return nc__cli_vm_simple_action(cli, argc, argv, "resume", "resumed");
}
