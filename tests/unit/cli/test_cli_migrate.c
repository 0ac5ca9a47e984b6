/* novacron vm migrate through nc_cli_main against the fake transport:
 * flag parsing (every documented range, both ends), the MigrateRequest
 * each command line sends, following the operation (the multi-row
 * progress block on a terminal, the summary line, failure, cancel,
 * --timeout, --no-wait, -o json) and the exit status rules. */
#include "harness.h"

#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "checks.h"


/* A token file in a fresh temporary directory; unlinked by the caller. */
static void token_file(char *path, size_t n, const char *content) {
  snprintf(path, n, "/tmp/nc-cli-migrate-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t len = strlen(content);
  assert_int_equal(write(fd, content, len), (ssize_t)len);
  close(fd);
}

/* ---- usage errors: exit 2, a message naming the flag, nothing sent ---- */

struct usage_case {
  const char *argv[16];
  const char *want; /* in stderr */
};

static const struct usage_case k_usage[] = {
    {{"vm", "migrate"}, "missing NAME"},
    {{"vm", "migrate", "web"}, "--to is required"},
    {{"vm", "migrate", "web", "--to"}, "--to needs a value"},
    {{"vm", "migrate", "web", "--to="}, "--to needs a non-empty value"},
    {{"vm", "migrate", "web", "--to", "10.0.0.2"}, "--to \"10.0.0.2\" is not HOST:PORT"},
    {{"vm", "migrate", "web", "--to", ":8470"}, "--to \":8470\" is not HOST:PORT"},
    {{"vm", "migrate", "web", "--to", "h:"}, "--to \"h:\" is not HOST:PORT"},
    {{"vm", "migrate", "web", "--to", "h:0"}, "--to \"h:0\" is not HOST:PORT"},
    {{"vm", "migrate", "web", "--to", "h:65536"}, "--to \"h:65536\" is not HOST:PORT"},
    {{"vm", "migrate", "web", "--to", "h:84x"}, "--to \"h:84x\" is not HOST:PORT"},
    {{"vm", "migrate", "web", "--to", "h:-1"}, "--to \"h:-1\" is not HOST:PORT"},
    {{"vm", "migrate", "web", "--to", "a b:1"}, "--to \"a b:1\" is not HOST:PORT"},
    {{"vm", "migrate", "web", "--to", "h/x:1"}, "--to \"h/x:1\" is not HOST:PORT"},
    {{"vm", "migrate", "web", "--to", "h:1", "--to", "h:2"}, "--to given twice"},
    {{"vm", "migrate", "web", "--to", "h:1", "--mode", "lan"},
     "--mode \"lan\" is not auto, datacenter, hybrid or internet"},
    {{"vm", "migrate", "web", "--to", "h:1", "--mode", "AUTO"}, "--mode \"AUTO\""},
    {{"vm", "migrate", "web", "--to", "h:1", "--streams", "0"},
     "--streams \"0\" is not a number of streams from 1 to 16"},
    {{"vm", "migrate", "web", "--to", "h:1", "--streams", "17"}, "--streams \"17\""},
    {{"vm", "migrate", "web", "--to", "h:1", "--streams", "four"}, "--streams \"four\""},
    {{"vm", "migrate", "web", "--to", "h:1", "--streams", "-1"}, "--streams \"-1\""},
    {{"vm", "migrate", "web", "--to", "h:1", "--max-downtime-ms", "9"},
     "--max-downtime-ms \"9\" is not milliseconds from 10 to 60000"},
    {{"vm", "migrate", "web", "--to", "h:1", "--max-downtime-ms", "60001"},
     "--max-downtime-ms \"60001\""},
    {{"vm", "migrate", "web", "--to", "h:1", "--max-downtime-ms", "1s"},
     "--max-downtime-ms \"1s\""},
    {{"vm", "migrate", "web", "--to", "h:1", "--timeout-s", "4"},
     "--timeout-s \"4\" is not seconds from 5 to 86400"},
    {{"vm", "migrate", "web", "--to", "h:1", "--timeout-s", "86401"}, "--timeout-s \"86401\""},
    {{"vm", "migrate", "web", "--to", "h:1", "--token", "a", "--token-file", "/x"},
     "give --token or --token-file, not both"},
    {{"vm", "migrate", "web", "--to", "h:1", "--token", "a b"},
     "the destination token contains spaces"},
    {{"vm", "migrate", "web", "--to", "h:1", "--token-file", "/nonexistent/t"},
     "cannot read --token-file /nonexistent/t"},
    {{"vm", "migrate", "web", "--to", "h:1", "--no-wait=1"}, "--no-wait takes no value"},
    {{"vm", "migrate", "web", "--to", "h:1", "--force"}, "unknown flag --force"},
    {{"vm", "migrate", "web", "other", "--to", "h:1"}, "unexpected argument \"other\""},
    {{"vm", "migrate", "", "--to", "h:1"}, "NAME must not be empty"},
};

static void test_usage_errors(void **state) {
  struct harness *h = *state;
  for (size_t i = 0; i < sizeof k_usage / sizeof *k_usage; i++) {
    const struct usage_case *c = &k_usage[i];
    int argc = 0;
    while (c->argv[argc] != NULL)
      argc++;
    h_free(h);
    h_init(h);
    h_reply(h, 200, "{}");
    h_runv(h, argc, c->argv);
    if (h->rc != 2 || strstr(h->err, c->want) == NULL || h->nreqs != 0)
      fail_msg("case %zu (%s ...): exit %d, %d requests, stderr:\n%s\nwant exit 2, no request, "
               "stderr containing \"%s\"",
               i, argc > 3 ? c->argv[3] : "", h->rc, h->nreqs, h->err, c->want);
    /* The usage line follows the message. */
    check_contains(h->err, "usage: novacron vm migrate NAME --to HOST:PORT");
  }
}

static void test_token_file_errors(void **state) {
  struct harness *h = *state;
  char path[64];
  token_file(path, sizeof path, " \n\t\n");
  h_reply(h, 200, "{}");
  h_run(h, "vm", "migrate", "web", "--to", "h:1", "--token-file", path, NULL);
  unlink(path);
  check_rc(h, 2);
  check_contains(h->err, "it is empty");
  assert_int_equal(h->nreqs, 0);

  char big[NC_CLI_TOKEN_MAX + 16];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  token_file(path, sizeof path, big);
  h_run(h, "vm", "migrate", "web", "--to", "h:1", "--token-file", path, NULL);
  unlink(path);
  check_rc(h, 2);
  check_contains(h->err, "larger than a token can be");
  assert_int_equal(h->nreqs, 0);
}

/* ---- the request each valid command line sends ---- */

struct req_case {
  const char *argv[24];
  const char *path, *body;
};

static const struct req_case k_reqs[] = {
    {{"vm", "migrate", "web-1", "--to", "10.0.0.2:8470"},
     "/v1/vms/web-1/migrate", "{\"to\":\"10.0.0.2:8470\"}"},
    {{"vm", "migrate", "--to=node-b.example:1", "web-1"},
     "/v1/vms/web-1/migrate", "{\"to\":\"node-b.example:1\"}"},
    {{"vm", "migrate", "web-1", "--to", "h:65535", "--mode", "internet", "--streams", "16",
      "--max-downtime-ms", "60000", "--timeout-s", "86400", "--token", "s3cret"},
     "/v1/vms/web-1/migrate",
     "{\"to\":\"h:65535\",\"mode\":\"internet\",\"streams\":16,\"max_downtime_ms\":60000,"
     "\"timeout_s\":86400,\"token\":\"s3cret\"}"},
    {{"vm", "migrate", "web-1", "--to", "h:1", "--mode", "auto", "--streams", "1",
      "--max-downtime-ms", "10", "--timeout-s", "5"},
     "/v1/vms/web-1/migrate",
     "{\"to\":\"h:1\",\"mode\":\"auto\",\"streams\":1,\"max_downtime_ms\":10,\"timeout_s\":5}"},
    {{"vm", "migrate", "web-1", "--to", "h:1", "--mode", "datacenter"},
     "/v1/vms/web-1/migrate", "{\"to\":\"h:1\",\"mode\":\"datacenter\"}"},
    {{"vm", "migrate", "web-1", "--to", "h:1", "--mode", "hybrid"},
     "/v1/vms/web-1/migrate", "{\"to\":\"h:1\",\"mode\":\"hybrid\"}"},
    {{"vm", "migrate", "--to", "[fd00::2]:8470", "--", "a b/c"},
     "/v1/vms/a%20b%2Fc/migrate", "{\"to\":\"[fd00::2]:8470\"}"},
};

static const char k_done_op[] =
    "{\"operation\":{\"id\":\"op-1\",\"kind\":\"vm.migrate\",\"target\":\"web-1\","
    "\"status\":\"succeeded\",\"progress\":1,\"message\":\"migrated\"}}";

static void test_requests(void **state) {
  struct harness *h = *state;
  for (size_t i = 0; i < sizeof k_reqs / sizeof *k_reqs; i++) {
    const struct req_case *c = &k_reqs[i];
    int argc = 0;
    while (c->argv[argc] != NULL)
      argc++;
    h_free(h);
    h_init(h);
    h_reply(h, 202, k_done_op);
    h_runv(h, argc, c->argv);
    if (h->rc != 0 || h->nreqs != 1)
      fail_msg("case %zu: exit %d after %d requests\nstderr:\n%s", i, h->rc, h->nreqs, h->err);
    if (strcmp(h->reqs[0].method, "POST") != 0 || strcmp(h->reqs[0].path, c->path) != 0)
      fail_msg("case %zu: sent %s %s, want POST %s", i, h->reqs[0].method, h->reqs[0].path,
               c->path);
    check_body(&h->reqs[0], c->body);
  }
}

static void test_token_file(void **state) {
  struct harness *h = *state;
  char path[64];
  token_file(path, sizeof path, "  0123456789abcdef0123456789abcdef \r\nignored second line\n");
  h_reply(h, 202, k_done_op);
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", "--token-file", path, NULL);
  unlink(path);
  check_rc(h, 0);
  check_body(&h->reqs[0], "{\"to\":\"h:1\",\"token\":\"0123456789abcdef0123456789abcdef\"}");
}

/* The global --token (before the noun) is this node's API token, not the
 * destination's: it goes in the header, never in the body. */
static void test_global_token_is_not_the_destination_token(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, k_done_op);
  h_run(h, "--token", "local", "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 0);
  check_body(&h->reqs[0], "{\"to\":\"h:1\"}");
}

/* ---- following the operation ---- */

static const char k_accepted[] =
    "{\"operation\":{\"id\":\"op-m\",\"kind\":\"vm.migrate\",\"target\":\"web-1\","
    "\"status\":\"pending\",\"progress\":0}}";

#define LONG_MSG                                                                                \
  "hybrid: pass 3, 200/256 MiB sent, 12 MiB remaining, dirty 20.1 MiB/s, wire 31.5 MiB for "   \
  "200.0 MiB of stream (0.16), expected downtime 120 ms, 7.5 s"
#define SHORT_MSG "connecting DWCP streams"
#define FINAL_MSG                                                                               \
  "migrated to 10.0.0.2:8470 in 9.10 s (hybrid): 40.2 MiB on the wire for 260.0 MiB of "       \
  "stream; pages 65536: zero 30000, ref 1000, delta 200, raw 34336"

static const char k_running_long[] =
    "{\"id\":\"op-m\",\"kind\":\"vm.migrate\",\"target\":\"web-1\",\"status\":\"running\","
    "\"progress\":0.7,\"message\":\"" LONG_MSG "\"}";
static const char k_running_short[] =
    "{\"id\":\"op-m\",\"kind\":\"vm.migrate\",\"target\":\"web-1\",\"status\":\"running\","
    "\"progress\":0.02,\"message\":\"" SHORT_MSG "\"}";
static const char k_succeeded[] =
    "{\"id\":\"op-m\",\"kind\":\"vm.migrate\",\"target\":\"web-1\",\"status\":\"succeeded\","
    "\"progress\":1,\"message\":\"" FINAL_MSG "\","
    "\"created_at\":\"2026-11-27T23:00:00.000Z\",\"finished_at\":\"2026-11-27T23:00:09.100Z\"}";

static void test_waits_and_prints_summary(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, k_accepted);
  h_reply(h, 200, k_running_long);
  h_reply(h, 200, k_succeeded);
  h_run(h, "vm", "migrate", "web-1", "--to", "10.0.0.2:8470", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 3);
  assert_string_equal(h->reqs[1].method, "GET");
  assert_string_equal(h->reqs[1].path, "/v1/operations/op-m?wait_s=30");
  assert_true(h->reqs[1].timeout_ms > 30000); /* outlives the server's wait */
  assert_string_equal(h->out, "vm \"web-1\" " FINAL_MSG "\n");
  assert_string_equal(h->err, ""); /* not a tty: no progress */
}

