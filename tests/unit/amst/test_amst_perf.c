/* Loopback throughput and CPU cost of AMST for 1, 2 and 4 streams with
 * 1 MiB and 64 KiB messages, over plain TCP and over TLS 1.3. Printed, not asserted (loopback on a shared
 * 2-core machine says little about a real link); the only assertion is
 * that every byte arrived in order. NC_AMST_PERF_MIB sets the volume. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "amst_test.h"
#include "dwcp/tls.h"

#define MIB (1024 * 1024)

struct perf_sender {
  struct nc_amst *a;
  size_t msg;
  uint64_t n;
  int rc;
};

static void *perf_send(void *arg) {
  struct perf_sender *s = arg;
  uint8_t *buf = malloc(s->msg);
  memset(buf, 0x5a, s->msg);
  s->rc = 0;
  for (uint64_t i = 0; i < s->n && s->rc == 0; i++) {
    memcpy(buf, &i, sizeof i);
    s->rc = nc_amst_send(s->a, NC_AMST_TYPE_USER, buf, s->msg);
  }
  free(buf);
  return NULL;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static struct nc_tls *id_a, *id_b;

static void run(int streams, size_t msg, uint64_t total_mib, bool tls) {
  struct nc_amst_config cfg, cfg_b;
  nc_amst_config_default(&cfg);
  cfg.streams = streams;
  cfg_b = cfg;
  if (tls) {
    cfg.tls = id_a;
    cfg.tls_peer_fp = nc_tls_fingerprint(id_b);
    cfg_b.tls = id_b;
    cfg_b.tls_peer_fp = nc_tls_fingerprint(id_a);
  }
  struct amst_pair p;
  pair_open(&p, &cfg, &cfg_b);
  struct perf_sender s = {.a = p.src, .msg = msg, .n = total_mib * MIB / msg};
  double c0 = cpu_s();
  int64_t t0 = t_now_ms();
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, perf_send, &s), 0);
  for (uint64_t i = 0; i < s.n; i++) {
    uint8_t type;
    void *pl;
    size_t len;
    assert_int_equal(nc_amst_recv(p.dst, 10000, &type, &pl, &len), 0);
    uint64_t idx;
    memcpy(&idx, pl, sizeof idx);
    assert_int_equal(idx, i);
    assert_int_equal(len, msg);
    free(pl);
  }
  pthread_join(t, NULL);
  assert_int_equal(s.rc, 0);
  double wall = (double)(t_now_ms() - t0) / 1000.0, cpu = cpu_s() - c0;
  struct nc_amst_stats st;
  nc_amst_stats(p.src, &st);
  double mib = (double)(s.n * msg) / MIB;
  printf("# amst loopback %-5s %d stream(s) %5zu KiB msgs: %7.0f MiB/s  %5.2f Gbit/s  "
         "cpu %.2f s (%3.0f%% of a core, %.2f ns/byte, both ends)  rtt %u us cwnd %u %s %s\n",
         tls ? "TLS:" : "TCP:", streams, msg / 1024, mib / wall, mib * 8 * MIB / wall / 1e9, cpu,
         100 * cpu / wall, cpu * 1e9 / (mib * MIB), st.s[0].rtt_us, st.s[0].cwnd, st.s[0].cc,
         st.tls);
  pair_close(&p);
}

static void test_throughput(void **state) {
  (void)state;
  const char *e = getenv("NC_AMST_PERF_MIB");
  uint64_t mib = e ? strtoull(e, NULL, 10) : 256;
  static const size_t sizes[] = {1 * MIB, 64 * 1024};
  char err[256];
  assert_int_equal(nc_tls_new(NULL, "a", &id_a, err, sizeof err), 0);
  assert_int_equal(nc_tls_new(NULL, "b", &id_b, err, sizeof err), 0);
  for (size_t k = 0; k < 2; k++)
    for (int streams = 1; streams <= 4; streams *= 2)
      for (int tls = 0; tls <= 1; tls++)
        run(streams, sizes[k], mib, tls);
  nc_tls_free(id_a);
  nc_tls_free(id_b);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_throughput)};
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
