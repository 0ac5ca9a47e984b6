/* The placement engine: snapshot, filters and weights, commits, batches
 * and the N+1 check. The contract is in sched.h; explain's text and JSON
 * are in sched_explain.c.
 *
 * Speed: a decision looks at every host, so the per-host step (nc__eval)
 * reads one 64-byte record (struct nc__host_hot), compares integers, and
 * touches the colder record only for labels, latency and groups when the
 * request has them. Strings are turned into ids once per request; group
 * members are counted per failure domain once per request, not per host. */
#include "sched/sched_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

#define TOMB UINT32_MAX
/* Distinct strings / domains per snapshot: hosts and their labels bound
 * them in practice; this bounds what hostile input can make us hold. */
#define STRS_MAX (1u << 20)
/* A host's summed allocation never goes past this (VMs added as facts are
 * not filtered), so the int64 arithmetic cannot overflow. */
#define USED_MAX (INT64_C(1) << 62)

const char *const nc__filter_names[NC__F_COUNT] = {
    [NC__F_OK] = "ok",         [NC__F_STATE] = "state",       [NC__F_AVOID] = "avoid",
    [NC__F_ARCH] = "arch",     [NC__F_LABELS] = "labels",     [NC__F_CPU] = "cpu",
    [NC__F_MEMORY] = "memory", [NC__F_LATENCY] = "latency",   [NC__F_AFFINITY] = "affinity",
    [NC__F_ANTI_AFFINITY] = "anti_affinity",
};

const char *const nc__weight_names[NC__W_COUNT] = {
    [NC__W_CPU] = "cpu",
    [NC__W_MEMORY] = "memory",
    [NC__W_SOFT_AFFINITY] = "soft_affinity",
    [NC__W_SOFT_ANTI_AFFINITY] = "soft_anti_affinity",
    [NC__W_ZONE] = "zone",
    [NC__W_REGION] = "region",
    [NC__W_LATENCY] = "latency",
};

/* ---- names and hash tables ---------------------------------------------- */

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/* 0 when s is a valid name; -EINVAL when NULL, empty or holding control
 * bytes; NC_E_TOOBIG when longer than NC_SCHED_NAME_MAX. */
static int check_name(const char *s) {
  if (!s)
    return -EINVAL;
  size_t n = strnlen(s, NC_SCHED_NAME_MAX + 1);
  if (n == 0)
    return -EINVAL;
  if (n > NC_SCHED_NAME_MAX)
    return NC_E_TOOBIG;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch == 0x7f)
      return -EINVAL;
  }
  return 0;
}

/* Like check_name, but NULL and "" mean "absent" and are fine. */
static int check_opt_name(const char *s) {
  return (!s || !*s) ? 0 : check_name(s);
}

static bool present(const char *s) { return s && *s; }

typedef const char *(*name_fn)(const void *owner, uint32_t idx);

static bool stab_find(const struct nc__stab *t, const char *key, uint32_t h, name_fn name,
                      const void *owner, uint32_t *idx) {
  if (t->cap == 0)
    return false;
  size_t mask = t->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    uint32_t sl = t->slot[i];
    if (sl == 0)
      return false;
    if (sl != TOMB && t->hash[i] == h && strcmp(name(owner, sl - 1), key) == 0) {
      *idx = sl - 1;
      return true;
    }
  }
}

static int stab_grow(struct nc__stab *t) {
  size_t ncap = t->cap ? t->cap * 2 : 64;
  uint32_t *slot = calloc(ncap, sizeof *slot);
  uint32_t *hash = calloc(ncap, sizeof *hash);
  if (!slot || !hash) {
    free(slot);
    free(hash);
    return -ENOMEM;
  }
  size_t used = 0;
  for (size_t i = 0; i < t->cap; i++) {
    if (t->slot[i] == 0 || t->slot[i] == TOMB)
      continue;
    size_t j = t->hash[i] & (ncap - 1);
    while (slot[j])
      j = (j + 1) & (ncap - 1);
    slot[j] = t->slot[i];
    hash[j] = t->hash[i];
    used++;
  }
  free(t->slot);
  free(t->hash);
  t->slot = slot;
  t->hash = hash;
  t->cap = ncap;
  t->used = used;
  return 0;
}

/* Makes room for one more insert, so stab_insert itself cannot fail. */
static int stab_reserve(struct nc__stab *t) {
  if ((t->used + 1) * 4 > t->cap * 3)
    return stab_grow(t);
  return 0;
}

static void stab_insert(struct nc__stab *t, uint32_t h, uint32_t idx) {
  size_t mask = t->cap - 1;
  size_t i = h & mask;
  while (t->slot[i] != 0 && t->slot[i] != TOMB)
    i = (i + 1) & mask;
  if (t->slot[i] == 0)
    t->used++;
  t->slot[i] = idx + 1;
  t->hash[i] = h;
}

static void stab_remove(struct nc__stab *t, uint32_t h, uint32_t idx) {
  size_t mask = t->cap - 1;
  for (size_t i = h & mask; t->slot[i] != 0; i = (i + 1) & mask) {
    if (t->slot[i] == idx + 1) {
      t->slot[i] = TOMB;
      return;
    }
  }
}

static void stab_free(struct nc__stab *t) {
  free(t->slot);
  free(t->hash);
  memset(t, 0, sizeof *t);
}

static const char *str_name(const void *owner, uint32_t idx) {
  return ((const struct nc__strs *)owner)->s[idx];
}
static const char *host_name(const void *owner, uint32_t idx) {
  return ((const struct nc_sched *)owner)->host[idx].name;
}
static const char *vm_name(const void *owner, uint32_t idx) {
  return ((const struct nc_sched *)owner)->vm[idx].name;
}
static const char *group_name(const void *owner, uint32_t idx) {
  return ((const struct nc_sched *)owner)->group[idx].name;
}

/* The id of s, or ID_NONE when s is absent, or ID_MISSING when it was
 * never interned. */
static uint32_t strs_find(const struct nc__strs *p, const char *s) {
  if (!present(s))
    return ID_NONE;
  uint32_t id;
  return stab_find(&p->tab, s, hash_str(s), str_name, p, &id) ? id : ID_MISSING;
}

