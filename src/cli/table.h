/* Column-aligned tables and "KEY: value" blocks for people. Cells are
 * sanitized (nc_cli_sanitize) when added, so server strings cannot drive the
 * terminal. */
#ifndef NC_CLI_TABLE_H
#define NC_CLI_TABLE_H

#include <stddef.h>
#include <stdio.h>

struct nc_cli_table;

/* Creates a table with ncols columns titled headers[0..ncols). The header
 * strings are copied. Returns 0 or -ENOMEM/-EINVAL; *out is the caller's,
 * released with nc_cli_table_destroy. */
int nc_cli_table_new(size_t ncols, const char *const *headers, struct nc_cli_table **out);

/* Appends a row of ncols cells; a NULL or empty cell prints as "-". The
 * strings are copied. Returns 0 or -ENOMEM. */
int nc_cli_table_add(struct nc_cli_table *t, const char *const *cells);

size_t nc_cli_table_rows(const struct nc_cli_table *t);

/* Prints the header and rows, columns separated by two spaces, the last
 * column unpadded. */
void nc_cli_table_print(const struct nc_cli_table *t, FILE *f);

void nc_cli_table_destroy(struct nc_cli_table *t);

/* Prints one "KEY:   value" line of a show block, the value sanitized and
 * keys padded to width columns. A NULL or empty value prints as "-"; an
 * empty key continues the previous line's value on a new line. */
void nc_cli_kv(FILE *f, int width, const char *key, const char *value);

#endif
