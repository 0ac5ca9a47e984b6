/* novacron op show ID [--wait]: GET /v1/operations/{id}. With --wait it
 * first waits for the operation to finish, and the exit status then says
 * how it ended (1 when it failed or was cancelled). */
#include "cli/action.h"
#include "cli/args.h"
#include "cli/call.h"
#include "cli/op.h"

int nc_cli_cmd_op_show(struct nc_cli *cli, int argc, char **argv) {
  bool wait = false;
  const struct nc_cli_opt opts[] = {{"wait", NC_CLI_OPT_BOOL, &wait}, {NULL, 0, NULL}};
  static const char *const names[] = {"ID"};
  const struct nc_cli_argspec spec = {opts, names, 1, 1};
  const char *pos[1];
  char path[512];
  json_t *op = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  if (wait) {
    rc = nc_cli_op_wait(cli, pos[0], &op);
  } else {
    rc = nc__cli_path(cli, path, sizeof path, "/v1/operations/%s", pos[0]);
    if (rc != 0)
      return rc;
    rc = nc_cli_call(cli, "GET", path, NULL, &op);
  }
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON)
    nc_cli_print_json(cli, op);
  else
    nc_cli_op_print(cli, op);
  if (wait)
    rc = nc_cli_op_outcome(cli, op);
  json_decref(op);
  return rc;
}
