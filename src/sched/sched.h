/* ITP: the placement engine (the scheduler).
 *
 * Pure and deterministic: no threads, no clock, no randomness, no I/O, no
 * global state. Every call works on one snapshot object (struct nc_sched)
 * that the caller builds from what it knows about the cluster:
 *
 *   1. nc_sched_new()            with a config (ratios, weights, mode);
 *   2. nc_sched_host_add()       once per host: capacity, what is already
 *                                allocated outside the snapshot, state,
 *                                arch, zone/rack/region, labels, latencies;
 *   3. nc_sched_group_add()      once per affinity / anti-affinity group;
 *   4. nc_sched_vm_add()         once per existing VM, with its host;
 *   5. nc_sched_place()          per new request. A successful placement is
 *                                committed into the snapshot, so the next
 *                                decision sees it (unless NC_SCHED_DRY_RUN);
 *      nc_sched_place_batch()    the same for many, largest first;
 *   6. nc_sched_n1_check()       "could every HA VM be restarted if any one
 *                                host died?";
 *   7. nc_sched_free().
 *
 * A decision runs in three steps (docs/scheduling.md has the operator view):
 *
 *  FILTERS, in this order; the first that fails rejects the host and is
 *  the one explain reports:
 *    "state"     host is cordoned, draining or not ready;
 *    "avoid"     host is in the request's avoid list;
 *    "arch"      request names an arch and the host has another;
 *    "labels"    a required label key=value (or bare key) is missing;
 *    "cpu"       vcpus do not fit: used + vcpus > cpus * cpu_ratio;
 *    "memory"    memory does not fit: used + mem > mem * mem_ratio;
 *    "latency"   request has max_latency_us to a site and the host has no
 *                measurement to that site or a larger one;
 *    "affinity"      a hard affinity group has members, none in this
 *                    host's scope (host, rack or zone);
 *    "anti_affinity" a hard anti-affinity group already has a member in
 *                    this host's scope.
 *  For rack / zone scoped hard rules a host without that label is
 *  rejected (it cannot prove which failure domain it is in).
 *
 *  WEIGHTS: every host that passes gets a score, the sum of
 *    "cpu", "memory"      pack:   multiplier * fraction used after placing
 *                         spread: multiplier * (1 - that fraction)
 *                         (fractions of the capacity after overcommit);
 *    "soft_affinity"      + multiplier per soft affinity group that has a
 *                         member in this host's scope;
 *    "soft_anti_affinity" - multiplier * members of soft anti-affinity
 *                         groups already in this host's scope;
 *    "zone", "region"     + multiplier when the host is in the preferred
 *                         zone / region;
 *    "latency"            + multiplier * (1 - min(rtt, ref) / ref) to the
 *                         request's site, ref = max_latency_us if given,
 *                         else config latency_ref_us.
 *  The highest total wins; equal totals go to the host whose name sorts
 *  first (bytewise), so a decision depends only on the snapshot's content,
 *  never on insertion order.
 *
 *  GROUP MEMBERS that sit on a not-ready host, or on a host in the
 *  request's avoid list, do not count for any group rule: their host is
 *  dead or being emptied, and they will be re-placed themselves.
 *
 * Bounds: names (hosts, VMs, groups, label keys and values, zones, racks,
 * regions, arches, sites) are 1..NC_SCHED_NAME_MAX bytes of printable
 * ASCII or UTF-8 (no control bytes). Counts are capped by the NC_SCHED_*_MAX
 * constants below. Input past a cap is NC_E_TOOBIG, malformed input
 * -EINVAL (NULL where a value is needed, empty names, zero sizes, unknown
 * enum values, duplicate label keys / sites / groups); a failed call
 * changes nothing in the snapshot.
 *
 * Thread safety: none. One snapshot is used by one thread at a time;
 * distinct snapshots are independent.
 *
 * Strings passed in are copied; the caller keeps ownership of everything it
 * passes. */
