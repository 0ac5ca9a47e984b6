/* The local etcd member: spawn or adopt, supervise, and the membership
 * calls (etcd_member.h). Processes are started with src/hv/proc.h's
 * detached spawner; the cluster is configured over etcd's JSON gateway
 * (etcd v3.4 rpc.proto, service Cluster) with libcurl and jansson. */
#include "cluster/etcd_member.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hv/proc.h"
#include "util/clock.h"
#include "util/capbuf.h"
#include "util/err.h"
#include "util/log.h"

#define COMPONENT "etcd"

#define SAVED_FILE "member.json"
#define SAVED_VERSION 1
#define SAVED_MAX_BYTES (64 * 1024)
#define PID_FILE "etcd.pid"
#define LOG_FILE "etcd.log"
#define ETCD_DATA "data"

#define CONNECT_TIMEOUT_MS 1000
#define REQUEST_TIMEOUT_MS 5000
#define HEALTH_TIMEOUT_MS 1500
#define HEALTH_POLL_MS 100
#define PROMOTE_POLL_MS 300
/* A member that ran this long before exiting restarts after the minimum
 * backoff again: it was not crash-looping. */
#define BACKOFF_RESET_MS 60000
/* Peer URLs of one member we keep from a MemberList answer. */
#define PEER_URLS_MAX 4
/* Bytes of etcd's log quoted into an error. */
#define LOG_TAIL_BYTES 300
#define ARGV_MAX 24
/* How long add and remove retry while etcd refuses a membership change
 * for a passing reason: with --strict-reconfig-check (the default) etcd
 * 3.4 answers "unhealthy cluster" until every voter has been connected for
 * 5 s (etcdserver.HealthInterval), e.g. right after the previous join. */
#define RECONFIG_RETRY_MS 20000
#define RECONFIG_POLL_MS 250

/* ---- small helpers ---- */

static int64_t now_ms(void) { return nc_mono_ms(nc_clock_system()); }

static int left_ms(int64_t deadline) {
  int64_t l = deadline - now_ms();
  return l <= 0 ? 0 : l > INT_MAX ? INT_MAX : (int)l;
}

static char *xstrdup(const char *s) {
  char *p = strdup(s);
  if (!p)
    abort(); /* small internal allocation: STYLE.md's OOM policy */
  return p;
}

/* Fills err (which may be NULL) and returns rc. */
static int fail(struct nc_errinfo *err, int rc, int status, const char *code, const char *field,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail(struct nc_errinfo *err, int rc, int status, const char *code, const char *field,
                const char *fmt, ...) {
  char msg[sizeof err->message];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  nc_errinfo_set(err, status, code, field, "%s", msg);
  return rc;
}

static bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

static bool valid_word(const char *s, size_t max) {
  size_t n = s ? strnlen(s, max + 1) : 0;
  if (n == 0 || n > max)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!name_char(s[i]))
      return false;
  return true;
}

/* "http://host:port" with a non-empty host, a port 1..65535 and nothing
 * after it (a trailing '/' is not accepted either: etcd compares peer
 * URLs as strings). TLS is not supported yet, so no https. */
static bool valid_url(const char *u) {
  if (!u || strnlen(u, NC_ETCD_MEMBER_URL_MAX + 1) > NC_ETCD_MEMBER_URL_MAX ||
      strncmp(u, "http://", 7) != 0)
    return false;
  const char *host = u + 7, *colon = strrchr(host, ':');
  if (!colon || colon == host)
    return false;
  for (const char *p = host; p < colon; p++)
    if (!(name_char(*p) || *p == ':' || *p == '[' || *p == ']'))
      return false;
  char *end;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  return colon[1] >= '0' && colon[1] <= '9' && errno == 0 && *end == '\0' && port >= 1 &&
         port <= 65535;
}

/* "name=url[,name=url...]" with valid names and URLs. */
static bool valid_initial_cluster(const char *s) {
  if (!s || !*s || strnlen(s, NC_ETCD_MEMBER_CLUSTER_MAX + 1) > NC_ETCD_MEMBER_CLUSTER_MAX)
    return false;
  char buf[NC_ETCD_MEMBER_CLUSTER_MAX + 1];
  snprintf(buf, sizeof buf, "%s", s);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '=');
    if (!eq)
      return false;
    *eq = '\0';
    if (!valid_word(tok, NC_ETCD_MEMBER_NAME_MAX) || !valid_url(eq + 1))
      return false;
  }
  return s[strlen(s) - 1] != ',' && s[0] != ',' && !strstr(s, ",,");
}

/* Splits a comma-separated endpoint list into out[] (each checked with
 * valid_url). Returns the count, or -EINVAL. */
static int parse_endpoints(const char *list, char out[][NC_ETCD_MEMBER_URL_MAX + 1],
                           struct nc_errinfo *err) {
  char ex[NC_EXCERPT_LEN];
  if (!list || !*list)
    return fail(err, -EINVAL, 400, "invalid_field", "endpoints",
                "no etcd endpoints given (want http://IP:2379[,http://...])");
  int n = 0;
  const char *p = list;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (n == NC_ETCD_MEMBER_ENDPOINTS_MAX || len > NC_ETCD_MEMBER_URL_MAX)
      goto bad;
    memcpy(out[n], p, len);
    out[n][len] = '\0';
    if (!valid_url(out[n]))
      goto bad;
    n++;
    if (!comma)
      return n;
    p = comma + 1;
  }
bad:
  nc_errinfo_set(err, 400, "invalid_field", "endpoints",
                 "etcd endpoints \"%s\" are not a list of at most %d http://IP:PORT URLs",
                 nc_excerpt(list, ex, sizeof ex), NC_ETCD_MEMBER_ENDPOINTS_MAX);
  return -EINVAL;
}

/* Writes data to path atomically: a temporary file, fsync, rename, fsync
 * of the directory, so a crash leaves the old file or the new one. */
static int write_file_atomic(const char *dir, const char *path, const char *data) {
  char tmp[PATH_MAX];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
    return -ENAMETOOLONG;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  int rc = 0;
  size_t len = strlen(data), off = 0;
  while (off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0) {
      rc = -errno;
      break;
    }
    off += (size_t)w;
  }
  if (rc == 0 && fsync(fd) < 0)
    rc = -errno;
  if (close(fd) < 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) < 0)
    rc = -errno;
  if (rc < 0) {
    unlink(tmp);
    return rc;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return 0;
}

/* ---- HTTP to the gateway ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* One request: GET when body is NULL, else POST of JSON. On 0, *status is
 * the HTTP status and *out the parsed answer (the caller's; NULL when the
 * answer was not JSON). -ECONNREFUSED when no connection was made (safe to
 * send elsewhere), -ETIMEDOUT when the request may have reached etcd,
 * NC_E_TOOBIG past NC_ETCD_MEMBER_BODY_MAX. why gets curl's reason. */
