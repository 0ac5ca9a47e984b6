/* AMST: adaptive multi-stream transport. Contract and wire format in amst.h.
 *
 * Threads and locking. A session has one mutex and four condition
 * variables. Per connection there is a sender thread (takes frames from
 * the shared send queue in seq order and writes them whole, so frames on
 * one connection carry increasing seqs) and a receiver thread (reads
 * frames and puts them in the reorder buffer). The application's
 * nc_amst_send/recv only touch memory under the lock; all socket I/O
 * happens in the session's threads, outside the lock.
 *
 *   cv_tx     senders: a frame is queued, an ACK is due, or the session ends
 *   cv_space  nc_amst_send/flush/close: an ACK freed window space
 *   cv_app    nc_amst_recv: the next frame in order arrived
 *   cv_rwin   receivers: the application popped, the reorder window has room
 *
 * Window accounting (frame bytes = header + payload):
 *   send side   outstanding = admitted - acked, where admitted counts every
 *               frame nc_amst_send accepted and acked comes from the peer's
 *               ACKs, which report bytes delivered to its application. So
 *               outstanding covers our queue, both kernels' socket buffers,
 *               the wire and the peer's reorder buffer, and it is what
 *               nc_amst_send bounds by send_window_bytes.
 *   recv side   nc__amst_rx bounds received-but-undelivered bytes by
 *               recv_window_bytes plus one frame (see "Deadlock" below).
 *
 * Deadlock avoidance in the receive window. A receiver that has read a
 * frame header may only read the payload once the frame is admitted:
 * either it fits in the window, or it is frame E, the one the application
 * needs next. Claim: while the application keeps calling nc_amst_recv and
 * the peer keeps sending, frame E always arrives. Proof: E is carried by
 * some connection k (the sender wrote it there). Frames on connection k
 * arrive in increasing seq order, so every frame before E on k has a seq
 * below E; all of those were already received (E is the lowest seq not
 * received), so receiver k is never parked on one of them, and it reaches
 * E, which is admitted unconditionally. Once E is delivered, the
 * application frees its bytes and E+1 becomes the frame that cannot be
 * refused. Bound: frame E is only admitted over the window while the
 * application has nothing else to take (everything below E was popped), so
 * held bytes never exceed window + one frame.
 *
 * ACKs travel in-band: if every receiver of a side is parked because its
 * application stopped reading, ACKs behind parked frames wait too, so that
 * side's own nc_amst_send can block; amst.h asks applications that send
 * both ways to receive in another thread (as TCP would need). */
#include "dwcp/amst.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "dwcp/tls.h"
#include "util/err.h"

#define DEFAULT_STREAMS 4
#define DEFAULT_WINDOW_BYTES (8u << 20)
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_IO_TIMEOUT_MS 15000
#define ACK_DELAY_MS 2            /* delivered bytes below the threshold wait this long */
#define ACK_MIN_BYTES (4u << 10)  /* ACK threshold: a quarter of the peer's send window, */
#define ACK_MAX_BYTES (1u << 20)  /* clamped to this range */
#define RBUF_BYTES (64u << 10)    /* per-connection read buffer for headers and small frames */
#define BATCH_BYTES (64u << 10)   /* small frames are written together up to this */
#define BATCH_FRAMES 32
#define PENDING_MAX 32            /* connections in handshake during accept */
#define HELLO_FRAME_LEN (NC_AMST_HEADER_LEN + NC_AMST_HELLO_LEN)
#define ACK_FRAME_LEN (NC_AMST_HEADER_LEN + 8)
#define EOF_CLEAN 1               /* rd_exact: the peer closed at a frame boundary */

/* ---- wire helpers ---------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

void nc_amst_write_header(uint8_t buf[NC_AMST_HEADER_LEN], uint8_t type, uint64_t seq,
                          uint32_t len) {
  put16(buf, NC_AMST_MAGIC);
  buf[2] = NC_AMST_VERSION;
  buf[3] = type;
  put64(buf + 4, seq);
  put32(buf + 12, len);
}

int nc_amst_parse_header(const uint8_t buf[NC_AMST_HEADER_LEN], struct nc_amst_header *h) {
  if (get16(buf) != NC_AMST_MAGIC || buf[2] != NC_AMST_VERSION)
    return NC_E_PROTO;
  h->version = buf[2];
  h->type = buf[3];
  h->seq = get64(buf + 4);
  h->len = get32(buf + 12);
  switch (h->type) {
  case NC_AMST_TYPE_HELLO:
    return h->len == NC_AMST_HELLO_LEN ? 0 : NC_E_PROTO;
  case NC_AMST_TYPE_ACK:
    return h->len == 8 ? 0 : NC_E_PROTO;
  case NC_AMST_TYPE_FIN:
  case NC_AMST_TYPE_PING:
    return h->len == 0 ? 0 : NC_E_PROTO;
  default:
    if (h->type < NC_AMST_TYPE_USER)
      return NC_E_PROTO;
    return h->len <= NC_AMST_PAYLOAD_MAX ? 0 : NC_E_PROTO;
  }
}

/* HELLO payload: id[16] | u16 index | u16 count | u32 zero | u64 send window. */
static void put_hello(uint8_t out[HELLO_FRAME_LEN], const uint8_t id[16], int index, int count,
                      uint64_t send_window_bytes) {
  nc_amst_write_header(out, NC_AMST_TYPE_HELLO, 0, NC_AMST_HELLO_LEN);
  uint8_t *p = out + NC_AMST_HEADER_LEN;
  memcpy(p, id, 16);
  put16(p + 16, (uint16_t)index);
  put16(p + 18, (uint16_t)count);
  put32(p + 20, 0);
  put64(p + 24, send_window_bytes);
}

struct hello {
  uint8_t id[16];
  int index, count;
  uint64_t send_window_bytes;
};

static int get_hello(const uint8_t in[HELLO_FRAME_LEN], struct hello *out);

int nc__amst_parse_hello(const uint8_t buf[NC_AMST_HEADER_LEN + NC_AMST_HELLO_LEN],
                         uint8_t id[16], int *index, int *count, uint64_t *send_window_bytes) {
  struct hello h;
  int rc = get_hello(buf, &h);
  if (rc != 0)
    return rc;
  memcpy(id, h.id, 16);
  *index = h.index;
  *count = h.count;
  *send_window_bytes = h.send_window_bytes;
  return 0;
}

static int get_hello(const uint8_t in[HELLO_FRAME_LEN], struct hello *out) {
  struct nc_amst_header h;
  if (nc_amst_parse_header(in, &h) != 0 || h.type != NC_AMST_TYPE_HELLO || h.seq != 0)
    return NC_E_PROTO;
  const uint8_t *p = in + NC_AMST_HEADER_LEN;
  memcpy(out->id, p, 16);
  out->index = get16(p + 16);
  out->count = get16(p + 18);
  out->send_window_bytes = get64(p + 24);
  if (out->count < 1 || out->count > NC_AMST_STREAMS_MAX || out->index >= out->count ||
      get32(p + 20) != 0)
    return NC_E_PROTO;
  return 0;
}

