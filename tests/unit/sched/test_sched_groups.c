/* The placement engine's group rules (hard and soft, affinity and
 * anti-affinity, at host, rack and zone scope) and the N+1 check. */
#include "sched_test.h"

static void group(struct nc_sched *s, const char *name, enum nc_sched_group_policy p,
                  enum nc_sched_scope sc, bool hard) {
  struct nc_sched_group g = {name, p, sc, hard};
  int rc = nc_sched_group_add(s, &g);
  if (rc != 0)
    fail_msg("adding group %s: %s", name, nc_strerror(rc));
}

/* A request in one group. gname must outlive the request. */
static struct nc_sched_request grq(const char *name, uint32_t vcpus, uint64_t mem_gib,
                                   const char *const *gname) {
  struct nc_sched_request r = rq(name, vcpus, mem_gib);
  r.groups = gname;
  r.ngroups = 1;
  return r;
}

static const char *const G_DB[] = {"db"};

/* ---- anti-affinity --------------------------------------------------------- */

static void test_hard_anti_affinity_host(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  group(s, "db", NC_SCHED_ANTI_AFFINITY, NC_SCHED_SCOPE_HOST, true);
  add_host(s, "h1", 8, 32, NULL, NULL);
  add_host(s, "h2", 8, 32, NULL, NULL);
  struct nc_sched_request r = grq("db-1", 1, 1, G_DB);
  EXPECT_PLACED(s, &r, "h1");
  r = grq("db-2", 1, 1, G_DB);
  EXPECT_PLACED(s, &r, "h2"); /* pack alone would say h1 */
  r = grq("db-3", 1, 1, G_DB);
  json_t *ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -ENOSPC);
  EXPECT_STR(host_field(ex, "h1", "filter"), "anti_affinity");
  EXPECT_STR(host_field(ex, "h1", "reason"),
             "anti_affinity: group \"db\" (hard, host) already has 1 member on this host");
  json_decref(ex);
  /* Not in the group: packs onto h1 as usual. */
  r = rq("other", 1, 1);
  EXPECT_PLACED(s, &r, "h1");
  /* Removing a member frees its host for the group. */
  EXPECT_RC(nc_sched_vm_remove(s, "db-1"), 0);
  r = grq("db-3", 1, 1, G_DB);
  EXPECT_PLACED(s, &r, "h1");
  nc_sched_free(s);
}

static void test_hard_anti_affinity_rack(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  group(s, "db", NC_SCHED_ANTI_AFFINITY, NC_SCHED_SCOPE_RACK, true);
  add_host(s, "h1", 8, 32, "z1", "r1");
  add_host(s, "h2", 8, 32, "z1", "r1");
  add_host(s, "h3", 8, 32, "z1", "r2");
  add_host(s, "h4", 8, 32, "z2", "r1"); /* another rack r1, in another zone */
  add_host(s, "h5", 8, 32, "z2", NULL);
  struct nc_sched_request r = grq("db-1", 1, 1, G_DB);
  EXPECT_PLACED(s, &r, "h1");
  r = grq("db-2", 1, 1, G_DB);
  json_t *ex = NULL;
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, &ex), 0);
  EXPECT_STR(ch.host, "h3");
  EXPECT_STR(host_field(ex, "h2", "reason"),
             "anti_affinity: group \"db\" (hard, rack) already has 1 member in rack \"r1\"");
  EXPECT_STR(host_field(ex, "h5", "reason"),
             "anti_affinity: group \"db\" is rack-scoped and the host has no rack label");
  json_decref(ex);
  r = grq("db-3", 1, 1, G_DB);
  EXPECT_PLACED(s, &r, "h4");
  r = grq("db-4", 1, 1, G_DB);
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -ENOSPC);
  nc_sched_free(s);
}

