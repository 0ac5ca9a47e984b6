/* The real HTTP path: nc_cli_main with the libcurl transport against a
 * libmicrohttpd server (no hand-written HTTP) on loopback TCP and on a unix
 * socket. Checks what the CLI sends (method, path, query, body, headers,
 * bearer token) and the exit status for 2xx, 4xx, a missing daemon, an
 * oversized answer and a daemon that does not answer in time. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
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

#include "checks.h"


#define MAX_SEEN 16

struct seen {
  char method[16], url[256], wait_s[16], tail_bytes[16];
  char auth[128], ctype[128], accept[128];
  char body[1024];
};

struct route {
  const char *method, *url;
  unsigned status;
  const char *ctype;
  const char *body;
  size_t body_len; /* 0: strlen(body) */
  unsigned delay_ms;
};

struct server {
  struct MHD_Daemon *d;
  pthread_mutex_t mu;
  struct seen seen[MAX_SEEN];
  int nseen;
  const struct route *routes;
  char sock_path[108];
  char dir[64];
  int port;
};

struct upload {
  char body[1024];
  size_t len;
};

static void copy_header(struct MHD_Connection *c, const char *name, char *dst, size_t n) {
  const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
  snprintf(dst, n, "%s", v ? v : "");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_size, void **con_cls) {
  struct server *s = cls;
  struct upload *up = *con_cls;
  (void)version;

  if (up == NULL) {
    up = calloc(1, sizeof *up);
    *con_cls = up;
    return MHD_YES;
  }
  if (*upload_size > 0) {
    size_t n = *upload_size < sizeof up->body - 1 - up->len ? *upload_size
                                                              : sizeof up->body - 1 - up->len;
    memcpy(up->body + up->len, upload_data, n);
    up->len += n;
    *upload_size = 0;
    return MHD_YES;
  }

  pthread_mutex_lock(&s->mu);
  if (s->nseen < MAX_SEEN) {
    struct seen *r = &s->seen[s->nseen++];
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->url, sizeof r->url, "%s", url);
    const char *w = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait_s");
    snprintf(r->wait_s, sizeof r->wait_s, "%s", w ? w : "");
    w = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "tail_bytes");
    snprintf(r->tail_bytes, sizeof r->tail_bytes, "%s", w ? w : "");
    copy_header(c, MHD_HTTP_HEADER_AUTHORIZATION, r->auth, sizeof r->auth);
    copy_header(c, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype, sizeof r->ctype);
    copy_header(c, MHD_HTTP_HEADER_ACCEPT, r->accept, sizeof r->accept);
    memcpy(r->body, up->body, up->len + 1);
  }
  const struct route *rt = NULL;
  for (const struct route *x = s->routes; x != NULL && x->method != NULL; x++)
    if (strcmp(x->method, method) == 0 && strcmp(x->url, url) == 0) {
      rt = x;
      break;
    }
  pthread_mutex_unlock(&s->mu);

  static const char k_404[] = "{\"error\":{\"code\":\"not_found\",\"message\":\"no route\"}}";
  unsigned status = rt ? rt->status : 404;
  const char *body = rt ? rt->body : k_404;
  size_t len = rt && rt->body_len ? rt->body_len : strlen(body);
  if (rt != NULL && rt->delay_ms > 0)
    usleep(rt->delay_ms * 1000);
  struct MHD_Response *resp =
      MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                          rt && rt->ctype ? rt->ctype : "application/json");
  enum MHD_Result ret = MHD_queue_response(c, status, resp);
  MHD_destroy_response(resp);
  return ret;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)c;
  (void)toe;
  free(*con_cls);
  *con_cls = NULL;
}

/* Starts MHD on a listening socket we made: loopback TCP (unix_sock false)
 * or a unix socket in a fresh directory. */
static void server_start(struct server *s, const struct route *routes, bool unix_sock) {
  int fd;
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  s->routes = routes;
  if (unix_sock) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(s->dir, sizeof s->dir, "/tmp/nc-cli-http-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->sock_path, sizeof s->sock_path, "%s/api.sock", s->dir);
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", s->sock_path);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
  } else {
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t alen = sizeof addr;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &alen), 0);
    s->port = ntohs(addr.sin_port);
  }
  assert_int_equal(listen(fd, 16), 0);
  s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                          NULL, handle, s, MHD_OPTION_LISTEN_SOCKET, fd,
                          MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
  assert_non_null(s->d);
}

