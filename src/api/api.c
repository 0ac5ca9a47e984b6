#include "api/api.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "migrate/peer.h"
#include "obs/metrics.h"
#include "util/err.h"
#include "util/errinfo.h"
#include "util/log.h"
#include "util/sync.h"
#include "vm/events.h"
#include "vm/image.h"
#include "vm/manager.h"
#include "vm/ops.h"

#define SSE_KEEPALIVE_MS 15000
#define WAIT_S_MAX 300
#define CONSOLE_TAIL_DEFAULT (64 * 1024)
#define CONSOLE_TAIL_MAX (1024 * 1024)

struct nc_api {
  struct nc_api_config cfg;
  struct MHD_Daemon *unix_d;
  struct MHD_Daemon *tcp_d;
  int tcp_port;
  struct nc_metric *m_requests;
  struct nc_metric *m_duration;
};

/* Per-request state, from the first callback to "completed". */
struct request {
  bool tcp;
  bool too_big;
  bool bad_type;
  char *body;
  size_t len;
  struct timespec started;
  const char *route; /* template, for metrics */
  unsigned status;
};

struct call {
  struct nc_api *api;
  struct MHD_Connection *conn;
  struct request *req;
  const char *method;
  char *seg[8]; /* path segments, decoded */
  size_t nseg;
  json_t *body; /* parsed body, or NULL when empty */
};

typedef enum MHD_Result (*handler_fn)(struct call *c);

/* ---- responses ---------------------------------------------------------- */

static enum MHD_Result send_text(struct call *c, unsigned status, const char *ctype,
                                 const char *text, size_t len) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, "Content-Type", ctype);
  MHD_add_response_header(r, "Cache-Control", "no-store");
  c->req->status = status;
  enum MHD_Result ret = MHD_queue_response(c->conn, status, r);
  MHD_destroy_response(r);
  return ret;
}

/* Sends len bytes of JSON text; takes ownership of the malloc'd text. */
static enum MHD_Result send_json_text(struct call *c, unsigned status, char *text, size_t len) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(text);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", "application/json");
  MHD_add_response_header(r, "Cache-Control", "no-store");
  c->req->status = status;
  enum MHD_Result ret = MHD_queue_response(c->conn, status, r);
  MHD_destroy_response(r);
  return ret;
}

/* Sends j (steals the reference). */
static enum MHD_Result send_json(struct call *c, unsigned status, json_t *j) {
  char *text = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!text)
    return MHD_NO;
  size_t len = strlen(text);
  char *t = realloc(text, len + 2);
  if (!t) {
    free(text);
    return MHD_NO;
  }
  t[len++] = '\n';
  t[len] = '\0';
  return send_json_text(c, status, t, len);
}

static enum MHD_Result send_error(struct call *c, unsigned status, const char *code,
                                  const char *field, const char *message) {
  json_t *j = json_pack("{s:{s:s, s:s, s:o}}", "error", "code", code, "message", message,
                        "field", field && field[0] ? json_string(field) : json_null());
  if (!j) /* not valid UTF-8 after all: still answer, without the text */
    j = json_pack("{s:{s:s, s:s, s:n}}", "error", "code", code, "message",
                  "the request was refused (the error text could not be encoded)", "field");
  return send_json(c, status, j);
}

static enum MHD_Result send_errinfo(struct call *c, const struct nc_errinfo *e, int rc) {
  if (e->status == 0) /* a path that forgot to fill err: never answer 200 */
    return send_error(c, 500, "internal", NULL, nc_strerror(rc));
  return send_error(c, (unsigned)e->status, e->code, e->field, e->message);
}

/* ---- handlers ----------------------------------------------------------- */

static enum MHD_Result h_healthz(struct call *c) { return send_text(c, 200, "text/plain", "ok\n", 3); }

static enum MHD_Result h_readyz(struct call *c) {
  json_t *j = c->api->cfg.readiness ? c->api->cfg.readiness(c->api->cfg.readiness_data)
                                    : json_pack("{s:b}", "ready", 1);
  bool ready = json_is_true(json_object_get(j, "ready"));
  return send_json(c, ready ? 200 : 503, j);
}

static enum MHD_Result h_metrics(struct call *c) {
  char *text;
  size_t len;
  if (nc_metrics_render(c->api->cfg.metrics, &text, &len) != 0)
    return send_error(c, 500, "internal", NULL, "cannot render metrics");
  struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(text);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  c->req->status = 200;
  enum MHD_Result ret = MHD_queue_response(c->conn, 200, r);
  MHD_destroy_response(r);
  return ret;
}

