#include "vm_world.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
  pthread_mutex_init(&w->disk_mu, NULL);
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
  pthread_mutex_destroy(&w->disk_mu);
  nct_rmtree(w->dir);
}

static int overlay(void *data, const char *base, const char *path) {
  struct nct_world *w = data;
  pthread_mutex_lock(&w->disk_mu);
  int rc = w->overlay_rc;
  w->overlays++;
  pthread_mutex_unlock(&w->disk_mu);
  if (rc)
    return rc;
  if (access(base, R_OK) != 0)
    return -errno;
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  close(fd);
  return 0;
}

struct nc_vmm_disk_ops nct_world_disk_ops(struct nct_world *w) {
  return (struct nc_vmm_disk_ops){1, w, overlay};
}
