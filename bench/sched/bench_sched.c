/* nc-bench-sched: the placement engine's speed and packing quality.
 *
 * Places N VMs of mixed sizes (seeded PRNG, fixed default seed, printed)
 * on H identical hosts and reports, per strategy:
 *   - total time and time per decision (mean, p50, p99);
 *   - hosts used against the bin-packing lower bound
 *     ceil(sum of demand / host capacity) on the binding resource;
 *   - the same for plain first-fit and first-fit-decreasing (written here,
 *     outside the library, as the yardsticks).
 * Then the N+1 check on the packed cluster, and the same placements with
 * constraints (zones, racks, anti-affinity groups, labels) to show what
 * they cost.
 *
 * Build and run (results in docs/benchmarks.md, "Placement (ITP)"):
 *   cmake -S . -B build && make -C build nc-bench-sched
 *   build/bin/nc-bench-sched [--seed N] [--hosts H] [--vms N] [--repeat R]
 *                            [--mix mixed|large]
 * It measures speed; nothing in the unit tests is timed. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched/sched.h"
#include "util/err.h"

#define GIB (1ULL << 30)
#define HOST_CPUS 64
#define HOST_MEM_GIB 384

static uint64_t rng_state;
static uint64_t rng(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Flavours, with how often each occurs (weights sum to 100): small web
 * VMs, compute-heavy and memory-heavy ones, sizes that do not divide the
 * host, so neither resource packs trivially. */
struct flavour {
  uint32_t vcpus;
  uint32_t mem_gib;
  int weight;
};
static const struct flavour flavours_mixed[] = {
    {1, 2, 10},  {2, 3, 10},   {2, 6, 12},  {4, 12, 10}, {4, 20, 8},  {8, 8, 10},
    {8, 30, 10}, {16, 16, 8},  {16, 72, 6}, {32, 32, 6},  {32, 120, 4}, {12, 48, 6},
};
/* --mix large: VMs of 8-60% of a host, where arrival order hurts. */
static const struct flavour flavours_large[] = {
    {4, 40, 20}, {8, 90, 25}, {16, 130, 25}, {24, 170, 20}, {32, 230, 10},
};
static const struct flavour *flavours = flavours_mixed;

struct vmspec {
  char name[24];
  uint32_t vcpus;
  uint64_t mem;
};

static struct vmspec *make_vms(size_t n) {
  struct vmspec *v = calloc(n, sizeof *v);
  if (!v)
    exit(1);
  for (size_t i = 0; i < n; i++) {
    int pick = (int)(rng() % 100), k = 0;
    while (pick >= flavours[k].weight) {
      pick -= flavours[k].weight;
      k++;
    }
    snprintf(v[i].name, sizeof v[i].name, "vm-%05zu", i);
    v[i].vcpus = flavours[k].vcpus;
    v[i].mem = (uint64_t)flavours[k].mem_gib * GIB;
  }
  return v;
}

static struct nc_sched *make_cluster(size_t nhosts, enum nc_sched_mode mode, bool topo) {
  struct nc_sched_config cfg;
  nc_sched_config_default(&cfg);
  cfg.mode = mode;
  struct nc_sched *s;
  if (nc_sched_new(&cfg, &s) != 0)
    exit(1);
  char name[32], zone[16], rack[16];
  struct nc_sched_label labels[] = {{"ssd", NULL}, {"gen", "g3"}};
  for (size_t i = 0; i < nhosts; i++) {
    snprintf(name, sizeof name, "host-%04zu", i);
    snprintf(zone, sizeof zone, "z%zu", i % 3);
    snprintf(rack, sizeof rack, "r%zu", (i / 3) % 20);
    struct nc_sched_host h = {
        .name = name, .arch = "x86_64", .cpus = HOST_CPUS,
        .mem_bytes = (uint64_t)HOST_MEM_GIB * GIB, .state = NC_SCHED_HOST_READY};
    if (topo) {
      h.zone = zone;
      h.rack = rack;
      h.labels = labels;
      h.nlabels = i % 2 ? 2 : 1;
    }
    if (nc_sched_host_add(s, &h) != 0)
      exit(1);
  }
  if (topo) {
    char g[16];
    for (int i = 0; i < 200; i++) {
      snprintf(g, sizeof g, "grp-%03d", i);
      /* Half hard per rack (60 racks), half soft per zone (3 zones). */
      struct nc_sched_group gr = {g, NC_SCHED_ANTI_AFFINITY,
                                  i % 2 ? NC_SCHED_SCOPE_ZONE : NC_SCHED_SCOPE_RACK, i % 2 == 0};
      if (nc_sched_group_add(s, &gr) != 0)
        exit(1);
    }
  }
  return s;
}

static char group_names[200][16];
static const char *group_ptr[200];
static struct nc_sched_label want_gen[] = {{"gen", "g3"}};

