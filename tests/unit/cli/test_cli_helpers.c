/* The two helpers list and mutating commands are built on, called directly
 * with made-up commands: nc_cli_list_run (list.h) and nc__cli_run_mutation
 * (action.h). The real commands on top of them are covered by
 * test_cli_commands. */
#include "harness.h"

#include "cli/action.h"
#include "cli/call.h"
#include "cli/list.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define check_rc(f, got, want)                                                                  \
  do {                                                                                          \
    if ((got) != (want))                                                                        \
      fail_msg("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", (got), (want),               \
               (f)->h.out ? (f)->h.out : "", (f)->h.err ? (f)->h.err : "");                      \
  } while (0)

/* A struct nc_cli as nc_cli_main would build it for the command cmd, with
 * the harness's transport, clock and captured streams. */
struct fixture {
  struct harness h;
  struct nc_cli_cmd cmd;
  struct nc_cli cli;
  FILE *out, *err;
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof *f);
  h_init(&f->h);
  f->cmd = (struct nc_cli_cmd){"thing", "list", "[NAME]", "list things", NULL, NULL};
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  h_free(&f->h);
  free(f);
  return 0;
}

static void begin(struct fixture *f) {
  free(f->h.out);
  free(f->h.err);
  f->h.out = f->h.err = NULL;
  f->out = open_memstream(&f->h.out, &f->h.out_len);
  f->err = open_memstream(&f->h.err, &f->h.err_len);
  f->cli = (struct nc_cli){.io = &f->h.io,
                           .out = f->out,
                           .err = f->err,
                           .clock = f->h.io.clock,
                           .transport = &f->h.transport,
                           .cmd = &f->cmd};
}

static void end(struct fixture *f) {
  fclose(f->out);
  fclose(f->err);
}

/* Runs fn with "verb" + the NULL-terminated words. */
static int run_argv(struct fixture *f, int (*fn)(struct fixture *, int, char **), ...) {
  char *argv[16] = {(char *)"verb"};
  int argc = 1;
  va_list ap;
  va_start(ap, fn);
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 15;)
    argv[argc++] = a;
  va_end(ap);
  begin(f);
  int rc = fn(f, argc, argv);
  end(f);
  return rc;
}

/* ---- nc_cli_list_run ---- */

/* Records what the helper hands the row function. */
struct rows_seen {
  int calls;
  bool cells_were_null; /* every call began with all cells NULL */
  char types[16];       /* json_typeof of each item, as a letter */
};

/* Column 0 the item's "name", column 1 formatted by the row function,
 * column 2 set only for the first row: the second row must print "-". */
static void test_row(struct nc_cli *cli, const json_t *item, struct nc_cli_list_row *row,
                     void *data) {
  struct rows_seen *seen = data;
  for (size_t i = 0; i < NC_CLI_LIST_COLS_MAX; i++)
    if (row->cells[i] != NULL)
      seen->cells_were_null = false;
  if (seen->calls < (int)sizeof seen->types - 1)
    seen->types[seen->calls] = json_is_object(item) ? 'o' : json_is_integer(item) ? 'i' : '?';
  row->cells[0] = nc_cli_jstr(item, "name");
  snprintf(row->buf[1], sizeof row->buf[1], "row%d", seen->calls);
  row->cells[1] = row->buf[1];
  if (seen->calls == 0)
    row->cells[2] = "first";
  seen->calls++;
}

static const char *const k_headers[] = {"NAME", "N", "EXTRA"};

static struct rows_seen g_seen;
static struct nc_cli_list_spec g_spec;

static int run_list(struct fixture *f, int argc, char **argv) {
  return nc_cli_list_run(&f->cli, argc, argv, &g_spec);
}

static void reset_list(const char *path, const char *const *pos_names, size_t ncols) {
  g_seen = (struct rows_seen){.cells_were_null = true};
  g_spec = (struct nc_cli_list_spec){.path = path,
                                     .pos_names = pos_names,
                                     .array_key = "things",
                                     .ncols = ncols,
                                     .headers = k_headers,
                                     .row = test_row,
                                     .row_data = &g_seen};
}

static void test_list_table(void **state) {
  struct fixture *f = *state;
  reset_list("/v1/things", NULL, 3);
  h_reply(&f->h, 200, "{\"things\":[{\"name\":\"a\"},{\"name\":\"bb\"},7],\"other\":1}");
  int rc = run_argv(f, run_list, NULL);
  check_rc(f, rc, 0);
  assert_int_equal(f->h.nreqs, 1);
  assert_string_equal(f->h.reqs[0].method, "GET");
  assert_string_equal(f->h.reqs[0].path, "/v1/things");
  assert_int_equal(g_seen.calls, 3);
  assert_true(g_seen.cells_were_null);
  assert_string_equal(g_seen.types, "ooi");
  assert_string_equal(f->h.out, "NAME  N     EXTRA\n"
                                "a     row0  first\n"
                                "bb    row1  -\n"
                                "-     row2  -\n");
  assert_string_equal(f->h.err, "");
}