/* Answers with out on rc == 0 (status ok_status), else with err. */
static enum MHD_Result finish(struct call *c, int rc, unsigned ok_status, json_t *out,
                              const struct nc_errinfo *err) {
  if (rc)
    return send_errinfo(c, err, rc);
  return send_json(c, ok_status, out);
}

static enum MHD_Result h_vms_list(struct call *c) {
  if (c->api->cfg.cluster) {
    struct nc_errinfo err = {0};
    json_t *list = NULL;
    int rc = nc_cluster_vm_list(c->api->cfg.cluster, &list, &err);
    return finish(c, rc, 200, rc ? NULL : json_pack("{s:o}", "vms", list), &err);
  }
  char *text;
  size_t len;
  if (nc_vmm_list_text(c->api->cfg.vmm, &text, &len) != 0)
    return send_error(c, 500, "internal", NULL, "cannot render the vm list");
  return send_json_text(c, 200, text, len);
}

static enum MHD_Result h_vms_create(struct call *c) {
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  if (!c->body)
    return send_error(c, 400, "bad_json", NULL,
                      "the request body must be a JSON object like {\"name\": \"web-1\", "
                      "\"image\": \"nc-test\"}");
  int rc = c->api->cfg.cluster ? nc_cluster_vm_create(c->api->cfg.cluster, c->body, &out, &err)
                               : nc_vmm_create(c->api->cfg.vmm, c->body, &out, &err);
  return finish(c, rc, 201, out, &err);
}

/* ---- cluster ------------------------------------------------------------ */

static enum MHD_Result no_cluster(struct call *c) {
  return send_error(c, 404, "not_clustered", NULL,
                    "this node is not in a cluster (see docs/cluster.md: novacron cluster init)");
}

static enum MHD_Result h_cluster(struct call *c) {
  if (!c->api->cfg.cluster)
    return no_cluster(c);
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  int rc = nc_cluster_status(c->api->cfg.cluster, &out, &err);
  return finish(c, rc, 200, out, &err);
}

static enum MHD_Result h_nodes(struct call *c) {
  if (!c->api->cfg.cluster)
    return no_cluster(c);
  struct nc_errinfo err = {0};
  json_t *nodes = NULL;
  int rc = nc_cluster_nodes(c->api->cfg.cluster, &nodes, &err);
  return finish(c, rc, 200, rc ? NULL : json_pack("{s:o}", "nodes", nodes), &err);
}

static enum MHD_Result h_node_action(struct call *c) {
  if (!c->api->cfg.cluster)
    return no_cluster(c);
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  if (c->body && json_object_size(c->body) > 0)
    return send_error(c, 400, "invalid_field", NULL, "node actions take no body");
  int rc = nc_cluster_node_admin(c->api->cfg.cluster, c->seg[2], c->seg[3], &out, &err);
  return finish(c, rc, 200, out, &err);
}

static enum MHD_Result h_cluster_setup(struct call *c) {
  const char *what = c->seg[2];
  if (strcmp(what, "init") != 0 && strcmp(what, "join") != 0 && strcmp(what, "members") != 0)
    return send_error(c, 404, "not_found", NULL,
                      "no such cluster call (init, join or members; see docs/cluster.md)");
  if (!c->api->cfg.cluster_setup)
    return send_error(c, 503, "unavailable", NULL, "cluster set-up is not available");
  if (!c->body)
    return send_error(c, 400, "bad_json", NULL, "the request body must be a JSON object");
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  int rc = c->api->cfg.cluster_setup(c->api->cfg.cluster_setup_data, what, c->body, &out, &err);
  return finish(c, rc, 200, out, &err);
}

static enum MHD_Result h_explain(struct call *c) {
  if (!c->api->cfg.cluster)
    return no_cluster(c);
  if (!c->body)
    return send_error(c, 400, "bad_json", NULL,
                      "the request body is a vm create request, e.g. {\"name\": \"web-1\", "
                      "\"image\": \"nc-test\"}");
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  int rc = nc_cluster_explain(c->api->cfg.cluster, c->body, &out, &err);
  return finish(c, rc, 200, out, &err);
}

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value) {
  (void)kind;
  char *q = cls;
  size_t n = strlen(q);
  if (n + strlen(key) + (value ? strlen(value) : 0) + 3 >= 512)
    return MHD_NO;
  snprintf(q + n, 512 - n, "%s%s%s%s", n ? "&" : "?", key, value ? "=" : "", value ? value : "");
  return MHD_YES;
}

/* In a cluster, a request about a VM or an operation that lives on another
 * node goes to that node. Returns true when it was answered here. */
