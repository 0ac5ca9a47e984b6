/* The VM lifecycle table (src/vm/state.h).
 *
 * The expected matrices below are written from the header's diagram and
 * prose, not copied from state.c, and every one of the 8x8 transitions and
 * 11x8 (action, state) pairs is checked against them. Where the table needs
 * an edge the diagram does not draw, the edge is listed with the code path
 * that takes it. */
#include "nc_test.h"

#include <stdbool.h>

#include "vm/state.h"

#define D NC_VM_DEFINED
#define SG NC_VM_STARTING
#define R NC_VM_RUNNING
#define P NC_VM_PAUSED
#define SP NC_VM_STOPPING
#define SD NC_VM_STOPPED
#define M NC_VM_MIGRATING
#define F NC_VM_FAILED

static const struct {
  enum nc_vm_state from, to;
  const char *why;
} edges[] = {
    /* drawn in the diagram */
    {D, SG, "diagram: defined --start--> starting"},
    {SG, R, "diagram: starting --> running"},
    {SG, F, "diagram: starting --> failed"},
    {R, P, "diagram: running --pause--> paused"},
    {P, R, "diagram: paused --resume--> running"},
    {R, SP, "diagram: running --> stopping"},
    {SP, SD, "diagram: stopping --> stopped"},
    {SD, SG, "diagram: stopped --(start)-->"},
    {P, SD, "diagram: paused --> stopped (the right-hand column)"},
    /* prose: migrating is entered from running/paused and returns there */
    {R, M, "prose: migrating is entered from running"},
    {P, M, "prose: migrating is entered from paused"},
    {M, R, "migration failed or finished on this node, guest running"},
    {M, P, "migration failed, guest paused"},
    {M, SD, "migration finished: the guest left this node"},
    /* prose: failed is entered from any state; start leaves it */
    {D, F, "prose: failed from any state"},
    {R, F, "prose: failed from any state"},
    {P, F, "prose: failed from any state"},
    {SP, F, "prose: failed from any state"},
    {SD, F, "prose: failed from any state"},
    {M, F, "prose: failed from any state"},
    {F, SG, "prose: start leaves failed"},
    /* needed by actions the table allows (nc_vm_action_allowed) */
    {SG, P, "do_start: the hypervisor came up paused"},
    {SG, SP, "stop is allowed while starting"},
    {SG, SD, "a cancelled start ends stopped"},
    {R, SD, "the reconciler: the guest powered itself off"},
    {P, SP, "stop is allowed while paused"},
    {F, SD, "stop is allowed in failed (the hint: start or stop it to recover)"},
};

static bool expected_edge(enum nc_vm_state from, enum nc_vm_state to, const char **why) {
  for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
    if (edges[i].from == from && edges[i].to == to) {
      if (why)
        *why = edges[i].why;
      return true;
    }
  }
  return false;
}

static void test_transition_matrix(void **state) {
  (void)state;
  int mismatches = 0;
  for (int f = 0; f < NC_VM__COUNT; f++) {
    for (int t = 0; t < NC_VM__COUNT; t++) {
      const char *why = "not in the diagram";
      bool want = expected_edge((enum nc_vm_state)f, (enum nc_vm_state)t, &why);
      bool got = nc_vm_transition_valid((enum nc_vm_state)f, (enum nc_vm_state)t);
      if (got != want) {
        print_error("%s -> %s: table says %s, expected %s (%s)\n",
                    nc_vm_state_name((enum nc_vm_state)f), nc_vm_state_name((enum nc_vm_state)t),
                    got ? "valid" : "invalid", want ? "valid" : "invalid", why);
        mismatches++;
      }
    }
  }
  EXPECT_I64(mismatches, 0);
}

static void test_no_self_transitions_and_bounds(void **state) {
  (void)state;
  for (int s = 0; s < NC_VM__COUNT; s++)
    if (nc_vm_transition_valid((enum nc_vm_state)s, (enum nc_vm_state)s))
      fail_msg("%s -> %s is valid", nc_vm_state_name((enum nc_vm_state)s),
               nc_vm_state_name((enum nc_vm_state)s));
  EXPECT_TRUE(!nc_vm_transition_valid(NC_VM__COUNT, D));
  EXPECT_TRUE(!nc_vm_transition_valid(D, NC_VM__COUNT));
  EXPECT_TRUE(!nc_vm_transition_valid((enum nc_vm_state)-1, SG));
  EXPECT_TRUE(!nc_vm_action_allowed(NC_ACT__COUNT, R));
  EXPECT_TRUE(!nc_vm_action_allowed(NC_ACT_START, NC_VM__COUNT));
}

