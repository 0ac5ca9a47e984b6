/* novacron image list: GET /v1/images as NAME KERNEL INITRD DISK CMDLINE. */
#include "cli/args.h"
#include "cli/call.h"
#include "cli/table.h"

int nc_cli_cmd_image_list(struct nc_cli *cli, int argc, char **argv) {
  static const char *const headers[] = {"NAME", "KERNEL", "INITRD", "DISK", "CMDLINE"};
  const struct nc_cli_argspec spec = {NULL, NULL, 0, 0};
  struct nc_cli_table *t = NULL;
  json_t *resp = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, NULL);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc_cli_call(cli, "GET", "/v1/images", NULL, &resp);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, resp);
    goto out;
  }
  const json_t *images = json_object_get(resp, "images");
  if (!json_is_array(images)) {
    rc = nc_cli_fail(cli, "GET /v1/images: the answer has no \"images\" list");
    goto out;
  }
  if (nc_cli_table_new(5, headers, &t) != 0) {
    rc = nc_cli_fail(cli, "out of memory");
    goto out;
  }
  size_t i;
  const json_t *img;
  json_array_foreach(images, i, img) {
    const char *cells[] = {nc_cli_jstr(img, "name"), nc_cli_jstr(img, "kernel"),
                           nc_cli_jstr(img, "initrd"), nc_cli_jstr(img, "disk"),
                           nc_cli_jstr(img, "cmdline")};
    if (nc_cli_table_add(t, cells) != 0) {
      rc = nc_cli_fail(cli, "out of memory");
      goto out;
    }
  }
  nc_cli_table_print(t, cli->out);
out:
  nc_cli_table_destroy(t);
  json_decref(resp);
  return rc;
}
