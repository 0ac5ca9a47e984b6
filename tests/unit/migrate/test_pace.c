/* Migration pacing (src/migrate/pace.c) against a simulated link.
 *
 * The link: the sender admits bytes while what is unacknowledged is under
 * the window; the link carries `rate` bytes a millisecond; a byte is
 * acknowledged one round trip after it left. QEMU always has more to send
 * (a first pass), and its stream is `ratio` times the wire bytes. Samples
 * go to the pacer every 200 ms, as migrate.c takes them. Deterministic:
 * integer milliseconds, no clock, no sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "migrate/pace.h"

#define HIST 4096

struct link {
  double rate;      /* bytes per ms */
  int rtt;          /* ms */
  double ratio;     /* stream bytes per wire byte */
  uint64_t total;   /* what the sender has to send at all (0: unlimited) */
  uint64_t admitted, departed;
  uint64_t dep_at[HIST]; /* departed, by ms (ring) */
  int64_t now;
};

struct run {
  struct nc__pace p;
  size_t window;
  int64_t limit;
  int window_changes, limit_changes;
  uint64_t max_inflight_unmeasured; /* while the rate was unknown */
  bool slow_start_broken;           /* a window over max(start, 2 x acked) */
  uint64_t inflight_at_200ms;
  uint64_t acked_last_s0, acked_at_2s, acked_at_3s;
};

static uint64_t acked(const struct link *l) {
  if (l->now < l->rtt)
    return 0;
  return l->dep_at[(l->now - l->rtt) % HIST];
}

/* One millisecond: admit, depart, record. */
static void tick(struct link *l, size_t window) {
  uint64_t inflight = l->admitted - acked(l);
  if (inflight < window) {
    uint64_t room = window - inflight;
    if (l->total && l->admitted + room > l->total)
      room = l->total - l->admitted;
    l->admitted += room;
  }
  double can = l->rate;
  uint64_t q = l->admitted - l->departed;
  l->departed += q < can ? q : (uint64_t)can;
  l->now++;
  l->dep_at[l->now % HIST] = l->departed;
}

static void simulate(struct link *l, struct run *r, int max_downtime, bool disk, int ms) {
  memset(r, 0, sizeof *r);
  r->window = nc__pace_init(&r->p, max_downtime, l->rtt, disk);
  r->limit = max_downtime;
  for (int t = 1; t <= ms; t++) {
    tick(l, r->window);
    uint64_t inflight = l->admitted - acked(l);
    if (r->p.rate == 0 && inflight > r->max_inflight_unmeasured)
      r->max_inflight_unmeasured = inflight;
    if (t == 200)
      r->inflight_at_200ms = inflight;
    if (t == 2000)
      r->acked_at_2s = acked(l);
    if (t == 3000)
      r->acked_at_3s = acked(l);
    if (t % 200)
      continue;
    struct nc__pace_sample s = {.elapsed_ms = t,
                                .sent = l->admitted,
                                .queued = l->admitted - acked(l),
                                .raw = (uint64_t)((double)l->admitted * l->ratio),
                                .rtt_ms = l->rtt};
    size_t w;
    int64_t lim;
    nc__pace_update(&r->p, &s, &w, &lim);
    if (w) {
      r->window = w;
      nc__pace_window_is(&r->p, w);
      r->window_changes++;
    }
    uint64_t a2 = 2 * acked(l);
    if (r->p.rate == 0 && r->window > (a2 > NC__PACE_WINDOW_START_SLOW ? a2
                                                                     : NC__PACE_WINDOW_START_SLOW))
      r->slow_start_broken = true;
    if (lim) {
      r->limit = lim;
      nc__pace_limit_is(&r->p, lim);
      r->limit_changes++;
    }
  }
}

/* 100 Mbit/s, 50 ms: the window starts small, grows with what was
 * acknowledged, and settles near twice the bandwidth-delay product; the
 * link stays busy; QEMU's limit leaves room for the window's drain, half
 * a round trip, the disk's flush and the hand-over. */
