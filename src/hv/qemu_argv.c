#include "hv/qemu_argv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/machine.h"
#include "util/err.h"

#define MIB ((uint64_t)1 << 20)
#define MIN_MEMORY_BYTES (16 * MIB)
#define MAX_MEMORY_BYTES ((uint64_t)1 << 40)
#define MAX_VCPUS 255 /* machine "pc" without an IOMMU for x2APIC */

char *nc__qemu_opt_escape(const char *s) {
  size_t n = 0;
  for (const char *p = s; *p; p++)
    n += (*p == ',') ? 2 : 1;
  char *out = malloc(n + 1);
  if (!out)
    return NULL;
  char *o = out;
  for (const char *p = s; *p; p++) {
    *o++ = *p;
    if (*p == ',')
      *o++ = ',';
  }
  *o = '\0';
  return out;
}

int nc__qemu_qmp_arg(const char *run_dir, char *out, size_t out_cap) {
  char *esc = nc__qemu_opt_escape(run_dir);
  if (!esc)
    return -ENOMEM;
  int n = snprintf(out, out_cap, "unix:%s/qmp.sock,server=on,wait=off", esc);
  free(esc);
  return (n < 0 || (size_t)n >= out_cap) ? -ENAMETOOLONG : 0;
}

void nc__qemu_argv_free(struct nc__qemu_argv *a) {
  for (size_t i = 0; i < a->argc; i++)
    free(a->argv[i]);
  free(a->argv);
  a->argv = NULL;
  a->argc = a->cap = 0;
}

static int push(struct nc__qemu_argv *a, char *s) {
  if (!s)
    return -ENOMEM;
  if (a->argc + 2 > a->cap) {
    size_t ncap = a->cap ? a->cap * 2 : 48;
    char **nv = realloc(a->argv, ncap * sizeof *nv);
    if (!nv) {
      free(s);
      return -ENOMEM;
    }
    a->argv = nv;
    a->cap = ncap;
  }
  a->argv[a->argc++] = s;
  a->argv[a->argc] = NULL;
  return 0;
}

static int pushs(struct nc__qemu_argv *a, const char *s) { return push(a, strdup(s)); }

