#include "hv/qmp_msg.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

/* Lines are handed out as (pointer, length) pairs, and push() reports the
 * bytes it took as an int, so the cap must stay well inside INT_MAX. */
#define FRAMER_MAX_CAP ((size_t)1 << 30)
#define FRAMER_FIRST_ALLOC 4096

void nc_qmp_framer_init(struct nc_qmp_framer *f, size_t max_line_bytes) {
  memset(f, 0, sizeof *f);
  if (max_line_bytes == 0)
    max_line_bytes = NC_QMP_MAX_MSG_BYTES;
  if (max_line_bytes > FRAMER_MAX_CAP)
    max_line_bytes = FRAMER_MAX_CAP;
  f->max_line_bytes = max_line_bytes;
}

void nc_qmp_framer_free(struct nc_qmp_framer *f) {
  free(f->buf);
  f->buf = NULL;
  f->cap_bytes = f->start = f->len = f->scanned = 0;
}

int nc_qmp_framer_space(struct nc_qmp_framer *f, char **dst, size_t *avail) {
  if (f->error)
    return f->error;
  if (f->start > 0) {
    memmove(f->buf, f->buf + f->start, f->len - f->start);
    f->len -= f->start;
    f->scanned -= f->start;
    f->start = 0;
  }
  /* A line of max_line_bytes plus "\r\n" must fit whole. */
  size_t limit = f->max_line_bytes + 2;
  if (f->len == f->cap_bytes) {
    if (f->cap_bytes >= limit) {
      f->error = NC_E_TOOBIG;
      return f->error;
    }
    size_t ncap = f->cap_bytes ? f->cap_bytes * 2 : FRAMER_FIRST_ALLOC;
    if (ncap > limit)
      ncap = limit;
    char *nb = realloc(f->buf, ncap);
    if (!nb)
      return -ENOMEM;
    f->buf = nb;
    f->cap_bytes = ncap;
  }
  *dst = f->buf + f->len;
  *avail = f->cap_bytes - f->len;
  return 0;
}

void nc_qmp_framer_commit(struct nc_qmp_framer *f, size_t n) {
  if (n > f->cap_bytes - f->len)
    n = f->cap_bytes - f->len; /* a caller bug; never run past the buffer */
  f->len += n;
}

int nc_qmp_framer_push(struct nc_qmp_framer *f, const void *data, size_t len) {
  char *dst;
  size_t avail;
  int rc = nc_qmp_framer_space(f, &dst, &avail);
  if (rc < 0)
    return rc;
  size_t n = len < avail ? len : avail;
  if (n > 0)
    memcpy(dst, data, n);
  nc_qmp_framer_commit(f, n);
  return (int)n;
}

int nc_qmp_framer_next(struct nc_qmp_framer *f, const char **line, size_t *len) {
  if (f->error)
    return f->error;
  for (;;) {
    const char *nl = NULL;
    if (f->scanned < f->len)
      nl = memchr(f->buf + f->scanned, '\n', f->len - f->scanned);
    if (!nl) {
      f->scanned = f->len;
      /* max_line_bytes + a pending '\r' is still a possible line. */
      if (f->len - f->start > f->max_line_bytes + 1) {
        f->error = NC_E_TOOBIG;
        return f->error;
      }
      return 0;
    }
    size_t end = (size_t)(nl - f->buf);
    const char *l = f->buf + f->start;
    size_t n = end - f->start;
    if (n > 0 && l[n - 1] == '\r')
      n--;
    f->start = end + 1;
    f->scanned = f->start;
    if (n > f->max_line_bytes) {
      f->error = NC_E_TOOBIG;
      return f->error;
    }
    if (n == 0)
      continue;
    *line = l;
    *len = n;
    return 1;
  }
}

/* Reads a non-negative integer member that fits an int; -1 otherwise. */
static int get_small_int(const json_t *obj, const char *key) {
  json_t *v = json_object_get(obj, key);
  if (!json_is_integer(v))
    return -1;
  json_int_t i = json_integer_value(v);
  return (i >= 0 && i <= INT_MAX) ? (int)i : -1;
}

static int64_t get_timestamp_us(const json_t *root) {
  json_t *ts = json_object_get(root, "timestamp");
  json_t *s = json_object_get(ts, "seconds");
  json_t *us = json_object_get(ts, "microseconds");
  if (!json_is_integer(s) || !json_is_integer(us))
    return -1;
  json_int_t sec = json_integer_value(s), usec = json_integer_value(us);
  if (sec < 0 || sec > INT64_MAX / 1000000 - 1 || usec < 0 || usec >= 1000000)
    return -1;
  return (int64_t)sec * 1000000 + (int64_t)usec;
}

int nc_qmp_msg_parse(const char *buf, size_t len, struct nc_qmp_msg *out) {
  memset(out, 0, sizeof *out);
  json_error_t jerr;
  json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return NC_E_PROTO;
  if (!json_is_object(root))
    goto proto;

  json_t *qmp = json_object_get(root, "QMP");
  json_t *ret = json_object_get(root, "return");
  json_t *err = json_object_get(root, "error");
  json_t *ev = json_object_get(root, "event");
  if ((qmp != NULL) + (ret != NULL) + (err != NULL) + (ev != NULL) != 1)
    goto proto;

  out->root = root;
  out->timestamp_us = -1;
  out->ver_major = out->ver_minor = out->ver_micro = -1;
  if (qmp) {
    if (!json_is_object(qmp))
      goto proto;
    out->kind = NC_QMP_MSG_GREETING;
    out->value = qmp;
    json_t *ver = json_object_get(json_object_get(qmp, "version"), "qemu");
    out->ver_major = get_small_int(ver, "major");
    out->ver_minor = get_small_int(ver, "minor");
    out->ver_micro = get_small_int(ver, "micro");
  } else if (ret) {
    out->kind = NC_QMP_MSG_RETURN;
    out->value = ret;
    out->id = json_object_get(root, "id");
  } else if (err) {
    json_t *cls = json_object_get(err, "class");
    json_t *desc = json_object_get(err, "desc");
    if (!json_is_string(cls) || !json_is_string(desc))
      goto proto;
    out->kind = NC_QMP_MSG_ERROR;
    out->err_class = json_string_value(cls);
    out->err_desc = json_string_value(desc);
    out->id = json_object_get(root, "id");
  } else {
    if (!json_is_string(ev))
      goto proto;
    out->kind = NC_QMP_MSG_EVENT;
    out->event = json_string_value(ev);
    out->value = json_object_get(root, "data");
    out->timestamp_us = get_timestamp_us(root);
  }
  return 0;

proto:
  json_decref(root);
  memset(out, 0, sizeof *out);
  return NC_E_PROTO;
}

void nc_qmp_msg_clear(struct nc_qmp_msg *m) {
  json_decref(m->root);
  memset(m, 0, sizeof *m);
}
