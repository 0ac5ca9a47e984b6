#include "cli/action.h"

#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/op.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

int nc__cli_path(struct nc_cli *cli, char *buf, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = nc_cli_vpathf(buf, n, fmt, ap);
  va_end(ap);
  if (rc == 0)
    return 0;
  return nc_cli_usage_error(cli, "%s", rc == -ENAMETOOLONG ? "a name is too long" : "a name is empty");
}

int nc__cli_mutate(struct nc_cli *cli, const char *method, const char *path, const json_t *body,
                   bool no_wait, const char *done) {
  json_t *resp = NULL;
  int rc = nc_cli_call(cli, method, path, body, &resp);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  const json_t *op = json_object_get(resp, "operation");
  if (op == NULL && nc_cli_jstr(resp, "id") != NULL && nc_cli_jstr(resp, "status") != NULL)
    op = resp;
  if (json_is_null(op))
    op = NULL;
  rc = nc_cli_op_follow(cli, resp, op, no_wait, done);
  json_decref(resp);
  return rc;
}

int nc__cli_vm_simple_action(struct nc_cli *cli, int argc, char **argv, const char *action,
                             const char *done_word) {
  bool no_wait = false;
  const struct nc_cli_opt opts[] = {{"no-wait", NC_CLI_OPT_BOOL, &no_wait}, {NULL, 0, NULL}};
  static const char *const names[] = {"NAME"};
  const struct nc_cli_argspec spec = {opts, names, 1, 1};
  const char *pos[1];
  char path[512], done[512];
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc__cli_path(cli, path, sizeof path, "/v1/vms/%s/", pos[0]);
  if (rc != 0)
    return rc;
  snprintf(path + strlen(path), sizeof path - strlen(path), "%s", action);
  snprintf(done, sizeof done, "vm \"%s\" %s", pos[0], done_word);
  return nc__cli_mutate(cli, "POST", path, NULL, no_wait, done);
}
