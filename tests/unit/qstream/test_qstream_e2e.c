/* The qstream codec at the real consumer. Label e2e.
 *
 * A source QEMU (TCG, the test guest dirtying random pages) migrates to a
 * unix socket this test listens on. The test reads QEMU's stream, feeds it
 * to the parser, and writes the segments it gets back (OPAQUE bytes and
 * PAGE payloads, in order) to a destination QEMU started with
 * `-incoming defer` + migrate-incoming. The destination guest must then
 * keep printing heartbeats that continue the source's sequence with
 * mem=ok (the workload re-verifies every page of its working set each
 * second), while the source stays paused and silent. The parser must have
 * found the pages (not passed everything through) and the bytes written
 * must hash (XXH3-128) like the bytes read.
 *
 * Needs build/guest (scripts/build-guest-image; NC_GUEST_DIR overrides) and
 * qemu-system-x86_64 on PATH; skips when either is missing. Two guests run
 * at once (the limit on these machines). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xxhash.h>

#include "nc_test.h"

#include "dwcp/qstream.h"
#include "util/err.h"

#define WORKLOAD "nc.dirty_mib=24 nc.rate_mib=16 nc.pattern=random"
#define HEARTBEATS_AFTER 20 /* at 100 ms: two full verification sweeps */

static char g_dir[128];
static char g_kernel[4096], g_initrd[4096];
static bool g_have_guest;
static pid_t g_pids[2] = {-1, -1};

/* ---- processes and files ---------------------------------------------- */

static pid_t spawn_qemu(const char *name, bool incoming) {
  char serial[300], qmp[300], out[300], append[512];
  snprintf(serial, sizeof serial, "file:%s/%s.log", g_dir, name);
  snprintf(qmp, sizeof qmp, "unix:%s/%s.qmp,server=on,wait=off", g_dir, name);
  snprintf(out, sizeof out, "%s/%s.out", g_dir, name);
  snprintf(append, sizeof append, "console=ttyS0 quiet panic=-1 %s", WORKLOAD);
  char *argv[] = {"qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "256M",
                  "-nodefaults", "-no-user-config", "-display", "none", "-kernel", g_kernel,
                  "-initrd", g_initrd, "-append", append, "-serial", serial, "-qmp", qmp,
                  incoming ? "-incoming" : NULL, "defer", NULL};
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  return pid;
}

static void path_in_dir(char *out, size_t cap, const char *file) {
  snprintf(out, cap, "%s/%s", g_dir, file);
}

static int count_in_file(const char *file, const char *needle, char *last_line, size_t cap) {
  char path[300];
  path_in_dir(path, sizeof path, file);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  char line[1024];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    if (strstr(line, needle)) {
      n++;
      if (last_line)
        snprintf(last_line, cap, "%s", strstr(line, needle));
    }
  }
  fclose(f);
  return n;
}

static bool wait_for_line(const char *file, const char *needle, int64_t timeout_ms) {
  int64_t until = nct_now_ms() + timeout_ms;
  while (nct_now_ms() < until) {
    if (count_in_file(file, needle, NULL, 0) > 0)
      return true;
    nct_sleep_ms(100);
  }
  return false;
}

static void unix_addr(struct sockaddr_un *sa, const char *path) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa->sun_path)
    fail_msg("socket path too long: %s", path);
  memcpy(sa->sun_path, path, strlen(path) + 1);
}

static int unix_connect(const char *path, int64_t timeout_ms) {
  struct sockaddr_un sa;
  unix_addr(&sa, path);
  int64_t until = nct_now_ms() + timeout_ms;
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
      return fd;
    int e = errno;
    close(fd);
    if (nct_now_ms() >= until)
      return -e;
    nct_sleep_ms(50);
  }
}

