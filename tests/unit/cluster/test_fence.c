/* The fence file and the fence guard (src/cluster/fence.h): parsing and
 * its caps, atomic writes, killing only the QEMU a run dir names, and a
 * real guard process that kills a listed process once the deadline in the
 * file has passed, and not before. */
#include "nc_test.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cluster/fence.h"
#include "hv/qemu_argv.h"

static char tmpdir[64];

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/nc-fence-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f) {
  (void)sb;
  (void)flag;
  (void)f;
  return remove(p);
}

static int teardown(void **state) {
  (void)state;
  nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}

static void test_parse_good(void **state) {
  (void)state;
  const char text[] = "deadline 12345\nvm /var/lib/novacron/vms/a\n\nvm /x/b\n";
  struct nc_fence_file f;
  EXPECT_RC(nc_fence_parse(text, sizeof text - 1, &f), 0);
  EXPECT_I64(f.deadline_ms, 12345);
  EXPECT_I64(f.nvms, 2);
  EXPECT_STR(f.vms[0], "/var/lib/novacron/vms/a");
  EXPECT_STR(f.vms[1], "/x/b");
  nc_fence_file_clear(&f);
  /* no trailing newline, no vms */
  EXPECT_RC(nc_fence_parse("deadline 7", 10, &f), 0);
  EXPECT_I64(f.deadline_ms, 7);
  EXPECT_I64(f.nvms, 0);
  nc_fence_file_clear(&f);
}

static void test_parse_bad(void **state) {
  (void)state;
  static const char *const bad[] = {
      "deadline\n", "deadline -1\n", "deadline 12x\n", "deadline 99999999999999999999999\n",
      "vm relative/dir\n", "vm \n", "bogus 1\n", "deadline 1\nvm /a\nwhat\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    struct nc_fence_file f;
    int rc = nc_fence_parse(bad[i], strlen(bad[i]), &f);
    if (rc != -EINVAL)
      fail_msg("\"%s\" parsed with %d, want -EINVAL", bad[i], rc);
    nc_fence_file_clear(&f);
  }
  char nul[] = "vm /a\0b\n";
  struct nc_fence_file f;
  EXPECT_RC(nc_fence_parse(nul, sizeof nul - 1, &f), -EINVAL);
  nc_fence_file_clear(&f);
}

static void test_parse_caps(void **state) {
  (void)state;
  size_t cap = (size_t)(NC_FENCE_VMS_MAX + 1) * 8 + 32;
  char *text = malloc(cap);
  size_t n = 0;
  for (int i = 0; i <= NC_FENCE_VMS_MAX; i++)
    n += (size_t)snprintf(text + n, cap - n, "vm /v%d\n", i % 10);
  struct nc_fence_file f;
  EXPECT_RC(nc_fence_parse(text, n, &f), NC_E_TOOBIG);
  EXPECT_I64(f.nvms, NC_FENCE_VMS_MAX);
  nc_fence_file_clear(&f);
  free(text);
  char *longline = malloc(NC_FENCE_LINE_MAX + 16);
  memcpy(longline, "vm /", 4);
  memset(longline + 4, 'a', NC_FENCE_LINE_MAX);
  EXPECT_RC(nc_fence_parse(longline, NC_FENCE_LINE_MAX + 4, &f), NC_E_TOOBIG);
  nc_fence_file_clear(&f);
  free(longline);
}

static void read_file(const char *path, char *buf, size_t cap, size_t *len) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  *len = fread(buf, 1, cap, f);
  fclose(f);
}

static void test_write_roundtrip(void **state) {
  (void)state;
  const char *dirs[] = {"/srv/vms/a", "/srv/vms/b"};
  EXPECT_RC(nc_fence_write(tmpdir, 987654321, dirs, 2), 0);
  char path[128], buf[4096];
  snprintf(path, sizeof path, "%s/fence", tmpdir);
  size_t len = 0;
  read_file(path, buf, sizeof buf, &len);
  struct nc_fence_file f;
  EXPECT_RC(nc_fence_parse(buf, len, &f), 0);
  EXPECT_I64(f.deadline_ms, 987654321);
  EXPECT_I64(f.nvms, 2);
  EXPECT_STR(f.vms[1], "/srv/vms/b");
  nc_fence_file_clear(&f);
  const char *evil[] = {"/a\nvm /etc"};
  EXPECT_RC(nc_fence_write(tmpdir, 1, evil, 1), -EINVAL);
  const char *rel[] = {"a"};
  EXPECT_RC(nc_fence_write(tmpdir, 1, rel, 1), -EINVAL);
  /* the old file is intact after refused writes */
  read_file(path, buf, sizeof buf, &len);
  EXPECT_RC(nc_fence_parse(buf, len, &f), 0);
  EXPECT_I64(f.deadline_ms, 987654321);
  nc_fence_file_clear(&f);
}