static int strs_intern(struct nc__strs *p, const char *s, uint32_t *id) {
  if (!present(s)) {
    *id = ID_NONE;
    return 0;
  }
  uint32_t h = hash_str(s);
  if (stab_find(&p->tab, s, h, str_name, p, id))
    return 0;
  if (p->n >= STRS_MAX)
    return NC_E_TOOBIG;
  if (p->n == p->cap) {
    size_t ncap = p->cap ? p->cap * 2 : 64;
    char **ns = realloc(p->s, ncap * sizeof *ns);
    if (!ns)
      return -ENOMEM;
    p->s = ns;
    p->cap = ncap;
  }
  char *copy = strdup(s);
  if (!copy || stab_reserve(&p->tab) != 0) {
    free(copy);
    return -ENOMEM;
  }
  p->s[p->n] = copy;
  stab_insert(&p->tab, h, (uint32_t)p->n);
  *id = (uint32_t)p->n++;
  return 0;
}

static void strs_free(struct nc__strs *p) {
  for (size_t i = 0; i < p->n; i++)
    free(p->s[i]);
  free(p->s);
  stab_free(&p->tab);
  memset(p, 0, sizeof *p);
}

static bool find_host(const struct nc_sched *s, const char *name, uint32_t *h) {
  return stab_find(&s->host_tab, name, hash_str(name), host_name, s, h);
}
static bool find_vm(const struct nc_sched *s, const char *name, uint32_t *v) {
  return stab_find(&s->vm_tab, name, hash_str(name), vm_name, s, v);
}
static bool find_group(const struct nc_sched *s, const char *name, uint32_t *g) {
  return stab_find(&s->group_tab, name, hash_str(name), group_name, s, g);
}

/* ---- config and lifecycle -------------------------------------------------- */

void nc_sched_config_default(struct nc_sched_config *c) {
  memset(c, 0, sizeof *c);
  c->cpu_ratio = 4.0;
  c->mem_ratio = 1.0;
  c->mode = NC_SCHED_PACK;
  c->cpu_weight = 1.0;
  c->mem_weight = 1.0;
  c->soft_affinity_weight = 8.0;
  c->soft_anti_affinity_weight = 8.0;
  c->zone_weight = 4.0;
  c->region_weight = 2.0;
  c->latency_weight = 1.0;
  c->latency_ref_us = 100000;
}

static bool weight_ok(double w) { return isfinite(w) && w >= 0 && w <= 1e6; }

const char *nc_sched_mode_name(enum nc_sched_mode m) {
  return m == NC_SCHED_SPREAD ? "spread" : m == NC_SCHED_PACK ? "pack" : "?";
}

int nc_sched_new(const struct nc_sched_config *cfg, struct nc_sched **out) {
  if (!out)
    return -EINVAL;
  *out = NULL;
  struct nc_sched_config c;
  if (cfg)
    c = *cfg;
  else
    nc_sched_config_default(&c);
  if (!isfinite(c.cpu_ratio) || c.cpu_ratio <= 0 || c.cpu_ratio > NC_SCHED_RATIO_MAX ||
      !isfinite(c.mem_ratio) || c.mem_ratio <= 0 || c.mem_ratio > NC_SCHED_RATIO_MAX)
    return -EINVAL;
  if ((c.mode != NC_SCHED_PACK && c.mode != NC_SCHED_SPREAD) || !weight_ok(c.cpu_weight) ||
      !weight_ok(c.mem_weight) || !weight_ok(c.soft_affinity_weight) ||
      !weight_ok(c.soft_anti_affinity_weight) || !weight_ok(c.zone_weight) ||
      !weight_ok(c.region_weight) || !weight_ok(c.latency_weight) || c.latency_ref_us == 0)
    return -EINVAL;
  struct nc_sched *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->cfg = c;
  *out = s;
  return 0;
}

void nc_sched_free(struct nc_sched *s) {
  if (!s)
    return;
  for (size_t i = 0; i < s->ngroups; i++)
    free(s->group[i].members);
  free(s->group);
  stab_free(&s->group_tab);
  free(s->vm);
  free(s->vm_free);
  stab_free(&s->vm_tab);
  free(s->hot);
  free(s->host);
  stab_free(&s->host_tab);
  strs_free(&s->str);
  strs_free(&s->dom);
  free(s->cnt_host);
  free(s->cnt_dom);
  free(s);
}

size_t nc_sched_host_count(const struct nc_sched *s) { return s ? s->nhosts : 0; }
size_t nc_sched_vm_count(const struct nc_sched *s) { return s ? s->nvms : 0; }

/* ---- hosts ----------------------------------------------------------------- */

/* The per-decision group count arrays must cover every host and domain;
 * they are all-zero between decisions, so growing is free + calloc. */
static int ensure_counts(struct nc_sched *s) {
  if (s->cnt_hosts_cap < s->hosts_cap) {
    uint32_t *n = calloc(NC_SCHED_REQ_GROUPS_MAX * s->hosts_cap, sizeof *n);
    if (!n)
      return -ENOMEM;
    free(s->cnt_host);
    s->cnt_host = n;
    s->cnt_hosts_cap = s->hosts_cap;
  }
  if (s->cnt_doms_cap < s->dom.n) {
    size_t cap = s->cnt_doms_cap ? s->cnt_doms_cap : 64;
    while (cap < s->dom.n)
      cap *= 2;
    uint32_t *n = calloc(NC_SCHED_REQ_GROUPS_MAX * cap, sizeof *n);
    if (!n)
      return -ENOMEM;
    free(s->cnt_dom);
    s->cnt_dom = n;
    s->cnt_doms_cap = cap;
  }
  return 0;
}

