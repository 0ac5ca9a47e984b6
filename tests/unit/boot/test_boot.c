/* The start-up registry (src/boot/boot.h): phases run in order, a critical
 * failure stops start-up and stops what already started in reverse, an
 * optional failure leaves the node degraded but ready, and the readiness
 * JSON /readyz serves. */
#include "nc_test.h"

#include <jansson.h>

#include "boot/boot.h"
#include "obs/metrics.h"

/* The test's context: which components fail, and a log of every start and
 * stop in order ("+name" / "-name"). */
struct ctx {
  char log[1024];
  const char *fail;    /* name of the component whose start fails */
  int fail_rc;
  const char *fail_msg; /* NULL: the component gives no message */
  struct nc_boot *boot; /* for components that report their own status */
};

static void logw(struct ctx *c, char sign, const char *name) {
  size_t o = strlen(c->log);
  snprintf(c->log + o, sizeof c->log - o, "%s%c%s", o ? " " : "", sign, name);
}

#define COMPONENT(id)                                                               \
  static int start_##id(void *p, char *err, size_t len) {                           \
    struct ctx *c = p;                                                              \
    logw(c, '+', #id);                                                              \
    if (c->fail && strcmp(c->fail, #id) == 0) {                                     \
      if (c->fail_msg)                                                              \
        snprintf(err, len, "%s", c->fail_msg);                                      \
      return c->fail_rc;                                                            \
    }                                                                               \
    return 0;                                                                       \
  }                                                                                 \
  static __attribute__((unused)) void stop_##id(void *p) { logw(p, '-', #id); }

COMPONENT(config)
COMPONENT(store)
COMPONENT(hv)
COMPONENT(vmm)
COMPONENT(api)
COMPONENT(probe)

/* Reports "degraded" for itself while starting, then succeeds. */
static int start_selfreport(void *p, char *err, size_t len) {
  struct ctx *c = p;
  logw(c, '+', "selfreport");
  nc_boot_set_status(c->boot, "selfreport", "degraded", "no KVM; using TCG");
  snprintf(err, len, "started on TCG");
  return 0;
}

static struct nc_boot *new_boot(struct ctx *c) {
  struct nc_boot *b;
  EXPECT_RC(nc_boot_new(c, &b), 0);
  c->boot = b;
  return b;
}

static void reg(struct nc_boot *b, const char *name, enum nc_boot_phase ph, bool critical,
                int (*start)(void *, char *, size_t), void (*stop)(void *)) {
  struct nc_component comp = {name, ph, critical, start, stop};
  EXPECT_RC(nc_boot_register(b, &comp), 0);
}

/* As src/daemon/main.c does it: in phase order. */
static void register_in_order(struct nc_boot *b) {
  reg(b, "config", NC_PHASE_PREINIT, true, start_config, NULL);
  reg(b, "store", NC_PHASE_CORE, true, start_store, stop_store);
  reg(b, "hv", NC_PHASE_CORE, true, start_hv, stop_hv);
  reg(b, "api", NC_PHASE_SERVICES, true, start_api, stop_api);
  reg(b, "vmm", NC_PHASE_SERVICES, true, start_vmm, stop_vmm);
  reg(b, "probe", NC_PHASE_POSTINIT, false, start_probe, stop_probe);
}

/* Registered out of phase order on purpose: the phase decides. */
static void register_shuffled(struct nc_boot *b) {
  reg(b, "probe", NC_PHASE_POSTINIT, false, start_probe, stop_probe);
  reg(b, "api", NC_PHASE_SERVICES, true, start_api, stop_api);
  reg(b, "store", NC_PHASE_CORE, true, start_store, stop_store);
  reg(b, "config", NC_PHASE_PREINIT, true, start_config, NULL);
  reg(b, "vmm", NC_PHASE_SERVICES, true, start_vmm, stop_vmm);
  reg(b, "hv", NC_PHASE_CORE, true, start_hv, stop_hv);
}

static json_t *component(json_t *ready, const char *name) {
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(ready, "components"), i, c) {
    if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
      return c;
  }
  fail_msg("component %s not in the readiness JSON", name);
  return NULL;
}

static const char *cstr(json_t *ready, const char *name, const char *key) {
  return json_string_value(json_object_get(component(ready, name), key));
}

static void test_phases_run_in_order(void **state) {
  (void)state;
  struct ctx c = {0};
  struct nc_boot *b = new_boot(&c);
  register_shuffled(b);
  char err[256] = "";
  EXPECT_RC(nc_boot_run(b, err, sizeof err), 0);
  /* phase order first, registration order within a phase */
  EXPECT_STR(c.log, "+config +store +hv +api +vmm +probe");
  EXPECT_TRUE(nc_boot_ready_seconds(b) >= 0);
  nc_boot_free(b);

  c.log[0] = '\0';
  b = new_boot(&c);
  register_in_order(b);
  EXPECT_RC(nc_boot_run(b, err, sizeof err), 0);
  EXPECT_STR(c.log, "+config +store +hv +api +vmm +probe");
  c.log[0] = '\0';
  nc_boot_shutdown(b);
  EXPECT_STR(c.log, "-probe -vmm -api -hv -store"); /* reverse; config has no stop */
  nc_boot_free(b);
}

