/* Every command through nc_cli_main against a fake transport: argument
 * parsing (valid and invalid), the request each one sends, table output,
 * operation waiting and the exit status rules. */
#include "harness.h"

#include "util/err.h"

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


/* ---- usage errors: exit 2, a message naming the problem, nothing sent ---- */

struct usage_case {
  const char *argv[16];
  const char *want; /* in stderr */
};

static const struct usage_case k_usage[] = {
    {{NULL}, "usage: novacron"},
    {{"bogus"}, "unknown command \"bogus\""},
    {{"vm"}, "usage: novacron vm <verb>"},
    {{"vm", "frobnicate", "x"}, "unknown verb \"frobnicate\""},
    {{"--bogus", "vm", "list"}, "unknown global flag --bogus"},
    {{"--output", "yaml", "vm", "list"}, "--output \"yaml\" is not table or json"},
    {{"vm", "list", "-o", "xml"}, "--output \"xml\" is not table or json"},
    {{"vm", "list", "--output"}, "--output needs a value"},
    {{"--timeout", "soon", "vm", "list"}, "--timeout \"soon\""},
    {{"--timeout", "0", "vm", "list"}, "--timeout \"0\""},
    {{"--endpoint", "ftp://x", "vm", "list"}, "--endpoint \"ftp://x\" is not"},
    {{"--endpoint"}, "--endpoint needs a value"},
    {{"--endpoint", "unix:", "vm", "list"}, "--endpoint \"unix:\""},
    {{"--token", "a", "--token-file", "/x", "vm", "list"}, "--token or --token-file"},
    {{"--token-file", "/nonexistent/t", "vm", "list"}, "cannot read --token-file /nonexistent/t"},
    {{"--token", "a b", "vm", "list"}, "token contains spaces"},
    {{"--data-dir", "a", "--data-dir", "b", "vm", "list"}, "--data-dir given twice"},
    {{"vm", "create"}, "missing NAME"},
    {{"vm", "create", "web"}, "--image is required"},
    {{"vm", "create", "web", "--image"}, "--image needs a value"},
    {{"vm", "create", "web", "--image="}, "--image needs a non-empty value"},
    {{"vm", "create", "web", "--image", "a", "--image", "b"}, "--image given twice"},
    {{"vm", "create", "web", "--image", "i", "--vcpus", "0"}, "--vcpus \"0\" is not a whole"},
    {{"vm", "create", "web", "--image", "i", "--vcpus", "two"}, "--vcpus \"two\""},
    {{"vm", "create", "web", "--image", "i", "--vcpus", "5000"}, "--vcpus \"5000\""},
    {{"vm", "create", "web", "--image", "i", "--memory", "12X"},
     "--memory \"12X\" is not a size (try 512M or 2G)"},
    {{"vm", "create", "web", "--image", "i", "--memory", "0"}, "--memory \"0\""},
    {{"vm", "create", "web", "--image", "i", "--label", "app"}, "--label \"app\" is not KEY=VALUE"},
    {{"vm", "create", "web", "--image", "i", "--label", "=x"}, "--label \"=x\""},
    {{"vm", "create", "web", "--image", "i", "--label", "a=1", "--label", "a=2"},
     "--label \"a\" given twice"},
    {{"vm", "create", "web", "--image", "i", "--nic", "bridge"}, "--nic \"bridge\" is not user"},
    {{"vm", "create", "web", "--image", "i", "--start=yes"}, "--start takes no value"},
    {{"vm", "create", "web", "--image", "i", "--frob"}, "unknown flag --frob"},
    {{"vm", "create", "web", "extra", "--image", "i"}, "unexpected argument \"extra\""},
    {{"vm", "create", "", "--image", "i"}, "NAME must not be empty"},
    {{"vm", "create", "w\xff", "--image", "i"}, "not valid UTF-8"},
    {{"vm", "list", "web"}, "unexpected argument \"web\""},
    {{"vm", "list", "-x"}, "unknown flag -x"},
    {{"vm", "show"}, "missing NAME"},
    {{"vm", "start"}, "missing NAME"},
    {{"vm", "start", "web", "--force"}, "unknown flag --force"},
    {{"vm", "stop", "web", "--timeout-s", "soon"}, "--timeout-s \"soon\""},
    {{"vm", "stop", "web", "--force=1"}, "--force takes no value"},
    {{"vm", "pause"}, "missing NAME"},
    {{"vm", "resume", "a", "b"}, "unexpected argument \"b\""},
    {{"vm", "reboot"}, "missing NAME"},
    {{"vm", "delete"}, "missing NAME"},
    {{"vm", "console"}, "missing NAME"},
    {{"vm", "console", "web", "--tail-bytes", "10"}, "--tail-bytes goes with --log"},
    {{"vm", "console", "web", "--log", "--tail-bytes", "lots"}, "--tail-bytes \"lots\""},
    {{"vm", "console", "web", "--drain", "x"}, "--drain \"x\""},
    {{"vm", "snapshot", "web"}, "missing SNAP"},
    {{"vm", "snapshots"}, "missing NAME"},
    {{"vm", "restore", "web"}, "missing SNAP"},
    {{"vm", "snapshot-delete", "web"}, "missing SNAP"},
    {{"vm", "clone", "web"}, "missing NEWNAME"},
    {{"vm", "clone", "web", "web2", "--force"}, "unknown flag --force"},
    {{"image", "list", "x"}, "unexpected argument"},
    {{"image", "register"}, "missing NAME"},
    {{"image", "register", "img"}, "--kernel is required"},
    {{"image", "register", "img", "--from-json", "/nonexistent.json"},
     "cannot read --from-json /nonexistent.json"},
    {{"node", "show", "x"}, "unexpected argument"},
    {{"op", "list", "--wait"}, "unknown flag --wait"},
    {{"op", "show"}, "missing ID"},
    {{"op", "cancel"}, "missing ID"},
    {{"events", "now"}, "unexpected argument"},
    {{"version", "--short"}, "unknown flag --short"},
    {{"help", "vm", "frob"}, "no command \"vm frob\""},
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
    if (h->rc != NC_CLI_EXIT_USAGE || strstr(h->err, c->want) == NULL || h->nreqs != 0)
      fail_msg("case %zu (%s %s ...): exit %d, %d requests, stderr:\n%s\nwant exit 2, no "
               "request, stderr containing \"%s\"",
               i, argc > 0 ? c->argv[0] : "", argc > 1 ? c->argv[1] : "", h->rc, h->nreqs, h->err,
               c->want);
  }
}

