/* The disk relay: QEMU's NBD connection between the two nodes, carried by
 * the daemons instead of going QEMU to QEMU.
 *
 *   source QEMU (NBD client) -> unix socket -> source daemon
 *     == TCP, TLS 1.3 when the migration uses it ==>
 *   destination daemon -> unix socket -> destination QEMU (NBD server)
 *
 * Why: the daemons can end it at once when the migration fails or the link
 * dies (QEMU otherwise blocks its main loop on an unreachable peer), the
 * disk travels encrypted and authenticated like the DWCP streams, and the
 * destination's writable export is never reachable from the network: the
 * destination relay takes only a connection that completes TLS with the
 * pinned source certificate (when TLS is on) and then presents the
 * migration's 16-byte session id (always). Anything else is closed and the
 * relay keeps waiting.
 *
 * Wire (changing it breaks compatibility): after TCP connect (and the TLS
 * handshake) the source sends the session id, 16 bytes; then NBD bytes
 * flow unchanged both ways.
 *
 * Each relay has one thread that sets up, then pumps one direction while a
 * second thread pumps the other; with TLS those two are the reader and the
 * writer of one nc_tls_conn, which its threading model allows. */
#ifndef NC_MIGRATE_RELAY_H
#define NC_MIGRATE_RELAY_H

#include <stdint.h>

#include "dwcp/tls.h"

struct nc__relay;

/* Source: connects to host:port (with tls: a TLS client pinned to peer_fp,
 * required then), sends the session id, then listens on the unix socket
 * sock for QEMU's NBD client and relays its one connection. Connecting and
 * the handshake happen before it returns (-EKEYREJECTED: the destination
 * holds the wrong certificate). tls and peer_fp are borrowed until
 * nc__relay_stop. On success *out is the caller's. */
int nc__relay_source(const char *sock, const char *host, int port, struct nc_tls *tls,
                     const uint8_t *peer_fp, const uint8_t session[16], struct nc__relay **out);

/* Destination: listens on host (any free port, in *port) for the source's
 * connection (with tls: TLS, client certificate pinned to peer_fp when not
 * NULL), checks the session id, then relays to the unix socket sock
 * (QEMU's NBD server; connected once the source arrived). Same ownership. */
int nc__relay_dest(const char *host, struct nc_tls *tls, const uint8_t *peer_fp,
                   const uint8_t session[16], const char *sock, int *port,
                   struct nc__relay **out);

/* Ends both sides at once (QEMU's pending NBD requests fail), waits for the
 * threads and frees everything. Accepts NULL. */
void nc__relay_stop(struct nc__relay *r);

#endif