static int http_json(const char *url, const char *body, int timeout_ms, long *status, json_t **out,
                     char *why, size_t why_len) {
  *out = NULL;
  *status = 0;
  why[0] = '\0';
  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK)
    return -ENOMEM;
  CURL *c = curl_easy_init();
  if (!c)
    return -ENOMEM;
  struct nc_capbuf b = {.max = NC_ETCD_MEMBER_BODY_MAX};
  struct curl_slist *hdrs = NULL;
  char errbuf[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, nc_capbuf_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  if (body) {
    hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  }
  CURLcode cc = curl_easy_perform(c);
  int rc = 0;
  if (b.toobig) {
    rc = NC_E_TOOBIG;
    snprintf(why, why_len, "answer larger than %zu bytes", NC_ETCD_MEMBER_BODY_MAX);
  } else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
             (cc == CURLE_OPERATION_TIMEDOUT && b.len == 0 && strstr(errbuf, "onnect"))) {
    rc = -ECONNREFUSED;
    snprintf(why, why_len, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
  } else if (cc != CURLE_OK) {
    rc = -ETIMEDOUT;
    snprintf(why, why_len, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
  } else {
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    if (b.p)
      *out = json_loadb(b.p, b.len, 0, NULL);
  }
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(c);
  free(b.p);
  return rc;
}

/* etcd's errors that matter to membership, by text
 * (etcdserver/api/v3rpc/rpctypes/error.go, etcdserver/errors.go). Order
 * matters: the first match wins. */
enum { TRY_NEXT = 1 }; /* this member cannot answer; another may */
static const struct {
  const char *text;
  int err;
  int flags;
} member_errors[] = {
    {"in sync with leader", -EAGAIN, 0},
    {"can only promote a learner member", NC_E_CONFLICT, 0}, /* already a voter */
    {"member not found", -ENOENT, 0},
    {"too many learner members", NC_E_CONFLICT, 0},
    {"Peer URLs already exists", -EEXIST, 0},
    {"ID exists", -EEXIST, 0},
    {"not enough started members", NC_E_UNAVAIL, 0},
    {"unhealthy cluster", NC_E_UNAVAIL, 0},
    {"not supported for learner", NC_E_UNAVAIL, TRY_NEXT},
    {"no leader", NC_E_UNAVAIL, TRY_NEXT},
    {"leader changed", NC_E_UNAVAIL, TRY_NEXT},
    {"request timed out", -ETIMEDOUT, TRY_NEXT},
    {"server stopped", NC_E_UNAVAIL, TRY_NEXT},
};

/* POSTs req (a JSON object; borrowed) to path on the first endpoint that
 * answers. A member that refuses the connection, or says it cannot serve
 * this (learner, no leader), is skipped. On 0, *resp is the caller's. On
 * failure why holds etcd's text or the connection error. */
static int cluster_call(char eps[][NC_ETCD_MEMBER_URL_MAX + 1], int neps, const char *path,
                        json_t *req, json_t **resp, char *why, size_t why_len) {
  *resp = NULL;
  char *body = json_dumps(req, JSON_COMPACT);
  if (!body)
    return -ENOMEM;
  int rc = -ECONNREFUSED;
  for (int i = 0; i < neps; i++) {
    char url[NC_ETCD_MEMBER_URL_MAX + 64];
    snprintf(url, sizeof url, "%s%s", eps[i], path);
    long status;
    json_t *j = NULL;
    char w[CURL_ERROR_SIZE + 64];
    rc = http_json(url, body, REQUEST_TIMEOUT_MS, &status, &j, w, sizeof w);
    if (rc == 0 && status == 200 && json_is_object(j)) {
      *resp = j;
      break;
    }
    if (rc == 0) {
      const char *text = json_string_value(json_object_get(j, "message"));
      if (!text)
        text = json_string_value(json_object_get(j, "error"));
      snprintf(w, sizeof w, "HTTP %ld: %s", status, text ? text : "(no etcd error text)");
      rc = NC_E_PROTO;
      int flags = 0;
      for (size_t k = 0; text && k < sizeof member_errors / sizeof *member_errors; k++) {
        if (strstr(text, member_errors[k].text)) {
          rc = member_errors[k].err;
          flags = member_errors[k].flags;
          break;
        }
      }
      json_decref(j);
      snprintf(why, why_len, "%s: %s", eps[i], w);
      if (!(flags & TRY_NEXT))
        break;
      continue;
    }
    snprintf(why, why_len, "%s: %s", eps[i], w);
    if (rc != -ECONNREFUSED && rc != -ETIMEDOUT)
      break;
    /* A timed-out request may have been applied; the callers' loops
     * re-read the member list before anything is sent again. */
  }
  free(body);
  return rc;
}

/* A member from a MemberList answer. */
struct member {
  uint64_t id;
  char name[NC_ETCD_MEMBER_NAME_MAX + 1]; /* "" until it has started */
  char peers[PEER_URLS_MAX][NC_ETCD_MEMBER_URL_MAX + 1];
  int npeers;
  bool learner;
};

static int parse_id(const json_t *v, uint64_t *id) {
  if (json_is_integer(v) && json_integer_value(v) > 0) {
    *id = (uint64_t)json_integer_value(v);
    return 0;
  }
  const char *s = json_string_value(v);
  if (!s || !*s || s[0] == '-')
    return NC_E_PROTO;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(s, &end, 10);
  if (errno || *end || x == 0)
    return NC_E_PROTO;
  *id = (uint64_t)x;
  return 0;
}

/* Parses {"members":[...]} into a fresh array (the caller's). */
static int parse_members(const json_t *resp, struct member **out, int *n_out) {
  const json_t *arr = json_object_get(resp, "members");
  if (!json_is_array(arr) || json_array_size(arr) == 0)
    return NC_E_PROTO;
  if (json_array_size(arr) > NC_ETCD_MEMBER_MEMBERS_MAX)
    return NC_E_TOOBIG;
  int n = (int)json_array_size(arr);
  struct member *ms = calloc((size_t)n, sizeof *ms);
  if (!ms)
    return -ENOMEM;
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    const json_t *o = json_array_get(arr, (size_t)i);
    struct member *m = &ms[i];
    rc = parse_id(json_object_get(o, "ID"), &m->id);
    const char *name = json_string_value(json_object_get(o, "name"));
    if (rc == 0 && name && *name) {
      if (!valid_word(name, NC_ETCD_MEMBER_NAME_MAX))
        rc = NC_E_PROTO; /* not one of ours: refuse to build flags from it */
      else
        snprintf(m->name, sizeof m->name, "%s", name);
    }
    m->learner = json_is_true(json_object_get(o, "isLearner"));
    const json_t *peers = json_object_get(o, "peerURLs");
    if (rc == 0 && (!json_is_array(peers) || json_array_size(peers) == 0 ||
                    json_array_size(peers) > PEER_URLS_MAX))
      rc = NC_E_PROTO;
    for (size_t k = 0; rc == 0 && k < json_array_size(peers); k++) {
      const char *u = json_string_value(json_array_get(peers, k));
      if (!valid_url(u))
        rc = NC_E_PROTO;
      else
        snprintf(m->peers[m->npeers++], sizeof m->peers[0], "%s", u);
    }
  }
  if (rc < 0) {
    free(ms);
    return rc;
  }
  *out = ms;
  *n_out = n;
  return 0;
}

