#include "cli/call.h"

#include "cli/fmt.h"
#include "util/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *nc_cli_jstr(const json_t *o, const char *key) {
  const json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
  return json_is_string(v) ? json_string_value(v) : NULL;
}

const char *nc_cli_jstr_or(const json_t *o, const char *key, const char *dflt) {
  const char *s = nc_cli_jstr(o, key);
  return s != NULL ? s : dflt;
}

int64_t nc_cli_jint(const json_t *o, const char *key, int64_t dflt) {
  const json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
  if (json_is_integer(v))
    return (int64_t)json_integer_value(v);
  if (json_is_real(v))
    return (int64_t)json_real_value(v);
  return dflt;
}

void nc_cli_jage(struct nc_cli *cli, const json_t *o, const char *key, char *buf, size_t n) {
  int64_t t;
  if (nc_cli_parse_time(nc_cli_jstr(o, key), &t) != 0) {
    snprintf(buf, n, "-");
    return;
  }
  nc_cli_format_age(nc_wall_ms(cli->clock) - t, buf, n);
}

void nc_cli_print_json(struct nc_cli *cli, const json_t *j) {
  json_dumpf(j, cli->out, JSON_INDENT(2));
  fputc('\n', cli->out);
}

/* First line of a text body, trimmed. */
static void first_line(const char *body, size_t len, char *out, size_t n) {
  size_t start = 0, end;
  while (start < len && (body[start] == ' ' || body[start] == '\t' || body[start] == '\r' ||
                         body[start] == '\n'))
    start++;
  end = start;
  while (end < len && body[end] != '\n' && body[end] != '\r' && body[end] != '\0')
    end++;
  while (end > start && (body[end - 1] == ' ' || body[end - 1] == '\t'))
    end--;
  char tmp[512];
  size_t m = end - start < sizeof tmp - 1 ? end - start : sizeof tmp - 1;
  memcpy(tmp, body + start, m);
  tmp[m] = '\0';
  nc_cli_sanitize(tmp, out, n);
}

int nc_cli_error_message(long status, const char *body, size_t len, char *out, size_t n) {
  json_t *root = NULL;
  int rc = -ENOENT;

  if (body != NULL && len > 0) {
    root = json_loadb(body, len, 0, NULL);
    if (root != NULL) {
      json_t *err = json_object_get(root, "error");
      const char *msg = NULL;
      if (json_is_object(err))
        msg = nc_cli_jstr(err, "message");
      else if (json_is_string(err))
        msg = json_string_value(err);
      if (msg == NULL)
        msg = nc_cli_jstr(root, "message");
      if (msg != NULL && *msg != '\0') {
        /* Multi-line messages become one line. */
        first_line(msg, strlen(msg), out, n);
        rc = 0;
        goto out;
      }
    } else {
      char line[512];
      first_line(body, len, line, sizeof line);
      if (line[0] != '\0') {
        snprintf(out, n, "HTTP %ld: %s", status, line);
        rc = 0;
        goto out;
      }
    }
  }
  snprintf(out, n, "the daemon answered HTTP %ld without saying why", status);
out:
  json_decref(root);
  return rc;
}

int nc_cli_report_transport_error(struct nc_cli *cli, int err, const char *detail) {
  const bool is_unix = cli->ep.kind == NC_CLI_EP_UNIX;
  char clean[256];
  nc_cli_sanitize(detail ? detail : "", clean, sizeof clean);

  if (!nc_cli_http_unreachable(err)) {
    fprintf(cli->err, "novacron: %s: %s\n", cli->endpoint,
            clean[0] ? clean : nc_strerror(err));
    return NC_CLI_EXIT_FAIL;
  }
  switch (err) {
  case -ETIMEDOUT:
    fprintf(cli->err, "novacron: novacrond at %s did not answer in time (%s)\n", cli->endpoint,
            clean);
    fprintf(cli->err, "hint: is it overloaded or stuck? --timeout SECONDS allows longer\n");
    break;
  case -EACCES:
    fprintf(cli->err, "novacron: cannot reach novacrond at %s: permission denied\n",
            cli->endpoint);
    fprintf(cli->err, "hint: %s\n",
            is_unix ? "the API socket is root's (mode 0600): run as root, or use the TCP "
                      "listener with --endpoint http://HOST:PORT and --token-file"
                    : "check the address and firewall");
    break;
  case -ECONNRESET:
    fprintf(cli->err, "novacron: novacrond at %s closed the connection (%s)\n", cli->endpoint,
            clean);
    fprintf(cli->err, "hint: did it stop or restart? Check its log\n");
    break;
  default:
    fprintf(cli->err, "novacron: cannot reach novacrond at %s: %s\n", cli->endpoint,
            err == -ENOENT ? "no socket there" : nc_strerror(err));
    if (is_unix)
      fprintf(cli->err, "hint: is novacrond running? If it uses another data directory, pass "
                        "--data-dir DIR; for a remote daemon, --endpoint http://HOST:PORT\n");
    else
      fprintf(cli->err, "hint: is novacrond running and listening there (novacrond --listen "
                        "HOST:PORT)? For the local daemon, leave out --endpoint\n");
    break;
  }
  return NC_CLI_EXIT_UNREACHABLE;
}

void nc__cli_error_code(const struct nc_cli_http_resp *resp, char *out, size_t n) {
  json_t *root = resp->body != NULL && resp->len > 0 ? json_loadb(resp->body, resp->len, 0, NULL)
                                                     : NULL;
  snprintf(out, n, "%s", nc_cli_jstr_or(json_object_get(root, "error"), "code", ""));
  json_decref(root);
}

