/* novacrond: the per-host daemon.
 *
 * Start-up runs through the component registry (boot/boot.h); every part
 * of the daemon is one component below, with its context passed in, not
 * kept in globals. The main thread then waits for SIGTERM/SIGINT; on a
 * signal the API stops first, then the VM manager (which leaves every VM
 * running: a daemon restart never stops a guest), then the store. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "boot/boot.h"
#include "boot/config.h"
#include "cluster/bootstrap.h"
#include "cluster/cluster.h"
#include "cluster/etcd_member.h"
#include "cluster/fence.h"
#include "hv/noop.h"
#include "hv/qemu.h"
#include "nc_version.h"
#include "obs/metrics.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "vm/events.h"
#include "vm/image.h"
#include "vm/manager.h"
#include "vm/ops.h"
#ifdef NC_WITH_MIGRATE
#include "dwcp/hde.h"
#include "dwcp/tls.h"
#include "migrate/migrate.h"
#endif

#define DEFAULT_CONFIG "/etc/novacron/novacrond.conf"
#define QEMU_MIN_MAJOR 9

struct daemon {
  struct nc_config cfg;
  struct nc_boot *boot;
  int lock_fd;
  char token[65];
  int qemu_major, qemu_minor;
  enum nc_hv_accel accel;
  struct nc_metrics *metrics;
  struct nc_store *store;  /* this node's records: the whole store, or its view in a cluster */
  struct nc_store *shared; /* the cluster's store (etcd), NULL on a single node */
  struct nc_cluster *cluster;
  struct nc_etcd_member *member; /* this node's etcd member, if it runs one */
  bool control_plane;
  char self_exe[1024];
  char **argv;   /* to restart in place (cluster init/join) */
  bool reexec;
  struct nc_hv *hv;
  struct nc_events *events;
  struct nc_ops *ops;
  struct nc_vmm *vmm;
  struct nc_api *api;
  char cluster_token[256];
#ifdef NC_WITH_MIGRATE
  struct nc_pcache *pcache;
  struct nc_migrate *migrate;
  struct nc_tls *tls; /* the node's DWCP identity */
  char tls_fp[NC_TLS_FP_HEX_LEN + 1];
#endif
  pthread_t probe_thread;
  bool probe_running;
};

/* hypervisor = noop: no guests run (hv/noop.h), so nothing of QEMU is
 * needed or probed. For control-plane benchmarks only. */
static bool hv_noop(const struct daemon *d) { return strcmp(d->cfg.hypervisor, "noop") == 0; }

/* ---- pre-init ----------------------------------------------------------- */

static int c_logging(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  enum nc_log_level l;
  if (nc_log_parse_level(d->cfg.log_level, &l) != 0) {
    snprintf(err, len, "log_level \"%s\" is not debug, info, warn or error", d->cfg.log_level);
    return -EINVAL;
  }
  nc_log_set_level(l);
  return 0;
}

static int c_metrics(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  int rc = nc_metrics_new(&d->metrics);
  if (rc)
    return rc;
  struct nc_metric *bi = nc_metrics_register(
      d->metrics, NC_METRIC_GAUGE, "novacron_build_info", "Build information; always 1.",
      (const char *const[]){"version", "qemu_version", NULL}, NULL, 0);
  char qv[32];
  snprintf(qv, sizeof qv, "%d.%d", d->qemu_major, d->qemu_minor);
  nc_metric_set(bi, (const char *const[]){NC_VERSION, qv}, 1);
  nc_boot_export_metrics(d->boot, d->metrics);
  return 0;
}

static int c_qemu(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  if (hv_noop(d)) {
    snprintf(err, len, "not checked: hypervisor = noop runs no guests");
    return 0;
  }
  int rc = nc_hv_qemu_version(d->cfg.qemu, &d->qemu_major, &d->qemu_minor);
  if (rc) {
    snprintf(err, len,
             "cannot run \"%s --version\" (%s): install QEMU >= %d.0, on Debian 12 with "
             "`apt-get install -t bookworm-backports qemu-system-x86 qemu-utils` "
             "(scripts/install-deps does this), or set `qemu = /path` in the config",
             d->cfg.qemu, nc_strerror(rc), QEMU_MIN_MAJOR);
    return rc;
  }
  if (d->qemu_major < QEMU_MIN_MAJOR) {
    snprintf(err, len,
             "QEMU %d.%d is too old: versions before %d.0 corrupt TCG guests migrated while "
             "they write memory. Install QEMU from bookworm-backports: `apt-get install -t "
             "bookworm-backports qemu-system-x86 qemu-utils`",
             d->qemu_major, d->qemu_minor, QEMU_MIN_MAJOR);
    return -ENOTSUP;
  }
  nc_info("boot", "QEMU %d.%d at %s", d->qemu_major, d->qemu_minor, d->cfg.qemu);
  return 0;
}

