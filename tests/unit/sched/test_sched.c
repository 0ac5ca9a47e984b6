/* The placement engine (src/sched): every filter, both weight modes and
 * their multipliers, the tie-break, explain's content, moves, batches and
 * bad input. Group rules and the N+1 check are in test_sched_groups.c.
 * Everything is deterministic: fixed snapshots, no clock, no randomness
 * beyond a seeded generator. */
#include "sched_test.h"

/* ---- filters --------------------------------------------------------------- */

static void test_cpu_filter_with_ratio(void **state) {
  (void)state;
  struct nc_sched_config cfg;
  nc_sched_config_default(&cfg);
  cfg.cpu_ratio = 4.0;
  struct nc_sched *s = mk(&cfg);
  add_host(s, "h1", 2, 64, NULL, NULL); /* 2 CPUs x 4.0 = 8 vCPUs */
  struct nc_sched_request r = rq("a", 6, 1);
  EXPECT_PLACED(s, &r, "h1");
  r = rq("b", 2, 1);
  EXPECT_PLACED(s, &r, "h1");
  r = rq("c", 1, 1);
  json_t *ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -ENOSPC);
  EXPECT_STR(host_field(ex, "h1", "filter"), "cpu");
  EXPECT_STR(host_field(ex, "h1", "reason"), "cpu: needs 1 vCPU, 0.0 free of 8.0 (2 CPUs at ratio 4.0)");
  json_decref(ex);
  EXPECT_U64(nc_sched_vm_count(s), 2);
  nc_sched_free(s);

  /* ratio 1.0: the same host takes only 2. */
  cfg.cpu_ratio = 1.0;
  s = mk(&cfg);
  add_host(s, "h1", 2, 64, NULL, NULL);
  r = rq("a", 3, 1);
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -ENOSPC);
  r = rq("a", 2, 1);
  EXPECT_PLACED(s, &r, "h1");
  nc_sched_free(s);
}

static void test_memory_filter_with_ratio(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  struct nc_sched_host h = hst("h1", 16, 4 * GIB);
  h.mem_reserved_bytes = 5 * GIB / 2; /* 1.5 GiB free */
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  struct nc_sched_request r = rq("a", 1, 2);
  json_t *ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -ENOSPC);
  EXPECT_STR(host_field(ex, "h1", "filter"), "memory");
  EXPECT_STR(host_field(ex, "h1", "reason"), "memory: needs 2.0 GiB, 1.5 GiB free at ratio 1.0");
  json_decref(ex);
  r.mem_bytes = 3 * GIB / 2; /* exactly what is free */
  EXPECT_PLACED(s, &r, "h1");
  nc_sched_free(s);

  struct nc_sched_config cfg;
  nc_sched_config_default(&cfg);
  cfg.mem_ratio = 1.5; /* 4 GiB host holds 6 GiB */
  s = mk(&cfg);
  add_host(s, "h1", 16, 4, NULL, NULL);
  r = rq("a", 1, 5);
  EXPECT_PLACED(s, &r, "h1");
  r = rq("b", 1, 1);
  EXPECT_PLACED(s, &r, "h1");
  r = rq("c", 1, 1);
  ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -ENOSPC);
  EXPECT_STR(host_field(ex, "h1", "reason"), "memory: needs 1.0 GiB, 0 B free at ratio 1.5");
  json_decref(ex);
  nc_sched_free(s);
}

static void test_arch_filter(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  struct nc_sched_host h = hst("arm1", 8, 32 * GIB);
  h.arch = "aarch64";
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  h = hst("x1", 8, 32 * GIB);
  h.arch = "x86_64";
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  add_host(s, "noarch", 8, 32, NULL, NULL);

  struct nc_sched_request r = rq("a", 1, 1);
  r.arch = "x86_64";
  EXPECT_PLACED(s, &r, "x1");
  r = rq("b", 1, 1);
  r.arch = "aarch64";
  EXPECT_PLACED(s, &r, "arm1");
  r = rq("c", 1, 1);
  r.arch = "riscv64";
  json_t *ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -ENOSPC);
  EXPECT_STR(host_field(ex, "x1", "reason"), "arch: needs riscv64, host is x86_64");
  EXPECT_STR(host_field(ex, "noarch", "reason"), "arch: needs riscv64, host has no arch");
  EXPECT_I64(json_integer_value(json_object_get(json_object_get(ex, "rejected"), "arch")), 3);
  json_decref(ex);
  /* No arch asked: any host, including the one without an arch. */
  r = rq("d", 1, 1);
  r.avoid_hosts = (const char *[]){"arm1", "x1"};
  r.navoid = 2;
  EXPECT_PLACED(s, &r, "noarch");
  nc_sched_free(s);
}

