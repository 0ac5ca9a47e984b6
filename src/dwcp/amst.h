/* AMST: adaptive multi-stream transport.
 *
 * One session carries an ordered, bidirectional sequence of messages
 * (type + payload) over N parallel TCP connections. Each message becomes
 * one frame with a per-direction sequence number; the sender spreads
 * frames over the connections (whichever connection's sender thread is
 * free takes the next frame from a shared queue), the receiver puts them
 * back in order.
 *
 * Memory is bounded end to end: nc_amst_send blocks while the unsent and
 * unacknowledged bytes (frame bytes, headers included) would exceed
 * send_window_bytes, and the receiver holds at most recv_window_bytes plus
 * one frame of received, undelivered frames. A frame counts as
 * acknowledged only once nc_amst_recv has handed it to the peer's
 * application, so a slow link or a slow consumer slows the producer
 * (ultimately QEMU), and QEMU's own bandwidth estimate stays honest.
 *
 * Frame layout (big endian; changing it breaks compatibility):
 *   u16 magic 0x4457 ("DW") | u8 version 1 | u8 type | u64 seq | u32 len | payload
 * Transport frame types (0-15; callers use 16-255):
 *   HELLO (1)  first frame on every connection, both ways. seq 0, len 32:
 *              session id[16] | u16 index | u16 count | u32 zero |
 *              u64 sender's send_window_bytes. The connector sends it, the
 *              acceptor answers with the same id, index and count once every
 *              connection of the session has arrived.
 *   ACK  (2)   seq = number of frames of the peer's sequence delivered to
 *              the application (all seq < it), len 8: u64 cumulative frame
 *              bytes delivered. Outside the sequence space.
 *   FIN  (3)   len 0; takes the next seq, so it arrives after the last
 *              message: nc_amst_recv returns -EPIPE once everything before
 *              it was delivered. It counts as delivered (and is
 *              acknowledged) as soon as every message before it was.
 * ACKs leave on whichever connection is free, so they can overtake each
 * other; an older one is ignored. The receiver acknowledges when a quarter
 * of the peer's send window (from its HELLO; 4 KiB..1 MiB) was delivered
 * since the last ACK, else 2 ms after the first unacknowledged delivery.
 * A connection that has sent nothing for io_timeout_ms/4 sends PING.
 *   PING (4)   len 0, seq 0: keeps an idle connection from looking dead.
 *   16-255     a message: seq numbers its order, len <= NC_AMST_PAYLOAD_MAX.
 * Anything else (bad magic or version, unknown transport type, a length
 * that does not fit the type, a seq out of order on its connection) is a
 * protocol error and fails the session with NC_E_PROTO.
 *
 * Failure model: a lost connection fails the whole session (frames are
 * not re-sent over another connection); the caller retries the migration.
 *
 * TLS (cfg.tls set, on both ends): every connection runs a TLS 1.3
 * handshake (dwcp/tls.h) right after TCP connect/accept, before HELLO, and
 * everything above, HELLO included, travels inside it. Both sides present
 * their node certificate; the connector must pin the acceptor's
 * fingerprint (cfg.tls_peer_fp), the acceptor may pin the connector's.
 * The connector's handshakes run in parallel, one round trip in all. A
 * connection whose handshake fails (not TLS, the wrong certificate) is
 * refused like one with a bad HELLO; nc_amst_connect returns
 * -EKEYREJECTED when the acceptor's certificate is not the pinned one. A
 * TLS end and a plain end never form a session.
 *
 * Threads: each session runs one sender and one receiver thread per
 * connection. The calls below are thread-safe, except nc_amst_close which
 * must be the last call. Because acknowledgements travel in-band behind
 * data, an application that sends in both directions must keep receiving
 * (in another thread) while it sends, as with a plain TCP socket.
 * With TLS, a connection's sender and receiver share one SSL object. It
 * is never used by both at once: the socket is non-blocking, each SSL
 * call runs under a per-connection mutex, and a call that would block
 * (WANT_READ or WANT_WRITE, from a read or a write alike, e.g. a read
 * that must answer a KeyUpdate) drops the mutex and waits in poll(), so
 * the other thread is never held up by a wait (tls.h has the details).
 * Back-pressure is unchanged: a sender still blocks until its frame is
 * in the kernel, a receiver still reads a payload only once the window
 * admits it, and a connection silent for io_timeout_ms still fails. */
