#include "migrate/migrate.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dwcp/amst.h"
#include "dwcp/bootmap.h"
#include "dwcp/hde.h"
#include "dwcp/qstream.h"
#include "dwcp/tls.h"
#include "hv/qemu.h"
#include "hv/qmp.h"
#include "migrate/pace.h"
#include "migrate/peer.h"
#include "migrate/relay.h"
#include "migrate/sockio.h"
#include "obs/metrics.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/sync.h"
#include "vm/manager.h"
#include "vm/ops.h"
#include "vm/spec.h"

/* AMST message types. Layouts (big endian; changing them breaks
 * compatibility between nodes):
 *   DATA        one HDE frame (nc_hde_frame_pack: the records below,
 *               compressed together; at most BATCH_MAX plain bytes) of
 *               records, each  u8 kind | body
 *                 kind 1 OPAQUE: u32 len | len stream bytes
 *                 kind 2 PAGE:   u64 key (block << 48 | offset) | u16 len | HDE token
 *   END         empty: the source stream is complete
 *   COMMIT_ACK  empty: the source handed the VM over
 *   ABORT       UTF-8 reason
 *   PROBE       filler bytes for the bandwidth probe
 *   SUMMARY     u64 session | u64 new_pages_quota | u64 delta_cache_bytes |
 *               u64 summary_len (at most SUMMARY_MAX) | u64 held_len
 *               (held_len: 0, or the bitmap of nc_hde_rec_match when the
 *               destination's record of this VM has the digest the source
 *               sent as "prev_record"; then both use it, see hde.h)
 *   SUMMARY_PART  the next bytes of the page-cache summary (nc_pcache_summary,
 *               minus the record's hashes when held_len > 0) and then of
 *               the held bitmap, SUMMARY_CHUNK at most each, until
 *               summary_len + held_len have come
 *               (16 bytes per cached page: a full 512M cache is 2 MiB, more
 *               than one AMST message may carry)
 *   COMMIT_REQ  empty: the destination's QEMU has the whole state
 *   RESUMED     empty: the destination runs the guest */
enum {
  MSG_DATA = NC_AMST_TYPE_USER,
  MSG_END,
  MSG_COMMIT_ACK,
  MSG_ABORT,
  MSG_PROBE,
  MSG_SUMMARY = NC_AMST_TYPE_USER + 16,
  MSG_COMMIT_REQ,
  MSG_RESUMED,
  MSG_SUMMARY_PART,
};

#define REC_OPAQUE 1
#define REC_PAGE 2
#define BATCH_MAX (256 * 1024)
#define OPAQUE_CHUNK (64 * 1024)
#define READ_CHUNK (256 * 1024)
#define OUT_MAX (256 * 1024) /* rebuilt stream written to QEMU per syscall */
#define PROBE_BYTES (1024 * 1024)
#define SUMMARY_CHUNK (512 * 1024)
#define SUMMARY_MAX (64u << 20) /* 4M cached pages: a 16 GiB page cache */
#define REC_FILES_MAX 64 /* per-VM records kept in <page cache>/vm/ */
#define SEED_SHARE 8     /* seeding may fill at most 1/8 of the page cache */
#define PEER_TIMEOUT_MS 15000
#define ACCEPT_TIMEOUT_MS 30000
#define COMMIT_TIMEOUT_MS 60000
#define DEFAULT_DELTA_CACHE (64ULL << 20)
#define DEFAULT_MAX_DOWNTIME_MS 300
#define DEFAULT_CONVERGE_TIMEOUT_S 300
#define QMP_TIMEOUT_MS 10000
/* Bytes in flight between the daemons at most (pace.h sizes the window
 * below that as the link allows). */
#define WINDOW_BYTES NC__PACE_WINDOW_MAX

#define STREAM_FLY_MAX 1024 /* DATA frames tracked in flight (stream_cap) */
#define ACTIVE_MAX 64
#define SEEDED_MAX 16

/* A boot file this daemon seeded into its page cache (nc_hde_seed_file). */
struct seeded {
  char path[1024];
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
};

struct nc_migrate {
  struct nc_migrate_config cfg;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int threads;
  bool stopping;
  struct nc_amst *active[ACTIVE_MAX]; /* sessions to abort at shutdown */
  struct nc_amst_listener *waiting[ACTIVE_MAX]; /* listeners to abort at shutdown */
  struct nc_metric *m_total, *m_bytes_raw, *m_bytes_wire, *m_downtime;
  struct seeded seeded[SEEDED_MAX]; /* under mu */
  int nseeded;
};

/* ---- small helpers ------------------------------------------------------ */

