#include "cli/list.h"

#include "cli/action.h"
#include "cli/args.h"
#include "cli/call.h"
#include "cli/table.h"

#include <string.h>

int nc_cli_list_print(struct nc_cli *cli, const struct nc_cli_list_spec *spec,
                      const json_t *items) {
  struct nc_cli_table *t = NULL;
  struct nc_cli_list_row row;
  size_t i;
  if (spec->ncols == 0 || spec->ncols > NC_CLI_LIST_COLS_MAX)
    return nc_cli_fail(cli, "internal error: a list of %zu columns (1 to %d)", spec->ncols,
                       NC_CLI_LIST_COLS_MAX);
  const json_t *item;
  int rc = NC_CLI_EXIT_OK;

  if (nc_cli_table_new(spec->ncols, spec->headers, &t) != 0)
    return nc_cli_fail(cli, "out of memory");
  json_array_foreach(items, i, item) {
    memset(row.cells, 0, sizeof row.cells);
    spec->row(cli, item, &row, spec->row_data);
    if (nc_cli_table_add(t, row.cells) != 0) {
      rc = nc_cli_fail(cli, "out of memory");
      goto out;
    }
  }
  nc_cli_table_print(t, cli->out);
out:
  nc_cli_table_destroy(t);
  return rc;
}

int nc_cli_list_run(struct nc_cli *cli, int argc, char **argv,
                    const struct nc_cli_list_spec *spec) {
  const int npos = spec->pos_names != NULL ? 1 : 0;
  const struct nc_cli_argspec argspec = {NULL, spec->pos_names, npos, npos};
  const char *pos[1] = {NULL};
  char path[512];
  json_t *resp = NULL;
  int rc;

  if (spec->ncols == 0 || spec->ncols > NC_CLI_LIST_COLS_MAX)
    return nc_cli_fail(cli, "internal error: a list of %zu columns (1 to %d)", spec->ncols,
                       NC_CLI_LIST_COLS_MAX);
  rc = nc_cli_args_parse(cli, &argspec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc__cli_path(cli, path, sizeof path, spec->path, pos[0]);
  if (rc != 0)
    return rc;
  rc = nc_cli_call(cli, "GET", path, NULL, &resp);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, resp);
    goto out;
  }
  const json_t *items = json_object_get(resp, spec->array_key);
  if (!json_is_array(items)) {
    rc = nc_cli_fail(cli, "GET %s: the answer has no \"%s\" list", path, spec->array_key);
    goto out;
  }
  rc = nc_cli_list_print(cli, spec, items);
out:
  json_decref(resp);
  return rc;
}
