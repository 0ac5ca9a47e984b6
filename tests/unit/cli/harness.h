/* Runs the CLI in-process for the unit tests: a fake transport that
 * records every request and answers from a script, captured stdout and
 * stderr, and a manual clock that the poller's sleeps advance. */
#ifndef NC_TEST_CLI_HARNESS_H
#define NC_TEST_CLI_HARNESS_H

#include "cli/cli.h"

#include <stdbool.h>
#include <stddef.h>

#define FAKE_MAX 64

struct fake_req {
  char method[16];
  char path[1024];
  char accept[64];
  char *body; /* NULL when none */
  int64_t timeout_ms;
};

struct fake_reply {
  long status;
  const char *body;
  int err; /* non-zero: the transport fails with this code instead */
};

struct harness {
  struct nc_cli_transport transport;
  struct fake_reply replies[FAKE_MAX];
  int nreplies, next; /* the last reply repeats when the script runs out */
  struct fake_req reqs[FAKE_MAX];
  int nreqs;
  struct nc_clock_manual clock;
  struct nc_cli_io io;
  int64_t slept_ms;
  /* Results of the last run. */
  int rc;
  char *out, *err;
  size_t out_len, err_len;
};

/* Resets h: no replies, no requests; env unset; not a tty. */
void h_init(struct harness *h);
void h_free(struct harness *h);
/* Queues an answer. body is borrowed and must outlive the run. */
void h_reply(struct harness *h, long status, const char *body);
void h_fail(struct harness *h, int err);
/* Runs "novacron" + the NULL-terminated words; returns the exit status. */
int h_run(struct harness *h, ...) __attribute__((sentinel));
/* Same with an argv vector. */
int h_runv(struct harness *h, int argc, const char *const *argv);

/* Wall time of the manual clock as RFC 3339, minus ago_s seconds. */
void h_time(const struct harness *h, int64_t ago_s, char *buf, size_t n);

#endif