/* A stand-in for QEMU: a process whose command line carries the run dir's
 * QMP argument, with its pid in run_dir/qemu.pid. */
static pid_t fake_qemu(const char *run_dir) {
  char qmp[1300];
  assert_int_equal(nc__qemu_qmp_arg(run_dir, qmp, sizeof qmp), 0);
  mkdir(run_dir, 0700);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* sh's builtin read on a pipe nobody writes: blocks with no child
     * process (a stray child would hold the test's output open). */
    int p[2];
    if (pipe(p) != 0 || dup2(p[0], 0) < 0)
      _exit(127);
    execl("/bin/sh", "sh", "-c", "read x", qmp, (char *)NULL);
    _exit(127);
  }
  char pidfile[1200];
  snprintf(pidfile, sizeof pidfile, "%s/qemu.pid", run_dir);
  FILE *f = fopen(pidfile, "w");
  assert_non_null(f);
  fprintf(f, "%d\n", (int)pid);
  fclose(f);
  usleep(100 * 1000); /* let exec happen so the cmdline is the new one */
  return pid;
}

static bool exited(pid_t pid, int timeout_ms) {
  for (int t = 0; t <= timeout_ms; t += 20) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)
      return true;
    usleep(20 * 1000);
  }
  return false;
}

static void test_kill_run_dir(void **state) {
  (void)state;
  char a[128], b[128];
  snprintf(a, sizeof a, "%s/vms-a", tmpdir);
  snprintf(b, sizeof b, "%s/vms-b", tmpdir);
  pid_t pa = fake_qemu(a);
  /* b's pid file names a's process: a reused pid must not be killed */
  mkdir(b, 0700);
  char pidfile[200];
  snprintf(pidfile, sizeof pidfile, "%s/qemu.pid", b);
  FILE *f = fopen(pidfile, "w");
  fprintf(f, "%d\n", (int)pa);
  fclose(f);
  EXPECT_RC(nc_fence_kill_run_dir(b), -ESRCH);
  EXPECT_TRUE(!exited(pa, 100));
  EXPECT_RC(nc_fence_kill_run_dir(a), 0);
  EXPECT_TRUE(exited(pa, 2000));
  EXPECT_RC(nc_fence_kill_run_dir(a), -ESRCH);
  char none[128];
  snprintf(none, sizeof none, "%s/nothing", tmpdir);
  EXPECT_RC(nc_fence_kill_run_dir(none), -ESRCH);
}

static void test_guard(void **state) {
  (void)state;
  char vm[128];
  snprintf(vm, sizeof vm, "%s/vms-g", tmpdir);
  pid_t q = fake_qemu(vm);
  const char *dirs[] = {vm};
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  EXPECT_RC(nc_fence_write(tmpdir, nc_fence_now_ms() + 60000, dirs, 1), 0);
  pid_t g = fork();
  assert_true(g >= 0);
  if (g == 0)
    _exit(nc_fence_guard_main(tmpdir) == 0 ? 0 : 1);
  /* deadline ahead: the guard leaves it alone */
  EXPECT_TRUE(!exited(q, 5 * NC_FENCE_POLL_MS));
  /* the lease lapses: killed within a few polls */
  int64_t lapsed = nc_fence_now_ms();
  EXPECT_RC(nc_fence_write(tmpdir, lapsed - 1, dirs, 1), 0);
  EXPECT_TRUE(exited(q, 20 * NC_FENCE_POLL_MS));
  int64_t took = nc_fence_now_ms() - lapsed;
  if (took > 20 * NC_FENCE_POLL_MS)
    fail_msg("fenced %lld ms after the deadline", (long long)took);
  kill(g, SIGTERM);
  int st = 0;
  assert_int_equal(waitpid(g, &st, 0), g);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_good),
      cmocka_unit_test(test_parse_bad),
      cmocka_unit_test(test_parse_caps),
      cmocka_unit_test_setup_teardown(test_write_roundtrip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill_run_dir, setup, teardown),
      cmocka_unit_test_setup_teardown(test_guard, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
