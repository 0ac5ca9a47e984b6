/* Forming a cluster: init, join and the member-add call. See bootstrap.h. */
#include "cluster/bootstrap.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/etcd_member.h"
#include "migrate/peer.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "vm/spec.h"

#define COMPONENT "cluster"
#define BOOT_FILE "cluster.json"
#define TOKEN_FILE "cluster.token"
#define MEMBER_START_MS 60000

static const char *jstr(json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}

/* cluster.json holds at most NC_CLUSTER_ENDPOINTS_MAX URLs and a few
 * names: anything bigger is not ours, and is not read into memory. */
#define BOOT_FILE_MAX (64 * 1024)

static json_t *boot_json(const char *path, json_error_t *je) {
  FILE *f = fopen(path, "rbe");
  if (!f) {
    snprintf(je->text, sizeof je->text, "%s", strerror(errno));
    return NULL;
  }
  struct stat st;
  json_t *j = NULL;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > BOOT_FILE_MAX)
    snprintf(je->text, sizeof je->text, "not a regular file of at most %d bytes", BOOT_FILE_MAX);
  else
    j = json_loadf(f, 0, je);
  fclose(f);
  return j;
}

int nc_cluster_boot_load(const char *data_dir, struct nc_cluster_boot *out) {
  memset(out, 0, sizeof *out);
  char path[1100];
  snprintf(path, sizeof path, "%s/" BOOT_FILE, data_dir);
  if (access(path, F_OK) != 0)
    return -ENOENT;
  json_error_t je;
  json_t *j = boot_json(path, &je);
  json_t *eps = j ? json_object_get(j, "endpoints") : NULL;
  if (!json_is_array(eps) || json_array_size(eps) == 0 ||
      json_array_size(eps) > NC_CLUSTER_ENDPOINTS_MAX) {
    nc_error(COMPONENT, "%s is not a cluster file (%s); move it away to start single-node",
             path, j ? "no endpoints" : je.text);
    json_decref(j);
    return -EINVAL;
  }
  size_t off = (size_t)snprintf(out->store_uri, sizeof out->store_uri, "etcd:");
  size_t i;
  json_t *e;
  json_array_foreach(eps, i, e) {
    const char *u = json_string_value(e);
    if (!u || strncmp(u, "http://", 7) != 0 || off + strlen(u) + 2 >= sizeof out->store_uri) {
      nc_error(COMPONENT, "%s: endpoint %zu is not an http:// URL", path, i);
      json_decref(j);
      return -EINVAL;
    }
    off += (size_t)snprintf(out->store_uri + off, sizeof out->store_uri - off, "%s%s",
                            i ? "," : "", u);
  }
  out->control_plane = !json_is_false(json_object_get(j, "control_plane"));
  snprintf(out->member_dir, sizeof out->member_dir, "%s/etcd", data_dir);
  out->has_member = nc_etcd_member_configured(out->member_dir);
  json_decref(j);
  return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static int check_ip(json_t *v, const char *field, char *out, size_t len,
                    struct nc_errinfo *err) {
  unsigned char buf[16];
  const char *s = json_string_value(v);
  if (!s || strlen(s) >= len ||
      (inet_pton(AF_INET, s, buf) != 1 && inet_pton(AF_INET6, s, buf) != 1))
    return nc_errinfo_set(err, 400, "invalid_field", field,
                          "%s must be this node's numeric IP address, the one other nodes "
                          "reach it on (e.g. 10.0.0.1)",
                          field);
  if (strcmp(s, "0.0.0.0") == 0 || strcmp(s, "::") == 0)
    return nc_errinfo_set(err, 400, "invalid_field", field,
                          "%s must be an address other nodes can reach, not a wildcard", field);
  snprintf(out, len, "%s", s);
  return 0;
}

static int port_field(json_t *body, const char *field, int def, int *out,
                      struct nc_errinfo *err) {
  json_t *v = json_object_get(body, field);
  *out = def;
  if (!v)
    return 0;
  if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535)
    return nc_errinfo_set(err, 400, "invalid_field", field, "%s must be a port from 1 to 65535",
                          field);
  *out = (int)json_integer_value(v);
  return 0;
}

/* HOST:PORT or http://HOST:PORT as other nodes give it: host characters
 * only (letters, digits, '.', '-', ':', '[', ']'), so it can go into a URL
 * and into etcd's "name=url,..." list unchanged. */
static bool addr_chars_ok(const char *s) {
  if (!*s)
    return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr(".-:[]", *s))
      return false;
  return true;
}

static void url_for(const char *ip, int port, char *out, size_t len) {
  snprintf(out, len, strchr(ip, ':') ? "http://[%s]:%d" : "http://%s:%d", ip, port);
}

