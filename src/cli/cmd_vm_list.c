/* novacron vm list: GET /v1/vms, as NAME STATE VCPUS MEMORY IMAGE NODE AGE. */
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/table.h"

#include <inttypes.h>

/* MEMORY column: memory_bytes for a person, else the string as stored. */
static void memory_cell(const json_t *vm, char *buf, size_t n) {
  int64_t bytes = nc_cli_jint(vm, "memory_bytes", -1);
  if (bytes > 0)
    nc_cli_size_human((uint64_t)bytes, buf, n);
  else
    snprintf(buf, n, "%s", nc_cli_jstr_or(vm, "memory", "-"));
}

int nc_cli_cmd_vm_list(struct nc_cli *cli, int argc, char **argv) {
  static const char *const headers[] = {"NAME", "STATE", "VCPUS", "MEMORY", "IMAGE", "NODE", "AGE"};
  const struct nc_cli_argspec spec = {NULL, NULL, 0, 0};
  struct nc_cli_table *t = NULL;
  json_t *resp = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, NULL);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc_cli_call(cli, "GET", "/v1/vms", NULL, &resp);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, resp);
    goto out;
  }
  const json_t *vms = json_object_get(resp, "vms");
  if (!json_is_array(vms)) {
    rc = nc_cli_fail(cli, "GET /v1/vms: the answer has no \"vms\" list");
    goto out;
  }
  if (nc_cli_table_new(7, headers, &t) != 0) {
    rc = nc_cli_fail(cli, "out of memory");
    goto out;
  }
  size_t i;
  const json_t *vm;
  json_array_foreach(vms, i, vm) {
    char vcpus[24] = "-", mem[32], age[32];
    int64_t n = nc_cli_jint(vm, "vcpus", -1);
    if (n >= 0)
      snprintf(vcpus, sizeof vcpus, "%" PRId64, n);
    memory_cell(vm, mem, sizeof mem);
    nc_cli_jage(cli, vm, "created_at", age, sizeof age);
    const char *cells[] = {nc_cli_jstr(vm, "name"), nc_cli_jstr(vm, "state"), vcpus, mem,
                           nc_cli_jstr(vm, "image"), nc_cli_jstr(vm, "node"), age};
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
