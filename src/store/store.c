/* The store's front: URI dispatch, argument validation and the helpers every
 * back-end shares. Back-ends only ever see input that passed the checks
 * here, so the caps hold whichever back-end runs. */
#include "store/store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_backend.h"
#include "store/store_etcd.h"
#include "store/store_sqlite.h"
#include "util/err.h"
#include "util/log.h"

#define COMPONENT "store"

/* 0 for a key of 1..NC_STORE_KEY_MAX bytes (0.. for a prefix); *len_out
 * gets its length. The scan stops one byte past the cap, so an
 * unterminated giant buffer is never read to its end. */
static int check_key(const char *key, bool is_prefix, size_t *len_out) {
  if (!key)
    return -EINVAL;
  size_t n = strnlen(key, NC_STORE_KEY_MAX + 1);
  if (n > NC_STORE_KEY_MAX)
    return NC_E_TOOBIG;
  if (n == 0 && !is_prefix)
    return -EINVAL;
  if (len_out)
    *len_out = n;
  return 0;
}

static int check_value(const void *value, size_t len) {
  if (len > NC_STORE_VALUE_MAX)
    return NC_E_TOOBIG;
  if (!value && len > 0)
    return -EINVAL;
  return 0;
}

static int check_cmp(const struct nc_store_cmp *c) {
  int rc = check_key(c->key, false, NULL);
  if (rc < 0)
    return rc;
  if ((unsigned)c->op > NC_CMP_GT)
    return -EINVAL;
  switch (c->target) {
  case NC_CMP_VERSION:
  case NC_CMP_CREATE_REV:
  case NC_CMP_MOD_REV:
    return 0;
  case NC_CMP_VALUE:
    return check_value(c->value, c->value_len);
  }
  return -EINVAL;
}

static int check_op(const struct nc_store_op *op) {
  int rc = check_key(op->key, false, NULL);
  if (rc < 0)
    return rc;
  switch (op->type) {
  case NC_OP_PUT:
    if (op->lease < 0)
      return -EINVAL;
    return check_value(op->value, op->value_len);
  case NC_OP_DELETE:
  case NC_OP_DELETE_PREFIX:
    return 0;
  }
  return -EINVAL;
}

/* Whether the delete op d removes key. */
static bool op_deletes(const struct nc_store_op *d, const char *key) {
  if (d->type == NC_OP_DELETE)
    return strcmp(d->key, key) == 0;
  if (d->type == NC_OP_DELETE_PREFIX)
    return strncmp(d->key, key, strlen(d->key)) == 0;
  return false;
}

/* etcd rejects a txn branch that puts one key twice or puts a key that a
 * delete in the same branch covers (ErrGRPCDuplicateKey, checkIntervals in
 * etcdserver/api/v3rpc/key.go); so do we, so that op order never matters
 * and both back-ends agree. Overlapping deletes are fine. O(n^2) over at
 * most NC_STORE_TXN_OPS_MAX ops. */
static int check_branch(const struct nc_store_op *ops, size_t n) {
  if (n > NC_STORE_TXN_OPS_MAX)
    return NC_E_TOOBIG;
  if (n > 0 && !ops)
    return -EINVAL;
  for (size_t i = 0; i < n; i++) {
    int rc = check_op(&ops[i]);
    if (rc < 0)
      return rc;
  }
  for (size_t i = 0; i < n; i++) {
    if (ops[i].type != NC_OP_PUT)
      continue;
    for (size_t j = 0; j < n; j++) {
      if (j == i)
        continue;
      bool clash = ops[j].type == NC_OP_PUT ? strcmp(ops[i].key, ops[j].key) == 0
                                            : op_deletes(&ops[j], ops[i].key);
      if (clash) {
        nc_debug(COMPONENT, "txn: key \"%s\" is written twice in one branch", ops[i].key);
        return -EINVAL;
      }
    }
  }
  return 0;
}

int nc_store_open(const char *uri, struct nc_clock *clock, struct nc_store **out) {
  static const char sqlite_scheme[] = "sqlite:";
  static const char etcd_scheme[] = "etcd:";
  if (!uri || !out)
    return -EINVAL;
  *out = NULL;
  if (!clock)
    clock = nc_clock_system();
  if (strncmp(uri, sqlite_scheme, sizeof sqlite_scheme - 1) == 0) {
    const char *path = uri + sizeof sqlite_scheme - 1;
    if (*path == '\0') {
      nc_error(COMPONENT, "store uri \"%s\" names no file (try sqlite:/var/lib/novacron/state.db)",
               uri);
      return -EINVAL;
    }
    return nc__store_sqlite_open(path, clock, NULL, out);
  }
  if (strncmp(uri, etcd_scheme, sizeof etcd_scheme - 1) == 0)
    return nc__store_etcd_open(uri + sizeof etcd_scheme - 1, clock, NULL, out);
  nc_error(COMPONENT,
           "store uri \"%s\" has an unknown scheme (try sqlite:/var/lib/novacron/state.db or "
           "etcd:http://127.0.0.1:2379)",
           uri);
  return -EINVAL;
}

void nc_store_close(struct nc_store *s) {
  if (s)
    s->be->close(s);
}

const char *nc_store_backend_name(const struct nc_store *s) {
  return s ? s->be->name : "none";
}

int nc_store_get(struct nc_store *s, const char *key, struct nc_kv *out) {
  if (!out)
    return -EINVAL;
  memset(out, 0, sizeof *out);
  if (!s)
    return -EINVAL;
  int rc = check_key(key, false, NULL);
  if (rc < 0)
    return rc;
  return s->be->get(s, key, out);
}

