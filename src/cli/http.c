#include "cli/http.h"

#include "util/err.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nc_cli_http_resp_reset(struct nc_cli_http_resp *r) {
  if (r == NULL)
    return;
  free(r->body);
  memset(r, 0, sizeof *r);
}

bool nc_cli_http_unreachable(int err) {
  return err == -ENOENT || err == -ECONNREFUSED || err == -EACCES || err == -EHOSTUNREACH ||
         err == -ECONNRESET || err == -ETIMEDOUT || err == -ENOTSOCK || err == -ENETUNREACH;
}

int nc_cli_endpoint_parse(const char *s, struct nc_cli_endpoint *out) {
  memset(out, 0, sizeof *out);
  if (s == NULL)
    return -EINVAL;
  if (strncmp(s, "unix:", 5) == 0) {
    const char *path = s + 5;
    if (strncmp(path, "//", 2) == 0)
      path += 2; /* unix:///run/x.sock */
    if (*path == '\0')
      return -EINVAL;
    if (strlen(path) >= sizeof out->unix_path)
      return -ENAMETOOLONG;
    out->kind = NC_CLI_EP_UNIX;
    strcpy(out->unix_path, path);
    strcpy(out->url, "http://localhost");
    return 0;
  }
  if (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0) {
    size_t len = strlen(s);
    const char *host = strstr(s, "://") + 3;
    if (*host == '\0' || *host == '/')
      return -EINVAL;
    while (len > 0 && s[len - 1] == '/')
      len--;
    if (len >= sizeof out->url)
      return -ENAMETOOLONG;
    out->kind = NC_CLI_EP_HTTP;
    memcpy(out->url, s, len);
    out->url[len] = '\0';
    return 0;
  }
  return -EINVAL;
}

struct curl_transport {
  struct nc_cli_transport base;
  CURL *curl;
  struct nc_cli_endpoint ep;
  char *auth_header; /* "Authorization: Bearer ..." or NULL */
  int64_t connect_timeout_ms;
};

/* Per-transfer state shared with the libcurl callbacks. */
struct xfer {
  CURL *curl;
  struct nc_cli_http_resp *resp;
  nc_cli_stream_cb cb; /* NULL: collect everything */
  void *cb_arg;
  int cb_rc;
  bool toobig;
  size_t cap;
};

static bool status_ok(long status) { return status >= 200 && status < 300; }

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg) {
  struct xfer *x = arg;
  size_t n = size * nmemb;

  if (x->cb != NULL) {
    long status = 0;
    curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status_ok(status)) {
      x->cb_rc = x->cb(x->cb_arg, data, n);
      return x->cb_rc == 0 ? n : 0;
    }
  }
  struct nc_cli_http_resp *r = x->resp;
  if (n > x->cap - r->len) {
    x->toobig = true;
    return 0; /* makes libcurl stop with CURLE_WRITE_ERROR */
  }
  char *b = realloc(r->body, r->len + n + 1);
  if (b == NULL) {
    x->toobig = true;
    return 0;
  }
  memcpy(b + r->len, data, n);
  r->len += n;
  b[r->len] = '\0';
  r->body = b;
  return n;
}

static int map_error(CURL *curl, CURLcode cc) {
  long os_errno = 0;
  switch (cc) {
  case CURLE_COULDNT_CONNECT:
    curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
    if (os_errno == ENOENT || os_errno == EACCES || os_errno == ENOTSOCK ||
        os_errno == ENETUNREACH || os_errno == EHOSTUNREACH)
      return (int)-os_errno;
    return -ECONNREFUSED;
  case CURLE_COULDNT_RESOLVE_HOST:
    return -EHOSTUNREACH;
  case CURLE_OPERATION_TIMEDOUT:
    return -ETIMEDOUT;
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
    return -ECONNRESET;
  default:
    return NC_E_PROTO;
  }
}