static int c_accel(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  d->accel = NC_ACCEL_TCG;
  if (d->cfg.accel == NC_ACCEL_PREF_KVM) {
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
      snprintf(err, len, "accel = kvm but /dev/kvm is not usable (%s); use accel = auto",
               strerror(errno));
      return -ENODEV;
    }
    d->accel = NC_ACCEL_KVM;
  }
  return 0;
}

/* ---- core --------------------------------------------------------------- */

static int mkdir_p(const char *path) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return -errno;
      *p = '/';
    }
  }
  if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
    return -errno;
  return 0;
}

static int c_data_dir(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  int rc = mkdir_p(d->cfg.data_dir);
  if (rc) {
    snprintf(err, len, "cannot create data directory %s: %s (use --data-dir)",
             d->cfg.data_dir, nc_strerror(rc));
    return rc;
  }
  char path[1100];
  snprintf(path, sizeof path, "%s/novacrond.lock", d->cfg.data_dir);
  d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (d->lock_fd < 0 || flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    rc = -errno;
    snprintf(err, len,
             "another novacrond already uses %s (%s); stop it or pick another --data-dir",
             d->cfg.data_dir, nc_strerror(rc));
    if (d->lock_fd >= 0)
      close(d->lock_fd);
    d->lock_fd = -1;
    return rc;
  }
  return 0;
}

static void s_data_dir(void *ctx) {
  struct daemon *d = ctx;
  if (d->lock_fd >= 0)
    close(d->lock_fd);
  d->lock_fd = -1;
}

static int c_token(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  char path[1100];
  snprintf(path, sizeof path, "%s/api.token", d->cfg.data_dir);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, d->token, sizeof d->token - 1);
    close(fd);
    while (n > 0 && (d->token[n - 1] == '\n' || d->token[n - 1] == ' '))
      n--;
    if (n >= 32) {
      d->token[n] = '\0';
      return 0;
    }
    snprintf(err, len, "%s is shorter than 32 characters; delete it to get a new token", path);
    return -EINVAL;
  }
  nc_rand_hex(nc_rand_system(), d->token, 32);
  fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 || write(fd, d->token, 64) != 64 || write(fd, "\n", 1) != 1) {
    int rc = -errno;
    snprintf(err, len, "cannot write %s: %s", path, nc_strerror(rc));
    if (fd >= 0)
      close(fd);
    return rc;
  }
  close(fd);
  nc_info("boot", "created API token in %s", path);
  return 0;
}

/* A token every node of a cluster shares: accepted on this node's TCP API
 * and sent to peers (live migration). */
static int c_cluster_token(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  if (!d->cfg.cluster_token_file[0]) {
    /* written by cluster init/join (cluster/bootstrap.h) */
    char path[NC_CONFIG_VALUE_MAX + 1];
    snprintf(path, sizeof path, "%.1000s/cluster.token", d->cfg.data_dir);
    if (access(path, F_OK) != 0)
      return 0;
    snprintf(d->cfg.cluster_token_file, sizeof d->cfg.cluster_token_file, "%s", path);
  }
  struct stat st;
  int fd = open(d->cfg.cluster_token_file, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0) {
    snprintf(err, len, "cannot read cluster_token_file %s: %s", d->cfg.cluster_token_file,
             strerror(errno));
    if (fd >= 0)
      close(fd);
    return -errno;
  }
  if (st.st_mode & 077) {
    close(fd);
    snprintf(err, len, "%s is readable by others; chmod 600 it", d->cfg.cluster_token_file);
    return -EPERM;
  }
  ssize_t n = read(fd, d->cluster_token, sizeof d->cluster_token - 1);
  close(fd);
  while (n > 0 && (d->cluster_token[n - 1] == '\n' || d->cluster_token[n - 1] == ' '))
    n--;
  if (n < 32) {
    snprintf(err, len, "%s must hold a token of at least 32 characters",
             d->cfg.cluster_token_file);
    return -EINVAL;
  }
  d->cluster_token[n] = '\0';
  return 0;
}