static bool forward_if_remote(struct call *c, const char *url, const char *tmpl,
                              enum MHD_Result *ret) {
  struct nc_cluster *cl = c->api->cfg.cluster;
  if (!cl || MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, NC_PEER_DIRECT_HEADER))
    return false;
  char addr[256] = "";
  int rc;
  if (strncmp(tmpl, "/v1/vms/{name}", 14) == 0) {
    json_t *vm = NULL;
    struct nc_errinfo err = {0};
    if (nc_vmm_get(c->api->cfg.vmm, c->seg[2], &vm, &err) == 0) {
      json_decref(vm);
      return false;
    }
    bool local = false;
    rc = nc_cluster_vm_locate(cl, c->seg[2], addr, sizeof addr, &local);
    if (rc == -ENOLINK) {
      *ret = send_error(c, 503, "cut_off", NULL,
                        "this node has no valid cluster lease (cut off from the etcd "
                        "majority?) and cannot tell where that vm is; ask another node");
      return true;
    }
    if (rc == -EHOSTDOWN) {
      *ret = send_error(c, 503, "node_down", NULL,
                        "the node this vm is assigned to has no lease (dead or partitioned); "
                        "see `novacron node list`");
      return true;
    }
    if (rc || local)
      return false;
  } else if (strncmp(tmpl, "/v1/operations/{id}", 19) == 0) {
    json_t *op = NULL;
    if (nc_ops_get_json(c->api->cfg.ops, c->seg[2], 0, &op) == 0) {
      json_decref(op);
      return false;
    }
    if (nc_cluster_op_locate(cl, c->seg[2], addr, sizeof addr) != 0)
      return false;
  } else {
    return false;
  }
  char path[1024], q[512] = "";
  MHD_get_connection_values(c->conn, MHD_GET_ARGUMENT_KIND, add_arg, q);
  snprintf(path, sizeof path, "%s%s", url, q);
  long status = 0;
  json_t *out = NULL;
  rc = nc_cluster_forward(cl, addr, c->method, path, c->body, &status, &out);
  if (rc) {
    char msg[400];
    snprintf(msg, sizeof msg, "the node that holds it (%s) cannot be reached: %s", addr,
             nc_strerror(rc));
    *ret = send_error(c, 502, "node_unreachable", NULL, msg);
  } else {
    *ret = send_json(c, (unsigned)status, out ? out : json_object());
  }
  return true;
}

static enum MHD_Result h_vm_get(struct call *c) {
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  int rc = nc_vmm_get(c->api->cfg.vmm, c->seg[2], &out, &err);
  return finish(c, rc, 200, out, &err);
}

static enum MHD_Result h_vm_delete(struct call *c) {
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  int rc = nc_vmm_action(c->api->cfg.vmm, c->seg[2], NC_ACT_DELETE, c->body, &out, &err);
  return finish(c, rc, 202, out, &err);
}

static enum MHD_Result h_vm_action(struct call *c) {
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  const char *a = c->seg[3];
  int rc;
  if (strcmp(a, "migrate") == 0) {
    if (!c->api->cfg.migrate_start)
      return send_error(c, 503, "unavailable", NULL, "live migration is not available");
    if (!c->body)
      return send_error(c, 400, "bad_json", NULL,
                        "the request body must be a JSON object like {\"to\": \"HOST:PORT\"}");
    /* In a cluster "to" may name a node instead of its API address. */
    json_t *to = json_object_get(c->body, "to");
    if (c->api->cfg.cluster && json_is_string(to) && !strchr(json_string_value(to), ':')) {
      char addr[256];
      if (nc_cluster_node_api(c->api->cfg.cluster, json_string_value(to), addr, sizeof addr) != 0)
        return send_error(c, 422, "unprocessable", "to",
                          "no node by that name in the cluster (see `novacron node list`)");
      json_object_set_new(c->body, "to", json_string(addr));
    }
    rc = c->api->cfg.migrate_start(c->api->cfg.migrate_data, c->seg[2], c->body, &out, &err);
    return finish(c, rc, 202, out, &err);
  }
  if (strcmp(a, "clone") == 0) {
    if (!c->body)
      return send_error(c, 400, "bad_json", NULL,
                        "the request body must be a JSON object like {\"name\": \"web-2\"}");
    rc = nc_vmm_clone(c->api->cfg.vmm, c->seg[2], c->body, &out, &err);
    return finish(c, rc, 202, out, &err);
  }
  enum nc_vm_action act;
  if (nc_vm_action_parse(a, &act) != 0 ||
      !(act == NC_ACT_START || act == NC_ACT_STOP || act == NC_ACT_PAUSE ||
        act == NC_ACT_RESUME || act == NC_ACT_REBOOT))
    return send_error(c, 404, "not_found", NULL,
                      "unknown vm action (use start, stop, pause, resume, reboot, clone or "
                      "migrate)");
  rc = nc_vmm_action(c->api->cfg.vmm, c->seg[2], act, c->body, &out, &err);
  return finish(c, rc, 202, out, &err);
}

