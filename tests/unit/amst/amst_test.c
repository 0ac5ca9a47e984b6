#include "amst_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

int64_t t_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void t_sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

void t_session_id(uint8_t id[16], uint8_t tag) {
  for (int i = 0; i < 16; i++)
    id[i] = (uint8_t)(0xa0 + i * 7 + tag);
}

struct accept_args {
  struct nc_amst_listener *l;
  const struct nc_amst_config *cfg;
  uint8_t id[16];
  struct nc_amst *out;
  int rc;
};

static void *accept_main(void *arg) {
  struct accept_args *aa = arg;
  aa->rc = nc_amst_accept(aa->l, aa->cfg, aa->id, 5000, &aa->out);
  return NULL;
}

void pair_open(struct amst_pair *p, const struct nc_amst_config *cfg_src,
               const struct nc_amst_config *cfg_dst) {
  memset(p, 0, sizeof *p);
  assert_int_equal(nc_amst_listen("127.0.0.1", 0, &p->l), 0);
  struct accept_args aa = {.l = p->l, .cfg = cfg_dst};
  t_session_id(aa.id, 1);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, accept_main, &aa), 0);
  int rc = nc_amst_connect(cfg_src, "127.0.0.1", nc_amst_listener_port(p->l), aa.id, &p->src);
  pthread_join(t, NULL);
  assert_int_equal(rc, 0);
  assert_int_equal(aa.rc, 0);
  p->dst = aa.out;
}

void pair_close(struct amst_pair *p) {
  nc_amst_close(p->src);
  nc_amst_close(p->dst);
  nc_amst_listener_close(p->l);
  memset(p, 0, sizeof *p);
}

void gen_init(struct msg_gen *g, uint64_t seed) { g->state = seed * 0x9e3779b97f4a7c15ull + 1; }

uint64_t gen_next(struct msg_gen *g) { /* xorshift64* */
  uint64_t x = g->state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  g->state = x;
  return x * 0x2545f4914f6cdd1dull;
}

void msg_fill(uint8_t *buf, size_t len, uint64_t i) {
  uint8_t b = (uint8_t)(i * 131 + 7);
  memset(buf, b, len);
  for (size_t k = 0; k < 8 && k < len; k++)
    buf[k] = (uint8_t)(i >> (8 * k));
  if (len > 8) /* vary the tail too, so a shifted payload is caught */
    buf[len - 1] = (uint8_t)(len ^ i);
}

uint64_t msg_hash(uint64_t h, uint8_t type, const void *p, size_t len) {
  const uint8_t *b = p;
  uint8_t hdr[5] = {type, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                    (uint8_t)len};
  for (int i = 0; i < 5; i++)
    h = (h ^ hdr[i]) * 0x100000001b3ull;
  for (size_t i = 0; i < len; i++)
    h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

int raw_write(int fd, const void *buf, size_t len) {
  const uint8_t *b = buf;
  while (len > 0) {
    ssize_t w = send(fd, b, len, MSG_NOSIGNAL);
    if (w <= 0)
      return -1;
    b += w;
    len -= (size_t)w;
  }
  return 0;
}

int raw_tcp_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

int raw_expect_closed(int fd, int timeout_ms) {
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int64_t deadline = t_now_ms() + timeout_ms;
  char buf[4096];
  while (t_now_ms() < deadline) {
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r == 0 || (r < 0 && errno == ECONNRESET))
      return 0;
    if (r < 0 && errno != EINTR)
      return -1; /* timed out: still open */
  }
  return -1;
}

int raw_connect(int port, const uint8_t id[16], int index, int count) {
  int fd = raw_tcp_connect(port);
  if (fd < 0)
    return -1;
  uint8_t h[NC_AMST_HEADER_LEN + NC_AMST_HELLO_LEN] = {0};
  nc_amst_write_header(h, NC_AMST_TYPE_HELLO, 0, NC_AMST_HELLO_LEN);
  memcpy(h + 16, id, 16);
  h[32] = (uint8_t)(index >> 8);
  h[33] = (uint8_t)index;
  h[34] = (uint8_t)(count >> 8);
  h[35] = (uint8_t)count;
  h[45] = 0x10; /* send window: be64 at 40..47, 0x100000 = 1 MiB */
  if (raw_write(fd, h, sizeof h) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int raw_read_hello(int fd) {
  uint8_t b[NC_AMST_HEADER_LEN + NC_AMST_HELLO_LEN];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t r = recv(fd, b + got, sizeof b - got, 0);
    if (r <= 0)
      return -1;
    got += (size_t)r;
  }
  struct nc_amst_header h;
  if (nc_amst_parse_header(b, &h) != 0 || h.type != NC_AMST_TYPE_HELLO)
    return -1;
  return 0;
}
