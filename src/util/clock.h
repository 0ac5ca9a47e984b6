/* Injectable time and randomness. Logic that must run under deterministic
 * simulation takes a struct nc_clock / struct nc_rand instead of calling
 * clock_gettime() or rand() itself. */
#ifndef NC_UTIL_CLOCK_H
#define NC_UTIL_CLOCK_H

#include <stddef.h>
#include <stdint.h>

struct nc_clock {
  int version; /* 1 */
  void *data;
  /* Monotonic milliseconds; never goes backwards. */
  int64_t (*mono_ms)(struct nc_clock *c);
  /* Wall-clock milliseconds since the Unix epoch. */
  int64_t (*wall_ms)(struct nc_clock *c);
};

struct nc_rand {
  int version; /* 1 */
  void *data;
  void (*fill)(struct nc_rand *r, void *buf, size_t len);
};

/* Process-wide real clock and CSPRNG (getrandom). Static; never freed. */
struct nc_clock *nc_clock_system(void);
struct nc_rand *nc_rand_system(void);

/* A manual clock for tests: time only moves when nc_clock_manual_advance is
 * called. The struct is the caller's; no allocation. */
struct nc_clock_manual {
  struct nc_clock clock;
  int64_t now_ms;
  int64_t wall_base_ms;
};
void nc_clock_manual_init(struct nc_clock_manual *m, int64_t start_ms);
void nc_clock_manual_advance(struct nc_clock_manual *m, int64_t delta_ms);

/* Convenience wrappers. */
static inline int64_t nc_mono_ms(struct nc_clock *c) { return c->mono_ms(c); }
static inline int64_t nc_wall_ms(struct nc_clock *c) { return c->wall_ms(c); }

/* Fills buf with len random bytes, hex-encoded into out (2*len+1 bytes). */
void nc_rand_hex(struct nc_rand *r, char *out, size_t len);

#define NC_ISO8601_LEN 64
/* Formats wall-clock ms as "2026-11-27T23:00:00.000Z". */
void nc_iso8601(int64_t ms, char *out, size_t len);

#endif