static int write_file_0600(const char *path, const char *text) {
  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  size_t n = strlen(text);
  int rc = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc)
    unlink(tmp);
  return rc;
}

static int write_boot(const char *data_dir, json_t *endpoints, bool cp, const char *ip) {
  json_t *j = json_pack("{s:i, s:O, s:b, s:s}", "version", 1, "endpoints", endpoints,
                        "control_plane", cp, "address", ip);
  char *text = json_dumps(j, JSON_INDENT(2));
  json_decref(j);
  if (!text)
    return -ENOMEM;
  char path[1100];
  snprintf(path, sizeof path, "%s/" BOOT_FILE, data_dir);
  int rc = write_file_0600(path, text);
  free(text);
  return rc;
}

static int write_token(const char *data_dir, const char *token) {
  char path[1100], line[300];
  snprintf(path, sizeof path, "%s/" TOKEN_FILE, data_dir);
  snprintf(line, sizeof line, "%s\n", token);
  return write_file_0600(path, line);
}

/* Copies every record of the single-node store into the cluster under
 * /nodes/<node>/, leaving keys that exist there alone. */
static int import_records(const struct nc_cluster_setup *s, const char *uri,
                          struct nc_errinfo *err) {
  struct nc_store *st = NULL, *view = NULL;
  int rc = nc_store_open(uri, NULL, &st);
  if (rc)
    return nc_errinfo_set(err, 503, "unavailable", NULL, "cannot open the cluster store %s: %s",
                          uri, nc_strerror(rc));
  char prefix[128];
  snprintf(prefix, sizeof prefix, "/nodes/%s", s->node_name);
  rc = nc_store_view(st, prefix, false, &view);
  struct nc_kv_list l = {0};
  if (rc == 0)
    rc = nc_store_range(s->local, "", 0, &l);
  size_t copied = 0;
  for (size_t i = 0; rc == 0 && i < l.count; i++) {
    struct nc_store_cmp cmp = {.key = l.items[i].key, .target = NC_CMP_CREATE_REV,
                               .op = NC_CMP_EQ, .num = 0};
    struct nc_store_op op = {.type = NC_OP_PUT, .key = l.items[i].key,
                             .value = l.items[i].value, .value_len = l.items[i].value_len};
    bool ok = false;
    rc = nc_store_txn(view, &cmp, 1, &op, 1, NULL, 0, &ok, NULL);
    copied += ok;
  }
  nc_kv_list_free(&l);
  nc_store_close(view);
  nc_store_close(st);
  if (rc)
    return nc_errinfo_set(err, 503, "unavailable", NULL,
                          "cannot copy this node's records into the cluster: %s",
                          nc_strerror(rc));
  nc_info(COMPONENT, "copied %zu records of node \"%s\" into the cluster store", copied,
          s->node_name);
  return 0;
}

static int refuse_if_clustered(const char *data_dir, struct nc_errinfo *err) {
  char path[1100];
  snprintf(path, sizeof path, "%s/" BOOT_FILE, data_dir);
  if (access(path, F_OK) == 0)
    return nc_errinfo_set(err, 409, "conflict", NULL,
                          "this node is already in a cluster (%s exists)", path);
  return 0;
}

static void join_hint(const struct nc_cluster_setup *s, const char *token, char *out,
                      size_t len) {
  snprintf(out, len, "novacron cluster join %s --token %s --address <THIS NODE'S IP>",
           s->api_addr ? s->api_addr : "<ADDRESS:PORT>", token);
}

/* ---- init --------------------------------------------------------------- */