static int c_store(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  char uri[2100];
  struct nc_cluster_boot boot;
  int brc = d->cfg.store[0] ? -ENOENT : nc_cluster_boot_load(d->cfg.data_dir, &boot);
  d->control_plane = d->cfg.control_plane;
  if (brc == -EINVAL) {
    snprintf(err, len, "%s/cluster.json is damaged (see the log)", d->cfg.data_dir);
    return brc;
  }
  if (d->cfg.store[0]) {
    snprintf(uri, sizeof uri, "%s", d->cfg.store);
  } else if (brc == 0) {
    /* Formed by cluster init/join: run this node's etcd member (adopting
     * one that kept running) and use the cluster's endpoints. */
    snprintf(uri, sizeof uri, "%s", boot.store_uri);
    d->control_plane = boot.control_plane;
    if (boot.has_member) {
      struct nc_errinfo merr = {0};
      struct nc_etcd_member_config mc = {.data_dir = boot.member_dir, .start_timeout_ms = -1};
      int rc = nc_etcd_member_start(&mc, &d->member, &merr);
      if (rc) {
        snprintf(err, len, "cannot run this node's etcd member: %s", merr.message);
        return rc;
      }
      if (nc_etcd_member_wait_healthy(d->member, 30000, &merr) != 0)
        nc_warn("boot", "this node's etcd member is not healthy yet (%s); using the other "
                        "members", merr.message);
    }
  } else {
    snprintf(uri, sizeof uri, "sqlite:%s/state.db", d->cfg.data_dir);
  }
  struct nc_store *s = NULL;
  int rc = nc_store_open(uri, nc_clock_system(), &s);
  if (rc) {
    snprintf(err, len, "cannot open the store %s: %s", uri, nc_strerror(rc));
    nc_etcd_member_stop(d->member, false);
    d->member = NULL;
    return rc;
  }
  if (strncmp(uri, "etcd:", 5) != 0) {
    d->store = s;
    return 0;
  }
  /* On etcd the node is part of a cluster: its own records live under
   * /nodes/<node>/ and the cluster's under /cluster/ (cluster/cluster.h). */
  char prefix[128];
  snprintf(prefix, sizeof prefix, "/nodes/%s", d->cfg.node_name);
  rc = nc_store_view(s, prefix, false, &d->store);
  if (rc) {
    nc_store_close(s);
    snprintf(err, len, "cannot open this node's view of %s: %s", uri, nc_strerror(rc));
    return rc;
  }
  d->shared = s;
  return 0;
}

static void s_store(void *ctx) {
  struct daemon *d = ctx;
  nc_store_close(d->store);
  d->store = NULL;
  nc_store_close(d->shared);
  d->shared = NULL;
  nc_etcd_member_stop(d->member, false); /* etcd keeps serving; adopted at the next start */
  d->member = NULL;
}

/* POST /v1/cluster/{init,join,members}. init and join restart the daemon
 * in cluster mode once answered. */
static void *reexec_soon(void *arg) {
  (void)arg;
  usleep(300 * 1000); /* let the answer go out */
  kill(getpid(), SIGUSR1);
  return NULL;
}

static int api_cluster_setup(void *data, const char *what, json_t *body, json_t **out,
                             struct nc_errinfo *err) {
  struct daemon *d = data;
  if (strcmp(what, "members") == 0) {
    if (!d->shared)
      return nc_errinfo_set(err, 404, "not_clustered", NULL, "this node is not in a cluster");
    return nc_cluster_members_add(d->cfg.data_dir, body, out, err);
  }
  if (d->shared)
    return nc_errinfo_set(err, 409, "conflict", NULL, "this node is already in a cluster");
  if (d->cfg.store[0])
    return nc_errinfo_set(err, 409, "conflict", NULL,
                          "this node's store is set by configuration (store = ...); remove "
                          "it to let cluster %s manage the store",
                          what);
  if (!d->cfg.listen_host[0] || d->cfg.listen_port == 0 ||
      strcmp(d->cfg.listen_host, "0.0.0.0") == 0 || strcmp(d->cfg.listen_host, "::") == 0)
    return nc_errinfo_set(err, 422, "unprocessable", NULL,
                          "a cluster node needs `listen = ADDRESS:PORT` with the address other "
                          "nodes reach its API on (not 0.0.0.0, not port 0); set it and "
                          "restart first");
  char api[300];
  snprintf(api, sizeof api, strchr(d->cfg.listen_host, ':') ? "[%s]:%d" : "%s:%d",
           d->cfg.listen_host, d->cfg.listen_port);
  struct nc_cluster_setup cs = {.data_dir = d->cfg.data_dir, .node_name = d->cfg.node_name,
                                .api_addr = api, .local = d->store,
                                .cluster_token = d->cluster_token[0] ? d->cluster_token : NULL};
  int rc = strcmp(what, "init") == 0 ? nc_cluster_init(&cs, body, out, err)
                                     : nc_cluster_join(&cs, body, out, err);
  if (rc == 0) {
    pthread_t t;
    if (pthread_create(&t, NULL, reexec_soon, NULL) == 0)
      pthread_detach(t);
  }
  return rc;
}

/* ---- cluster ------------------------------------------------------------ */

