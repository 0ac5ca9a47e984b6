/* novacron vm list: GET /v1/vms, as NAME STATE VCPUS MEMORY IMAGE NODE AGE. */
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/list.h"

#include <inttypes.h>
#include <stdio.h>

/* MEMORY column: memory_bytes for a person, else the string as stored. */
static void memory_cell(const json_t *vm, char *buf, size_t n) {
  int64_t bytes = nc_cli_jint(vm, "memory_bytes", -1);
  if (bytes > 0)
    nc_cli_size_human((uint64_t)bytes, buf, n);
  else
    snprintf(buf, n, "%s", nc_cli_jstr_or(vm, "memory", "-"));
}

static void vm_row(struct nc_cli *cli, const json_t *vm, struct nc_cli_list_row *row,
                   void *data) {
  int64_t vcpus = nc_cli_jint(vm, "vcpus", -1);
  row->cells[0] = nc_cli_jstr(vm, "name");
  row->cells[1] = nc_cli_jstr(vm, "state");
  if (vcpus >= 0) {
    snprintf(row->buf[2], sizeof row->buf[2], "%" PRId64, vcpus);
    row->cells[2] = row->buf[2];
  }
  memory_cell(vm, row->buf[3], sizeof row->buf[3]);
  row->cells[3] = row->buf[3];
  row->cells[4] = nc_cli_jstr(vm, "image");
  row->cells[5] = nc_cli_jstr(vm, "node");
  nc_cli_jage(cli, vm, "created_at", row->buf[6], sizeof row->buf[6]);
  row->cells[6] = row->buf[6];
}

int nc_cli_cmd_vm_list(struct nc_cli *cli, int argc, char **argv) {
  static const char *const headers[] = {"NAME", "STATE", "VCPUS", "MEMORY", "IMAGE", "NODE", "AGE"};
  const struct nc_cli_list_spec spec = {.path = "/v1/vms", .array_key = "vms",
      .ncols = sizeof headers / sizeof *headers, .headers = headers, .row = vm_row};
  return nc_cli_list_run(cli, argc, argv, &spec);
}