/* Every state can reach "running" and "stopped": nothing is a trap. */
static void test_every_state_can_recover(void **state) {
  (void)state;
  for (int target = 0; target < 2; target++) {
    enum nc_vm_state goal = target ? NC_VM_STOPPED : NC_VM_RUNNING;
    for (int s = 0; s < NC_VM__COUNT; s++) {
      bool seen[NC_VM__COUNT] = {false};
      enum nc_vm_state q[NC_VM__COUNT];
      size_t head = 0, tail = 0;
      q[tail++] = (enum nc_vm_state)s;
      seen[s] = true;
      while (head < tail) {
        enum nc_vm_state c = q[head++];
        for (int n = 0; n < NC_VM__COUNT; n++)
          if (!seen[n] && nc_vm_transition_valid(c, (enum nc_vm_state)n)) {
            seen[n] = true;
            q[tail++] = (enum nc_vm_state)n;
          }
      }
      if (!seen[goal] && s != (int)goal)
        fail_msg("%s cannot reach %s", nc_vm_state_name((enum nc_vm_state)s),
                 nc_vm_state_name(goal));
    }
  }
}

/* Expected (action, state) permissions, from the diagram and docs/api.md. */
static unsigned allowed_states(enum nc_vm_action a) {
#define B(s) (1u << (s))
  switch (a) {
  case NC_ACT_START: /* defined --start-->, stopped (start), failed: start leaves it */
    return B(D) | B(SD) | B(F);
  case NC_ACT_STOP: /* anything with a process, and failed (to settle it) */
    return B(SG) | B(R) | B(P) | B(F);
  case NC_ACT_PAUSE:
    return B(R);
  case NC_ACT_RESUME:
    return B(P);
  case NC_ACT_REBOOT:
    return B(R);
  case NC_ACT_DELETE: /* "stops the VM if needed"; not mid-stop or mid-migration */
    return B(D) | B(SG) | B(R) | B(P) | B(SD) | B(F);
  case NC_ACT_SNAPSHOT: /* internal snapshots need a live QEMU */
  case NC_ACT_RESTORE:
  case NC_ACT_SNAPSHOT_DELETE:
    return B(R) | B(P);
  case NC_ACT_CLONE:
    return B(D) | B(R) | B(P) | B(SD);
  case NC_ACT_MIGRATE: /* a live QEMU to migrate */
    return B(R) | B(P);
  default:
    return 0;
  }
#undef B
}

static void test_action_matrix(void **state) {
  (void)state;
  int mismatches = 0;
  for (int a = 0; a < NC_ACT__COUNT; a++) {
    for (int s = 0; s < NC_VM__COUNT; s++) {
      bool want = (allowed_states((enum nc_vm_action)a) >> s) & 1;
      bool got = nc_vm_action_allowed((enum nc_vm_action)a, (enum nc_vm_state)s);
      if (got != want) {
        print_error("%s in %s: table says %s, expected %s\n",
                    nc_vm_action_name((enum nc_vm_action)a),
                    nc_vm_state_name((enum nc_vm_state)s), got ? "allowed" : "refused",
                    want ? "allowed" : "refused");
        mismatches++;
      }
    }
  }
  EXPECT_I64(mismatches, 0);
}

/* The first state change an allowed action makes must be in the lifecycle
 * table, or the manager logs "refusing invalid transition" and the history
 * can no longer be replayed. */
static void test_allowed_actions_have_a_valid_first_step(void **state) {
  (void)state;
  for (int s = 0; s < NC_VM__COUNT; s++) {
    enum nc_vm_state st = (enum nc_vm_state)s;
    if (nc_vm_action_allowed(NC_ACT_START, st) && !nc_vm_transition_valid(st, SG))
      fail_msg("start is allowed in %s but %s -> starting is not", nc_vm_state_name(st),
               nc_vm_state_name(st));
    if (nc_vm_action_allowed(NC_ACT_PAUSE, st) && !nc_vm_transition_valid(st, P))
      fail_msg("pause is allowed in %s but -> paused is not", nc_vm_state_name(st));
    if (nc_vm_action_allowed(NC_ACT_RESUME, st) && !nc_vm_transition_valid(st, R))
      fail_msg("resume is allowed in %s but -> running is not", nc_vm_state_name(st));
    /* stop: through stopping when a process exists, straight to stopped
     * otherwise */
    if (nc_vm_action_allowed(NC_ACT_STOP, st)) {
      bool ok = nc_vm_state_has_process(st) ? nc_vm_transition_valid(st, SP)
                                            : nc_vm_transition_valid(st, SD);
      if (!ok)
        fail_msg("stop is allowed in %s but has no valid first step", nc_vm_state_name(st));
    }
  }
}

