/* Per-command argument parsing, table-driven like the rest of the CLI.
 *
 * Flags are long ("--image IMG" or "--image=IMG") and may come before,
 * between or after the positional arguments; "--" ends the flags. Every
 * command also takes "--output table|json" (-o) and "--help" (-h). Errors
 * name the flag and print the command's usage line. */
#ifndef NC_CLI_ARGS_H
#define NC_CLI_ARGS_H

#include "cli/cli.h"

#include <stdbool.h>

#define NC_CLI_LIST_MAX 64

struct nc_cli_strlist {
  const char *v[NC_CLI_LIST_MAX];
  int n;
};

enum nc_cli_opt_type {
  NC_CLI_OPT_BOOL, /* dest is bool *; takes no value */
  NC_CLI_OPT_STR,  /* dest is const char **; given at most once */
  NC_CLI_OPT_LIST, /* dest is struct nc_cli_strlist *; repeatable */
};

struct nc_cli_opt {
  const char *name; /* without the dashes: "image" */
  enum nc_cli_opt_type type;
  void *dest;
};

struct nc_cli_argspec {
  const struct nc_cli_opt *opts; /* ends with a {NULL} entry; may be NULL */
  const char *const *pos_names;  /* "NAME", "SNAP", ... for messages */
  int pos_required;
  int pos_max;
};

/* Parsing results besides 0: help was printed, or a usage error was. */
#define NC_CLI_ARGS_HELP 1

/* Parses argv[1..argc) (argv[0] is the verb) for cli->cmd into the
 * destinations and pos[0..spec->pos_max). The strings stay argv's. Returns
 * 0; NC_CLI_ARGS_HELP after printing the command's help to cli->out; or
 * -EINVAL after printing a usage error to cli->err. */
int nc_cli_args_parse(struct nc_cli *cli, const struct nc_cli_argspec *spec, int argc,
                      char **argv, const char **pos);

/* The exit status for a non-zero nc_cli_args_parse result. */
int nc_cli_args_status(int rc);

/* Parses an --output value into cli->output; -EINVAL when it is neither
 * "table" nor "json". */
int nc_cli_parse_output(struct nc_cli *cli, const char *value);

#endif