/* "Spread over zones". */
static void test_hard_anti_affinity_zone(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  group(s, "db", NC_SCHED_ANTI_AFFINITY, NC_SCHED_SCOPE_ZONE, true);
  const char *zones[] = {"z1", "z1", "z2", "z2", "z3", "z3"};
  const char *names[] = {"a1", "a2", "b1", "b2", "c1", "c2"};
  for (int i = 0; i < 6; i++)
    add_host(s, names[i], 8, 32, zones[i], "r1");
  add_host(s, "nozone", 8, 32, NULL, NULL);
  char vm[3][8];
  const char *got[3];
  for (int i = 0; i < 3; i++) {
    snprintf(vm[i], sizeof vm[i], "db-%d", i);
    struct nc_sched_request r = grq(vm[i], 1, 1, G_DB);
    EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), 0);
    EXPECT_RC(nc_sched_vm_host(s, vm[i], &got[i]), 0);
  }
  EXPECT_STR(got[0], "a1");
  EXPECT_STR(got[1], "b1");
  EXPECT_STR(got[2], "c1");
  struct nc_sched_request r = grq("db-3", 1, 1, G_DB);
  json_t *ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -ENOSPC);
  EXPECT_STR(host_field(ex, "c2", "reason"),
             "anti_affinity: group \"db\" (hard, zone) already has 1 member in zone \"z3\"");
  EXPECT_STR(host_field(ex, "nozone", "reason"),
             "anti_affinity: group \"db\" is zone-scoped and the host has no zone label");
  EXPECT_I64(json_integer_value(json_object_get(json_object_get(ex, "rejected"),
                                                "anti_affinity")), 7);
  json_decref(ex);
  nc_sched_free(s);
}

static void test_soft_anti_affinity(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  group(s, "web", NC_SCHED_ANTI_AFFINITY, NC_SCHED_SCOPE_HOST, false);
  add_host(s, "h1", 8, 32, NULL, NULL);
  add_host(s, "h2", 8, 32, NULL, NULL);
  static const char *const G[] = {"web"};
  struct nc_sched_request r = grq("web-1", 1, 1, G);
  EXPECT_PLACED(s, &r, "h1");
  r = grq("web-2", 1, 1, G);
  json_t *ex = NULL;
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, &ex), 0);
  EXPECT_STR(ch.host, "h2");
  json_t *w1 = json_object_get(host_entry(ex, "h1"), "weights");
  EXPECT_DBL(json_real_value(json_object_get(w1, "soft_anti_affinity")), -8.0);
  json_t *w2 = json_object_get(host_entry(ex, "h2"), "weights");
  EXPECT_DBL(json_real_value(json_object_get(w2, "soft_anti_affinity")), 0.0);
  EXPECT_TRUE(json_object_get(w2, "soft_affinity") == NULL);
  json_decref(ex);
  /* Both hosts have one: the penalty is per member, so the third goes to
   * either (tie: h1), and the fourth to the host with fewer. */
  r = grq("web-3", 1, 1, G);
  EXPECT_PLACED(s, &r, "h1");
  r = grq("web-4", 1, 1, G);
  EXPECT_PLACED(s, &r, "h2");
  /* A penalty, not a filter: with one host left they still land. */
  EXPECT_RC(nc_sched_host_set_state(s, "h2", NC_SCHED_HOST_CORDONED), 0);
  r = grq("web-5", 1, 1, G);
  EXPECT_PLACED(s, &r, "h1");
  nc_sched_free(s);
}

static void test_soft_anti_affinity_zone(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  group(s, "web", NC_SCHED_ANTI_AFFINITY, NC_SCHED_SCOPE_ZONE, false);
  add_host(s, "a1", 8, 32, "z1", NULL);
  add_host(s, "a2", 8, 32, "z1", NULL);
  add_host(s, "b1", 8, 32, "z2", NULL);
  static const char *const G[] = {"web"};
  const char *want[] = {"a1", "b1", "a1", "b1"};
  char name[16];
  for (int i = 0; i < 4; i++) {
    snprintf(name, sizeof name, "web-%d", i);
    struct nc_sched_request r = grq(name, 1, 1, G);
    EXPECT_PLACED(s, &r, want[i]);
  }
  nc_sched_free(s);
}

/* ---- affinity -------------------------------------------------------------- */

static void test_hard_affinity_host(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  group(s, "app", NC_SCHED_AFFINITY, NC_SCHED_SCOPE_HOST, true);
  add_host(s, "a", 8, 16, NULL, NULL);
  add_host(s, "b", 8, 64, NULL, NULL);
  struct nc_sched_request other = rq("other", 4, 8);
  EXPECT_RC(nc_sched_vm_add(s, &other, "b"), 0);
  static const char *const G[] = {"app"};
  /* The first member goes anywhere: pack picks the fuller b. */
  struct nc_sched_request r = grq("app-1", 1, 2, G);
  EXPECT_PLACED(s, &r, "b");
  EXPECT_RC(nc_sched_vm_remove(s, "app-1"), 0);
  struct nc_sched_request m = grq("app-1", 1, 2, G);
  EXPECT_RC(nc_sched_vm_add(s, &m, "a"), 0); /* now the member is on a */
  r = grq("app-2", 1, 6, G);
  EXPECT_PLACED(s, &r, "a"); /* with its member, although b is fuller */
  r = grq("app-3", 1, 10, G); /* a has 8 GiB left */
  json_t *ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -ENOSPC);
  EXPECT_STR(host_field(ex, "a", "filter"), "memory");
  EXPECT_STR(host_field(ex, "b", "reason"),
             "affinity: group \"app\" (hard, host) has 2 members, none on this host");
  json_decref(ex);
  nc_sched_free(s);
}

