/* AMST over TLS 1.3, and the TLS layer itself: node identity files,
 * fingerprints, full-duplex TLS with KeyUpdates from both threads of a
 * connection, ordered messages both ways across N streams, bounded
 * back-pressure, pinning (wrong fingerprint refused on either side),
 * plain and TLS ends refusing each other, abort and close while blocked. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "amst_test.h"
#include "dwcp/tls.h"
#include "util/err.h"

#define MIB (1024 * 1024)

static struct nc_tls *id_src, *id_dst, *id_other;

static int setup_ids(void **state) {
  (void)state;
  char err[256];
  if (nc_tls_new(NULL, "src", &id_src, err, sizeof err) != 0 ||
      nc_tls_new(NULL, "dst", &id_dst, err, sizeof err) != 0 ||
      nc_tls_new(NULL, "other", &id_other, err, sizeof err) != 0) {
    fprintf(stderr, "identity: %s\n", err);
    return -1;
  }
  return 0;
}

static int teardown_ids(void **state) {
  (void)state;
  nc_tls_free(id_src);
  nc_tls_free(id_dst);
  nc_tls_free(id_other);
  return 0;
}

/* src pins dst; dst pins src (as the migration does). */
static void tls_cfgs(int streams, struct nc_amst_config *src, struct nc_amst_config *dst) {
  nc_amst_config_default(src);
  src->streams = streams;
  src->io_timeout_ms = 5000;
  *dst = *src;
  src->tls = id_src;
  src->tls_peer_fp = nc_tls_fingerprint(id_dst);
  dst->tls = id_dst;
  dst->tls_peer_fp = nc_tls_fingerprint(id_src);
}

/* ---- fingerprints and identity files ----------------------------------------- */