static void test_label_filter(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  struct nc_sched_label l1[] = {{"gpu", "a100"}, {"sriov", NULL}};
  struct nc_sched_label l2[] = {{"gpu", "t4"}};
  struct nc_sched_host h = hst("g1", 8, 32 * GIB);
  h.labels = l1;
  h.nlabels = 2;
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  h = hst("g2", 8, 32 * GIB);
  h.labels = l2;
  h.nlabels = 1;
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  add_host(s, "plain", 8, 32, NULL, NULL);

  struct nc_sched_label want_t4[] = {{"gpu", "t4"}};
  struct nc_sched_request r = rq("a", 1, 1);
  r.labels = want_t4;
  r.nlabels = 1;
  EXPECT_PLACED(s, &r, "g2");

  struct nc_sched_label want_trait[] = {{"sriov", NULL}};
  r = rq("b", 1, 1);
  r.labels = want_trait;
  r.nlabels = 1;
  EXPECT_PLACED(s, &r, "g1");

  struct nc_sched_label want_any_gpu[] = {{"gpu", ""}};
  r = rq("c", 1, 1);
  r.labels = want_any_gpu;
  r.nlabels = 1;
  r.avoid_hosts = (const char *[]){"g1"};
  r.navoid = 1;
  EXPECT_PLACED(s, &r, "g2");

  struct nc_sched_label want_h100[] = {{"gpu", "h100"}, {"sriov", NULL}};
  r = rq("d", 1, 1);
  r.labels = want_h100;
  r.nlabels = 2;
  json_t *ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -ENOSPC);
  EXPECT_STR(host_field(ex, "g1", "reason"), "labels: needs gpu=h100, host has gpu=a100");
  EXPECT_STR(host_field(ex, "plain", "reason"), "labels: needs gpu=h100, host has no gpu label");
  json_decref(ex);

  struct nc_sched_label want_trait_only[] = {{"sriov", NULL}};
  r = rq("e", 1, 1);
  r.labels = want_trait_only;
  r.nlabels = 1;
  r.avoid_hosts = (const char *[]){"g1"};
  r.navoid = 1;
  ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -ENOSPC);
  EXPECT_STR(host_field(ex, "g2", "reason"), "labels: needs sriov, host does not have it");
  EXPECT_STR(host_field(ex, "g1", "filter"), "avoid");
  json_decref(ex);
  nc_sched_free(s);
}

static void test_state_filter(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  const char *names[] = {"a-cordoned", "b-draining", "c-notready", "d-ready"};
  enum nc_sched_host_state st[] = {NC_SCHED_HOST_CORDONED, NC_SCHED_HOST_DRAINING,
                                   NC_SCHED_HOST_NOT_READY, NC_SCHED_HOST_READY};
  for (int i = 0; i < 4; i++) {
    struct nc_sched_host h = hst(names[i], 8, 32 * GIB);
    h.state = st[i];
    EXPECT_RC(nc_sched_host_add(s, &h), 0);
  }
  struct nc_sched_request r = rq("a", 1, 1);
  json_t *ex = NULL;
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, &ex), 0);
  EXPECT_STR(ch.host, "d-ready");
  EXPECT_U64(ch.hosts_fit, 1);
  EXPECT_STR(host_field(ex, "a-cordoned", "reason"), "state: host is cordoned");
  EXPECT_STR(host_field(ex, "b-draining", "reason"), "state: host is draining");
  EXPECT_STR(host_field(ex, "c-notready", "reason"), "state: host is not ready");
  json_decref(ex);

  EXPECT_RC(nc_sched_host_set_state(s, "d-ready", NC_SCHED_HOST_CORDONED), 0);
  r = rq("b", 1, 1);
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -ENOSPC);
  EXPECT_RC(nc_sched_host_set_state(s, "a-cordoned", NC_SCHED_HOST_READY), 0);
  EXPECT_PLACED(s, &r, "a-cordoned");
  EXPECT_RC(nc_sched_host_set_state(s, "nope", NC_SCHED_HOST_READY), -ENOENT);
  nc_sched_free(s);
}

static void test_avoid_filter(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  add_host(s, "h1", 8, 32, NULL, NULL);
  add_host(s, "h2", 8, 32, NULL, NULL);
  struct nc_sched_request r = rq("a", 1, 1);
  EXPECT_PLACED(s, &r, "h1"); /* pack + tie-break: h1 */
  r = rq("b", 1, 1);
  r.avoid_hosts = (const char *[]){"h1", "not-a-host"}; /* unknown names are ignored */
  r.navoid = 2;
  json_t *ex = NULL;
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, &ex), 0);
  EXPECT_STR(ch.host, "h2");
  EXPECT_STR(host_field(ex, "h1", "reason"), "avoid: host is in the request's avoid list");
  json_decref(ex);
  /* The avoid list holds for that decision only. */
  r = rq("c", 1, 1);
  EXPECT_PLACED(s, &r, "h1");
  nc_sched_free(s);
}

/* ---- weights --------------------------------------------------------------- */

static void test_pack_and_spread(void **state) {
  (void)state;
  for (int mode = 0; mode < 2; mode++) {
    struct nc_sched_config cfg;
    nc_sched_config_default(&cfg);
    cfg.mode = mode ? NC_SCHED_SPREAD : NC_SCHED_PACK;
    struct nc_sched *s = mk(&cfg);
    add_host(s, "a", 8, 32, NULL, NULL);
    add_host(s, "b", 8, 32, NULL, NULL);
    add_host(s, "c", 8, 32, NULL, NULL);
    struct nc_sched_request seed = rq("seed", 4, 8);
    EXPECT_RC(nc_sched_vm_add(s, &seed, "b"), 0);
    struct nc_sched_request r = rq("x", 2, 4);
    /* pack: the used host b; spread: the emptiest, a (a and c tie; name). */
    EXPECT_PLACED(s, &r, mode ? "a" : "b");
    r = rq("y", 2, 4);
    EXPECT_PLACED(s, &r, mode ? "c" : "b");
    r = rq("z", 2, 4);
    EXPECT_PLACED(s, &r, mode ? "a" : "b");
    nc_sched_free(s);
  }
}

