/* The REST API (src/api/api.h) end to end over real sockets: a temporary
 * unix socket and a loopback TCP listener on a free port, in front of the
 * real VM manager on the fake hypervisor driver (tests/unit/vm/fake_hv.c),
 * spoken to with libcurl. Also checks that every route in the table is in
 * docs/openapi.yaml, and that /metrics passes `promtool check metrics`. */
#include "nc_test.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <sys/wait.h>

#include "api/api.h"
#include "vm_world.h"
#include "obs/metrics.h"
#include "store/store.h"
#include "vm/events.h"
#include "vm/image.h"
#include "vm/manager.h"
#include "vm/ops.h"

#define TOKEN "s3cret-token-0123456789abcdef"

struct fx {
  struct nct_world w;
  char sock[256];
  struct nc_vmm *vmm;
  struct nc_api *api;
  int port;
  bool ready; /* what the readiness callback answers */
};

static json_t *readiness(void *data) {
  struct fx *f = data;
  return json_pack("{s:b, s:[{s:s, s:s}]}", "ready", f->ready, "components", "name", "store",
                   "status", f->ready ? "up" : "failed");
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f || nct_world_init(&f->w, "api", 99, NULL) != 0)
    return -1;
  snprintf(f->sock, sizeof f->sock, "%s/api.sock", f->w.dir);
  f->ready = true;
  struct nc_vmm_config vc = {
      .data_dir = f->w.data_dir,
      .node_name = "api-node",
      .store = f->w.store,
      .hv = &f->w.hv.base,
      .disk = nct_world_disk_ops(&f->w),
      .clock = &f->w.clock.clock,
      .rand = &f->w.rand.r,
      .metrics = f->w.metrics,
      .events = f->w.events,
      .ops = f->w.ops,
      .reconcile_interval_ms = 50,
  };
  if (nc_vmm_new(&vc, &f->vmm) || nc_vmm_start(f->vmm))
    return -1;
  struct nc_api_config ac = {
      .vmm = f->vmm,
      .ops = f->w.ops,
      .events = f->w.events,
      .metrics = f->w.metrics,
      .store = f->w.store,
      .unix_path = f->sock,
      .listen_host = "127.0.0.1",
      .listen_port = 0,
      .token = TOKEN,
      .readiness = readiness,
      .readiness_data = f,
  };
  if (nc_api_start(&ac, &f->api) != 0)
    return -1;
  f->port = nc_api_tcp_port(f->api);
  if (f->port <= 0)
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  fake_hv_open_gate(&f->w.hv);
  nc_api_stop(f->api); /* closes the event bus: streams end */
  nc_vmm_free(f->vmm);
  nct_world_fini(&f->w);
  free(f);
  return 0;
}

/* ---- HTTP --------------------------------------------------------------- */

enum via { TCP_NO_TOKEN, TCP_TOKEN, UNIX_SOCK };

struct resp {
  CURLcode rc;
  long status;
  char *body;
  size_t len;
  char ctype[128];
  char allow[128];
};

static size_t on_body(char *p, size_t size, size_t n, void *data) {
  struct resp *r = data;
  size_t k = size * n;
  char *b = realloc(r->body, r->len + k + 1);
  if (!b)
    return 0;
  memcpy(b + r->len, p, k);
  r->body = b;
  r->len += k;
  r->body[r->len] = '\0';
  return k;
}

static void resp_free(struct resp *r) {
  free(r->body);
  memset(r, 0, sizeof *r);
}

static CURL *easy(struct fx *f, enum via via, const char *path, struct curl_slist **hdrs) {
  CURL *c = curl_easy_init();
  char url[1200];
  if (via == UNIX_SOCK) {
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, f->sock);
    snprintf(url, sizeof url, "http://localhost%s", path);
  } else {
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", f->port, path);
  }
  if (via == TCP_TOKEN)
    *hdrs = curl_slist_append(*hdrs, "Authorization: Bearer " TOKEN);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 15000L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  return c;
}

/* One request. body may be NULL; ctype NULL sends no Content-Type. */
static struct resp http_full(struct fx *f, enum via via, const char *method, const char *path,
                             const char *ctype, const char *body, size_t body_len,
                             const char *extra_header) {
  struct resp r = {0};
  struct curl_slist *h = NULL;
  CURL *c = easy(f, via, path, &h);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  char ct[160];
  if (ctype) {
    snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
    h = curl_slist_append(h, ct);
  } else if (body) {
    h = curl_slist_append(h, "Content-Type:"); /* remove curl's default form type */
  }
  if (extra_header)
    h = curl_slist_append(h, extra_header);
  if (body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
  r.rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  char *t = NULL;
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &t);
  snprintf(r.ctype, sizeof r.ctype, "%s", t ? t : "");
  curl_easy_cleanup(c);
  curl_slist_free_all(h);
  if (!r.body)
    r.body = calloc(1, 1);
  return r;
}

static struct resp http(struct fx *f, enum via via, const char *method, const char *path,
                        const char *json_body) {
  return http_full(f, via, method, path, json_body ? "application/json" : NULL, json_body,
                   json_body ? strlen(json_body) : 0, NULL);
}

