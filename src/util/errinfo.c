#include "util/errinfo.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/err.h"

int nc_errinfo_set(struct nc_errinfo *e, int status, const char *code, const char *field,
                   const char *fmt, ...) {
  if (e) {
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code);
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
  }
  switch (status) {
  case 404:
    return -ENOENT;
  case 409:
    return NC_E_CONFLICT;
  case 413:
    return NC_E_TOOBIG;
  case 503:
    return NC_E_UNAVAIL;
  default:
    return NC_E_INVALID;
  }
}

const char *nc_excerpt(const char *s, char *buf, size_t len) {
  size_t n = strlen(s);
  if (n < len) {
    memcpy(buf, s, n + 1);
    return buf;
  }
  size_t cut = len > 4 ? len - 4 : 0;
  while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
    cut--; /* back up to the start of a character */
  memcpy(buf, s, cut);
  memcpy(buf + cut, "...", 4);
  return buf;
}
