#include "vm/ops.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/sync.h"
#include "vm/events.h"

#define OPS_PREFIX "/nc/ops/"

struct nc_op {
  struct nc_ops *ops;
  int refs; /* guarded by ops->mu */
  char id[NC_OP_ID_LEN + 1];
  char kind[32];
  char target[80];
  enum nc_op_status status;
  double progress;
  char message[512];
  char err_code[32];
  char err_message[512];
  char result[512]; /* message on success; "" = "done" */
  int64_t created_ms, updated_ms, finished_ms;
  bool cancel;
  bool cancellable;
  bool listed; /* still in ops->list */
};

struct nc_ops {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* broadcast on every finish */
  struct nc_store *store;
  struct nc_clock *clock;
  struct nc_rand *rand;
  struct nc_events *events;
  struct nc_op **list; /* oldest first */
  size_t n, cap;
};

const char *nc_op_status_name(enum nc_op_status s) {
  static const char *const names[] = {"pending", "running", "succeeded", "failed",
                                      "cancelled"};
  return (unsigned)s < 5 ? names[s] : "unknown";
}

static bool finished(const struct nc_op *op) { return op->status >= NC_OP_SUCCEEDED; }

/* Caller holds ops->mu. */
static json_t *to_json_locked(const struct nc_op *op) {
  char c[NC_ISO8601_LEN], u[NC_ISO8601_LEN], f[NC_ISO8601_LEN];
  nc_iso8601(op->created_ms, c, sizeof c);
  nc_iso8601(op->updated_ms, u, sizeof u);
  json_t *err = json_null();
  if (op->status == NC_OP_FAILED || op->status == NC_OP_CANCELLED)
    err = json_pack("{s:s, s:s}", "code", op->err_code, "message", op->err_message);
  json_t *fin = json_null();
  if (finished(op)) {
    nc_iso8601(op->finished_ms, f, sizeof f);
    fin = json_string(f);
  }
  return json_pack("{s:s, s:s, s:s, s:s, s:f, s:s, s:o, s:s, s:s, s:o, s:b, s:I, s:I, s:I}",
                   "id", op->id, "kind", op->kind, "target", op->target, "status",
                   nc_op_status_name(op->status), "progress", op->progress, "message",
                   op->message, "error", err, "created_at", c, "updated_at", u, "finished_at",
                   fin, "cancellable", op->cancellable, "created_ms", (json_int_t)op->created_ms, "updated_ms",
                   (json_int_t)op->updated_ms, "finished_ms", (json_int_t)op->finished_ms);
}

/* Caller holds ops->mu. Store errors are logged, not fatal: the operation
 * itself already happened. */
static void persist_locked(struct nc_op *op) {
  json_t *j = to_json_locked(op);
  char *text = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!text)
    return;
  char key[64];
  snprintf(key, sizeof key, OPS_PREFIX "%s", op->id);
  int rc = nc_store_put(op->ops->store, key, text, strlen(text), 0, NULL);
  if (rc)
    nc_warn("ops", "cannot record operation %s: %s", op->id, nc_strerror(rc));
  free(text);
}

static void publish_locked(struct nc_op *op) {
  if (op->ops->events)
    nc_events_publish(op->ops->events, "operation", to_json_locked(op));
}

int nc_ops_new(struct nc_store *store, struct nc_clock *clock, struct nc_rand *rand,
               struct nc_events *events, struct nc_ops **out) {
  struct nc_ops *ops = calloc(1, sizeof *ops);
  if (!ops)
    return -ENOMEM;
  pthread_mutex_init(&ops->mu, NULL);
  nc_cond_init_mono(&ops->cv);
  ops->store = store;
  ops->clock = clock;
  ops->rand = rand;
  ops->events = events;
  *out = ops;
  return 0;
}

static void op_free(struct nc_op *op) { free(op); }

