/* The console relay over socketpairs and pipes, and "vm console" end to
 * end against a unix socket served by a thread standing in for QEMU's
 * serial chardev. */
#include "harness.h"

#include "cli/console.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

static size_t read_all(int fd, char *buf, size_t cap) {
  size_t len = 0;
  ssize_t n;
  while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0)
    len += (size_t)n;
  buf[len] = '\0';
  return len;
}

struct fds {
  int in[2], out[2], sock[2];
};

static void open_fds(struct fds *f) {
  assert_int_equal(pipe(f->in), 0);
  assert_int_equal(pipe(f->out), 0);
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->sock), 0);
}

static void close_fds(struct fds *f) {
  int *all = &f->in[0];
  for (int i = 0; i < 6; i++)
    if (all[i] >= 0)
      close(all[i]);
}

static struct nc_cli_relay relay_for(struct fds *f, bool escape) {
  return (struct nc_cli_relay){.in_fd = f->in[0],
                               .out_fd = f->out[1],
                               .sock_fd = f->sock[0],
                               .escape = escape,
                               .drain_quiet_ms = 50,
                               .drain_max_ms = 2000,
                               .clock = nc_clock_system()};
}

static void test_relay_piped_input(void **state) {
  struct fds f;
  char buf[256];
  enum nc_cli_relay_end end;
  open_fds(&f);
  /* The guest said something; the user's input is queued, then ends. */
  assert_int_equal(write(f.sock[1], "login: ", 7), 7);
  assert_int_equal(write(f.in[1], "root\n\x1d" "after", 11), 11);
  close(f.in[1]);
  f.in[1] = -1;
  struct nc_cli_relay r = relay_for(&f, false);
  assert_int_equal(nc_cli_console_relay(&r, &end), 0);
  assert_int_equal(end, NC_CLI_RELAY_INPUT_DONE);
  /* Not interactive: Ctrl-] is just a byte. */
  shutdown(f.sock[0], SHUT_WR);
  assert_int_equal(read_all(f.sock[1], buf, sizeof buf), 11);
  assert_memory_equal(buf, "root\n\x1d" "after", 11);
  close(f.out[1]);
  f.out[1] = -1;
  read_all(f.out[0], buf, sizeof buf);
  assert_string_equal(buf, "login: ");
  close_fds(&f);
}

static void test_relay_escape(void **state) {
  struct fds f;
  char buf[256];
  enum nc_cli_relay_end end;
  open_fds(&f);
  assert_int_equal(write(f.in[1], "ls\r\x1d" "rm -rf\r", 11), 11);
  struct nc_cli_relay r = relay_for(&f, true);
  assert_int_equal(nc_cli_console_relay(&r, &end), 0);
  assert_int_equal(end, NC_CLI_RELAY_ESCAPE);
  shutdown(f.sock[0], SHUT_WR);
  read_all(f.sock[1], buf, sizeof buf);
  assert_string_equal(buf, "ls\r"); /* nothing at or after the escape */
  close_fds(&f);
}

static void test_relay_peer_closed(void **state) {
  struct fds f;
  char buf[64];
  enum nc_cli_relay_end end;
  open_fds(&f);
  assert_int_equal(write(f.sock[1], "bye\n", 4), 4);
  close(f.sock[1]);
  f.sock[1] = -1;
  struct nc_cli_relay r = relay_for(&f, true);
  assert_int_equal(nc_cli_console_relay(&r, &end), 0);
  assert_int_equal(end, NC_CLI_RELAY_PEER_CLOSED);
  close(f.out[1]);
  f.out[1] = -1;
  read_all(f.out[0], buf, sizeof buf);
  assert_string_equal(buf, "bye\n");
  close_fds(&f);
}

static void test_relay_stop_flag(void **state) {
  struct fds f;
  enum nc_cli_relay_end end;
  volatile sig_atomic_t stop = 1;
  open_fds(&f);
  struct nc_cli_relay r = relay_for(&f, true);
  r.stop = &stop;
  assert_int_equal(nc_cli_console_relay(&r, &end), 0);
  assert_int_equal(end, NC_CLI_RELAY_SIGNAL);
  close_fds(&f);
}

