/* A parser for the text/event-stream format (WHATWG HTML, "Server-sent
 * events", section 9.2.6 "Interpreting an event stream"). It is fed the
 * body in arbitrary pieces and calls back once per complete event. Only
 * "event" and "data" matter to the CLI; "id" and "retry" are ignored. */
#ifndef NC_CLI_SSE_H
#define NC_CLI_SSE_H

#include <stddef.h>

/* Receives one event: its type ("message" when the stream named none) and
 * its data lines joined with '\n' (NUL-terminated, data[len] == 0). Both
 * are borrowed for the call. A non-zero return stops parsing and is
 * returned by nc_cli_sse_feed. */
typedef int (*nc_cli_sse_cb)(void *arg, const char *event, const char *data, size_t len);

struct nc_cli_sse;

/* max_line_bytes caps one line and max_event_bytes one event's data; input
 * past either is NC_E_TOOBIG. *out is the caller's, freed with
 * nc_cli_sse_destroy. Returns 0 or -ENOMEM. */
int nc_cli_sse_new(size_t max_line_bytes, size_t max_event_bytes, nc_cli_sse_cb cb, void *arg,
                   struct nc_cli_sse **out);

/* Parses len more bytes. Returns 0, NC_E_TOOBIG, -ENOMEM, or the callback's
 * non-zero value. After an error the parser must not be fed again. */
int nc_cli_sse_feed(struct nc_cli_sse *p, const char *buf, size_t len);

void nc_cli_sse_destroy(struct nc_cli_sse *p);

#endif
