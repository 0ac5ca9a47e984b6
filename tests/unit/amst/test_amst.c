/* AMST unit tests over loopback: ordering, both directions, back-pressure,
 * receive-window deadlock freedom, protocol errors, session matching,
 * abort, close and dead peers. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "amst_test.h"
#include "util/err.h"

#define MIB (1024 * 1024)

static struct nc_amst_config cfg_base(int streams) {
  struct nc_amst_config c;
  nc_amst_config_default(&c);
  c.streams = streams;
  c.io_timeout_ms = 5000;
  return c;
}

/* ---- pure pieces --------------------------------------------------------- */

static void test_header(void **state) {
  (void)state;
  uint8_t b[NC_AMST_HEADER_LEN];
  struct nc_amst_header h;
  nc_amst_write_header(b, 200, 0x0102030405060708ull, 77);
  assert_int_equal(b[0], 0x44);
  assert_int_equal(b[1], 0x57);
  assert_int_equal(b[4], 0x01);
  assert_int_equal(b[11], 0x08);
  assert_int_equal(nc_amst_parse_header(b, &h), 0);
  assert_int_equal(h.type, 200);
  assert_int_equal(h.seq, 0x0102030405060708ull);
  assert_int_equal(h.len, 77);

  nc_amst_write_header(b, NC_AMST_TYPE_USER, 1, NC_AMST_PAYLOAD_MAX);
  assert_int_equal(nc_amst_parse_header(b, &h), 0);
  nc_amst_write_header(b, NC_AMST_TYPE_USER, 1, NC_AMST_PAYLOAD_MAX + 1);
  assert_int_equal(nc_amst_parse_header(b, &h), NC_E_PROTO);
  nc_amst_write_header(b, NC_AMST_TYPE_USER, 1, 0xffffffffu);
  assert_int_equal(nc_amst_parse_header(b, &h), NC_E_PROTO);
  /* control frames have fixed lengths; unknown control types are refused */
  nc_amst_write_header(b, NC_AMST_TYPE_ACK, 1, 8);
  assert_int_equal(nc_amst_parse_header(b, &h), 0);
  nc_amst_write_header(b, NC_AMST_TYPE_ACK, 1, 9);
  assert_int_equal(nc_amst_parse_header(b, &h), NC_E_PROTO);
  nc_amst_write_header(b, NC_AMST_TYPE_FIN, 1, 1);
  assert_int_equal(nc_amst_parse_header(b, &h), NC_E_PROTO);
  nc_amst_write_header(b, NC_AMST_TYPE_HELLO, 0, 31);
  assert_int_equal(nc_amst_parse_header(b, &h), NC_E_PROTO);
  for (int t = 0; t < NC_AMST_TYPE_USER; t++) {
    if (t >= NC_AMST_TYPE_HELLO && t <= NC_AMST_TYPE_PING)
      continue;
    nc_amst_write_header(b, (uint8_t)t, 0, 0);
    assert_int_equal(nc_amst_parse_header(b, &h), NC_E_PROTO);
  }
  nc_amst_write_header(b, NC_AMST_TYPE_USER, 1, 1);
  b[2] = 2; /* version */
  assert_int_equal(nc_amst_parse_header(b, &h), NC_E_PROTO);
  nc_amst_write_header(b, NC_AMST_TYPE_USER, 1, 1);
  b[0] = 0; /* magic */
  assert_int_equal(nc_amst_parse_header(b, &h), NC_E_PROTO);
}

static struct nc__amst_frame *mkframe(uint64_t seq, uint8_t type, uint32_t len) {
  struct nc__amst_frame *f = calloc(1, sizeof *f);
  f->seq = seq;
  f->type = type;
  f->len = len;
  f->payload = len ? calloc(1, len) : NULL;
  return f;
}

static int reserve(struct nc__amst_rx *rx, int conn, uint64_t seq, uint8_t type, uint32_t len) {
  struct nc_amst_header h = {.version = 1, .type = type, .seq = seq, .len = len};
  return nc__amst_rx_reserve(rx, conn, &h);
}

/* The window rule: out-of-order frames wait for room, the frame the
 * application needs next never does, and memory stays within window + one
 * frame. */
static void test_rx_window_rule(void **state) {
  (void)state;
  struct nc__amst_rx rx;
  struct nc__amst_frame *f;
  nc__amst_rx_init(&rx, 2, 100);
  /* seq 1 (106 bytes) on conn 0 does not fit and is not next: wait */
  assert_int_equal(reserve(&rx, 0, 1, 16, 90), 0);
  /* seq 0 on conn 1 is next: admitted although the window is smaller */
  assert_int_equal(reserve(&rx, 1, 0, 16, 200), 1);
  assert_int_equal(rx.buffered_bytes, 216);
  assert_int_equal(nc__amst_rx_pop(&rx, &f), 0); /* reserved, not yet inserted */
  nc__amst_rx_insert(&rx, 1, mkframe(0, 16, 200));
  /* still no room for seq 1 while seq 0 waits for the application */
  assert_int_equal(reserve(&rx, 0, 1, 16, 90), 0);
  assert_int_equal(nc__amst_rx_pop(&rx, &f), 1);
  assert_int_equal(f->seq, 0);
  nc__amst_frame_free(f);
  assert_int_equal(rx.buffered_bytes, 0);
  assert_int_equal(reserve(&rx, 0, 1, 16, 90), 1);
  nc__amst_rx_insert(&rx, 0, mkframe(1, 16, 90));
  /* 106 + 16 > 100, and seq 2 is not what the application needs while
   * seq 1 waits for it: over the window only the very next frame passes,
   * so memory stays within window + one frame. */
  assert_int_equal(reserve(&rx, 1, 2, NC_AMST_TYPE_FIN, 0), 0);
  assert_int_equal(nc__amst_rx_pop(&rx, &f), 1);
  assert_int_equal(f->seq, 1);
  nc__amst_frame_free(f);
  assert_int_equal(reserve(&rx, 1, 2, NC_AMST_TYPE_FIN, 0), 1);
  nc__amst_rx_insert(&rx, 1, mkframe(2, NC_AMST_TYPE_FIN, 0));
  assert_true(nc__amst_rx_complete(&rx));
  /* nothing may follow FIN */
  assert_int_equal(reserve(&rx, 0, 3, 16, 0), NC_E_PROTO);
  assert_int_equal(nc__amst_rx_pop(&rx, &f), 1);
  assert_int_equal(f->type, NC_AMST_TYPE_FIN);
  assert_true(rx.fin_popped);
  nc__amst_frame_free(f);
  nc__amst_rx_free(&rx);
}

