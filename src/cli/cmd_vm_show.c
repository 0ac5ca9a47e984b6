/* novacron vm show NAME: GET /v1/vms/{name} as a block of "Key: value". */
#include "cli/action.h"
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/table.h"

#include <inttypes.h>
#include <string.h>

#define KEYW 12

/* "2026-11-27T23:00:00.000Z (5m ago)" */
static void when(struct nc_cli *cli, const json_t *o, const char *key, char *buf, size_t n) {
  const char *at = nc_cli_jstr(o, key);
  char age[32];
  if (at == NULL) {
    snprintf(buf, n, "-");
    return;
  }
  nc_cli_jage(cli, o, key, age, sizeof age);
  if (strcmp(age, "-") == 0)
    snprintf(buf, n, "%s", at);
  else
    snprintf(buf, n, "%s (%s ago)", at, age);
}

/* Joins "k=v, k=v" (labels) or "s1, s2" (snapshots) into buf, truncating. */
static void join_labels(const json_t *labels, char *buf, size_t n) {
  const char *key;
  const json_t *v;
  size_t o = 0;
  buf[0] = '\0';
  json_object_foreach((json_t *)labels, key, v) {
    int w = snprintf(buf + o, n - o, "%s%s=%s", o ? ", " : "", key,
                     json_is_string(v) ? json_string_value(v) : "?");
    if (w < 0 || (size_t)w >= n - o)
      break;
    o += (size_t)w;
  }
}

static void print_vm(struct nc_cli *cli, const json_t *vm) {
  FILE *f = cli->out;
  char buf[1024], tmp[512];

  nc_cli_kv(f, KEYW, "Name", nc_cli_jstr(vm, "name"));
  const char *state = nc_cli_jstr(vm, "state"), *reason = nc_cli_jstr(vm, "state_reason");
  if (reason != NULL && *reason != '\0')
    snprintf(buf, sizeof buf, "%s (%s)", state ? state : "-", reason);
  else
    snprintf(buf, sizeof buf, "%s", state ? state : "-");
  nc_cli_kv(f, KEYW, "State", buf);
  nc_cli_kv(f, KEYW, "Desired", nc_cli_jstr(vm, "desired_state"));
  when(cli, vm, "state_changed_at", buf, sizeof buf);
  nc_cli_kv(f, KEYW, "Since", buf);
  nc_cli_kv(f, KEYW, "Image", nc_cli_jstr(vm, "image"));
  int64_t vcpus = nc_cli_jint(vm, "vcpus", -1);
  snprintf(buf, sizeof buf, "%" PRId64, vcpus);
  nc_cli_kv(f, KEYW, "vCPUs", vcpus >= 0 ? buf : NULL);
  int64_t mem = nc_cli_jint(vm, "memory_bytes", -1);
  if (mem > 0)
    nc_cli_size_human((uint64_t)mem, buf, sizeof buf);
  else
    snprintf(buf, sizeof buf, "%s", nc_cli_jstr_or(vm, "memory", ""));
  nc_cli_kv(f, KEYW, "Memory", buf);
  nc_cli_kv(f, KEYW, "NIC", nc_cli_jstr(vm, "nic"));
  const json_t *labels = json_object_get(vm, "labels");
  if (json_is_object(labels))
    join_labels(labels, buf, sizeof buf);
  else
    buf[0] = '\0';
  nc_cli_kv(f, KEYW, "Labels", buf);
  nc_cli_kv(f, KEYW, "Cmdline+", nc_cli_jstr(vm, "cmdline_append"));
  nc_cli_kv(f, KEYW, "Node", nc_cli_jstr(vm, "node"));
  int64_t pid = nc_cli_jint(vm, "pid", 0);
  snprintf(buf, sizeof buf, "%" PRId64, pid);
  nc_cli_kv(f, KEYW, "PID", pid > 0 ? buf : NULL);
  nc_cli_kv(f, KEYW, "Accel", nc_cli_jstr(vm, "accel"));
  nc_cli_kv(f, KEYW, "Machine", nc_cli_jstr(vm, "machine"));
  when(cli, vm, "created_at", buf, sizeof buf);
  nc_cli_kv(f, KEYW, "Created", buf);
  const json_t *console = json_object_get(vm, "console");
  nc_cli_kv(f, KEYW, "Console", nc_cli_jstr(console, "socket"));
  nc_cli_kv(f, KEYW, "Serial log", nc_cli_jstr(console, "log"));
  nc_cli_kv(f, KEYW, "Operation", nc_cli_jstr(vm, "operation"));

  const json_t *snaps = json_object_get(vm, "snapshots");
  if (!json_is_array(snaps) || json_array_size(snaps) == 0) {
    nc_cli_kv(f, KEYW, "Snapshots", NULL);
    return;
  }
  size_t i;
  const json_t *s;
  json_array_foreach(snaps, i, s) {
    when(cli, s, "created_at", tmp, sizeof tmp);
    snprintf(buf, sizeof buf, "%s  %s", nc_cli_jstr_or(s, "name", "?"),
             tmp);
    nc_cli_kv(f, KEYW, i == 0 ? "Snapshots" : "", buf);
  }
}

int nc_cli_cmd_vm_show(struct nc_cli *cli, int argc, char **argv) {
  static const char *const names[] = {"NAME"};
  const struct nc_cli_argspec spec = {NULL, names, 1, 1};
  const char *pos[1];
  char path[512];
  json_t *vm = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc__cli_path(cli, path, sizeof path, "/v1/vms/%s", pos[0]);
  if (rc != 0)
    return rc;
  rc = nc_cli_call(cli, "GET", path, NULL, &vm);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON)
    nc_cli_print_json(cli, vm);
  else
    print_vm(cli, vm);
  json_decref(vm);
  return NC_CLI_EXIT_OK;
}
