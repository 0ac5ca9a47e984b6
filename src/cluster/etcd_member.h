/* The local etcd member of a control-plane host: novacrond starts it,
 * supervises it and configures the cluster's membership for it, the way
 * k3s embeds etcd (DESIGN.md, "State"). Worker hosts run no member; they
 * only open the store on the control plane's client URLs.
 *
 * The member is Debian's etcd-server (etcd 3.4), run as its own process:
 *  - detached from novacrond's session and process group (setsid, double
 *    fork: src/hv/proc.h), so a kill -9 of novacrond, or systemd's
 *    KillMode=process, leaves the member running, and a restarted
 *    novacrond adopts it instead of starting a second one;
 *  - restarted by a supervisor thread with capped exponential backoff
 *    whenever it exits while novacrond supervises it;
 *  - joined as a raft learner first (MemberAdd with isLearner) and promoted
 *    to a voter once it has caught up (MemberPromote), so a host that never
 *    finishes its join does not cost the cluster its quorum.
 *
 * Membership calls go through etcd's v3 JSON gateway
 * (https://etcd.io/docs/v3.4/dev-guide/api_grpc_gateway/, Cluster service
 * of etcdserver/etcdserverpb/rpc.proto): POST /v3/cluster/member/list,
 * /add, /promote and /remove.
 *
 * Files in the member directory D (cfg.data_dir, e.g. <data_dir>/etcd;
 * created 0700 when missing):
 *   D/member.json   what start needs to run the member again (below)
 *   D/data/         etcd's own --data-dir
 *   D/etcd.pid      pid of the running etcd (decimal, newline)
 *   D/etcd.log      etcd's stdout and stderr; the previous run's log is
 *                   kept as D/etcd.log.1
 *
 * D/member.json, version 1 (on disk: adding a field is compatible,
 * changing or removing one breaks compatibility):
 *   {"version":1, "name":"n1", "peer_url":"http://10.0.0.1:2380",
 *    "client_url":"http://10.0.0.1:2379", "initial_cluster":"n1=http://...",
 *    "initial_cluster_state":"new"|"existing", "cluster_token":"...",
 *    "quota_backend_bytes":2147483648}
 * Once D/data holds a member, etcd ignores initial_cluster, its state and
 * token: a restarted novacrond just runs etcd with the same flags. After
 * a "new" member first answers healthy, its saved state becomes
 * "existing", so a member whose data was lost refuses to start rather
 * than bootstrap a second, empty cluster.
 *
 * How the daemon calls this (not wired yet):
 *
 *  cluster init (first control-plane host, node name N, address A):
 *    struct nc_etcd_member_config c = {
 *        .data_dir = "<data_dir>/etcd", .name = N,
 *        .peer_url = "http://A:2380", .client_url = "http://A:2379",
 *        .initial_cluster = NULL,          (means "N=http://A:2380")
 *        .state = NC_ETCD_STATE_NEW,
 *        .cluster_token = <a fresh random token>};
 *    nc_etcd_member_start(&c, &m, &err);
 *    then nc_store_open("etcd:http://A:2379", ...).
 *
 *  cluster join <address> --token T, as a control-plane host N at A, where
 *  E is the client URLs the existing cluster gave us (via <address>):
 *    char *ic;
 *    nc_etcd_member_add(E, N, "http://A:2380", &ic, &err);
 *    c = {.data_dir = ..., .name = N, .peer_url = "http://A:2380",
 *         .client_url = "http://A:2379", .initial_cluster = ic,
 *         .state = NC_ETCD_STATE_EXISTING};
 *    nc_etcd_member_start(&c, &m, &err);      (healthy as a learner)
 *    nc_etcd_member_promote(E, "http://A:2380", 60000, &err);
 *    free(ic);
 *    then nc_store_open("etcd:" E ",http://A:2379", ...).
 *  Every step is idempotent: a join that crashed anywhere is retried by
 *  running the same three calls again.
 *
 *  novacrond start-up on a host where nc_etcd_member_configured(D) is true
 *  (init or join ran before): start from the saved config, without
 *  waiting, because the member cannot be healthy until a quorum of the
 *  cluster is up again, and it must keep running meanwhile:
 *    c = {.data_dir = D, .start_timeout_ms = -1};   (name == NULL: saved)
 *    nc_etcd_member_start(&c, &m, &err);
 *    while (nc_etcd_member_wait_healthy(m, 5000, &err) == -ETIMEDOUT)
 *      log err.message;                             (or carry on degraded)
 *
 *  novacrond shutdown: nc_etcd_member_stop(m, false) — the member keeps
 *  serving the cluster while novacrond is down and is adopted on restart.
 *  cluster leave / node removal: nc_etcd_member_remove(E, N, &err) from a
 *  surviving member, then nc_etcd_member_stop(m, true) on the host.
 *
 * Threads: the functions may be called from any thread; one member handle
 * must not be stopped twice or used after stop. */
