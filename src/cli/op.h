/* Operations (docs/api.md, "Operation"): mutating calls answer with one,
 * and the CLI waits for it by default by polling
 * GET /v1/operations/{id}?wait_s=N, which the server holds until the
 * operation finishes or N seconds pass. */
#ifndef NC_CLI_OP_H
#define NC_CLI_OP_H

#include "cli/cli.h"

#include <jansson.h>

/* Sleeps ms between polls: cli->io->sleep_ms when set (the tests' manual
 * clock), else a real sleep. */
void nc__cli_sleep_ms(struct nc_cli *cli, int64_t ms);

/* True for "succeeded", "failed" and "cancelled". */
bool nc_cli_op_finished(const json_t *op);

/* Waits until operation id finishes, or --timeout passes. Shows progress on
 * stderr when it is a tty. Returns NC_CLI_EXIT_OK with *final set (a
 * reference the caller owns) whatever the operation's own outcome; another
 * exit status after printing why (then *final is NULL). */
int nc_cli_op_wait(struct nc_cli *cli, const char *id, json_t **final);

/* Prints the outcome of a finished operation: nothing for success, else
 * "novacron: <error message>" / "... was cancelled". Returns
 * NC_CLI_EXIT_OK or NC_CLI_EXIT_FAIL. */
int nc_cli_op_outcome(struct nc_cli *cli, const json_t *op);

/* "45%" for an operation's progress (0..1), "-" when it has none. */
void nc_cli_op_progress(const json_t *op, char *buf, size_t n);

/* Prints an operation as a "Key: value" block on cli->out. */
void nc_cli_op_print(struct nc_cli *cli, const json_t *op);

/* The tail of every mutating command. resp is the server's answer (printed
 * as is for --output json --no-wait) and op the operation in it, or NULL
 * when there is nothing to wait for. Without no_wait it waits, then prints
 * `done` (plus how long the operation took) or the failure; with no_wait it
 * prints the operation id. Both are borrowed. Returns the exit status. */
int nc_cli_op_follow(struct nc_cli *cli, const json_t *resp, const json_t *op, bool no_wait,
                     const char *done);

#endif
