/* Capped growable buffer. See capbuf.h. */
#include "util/capbuf.h"

#include <stdlib.h>
#include <string.h>

size_t nc_capbuf_write(char *ptr, size_t size, size_t nmemb, void *ud) {
  struct nc_capbuf *b = ud;
  if (nmemb && size > (size_t)-1 / nmemb) {
    b->toobig = true;
    return 0;
  }
  size_t n = size * nmemb;
  if (n > b->max - b->len) {
    b->toobig = true;
    return 0;
  }
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : (b->max < 4096 ? b->max + 1 : 4096);
    while (cap < b->len + n + 1)
      cap = cap > b->max / 2 ? b->max + 1 : cap * 2;
    char *p = realloc(b->p, cap);
    if (!p)
      return 0;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, ptr, n);
  b->len += n;
  b->p[b->len] = '\0';
  return n;
}
