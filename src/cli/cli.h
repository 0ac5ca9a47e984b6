/* The novacron command-line client.
 *
 * The shape follows wg(8): nc_cli_main() parses the global flags, looks the
 * noun and verb up in one table (cli.c), and calls that command's run
 * function, which lives in its own cmd_<noun>_<verb>.c. A run function gets
 * its own argv (argv[0] is the verb) and returns a process exit status.
 *
 * Everything the process would take from its surroundings (streams,
 * environment, clock, network) comes in through struct nc_cli_io, so the
 * unit tests run every command in-process against a fake transport. */
#ifndef NC_CLI_CLI_H
#define NC_CLI_CLI_H

#include "cli/http.h"
#include "util/clock.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Exit statuses; documented in docs/cli.md, so changing them breaks
 * scripts. */
enum nc_cli_exit {
  NC_CLI_EXIT_OK = 0,          /* success */
  NC_CLI_EXIT_FAIL = 1,        /* the server said no, or the operation failed */
  NC_CLI_EXIT_USAGE = 2,       /* the command line is wrong */
  NC_CLI_EXIT_UNREACHABLE = 3, /* novacrond could not be reached */
};

enum nc_cli_output { NC_CLI_OUTPUT_TABLE, NC_CLI_OUTPUT_JSON };

#define NC_CLI_DEFAULT_DATA_DIR "/var/lib/novacron"
/* Per-request limit when --timeout is not given (waiting for an operation
 * has no overall limit then; each poll is bounded). */
#define NC_CLI_DEFAULT_REQUEST_TIMEOUT_MS 30000
#define NC_CLI_CONNECT_TIMEOUT_MS 5000
/* Caps on files the CLI reads. */
#define NC_CLI_TOKEN_MAX 4096
#define NC_CLI_JSON_FILE_MAX (64 * 1024) /* the API's own body cap */

/* What the process hands the CLI. Borrowed for the duration of
 * nc_cli_main(); nothing is freed by the CLI. */
struct nc_cli_io {
  FILE *out, *err;
  int in_fd, out_fd;            /* raw descriptors for the console relay */
  bool in_tty, err_tty;         /* decides raw mode and progress lines */
  const char *env_endpoint;     /* $NOVACRON_ENDPOINT, or NULL */
  const char *env_token;        /* $NOVACRON_TOKEN, or NULL */
  const char *env_data_dir;     /* $NOVACRON_DATA_DIR, or NULL */
  struct nc_clock *clock;       /* NULL: the system clock */
  struct nc_cli_transport *transport; /* NULL: libcurl built from the flags */
  /* Sleeps between operation polls when the server answers early; NULL:
   * a real sleep. Tests pass one that advances their manual clock. */
  void (*sleep_ms)(void *arg, int64_t ms);
  void *sleep_arg;
};

struct nc_cli_cmd;

/* The state of one invocation, built by nc_cli_main from the global flags
 * and passed to the command. */
struct nc_cli {
  const struct nc_cli_io *io;
  FILE *out, *err;
  struct nc_clock *clock;
  const char *data_dir;
  char endpoint[640]; /* as the user would write it, for messages */
  struct nc_cli_endpoint ep;
  char *token; /* owned; wiped and freed at the end */
  enum nc_cli_output output;
  int64_t timeout_ms; /* --timeout, or 0 */
  struct nc_cli_transport *transport; /* built on first use */
  bool own_transport;
  const struct nc_cli_cmd *cmd; /* the command running, for usage messages */
};

struct nc_cli_cmd {
  const char *noun;    /* "vm", "image", "node", "cluster", "op"; NULL for a top-level verb */
  const char *verb;
  const char *args;    /* the synopsis after the verb */
  const char *summary; /* one line for the command list */
  const char *help;    /* option lines for --help, or NULL */
  int (*run)(struct nc_cli *cli, int argc, char **argv);
};

/* Runs one invocation: argv[0] is the program name. Returns the exit
 * status. */
int nc_cli_main(const struct nc_cli_io *io, int argc, char **argv);

/* The command table and lookups, for help and the tests. */
extern const struct nc_cli_cmd nc_cli_cmds[];
extern const size_t nc_cli_ncmds;
const struct nc_cli_cmd *nc_cli_find(const char *noun, const char *verb);
bool nc_cli_is_noun(const char *word);

/* Usage and help printing. */
void nc_cli_print_usage_line(FILE *f, const struct nc_cli_cmd *cmd);
void nc_cli_print_cmd_help(FILE *f, const struct nc_cli_cmd *cmd);
void nc_cli_print_noun_help(FILE *f, const char *noun);
void nc_cli_print_global_help(FILE *f);

/* Reports a usage error for the running command: "novacron vm create:
 * <message>", then its usage line. Returns NC_CLI_EXIT_USAGE. */
int nc_cli_usage_error(struct nc_cli *cli, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reports a failure as one line "novacron: <message>" (sanitized). Returns
 * NC_CLI_EXIT_FAIL. */
int nc_cli_fail(struct nc_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The transport, created from the endpoint and token on first use. Returns
 * NULL after printing why (exit NC_CLI_EXIT_FAIL). */
struct nc_cli_transport *nc_cli_transport(struct nc_cli *cli);

/* Per-request timeout: --timeout, or the default. */
int64_t nc_cli_request_timeout_ms(const struct nc_cli *cli);

/* ---- command run functions, one per cmd_<noun>_<verb>.c ---- */
int nc_cli_cmd_vm_create(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_list(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_show(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_start(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_stop(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_pause(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_resume(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_reboot(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_delete(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_console(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_snapshot(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_snapshots(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_restore(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_snapshot_delete(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_clone(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_vm_migrate(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_image_list(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_image_register(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_node_show(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_node_list(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_node_cordon(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_node_uncordon(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_node_drain(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_cluster_status(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_cluster_init(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_cluster_join(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_op_list(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_op_show(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_op_cancel(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_events(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_version(struct nc_cli *cli, int argc, char **argv);
int nc_cli_cmd_help(struct nc_cli *cli, int argc, char **argv);

/* Reads a token: the first line of a small file (at most NC_CLI_TOKEN_MAX
 * bytes read), without surrounding whitespace. Returns 0 with *out
 * malloc'ed (the caller wipes and frees it), -EFBIG over the cap, -EINVAL
 * when empty, or another negative errno. */
int nc__cli_read_token_file(const char *path, char **out);

#endif