static void test_hard_affinity_zone(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  group(s, "app", NC_SCHED_AFFINITY, NC_SCHED_SCOPE_ZONE, true);
  add_host(s, "a1", 8, 32, "z1", NULL);
  add_host(s, "b1", 8, 32, "z2", NULL);
  add_host(s, "b2", 8, 32, "z2", NULL);
  add_host(s, "n", 8, 32, NULL, NULL);
  struct nc_sched_request fill = rq("fill", 4, 16);
  EXPECT_RC(nc_sched_vm_add(s, &fill, "a1"), 0);
  static const char *const G[] = {"app"};
  struct nc_sched_request m = grq("app-1", 1, 30, G);
  EXPECT_RC(nc_sched_vm_add(s, &m, "b1"), 0);
  /* b1 is full; b2 is in the member's zone; a1 is fuller but elsewhere. */
  struct nc_sched_request r = grq("app-2", 1, 4, G);
  json_t *ex = NULL;
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, &ex), 0);
  EXPECT_STR(ch.host, "b2");
  EXPECT_STR(host_field(ex, "a1", "reason"),
             "affinity: group \"app\" (hard, zone) has 1 member, none in zone \"z1\"");
  EXPECT_STR(host_field(ex, "n", "reason"),
             "affinity: group \"app\" is zone-scoped and the host has no zone label");
  json_decref(ex);
  nc_sched_free(s);
}

static void test_soft_affinity(void **state) {
  (void)state;
  struct nc_sched_config cfg;
  nc_sched_config_default(&cfg);
  cfg.mode = NC_SCHED_SPREAD;
  struct nc_sched *s = mk(&cfg);
  group(s, "cache", NC_SCHED_AFFINITY, NC_SCHED_SCOPE_RACK, false);
  add_host(s, "a", 8, 32, "z1", "r1");
  add_host(s, "b", 8, 32, "z1", "r2");
  add_host(s, "c", 8, 32, "z1", "r2");
  static const char *const G[] = {"cache"};
  struct nc_sched_request m = grq("cache-1", 4, 16, G);
  EXPECT_RC(nc_sched_vm_add(s, &m, "b"), 0);
  /* Spread wants a or c (empty); the bonus wants rack r2: c wins. */
  struct nc_sched_request r = grq("cache-2", 1, 1, G);
  json_t *ex = NULL;
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, &ex), 0);
  EXPECT_STR(ch.host, "c");
  EXPECT_DBL(json_real_value(json_object_get(json_object_get(host_entry(ex, "b"), "weights"),
                                             "soft_affinity")), 8.0);
  EXPECT_DBL(json_real_value(json_object_get(json_object_get(host_entry(ex, "a"), "weights"),
                                             "soft_affinity")), 0.0);
  json_decref(ex);
  /* A preference, not a filter: with r2 full it goes to r1. */
  struct nc_sched_request big = grq("cache-3", 1, 32, G);
  EXPECT_PLACED(s, &big, "a");
  nc_sched_free(s);
}

/* Members on a dead host, or on a host the request avoids, do not count:
 * they are being re-placed themselves. */
