/* Internals shared by the parts of live migration. Not part of the
 * interface: the rest of the tree sees only migrate.h.
 *
 *   migrate.c   the service: nc_migrate_new/free, threads, sessions and
 *               listeners to abort at shutdown
 *   vmctl.c     QMP on the VM's QEMU: run state, the disk mirror, boot files
 *   record.c    per-VM records of the last migration (hde.h, nc_hde_rec)
 *   source.c    nc_migrate_start and the source's thread: the destination,
 *               the link, QEMU's outgoing stream
 *   stream.c    source: QEMU's stream to HDE-encoded DATA frames (the pump)
 *   handover.c  source: precopy, the hand-over and rollback (exactly one
 *               copy, see migrate.h)
 *   dest.c      nc_migrate_incoming and the destination's thread
 *   basedisk.c  the base disk both nodes must share: named by the source,
 *               checked by the destination before it prepares anything */
#ifndef NC_MIGRATE_MIGRATE_INT_H
#define NC_MIGRATE_MIGRATE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "dwcp/amst.h"
#include "dwcp/hde.h"
#include "dwcp/tls.h"
#include "migrate/migrate.h"
#include "migrate/pace.h"
#include "util/clock.h"
#include "vm/spec.h"

struct nc__relay;
struct nc_bootmap;
struct nc_qs_parser;
struct nc_vmm_ext;
struct nc_imgid_cache;

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
  struct nc_metric *m_total, *m_bytes_raw, *m_bytes_wire, *m_downtime, *m_duration;
  struct seeded seeded[SEEDED_MAX]; /* under mu */
  int nseeded;
  struct nc_imgid_cache *imgids; /* base-disk identities (basedisk.c) */
};

/* One outgoing migration: source.c sets it up, stream.c's pump thread
 * fills and sends the DATA frames, handover.c ends it. Owned by the
 * source's thread (src_main), which frees it. */
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

  /* The operation thread's, carried between the phases of src_run. */
  int64_t t0_ms;            /* when the migration began */
  int64_t rtt_ms;           /* measured by the DWCP handshake */
  char why[160];            /* why this mode (choose_mode) */
  char sock[1200];          /* our unix socket QEMU migrates into */
  struct nc__pace pace;     /* the send window and QEMU's downtime-limit */
  int64_t qemu_downtime_ms; /* QEMU's own figure once "completed", else -1 */
  int64_t downtime_ms;      /* the guest's pause as seen here (hand-over), or -1 */
  bool handed_over; /* granted (COMMIT_ACK): never resume on our own; cleared
                       again only when the destination answers ABORT */

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

/* What the destination offered in its SUMMARY message (and the
 * SUMMARY_PARTs after it): the encoder's parameters and its page-cache
 * summary, slen bytes, followed by held_len bytes of the held bitmap. */
struct src_offer {
  struct nc_hde_params hp;
  uint8_t *summary;
  uint64_t slen;
  uint64_t held_len;
};

/* ---- small helpers ------------------------------------------------------ */

