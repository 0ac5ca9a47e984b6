/* novacron op cancel ID: POST /v1/operations/{id}/cancel. Cancelling is a
 * request; the answer is the operation as it stands, and it may still
 * finish on its own. */
#include "cli/action.h"
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"

int nc_cli_cmd_op_cancel(struct nc_cli *cli, int argc, char **argv) {
  static const char *const names[] = {"ID"};
  const struct nc_cli_argspec spec = {NULL, names, 1, 1};
  const char *pos[1];
  char path[512], status[64];
  json_t *op = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc__cli_path(cli, path, sizeof path, "/v1/operations/%s/cancel", pos[0]);
  if (rc != 0)
    return rc;
  rc = nc_cli_call(cli, "POST", path, NULL, &op);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, op);
  } else {
    const char *st = nc_cli_jstr(op, "status");
    nc_cli_sanitize(st ? st : "unknown", status, sizeof status);
    fprintf(cli->out, "cancel requested for %s (now %s)\n", pos[0], status);
  }
  json_decref(op);
  return NC_CLI_EXIT_OK;
}