/* The session id is a capability; compare without an early exit. */
static bool id_equal(const uint8_t a[16], const uint8_t b[16]) {
  uint8_t d = 0;
  for (int i = 0; i < 16; i++)
    d |= (uint8_t)(a[i] ^ b[i]);
  return d == 0;
}

/* ---- reassembly (pure) ----------------------------------------------- */

static uint64_t frame_bytes(uint32_t len) { return (uint64_t)NC_AMST_HEADER_LEN + len; }

void nc__amst_rx_init(struct nc__amst_rx *rx, int nconn, size_t window_bytes) {
  memset(rx, 0, sizeof *rx);
  rx->nconn = nconn;
  rx->window_bytes = window_bytes;
}

int nc__amst_rx_reserve(struct nc__amst_rx *rx, int conn, const struct nc_amst_header *h) {
  if (conn < 0 || conn >= rx->nconn || rx->q[conn].reserved ||
      (h->type != NC_AMST_TYPE_FIN && h->type < NC_AMST_TYPE_USER))
    return NC_E_INVALID; /* the caller's bug, not the peer's */
  /* Per connection, seqs strictly increase; nothing below what the
   * application already took; nothing after FIN; one FIN, after all. */
  if (rx->q[conn].any && h->seq <= rx->q[conn].last_seq)
    return NC_E_PROTO;
  if (h->seq < rx->next_seq)
    return NC_E_PROTO;
  if (rx->fin_received && h->seq >= rx->fin_seq)
    return NC_E_PROTO;
  if (h->type == NC_AMST_TYPE_FIN && h->seq < rx->received)
    return NC_E_PROTO; /* frames beyond the FIN were already received */
  if (h->seq == UINT64_MAX)
    return NC_E_PROTO;
  uint64_t fb = frame_bytes(h->len);
  if (h->seq != rx->next_seq && rx->buffered_bytes + fb > rx->window_bytes)
    return 0;
  rx->buffered_bytes += fb;
  rx->received++;
  rx->q[conn].last_seq = h->seq;
  rx->q[conn].any = true;
  rx->q[conn].reserved = true;
  if (h->type == NC_AMST_TYPE_FIN) {
    rx->fin_received = true;
    rx->fin_seq = h->seq;
  }
  return 1;
}

void nc__amst_rx_insert(struct nc__amst_rx *rx, int conn, struct nc__amst_frame *f) {
  f->next = NULL;
  if (rx->q[conn].tail)
    rx->q[conn].tail->next = f;
  else
    rx->q[conn].head = f;
  rx->q[conn].tail = f;
  rx->q[conn].reserved = false;
}

int nc__amst_rx_pop(struct nc__amst_rx *rx, struct nc__amst_frame **out) {
  int found = -1;
  for (int i = 0; i < rx->nconn; i++) {
    struct nc__amst_frame *f = rx->q[i].head;
    if (!f)
      continue;
    if (f->seq < rx->next_seq)
      return NC_E_PROTO; /* the same seq came on two connections */
    if (f->seq == rx->next_seq) {
      if (found >= 0)
        return NC_E_PROTO;
      found = i;
    }
  }
  if (found < 0)
    return 0;
  struct nc__amst_frame *f = rx->q[found].head;
  rx->q[found].head = f->next;
  if (!f->next)
    rx->q[found].tail = NULL;
  f->next = NULL;
  rx->next_seq++;
  rx->buffered_bytes -= frame_bytes(f->len);
  rx->delivered_bytes += frame_bytes(f->len);
  if (f->type == NC_AMST_TYPE_FIN)
    rx->fin_popped = true;
  *out = f;
  return 1;
}

const struct nc__amst_frame *nc__amst_rx_peek(const struct nc__amst_rx *rx) {
  for (int i = 0; i < rx->nconn; i++)
    if (rx->q[i].head && rx->q[i].head->seq == rx->next_seq)
      return rx->q[i].head;
  return NULL;
}

bool nc__amst_rx_complete(const struct nc__amst_rx *rx) {
  return rx->fin_received && rx->received == rx->fin_seq + 1;
}

void nc__amst_frame_free(struct nc__amst_frame *f) {
  if (!f)
    return;
  free(f->payload);
  free(f);
}

void nc__amst_rx_free(struct nc__amst_rx *rx) {
  for (int i = 0; i < rx->nconn; i++) {
    struct nc__amst_frame *f = rx->q[i].head;
    while (f) {
      struct nc__amst_frame *next = f->next;
      nc__amst_frame_free(f);
      f = next;
    }
    rx->q[i].head = rx->q[i].tail = NULL;
  }
}

/* ---- session ----------------------------------------------------------- */

/* A queued outgoing frame: header and payload in one buffer, one write. */
struct txframe {
  struct txframe *next;
  size_t bytes;
  uint8_t buf[];
};

struct conn {
  struct nc_amst *a;
  int idx;
  int fd;
  struct nc_tls_conn *tls; /* NULL: plain TCP */
  pthread_t tx, rx;
  bool tx_started, rx_started;
  int64_t last_tx_ms;
  struct nc_amst_stream_stats st;
  uint8_t *rbuf; /* RBUF_BYTES; touched by the receiver thread only */
  size_t rstart, rend;
  bool partial; /* rd_exact failed inside a frame */
};

struct nc_amst {
  pthread_mutex_t mu;
  pthread_cond_t cv_tx, cv_space, cv_app, cv_rwin;
  struct nc_amst_config cfg;
  size_t send_window_max; /* cfg.send_window_bytes as configured; the
                             window can shrink below it and grow back */
  int n;
  char tls_desc[64]; /* "TLSv1.3 <cipher>", "" for plain TCP */
  struct conn c[NC_AMST_STREAMS_MAX];
  int err;        /* first fatal error; 0 while healthy */
  bool peer_gone; /* the peer finished (FIN received) and left */
  bool closing;   /* nc_amst_close: incoming frames are discarded */
  int rx_live;    /* receiver threads still running */
  /* send side */
  struct txframe *q_head, *q_tail;
  uint64_t q_bytes;
  struct nc__amst_txwin w;
  bool fin_queued;
  uint64_t fin_seq;
  uint64_t msgs_sent, acks_recv;
  /* receive side */
  struct nc__amst_rx rx;
  uint64_t ack_sent_bytes, ack_sent_seq;
  uint64_t ack_threshold_bytes;
  bool ack_urgent;
  int64_t ack_owed_since_ms; /* 0: nothing owed */
  uint64_t msgs_recv, acks_sent;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on cv until deadline_ms (CLOCK_MONOTONIC); deadline < 0: forever. */
static void cv_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms) {
  if (deadline_ms < 0) {
    pthread_cond_wait(cv, mu);
    return;
  }
  struct timespec ts = {.tv_sec = deadline_ms / 1000, .tv_nsec = (deadline_ms % 1000) * 1000000};
  pthread_cond_timedwait(cv, mu, &ts);
}

