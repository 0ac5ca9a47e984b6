/* novacron vm snapshots NAME: GET /v1/vms/{name}/snapshots as NAME CREATED
 * AGE. */
#include "cli/action.h"
#include "cli/args.h"
#include "cli/call.h"
#include "cli/table.h"

int nc_cli_cmd_vm_snapshots(struct nc_cli *cli, int argc, char **argv) {
  static const char *const headers[] = {"NAME", "CREATED", "AGE"};
  static const char *const names[] = {"NAME"};
  const struct nc_cli_argspec spec = {NULL, names, 1, 1};
  const char *pos[1];
  char path[512];
  struct nc_cli_table *t = NULL;
  json_t *resp = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc__cli_path(cli, path, sizeof path, "/v1/vms/%s/snapshots", pos[0]);
  if (rc != 0)
    return rc;
  rc = nc_cli_call(cli, "GET", path, NULL, &resp);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, resp);
    goto out;
  }
  const json_t *snaps = json_object_get(resp, "snapshots");
  if (!json_is_array(snaps)) {
    rc = nc_cli_fail(cli, "GET %s: the answer has no \"snapshots\" list", path);
    goto out;
  }
  if (nc_cli_table_new(3, headers, &t) != 0) {
    rc = nc_cli_fail(cli, "out of memory");
    goto out;
  }
  size_t i;
  const json_t *s;
  json_array_foreach(snaps, i, s) {
    char age[32];
    nc_cli_jage(cli, s, "created_at", age, sizeof age);
    const char *cells[] = {nc_cli_jstr(s, "name"), nc_cli_jstr(s, "created_at"), age};
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
