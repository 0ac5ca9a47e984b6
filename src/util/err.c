#include "util/err.h"

#include <string.h>

const char *nc_strerror(int err) {
  switch (err) {
#define NC__ERR_CASE(name, value, text) \
  case name:                            \
    return text;
    NC_ERRNO_MAP(NC__ERR_CASE)
#undef NC__ERR_CASE
  default:
    break;
  }
  if (err < 0 && err > -4096)
    return strerror(-err);
  return err == 0 ? "success" : "unknown error";
}