static void test_members_on_dead_hosts_do_not_count(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  group(s, "db", NC_SCHED_ANTI_AFFINITY, NC_SCHED_SCOPE_ZONE, true);
  group(s, "app", NC_SCHED_AFFINITY, NC_SCHED_SCOPE_HOST, true);
  add_host(s, "h1", 8, 32, "z1", NULL);
  add_host(s, "h2", 8, 32, "z1", NULL);
  add_host(s, "h3", 8, 32, "z2", NULL);
  struct nc_sched_request fill = rq("fill", 4, 16);
  EXPECT_RC(nc_sched_vm_add(s, &fill, "h2"), 0); /* pack prefers h2 */
  struct nc_sched_request m = grq("db-1", 1, 1, G_DB);
  EXPECT_RC(nc_sched_vm_add(s, &m, "h1"), 0);
  struct nc_sched_request r = grq("db-2", 1, 1, G_DB);
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, NC_SCHED_DRY_RUN, &ch, NULL), 0);
  EXPECT_STR(ch.host, "h3"); /* z1 holds db-1 */
  r.avoid_hosts = (const char *[]){"h1"};
  r.navoid = 1;
  EXPECT_RC(nc_sched_place(s, &r, NC_SCHED_DRY_RUN, &ch, NULL), 0);
  EXPECT_STR(ch.host, "h2"); /* db-1's host is avoided: it does not count */
  r.navoid = 0;
  EXPECT_RC(nc_sched_host_set_state(s, "h1", NC_SCHED_HOST_NOT_READY), 0);
  EXPECT_RC(nc_sched_place(s, &r, NC_SCHED_DRY_RUN, &ch, NULL), 0);
  EXPECT_STR(ch.host, "h2");
  /* A cordoned host's members still count (they keep running there). */
  EXPECT_RC(nc_sched_host_set_state(s, "h1", NC_SCHED_HOST_CORDONED), 0);
  EXPECT_RC(nc_sched_place(s, &r, NC_SCHED_DRY_RUN, &ch, NULL), 0);
  EXPECT_STR(ch.host, "h3");

  /* Hard affinity whose only members sit on a dead host: anywhere. */
  static const char *const GA[] = {"app"};
  struct nc_sched_request a1 = grq("app-1", 1, 1, GA);
  EXPECT_RC(nc_sched_vm_add(s, &a1, "h3"), 0);
  EXPECT_RC(nc_sched_host_set_state(s, "h3", NC_SCHED_HOST_NOT_READY), 0);
  struct nc_sched_request a2 = grq("app-2", 1, 1, GA);
  EXPECT_PLACED(s, &a2, "h2");
  nc_sched_free(s);
}

/* A VM in two groups must satisfy both. */
static void test_two_groups(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  group(s, "db", NC_SCHED_ANTI_AFFINITY, NC_SCHED_SCOPE_HOST, true);
  group(s, "near-app", NC_SCHED_AFFINITY, NC_SCHED_SCOPE_ZONE, true);
  add_host(s, "a1", 8, 32, "z1", NULL);
  add_host(s, "a2", 8, 32, "z1", NULL);
  add_host(s, "b1", 8, 32, "z2", NULL);
  static const char *const GN[] = {"near-app"};
  struct nc_sched_request app = grq("app", 1, 1, GN);
  EXPECT_RC(nc_sched_vm_add(s, &app, "a1"), 0);
  static const char *const G2[] = {"db", "near-app"};
  struct nc_sched_request r = rq("db-1", 1, 1);
  r.groups = G2;
  r.ngroups = 2;
  EXPECT_PLACED(s, &r, "a1");
  r.name = "db-2";
  EXPECT_PLACED(s, &r, "a2");
  r.name = "db-3";
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -ENOSPC); /* b1: wrong zone */
  nc_sched_free(s);
}

/* ---- N+1 ------------------------------------------------------------------- */

static void add_vm(struct nc_sched *s, const char *name, uint64_t mem_gib, bool ha,
                   const char *host) {
  struct nc_sched_request r = rq(name, 1, mem_gib);
  r.ha = ha;
  int rc = nc_sched_vm_add(s, &r, host);
  if (rc != 0)
    fail_msg("adding vm %s: %s", name, nc_strerror(rc));
}

static void test_n1_passes(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  add_host(s, "h1", 8, 16, NULL, NULL);
  add_host(s, "h2", 8, 16, NULL, NULL);
  add_host(s, "h3", 8, 16, NULL, NULL);
  add_vm(s, "a", 8, true, "h1");
  add_vm(s, "b", 8, true, "h2");
  add_vm(s, "c", 8, true, "h3");
  add_vm(s, "scratch", 8, false, "h3"); /* h3 is full */
  struct nc_sched_n1 n1;
  EXPECT_RC(nc_sched_n1_check(s, &n1), 0);
  EXPECT_U64(n1.count, 0);
  EXPECT_U64(n1.hosts_checked, 3);
  nc_sched_n1_free(&n1);
  EXPECT_TRUE(n1.items == NULL);
  nc_sched_free(s);
}