/* Splits what the progress block wrote to stderr into the blocks drawn:
 * each is cut at a clear ("\r", optionally "ESC[nA", then "ESC[J"), whose
 * n must be the previous block's rows - 1. Returns the number of blocks,
 * writing each one's text (rows joined by a space) into texts. */
static int parse_blocks(const char *err, char texts[][1024], int max) {
  int n = 0, prev_rows = 0;
  const char *p = err;
  char cur[1024];
  size_t len = 0;
  int rows = 1;
  for (;;) {
    if (*p == '\0' || *p == '\r') {
      if (len > 0) {
        if (n == max)
          fail_msg("more than %d progress blocks in:\n%s", max, err);
        cur[len] = '\0';
        snprintf(texts[n++], 1024, "%s", cur);
        prev_rows = rows;
      }
      if (*p == '\0')
        break;
      int up = 0;
      p++;
      if (strncmp(p, "\033[", 2) == 0 && p[2] >= '1' && p[2] <= '9') {
        up = atoi(p + 2);
        p = strchr(p, 'A') + 1;
      }
      if (strncmp(p, "\033[J", 3) != 0)
        fail_msg("a clear without ESC[J in:\n%s", err);
      p += 3;
      if (up != prev_rows - 1)
        fail_msg("cursor moved up %d rows over a block of %d rows in:\n%s", up, prev_rows, err);
      len = 0;
      rows = 1;
      continue;
    }
    if (*p == '\n') {
      if (len > 0 && cur[len - 1] == ' ')
        fail_msg("a row ends with a blank in:\n%s", err);
      cur[len++] = '\001'; /* row separator, replaced below */
      rows++;
      p++;
      continue;
    }
    if ((unsigned char)*p < 0x20)
      fail_msg("control byte 0x%02x in the progress block:\n%s", *p, err);
    cur[len++] = *p++;
  }
  for (int i = 0; i < n; i++) {
    char *row_start = texts[i];
    for (char *q = texts[i]; *q; q++)
      if (*q == '\001') {
        if (q - row_start > 79)
          fail_msg("a row of %td columns in:\n%s", q - row_start, err);
        *q = ' ';
        row_start = q + 1;
      }
    if (strlen(row_start) > 79)
      fail_msg("a row of %zu columns in:\n%s", strlen(row_start), err);
  }
  return n;
}

