/* Forming a cluster: `novacron cluster init` and `cluster join`.
 *
 * A node starts single (SQLite). init makes it the first member of a new
 * cluster: it starts the node's own etcd member (etcd_member.h), copies
 * the node's records into etcd under /nodes/<node>/, writes the cluster
 * token and <data_dir>/cluster.json, and the daemon then restarts itself
 * (execv, same pid; VMs keep running) in cluster mode. join does the same
 * on another node after asking a member's API (POST /v1/cluster/members,
 * with the cluster token) to add it to etcd; a worker joins without an
 * etcd member of its own.
 *
 * <data_dir>/cluster.json, version 1 (adding a field is compatible):
 *   {"version": 1, "endpoints": ["http://10.0.0.1:2379", ...],
 *    "control_plane": true, "address": "10.0.0.1"}
 * <data_dir>/cluster.token: the shared token (0600), used when the config
 * names no cluster_token_file. */
#ifndef NC_CLUSTER_BOOTSTRAP_H
#define NC_CLUSTER_BOOTSTRAP_H

#include <jansson.h>
#include <stdbool.h>

#include "util/errinfo.h"

struct nc_store;

#define NC_CLUSTER_ENDPOINTS_MAX 16

struct nc_cluster_boot {
  char store_uri[2048];   /* "etcd:http://...,http://..." */
  bool control_plane;
  bool has_member;        /* <data_dir>/etcd holds this node's member */
  char member_dir[1100];
};

/* Reads <data_dir>/cluster.json. -ENOENT on a single node; -EINVAL (with
 * a log line naming the file) when it does not parse. */
int nc_cluster_boot_load(const char *data_dir, struct nc_cluster_boot *out);

struct nc_cluster_setup {
  const char *data_dir;
  const char *node_name;
  const char *api_addr;       /* this node's API, HOST:PORT, for the join hint */
  struct nc_store *local;     /* the single-node store whose records move */
  const char *cluster_token;  /* configured token, or NULL: make one */
};

/* POST /v1/cluster/init {"address": IP, "etcd_client_port", "etcd_peer_port"}.
 * *out: {"token", "join"}. On success the caller restarts the daemon. */
int nc_cluster_init(const struct nc_cluster_setup *s, json_t *body, json_t **out,
                    struct nc_errinfo *err);
/* POST /v1/cluster/join {"address": "HOST:PORT" of a member's API, "token",
 * "advertise": this node's IP, "control_plane": bool, ports}. */
int nc_cluster_join(const struct nc_cluster_setup *s, json_t *body, json_t **out,
                    struct nc_errinfo *err);
/* POST /v1/cluster/members on a member (peer call): {"name", "peer_url"}
 * adds an etcd member; {"name", "worker": true} only answers. *out:
 * {"endpoints": [...], "initial_cluster": "..." (members only)}. */
int nc_cluster_members_add(const char *data_dir, json_t *body, json_t **out,
                           struct nc_errinfo *err);

#endif