static int check_host(const struct nc_sched_host *h) {
  int rc;
  if (!h)
    return -EINVAL;
  if ((rc = check_name(h->name)) != 0 || (rc = check_opt_name(h->arch)) != 0 ||
      (rc = check_opt_name(h->zone)) != 0 || (rc = check_opt_name(h->rack)) != 0 ||
      (rc = check_opt_name(h->region)) != 0)
    return rc;
  if ((unsigned)h->state > NC_SCHED_HOST_NOT_READY)
    return -EINVAL;
  if (h->cpus == 0 || h->mem_bytes == 0)
    return -EINVAL;
  if (h->cpus > NC_SCHED_VCPUS_MAX || h->mem_bytes > NC_SCHED_MEM_MAX ||
      h->vcpus_reserved > NC_SCHED_VCPUS_MAX || h->mem_reserved_bytes > NC_SCHED_MEM_MAX)
    return NC_E_TOOBIG;
  if (h->nlabels > NC_SCHED_HOST_LABELS_MAX || h->nlatencies > NC_SCHED_HOST_SITES_MAX)
    return NC_E_TOOBIG;
  if ((h->nlabels && !h->labels) || (h->nlatencies && !h->latencies))
    return -EINVAL;
  for (size_t i = 0; i < h->nlabels; i++) {
    if ((rc = check_name(h->labels[i].key)) != 0 || (rc = check_opt_name(h->labels[i].value)))
      return rc;
    for (size_t j = 0; j < i; j++)
      if (strcmp(h->labels[i].key, h->labels[j].key) == 0)
        return -EINVAL;
  }
  for (size_t i = 0; i < h->nlatencies; i++) {
    if ((rc = check_name(h->latencies[i].site)) != 0)
      return rc;
    for (size_t j = 0; j < i; j++)
      if (strcmp(h->latencies[i].site, h->latencies[j].site) == 0)
        return -EINVAL;
  }
  return 0;
}

int nc_sched_host_add(struct nc_sched *s, const struct nc_sched_host *h) {
  if (!s)
    return -EINVAL;
  int rc = check_host(h);
  if (rc)
    return rc;
  uint32_t idx;
  if (find_host(s, h->name, &idx))
    return -EEXIST;
  if (s->nhosts >= NC_SCHED_HOSTS_MAX)
    return NC_E_TOOBIG;
  if (s->nhosts == s->hosts_cap) {
    size_t ncap = s->hosts_cap ? s->hosts_cap * 2 : 16;
    struct nc__host_hot *nh = realloc(s->hot, ncap * sizeof *nh);
    if (!nh)
      return -ENOMEM;
    s->hot = nh;
    struct nc__host *nc = realloc(s->host, ncap * sizeof *nc);
    if (!nc)
      return -ENOMEM;
    s->host = nc;
    s->hosts_cap = ncap;
  }
  if ((rc = stab_reserve(&s->host_tab)) != 0)
    return rc;

  struct nc__host cold;
  memset(&cold, 0, sizeof cold);
  struct nc__host_hot hot;
  memset(&hot, 0, sizeof hot);
  snprintf(cold.name, sizeof cold.name, "%s", h->name);
  snprintf(cold.zone_name, sizeof cold.zone_name, "%s", present(h->zone) ? h->zone : "");
  snprintf(cold.rack_name, sizeof cold.rack_name, "%s", present(h->rack) ? h->rack : "");
  if ((rc = strs_intern(&s->str, h->arch, &hot.arch)) != 0 ||
      (rc = strs_intern(&s->str, h->region, &cold.region)) != 0 ||
      (rc = strs_intern(&s->str, h->zone, &cold.zone_s)) != 0 ||
      (rc = strs_intern(&s->dom, h->zone, &cold.zone)) != 0)
    return rc;
  cold.rack = ID_NONE;
  if (present(h->rack)) {
    char key[2 * NC_SCHED_NAME_MAX + 2];
    snprintf(key, sizeof key, "%s\x1f%s", present(h->zone) ? h->zone : "", h->rack);
    if ((rc = strs_intern(&s->dom, key, &cold.rack)) != 0)
      return rc;
  }
  cold.nlabels = (uint32_t)h->nlabels;
  for (size_t i = 0; i < h->nlabels; i++)
    if ((rc = strs_intern(&s->str, h->labels[i].key, &cold.lkey[i])) != 0 ||
        (rc = strs_intern(&s->str, h->labels[i].value, &cold.lval[i])) != 0)
      return rc;
  cold.nsites = (uint32_t)h->nlatencies;
  for (size_t i = 0; i < h->nlatencies; i++) {
    if ((rc = strs_intern(&s->str, h->latencies[i].site, &cold.site[i])) != 0)
      return rc;
    cold.rtt_us[i] = h->latencies[i].rtt_us;
  }
  cold.cpus = h->cpus;
  cold.mem_bytes = h->mem_bytes;

  double cap_c = floor((double)h->cpus * 1000.0 * s->cfg.cpu_ratio);
  double cap_m = floor((double)h->mem_bytes * s->cfg.mem_ratio);
  hot.cpu_cap_m = cap_c < 1 ? 1 : (int64_t)cap_c;
  hot.mem_cap = cap_m < 1 ? 1 : (int64_t)cap_m;
  hot.cpu_used_m = (int64_t)h->vcpus_reserved * 1000;
  hot.mem_used = (int64_t)h->mem_reserved_bytes;
  hot.inv_cpu = 1.0 / (double)hot.cpu_cap_m;
  hot.inv_mem = 1.0 / (double)hot.mem_cap;
  hot.state = (uint8_t)h->state;
  hot.avoid = 0;

  /* The count arrays must cover the new host and its domains before the
   * host becomes visible. */
  if ((rc = ensure_counts(s)) != 0)
    return rc;

  idx = (uint32_t)s->nhosts++;
  s->hot[idx] = hot;
  s->host[idx] = cold;
  stab_insert(&s->host_tab, hash_str(h->name), idx);
  s->total_cpu_cap_m += hot.cpu_cap_m;
  s->total_mem_cap += hot.mem_cap;
  s->ranks_dirty = true;
  return 0;
}

int nc_sched_host_set_state(struct nc_sched *s, const char *host,
                            enum nc_sched_host_state state) {
  if (!s || check_name(host) != 0 || (unsigned)state > NC_SCHED_HOST_NOT_READY)
    return -EINVAL;
  uint32_t h;
  if (!find_host(s, host, &h))
    return -ENOENT;
  s->hot[h].state = (uint8_t)state;
  return 0;
}

struct rank_item {
  const char *name;
  uint32_t idx;
};

static int cmp_rank_item(const void *a, const void *b) {
  return strcmp(((const struct rank_item *)a)->name, ((const struct rank_item *)b)->name);
}

