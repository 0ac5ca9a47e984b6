/* Pacing a migration: see pace.h. */
#include "migrate/pace.h"

#define RATE_AFTER_MS 150
#define RATE_AFTER_BYTES (1u << 20)

size_t nc__pace_init(struct nc__pace *p, int max_downtime_ms, int64_t handshake_rtt_ms,
                     bool disk) {
  *p = (struct nc__pace){.max_downtime_ms = max_downtime_ms,
                         .rtt_ms = handshake_rtt_ms,
                         .disk = disk,
                         .window = NC__PACE_WINDOW_MAX,
                         .limit = max_downtime_ms};
  if (handshake_rtt_ms >= NC__PACE_SLOW_RTT_MS)
    p->window = NC__PACE_WINDOW_START_SLOW;
  return p->window;
}

static size_t clamp_window(double w) {
  if (w >= (double)NC__PACE_WINDOW_MAX)
    return NC__PACE_WINDOW_MAX;
  if (w <= (double)NC__PACE_WINDOW_MIN)
    return NC__PACE_WINDOW_MIN;
  return (size_t)w;
}

/* Twice the bandwidth-delay product, or a quarter of the budget's drain. */
static size_t window_for_link(const struct nc__pace *p, int64_t rtt_ms) {
  double bdp2 = 2.0 * p->rate * (double)(rtt_ms > 1 ? rtt_ms : 1);
  double drain = p->rate * (double)p->max_downtime_ms / 4.0;
  return clamp_window(bdp2 > drain ? bdp2 : drain);
}

static int64_t budget(const struct nc__pace *p, int64_t rtt_ms) {
  int64_t inflight_ms = (int64_t)((double)p->window / p->rate);
  int64_t limit = p->max_downtime_ms - inflight_ms - rtt_ms / 2 - (p->disk ? rtt_ms : 0) -
                  NC__PACE_HANDOVER_MS;
  int64_t floor_ms = p->max_downtime_ms / 5 > 10 ? p->max_downtime_ms / 5 : 10;
  return limit > floor_ms ? limit : floor_ms;
}

void nc__pace_update(struct nc__pace *p, const struct nc__pace_sample *s, size_t *window,
                     int64_t *limit) {
  *window = 0;
  *limit = 0;
  /* Sent bytes, which include up to a window still in socket buffers, so
   * early on the rate reads high. Acknowledged bytes were tried: they read
   * the 100 Mbit/s link as 2.6-4.8 MB/s (slow start stays in the average),
   * and the smaller windows made migrations longer and return legs' pauses
   * no shorter (downtime 143-301 ms against 154-279). */
  uint64_t acked = s->sent > s->queued ? s->sent - s->queued : 0;
  if (s->elapsed_ms >= RATE_AFTER_MS && s->sent >= RATE_AFTER_BYTES &&
      (double)s->sent / (double)s->elapsed_ms > p->rate)
    p->rate = (double)s->sent / (double)s->elapsed_ms;
  bool slow = p->rtt_ms >= NC__PACE_SLOW_RTT_MS;
  size_t w = 0;
  if (p->rate > 0) {
    w = window_for_link(p, s->rtt_ms);
  } else if (slow) { /* slow start */
    w = acked * 2 > NC__PACE_WINDOW_START_SLOW ? clamp_window((double)acked * 2.0)
                                               : NC__PACE_WINDOW_START_SLOW;
  }
  if (!slow && s->sent >= RATE_AFTER_BYTES && s->raw > s->sent) {
    size_t cap = clamp_window((double)NC__PACE_FAST_STREAM * (double)s->sent / (double)s->raw);
    if (w == 0 || w > cap)
      w = cap;
  }
  if (w > 0 && (w > p->window + p->window / 8 || w < p->window - p->window / 8))
    *window = w;
  if (p->rate > 0) {
    struct nc__pace q = *p;
    if (*window)
      q.window = *window; /* the budget for the window about to be set */
    int64_t lim = budget(&q, s->rtt_ms);
    if (lim > p->limit + 10 || lim < p->limit - 10)
      *limit = lim;
  }
}

void nc__pace_window_is(struct nc__pace *p, size_t window) { p->window = window; }

void nc__pace_limit_is(struct nc__pace *p, int64_t limit) { p->limit = limit; }