static enum MHD_Result h_snap_list(struct call *c) {
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  int rc = nc_vmm_snapshot_list(c->api->cfg.vmm, c->seg[2], &out, &err);
  return finish(c, rc, 200, out, &err);
}

static enum MHD_Result h_snap_create(struct call *c) {
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  if (!c->body)
    return send_error(c, 400, "bad_json", NULL,
                      "the request body must be a JSON object like {\"name\": \"s1\"}");
  int rc = nc_vmm_snapshot_create(c->api->cfg.vmm, c->seg[2], c->body, &out, &err);
  return finish(c, rc, 202, out, &err);
}

static enum MHD_Result h_snap_restore(struct call *c) {
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  int rc = nc_vmm_snapshot_restore(c->api->cfg.vmm, c->seg[2], c->seg[4], &out, &err);
  return finish(c, rc, 202, out, &err);
}

static enum MHD_Result h_snap_delete(struct call *c) {
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  int rc = nc_vmm_snapshot_delete(c->api->cfg.vmm, c->seg[2], c->seg[4], &out, &err);
  return finish(c, rc, 202, out, &err);
}

/* Parses an optional non-negative integer query argument bounded by max. */
static int query_uint(struct call *c, const char *name, long max, long dflt, long *out) {
  const char *v = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, name);
  *out = dflt;
  if (!v)
    return 0;
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || end == v || *end || n < 0 || n > max)
    return -EINVAL;
  *out = n;
  return 0;
}