static void test_rx_protocol_violations(void **state) {
  (void)state;
  struct nc__amst_rx rx;
  struct nc__amst_frame *f;
  /* seqs go backwards on one connection */
  nc__amst_rx_init(&rx, 2, 1000);
  assert_int_equal(reserve(&rx, 0, 5, 16, 0), 1);
  nc__amst_rx_insert(&rx, 0, mkframe(5, 16, 0));
  assert_int_equal(reserve(&rx, 0, 4, 16, 0), NC_E_PROTO);
  assert_int_equal(reserve(&rx, 0, 5, 16, 0), NC_E_PROTO);
  nc__amst_rx_free(&rx);
  /* the same seq on two connections */
  nc__amst_rx_init(&rx, 2, 1000);
  assert_int_equal(reserve(&rx, 0, 0, 16, 0), 1);
  nc__amst_rx_insert(&rx, 0, mkframe(0, 16, 0));
  assert_int_equal(reserve(&rx, 1, 0, 16, 0), 1);
  nc__amst_rx_insert(&rx, 1, mkframe(0, 16, 0));
  assert_int_equal(nc__amst_rx_pop(&rx, &f), NC_E_PROTO);
  nc__amst_rx_free(&rx);
  /* a seq the application already took */
  nc__amst_rx_init(&rx, 2, 1000);
  assert_int_equal(reserve(&rx, 0, 0, 16, 0), 1);
  nc__amst_rx_insert(&rx, 0, mkframe(0, 16, 0));
  assert_int_equal(nc__amst_rx_pop(&rx, &f), 1);
  nc__amst_frame_free(f);
  assert_int_equal(reserve(&rx, 1, 0, 16, 0), NC_E_PROTO);
  /* FIN below a seq already received */
  assert_int_equal(reserve(&rx, 1, 3, 16, 0), 1);
  nc__amst_rx_insert(&rx, 1, mkframe(3, 16, 0));
  assert_int_equal(reserve(&rx, 0, 1, NC_AMST_TYPE_FIN, 0), NC_E_PROTO);
  nc__amst_rx_free(&rx);
}

/* ---- ordered delivery ---------------------------------------------------- */

#define ORDER_MSGS 100000

static size_t order_len(struct msg_gen *g, uint64_t i) {
  if (i % 25000 == 7)
    return NC_AMST_PAYLOAD_MAX; /* the cap itself goes through */
  uint64_t r = gen_next(g);
  unsigned pct = (unsigned)(r % 1000);
  r >>= 10;
  if (pct < 900)
    return r % 512;
  if (pct < 995)
    return 512 + r % (16 * 1024);
  return 16 * 1024 + r % (128 * 1024);
}

struct sender_args {
  struct nc_amst *a;
  uint64_t n, seed;
  uint64_t hash;
  int rc;
};

static void *sender_main(void *arg) {
  struct sender_args *s = arg;
  struct msg_gen g;
  gen_init(&g, s->seed);
  uint8_t *buf = malloc(NC_AMST_PAYLOAD_MAX);
  s->hash = 1469598103934665603ull;
  s->rc = 0;
  for (uint64_t i = 0; i < s->n && s->rc == 0; i++) {
    size_t len = order_len(&g, i);
    uint8_t type = (uint8_t)(NC_AMST_TYPE_USER + i % 240);
    msg_fill(buf, len, i);
    s->hash = msg_hash(s->hash, type, buf, len);
    s->rc = nc_amst_send(s->a, type, buf, len);
  }
  free(buf);
  return NULL;
}

/* Receives n messages, checks each one's index and type, returns the hash. */
static uint64_t receive_n(struct nc_amst *a, uint64_t n, uint64_t seed) {
  struct msg_gen g;
  gen_init(&g, seed);
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < n; i++) {
    uint8_t type;
    void *p;
    size_t len;
    int rc = nc_amst_recv(a, 10000, &type, &p, &len);
    assert_int_equal(rc, 0);
    size_t want = order_len(&g, i);
    assert_int_equal(len, want);
    assert_int_equal(type, NC_AMST_TYPE_USER + i % 240);
    if (len >= 8) {
      uint64_t idx = 0;
      for (int k = 7; k >= 0; k--)
        idx = idx << 8 | ((uint8_t *)p)[k];
      assert_int_equal(idx, i);
    }
    h = msg_hash(h, type, p, len);
    free(p);
  }
  return h;
}

