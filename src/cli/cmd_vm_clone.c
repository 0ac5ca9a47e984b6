/* novacron vm clone NAME NEWNAME [--start] [--no-wait]:
 * POST /v1/vms/{name}/clone {"name": NEWNAME, "start": bool}. */
#include "cli/action.h"
#include "cli/args.h"

int nc_cli_cmd_vm_clone(struct nc_cli *cli, int argc, char **argv) {
  bool no_wait = false, start = false;
  const struct nc_cli_opt opts[] = {{"no-wait", NC_CLI_OPT_BOOL, &no_wait},
                                    {"start", NC_CLI_OPT_BOOL, &start},
                                    {NULL, 0, NULL}};
  static const char *const names[] = {"NAME", "NEWNAME"};
  const struct nc_cli_argspec spec = {opts, names, 2, 2};
  const char *pos[2];
  char path[512], done[512];
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc__cli_path(cli, path, sizeof path, "/v1/vms/%s/clone", pos[0]);
  if (rc != 0)
    return rc;
  json_t *body = json_pack("{s:s, s:b}", "name", pos[1], "start", start);
  snprintf(done, sizeof done, "vm \"%s\" cloned from \"%s\"%s", pos[1], pos[0],
           start ? " and started" : "");
  rc = nc__cli_mutate(cli, "POST", path, body, no_wait, done);
  json_decref(body);
  return rc;
}