static enum MHD_Result h_console(struct call *c) {
  struct nc_errinfo err = {0};
  char path[1200];
  long tail;
  if (query_uint(c, "tail_bytes", CONSOLE_TAIL_MAX, CONSOLE_TAIL_DEFAULT, &tail) != 0)
    return send_error(c, 400, "invalid_field", "tail_bytes",
                      "tail_bytes must be an integer from 0 to 1048576");
  int rc = nc_vmm_console_log_path(c->api->cfg.vmm, c->seg[2], path, sizeof path, &err);
  if (rc)
    return send_errinfo(c, &err, rc);
  /* The log is capped (util/logcap.h): when it was just cut, the rest of
   * the tail is at the end of serial.log.1. */
  char old[1216];
  snprintf(old, sizeof old, "%s.1", path);
  char *buf = malloc((size_t)tail + 1);
  size_t got = 0;
  int bad = buf ? 0 : -ENOMEM;
  for (int part = 0; part < 2 && bad == 0 && got < (size_t)tail; part++) {
    int fd = open(part == 0 ? path : old, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      continue;
    off_t end = lseek(fd, 0, SEEK_END), want = (off_t)((size_t)tail - got);
    off_t start = end > want ? end - want : 0;
    memmove(buf + (end - start), buf, got); /* older bytes go first */
    ssize_t n = end > start ? pread(fd, buf, (size_t)(end - start), start) : 0;
    if (n < 0)
      bad = -errno;
    close(fd);
    if (n >= 0 && n < end - start) /* cut meanwhile: close the gap */
      memmove(buf + n, buf + (end - start), got);
    got += n > 0 ? (size_t)n : 0;
  }
  enum MHD_Result ret = bad ? send_error(c, 500, "internal", NULL, "cannot read the log")
                            : send_text(c, 200, "text/plain; charset=utf-8", buf, got);
  free(buf);
  return ret;
}

static enum MHD_Result h_migration_incoming(struct call *c) {
  struct nc_errinfo err = {0};
  json_t *out = NULL;
  if (!c->api->cfg.migrate_incoming)
    return send_error(c, 503, "unavailable", NULL, "live migration is not available");
  if (!c->body)
    return send_error(c, 400, "bad_json", NULL, "the request body must be a JSON object");
  int rc = c->api->cfg.migrate_incoming(c->api->cfg.migrate_data, c->body, &out, &err);
  return finish(c, rc, 201, out, &err);
}

static enum MHD_Result h_images_list(struct call *c) {
  json_t *j = nc_image_list_json(c->api->cfg.store);
  if (!j)
    return send_error(c, 500, "internal", NULL, "cannot read the image registry");
  return send_json(c, 200, j);
}

static enum MHD_Result h_images_create(struct call *c) {
  struct nc_errinfo err = {0};
  struct nc_image img;
  if (!c->body)
    return send_error(c, 400, "bad_json", NULL, "the request body must be a JSON object");
  int rc = nc_image_register(c->api->cfg.store, c->body, &img, &err);
  if (rc)
    return send_errinfo(c, &err, rc);
  return send_json(c, 201, nc_image_to_json(&img));
}

static enum MHD_Result h_node(struct call *c) {
  return send_json(c, 200, nc_vmm_node_json(c->api->cfg.vmm));
}

static enum MHD_Result h_ops_list(struct call *c) {
  return send_json(c, 200, json_pack("{s:o}", "operations", nc_ops_list_json(c->api->cfg.ops)));
}

static enum MHD_Result h_op_get(struct call *c) {
  long wait_s;
  if (query_uint(c, "wait_s", WAIT_S_MAX, 0, &wait_s) != 0)
    return send_error(c, 400, "invalid_field", "wait_s",
                      "wait_s must be an integer number of seconds from 0 to 300");
  json_t *out;
  int rc = nc_ops_get_json(c->api->cfg.ops, c->seg[2], (int)wait_s * 1000, &out);
  if (rc)
    return send_error(c, 404, "not_found", NULL, "no such operation (see `novacron op list`)");
  return send_json(c, 200, out);
}

static enum MHD_Result h_op_cancel(struct call *c) {
  json_t *out = NULL;
  int rc = nc_ops_cancel(c->api->cfg.ops, c->seg[2], &out);
  if (rc == -ENOENT)
    return send_error(c, 404, "not_found", NULL, "no such operation (see `novacron op list`)");
  if (rc) {
    const char *status = json_string_value(json_object_get(out, "status"));
    char msg[200];
    snprintf(msg, sizeof msg, "operation %s is %s and cannot be cancelled", c->seg[2],
             status ? status : "finished");
    json_decref(out);
    return send_error(c, 409, "conflict", NULL, msg);
  }
  return send_json(c, 202, out);
}

/* Server-sent events: one blocking reader per connection thread. */
struct sse {
  struct nc_events *ev;
  uint64_t after;
  char *pending;
  size_t plen, poff;
};

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  struct sse *s = cls;
  while (s->poff >= s->plen) {
    free(s->pending);
    s->pending = NULL;
    s->plen = s->poff = 0;
    char *type, *text;
    uint64_t seq, missed;
    int rc = nc_events_wait(s->ev, s->after, SSE_KEEPALIVE_MS, &type, &text, &seq, &missed);
    if (rc == -ECANCELED)
      return MHD_CONTENT_READER_END_OF_STREAM;
    int n;
    if (rc == -ETIMEDOUT) {
      n = asprintf(&s->pending, ": keepalive\n\n");
    } else if (rc == 0) {
      s->after = seq;
      n = asprintf(&s->pending, "%sid: %llu\nevent: %s\ndata: %s\n\n",
                   missed ? ": some events were dropped; re-read state\n" : "",
                   (unsigned long long)seq, type, text);
      free(type);
      free(text);
    } else {
      return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (n < 0)
      return MHD_CONTENT_READER_END_WITH_ERROR;
    s->plen = (size_t)n;
  }
  size_t k = s->plen - s->poff < max ? s->plen - s->poff : max;
  memcpy(buf, s->pending + s->poff, k);
  s->poff += k;
  return (ssize_t)k;
}

static void sse_free(void *cls) {
  struct sse *s = cls;
  free(s->pending);
  free(s);
}

static enum MHD_Result h_events(struct call *c) {
  struct sse *s = calloc(1, sizeof *s);
  if (!s)
    return MHD_NO;
  s->ev = c->api->cfg.events;
  s->after = nc_events_last(s->ev);
  const char *last = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Last-Event-ID");
  if (last) {
    char *end;
    unsigned long long v = strtoull(last, &end, 10);
    if (*last && !*end && v <= s->after)
      s->after = v;
  }
  struct MHD_Response *r =
      MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, s, sse_free);
  if (!r) {
    free(s);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", "text/event-stream");
  MHD_add_response_header(r, "Cache-Control", "no-store");
  c->req->status = 200;
  enum MHD_Result ret = MHD_queue_response(c->conn, 200, r);
  MHD_destroy_response(r);
  return ret;
}

/* ---- routing ------------------------------------------------------------ */

/* Segments: a literal, or "{...}" for any single segment. The template is
 * what docs/openapi.yaml must list and what metrics are labelled with. */
struct route {
  const char *method;
  const char *tmpl;
  handler_fn fn;
  bool public_route; /* no token needed on TCP */
};

static const struct route routes[] = {
    {"GET", "/healthz", h_healthz, true},
    {"GET", "/readyz", h_readyz, true},
    {"GET", "/metrics", h_metrics, true},
    {"GET", "/v1/vms", h_vms_list, false},
    {"POST", "/v1/vms", h_vms_create, false},
    {"GET", "/v1/vms/{name}", h_vm_get, false},
    {"DELETE", "/v1/vms/{name}", h_vm_delete, false},
    {"POST", "/v1/vms/{name}/{action}", h_vm_action, false},
    {"GET", "/v1/vms/{name}/snapshots", h_snap_list, false},
    {"POST", "/v1/vms/{name}/snapshots", h_snap_create, false},
    {"DELETE", "/v1/vms/{name}/snapshots/{snapshot}", h_snap_delete, false},
    {"POST", "/v1/vms/{name}/snapshots/{snapshot}/restore", h_snap_restore, false},
    {"GET", "/v1/vms/{name}/console", h_console, false},
    {"GET", "/v1/images", h_images_list, false},
    {"POST", "/v1/images", h_images_create, false},
    {"GET", "/v1/node", h_node, false},
    {"GET", "/v1/operations", h_ops_list, false},
    {"GET", "/v1/operations/{id}", h_op_get, false},
    {"POST", "/v1/operations/{id}/cancel", h_op_cancel, false},
    {"GET", "/v1/events", h_events, false},
    {"POST", "/v1/migrations/incoming", h_migration_incoming, false},
    {"GET", "/v1/cluster", h_cluster, false},
    {"POST", "/v1/cluster/{call}", h_cluster_setup, false},
    {"GET", "/v1/nodes", h_nodes, false},
    {"POST", "/v1/nodes/{node}/{action}", h_node_action, false},
    {"POST", "/v1/placement/explain", h_explain, false},
};
#define NROUTES (sizeof routes / sizeof routes[0])

bool nc_api_route_at(size_t i, const char **method, const char **tmpl) {
  if (i >= NROUTES)
    return false;
  *method = routes[i].method;
  *tmpl = routes[i].tmpl;
  return true;
}

/* Does path (already split) match the template? Literal segments win over
 * placeholders: "/v1/vms/x/snapshots" is the snapshot route, not an action,
 * because the table lists the specific route first for each method. */
static bool match(const char *tmpl, char *const *seg, size_t nseg) {
  size_t i = 0;
  const char *p = tmpl;
  while (*p == '/') {
    p++;
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (i >= nseg)
      return false;
    if (!(p[0] == '{' && p[len - 1] == '}') &&
        (strlen(seg[i]) != len || strncmp(seg[i], p, len) != 0))
      return false;
    i++;
    p += len;
  }
  return i == nseg;
}

static int split_path(const char *url, char **seg, size_t max, size_t *n) {
  *n = 0;
  if (url[0] != '/')
    return -EINVAL;
  const char *p = url + 1;
  if (*p == '\0')
    return 0;
  while (*n < max) {
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 0 || len > 256)
      return -EINVAL;
    seg[*n] = strndup(p, len);
    if (!seg[*n])
      return -ENOMEM;
    (*n)++;
    if (!e)
      return 0;
    p = e + 1;
  }
  return -EINVAL; /* too deep: no such route */
}

