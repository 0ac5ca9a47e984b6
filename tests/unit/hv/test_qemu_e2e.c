/* The QEMU driver against a real qemu-system-x86_64 (TCG). Label e2e.
 *
 * Guest: build/guest (vmlinux + initramfs.cpio.gz from
 * scripts/build-guest-image, heartbeat "NCHB") when it exists, or
 * NC_GUEST_DIR; otherwise a 90-byte multiboot image written here that
 * prints "NCGUEST heartbeat" on COM1 in a loop. At most one test guest
 * runs at a time (plus the KVM probe's, never concurrently). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "hv/proc.h"
#include "hv/qemu.h"
#include "util/err.h"

#define MIB (1u << 20)

static char g_dir[64];
static struct nc_hv *g_hv;
static char g_kernel[4096], g_initrd[4096], g_base[128];
static const char *g_cmdline, *g_expect;
static bool g_real_guest;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

/* A multiboot (v1, "a.out kludge") kernel loaded at 1 MiB. QEMU's -kernel
 * boots it straight into 32-bit protected mode. Code at 0x100020:
 *   start: mov esi, msg
 *   next:  lodsb; test al,al; jz done; mov bl,al
 *          mov dx,0x3fd; wait: in al,dx; test al,0x20; jz wait  ; THR empty
 *          mov dx,0x3f8; mov al,bl; out dx,al; jmp next
 *   done:  mov ecx,0x2000000; d: loop d; jmp start
 *   msg:   "NCGUEST heartbeat\n\0" */
static int write_multiboot(const char *path) {
  static const uint8_t code[] = {
      0xBE, 0x47, 0x00, 0x10, 0x00, 0xAC, 0x84, 0xC0, 0x74, 0x14, 0x88, 0xC3, 0x66,
      0xBA, 0xFD, 0x03, 0xEC, 0xA8, 0x20, 0x74, 0xFB, 0x66, 0xBA, 0xF8, 0x03, 0x88,
      0xD8, 0xEE, 0xEB, 0xE7, 0xB9, 0x00, 0x00, 0x00, 0x02, 0xE2, 0xFE, 0xEB, 0xD9};
  static const char msg[] = "NCGUEST heartbeat\n";
  uint8_t img[32 + sizeof code + sizeof msg];
  const uint32_t magic = 0x1BADB002, flags = 0x00010000, base = 0x100000;
  put32(img + 0, magic);
  put32(img + 4, flags);
  put32(img + 8, (uint32_t)-(magic + flags));
  put32(img + 12, base);      /* header_addr */
  put32(img + 16, base);      /* load_addr */
  put32(img + 20, 0);         /* load_end_addr: whole file */
  put32(img + 24, 0);         /* bss_end_addr: none */
  put32(img + 28, base + 32); /* entry_addr */
  memcpy(img + 32, code, sizeof code);
  memcpy(img + 32 + sizeof code, msg, sizeof msg); /* with its NUL */
  FILE *f = fopen(path, "wb");
  if (!f)
    return -1;
  size_t w = fwrite(img, 1, sizeof img, f);
  return (fclose(f) == 0 && w == sizeof img) ? 0 : -1;
}

static bool file_exists(const char *p) { return access(p, F_OK) == 0; }