static struct nc_sched_request to_req(const struct vmspec *v, size_t i, bool topo) {
  struct nc_sched_request r;
  memset(&r, 0, sizeof r);
  r.name = v->name;
  r.vcpus = v->vcpus;
  r.mem_bytes = v->mem;
  r.arch = "x86_64";
  if (topo) {
    if (i % 5 == 0) { /* one in five in an anti-affinity group of ~10 */
      r.groups = &group_ptr[(i / 5) % 200];
      r.ngroups = 1;
    }
    if (i % 7 == 0) {
      r.labels = want_gen;
      r.nlabels = 1;
    }
    if (i % 11 == 0)
      r.prefer_zone = "z1";
    r.ha = i % 3 == 0;
  }
  return r;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

struct usage {
  size_t hosts_used;
  size_t placed;
};

/* Hosts with anything on them, from where each VM went. */
static struct usage count_used(struct nc_sched *s, const struct vmspec *v, size_t n,
                               size_t nhosts) {
  char *used = calloc(nhosts, 1);
  struct usage u = {0, 0};
  for (size_t i = 0; i < n; i++) {
    const char *h;
    if (nc_sched_vm_host(s, v[i].name, &h) != 0)
      continue;
    u.placed++;
    size_t idx = (size_t)strtoul(h + 5, NULL, 10);
    if (!used[idx]) {
      used[idx] = 1;
      u.hosts_used++;
    }
  }
  free(used);
  return u;
}

static void report(const char *what, double total_s, double *lat, size_t nlat, struct usage u,
                   size_t lower) {
  printf("%-34s %9.1f ms total", what, total_s * 1e3);
  if (lat && nlat) {
    qsort(lat, nlat, sizeof *lat, cmp_double);
    printf("  %6.2f us/decision (p50 %.2f, p99 %.2f)", total_s * 1e6 / (double)nlat,
           lat[nlat / 2] * 1e6, lat[(size_t)((double)nlat * 0.99)] * 1e6);
  }
  printf("\n%-34s placed %zu, hosts used %zu = %.2f%% over the lower bound %zu\n", "", u.placed,
         u.hosts_used, 100.0 * ((double)u.hosts_used - (double)lower) / (double)lower, lower);
}

/* First-fit over hosts in order, outside the library: the yardstick. */
static struct usage first_fit(const struct vmspec *v, const size_t *order, size_t n,
                              size_t nhosts, double *secs) {
  int64_t *cpu = calloc(nhosts, sizeof *cpu), *mem = calloc(nhosts, sizeof *mem);
  const int64_t cpu_cap = HOST_CPUS * 4 * 1000, mem_cap = (int64_t)HOST_MEM_GIB * (int64_t)GIB;
  struct usage u = {0, 0};
  size_t top = 0; /* hosts [0, top) have been opened */
  double t0 = now_s();
  for (size_t k = 0; k < n; k++) {
    const struct vmspec *x = &v[order[k]];
    for (size_t h = 0; h < nhosts; h++) {
      if (cpu[h] + x->vcpus * 1000 <= cpu_cap && mem[h] + (int64_t)x->mem <= mem_cap) {
        cpu[h] += x->vcpus * 1000;
        mem[h] += (int64_t)x->mem;
        u.placed++;
        if (h + 1 > top)
          top = h + 1;
        break;
      }
    }
  }
  *secs = now_s() - t0;
  for (size_t h = 0; h < top; h++)
    u.hosts_used += mem[h] > 0;
  free(cpu);
  free(mem);
  return u;
}

static const struct vmspec *sort_base;
static int cmp_size_desc(const void *a, const void *b) {
  const struct vmspec *x = &sort_base[*(const size_t *)a], *y = &sort_base[*(const size_t *)b];
  if (x->mem != y->mem)
    return x->mem > y->mem ? -1 : 1;
  if (x->vcpus != y->vcpus)
    return x->vcpus > y->vcpus ? -1 : 1;
  return strcmp(x->name, y->name);
}

int main(int argc, char **argv) {
  uint64_t seed = 20261128;
  size_t nhosts = 1000, nvms = 10000;
  int repeat = 3;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
      seed = strtoull(argv[++i], NULL, 0);
    else if (strcmp(argv[i], "--hosts") == 0 && i + 1 < argc)
      nhosts = strtoul(argv[++i], NULL, 0);
    else if (strcmp(argv[i], "--vms") == 0 && i + 1 < argc)
      nvms = strtoul(argv[++i], NULL, 0);
    else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
      repeat = atoi(argv[++i]);
    else if (strcmp(argv[i], "--mix") == 0 && i + 1 < argc && strcmp(argv[i + 1], "large") == 0)
      flavours = flavours_large, i++;
    else if (strcmp(argv[i], "--mix") == 0 && i + 1 < argc && strcmp(argv[i + 1], "mixed") == 0)
      flavours = flavours_mixed, i++;
    else {
      fprintf(stderr, "usage: %s [--seed N] [--hosts H] [--vms N] [--repeat R] [--mix mixed|large]\n",
              argv[0]);
      return 2;
    }
  }
  if (nhosts == 0 || nhosts > 9999 || nvms == 0 || repeat < 1) {
    fprintf(stderr, "nc-bench-sched: --hosts must be 1..9999, --vms and --repeat >= 1\n");
    return 2;
  }
  for (int i = 0; i < 200; i++) {
    snprintf(group_names[i], sizeof group_names[i], "grp-%03d", i);
    group_ptr[i] = group_names[i];
  }
  rng_state = seed;
  struct vmspec *v = make_vms(nvms);
  uint64_t sum_cpu = 0, sum_mem = 0;
  for (size_t i = 0; i < nvms; i++) {
    sum_cpu += v[i].vcpus;
    sum_mem += v[i].mem;
  }
  const uint64_t cap_cpu = HOST_CPUS * 4, cap_mem = (uint64_t)HOST_MEM_GIB * GIB;
  size_t lb_cpu = (size_t)((sum_cpu + cap_cpu - 1) / cap_cpu);
  size_t lb_mem = (size_t)((sum_mem + cap_mem - 1) / cap_mem);
  size_t lower = lb_cpu > lb_mem ? lb_cpu : lb_mem;
  printf("nc-bench-sched: seed %" PRIu64 ", %zu VMs (mix %s) on %zu hosts (%d CPUs x 4.0, "
         "%d GiB x 1.0)\n",
         seed, nvms, flavours == flavours_large ? "large" : "mixed", nhosts, HOST_CPUS,
         HOST_MEM_GIB);
  printf("demand: %" PRIu64 " vCPUs (lower bound %zu hosts), %" PRIu64
         " GiB (lower bound %zu hosts): binding resource %s\n",
         sum_cpu, lb_cpu, (uint64_t)(sum_mem / GIB), lb_mem, lb_mem >= lb_cpu ? "memory" : "cpu");
  printf("best of %d runs per line\n\n", repeat);

