/* The rebalancer's decision: which VM, if any, to live-migrate to even out
 * load. Pure and deterministic (no clock, no I/O): the controller passes
 * the time, the nodes and the VMs, and carries the state between ticks.
 *
 * Load of a node = the larger of its vCPU and memory allocation, each as
 * a fraction of capacity after overcommit. Imbalance = the most loaded
 * eligible node's load minus the least loaded one's.
 *
 * Hysteresis, so it never thrashes:
 *  - act only after the imbalance stayed above threshold for
 *    `sustain_ticks` consecutive decisions;
 *  - move one VM, from the most loaded node to the least loaded one: the
 *    one that leaves the two closest, provided the target ends no more
 *    loaded than the source (a move that merely swaps which node is the
 *    heavier is never taken) and their gap narrows by at least
 *    threshold / 4;
 *  - then wait `cooldown_ms` before the next move.
 * Every move lowers the sum of the squared loads, so with a fixed load
 * moves cannot cycle: a VM never goes back to a node it left. */
#ifndef NC_CLUSTER_REBALANCE_H
#define NC_CLUSTER_REBALANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nc_rb_config {
  double threshold;    /* (0, 1]; default 0.25 */
  int sustain_ticks;   /* >= 1; default 20 (10 s at the controller's tick) */
  int64_t cooldown_ms; /* default 60000 */
};

struct nc_rb_node {
  const char *name;
  double cpu_cap, mem_cap;   /* capacity after overcommit; > 0 */
  double cpu_used, mem_used; /* allocated */
  bool eligible;             /* ready: neither cordoned, draining nor dead */
};

struct nc_rb_vm {
  const char *name;
  size_t node;  /* index into the nodes */
  double cpu, mem;
  bool movable; /* running and idle: live migration can take it */
};

struct nc_rb_state {
  int over_ticks;
  int64_t quiet_until_ms;
};

void nc_rb_config_default(struct nc_rb_config *c);

/* The imbalance of the eligible nodes (0 with fewer than two). */
double nc_rb_imbalance(const struct nc_rb_node *nodes, size_t n);

/* One decision at now_ms. Returns true and sets *vm (index into vms) and
 * *to (index into nodes) when a VM should move now; the caller then
 * starts the migration (and calls nc_rb_moved). false otherwise. */
bool nc_rb_decide(const struct nc_rb_config *cfg, struct nc_rb_state *st, int64_t now_ms,
                  const struct nc_rb_node *nodes, size_t n, const struct nc_rb_vm *vms,
                  size_t m, size_t *vm, size_t *to);

/* Records that a move started (the cooldown begins). */
void nc_rb_moved(const struct nc_rb_config *cfg, struct nc_rb_state *st, int64_t now_ms);

#endif
