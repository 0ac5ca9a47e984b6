/* The NovaCron state store.
 *
 * One small interface, two back-ends: SQLite (single node, the embedded
 * default) and etcd (cluster; a later issue). Both pass the same
 * conformance suite in tests/unit/test_store_conformance.c. Semantics follow
 * the etcd v3 data model (https://etcd.io/docs/v3.4/learning/data_model/):
 *
 *  - one global revision counter; every committed write (put, delete, txn
 *    with at least one write) increases it by exactly one;
 *  - each key carries create_rev, mod_rev and version (number of puts since
 *    creation; a delete resets the key);
 *  - a txn is compare-then-(success ops | failure ops), atomic;
 *  - watch delivers every event on a prefix after a start revision, in
 *    revision order, with no gaps, until compaction;
 *  - a lease has a TTL; when it expires every key attached to it is deleted
 *    (as one revision per key, like etcd).
 *
 * Thread safety: every call may be made from any thread.
 * Keys are byte strings of at most NC_STORE_KEY_MAX bytes (no NUL); values
 * at most NC_STORE_VALUE_MAX bytes. Longer input returns NC_E_TOOBIG. */
#ifndef NC_STORE_STORE_H
#define NC_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/clock.h"

#define NC_STORE_KEY_MAX 1024
#define NC_STORE_VALUE_MAX (1024 * 1024)
#define NC_STORE_TXN_OPS_MAX 128

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
  NC_OP_DELETE_PREFIX, /* every key starting with key */
};

struct nc_store_op {
  enum nc_store_op_type type;
  const char *key;
  const void *value;
  size_t value_len;
  int64_t lease; /* PUT only; 0 = none */
};

enum nc_store_event_type { NC_EV_PUT, NC_EV_DELETE };

struct nc_store_event {
  enum nc_store_event_type type;
  struct nc_kv kv; /* for DELETE: key and mod_rev (the deleting revision) only */
};

/* The back-end vtable. A back-end fills one of these; callers never use it
 * directly but go through the nc_store_* functions below. */
struct nc_store_backend {
  int version; /* 1 */
  const char *name;
  void (*close)(struct nc_store *s);
  int (*get)(struct nc_store *s, const char *key, struct nc_kv *out);
  int (*range)(struct nc_store *s, const char *prefix, size_t limit,
               struct nc_kv_list *out);
  int (*txn)(struct nc_store *s, const struct nc_store_cmp *cmps, size_t ncmps,
             const struct nc_store_op *then_ops, size_t nthen,
             const struct nc_store_op *else_ops, size_t nelse, bool *succeeded,
             int64_t *rev_out);
  int (*lease_grant)(struct nc_store *s, int64_t ttl_ms, int64_t *lease_out);
  int (*lease_keepalive)(struct nc_store *s, int64_t lease);
  int (*lease_revoke)(struct nc_store *s, int64_t lease);
  int (*watch_open)(struct nc_store *s, const char *prefix, int64_t start_rev,
                    struct nc_store_watch **out);
  int (*watch_next)(struct nc_store_watch *w, int timeout_ms,
                    struct nc_store_event *out);
  void (*watch_close)(struct nc_store_watch *w);
  int (*compact)(struct nc_store *s, int64_t rev);
  int64_t (*current_rev)(struct nc_store *s);
};

/* Opens the store named by uri:
 *   "sqlite:/path/to/state.db"   (created if missing; parent dir must exist)
 *   "etcd:http://127.0.0.1:2379[,http://...]"  (later issue)
 * clock drives lease expiry; NULL means the system clock.
 * On success *out belongs to the caller; free with nc_store_close(). */
int nc_store_open(const char *uri, struct nc_clock *clock, struct nc_store **out);
void nc_store_close(struct nc_store *s); /* accepts NULL */
const char *nc_store_backend_name(const struct nc_store *s);

/* Reads one key. -ENOENT when absent. On success out's strings belong to
 * the caller (nc_kv_free). */
int nc_store_get(struct nc_store *s, const char *key, struct nc_kv *out);
/* All keys with the given prefix, sorted by key, at most limit (0 = no
 * limit; the back-end still caps at 100000). out belongs to the caller
 * (nc_kv_list_free). */
int nc_store_range(struct nc_store *s, const char *prefix, size_t limit,
                   struct nc_kv_list *out);
/* Unconditional put / delete. rev_out (may be NULL) gets the new revision. */
int nc_store_put(struct nc_store *s, const char *key, const void *value, size_t len,
                 int64_t lease, int64_t *rev_out);
int nc_store_delete(struct nc_store *s, const char *key, int64_t *rev_out);
/* Atomic compare-and-swap transaction. *succeeded tells which branch ran.
 * Returns 0 whichever branch ran; an error means nothing was applied.
 * At most NC_STORE_TXN_OPS_MAX compares and ops per branch. */
int nc_store_txn(struct nc_store *s, const struct nc_store_cmp *cmps, size_t ncmps,
                 const struct nc_store_op *then_ops, size_t nthen,
                 const struct nc_store_op *else_ops, size_t nelse, bool *succeeded,
                 int64_t *rev_out);
/* Put only if the key's mod_rev equals expect_mod_rev (0 = key must be
 * absent). NC_E_TXNFAIL when the compare fails. */
int nc_store_cas(struct nc_store *s, const char *key, int64_t expect_mod_rev,
                 const void *value, size_t len, int64_t *rev_out);

int nc_store_lease_grant(struct nc_store *s, int64_t ttl_ms, int64_t *lease_out);
/* NC_E_LEASE if the lease is unknown or already expired. */
int nc_store_lease_keepalive(struct nc_store *s, int64_t lease);
int nc_store_lease_revoke(struct nc_store *s, int64_t lease);

/* Watch every change under prefix with revision > start_rev (start_rev = 0:
 * only changes after now). NC_E_COMPACTED if start_rev is older than the
 * compaction point. Events are pulled with nc_store_watch_next, which
 * blocks up to timeout_ms and returns -ETIMEDOUT when nothing arrived.
 * The event's strings belong to the caller (nc_store_event_free). */
int nc_store_watch_open(struct nc_store *s, const char *prefix, int64_t start_rev,
                        struct nc_store_watch **out);
int nc_store_watch_next(struct nc_store_watch *w, int timeout_ms,
                        struct nc_store_event *out);
void nc_store_watch_close(struct nc_store_watch *w); /* accepts NULL */

/* Drops history at and below rev; watches from older revisions then fail. */
int nc_store_compact(struct nc_store *s, int64_t rev);
int64_t nc_store_current_rev(struct nc_store *s);

void nc_kv_free(struct nc_kv *kv);
void nc_kv_list_free(struct nc_kv_list *l);
void nc_store_event_free(struct nc_store_event *ev);

/* Common head of every back-end's store object; back-ends embed it first. */
struct nc_store {
  const struct nc_store_backend *be;
  struct nc_clock *clock;
};

#endif