static void run_ordered(int streams) {
  struct nc_amst_config src = cfg_base(streams), dst = cfg_base(streams);
  src.send_window_bytes = 4 * MIB;
  dst.recv_window_bytes = 2 * MIB; /* smaller than the peer's window: frames wait */
  struct amst_pair p;
  pair_open(&p, &src, &dst);
  struct sender_args s = {.a = p.src, .n = ORDER_MSGS, .seed = 42 + (uint64_t)streams};
  pthread_t t;
  int64_t t0 = t_now_ms();
  assert_int_equal(pthread_create(&t, NULL, sender_main, &s), 0);
  uint64_t h = receive_n(p.dst, ORDER_MSGS, s.seed);
  pthread_join(t, NULL);
  assert_int_equal(s.rc, 0);
  assert_int_equal(h, s.hash);
  assert_int_equal(nc_amst_flush(p.src, 5000), 0);
  struct nc_amst_stats st;
  nc_amst_stats(p.src, &st);
  assert_int_equal(st.queued_bytes, 0);
  assert_int_equal(st.msgs_sent, ORDER_MSGS);
  /* every connection carried data */
  for (int i = 0; i < streams; i++)
    assert_true(st.s[i].frames_sent > 0);
  printf("# ordered %d stream(s): %d msgs, %.1f MiB in %lld ms, acks %llu\n", streams,
         ORDER_MSGS, (double)st.bytes_sent / MIB, (long long)(t_now_ms() - t0),
         (unsigned long long)st.acks_recv);
  pair_close(&p);
}

static void test_ordered_1(void **state) { (void)state; run_ordered(1); }
static void test_ordered_2(void **state) { (void)state; run_ordered(2); }
static void test_ordered_4(void **state) { (void)state; run_ordered(4); }
static void test_ordered_8(void **state) { (void)state; run_ordered(8); }

/* Both directions at once, each with its own sequence space. */
struct close_args {
  struct nc_amst *a;
  int64_t ms;
};

static void *close_main(void *arg) {
  struct close_args *c = arg;
  int64_t t0 = t_now_ms();
  nc_amst_close(c->a);
  c->ms = t_now_ms() - t0;
  return NULL;
}

struct receiver_args {
  struct nc_amst *a;
  uint64_t n, seed, hash;
};

static void *receiver_main(void *arg) {
  struct receiver_args *r = arg;
  r->hash = receive_n(r->a, r->n, r->seed);
  return NULL;
}

static void test_bidirectional(void **state) {
  (void)state;
  struct nc_amst_config cfg = cfg_base(4);
  cfg.send_window_bytes = cfg.recv_window_bytes = 1 * MIB;
  struct amst_pair p;
  pair_open(&p, &cfg, &cfg);
  const uint64_t n = 30000;
  struct sender_args s1 = {.a = p.src, .n = n, .seed = 7}, s2 = {.a = p.dst, .n = n, .seed = 8};
  struct receiver_args r2 = {.a = p.src, .n = n, .seed = 8};
  pthread_t t1, t2, tr;
  assert_int_equal(pthread_create(&t1, NULL, sender_main, &s1), 0);
  assert_int_equal(pthread_create(&t2, NULL, sender_main, &s2), 0);
  assert_int_equal(pthread_create(&tr, NULL, receiver_main, &r2), 0);
  uint64_t h1 = receive_n(p.dst, n, 7);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);
  pthread_join(tr, NULL);
  assert_int_equal(s1.rc, 0);
  assert_int_equal(s2.rc, 0);
  assert_int_equal(h1, s1.hash);
  assert_int_equal(r2.hash, s2.hash);
  /* Both close at once: each side's FIN is taken by the other's close, so
   * neither waits for its io timeout (5 s). */
  struct close_args c1 = {.a = p.src}, c2 = {.a = p.dst};
  assert_int_equal(pthread_create(&t1, NULL, close_main, &c1), 0);
  assert_int_equal(pthread_create(&t2, NULL, close_main, &c2), 0);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);
  assert_in_range(c1.ms, 0, 3500); /* io_timeout is 5 s */
  assert_in_range(c2.ms, 0, 3500);
  p.src = p.dst = NULL;
  pair_close(&p);
}

/* ---- back-pressure ------------------------------------------------------- */

struct producer {
  struct nc_amst *a;
  size_t msg_len;
  int n;
  _Atomic uint64_t admitted; /* frame bytes nc_amst_send accepted */
  _Atomic int done;
  int rc;
};

static void *producer_main(void *arg) {
  struct producer *pr = arg;
  uint8_t *buf = malloc(pr->msg_len);
  pr->rc = 0;
  for (int i = 0; i < pr->n; i++) {
    msg_fill(buf, pr->msg_len, (uint64_t)i);
    pr->rc = nc_amst_send(pr->a, NC_AMST_TYPE_USER, buf, pr->msg_len);
    if (pr->rc != 0)
      break;
    atomic_fetch_add(&pr->admitted, NC_AMST_HEADER_LEN + pr->msg_len);
  }
  free(buf);
  atomic_store(&pr->done, 1);
  return NULL;
}

/* Waits until the producer made no progress for quiet_ms; returns admitted. */
static uint64_t wait_stall(struct producer *pr, int quiet_ms, int max_ms) {
  uint64_t last = atomic_load(&pr->admitted);
  int64_t t0 = t_now_ms(), since = t0;
  while (t_now_ms() - t0 < max_ms && !atomic_load(&pr->done)) {
    t_sleep_ms(10);
    uint64_t now = atomic_load(&pr->admitted);
    if (now != last) {
      last = now;
      since = t_now_ms();
    } else if (t_now_ms() - since >= quiet_ms) {
      break;
    }
  }
  return last;
}

