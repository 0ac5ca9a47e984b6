/* Source: nc_migrate_start and the source's thread (src_main), up to
 * QEMU's stream flowing: the destination prepares, the DWCP session
 * opens, the link is measured and the mode chosen, the disk mirror
 * catches up, QEMU starts migrating into our unix socket. stream.c sends
 * that stream on; handover.c watches precopy and ends the migration
 * (exactly one copy, see migrate.h). */
#include "migrate/migrate.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "dwcp/amst.h"
#include "dwcp/bootmap.h"
#include "dwcp/hde.h"
#include "dwcp/qstream.h"
#include "dwcp/tls.h"
#include "migrate/migrate_int.h"
#include "migrate/pace.h"
#include "migrate/peer.h"
#include "migrate/relay.h"
#include "migrate/sockio.h"
#include "util/err.h"
#include "util/hex.h"
#include "util/log.h"
#include "vm/manager.h"
#include "vm/ops.h"
#include "vm/spec.h"

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
  if (mode != s->mode) /* a pinned mode is s->mode itself */
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

/* 1. The destination defines the VM and starts its QEMU waiting (POST
 * /v1/migrations/incoming): the session id, the ports, TLS and the
 * certificate to pin. */
static int src_prepare_dest(struct src *s, struct nc_errinfo *err) {
  struct nc_migrate_config *mc = &s->m->cfg;
  s->tls = mc->tls_mode == NC_MIGRATE_TLS_ON ||
           (mc->tls_mode == NC_MIGRATE_TLS_AUTO && !nc__mig_is_loopback(s->to_host));
  if (s->tls && !mc->tls)
    return nc_errinfo_set(err, 500, "internal", NULL, "this node has no DWCP key for TLS");
  char own_fp[NC_TLS_FP_HEX_LEN + 1] = "";
  if (mc->tls)
    nc_tls_fp_to_hex(nc_tls_fingerprint(mc->tls), own_fp);
  json_t *spec = nc_vmm_ext_spec(s->x);
  /* The destination's overlay will read what the VM never wrote from its
   * own base disk of the same image: it refuses one that differs. */
  json_t *base_disk = NULL;
  int rc = nc__mig_src_base_disk(s->m, s->name,
                                 json_string_value(json_object_get(spec, "image")), &base_disk,
                                 err);
  if (rc) {
    json_decref(spec);
    return rc;
  }
  json_t *req = json_pack("{s:o, s:s, s:i, s:b}", "vm", spec, "source", mc->node_name, "streams",
                          s->streams, "tls", s->tls);
  if (own_fp[0])
    json_object_set_new(req, "fingerprint", json_string(own_fp));
  json_object_set_new(req, "hde_version", json_integer(NC_HDE_VERSION));
  json_object_set_new(req, "base_disk", base_disk);
  if (mc->pcache && (s->prev = nc__mig_rec_load(s->m, s->name)) != NULL) {
    uint8_t dg[16];
    char hex[33];
    nc_hde_rec_digest(s->prev, dg);
    nc_hex_encode(dg, 16, hex);
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
    json_t *perr = json_object_get(resp, "error");
    const char *msg = json_string_value(json_object_get(perr, "message"));
    const char *code = json_string_value(json_object_get(perr, "code"));
    const char *field = json_string_value(json_object_get(perr, "field"));
    /* A conflict the destination names (image_mismatch on base_disk,
     * machine_unsupported on vm.machine, ...) is the operator's to fix
     * there: keep its code and field rather than pointing at the address. */
    bool named = status == 409 && code && field && strlen(code) < 32 && strlen(field) < 64;
    char ncode[32], nfield[64];
    snprintf(ncode, sizeof ncode, "%s", named ? code : "peer_refused");
    snprintf(nfield, sizeof nfield, "%s", named ? field : "to");
    rc = nc_errinfo_set(err, status == 401 ? 401 : 409, ncode, nfield,
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
                          s->to, nc__mig_tls_mode_name(mc->tls_mode));
  }
  if (!s->tls && peer_tls) {
    json_decref(resp);
    return nc_errinfo_set(err, 502, "peer_protocol", NULL,
                          "the destination %s answered for TLS though plain TCP was asked",
                          s->to);
  }
  json_decref(resp);
  return 0;
}