static int setup_group(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/nc-hv-e2e-XXXXXX");
  if (!mkdtemp(g_dir))
    return -1;
  const char *gd = getenv("NC_GUEST_DIR");
  if (!gd)
    gd = NC_TEST_GUEST_DIR;
  snprintf(g_kernel, sizeof g_kernel, "%s/vmlinux", gd);
  snprintf(g_initrd, sizeof g_initrd, "%s/initramfs.cpio.gz", gd);
  g_real_guest = file_exists(g_kernel) && file_exists(g_initrd);
  if (g_real_guest) {
    g_cmdline = "console=ttyS0 quiet panic=-1";
    g_expect = "NCHB";
  } else {
    snprintf(g_kernel, sizeof g_kernel, "%s/multiboot.bin", g_dir);
    g_initrd[0] = '\0';
    g_cmdline = NULL;
    g_expect = "NCGUEST heartbeat";
    if (write_multiboot(g_kernel) < 0)
      return -1;
  }
  printf("[e2e] guest: %s\n", g_real_guest ? g_kernel : "built-in multiboot heartbeat");

  struct nc_hv_qemu_config cfg = {0};
  if (nc_hv_qemu_new(&cfg, &g_hv) < 0)
    return -1;
  snprintf(g_base, sizeof g_base, "%s/base.qcow2", g_dir);
  char img[4096];
  if (nc__proc_find_program("qemu-img", img, sizeof img) < 0)
    return -1;
  char *argv[] = {img, "create", "-q", "-f", "qcow2", g_base, "64M", NULL};
  char out[1024];
  int code;
  if (nc__proc_run(argv, 10000, out, sizeof out, &code) < 0 || code != 0)
    return -1;
  return 0;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static int teardown_group(void **state) {
  (void)state;
  if (g_hv)
    g_hv->ops->destroy(g_hv);
  if (!getenv("NC_KEEP_TMP"))
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}

struct run {
  char dir[128];
  char disk[160];
  struct nc_hv_spec spec;
};

static void make_run(struct run *r, const char *name, bool disk) {
  memset(r, 0, sizeof *r);
  snprintf(r->dir, sizeof r->dir, "%s/%s", g_dir, name);
  assert_int_equal(mkdir(r->dir, 0750), 0);
  r->spec.name = name;
  r->spec.run_dir = r->dir;
  r->spec.vcpus = 1;
  r->spec.memory_bytes = 256 * MIB;
  r->spec.kernel = g_kernel;
  r->spec.initrd = g_initrd[0] ? g_initrd : NULL;
  r->spec.cmdline = g_cmdline;
  r->spec.accel = NC_ACCEL_TCG;
  if (disk) {
    snprintf(r->disk, sizeof r->disk, "%s/disk.qcow2", r->dir);
    assert_int_equal(nc_hv_qemu_create_overlay("qemu-img", g_base, r->disk), 0);
    r->spec.disk = r->disk;
  }
}

static void run_file(const struct run *r, const char *f, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s", r->dir, f);
}

static off_t file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? st.st_size : -1;
}

static bool file_contains(const char *path, const char *needle) {
  char buf[65536];
  int n = nc__proc_read_tail(path, buf, sizeof buf);
  return n > 0 && strstr(buf, needle) != NULL;
}

static enum nc_hv_state query(struct nc_hv_vm *vm) {
  enum nc_hv_state st = NC_HV_OTHER;
  int rc = g_hv->ops->query(vm, &st);
  if (rc != 0)
    fail_msg("query: %s (%s)", nc_strerror(rc), nc_hv_qemu_vm_last_error(vm));
  return st;
}