int nc_cluster_init(const struct nc_cluster_setup *s, json_t *body, json_t **out,
                    struct nc_errinfo *err) {
  static const char *const allowed[] = {"address", "etcd_client_port", "etcd_peer_port",
                                        NULL};
  char ip[64];
  int cport, pport;
  int rc = refuse_if_clustered(s->data_dir, err);
  if (!rc && !json_is_object(body))
    rc = nc_errinfo_set(err, 400, "bad_json", NULL, "the body must be {\"address\": IP}");
  if (!rc)
    rc = nc_json_check_fields(body, allowed, "cluster init", err);
  if (!rc)
    rc = check_ip(json_object_get(body, "address"), "address", ip, sizeof ip, err);
  if (!rc)
    rc = port_field(body, "etcd_client_port", 2379, &cport, err);
  if (!rc)
    rc = port_field(body, "etcd_peer_port", 2380, &pport, err);
  if (rc)
    return rc;
  char client[128], peer[128], dir[1100], etoken[33];
  url_for(ip, cport, client, sizeof client);
  url_for(ip, pport, peer, sizeof peer);
  snprintf(dir, sizeof dir, "%s/etcd", s->data_dir);
  nc_rand_hex(nc_rand_system(), etoken, 16);
  struct nc_etcd_member_config mc = {.data_dir = dir, .name = s->node_name, .peer_url = peer,
                                     .client_url = client, .state = NC_ETCD_STATE_NEW,
                                     .cluster_token = etoken,
                                     .start_timeout_ms = MEMBER_START_MS};
  struct nc_etcd_member *m = NULL;
  rc = nc_etcd_member_start(&mc, &m, err);
  if (rc)
    return rc;
  char uri[200];
  snprintf(uri, sizeof uri, "etcd:%s", client);
  rc = import_records(s, uri, err);
  char token[65];
  if (s->cluster_token && *s->cluster_token)
    snprintf(token, sizeof token, "%s", s->cluster_token);
  else
    nc_rand_hex(nc_rand_system(), token, 32);
  json_t *eps = json_pack("[s]", client);
  if (!rc && (rc = write_token(s->data_dir, token)) != 0)
    nc_errinfo_set(err, 500, "internal", NULL, "cannot write %s/" TOKEN_FILE ": %s",
                   s->data_dir, nc_strerror(rc));
  if (!rc && (rc = write_boot(s->data_dir, eps, true, ip)) != 0)
    nc_errinfo_set(err, 500, "internal", NULL, "cannot write %s/" BOOT_FILE ": %s",
                   s->data_dir, nc_strerror(rc));
  json_decref(eps);
  nc_etcd_member_stop(m, false); /* the restarted daemon adopts it */
  if (rc)
    return rc;
  char hint[600];
  join_hint(s, token, hint, sizeof hint);
  nc_info(COMPONENT, "cluster initialised: etcd member at %s; restarting in cluster mode",
          client);
  *out = json_pack("{s:s, s:s, s:s}", "token", token, "join", hint, "etcd", client);
  return 0;
}

/* ---- members ------------------------------------------------------------ */

static json_t *load_endpoints(const char *data_dir) {
  char path[1100];
  snprintf(path, sizeof path, "%s/" BOOT_FILE, data_dir);
  json_error_t je;
  json_t *j = boot_json(path, &je);
  json_t *eps = json_incref(json_object_get(j, "endpoints"));
  json_decref(j);
  return json_is_array(eps) ? eps : (json_decref(eps), NULL);
}

static void endpoints_csv(json_t *eps, char *out, size_t len) {
  size_t off = 0;
  out[0] = '\0';
  size_t i;
  json_t *e;
  json_array_foreach(eps, i, e) {
    if (off < len)
      off += (size_t)snprintf(out + off, len - off, "%s%s", i ? "," : "", json_string_value(e));
  }
}

int nc_cluster_members_add(const char *data_dir, json_t *body, json_t **out,
                           struct nc_errinfo *err) {
  static const char *const allowed[] = {"name", "peer_url", "worker", NULL};
  json_t *eps = load_endpoints(data_dir);
  if (!eps)
    return nc_errinfo_set(err, 404, "not_clustered", NULL, "this node is not in a cluster");
  int rc = json_is_object(body) ? nc_json_check_fields(body, allowed, "member", err)
                                : nc_errinfo_set(err, 400, "bad_json", NULL,
                                                 "the body must be {\"name\", \"peer_url\"}");
  const char *name = jstr(body, "name"), *peer = jstr(body, "peer_url");
  bool worker = json_is_true(json_object_get(body, "worker"));
  if (!rc && !nc_name_valid(name))
    rc = nc_errinfo_set(err, 400, "invalid_field", "name",
                        "name must be the joining node's name (a DNS label)");
  if (!rc && !worker &&
      (strncmp(peer, "http://", 7) != 0 || strlen(peer) > 200 || !addr_chars_ok(peer + 7)))
    rc = nc_errinfo_set(err, 400, "invalid_field", "peer_url",
                        "peer_url must be http://IP:PORT of the joining node's etcd member");
  if (rc) {
    json_decref(eps);
    return rc;
  }
  *out = json_pack("{s:O}", "endpoints", eps);
  if (!worker) {
    char csv[2048];
    endpoints_csv(eps, csv, sizeof csv);
    char *ic = NULL;
    rc = nc_etcd_member_add(csv, name, peer, &ic, err);
    if (rc) {
      json_decref(*out);
      *out = NULL;
      json_decref(eps);
      return rc;
    }
    json_object_set_new(*out, "initial_cluster", json_string(ic));
    nc_info(COMPONENT, "node \"%s\" added to etcd as a learner at %s", name, peer);
    free(ic);
  }
  json_decref(eps);
  return 0;
}

/* ---- join --------------------------------------------------------------- */

