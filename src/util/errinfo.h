/* A user-facing error: what was wrong, which field, and the HTTP status the
 * API answers with. Filled by validators deep in vm/ and rendered by api/
 * and the CLI, so the text is written for the person who sent the input. */
#ifndef NC_UTIL_ERRINFO_H
#define NC_UTIL_ERRINFO_H

#include <stddef.h>

struct nc_errinfo {
  int status;       /* HTTP status: 400, 404, 409, 413, 415, 422, 500, 503 */
  char code[32];    /* stable machine code: "invalid_field", "not_found", ... */
  char field[64];   /* offending field, or "" */
  char message[512];
};

/* Sets every member; returns the code matching status (NC_E_INVALID for
 * 4xx input errors, -ENOENT for 404, NC_E_CONFLICT for 409, NC_E_TOOBIG
 * for 413, NC_E_UNAVAIL for 503) so a validator can
 * `return nc_errinfo_set(...)`. e may be NULL. Values quoted into fmt
 * should go through nc_excerpt() so a cut never splits a UTF-8 character. */
int nc_errinfo_set(struct nc_errinfo *e, int status, const char *code, const char *field,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define NC_EXCERPT_LEN 72
/* Copies s into buf (at most len-1 bytes), cutting at a UTF-8 character
 * boundary and ending with "..." when s is longer, so a quoted user value
 * keeps a message valid UTF-8 and short. Returns buf. */
const char *nc_excerpt(const char *s, char *buf, size_t len);

#endif