static void test_usage_error_prints_usage_line(void **state) {
  struct harness *h = *state;
  h_run(h, "vm", "stop", "web", "--timeout-s", "x", NULL);
  check_rc(h, 2);
  check_contains(h->err, "novacron vm stop: --timeout-s \"x\"");
  check_contains(h->err, "usage: novacron vm stop NAME [--force] [--timeout-s N] [--no-wait]");
}

/* ---- the request each valid command sends ---- */

struct req_case {
  const char *argv[24];
  const char *method, *path, *body;
};

static const struct req_case k_reqs[] = {
    {{"vm", "create", "web-1", "--image", "nc-test", "--vcpus", "2", "--memory", "1024M",
      "--label", "app=web", "--label", "tier=front", "--nic", "none", "--cmdline-append",
      "quiet", "--start"},
     "POST", "/v1/vms",
     "{\"name\":\"web-1\",\"image\":\"nc-test\",\"vcpus\":2,\"memory\":\"1G\","
     "\"labels\":{\"app\":\"web\",\"tier\":\"front\"},\"nic\":\"none\","
     "\"cmdline_append\":\"quiet\",\"start\":true}"},
    {{"vm", "create", "--image=nc-test", "web-1"},
     "POST", "/v1/vms", "{\"name\":\"web-1\",\"image\":\"nc-test\",\"start\":false}"},
    {{"vm", "create", "web-1", "--image", "i", "--memory", "512MiB"},
     "POST", "/v1/vms", "{\"name\":\"web-1\",\"image\":\"i\",\"memory\":\"512M\",\"start\":false}"},
    {{"vm", "list"}, "GET", "/v1/vms", NULL},
    {{"vm", "show", "web-1"}, "GET", "/v1/vms/web-1", NULL},
    {{"vm", "show", "--", "a b/c"}, "GET", "/v1/vms/a%20b%2Fc", NULL},
    {{"vm", "show", ".."}, "GET", "/v1/vms/%2E%2E", NULL},
    {{"vm", "start", "web-1"}, "POST", "/v1/vms/web-1/start", NULL},
    {{"vm", "stop", "web-1"}, "POST", "/v1/vms/web-1/stop", NULL},
    {{"vm", "stop", "web-1", "--force"}, "POST", "/v1/vms/web-1/stop", "{\"force\":true}"},
    {{"vm", "stop", "--timeout-s", "30", "web-1"},
     "POST", "/v1/vms/web-1/stop", "{\"timeout_s\":30}"},
    {{"vm", "pause", "web-1"}, "POST", "/v1/vms/web-1/pause", NULL},
    {{"vm", "resume", "web-1"}, "POST", "/v1/vms/web-1/resume", NULL},
    {{"vm", "reboot", "web-1"}, "POST", "/v1/vms/web-1/reboot", NULL},
    {{"vm", "delete", "web-1"}, "DELETE", "/v1/vms/web-1", NULL},
    {{"vm", "console", "web-1", "--log"}, "GET", "/v1/vms/web-1/console", NULL},
    {{"vm", "console", "web-1", "--log", "--tail-bytes", "4K"},
     "GET", "/v1/vms/web-1/console?tail_bytes=4096", NULL},
    {{"vm", "snapshot", "web-1", "s1"}, "POST", "/v1/vms/web-1/snapshots", "{\"name\":\"s1\"}"},
    {{"vm", "snapshots", "web-1"}, "GET", "/v1/vms/web-1/snapshots", NULL},
    {{"vm", "restore", "web-1", "s1"}, "POST", "/v1/vms/web-1/snapshots/s1/restore", NULL},
    {{"vm", "snapshot-delete", "web-1", "s1"}, "DELETE", "/v1/vms/web-1/snapshots/s1", NULL},
    {{"vm", "clone", "web-1", "web-2"},
     "POST", "/v1/vms/web-1/clone", "{\"name\":\"web-2\",\"start\":false}"},
    {{"vm", "clone", "web-1", "web-2", "--start"},
     "POST", "/v1/vms/web-1/clone", "{\"name\":\"web-2\",\"start\":true}"},
    {{"image", "list"}, "GET", "/v1/images", NULL},
    {{"image", "register", "deb", "--kernel", "/k/vmlinux", "--initrd", "/k/initrd.img",
      "--disk", "/k/disk.qcow2", "--cmdline", "console=ttyS0"},
     "POST", "/v1/images",
     "{\"name\":\"deb\",\"kernel\":\"/k/vmlinux\",\"initrd\":\"/k/initrd.img\","
     "\"disk\":\"/k/disk.qcow2\",\"cmdline\":\"console=ttyS0\"}"},
    {{"node", "show"}, "GET", "/v1/node", NULL},
    {{"op", "list"}, "GET", "/v1/operations", NULL},
    {{"op", "show", "op-1"}, "GET", "/v1/operations/op-1", NULL},
    {{"op", "cancel", "op-1"}, "POST", "/v1/operations/op-1/cancel", NULL},
};