static int64_t deadline_after(int timeout_ms) {
  return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static void broadcast_all(struct nc_amst *a) {
  pthread_cond_broadcast(&a->cv_tx);
  pthread_cond_broadcast(&a->cv_space);
  pthread_cond_broadcast(&a->cv_app);
  pthread_cond_broadcast(&a->cv_rwin);
}

/* Under the lock. The first error wins; shutting the sockets down wakes
 * every thread blocked in the kernel and shows the peer a closed stream. */
static void fail_locked(struct nc_amst *a, int err) {
  if (a->err)
    return;
  a->err = err;
  for (int i = 0; i < a->n; i++)
    shutdown(a->c[i].fd, SHUT_RDWR);
  broadcast_all(a);
}

/* Under the lock: a connection ended (EOF, reset, timeout). After the
 * peer's FIN and everything before it arrived, that is the peer leaving
 * after a graceful close; before, the session has lost data. */
static void conn_lost_locked(struct nc_amst *a, int err) {
  if (a->err)
    return;
  if (nc__amst_rx_complete(&a->rx)) {
    a->peer_gone = true;
    broadcast_all(a);
    return;
  }
  fail_locked(a, err == -ETIMEDOUT ? -ETIMEDOUT : -ECONNRESET);
}

static bool ack_owed(const struct nc_amst *a) {
  return a->rx.delivered_bytes != a->ack_sent_bytes;
}

/* Under the lock, after the application took frames: decide when the ACK
 * goes out (now, or after ACK_DELAY_MS if below the threshold). */
static void note_delivered_locked(struct nc_amst *a) {
  pthread_cond_broadcast(&a->cv_rwin);
  if (!ack_owed(a))
    return;
  if (a->rx.delivered_bytes - a->ack_sent_bytes >= a->ack_threshold_bytes || a->rx.fin_popped ||
      a->closing) {
    if (!a->ack_urgent) {
      a->ack_urgent = true;
      pthread_cond_signal(&a->cv_tx);
    }
  } else if (a->ack_owed_since_ms == 0) {
    a->ack_owed_since_ms = now_ms();
    pthread_cond_signal(&a->cv_tx); /* a sender re-arms its timer */
  }
}

/* Under the lock. FIN carries nothing for the application: once every
 * message before it was taken, it counts as delivered at once, so the
 * peer's close completes without waiting for one more nc_amst_recv. */
static void take_fin_locked(struct nc_amst *a) {
  const struct nc__amst_frame *next = nc__amst_rx_peek(&a->rx);
  struct nc__amst_frame *f;
  if (next && next->type == NC_AMST_TYPE_FIN && nc__amst_rx_pop(&a->rx, &f) == 1) {
    nc__amst_frame_free(f);
    note_delivered_locked(a);
    pthread_cond_broadcast(&a->cv_app);
  }
}

/* Under the lock, once closing: nobody will read, so deliver to nowhere
 * (and acknowledge), keeping the peer's frames flowing until its FIN. */
static void discard_ready_locked(struct nc_amst *a) {
  struct nc__amst_frame *f;
  int rc;
  bool any = false;
  while ((rc = nc__amst_rx_pop(&a->rx, &f)) == 1) {
    nc__amst_frame_free(f);
    any = true;
  }
  if (rc < 0)
    fail_locked(a, rc);
  if (any)
    note_delivered_locked(a);
}

/* Writes the iovecs fully. Blocking socket (TLS: non-blocking, waiting
 * in poll); abort wakes it via shutdown. A dead peer surfaces through
 * TCP_USER_TIMEOUT (-ETIMEDOUT). */
static int write_all(struct conn *c, struct iovec *iov, int n) {
  if (c->tls)
    return nc_tls_writev(c->tls, iov, n);
  int fd = c->fd;
  while (n > 0) {
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    size_t left = (size_t)w;
    while (n > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

static void *tx_main(void *arg) {
  struct conn *c = arg;
  (void)pthread_setname_np(pthread_self(), "nc-amst-tx");
  struct nc_amst *a = c->a;
  const int64_t keepalive_ms = a->cfg.io_timeout_ms / 4 > 0 ? a->cfg.io_timeout_ms / 4 : 1;
  uint8_t ctl[ACK_FRAME_LEN];
  struct iovec iov[BATCH_FRAMES + 1];
  struct txframe *batch[BATCH_FRAMES];

  pthread_mutex_lock(&a->mu);
  for (;;) {
    if (a->err || a->peer_gone)
      break;
    int64_t now = now_ms();
    bool ack = ack_owed(a) && (a->ack_urgent || now >= a->ack_owed_since_ms + ACK_DELAY_MS);
    bool ping = now >= c->last_tx_ms + keepalive_ms;
    if (!ack && !ping && !a->q_head) {
      int64_t deadline = c->last_tx_ms + keepalive_ms;
      if (ack_owed(a) && a->ack_owed_since_ms + ACK_DELAY_MS < deadline)
        deadline = a->ack_owed_since_ms + ACK_DELAY_MS;
      cv_wait_until(&a->cv_tx, &a->mu, deadline);
      continue;
    }
    int niov = 0, nframes = 0;
    uint64_t bytes = 0;
    if (ack) {
      nc_amst_write_header(ctl, NC_AMST_TYPE_ACK, a->rx.next_seq, 8);
      put64(ctl + NC_AMST_HEADER_LEN, a->rx.delivered_bytes);
      a->ack_sent_seq = a->rx.next_seq;
      a->ack_sent_bytes = a->rx.delivered_bytes;
      a->ack_urgent = false;
      a->ack_owed_since_ms = 0;
      a->acks_sent++;
      iov[niov++] = (struct iovec){ctl, ACK_FRAME_LEN};
      bytes += ACK_FRAME_LEN;
    } else if (!a->q_head) {
      nc_amst_write_header(ctl, NC_AMST_TYPE_PING, 0, 0);
      iov[niov++] = (struct iovec){ctl, NC_AMST_HEADER_LEN};
      bytes += NC_AMST_HEADER_LEN;
    }
    /* Small frames travel together; a large one alone, so that large
     * frames spread over the connections. */
    uint64_t batch_bytes = 0;
    while (a->q_head && nframes < BATCH_FRAMES &&
           (nframes == 0 || batch_bytes + a->q_head->bytes <= BATCH_BYTES)) {
      struct txframe *f = a->q_head;
      a->q_head = f->next;
      if (!a->q_head)
        a->q_tail = NULL;
      a->q_bytes -= f->bytes;
      batch_bytes += f->bytes;
      batch[nframes++] = f;
      iov[niov++] = (struct iovec){f->buf, f->bytes};
    }
    bytes += batch_bytes;
    pthread_mutex_unlock(&a->mu);

    int rc = write_all(c, iov, niov);
    for (int i = 0; i < nframes; i++)
      free(batch[i]);

    pthread_mutex_lock(&a->mu);
    if (rc < 0) {
      conn_lost_locked(a, rc);
      break;
    }
    c->last_tx_ms = now_ms();
    c->st.bytes_sent += bytes;
    c->st.frames_sent += (uint64_t)niov;
  }
  pthread_mutex_unlock(&a->mu);
  return NULL;
}

/* One read: >0 bytes, 0 EOF, -ETIMEDOUT after io_timeout_ms of silence
 * (plain: SO_RCVTIMEO; TLS: nc_tls_read's own wait), or another -errno. */
static ssize_t conn_recv(struct conn *c, void *buf, size_t n) {
  if (c->tls)
    return nc_tls_read(c->tls, buf, n, c->a->cfg.io_timeout_ms);
  for (;;) {
    ssize_t r = recv(c->fd, buf, n, 0);
    if (r >= 0)
      return r;
    if (errno == EINTR)
      continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
  }
}

/* Reads exactly n bytes. 0, EOF_CLEAN (the peer closed before the first
 * byte and at_boundary), -ECONNRESET (closed mid-frame), -ETIMEDOUT
 * (nothing for io_timeout_ms: SO_RCVTIMEO), or another -errno. On failure
 * c->partial tells whether it happened inside a frame. */
static int rd_exact(struct conn *c, void *dst, size_t n, bool at_boundary) {
  uint8_t *d = dst;
  bool got_any = false;
  c->partial = false;
  while (n > 0) {
    size_t avail = c->rend - c->rstart;
    if (avail > 0) {
      size_t m = avail < n ? avail : n;
      memcpy(d, c->rbuf + c->rstart, m);
      c->rstart += m;
      d += m;
      n -= m;
      got_any = true;
      continue;
    }
    bool direct = n >= RBUF_BYTES / 2;
    ssize_t r = conn_recv(c, direct ? (void *)d : (void *)c->rbuf, direct ? n : RBUF_BYTES);
    c->partial = got_any || !at_boundary;
    if (r == 0)
      return c->partial ? -ECONNRESET : EOF_CLEAN;
    if (r < 0)
      return (int)r;
    got_any = true;
    if (direct) {
      d += r;
      n -= (size_t)r;
    } else {
      c->rstart = 0;
      c->rend = (size_t)r;
    }
  }
  return 0;
}

int nc__amst_ack_apply(struct nc__amst_txwin *w, uint64_t seq, uint64_t bytes) {
  if (seq > w->next_seq || bytes > w->admitted_bytes ||
      (seq < w->acked_seq) != (bytes < w->acked_bytes) ||
      (seq == w->acked_seq) != (bytes == w->acked_bytes))
    return NC_E_PROTO;
  if (bytes <= w->acked_bytes)
    return 0; /* a repeat, or older than one already applied */
  w->acked_seq = seq;
  w->acked_bytes = bytes;
  return 1;
}

/* Under the lock: an ACK from the peer. */
static int apply_ack_locked(struct nc_amst *a, uint64_t seq, uint64_t bytes) {
  int rc = nc__amst_ack_apply(&a->w, seq, bytes);
  if (rc < 0)
    return rc;
  a->acks_recv++;
  if (rc == 1)
    pthread_cond_broadcast(&a->cv_space);
  return 0;
}

static void *rx_main(void *arg) {
  struct conn *c = arg;
  (void)pthread_setname_np(pthread_self(), "nc-amst-rx");
  struct nc_amst *a = c->a;
  uint8_t hb[NC_AMST_HEADER_LEN];
  int rc = 0;

  bool boundary = false;
  for (;;) {
    rc = rd_exact(c, hb, sizeof hb, true);
    if (rc != 0) {
      boundary = !c->partial;
      break;
    }
    struct nc_amst_header h;
    rc = nc_amst_parse_header(hb, &h);
    if (rc == 0 && h.type == NC_AMST_TYPE_HELLO)
      rc = NC_E_PROTO; /* only before the session starts */
    if (rc != 0)
      break;
    if (h.type == NC_AMST_TYPE_PING) {
      pthread_mutex_lock(&a->mu);
      c->st.bytes_recv += NC_AMST_HEADER_LEN;
      c->st.frames_recv++;
      pthread_mutex_unlock(&a->mu);
      continue;
    }
    if (h.type == NC_AMST_TYPE_ACK) {
      uint8_t p[8];
      rc = rd_exact(c, p, sizeof p, false);
      if (rc != 0)
        break;
      pthread_mutex_lock(&a->mu);
      c->st.bytes_recv += ACK_FRAME_LEN;
      c->st.frames_recv++;
      rc = apply_ack_locked(a, h.seq, get64(p));
      pthread_mutex_unlock(&a->mu);
      if (rc != 0)
        break;
      continue;
    }
    /* FIN or a message: wait for room in the reorder window. */
    pthread_mutex_lock(&a->mu);
    while (!a->err && (rc = nc__amst_rx_reserve(&a->rx, c->idx, &h)) == 0)
      pthread_cond_wait(&a->cv_rwin, &a->mu);
    if (a->err)
      rc = a->err;
    pthread_mutex_unlock(&a->mu);
    if (rc < 0)
      break;
    struct nc__amst_frame *f = calloc(1, sizeof *f);
    if (f && h.len > 0)
      f->payload = malloc(h.len);
    if (!f || (h.len > 0 && !f->payload)) {
      nc__amst_frame_free(f);
      rc = -ENOMEM;
      break;
    }
    f->seq = h.seq;
    f->type = h.type;
    f->len = h.len;
    rc = rd_exact(c, f->payload, h.len, false);
    if (rc != 0) {
      nc__amst_frame_free(f);
      break;
    }
    pthread_mutex_lock(&a->mu);
    c->st.bytes_recv += frame_bytes(h.len);
    c->st.frames_recv++;
    nc__amst_rx_insert(&a->rx, c->idx, f);
    if (a->closing)
      discard_ready_locked(a);
    else if (h.seq == a->rx.next_seq)
      pthread_cond_broadcast(&a->cv_app);
    take_fin_locked(a);
    pthread_mutex_unlock(&a->mu);
  }

  /* Between frames, a closed or silent connection may be the peer leaving
   * after its FIN; inside a frame it never is. */
  pthread_mutex_lock(&a->mu);
  if (rc == NC_E_PROTO || rc == -ENOMEM || rc == NC_E_INVALID)
    fail_locked(a, rc);
  else if (boundary)
    conn_lost_locked(a, rc == -ETIMEDOUT ? -ETIMEDOUT : -ECONNRESET);
  else
    fail_locked(a, rc == -ETIMEDOUT ? -ETIMEDOUT : -ECONNRESET);
  a->rx_live--;
  broadcast_all(a);
  pthread_mutex_unlock(&a->mu);
  return NULL;
}

/* ---- configuration and sockets ----------------------------------------- */

void nc_amst_config_default(struct nc_amst_config *cfg) {
  *cfg = (struct nc_amst_config){
      .streams = DEFAULT_STREAMS,
      .send_window_bytes = DEFAULT_WINDOW_BYTES,
      .recv_window_bytes = DEFAULT_WINDOW_BYTES,
      .connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS,
      .io_timeout_ms = DEFAULT_IO_TIMEOUT_MS,
      .bbr = true,
  };
}

static int norm_config(const struct nc_amst_config *in, struct nc_amst_config *out) {
  struct nc_amst_config d;
  nc_amst_config_default(&d);
  if (!in) {
    *out = d;
    return 0;
  }
  *out = *in;
  if (out->streams == 0)
    out->streams = d.streams;
  if (out->send_window_bytes == 0)
    out->send_window_bytes = d.send_window_bytes;
  if (out->recv_window_bytes == 0)
    out->recv_window_bytes = d.recv_window_bytes;
  if (out->connect_timeout_ms == 0)
    out->connect_timeout_ms = d.connect_timeout_ms;
  if (out->io_timeout_ms == 0)
    out->io_timeout_ms = d.io_timeout_ms;
  if (out->streams < 1 || out->streams > NC_AMST_STREAMS_MAX || out->connect_timeout_ms < 0 ||
      out->io_timeout_ms < 0 || out->sock_buf_bytes > INT_MAX)
    return NC_E_INVALID;
  return 0;
}

/* Options that must be in place before the connection carries data.
 * NODELAY: every write is a whole frame or batch, so Nagle only delays the
 * tail of a frame and small ACKs. Buffers: kernel autotuning unless the
 * caller bounds them. BBR: best effort. USER_TIMEOUT: unacknowledged data
 * this old means the peer is gone (zero-window probes answered by a live
 * but slow peer do not count). */
static void set_sock_opts(int fd, const struct nc_amst_config *cfg) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (cfg->sock_buf_bytes > 0) {
    int b = (int)cfg->sock_buf_bytes;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof b);
  }
  if (cfg->bbr)
    (void)setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "bbr", 3);
  unsigned int ut = (unsigned int)cfg->io_timeout_ms;
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut);
}

