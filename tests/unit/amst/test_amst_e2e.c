/* AMST end to end over a capped link: two network namespaces joined by a
 * veth pair, each end shaped with `tc qdisc ... tbf rate 100mbit burst
 * 32kbit latency 50ms`. A producer in one namespace sends as fast as
 * nc_amst_send lets it for a few seconds; a consumer in the other reads.
 * Checks: the consumer's rate matches the cap, the producer is throttled
 * to the same rate (its admitted bytes track the link, not memory), and
 * the bytes outstanding never exceed the send window plus one frame.
 * Needs root, ip and tc; skipped otherwise. */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "amst_test.h"

#define MIB (1024 * 1024)
#define PORT 7411
#define SEND_MS 6000
#define MSG_BYTES (64 * 1024)
#define WINDOW_BYTES (4 * MIB)

struct result {
  double rate_mbit;      /* steady state, after the first second */
  double produced_mbit;  /* producer: admitted bytes / time (whole run) */
  double consumed_mbit;  /* consumer: same span, whole run */
  uint64_t max_queued;   /* producer: max outstanding bytes seen */
  uint64_t msgs;
  int rc;
  char cc[16];
  uint32_t rtt_us;
};

static char ns_a[32], ns_b[32], veth_a[16], veth_b[16];

static int sh(const char *fmt, ...) {
  char cmd[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  if (rc != 0)
    fprintf(stderr, "# failed (%d): %s\n", rc, cmd);
  return rc;
}

static void teardown_net(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null", ns_a,
           ns_b);
  if (system(cmd) != 0) { /* fine: already gone */
  }
}

static int setup_net(void) {
  int pid = (int)getpid() % 100000;
  snprintf(ns_a, sizeof ns_a, "ncamst-a-%d", pid);
  snprintf(ns_b, sizeof ns_b, "ncamst-b-%d", pid);
  snprintf(veth_a, sizeof veth_a, "nca%da", pid);
  snprintf(veth_b, sizeof veth_b, "nca%db", pid);
  teardown_net();
  if (sh("ip netns add %s && ip netns add %s", ns_a, ns_b) ||
      sh("ip link add %s type veth peer name %s", veth_a, veth_b) ||
      sh("ip link set %s netns %s && ip link set %s netns %s", veth_a, ns_a, veth_b, ns_b) ||
      sh("ip -n %s addr add 10.213.7.1/24 dev %s && ip -n %s link set %s up && "
         "ip -n %s link set lo up",
         ns_a, veth_a, ns_a, veth_a, ns_a) ||
      sh("ip -n %s addr add 10.213.7.2/24 dev %s && ip -n %s link set %s up && "
         "ip -n %s link set lo up",
         ns_b, veth_b, ns_b, veth_b, ns_b) ||
      sh("tc -n %s qdisc add dev %s root tbf rate 100mbit burst 32kbit latency 50ms", ns_a,
         veth_a) ||
      sh("tc -n %s qdisc add dev %s root tbf rate 100mbit burst 32kbit latency 50ms", ns_b,
         veth_b))
    return -1;
  return 0;
}

