/* Explain: why each host was rejected, in words a person can act on, and
 * the per-weight scores of those that fit, as one JSON object (shape in
 * sched.h, examples in docs/scheduling.md). Only runs when asked, so it
 * may allocate and format freely; it re-runs nc__eval, so what it says is
 * exactly what the decision saw. */
#include "sched/sched_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fmt_bytes(int64_t v, char *buf, size_t len) {
  if (v < 0)
    v = 0;
  const double k = 1024.0;
  if (v >= (int64_t)1 << 30)
    snprintf(buf, len, "%.1f GiB", (double)v / (k * k * k));
  else if (v >= (int64_t)1 << 20)
    snprintf(buf, len, "%.1f MiB", (double)v / (k * k));
  else if (v >= 1024)
    snprintf(buf, len, "%.1f KiB", (double)v / k);
  else
    snprintf(buf, len, "%lld B", (long long)v);
}

/* "4.0", "1.5", "1.25": one decimal unless more are needed. */
static void fmt_num(double v, char *buf, size_t len) {
  if (fabs(v * 10 - round(v * 10)) < 1e-9)
    snprintf(buf, len, "%.1f", v);
  else
    snprintf(buf, len, "%g", v);
}

static const char *state_text(unsigned st) {
  switch (st) {
  case NC_SCHED_HOST_CORDONED:
    return "cordoned";
  case NC_SCHED_HOST_DRAINING:
    return "draining";
  case NC_SCHED_HOST_NOT_READY:
    return "not ready";
  default:
    return "ready";
  }
}

static const char *scope_text(enum nc_sched_scope sc) {
  return sc == NC_SCHED_SCOPE_HOST ? "host" : sc == NC_SCHED_SCOPE_RACK ? "rack" : "zone";
}

static const char *str_of(const struct nc_sched *s, uint32_t id) {
  return id < s->str.n ? s->str.s[id] : "";
}

/* " in rack \"r1\"", " in zone \"z1\"", " on this host". */
static void scope_where(const struct nc__host *ho, enum nc_sched_scope sc, char *buf, size_t len) {
  if (sc == NC_SCHED_SCOPE_HOST)
    snprintf(buf, len, "on this host");
  else if (sc == NC_SCHED_SCOPE_RACK)
    snprintf(buf, len, "in rack \"%s\"", ho->rack_name);
  else
    snprintf(buf, len, "in zone \"%s\"", ho->zone_name);
}

void nc__reason(const struct nc_sched *s, const struct nc__ctx *x, uint32_t h, int filter,
                uint32_t which, char *buf, size_t len) {
  const struct nc__host_hot *o = &s->hot[h];
  const struct nc__host *ho = &s->host[h];
  const struct nc__cons *c = x->c;
  const struct nc_sched_request *r = x->req;
  char a[48], b[48], d[48];
  switch (filter) {
  case NC__F_STATE:
    snprintf(buf, len, "state: host is %s", state_text(o->state));
    return;
  case NC__F_AVOID:
    snprintf(buf, len, "avoid: host is in the request's avoid list");
    return;
  case NC__F_ARCH:
    if (o->arch == ID_NONE)
      snprintf(buf, len, "arch: needs %s, host has no arch", r ? r->arch : "?");
    else
      snprintf(buf, len, "arch: needs %s, host is %s", r ? r->arch : "?", str_of(s, o->arch));
    return;
  case NC__F_LABELS:
    for (uint32_t i = 0; i < c->nlabels; i++) {
      uint32_t j = 0;
      while (j < ho->nlabels && ho->lkey[j] != c->lkey[i])
        j++;
      const char *key = r ? r->labels[i].key : str_of(s, c->lkey[i]);
      bool bare = c->lval[i] == ID_NONE;
      const char *val = bare ? "" : r ? r->labels[i].value : str_of(s, c->lval[i]);
      if (j == ho->nlabels) {
        if (bare)
          snprintf(buf, len, "labels: needs %s, host does not have it", key);
        else
          snprintf(buf, len, "labels: needs %s=%s, host has no %s label", key, val, key);
        return;
      }
      if (!bare && ho->lval[j] != c->lval[i]) {
        snprintf(buf, len, "labels: needs %s=%s, host has %s=%s", key, val, key,
                 ho->lval[j] == ID_NONE ? "" : str_of(s, ho->lval[j]));
        return;
      }
    }
    snprintf(buf, len, "labels: a required label is missing");
    return;
  case NC__F_CPU:
    fmt_num((double)(o->cpu_cap_m - o->cpu_used_m) / 1000.0, a, sizeof a);
    fmt_num((double)o->cpu_cap_m / 1000.0, b, sizeof b);
    fmt_num(s->cfg.cpu_ratio, d, sizeof d);
    snprintf(buf, len, "cpu: needs %lld vCPU, %s free of %s (%u CPUs at ratio %s)",
             (long long)(c->cpu_m / 1000), a, b, ho->cpus, d);
    return;
  case NC__F_MEMORY:
    fmt_bytes(c->mem, a, sizeof a);
    fmt_bytes(o->mem_cap - o->mem_used, b, sizeof b);
    fmt_num(s->cfg.mem_ratio, d, sizeof d);
    snprintf(buf, len, "memory: needs %s, %s free at ratio %s", a, b, d);
    return;
  case NC__F_LATENCY: {
    const char *site = r ? r->latency_site : str_of(s, c->site);
    uint32_t rtt = UINT32_MAX;
    for (uint32_t i = 0; i < ho->nsites; i++)
      if (ho->site[i] == c->site)
        rtt = ho->rtt_us[i];
    fmt_num(c->max_lat_us / 1000.0, b, sizeof b);
    if (rtt == UINT32_MAX) {
      snprintf(buf, len, "latency: no measurement to site \"%s\" (max %s ms)", site, b);
    } else {
      fmt_num(rtt / 1000.0, a, sizeof a);
      snprintf(buf, len, "latency: %s ms to site \"%s\", max %s ms", a, site, b);
    }
    return;
  }
  case NC__F_AFFINITY:
  case NC__F_ANTI_AFFINITY: {
    uint32_t gid = c->group[which];
    const struct nc__group *g = &s->group[gid];
    const char *what = filter == NC__F_AFFINITY ? "affinity" : "anti_affinity";
    bool has_dom;
    uint32_t n = nc__group_count(s, which, gid, h, &has_dom);
    if (!has_dom) {
      snprintf(buf, len, "%s: group \"%s\" is %s-scoped and the host has no %s label", what,
               g->name, scope_text(g->scope), scope_text(g->scope));
      return;
    }
    char where[2 * NC_SCHED_NAME_MAX + 32];
    scope_where(ho, g->scope, where, sizeof where);
    if (filter == NC__F_AFFINITY)
      snprintf(buf, len, "affinity: group \"%s\" (hard, %s) has %u member%s, none %s", g->name,
               scope_text(g->scope), x->gtotal[which], x->gtotal[which] == 1 ? "" : "s", where);
    else
      snprintf(buf, len, "anti_affinity: group \"%s\" (hard, %s) already has %u member%s %s",
               g->name, scope_text(g->scope), n, n == 1 ? "" : "s", where);
    return;
  }
  default:
    snprintf(buf, len, "ok");
    return;
  }
}

