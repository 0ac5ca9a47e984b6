/* novacron version: the client's version. It does not ask the daemon, so
 * it works when novacrond is down. */
#include "cli/args.h"
#include "cli/call.h"
#include "nc_version.h"

int nc_cli_cmd_version(struct nc_cli *cli, int argc, char **argv) {
  const struct nc_cli_argspec spec = {NULL, NULL, 0, 0};
  int rc = nc_cli_args_parse(cli, &spec, argc, argv, NULL);
  if (rc != 0)
    return nc_cli_args_status(rc);
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    json_t *j = json_pack("{s:s}", "version", NC_VERSION);
    nc_cli_print_json(cli, j);
    json_decref(j);
  } else {
    fprintf(cli->out, "novacron %s\n", NC_VERSION);
  }
  return NC_CLI_EXIT_OK;
}
