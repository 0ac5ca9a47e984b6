/* nc_size_parse / nc_size_format (src/util/size.h): suffixes, overflow,
 * garbage, and parse(format(x)) == x. */
#include "nc_test.h"

#include "util/size.h"

#define KiB 1024ULL
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)
#define TiB (1024ULL * GiB)

static void expect_parse(const char *s, uint64_t want) {
  uint64_t got = 0xdeadbeef;
  int rc = nc_size_parse(s, &got);
  if (rc != 0)
    fail_msg("nc_size_parse(\"%s\") returned %d (%s), want 0", s, rc, nc_strerror(rc));
  if (got != want)
    fail_msg("nc_size_parse(\"%s\") = %llu, want %llu", s, (unsigned long long)got,
             (unsigned long long)want);
}

static void expect_reject(const char *s, int want_rc) {
  uint64_t got = 0xdeadbeef;
  int rc = nc_size_parse(s, &got);
  if (rc != want_rc)
    fail_msg("nc_size_parse(\"%s\") returned %d (%s) with %llu, want %d (%s)", s ? s : "(null)",
             rc, nc_strerror(rc), (unsigned long long)got, want_rc, nc_strerror(want_rc));
  if (got != 0xdeadbeef)
    fail_msg("nc_size_parse(\"%s\") failed but wrote %llu to *out", s ? s : "(null)",
             (unsigned long long)got);
}

static void test_suffixes(void **state) {
  (void)state;
  expect_parse("1", 1);
  expect_parse("1048576", MiB);
  expect_parse("1K", KiB);
  expect_parse("1k", KiB);
  expect_parse("256M", 256 * MiB);
  expect_parse("256m", 256 * MiB);
  expect_parse("2G", 2 * GiB);
  expect_parse("3T", 3 * TiB);
  expect_parse("512MiB", 512 * MiB);
  expect_parse("512MB", 512 * MiB);
  expect_parse("4GiB", 4 * GiB);
  expect_parse("1KB", KiB);
  expect_parse("007M", 7 * MiB);
}

static void test_overflow(void **state) {
  (void)state;
  expect_parse("18446744073709551615", UINT64_MAX);
  expect_reject("18446744073709551616", -ERANGE);
  expect_reject("99999999999999999999999999", -ERANGE);
  expect_parse("16777215T", 16777215ULL * TiB);
  expect_reject("16777216T", -ERANGE); /* exactly 2^64 */
  expect_parse("17179869183G", 17179869183ULL * GiB);
  expect_reject("17179869184G", -ERANGE);
  expect_reject("18014398509481984K", -ERANGE); /* 2^54 K = 2^64 */
}

static void test_garbage(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",     "K",     "M",    "-1",  "+1",   " 1",     "1 ",    "1KK",  "1KiBx", "1.5G",
      "0x10", "1e3",   "12X",  "1P",  "1b",   "1 M",    "1Mi",   "1iB",  "1KiBB", "G1",
      "1\n",  "1M\t",  "abc",  "1,5", "1_000", "1KB ",  "١",     "1Ｍ",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    expect_reject(bad[i], -EINVAL);
  expect_reject(NULL, -EINVAL);
}

/* The header promises -EINVAL for "anything that is not a positive size":
 * zero is not positive. */
static void test_zero_is_not_positive(void **state) {
  (void)state;
  expect_reject("0", -EINVAL);
  expect_reject("0M", -EINVAL);
}

static void expect_format(uint64_t v, const char *want) {
  char out[32];
  nc_size_format(v, out, sizeof out);
  if (strcmp(out, want) != 0)
    fail_msg("nc_size_format(%llu) = \"%s\", want \"%s\"", (unsigned long long)v, out, want);
}

static void test_format(void **state) {
  (void)state;
  expect_format(0, "0");
  expect_format(1, "1");
  expect_format(1023, "1023");
  expect_format(KiB, "1K");
  expect_format(1536 * KiB, "1536K");
  expect_format(256 * MiB, "256M");
  expect_format(GiB, "1G");
  expect_format(1536 * MiB, "1536M");
  expect_format(TiB, "1T");
  expect_format(1024 * TiB, "1024T"); /* no P unit */
  expect_format(UINT64_MAX, "18446744073709551615");
  expect_format(KiB + 1, "1025");
}

static void test_format_truncates_safely(void **state) {
  (void)state;
  char out[4];
  memset(out, 'x', sizeof out);
  nc_size_format(123456, out, sizeof out);
  EXPECT_I64(strnlen(out, sizeof out) < sizeof out, 1);
}

/* parse(format(x)) == x for every positive x we try. */
static void test_round_trip(void **state) {
  (void)state;
  uint64_t seeds[] = {1, 2, 3, 1000, KiB, KiB + 1, 3 * KiB, MiB - 1, MiB, 5 * MiB,
                      GiB, 3 * GiB / 2, TiB, 7 * TiB, UINT64_MAX, UINT64_MAX - 1,
                      UINT64_MAX / 1024 * 1024};
  uint64_t x = 0x12345678abcdefULL;
  for (int i = 0; i < 2000; i++) {
    uint64_t v;
    if (i < (int)(sizeof seeds / sizeof seeds[0])) {
      v = seeds[i];
    } else {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      v = x >> (x % 64);
      if (i % 3 == 0)
        v &= ~(uint64_t)0 << (10 * (1 + i % 4)); /* give it a unit */
      if (v == 0)
        v = 1;
    }
    char s[32];
    nc_size_format(v, s, sizeof s);
    uint64_t back = 0;
    int rc = nc_size_parse(s, &back);
    if (rc != 0 || back != v)
      fail_msg("format(%llu) = \"%s\" parses back as %llu (rc %d)", (unsigned long long)v, s,
               (unsigned long long)back, rc);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_suffixes),
      cmocka_unit_test(test_overflow),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_zero_is_not_positive),
      cmocka_unit_test(test_format),
      cmocka_unit_test(test_format_truncates_safely),
      cmocka_unit_test(test_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
