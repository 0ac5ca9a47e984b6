/* novacron vm restore NAME SNAP [--no-wait]:
 * POST /v1/vms/{name}/snapshots/{snap}/restore. */
#include "cli/action.h"

#include <stdio.h>

static int prepare(struct nc_cli *cli, const char *const *pos, void *arg,
                   struct nc__cli_request *req) {
  snprintf(req->done, sizeof req->done, "vm \"%s\" restored to snapshot \"%s\"", pos[0], pos[1]);
  return nc__cli_path(cli, req->path, sizeof req->path, "/v1/vms/%s/snapshots/%s/restore", pos[0],
                      pos[1]);
}

int nc_cli_cmd_vm_restore(struct nc_cli *cli, int argc, char **argv) {
  static const char *const names[] = {"NAME", "SNAP"};
  const struct nc__cli_mutation m = {"POST", names, 2, NULL, prepare, NULL};
  return nc__cli_run_mutation(cli, argc, argv, &m);
}