#ifndef NC_CLUSTER_ETCD_MEMBER_H
#define NC_CLUSTER_ETCD_MEMBER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/errinfo.h"

/* Caps on what a config or the cluster may hand us. */
#define NC_ETCD_MEMBER_NAME_MAX 63                /* [A-Za-z0-9._-], not empty */
#define NC_ETCD_MEMBER_URL_MAX 255                /* "http://host:port", no path */
#define NC_ETCD_MEMBER_CLUSTER_MAX 8191           /* initial-cluster string */
#define NC_ETCD_MEMBER_TOKEN_MAX 127              /* [A-Za-z0-9._-] */
#define NC_ETCD_MEMBER_ENDPOINTS_MAX 16           /* URLs in an endpoint list */
#define NC_ETCD_MEMBER_MEMBERS_MAX 64             /* members in a MemberList answer */
#define NC_ETCD_MEMBER_BODY_MAX ((size_t)1 << 20) /* one gateway answer */

/* Defaults of the config's zero fields. */
#define NC_ETCD_MEMBER_START_TIMEOUT_MS 30000
#define NC_ETCD_MEMBER_STOP_TIMEOUT_MS 10000
#define NC_ETCD_MEMBER_BACKOFF_MIN_MS 500
#define NC_ETCD_MEMBER_BACKOFF_MAX_MS 30000
#define NC_ETCD_MEMBER_QUOTA_BYTES ((int64_t)2 << 30) /* etcd 3.4's own */
#define NC_ETCD_MEMBER_TOKEN "novacron"
/* Revisions of history kept by etcd's auto-compaction: what store.h
 * promises watchers and what the SQLite back-end keeps (docs/etcd.md). */
#define NC_ETCD_MEMBER_COMPACTION_REVISIONS 10000

enum nc_etcd_state {
  NC_ETCD_STATE_NEW = 1,      /* bootstrap a new cluster (cluster init) */
  NC_ETCD_STATE_EXISTING = 2, /* join one that has us as a member (join) */
};

/* Strings are read during the call only. Zero/NULL fields take the
 * default named; when name is NULL, every cluster field (name, peer_url,
 * client_url, initial_cluster, state, cluster_token, quota_backend_bytes)
 * comes from D/member.json instead, and only data_dir, etcd_path, log_path
 * and the timings are taken from here. */
struct nc_etcd_member_config {
  const char *etcd_path;       /* program name or path; NULL: "etcd" on PATH */
  const char *data_dir;        /* the member directory D (required) */
  const char *log_path;        /* NULL: D/etcd.log */
  const char *name;            /* this node's name, unique in the cluster */
  const char *peer_url;        /* "http://IP:2380": other members reach us here */
  const char *client_url;      /* "http://IP:2379": stores reach us here */
  const char *initial_cluster; /* "n1=http://..,n2=http://.."; NULL:
                                  name=peer_url (a new 1-member cluster) */
  enum nc_etcd_state state;    /* required unless name is NULL */
  const char *cluster_token;   /* NULL: NC_ETCD_MEMBER_TOKEN; new only */
  int64_t quota_backend_bytes; /* 0: NC_ETCD_MEMBER_QUOTA_BYTES */
  int start_timeout_ms;        /* wait for healthy in start; 0: default, <0:
                                  do not wait (see nc_etcd_member_wait_healthy) */
  int stop_timeout_ms;         /* SIGTERM to SIGKILL in stop; 0: default */
  int backoff_min_ms;          /* first restart delay; 0: default */
  int backoff_max_ms;          /* cap of the doubling delay; 0: default */
};

struct nc_etcd_member;

/* Whether D holds a saved member (D/member.json): init or join ran on this
 * host, so novacrond must start the member at boot. */