/* Once the handshake is over: blocking I/O, reads time out after
 * io_timeout_ms of silence (the peer pings at a quarter of it). */
static int set_session_mode(int fd, const struct nc_amst_config *cfg) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
    return -errno;
  struct timeval tv = {.tv_sec = cfg->io_timeout_ms / 1000,
                       .tv_usec = (cfg->io_timeout_ms % 1000) * 1000};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
    return -errno;
  return 0;
}

static void free_session(struct nc_amst *a) {
  struct txframe *f = a->q_head;
  while (f) {
    struct txframe *next = f->next;
    free(f);
    f = next;
  }
  nc__amst_rx_free(&a->rx);
  for (int i = 0; i < a->n; i++) {
    free(a->c[i].rbuf);
    nc_tls_conn_free(a->c[i].tls);
  }
  pthread_cond_destroy(&a->cv_tx);
  pthread_cond_destroy(&a->cv_space);
  pthread_cond_destroy(&a->cv_app);
  pthread_cond_destroy(&a->cv_rwin);
  pthread_mutex_destroy(&a->mu);
  free(a);
}

static void join_threads(struct nc_amst *a) {
  for (int i = 0; i < a->n; i++) {
    if (a->c[i].tx_started)
      pthread_join(a->c[i].tx, NULL);
    if (a->c[i].rx_started)
      pthread_join(a->c[i].rx, NULL);
    a->c[i].tx_started = a->c[i].rx_started = false;
  }
}

