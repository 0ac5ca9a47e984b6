/* novacron op list: GET /v1/operations (newest first) as ID KIND TARGET
 * STATUS PROGRESS AGE. */
#include "cli/call.h"
#include "cli/list.h"
#include "cli/op.h"

static void op_row(struct nc_cli *cli, const json_t *op, struct nc_cli_list_row *row,
                   void *data) {
  row->cells[0] = nc_cli_jstr(op, "id");
  row->cells[1] = nc_cli_jstr(op, "kind");
  row->cells[2] = nc_cli_jstr(op, "target");
  row->cells[3] = nc_cli_jstr(op, "status");
  nc_cli_op_progress(op, row->buf[4], sizeof row->buf[4]);
  row->cells[4] = row->buf[4];
  nc_cli_jage(cli, op, "created_at", row->buf[5], sizeof row->buf[5]);
  row->cells[5] = row->buf[5];
}

int nc_cli_cmd_op_list(struct nc_cli *cli, int argc, char **argv) {
  static const char *const headers[] = {"ID", "KIND", "TARGET", "STATUS", "PROGRESS", "AGE"};
  const struct nc_cli_list_spec spec = {.path = "/v1/operations", .array_key = "operations",
      .ncols = sizeof headers / sizeof *headers, .headers = headers, .row = op_row};
  return nc_cli_list_run(cli, argc, argv, &spec);
}