/* A receiver that does not read: nc_amst_send blocks once about
 * send_window_bytes are outstanding, and resumes when the reader drains.
 * The window counts bytes up to the peer's application, so the bound holds
 * whatever the kernel buffers: at most window (+ one frame, the first). */
static void test_backpressure(void **state) {
  (void)state;
  const size_t window = 1 * MIB, msg = 64 * 1024, frame = NC_AMST_HEADER_LEN + msg;
  struct nc_amst_config src = cfg_base(2), dst = cfg_base(2);
  src.send_window_bytes = window;
  src.sock_buf_bytes = dst.sock_buf_bytes = 64 * 1024;
  dst.recv_window_bytes = 8 * MIB;
  struct amst_pair p;
  pair_open(&p, &src, &dst);
  struct producer pr = {.a = p.src, .msg_len = msg, .n = 512}; /* 32 MiB */
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, producer_main, &pr), 0);
  uint64_t stalled = wait_stall(&pr, 500, 8000);
  assert_false(atomic_load(&pr.done));
  struct nc_amst_stats st;
  nc_amst_stats(p.src, &st);
  printf("# back-pressure: producer stalled at %llu bytes (window %zu, frame %zu), "
         "queued %llu, sent on the wire %llu\n",
         (unsigned long long)stalled, window, frame, (unsigned long long)st.queued_bytes,
         (unsigned long long)st.bytes_sent);
  assert_in_range(stalled, window - frame, window + frame);
  assert_in_range(st.queued_bytes, window - frame, window + frame);
  /* It stays blocked while nobody reads. */
  t_sleep_ms(200);
  assert_int_equal(atomic_load(&pr.admitted), stalled);
  /* Drain: every message arrives in order and the producer finishes; the
   * outstanding bytes never exceed the window on the way. */
  uint64_t max_queued = 0;
  for (int i = 0; i < pr.n; i++) {
    uint8_t type;
    void *pl;
    size_t len;
    assert_int_equal(nc_amst_recv(p.dst, 5000, &type, &pl, &len), 0);
    assert_int_equal(len, msg);
    assert_int_equal(((uint8_t *)pl)[0], (uint8_t)i);
    assert_int_equal(((uint8_t *)pl)[1], (uint8_t)(i >> 8));
    free(pl);
    nc_amst_stats(p.src, &st);
    if (st.queued_bytes > max_queued)
      max_queued = st.queued_bytes;
  }
  pthread_join(t, NULL);
  assert_int_equal(pr.rc, 0);
  assert_in_range(max_queued, 0, window + frame);
  pair_close(&p);
}

/* A send window shrunk after the session started bounds what is in flight
 * from then on, is clamped to [NC_AMST_SEND_WINDOW_MIN, the configured
 * window], and can grow back. */
static void test_set_send_window(void **state) {
  (void)state;
  const size_t window = 1 * MIB, small = 256 * 1024, msg = 64 * 1024;
  const size_t frame = NC_AMST_HEADER_LEN + msg;
  struct nc_amst_config src = cfg_base(2), dst = cfg_base(2);
  src.send_window_bytes = window;
  src.sock_buf_bytes = dst.sock_buf_bytes = 64 * 1024;
  dst.recv_window_bytes = 8 * MIB;
  struct amst_pair p;
  pair_open(&p, &src, &dst);
  assert_int_equal(nc_amst_set_send_window(p.src, 1), NC_AMST_SEND_WINDOW_MIN);
  assert_int_equal(nc_amst_set_send_window(p.src, 64 * MIB), window);
  assert_int_equal(nc_amst_set_send_window(p.src, small), small);
  struct producer pr = {.a = p.src, .msg_len = msg, .n = 64}; /* 4 MiB */
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, producer_main, &pr), 0);
  uint64_t stalled = wait_stall(&pr, 300, 8000);
  assert_false(atomic_load(&pr.done));
  assert_in_range(stalled, small - frame, small + frame);
  /* Grown back: the producer goes on up to the larger window. */
  assert_int_equal(nc_amst_set_send_window(p.src, window), window);
  uint64_t stalled2 = wait_stall(&pr, 300, 8000);
  assert_in_range(stalled2, window - frame, window + frame);
  for (int i = 0; i < pr.n; i++) {
    uint8_t type;
    void *pl;
    size_t len;
    assert_int_equal(nc_amst_recv(p.dst, 5000, &type, &pl, &len), 0);
    assert_int_equal(len, msg);
    assert_int_equal(((uint8_t *)pl)[0], (uint8_t)i);
    free(pl);
  }
  pthread_join(t, NULL);
  assert_int_equal(pr.rc, 0);
  pair_close(&p);
}

/* Blocked for io_timeout_ms without an ACK: -ETIMEDOUT, nothing queued,
 * and the session still works afterwards. */
