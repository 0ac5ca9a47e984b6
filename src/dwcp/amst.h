/* AMST: adaptive multi-stream transport.
 *
 * One session carries an ordered, bidirectional sequence of messages
 * (type + payload) over N parallel TCP connections. Each message becomes
 * one frame with a per-direction sequence number; the sender spreads
 * frames over the connections (whichever is free takes the next), the
 * receiver puts them back in order.
 *
 * Memory is bounded end to end: nc_amst_send blocks while the unsent and
 * unacknowledged bytes exceed send_window_bytes, and the receiver holds at
 * most recv_window_bytes of out-of-order frames. So a slow link slows the
 * producer (ultimately QEMU), and QEMU's own bandwidth estimate stays
 * honest.
 *
 * Frame layout (big endian; changing it breaks compatibility):
 *   u16 magic 0x4457 ("DW") | u8 version 1 | u8 type | u64 seq | u32 len | payload
 * The first frame on every connection is HELLO: session id (16 bytes),
 * connection index, connection count. Payloads are capped at
 * NC_AMST_PAYLOAD_MAX; anything bigger is a protocol error. Thread-safe:
 * one sender thread and one receiver thread may use a session at once. */
#ifndef NC_DWCP_AMST_H
#define NC_DWCP_AMST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NC_AMST_PAYLOAD_MAX (1024 * 1024)
#define NC_AMST_STREAMS_MAX 16
#define NC_AMST_HEADER_LEN 16

/* Types 0-15 are the transport's own; callers use 16-255. */
#define NC_AMST_TYPE_USER 16

struct nc_amst;
struct nc_amst_listener;

struct nc_amst_config {
  int streams;               /* 1..NC_AMST_STREAMS_MAX */
  size_t send_window_bytes;  /* default 8 MiB */
  size_t recv_window_bytes;  /* default 8 MiB */
  int connect_timeout_ms;    /* default 5000 */
  int io_timeout_ms;         /* a connection silent this long is dead; default 15000 */
  bool bbr;                  /* TCP_CONGESTION bbr where available */
};

struct nc_amst_stream_stats {
  uint64_t bytes_sent, bytes_recv, frames_sent, frames_recv;
  uint32_t rtt_us, cwnd; /* from TCP_INFO */
};

struct nc_amst_stats {
  int streams;
  uint64_t bytes_sent, bytes_recv; /* payload + headers, all streams */
  uint64_t queued_bytes;           /* waiting to be sent or acknowledged */
  struct nc_amst_stream_stats s[NC_AMST_STREAMS_MAX];
};

/* Destination: listens on host:port (port 0: any free port). */
int nc_amst_listen(const char *host, int port, struct nc_amst_listener **out);
int nc_amst_listener_port(const struct nc_amst_listener *l);
/* Waits up to timeout_ms for all connections of the session with this id.
 * Connections with another id are refused and closed. */
int nc_amst_accept(struct nc_amst_listener *l, const struct nc_amst_config *cfg,
                   const uint8_t session_id[16], int timeout_ms, struct nc_amst **out);
void nc_amst_listener_close(struct nc_amst_listener *l); /* accepts NULL */

/* Source: opens cfg->streams connections to host:port for the session. */
int nc_amst_connect(const struct nc_amst_config *cfg, const char *host, int port,
                    const uint8_t session_id[16], struct nc_amst **out);

/* Queues one message (payload copied). Blocks while the window is full,
 * up to the io timeout. -EPIPE once the session failed or closed. */
int nc_amst_send(struct nc_amst *a, uint8_t type, const void *payload, size_t len);
/* Next message in order. *payload is malloc'd and the caller's. -ETIMEDOUT
 * when none within timeout_ms; -EPIPE when the peer closed after its last
 * message; NC_E_PROTO on a malformed frame. */
int nc_amst_recv(struct nc_amst *a, int timeout_ms, uint8_t *type, void **payload, size_t *len);
/* Waits until everything sent has been acknowledged by the peer. */
int nc_amst_flush(struct nc_amst *a, int timeout_ms);
void nc_amst_stats(struct nc_amst *a, struct nc_amst_stats *out);
/* Fails the session at once: blocked calls return -ECANCELED. */
void nc_amst_abort(struct nc_amst *a);
void nc_amst_close(struct nc_amst *a); /* accepts NULL; graceful */

/* The frame decoder, exposed for the fuzzer: parses one header. */
struct nc_amst_header {
  uint8_t version, type;
  uint64_t seq;
  uint32_t len;
};
int nc_amst_parse_header(const uint8_t buf[NC_AMST_HEADER_LEN], struct nc_amst_header *h);

#endif
