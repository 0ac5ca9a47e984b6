/* novacron node show: GET /v1/node. The node object is open-ended, so the
 * table form flattens it: nested objects become "parent.child" keys and
 * arrays of scalars are joined with ", ". */
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/table.h"

#include <stdlib.h>
#include <string.h>

#define NODE_MAX_DEPTH 4

static void scalar(const json_t *v, char *buf, size_t n) {
  switch (json_typeof(v)) {
  case JSON_STRING:
    snprintf(buf, n, "%s", json_string_value(v));
    break;
  case JSON_INTEGER:
    snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    break;
  case JSON_REAL:
    snprintf(buf, n, "%g", json_real_value(v));
    break;
  case JSON_TRUE:
    snprintf(buf, n, "true");
    break;
  case JSON_FALSE:
    snprintf(buf, n, "false");
    break;
  default:
    snprintf(buf, n, "-");
    break;
  }
}

static bool all_scalars(const json_t *arr) {
  size_t i;
  const json_t *v;
  json_array_foreach(arr, i, v) {
    if (json_is_object(v) || json_is_array(v))
      return false;
  }
  return true;
}

/* Key column width: the longest flattened key, within reason. */
#define NODE_KEY_MAX_WIDTH 32

struct flat {
  FILE *f;     /* NULL: only measure */
  int width;
};

static void emit(struct flat *fl, const char *key, const char *value) {
  int len = (int)strlen(key);
  if (fl->f == NULL) {
    if (len > fl->width && len <= NODE_KEY_MAX_WIDTH)
      fl->width = len;
    return;
  }
  nc_cli_kv(fl->f, fl->width, key, value);
}

static void flatten(struct flat *fl, const char *prefix, const json_t *v, int depth) {
  char buf[1024];
  if (json_is_object(v) && depth < NODE_MAX_DEPTH) {
    const char *key;
    const json_t *child;
    json_object_foreach((json_t *)v, key, child) {
      char name[256];
      snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "." : "", key);
      flatten(fl, name, child, depth + 1);
    }
    return;
  }
  if (json_is_array(v) && depth < NODE_MAX_DEPTH) {
    if (all_scalars(v)) {
      size_t o = 0, i;
      const json_t *e;
      buf[0] = '\0';
      json_array_foreach(v, i, e) {
        char one[256];
        scalar(e, one, sizeof one);
        int w = snprintf(buf + o, sizeof buf - o, "%s%s", i ? ", " : "", one);
        if (w < 0 || (size_t)w >= sizeof buf - o)
          break;
        o += (size_t)w;
      }
      emit(fl, prefix, buf);
      return;
    }
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
      char name[256];
      snprintf(name, sizeof name, "%s[%zu]", prefix, i);
      flatten(fl, name, e, depth + 1);
    }
    return;
  }
  if (json_is_object(v) || json_is_array(v)) {
    char *text = json_dumps(v, JSON_COMPACT);
    emit(fl, prefix, text);
    free(text);
    return;
  }
  scalar(v, buf, sizeof buf);
  size_t plen = strlen(prefix);
  if (json_is_integer(v) && json_integer_value(v) > 0 && plen > 6 &&
      strcmp(prefix + plen - 6, "_bytes") == 0) {
    /* Units in names (STYLE.md): show *_bytes for people too. */
    char human[32];
    nc_cli_size_human((uint64_t)json_integer_value(v), human, sizeof human);
    snprintf(buf + strlen(buf), sizeof buf - strlen(buf), " (%s)", human);
  }
  emit(fl, prefix, buf);
}

int nc_cli_cmd_node_show(struct nc_cli *cli, int argc, char **argv) {
  const struct nc_cli_argspec spec = {NULL, NULL, 0, 0};
  json_t *node = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, NULL);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc_cli_call(cli, "GET", "/v1/node", NULL, &node);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON)
    nc_cli_print_json(cli, node);
  else {
    struct flat fl = {NULL, 0};
    flatten(&fl, "", node, 0); /* measure */
    fl.f = cli->out;
    flatten(&fl, "", node, 0);
  }
  json_decref(node);
  return NC_CLI_EXIT_OK;
}