#define CALL(expr)                                                                  \
  do {                                                                              \
    int rc_ = (expr);                                                               \
    if (rc_ != 0)                                                                   \
      fail_msg("%s: %s (%s)", #expr, nc_strerror(rc_), nc_hv_qemu_vm_last_error(vm)); \
  } while (0)

static void test_version(void **state) {
  (void)state;
  int major = 0, minor = -1;
  assert_int_equal(nc_hv_qemu_version("qemu-system-x86_64", &major, &minor), 0);
  printf("[e2e] QEMU %d.%d\n", major, minor);
  assert_true(major >= 9);
  assert_int_equal(nc_hv_qemu_version("/nonexistent/qemu", &major, &minor), -ENOENT);
}

static void test_lifecycle(void **state) {
  (void)state;
  struct run r;
  make_run(&r, "vm-main", true);
  assert_int_equal(nc_hv_qemu_create_overlay("qemu-img", g_base, r.disk), -EEXIST);

  struct nc_hv_vm *vm = NULL;
  int64_t t0 = mono_ms();
  int rc = g_hv->ops->launch(g_hv, &r.spec, &vm);
  int64_t launch_ms = mono_ms() - t0;
  assert_int_equal(rc, 0);
  printf("[timing] launch to QMP ready: %lld ms\n", (long long)launch_ms);
  pid_t pid = nc_hv_qemu_vm_pid(vm);
  assert_true(pid > 0);
  assert_int_equal(query(vm), NC_HV_RUNNING);

  /* The console is logged while nobody is attached to serial.sock. */
  char serial[192];
  run_file(&r, "serial.log", serial, sizeof serial);
  int64_t deadline = mono_ms() + 20000;
  while (!file_contains(serial, g_expect) && mono_ms() < deadline)
    usleep(100 * 1000);
  if (!file_contains(serial, g_expect))
    fail_msg("\"%s\" never appeared in %s", g_expect, serial);
  printf("[timing] launch to first \"%s\" in serial.log: %lld ms\n", g_expect,
         (long long)(mono_ms() - t0));
  off_t s0 = file_size(serial);
  deadline = mono_ms() + 10000;
  while (file_size(serial) == s0 && mono_ms() < deadline)
    usleep(100 * 1000);
  assert_true(file_size(serial) > s0);

  CALL(g_hv->ops->pause(vm));
  assert_int_equal(query(vm), NC_HV_PAUSED);
  CALL(g_hv->ops->resume(vm));
  assert_int_equal(query(vm), NC_HV_RUNNING);

  struct nc_hv_stats a, b;
  CALL(g_hv->ops->stats(vm, &a));
  usleep(500 * 1000);
  CALL(g_hv->ops->stats(vm, &b));
  assert_int_equal(a.pid, pid);
  if (b.cpu_time_ns <= a.cpu_time_ns)
    fail_msg("cpu time did not grow: %llu -> %llu", (unsigned long long)a.cpu_time_ns,
             (unsigned long long)b.cpu_time_ns);
  assert_true(b.memory_rss_bytes > 0);
  assert_int_equal(b.memory_bytes, 256 * MIB);
  assert_int_equal(b.net_rx_bytes, 0);
  printf("[e2e] stats: cpu %.3f s, rss %llu MiB, block rd %llu wr %llu\n",
         (double)b.cpu_time_ns / 1e9, (unsigned long long)(b.memory_rss_bytes / MIB),
         (unsigned long long)b.block_rd_bytes, (unsigned long long)b.block_wr_bytes);

  CALL(g_hv->ops->reboot(vm));
  assert_int_equal(query(vm), NC_HV_RUNNING);

  /* Snapshots on the qcow2 overlay. */
  t0 = mono_ms();
  CALL(g_hv->ops->snapshot_save(vm, "s1", 60000));
  printf("[timing] snapshot-save (256 MiB guest): %lld ms\n", (long long)(mono_ms() - t0));
  assert_int_equal(g_hv->ops->snapshot_save(vm, "s1", 60000), -EEXIST);
  assert_non_null(strstr(nc_hv_qemu_vm_last_error(vm), "s1"));
  assert_int_equal(query(vm), NC_HV_RUNNING);
  t0 = mono_ms();
  CALL(g_hv->ops->snapshot_load(vm, "s1", 60000));
  printf("[timing] snapshot-load (256 MiB guest): %lld ms\n", (long long)(mono_ms() - t0));
  assert_int_equal(query(vm), NC_HV_RUNNING);
  assert_int_equal(g_hv->ops->snapshot_load(vm, "nope", 60000), -ENOENT);
  assert_int_equal(query(vm), NC_HV_RUNNING); /* the pre-check kept the guest running */
  /* A snapshot of a paused guest loads back paused. */
  CALL(g_hv->ops->pause(vm));
  CALL(g_hv->ops->snapshot_save(vm, "p1", 60000));
  CALL(g_hv->ops->snapshot_load(vm, "p1", 60000));
  assert_int_equal(query(vm), NC_HV_PAUSED);
  CALL(g_hv->ops->resume(vm));
  t0 = mono_ms();
  CALL(g_hv->ops->snapshot_delete(vm, "s1", 60000));
  printf("[timing] snapshot-delete: %lld ms\n", (long long)(mono_ms() - t0));
  CALL(g_hv->ops->snapshot_delete(vm, "p1", 60000));
  assert_int_equal(g_hv->ops->snapshot_delete(vm, "s1", 60000), -ENOENT);
  assert_int_equal(g_hv->ops->snapshot_save(vm, "", 60000), NC_E_INVALID);

  /* One QEMU per run dir. */
  struct nc_hv_vm *dup = NULL;
  assert_int_equal(g_hv->ops->launch(g_hv, &r.spec, &dup), -EEXIST);
  assert_null(dup);
  assert_int_equal(kill(pid, 0), 0);

  /* Release: QEMU keeps running; adopt finds it again. */
  g_hv->ops->release(vm);
  usleep(200 * 1000);
  assert_int_equal(nc__proc_alive(pid, -1), 1);
  vm = NULL;
  t0 = mono_ms();
  CALL(g_hv->ops->adopt(g_hv, &r.spec, &vm));
  printf("[timing] adopt: %lld ms\n", (long long)(mono_ms() - t0));
  assert_int_equal(nc_hv_qemu_vm_pid(vm), pid);
  assert_int_equal(query(vm), NC_HV_RUNNING);
  assert_non_null(nc_hv_qemu_vm_qmp(vm));

  /* A running guest's image is locked: no copy. */
  char clone[192];
  run_file(&r, "clone.qcow2", clone, sizeof clone);
  assert_int_equal(nc_hv_qemu_copy_disk("qemu-img", r.disk, clone), NC_E_HV);
  assert_false(file_exists(clone));

  t0 = mono_ms();
  assert_int_equal(g_hv->ops->kill(vm), 0); /* frees vm */
  printf("[timing] kill: %lld ms\n", (long long)(mono_ms() - t0));
  assert_int_equal(nc__proc_alive(pid, -1), 0);
  char p[192];
  static const char *const gone[] = {"qmp.sock", "serial.sock", "qemu.pid"};
  for (int i = 0; i < 3; i++) {
    run_file(&r, gone[i], p, sizeof p);
    if (file_exists(p))
      fail_msg("%s left behind after kill", p);
  }
  static const char *const kept[] = {"serial.log", "qemu.log"};
  for (int i = 0; i < 2; i++) {
    run_file(&r, kept[i], p, sizeof p);
    assert_true(file_exists(p));
  }
  vm = NULL;
  assert_int_equal(g_hv->ops->adopt(g_hv, &r.spec, &vm), -ESRCH);
  assert_null(vm);

  /* Stopped: the overlay copies into a standalone image. */
  assert_int_equal(nc_hv_qemu_copy_disk("qemu-img", r.disk, clone), 0);
  assert_int_equal(nc_hv_qemu_copy_disk("qemu-img", r.disk, clone), -EEXIST);
  char img[4096], out[8192];
  int code;
  assert_int_equal(nc__proc_find_program("qemu-img", img, sizeof img), 0);
  char *argv[] = {img, "info", "--output=json", clone, NULL};
  assert_int_equal(nc__proc_run(argv, 10000, out, sizeof out, &code), 0);
  assert_int_equal(code, 0);
  assert_non_null(strstr(out, "\"format\": \"qcow2\""));
  assert_null(strstr(out, "backing-filename"));
}

/* The launcher exits; QEMU must not notice. */
static void test_survives_launcher(void **state) {
  (void)state;
  struct run r;
  make_run(&r, "vm-orphan", false);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    struct nc_hv *hv;
    struct nc_hv_vm *vm;
    if (nc_hv_qemu_new(NULL, &hv) < 0 || hv->ops->launch(hv, &r.spec, &vm) < 0)
      _exit(1);
    hv->ops->release(vm);
    hv->ops->destroy(hv);
    _exit(0);
  }
  int st;
  assert_int_equal(waitpid(child, &st, 0), child);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  usleep(300 * 1000);
  struct nc_hv_vm *vm = NULL;
  CALL(g_hv->ops->adopt(g_hv, &r.spec, &vm));
  assert_int_equal(query(vm), NC_HV_RUNNING);
  pid_t pid = nc_hv_qemu_vm_pid(vm);
  assert_true(getsid(pid) != getsid(0));
  assert_int_equal(g_hv->ops->kill(vm), 0);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void test_adopt_stale(void **state) {
  (void)state;
  struct run r;
  make_run(&r, "vm-stale", false);
  struct nc_hv_vm *vm = NULL;
  /* No pid file at all. */
  assert_int_equal(g_hv->ops->adopt(g_hv, &r.spec, &vm), -ESRCH);
  char pidfile[192], text[32];
  run_file(&r, "qemu.pid", pidfile, sizeof pidfile);
  /* A live pid that is not this run dir's QEMU (a recycled pid): us. */
  snprintf(text, sizeof text, "%d\n", (int)getpid());
  write_file(pidfile, text);
  assert_int_equal(g_hv->ops->adopt(g_hv, &r.spec, &vm), -ESRCH);
  assert_true(file_exists(pidfile)); /* stale files are left alone */
  /* A dead pid. */
  pid_t child = fork();
  if (child == 0)
    _exit(0);
  waitpid(child, NULL, 0);
  snprintf(text, sizeof text, "%d\n", (int)child);
  write_file(pidfile, text);
  assert_int_equal(g_hv->ops->adopt(g_hv, &r.spec, &vm), -ESRCH);
  write_file(pidfile, "garbage\n");
  assert_int_equal(g_hv->ops->adopt(g_hv, &r.spec, &vm), -ESRCH);
  r.spec.run_dir = "/nonexistent/run/dir";
  assert_int_equal(g_hv->ops->adopt(g_hv, &r.spec, &vm), -ESRCH);
  assert_null(vm);
}

static void test_launch_failure(void **state) {
  (void)state;
  struct run r;
  make_run(&r, "vm-bad", false);
  char junk[192];
  run_file(&r, "junk-kernel", junk, sizeof junk);
  write_file(junk, "this is not a kernel\n");
  r.spec.kernel = junk;
  r.spec.initrd = NULL;
  r.spec.cmdline = NULL;
  struct nc_hv_vm *vm = NULL;
  int64_t t0 = mono_ms();
  assert_int_equal(g_hv->ops->launch(g_hv, &r.spec, &vm), NC_E_HV);
  assert_null(vm);
  assert_true(mono_ms() - t0 < 10000);
  char p[192];
  run_file(&r, "qmp.sock", p, sizeof p);
  assert_false(file_exists(p));

  r.spec.kernel = "/nonexistent/vmlinux";
  assert_int_equal(g_hv->ops->launch(g_hv, &r.spec, &vm), -ENOENT);
  r.spec.kernel = g_kernel;
  r.spec.memory_bytes = 1000;
  assert_int_equal(g_hv->ops->launch(g_hv, &r.spec, &vm), NC_E_INVALID);
}

static void wait_booted(const struct run *r) {
  char serial[192];
  run_file(r, "serial.log", serial, sizeof serial);
  int64_t deadline = mono_ms() + 20000;
  while (!file_contains(serial, g_expect) && mono_ms() < deadline)
    usleep(100 * 1000);
  if (!file_contains(serial, g_expect))
    fail_msg("guest in %s never printed \"%s\"", r->dir, g_expect);
}

/* After shutdown(): gone, handle still usable, files removed. */
static void check_shut_down(const struct run *r, struct nc_hv_vm *vm, pid_t pid) {
  assert_int_equal(query(vm), NC_HV_GONE);
  assert_int_equal(g_hv->ops->pause(vm), -ESRCH);
  struct nc_hv_stats st;
  assert_int_equal(g_hv->ops->stats(vm, &st), -ESRCH);
  assert_int_equal(nc__proc_alive(pid, -1), 0);
  char p[192];
  run_file(r, "qemu.pid", p, sizeof p);
  assert_false(file_exists(p));
  /* kill after shutdown, as vm/ does: harmless, frees the handle. */
  assert_int_equal(g_hv->ops->kill(vm), 0);
}

/* system_powerdown: the real guest runs acpid and powers off, so
 * shutdown() returns as soon as QEMU reports "shutdown". The multiboot
 * guest ignores ACPI, which exercises quit-after-timeout. */
static void test_shutdown(void **state) {
  (void)state;
  struct run r;
  make_run(&r, "vm-shut", false);
  struct nc_hv_vm *vm = NULL;
  CALL(g_hv->ops->launch(g_hv, &r.spec, &vm));
  pid_t pid = nc_hv_qemu_vm_pid(vm);
  assert_int_equal(g_hv->ops->snapshot_save(vm, "x", 10000), -ENOTSUP);
  int timeout_ms = 2000;
  if (g_real_guest) {
    wait_booted(&r);
    timeout_ms = 15000;
  }
  int64_t t0 = mono_ms();
  assert_int_equal(g_hv->ops->shutdown(vm, timeout_ms), 0);
  int64_t took = mono_ms() - t0;
  printf("[timing] shutdown: %lld ms (%s)\n", (long long)took,
         g_real_guest ? "guest powered off on ACPI" : "guest ignores ACPI; quit after timeout");
  if (g_real_guest && took >= timeout_ms)
    fail_msg("the guest did not power off on system_powerdown within %d ms", timeout_ms);
  assert_true(took < timeout_ms + 8000);
  check_shut_down(&r, vm, pid);
}

/* A guest that powers itself off leaves QEMU up (-no-shutdown) in state
 * "shutdown" (NC_HV_SHUTDOWN); shutdown() then only quits. Needs the real
 * guest: its serial console is a busybox shell. */
static void test_guest_poweroff(void **state) {
  (void)state;
  if (!g_real_guest)
    skip();
  struct run r;
  make_run(&r, "vm-poweroff", false);
  struct nc_hv_vm *vm = NULL;
  CALL(g_hv->ops->launch(g_hv, &r.spec, &vm));
  pid_t pid = nc_hv_qemu_vm_pid(vm);
  wait_booted(&r);
  char sock[192];
  run_file(&r, "serial.sock", sock, sizeof sock);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, sock, strlen(sock) + 1);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  const char cmd[] = "\npoweroff -f\n";
  assert_int_equal(write(fd, cmd, sizeof cmd - 1), (ssize_t)(sizeof cmd - 1));
  enum nc_hv_state st = NC_HV_RUNNING;
  int64_t deadline = mono_ms() + 15000;
  while ((st = query(vm)) != NC_HV_SHUTDOWN && mono_ms() < deadline) {
    char sink[4096]; /* keep reading: a stalled console stalls the guest */
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    usleep(100 * 1000);
  }
  close(fd);
  assert_int_equal(st, NC_HV_SHUTDOWN);
  assert_int_equal(nc__proc_alive(pid, -1), 1);
  int64_t t0 = mono_ms();
  assert_int_equal(g_hv->ops->shutdown(vm, 8000), 0);
  int64_t took = mono_ms() - t0;
  if (took > 2000)
    fail_msg("shutdown of a powered-off guest took %lld ms", (long long)took);
  check_shut_down(&r, vm, pid);
}

