/* Pieces every command uses: building a route path from user input, the
 * request-then-follow-the-operation tail of mutating commands, and the
 * whole of the simple ones ("vm snapshot NAME SNAP", "vm delete NAME"). */
#ifndef NC_CLI_ACTION_H
#define NC_CLI_ACTION_H

#include "cli/args.h"
#include "cli/cli.h"

#include <jansson.h>

/* nc_cli_pathf for commands: on failure reports a usage error (a name too
 * long for a path) and returns NC_CLI_EXIT_USAGE; 0 on success. */
int nc__cli_path(struct nc_cli *cli, char *buf, size_t n, const char *fmt, ...);

/* Sends method path body (borrowed, may be NULL), then follows the
 * operation the answer names (its "operation" member, or the answer itself
 * when it is an operation), printing `done` on success. Returns the exit
 * status. */
int nc__cli_mutate(struct nc_cli *cli, const char *method, const char *path, const json_t *body,
                   bool no_wait, const char *done);

/* The second half of nc__cli_mutate, for a command that sent the request
 * itself: follows the operation resp (borrowed) names. Returns the exit
 * status. */
int nc__cli_follow_answer(struct nc_cli *cli, const json_t *resp, bool no_wait,
                          const char *done);

/* What a mutating command sends, as its prepare function builds it. */
struct nc__cli_request {
  char path[512]; /* the route, built with nc__cli_path */
  char done[512]; /* printed when the operation succeeds */
  json_t *body;   /* NULL, or a new reference that nc__cli_run_mutation releases */
};

/* A command of the form "VERB NAME [ARG] [flags] [--no-wait]": all it adds
 * to nc__cli_run_mutation is its flags and how to build the request. */
struct nc__cli_mutation {
  const char *method;            /* "POST", "DELETE", ... */
  const char *const *pos_names;  /* npos names for messages, all required */
  int npos;                      /* 1 or 2 */
  const struct nc_cli_opt *opts; /* flags besides --no-wait, ending with {NULL}; or NULL */
  /* Called once the command line parsed, with pos[0..npos) (argv's
   * strings) and the opts' destinations set. Fills req and returns 0, or
   * returns the exit status after printing why (a usage error). A body it
   * set is released either way. */
  int (*prepare)(struct nc_cli *cli, const char *const *pos, void *arg,
                 struct nc__cli_request *req);
  void *arg; /* passed to prepare as is: typically the opts' destinations */
};

/* How many flags a nc__cli_mutation may list (--no-wait comes on top). */
#define NC__CLI_MUTATION_OPTS_MAX 6

/* Runs the mutating command m describes with its argv (argv[0] is the
 * verb): parses the command line (printing help or a usage error), calls
 * m->prepare, then sends m->method with req.path and req.body and follows
 * the operation as nc__cli_mutate does. Nothing outlives the call. Returns
 * the exit status. */
int nc__cli_run_mutation(struct nc_cli *cli, int argc, char **argv,
                         const struct nc__cli_mutation *m);

/* The whole of "vm <action> NAME [--no-wait]": POST
 * /v1/vms/{name}/{action}, and `vm "NAME" <done_word>` on success. */
int nc__cli_vm_simple_action(struct nc_cli *cli, int argc, char **argv, const char *action,
                             const char *done_word);

#endif
