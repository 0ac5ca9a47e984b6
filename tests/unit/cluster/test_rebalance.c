/* The rebalancer's decision (src/cluster/rebalance.h): deterministic, on
 * hand-built clusters, with time passed in. */
#include "nc_test.h"

#include "cluster/rebalance.h"

static struct nc_rb_config cfg(void) {
  struct nc_rb_config c;
  nc_rb_config_default(&c);
  c.sustain_ticks = 3;
  c.cooldown_ms = 1000;
  return c;
}

static void node(struct nc_rb_node *n, const char *name, double used_mem) {
  *n = (struct nc_rb_node){.name = name, .cpu_cap = 64, .mem_cap = 100, .cpu_used = 1,
                           .mem_used = used_mem, .eligible = true};
}

static void test_balanced_never_moves(void **state) {
  (void)state;
  struct nc_rb_config c = cfg();
  struct nc_rb_state st = {0};
  struct nc_rb_node n[3];
  node(&n[0], "a", 40);
  node(&n[1], "b", 30);
  node(&n[2], "c", 35);
  struct nc_rb_vm v[] = {{"x", 0, 1, 40, true}};
  size_t vm, to;
  for (int t = 0; t < 100; t++)
    EXPECT_TRUE(!nc_rb_decide(&c, &st, t * 500, n, 3, v, 1, &vm, &to));
  EXPECT_I64(st.over_ticks, 0);
}

static void test_moves_after_sustain_to_least_loaded(void **state) {
  (void)state;
  struct nc_rb_config c = cfg();
  struct nc_rb_state st = {0};
  struct nc_rb_node n[3];
  node(&n[0], "a", 80);
  node(&n[1], "b", 10);
  node(&n[2], "c", 30);
  /* a holds three VMs; moving the 30 one to b gives a=50 b=40 c=30: 0.2 */
  struct nc_rb_vm v[] = {{"big", 0, 1, 50, true}, {"mid", 0, 1, 30, true},
                         {"tiny", 0, 1, 0, true}, {"onc", 2, 1, 30, true}};
  size_t vm = 99, to = 99;
  EXPECT_TRUE(!nc_rb_decide(&c, &st, 0, n, 3, v, 4, &vm, &to));
  EXPECT_TRUE(!nc_rb_decide(&c, &st, 500, n, 3, v, 4, &vm, &to));
  EXPECT_TRUE(nc_rb_decide(&c, &st, 1000, n, 3, v, 4, &vm, &to));
  EXPECT_STR(v[vm].name, "mid");
  EXPECT_STR(n[to].name, "b");
}

static void test_cooldown(void **state) {
  (void)state;
  struct nc_rb_config c = cfg();
  struct nc_rb_state st = {0};
  struct nc_rb_node n[2];
  node(&n[0], "a", 90);
  node(&n[1], "b", 0);
  struct nc_rb_vm v[] = {{"p", 0, 1, 30, true}, {"q", 0, 1, 30, true}, {"r", 0, 1, 30, true}};
  size_t vm, to;
  int64_t t = 0;
  while (!nc_rb_decide(&c, &st, t, n, 2, v, 3, &vm, &to))
    t += 500;
  nc_rb_moved(&c, &st, t);
  n[0].mem_used -= v[vm].mem;
  n[1].mem_used += v[vm].mem;
  v[vm].node = 1; /* a=60 b=30: still 0.3 over the threshold */
  int64_t moved_at = t;
  for (t += 500; t < moved_at + c.cooldown_ms; t += 500)
    EXPECT_TRUE(!nc_rb_decide(&c, &st, t, n, 2, v, 3, &vm, &to));
  /* the sustain period counted meanwhile; after the cooldown it may act,
   * but a->b of 30 gives a=30 b=60: no better, so it stays */
  EXPECT_TRUE(!nc_rb_decide(&c, &st, t + 5000, n, 2, v, 3, &vm, &to));
}

static void test_swap_is_not_a_move(void **state) {
  (void)state;
  struct nc_rb_config c = cfg();
  struct nc_rb_state st = {0};
  struct nc_rb_node n[2];
  node(&n[0], "a", 60);
  node(&n[1], "b", 20);
  struct nc_rb_vm v[] = {{"whale", 0, 1, 60, true}}; /* a=0 b=80 after: worse */
  size_t vm, to;
  for (int t = 0; t < 50; t++)
    EXPECT_TRUE(!nc_rb_decide(&c, &st, t * 500, n, 2, v, 1, &vm, &to));
}

