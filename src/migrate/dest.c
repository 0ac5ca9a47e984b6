/* Destination: nc_migrate_incoming prepares the VM (its QEMU waiting with
 * -incoming, the disk export behind our relay, a DWCP listener) and the
 * destination's thread (dst_main) takes the migration from there: offers
 * its page cache, rebuilds QEMU's stream from the DATA frames, and takes
 * the VM over once the source granted it (exactly one copy, see
 * migrate.h). */
#include "migrate/migrate.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwcp/amst.h"
#include "dwcp/hde.h"
#include "dwcp/tls.h"
#include "migrate/migrate_int.h"
#include "migrate/relay.h"
#include "migrate/sockio.h"
#include "obs/metrics.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/hex.h"
#include "util/log.h"
#include "vm/manager.h"
#include "vm/ops.h"
#include "vm/spec.h"

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
  bool keep_failed;  /* on failure, keep the VM here (paused, failed) */
  int64_t end_ms;    /* when the stream ended (END), for the hand-over log */
  int64_t rx_cpu_ms; /* this thread's CPU while receiving, for the same */
};

/* What this node offers the source in SUMMARY (layout in migrate_int.h):
 * the decoder's parameters, the page-cache summary (slen bytes sent of
 * it), and, when the source has the record we have, the held bitmap. */
struct dst_offer {
  struct nc_hde_params hp;
  uint8_t *summary;
  size_t slen;
  struct nc_hde_rec *prev;
  uint8_t *held;
  size_t held_len;
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
    nc__mig_boot_files(d->x, seed_cb, d->m);
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
    return nc_errinfo_set(err, 502, "peer_protocol", NULL,
                          "malformed DATA message from the source");
  int crc = nc_hde_dec_frame_end(d->dec);
  if (crc)
    return nc_errinfo_set(err, 500, "corrupt_page", NULL,
                          "the pages of a DATA frame do not match its check (%s); stopping "
                          "before the guest runs on them",
                          nc_strerror(crc));
  return dst_out_flush(d, err) ? -EIO : 0;
}

/* Waits on d->l (closed after) for the source's DWCP session, d->a. */
static int dst_accept(struct dst *d, struct nc_errinfo *err) {
  nc_op_running(nc_vmm_ext_op(d->x), "waiting for the source's DWCP streams");
  struct nc_amst_config ac = {.streams = d->streams,
                              .bbr = true,
                              .send_window_bytes = WINDOW_BYTES,
                              .recv_window_bytes = WINDOW_BYTES,
                              .tls = d->tls ? d->m->cfg.tls : NULL,
                              .tls_peer_fp = d->tls && d->src_pinned ? d->src_fp : NULL};
  nc__mig_track_listener(d->m, d->l, true);
  int rc = nc_amst_accept(d->l, &ac, d->session, ACCEPT_TIMEOUT_MS, &d->a);
  nc__mig_track_listener(d->m, d->l, false);
  nc_amst_listener_close(d->l);
  d->l = NULL;
  if (rc)
    return nc_errinfo_set(err, 502, "peer_unreachable", NULL,
                          "the source did not open its DWCP streams%s: %s",
                          d->tls ? " (TLS; a connection with another certificate is refused)" : "",
                          nc_strerror(rc));
  nc__mig_track(d->m, d->a, true);
  struct nc_amst_stats cs;
  nc_amst_stats(d->a, &cs);
  nc_info("migrate", "incoming vm \"%s\": %d DWCP streams from the source over %s",
          nc_vmm_ext_name(d->x), d->streams, cs.tls[0] ? cs.tls : "plain TCP");
  return 0;
}

/* Our page cache's summary, and the promises that go with it. */
static void dst_summary(struct dst *d, struct dst_offer *o) {
  seed_boot_files(d);
  uint64_t guest_pages = 0;
  json_t *spec = nc_vmm_ext_spec(d->x);
  guest_pages = (uint64_t)json_integer_value(json_object_get(spec, "memory_bytes")) / NC_HDE_PAGE;
  json_decref(spec);
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
      o->hp.new_pages_quota = granted;
    if (nc_pcache_summary(d->m->cfg.pcache, d->session64, &o->summary, &o->slen) != 0) {
      o->summary = NULL; /* no summary: the source simply references nothing old */
      o->slen = 0;
    }
  }
  if (o->slen > SUMMARY_MAX) { /* the source would refuse it: reference nothing old */
    o->slen = 0;
    nc_warn("migrate", "page-cache summary over %u bytes; sending none", SUMMARY_MAX);
  }
}