static int write_all(int fd, const uint8_t *b, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return w < 0 ? -errno : -EIO;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

/* ---- a minimal QMP client (line-delimited JSON) ----------------------- */

struct qmp {
  int fd;
  char buf[1 << 16];
  size_t len;
};

/* Next line into out (without the newline); 0, or -ETIMEDOUT / -EIO. */
static int qmp_line(struct qmp *q, char *out, size_t cap, int timeout_ms) {
  for (;;) {
    char *nl = memchr(q->buf, '\n', q->len);
    if (nl) {
      size_t n = (size_t)(nl - q->buf);
      snprintf(out, cap, "%.*s", (int)n, q->buf);
      memmove(q->buf, nl + 1, q->len - n - 1);
      q->len -= n + 1;
      return 0;
    }
    if (q->len == sizeof q->buf)
      return -EIO;
    struct pollfd pfd = {.fd = q->fd, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0)
      return -ETIMEDOUT;
    ssize_t r = read(q->fd, q->buf + q->len, sizeof q->buf - q->len);
    if (r <= 0)
      return -EIO;
    q->len += (size_t)r;
  }
}

/* Sends cmd; the reply line (events skipped) goes to out. 0 on "return". */
static int qmp_cmd(struct qmp *q, const char *cmd, char *out, size_t cap) {
  char line[1 << 14];
  if (write_all(q->fd, (const uint8_t *)cmd, strlen(cmd)) < 0 ||
      write_all(q->fd, (const uint8_t *)"\n", 1) < 0)
    return -EIO;
  for (;;) {
    int rc = qmp_line(q, line, sizeof line, 30000);
    if (rc < 0)
      return rc;
    if (strstr(line, "\"return\"") || strstr(line, "\"error\"")) {
      if (out)
        snprintf(out, cap, "%s", line);
      return strstr(line, "\"return\"") ? 0 : NC_E_HV;
    }
  }
}

static void qmp_open(struct qmp *q, const char *name) {
  char path[300], line[4096];
  snprintf(path, sizeof path, "%s/%s.qmp", g_dir, name);
  q->len = 0;
  q->fd = unix_connect(path, 20000);
  if (q->fd < 0)
    fail_msg("QMP %s: %s", path, strerror(-q->fd));
  if (qmp_line(q, line, sizeof line, 20000) < 0 || !strstr(line, "QMP"))
    fail_msg("QMP %s: no greeting", path);
  EXPECT_RC(qmp_cmd(q, "{\"execute\":\"qmp_capabilities\"}", NULL, 0), 0);
}

/* Polls query-migrate until status is one of the final ones. */
static void wait_migration(struct qmp *q, const char *who, const char *want) {
  char reply[1 << 14];
  int64_t until = nct_now_ms() + 60000;
  while (nct_now_ms() < until) {
    EXPECT_RC(qmp_cmd(q, "{\"execute\":\"query-migrate\"}", reply, sizeof reply), 0);
    if (strstr(reply, want))
      return;
    if (strstr(reply, "\"failed\"") || strstr(reply, "\"cancelled\""))
      fail_msg("%s migration: %s", who, reply);
    nct_sleep_ms(100);
  }
  fail_msg("%s migration not %s within 60 s: %s", who, want, reply);
}

/* ---- the relay --------------------------------------------------------- */

struct relay {
  int out_fd;
  XXH3_state_t *in_hash, *out_hash;
  uint64_t out_bytes;
};

static int relay_opaque(void *data, const uint8_t *b, size_t n) {
  struct relay *r = data;
  XXH3_128bits_update(r->out_hash, b, n);
  r->out_bytes += n;
  return write_all(r->out_fd, b, n);
}

static int relay_page(void *data, uint32_t block, uint64_t offset, const uint8_t page[NC_QS_PAGE_SIZE]) {
  (void)block;
  (void)offset;
  return relay_opaque(data, page, NC_QS_PAGE_SIZE);
}

static int setup(void **state) {
  (void)state;
  if (nct_mkdtemp(g_dir, sizeof g_dir, "qs-e2e") < 0)
    return -1;
  const char *gd = getenv("NC_GUEST_DIR");
  if (!gd)
    gd = NC_TEST_GUEST_DIR;
  snprintf(g_kernel, sizeof g_kernel, "%s/vmlinux", gd);
  snprintf(g_initrd, sizeof g_initrd, "%s/initramfs.cpio.gz", gd);
  g_have_guest = access(g_kernel, R_OK) == 0 && access(g_initrd, R_OK) == 0;
  if (g_have_guest && system("qemu-system-x86_64 --version >/dev/null 2>&1") != 0)
    g_have_guest = false;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (int i = 0; i < 2; i++) {
    if (g_pids[i] > 0) {
      kill(g_pids[i], SIGKILL);
      waitpid(g_pids[i], NULL, 0);
      g_pids[i] = -1;
    }
  }
  if (getenv("NC_KEEP_TMP"))
    printf("[e2e] kept %s\n", g_dir);
  else
    nct_rmtree(g_dir);
  return 0;
}

static void test_relay_through_parser(void **state) {
  (void)state;
  if (!g_have_guest) {
    printf("[e2e] SKIP: no guest image at %s or no qemu-system-x86_64 "
           "(scripts/build-guest-image build/guest)\n",
           g_kernel);
    skip();
  }
  char reply[1 << 14], cmd[1024], path[300];

  g_pids[0] = spawn_qemu("src", false);
  g_pids[1] = spawn_qemu("dst", true);
  if (!wait_for_line("src.log", "NCREADY", 90000))
    fail_msg("source guest printed no NCREADY within 90 s (see %s)", g_dir);
  nct_sleep_ms(1500); /* let it dirty pages and print heartbeats */

  struct qmp src, dst;
  qmp_open(&src, "src");
  qmp_open(&dst, "dst");

  /* The destination listens; the source connects to us. */
  char dst_sock[300], relay_sock[300];
  path_in_dir(dst_sock, sizeof dst_sock, "dst-mig.sock");
  path_in_dir(relay_sock, sizeof relay_sock, "relay.sock");
  snprintf(cmd, sizeof cmd,
           "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"unix:%s\"}}", dst_sock);
  if (qmp_cmd(&dst, cmd, reply, sizeof reply) != 0)
    fail_msg("migrate-incoming: %s", reply);
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  unix_addr(&sa, relay_sock);
  assert_true(lfd >= 0);
  assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(lfd, 1), 0);
  int out_fd = unix_connect(dst_sock, 10000);
  if (out_fd < 0)
    fail_msg("connect %s: %s", dst_sock, strerror(-out_fd));

  int hb_before = count_in_file("src.log", "NCHB", NULL, 0);
  snprintf(cmd, sizeof cmd, "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"unix:%s\"}}",
           relay_sock);
  if (qmp_cmd(&src, cmd, reply, sizeof reply) != 0)
    fail_msg("migrate: %s", reply);
  struct pollfd pfd = {.fd = lfd, .events = POLLIN};
  assert_int_equal(poll(&pfd, 1, 30000), 1);
  int in_fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  assert_true(in_fd >= 0);

  struct relay r = {.out_fd = out_fd};
  r.in_hash = XXH3_createState();
  r.out_hash = XXH3_createState();
  XXH3_128bits_reset(r.in_hash);
  XXH3_128bits_reset(r.out_hash);
  struct nc_qs_sink sink = {.data = &r, .opaque = relay_opaque, .page = relay_page};
  struct nc_qs_parser *p = NULL;
  EXPECT_RC(nc_qs_parser_new(&sink, &p), 0);
  static uint8_t buf[64 << 10];
  uint64_t in_bytes = 0;
  int64_t t0 = nct_now_ms();
  for (;;) {
    pfd = (struct pollfd){.fd = in_fd, .events = POLLIN};
    if (poll(&pfd, 1, 60000) != 1)
      fail_msg("no data from the source QEMU for 60 s after %" PRIu64 " bytes", in_bytes);
    ssize_t n = read(in_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      fail_msg("read from the source QEMU: %s", strerror(errno));
    if (n == 0)
      break;
    in_bytes += (uint64_t)n;
    XXH3_128bits_update(r.in_hash, buf, (size_t)n);
    EXPECT_RC(nc_qs_feed(p, buf, (size_t)n), 0);
  }
  EXPECT_RC(nc_qs_finish(p), 0);
  int64_t t1 = nct_now_ms();
  shutdown(out_fd, SHUT_WR);

  struct nc_qs_stats st;
  nc_qs_stats(p, &st);
  printf("[e2e] relayed %" PRIu64 " bytes in %" PRId64 " ms: %" PRIu64 " pages, %" PRIu64
         " zero pages, %" PRIu64 " opaque bytes, %u RAM sections%s%s\n",
         in_bytes, t1 - t0, st.pages, st.zero_pages, st.opaque_bytes, st.passes,
         st.passthrough ? ", passthrough: " : "", nc_qs_passthrough_reason(p));
  EXPECT_U64(r.out_bytes, in_bytes);
  XXH128_hash_t hi = XXH3_128bits_digest(r.in_hash), ho = XXH3_128bits_digest(r.out_hash);
  if (!XXH128_isEqual(hi, ho))
    fail_msg("relayed stream hash differs from QEMU's");
  EXPECT_TRUE(!st.passthrough);
  EXPECT_TRUE(st.pages > 0 && st.passes >= 2 && st.ram_done && st.eof);
  nc_qs_parser_free(p);
  XXH3_freeState(r.in_hash);
  XXH3_freeState(r.out_hash);

  wait_migration(&src, "source", "\"completed\"");
  wait_migration(&dst, "destination", "\"completed\"");
  close(in_fd);
  close(out_fd);
  close(lfd);

  /* The destination runs the guest on: the heartbeats continue the
   * source's sequence, every one mem=ok, no reboot, no bad page. */
  char last[1024] = "";
  int64_t until = nct_now_ms() + 60000;
  while (count_in_file("dst.log", "NCHB", NULL, 0) < HEARTBEATS_AFTER && nct_now_ms() < until)
    nct_sleep_ms(100);
  int hb = count_in_file("dst.log", "NCHB", last, sizeof last);
  int ok = count_in_file("dst.log", "mem=ok", NULL, 0);
  path_in_dir(path, sizeof path, "dst.log");
  if (hb < HEARTBEATS_AFTER)
    fail_msg("destination printed %d heartbeats in 60 s (see %s)", hb, path);
  EXPECT_I64(ok, hb);
  EXPECT_I64(count_in_file("dst.log", "NCMEMBAD", NULL, 0), 0);
  EXPECT_I64(count_in_file("dst.log", "NCREADY", NULL, 0), 0);
  unsigned long long first_seq = 0;
  char first[1024] = "";
  {
    FILE *f = fopen(path, "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
      char *h = strstr(line, "NCHB seq=");
      if (h) {
        snprintf(first, sizeof first, "%s", h);
        first_seq = strtoull(h + 9, NULL, 10);
        break;
      }
    }
    if (f)
      fclose(f);
  }
  if (first_seq < (unsigned long long)hb_before)
    fail_msg("destination's first heartbeat %s does not continue the source's %d", first, hb_before);
  printf("[e2e] destination: %d heartbeats, all mem=ok; first: %s", hb, first);

  /* The source stays paused after the switch-over, and prints nothing. */
  EXPECT_RC(qmp_cmd(&src, "{\"execute\":\"query-status\"}", reply, sizeof reply), 0);
  EXPECT_CONTAINS(reply, "\"running\": false");
  EXPECT_CONTAINS(reply, "postmigrate");
  int src_hb = count_in_file("src.log", "NCHB", NULL, 0);
  nct_sleep_ms(1000);
  EXPECT_I64(count_in_file("src.log", "NCHB", NULL, 0), src_hb);
  EXPECT_RC(qmp_cmd(&dst, "{\"execute\":\"query-status\"}", reply, sizeof reply), 0);
  EXPECT_CONTAINS(reply, "\"running\": true");
  close(src.fd);
  close(dst.fd);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_relay_through_parser, NULL, teardown),
  };
  return cmocka_run_group_tests_name("qstream e2e", tests, setup, NULL);
}