#ifndef NC_DWCP_AMST_H
#define NC_DWCP_AMST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NC_AMST_PAYLOAD_MAX (1024 * 1024)
#define NC_AMST_SEND_WINDOW_MIN (64 * 1024)
#define NC_AMST_STREAMS_MAX 16
#define NC_AMST_HEADER_LEN 16
#define NC_AMST_MAGIC 0x4457
#define NC_AMST_VERSION 1
#define NC_AMST_HELLO_LEN 32

/* Transport frame types; see the table above. */
#define NC_AMST_TYPE_HELLO 1
#define NC_AMST_TYPE_ACK 2
#define NC_AMST_TYPE_FIN 3
#define NC_AMST_TYPE_PING 4
/* Types 0-15 are the transport's own; callers use 16-255. */
#define NC_AMST_TYPE_USER 16

struct nc_amst;
struct nc_amst_listener;
struct nc_tls;

/* A zero field means its default. */
struct nc_amst_config {
  int streams;               /* 1..NC_AMST_STREAMS_MAX, default 4; connect only:
                                the acceptor takes the count from the connector */
  size_t send_window_bytes;  /* default 8 MiB */
  size_t recv_window_bytes;  /* default 8 MiB */
  int connect_timeout_ms;    /* default 5000 */
  int io_timeout_ms;         /* a connection silent this long is dead; default 15000 */
  bool bbr;                  /* TCP_CONGESTION bbr where available */
  size_t sock_buf_bytes;     /* SO_SNDBUF and SO_RCVBUF; 0: kernel autotuning */
  struct nc_tls *tls;        /* this node's TLS identity; NULL: plain TCP.
                                Borrowed: must outlive the session */
  const uint8_t *tls_peer_fp; /* NC_TLS_FP_LEN bytes: the peer's pinned
                                 certificate fingerprint; required to connect
                                 with tls, optional to accept (NULL: any) */
};

struct nc_amst_stream_stats {
  uint64_t bytes_sent, bytes_recv, frames_sent, frames_recv;
  uint32_t rtt_us, cwnd; /* from TCP_INFO */
  char cc[16];           /* congestion control in use ("bbr", "cubic") */
};

struct nc_amst_stats {
  int streams;
  uint64_t bytes_sent, bytes_recv; /* payload + headers, all streams */
  uint64_t queued_bytes;           /* waiting to be sent or acknowledged */
  uint64_t msgs_sent, msgs_recv;   /* admitted by nc_amst_send / delivered by nc_amst_recv */
  uint64_t acks_sent, acks_recv;
  uint64_t recv_buffered_bytes;    /* received, not yet delivered */
  char tls[64];                    /* "TLSv1.3 TLS_AES_128_GCM_SHA256"; "" without TLS */
  struct nc_amst_stream_stats s[NC_AMST_STREAMS_MAX];
};

/* Fills *cfg with the defaults. */
void nc_amst_config_default(struct nc_amst_config *cfg);

/* Destination: listens on host:port (host NULL: any address; port 0: any
 * free port). On success *out is the caller's (nc_amst_listener_close). */
int nc_amst_listen(const char *host, int port, struct nc_amst_listener **out);
int nc_amst_listener_port(const struct nc_amst_listener *l);
/* Waits up to timeout_ms for all connections of the session with this id
 * (the count comes from the connector's HELLO). Connections with another
 * id, or that send anything but a valid HELLO, are closed without
 * affecting the session; so one listener accepts one session at a time.
 * cfg may be NULL (defaults). On success *out is the caller's
 * (nc_amst_close); -ETIMEDOUT when the session did not complete. */
int nc_amst_accept(struct nc_amst_listener *l, const struct nc_amst_config *cfg,
                   const uint8_t session_id[16], int timeout_ms, struct nc_amst **out);
