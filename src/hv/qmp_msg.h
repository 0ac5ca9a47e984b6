/* QMP wire format: line framing and message classification.
 *
 * QEMU's QMP server writes one JSON object per line; each is followed by
 * "\r\n" (docs/interop/qmp-spec.rst, "Wire protocol"). A message is one
 * of four kinds (qmp-spec.rst section 2):
 *   greeting   {"QMP": {"version": {...}, "capabilities": [...]}}
 *   success    {"return": <json>, "id": <json>}          ("id" optional)
 *   error      {"error": {"class": "...", "desc": "..."}, "id": <json>}
 *   event      {"event": "NAME", "data": {...}, "timestamp": {...}}
 *
 * Everything here is pure: no I/O and no globals, so the fuzzer
 * (fuzz/fuzz_qmp.c) drives exactly the code the client runs. */
#ifndef NC_HV_QMP_MSG_H
#define NC_HV_QMP_MSG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Default cap on one QMP message, terminator excluded. The largest reply
 * QEMU 10 sends in practice is query-qmp-schema, a few hundred KiB. */
#define NC_QMP_MAX_MSG_BYTES ((size_t)1 << 20)

/* Splits a byte stream into lines without copying them out. The caller
 * embeds it; init never fails (the buffer is allocated on first use). */
struct nc_qmp_framer {
  char *buf;             /* owned; grows up to max_line_bytes + 2 */
  size_t cap_bytes;      /* allocated size of buf */
  size_t max_line_bytes; /* longer lines are NC_E_TOOBIG */
  size_t start;          /* first byte not yet returned as a line */
  size_t len;            /* bytes held in buf */
  size_t scanned;        /* [start, scanned) is known to hold no '\n' */
  int error;             /* sticky: once a line is too long, always that */
};

void nc_qmp_framer_init(struct nc_qmp_framer *f, size_t max_line_bytes);
/* Frees the buffer; the struct may be initialised again. */
void nc_qmp_framer_free(struct nc_qmp_framer *f);

/* Exposes free space at the end of the buffer for read(2): on success
 * *dst and *avail (avail > 0) stay valid until the next call on f. Lines
 * returned earlier by nc_qmp_framer_next() become invalid.
 * NC_E_TOOBIG if the pending line already exceeds the cap, -ENOMEM. */
int nc_qmp_framer_space(struct nc_qmp_framer *f, char **dst, size_t *avail);
/* Records that n bytes (n <= avail) were written into the space. */
void nc_qmp_framer_commit(struct nc_qmp_framer *f, size_t n);
/* Copies up to len bytes in (space, then commit); returns the number taken,
 * which is less than len only when the buffer is full (then call
 * nc_qmp_framer_next), or a negative error. For tests and the fuzzer. */
int nc_qmp_framer_push(struct nc_qmp_framer *f, const void *data, size_t len);

/* Returns 1 and the next complete line (terminator stripped, not
 * NUL-terminated; points into f, valid until the next space/push call),
 * 0 when more input is needed, or NC_E_TOOBIG when the line in progress
 * is longer than the cap. Empty lines are skipped. */
int nc_qmp_framer_next(struct nc_qmp_framer *f, const char **line, size_t *len);

enum nc_qmp_msg_kind {
  NC_QMP_MSG_GREETING,
  NC_QMP_MSG_RETURN,
  NC_QMP_MSG_ERROR,
  NC_QMP_MSG_EVENT,
};

/* A parsed message. root owns the JSON; every other pointer borrows from
 * it and dies with nc_qmp_msg_clear(). */
struct nc_qmp_msg {
  enum nc_qmp_msg_kind kind;
  json_t *root;
  json_t *id;            /* RETURN/ERROR: the echoed id, NULL if absent */
  json_t *value;         /* RETURN: "return"; EVENT: "data" or NULL;
                            GREETING: the "QMP" object */
  const char *event;     /* EVENT: name */
  const char *err_class; /* ERROR: e.g. "GenericError" */
  const char *err_desc;  /* ERROR: human-readable text */
  int64_t timestamp_us;  /* EVENT: host time of the event, -1 if absent */
  int ver_major, ver_minor, ver_micro; /* GREETING: QEMU version, -1 if absent */
};

/* Parses one line. On success *out owns a reference (release with
 * nc_qmp_msg_clear); on failure *out holds nothing. NC_E_PROTO when the
 * bytes are not one JSON object of a known kind. */
int nc_qmp_msg_parse(const char *buf, size_t len, struct nc_qmp_msg *out);
/* Drops the reference and zeroes *m. Safe on a cleared message. */
void nc_qmp_msg_clear(struct nc_qmp_msg *m);

#endif
