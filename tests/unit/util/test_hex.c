/* nc_hex_encode / nc_hex_decode / nc_hex_digit (src/util/hex.h): every
 * byte value both ways, either case in, bad digits refused, and decode
 * reading no further than it was told. */
#include "nc_test.h"

#include <string.h>

#include "util/hex.h"

static void test_all_bytes_round_trip(void **state) {
  (void)state;
  uint8_t in[256], back[256];
  char hex[2 * 256 + 1];
  for (int i = 0; i < 256; i++)
    in[i] = (uint8_t)i;
  assert_ptr_equal(nc_hex_encode(in, sizeof in, hex), hex);
  assert_int_equal(strlen(hex), 512);
  assert_memory_equal(hex, "000102", 6);
  assert_string_equal(hex + 2 * 0xfd, "fdfeff");
  assert_int_equal(nc_hex_decode(hex, sizeof back, back), 0);
  assert_memory_equal(in, back, sizeof in);
  char empty[1] = {'x'};
  nc_hex_encode(in, 0, empty);
  assert_string_equal(empty, "");
}

static void test_digits_and_case(void **state) {
  (void)state;
  assert_int_equal(nc_hex_digit('0'), 0);
  assert_int_equal(nc_hex_digit('9'), 9);
  assert_int_equal(nc_hex_digit('a'), 10);
  assert_int_equal(nc_hex_digit('F'), 15);
  for (const char *c = "gG/:@`xX -\n"; *c; c++)
    assert_int_equal(nc_hex_digit(*c), -1);
  assert_int_equal(nc_hex_digit('\0'), -1);
  uint8_t b[2];
  assert_int_equal(nc_hex_decode("aBcD", 2, b), 0);
  assert_int_equal(b[0], 0xab);
  assert_int_equal(b[1], 0xcd);
}

static void test_bad_input(void **state) {
  (void)state;
  uint8_t b[2] = {0x11, 0x22};
  assert_int_equal(nc_hex_decode("0g12", 2, b), -1);
  assert_int_equal(nc_hex_decode("g012", 2, b), -1);
  assert_int_equal(nc_hex_decode("01 2", 2, b), -1);
  /* a short string fails at its NUL rather than reading past it */
  assert_int_equal(nc_hex_decode("012", 2, b), -1);
  assert_int_equal(nc_hex_decode("", 1, b), -1);
  /* only 2n characters are read: what follows does not matter */
  assert_int_equal(nc_hex_decode("ffZZ", 1, b), 0);
  assert_int_equal(b[0], 0xff);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_all_bytes_round_trip),
      cmocka_unit_test(test_digits_and_case),
      cmocka_unit_test(test_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