static void test_slow_path_settles(void **state) {
  (void)state;
  struct link l = {.rate = 12500, .rtt = 50, .ratio = 30};
  struct run r;
  simulate(&l, &r, 300, true, 3000);
  assert_int_equal(nc__pace_init(&(struct nc__pace){0}, 300, 50, true),
                   NC__PACE_WINDOW_START_SLOW);
  double bdp = 12500.0 * 50;
  assert_true(r.window >= 1.6 * bdp && r.window <= 2.4 * bdp);
  /* the last second ran at the link's rate */
  assert_true((double)(r.acked_at_3s - r.acked_at_2s) >= 0.95 * 12500 * 1000);
  int64_t drain = (int64_t)((double)r.window / r.p.rate);
  int64_t want = 300 - drain - 25 - 50 - NC__PACE_HANDOVER_MS;
  assert_true(r.limit >= want - 10 && r.limit <= want + 10); /* changes under 10 ms are left */
  assert_true(r.limit >= 60 && r.limit <= 200);
}

/* Until the rate is known the window is at most twice what was
 * acknowledged (or the starting window): a return leg of 1.4 MiB is not
 * taken in at once, so QEMU sees the link from the start. */
static void test_slow_start_bounds_inflight(void **state) {
  (void)state;
  struct link l = {.rate = 12500, .rtt = 50, .ratio = 100, .total = 1400 * 1024};
  struct run r;
  simulate(&l, &r, 300, false, 1000);
  assert_false(r.slow_start_broken);
  assert_true(r.inflight_at_200ms <= NC__PACE_WINDOW_START_SLOW);
  assert_true(r.max_inflight_unmeasured < l.total);
  assert_int_equal(l.departed, l.total); /* and it all went within the second */
}

/* A fast path: the window holds at most NC__PACE_FAST_STREAM of stream
 * at the compression ratio seen, and QEMU gets nearly the whole budget. */
static void test_fast_path_stream_cap(void **state) {
  (void)state;
  struct link l = {.rate = 125000, .rtt = 0, .ratio = 17};
  struct run r;
  simulate(&l, &r, 300, false, 1000);
  double cap = NC__PACE_FAST_STREAM / 17.0;
  assert_true((double)r.window <= cap * 1.13 && (double)r.window >= cap * 0.87);
  assert_true(r.limit >= 250 && r.limit <= 300 - NC__PACE_HANDOVER_MS);
  /* a stream that barely compresses: the cap is above the link's window */
  struct link l2 = {.rate = 125000, .rtt = 0, .ratio = 1.2};
  simulate(&l2, &r, 300, false, 1000);
  assert_int_equal(r.window, NC__PACE_WINDOW_MAX);
}

/* A very slow link: QEMU still gets a fifth of the budget, so a guest can
 * converge. */
static void test_limit_floor(void **state) {
  (void)state;
  struct link l = {.rate = 100, .rtt = 50, .ratio = 10}; /* 0.8 Mbit/s */
  struct run r;
  simulate(&l, &r, 300, true, 15000);
  assert_int_equal(r.window, NC__PACE_WINDOW_MIN);
  assert_int_equal(r.limit, 60);
}

/* Nothing is decided on too little data, and the same samples again change
 * nothing. */
static void test_quiet_until_measured(void **state) {
  (void)state;
  struct nc__pace p;
  size_t w;
  int64_t lim;
  assert_int_equal(nc__pace_init(&p, 300, 1, false), NC__PACE_WINDOW_MAX);
  struct nc__pace_sample s = {.elapsed_ms = 100, .sent = 8u << 20, .raw = 8u << 20, .rtt_ms = 1};
  nc__pace_update(&p, &s, &w, &lim);
  assert_int_equal(lim, 0); /* too early for a rate */
  assert_true(p.rate == 0);
  s = (struct nc__pace_sample){.elapsed_ms = 400, .sent = 512u << 10, .raw = 1u << 20};
  nc__pace_update(&p, &s, &w, &lim);
  assert_int_equal(w, 0); /* too little for a rate or a ratio */
  assert_int_equal(lim, 0);
  s = (struct nc__pace_sample){.elapsed_ms = 400, .sent = 40u << 20, .raw = 400u << 20, .rtt_ms = 1};
  nc__pace_update(&p, &s, &w, &lim);
  assert_true(w > 0 && lim > 0);
  nc__pace_window_is(&p, w);
  nc__pace_limit_is(&p, lim);
  nc__pace_update(&p, &s, &w, &lim);
  assert_int_equal(w, 0);
  assert_int_equal(lim, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_slow_path_settles),   cmocka_unit_test(test_slow_start_bounds_inflight),
      cmocka_unit_test(test_fast_path_stream_cap), cmocka_unit_test(test_limit_floor),
      cmocka_unit_test(test_quiet_until_measured),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