static void test_weight_multipliers(void **state) {
  (void)state;
  /* Host a is fuller in CPU, host b fuller in memory. */
  for (int which = 0; which < 2; which++) {
    struct nc_sched_config cfg;
    nc_sched_config_default(&cfg);
    cfg.cpu_weight = which == 0 ? 1.0 : 0.0;
    cfg.mem_weight = which == 0 ? 0.0 : 1.0;
    struct nc_sched *s = mk(&cfg);
    add_host(s, "a", 4, 64, NULL, NULL);
    add_host(s, "b", 4, 64, NULL, NULL);
    struct nc_sched_request big_cpu = rq("cpu-heavy", 8, 1);
    struct nc_sched_request big_mem = rq("mem-heavy", 1, 32);
    EXPECT_RC(nc_sched_vm_add(s, &big_cpu, "a"), 0);
    EXPECT_RC(nc_sched_vm_add(s, &big_mem, "b"), 0);
    struct nc_sched_request r = rq("x", 1, 1);
    json_t *ex = NULL;
    struct nc_sched_choice ch;
    EXPECT_RC(nc_sched_place(s, &r, NC_SCHED_DRY_RUN, &ch, &ex), 0);
    EXPECT_STR(ch.host, which == 0 ? "a" : "b");
    /* cpu on a: (8+1)/16 = 0.5625 times 1.0; memory 0 when off. */
    json_t *wa = json_object_get(host_entry(ex, "a"), "weights");
    if (which == 0) {
      EXPECT_DBL(json_real_value(json_object_get(wa, "cpu")), 0.5625);
      EXPECT_DBL(json_real_value(json_object_get(wa, "memory")), 0.0);
    } else {
      EXPECT_DBL(json_real_value(json_object_get(wa, "cpu")), 0.0);
      EXPECT_DBL(json_real_value(json_object_get(wa, "memory")), 2.0 / 64.0);
    }
    json_decref(ex);
    EXPECT_U64(nc_sched_vm_count(s), 2); /* dry run committed nothing */
    nc_sched_free(s);
  }

  /* A doubled multiplier doubles the contribution. */
  struct nc_sched_config cfg;
  nc_sched_config_default(&cfg);
  cfg.mem_weight = 2.0;
  struct nc_sched *s = mk(&cfg);
  add_host(s, "a", 4, 64, NULL, NULL);
  struct nc_sched_request r = rq("x", 4, 16);
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, NULL), 0);
  EXPECT_DBL(ch.score, 4.0 / 16.0 + 2.0 * 16.0 / 64.0);
  nc_sched_free(s);
}

/* Equal scores go to the first host name, whatever the insertion order. */
static void test_tie_break_by_name(void **state) {
  (void)state;
  const char *orders[][4] = {{"h-c", "h-a", "h-d", "h-b"}, {"h-d", "h-c", "h-b", "h-a"}};
  for (int o = 0; o < 2; o++) {
    for (int mode = 0; mode < 2; mode++) {
      struct nc_sched_config cfg;
      nc_sched_config_default(&cfg);
      cfg.mode = mode ? NC_SCHED_SPREAD : NC_SCHED_PACK;
      struct nc_sched *s = mk(&cfg);
      for (int i = 0; i < 4; i++)
        add_host(s, orders[o][i], 8, 32, NULL, NULL);
      struct nc_sched_request r = rq("x", 2, 2);
      EXPECT_PLACED(s, &r, "h-a");
      if (mode) { /* spread: the next equal ones in name order */
        r = rq("y", 2, 2);
        EXPECT_PLACED(s, &r, "h-b");
        r = rq("z", 2, 2);
        EXPECT_PLACED(s, &r, "h-c");
      }
      nc_sched_free(s);
    }
  }
}

/* The same requests on the same hosts, inserted in another order, give the
 * same decisions. */
static void test_determinism_across_insert_order(void **state) {
  (void)state;
  enum { H = 24, V = 300 };
  char hn[H][16];
  for (int i = 0; i < H; i++)
    snprintf(hn[i], sizeof hn[i], "host-%02d", i);
  char results[2][V][NC_SCHED_NAME_MAX + 1];
  for (int pass = 0; pass < 2; pass++) {
    struct nc_sched_config cfg;
    nc_sched_config_default(&cfg);
    struct nc_sched *s = mk(&cfg);
    struct nc_sched_group g = {"spread", NC_SCHED_ANTI_AFFINITY, NC_SCHED_SCOPE_RACK, false};
    EXPECT_RC(nc_sched_group_add(s, &g), 0);
    for (int k = 0; k < H; k++) {
      int i = pass ? H - 1 - k : k;
      char zone[8], rack[8];
      snprintf(zone, sizeof zone, "z%d", i % 3);
      snprintf(rack, sizeof rack, "r%d", i % 2);
      add_host(s, hn[i], 16, 64, zone, rack);
    }
    uint64_t rng = 42;
    for (int v = 0; v < V; v++) {
      char name[32];
      snprintf(name, sizeof name, "vm-%d", v);
      struct nc_sched_request r = rq(name, 1 + (uint32_t)(splitmix(&rng) % 4),
                                     1 + splitmix(&rng) % 8);
      static const char *const spread[] = {"spread"};
      if (v % 3 == 0) {
        r.groups = spread;
        r.ngroups = 1;
      }
      struct nc_sched_choice ch;
      int rc = nc_sched_place(s, &r, 0, &ch, NULL);
      if (rc != 0 && rc != -ENOSPC)
        fail_msg("vm-%d: %s", v, nc_strerror(rc));
      snprintf(results[pass][v], sizeof results[pass][v], "%s", ch.host);
    }
    nc_sched_free(s);
  }
  for (int v = 0; v < V; v++)
    if (strcmp(results[0][v], results[1][v]) != 0)
      fail_msg("vm-%d went to %s in one order and %s in the other", v, results[0][v],
               results[1][v]);
}