struct ex_item {
  double score;
  uint32_t rank;
  uint32_t h;
  uint32_t which;
  int filter;
};

/* Fitting hosts first, best score first; then rejected ones; name order
 * (rank) breaks ties, as in the decision. */
static int cmp_ex(const void *pa, const void *pb) {
  const struct ex_item *a = pa, *b = pb;
  bool fa = a->filter == NC__F_OK, fb = b->filter == NC__F_OK;
  if (fa != fb)
    return fa ? -1 : 1;
  if (fa && a->score != b->score)
    return a->score > b->score ? -1 : 1;
  return a->rank < b->rank ? -1 : a->rank > b->rank;
}

/* json_object_set_new that remembers a failure instead of returning it. */
static void put(json_t *o, const char *k, json_t *v, bool *ok) {
  if (!v || json_object_set_new(o, k, v) != 0)
    *ok = false;
}

json_t *nc__explain(const struct nc_sched *s, const struct nc__ctx *x, const char *vm_name,
                    uint32_t chosen) {
  size_t n = s->nhosts;
  struct ex_item *it = malloc((n ? n : 1) * sizeof *it);
  json_t *root = json_object(), *hosts = json_array(), *rejected = json_object();
  bool ok = it && root && hosts && rejected;
  uint32_t nfit = 0;
  for (uint32_t h = 0; ok && h < n; h++) {
    it[h].h = h;
    it[h].rank = s->hot[h].rank;
    it[h].score = 0;
    it[h].which = 0;
    it[h].filter = nc__eval(s, x, h, &it[h].score, NULL, &it[h].which);
    if (it[h].filter == NC__F_OK)
      nfit++;
  }
  if (ok)
    qsort(it, n, sizeof *it, cmp_ex);
  for (size_t k = 0; ok && k < n; k++) {
    uint32_t h = it[k].h;
    json_t *e = json_object();
    if (!e || json_array_append_new(hosts, e) != 0) {
      ok = false;
      break;
    }
    put(e, "host", json_string(s->host[h].name), &ok);
    if (it[k].filter == NC__F_OK) {
      double w[NC__W_COUNT], score;
      uint32_t which = 0;
      nc__eval(s, x, h, &score, w, &which);
      put(e, "fit", json_true(), &ok);
      put(e, "rank", json_integer((json_int_t)k + 1), &ok);
      put(e, "score", json_real(score), &ok);
      json_t *ws = json_object();
      for (int i = 0; ws && i < NC__W_COUNT; i++)
        if (nc__weight_applies(s, x, i))
          put(ws, nc__weight_names[i], json_real(w[i]), &ok);
      put(e, "weights", ws, &ok);
    } else {
      const char *f = nc__filter_names[it[k].filter];
      char reason[512];
      nc__reason(s, x, h, it[k].filter, it[k].which, reason, sizeof reason);
      put(e, "fit", json_false(), &ok);
      put(e, "filter", json_string(f), &ok);
      put(e, "reason", json_string(reason), &ok);
      json_t *cnt = json_object_get(rejected, f);
      put(rejected, f, json_integer(cnt ? json_integer_value(cnt) + 1 : 1), &ok);
    }
  }
  if (ok) {
    put(root, "vm", json_string(vm_name), &ok);
    put(root, "mode", json_string(nc_sched_mode_name(s->cfg.mode)), &ok);
    put(root, "placed", json_boolean(chosen != ID_NONE), &ok);
    put(root, "host", chosen != ID_NONE ? json_string(s->host[chosen].name) : json_null(), &ok);
    put(root, "hosts_fit", json_integer(nfit), &ok);
    put(root, "rejected", rejected, &ok);
    rejected = NULL;
    put(root, "hosts", hosts, &ok);
    hosts = NULL;
  }
  free(it);
  json_decref(rejected);
  json_decref(hosts);
  if (!ok) {
    json_decref(root);
    return NULL;
  }
  return root;
}
