/* libFuzzer target for the base-disk identity's wire form (src/vm/imgid.c,
 * nc_imgid_from_json): "base_disk" arrives in POST /v1/migrations/incoming
 * from another node, and the destination parses it before anything else
 * is done with it.
 *
 * Properties checked (abort() on violation):
 *  - success only for an object of exactly "size" (an integer >= 0) and
 *    "xxh128" (32 hex digits);
 *  - on success, nc_imgid_to_json and parsing again give the same identity,
 *    and the printed hash is the input's in lowercase;
 *  - on failure the result is NC_E_INVALID.
 *
 * The ordinary test run replays corpus/imgid/ (tests/CMakeLists.txt). */
#include <ctype.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "vm/imgid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096)
    return 0;
  json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
  if (!j)
    return 0;
  struct nc_imgid id, again;
  int rc = nc_imgid_from_json(j, &id);
  if (rc != 0) {
    if (rc != NC_E_INVALID)
      abort();
    json_decref(j);
    return 0;
  }
  json_t *sz = json_object_get(j, "size");
  const char *hex = json_string_value(json_object_get(j, "xxh128"));
  if (!json_is_object(j) || json_object_size(j) != 2 || !json_is_integer(sz) ||
      json_integer_value(sz) < 0 || (uint64_t)json_integer_value(sz) != id.size_bytes || !hex ||
      strlen(hex) != NC_IMGID_HEX_LEN)
    abort();
  char out[NC_IMGID_HEX_LEN + 1];
  nc_imgid_hex(&id, out);
  for (int i = 0; i < NC_IMGID_HEX_LEN; i++)
    if (!isxdigit((unsigned char)hex[i]) || out[i] != tolower((unsigned char)hex[i]))
      abort();
  json_t *back = nc_imgid_to_json(&id);
  if (nc_imgid_from_json(back, &again) != 0 || !nc_imgid_equal(&id, &again))
    abort();
  json_decref(back);
  json_decref(j);
  return 0;
}