/* ---- latency and geography -------------------------------------------------- */

static void test_latency_filter(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  struct nc_sched_latency near[] = {{"fra", 2000}, {"ams", 9000}};
  struct nc_sched_latency far[] = {{"fra", 35000}};
  struct nc_sched_host h = hst("far", 8, 32 * GIB);
  h.latencies = far;
  h.nlatencies = 1;
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  h = hst("near", 8, 32 * GIB);
  h.latencies = near;
  h.nlatencies = 2;
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  add_host(s, "unmeasured", 8, 32, NULL, NULL);
  /* near is the only one within 20 ms, and it is full: nothing fits. */
  struct nc_sched_request fill = rq("fill", 1, 32);
  EXPECT_RC(nc_sched_vm_add(s, &fill, "near"), 0);
  struct nc_sched_request r = rq("a", 1, 1);
  r.latency_site = "fra";
  r.max_latency_us = 20000;
  json_t *ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -ENOSPC);
  EXPECT_STR(host_field(ex, "far", "reason"), "latency: 35.0 ms to site \"fra\", max 20.0 ms");
  EXPECT_STR(host_field(ex, "unmeasured", "reason"),
             "latency: no measurement to site \"fra\" (max 20.0 ms)");
  EXPECT_STR(host_field(ex, "near", "filter"), "memory");
  json_decref(ex);
  EXPECT_RC(nc_sched_vm_remove(s, "fill"), 0);
  EXPECT_PLACED(s, &r, "near");
  /* A 40 ms bound admits far, still not the unmeasured host. */
  r = rq("b", 1, 1);
  r.latency_site = "fra";
  r.max_latency_us = 40000;
  r.avoid_hosts = (const char *[]){"near"};
  r.navoid = 1;
  EXPECT_PLACED(s, &r, "far");
  nc_sched_free(s);
}

static void test_latency_weight(void **state) {
  (void)state;
  struct nc_sched_config cfg;
  nc_sched_config_default(&cfg);
  cfg.mode = NC_SCHED_SPREAD;
  struct nc_sched *s = mk(&cfg);
  struct nc_sched_latency l_a[] = {{"lon", 30000}};
  struct nc_sched_latency l_b[] = {{"lon", 5000}};
  struct nc_sched_host h = hst("a", 8, 32 * GIB);
  h.latencies = l_a;
  h.nlatencies = 1;
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  h = hst("b", 8, 32 * GIB);
  h.latencies = l_b;
  h.nlatencies = 1;
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  add_host(s, "c", 8, 32, NULL, NULL);
  struct nc_sched_request r = rq("x", 1, 1);
  r.latency_site = "lon";
  json_t *ex = NULL;
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, &ex), 0);
  EXPECT_STR(ch.host, "b"); /* lowest rtt wins among equals */
  /* ref = 100 ms: b gets 1 - 5/100, a 1 - 30/100, c (unmeasured) 0. */
  EXPECT_DBL(json_real_value(json_object_get(json_object_get(host_entry(ex, "b"), "weights"),
                                             "latency")), 0.95);
  EXPECT_DBL(json_real_value(json_object_get(json_object_get(host_entry(ex, "a"), "weights"),
                                             "latency")), 0.70);
  EXPECT_DBL(json_real_value(json_object_get(json_object_get(host_entry(ex, "c"), "weights"),
                                             "latency")), 0.0);
  json_decref(ex);
  /* An unknown site: no host has a measurement; nothing weighs, nothing
   * is rejected (no bound). */
  r = rq("y", 1, 1);
  r.latency_site = "tokyo";
  EXPECT_PLACED(s, &r, "a");
  nc_sched_free(s);
}

static void test_zone_and_region_preference(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  struct nc_sched_host h = hst("a1", 8, 32 * GIB);
  h.zone = "eu-1a";
  h.region = "eu";
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  h = hst("b1", 8, 32 * GIB);
  h.zone = "eu-1b";
  h.region = "eu";
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  h = hst("c1", 8, 32 * GIB);
  h.zone = "us-1a";
  h.region = "us";
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  /* Pack prefers a1 (fuller); the zone preference outweighs that. */
  struct nc_sched_request fill = rq("fill", 8, 16);
  EXPECT_RC(nc_sched_vm_add(s, &fill, "a1"), 0);
  struct nc_sched_request r = rq("x", 1, 1);
  r.prefer_zone = "eu-1b";
  EXPECT_PLACED(s, &r, "b1");
  r = rq("y", 1, 1);
  r.prefer_region = "us";
  json_t *ex = NULL;
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, &ex), 0);
  EXPECT_STR(ch.host, "c1");
  EXPECT_DBL(json_real_value(json_object_get(json_object_get(host_entry(ex, "c1"), "weights"),
                                             "region")), 2.0);
  EXPECT_TRUE(json_object_get(json_object_get(host_entry(ex, "c1"), "weights"), "zone") == NULL);
  json_decref(ex);
  /* A zone no host is in: a preference, so the placement still succeeds. */
  r = rq("z", 1, 1);
  r.prefer_zone = "ap-1a";
  EXPECT_PLACED(s, &r, "a1");
  nc_sched_free(s);
}

