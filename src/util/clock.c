#include "util/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

static int64_t sys_mono_ms(struct nc_clock *c) {
  (void)c;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t sys_wall_ms(struct nc_clock *c) {
  (void)c;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sys_fill(struct nc_rand *r, void *buf, size_t len) {
  (void)r;
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n <= 0)
      abort(); /* the kernel CSPRNG failing is not recoverable */
    p += n;
    len -= (size_t)n;
  }
}

static struct nc_clock g_sys_clock = {1, NULL, sys_mono_ms, sys_wall_ms};
static struct nc_rand g_sys_rand = {1, NULL, sys_fill};

struct nc_clock *nc_clock_system(void) { return &g_sys_clock; }
struct nc_rand *nc_rand_system(void) { return &g_sys_rand; }

static int64_t man_mono_ms(struct nc_clock *c) {
  return ((struct nc_clock_manual *)c->data)->now_ms;
}
static int64_t man_wall_ms(struct nc_clock *c) {
  struct nc_clock_manual *m = c->data;
  return m->wall_base_ms + m->now_ms;
}

void nc_clock_manual_init(struct nc_clock_manual *m, int64_t start_ms) {
  m->clock.version = 1;
  m->clock.data = m;
  m->clock.mono_ms = man_mono_ms;
  m->clock.wall_ms = man_wall_ms;
  m->now_ms = start_ms;
  m->wall_base_ms = 1700000000000LL;
}

void nc_clock_manual_advance(struct nc_clock_manual *m, int64_t delta_ms) {
  m->now_ms += delta_ms;
}

void nc_rand_hex(struct nc_rand *r, char *out, size_t len) {
  unsigned char tmp[64];
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  while (len > 0) {
    size_t n = len < sizeof tmp ? len : sizeof tmp;
    r->fill(r, tmp, n);
    for (size_t i = 0; i < n; i++) {
      out[o++] = hex[tmp[i] >> 4];
      out[o++] = hex[tmp[i] & 15];
    }
    len -= n;
  }
  out[o] = '\0';
}

void nc_iso8601(int64_t ms, char *out, size_t len) {
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}
