/* The whole of a list command ("vm list", "op list", "vm snapshots NAME"):
 * parse the command line, GET the collection, then print the answer as is
 * for --output json, or one table row per item of its array for people.
 * A command supplies only its route, columns and a function that fills one
 * row. */
#ifndef NC_CLI_LIST_H
#define NC_CLI_LIST_H

#include "cli/cli.h"

#include <jansson.h>
#include <stddef.h>

#define NC_CLI_LIST_COLS_MAX 8
/* Room for one cell a row function formats itself (an AGE, a MEMORY). A
 * longer string is truncated by the row function's snprintf. */
#define NC_CLI_LIST_CELL_BYTES 32

/* One table row as a row function fills it. cells[i] is column i: a string
 * borrowed from the item, one of buf[i], or a literal. A cell left NULL (or
 * empty) prints as "-". cells is all NULL when the row function is
 * called. */
struct nc_cli_list_row {
  const char *cells[NC_CLI_LIST_COLS_MAX];
  char buf[NC_CLI_LIST_COLS_MAX][NC_CLI_LIST_CELL_BYTES];
};

/* Fills row from item, one element of the answer's array (any JSON type;
 * the nc_cli_j* accessors tolerate the wrong one). data is the spec's
 * row_data. */
typedef void nc_cli_list_row_fn(struct nc_cli *cli, const json_t *item,
                                struct nc_cli_list_row *row, void *data);

struct nc_cli_list_spec {
  /* The route, formatted with nc_cli_pathf: with a positional argument its
   * one "%s" takes it, percent-encoded. */
  const char *path;
  /* NULL when the command takes no positional argument, else {"NAME"}:
   * one required argument, so named in usage errors. */
  const char *const *pos_names;
  const char *array_key; /* the answer's member that holds the items */
  size_t ncols;          /* 1 to NC_CLI_LIST_COLS_MAX */
  const char *const *headers;
  nc_cli_list_row_fn *row;
  void *row_data; /* passed to row as is */
};

/* Runs the list command spec describes with the command's argv (argv[0] is
 * the verb). Besides --output and --help it takes no flags. Prints to
 * cli->out and cli->err; nothing outlives the call. Returns the exit
 * status: NC_CLI_EXIT_USAGE for a bad command line, NC_CLI_EXIT_FAIL when
 * the answer has no spec->array_key array, else nc_cli_call's. */
int nc_cli_list_run(struct nc_cli *cli, int argc, char **argv, const struct nc_cli_list_spec *spec);

/* The table half of nc_cli_list_run, for commands that fetch the items
 * themselves: one row per element of items (borrowed; not an array prints
 * the header only) on cli->out, with spec's columns and row function
 * (spec->path, pos_names and array_key are unused). Returns the exit
 * status. */
int nc_cli_list_print(struct nc_cli *cli, const struct nc_cli_list_spec *spec,
                      const json_t *items);

#endif
