/* novacron vm stop NAME [--force] [--timeout-s N] [--no-wait]:
 * POST /v1/vms/{name}/stop with {"force", "timeout_s"} when given. */
#include "cli/action.h"
#include "cli/args.h"
#include "cli/fmt.h"

int nc_cli_cmd_vm_stop(struct nc_cli *cli, int argc, char **argv) {
  bool no_wait = false, force = false;
  const char *timeout_s = NULL;
  const struct nc_cli_opt opts[] = {{"no-wait", NC_CLI_OPT_BOOL, &no_wait},
                                    {"force", NC_CLI_OPT_BOOL, &force},
                                    {"timeout-s", NC_CLI_OPT_STR, &timeout_s},
                                    {NULL, 0, NULL}};
  static const char *const names[] = {"NAME"};
  const struct nc_cli_argspec spec = {opts, names, 1, 1};
  const char *pos[1];
  char path[512], done[512];
  json_t *body = NULL;
  uint64_t secs = 0;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  if (timeout_s != NULL && nc_cli_parse_uint(timeout_s, 86400, &secs) != 0)
    return nc_cli_usage_error(cli, "--timeout-s \"%s\" is not a number of seconds (0 to 86400)",
                              timeout_s);
  rc = nc__cli_path(cli, path, sizeof path, "/v1/vms/%s/stop", pos[0]);
  if (rc != 0)
    return rc;
  if (force || timeout_s != NULL) {
    body = json_object();
    if (force)
      json_object_set_new(body, "force", json_true());
    if (timeout_s != NULL)
      json_object_set_new(body, "timeout_s", json_integer((json_int_t)secs));
  }
  snprintf(done, sizeof done, "vm \"%s\" stopped", pos[0]);
  rc = nc__cli_mutate(cli, "POST", path, body, no_wait, done);
  json_decref(body);
  return rc;
}
