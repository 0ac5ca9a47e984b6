/* The etcd back-end: the cluster store, an etcd v3 cluster reached through
 * its gRPC gateway (HTTP/1.1 + JSON) with libcurl and jansson.
 *
 * API reference: https://etcd.io/docs/v3.4/dev-guide/api_grpc_gateway/ and
 * etcdserver/etcdserverpb/rpc.proto (the JSON field names are the proto
 * field names; int64 fields travel as decimal strings, bytes fields as
 * standard base64, and fields at their zero value are left out).
 *
 * Mapping (store.h follows etcd's data model, so most of it is direct):
 *  - get / range        POST /v3/kv/range (linearizable). A prefix P is the
 *                       interval [P, P with its last byte + 1); "" and
 *                       all-0xff prefixes use range_end "\0" = "to the end".
 *  - put / delete / txn POST /v3/kv/txn. store.c turns put and delete into
 *                       txns without compares, so every write is one txn
 *                       and one revision, as in etcd.
 *  - compares           Compare{target VERSION|CREATE|MOD|VALUE, result
 *                       EQUAL|NOT_EQUAL|LESS|GREATER}. etcd compares an
 *                       absent key's numbers as 0 and fails every VALUE
 *                       compare on it (applyCompare in apply.go): exactly
 *                       store.h's rules.
 *  - leases             /v3/lease/grant (TTL rounded up to whole seconds),
 *                       /v3/lease/keepalive (one request on the stream; a
 *                       TTL of 0 in the answer means unknown or expired),
 *                       /v3/lease/revoke. etcd's lessor deletes a lease's
 *                       keys in one txn, in key order.
 *  - compact            /v3/kv/compaction. "required revision has been
 *                       compacted" maps to NC_E_COMPACTED, "future revision"
 *                       to -EINVAL.
 *  - watch              one long POST /v3/watch per watch, on its own
 *                       thread, which parses the newline-delimited
 *                       WatchResponses into a bounded queue.
 *
 * Watches and compaction. etcd accepts a watch from revision R while R >=
 * the compaction point C, but compacting at C keeps only the newest version
 * of each key at C, so the events *at* C are incomplete. store.h promises
 * whole history strictly after start_rev unless start_rev < C. So a watch
 * after base asks etcd for start_revision = base and drops the events at
 * base itself: etcd then refuses exactly when base < C. A WatchResponse
 * always holds whole revisions (etcd's eventBatch never splits one, and we
 * never ask for fragments), so after each message the watch knows the last
 * revision it has in full, and reconnects from there after a member dies.
 *
 * Requests and failover. Each call goes to the member that answered last;
 * on a connection error it moves to the next endpoint. A request that may
 * have reached a member is retried only if it is a read (or otherwise
 * idempotent); for a write the outcome is unknown and the caller gets
 * -ETIMEDOUT (store_etcd.h). CURLOPT_PREREQFUNCTION tells the two apart:
 * libcurl calls it right before it sends a request, including when it
 * silently resends on a fresh connection after a kept-alive one died.
 * Every request carries the gRPC metadata hasleader=true (grpc-gateway
 * forwards Grpc-Metadata-* headers), so a member cut off from its leader
 * answers "no leader" at once, which is safe to retry elsewhere, instead of
 * holding the request until it times out, and it ends watch streams, which
 * then move to another member.
 *
 * Threads: every call may come from any thread. Curl easy handles are
 * pooled under the store mutex, each used by one thread at a time, so
 * kept-alive connections are reused. */
#include "store/store_etcd.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store_backend.h"
#include "util/capbuf.h"
#include "util/err.h"
#include "util/log.h"

#define COMPONENT "store"

/* Idle curl handles kept for reuse (each holds its kept-alive connection). */
#define POOL_MAX 16
/* A response other than a range: one key (a value written by another
 * client may exceed NC_STORE_VALUE_MAX up to etcd's request cap), a txn
 * answer, a lease. */
#define UNARY_BODY_MAX ((size_t)8 * 1024 * 1024)
/* A range answer at the caps: the data in base64 plus generous room for
 * the JSON around each key. Past this the range is NC_E_TOOBIG anyway. */
#define RANGE_BODY_MAX                                                          \
  (((size_t)NC_STORE_RANGE_BYTES_MAX / 3 + 1) * 4 + ((size_t)NC_STORE_RANGE_MAX + 1) * 256 + \
   65536)
/* Longest key we decode from etcd (ours are at most NC_STORE_KEY_MAX; keys
 * written by others are cut off by the body caps). */
#define DECODE_KEY_MAX ((size_t)64 * 1024)
#define BACKOFF_MIN_MS 25
#define BACKOFF_MAX_MS 500

/* ---- small helpers ---- */

static int64_t real_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
  if (ms <= 0)
    return;
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static void abs_deadline(struct timespec *ts, int64_t ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += (time_t)(ms / 1000);
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static void cond_init_mono(pthread_cond_t *c) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(c, &ca);
  pthread_condattr_destroy(&ca);
}

/* ---- base64 (RFC 4648 section 4, padded: what the gateway speaks) ---- */

/* A JSON string holding n bytes in base64, or NULL when out of memory.
 * Sizes here are bounded by store.c's caps (keys and values), far below
 * EVP_EncodeBlock's int limit. */
static json_t *b64_json(const void *p, size_t n) {
  if (n > (size_t)INT_MAX / 2)
    return NULL;
  char *buf = malloc(4 * ((n + 2) / 3) + 1);
  if (!buf)
    return NULL;
  int w = EVP_EncodeBlock((unsigned char *)buf, p, (int)n);
  json_t *j = w < 0 ? NULL : json_stringn_nocheck(buf, (size_t)w);
  free(buf);
  return j;
}

static bool b64_char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '+' || c == '/';
}

/* Decodes base64 text s[0..n) into a fresh NUL-terminated buffer of at
 * most max bytes. EVP_DecodeBlock is lenient (whitespace, '=' mid-string),
 * so the alphabet and the padding are checked here first. NC_E_PROTO for
 * malformed text, NC_E_TOOBIG past max. On success *out is the caller's. */
static int b64_decode(const char *s, size_t n, size_t max, char **out, size_t *len_out) {
  if (n % 4 != 0)
    return NC_E_PROTO;
  size_t pad = 0;
  while (pad < 2 && pad < n && s[n - 1 - pad] == '=')
    pad++;
  for (size_t i = 0; i < n - pad; i++)
    if (!b64_char((unsigned char)s[i]))
      return NC_E_PROTO;
  size_t full = n / 4 * 3, len = full - pad;
  if (len > max || n > (size_t)INT_MAX)
    return NC_E_TOOBIG;
  char *buf = malloc(full + 1);
  if (!buf)
    return -ENOMEM;
  if (n > 0) {
    int got = EVP_DecodeBlock((unsigned char *)buf, (const unsigned char *)s, (int)n);
    if (got < 0 || (size_t)got != full) {
      free(buf);
      return NC_E_PROTO;
    }
  }
  buf[len] = '\0';
  *out = buf;
  *len_out = len;
  return 0;
}

/* ---- JSON helpers ---- */

/* An int64 field (a decimal string or a number); absent is 0. */
static int64_t j_i64(const json_t *o, const char *name, bool *bad) {
  const json_t *v = json_object_get(o, name);
  if (!v)
    return 0;
  if (json_is_integer(v))
    return (int64_t)json_integer_value(v);
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    char *end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno == 0 && end != s && *end == '\0')
      return (int64_t)x;
  }
  *bad = true;
  return 0;
}

static bool j_bool(const json_t *o, const char *name) {
  return json_is_true(json_object_get(o, name));
}

/* A bytes field: absent is empty. */
static int j_bytes(const json_t *o, const char *name, size_t max, char **out, size_t *len) {
  const json_t *v = json_object_get(o, name);
  if (!v)
    return b64_decode("", 0, max, out, len);
  if (!json_is_string(v))
    return NC_E_PROTO;
  return b64_decode(json_string_value(v), json_string_length(v), max, out, len);
}

static int64_t header_rev(const json_t *resp, bool *bad) {
  return j_i64(json_object_get(resp, "header"), "revision", bad);
}

static json_t *i64_json(int64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%" PRId64, v);
  return json_string(buf);
}

/* Adds name: value, taking value; a NULL value (allocation failed) marks
 * *ok false. */