static void test_progress_block_on_tty(void **state) {
  struct harness *h = *state;
  char blocks[8][1024];
  h->io.err_tty = true;
  h_reply(h, 202, k_accepted);
  h_reply(h, 200, k_running_short);
  h_reply(h, 200, k_running_long);
  h_reply(h, 200, k_running_short);
  h_reply(h, 200, k_succeeded);
  h_run(h, "vm", "migrate", "web-1", "--to", "10.0.0.2:8470", NULL);
  check_rc(h, 0);
  assert_string_equal(h->reqs[1].path, "/v1/operations/op-m?wait_s=2");
  /* First a line saying how to stop it, then the blocks. */
  const char *intro = "migrating vm \"web-1\" to 10.0.0.2:8470 as op-m; Ctrl-C stops watching, "
                      "'novacron op cancel op-m' stops the migration\n";
  if (strncmp(h->err, intro, strlen(intro)) != 0)
    fail_msg("stderr does not start with the intro line:\n%s", h->err);
  int n = parse_blocks(h->err + strlen(intro), blocks, 8);
  assert_int_equal(n, 3);
  assert_string_equal(blocks[0], "vm.migrate web-1 -> 10.0.0.2:8470:   2% " SHORT_MSG);
  /* The long message is whole, over several rows, none past column 79. */
  assert_string_equal(blocks[1], "vm.migrate web-1 -> 10.0.0.2:8470:  70% " LONG_MSG);
  assert_string_equal(blocks[2], "vm.migrate web-1 -> 10.0.0.2:8470:   2% " SHORT_MSG);
  /* The block is cleared at the end: the last thing on stderr is a clear. */
  size_t len = strlen(h->err);
  assert_true(len > 4 && strcmp(h->err + len - 4, "\r\033[J") == 0);
  assert_string_equal(h->out, "vm \"web-1\" " FINAL_MSG "\n");
  assert_true(h->slept_ms >= 500); /* an early answer is not a busy loop */
}

