#include "cli/args.h"

#include "cli/fmt.h"

#include <errno.h>
#include <string.h>

int nc_cli_parse_output(struct nc_cli *cli, const char *value) {
  if (strcmp(value, "table") == 0)
    cli->output = NC_CLI_OUTPUT_TABLE;
  else if (strcmp(value, "json") == 0)
    cli->output = NC_CLI_OUTPUT_JSON;
  else
    return -EINVAL;
  return 0;
}

int nc_cli_args_status(int rc) { return rc == NC_CLI_ARGS_HELP ? NC_CLI_EXIT_OK : NC_CLI_EXIT_USAGE; }

static const struct nc_cli_opt *find_opt(const struct nc_cli_opt *opts, const char *name,
                                         size_t len) {
  for (const struct nc_cli_opt *o = opts; o != NULL && o->name != NULL; o++)
    if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
      return o;
  return NULL;
}

/* Handles one flag at argv[*i]; advances *i past its value. */
static int take_flag(struct nc_cli *cli, const struct nc_cli_argspec *spec, int argc, char **argv,
                     int *i) {
  const char *arg = argv[*i];
  const char *name, *eq, *value = NULL;
  size_t len;

  /* The two short flags every command has. */
  if (strcmp(arg, "-h") == 0)
    arg = "--help";
  else if (strcmp(arg, "-o") == 0)
    arg = "--output";
  if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0' || arg[2] == '=') {
    nc_cli_usage_error(cli, "unknown flag %s", argv[*i]);
    return -EINVAL;
  }
  name = arg + 2;
  eq = strchr(name, '=');
  len = eq ? (size_t)(eq - name) : strlen(name);
  if (eq != NULL)
    value = eq + 1;

  if (len == 4 && strncmp(name, "help", 4) == 0 && value == NULL) {
    nc_cli_print_cmd_help(cli->out, cli->cmd);
    return NC_CLI_ARGS_HELP;
  }
  bool is_output = len == 6 && strncmp(name, "output", 6) == 0;
  const struct nc_cli_opt *o = is_output ? NULL : find_opt(spec->opts, name, len);
  if (!is_output && o == NULL) {
    nc_cli_usage_error(cli, "unknown flag --%.*s", (int)len, name);
    return -EINVAL;
  }
  if (o != NULL && o->type == NC_CLI_OPT_BOOL) {
    if (value != NULL) {
      nc_cli_usage_error(cli, "--%s takes no value", o->name);
      return -EINVAL;
    }
    *(bool *)o->dest = true;
    return 0;
  }
  if (value == NULL) {
    if (*i + 1 >= argc) {
      nc_cli_usage_error(cli, "--%.*s needs a value", (int)len, name);
      return -EINVAL;
    }
    value = argv[++*i];
  }
  if (*value == '\0') {
    nc_cli_usage_error(cli, "--%.*s needs a non-empty value", (int)len, name);
    return -EINVAL;
  }
  if (is_output) {
    if (nc_cli_parse_output(cli, value) != 0) {
      nc_cli_usage_error(cli, "--output \"%s\" is not table or json", value);
      return -EINVAL;
    }
    return 0;
  }
  if (o->type == NC_CLI_OPT_STR) {
    const char **dest = o->dest;
    if (*dest != NULL) {
      nc_cli_usage_error(cli, "--%s given twice", o->name);
      return -EINVAL;
    }
    *dest = value;
    return 0;
  }
  struct nc_cli_strlist *l = o->dest;
  if (l->n >= NC_CLI_LIST_MAX) {
    nc_cli_usage_error(cli, "--%s given more than %d times", o->name, NC_CLI_LIST_MAX);
    return -EINVAL;
  }
  l->v[l->n++] = value;
  return 0;
}

int nc_cli_args_parse(struct nc_cli *cli, const struct nc_cli_argspec *spec, int argc,
                      char **argv, const char **pos) {
  int npos = 0;
  bool flags_done = false;

  /* Everything may end up in a JSON string, which must be UTF-8. */
  for (int i = 1; i < argc; i++)
    if (!nc_cli_utf8_valid(argv[i])) {
      nc_cli_usage_error(cli, "argument %d is not valid UTF-8", i);
      return -EINVAL;
    }
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!flags_done && strcmp(arg, "--") == 0) {
      flags_done = true;
      continue;
    }
    if (!flags_done && arg[0] == '-' && arg[1] != '\0') {
      int rc = take_flag(cli, spec, argc, argv, &i);
      if (rc != 0)
        return rc;
      continue;
    }
    if (npos >= spec->pos_max) {
      nc_cli_usage_error(cli, "unexpected argument \"%s\"", arg);
      return -EINVAL;
    }
    if (*arg == '\0') {
      nc_cli_usage_error(cli, "%s must not be empty", spec->pos_names[npos]);
      return -EINVAL;
    }
    pos[npos++] = arg;
  }
  if (npos < spec->pos_required) {
    nc_cli_usage_error(cli, "missing %s", spec->pos_names[npos]);
    return -EINVAL;
  }
  for (int i = npos; i < spec->pos_max; i++)
    pos[i] = NULL;
  return 0;
}