static void put_field(json_t *o, const char *name, json_t *value, bool *ok) {
  if (!value || json_object_set_new(o, name, value) < 0)
    *ok = false;
}

/* Key and range_end of the interval holding the keys that start with
 * prefix. */
static void put_prefix(json_t *o, const char *prefix, bool *ok) {
  size_t n = strlen(prefix);
  unsigned char end[NC_STORE_KEY_MAX];
  size_t end_len = n;
  memcpy(end, prefix, n);
  while (end_len > 0 && end[end_len - 1] == 0xff)
    end_len--;
  if (end_len > 0) {
    end[end_len - 1]++;
  } else {
    end[0] = 0; /* no successor: "\0" means every key >= key */
    end_len = 1;
  }
  if (n == 0)
    put_field(o, "key", b64_json("", 1), ok); /* "\0": the smallest key */
  else
    put_field(o, "key", b64_json(prefix, n), ok);
  put_field(o, "range_end", b64_json(end, end_len), ok);
}

/* Fills kv from an etcd mvccpb.KeyValue. On failure kv is freed. */
static int parse_kv(const json_t *o, struct nc_kv *kv) {
  memset(kv, 0, sizeof *kv);
  if (!json_is_object(o))
    return NC_E_PROTO;
  size_t key_len = 0;
  int err = j_bytes(o, "key", DECODE_KEY_MAX, &kv->key, &key_len);
  if (err == 0)
    err = j_bytes(o, "value", RANGE_BODY_MAX, &kv->value, &kv->value_len);
  bool bad = false;
  kv->create_rev = j_i64(o, "create_revision", &bad);
  kv->mod_rev = j_i64(o, "mod_revision", &bad);
  kv->version = j_i64(o, "version", &bad);
  kv->lease = j_i64(o, "lease", &bad);
  if (err == 0 && (bad || key_len == 0 || strlen(kv->key) != key_len))
    err = NC_E_PROTO; /* a key with a NUL cannot be one of ours */
  if (err < 0)
    nc_kv_free(kv);
  return err;
}

/* ---- the store ---- */

struct et_watch;

struct et_store {
  struct nc_store base; /* first */
  /* Room for NC__STORE_ETCD_ENDPOINTS_MAX; entries are only ever appended
   * (under mu, string first, count after), so readers may walk
   * [0, nendpoints) without the lock. */
  char **endpoints;
  _Atomic size_t nendpoints;
  int64_t synced_ms; /* last member-list sync; under mu */
  bool syncing;      /* under mu */
  struct nc__store_etcd_opts opts;
  struct curl_slist *headers;
  pthread_mutex_t mu;       /* guards everything below */
  size_t preferred;         /* endpoint that answered last */
  CURL *pool[POOL_MAX];
  size_t npool;
  struct et_watch *watches; /* open watches, for close */
  size_t open_watches;      /* the struct lives until these are closed */
  bool closed;
};

struct qev {
  struct qev *next;
  struct nc_store_event ev;
  size_t bytes;
};

struct et_watch {
  struct nc_store_watch base; /* first */
  struct et_watch *next;      /* in the store's list; store mu */
  pthread_t thread;
  bool thread_started;
  CURLM *multi;               /* the stream's; curl_multi_wakeup stops it */
  json_t *key, *range_end;    /* base64 strings of the watched interval */
  char *prefix;               /* the same interval as a prefix, for filtering */
  size_t prefix_len;
  int64_t open_rev;           /* store revision when the watch was opened */
  int64_t catchup_until_ms;   /* real time; see et_watch_next */
  size_t queue_max;

  pthread_mutex_t mu;         /* guards everything below */
  pthread_cond_t cond;        /* events, errors, created, caught up, stop */
  struct qev *head, *tail;
  size_t qbytes;
  int err;                    /* sticky: NC_E_COMPACTED, ...; 0 = healthy */
  int create_err;             /* the first stream could not start */
  bool created;               /* etcd confirmed the first stream */
  bool caught_up;             /* every event up to open_rev is queued */
  bool stop;                  /* watch_close */
  bool shutdown;              /* store closed */

  /* Thread-only state. */
  int64_t last_rev;           /* every event at or below it is queued */
  bool catchup;               /* this stream covers every key */
  bool stream_created;        /* this stream's watch is live */
  char *line;
  size_t line_len, line_cap;
};

static const struct nc_store_backend et_backend;

static CURL *pool_get(struct et_store *s) {
  CURL *c = NULL;
  pthread_mutex_lock(&s->mu);
  if (s->npool > 0)
    c = s->pool[--s->npool];
  pthread_mutex_unlock(&s->mu);
  return c ? c : curl_easy_init();
}

static void pool_put(struct et_store *s, CURL *c) {
  pthread_mutex_lock(&s->mu);
  if (s->npool < POOL_MAX) {
    s->pool[s->npool++] = c;
    c = NULL;
  }
  pthread_mutex_unlock(&s->mu);
  if (c)
    curl_easy_cleanup(c);
}

static size_t preferred(struct et_store *s) {
  pthread_mutex_lock(&s->mu);
  size_t i = s->preferred;
  pthread_mutex_unlock(&s->mu);
  return i;
}

static void set_preferred(struct et_store *s, size_t i) {
  pthread_mutex_lock(&s->mu);
  s->preferred = i;
  pthread_mutex_unlock(&s->mu);
}

/* Moves off endpoint i after it failed, unless another thread already did. */
static void demote(struct et_store *s, size_t i, const char *why) {
  bool moved = false;
  pthread_mutex_lock(&s->mu);
  if (s->preferred == i && s->nendpoints > 1) {
    s->preferred = (i + 1) % s->nendpoints;
    moved = true;
  }
  size_t next = s->preferred;
  pthread_mutex_unlock(&s->mu);
  if (moved)
    nc_warn(COMPONENT, "etcd %s: %s; trying %s", s->endpoints[i], why, s->endpoints[next]);
}

/* ---- HTTP calls ---- */

enum verdict {
  V_DONE,  /* final answer (success or an error etcd decided) */
  V_RETRY, /* surely not applied: another member, or later, may do it */
  V_MAYBE, /* may have been applied: retry only if idempotent */
};

enum {
  CALL_IDEMPOTENT = 1, /* safe to send twice (reads, keepalive, grant) */
  CALL_RANGE = 2,      /* range_timeout_ms and RANGE_BODY_MAX */
  CALL_FAIL_FAST = 4,  /* stop after one pass if no endpoint accepts a connection */
};

/* etcd's errors by their text (etcdserver/api/v3rpc/rpctypes/error.go,
 * plus raft's ErrProposalDropped, which reaches us as gRPC Unknown, and
 * gRPC's message cap, max-request-bytes + 512 KiB, which rejects a big
 * request before etcd sees it). */
static const struct {
  const char *text;
  int err;
  enum verdict v;
} etcd_errors[] = {
    {"requested lease not found", NC_E_LEASE, V_DONE},
    {"required revision has been compacted", NC_E_COMPACTED, V_DONE},
    {"required revision is a future revision", -EINVAL, V_DONE},
    {"request is too large", NC_E_TOOBIG, V_DONE},
    {"received message larger than max", NC_E_TOOBIG, V_DONE}, /* gRPC's own cap */
    {"too many operations in txn request", NC_E_TOOBIG, V_DONE},
    {"duplicate key given in txn request", -EINVAL, V_DONE},
    {"too large lease TTL", -EINVAL, V_DONE},
    {"database space exceeded", -ENOSPC, V_DONE},
    {"permission denied", -EACCES, V_DONE},
    {"invalid auth token", -EACCES, V_DONE},
    {"user name is empty", -EACCES, V_DONE},
    {"corrupt cluster", -EIO, V_DONE},
    {"no leader", NC_E_UNAVAIL, V_RETRY},
    {"raft proposal dropped", NC_E_UNAVAIL, V_RETRY},
    {"too many requests", -EBUSY, V_RETRY},
    {"unhealthy cluster", NC_E_UNAVAIL, V_RETRY},
    {"not supported for learner", NC_E_UNAVAIL, V_RETRY},
    {"request timed out", -ETIMEDOUT, V_MAYBE},
    {"leader changed", NC_E_UNAVAIL, V_MAYBE},
    {"server stopped", NC_E_UNAVAIL, V_MAYBE},
    {"not capable", NC_E_UNAVAIL, V_MAYBE},
};

