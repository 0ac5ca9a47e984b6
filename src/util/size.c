#include "util/size.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int nc_size_parse(const char *s, uint64_t *out) {
  if (!s || !isdigit((unsigned char)s[0]))
    return -EINVAL;
  uint64_t v = 0;
  const char *p = s;
  while (isdigit((unsigned char)*p)) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -ERANGE;
    v = v * 10 + d;
    p++;
  }
  unsigned shift = 0;
  switch (toupper((unsigned char)*p)) {
  case '\0':
    break;
  case 'K':
    shift = 10;
    break;
  case 'M':
    shift = 20;
    break;
  case 'G':
    shift = 30;
    break;
  case 'T':
    shift = 40;
    break;
  default:
    return -EINVAL;
  }
  if (*p) {
    p++;
    if (strcasecmp(p, "iB") == 0 || strcasecmp(p, "B") == 0 || *p == '\0')
      ;
    else
      return -EINVAL;
  }
  if (v == 0)
    return -EINVAL;
  if (shift && v > (UINT64_MAX >> shift))
    return -ERANGE;
  *out = v << shift;
  return 0;
}

void nc_size_format(uint64_t bytes, char *out, size_t out_len) {
  static const char units[] = "KMGT";
  int u = -1;
  uint64_t v = bytes;
  while (v != 0 && u < 3 && (v & 1023) == 0) {
    v >>= 10;
    u++;
  }
  if (u < 0)
    snprintf(out, out_len, "%llu", (unsigned long long)bytes);
  else
    snprintf(out, out_len, "%llu%c", (unsigned long long)v, units[u]);
}
