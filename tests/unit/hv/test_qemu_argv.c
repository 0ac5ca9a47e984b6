/* The QEMU command line (src/hv/qemu_argv.c), checked without QEMU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hv/qemu_argv.h"
#include "util/err.h"

static struct nc_hv_spec base_spec(void) {
  struct nc_hv_spec s = {
      .name = "web-1",
      .run_dir = "/var/lib/nc/vms/web-1",
      .vcpus = 2,
      .memory_bytes = 256u << 20,
      .accel = NC_ACCEL_TCG,
  };
  return s;
}

static void expect_argv(struct nc__qemu_argv *a, const char *const *want) {
  size_t n = 0;
  while (want[n])
    n++;
  for (size_t i = 0; i < n && i < a->argc; i++)
    if (strcmp(a->argv[i], want[i]) != 0)
      fail_msg("argv[%zu] is '%s', want '%s'", i, a->argv[i], want[i]);
  assert_int_equal(a->argc, n);
  assert_null(a->argv[a->argc]);
}

/* A spec without a machine (a VM stored before types were pinned) runs
 * the alias "pc", as it always did. */
static void test_minimal(void **state) {
  (void)state;
  struct nc_hv_spec s = base_spec();
  struct nc__qemu_argv a;
  assert_int_equal(nc__qemu_argv_build("/usr/bin/qemu-system-x86_64", &s, &a), 0);
  static const char *const want[] = {
      "/usr/bin/qemu-system-x86_64", "-name", "guest=web-1", "-machine", "pc", "-accel", "tcg",
      "-m", "256M", "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none",
      "-no-shutdown", "-msg", "timestamp=on", "-pidfile", "/var/lib/nc/vms/web-1/qemu.pid",
      "-qmp", "unix:/var/lib/nc/vms/web-1/qmp.sock,server=on,wait=off", "-chardev",
      "socket,id=ser0,path=/var/lib/nc/vms/web-1/serial.sock,server=on,wait=off,"
      "logfile=/var/lib/nc/vms/web-1/serial.log,logappend=on",
      "-serial", "chardev:ser0", NULL};
  expect_argv(&a, want);
  nc__qemu_argv_free(&a);
  nc__qemu_argv_free(&a); /* idempotent */
}

static void test_full(void **state) {
  (void)state;
  struct nc_hv_spec s = base_spec();
  s.accel = NC_ACCEL_KVM;
  s.kernel = "/img/vmlinux";
  s.initrd = "/img/initramfs.cpio.gz";
  s.cmdline = "console=ttyS0 quiet, panic=-1";
  s.disk = "/var/lib/nc/vms/web-1/disk.qcow2";
  s.nic_user = true;
  s.incoming = "defer";
  s.machine = "pc-i440fx-10.0";
  struct nc__qemu_argv a;
  assert_int_equal(nc__qemu_argv_build("/q", &s, &a), 0);
  static const char *const want[] = {
      "/q", "-name", "guest=web-1", "-machine", "pc-i440fx-10.0", "-accel", "kvm", "-m", "256M", "-smp",
      "2", "-nodefaults", "-no-user-config", "-display", "none", "-no-shutdown", "-msg",
      "timestamp=on", "-pidfile", "/var/lib/nc/vms/web-1/qemu.pid", "-qmp",
      "unix:/var/lib/nc/vms/web-1/qmp.sock,server=on,wait=off", "-chardev",
      "socket,id=ser0,path=/var/lib/nc/vms/web-1/serial.sock,server=on,wait=off,"
      "logfile=/var/lib/nc/vms/web-1/serial.log,logappend=on",
      "-serial", "chardev:ser0", "-kernel", "/img/vmlinux", "-initrd",
      "/img/initramfs.cpio.gz", "-append", "console=ttyS0 quiet, panic=-1", "-drive",
      "file=/var/lib/nc/vms/web-1/disk.qcow2,if=virtio,format=qcow2,node-name=disk0", "-nic",
      "user,model=virtio-net-pci", "-S", "-incoming", "defer", NULL};
  expect_argv(&a, want);
  nc__qemu_argv_free(&a);
}

static void test_commas_escaped(void **state) {
  (void)state;
  struct nc_hv_spec s = base_spec();
  s.name = "a,b";
  s.run_dir = "/r,un";
  s.disk = "/d,isk.qcow2";
  struct nc__qemu_argv a;
  assert_int_equal(nc__qemu_argv_build("/q", &s, &a), 0);
  assert_string_equal(a.argv[2], "guest=a,,b");
  int seen = 0;
  for (size_t i = 0; i < a.argc; i++) {
    if (strcmp(a.argv[i], "unix:/r,,un/qmp.sock,server=on,wait=off") == 0)
      seen |= 1;
    if (strncmp(a.argv[i], "file=/d,,isk.qcow2,", 19) == 0)
      seen |= 2;
    if (strncmp(a.argv[i], "socket,id=ser0,path=/r,,un/serial.sock,", 39) == 0)
      seen |= 4;
  }
  assert_int_equal(seen, 7);
  char qmp[64];
  assert_int_equal(nc__qemu_qmp_arg("/r,un", qmp, sizeof qmp), 0);
  assert_string_equal(qmp, "unix:/r,,un/qmp.sock,server=on,wait=off");
  assert_int_equal(nc__qemu_qmp_arg("/a/very/long/run/dir", qmp, 16), -ENAMETOOLONG);
  nc__qemu_argv_free(&a);
}

static void test_rejects(void **state) {
  (void)state;
  struct nc__qemu_argv a;
  struct nc_hv_spec s;
#define REJECT(field_assign)                                       \
  do {                                                             \
    s = base_spec();                                               \
    field_assign;                                                  \
    assert_int_equal(nc__qemu_argv_build("/q", &s, &a), NC_E_INVALID); \
    assert_null(a.argv);                                           \
  } while (0)
  REJECT(s.name = "");
  REJECT(s.run_dir = "relative/dir");
  REJECT(s.vcpus = 0);
  REJECT(s.vcpus = 256);
  REJECT(s.memory_bytes = 8u << 20);
  REJECT(s.memory_bytes = (256u << 20) + 4096);
  REJECT(s.initrd = "/i");
  REJECT(s.cmdline = "quiet");
  REJECT(s.kernel = "vmlinux");
  REJECT(s.disk = "disk.qcow2");
  REJECT(s.incoming = "tcp:0:4444");
  REJECT(s.accel = (enum nc_hv_accel)7);
  /* never an option smuggled into -machine */
  REJECT(s.machine = "pc,accel=kvm");
  REJECT(s.machine = "");
  REJECT(s.machine = "pc i440fx");
#undef REJECT
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_minimal),
      cmocka_unit_test(test_full),
      cmocka_unit_test(test_commas_escaped),
      cmocka_unit_test(test_rejects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