int nc_store_range(struct nc_store *s, const char *prefix, size_t limit,
                   struct nc_kv_list *out) {
  if (!out)
    return -EINVAL;
  memset(out, 0, sizeof *out);
  if (!s)
    return -EINVAL;
  int rc = check_key(prefix, true, NULL);
  if (rc < 0)
    return rc;
  return s->be->range(s, prefix, limit, out);
}

int nc_store_put(struct nc_store *s, const char *key, const void *value, size_t len,
                 int64_t lease, int64_t *rev_out) {
  struct nc_store_op op = {.type = NC_OP_PUT, .key = key, .value = value, .value_len = len,
                           .lease = lease};
  return nc_store_txn(s, NULL, 0, &op, 1, NULL, 0, NULL, rev_out);
}

int nc_store_delete(struct nc_store *s, const char *key, int64_t *rev_out) {
  struct nc_store_op op = {.type = NC_OP_DELETE, .key = key};
  return nc_store_txn(s, NULL, 0, &op, 1, NULL, 0, NULL, rev_out);
}

int nc_store_txn(struct nc_store *s, const struct nc_store_cmp *cmps, size_t ncmps,
                 const struct nc_store_op *then_ops, size_t nthen,
                 const struct nc_store_op *else_ops, size_t nelse, bool *succeeded,
                 int64_t *rev_out) {
  if (!s)
    return -EINVAL;
  if (ncmps > NC_STORE_TXN_OPS_MAX)
    return NC_E_TOOBIG;
  if (ncmps > 0 && !cmps)
    return -EINVAL;
  for (size_t i = 0; i < ncmps; i++) {
    int rc = check_cmp(&cmps[i]);
    if (rc < 0)
      return rc;
  }
  int rc = check_branch(then_ops, nthen);
  if (rc < 0)
    return rc;
  rc = check_branch(else_ops, nelse);
  if (rc < 0)
    return rc;
  bool ok = false;
  int64_t rev = 0;
  rc = s->be->txn(s, cmps, ncmps, then_ops, nthen, else_ops, nelse, &ok, &rev);
  if (rc < 0)
    return rc;
  if (succeeded)
    *succeeded = ok;
  if (rev_out)
    *rev_out = rev;
  return 0;
}

int nc_store_cas(struct nc_store *s, const char *key, int64_t expect_mod_rev,
                 const void *value, size_t len, int64_t *rev_out) {
  if (expect_mod_rev < 0)
    return -EINVAL;
  struct nc_store_cmp cmp = {.key = key, .target = NC_CMP_MOD_REV, .op = NC_CMP_EQ,
                             .num = expect_mod_rev};
  struct nc_store_op op = {.type = NC_OP_PUT, .key = key, .value = value, .value_len = len};
  bool ok = false;
  int rc = nc_store_txn(s, &cmp, 1, &op, 1, NULL, 0, &ok, rev_out);
  if (rc < 0)
    return rc;
  return ok ? 0 : NC_E_TXNFAIL;
}

int nc_store_lease_grant(struct nc_store *s, int64_t ttl_ms, int64_t *lease_out) {
  if (!s || !lease_out || ttl_ms <= 0 || ttl_ms > NC_STORE_LEASE_TTL_MAX_MS)
    return -EINVAL;
  *lease_out = 0;
  return s->be->lease_grant(s, ttl_ms, lease_out);
}

int nc_store_lease_keepalive(struct nc_store *s, int64_t lease) {
  if (!s || lease <= 0)
    return -EINVAL;
  return s->be->lease_keepalive(s, lease);
}

int nc_store_lease_revoke(struct nc_store *s, int64_t lease) {
  if (!s || lease <= 0)
    return -EINVAL;
  return s->be->lease_revoke(s, lease);
}

int nc_store_watch_open(struct nc_store *s, const char *prefix, int64_t start_rev,
                        struct nc_store_watch **out) {
  if (!out)
    return -EINVAL;
  *out = NULL;
  if (!s || start_rev < 0)
    return -EINVAL;
  int rc = check_key(prefix, true, NULL);
  if (rc < 0)
    return rc;
  return s->be->watch_open(s, prefix, start_rev, out);
}

int nc_store_watch_next(struct nc_store_watch *w, int timeout_ms,
                        struct nc_store_event *out) {
  if (!out)
    return -EINVAL;
  memset(out, 0, sizeof *out);
  if (!w || timeout_ms < 0)
    return -EINVAL;
  return w->store->be->watch_next(w, timeout_ms, out);
}

void nc_store_watch_close(struct nc_store_watch *w) {
  if (w)
    w->store->be->watch_close(w);
}

int nc_store_compact(struct nc_store *s, int64_t rev) {
  if (!s || rev <= 0)
    return -EINVAL;
  return s->be->compact(s, rev);
}

int64_t nc_store_current_rev(struct nc_store *s) {
  if (!s)
    return -EINVAL;
  return s->be->current_rev(s);
}

void nc_kv_free(struct nc_kv *kv) {
  if (!kv)
    return;
  free(kv->key);
  free(kv->value);
  memset(kv, 0, sizeof *kv);
}

void nc_kv_list_free(struct nc_kv_list *l) {
  if (!l)
    return;
  for (size_t i = 0; i < l->count; i++)
    nc_kv_free(&l->items[i]);
  free(l->items);
  memset(l, 0, sizeof *l);
}

void nc_store_event_free(struct nc_store_event *ev) {
  if (!ev)
    return;
  nc_kv_free(&ev->kv);
  memset(ev, 0, sizeof *ev);
}