static void server_stop(struct server *s) {
  MHD_stop_daemon(s->d);
  if (s->sock_path[0]) {
    unlink(s->sock_path);
    rmdir(s->dir);
  }
  pthread_mutex_destroy(&s->mu);
}

/* A harness using the real transport (io.transport NULL). */
static void real_init(struct harness *h) {
  h_init(h);
  h->io.transport = NULL;
  h->io.sleep_ms = NULL;
  h->io.clock = NULL;
}

static void endpoint_of(const struct server *s, char *buf, size_t n) {
  if (s->sock_path[0])
    snprintf(buf, n, "unix:%s", s->sock_path);
  else
    snprintf(buf, n, "http://127.0.0.1:%d", s->port);
}

static const char k_vms[] =
    "{\"vms\":[{\"name\":\"web-1\",\"state\":\"running\",\"vcpus\":1,\"memory\":\"256M\","
    "\"image\":\"nc-test\",\"node\":\"host-a\"}]}";

static void test_tcp_with_token(void **state) {
  static const struct route routes[] = {{"GET", "/v1/vms", 200, NULL, k_vms, 0, 0}, {NULL}};
  struct server s;
  struct harness h;
  char ep[128];
  server_start(&s, routes, false);
  endpoint_of(&s, ep, sizeof ep);
  real_init(&h);
  h_run(&h, "--endpoint", ep, "--token", "s3cret", "vm", "list", NULL);
  assert_int_equal(h.rc, 0);
  check_contains(h.out, "web-1  running  1      256M    nc-test  host-a  -");
  assert_int_equal(s.nseen, 1);
  assert_string_equal(s.seen[0].method, "GET");
  assert_string_equal(s.seen[0].url, "/v1/vms");
  assert_string_equal(s.seen[0].auth, "Bearer s3cret");
  assert_string_equal(s.seen[0].accept, "application/json");
  server_stop(&s);
  h_free(&h);
}

static void test_token_sources(void **state) {
  static const struct route routes[] = {{"GET", "/v1/vms", 200, NULL, k_vms, 0, 0}, {NULL}};
  struct server s;
  struct harness h;
  char ep[128], dir[] = "/tmp/nc-cli-tok-XXXXXX", path[256];
  server_start(&s, routes, false);
  endpoint_of(&s, ep, sizeof ep);
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/api.token", dir);
  FILE *f = fopen(path, "w");
  fputs("  from-data-dir\n", f);
  fclose(f);

  real_init(&h);
  /* <data-dir>/api.token is read for an http endpoint... */
  h_run(&h, "--endpoint", ep, "--data-dir", dir, "vm", "list", NULL);
  assert_int_equal(h.rc, 0);
  assert_string_equal(s.seen[0].auth, "Bearer from-data-dir");
  /* ...$NOVACRON_TOKEN wins over it... */
  h.io.env_token = "from-env";
  h_run(&h, "--endpoint", ep, "--data-dir", dir, "vm", "list", NULL);
  assert_string_equal(s.seen[1].auth, "Bearer from-env");
  /* ...and --token-file over the environment. */
  h_run(&h, "--endpoint", ep, "--token-file", path, "vm", "list", NULL);
  assert_string_equal(s.seen[2].auth, "Bearer from-data-dir");
  h.io.env_token = NULL;
  /* $NOVACRON_ENDPOINT and $NOVACRON_DATA_DIR do the same as the flags. */
  h.io.env_endpoint = ep;
  h.io.env_data_dir = dir;
  h_run(&h, "vm", "list", NULL);
  assert_int_equal(h.rc, 0);
  assert_string_equal(s.seen[3].auth, "Bearer from-data-dir");
  assert_int_equal(s.nseen, 4);

  unlink(path);
  rmdir(dir);
  server_stop(&s);
  h_free(&h);
}

static const char k_created[] =
    "{\"vm\":{\"name\":\"web-1\"},\"operation\":{\"id\":\"op-1\",\"kind\":\"vm.start\","
    "\"target\":\"web-1\",\"status\":\"pending\"}}";
static const char k_op_done[] =
    "{\"id\":\"op-1\",\"kind\":\"vm.start\",\"target\":\"web-1\",\"status\":\"succeeded\","
    "\"progress\":1}";

