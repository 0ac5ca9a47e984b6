/* novacron vm migrate NAME --to HOST:PORT [--token T | --token-file FILE]
 *     [--mode auto|datacenter|hybrid|internet] [--streams N]
 *     [--max-downtime-ms N] [--timeout-s N] [--no-wait]:
 * POST /v1/vms/{name}/migrate with a MigrateRequest (docs/openapi.yaml).
 *
 * Only the flags given are sent, so the server's defaults apply to the
 * rest. Values are checked against the documented ranges here too, so a
 * typo is a usage error naming the flag before anything is sent.
 *
 * A migration can take minutes, and its operation message is the live
 * account of it (pass, sent/remaining, dirty rate, wire against stream
 * bytes, expected downtime): longer than one terminal row. So this command
 * follows its operation itself rather than through nc_cli_op_wait, whose
 * progress line is cut to 80 columns: on a terminal the progress is
 * redrawn over as many rows as the message needs. The poll rules are the
 * same (long polls, --timeout bounds the whole wait, an early answer is
 * not polled again at once). At the end the operation's final message
 * (total time, wire bytes, pages by kind) is the summary line. */
#include "cli/action.h"
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/op.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* The documented ranges of MigrateRequest (docs/openapi.yaml). */
#define MIGRATE_STREAMS_MAX 16
#define MIGRATE_DOWNTIME_MIN_MS 10
#define MIGRATE_DOWNTIME_MAX_MS 60000
#define MIGRATE_TIMEOUT_MIN_S 5
#define MIGRATE_TIMEOUT_MAX_S 86400
#define MIGRATE_TO_MAX 255

/* Polling, as in op.c: short server-side waits on a terminal so the
 * progress moves, and never straight back after an early answer. */
#define POLL_WAIT_TTY_S 2
#define POLL_WAIT_S 30
#define POLL_MIN_MS 500
/* The progress block never takes more rows than this. */
#define PROGRESS_ROWS_MAX 8
#define DEFAULT_COLUMNS 80

static const char *const k_modes[] = {"auto", "datacenter", "hybrid", "internet", NULL};

/* HOST:PORT as the server takes it: a non-empty host without spaces or
 * control characters, then a port from 1 to 65535 after the last colon. */
/* A node name is a DNS label, as the daemon checks. */
static bool node_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
      return false;
  return true;
}

static bool to_ok(const char *to) {
  const char *colon = strrchr(to, ':');
  uint64_t port;
  if (colon == NULL) /* a node name, in a cluster: a DNS label */
    return node_name_ok(to);
  if (colon == to || strlen(to) > MIGRATE_TO_MAX)
    return false;
  for (const char *p = to; p < colon; p++)
    if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '/')
      return false;
  return nc_cli_parse_uint(colon + 1, 65535, &port) == 0 && port > 0;
}

/* A bearer token goes into an HTTP header: printable ASCII, no spaces. */
static bool token_ok(const char *t) {
  for (const unsigned char *p = (const unsigned char *)t; *p; p++)
    if (*p <= 0x20 || *p >= 0x7f)
      return false;
  return *t != '\0';
}

/* Parses an optional integer flag into body[key] when given. Returns 0 or
 * the usage error's exit status. */
static int int_flag(struct nc_cli *cli, json_t *body, const char *flag, const char *value,
                    const char *key, uint64_t min, uint64_t max, const char *what) {
  uint64_t v;
  if (value == NULL)
    return 0;
  if (nc_cli_parse_uint(value, max, &v) != 0 || v < min)
    return nc_cli_usage_error(cli, "--%s \"%s\" is not %s from %llu to %llu", flag, value, what,
                              (unsigned long long)min, (unsigned long long)max);
  json_object_set_new(body, key, json_integer((json_int_t)v));
  return 0;
}

/* ---- the progress block ---------------------------------------------- */

struct progress {
  int rows; /* rows drawn last time; 0 = nothing on screen */
};