/* Picks the most specific matching route: a literal segment beats a
 * placeholder at the same position. */
static const struct route *find_route(const char *method, char *const *seg, size_t nseg,
                                      bool *path_known) {
  const struct route *best = NULL;
  int best_holes = 1000;
  *path_known = false;
  for (size_t i = 0; i < NROUTES; i++) {
    if (!match(routes[i].tmpl, seg, nseg))
      continue;
    *path_known = true;
    if (strcmp(routes[i].method, method) != 0)
      continue;
    int holes = 0; /* fewer placeholders = more specific */
    for (const char *p = routes[i].tmpl; *p; p++)
      holes += *p == '{';
    if (holes < best_holes) {
      best = &routes[i];
      best_holes = holes;
    }
  }
  if (best && strcmp(best->tmpl, "/v1/vms/{name}/{action}") == 0 && nseg == 4 &&
      (strcmp(seg[3], "snapshots") == 0 || strcmp(seg[3], "console") == 0))
    return NULL; /* those literals exist for other methods only */
  return best;
}

static void allowed_methods(char *const *seg, size_t nseg, char *out, size_t len) {
  out[0] = '\0';
  for (size_t i = 0; i < NROUTES; i++) {
    if (!match(routes[i].tmpl, seg, nseg) || strstr(out, routes[i].method))
      continue;
    if (strcmp(routes[i].tmpl, "/v1/vms/{name}/{action}") == 0 && nseg == 4 &&
        (strcmp(seg[3], "snapshots") == 0 || strcmp(seg[3], "console") == 0))
      continue;
    snprintf(out + strlen(out), len - strlen(out), "%s%s", out[0] ? ", " : "",
             routes[i].method);
  }
}

static bool token_eq(const char *t, const char *want) {
  if (!want || !want[0])
    return false;
  size_t a = strlen(t), b = strlen(want);
  unsigned char diff = (unsigned char)(a != b);
  for (size_t i = 0; i < a && i < b; i++) /* constant time over the shorter */
    diff |= (unsigned char)(t[i] ^ want[i]);
  return diff == 0;
}