/* ---- explain --------------------------------------------------------------- */

static void test_explain_content(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  add_host(s, "h1", 8, 4, NULL, NULL);
  add_host(s, "h2", 8, 16, NULL, NULL);
  add_host(s, "h3", 8, 16, NULL, NULL);
  struct nc_sched_host h = hst("h0", 8, 64 * GIB);
  h.state = NC_SCHED_HOST_CORDONED;
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  struct nc_sched_request fill = rq("fill", 2, 8);
  EXPECT_RC(nc_sched_vm_add(s, &fill, "h3"), 0);

  struct nc_sched_request r = rq("web-1", 2, 6);
  json_t *ex = NULL;
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, &ex), 0);
  EXPECT_STR(ch.host, "h3");
  EXPECT_STR(json_string_value(json_object_get(ex, "vm")), "web-1");
  EXPECT_STR(json_string_value(json_object_get(ex, "mode")), "pack");
  EXPECT_TRUE(json_is_true(json_object_get(ex, "placed")));
  EXPECT_STR(json_string_value(json_object_get(ex, "host")), "h3");
  EXPECT_I64(json_integer_value(json_object_get(ex, "hosts_fit")), 2);
  json_t *rej = json_object_get(ex, "rejected");
  EXPECT_I64(json_integer_value(json_object_get(rej, "memory")), 1);
  EXPECT_I64(json_integer_value(json_object_get(rej, "state")), 1);
  EXPECT_U64(json_object_size(rej), 2);
  /* Every host appears once: fitting ones first, best first, then the
   * rejected ones by name. */
  json_t *hosts = json_object_get(ex, "hosts");
  EXPECT_U64(json_array_size(hosts), 4);
  const char *want_order[] = {"h3", "h2", "h0", "h1"};
  for (size_t i = 0; i < 4; i++)
    EXPECT_STR(json_string_value(json_object_get(json_array_get(hosts, i), "host")),
               want_order[i]);
  json_t *e3 = host_entry(ex, "h3");
  EXPECT_TRUE(json_is_true(json_object_get(e3, "fit")));
  EXPECT_I64(json_integer_value(json_object_get(e3, "rank")), 1);
  EXPECT_I64(json_integer_value(json_object_get(host_entry(ex, "h2"), "rank")), 2);
  /* Weights add up to the score, and the score is the choice's. */
  json_t *w = json_object_get(e3, "weights");
  EXPECT_DBL(json_real_value(json_object_get(w, "cpu")), 4.0 / 32.0);
  EXPECT_DBL(json_real_value(json_object_get(w, "memory")), 14.0 / 16.0);
  double sum = 0;
  const char *k;
  json_t *v;
  json_object_foreach(w, k, v) sum += json_real_value(v);
  EXPECT_DBL(sum, json_real_value(json_object_get(e3, "score")));
  EXPECT_DBL(ch.score, json_real_value(json_object_get(e3, "score")));
  EXPECT_U64(json_object_size(w), 2); /* only the weights that apply */
  EXPECT_TRUE(json_is_false(json_object_get(host_entry(ex, "h1"), "fit")));
  EXPECT_STR(host_field(ex, "h1", "reason"), "memory: needs 6.0 GiB, 4.0 GiB free at ratio 1.0");
  EXPECT_TRUE(json_object_get(host_entry(ex, "h1"), "score") == NULL);
  /* It serialises as-is. */
  char *text = json_dumps(ex, JSON_COMPACT);
  EXPECT_TRUE(text != NULL);
  EXPECT_CONTAINS(text, "\"filter\":\"state\"");
  free(text);
  json_decref(ex);

  /* On -ENOSPC the explanation is still there. */
  r = rq("huge", 2, 100);
  ex = NULL;
  EXPECT_RC(nc_sched_place(s, &r, 0, &ch, &ex), -ENOSPC);
  EXPECT_STR(ch.host, "");
  EXPECT_TRUE(ex != NULL);
  EXPECT_TRUE(json_is_false(json_object_get(ex, "placed")));
  EXPECT_TRUE(json_is_null(json_object_get(ex, "host")));
  EXPECT_I64(json_integer_value(json_object_get(ex, "hosts_fit")), 0);
  EXPECT_I64(json_integer_value(json_object_get(json_object_get(ex, "rejected"), "memory")), 3);
  json_decref(ex);

  /* On a bad request it is NULL. */
  r = rq("", 1, 1);
  ex = (json_t *)1;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, &ex), -EINVAL);
  EXPECT_TRUE(ex == NULL);
  nc_sched_free(s);
}

/* ---- moves, dry runs, batches --------------------------------------------- */

