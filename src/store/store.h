/* The NovaCron state store.
 *
 * One small interface, two back-ends: SQLite (single node, the embedded
 * default) and etcd (cluster). Both pass the same
 * conformance suite in tests/unit/store/test_store_conformance.c. Semantics
 * follow the etcd v3 data model
 * (https://etcd.io/docs/v3.5/learning/data_model/, .../api/):
 *
 *  - one global revision counter; every committed write (put, delete, txn
 *    with at least one write) increases it by exactly one. A delete that
 *    removes nothing is not a write: the revision stays (etcd DeleteRange);
 *  - each key carries create_rev, mod_rev and version (number of puts since
 *    creation; a delete resets the key);
 *  - a txn is compare-then-(success ops | failure ops), atomic; all changes
 *    of one txn share its revision;
 *  - watch delivers every event on a prefix after a start revision, in
 *    revision order (and, within a txn, in op order), with no gaps, until
 *    compaction;
 *  - a lease has a TTL; when it expires (or is revoked) every key attached
 *    to it is deleted in one revision, like etcd's lessor revoke. A lease
 *    with no keys expires without a revision.
 *
 * Thread safety: every call may be made from any thread. One watch handle
 * is used by one thread at a time.
 * Keys are byte strings of 1..NC_STORE_KEY_MAX bytes (no NUL); values at
 * most NC_STORE_VALUE_MAX bytes. Longer input returns NC_E_TOOBIG, a NULL
 * or empty key -EINVAL; neither changes any state. */
#ifndef NC_STORE_STORE_H
#define NC_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/clock.h"

#define NC_STORE_KEY_MAX 1024
#define NC_STORE_VALUE_MAX (1024 * 1024)
#define NC_STORE_TXN_OPS_MAX 128
/* A range never returns more than this many keys nor more than this many
 * bytes of keys and values; see nc_store_range. */
#define NC_STORE_RANGE_MAX 100000
#define NC_STORE_RANGE_BYTES_MAX (64 * 1024 * 1024)
/* Longest lease TTL (etcd's MaxLeaseTTL, 9e9 s). */
#define NC_STORE_LEASE_TTL_MAX_MS (9000000000LL * 1000)

/* Opaque; back-ends define it (src/store/store_backend.h). */
struct nc_store;
struct nc_store_watch;

/* One key-value pair as read from the store. Owned by whoever got it. */
struct nc_kv {
  char *key;
  char *value; /* always NUL-terminated for convenience; value_len excludes it */
  size_t value_len;
  int64_t create_rev;
  int64_t mod_rev;
  int64_t version;
  int64_t lease; /* 0 = none */
};

struct nc_kv_list {
  struct nc_kv *items;
  size_t count;
  int64_t rev; /* store revision at which the read was made */
};

enum nc_store_cmp_target {
  NC_CMP_VERSION,    /* key's version; 0 when the key is absent */
  NC_CMP_CREATE_REV, /* 0 when absent */
  NC_CMP_MOD_REV,    /* 0 when absent */
  NC_CMP_VALUE,      /* byte comparison; an absent key never matches */
};
/* The key's attribute is the left operand: {VERSION, LT, 3} holds when the
 * key's version is below 3. */
enum nc_store_cmp_op { NC_CMP_EQ, NC_CMP_NE, NC_CMP_LT, NC_CMP_GT };

struct nc_store_cmp {
  const char *key;
  enum nc_store_cmp_target target;
  enum nc_store_cmp_op op;
  int64_t num; /* for VERSION / CREATE_REV / MOD_REV */
  const void *value; /* for VALUE */
  size_t value_len;
};

enum nc_store_op_type {
  NC_OP_PUT,
  NC_OP_DELETE,        /* one key; absent is not an error */
  NC_OP_DELETE_PREFIX, /* every key starting with key (which must not be "") */
};

struct nc_store_op {
  enum nc_store_op_type type;
  const char *key;
  const void *value;
  size_t value_len;
  int64_t lease; /* PUT only; 0 = none (a put without a lease detaches) */
};

enum nc_store_event_type { NC_EV_PUT, NC_EV_DELETE };

struct nc_store_event {
  enum nc_store_event_type type;
  struct nc_kv kv; /* for DELETE: key and mod_rev (the deleting revision) only;
                      value is "" */
};

/* Opens the store named by uri:
 *   "sqlite:/path/to/state.db"   (created if missing; parent dir must exist;
 *                                 -EBUSY if another store has it open)
 *   "sqlite::memory:"            (private, not persisted; for tests)
 *   "etcd:http://127.0.0.1:2379[,http://...]"  (etcd v3 gateway; see store_etcd.h)
 * clock drives lease expiry; NULL means the system clock. The clock must
 * outlive the store.
 * On success *out belongs to the caller; free with nc_store_close(). */
int nc_store_open(const char *uri, struct nc_clock *clock, struct nc_store **out);
/* A view of base under a key prefix (1..256 bytes, "/nodes/n1" say):
 * every key the caller names is read and written as prefix+key, and keys
 * coming back (ranges, watch events) lose the prefix again, so code written
 * for a store of its own can share one with others. Revisions, leases and
 * compaction are base's, shared with its other users. A prefixed key longer
 * than NC_STORE_KEY_MAX is NC_E_TOOBIG. With own_base, closing the view
 * closes base; otherwise base must outlive the view and its watches. */