/* Maps an error etcd (or its gateway) sent: text and gRPC code. */
static int map_etcd_error(const char *text, int grpc_code, enum verdict *v) {
  for (size_t i = 0; i < sizeof etcd_errors / sizeof *etcd_errors; i++) {
    if (strstr(text, etcd_errors[i].text)) {
      *v = etcd_errors[i].v;
      return etcd_errors[i].err;
    }
  }
  switch (grpc_code) {
  case 3: /* INVALID_ARGUMENT */
  case 11: /* OUT_OF_RANGE */
    *v = V_DONE;
    return -EINVAL;
  case 8: /* RESOURCE_EXHAUSTED (quota and rate errors matched above by text) */
    *v = V_DONE;
    return NC_E_TOOBIG;
  case 7:  /* PERMISSION_DENIED */
  case 16: /* UNAUTHENTICATED */
    *v = V_DONE;
    return -EACCES;
  case 4:  /* DEADLINE_EXCEEDED */
  case 14: /* UNAVAILABLE: the gateway lost its own member */
    *v = V_MAYBE;
    return NC_E_UNAVAIL;
  default:
    *v = V_DONE;
    return NC_E_PROTO;
  }
}

static int on_prereq(void *ud, char *primary_ip, char *local_ip, int primary_port,
                     int local_port) {
  *(bool *)ud = true;
  return CURL_PREREQFUNC_OK;
}

/* Options every request shares. */
static void setup_handle(struct et_store *s, CURL *c) {
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, s->headers);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 10L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 5L);
}

/* Reads the error out of a non-200 answer: {"error": "...", "code": N,
 * "message": "..."}. */
static int error_answer(struct et_store *s, size_t ep, long status, const struct nc_capbuf *b,
                        enum verdict *v, char *why, size_t why_len) {
  json_t *j = b->p ? json_loadb(b->p, b->len, 0, NULL) : NULL;
  const char *text = json_string_value(json_object_get(j, "message"));
  if (!text)
    text = json_string_value(json_object_get(j, "error"));
  json_t *code = json_object_get(j, "code");
  int err;
  if (text) {
    err = map_etcd_error(text, json_is_integer(code) ? (int)json_integer_value(code) : -1, v);
    snprintf(why, why_len, "%s", text);
    /* The answers callers expect (no lease, compacted, a bad revision) are
     * theirs to report; retryable ones are logged by et_call. */
    if (*v != V_DONE || err == NC_E_LEASE || err == NC_E_COMPACTED || err == -EINVAL)
      nc_debug(COMPONENT, "etcd %s: %s (HTTP %ld)", s->endpoints[ep], text, status);
    else if (err == NC_E_TOOBIG)
      nc_warn(COMPONENT, "etcd %s: %s (the request is over the members' "
              "--max-request-bytes)", s->endpoints[ep], text);
    else
      nc_error(COMPONENT, "etcd %s: %s (HTTP %ld)", s->endpoints[ep], text, status);
  } else if (status == 503) {
    /* What a member answers, bodiless, to a request that asks for a
     * leader (the hasleader header) while it has none: an election, or
     * this member is cut off from the majority. */
    nc_warn(COMPONENT, "etcd %s: no leader (HTTP 503): an election is under way or this "
            "member is cut off from the majority", s->endpoints[ep]);
    *v = V_RETRY; /* refused before it was proposed (etcd's hasleader check) */
    err = NC_E_UNAVAIL;
    snprintf(why, why_len, "no leader");
  } else {
    nc_error(COMPONENT, "etcd %s: HTTP %ld with no etcd error in the body; is this an etcd "
             "v3 client URL?", s->endpoints[ep], status);
    *v = status >= 500 ? V_MAYBE : V_DONE;
    err = status >= 500 ? NC_E_UNAVAIL : NC_E_PROTO;
    snprintf(why, why_len, "HTTP %ld", status);
  }
  json_decref(j);
  return err;
}

/* One request to endpoint ep. On V_DONE with 0, *out is the parsed answer
 * (the caller's). On failure why gets a line for the log. */
static int attempt(struct et_store *s, size_t ep, const char *path, const char *req,
                   size_t req_len, unsigned flags, int64_t left_ms, json_t **out,
                   enum verdict *v, char *why, size_t why_len) {
  CURL *c = pool_get(s);
  if (!c) {
    *v = V_DONE;
    return -ENOMEM;
  }
  char url[NC__STORE_ETCD_ENDPOINT_LEN_MAX + 64];
  snprintf(url, sizeof url, "%s%s", s->endpoints[ep], path);
  bool sent = false;
  struct nc_capbuf b = {.max = (flags & CALL_RANGE) ? RANGE_BODY_MAX : UNARY_BODY_MAX};
  int64_t timeout = (flags & CALL_RANGE) ? s->opts.range_timeout_ms : s->opts.request_timeout_ms;
  if (timeout > left_ms)
    timeout = left_ms;
  int64_t connect = s->opts.connect_timeout_ms < timeout ? s->opts.connect_timeout_ms : timeout;
  setup_handle(s, c);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, req);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req_len);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, nc_capbuf_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_PREREQFUNCTION, on_prereq);
  curl_easy_setopt(c, CURLOPT_PREREQDATA, &sent);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)connect);
  CURLcode cc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  /* Nothing may point at this frame once the handle is back in the pool. */
  curl_easy_setopt(c, CURLOPT_WRITEDATA, NULL);
  curl_easy_setopt(c, CURLOPT_PREREQDATA, NULL);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
  pool_put(s, c);

  int err = 0;
  *v = V_DONE;
  snprintf(why, why_len, "%s", curl_easy_strerror(cc));
  if (b.toobig) {
    nc_warn(COMPONENT, "etcd %s%s: answer over %zu bytes; use a limit or a longer prefix",
            s->endpoints[ep], path, b.max);
    err = NC_E_TOOBIG;
  } else if (cc == CURLE_OK && status == 200) {
    json_error_t je;
    /* A streaming RPC (keepalive) answers with one JSON object per line;
     * the first is all we asked for. */
    *out = b.p ? json_loadb(b.p, b.len, JSON_DISABLE_EOF_CHECK, &je) : NULL;
    if (!json_is_object(*out)) {
      nc_error(COMPONENT, "etcd %s%s: answer is not a JSON object (%s)", s->endpoints[ep], path,
               b.p ? je.text : "empty body");
      json_decref(*out);
      *out = NULL;
      err = NC_E_PROTO;
    }
  } else if (cc == CURLE_OK) {
    err = error_answer(s, ep, status, &b, v, why, why_len);
  } else if (cc == CURLE_OUT_OF_MEMORY || (cc == CURLE_WRITE_ERROR && !b.toobig)) {
    err = -ENOMEM;
  } else {
    if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST)
      err = -ECONNREFUSED;
    else if (cc == CURLE_OPERATION_TIMEDOUT)
      err = -ETIMEDOUT;
    else
      err = -ECONNRESET;
    *v = sent ? V_MAYBE : V_RETRY;
    nc_debug(COMPONENT, "etcd %s%s: %s%s", s->endpoints[ep], path, curl_easy_strerror(cc),
             sent ? " (after sending)" : "");
  }
  free(b.p);
  return err;
}

/* Sends req (a JSON object, borrowed) to path on the cluster, failing over
 * between endpoints and retrying what is safe to retry until op_timeout_ms.
 * On success *out is the answer (the caller's, json_decref). */
static void sync_members(struct et_store *s);