static const char k_done_op[] =
    "{\"operation\":{\"id\":\"op-1\",\"kind\":\"vm.x\",\"target\":\"web-1\","
    "\"status\":\"succeeded\",\"progress\":1}}";

static void test_requests(void **state) {
  struct harness *h = *state;
  for (size_t i = 0; i < sizeof k_reqs / sizeof *k_reqs; i++) {
    const struct req_case *c = &k_reqs[i];
    const char *argv[28] = {"-o", "json"};
    int argc = 2;
    for (int k = 0; c->argv[k] != NULL; k++)
      argv[argc++] = c->argv[k];
    h_free(h);
    h_init(h);
    h_reply(h, 200, k_done_op);
    h_runv(h, argc, argv);
    if (h->rc != 0 || h->nreqs != 1)
      fail_msg("case %zu (%s %s): exit %d after %d requests\nstderr:\n%s", i, c->argv[0],
               c->argv[1], h->rc, h->nreqs, h->err);
    if (strcmp(h->reqs[0].method, c->method) != 0 || strcmp(h->reqs[0].path, c->path) != 0)
      fail_msg("case %zu: sent %s %s, want %s %s", i, h->reqs[0].method, h->reqs[0].path,
               c->method, c->path);
    check_body(&h->reqs[0], c->body);
    /* --output json prints a JSON document whatever the command. */
    json_t *j = json_loads(h->out, 0, NULL);
    if (j == NULL)
      fail_msg("case %zu: stdout is not JSON:\n%s", i, h->out);
    json_decref(j);
  }
}

/* ---- waiting for operations ---- */

static void test_create_start_waits(void **state) {
  struct harness *h = *state;
  h_reply(h, 201,
          "{\"vm\":{\"name\":\"web-1\"},\"operation\":{\"id\":\"op-7\",\"kind\":\"vm.start\","
          "\"target\":\"web-1\",\"status\":\"pending\"}}");
  h_reply(h, 200, "{\"id\":\"op-7\",\"status\":\"running\",\"progress\":0.5}");
  h_reply(h, 200,
          "{\"id\":\"op-7\",\"kind\":\"vm.start\",\"target\":\"web-1\",\"status\":\"succeeded\","
          "\"created_at\":\"2026-11-27T23:00:00.000Z\","
          "\"finished_at\":\"2026-11-27T23:00:03.400Z\"}");
  h_run(h, "vm", "create", "web-1", "--image", "nc-test", "--start", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 3);
  assert_string_equal(h->reqs[1].method, "GET");
  assert_string_equal(h->reqs[1].path, "/v1/operations/op-7?wait_s=30");
  assert_true(h->reqs[1].timeout_ms > 30000); /* the request outlives the server's wait */
  assert_string_equal(h->out, "vm \"web-1\" created and started (3.4s)\n");
  assert_string_equal(h->err, ""); /* no progress line: stderr is not a tty */
}

