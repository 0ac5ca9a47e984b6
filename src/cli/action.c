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
  rc = nc__cli_follow_answer(cli, resp, no_wait, done);
  json_decref(resp);
  return rc;
}

int nc__cli_follow_answer(struct nc_cli *cli, const json_t *resp, bool no_wait,
                          const char *done) {
  const json_t *op = json_object_get(resp, "operation");
  if (op == NULL && nc_cli_jstr(resp, "id") != NULL && nc_cli_jstr(resp, "status") != NULL)
    op = resp;
  if (json_is_null(op))
    op = NULL;
  return nc_cli_op_follow(cli, resp, op, no_wait, done);
}

int nc__cli_run_mutation(struct nc_cli *cli, int argc, char **argv,
                         const struct nc__cli_mutation *m) {
  bool no_wait = false;
  struct nc_cli_opt opts[NC__CLI_MUTATION_OPTS_MAX + 2] = {{"no-wait", NC_CLI_OPT_BOOL, &no_wait}};
  const struct nc_cli_argspec spec = {opts, m->pos_names, m->npos, m->npos};
  const char *pos[2] = {NULL, NULL};
  struct nc__cli_request req = {.body = NULL};
  size_t nopts = 1;
  int rc;

  if (m->npos < 1 || m->npos > 2)
    return nc_cli_fail(cli, "internal error: %d positional arguments (1 or 2)", m->npos);
  for (const struct nc_cli_opt *o = m->opts; o != NULL && o->name != NULL; o++) {
    if (nopts > NC__CLI_MUTATION_OPTS_MAX)
      return nc_cli_fail(cli, "internal error: more than %d flags", NC__CLI_MUTATION_OPTS_MAX);
    opts[nopts++] = *o;
  }
  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = m->prepare(cli, pos, m->arg, &req);
  if (rc == 0)
    rc = nc__cli_mutate(cli, m->method, req.path, req.body, no_wait, req.done);
  json_decref(req.body);
  return rc;
}

struct simple_action {
  const char *action, *done_word;
};

static int prepare_simple_action(struct nc_cli *cli, const char *const *pos, void *arg,
                                 struct nc__cli_request *req) {
  const struct simple_action *a = arg;
  /* The whole path through nc__cli_path, so a name too long for it is a
   * usage error rather than a request sent to a cut-short path. */
  int rc = nc__cli_path(cli, req->path, sizeof req->path, "/v1/vms/%s/%s", pos[0], a->action);
  if (rc != 0)
    return rc;
  snprintf(req->done, sizeof req->done, "vm \"%s\" %s", pos[0], a->done_word);
  return 0;
}

int nc__cli_vm_simple_action(struct nc_cli *cli, int argc, char **argv, const char *action,
                             const char *done_word) {
  static const char *const names[] = {"NAME"};
  struct simple_action a = {action, done_word};
  const struct nc__cli_mutation m = {"POST", names, 1, NULL, prepare_simple_action, &a};
  return nc__cli_run_mutation(cli, argc, argv, &m);
}
