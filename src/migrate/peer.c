#include "migrate/peer.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/capbuf.h"
#include "util/err.h"

int nc__peer_call(const char *method, const char *base, const char *path, const char *token,
                  json_t *body, int timeout_ms, long *status, json_t **out) {
  CURL *c = curl_easy_init();
  if (!c)
    return -ENOMEM;
  char url[512], auth[600];
  snprintf(url, sizeof url, "http://%s%s", base, path);
  struct curl_slist *hdrs = NULL;
  if (token && token[0]) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    hdrs = curl_slist_append(hdrs, auth);
  }
  /* A call between nodes is answered by the node it reaches: in a cluster
   * it must not be forwarded to a VM's owner (the migration's hand-over
   * check asks the destination what *it* holds). */
  hdrs = curl_slist_append(hdrs, NC_PEER_DIRECT_HEADER ": 1");
  char *text = NULL;
  if (body) {
    text = json_dumps(body, JSON_COMPACT);
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text ? text : "{}");
  }
  struct nc_capbuf b = {.max = NC_PEER_RESPONSE_MAX};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, nc_capbuf_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms < 5000 ? timeout_ms : 5000));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
  CURLcode cc = curl_easy_perform(c);
  int rc = 0;
  if (b.toobig) {
    rc = NC_E_TOOBIG;
  } else if (cc == CURLE_COULDNT_CONNECT) {
    long oserr = 0; /* refused, unreachable, timed out: say which */
    curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &oserr);
    rc = oserr > 0 ? -(int)oserr : -ECONNREFUSED;
  } else if (cc == CURLE_OPERATION_TIMEDOUT) {
    rc = -ETIMEDOUT;
  } else if (cc != CURLE_OK) {
    rc = -EHOSTUNREACH;
  } else {
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    *out = b.p ? json_loadb(b.p, b.len, 0, NULL) : NULL;
  }
  free(b.p);
  free(text);
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(c);
  return rc;
}
