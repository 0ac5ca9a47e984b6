/* A growable, capped byte buffer for bodies read from the network, with a
 * write callback in libcurl's shape (CURLOPT_WRITEFUNCTION), so every HTTP
 * client of ours caps what a peer may make it hold the same way. */
#ifndef NC_UTIL_CAPBUF_H
#define NC_UTIL_CAPBUF_H

#include <stdbool.h>
#include <stddef.h>

struct nc_capbuf {
  char *p;     /* NUL-terminated while len > 0; the owner frees it */
  size_t len, cap;
  size_t max;  /* bytes it may hold; set before use */
  bool toobig; /* a write would have gone past max (the transfer stops) */
};

/* Appends size*nmemb bytes from ptr; returns the count taken, or 0 (which
 * makes libcurl abort) past max or when out of memory. ud is the buffer. */
size_t nc_capbuf_write(char *ptr, size_t size, size_t nmemb, void *ud);

#endif