void nc_ops_free(struct nc_ops *ops) {
  if (!ops)
    return;
  for (size_t i = 0; i < ops->n; i++) {
    ops->list[i]->listed = false;
    if (--ops->list[i]->refs == 0)
      op_free(ops->list[i]);
  }
  free(ops->list);
  pthread_cond_destroy(&ops->cv);
  pthread_mutex_destroy(&ops->mu);
  free(ops);
}

/* Caller holds mu. Drops the oldest finished ops beyond NC_OPS_KEEP from
 * memory (and from the store). */
static void trim_locked(struct nc_ops *ops) {
  size_t done = 0;
  for (size_t i = 0; i < ops->n; i++)
    done += finished(ops->list[i]);
  size_t w = 0;
  for (size_t i = 0; i < ops->n; i++) {
    struct nc_op *op = ops->list[i];
    if (done > NC_OPS_KEEP && finished(op)) {
      done--;
      char key[64];
      snprintf(key, sizeof key, OPS_PREFIX "%s", op->id);
      nc_store_delete(ops->store, key, NULL);
      op->listed = false;
      if (--op->refs == 0)
        op_free(op);
      continue;
    }
    ops->list[w++] = op;
  }
  ops->n = w;
}

static int append_locked(struct nc_ops *ops, struct nc_op *op) {
  if (ops->n == ops->cap) {
    size_t cap = ops->cap ? ops->cap * 2 : 64;
    struct nc_op **l = realloc(ops->list, cap * sizeof *l);
    if (!l)
      return -ENOMEM;
    ops->list = l;
    ops->cap = cap;
  }
  ops->list[ops->n++] = op;
  op->listed = true;
  op->refs++;
  return 0;
}

static int cmp_created(const void *a, const void *b) {
  const struct nc_op *x = *(struct nc_op *const *)a, *y = *(struct nc_op *const *)b;
  return x->created_ms < y->created_ms ? -1 : x->created_ms > y->created_ms;
}

int nc_ops_recover(struct nc_ops *ops) {
  struct nc_kv_list l;
  int rc = nc_store_range(ops->store, OPS_PREFIX, 0, &l);
  if (rc)
    return rc;
  pthread_mutex_lock(&ops->mu);
  for (size_t i = 0; i < l.count; i++) {
    json_t *j = json_loadb(l.items[i].value, l.items[i].value_len, 0, NULL);
    const char *id, *kind, *target, *status, *message = "";
    json_int_t c = 0, u = 0, f = 0;
    json_t *err = NULL;
    if (!j || json_unpack(j, "{s:s, s:s, s:s, s:s, s?s, s?o, s?I, s?I, s?I}", "id", &id,
                          "kind", &kind, "target", &target, "status", &status, "message",
                          &message, "error", &err, "created_ms", &c, "updated_ms", &u,
                          "finished_ms", &f) != 0) {
      json_decref(j);
      continue;
    }
    struct nc_op *op = calloc(1, sizeof *op);
    if (!op) {
      json_decref(j);
      break;
    }
    op->ops = ops;
    snprintf(op->id, sizeof op->id, "%s", id);
    snprintf(op->kind, sizeof op->kind, "%s", kind);
    snprintf(op->target, sizeof op->target, "%s", target);
    snprintf(op->message, sizeof op->message, "%s", message);
    op->created_ms = c;
    op->updated_ms = u;
    op->finished_ms = f;
    op->status = NC_OP_FAILED;
    for (int s = 0; s < 5; s++)
      if (strcmp(status, nc_op_status_name((enum nc_op_status)s)) == 0)
        op->status = (enum nc_op_status)s;
    if (json_is_object(err)) {
      const char *ec = json_string_value(json_object_get(err, "code"));
      const char *em = json_string_value(json_object_get(err, "message"));
      snprintf(op->err_code, sizeof op->err_code, "%s", ec ? ec : "");
      snprintf(op->err_message, sizeof op->err_message, "%s", em ? em : "");
    }
    json_decref(j);
    bool cut_short = !finished(op);
    if (cut_short) {
      op->status = NC_OP_FAILED;
      op->finished_ms = op->updated_ms = nc_wall_ms(ops->clock);
      snprintf(op->err_code, sizeof op->err_code, "interrupted");
      snprintf(op->err_message, sizeof op->err_message,
               "novacrond stopped while this operation ran; check the vm's state and retry");
    }
    if (append_locked(ops, op) != 0) {
      free(op);
      break;
    }
    if (cut_short)
      persist_locked(op);
  }
  if (ops->n > 1)
    qsort(ops->list, ops->n, sizeof *ops->list, cmp_created);
  trim_locked(ops);
  pthread_mutex_unlock(&ops->mu);
  nc_kv_list_free(&l);
  return 0;
}