static void test_probe_kvm(void **state) {
  (void)state;
  int64_t t0 = mono_ms();
  int works = nc_hv_qemu_probe_kvm("qemu-system-x86_64", g_kernel,
                                   g_initrd[0] ? g_initrd : NULL, g_expect, 3000);
  int64_t took = mono_ms() - t0;
  printf("[e2e] kvm probe: %d after %lld ms\n", works, (long long)took);
  assert_true(works == 0 || works == 1);
  if (took > 3000 + 1200)
    fail_msg("probe took %lld ms for a 3000 ms budget", (long long)took);
  t0 = mono_ms();
  assert_int_equal(nc_hv_qemu_probe_kvm("qemu-system-x86_64", "/nonexistent", NULL, "x", 3000),
                   0);
  assert_true(mono_ms() - t0 < 1000);
  assert_int_equal(nc_hv_qemu_probe_kvm(NULL, g_kernel, NULL, "x", 100), NC_E_INVALID);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_lifecycle),
      cmocka_unit_test(test_survives_launcher),
      cmocka_unit_test(test_adopt_stale),
      cmocka_unit_test(test_launch_failure),
      cmocka_unit_test(test_shutdown),
      cmocka_unit_test(test_guest_poweroff),
      cmocka_unit_test(test_probe_kvm),
  };
  return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
