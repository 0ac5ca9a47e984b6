#include "cli/op.h"

#include "cli/call.h"
#include "cli/fmt.h"

#include "cli/table.h"

#include <poll.h>
#include <string.h>

/* Polls answered sooner than this do not go straight back to the server,
 * in case it returns early (an old daemon ignoring wait_s). */
#define NC_CLI_OP_MIN_POLL_MS 500
/* How long one poll asks the server to hold the request. Short on a tty so
 * the progress line moves. */
#define NC_CLI_OP_WAIT_TTY_S 2
#define NC_CLI_OP_WAIT_S 30

bool nc_cli_op_finished(const json_t *op) {
  const char *s = nc_cli_jstr(op, "status");
  return s != NULL &&
         (strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0);
}

void nc__cli_sleep_ms(struct nc_cli *cli, int64_t ms) {
  if (cli->io->sleep_ms != NULL)
    cli->io->sleep_ms(cli->io->sleep_arg, ms);
  else
    poll(NULL, 0, (int)ms);
}

/* "op-3f2a (vm.start web-1)" */
static void describe(const json_t *op, const char *id, char *buf, size_t n) {
  const char *kind = nc_cli_jstr(op, "kind"), *target = nc_cli_jstr(op, "target");
  char raw[512];
  if (kind != NULL && target != NULL)
    snprintf(raw, sizeof raw, "%s (%s %s)", id, kind, target);
  else
    snprintf(raw, sizeof raw, "%s", id);
  nc_cli_sanitize(raw, buf, n);
}

static void show_progress(struct nc_cli *cli, const json_t *op) {
  const json_t *p = json_object_get(op, "progress");
  const char *msg = nc_cli_jstr(op, "message");
  char line[256], clean[256];
  int pct = json_is_number(p) ? (int)(json_number_value(p) * 100.0 + 0.5) : 0;
  if (pct < 0 || pct > 100)
    pct = pct < 0 ? 0 : 100;
  snprintf(line, sizeof line, "%s %s: %3d%% %s", nc_cli_jstr_or(op, "kind", "operation"),
           nc_cli_jstr_or(op, "target", ""), pct, msg ? msg : "");
  nc_cli_sanitize(line, clean, sizeof clean);
  /* Keep it to one 80-column line so \r can overwrite it. */
  if (strlen(clean) > 79)
    clean[79] = '\0';
  fprintf(cli->err, "\r\033[K%s", clean);
  fflush(cli->err);
}

int nc_cli_op_wait(struct nc_cli *cli, const char *id, json_t **final) {
  const bool tty = cli->io->err_tty;
  const int64_t start = nc_mono_ms(cli->clock);
  const int64_t deadline = cli->timeout_ms > 0 ? start + cli->timeout_ms : 0;
  json_t *op = NULL;
  bool shown = false;
  int rc;

  *final = NULL;
  for (;;) {
    int64_t wait_s = tty ? NC_CLI_OP_WAIT_TTY_S : NC_CLI_OP_WAIT_S;
    int64_t now = nc_mono_ms(cli->clock);
    char path[512];

    if (deadline != 0) {
      int64_t left_ms = deadline - now;
      if (left_ms <= 0) {
        char what[512], took[32];
        describe(op, id, what, sizeof what);
        nc_cli_format_duration(now - start, took, sizeof took);
        if (shown)
          fprintf(cli->err, "\r\033[K");
        rc = nc_cli_fail(cli, "operation %s still running after %s; follow it with: novacron op "
                              "show %s --wait",
                         what, took, id);
        goto out;
      }
      if (wait_s * 1000 > left_ms)
        wait_s = (left_ms + 999) / 1000;
    }
    if (nc_cli_pathf(path, sizeof path, "/v1/operations/%s", id) != 0) {
      rc = nc_cli_fail(cli, "operation id \"%s\" is too long", id);
      goto out;
    }
    snprintf(path + strlen(path), sizeof path - strlen(path), "?wait_s=%d", (int)wait_s);

    json_decref(op);
    op = NULL;
    rc = nc__cli_call_timeout(cli, "GET", path, NULL,
                              wait_s * 1000 + NC_CLI_DEFAULT_REQUEST_TIMEOUT_MS, &op);
    if (rc != NC_CLI_EXIT_OK)
      goto out;
    if (nc_cli_jstr(op, "status") == NULL) {
      rc = nc_cli_fail(cli, "operation %s: the answer has no status", id);
      goto out;
    }
    if (nc_cli_op_finished(op))
      break;
    if (tty) {
      show_progress(cli, op);
      shown = true;
    }
    int64_t took = nc_mono_ms(cli->clock) - now;
    if (took < NC_CLI_OP_MIN_POLL_MS)
      nc__cli_sleep_ms(cli, NC_CLI_OP_MIN_POLL_MS - took);
  }
  *final = op;
  op = NULL;
  rc = NC_CLI_EXIT_OK;
out:
  if (shown && rc == NC_CLI_EXIT_OK) {
    fprintf(cli->err, "\r\033[K");
    fflush(cli->err);
  } else if (shown) {
    fflush(cli->err);
  }
  json_decref(op);
  return rc;
}

