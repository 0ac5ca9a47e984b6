/* The Prometheus registry (src/obs/metrics.h): text format 0.0.4 as the
 * exposition-format document describes it (HELP/TYPE lines, label value
 * escaping of \ " and newline, cumulative histogram buckets ending in +Inf
 * with _sum and _count), the per-family series cap, collectors, and a
 * final check of a rendered registry with `promtool check metrics`. */
#include "nc_test.h"

#include <sys/wait.h>

#include "obs/metrics.h"

static void collect_nothing(struct nc_metrics_writer *w, void *data) {
  (void)w;
  (void)data;
}

/* A registry with one collector that writes nothing: the tests below are
 * about families; the render of a registry without any collector is
 * test_render_without_collectors. */
static struct nc_metrics *new_registry(void) {
  struct nc_metrics *m = NULL;
  EXPECT_RC(nc_metrics_new(&m), 0);
  nc_metrics_add_collector(m, collect_nothing, NULL);
  return m;
}

static char *render(struct nc_metrics *m) {
  char *text = NULL;
  size_t len = 0;
  EXPECT_RC(nc_metrics_render(m, &text, &len), 0);
  assert_non_null(text);
  EXPECT_I64(strlen(text), len);
  return text;
}

static void test_counter_and_gauge(void **state) {
  (void)state;
  struct nc_metrics *m = new_registry();
  static const char *const ln[] = {"route", "code", NULL};
  struct nc_metric *c = nc_metrics_register(m, NC_METRIC_COUNTER, "t_requests_total",
                                            "Requests.", ln, NULL, 0);
  struct nc_metric *g =
      nc_metrics_register(m, NC_METRIC_GAUGE, "t_temperature_celsius", "Heat.", NULL, NULL, 0);
  nc_metric_add(c, (const char *const[]){"/v1/vms", "200"}, 1);
  nc_metric_add(c, (const char *const[]){"/v1/vms", "200"}, 2);
  nc_metric_add(c, (const char *const[]){"/v1/vms", "404"}, 1);
  nc_metric_set(g, NULL, 21.5);
  nc_metric_set(g, NULL, -3);
  char *t = render(m);
  EXPECT_CONTAINS(t, "# HELP t_requests_total Requests.\n# TYPE t_requests_total counter\n"
                     "t_requests_total{route=\"/v1/vms\",code=\"200\"} 3\n"
                     "t_requests_total{route=\"/v1/vms\",code=\"404\"} 1\n");
  EXPECT_CONTAINS(t, "# HELP t_temperature_celsius Heat.\n# TYPE t_temperature_celsius gauge\n"
                     "t_temperature_celsius -3\n");
  EXPECT_CONTAINS(t, "# TYPE novacron_metrics_dropped_series_total counter\n"
                     "novacron_metrics_dropped_series_total 0\n");
  free(t);
  nc_metrics_free(m);
}

static void test_values(void **state) {
  (void)state;
  struct nc_metrics *m = new_registry();
  static const char *const ln[] = {"k", NULL};
  struct nc_metric *g = nc_metrics_register(m, NC_METRIC_GAUGE, "t_v", "V.", ln, NULL, 0);
  nc_metric_set(g, (const char *const[]){"half"}, 0.5);
  nc_metric_set(g, (const char *const[]){"big"}, 123456789012.0);
  nc_metric_set(g, (const char *const[]){"inf"}, 1.0 / 0.0);
  nc_metric_set(g, (const char *const[]){"ninf"}, -1.0 / 0.0);
  nc_metric_set(g, (const char *const[]){"nan"}, 0.0 / 0.0);
  nc_metric_set(g, (const char *const[]){"tiny"}, 1e-9);
  nc_metric_set(g, (const char *const[]){"huge"}, 1e20);  /* beyond long long */
  nc_metric_set(g, (const char *const[]){"neg"}, -2.5e19);
  char *t = render(m);
  EXPECT_CONTAINS(t, "t_v{k=\"half\"} 0.5\n");
  EXPECT_CONTAINS(t, "t_v{k=\"big\"} 123456789012\n");
  EXPECT_CONTAINS(t, "t_v{k=\"inf\"} +Inf\n");
  EXPECT_CONTAINS(t, "t_v{k=\"ninf\"} -Inf\n");
  EXPECT_CONTAINS(t, "t_v{k=\"nan\"} NaN\n");
  EXPECT_CONTAINS(t, "t_v{k=\"tiny\"} 1e-09\n");
  EXPECT_CONTAINS(t, "t_v{k=\"huge\"} 1e+20\n");
  EXPECT_CONTAINS(t, "t_v{k=\"neg\"} -2.5e+19\n");
  free(t);
  nc_metrics_free(m);
}

