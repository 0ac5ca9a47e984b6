#include "cli/table.h"

#include "cli/fmt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct nc_cli_table {
  size_t ncols;
  size_t nrows, cap_rows;
  char **cells; /* nrows + 1 rows (the header first) of ncols strings */
};

static char *dup_clean(const char *s) {
  if (s == NULL || *s == '\0')
    s = "-";
  size_t n = strlen(s) + 1;
  char *out = malloc(n);
  if (out != NULL)
    nc_cli_sanitize(s, out, n);
  return out;
}

#define NC_CLI_TABLE_MAX_COLS 64

/* Fills row with sanitized copies of cells; on failure the row is left all
 * NULL. */
static int fill_row(char **row, size_t ncols, const char *const *cells) {
  for (size_t i = 0; i < ncols; i++) {
    row[i] = dup_clean(cells[i]);
    if (row[i] == NULL) {
      while (i-- > 0) {
        free(row[i]);
        row[i] = NULL;
      }
      return -ENOMEM;
    }
  }
  return 0;
}

static int add_row(struct nc_cli_table *t, const char *const *cells) {
  if (t->nrows + 1 >= t->cap_rows) {
    size_t cap = t->cap_rows * 2;
    char **c = realloc(t->cells, cap * t->ncols * sizeof *c);
    if (c == NULL)
      return -ENOMEM;
    t->cells = c;
    t->cap_rows = cap;
  }
  int rc = fill_row(t->cells + (t->nrows + 1) * t->ncols, t->ncols, cells);
  if (rc == 0)
    t->nrows++;
  return rc;
}

int nc_cli_table_new(size_t ncols, const char *const *headers, struct nc_cli_table **out) {
  struct nc_cli_table *t;
  if (ncols == 0 || ncols > NC_CLI_TABLE_MAX_COLS)
    return -EINVAL;
  t = calloc(1, sizeof *t);
  if (t == NULL)
    return -ENOMEM;
  t->ncols = ncols;
  t->cap_rows = 16;
  t->cells = calloc(t->cap_rows * ncols, sizeof *t->cells);
  if (t->cells == NULL || fill_row(t->cells, ncols, headers) != 0) {
    nc_cli_table_destroy(t);
    return -ENOMEM;
  }
  *out = t;
  return 0;
}

int nc_cli_table_add(struct nc_cli_table *t, const char *const *cells) { return add_row(t, cells); }

size_t nc_cli_table_rows(const struct nc_cli_table *t) { return t->nrows; }

void nc_cli_table_print(const struct nc_cli_table *t, FILE *f) {
  size_t width[NC_CLI_TABLE_MAX_COLS] = {0};
  size_t ncols = t->ncols;

  for (size_t r = 0; r <= t->nrows; r++)
    for (size_t c = 0; c < ncols; c++) {
      size_t w = nc_cli_display_width(t->cells[r * t->ncols + c]);
      if (w > width[c])
        width[c] = w;
    }
  for (size_t r = 0; r <= t->nrows; r++) {
    for (size_t c = 0; c < ncols; c++) {
      const char *cell = t->cells[r * t->ncols + c];
      fputs(cell, f);
      if (c + 1 < ncols) {
        size_t pad = width[c] - nc_cli_display_width(cell) + 2;
        fprintf(f, "%*s", (int)pad, "");
      }
    }
    fputc('\n', f);
  }
}

void nc_cli_table_destroy(struct nc_cli_table *t) {
  if (t == NULL)
    return;
  if (t->cells != NULL)
    for (size_t i = 0; i < (t->nrows + 1) * t->ncols; i++)
      free(t->cells[i]);
  free(t->cells);
  free(t);
}

void nc_cli_kv(FILE *f, int width, const char *key, const char *value) {
  char clean[4096];
  nc_cli_sanitize(value != NULL && *value != '\0' ? value : "-", clean, sizeof clean);
  if (*key == '\0') { /* a continuation line */
    fprintf(f, "%*s %s\n", width + 1, "", clean);
    return;
  }
  fprintf(f, "%s:%*s %s\n", key, width > (int)strlen(key) ? width - (int)strlen(key) : 0, "",
          clean);
}
