/* The etcd back-end's constructor and tuning knobs. Internal to src/store/
 * and its tests; the daemon opens stores with
 * nc_store_open("etcd:http://127.0.0.1:2379[,http://...]").
 *
 * What differs from the SQLite back-end (all within store.h's contract):
 *
 *  - Lease TTLs are whole seconds on etcd: ttl_ms is rounded up, and etcd
 *    raises anything below its minimum (1.5 x election timeout, 2 s with
 *    the default 1 s election timeout). Expiry follows etcd's clock, never
 *    the nc_clock given to nc_store_open.
 *  - Automatic compaction is etcd's own (--auto-compaction-mode=revision
 *    --auto-compaction-retention=N on the members; see docs/etcd.md).
 *  - A write whose outcome is unknown returns -ETIMEDOUT: the request
 *    reached a member (or may have) but no answer came back, so it may or
 *    may not have been applied. Read back before retrying anything that is
 *    not idempotent (a CAS retried blindly can report NC_E_TXNFAIL for its
 *    own earlier success). Reads, and writes that surely never reached a
 *    member (connection refused, "no leader", "raft proposal dropped"), are
 *    retried on the next endpoint until op_timeout_ms runs out.
 *  - A watch buffers events in memory between etcd and nc_store_watch_next,
 *    at most watch_queue_bytes_max bytes (each event costs its key, its
 *    value and NC__STORE_ETCD_EVENT_OVERHEAD). A consumer that falls that
 *    far behind gets NC_E_COMPACTED from then on, exactly as if its history
 *    had been compacted away: re-read with nc_store_range and watch again
 *    from the range's rev. So does a single etcd watch message (one batch
 *    of revisions) over NC__STORE_ETCD_WATCH_LINE_MAX. Memory never grows
 *    past the caps.
 *  - A watch from a revision older than the current one replays history by
 *    streaming every key's events up to the revision current at
 *    watch_open and filtering them here (etcd 3.4 offers no other way to
 *    know a replay is complete); watch_next waits for that replay even
 *    with timeout 0, at most op_timeout_ms after watch_open. Replaying a
 *    long, busy history is therefore costly; range-then-watch-from-the-
 *    range's-rev is not.
 *  - A watch survives the loss of the member it streams from: it reconnects
 *    to the next endpoint and resumes after the last revision it delivered,
 *    with no gap and no repeat. While no member answers, watch_next times
 *    out as on a quiet prefix.
 *  - nc_store_open probes the endpoints (a linearizable read) and fails
 *    with -ECONNREFUSED when none accepts a connection.
 *  - Caps the conformance suite does not reach: etcd refuses requests over
 *    its --max-request-bytes (1.5 MiB by default), so a txn whose values
 *    add up to more returns NC_E_TOOBIG although each value is under
 *    NC_STORE_VALUE_MAX. */
#ifndef NC_STORE_STORE_ETCD_H
#define NC_STORE_STORE_ETCD_H

#include <stddef.h>

#include "store/store.h"

/* Endpoints in one URI, and the length of one. */
#define NC__STORE_ETCD_ENDPOINTS_MAX 16
#define NC__STORE_ETCD_ENDPOINT_LEN_MAX 256

/* Defaults of struct nc__store_etcd_opts. */
#define NC__STORE_ETCD_CONNECT_TIMEOUT_MS 1000
#define NC__STORE_ETCD_REQUEST_TIMEOUT_MS 3000
#define NC__STORE_ETCD_RANGE_TIMEOUT_MS 30000
#define NC__STORE_ETCD_OP_TIMEOUT_MS 10000
#define NC__STORE_ETCD_WATCH_QUEUE_BYTES (64 * 1024 * 1024)

/* Bytes charged per queued watch event on top of its key and value. */
#define NC__STORE_ETCD_EVENT_OVERHEAD 128
/* Longest single message on a watch stream (base64 JSON). */
#define NC__STORE_ETCD_WATCH_LINE_MAX (96 * 1024 * 1024)

struct nc__store_etcd_opts {
  int connect_timeout_ms;       /* TCP connect to one member; 0 = default */
  int request_timeout_ms;       /* one HTTP request other than a range; 0 = default */
  int range_timeout_ms;         /* one range request; 0 = default */
  int op_timeout_ms;            /* one call, retries and failover included; 0 = default */
  size_t watch_queue_bytes_max; /* per watch; 0 = default */
};

/* Opens a store on the comma-separated endpoint list (each
 * "http://host:port", without a path), e.g.
 * "http://127.0.0.1:2379,http://127.0.0.1:22379". Calls go to one member
 * and move to the next on connection errors. clock is kept only as the
 * store's clock (leases follow etcd's); opts may be NULL. -EINVAL for a
 * malformed list, -ECONNREFUSED when no endpoint accepts a connection,
 * another negative code when the probe read fails. On success *out belongs
 * to the caller (nc_store_close). */
int nc__store_etcd_open(const char *endpoints, struct nc_clock *clock,
                        const struct nc__store_etcd_opts *opts, struct nc_store **out);

#endif