int nc_cli_op_outcome(struct nc_cli *cli, const json_t *op) {
  const char *status = nc_cli_jstr(op, "status");
  const char *id = nc_cli_jstr_or(op, "id", "?");
  char what[512];

  if (status != NULL && strcmp(status, "succeeded") == 0)
    return NC_CLI_EXIT_OK;
  describe(op, id, what, sizeof what);
  if (status != NULL && strcmp(status, "cancelled") == 0)
    return nc_cli_fail(cli, "operation %s was cancelled", what);
  const char *msg = nc_cli_jstr(json_object_get(op, "error"), "message");
  if (msg != NULL && *msg != '\0')
    return nc_cli_fail(cli, "%s", msg);
  return nc_cli_fail(cli, "operation %s failed", what);
}

int nc_cli_op_follow(struct nc_cli *cli, const json_t *resp, const json_t *op, bool no_wait,
                     const char *done) {
  const char *id = nc_cli_jstr(op, "id");
  json_t *final = NULL;
  int rc;

  if (op != NULL && !json_is_null(op) && id == NULL)
    return nc_cli_fail(cli, "the answer names an operation without an id");
  if (no_wait || id == NULL) {
    if (cli->output == NC_CLI_OUTPUT_JSON)
      nc_cli_print_json(cli, resp);
    else if (id != NULL)
      fprintf(cli->out, "%s\n", id);
    else
      fprintf(cli->out, "%s\n", done);
    return NC_CLI_EXIT_OK;
  }
  if (nc_cli_op_finished(op)) {
    final = json_incref((json_t *)op);
  } else {
    rc = nc_cli_op_wait(cli, id, &final);
    if (rc != NC_CLI_EXIT_OK)
      return rc;
  }
  if (cli->output == NC_CLI_OUTPUT_JSON)
    nc_cli_print_json(cli, final);
  rc = nc_cli_op_outcome(cli, final);
  if (rc == NC_CLI_EXIT_OK && cli->output == NC_CLI_OUTPUT_TABLE) {
    int64_t t0, t1;
    char took[32];
    if (nc_cli_parse_time(nc_cli_jstr(final, "created_at"), &t0) == 0 &&
        nc_cli_parse_time(nc_cli_jstr(final, "finished_at"), &t1) == 0) {
      nc_cli_format_duration(t1 - t0, took, sizeof took);
      fprintf(cli->out, "%s (%s)\n", done, took);
    } else {
      fprintf(cli->out, "%s\n", done);
    }
  }
  json_decref(final);
  return rc;
}

void nc_cli_op_progress(const json_t *op, char *buf, size_t n) {
  const json_t *p = json_object_get(op, "progress");
  if (!json_is_number(p)) {
    snprintf(buf, n, "-");
    return;
  }
  double v = json_number_value(p);
  int pct = v <= 0 ? 0 : v >= 1 ? 100 : (int)(v * 100.0 + 0.5);
  snprintf(buf, n, "%d%%", pct);
}

void nc_cli_op_print(struct nc_cli *cli, const json_t *op) {
  static const struct {
    const char *key, *label;
  } times[] = {{"created_at", "Created"}, {"updated_at", "Updated"}, {"finished_at", "Finished"}};
  FILE *f = cli->out;
  char buf[1024], age[32];

  nc_cli_kv(f, 9, "ID", nc_cli_jstr(op, "id"));
  nc_cli_kv(f, 9, "Kind", nc_cli_jstr(op, "kind"));
  nc_cli_kv(f, 9, "Target", nc_cli_jstr(op, "target"));
  nc_cli_kv(f, 9, "Status", nc_cli_jstr(op, "status"));
  nc_cli_op_progress(op, buf, sizeof buf);
  nc_cli_kv(f, 9, "Progress", buf);
  nc_cli_kv(f, 9, "Message", nc_cli_jstr(op, "message"));
  const json_t *err = json_object_get(op, "error");
  if (json_is_object(err)) {
    snprintf(buf, sizeof buf, "%s: %s", nc_cli_jstr_or(err, "code", "?"),
             nc_cli_jstr_or(err, "message", ""));
    nc_cli_kv(f, 9, "Error", buf);
  } else {
    nc_cli_kv(f, 9, "Error", NULL);
  }
  for (size_t i = 0; i < sizeof times / sizeof *times; i++) {
    const char *at = nc_cli_jstr(op, times[i].key);
    nc_cli_jage(cli, op, times[i].key, age, sizeof age);
    if (at != NULL && strcmp(age, "-") != 0)
      snprintf(buf, sizeof buf, "%s (%s ago)", at, age);
    else
      snprintf(buf, sizeof buf, "%s", at ? at : "");
    nc_cli_kv(f, 9, times[i].label, buf);
  }
}