static json_t *parse_labels(const char *s) {
  json_t *o = json_object();
  char buf[NC_CONFIG_VALUE_MAX + 1];
  snprintf(buf, sizeof buf, "%s", s);
  char *save = NULL;
  for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(kv, '=');
    if (!eq)
      continue;
    *eq = '\0';
    json_object_set_new(o, kv, json_string(eq + 1));
  }
  return o;
}

static bool node_ready(void *data) {
  struct daemon *d = data;
  json_t *r = nc_boot_readiness(d->boot);
  bool ready = json_is_true(json_object_get(r, "ready"));
  json_decref(r);
  return ready;
}

static int c_cluster(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  if (!d->shared) {
    snprintf(err, len, "single node (the store is SQLite)");
    return 0;
  }
  if (!d->cfg.listen_host[0] || d->cfg.listen_port == 0 ||
      strcmp(d->cfg.listen_host, "0.0.0.0") == 0 || strcmp(d->cfg.listen_host, "::") == 0) {
    snprintf(err, len, "a cluster node needs `listen = ADDRESS:PORT` with the address other "
                       "nodes reach it on (not 0.0.0.0 and not port 0)");
    return -EINVAL;
  }
  if (!d->cluster_token[0]) {
    snprintf(err, len, "a cluster node needs cluster_token_file (the token every node of the "
                       "cluster shares; docs/cluster.md)");
    return -EINVAL;
  }
  char api[300];
  if (strchr(d->cfg.listen_host, ':'))
    snprintf(api, sizeof api, "[%s]:%d", d->cfg.listen_host, d->cfg.listen_port);
  else
    snprintf(api, sizeof api, "%s:%d", d->cfg.listen_host, d->cfg.listen_port);
  json_t *labels = parse_labels(d->cfg.labels);
  struct nc_cluster_config cc = {
      .store = d->shared,
      .vmm = d->vmm,
      .node_store = d->store,
      .node_name = d->cfg.node_name,
      .api_addr = api,
      .dwcp_host = d->cfg.dwcp_host[0] ? d->cfg.dwcp_host : d->cfg.listen_host,
      .data_dir = d->cfg.data_dir,
      .token = d->cluster_token,
      .zone = d->cfg.zone,
      .rack = d->cfg.rack,
      .labels = labels,
      .control_plane = d->control_plane,
      .lease_ttl_ms = d->cfg.lease_ttl_ms,
      .spread = strcmp(d->cfg.placement, "spread") == 0,
      .rebalance = d->cfg.rebalance != 0,
      .rebalance_threshold = d->cfg.rebalance_threshold_pct / 100.0,
      .self_exe = d->self_exe,
      .ready = node_ready,
      .ready_data = d,
  };
  int rc = nc_cluster_start(&cc, &d->cluster);
  json_decref(labels);
  if (rc)
    snprintf(err, len, "cannot join the cluster: %s", nc_strerror(rc));
  return rc;
}

static void s_cluster(void *ctx) {
  struct daemon *d = ctx;
  nc_cluster_stop(d->cluster);
  d->cluster = NULL;
}

static int c_hv(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  if (hv_noop(d)) {
    int rc = nc_hv_noop_new(&d->hv);
    if (rc)
      snprintf(err, len, "cannot set up the noop driver: %s", nc_strerror(rc));
    else
      snprintf(err, len, "noop driver: no guests run (control-plane benchmarks only)");
    return rc;
  }
  struct nc_hv_qemu_config qc = {.qemu_path = d->cfg.qemu, .qemu_img_path = d->cfg.qemu_img};
  int rc = nc_hv_qemu_new(&qc, &d->hv);
  if (rc)
    snprintf(err, len, "cannot set up the QEMU driver: %s", nc_strerror(rc));
  return rc;
}

static void s_hv(void *ctx) {
  struct daemon *d = ctx;
  if (d->hv)
    d->hv->ops->destroy(d->hv);
  d->hv = NULL;
}

#ifdef NC_WITH_MIGRATE
/* The node's DWCP identity: an Ed25519 key and a self-signed certificate in
 * the data dir, made at first start and reused; peers pin its fingerprint.
 * Not required: without it a node can still migrate with dwcp_tls = off. */
static int c_node_key(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  int rc = nc_tls_new(d->cfg.data_dir, d->cfg.node_name, &d->tls, err, len);
  if (rc)
    return rc;
  nc_tls_fp_to_hex(nc_tls_fingerprint(d->tls), d->tls_fp);
  nc_info("boot", "DWCP node key %s/node.key, certificate SHA-256 %s (dwcp_tls = %s)",
          d->cfg.data_dir, d->tls_fp, d->cfg.dwcp_tls);
  return 0;
}

static void s_node_key(void *ctx) {
  struct daemon *d = ctx;
  nc_tls_free(d->tls);
  d->tls = NULL;
}
#endif