  struct nc_sched_request *reqs = calloc(nvms, sizeof *reqs);
  double *lat = calloc(nvms, sizeof *lat), *best_lat = calloc(nvms, sizeof *best_lat);
  int *rcs = calloc(nvms, sizeof *rcs);
  size_t *order = calloc(nvms, sizeof *order);
  if (!reqs || !lat || !best_lat || !rcs || !order)
    return 1;

  char n1_line[256] = "";
  for (int topo = 0; topo < 2; topo++) {
    for (size_t i = 0; i < nvms; i++)
      reqs[i] = to_req(&v[i], i, topo);
    const char *tag = topo ? " +constraints" : "";
    for (int mode = 0; mode < 2; mode++) {
      double best = 1e9;
      struct usage u = {0, 0};
      for (int r = 0; r < repeat; r++) {
        struct nc_sched *s = make_cluster(nhosts, mode ? NC_SCHED_SPREAD : NC_SCHED_PACK, topo);
        double t0 = now_s();
        for (size_t i = 0; i < nvms; i++) {
          double a = now_s();
          nc_sched_place(s, &reqs[i], 0, NULL, NULL);
          lat[i] = now_s() - a;
        }
        double t = now_s() - t0;
        if (t < best) {
          best = t;
          memcpy(best_lat, lat, nvms * sizeof *lat);
          u = count_used(s, v, nvms, nhosts);
        }
        if (topo && mode == 0 && r == repeat - 1) {
          struct nc_sched_n1 n1;
          double a = now_s();
          int rc = nc_sched_n1_check(s, &n1);
          double d = now_s() - a;
          if (rc == 0)
            snprintf(n1_line, sizeof n1_line,
                     "N+1 check on the packed cluster%s: %zu hosts with HA VMs, %.1f ms, "
                     "%zu VMs would be stranded\n",
                     tag, n1.hosts_checked, d * 1e3, n1.count);
          nc_sched_n1_free(&n1);
        }
        nc_sched_free(s);
      }
      char what[64];
      snprintf(what, sizeof what, "%s, arrival order%s", mode ? "spread" : "pack", tag);
      report(what, best, best_lat, nvms, u, lower);
    }
    {
      double best = 1e9;
      struct usage u = {0, 0};
      for (int r = 0; r < repeat; r++) {
        struct nc_sched *s = make_cluster(nhosts, NC_SCHED_PACK, topo);
        double t0 = now_s();
        nc_sched_place_batch(s, reqs, nvms, 0, NULL, rcs);
        double t = now_s() - t0;
        if (t < best) {
          best = t;
          u = count_used(s, v, nvms, nhosts);
        }
        nc_sched_free(s);
      }
      char what[64];
      snprintf(what, sizeof what, "pack, batch (big first)%s", tag);
      report(what, best, NULL, 0, u, lower);
      printf("%-34s %9.2f us/decision\n", "", best * 1e6 / (double)nvms);
    }
  }
  printf("%s", n1_line);

  for (size_t i = 0; i < nvms; i++)
    order[i] = i;
  double secs;
  struct usage u = first_fit(v, order, nvms, nhosts, &secs);
  report("first-fit, arrival order", secs, NULL, 0, u, lower);
  sort_base = v;
  qsort(order, nvms, sizeof *order, cmp_size_desc);
  u = first_fit(v, order, nvms, nhosts, &secs);
  report("first-fit-decreasing", secs, NULL, 0, u, lower);

  free(reqs);
  free(lat);
  free(best_lat);
  free(rcs);
  free(order);
  free(v);
  return 0;
}
