/* novacron image register NAME --kernel K [--initrd I] [--disk D]
 * [--cmdline C], or [NAME] --from-json FILE: POST /v1/images.
 *
 * Paths name files on the daemon's host. A relative path is made absolute
 * here (against the working directory, or for --from-json against the
 * file's folder) because the daemon's working directory is not the
 * user's. */
#include "cli/args.h"
#include "cli/call.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const k_fields[] = {"name", "kernel", "initrd", "disk", "cmdline"};
#define NFIELDS (sizeof k_fields / sizeof *k_fields)

/* Reads at most NC_CLI_JSON_FILE_MAX bytes of path into a JSON object.
 * Returns 0 or an exit status after a usage error. */
static int load_json(struct nc_cli *cli, const char *path, json_t **out) {
  json_error_t jerr;
  char *buf = NULL;
  size_t len = 0;
  int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);

  *out = NULL;
  if (fd < 0)
    return nc_cli_usage_error(cli, "cannot read --from-json %s: %s", path, strerror(errno));
  buf = malloc(NC_CLI_JSON_FILE_MAX + 1);
  if (buf == NULL) {
    rc = nc_cli_fail(cli, "out of memory");
    goto out;
  }
  for (;;) {
    ssize_t n = read(fd, buf + len, NC_CLI_JSON_FILE_MAX + 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = nc_cli_usage_error(cli, "cannot read --from-json %s: %s", path, strerror(errno));
      goto out;
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len > NC_CLI_JSON_FILE_MAX) {
      rc = nc_cli_usage_error(cli, "--from-json %s is larger than %d KiB", path,
                              NC_CLI_JSON_FILE_MAX / 1024);
      goto out;
    }
  }
  *out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
  if (*out == NULL) {
    rc = nc_cli_usage_error(cli, "--from-json %s: line %d: %s", path, jerr.line, jerr.text);
  } else if (!json_is_object(*out)) {
    rc = nc_cli_usage_error(cli, "--from-json %s: not a JSON object", path);
    json_decref(*out);
    *out = NULL;
  }
out:
  free(buf);
  close(fd);
  return rc;
}

/* Sets body[key] to value, made absolute against base (a folder) unless it
 * is the name or cmdline, or already absolute. */
static int set_field(struct nc_cli *cli, json_t *body, const char *key, const char *value,
                     const char *base) {
  char abs[PATH_MAX];
  bool is_path = strcmp(key, "name") != 0 && strcmp(key, "cmdline") != 0;
  if (is_path && value[0] != '/') {
    if ((size_t)snprintf(abs, sizeof abs, "%s/%s", base, value) >= sizeof abs)
      return nc_cli_usage_error(cli, "--%s: path \"%s\" is too long", key, value);
    value = abs;
  }
  json_object_set_new(body, key, json_string(value));
  return 0;
}

int nc_cli_cmd_image_register(struct nc_cli *cli, int argc, char **argv) {
  const char *flags[NFIELDS] = {NULL}; /* [0] (name) comes from NAME */
  const char *from_json = NULL;
  const struct nc_cli_opt opts[] = {
      {"kernel", NC_CLI_OPT_STR, &flags[1]}, {"initrd", NC_CLI_OPT_STR, &flags[2]},
      {"disk", NC_CLI_OPT_STR, &flags[3]},   {"cmdline", NC_CLI_OPT_STR, &flags[4]},
      {"from-json", NC_CLI_OPT_STR, &from_json}, {NULL, 0, NULL},
  };
  static const char *const names[] = {"NAME"};
  const struct nc_cli_argspec spec = {opts, names, 0, 1};
  const char *pos[1];
  char cwd[PATH_MAX], file_dir[PATH_MAX] = "", done[512];
  json_t *file = NULL, *body = NULL, *resp = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  flags[0] = pos[0];
  if (from_json == NULL && flags[0] == NULL)
    return nc_cli_usage_error(cli, "missing NAME");
  if (getcwd(cwd, sizeof cwd) == NULL)
    return nc_cli_fail(cli, "cannot find the working directory: %s", strerror(errno));
  if (from_json != NULL) {
    rc = load_json(cli, from_json, &file);
    if (rc != 0)
      return rc;
    /* The folder of the file, absolute. */
    const char *slash = strrchr(from_json, '/');
    size_t dir_len = slash ? (size_t)(slash - from_json) : 0;
    int w;
    if (slash == NULL)
      w = snprintf(file_dir, sizeof file_dir, "%s", cwd);
    else if (from_json[0] == '/')
      w = snprintf(file_dir, sizeof file_dir, "%s", from_json);
    else
      w = snprintf(file_dir, sizeof file_dir, "%s/%s", cwd, from_json);
    if (w < 0 || (size_t)w >= sizeof file_dir) {
      rc = nc_cli_usage_error(cli, "--from-json %s: path too long", from_json);
      goto out;
    }
    if (slash != NULL)
      file_dir[(size_t)w - (strlen(from_json) - dir_len)] = '\0';
    if (file_dir[0] == '\0')
      snprintf(file_dir, sizeof file_dir, "/");
  }

  body = json_object();
  for (size_t i = 0; i < NFIELDS; i++) {
    const char *value = flags[i], *base = cwd;
    if (value == NULL && file != NULL) {
      const json_t *v = json_object_get(file, k_fields[i]);
      if (v != NULL && !json_is_null(v) && !json_is_string(v)) {
        rc = nc_cli_usage_error(cli, "--from-json %s: \"%s\" is not a string", from_json,
                                k_fields[i]);
        goto out;
      }
      value = json_is_string(v) && *json_string_value(v) ? json_string_value(v) : NULL;
      base = file_dir;
    }
    if (value == NULL)
      continue;
    rc = set_field(cli, body, k_fields[i], value, base);
    if (rc != 0)
      goto out;
  }
  if (json_object_get(body, "name") == NULL) {
    rc = nc_cli_usage_error(cli, "missing NAME (give it, or a \"name\" in --from-json)");
    goto out;
  }
  if (json_object_get(body, "kernel") == NULL) {
    rc = nc_cli_usage_error(cli, "--kernel is required (or a \"kernel\" in --from-json)");
    goto out;
  }
  rc = nc_cli_call(cli, "POST", "/v1/images", body, &resp);
  if (rc != NC_CLI_EXIT_OK)
    goto out;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, resp);
  } else {
    snprintf(done, sizeof done, "image \"%s\" registered",
             json_string_value(json_object_get(body, "name")));
    fprintf(cli->out, "%s\n", done);
  }
out:
  json_decref(resp);
  json_decref(body);
  json_decref(file);
  return rc;
}
