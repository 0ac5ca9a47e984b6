/* novacron events: follows GET /v1/events (text/event-stream) and prints
 * one line per event. With --output json it prints each event's data line
 * as sent, one JSON object per line, ready for jq. The stream ending (the
 * daemon stopped) exits 3; --timeout N follows for N seconds, then exits 0. */
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/op.h"
#include "cli/sse.h"
#include "util/err.h"

#include <errno.h>
#include <string.h>

#define NC_CLI_SSE_LINE_MAX (1u << 20)
#define NC_CLI_SSE_EVENT_MAX (1u << 20)

struct follow {
  struct nc_cli *cli;
  struct nc_cli_sse *sse;
  bool got_data; /* the stream was open with a 2xx */
};

static void print_event(struct nc_cli *cli, const char *event, const char *data, size_t len) {
  FILE *f = cli->out;
  char line[2048], clean[2048];
  json_t *j = NULL;

  if (cli->output == NC_CLI_OUTPUT_JSON) {
    fwrite(data, 1, len, f);
    fputc('\n', f);
    fflush(f);
    return;
  }
  j = json_loadb(data, len, 0, NULL);
  if (strcmp(event, "vm.state") == 0 && json_is_object(j)) {
    const char *reason = nc_cli_jstr(j, "reason");
    snprintf(line, sizeof line, "%s  vm.state   %s  %s -> %s%s%s%s",
             nc_cli_jstr_or(j, "at", "-"),
             nc_cli_jstr_or(j, "vm", "?"),
             nc_cli_jstr_or(j, "from", "?"),
             nc_cli_jstr_or(j, "to", "?"), reason && *reason ? "  (" : "",
             reason && *reason ? reason : "", reason && *reason ? ")" : "");
  } else if (strcmp(event, "operation") == 0 && json_is_object(j)) {
    char progress[16];
    const char *msg = nc_cli_jstr(j, "message");
    const char *emsg = nc_cli_jstr(json_object_get(j, "error"), "message");
    nc_cli_op_progress(j, progress, sizeof progress);
    snprintf(line, sizeof line, "%s  operation  %s  %s %s  %s %s%s%s",
             nc_cli_jstr_or(j, "updated_at", "-"),
             nc_cli_jstr_or(j, "id", "?"),
             nc_cli_jstr_or(j, "kind", "?"),
             nc_cli_jstr_or(j, "target", "?"),
             nc_cli_jstr_or(j, "status", "?"), progress,
             emsg ? "  " : msg && *msg ? "  " : "", emsg ? emsg : msg ? msg : "");
  } else {
    snprintf(line, sizeof line, "%s  %.*s", event, (int)len, data);
  }
  nc_cli_sanitize(line, clean, sizeof clean);
  fprintf(f, "%s\n", clean);
  fflush(f);
  json_decref(j);
}

static int on_event(void *arg, const char *event, const char *data, size_t len) {
  struct follow *fl = arg;
  print_event(fl->cli, event, data, len);
  return 0;
}

static int on_bytes(void *arg, const char *data, size_t len) {
  struct follow *fl = arg;
  fl->got_data = true;
  return nc_cli_sse_feed(fl->sse, data, len);
}

int nc_cli_cmd_events(struct nc_cli *cli, int argc, char **argv) {
  const struct nc_cli_argspec spec = {NULL, NULL, 0, 0};
  struct follow fl = {.cli = cli};
  struct nc_cli_http_resp resp = {0};
  struct nc_cli_transport *t;
  char errbuf[256] = "";
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, NULL);
  if (rc != 0)
    return nc_cli_args_status(rc);
  t = nc_cli_transport(cli);
  if (t == NULL)
    return NC_CLI_EXIT_FAIL;
  if (nc_cli_sse_new(NC_CLI_SSE_LINE_MAX, NC_CLI_SSE_EVENT_MAX, on_event, &fl, &fl.sse) != 0)
    return nc_cli_fail(cli, "out of memory");

  const struct nc_cli_http_req req = {
      .method = "GET",
      .path = "/v1/events",
      .accept = "text/event-stream",
      .timeout_ms = cli->timeout_ms,
  };
  rc = t->stream(t, &req, on_bytes, &fl, &resp, errbuf, sizeof errbuf);
  if (rc == NC_E_TOOBIG) {
    rc = nc_cli_fail(cli, "an event from %s is larger than %u KiB", cli->endpoint,
                     NC_CLI_SSE_EVENT_MAX >> 10);
  } else if (rc == -ETIMEDOUT && cli->timeout_ms > 0 &&
             (fl.got_data || (resp.status >= 200 && resp.status < 300))) {
    rc = NC_CLI_EXIT_OK; /* followed the stream for --timeout */
  } else if (rc != 0) {
    rc = nc_cli_report_transport_error(cli, rc, errbuf);
  } else if (resp.status < 200 || resp.status >= 300) {
    rc = nc_cli_report_http_error(cli, &resp);
  } else {
    fprintf(cli->err, "novacron: novacrond at %s ended the event stream\n", cli->endpoint);
    rc = NC_CLI_EXIT_UNREACHABLE;
  }
  nc_cli_http_resp_reset(&resp);
  nc_cli_sse_destroy(fl.sse);
  return rc;
}