static bool has_peer(const struct member *m, const char *url) {
  for (int k = 0; k < m->npeers; k++)
    if (strcmp(m->peers[k], url) == 0)
      return true;
  return false;
}

static int list_members(char eps[][NC_ETCD_MEMBER_URL_MAX + 1], int neps, struct member **ms,
                        int *n, char *why, size_t why_len) {
  json_t *req = json_object(), *resp = NULL;
  if (!req)
    return -ENOMEM;
  int rc = cluster_call(eps, neps, "/v3/cluster/member/list", req, &resp, why, why_len);
  json_decref(req);
  if (rc == 0) {
    rc = parse_members(resp, ms, n);
    if (rc < 0)
      snprintf(why, why_len, "malformed or oversized member list (%s)", nc_strerror(rc));
  }
  json_decref(resp);
  return rc;
}

/* The error for a failed cluster call, in words for the operator. */
static int call_failed(struct nc_errinfo *err, int rc, const char *what, const char *endpoints,
                       const char *why) {
  char ex[NC_EXCERPT_LEN];
  nc_excerpt(endpoints, ex, sizeof ex);
  if (rc == -ECONNREFUSED)
    nc_errinfo_set(err, 503, "unavailable", "endpoints",
                   "%s: no etcd member answers on %s (%s); check the address and that the "
                   "cluster's control-plane hosts are up",
                   what, ex, why);
  else if (rc == NC_E_UNAVAIL || rc == -ETIMEDOUT)
    nc_errinfo_set(err, 503, "unavailable", "endpoints",
                   "%s: the etcd cluster at %s cannot change membership now (%s); wait until "
                   "a quorum of its members is up and retry",
                   what, ex, why);
  else
    nc_errinfo_set(err, 500, "etcd_error", "", "%s: etcd at %s: %s", what, ex, why);
  return rc;
}

/* name=peer for every member, ours (at peer_url) under name. A member
 * that never started has no name yet; it gets a placeholder, since etcd
 * only matches initial-cluster entries by peer URL. */
static int build_initial_cluster(const struct member *ms, int n, const char *name,
                                 const char *peer_url, char **out) {
  size_t cap = NC_ETCD_MEMBER_CLUSTER_MAX + 1, used = 0;
  char *s = malloc(cap);
  if (!s)
    return -ENOMEM;
  s[0] = '\0';
  for (int i = 0; i < n; i++) {
    char nm[NC_ETCD_MEMBER_NAME_MAX + 1];
    if (has_peer(&ms[i], peer_url))
      snprintf(nm, sizeof nm, "%s", name);
    else if (ms[i].name[0])
      snprintf(nm, sizeof nm, "%s", ms[i].name);
    else
      snprintf(nm, sizeof nm, "unstarted-%016" PRIx64, ms[i].id);
    for (int k = 0; k < ms[i].npeers; k++) {
      int w = snprintf(s + used, cap - used, "%s%s=%s", used ? "," : "", nm, ms[i].peers[k]);
      if (w < 0 || (size_t)w >= cap - used) {
        free(s);
        return NC_E_TOOBIG;
      }
      used += (size_t)w;
    }
  }
  *out = s;
  return 0;
}

int nc_etcd_member_add(const char *endpoints, const char *name, const char *peer_url,
                       char **initial_cluster_out, struct nc_errinfo *err) {
  *initial_cluster_out = NULL;
  char ex[NC_EXCERPT_LEN];
  if (!valid_word(name, NC_ETCD_MEMBER_NAME_MAX))
    return fail(err, -EINVAL, 400, "invalid_field", "name",
                "member name \"%s\" must be 1-%d characters of A-Z a-z 0-9 . _ -",
                nc_excerpt(name ? name : "", ex, sizeof ex), NC_ETCD_MEMBER_NAME_MAX);
  if (!valid_url(peer_url))
    return fail(err, -EINVAL, 400, "invalid_field", "peer_url",
                "peer URL \"%s\" is not http://IP:PORT (e.g. http://10.0.0.2:2380)",
                nc_excerpt(peer_url ? peer_url : "", ex, sizeof ex));
  char eps[NC_ETCD_MEMBER_ENDPOINTS_MAX][NC_ETCD_MEMBER_URL_MAX + 1];
  int neps = parse_endpoints(endpoints, eps, err);
  if (neps < 0)
    return neps;

  char why[512] = "";
  int rc = 0;
  int64_t deadline = now_ms() + RECONFIG_RETRY_MS;
  for (int attempt = 0;; attempt++) {
    if (attempt > 0) {
      if (left_ms(deadline) == 0)
        break;
      nc__proc_sleep_ms(RECONFIG_POLL_MS);
    }
    struct member *ms = NULL;
    int n = 0;
    rc = list_members(eps, neps, &ms, &n, why, sizeof why);
    if (rc == NC_E_UNAVAIL || rc == -ETIMEDOUT)
      continue;
    if (rc < 0)
      return call_failed(err, rc, "listing the cluster's members", endpoints, why);
    const struct member *mine = NULL;
    for (int i = 0; i < n; i++) {
      if (has_peer(&ms[i], peer_url))
        mine = &ms[i];
      else if (strcmp(ms[i].name, name) == 0) {
        nc_errinfo_set(err, 409, "conflict", "name",
                       "the cluster already has a member \"%s\" at %s; if that is this host "
                       "with a new address, remove it first (novacron cluster remove %s)",
                       name, ms[i].peers[0], name);
        free(ms);
        return NC_E_CONFLICT;
      }
    }
    if (mine && mine->name[0] && strcmp(mine->name, name) != 0) {
      nc_errinfo_set(err, 409, "conflict", "peer_url",
                     "peer URL %s already belongs to member \"%s\"; remove that member first "
                     "(novacron cluster remove %s) or use another address",
                     peer_url, mine->name, mine->name);
      free(ms);
      return NC_E_CONFLICT;
    }
    if (mine) {
      /* Added before (this join crashed and is retried, or ran twice). */
      if (attempt == 0)
        nc_info(COMPONENT, "member \"%s\" at %s is already in the cluster (%s); joining again",
                name, peer_url, mine->learner ? "learner" : "voter");
      rc = build_initial_cluster(ms, n, name, peer_url, initial_cluster_out);
      free(ms);
      if (rc < 0)
        return fail(err, rc, 413, "too_big", "",
                    "the cluster's member list exceeds %d bytes as --initial-cluster",
                    NC_ETCD_MEMBER_CLUSTER_MAX);
      return 0;
    }
    free(ms);

    json_t *req = json_pack("{s:[s],s:b}", "peerURLs", peer_url, "isLearner", 1), *resp = NULL;
    if (!req)
      return -ENOMEM;
    rc = cluster_call(eps, neps, "/v3/cluster/member/add", req, &resp, why, sizeof why);
    json_decref(req);
    json_decref(resp);
    if (rc == NC_E_CONFLICT)
      return fail(err, rc, 409, "conflict", "",
                  "another host is joining the cluster right now (%s); retry once "
                  "it has finished, or remove its unstarted member",
                  why);
    if (rc < 0 && rc != -EEXIST && rc != -ETIMEDOUT && rc != NC_E_UNAVAIL)
      return call_failed(err, rc, "adding the member", endpoints, why);
    if (rc == 0)
      nc_info(COMPONENT, "added member \"%s\" at %s as a learner", name, peer_url);
    /* Listed again on the next pass, which returns the initial cluster,
     * and also settles an add whose answer was lost (-ETIMEDOUT) or that
     * raced with another (-EEXIST). */
  }
  return call_failed(err, rc < 0 ? rc : -ETIMEDOUT, "adding the member", endpoints,
                     why[0] ? why : "the new member did not show up in the member list");
}