static void test_progress_sanitized(void **state) {
  struct harness *h = *state;
  h->io.err_tty = true;
  h_reply(h, 202, k_accepted);
  h_reply(h, 200, "{\"id\":\"op-m\",\"status\":\"running\",\"progress\":0.5,"
                  "\"message\":\"evil\\u001b[2Jtext\\u009b\"}");
  h_reply(h, 200, k_succeeded);
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 0);
  check_contains(h->err, "evil?[2Jtext?");
  assert_null(strstr(h->err, "\033[2J"));
}

static void test_summary_without_message(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, k_accepted);
  h_reply(h, 200, "{\"id\":\"op-m\",\"status\":\"succeeded\",\"message\":\"\","
                  "\"created_at\":\"2026-11-27T23:00:00.000Z\","
                  "\"finished_at\":\"2026-11-27T23:00:03.400Z\"}");
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 0);
  assert_string_equal(h->out, "vm \"web-1\" migrated to h:1 (3.4s)\n");
}

static void test_failed(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, k_accepted);
  h_reply(h, 200, "{\"id\":\"op-m\",\"kind\":\"vm.migrate\",\"target\":\"web-1\","
                  "\"status\":\"failed\",\"message\":\"failed\",\"error\":{\"code\":"
                  "\"peer_unreachable\",\"message\":\"cannot reach the destination h:1: "
                  "Connection refused\"}}");
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 1);
  assert_string_equal(h->out, "");
  assert_string_equal(h->err, "novacron: cannot reach the destination h:1: Connection refused\n");
}