void nc_amst_listener_close(struct nc_amst_listener *l); /* accepts NULL */
/* Makes a pending or later nc_amst_accept on l return -ECANCELED at once
 * (from any thread; l must still be closed by its owner). */
void nc_amst_listener_abort(struct nc_amst_listener *l);

/* Source: opens cfg->streams connections to host:port for the session and
 * waits (connect_timeout_ms) for the acceptor's HELLOs. -ECONNREFUSED when
 * the acceptor closed them (wrong id, or not accepting this session). On
 * success *out is the caller's (nc_amst_close). */
int nc_amst_connect(const struct nc_amst_config *cfg, const char *host, int port,
                    const uint8_t session_id[16], struct nc_amst **out);

/* Queues one message; the payload is copied and stays the caller's. type
 * must be >= NC_AMST_TYPE_USER (else NC_E_INVALID), len <=
 * NC_AMST_PAYLOAD_MAX (else NC_E_TOOBIG). Blocks while the window is full;
 * -ETIMEDOUT (nothing queued, session intact) after io_timeout_ms without
 * an acknowledgement. Once the session failed: its error (-ECANCELED after
 * nc_amst_abort, -ECONNRESET or -ETIMEDOUT for a lost peer, NC_E_PROTO);
 * -EPIPE once the peer closed. */
int nc_amst_send(struct nc_amst *a, uint8_t type, const void *payload, size_t len);
/* Next message in order; timeout_ms < 0 waits indefinitely. *payload is
 * malloc'd and the caller's (NULL when *len is 0). -ETIMEDOUT when none
 * within timeout_ms; -EPIPE when the peer closed after its last message;
 * NC_E_PROTO on a malformed frame; the session's error once it failed. */
int nc_amst_recv(struct nc_amst *a, int timeout_ms, uint8_t *type, void **payload, size_t *len);
/* Waits until everything sent has been acknowledged by the peer (delivered
 * to its application). 0, -ETIMEDOUT, or the session's error. */
int nc_amst_flush(struct nc_amst *a, int timeout_ms);
/* Bytes admitted by nc_amst_send so far in this session (payloads plus
 * NC_AMST_HEADER_LEN each), a running total. */
uint64_t nc_amst_admitted(struct nc_amst *a);
/* Waits until the peer has acknowledged the first upto of those bytes (a
 * value nc_amst_admitted gave). Lets a sender bound in-flight data by a
 * measure of its own (migrate/stream.c: QEMU stream bytes, not wire bytes).
 * 0, -ETIMEDOUT, or the session's error (-EPIPE once the peer left). */
int nc_amst_wait_acked(struct nc_amst *a, uint64_t upto, int timeout_ms);
void nc_amst_stats(struct nc_amst *a, struct nc_amst_stats *out);
/* Changes the send window for the messages sent from now on, between
 * NC_AMST_SEND_WINDOW_MIN and the configured send_window_bytes (values
 * outside are clamped); returns the window in effect. Bytes already
 * admitted stay admitted: a smaller window only makes later sends wait
 * longer. The peer's acknowledgement cadence (from the configured window
 * in HELLO) does not change. Lets a caller bound how much is in flight
 * when the link turns out slower than the window was sized for. */
size_t nc_amst_set_send_window(struct nc_amst *a, size_t bytes);
/* Fails the session at once: blocked and later calls return -ECANCELED
 * and the peer sees its connections drop. Still call nc_amst_close. */
void nc_amst_abort(struct nc_amst *a);
/* Graceful: sends FIN after the last message and waits (up to
 * io_timeout_ms) until the peer's application has taken every message
 * (the peer acknowledges FIN as soon as all before it was delivered, so
 * this does not wait for one more nc_amst_recv); messages still arriving
 * meanwhile are discarded and acknowledged. Then closes the connections
 * and frees the session; a session that failed is reset instead. Accepts
 * NULL. */
void nc_amst_close(struct nc_amst *a);

/* The frame decoder, exposed for the fuzzer: parses one header. 0 or
 * NC_E_PROTO (bad magic, version, or a length that does not fit the type). */
