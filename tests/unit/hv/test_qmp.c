/* The QMP client (src/hv/qmp.c) against a scripted fake QMP server running
 * in a thread on the other end of a socketpair (or a unix socket). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "hv/qmp.h"
#include "util/err.h"

#define GREETING                                                                           \
  "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, "       \
  "\"package\": \"Debian 1:10.0.2+ds-2+deb13u1~bpo12+1\"}, \"capabilities\": [\"oob\"]}}\r\n"
#define EVENT(name) \
  "{\"timestamp\": {\"seconds\": 1795821045, \"microseconds\": 1}, \"event\": \"" name "\"}\r\n"

/* ---- the fake server ---------------------------------------------------- */

struct fake {
  int fd;            /* server end */
  pthread_t thread;
  void (*script)(struct fake *);
  char failure[256]; /* set by the server thread; checked after join */
  int arg;           /* per-test knob */
  /* Bytes read but not yet consumed as a line. */
  char buf[8192];
  size_t len;
};

static void fake_fail(struct fake *f, const char *fmt, ...) {
  if (f->failure[0])
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->failure, sizeof f->failure, fmt, ap);
  va_end(ap);
}

static void srv_send(struct fake *f, const char *fmt, ...) {
  char *s;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  size_t off = 0;
  while (off < (size_t)n) {
    ssize_t w = send(f->fd, s + off, (size_t)n - off, MSG_NOSIGNAL);
    if (w <= 0)
      break;
    off += (size_t)w;
  }
  free(s);
}

/* Reads one command line; returns its parsed JSON (caller decrefs) and
 * checks that it executes `want`. NULL on EOF. */
static json_t *srv_recv(struct fake *f, const char *want) {
  for (;;) {
    char *nl = memchr(f->buf, '\n', f->len);
    if (nl) {
      size_t n = (size_t)(nl - f->buf);
      json_error_t jerr;
      json_t *cmd = json_loadb(f->buf, n, 0, &jerr);
      memmove(f->buf, nl + 1, f->len - n - 1);
      f->len -= n + 1;
      if (!cmd) {
        fake_fail(f, "client sent invalid JSON: %s", jerr.text);
        return NULL;
      }
      const char *ex = json_string_value(json_object_get(cmd, "execute"));
      if (!ex || strcmp(ex, want) != 0)
        fake_fail(f, "client sent '%s', expected '%s'", ex ? ex : "(none)", want);
      if (!json_is_integer(json_object_get(cmd, "id")))
        fake_fail(f, "command '%s' has no numeric id", want);
      return cmd;
    }
    if (f->len == sizeof f->buf) {
      fake_fail(f, "command line too long");
      return NULL;
    }
    ssize_t r = recv(f->fd, f->buf + f->len, sizeof f->buf - f->len, 0);
    if (r <= 0)
      return NULL;
    f->len += (size_t)r;
  }
}

static long long id_of(json_t *cmd) { return json_integer_value(json_object_get(cmd, "id")); }

/* Greeting + capabilities. */
static int srv_handshake(struct fake *f) {
  srv_send(f, GREETING);
  json_t *c = srv_recv(f, "qmp_capabilities");
  if (!c)
    return -1;
  if (json_object_get(c, "arguments"))
    fake_fail(f, "qmp_capabilities carried arguments");
  srv_send(f, "{\"return\": {}, \"id\": %lld}\r\n", id_of(c));
  json_decref(c);
  return 0;
}

static void *fake_main(void *arg) {
  struct fake *f = arg;
  f->script(f);
  return NULL;
}

/* Starts script on one end of a socketpair; the client attaches to the
 * other end with timeout_ms. Returns the attach result. */
static int start(struct fake *f, void (*script)(struct fake *), const struct nc_qmp_opts *opts,
                 int timeout_ms, struct nc_qmp **q) {
  memset(f, 0, sizeof *f);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  f->fd = sv[1];
  f->script = script;
  assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
  return nc_qmp_attach_fd(sv[0], opts, timeout_ms, q);
}