static void test_send_timeout_keeps_session(void **state) {
  (void)state;
  struct nc_amst_config cfg = cfg_base(1);
  cfg.send_window_bytes = 256 * 1024;
  cfg.io_timeout_ms = 400;
  struct amst_pair p;
  pair_open(&p, &cfg, &cfg);
  uint8_t *buf = calloc(1, 64 * 1024);
  int rc, sent = 0;
  int64_t t0 = 0;
  for (;;) {
    t0 = t_now_ms();
    rc = nc_amst_send(p.src, NC_AMST_TYPE_USER, buf, 64 * 1024);
    if (rc != 0)
      break;
    sent++;
  }
  int64_t blocked = t_now_ms() - t0;
  assert_int_equal(rc, -ETIMEDOUT);
  assert_in_range(blocked, 350, 2500);
  assert_in_range(sent, 3, 5);
  for (int i = 0; i < sent; i++) {
    uint8_t type;
    void *pl;
    size_t len;
    assert_int_equal(nc_amst_recv(p.dst, 2000, &type, &pl, &len), 0);
    free(pl);
  }
  /* Idle for longer than io_timeout: pings keep the connections alive. */
  t_sleep_ms(700);
  assert_int_equal(nc_amst_send(p.src, NC_AMST_TYPE_USER, buf, 10), 0);
  uint8_t type;
  void *pl;
  size_t len;
  assert_int_equal(nc_amst_recv(p.dst, 2000, &type, &pl, &len), 0);
  assert_int_equal(len, 10);
  free(pl);
  free(buf);
  pair_close(&p);
}

/* A receive window smaller than one frame, many streams, large frames and
 * a slow reader: no deadlock, and the receiver never holds more than the
 * window plus one frame. */
static void test_small_recv_window(void **state) {
  (void)state;
  struct nc_amst_config src = cfg_base(8), dst = cfg_base(8);
  src.send_window_bytes = 16 * MIB;
  dst.recv_window_bytes = 16 * 1024;
  struct amst_pair p;
  pair_open(&p, &src, &dst);
  const int n = 600;
  struct producer pr = {.a = p.src, .msg_len = 200 * 1024, .n = n};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, producer_main, &pr), 0);
  uint64_t max_buffered = 0;
  for (int i = 0; i < n; i++) {
    if (i % 100 == 0)
      t_sleep_ms(50); /* let every receiver fill up and park */
    uint8_t type;
    void *pl;
    size_t len;
    struct nc_amst_stats st;
    nc_amst_stats(p.dst, &st);
    if (st.recv_buffered_bytes > max_buffered)
      max_buffered = st.recv_buffered_bytes;
    assert_int_equal(nc_amst_recv(p.dst, 5000, &type, &pl, &len), 0);
    assert_int_equal(len, pr.msg_len);
    assert_int_equal(((uint8_t *)pl)[0], (uint8_t)i);
    assert_int_equal(((uint8_t *)pl)[1], (uint8_t)(i >> 8));
    free(pl);
  }
  pthread_join(t, NULL);
  assert_int_equal(pr.rc, 0);
  printf("# small window: max buffered %llu (window %d + frame %zu)\n",
         (unsigned long long)max_buffered, 16 * 1024, NC_AMST_HEADER_LEN + pr.msg_len);
  assert_in_range(max_buffered, 1, 16 * 1024 + NC_AMST_HEADER_LEN + pr.msg_len);
  pair_close(&p);
}

/* ---- protocol errors and session matching -------------------------------- */

struct raw_session {
  struct nc_amst_listener *l;
  struct nc_amst *dst;
  int fd;
};

static void *raw_accept_main(void *arg) {
  struct raw_session *r = arg;
  uint8_t id[16];
  t_session_id(id, 3);
  struct nc_amst_config cfg = cfg_base(1);
  cfg.io_timeout_ms = 400;
  if (nc_amst_accept(r->l, &cfg, id, 3000, &r->dst) != 0)
    r->dst = NULL;
  return NULL;
}

/* A session whose connector is this test, writing the wire format by hand. */
static void raw_open(struct raw_session *r) {
  memset(r, 0, sizeof *r);
  assert_int_equal(nc_amst_listen("127.0.0.1", 0, &r->l), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, raw_accept_main, r), 0);
  uint8_t id[16];
  t_session_id(id, 3);
  r->fd = raw_connect(nc_amst_listener_port(r->l), id, 0, 1);
  pthread_join(t, NULL);
  assert_true(r->fd >= 0);
  assert_non_null(r->dst);
  assert_int_equal(raw_read_hello(r->fd), 0);
}

static void raw_close(struct raw_session *r) {
  close(r->fd);
  nc_amst_close(r->dst);
  nc_amst_listener_close(r->l);
}