static int perform(struct nc_cli_transport *t, const struct nc_cli_http_req *req,
                   nc_cli_stream_cb cb, void *cb_arg, struct nc_cli_http_resp *resp, char *errbuf,
                   size_t errlen) {
  struct curl_transport *ct = t->data;
  CURL *c = ct->curl;
  struct curl_slist *headers = NULL, *h;
  char url[2048], accept[160], curl_err[CURL_ERROR_SIZE] = "";
  struct xfer x = {.curl = c, .resp = resp, .cb = cb, .cb_arg = cb_arg, .cap = NC_CLI_BODY_MAX};
  int rc = 0;

  memset(resp, 0, sizeof *resp);
  if (errlen > 0)
    errbuf[0] = '\0';
  if ((size_t)snprintf(url, sizeof url, "%s%s", ct->ep.url, req->path) >= sizeof url) {
    snprintf(errbuf, errlen, "request path too long");
    return -ENAMETOOLONG;
  }
  snprintf(accept, sizeof accept, "Accept: %s", req->accept ? req->accept : "application/json");

  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)ct->connect_timeout_ms);
  if (req->timeout_ms > 0)
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
  if (ct->ep.kind == NC_CLI_EP_UNIX)
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, ct->ep.unix_path);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "novacron-cli");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);

  const char *lines[] = {accept, "Expect:", ct->auth_header,
                         req->body ? "Content-Type: application/json" : "Content-Type:"};
  for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
    if (lines[i] == NULL)
      continue;
    h = curl_slist_append(headers, lines[i]);
    if (h == NULL) {
      rc = -ENOMEM;
      snprintf(errbuf, errlen, "out of memory");
      goto out;
    }
    headers = h;
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);

  if (strcmp(req->method, "GET") == 0) {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else {
    if (strcmp(req->method, "POST") == 0 || req->body != NULL) {
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                       (curl_off_t)(req->body ? req->body_len : 0));
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body ? req->body : "");
    }
    if (strcmp(req->method, "POST") != 0)
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
  }

  CURLcode cc = curl_easy_perform(c);
  if (cc != CURLE_OK) {
    if (x.toobig) {
      rc = NC_E_TOOBIG;
      snprintf(errbuf, errlen, "the answer to %s %s is larger than the %zu MiB cap", req->method,
               req->path, NC_CLI_BODY_MAX >> 20);
    } else if (x.cb_rc != 0) {
      rc = x.cb_rc;
      snprintf(errbuf, errlen, "stopped reading the stream");
    } else {
      rc = map_error(c, cc);
      snprintf(errbuf, errlen, "%s", curl_err[0] ? curl_err : curl_easy_strerror(cc));
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    nc_cli_http_resp_reset(resp);
    resp->status = status; /* when the headers had arrived, else 0 */
    goto out;
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
  char *ctype = NULL;
  if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype) == CURLE_OK && ctype != NULL)
    snprintf(resp->content_type, sizeof resp->content_type, "%s", ctype);
  if (resp->body == NULL && !(cb != NULL && status_ok(resp->status))) {
    resp->body = calloc(1, 1);
    if (resp->body == NULL) {
      rc = -ENOMEM;
      snprintf(errbuf, errlen, "out of memory");
    }
  }
out:
  curl_slist_free_all(headers);
  return rc;
}

static int ct_request(struct nc_cli_transport *t, const struct nc_cli_http_req *req,
                      struct nc_cli_http_resp *resp, char *errbuf, size_t errlen) {
  return perform(t, req, NULL, NULL, resp, errbuf, errlen);
}

static int ct_stream(struct nc_cli_transport *t, const struct nc_cli_http_req *req,
                     nc_cli_stream_cb cb, void *arg, struct nc_cli_http_resp *resp, char *errbuf,
                     size_t errlen) {
  return perform(t, req, cb, arg, resp, errbuf, errlen);
}

static void ct_destroy(struct nc_cli_transport *t) {
  struct curl_transport *ct = t->data;
  curl_easy_cleanup(ct->curl);
  if (ct->auth_header != NULL) {
    /* The token is a secret: do not leave it in freed memory. */
    memset(ct->auth_header, 0, strlen(ct->auth_header));
    free(ct->auth_header);
  }
  free(ct);
  curl_global_cleanup();
}

int nc_cli_curl_transport_new(const struct nc_cli_endpoint *ep, const char *token,
                              int64_t connect_timeout_ms, struct nc_cli_transport **out) {
  struct curl_transport *ct;

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return NC_E_PROTO;
  ct = calloc(1, sizeof *ct);
  if (ct == NULL)
    goto fail;
  ct->curl = curl_easy_init();
  if (ct->curl == NULL)
    goto fail;
  ct->ep = *ep;
  ct->connect_timeout_ms = connect_timeout_ms;
  if (token != NULL && *token != '\0') {
    size_t n = strlen("Authorization: Bearer ") + strlen(token) + 1;
    ct->auth_header = malloc(n);
    if (ct->auth_header == NULL)
      goto fail;
    snprintf(ct->auth_header, n, "Authorization: Bearer %s", token);
  }
  ct->base.version = 1;
  ct->base.data = ct;
  ct->base.request = ct_request;
  ct->base.stream = ct_stream;
  ct->base.destroy = ct_destroy;
  *out = &ct->base;
  return 0;
fail:
  if (ct != NULL) {
    curl_easy_cleanup(ct->curl);
    free(ct);
  }
  curl_global_cleanup();
  return -ENOMEM;
}

void nc_cli_transport_destroy(struct nc_cli_transport *t) {
  if (t != NULL && t->destroy != NULL)
    t->destroy(t);
}