/* Finds the member called who (a name, or a peer URL). */
static const struct member *find_member(const struct member *ms, int n, const char *who) {
  bool url = strncmp(who, "http://", 7) == 0;
  for (int i = 0; i < n; i++)
    if (url ? has_peer(&ms[i], who) : strcmp(ms[i].name, who) == 0)
      return &ms[i];
  return NULL;
}

static json_t *id_request(uint64_t id) {
  char buf[32];
  snprintf(buf, sizeof buf, "%" PRIu64, id);
  return json_pack("{s:s}", "ID", buf);
}

int nc_etcd_member_promote(const char *endpoints, const char *peer_url, int timeout_ms,
                           struct nc_errinfo *err) {
  char ex[NC_EXCERPT_LEN];
  if (!valid_url(peer_url))
    return fail(err, -EINVAL, 400, "invalid_field", "peer_url",
                "peer URL \"%s\" is not http://IP:PORT",
                nc_excerpt(peer_url ? peer_url : "", ex, sizeof ex));
  char eps[NC_ETCD_MEMBER_ENDPOINTS_MAX][NC_ETCD_MEMBER_URL_MAX + 1];
  int neps = parse_endpoints(endpoints, eps, err);
  if (neps < 0)
    return neps;
  int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
  char why[512] = "";
  int rc;
  for (;;) {
    struct member *ms = NULL;
    int n = 0;
    rc = list_members(eps, neps, &ms, &n, why, sizeof why);
    if (rc == 0) {
      const struct member *m = find_member(ms, n, peer_url);
      uint64_t id = m ? m->id : 0;
      bool learner = m && m->learner;
      free(ms);
      if (!m)
        return fail(err, -ENOENT, 404, "not_found", "peer_url",
                    "no member of the cluster has peer URL %s; add it first "
                    "(novacron cluster join)",
                    peer_url);
      if (!learner)
        return 0;
      json_t *req = id_request(id), *resp = NULL;
      if (!req)
        return -ENOMEM;
      rc = cluster_call(eps, neps, "/v3/cluster/member/promote", req, &resp, why, sizeof why);
      json_decref(req);
      json_decref(resp);
      if (rc == 0 || rc == NC_E_CONFLICT) /* conflict: already a voter */
        return 0;
      if (rc != -EAGAIN && rc != NC_E_UNAVAIL && rc != -ETIMEDOUT)
        return call_failed(err, rc, "promoting the member", endpoints, why);
    } else if (rc != NC_E_UNAVAIL && rc != -ETIMEDOUT) {
      return call_failed(err, rc, "listing the cluster's members", endpoints, why);
    }
    if (left_ms(deadline) == 0)
      break;
    int pause = left_ms(deadline);
    nc__proc_sleep_ms(pause < PROMOTE_POLL_MS ? pause : PROMOTE_POLL_MS);
  }
  if (rc == -EAGAIN)
    return fail(err, -ETIMEDOUT, 503, "unavailable", "",
                "the learner at %s did not catch up with the leader within %d ms; "
                "check its etcd.log and the network between the hosts, then retry",
                peer_url, timeout_ms);
  call_failed(err, rc, "promoting the member", endpoints, why);
  return -ETIMEDOUT;
}

int nc_etcd_member_remove(const char *endpoints, const char *who, struct nc_errinfo *err) {
  char ex[NC_EXCERPT_LEN];
  if (!who || !(valid_word(who, NC_ETCD_MEMBER_NAME_MAX) || valid_url(who)))
    return fail(err, -EINVAL, 400, "invalid_field", "name",
                "\"%s\" is neither a member name nor a peer URL",
                nc_excerpt(who ? who : "", ex, sizeof ex));
  char eps[NC_ETCD_MEMBER_ENDPOINTS_MAX][NC_ETCD_MEMBER_URL_MAX + 1];
  int neps = parse_endpoints(endpoints, eps, err);
  if (neps < 0)
    return neps;
  char why[512] = "";
  int rc = 0;
  bool maybe_removed = false; /* an earlier attempt's answer was lost */
  int64_t deadline = now_ms() + RECONFIG_RETRY_MS;
  uint64_t id = 0;
  for (int attempt = 0;; attempt++) {
    if (attempt > 0) {
      if (left_ms(deadline) == 0)
        return call_failed(err, rc, "removing the member", endpoints, why);
      nc__proc_sleep_ms(RECONFIG_POLL_MS);
    }
    struct member *ms = NULL;
    int n = 0;
    rc = list_members(eps, neps, &ms, &n, why, sizeof why);
    if (rc == NC_E_UNAVAIL || rc == -ETIMEDOUT)
      continue;
    if (rc < 0)
      return call_failed(err, rc, "listing the cluster's members", endpoints, why);
    const struct member *m = find_member(ms, n, who);
    id = m ? m->id : 0;
    free(ms);
    if (!m && maybe_removed)
      break;
    if (!m)
      return fail(err, -ENOENT, 404, "not_found", "name",
                  "the cluster has no member \"%s\" (a member that never started "
                  "has no name yet: give its peer URL)",
                  who);
    json_t *req = id_request(id), *resp = NULL;
    if (!req)
      return -ENOMEM;
    rc = cluster_call(eps, neps, "/v3/cluster/member/remove", req, &resp, why, sizeof why);
    json_decref(req);
    json_decref(resp);
    if (rc == 0 || rc == -ENOENT) /* -ENOENT: removed meanwhile */
      break;
    if (rc == -ETIMEDOUT)
      maybe_removed = true;
    else if (rc != NC_E_UNAVAIL)
      return call_failed(err, rc, "removing the member", endpoints, why);
  }
  nc_info(COMPONENT, "removed member \"%s\" (id %" PRIx64 ")", who, id);
  return 0;
}

/* ---- the local member ---- */

/* The cluster part of the config, owned (what member.json holds). */
struct saved {
  char *name, *peer_url, *client_url, *initial_cluster, *token;
  enum nc_etcd_state state;
  int64_t quota_bytes;
};

struct nc_etcd_member {
  char *dir;  /* absolute */
  char *etcd; /* absolute program path */
  char *log_path;
  char *pid_path;
  char *data_arg; /* "--data-dir=<dir>/data": identifies our etcd */
  struct saved s;
  char *argv[ARGV_MAX];
  int stop_timeout_ms, backoff_min_ms, backoff_max_ms;
  bool adopted;
  int wake_fd; /* eventfd: stop */

  pthread_t thread;
  bool thread_started;
  pthread_mutex_t mu; /* guards the fields below */
  pid_t pid;          /* -1 between restarts */
  int pidfd;          /* only the supervisor replaces it (after start) */
  int64_t spawned_ms;
  unsigned restarts;
  bool stop;
};