/* The parsed JSON body of r; fails the test when it is not JSON. */
static json_t *body_json(const struct resp *r) {
  json_error_t e;
  json_t *j = json_loadb(r->body, r->len, 0, &e);
  if (!j)
    fail_msg("answer %ld is not JSON (%s): %.300s", r->status, e.text, r->body);
  return j;
}

static const char *jstr(json_t *j, const char *k) { return json_string_value(json_object_get(j, k)); }

/* Checks status and, for errors, the error document: code, field and a
 * non-empty message that contains hint. */
static void expect_status(const struct resp *r, long status, const char *code, const char *field,
                          const char *hint) {
  if (r->rc != CURLE_OK)
    fail_msg("no HTTP answer (curl: %s); want %ld %s", curl_easy_strerror(r->rc), status,
             code ? code : "");
  if (r->status != status)
    fail_msg("status %ld, want %ld; body: %.400s", r->status, status, r->body);
  if (!code)
    return;
  if (strncmp(r->ctype, "application/json", 16) != 0)
    fail_msg("error with Content-Type \"%s\"", r->ctype);
  json_t *j = body_json(r);
  json_t *e = json_object_get(j, "error");
  if (!json_is_object(e))
    fail_msg("no \"error\" object in %.300s", r->body);
  if (!jstr(e, "code") || strcmp(jstr(e, "code"), code) != 0)
    fail_msg("error code %s, want %s: %.300s", jstr(e, "code"), code, r->body);
  json_t *fv = json_object_get(e, "field");
  if (field ? !json_is_string(fv) || strcmp(json_string_value(fv), field) != 0
            : !json_is_null(fv))
    fail_msg("error field %s, want %s: %.300s", json_is_string(fv) ? json_string_value(fv) : "null",
             field ? field : "null", r->body);
  const char *m = jstr(e, "message");
  if (!m || !m[0])
    fail_msg("empty error message: %.300s", r->body);
  if (hint && !strstr(m, hint))
    fail_msg("error message \"%s\" does not contain \"%s\"", m, hint);
  json_decref(j);
}

/* POST that must answer 201/202 with {"operation": OP}; returns the op id. */
static void post_op(struct fx *f, const char *path, const char *body, long status, char *id) {
  struct resp r = http(f, TCP_TOKEN, "POST", path, body);
  expect_status(&r, status, NULL, NULL, NULL);
  json_t *j = body_json(&r);
  const char *s = jstr(json_object_get(j, "operation"), "id");
  if (!s)
    fail_msg("no operation in %s", r.body);
  snprintf(id, 32, "%s", s);
  json_decref(j);
  resp_free(&r);
}