static void test_list_empty(void **state) {
  struct fixture *f = *state;
  reset_list("/v1/things", NULL, 3);
  h_reply(&f->h, 200, "{\"things\":[]}");
  int rc = run_argv(f, run_list, NULL);
  check_rc(f, rc, 0);
  assert_int_equal(g_seen.calls, 0);
  assert_string_equal(f->h.out, "NAME  N  EXTRA\n");
}

static void test_list_positional_goes_in_path(void **state) {
  struct fixture *f = *state;
  static const char *const names[] = {"NAME"};
  reset_list("/v1/vms/%s/things", names, 2);
  h_reply(&f->h, 200, "{\"things\":[]}");
  int rc = run_argv(f, run_list, "a b/..", NULL);
  check_rc(f, rc, 0);
  assert_int_equal(f->h.nreqs, 1);
  assert_string_equal(f->h.reqs[0].path, "/v1/vms/a%20b%2F../things");
  assert_string_equal(f->h.out, "NAME  N\n");
}

static void test_list_json_prints_answer_as_is(void **state) {
  struct fixture *f = *state;
  reset_list("/v1/things", NULL, 3);
  /* Not even a list: --output json shows what the server said. */
  h_reply(&f->h, 200, "{\"things\":{\"x\":1}}");
  begin(f);
  f->cli.output = NC_CLI_OUTPUT_JSON;
  char *argv[] = {(char *)"verb"};
  int rc = nc_cli_list_run(&f->cli, 1, argv, &g_spec);
  end(f);
  check_rc(f, rc, 0);
  assert_int_equal(g_seen.calls, 0);
  assert_string_equal(f->h.out, "{\n  \"things\": {\n    \"x\": 1\n  }\n}\n");
  assert_string_equal(f->h.err, "");
}

static void test_list_answer_without_array(void **state) {
  struct fixture *f = *state;
  static const char *const bodies[] = {"{}", "{\"things\":{}}", "{\"things\":\"x\"}",
                                       "{\"things\":null}"};
  for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
    h_free(&f->h);
    h_init(&f->h);
    reset_list("/v1/things", NULL, 3);
    h_reply(&f->h, 200, bodies[i]);
    int rc = run_argv(f, run_list, NULL);
    check_rc(f, rc, 1);
    assert_int_equal(g_seen.calls, 0);
    assert_string_equal(f->h.out, "");
    assert_string_equal(f->h.err, "novacron: GET /v1/things: the answer has no \"things\" list\n");
  }
}

static void test_list_call_failures_pass_through(void **state) {
  struct fixture *f = *state;
  reset_list("/v1/things", NULL, 3);
  h_reply(&f->h, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no things\"}}");
  int rc = run_argv(f, run_list, NULL);
  check_rc(f, rc, 1);
  assert_string_equal(f->h.err, "novacron: no things\n");
  assert_string_equal(f->h.out, "");
  h_free(&f->h);
  h_init(&f->h);
  reset_list("/v1/things", NULL, 3);
  rc = run_argv(f, run_list, NULL); /* no reply scripted: unreachable */
  check_rc(f, rc, 3);
  assert_int_equal(g_seen.calls, 0);
}

static void test_list_usage(void **state) {
  struct fixture *f = *state;
  static const char *const names[] = {"NAME"};
  reset_list("/v1/vms/%s/things", names, 3);
  int rc = run_argv(f, run_list, NULL);
  check_rc(f, rc, 2);
  assert_string_equal(f->h.err, "novacron thing list: missing NAME\n"
                                "usage: novacron thing list [NAME]\n"
                                "Run 'novacron thing list --help' for details.\n");
  rc = run_argv(f, run_list, "", NULL);
  check_rc(f, rc, 2);
  rc = run_argv(f, run_list, "a", "b", NULL);
  check_rc(f, rc, 2);
  rc = run_argv(f, run_list, "a", "--no-wait", NULL);
  check_rc(f, rc, 2);
  reset_list("/v1/things", NULL, 3);
  rc = run_argv(f, run_list, "a", NULL);
  check_rc(f, rc, 2);
  assert_string_equal(f->h.err, "novacron thing list: unexpected argument \"a\"\n"
                                "usage: novacron thing list [NAME]\n"
                                "Run 'novacron thing list --help' for details.\n");
  rc = run_argv(f, run_list, "--help", NULL);
  check_rc(f, rc, 0);
  assert_non_null(strstr(f->h.out, "usage: novacron thing list [NAME]\n"));
  assert_int_equal(f->h.nreqs, 0);
  assert_int_equal(g_seen.calls, 0);
}