/* ---- services ----------------------------------------------------------- */

static int disk_overlay(void *data, const char *base, const char *overlay) {
  struct daemon *d = data;
  if (hv_noop(d)) { /* nothing reads it: an empty placeholder, no qemu-img */
    int fd = open(overlay, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
      return -errno;
    close(fd);
    return 0;
  }
  return nc_hv_qemu_create_overlay(d->cfg.qemu_img, base, overlay);
}

static int c_vmm(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  int rc = nc_events_new(&d->events);
  if (rc == 0)
    rc = nc_ops_new(d->store, nc_clock_system(), nc_rand_system(), d->events, &d->ops);
  if (rc == 0)
    rc = nc_ops_recover(d->ops);
  if (rc) {
    snprintf(err, len, "cannot load operations: %s", nc_strerror(rc));
    return rc;
  }
  struct nc_vmm_config vc = {
      .data_dir = d->cfg.data_dir,
      .node_name = d->cfg.node_name,
      .store = d->store,
      .hv = d->hv,
      .disk = {1, d, disk_overlay},
      .clock = nc_clock_system(),
      .rand = nc_rand_system(),
      .metrics = d->metrics,
      .events = d->events,
      .ops = d->ops,
      .accel = d->accel,
      .reconcile_interval_ms = d->cfg.reconcile_interval_ms,
      .stop_timeout_ms = d->cfg.stop_timeout_s * 1000,
#ifdef NC_WITH_MIGRATE
      .dwcp_tls = d->cfg.dwcp_tls,
      .dwcp_fingerprint = d->tls ? d->tls_fp : NULL,
#endif
  };
  rc = nc_vmm_new(&vc, &d->vmm);
  if (rc == 0)
    rc = nc_vmm_start(d->vmm);
  if (rc)
    snprintf(err, len, "cannot start the VM manager: %s", nc_strerror(rc));
  return rc;
}

static void s_vmm(void *ctx) {
  struct daemon *d = ctx;
  nc_vmm_free(d->vmm); /* waits for operation threads, which publish events */
  d->vmm = NULL;
  nc_ops_free(d->ops);
  d->ops = NULL;
  nc_events_free(d->events);
  d->events = NULL;
}

#ifdef NC_WITH_MIGRATE
static int c_migrate(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  if (hv_noop(d)) { /* migration drives QEMU over QMP */
    snprintf(err, len, "live migration needs hypervisor = qemu");
    return -ENOTSUP;
  }
  if (d->cfg.page_cache_bytes > 0) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/pcache", d->cfg.data_dir);
    int rc = nc_pcache_open(dir, d->cfg.page_cache_bytes, &d->pcache);
    if (rc)
      nc_warn("migrate", "page cache %s unavailable (%s); migrating without it", dir,
              nc_strerror(rc));
  }
  const char *host = d->cfg.dwcp_host[0] ? d->cfg.dwcp_host
                     : d->cfg.listen_host[0] && strcmp(d->cfg.listen_host, "0.0.0.0") != 0 &&
                             strcmp(d->cfg.listen_host, "::") != 0
                         ? d->cfg.listen_host
                         : "127.0.0.1";
  if (host != d->cfg.dwcp_host) {
    if (strlen(host) >= sizeof d->cfg.dwcp_host) {
      snprintf(err, len, "the listen address is too long to serve as the DWCP address");
      return -EINVAL;
    }
    memmove(d->cfg.dwcp_host, host, strlen(host) + 1);
  }
  enum nc_migrate_tls tls_mode = strcmp(d->cfg.dwcp_tls, "on") == 0    ? NC_MIGRATE_TLS_ON
                                 : strcmp(d->cfg.dwcp_tls, "off") == 0 ? NC_MIGRATE_TLS_OFF
                                                                       : NC_MIGRATE_TLS_AUTO;
  if (!d->tls && tls_mode != NC_MIGRATE_TLS_OFF) {
    snprintf(err, len,
             "no DWCP node key (see the node-key component): migrations need one with "
             "dwcp_tls = %s; fix the key or set dwcp_tls = off",
             d->cfg.dwcp_tls);
    return -ENOKEY;
  }
  struct nc_migrate_config mc = {
      .vmm = d->vmm,
      .pcache = d->pcache,
      .metrics = d->metrics,
      .node_name = d->cfg.node_name,
      .dwcp_host = d->cfg.dwcp_host,
      .peer_token = d->cluster_token[0] ? d->cluster_token : NULL,
      .tls = d->tls,
      .tls_mode = tls_mode,
      .claim = d->cluster ? nc_cluster_claim : NULL,
      .release = d->cluster ? nc_cluster_release : NULL,
      .claim_data = d->cluster,
  };
  int rc = nc_migrate_new(&mc, &d->migrate);
  if (rc)
    snprintf(err, len, "cannot start live migration: %s", nc_strerror(rc));
  return rc;
}

