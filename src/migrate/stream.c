/* Source: QEMU's migration stream to DATA frames. The pump thread reads
 * the stream QEMU writes into our unix socket, the QEMU stream parser
 * (qstream.h) splits it into opaque bytes and RAM pages, HDE (hde.h)
 * encodes the pages, and whole batches go out, compressed, as one DATA
 * message each (record layout in migrate_int.h). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dwcp/amst.h"
#include "dwcp/bootmap.h"
#include "dwcp/hde.h"
#include "dwcp/qstream.h"
#include "migrate/migrate_int.h"
#include "util/err.h"
#include "util/log.h"

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
void *nc__mig_src_pump(void *arg) {
  struct src *s = arg;
  (void)pthread_setname_np(pthread_self(), "nc-mig-pump");
  uint8_t *buf = malloc(READ_CHUNK);
  int rc = buf ? 0 : -ENOMEM;
  char perr[sizeof s->pump_err] = ""; /* s->pump_err is written once, under s->mu */
  while (rc == 0) {
    ssize_t n = read(s->qemu_fd, buf, READ_CHUNK);
    if (n == 0)
      break;
    if (n < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      snprintf(perr, sizeof perr, "reading the source QEMU's stream: %s", strerror(errno));
      break;
    }
    pthread_mutex_lock(&s->mu);
    s->raw_bytes += (uint64_t)n;
    pthread_mutex_unlock(&s->mu);
    rc = nc_qs_feed(s->qs, buf, (size_t)n);
    if (rc)
      snprintf(perr, sizeof perr, "sending the stream: %s", nc_strerror(rc));
  }
  int64_t eof_ms = now_ms();
  if (rc == 0)
    rc = nc_qs_finish(s->qs);
  if (rc == 0)
    rc = flush_batch(s);
  if (rc == 0)
    rc = nc_amst_send(s->a, MSG_END, NULL, 0);
  if (rc && !perr[0])
    snprintf(perr, sizeof perr, "sending the stream: %s", nc_strerror(rc));
  free(buf);
  pthread_mutex_lock(&s->mu);
  memcpy(s->pump_err, perr, sizeof perr);
  s->pump_rc = rc;
  s->pump_done = true;
  s->eof_ms = eof_ms;
  s->pump_cpu_ms = nc__mig_thread_cpu_ms();
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

int nc__mig_src_encoder(struct src *s, struct src_offer *o, struct nc_errinfo *err) {
  int rc = nc_hde_enc_new(&o->hp, o->summary, (size_t)o->slen, s->m->cfg.pcache, &s->enc);
  if (rc == 0)
    rc = nc_hde_enc_set_frames(s->enc, true);
  if (rc == 0 && o->held_len > 0)
    rc = nc_hde_enc_set_prev(s->enc, s->prev, o->summary + o->slen, (size_t)o->held_len);
  if (rc == 0 && o->hp.dedup) {
    s->ram_block = -1;
    nc__mig_boot_files(s->x, boot_cb, s);
    if (s->boot)
      nc_hde_enc_set_base_fn(s->enc, boot_base, s);
  }
  free(o->summary);
  o->summary = NULL;
  if (rc) {
    nc_errinfo_set(err, 500, "internal", NULL, "cannot set up the page encoder: %s",
                   nc_strerror(rc));
    return rc;
  }
  struct nc_qs_sink sink = {s, sink_opaque, sink_page};
  if ((rc = nc_qs_parser_new(&sink, &s->qs)) != 0 || !(s->batch = malloc(BATCH_MAX)) ||
      !(s->frame = malloc(nc_hde_frame_bound(BATCH_MAX)))) {
    rc = rc ? rc : -ENOMEM;
    nc_errinfo_set(err, 500, "internal", NULL, "out of memory");
    return rc;
  }
  return 0;
}