static void test_relay_drain_max(void **state) {
  /* drain_max bounds the wait even when quiet is long. */
  struct fds f;
  enum nc_cli_relay_end end;
  open_fds(&f);
  close(f.in[1]);
  f.in[1] = -1;
  struct nc_cli_relay r = relay_for(&f, false);
  r.drain_quiet_ms = 60000;
  r.drain_max_ms = 30;
  int64_t t0 = nc_mono_ms(nc_clock_system());
  assert_int_equal(nc_cli_console_relay(&r, &end), 0);
  assert_int_equal(end, NC_CLI_RELAY_INPUT_DONE);
  assert_true(nc_mono_ms(nc_clock_system()) - t0 < 5000);
  close_fds(&f);
}

static void test_connect_errors(void **state) {
  assert_int_equal(nc_cli_console_connect("/nonexistent/dir/serial.sock"), -ENOENT);
  char long_path[300];
  memset(long_path, 'a', sizeof long_path - 1);
  long_path[0] = '/';
  long_path[sizeof long_path - 1] = '\0';
  assert_int_equal(nc_cli_console_connect(long_path), -ENAMETOOLONG);
}

/* A stand-in for QEMU's serial socket: greets, then records what arrives
 * until the client hangs up. */
struct guest {
  int listen_fd;
  char got[256];
};

static void *guest_main(void *arg) {
  struct guest *g = arg;
  int fd = accept(g->listen_fd, NULL, NULL);
  if (fd < 0)
    return NULL;
  if (write(fd, "Debian login: ", 14) != 14)
    abort();
  read_all(fd, g->got, sizeof g->got);
  close(fd);
  return NULL;
}

static void test_vm_console_command(void **state) {
  struct harness h;
  struct guest g = {0};
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  char dir[] = "/tmp/nc-console-XXXXXX", vm[512], out[256];
  int in[2], outp[2];
  pthread_t th;

  assert_non_null(mkdtemp(dir));
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s/serial.sock", dir);
  g.listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_int_equal(bind(g.listen_fd, (struct sockaddr *)&addr, sizeof addr), 0);
  assert_int_equal(listen(g.listen_fd, 1), 0);
  assert_int_equal(pthread_create(&th, NULL, guest_main, &g), 0);

  assert_int_equal(pipe(in), 0);
  assert_int_equal(pipe(outp), 0);
  assert_int_equal(write(in[1], "root\nuname\n", 11), 11);
  close(in[1]);

  h_init(&h);
  snprintf(vm, sizeof vm,
           "{\"name\":\"web-1\",\"state\":\"running\",\"console\":{\"socket\":\"%s\"}}",
           addr.sun_path);
  h_reply(&h, 200, vm);
  h.io.in_fd = in[0];
  h.io.out_fd = outp[1];
  h_run(&h, "vm", "console", "web-1", "--drain", "100ms", NULL);
  assert_int_equal(h.rc, 0);
  assert_string_equal(h.reqs[0].path, "/v1/vms/web-1");
  assert_string_equal(h.err, ""); /* no hint line without a terminal */
  pthread_join(th, NULL);
  assert_string_equal(g.got, "root\nuname\n");
  close(outp[1]);
  read_all(outp[0], out, sizeof out);
  assert_string_equal(out, "Debian login: ");

  close(in[0]);
  close(outp[0]);
  close(g.listen_fd);
  unlink(addr.sun_path);
  rmdir(dir);
  h_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_relay_piped_input), cmocka_unit_test(test_relay_escape),
      cmocka_unit_test(test_relay_peer_closed), cmocka_unit_test(test_relay_stop_flag),
      cmocka_unit_test(test_relay_drain_max),   cmocka_unit_test(test_connect_errors),
      cmocka_unit_test(test_vm_console_command),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
