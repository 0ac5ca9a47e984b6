/* How the CLI reaches novacrond: the endpoint syntax, and a small transport
 * vtable so tests can replace the network. The real transport is libcurl
 * over a unix socket or TCP (docs/api.md, "Reaching the API"). */
#ifndef NC_CLI_HTTP_H
#define NC_CLI_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest answer the CLI accepts. A bigger one is a clean NC_E_TOOBIG
 * error, never an unbounded allocation. */
#define NC_CLI_BODY_MAX ((size_t)16 << 20)

enum nc_cli_ep_kind { NC_CLI_EP_HTTP, NC_CLI_EP_UNIX };

struct nc_cli_endpoint {
  enum nc_cli_ep_kind kind;
  /* Base URL without a trailing slash: "http://10.0.0.5:8443", or
   * "http://localhost" for a unix socket. */
  char url[512];
  char unix_path[108]; /* sizeof sun_path; empty for HTTP */
};

/* Parses "http://HOST:PORT[/prefix]", "https://...", "unix:/PATH" or
 * "unix:///PATH". Returns 0, or -EINVAL (unknown scheme, empty path) or
 * -ENAMETOOLONG (socket path longer than sun_path allows). */
int nc_cli_endpoint_parse(const char *s, struct nc_cli_endpoint *out);

struct nc_cli_http_req {
  const char *method; /* "GET", "POST", "DELETE" */
  const char *path;   /* "/v1/vms/web-1", already percent-encoded */
  const char *body;   /* JSON, or NULL for no body */
  size_t body_len;
  const char *accept; /* NULL means application/json */
  int64_t timeout_ms; /* the whole exchange; 0 means no limit */
};

struct nc_cli_http_resp {
  long status;
  char *body; /* NUL-terminated; owned by the response */
  size_t len;
  char content_type[128];
};

/* Frees the body and zeroes the response; safe on a zeroed response. */
void nc_cli_http_resp_reset(struct nc_cli_http_resp *r);

/* Called with each piece of a streamed body. A non-zero return stops the
 * stream, and stream() then returns that value. */
typedef int (*nc_cli_stream_cb)(void *arg, const char *data, size_t len);

struct nc_cli_transport {
  int version; /* 1 */
  void *data;
  /* Sends req and collects the answer. Returns 0 once an HTTP answer
   * arrived, whatever its status; resp then owns a body the caller releases
   * with nc_cli_http_resp_reset. Returns a negative code when there is no
   * answer: -ENOENT, -ECONNREFUSED, -EACCES, -EHOSTUNREACH, -ECONNRESET or
   * -ETIMEDOUT when the daemon could not be reached or stopped answering,
   * NC_E_TOOBIG when the answer is over NC_CLI_BODY_MAX, NC_E_PROTO for
   * anything else. errbuf then holds a sentence saying what happened, and
   * resp holds no body, only the status if the headers had arrived. */
  int (*request)(struct nc_cli_transport *t, const struct nc_cli_http_req *req,
                 struct nc_cli_http_resp *resp, char *errbuf, size_t errlen);
  /* Like request(), but a 2xx body is handed to cb as it arrives instead of
   * being collected (resp->body stays NULL); any other status is collected
   * into resp as usual. Returns 0 when the server ended the stream, or the
   * callback's non-zero value. */
  int (*stream)(struct nc_cli_transport *t, const struct nc_cli_http_req *req,
                nc_cli_stream_cb cb, void *arg, struct nc_cli_http_resp *resp, char *errbuf,
                size_t errlen);
  /* Releases the transport; NULL-safe via nc_cli_transport_destroy. */
  void (*destroy)(struct nc_cli_transport *t);
};

/* True for the codes request() uses for "the daemon could not be reached". */
bool nc_cli_http_unreachable(int err);

/* Creates the libcurl transport. token (may be NULL) is sent as
 * "Authorization: Bearer"; it is copied. connect_timeout_ms bounds the
 * connection set-up. *out is the caller's, released with
 * nc_cli_transport_destroy. Returns 0, -ENOMEM or NC_E_PROTO (libcurl could
 * not start). */
int nc_cli_curl_transport_new(const struct nc_cli_endpoint *ep, const char *token,
                              int64_t connect_timeout_ms, struct nc_cli_transport **out);

void nc_cli_transport_destroy(struct nc_cli_transport *t);

#endif