static void test_label_escaping(void **state) {
  (void)state;
  struct nc_metrics *m = new_registry();
  static const char *const ln[] = {"v", NULL};
  struct nc_metric *g =
      nc_metrics_register(m, NC_METRIC_GAUGE, "t_esc", "Back\\slash and\nnewline.", ln, NULL, 0);
  nc_metric_set(g, (const char *const[]){"a\\b\"c\nd"}, 1);
  char *t = render(m);
  /* HELP escapes \ and newline (not quotes); label values escape all three. */
  EXPECT_CONTAINS(t, "# HELP t_esc Back\\\\slash and\\nnewline.\n");
  EXPECT_CONTAINS(t, "t_esc{v=\"a\\\\b\\\"c\\nd\"} 1\n");
  free(t);
  nc_metrics_free(m);
}

static void test_histogram(void **state) {
  (void)state;
  struct nc_metrics *m = new_registry();
  static const char *const ln[] = {"route", NULL};
  static const double b[] = {0.25, 1, 2.5};
  struct nc_metric *h = nc_metrics_register(m, NC_METRIC_HISTOGRAM, "t_latency_seconds",
                                            "Latency.", ln, b, 3);
  const char *const lv[] = {"/x"};
  nc_metric_observe(h, lv, 0.1);
  nc_metric_observe(h, lv, 0.25); /* le is inclusive */
  nc_metric_observe(h, lv, 2);
  nc_metric_observe(h, lv, 7);
  char *t = render(m);
  EXPECT_CONTAINS(t, "# TYPE t_latency_seconds histogram\n"
                     "t_latency_seconds_bucket{route=\"/x\",le=\"0.25\"} 2\n"
                     "t_latency_seconds_bucket{route=\"/x\",le=\"1\"} 2\n"
                     "t_latency_seconds_bucket{route=\"/x\",le=\"2.5\"} 3\n"
                     "t_latency_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"
                     "t_latency_seconds_sum{route=\"/x\"} 9.35\n"
                     "t_latency_seconds_count{route=\"/x\"} 4\n");
  free(t);
  nc_metrics_free(m);
}

static void test_histogram_without_labels(void **state) {
  (void)state;
  struct nc_metrics *m = new_registry();
  static const double b[] = {1};
  struct nc_metric *h =
      nc_metrics_register(m, NC_METRIC_HISTOGRAM, "t_h_seconds", "H.", NULL, b, 1);
  nc_metric_observe(h, NULL, 3);
  char *t = render(m);
  EXPECT_CONTAINS(t, "t_h_seconds_bucket{le=\"1\"} 0\nt_h_seconds_bucket{le=\"+Inf\"} 1\n"
                     "t_h_seconds_sum 3\nt_h_seconds_count 1\n");
  free(t);
  nc_metrics_free(m);
}

static size_t count_lines_with(const char *t, const char *prefix) {
  size_t n = 0, pl = strlen(prefix);
  for (const char *p = t; p && *p;) {
    if (strncmp(p, prefix, pl) == 0)
      n++;
    p = strchr(p, '\n');
    if (p)
      p++;
  }
  return n;
}

static void test_series_cap(void **state) {
  (void)state;
  struct nc_metrics *m = new_registry();
  static const char *const ln[] = {"id", NULL};
  struct nc_metric *c =
      nc_metrics_register(m, NC_METRIC_COUNTER, "t_cap_total", "Cap.", ln, NULL, 0);
  char v[32];
  for (int i = 0; i < NC_METRICS_SERIES_MAX + 10; i++) {
    snprintf(v, sizeof v, "s%d", i);
    nc_metric_add(c, (const char *const[]){v}, 1);
  }
  /* An existing series still counts after the cap. */
  nc_metric_add(c, (const char *const[]){"s0"}, 1);
  char *t = render(m);
  EXPECT_I64(count_lines_with(t, "t_cap_total{"), NC_METRICS_SERIES_MAX);
  EXPECT_CONTAINS(t, "t_cap_total{id=\"s0\"} 2\n");
  EXPECT_NOT_CONTAINS(t, "id=\"s4096\"");
  EXPECT_CONTAINS(t, "\nnovacron_metrics_dropped_series_total 10\n");
  free(t);
  nc_metrics_free(m);
}

static void test_reset(void **state) {
  (void)state;
  struct nc_metrics *m = new_registry();
  static const char *const ln[] = {"k", NULL};
  struct nc_metric *g = nc_metrics_register(m, NC_METRIC_GAUGE, "t_r", "R.", ln, NULL, 0);
  nc_metric_set(g, (const char *const[]){"a"}, 1);
  nc_metric_reset(g);
  nc_metric_set(g, (const char *const[]){"b"}, 2);
  char *t = render(m);
  EXPECT_NOT_CONTAINS(t, "t_r{k=\"a\"}");
  EXPECT_CONTAINS(t, "t_r{k=\"b\"} 2\n");
  free(t);
  nc_metrics_free(m);
}

static void collect_a(struct nc_metrics_writer *w, void *data) {
  int *calls = data;
  (*calls)++;
  nc_metrics_write_family(w, "t_col_alpha", NC_METRIC_GAUGE, "A.");
  nc_metrics_write_sample(w, "t_col_alpha", (const char *const[]){"x", "q\"uote", NULL}, 1);
  nc_metrics_write_sample(w, "t_col_alpha", (const char *const[]){"x", "2", "y", "3", NULL}, 2);
}