static void test_fp_text(void **state) {
  (void)state;
  const uint8_t *fp = nc_tls_fingerprint(id_src);
  char hex[NC_TLS_FP_HEX_LEN + 1];
  nc_tls_fp_to_hex(fp, hex);
  assert_int_equal(strlen(hex), NC_TLS_FP_HEX_LEN);
  uint8_t back[NC_TLS_FP_LEN];
  assert_int_equal(nc_tls_fp_parse(hex, back), 0);
  assert_memory_equal(back, fp, NC_TLS_FP_LEN);
  /* openssl's form: upper case, colons */
  char colons[NC_TLS_FP_LEN * 3];
  for (int i = 0; i < NC_TLS_FP_LEN; i++)
    snprintf(colons + 3 * i, 4, "%02X%s", fp[i], i < NC_TLS_FP_LEN - 1 ? ":" : "");
  memset(back, 0, sizeof back);
  assert_int_equal(nc_tls_fp_parse(colons, back), 0);
  assert_memory_equal(back, fp, NC_TLS_FP_LEN);
  assert_int_equal(nc_tls_fp_parse("", back), NC_E_INVALID);
  assert_int_equal(nc_tls_fp_parse(NULL, back), NC_E_INVALID);
  hex[63] = 'g';
  assert_int_equal(nc_tls_fp_parse(hex, back), NC_E_INVALID);
  hex[63] = '\0'; /* one digit short */
  assert_int_equal(nc_tls_fp_parse(hex, back), NC_E_INVALID);
  char longer[80];
  nc_tls_fp_to_hex(fp, longer);
  strcat(longer, "00");
  assert_int_equal(nc_tls_fp_parse(longer, back), NC_E_INVALID);
  assert_memory_not_equal(nc_tls_fingerprint(id_src), nc_tls_fingerprint(id_dst), NC_TLS_FP_LEN);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static void test_identity_files(void **state) {
  (void)state;
  char dir[] = "/tmp/nc-tls-XXXXXX", key[64], crt[64], err[300];
  assert_non_null(mkdtemp(dir));
  snprintf(key, sizeof key, "%s/node.key", dir);
  snprintf(crt, sizeof crt, "%s/node.crt", dir);
  struct nc_tls *t1, *t2, *t3;
  assert_int_equal(nc_tls_new(dir, "n1", &t1, err, sizeof err), 0);
  struct stat st;
  assert_int_equal(stat(key, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(stat(crt, &st), 0);
  /* Reused afterwards: same fingerprint. */
  assert_int_equal(nc_tls_new(dir, "n1", &t2, err, sizeof err), 0);
  assert_memory_equal(nc_tls_fingerprint(t1), nc_tls_fingerprint(t2), NC_TLS_FP_LEN);
  nc_tls_free(t2);
  /* A key others can read is refused, with what to do. */
  assert_int_equal(chmod(key, 0644), 0);
  assert_int_equal(nc_tls_new(dir, "n1", &t2, err, sizeof err), -EPERM);
  assert_non_null(strstr(err, "chmod 600"));
  assert_int_equal(chmod(key, 0600), 0);
  /* A certificate for another key is refused. */
  char dir2[] = "/tmp/nc-tls-XXXXXX", crt2[64];
  assert_non_null(mkdtemp(dir2));
  assert_int_equal(nc_tls_new(dir2, "n2", &t3, err, sizeof err), 0);
  nc_tls_free(t3);
  snprintf(crt2, sizeof crt2, "%s/node.crt", dir2);
  assert_int_equal(rename(crt2, crt), 0);
  assert_int_equal(nc_tls_new(dir, "n1", &t2, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "not the certificate of"));
  /* Only the certificate missing: made again from the same key. */
  unlink(crt);
  assert_int_equal(nc_tls_new(dir, "n1", &t2, err, sizeof err), 0);
  assert_int_equal(stat(crt, &st), 0);
  nc_tls_free(t2);
  /* Rotation: delete both, get a new identity. */
  unlink(key);
  unlink(crt);
  assert_int_equal(nc_tls_new(dir, "n1", &t2, err, sizeof err), 0);
  assert_memory_not_equal(nc_tls_fingerprint(t1), nc_tls_fingerprint(t2), NC_TLS_FP_LEN);
  nc_tls_free(t1);
  nc_tls_free(t2);
  nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  nftw(dir2, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- the TLS layer: one connection, both threads busy --------------------------- */

struct hs_args {
  struct nc_tls_conn *c;
  int rc;
};

static void *hs_main(void *arg) {
  struct hs_args *h = arg;
  h->rc = nc_tls_handshake(h->c, 5000);
  return NULL;
}

struct duplex {
  struct nc_tls_conn *c;
  size_t total;
  uint8_t seed;
  int rc;
  bool request_key_updates;
  int key_updates;
};

static uint8_t pattern(uint8_t seed, size_t i) { return (uint8_t)(seed + i * 31 + (i >> 13)); }

static void *duplex_writer(void *arg) {
  struct duplex *d = arg;
  uint8_t *buf = malloc(100000);
  size_t off = 0;
  int chunk = 0;
  d->rc = 0;
  while (off < d->total && d->rc == 0) {
    size_t n = 1 + (size_t)(chunk * 7919) % 100000;
    if (n > d->total - off)
      n = d->total - off;
    for (size_t i = 0; i < n; i++)
      buf[i] = pattern(d->seed, off + i);
    if (d->request_key_updates && chunk % 40 == 7) { /* the peer's reader must answer */
      assert_int_equal(nc__tls_key_update(d->c), 0);
      d->key_updates++;
    }
    struct iovec iov[2] = {{buf, n / 3}, {buf + n / 3, n - n / 3}};
    d->rc = nc_tls_writev(d->c, iov, 2);
    off += n;
    chunk++;
  }
  free(buf);
  return NULL;
}

static void *duplex_reader(void *arg) {
  struct duplex *d = arg;
  uint8_t *buf = malloc(70000);
  size_t off = 0;
  d->rc = 0;
  while (off < d->total) {
    ssize_t r = nc_tls_read(d->c, buf, 70000, 5000);
    if (r <= 0) {
      d->rc = r == 0 ? -EPIPE : (int)r;
      break;
    }
    for (ssize_t i = 0; i < r; i++)
      if (buf[i] != pattern(d->seed, off + (size_t)i)) {
        d->rc = -EBADMSG;
        break;
      }
    off += (size_t)r;
  }
  free(buf);
  return NULL;
}

static void tls_conn_pair(int sv[2], struct nc_tls_conn **cli, struct nc_tls_conn **srv) {
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  int small = 32 * 1024; /* writes must wait for room often */
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  assert_int_equal(nc_tls_conn_new(id_src, sv[0], false, nc_tls_fingerprint(id_dst), cli), 0);
  assert_int_equal(nc_tls_conn_new(id_dst, sv[1], true, nc_tls_fingerprint(id_src), srv), 0);
  struct hs_args h = {.c = *srv};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, hs_main, &h), 0);
  assert_int_equal(nc_tls_handshake(*cli, 5000), 0);
  pthread_join(t, NULL);
  assert_int_equal(h.rc, 0);
}

/* Runs writer w and reader r (the other end) to completion. */
static void run_pair(struct duplex *w, struct duplex *r) {
  pthread_t t[2];
  assert_int_equal(pthread_create(&t[0], NULL, duplex_writer, w), 0);
  assert_int_equal(pthread_create(&t[1], NULL, duplex_reader, r), 0);
  pthread_join(t[0], NULL);
  pthread_join(t[1], NULL);
  assert_int_equal(w->rc, 0);
  assert_int_equal(r->rc, 0);
}

/* KeyUpdates the peer requests, one direction at a time: the reader that
 * receives a request writes the reply (nothing else writes there then),
 * the other end's reader takes the reply, and every byte arrives intact
 * both ways. Requests while both directions are busy can end the
 * connection instead (tls.h); our nodes never send them. */
static void test_tls_key_updates(void **state) {
  (void)state;
  int sv[2];
  struct nc_tls_conn *cli, *srv;
  tls_conn_pair(sv, &cli, &srv);
  const size_t total = 8 * MIB;
  struct duplex w1 = {.c = cli, .total = total, .seed = 3, .request_key_updates = true},
                r1 = {.c = srv, .total = total, .seed = 3};
  run_pair(&w1, &r1);
  assert_true(w1.key_updates > 0);
  struct duplex w2 = {.c = srv, .total = total, .seed = 4}, r2 = {.c = cli, .total = total, .seed = 4};
  run_pair(&w2, &r2); /* srv's writes follow its KeyUpdate replies */
  struct duplex w3 = {.c = srv, .total = total, .seed = 5, .request_key_updates = true},
                r3 = {.c = cli, .total = total, .seed = 5};
  run_pair(&w3, &r3);
  assert_true(w3.key_updates > 0);
  struct duplex w4 = {.c = cli, .total = total, .seed = 6}, r4 = {.c = srv, .total = total, .seed = 6};
  run_pair(&w4, &r4);
  printf("# key updates: %d requested by one end, %d by the other\n", w1.key_updates,
         w3.key_updates);
  nc_tls_conn_free(cli);
  nc_tls_conn_free(srv);
  close(sv[0]);
  close(sv[1]);
}

/* Each end reads in one thread and writes in another, both ways at once
 * (AMST's pattern: data one way, acknowledgements the other): every byte
 * arrives intact and in order, and nothing deadlocks on the shared SSL
 * objects. */
static void test_tls_duplex(void **state) {
  (void)state;
  int sv[2];
  struct nc_tls_conn *cli, *srv;
  tls_conn_pair(sv, &cli, &srv);
  assert_string_equal(nc_tls_version(cli), "TLSv1.3");
  assert_string_equal(nc_tls_cipher(cli), "TLS_AES_128_GCM_SHA256");
  uint8_t fp[NC_TLS_FP_LEN];
  assert_true(nc_tls_peer_fingerprint(srv, fp));
  assert_memory_equal(fp, nc_tls_fingerprint(id_src), NC_TLS_FP_LEN);
  const size_t total = 24 * MIB;
  struct duplex w1 = {.c = cli, .total = total, .seed = 1}, r1 = {.c = srv, .total = total, .seed = 1};
  struct duplex w2 = {.c = srv, .total = total, .seed = 2}, r2 = {.c = cli, .total = total, .seed = 2};
  pthread_t t[4];
  assert_int_equal(pthread_create(&t[0], NULL, duplex_writer, &w1), 0);
  assert_int_equal(pthread_create(&t[1], NULL, duplex_reader, &r1), 0);
  assert_int_equal(pthread_create(&t[2], NULL, duplex_writer, &w2), 0);
  assert_int_equal(pthread_create(&t[3], NULL, duplex_reader, &r2), 0);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  printf("# duplex: %zu MiB each way\n", total / MIB);
  assert_int_equal(w1.rc, 0);
  assert_int_equal(w2.rc, 0);
  assert_int_equal(r1.rc, 0);
  assert_int_equal(r2.rc, 0);
  /* shutdown(2) ends a blocked read at once: EOF, not a hang. */
  struct duplex rb = {.c = cli, .total = 1, .seed = 0};
  pthread_t tb;
  assert_int_equal(pthread_create(&tb, NULL, duplex_reader, &rb), 0);
  t_sleep_ms(100);
  int64_t t0 = t_now_ms();
  shutdown(sv[0], SHUT_RDWR);
  pthread_join(tb, NULL);
  assert_int_equal(rb.rc, -EPIPE);
  assert_in_range(t_now_ms() - t0, 0, 1000);
  nc_tls_conn_free(cli);
  nc_tls_conn_free(srv);
  close(sv[0]);
  close(sv[1]);
}

/* ---- AMST over TLS ---------------------------------------------------------------- */

static size_t msg_len_of(struct msg_gen *g) {
  uint64_t r = gen_next(g);
  if (r % 8 == 0)
    return 200 * 1024 + r % (56 * 1024); /* a migration DATA batch */
  return r % 3000;
}

struct xfer {
  struct nc_amst *a;
  uint64_t n, seed, hash;
  int rc;
};

static void *send_main(void *arg) {
  struct xfer *x = arg;
  struct msg_gen g;
  gen_init(&g, x->seed);
  uint8_t *buf = malloc(NC_AMST_PAYLOAD_MAX);
  x->hash = 1469598103934665603ull;
  for (uint64_t i = 0; i < x->n && x->rc == 0; i++) {
    size_t len = msg_len_of(&g);
    uint8_t type = (uint8_t)(NC_AMST_TYPE_USER + i % 200);
    msg_fill(buf, len, i);
    x->hash = msg_hash(x->hash, type, buf, len);
    x->rc = nc_amst_send(x->a, type, buf, len);
  }
  free(buf);
  return NULL;
}

static void *recv_main(void *arg) {
  struct xfer *x = arg;
  struct msg_gen g;
  gen_init(&g, x->seed);
  x->hash = 1469598103934665603ull;
  for (uint64_t i = 0; i < x->n && x->rc == 0; i++) {
    uint8_t type;
    void *p = NULL;
    size_t len;
    x->rc = nc_amst_recv(x->a, 10000, &type, &p, &len);
    if (x->rc)
      break;
    if (len != msg_len_of(&g) || type != NC_AMST_TYPE_USER + i % 200)
      x->rc = -EBADMSG;
    x->hash = msg_hash(x->hash, type, p, len);
    free(p);
  }
  return NULL;
}

/* Messages arrive in order both ways at once across N TLS streams. */
static void run_ordered_tls(int streams) {
  struct nc_amst_config src, dst;
  tls_cfgs(streams, &src, &dst);
  src.send_window_bytes = dst.send_window_bytes = 2 * MIB;
  src.recv_window_bytes = dst.recv_window_bytes = 1 * MIB;
  struct amst_pair p;
  pair_open(&p, &src, &dst);
  const uint64_t n = 1500;
  struct xfer s1 = {.a = p.src, .n = n, .seed = 11}, r1 = {.a = p.dst, .n = n, .seed = 11};
  struct xfer s2 = {.a = p.dst, .n = n, .seed = 12}, r2 = {.a = p.src, .n = n, .seed = 12};
  pthread_t t[4];
  int64_t t0 = t_now_ms();
  assert_int_equal(pthread_create(&t[0], NULL, send_main, &s1), 0);
  assert_int_equal(pthread_create(&t[1], NULL, recv_main, &r1), 0);
  assert_int_equal(pthread_create(&t[2], NULL, send_main, &s2), 0);
  assert_int_equal(pthread_create(&t[3], NULL, recv_main, &r2), 0);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  assert_int_equal(s1.rc, 0);
  assert_int_equal(s2.rc, 0);
  assert_int_equal(r1.rc, 0);
  assert_int_equal(r2.rc, 0);
  assert_int_equal(r1.hash, s1.hash);
  assert_int_equal(r2.hash, s2.hash);
  struct nc_amst_stats st;
  nc_amst_stats(p.src, &st);
  assert_string_equal(st.tls, "TLSv1.3 TLS_AES_128_GCM_SHA256");
  for (int i = 0; i < streams; i++)
    assert_true(st.s[i].frames_sent > 0);
  printf("# tls ordered %d stream(s): %llu msgs each way, %.1f MiB sent in %lld ms (%s)\n",
         streams, (unsigned long long)n, (double)st.bytes_sent / MIB,
         (long long)(t_now_ms() - t0), st.tls);
  pair_close(&p);
}

static void test_ordered_tls_1(void **state) { (void)state; run_ordered_tls(1); }
static void test_ordered_tls_4(void **state) { (void)state; run_ordered_tls(4); }
static void test_ordered_tls_8(void **state) { (void)state; run_ordered_tls(8); }

struct producer {
  struct nc_amst *a;
  size_t msg_len;
  int n;
  _Atomic uint64_t admitted;
  _Atomic int done;
  int rc;
};

static void *producer_main(void *arg) {
  struct producer *pr = arg;
  uint8_t *buf = malloc(pr->msg_len);
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

/* Back-pressure over TLS is as bounded as over TCP: a reader that stops
 * stalls the producer at the window, and draining finishes in order. */
static void test_backpressure_tls(void **state) {
  (void)state;
  const size_t window = 1 * MIB, msg = 64 * 1024, frame = NC_AMST_HEADER_LEN + msg;
  struct nc_amst_config src, dst;
  tls_cfgs(2, &src, &dst);
  src.send_window_bytes = window;
  src.sock_buf_bytes = dst.sock_buf_bytes = 64 * 1024;
  dst.recv_window_bytes = 8 * MIB;
  struct amst_pair p;
  pair_open(&p, &src, &dst);
  struct producer pr = {.a = p.src, .msg_len = msg, .n = 256};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, producer_main, &pr), 0);
  uint64_t stalled = wait_stall(&pr, 500, 8000);
  assert_false(atomic_load(&pr.done));
  struct nc_amst_stats st;
  nc_amst_stats(p.src, &st);
  printf("# tls back-pressure: stalled at %llu bytes (window %zu), queued %llu\n",
         (unsigned long long)stalled, window, (unsigned long long)st.queued_bytes);
  assert_in_range(stalled, window - frame, window + frame);
  assert_in_range(st.queued_bytes, window - frame, window + frame);
  t_sleep_ms(200);
  assert_int_equal(atomic_load(&pr.admitted), stalled);
  uint64_t max_queued = 0, max_held = 0;
  for (int i = 0; i < pr.n; i++) {
    uint8_t type;
    void *pl;
    size_t len;
    assert_int_equal(nc_amst_recv(p.dst, 5000, &type, &pl, &len), 0);
    assert_int_equal(len, msg);
    assert_int_equal(((uint8_t *)pl)[0], (uint8_t)i);
    free(pl);
    nc_amst_stats(p.src, &st);
    if (st.queued_bytes > max_queued)
      max_queued = st.queued_bytes;
    nc_amst_stats(p.dst, &st);
    if (st.recv_buffered_bytes > max_held)
      max_held = st.recv_buffered_bytes;
  }
  pthread_join(t, NULL);
  assert_int_equal(pr.rc, 0);
  assert_in_range(max_queued, 0, window + frame);
  assert_in_range(max_held, 0, window + frame);
  pair_close(&p);
}

/* ---- refusals ------------------------------------------------------------------- */

struct acc {
  struct nc_amst_listener *l;
  struct nc_amst_config cfg;
  uint8_t id[16];
  int timeout_ms;
  struct nc_amst *out;
  int rc;
};

static void *acc_main(void *arg) {
  struct acc *a = arg;
  a->rc = nc_amst_accept(a->l, &a->cfg, a->id, a->timeout_ms, &a->out);
  return NULL;
}

static void acc_start(struct acc *a, pthread_t *t, const struct nc_amst_config *cfg, int timeout_ms) {
  memset(a, 0, sizeof *a);
  assert_int_equal(nc_amst_listen("127.0.0.1", 0, &a->l), 0);
  a->cfg = *cfg;
  a->timeout_ms = timeout_ms;
  t_session_id(a->id, 3);
  assert_int_equal(pthread_create(t, NULL, acc_main, a), 0);
}

/* The source pins a fingerprint the destination does not have: refused
 * with -EKEYREJECTED before a byte of session data; the listener goes on
 * waiting, and the right pin then gets through. */
static void test_wrong_pin_refused(void **state) {
  (void)state;
  struct nc_amst_config src, dst;
  tls_cfgs(4, &src, &dst);
  struct acc a;
  pthread_t t;
  acc_start(&a, &t, &dst, 5000);
  int port = nc_amst_listener_port(a.l);
  struct nc_amst_config bad = src;
  bad.tls_peer_fp = nc_tls_fingerprint(id_other);
  struct nc_amst *s = NULL;
  int64_t t0 = t_now_ms();
  assert_int_equal(nc_amst_connect(&bad, "127.0.0.1", port, a.id, &s), -EKEYREJECTED);
  assert_in_range(t_now_ms() - t0, 0, 2000);
  assert_null(s);
  /* A pin is required to connect with TLS. */
  bad.tls_peer_fp = NULL;
  assert_int_equal(nc_amst_connect(&bad, "127.0.0.1", port, a.id, &s), NC_E_INVALID);
  assert_int_equal(nc_amst_connect(&src, "127.0.0.1", port, a.id, &s), 0);
  pthread_join(t, NULL);
  assert_int_equal(a.rc, 0);
  assert_int_equal(nc_amst_send(s, NC_AMST_TYPE_USER, "ok", 2), 0);
  uint8_t type;
  void *pl;
  size_t len;
  assert_int_equal(nc_amst_recv(a.out, 2000, &type, &pl, &len), 0);
  assert_memory_equal(pl, "ok", 2);
  free(pl);
  nc_amst_close(s);
  nc_amst_close(a.out);
  nc_amst_listener_close(a.l);
}

/* The destination pins the source: another node's certificate (right
 * session id and all) never forms a session. */
static void test_acceptor_pin(void **state) {
  (void)state;
  struct nc_amst_config src, dst;
  tls_cfgs(2, &src, &dst);
  struct acc a;
  pthread_t t;
  acc_start(&a, &t, &dst, 1500);
  struct nc_amst_config impostor = src;
  impostor.tls = id_other;
  impostor.connect_timeout_ms = 1000;
  struct nc_amst *s = NULL;
  int rc = nc_amst_connect(&impostor, "127.0.0.1", nc_amst_listener_port(a.l), a.id, &s);
  printf("# impostor source: %s\n", nc_strerror(rc));
  assert_true(rc < 0);
  assert_null(s);
  pthread_join(t, NULL);
  assert_int_equal(a.rc, -ETIMEDOUT);
  assert_null(a.out);
  nc_amst_listener_close(a.l);
}

/* A plain peer and a TLS listener (and the reverse) refuse each other
 * cleanly and quickly; the listener still takes a proper session after. */
static void test_plain_vs_tls(void **state) {
  (void)state;
  struct nc_amst_config src, dst;
  tls_cfgs(2, &src, &dst);
  struct acc a;
  pthread_t t;
  acc_start(&a, &t, &dst, 5000);
  int port = nc_amst_listener_port(a.l);
  /* A raw plaintext HELLO: the TLS listener drops the connection. */
  int fd = raw_connect(port, a.id, 0, 2);
  assert_true(fd >= 0);
  assert_int_equal(raw_expect_closed(fd, 2000), 0);
  close(fd);
  /* A plain AMST connector fails, not hangs. */
  struct nc_amst_config plain;
  nc_amst_config_default(&plain);
  plain.streams = 2;
  plain.connect_timeout_ms = 2000;
  struct nc_amst *s = NULL;
  int64_t t0 = t_now_ms();
  int rc = nc_amst_connect(&plain, "127.0.0.1", port, a.id, &s);
  printf("# plain connector to a TLS listener: %s after %lld ms\n", nc_strerror(rc),
         (long long)(t_now_ms() - t0));
  assert_true(rc < 0);
  assert_true(rc != -ETIMEDOUT);
  assert_null(s);
  assert_int_equal(nc_amst_connect(&src, "127.0.0.1", port, a.id, &s), 0);
  pthread_join(t, NULL);
  assert_int_equal(a.rc, 0);
  nc_amst_close(s);
  nc_amst_close(a.out);
  nc_amst_listener_close(a.l);

  /* The reverse: a TLS connector to a plain listener. */
  acc_start(&a, &t, &plain, 5000);
  t0 = t_now_ms();
  src.connect_timeout_ms = 2000;
  rc = nc_amst_connect(&src, "127.0.0.1", nc_amst_listener_port(a.l), a.id, &s);
  printf("# TLS connector to a plain listener: %s after %lld ms\n", nc_strerror(rc),
         (long long)(t_now_ms() - t0));
  assert_true(rc < 0);
  assert_true(rc != -ETIMEDOUT);
  nc_amst_listener_abort(a.l);
  pthread_join(t, NULL);
  assert_int_equal(a.rc, -ECANCELED);
  nc_amst_listener_close(a.l);
}

/* ---- abort and close while blocked ------------------------------------------------ */

struct blocked {
  struct nc_amst *a;
  bool send;
  int rc;
  int64_t returned_ms;
};

static void *blocked_main(void *arg) {
  struct blocked *b = arg;
  if (b->send) {
    uint8_t *buf = calloc(1, 256 * 1024);
    while ((b->rc = nc_amst_send(b->a, NC_AMST_TYPE_USER, buf, 256 * 1024)) == 0) {
    }
    free(buf);
  } else {
    uint8_t type;
    void *pl = NULL;
    size_t len;
    b->rc = nc_amst_recv(b->a, 20000, &type, &pl, &len);
    if (b->rc == 0)
      free(pl);
  }
  b->returned_ms = t_now_ms();
  return NULL;
}

/* A sender blocked on a full window (nobody reads on the peer) and a
 * receiver blocked on nothing: abort releases both promptly, the peer sees
 * its session fail through the dropped connections, and both close at
 * once. */
static void test_abort_tls(void **state) {
  (void)state;
  struct nc_amst_config src, dst;
  tls_cfgs(4, &src, &dst);
  src.send_window_bytes = 1 * MIB;
  src.io_timeout_ms = dst.io_timeout_ms = 15000; /* abort must not wait for this */
  struct amst_pair p;
  pair_open(&p, &src, &dst);
  struct blocked snd = {.a = p.src, .send = true}, lrecv = {.a = p.src};
  pthread_t t[2];
  assert_int_equal(pthread_create(&t[0], NULL, blocked_main, &snd), 0);
  assert_int_equal(pthread_create(&t[1], NULL, blocked_main, &lrecv), 0);
  t_sleep_ms(300); /* the sender filled the window */
  struct nc_amst_stats st;
  nc_amst_stats(p.src, &st);
  assert_true(st.queued_bytes > 0);
  int64_t t0 = t_now_ms();
  nc_amst_abort(p.src);
  for (int i = 0; i < 2; i++)
    pthread_join(t[i], NULL);
  assert_int_equal(snd.rc, -ECANCELED);
  assert_int_equal(lrecv.rc, -ECANCELED);
  assert_in_range(snd.returned_ms - t0, 0, 1000);
  assert_in_range(lrecv.returned_ms - t0, 0, 1000);
  /* The peer may hand out what it already holds, then fails fast. */
  int rc;
  int64_t r0 = t_now_ms();
  for (;;) {
    uint8_t type;
    void *pl = NULL;
    size_t len;
    rc = nc_amst_recv(p.dst, 5000, &type, &pl, &len);
    if (rc)
      break;
    free(pl);
  }
  printf("# tls abort: sender and receiver out in %lld/%lld ms; the peer: %s after %lld ms\n",
         (long long)(snd.returned_ms - t0), (long long)(lrecv.returned_ms - t0),
         nc_strerror(rc), (long long)(t_now_ms() - r0));
  assert_true(rc == -ECONNRESET || rc == -EPIPE);
  assert_in_range(t_now_ms() - r0, 0, 2000);
  int64_t c0 = t_now_ms();
  pair_close(&p);
  assert_in_range(t_now_ms() - c0, 0, 2000);
}

struct closer {
  struct nc_amst *a;
};

static void *closer_main(void *arg) {
  struct closer *c = arg;
  nc_amst_close(c->a);
  return NULL;
}

/* Graceful close over TLS: the peer gets every message, then -EPIPE. */
static void test_close_delivers_all_tls(void **state) {
  (void)state;
  struct nc_amst_config src, dst;
  tls_cfgs(4, &src, &dst);
  src.send_window_bytes = 512 * 1024;
  struct amst_pair p;
  pair_open(&p, &src, &dst);
  struct xfer s1 = {.a = p.src, .n = 300, .seed = 5};
  pthread_t ts;
  assert_int_equal(pthread_create(&ts, NULL, send_main, &s1), 0);
  struct xfer r1 = {.a = p.dst, .n = 300, .seed = 5};
  recv_main(&r1);
  pthread_join(ts, NULL);
  assert_int_equal(s1.rc, 0);
  assert_int_equal(r1.rc, 0);
  assert_int_equal(r1.hash, s1.hash);
  struct closer c = {.a = p.src};
  pthread_t tc;
  assert_int_equal(pthread_create(&tc, NULL, closer_main, &c), 0);
  uint8_t type;
  void *pl;
  size_t len;
  assert_int_equal(nc_amst_recv(p.dst, 5000, &type, &pl, &len), -EPIPE);
  pthread_join(tc, NULL);
  p.src = NULL;
  pair_close(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fp_text),
      cmocka_unit_test(test_identity_files),
      cmocka_unit_test(test_tls_duplex),
      cmocka_unit_test(test_tls_key_updates),
      cmocka_unit_test(test_ordered_tls_1),
      cmocka_unit_test(test_ordered_tls_4),
      cmocka_unit_test(test_ordered_tls_8),
      cmocka_unit_test(test_backpressure_tls),
      cmocka_unit_test(test_wrong_pin_refused),
      cmocka_unit_test(test_acceptor_pin),
      cmocka_unit_test(test_plain_vs_tls),
      cmocka_unit_test(test_abort_tls),
      cmocka_unit_test(test_close_delivers_all_tls),
  };
  return cmocka_run_group_tests(tests, setup_ids, teardown_ids);
}