static bool token_ok(struct nc_api *api, struct MHD_Connection *conn) {
  const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
  if (!h || strncmp(h, "Bearer ", 7) != 0)
    return false;
  bool a = token_eq(h + 7, api->cfg.token), b = token_eq(h + 7, api->cfg.cluster_token);
  return a | b;
}

static bool is_json_type(const char *ct) {
  if (!ct)
    return false;
  size_t n = strlen("application/json");
  return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';');
}

static enum MHD_Result dispatch(struct nc_api *api, struct MHD_Connection *conn,
                                struct request *req, const char *url, const char *method) {
  struct call c = {.api = api, .conn = conn, .req = req, .method = method};
  enum MHD_Result ret;
  bool known;
  if (split_path(url, c.seg, 8, &c.nseg) != 0) {
    req->route = "unmatched";
    ret = send_error(&c, 404, "not_found", NULL, "no such route (see docs/openapi.yaml)");
    goto out;
  }
  const struct route *r = find_route(method, c.seg, c.nseg, &known);
  if (req->tcp && !(r && r->public_route) && !token_ok(api, conn)) {
    req->route = r ? r->tmpl : "unmatched";
    ret = send_error(&c, 401, "unauthorized", NULL,
                     "missing or wrong bearer token (send \"Authorization: Bearer <token>\"; the "
                     "token is in <data-dir>/api.token)");
    goto out;
  }
  if (!r) {
    req->route = "unmatched";
    if (!known) {
      ret = send_error(&c, 404, "not_found", NULL, "no such route (see docs/openapi.yaml)");
      goto out;
    }
    char allow[64];
    allowed_methods(c.seg, c.nseg, allow, sizeof allow);
    char msg[160];
    char ex[24];
    snprintf(msg, sizeof msg, "method %s is not allowed here (allowed: %s)",
             nc_excerpt(method, ex, sizeof ex), allow);
    ret = send_error(&c, 405, "method_not_allowed", NULL, msg);
    goto out;
  }
  req->route = r->tmpl;
  if (req->too_big) {
    char msg[128];
    snprintf(msg, sizeof msg, "request body is larger than %d bytes", NC_API_BODY_MAX);
    ret = send_error(&c, 413, "too_large", NULL, msg);
    goto out;
  }
  if (req->len > 0) {
    if (req->bad_type) {
      ret = send_error(&c, 415, "unsupported_media_type", NULL,
                       "send the body as JSON with \"Content-Type: application/json\"");
      goto out;
    }
    json_error_t jerr;
    c.body = json_loadb(req->body, req->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!c.body) {
      char msg[300];
      snprintf(msg, sizeof msg, "the body is not valid JSON: %s (line %d, column %d)",
               jerr.text, jerr.line, jerr.column);
      ret = send_error(&c, 400, "bad_json", NULL, msg);
      goto out;
    }
    if (!json_is_object(c.body)) {
      ret = send_error(&c, 400, "bad_json", NULL, "the request body must be a JSON object");
      goto out;
    }
  }
  if (!forward_if_remote(&c, url, r->tmpl, &ret))
    ret = r->fn(&c);
out:
  json_decref(c.body);
  for (size_t i = 0; i < c.nseg; i++)
    free(c.seg[i]);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls, bool tcp) {
  struct nc_api *api = cls;
  struct request *req = *con_cls;
  if (!req) {
    req = calloc(1, sizeof *req);
    if (!req)
      return MHD_NO;
    req->tcp = tcp;
    clock_gettime(CLOCK_MONOTONIC, &req->started);
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > NC_API_BODY_MAX)
      req->too_big = true;
    req->bad_type =
        !is_json_type(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type"));
    *con_cls = req;
    return MHD_YES;
  }
  if (*upload_data_size > 0) {
    size_t n = *upload_data_size;
    if (!req->too_big && req->len + n > NC_API_BODY_MAX) {
      req->too_big = true;
      free(req->body);
      req->body = NULL;
    }
    if (!req->too_big) {
      char *b = realloc(req->body, req->len + n + 1);
      if (!b)
        return MHD_NO;
      memcpy(b + req->len, upload_data, n);
      req->body = b;
      req->len += n;
      req->body[req->len] = '\0';
    } else {
      req->len = 1; /* remember that a body was sent */
    }
    *upload_data_size = 0; /* consumed (or discarded past the cap) */
    return MHD_YES;
  }
  return dispatch(api, conn, req, url, method);
}

static enum MHD_Result on_unix(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls) {
  return on_request(cls, conn, url, method, version, upload_data, upload_data_size, con_cls,
                    false);
}