/* boot.h: components "are stopped in reverse" -- of the order they
 * started, which is phase order, whatever order they were registered in.
 * Stopping the API's store before the API would pull the floor from under
 * it. */
static void test_stop_reverses_start_order_not_registration(void **state) {
  (void)state;
  struct ctx c = {0};
  struct nc_boot *b = new_boot(&c);
  register_shuffled(b);
  char err[256] = "";
  EXPECT_RC(nc_boot_run(b, err, sizeof err), 0);
  c.log[0] = '\0';
  nc_boot_shutdown(b);
  nc_boot_free(b);
  if (strcmp(c.log, "-probe -vmm -api -hv -store") != 0)
    fail_msg("started \"config store hv api vmm probe\" but stopped \"%s\"; want "
             "\"-probe -vmm -api -hv -store\"",
             c.log);
}

static void test_critical_failure_stops_started_in_reverse(void **state) {
  (void)state;
  struct ctx c = {.fail = "vmm", .fail_rc = -EADDRINUSE,
                  .fail_msg = "cannot bind 127.0.0.1:8470 (is another novacrond running?)"};
  struct nc_boot *b = new_boot(&c);
  register_in_order(b);
  char err[256] = "";
  EXPECT_RC(nc_boot_run(b, err, sizeof err), -EADDRINUSE);
  EXPECT_STR(err, "component vmm: cannot bind 127.0.0.1:8470 (is another novacrond running?)");
  /* started: config store hv api (vmm failed); probe never ran; then the
   * started ones stop in reverse start order (config has no stop) */
  EXPECT_STR(c.log, "+config +store +hv +api +vmm -api -hv -store");
  json_t *r = nc_boot_readiness(b);
  EXPECT_TRUE(json_is_false(json_object_get(r, "ready")));
  EXPECT_STR(cstr(r, "vmm", "status"), "failed");
  EXPECT_STR(cstr(r, "vmm", "message"),
             "cannot bind 127.0.0.1:8470 (is another novacrond running?)");
  EXPECT_STR(cstr(r, "probe", "status"), "pending");
  json_decref(r);
  /* shutdown after a failed run stops nothing twice */
  c.log[0] = '\0';
  nc_boot_shutdown(b);
  EXPECT_STR(c.log, "");
  nc_boot_free(b);
}

static void test_critical_failure_without_message(void **state) {
  (void)state;
  struct ctx c = {.fail = "store", .fail_rc = -EACCES};
  struct nc_boot *b = new_boot(&c);
  register_in_order(b);
  char err[256];
  EXPECT_RC(nc_boot_run(b, err, sizeof err), -EACCES);
  char want[256];
  snprintf(want, sizeof want, "component store: %s", nc_strerror(-EACCES));
  EXPECT_STR(err, want);
  EXPECT_STR(c.log, "+config +store");
  nc_boot_free(b);
}

static void test_optional_failure_is_degraded_but_ready(void **state) {
  (void)state;
  struct ctx c = {.fail = "probe", .fail_rc = -ETIMEDOUT, .fail_msg = "KVM probe timed out"};
  struct nc_boot *b = new_boot(&c);
  register_in_order(b);
  char err[256] = "";
  EXPECT_RC(nc_boot_run(b, err, sizeof err), 0);
  json_t *r = nc_boot_readiness(b);
  EXPECT_TRUE(json_is_true(json_object_get(r, "ready")));
  EXPECT_STR(cstr(r, "probe", "status"), "degraded");
  EXPECT_STR(cstr(r, "probe", "message"), "KVM probe timed out");
  EXPECT_STR(cstr(r, "api", "status"), "up");
  json_decref(r);
  /* a failed optional component is not stopped */
  c.log[0] = '\0';
  nc_boot_shutdown(b);
  EXPECT_STR(c.log, "-vmm -api -hv -store");
  nc_boot_free(b);
}

