/* The noop hypervisor driver (src/hv/noop.c): the hv.h vtable with
 * in-memory instances only. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "hv/noop.h"
#include "util/err.h"

static struct nc_hv_spec spec(const char *run_dir, const char *disk) {
  struct nc_hv_spec s = {.name = "web-1", .run_dir = run_dir, .vcpus = 2,
                         .memory_bytes = 256ULL << 20, .disk = disk};
  return s;
}

static enum nc_hv_state state_of(struct nc_hv *hv, struct nc_hv_vm *vm) {
  enum nc_hv_state st = (enum nc_hv_state)-1;
  assert_int_equal(hv->ops->query(vm, &st), 0);
  return st;
}

static void test_named_noop(void **state) {
  (void)state;
  struct nc_hv *hv = NULL;
  assert_int_equal(nc_hv_noop_new(&hv), 0);
  assert_int_equal(hv->ops->version, 1);
  assert_string_equal(hv->ops->name, "noop");
  hv->ops->destroy(hv);
}

static void test_lifecycle(void **state) {
  (void)state;
  struct nc_hv *hv = NULL;
  assert_int_equal(nc_hv_noop_new(&hv), 0);
  struct nc_hv_spec s = spec("/nonexistent/run/web-1", NULL);
  struct nc_hv_vm *vm = NULL, *dup = NULL;
  assert_int_equal(hv->ops->launch(hv, &s, &vm), 0);
  assert_non_null(vm);
  assert_int_equal(state_of(hv, vm), NC_HV_RUNNING);
  assert_int_equal(hv->ops->launch(hv, &s, &dup), -EEXIST);
  assert_null(dup);

  assert_int_equal(hv->ops->pause(vm), 0);
  assert_int_equal(state_of(hv, vm), NC_HV_PAUSED);
  assert_int_equal(hv->ops->resume(vm), 0);
  assert_int_equal(hv->ops->reboot(vm), 0);
  assert_int_equal(state_of(hv, vm), NC_HV_RUNNING);

  struct nc_hv_stats st;
  memset(&st, 0xff, sizeof st);
  assert_int_equal(hv->ops->stats(vm, &st), 0);
  assert_int_equal(st.memory_bytes, 256ULL << 20);
  assert_int_equal(st.cpu_time_ns, 0);
  assert_int_equal(st.memory_rss_bytes, 0);
  assert_int_equal(st.block_wr_bytes, 0);
  assert_int_equal(st.pid, 0);

  /* Released, the instance keeps "running" and can be adopted again. */
  hv->ops->release(vm);
  vm = NULL;
  assert_int_equal(hv->ops->adopt(hv, &s, &vm), 0);
  assert_int_equal(state_of(hv, vm), NC_HV_RUNNING);

  /* Shut down: gone, but the handle stays until released. */
  assert_int_equal(hv->ops->shutdown(vm, 1000), 0);
  assert_int_equal(state_of(hv, vm), NC_HV_GONE);
  assert_int_equal(hv->ops->pause(vm), -ESRCH);
  hv->ops->release(vm);
  assert_int_equal(hv->ops->adopt(hv, &s, &vm), -ESRCH);
  assert_null(vm);

  /* The run dir is free again; kill ends it and frees the handle. */
  assert_int_equal(hv->ops->launch(hv, &s, &vm), 0);
  assert_int_equal(hv->ops->kill(vm), 0);
  assert_int_equal(hv->ops->adopt(hv, &s, &vm), -ESRCH);
  hv->ops->release(NULL);
  hv->ops->destroy(hv);
}

static void test_incoming_and_invalid(void **state) {
  (void)state;
  struct nc_hv *hv = NULL;
  assert_int_equal(nc_hv_noop_new(&hv), 0);
  struct nc_hv_spec s = spec("/run/a", NULL);
  s.incoming = "defer";
  struct nc_hv_vm *vm = NULL;
  assert_int_equal(hv->ops->launch(hv, &s, &vm), 0);
  assert_int_equal(state_of(hv, vm), NC_HV_INMIGRATE);
  assert_int_equal(hv->ops->resume(vm), 0);
  assert_int_equal(state_of(hv, vm), NC_HV_RUNNING);

  struct nc_hv_spec bad = spec("/run/b", NULL);
  bad.vcpus = 0;
  struct nc_hv_vm *other = NULL;
  assert_int_equal(hv->ops->launch(hv, &bad, &other), NC_E_INVALID);
  bad = spec(NULL, NULL);
  assert_int_equal(hv->ops->launch(hv, &bad, &other), NC_E_INVALID);
  assert_null(other);
  /* destroy() ends live instances; only handles must be gone first. */
  hv->ops->release(vm);
  hv->ops->destroy(hv);
}

static void test_snapshots(void **state) {
  (void)state;
  struct nc_hv *hv = NULL;
  assert_int_equal(nc_hv_noop_new(&hv), 0);
  struct nc_hv_spec nodisk = spec("/run/nodisk", NULL);
  struct nc_hv_spec disk = spec("/run/disk", "/run/disk/disk.qcow2");
  struct nc_hv_vm *a = NULL, *b = NULL;
  assert_int_equal(hv->ops->launch(hv, &nodisk, &a), 0);
  assert_int_equal(hv->ops->launch(hv, &disk, &b), 0);
  assert_int_equal(hv->ops->snapshot_save(a, "s1", 1000), -ENOTSUP);

  assert_int_equal(hv->ops->snapshot_save(b, "s1", 1000), 0);
  assert_int_equal(hv->ops->snapshot_save(b, "s1", 1000), -EEXIST);
  assert_int_equal(hv->ops->snapshot_save(b, "s2", 1000), 0);
  assert_int_equal(hv->ops->snapshot_load(b, "s1", 1000), 0);
  assert_int_equal(hv->ops->snapshot_load(b, "nope", 1000), -ENOENT);
  assert_int_equal(hv->ops->snapshot_delete(b, "s1", 1000), 0);
  assert_int_equal(hv->ops->snapshot_load(b, "s1", 1000), -ENOENT);
  assert_int_equal(hv->ops->snapshot_load(b, "s2", 1000), 0);
  char big[200];
  memset(big, 't', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(hv->ops->snapshot_save(b, big, 1000), NC_E_TOOBIG);
  assert_int_equal(hv->ops->kill(a), 0);
  assert_int_equal(hv->ops->kill(b), 0);
  hv->ops->destroy(hv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_named_noop),
      cmocka_unit_test(test_lifecycle),
      cmocka_unit_test(test_incoming_and_invalid),
      cmocka_unit_test(test_snapshots),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
