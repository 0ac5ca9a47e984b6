/* Process helpers (src/hv/proc.c) with small system programs. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "hv/proc.h"
#include "util/err.h"

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char g_dir[64];

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/nc-proc-test-XXXXXX");
  return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char path[128];
  snprintf(path, sizeof path, "%s/log", g_dir);
  unlink(path);
  rmdir(g_dir);
  return 0;
}

static void find(const char *name, char *out) {
  assert_int_equal(nc__proc_find_program(name, out, 4096), 0);
}

static void test_find_program(void **state) {
  (void)state;
  char p[4096];
  find("sleep", p);
  assert_true(p[0] == '/');
  assert_int_equal(nc__proc_find_program("no-such-program-nc", p, sizeof p), -ENOENT);
  assert_int_equal(nc__proc_find_program("/etc/passwd", p, sizeof p), -EACCES);
  assert_int_equal(nc__proc_find_program("", p, sizeof p), NC_E_INVALID);
}

static void test_spawn_detached(void **state) {
  (void)state;
  char sleep_bin[4096], log[128];
  find("sleep", sleep_bin);
  snprintf(log, sizeof log, "%s/log", g_dir);
  char *argv[] = {sleep_bin, "30", NULL};
  pid_t pid;
  int pidfd;
  assert_int_equal(nc__proc_spawn_detached(argv, log, &pid, &pidfd), 0);
  assert_true(pid > 0);
  assert_int_equal(nc__proc_alive(pid, pidfd), 1);
  assert_int_equal(nc__proc_alive(pid, -1), 1);
  /* A session of its own, of which it is not the leader (double fork). */
  assert_true(getsid(pid) != getsid(0));
  assert_true(getsid(pid) != pid);
  assert_int_equal(nc__proc_cmdline_has_prefix(pid, "30"), 1);
  assert_int_equal(nc__proc_cmdline_has_prefix(pid, "31"), 0);
  uint64_t rss = 0, cpu = 1;
  assert_int_equal(nc__proc_rss_bytes(pid, &rss), 0);
  assert_true(rss > 0);
  assert_int_equal(nc__proc_cpu_ns(pid, &cpu), 0);
  int st = nc__proc_state(pid);
  assert_true(st == 'S' || st == 'R');

  assert_int_equal(nc__proc_wait_gone(pid, pidfd, 50), -ETIMEDOUT);
  assert_int_equal(nc__proc_signal(pid, pidfd, SIGKILL), 0);
  assert_int_equal(nc__proc_wait_gone(pid, pidfd, 5000), 0);
  assert_int_equal(nc__proc_alive(pid, pidfd), 0);
  /* Without the pidfd too: a zombie nobody reaps still counts as gone. */
  assert_int_equal(nc__proc_alive(pid, -1), 0);
  assert_int_equal(nc__proc_wait_gone(pid, -1, 100), 0);
  if (pidfd >= 0)
    close(pidfd);
}

static void test_spawn_closes_fds(void **state) {
  (void)state;
  char ls_bin[4096], log[128];
  find("ls", ls_bin);
  snprintf(log, sizeof log, "%s/log", g_dir);
  /* A descriptor without CLOEXEC, as a careless library might leave. */
  int canary = open("/dev/null", O_RDONLY);
  assert_true(canary >= 0);
  assert_int_equal(dup2(canary, 57), 57);
  char *argv[] = {ls_bin, "-1", "/proc/self/fd", NULL};
  pid_t pid;
  int pidfd;
  assert_int_equal(nc__proc_spawn_detached(argv, log, &pid, &pidfd), 0);
  assert_int_equal(nc__proc_wait_gone(pid, pidfd, 5000), 0);
  close(57);
  close(canary);
  if (pidfd >= 0)
    close(pidfd);
  char out[4096];
  assert_true(nc__proc_read_small(log, out, sizeof out) > 0);
  /* 0-2 are stdio and 3 is ls's own handle on /proc/self/fd. */
  char *save = NULL;
  for (char *tok = strtok_r(out, "\n", &save); tok; tok = strtok_r(NULL, "\n", &save)) {
    if (atoi(tok) > 3)
      fail_msg("descriptor %s leaked into the spawned process", tok);
  }
}

static void test_spawn_missing_binary(void **state) {
  (void)state;
  char log[128];
  snprintf(log, sizeof log, "%s/log", g_dir);
  char *argv[] = {"/nonexistent/qemu", NULL};
  pid_t pid;
  int pidfd;
  assert_int_equal(nc__proc_spawn_detached(argv, log, &pid, &pidfd), -ENOENT);
  assert_int_equal(pidfd, -1);
}

static void test_run(void **state) {
  (void)state;
  char echo_bin[4096], sleep_bin[4096];
  find("echo", echo_bin);
  find("sleep", sleep_bin);
  char out[64];
  int code;
  char *echo_argv[] = {echo_bin, "hello", NULL};
  assert_int_equal(nc__proc_run(echo_argv, 5000, out, sizeof out, &code), 0);
  assert_int_equal(code, 0);
  assert_string_equal(out, "hello\n");

  char tiny[4];
  assert_int_equal(nc__proc_run(echo_argv, 5000, tiny, sizeof tiny, &code), 0);
  assert_string_equal(tiny, "hel"); /* truncated, terminated */

  char *false_argv[] = {sleep_bin, "not-a-number", NULL};
  assert_int_equal(nc__proc_run(false_argv, 5000, out, sizeof out, &code), 0);
  assert_int_not_equal(code, 0);

  char *slow[] = {sleep_bin, "10", NULL};
  int64_t t0 = mono_ms();
  assert_int_equal(nc__proc_run(slow, 200, out, sizeof out, &code), -ETIMEDOUT);
  assert_true(mono_ms() - t0 < 2000);

  char *missing[] = {"/nonexistent/x", NULL};
  assert_int_equal(nc__proc_run(missing, 200, out, sizeof out, &code), -ENOENT);
}

static void test_read_helpers(void **state) {
  (void)state;
  char path[128];
  snprintf(path, sizeof path, "%s/log", g_dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("line one\nline two\nthe end", f);
  fclose(f);
  char buf[8];
  assert_int_equal(nc__proc_read_tail(path, buf, sizeof buf), 7);
  assert_string_equal(buf, "the end");
  assert_int_equal(nc__proc_read_small(path, buf, sizeof buf), NC_E_TOOBIG);
  char big[64];
  assert_int_equal(nc__proc_read_small(path, big, sizeof big), 25);
  assert_int_equal(nc__proc_read_small("/nonexistent", big, sizeof big), -ENOENT);
  assert_int_equal(nc__proc_state(999999999), -ESRCH);
  assert_int_equal(nc__proc_cmdline_has_prefix(999999999, "x"), -ESRCH);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_find_program),
      cmocka_unit_test(test_spawn_detached),
      cmocka_unit_test(test_spawn_closes_fds),
      cmocka_unit_test(test_spawn_missing_binary),
      cmocka_unit_test(test_run),
      cmocka_unit_test(test_read_helpers),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