static void test_list_name_too_long(void **state) {
  struct fixture *f = *state;
  static const char *const names[] = {"NAME"};
  char name[600];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  reset_list("/v1/vms/%s/things", names, 3);
  int rc = run_argv(f, run_list, name, NULL);
  check_rc(f, rc, 2);
  assert_non_null(strstr(f->h.err, "a name is too long"));
  assert_int_equal(f->h.nreqs, 0);
}

static void test_list_column_count_checked(void **state) {
  struct fixture *f = *state;
  static const size_t bad[] = {0, NC_CLI_LIST_COLS_MAX + 1};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    reset_list("/v1/things", NULL, bad[i]);
    h_reply(&f->h, 200, "{\"things\":[{}]}");
    int rc = run_argv(f, run_list, NULL);
    check_rc(f, rc, 1);
    assert_non_null(strstr(f->h.err, "internal error"));
    assert_int_equal(f->h.nreqs, 0);
  }
}

/* ---- nc__cli_run_mutation ---- */

struct mut_state {
  bool flag;
  const char *value;
  int prepared;
  int fail_with; /* prepare's result after setting a body */
};

static int test_prepare(struct nc_cli *cli, const char *const *pos, void *arg,
                        struct nc__cli_request *req) {
  struct mut_state *s = arg;
  s->prepared++;
  req->body = json_pack("{s:s, s:b, s:s?}", "second", pos[1] ? pos[1] : "(none)", "flag",
                        s->flag, "value", s->value);
  if (s->fail_with != 0)
    return nc_cli_usage_error(cli, "prepare says no");
  snprintf(req->done, sizeof req->done, "did %s", pos[0]);
  return nc__cli_path(cli, req->path, sizeof req->path, "/v1/things/%s", pos[0]);
}

static struct mut_state g_mut;
static struct nc__cli_mutation g_m;
static struct nc_cli_opt g_opts[NC__CLI_MUTATION_OPTS_MAX + 2];

static int run_mutation(struct fixture *f, int argc, char **argv) {
  return nc__cli_run_mutation(&f->cli, argc, argv, &g_m);
}

static void reset_mutation(int npos) {
  static const char *const names[] = {"NAME", "SNAP"};
  g_mut = (struct mut_state){0};
  memset(g_opts, 0, sizeof g_opts);
  g_opts[0] = (struct nc_cli_opt){"flag", NC_CLI_OPT_BOOL, &g_mut.flag};
  g_opts[1] = (struct nc_cli_opt){"value", NC_CLI_OPT_STR, &g_mut.value};
  g_m = (struct nc__cli_mutation){"PUT", names, npos, g_opts, test_prepare, &g_mut};
}

static const char *const k_op_running =
    "{\"operation\":{\"id\":\"op-7\",\"kind\":\"t\",\"target\":\"a\",\"status\":\"running\"}}";
static const char *const k_op_done =
    "{\"id\":\"op-7\",\"kind\":\"t\",\"target\":\"a\",\"status\":\"succeeded\"}";

static void check_body(const struct fake_req *r, const char *want) {
  json_t *a = r->body ? json_loads(r->body, 0, NULL) : NULL, *b = json_loads(want, 0, NULL);
  assert_non_null(b);
  if (a == NULL || !json_equal(a, b))
    fail_msg("%s %s: body %s, want %s", r->method, r->path, r->body ? r->body : "(none)", want);
  json_decref(a);
  json_decref(b);
}

static void test_mutation_sends_and_waits(void **state) {
  struct fixture *f = *state;
  reset_mutation(2);
  h_reply(&f->h, 202, k_op_running);
  h_reply(&f->h, 200, k_op_done);
  int rc = run_argv(f, run_mutation, "--value", "v", "a b", "s1", "--flag", NULL);
  check_rc(f, rc, 0);
  assert_int_equal(g_mut.prepared, 1);
  assert_int_equal(f->h.nreqs, 2);
  assert_string_equal(f->h.reqs[0].method, "PUT");
  assert_string_equal(f->h.reqs[0].path, "/v1/things/a%20b");
  check_body(&f->h.reqs[0], "{\"second\":\"s1\",\"flag\":true,\"value\":\"v\"}");
  assert_string_equal(f->h.reqs[1].method, "GET");
  assert_non_null(strstr(f->h.reqs[1].path, "/v1/operations/op-7"));
  assert_string_equal(f->h.out, "did a b\n");
}