static void test_wait_shows_progress_on_tty(void **state) {
  struct harness *h = *state;
  h->io.err_tty = true;
  h_reply(h, 202, "{\"operation\":{\"id\":\"op-1\",\"status\":\"pending\"}}");
  h_reply(h, 200, "{\"id\":\"op-1\",\"kind\":\"vm.stop\",\"target\":\"web-1\","
                  "\"status\":\"running\",\"progress\":0.25,\"message\":\"ACPI shutdown\"}");
  h_reply(h, 200, "{\"id\":\"op-1\",\"status\":\"succeeded\"}");
  h_run(h, "vm", "stop", "web-1", NULL);
  check_rc(h, 0);
  assert_string_equal(h->reqs[1].path, "/v1/operations/op-1?wait_s=2");
  check_contains(h->err, "vm.stop web-1:  25% ACPI shutdown");
  assert_string_equal(h->out, "vm \"web-1\" stopped\n");
  /* An early answer does not turn into a busy loop. */
  assert_true(h->slept_ms >= 500);
}

static void test_no_wait_prints_id(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, "{\"operation\":{\"id\":\"op-9\",\"status\":\"pending\"}}");
  h_run(h, "vm", "start", "web-1", "--no-wait", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 1);
  assert_string_equal(h->out, "op-9\n");
}

static void test_create_without_start(void **state) {
  struct harness *h = *state;
  h_reply(h, 201, "{\"vm\":{\"name\":\"web-1\"},\"operation\":null}");
  h_run(h, "vm", "create", "web-1", "--image", "nc-test", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 1);
  assert_string_equal(h->out, "vm \"web-1\" created\n");
}

static void test_op_failed(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, "{\"operation\":{\"id\":\"op-1\",\"status\":\"pending\"}}");
  h_reply(h, 200, "{\"id\":\"op-1\",\"status\":\"failed\",\"error\":{\"code\":\"hv\","
                  "\"message\":\"vm \\\"web-1\\\": qemu exited with status 1\"}}");
  h_run(h, "vm", "start", "web-1", NULL);
  check_rc(h, 1);
  assert_string_equal(h->out, "");
  assert_string_equal(h->err, "novacron: vm \"web-1\": qemu exited with status 1\n");
}

static void test_op_cancelled(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, "{\"operation\":{\"id\":\"op-1\",\"status\":\"pending\"}}");
  h_reply(h, 200, "{\"id\":\"op-1\",\"kind\":\"vm.snapshot\",\"target\":\"web-1\","
                  "\"status\":\"cancelled\"}");
  h_run(h, "vm", "snapshot", "web-1", "s1", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err, "novacron: operation op-1 (vm.snapshot web-1) was cancelled\n");
}

static void test_op_wait_timeout(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, "{\"operation\":{\"id\":\"op-1\",\"status\":\"pending\"}}");
  h_reply(h, 200, "{\"id\":\"op-1\",\"kind\":\"vm.start\",\"target\":\"web-1\","
                  "\"status\":\"running\"}"); /* repeats */
  h_run(h, "--timeout", "2", "vm", "start", "web-1", NULL);
  check_rc(h, 1);
  check_contains(h->err, "operation op-1 (vm.start web-1) still running after 2.0s");
  check_contains(h->err, "novacron op show op-1 --wait");
  /* Each poll asks the server to wait no longer than what is left. */
  assert_string_equal(h->reqs[1].path, "/v1/operations/op-1?wait_s=2");
  assert_string_equal(h->reqs[h->nreqs - 1].path, "/v1/operations/op-1?wait_s=1");
}

static void test_op_show_wait(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"id\":\"op-1\",\"status\":\"running\"}");
  h_reply(h, 200, "{\"id\":\"op-1\",\"kind\":\"vm.start\",\"target\":\"web-1\","
                  "\"status\":\"failed\",\"progress\":0.4,"
                  "\"error\":{\"code\":\"hv\",\"message\":\"boom\"}}");
  h_run(h, "op", "show", "op-1", "--wait", NULL);
  check_rc(h, 1);
  check_contains(h->out, "Status:    failed");
  check_contains(h->out, "Progress:  40%");
  check_contains(h->out, "Error:     hv: boom");
  assert_string_equal(h->err, "novacron: boom\n");
}

