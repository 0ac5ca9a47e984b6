/* A synchronous QMP client over a unix socket.
 *
 * Protocol: docs/interop/qmp-spec.rst in the QEMU tree. On connect QEMU
 * sends a greeting; the client answers with qmp_capabilities and then
 * issues commands. Every command here carries a numeric "id" and its
 * reply is matched by that id, so a reply that arrives after its command
 * timed out is recognised and dropped instead of being taken for the
 * answer to the next command. Events (messages with "event") that arrive
 * while waiting are queued; the queue is bounded and drops its oldest
 * entry when full, counting the drops.
 *
 * A connection is not thread-safe: one thread at a time per nc_qmp.
 * Every wait has a deadline; nothing blocks without one unless the caller
 * passes timeout_ms < 0.
 *
 * Errors: 0 on success, otherwise a negative code:
 *   -ETIMEDOUT    no answer within timeout_ms (the connection stays usable)
 *   -ECONNRESET   QEMU closed the socket (connection broken)
 *   NC_E_TOOBIG   a message exceeded max_msg_bytes (connection broken)
 *   NC_E_PROTO    QEMU sent something that is not QMP (connection broken)
 *   -ENOTCONN     the connection broke earlier; reconnect
 *   QEMU error replies: -ENOSYS (CommandNotFound), -ENODEV
 *   (DeviceNotFound), -ENOTSUP (KVMMissingCap), NC_E_HV (GenericError and
 *   any other class). nc_qmp_error_desc() has the text. */
#ifndef NC_HV_QMP_H
#define NC_HV_QMP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct nc_qmp;

struct nc_qmp_opts {
  size_t max_msg_bytes; /* 0: NC_QMP_MAX_MSG_BYTES (1 MiB) */
  size_t max_events;    /* queued events kept; 0: 256 */
};

/* Connects to the QMP socket at path, reads the greeting and negotiates
 * capabilities, all within timeout_ms. opts may be NULL. On success *out
 * is the caller's (nc_qmp_close). -ENOENT / -ECONNREFUSED when nobody
 * listens there (yet), -ENAMETOOLONG for paths beyond sun_path. */
int nc_qmp_connect(const char *path, const struct nc_qmp_opts *opts, int timeout_ms,
                   struct nc_qmp **out);

/* Same handshake over an already-connected stream socket (tests use a
 * socketpair). The fd belongs to the library from this call on, and is
 * closed on failure. */
int nc_qmp_attach_fd(int fd, const struct nc_qmp_opts *opts, int timeout_ms,
                     struct nc_qmp **out);

/* Closes the socket and frees queued events. Accepts NULL. */
void nc_qmp_close(struct nc_qmp *q);

/* Runs cmd with args (a JSON object, or NULL for none) and waits up to
 * timeout_ms for its reply. args stays the caller's (it is not stolen).
 * On success, if ret is not NULL, *ret is a new reference to the
 * "return" value, owned by the caller (json_decref). On failure *ret is
 * NULL. Events read meanwhile are queued. */
int nc_qmp_execute(struct nc_qmp *q, const char *cmd, json_t *args, int timeout_ms,
                   json_t **ret);

/* Text of the last failure on q: QEMU's "desc" for an error reply, or a
 * sentence of our own for timeouts and broken connections. "" when the
 * last call succeeded. Valid until the next call on q. */
const char *nc_qmp_error_desc(const struct nc_qmp *q);
/* QEMU's error class of the last error reply ("GenericError", ...), or ""
 * when the last failure was not an error reply. */
const char *nc_qmp_error_class(const struct nc_qmp *q);

/* Pops the oldest queued event. Returns 1 and a reference the caller owns
 * in *event ({"event": ..., "data": ..., "timestamp": ...}), or 0 when the
 * queue is empty. Never reads the socket. */
int nc_qmp_next_event(struct nc_qmp *q, json_t **event);

/* Reads the socket until at least one event is queued or timeout_ms
 * passes (0: only what is already readable). 0 when an event is queued,
 * -ETIMEDOUT when none came, or a connection error. Replies to commands
 * that timed out earlier are dropped here too. */
int nc_qmp_wait_event(struct nc_qmp *q, int timeout_ms);

/* Events dropped because the queue was full, since connect. */
uint64_t nc_qmp_events_dropped(const struct nc_qmp *q);

/* 0 while the connection is usable, else the error that broke it. */
int nc_qmp_broken(const struct nc_qmp *q);

/* QEMU version from the greeting; -1 in each field that was absent. */
void nc_qmp_version(const struct nc_qmp *q, int *major, int *minor, int *micro);

/* The socket, for callers that poll it for readability (events) in their
 * own loop and then call nc_qmp_wait_event(q, 0). Still owned by q. */
int nc_qmp_fd(const struct nc_qmp *q);

#endif