static void s_migrate(void *ctx) {
  struct daemon *d = ctx;
  nc_migrate_free(d->migrate);
  d->migrate = NULL;
  nc_pcache_close(d->pcache);
  d->pcache = NULL;
}

static int api_migrate_start(void *data, const char *name, json_t *body, json_t **out,
                             struct nc_errinfo *err) {
  return nc_migrate_start(data, name, body, out, err);
}

static int api_migrate_incoming(void *data, json_t *body, json_t **out,
                                struct nc_errinfo *err) {
  return nc_migrate_incoming(data, body, out, err);
}
#endif

static json_t *readiness(void *data) {
  struct daemon *d = data;
  return nc_boot_readiness(d->boot);
}

static int c_api(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  char sock[1100];
  snprintf(sock, sizeof sock, "%s/api.sock", d->cfg.data_dir);
  struct nc_api_config ac = {
      .vmm = d->vmm,
      .ops = d->ops,
      .events = d->events,
      .metrics = d->metrics,
      .store = d->store,
      .unix_path = sock,
      .listen_host = d->cfg.listen_host[0] ? d->cfg.listen_host : NULL,
      .listen_port = d->cfg.listen_port,
      .token = d->token,
      .cluster_token = d->cluster_token[0] ? d->cluster_token : NULL,
      .readiness = readiness,
      .readiness_data = d,
      .cluster = d->cluster,
      .cluster_setup = api_cluster_setup,
      .cluster_setup_data = d,
#ifdef NC_WITH_MIGRATE
      .migrate_start = api_migrate_start,
      .migrate_incoming = api_migrate_incoming,
      .migrate_data = d->migrate,
#endif
  };
  int rc = nc_api_start(&ac, &d->api);
  if (rc) {
    snprintf(err, len, "cannot serve the API on %s%s%s: %s", sock,
             d->cfg.listen_host[0] ? " and " : "", d->cfg.listen_host, nc_strerror(rc));
    return rc;
  }
  if (d->cfg.listen_host[0])
    nc_info("api", "listening on %s:%d (bearer token in %s/api.token) and %s",
            d->cfg.listen_host, nc_api_tcp_port(d->api), d->cfg.data_dir, sock);
  else
    nc_info("api", "listening on %s", sock);
  return 0;
}

static void s_api(void *ctx) {
  struct daemon *d = ctx;
  nc_api_stop(d->api); /* closes the event bus so streams end; the bus lives on */
  d->api = NULL;
}

/* ---- accelerator probe (optional, in the background) --------------------- */

/* The probe's verdict is cached in <data_dir>/kvm-probe, keyed by what
 * could change it (QEMU version, the probe kernel and its mtime, the KVM
 * device), so a restart does not spend seconds of CPU re-proving it. */
static void probe_key(struct daemon *d, const char *kernel, char *out, size_t len) {
  struct stat ks = {0}, kv = {0};
  stat(kernel, &ks);
  stat("/dev/kvm", &kv);
  snprintf(out, len, "qemu=%d.%d kernel=%s mtime=%lld kvm=%llx", d->qemu_major, d->qemu_minor,
           kernel, (long long)ks.st_mtime, (unsigned long long)kv.st_rdev);
}

static int probe_cached(struct daemon *d, const char *key) {
  char path[1100], buf[1400];
  snprintf(path, sizeof path, "%s/kvm-probe", d->cfg.data_dir);
  FILE *f = fopen(path, "re");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  size_t kl = strlen(key);
  if (n < kl + 2 || strncmp(buf, key, kl) != 0 || buf[kl] != '\n')
    return -1;
  return buf[kl + 1] == '1' ? 1 : 0;
}

static void probe_store(struct daemon *d, const char *key, int works) {
  char path[1100];
  snprintf(path, sizeof path, "%s/kvm-probe", d->cfg.data_dir);
  FILE *f = fopen(path, "we");
  if (!f)
    return;
  fprintf(f, "%s\n%d\n", key, works == 1);
  fclose(f);
}

/* Boots the first registered image's kernel under KVM with a deadline and
 * waits for the kernel to hand over to userspace ("Run /init as init
 * process"): the failures seen on nested KVM hang before that.
 * Until it answers, VMs start on TCG; it never delays readiness. */