static void test_json_output_after_wait(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, "{\"operation\":{\"id\":\"op-1\",\"status\":\"pending\"}}");
  h_reply(h, 200, "{\"id\":\"op-1\",\"status\":\"succeeded\"}");
  h_run(h, "vm", "pause", "web-1", "--output", "json", NULL);
  check_rc(h, 0);
  assert_string_equal(h->out, "{\n  \"id\": \"op-1\",\n  \"status\": \"succeeded\"\n}\n");
}

/* ---- errors from the server and the transport ---- */

static void test_server_error_message(void **state) {
  struct harness *h = *state;
  h_reply(h, 409, "{\"error\":{\"code\":\"conflict\",\"message\":\"vm \\\"web-1\\\" is "
                  "already running\"}}");
  h_run(h, "vm", "start", "web-1", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err, "novacron: vm \"web-1\" is already running\n");
  assert_string_equal(h->out, "");
}

static void test_server_error_json_mode(void **state) {
  struct harness *h = *state;
  h_reply(h, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no vm \\\"x\\\"\"}}");
  h_run(h, "-o", "json", "vm", "show", "x", NULL);
  check_rc(h, 1);
  check_contains(h->out, "\"code\": \"not_found\"");
  assert_string_equal(h->err, "novacron: no vm \"x\"\n");
}

static void test_unauthorized_hint(void **state) {
  struct harness *h = *state;
  h_reply(h, 401, "{\"error\":{\"code\":\"unauthorized\",\"message\":\"missing bearer token\"}}");
  h_run(h, "vm", "list", NULL);
  check_rc(h, 1);
  check_contains(h->err, "novacron: missing bearer token\n");
  check_contains(h->err, "hint: the TCP listener needs a bearer token");
}

/* A 401 the daemon passes on from a peer names the field at fault: the
 * cluster token of a join (bootstrap.c), not the API token, so the
 * bearer-token hint would send the operator the wrong way. */
static void test_unauthorized_peer_no_hint(void **state) {
  struct harness *h = *state;
  h_reply(h, 401,
          "{\"error\":{\"code\":\"unauthorized\",\"field\":\"token\",\"message\":"
          "\"10.0.0.1:8470 refused the join (HTTP 401): wrong cluster token\"}}");
  h_run(h, "cluster", "join", "10.0.0.1:8470", "--token",
        "0123456789abcdef0123456789abcdef", "--address", "10.0.0.2", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err, "novacron: 10.0.0.1:8470 refused the join (HTTP 401): wrong "
                              "cluster token\n");
}

static void test_unreachable(void **state) {
  struct harness *h = *state;
  static const int errs[] = {-ECONNREFUSED, -ENOENT, -ETIMEDOUT, -ECONNRESET, -EACCES};
  for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
    h_free(h);
    h_init(h);
    h_fail(h, errs[i]);
    h_run(h, "--data-dir", "/srv/nc", "vm", "list", NULL);
    check_rc(h, 3);
    check_contains(h->err, "unix:/srv/nc/api.sock");
    check_contains(h->err, "hint:");
  }
  h_free(h);
  h_init(h);
  h_fail(h, -ECONNREFUSED);
  h_run(h, "vm", "list", NULL);
  check_rc(h, 3);
  check_contains(h->err, "novacron: cannot reach novacrond at unix:/var/lib/novacron/api.sock");
  check_contains(h->err, "is novacrond running?");
}

static void test_endpoint_from_env(void **state) {
  struct harness *h = *state;
  h->io.env_endpoint = "http://10.1.2.3:8443";
  h->io.env_data_dir = "/data";
  h_fail(h, -ECONNREFUSED);
  h_run(h, "vm", "list", NULL);
  check_rc(h, 3);
  check_contains(h->err, "http://10.1.2.3:8443");
  /* The flag wins over the environment. */
  h_free(h);
  h->next = 0;
  h_run(h, "--endpoint", "unix:/run/nc.sock", "vm", "list", NULL);
  check_contains(h->err, "unix:/run/nc.sock");
  /* $NOVACRON_DATA_DIR picks the default socket. */
  h_free(h);
  h->next = 0;
  h->io.env_endpoint = NULL;
  h_run(h, "vm", "list", NULL);
  check_contains(h->err, "unix:/data/api.sock");
}

static void test_too_big_and_garbage(void **state) {
  struct harness *h = *state;
  h_fail(h, NC_E_TOOBIG);
  h_run(h, "vm", "list", NULL);
  check_rc(h, 1);
  h_free(h);
  h_init(h);
  h_reply(h, 200, "<html>proxy</html>");
  h_run(h, "vm", "list", NULL);
  check_rc(h, 1);
  check_contains(h->err, "is not JSON");
  h_free(h);
  h_init(h);
  h_reply(h, 200, "[1,2]");
  h_run(h, "vm", "list", NULL);
  check_rc(h, 1);
  check_contains(h->err, "not a JSON object");
}

