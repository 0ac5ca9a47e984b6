/* Source: from QEMU's stream flowing to the end of the migration. Watches
 * precopy (progress, pacing), hands the VM over, and settles every way it
 * can end so that exactly one copy runs (the protocol is in migrate.h):
 * before the grant (COMMIT_ACK) any failure resumes the VM here; after it
 * this node never resumes it on its own, it asks the destination. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dwcp/amst.h"
#include "dwcp/hde.h"
#include "migrate/migrate_int.h"
#include "migrate/pace.h"
#include "migrate/peer.h"
#include "migrate/relay.h"
#include "obs/metrics.h"
#include "util/err.h"
#include "util/log.h"
#include "vm/manager.h"
#include "vm/ops.h"

static void src_progress(struct src *s, json_t *info) {
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
           (double)(now_ms() - s->t0_ms) / 1000.0);
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
  if (nc__mig_qmp(s->x, "query-migrate", NULL, &r, NULL, 0) == 0) {
    const char *status = json_string_value(json_object_get(r, "status"));
    if (status && strcmp(status, "completed") != 0 && strcmp(status, "failed") != 0 &&
        strcmp(status, "cancelled") != 0)
      nc__mig_qmp(s->x, "migrate_cancel", NULL, NULL, NULL, 0);
  }
  json_decref(r);
  /* QEMU resumes a guest it stopped for a migration that then failed;
   * after "completed" it stays paused (postmigrate) and we resume it. */
  for (int i = 0; i < 50; i++) {
    nc__mig_run_state(s->x, st, sizeof st);
    if (strcmp(st, "finish-migrate") != 0 && strcmp(st, "") != 0)
      break;
    usleep(100 * 1000);
  }
  if (strcmp(st, "postmigrate") == 0 || strcmp(st, "paused") == 0)
    nc__mig_qmp(s->x, "cont", NULL, NULL, NULL, 0);
  nc__mig_run_state(s->x, st, sizeof st);
  nc_vmm_ext_set_state(s->x, strcmp(st, "running") == 0 ? NC_VM_RUNNING : NC_VM_PAUSED,
                       "migration rolled back; the vm stays on this node");
}

/* After COMMIT_ACK without RESUMED: ask the destination what it has.
 * Only "running" settles it there. "paused" is not an answer: the
 * destination records that just before it resumes the guest, and if QEMU
 * then refuses, it removes the VM (a 404 here, and we resume ours); taking
 * "paused" for success would leave the VM nowhere. */