#ifndef NC_SCHED_SCHED_H
#define NC_SCHED_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define NC_SCHED_NAME_MAX 63          /* bytes, without the NUL */
#define NC_SCHED_HOSTS_MAX 10000
#define NC_SCHED_VMS_MAX 500000
#define NC_SCHED_GROUPS_MAX 100000
#define NC_SCHED_HOST_LABELS_MAX 32   /* labels per host */
#define NC_SCHED_HOST_SITES_MAX 16    /* latency entries per host */
#define NC_SCHED_REQ_LABELS_MAX 8     /* required labels per VM */
#define NC_SCHED_REQ_GROUPS_MAX 8     /* groups per VM */
#define NC_SCHED_AVOID_MAX 64         /* avoid list per request */
#define NC_SCHED_BATCH_MAX 100000     /* requests per nc_sched_place_batch */
#define NC_SCHED_VCPUS_MAX 65536      /* per host and per VM */
#define NC_SCHED_MEM_MAX (1ULL << 50) /* bytes (1 PiB), per host and per VM */
#define NC_SCHED_RATIO_MAX 64.0       /* overcommit ratios are in (0, 64] */

enum nc_sched_mode {
  NC_SCHED_PACK,   /* fill the fullest host that fits: fewer hosts in use */
  NC_SCHED_SPREAD, /* use the emptiest host: more headroom per host */
};

/* Every multiplier must be finite and >= 0 (0 turns that weight off). */
struct nc_sched_config {
  double cpu_ratio;   /* vCPU overcommit; default 4.0 */
  double mem_ratio;   /* memory overcommit; default 1.0 */
  enum nc_sched_mode mode; /* default NC_SCHED_PACK */
  double cpu_weight;  /* default 1.0 */
  double mem_weight;  /* default 1.0 */
  double soft_affinity_weight;      /* per group with a member here; default 8 */
  double soft_anti_affinity_weight; /* per member already here; default 8 */
  double zone_weight;    /* host in the preferred zone; default 4 */
  double region_weight;  /* host in the preferred region; default 2 */
  double latency_weight; /* default 1.0 */
  uint32_t latency_ref_us; /* > 0; default 100000 (100 ms) */
};

/* Fills c with the defaults above. */
void nc_sched_config_default(struct nc_sched_config *c);

enum nc_sched_host_state {
  NC_SCHED_HOST_READY,
  NC_SCHED_HOST_CORDONED,  /* no new VMs; its VMs stay and count */
  NC_SCHED_HOST_DRAINING,  /* no new VMs; its VMs are being moved off */
  NC_SCHED_HOST_NOT_READY, /* down or unknown; its VMs do not count for groups */
};

/* A host label. value NULL or "" makes a bare trait ("gpu", "sriov"). */
struct nc_sched_label {
  const char *key;
  const char *value;
};

/* A measured round trip from the host to a named site. */
struct nc_sched_latency {
  const char *site;
  uint32_t rtt_us;
};

struct nc_sched_host {
  const char *name;  /* unique in the snapshot */
  const char *arch;  /* e.g. "x86_64"; NULL/"" = matches only requests
                        that name no arch */
  const char *zone;  /* failure domains and geography; NULL/"" = none */
  const char *rack;  /* racks are scoped by zone: ("z1","r1") and
                        ("z2","r1") are two racks */
  const char *region;
  enum nc_sched_host_state state;
  uint32_t cpus;             /* physical CPUs, 1..NC_SCHED_VCPUS_MAX */
  uint64_t mem_bytes;        /* physical memory, 1..NC_SCHED_MEM_MAX */
  /* Allocation the snapshot does not list as VMs (host reserve, VMs of
   * other managers). Counted against capacity; may exceed it. */
  uint32_t vcpus_reserved;
  uint64_t mem_reserved_bytes;
  const struct nc_sched_label *labels;
  size_t nlabels;            /* <= NC_SCHED_HOST_LABELS_MAX, keys unique */
  const struct nc_sched_latency *latencies;
  size_t nlatencies;         /* <= NC_SCHED_HOST_SITES_MAX, sites unique */
};

enum nc_sched_group_policy { NC_SCHED_AFFINITY, NC_SCHED_ANTI_AFFINITY };
enum nc_sched_scope { NC_SCHED_SCOPE_HOST, NC_SCHED_SCOPE_RACK, NC_SCHED_SCOPE_ZONE };

/* A group rule. hard: a filter (never violated; a placement fails
 * instead). soft: a weight (soft_affinity_weight / soft_anti_affinity_weight).
 * Hard affinity means "with the existing members if there are any": the
 * first member goes anywhere. Anti-affinity at zone scope is "spread over
 * zones". */
struct nc_sched_group {
  const char *name; /* unique among groups */
  enum nc_sched_group_policy policy;
  enum nc_sched_scope scope;
  bool hard;
};

/* What a VM needs and wants. Used both for new placements and, with
 * nc_sched_vm_add, to describe an existing VM (whose constraints the N+1
 * check then honours when it re-places it). */