int nc_ops_create(struct nc_ops *ops, const char *kind, const char *target, struct nc_op **out) {
  struct nc_op *op = calloc(1, sizeof *op);
  if (!op)
    return -ENOMEM;
  op->ops = ops;
  char hex[17];
  nc_rand_hex(ops->rand, hex, 8);
  snprintf(op->id, sizeof op->id, "op-%s", hex);
  snprintf(op->kind, sizeof op->kind, "%s", kind);
  snprintf(op->target, sizeof op->target, "%s", target);
  op->created_ms = op->updated_ms = nc_wall_ms(ops->clock);
  op->status = NC_OP_PENDING;
  snprintf(op->message, sizeof op->message, "queued");
  pthread_mutex_lock(&ops->mu);
  int rc = append_locked(ops, op);
  if (rc) {
    pthread_mutex_unlock(&ops->mu);
    free(op);
    return rc;
  }
  op->refs++; /* the caller's */
  persist_locked(op);
  publish_locked(op);
  trim_locked(ops);
  pthread_mutex_unlock(&ops->mu);
  *out = op;
  return 0;
}

void nc_op_ref(struct nc_op *op) {
  pthread_mutex_lock(&op->ops->mu);
  op->refs++;
  pthread_mutex_unlock(&op->ops->mu);
}

void nc_op_unref(struct nc_op *op) {
  if (!op)
    return;
  struct nc_ops *ops = op->ops;
  pthread_mutex_lock(&ops->mu);
  bool last = --op->refs == 0;
  pthread_mutex_unlock(&ops->mu);
  if (last)
    op_free(op);
}

const char *nc_op_id(const struct nc_op *op) { return op->id; }

void nc_op_running(struct nc_op *op, const char *message) {
  pthread_mutex_lock(&op->ops->mu);
  op->status = NC_OP_RUNNING;
  snprintf(op->message, sizeof op->message, "%s", message);
  op->updated_ms = nc_wall_ms(op->ops->clock);
  persist_locked(op);
  publish_locked(op);
  pthread_mutex_unlock(&op->ops->mu);
}

void nc_op_progress(struct nc_op *op, double fraction, const char *message) {
  pthread_mutex_lock(&op->ops->mu);
  if (fraction < 0)
    fraction = 0;
  if (fraction > 1)
    fraction = 1;
  op->progress = fraction;
  if (message)
    snprintf(op->message, sizeof op->message, "%s", message);
  op->updated_ms = nc_wall_ms(op->ops->clock);
  pthread_mutex_unlock(&op->ops->mu);
}