static void saved_free(struct saved *s) {
  free(s->name);
  free(s->peer_url);
  free(s->client_url);
  free(s->initial_cluster);
  free(s->token);
  memset(s, 0, sizeof *s);
}

static const char *state_name(enum nc_etcd_state st) {
  return st == NC_ETCD_STATE_NEW ? "new" : "existing";
}

static int invalid(struct nc_errinfo *err, const char *field, const char *fmt, const char *v) {
  char ex[NC_EXCERPT_LEN];
  nc_errinfo_set(err, 400, "invalid_field", field, fmt, nc_excerpt(v ? v : "", ex, sizeof ex));
  return -EINVAL;
}

/* Checks a cluster config (from the caller or from member.json). */
static int check_saved(const struct saved *s, struct nc_errinfo *err) {
  if (!valid_word(s->name, NC_ETCD_MEMBER_NAME_MAX))
    return invalid(err, "name", "member name \"%s\" must be 1-63 characters of A-Z a-z 0-9 . _ -",
                   s->name);
  if (!valid_url(s->peer_url))
    return invalid(err, "peer_url",
                   "peer URL \"%s\" is not http://IP:PORT (e.g. http://10.0.0.1:2380)",
                   s->peer_url);
  if (!valid_url(s->client_url))
    return invalid(err, "client_url",
                   "client URL \"%s\" is not http://IP:PORT (e.g. http://10.0.0.1:2379)",
                   s->client_url);
  if (!valid_initial_cluster(s->initial_cluster))
    return invalid(err, "initial_cluster",
                   "initial cluster \"%s\" is not name=http://IP:PORT[,...] (at most 8191 bytes)",
                   s->initial_cluster);
  char want[NC_ETCD_MEMBER_NAME_MAX + NC_ETCD_MEMBER_URL_MAX + 2];
  snprintf(want, sizeof want, "%s=%s", s->name, s->peer_url);
  const char *hit = strstr(s->initial_cluster, want);
  size_t wl = strlen(want);
  if (!hit || (hit != s->initial_cluster && hit[-1] != ',') || (hit[wl] && hit[wl] != ','))
    return invalid(err, "initial_cluster",
                   "initial cluster \"%s\" does not list this member as name=peer URL",
                   s->initial_cluster);
  if (s->state != NC_ETCD_STATE_NEW && s->state != NC_ETCD_STATE_EXISTING)
    return invalid(err, "state", "initial cluster state must be new (init) or existing (join)%s",
                   "");
  if (!valid_word(s->token, NC_ETCD_MEMBER_TOKEN_MAX))
    return invalid(err, "cluster_token",
                   "cluster token \"%s\" must be 1-127 characters of A-Z a-z 0-9 . _ -", s->token);
  if (s->quota_bytes <= 0 || s->quota_bytes > ((int64_t)8 << 30)) {
    nc_errinfo_set(err, 400, "invalid_field", "quota_backend_bytes",
                   "etcd quota %" PRId64 " is outside 1 byte..8 GiB (etcd's own limit)",
                   s->quota_bytes);
    return -EINVAL;
  }
  return 0;
}

static char *path_in(const char *dir, const char *file) {
  size_t n = strlen(dir) + strlen(file) + 2;
  char *p = malloc(n);
  if (!p)
    abort();
  snprintf(p, n, "%s/%s", dir, file);
  return p;
}

bool nc_etcd_member_configured(const char *data_dir) {
  if (!data_dir || !*data_dir)
    return false;
  char *p = path_in(data_dir, SAVED_FILE);
  bool ok = access(p, F_OK) == 0;
  free(p);
  return ok;
}

static int save_config(const char *dir, const struct saved *s) {
  json_t *j =
      json_pack("{s:i,s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "version", SAVED_VERSION, "name", s->name,
                "peer_url", s->peer_url, "client_url", s->client_url, "initial_cluster",
                s->initial_cluster, "initial_cluster_state", state_name(s->state), "cluster_token",
                s->token, "quota_backend_bytes", (json_int_t)s->quota_bytes);
  if (!j)
    return -ENOMEM;
  char *text = json_dumps(j, JSON_INDENT(2));
  json_decref(j);
  if (!text)
    return -ENOMEM;
  size_t n = strlen(text);
  char *line = malloc(n + 2);
  if (!line)
    abort();
  memcpy(line, text, n);
  memcpy(line + n, "\n", 2);
  free(text);
  char *path = path_in(dir, SAVED_FILE);
  int rc = write_file_atomic(dir, path, line);
  free(path);
  free(line);
  return rc;
}

static int load_config(const char *dir, struct saved *s, struct nc_errinfo *err) {
  char *path = path_in(dir, SAVED_FILE);
  char *buf = malloc(SAVED_MAX_BYTES);
  if (!buf)
    abort();
  int rc = nc__proc_read_small(path, buf, SAVED_MAX_BYTES);
  json_t *j = NULL;
  if (rc == -ENOENT) {
    nc_errinfo_set(err, 404, "not_found", "data_dir",
                   "%s does not exist: this host runs no etcd member yet (novacron cluster "
                   "init on the first host, novacron cluster join on the others)",
                   path);
    goto out;
  }
  if (rc < 0) {
    nc_errinfo_set(err, 500, "io_error", "data_dir", "cannot read %s: %s", path, nc_strerror(rc));
    goto out;
  }
  j = json_loads(buf, 0, NULL);
  const char *st = json_string_value(json_object_get(j, "initial_cluster_state"));
  json_t *q = json_object_get(j, "quota_backend_bytes");
  if (!json_is_object(j) || json_integer_value(json_object_get(j, "version")) != SAVED_VERSION ||
      !st || !json_is_integer(q)) {
    nc_errinfo_set(err, 500, "corrupt", "data_dir",
                   "%s is not a version %d member file; restore it, or remove the member and "
                   "join again",
                   path, SAVED_VERSION);
    rc = NC_E_PROTO;
    goto out;
  }
  const char *fields[] = {"name", "peer_url", "client_url", "initial_cluster", "cluster_token"};
  char **dst[] = {&s->name, &s->peer_url, &s->client_url, &s->initial_cluster, &s->token};
  for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
    const char *v = json_string_value(json_object_get(j, fields[i]));
    *dst[i] = xstrdup(v ? v : "");
  }
  s->state = strcmp(st, "new") == 0        ? NC_ETCD_STATE_NEW
             : strcmp(st, "existing") == 0 ? NC_ETCD_STATE_EXISTING
                                           : 0;
  s->quota_bytes = (int64_t)json_integer_value(q);
  rc = check_saved(s, err);
  if (rc < 0) {
    char msg[sizeof err->message];
    snprintf(msg, sizeof msg, "%s", err ? err->message : "");
    nc_errinfo_set(err, 500, "corrupt", "data_dir", "%s: %s", path, msg);
  }
out:
  json_decref(j);
  free(buf);
  free(path);
  if (rc < 0)
    saved_free(s);
  return rc < 0 ? rc : 0;
}

/* 1 if one argument of the process is exactly arg, 0 if none is, <0 when
 * it cannot be read. etcd's command line is short; more than
 * SAVED_MAX_BYTES of it is not ours. */