static void test_cancelled(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, k_accepted);
  h_reply(h, 200, "{\"id\":\"op-m\",\"kind\":\"vm.migrate\",\"target\":\"web-1\","
                  "\"status\":\"cancelled\"}");
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err, "novacron: operation op-m (vm.migrate web-1) was cancelled\n");
}

static void test_timeout_keeps_it_running(void **state) {
  struct harness *h = *state;
  h->io.err_tty = true;
  h_reply(h, 202, k_accepted);
  h_reply(h, 200, k_running_long); /* repeats */
  h_run(h, "--timeout", "3", "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 1);
  check_contains(h->err, "operation op-m (vm.migrate web-1 -> h:1) still running after 3.0s");
  check_contains(h->err, "novacron op show op-m --wait");
  check_contains(h->err, "novacron op cancel op-m");
  /* The block was cleared before the message. */
  check_contains(h->err, "\033[J" "novacron: operation op-m");
  /* Each poll asks the server to wait no longer than what is left. */
  assert_string_equal(h->reqs[1].path, "/v1/operations/op-m?wait_s=2");
  assert_string_equal(h->reqs[h->nreqs - 1].path, "/v1/operations/op-m?wait_s=1");
}

static void test_no_wait(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, k_accepted);
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", "--no-wait", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 1);
  assert_string_equal(h->out, "op-m\n");

  h_free(h);
  h_init(h);
  h_reply(h, 202, k_accepted);
  h_run(h, "-o", "json", "vm", "migrate", "web-1", "--to", "h:1", "--no-wait", NULL);
  check_rc(h, 0);
  json_t *j = json_loads(h->out, 0, NULL);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(json_object_get(j, "operation"), "id")),
                      "op-m");
  json_decref(j);
}

