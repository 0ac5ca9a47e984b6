/* libFuzzer target for the fence file parser (src/cluster/fence.c), which
 * the fence guard runs on whatever it finds in its directory.
 *
 * Properties checked (abort() on violation): the result is 0, -EINVAL or
 * NC_E_TOOBIG; the vm count stays within NC_FENCE_VMS_MAX; every parsed
 * run dir is absolute, NUL-terminated within its line cap and has no
 * newline. The ordinary test run replays corpus/fence/. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fence.h"
#include "util/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct nc_fence_file f;
  int rc = nc_fence_parse((const char *)data, size, &f);
  if (rc != 0 && rc != -EINVAL && rc != NC_E_TOOBIG)
    abort();
  if (f.nvms > NC_FENCE_VMS_MAX || f.deadline_ms < 0)
    abort();
  for (size_t i = 0; i < f.nvms; i++) {
    const char *v = f.vms[i];
    if (!memchr(v, '\0', NC_FENCE_LINE_MAX) || v[0] != '/' || strchr(v, '\n'))
      abort();
  }
  nc_fence_file_clear(&f);
  return 0;
}