static inline void put_be16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void put_be32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static inline void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static inline uint64_t get_be(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

static inline int64_t now_ms(void) { return nc_mono_ms(nc_clock_system()); }

/* ---- migrate.c: the service --------------------------------------------- */

/* CPU time of the calling thread, for the logs (where the CPU goes). */
int64_t nc__mig_thread_cpu_ms(void);
/* Registers (on) or drops a live session so shutdown can abort it; one
 * registered while stopping is aborted at once. a stays the caller's. */
void nc__mig_track(struct nc_migrate *m, struct nc_amst *a, bool on);
/* The same for a listener waiting for its session. */
void nc__mig_track_listener(struct nc_migrate *m, struct nc_amst_listener *l, bool on);
/* Is nc_migrate_free under way? */
bool nc__mig_stopping(struct nc_migrate *m);
/* Runs fn(arg) on a detached thread that nc_migrate_free waits for; fn
 * must end with nc__mig_thread_done. -ECANCELED while stopping; on any
 * error fn never runs and arg stays the caller's. */
int nc__mig_spawn(struct nc_migrate *m, void *(*fn)(void *), void *arg);
/* The last call of a thread nc__mig_spawn started; m may be freed after. */
void nc__mig_thread_done(struct nc_migrate *m);
/* novacron_migrations_total{role, result} += 1 (no-op without metrics). */
void nc__mig_count(struct nc_migrate *m, const char *role, const char *result);
/* Optional integer field `name` of a request, lo..hi: *out is left as it is
 * when the field is absent; else 0 or a 400 naming the field and the range
 * ("<name> must be lo to hi<unit>"). */
int nc__mig_int_field(json_t *body, const char *name, int lo, int hi, const char *unit, int *out,
                      struct nc_errinfo *err);
/* Ends a session's AMST side: untracked, aborted when the migration
 * failed (the peer sees its streams drop), closed. Accepts a NULL a. */
void nc__mig_session_end(struct nc_migrate *m, struct nc_amst *a, int rc);
/* Is host a loopback address (127.0.0.0/8, ::1, ::ffff:127.x)? Then
 * dwcp_tls = auto leaves TLS off. */
bool nc__mig_is_loopback(const char *host);
/* "auto", "on" or "off", as in the configuration (static strings). */
const char *nc__mig_tls_mode_name(enum nc_migrate_tls t);

/* ---- vmctl.c: the VM's QEMU --------------------------------------------- */

/* QMP on the VM's QEMU, under the VM's hypervisor lock. args is stolen;
 * *ret (when ret is not NULL) is the caller's; desc gets QMP's error. */
int nc__mig_qmp(struct nc_vmm_ext *x, const char *cmd, json_t *args, json_t **ret, char *desc,
                size_t dlen);
/* QEMU's run state ("running", "paused", ...; "" when it does not say),
 * in buf. Returns buf. */
const char *nc__mig_run_state(struct nc_vmm_ext *x, char *buf, size_t len);
/* Does the VM have our qcow2 disk node? */
bool nc__mig_has_disk(struct nc_vmm_ext *x);
/* Polls the disk mirror job: 1 ready, 0 not yet, <0 gone or failed. */
int nc__mig_mirror_state(struct nc_vmm_ext *x, uint64_t *done, uint64_t *total);
/* Ends the mirror (on a ready job, cancel leaves the target a consistent
 * copy: the job ends only once the target acknowledged every write; with
 * force it just stops) and, with del, removes the NBD client node. */
void nc__mig_mirror_end(struct nc_vmm_ext *x, bool force, bool del);
/* Calls fn with each -kernel and -initrd file our QEMU for this VM was
 * started with (the image registered here under the VM's image name),
 * read from its command line. */
void nc__mig_boot_files(struct nc_vmm_ext *x,
                        void (*fn)(void *arg, bool kernel, const char *path), void *arg);

/* ---- record.c: per-VM records of the last migration --------------------- */

/* This node's record of the VM, or NULL (none, or unreadable: a warning).
 * The caller's. */
struct nc_hde_rec *nc__mig_rec_load(struct nc_migrate *m, const char *name);
/* Saves r (NULL: nothing) as the VM's record and prunes the oldest; r
 * stays the caller's. Failures are warnings: a record is only a hint. */
void nc__mig_rec_store(struct nc_migrate *m, const char *name, struct nc_hde_rec *r);

/* ---- basedisk.c: the base disk both nodes must share ---------------------- */

/* Base-disk identities a daemon keeps (vm/imgid.h), one per file. */
#define IMGID_CACHE_ENTRIES 64
/* Source: *field is the prepare request's "base_disk" for vm, of image
 * `image`: its base disk's identity, or JSON null when the image has none
 * (new reference, the caller's). On failure err says why (the base disk
 * cannot be read) and *field is untouched. */
int nc__mig_src_base_disk(struct nc_migrate *m, const char *vm, const char *image,
                          json_t **field, struct nc_errinfo *err);
/* Destination, before anything is created for an incoming request body:
 * 0 when the source's "base_disk" is what the image of the same name has
 * here (both null included, and when the spec or the image cannot be
 * used, which nc_vmm_ext_incoming refuses next). Else 409 image_mismatch,
 * 409 incompatible_version (no base_disk: an older source), 400 (a
 * malformed one) or 422 (our base disk cannot be read), in err. */
int nc__mig_dst_check_base_disk(struct nc_migrate *m, json_t *body, struct nc_errinfo *err);

/* ---- stream.c: source, QEMU's stream to DATA frames --------------------- */

/* Sets up s->enc (for what the destination offered, and the VM's kernel
 * file), s->qs, s->batch and s->frame. Frees o->summary on every path. On
 * failure err says why. */
int nc__mig_src_encoder(struct src *s, struct src_offer *o, struct nc_errinfo *err);
/* The pump thread (arg: the struct src): reads s->qemu_fd until EOF and
 * sends it on, then END; ends with pump_done and pump_rc under s->mu. */
void *nc__mig_src_pump(void *arg);

/* ---- handover.c: source, precopy to the end ----------------------------- */

/* Watches QEMU until its migration completes and the pump sent it all
 * (0), or it fails, is cancelled or does not converge (the destination
 * gets ABORT and the session is aborted; err says why). */
int nc__mig_src_precopy(struct src *s, struct nc_errinfo *err);
/* The hand-over after precopy. 0: the destination runs the VM. Failing
 * with s->handed_over false: the destination refused it, roll back
 * (nc__mig_src_abandon). Failing with s->handed_over true: settled with
 * the destination already (resumed here, or left paused and failed). */
int nc__mig_src_hand_over(struct src *s, struct nc_errinfo *err);
/* After a successful hand-over: the record, the result, the metrics. */
void nc__mig_src_report(struct src *s);
/* Undoes what a failure before the hand-over left (the disk mirror, the
 * relay; resumes the VM here) and counts it. Returns rc, or NC_E_HV for 0. */
int nc__mig_src_abandon(struct src *s, int rc);

#endif
