#include "util/errinfo.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

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
