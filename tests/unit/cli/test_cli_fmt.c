/* Pure helpers: sizes, durations, ages, timestamps, path encoding,
 * sanitizing, table rendering and error-body message extraction. */
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/table.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_parse_size(void **state) {
  static const struct {
    const char *in;
    int rc;
    uint64_t want;
  } cases[] = {
      {"0", 0, 0},
      {"4096", 0, 4096},
      {"256M", 0, 256ull << 20},
      {"256m", 0, 256ull << 20},
      {"2G", 0, 2ull << 30},
      {"512MiB", 0, 512ull << 20},
      {"512Mi", 0, 512ull << 20},
      {"512MB", 0, 512ull << 20},
      {"64K", 0, 64ull << 10},
      {"1T", 0, 1ull << 40},
      {"1P", 0, 1ull << 50},
      {"100B", 0, 100},
      {"12X", -EINVAL, 0},
      {"", -EINVAL, 0},
      {"M", -EINVAL, 0},
      {"-1M", -EINVAL, 0},
      {"1.5G", -EINVAL, 0},
      {" 1M", -EINVAL, 0},
      {"1M ", -EINVAL, 0},
      {"1MiBs", -EINVAL, 0},
      {"1iB", -EINVAL, 0},
      {"18446744073709551615", 0, UINT64_MAX},
      {"18446744073709551616", -ERANGE, 0},
      {"16384P", -ERANGE, 0},
      {"99999999999999999999999999999999999", -ERANGE, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    uint64_t v = 12345;
    int rc = nc_cli_parse_size(cases[i].in, &v);
    if (rc != cases[i].rc || (rc == 0 && v != cases[i].want))
      fail_msg("parse_size(\"%s\") = %d, %llu; want %d, %llu", cases[i].in, rc,
               (unsigned long long)v, cases[i].rc, (unsigned long long)cases[i].want);
  }
}

static void test_format_size(void **state) {
  static const struct {
    uint64_t in;
    const char *canon, *human;
  } cases[] = {
      {0, "0", "0"},
      {1000, "1000", "1000"},
      {1024, "1K", "1K"},
      {256ull << 20, "256M", "256M"},
      {1536ull << 20, "1536M", "1.5G"},
      {3ull << 30, "3G", "3G"},
      {1ull << 40, "1T", "1T"},
      {(1ull << 30) + 1, "1073741825", "1G"}, /* rounds to 1.0 */
      {1288490189ull, "1288490189", "1.2G"},
      {1048575, "1048575", "1024K"},          /* 1023.999K rounds up */
      {12595, "12595", "12.3K"},
      {UINT64_MAX, "18446744073709551615", "16384P"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char buf[32];
    nc_cli_size_canonical(cases[i].in, buf, sizeof buf);
    if (strcmp(buf, cases[i].canon) != 0)
      fail_msg("canonical(%llu) = %s, want %s", (unsigned long long)cases[i].in, buf,
               cases[i].canon);
    nc_cli_size_human(cases[i].in, buf, sizeof buf);
    if (strcmp(buf, cases[i].human) != 0)
      fail_msg("human(%llu) = %s, want %s", (unsigned long long)cases[i].in, buf, cases[i].human);
  }
  /* Every canonical form parses back to the same number. */
  for (uint64_t v = 1; v < (1ull << 50); v = v * 3 + 1024) {
    char buf[32];
    uint64_t back;
    nc_cli_size_canonical(v, buf, sizeof buf);
    assert_int_equal(nc_cli_parse_size(buf, &back), 0);
    assert_int_equal(back, v);
  }
}

static void test_durations(void **state) {
  static const struct {
    const char *in;
    int rc;
    int64_t ms;
  } parse[] = {
      {"30", 0, 30000}, {"30s", 0, 30000}, {"2m", 0, 120000}, {"1h", 0, 3600000},
      {"500ms", 0, 500}, {"0", -EINVAL, 0}, {"", -EINVAL, 0},  {"5d", -EINVAL, 0},
      {"-5", -EINVAL, 0}, {"1.5", -EINVAL, 0}, {"999999999h", -ERANGE, 0},
  };
  for (size_t i = 0; i < sizeof parse / sizeof *parse; i++) {
    int64_t ms = -1;
    int rc = nc_cli_parse_duration(parse[i].in, &ms);
    if (rc != parse[i].rc || (rc == 0 && ms != parse[i].ms))
      fail_msg("parse_duration(\"%s\") = %d, %lld", parse[i].in, rc, (long long)ms);
  }
  static const struct {
    int64_t ms;
    const char *dur, *age;
  } fmt[] = {
      {-5, "0ms", "0s"},         {0, "0ms", "0s"},           {850, "850ms", "0s"},
      {1250, "1.2s", "1s"},      {59999, "59.9s", "59s"},    {60000, "1m00s", "1m"},
      {123000, "2m03s", "2m"},   {3599000, "59m59s", "59m"}, {3600000, "1h00m", "1h"},
      {3720000, "1h02m", "1h"},  {47 * 3600000LL, "47h00m", "47h"},
      {48 * 3600000LL, "48h00m", "2d"}, {400 * 86400000LL, "9600h00m", "400d"},
  };
  for (size_t i = 0; i < sizeof fmt / sizeof *fmt; i++) {
    char buf[32];
    nc_cli_format_duration(fmt[i].ms, buf, sizeof buf);
    if (strcmp(buf, fmt[i].dur) != 0)
      fail_msg("format_duration(%lld) = %s, want %s", (long long)fmt[i].ms, buf, fmt[i].dur);
    nc_cli_format_age(fmt[i].ms, buf, sizeof buf);
    if (strcmp(buf, fmt[i].age) != 0)
      fail_msg("format_age(%lld) = %s, want %s", (long long)fmt[i].ms, buf, fmt[i].age);
  }
}

static void test_parse_time(void **state) {
  static const struct {
    const char *in;
    int rc;
    int64_t ms;
  } cases[] = {
      {"1970-01-01T00:00:00Z", 0, 0},
      {"2026-11-27T23:00:00.000Z", 0, 1795820400000LL},
      {"2026-11-27T23:00:00.5Z", 0, 1795820400500LL},
      {"2026-11-27T23:00:00.123456Z", 0, 1795820400123LL},
      {"2026-11-28T00:00:00+01:00", 0, 1795820400000LL},
      {"2026-11-27t22:00:00-01:00", 0, 1795820400000LL},
      {"2000-02-29T00:00:00Z", 0, 951782400000LL},
      {"1969-12-31T23:59:59Z", 0, -1000},
      {"2001-02-29T00:00:00Z", -EINVAL, 0},
      {"2026-13-01T00:00:00Z", -EINVAL, 0},
      {"2026-11-27T24:00:00Z", -EINVAL, 0},
      {"2026-11-27T23:00:00", -EINVAL, 0},
      {"2026-11-27T23:00:00.Z", -EINVAL, 0},
      {"2026-11-27T23:00:00Zjunk", -EINVAL, 0},
      {"2026-11-27", -EINVAL, 0},
      {"", -EINVAL, 0},
      {NULL, -EINVAL, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int64_t ms = 42;
    int rc = nc_cli_parse_time(cases[i].in, &ms);
    if (rc != cases[i].rc || (rc == 0 && ms != cases[i].ms))
      fail_msg("parse_time(\"%s\") = %d, %lld; want %d, %lld", cases[i].in ? cases[i].in : "NULL",
               rc, (long long)ms, cases[i].rc, (long long)cases[i].ms);
  }
}

static void test_pathf(void **state) {
  char buf[64];
  assert_int_equal(nc_cli_pathf(buf, sizeof buf, "/v1/vms/%s/snapshots/%s", "web-1", "s_1.~"), 0);
  assert_string_equal(buf, "/v1/vms/web-1/snapshots/s_1.~");
  assert_int_equal(nc_cli_pathf(buf, sizeof buf, "/v1/vms/%s", "a b/c?d#e%"), 0);
  assert_string_equal(buf, "/v1/vms/a%20b%2Fc%3Fd%23e%25");
  assert_int_equal(nc_cli_pathf(buf, sizeof buf, "/v1/vms/%s", ".."), 0);
  assert_string_equal(buf, "/v1/vms/%2E%2E");
  assert_int_equal(nc_cli_pathf(buf, sizeof buf, "/v1/vms/%s", "a..b"), 0);
  assert_string_equal(buf, "/v1/vms/a..b");
  assert_int_equal(nc_cli_pathf(buf, sizeof buf, "/v1/vms/%s", "\xc3\xa9"), 0);
  assert_string_equal(buf, "/v1/vms/%C3%A9");
  assert_int_equal(nc_cli_pathf(buf, sizeof buf, "/v1/vms/%s", ""), -EINVAL);
  assert_int_equal(nc_cli_pathf(buf, sizeof buf, "/v1/%d", 3), -EINVAL);
  assert_int_equal(nc_cli_pathf(buf, 12, "/v1/vms/%s", "abcd"), -ENAMETOOLONG);
  assert_string_equal(buf, "");
  assert_int_equal(nc_cli_pathf(buf, 13, "/v1/vms/%s", "abcd"), 0);
  assert_int_equal(nc_cli_pathf(buf, 13, "/v1/vms/%s", "ab d"), -ENAMETOOLONG);
}

static void test_sanitize_utf8(void **state) {
  char buf[64];
  nc_cli_sanitize("ok \x1b[31mred\x7f", buf, sizeof buf);
  assert_string_equal(buf, "ok ?[31mred?");
  nc_cli_sanitize("csi \xc2\x9b" "2J caf\xc3\xa9", buf, sizeof buf);
  assert_string_equal(buf, "csi ?2J caf\xc3\xa9");
  nc_cli_sanitize("caf\xc3\xa9", buf, 5); /* would cut the é in half */
  assert_string_equal(buf, "caf");
  assert_int_equal(nc_cli_display_width("caf\xc3\xa9"), 4);
  assert_true(nc_cli_utf8_valid("caf\xc3\xa9 \xf0\x9f\x98\x80"));
  assert_false(nc_cli_utf8_valid("\xff"));
  assert_false(nc_cli_utf8_valid("\xc0\xaf"));         /* overlong */
  assert_false(nc_cli_utf8_valid("\xed\xa0\x80"));     /* surrogate */
  assert_false(nc_cli_utf8_valid("\xf4\x90\x80\x80")); /* past U+10FFFF */
  assert_false(nc_cli_utf8_valid("\xc3"));             /* cut short */
  char scrub[] = "a\xffz\xc3";
  nc_cli_utf8_scrub(scrub, strlen(scrub));
  assert_string_equal(scrub, "a?z?");
}

static char *render(struct nc_cli_table *t) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  nc_cli_table_print(t, f);
  fclose(f);
  return buf;
}

static void test_table(void **state) {
  static const char *const headers[] = {"NAME", "STATE", "AGE"};
  struct nc_cli_table *t;
  assert_int_equal(nc_cli_table_new(3, headers, &t), 0);
  const char *r1[] = {"web-1", "running", "5m"};
  const char *r2[] = {"caf\xc3\xa9-long-name", NULL, ""};
  assert_int_equal(nc_cli_table_add(t, r1), 0);
  assert_int_equal(nc_cli_table_add(t, r2), 0);
  for (int i = 0; i < 40; i++) /* grows past the first allocation */
    assert_int_equal(nc_cli_table_add(t, r1), 0);
  assert_int_equal(nc_cli_table_rows(t), 42);
  char *out = render(t);
  /* Widths count code points, the last column is not padded, empty cells
   * show as "-". */
  const char *want = "NAME            STATE    AGE\n"
                     "web-1           running  5m\n"
                     "caf\xc3\xa9-long-name  -        -\n";
  if (strncmp(out, want, strlen(want)) != 0)
    fail_msg("table:\n%s\nwant it to start with:\n%s", out, want);
  free(out);
  nc_cli_table_destroy(t);
  nc_cli_table_destroy(NULL);
  assert_int_equal(nc_cli_table_new(0, headers, &t), -EINVAL);
}

static void test_kv(void **state) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  nc_cli_kv(f, 6, "Name", "web-1");
  nc_cli_kv(f, 6, "Labels", NULL);
  nc_cli_kv(f, 6, "", "more");
  nc_cli_kv(f, 2, "LongKey", "x\ny");
  fclose(f);
  assert_string_equal(buf, "Name:   web-1\nLabels: -\n        more\nLongKey: x?y\n");
  free(buf);
}

static void test_error_message(void **state) {
  static const struct {
    long status;
    const char *body;
    int rc;
    const char *want;
  } cases[] = {
      {400,
       "{\"error\": {\"code\": \"invalid_field\", \"message\": \"vm \\\"web-1\\\": memory "
       "\\\"12X\\\" is not a size (try 512M or 2G)\", \"field\": \"memory\"}}",
       0, "vm \"web-1\": memory \"12X\" is not a size (try 512M or 2G)"},
      {409, "{\"error\":{\"code\":\"conflict\",\"message\":\"line one\\nline two\"}}", 0,
       "line one"},
      {500, "{\"error\":\"flat string\"}", 0, "flat string"},
      {500, "{\"message\":\"top level\"}", 0, "top level"},
      {502, "  \n<html>Bad gateway</html>\nmore", 0, "HTTP 502: <html>Bad gateway</html>"},
      {500, "{\"error\":{\"code\":\"x\"}}", -ENOENT, "the daemon answered HTTP 500 without"},
      {404, "", -ENOENT, "the daemon answered HTTP 404 without saying why"},
      {400, "{\"error\":{\"message\":\"esc \\u001b[2J\"}}", 0, "esc ?[2J"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char out[256];
    int rc = nc_cli_error_message(cases[i].status, cases[i].body, strlen(cases[i].body), out,
                                  sizeof out);
    if (rc != cases[i].rc || strncmp(out, cases[i].want, strlen(cases[i].want)) != 0)
      fail_msg("case %zu: %d \"%s\", want %d \"%s\"", i, rc, out, cases[i].rc, cases[i].want);
  }
  char small[8];
  const char *body = "{\"error\":{\"message\":\"a long message\"}}";
  nc_cli_error_message(400, body, strlen(body), small, sizeof small);
  assert_string_equal(small, "a long ");
}

static void test_endpoint_parse(void **state) {
  struct nc_cli_endpoint ep;
  assert_int_equal(nc_cli_endpoint_parse("unix:/var/lib/novacron/api.sock", &ep), 0);
  assert_int_equal(ep.kind, NC_CLI_EP_UNIX);
  assert_string_equal(ep.unix_path, "/var/lib/novacron/api.sock");
  assert_string_equal(ep.url, "http://localhost");
  assert_int_equal(nc_cli_endpoint_parse("unix:///run/a.sock", &ep), 0);
  assert_string_equal(ep.unix_path, "/run/a.sock");
  assert_int_equal(nc_cli_endpoint_parse("http://10.0.0.1:8443/", &ep), 0);
  assert_int_equal(ep.kind, NC_CLI_EP_HTTP);
  assert_string_equal(ep.url, "http://10.0.0.1:8443");
  assert_int_equal(nc_cli_endpoint_parse("https://h/prefix", &ep), 0);
  assert_string_equal(ep.url, "https://h/prefix");
  assert_int_equal(nc_cli_endpoint_parse("http://", &ep), -EINVAL);
  assert_int_equal(nc_cli_endpoint_parse("10.0.0.1:80", &ep), -EINVAL);
  assert_int_equal(nc_cli_endpoint_parse("unix:", &ep), -EINVAL);
  char long_path[200] = "unix:/";
  memset(long_path + 6, 'a', 150);
  long_path[156] = '\0';
  assert_int_equal(nc_cli_endpoint_parse(long_path, &ep), -ENAMETOOLONG);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_size),    cmocka_unit_test(test_format_size),
      cmocka_unit_test(test_durations),     cmocka_unit_test(test_parse_time),
      cmocka_unit_test(test_pathf),         cmocka_unit_test(test_sanitize_utf8),
      cmocka_unit_test(test_table),         cmocka_unit_test(test_kv),
      cmocka_unit_test(test_error_message), cmocka_unit_test(test_endpoint_parse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