static void test_json_after_wait(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, k_accepted);
  h_reply(h, 200, k_succeeded);
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", "-o", "json", NULL);
  check_rc(h, 0);
  json_t *j = json_loads(h->out, 0, NULL);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(j, "status")), "succeeded");
  assert_string_equal(json_string_value(json_object_get(j, "message")), FINAL_MSG);
  json_decref(j);
}

static void test_server_refuses(void **state) {
  struct harness *h = *state;
  h_reply(h, 503, "{\"error\":{\"code\":\"unavailable\",\"message\":\"live migration is not "
                  "available\"}}");
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err, "novacron: live migration is not available\n");
  assert_int_equal(h->nreqs, 1);

  h_free(h);
  h_init(h);
  h_reply(h, 409, "{\"error\":{\"code\":\"conflict\",\"message\":\"vm \\\"web-1\\\" is stopped; "
                  "only a running vm can be migrated\"}}");
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 1);
  check_contains(h->err, "novacron: vm \"web-1\" is stopped");
}

static void test_answer_without_operation(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, "{\"operation\":null}");
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 1);
  check_contains(h->err, "named no operation");
}

static void test_unreachable(void **state) {
  struct harness *h = *state;
  h_fail(h, -ECONNREFUSED);
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 3);
  check_contains(h->err, "cannot reach novacrond");

  /* Losing the daemon while waiting is status 3 too. */
  h_free(h);
  h_init(h);
  h_reply(h, 202, k_accepted);
  h_fail(h, -ECONNRESET);
  h_run(h, "vm", "migrate", "web-1", "--to", "h:1", NULL);
  check_rc(h, 3);
}

static void test_help(void **state) {
  struct harness *h = *state;
  h_run(h, "vm", "migrate", "--help", NULL);
  check_rc(h, 0);
  check_contains(h->out, "usage: novacron vm migrate NAME --to HOST:PORT");
  check_contains(h->out, "--max-downtime-ms N");
  check_contains(h->out, "--token-file FILE");
  h_run(h, "help", "vm", NULL);
  check_contains(h->out, "migrate");
  h_run(h, "help", NULL);
  check_contains(h->out, "vm migrate");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_usage_errors, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_token_file_errors, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_requests, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_token_file, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_global_token_is_not_the_destination_token,
                                      h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_waits_and_prints_summary, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_progress_block_on_tty, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_progress_sanitized, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_summary_without_message, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_failed, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_cancelled, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_timeout_keeps_it_running, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_no_wait, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_json_after_wait, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_server_refuses, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_answer_without_operation, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_unreachable, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_help, h_setup, h_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