static void *probe_main(void *arg) {
  struct daemon *d = arg;
  json_t *imgs = nc_image_list_json(d->store);
  json_t *first = imgs ? json_array_get(json_object_get(imgs, "images"), 0) : NULL;
  const char *kernel = first ? json_string_value(json_object_get(first, "kernel")) : NULL;
  const char *initrd = first ? json_string_value(json_object_get(first, "initrd")) : NULL;
  if (!kernel || !kernel[0]) {
    nc_boot_set_status(d->boot, "accel-probe", "degraded",
                       "no image registered to probe KVM with; using TCG (restart after "
                       "registering an image to probe again)");
  } else {
    char key[1200];
    probe_key(d, kernel, key, sizeof key);
    int works = probe_cached(d, key);
    if (works < 0) {
      works = nc_hv_qemu_probe_kvm(d->cfg.qemu, kernel, initrd && initrd[0] ? initrd : NULL,
                                   "Run /", d->cfg.kvm_probe_timeout_ms);
      probe_store(d, key, works);
    }
    if (works == 1) {
      nc_vmm_set_accel(d->vmm, NC_ACCEL_KVM);
      nc_boot_set_status(d->boot, "accel-probe", "up", "KVM boots a guest: using kvm");
      nc_info("boot", "KVM probe: a guest booted under KVM; new VMs use kvm");
    } else {
      nc_boot_set_status(d->boot, "accel-probe", "degraded",
                         "KVM could not boot a guest here; using TCG (software emulation)");
      nc_info("boot", "KVM probe: no guest booted under KVM within %d ms; new VMs use tcg",
              d->cfg.kvm_probe_timeout_ms);
    }
  }
  json_decref(imgs);
  return NULL;
}

static int c_probe(void *ctx, char *err, size_t len) {
  struct daemon *d = ctx;
  if (hv_noop(d)) {
    snprintf(err, len, "not probed: hypervisor = noop runs no guests");
    return 0;
  }
  if (d->cfg.accel != NC_ACCEL_PREF_AUTO) {
    snprintf(err, len, "accel pinned to %s by configuration",
             d->cfg.accel == NC_ACCEL_PREF_KVM ? "kvm" : "tcg");
    return 0;
  }
  if (access("/dev/kvm", R_OK | W_OK) != 0) {
    snprintf(err, len, "/dev/kvm is not usable; using TCG (software emulation)");
    return -ENODEV;
  }
  if (pthread_create(&d->probe_thread, NULL, probe_main, d) != 0)
    return -EAGAIN;
  d->probe_running = true;
  snprintf(err, len, "probing KVM in the background; TCG until it answers");
  return 0;
}

static void s_probe(void *ctx) {
  struct daemon *d = ctx;
  if (d->probe_running)
    pthread_join(d->probe_thread, NULL); /* bounded by kvm_probe_timeout_ms */
  d->probe_running = false;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: novacrond [--config FILE] [--data-dir DIR] [--listen HOST:PORT]\n"
          "                 [--node-name NAME] [--log-level debug|info|warn|error]\n"
          "                 [--accel auto|tcg|kvm] [--qemu PATH] [--hypervisor qemu|noop]\n"
          "                 [--cluster-token-file FILE] [--store URI]\n"
          "                 [--dwcp-tls auto|on|off] [--version]\n"
          "\n"
          "Flags override the config file (default %s, if it exists).\n"
          "The API is always on <data-dir>/api.sock; --listen adds a TCP listener that\n"
          "requires the bearer token in <data-dir>/api.token.\n",
          DEFAULT_CONFIG);
}

