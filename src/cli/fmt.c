#include "cli/fmt.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char k_units[] = "KMGTP";

int nc_cli_parse_uint(const char *s, uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  if (s == NULL || *s == '\0')
    return -EINVAL;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9')
      return -EINVAL;
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -ERANGE;
    v = v * 10 + d;
  }
  if (v > max)
    return -ERANGE;
  *out = v;
  return 0;
}

/* Splits "123abc" into the number and the suffix; the number must be there. */
static int split_number(const char *s, uint64_t *num, const char **suffix) {
  char digits[32];
  size_t i = 0;
  while (s[i] >= '0' && s[i] <= '9') {
    if (i + 1 >= sizeof digits)
      return -ERANGE;
    digits[i] = s[i];
    i++;
  }
  if (i == 0)
    return -EINVAL;
  digits[i] = '\0';
  *suffix = s + i;
  return nc_cli_parse_uint(digits, UINT64_MAX, num);
}

int nc_cli_parse_size(const char *s, uint64_t *out_bytes) {
  uint64_t v;
  const char *suf;
  int rc;

  if (s == NULL)
    return -EINVAL;
  rc = split_number(s, &v, &suf);
  if (rc != 0)
    return rc;
  unsigned shift = 0;
  if (*suf != '\0') {
    const char *u = strchr(k_units, toupper((unsigned char)*suf));
    if (u != NULL && *suf != '\0') {
      shift = 10 * (unsigned)(u - k_units + 1);
      suf++;
      if (*suf == 'i' || *suf == 'I')
        suf++;
      if (*suf == 'b' || *suf == 'B')
        suf++;
    } else if (*suf == 'b' || *suf == 'B') {
      suf++;
    }
    if (*suf != '\0')
      return -EINVAL;
  }
  if (shift > 0 && v > (UINT64_MAX >> shift))
    return -ERANGE;
  *out_bytes = v << shift;
  return 0;
}

void nc_cli_size_canonical(uint64_t bytes, char *buf, size_t n) {
  int unit = -1;
  while (bytes != 0 && unit + 1 < (int)sizeof k_units - 1 && (bytes & 1023) == 0) {
    bytes >>= 10;
    unit++;
  }
  if (unit < 0)
    snprintf(buf, n, "%" PRIu64, bytes);
  else
    snprintf(buf, n, "%" PRIu64 "%c", bytes, k_units[unit]);
}

void nc_cli_size_human(uint64_t bytes, char *buf, size_t n) {
  int unit = -1;
  uint64_t scale = 1;

  /* Largest unit not bigger than the value. */
  while (unit + 1 < (int)sizeof k_units - 1 && bytes / scale >= 1024) {
    scale <<= 10;
    unit++;
  }
  if (unit < 0 || bytes % scale == 0) {
    nc_cli_size_canonical(bytes, buf, n);
    return;
  }
  /* One decimal, rounded half up, computed in integers. */
  uint64_t whole = bytes / scale;
  uint64_t tenths = ((bytes % scale) * 10 + scale / 2) / scale;
  if (tenths == 10) {
    whole++;
    tenths = 0;
  }
  if (tenths == 0)
    snprintf(buf, n, "%" PRIu64 "%c", whole, k_units[unit]);
  else
    snprintf(buf, n, "%" PRIu64 ".%" PRIu64 "%c", whole, tenths, k_units[unit]);
}

int nc_cli_parse_duration(const char *s, int64_t *out_ms) {
  static const int64_t max_ms = INT64_C(10) * 366 * 86400 * 1000;
  uint64_t v;
  const char *suf;
  int64_t mult;
  int rc;

  if (s == NULL)
    return -EINVAL;
  rc = split_number(s, &v, &suf);
  if (rc != 0)
    return rc;
  if (strcmp(suf, "") == 0 || strcmp(suf, "s") == 0)
    mult = 1000;
  else if (strcmp(suf, "ms") == 0)
    mult = 1;
  else if (strcmp(suf, "m") == 0)
    mult = 60 * 1000;
  else if (strcmp(suf, "h") == 0)
    mult = 3600 * 1000;
  else
    return -EINVAL;
  if (v == 0)
    return -EINVAL;
  if (v > (uint64_t)(max_ms / mult))
    return -ERANGE;
  *out_ms = (int64_t)v * mult;
  return 0;
}

void nc_cli_format_age(int64_t ms, char *buf, size_t n) {
  int64_t s = ms < 0 ? 0 : ms / 1000;
  if (s < 60)
    snprintf(buf, n, "%" PRId64 "s", s);
  else if (s < 3600)
    snprintf(buf, n, "%" PRId64 "m", s / 60);
  else if (s < 48 * 3600)
    snprintf(buf, n, "%" PRId64 "h", s / 3600);
  else
    snprintf(buf, n, "%" PRId64 "d", s / 86400);
}

void nc_cli_format_duration(int64_t ms, char *buf, size_t n) {
  if (ms < 0)
    ms = 0;
  if (ms < 1000)
    snprintf(buf, n, "%" PRId64 "ms", ms);
  else if (ms < 60 * 1000)
    snprintf(buf, n, "%" PRId64 ".%" PRId64 "s", ms / 1000, (ms % 1000) / 100);
  else if (ms < 3600 * 1000)
    snprintf(buf, n, "%" PRId64 "m%02" PRId64 "s", ms / 60000, (ms / 1000) % 60);
  else
    snprintf(buf, n, "%" PRId64 "h%02" PRId64 "m", ms / 3600000, (ms / 60000) % 60);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil, http://howardhinnant.github.io/date_algorithms.html). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

/* Reads exactly `width` digits. */
static bool take_digits(const char **p, int width, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < width; i++) {
    char c = (*p)[i];
    if (c < '0' || c > '9')
      return false;
    v = v * 10 + (unsigned)(c - '0');
  }
  *p += width;
  *out = v;
  return true;
}

