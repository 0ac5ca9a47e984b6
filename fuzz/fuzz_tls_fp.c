/* libFuzzer target for the certificate fingerprint parser (src/dwcp/tls.c,
 * nc_tls_fp_parse): the text arrives in POST /v1/migrations/incoming and
 * its answer, from another node.
 *
 * Properties checked (abort() on violation):
 *  - success only for 64 hex digits, or 32 hex pairs joined by ':' (95);
 *  - on success, printing and parsing again gives the same 32 bytes;
 *  - on failure the result is NC_E_INVALID.
 *
 * The ordinary test run replays corpus/tls_fp/ (tests/CMakeLists.txt). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwcp/tls.h"
#include "util/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 256)
    return 0;
  char text[257];
  memcpy(text, data, size);
  text[size] = '\0';
  uint8_t fp[NC_TLS_FP_LEN], again[NC_TLS_FP_LEN];
  int rc = nc_tls_fp_parse(text, fp);
  if (rc != 0) {
    if (rc != NC_E_INVALID)
      abort();
    return 0;
  }
  size_t n = strlen(text);
  if (n != NC_TLS_FP_HEX_LEN && n != NC_TLS_FP_LEN * 3 - 1)
    abort();
  char hex[NC_TLS_FP_HEX_LEN + 1];
  nc_tls_fp_to_hex(fp, hex);
  if (strlen(hex) != NC_TLS_FP_HEX_LEN || nc_tls_fp_parse(hex, again) != 0 ||
      memcmp(fp, again, sizeof fp) != 0)
    abort();
  return 0;
}
