/* novacron vm create NAME --image IMG [...]: POST /v1/vms.
 *
 * Flags are checked here as well as by the server so a typo is a usage
 * error naming the flag, before anything is sent. Memory goes out in the
 * canonical form the API documents ("256M"). */
#include "cli/action.h"
#include "cli/args.h"
#include "cli/fmt.h"

#include <string.h>

#define NC_CLI_VCPUS_MAX 1024

static int add_labels(struct nc_cli *cli, const struct nc_cli_strlist *labels, json_t *body) {
  json_t *obj = json_object();
  json_object_set_new(body, "labels", obj);
  for (int i = 0; i < labels->n; i++) {
    const char *kv = labels->v[i], *eq = strchr(kv, '=');
    char key[256];
    if (eq == NULL || eq == kv)
      return nc_cli_usage_error(cli, "--label \"%s\" is not KEY=VALUE", kv);
    if ((size_t)(eq - kv) >= sizeof key)
      return nc_cli_usage_error(cli, "--label \"%s\": the key is too long", kv);
    memcpy(key, kv, (size_t)(eq - kv));
    key[eq - kv] = '\0';
    if (json_object_get(obj, key) != NULL)
      return nc_cli_usage_error(cli, "--label \"%s\" given twice", key);
    json_object_set_new(obj, key, json_string(eq + 1));
  }
  return 0;
}

int nc_cli_cmd_vm_create(struct nc_cli *cli, int argc, char **argv) {
  const char *image = NULL, *vcpus = NULL, *memory = NULL, *nic = NULL, *cmdline = NULL;
  bool start = false, no_wait = false;
  struct nc_cli_strlist labels = {0};
  const struct nc_cli_opt opts[] = {
      {"image", NC_CLI_OPT_STR, &image},
      {"vcpus", NC_CLI_OPT_STR, &vcpus},
      {"memory", NC_CLI_OPT_STR, &memory},
      {"label", NC_CLI_OPT_LIST, &labels},
      {"nic", NC_CLI_OPT_STR, &nic},
      {"cmdline-append", NC_CLI_OPT_STR, &cmdline},
      {"start", NC_CLI_OPT_BOOL, &start},
      {"no-wait", NC_CLI_OPT_BOOL, &no_wait},
      {NULL, 0, NULL},
  };
  static const char *const names[] = {"NAME"};
  const struct nc_cli_argspec spec = {opts, names, 1, 1};
  const char *pos[1];
  char done[512];
  json_t *body = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  if (image == NULL)
    return nc_cli_usage_error(cli, "--image is required (see 'novacron image list')");

  body = json_object();
  json_object_set_new(body, "name", json_string(pos[0]));
  json_object_set_new(body, "image", json_string(image));
  if (vcpus != NULL) {
    uint64_t n;
    if (nc_cli_parse_uint(vcpus, NC_CLI_VCPUS_MAX, &n) != 0 || n == 0) {
      rc = nc_cli_usage_error(cli, "--vcpus \"%s\" is not a whole number from 1 to %d", vcpus,
                              NC_CLI_VCPUS_MAX);
      goto out;
    }
    json_object_set_new(body, "vcpus", json_integer((json_int_t)n));
  }
  if (memory != NULL) {
    uint64_t bytes;
    char canon[32];
    if (nc_cli_parse_size(memory, &bytes) != 0 || bytes == 0) {
      rc = nc_cli_usage_error(cli, "--memory \"%s\" is not a size (try 512M or 2G)", memory);
      goto out;
    }
    nc_cli_size_canonical(bytes, canon, sizeof canon);
    json_object_set_new(body, "memory", json_string(canon));
  }
  if (labels.n > 0) {
    rc = add_labels(cli, &labels, body);
    if (rc != 0)
      goto out;
  }
  if (nic != NULL) {
    if (strcmp(nic, "user") != 0 && strcmp(nic, "none") != 0) {
      rc = nc_cli_usage_error(cli, "--nic \"%s\" is not user or none", nic);
      goto out;
    }
    json_object_set_new(body, "nic", json_string(nic));
  }
  if (cmdline != NULL)
    json_object_set_new(body, "cmdline_append", json_string(cmdline));
  json_object_set_new(body, "start", json_boolean(start));

  snprintf(done, sizeof done, "vm \"%s\" created%s", pos[0], start ? " and started" : "");
  rc = nc__cli_mutate(cli, "POST", "/v1/vms", body, no_wait, done);
out:
  json_decref(body);
  return rc;
}