static void test_unix_create_and_wait(void **state) {
  static const struct route routes[] = {
      {"POST", "/v1/vms", 201, NULL, k_created, 0, 0},
      {"GET", "/v1/operations/op-1", 200, NULL, k_op_done, 0, 0},
      {NULL}};
  struct server s;
  struct harness h;
  char ep[160];
  server_start(&s, routes, true);
  endpoint_of(&s, ep, sizeof ep);
  real_init(&h);
  h_run(&h, "--endpoint", ep, "vm", "create", "web-1", "--image", "nc-test", "--memory", "256M",
        "--start", NULL);
  if (h.rc != 0)
    fail_msg("exit %d: %s", h.rc, h.err);
  assert_string_equal(h.out, "vm \"web-1\" created and started\n");
  assert_int_equal(s.nseen, 2);
  assert_string_equal(s.seen[0].method, "POST");
  assert_string_equal(s.seen[0].ctype, "application/json");
  assert_string_equal(s.seen[0].auth, ""); /* the unix socket needs no token */
  assert_string_equal(s.seen[0].body, "{\"name\":\"web-1\",\"image\":\"nc-test\","
                                      "\"memory\":\"256M\",\"start\":true}");
  assert_string_equal(s.seen[1].method, "GET");
  assert_string_equal(s.seen[1].url, "/v1/operations/op-1");
  assert_string_equal(s.seen[1].wait_s, "30");
  server_stop(&s);
  h_free(&h);
}

static void test_methods_and_empty_bodies(void **state) {
  static const char op[] = "{\"operation\":{\"id\":\"op-1\",\"status\":\"succeeded\"}}";
  static const struct route routes[] = {
      {"POST", "/v1/vms/web-1/start", 202, NULL, op, 0, 0},
      {"DELETE", "/v1/vms/web-1/snapshots/s 1", 202, NULL, op, 0, 0},
      {"GET", "/v1/vms/web-1/console", 200, "text/plain", "login: ", 0, 0},
      {NULL}};
  struct server s;
  struct harness h;
  char ep[160];
  server_start(&s, routes, true);
  endpoint_of(&s, ep, sizeof ep);
  real_init(&h);
  h_run(&h, "--endpoint", ep, "vm", "start", "web-1", NULL);
  assert_int_equal(h.rc, 0);
  assert_string_equal(s.seen[0].method, "POST");
  assert_string_equal(s.seen[0].body, "");
  assert_string_equal(s.seen[0].ctype, ""); /* no body, no content type */
  h_run(&h, "--endpoint", ep, "vm", "snapshot-delete", "web-1", "s 1", NULL);
  assert_int_equal(h.rc, 0);
  assert_string_equal(s.seen[1].method, "DELETE");
  assert_string_equal(s.seen[1].url, "/v1/vms/web-1/snapshots/s 1"); /* MHD decodes %20 */
  h_run(&h, "--endpoint", ep, "vm", "console", "web-1", "--log", "--tail-bytes", "1K", NULL);
  assert_int_equal(h.rc, 0);
  assert_string_equal(h.out, "login: ");
  assert_string_equal(s.seen[2].tail_bytes, "1024");
  assert_string_equal(s.seen[2].accept, "text/plain");
  server_stop(&s);
  h_free(&h);
}

static void test_4xx(void **state) {
  static const struct route routes[] = {
      {"POST", "/v1/vms/web-1/pause", 409, NULL,
       "{\"error\":{\"code\":\"conflict\",\"message\":\"vm \\\"web-1\\\" is stopped\"}}", 0, 0},
      {"GET", "/v1/node", 503, "text/plain", "not ready yet\n", 0, 0},
      {NULL}};
  struct server s;
  struct harness h;
  char ep[128];
  server_start(&s, routes, false);
  endpoint_of(&s, ep, sizeof ep);
  real_init(&h);
  h_run(&h, "--endpoint", ep, "vm", "pause", "web-1", NULL);
  assert_int_equal(h.rc, 1);
  assert_string_equal(h.err, "novacron: vm \"web-1\" is stopped\n");
  h_run(&h, "--endpoint", ep, "node", "show", NULL);
  assert_int_equal(h.rc, 1);
  assert_string_equal(h.err, "novacron: HTTP 503: not ready yet\n");
  h_run(&h, "--endpoint", ep, "op", "show", "op-x", NULL); /* no route: 404 */
  assert_int_equal(h.rc, 1);
  assert_string_equal(h.err, "novacron: no route\n");
  server_stop(&s);
  h_free(&h);
}