/* Host ranks in bytewise name order: the tie-break. */
static int update_ranks(struct nc_sched *s) {
  if (!s->ranks_dirty)
    return 0;
  struct rank_item *it = malloc((s->nhosts ? s->nhosts : 1) * sizeof *it);
  if (!it)
    return -ENOMEM;
  for (size_t i = 0; i < s->nhosts; i++)
    it[i] = (struct rank_item){s->host[i].name, (uint32_t)i};
  qsort(it, s->nhosts, sizeof *it, cmp_rank_item);
  for (size_t i = 0; i < s->nhosts; i++)
    s->hot[it[i].idx].rank = (uint32_t)i;
  free(it);
  s->ranks_dirty = false;
  return 0;
}

/* ---- groups ---------------------------------------------------------------- */

int nc_sched_group_add(struct nc_sched *s, const struct nc_sched_group *g) {
  if (!s || !g)
    return -EINVAL;
  int rc = check_name(g->name);
  if (rc)
    return rc;
  if ((g->policy != NC_SCHED_AFFINITY && g->policy != NC_SCHED_ANTI_AFFINITY) ||
      (unsigned)g->scope > NC_SCHED_SCOPE_ZONE)
    return -EINVAL;
  uint32_t idx;
  if (find_group(s, g->name, &idx))
    return -EEXIST;
  if (s->ngroups >= NC_SCHED_GROUPS_MAX)
    return NC_E_TOOBIG;
  if (s->ngroups == s->groups_cap) {
    size_t ncap = s->groups_cap ? s->groups_cap * 2 : 16;
    struct nc__group *n = realloc(s->group, ncap * sizeof *n);
    if (!n)
      return -ENOMEM;
    s->group = n;
    s->groups_cap = ncap;
  }
  if ((rc = stab_reserve(&s->group_tab)) != 0)
    return rc;
  struct nc__group *gr = &s->group[s->ngroups];
  memset(gr, 0, sizeof *gr);
  snprintf(gr->name, sizeof gr->name, "%s", g->name);
  gr->policy = g->policy;
  gr->scope = g->scope;
  gr->hard = g->hard;
  stab_insert(&s->group_tab, hash_str(g->name), (uint32_t)s->ngroups);
  s->ngroups++;
  return 0;
}

static int group_reserve(struct nc__group *g) {
  if (g->nmembers < g->cap)
    return 0;
  if (g->cap >= NC_SCHED_VMS_MAX)
    return NC_E_TOOBIG;
  uint32_t ncap = g->cap ? g->cap * 2 : 8;
  uint32_t *n = realloc(g->members, ncap * sizeof *n);
  if (!n)
    return -ENOMEM;
  g->members = n;
  g->cap = ncap;
  return 0;
}

static void group_drop(struct nc__group *g, uint32_t v) {
  for (uint32_t i = 0; i < g->nmembers; i++) {
    if (g->members[i] == v) {
      g->members[i] = g->members[--g->nmembers];
      return;
    }
  }
}

/* ---- requests -------------------------------------------------------------- */

/* Checks req and turns it into ids. create: intern strings (for a VM that
 * is stored); otherwise unknown strings become ID_MISSING. */
static int compile(struct nc_sched *s, const struct nc_sched_request *r, bool create,
                   struct nc__cons *c) {
  int rc;
  if (!r)
    return -EINVAL;
  if ((rc = check_name(r->name)) != 0 || (rc = check_opt_name(r->arch)) != 0 ||
      (rc = check_opt_name(r->prefer_zone)) != 0 ||
      (rc = check_opt_name(r->prefer_region)) != 0 ||
      (rc = check_opt_name(r->latency_site)) != 0)
    return rc;
  if (r->vcpus == 0 || r->mem_bytes == 0)
    return -EINVAL;
  if (r->vcpus > NC_SCHED_VCPUS_MAX || r->mem_bytes > NC_SCHED_MEM_MAX)
    return NC_E_TOOBIG;
  if (r->nlabels > NC_SCHED_REQ_LABELS_MAX || r->ngroups > NC_SCHED_REQ_GROUPS_MAX ||
      r->navoid > NC_SCHED_AVOID_MAX)
    return NC_E_TOOBIG;
  if ((r->nlabels && !r->labels) || (r->ngroups && !r->groups) ||
      (r->navoid && !r->avoid_hosts))
    return -EINVAL;
  if (r->max_latency_us && !present(r->latency_site))
    return -EINVAL;
  for (size_t i = 0; i < r->nlabels; i++) {
    if ((rc = check_name(r->labels[i].key)) != 0 || (rc = check_opt_name(r->labels[i].value)))
      return rc;
    for (size_t j = 0; j < i; j++)
      if (strcmp(r->labels[i].key, r->labels[j].key) == 0)
        return -EINVAL;
  }
  for (size_t i = 0; i < r->navoid; i++)
    if ((rc = check_name(r->avoid_hosts[i])) != 0)
      return rc;
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < r->ngroups; i++) {
    if ((rc = check_name(r->groups[i])) != 0)
      return rc;
    for (size_t j = 0; j < i; j++)
      if (strcmp(r->groups[i], r->groups[j]) == 0)
        return -EINVAL;
    if (!find_group(s, r->groups[i], &c->group[i]))
      return -ENOENT;
  }
  c->ngroups = (uint32_t)r->ngroups;
  c->cpu_m = (int64_t)r->vcpus * 1000;
  c->mem = (int64_t)r->mem_bytes;
  c->ha = r->ha;
  c->max_lat_us = r->max_latency_us;
  c->nlabels = (uint32_t)r->nlabels;
  if (!create) {
    c->arch = strs_find(&s->str, r->arch);
    c->zone = strs_find(&s->str, r->prefer_zone);
    c->region = strs_find(&s->str, r->prefer_region);
    c->site = strs_find(&s->str, r->latency_site);
    for (size_t i = 0; i < r->nlabels; i++) {
      c->lkey[i] = strs_find(&s->str, r->labels[i].key);
      c->lval[i] = strs_find(&s->str, r->labels[i].value);
    }
    return 0;
  }
  if ((rc = strs_intern(&s->str, r->arch, &c->arch)) != 0 ||
      (rc = strs_intern(&s->str, r->prefer_zone, &c->zone)) != 0 ||
      (rc = strs_intern(&s->str, r->prefer_region, &c->region)) != 0 ||
      (rc = strs_intern(&s->str, r->latency_site, &c->site)) != 0)
    return rc;
  for (size_t i = 0; i < r->nlabels; i++)
    if ((rc = strs_intern(&s->str, r->labels[i].key, &c->lkey[i])) != 0 ||
        (rc = strs_intern(&s->str, r->labels[i].value, &c->lval[i])) != 0)
      return rc;
  return 0;
}