static void test_ineligible_and_unmovable(void **state) {
  (void)state;
  struct nc_rb_config c = cfg();
  struct nc_rb_state st = {0};
  struct nc_rb_node n[3];
  node(&n[0], "a", 90);
  node(&n[1], "b", 0);
  n[1].eligible = false; /* cordoned: neither source nor target */
  node(&n[2], "c", 50);
  struct nc_rb_vm v[] = {{"stuck", 0, 1, 20, false}, {"ok", 0, 1, 20, true}};
  size_t vm = 99, to = 99;
  bool moved = false;
  for (int t = 0; t < 10 && !moved; t++)
    moved = nc_rb_decide(&c, &st, t * 500, n, 3, v, 2, &vm, &to);
  EXPECT_TRUE(moved);
  EXPECT_STR(v[vm].name, "ok");
  EXPECT_STR(n[to].name, "c");
}

static void test_does_not_fit(void **state) {
  (void)state;
  struct nc_rb_config c = cfg();
  struct nc_rb_state st = {0};
  struct nc_rb_node n[2];
  node(&n[0], "a", 100);
  node(&n[1], "b", 60);
  n[1].mem_cap = 70; /* b is small: 60/70 = 0.86 load, a = 1.0 */
  n[0].mem_used = 100;
  node(&n[1], "b", 0);
  n[1].mem_cap = 20;
  struct nc_rb_vm v[] = {{"v", 0, 1, 40, true}}; /* 40 > 20: never fits on b */
  size_t vm, to;
  for (int t = 0; t < 20; t++)
    EXPECT_TRUE(!nc_rb_decide(&c, &st, t * 500, n, 2, v, 1, &vm, &to));
}

/* A cluster driven to a fixed point: the rebalancer stops moving, and no
 * VM ever goes back to a node it left. */
static void test_converges_without_thrashing(void **state) {
  (void)state;
  struct nc_rb_config c = cfg();
  struct nc_rb_state st = {0};
  enum { NN = 4, NV = 24 };
  static const char *const names[NN] = {"n0", "n1", "n2", "n3"};
  static char vnames[NV][8];
  struct nc_rb_node n[NN];
  struct nc_rb_vm v[NV];
  for (int i = 0; i < NN; i++)
    node(&n[i], names[i], 0);
  for (int j = 0; j < NV; j++) {
    snprintf(vnames[j], sizeof vnames[j], "v%02d", j);
    double mem = 2 + (j * 7) % 9; /* 2..10 */
    v[j] = (struct nc_rb_vm){vnames[j], 0, 1, mem, true};
    n[0].mem_used += mem; /* everything starts on n0 */
    n[0].cpu_used += 1;
  }
  n[0].mem_cap = 200;
  int moves = 0, last_move_tick = -1;
  size_t left[NV][NN] = {{0}};
  for (int t = 0; t < 2000; t++) {
    size_t vm, to;
    if (!nc_rb_decide(&c, &st, (int64_t)t * 500, n, NN, v, NV, &vm, &to))
      continue;
    size_t from = v[vm].node;
    if (left[vm][to])
      fail_msg("%s went back to %s, which it had left", v[vm].name, n[to].name);
    left[vm][from] = 1;
    n[from].mem_used -= v[vm].mem;
    n[from].cpu_used -= v[vm].cpu;
    n[to].mem_used += v[vm].mem;
    n[to].cpu_used += v[vm].cpu;
    v[vm].node = to;
    nc_rb_moved(&c, &st, (int64_t)t * 500);
    moves++;
    last_move_tick = t;
  }
  EXPECT_TRUE(moves > 0);
  EXPECT_TRUE(moves < NV);
  EXPECT_TRUE(last_move_tick < 1500); /* it stopped long before the end */
  EXPECT_TRUE(nc_rb_imbalance(n, NN) <= c.threshold);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_balanced_never_moves),
      cmocka_unit_test(test_moves_after_sustain_to_least_loaded),
      cmocka_unit_test(test_cooldown),
      cmocka_unit_test(test_swap_is_not_a_move),
      cmocka_unit_test(test_ineligible_and_unmovable),
      cmocka_unit_test(test_does_not_fit),
      cmocka_unit_test(test_converges_without_thrashing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