bool nc_etcd_member_configured(const char *data_dir);

/* Runs the local member and supervises it. Saves the config to
 * D/member.json (atomically) first. If D/etcd.pid names a live etcd whose
 * command line carries this member's --data-dir, it is adopted; otherwise
 * etcd is spawned detached. Then, unless cfg->start_timeout_ms < 0, waits
 * until the member answers {"health":"true"} on GET <client_url>/health.
 *
 * Errors (err, which may be NULL, says what failed and what to do):
 *  -EINVAL        a malformed or missing field (err->field names it)
 *  -ENOENT        no etcd binary, or name == NULL and no saved config
 *  -ETIMEDOUT     not healthy within start_timeout_ms
 *  -ECHILD        etcd exited during start (err quotes its log's tail)
 *  other -errno   creating D, writing files, spawning
 * When start fails, an etcd it spawned is killed again (an adopted one is
 * left running) and nothing is supervised. On success *out belongs to the
 * caller (nc_etcd_member_stop). */
int nc_etcd_member_start(const struct nc_etcd_member_config *cfg, struct nc_etcd_member **out,
                         struct nc_errinfo *err);

/* Waits up to timeout_ms for the member to answer healthy. 0, or
 * -ETIMEDOUT with err saying what the last check saw. A supervised member
 * that is being restarted just counts as not healthy yet. */
int nc_etcd_member_wait_healthy(struct nc_etcd_member *m, int timeout_ms, struct nc_errinfo *err);

/* Stops supervising and frees m (NULL is fine). kill_member: also SIGTERM
 * etcd, SIGKILL it after stop_timeout_ms, and remove D/etcd.pid; otherwise
 * etcd keeps running and the next start adopts it. */
void nc_etcd_member_stop(struct nc_etcd_member *m, bool kill_member);

/* The etcd process now (-1 while the supervisor is between restarts). */
pid_t nc_etcd_member_pid(struct nc_etcd_member *m);
/* How many times the supervisor started etcd again after it exited. */
unsigned nc_etcd_member_restarts(struct nc_etcd_member *m);
/* Whether start adopted a running etcd rather than spawning one. */
bool nc_etcd_member_adopted(struct nc_etcd_member *m);
/* The member's client URL; valid until stop. */
const char *nc_etcd_member_client_url(struct nc_etcd_member *m);

/* Adds a member at peer_url to the cluster reachable on endpoints (comma
 * separated client URLs of voting members, "http://IP:2379,..."), as a
 * learner, and builds the --initial-cluster string the new member must
 * start with: every member's name=peer URL, the new one under name.
 * Idempotent: when a member with peer_url already exists (a join that
 * crashed after the add, or after the start), nothing is added and the
 * same string comes back. NC_E_CONFLICT when name is taken by a member at
 * another peer URL, or peer_url by a started member of another name
 * (remove the stale member first), or when another join is in progress
 * (etcd allows one learner). While etcd refuses the change for a passing
 * reason ("unhealthy cluster": etcd 3.4 wants every voter connected for
 * 5 s first, so right after the previous join), it retries for up to 20 s,
 * then fails with NC_E_UNAVAIL. -ECONNREFUSED when no endpoint answers.
 * On success *initial_cluster_out is the caller's (free). */
int nc_etcd_member_add(const char *endpoints, const char *name, const char *peer_url,
                       char **initial_cluster_out, struct nc_errinfo *err);

/* Promotes the learner at peer_url to a voting member, retrying while etcd
 * says it has not caught up, for up to timeout_ms. 0 when it is (or
 * already was) a voter, -ENOENT when no member has peer_url,
 * -ECONNREFUSED when no endpoint answers, -ETIMEDOUT. */
int nc_etcd_member_promote(const char *endpoints, const char *peer_url, int timeout_ms,
                           struct nc_errinfo *err);

/* Removes the member called who (its name, or its peer URL: a member that
 * never started has no name yet). -ENOENT when there is none. Retries
 * passing refusals as add does; a removal that would leave the cluster
 * without a quorum of started members is refused by etcd, and after 20 s
 * of that this returns NC_E_UNAVAIL. Stop the member's etcd first: a
 * removed member's etcd exits on its own, and its supervisor would keep
 * restarting it. */
int nc_etcd_member_remove(const char *endpoints, const char *who, struct nc_errinfo *err);

#endif