static void test_readiness_json(void **state) {
  (void)state;
  struct ctx c = {0};
  struct nc_boot *b = new_boot(&c);
  register_in_order(b);
  json_t *r = nc_boot_readiness(b);
  EXPECT_TRUE(json_is_false(json_object_get(r, "ready"))); /* not run yet */
  EXPECT_STR(cstr(r, "api", "status"), "pending");
  json_decref(r);
  char err[256];
  EXPECT_RC(nc_boot_run(b, err, sizeof err), 0);
  r = nc_boot_readiness(b);
  EXPECT_TRUE(json_is_true(json_object_get(r, "ready")));
  EXPECT_TRUE(json_is_number(json_object_get(r, "boot_to_ready_seconds")));
  json_t *comps = json_object_get(r, "components");
  EXPECT_I64(json_array_size(comps), 6);
  json_t *api = component(r, "api");
  EXPECT_STR(json_string_value(json_object_get(api, "phase")), "services");
  EXPECT_TRUE(json_is_true(json_object_get(api, "critical")));
  EXPECT_STR(json_string_value(json_object_get(api, "status")), "up");
  EXPECT_TRUE(json_is_string(json_object_get(api, "message")));
  EXPECT_TRUE(json_real_value(json_object_get(api, "start_seconds")) >= 0);
  EXPECT_STR(cstr(r, "config", "phase"), "pre-init");
  EXPECT_STR(cstr(r, "store", "phase"), "core");
  EXPECT_STR(cstr(r, "probe", "phase"), "post-init");
  EXPECT_TRUE(json_is_false(json_object_get(component(r, "probe"), "critical")));
  json_decref(r);

  /* Later reports: an optional component failing keeps the node ready; a
   * critical one going down does not. */
  nc_boot_set_status(b, "probe", "failed", "probe crashed");
  r = nc_boot_readiness(b);
  EXPECT_TRUE(json_is_true(json_object_get(r, "ready")));
  EXPECT_STR(cstr(r, "probe", "message"), "probe crashed");
  json_decref(r);
  nc_boot_set_status(b, "store", "degraded", "disk full");
  r = nc_boot_readiness(b);
  EXPECT_TRUE(json_is_false(json_object_get(r, "ready")));
  json_decref(r);
  nc_boot_set_status(b, "store", "up", NULL);
  r = nc_boot_readiness(b);
  EXPECT_TRUE(json_is_true(json_object_get(r, "ready")));
  EXPECT_STR(cstr(r, "store", "message"), "");
  json_decref(r);
  nc_boot_set_status(b, "no-such-component", "failed", "x"); /* ignored */
  nc_boot_shutdown(b);
  nc_boot_free(b);
}

static void test_component_reports_for_itself(void **state) {
  (void)state;
  struct ctx c = {0};
  struct nc_boot *b = new_boot(&c);
  reg(b, "selfreport", NC_PHASE_POSTINIT, false, start_selfreport, NULL);
  char err[256];
  EXPECT_RC(nc_boot_run(b, err, sizeof err), 0);
  json_t *r = nc_boot_readiness(b);
  EXPECT_STR(cstr(r, "selfreport", "status"), "degraded"); /* not overwritten with "up" */
  EXPECT_STR(cstr(r, "selfreport", "message"), "started on TCG");
  json_decref(r);
  nc_boot_free(b);
}

static void test_register_limits(void **state) {
  (void)state;
  struct ctx c = {0};
  struct nc_boot *b = new_boot(&c);
  struct nc_component bad = {"bad", NC_PHASE__COUNT, true, start_api, NULL};
  EXPECT_RC(nc_boot_register(b, &bad), -EINVAL);
  struct nc_component ok = {"x", NC_PHASE_CORE, false, start_api, NULL};
  int n = 0;
  while (nc_boot_register(b, &ok) == 0 && n < 100)
    n++;
  EXPECT_I64(n, 32);
  nc_boot_free(b);
  nc_boot_free(NULL);
}

static void test_metrics(void **state) {
  (void)state;
  struct ctx c = {.fail = "probe", .fail_rc = -EIO};
  struct nc_boot *b = new_boot(&c);
  register_in_order(b);
  char err[256];
  EXPECT_RC(nc_boot_run(b, err, sizeof err), 0);
  struct nc_metrics *m;
  EXPECT_RC(nc_metrics_new(&m), 0);
  nc_boot_export_metrics(b, m);
  char *t;
  EXPECT_RC(nc_metrics_render(m, &t, NULL), 0);
  EXPECT_CONTAINS(t, "# TYPE novacron_boot_phase_duration_seconds gauge\n");
  EXPECT_CONTAINS(t, "novacron_boot_phase_duration_seconds{phase=\"pre-init\"} ");
  EXPECT_CONTAINS(t, "novacron_boot_phase_duration_seconds{phase=\"post-init\"} ");
  EXPECT_CONTAINS(t, "\nnovacron_boot_to_ready_seconds ");
  EXPECT_CONTAINS(t, "novacron_component_up{component=\"api\"} 1\n");
  EXPECT_CONTAINS(t, "novacron_component_up{component=\"probe\"} 0\n");
  free(t);
  nc_boot_shutdown(b);
  nc_boot_free(b); /* unregisters its collector: the registry must outlive it */
  nc_metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_phases_run_in_order),
      cmocka_unit_test(test_stop_reverses_start_order_not_registration),
      cmocka_unit_test(test_critical_failure_stops_started_in_reverse),
      cmocka_unit_test(test_critical_failure_without_message),
      cmocka_unit_test(test_optional_failure_is_degraded_but_ready),
      cmocka_unit_test(test_readiness_json),
      cmocka_unit_test(test_component_reports_for_itself),
      cmocka_unit_test(test_register_limits),
      cmocka_unit_test(test_metrics),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