/* ---- VMs ------------------------------------------------------------------- */

static void detach(struct nc_sched *s, struct nc__vm *v) {
  if (v->host == ID_NONE)
    return;
  s->hot[v->host].cpu_used_m -= v->c.cpu_m;
  s->hot[v->host].mem_used -= v->c.mem;
  v->host = ID_NONE;
}

static void attach(struct nc_sched *s, struct nc__vm *v, uint32_t h) {
  s->hot[h].cpu_used_m += v->c.cpu_m;
  s->hot[h].mem_used += v->c.mem;
  v->host = h;
}

static bool would_overflow(const struct nc_sched *s, uint32_t h, const struct nc__cons *c) {
  return s->hot[h].mem_used > USED_MAX - c->mem || s->hot[h].cpu_used_m > USED_MAX - c->cpu_m;
}

/* Stores a new VM record on host h with constraints c (ids interned).
 * Either everything is done or nothing is. */
static int vm_insert(struct nc_sched *s, const char *name, const struct nc__cons *c, uint32_t h) {
  int rc;
  if (s->nvms >= NC_SCHED_VMS_MAX)
    return NC_E_TOOBIG;
  if (would_overflow(s, h, c))
    return NC_E_TOOBIG;
  for (uint32_t i = 0; i < c->ngroups; i++)
    if ((rc = group_reserve(&s->group[c->group[i]])) != 0)
      return rc;
  if ((rc = stab_reserve(&s->vm_tab)) != 0)
    return rc;
  uint32_t idx;
  if (s->nvm_free == 0 && s->nvm_slots == s->vms_cap) {
    size_t ncap = s->vms_cap ? s->vms_cap * 2 : 64;
    struct nc__vm *n = realloc(s->vm, ncap * sizeof *n);
    if (!n)
      return -ENOMEM;
    s->vm = n;
    uint32_t *f = realloc(s->vm_free, ncap * sizeof *f);
    if (!f)
      return -ENOMEM;
    s->vm_free = f;
    s->vms_cap = ncap;
  }
  if (s->nvm_free)
    idx = s->vm_free[--s->nvm_free];
  else
    idx = (uint32_t)s->nvm_slots++;
  struct nc__vm *v = &s->vm[idx];
  memset(v, 0, sizeof *v);
  snprintf(v->name, sizeof v->name, "%s", name);
  v->c = *c;
  v->live = true;
  v->host = ID_NONE;
  attach(s, v, h);
  for (uint32_t i = 0; i < c->ngroups; i++) {
    struct nc__group *g = &s->group[c->group[i]];
    g->members[g->nmembers++] = idx;
  }
  stab_insert(&s->vm_tab, hash_str(name), idx);
  s->nvms++;
  return 0;
}

int nc_sched_vm_add(struct nc_sched *s, const struct nc_sched_request *vm, const char *host) {
  if (!s || !vm)
    return -EINVAL;
  int rc = check_name(host);
  if (rc)
    return rc;
  struct nc__cons c;
  if ((rc = compile(s, vm, false, &c)) != 0)
    return rc;
  uint32_t h, v;
  if (!find_host(s, host, &h))
    return -ENOENT;
  if (find_vm(s, vm->name, &v))
    return -EEXIST;
  if ((rc = compile(s, vm, true, &c)) != 0)
    return rc;
  return vm_insert(s, vm->name, &c, h);
}

int nc_sched_vm_remove(struct nc_sched *s, const char *name) {
  if (!s || check_name(name) != 0)
    return -EINVAL;
  uint32_t idx;
  if (!find_vm(s, name, &idx))
    return -ENOENT;
  struct nc__vm *v = &s->vm[idx];
  detach(s, v);
  for (uint32_t i = 0; i < v->c.ngroups; i++)
    group_drop(&s->group[v->c.group[i]], idx);
  stab_remove(&s->vm_tab, hash_str(name), idx);
  v->live = false;
  s->vm_free[s->nvm_free++] = idx;
  s->nvms--;
  return 0;
}

int nc_sched_vm_host(const struct nc_sched *s, const char *name, const char **host) {
  if (!s || !host || check_name(name) != 0)
    return -EINVAL;
  uint32_t idx;
  if (!find_vm(s, name, &idx))
    return -ENOENT;
  *host = s->vm[idx].host == ID_NONE ? "" : s->host[s->vm[idx].host].name;
  return 0;
}

/* ---- one decision ---------------------------------------------------------- */

static bool labels_ok(const struct nc__host *h, const struct nc__cons *c) {
  for (uint32_t i = 0; i < c->nlabels; i++) {
    uint32_t j = 0;
    while (j < h->nlabels && h->lkey[j] != c->lkey[i])
      j++;
    if (j == h->nlabels)
      return false;
    if (c->lval[i] != ID_NONE && h->lval[j] != c->lval[i])
      return false;
  }
  return true;
}

/* The host's rtt to site, or UINT32_MAX when it has no measurement (a
 * measured UINT32_MAX is as good as none). */
static uint32_t host_rtt(const struct nc__host *h, uint32_t site) {
  for (uint32_t i = 0; i < h->nsites; i++)
    if (h->site[i] == site)
      return h->rtt_us[i];
  return UINT32_MAX;
}

uint32_t nc__group_count(const struct nc_sched *s, uint32_t gi, uint32_t gid, uint32_t h,
                         bool *has_dom) {
  uint32_t d;
  switch (s->group[gid].scope) {
  case NC_SCHED_SCOPE_HOST:
    *has_dom = true;
    return s->cnt_host[gi * s->cnt_hosts_cap + h];
  case NC_SCHED_SCOPE_RACK:
    d = s->host[h].rack;
    break;
  default:
    d = s->host[h].zone;
    break;
  }
  *has_dom = d != ID_NONE;
  return d == ID_NONE ? 0 : s->cnt_dom[gi * s->cnt_doms_cap + d];
}

