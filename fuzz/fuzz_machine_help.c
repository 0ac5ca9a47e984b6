/* libFuzzer target for the `-machine help` parser (src/hv/machine.c,
 * nc_hv_machines_parse): its input is another program's output, read
 * into a capped buffer.
 *
 * Properties checked (abort() on violation):
 *  - the result is 0, NC_E_PROTO or NC_E_TOOBIG, never anything else;
 *  - on success every entry has a valid name, at most NC_HV_MACHINES_MAX;
 *  - whatever resolves, resolves to a listed, valid, non-alias type, and
 *    only a resolvable name is usable;
 *  - formatting the list stays inside its buffer and is NUL-terminated.
 *
 * The ordinary test run replays corpus/machine_help/ (tests/CMakeLists.txt). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hv/machine.h"
#include "util/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct nc_hv_machines m;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > NC_HV_MACHINE_HELP_MAX + 16)
    return 0;
  char *text = malloc(size + 1);
  if (!text)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  int rc = nc_hv_machines_parse(text, &m);
  free(text);
  if (rc != 0) {
    if (rc != NC_E_PROTO && rc != NC_E_TOOBIG)
      abort();
    return 0;
  }
  if (m.n == 0 || m.n > NC_HV_MACHINES_MAX)
    abort();
  for (size_t i = 0; i < m.n; i++) {
    const char *name = m.v[i].name;
    if (!nc_hv_machine_name_valid(name))
      abort();
    const char *t = nc_hv_machines_resolve(&m, name);
    if (t && (!nc_hv_machine_name_valid(t) || !nc_hv_machines_find(&m, t) ||
              nc_hv_machines_find(&m, t)->alias_of[0]))
      abort();
    if (!t && nc_hv_machine_usable(&m, name))
      abort();
  }
  char out[200];
  memset(out, 'x', sizeof out);
  nc_hv_machines_format(&m, out, 100);
  if (strlen(out) >= 100 || out[100] != 'x')
    abort();
  return 0;
}
