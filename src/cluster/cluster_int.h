/* Internal to src/cluster: the cluster object shared by the membership
 * (cluster.c), agent (agent.c), controller (controller.c) and API
 * (cluster_api.c) parts. */
#ifndef NC_CLUSTER_CLUSTER_INT_H
#define NC_CLUSTER_CLUSTER_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cluster/cluster.h"
#include "store/store.h"

#define NC_CL_NODES "/cluster/nodes/"
#define NC_CL_ALIVE "/cluster/alive/"
#define NC_CL_VMS "/cluster/vms/"
#define NC_CL_CONTROLLER "/cluster/controller"
#define NC_CL_NODE_MAX 64
#define NC_CL_TICK_MS 500

struct nc_cluster {
  struct nc_cluster_config cfg; /* strings below, not the caller's */
  char node[NC_CL_NODE_MAX];
  char api[256], dwcp[256], data_dir[1024], token[256], zone[64], rack[64];
  char self_exe[1024], fence_dir[1100];
  json_t *labels;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stopping;
  int64_t lease;       /* 0: none */
  int64_t lease_ok_ms; /* monotonic send time of the last acknowledged keep-alive */
  bool leader;
  bool ready_published; /* what the alive key says; lease thread only */
  char **ha_dirs;      /* run dirs of the local HA VMs (agent -> fence file) */
  size_t nha;
  pid_t guard_pid;
  int guard_pidfd;

  pthread_t lease_thr, agent_thr, ctl_thr;
  bool ctl_started;
  struct nc_ctl *ctl;
};

/* JSON value of key, or NULL (-ENOENT, or not an object). *mod_rev may be
 * NULL. */
json_t *nc__cl_get_json(struct nc_store *s, const char *key, int64_t *mod_rev);
/* Serialises v and puts it with compare mod_rev == expect (0: absent).
 * NC_E_TXNFAIL when someone else wrote first. */
int nc__cl_cas_json(struct nc_store *s, const char *key, int64_t expect, json_t *v,
                    int64_t lease);
/* Deletes key if its mod_rev is still expect. */
int nc__cl_cas_delete(struct nc_store *s, const char *key, int64_t expect);
/* Every JSON object under prefix as {suffix: {"v": value, "rev": mod_rev}}. */
json_t *nc__cl_range_json(struct nc_store *s, const char *prefix);
/* Whether this node currently holds a lease it may act on (renewed within
 * fence_after_ms). */
bool nc__cl_lease_valid(struct nc_cluster *c);
int64_t nc__cl_now_ms(void);
/* Sleeps up to ms; false once the cluster is stopping. */
bool nc__cl_wait(struct nc_cluster *c, int ms);
/* Rewrites this node's record with its current image list. */
int nc__cl_register_images(struct nc_cluster *c, json_t *images);

/* agent.c */
void *nc__cl_agent_main(void *arg);
/* controller.c */
int nc__ctl_new(struct nc_cluster *c, struct nc_ctl **out);
void nc__ctl_free(struct nc_ctl *ctl);
void *nc__ctl_main(void *arg);
/* Places req (a cluster VM record) on paper against the current cluster
 * state. *node gets the winner ("" when none fits); *explain (may be NULL)
 * the per-node verdicts (new reference). exclude: node names not to use
 * (may be NULL). */
int nc__ctl_place(struct nc_cluster *c, json_t *rec, json_t *exclude, char *node,
                  size_t node_len, json_t **explain, struct nc_errinfo *err);

#endif