void nc_op_finish(struct nc_op *op, int rc, const struct nc_errinfo *err) {
  pthread_mutex_lock(&op->ops->mu);
  if (rc == 0) {
    op->status = NC_OP_SUCCEEDED;
    op->progress = 1.0;
    snprintf(op->message, sizeof op->message, "%s", op->result[0] ? op->result : "done");
  } else if (rc == NC_E_CANCELLED) {
    op->status = NC_OP_CANCELLED;
    snprintf(op->err_code, sizeof op->err_code, "cancelled");
    snprintf(op->err_message, sizeof op->err_message, "%s",
             err && err->message[0] ? err->message : "cancelled on request");
    snprintf(op->message, sizeof op->message, "cancelled");
  } else {
    op->status = NC_OP_FAILED;
    snprintf(op->err_code, sizeof op->err_code, "%s", err && err->code[0] ? err->code : "failed");
    snprintf(op->err_message, sizeof op->err_message, "%s",
             err && err->message[0] ? err->message : nc_strerror(rc));
    snprintf(op->message, sizeof op->message, "failed");
  }
  op->updated_ms = op->finished_ms = nc_wall_ms(op->ops->clock);
  persist_locked(op);
  publish_locked(op);
  pthread_cond_broadcast(&op->ops->cv);
  pthread_mutex_unlock(&op->ops->mu);
}

bool nc_op_cancel_requested(struct nc_op *op) {
  pthread_mutex_lock(&op->ops->mu);
  bool c = op->cancel;
  pthread_mutex_unlock(&op->ops->mu);
  return c;
}

void nc_op_set_result(struct nc_op *op, const char *message) {
  pthread_mutex_lock(&op->ops->mu);
  snprintf(op->result, sizeof op->result, "%s", message);
  pthread_mutex_unlock(&op->ops->mu);
}

void nc_op_set_cancellable(struct nc_op *op, bool cancellable) {
  pthread_mutex_lock(&op->ops->mu);
  op->cancellable = cancellable;
  pthread_mutex_unlock(&op->ops->mu);
}

json_t *nc_op_to_json(struct nc_op *op) {
  pthread_mutex_lock(&op->ops->mu);
  json_t *j = to_json_locked(op);
  pthread_mutex_unlock(&op->ops->mu);
  return j;
}

static struct nc_op *find_locked(struct nc_ops *ops, const char *id) {
  for (size_t i = 0; i < ops->n; i++)
    if (strcmp(ops->list[i]->id, id) == 0)
      return ops->list[i];
  return NULL;
}

int nc_ops_get_json(struct nc_ops *ops, const char *id, int wait_ms, json_t **out) {
  struct timespec dl = nc_deadline(wait_ms);
  pthread_mutex_lock(&ops->mu);
  struct nc_op *op = find_locked(ops, id);
  if (!op) {
    pthread_mutex_unlock(&ops->mu);
    return -ENOENT;
  }
  op->refs++;
  while (wait_ms > 0 && !finished(op)) {
    if (pthread_cond_timedwait(&ops->cv, &ops->mu, &dl) == ETIMEDOUT)
      break;
  }
  *out = to_json_locked(op);
  bool last = --op->refs == 0;
  pthread_mutex_unlock(&ops->mu);
  if (last)
    op_free(op);
  return 0;
}

json_t *nc_ops_list_json(struct nc_ops *ops) {
  json_t *arr = json_array();
  pthread_mutex_lock(&ops->mu);
  for (size_t i = ops->n; i > 0; i--)
    json_array_append_new(arr, to_json_locked(ops->list[i - 1]));
  pthread_mutex_unlock(&ops->mu);
  return arr;
}

int nc_ops_cancel(struct nc_ops *ops, const char *id, json_t **out) {
  pthread_mutex_lock(&ops->mu);
  struct nc_op *op = find_locked(ops, id);
  int rc = 0;
  if (!op)
    rc = -ENOENT;
  else if (finished(op) || !op->cancellable)
    rc = NC_E_CONFLICT;
  else
    op->cancel = true;
  if (op && out)
    *out = to_json_locked(op);
  pthread_mutex_unlock(&ops->mu);
  return rc;
}

void nc_ops_counts(struct nc_ops *ops, unsigned counts[5]) {
  memset(counts, 0, 5 * sizeof *counts);
  pthread_mutex_lock(&ops->mu);
  for (size_t i = 0; i < ops->n; i++)
    counts[ops->list[i]->status]++;
  pthread_mutex_unlock(&ops->mu);
}