int nc_store_view(struct nc_store *base, const char *prefix, bool own_base,
                  struct nc_store **out);
/* Accepts NULL. Watches still open fail with -ESHUTDOWN from then on (a
 * blocked nc_store_watch_next returns at once, which is how a daemon stops
 * its watcher threads) and must still be closed; the store's memory lives
 * until the last one is. Any other call after close is a use after free. */
void nc_store_close(struct nc_store *s);
const char *nc_store_backend_name(const struct nc_store *s);

/* Reads one key. -ENOENT when absent. On success out's strings belong to
 * the caller (nc_kv_free); on failure *out is zeroed. */
int nc_store_get(struct nc_store *s, const char *key, struct nc_kv *out);
/* All keys with the given prefix ("" = every key), sorted by key bytes, at
 * most limit (0 = no limit). With limit 0 (or above NC_STORE_RANGE_MAX),
 * more than NC_STORE_RANGE_MAX matches is NC_E_TOOBIG, not a silent
 * truncation; so is a result
 * over NC_STORE_RANGE_BYTES_MAX with any limit. out belongs to the caller
 * (nc_kv_list_free); on failure it is zeroed. */
int nc_store_range(struct nc_store *s, const char *prefix, size_t limit,
                   struct nc_kv_list *out);
/* Unconditional put / delete. rev_out (may be NULL) gets the new revision,
 * or the current one when a delete found nothing. NC_E_LEASE when lease is
 * not 0 and not a live lease. */
int nc_store_put(struct nc_store *s, const char *key, const void *value, size_t len,
                 int64_t lease, int64_t *rev_out);
int nc_store_delete(struct nc_store *s, const char *key, int64_t *rev_out);
/* Atomic compare-and-swap transaction. All compares must hold (an empty
 * list holds) for then_ops to run, else else_ops run. *succeeded (may be
 * NULL) tells which branch ran. Returns 0 whichever branch ran; an error
 * means nothing was applied. At most NC_STORE_TXN_OPS_MAX compares and ops
 * per branch (NC_E_TOOBIG). As in etcd, a branch may not put one key twice
 * nor put a key it also deletes (-EINVAL). rev_out (may be NULL) gets the
 * txn's revision, or the current one when the branch wrote nothing. */
int nc_store_txn(struct nc_store *s, const struct nc_store_cmp *cmps, size_t ncmps,
                 const struct nc_store_op *then_ops, size_t nthen,
                 const struct nc_store_op *else_ops, size_t nelse, bool *succeeded,
                 int64_t *rev_out);
/* Put only if the key's mod_rev equals expect_mod_rev (0 = key must be
 * absent). NC_E_TXNFAIL when the compare fails. The put carries no lease. */
int nc_store_cas(struct nc_store *s, const char *key, int64_t expect_mod_rev,
                 const void *value, size_t len, int64_t *rev_out);

/* Leases. ttl_ms is 1..NC_STORE_LEASE_TTL_MAX_MS; a back-end may round it
 * up (etcd: whole seconds, with a minimum). Expiry follows the store's
 * clock. A back-end that restarts gives every live lease its full TTL
 * again (etcd does the same on leader change). */
int nc_store_lease_grant(struct nc_store *s, int64_t ttl_ms, int64_t *lease_out);
/* Restarts the lease's TTL. NC_E_LEASE if the lease is unknown or already
 * expired. */
int nc_store_lease_keepalive(struct nc_store *s, int64_t lease);
/* Deletes the lease and its keys now. NC_E_LEASE if unknown or expired. */
int nc_store_lease_revoke(struct nc_store *s, int64_t lease);

/* Watch every change under prefix ("" = all) with revision > start_rev
 * (start_rev = 0: only changes after now). NC_E_COMPACTED if start_rev is
 * older than the compaction point. On success *out belongs to the caller
 * (nc_store_watch_close).
 *
 * Events are pulled one at a time with nc_store_watch_next, which blocks
 * up to timeout_ms (real time, >= 0; 0 polls) and returns -ETIMEDOUT when
 * nothing arrived, -ESHUTDOWN once the store is closed. A watch that falls
 * behind the compaction point returns NC_E_COMPACTED from then on; re-read
 * with nc_store_range and watch again from the range's rev. On success the event's strings belong to the caller
 * (nc_store_event_free); on failure *out is zeroed. */
int nc_store_watch_open(struct nc_store *s, const char *prefix, int64_t start_rev,
                        struct nc_store_watch **out);
int nc_store_watch_next(struct nc_store_watch *w, int timeout_ms,
                        struct nc_store_event *out);
void nc_store_watch_close(struct nc_store_watch *w); /* accepts NULL */

/* Drops history at and below rev; watches from older revisions then fail.
 * -EINVAL when rev is above the current revision, NC_E_COMPACTED when it is
 * at or below the compaction point already (as etcd). Back-ends also
 * compact on their own, keeping at least the last few thousand revisions. */
int nc_store_compact(struct nc_store *s, int64_t rev);
/* The current revision, or a negative error. A new store is at revision 1
 * (as etcd), so no revision a caller sees is ever 0. */
int64_t nc_store_current_rev(struct nc_store *s);

/* Each frees what the struct points to, zeroes it, and accepts NULL. */
void nc_kv_free(struct nc_kv *kv);
void nc_kv_list_free(struct nc_kv_list *l);
void nc_store_event_free(struct nc_store_event *ev);

#endif
