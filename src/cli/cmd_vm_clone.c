/* novacron vm clone NAME NEWNAME [--start] [--no-wait]:
 * POST /v1/vms/{name}/clone {"name": NEWNAME, "start": bool}. */
#include "cli/action.h"

#include <stdio.h>

static int prepare(struct nc_cli *cli, const char *const *pos, void *arg,
                   struct nc__cli_request *req) {
  const bool *start = arg;
  int rc = nc__cli_path(cli, req->path, sizeof req->path, "/v1/vms/%s/clone", pos[0]);
  if (rc != 0)
    return rc;
  req->body = json_pack("{s:s, s:b}", "name", pos[1], "start", *start);
  snprintf(req->done, sizeof req->done, "vm \"%s\" cloned from \"%s\"%s", pos[1], pos[0],
           *start ? " and started" : "");
  return 0;
}

int nc_cli_cmd_vm_clone(struct nc_cli *cli, int argc, char **argv) {
  static const char *const names[] = {"NAME", "NEWNAME"};
  bool start = false;
  const struct nc_cli_opt opts[] = {{"start", NC_CLI_OPT_BOOL, &start}, {NULL, 0, NULL}};
  const struct nc__cli_mutation m = {"POST", names, 2, opts, prepare, &start};
  return nc__cli_run_mutation(cli, argc, argv, &m);
}