/* Takes the n handshaken sockets and their TLS connections (tls NULL:
 * plain; all closed and freed on failure too) and starts the session's
 * threads. */
static int session_start(int *fds, struct nc_tls_conn **tls, int n,
                         const struct nc_amst_config *cfg, uint64_t peer_send_window_bytes,
                         struct nc_amst **out) {
  int rc = 0;
  struct nc_amst *a = calloc(1, sizeof *a);
  if (!a) {
    for (int i = 0; i < n; i++) {
      nc_tls_conn_free(tls ? tls[i] : NULL);
      close(fds[i]);
    }
    return -ENOMEM;
  }
  a->cfg = *cfg;
  a->n = n;
  pthread_mutex_init(&a->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&a->cv_tx, &ca);
  pthread_cond_init(&a->cv_space, &ca);
  pthread_cond_init(&a->cv_app, &ca);
  pthread_cond_init(&a->cv_rwin, &ca);
  pthread_condattr_destroy(&ca);
  nc__amst_rx_init(&a->rx, n, cfg->recv_window_bytes);
  uint64_t thr = peer_send_window_bytes / 4;
  a->ack_threshold_bytes = thr < ACK_MIN_BYTES ? ACK_MIN_BYTES : thr > ACK_MAX_BYTES ? ACK_MAX_BYTES : thr;
  int64_t now = now_ms();
  for (int i = 0; i < n; i++) {
    struct conn *c = &a->c[i];
    c->a = a;
    c->idx = i;
    c->fd = fds[i];
    c->tls = tls ? tls[i] : NULL;
    c->last_tx_ms = now;
    c->rbuf = malloc(RBUF_BYTES);
    if (!c->rbuf && rc == 0)
      rc = -ENOMEM;
    if (rc == 0 && !c->tls) /* TLS stays non-blocking: nc_tls_* wait in poll */
      rc = set_session_mode(c->fd, cfg);
  }
  if (n > 0 && a->c[0].tls)
    snprintf(a->tls_desc, sizeof a->tls_desc, "%s %s", nc_tls_version(a->c[0].tls),
             nc_tls_cipher(a->c[0].tls));
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 512u << 10);
  pthread_mutex_lock(&a->mu);
  for (int i = 0; i < n && rc == 0; i++) {
    struct conn *c = &a->c[i];
    rc = -pthread_create(&c->rx, &attr, rx_main, c);
    if (rc != 0)
      break;
    c->rx_started = true;
    a->rx_live++;
    rc = -pthread_create(&c->tx, &attr, tx_main, c);
    if (rc != 0)
      break;
    c->tx_started = true;
  }
  pthread_attr_destroy(&attr);
  if (rc != 0)
    fail_locked(a, rc);
  pthread_mutex_unlock(&a->mu);
  if (rc != 0) {
    join_threads(a);
    for (int i = 0; i < n; i++)
      close(a->c[i].fd);
    free_session(a);
    return rc;
  }
  *out = a;
  return 0;
}

/* ---- listener and accept --------------------------------------------- */

struct nc_amst_listener {
  int fd;
  int port;
  atomic_int aborted; /* nc_amst_listener_abort was called */
};

void nc_amst_listener_abort(struct nc_amst_listener *l) {
  atomic_store(&l->aborted, 1);
  shutdown(l->fd, SHUT_RDWR); /* wakes a poll in nc_amst_accept */
}

int nc_amst_listen(const char *host, int port, struct nc_amst_listener **out) {
  if (port < 0 || port > 65535 || !out)
    return NC_E_INVALID;
  char portstr[8];
  snprintf(portstr, sizeof portstr, "%d", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  if (getaddrinfo(host, portstr, &hints, &res) != 0)
    return NC_E_INVALID;
  int rc = -EADDRNOTAVAIL, fd = -1;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    /* non-blocking: accept drains the backlog until EAGAIN */
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      rc = -errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0) {
      rc = 0;
      break;
    }
    rc = -errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (rc != 0)
    return rc;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  struct nc_amst_listener *l = calloc(1, sizeof *l);
  if (!l) {
    close(fd);
    return -ENOMEM;
  }
  l->fd = fd;
  l->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                     : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  *out = l;
  return 0;
}

int nc_amst_listener_port(const struct nc_amst_listener *l) { return l->port; }

void nc_amst_listener_close(struct nc_amst_listener *l) {
  if (!l)
    return;
  close(l->fd);
  free(l);
}