int nc_cluster_join(const struct nc_cluster_setup *s, json_t *body, json_t **out,
                    struct nc_errinfo *err) {
  static const char *const allowed[] = {"address", "token", "advertise", "control_plane",
                                        "etcd_client_port", "etcd_peer_port", NULL};
  char ip[64];
  int cport, pport;
  int rc = refuse_if_clustered(s->data_dir, err);
  if (!rc && !json_is_object(body))
    rc = nc_errinfo_set(err, 400, "bad_json", NULL,
                        "the body must be {\"address\": HOST:PORT, \"token\", \"advertise\"}");
  if (!rc)
    rc = nc_json_check_fields(body, allowed, "cluster join", err);
  const char *addr = jstr(body, "address"), *token = jstr(body, "token");
  if (!rc && (strlen(addr) > 200 || !strchr(addr, ':') || !addr_chars_ok(addr)))
    rc = nc_errinfo_set(err, 400, "invalid_field", "address",
                        "address must be HOST:PORT of a cluster member's API (what `cluster "
                        "init` printed)");
  if (!rc && (strlen(token) < 32 || strlen(token) > 255))
    rc = nc_errinfo_set(err, 400, "invalid_field", "token",
                        "token must be the cluster token `cluster init` printed (32+ "
                        "characters)");
  if (!rc)
    rc = check_ip(json_object_get(body, "advertise"), "advertise", ip, sizeof ip, err);
  if (!rc)
    rc = port_field(body, "etcd_client_port", 2379, &cport, err);
  if (!rc)
    rc = port_field(body, "etcd_peer_port", 2380, &pport, err);
  json_t *cpj = json_object_get(body, "control_plane");
  if (!rc && cpj && !json_is_boolean(cpj))
    rc = nc_errinfo_set(err, 400, "invalid_field", "control_plane",
                        "control_plane must be true or false");
  if (rc)
    return rc;
  bool cp = !json_is_false(cpj);
  char client[128], peer[128], dir[1100];
  url_for(ip, cport, client, sizeof client);
  url_for(ip, pport, peer, sizeof peer);
  json_t *req = cp ? json_pack("{s:s, s:s}", "name", s->node_name, "peer_url", peer)
                   : json_pack("{s:s, s:b}", "name", s->node_name, "worker", 1);
  long status = 0;
  json_t *res = NULL;
  rc = nc__peer_call("POST", addr, "/v1/cluster/members", token, req, 60000, &status, &res);
  json_decref(req);
  if (rc) {
    json_decref(res);
    return nc_errinfo_set(err, 502, "node_unreachable", "address",
                          "cannot reach the cluster member at %s: %s", addr, nc_strerror(rc));
  }
  if (status != 200) {
    const char *msg = jstr(json_object_get(res, "error"), "message");
    rc = nc_errinfo_set(err, status == 401 ? 401 : 502,
                        status == 401 ? "unauthorized" : "join_refused",
                        status == 401 ? "token" : NULL, "%s refused the join (HTTP %ld): %s",
                        addr, status, status == 401 ? "wrong cluster token" : msg);
    json_decref(res);
    return rc;
  }
  json_t *eps = json_deep_copy(json_object_get(res, "endpoints"));
  const char *ic = jstr(res, "initial_cluster");
  struct nc_etcd_member *m = NULL;
  if (cp) {
    snprintf(dir, sizeof dir, "%s/etcd", s->data_dir);
    struct nc_etcd_member_config mc = {.data_dir = dir, .name = s->node_name,
                                       .peer_url = peer, .client_url = client,
                                       .initial_cluster = ic, .state = NC_ETCD_STATE_EXISTING,
                                       .start_timeout_ms = MEMBER_START_MS};
    rc = nc_etcd_member_start(&mc, &m, err);
    char csv[2048];
    endpoints_csv(eps, csv, sizeof csv);
    if (!rc)
      rc = nc_etcd_member_promote(csv, peer, 60000, err);
    if (!rc)
      json_array_append_new(eps, json_string(client));
  }
  json_decref(res);
  char uri[2100] = "etcd:";
  if (!rc) {
    endpoints_csv(eps, uri + 5, sizeof uri - 5);
    rc = import_records(s, uri, err);
  }
  if (!rc && (rc = write_token(s->data_dir, token)) != 0)
    nc_errinfo_set(err, 500, "internal", NULL, "cannot write the cluster token: %s",
                   nc_strerror(rc));
  if (!rc && (rc = write_boot(s->data_dir, eps, cp, ip)) != 0)
    nc_errinfo_set(err, 500, "internal", NULL, "cannot write %s/" BOOT_FILE ": %s",
                   s->data_dir, nc_strerror(rc));
  nc_etcd_member_stop(m, false);
  json_decref(eps);
  if (rc)
    return rc;
  nc_info(COMPONENT, "joined the cluster through %s as %s; restarting in cluster mode", addr,
          cp ? "a control-plane node" : "a worker");
  *out = json_pack("{s:s, s:b}", "joined", addr, "control_plane", cp);
  return 0;
}