static void test_bad_frames(void **state) {
  (void)state;
  struct {
    const char *what;
    uint8_t type;
    uint64_t seq;
    uint32_t len;
    uint64_t ack_bytes;
  } cases[] = {
      {"payload over NC_AMST_PAYLOAD_MAX", NC_AMST_TYPE_USER, 0, NC_AMST_PAYLOAD_MAX + 1, 0},
      {"length 4 GiB - 1", 200, 0, 0xffffffffu, 0},
      {"unknown transport type", 9, 0, 0, 0},
      {"second HELLO", NC_AMST_TYPE_HELLO, 0, NC_AMST_HELLO_LEN, 0},
      {"ACK for bytes never sent", NC_AMST_TYPE_ACK, 1, 8, 4096},
      {"FIN with a payload", NC_AMST_TYPE_FIN, 0, 4, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct raw_session r;
    raw_open(&r);
    uint8_t b[NC_AMST_HEADER_LEN + 64] = {0};
    nc_amst_write_header(b, cases[i].type, cases[i].seq, cases[i].len);
    for (int k = 0; k < 8; k++)
      b[NC_AMST_HEADER_LEN + k] = (uint8_t)(cases[i].ack_bytes >> (56 - 8 * k));
    assert_int_equal(raw_write(r.fd, b, sizeof b), 0);
    uint8_t type;
    void *pl;
    size_t len;
    int64_t t0 = t_now_ms();
    int rc = nc_amst_recv(r.dst, 3000, &type, &pl, &len);
    printf("# %s: %s after %lld ms\n", cases[i].what, nc_strerror(rc),
           (long long)(t_now_ms() - t0));
    assert_int_equal(rc, NC_E_PROTO);
    assert_int_equal(nc_amst_send(r.dst, NC_AMST_TYPE_USER, "x", 1), NC_E_PROTO);
    /* the session closed the connection */
    assert_int_equal(raw_expect_closed(r.fd, 2000), 0);
    raw_close(&r);
  }
  /* local errors do not fail the session */
  struct amst_pair p;
  struct nc_amst_config cfg = cfg_base(1);
  pair_open(&p, &cfg, &cfg);
  uint8_t *big = calloc(1, NC_AMST_PAYLOAD_MAX + 1);
  assert_int_equal(nc_amst_send(p.src, NC_AMST_TYPE_USER, big, NC_AMST_PAYLOAD_MAX + 1),
                   NC_E_TOOBIG);
  assert_int_equal(nc_amst_send(p.src, NC_AMST_TYPE_ACK, big, 8), NC_E_INVALID);
  assert_int_equal(nc_amst_send(p.src, NC_AMST_TYPE_USER, big, NC_AMST_PAYLOAD_MAX), 0);
  uint8_t type;
  void *pl;
  size_t len;
  assert_int_equal(nc_amst_recv(p.dst, 2000, &type, &pl, &len), 0);
  assert_int_equal(len, NC_AMST_PAYLOAD_MAX);
  free(pl);
  free(big);
  pair_close(&p);
}

/* A well-formed message from the raw peer arrives; then the peer goes
 * silent (no pings): the session fails within io_timeout. */
static void test_silent_peer(void **state) {
  (void)state;
  struct raw_session r;
  raw_open(&r);
  uint8_t b[NC_AMST_HEADER_LEN + 3];
  nc_amst_write_header(b, 77, 0, 3);
  memcpy(b + NC_AMST_HEADER_LEN, "abc", 3);
  assert_int_equal(raw_write(r.fd, b, sizeof b), 0);
  uint8_t type;
  void *pl;
  size_t len;
  assert_int_equal(nc_amst_recv(r.dst, 2000, &type, &pl, &len), 0);
  assert_int_equal(type, 77);
  assert_memory_equal(pl, "abc", 3);
  free(pl);
  int64_t t0 = t_now_ms();
  int rc = nc_amst_recv(r.dst, 5000, &type, &pl, &len);
  int64_t ms = t_now_ms() - t0;
  printf("# silent peer: %s after %lld ms (io_timeout 400)\n", nc_strerror(rc), (long long)ms);
  assert_int_equal(rc, -ETIMEDOUT);
  assert_in_range(ms, 300, 2500);
  raw_close(&r);
}

struct accept_one {
  struct nc_amst_listener *l;
  uint8_t id[16];
  struct nc_amst *out;
  int rc;
};

static void *accept_one_main(void *arg) {
  struct accept_one *a = arg;
  struct nc_amst_config cfg = cfg_base(1);
  a->rc = nc_amst_accept(a->l, &cfg, a->id, 5000, &a->out);
  return NULL;
}

/* While the acceptor waits for session A: a connector for session B is
 * refused, garbage and silent connections are dropped, and A's connector
 * (3 streams) gets through. */
static void test_session_matching(void **state) {
  (void)state;
  struct accept_one acc = {0};
  assert_int_equal(nc_amst_listen("127.0.0.1", 0, &acc.l), 0);
  int port = nc_amst_listener_port(acc.l);
  t_session_id(acc.id, 10);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, accept_one_main, &acc), 0);

  int silent = raw_tcp_connect(port); /* connects, never speaks */
  assert_true(silent >= 0);
  uint8_t other[16];
  t_session_id(other, 11);
  struct nc_amst_config cfg = cfg_base(3);
  cfg.connect_timeout_ms = 2000;
  struct nc_amst *b = NULL;
  int64_t t0 = t_now_ms();
  assert_int_equal(nc_amst_connect(&cfg, "127.0.0.1", port, other, &b), -ECONNREFUSED);
  assert_in_range(t_now_ms() - t0, 0, 1900); /* before connect_timeout */
  int garbage = raw_tcp_connect(port);
  assert_true(garbage >= 0);
  assert_int_equal(raw_write(garbage, "GET / HTTP/1.1\r\n\r\n", 18), 0);
  /* right magic, but a message where the HELLO belongs */
  uint8_t hb[NC_AMST_HEADER_LEN];
  nc_amst_write_header(hb, NC_AMST_TYPE_USER, 0, 1000);
  int notahello = raw_tcp_connect(port);
  assert_true(notahello >= 0);
  assert_int_equal(raw_write(notahello, hb, sizeof hb), 0);
  int wrongid = raw_connect(port, other, 0, 1);
  assert_true(wrongid >= 0);

  struct nc_amst *a = NULL;
  int rc = nc_amst_connect(&cfg, "127.0.0.1", port, acc.id, &a);
  pthread_join(t, NULL);
  assert_int_equal(rc, 0);
  assert_int_equal(acc.rc, 0);
  /* the refused connections were closed by the acceptor */
  assert_int_equal(raw_expect_closed(garbage, 2000), 0);
  assert_int_equal(raw_expect_closed(notahello, 2000), 0);
  assert_int_equal(raw_expect_closed(wrongid, 2000), 0);
  close(garbage);
  close(notahello);
  close(wrongid);
  close(silent);
  struct nc_amst_stats st;
  nc_amst_stats(acc.out, &st);
  assert_int_equal(st.streams, 3);
  assert_int_equal(nc_amst_send(a, 99, "ping", 4), 0);
  assert_int_equal(nc_amst_send(acc.out, 98, "pong", 4), 0);
  uint8_t type;
  void *pl;
  size_t len;
  assert_int_equal(nc_amst_recv(acc.out, 2000, &type, &pl, &len), 0);
  assert_int_equal(type, 99);
  free(pl);
  assert_int_equal(nc_amst_recv(a, 2000, &type, &pl, &len), 0);
  assert_int_equal(type, 98);
  free(pl);
  nc_amst_close(a);
  nc_amst_close(acc.out);
  nc_amst_listener_close(acc.l);
}

