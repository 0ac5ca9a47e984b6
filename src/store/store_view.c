/* A store view: another store seen under a key prefix. See nc_store_view in
 * store.h. Every key the caller names gets the prefix in front before it
 * reaches the base store; every key coming back loses it. Revisions,
 * leases and compaction are the base store's own, shared with everyone who
 * uses it. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "store/store_backend.h"
#include "util/err.h"

#define VIEW_PREFIX_MAX 256

struct view {
  struct nc_store head;
  struct nc_store *base;
  bool own_base;
  atomic_int refs; /* 1 for the view itself + 1 per open watch */
  char prefix[VIEW_PREFIX_MAX + 1];
  size_t plen;
};

/* A watch keeps its own copy of the prefix: it may outlive the view
 * (store.h lets watches be closed after their store). */
struct view_watch {
  struct nc_store_watch head;
  struct nc_store_watch *base;
  char prefix[VIEW_PREFIX_MAX + 1];
  size_t plen;
};

static struct view *V(struct nc_store *s) { return (struct view *)s; }

/* prefix+key in a new string; NC_E_TOOBIG when the result exceeds the key
 * cap (the caller's key alone passed it). */
static int full_key(const struct view *v, const char *key, char **out) {
  size_t n = strlen(key);
  if (v->plen + n > NC_STORE_KEY_MAX)
    return NC_E_TOOBIG;
  char *k = malloc(v->plen + n + 1);
  if (!k)
    return -ENOMEM;
  memcpy(k, v->prefix, v->plen);
  memcpy(k + v->plen, key, n + 1);
  *out = k;
  return 0;
}

/* Drops the prefix from a key read back from the base. Every key the base
 * returns for a view's query starts with the prefix. */
static int strip_prefix(const char *prefix, size_t plen, char **key) {
  if (!*key)
    return 0;
  size_t n = strlen(*key);
  if (n < plen || memcmp(*key, prefix, plen) != 0)
    return NC_E_PROTO;
  memmove(*key, *key + plen, n - plen + 1);
  return 0;
}

static int strip(const struct view *v, char **key) {
  return strip_prefix(v->prefix, v->plen, key);
}

static void view_unref(struct view *v) {
  if (atomic_fetch_sub(&v->refs, 1) == 1)
    free(v);
}

static void view_close(struct nc_store *s) {
  struct view *v = V(s);
  if (v->own_base)
    nc_store_close(v->base);
  view_unref(v);
}

static int view_get(struct nc_store *s, const char *key, struct nc_kv *out) {
  struct view *v = V(s);
  char *k = NULL;
  int rc = full_key(v, key, &k);
  if (rc < 0)
    return rc;
  rc = nc_store_get(v->base, k, out);
  free(k);
  if (rc == 0 && (rc = strip(v, &out->key)) < 0)
    nc_kv_free(out);
  return rc;
}

static int view_range(struct nc_store *s, const char *prefix, size_t limit,
                      struct nc_kv_list *out) {
  struct view *v = V(s);
  char *k = NULL;
  int rc = full_key(v, prefix, &k);
  if (rc < 0)
    return rc;
  rc = nc_store_range(v->base, k, limit, out);
  free(k);
  for (size_t i = 0; rc == 0 && i < out->count; i++)
    rc = strip(v, &out->items[i].key);
  if (rc < 0)
    nc_kv_list_free(out);
  return rc;
}

/* Copies n ops (or compares, through key_at) with prefixed keys into a
 * scratch array; keys are freed by free_keys. */
static int prefix_ops(const struct view *v, const struct nc_store_op *ops, size_t n,
                      struct nc_store_op **out) {
  *out = NULL;
  if (n == 0)
    return 0;
  struct nc_store_op *c = calloc(n, sizeof *c);
  if (!c)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    c[i] = ops[i];
    c[i].key = NULL;
    char *k = NULL;
    int rc = full_key(v, ops[i].key, &k);
    if (rc < 0) {
      for (size_t j = 0; j < i; j++)
        free((char *)c[j].key);
      free(c);
      return rc;
    }
    c[i].key = k;
  }
  *out = c;
  return 0;
}

static void free_ops(struct nc_store_op *ops, size_t n) {
  for (size_t i = 0; ops && i < n; i++)
    free((char *)ops[i].key);
  free(ops);
}

