/* qemu.h helpers that run QEMU's programs without a VM handle: the KVM
 * probe, the version check and the qemu-img wrappers. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv/machine.h"
#include "hv/proc.h"
#include "hv/qemu.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#define VERSION_TIMEOUT_MS 5000
#define MACHINES_TIMEOUT_MS 5000
#define IMG_INFO_TIMEOUT_MS 30000
#define IMG_CREATE_TIMEOUT_MS 60000
#define IMG_OUTPUT_MAX (256 * 1024)
#define PROBE_EXPECT_MAX 256
#define PROBE_POLL_MS 50
#define PROBE_KILL_WAIT_MS 900

static int64_t now_ms(void) { return nc_mono_ms(nc_clock_system()); }

/* qemu-img output on one line, for a log record. */
static void one_line(char *s) {
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
    s[--n] = '\0';
  for (size_t i = 0; i < n; i++)
    if (s[i] == '\n' || s[i] == '\r')
      s[i] = '|';
}

int nc_hv_qemu_version(const char *qemu_path, int *major, int *minor) {
  char exe[PATH_MAX];
  int rc = nc__proc_find_program(qemu_path, exe, sizeof exe);
  if (rc < 0)
    return rc;
  char *argv[] = {exe, "--version", NULL};
  char out[4096];
  int code;
  rc = nc__proc_run(argv, VERSION_TIMEOUT_MS, out, sizeof out, &code);
  if (rc < 0)
    return rc;
  /* "QEMU emulator version 10.0.2 (Debian ...)" */
  const char *v = strstr(out, "version ");
  if (code != 0 || !v || sscanf(v + 8, "%d.%d", major, minor) != 2)
    return NC_E_PROTO;
  return 0;
}

int nc_hv_qemu_machines(const char *qemu_path, struct nc_hv_machines *out) {
  char exe[PATH_MAX];
  int rc = nc__proc_find_program(qemu_path, exe, sizeof exe);
  if (rc < 0)
    return rc;
  char *argv[] = {exe, "-machine", "help", NULL};
  /* One byte more than the cap, so output past it is seen (and refused by
   * the parser) rather than cut silently. */
  size_t cap = NC_HV_MACHINE_HELP_MAX + 2;
  char *text = malloc(cap);
  if (!text)
    return -ENOMEM;
  int code;
  rc = nc__proc_run(argv, MACHINES_TIMEOUT_MS, text, cap, &code);
  if (rc == 0 && code != 0)
    rc = NC_E_HV;
  if (rc == 0)
    rc = nc_hv_machines_parse(text, out);
  free(text);
  return rc;
}

/* Looks for expect in the new bytes of fd, carrying the tail of the last
 * read over so a match split across reads is still found. */
static bool scan_for(int fd, const char *expect, char *carry, size_t *carry_len) {
  size_t elen = strlen(expect);
  char buf[PROBE_EXPECT_MAX + 4096];
  for (;;) {
    memcpy(buf, carry, *carry_len);
    ssize_t r = read(fd, buf + *carry_len, sizeof buf - PROBE_EXPECT_MAX);
    if (r <= 0)
      return false;
    size_t n = *carry_len + (size_t)r;
    if (memmem(buf, n, expect, elen))
      return true;
    size_t keep = n < elen - 1 ? n : elen - 1;
    memcpy(carry, buf + n - keep, keep);
    *carry_len = keep;
  }
}

int nc_hv_qemu_probe_kvm(const char *qemu, const char *kernel, const char *initrd,
                         const char *expect, int timeout_ms) {
  if (!qemu || !kernel || !expect || !*expect || strlen(expect) > PROBE_EXPECT_MAX)
    return NC_E_INVALID;
  int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  int kfd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kfd < 0) {
    nc_info("hv", "kvm probe: /dev/kvm: %s; guests will use TCG", strerror(errno));
    return 0;
  }
  close(kfd);

  char exe[PATH_MAX], kabs[PATH_MAX], iabs[PATH_MAX];
  if (nc__proc_find_program(qemu, exe, sizeof exe) < 0 || !realpath(kernel, kabs) ||
      (initrd && !realpath(initrd, iabs))) {
    nc_warn("hv", "kvm probe: qemu, kernel or initrd missing; treating KVM as unusable");
    return 0;
  }
  char dir[] = "/tmp/nc-kvm-probe-XXXXXX";
  if (!mkdtemp(dir)) {
    nc_warn("hv", "kvm probe: mkdtemp: %s", strerror(errno));
    return 0;
  }
  char serial_arg[128], serial[96], log[96];
  snprintf(serial, sizeof serial, "%s/serial.log", dir);
  snprintf(serial_arg, sizeof serial_arg, "file:%s", serial);
  snprintf(log, sizeof log, "%s/qemu.log", dir);

  char *argv[32];
  int n = 0;
  argv[n++] = exe;
  char *fixed[] = {"-machine", "pc", "-accel", "kvm", "-m", "256M", "-smp", "1",
                   "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                   "-serial", serial_arg, "-kernel", kabs};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    argv[n++] = fixed[i];
  if (initrd) {
    argv[n++] = "-initrd";
    argv[n++] = iabs;
  }
  argv[n++] = "-append";
  argv[n++] = "console=ttyS0 panic=-1";
  argv[n] = NULL;

  pid_t pid;
  int pidfd;
  int found = 0;
  int rc = nc__proc_spawn_detached(argv, log, &pid, &pidfd);
  if (rc < 0) {
    nc_warn("hv", "kvm probe: cannot start %s: %s", exe, nc_strerror(rc));
    goto cleanup;
  }
  int sfd = -1;
  char carry[PROBE_EXPECT_MAX];
  size_t carry_len = 0;
  for (;;) {
    if (sfd < 0)
      sfd = open(serial, O_RDONLY | O_CLOEXEC);
    if (sfd >= 0 && scan_for(sfd, expect, carry, &carry_len)) {
      found = 1;
      break;
    }
    if (!nc__proc_alive(pid, pidfd))
      break;
    int64_t left = deadline - now_ms();
    if (left <= 0)
      break;
    nc__proc_sleep_ms(left < PROBE_POLL_MS ? (int)left : PROBE_POLL_MS);
  }
  if (sfd >= 0)
    close(sfd);
  nc__proc_signal(pid, pidfd, SIGKILL);
  if (nc__proc_wait_gone(pid, pidfd, PROBE_KILL_WAIT_MS) < 0)
    nc_warn("hv", "kvm probe: qemu pid %d did not die within %d ms", (int)pid,
            PROBE_KILL_WAIT_MS);
  if (pidfd >= 0)
    close(pidfd);
  nc_info("hv", "kvm probe: %s", found ? "KVM boots guests" : "KVM does not boot guests; using TCG");

cleanup:
  unlink(serial);
  unlink(log);
  rmdir(dir);
  return found;
}

