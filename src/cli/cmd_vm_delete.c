/* novacron vm delete NAME [--no-wait]: DELETE /v1/vms/{name}, which stops
 * the VM if needed and removes its disk and files. */
#include "cli/action.h"

#include <stdio.h>

static int prepare(struct nc_cli *cli, const char *const *pos, void *arg,
                   struct nc__cli_request *req) {
  snprintf(req->done, sizeof req->done, "vm \"%s\" deleted", pos[0]);
  return nc__cli_path(cli, req->path, sizeof req->path, "/v1/vms/%s", pos[0]);
}

int nc_cli_cmd_vm_delete(struct nc_cli *cli, int argc, char **argv) {
  static const char *const names[] = {"NAME"};
  const struct nc__cli_mutation m = {"DELETE", names, 1, NULL, prepare, NULL};
  return nc__cli_run_mutation(cli, argc, argv, &m);
}