/* Waits on the operation through the API's own long poll. */
static void wait_op(struct fx *f, const char *id, const char *want) {
  char path[128];
  snprintf(path, sizeof path, "/v1/operations/%s?wait_s=5", id);
  struct resp r = http(f, TCP_TOKEN, "GET", path, NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  json_t *j = body_json(&r);
  if (strcmp(jstr(j, "status"), want) != 0)
    fail_msg("operation %s: %s, want %s", id, r.body, want);
  json_decref(j);
  resp_free(&r);
}

static void running_vm(struct fx *f, const char *name) {
  char body[200], id[32];
  snprintf(body, sizeof body, "{\"name\":\"%s\",\"image\":\"img\",\"start\":true}", name);
  post_op(f, "/v1/vms", body, 201, id);
  wait_op(f, id, "succeeded");
}

/* ---- tests -------------------------------------------------------------- */

static void test_auth(void **state) {
  struct fx *f = *state;
  struct resp r = http(f, TCP_NO_TOKEN, "GET", "/v1/vms", NULL);
  expect_status(&r, 401, "unauthorized", NULL, "Bearer");
  resp_free(&r);
  r = http_full(f, TCP_NO_TOKEN, "GET", "/v1/vms", NULL, NULL, 0, "Authorization: Bearer wrong");
  expect_status(&r, 401, "unauthorized", NULL, NULL);
  resp_free(&r);
  r = http_full(f, TCP_NO_TOKEN, "GET", "/v1/vms", NULL, NULL, 0,
                "Authorization: Bearer " TOKEN "x");
  expect_status(&r, 401, "unauthorized", NULL, NULL);
  resp_free(&r);
  r = http_full(f, TCP_NO_TOKEN, "GET", "/v1/vms", NULL, NULL, 0, "Authorization: " TOKEN);
  expect_status(&r, 401, "unauthorized", NULL, NULL);
  resp_free(&r);
  r = http_full(f, TCP_NO_TOKEN, "POST", "/v1/vms", "application/json", "{}", 2, NULL);
  expect_status(&r, 401, "unauthorized", NULL, NULL);
  resp_free(&r);

  r = http(f, TCP_TOKEN, "GET", "/v1/vms", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  json_t *j = body_json(&r);
  EXPECT_TRUE(json_is_array(json_object_get(j, "vms")));
  json_decref(j);
  resp_free(&r);
  r = http(f, UNIX_SOCK, "GET", "/v1/vms", NULL); /* the local socket needs no token */
  expect_status(&r, 200, NULL, NULL, NULL);
  resp_free(&r);

  /* the probes need none on TCP either */
  r = http(f, TCP_NO_TOKEN, "GET", "/healthz", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  EXPECT_STR(r.body, "ok\n");
  resp_free(&r);
  r = http(f, TCP_NO_TOKEN, "GET", "/readyz", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  resp_free(&r);
  r = http(f, TCP_NO_TOKEN, "GET", "/metrics", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  EXPECT_CONTAINS(r.ctype, "text/plain");
  resp_free(&r);
}

static void test_readyz(void **state) {
  struct fx *f = *state;
  f->ready = false;
  struct resp r = http(f, TCP_NO_TOKEN, "GET", "/readyz", NULL);
  expect_status(&r, 503, NULL, NULL, NULL);
  json_t *j = body_json(&r);
  EXPECT_TRUE(json_is_false(json_object_get(j, "ready")));
  EXPECT_STR(jstr(json_array_get(json_object_get(j, "components"), 0), "status"), "failed");
  json_decref(j);
  resp_free(&r);
  f->ready = true;
  r = http(f, TCP_NO_TOKEN, "GET", "/readyz", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  resp_free(&r);
}

static void test_routing(void **state) {
  struct fx *f = *state;
  static const struct {
    const char *method, *path;
    long status;
    const char *code, *hint;
  } cases[] = {
      {"GET", "/v1/nope", 404, "not_found", "no such route"},
      {"GET", "/", 404, "not_found", NULL},
      {"GET", "/v1/vms/", 404, "not_found", NULL},
      {"GET", "/v1/vms//start", 404, "not_found", NULL},
      {"GET", "/v1/vms/a/b/c/d/e/f/g/h/i", 404, "not_found", NULL},
      {"PUT", "/v1/vms", 405, "method_not_allowed", "GET, POST"},
      {"DELETE", "/v1/vms", 405, "method_not_allowed", "allowed: GET, POST"},
      {"PATCH", "/v1/vms/w", 405, "method_not_allowed", "GET, DELETE"},
      {"GET", "/v1/vms/w/start", 405, "method_not_allowed", "POST"},
      {"POST", "/v1/vms/w/console", 405, "method_not_allowed", "GET"},
      {"POST", "/v1/vms/w/snapshots/s1", 405, "method_not_allowed", "DELETE"},
      {"POST", "/healthz", 405, "method_not_allowed", "GET"},
      {"POST", "/v1/vms/w/bogus", 404, "not_found", "start, stop, pause"},
      {"POST", "/v1/vms/w/delete", 404, "not_found", "unknown vm action"},
      {"GET", "/v1/vms/ghost", 404, "not_found", "\"ghost\""},
      {"GET", "/v1/vms/ghost/snapshots", 404, "not_found", "\"ghost\""},
      {"GET", "/v1/vms/ghost/console", 404, "not_found", "\"ghost\""},
      {"POST", "/v1/vms/ghost/start", 404, "not_found", "vm list"},
      {"DELETE", "/v1/vms/ghost", 404, "not_found", "\"ghost\""},
      {"GET", "/v1/operations/op-0000000000000000", 404, "not_found", "op list"},
      {"POST", "/v1/operations/op-0000000000000000/cancel", 404, "not_found", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct resp r = http(f, TCP_TOKEN, cases[i].method, cases[i].path, NULL);
    if (r.status != cases[i].status)
      fail_msg("%s %s: %ld, want %ld: %s", cases[i].method, cases[i].path, r.status,
               cases[i].status, r.body);
    expect_status(&r, cases[i].status, cases[i].code, NULL, cases[i].hint);
    resp_free(&r);
  }
}

static void test_content_type_and_body_errors(void **state) {
  struct fx *f = *state;
  const char *ok = "{\"name\":\"w\",\"image\":\"img\"}";
  struct resp r = http_full(f, TCP_TOKEN, "POST", "/v1/vms", "text/plain", ok, strlen(ok), NULL);
  expect_status(&r, 415, "unsupported_media_type", NULL, "application/json");
  resp_free(&r);
  r = http_full(f, TCP_TOKEN, "POST", "/v1/vms", NULL, ok, strlen(ok), NULL);
  expect_status(&r, 415, "unsupported_media_type", NULL, NULL);
  resp_free(&r);
  r = http_full(f, TCP_TOKEN, "POST", "/v1/vms", "application/jsonx", ok, strlen(ok), NULL);
  expect_status(&r, 415, "unsupported_media_type", NULL, NULL);
  resp_free(&r);

  r = http(f, TCP_TOKEN, "POST", "/v1/vms", "{");
  expect_status(&r, 400, "bad_json", NULL, "not valid JSON");
  resp_free(&r);
  r = http(f, TCP_TOKEN, "POST", "/v1/vms", "[1]");
  expect_status(&r, 400, "bad_json", NULL, "JSON object");
  resp_free(&r);
  r = http(f, TCP_TOKEN, "POST", "/v1/vms", "\"w\"");
  expect_status(&r, 400, "bad_json", NULL, NULL);
  resp_free(&r);
  r = http(f, TCP_TOKEN, "POST", "/v1/vms", "{\"name\":\"a\",\"name\":\"b\",\"image\":\"img\"}");
  expect_status(&r, 400, "bad_json", NULL, "duplicate");
  resp_free(&r);
  r = http(f, TCP_TOKEN, "POST", "/v1/vms", "{\"name\":\"w\",\"image\":\"img\",\"x\":1}");
  expect_status(&r, 400, "unknown_field", "x", "\"x\"");
  resp_free(&r);
  r = http(f, TCP_TOKEN, "POST", "/v1/vms", "{\"name\":\"w\",\"image\":\"img\",\"memory\":\"12X\"}");
  expect_status(&r, 400, "invalid_field", "memory", "\"12X\"");
  resp_free(&r);
  r = http_full(f, TCP_TOKEN, "POST", "/v1/vms", "application/json", NULL, 0, NULL);
  expect_status(&r, 400, "bad_json", NULL, "JSON object");
  resp_free(&r);
  /* a charset parameter is fine */
  r = http_full(f, TCP_TOKEN, "POST", "/v1/vms", "application/json; charset=utf-8", ok,
                strlen(ok), NULL);
  expect_status(&r, 201, NULL, NULL, NULL);
  resp_free(&r);
  /* action bodies are checked too */
  r = http(f, TCP_TOKEN, "POST", "/v1/vms/w/start", "{\"now\":true}");
  expect_status(&r, 400, "unknown_field", "now", NULL);
  resp_free(&r);
  r = http(f, TCP_TOKEN, "POST", "/v1/vms/w/stop", "{\"timeout_s\":\"soon\"}");
  expect_status(&r, 400, "invalid_field", "timeout_s", NULL);
  resp_free(&r);
}

static size_t read_zeros(char *buf, size_t size, size_t n, void *data) {
  size_t *left = data;
  size_t k = size * n < *left ? size * n : *left;
  memset(buf, ' ', k);
  *left -= k;
  return k;
}

static void test_body_cap(void **state) {
  struct fx *f = *state;
  size_t big = NC_API_BODY_MAX + 4000;
  char *body = malloc(big + 1);
  memset(body, ' ', big);
  body[big] = '\0';
  /* with Content-Length */
  struct resp r = http_full(f, TCP_TOKEN, "POST", "/v1/vms", "application/json", body, big, NULL);
  expect_status(&r, 413, "too_large", NULL, "65536");
  resp_free(&r);
  /* one byte over */
  r = http_full(f, TCP_TOKEN, "POST", "/v1/vms", "application/json", body, NC_API_BODY_MAX + 1,
                NULL);
  expect_status(&r, 413, "too_large", NULL, NULL);
  resp_free(&r);
  /* exactly the cap is read and judged on content */
  const char *head = "{\"name\":\"w\",\"image\":\"img\",\"cmdline_append\":\"";
  memcpy(body, head, strlen(head));
  memset(body + strlen(head), 'c', NC_API_BODY_MAX - strlen(head) - 2);
  memcpy(body + NC_API_BODY_MAX - 2, "\"}", 2);
  r = http_full(f, TCP_TOKEN, "POST", "/v1/vms", "application/json", body, NC_API_BODY_MAX,
                NULL);
  expect_status(&r, 400, "invalid_field", "cmdline_append", "1024");
  resp_free(&r);
  free(body);

  /* chunked, no Content-Length: the cap holds while streaming */
  struct resp rc = {0};
  struct curl_slist *h = NULL;
  CURL *c = easy(f, TCP_TOKEN, "/v1/vms", &h);
  h = curl_slist_append(h, "Content-Type: application/json");
  h = curl_slist_append(h, "Transfer-Encoding: chunked");
  size_t left = big;
  curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "POST");
  curl_easy_setopt(c, CURLOPT_READFUNCTION, read_zeros);
  curl_easy_setopt(c, CURLOPT_READDATA, &left);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &rc);
  rc.rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rc.status);
  char *t = NULL;
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &t);
  snprintf(rc.ctype, sizeof rc.ctype, "%s", t ? t : "");
  curl_easy_cleanup(c);
  curl_slist_free_all(h);
  if (!rc.body)
    rc.body = calloc(1, 1);
  expect_status(&rc, 413, "too_large", NULL, NULL);
  resp_free(&rc);

  /* the server is still fine */
  r = http(f, TCP_TOKEN, "GET", "/v1/vms", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  resp_free(&r);
}

static void test_create_action_operation(void **state) {
  struct fx *f = *state;
  struct resp r = http(f, TCP_TOKEN, "POST", "/v1/vms", "{\"name\":\"web-1\",\"image\":\"img\"}");
  expect_status(&r, 201, NULL, NULL, NULL);
  EXPECT_CONTAINS(r.ctype, "application/json");
  json_t *j = body_json(&r);
  EXPECT_STR(jstr(json_object_get(j, "vm"), "name"), "web-1");
  EXPECT_STR(jstr(json_object_get(j, "vm"), "state"), "defined");
  EXPECT_TRUE(json_is_null(json_object_get(j, "operation")));
  json_decref(j);
  resp_free(&r);

  r = http(f, TCP_TOKEN, "POST", "/v1/vms", "{\"name\":\"web-1\",\"image\":\"img\"}");
  expect_status(&r, 409, "conflict", "name", "already exists");
  resp_free(&r);
  r = http(f, TCP_TOKEN, "POST", "/v1/vms", "{\"name\":\"web-2\",\"image\":\"nope\"}");
  expect_status(&r, 422, "unprocessable", "image", "\"nope\"");
  resp_free(&r);

  char id[32];
  post_op(f, "/v1/vms/web-1/start", NULL, 202, id);
  wait_op(f, id, "succeeded");
  r = http(f, TCP_TOKEN, "GET", "/v1/vms/web-1", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  j = body_json(&r);
  EXPECT_STR(jstr(j, "state"), "running");
  EXPECT_TRUE(json_is_array(json_object_get(j, "history")));
  json_decref(j);
  resp_free(&r);

  r = http(f, TCP_TOKEN, "POST", "/v1/vms/web-1/resume", NULL);
  expect_status(&r, 409, "conflict", NULL, "cannot resume");
  resp_free(&r);

  /* wait_s must be a number of seconds from 0 to 300 */
  static const char *const bad_wait[] = {"abc", "-1", "301", "", "1.5", "5s"};
  for (size_t i = 0; i < sizeof bad_wait / sizeof bad_wait[0]; i++) {
    char path[128];
    snprintf(path, sizeof path, "/v1/operations/%s?wait_s=%s", id, bad_wait[i]);
    r = http(f, TCP_TOKEN, "GET", path, NULL);
    expect_status(&r, 400, "invalid_field", "wait_s", "0 to 300");
    resp_free(&r);
  }
  /* a finished operation cannot be cancelled */
  char path[128];
  snprintf(path, sizeof path, "/v1/operations/%s/cancel", id);
  r = http(f, TCP_TOKEN, "POST", path, NULL);
  expect_status(&r, 409, "conflict", NULL, "succeeded");
  resp_free(&r);

  r = http(f, TCP_TOKEN, "GET", "/v1/operations", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  j = body_json(&r);
  EXPECT_STR(jstr(json_array_get(json_object_get(j, "operations"), 0), "id"), id);
  json_decref(j);
  resp_free(&r);

  /* stop, snapshot life, delete */
  post_op(f, "/v1/vms/web-1/snapshots", "{\"name\":\"s1\"}", 202, id);
  wait_op(f, id, "succeeded");
  r = http(f, TCP_TOKEN, "GET", "/v1/vms/web-1/snapshots", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  EXPECT_CONTAINS(r.body, "\"s1\"");
  resp_free(&r);
  post_op(f, "/v1/vms/web-1/snapshots/s1/restore", NULL, 202, id);
  wait_op(f, id, "succeeded");
  r = http(f, TCP_TOKEN, "DELETE", "/v1/vms/web-1/snapshots/s1", NULL);
  expect_status(&r, 202, NULL, NULL, NULL);
  j = body_json(&r);
  snprintf(id, sizeof id, "%s", jstr(json_object_get(j, "operation"), "id"));
  json_decref(j);
  resp_free(&r);
  wait_op(f, id, "succeeded");
  post_op(f, "/v1/vms/web-1/stop", "{\"force\":true}", 202, id);
  wait_op(f, id, "succeeded");
  post_op(f, "/v1/vms/web-1/clone", "{\"name\":\"web-3\"}", 202, id);
  wait_op(f, id, "succeeded");
  r = http(f, TCP_TOKEN, "DELETE", "/v1/vms/web-3", NULL);
  expect_status(&r, 202, NULL, NULL, NULL);
  j = body_json(&r);
  snprintf(id, sizeof id, "%s", jstr(json_object_get(j, "operation"), "id"));
  json_decref(j);
  resp_free(&r);
  wait_op(f, id, "succeeded");
  r = http(f, TCP_TOKEN, "GET", "/v1/vms/web-3", NULL);
  expect_status(&r, 404, "not_found", NULL, NULL);
  resp_free(&r);
}

/* "snapshot-delete" is an action name inside the manager (state.h), not a
 * route: POST /v1/vms/{name}/snapshot-delete must be 404 like any unknown
 * action, never an operation that deletes a snapshot named "". */
static void test_snapshot_delete_is_not_an_action_route(void **state) {
  struct fx *f = *state;
  running_vm(f, "sd");
  struct resp r = http(f, TCP_TOKEN, "POST", "/v1/vms/sd/snapshot-delete", NULL);
  if (r.status == 202)
    print_error("POST /v1/vms/sd/snapshot-delete answered 202: %s\n", r.body);
  expect_status(&r, 404, "not_found", NULL, "unknown vm action");
  resp_free(&r);
  nct_sleep_ms(50);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.snap_deletes), 0);
}

static void test_cancel_running_start(void **state) {
  struct fx *f = *state;
  fake_hv_close_gate(&f->w.hv);
  char id[32];
  post_op(f, "/v1/vms", "{\"name\":\"slow\",\"image\":\"img\",\"start\":true}", 201, id);
  EXPECT_TRUE(fake_hv_wait_launching(&f->w.hv, 1, 5000));
  struct resp r = http(f, TCP_TOKEN, "POST", "/v1/vms/slow/pause", NULL);
  expect_status(&r, 409, "conflict", NULL, id); /* busy */
  resp_free(&r);
  char path[128];
  snprintf(path, sizeof path, "/v1/operations/%s/cancel", id);
  r = http(f, TCP_TOKEN, "POST", path, NULL);
  expect_status(&r, 202, NULL, NULL, NULL);
  resp_free(&r);
  fake_hv_open_gate(&f->w.hv);
  wait_op(f, id, "cancelled");
}

static void test_images_node_console(void **state) {
  struct fx *f = *state;
  struct resp r = http(f, TCP_TOKEN, "GET", "/v1/images", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  json_t *j = body_json(&r);
  EXPECT_STR(jstr(json_array_get(json_object_get(j, "images"), 0), "name"), "img");
  json_decref(j);
  resp_free(&r);

  char body[800];
  snprintf(body, sizeof body, "{\"name\":\"img2\",\"kernel\":\"%s\",\"cmdline\":\"quiet\"}",
           f->w.kernel);
  r = http(f, TCP_TOKEN, "POST", "/v1/images", body);
  expect_status(&r, 201, NULL, NULL, NULL);
  j = body_json(&r);
  EXPECT_STR(jstr(j, "name"), "img2");
  EXPECT_STR(jstr(j, "kernel"), f->w.kernel);
  json_decref(j);
  resp_free(&r);
  r = http(f, TCP_TOKEN, "POST", "/v1/images", body);
  expect_status(&r, 409, "conflict", "name", "already exists");
  resp_free(&r);
  r = http(f, TCP_TOKEN, "POST", "/v1/images",
           "{\"name\":\"img3\",\"kernel\":\"/nonexistent/vmlinuz\"}");
  expect_status(&r, 422, "unprocessable", "kernel", "/nonexistent/vmlinuz");
  resp_free(&r);
  r = http(f, TCP_TOKEN, "POST", "/v1/images", "{\"name\":\"img3\",\"kernel\":\"rel/k\"}");
  expect_status(&r, 400, "invalid_field", "kernel", "absolute");
  resp_free(&r);

  r = http(f, TCP_TOKEN, "GET", "/v1/node", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  j = body_json(&r);
  EXPECT_STR(jstr(j, "name"), "api-node");
  json_decref(j);
  resp_free(&r);

  running_vm(f, "con");
  char logp[400];
  snprintf(logp, sizeof logp, "%s/vms/con/serial.log", f->w.data_dir);
  EXPECT_RC(nct_write_file(logp, "boot...\nlogin: "), 0);
  r = http(f, TCP_TOKEN, "GET", "/v1/vms/con/console", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  EXPECT_STR(r.body, "boot...\nlogin: ");
  EXPECT_CONTAINS(r.ctype, "text/plain");
  resp_free(&r);
  r = http(f, TCP_TOKEN, "GET", "/v1/vms/con/console?tail_bytes=7", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  EXPECT_STR(r.body, "login: ");
  resp_free(&r);
  r = http(f, TCP_TOKEN, "GET", "/v1/vms/con/console?tail_bytes=x", NULL);
  expect_status(&r, 400, "invalid_field", "tail_bytes", NULL);
  resp_free(&r);
  /* Just after the log was capped (util/logcap.h), the older part of the
   * tail is in serial.log.1. */
  char oldp[420];
  snprintf(oldp, sizeof oldp, "%s.1", logp);
  EXPECT_RC(nct_write_file(oldp, "older lines\n"), 0);
  EXPECT_RC(nct_write_file(logp, "new"), 0);
  r = http(f, TCP_TOKEN, "GET", "/v1/vms/con/console?tail_bytes=10", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  EXPECT_STR(r.body, " lines\nnew");
  resp_free(&r);
  r = http(f, TCP_TOKEN, "GET", "/v1/vms/con/console?tail_bytes=2", NULL);
  expect_status(&r, 200, NULL, NULL, NULL);
  EXPECT_STR(r.body, "ew");
  resp_free(&r);
  unlink(oldp);
}

/* ---- the event stream --------------------------------------------------- */

struct sse {
  struct fx *f;
  char last_id[64]; /* "" or a Last-Event-ID to send */
  char *text;
  size_t len;
  bool seen;
  CURLcode rc;
  pthread_mutex_t mu;
};

static size_t on_sse(char *p, size_t size, size_t n, void *data) {
  struct sse *s = data;
  size_t k = size * n;
  pthread_mutex_lock(&s->mu);
  char *b = realloc(s->text, s->len + k + 1);
  if (b) {
    memcpy(b + s->len, p, k);
    s->text = b;
    s->len += k;
    s->text[s->len] = '\0';
    s->seen = strstr(s->text, "event: vm.state\n") && strstr(s->text, "\"to\":\"paused\"");
  }
  bool done = s->seen;
  pthread_mutex_unlock(&s->mu);
  return done ? 0 : k; /* 0 ends the transfer once we have what we wanted */
}

static void *sse_thread(void *arg) {
  struct sse *s = arg;
  struct curl_slist *h = NULL;
  CURL *c = easy(s->f, TCP_TOKEN, "/v1/events", &h);
  char hdr[100];
  if (s->last_id[0]) {
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %s", s->last_id);
    h = curl_slist_append(h, hdr);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_sse);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
  s->rc = curl_easy_perform(c);
  curl_easy_cleanup(c);
  curl_slist_free_all(h);
  return NULL;
}

static bool sse_seen(struct sse *s) {
  pthread_mutex_lock(&s->mu);
  bool v = s->seen;
  pthread_mutex_unlock(&s->mu);
  return v;
}

/* Checks the SSE framing of the vm.state event in text. */
static void check_sse_frame(const char *text) {
  const char *ev = strstr(text, "event: vm.state\ndata: ");
  if (!ev)
    fail_msg("no vm.state frame in: %s", text);
  /* "id: N" is the line before */
  if (ev == text)
    fail_msg("the vm.state frame has no id: line before it: %s", text);
  const char *prev = ev - 1;
  while (prev > text && prev[-1] != '\n')
    prev--;
  if (strncmp(prev, "id: ", 4) != 0)
    fail_msg("the vm.state frame has no id: line before it: %s", text);
  const char *data = ev + strlen("event: vm.state\ndata: ");
  const char *end = strstr(data, "\n\n");
  if (!end)
    fail_msg("the frame does not end with a blank line: %s", text);
  json_t *j = json_loadb(data, (size_t)(end - data), 0, NULL);
  if (!j)
    fail_msg("the data: line is not JSON: %.*s", (int)(end - data), data);
  EXPECT_STR(jstr(j, "vm"), "ev");
  EXPECT_TRUE(jstr(j, "from") && jstr(j, "to") && jstr(j, "at") && jstr(j, "reason"));
  json_decref(j);
}

static void test_events_stream_live(void **state) {
  struct fx *f = *state;
  running_vm(f, "ev");
  struct sse s = {.f = f};
  pthread_mutex_init(&s.mu, NULL);
  pthread_t t;
  pthread_create(&t, NULL, sse_thread, &s);
  /* The stream only carries events after it opened; toggle until it sees
   * one (the first toggles may land before the server took the request). */
  int64_t dl = nct_now_ms() + 8000;
  bool paused = false;
  while (!sse_seen(&s) && nct_now_ms() < dl) {
    char id[32];
    post_op(f, paused ? "/v1/vms/ev/resume" : "/v1/vms/ev/pause", NULL, 202, id);
    wait_op(f, id, "succeeded");
    paused = !paused;
    for (int i = 0; i < 20 && !sse_seen(&s); i++)
      nct_sleep_ms(10);
  }
  pthread_join(t, NULL);
  if (!s.seen)
    fail_msg("no vm.state event on /v1/events within 8 s (curl: %s); got: %s",
             curl_easy_strerror(s.rc), s.text ? s.text : "");
  check_sse_frame(s.text);
  free(s.text);
  pthread_mutex_destroy(&s.mu);
}

static void test_events_replay_with_last_event_id(void **state) {
  struct fx *f = *state;
  running_vm(f, "ev");
  uint64_t before = nc_events_last(f->w.events);
  char id[32];
  post_op(f, "/v1/vms/ev/pause", NULL, 202, id);
  wait_op(f, id, "succeeded");
  struct sse s = {.f = f};
  snprintf(s.last_id, sizeof s.last_id, "%llu", (unsigned long long)before);
  pthread_mutex_init(&s.mu, NULL);
  pthread_t t;
  pthread_create(&t, NULL, sse_thread, &s);
  pthread_join(t, NULL);
  if (!s.seen)
    fail_msg("Last-Event-ID %s did not replay the pause (curl: %s); got: %s", s.last_id,
             curl_easy_strerror(s.rc), s.text ? s.text : "");
  check_sse_frame(s.text);
  free(s.text);
  pthread_mutex_destroy(&s.mu);
}

/* ---- /metrics ------------------------------------------------------------ */

static int promtool(const char *text, char *out, size_t out_len, const char *dir) {
  if (system("command -v promtool >/dev/null 2>&1") != 0)
    return -1;
  char in[300], res[300], cmd[800];
  snprintf(in, sizeof in, "%s/metrics.txt", dir);
  snprintf(res, sizeof res, "%s/promtool.txt", dir);
  nct_write_file(in, text);
  snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' > '%s' 2>&1", in, res);
  int st = system(cmd);
  char *o = nct_read_file(res);
  snprintf(out, out_len, "%s", o ? o : "");
  free(o);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -3;
}

static void test_metrics(void **state) {
  struct fx *f = *state;
  running_vm(f, "m1");
  struct resp r = http(f, TCP_TOKEN, "GET", "/v1/nope", NULL); /* an unmatched route too */
  resp_free(&r);
  /* requests are counted when they complete, just after the answer */
  int64_t dl = nct_now_ms() + 3000;
  do {
    r = http(f, TCP_NO_TOKEN, "GET", "/metrics", NULL);
    expect_status(&r, 200, NULL, NULL, NULL);
    if (strstr(r.body, "route=\"unmatched\",code=\"404\"} 1\n") || nct_now_ms() > dl)
      break;
    resp_free(&r);
    nct_sleep_ms(10);
  } while (1);
  EXPECT_CONTAINS(r.body, "# TYPE novacron_api_requests_total counter\n");
  EXPECT_CONTAINS(r.body, "novacron_api_requests_total{route=\"/v1/vms\",code=\"201\"} 1\n");
  EXPECT_CONTAINS(r.body, "novacron_api_requests_total{route=\"unmatched\",code=\"404\"} 1\n");
  EXPECT_CONTAINS(r.body, "novacron_api_request_duration_seconds_bucket{route=\"/v1/vms\","
                          "le=\"+Inf\"} ");
  EXPECT_CONTAINS(r.body, "novacron_vms{state=\"running\"} 1\n");
  EXPECT_CONTAINS(r.body, "libvirt_domain_info_maximum_memory_bytes{domain=\"m1\"} 268435456\n");
  char out[4096];
  int rc = promtool(r.body, out, sizeof out, f->w.dir);
  if (rc == -1) {
    fprintf(stderr, "SKIP: promtool is not on PATH (install the Debian package prometheus); "
                    "/metrics was not checked with it\n");
  } else if (rc != 0) {
    fail_msg("promtool check metrics exited %d on /metrics:\n%s", rc, out);
  }
  resp_free(&r);
}

/* ---- error documents stay JSON ------------------------------------------ */

/* Validation messages quote user input with a byte limit; the API must
 * still answer with a JSON error document (a cut UTF-8 character makes
 * jansson refuse the message and the connection close with no answer). */
static void test_error_with_cut_utf8_still_answers(void **state) {
  struct fx *f = *state;
  struct resp r = http(f, TCP_TOKEN, "POST", "/v1/vms",
                       "{\"name\":\"w\",\"image\":\"img\","
                       "\"memory\":\"1111111111111111111111111111111\\u00e9\"}");
  expect_status(&r, 400, "invalid_field", "memory", NULL);
  resp_free(&r);
}

/* ---- docs/openapi.yaml --------------------------------------------------- */

/* Is "method" listed under path "tmpl" in the OpenAPI document? Paths are
 * two-space-indented keys under "paths:", methods four-space-indented keys
 * under a path; that is all this reader understands. */
static bool openapi_has(const char *yaml, const char *tmpl, const char *method) {
  char key[300];
  snprintf(key, sizeof key, "\n  %s:", tmpl);
  const char *p = strstr(yaml, "\npaths:");
  if (!p)
    return false;
  p = strstr(p, key);
  if (!p)
    return false;
  p += strlen(key);
  char m[16];
  size_t i = 0;
  for (; method[i] && i < sizeof m - 1; i++)
    m[i] = (char)(method[i] | 0x20);
  m[i] = '\0';
  /* scan the lines of this path until the next key at indent <= 2 */
  for (p = strchr(p, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
    const char *l = p + 1;
    size_t ind = strspn(l, " ");
    if (l[ind] == '\n' || l[ind] == '#')
      continue;
    if (ind <= 2)
      return false;
    if (ind == 4 && strncmp(l + 4, m, strlen(m)) == 0 && l[4 + strlen(m)] == ':')
      return true;
  }
  return false;
}

static void test_every_route_is_in_openapi(void **state) {
  (void)state;
  char path[512];
  snprintf(path, sizeof path, "%s/docs/openapi.yaml", NC_SOURCE_DIR);
  char *yaml = nct_read_file(path);
  if (!yaml)
    fail_msg("cannot read %s", path);
  int missing = 0;
  size_t n = 0;
  const char *method, *tmpl;
  for (size_t i = 0; nc_api_route_at(i, &method, &tmpl); i++, n++) {
    if (!openapi_has(yaml, tmpl, method)) {
      print_error("docs/openapi.yaml lacks %s %s\n", method, tmpl);
      missing++;
    }
  }
  EXPECT_TRUE(n >= 20);
  EXPECT_I64(missing, 0);
  /* and the document promises no route the server does not have */
  int extra = 0;
  const char *p = strstr(yaml, "\npaths:");
  assert_non_null(p);
  for (p = strchr(p + 1, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
    const char *l = p + 1;
    size_t ind = strspn(l, " ");
    if (l[ind] == '\n' || l[ind] == '#')
      continue;
    if (ind == 0)
      break; /* end of paths: */
    if (ind != 2 || l[2] != '/')
      continue;
    char tp[300];
    size_t len = strcspn(l + 2, ":\n");
    snprintf(tp, sizeof tp, "%.*s", (int)len, l + 2);
    bool found = false;
    for (size_t i = 0; nc_api_route_at(i, &method, &tmpl); i++)
      found |= strcmp(tmpl, tp) == 0;
    if (!found) {
      print_error("docs/openapi.yaml documents %s, which is not in the route table\n", tp);
      extra++;
    }
  }
  EXPECT_I64(extra, 0);
  free(yaml);
}

/* The checker itself must be able to fail. */
static void test_openapi_checker_fails_on_missing(void **state) {
  (void)state;
  const char *doc = "openapi: 3.0.3\npaths:\n  /v1/vms:\n    get:\n      summary: x\n"
                    "  /v1/vms/{name}:\n    delete:\n      summary: y\ncomponents:\n  x: 1\n";
  EXPECT_TRUE(openapi_has(doc, "/v1/vms", "GET"));
  EXPECT_TRUE(!openapi_has(doc, "/v1/vms", "POST"));
  EXPECT_TRUE(openapi_has(doc, "/v1/vms/{name}", "DELETE"));
  EXPECT_TRUE(!openapi_has(doc, "/v1/vms/{name}", "GET"));
  EXPECT_TRUE(!openapi_has(doc, "/v1/node", "GET"));
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_auth),
      T(test_readyz),
      T(test_routing),
      T(test_content_type_and_body_errors),
      T(test_body_cap),
      T(test_create_action_operation),
      T(test_snapshot_delete_is_not_an_action_route),
      T(test_cancel_running_start),
      T(test_images_node_console),
      T(test_events_stream_live),
      T(test_events_replay_with_last_event_id),
      T(test_metrics),
      T(test_error_with_cut_utf8_still_answers),
      cmocka_unit_test(test_every_route_is_in_openapi),
      cmocka_unit_test(test_openapi_checker_fails_on_missing),
  };
#undef T
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