static int term_columns(struct nc_cli *cli) {
  struct winsize ws;
  int fd = fileno(cli->err);
  if (fd >= 0 && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
    return ws.ws_col;
  return DEFAULT_COLUMNS;
}

/* Moves to the start of the block and clears it and everything below. */
static void progress_clear(struct nc_cli *cli, struct progress *p) {
  if (p->rows == 0)
    return;
  fputc('\r', cli->err);
  if (p->rows > 1)
    fprintf(cli->err, "\033[%dA", p->rows - 1);
  fputs("\033[J", cli->err);
  fflush(cli->err);
  p->rows = 0;
}

/* Bytes of s that make up at most `cols` code points. */
static size_t prefix_bytes(const char *s, size_t cols) {
  size_t i = 0, w = 0;
  while (s[i] != '\0') {
    if (((unsigned char)s[i] & 0xc0) != 0x80) {
      if (w == cols)
        break;
      w++;
    }
    i++;
  }
  return i;
}

/* Draws "<header> <message>" wrapped to the terminal's width, breaking
 * after ", " or a space where it can, over at most PROGRESS_ROWS_MAX rows.
 * No row fills the last column, so the terminal never wraps on its own and
 * the row count stays exact. */
static void progress_draw(struct nc_cli *cli, struct progress *p, const char *header,
                          const json_t *op) {
  const json_t *jp = json_object_get(op, "progress");
  const char *msg = nc_cli_jstr(op, "message");
  double v = json_is_number(jp) ? json_number_value(jp) : 0;
  int pct = v <= 0 ? 0 : v >= 1 ? 100 : (int)(v * 100.0 + 0.5);
  char raw[1024], text[1024];
  size_t cols = (size_t)term_columns(cli) - 1;

  snprintf(raw, sizeof raw, "%s: %3d%% %s", header, pct, msg ? msg : "");
  nc_cli_sanitize(raw, text, sizeof text);
  progress_clear(cli, p);
  const char *s = text;
  while (*s != '\0' && p->rows < PROGRESS_ROWS_MAX) {
    size_t n = prefix_bytes(s, cols);
    if (s[n] != '\0' && p->rows + 1 < PROGRESS_ROWS_MAX) {
      size_t cut = n;
      while (cut > 0 && s[cut - 1] != ' ')
        cut--;
      if (cut > 0)
        n = cut; /* break after the space (", " ends up at the row's end) */
    }
    if (p->rows > 0)
      fputc('\n', cli->err);
    size_t len = n;
    while (len > 0 && s[len - 1] == ' ')
      len--;
    fprintf(cli->err, "%.*s", (int)len, s);
    p->rows++;
    s += n;
    while (*s == ' ')
      s++;
  }
  fflush(cli->err);
}

/* ---- waiting ------------------------------------------------------------ */

static void sleep_ms(struct nc_cli *cli, int64_t ms) {
  if (cli->io->sleep_ms != NULL)
    cli->io->sleep_ms(cli->io->sleep_arg, ms);
  else
    poll(NULL, 0, (int)ms);
}

/* Waits for operation id like nc_cli_op_wait, drawing the progress block on
 * a terminal. Returns NC_CLI_EXIT_OK with *final (a reference the caller
 * owns) whatever the operation's outcome, or another exit status after
 * printing why (*final is then NULL). */
static int wait_migration(struct nc_cli *cli, const char *id, const char *header,
                          json_t **final) {
  const bool tty = cli->io->err_tty;
  const int64_t start = nc_mono_ms(cli->clock);
  const int64_t deadline = cli->timeout_ms > 0 ? start + cli->timeout_ms : 0;
  struct progress prog = {0};
  json_t *op = NULL;
  char path[512];
  int rc;

  *final = NULL;
  if (nc_cli_pathf(path, sizeof path, "/v1/operations/%s", id) != 0)
    return nc_cli_fail(cli, "operation id \"%s\" is too long", id);
  const size_t base_len = strlen(path);
  for (;;) {
    int64_t wait_s = tty ? POLL_WAIT_TTY_S : POLL_WAIT_S;
    int64_t now = nc_mono_ms(cli->clock);
    if (deadline != 0) {
      int64_t left_ms = deadline - now;
      if (left_ms <= 0) {
        char took[32];
        progress_clear(cli, &prog);
        nc_cli_format_duration(now - start, took, sizeof took);
        rc = nc_cli_fail(cli,
                         "operation %s (%s) still running after %s; it goes on: follow it with "
                         "'novacron op show %s --wait' or stop it with 'novacron op cancel %s'",
                         id, header, took, id, id);
        goto out;
      }
      if (wait_s * 1000 > left_ms)
        wait_s = (left_ms + 999) / 1000;
    }
    snprintf(path + base_len, sizeof path - base_len, "?wait_s=%d", (int)wait_s);
    json_decref(op);
    op = NULL;
    rc = nc__cli_call_timeout(cli, "GET", path, NULL,
                              wait_s * 1000 + NC_CLI_DEFAULT_REQUEST_TIMEOUT_MS, &op);
    if (rc != NC_CLI_EXIT_OK) {
      /* The error was printed below the block; leave the block as is. */
      goto out;
    }
    if (nc_cli_jstr(op, "status") == NULL) {
      progress_clear(cli, &prog);
      rc = nc_cli_fail(cli, "operation %s: the answer has no status", id);
      goto out;
    }
    if (nc_cli_op_finished(op))
      break;
    if (tty)
      progress_draw(cli, &prog, header, op);
    int64_t took = nc_mono_ms(cli->clock) - now;
    if (took < POLL_MIN_MS)
      sleep_ms(cli, POLL_MIN_MS - took);
  }
  progress_clear(cli, &prog);
  *final = op;
  op = NULL;
  rc = NC_CLI_EXIT_OK;
out:
  json_decref(op);
  return rc;
}

/* Prints the result of a finished migration and returns the exit status. */
static int report(struct nc_cli *cli, const char *name, const char *to, const json_t *final) {
  if (cli->output == NC_CLI_OUTPUT_JSON)
    nc_cli_print_json(cli, final);
  int rc = nc_cli_op_outcome(cli, final);
  if (rc != NC_CLI_EXIT_OK || cli->output != NC_CLI_OUTPUT_TABLE)
    return rc;
  const char *msg = nc_cli_jstr(final, "message");
  char raw[1024], line[1024];
  if (msg != NULL && *msg != '\0') {
    /* "migrated to HOST in 3.40 s (mode): N MiB on the wire ...; pages ..." */
    snprintf(raw, sizeof raw, "vm \"%s\" %s", name, msg);
  } else {
    int64_t t0, t1;
    char took[32] = "";
    if (nc_cli_parse_time(nc_cli_jstr(final, "created_at"), &t0) == 0 &&
        nc_cli_parse_time(nc_cli_jstr(final, "finished_at"), &t1) == 0)
      nc_cli_format_duration(t1 - t0, took, sizeof took);
    snprintf(raw, sizeof raw, "vm \"%s\" migrated to %s%s%s%s", name, to, took[0] ? " (" : "",
             took, took[0] ? ")" : "");
  }
  nc_cli_sanitize(raw, line, sizeof line);
  fprintf(cli->out, "%s\n", line);
  return NC_CLI_EXIT_OK;
}

int nc_cli_cmd_vm_migrate(struct nc_cli *cli, int argc, char **argv) {
  const char *to = NULL, *token = NULL, *token_file = NULL, *mode = NULL, *streams = NULL,
             *downtime = NULL, *timeout_s = NULL;
  bool no_wait = false;
  const struct nc_cli_opt opts[] = {
      {"to", NC_CLI_OPT_STR, &to},
      {"token", NC_CLI_OPT_STR, &token},
      {"token-file", NC_CLI_OPT_STR, &token_file},
      {"mode", NC_CLI_OPT_STR, &mode},
      {"streams", NC_CLI_OPT_STR, &streams},
      {"max-downtime-ms", NC_CLI_OPT_STR, &downtime},
      {"timeout-s", NC_CLI_OPT_STR, &timeout_s},
      {"no-wait", NC_CLI_OPT_BOOL, &no_wait},
      {NULL, 0, NULL},
  };
  static const char *const names[] = {"NAME"};
  const struct nc_cli_argspec spec = {opts, names, 1, 1};
  const char *pos[1];
  char path[512], header[512], done[512];
  char *secret = NULL;
  json_t *body = NULL, *resp = NULL, *final = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  if (to == NULL)
    return nc_cli_usage_error(cli, "--to is required: the destination novacrond's API address "
                                   "HOST:PORT, or in a cluster a node name");
  if (!to_ok(to))
    return nc_cli_usage_error(cli, "--to \"%s\" is not HOST:PORT (like 10.0.0.2:8470) nor a "
                                   "node name", to);
  if (token != NULL && token_file != NULL)
    return nc_cli_usage_error(cli, "give --token or --token-file, not both");
  if (mode != NULL) {
    size_t i;
    for (i = 0; k_modes[i] != NULL && strcmp(k_modes[i], mode) != 0; i++)
      ;
    if (k_modes[i] == NULL)
      return nc_cli_usage_error(cli, "--mode \"%s\" is not auto, datacenter, hybrid or internet",
                                mode);
  }
  rc = nc__cli_path(cli, path, sizeof path, "/v1/vms/%s/migrate", pos[0]);
  if (rc != 0)
    return rc;

  body = json_object();
  json_object_set_new(body, "to", json_string(to));
  if ((rc = int_flag(cli, body, "streams", streams, "streams", 1, MIGRATE_STREAMS_MAX,
                     "a number of streams")) != 0 ||
      (rc = int_flag(cli, body, "max-downtime-ms", downtime, "max_downtime_ms",
                     MIGRATE_DOWNTIME_MIN_MS, MIGRATE_DOWNTIME_MAX_MS, "milliseconds")) != 0 ||
      (rc = int_flag(cli, body, "timeout-s", timeout_s, "timeout_s", MIGRATE_TIMEOUT_MIN_S,
                     MIGRATE_TIMEOUT_MAX_S, "seconds")) != 0)
    goto out;
  if (mode != NULL)
    json_object_set_new(body, "mode", json_string(mode));
  if (token_file != NULL) {
    int trc = nc__cli_read_token_file(token_file, &secret);
    if (trc != 0) {
      rc = nc_cli_usage_error(cli, "cannot read --token-file %s: %s", token_file,
                              trc == -EFBIG    ? "larger than a token can be"
                              : trc == -EINVAL ? "it is empty"
                                               : strerror(-trc));
      goto out;
    }
    token = secret;
  }
  if (token != NULL) {
    if (!token_ok(token)) {
      rc = nc_cli_usage_error(cli, "the destination token contains spaces or control "
                                   "characters");
      goto out;
    }
    json_object_set_new(body, "token", json_string(token));
  }

  rc = nc_cli_call(cli, "POST", path, body, &resp);
  if (rc != NC_CLI_EXIT_OK)
    goto out;
  const json_t *op = json_object_get(resp, "operation");
  const char *id = nc_cli_jstr(op, "id");
  if (no_wait) {
    snprintf(done, sizeof done, "vm \"%s\" is migrating to %s", pos[0], to);
    rc = nc_cli_op_follow(cli, resp, json_is_null(op) ? NULL : op, true, done);
    goto out;
  }
  if (id == NULL) {
    rc = nc_cli_fail(cli, "the server accepted the migration but named no operation to follow");
    goto out;
  }
  snprintf(header, sizeof header, "vm.migrate %s -> %s", pos[0], to);
  if (nc_cli_op_finished(op)) {
    final = json_incref((json_t *)op);
  } else {
    if (cli->io->err_tty) {
      char raw[1024], line[1024];
      snprintf(raw, sizeof raw,
               "migrating vm \"%s\" to %s as %s; Ctrl-C stops watching, 'novacron op cancel %s' "
               "stops the migration",
               pos[0], to, id, id);
      nc_cli_sanitize(raw, line, sizeof line);
      fprintf(cli->err, "%s\n", line);
    }
    rc = wait_migration(cli, id, header, &final);
    if (rc != NC_CLI_EXIT_OK)
      goto out;
  }
  rc = report(cli, pos[0], to, final);
out:
  json_decref(final);
  json_decref(resp);
  json_decref(body);
  if (secret != NULL) {
    memset(secret, 0, strlen(secret));
    free(secret);
  }
  return rc;
}