static int src_settle_unconfirmed(struct src *s, struct nc_errinfo *err) {
  char path[128], seen[32] = "";
  snprintf(path, sizeof path, "/v1/vms/%s", s->name);
  for (int i = 0; i < 20; i++) {
    long status = 0;
    json_t *vm = NULL;
    int rc = nc__peer_call("GET", s->to, path, s->token, NULL, 3000, &status, &vm);
    const char *state = vm ? json_string_value(json_object_get(vm, "state")) : NULL;
    if (rc == 0 && status == 200 && state)
      snprintf(seen, sizeof seen, "%s", state);
    if (rc == 0 && status == 200 && state && strcmp(state, "running") == 0) {
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
                       "vm; it is left paused here so it never runs twice. Check the "
                       "destination, then delete it here or resume it here");
  if (seen[0])
    return nc_errinfo_set(err, 500, "migration_unconfirmed", NULL,
                          "vm \"%s\": the destination %s holds the vm but never reported it "
                          "running (last state \"%s\"); the vm is paused here (see its state "
                          "reason)",
                          s->name, s->to, seen);
  return nc_errinfo_set(err, 500, "migration_unconfirmed", NULL,
                        "vm \"%s\": the destination %s did not confirm the hand-over and cannot "
                        "be reached; the vm is paused here (see its state reason)",
                        s->name, s->to);
}

/* While QEMU's migration is active: the send window and QEMU's
 * downtime-limit follow the link (pace.h). tpump_ms and wire0 are when the
 * pump started and the bytes sent by then. */
static void src_pace(struct src *s, int64_t tpump_ms, uint64_t wire0) {
  struct nc_amst_stats ws;
  nc_amst_stats(s->a, &ws);
  int64_t rtt_now_ms = s->rtt_ms;
  for (int i = 0; i < ws.streams && i < NC_AMST_STREAMS_MAX; i++)
    if (ws.s[i].rtt_us > 0 && ws.s[i].rtt_us / 1000 < rtt_now_ms)
      rtt_now_ms = ws.s[i].rtt_us / 1000;
  pthread_mutex_lock(&s->mu);
  uint64_t raw_now = s->raw_bytes;
  pthread_mutex_unlock(&s->mu);
  struct nc__pace_sample ps = {.elapsed_ms = now_ms() - tpump_ms,
                               .sent = ws.bytes_sent - wire0,
                               .queued = ws.queued_bytes,
                               .raw = raw_now,
                               .rtt_ms = rtt_now_ms};
  size_t w = 0;
  int64_t lim = 0;
  nc__pace_update(&s->pace, &ps, &w, &lim);
  if (w > 0)
    nc__pace_window_is(&s->pace, nc_amst_set_send_window(s->a, w));
  if (lim > 0 && nc__mig_qmp(s->x, "migrate-set-parameters",
                             json_pack("{s:I}", "downtime-limit", (json_int_t)lim), NULL,
                             NULL, 0) == 0) {
    nc_info("migrate", "vm \"%s\": QEMU's downtime-limit %lld ms (of %d: %.1f MB/s on the "
            "wire, %zu KiB in flight, %lld ms round trip)",
            s->name, (long long)lim, s->max_downtime_ms, s->pace.rate / 1000.0,
            s->pace.window / 1024, (long long)rtt_now_ms);
    nc__pace_limit_is(&s->pace, lim);
  }
}

/* Ask QEMU again after 200 ms, or as soon as its stream ends, and every
 * 2 ms after that: the hand-over, and so the guest's downtime, waits on
 * this. pump_done: whether the stream had ended when QEMU was asked. */
static void src_precopy_wait(struct src *s, bool pump_done) {
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

/* Precopy ended other than "completed": says why (err), tells the
 * destination (ABORT) and ends the session. */
static int src_precopy_failed(struct src *s, const char *final, const char *qstatus,
                              struct nc_errinfo *err) {
  int rc;
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
    char perr[sizeof s->pump_err];
    pthread_mutex_lock(&s->mu);
    memcpy(perr, s->pump_err, sizeof perr);
    pthread_mutex_unlock(&s->mu);
    rc = NC_E_HV;
    nc_errinfo_set(err, 500, "migration_failed", NULL,
                   "migration of vm \"%s\" failed (QEMU: %s%s%s); it keeps running here",
                   s->name, qstatus, perr[0] ? "; " : "", perr);
  }
  nc_amst_send(s->a, MSG_ABORT, err->message, strlen(err->message));
  nc_amst_abort(s->a);
  return rc;
}

/* 4. Watch QEMU until it completes, fails, or we are told to stop. */
int nc__mig_src_precopy(struct src *s, struct nc_errinfo *err) {
  struct nc_op *op = nc_vmm_ext_op(s->x);
  const char *final = NULL;
  char qstatus[32] = "";
  int64_t deadline = now_ms() + (int64_t)s->converge_timeout_s * 1000;
  int64_t tpump = now_ms();
  struct nc_amst_stats cs;
  nc_amst_stats(s->a, &cs); /* from here, not counting the summary and probe */
  uint64_t wire0 = cs.bytes_sent;
  s->qemu_downtime_ms = -1;
  s->downtime_ms = -1;
  for (;;) {
    json_t *info = NULL;
    if (nc__mig_qmp(s->x, "query-migrate", NULL, &info, NULL, 0) == 0) {
      const char *st = json_string_value(json_object_get(info, "status"));
      snprintf(qstatus, sizeof qstatus, "%s", st ? st : "");
      if (strcmp(qstatus, "active") == 0 || strcmp(qstatus, "device") == 0)
        src_progress(s, info);
      if (strcmp(qstatus, "completed") == 0)
        s->qemu_downtime_ms = json_integer_value(json_object_get(info, "downtime"));
    }
    json_decref(info);
    if (strcmp(qstatus, "active") == 0)
      src_pace(s, tpump, wire0);
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
    if (nc_op_cancel_requested(op) || nc__mig_stopping(s->m)) {
      final = "cancelled";
      break;
    }
    if (now_ms() > deadline) {
      final = "timeout";
      break;
    }
    src_precopy_wait(s, pump_done);
  }
  if (strcmp(final, "completed") != 0)
    return src_precopy_failed(s, final, qstatus, err);
  return 0;
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
int nc__mig_src_hand_over(struct src *s, struct nc_errinfo *err) {
  int64_t t_done = now_ms();
  bool disk_copied = s->mirroring;
  if (s->mirroring) {
    nc__mig_mirror_end(s->x, false, false); /* the NBD node and relay go after the grant */
    s->mirroring = false;
  }
  int64_t t_disk = now_ms();
  nc_op_progress(nc_vmm_ext_op(s->x), 0.92, "handing over to the destination");
  s->handed_over = true;
  nc_vmm_ext_set_state(s->x, NC_VM_MIGRATING, "handing over to the destination");
  int rc = nc_amst_send(s->a, MSG_COMMIT_ACK, NULL, 0);
  int64_t t_grant = now_ms();
  if (disk_copied) {
    nc__mig_qmp(s->x, "blockdev-del", json_pack("{s:s}", "node-name", "mig-nbd"), NULL,
                NULL, 0);
    nc__relay_stop(s->relay);
    s->relay = NULL;
  }
  uint8_t type = 0;
  void *payload = NULL;
  size_t plen = 0;
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
    s->handed_over = false;
    nc_amst_abort(s->a);
    return NC_E_HV;
  }
  free(payload);
  int64_t t_resumed = now_ms();
  bool confirmed = rc == 0 && type == MSG_RESUMED;
  if (!confirmed) {
    rc = src_settle_unconfirmed(s, err);
    if (rc)
      return rc;
  }
  pthread_mutex_lock(&s->mu);
  int64_t eof_ms = s->eof_ms;
  pthread_mutex_unlock(&s->mu);
  /* QEMU counts from the guest's stop to the end of its stream; from there
   * to RESUMED the guest is still paused (plus half a round trip, as the
   * confirmation travels). Unknown when the end was settled by asking. */
  s->downtime_ms = confirmed && s->qemu_downtime_ms >= 0
                       ? s->qemu_downtime_ms + (t_resumed - eof_ms)
                       : -1;
  nc_info("migrate", "vm \"%s\": hand-over: QEMU reported %lld ms of downtime up to the end of "
          "its stream; from there, +%lld ms completed, +%lld ms disk done, +%lld ms granted, "
          "+%lld ms destination resumed (downtime-limit %lld ms); stream pump CPU %lld ms",
          s->name, (long long)s->qemu_downtime_ms, (long long)(t_done - eof_ms),
          (long long)(t_disk - eof_ms), (long long)(t_grant - eof_ms),
          (long long)(t_resumed - eof_ms), (long long)s->pace.limit,
          (long long)s->pump_cpu_ms);
  return 0;
}

void nc__mig_src_report(struct src *s) {
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
      nc__mig_rec_store(s->m, s->name, r);
    nc_hde_rec_free(r);
    nc_pcache_flush(s->m->cfg.pcache);
  }
  int64_t total_ms = now_ms() - s->t0_ms;
  json_t *spec = nc_vmm_ext_spec(s->x);
  json_int_t ram = json_integer_value(json_object_get(spec, "memory_bytes"));
  json_decref(spec);
  char down[48] = "", share[64] = "";
  if (s->downtime_ms >= 0)
    snprintf(down, sizeof down, ", downtime %lld ms", (long long)s->downtime_ms);
  if (ram > 0)
    snprintf(share, sizeof share, " (%.1f%% of the guest's %.0f MiB of RAM)",
             100.0 * (double)as.bytes_sent / (double)ram, (double)ram / 1048576.0);
  char msg[768];
  snprintf(msg, sizeof msg,
           "migrated to %s in %.2f s (%s)%s, %s: %.1f MiB on the wire for %.1f MiB of stream%s; "
           "pages %llu: zero %llu, ref %llu, delta %llu, raw %llu, stored %llu (against the "
           "last migration's record: ref %llu, delta %llu; against the kernel file: delta %llu)",
           s->to, (double)total_ms / 1000.0, s->mode, down, as.tls[0] ? as.tls : "no TLS",
           (double)as.bytes_sent / 1048576.0, (double)s->raw_bytes / 1048576.0, share,
           (unsigned long long)hs.pages,
           (unsigned long long)hs.zero, (unsigned long long)(hs.ref + hs.prev),
           (unsigned long long)(hs.delta + hs.delta_prev + hs.delta_base),
           (unsigned long long)hs.raw, (unsigned long long)hs.stored,
           (unsigned long long)hs.prev, (unsigned long long)hs.delta_prev,
           (unsigned long long)hs.delta_base);
  nc_op_set_result(nc_vmm_ext_op(s->x), msg);
  nc_info("migrate", "vm \"%s\": %s", s->name, msg);
  /* Per stream: whether the load spread, and whether BBR took. */
  char per[1024];
  size_t used = 0;
  per[0] = '\0';
  for (int i = 0; i < as.streams && i < NC_AMST_STREAMS_MAX && used < sizeof per; i++) {
    const struct nc_amst_stream_stats *st = &as.s[i];
    int w = snprintf(per + used, sizeof per - used, "%s#%d %.1f MiB in %llu frames, rtt %.1f ms, "
                     "cwnd %u, %s", i ? "; " : "", i, (double)st->bytes_sent / 1048576.0,
                     (unsigned long long)st->frames_sent, st->rtt_us / 1000.0, st->cwnd,
                     st->cc[0] ? st->cc : "?");
    if (w < 0)
      break;
    used += (size_t)w;
  }
  nc_info("migrate", "vm \"%s\": streams: %s", s->name, per);
  nc__mig_count(s->m, "source", "succeeded");
  if (s->m->m_bytes_wire) {
    nc_metric_add(s->m->m_bytes_wire, NULL, (double)as.bytes_sent);
    nc_metric_add(s->m->m_bytes_raw, NULL, (double)s->raw_bytes);
    nc_metric_observe(s->m->m_duration, NULL, (double)total_ms / 1000.0);
    if (s->downtime_ms >= 0)
      nc_metric_observe(s->m->m_downtime, NULL, (double)s->downtime_ms / 1000.0);
  }
}

int nc__mig_src_abandon(struct src *s, int rc) {
  if (s->mirroring) {
    nc__relay_stop(s->relay); /* first: QEMU must not wait on a dead peer */
    s->relay = NULL;
    nc__mig_mirror_end(s->x, true, true);
    s->mirroring = false;
  }
  nc__relay_stop(s->relay);
  s->relay = NULL;
  if (!s->handed_over)
    src_rollback(s);
  nc__mig_count(s->m, "source", rc == NC_E_CANCELLED ? "cancelled" : "failed");
  return rc ? rc : NC_E_HV;
}