static int et_call(struct et_store *s, const char *path, const json_t *req, unsigned flags,
                   json_t **out) {
  *out = NULL;
  sync_members(s);
  char *text = json_dumps(req, JSON_COMPACT);
  if (!text)
    return -ENOMEM;
  size_t text_len = strlen(text);
  int64_t deadline = real_mono_ms() + s->opts.op_timeout_ms;
  int64_t backoff = BACKOFF_MIN_MS;
  int err = -ECONNREFUSED;
  for (;;) {
    size_t start = preferred(s);
    bool all_refused = true;
    for (size_t k = 0; k < s->nendpoints; k++) {
      size_t ep = (start + k) % s->nendpoints;
      int64_t left = deadline - real_mono_ms();
      if (left <= 0)
        goto done;
      enum verdict v;
      char why[160];
      err = attempt(s, ep, path, text, text_len, flags, left, out, &v, why, sizeof why);
      if (err != -ECONNREFUSED)
        all_refused = false;
      if (v == V_DONE) {
        if (err != -ENOMEM && err != NC_E_TOOBIG && err != NC_E_PROTO)
          set_preferred(s, ep);
        goto done;
      }
      if (v == V_MAYBE && !(flags & CALL_IDEMPOTENT)) {
        nc_warn(COMPONENT, "etcd %s%s: %s; the write may or may not have been applied",
                s->endpoints[ep], path, why);
        demote(s, ep, why);
        err = -ETIMEDOUT;
        goto done;
      }
      demote(s, ep, why);
    }
    if ((flags & CALL_FAIL_FAST) && all_refused)
      goto done;
    int64_t left = deadline - real_mono_ms();
    if (left <= 0)
      goto done;
    sleep_ms(backoff < left ? backoff : left);
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
done:
  free(text);
  return err;
}

/* ---- keys ---- */

static int et_get(struct nc_store *base, const char *key, struct nc_kv *out) {
  struct et_store *s = (struct et_store *)base;
  bool ok = true;
  json_t *req = json_object();
  if (!req)
    return -ENOMEM;
  put_field(req, "key", b64_json(key, strlen(key)), &ok);
  json_t *resp = NULL;
  int err = ok ? et_call(s, "/v3/kv/range", req, CALL_IDEMPOTENT, &resp) : -ENOMEM;
  json_decref(req);
  if (err < 0)
    return err;
  const json_t *kvs = json_object_get(resp, "kvs");
  if (json_array_size(kvs) == 0)
    err = -ENOENT;
  else
    err = parse_kv(json_array_get(kvs, 0), out);
  json_decref(resp);
  return err;
}

static int et_range(struct nc_store *base, const char *prefix, size_t limit,
                    struct nc_kv_list *out) {
  struct et_store *s = (struct et_store *)base;
  /* Ask for one key past the cap so that "no limit" can tell overflow. */
  bool capped = limit == 0 || limit > NC_STORE_RANGE_MAX;
  size_t want = capped ? NC_STORE_RANGE_MAX : limit;
  bool ok = true;
  json_t *req = json_object();
  if (!req)
    return -ENOMEM;
  put_prefix(req, prefix, &ok);
  put_field(req, "limit", i64_json((int64_t)want + (capped ? 1 : 0)), &ok);
  json_t *resp = NULL;
  int err = ok ? et_call(s, "/v3/kv/range", req, CALL_IDEMPOTENT | CALL_RANGE, &resp) : -ENOMEM;
  json_decref(req);
  if (err < 0)
    return err;
  bool bad = false;
  out->rev = header_rev(resp, &bad);
  const json_t *kvs = json_object_get(resp, "kvs");
  size_t n = json_array_size(kvs), bytes = 0;
  if (bad || (kvs && !json_is_array(kvs))) {
    err = NC_E_PROTO;
  } else if (n > want) {
    nc_warn(COMPONENT, "range \"%s\": more than %d keys; use a limit or a longer prefix", prefix,
            NC_STORE_RANGE_MAX);
    err = NC_E_TOOBIG;
  } else if (n > 0) {
    out->items = calloc(n, sizeof *out->items);
    if (!out->items)
      err = -ENOMEM;
  }
  for (size_t i = 0; err == 0 && i < n; i++) {
    err = parse_kv(json_array_get(kvs, i), &out->items[i]);
    if (err < 0)
      break;
    out->count++;
    bytes += strlen(out->items[i].key) + out->items[i].value_len;
    if (bytes > NC_STORE_RANGE_BYTES_MAX) {
      nc_warn(COMPONENT, "range \"%s\": more than %d bytes; use a limit or a longer prefix",
              prefix, NC_STORE_RANGE_BYTES_MAX);
      err = NC_E_TOOBIG;
    }
  }
  json_decref(resp);
  if (err < 0)
    nc_kv_list_free(out);
  return err;
}

static const char *const cmp_targets[] = {
    [NC_CMP_VERSION] = "VERSION",
    [NC_CMP_CREATE_REV] = "CREATE",
    [NC_CMP_MOD_REV] = "MOD",
    [NC_CMP_VALUE] = "VALUE",
};
static const char *const cmp_fields[] = {
    [NC_CMP_VERSION] = "version",
    [NC_CMP_CREATE_REV] = "create_revision",
    [NC_CMP_MOD_REV] = "mod_revision",
    [NC_CMP_VALUE] = "value",
};
static const char *const cmp_results[] = {
    [NC_CMP_EQ] = "EQUAL",
    [NC_CMP_NE] = "NOT_EQUAL",
    [NC_CMP_LT] = "LESS",
    [NC_CMP_GT] = "GREATER",
};

static json_t *cmp_json(const struct nc_store_cmp *c) {
  bool ok = true;
  json_t *o = json_object();
  if (!o)
    return NULL;
  put_field(o, "key", b64_json(c->key, strlen(c->key)), &ok);
  put_field(o, "target", json_string(cmp_targets[c->target]), &ok);
  put_field(o, "result", json_string(cmp_results[c->op]), &ok);
  if (c->target == NC_CMP_VALUE)
    put_field(o, cmp_fields[c->target], b64_json(c->value, c->value_len), &ok);
  else
    put_field(o, cmp_fields[c->target], i64_json(c->num), &ok);
  if (!ok) {
    json_decref(o);
    return NULL;
  }
  return o;
}

/* A txn RequestOp. */
static json_t *op_json(const struct nc_store_op *op) {
  bool ok = true;
  json_t *inner = json_object(), *o = json_object();
  if (!inner || !o) {
    json_decref(inner);
    json_decref(o);
    return NULL;
  }
  switch (op->type) {
  case NC_OP_PUT:
    put_field(inner, "key", b64_json(op->key, strlen(op->key)), &ok);
    put_field(inner, "value", b64_json(op->value, op->value_len), &ok);
    if (op->lease != 0)
      put_field(inner, "lease", i64_json(op->lease), &ok);
    put_field(o, "request_put", inner, &ok);
    break;
  case NC_OP_DELETE:
    put_field(inner, "key", b64_json(op->key, strlen(op->key)), &ok);
    put_field(o, "request_delete_range", inner, &ok);
    break;
  case NC_OP_DELETE_PREFIX:
    put_prefix(inner, op->key, &ok);
    put_field(o, "request_delete_range", inner, &ok);
    break;
  }
  if (!ok) {
    json_decref(o);
    return NULL;
  }
  return o;
}

static json_t *ops_json(const struct nc_store_op *ops, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++) {
    json_t *o = op_json(&ops[i]);
    if (!o || json_array_append_new(a, o) < 0) {
      json_decref(a);
      a = NULL;
    }
  }
  return a;
}

static int et_txn(struct nc_store *base, const struct nc_store_cmp *cmps, size_t ncmps,
                  const struct nc_store_op *then_ops, size_t nthen,
                  const struct nc_store_op *else_ops, size_t nelse, bool *succeeded,
                  int64_t *rev_out) {
  struct et_store *s = (struct et_store *)base;
  bool ok = true;
  json_t *req = json_object(), *compare = json_array();
  for (size_t i = 0; compare && i < ncmps; i++) {
    json_t *c = cmp_json(&cmps[i]);
    if (!c || json_array_append_new(compare, c) < 0)
      ok = false;
  }
  if (!req)
    ok = false;
  put_field(req, "compare", compare, &ok);
  put_field(req, "success", ops_json(then_ops, nthen), &ok);
  put_field(req, "failure", ops_json(else_ops, nelse), &ok);
  json_t *resp = NULL;
  int err = ok ? et_call(s, "/v3/kv/txn", req, 0, &resp) : -ENOMEM;
  json_decref(req);
  if (err < 0)
    return err;
  bool bad = false;
  *rev_out = header_rev(resp, &bad);
  *succeeded = j_bool(resp, "succeeded");
  json_decref(resp);
  if (bad || *rev_out <= 0) {
    nc_error(COMPONENT, "etcd: txn answer has no valid header revision");
    return NC_E_PROTO;
  }
  return 0;
}