static void test_n1_reports_stranded(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  add_host(s, "h1", 8, 16, NULL, NULL);
  add_host(s, "h2", 8, 16, NULL, NULL);
  add_host(s, "h3", 8, 16, NULL, NULL);
  add_vm(s, "a", 10, true, "h1");
  add_vm(s, "b", 10, true, "h2");
  add_vm(s, "c", 4, false, "h3");
  add_vm(s, "d", 10, false, "h3"); /* not HA: never reported */
  /* h1 dies: a (10) fits nowhere (h2: 6 free, h3: 2 free). Same for h2. */
  struct nc_sched_n1 n1;
  EXPECT_RC(nc_sched_n1_check(s, &n1), 0);
  EXPECT_U64(n1.count, 2);
  EXPECT_U64(n1.hosts_checked, 2);
  EXPECT_STR(n1.items[0].failed_host, "h1");
  EXPECT_STR(n1.items[0].vm, "a");
  EXPECT_STR(n1.items[1].failed_host, "h2");
  EXPECT_STR(n1.items[1].vm, "b");
  nc_sched_n1_free(&n1);
  EXPECT_U64(n1.count, 0);

  /* The snapshot is exactly as before: same hosts, same free space. */
  const char *where;
  EXPECT_RC(nc_sched_vm_host(s, "a", &where), 0);
  EXPECT_STR(where, "h1");
  EXPECT_RC(nc_sched_vm_host(s, "b", &where), 0);
  EXPECT_STR(where, "h2");
  struct nc_sched_request probe = rq("probe", 1, 6);
  EXPECT_PLACED(s, &probe, "h1"); /* h1 and h2 both have 6 GiB; name */
  struct nc_sched_request probe2 = rq("probe2", 1, 7);
  EXPECT_RC(nc_sched_place(s, &probe2, 0, NULL, NULL), -ENOSPC);

  /* More room: a fourth host fixes both. */
  add_host(s, "h4", 8, 16, NULL, NULL);
  EXPECT_RC(nc_sched_n1_check(s, &n1), 0);
  EXPECT_U64(n1.count, 0);
  nc_sched_n1_free(&n1);
  nc_sched_free(s);
}

/* Restarts honour the VMs' own constraints. */
static void test_n1_honours_groups(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  group(s, "db", NC_SCHED_ANTI_AFFINITY, NC_SCHED_SCOPE_HOST, true);
  add_host(s, "h1", 8, 64, NULL, NULL);
  add_host(s, "h2", 8, 64, NULL, NULL);
  struct nc_sched_request r = grq("db-1", 1, 1, G_DB);
  r.ha = true;
  EXPECT_RC(nc_sched_vm_add(s, &r, "h1"), 0);
  r.name = "db-2";
  EXPECT_RC(nc_sched_vm_add(s, &r, "h2"), 0);
  struct nc_sched_n1 n1;
  EXPECT_RC(nc_sched_n1_check(s, &n1), 0);
  EXPECT_U64(n1.count, 2); /* plenty of memory, but never two on a host */
  nc_sched_n1_free(&n1);
  add_host(s, "h3", 8, 64, NULL, NULL);
  EXPECT_RC(nc_sched_n1_check(s, &n1), 0);
  EXPECT_U64(n1.count, 0);
  nc_sched_n1_free(&n1);

  /* Label constraints too: only h1 has the gpu. */
  struct nc_sched *t = mk(NULL);
  struct nc_sched_label gpu[] = {{"gpu", "a100"}};
  struct nc_sched_host h = hst("h1", 8, 64 * GIB);
  h.labels = gpu;
  h.nlabels = 1;
  EXPECT_RC(nc_sched_host_add(t, &h), 0);
  add_host(t, "h2", 8, 64, NULL, NULL);
  struct nc_sched_request g = rq("trainer", 1, 1);
  g.labels = gpu;
  g.nlabels = 1;
  g.ha = true;
  EXPECT_RC(nc_sched_vm_add(t, &g, "h1"), 0);
  EXPECT_RC(nc_sched_n1_check(t, &n1), 0);
  EXPECT_U64(n1.count, 1);
  EXPECT_STR(n1.items[0].vm, "trainer");
  nc_sched_n1_free(&n1);
  nc_sched_free(t);
  nc_sched_free(s);
}

