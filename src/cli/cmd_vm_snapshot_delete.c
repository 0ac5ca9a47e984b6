/* novacron vm snapshot-delete NAME SNAP [--no-wait]:
 * DELETE /v1/vms/{name}/snapshots/{snap}. */
#include "cli/action.h"

#include <stdio.h>

static int prepare(struct nc_cli *cli, const char *const *pos, void *arg,
                   struct nc__cli_request *req) {
  snprintf(req->done, sizeof req->done, "snapshot \"%s\" of vm \"%s\" deleted", pos[1], pos[0]);
  return nc__cli_path(cli, req->path, sizeof req->path, "/v1/vms/%s/snapshots/%s", pos[0], pos[1]);
}

int nc_cli_cmd_vm_snapshot_delete(struct nc_cli *cli, int argc, char **argv) {
  static const char *const names[] = {"NAME", "SNAP"};
  const struct nc__cli_mutation m = {"DELETE", names, 2, NULL, prepare, NULL};
  return nc__cli_run_mutation(cli, argc, argv, &m);
}
