/* One request to novacrond, and the rules for turning what happens into
 * output and an exit status (docs/cli.md, "Exit status"):
 *   2xx                      -> NC_CLI_EXIT_OK, the decoded JSON
 *   4xx/5xx with a JSON body -> NC_CLI_EXIT_FAIL, "novacron: <error.message>"
 *   no answer at all         -> NC_CLI_EXIT_UNREACHABLE, naming the endpoint
 * Error bodies follow docs/api.md, "Errors". */
#ifndef NC_CLI_CALL_H
#define NC_CLI_CALL_H

#include "cli/cli.h"

#include <jansson.h>

/* Sends method path with an optional JSON body (borrowed) and decodes the
 * JSON object answered. Returns NC_CLI_EXIT_OK with *out holding a new
 * reference the caller must json_decref (out may be NULL to discard it), or
 * another exit status after printing the reason; *out is then NULL. */
int nc_cli_call(struct nc_cli *cli, const char *method, const char *path, const json_t *body,
                json_t **out);

/* nc_cli_call with an explicit per-request timeout (0: none), for the
 * operation poller whose requests wait on the server. */
int nc__cli_call_timeout(struct nc_cli *cli, const char *method, const char *path,
                         const json_t *body, int64_t timeout_ms, json_t **out);

/* nc__cli_call_timeout for callers that expect some refusals: when failed
 * is not NULL, a non-2xx answer is not printed but returned in *failed
 * (status and body; the caller resets it) with NC_CLI_EXIT_FAIL. Any other
 * failure is printed as usual and leaves failed->status 0. */
int nc__cli_call_ex(struct nc_cli *cli, const char *method, const char *path, const json_t *body,
                    int64_t timeout_ms, struct nc_cli_http_resp *failed, json_t **out);

/* The "error.code" of an error answer (docs/api.md, "Errors"), or "" when
 * it has none. Always fills out. */
void nc__cli_error_code(const struct nc_cli_http_resp *resp, char *out, size_t n);

/* Like nc_cli_call but keeps the raw answer (for text/plain routes): on
 * NC_CLI_EXIT_OK, resp holds a 2xx answer the caller resets. */
int nc_cli_call_raw(struct nc_cli *cli, const char *method, const char *path, const char *accept,
                    struct nc_cli_http_resp *resp);

/* Prints why the transport failed (err from nc_cli_transport.request) with
 * a hint, and returns the exit status for it. */
int nc_cli_report_transport_error(struct nc_cli *cli, int err, const char *detail);

/* Prints a non-2xx answer as one "novacron: <message>" line (and the body
 * itself on stdout with --output json). Returns NC_CLI_EXIT_FAIL. */
int nc_cli_report_http_error(struct nc_cli *cli, const struct nc_cli_http_resp *resp);

/* Extracts a one-line, sanitized message from an error answer: the
 * "error.message" of a JSON error body, else the first line of a text body,
 * else "HTTP <status>". Returns 0 when the server supplied a message, or
 * -ENOENT when the fallback was used. Always fills out. */
int nc_cli_error_message(long status, const char *body, size_t len, char *out, size_t n);

/* Prints j indented on cli->out. */
void nc_cli_print_json(struct nc_cli *cli, const json_t *j);

/* Field access that tolerates missing or mistyped fields. */
const char *nc_cli_jstr(const json_t *o, const char *key); /* NULL if absent */
const char *nc_cli_jstr_or(const json_t *o, const char *key, const char *dflt);
/* An integer (or a real) field; dflt when absent. */
int64_t nc_cli_jint(const json_t *o, const char *key, int64_t dflt);
/* Age column text for an RFC 3339 field, "-" when absent or unparsable. */
void nc_cli_jage(struct nc_cli *cli, const json_t *o, const char *key, char *buf, size_t n);

#endif