static void test_ha_restart_move(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  add_host(s, "h1", 8, 16, NULL, NULL);
  add_host(s, "h2", 8, 16, NULL, NULL);
  add_host(s, "h3", 8, 16, NULL, NULL);
  struct nc_sched_request vm = rq("db", 4, 12);
  vm.ha = true;
  EXPECT_RC(nc_sched_vm_add(s, &vm, "h1"), 0);
  struct nc_sched_request other = rq("web", 2, 8);
  EXPECT_RC(nc_sched_vm_add(s, &other, "h3"), 0);
  /* h1 died. The VM is still recorded there; MOVE re-places it. */
  EXPECT_RC(nc_sched_host_set_state(s, "h1", NC_SCHED_HOST_NOT_READY), 0);
  vm.avoid_hosts = (const char *[]){"h1"};
  vm.navoid = 1;
  EXPECT_RC(nc_sched_place(s, &vm, 0, NULL, NULL), -EEXIST);
  struct nc_sched_choice ch;
  EXPECT_RC(nc_sched_place(s, &vm, NC_SCHED_MOVE, &ch, NULL), 0);
  EXPECT_STR(ch.host, "h2"); /* h3 has 8 GiB left, not 12 */
  const char *where;
  EXPECT_RC(nc_sched_vm_host(s, "db", &where), 0);
  EXPECT_STR(where, "h2");
  EXPECT_U64(nc_sched_vm_count(s), 2);
  /* Its memory left h1: once h1 is back it takes 16 GiB again. */
  EXPECT_RC(nc_sched_host_set_state(s, "h1", NC_SCHED_HOST_READY), 0);
  struct nc_sched_request big = rq("big", 1, 16);
  EXPECT_PLACED(s, &big, "h1");
  /* MOVE of an unknown VM. */
  struct nc_sched_request ghost = rq("ghost", 1, 1);
  EXPECT_RC(nc_sched_place(s, &ghost, NC_SCHED_MOVE, NULL, NULL), -ENOENT);
  /* A MOVE that finds nothing leaves the VM where it was. */
  struct nc_sched_request db2 = rq("db", 4, 12);
  db2.avoid_hosts = (const char *[]){"h2"};
  db2.navoid = 1;
  EXPECT_RC(nc_sched_place(s, &db2, NC_SCHED_MOVE, NULL, NULL), -ENOSPC);
  EXPECT_RC(nc_sched_vm_host(s, "db", &where), 0);
  EXPECT_STR(where, "h2");
  nc_sched_free(s);
}

static void test_dry_run(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  add_host(s, "h1", 8, 16, NULL, NULL);
  struct nc_sched_request r = rq("a", 4, 16);
  struct nc_sched_choice ch;
  for (int i = 0; i < 3; i++) {
    EXPECT_RC(nc_sched_place(s, &r, NC_SCHED_DRY_RUN, &ch, NULL), 0);
    EXPECT_STR(ch.host, "h1");
  }
  EXPECT_U64(nc_sched_vm_count(s), 0);
  const char *where;
  EXPECT_RC(nc_sched_vm_host(s, "a", &where), -ENOENT);
  EXPECT_PLACED(s, &r, "h1");
  EXPECT_U64(nc_sched_vm_count(s), 1);
  nc_sched_free(s);
}

/* 4,4,6,6 GiB on two 10 GiB hosts: in arrival order pack fails the last
 * one; the batch (largest first) fits all four. */
static void test_batch_largest_first(void **state) {
  (void)state;
  uint64_t sizes[] = {4, 4, 6, 6};
  const char *names[] = {"v1", "v2", "v3", "v4"};
  struct nc_sched_request reqs[4];
  for (int i = 0; i < 4; i++)
    reqs[i] = rq(names[i], 1, sizes[i]);

  struct nc_sched *s = mk(NULL);
  add_host(s, "a", 8, 10, NULL, NULL);
  add_host(s, "b", 8, 10, NULL, NULL);
  int fails = 0;
  for (int i = 0; i < 4; i++)
    fails += nc_sched_place(s, &reqs[i], 0, NULL, NULL) == -ENOSPC;
  EXPECT_I64(fails, 1);
  nc_sched_free(s);

  s = mk(NULL);
  add_host(s, "a", 8, 10, NULL, NULL);
  add_host(s, "b", 8, 10, NULL, NULL);
  int rcs[4];
  struct nc_sched_choice outs[4];
  EXPECT_I64(nc_sched_place_batch(s, reqs, 4, 0, outs, rcs), 4);
  for (int i = 0; i < 4; i++)
    EXPECT_RC(rcs[i], 0);
  /* Results are in the caller's order: v3 (first 6) went first, to a. */
  EXPECT_STR(outs[2].host, "a");
  EXPECT_STR(outs[3].host, "b");
  EXPECT_STR(outs[0].host, "a");
  EXPECT_STR(outs[1].host, "b");
  EXPECT_U64(nc_sched_vm_count(s), 4);
  /* Per-request errors do not stop the batch. */
  struct nc_sched_request more[2] = {rq("v1", 1, 1), rq("new", 1, 1)};
  EXPECT_I64(nc_sched_place_batch(s, more, 2, 0, NULL, rcs), 0);
  EXPECT_RC(rcs[0], -EEXIST);
  EXPECT_RC(rcs[1], -ENOSPC);
  EXPECT_I64(nc_sched_place_batch(s, NULL, 0, 0, NULL, NULL), 0);
  EXPECT_I64(nc_sched_place_batch(s, more, 2, 0, NULL, NULL), -EINVAL);
  nc_sched_free(s);
}

/* ---- bad input ------------------------------------------------------------- */