static int cmdline_has_arg(pid_t pid, const char *arg) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
  char *buf = malloc(SAVED_MAX_BYTES);
  if (!buf)
    abort();
  int n = nc__proc_read_small(path, buf, SAVED_MAX_BYTES);
  int found = n < 0 ? n : 0;
  for (int off = 0; off < n; off += (int)strlen(buf + off) + 1) {
    if (strcmp(buf + off, arg) == 0) {
      found = 1;
      break;
    }
  }
  free(buf);
  return found;
}

/* The etcd already serving this member directory, if any: the pid file's
 * process is alive and runs with our --data-dir (a recycled pid does
 * not). */
static int find_live(struct nc_etcd_member *m, pid_t *pid_out, int *pidfd_out) {
  pid_t pid;
  if (nc__proc_read_pid(m->pid_path, &pid) < 0)
    return -ESRCH;
  int e;
  int pidfd = nc__proc_pidfd_open(pid, &e);
  if (pidfd < 0 && e != -ENOSYS)
    return -ESRCH;
  int rc = 0;
  if (nc__proc_alive(pid, pidfd) != 1)
    rc = -ESRCH;
  else if (cmdline_has_arg(pid, m->data_arg) != 1) {
    nc_warn(COMPONENT, "pid %d from %s is not this member's etcd (pid reused?)", (int)pid,
            m->pid_path);
    rc = -ESRCH;
  }
  if (rc < 0) {
    if (pidfd >= 0)
      close(pidfd);
    return rc;
  }
  *pid_out = pid;
  *pidfd_out = pidfd;
  return 0;
}

static char *fmt_arg(const char *flag, const char *value) {
  size_t n = strlen(flag) + strlen(value) + 2;
  char *p = malloc(n);
  if (!p)
    abort();
  snprintf(p, n, "%s=%s", flag, value);
  return p;
}

/* etcd's flags (etcd 3.4 `etcd --help`, and docs/etcd.md for why). The
 * heartbeat and election timeouts stay at etcd's defaults (100/1000 ms). */
static void build_argv(struct nc_etcd_member *m) {
  char num[32], data[PATH_MAX + 8];
  int i = 0;
  snprintf(data, sizeof data, "%s/%s", m->dir, ETCD_DATA);
  m->argv[i++] = xstrdup(m->etcd);
  m->argv[i++] = fmt_arg("--name", m->s.name);
  m->argv[i++] = xstrdup(m->data_arg);
  m->argv[i++] = fmt_arg("--listen-client-urls", m->s.client_url);
  m->argv[i++] = fmt_arg("--advertise-client-urls", m->s.client_url);
  m->argv[i++] = fmt_arg("--listen-peer-urls", m->s.peer_url);
  m->argv[i++] = fmt_arg("--initial-advertise-peer-urls", m->s.peer_url);
  m->argv[i++] = fmt_arg("--initial-cluster", m->s.initial_cluster);
  m->argv[i++] = fmt_arg("--initial-cluster-state", state_name(m->s.state));
  m->argv[i++] = fmt_arg("--initial-cluster-token", m->s.token);
  /* A member cut off by a partition keeps raising its term; without
   * pre-vote its return deposes the healthy leader and every node's lease
   * renewal stalls for an election (seen in the e2e partition test: all
   * leases lost for 4-5 s, which fences HA vms that were fine). */
  m->argv[i++] = xstrdup("--pre-vote=true");
  m->argv[i++] = xstrdup("--auto-compaction-mode=revision");
  snprintf(num, sizeof num, "%d", NC_ETCD_MEMBER_COMPACTION_REVISIONS);
  m->argv[i++] = fmt_arg("--auto-compaction-retention", num);
  snprintf(num, sizeof num, "%" PRId64, m->s.quota_bytes);
  m->argv[i++] = fmt_arg("--quota-backend-bytes", num);
  /* Warnings and errors only: the log is ours to keep small, and it is
   * rotated only when etcd restarts. */
  m->argv[i++] = xstrdup("--logger=zap");
  m->argv[i++] = xstrdup("--log-outputs=stderr");
  m->argv[i++] = xstrdup("--log-level=warn");
  m->argv[i] = NULL;
}

/* Spawns etcd and records its pid. The previous log becomes log.1. */
static int spawn(struct nc_etcd_member *m, pid_t *pid_out, int *pidfd_out) {
  char old[PATH_MAX + 8];
  snprintf(old, sizeof old, "%s.1", m->log_path);
  rename(m->log_path, old); /* ENOENT the first time */
  pid_t pid;
  int pidfd;
  int rc = nc__proc_spawn_detached(m->argv, m->log_path, &pid, &pidfd);
  if (rc < 0)
    return rc;
  char text[32];
  snprintf(text, sizeof text, "%d\n", (int)pid);
  rc = write_file_atomic(m->dir, m->pid_path, text);
  if (rc < 0) {
    /* Without the pid file a restarted novacrond would start a second
     * etcd on the same data: do not run this one. */
    nc__proc_signal(pid, pidfd, SIGKILL);
    nc__proc_wait_gone(pid, pidfd, 5000);
    if (pidfd >= 0)
      close(pidfd);
    return rc;
  }
  *pid_out = pid;
  *pidfd_out = pidfd;
  return 0;
}

/* SIGTERM, then SIGKILL after timeout_ms. */
static void terminate(pid_t pid, int pidfd, int timeout_ms) {
  if (nc__proc_signal(pid, pidfd, SIGTERM) < 0)
    return;
  if (nc__proc_wait_gone(pid, pidfd, timeout_ms) == 0)
    return;
  nc_warn(COMPONENT, "etcd pid %d ignored SIGTERM for %d ms; killing it", (int)pid, timeout_ms);
  nc__proc_signal(pid, pidfd, SIGKILL);
  nc__proc_wait_gone(pid, pidfd, 5000);
}

/* 1 healthy, 0 not (why says what was seen). */
static int health_once(const char *client_url, char *why, size_t why_len) {
  char url[NC_ETCD_MEMBER_URL_MAX + 16];
  snprintf(url, sizeof url, "%s/health", client_url);
  long status;
  json_t *j = NULL;
  char w[CURL_ERROR_SIZE + 64];
  int rc = http_json(url, NULL, HEALTH_TIMEOUT_MS, &status, &j, w, sizeof w);
  int ok = 0;
  if (rc < 0) {
    snprintf(why, why_len, "%s", w);
  } else {
    const char *h = json_string_value(json_object_get(j, "health"));
    ok = h && strcmp(h, "true") == 0;
    if (!ok)
      snprintf(why, why_len, "HTTP %ld, health %s (no leader: is a quorum of members up?)", status,
               h ? h : "?");
  }
  json_decref(j);
  return ok;
}

static void log_tail(const char *path, char *out, size_t cap) {
  int n = nc__proc_read_tail(path, out, cap);
  if (n <= 0) {
    snprintf(out, cap, "(empty)");
    return;
  }
  for (char *p = out; *p; p++)
    if (*p == '\n' || *p == '\r' || *p == '\t')
      *p = ' ';
}

/* Waits until healthy. While watch_pid (start, before supervising), an
 * exit of the process ends the wait with -ECHILD. */
