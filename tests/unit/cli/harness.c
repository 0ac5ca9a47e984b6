#include "harness.h"

#include "util/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fake_request(struct nc_cli_transport *t, const struct nc_cli_http_req *req,
                        struct nc_cli_http_resp *resp, char *errbuf, size_t errlen) {
  struct harness *h = t->data;
  memset(resp, 0, sizeof *resp);
  if (h->nreqs < FAKE_MAX) {
    struct fake_req *r = &h->reqs[h->nreqs++];
    snprintf(r->method, sizeof r->method, "%s", req->method);
    snprintf(r->path, sizeof r->path, "%s", req->path);
    snprintf(r->accept, sizeof r->accept, "%s", req->accept ? req->accept : "application/json");
    r->body = req->body ? strndup(req->body, req->body_len) : NULL;
    r->timeout_ms = req->timeout_ms;
  }
  if (h->nreplies == 0) {
    snprintf(errbuf, errlen, "no scripted reply");
    return -ECONNREFUSED;
  }
  const struct fake_reply *rep = &h->replies[h->next < h->nreplies ? h->next : h->nreplies - 1];
  if (h->next < h->nreplies)
    h->next++;
  if (rep->err != 0) {
    snprintf(errbuf, errlen, "scripted failure");
    return rep->err;
  }
  resp->status = rep->status;
  resp->body = strdup(rep->body ? rep->body : "");
  resp->len = strlen(resp->body);
  return 0;
}

/* Streams the scripted body in 7-byte pieces, to cross SSE line ends. */
static int fake_stream(struct nc_cli_transport *t, const struct nc_cli_http_req *req,
                       nc_cli_stream_cb cb, void *arg, struct nc_cli_http_resp *resp,
                       char *errbuf, size_t errlen) {
  int rc = fake_request(t, req, resp, errbuf, errlen);
  if (rc != 0 || resp->status < 200 || resp->status >= 300)
    return rc;
  char *body = resp->body;
  size_t len = resp->len;
  resp->body = NULL;
  resp->len = 0;
  for (size_t off = 0; off < len && rc == 0; off += 7)
    rc = cb(arg, body + off, len - off < 7 ? len - off : 7);
  free(body);
  return rc;
}

static void fake_sleep(void *arg, int64_t ms) {
  struct harness *h = arg;
  h->slept_ms += ms;
  nc_clock_manual_advance(&h->clock, ms);
}

void h_init(struct harness *h) {
  memset(h, 0, sizeof *h);
  h->transport.version = 1;
  h->transport.data = h;
  h->transport.request = fake_request;
  h->transport.stream = fake_stream;
  nc_clock_manual_init(&h->clock, 0);
  h->io.clock = &h->clock.clock;
  h->io.transport = &h->transport;
  h->io.in_fd = -1;
  h->io.out_fd = -1;
  h->io.sleep_ms = fake_sleep;
  h->io.sleep_arg = h;
}

void h_free(struct harness *h) {
  for (int i = 0; i < h->nreqs; i++)
    free(h->reqs[i].body);
  free(h->out);
  free(h->err);
  h->nreqs = 0;
  h->out = h->err = NULL;
}

void h_reply(struct harness *h, long status, const char *body) {
  h->replies[h->nreplies++] = (struct fake_reply){.status = status, .body = body};
}

void h_fail(struct harness *h, int err) {
  h->replies[h->nreplies++] = (struct fake_reply){.err = err};
}

int h_runv(struct harness *h, int argc, const char *const *argv) {
  char *args[64];
  FILE *out, *err;

  free(h->out);
  free(h->err);
  h->out = h->err = NULL;
  out = open_memstream(&h->out, &h->out_len);
  err = open_memstream(&h->err, &h->err_len);
  h->io.out = out;
  h->io.err = err;
  args[0] = (char *)"novacron";
  for (int i = 0; i < argc && i < 62; i++)
    args[i + 1] = (char *)argv[i];
  args[argc + 1] = NULL;
  h->rc = nc_cli_main(&h->io, argc + 1, args);
  fclose(out);
  fclose(err);
  return h->rc;
}

int h_run(struct harness *h, ...) {
  const char *argv[63];
  int argc = 0;
  va_list ap;
  va_start(ap, h);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 62;)
    argv[argc++] = a;
  va_end(ap);
  return h_runv(h, argc, argv);
}

void h_time(const struct harness *h, int64_t ago_s, char *buf, size_t n) {
  time_t t = (time_t)((h->clock.wall_base_ms + h->clock.now_ms) / 1000 - ago_s);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, n, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
}
