/* Helpers shared by the scheduler unit tests: short constructors for
 * hosts and requests, and lookups into explain's JSON. */
#ifndef NC_TESTS_UNIT_SCHED_TEST_H
#define NC_TESTS_UNIT_SCHED_TEST_H

#include "nc_test.h"

#include <math.h>

#include "sched/sched.h"

#define GIB (1ULL << 30)

#define EXPECT_DBL(got, want)                                                                 \
  do {                                                                                        \
    double got_ = (got), want_ = (want);                                                      \
    if (!(fabs(got_ - want_) <= 1e-9 * (1 + fabs(want_))))                                    \
      fail_msg("%s is %.12g, want %s = %.12g", #got, got_, #want, want_);                     \
  } while (0)

/* Places r (committing it) and checks where it went. */
#define EXPECT_PLACED(s, r, want_host)                                                        \
  do {                                                                                        \
    struct nc_sched_choice ch_;                                                               \
    int rc_ = nc_sched_place((s), (r), 0, &ch_, NULL);                                        \
    if (rc_ != 0)                                                                             \
      fail_msg("placing %s: %s, want host %s", (r)->name, nc_strerror(rc_), (want_host));     \
    if (strcmp(ch_.host, (want_host)) != 0)                                                   \
      fail_msg("%s went to %s, want %s", (r)->name, ch_.host, (want_host));                   \
  } while (0)

static inline struct nc_sched *mk(const struct nc_sched_config *cfg) {
  struct nc_sched *s = NULL;
  int rc = nc_sched_new(cfg, &s);
  if (rc != 0)
    fail_msg("nc_sched_new: %s", nc_strerror(rc));
  return s;
}

static inline struct nc_sched_host hst(const char *name, uint32_t cpus, uint64_t mem_bytes) {
  struct nc_sched_host h;
  memset(&h, 0, sizeof h);
  h.name = name;
  h.cpus = cpus;
  h.mem_bytes = mem_bytes;
  h.state = NC_SCHED_HOST_READY;
  return h;
}

static inline void add_host(struct nc_sched *s, const char *name, uint32_t cpus,
                            uint64_t mem_gib, const char *zone, const char *rack) {
  struct nc_sched_host h = hst(name, cpus, mem_gib * GIB);
  h.zone = zone;
  h.rack = rack;
  int rc = nc_sched_host_add(s, &h);
  if (rc != 0)
    fail_msg("adding host %s: %s", name, nc_strerror(rc));
}

static inline struct nc_sched_request rq(const char *name, uint32_t vcpus, uint64_t mem_gib) {
  struct nc_sched_request r;
  memset(&r, 0, sizeof r);
  r.name = name;
  r.vcpus = vcpus;
  r.mem_bytes = mem_gib * GIB;
  return r;
}

/* The explain entry for host name; fails the test when absent. */
static inline json_t *host_entry(json_t *ex, const char *name) {
  json_t *hosts = json_object_get(ex, "hosts");
  for (size_t i = 0; i < json_array_size(hosts); i++) {
    json_t *e = json_array_get(hosts, i);
    const char *n = json_string_value(json_object_get(e, "host"));
    if (n && strcmp(n, name) == 0)
      return e;
  }
  fail_msg("explain has no entry for host %s", name);
  return NULL;
}

static inline const char *host_field(json_t *ex, const char *name, const char *field) {
  return json_string_value(json_object_get(host_entry(ex, name), field));
}

static inline uint64_t splitmix(uint64_t *st) {
  uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

#endif
