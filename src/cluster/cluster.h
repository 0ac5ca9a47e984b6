/* The cluster: many novacrond on one etcd.
 *
 * Every node keeps its own VM, operation and image records in a view of
 * the shared store under /nodes/<node>/ (nc_store_view), exactly as a
 * single node keeps them in SQLite, and takes part in the cluster through
 * these keys (JSON values):
 *
 *   /cluster/nodes/<node>   what the node is: API and DWCP addresses,
 *                           capacity, zone, rack, labels, images, and its
 *                           admin state (active | cordoned | draining),
 *                           which outlives the node's lease.
 *   /cluster/alive/<node>   attached to the node's lease: present while
 *                           the node keeps its lease alive; says whether
 *                           the node is ready (else: not-ready, no new
 *                           VMs, but its VMs stay).
 *   /cluster/controller     attached to the controller's lease: the one
 *                           node that places VMs, restarts HA VMs and
 *                           drains nodes (won by create-if-absent).
 *   /cluster/vms/<name>     the cluster's record of a VM: its spec, the
 *                           node it is assigned to, whether it is HA, its
 *                           placement constraints and status (pending |
 *                           placed | created | unschedulable).
 *
 * Who writes what: a node's API writes a new VM as "pending" (or "placed"
 * when the user pinned a node); the controller places pending VMs and
 * re-places HA VMs of dead nodes; a node's agent creates the VMs placed on
 * it ("created") and drops local copies of VMs the cluster moved away; the
 * destination of a live migration claims the record before it resumes
 * the guest (nc_cluster_claim). Every change is a compare-and-swap on the
 * record's mod_rev.
 *
 * Fencing: see fence.h and docs/ha.md. */
#ifndef NC_CLUSTER_CLUSTER_H
#define NC_CLUSTER_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/errinfo.h"

struct nc_cluster;
struct nc_store;
struct nc_vmm;

struct nc_cluster_config {
  struct nc_store *store; /* the shared store (not the node's view) */
  struct nc_vmm *vmm;     /* this node's VM manager (on the node's view) */
  struct nc_store *node_store; /* the node's view (its images) */
  const char *node_name;
  const char *api_addr;   /* HOST:PORT other nodes reach this node's API on */
  const char *dwcp_host;
  const char *data_dir;   /* fence file in <data_dir>/cluster/ */
  const char *token;      /* the cluster token, for calls to peers */
  const char *zone, *rack; /* may be NULL */
  json_t *labels;          /* object of string -> string; may be NULL */
  bool control_plane;      /* may become the controller */
  int64_t lease_ttl_ms;    /* default 6000 */
  /* The node stops renewing its claim to run HA VMs this long after the
   * last keep-alive it sent that etcd acknowledged; default ttl - 2000. */
  int64_t fence_after_ms;
  /* The controller waits this long past a lease's expiry before it
   * restarts the node's HA VMs elsewhere; default 2000. */
  int64_t restart_grace_ms;
  double cpu_ratio, mem_ratio; /* overcommit; defaults 4.0 and 1.0 */
  bool spread;                 /* placement weight: spread (default pack) */
  bool rebalance;              /* move VMs to even out load (default off) */
  double rebalance_threshold;  /* load gap that triggers it; default 0.25 */
  /* Whether this node's daemon is ready (its critical components up); a
   * node that is alive but not ready takes no new VMs. NULL: always. */
  bool (*ready)(void *data);
  void *ready_data;
  /* Path of this executable, to run the fence guard (`--fence-guard`).
   * NULL runs no guard, so nothing fences HA VMs: for tests and
   * simulations only; novacrond always passes it. */
  const char *self_exe;
};

/* Registers the node, takes a lease, starts the fence guard, the agent
 * and (on control-plane nodes) the controller campaign. */
int nc_cluster_start(const struct nc_cluster_config *cfg, struct nc_cluster **out);
/* Stops the threads and revokes the lease (so the controller role moves
 * at once). The fence guard keeps running, so HA VMs are fenced if the
 * daemon does not come back within the bound. Accepts NULL. */
void nc_cluster_stop(struct nc_cluster *c);

/* ---- API ---------------------------------------------------------------- */
/* The reads below answer 503 "cut_off" at once on a node without a valid
 * lease (it cannot know the cluster's state) and 503 "store_unreachable"
 * when etcd does not answer; never an empty cluster in their place.
 * GET /v1/cluster: nodes, controller, this node. *out is a new reference. */
int nc_cluster_status(struct nc_cluster *c, json_t **out, struct nc_errinfo *err);
/* GET /v1/nodes: every node with capacity, allocation, state, zone (an
 * array). */
int nc_cluster_nodes(struct nc_cluster *c, json_t **out, struct nc_errinfo *err);
/* POST /v1/nodes/{node}/{cordon|uncordon|drain}. */
int nc_cluster_node_admin(struct nc_cluster *c, const char *node, const char *action,
                          json_t **out, struct nc_errinfo *err);
/* POST /v1/vms in a cluster: the create request plus "node" (pin), "ha",
 * "ha_priority" and "placement" (see docs/scheduling.md). Waits (bounded)
 * for the controller's decision: *out is {"vm": name, "node": N,
 * "status": ...}; 409 when the name exists anywhere in the cluster, 422
 * with the per-node reasons when no node fits. */
int nc_cluster_vm_create(struct nc_cluster *c, json_t *req, json_t **out,
                         struct nc_errinfo *err);
/* POST /v1/placement/explain: the same request, placed on paper only. */
int nc_cluster_explain(struct nc_cluster *c, json_t *req, json_t **out,
                       struct nc_errinfo *err);
/* The API address of the node a VM is assigned to. -ENOENT when the
 * cluster has no such VM, -EHOSTDOWN when its node is not alive, -ENOLINK
 * when this node is cut off (no valid lease). */
int nc_cluster_vm_locate(struct nc_cluster *c, const char *name, char *addr, size_t len,
                         bool *local);
/* The API address of the node that holds operation id (not this one).
 * -ENOENT when no other node has it. */
int nc_cluster_op_locate(struct nc_cluster *c, const char *id, char *addr, size_t len);
/* Sends a request to another node's API as a node-to-node call (which that
 * node answers itself, never forwarding it again). */
int nc_cluster_forward(struct nc_cluster *c, const char *addr, const char *method,
                       const char *path, json_t *body, long *status, json_t **out);
/* The API address (HOST:PORT) of the node called name. -ENOENT. */
int nc_cluster_node_api(struct nc_cluster *c, const char *name, char *addr, size_t len);
/* Every VM in the cluster with its node and state (an array). */
int nc_cluster_vm_list(struct nc_cluster *c, json_t **out, struct nc_errinfo *err);

/* Migration hook, destination side: make this node the VM's owner if the
 * record still names `from`. Called after the source handed over and
 * before the guest resumes; a failure keeps the guest paused and lets the
 * source resume it. */
int nc_cluster_claim(void *cluster, const char *vm, const char *from);
/* Undoes nc_cluster_claim: names `to` again if the record names this node
 * (the guest could not resume here). -EBUSY if it names another node. */
int nc_cluster_release(void *cluster, const char *vm, const char *to);

#endif
