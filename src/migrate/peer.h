/* Calls another node's REST API (JSON over HTTP with a bearer token). */
#ifndef NC_MIGRATE_PEER_H
#define NC_MIGRATE_PEER_H

#include <jansson.h>

#define NC_PEER_RESPONSE_MAX (1024 * 1024)
/* Sent on every node-to-node call; the API answers such a request itself. */
#define NC_PEER_DIRECT_HEADER "X-Novacron-Direct"

/* method: "GET" or "POST"; base: "HOST:PORT"; path: "/v1/..."; body may be
 * NULL. On success (any HTTP status) returns 0 with *status and *out (the
 * parsed JSON body, or NULL if it was not JSON; the caller's). -ECONNREFUSED,
 * -ETIMEDOUT, -EHOSTUNREACH... when the peer cannot be reached;
 * NC_E_TOOBIG past NC_PEER_RESPONSE_MAX. */
int nc__peer_call(const char *method, const char *base, const char *path, const char *token,
                  json_t *body, int timeout_ms, long *status, json_t **out);

#endif