struct nc_sched_request {
  const char *name;    /* VM name, unique among the snapshot's VMs */
  uint32_t vcpus;      /* 1..NC_SCHED_VCPUS_MAX */
  uint64_t mem_bytes;  /* 1..NC_SCHED_MEM_MAX */
  const char *arch;    /* NULL/"" = any */
  const struct nc_sched_label *labels; /* required on the host; a NULL/""
                                          value requires the key only */
  size_t nlabels;      /* <= NC_SCHED_REQ_LABELS_MAX */
  const char *const *groups; /* names of groups made with nc_sched_group_add */
  size_t ngroups;      /* <= NC_SCHED_REQ_GROUPS_MAX, no duplicates */
  const char *prefer_zone;   /* soft; NULL/"" = none */
  const char *prefer_region; /* soft; NULL/"" = none */
  const char *latency_site;  /* NULL/"" = no latency hint */
  uint32_t max_latency_us;   /* hard bound to latency_site; 0 = none (the
                                site then only weighs) */
  bool ha;                   /* restart elsewhere if its host dies; what
                                nc_sched_n1_check protects */
  /* Hosts to exclude for this decision only (HA restart: the dead host;
   * drain: the source). Names not in the snapshot are ignored. Not stored
   * by nc_sched_vm_add. */
  const char *const *avoid_hosts;
  size_t navoid;       /* <= NC_SCHED_AVOID_MAX */
};

/* Opaque snapshot. */
struct nc_sched;

/* cfg NULL = defaults. -EINVAL on a bad config (a ratio outside
 * (0, NC_SCHED_RATIO_MAX], a multiplier negative, non-finite or above 1e6,
 * an unknown mode, latency_ref_us 0), -ENOMEM. On success *out belongs to the caller
 * (nc_sched_free). */
int nc_sched_new(const struct nc_sched_config *cfg, struct nc_sched **out);
/* Accepts NULL. */
void nc_sched_free(struct nc_sched *s);

/* Adds a host. -EEXIST if the name is taken, NC_E_TOOBIG past a cap,
 * -EINVAL on malformed fields. Hosts are never removed: rebuild the
 * snapshot, or set the host NOT_READY. */
int nc_sched_host_add(struct nc_sched *s, const struct nc_sched_host *h);
/* -ENOENT if no such host. */
int nc_sched_host_set_state(struct nc_sched *s, const char *host,
                            enum nc_sched_host_state state);

/* -EEXIST if a group of that name exists, -EINVAL on a bad enum/name. */
int nc_sched_group_add(struct nc_sched *s, const struct nc_sched_group *g);

/* Records an existing VM on host, as a fact: no filter is applied (it may
 * overcommit a host or break a group rule; the snapshot tracks it as is).
 * vm->avoid_hosts is ignored. -ENOENT when host or a group is unknown,
 * -EEXIST when the VM name is taken. */
int nc_sched_vm_add(struct nc_sched *s, const struct nc_sched_request *vm, const char *host);
/* Forgets a VM (deleted, or moved out of the cluster). -ENOENT if unknown. */
int nc_sched_vm_remove(struct nc_sched *s, const char *vm);
/* Where the VM is. On success *host points into the snapshot, valid until
 * nc_sched_free. -ENOENT if unknown. */
int nc_sched_vm_host(const struct nc_sched *s, const char *vm, const char **host);

/* nc_sched_place flags. */
#define NC_SCHED_DRY_RUN 0x1u /* decide and explain, change nothing */
#define NC_SCHED_MOVE 0x2u    /* the VM exists in the snapshot (HA restart,
                                 drain, rebalance): decide as if it were not
                                 on its current host, then move it there.
                                 Its stored constraints are replaced by the
                                 request's. Without this flag an existing
                                 name is -EEXIST. */

struct nc_sched_choice {
  char host[NC_SCHED_NAME_MAX + 1]; /* "" when nothing was chosen */
  double score;
  uint32_t hosts_fit; /* how many hosts passed every filter */
};