static void put_be16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static void put_be32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint64_t get_be(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

static int64_t now_ms(void) { return nc_mono_ms(nc_clock_system()); }

/* CPU time of the calling thread, for the logs (where the CPU goes). */
static int64_t thread_cpu_ms(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
    return 0;
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* QMP on the VM's QEMU, under the VM's hypervisor lock. */
struct qmp_call {
  const char *cmd;
  json_t *args; /* stolen */
  json_t *ret;
  char desc[256];
};

static int do_qmp(struct nc_hv_vm *hv, void *arg) {
  struct qmp_call *c = arg;
  if (!hv)
    return -ESRCH;
  struct nc_qmp *q = nc_hv_qemu_vm_qmp(hv);
  if (!q)
    return -ENOTCONN;
  int rc = nc_qmp_execute(q, c->cmd, c->args, QMP_TIMEOUT_MS, &c->ret);
  if (rc)
    snprintf(c->desc, sizeof c->desc, "%s", nc_qmp_error_desc(q));
  return rc;
}

static int qmp(struct nc_vmm_ext *x, const char *cmd, json_t *args, json_t **ret, char *desc,
               size_t dlen) {
  struct qmp_call c = {.cmd = cmd, .args = args};
  int rc = nc_vmm_ext_with_hv(x, do_qmp, &c);
  json_decref(args);
  if (desc)
    snprintf(desc, dlen, "%s", c.desc);
  if (ret)
    *ret = c.ret;
  else
    json_decref(c.ret);
  return rc;
}

static const char *run_state(struct nc_vmm_ext *x, char *buf, size_t len) {
  json_t *r = NULL;
  buf[0] = '\0';
  if (qmp(x, "query-status", NULL, &r, NULL, 0) == 0) {
    const char *s = json_string_value(json_object_get(r, "status"));
    snprintf(buf, len, "%s", s ? s : "");
  }
  json_decref(r);
  return buf;
}

/* Registers a live session so shutdown can abort it. */
static void track(struct nc_migrate *m, struct nc_amst *a, bool on) {
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

static void track_listener(struct nc_migrate *m, struct nc_amst_listener *l, bool on) {
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

static bool stopping(struct nc_migrate *m) {
  pthread_mutex_lock(&m->mu);
  bool s = m->stopping;
  pthread_mutex_unlock(&m->mu);
  return s;
}

/* Does the VM have our qcow2 disk node? */
static bool has_disk(struct nc_vmm_ext *x) {
  json_t *r = NULL;
  bool found = false;
  if (qmp(x, "query-named-block-nodes", NULL, &r, NULL, 0) == 0) {
    size_t i;
    json_t *n;
    json_array_foreach(r, i, n) {
      const char *name = json_string_value(json_object_get(n, "node-name"));
      if (name && strcmp(name, "disk0") == 0)
        found = true;
    }
  }
  json_decref(r);
  return found;
}


/* ---- per-VM records of the last migration (hde.h, nc_hde_rec) ----------
 * Kept with the page cache they refer to: <cache dir>/vm/<name>.rec, one
 * per VM that migrated to or from this node, at most REC_FILES_MAX files
 * (the oldest go first), each at most 24 bytes per guest page (3 MiB for
 * 512 MiB of guest). A record is only a hint: both ends use it only when
 * their digests agree, and every page built from it is hash-checked. */
static int rec_path(struct nc_migrate *m, const char *name, char *out, size_t len) {
  const char *dir = nc_pcache_dir(m->cfg.pcache);
  if (!dir)
    return -ENOENT;
  int n = snprintf(out, len, "%s/vm/%s.rec", dir, name);
  return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static struct nc_hde_rec *rec_load(struct nc_migrate *m, const char *name) {
  char path[1400];
  struct nc_hde_rec *r = NULL;
  if (rec_path(m, name, path, sizeof path) != 0)
    return NULL;
  int rc = nc_hde_rec_load(path, &r);
  if (rc && rc != -ENOENT)
    nc_warn("migrate", "vm \"%s\": ignoring the migration record %s (%s)", name, path,
            nc_strerror(rc));
  return r;
}

/* Removes the oldest records beyond REC_FILES_MAX. */
static void rec_prune(const char *vdir) {
  for (;;) {
    DIR *dp = opendir(vdir);
    if (!dp)
      return;
    int n = 0;
    char oldest[512] = "";
    struct timespec ot = {0, 0};
    struct dirent *de;
    while ((de = readdir(dp))) {
      size_t l = strlen(de->d_name);
      if (l < 5 || strcmp(de->d_name + l - 4, ".rec") != 0 || l >= sizeof oldest)
        continue;
      char p[2048];
      struct stat st;
      int pl = snprintf(p, sizeof p, "%s/%s", vdir, de->d_name);
      if (pl < 0 || (size_t)pl >= sizeof p || stat(p, &st) != 0)
        continue;
      n++;
      if (!oldest[0] || st.st_mtim.tv_sec < ot.tv_sec ||
          (st.st_mtim.tv_sec == ot.tv_sec && st.st_mtim.tv_nsec < ot.tv_nsec)) {
        ot = st.st_mtim;
        snprintf(oldest, sizeof oldest, "%s", de->d_name);
      }
    }
    closedir(dp);
    if (n <= REC_FILES_MAX || !oldest[0])
      return;
    char p[2048];
    int pl = snprintf(p, sizeof p, "%s/%s", vdir, oldest);
    if (pl < 0 || (size_t)pl >= sizeof p || unlink(p) != 0)
      return;
  }
}

static void rec_store(struct nc_migrate *m, const char *name, struct nc_hde_rec *r) {
  char path[1400], vdir[1400];
  const char *dir = nc_pcache_dir(m->cfg.pcache);
  if (!r || !dir || rec_path(m, name, path, sizeof path) != 0)
    return;
  int vl = snprintf(vdir, sizeof vdir, "%s/vm", dir);
  if (vl < 0 || (size_t)vl >= sizeof vdir || (mkdir(vdir, 0700) != 0 && errno != EEXIST))
    return;
  int rc = nc_hde_rec_save(r, path);
  if (rc)
    nc_warn("migrate", "vm \"%s\": cannot save the migration record %s (%s)", name, path,
            nc_strerror(rc));
  rec_prune(vdir);
}

static void hex16(const uint8_t in[16], char out[33]) {
  for (int i = 0; i < 16; i++)
    snprintf(out + 2 * i, 3, "%02x", in[i]);
}

/* Is host a loopback address (127.0.0.0/8, ::1, ::ffff:127.x)? Then
 * dwcp_tls = auto leaves TLS off. */
static bool is_loopback(const char *host) {
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, host, &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &a6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&a6) ||
           (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
  return false;
}

static const char *tls_mode_name(enum nc_migrate_tls t) {
  return t == NC_MIGRATE_TLS_ON ? "on" : t == NC_MIGRATE_TLS_OFF ? "off" : "auto";
}

/* Polls the disk mirror job: 1 ready, 0 not yet, <0 gone or failed. */
static int mirror_state(struct nc_vmm_ext *x, uint64_t *done, uint64_t *total) {
  json_t *r = NULL;
  int st = -ENOENT;
  if (qmp(x, "query-block-jobs", NULL, &r, NULL, 0) == 0) {
    size_t i;
    json_t *j;
    json_array_foreach(r, i, j) {
      const char *dev = json_string_value(json_object_get(j, "device"));
      if (!dev || strcmp(dev, "mig-mirror") != 0)
        continue;
      *done = (uint64_t)json_integer_value(json_object_get(j, "offset"));
      *total = (uint64_t)json_integer_value(json_object_get(j, "len"));
      const char *status = json_string_value(json_object_get(j, "status"));
      st = json_is_true(json_object_get(j, "ready")) ? 1 : 0;
      if (status && (strcmp(status, "concluded") == 0 || strcmp(status, "aborting") == 0))
        st = -EIO;
    }
  }
  json_decref(r);
  return st;
}

/* Ends the mirror (on a ready job, cancel leaves the target a consistent
 * copy: the job ends only once the target acknowledged every write; with
 * force it just stops) and, with del, removes the NBD client node. */
static void mirror_end(struct nc_vmm_ext *x, bool force, bool del) {
  qmp(x, "block-job-cancel", json_pack("{s:s, s:b}", "device", "mig-mirror", "force", force),
      NULL, NULL, 0);
  for (int i = 0; i < 300; i++) {
    uint64_t a, b;
    int st = mirror_state(x, &a, &b);
    if (st == -ENOENT)
      break;
    if (st == -EIO)
      qmp(x, "job-dismiss", json_pack("{s:s}", "id", "mig-mirror"), NULL, NULL, 0);
    /* On the hand-over the guest is paused: poll tightly at first. */
    usleep(i < 50 ? 2 * 1000 : 20 * 1000);
  }
  if (del)
    qmp(x, "blockdev-del", json_pack("{s:s}", "node-name", "mig-nbd"), NULL, NULL, 0);
}

static void thread_done(struct nc_migrate *m) {
  pthread_mutex_lock(&m->mu);
  m->threads--;
  pthread_cond_broadcast(&m->cv);
  pthread_mutex_unlock(&m->mu);
}

static int spawn(struct nc_migrate *m, void *(*fn)(void *), void *arg) {
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
    thread_done(m);
    return -rc;
  }
  return 0;
}

/* ---- source ------------------------------------------------------------- */

static int get_pid(struct nc_hv_vm *hv, void *arg) {
  if (!hv)
    return -ESRCH;
  *(pid_t *)arg = nc_hv_qemu_vm_pid(hv);
  return 0;
}

/* Calls fn with each -kernel and -initrd file our QEMU for this VM was
 * started with (the image registered here under the VM's image name),
 * read from its command line. */
static void boot_files(struct nc_vmm_ext *x, void (*fn)(void *arg, bool kernel, const char *path),
                       void *arg) {
  pid_t pid = 0;
  if (nc_vmm_ext_with_hv(x, get_pid, &pid) != 0 || pid <= 0)
    return;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
  FILE *f = fopen(path, "rbe");
  if (!f)
    return;
  static const size_t cap = 64 * 1024;
  char *buf = malloc(cap + 1);
  size_t n = buf ? fread(buf, 1, cap, f) : 0;
  fclose(f);
  if (!buf)
    return;
  buf[n] = '\0';
  int next = 0; /* 1: -kernel, 2: -initrd */
  for (size_t i = 0; i < n;) {
    const char *a = buf + i;
    size_t l = strlen(a);
    if (next && a[0] == '/')
      fn(arg, next == 1, a);
    next = strcmp(a, "-kernel") == 0 ? 1 : strcmp(a, "-initrd") == 0 ? 2 : 0;
    i += l + 1;
  }
  free(buf);
}

struct src {
  struct nc_migrate *m;
  struct nc_vmm_ext *x;
  char name[NC_NAME_MAX + 1];
  char to[256];
  char to_host[256];
  char token[256];
  char mode[16];
  int streams;
  int max_downtime_ms;
  int converge_timeout_s;
  uint8_t session[16];
  int dwcp_port;
  int nbd_port;  /* the destination's NBD export of the disk, 0 = no disk */
  bool mirroring;
  struct nc__relay *relay; /* the disk's NBD connection (relay.h) */
  char relay_sock[1200];
  bool tls;                   /* DWCP and the disk relay over TLS 1.3 */
  uint8_t peer_fp[NC_TLS_FP_LEN]; /* the destination's certificate, pinned */

  struct nc_amst *a;
  struct nc_hde_enc *enc;
  struct nc_hde_rec *prev; /* our record of this VM's last migration, or NULL */
  struct nc_bootmap *boot; /* the VM's kernel file, for DELTA_BASE, or NULL */
  int64_t ram_block;       /* the parser's index of "pc.ram", -1 unknown */
  struct nc_qs_parser *qs;
  uint8_t *batch;
  size_t blen;
  uint8_t *frame; /* nc_hde_frame_bound(BATCH_MAX) */
  int listen_fd, qemu_fd;

  /* pump thread */
  pthread_t pump;
  bool pump_started;
  int pump_rc;
  char pump_err[256];
  uint64_t raw_bytes; /* read from QEMU */
  /* Fast paths: QEMU stream bytes in flight, at most NC__PACE_FAST_STREAM
   * (see flush_batch). */
  bool stream_cap;
  uint64_t batch_raw; /* stream bytes the batch being filled stands for */
  uint64_t raw_inflight;
  struct {
    uint64_t end; /* nc_amst_admitted once the frame was sent */
    uint64_t raw;
  } fly[STREAM_FLY_MAX];
  unsigned fly_head, fly_n;
  bool pump_done;
  int64_t eof_ms; /* when QEMU's stream ended */
  int64_t pump_cpu_ms; /* the pump thread's CPU: read, parse, encode, compress */
  pthread_mutex_t mu;
};

/* On a fast path the destination's loading is the bottleneck, and a frame
 * of 1-byte PREV tokens can stand for 80 MiB of QEMU's stream: a window of
 * wire bytes let a return leg put 120 MiB in flight, which the destination
 * took 350-500 ms to load after the guest stopped. So before a frame goes
 * out, the frames the destination has not acknowledged may stand for at
 * most NC__PACE_FAST_STREAM of stream (the oldest are waited for). */
static int stream_room(struct src *s) {
  while (s->fly_n > 0 && (s->raw_inflight + s->batch_raw > NC__PACE_FAST_STREAM ||
                          s->fly_n == STREAM_FLY_MAX)) {
    int rc = nc_amst_wait_acked(s->a, s->fly[s->fly_head].end, PEER_TIMEOUT_MS);
    if (rc)
      return rc;
    s->raw_inflight -= s->fly[s->fly_head].raw;
    s->fly_head = (s->fly_head + 1) % STREAM_FLY_MAX;
    s->fly_n--;
  }
  return 0;
}

static int flush_batch(struct src *s) {
  if (s->blen == 0)
    return 0;
  size_t n = 0;
  int rc = nc_hde_frame_pack(s->enc, s->batch, s->blen, s->frame,
                             nc_hde_frame_bound(BATCH_MAX), &n);
  if (rc == 0 && s->stream_cap)
    rc = stream_room(s);
  if (rc == 0)
    rc = nc_amst_send(s->a, MSG_DATA, s->frame, n);
  if (rc == 0 && s->stream_cap) {
    unsigned i = (s->fly_head + s->fly_n++) % STREAM_FLY_MAX;
    s->fly[i].end = nc_amst_admitted(s->a);
    s->fly[i].raw = s->batch_raw;
    s->raw_inflight += s->batch_raw;
  }
  s->blen = 0;
  s->batch_raw = 0;
  return rc;
}

static int room(struct src *s, size_t need) {
  if (s->blen + need > BATCH_MAX)
    return flush_batch(s);
  return 0;
}

static int sink_opaque(void *data, const uint8_t *bytes, size_t n) {
  struct src *s = data;
  while (n > 0) {
    size_t k = n < OPAQUE_CHUNK ? n : OPAQUE_CHUNK;
    int rc = room(s, 5 + k);
    if (rc)
      return rc;
    s->batch[s->blen] = REC_OPAQUE;
    put_be32(s->batch + s->blen + 1, (uint32_t)k);
    memcpy(s->batch + s->blen + 5, bytes, k);
    s->blen += 5 + k;
    s->batch_raw += k;
    bytes += k;
    n -= k;
  }
  return 0;
}

/* DELTA_BASE candidates (hde.h): the chunk of the VM's kernel file that
 * QEMU's loader put at this address (bootmap.h). pc.ram's offset is the
 * guest-physical address below 4 GiB on x86, where kernels are loaded;
 * past that split a guess is wrong, which costs bytes, never correctness
 * (the destination checks every page's hash). */
static int boot_base(void *arg, uint64_t key, uint8_t page[NC_HDE_PAGE]) {
  struct src *s = arg;
  uint32_t block = (uint32_t)(key >> 48);
  if (s->ram_block < 0) {
    const char *name = nc_qs_block_name(s->qs, block);
    if (!name || strcmp(name, "pc.ram") != 0)
      return -ENOENT;
    s->ram_block = block;
  }
  if (block != s->ram_block)
    return -ENOENT;
  return nc_bootmap_page(s->boot, key & ((UINT64_C(1) << 48) - 1), page);
}

static void boot_cb(void *arg, bool kernel, const char *path) {
  struct src *s = arg;
  if (!kernel || s->boot)
    return;
  int rc = nc_bootmap_open(path, &s->boot);
  if (rc)
    nc_info("migrate", "vm \"%s\": no deltas against its kernel file %s (%s; only ELF kernels "
            "have a map)", s->name, path, nc_strerror(rc));
}

static int sink_page(void *data, uint32_t block, uint64_t offset, const uint8_t *page) {
  struct src *s = data;
  int rc = room(s, 11 + NC_HDE_TOKEN_MAX);
  if (rc)
    return rc;
  uint64_t key = (uint64_t)block << 48 | offset;
  size_t tlen = 0;
  rc = nc_hde_encode(s->enc, key, page, s->batch + s->blen + 11, &tlen);
  if (rc)
    return rc;
  s->batch[s->blen] = REC_PAGE;
  put_be64(s->batch + s->blen + 1, key);
  put_be16(s->batch + s->blen + 9, (uint16_t)tlen);
  s->blen += 11 + tlen;
  s->batch_raw += NC_HDE_PAGE;
  return 0;
}

/* Reads QEMU's stream until EOF and sends it on. Runs on its own thread so
 * the operation thread can watch QEMU and honour cancel meanwhile. */
static void *pump_main(void *arg) {
  struct src *s = arg;
  uint8_t *buf = malloc(READ_CHUNK);
  int rc = buf ? 0 : -ENOMEM;
  while (rc == 0) {
    ssize_t n = read(s->qemu_fd, buf, READ_CHUNK);
    if (n == 0)
      break;
    if (n < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      snprintf(s->pump_err, sizeof s->pump_err, "reading the source QEMU's stream: %s",
               strerror(errno));
      break;
    }
    pthread_mutex_lock(&s->mu);
    s->raw_bytes += (uint64_t)n;
    pthread_mutex_unlock(&s->mu);
    rc = nc_qs_feed(s->qs, buf, (size_t)n);
    if (rc)
      snprintf(s->pump_err, sizeof s->pump_err, "sending the stream: %s", nc_strerror(rc));
  }
  int64_t eof_ms = now_ms();
  if (rc == 0)
    rc = nc_qs_finish(s->qs);
  if (rc == 0)
    rc = flush_batch(s);
  if (rc == 0)
    rc = nc_amst_send(s->a, MSG_END, NULL, 0);
  if (rc && !s->pump_err[0])
    snprintf(s->pump_err, sizeof s->pump_err, "sending the stream: %s", nc_strerror(rc));
  free(buf);
  pthread_mutex_lock(&s->mu);
  s->pump_rc = rc;
  s->pump_done = true;
  s->eof_ms = eof_ms;
  s->pump_cpu_ms = thread_cpu_ms();
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

static int parse_to(const char *to, char *host, size_t hlen, int *port) {
  const char *colon = strrchr(to, ':');
  if (!colon || colon == to || (size_t)(colon - to) >= hlen)
    return -EINVAL;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (*end || p <= 0 || p > 65535)
    return -EINVAL;
  memcpy(host, to, (size_t)(colon - to));
  host[colon - to] = '\0';
  *port = (int)p;
  return 0;
}

/* Measures the link with a 1 MiB probe and picks the mode's parameters. */
static void choose_mode(struct src *s, int64_t rtt_ms, double bw_mbit, struct nc_hde_params *p,
                        char *why, size_t wlen) {
  const char *mode = s->mode;
  if (strcmp(mode, "auto") == 0) {
    if (rtt_ms <= 2 && bw_mbit >= 900)
      mode = "datacenter";
    else if (rtt_ms >= 20 || bw_mbit < 200)
      mode = "internet";
    else
      mode = "hybrid";
    snprintf(why, wlen, "auto: rtt %lld ms, probe %.0f Mbit/s -> %s", (long long)rtt_ms, bw_mbit,
             mode);
  } else {
    snprintf(why, wlen, "pinned: %s (rtt %lld ms, probe %.0f Mbit/s)", mode, (long long)rtt_ms,
             bw_mbit);
  }
  snprintf(s->mode, sizeof s->mode, "%s", mode);
  p->dedup = true;
  if (strcmp(mode, "datacenter") == 0) {
    p->codec = NC_HDE_LZ4; /* the CPU is the bottleneck: cheapest codec */
    p->level = 1;
  } else if (strcmp(mode, "hybrid") == 0) {
    p->codec = NC_HDE_ZSTD;
    p->level = 1;
  } else {
    p->codec = NC_HDE_ZSTD; /* on 256 KiB frames of the test guest's pages, 5 */
    p->level = 3;           /* saves < 1% of 3's bytes for ~2x its CPU */
  }
}

static void src_progress(struct src *s, json_t *info, int64_t t0) {
  json_t *ram = json_object_get(info, "ram");
  uint64_t transferred = (uint64_t)json_integer_value(json_object_get(ram, "transferred"));
  uint64_t remaining = (uint64_t)json_integer_value(json_object_get(ram, "remaining"));
  uint64_t total = (uint64_t)json_integer_value(json_object_get(ram, "total"));
  double dirty = (double)json_integer_value(json_object_get(ram, "dirty-pages-rate")) * 4096 /
                 1048576.0;
  int64_t iter = json_integer_value(json_object_get(ram, "dirty-sync-count"));
  int64_t exp = json_integer_value(json_object_get(info, "expected-downtime"));
  struct nc_amst_stats as;
  nc_amst_stats(s->a, &as);
  pthread_mutex_lock(&s->mu);
  uint64_t raw = s->raw_bytes;
  pthread_mutex_unlock(&s->mu);
  char msg[256];
  snprintf(msg, sizeof msg,
           "%s%s: pass %lld, %llu/%llu MiB sent, %llu MiB remaining, dirty %.1f MiB/s, wire "
           "%.1f MiB for %.1f MiB of stream (%.2f), expected downtime %lld ms, %.1f s",
           s->mode, s->tls ? " over TLS" : "", (long long)iter,
           (unsigned long long)(transferred >> 20),
           (unsigned long long)(total >> 20), (unsigned long long)(remaining >> 20), dirty,
           (double)as.bytes_sent / 1048576.0, (double)raw / 1048576.0,
           raw ? (double)as.bytes_sent / (double)raw : 0.0, (long long)exp,
           (double)(now_ms() - t0) / 1000.0);
  double frac = total ? (double)(total - (remaining < total ? remaining : total)) / (double)total
                      : 0;
  nc_op_progress(nc_vmm_ext_op(s->x), frac * 0.9, msg);
}

/* Rolls back after a failure before the hand-over: the source keeps the VM. */
static void src_rollback(struct src *s) {
  char st[32];
  json_t *r = NULL;
  /* First make QEMU's writes fail: in its last phase it writes device
   * state holding its big lock, so while nobody reads the socket it does
   * not even answer QMP. A failed write fails the migration, and QEMU
   * restarts a guest it had stopped for it. */
  if (s->qemu_fd >= 0)
    shutdown(s->qemu_fd, SHUT_RDWR);
  if (qmp(s->x, "query-migrate", NULL, &r, NULL, 0) == 0) {
    const char *status = json_string_value(json_object_get(r, "status"));
    if (status && strcmp(status, "completed") != 0 && strcmp(status, "failed") != 0 &&
        strcmp(status, "cancelled") != 0)
      qmp(s->x, "migrate_cancel", NULL, NULL, NULL, 0);
  }
  json_decref(r);
  /* QEMU resumes a guest it stopped for a migration that then failed;
   * after "completed" it stays paused (postmigrate) and we resume it. */
  for (int i = 0; i < 50; i++) {
    run_state(s->x, st, sizeof st);
    if (strcmp(st, "finish-migrate") != 0 && strcmp(st, "") != 0)
      break;
    usleep(100 * 1000);
  }
  if (strcmp(st, "postmigrate") == 0 || strcmp(st, "paused") == 0)
    qmp(s->x, "cont", NULL, NULL, NULL, 0);
  run_state(s->x, st, sizeof st);
  nc_vmm_ext_set_state(s->x, strcmp(st, "running") == 0 ? NC_VM_RUNNING : NC_VM_PAUSED,
                       "migration rolled back; the vm stays on this node");
}

/* After COMMIT_ACK without RESUMED: ask the destination what it has. */
static int src_settle_unconfirmed(struct src *s, struct nc_errinfo *err) {
  char path[128];
  snprintf(path, sizeof path, "/v1/vms/%s", s->name);
  for (int i = 0; i < 20; i++) {
    long status = 0;
    json_t *vm = NULL;
    int rc = nc__peer_call("GET", s->to, path, s->token, NULL, 3000, &status, &vm);
    const char *state = vm ? json_string_value(json_object_get(vm, "state")) : NULL;
    if (rc == 0 && status == 200 && state &&
        (strcmp(state, "running") == 0 || strcmp(state, "paused") == 0)) {
      json_decref(vm);
      nc_warn("migrate", "vm \"%s\": %s confirmed it runs the vm after the session dropped",
              s->name, s->to);
      return 0;
    }
    json_decref(vm);
    if (rc == 0 && status == 404) {
      src_rollback(s);
      return nc_errinfo_set(err, 500, "migration_failed", NULL,
                            "vm \"%s\": the destination %s dropped the vm after the hand-over "
                            "began; it was resumed here",
                            s->name, s->to);
    }
    usleep(500 * 1000);
  }
  nc_vmm_ext_set_state(s->x, NC_VM_FAILED,
                       "hand-over unconfirmed: the destination did not confirm it resumed the "
                       "vm and cannot be asked; it is left paused here so it never runs twice. "
                       "Check the destination, then delete it here or resume it here");
  return nc_errinfo_set(err, 500, "migration_unconfirmed", NULL,
                        "vm \"%s\": the destination %s did not confirm the hand-over and cannot "
                        "be reached; the vm is paused here (see its state reason)",
                        s->name, s->to);
}

static int src_run(struct src *s, struct nc_errinfo *err) {
  struct nc_op *op = nc_vmm_ext_op(s->x);
  int rc;
  bool handed_over = false;
  int64_t t0 = now_ms();
  nc_op_running(op, "preparing the destination");

  /* 1. The destination defines the VM and starts its QEMU waiting. */
  struct nc_migrate_config *mc = &s->m->cfg;
  s->tls = mc->tls_mode == NC_MIGRATE_TLS_ON ||
           (mc->tls_mode == NC_MIGRATE_TLS_AUTO && !is_loopback(s->to_host));
  if (s->tls && !mc->tls)
    return nc_errinfo_set(err, 500, "internal", NULL, "this node has no DWCP key for TLS");
  char own_fp[NC_TLS_FP_HEX_LEN + 1] = "";
  if (mc->tls)
    nc_tls_fp_to_hex(nc_tls_fingerprint(mc->tls), own_fp);
  json_t *spec = nc_vmm_ext_spec(s->x);
  json_t *req = json_pack("{s:o, s:s, s:i, s:b}", "vm", spec, "source", mc->node_name, "streams",
                          s->streams, "tls", s->tls);
  if (own_fp[0])
    json_object_set_new(req, "fingerprint", json_string(own_fp));
  json_object_set_new(req, "hde_version", json_integer(NC_HDE_VERSION));
  if (mc->pcache && (s->prev = rec_load(s->m, s->name)) != NULL) {
    uint8_t dg[16];
    char hex[33];
    nc_hde_rec_digest(s->prev, dg);
    hex16(dg, hex);
    json_object_set_new(req, "prev_record", json_string(hex));
  }
  long status = 0;
  json_t *resp = NULL;
  rc = nc__peer_call("POST", s->to, "/v1/migrations/incoming", s->token, req, PEER_TIMEOUT_MS,
                     &status, &resp);
  json_decref(req);
  if (rc) {
    json_decref(resp);
    return nc_errinfo_set(err, 502, "peer_unreachable", "to",
                          "cannot reach the destination %s: %s", s->to, nc_strerror(rc));
  }
  if (status != 200 && status != 201) {
    const char *msg = json_string_value(json_object_get(json_object_get(resp, "error"), "message"));
    rc = nc_errinfo_set(err, status == 401 ? 401 : 409, "peer_refused", "to",
                        "the destination %s refused the migration (HTTP %ld): %s", s->to, status,
                        msg ? msg : "no reason given");
    json_decref(resp);
    return rc;
  }
  const char *sess_hex = json_string_value(json_object_get(resp, "session"));
  s->dwcp_port = (int)json_integer_value(json_object_get(resp, "port"));
  s->nbd_port = (int)json_integer_value(json_object_get(resp, "nbd_port"));
  if (!sess_hex || strlen(sess_hex) != 32 || s->dwcp_port <= 0) {
    json_decref(resp);
    return nc_errinfo_set(err, 502, "peer_protocol", NULL,
                          "the destination %s answered without a session", s->to);
  }
  for (int i = 0; i < 16; i++) {
    unsigned v;
    sscanf(sess_hex + 2 * i, "%2x", &v);
    s->session[i] = (uint8_t)v;
  }
  /* The destination's certificate fingerprint came over the
   * token-authenticated API; the TLS handshakes below pin it. */
  bool peer_tls = json_is_true(json_object_get(resp, "tls"));
  const char *peer_fp = json_string_value(json_object_get(resp, "fingerprint"));
  if (s->tls && (!peer_tls || nc_tls_fp_parse(peer_fp, s->peer_fp) != 0)) {
    json_decref(resp);
    return nc_errinfo_set(err, 502, "peer_protocol", NULL,
                          "the destination %s did not agree to TLS for DWCP or sent no "
                          "certificate fingerprint (a novacrond without TLS support?); this "
                          "node's dwcp_tls = %s requires it",
                          s->to, tls_mode_name(mc->tls_mode));
  }
  if (!s->tls && peer_tls) {
    json_decref(resp);
    return nc_errinfo_set(err, 502, "peer_protocol", NULL,
                          "the destination %s answered for TLS though plain TCP was asked",
                          s->to);
  }
  json_decref(resp);

  /* 2. The DWCP session, and a look at the link. */
  nc_op_progress(op, 0.02, "connecting DWCP streams");
  struct nc_amst_config ac = {.streams = s->streams,
                              .bbr = true,
                              .send_window_bytes = WINDOW_BYTES,
                              .recv_window_bytes = WINDOW_BYTES,
                              .tls = s->tls ? mc->tls : NULL,
                              .tls_peer_fp = s->tls ? s->peer_fp : NULL};
  int64_t tc = now_ms();
  rc = nc_amst_connect(&ac, s->to_host, s->dwcp_port, s->session, &s->a);
  /* The handshake costs about one round trip (two with TLS). */
  int64_t rtt_ms = (now_ms() - tc) / (s->tls ? 2 : 1);
  if (rc == 0)
    track(s->m, s->a, true);
  char peer_hex[NC_TLS_FP_HEX_LEN + 1];
  nc_tls_fp_to_hex(s->peer_fp, peer_hex);
  if (rc == -EKEYREJECTED) {
    nc_errinfo_set(err, 502, "peer_key_mismatch", "to",
                   "the DWCP endpoint %s:%d does not hold the certificate the destination %s "
                   "announced (SHA-256 %s): refusing to send the vm (someone in the path, or "
                   "the destination's node key changed meanwhile)",
                   s->to_host, s->dwcp_port, s->to, peer_hex);
    goto rollback;
  }
  if (rc) {
    nc_errinfo_set(err, 502, "peer_unreachable", "to", "cannot open DWCP streams to %s:%d%s: %s",
                   s->to_host, s->dwcp_port, s->tls ? " (TLS)" : "", nc_strerror(rc));
    goto rollback;
  }
  struct nc_amst_stats cs;
  nc_amst_stats(s->a, &cs);
  if (s->tls)
    nc_info("migrate", "vm \"%s\" -> %s: %d DWCP streams over %s, destination certificate "
            "SHA-256 %s (pinned)", s->name, s->to, s->streams, cs.tls, peer_hex);
  else
    nc_info("migrate", "vm \"%s\" -> %s: %d DWCP streams over plain TCP (dwcp_tls = %s, %s)",
            s->name, s->to, s->streams, tls_mode_name(mc->tls_mode),
            is_loopback(s->to_host) ? "loopback" : "not loopback");
  uint8_t type;
  void *payload = NULL;
  size_t plen = 0;
  rc = nc_amst_recv(s->a, ACCEPT_TIMEOUT_MS, &type, &payload, &plen);
  if (rc || type != MSG_SUMMARY || plen != 40) {
    free(payload);
    nc_errinfo_set(err, 502, "peer_protocol", NULL,
                   "the destination did not send its page-cache summary (%s)",
                   rc ? nc_strerror(rc) : "unexpected message");
    rc = rc ? rc : NC_E_PROTO;
    goto rollback;
  }
  struct nc_hde_params hp = {0};
  hp.new_pages_quota = get_be((uint8_t *)payload + 8, 8);
  hp.delta_cache_bytes = get_be((uint8_t *)payload + 16, 8);
  uint64_t slen = get_be((uint8_t *)payload + 24, 8);
  uint64_t held_len = get_be((uint8_t *)payload + 32, 8);
  free(payload);
  payload = NULL;
  uint64_t want_held = s->prev ? (nc_hde_rec_count(s->prev) + 7) / 8 : 0;
  if (held_len != 0 && held_len != want_held) {
    nc_errinfo_set(err, 502, "peer_protocol", NULL,
                   "the destination's record bitmap (%llu bytes) does not fit ours (%llu)",
                   (unsigned long long)held_len, (unsigned long long)want_held);
    rc = NC_E_PROTO;
    goto rollback;
  }
  uint8_t *summary = slen <= SUMMARY_MAX ? malloc(slen + held_len + 1) : NULL;
  if (!summary) {
    nc_errinfo_set(err, 502, "peer_protocol", NULL,
                   "the destination's page-cache summary (%llu bytes) is over the %u-byte cap",
                   (unsigned long long)slen, SUMMARY_MAX);
    rc = NC_E_TOOBIG;
    goto rollback;
  }
  for (uint64_t got = 0; got < slen + held_len;) {
    void *part = NULL;
    size_t n = 0;
    rc = nc_amst_recv(s->a, ACCEPT_TIMEOUT_MS, &type, &part, &n);
    if (rc || type != MSG_SUMMARY_PART || n == 0 || n > slen + held_len - got) {
      free(part);
      free(summary);
      nc_errinfo_set(err, 502, "peer_protocol", NULL,
                     "the destination's page-cache summary was cut short (%s)",
                     rc ? nc_strerror(rc) : "unexpected message");
      rc = rc ? rc : NC_E_PROTO;
      goto rollback;
    }
    memcpy(summary + got, part, n);
    got += n;
    free(part);
  }
  /* The probe decides only between datacenter and hybrid: a pinned mode
   * or a round trip that makes it internet anyway saves its 1 MiB. */
  double bw_mbit = 0;
  if (strcmp(s->mode, "auto") == 0 && rtt_ms < 20) {
    int64_t tp = now_ms();
    uint8_t *filler = calloc(1, PROBE_BYTES);
    rc = filler ? nc_amst_send(s->a, MSG_PROBE, filler, PROBE_BYTES) : -ENOMEM;
    free(filler);
    if (rc == 0)
      rc = nc_amst_flush(s->a, 30000);
    double probe_s = (double)(now_ms() - tp) / 1000.0;
    bw_mbit = probe_s > 0 ? PROBE_BYTES * 8.0 / 1e6 / probe_s : 1e5;
  }
  if (rc) {
    free(summary);
    nc_errinfo_set(err, 502, "link_failed", NULL, "the DWCP link failed during the probe: %s",
                   nc_strerror(rc));
    goto rollback;
  }
  char why[160];
  choose_mode(s, rtt_ms, bw_mbit, &hp, why, sizeof why);
  struct nc__pace pace;
  size_t w0 = nc__pace_init(&pace, s->max_downtime_ms, rtt_ms, s->nbd_port > 0);
  s->stream_cap = rtt_ms < NC__PACE_SLOW_RTT_MS;
  if (w0 != WINDOW_BYTES)
    nc__pace_window_is(&pace, nc_amst_set_send_window(s->a, w0));
  nc_info("migrate", "vm \"%s\" -> %s: mode %s (%s), %d streams", s->name, s->to, s->mode, why,
          s->streams);
  rc = nc_hde_enc_new(&hp, summary, (size_t)slen, s->m->cfg.pcache, &s->enc);
  if (rc == 0)
    rc = nc_hde_enc_set_frames(s->enc, true);
  if (rc == 0 && held_len > 0)
    rc = nc_hde_enc_set_prev(s->enc, s->prev, summary + slen, (size_t)held_len);
  if (rc == 0 && hp.dedup) {
    s->ram_block = -1;
    boot_files(s->x, boot_cb, s);
    if (s->boot)
      nc_hde_enc_set_base_fn(s->enc, boot_base, s);
  }
  free(summary);
  if (rc) {
    nc_errinfo_set(err, 500, "internal", NULL, "cannot set up the page encoder: %s",
                   nc_strerror(rc));
    goto rollback;
  }
  struct nc_qs_sink sink = {s, sink_opaque, sink_page};
  if ((rc = nc_qs_parser_new(&sink, &s->qs)) != 0 || !(s->batch = malloc(BATCH_MAX)) ||
      !(s->frame = malloc(nc_hde_frame_bound(BATCH_MAX)))) {
    rc = rc ? rc : -ENOMEM;
    nc_errinfo_set(err, 500, "internal", NULL, "out of memory");
    goto rollback;
  }

  /* 3. QEMU migrates into our unix socket. */
  char sock[1200];
  snprintf(sock, sizeof sock, "%s/mig-out.sock", nc_vmm_ext_run_dir(s->x));
  unlink(sock);
  struct sockaddr_un sa;
  if ((rc = nc__unix_addr(&sa, sock)) != 0) {
    nc_errinfo_set(err, 500, "internal", NULL, "socket path too long: %s", sock);
    goto rollback;
  }
  s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(s->listen_fd, 1) != 0) {
    rc = -errno;
    nc_errinfo_set(err, 500, "internal", NULL, "cannot listen on %s: %s", sock, strerror(errno));
    goto rollback;
  }
  nc_vmm_ext_set_state(s->x, NC_VM_MIGRATING, why);
  char desc[256];
  qmp(s->x, "migrate-set-capabilities",
      json_pack("{s:[{s:s, s:b}, {s:s, s:b}]}", "capabilities", "capability", "auto-converge",
                "state", 1, "capability", "events", "state", 1),
      NULL, NULL, 0);
  qmp(s->x, "migrate-set-parameters",
      json_pack("{s:I, s:I}", "downtime-limit", (json_int_t)s->max_downtime_ms, "max-bandwidth",
                (json_int_t)(1LL << 40)),
      NULL, NULL, 0);
  if (s->nbd_port > 0) {
    /* The disk first: mirror the overlay's own data (its base is the same
     * image on both nodes) into the destination's NBD export, and keep it
     * in sync while the memory moves. */
    snprintf(s->relay_sock, sizeof s->relay_sock, "%s/mig-nbd.sock", nc_vmm_ext_run_dir(s->x));
    rc = nc__relay_source(s->relay_sock, s->to_host, s->nbd_port, s->tls ? mc->tls : NULL,
                          s->tls ? s->peer_fp : NULL, s->session, &s->relay);
    if (rc) {
      nc_errinfo_set(err, 502, rc == -EKEYREJECTED ? "peer_key_mismatch" : "peer_unreachable",
                     NULL, "cannot reach the destination's disk export %s:%d%s: %s", s->to_host,
                     s->nbd_port, s->tls ? " (TLS)" : "",
                     rc == -EKEYREJECTED ? "it does not hold the announced certificate"
                                         : nc_strerror(rc));
      goto rollback;
    }
    rc = qmp(s->x, "blockdev-add",
             json_pack("{s:s, s:s, s:{s:s, s:s}, s:s}", "driver", "nbd", "node-name", "mig-nbd",
                       "server", "type", "unix", "path", s->relay_sock, "export", "disk0"),
             NULL, desc, sizeof desc);
    if (rc == 0)
      rc = qmp(s->x, "blockdev-mirror",
               json_pack("{s:s, s:s, s:s, s:s}", "job-id", "mig-mirror", "device", "disk0",
                         "target", "mig-nbd", "sync", "top"),
               NULL, desc, sizeof desc);
    if (rc) {
      nc_errinfo_set(err, 500, "hypervisor_error", NULL, "cannot mirror the disk: %s", desc);
      nc__relay_stop(s->relay);
      s->relay = NULL;
      qmp(s->x, "blockdev-del", json_pack("{s:s}", "node-name", "mig-nbd"), NULL, NULL, 0);
      goto rollback;
    }
    s->mirroring = true;
    int64_t dl = now_ms() + (int64_t)s->converge_timeout_s * 1000;
    for (;;) {
      uint64_t done = 0, total = 0;
      int st = mirror_state(s->x, &done, &total);
      if (st == 1)
        break;
      if (st < 0 || now_ms() > dl || nc_op_cancel_requested(op) || stopping(s->m)) {
        rc = st < 0 ? NC_E_HV : nc_op_cancel_requested(op) ? NC_E_CANCELLED : -ETIMEDOUT;
        nc_errinfo_set(err, rc == NC_E_CANCELLED ? 409 : 500,
                       rc == NC_E_CANCELLED ? "cancelled" : "disk_mirror_failed", NULL,
                       "copying the disk of vm \"%s\" %s; it keeps running here", s->name,
                       rc == NC_E_CANCELLED ? "was cancelled" : "failed");
        goto rollback;
      }
      char m2[128];
      snprintf(m2, sizeof m2, "copying the disk: %llu/%llu MiB", (unsigned long long)(done >> 20),
               (unsigned long long)(total >> 20));
      nc_op_progress(op, 0.03, m2);
      usleep(100 * 1000);
    }
  }
  char uri[1300];
  snprintf(uri, sizeof uri, "unix:%s", sock);
  rc = qmp(s->x, "migrate", json_pack("{s:s}", "uri", uri), NULL, desc, sizeof desc);
  if (rc) {
    nc_errinfo_set(err, 500, "hypervisor_error", NULL, "QEMU refused to migrate: %s", desc);
    goto rollback;
  }
  struct pollfd pfd = {s->listen_fd, POLLIN, 0};
  if (poll(&pfd, 1, 10000) != 1 || (s->qemu_fd = accept4(s->listen_fd, NULL, NULL,
                                                         SOCK_CLOEXEC)) < 0) {
    rc = -ETIMEDOUT;
    nc_errinfo_set(err, 500, "hypervisor_error", NULL, "QEMU did not connect to %s", sock);
    goto rollback;
  }
  pthread_mutex_init(&s->mu, NULL);
  if ((rc = pthread_create(&s->pump, NULL, pump_main, s)) != 0) {
    rc = -rc;
    nc_errinfo_set(err, 500, "internal", NULL, "cannot start the stream pump");
    goto rollback;
  }
  s->pump_started = true;

  /* 4. Watch QEMU until it completes, fails, or we are told to stop. */
  const char *final = NULL;
  char qstatus[32] = "";
  int64_t deadline = now_ms() + (int64_t)s->converge_timeout_s * 1000;
  int64_t tpump = now_ms();
  nc_amst_stats(s->a, &cs); /* from here, not counting the summary and probe */
  uint64_t wire0 = cs.bytes_sent;
  int64_t qemu_downtime_ms = -1;
  for (;;) {
    json_t *info = NULL;
    if (qmp(s->x, "query-migrate", NULL, &info, NULL, 0) == 0) {
      const char *st = json_string_value(json_object_get(info, "status"));
      snprintf(qstatus, sizeof qstatus, "%s", st ? st : "");
      if (strcmp(qstatus, "active") == 0 || strcmp(qstatus, "device") == 0)
        src_progress(s, info, t0);
      if (strcmp(qstatus, "completed") == 0)
        qemu_downtime_ms = json_integer_value(json_object_get(info, "downtime"));
    }
    json_decref(info);
    if (strcmp(qstatus, "active") == 0) {
      struct nc_amst_stats ws;
      nc_amst_stats(s->a, &ws);
      int64_t rtt_now_ms = rtt_ms;
      for (int i = 0; i < ws.streams && i < NC_AMST_STREAMS_MAX; i++)
        if (ws.s[i].rtt_us > 0 && ws.s[i].rtt_us / 1000 < rtt_now_ms)
          rtt_now_ms = ws.s[i].rtt_us / 1000;
      pthread_mutex_lock(&s->mu);
      uint64_t raw_now = s->raw_bytes;
      pthread_mutex_unlock(&s->mu);
      struct nc__pace_sample ps = {.elapsed_ms = now_ms() - tpump,
                                   .sent = ws.bytes_sent - wire0,
                                   .queued = ws.queued_bytes,
                                   .raw = raw_now,
                                   .rtt_ms = rtt_now_ms};
      size_t w = 0;
      int64_t lim = 0;
      nc__pace_update(&pace, &ps, &w, &lim);
      if (w > 0)
        nc__pace_window_is(&pace, nc_amst_set_send_window(s->a, w));
      if (lim > 0 && qmp(s->x, "migrate-set-parameters",
                         json_pack("{s:I}", "downtime-limit", (json_int_t)lim), NULL, NULL,
                         0) == 0) {
        nc_info("migrate", "vm \"%s\": QEMU's downtime-limit %lld ms (of %d: %.1f MB/s on the "
                "wire, %zu KiB in flight, %lld ms round trip)",
                s->name, (long long)lim, s->max_downtime_ms, pace.rate / 1000.0,
                pace.window / 1024, (long long)rtt_now_ms);
        nc__pace_limit_is(&pace, lim);
      }
    }
    pthread_mutex_lock(&s->mu);
    bool pump_done = s->pump_done;
    int pump_rc = s->pump_rc;
    pthread_mutex_unlock(&s->mu);
    if (strcmp(qstatus, "completed") == 0 && pump_done) {
      final = "completed";
      break;
    }
    if (strcmp(qstatus, "failed") == 0 || strcmp(qstatus, "cancelled") == 0 ||
        (pump_done && pump_rc)) {
      final = "failed";
      break;
    }
    if (nc_op_cancel_requested(op) || stopping(s->m)) {
      final = "cancelled";
      break;
    }
    if (now_ms() > deadline) {
      final = "timeout";
      break;
    }
    /* Ask QEMU again after 200 ms, or as soon as its stream ends, and
     * every 2 ms after that: the hand-over, and so the guest's downtime,
     * waits on this. */
    for (int i = 0; i < 20; i++) {
      pthread_mutex_lock(&s->mu);
      bool done_now = s->pump_done;
      pthread_mutex_unlock(&s->mu);
      if (done_now && !pump_done)
        break;
      if (done_now) {
        usleep(2 * 1000);
        break;
      }
      usleep(10 * 1000);
    }
  }
  if (strcmp(final, "completed") != 0) {
    if (strcmp(final, "cancelled") == 0) {
      rc = NC_E_CANCELLED;
      nc_errinfo_set(err, 409, "cancelled", NULL,
                     "migration of vm \"%s\" cancelled; it keeps running here", s->name);
    } else if (strcmp(final, "timeout") == 0) {
      rc = -ETIMEDOUT;
      nc_errinfo_set(err, 500, "not_converging", NULL,
                     "migration of vm \"%s\" did not converge within %d s (the guest dirties "
                     "memory faster than the link carries it, even throttled); it keeps "
                     "running here. Retry with a larger max_downtime_ms or on a faster link",
                     s->name, s->converge_timeout_s);
    } else {
      rc = NC_E_HV;
      nc_errinfo_set(err, 500, "migration_failed", NULL,
                     "migration of vm \"%s\" failed (QEMU: %s%s%s); it keeps running here",
                     s->name, qstatus, s->pump_err[0] ? "; " : "", s->pump_err);
    }
    nc_amst_send(s->a, MSG_ABORT, err->message, strlen(err->message));
    nc_amst_abort(s->a);
    goto rollback;
  }

  /* 5. Hand-over. The guest is paused: finish the disk copy first.
   * Then grant the VM at once, right behind the stream, instead of
   * waiting for the destination to ask (COMMIT_REQ) and answering: that
   * round trip was guest downtime. From the grant on this node never
   * resumes the VM by itself, exactly as after answering before: the
   * destination resumes it once its QEMU has loaded the state and it has
   * recorded itself as owner, and confirms (RESUMED); an ABORT from it, a
   * dropped session or a timeout are settled by asking it (it sends ABORT
   * only on paths where it does not resume). A destination that still
   * sends COMMIT_REQ first finds the grant already there. */
  int64_t t_done = now_ms();
  bool disk_copied = s->mirroring;
  if (s->mirroring) {
    mirror_end(s->x, false, false); /* the NBD node and relay go after the grant */
    s->mirroring = false;
  }
  int64_t t_disk = now_ms();
  nc_op_progress(op, 0.92, "handing over to the destination");
  handed_over = true;
  nc_vmm_ext_set_state(s->x, NC_VM_MIGRATING, "handing over to the destination");
  rc = nc_amst_send(s->a, MSG_COMMIT_ACK, NULL, 0);
  int64_t t_grant = now_ms();
  if (disk_copied) {
    qmp(s->x, "blockdev-del", json_pack("{s:s}", "node-name", "mig-nbd"), NULL, NULL, 0);
    nc__relay_stop(s->relay);
    s->relay = NULL;
  }
  payload = NULL;
  type = 0;
  while (rc == 0) {
    rc = nc_amst_recv(s->a, COMMIT_TIMEOUT_MS, &type, &payload, &plen);
    if (rc == 0 && type == MSG_COMMIT_REQ) { /* it has loaded the state */
      free(payload);
      payload = NULL;
      continue;
    }
    break;
  }
  if (rc == 0 && type == MSG_ABORT) {
    /* The destination sends ABORT only on paths where it then gives up
     * without resuming (a page that does not check out, its QEMU refusing
     * the state, the ownership record): the VM is still ours to resume. */
    nc_errinfo_set(err, 500, "migration_failed", NULL,
                   "the destination did not take vm \"%s\" (%.*s); it was resumed here",
                   s->name, (int)(plen < 190 ? plen : 190), (char *)payload);
    free(payload);
    handed_over = false;
    rc = NC_E_HV;
    nc_amst_abort(s->a);
    goto rollback;
  }
  free(payload);
  int64_t t_resumed = now_ms();
  if (rc || type != MSG_RESUMED) {
    rc = src_settle_unconfirmed(s, err);
    if (rc)
      return rc;
  }
  pthread_mutex_lock(&s->mu);
  int64_t eof_ms = s->eof_ms;
  pthread_mutex_unlock(&s->mu);
  nc_info("migrate", "vm \"%s\": hand-over: QEMU reported %lld ms of downtime up to the end of "
          "its stream; from there, +%lld ms completed, +%lld ms disk done, +%lld ms granted, "
          "+%lld ms destination resumed (downtime-limit %lld ms); stream pump CPU %lld ms",
          s->name, (long long)qemu_downtime_ms, (long long)(t_done - eof_ms),
          (long long)(t_disk - eof_ms), (long long)(t_grant - eof_ms),
          (long long)(t_resumed - eof_ms), (long long)pace.limit, (long long)s->pump_cpu_ms);
  struct nc_amst_stats as;
  nc_amst_stats(s->a, &as);
  struct nc_hde_stats hs;
  nc_hde_enc_stats(s->enc, &hs);
  if (s->m->cfg.pcache) {
    /* What the destination now holds of this VM, for the way back. */
    struct nc_hde_rec *r = NULL;
    pthread_mutex_lock(&s->mu);
    bool done = s->pump_done && s->pump_rc == 0;
    pthread_mutex_unlock(&s->mu);
    if (done && nc_hde_enc_record(s->enc, &r) == 0)
      rec_store(s->m, s->name, r);
    nc_hde_rec_free(r);
    nc_pcache_flush(s->m->cfg.pcache);
  }
  int64_t total_ms = now_ms() - t0;
  char msg[768];
  snprintf(msg, sizeof msg,
           "migrated to %s in %.2f s (%s), %s: %.1f MiB on the wire for %.1f MiB of stream; "
           "pages %llu: zero %llu, ref %llu, delta %llu, raw %llu, stored %llu (against the "
           "last migration's record: ref %llu, delta %llu; against the kernel file: delta %llu)",
           s->to, (double)total_ms / 1000.0, s->mode, as.tls[0] ? as.tls : "no TLS",
           (double)as.bytes_sent / 1048576.0,
           (double)s->raw_bytes / 1048576.0, (unsigned long long)hs.pages,
           (unsigned long long)hs.zero, (unsigned long long)(hs.ref + hs.prev),
           (unsigned long long)(hs.delta + hs.delta_prev + hs.delta_base),
           (unsigned long long)hs.raw, (unsigned long long)hs.stored,
           (unsigned long long)hs.prev, (unsigned long long)hs.delta_prev,
           (unsigned long long)hs.delta_base);
  nc_op_set_result(op, msg);
  nc_info("migrate", "vm \"%s\": %s", s->name, msg);
  if (s->m->m_total) {
    nc_metric_add(s->m->m_total, (const char *const[]){"source", "succeeded"}, 1);
    nc_metric_add(s->m->m_bytes_wire, NULL, (double)as.bytes_sent);
    nc_metric_add(s->m->m_bytes_raw, NULL, (double)s->raw_bytes);
  }
  return 0;

rollback:
  if (s->mirroring) {
    nc__relay_stop(s->relay); /* first: QEMU must not wait on a dead peer */
    s->relay = NULL;
    mirror_end(s->x, true, true);
    s->mirroring = false;
  }
  nc__relay_stop(s->relay);
  s->relay = NULL;
  if (!handed_over)
    src_rollback(s);
  if (s->m->m_total)
    nc_metric_add(s->m->m_total,
                  (const char *const[]){"source", rc == NC_E_CANCELLED ? "cancelled" : "failed"},
                  1);
  return rc ? rc : NC_E_HV;
}

static void *src_main(void *arg) {
  struct src *s = arg;
  struct nc_errinfo err = {0};
  s->listen_fd = s->qemu_fd = -1;
  int rc = src_run(s, &err);
  if (s->pump_started) {
    if (s->qemu_fd >= 0)
      shutdown(s->qemu_fd, SHUT_RDWR); /* unblocks the pump's read */
    if (s->a && rc)
      nc_amst_abort(s->a); /* unblocks the pump's send */
    pthread_join(s->pump, NULL);
    pthread_mutex_destroy(&s->mu);
  }
  if (s->qemu_fd >= 0)
    close(s->qemu_fd);
  if (s->listen_fd >= 0)
    close(s->listen_fd);
  char sock[1200];
  snprintf(sock, sizeof sock, "%s/mig-out.sock", nc_vmm_ext_run_dir(s->x));
  unlink(sock);
  if (s->a) {
    track(s->m, s->a, false);
    if (rc)
      nc_amst_abort(s->a);
    nc_amst_close(s->a);
  }
  nc_hde_enc_free(s->enc);
  nc_bootmap_free(s->boot);
  nc_hde_rec_free(s->prev);
  nc_qs_parser_free(s->qs);
  free(s->batch);
  free(s->frame);
  struct nc_migrate *m = s->m;
  nc_vmm_ext_finish(s->x, rc, &err, rc == 0 ? NC_EXT_REMOVE : NC_EXT_KEEP);
  free(s);
  thread_done(m);
  return NULL;
}

int nc_migrate_start(struct nc_migrate *m, const char *name, json_t *body, json_t **out,
                     struct nc_errinfo *err) {
  static const char *const allowed[] = {"to", "token", "mode", "streams", "max_downtime_ms",
                                        "timeout_s", NULL};
  if (!json_is_object(body))
    return nc_errinfo_set(err, 400, "bad_json", NULL,
                          "the request body must be a JSON object like {\"to\": \"HOST:PORT\"}");
  int rc = nc_json_check_fields(body, allowed, "migrate", err);
  if (rc)
    return rc;
  struct src *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->m = m;
  s->streams = 4;
  s->max_downtime_ms = DEFAULT_MAX_DOWNTIME_MS;
  s->converge_timeout_s = DEFAULT_CONVERGE_TIMEOUT_S;
  snprintf(s->mode, sizeof s->mode, "auto");
  snprintf(s->name, sizeof s->name, "%s", name);
  json_t *v = json_object_get(body, "to");
  int port;
  if (!json_is_string(v) ||
      parse_to(json_string_value(v), s->to_host, sizeof s->to_host, &port) != 0) {
    rc = nc_errinfo_set(err, 400, v ? "invalid_field" : "missing_field", "to",
                        "to must be the destination's API address HOST:PORT, like "
                        "10.0.0.2:8470");
    goto fail;
  }
  snprintf(s->to, sizeof s->to, "%s", json_string_value(v));
  v = json_object_get(body, "token");
  if (v && (!json_is_string(v) || json_string_length(v) >= sizeof s->token)) {
    rc = nc_errinfo_set(err, 400, "invalid_field", "token", "token must be a string");
    goto fail;
  }
  snprintf(s->token, sizeof s->token, "%s",
           v ? json_string_value(v) : m->cfg.peer_token ? m->cfg.peer_token : "");
  if (!s->token[0]) {
    rc = nc_errinfo_set(err, 400, "missing_field", "token",
                        "no token for the destination: pass \"token\" (the destination's "
                        "api.token) or set cluster_token_file on both nodes");
    goto fail;
  }
  v = json_object_get(body, "mode");
  if (v) {
    const char *mv = json_string_value(v);
    if (!mv || (strcmp(mv, "auto") && strcmp(mv, "datacenter") && strcmp(mv, "hybrid") &&
                strcmp(mv, "internet"))) {
      rc = nc_errinfo_set(err, 400, "invalid_field", "mode",
                          "mode must be auto, datacenter, hybrid or internet");
      goto fail;
    }
    snprintf(s->mode, sizeof s->mode, "%s", mv);
  }
  v = json_object_get(body, "streams");
  if (v) {
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > NC_AMST_STREAMS_MAX) {
      rc = nc_errinfo_set(err, 400, "invalid_field", "streams", "streams must be 1 to %d",
                          NC_AMST_STREAMS_MAX);
      goto fail;
    }
    s->streams = (int)json_integer_value(v);
  }
  v = json_object_get(body, "max_downtime_ms");
  if (v) {
    if (!json_is_integer(v) || json_integer_value(v) < 10 || json_integer_value(v) > 60000) {
      rc = nc_errinfo_set(err, 400, "invalid_field", "max_downtime_ms",
                          "max_downtime_ms must be 10 to 60000");
      goto fail;
    }
    s->max_downtime_ms = (int)json_integer_value(v);
  }
  v = json_object_get(body, "timeout_s");
  if (v) {
    if (!json_is_integer(v) || json_integer_value(v) < 5 || json_integer_value(v) > 86400) {
      rc = nc_errinfo_set(err, 400, "invalid_field", "timeout_s",
                          "timeout_s must be 5 to 86400 seconds");
      goto fail;
    }
    s->converge_timeout_s = (int)json_integer_value(v);
  }
  rc = nc_vmm_ext_begin(m->cfg.vmm, name, NC_ACT_MIGRATE, "vm.migrate", true, &s->x, out, err);
  if (rc)
    goto fail;
  rc = spawn(m, src_main, s);
  if (rc) {
    nc_errinfo_set(err, 503, "unavailable", NULL, "cannot start the migration");
    nc_vmm_ext_finish(s->x, rc, err, NC_EXT_KEEP);
    json_decref(*out);
    *out = NULL;
    free(s);
    return rc;
  }
  return 0;
fail:
  free(s);
  return rc;
}

/* ---- destination -------------------------------------------------------- */

struct dst {
  struct nc_migrate *m;
  struct nc_vmm_ext *x;
  struct nc_amst_listener *l;
  struct nc_amst *a;
  struct nc_hde_dec *dec;
  uint8_t session[16];
  uint64_t session64;
  int streams;
  int qemu_fd;
  int nbd_port;                  /* our disk relay's TCP port, 0 = no disk */
  struct nc__relay *relay;       /* the disk relay into QEMU's NBD socket */
  bool tls;                      /* DWCP and the disk relay over TLS 1.3 */
  bool src_pinned;
  uint8_t src_fp[NC_TLS_FP_LEN]; /* the source's certificate, pinned */
  char source[64]; /* the source node's name */
  bool has_prev;                 /* the source has a record of this VM: */
  uint8_t prev_digest[16];       /* its digest */
  uint8_t *plain;                /* a DATA frame, unpacked: BATCH_MAX */
  uint8_t *out;                  /* the stream rebuilt for QEMU: OUT_MAX */
  size_t olen;
};


/* Seeds the page cache with one boot file, once per file version per
 * daemon (nc_hde_seed_file; at most 1/SEED_SHARE of the cache). */
static void seed_one(struct nc_migrate *m, const char *path) {
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || strlen(path) >= sizeof m->seeded[0].path)
    return;
  pthread_mutex_lock(&m->mu);
  bool done = false;
  for (int i = 0; i < m->nseeded && !done; i++) {
    struct seeded *x = &m->seeded[i];
    done = strcmp(x->path, path) == 0 && x->dev == st.st_dev && x->ino == st.st_ino &&
           x->size == st.st_size && x->mtime.tv_sec == st.st_mtim.tv_sec &&
           x->mtime.tv_nsec == st.st_mtim.tv_nsec;
  }
  pthread_mutex_unlock(&m->mu);
  if (done)
    return;
  int64_t t0 = now_ms();
  uint64_t added = 0;
  int rc = nc_hde_seed_file(m->cfg.pcache, path, nc_pcache_slots(m->cfg.pcache) / SEED_SHARE,
                            &added);
  nc_info("migrate", "page cache: seeded %llu new pages from %s in %lld ms%s%s",
          (unsigned long long)added, path, (long long)(now_ms() - t0), rc ? ": " : "",
          rc ? nc_strerror(rc) : "");
  pthread_mutex_lock(&m->mu);
  struct seeded *x = &m->seeded[m->nseeded < SEEDED_MAX ? m->nseeded++ : SEEDED_MAX - 1];
  snprintf(x->path, sizeof x->path, "%s", path);
  x->dev = st.st_dev;
  x->ino = st.st_ino;
  x->size = st.st_size;
  x->mtime = st.st_mtim;
  pthread_mutex_unlock(&m->mu);
}

static void seed_cb(void *arg, bool kernel, const char *path) {
  (void)kernel;
  seed_one(arg, path);
}

/* The pages a guest holds of the kernel and initramfs it booted from are
 * in this node's copy of the same image: seed them, so the source can
 * send references for them, and deltas against them (bootmap.h). */
static void seed_boot_files(struct dst *d) {
  if (d->m->cfg.pcache)
    boot_files(d->x, seed_cb, d->m);
}

/* Writes the rebuilt stream gathered so far to the destination QEMU. */
static int dst_out_flush(struct dst *d, struct nc_errinfo *err) {
  int rc = d->olen ? nc__write_all(d->qemu_fd, d->out, d->olen) : 0;
  d->olen = 0;
  if (rc)
    return nc_errinfo_set(err, 500, "hypervisor_error", NULL,
                          "writing to the destination QEMU: %s", nc_strerror(rc));
  return 0;
}

/* Rebuilds one DATA frame's stream into d->out (pages are decoded, and
 * checked, straight into it) and writes it to QEMU in a few large writes
 * instead of one per page; all of it is written before returning, so QEMU
 * never waits on bytes we hold while we wait on the network. */
static int dst_apply(struct dst *d, const uint8_t *frame, size_t flen, struct nc_errinfo *err) {
  size_t i = 0, n = 0;
  int frc = nc_hde_frame_unpack(d->dec, frame, flen, d->plain, BATCH_MAX, &n);
  if (frc)
    return nc_errinfo_set(err, 502, "peer_protocol", NULL,
                          "a DATA frame from the source does not unpack (%s)", nc_strerror(frc));
  const uint8_t *p = d->plain;
  while (i < n) {
    uint8_t kind = p[i];
    if (kind == REC_OPAQUE && n - i >= 5) {
      uint32_t len = (uint32_t)get_be(p + i + 1, 4);
      if (len > n - i - 5)
        break;
      if (d->olen + len > OUT_MAX && dst_out_flush(d, err))
        return -EIO;
      if (len > OUT_MAX) { /* cannot happen with OPAQUE_CHUNK records; still safe */
        int rc = nc__write_all(d->qemu_fd, p + i + 5, len);
        if (rc)
          return nc_errinfo_set(err, 500, "hypervisor_error", NULL,
                                "writing to the destination QEMU: %s", nc_strerror(rc));
      } else {
        memcpy(d->out + d->olen, p + i + 5, len);
        d->olen += len;
      }
      i += 5 + len;
    } else if (kind == REC_PAGE && n - i >= 11) {
      uint64_t key = get_be(p + i + 1, 8);
      uint16_t tlen = (uint16_t)get_be(p + i + 9, 2);
      if (tlen > n - i - 11)
        break;
      if (d->olen + NC_HDE_PAGE > OUT_MAX && dst_out_flush(d, err))
        return -EIO;
      /* A page that fails its own check is never counted in olen, so it
       * is never written. One checked with its frame (hde.h) may reach
       * QEMU before the frame's check fails; the guest never runs on it:
       * the check fails the migration, which discards this QEMU, and we
       * resume only after the last frame. */
      int rc = nc_hde_decode(d->dec, key, p + i + 11, tlen, d->out + d->olen);
      if (rc)
        return nc_errinfo_set(err, 500, "corrupt_page", NULL,
                              "a page could not be rebuilt (%s); stopping before the guest "
                              "sees it",
                              nc_strerror(rc));
      d->olen += NC_HDE_PAGE;
      i += 11 + tlen;
    } else {
      break;
    }
  }
  if (i != n)
    return nc_errinfo_set(err, 502, "peer_protocol", NULL, "malformed DATA message from the source");
  int crc = nc_hde_dec_frame_end(d->dec);
  if (crc)
    return nc_errinfo_set(err, 500, "corrupt_page", NULL,
                          "the pages of a DATA frame do not match its check (%s); stopping "
                          "before the guest runs on them",
                          nc_strerror(crc));
  return dst_out_flush(d, err) ? -EIO : 0;
}

static int dst_run(struct dst *d, struct nc_errinfo *err) {
  struct nc_op *op = nc_vmm_ext_op(d->x);
  nc_op_running(op, "waiting for the source's DWCP streams");
  struct nc_amst_config ac = {.streams = d->streams,
                              .bbr = true,
                              .send_window_bytes = WINDOW_BYTES,
                              .recv_window_bytes = WINDOW_BYTES,
                              .tls = d->tls ? d->m->cfg.tls : NULL,
                              .tls_peer_fp = d->tls && d->src_pinned ? d->src_fp : NULL};
  track_listener(d->m, d->l, true);
  int rc = nc_amst_accept(d->l, &ac, d->session, ACCEPT_TIMEOUT_MS, &d->a);
  track_listener(d->m, d->l, false);
  nc_amst_listener_close(d->l);
  d->l = NULL;
  if (rc)
    return nc_errinfo_set(err, 502, "peer_unreachable", NULL,
                          "the source did not open its DWCP streams%s: %s",
                          d->tls ? " (TLS; a connection with another certificate is refused)" : "",
                          nc_strerror(rc));
  track(d->m, d->a, true);
  struct nc_amst_stats cs;
  nc_amst_stats(d->a, &cs);
  nc_info("migrate", "incoming vm \"%s\": %d DWCP streams from the source over %s",
          nc_vmm_ext_name(d->x), d->streams, cs.tls[0] ? cs.tls : "plain TCP");

  /* Our page cache's summary, and the promises that go with it. */
  seed_boot_files(d);
  uint64_t guest_pages = 0;
  json_t *spec = nc_vmm_ext_spec(d->x);
  guest_pages = (uint64_t)json_integer_value(json_object_get(spec, "memory_bytes")) / NC_HDE_PAGE;
  json_decref(spec);
  struct nc_hde_params hp = {.dedup = true, .delta_cache_bytes = DEFAULT_DELTA_CACHE};
  uint8_t *summary = NULL;
  size_t slen = 0;
  if (d->m->cfg.pcache) {
    /* Reserve only slots nothing occupies: what the cache already holds is
     * worth more (the summary lets the source reference all of it; a VM
     * coming back finds most of its pages here). */
    struct nc_pcache *pc = d->m->cfg.pcache;
    uint64_t held = nc_pcache_count(pc), slots = nc_pcache_slots(pc);
    uint64_t want = slots > held ? slots - held : 0;
    uint64_t granted = 0;
    if (want > guest_pages)
      want = guest_pages;
    if (want > 0 && nc_pcache_reserve(pc, d->session64, want, &granted) == 0)
      hp.new_pages_quota = granted;
    if (nc_pcache_summary(d->m->cfg.pcache, d->session64, &summary, &slen) != 0) {
      summary = NULL; /* no summary: the source simply references nothing old */
      slen = 0;
    }
  }
  if (slen > SUMMARY_MAX) { /* the source would refuse it: reference nothing old */
    slen = 0;
    nc_warn("migrate", "page-cache summary over %u bytes; sending none", SUMMARY_MAX);
  }
  /* The record of this VM's last migration, when the source has the same
   * one: which of its pages we still hold (listed in the summary, so
   * pinned), and those leave the summary. */
  struct nc_hde_rec *prev = NULL;
  uint8_t *held = NULL;
  size_t held_len = 0;
  if (d->has_prev && summary && slen > 0 && (prev = rec_load(d->m, nc_vmm_ext_name(d->x)))) {
    uint8_t dg[16];
    nc_hde_rec_digest(prev, dg);
    if (memcmp(dg, d->prev_digest, 16) != 0 ||
        nc_hde_rec_match(prev, summary, &slen, &held, &held_len) != 0) {
      free(held);
      held = NULL;
      held_len = 0;
    }
  }
  uint64_t nheld = 0;
  for (size_t i = 0; i < held_len; i++)
    nheld += (uint64_t)__builtin_popcount(held[i]);
  nc_info("migrate", "incoming vm \"%s\": summary of %llu cached pages; %llu of the %llu pages "
          "of the last migration's record held%s",
          nc_vmm_ext_name(d->x), (unsigned long long)(slen >= 9 ? (slen - 9) / 16 : 0),
          (unsigned long long)nheld, (unsigned long long)nc_hde_rec_count(prev),
          d->has_prev ? "" : " (the source has no record)");
  uint8_t msg[40];
  put_be64(msg, d->session64);
  put_be64(msg + 8, hp.new_pages_quota);
  put_be64(msg + 16, hp.delta_cache_bytes);
  put_be64(msg + 24, slen);
  put_be64(msg + 32, held_len);
  rc = nc_amst_send(d->a, MSG_SUMMARY, msg, sizeof msg);
  for (size_t off = 0; rc == 0 && off < slen; off += SUMMARY_CHUNK) {
    size_t n = slen - off < SUMMARY_CHUNK ? slen - off : SUMMARY_CHUNK;
    rc = nc_amst_send(d->a, MSG_SUMMARY_PART, summary + off, n);
  }
  for (size_t off = 0; rc == 0 && off < held_len; off += SUMMARY_CHUNK) {
    size_t n = held_len - off < SUMMARY_CHUNK ? held_len - off : SUMMARY_CHUNK;
    rc = nc_amst_send(d->a, MSG_SUMMARY_PART, held + off, n);
  }
  free(summary);
  if (rc) {
    free(held);
    nc_hde_rec_free(prev);
    return nc_errinfo_set(err, 502, "link_failed", NULL, "sending the summary: %s",
                          nc_strerror(rc));
  }
  rc = nc_hde_dec_new(&hp, d->m->cfg.pcache, d->session64, &d->dec);
  if (rc == 0 && held_len > 0)
    rc = nc_hde_dec_set_prev(d->dec, prev, held, held_len);
  free(held);
  nc_hde_rec_free(prev);
  if (rc == 0 && (!(d->plain = malloc(BATCH_MAX)) || !(d->out = malloc(OUT_MAX))))
    rc = -ENOMEM;
  if (rc)
    return nc_errinfo_set(err, 500, "internal", NULL, "cannot set up the page decoder");

  char sock[1200];
  snprintf(sock, sizeof sock, "%s/mig-in.sock", nc_vmm_ext_run_dir(d->x));
  d->qemu_fd = nc__unix_connect(sock, 10000);
  if (d->qemu_fd < 0)
    return nc_errinfo_set(err, 500, "hypervisor_error", NULL,
                          "cannot connect to the destination QEMU's incoming socket: %s",
                          nc_strerror(d->qemu_fd));

  nc_op_running(op, "receiving");
  int64_t cpu0 = thread_cpu_ms();
  for (;;) {
    uint8_t type;
    void *p = NULL;
    size_t n = 0;
    rc = nc_amst_recv(d->a, 60000, &type, &p, &n);
    if (rc)
      return nc_errinfo_set(err, 502, "link_failed", NULL,
                            "the DWCP session with the source failed: %s", nc_strerror(rc));
    if (type == MSG_DATA) {
      rc = dst_apply(d, p, n, err);
      free(p);
      if (rc) {
        nc_amst_send(d->a, MSG_ABORT, err->message, strlen(err->message));
        return rc;
      }
    } else if (type == MSG_PROBE) {
      free(p);
    } else if (type == MSG_END) {
      free(p);
      break;
    } else if (type == MSG_ABORT) {
      nc_errinfo_set(err, 409, "aborted", NULL, "the source aborted: %.*s",
                     (int)(n < 200 ? n : 200), (char *)p);
      free(p);
      return NC_E_CANCELLED;
    } else {
      free(p);
      return nc_errinfo_set(err, 502, "peer_protocol", NULL, "unexpected message %u", type);
    }
  }
  shutdown(d->qemu_fd, SHUT_WR);
  int64_t t_end = now_ms();
  int64_t rx_cpu_ms = thread_cpu_ms() - cpu0;

  /* QEMU must have loaded everything before we take over. */
  char qstatus[32] = "";
  for (int i = 0; i < 12000; i++) {
    json_t *info = NULL;
    if (qmp(d->x, "query-migrate", NULL, &info, NULL, 0) == 0) {
      const char *st = json_string_value(json_object_get(info, "status"));
      snprintf(qstatus, sizeof qstatus, "%s", st ? st : "");
    }
    json_decref(info);
    if (strcmp(qstatus, "completed") == 0 || strcmp(qstatus, "failed") == 0)
      break;
    usleep(5 * 1000); /* the guest is paused: every millisecond is downtime */
  }
  if (strcmp(qstatus, "completed") != 0) {
    nc_errinfo_set(err, 500, "hypervisor_error", NULL,
                   "the destination QEMU did not accept the state (status \"%s\"; see its "
                   "qemu.log)",
                   qstatus);
    nc_amst_send(d->a, MSG_ABORT, err->message, strlen(err->message));
    return NC_E_HV;
  }
  int64_t t_loaded = now_ms();
  /* The source grants the VM right behind its stream (COMMIT_ACK), so it
   * is normally here already; COMMIT_REQ tells it we loaded the state
   * (and asks an older source, which waits for it before granting). */
  rc = nc_amst_send(d->a, MSG_COMMIT_REQ, NULL, 0);
  uint8_t type = 0;
  void *p = NULL;
  size_t n = 0;
  if (rc == 0)
    rc = nc_amst_recv(d->a, COMMIT_TIMEOUT_MS, &type, &p, &n);
  free(p);
  if (rc || type != MSG_COMMIT_ACK)
    return nc_errinfo_set(err, 502, "link_failed", NULL,
                          "the source did not confirm the hand-over (%s); not resuming",
                          rc ? nc_strerror(rc) : "unexpected message");
  int64_t t_grant = now_ms();
  /* We own the VM now: record it, then resume. The source finished the
   * disk copy before it granted. The writable export must be gone before
   * cont: QEMU refuses to activate the disk for the guest while another
   * user holds write permission on it. */
  nc__relay_stop(d->relay); /* the source finished the disk copy */
  d->relay = NULL;
  if (d->nbd_port > 0) {
    qmp(d->x, "block-export-del", json_pack("{s:s, s:s}", "id", "mig-disk0", "mode", "hard"),
        NULL, NULL, 0);
    qmp(d->x, "nbd-server-stop", NULL, NULL, NULL, 0);
    char nbd_sock[1200];
    snprintf(nbd_sock, sizeof nbd_sock, "%s/mig-nbd-in.sock", nc_vmm_ext_run_dir(d->x));
    unlink(nbd_sock);
  }

  /* In a cluster the record of who runs the VM moves here first (a
   * compare-and-swap); without it the guest must not resume here, and
   * the source, finding no VM here, resumes its own copy. */
  if (d->m->cfg.claim) {
    rc = d->m->cfg.claim(d->m->cfg.claim_data, nc_vmm_ext_name(d->x), d->source);
    if (rc) {
      nc_amst_send(d->a, MSG_ABORT, "ownership", 9);
      return nc_errinfo_set(err, 409, "ownership_failed", NULL,
                            "could not take vm \"%s\" over in the cluster store (%s); not "
                            "resuming it here",
                            nc_vmm_ext_name(d->x), nc_strerror(rc));
    }
  }
  nc_vmm_ext_set_state(d->x, NC_VM_PAUSED, "migrated in; resuming");
  char desc[200];
  rc = qmp(d->x, "cont", NULL, NULL, desc, sizeof desc);
  if (rc) {
    nc_vmm_ext_set_state(d->x, NC_VM_FAILED, "migrated in but QEMU would not resume");
    return nc_errinfo_set(err, 500, "hypervisor_error", NULL, "cont failed: %s", desc);
  }
  nc_vmm_ext_set_state(d->x, NC_VM_RUNNING, "migrated in");
  nc_amst_send(d->a, MSG_RESUMED, NULL, 0);
  int64_t t_running = now_ms();
  nc_info("migrate", "incoming vm \"%s\": hand-over: from the stream's end, +%lld ms QEMU "
          "loaded, +%lld ms granted, +%lld ms running; receiving thread CPU %lld ms (unpack, "
          "decode, check, cache, write to QEMU)",
          nc_vmm_ext_name(d->x), (long long)(t_loaded - t_end), (long long)(t_grant - t_end),
          (long long)(t_running - t_end), (long long)rx_cpu_ms);
  nc_amst_flush(d->a, 5000);
  struct nc_hde_rec *r = NULL;
  if (d->m->cfg.pcache && nc_hde_dec_record(d->dec, &r) == 0)
    rec_store(d->m, nc_vmm_ext_name(d->x), r); /* for the way back */
  nc_hde_rec_free(r);
  nc_pcache_flush(d->m->cfg.pcache);
  return 0;
}

static void *dst_main(void *arg) {
  struct dst *d = arg;
  struct nc_errinfo err = {0};
  d->qemu_fd = -1;
  int rc = dst_run(d, &err);
  if (rc)
    nc_warn("migrate", "incoming vm \"%s\": %s", nc_vmm_ext_name(d->x),
            err.message[0] ? err.message : nc_strerror(rc));
  if (d->qemu_fd >= 0)
    close(d->qemu_fd);
  nc__relay_stop(d->relay);
  if (d->a) {
    track(d->m, d->a, false);
    if (rc)
      nc_amst_abort(d->a);
    nc_amst_close(d->a);
  }
  nc_amst_listener_close(d->l);
  nc_hde_dec_free(d->dec);
  free(d->plain);
  free(d->out);
  if (d->m->cfg.pcache)
    nc_pcache_unpin_all(d->m->cfg.pcache, d->session64);
  struct nc_migrate *m = d->m;
  if (m->m_total)
    nc_metric_add(m->m_total,
                  (const char *const[]){"destination", rc == 0 ? "succeeded" : "failed"}, 1);
  nc_vmm_ext_finish(d->x, rc, &err, rc == 0 ? NC_EXT_KEEP : NC_EXT_REMOVE);
  free(d);
  thread_done(m);
  return NULL;
}

int nc_migrate_incoming(struct nc_migrate *m, json_t *body, json_t **out,
                        struct nc_errinfo *err) {
  static const char *const allowed[] = {"vm",          "source",      "streams",     "tls",
                                        "fingerprint", "prev_record", "hde_version", NULL};
  if (!json_is_object(body))
    return nc_errinfo_set(err, 400, "bad_json", NULL, "the request body must be a JSON object");
  int rc = nc_json_check_fields(body, allowed, "incoming migration", err);
  if (rc)
    return rc;
  /* The page format: nodes of different releases must not get as far as
   * a half-decoded stream (a missing field is a source from before v3). */
  json_t *hv = json_object_get(body, "hde_version");
  if (!json_is_integer(hv) || json_integer_value(hv) != NC_HDE_VERSION)
    return nc_errinfo_set(err, 409, "incompatible_version", "hde_version",
                          "the source encodes memory pages in DWCP format v%lld and this node "
                          "decodes v%d: run the same NovaCron release on both nodes",
                          json_is_integer(hv) ? (long long)json_integer_value(hv) : 2LL,
                          NC_HDE_VERSION);
  json_t *vm = json_object_get(body, "vm");
  json_t *st = json_object_get(body, "streams");
  if (!json_is_object(vm))
    return nc_errinfo_set(err, 400, "missing_field", "vm", "field \"vm\" (the spec) is required");
  if (!json_is_integer(st) || json_integer_value(st) < 1 ||
      json_integer_value(st) > NC_AMST_STREAMS_MAX)
    return nc_errinfo_set(err, 400, "invalid_field", "streams", "streams must be 1 to %d",
                          NC_AMST_STREAMS_MAX);
  /* TLS: the source asks, our dwcp_tls may insist (a missing "tls" is an
   * older source: plain TCP). */
  json_t *tv = json_object_get(body, "tls");
  json_t *fv = json_object_get(body, "fingerprint");
  uint8_t src_fp[NC_TLS_FP_LEN];
  if (tv && !json_is_boolean(tv))
    return nc_errinfo_set(err, 400, "invalid_field", "tls", "tls must be true or false");
  if (fv && nc_tls_fp_parse(json_string_value(fv), src_fp) != 0)
    return nc_errinfo_set(err, 400, "invalid_field", "fingerprint",
                          "fingerprint must be the SHA-256 of the source's certificate, 64 hex "
                          "digits");
  json_t *pv = json_object_get(body, "prev_record");
  uint8_t prev_digest[16];
  const char *pvs = json_string_value(pv);
  if (pv && (!pvs || strlen(pvs) != 32))
    return nc_errinfo_set(err, 400, "invalid_field", "prev_record",
                          "prev_record must be a record digest, 32 hex digits");
  for (int i = 0; pvs && i < 16; i++) {
    unsigned v;
    if (sscanf(pvs + 2 * i, "%2x", &v) != 1)
      return nc_errinfo_set(err, 400, "invalid_field", "prev_record",
                            "prev_record must be a record digest, 32 hex digits");
    prev_digest[i] = (uint8_t)v;
  }
  bool want_tls = json_is_true(tv);
  bool need_tls = m->cfg.tls_mode == NC_MIGRATE_TLS_ON ||
                  (m->cfg.tls_mode == NC_MIGRATE_TLS_AUTO && !is_loopback(m->cfg.dwcp_host));
  if (!want_tls && need_tls)
    return nc_errinfo_set(err, 409, "tls_required", "tls",
                          "this node takes DWCP only over TLS 1.3 (dwcp_tls = %s, DWCP address "
                          "%s); the source asked for plain TCP: set dwcp_tls = auto or on there "
                          "(or off on both nodes, on a trusted network)",
                          tls_mode_name(m->cfg.tls_mode), m->cfg.dwcp_host);
  if (want_tls && !m->cfg.tls)
    return nc_errinfo_set(err, 503, "unavailable", "tls",
                          "this node has no DWCP key, so it cannot take TLS (see its log)");
  if (want_tls && !fv)
    return nc_errinfo_set(err, 400, "missing_field", "fingerprint",
                          "with tls, fingerprint (the source's certificate SHA-256) is required");
  struct dst *d = calloc(1, sizeof *d);
  if (!d)
    return -ENOMEM;
  d->m = m;
  d->streams = (int)json_integer_value(st);
  d->tls = want_tls;
  d->src_pinned = want_tls;
  d->has_prev = pvs != NULL;
  memcpy(d->prev_digest, prev_digest, pvs ? sizeof prev_digest : 0);
  memcpy(d->src_fp, src_fp, want_tls ? sizeof src_fp : 0);
  json_t *src = json_object_get(body, "source");
  snprintf(d->source, sizeof d->source, "%s", json_is_string(src) ? json_string_value(src) : "");
  nc_rand_system()->fill(nc_rand_system(), d->session, sizeof d->session);
  memcpy(&d->session64, d->session, sizeof d->session64);
  d->session64 |= 1; /* the page cache reserves 0 for "no session" */
  rc = nc_amst_listen(m->cfg.dwcp_host, 0, &d->l);
  if (rc) {
    free(d);
    return nc_errinfo_set(err, 503, "unavailable", NULL, "cannot open a DWCP listener on %s: %s",
                          m->cfg.dwcp_host, nc_strerror(rc));
  }
  rc = nc_vmm_ext_incoming(m->cfg.vmm, vm, "vm.migrate-in", &d->x, err);
  if (rc) {
    nc_amst_listener_close(d->l);
    free(d);
    return rc;
  }
  /* QEMU listens for the stream on a unix socket in the VM's directory. */
  char uri[1300], desc[256];
  snprintf(uri, sizeof uri, "unix:%s/mig-in.sock", nc_vmm_ext_run_dir(d->x));
  rc = qmp(d->x, "migrate-incoming", json_pack("{s:s}", "uri", uri), NULL, desc, sizeof desc);
  if (rc) {
    nc_errinfo_set(err, 500, "hypervisor_error", NULL, "migrate-incoming failed: %s", desc);
    nc_amst_listener_close(d->l);
    nc_vmm_ext_finish(d->x, rc, err, NC_EXT_REMOVE);
    free(d);
    return rc;
  }
  if (has_disk(d->x)) {
    /* The source mirrors its disk overlay into this export. QEMU serves it
     * on a unix socket only; the network side is our relay (relay.h),
     * which admits only the source (TLS pin, session id). */
    char nbd_sock[1200];
    snprintf(nbd_sock, sizeof nbd_sock, "%s/mig-nbd-in.sock", nc_vmm_ext_run_dir(d->x));
    unlink(nbd_sock);
    rc = qmp(d->x, "nbd-server-start",
             json_pack("{s:{s:s, s:{s:s}}}", "addr", "type", "unix", "data", "path", nbd_sock),
             NULL, desc, sizeof desc);
    if (rc == 0)
      rc = qmp(d->x, "block-export-add",
               json_pack("{s:s, s:s, s:s, s:b, s:s}", "type", "nbd", "id", "mig-disk0",
                         "node-name", "disk0", "writable", 1, "name", "disk0"),
               NULL, desc, sizeof desc);
    if (rc == 0) {
      rc = nc__relay_dest(m->cfg.dwcp_host, d->tls ? m->cfg.tls : NULL,
                          d->tls ? d->src_fp : NULL, d->session, nbd_sock, &d->nbd_port,
                          &d->relay);
      if (rc)
        snprintf(desc, sizeof desc, "cannot open the disk relay on %s: %s", m->cfg.dwcp_host,
                 nc_strerror(rc));
    }
    if (rc) {
      nc_errinfo_set(err, 500, "hypervisor_error", NULL, "cannot export the disk: %s", desc);
      nc__relay_stop(d->relay);
      nc_amst_listener_close(d->l);
      nc_vmm_ext_finish(d->x, rc, err, NC_EXT_REMOVE);
      free(d);
      return rc;
    }
  }
  char hex[33];
  for (int i = 0; i < 16; i++)
    snprintf(hex + 2 * i, 3, "%02x", d->session[i]);
  *out = json_pack("{s:s, s:i, s:i, s:s, s:b}", "session", hex, "port",
                   nc_amst_listener_port(d->l), "nbd_port", d->nbd_port, "operation",
                   nc_op_id(nc_vmm_ext_op(d->x)), "tls", d->tls);
  if (m->cfg.tls) {
    char fp[NC_TLS_FP_HEX_LEN + 1];
    nc_tls_fp_to_hex(nc_tls_fingerprint(m->cfg.tls), fp);
    json_object_set_new(*out, "fingerprint", json_string(fp));
  }
  rc = spawn(m, dst_main, d);
  if (rc) {
    json_decref(*out);
    *out = NULL;
    nc__relay_stop(d->relay);
    nc_amst_listener_close(d->l);
    nc_vmm_ext_finish(d->x, rc, err, NC_EXT_REMOVE);
    free(d);
    return nc_errinfo_set(err, 503, "unavailable", NULL, "cannot start the receiver");
  }
  return 0;
}

/* ---- service ------------------------------------------------------------ */

int nc_migrate_new(const struct nc_migrate_config *cfg, struct nc_migrate **out) {
  struct nc_migrate *m = calloc(1, sizeof *m);
  if (!m)
    return -ENOMEM;
  m->cfg = *cfg;
  /* Pages stored while migrating go to the file in batches (hde.h): a
   * third of the kernel's cost of one write each. */
  if (cfg->pcache && nc_pcache_set_write_behind(cfg->pcache, true) != 0)
    nc_warn("migrate", "page cache: no memory for write-behind; writing each page");
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
  }
  *out = m;
  return 0;
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
  free(m);
}