static int64_t et_current_rev(struct nc_store *base) {
  struct et_store *s = (struct et_store *)base;
  bool ok = true;
  json_t *req = json_object();
  if (!req)
    return -ENOMEM;
  put_field(req, "key", b64_json("", 1), &ok);
  put_field(req, "count_only", json_true(), &ok);
  json_t *resp = NULL;
  int err = ok ? et_call(s, "/v3/kv/range", req, CALL_IDEMPOTENT, &resp) : -ENOMEM;
  json_decref(req);
  if (err < 0)
    return err;
  bool bad = false;
  int64_t rev = header_rev(resp, &bad);
  json_decref(resp);
  return bad || rev <= 0 ? NC_E_PROTO : rev;
}

/* Calls path with the body {field: value}; *resp (may be NULL) gets the
 * answer. */
/* Learns the client URLs of the cluster's members (MemberList), so a node
 * given one endpoint at formation can still reach the others when that
 * one fails. At open and then at most every ENDPOINT_SYNC_MS, from inside
 * et_call (never recursively). */
#define ENDPOINT_SYNC_MS 30000
static void sync_members(struct et_store *s) {
  pthread_mutex_lock(&s->mu);
  bool due = !s->syncing && real_mono_ms() - s->synced_ms >= ENDPOINT_SYNC_MS;
  if (due)
    s->syncing = true;
  pthread_mutex_unlock(&s->mu);
  if (!due)
    return;
  json_t *req = json_object(), *resp = NULL;
  int rc = req ? et_call(s, "/v3/cluster/member/list", req,
                         CALL_IDEMPOTENT | CALL_FAIL_FAST, &resp)
               : -ENOMEM;
  json_decref(req);
  size_t i, j;
  json_t *m, *u;
  json_array_foreach(rc == 0 ? json_object_get(resp, "members") : NULL, i, m) {
    json_array_foreach(json_object_get(m, "clientURLs"), j, u) {
      const char *url = json_string_value(u);
      size_t n = url ? strlen(url) : 0;
      while (n > 0 && url[n - 1] == '/')
        n--;
      if (n <= 7 || n > NC__STORE_ETCD_ENDPOINT_LEN_MAX || strncmp(url, "http://", 7) != 0 ||
          memchr(url + 7, '/', n - 7))
        continue;
      pthread_mutex_lock(&s->mu);
      bool known = false;
      size_t have = s->nendpoints;
      for (size_t k = 0; k < have && !known; k++)
        known = strlen(s->endpoints[k]) == n && strncmp(s->endpoints[k], url, n) == 0;
      char *copy = !known && have < NC__STORE_ETCD_ENDPOINTS_MAX ? strndup(url, n) : NULL;
      if (copy) {
        s->endpoints[have] = copy;
        s->nendpoints = have + 1;
      }
      pthread_mutex_unlock(&s->mu);
      if (copy)
        nc_info(COMPONENT, "etcd: learned member endpoint %s", copy);
    }
  }
  json_decref(resp);
  pthread_mutex_lock(&s->mu);
  s->syncing = false;
  s->synced_ms = real_mono_ms();
  pthread_mutex_unlock(&s->mu);
}

static int et_call_i64(struct et_store *s, const char *path, const char *field, int64_t value,
                       unsigned flags, json_t **resp) {
  bool ok = true;
  json_t *req = json_object();
  if (!req)
    return -ENOMEM;
  put_field(req, field, i64_json(value), &ok);
  json_t *r = NULL;
  int err = ok ? et_call(s, path, req, flags, &r) : -ENOMEM;
  json_decref(req);
  if (resp)
    *resp = r;
  else
    json_decref(r);
  return err;
}

static int et_compact(struct nc_store *base, int64_t rev) {
  return et_call_i64((struct et_store *)base, "/v3/kv/compaction", "revision", rev, 0, NULL);
}

/* ---- leases ---- */

static int et_lease_grant(struct nc_store *base, int64_t ttl_ms, int64_t *lease_out) {
  struct et_store *s = (struct et_store *)base;
  /* etcd counts TTLs in whole seconds: round up so a lease never lives
   * shorter than asked (etcd also raises it to its minimum). */
  int64_t ttl_s = ttl_ms / 1000 + (ttl_ms % 1000 != 0);
  json_t *resp = NULL;
  /* A retried grant at worst leaves an unused lease to expire. */
  int err = et_call_i64(s, "/v3/lease/grant", "TTL", ttl_s, CALL_IDEMPOTENT, &resp);
  if (err < 0) {
    json_decref(resp);
    return err;
  }
  bool bad = false;
  int64_t id = j_i64(resp, "ID", &bad);
  const char *e = json_string_value(json_object_get(resp, "error"));
  json_decref(resp);
  if (e && *e) {
    nc_error(COMPONENT, "etcd: lease grant failed: %s", e);
    return NC_E_PROTO;
  }
  if (bad || id <= 0)
    return NC_E_PROTO;
  *lease_out = id;
  return 0;
}

/* LeaseKeepAlive is a bidirectional stream; through the gateway one
 * request gives one {"result": LeaseKeepAliveResponse} line, or an
 * {"error": {...}} line. TTL <= 0 means the lease is unknown or expired
 * (v3rpc's LeaseKeepAlive turns ErrLeaseNotFound into TTL 0). */
static int et_lease_keepalive(struct nc_store *base, int64_t lease) {
  json_t *resp = NULL;
  int err = et_call_i64((struct et_store *)base, "/v3/lease/keepalive", "ID", lease,
                        CALL_IDEMPOTENT, &resp);
  if (err < 0) {
    json_decref(resp);
    return err;
  }
  const json_t *result = json_object_get(resp, "result");
  const json_t *error = json_object_get(resp, "error");
  bool bad = false;
  if (result) {
    err = j_i64(result, "TTL", &bad) > 0 ? 0 : NC_E_LEASE;
    if (bad)
      err = NC_E_PROTO;
  } else {
    const char *text = json_string_value(json_object_get(error, "message"));
    enum verdict v;
    err = text ? map_etcd_error(text, -1, &v) : NC_E_PROTO;
    nc_warn(COMPONENT, "etcd: lease keepalive failed: %s", text ? text : "no result");
  }
  json_decref(resp);
  return err;
}

static int et_lease_revoke(struct nc_store *base, int64_t lease) {
  return et_call_i64((struct et_store *)base, "/v3/lease/revoke", "ID", lease, 0, NULL);
}

/* ---- watches ----
 *
 * A watch is a thread running one streaming POST /v3/watch at a time, from
 * the last revision it has in full (see the top of this file).
 *
 * History. etcd sends the history a watch asks for (a start_revision at or
 * below the current one) asynchronously, from its syncWatchers loop, and
 * sends nothing at all when that history holds no event in the watched
 * range; 3.4's progress requests are no barrier either (they can overtake
 * events: etcd issue 15220). Yet store.h lets a caller open a watch at an
 * old revision and poll with timeout 0 for the history up to now. So a
 * watch that starts before open_rev (the revision current at watch_open)
 * first streams every key and filters on the prefix itself: revision
 * open_rev holds an event (every revision above 1 does), so once a message
 * reaches it, the history up to it is entirely queued. The thread then
 * reconnects with the prefix range from there. Until that point
 * et_watch_next waits for the catch-up even past its timeout, for at most
 * op_timeout_ms after watch_open. */

/* handle_line and run_stream: the catch-up stream reached open_rev. */
#define CAUGHT_UP 1

static void qev_free_all(struct qev *q) {
  while (q) {
    struct qev *next = q->next;
    nc_store_event_free(&q->ev);
    free(q);
    q = next;
  }
}

/* Whether the thread should stop; w->mu held. */
static bool w_stopping(const struct et_watch *w) {
  return w->stop || w->shutdown || w->err != 0 || w->create_err != 0;
}

/* Sets the watch's sticky error (the first one wins). */
static void w_fail(struct et_watch *w, int err) {
  pthread_mutex_lock(&w->mu);
  if (w->err == 0)
    w->err = err;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->mu);
}

/* Decodes one etcd mvccpb.Event into *out. On a catch-up stream an event
 * outside the prefix leaves *out NULL and is not decoded further (it may
 * be anybody's key, even one with a NUL). */