/* qemu-img treats "name:..." before any '/' as a protocol; "./" keeps a
 * relative file name a file name. */
static void as_file_name(const char *path, char *out, size_t cap) {
  snprintf(out, cap, "%s%s", path[0] == '/' ? "" : "./", path);
}

/* Reads the image format of an existing file with `qemu-img info`. -U
 * (force-share) because a base image is usually open read-only in running
 * guests; reading its header is safe. */
static int detect_format(const char *img, const char *path, char *fmt, size_t cap) {
  char *argv[] = {(char *)img, "info", "-U", "--output=json", (char *)path, NULL};
  char *out = malloc(IMG_OUTPUT_MAX);
  if (!out)
    return -ENOMEM;
  int code;
  int rc = nc__proc_run(argv, IMG_INFO_TIMEOUT_MS, out, IMG_OUTPUT_MAX, &code);
  if (rc == 0 && code != 0) {
    one_line(out);
    nc_error("hv", "qemu-img info %s: %s", path, out);
    rc = NC_E_HV;
  }
  if (rc == 0) {
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    const char *f = json_string_value(json_object_get(root, "format"));
    if (f && strlen(f) < cap && strspn(f, "abcdefghijklmnopqrstuvwxyz0123456789-_") == strlen(f))
      snprintf(fmt, cap, "%s", f);
    else
      rc = NC_E_PROTO;
    json_decref(root);
  }
  free(out);
  return rc;
}

static int run_img(char *const argv[], int timeout_ms, const char *what) {
  char out[4096];
  int code;
  int rc = nc__proc_run(argv, timeout_ms, out, sizeof out, &code);
  if (rc < 0) {
    nc_error("hv", "%s: %s", what, nc_strerror(rc));
    return rc;
  }
  if (code != 0) {
    one_line(out);
    nc_error("hv", "%s failed (exit %d): %s", what, code, out);
    return NC_E_HV;
  }
  return 0;
}

int nc_hv_qemu_create_overlay(const char *qemu_img, const char *base, const char *overlay) {
  char img[PATH_MAX], babs[PATH_MAX], ofile[PATH_MAX + 2], fmt[32];
  int rc = nc__proc_find_program(qemu_img, img, sizeof img);
  if (rc < 0)
    return rc;
  if (!realpath(base, babs)) {
    rc = -errno;
    nc_error("hv", "overlay base \"%s\": %s", base, strerror(errno));
    return rc;
  }
  if (access(overlay, F_OK) == 0) {
    nc_error("hv", "overlay \"%s\" already exists; remove it or pick another path", overlay);
    return -EEXIST;
  }
  rc = detect_format(img, babs, fmt, sizeof fmt);
  if (rc < 0)
    return rc;
  as_file_name(overlay, ofile, sizeof ofile);
  char *argv[] = {img, "create", "-q", "-f", "qcow2", "-b", babs, "-F", fmt, ofile, NULL};
  char what[PATH_MAX + 32];
  snprintf(what, sizeof what, "qemu-img create %s", overlay);
  return run_img(argv, IMG_CREATE_TIMEOUT_MS, what);
}

int nc_hv_qemu_copy_disk(const char *qemu_img, const char *src, const char *dst) {
  char img[PATH_MAX], sabs[PATH_MAX], dfile[PATH_MAX + 2], fmt[32];
  int rc = nc__proc_find_program(qemu_img, img, sizeof img);
  if (rc < 0)
    return rc;
  if (!realpath(src, sabs)) {
    rc = -errno;
    nc_error("hv", "disk copy source \"%s\": %s", src, strerror(errno));
    return rc;
  }
  if (access(dst, F_OK) == 0) {
    nc_error("hv", "disk copy target \"%s\" already exists", dst);
    return -EEXIST;
  }
  rc = detect_format(img, sabs, fmt, sizeof fmt);
  if (rc < 0)
    return rc;
  as_file_name(dst, dfile, sizeof dfile);
  char *argv[] = {img, "convert", "-q", "-f", fmt, "-O", "qcow2", sabs, dfile, NULL};
  char what[PATH_MAX + 32];
  snprintf(what, sizeof what, "qemu-img convert %s -> %s", src, dst);
  rc = run_img(argv, -1, what);
  if (rc < 0)
    unlink(dst);
  return rc;
}