/* ---- table output ---- */

static void test_vm_list_table(void **state) {
  struct harness *h = *state;
  char t1[64], t2[64], body[1024];
  h_time(h, 90, t1, sizeof t1);
  h_time(h, 3 * 86400, t2, sizeof t2);
  snprintf(body, sizeof body,
           "{\"vms\":[{\"name\":\"web-1\",\"state\":\"running\",\"vcpus\":1,"
           "\"memory\":\"256M\",\"memory_bytes\":268435456,\"image\":\"nc-test\","
           "\"node\":\"host-a\",\"created_at\":\"%s\"},"
           "{\"name\":\"database\",\"state\":\"stopped\",\"vcpus\":4,"
           "\"memory_bytes\":3221225472,\"image\":\"debian\",\"created_at\":\"%s\"}]}",
           t1, t2);
  h_reply(h, 200, body);
  h_run(h, "vm", "list", NULL);
  check_rc(h, 0);
  assert_string_equal(h->out, "NAME      STATE    VCPUS  MEMORY  IMAGE    NODE    AGE\n"
                              "web-1     running  1      256M    nc-test  host-a  1m\n"
                              "database  stopped  4      3G      debian   -       3d\n");
}

static void test_vm_list_empty(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"vms\":[]}");
  h_run(h, "vm", "list", NULL);
  check_rc(h, 0);
  assert_string_equal(h->out, "NAME  STATE  VCPUS  MEMORY  IMAGE  NODE  AGE\n");
}

static void test_op_list_table(void **state) {
  struct harness *h = *state;
  char t1[64], body[1024];
  h_time(h, 7200, t1, sizeof t1);
  snprintf(body, sizeof body,
           "{\"operations\":[{\"id\":\"op-3f2a\",\"kind\":\"vm.start\",\"target\":\"web-1\","
           "\"status\":\"running\",\"progress\":0.5,\"created_at\":\"%s\"},"
           "{\"id\":\"op-1\",\"kind\":\"vm.create\",\"target\":\"web-1\","
           "\"status\":\"succeeded\",\"progress\":1}]}",
           t1);
  h_reply(h, 200, body);
  h_run(h, "op", "list", NULL);
  check_rc(h, 0);
  assert_string_equal(h->out, "ID       KIND       TARGET  STATUS     PROGRESS  AGE\n"
                              "op-3f2a  vm.start   web-1   running    50%       2h\n"
                              "op-1     vm.create  web-1   succeeded  100%      -\n");
}

static void test_vm_show(void **state) {
  struct harness *h = *state;
  h_reply(h, 200,
          "{\"name\":\"web-1\",\"vcpus\":1,\"memory\":\"256M\",\"memory_bytes\":268435456,"
          "\"image\":\"nc-test\",\"nic\":\"user\",\"labels\":{\"app\":\"web\",\"tier\":\"a\"},"
          "\"state\":\"failed\",\"state_reason\":\"qemu exited\",\"desired_state\":\"running\","
          "\"node\":\"host-a\",\"pid\":1234,\"accel\":\"tcg\","
          "\"console\":{\"socket\":\"/v/web-1/serial.sock\",\"log\":\"/v/web-1/serial.log\"},"
          "\"snapshots\":[{\"name\":\"s1\"},{\"name\":\"s2\"}]}");
  h_run(h, "vm", "show", "web-1", NULL);
  check_rc(h, 0);
  check_contains(h->out, "Name:         web-1\n");
  check_contains(h->out, "State:        failed (qemu exited)\n");
  check_contains(h->out, "Labels:       app=web, tier=a\n");
  check_contains(h->out, "Memory:       256M\n");
  check_contains(h->out, "Console:      /v/web-1/serial.sock\n");
  check_contains(h->out, "Snapshots:    s1  -\n              s2  -\n");
}

static void test_table_sanitizes_server_strings(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"vms\":[{\"name\":\"evil\\u001b[2J\",\"state\":\"x\\ny\"}]}");
  h_run(h, "vm", "list", NULL);
  check_rc(h, 0);
  assert_null(strchr(h->out, '\033'));
  check_contains(h->out, "evil?[2J  x?y");
}