static void finish(struct fake *f, struct nc_qmp *q) {
  nc_qmp_close(q); /* unblocks a server stuck writing */
  pthread_join(f->thread, NULL);
  close(f->fd);
  if (f->failure[0])
    fail_msg("fake server: %s", f->failure);
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- scripts and tests -------------------------------------------------- */

static void s_handshake_only(struct fake *f) { srv_handshake(f); }

static void test_handshake(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  assert_int_equal(start(&f, s_handshake_only, NULL, 2000, &q), 0);
  int ma, mi, mc;
  nc_qmp_version(q, &ma, &mi, &mc);
  assert_int_equal(ma, 10);
  assert_int_equal(mi, 0);
  assert_int_equal(mc, 2);
  assert_int_equal(nc_qmp_broken(q), 0);
  assert_true(nc_qmp_fd(q) >= 0);
  finish(&f, q);
}

static void s_execute(struct fake *f) {
  if (srv_handshake(f))
    return;
  json_t *c = srv_recv(f, "query-status");
  if (!c)
    return;
  if (json_object_get(c, "arguments"))
    fake_fail(f, "query-status carried arguments");
  srv_send(f, "{\"return\": {\"status\": \"paused\", \"running\": false}, \"id\": %lld}\r\n",
           id_of(c));
  json_decref(c);
  c = srv_recv(f, "job-dismiss");
  if (!c)
    return;
  const char *jid = json_string_value(json_object_get(json_object_get(c, "arguments"), "id"));
  if (!jid || strcmp(jid, "job-1") != 0)
    fake_fail(f, "job-dismiss arguments lost: %s", jid ? jid : "(none)");
  srv_send(f, "{\"return\": {}, \"id\": %lld}\r\n", id_of(c));
  json_decref(c);
}

static void test_execute_return(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  assert_int_equal(start(&f, s_execute, NULL, 2000, &q), 0);
  json_t *ret = NULL;
  assert_int_equal(nc_qmp_execute(q, "query-status", NULL, 2000, &ret), 0);
  assert_non_null(ret);
  assert_string_equal(json_string_value(json_object_get(ret, "status")), "paused");
  json_decref(ret);
  assert_string_equal(nc_qmp_error_desc(q), "");

  json_t *args = json_pack("{s:s}", "id", "job-1");
  assert_int_equal(nc_qmp_execute(q, "job-dismiss", args, 2000, NULL), 0);
  assert_int_equal(args->refcount, 1); /* not stolen, not leaked */
  json_decref(args);
  finish(&f, q);
}

static void s_errors(struct fake *f) {
  if (srv_handshake(f))
    return;
  json_t *c = srv_recv(f, "snapshot-load");
  if (!c)
    return;
  srv_send(f, "{\"id\": %lld, \"error\": {\"class\": \"GenericError\", \"desc\": \"Snapshot "
              "'nope' does not exist\"}}\r\n", id_of(c));
  json_decref(c);
  c = srv_recv(f, "nope");
  if (!c)
    return;
  srv_send(f, "{\"id\": %lld, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The "
              "command nope has not been found\"}}\r\n", id_of(c));
  json_decref(c);
  c = srv_recv(f, "query-status");
  if (!c)
    return;
  srv_send(f, "{\"return\": {\"status\": \"running\"}, \"id\": %lld}\r\n", id_of(c));
  json_decref(c);
}

static void test_error_reply_mapped(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  assert_int_equal(start(&f, s_errors, NULL, 2000, &q), 0);
  json_t *ret = (json_t *)1;
  assert_int_equal(nc_qmp_execute(q, "snapshot-load", NULL, 2000, &ret), NC_E_HV);
  assert_null(ret);
  assert_string_equal(nc_qmp_error_class(q), "GenericError");
  assert_string_equal(nc_qmp_error_desc(q), "Snapshot 'nope' does not exist");
  assert_int_equal(nc_qmp_execute(q, "nope", NULL, 2000, NULL), -ENOSYS);
  assert_string_equal(nc_qmp_error_class(q), "CommandNotFound");
  /* An error reply leaves the connection usable. */
  assert_int_equal(nc_qmp_broken(q), 0);
  assert_int_equal(nc_qmp_execute(q, "query-status", NULL, 2000, NULL), 0);
  assert_string_equal(nc_qmp_error_desc(q), "");
  finish(&f, q);
}

static void s_events_interleaved(struct fake *f) {
  if (srv_handshake(f))
    return;
  json_t *c = srv_recv(f, "stop");
  if (!c)
    return;
  /* Everything in one write: events before and after the reply. */
  srv_send(f, EVENT("A") EVENT("B") "{\"return\": {}, \"id\": %lld}\r\n" EVENT("C"), id_of(c));
  json_decref(c);
  usleep(100 * 1000);
  srv_send(f, EVENT("D"));
  c = srv_recv(f, "cont"); /* keep the socket open until the client is done */
  json_decref(c);
}

static const char *ev_name(json_t *ev) {
  return json_string_value(json_object_get(ev, "event"));
}

static void test_events_interleaved(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  assert_int_equal(start(&f, s_events_interleaved, NULL, 2000, &q), 0);
  assert_int_equal(nc_qmp_execute(q, "stop", NULL, 2000, NULL), 0);
  json_t *ev;
  assert_int_equal(nc_qmp_next_event(q, &ev), 1);
  assert_string_equal(ev_name(ev), "A");
  assert_non_null(json_object_get(ev, "timestamp"));
  json_decref(ev);
  assert_int_equal(nc_qmp_next_event(q, &ev), 1);
  assert_string_equal(ev_name(ev), "B");
  json_decref(ev);
  /* C was in the same read as the reply, so it may be queued already;
   * D certainly needs a wait. Either way they come in order. */
  const char *want[] = {"C", "D"};
  for (int i = 0; i < 2; i++) {
    if (nc_qmp_next_event(q, &ev) == 0) {
      assert_int_equal(nc_qmp_wait_event(q, 2000), 0);
      assert_int_equal(nc_qmp_next_event(q, &ev), 1);
    }
    assert_string_equal(ev_name(ev), want[i]);
    json_decref(ev);
  }
  assert_int_equal(nc_qmp_next_event(q, &ev), 0);
  assert_null(ev);
  assert_int_equal(nc_qmp_wait_event(q, 0), -ETIMEDOUT);
  assert_int_equal(nc_qmp_events_dropped(q), 0);
  nc_qmp_execute(q, "cont", NULL, 0, NULL);
  finish(&f, q);
}

static void s_event_flood(struct fake *f) {
  if (srv_handshake(f))
    return;
  json_t *c = srv_recv(f, "stop");
  if (!c)
    return;
  for (int i = 0; i < 10; i++)
    srv_send(f, "{\"event\": \"E\", \"data\": {\"n\": %d}}\r\n", i);
  srv_send(f, "{\"return\": {}, \"id\": %lld}\r\n", id_of(c));
  json_decref(c);
}

static void test_event_queue_bounded(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  struct nc_qmp_opts opts = {.max_events = 4};
  assert_int_equal(start(&f, s_event_flood, &opts, 2000, &q), 0);
  assert_int_equal(nc_qmp_execute(q, "stop", NULL, 2000, NULL), 0);
  assert_int_equal(nc_qmp_events_dropped(q), 6);
  json_t *ev;
  for (int n = 6; n < 10; n++) { /* the oldest went first */
    assert_int_equal(nc_qmp_next_event(q, &ev), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(ev, "data"), "n")), n);
    json_decref(ev);
  }
  assert_int_equal(nc_qmp_next_event(q, &ev), 0);
  finish(&f, q);
}