static void test_bad_config(void **state) {
  (void)state;
  struct nc_sched *s = (struct nc_sched *)1;
  struct nc_sched_config cfg;
  double bad_ratio[] = {0.0, -1.0, NAN, INFINITY, 65.0};
  for (size_t i = 0; i < sizeof bad_ratio / sizeof bad_ratio[0]; i++) {
    nc_sched_config_default(&cfg);
    cfg.cpu_ratio = bad_ratio[i];
    EXPECT_RC(nc_sched_new(&cfg, &s), -EINVAL);
    EXPECT_TRUE(s == NULL);
    nc_sched_config_default(&cfg);
    cfg.mem_ratio = bad_ratio[i];
    EXPECT_RC(nc_sched_new(&cfg, &s), -EINVAL);
  }
  nc_sched_config_default(&cfg);
  cfg.zone_weight = -1;
  EXPECT_RC(nc_sched_new(&cfg, &s), -EINVAL);
  nc_sched_config_default(&cfg);
  cfg.latency_weight = NAN;
  EXPECT_RC(nc_sched_new(&cfg, &s), -EINVAL);
  nc_sched_config_default(&cfg);
  cfg.mode = (enum nc_sched_mode)7;
  EXPECT_RC(nc_sched_new(&cfg, &s), -EINVAL);
  nc_sched_config_default(&cfg);
  cfg.latency_ref_us = 0;
  EXPECT_RC(nc_sched_new(&cfg, &s), -EINVAL);
  EXPECT_RC(nc_sched_new(NULL, NULL), -EINVAL);
  nc_sched_free(NULL);
}