static bool take_char(const char **p, const char *set) {
  if (**p != '\0' && strchr(set, **p) != NULL) {
    (*p)++;
    return true;
  }
  return false;
}

/* RFC 3339 section 5.6 date-time. */
int nc_cli_parse_time(const char *s, int64_t *out_ms) {
  static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  unsigned y, mo, d, h, mi, sec, oh = 0, om = 0;
  int64_t frac_ms = 0;
  int sign = 0;
  const char *p = s;

  if (s == NULL)
    return -EINVAL;
  if (!take_digits(&p, 4, &y) || !take_char(&p, "-") || !take_digits(&p, 2, &mo) ||
      !take_char(&p, "-") || !take_digits(&p, 2, &d) || !take_char(&p, "Tt ") ||
      !take_digits(&p, 2, &h) || !take_char(&p, ":") || !take_digits(&p, 2, &mi) ||
      !take_char(&p, ":") || !take_digits(&p, 2, &sec))
    return -EINVAL;
  if (*p == '.') {
    int digits = 0;
    p++;
    while (*p >= '0' && *p <= '9') {
      if (digits < 3)
        frac_ms = frac_ms * 10 + (*p - '0');
      digits++;
      p++;
    }
    if (digits == 0)
      return -EINVAL;
    for (int i = digits; i < 3; i++)
      frac_ms *= 10;
  }
  if (take_char(&p, "Zz")) {
    sign = 0;
  } else if (*p == '+' || *p == '-') {
    sign = *p == '+' ? 1 : -1;
    p++;
    if (!take_digits(&p, 2, &oh) || !take_char(&p, ":") || !take_digits(&p, 2, &om))
      return -EINVAL;
    if (oh > 23 || om > 59)
      return -EINVAL;
  } else {
    return -EINVAL;
  }
  if (*p != '\0')
    return -EINVAL;
  /* sec 60 is a leap second; it folds onto the next second. */
  if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
    return -EINVAL;
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo == 2 && d == 29 && !leap)
    return -EINVAL;

  int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
  t -= sign * (int64_t)(oh * 3600 + om * 60);
  *out_ms = t * 1000 + frac_ms;
  return 0;
}

static bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~';
}

int nc_cli_pathf(char *buf, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = nc_cli_vpathf(buf, n, fmt, ap);
  va_end(ap);
  return rc;
}

int nc_cli_vpathf(char *buf, size_t n, const char *fmt, va_list ap) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  int rc = 0;

  for (const char *f = fmt; *f; f++) {
    if (*f != '%') {
      if (o + 1 >= n) {
        rc = -ENAMETOOLONG;
        goto out;
      }
      buf[o++] = *f;
      continue;
    }
    if (f[1] != 's') {
      rc = -EINVAL;
      goto out;
    }
    f++;
    const char *seg = va_arg(ap, const char *);
    if (seg == NULL || *seg == '\0') {
      rc = -EINVAL;
      goto out;
    }
    bool all_dots = strspn(seg, ".") == strlen(seg);
    for (const unsigned char *s = (const unsigned char *)seg; *s; s++) {
      if (unreserved(*s) && !all_dots) {
        if (o + 1 >= n) {
          rc = -ENAMETOOLONG;
          goto out;
        }
        buf[o++] = (char)*s;
      } else {
        if (o + 3 >= n) {
          rc = -ENAMETOOLONG;
          goto out;
        }
        buf[o++] = '%';
        buf[o++] = hex[*s >> 4];
        buf[o++] = hex[*s & 15];
      }
    }
  }
out:
  if (n > 0)
    buf[rc == 0 ? o : 0] = '\0';
  return rc;
}

void nc_cli_sanitize(const char *in, char *out, size_t n) {
  size_t o = 0;
  if (n == 0)
    return;
  for (const unsigned char *p = (const unsigned char *)in; *p && o + 1 < n; p++) {
    if (*p < 0x20 || *p == 0x7f) {
      out[o++] = '?';
    } else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
      out[o++] = '?'; /* U+0080..U+009F: C1 controls such as CSI */
      p++;
    } else {
      out[o++] = (char)*p;
    }
  }
  /* Never end on half a UTF-8 sequence. */
  if (o > 0 && ((unsigned char)out[o - 1] & 0x80)) {
    size_t start = o - 1;
    while (start > 0 && ((unsigned char)out[start] & 0xc0) == 0x80)
      start--;
    unsigned char lead = (unsigned char)out[start];
    size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    if (o - start < need)
      o = start;
  }
  out[o] = '\0';
}

size_t nc_cli_display_width(const char *s) {
  size_t w = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if ((*p & 0xc0) != 0x80)
      w++;
  return w;
}

/* Length of the well-formed UTF-8 sequence at p (at most left bytes), or
 * 0 when it is not one (RFC 3629: no overlongs, surrogates or code points
 * past U+10FFFF). */
static size_t utf8_seq(const unsigned char *p, size_t left) {
  unsigned c = p[0], need;
  uint32_t cp;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    need = 1;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    need = 2;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 3;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (need >= left)
    return 0;
  for (unsigned i = 1; i <= need; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
      (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return need + 1;
}

bool nc_cli_utf8_valid(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t left = strlen(s);
  while (left > 0) {
    size_t n = utf8_seq(p, left);
    if (n == 0)
      return false;
    p += n;
    left -= n;
  }
  return true;
}

void nc_cli_utf8_scrub(char *s, size_t len) {
  unsigned char *p = (unsigned char *)s;
  while (len > 0) {
    size_t n = utf8_seq(p, len);
    if (n == 0) {
      *p = '?';
      n = 1;
    }
    p += n;
    len -= n;
  }
}
