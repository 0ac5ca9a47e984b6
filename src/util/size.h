/* Human sizes: "256M", "2G", "512MiB", "1048576". Binary units. */
#ifndef NC_UTIL_SIZE_H
#define NC_UTIL_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* Parses s into bytes. -EINVAL on anything that is not a positive size
 * with an optional K/M/G/T suffix (optionally followed by "iB" or "B",
 * any case: 512M, 512MiB, 512mb);
 * -ERANGE on overflow. */
int nc_size_parse(const char *s, uint64_t *out);
/* Writes the shortest exact form ("256M", "1G", "1536K", "100") to out. */
void nc_size_format(uint64_t bytes, char *out, size_t out_len);

#endif