static enum MHD_Result on_tcp(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls) {
  return on_request(cls, conn, url, method, version, upload_data, upload_data_size, con_cls,
                    true);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  struct nc_api *api = cls;
  struct request *req = *con_cls;
  if (!req)
    return;
  if (req->route && api->m_requests) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double secs = (double)(now.tv_sec - req->started.tv_sec) +
                  (double)(now.tv_nsec - req->started.tv_nsec) / 1e9;
    char code[8];
    snprintf(code, sizeof code, "%u", req->status);
    const char *lv[] = {req->route, code};
    nc_metric_add(api->m_requests, lv, 1);
    const char *lr[] = {req->route};
    nc_metric_observe(api->m_duration, lr, secs);
  }
  free(req->body);
  free(req);
  *con_cls = NULL;
}

/* ---- life cycle --------------------------------------------------------- */

static int unix_listener(const char *path, int *out) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path)
    return -ENAMETOOLONG;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  unlink(path); /* a stale socket from a previous run; the data dir lock guards a live one */
  mode_t old = umask(0177);
  int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  umask(old);
  if (rc != 0 || chmod(path, 0600) != 0 || listen(fd, 128) != 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  *out = fd;
  return 0;
}

static int tcp_listener(const char *host, int port, int *out, int *bound) {
  struct sockaddr_storage ss;
  socklen_t sl;
  if (nc_sockaddr_numeric(host, port, &ss, &sl) != 0)
    return -EINVAL;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 128) != 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  *bound = nc_sockaddr_port(&ss);
  *out = fd;
  return 0;
}

static struct MHD_Daemon *start_mhd(struct nc_api *api, int fd, MHD_AccessHandlerCallback cb) {
  return MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                              MHD_USE_ERROR_LOG,
                          0, NULL, NULL, cb, api, MHD_OPTION_LISTEN_SOCKET, fd,
                          MHD_OPTION_CONNECTION_LIMIT, (unsigned)NC_API_CONNECTIONS_MAX,
                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                          MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
                          MHD_OPTION_NOTIFY_COMPLETED, on_completed, api, MHD_OPTION_END);
}

int nc_api_start(const struct nc_api_config *cfg, struct nc_api **out) {
  struct nc_api *api = calloc(1, sizeof *api);
  if (!api)
    return -ENOMEM;
  api->cfg = *cfg;
  if (cfg->metrics) {
    static const char *const l_req[] = {"route", "code", NULL};
    static const char *const l_dur[] = {"route", NULL};
    static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                     0.05,   0.1,   0.25,   0.5,   1,    2.5};
    api->m_requests = nc_metrics_register(cfg->metrics, NC_METRIC_COUNTER,
                                          "novacron_api_requests_total",
                                          "API requests by route template and status code.",
                                          l_req, NULL, 0);
    api->m_duration = nc_metrics_register(
        cfg->metrics, NC_METRIC_HISTOGRAM, "novacron_api_request_duration_seconds",
        "API request latency by route template.", l_dur, buckets,
        sizeof buckets / sizeof buckets[0]);
  }
  int rc = 0, fd = -1;
  if (cfg->unix_path) {
    if ((rc = unix_listener(cfg->unix_path, &fd)) != 0) {
      nc_error("api", "cannot listen on %s: %s", cfg->unix_path, nc_strerror(rc));
      goto fail;
    }
    api->unix_d = start_mhd(api, fd, on_unix);
    if (!api->unix_d) {
      close(fd);
      rc = -EIO;
      goto fail;
    }
  }
  if (cfg->listen_host) {
    if (!cfg->token) {
      rc = -EINVAL;
      goto fail;
    }
    if ((rc = tcp_listener(cfg->listen_host, cfg->listen_port, &fd, &api->tcp_port)) != 0) {
      nc_error("api", "cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
               nc_strerror(rc));
      goto fail;
    }
    api->tcp_d = start_mhd(api, fd, on_tcp);
    if (!api->tcp_d) {
      close(fd);
      rc = -EIO;
      goto fail;
    }
  }
  *out = api;
  return 0;
fail:
  nc_api_stop(api);
  return rc ? rc : -EIO;
}

int nc_api_tcp_port(const struct nc_api *api) { return api->tcp_port; }

void nc_api_stop(struct nc_api *api) {
  if (!api)
    return;
  if (api->cfg.events)
    nc_events_close(api->cfg.events); /* ends event streams so threads can exit */
  if (api->tcp_d)
    MHD_stop_daemon(api->tcp_d);
  if (api->unix_d)
    MHD_stop_daemon(api->unix_d);
  if (api->cfg.unix_path)
    unlink(api->cfg.unix_path);
  free(api);
}