/* 2. The DWCP session (its handshake gives the round trip, s->rtt_ms). */
static int src_connect(struct src *s, struct nc_errinfo *err) {
  struct nc_migrate_config *mc = &s->m->cfg;
  nc_op_progress(nc_vmm_ext_op(s->x), 0.02, "connecting DWCP streams");
  struct nc_amst_config ac = {.streams = s->streams,
                              .bbr = true,
                              .send_window_bytes = WINDOW_BYTES,
                              .recv_window_bytes = WINDOW_BYTES,
                              .tls = s->tls ? mc->tls : NULL,
                              .tls_peer_fp = s->tls ? s->peer_fp : NULL};
  int64_t tc = now_ms();
  int rc = nc_amst_connect(&ac, s->to_host, s->dwcp_port, s->session, &s->a);
  /* The handshake costs about one round trip (two with TLS). */
  s->rtt_ms = (now_ms() - tc) / (s->tls ? 2 : 1);
  if (rc == 0)
    nc__mig_track(s->m, s->a, true);
  char peer_hex[NC_TLS_FP_HEX_LEN + 1];
  nc_tls_fp_to_hex(s->peer_fp, peer_hex);
  if (rc == -EKEYREJECTED) {
    nc_errinfo_set(err, 502, "peer_key_mismatch", "to",
                   "the DWCP endpoint %s:%d does not hold the certificate the destination %s "
                   "announced (SHA-256 %s): refusing to send the vm (someone in the path, or "
                   "the destination's node key changed meanwhile)",
                   s->to_host, s->dwcp_port, s->to, peer_hex);
    return rc;
  }
  if (rc) {
    nc_errinfo_set(err, 502, "peer_unreachable", "to", "cannot open DWCP streams to %s:%d%s: %s",
                   s->to_host, s->dwcp_port, s->tls ? " (TLS)" : "", nc_strerror(rc));
    return rc;
  }
  struct nc_amst_stats cs;
  nc_amst_stats(s->a, &cs);
  if (s->tls)
    nc_info("migrate", "vm \"%s\" -> %s: %d DWCP streams over %s, destination certificate "
            "SHA-256 %s (pinned)", s->name, s->to, s->streams, cs.tls, peer_hex);
  else
    nc_info("migrate", "vm \"%s\" -> %s: %d DWCP streams over plain TCP (dwcp_tls = %s, %s)",
            s->name, s->to, s->streams, nc__mig_tls_mode_name(mc->tls_mode),
            nc__mig_is_loopback(s->to_host) ? "loopback" : "not loopback");
  return 0;
}

/* The destination's SUMMARY and SUMMARY_PARTs (layouts in migrate_int.h).
 * On success o->summary is the caller's. */
static int src_recv_summary(struct src *s, struct src_offer *o, struct nc_errinfo *err) {
  uint8_t type;
  void *payload = NULL;
  size_t plen = 0;
  int rc = nc_amst_recv(s->a, ACCEPT_TIMEOUT_MS, &type, &payload, &plen);
  if (rc || type != MSG_SUMMARY || plen != 40) {
    free(payload);
    nc_errinfo_set(err, 502, "peer_protocol", NULL,
                   "the destination did not send its page-cache summary (%s)",
                   rc ? nc_strerror(rc) : "unexpected message");
    return rc ? rc : NC_E_PROTO;
  }
  o->hp.new_pages_quota = get_be((uint8_t *)payload + 8, 8);
  o->hp.delta_cache_bytes = get_be((uint8_t *)payload + 16, 8);
  uint64_t slen = get_be((uint8_t *)payload + 24, 8);
  uint64_t held_len = get_be((uint8_t *)payload + 32, 8);
  free(payload);
  uint64_t want_held = s->prev ? (nc_hde_rec_count(s->prev) + 7) / 8 : 0;
  if (held_len != 0 && held_len != want_held) {
    nc_errinfo_set(err, 502, "peer_protocol", NULL,
                   "the destination's record bitmap (%llu bytes) does not fit ours (%llu)",
                   (unsigned long long)held_len, (unsigned long long)want_held);
    return NC_E_PROTO;
  }
  uint8_t *summary = slen <= SUMMARY_MAX ? malloc(slen + held_len + 1) : NULL;
  if (!summary) {
    nc_errinfo_set(err, 502, "peer_protocol", NULL,
                   "the destination's page-cache summary (%llu bytes) is over the %u-byte cap",
                   (unsigned long long)slen, SUMMARY_MAX);
    return NC_E_TOOBIG;
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
      return rc ? rc : NC_E_PROTO;
    }
    memcpy(summary + got, part, n);
    got += n;
    free(part);
  }
  o->summary = summary;
  o->slen = slen;
  o->held_len = held_len;
  return 0;
}

