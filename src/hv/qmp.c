#include "hv/qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hv/qmp_msg.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#define DEFAULT_MAX_EVENTS 256
#define MAX_MAX_EVENTS 65536
#define ERR_DESC_MAX 1024
#define ERR_CLASS_MAX 64

struct nc_qmp {
  int fd; /* owned */
  struct nc_qmp_framer fr;
  int broken;       /* 0, or the error that made the stream unusable */
  uint64_t next_id; /* ids sent so far; replies carry them back */
  json_t **events;  /* owned ring of ev_max references */
  size_t ev_max, ev_head, ev_count;
  uint64_t ev_dropped;
  char err_desc[ERR_DESC_MAX];
  char err_class[ERR_CLASS_MAX];
  int ver_major, ver_minor, ver_micro;
};

static int64_t now_ms(void) { return nc_mono_ms(nc_clock_system()); }

/* deadline < 0 means none. */
static int64_t deadline_after(int timeout_ms) {
  return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static int remaining_ms(int64_t deadline) {
  if (deadline < 0)
    return -1;
  int64_t left = deadline - now_ms();
  if (left <= 0)
    return 0;
  return left > INT_MAX ? INT_MAX : (int)left;
}

static void set_err(struct nc_qmp *q, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(struct nc_qmp *q, const char *cls, const char *fmt, ...) {
  snprintf(q->err_class, sizeof q->err_class, "%s", cls);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(q->err_desc, sizeof q->err_desc, fmt, ap);
  va_end(ap);
}

static void clear_err(struct nc_qmp *q) {
  q->err_class[0] = '\0';
  q->err_desc[0] = '\0';
}

/* Marks the stream unusable: after a framing error or a half-written
 * command there is no way to find the next message boundary again. */
static int set_broken(struct nc_qmp *q, int err, const char *why) {
  q->broken = err;
  set_err(q, "", "QMP connection broken: %s (%s)", why, nc_strerror(err));
  return err;
}

/* Maps a QMP error class (qapi/error.json, QapiErrorClass) to our codes. */
static int map_error_class(const char *cls) {
  if (strcmp(cls, "CommandNotFound") == 0)
    return -ENOSYS;
  if (strcmp(cls, "DeviceNotFound") == 0)
    return -ENODEV;
  if (strcmp(cls, "KVMMissingCap") == 0)
    return -ENOTSUP;
  return NC_E_HV;
}

static void enqueue_event(struct nc_qmp *q, json_t *ev) {
  if (q->ev_count == q->ev_max) {
    json_decref(q->events[q->ev_head]);
    q->ev_head = (q->ev_head + 1) % q->ev_max;
    q->ev_count--;
    q->ev_dropped++;
    nc_debug("qmp", "event queue full (%zu); dropped the oldest (%llu so far)", q->ev_max,
             (unsigned long long)q->ev_dropped);
  }
  q->events[(q->ev_head + q->ev_count) % q->ev_max] = json_incref(ev);
  q->ev_count++;
}

/* Reads until one whole message is parsed into *msg (the caller clears
 * it) or the deadline passes. Lines already buffered are returned even
 * when the deadline has passed. */
static int read_msg(struct nc_qmp *q, int64_t deadline, struct nc_qmp_msg *msg) {
  for (;;) {
    const char *line;
    size_t n;
    int rc = nc_qmp_framer_next(&q->fr, &line, &n);
    if (rc < 0)
      return set_broken(q, rc, "a message exceeded the size cap");
    if (rc == 1) {
      rc = nc_qmp_msg_parse(line, n, msg);
      if (rc < 0)
        return set_broken(q, rc, "QEMU sent a line that is not a QMP message");
      return 0;
    }
    char *dst;
    size_t avail;
    rc = nc_qmp_framer_space(&q->fr, &dst, &avail);
    if (rc == NC_E_TOOBIG)
      return set_broken(q, rc, "a message exceeded the size cap");
    if (rc < 0)
      return rc;
    struct pollfd p = {.fd = q->fd, .events = POLLIN};
    rc = poll(&p, 1, remaining_ms(deadline));
    if (rc < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (rc == 0)
      return -ETIMEDOUT;
    ssize_t r = recv(q->fd, dst, avail, 0);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
        continue;
      return set_broken(q, -errno, "reading the socket failed");
    }
    if (r == 0)
      return set_broken(q, -ECONNRESET, "QEMU closed the socket");
    nc_qmp_framer_commit(&q->fr, (size_t)r);
  }
}

static int send_all(struct nc_qmp *q, const char *buf, size_t len, int64_t deadline) {
  size_t off = 0;
  while (off < len) {
    ssize_t w = send(q->fd, buf + off, len - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += (size_t)w;
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      int err = errno == EPIPE ? -ECONNRESET : -errno;
      return set_broken(q, err, "writing the socket failed");
    }
    struct pollfd p = {.fd = q->fd, .events = POLLOUT};
    int rc = poll(&p, 1, remaining_ms(deadline));
    if (rc < 0 && errno != EINTR)
      return -errno;
    if (rc == 0) {
      /* Half a command on the wire would be glued to the next one. */
      if (off > 0)
        return set_broken(q, -ETIMEDOUT, "a command was only partly written");
      return -ETIMEDOUT;
    }
  }
  return 0;
}

static bool id_matches(const json_t *id, uint64_t want) {
  /* QEMU omits "id" only when it could not parse the request at all, so
   * an id-less reply answers the command in flight. */
  if (!id)
    return true;
  return json_is_integer(id) && (uint64_t)json_integer_value(id) == want;
}

/* Waits for the reply to command want_id, queueing events meanwhile. On
 * success *reply holds the message (caller clears it). */
static int await_reply(struct nc_qmp *q, uint64_t want_id, int64_t deadline,
                       struct nc_qmp_msg *reply) {
  for (;;) {
    struct nc_qmp_msg m;
    int rc = read_msg(q, deadline, &m);
    if (rc < 0)
      return rc;
    switch (m.kind) {
    case NC_QMP_MSG_EVENT:
      enqueue_event(q, m.root);
      break;
    case NC_QMP_MSG_RETURN:
    case NC_QMP_MSG_ERROR:
      if (id_matches(m.id, want_id)) {
        *reply = m;
        return 0;
      }
      nc_debug("qmp", "dropping a late reply to an earlier command");
      break;
    case NC_QMP_MSG_GREETING:
      nc_qmp_msg_clear(&m);
      return set_broken(q, NC_E_PROTO, "a second greeting arrived");
    }
    nc_qmp_msg_clear(&m);
  }
}

static int execute_until(struct nc_qmp *q, const char *cmd, json_t *args, int64_t deadline,
                         json_t **ret) {
  if (ret)
    *ret = NULL;
  if (!cmd || (args && !json_is_object(args))) {
    set_err(q, "", "bad arguments to nc_qmp_execute");
    return NC_E_INVALID;
  }
  if (q->broken) {
    set_err(q, "", "QMP connection broken earlier (%s); reconnect", nc_strerror(q->broken));
    return -ENOTCONN;
  }
  clear_err(q);

  uint64_t id = ++q->next_id;
  json_t *req = json_pack("{s:s, s:I}", "execute", cmd, "id", (json_int_t)id);
  if (!req)
    return -ENOMEM;
  if (args)
    json_object_set(req, "arguments", args);
  char *text = json_dumps(req, JSON_COMPACT);
  json_decref(req);
  if (!text)
    return -ENOMEM;
  size_t n = strlen(text);
  char *line = malloc(n + 1);
  if (!line) {
    free(text);
    return -ENOMEM;
  }
  memcpy(line, text, n);
  line[n] = '\n';
  free(text);

  int rc = send_all(q, line, n + 1, deadline);
  free(line);
  if (rc < 0) {
    if (rc == -ETIMEDOUT)
      set_err(q, "", "could not send '%s' in time", cmd);
    return rc;
  }

  struct nc_qmp_msg reply;
  rc = await_reply(q, id, deadline, &reply);
  if (rc == -ETIMEDOUT) {
    set_err(q, "", "no reply to '%s' in time", cmd);
    return rc;
  }
  if (rc < 0)
    return rc;
  if (reply.kind == NC_QMP_MSG_ERROR) {
    set_err(q, reply.err_class, "%s", reply.err_desc);
    rc = map_error_class(reply.err_class);
  } else if (ret) {
    *ret = json_incref(reply.value);
  }
  nc_qmp_msg_clear(&reply);
  return rc;
}

int nc_qmp_execute(struct nc_qmp *q, const char *cmd, json_t *args, int timeout_ms,
                   json_t **ret) {
  return execute_until(q, cmd, args, deadline_after(timeout_ms), ret);
}

int nc_qmp_attach_fd(int fd, const struct nc_qmp_opts *opts, int timeout_ms,
                     struct nc_qmp **out) {
  int64_t deadline = deadline_after(timeout_ms);
  *out = NULL;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  struct nc_qmp *q = calloc(1, sizeof *q);
  if (!q) {
    close(fd);
    return -ENOMEM;
  }
  q->fd = fd;
  q->ev_max = opts && opts->max_events ? opts->max_events : DEFAULT_MAX_EVENTS;
  if (q->ev_max > MAX_MAX_EVENTS)
    q->ev_max = MAX_MAX_EVENTS;
  q->events = calloc(q->ev_max, sizeof *q->events);
  nc_qmp_framer_init(&q->fr, opts ? opts->max_msg_bytes : 0);
  int rc = -ENOMEM;
  if (!q->events)
    goto fail;

  struct nc_qmp_msg m;
  rc = read_msg(q, deadline, &m);
  if (rc < 0)
    goto fail;
  if (m.kind != NC_QMP_MSG_GREETING) {
    nc_qmp_msg_clear(&m);
    rc = NC_E_PROTO;
    goto fail;
  }
  q->ver_major = m.ver_major;
  q->ver_minor = m.ver_minor;
  q->ver_micro = m.ver_micro;
  nc_qmp_msg_clear(&m);

  rc = execute_until(q, "qmp_capabilities", NULL, deadline, NULL);
  if (rc < 0)
    goto fail;
  *out = q;
  return 0;

fail:
  nc_debug("qmp", "handshake failed: %s%s%s", nc_strerror(rc), q->err_desc[0] ? ": " : "",
           q->err_desc);
  nc_qmp_close(q);
  return rc;
}

int nc_qmp_connect(const char *path, const struct nc_qmp_opts *opts, int timeout_ms,
                   struct nc_qmp **out) {
  *out = NULL;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path)
    return -ENAMETOOLONG;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  int64_t deadline = deadline_after(timeout_ms);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int err = -errno;
    if (err != -EINPROGRESS) {
      close(fd);
      return err; /* ENOENT, ECONNREFUSED, EAGAIN (backlog full) */
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int rc;
    do {
      rc = poll(&p, 1, remaining_ms(deadline));
    } while (rc < 0 && errno == EINTR);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (rc <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
      close(fd);
      return rc == 0 ? -ETIMEDOUT : soerr ? -soerr : -errno;
    }
  }
  return nc_qmp_attach_fd(fd, opts, remaining_ms(deadline), out);
}

void nc_qmp_close(struct nc_qmp *q) {
  if (!q)
    return;
  if (q->fd >= 0)
    close(q->fd);
  if (q->events) {
    for (size_t i = 0; i < q->ev_count; i++)
      json_decref(q->events[(q->ev_head + i) % q->ev_max]);
    free(q->events);
  }
  nc_qmp_framer_free(&q->fr);
  free(q);
}

const char *nc_qmp_error_desc(const struct nc_qmp *q) { return q->err_desc; }
const char *nc_qmp_error_class(const struct nc_qmp *q) { return q->err_class; }

int nc_qmp_next_event(struct nc_qmp *q, json_t **event) {
  *event = NULL;
  if (q->ev_count == 0)
    return 0;
  *event = q->events[q->ev_head];
  q->events[q->ev_head] = NULL;
  q->ev_head = (q->ev_head + 1) % q->ev_max;
  q->ev_count--;
  return 1;
}

int nc_qmp_wait_event(struct nc_qmp *q, int timeout_ms) {
  int64_t deadline = deadline_after(timeout_ms);
  while (q->ev_count == 0) {
    if (q->broken)
      return -ENOTCONN;
    struct nc_qmp_msg m;
    int rc = read_msg(q, deadline, &m);
    if (rc < 0)
      return rc;
    if (m.kind == NC_QMP_MSG_EVENT) {
      enqueue_event(q, m.root);
    } else if (m.kind == NC_QMP_MSG_GREETING) {
      nc_qmp_msg_clear(&m);
      return set_broken(q, NC_E_PROTO, "a second greeting arrived");
    } else {
      nc_debug("qmp", "dropping a late reply to an earlier command");
    }
    nc_qmp_msg_clear(&m);
  }
  return 0;
}

uint64_t nc_qmp_events_dropped(const struct nc_qmp *q) { return q->ev_dropped; }
int nc_qmp_broken(const struct nc_qmp *q) { return q->broken; }
int nc_qmp_fd(const struct nc_qmp *q) { return q->fd; }

void nc_qmp_version(const struct nc_qmp *q, int *major, int *minor, int *micro) {
  if (major)
    *major = q->ver_major;
  if (minor)
    *minor = q->ver_minor;
  if (micro)
    *micro = q->ver_micro;
}
