/* novacron vm snapshot NAME SNAP [--no-wait]:
 * POST /v1/vms/{name}/snapshots {"name": SNAP}. */
#include "cli/action.h"
#include "cli/args.h"

int nc_cli_cmd_vm_snapshot(struct nc_cli *cli, int argc, char **argv) {
  bool no_wait = false;
  const struct nc_cli_opt opts[] = {{"no-wait", NC_CLI_OPT_BOOL, &no_wait}, {NULL, 0, NULL}};
  static const char *const names[] = {"NAME", "SNAP"};
  const struct nc_cli_argspec spec = {opts, names, 2, 2};
  const char *pos[2];
  char path[512], done[512];
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc__cli_path(cli, path, sizeof path, "/v1/vms/%s/snapshots", pos[0]);
  if (rc != 0)
    return rc;
  json_t *body = json_pack("{s:s}", "name", pos[1]);
  snprintf(done, sizeof done, "snapshot \"%s\" of vm \"%s\" taken", pos[1], pos[0]);
  rc = nc__cli_mutate(cli, "POST", path, body, no_wait, done);
  json_decref(body);
  return rc;
}
