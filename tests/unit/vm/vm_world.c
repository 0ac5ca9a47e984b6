#include "vm_world.h"

#include <stdio.h>
#include <string.h>

#include "vm/image.h"

int nct_world_init(struct nct_world *w, const char *tag, uint64_t seed, const char *cmdline) {
  memset(w, 0, sizeof *w);
  if (nct_mkdtemp(w->dir, sizeof w->dir, tag) != 0)
    return -1;
  snprintf(w->data_dir, sizeof w->data_dir, "%s/data", w->dir);
  snprintf(w->uri, sizeof w->uri, "sqlite:%s/s.db", w->dir);
  snprintf(w->kernel, sizeof w->kernel, "%s/vmlinuz", w->dir);
  snprintf(w->base_disk, sizeof w->base_disk, "%s/base.qcow2", w->dir);
  if (nct_write_file(w->kernel, "kernel") || nct_write_file(w->base_disk, "disk"))
    return -1;
  nc_clock_manual_init(&w->clock, 0);
  nct_rand_init(&w->rand, seed);
  fake_hv_init(&w->hv);
  if (nc_store_open(w->uri, &w->clock.clock, &w->store) || nc_events_new(&w->events) ||
      nc_ops_new(w->store, &w->clock.clock, &w->rand.r, w->events, &w->ops) ||
      nc_metrics_new(&w->metrics))
    return -1;
  json_t *j = json_pack("{s:s, s:s, s:s}", "name", "img", "kernel", w->kernel, "disk",
                        w->base_disk);
  if (cmdline)
    json_object_set_new(j, "cmdline", json_string(cmdline));
  struct nc_image img;
  struct nc_errinfo err = {0};
  int rc = nc_image_register(w->store, j, &img, &err);
  json_decref(j);
  if (rc) {
    fprintf(stderr, "image register: %s\n", err.message);
    return -1;
  }
  return 0;
}

void nct_world_fini(struct nct_world *w) {
  nc_ops_free(w->ops);
  nc_events_free(w->events);
  nc_metrics_free(w->metrics);
  nc_store_close(w->store);
  fake_hv_destroy(&w->hv);
  nct_rmtree(w->dir);
}