/* The probe decides only between datacenter and hybrid: a pinned mode
 * or a round trip that makes it internet anyway saves its 1 MiB. */
static int src_probe(struct src *s, double *bw_mbit) {
  if (strcmp(s->mode, "auto") != 0 || s->rtt_ms >= 20)
    return 0;
  int64_t tp = now_ms();
  uint8_t *filler = calloc(1, PROBE_BYTES);
  int rc = filler ? nc_amst_send(s->a, MSG_PROBE, filler, PROBE_BYTES) : -ENOMEM;
  free(filler);
  if (rc == 0)
    rc = nc_amst_flush(s->a, 30000);
  double probe_s = (double)(now_ms() - tp) / 1000.0;
  *bw_mbit = probe_s > 0 ? PROBE_BYTES * 8.0 / 1e6 / probe_s : 1e5;
  return rc;
}

/* The destination's page-cache summary, a look at the link, the mode, the
 * pacing, and the page encoder that goes with them. */
static int src_negotiate(struct src *s, struct nc_errinfo *err) {
  struct src_offer o = {0};
  int rc = src_recv_summary(s, &o, err);
  if (rc)
    return rc;
  double bw_mbit = 0;
  rc = src_probe(s, &bw_mbit);
  if (rc) {
    free(o.summary);
    nc_errinfo_set(err, 502, "link_failed", NULL, "the DWCP link failed during the probe: %s",
                   nc_strerror(rc));
    return rc;
  }
  choose_mode(s, s->rtt_ms, bw_mbit, &o.hp, s->why, sizeof s->why);
  size_t w0 = nc__pace_init(&s->pace, s->max_downtime_ms, s->rtt_ms, s->nbd_port > 0);
  s->stream_cap = s->rtt_ms < NC__PACE_SLOW_RTT_MS;
  if (w0 != WINDOW_BYTES)
    nc__pace_window_is(&s->pace, nc_amst_set_send_window(s->a, w0));
  nc_info("migrate", "vm \"%s\" -> %s: mode %s (%s), %d streams", s->name, s->to, s->mode,
          s->why, s->streams);
  return nc__mig_src_encoder(s, &o, err);
}

/* 3. QEMU migrates into our unix socket (s->sock), with the capabilities
 * and parameters set here. */
static int src_listen(struct src *s, struct nc_errinfo *err) {
  snprintf(s->sock, sizeof s->sock, "%s/mig-out.sock", nc_vmm_ext_run_dir(s->x));
  unlink(s->sock);
  struct sockaddr_un sa;
  int rc = nc__unix_addr(&sa, s->sock);
  if (rc) {
    nc_errinfo_set(err, 500, "internal", NULL, "socket path too long: %s", s->sock);
    return rc;
  }
  s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(s->listen_fd, 1) != 0) {
    rc = -errno;
    nc_errinfo_set(err, 500, "internal", NULL, "cannot listen on %s: %s", s->sock,
                   strerror(errno));
    return rc;
  }
  nc_vmm_ext_set_state(s->x, NC_VM_MIGRATING, s->why);
  nc__mig_qmp(s->x, "migrate-set-capabilities",
              json_pack("{s:[{s:s, s:b}, {s:s, s:b}]}", "capabilities", "capability",
                        "auto-converge", "state", 1, "capability", "events", "state", 1),
              NULL, NULL, 0);
  nc__mig_qmp(s->x, "migrate-set-parameters",
              json_pack("{s:I, s:I}", "downtime-limit", (json_int_t)s->max_downtime_ms,
                        "max-bandwidth", (json_int_t)(1LL << 40)),
              NULL, NULL, 0);
  return 0;
}