/* The record of this VM's last migration, when the source has the same
 * one: which of its pages we still hold (listed in the summary, so
 * pinned), and those leave the summary. */
static void dst_match_prev(struct dst *d, struct dst_offer *o) {
  if (d->has_prev && o->summary && o->slen > 0 &&
      (o->prev = nc__mig_rec_load(d->m, nc_vmm_ext_name(d->x)))) {
    uint8_t dg[16];
    nc_hde_rec_digest(o->prev, dg);
    if (memcmp(dg, d->prev_digest, 16) != 0 ||
        nc_hde_rec_match(o->prev, o->summary, &o->slen, &o->held, &o->held_len) != 0) {
      free(o->held);
      o->held = NULL;
      o->held_len = 0;
    }
  }
}

/* SUMMARY, then the summary and the held bitmap in SUMMARY_PARTs. */
static int dst_send_offer(struct dst *d, const struct dst_offer *o) {
  uint64_t nheld = 0;
  for (size_t i = 0; i < o->held_len; i++)
    nheld += (uint64_t)__builtin_popcount(o->held[i]);
  nc_info("migrate", "incoming vm \"%s\": summary of %llu cached pages; %llu of the %llu pages "
          "of the last migration's record held%s",
          nc_vmm_ext_name(d->x), (unsigned long long)(o->slen >= 9 ? (o->slen - 9) / 16 : 0),
          (unsigned long long)nheld, (unsigned long long)nc_hde_rec_count(o->prev),
          d->has_prev ? "" : " (the source has no record)");
  uint8_t msg[40];
  put_be64(msg, d->session64);
  put_be64(msg + 8, o->hp.new_pages_quota);
  put_be64(msg + 16, o->hp.delta_cache_bytes);
  put_be64(msg + 24, o->slen);
  put_be64(msg + 32, o->held_len);
  int rc = nc_amst_send(d->a, MSG_SUMMARY, msg, sizeof msg);
  for (size_t off = 0; rc == 0 && off < o->slen; off += SUMMARY_CHUNK) {
    size_t n = o->slen - off < SUMMARY_CHUNK ? o->slen - off : SUMMARY_CHUNK;
    rc = nc_amst_send(d->a, MSG_SUMMARY_PART, o->summary + off, n);
  }
  for (size_t off = 0; rc == 0 && off < o->held_len; off += SUMMARY_CHUNK) {
    size_t n = o->held_len - off < SUMMARY_CHUNK ? o->held_len - off : SUMMARY_CHUNK;
    rc = nc_amst_send(d->a, MSG_SUMMARY_PART, o->held + off, n);
  }
  return rc;
}

/* Offers our page cache to the source and sets up the page decoder for
 * what was offered (d->dec, d->plain, d->out). */
static int dst_offer(struct dst *d, struct nc_errinfo *err) {
  struct dst_offer o = {.hp = {.dedup = true, .delta_cache_bytes = DEFAULT_DELTA_CACHE}};
  dst_summary(d, &o);
  dst_match_prev(d, &o);
  int rc = dst_send_offer(d, &o);
  free(o.summary);
  if (rc) {
    free(o.held);
    nc_hde_rec_free(o.prev);
    return nc_errinfo_set(err, 502, "link_failed", NULL, "sending the summary: %s",
                          nc_strerror(rc));
  }
  rc = nc_hde_dec_new(&o.hp, d->m->cfg.pcache, d->session64, &d->dec);
  if (rc == 0 && o.held_len > 0)
    rc = nc_hde_dec_set_prev(d->dec, o.prev, o.held, o.held_len);
  free(o.held);
  nc_hde_rec_free(o.prev);
  if (rc == 0 && (!(d->plain = malloc(BATCH_MAX)) || !(d->out = malloc(OUT_MAX))))
    rc = -ENOMEM;
  if (rc)
    return nc_errinfo_set(err, 500, "internal", NULL, "cannot set up the page decoder");
  return 0;
}

