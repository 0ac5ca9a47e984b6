/* novacron vm stop NAME [--force] [--timeout-s N] [--no-wait]:
 * POST /v1/vms/{name}/stop with {"force", "timeout_s"} when given. */
#include "cli/action.h"
#include "cli/fmt.h"

#include <stdio.h>

struct stop_flags {
  bool force;
  const char *timeout_s;
};

static int prepare(struct nc_cli *cli, const char *const *pos, void *arg,
                   struct nc__cli_request *req) {
  const struct stop_flags *f = arg;
  uint64_t secs = 0;
  int rc;

  if (f->timeout_s != NULL && nc_cli_parse_uint(f->timeout_s, 86400, &secs) != 0)
    return nc_cli_usage_error(cli, "--timeout-s \"%s\" is not a number of seconds (0 to 86400)",
                              f->timeout_s);
  rc = nc__cli_path(cli, req->path, sizeof req->path, "/v1/vms/%s/stop", pos[0]);
  if (rc != 0)
    return rc;
  if (f->force || f->timeout_s != NULL) {
    req->body = json_object();
    if (f->force)
      json_object_set_new(req->body, "force", json_true());
    if (f->timeout_s != NULL)
      json_object_set_new(req->body, "timeout_s", json_integer((json_int_t)secs));
  }
  snprintf(req->done, sizeof req->done, "vm \"%s\" stopped", pos[0]);
  return 0;
}

int nc_cli_cmd_vm_stop(struct nc_cli *cli, int argc, char **argv) {
  static const char *const names[] = {"NAME"};
  struct stop_flags f = {false, NULL};
  const struct nc_cli_opt opts[] = {{"force", NC_CLI_OPT_BOOL, &f.force},
                                    {"timeout-s", NC_CLI_OPT_STR, &f.timeout_s},
                                    {NULL, 0, NULL}};
  const struct nc__cli_mutation m = {"POST", names, 1, opts, prepare, &f};
  return nc__cli_run_mutation(cli, argc, argv, &m);
}