/* Sends a line of f->arg bytes: a JSON string padded to size. */
static void s_oversized(struct fake *f) {
  if (srv_handshake(f))
    return;
  json_t *c = srv_recv(f, "query-qmp-schema");
  if (!c)
    return;
  size_t n = (size_t)f->arg;
  char *big = malloc(n + 3);
  if (!big)
    return;
  memset(big, ' ', n);
  memcpy(big, "{\"return\": \"", 12);
  memcpy(big + n - 2, "\"}", 2);
  memcpy(big + n, "\r\n", 3);
  size_t off = 0;
  while (off < n + 2) { /* stops with EPIPE once the client gives up */
    ssize_t w = send(f->fd, big + off, n + 2 - off, MSG_NOSIGNAL);
    if (w <= 0)
      break;
    off += (size_t)w;
  }
  free(big);
  json_decref(c);
}

static void test_oversized_line_rejected(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  /* The default cap (1 MiB), one byte over. */
  memset(&f, 0, sizeof f);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  f.fd = sv[1];
  f.script = s_oversized;
  f.arg = (1 << 20) + 1;
  assert_int_equal(pthread_create(&f.thread, NULL, fake_main, &f), 0);
  assert_int_equal(nc_qmp_attach_fd(sv[0], NULL, 2000, &q), 0);
  json_t *ret = NULL;
  assert_int_equal(nc_qmp_execute(q, "query-qmp-schema", NULL, 5000, &ret), NC_E_TOOBIG);
  assert_null(ret);
  assert_int_equal(nc_qmp_broken(q), NC_E_TOOBIG);
  assert_non_null(strstr(nc_qmp_error_desc(q), "cap"));
  assert_int_equal(nc_qmp_execute(q, "query-status", NULL, 100, NULL), -ENOTCONN);
  finish(&f, q);
}