struct pending {
  int fd;
  struct nc_tls_conn *tls; /* NULL: plain TCP */
  bool hs_done;            /* TLS handshake complete */
  short events;            /* what the next step waits for */
  size_t got;
  int64_t since_ms;
  uint8_t buf[HELLO_FRAME_LEN];
};

/* One non-blocking read: >0 bytes, 0 EOF, -EAGAIN nothing yet, -errno. */
static ssize_t recv_nb(int fd, struct nc_tls_conn *tls, void *buf, size_t n) {
  if (tls)
    return nc_tls_read(tls, buf, n, 0);
  for (;;) {
    ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
    if (r >= 0)
      return r;
    if (errno != EINTR)
      return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

/* Advances the pending connection: its TLS handshake, then its HELLO.
 * 1: complete HELLO, 0: more to come (p->events says what to wait for),
 * <0: refuse it (closed, garbage, not TLS, not a HELLO, the wrong
 * certificate). */
static int pending_read(struct pending *p, struct hello *h) {
  if (p->tls && !p->hs_done) {
    int r = nc_tls_handshake_step(p->tls);
    if (r < 0)
      return r;
    if (r > 0) {
      p->events = (short)r;
      return 0;
    }
    p->hs_done = true;
  }
  p->events = POLLIN;
  while (p->got < sizeof p->buf) {
    /* TLS may hold decrypted bytes poll cannot see: read until EAGAIN. */
    ssize_t r = recv_nb(p->fd, p->tls, p->buf + p->got, sizeof p->buf - p->got);
    if (r == -EAGAIN)
      return 0;
    if (r == 0)
      return -ECONNRESET;
    if (r < 0)
      return (int)r;
    p->got += (size_t)r;
    if (p->got >= NC_AMST_HEADER_LEN) {
      struct nc_amst_header hd;
      if (nc_amst_parse_header(p->buf, &hd) != 0 || hd.type != NC_AMST_TYPE_HELLO)
        return NC_E_PROTO; /* refuse early; never wait for a garbage length */
    }
  }
  return get_hello(p->buf, h) == 0 ? 1 : NC_E_PROTO;
}

static void pending_drop(struct pending *pend, int *npend, int i) {
  nc_tls_conn_free(pend[i].tls);
  close(pend[i].fd);
  pend[i] = pend[--*npend];
}

/* Writes a small buffer (a HELLO) within timeout_ms. */
static int send_small(int fd, struct nc_tls_conn *tls, const void *buf, size_t n,
                      int timeout_ms) {
  if (tls)
    return nc_tls_write(tls, buf, n); /* an empty socket buffer takes it at once */
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  if (poll(&p, 1, timeout_ms) != 1 || send(fd, buf, n, MSG_NOSIGNAL) != (ssize_t)n)
    return -ECONNRESET;
  return 0;
}

int nc_amst_accept(struct nc_amst_listener *l, const struct nc_amst_config *cfg_in,
                   const uint8_t session_id[16], int timeout_ms, struct nc_amst **out) {
  struct nc_amst_config cfg;
  int rc = norm_config(cfg_in, &cfg);
  if (rc != 0)
    return rc;
  struct pending pend[PENDING_MAX];
  int npend = 0, count = 0, matched = 0;
  int fds[NC_AMST_STREAMS_MAX];
  struct nc_tls_conn *tls[NC_AMST_STREAMS_MAX] = {0};
  uint64_t peer_window = 0;
  for (int i = 0; i < NC_AMST_STREAMS_MAX; i++)
    fds[i] = -1;
  int64_t deadline = deadline_after(timeout_ms);

  while (count == 0 || matched < count) {
    if (atomic_load(&l->aborted)) {
      rc = -ECANCELED;
      goto out;
    }
    int64_t wait = deadline < 0 ? -1 : deadline - now_ms();
    if (deadline >= 0 && wait <= 0) {
      rc = -ETIMEDOUT;
      goto out;
    }
    struct pollfd pfd[PENDING_MAX + 1];
    pfd[0] = (struct pollfd){.fd = l->fd, .events = POLLIN};
    for (int i = 0; i < npend; i++)
      pfd[i + 1] = (struct pollfd){.fd = pend[i].fd, .events = pend[i].events};
    int pr = poll(pfd, (nfds_t)npend + 1, wait > INT_MAX ? INT_MAX : (int)wait);
    if (pr < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      goto out;
    }
    /* Walk pending connections from the end so drops don't skip any. */
    for (int i = npend - 1; i >= 0; i--) {
      if (!pfd[i + 1].revents)
        continue;
      struct hello h;
      int r = pending_read(&pend[i], &h);
      if (r == 0)
        continue;
      if (r < 0 || !id_equal(h.id, session_id) || (count && h.count != count) ||
          fds[h.index] >= 0) {
        pending_drop(pend, &npend, i); /* refused: wrong session, garbage, duplicate */
        continue;
      }
      count = h.count;
      peer_window = h.send_window_bytes;
      fds[h.index] = pend[i].fd;
      tls[h.index] = pend[i].tls;
      matched++;
      pend[i] = pend[--npend];
    }
    if (pfd[0].revents & POLLIN) {
      for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
          break;
        if (npend == PENDING_MAX) { /* evict the oldest handshake */
          int oldest = 0;
          for (int i = 1; i < npend; i++)
            if (pend[i].since_ms < pend[oldest].since_ms)
              oldest = i;
          pending_drop(pend, &npend, oldest);
        }
        struct nc_tls_conn *t = NULL;
        if (cfg.tls && nc_tls_conn_new(cfg.tls, fd, true, cfg.tls_peer_fp, &t) != 0) {
          close(fd);
          continue;
        }
        pend[npend++] = (struct pending){.fd = fd, .tls = t, .events = POLLIN,
                                         .since_ms = now_ms()};
      }
    }
  }
  /* Every connection arrived: answer each with our HELLO, then start. */
  for (int i = 0; i < count; i++) {
    set_sock_opts(fds[i], &cfg);
    uint8_t hb[HELLO_FRAME_LEN];
    put_hello(hb, session_id, i, count, cfg.send_window_bytes);
    if (send_small(fds[i], tls[i], hb, sizeof hb, cfg.connect_timeout_ms) != 0) {
      rc = -ECONNRESET;
      goto out;
    }
  }
  rc = session_start(fds, cfg.tls ? tls : NULL, count, &cfg, peer_window, out);
  for (int i = 0; i < NC_AMST_STREAMS_MAX; i++) {
    fds[i] = -1; /* session_start took them */
    tls[i] = NULL;
  }
out:
  for (int i = 0; i < npend; i++) {
    nc_tls_conn_free(pend[i].tls);
    close(pend[i].fd);
  }
  for (int i = 0; i < NC_AMST_STREAMS_MAX; i++) {
    nc_tls_conn_free(tls[i]);
    if (fds[i] >= 0)
      close(fds[i]);
  }
  return rc;
}

/* ---- connect ------------------------------------------------------------ */

static int connect_one(const struct addrinfo *res, const struct nc_amst_config *cfg,
                       int64_t deadline, int *out) {
  int rc = -ECONNREFUSED;
  for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
    if (fd < 0) {
      rc = -errno;
      continue;
    }
    set_sock_opts(fd, cfg); /* buffer sizes must precede the SYN */
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
      rc = -errno;
      close(fd);
      continue;
    }
    int64_t wait = deadline - now_ms();
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int pr = wait > 0 ? poll(&p, 1, (int)wait) : 0;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (pr == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
      *out = fd;
      return 0;
    }
    rc = pr == 0 ? -ETIMEDOUT : soerr ? -soerr : -ECONNREFUSED;
    close(fd);
  }
  return rc;
}