static void test_unreachable(void **state) {
  struct harness h;
  char ep[160], dir[] = "/tmp/nc-cli-dead-XXXXXX", path[96];
  real_init(&h);

  /* A TCP port nobody listens on. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET};
  socklen_t alen = sizeof addr;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &alen), 0);
  close(fd);
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", ntohs(addr.sin_port));
  h_run(&h, "--endpoint", ep, "vm", "list", NULL);
  assert_int_equal(h.rc, 3);
  check_contains(h.err, "cannot reach novacrond at http://127.0.0.1:");
  check_contains(h.err, "hint:");

  /* No socket in the data directory. */
  assert_non_null(mkdtemp(dir));
  h_run(&h, "--data-dir", dir, "vm", "list", NULL);
  assert_int_equal(h.rc, 3);
  check_contains(h.err, "no socket there");
  check_contains(h.err, "--data-dir");

  /* A stale socket file: connection refused. */
  struct sockaddr_un ua = {.sun_family = AF_UNIX};
  snprintf(path, sizeof path, "%s/api.sock", dir);
  snprintf(ua.sun_path, sizeof ua.sun_path, "%s", path);
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&ua, sizeof ua), 0);
  close(fd);
  h_run(&h, "--data-dir", dir, "vm", "list", NULL);
  assert_int_equal(h.rc, 3);
  check_contains(h.err, "Connection refused");
  unlink(path);
  rmdir(dir);
  h_free(&h);
}

static void test_too_big(void **state) {
  size_t len = NC_CLI_BODY_MAX + 100;
  char *big = malloc(len);
  memset(big, ' ', len);
  big[0] = '{';
  big[len - 1] = '}';
  const struct route routes[] = {{"GET", "/v1/vms", 200, NULL, big, len, 0}, {NULL}};
  struct server s;
  struct harness h;
  char ep[128];
  server_start(&s, routes, false);
  endpoint_of(&s, ep, sizeof ep);
  real_init(&h);
  h_run(&h, "--endpoint", ep, "vm", "list", NULL);
  assert_int_equal(h.rc, 1);
  check_contains(h.err, "larger than the 16 MiB cap");
  server_stop(&s);
  h_free(&h);
  free(big);
}

static void test_timeout(void **state) {
  static const struct route routes[] = {{"GET", "/v1/vms", 200, NULL, k_vms, 0, 1500}, {NULL}};
  struct server s;
  struct harness h;
  char ep[128];
  server_start(&s, routes, false);
  endpoint_of(&s, ep, sizeof ep);
  real_init(&h);
  h_run(&h, "--endpoint", ep, "--timeout", "500ms", "vm", "list", NULL);
  assert_int_equal(h.rc, 3);
  check_contains(h.err, "did not answer in time");
  server_stop(&s);
  h_free(&h);
}

static void test_events_stream(void **state) {
  static const char sse[] =
      ": hi\n\nevent: vm.state\ndata: {\"vm\":\"web-1\",\"from\":\"running\",\"to\":\"stopped\","
      "\"reason\":\"guest shutdown\",\"at\":\"A\"}\n\n";
  static const struct route routes[] = {
      {"GET", "/v1/events", 200, "text/event-stream", sse, 0, 0}, {NULL}};
  struct server s;
  struct harness h;
  char ep[160];
  server_start(&s, routes, true);
  endpoint_of(&s, ep, sizeof ep);
  real_init(&h);
  h_run(&h, "--endpoint", ep, "events", NULL);
  assert_int_equal(h.rc, 3); /* the server ended the stream */
  assert_string_equal(h.out, "A  vm.state   web-1  running -> stopped  (guest shutdown)\n");
  assert_string_equal(s.seen[0].accept, "text/event-stream");
  server_stop(&s);
  h_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tcp_with_token),
      cmocka_unit_test(test_token_sources),
      cmocka_unit_test(test_unix_create_and_wait),
      cmocka_unit_test(test_methods_and_empty_bodies),
      cmocka_unit_test(test_4xx),
      cmocka_unit_test(test_unreachable),
      cmocka_unit_test(test_too_big),
      cmocka_unit_test(test_timeout),
      cmocka_unit_test(test_events_stream),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