static void test_node_show(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"name\":\"host-a\",\"cpus\":2,\"accel\":[\"tcg\"],"
                  "\"memory\":{\"total_bytes\":1024,\"free_bytes\":512},\"ready\":true}");
  h_run(h, "node", "show", NULL);
  check_rc(h, 0);
  check_contains(h->out, "name:");
  check_contains(h->out, "host-a\n");
  check_contains(h->out, "memory.free_bytes:");
  check_contains(h->out, "ready:");
}

static void test_snapshots_and_images(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"snapshots\":[{\"name\":\"s1\",\"created_at\":\"bad\"}]}");
  h_run(h, "vm", "snapshots", "web-1", NULL);
  check_rc(h, 0);
  assert_string_equal(h->out, "NAME  CREATED  AGE\ns1    bad      -\n");
  h_free(h);
  h_init(h);
  h_reply(h, 200, "{\"images\":[{\"name\":\"nc-test\",\"kernel\":\"/i/vmlinux\"}]}");
  h_run(h, "image", "list", NULL);
  check_rc(h, 0);
  assert_string_equal(h->out, "NAME     KERNEL      INITRD  DISK  CMDLINE\n"
                              "nc-test  /i/vmlinux  -       -     -\n");
}

static void test_image_register_paths(void **state) {
  struct harness *h = *state;
  char dir[] = "/tmp/nc-cli-test-XXXXXX", file[256], cwd[4096], want[8192];
  assert_non_null(mkdtemp(dir));
  snprintf(file, sizeof file, "%s/image.json", dir);
  FILE *f = fopen(file, "w");
  fputs("{\"name\":\"deb\",\"kernel\":\"vmlinux\",\"initrd\":\"/abs/initrd\","
        "\"cmdline\":\"console=ttyS0\",\"sha256\":\"ignored\"}",
        f);
  fclose(f);

  /* Relative paths in the file are relative to the file. */
  h_reply(h, 201, "{\"name\":\"deb\"}");
  h_run(h, "image", "register", "--from-json", file, NULL);
  check_rc(h, 0);
  snprintf(want, sizeof want,
           "{\"name\":\"deb\",\"kernel\":\"%s/vmlinux\",\"initrd\":\"/abs/initrd\","
           "\"cmdline\":\"console=ttyS0\"}",
           dir);
  check_body(&h->reqs[0], want);
  assert_string_equal(h->out, "image \"deb\" registered\n");

  /* NAME and flags override the file; relative flag paths are against the
   * working directory. */
  h_free(h);
  h_init(h);
  h_reply(h, 201, "{}");
  h_run(h, "image", "register", "deb2", "--from-json", file, "--kernel", "k2", NULL);
  check_rc(h, 0);
  assert_non_null(getcwd(cwd, sizeof cwd));
  snprintf(want, sizeof want,
           "{\"name\":\"deb2\",\"kernel\":\"%s/k2\",\"initrd\":\"/abs/initrd\","
           "\"cmdline\":\"console=ttyS0\"}",
           cwd);
  check_body(&h->reqs[0], want);

  /* A broken file is a usage error naming the flag. */
  f = fopen(file, "w");
  fputs("{\"name\": 7}", f);
  fclose(f);
  h_free(h);
  h_init(h);
  h_run(h, "image", "register", "--from-json", file, NULL);
  check_rc(h, 2);
  check_contains(h->err, "\"name\" is not a string");
  f = fopen(file, "w");
  fputs("{nope", f);
  fclose(f);
  h_free(h);
  h_init(h);
  h_run(h, "image", "register", "--from-json", file, NULL);
  check_rc(h, 2);
  check_contains(h->err, "--from-json");
  unlink(file);
  rmdir(dir);
}

static void test_console_log(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "Booting...\nlogin: ");
  h_run(h, "vm", "console", "web-1", "--log", NULL);
  check_rc(h, 0);
  assert_string_equal(h->reqs[0].accept, "text/plain");
  assert_string_equal(h->out, "Booting...\nlogin: ");
  h_free(h);
  h_init(h);
  h_reply(h, 200, "bad \xff byte");
  h_run(h, "vm", "console", "web-1", "--log", "-o", "json", NULL);
  check_rc(h, 0);
  check_contains(h->out, "\"log\": \"bad ? byte\"");
}

static void test_console_no_socket(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"name\":\"web-1\",\"state\":\"stopped\",\"node\":\"host-a\"}");
  h_run(h, "vm", "console", "web-1", NULL);
  check_rc(h, 1);
  check_contains(h->err, "has no console socket (it is stopped)");
  h_free(h);
  h_init(h);
  h_reply(h, 200, "{\"name\":\"web-1\",\"state\":\"running\",\"node\":\"host-b\","
                  "\"console\":{\"socket\":\"/nonexistent/serial.sock\"}}");
  h_run(h, "vm", "console", "web-1", NULL);
  check_rc(h, 1);
  check_contains(h->err, "cannot connect to its console socket /nonexistent/serial.sock");
  check_contains(h->err, "run this on node \"host-b\"");
}