static void test_exactly_at_cap_accepted(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  struct nc_qmp_opts opts = {.max_msg_bytes = 4096};
  memset(&f, 0, sizeof f);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  f.fd = sv[1];
  f.script = s_oversized;
  f.arg = 4096;
  assert_int_equal(pthread_create(&f.thread, NULL, fake_main, &f), 0);
  assert_int_equal(nc_qmp_attach_fd(sv[0], &opts, 2000, &q), 0);
  json_t *ret = NULL;
  assert_int_equal(nc_qmp_execute(q, "query-qmp-schema", NULL, 2000, &ret), 0);
  assert_int_equal(strlen(json_string_value(ret)), 4096 - 14);
  json_decref(ret);
  finish(&f, q);
}

static void s_silent_then_late(struct fake *f) {
  if (srv_handshake(f))
    return;
  json_t *c1 = srv_recv(f, "query-status");
  if (!c1)
    return;
  /* Stay silent until the client has given up and sent its next command;
   * then answer the old one first, then the new one. */
  json_t *c2 = srv_recv(f, "query-name");
  if (c2) {
    srv_send(f, "{\"return\": {\"status\": \"stale\"}, \"id\": %lld}\r\n", id_of(c1));
    srv_send(f, "{\"return\": {\"name\": \"vm1\"}, \"id\": %lld}\r\n", id_of(c2));
  }
  json_decref(c1);
  json_decref(c2);
}

static void test_timeout_then_late_reply_dropped(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  assert_int_equal(start(&f, s_silent_then_late, NULL, 2000, &q), 0);
  json_t *ret = (json_t *)1;
  int64_t t0 = mono_ms();
  assert_int_equal(nc_qmp_execute(q, "query-status", NULL, 200, &ret), -ETIMEDOUT);
  int64_t took = mono_ms() - t0;
  if (took < 190 || took > 1500)
    fail_msg("timeout of 200 ms took %lld ms", (long long)took);
  assert_null(ret);
  assert_int_equal(nc_qmp_broken(q), 0);
  assert_non_null(strstr(nc_qmp_error_desc(q), "query-status"));
  /* The late reply to query-status must not be taken for this one. */
  assert_int_equal(nc_qmp_execute(q, "query-name", NULL, 2000, &ret), 0);
  assert_string_equal(json_string_value(json_object_get(ret, "name")), "vm1");
  json_decref(ret);
  finish(&f, q);
}

static void s_close_mid_reply(struct fake *f) {
  if (srv_handshake(f))
    return;
  json_t *c = srv_recv(f, "query-status");
  if (!c)
    return;
  srv_send(f, "{\"return\": {\"status\": \"runn");
  shutdown(f->fd, SHUT_RDWR);
  json_decref(c);
}

static void test_server_closes_mid_reply(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  assert_int_equal(start(&f, s_close_mid_reply, NULL, 2000, &q), 0);
  assert_int_equal(nc_qmp_execute(q, "query-status", NULL, 2000, NULL), -ECONNRESET);
  assert_int_equal(nc_qmp_broken(q), -ECONNRESET);
  assert_int_equal(nc_qmp_execute(q, "query-status", NULL, 2000, NULL), -ENOTCONN);
  assert_int_equal(nc_qmp_wait_event(q, 10), -ENOTCONN);
  finish(&f, q);
}

