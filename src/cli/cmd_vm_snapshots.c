/* novacron vm snapshots NAME: GET /v1/vms/{name}/snapshots as NAME CREATED
 * AGE. */
#include "cli/call.h"
#include "cli/list.h"

static void snapshot_row(struct nc_cli *cli, const json_t *s, struct nc_cli_list_row *row,
                         void *data) {
  row->cells[0] = nc_cli_jstr(s, "name");
  row->cells[1] = nc_cli_jstr(s, "created_at");
  nc_cli_jage(cli, s, "created_at", row->buf[2], sizeof row->buf[2]);
  row->cells[2] = row->buf[2];
}

int nc_cli_cmd_vm_snapshots(struct nc_cli *cli, int argc, char **argv) {
  static const char *const headers[] = {"NAME", "CREATED", "AGE"};
  static const char *const names[] = {"NAME"};
  const struct nc_cli_list_spec spec = {.path = "/v1/vms/%s/snapshots", .pos_names = names,
      .array_key = "snapshots", .ncols = sizeof headers / sizeof *headers, .headers = headers,
      .row = snapshot_row};
  return nc_cli_list_run(cli, argc, argv, &spec);
}
