/* A user-facing error: what was wrong, which field, and the HTTP status the
 * API answers with. Filled by validators deep in vm/ and rendered by api/
 * and the CLI, so the text is written for the person who sent the input. */
#ifndef NC_UTIL_ERRINFO_H
#define NC_UTIL_ERRINFO_H

struct nc_errinfo {
  int status;       /* HTTP status: 400, 404, 409, 413, 415, 422, 500, 503 */
  char code[32];    /* stable machine code: "invalid_field", "not_found", ... */
  char field[64];   /* offending field, or "" */
  char message[512];
};

/* Sets every member; returns -EINVAL (or the status-matching code) so a
 * validator can `return nc_errinfo_set(...)`. e may be NULL. */
int nc_errinfo_set(struct nc_errinfo *e, int status, const char *code, const char *field,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