static int take_event(const struct et_watch *w, const json_t *e, const json_t *kv,
                      struct qev **out) {
  *out = NULL;
  const char *type = json_string_value(json_object_get(e, "type"));
  bool is_delete = type && strcmp(type, "DELETE") == 0;
  if (type && !is_delete && strcmp(type, "PUT") != 0)
    return NC_E_PROTO;
  if (w->catchup) {
    char *key = NULL;
    size_t len = 0;
    int err = j_bytes(kv, "key", DECODE_KEY_MAX, &key, &len);
    if (err == NC_E_TOOBIG)
      return 0; /* longer than any key of ours */
    if (err < 0)
      return err;
    bool mine = len >= w->prefix_len && memcmp(key, w->prefix, w->prefix_len) == 0;
    free(key);
    if (!mine)
      return 0;
  }
  struct qev *q = calloc(1, sizeof *q);
  if (!q)
    return -ENOMEM;
  int err = parse_kv(kv, &q->ev.kv);
  if (err < 0) {
    free(q);
    return err;
  }
  q->ev.type = is_delete ? NC_EV_DELETE : NC_EV_PUT;
  if (is_delete) {
    /* etcd's delete event carries key and mod_revision only; keep it so. */
    q->ev.kv.create_rev = q->ev.kv.version = q->ev.kv.lease = 0;
    q->ev.kv.value[0] = '\0';
    q->ev.kv.value_len = 0;
  }
  q->bytes = strlen(q->ev.kv.key) + q->ev.kv.value_len + NC__STORE_ETCD_EVENT_OVERHEAD;
  *out = q;
  return 0;
}

/* Handles one WatchResponse line. Returns 0 to go on, CAUGHT_UP, or a
 * negative code that ends this stream (a sticky one is already set with
 * w_fail). */
static int handle_line(struct et_watch *w, const char *line, size_t len) {
  json_error_t je;
  json_t *j = json_loadb(line, len, 0, &je);
  if (!json_is_object(j)) {
    nc_error(COMPONENT, "etcd watch: unreadable message (%s)", je.text);
    json_decref(j);
    return NC_E_PROTO;
  }
  int err = 0;
  struct qev *head = NULL, *last = NULL;
  const json_t *r = json_object_get(j, "result");
  if (!r) {
    const char *text = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    nc_warn(COMPONENT, "etcd watch stream failed: %s", text ? text : "no result");
    err = NC_E_UNAVAIL;
    goto out;
  }
  bool bad = false;
  int64_t compact = j_i64(r, "compact_revision", &bad);
  if (j_bool(r, "canceled")) {
    if (compact > 0) {
      nc_warn(COMPONENT, "etcd watch: revisions after %" PRId64 " are needed but history up to "
              "%" PRId64 " is compacted", w->last_rev, compact);
      w_fail(w, NC_E_COMPACTED);
      err = NC_E_COMPACTED;
    } else {
      const char *why = json_string_value(json_object_get(r, "cancel_reason"));
      nc_warn(COMPONENT, "etcd watch canceled: %s", why && *why ? why : "no reason given");
      err = NC_E_UNAVAIL;
    }
    goto out;
  }
  if (j_bool(r, "created")) {
    w->stream_created = true;
    pthread_mutex_lock(&w->mu);
    w->created = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
  }
  const json_t *events = json_object_get(r, "events");
  if (bad || (events && !json_is_array(events))) {
    err = NC_E_PROTO;
    goto out;
  }
  /* Decode the whole message first: it holds whole revisions, and the
   * queue gets all of them or, on an error, none. */
  size_t bytes = 0;
  int64_t top = w->last_rev;
  for (size_t i = 0; i < json_array_size(events); i++) {
    const json_t *e = json_array_get(events, i);
    const json_t *kv = json_object_get(e, "kv");
    int64_t rev = j_i64(kv, "mod_revision", &bad);
    if (bad || !json_is_object(kv)) {
      err = NC_E_PROTO;
      break;
    }
    if (rev <= w->last_rev) /* at or before where this stream started: had it */
      continue;
    if (rev < top) {
      nc_error(COMPONENT, "etcd watch: revision %" PRId64 " after %" PRId64, rev, top);
      err = NC_E_PROTO;
      break;
    }
    top = rev;
    struct qev *q = NULL;
    err = take_event(w, e, kv, &q);
    if (err < 0)
      break;
    if (!q)
      continue;
    bytes += q->bytes;
    if (last)
      last->next = q;
    else
      head = q;
    last = q;
  }
  if (err < 0)
    goto out;
  pthread_mutex_lock(&w->mu);
  if (head && w->qbytes + bytes > w->queue_max) {
    if (w->err == 0) {
      nc_warn(COMPONENT, "etcd watch: the reader fell %zu bytes of events behind; failing the "
              "watch (re-read and watch again)", w->qbytes + bytes);
      w->err = NC_E_COMPACTED;
    }
    err = NC_E_COMPACTED;
  } else if (head) {
    if (w->tail)
      w->tail->next = head;
    else
      w->head = head;
    w->tail = last;
    w->qbytes += bytes;
    head = NULL;
  }
  if (err == 0) {
    w->last_rev = top;
    if (w->catchup && top >= w->open_rev) {
      w->caught_up = true;
      err = CAUGHT_UP;
    }
  }
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->mu);
out:
  qev_free_all(head);
  json_decref(j);
  return err;
}

struct stream_ctx {
  struct et_watch *w;
  int err; /* why the write callback stopped the transfer */
};

/* Splits the stream into lines of at most NC__STORE_ETCD_WATCH_LINE_MAX. */
static size_t on_stream(char *ptr, size_t size, size_t nmemb, void *ud) {
  struct stream_ctx *ctx = ud;
  struct et_watch *w = ctx->w;
  size_t n = size * nmemb;
  for (size_t i = 0; i < n;) {
    const char *nl = memchr(ptr + i, '\n', n - i);
    size_t chunk = nl ? (size_t)(nl - (ptr + i)) : n - i;
    if (chunk > NC__STORE_ETCD_WATCH_LINE_MAX - w->line_len) {
      nc_warn(COMPONENT, "etcd watch: one message is over %d bytes; failing the watch "
              "(re-read and watch again)", NC__STORE_ETCD_WATCH_LINE_MAX);
      w_fail(w, NC_E_COMPACTED);
      ctx->err = NC_E_COMPACTED;
      return 0;
    }
    if (w->line_len + chunk + 1 > w->line_cap) {
      size_t cap = w->line_cap ? w->line_cap : 4096;
      while (cap < w->line_len + chunk + 1)
        cap *= 2;
      char *p = realloc(w->line, cap);
      if (!p) {
        ctx->err = -ENOMEM;
        return 0;
      }
      w->line = p;
      w->line_cap = cap;
    }
    memcpy(w->line + w->line_len, ptr + i, chunk);
    w->line_len += chunk;
    i += chunk;
    if (!nl)
      break;
    i++; /* the newline */
    size_t len = w->line_len;
    w->line_len = 0;
    if (len == 0)
      continue;
    int err = handle_line(w, w->line, len);
    if (err != 0) {
      ctx->err = err;
      return 0;
    }
  }
  /* A big buffer from one large message is not kept for a quiet watch. */
  if (w->line_len == 0 && w->line_cap > 1024 * 1024) {
    free(w->line);
    w->line = NULL;
    w->line_cap = 0;
  }
  return n;
}

/* Runs one watch stream against endpoint ep until it ends or the watch
 * stops. Returns CAUGHT_UP, or why it ended (negative). */