static void s_silent(struct fake *f) {
  char c;
  recv(f->fd, &c, 1, 0); /* until the client closes */
}

static void test_handshake_timeout(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = (struct nc_qmp *)1;
  int64_t t0 = mono_ms();
  assert_int_equal(start(&f, s_silent, NULL, 150, &q), -ETIMEDOUT);
  assert_true(mono_ms() - t0 < 1500);
  assert_null(q);
  /* attach closed its end, so the server's recv returned. */
  finish(&f, NULL);
}

static void s_no_greeting(struct fake *f) {
  srv_send(f, "{\"return\": {}, \"id\": 1}\r\n");
  s_silent(f);
}

static void s_garbage(struct fake *f) {
  srv_send(f, GREETING "this is not json\r\n");
  s_silent(f);
}

static void test_bad_peer(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  assert_int_equal(start(&f, s_no_greeting, NULL, 2000, &q), NC_E_PROTO);
  finish(&f, NULL);
  assert_int_equal(start(&f, s_garbage, NULL, 2000, &q), NC_E_PROTO);
  finish(&f, NULL);
}

/* The real-socket path: nc_qmp_connect() on a listening unix socket. */
struct listener {
  int lfd;
  pthread_t thread;
  struct fake f;
};

static void *listener_main(void *arg) {
  struct listener *l = arg;
  l->f.fd = accept(l->lfd, NULL, NULL);
  if (l->f.fd >= 0)
    s_handshake_only(&l->f);
  return NULL;
}

static void test_connect_unix(void **state) {
  (void)state;
  char dir[] = "/tmp/nc-qmp-test-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[128];
  snprintf(path, sizeof path, "%s/qmp.sock", dir);
  struct nc_qmp *q = NULL;
  assert_int_equal(nc_qmp_connect(path, NULL, 500, &q), -ENOENT);

  struct listener l;
  memset(&l, 0, sizeof l);
  l.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, path, strlen(path) + 1); /* < 40 bytes */
  assert_int_equal(bind(l.lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  /* Bound but not listening: what a stale socket file looks like. */
  assert_int_equal(nc_qmp_connect(path, NULL, 500, &q), -ECONNREFUSED);
  assert_int_equal(listen(l.lfd, 1), 0);
  assert_int_equal(pthread_create(&l.thread, NULL, listener_main, &l), 0);
  assert_int_equal(nc_qmp_connect(path, NULL, 2000, &q), 0);
  nc_qmp_close(q);
  pthread_join(l.thread, NULL);
  if (l.f.failure[0])
    fail_msg("fake server: %s", l.f.failure);
  close(l.f.fd);
  close(l.lfd);
  unlink(path);
  rmdir(dir);

  char longpath[200];
  memset(longpath, 'a', sizeof longpath - 1);
  longpath[0] = '/';
  longpath[sizeof longpath - 1] = '\0';
  assert_int_equal(nc_qmp_connect(longpath, NULL, 100, &q), -ENAMETOOLONG);
}

static void test_bad_arguments(void **state) {
  (void)state;
  struct fake f;
  struct nc_qmp *q = NULL;
  assert_int_equal(start(&f, s_handshake_only, NULL, 2000, &q), 0);
  json_t *arr = json_array();
  assert_int_equal(nc_qmp_execute(q, "stop", arr, 100, NULL), NC_E_INVALID);
  assert_int_equal(nc_qmp_execute(q, NULL, NULL, 100, NULL), NC_E_INVALID);
  json_decref(arr);
  assert_int_equal(nc_qmp_broken(q), 0);
  finish(&f, q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handshake),
      cmocka_unit_test(test_execute_return),
      cmocka_unit_test(test_error_reply_mapped),
      cmocka_unit_test(test_events_interleaved),
      cmocka_unit_test(test_event_queue_bounded),
      cmocka_unit_test(test_oversized_line_rejected),
      cmocka_unit_test(test_exactly_at_cap_accepted),
      cmocka_unit_test(test_timeout_then_late_reply_dropped),
      cmocka_unit_test(test_server_closes_mid_reply),
      cmocka_unit_test(test_handshake_timeout),
      cmocka_unit_test(test_bad_peer),
      cmocka_unit_test(test_connect_unix),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