/* The disk first: mirror the overlay's own data (its base is the same
 * image on both nodes) into the destination's NBD export, and keep it in
 * sync while the memory moves. Returns once the mirror is ready
 * (s->mirroring from when the job runs). */
static int src_mirror_disk(struct src *s, struct nc_errinfo *err) {
  if (s->nbd_port <= 0)
    return 0;
  struct nc_migrate_config *mc = &s->m->cfg;
  struct nc_op *op = nc_vmm_ext_op(s->x);
  char desc[256];
  snprintf(s->relay_sock, sizeof s->relay_sock, "%s/mig-nbd.sock", nc_vmm_ext_run_dir(s->x));
  int rc = nc__relay_source(s->relay_sock, s->to_host, s->nbd_port, s->tls ? mc->tls : NULL,
                            s->tls ? s->peer_fp : NULL, s->session, &s->relay);
  if (rc) {
    nc_errinfo_set(err, 502, rc == -EKEYREJECTED ? "peer_key_mismatch" : "peer_unreachable",
                   NULL, "cannot reach the destination's disk export %s:%d%s: %s", s->to_host,
                   s->nbd_port, s->tls ? " (TLS)" : "",
                   rc == -EKEYREJECTED ? "it does not hold the announced certificate"
                                       : nc_strerror(rc));
    return rc;
  }
  rc = nc__mig_qmp(s->x, "blockdev-add",
                   json_pack("{s:s, s:s, s:{s:s, s:s}, s:s}", "driver", "nbd", "node-name",
                             "mig-nbd", "server", "type", "unix", "path", s->relay_sock,
                             "export", "disk0"),
                   NULL, desc, sizeof desc);
  if (rc == 0)
    rc = nc__mig_qmp(s->x, "blockdev-mirror",
                     json_pack("{s:s, s:s, s:s, s:s}", "job-id", "mig-mirror", "device",
                               "disk0", "target", "mig-nbd", "sync", "top"),
                     NULL, desc, sizeof desc);
  if (rc) {
    nc_errinfo_set(err, 500, "hypervisor_error", NULL, "cannot mirror the disk: %s", desc);
    nc__relay_stop(s->relay);
    s->relay = NULL;
    nc__mig_qmp(s->x, "blockdev-del", json_pack("{s:s}", "node-name", "mig-nbd"), NULL,
                NULL, 0);
    return rc;
  }
  s->mirroring = true;
  int64_t dl = now_ms() + (int64_t)s->converge_timeout_s * 1000;
  for (;;) {
    uint64_t done = 0, total = 0;
    int st = nc__mig_mirror_state(s->x, &done, &total);
    if (st == 1)
      break;
    if (st < 0 || now_ms() > dl || nc_op_cancel_requested(op) || nc__mig_stopping(s->m)) {
      rc = st < 0 ? NC_E_HV : nc_op_cancel_requested(op) ? NC_E_CANCELLED : -ETIMEDOUT;
      nc_errinfo_set(err, rc == NC_E_CANCELLED ? 409 : 500,
                     rc == NC_E_CANCELLED ? "cancelled" : "disk_mirror_failed", NULL,
                     "copying the disk of vm \"%s\" %s; it keeps running here", s->name,
                     rc == NC_E_CANCELLED ? "was cancelled" : "failed");
      return rc;
    }
    char m2[128];
    snprintf(m2, sizeof m2, "copying the disk: %llu/%llu MiB", (unsigned long long)(done >> 20),
             (unsigned long long)(total >> 20));
    nc_op_progress(op, 0.03, m2);
    usleep(100 * 1000);
  }
  return 0;
}

