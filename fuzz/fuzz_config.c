/* libFuzzer target for the novacrond config parser (src/boot/config.c):
 * bytes go to nc_config_parse over the built-in defaults, as
 * nc_config_load_file does with a file's contents.
 *
 * Properties checked (abort() on violation):
 *  - on success every string field is NUL-terminated inside its array and
 *    every value is in the range nc_config_set enforces;
 *  - on failure the result is -EINVAL with a non-empty, terminated message
 *    that names the line ("line N: ...") or the size cap.
 *
 * The ordinary test run replays corpus/config/ (tests/CMakeLists.txt). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "boot/config.h"
#include "util/log.h"
#include "vm/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TERMINATED(field) (memchr((field), '\0', sizeof(field)) != NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct nc_config c;
  nc_config_defaults(&c);
  char err[512];
  memset(err, 'x', sizeof err);
  int rc = nc_config_parse(&c, (const char *)data, size, err, sizeof err);
  if (rc == 0) {
    if (!TERMINATED(c.data_dir) || !TERMINATED(c.listen_host) || !TERMINATED(c.node_name) ||
        !TERMINATED(c.log_level) || !TERMINATED(c.qemu) || !TERMINATED(c.qemu_img))
      abort();
    if (c.data_dir[0] != '/')
      abort();
    if (c.listen_host[0] && (c.listen_port < 0 || c.listen_port > 65535))
      abort();
    if (!nc_name_valid(c.node_name))
      abort();
    enum nc_log_level l;
    if (nc_log_parse_level(c.log_level, &l) != 0)
      abort();
    if (c.accel != NC_ACCEL_PREF_AUTO && c.accel != NC_ACCEL_PREF_TCG &&
        c.accel != NC_ACCEL_PREF_KVM)
      abort();
    if (c.stop_timeout_s < 1 || c.stop_timeout_s > 3600 || c.reconcile_interval_ms < 100 ||
        c.reconcile_interval_ms > 60000 || c.kvm_probe_timeout_ms < 500 ||
        c.kvm_probe_timeout_ms > 120000)
      abort();
  } else {
    if (rc != -EINVAL || !TERMINATED(err) || err[0] == '\0')
      abort();
    if (strncmp(err, "line ", 5) != 0 && size <= NC_CONFIG_FILE_MAX)
      abort();
  }
  return 0;
}