/* ---- abort, close, dead peers -------------------------------------------- */

struct blocked_recv {
  struct nc_amst *a;
  int rc;
  int64_t returned_ms;
};

static void *blocked_recv_main(void *arg) {
  struct blocked_recv *b = arg;
  uint8_t type;
  void *pl = NULL;
  size_t len;
  b->rc = nc_amst_recv(b->a, 20000, &type, &pl, &len);
  b->returned_ms = t_now_ms();
  if (b->rc == 0)
    free(pl);
  return NULL;
}

static void test_abort(void **state) {
  (void)state;
  struct nc_amst_config cfg = cfg_base(4);
  cfg.io_timeout_ms = 15000; /* the peer must notice long before this */
  struct amst_pair p;
  pair_open(&p, &cfg, &cfg);
  struct blocked_recv local = {.a = p.src}, remote = {.a = p.dst};
  pthread_t t1, t2;
  assert_int_equal(pthread_create(&t1, NULL, blocked_recv_main, &local), 0);
  assert_int_equal(pthread_create(&t2, NULL, blocked_recv_main, &remote), 0);
  t_sleep_ms(100);
  int64_t t0 = t_now_ms();
  nc_amst_abort(p.src);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);
  printf("# abort: local %s after %lld ms, peer %s after %lld ms\n", nc_strerror(local.rc),
         (long long)(local.returned_ms - t0), nc_strerror(remote.rc),
         (long long)(remote.returned_ms - t0));
  assert_int_equal(local.rc, -ECANCELED);
  assert_in_range(local.returned_ms - t0, 0, 1000);
  assert_true(remote.rc == -ECONNRESET || remote.rc == -EPIPE);
  assert_in_range(remote.returned_ms - t0, 0, 2000); /* io_timeout is 15 s */
  assert_int_equal(nc_amst_send(p.src, NC_AMST_TYPE_USER, "x", 1), -ECANCELED);
  assert_int_equal(nc_amst_send(p.dst, NC_AMST_TYPE_USER, "x", 1), remote.rc);
  int64_t c0 = t_now_ms();
  pair_close(&p); /* neither close waits for anything */
  assert_in_range(t_now_ms() - c0, 0, 2000);
}

/* nc_amst_admitted / nc_amst_wait_acked: the running total counts payload
 * plus header; waiting for a point not yet acknowledged times out while
 * the peer reads nothing, and returns once it has read up to there (not
 * necessarily beyond); after an abort it fails at once. */
static void test_wait_acked(void **state) {
  (void)state;
  struct nc_amst_config cfg = cfg_base(2);
  struct amst_pair p;
  pair_open(&p, &cfg, &cfg);
  uint64_t a0 = nc_amst_admitted(p.src);
  static uint8_t buf[1000];
  for (int i = 0; i < 3; i++)
    assert_int_equal(nc_amst_send(p.src, NC_AMST_TYPE_USER, buf, sizeof buf), 0);
  uint64_t after1 = a0 + NC_AMST_HEADER_LEN + sizeof buf;
  uint64_t after3 = nc_amst_admitted(p.src);
  assert_int_equal(after3 - a0, 3 * (NC_AMST_HEADER_LEN + sizeof buf));
  assert_int_equal(nc_amst_wait_acked(p.src, after1, 200), -ETIMEDOUT);
  uint8_t type;
  void *pl;
  size_t len;
  assert_int_equal(nc_amst_recv(p.dst, 2000, &type, &pl, &len), 0);
  free(pl);
  assert_int_equal(nc_amst_wait_acked(p.src, after1, 2000), 0);
  assert_int_equal(nc_amst_wait_acked(p.src, after3, 200), -ETIMEDOUT);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(nc_amst_recv(p.dst, 2000, &type, &pl, &len), 0);
    free(pl);
  }
  assert_int_equal(nc_amst_wait_acked(p.src, after3, 2000), 0);
  assert_int_equal(nc_amst_send(p.src, NC_AMST_TYPE_USER, buf, sizeof buf), 0);
  nc_amst_abort(p.src);
  int64_t t0 = t_now_ms();
  assert_int_equal(nc_amst_wait_acked(p.src, nc_amst_admitted(p.src), 5000), -ECANCELED);
  assert_in_range(t_now_ms() - t0, 0, 1000);
  pair_close(&p);
}

/* Close after many messages: the peer gets every one, then -EPIPE; close
 * returns once they were all taken; then the peer's sends fail. */
