/* novacron help [NOUN [VERB]]: the same text as --help at each level. */
#include "cli/args.h"

int nc_cli_cmd_help(struct nc_cli *cli, int argc, char **argv) {
  static const char *const names[] = {"NOUN", "VERB"};
  const struct nc_cli_argspec spec = {NULL, names, 0, 2};
  const char *pos[2];
  int rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  if (pos[0] == NULL) {
    nc_cli_print_global_help(cli->out);
    return NC_CLI_EXIT_OK;
  }
  if (pos[1] == NULL && nc_cli_is_noun(pos[0])) {
    nc_cli_print_noun_help(cli->out, pos[0]);
    return NC_CLI_EXIT_OK;
  }
  const struct nc_cli_cmd *cmd =
      pos[1] != NULL ? nc_cli_find(pos[0], pos[1]) : nc_cli_find(NULL, pos[0]);
  if (cmd == NULL)
    return nc_cli_usage_error(cli, "no command \"%s%s%s\"", pos[0], pos[1] ? " " : "",
                              pos[1] ? pos[1] : "");
  nc_cli_print_cmd_help(cli->out, cmd);
  return NC_CLI_EXIT_OK;
}