static void test_mutation_no_wait_with_own_flags(void **state) {
  struct fixture *f = *state;
  reset_mutation(1);
  h_reply(&f->h, 202, k_op_running);
  int rc = run_argv(f, run_mutation, "a", "--no-wait", NULL);
  check_rc(f, rc, 0);
  assert_int_equal(f->h.nreqs, 1);
  check_body(&f->h.reqs[0], "{\"second\":\"(none)\",\"flag\":false,\"value\":null}");
  assert_string_equal(f->h.out, "op-7\n");
}

static void test_mutation_prepare_refuses(void **state) {
  struct fixture *f = *state;
  reset_mutation(1);
  g_mut.fail_with = 1;
  h_reply(&f->h, 202, k_op_running);
  /* The body prepare made is released (the sanitizer build checks). */
  int rc = run_argv(f, run_mutation, "a", NULL);
  check_rc(f, rc, 2);
  assert_int_equal(f->h.nreqs, 0);
  assert_string_equal(f->h.err, "novacron thing list: prepare says no\n"
                                "usage: novacron thing list [NAME]\n"
                                "Run 'novacron thing list --help' for details.\n");
}

static void test_mutation_usage(void **state) {
  struct fixture *f = *state;
  reset_mutation(2);
  int rc = run_argv(f, run_mutation, "a", NULL);
  check_rc(f, rc, 2);
  assert_string_equal(f->h.err, "novacron thing list: missing SNAP\n"
                                "usage: novacron thing list [NAME]\n"
                                "Run 'novacron thing list --help' for details.\n");
  rc = run_argv(f, run_mutation, "a", "b", "c", NULL);
  check_rc(f, rc, 2);
  rc = run_argv(f, run_mutation, "a", "b", "--no-wait=x", NULL);
  check_rc(f, rc, 2);
  rc = run_argv(f, run_mutation, "a", "b", "--start", NULL);
  check_rc(f, rc, 2);
  assert_non_null(strstr(f->h.err, "unknown flag --start"));
  rc = run_argv(f, run_mutation, "a", "b", "--help", NULL);
  check_rc(f, rc, 0);
  assert_int_equal(g_mut.prepared, 0);
  assert_int_equal(f->h.nreqs, 0);
}

static void test_mutation_limits_checked(void **state) {
  struct fixture *f = *state;
  bool dests[NC__CLI_MUTATION_OPTS_MAX + 1];
  static const char *const flag_names[] = {"f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"};
  _Static_assert(sizeof flag_names / sizeof *flag_names > NC__CLI_MUTATION_OPTS_MAX,
                 "enough flag names");

  reset_mutation(1);
  for (int i = 0; i < NC__CLI_MUTATION_OPTS_MAX; i++)
    g_opts[i] = (struct nc_cli_opt){flag_names[i], NC_CLI_OPT_BOOL, &dests[i]};
  h_reply(&f->h, 202, k_op_running);
  int rc = run_argv(f, run_mutation, "a", "--no-wait", "--f0", NULL);
  check_rc(f, rc, 0); /* exactly the maximum is fine */
  g_opts[NC__CLI_MUTATION_OPTS_MAX] =
      (struct nc_cli_opt){flag_names[NC__CLI_MUTATION_OPTS_MAX], NC_CLI_OPT_BOOL,
                          &dests[NC__CLI_MUTATION_OPTS_MAX]};
  rc = run_argv(f, run_mutation, "a", NULL);
  check_rc(f, rc, 1);
  assert_non_null(strstr(f->h.err, "internal error"));

  static const int bad_npos[] = {0, 3};
  for (size_t i = 0; i < sizeof bad_npos / sizeof *bad_npos; i++) {
    reset_mutation(bad_npos[i]);
    rc = run_argv(f, run_mutation, "a", NULL);
    check_rc(f, rc, 1);
    assert_non_null(strstr(f->h.err, "internal error"));
  }
  assert_int_equal(f->h.nreqs, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_list_table, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_empty, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_positional_goes_in_path, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_json_prints_answer_as_is, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_answer_without_array, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_call_failures_pass_through, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_usage, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_name_too_long, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_column_count_checked, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mutation_sends_and_waits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mutation_no_wait_with_own_flags, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mutation_prepare_refuses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mutation_usage, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mutation_limits_checked, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