static int pushf(struct nc__qemu_argv *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int pushf(struct nc__qemu_argv *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  return push(a, n < 0 ? NULL : s);
}

static int check_spec(const struct nc_hv_spec *s) {
  if (!s->name || !*s->name || !s->run_dir || s->run_dir[0] != '/')
    return NC_E_INVALID;
  if (s->vcpus < 1 || s->vcpus > MAX_VCPUS)
    return NC_E_INVALID;
  if (s->memory_bytes < MIN_MEMORY_BYTES || s->memory_bytes > MAX_MEMORY_BYTES ||
      s->memory_bytes % MIB != 0)
    return NC_E_INVALID;
  if (!s->kernel && (s->initrd || s->cmdline))
    return NC_E_INVALID;
  if ((s->kernel && s->kernel[0] != '/') || (s->initrd && s->initrd[0] != '/') ||
      (s->disk && s->disk[0] != '/'))
    return NC_E_INVALID;
  if (s->accel != NC_ACCEL_TCG && s->accel != NC_ACCEL_KVM)
    return NC_E_INVALID;
  if (s->incoming && strcmp(s->incoming, "defer") != 0)
    return NC_E_INVALID;
  if (s->machine && !nc_hv_machine_name_valid(s->machine))
    return NC_E_INVALID;
  return 0;
}

int nc__qemu_argv_build(const char *qemu, const struct nc_hv_spec *spec,
                        struct nc__qemu_argv *out) {
  memset(out, 0, sizeof *out);
  int rc = check_spec(spec);
  if (rc < 0)
    return rc;
  char *name = nc__qemu_opt_escape(spec->name);
  char *run = nc__qemu_opt_escape(spec->run_dir);
  char *disk = spec->disk ? nc__qemu_opt_escape(spec->disk) : NULL;
  char qmp[4200];
  rc = -ENOMEM;
  if (!name || !run || (spec->disk && !disk))
    goto out;
  rc = nc__qemu_qmp_arg(spec->run_dir, qmp, sizeof qmp);
  if (rc < 0)
    goto out;

  struct nc__qemu_argv *a = out;
  /* Every push is checked through rc; the first failure stops the chain. */
  rc = pushs(a, qemu);
  if (!rc) rc = pushs(a, "-name");
  if (!rc) rc = pushf(a, "guest=%s", name);
  if (!rc) rc = pushs(a, "-machine");
  /* A versioned type (pinned when the VM was created) keeps the guest's
   * hardware across QEMU upgrades and lets it migrate between releases. */
  if (!rc) rc = pushs(a, spec->machine ? spec->machine : "pc");
  if (!rc) rc = pushs(a, "-accel");
  if (!rc) rc = pushs(a, spec->accel == NC_ACCEL_KVM ? "kvm" : "tcg");
  if (!rc) rc = pushs(a, "-m");
  if (!rc) rc = pushf(a, "%" PRIu64 "M", spec->memory_bytes / MIB);
  if (!rc) rc = pushs(a, "-smp");
  if (!rc) rc = pushf(a, "%d", spec->vcpus);
  if (!rc) rc = pushs(a, "-nodefaults");
  if (!rc) rc = pushs(a, "-no-user-config");
  if (!rc) rc = pushs(a, "-display");
  if (!rc) rc = pushs(a, "none");
  /* The guest powering off leaves QEMU up in run state "shutdown", so
   * the driver can tell a guest power-off from a crash. */
  if (!rc) rc = pushs(a, "-no-shutdown");
  if (!rc) rc = pushs(a, "-msg");
  if (!rc) rc = pushs(a, "timestamp=on");
  if (!rc) rc = pushs(a, "-pidfile");
  if (!rc) rc = pushf(a, "%s/qemu.pid", spec->run_dir);
  if (!rc) rc = pushs(a, "-qmp");
  if (!rc) rc = pushs(a, qmp);
  /* logfile= records the console even while nobody is attached to the
   * socket (checked by tests/unit/hv e2e). logappend=on opens it with
   * O_APPEND, so the daemon can cap it (util/logcap.h) without leaving a
   * hole; the driver truncates it at launch instead. */
  if (!rc) rc = pushs(a, "-chardev");
  if (!rc)
    rc = pushf(a,
               "socket,id=ser0,path=%s/serial.sock,server=on,wait=off,logfile=%s/serial.log,"
               "logappend=on",
               run, run);
  if (!rc) rc = pushs(a, "-serial");
  if (!rc) rc = pushs(a, "chardev:ser0");
  if (spec->kernel) {
    /* -kernel/-initrd/-append take their value verbatim (no option
     * parsing), so they are not escaped. */
    if (!rc) rc = pushs(a, "-kernel");
    if (!rc) rc = pushs(a, spec->kernel);
    if (spec->initrd) {
      if (!rc) rc = pushs(a, "-initrd");
      if (!rc) rc = pushs(a, spec->initrd);
    }
    if (spec->cmdline) {
      if (!rc) rc = pushs(a, "-append");
      if (!rc) rc = pushs(a, spec->cmdline);
    }
  }
  if (spec->disk) {
    /* node-name names the qcow2 format node: snapshot-save/-load/-delete
     * address it, and it also receives the vmstate. */
    if (!rc) rc = pushs(a, "-drive");
    if (!rc) rc = pushf(a, "file=%s,if=virtio,format=qcow2,node-name=disk0", disk);
  }
  if (spec->nic_user) {
    if (!rc) rc = pushs(a, "-nic");
    if (!rc) rc = pushs(a, "user,model=virtio-net-pci");
  }
  if (spec->incoming) {
    /* -S: the guest stays paused after the incoming migration completes,
     * so the destination resumes it only once it owns the VM. */
    if (!rc) rc = pushs(a, "-S");
    if (!rc) rc = pushs(a, "-incoming");
    if (!rc) rc = pushs(a, "defer");
  }

out:
  if (rc < 0)
    nc__qemu_argv_free(out);
  free(name);
  free(run);
  free(disk);
  return rc;
}