bool nc__weight_applies(const struct nc_sched *s, const struct nc__ctx *x, int weight) {
  const struct nc__cons *c = x->c;
  switch (weight) {
  case NC__W_CPU:
  case NC__W_MEMORY:
    return true;
  case NC__W_SOFT_AFFINITY:
  case NC__W_SOFT_ANTI_AFFINITY:
    for (uint32_t i = 0; i < c->ngroups; i++) {
      const struct nc__group *g = &s->group[c->group[i]];
      if (!g->hard && (g->policy == NC_SCHED_AFFINITY) == (weight == NC__W_SOFT_AFFINITY))
        return true;
    }
    return false;
  case NC__W_ZONE:
    return c->zone != ID_NONE;
  case NC__W_REGION:
    return c->region != ID_NONE;
  case NC__W_LATENCY:
    return c->site != ID_NONE;
  default:
    return false;
  }
}

int nc__eval(const struct nc_sched *s, const struct nc__ctx *x, uint32_t h, double *score,
             double *w, uint32_t *which) {
  const struct nc__host_hot *o = &s->hot[h];
  const struct nc__cons *c = x->c;
  if (o->state != NC_SCHED_HOST_READY)
    return NC__F_STATE;
  if (x->navoid && o->avoid == x->stamp)
    return NC__F_AVOID;
  if (c->arch != ID_NONE && o->arch != c->arch)
    return NC__F_ARCH;
  if (c->nlabels && !labels_ok(&s->host[h], c))
    return NC__F_LABELS;
  int64_t cu = o->cpu_used_m + c->cpu_m;
  if (cu > o->cpu_cap_m)
    return NC__F_CPU;
  int64_t mu = o->mem_used + c->mem;
  if (mu > o->mem_cap)
    return NC__F_MEMORY;
  uint32_t rtt = UINT32_MAX;
  if (c->site != ID_NONE) {
    rtt = host_rtt(&s->host[h], c->site);
    if (c->max_lat_us && (rtt == UINT32_MAX || rtt > c->max_lat_us))
      return NC__F_LATENCY;
  }
  double fc = (double)cu * o->inv_cpu, fm = (double)mu * o->inv_mem;
  if (s->cfg.mode == NC_SCHED_SPREAD) {
    fc = 1.0 - fc;
    fm = 1.0 - fm;
  }
  double wc = s->cfg.cpu_weight * fc, wm = s->cfg.mem_weight * fm;
  double total = wc + wm;
  if (w) {
    memset(w, 0, NC__W_COUNT * sizeof *w);
    w[NC__W_CPU] = wc;
    w[NC__W_MEMORY] = wm;
  }
  if (x->any_group) {
    double aff = 0, anti = 0;
    for (uint32_t gi = 0; gi < c->ngroups; gi++) {
      const struct nc__group *g = &s->group[c->group[gi]];
      bool has_dom;
      uint32_t n = nc__group_count(s, gi, c->group[gi], h, &has_dom);
      bool hard_fail;
      if (g->policy == NC_SCHED_AFFINITY) {
        hard_fail = !has_dom || (x->gtotal[gi] > 0 && n == 0);
        if (!g->hard && n > 0)
          aff += s->cfg.soft_affinity_weight;
      } else {
        hard_fail = !has_dom || n > 0;
        if (!g->hard)
          anti -= s->cfg.soft_anti_affinity_weight * n;
      }
      if (g->hard && hard_fail) {
        if (which)
          *which = gi;
        return g->policy == NC_SCHED_AFFINITY ? NC__F_AFFINITY : NC__F_ANTI_AFFINITY;
      }
    }
    total += aff + anti;
    if (w) {
      w[NC__W_SOFT_AFFINITY] = aff;
      w[NC__W_SOFT_ANTI_AFFINITY] = anti;
    }
  }
  if (c->zone != ID_NONE && s->host[h].zone_s == c->zone) {
    total += s->cfg.zone_weight;
    if (w)
      w[NC__W_ZONE] = s->cfg.zone_weight;
  }
  if (c->region != ID_NONE && s->host[h].region == c->region) {
    total += s->cfg.region_weight;
    if (w)
      w[NC__W_REGION] = s->cfg.region_weight;
  }
  if (c->site != ID_NONE && rtt != UINT32_MAX) {
    double ref = c->max_lat_us ? c->max_lat_us : s->cfg.latency_ref_us;
    double r = rtt < ref ? rtt : ref;
    double l = s->cfg.latency_weight * (1.0 - r / ref);
    total += l;
    if (w)
      w[NC__W_LATENCY] = l;
  }
  *score = total;
  return NC__F_OK;
}

/* Sets up x for constraints c with avoided host indices. Group counts are
 * filled here and must be cleared with ctx_end. */
static void ctx_begin(struct nc_sched *s, struct nc__ctx *x, const struct nc__cons *c) {
  x->c = c;
  if (++s->stamp == 0) { /* wrapped: forget every old mark */
    for (size_t h = 0; h < s->nhosts; h++)
      s->hot[h].avoid = 0;
    s->stamp = 1;
  }
  x->stamp = s->stamp;
  for (size_t i = 0; i < x->navoid; i++)
    s->hot[x->avoid[i]].avoid = x->stamp;
  x->any_group = c->ngroups > 0;
  for (uint32_t gi = 0; gi < c->ngroups; gi++) {
    const struct nc__group *g = &s->group[c->group[gi]];
    uint32_t total = 0;
    uint32_t *ch = s->cnt_host + gi * s->cnt_hosts_cap;
    uint32_t *cd = s->cnt_dom + gi * s->cnt_doms_cap;
    for (uint32_t m = 0; m < g->nmembers; m++) {
      uint32_t h = s->vm[g->members[m]].host;
      if (h == ID_NONE || s->hot[h].state == NC_SCHED_HOST_NOT_READY ||
          (x->navoid && s->hot[h].avoid == x->stamp))
        continue;
      ch[h]++;
      if (s->host[h].rack != ID_NONE)
        cd[s->host[h].rack]++;
      if (s->host[h].zone != ID_NONE)
        cd[s->host[h].zone]++;
      total++;
    }
    x->gtotal[gi] = total;
  }
}

