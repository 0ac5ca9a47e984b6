#include "boot/boot.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obs/metrics.h"
#include "util/err.h"
#include "util/log.h"

#define COMPONENTS_MAX 32

static const char *const phase_names[NC_PHASE__COUNT] = {"pre-init", "core", "services",
                                                         "post-init"};

struct slot {
  struct nc_component c;
  char status[16];
  char message[512];
  double start_seconds;
  bool started;
};

struct nc_boot {
  void *ctx;
  pthread_mutex_t mu;
  struct slot slots[COMPONENTS_MAX];
  size_t n;
  struct slot *started[COMPONENTS_MAX]; /* in start order */
  size_t nstarted;
  struct timespec t0;
  double phase_seconds[NC_PHASE__COUNT];
  double ready_seconds;
  bool done;
  struct nc_metrics *metrics; /* where our collector is registered */
};

static void collect(struct nc_metrics_writer *w, void *data);

static double since(const struct timespec *t0) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

int nc_boot_new(void *ctx, struct nc_boot **out) {
  struct nc_boot *b = calloc(1, sizeof *b);
  if (!b)
    return -ENOMEM;
  b->ctx = ctx;
  pthread_mutex_init(&b->mu, NULL);
  clock_gettime(CLOCK_MONOTONIC, &b->t0);
  *out = b;
  return 0;
}

void nc_boot_free(struct nc_boot *b) {
  if (!b)
    return;
  if (b->metrics)
    nc_metrics_remove_collector(b->metrics, collect, b);
  pthread_mutex_destroy(&b->mu);
  free(b);
}

int nc_boot_register(struct nc_boot *b, const struct nc_component *c) {
  if (b->n >= COMPONENTS_MAX || (unsigned)c->phase >= NC_PHASE__COUNT)
    return -EINVAL;
  struct slot *s = &b->slots[b->n++];
  memset(s, 0, sizeof *s);
  s->c = *c;
  snprintf(s->status, sizeof s->status, "pending");
  return 0;
}

/* Stops in the reverse of the order components actually started. */
static void stop_started(struct nc_boot *b) {
  for (size_t i = b->nstarted; i > 0; i--) {
    struct slot *s = b->started[i - 1];
    if (s->started && s->c.stop)
      s->c.stop(b->ctx);
    s->started = false;
  }
  b->nstarted = 0;
}

int nc_boot_run(struct nc_boot *b, char *err, size_t err_len) {
  for (int p = 0; p < NC_PHASE__COUNT; p++) {
    struct timespec tp;
    clock_gettime(CLOCK_MONOTONIC, &tp);
    for (size_t i = 0; i < b->n; i++) {
      struct slot *s = &b->slots[i];
      if ((int)s->c.phase != p)
        continue;
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      char msg[512] = "";
      int rc = s->c.start(b->ctx, msg, sizeof msg);
      pthread_mutex_lock(&b->mu);
      s->start_seconds = since(&ts);
      if (rc == 0) {
        s->started = true;
        b->started[b->nstarted++] = s;
        if (strcmp(s->status, "pending") == 0) /* unless it reported for itself */
          snprintf(s->status, sizeof s->status, "up");
        if (msg[0])
          snprintf(s->message, sizeof s->message, "%s", msg);
      } else {
        snprintf(s->status, sizeof s->status, s->c.critical ? "failed" : "degraded");
        snprintf(s->message, sizeof s->message, "%s", msg[0] ? msg : nc_strerror(rc));
      }
      pthread_mutex_unlock(&b->mu);
      if (rc != 0 && s->c.critical) {
        snprintf(err, err_len, "component %s: %s", s->c.name, msg[0] ? msg : nc_strerror(rc));
        stop_started(b);
        return rc;
      }
      if (rc != 0)
        nc_warn("boot", "optional component %s is degraded: %s", s->c.name, s->message);
      else
        nc_debug("boot", "component %s up in %.3f s", s->c.name, s->start_seconds);
    }
    b->phase_seconds[p] = since(&tp);
  }
  pthread_mutex_lock(&b->mu);
  b->ready_seconds = since(&b->t0);
  b->done = true;
  pthread_mutex_unlock(&b->mu);
  return 0;
}

void nc_boot_shutdown(struct nc_boot *b) { stop_started(b); }

void nc_boot_set_status(struct nc_boot *b, const char *name, const char *status,
                        const char *message) {
  pthread_mutex_lock(&b->mu);
  for (size_t i = 0; i < b->n; i++) {
    if (strcmp(b->slots[i].c.name, name) == 0) {
      snprintf(b->slots[i].status, sizeof b->slots[i].status, "%s", status);
      snprintf(b->slots[i].message, sizeof b->slots[i].message, "%s", message ? message : "");
    }
  }
  pthread_mutex_unlock(&b->mu);
}

json_t *nc_boot_readiness(struct nc_boot *b) {
  json_t *arr = json_array();
  pthread_mutex_lock(&b->mu);
  bool ready = b->done;
  for (size_t i = 0; i < b->n; i++) {
    struct slot *s = &b->slots[i];
    if (s->c.critical && strcmp(s->status, "up") != 0)
      ready = false;
    json_array_append_new(
        arr, json_pack("{s:s, s:s, s:b, s:s, s:s, s:f}", "name", s->c.name, "phase",
                       phase_names[s->c.phase], "critical", s->c.critical, "status", s->status,
                       "message", s->message, "start_seconds", s->start_seconds));
  }
  double rs = b->ready_seconds;
  pthread_mutex_unlock(&b->mu);
  return json_pack("{s:b, s:f, s:o}", "ready", ready, "boot_to_ready_seconds", rs,
                   "components", arr);
}

double nc_boot_ready_seconds(struct nc_boot *b) {
  pthread_mutex_lock(&b->mu);
  double r = b->ready_seconds;
  pthread_mutex_unlock(&b->mu);
  return r;
}

static void collect(struct nc_metrics_writer *w, void *data) {
  struct nc_boot *b = data;
  pthread_mutex_lock(&b->mu);
  nc_metrics_write_family(w, "novacron_boot_phase_duration_seconds", NC_METRIC_GAUGE,
                          "Time each start-up phase took.");
  for (int p = 0; p < NC_PHASE__COUNT; p++) {
    const char *l[] = {"phase", phase_names[p], NULL};
    nc_metrics_write_sample(w, "novacron_boot_phase_duration_seconds", l, b->phase_seconds[p]);
  }
  nc_metrics_write_family(w, "novacron_boot_to_ready_seconds", NC_METRIC_GAUGE,
                          "Time from process start to ready.");
  nc_metrics_write_sample(w, "novacron_boot_to_ready_seconds", NULL, b->ready_seconds);
  nc_metrics_write_family(w, "novacron_component_up", NC_METRIC_GAUGE,
                          "1 when a start-up component is up, 0 when degraded or failed.");
  for (size_t i = 0; i < b->n; i++) {
    const char *l[] = {"component", b->slots[i].c.name, NULL};
    nc_metrics_write_sample(w, "novacron_component_up", l,
                            strcmp(b->slots[i].status, "up") == 0 ? 1 : 0);
  }
  pthread_mutex_unlock(&b->mu);
}

void nc_boot_export_metrics(struct nc_boot *b, struct nc_metrics *m) {
  b->metrics = m;
  nc_metrics_add_collector(m, collect, b);
}
