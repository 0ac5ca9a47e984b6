/* novacron image list: GET /v1/images as NAME KERNEL INITRD DISK CMDLINE. */
#include "cli/call.h"
#include "cli/list.h"

static void image_row(struct nc_cli *cli, const json_t *img, struct nc_cli_list_row *row,
                      void *data) {
  static const char *const keys[] = {"name", "kernel", "initrd", "disk", "cmdline"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    row->cells[i] = nc_cli_jstr(img, keys[i]);
}

int nc_cli_cmd_image_list(struct nc_cli *cli, int argc, char **argv) {
  static const char *const headers[] = {"NAME", "KERNEL", "INITRD", "DISK", "CMDLINE"};
  const struct nc_cli_list_spec spec = {.path = "/v1/images", .array_key = "images",
      .ncols = sizeof headers / sizeof *headers, .headers = headers, .row = image_row};
  return nc_cli_list_run(cli, argc, argv, &spec);
}