static void ctx_end(struct nc_sched *s, struct nc__ctx *x) {
  const struct nc__cons *c = x->c;
  for (uint32_t gi = 0; gi < c->ngroups; gi++) {
    const struct nc__group *g = &s->group[c->group[gi]];
    uint32_t *ch = s->cnt_host + gi * s->cnt_hosts_cap;
    uint32_t *cd = s->cnt_dom + gi * s->cnt_doms_cap;
    for (uint32_t m = 0; m < g->nmembers; m++) {
      uint32_t h = s->vm[g->members[m]].host;
      if (h == ID_NONE)
        continue;
      ch[h] = 0;
      if (s->host[h].rack != ID_NONE)
        cd[s->host[h].rack] = 0;
      if (s->host[h].zone != ID_NONE)
        cd[s->host[h].zone] = 0;
    }
  }
}

/* The best host for x, or ID_NONE. */
static uint32_t decide(const struct nc_sched *s, const struct nc__ctx *x, double *best_score,
                       uint32_t *nfit) {
  uint32_t best = ID_NONE, best_rank = UINT32_MAX, fit = 0;
  double bs = 0;
  size_t n = s->nhosts;
  for (uint32_t h = 0; h < n; h++) {
    double sc;
    if (nc__eval(s, x, h, &sc, NULL, NULL) != NC__F_OK)
      continue;
    fit++;
    uint32_t rank = s->hot[h].rank;
    if (best == ID_NONE || sc > bs || (sc == bs && rank < best_rank)) {
      best = h;
      bs = sc;
      best_rank = rank;
    }
  }
  *best_score = bs;
  *nfit = fit;
  return best;
}

int nc_sched_place(struct nc_sched *s, const struct nc_sched_request *req, unsigned flags,
                   struct nc_sched_choice *out, json_t **explain) {
  if (explain)
    *explain = NULL;
  if (out)
    memset(out, 0, sizeof *out);
  if (!s || (flags & ~(NC_SCHED_DRY_RUN | NC_SCHED_MOVE)))
    return -EINVAL;
  struct nc__cons c;
  int rc = compile(s, req, false, &c);
  if (rc)
    return rc;
  uint32_t vi = ID_NONE;
  bool exists = find_vm(s, req->name, &vi);
  if (exists && !(flags & NC_SCHED_MOVE))
    return -EEXIST;
  if (!exists && (flags & NC_SCHED_MOVE))
    return -ENOENT;
  if ((rc = update_ranks(s)) != 0 || (rc = ensure_counts(s)) != 0)
    return rc;

  struct nc__ctx x;
  memset(&x, 0, sizeof x);
  x.req = req;
  for (size_t i = 0; i < req->navoid; i++) {
    uint32_t h;
    if (find_host(s, req->avoid_hosts[i], &h))
      x.avoid[x.navoid++] = h;
  }
  uint32_t orig = ID_NONE;
  if (exists) {
    orig = s->vm[vi].host;
    detach(s, &s->vm[vi]);
  }
  ctx_begin(s, &x, &c);
  double score;
  uint32_t nfit;
  uint32_t best = decide(s, &x, &score, &nfit);
  json_t *ex = NULL;
  if (explain) {
    ex = nc__explain(s, &x, req->name, best);
    if (!ex)
      rc = -ENOMEM;
  }
  ctx_end(s, &x);

  if (rc == 0 && best == ID_NONE)
    rc = -ENOSPC;
  if (rc == 0 && !(flags & NC_SCHED_DRY_RUN)) {
    struct nc__cons stored;
    rc = compile(s, req, true, &stored);
    if (rc == 0 && exists) {
      struct nc__vm *v = &s->vm[vi];
      if (would_overflow(s, best, &stored))
        rc = NC_E_TOOBIG;
      for (uint32_t i = 0; rc == 0 && i < stored.ngroups; i++)
        rc = group_reserve(&s->group[stored.group[i]]);
      if (rc == 0) {
        for (uint32_t i = 0; i < v->c.ngroups; i++)
          group_drop(&s->group[v->c.group[i]], vi);
        for (uint32_t i = 0; i < stored.ngroups; i++) {
          struct nc__group *g = &s->group[stored.group[i]];
          g->members[g->nmembers++] = vi;
        }
        v->c = stored;
        attach(s, v, best);
      }
    } else if (rc == 0) {
      rc = vm_insert(s, req->name, &stored, best);
    }
  }
  if (exists && s->vm[vi].host == ID_NONE)
    attach(s, &s->vm[vi], orig); /* dry run, no host, or failed commit */
  if (rc != 0 && rc != -ENOSPC) {
    json_decref(ex);
    return rc;
  }
  if (out) {
    if (best != ID_NONE) {
      snprintf(out->host, sizeof out->host, "%s", s->host[best].name);
      out->score = score;
    }
    out->hosts_fit = nfit;
  }
  if (explain)
    *explain = ex;
  return rc;
}

/* ---- batches --------------------------------------------------------------- */

/* The batch order. VMs of at least 1/8 of an average host (on either
 * resource) go first, largest first: they are the ones that may not fit
 * late. The rest keep the caller's order: sorting small VMs by size too
 * lines up the CPU-heavy ones at the end, where they fill CPUs and strand
 * memory (bench/sched measured 1.7-2.4% more hosts that way, 0.2-0.5% with
 * this rule, against the lower bound). */
static double size_key(const struct nc_sched *s, uint64_t vcpus, uint64_t mem) {
  double cs = s->total_cpu_cap_m ? (double)vcpus * 1000.0 / (double)s->total_cpu_cap_m : 0;
  double ms = s->total_mem_cap ? (double)mem / (double)s->total_mem_cap : 0;
  double k = cs > ms ? cs : ms;
  return k * (double)s->nhosts >= 0.125 ? k : 0;
}

struct order_item {
  double key;
  const char *name;
  uint32_t pos; /* ties: the caller's order */
  uint32_t idx;
};

static int cmp_name(const void *a, const void *b) {
  return strcmp(((const struct order_item *)a)->name, ((const struct order_item *)b)->name);
}

static int cmp_order(const void *a, const void *b) {
  const struct order_item *x = a, *y = b;
  if (x->key != y->key)
    return x->key > y->key ? -1 : 1;
  return x->pos < y->pos ? -1 : x->pos > y->pos;
}

