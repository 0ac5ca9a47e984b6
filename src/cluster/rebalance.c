/* The rebalancer's decision. See rebalance.h. */
#include "cluster/rebalance.h"

#include <string.h>

void nc_rb_config_default(struct nc_rb_config *c) {
  c->threshold = 0.25;
  c->sustain_ticks = 20;
  c->cooldown_ms = 60000;
}

static double load(const struct nc_rb_node *nd, double dcpu, double dmem) {
  double c = (nd->cpu_used + dcpu) / nd->cpu_cap, m = (nd->mem_used + dmem) / nd->mem_cap;
  return c > m ? c : m;
}

double nc_rb_imbalance(const struct nc_rb_node *nodes, size_t n) {
  double hi = 0, lo = 0;
  size_t seen = 0;
  for (size_t i = 0; i < n; i++) {
    if (!nodes[i].eligible)
      continue;
    double l = load(&nodes[i], 0, 0);
    if (seen == 0 || l > hi)
      hi = l;
    if (seen == 0 || l < lo)
      lo = l;
    seen++;
  }
  return seen < 2 ? 0 : hi - lo;
}

/* Ties go to the name that sorts first, so the choice depends only on the
 * input's content. */
static bool better(double a, const char *an, double b, const char *bn, bool want_high) {
  if (a != b)
    return want_high ? a > b : a < b;
  return strcmp(an, bn) < 0;
}

bool nc_rb_decide(const struct nc_rb_config *cfg, struct nc_rb_state *st, int64_t now_ms,
                  const struct nc_rb_node *nodes, size_t n, const struct nc_rb_vm *vms,
                  size_t m, size_t *vm, size_t *to) {
  double before = nc_rb_imbalance(nodes, n);
  if (before <= cfg->threshold) {
    st->over_ticks = 0;
    return false;
  }
  if (st->over_ticks < cfg->sustain_ticks)
    st->over_ticks++;
  if (st->over_ticks < cfg->sustain_ticks || now_ms < st->quiet_until_ms)
    return false;
  size_t hi = n, lo = n;
  for (size_t i = 0; i < n; i++) {
    if (!nodes[i].eligible)
      continue;
    double l = load(&nodes[i], 0, 0);
    if (hi == n || better(l, nodes[i].name, load(&nodes[hi], 0, 0), nodes[hi].name, true))
      hi = i;
    if (lo == n || better(l, nodes[i].name, load(&nodes[lo], 0, 0), nodes[lo].name, false))
      lo = i;
  }
  if (hi == n || lo == n || hi == lo)
    return false;
  /* Between the two: the move must not overshoot (the target stays at
   * most as loaded as the source after it), and must narrow their gap by
   * at least threshold / 4. Each move then lowers the sum of squared
   * loads, so moves cannot cycle. */
  double gap = load(&nodes[hi], 0, 0) - load(&nodes[lo], 0, 0);
  size_t best = m;
  double best_gap = gap;
  for (size_t j = 0; j < m; j++) {
    if (vms[j].node != hi || !vms[j].movable)
      continue;
    double to_after = load(&nodes[lo], vms[j].cpu, vms[j].mem);
    double from_after = load(&nodes[hi], -vms[j].cpu, -vms[j].mem);
    if (to_after > 1.0 || to_after > from_after)
      continue; /* does not fit there, or would make the target the heavier */
    double g = from_after - to_after;
    if (best == m || g < best_gap || (g == best_gap && strcmp(vms[j].name, vms[best].name) < 0)) {
      best = j;
      best_gap = g;
    }
  }
  if (best == m || gap - best_gap < cfg->threshold / 4)
    return false;
  *vm = best;
  *to = lo;
  return true;
}

void nc_rb_moved(const struct nc_rb_config *cfg, struct nc_rb_state *st, int64_t now_ms) {
  st->over_ticks = 0;
  st->quiet_until_ms = now_ms + cfg->cooldown_ms;
}
