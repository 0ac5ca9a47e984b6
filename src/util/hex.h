/* Lower-case hex of bytes, and back. */
#ifndef NC_UTIL_HEX_H
#define NC_UTIL_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Writes 2n digits and a NUL to out (2n + 1 bytes); returns out. */
char *nc_hex_encode(const uint8_t *in, size_t n, char *out);
/* The value of one hex digit (either case), or -1. */
int nc_hex_digit(char c);
/* Reads exactly 2n digits (either case) from s into out: 0, or -1 when a
 * character in them is not a digit. Does not look past s[2n - 1]. */
int nc_hex_decode(const char *s, size_t n, uint8_t *out);

#endif