static int run_stream(struct et_store *s, struct et_watch *w, CURL *c, size_t ep) {
  bool ok = true;
  json_t *create = json_object(), *req = json_object();
  if (create && w->catchup) {
    put_field(create, "key", b64_json("", 1), &ok); /* "\0" to "\0": every key */
    put_field(create, "range_end", b64_json("", 1), &ok);
  } else if (create) {
    put_field(create, "key", json_incref(w->key), &ok);
    put_field(create, "range_end", json_incref(w->range_end), &ok);
  }
  if (create)
    put_field(create, "start_revision", i64_json(w->last_rev), &ok);
  if (!create || !req)
    ok = false;
  put_field(req, "create_request", create, &ok);
  char *text = ok ? json_dumps(req, JSON_COMPACT) : NULL;
  json_decref(req);
  if (!text)
    return -ENOMEM;

  char url[NC__STORE_ETCD_ENDPOINT_LEN_MAX + 16];
  snprintf(url, sizeof url, "%s/v3/watch", s->endpoints[ep]);
  struct stream_ctx ctx = {.w = w};
  w->line_len = 0;
  w->stream_created = false;
  setup_handle(s, c);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_stream);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &ctx);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)s->opts.connect_timeout_ms);
  curl_multi_add_handle(w->multi, c);
  CURLcode cc = CURLE_OK;
  long status = 0;
  /* A member that takes the connection but never confirms the watch (hung,
   * or stopped) is given up on like a slow request. */
  int64_t create_by = real_mono_ms() + s->opts.request_timeout_ms;
  bool too_slow = false;
  for (;;) {
    int running = 0;
    CURLMcode mc = curl_multi_perform(w->multi, &running);
    int queued;
    CURLMsg *m;
    while ((m = curl_multi_info_read(w->multi, &queued)) != NULL)
      if (m->msg == CURLMSG_DONE)
        cc = m->data.result;
    if (mc != CURLM_OK || running == 0)
      break;
    pthread_mutex_lock(&w->mu);
    bool stopping = w_stopping(w);
    pthread_mutex_unlock(&w->mu);
    if (stopping)
      break;
    int64_t wait_ms = 1000;
    if (!w->stream_created) {
      int64_t left = create_by - real_mono_ms();
      if (left <= 0) {
        too_slow = true;
        break;
      }
      if (left < wait_ms)
        wait_ms = left;
    }
    curl_multi_poll(w->multi, NULL, 0, (int)wait_ms, NULL);
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_multi_remove_handle(w->multi, c);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, NULL);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
  free(text);
  if (ctx.err != 0)
    return ctx.err;
  if (too_slow) {
    nc_warn(COMPONENT, "etcd %s watch: not created within %d ms", s->endpoints[ep],
            s->opts.request_timeout_ms);
    return -ETIMEDOUT;
  }
  if (cc != CURLE_OK) {
    nc_debug(COMPONENT, "etcd %s watch: %s", s->endpoints[ep], curl_easy_strerror(cc));
    return cc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED : -ECONNRESET;
  }
  if (status != 200 && status != 0) {
    nc_warn(COMPONENT, "etcd %s watch: HTTP %ld", s->endpoints[ep], status);
    return NC_E_PROTO;
  }
  return -ECONNRESET; /* the stream ended (or we are stopping) */
}

/* Waits up to ms or until the watch stops; false if it stopped. */
static bool w_pause(struct et_watch *w, int64_t ms) {
  struct timespec ts;
  abs_deadline(&ts, ms);
  pthread_mutex_lock(&w->mu);
  while (!w_stopping(w))
    if (pthread_cond_timedwait(&w->cond, &w->mu, &ts) != 0)
      break;
  bool go_on = !w_stopping(w);
  pthread_mutex_unlock(&w->mu);
  return go_on;
}

/* The watch thread: one stream at a time, reconnecting (to the next member
 * when one fails) from the last revision it has in full. Before the first
 * stream is created it gives up after op_timeout_ms and reports why;
 * afterwards it retries for as long as the watch is open. */
static void *watch_main(void *arg) {
  struct et_watch *w = arg;
  struct et_store *s = (struct et_store *)w->base.store;
  CURL *c = curl_easy_init();
  int64_t deadline = real_mono_ms() + s->opts.op_timeout_ms;
  int64_t backoff = BACKOFF_MIN_MS;
  int err = c ? 0 : -ENOMEM;
  bool warned = false;
  while (c) {
    pthread_mutex_lock(&w->mu);
    w->catchup = !w->caught_up;
    pthread_mutex_unlock(&w->mu);
    size_t ep = preferred(s);
    err = run_stream(s, w, c, ep);
    if (err == CAUGHT_UP)
      continue; /* on with the prefix alone, from where the catch-up ended */
    pthread_mutex_lock(&w->mu);
    bool created = w->created, stopping = w_stopping(w);
    pthread_mutex_unlock(&w->mu);
    if (stopping)
      break;
    if (err == -ENOMEM || err == NC_E_PROTO) {
      w_fail(w, err);
      break;
    }
    if (!created && real_mono_ms() >= deadline)
      break;
    demote(s, ep, nc_strerror(err));
    if (w->stream_created) {
      /* It worked for a while: reconnect at once. */
      nc_info(COMPONENT, "etcd watch: stream from %s ended (%s); resuming after revision "
              "%" PRId64, s->endpoints[ep], nc_strerror(err), w->last_rev);
      backoff = BACKOFF_MIN_MS;
      warned = false;
      continue;
    }
    if (created && !warned) {
      nc_warn(COMPONENT, "etcd watch: no member takes the watch (%s); retrying",
              nc_strerror(err));
      warned = true;
    }
    if (!w_pause(w, backoff))
      break;
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
  pthread_mutex_lock(&w->mu);
  if (!w->created && w->create_err == 0)
    w->create_err = err < 0 ? err : -ECONNREFUSED;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->mu);
  if (c)
    curl_easy_cleanup(c);
  free(w->line);
  w->line = NULL;
  return NULL;
}

static void w_destroy(struct et_watch *w) {
  qev_free_all(w->head);
  json_decref(w->key);
  json_decref(w->range_end);
  free(w->prefix);
  if (w->multi)
    curl_multi_cleanup(w->multi);
  pthread_cond_destroy(&w->cond);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

static void et_free(struct et_store *s);

/* Stops the thread, drops the watch from the store and frees it; frees the
 * store too if it was closed and this was its last watch. */
static void w_close(struct et_watch *w) {
  struct et_store *s = (struct et_store *)w->base.store;
  pthread_mutex_lock(&w->mu);
  w->stop = true;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->mu);
  if (w->thread_started) {
    curl_multi_wakeup(w->multi);
    pthread_join(w->thread, NULL);
  }
  pthread_mutex_lock(&s->mu);
  for (struct et_watch **p = &s->watches; *p; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      break;
    }
  }
  bool last = --s->open_watches == 0 && s->closed;
  pthread_mutex_unlock(&s->mu);
  w_destroy(w);
  if (last)
    et_free(s);
}

/* The store revision now (*open_rev) and, for start_rev > 0, whether
 * history after start_rev is still there. A read at start_rev fails exactly
 * when start_rev < the compaction point, which is when store.h wants
 * NC_E_COMPACTED; a future start_rev is fine (the watch waits for it). */
static int watch_start(struct et_store *s, int64_t start_rev, int64_t *open_rev) {
  if (start_rev == 0) {
    int64_t rev = et_current_rev(&s->base);
    if (rev < 0)
      return (int)rev;
    *open_rev = rev;
    return 0;
  }
  bool ok = true;
  json_t *req = json_object(), *resp = NULL;
  if (!req)
    return -ENOMEM;
  put_field(req, "key", b64_json("", 1), &ok);
  put_field(req, "count_only", json_true(), &ok);
  put_field(req, "revision", i64_json(start_rev), &ok);
  int err = ok ? et_call(s, "/v3/kv/range", req, CALL_IDEMPOTENT, &resp) : -ENOMEM;
  json_decref(req);
  if (err == -EINVAL) {
    *open_rev = start_rev; /* future: nothing to catch up on */
    err = 0;
  } else if (err == 0) {
    bool bad = false;
    *open_rev = header_rev(resp, &bad);
    if (bad || *open_rev <= 0)
      err = NC_E_PROTO;
  }
  json_decref(resp);
  return err;
}

static int et_watch_open(struct nc_store *base, const char *prefix, int64_t start_rev,
                         struct nc_store_watch **out) {
  struct et_store *s = (struct et_store *)base;
  int64_t open_rev = 0;
  int err = watch_start(s, start_rev, &open_rev);
  if (err < 0)
    return err;
  struct et_watch *w = calloc(1, sizeof *w);
  if (!w)
    return -ENOMEM;
  w->base.store = base;
  w->open_rev = open_rev;
  w->last_rev = start_rev == 0 ? open_rev : start_rev;
  w->caught_up = w->last_rev >= open_rev;
  w->catchup_until_ms = real_mono_ms() + s->opts.op_timeout_ms;
  w->queue_max = s->opts.watch_queue_bytes_max;
  pthread_mutex_init(&w->mu, NULL);
  cond_init_mono(&w->cond);
  bool ok = true;
  json_t *tmp = json_object();
  if (tmp) {
    put_prefix(tmp, prefix, &ok);
    w->key = json_incref(json_object_get(tmp, "key"));
    w->range_end = json_incref(json_object_get(tmp, "range_end"));
    json_decref(tmp);
  }
  w->prefix_len = strlen(prefix);
  w->prefix = strdup(prefix);
  w->multi = curl_multi_init();
  if (!ok || !w->key || !w->range_end || !w->prefix || !w->multi) {
    w_destroy(w);
    return -ENOMEM;
  }
  pthread_mutex_lock(&s->mu);
  w->next = s->watches;
  s->watches = w;
  s->open_watches++;
  pthread_mutex_unlock(&s->mu);
  if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
    w_close(w);
    return -EAGAIN;
  }
  w->thread_started = true;

  /* Return once etcd has the watch, so that a write made after watch_open
   * returns is surely seen. */
  pthread_mutex_lock(&w->mu);
  while (!w->created && w->create_err == 0 && w->err == 0)
    pthread_cond_wait(&w->cond, &w->mu);
  err = w->created ? 0 : w->create_err ? w->create_err : w->err;
  pthread_mutex_unlock(&w->mu);
  if (err < 0) {
    nc_error(COMPONENT, "etcd: cannot open a watch on \"%s\": %s", prefix, nc_strerror(err));
    w_close(w);
    return err;
  }
  *out = &w->base;
  return 0;
}