/* Rebuilds QEMU's stream from the DATA frames until END and writes it into
 * the destination QEMU's incoming socket (d->qemu_fd), then ends it. */
static int dst_receive(struct dst *d, struct nc_errinfo *err) {
  char sock[1200];
  snprintf(sock, sizeof sock, "%s/mig-in.sock", nc_vmm_ext_run_dir(d->x));
  d->qemu_fd = nc__unix_connect(sock, 10000);
  if (d->qemu_fd < 0)
    return nc_errinfo_set(err, 500, "hypervisor_error", NULL,
                          "cannot connect to the destination QEMU's incoming socket: %s",
                          nc_strerror(d->qemu_fd));

  nc_op_running(nc_vmm_ext_op(d->x), "receiving");
  int64_t cpu0 = nc__mig_thread_cpu_ms();
  for (;;) {
    uint8_t type;
    void *p = NULL;
    size_t n = 0;
    int rc = nc_amst_recv(d->a, 60000, &type, &p, &n);
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
  d->end_ms = now_ms();
  d->rx_cpu_ms = nc__mig_thread_cpu_ms() - cpu0;
  return 0;
}

/* QEMU must have loaded everything before we take over. */
static int dst_wait_loaded(struct dst *d, struct nc_errinfo *err) {
  char qstatus[32] = "";
  for (int i = 0; i < 12000; i++) {
    json_t *info = NULL;
    if (nc__mig_qmp(d->x, "query-migrate", NULL, &info, NULL, 0) == 0) {
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
  return 0;
}

/* The writable export must be gone before cont: QEMU refuses to activate
 * the disk for the guest while another user holds write permission on
 * it. */
static void dst_end_disk_export(struct dst *d) {
  nc__relay_stop(d->relay); /* the source finished the disk copy */
  d->relay = NULL;
  if (d->nbd_port > 0) {
    nc__mig_qmp(d->x, "block-export-del",
                json_pack("{s:s, s:s}", "id", "mig-disk0", "mode", "hard"), NULL, NULL, 0);
    nc__mig_qmp(d->x, "nbd-server-stop", NULL, NULL, NULL, 0);
    char nbd_sock[1200];
    snprintf(nbd_sock, sizeof nbd_sock, "%s/mig-nbd-in.sock", nc_vmm_ext_run_dir(d->x));
    unlink(nbd_sock);
  }
}

/* Once the source granted the VM: we own it, record that, resume it and
 * confirm (RESUMED). Not resuming on any failure here. */
static int dst_take_over(struct dst *d, struct nc_errinfo *err) {
  int64_t t_loaded = now_ms();
  /* The source grants the VM right behind its stream (COMMIT_ACK), so it
   * is normally here already; COMMIT_REQ tells it we loaded the state
   * (and asks an older source, which waits for it before granting). */
  int rc = nc_amst_send(d->a, MSG_COMMIT_REQ, NULL, 0);
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
   * disk copy before it granted. */
  dst_end_disk_export(d);

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
  rc = nc__mig_qmp(d->x, "cont", NULL, NULL, desc, sizeof desc);
  if (rc) {
    /* The source, finding no VM here, resumes its copy: the record must
     * name it again first, or the cluster (HA) would start a second copy
     * here. If it cannot, keep this paused copy and let the source keep
     * its own paused (it never hears "running"): one of them, by hand. */
    int rel = d->m->cfg.claim && d->m->cfg.release
                  ? d->m->cfg.release(d->m->cfg.claim_data, nc_vmm_ext_name(d->x), d->source)
                  : 0;
    if (rel) {
      d->keep_failed = true;
      nc_vmm_ext_set_state(d->x, NC_VM_FAILED,
                           "migrated in but QEMU would not resume, and the cluster record "
                           "could not be handed back to the source; both copies stay paused: "
                           "resume one, delete the other");
      return nc_errinfo_set(err, 500, "hypervisor_error", NULL,
                            "cont failed: %s; the cluster record could not be handed back (%s)",
                            desc, nc_strerror(rel));
    }
    nc_vmm_ext_set_state(d->x, NC_VM_FAILED, "migrated in but QEMU would not resume");
    return nc_errinfo_set(err, 500, "hypervisor_error", NULL, "cont failed: %s", desc);
  }
  nc_vmm_ext_set_state(d->x, NC_VM_RUNNING, "migrated in");
  nc_amst_send(d->a, MSG_RESUMED, NULL, 0);
  int64_t t_running = now_ms();
  nc_info("migrate", "incoming vm \"%s\": hand-over: from the stream's end, +%lld ms QEMU "
          "loaded, +%lld ms granted, +%lld ms running; receiving thread CPU %lld ms (unpack, "
          "decode, check, cache, write to QEMU)",
          nc_vmm_ext_name(d->x), (long long)(t_loaded - d->end_ms),
          (long long)(t_grant - d->end_ms), (long long)(t_running - d->end_ms),
          (long long)d->rx_cpu_ms);
  nc_amst_flush(d->a, 5000);
  struct nc_hde_rec *r = NULL;
  if (d->m->cfg.pcache && nc_hde_dec_record(d->dec, &r) == 0)
    nc__mig_rec_store(d->m, nc_vmm_ext_name(d->x), r); /* for the way back */
  nc_hde_rec_free(r);
  nc_pcache_flush(d->m->cfg.pcache);
  return 0;
}

/* The phases in order; dst_main cleans up after any of them. */
static int dst_run(struct dst *d, struct nc_errinfo *err) {
  int rc = dst_accept(d, err);
  if (rc == 0)
    rc = dst_offer(d, err);
  if (rc == 0)
    rc = dst_receive(d, err);
  if (rc == 0)
    rc = dst_wait_loaded(d, err);
  if (rc == 0)
    rc = dst_take_over(d, err);
  return rc;
}

/* The destination's thread: runs the migration, then frees everything;
 * on failure the VM is removed here. */
static void *dst_main(void *arg) {
  struct dst *d = arg;
  (void)pthread_setname_np(pthread_self(), "nc-mig-dst");
  struct nc_errinfo err = {0};
  d->qemu_fd = -1;
  int rc = dst_run(d, &err);
  if (rc)
    nc_warn("migrate", "incoming vm \"%s\": %s", nc_vmm_ext_name(d->x),
            err.message[0] ? err.message : nc_strerror(rc));
  if (d->qemu_fd >= 0)
    close(d->qemu_fd);
  nc__relay_stop(d->relay);
  nc__mig_session_end(d->m, d->a, rc);
  nc_amst_listener_close(d->l);
  nc_hde_dec_free(d->dec);
  free(d->plain);
  free(d->out);
  if (d->m->cfg.pcache)
    nc_pcache_unpin_all(d->m->cfg.pcache, d->session64);
  struct nc_migrate *m = d->m;
  nc__mig_count(m, "destination", rc == 0 ? "succeeded" : "failed");
  nc_vmm_ext_finish(d->x, rc, &err, rc == 0 || d->keep_failed ? NC_EXT_KEEP : NC_EXT_REMOVE);
  free(d);
  nc__mig_thread_done(m);
  return NULL;
}

/* What a prepare request asks for, once checked (incoming_check). */
struct incoming_req {
  json_t *vm; /* borrowed from the body */
  int streams;
  bool tls;
  uint8_t src_fp[NC_TLS_FP_LEN];
  bool has_prev;
  uint8_t prev_digest[16];
  const char *source; /* borrowed; "" when absent */
};

/* Checks a prepare request against what this node can do. Nothing is
 * created here, so a refusal leaves nothing behind. */
static int incoming_check(struct nc_migrate *m, json_t *body, struct incoming_req *q,
                          struct nc_errinfo *err) {
  static const char *const allowed[] = {"vm",          "source",      "streams",
                                        "tls",         "fingerprint", "prev_record",
                                        "hde_version", "base_disk",   NULL};
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
  q->vm = json_object_get(body, "vm");
  if (!json_is_object(q->vm))
    return nc_errinfo_set(err, 400, "missing_field", "vm", "field \"vm\" (the spec) is required");
  q->streams = 0; /* required here: absent stays 0 and is refused */
  if ((rc = nc__mig_int_field(body, "streams", 1, NC_AMST_STREAMS_MAX, "", &q->streams, err)))
    return rc;
  if (q->streams == 0)
    return nc_errinfo_set(err, 400, "invalid_field", "streams", "streams must be 1 to %d",
                          NC_AMST_STREAMS_MAX);
  /* TLS: the source asks, our dwcp_tls may insist (a missing "tls" is an
   * older source: plain TCP). */
  json_t *tv = json_object_get(body, "tls");
  json_t *fv = json_object_get(body, "fingerprint");
  if (tv && !json_is_boolean(tv))
    return nc_errinfo_set(err, 400, "invalid_field", "tls", "tls must be true or false");
  if (fv && nc_tls_fp_parse(json_string_value(fv), q->src_fp) != 0)
    return nc_errinfo_set(err, 400, "invalid_field", "fingerprint",
                          "fingerprint must be the SHA-256 of the source's certificate, 64 hex "
                          "digits");
  json_t *pv = json_object_get(body, "prev_record");
  const char *pvs = json_string_value(pv);
  if (pv && (!pvs || strlen(pvs) != 2 * sizeof q->prev_digest ||
             nc_hex_decode(pvs, sizeof q->prev_digest, q->prev_digest) != 0))
    return nc_errinfo_set(err, 400, "invalid_field", "prev_record",
                          "prev_record must be a record digest, 32 hex digits");
  q->has_prev = pvs != NULL;
  q->tls = json_is_true(tv);
  bool need_tls =
      m->cfg.tls_mode == NC_MIGRATE_TLS_ON ||
      (m->cfg.tls_mode == NC_MIGRATE_TLS_AUTO && !nc__mig_is_loopback(m->cfg.dwcp_host));
  if (!q->tls && need_tls)
    return nc_errinfo_set(err, 409, "tls_required", "tls",
                          "this node takes DWCP only over TLS 1.3 (dwcp_tls = %s, DWCP address "
                          "%s); the source asked for plain TCP: set dwcp_tls = auto or on there "
                          "(or off on both nodes, on a trusted network)",
                          nc__mig_tls_mode_name(m->cfg.tls_mode), m->cfg.dwcp_host);
  if (q->tls && !m->cfg.tls)
    return nc_errinfo_set(err, 503, "unavailable", "tls",
                          "this node has no DWCP key, so it cannot take TLS (see its log)");
  if (q->tls && !fv)
    return nc_errinfo_set(err, 400, "missing_field", "fingerprint",
                          "with tls, fingerprint (the source's certificate SHA-256) is required");
  json_t *src = json_object_get(body, "source");
  q->source = json_is_string(src) ? json_string_value(src) : "";
  /* The overlay we would create reads what the VM never wrote from our
   * base disk of its image: the same content as the source's, or nothing
   * is created here. */
  return nc__mig_dst_check_base_disk(m, body, err);
}

/* The source mirrors its disk overlay into this export. QEMU serves it on
 * a unix socket only; the network side is our relay (relay.h), which
 * admits only the source (TLS pin, session id). */
static int dst_export_disk(struct dst *d, struct nc_errinfo *err) {
  char nbd_sock[1200], desc[256];
  snprintf(nbd_sock, sizeof nbd_sock, "%s/mig-nbd-in.sock", nc_vmm_ext_run_dir(d->x));
  unlink(nbd_sock);
  int rc = nc__mig_qmp(
      d->x, "nbd-server-start",
      json_pack("{s:{s:s, s:{s:s}}}", "addr", "type", "unix", "data", "path", nbd_sock), NULL,
      desc, sizeof desc);
  if (rc == 0)
    rc = nc__mig_qmp(d->x, "block-export-add",
                     json_pack("{s:s, s:s, s:s, s:b, s:s}", "type", "nbd", "id", "mig-disk0",
                               "node-name", "disk0", "writable", 1, "name", "disk0"),
                     NULL, desc, sizeof desc);
  if (rc == 0) {
    rc = nc__relay_dest(d->m->cfg.dwcp_host, d->tls ? d->m->cfg.tls : NULL,
                        d->tls ? d->src_fp : NULL, d->session, nbd_sock, &d->nbd_port,
                        &d->relay);
    if (rc)
      snprintf(desc, sizeof desc, "cannot open the disk relay on %s: %s", d->m->cfg.dwcp_host,
               nc_strerror(rc));
  }
  if (rc)
    nc_errinfo_set(err, 500, "hypervisor_error", NULL, "cannot export the disk: %s", desc);
  return rc;
}

/* The answer the source connects with: session, ports, our fingerprint. */
static json_t *incoming_answer(struct dst *d) {
  char hex[33];
  nc_hex_encode(d->session, 16, hex);
  json_t *out = json_pack("{s:s, s:i, s:i, s:s, s:b}", "session", hex, "port",
                          nc_amst_listener_port(d->l), "nbd_port", d->nbd_port, "operation",
                          nc_op_id(nc_vmm_ext_op(d->x)), "tls", d->tls);
  if (out && d->m->cfg.tls) {
    char fp[NC_TLS_FP_HEX_LEN + 1];
    nc_tls_fp_to_hex(nc_tls_fingerprint(d->m->cfg.tls), fp);
    json_object_set_new(out, "fingerprint", json_string(fp));
  }
  return out;
}

int nc_migrate_incoming(struct nc_migrate *m, json_t *body, json_t **out,
                        struct nc_errinfo *err) {
  struct incoming_req q = {0};
  int rc = incoming_check(m, body, &q, err);
  if (rc)
    return rc;
  struct dst *d = calloc(1, sizeof *d);
  if (!d)
    return -ENOMEM;
  d->m = m;
  d->streams = q.streams;
  d->tls = q.tls;
  d->src_pinned = q.tls;
  d->has_prev = q.has_prev;
  memcpy(d->prev_digest, q.prev_digest, sizeof d->prev_digest);
  memcpy(d->src_fp, q.src_fp, sizeof d->src_fp);
  snprintf(d->source, sizeof d->source, "%s", q.source);
  nc_rand_system()->fill(nc_rand_system(), d->session, sizeof d->session);
  memcpy(&d->session64, d->session, sizeof d->session64);
  d->session64 |= 1; /* the page cache reserves 0 for "no session" */
  rc = nc_amst_listen(m->cfg.dwcp_host, 0, &d->l);
  if (rc) {
    nc_errinfo_set(err, 503, "unavailable", NULL, "cannot open a DWCP listener on %s: %s",
                   m->cfg.dwcp_host, nc_strerror(rc));
    goto fail;
  }
  if ((rc = nc_vmm_ext_incoming(m->cfg.vmm, q.vm, "vm.migrate-in", &d->x, err)) != 0)
    goto fail;
  /* QEMU listens for the stream on a unix socket in the VM's directory. */
  char uri[1300], desc[256];
  snprintf(uri, sizeof uri, "unix:%s/mig-in.sock", nc_vmm_ext_run_dir(d->x));
  rc = nc__mig_qmp(d->x, "migrate-incoming", json_pack("{s:s}", "uri", uri), NULL, desc,
                   sizeof desc);
  if (rc) {
    nc_errinfo_set(err, 500, "hypervisor_error", NULL, "migrate-incoming failed: %s", desc);
    goto fail;
  }
  if (nc__mig_has_disk(d->x) && (rc = dst_export_disk(d, err)) != 0)
    goto fail;
  *out = incoming_answer(d);
  if (!*out) {
    rc = -ENOMEM;
    nc_errinfo_set(err, 500, "internal", NULL, "out of memory");
    goto fail;
  }
  if ((rc = nc__mig_spawn(m, dst_main, d)) != 0) {
    json_decref(*out);
    *out = NULL;
    nc_errinfo_set(err, 503, "unavailable", NULL, "cannot start the receiver");
    goto fail;
  }
  return 0;

fail: /* undo in reverse; the VM (if defined) goes with its files */
  nc__relay_stop(d->relay);
  nc_amst_listener_close(d->l);
  if (d->x)
    nc_vmm_ext_finish(d->x, rc, err, NC_EXT_REMOVE);
  free(d);
  return rc;
}