static int enter_ns(const char *name) {
  char path[128];
  snprintf(path, sizeof path, "/var/run/netns/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  int rc = setns(fd, CLONE_NEWNET);
  close(fd);
  return rc;
}

static struct nc_amst_config e2e_cfg(void) {
  struct nc_amst_config cfg;
  nc_amst_config_default(&cfg);
  cfg.streams = 4;
  cfg.send_window_bytes = cfg.recv_window_bytes = WINDOW_BYTES;
  cfg.io_timeout_ms = 5000;
  cfg.bbr = true;
  return cfg;
}

static void consumer(int out_fd) {
  struct result r = {0};
  struct nc_amst_config cfg = e2e_cfg();
  struct nc_amst_listener *l = NULL;
  struct nc_amst *a = NULL;
  uint8_t id[16];
  t_session_id(id, 40);
  r.rc = enter_ns(ns_b);
  if (r.rc == 0)
    r.rc = nc_amst_listen("10.213.7.2", PORT, &l);
  if (r.rc == 0)
    r.rc = nc_amst_accept(l, &cfg, id, 10000, &a);
  int64_t t0 = 0, t1s = 0, tl = 0;
  uint64_t bytes = 0, bytes1s = 0;
  while (r.rc == 0) {
    uint8_t type;
    void *pl;
    size_t len;
    int rc = nc_amst_recv(a, 10000, &type, &pl, &len);
    if (rc == -EPIPE)
      break;
    if (rc != 0) {
      r.rc = rc;
      break;
    }
    int64_t now = t_now_ms();
    if (t0 == 0)
      t0 = now;
    bytes += len + NC_AMST_HEADER_LEN;
    if (t1s == 0 && now - t0 >= 1000) {
      t1s = now;
      bytes1s = bytes;
    }
    tl = now;
    r.msgs++;
    free(pl);
  }
  if (tl > t1s && t1s > 0)
    r.rate_mbit = (double)(bytes - bytes1s) * 8 / ((double)(tl - t1s) / 1000) / 1e6;
  if (tl > t0)
    r.consumed_mbit = (double)bytes * 8 / ((double)(tl - t0) / 1000) / 1e6;
  nc_amst_close(a);
  nc_amst_listener_close(l);
  if (write(out_fd, &r, sizeof r) != (ssize_t)sizeof r)
    _exit(3);
  _exit(0);
}

static void producer(int out_fd) {
  struct result r = {0};
  struct nc_amst_config cfg = e2e_cfg();
  struct nc_amst *a = NULL;
  uint8_t id[16];
  t_session_id(id, 40);
  r.rc = enter_ns(ns_a);
  for (int i = 0; i < 50 && r.rc == 0; i++) { /* the consumer may not listen yet */
    r.rc = nc_amst_connect(&cfg, "10.213.7.2", PORT, id, &a);
    if (r.rc == -ECONNREFUSED) {
      t_sleep_ms(100);
      r.rc = i < 49 ? 0 : r.rc;
      a = NULL;
      continue;
    }
    break;
  }
  uint8_t *buf = calloc(1, MSG_BYTES);
  int64_t t0 = t_now_ms();
  uint64_t admitted = 0;
  while (r.rc == 0 && a && t_now_ms() - t0 < SEND_MS) {
    msg_fill(buf, MSG_BYTES, r.msgs);
    r.rc = nc_amst_send(a, NC_AMST_TYPE_USER, buf, MSG_BYTES);
    admitted += MSG_BYTES + NC_AMST_HEADER_LEN;
    r.msgs++;
    struct nc_amst_stats st;
    nc_amst_stats(a, &st);
    if (st.queued_bytes > r.max_queued)
      r.max_queued = st.queued_bytes;
    memcpy(r.cc, st.s[0].cc, sizeof r.cc);
    r.rtt_us = st.s[0].rtt_us;
  }
  r.produced_mbit = (double)admitted * 8 / ((double)(t_now_ms() - t0) / 1000) / 1e6;
  free(buf);
  nc_amst_close(a);
  if (write(out_fd, &r, sizeof r) != (ssize_t)sizeof r)
    _exit(3);
  _exit(0);
}

static pid_t spawn(void (*fn)(int), int *read_fd) {
  int p[2];
  if (pipe(p) != 0)
    return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    fn(p[1]);
  }
  close(p[1]);
  *read_fd = p[0];
  return pid;
}

static int collect(pid_t pid, int fd, struct result *r) {
  ssize_t n = read(fd, r, sizeof *r);
  close(fd);
  int status = 0;
  waitpid(pid, &status, 0);
  return n == (ssize_t)sizeof *r ? 0 : -1;
}

static void test_capped_link(void **state) {
  (void)state;
  if (geteuid() != 0 || system("command -v ip >/dev/null && command -v tc >/dev/null") != 0)
    skip();
  if (setup_net() != 0) {
    teardown_net();
    fail_msg("could not set up namespaces, veth and tbf");
  }
  int fc = -1, fp = -1;
  pid_t pc = spawn(consumer, &fc);
  pid_t pp = spawn(producer, &fp);
  if (pc < 0 || pp < 0) {
    teardown_net();
    fail_msg("fork: %s", strerror(errno));
  }
  struct result rc = {0}, rp = {0};
  int ok_p = collect(pp, fp, &rp);
  int ok_c = collect(pc, fc, &rc);
  teardown_net();
  assert_int_equal(ok_p, 0);
  assert_int_equal(ok_c, 0);
  printf("# 100mbit tbf, 4 streams, %d KiB msgs, window %d MiB, cc %s, rtt %u us\n",
         MSG_BYTES / 1024, WINDOW_BYTES / MIB, rp.cc, rp.rtt_us);
  printf("# consumer: %.1f Mbit/s steady (%.1f overall), %llu msgs\n", rc.rate_mbit,
         rc.consumed_mbit, (unsigned long long)rc.msgs);
  printf("# producer: %.1f Mbit/s admitted, max outstanding %llu bytes (window %d + frame %d)\n",
         rp.produced_mbit, (unsigned long long)rp.max_queued, WINDOW_BYTES,
         MSG_BYTES + NC_AMST_HEADER_LEN);
  assert_int_equal(rp.rc, 0);
  assert_int_equal(rc.rc, 0);
  assert_int_equal(rc.msgs, rp.msgs); /* close delivered everything */
  /* tbf counts Ethernet frames: payload goodput is about 94-96 Mbit/s */
  assert_in_range((uint64_t)rc.rate_mbit, 85, 101);
  /* the producer ran at the link's pace, not memory's: within the window
   * (4 MiB = 0.34 s of link) of the consumer over a 6 s run */
  assert_in_range((uint64_t)rp.produced_mbit, 85, 101 + 6);
  assert_in_range(rp.max_queued, 1, WINDOW_BYTES + MSG_BYTES + NC_AMST_HEADER_LEN);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_capped_link)};
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