/* TLS handshakes on all n connections at once (one round trip, not n). */
static int handshake_all(struct nc_tls_conn **tls, const int *fds, int n, int64_t deadline) {
  bool done[NC_AMST_STREAMS_MAX] = {0};
  for (int left = n; left > 0;) {
    struct pollfd pfd[NC_AMST_STREAMS_MAX];
    int np = 0;
    for (int i = 0; i < n; i++) {
      if (done[i])
        continue;
      int r = nc_tls_handshake_step(tls[i]);
      if (r < 0)
        return r;
      if (r == 0) {
        done[i] = true;
        left--;
        continue;
      }
      pfd[np++] = (struct pollfd){.fd = fds[i], .events = (short)r};
    }
    if (left == 0)
      break;
    int64_t wait = deadline - now_ms();
    if (wait <= 0)
      return -ETIMEDOUT;
    if (poll(pfd, (nfds_t)np, (int)(wait < NC_TLS_POLL_SLICE_MS ? wait : NC_TLS_POLL_SLICE_MS)) <
            0 &&
        errno != EINTR)
      return -errno;
  }
  return 0;
}

int nc_amst_connect(const struct nc_amst_config *cfg_in, const char *host, int port,
                    const uint8_t session_id[16], struct nc_amst **out) {
  struct nc_amst_config cfg;
  int rc = norm_config(cfg_in, &cfg);
  if (rc != 0)
    return rc;
  if (!host || port <= 0 || port > 65535 || (cfg.tls && !cfg.tls_peer_fp))
    return NC_E_INVALID;
  char portstr[8];
  snprintf(portstr, sizeof portstr, "%d", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  if (getaddrinfo(host, portstr, &hints, &res) != 0)
    return NC_E_INVALID;
  int n = cfg.streams, fds[NC_AMST_STREAMS_MAX];
  struct nc_tls_conn *tls[NC_AMST_STREAMS_MAX] = {0};
  size_t got[NC_AMST_STREAMS_MAX] = {0};
  uint8_t reply[NC_AMST_STREAMS_MAX][HELLO_FRAME_LEN];
  uint64_t peer_window = 0;
  for (int i = 0; i < n; i++)
    fds[i] = -1;
  int64_t deadline = now_ms() + cfg.connect_timeout_ms;

  for (int i = 0; i < n; i++) {
    rc = connect_one(res, &cfg, deadline, &fds[i]);
    if (rc == 0 && cfg.tls)
      rc = nc_tls_conn_new(cfg.tls, fds[i], false, cfg.tls_peer_fp, &tls[i]);
    if (rc != 0)
      goto out;
  }
  if (cfg.tls && (rc = handshake_all(tls, fds, n, deadline)) != 0)
    goto out;
  for (int i = 0; i < n; i++) {
    uint8_t hb[HELLO_FRAME_LEN];
    put_hello(hb, session_id, i, n, cfg.send_window_bytes);
    if (send_small(fds[i], tls[i], hb, sizeof hb, cfg.connect_timeout_ms) != 0) {
      rc = -ECONNRESET;
      goto out;
    }
  }
  /* Wait for the acceptor's HELLO on every connection. Read only the
   * HELLO's bytes: session data may follow right behind it. */
  for (int done = 0; done < n;) {
    struct pollfd pfd[NC_AMST_STREAMS_MAX];
    int np = 0;
    for (int i = 0; i < n; i++) {
      while (got[i] < HELLO_FRAME_LEN) { /* TLS may hold bytes poll cannot see */
        ssize_t r = recv_nb(fds[i], tls[i], reply[i] + got[i], HELLO_FRAME_LEN - got[i]);
        if (r == -EAGAIN)
          break;
        if (r <= 0) { /* the acceptor closed it: wrong id, or not accepting */
          rc = r == 0 || r == -ECONNRESET ? -ECONNREFUSED : (int)r;
          goto out;
        }
        got[i] += (size_t)r;
        if (got[i] < HELLO_FRAME_LEN)
          continue;
        struct hello h;
        if (get_hello(reply[i], &h) != 0 || !id_equal(h.id, session_id) || h.index != i ||
            h.count != n) {
          rc = NC_E_PROTO;
          goto out;
        }
        peer_window = h.send_window_bytes;
        done++;
      }
      if (got[i] < HELLO_FRAME_LEN)
        pfd[np++] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    }
    if (done == n)
      break;
    int64_t wait = deadline - now_ms();
    int pr = wait > 0 ? poll(pfd, (nfds_t)np, (int)wait) : 0;
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0) {
      rc = pr == 0 ? -ETIMEDOUT : -errno;
      goto out;
    }
  }
  rc = session_start(fds, cfg.tls ? tls : NULL, n, &cfg, peer_window, out);
  for (int i = 0; i < n; i++) {
    fds[i] = -1;
    tls[i] = NULL;
  }
out:
  freeaddrinfo(res);
  for (int i = 0; i < n; i++) {
    nc_tls_conn_free(tls[i]);
    if (fds[i] >= 0)
      close(fds[i]);
  }
  return rc;
}

/* ---- application calls ------------------------------------------------- */

/* Under the lock: appends f, taking the next seq. */
static void enqueue_locked(struct nc_amst *a, struct txframe *f, uint8_t type, uint32_t len) {
  nc_amst_write_header(f->buf, type, a->w.next_seq++, len);
  f->next = NULL;
  if (a->q_tail)
    a->q_tail->next = f;
  else
    a->q_head = f;
  a->q_tail = f;
  a->q_bytes += f->bytes;
  a->w.admitted_bytes += f->bytes;
  pthread_cond_signal(&a->cv_tx);
}

int nc_amst_send(struct nc_amst *a, uint8_t type, const void *payload, size_t len) {
  if (type < NC_AMST_TYPE_USER || (len > 0 && !payload))
    return NC_E_INVALID;
  if (len > NC_AMST_PAYLOAD_MAX)
    return NC_E_TOOBIG;
  size_t fb = NC_AMST_HEADER_LEN + len;
  struct txframe *f = malloc(sizeof *f + fb);
  if (!f)
    return -ENOMEM;
  f->bytes = fb;
  if (len > 0)
    memcpy(f->buf + NC_AMST_HEADER_LEN, payload, len);

  int rc;
  pthread_mutex_lock(&a->mu);
  int64_t deadline = deadline_after(a->cfg.io_timeout_ms);
  uint64_t seen_acked = a->w.acked_bytes;
  for (;;) {
    if (a->err) {
      rc = a->err;
      break;
    }
    if (a->peer_gone || a->fin_queued) {
      rc = -EPIPE;
      break;
    }
    uint64_t outstanding = a->w.admitted_bytes - a->w.acked_bytes;
    if (outstanding == 0 || outstanding + fb <= a->cfg.send_window_bytes) {
      enqueue_locked(a, f, type, (uint32_t)len);
      a->msgs_sent++;
      f = NULL;
      rc = 0;
      break;
    }
    if (a->w.acked_bytes != seen_acked) { /* progress: the timeout restarts */
      seen_acked = a->w.acked_bytes;
      deadline = deadline_after(a->cfg.io_timeout_ms);
    }
    if (now_ms() >= deadline) {
      rc = -ETIMEDOUT;
      break;
    }
    cv_wait_until(&a->cv_space, &a->mu, deadline);
  }
  pthread_mutex_unlock(&a->mu);
  free(f);
  return rc;
}