static void test_close_delivers_all(void **state) {
  (void)state;
  struct nc_amst_config cfg = cfg_base(4);
  cfg.send_window_bytes = 512 * 1024;
  struct amst_pair p;
  pair_open(&p, &cfg, &cfg);
  const uint64_t n = 20000;
  struct receiver_args r = {.a = p.dst, .n = n, .seed = 5};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, receiver_main, &r), 0);
  struct sender_args s = {.a = p.src, .n = n, .seed = 5};
  sender_main(&s);
  assert_int_equal(s.rc, 0);
  pthread_join(t, NULL); /* all n were received before close */
  assert_int_equal(r.hash, s.hash);
  /* The last messages, sent right before close, still arrive. */
  assert_int_equal(nc_amst_send(p.src, 200, "tail", 4), 0);
  struct blocked_recv tail = {.a = p.dst};
  assert_int_equal(pthread_create(&t, NULL, blocked_recv_main, &tail), 0);
  int64_t t0 = t_now_ms();
  nc_amst_close(p.src);
  int64_t close_ms = t_now_ms() - t0;
  p.src = NULL;
  pthread_join(t, NULL);
  assert_int_equal(tail.rc, 0);
  assert_in_range(close_ms, 0, 3000); /* io_timeout is 5 s */
  uint8_t type;
  void *pl;
  size_t len;
  assert_int_equal(nc_amst_recv(p.dst, 2000, &type, &pl, &len), -EPIPE);
  assert_int_equal(nc_amst_recv(p.dst, 0, &type, &pl, &len), -EPIPE);
  int rc = 0;
  for (int i = 0; i < 100 && rc == 0; i++) {
    rc = nc_amst_send(p.dst, NC_AMST_TYPE_USER, "x", 1);
    t_sleep_ms(10);
  }
  assert_int_equal(rc, -EPIPE);
  pair_close(&p);
}

/* The connector is another process, SIGKILLed mid-stream: the acceptor's
 * blocked recv fails promptly (the kernel closes the sockets). */
static void test_peer_killed(void **state) {
  (void)state;
  struct nc_amst_listener *l;
  assert_int_equal(nc_amst_listen("127.0.0.1", 0, &l), 0);
  int port = nc_amst_listener_port(l);
  uint8_t id[16];
  t_session_id(id, 20);
  struct nc_amst_config cfg = cfg_base(4);
  cfg.io_timeout_ms = 10000;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct nc_amst *a;
    if (nc_amst_connect(&cfg, "127.0.0.1", port, id, &a) != 0)
      _exit(1);
    static uint8_t buf[4096];
    for (;;)
      nc_amst_send(a, NC_AMST_TYPE_USER, buf, sizeof buf);
  }
  struct nc_amst *d;
  assert_int_equal(nc_amst_accept(l, &cfg, id, 5000, &d), 0);
  for (int i = 0; i < 100; i++) {
    uint8_t type;
    void *pl;
    size_t len;
    assert_int_equal(nc_amst_recv(d, 5000, &type, &pl, &len), 0);
    free(pl);
  }
  /* stop reading for a moment so data sits unread in the buffers */
  t_sleep_ms(50);
  struct blocked_recv b = {.a = d};
  kill(pid, SIGKILL);
  int64_t t0 = t_now_ms();
  waitpid(pid, NULL, 0);
  /* drain what was already delivered; then the error comes */
  for (;;) {
    blocked_recv_main(&b);
    if (b.rc != 0)
      break;
  }
  printf("# peer killed: %s after %lld ms\n", nc_strerror(b.rc), (long long)(b.returned_ms - t0));
  assert_int_equal(b.rc, -ECONNRESET);
  assert_in_range(b.returned_ms - t0, 0, 3000); /* io_timeout is 10 s */
  nc_amst_close(d);
  nc_amst_listener_close(l);
}

static void test_bbr_and_stats(void **state) {
  (void)state;
  struct nc_amst_config cfg = cfg_base(2);
  cfg.bbr = true;
  struct amst_pair p;
  pair_open(&p, &cfg, &cfg);
  assert_int_equal(nc_amst_send(p.src, NC_AMST_TYPE_USER, "hello", 5), 0);
  uint8_t type;
  void *pl;
  size_t len;
  assert_int_equal(nc_amst_recv(p.dst, 2000, &type, &pl, &len), 0);
  free(pl);
  assert_int_equal(nc_amst_flush(p.src, 2000), 0);
  struct nc_amst_stats st;
  nc_amst_stats(p.src, &st);
  FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_congestion_control", "r");
  char avail[256] = "";
  if (f) {
    if (!fgets(avail, sizeof avail, f))
      avail[0] = '\0';
    fclose(f);
  }
  printf("# cc %s rtt %u us cwnd %u; available: %s", st.s[0].cc, st.s[0].rtt_us, st.s[0].cwnd,
         avail);
  if (strstr(avail, "bbr"))
    assert_string_equal(st.s[0].cc, "bbr");
  assert_true(st.s[0].cwnd > 0);
  assert_int_equal(st.msgs_sent, 1);
  assert_int_equal(st.queued_bytes, 0);
  assert_true(st.acks_recv >= 1);
  pair_close(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header),
      cmocka_unit_test(test_rx_window_rule),
      cmocka_unit_test(test_rx_protocol_violations),
      cmocka_unit_test(test_ordered_1),
      cmocka_unit_test(test_ordered_2),
      cmocka_unit_test(test_ordered_4),
      cmocka_unit_test(test_ordered_8),
      cmocka_unit_test(test_bidirectional),
      cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_set_send_window),
      cmocka_unit_test(test_send_timeout_keeps_session),
      cmocka_unit_test(test_small_recv_window),
      cmocka_unit_test(test_bad_frames),
      cmocka_unit_test(test_silent_peer),
      cmocka_unit_test(test_session_matching),
      cmocka_unit_test(test_abort), cmocka_unit_test(test_wait_acked),
      cmocka_unit_test(test_close_delivers_all),
      cmocka_unit_test(test_peer_killed),
      cmocka_unit_test(test_bbr_and_stats),
  };
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