static void test_events(void **state) {
  struct harness *h = *state;
  h_reply(h, 200,
          ": keep-alive\r\n"
          "event: vm.state\r\n"
          "data: {\"vm\":\"web-1\",\"from\":\"starting\",\"to\":\"running\",\"reason\":\"\","
          "\"at\":\"2026-11-27T23:00:00.000Z\"}\r\n\r\n"
          "event: operation\n"
          "data: {\"id\":\"op-1\",\"kind\":\"vm.start\",\"target\":\"web-1\","
          "\"status\":\"succeeded\",\"progress\":1,\"updated_at\":\"T\"}\n\n"
          "event: node.hello\ndata: hi\n\n");
  h_run(h, "events", NULL);
  check_rc(h, 3); /* the stream ended: the daemon went away */
  assert_string_equal(h->reqs[0].path, "/v1/events");
  assert_string_equal(h->reqs[0].accept, "text/event-stream");
  assert_string_equal(h->out,
                      "2026-11-27T23:00:00.000Z  vm.state   web-1  starting -> running\n"
                      "T  operation  op-1  vm.start web-1  succeeded 100%\n"
                      "node.hello  hi\n");
  check_contains(h->err, "ended the event stream");
}

static void test_events_json(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "event: operation\ndata: {\"id\":\"op-1\"}\n\nevent: vm.state\n"
                  "data: {\"vm\":\"a\"}\n\n");
  h_run(h, "events", "-o", "json", NULL);
  assert_string_equal(h->out, "{\"id\":\"op-1\"}\n{\"vm\":\"a\"}\n");
}

static void test_events_http_error(void **state) {
  struct harness *h = *state;
  h_reply(h, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no route\"}}");
  h_run(h, "events", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err, "novacron: no route\n");
}

static void test_help_and_version(void **state) {
  struct harness *h = *state;
  h_run(h, "version", NULL);
  check_rc(h, 0);
  check_contains(h->out, "novacron ");
  h_run(h, "--version", NULL);
  check_rc(h, 0);
  h_run(h, "-o", "json", "version", NULL);
  check_contains(h->out, "\"version\":");
  h_run(h, "help", NULL);
  check_rc(h, 0);
  check_contains(h->out, "vm snapshot-delete");
  check_contains(h->out, "exit status: 0 success");
  h_run(h, "help", "vm", NULL);
  check_rc(h, 0);
  check_contains(h->out, "usage: novacron vm <verb>");
  h_run(h, "help", "vm", "stop", NULL);
  check_rc(h, 0);
  check_contains(h->out, "--timeout-s N");
  h_run(h, "vm", "--help", NULL);
  check_rc(h, 0);
  h_run(h, "op", "show", "--help", NULL);
  check_rc(h, 0);
  check_contains(h->out, "usage: novacron op show ID [--wait]");
  h_run(h, "image", "register", "-h", NULL);
  check_rc(h, 0);
  h_run(h, "--help", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 0);
  /* Every command in the table has help. */
  for (size_t i = 0; i < nc_cli_ncmds; i++) {
    const struct nc_cli_cmd *c = &nc_cli_cmds[i];
    if (c->noun != NULL)
      h_run(h, c->noun, c->verb, "--help", NULL);
    else
      h_run(h, c->verb, "--help", NULL);
    check_rc(h, 0);
    check_contains(h->out, "usage: novacron");
  }
}

static void test_op_cancel(void **state) {
  struct harness *h = *state;
  h_reply(h, 202, "{\"id\":\"op-1\",\"status\":\"running\"}");
  h_run(h, "op", "cancel", "op-1", NULL);
  check_rc(h, 0);
  assert_string_equal(h->out, "cancel requested for op-1 (now running)\n");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_usage_errors, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_usage_error_prints_usage_line, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_requests, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_start_waits, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_wait_shows_progress_on_tty, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_no_wait_prints_id, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_without_start, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_op_failed, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_op_cancelled, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_op_wait_timeout, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_op_show_wait, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_json_output_after_wait, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_server_error_message, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_server_error_json_mode, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_unauthorized_hint, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_unauthorized_peer_no_hint, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_unreachable, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_endpoint_from_env, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_too_big_and_garbage, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_vm_list_table, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_vm_list_empty, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_op_list_table, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_vm_show, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_table_sanitizes_server_strings, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_node_show, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_snapshots_and_images, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_image_register_paths, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_console_log, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_console_no_socket, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_events, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_events_json, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_events_http_error, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_help_and_version, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_op_cancel, h_setup, h_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
