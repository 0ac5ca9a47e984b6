/* Pacing a migration (internal to src/migrate): the DWCP send window and
 * QEMU's downtime-limit, from what the source sees while QEMU sends its
 * passes.
 *
 * QEMU switches over when what it still has to send, at the rate it sees
 * on its socket, fits in its downtime-limit. Our reads follow the link, so
 * that rate is honest for the bytes QEMU still holds. What QEMU cannot see
 * is what DWCP already has in flight (up to one window of encoded bytes,
 * which must cross the link after the guest stops), the last byte's
 * one-way trip, the end of the disk copy (its last flush is a round trip)
 * and the hand-over. So:
 *   - the window is twice the bandwidth-delay product, or what a quarter
 *     of the budget drains if that is more, at most NC__PACE_WINDOW_MAX;
 *   - on a long path (a round trip of NC__PACE_SLOW_RTT_MS or more) it
 *     starts at NC__PACE_WINDOW_START_SLOW and, until the rate is known,
 *     stays at twice what the destination acknowledged (TCP's slow start):
 *     a compressed return leg of 1.4 MiB otherwise went into a 2 MiB
 *     window whole, QEMU saw no link and stopped the guest with all of it
 *     still to cross (505 ms);
 *   - on a fast path it is also capped at NC__PACE_FAST_STREAM of QEMU's
 *     stream, converted at the compression ratio seen so far: there the
 *     destination's loading is the bottleneck, and 1.5 MiB of lz4 frames
 *     was 25 MiB of stream it took ~200 ms to load after the stop (the
 *     average ratio hides frames of 1-byte tokens, so stream.c also
 *     bounds the stream the frames in flight stand for, frame by frame);
 *   - QEMU gets the budget minus the window's drain time, half the round
 *     trip, a round trip for the disk and NC__PACE_HANDOVER_MS, and never
 *     less than a fifth of the budget (a guest must still converge).
 * The link's rate is the best average since the stream started, taken
 * once 150 ms and 1 MiB have gone: later passes carry only what the guest
 * dirties, and a falling average says nothing about the link.
 *
 * Pure: no clock, no I/O; the caller feeds samples (handover.c every
 * ~200 ms), and unit tests drive it with a simulated link. */
#ifndef NC_MIGRATE_PACE_H
#define NC_MIGRATE_PACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NC__PACE_WINDOW_MAX (2u << 20)
#define NC__PACE_WINDOW_MIN (64u << 10) /* NC_AMST_SEND_WINDOW_MIN */
#define NC__PACE_WINDOW_START_SLOW (256u << 10)
#define NC__PACE_SLOW_RTT_MS 20
#define NC__PACE_FAST_STREAM (6u << 20)
/* The hand-over after QEMU's stream ends: the grant travels with the
 * stream, so what is left is the destination's own work (QEMU loading the
 * device state, the ownership record, cont), measured at 5-20 ms. */
#define NC__PACE_HANDOVER_MS 20

struct nc__pace {
  int max_downtime_ms;
  int64_t rtt_ms; /* the handshake's estimate: slow or fast path */
  bool disk;
  double rate;   /* wire bytes per ms, 0 until measured */
  size_t window; /* in effect (as the transport reported it) */
  int64_t limit; /* QEMU's, as last applied */
};

struct nc__pace_sample {
  int64_t elapsed_ms; /* since QEMU's stream started */
  uint64_t sent;      /* wire bytes sent since then */
  uint64_t queued;    /* of those, not yet acknowledged */
  uint64_t raw;       /* QEMU's stream bytes read since then */
  int64_t rtt_ms;     /* smallest round trip measured now, or the handshake's */
};

/* The window to start with; QEMU's limit starts at max_downtime_ms. */
size_t nc__pace_init(struct nc__pace *p, int max_downtime_ms, int64_t handshake_rtt_ms,
                     bool disk);
/* One sample. *window: the window to set now, or 0 (leave it; changes under
 * an eighth are left). *limit: QEMU's downtime-limit to set now, or 0
 * (changes under 10 ms are left). Report what took effect with
 * nc__pace_window_is / nc__pace_limit_is. */
void nc__pace_update(struct nc__pace *p, const struct nc__pace_sample *s, size_t *window,
                     int64_t *limit);
void nc__pace_window_is(struct nc__pace *p, size_t window);
void nc__pace_limit_is(struct nc__pace *p, int64_t limit);

#endif