/* Queued events come before a sticky error (they happened before it); a
 * closed store fails at once. While the history up to open_rev is still
 * on its way the wait may outlast timeout_ms (see the section comment). */
static int et_watch_next(struct nc_store_watch *wbase, int timeout_ms,
                         struct nc_store_event *out) {
  struct et_watch *w = (struct et_watch *)wbase;
  int64_t deadline = real_mono_ms() + timeout_ms;
  int err = 0;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    if (w->shutdown) {
      err = -ESHUTDOWN;
      break;
    }
    if (w->head) {
      struct qev *q = w->head;
      w->head = q->next;
      if (!w->head)
        w->tail = NULL;
      w->qbytes -= q->bytes;
      *out = q->ev;
      free(q);
      break;
    }
    if (w->err) {
      err = w->err;
      break;
    }
    int64_t until = deadline;
    if (!w->caught_up && w->catchup_until_ms > until)
      until = w->catchup_until_ms;
    int64_t left = until - real_mono_ms();
    if (left <= 0) {
      err = -ETIMEDOUT;
      break;
    }
    struct timespec ts;
    abs_deadline(&ts, left);
    pthread_cond_timedwait(&w->cond, &w->mu, &ts);
  }
  pthread_mutex_unlock(&w->mu);
  return err;
}

static void et_watch_close(struct nc_store_watch *wbase) { w_close((struct et_watch *)wbase); }

/* ---- open and close ---- */

static void et_free(struct et_store *s) {
  for (size_t i = 0; i < s->npool; i++)
    curl_easy_cleanup(s->pool[i]);
  for (size_t i = 0; i < s->nendpoints; i++)
    free(s->endpoints[i]);
  free(s->endpoints);
  curl_slist_free_all(s->headers);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* Watches still open keep the struct alive and fail with -ESHUTDOWN from
 * now on; the last watch_close frees it. */
static void et_close(struct nc_store *base) {
  struct et_store *s = (struct et_store *)base;
  pthread_mutex_lock(&s->mu);
  s->closed = true;
  size_t watches = s->open_watches;
  for (struct et_watch *w = s->watches; w; w = w->next) {
    pthread_mutex_lock(&w->mu);
    w->shutdown = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    curl_multi_wakeup(w->multi);
  }
  pthread_mutex_unlock(&s->mu);
  if (watches > 0)
    nc_warn(COMPONENT, "store closed with %zu watches open; they now fail until closed",
            watches);
  else
    et_free(s);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* Splits "http://a:1,http://b:2" into s->endpoints. */
static int parse_endpoints(struct et_store *s, const char *list) {
  static const char scheme[] = "http://";
  const char *p = list;
  if (!*p)
    goto bad;
  s->endpoints = calloc(NC__STORE_ETCD_ENDPOINTS_MAX, sizeof *s->endpoints);
  if (!s->endpoints)
    return -ENOMEM;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    while (n > 0 && p[n - 1] == '/')
      n--;
    if (s->nendpoints == NC__STORE_ETCD_ENDPOINTS_MAX) {
      nc_error(COMPONENT, "store uri etcd:%s: more than %d endpoints", list,
               NC__STORE_ETCD_ENDPOINTS_MAX);
      return -EINVAL;
    }
    if (n > NC__STORE_ETCD_ENDPOINT_LEN_MAX || n <= sizeof scheme - 1 ||
        strncmp(p, scheme, sizeof scheme - 1) != 0 ||
        memchr(p + sizeof scheme - 1, '/', n - (sizeof scheme - 1)) ||
        memchr(p, ' ', n))
      goto bad;
    s->endpoints[s->nendpoints] = strndup(p, n);
    if (!s->endpoints[s->nendpoints])
      return -ENOMEM;
    s->nendpoints++;
    if (!comma)
      return 0;
    p = comma + 1;
  }
bad:
  nc_error(COMPONENT, "store uri etcd:%s: each endpoint must be http://host:port, comma "
           "separated (try etcd:http://127.0.0.1:2379,http://127.0.0.1:22379)", list);
  return -EINVAL;
}

int nc__store_etcd_open(const char *endpoints, struct nc_clock *clock,
                        const struct nc__store_etcd_opts *opts, struct nc_store **out) {
  *out = NULL;
  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK)
    return -ENOMEM;
  struct et_store *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->base.be = &et_backend;
  s->base.clock = clock;
  pthread_mutex_init(&s->mu, NULL);
  if (opts)
    s->opts = *opts;
  if (s->opts.connect_timeout_ms <= 0)
    s->opts.connect_timeout_ms = NC__STORE_ETCD_CONNECT_TIMEOUT_MS;
  if (s->opts.request_timeout_ms <= 0)
    s->opts.request_timeout_ms = NC__STORE_ETCD_REQUEST_TIMEOUT_MS;
  if (s->opts.range_timeout_ms <= 0)
    s->opts.range_timeout_ms = NC__STORE_ETCD_RANGE_TIMEOUT_MS;
  if (s->opts.op_timeout_ms <= 0)
    s->opts.op_timeout_ms = NC__STORE_ETCD_OP_TIMEOUT_MS;
  if (s->opts.watch_queue_bytes_max == 0)
    s->opts.watch_queue_bytes_max = NC__STORE_ETCD_WATCH_QUEUE_BYTES;

  int err = parse_endpoints(s, endpoints);
  if (err < 0)
    goto fail;
  /* Start on a random endpoint: every node of a cluster is given the same
   * list, and they must not all load the first member. */
  uint32_t r = 0;
  nc_rand_system()->fill(nc_rand_system(), &r, sizeof r);
  s->preferred = r % s->nendpoints;
  static const char *const headers[] = {
      "Content-Type: application/json",
      "Expect:", /* no 100-continue round trip on large bodies */
      "Grpc-Metadata-hasleader: true",
  };
  for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
    struct curl_slist *l = curl_slist_append(s->headers, headers[i]);
    if (!l) {
      err = -ENOMEM;
      goto fail;
    }
    s->headers = l;
  }
  /* The probe: a linearizable read proves a member answers and the
   * cluster has a leader. */
  bool ok = true;
  json_t *req = json_object(), *resp = NULL;
  if (req) {
    put_field(req, "key", b64_json("", 1), &ok);
    put_field(req, "count_only", json_true(), &ok);
  }
  err = req && ok ? et_call(s, "/v3/kv/range", req, CALL_IDEMPOTENT | CALL_FAIL_FAST, &resp)
                  : -ENOMEM;
  json_decref(req);
  json_decref(resp);
  if (err < 0) {
    nc_error(COMPONENT, "store uri etcd:%s: %s (is etcd running there?)", endpoints,
             nc_strerror(err));
    goto fail;
  }
  *out = &s->base;
  return 0;

fail:
  et_free(s);
  return err;
}

static const struct nc_store_backend et_backend = {
    .version = 1,
    .name = "etcd",
    .close = et_close,
    .get = et_get,
    .range = et_range,
    .txn = et_txn,
    .lease_grant = et_lease_grant,
    .lease_keepalive = et_lease_keepalive,
    .lease_revoke = et_lease_revoke,
    .watch_open = et_watch_open,
    .watch_next = et_watch_next,
    .watch_close = et_watch_close,
    .compact = et_compact,
    .current_rev = et_current_rev,
};