static int wait_healthy(struct nc_etcd_member *m, int timeout_ms, bool watch_pid,
                        struct nc_errinfo *err) {
  int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
  char why[CURL_ERROR_SIZE + 128] = "not checked";
  for (;;) {
    if (watch_pid) {
      pthread_mutex_lock(&m->mu);
      pid_t pid = m->pid;
      int pidfd = m->pidfd;
      pthread_mutex_unlock(&m->mu);
      if (!nc__proc_alive(pid, pidfd)) {
        char tail[LOG_TAIL_BYTES];
        log_tail(m->log_path, tail, sizeof tail);
        nc_errinfo_set(err, 500, "etcd_exited", "",
                       "etcd (pid %d) exited while starting member \"%s\"; see %s: ...%s", (int)pid,
                       m->s.name, m->log_path, tail);
        return -ECHILD;
      }
    }
    if (health_once(m->s.client_url, why, sizeof why))
      return 0;
    int left = left_ms(deadline);
    if (left == 0)
      break;
    nc__proc_sleep_ms(left < HEALTH_POLL_MS ? left : HEALTH_POLL_MS);
  }
  nc_errinfo_set(err, 503, "unavailable", "",
                 "etcd member \"%s\" is not healthy on %s after %d ms (%s); see %s", m->s.name,
                 m->s.client_url, timeout_ms, why, m->log_path);
  return -ETIMEDOUT;
}

