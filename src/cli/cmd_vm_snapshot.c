/* novacron vm snapshot NAME SNAP [--no-wait]:
 * POST /v1/vms/{name}/snapshots {"name": SNAP}. */
#include "cli/action.h"

#include <stdio.h>

static int prepare(struct nc_cli *cli, const char *const *pos, void *arg,
                   struct nc__cli_request *req) {
  int rc = nc__cli_path(cli, req->path, sizeof req->path, "/v1/vms/%s/snapshots", pos[0]);
  if (rc != 0)
    return rc;
  req->body = json_pack("{s:s}", "name", pos[1]);
  snprintf(req->done, sizeof req->done, "snapshot \"%s\" of vm \"%s\" taken", pos[1], pos[0]);
  return 0;
}

int nc_cli_cmd_vm_snapshot(struct nc_cli *cli, int argc, char **argv) {
  static const char *const names[] = {"NAME", "SNAP"};
  const struct nc__cli_mutation m = {"POST", names, 2, NULL, prepare, NULL};
  return nc__cli_run_mutation(cli, argc, argv, &m);
}