static void collect_b(struct nc_metrics_writer *w, void *data) {
  (void)data;
  nc_metrics_write_family(w, "t_col_beta_total", NC_METRIC_COUNTER, "B.");
  nc_metrics_write_sample(w, "t_col_beta_total", NULL, 7);
}

static void test_collectors(void **state) {
  (void)state;
  struct nc_metrics *m = new_registry();
  int calls = 0;
  nc_metrics_add_collector(m, collect_a, &calls);
  nc_metrics_add_collector(m, collect_b, NULL);
  char *t = render(m);
  EXPECT_I64(calls, 1);
  const char *a = strstr(t, "# HELP t_col_alpha A.\n# TYPE t_col_alpha gauge\n"
                            "t_col_alpha{x=\"q\\\"uote\"} 1\nt_col_alpha{x=\"2\",y=\"3\"} 2\n");
  const char *b = strstr(t, "# HELP t_col_beta_total B.\n# TYPE t_col_beta_total counter\n"
                            "t_col_beta_total 7\n");
  if (!a || !b || a > b)
    fail_msg("collectors missing or out of registration order:\n%s", t);
  free(t);
  nc_metrics_free(m);
}

/* Runs `promtool check metrics` on text; returns its exit status, or -1
 * when promtool is not installed. Its output goes to out. */
static int promtool_check(const char *text, char *out, size_t out_len) {
  if (system("command -v promtool >/dev/null 2>&1") != 0)
    return -1;
  char dir[128];
  if (nct_mkdtemp(dir, sizeof dir, "prom") != 0)
    return -2;
  char in[256], res[256], cmd[700];
  snprintf(in, sizeof in, "%s/metrics.txt", dir);
  snprintf(res, sizeof res, "%s/out.txt", dir);
  nct_write_file(in, text);
  snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' > '%s' 2>&1", in, res);
  int st = system(cmd);
  char *o = nct_read_file(res);
  snprintf(out, out_len, "%s", o ? o : "");
  free(o);
  nct_rmtree(dir);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -3;
}

static void test_promtool_accepts_render(void **state) {
  (void)state;
  struct nc_metrics *m = new_registry();
  static const char *const l2[] = {"route", "code", NULL};
  static const char *const l1[] = {"route", NULL};
  static const double b[] = {0.001, 0.01, 0.1, 1};
  struct nc_metric *c = nc_metrics_register(m, NC_METRIC_COUNTER, "novacron_t_requests_total",
                                            "Requests by route\\status.", l2, NULL, 0);
  struct nc_metric *h = nc_metrics_register(m, NC_METRIC_HISTOGRAM,
                                            "novacron_t_duration_seconds", "Latency.", l1, b, 4);
  struct nc_metric *g =
      nc_metrics_register(m, NC_METRIC_GAUGE, "novacron_t_vms", "VMs.", NULL, NULL, 0);
  nc_metric_add(c, (const char *const[]){"/v1/vms/{name}", "200"}, 5);
  nc_metric_add(c, (const char *const[]){"weird \"\\\n", "500"}, 1);
  nc_metric_observe(h, (const char *const[]){"/v1/vms"}, 0.005);
  nc_metric_observe(h, (const char *const[]){"/v1/vms"}, 3);
  nc_metric_set(g, NULL, 2);
  int calls = 0;
  nc_metrics_add_collector(m, collect_a, &calls);
  nc_metrics_add_collector(m, collect_b, NULL);
  char *t = render(m);
  char out[4096];
  int rc = promtool_check(t, out, sizeof out);
  if (rc == -1) {
    free(t);
    nc_metrics_free(m);
    fprintf(stderr, "SKIP: promtool is not on PATH (install the Debian package "
                    "prometheus); the rendered text was not checked\n");
    skip();
  }
  if (rc != 0)
    fail_msg("promtool check metrics exited %d:\n%s\n--- input ---\n%s", rc, out, t);
  free(t);
  nc_metrics_free(m);
}

/* The plainest registry: no family, no collector. Must render the dropped
 * series counter and nothing else, without undefined behaviour. */
static void test_render_without_collectors(void **state) {
  (void)state;
  struct nc_metrics *m;
  EXPECT_RC(nc_metrics_new(&m), 0);
  char *t = render(m);
  EXPECT_STR(t, "# HELP novacron_metrics_dropped_series_total Series dropped because a family "
                "reached its series cap.\n# TYPE novacron_metrics_dropped_series_total counter\n"
                "novacron_metrics_dropped_series_total 0\n");
  free(t);
  nc_metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counter_and_gauge),
      cmocka_unit_test(test_values),
      cmocka_unit_test(test_label_escaping),
      cmocka_unit_test(test_histogram),
      cmocka_unit_test(test_histogram_without_labels),
      cmocka_unit_test(test_series_cap),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_collectors),
      cmocka_unit_test(test_promtool_accepts_render),
      /* last: under UBSan (no recovery) the bug it shows aborts the run */
      cmocka_unit_test(test_render_without_collectors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