int nc_sched_place_batch(struct nc_sched *s, const struct nc_sched_request *reqs, size_t n,
                         unsigned flags, struct nc_sched_choice *outs, int *rcs) {
  if (!s || (n && (!reqs || !rcs)))
    return -EINVAL;
  if (n > NC_SCHED_BATCH_MAX)
    return NC_E_TOOBIG;
  if (n == 0)
    return 0;
  struct order_item *it = malloc(n * sizeof *it);
  if (!it)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    it[i].key = size_key(s, reqs[i].vcpus, reqs[i].mem_bytes);
    it[i].name = "";
    it[i].pos = (uint32_t)i;
    it[i].idx = (uint32_t)i;
  }
  qsort(it, n, sizeof *it, cmp_order);
  int placed = 0;
  for (size_t k = 0; k < n; k++) {
    uint32_t i = it[k].idx;
    rcs[i] = nc_sched_place(s, &reqs[i], flags, outs ? &outs[i] : NULL, NULL);
    if (rcs[i] == 0)
      placed++;
  }
  free(it);
  return placed;
}

/* ---- N+1 ------------------------------------------------------------------- */

static int cmp_stranded(const void *a, const void *b) {
  const struct nc_sched_stranded *x = a, *y = b;
  int c = strcmp(x->failed_host, y->failed_host);
  return c ? c : strcmp(x->vm, y->vm);
}

static int push_stranded(struct nc_sched_n1 *r, size_t *cap, const char *host, const char *vm) {
  if (r->count == *cap) {
    size_t ncap = *cap ? *cap * 2 : 16;
    struct nc_sched_stranded *n = realloc(r->items, ncap * sizeof *n);
    if (!n)
      return -ENOMEM;
    r->items = n;
    *cap = ncap;
  }
  snprintf(r->items[r->count].failed_host, sizeof r->items[0].failed_host, "%s", host);
  snprintf(r->items[r->count].vm, sizeof r->items[0].vm, "%s", vm);
  r->count++;
  return 0;
}

int nc_sched_n1_check(struct nc_sched *s, struct nc_sched_n1 *out) {
  if (!out)
    return -EINVAL;
  memset(out, 0, sizeof *out);
  if (!s)
    return -EINVAL;
  int rc;
  if ((rc = update_ranks(s)) != 0 || (rc = ensure_counts(s)) != 0)
    return rc;
  size_t nh = s->nhosts, cap = 0;
  /* HA VMs bucketed by host (counting sort), hosts in name order. */
  uint32_t *start = calloc(nh + 1, sizeof *start);
  uint32_t *by_rank = malloc((nh ? nh : 1) * sizeof *by_rank);
  uint32_t *vms = malloc((s->nvms ? s->nvms : 1) * sizeof *vms);
  struct order_item *it = malloc((s->nvms ? s->nvms : 1) * sizeof *it);
  uint32_t *moved = malloc((s->nvms ? s->nvms : 1) * sizeof *moved);
  if (!start || !by_rank || !vms || !it || !moved) {
    rc = -ENOMEM;
    goto out;
  }
  for (size_t v = 0; v < s->nvm_slots; v++)
    if (s->vm[v].live && s->vm[v].c.ha && s->vm[v].host != ID_NONE)
      start[s->vm[v].host + 1]++;
  for (size_t h = 0; h < nh; h++)
    start[h + 1] += start[h];
  {
    uint32_t *fill = by_rank; /* borrowed as a cursor array first */
    for (size_t h = 0; h < nh; h++)
      fill[h] = start[h];
    for (size_t v = 0; v < s->nvm_slots; v++)
      if (s->vm[v].live && s->vm[v].c.ha && s->vm[v].host != ID_NONE)
        vms[fill[s->vm[v].host]++] = (uint32_t)v;
  }
  for (size_t h = 0; h < nh; h++)
    by_rank[s->hot[h].rank] = (uint32_t)h;

  for (size_t r = 0; r < nh && rc == 0; r++) {
    uint32_t dead = by_rank[r];
    uint32_t n = start[dead + 1] - start[dead];
    if (n == 0)
      continue;
    out->hosts_checked++;
    for (uint32_t k = 0; k < n; k++) {
      const struct nc__vm *v = &s->vm[vms[start[dead] + k]];
      it[k] = (struct order_item){size_key(s, (uint64_t)v->c.cpu_m / 1000, (uint64_t)v->c.mem),
                                  v->name, 0, vms[start[dead] + k]};
    }
    /* The batch order for the VMs listed by name. */
    qsort(it, n, sizeof *it, cmp_name);
    for (uint32_t k = 0; k < n; k++)
      it[k].pos = k;
    qsort(it, n, sizeof *it, cmp_order);
    uint8_t old_state = s->hot[dead].state;
    s->hot[dead].state = NC_SCHED_HOST_NOT_READY;
    uint32_t nmoved = 0;
    for (uint32_t k = 0; k < n && rc == 0; k++) {
      struct nc__vm *v = &s->vm[it[k].idx];
      struct nc__ctx x;
      memset(&x, 0, sizeof x);
      x.avoid[0] = dead;
      x.navoid = 1;
      detach(s, v);
      ctx_begin(s, &x, &v->c);
      double score;
      uint32_t nfit;
      uint32_t best = decide(s, &x, &score, &nfit);
      ctx_end(s, &x);
      if (best != ID_NONE) {
        attach(s, v, best);
        moved[nmoved++] = it[k].idx;
      } else {
        attach(s, v, dead);
        rc = push_stranded(out, &cap, s->host[dead].name, v->name);
      }
    }
    while (nmoved > 0) { /* put the snapshot back exactly */
      struct nc__vm *v = &s->vm[moved[--nmoved]];
      detach(s, v);
      attach(s, v, dead);
    }
    s->hot[dead].state = old_state;
  }
  if (rc == 0 && out->count > 1)
    qsort(out->items, out->count, sizeof *out->items, cmp_stranded);
out:
  free(start);
  free(by_rank);
  free(vms);
  free(it);
  free(moved);
  if (rc != 0)
    nc_sched_n1_free(out);
  return rc;
}

void nc_sched_n1_free(struct nc_sched_n1 *r) {
  if (!r)
    return;
  free(r->items);
  memset(r, 0, sizeof *r);
}
