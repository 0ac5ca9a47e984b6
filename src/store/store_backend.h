/* The store's back-end interface. Internal: only src/store/ and back-end
 * tests include this; everyone else uses store.h.
 *
 * store.c validates every argument (key and value caps, op counts, enum
 * ranges, NULLs, txn key overlaps) before calling a back-end, so a back-end
 * may assume well-formed input. Put and delete reach the back-end as txns
 * without compares. */
#ifndef NC_STORE_STORE_BACKEND_H
#define NC_STORE_STORE_BACKEND_H

#include "store/store.h"

/* Common head of every back-end's store object; back-ends embed it first. */
struct nc_store {
  const struct nc_store_backend *be;
  struct nc_clock *clock; /* never NULL; not owned */
};

/* Common head of every back-end's watch object; back-ends embed it first. */
struct nc_store_watch {
  struct nc_store *store;
};

/* The back-end vtable. A back-end fills one of these; callers never use it
 * directly but go through the nc_store_* functions. Each function has the
 * contract of its nc_store_* wrapper. */
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

#endif