int nc_amst_recv(struct nc_amst *a, int timeout_ms, uint8_t *type, void **payload, size_t *len) {
  int rc;
  int64_t deadline = deadline_after(timeout_ms);
  pthread_mutex_lock(&a->mu);
  for (;;) {
    if (a->rx.fin_popped) {
      rc = -EPIPE;
      break;
    }
    if (a->err) {
      rc = a->err;
      break;
    }
    struct nc__amst_frame *f;
    rc = nc__amst_rx_pop(&a->rx, &f);
    if (rc < 0) {
      fail_locked(a, rc);
      break;
    }
    if (rc == 1) {
      note_delivered_locked(a);
      if (f->type == NC_AMST_TYPE_FIN) { /* normally taken by take_fin_locked */
        nc__amst_frame_free(f);
        rc = -EPIPE;
        break;
      }
      take_fin_locked(a);
      a->msgs_recv++;
      *type = f->type;
      *payload = f->payload;
      *len = f->len;
      free(f);
      rc = 0;
      break;
    }
    if (deadline >= 0 && now_ms() >= deadline) {
      rc = -ETIMEDOUT;
      break;
    }
    cv_wait_until(&a->cv_app, &a->mu, deadline);
  }
  pthread_mutex_unlock(&a->mu);
  return rc;
}

/* Waits until the peer acknowledged everything admitted (all) or the
 * first upto bytes. */
static int wait_acked(struct nc_amst *a, bool all, uint64_t upto, int timeout_ms) {
  int rc;
  int64_t deadline = deadline_after(timeout_ms);
  pthread_mutex_lock(&a->mu);
  for (;;) {
    if (all ? a->w.acked_bytes == a->w.admitted_bytes : a->w.acked_bytes >= upto) {
      rc = 0;
      break;
    }
    if (a->err || a->peer_gone) {
      rc = a->err ? a->err : -EPIPE;
      break;
    }
    if (deadline >= 0 && now_ms() >= deadline) {
      rc = -ETIMEDOUT;
      break;
    }
    cv_wait_until(&a->cv_space, &a->mu, deadline);
  }
  pthread_mutex_unlock(&a->mu);
  return rc;
}

int nc_amst_flush(struct nc_amst *a, int timeout_ms) { return wait_acked(a, true, 0, timeout_ms); }

int nc_amst_wait_acked(struct nc_amst *a, uint64_t upto, int timeout_ms) {
  return wait_acked(a, false, upto, timeout_ms);
}

uint64_t nc_amst_admitted(struct nc_amst *a) {
  pthread_mutex_lock(&a->mu);
  uint64_t n = a->w.admitted_bytes;
  pthread_mutex_unlock(&a->mu);
  return n;
}

size_t nc_amst_set_send_window(struct nc_amst *a, size_t bytes) {
  if (!a)
    return 0;
  pthread_mutex_lock(&a->mu);
  size_t max = a->send_window_max ? a->send_window_max : a->cfg.send_window_bytes;
  if (bytes < NC_AMST_SEND_WINDOW_MIN)
    bytes = NC_AMST_SEND_WINDOW_MIN;
  if (bytes > max)
    bytes = max;
  a->send_window_max = max;
  a->cfg.send_window_bytes = bytes;
  pthread_cond_broadcast(&a->cv_space);
  pthread_mutex_unlock(&a->mu);
  return bytes;
}

void nc_amst_stats(struct nc_amst *a, struct nc_amst_stats *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&a->mu);
  out->streams = a->n;
  out->queued_bytes = a->w.admitted_bytes - a->w.acked_bytes;
  out->msgs_sent = a->msgs_sent;
  out->msgs_recv = a->msgs_recv;
  out->acks_sent = a->acks_sent;
  out->acks_recv = a->acks_recv;
  out->recv_buffered_bytes = a->rx.buffered_bytes;
  snprintf(out->tls, sizeof out->tls, "%s", a->tls_desc);
  for (int i = 0; i < a->n; i++) {
    out->s[i] = a->c[i].st;
    out->bytes_sent += a->c[i].st.bytes_sent;
    out->bytes_recv += a->c[i].st.bytes_recv;
  }
  pthread_mutex_unlock(&a->mu);
  /* The fds stay open until nc_amst_close, which must not run concurrently. */
  for (int i = 0; i < a->n; i++) {
    struct tcp_info ti;
    socklen_t sl = sizeof ti;
    if (getsockopt(a->c[i].fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) == 0) {
      out->s[i].rtt_us = ti.tcpi_rtt;
      out->s[i].cwnd = ti.tcpi_snd_cwnd;
    }
    sl = sizeof out->s[i].cc - 1;
    if (getsockopt(a->c[i].fd, IPPROTO_TCP, TCP_CONGESTION, out->s[i].cc, &sl) != 0)
      out->s[i].cc[0] = '\0';
  }
}

void nc_amst_abort(struct nc_amst *a) {
  pthread_mutex_lock(&a->mu);
  fail_locked(a, -ECANCELED);
  pthread_mutex_unlock(&a->mu);
}

void nc_amst_close(struct nc_amst *a) {
  if (!a)
    return;
  struct txframe *fin = malloc(sizeof *fin + NC_AMST_HEADER_LEN);
  pthread_mutex_lock(&a->mu);
  bool failed = a->err != 0;
  if (!a->err && !a->peer_gone && fin) {
    fin->bytes = NC_AMST_HEADER_LEN;
    a->fin_seq = a->w.next_seq;
    a->fin_queued = true;
    enqueue_locked(a, fin, NC_AMST_TYPE_FIN, 0); /* beyond the window: a header */
    fin = NULL;
    a->closing = true;
    discard_ready_locked(a);
    int64_t deadline = deadline_after(a->cfg.io_timeout_ms);
    while (!a->err && !a->peer_gone && a->rx_live > 0 && a->w.acked_seq <= a->fin_seq &&
           (deadline < 0 || now_ms() < deadline))
      cv_wait_until(&a->cv_space, &a->mu, deadline);
  }
  fail_locked(a, -EPIPE);
  pthread_mutex_unlock(&a->mu);
  free(fin);
  join_threads(a);
  for (int i = 0; i < a->n; i++) {
    if (failed) { /* reset: drop whatever the kernel still holds */
      struct linger lg = {.l_onoff = 1, .l_linger = 0};
      setsockopt(a->c[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(a->c[i].fd);
  }
  free_session(a);
}
