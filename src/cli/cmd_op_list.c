/* novacron op list: GET /v1/operations (newest first) as ID KIND TARGET
 * STATUS PROGRESS AGE. */
#include "cli/args.h"
#include "cli/call.h"
#include "cli/op.h"
#include "cli/table.h"

int nc_cli_cmd_op_list(struct nc_cli *cli, int argc, char **argv) {
  static const char *const headers[] = {"ID", "KIND", "TARGET", "STATUS", "PROGRESS", "AGE"};
  const struct nc_cli_argspec spec = {NULL, NULL, 0, 0};
  struct nc_cli_table *t = NULL;
  json_t *resp = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, NULL);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc_cli_call(cli, "GET", "/v1/operations", NULL, &resp);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, resp);
    goto out;
  }
  const json_t *ops = json_object_get(resp, "operations");
  if (!json_is_array(ops)) {
    rc = nc_cli_fail(cli, "GET /v1/operations: the answer has no \"operations\" list");
    goto out;
  }
  if (nc_cli_table_new(6, headers, &t) != 0) {
    rc = nc_cli_fail(cli, "out of memory");
    goto out;
  }
  size_t i;
  const json_t *op;
  json_array_foreach(ops, i, op) {
    char progress[16], age[32];
    nc_cli_op_progress(op, progress, sizeof progress);
    nc_cli_jage(cli, op, "created_at", age, sizeof age);
    const char *cells[] = {nc_cli_jstr(op, "id"),     nc_cli_jstr(op, "kind"),
                           nc_cli_jstr(op, "target"), nc_cli_jstr(op, "status"),
                           progress,                  age};
    if (nc_cli_table_add(t, cells) != 0) {
      rc = nc_cli_fail(cli, "out of memory");
      goto out;
    }
  }
  nc_cli_table_print(t, cli->out);
out:
  nc_cli_table_destroy(t);
  json_decref(resp);
  return rc;
}