static void test_bad_hosts(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  char long_name[NC_SCHED_NAME_MAX + 2];
  memset(long_name, 'x', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  struct nc_sched_host h = hst(long_name, 8, GIB);
  EXPECT_RC(nc_sched_host_add(s, &h), NC_E_TOOBIG);
  long_name[NC_SCHED_NAME_MAX] = '\0'; /* exactly the cap: fine */
  h = hst(long_name, 8, GIB);
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  h = hst("", 8, GIB);
  EXPECT_RC(nc_sched_host_add(s, &h), -EINVAL);
  h = hst("bad\nname", 8, GIB);
  EXPECT_RC(nc_sched_host_add(s, &h), -EINVAL);
  h = hst(NULL, 8, GIB);
  EXPECT_RC(nc_sched_host_add(s, &h), -EINVAL);
  h = hst("h", 0, GIB);
  EXPECT_RC(nc_sched_host_add(s, &h), -EINVAL);
  h = hst("h", 8, 0);
  EXPECT_RC(nc_sched_host_add(s, &h), -EINVAL);
  h = hst("h", NC_SCHED_VCPUS_MAX + 1, GIB);
  EXPECT_RC(nc_sched_host_add(s, &h), NC_E_TOOBIG);
  h = hst("h", 8, NC_SCHED_MEM_MAX + 1);
  EXPECT_RC(nc_sched_host_add(s, &h), NC_E_TOOBIG);
  h = hst("h", 8, GIB);
  h.state = (enum nc_sched_host_state)9;
  EXPECT_RC(nc_sched_host_add(s, &h), -EINVAL);
  h = hst("h", 8, GIB);
  h.nlabels = 1; /* labels NULL */
  EXPECT_RC(nc_sched_host_add(s, &h), -EINVAL);
  struct nc_sched_label many[NC_SCHED_HOST_LABELS_MAX + 1];
  char keys[NC_SCHED_HOST_LABELS_MAX + 1][8];
  for (int i = 0; i <= NC_SCHED_HOST_LABELS_MAX; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    many[i] = (struct nc_sched_label){keys[i], "v"};
  }
  h.labels = many;
  h.nlabels = NC_SCHED_HOST_LABELS_MAX + 1;
  EXPECT_RC(nc_sched_host_add(s, &h), NC_E_TOOBIG);
  struct nc_sched_label dup[] = {{"k", "1"}, {"k", "2"}};
  h.labels = dup;
  h.nlabels = 2;
  EXPECT_RC(nc_sched_host_add(s, &h), -EINVAL);
  struct nc_sched_latency dupl[] = {{"s", 1}, {"s", 2}};
  h = hst("h", 8, GIB);
  h.latencies = dupl;
  h.nlatencies = 2;
  EXPECT_RC(nc_sched_host_add(s, &h), -EINVAL);
  h.nlatencies = NC_SCHED_HOST_SITES_MAX + 1;
  EXPECT_RC(nc_sched_host_add(s, &h), NC_E_TOOBIG);
  EXPECT_U64(nc_sched_host_count(s), 1);
  h = hst("h", 8, GIB);
  EXPECT_RC(nc_sched_host_add(s, &h), 0);
  EXPECT_RC(nc_sched_host_add(s, &h), -EEXIST);
  EXPECT_RC(nc_sched_host_add(NULL, &h), -EINVAL);
  EXPECT_RC(nc_sched_host_add(s, NULL), -EINVAL);
  EXPECT_U64(nc_sched_host_count(s), 2);
  nc_sched_free(s);
}

static void test_host_count_cap(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  char name[32];
  for (int i = 0; i < NC_SCHED_HOSTS_MAX; i++) {
    snprintf(name, sizeof name, "h%05d", i);
    struct nc_sched_host h = hst(name, 8, GIB);
    int rc = nc_sched_host_add(s, &h);
    if (rc != 0)
      fail_msg("host %d: %s", i, nc_strerror(rc));
  }
  struct nc_sched_host h = hst("one-too-many", 8, GIB);
  EXPECT_RC(nc_sched_host_add(s, &h), NC_E_TOOBIG);
  EXPECT_U64(nc_sched_host_count(s), NC_SCHED_HOSTS_MAX);
  struct nc_sched_request r = rq("a", 1, 1);
  EXPECT_PLACED(s, &r, "h00000");
  nc_sched_free(s);
}

static void test_bad_requests(void **state) {
  (void)state;
  struct nc_sched *s = mk(NULL);
  add_host(s, "h1", 8, 16, NULL, NULL);
  struct nc_sched_group g = {"grp", NC_SCHED_ANTI_AFFINITY, NC_SCHED_SCOPE_HOST, true};
  EXPECT_RC(nc_sched_group_add(s, &g), 0);
  EXPECT_RC(nc_sched_group_add(s, &g), -EEXIST);
  struct nc_sched_group bad_g = {"g2", (enum nc_sched_group_policy)5, NC_SCHED_SCOPE_HOST, true};
  EXPECT_RC(nc_sched_group_add(s, &bad_g), -EINVAL);
  bad_g = (struct nc_sched_group){"g2", NC_SCHED_AFFINITY, (enum nc_sched_scope)5, true};
  EXPECT_RC(nc_sched_group_add(s, &bad_g), -EINVAL);

  struct nc_sched_request r = rq("a", 0, 1);
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -EINVAL);
  r = rq("a", 1, 0);
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -EINVAL);
  r = rq("a", NC_SCHED_VCPUS_MAX + 1, 1);
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), NC_E_TOOBIG);
  r = rq("a", 1, 1);
  r.mem_bytes = NC_SCHED_MEM_MAX + 1;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), NC_E_TOOBIG);
  r = rq("a", 1, 1);
  r.groups = (const char *[]){"nope"};
  r.ngroups = 1;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -ENOENT);
  r.groups = (const char *[]){"grp", "grp"};
  r.ngroups = 2;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -EINVAL);
  r.ngroups = NC_SCHED_REQ_GROUPS_MAX + 1;
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), NC_E_TOOBIG);
  r = rq("a", 1, 1);
  r.max_latency_us = 5000; /* no site */
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -EINVAL);
  r = rq("a", 1, 1);
  r.navoid = NC_SCHED_AVOID_MAX + 1;
  r.avoid_hosts = (const char *[]){"h1"};
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), NC_E_TOOBIG);
  r.navoid = 1;
  r.avoid_hosts = (const char *[]){NULL};
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -EINVAL);
  r = rq("a", 1, 1);
  r.nlabels = 1; /* labels NULL */
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -EINVAL);
  r = rq("a", 1, 1);
  r.arch = "x\x01";
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -EINVAL);
  r = rq("a", 1, 1);
  EXPECT_RC(nc_sched_place(s, &r, 0x80, NULL, NULL), -EINVAL);
  EXPECT_RC(nc_sched_place(NULL, &r, 0, NULL, NULL), -EINVAL);
  EXPECT_RC(nc_sched_place(s, NULL, 0, NULL, NULL), -EINVAL);
  EXPECT_U64(nc_sched_vm_count(s), 0);

  /* vm_add */
  EXPECT_RC(nc_sched_vm_add(s, &r, "nohost"), -ENOENT);
  EXPECT_RC(nc_sched_vm_add(s, &r, NULL), -EINVAL);
  EXPECT_RC(nc_sched_vm_add(s, &r, "h1"), 0);
  EXPECT_RC(nc_sched_vm_add(s, &r, "h1"), -EEXIST);
  EXPECT_RC(nc_sched_place(s, &r, 0, NULL, NULL), -EEXIST);
  EXPECT_RC(nc_sched_vm_remove(s, "a"), 0);
  EXPECT_RC(nc_sched_vm_remove(s, "a"), -ENOENT);
  EXPECT_RC(nc_sched_vm_remove(s, NULL), -EINVAL);
  EXPECT_U64(nc_sched_vm_count(s), 0);
  /* A removed name can be used again, and the slot is reused cleanly. */
  EXPECT_PLACED(s, &r, "h1");

  /* VMs added as facts may overcommit a host (that is what happened),
   * which then takes nothing new. */
  struct nc_sched_request over = rq("over", 64, 64);
  EXPECT_RC(nc_sched_vm_add(s, &over, "h1"), 0);
  struct nc_sched_request small = rq("small", 1, 1);
  EXPECT_RC(nc_sched_place(s, &small, 0, NULL, NULL), -ENOSPC);

  struct nc_sched_n1 n1;
  EXPECT_RC(nc_sched_n1_check(s, NULL), -EINVAL);
  EXPECT_RC(nc_sched_n1_check(NULL, &n1), -EINVAL);
  nc_sched_n1_free(NULL);
  nc_sched_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cpu_filter_with_ratio),
      cmocka_unit_test(test_memory_filter_with_ratio),
      cmocka_unit_test(test_arch_filter),
      cmocka_unit_test(test_label_filter),
      cmocka_unit_test(test_state_filter),
      cmocka_unit_test(test_avoid_filter),
      cmocka_unit_test(test_pack_and_spread),
      cmocka_unit_test(test_weight_multipliers),
      cmocka_unit_test(test_tie_break_by_name),
      cmocka_unit_test(test_determinism_across_insert_order),
      cmocka_unit_test(test_latency_filter),
      cmocka_unit_test(test_latency_weight),
      cmocka_unit_test(test_zone_and_region_preference),
      cmocka_unit_test(test_explain_content),
      cmocka_unit_test(test_ha_restart_move),
      cmocka_unit_test(test_dry_run),
      cmocka_unit_test(test_batch_largest_first),
      cmocka_unit_test(test_bad_config),
      cmocka_unit_test(test_bad_hosts),
      cmocka_unit_test(test_host_count_cap),
      cmocka_unit_test(test_bad_requests),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
