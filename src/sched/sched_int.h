/* Internals shared by sched.c (snapshot, decisions, N+1) and
 * sched_explain.c (reasons and JSON). Not part of the interface: callers
 * see only sched.h. */
#ifndef NC_SCHED_SCHED_INT_H
#define NC_SCHED_SCHED_INT_H

#include "sched/sched.h"

/* String and domain ids. ID_NONE: the field is absent (host has no arch,
 * request names no zone). ID_MISSING: the request names a string no host
 * has, so it never matches. */
#define ID_NONE UINT32_MAX
#define ID_MISSING (UINT32_MAX - 1)

/* A name-to-index hash table (open addressing, linear probing). The names
 * themselves live in the owner's records; name_of reads them back. */
struct nc__stab {
  uint32_t *slot; /* 0 = empty, TOMB = deleted, else index + 1 */
  uint32_t *hash;
  size_t cap;     /* power of two, or 0 */
  size_t used;    /* live + tombstones */
};

/* What the hot loop reads for every host: 64 bytes, one cache line. */
struct nc__host_hot {
  int64_t cpu_cap_m;  /* milli-vCPUs after cpu_ratio */
  int64_t cpu_used_m;
  int64_t mem_cap;    /* bytes after mem_ratio */
  int64_t mem_used;
  double inv_cpu;     /* 1 / cpu_cap_m */
  double inv_mem;     /* 1 / mem_cap */
  uint32_t rank;      /* position in name order: the tie-break */
  uint32_t arch;      /* string id or ID_NONE */
  uint32_t avoid;     /* == the decision's stamp when avoided */
  uint8_t state;      /* enum nc_sched_host_state */
};

struct nc__host {
  char name[NC_SCHED_NAME_MAX + 1];
  char zone_name[NC_SCHED_NAME_MAX + 1]; /* for explain */
  char rack_name[NC_SCHED_NAME_MAX + 1];
  uint32_t zone;   /* domain id or ID_NONE */
  uint32_t rack;   /* domain id (zone + rack) or ID_NONE */
  uint32_t zone_s; /* the zone as a string id, for prefer_zone */
  uint32_t region; /* string id or ID_NONE */
  uint32_t cpus;
  uint64_t mem_bytes;
  uint32_t nlabels;
  uint32_t lkey[NC_SCHED_HOST_LABELS_MAX];
  uint32_t lval[NC_SCHED_HOST_LABELS_MAX]; /* ID_NONE for a bare trait */
  uint32_t nsites;
  uint32_t site[NC_SCHED_HOST_SITES_MAX];
  uint32_t rtt_us[NC_SCHED_HOST_SITES_MAX];
};

/* A request's constraints as ids: what a stored VM keeps and what a
 * decision runs on. */
struct nc__cons {
  int64_t cpu_m;
  int64_t mem;
  uint32_t arch;
  uint32_t nlabels;
  uint32_t lkey[NC_SCHED_REQ_LABELS_MAX];
  uint32_t lval[NC_SCHED_REQ_LABELS_MAX]; /* ID_NONE: key only */
  uint32_t ngroups;
  uint32_t group[NC_SCHED_REQ_GROUPS_MAX];
  uint32_t zone;   /* preferred zone, domain id */
  uint32_t region; /* preferred region, string id */
  uint32_t site;
  uint32_t max_lat_us;
  bool ha;
};

struct nc__vm {
  char name[NC_SCHED_NAME_MAX + 1];
  uint32_t host; /* ID_NONE while detached (being moved) or free slot */
  bool live;
  struct nc__cons c;
};

struct nc__group {
  char name[NC_SCHED_NAME_MAX + 1];
  enum nc_sched_group_policy policy;
  enum nc_sched_scope scope;
  bool hard;
  uint32_t *members; /* VM indices */
  uint32_t nmembers, cap;
};

struct nc__strs {
  char **s;
  size_t n, cap;
  struct nc__stab tab;
};

struct nc_sched {
  struct nc_sched_config cfg;
  struct nc__host_hot *hot;
  struct nc__host *host;
  size_t nhosts, hosts_cap;
  struct nc__stab host_tab;
  bool ranks_dirty;
  int64_t total_cpu_cap_m, total_mem_cap; /* for the batch order */

  struct nc__vm *vm;
  size_t vms_cap, nvm_slots, nvms;
  uint32_t *vm_free; /* free slots */
  size_t nvm_free;
  struct nc__stab vm_tab;

  struct nc__group *group;
  size_t ngroups, groups_cap;
  struct nc__stab group_tab;

  struct nc__strs str; /* arches, label keys and values, regions, sites */
  struct nc__strs dom; /* zones ("z") and racks ("z\x1fr") */

  uint32_t stamp; /* avoid-list generation */

  /* Per-decision group counts, kept all-zero between decisions:
   * cnt_host[g * hosts_cap + h], cnt_dom[g * doms_cap + d]. */
  uint32_t *cnt_host;
  uint32_t *cnt_dom;
  size_t cnt_hosts_cap, cnt_doms_cap;
};

/* One decision in progress. */
struct nc__ctx {
  const struct nc__cons *c;
  const struct nc_sched_request *req; /* its strings, for explain; may be NULL */
  uint32_t avoid[NC_SCHED_AVOID_MAX];
  size_t navoid;
  uint32_t stamp;
  uint32_t gtotal[NC_SCHED_REQ_GROUPS_MAX]; /* counted members per group */
  bool any_group;
};

enum nc__filter {
  NC__F_OK = 0,
  NC__F_STATE,
  NC__F_AVOID,
  NC__F_ARCH,
  NC__F_LABELS,
  NC__F_CPU,
  NC__F_MEMORY,
  NC__F_LATENCY,
  NC__F_AFFINITY,
  NC__F_ANTI_AFFINITY,
  NC__F_COUNT
};

enum nc__weight {
  NC__W_CPU,
  NC__W_MEMORY,
  NC__W_SOFT_AFFINITY,
  NC__W_SOFT_ANTI_AFFINITY,
  NC__W_ZONE,
  NC__W_REGION,
  NC__W_LATENCY,
  NC__W_COUNT
};

extern const char *const nc__filter_names[NC__F_COUNT];
extern const char *const nc__weight_names[NC__W_COUNT];

/* Evaluates host h for the decision: NC__F_OK and *score (and w[] per
 * weight when w is not NULL), or the first failing filter and, for group
 * filters, *which = the request's group slot. */
int nc__eval(const struct nc_sched *s, const struct nc__ctx *x, uint32_t h, double *score,
             double *w, uint32_t *which);
/* Which weights apply to the request (explain lists exactly these). */
bool nc__weight_applies(const struct nc_sched *s, const struct nc__ctx *x, int weight);
/* Group members counted in host h's scope for the request's group slot gi;
 * *has_dom false when the host lacks the scope's label. */
uint32_t nc__group_count(const struct nc_sched *s, uint32_t gi, uint32_t gid, uint32_t h,
                         bool *has_dom);

/* sched_explain.c: the human reason for a rejection. */
void nc__reason(const struct nc_sched *s, const struct nc__ctx *x, uint32_t h, int filter,
                uint32_t which, char *buf, size_t len);
/* Builds the explain object for a finished evaluation (chosen = ID_NONE
 * when nothing fit). NULL on allocation failure. */
json_t *nc__explain(const struct nc_sched *s, const struct nc__ctx *x, const char *vm_name,
                    uint32_t chosen);

#endif