/* Sleeps up to ms, or until stop. true when stopping. */
static bool wait_stop(struct nc_etcd_member *m, int fd, int ms) {
  struct pollfd p[2] = {{.fd = m->wake_fd, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
  int r = poll(p, fd >= 0 ? 2 : 1, ms);
  (void)r;
  pthread_mutex_lock(&m->mu);
  bool stop = m->stop;
  pthread_mutex_unlock(&m->mu);
  return stop;
}

static void *supervise(void *arg) {
  struct nc_etcd_member *m = arg;
  int backoff = m->backoff_min_ms;
  for (;;) {
    pthread_mutex_lock(&m->mu);
    pid_t pid = m->pid;
    int pidfd = m->pidfd;
    int64_t spawned = m->spawned_ms;
    pthread_mutex_unlock(&m->mu);

    /* Until it exits: the pidfd polls readable then; without pidfds,
     * look every 250 ms. */
    bool stop = false;
    while (!(stop = wait_stop(m, pidfd, pidfd >= 0 ? -1 : 250)) && nc__proc_alive(pid, pidfd)) {
    }
    if (stop)
      break;
    char tail[LOG_TAIL_BYTES];
    log_tail(m->log_path, tail, sizeof tail);
    if (now_ms() - spawned >= BACKOFF_RESET_MS)
      backoff = m->backoff_min_ms;
    nc_warn(COMPONENT, "member \"%s\": etcd pid %d exited; restarting in %d ms (log %s: ...%s)",
            m->s.name, (int)pid, backoff, m->log_path, tail);
    pthread_mutex_lock(&m->mu);
    if (m->pidfd >= 0)
      close(m->pidfd);
    m->pid = -1;
    m->pidfd = -1;
    pthread_mutex_unlock(&m->mu);

    for (;;) {
      if (wait_stop(m, -1, backoff))
        goto out;
      backoff = backoff > m->backoff_max_ms / 2 ? m->backoff_max_ms : backoff * 2;
      int npidfd;
      pid_t npid;
      int rc = spawn(m, &npid, &npidfd);
      if (rc == 0) {
        pthread_mutex_lock(&m->mu);
        m->pid = npid;
        m->pidfd = npidfd;
        m->spawned_ms = now_ms();
        m->restarts++;
        pthread_mutex_unlock(&m->mu);
        nc_info(COMPONENT, "member \"%s\": etcd restarted as pid %d", m->s.name, (int)npid);
        break;
      }
      nc_error(COMPONENT, "member \"%s\": cannot start %s: %s; retrying in %d ms", m->s.name,
               m->etcd, nc_strerror(rc), backoff);
    }
  }
out:
  return NULL;
}

/* Once the member that bootstrapped a new cluster has served, its saved
 * state becomes "existing". etcd ignores the state while its data exists;
 * should the data be lost, "existing" makes etcd refuse to start (no
 * peer to fetch the cluster from) instead of bootstrapping a second,
 * empty cluster under the same name. Only the file changes: the running
 * supervisor's flags stay as they were, which is equivalent while the
 * data exists. */
static void settle_new(struct nc_etcd_member *m) {
  pthread_mutex_lock(&m->mu);
  bool todo = m->s.state == NC_ETCD_STATE_NEW;
  pthread_mutex_unlock(&m->mu);
  if (!todo)
    return;
  char *wal = path_in(m->dir, ETCD_DATA "/member/wal");
  bool have_data = access(wal, F_OK) == 0;
  free(wal);
  if (!have_data)
    return;
  struct saved s = m->s;
  s.state = NC_ETCD_STATE_EXISTING;
  int rc = save_config(m->dir, &s);
  if (rc < 0) {
    nc_warn(COMPONENT, "member \"%s\": cannot record that the cluster exists in %s/%s: %s",
            m->s.name, m->dir, SAVED_FILE, nc_strerror(rc));
    return;
  }
  pthread_mutex_lock(&m->mu);
  m->s.state = NC_ETCD_STATE_EXISTING;
  pthread_mutex_unlock(&m->mu);
}

static void member_free(struct nc_etcd_member *m) {
  if (!m)
    return;
  if (m->pidfd >= 0)
    close(m->pidfd);
  if (m->wake_fd >= 0)
    close(m->wake_fd);
  for (int i = 0; i < ARGV_MAX && m->argv[i]; i++)
    free(m->argv[i]);
  saved_free(&m->s);
  free(m->dir);
  free(m->etcd);
  free(m->log_path);
  free(m->pid_path);
  free(m->data_arg);
  pthread_mutex_destroy(&m->mu);
  free(m);
}

/* The member directory: created 0700 (etcd wants its data private) and
 * made absolute, so the --data-dir that identifies our etcd is the same
 * however the caller spelled it. */
static int prepare_dir(const char *data_dir, char **out, struct nc_errinfo *err) {
  char ex[NC_EXCERPT_LEN];
  if (!data_dir || !*data_dir)
    return invalid(err, "data_dir", "no member directory given%s", "");
  if (strlen(data_dir) > PATH_MAX - 64)
    return invalid(err, "data_dir", "member directory \"%s\" is too long", data_dir);
  if (mkdir(data_dir, 0700) < 0 && errno != EEXIST) {
    int e = errno;
    nc_errinfo_set(err, 500, "io_error", "data_dir",
                   "cannot create the etcd member directory \"%s\": %s (does its parent exist "
                   "and belong to novacrond's user?)",
                   nc_excerpt(data_dir, ex, sizeof ex), strerror(e));
    return -e;
  }
  char abs[PATH_MAX];
  if (!realpath(data_dir, abs)) {
    int e = errno;
    nc_errinfo_set(err, 500, "io_error", "data_dir", "etcd member directory \"%s\": %s",
                   nc_excerpt(data_dir, ex, sizeof ex), strerror(e));
    return -e;
  }
  *out = xstrdup(abs);
  return 0;
}

int nc_etcd_member_start(const struct nc_etcd_member_config *cfg, struct nc_etcd_member **out,
                         struct nc_errinfo *err) {
  *out = NULL;
  struct nc_etcd_member *m = calloc(1, sizeof *m);
  if (!m)
    return -ENOMEM;
  pthread_mutex_init(&m->mu, NULL);
  m->pid = -1;
  m->pidfd = -1;
  m->wake_fd = -1;
  bool spawned = false;
  char ex[NC_EXCERPT_LEN];

  int rc = prepare_dir(cfg->data_dir, &m->dir, err);
  if (rc < 0)
    goto fail;

  /* The program first: the most likely thing to be missing. */
  const char *prog = cfg->etcd_path ? cfg->etcd_path : "etcd";
  char path[PATH_MAX];
  rc = nc__proc_find_program(prog, path, sizeof path);
  if (rc < 0) {
    nc_errinfo_set(err, 500, "etcd_missing", "etcd_path",
                   "etcd program \"%s\" not found or not executable (%s): install etcd-server "
                   "(scripts/install-deps does), and run systemctl disable --now etcd so "
                   "Debian's own member does not hold the ports",
                   nc_excerpt(prog, ex, sizeof ex), nc_strerror(rc));
    rc = -ENOENT;
    goto fail;
  }
  m->etcd = xstrdup(path);

  if (cfg->name) {
    m->s.name = xstrdup(cfg->name);
    m->s.peer_url = xstrdup(cfg->peer_url ? cfg->peer_url : "");
    m->s.client_url = xstrdup(cfg->client_url ? cfg->client_url : "");
    if (cfg->initial_cluster) {
      m->s.initial_cluster = xstrdup(cfg->initial_cluster);
    } else {
      m->s.initial_cluster = fmt_arg(cfg->name, cfg->peer_url ? cfg->peer_url : "");
    }
    m->s.token = xstrdup(cfg->cluster_token ? cfg->cluster_token : NC_ETCD_MEMBER_TOKEN);
    m->s.state = cfg->state;
    m->s.quota_bytes =
        cfg->quota_backend_bytes ? cfg->quota_backend_bytes : NC_ETCD_MEMBER_QUOTA_BYTES;
    rc = check_saved(&m->s, err);
    if (rc == 0) {
      rc = save_config(m->dir, &m->s);
      if (rc < 0)
        nc_errinfo_set(err, 500, "io_error", "data_dir", "cannot write %s/%s: %s", m->dir,
                       SAVED_FILE, nc_strerror(rc));
    }
  } else {
    rc = load_config(m->dir, &m->s, err);
  }
  if (rc < 0)
    goto fail;

  m->log_path = cfg->log_path ? xstrdup(cfg->log_path) : path_in(m->dir, LOG_FILE);
  m->pid_path = path_in(m->dir, PID_FILE);
  char data[PATH_MAX + 8];
  snprintf(data, sizeof data, "%s/%s", m->dir, ETCD_DATA);
  m->data_arg = fmt_arg("--data-dir", data);
  m->stop_timeout_ms =
      cfg->stop_timeout_ms > 0 ? cfg->stop_timeout_ms : NC_ETCD_MEMBER_STOP_TIMEOUT_MS;
  m->backoff_min_ms = cfg->backoff_min_ms > 0 ? cfg->backoff_min_ms : NC_ETCD_MEMBER_BACKOFF_MIN_MS;
  m->backoff_max_ms = cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : NC_ETCD_MEMBER_BACKOFF_MAX_MS;
  if (m->backoff_max_ms < m->backoff_min_ms)
    m->backoff_max_ms = m->backoff_min_ms;
  build_argv(m);
  m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (m->wake_fd < 0) {
    rc = -errno;
    goto fail;
  }

  if (find_live(m, &m->pid, &m->pidfd) == 0) {
    m->adopted = true;
    nc_info(COMPONENT, "member \"%s\": adopted running etcd pid %d", m->s.name, (int)m->pid);
  } else {
    rc = spawn(m, &m->pid, &m->pidfd);
    if (rc < 0) {
      nc_errinfo_set(err, 500, "spawn_failed", "etcd_path", "cannot start %s: %s (see %s)", m->etcd,
                     nc_strerror(rc), m->log_path);
      goto fail;
    }
    spawned = true;
    nc_info(COMPONENT, "member \"%s\": started etcd pid %d (%s, client %s, peer %s)", m->s.name,
            (int)m->pid, state_name(m->s.state), m->s.client_url, m->s.peer_url);
  }
  m->spawned_ms = now_ms();

  if (cfg->start_timeout_ms >= 0) {
    int t = cfg->start_timeout_ms ? cfg->start_timeout_ms : NC_ETCD_MEMBER_START_TIMEOUT_MS;
    rc = wait_healthy(m, t, true, err);
    if (rc < 0)
      goto fail;
    settle_new(m);
  }
  rc = pthread_create(&m->thread, NULL, supervise, m);
  if (rc != 0) {
    rc = -rc;
    nc_errinfo_set(err, 500, "internal", "", "cannot start the etcd supervisor: %s", strerror(-rc));
    goto fail;
  }
  m->thread_started = true;
  *out = m;
  return 0;

fail:
  if (spawned) {
    terminate(m->pid, m->pidfd, m->stop_timeout_ms);
    unlink(m->pid_path);
  }
  member_free(m);
  return rc;
}

int nc_etcd_member_wait_healthy(struct nc_etcd_member *m, int timeout_ms, struct nc_errinfo *err) {
  int rc = wait_healthy(m, timeout_ms, false, err);
  if (rc == 0)
    settle_new(m);
  return rc;
}

void nc_etcd_member_stop(struct nc_etcd_member *m, bool kill_member) {
  if (!m)
    return;
  pthread_mutex_lock(&m->mu);
  m->stop = true;
  pthread_mutex_unlock(&m->mu);
  uint64_t one = 1;
  ssize_t w = write(m->wake_fd, &one, sizeof one);
  (void)w;
  if (m->thread_started)
    pthread_join(m->thread, NULL);
  if (kill_member && m->pid > 0) {
    terminate(m->pid, m->pidfd, m->stop_timeout_ms);
    unlink(m->pid_path);
    nc_info(COMPONENT, "member \"%s\": etcd pid %d stopped", m->s.name, (int)m->pid);
  }
  member_free(m);
}

pid_t nc_etcd_member_pid(struct nc_etcd_member *m) {
  pthread_mutex_lock(&m->mu);
  pid_t pid = m->pid;
  pthread_mutex_unlock(&m->mu);
  return pid;
}

unsigned nc_etcd_member_restarts(struct nc_etcd_member *m) {
  pthread_mutex_lock(&m->mu);
  unsigned n = m->restarts;
  pthread_mutex_unlock(&m->mu);
  return n;
}

bool nc_etcd_member_adopted(struct nc_etcd_member *m) { return m->adopted; }

const char *nc_etcd_member_client_url(struct nc_etcd_member *m) { return m->s.client_url; }
