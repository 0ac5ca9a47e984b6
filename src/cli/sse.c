#include "cli/sse.h"

#include "util/err.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct nc_cli_sse {
  nc_cli_sse_cb cb;
  void *arg;
  size_t max_line, max_event;
  char *line; /* the line being read; max_line + 1 bytes */
  size_t line_len;
  bool after_cr;  /* the last byte was CR: a following LF is part of that line end */
  bool bom_check; /* the stream's first byte has not been seen yet */
  char event[64]; /* the event type buffer; longer names are truncated */
  char *data;     /* the data buffer; max_event + 1 bytes */
  size_t data_len;
  bool has_data; /* a data field was seen, even an empty one */
};

int nc_cli_sse_new(size_t max_line_bytes, size_t max_event_bytes, nc_cli_sse_cb cb, void *arg,
                   struct nc_cli_sse **out) {
  struct nc_cli_sse *p = calloc(1, sizeof *p);
  if (p == NULL)
    return -ENOMEM;
  p->line = malloc(max_line_bytes + 1);
  p->data = malloc(max_event_bytes + 1);
  if (p->line == NULL || p->data == NULL) {
    nc_cli_sse_destroy(p);
    return -ENOMEM;
  }
  p->cb = cb;
  p->arg = arg;
  p->max_line = max_line_bytes;
  p->max_event = max_event_bytes;
  p->bom_check = true;
  *out = p;
  return 0;
}

void nc_cli_sse_destroy(struct nc_cli_sse *p) {
  if (p == NULL)
    return;
  free(p->line);
  free(p->data);
  free(p);
}

/* "If the line is empty, dispatch the event": the data buffer loses its
 * final LF; an event without data is dropped; the type resets. */
static int dispatch(struct nc_cli_sse *p) {
  int rc = 0;
  if (p->has_data) {
    if (p->data_len > 0 && p->data[p->data_len - 1] == '\n')
      p->data_len--;
    p->data[p->data_len] = '\0';
    rc = p->cb(p->arg, p->event[0] ? p->event : "message", p->data, p->data_len);
  }
  p->event[0] = '\0';
  p->data_len = 0;
  p->has_data = false;
  return rc;
}

static int process_line(struct nc_cli_sse *p) {
  char *line = p->line;
  size_t len = p->line_len;

  if (len == 0)
    return dispatch(p);
  if (line[0] == ':')
    return 0; /* a comment (keep-alive) */
  char *colon = memchr(line, ':', len);
  size_t name_len = colon ? (size_t)(colon - line) : len;
  const char *value = colon ? colon + 1 : line + len;
  size_t value_len = colon ? len - name_len - 1 : 0;
  if (value_len > 0 && *value == ' ') {
    value++;
    value_len--;
  }
  if (name_len == 5 && memcmp(line, "event", 5) == 0) {
    size_t n = value_len < sizeof p->event - 1 ? value_len : sizeof p->event - 1;
    memcpy(p->event, value, n);
    p->event[n] = '\0';
  } else if (name_len == 4 && memcmp(line, "data", 4) == 0) {
    if (value_len + 1 > p->max_event - p->data_len) /* data_len <= max_event */
      return NC_E_TOOBIG;
    memcpy(p->data + p->data_len, value, value_len);
    p->data_len += value_len;
    p->data[p->data_len++] = '\n';
    p->has_data = true;
  }
  /* "id", "retry" and unknown fields are ignored. */
  return 0;
}

int nc_cli_sse_feed(struct nc_cli_sse *p, const char *buf, size_t len) {
  for (size_t i = 0; i < len; i++) {
    char c = buf[i];
    if (p->bom_check) {
      p->bom_check = false;
      /* A leading byte order mark is skipped when the first piece holds it
       * whole. */
      if (len - i >= 3 && memcmp(buf + i, "\xEF\xBB\xBF", 3) == 0) {
        i += 2;
        continue;
      }
    }
    if (c == '\n' && p->after_cr) {
      p->after_cr = false;
      continue;
    }
    p->after_cr = c == '\r';
    if (c == '\r' || c == '\n') {
      p->line[p->line_len] = '\0';
      int rc = process_line(p);
      p->line_len = 0;
      if (rc != 0)
        return rc;
      continue;
    }
    if (p->line_len >= p->max_line)
      return NC_E_TOOBIG;
    p->line[p->line_len++] = c;
  }
  return 0;
}
