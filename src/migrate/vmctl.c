/* The VM's QEMU as live migration drives it: QMP, its run state, the disk
 * mirror job, and the boot files on its command line. Contracts in
 * migrate_int.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "hv/qemu.h"
#include "hv/qmp.h"
#include "migrate/migrate_int.h"
#include "vm/manager.h"

struct qmp_call {
  const char *cmd;
  json_t *args; /* stolen */
  json_t *ret;
  char desc[256];
};

static int do_qmp(struct nc_hv_vm *hv, void *arg) {
  struct qmp_call *c = arg;
  if (!hv)
    return -ESRCH;
  struct nc_qmp *q = nc_hv_qemu_vm_qmp(hv);
  if (!q)
    return -ENOTCONN;
  int rc = nc_qmp_execute(q, c->cmd, c->args, QMP_TIMEOUT_MS, &c->ret);
  if (rc)
    snprintf(c->desc, sizeof c->desc, "%s", nc_qmp_error_desc(q));
  return rc;
}

int nc__mig_qmp(struct nc_vmm_ext *x, const char *cmd, json_t *args, json_t **ret, char *desc,
                size_t dlen) {
  struct qmp_call c = {.cmd = cmd, .args = args};
  int rc = nc_vmm_ext_with_hv(x, do_qmp, &c);
  json_decref(args);
  if (desc)
    snprintf(desc, dlen, "%s", c.desc);
  if (ret)
    *ret = c.ret;
  else
    json_decref(c.ret);
  return rc;
}

const char *nc__mig_run_state(struct nc_vmm_ext *x, char *buf, size_t len) {
  json_t *r = NULL;
  buf[0] = '\0';
  if (nc__mig_qmp(x, "query-status", NULL, &r, NULL, 0) == 0) {
    const char *s = json_string_value(json_object_get(r, "status"));
    snprintf(buf, len, "%s", s ? s : "");
  }
  json_decref(r);
  return buf;
}

bool nc__mig_has_disk(struct nc_vmm_ext *x) {
  json_t *r = NULL;
  bool found = false;
  if (nc__mig_qmp(x, "query-named-block-nodes", NULL, &r, NULL, 0) == 0) {
    size_t i;
    json_t *n;
    json_array_foreach(r, i, n) {
      const char *name = json_string_value(json_object_get(n, "node-name"));
      if (name && strcmp(name, "disk0") == 0)
        found = true;
    }
  }
  json_decref(r);
  return found;
}

int nc__mig_mirror_state(struct nc_vmm_ext *x, uint64_t *done, uint64_t *total) {
  json_t *r = NULL;
  int st = -ENOENT;
  if (nc__mig_qmp(x, "query-block-jobs", NULL, &r, NULL, 0) == 0) {
    size_t i;
    json_t *j;
    json_array_foreach(r, i, j) {
      const char *dev = json_string_value(json_object_get(j, "device"));
      if (!dev || strcmp(dev, "mig-mirror") != 0)
        continue;
      *done = (uint64_t)json_integer_value(json_object_get(j, "offset"));
      *total = (uint64_t)json_integer_value(json_object_get(j, "len"));
      const char *status = json_string_value(json_object_get(j, "status"));
      st = json_is_true(json_object_get(j, "ready")) ? 1 : 0;
      if (status && (strcmp(status, "concluded") == 0 || strcmp(status, "aborting") == 0))
        st = -EIO;
    }
  }
  json_decref(r);
  return st;
}

void nc__mig_mirror_end(struct nc_vmm_ext *x, bool force, bool del) {
  nc__mig_qmp(x, "block-job-cancel",
              json_pack("{s:s, s:b}", "device", "mig-mirror", "force", force), NULL, NULL, 0);
  for (int i = 0; i < 300; i++) {
    uint64_t a, b;
    int st = nc__mig_mirror_state(x, &a, &b);
    if (st == -ENOENT)
      break;
    if (st == -EIO)
      nc__mig_qmp(x, "job-dismiss", json_pack("{s:s}", "id", "mig-mirror"), NULL, NULL, 0);
    /* On the hand-over the guest is paused: poll tightly at first. */
    usleep(i < 50 ? 2 * 1000 : 20 * 1000);
  }
  if (del)
    nc__mig_qmp(x, "blockdev-del", json_pack("{s:s}", "node-name", "mig-nbd"), NULL, NULL, 0);
}

static int get_pid(struct nc_hv_vm *hv, void *arg) {
  if (!hv)
    return -ESRCH;
  *(pid_t *)arg = nc_hv_qemu_vm_pid(hv);
  return 0;
}

void nc__mig_boot_files(struct nc_vmm_ext *x,
                        void (*fn)(void *arg, bool kernel, const char *path), void *arg) {
  pid_t pid = 0;
  if (nc_vmm_ext_with_hv(x, get_pid, &pid) != 0 || pid <= 0)
    return;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
  FILE *f = fopen(path, "rbe");
  if (!f)
    return;
  static const size_t cap = 64 * 1024;
  char *buf = malloc(cap + 1);
  size_t n = buf ? fread(buf, 1, cap, f) : 0;
  fclose(f);
  if (!buf)
    return;
  buf[n] = '\0';
  int next = 0; /* 1: -kernel, 2: -initrd */
  for (size_t i = 0; i < n;) {
    const char *a = buf + i;
    size_t l = strlen(a);
    if (next && a[0] == '/')
      fn(arg, next == 1, a);
    next = strcmp(a, "-kernel") == 0 ? 1 : strcmp(a, "-initrd") == 0 ? 2 : 0;
    i += l + 1;
  }
  free(buf);
}