/* Decides where req goes and, unless NC_SCHED_DRY_RUN, commits it (the VM
 * joins the snapshot on the chosen host, with its groups).
 *
 * Returns 0 and fills *out (may be NULL) when a host was chosen;
 * -ENOSPC when every host was rejected (out->host is "");
 * -EEXIST (name taken, no NC_SCHED_MOVE), -ENOENT (unknown group, or
 * NC_SCHED_MOVE for an unknown VM), -EINVAL / NC_E_TOOBIG on bad input,
 * -ENOMEM.
 *
 * explain: NULL for the fast path. Otherwise, on 0 and on -ENOSPC,
 * *explain is a new JSON object the caller owns (json_decref); on any
 * other error it is NULL. Its shape (docs/scheduling.md shows examples):
 *   { "vm": "web-1", "mode": "pack", "placed": true, "host": "h2",
 *     "hosts_fit": 1, "rejected": { "memory": 1 },
 *     "hosts": [   // every host: those that fit best first, then the
 *                  // rejected ones by name
 *       { "host": "h2", "fit": true, "rank": 1, "score": 1.25,
 *         "weights": { "cpu": 0.5, "memory": 0.75, ... } },
 *       { "host": "h1", "fit": false, "filter": "memory",
 *         "reason": "memory: needs 2.0 GiB, 1.5 GiB free at ratio 1.0" } ] }
 * "weights" lists every weight that applies to the request, zeros
 * included, and they add up to "score". Numbers are plain doubles: dump
 * with JSON_REAL_PRECISION(6) to print 0.7375 rather than
 * 0.73750000000000004. Explaining costs one JSON object
 * per host; do not use it in a loop over many requests. */
int nc_sched_place(struct nc_sched *s, const struct nc_sched_request *req, unsigned flags,
                   struct nc_sched_choice *out, json_t **explain);

/* Places n requests in batch order, committing each as it is placed
 * (flags as for nc_sched_place; no explain). Batch order: VMs needing at
 * least 1/8 of an average host (on vCPUs or memory) first, largest first,
 * so the hard-to-fit ones are not left for last; all others keep the
 * caller's order (sorting small mixed VMs by one size key packs worse:
 * docs/benchmarks.md). rcs[i] and outs[i] (outs may be NULL) are for
 * reqs[i], in the caller's order, with nc_sched_place's codes; one
 * request's failure does not stop the others. Returns how many were
 * placed, or a negative error for the batch itself (-EINVAL, NC_E_TOOBIG
 * past NC_SCHED_BATCH_MAX, -ENOMEM) in which case nothing was placed. */
int nc_sched_place_batch(struct nc_sched *s, const struct nc_sched_request *reqs, size_t n,
                         unsigned flags, struct nc_sched_choice *outs, int *rcs);

/* A VM that would have nowhere to go after one host failure. */
struct nc_sched_stranded {
  char failed_host[NC_SCHED_NAME_MAX + 1];
  char vm[NC_SCHED_NAME_MAX + 1];
};

struct nc_sched_n1 {
  size_t count; /* 0 = the cluster survives any single host failure */
  struct nc_sched_stranded *items; /* by failed host name, then VM name */
  size_t hosts_checked; /* hosts that held at least one HA VM */
};

/* N+1: for every host that holds HA VMs, pretends it died (NOT_READY and
 * avoided) and re-places its HA VMs on the rest, in batch order (see
 * nc_sched_place_batch) with the VMs listed by name, using the VMs' own
 * stored constraints; each restart sees the previous ones. Every VM that
 * finds no host is reported. Non-HA VMs are not restarted (they stay
 * where they are and keep their capacity). The snapshot is left exactly
 * as it was.
 *
 * This is greedy, not an exact bin packing: it can report a VM that a
 * cleverer arrangement would fit, never the reverse. A controller that
 * restarts a dead host's HA VMs with nc_sched_place_batch(NC_SCHED_MOVE),
 * listed by name and avoiding the dead host, on the same snapshot, makes
 * exactly the decisions this check simulated.
 *
 * Admission of a new HA VM: nc_sched_place it, run this check, and if
 * out->count is not 0, nc_sched_vm_remove it and refuse.
 *
 * Cost: one decision per HA VM, i.e. about (HA VMs) x (hosts) host
 * evaluations (10 ms for 3,300 HA VMs on 1,000 hosts).
 *
 * On success *out belongs to the caller (nc_sched_n1_free); on failure
 * (-EINVAL, -ENOMEM) it is zeroed. */
int nc_sched_n1_check(struct nc_sched *s, struct nc_sched_n1 *out);
/* Frees items, zeroes r; accepts NULL. */
void nc_sched_n1_free(struct nc_sched_n1 *r);

/* Counts, for callers and tests. */
size_t nc_sched_host_count(const struct nc_sched *s);
size_t nc_sched_vm_count(const struct nc_sched *s);

/* Name of a filter or weight mode, as used in explain output. */
const char *nc_sched_mode_name(enum nc_sched_mode m);

#endif
