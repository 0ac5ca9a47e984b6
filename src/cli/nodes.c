#include "cli/nodes.h"

#include "cli/action.h"
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/list.h"

#include <inttypes.h>
#include <string.h>

/* "3/8": allocated over capacity; a side the answer lacks prints as "?". */
static void ratio_cell(const json_t *node, const char *key, bool bytes, char *buf, size_t n) {
  int64_t used = nc_cli_jint(json_object_get(node, "allocated"), key, -1);
  int64_t cap = nc_cli_jint(json_object_get(node, "capacity"), key, -1);
  char a[24] = "?", b[24] = "?";
  if (bytes) {
    if (used >= 0)
      nc_cli_size_human((uint64_t)used, a, sizeof a);
    if (cap >= 0)
      nc_cli_size_human((uint64_t)cap, b, sizeof b);
  } else {
    if (used >= 0)
      snprintf(a, sizeof a, "%" PRId64, used);
    if (cap >= 0)
      snprintf(b, sizeof b, "%" PRId64, cap);
  }
  snprintf(buf, n, "%s/%s", a, b);
}

static void node_row(struct nc_cli *cli, const json_t *node, struct nc_cli_list_row *row,
                     void *data) {
  (void)cli;
  (void)data;
  int64_t vms = nc_cli_jint(node, "vms", -1);
  const json_t *cp = json_object_get(node, "control_plane");
  row->cells[0] = nc_cli_jstr(node, "name");
  row->cells[1] = nc_cli_jstr(node, "state");
  /* a worker runs no etcd member (docs/cluster.md); an answer without the
   * field (an older node) leaves the cell empty */
  row->cells[2] = json_is_boolean(cp) ? (json_is_true(cp) ? "control-plane" : "worker") : NULL;
  row->cells[3] = nc_cli_jstr(node, "zone");
  ratio_cell(node, "vcpus", false, row->buf[4], sizeof row->buf[4]);
  row->cells[4] = row->buf[4];
  ratio_cell(node, "memory_bytes", true, row->buf[5], sizeof row->buf[5]);
  row->cells[5] = row->buf[5];
  if (vms >= 0) {
    snprintf(row->buf[6], sizeof row->buf[6], "%" PRId64, vms);
    row->cells[6] = row->buf[6];
  }
  row->cells[7] = json_is_true(json_object_get(node, "controller")) ? "yes" : NULL;
}

int nc__cli_nodes_print(struct nc_cli *cli, const json_t *nodes) {
  static const char *const headers[] = {"NAME",   "STATE",  "ROLE", "ZONE",
                                        "VCPUS",  "MEMORY", "VMS",  "CONTROLLER"};
  const struct nc_cli_list_spec spec = {.ncols = sizeof headers / sizeof *headers,
                                        .headers = headers, .row = node_row};
  return nc_cli_list_print(cli, &spec, nodes);
}

const json_t *nc__cli_nodes_find(const json_t *nodes, const char *name) {
  size_t i;
  const json_t *n;
  json_array_foreach(nodes, i, n) {
    const char *s = nc_cli_jstr(n, "name");
    if (s != NULL && strcmp(s, name) == 0)
      return n;
  }
  return NULL;
}

int nc__cli_node_admin(struct nc_cli *cli, int argc, char **argv, const char *action,
                       const char *done_word) {
  static const char *const names[] = {"NODE"};
  const struct nc_cli_argspec spec = {NULL, names, 1, 1};
  const char *pos[1];
  char path[512];
  json_t *resp = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc__cli_path(cli, path, sizeof path, "/v1/nodes/%s/%s", pos[0], action);
  if (rc != 0)
    return rc;
  rc = nc_cli_call(cli, "POST", path, NULL, &resp);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, resp);
  } else {
    char line[512], clean[512];
    snprintf(line, sizeof line, "node \"%s\" %s", pos[0], done_word);
    nc_cli_sanitize(line, clean, sizeof clean);
    fprintf(cli->out, "%s\n", clean);
  }
  json_decref(resp);
  return NC_CLI_EXIT_OK;
}