static int view_txn(struct nc_store *s, const struct nc_store_cmp *cmps, size_t ncmps,
                    const struct nc_store_op *then_ops, size_t nthen,
                    const struct nc_store_op *else_ops, size_t nelse, bool *succeeded,
                    int64_t *rev_out) {
  struct view *v = V(s);
  struct nc_store_cmp *pc = ncmps ? calloc(ncmps, sizeof *pc) : NULL;
  if (ncmps && !pc)
    return -ENOMEM;
  int rc = 0;
  size_t made = 0;
  for (; made < ncmps; made++) {
    pc[made] = cmps[made];
    char *k = NULL;
    if ((rc = full_key(v, cmps[made].key, &k)) < 0)
      break;
    pc[made].key = k;
  }
  struct nc_store_op *pt = NULL, *pe = NULL;
  if (rc == 0)
    rc = prefix_ops(v, then_ops, nthen, &pt);
  if (rc == 0)
    rc = prefix_ops(v, else_ops, nelse, &pe);
  if (rc == 0)
    rc = nc_store_txn(v->base, pc, ncmps, pt, nthen, pe, nelse, succeeded, rev_out);
  for (size_t i = 0; i < made; i++)
    free((char *)pc[i].key);
  free(pc);
  free_ops(pt, nthen);
  free_ops(pe, nelse);
  return rc;
}

static int view_lease_grant(struct nc_store *s, int64_t ttl_ms, int64_t *lease_out) {
  return nc_store_lease_grant(V(s)->base, ttl_ms, lease_out);
}

static int view_lease_keepalive(struct nc_store *s, int64_t lease) {
  return nc_store_lease_keepalive(V(s)->base, lease);
}

static int view_lease_revoke(struct nc_store *s, int64_t lease) {
  return nc_store_lease_revoke(V(s)->base, lease);
}

static int view_watch_open(struct nc_store *s, const char *prefix, int64_t start_rev,
                           struct nc_store_watch **out) {
  struct view *v = V(s);
  struct view_watch *w = calloc(1, sizeof *w);
  if (!w)
    return -ENOMEM;
  char *k = NULL;
  int rc = full_key(v, prefix, &k);
  if (rc == 0)
    rc = nc_store_watch_open(v->base, k, start_rev, &w->base);
  free(k);
  if (rc < 0) {
    free(w);
    return rc;
  }
  w->head.store = s;
  atomic_fetch_add(&v->refs, 1);
  memcpy(w->prefix, v->prefix, v->plen + 1);
  w->plen = v->plen;
  *out = &w->head;
  return 0;
}

static int view_watch_next(struct nc_store_watch *hw, int timeout_ms,
                           struct nc_store_event *out) {
  struct view_watch *w = (struct view_watch *)hw;
  int rc = nc_store_watch_next(w->base, timeout_ms, out);
  if (rc == 0 && (rc = strip_prefix(w->prefix, w->plen, &out->kv.key)) < 0)
    nc_store_event_free(out);
  return rc;
}

static void view_watch_close(struct nc_store_watch *hw) {
  struct view_watch *w = (struct view_watch *)hw;
  nc_store_watch_close(w->base); /* the base's own close is safe after its store's */
  struct view *v = V(hw->store);
  free(w);
  view_unref(v);
}

static int view_compact(struct nc_store *s, int64_t rev) {
  return nc_store_compact(V(s)->base, rev);
}

static int64_t view_current_rev(struct nc_store *s) {
  return nc_store_current_rev(V(s)->base);
}

static const struct nc_store_backend view_backend = {
    .version = 1,
    .name = "view",
    .close = view_close,
    .get = view_get,
    .range = view_range,
    .txn = view_txn,
    .lease_grant = view_lease_grant,
    .lease_keepalive = view_lease_keepalive,
    .lease_revoke = view_lease_revoke,
    .watch_open = view_watch_open,
    .watch_next = view_watch_next,
    .watch_close = view_watch_close,
    .compact = view_compact,
    .current_rev = view_current_rev,
};

int nc_store_view(struct nc_store *base, const char *prefix, bool own_base,
                  struct nc_store **out) {
  if (!out)
    return -EINVAL;
  *out = NULL;
  if (!base || !prefix || !*prefix)
    return -EINVAL;
  size_t n = strnlen(prefix, VIEW_PREFIX_MAX + 1);
  if (n > VIEW_PREFIX_MAX)
    return NC_E_TOOBIG;
  struct view *v = calloc(1, sizeof *v);
  if (!v)
    return -ENOMEM;
  v->head.be = &view_backend;
  v->head.clock = base->clock;
  v->base = base;
  v->own_base = own_base;
  atomic_init(&v->refs, 1);
  memcpy(v->prefix, prefix, n + 1);
  v->plen = n;
  *out = &v->head;
  return 0;
}
