/* TLS 1.3 for DWCP connections (OpenSSL 3).
 *
 * Identity. Every node has one key pair (Ed25519) and a self-signed
 * certificate for it, made at first start and kept in the data directory
 * (node.key, mode 0600; node.crt). Nothing is signed by a CA: a peer is
 * trusted because the SHA-256 of its certificate (its "fingerprint", the
 * hash of the DER encoding, as `openssl x509 -fingerprint -sha256` prints
 * it) is the one it announced over the token-authenticated API. Deleting
 * both files and restarting rotates the key; fingerprints are exchanged
 * per migration, so nothing else needs to change.
 *
 * Connections. TLS 1.3 only, both sides present their certificate, no
 * session tickets or resumption (one handshake per TCP connection, once).
 * A connection pins the peer's fingerprint (the handshake fails on any
 * other certificate, -EKEYREJECTED) or, without a pin, accepts any
 * certificate and only encrypts.
 *
 * Threads. An SSL object must never be used by two threads at once, yet
 * AMST reads a connection in one thread and writes it in another. So the
 * socket is non-blocking and every SSL call on it runs under the
 * connection's mutex, which is never held while waiting: a call that
 * cannot proceed (SSL_ERROR_WANT_READ or WANT_WRITE, from SSL_read or
 * SSL_write alike, e.g. a read that must answer a TLS 1.3 KeyUpdate)
 * releases the mutex and poll()s for what OpenSSL asked for, then retries
 * with the same arguments. The waits are sliced (NC_TLS_POLL_SLICE_MS), so
 * even a wake-up the other thread consumed is retried promptly. Hence:
 * at most one reader thread and one writer thread per connection at a
 * time; nc_tls_read and nc_tls_write* may run concurrently. shutdown(2) on
 * the fd wakes both (EOF / EPIPE), which is how AMST aborts.
 *
 * One stall this cannot avoid, inherent to TLS 1.3 over a full duplex
 * stream: a KeyUpdate that requests one back makes the receiving end's
 * reader write. If both ends request KeyUpdates while both directions are
 * full, both readers wait to write and nobody reads, until the io timeout
 * ends the connection. And a KeyUpdate request that arrives while our
 * writer is between retries of a half-sent record makes OpenSSL end the
 * connection (SSL_R_BAD_LENGTH, -ECONNABORTED here): the reader must write
 * the reply, and OpenSSL cannot write while that record is unfinished. It
 * happened in about 1 of 20 runs of 24 MiB each way with 5-8 requests on a
 * loaded machine. Our nodes never request KeyUpdates (OpenSSL does not on
 * its own; nc__tls_key_update is for tests), so only a misbehaving peer can
 * cause either, and it costs only that peer's migration, as a clean error. */
#ifndef NC_DWCP_TLS_H
#define NC_DWCP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NC_TLS_FP_LEN 32     /* SHA-256 */
#define NC_TLS_FP_HEX_LEN 64 /* lower-case hex, no separators */
#define NC_TLS_POLL_SLICE_MS 100

struct nc_tls;      /* a node identity and its OpenSSL context */
struct nc_tls_conn; /* one TLS connection over a caller's socket */

/* Loads the identity from dir/node.key and dir/node.crt, creating either
 * when missing (a new key always gets a new certificate). cn names the
 * node in the certificate (informational). dir NULL: a fresh in-memory
 * identity (tests). On failure writes what is wrong and what to do to
 * err. On success *out is the caller's (nc_tls_free). */
int nc_tls_new(const char *dir, const char *cn, struct nc_tls **out, char *err, size_t err_len);
void nc_tls_free(struct nc_tls *t); /* accepts NULL */
const uint8_t *nc_tls_fingerprint(const struct nc_tls *t); /* NC_TLS_FP_LEN bytes */

/* out gets NC_TLS_FP_HEX_LEN characters and a NUL. */
void nc_tls_fp_to_hex(const uint8_t fp[NC_TLS_FP_LEN], char out[NC_TLS_FP_HEX_LEN + 1]);
/* Parses 64 hex digits (either case; ':' between byte pairs allowed, as
 * openssl prints them). 0 or NC_E_INVALID. */
int nc_tls_fp_parse(const char *s, uint8_t out[NC_TLS_FP_LEN]);

/* Starts TLS on a connected socket; fd is set non-blocking and stays the
 * caller's (nc_tls_conn_free does not close it). server: the acceptor's
 * side. pin: the peer's fingerprint, or NULL to accept any certificate.
 * The handshake runs in nc_tls_handshake_step / nc_tls_handshake. */
int nc_tls_conn_new(struct nc_tls *t, int fd, bool server, const uint8_t *pin,
                    struct nc_tls_conn **out);
void nc_tls_conn_free(struct nc_tls_conn *c); /* accepts NULL */
/* One non-blocking handshake step: 0 done; POLLIN or POLLOUT: poll the fd
 * for that and call again; -EKEYREJECTED: the peer's certificate is not
 * the pinned one; -ECONNABORTED: the peer does not speak TLS 1.3 or broke
 * off; -ECONNRESET: it closed. */
int nc_tls_handshake_step(struct nc_tls_conn *c);
/* The whole handshake, waiting up to timeout_ms (-ETIMEDOUT). */
int nc_tls_handshake(struct nc_tls_conn *c, int timeout_ms);

/* Reads up to n bytes: >0 bytes read; 0 the peer closed (with or without
 * close_notify: callers frame their data and detect truncation);
 * -EAGAIN when timeout_ms is 0 and nothing is there; -ETIMEDOUT after
 * timeout_ms (< 0: no limit) without any byte; -ECONNABORTED on a TLS
 * error; another -errno. */
ssize_t nc_tls_read(struct nc_tls_conn *c, void *buf, size_t n, int timeout_ms);
/* Writes all n bytes, waiting as long as it takes (a dead peer ends it
 * through TCP_USER_TIMEOUT or shutdown(2)). 0 or a negative errno. */
int nc_tls_write(struct nc_tls_conn *c, const void *buf, size_t n);
/* The same for a gather list. Small pieces are coalesced into full TLS
 * records (one 16 KiB staging buffer per connection), so a frame header
 * does not cost a record of its own. The iovecs are not modified. */
int nc_tls_writev(struct nc_tls_conn *c, const struct iovec *iov, int n);

/* After the handshake: "TLSv1.3" and the cipher suite's name (static). */
const char *nc_tls_version(struct nc_tls_conn *c);
const char *nc_tls_cipher(struct nc_tls_conn *c);
/* The peer's fingerprint (valid once its certificate arrived). */
bool nc_tls_peer_fingerprint(struct nc_tls_conn *c, uint8_t out[NC_TLS_FP_LEN]);

/* Tests only (nc__: not a stable API): asks for a TLS 1.3 KeyUpdate that
 * the peer must answer with its own, so a test can drive the post-handshake
 * traffic the threading model above exists for. Sent with the next write. */
int nc__tls_key_update(struct nc_tls_conn *c);

#endif