static int parse_args(struct daemon *d, int argc, char **argv) {
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},   {"data-dir", required_argument, NULL, 'd'},
      {"cluster-token-file", required_argument, NULL, 't'},
      {"store", required_argument, NULL, 's'},
      {"dwcp-tls", required_argument, NULL, 'T'},
      {"listen", required_argument, NULL, 'l'},   {"node-name", required_argument, NULL, 'n'},
      {"log-level", required_argument, NULL, 'v'}, {"accel", required_argument, NULL, 'a'},
      {"qemu", required_argument, NULL, 'q'},     {"version", no_argument, NULL, 'V'},
      {"hypervisor", required_argument, NULL, 'H'},
      {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
  };
  const char *config = NULL;
  bool explicit_config = false;
  /* First pass: find --config, so flags can override the file. */
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c == 'c') {
      config = optarg;
      explicit_config = true;
    } else if (c == 'V') {
      printf("novacrond %s\n", NC_VERSION);
      exit(0);
    } else if (c == 'h') {
      usage(stdout);
      exit(0);
    } else if (c == '?') {
      fprintf(stderr, "novacrond: unknown or incomplete option \"%s\"\n", argv[optind - 1]);
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "novacrond: unexpected argument \"%s\"\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  nc_config_defaults(&d->cfg);
  char err[600];
  if (!config && access(DEFAULT_CONFIG, F_OK) == 0)
    config = DEFAULT_CONFIG;
  if (config && nc_config_load_file(&d->cfg, config, err, sizeof err) != 0) {
    fprintf(stderr, "novacrond: config: %s\n", err);
    return 2;
  }
  (void)explicit_config;
  optind = 1;
  static const char *const keys[] = {['d'] = "data_dir", ['l'] = "listen",
                                     ['n'] = "node_name", ['v'] = "log_level",
                                     ['a'] = "accel",    ['q'] = "qemu",
                                     ['t'] = "cluster_token_file", ['s'] = "store",
                                     ['T'] = "dwcp_tls", ['H'] = "hypervisor"};
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c == 'c' || c == 'V' || c == 'h')
      continue;
    if (nc_config_set(&d->cfg, keys[c], optarg, err, sizeof err) != 0) {
      fprintf(stderr, "novacrond: %s\n", err);
      return 2;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  /* The fence guard (cluster/fence.h) is this same binary in its own
   * process, started by the cluster component. */
  if (argc == 3 && strcmp(argv[1], "--fence-guard") == 0)
    return nc_fence_guard_main(argv[2]) == 0 ? 0 : 1;
  struct daemon d = {.lock_fd = -1};
  ssize_t sl = readlink("/proc/self/exe", d.self_exe, sizeof d.self_exe - 1);
  if (sl > 0)
    d.self_exe[sl] = '\0';
  d.argv = argv;
  int rc = parse_args(&d, argc, argv);
  if (rc)
    return rc;

  /* Signals are taken synchronously by this thread; block them everywhere
   * before any thread starts. QEMU children are detached: no SIGCHLD. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1); /* internal: restart in place (cluster init/join) */
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  if (nc_boot_new(&d, &d.boot) != 0)
    return 1;
  static const struct nc_component comps[] = {
      {"logging", NC_PHASE_PREINIT, true, c_logging, NULL},
      {"qemu", NC_PHASE_PREINIT, true, c_qemu, NULL},
      {"accel", NC_PHASE_PREINIT, true, c_accel, NULL},
      {"metrics", NC_PHASE_PREINIT, true, c_metrics, NULL},
      {"data-dir", NC_PHASE_CORE, true, c_data_dir, s_data_dir},
      {"api-token", NC_PHASE_CORE, true, c_token, NULL},
      {"cluster-token", NC_PHASE_CORE, true, c_cluster_token, NULL},
      {"store", NC_PHASE_CORE, true, c_store, s_store},
      {"hypervisor", NC_PHASE_CORE, true, c_hv, s_hv},
#ifdef NC_WITH_MIGRATE
      {"node-key", NC_PHASE_CORE, false, c_node_key, s_node_key},
#endif
      {"vm-manager", NC_PHASE_SERVICES, true, c_vmm, s_vmm},
      {"cluster", NC_PHASE_SERVICES, true, c_cluster, s_cluster},
#ifdef NC_WITH_MIGRATE
      {"migration", NC_PHASE_SERVICES, false, c_migrate, s_migrate},
#endif
      {"api", NC_PHASE_SERVICES, true, c_api, s_api},
      {"accel-probe", NC_PHASE_POSTINIT, false, c_probe, s_probe},
  };
  for (size_t i = 0; i < sizeof comps / sizeof comps[0]; i++)
    nc_boot_register(d.boot, &comps[i]);

  char err[1024];
  rc = nc_boot_run(d.boot, err, sizeof err);
  if (rc) {
    fprintf(stderr, "novacrond: cannot start: %s\n", err);
    nc_boot_free(d.boot);
    nc_metrics_free(d.metrics);
    return 1;
  }
  nc_info("boot", "novacrond %s ready in %.3f s (node %s, data dir %s, accel %s)", NC_VERSION,
          nc_boot_ready_seconds(d.boot), d.cfg.node_name, d.cfg.data_dir,
          d.accel == NC_ACCEL_KVM ? "kvm" : "tcg");

  int sig = 0;
  for (;;) {
    sigwait(&set, &sig);
    if (sig == SIGHUP) {
      nc_info("main", "SIGHUP: configuration reload is not supported; restart to apply");
      continue;
    }
    break;
  }
  if (sig == SIGUSR1)
    nc_info("main", "restarting in cluster mode; VMs keep running");
  else
    nc_info("main", "signal %d: shutting down; VMs keep running", sig);
  /* The probe must finish before the VM manager it updates goes away;
   * stop in reverse start order does exactly that. */
  nc_boot_shutdown(d.boot);
  nc_boot_free(d.boot);
  nc_metrics_free(d.metrics);
  if (sig == SIGUSR1) {
    /* Same pid, same arguments; every descriptor of ours is close-on-exec. */
    execv(d.self_exe, d.argv);
    fprintf(stderr, "novacrond: cannot restart itself (%s): %s; start it again\n", d.self_exe,
            strerror(errno));
    return 1;
  }
  return 0;
}