struct nc_amst_header {
  uint8_t version, type;
  uint64_t seq;
  uint32_t len;
};
int nc_amst_parse_header(const uint8_t buf[NC_AMST_HEADER_LEN], struct nc_amst_header *h);
void nc_amst_write_header(uint8_t buf[NC_AMST_HEADER_LEN], uint8_t type, uint64_t seq,
                          uint32_t len);

/* Reassembly, exposed for the fuzzer and tests (nc__ : not a stable API).
 * Pure state, no locks, no I/O: the session's receiver threads call it
 * under the session lock. Frames on one connection carry increasing seqs;
 * the reorder buffer keeps one FIFO per connection, so the next frame in
 * order is always at the head of one of them.
 *
 * Window rule (the deadlock-avoidance argument lives in amst.c): a frame
 * is admitted when it fits in the window, or when it is the very frame the
 * application needs next. Memory is bounded by window + one frame. */
struct nc__amst_frame {
  struct nc__amst_frame *next;
  uint64_t seq;
  uint8_t type;
  uint32_t len;
  void *payload; /* malloc'd, len bytes; NULL when len is 0 */
};

struct nc__amst_rx {
  int nconn;
  size_t window_bytes;
  uint64_t next_seq;       /* the seq the application takes next */
  uint64_t received;       /* frames reserved (sequenced frames only) */
  uint64_t buffered_bytes; /* reserved or held, not yet popped (wire bytes) */
  uint64_t delivered_bytes;
  bool fin_received, fin_popped; /* fin_popped: everything before FIN was delivered */
  uint64_t fin_seq;
  struct {
    struct nc__amst_frame *head, *tail;
    uint64_t last_seq;
    bool any;
    bool reserved; /* a reservation awaits its nc__amst_rx_insert */
  } q[NC_AMST_STREAMS_MAX];
};

void nc__amst_rx_init(struct nc__amst_rx *rx, int nconn, size_t window_bytes);
/* For a sequenced frame (FIN or message) whose header arrived on conn:
 * 1 = room reserved, read the payload and insert; 0 = wait until the
 * application pops; NC_E_PROTO = the peer broke the protocol. */
int nc__amst_rx_reserve(struct nc__amst_rx *rx, int conn, const struct nc_amst_header *h);
/* Inserts the frame reserved last on conn; takes ownership of f. */
void nc__amst_rx_insert(struct nc__amst_rx *rx, int conn, struct nc__amst_frame *f);
/* 1 and *out (the caller's) when the next frame in order is there; 0 when
 * not; NC_E_PROTO when two connections carried the same seq. */
int nc__amst_rx_pop(struct nc__amst_rx *rx, struct nc__amst_frame **out);
/* The next frame in order, still held; NULL when not there yet. */
const struct nc__amst_frame *nc__amst_rx_peek(const struct nc__amst_rx *rx);
/* Every frame up to and including FIN has been received. */
bool nc__amst_rx_complete(const struct nc__amst_rx *rx);
void nc__amst_rx_free(struct nc__amst_rx *rx);

/* The sender's view of its window; ACKs move it. */
struct nc__amst_txwin {
  uint64_t next_seq;       /* seqs handed out */
  uint64_t admitted_bytes; /* frame bytes accepted by nc_amst_send (and FIN) */
  uint64_t acked_seq, acked_bytes;
};
/* Applies an ACK (seq = frames delivered, bytes = frame bytes delivered).
 * 1: the window moved; 0: stale or repeated (ACKs use any connection, so
 * they can overtake each other); NC_E_PROTO: acknowledges what was never
 * sent, or seq and bytes disagree. */
int nc__amst_ack_apply(struct nc__amst_txwin *w, uint64_t seq, uint64_t bytes);
/* Parses a whole HELLO frame (header included). 0 or NC_E_PROTO. */
int nc__amst_parse_hello(const uint8_t buf[NC_AMST_HEADER_LEN + NC_AMST_HELLO_LEN],
                         uint8_t id[16], int *index, int *count, uint64_t *send_window_bytes);
void nc__amst_frame_free(struct nc__amst_frame *f);

#endif
