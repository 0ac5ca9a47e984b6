/* The migration service: its lifecycle, its threads, and the sessions and
 * listeners shutdown aborts. The source is in source.c, stream.c and
 * handover.c, the destination in dest.c; what they share, including the
 * layouts of the AMST messages that migrate.h refers to, in
 * migrate_int.h. */
#include "migrate/migrate.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "dwcp/amst.h"
#include "dwcp/hde.h"
#include "migrate/migrate_int.h"
#include "obs/metrics.h"
#include "util/log.h"
#include "vm/imgid.h"

int64_t nc__mig_thread_cpu_ms(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
    return 0;
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void nc__mig_track(struct nc_migrate *m, struct nc_amst *a, bool on) {
  pthread_mutex_lock(&m->mu);
  for (int i = 0; i < ACTIVE_MAX; i++) {
    if (on && !m->active[i]) {
      m->active[i] = a;
      if (m->stopping)
        nc_amst_abort(a);
      break;
    }
    if (!on && m->active[i] == a) {
      m->active[i] = NULL;
      break;
    }
  }
  pthread_mutex_unlock(&m->mu);
}

void nc__mig_track_listener(struct nc_migrate *m, struct nc_amst_listener *l, bool on) {
  pthread_mutex_lock(&m->mu);
  for (int i = 0; i < ACTIVE_MAX; i++) {
    if (on && !m->waiting[i]) {
      m->waiting[i] = l;
      if (m->stopping)
        nc_amst_listener_abort(l);
      break;
    }
    if (!on && m->waiting[i] == l) {
      m->waiting[i] = NULL;
      break;
    }
  }
  pthread_mutex_unlock(&m->mu);
}

bool nc__mig_stopping(struct nc_migrate *m) {
  pthread_mutex_lock(&m->mu);
  bool s = m->stopping;
  pthread_mutex_unlock(&m->mu);
  return s;
}

bool nc__mig_is_loopback(const char *host) {
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, host, &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &a6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&a6) ||
           (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
  return false;
}

const char *nc__mig_tls_mode_name(enum nc_migrate_tls t) {
  return t == NC_MIGRATE_TLS_ON ? "on" : t == NC_MIGRATE_TLS_OFF ? "off" : "auto";
}

void nc__mig_thread_done(struct nc_migrate *m) {
  pthread_mutex_lock(&m->mu);
  m->threads--;
  pthread_cond_broadcast(&m->cv);
  pthread_mutex_unlock(&m->mu);
}

int nc__mig_spawn(struct nc_migrate *m, void *(*fn)(void *), void *arg) {
  pthread_mutex_lock(&m->mu);
  if (m->stopping) {
    pthread_mutex_unlock(&m->mu);
    return -ECANCELED;
  }
  m->threads++;
  pthread_mutex_unlock(&m->mu);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&t, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  if (rc) {
    nc__mig_thread_done(m);
    return -rc;
  }
  return 0;
}

int nc_migrate_new(const struct nc_migrate_config *cfg, struct nc_migrate **out) {
  struct nc_migrate *m = calloc(1, sizeof *m);
  if (!m)
    return -ENOMEM;
  m->cfg = *cfg;
  /* Pages stored while migrating go to the file in batches (hde.h): a
   * third of the kernel's cost of one write each. */
  if (cfg->pcache && nc_pcache_set_write_behind(cfg->pcache, true) != 0)
    nc_warn("migrate", "page cache: no memory for write-behind; writing each page");
  int rc = nc_imgid_cache_new(IMGID_CACHE_ENTRIES, &m->imgids);
  if (rc) {
    free(m);
    return rc;
  }
  pthread_mutex_init(&m->mu, NULL);
  pthread_cond_init(&m->cv, NULL);
  if (cfg->metrics) {
    m->m_total = nc_metrics_register(cfg->metrics, NC_METRIC_COUNTER, "novacron_migrations_total",
                                     "Migrations by role and result.",
                                     (const char *const[]){"role", "result", NULL}, NULL, 0);
    m->m_bytes_wire = nc_metrics_register(
        cfg->metrics, NC_METRIC_COUNTER, "novacron_migration_wire_bytes_total",
        "Bytes sent on DWCP streams by successful outgoing migrations.", NULL, NULL, 0);
    m->m_bytes_raw = nc_metrics_register(
        cfg->metrics, NC_METRIC_COUNTER, "novacron_migration_stream_bytes_total",
        "Bytes of QEMU migration stream carried by successful outgoing migrations.", NULL, NULL,
        0);
    static const double down_b[] = {0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5};
    m->m_downtime = nc_metrics_register(
        cfg->metrics, NC_METRIC_HISTOGRAM, "novacron_migration_downtime_seconds",
        "Guest pause of successful outgoing migrations, from QEMU's stop to the destination's "
        "confirmation that it resumed the guest.",
        NULL, down_b, sizeof down_b / sizeof *down_b);
    static const double dur_b[] = {0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600};
    m->m_duration = nc_metrics_register(
        cfg->metrics, NC_METRIC_HISTOGRAM, "novacron_migration_duration_seconds",
        "Total time of successful outgoing migrations, from the request to the hand-over.",
        NULL, dur_b, sizeof dur_b / sizeof *dur_b);
  }
  *out = m;
  return 0;
}

void nc__mig_count(struct nc_migrate *m, const char *role, const char *result) {
  if (m->m_total)
    nc_metric_add(m->m_total, (const char *const[]){role, result}, 1);
}

int nc__mig_int_field(json_t *body, const char *name, int lo, int hi, const char *unit, int *out,
                      struct nc_errinfo *err) {
  json_t *v = json_object_get(body, name);
  if (!v)
    return 0;
  if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
    return nc_errinfo_set(err, 400, "invalid_field", name, "%s must be %d to %d%s", name, lo, hi,
                          unit);
  *out = (int)json_integer_value(v);
  return 0;
}

void nc__mig_session_end(struct nc_migrate *m, struct nc_amst *a, int rc) {
  if (!a)
    return;
  nc__mig_track(m, a, false);
  if (rc)
    nc_amst_abort(a);
  nc_amst_close(a);
}

void nc_migrate_free(struct nc_migrate *m) {
  if (!m)
    return;
  pthread_mutex_lock(&m->mu);
  m->stopping = true; /* sources cancel (the VM stays), destinations tear down */
  for (int i = 0; i < ACTIVE_MAX; i++) {
    if (m->active[i])
      nc_amst_abort(m->active[i]);
    if (m->waiting[i])
      nc_amst_listener_abort(m->waiting[i]);
  }
  while (m->threads > 0)
    pthread_cond_wait(&m->cv, &m->mu);
  pthread_mutex_unlock(&m->mu);
  pthread_cond_destroy(&m->cv);
  pthread_mutex_destroy(&m->mu);
  nc_imgid_cache_free(m->imgids);
  free(m);
}
