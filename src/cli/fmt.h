/* Parsing and formatting of the values people type and read: sizes,
 * durations, ages, RFC 3339 timestamps and URL path segments. Everything
 * here is pure (no I/O, no clock) so it is unit-tested directly. */
#ifndef NC_CLI_FMT_H
#define NC_CLI_FMT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses a byte size: digits with an optional binary suffix K, M, G, T or P
 * (1024-based, case-insensitive, optionally followed by "i", "iB" or "B"),
 * or a bare "B". "256M", "2g", "512MiB", "4096". Returns 0, -EINVAL when it
 * is not a size, -ERANGE when it does not fit in 64 bits. */
int nc_cli_parse_size(const char *s, uint64_t *out_bytes);

/* Writes bytes in the exact form the API takes ("256M", "2G", "1536K",
 * "1000"): the largest suffix that divides the value. Always NUL-terminates
 * (truncating when n is too small). */
void nc_cli_size_canonical(uint64_t bytes, char *buf, size_t n);

/* Writes bytes for a person: exact when a suffix divides it ("256M"),
 * otherwise one decimal in the largest unit that is at most the value
 * ("1.5G", "12.3K"). */
void nc_cli_size_human(uint64_t bytes, char *buf, size_t n);

/* Parses an unsigned decimal integer with no sign, spaces or suffix, at most
 * max. Returns 0, -EINVAL or -ERANGE. */
int nc_cli_parse_uint(const char *s, uint64_t max, uint64_t *out);

/* Parses a positive duration: "30" (seconds), "30s", "2m", "1h", "500ms".
 * Returns 0 with *out_ms > 0, -EINVAL, or -ERANGE (over ten years). */
int nc_cli_parse_duration(const char *s, int64_t *out_ms);

/* How long ago, for an AGE column: "45s", "12m", "5h" (under 48 hours),
 * "3d". Negative input (clock skew) prints "0s". */
void nc_cli_format_age(int64_t ms, char *buf, size_t n);

/* How long something took: "850ms", "1.2s", "2m03s", "1h02m". */
void nc_cli_format_duration(int64_t ms, char *buf, size_t n);

/* Parses an RFC 3339 timestamp ("2026-11-27T23:00:00.000Z",
 * "2026-11-27T23:00:00+01:00") into milliseconds since the Unix epoch.
 * Returns 0 or -EINVAL. */
int nc_cli_parse_time(const char *s, int64_t *out_ms);

/* Formats a URL path from fmt, where every "%s" argument is one path
 * segment and is percent-encoded (RFC 3986 section 2.3 unreserved characters
 * pass; a segment of only dots is encoded so it cannot walk up the path).
 * Only "%s" is supported. Returns 0, -ENAMETOOLONG when the result does not
 * fit in n bytes, -EINVAL for an empty segment or another conversion. */
int nc_cli_pathf(char *buf, size_t n, const char *fmt, ...);
int nc_cli_vpathf(char *buf, size_t n, const char *fmt, va_list ap);

/* Copies in to out for a terminal, replacing control characters (C0, DEL
 * and the UTF-8 encoded C1 range) with '?', so a string from the server
 * cannot move the cursor or change the terminal. Truncates to n - 1 bytes. */
void nc_cli_sanitize(const char *in, char *out, size_t n);

/* True when s is well-formed UTF-8 (RFC 3629: no overlongs, surrogates or
 * code points past U+10FFFF). JSON strings must be. */
bool nc_cli_utf8_valid(const char *s);

/* Replaces every byte that is not part of a well-formed UTF-8 sequence
 * with '?', in place, so arbitrary bytes (a serial log) can become a JSON
 * string. */
void nc_cli_utf8_scrub(char *s, size_t len);

/* Number of terminal columns a sanitized UTF-8 string takes, counted as one
 * per code point (no East Asian width table). */
size_t nc_cli_display_width(const char *s);

#endif