/* Admission: place, check, and take it back when it would strand. */
static void test_n1_admission(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  add_host(s, "h1", 8, 16, NULL, NULL);
  add_host(s, "h2", 8, 16, NULL, NULL);
  const char *names[] = {"ha-1", "ha-2", "ha-3"};
  const char *want_host[] = {"h1", "h1", "h2"};
  const size_t want_stranded[] = {0, 0, 2};
  for (int i = 0; i < 3; i++) {
    struct nc_sched_request r = rq(names[i], 1, 6);
    r.ha = true;
    EXPECT_PLACED(s, &r, want_host[i]);
    struct nc_sched_n1 n1;
    EXPECT_RC(nc_sched_n1_check(s, &n1), 0);
    EXPECT_U64(n1.count, want_stranded[i]);
    if (n1.count) {
      /* h1 dies: ha-1 and ha-2 (12 GiB) onto h2 with 10 free; h2 dies:
       * ha-3 (6 GiB) onto h1 with 4 free. */
      EXPECT_STR(n1.items[0].failed_host, "h1");
      EXPECT_STR(n1.items[0].vm, "ha-2");
      EXPECT_STR(n1.items[1].failed_host, "h2");
      EXPECT_STR(n1.items[1].vm, "ha-3");
      EXPECT_RC(nc_sched_vm_remove(s, names[i]), 0);
    }
    nc_sched_n1_free(&n1);
  }
  struct nc_sched_n1 n1;
  EXPECT_RC(nc_sched_n1_check(s, &n1), 0);
  EXPECT_U64(n1.count, 0);
  nc_sched_n1_free(&n1);
  EXPECT_U64(nc_sched_vm_count(s), 2);
  nc_sched_free(s);
}

/* Where the check passes, a real restart in batch order succeeds. */
static void test_n1_matches_a_real_restart(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  const char *hosts[] = {"h1", "h2", "h3", "h4"};
  for (int i = 0; i < 4; i++)
    add_host(s, hosts[i], 16, 32, NULL, NULL);
  uint64_t rng = 7;
  char names[40][16];
  struct nc_sched_request on_h1[40];
  size_t n_h1 = 0;
  for (int i = 0; i < 40; i++) {
    snprintf(names[i], sizeof names[i], "vm-%02d", i);
    struct nc_sched_request r = rq(names[i], 1, 1 + splitmix(&rng) % 4);
    r.ha = true;
    struct nc_sched_choice ch;
    EXPECT_RC(nc_sched_place(s, &r, 0, &ch, NULL), 0);
    struct nc_sched_n1 n1;
    EXPECT_RC(nc_sched_n1_check(s, &n1), 0);
    size_t stranded = n1.count;
    nc_sched_n1_free(&n1);
    if (stranded) {
      EXPECT_RC(nc_sched_vm_remove(s, names[i]), 0);
      continue;
    }
    if (strcmp(ch.host, "h1") == 0)
      on_h1[n_h1++] = r;
  }
  EXPECT_TRUE(n_h1 > 0);
  /* h1 dies: restart its VMs for real. */
  EXPECT_RC(nc_sched_host_set_state(s, "h1", NC_SCHED_HOST_NOT_READY), 0);
  static const char *const dead[] = {"h1"};
  for (size_t i = 0; i < n_h1; i++) {
    on_h1[i].avoid_hosts = dead;
    on_h1[i].navoid = 1;
  }
  int rcs[40];
  EXPECT_I64(nc_sched_place_batch(s, on_h1, n_h1, NC_SCHED_MOVE, NULL, rcs), (long long)n_h1);
  for (size_t i = 0; i < n_h1; i++) {
    const char *where;
    EXPECT_RC(nc_sched_vm_host(s, on_h1[i].name, &where), 0);
    EXPECT_TRUE(strcmp(where, "h1") != 0);
  }
  nc_sched_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hard_anti_affinity_host),
      cmocka_unit_test(test_hard_anti_affinity_rack),
      cmocka_unit_test(test_hard_anti_affinity_zone),
      cmocka_unit_test(test_soft_anti_affinity),
      cmocka_unit_test(test_soft_anti_affinity_zone),
      cmocka_unit_test(test_hard_affinity_host),
      cmocka_unit_test(test_hard_affinity_zone),
      cmocka_unit_test(test_soft_affinity),
      cmocka_unit_test(test_members_on_dead_hosts_do_not_count),
      cmocka_unit_test(test_two_groups),
      cmocka_unit_test(test_n1_passes),
      cmocka_unit_test(test_n1_reports_stranded),
      cmocka_unit_test(test_n1_honours_groups),
      cmocka_unit_test(test_n1_admission),
      cmocka_unit_test(test_n1_matches_a_real_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
