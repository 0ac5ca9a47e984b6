/* novacron node drain NODE [--no-wait]: POST /v1/nodes/{node}/drain, then
 * follow the drain by polling GET /v1/nodes once a second until the node's
 * "drain.state" is "complete" (exit 0) or "stuck" (exit 1, listing why
 * each VM could not move). The controller does the moving; this command
 * only watches, so interrupting it (or --timeout running out) leaves the
 * drain going. */
#include "cli/action.h"
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/nodes.h"
#include "cli/op.h"

#include <inttypes.h>
#include <string.h>

#define DRAIN_POLL_MS 1000

/* "moved 3, failed 0, remaining 2; moving web-1 to n3 (op-1a2b)" */
static void describe(const json_t *drain, char *buf, size_t n) {
  const json_t *cur = json_object_get(drain, "current");
  char raw[512];
  int w = snprintf(raw, sizeof raw, "moved %" PRId64 ", failed %" PRId64 ", remaining %" PRId64,
                   nc_cli_jint(drain, "moved", 0), nc_cli_jint(drain, "failed", 0),
                   nc_cli_jint(drain, "remaining", 0));
  if (json_is_object(cur) && w > 0 && (size_t)w < sizeof raw) {
    const char *op = nc_cli_jstr(cur, "operation");
    snprintf(raw + w, sizeof raw - (size_t)w, "; moving %s to %s%s%s%s",
             nc_cli_jstr_or(cur, "vm", "?"), nc_cli_jstr_or(cur, "to", "?"), op ? " (" : "",
             op ? op : "", op ? ")" : "");
  }
  nc_cli_sanitize(raw, buf, n);
}

/* On a tty one line redrawn in place; otherwise a new line on stderr each
 * time the progress changes, so a log shows how the drain went. */
static void show(struct nc_cli *cli, const char *node, const char *text, char *last,
                 size_t last_n, bool *shown) {
  if (strcmp(text, last) == 0 && (*shown || !cli->io->err_tty))
    return;
  snprintf(last, last_n, "%s", text);
  if (cli->io->err_tty) {
    char line[80];
    snprintf(line, sizeof line, "draining %s: %s", node, text);
    fprintf(cli->err, "\r\033[K%s", line);
    *shown = true;
  } else {
    fprintf(cli->err, "draining %s: %s\n", node, text);
  }
  fflush(cli->err);
}

/* Erases the tty progress line, if one is up. */
static void clear(struct nc_cli *cli, bool *shown) {
  if (*shown)
    fprintf(cli->err, "\r\033[K");
  *shown = false;
}

static int stuck(struct nc_cli *cli, const char *node, const json_t *drain, const char *text) {
  const json_t *errors = json_object_get(drain, "errors");
  size_t i;
  const json_t *e;
  nc_cli_fail(cli, "drain of node \"%s\" is stuck: %s", node, text);
  json_array_foreach(errors, i, e) {
    char clean[1024];
    nc_cli_sanitize(json_is_string(e) ? json_string_value(e) : "?", clean, sizeof clean);
    fprintf(cli->err, "  %s\n", clean);
  }
  fprintf(cli->err, "hint: fix the cause and run 'novacron node drain %s' again, or give the "
                    "node back with 'novacron node uncordon %s'\n",
          node, node);
  return NC_CLI_EXIT_FAIL;
}

/* Polls until the drain ends or --timeout passes. Returns the exit
 * status. */
static int follow(struct nc_cli *cli, const char *node) {
  const int64_t start = nc_mono_ms(cli->clock);
  const int64_t deadline = cli->timeout_ms > 0 ? start + cli->timeout_ms : 0;
  char last[512] = "", text[512] = "";
  bool shown = false;
  json_t *resp = NULL;
  int rc;

  for (;;) {
    int64_t now = nc_mono_ms(cli->clock);
    json_decref(resp);
    resp = NULL;
    /* Off the line while asking, so whatever gets printed next (an error
     * from the request included) starts on a clean line; show() puts it
     * back. */
    clear(cli, &shown);
    rc = nc_cli_call(cli, "GET", "/v1/nodes", NULL, &resp);
    if (rc != NC_CLI_EXIT_OK)
      goto out;
    const json_t *n = nc__cli_nodes_find(json_object_get(resp, "nodes"), node);
    if (n == NULL) {
      rc = nc_cli_fail(cli, "node \"%s\" left the cluster during its drain", node);
      goto out;
    }
    const json_t *drain = json_object_get(n, "drain");
    const char *state = nc_cli_jstr(drain, "state");
    if (state == NULL) {
      /* Someone uncordoned it: the drain is over without finishing. */
      rc = nc_cli_fail(cli, "the drain of node \"%s\" was called off (the node is now %s)", node,
                       nc_cli_jstr_or(n, "state", "?"));
      goto out;
    }
    describe(drain, text, sizeof text);
    if (strcmp(state, "complete") == 0 || strcmp(state, "stuck") == 0) {
      if (cli->output == NC_CLI_OUTPUT_JSON)
        nc_cli_print_json(cli, n);
      if (strcmp(state, "stuck") == 0) {
        rc = stuck(cli, node, drain, text);
      } else {
        char took[32];
        nc_cli_format_duration(nc_mono_ms(cli->clock) - start, took, sizeof took);
        if (cli->output == NC_CLI_OUTPUT_TABLE)
          fprintf(cli->out, "node \"%s\" drained: %" PRId64 " VMs moved (%s)\n", node,
                  nc_cli_jint(drain, "moved", 0), took);
        rc = NC_CLI_EXIT_OK;
      }
      goto out;
    }
    show(cli, node, text, last, sizeof last, &shown);
    int64_t after = nc_mono_ms(cli->clock);
    if (deadline != 0 && now + DRAIN_POLL_MS > deadline) {
      char took[32];
      nc_cli_format_duration(after - start, took, sizeof took);
      clear(cli, &shown);
      rc = nc_cli_fail(cli, "node \"%s\" still draining after %s (%s); the drain goes on: "
                            "watch it with 'novacron node list'",
                       node, took, text);
      goto out;
    }
    if (after - now < DRAIN_POLL_MS)
      nc__cli_sleep_ms(cli, DRAIN_POLL_MS - (after - now));
  }
out:
  clear(cli, &shown);
  fflush(cli->err);
  json_decref(resp);
  return rc;
}

int nc_cli_cmd_node_drain(struct nc_cli *cli, int argc, char **argv) {
  bool no_wait = false;
  const struct nc_cli_opt opts[] = {{"no-wait", NC_CLI_OPT_BOOL, &no_wait}, {NULL, 0, NULL}};
  static const char *const names[] = {"NODE"};
  const struct nc_cli_argspec spec = {opts, names, 1, 1};
  const char *pos[1];
  char path[512];
  json_t *resp = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  rc = nc__cli_path(cli, path, sizeof path, "/v1/nodes/%s/drain", pos[0]);
  if (rc != 0)
    return rc;
  rc = nc_cli_call(cli, "POST", path, NULL, &resp);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (no_wait) {
    if (cli->output == NC_CLI_OUTPUT_JSON) {
      nc_cli_print_json(cli, resp);
    } else {
      char line[512], clean[512];
      snprintf(line, sizeof line, "node \"%s\" draining (follow it with 'novacron node list')",
               pos[0]);
      nc_cli_sanitize(line, clean, sizeof clean);
      fprintf(cli->out, "%s\n", clean);
    }
    json_decref(resp);
    return NC_CLI_EXIT_OK;
  }
  json_decref(resp);
  return follow(cli, pos[0]);
}