static void test_refusals_have_hints(void **state) {
  (void)state;
  for (int a = 0; a < NC_ACT__COUNT; a++) {
    for (int s = 0; s < NC_VM__COUNT; s++) {
      if (nc_vm_action_allowed((enum nc_vm_action)a, (enum nc_vm_state)s))
        continue;
      const char *h = nc_vm_action_hint((enum nc_vm_action)a, (enum nc_vm_state)s);
      if (!h || strlen(h) < 10)
        fail_msg("%s in %s: hint \"%s\" is too thin", nc_vm_action_name((enum nc_vm_action)a),
                 nc_vm_state_name((enum nc_vm_state)s), h ? h : "(null)");
    }
  }
  EXPECT_CONTAINS(nc_vm_action_hint(NC_ACT_PAUSE, SD), "start it first");
  EXPECT_CONTAINS(nc_vm_action_hint(NC_ACT_PAUSE, P), "already paused");
  EXPECT_CONTAINS(nc_vm_action_hint(NC_ACT_REBOOT, P), "resume it first");
  EXPECT_CONTAINS(nc_vm_action_hint(NC_ACT_START, R), "already running");
  EXPECT_CONTAINS(nc_vm_action_hint(NC_ACT_STOP, SP), "wait");
  EXPECT_CONTAINS(nc_vm_action_hint(NC_ACT_SNAPSHOT, F), "start or stop");
}

static void test_has_process(void **state) {
  (void)state;
  static const bool want[NC_VM__COUNT] = {
      [D] = false, [SG] = true, [R] = true, [P] = true,
      [SP] = true, [SD] = false, [M] = true, [F] = false,
  };
  for (int s = 0; s < NC_VM__COUNT; s++)
    if (nc_vm_state_has_process((enum nc_vm_state)s) != want[s])
      fail_msg("nc_vm_state_has_process(%s) is %d", nc_vm_state_name((enum nc_vm_state)s),
               !want[s]);
}

static void test_names_round_trip(void **state) {
  (void)state;
  static const char *const sn[NC_VM__COUNT] = {"defined", "starting", "running", "paused",
                                               "stopping", "stopped", "migrating", "failed"};
  for (int s = 0; s < NC_VM__COUNT; s++) {
    EXPECT_STR(nc_vm_state_name((enum nc_vm_state)s), sn[s]);
    enum nc_vm_state back = NC_VM__COUNT;
    EXPECT_RC(nc_vm_state_parse(sn[s], &back), 0);
    EXPECT_I64(back, s);
  }
  static const char *const an[] = {"start",   "stop",    "pause", "resume",
                                   "reboot",  "delete",  "snapshot", "restore",
                                   "clone",   "snapshot-delete", "migrate"};
  EXPECT_I64(sizeof an / sizeof an[0], NC_ACT__COUNT);
  for (int a = 0; a < NC_ACT__COUNT; a++) {
    EXPECT_STR(nc_vm_action_name((enum nc_vm_action)a), an[a]);
    enum nc_vm_action back = NC_ACT__COUNT;
    EXPECT_RC(nc_vm_action_parse(an[a], &back), 0);
    EXPECT_I64(back, a);
  }
  enum nc_vm_state s;
  enum nc_vm_action a;
  EXPECT_RC(nc_vm_state_parse("Running", &s), -EINVAL);
  EXPECT_RC(nc_vm_state_parse("", &s), -EINVAL);
  EXPECT_RC(nc_vm_state_parse("running ", &s), -EINVAL);
  EXPECT_RC(nc_vm_action_parse("START", &a), -EINVAL);
  EXPECT_RC(nc_vm_action_parse("migrate-to", &a), -EINVAL);
  EXPECT_STR(nc_vm_state_name(NC_VM__COUNT), "unknown");
  EXPECT_STR(nc_vm_state_name((enum nc_vm_state)-1), "unknown");
  EXPECT_STR(nc_vm_action_name(NC_ACT__COUNT), "unknown");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_transition_matrix),
      cmocka_unit_test(test_no_self_transitions_and_bounds),
      cmocka_unit_test(test_every_state_can_recover),
      cmocka_unit_test(test_action_matrix),
      cmocka_unit_test(test_allowed_actions_have_a_valid_first_step),
      cmocka_unit_test(test_refusals_have_hints),
      cmocka_unit_test(test_has_process),
      cmocka_unit_test(test_names_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