/* Does the answer's error name a field ({"error": {"field": "..."}})? */
static bool error_names_field(const struct nc_cli_http_resp *resp) {
  json_t *root = resp->body != NULL && resp->len > 0 ? json_loadb(resp->body, resp->len, 0, NULL)
                                                     : NULL;
  const char *f = nc_cli_jstr(json_object_get(root, "error"), "field");
  bool named = f != NULL && f[0] != '\0';
  json_decref(root);
  return named;
}

int nc_cli_report_http_error(struct nc_cli *cli, const struct nc_cli_http_resp *resp) {
  char msg[1024], code[64];
  nc_cli_error_message(resp->status, resp->body, resp->len, msg, sizeof msg);
  nc__cli_error_code(resp, code, sizeof code);
  if (cli->output == NC_CLI_OUTPUT_JSON && resp->body != NULL) {
    json_t *j = json_loadb(resp->body, resp->len, 0, NULL);
    if (j != NULL)
      nc_cli_print_json(cli, j);
    json_decref(j);
  }
  if (strcmp(code, "not_clustered") == 0) {
    /* Whatever the daemon's wording, say it plainly and point at the fix:
     * the cluster routes answer this on a single node (docs/api.md). */
    fprintf(cli->err, "novacron: this node is not in a cluster\n"
                      "hint: cluster and node commands need novacrond running as a cluster "
                      "member (see docs/cluster.md)\n");
    return NC_CLI_EXIT_FAIL;
  }
  fprintf(cli->err, "novacron: %s\n", msg);
  /* The listener's own refusal of this request names no field. A 401 the
   * daemon passes on from a peer names what the peer refused (a join's
   * "token", a migration's "to"), and the API token is not it. */
  if (resp->status == 401 && !error_names_field(resp))
    fprintf(cli->err, "hint: the TCP listener needs a bearer token: --token-file "
                      "<data-dir>/api.token or $NOVACRON_TOKEN\n");
  return NC_CLI_EXIT_FAIL;
}

/* failed: NULL to print a non-2xx answer, else where it goes unprinted. */
static int do_request(struct nc_cli *cli, const char *method, const char *path, const char *body,
                      const char *accept, int64_t timeout_ms, struct nc_cli_http_resp *resp,
                      struct nc_cli_http_resp *failed) {
  struct nc_cli_transport *t = nc_cli_transport(cli);
  char errbuf[256] = "";
  if (t == NULL)
    return NC_CLI_EXIT_FAIL;
  struct nc_cli_http_req req = {
      .method = method,
      .path = path,
      .body = body,
      .body_len = body ? strlen(body) : 0,
      .accept = accept,
      .timeout_ms = timeout_ms,
  };
  int rc = t->request(t, &req, resp, errbuf, sizeof errbuf);
  if (rc != 0)
    return nc_cli_report_transport_error(cli, rc, errbuf);
  if (resp->status < 200 || resp->status >= 300) {
    if (failed != NULL) {
      *failed = *resp;
      memset(resp, 0, sizeof *resp);
      return NC_CLI_EXIT_FAIL;
    }
    rc = nc_cli_report_http_error(cli, resp);
    nc_cli_http_resp_reset(resp);
    return rc;
  }
  return NC_CLI_EXIT_OK;
}

int nc_cli_call_raw(struct nc_cli *cli, const char *method, const char *path, const char *accept,
                    struct nc_cli_http_resp *resp) {
  return do_request(cli, method, path, NULL, accept, nc_cli_request_timeout_ms(cli), resp, NULL);
}

int nc__cli_call_timeout(struct nc_cli *cli, const char *method, const char *path,
                         const json_t *body, int64_t timeout_ms, json_t **out) {
  return nc__cli_call_ex(cli, method, path, body, timeout_ms, NULL, out);
}

int nc__cli_call_ex(struct nc_cli *cli, const char *method, const char *path, const json_t *body,
                    int64_t timeout_ms, struct nc_cli_http_resp *failed, json_t **out) {
  struct nc_cli_http_resp resp = {0};
  char *text = NULL;
  json_t *root = NULL;
  json_error_t jerr;
  int rc;

  if (out != NULL)
    *out = NULL;
  if (body != NULL) {
    text = json_dumps(body, JSON_COMPACT);
    if (text == NULL)
      return nc_cli_fail(cli, "out of memory encoding the request");
  }
  if (failed != NULL)
    memset(failed, 0, sizeof *failed);
  rc = do_request(cli, method, path, text, NULL, timeout_ms, &resp, failed);
  if (rc != NC_CLI_EXIT_OK)
    goto out;
  if (resp.len == 0) {
    root = json_object(); /* 204, or a 2xx without a body */
  } else {
    root = json_loadb(resp.body, resp.len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
      rc = nc_cli_fail(cli, "%s %s: the answer from %s is not JSON (%s)", method, path,
                       cli->endpoint, jerr.text);
      goto out;
    }
  }
  if (!json_is_object(root)) {
    rc = nc_cli_fail(cli, "%s %s: the answer from %s is not a JSON object", method, path,
                     cli->endpoint);
    goto out;
  }
  if (out != NULL) {
    *out = root;
    root = NULL;
  }
out:
  json_decref(root);
  free(text);
  nc_cli_http_resp_reset(&resp);
  return rc;
}

int nc_cli_call(struct nc_cli *cli, const char *method, const char *path, const json_t *body,
                json_t **out) {
  return nc__cli_call_timeout(cli, method, path, body, nc_cli_request_timeout_ms(cli), out);
}
