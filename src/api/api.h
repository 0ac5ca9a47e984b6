/* The REST API (/v1), the event stream, /metrics and the health probes,
 * served by libmicrohttpd.
 *
 * Two listeners share one route table:
 *  - a unix socket (mode 0600) that needs no token: local root only;
 *  - an optional TCP listener that needs "Authorization: Bearer <token>"
 *    on every route except /healthz, /readyz and /metrics.
 * Each connection gets its own thread (long polls and the event stream
 * block), capped at NC_API_CONNECTIONS_MAX per listener. Request bodies are
 * capped at NC_API_BODY_MAX; anything bigger is answered 413 and never
 * buffered. */
#ifndef NC_API_API_H
#define NC_API_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/errinfo.h"

#define NC_API_BODY_MAX (64 * 1024)
#define NC_API_CONNECTIONS_MAX 256

struct nc_api;
struct nc_cluster;
struct nc_vmm;
struct nc_ops;
struct nc_events;
struct nc_metrics;
struct nc_store;

struct nc_api_config {
  struct nc_vmm *vmm;
  struct nc_ops *ops;
  struct nc_events *events;
  struct nc_metrics *metrics;
  struct nc_store *store;
  const char *unix_path;   /* NULL: no unix listener */
  const char *listen_host; /* NULL: no TCP listener */
  int listen_port;         /* 0 with a host: pick a free port */
  const char *token;       /* required for TCP */
  const char *cluster_token; /* also accepted on TCP (peers); may be NULL */
  /* Live migration (NULL: answered 503). Same contract as
   * nc_migrate_start / nc_migrate_incoming in migrate/migrate.h. */
  int (*migrate_start)(void *data, const char *name, json_t *body, json_t **out,
                       struct nc_errinfo *err);
  int (*migrate_incoming)(void *data, json_t *body, json_t **out, struct nc_errinfo *err);
  void *migrate_data;
  /* The cluster this node belongs to, NULL on a single node. With one,
   * VM and operation routes for VMs on other nodes are forwarded to the
   * node that has them, and the cluster routes are served. */
  struct nc_cluster *cluster;
  /* Forming a cluster (POST /v1/cluster/{init,join,members}); what is
   * "init", "join" or "members"; same contract as cluster/bootstrap.h.
   * NULL: answered 503. */
  int (*cluster_setup)(void *data, const char *what, json_t *body, json_t **out,
                       struct nc_errinfo *err);
  void *cluster_setup_data;
  /* Readiness: returns {"ready": bool, "components": [...]}; new ref. */
  json_t *(*readiness)(void *data);
  void *readiness_data;
};

/* Binds and starts serving. The config's pointers must outlive the API. */
int nc_api_start(const struct nc_api_config *cfg, struct nc_api **out);
/* The TCP port actually bound (useful with listen_port 0), or 0. */
int nc_api_tcp_port(const struct nc_api *api);
/* Stops the listeners, waits for connection threads. Accepts NULL. */
void nc_api_stop(struct nc_api *api);

/* The route table, for documentation checks: fills method and template
 * (e.g. "POST", "/v1/vms/{name}/start") for route i; false past the end. */
bool nc_api_route_at(size_t i, const char **method, const char **tmpl);

#endif
