/* libFuzzer target for what AMST does with bytes received from a peer:
 * the HELLO parser, the frame header parser with its length caps, the ACK
 * check, and reassembly (reserve / insert / pop with the receive-window
 * rule) over up to 8 connections, run the way the receiver threads run it
 * (src/dwcp/amst.c rx_main), but single-threaded and without sockets.
 *
 * Input: byte 0 configures the run: connections 1 + (b & 7), window from
 * (b >> 3) & 3, bit 5 an eager application (pops after every frame) or a
 * lazy one (pops only when a receiver would otherwise wait), bit 7 a
 * 48-byte HELLO follows. Then records: one byte picks the connection, then
 * a 16-byte header and its payload, exactly as on the wire.
 *
 * Invariants checked (abort on violation): the application sees seqs 0, 1,
 * 2, ... with no gap or repeat, nothing after FIN, held bytes never exceed
 * window + one frame and always equal the sum of the held frames. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwcp/amst.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sim {
  struct nc__amst_rx rx;
  uint64_t expect_seq;
  bool fin_seen;
};

static void check_held(const struct sim *s) {
  uint64_t held = 0;
  bool reserved = false;
  for (int i = 0; i < s->rx.nconn; i++) {
    reserved |= s->rx.q[i].reserved;
    uint64_t last = 0;
    bool any = false;
    for (const struct nc__amst_frame *f = s->rx.q[i].head; f; f = f->next) {
      if (any && f->seq <= last)
        abort(); /* a connection's queue is in seq order */
      last = f->seq;
      any = true;
      held += NC_AMST_HEADER_LEN + (uint64_t)f->len;
    }
  }
  if (!reserved && held != s->rx.buffered_bytes)
    abort();
  if (s->rx.buffered_bytes > s->rx.window_bytes + NC_AMST_HEADER_LEN + NC_AMST_PAYLOAD_MAX)
    abort();
}

/* The application takes one frame. 1 taken, 0 nothing ready, <0 error. */
static int app_pop(struct sim *s) {
  struct nc__amst_frame *f;
  int rc = nc__amst_rx_pop(&s->rx, &f);
  if (rc != 1)
    return rc;
  if (s->fin_seen || f->seq != s->expect_seq)
    abort();
  s->expect_seq++;
  if (f->type == NC_AMST_TYPE_FIN)
    s->fin_seen = true;
  volatile uint8_t sink = 0;
  if (f->len)
    sink ^= ((uint8_t *)f->payload)[f->len - 1]; /* the payload is all there */
  (void)sink;
  nc__amst_frame_free(f);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t windows[] = {0, 64, 4096, 1u << 20};
  if (size < 1)
    return 0;
  const int nconn = 1 + (data[0] & 7);
  const size_t window = windows[(data[0] >> 3) & 3];
  const bool eager = data[0] & 0x20;
  size_t pos = 1;
  if ((data[0] & 0x80) && size >= pos + NC_AMST_HEADER_LEN + NC_AMST_HELLO_LEN) {
    uint8_t id[16];
    int index, count;
    uint64_t win;
    if (nc__amst_parse_hello(data + pos, id, &index, &count, &win) == 0 &&
        (count < 1 || count > NC_AMST_STREAMS_MAX || index < 0 || index >= count))
      abort();
    pos += NC_AMST_HEADER_LEN + NC_AMST_HELLO_LEN;
  }

  struct sim s = {0};
  nc__amst_rx_init(&s.rx, nconn, window);
  /* Pretend we sent 1000 frames / 1 MiB, so ACKs have something to move. */
  struct nc__amst_txwin w = {.next_seq = 1000, .admitted_bytes = 1u << 20};

  while (pos + 1 + NC_AMST_HEADER_LEN <= size) {
    int conn = data[pos++] % nconn;
    struct nc_amst_header h;
    if (nc_amst_parse_header(data + pos, &h) != 0)
      break; /* the session fails with NC_E_PROTO */
    pos += NC_AMST_HEADER_LEN;
    if (h.len > NC_AMST_PAYLOAD_MAX)
      abort(); /* the parser's cap */
    if (h.type == NC_AMST_TYPE_HELLO)
      break;
    if (h.type == NC_AMST_TYPE_PING)
      continue;
    if (h.type == NC_AMST_TYPE_ACK) {
      if (pos + 8 > size)
        break;
      uint64_t bytes = 0;
      for (int i = 0; i < 8; i++)
        bytes = bytes << 8 | data[pos + i];
      pos += 8;
      uint64_t before = w.acked_bytes;
      int rc = nc__amst_ack_apply(&w, h.seq, bytes);
      if (rc < 0)
        break;
      if (w.acked_bytes < before || w.acked_bytes > w.admitted_bytes || w.acked_seq > w.next_seq)
        abort();
      continue;
    }
    int rc;
    while ((rc = nc__amst_rx_reserve(&s.rx, conn, &h)) == 0) {
      /* This receiver waits; the application frees room if it can. */
      int p = app_pop(&s);
      if (p <= 0) {
        rc = p < 0 ? p : -1; /* nothing deliverable: this peer stalls us */
        break;
      }
    }
    if (rc < 0)
      break;
    check_held(&s);
    if (pos + h.len > size)
      break; /* EOF inside the payload */
    struct nc__amst_frame *f = calloc(1, sizeof *f);
    if (!f)
      break;
    f->seq = h.seq;
    f->type = h.type;
    f->len = h.len;
    if (h.len) {
      f->payload = malloc(h.len);
      if (!f->payload) {
        free(f);
        break;
      }
      memcpy(f->payload, data + pos, h.len);
    }
    pos += h.len;
    nc__amst_rx_insert(&s.rx, conn, f);
    check_held(&s);
    if (eager) {
      while ((rc = app_pop(&s)) == 1)
        check_held(&s);
      if (rc < 0)
        break;
    }
  }
  /* Drain what is deliverable, then free the rest. */
  while (app_pop(&s) == 1)
    check_held(&s);
  if (s.rx.fin_popped != s.fin_seen)
    abort();
  nc__amst_rx_free(&s.rx);
  return 0;
}