/* QEMU starts migrating; once it connected, the pump thread (stream.c)
 * reads its stream (s->pump_started). */
static int src_start_stream(struct src *s, struct nc_errinfo *err) {
  char uri[1300], desc[256];
  snprintf(uri, sizeof uri, "unix:%s", s->sock);
  int rc = nc__mig_qmp(s->x, "migrate", json_pack("{s:s}", "uri", uri), NULL, desc, sizeof desc);
  if (rc) {
    nc_errinfo_set(err, 500, "hypervisor_error", NULL, "QEMU refused to migrate: %s", desc);
    return rc;
  }
  struct pollfd pfd = {s->listen_fd, POLLIN, 0};
  if (poll(&pfd, 1, 10000) != 1 || (s->qemu_fd = accept4(s->listen_fd, NULL, NULL,
                                                         SOCK_CLOEXEC)) < 0) {
    nc_errinfo_set(err, 500, "hypervisor_error", NULL, "QEMU did not connect to %s", s->sock);
    return -ETIMEDOUT;
  }
  pthread_mutex_init(&s->mu, NULL);
  if ((rc = pthread_create(&s->pump, NULL, nc__mig_src_pump, s)) != 0) {
    pthread_mutex_destroy(&s->mu);
    nc_errinfo_set(err, 500, "internal", NULL, "cannot start the stream pump");
    return -rc;
  }
  s->pump_started = true;
  return 0;
}

/* The phases in order. A failure before the hand-over rolls back: the VM
 * resumes here (nc__mig_src_abandon). */
static int src_run(struct src *s, struct nc_errinfo *err) {
  s->t0_ms = now_ms();
  nc_op_running(nc_vmm_ext_op(s->x), "preparing the destination");
  /* Nothing to undo yet: the destination drops what it prepared when no
   * DWCP session comes. */
  int rc = src_prepare_dest(s, err);
  if (rc) {
    nc__mig_count(s->m, "source", "failed");
    return rc;
  }
  if ((rc = src_connect(s, err)) != 0 || (rc = src_negotiate(s, err)) != 0 ||
      (rc = src_listen(s, err)) != 0 || (rc = src_mirror_disk(s, err)) != 0 ||
      (rc = src_start_stream(s, err)) != 0 || (rc = nc__mig_src_precopy(s, err)) != 0)
    goto rollback;
  rc = nc__mig_src_hand_over(s, err);
  if (rc && !s->handed_over)
    goto rollback;
  if (rc) { /* settled with the destination (handover.c) */
    nc__mig_count(s->m, "source", "failed");
    return rc;
  }
  nc__mig_src_report(s);
  return 0;

rollback:
  return nc__mig_src_abandon(s, rc);
}

/* The source's thread: runs the migration, then frees everything. */
static void *src_main(void *arg) {
  struct src *s = arg;
  (void)pthread_setname_np(pthread_self(), "nc-mig-src");
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
  nc__mig_session_end(s->m, s->a, rc);
  nc_hde_enc_free(s->enc);
  nc_bootmap_free(s->boot);
  nc_hde_rec_free(s->prev);
  nc_qs_parser_free(s->qs);
  free(s->batch);
  free(s->frame);
  struct nc_migrate *m = s->m;
  nc_vmm_ext_finish(s->x, rc, &err, rc == 0 ? NC_EXT_REMOVE : NC_EXT_KEEP);
  free(s);
  nc__mig_thread_done(m);
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
  if ((rc = nc__mig_int_field(body, "streams", 1, NC_AMST_STREAMS_MAX, "", &s->streams, err)) ||
      (rc = nc__mig_int_field(body, "max_downtime_ms", 10, 60000, "", &s->max_downtime_ms,
                              err)) ||
      (rc = nc__mig_int_field(body, "timeout_s", 5, 86400, " seconds", &s->converge_timeout_s,
                              err)))
    goto fail;
  rc = nc_vmm_ext_begin(m->cfg.vmm, name, NC_ACT_MIGRATE, "vm.migrate", true, &s->x, out, err);
  if (rc)
    goto fail;
  rc = nc__mig_spawn(m, src_main, s);
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
