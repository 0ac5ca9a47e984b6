/* The world a VM-manager test runs in: a temp directory, a SQLite store
 * with a manual clock and a seeded random source, the event bus, the
 * operations registry, a metrics registry, the in-memory fake hypervisor,
 * and one registered image "img" (kernel + base disk files in the temp
 * directory). Shared by the manager and API tests. */
#ifndef NCT_VM_WORLD_H
#define NCT_VM_WORLD_H

#include "fake_hv.h"
#include "nc_test.h"
#include "obs/metrics.h"
#include "store/store.h"
#include "util/clock.h"
#include "vm/events.h"
#include "vm/manager.h"
#include "vm/ops.h"

#include <pthread.h>

struct nct_world {
  char dir[128];
  char data_dir[256];
  char uri[300];
  char kernel[300];
  char base_disk[300];
  struct nc_clock_manual clock;
  struct nct_rand rand;
  struct nc_store *store;
  struct nc_events *events;
  struct nc_ops *ops;
  struct nc_metrics *metrics;
  struct fake_hv hv;
  /* The disk overlay op (nct_world_disk_ops): counts calls, fails with
   * overlay_rc when set, else creates an empty overlay file. */
  pthread_mutex_t disk_mu;
  int overlays;
  int overlay_rc;
};

/* A struct nc_vmm_disk_ops over w. */
struct nc_vmm_disk_ops nct_world_disk_ops(struct nct_world *w);

/* tag names the temp directory; cmdline (may be NULL) is the image's. 0 or
 * -1 with a line on stderr. */
int nct_world_init(struct nct_world *w, const char *tag, uint64_t seed, const char *cmdline);
/* Frees everything and removes the directory. The manager (and API) using
 * the world must be gone first. */
void nct_world_fini(struct nct_world *w);

#endif
