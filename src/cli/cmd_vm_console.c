/* novacron vm console NAME: attach to the VM's serial console.
 * novacron vm console NAME --log: print the tail of its serial log.
 *
 * The console is QEMU's serial chardev, a unix socket on the VM's host
 * (GET /v1/vms/{name} -> console.socket), so attaching works only there.
 * On a terminal the relay runs in raw mode and Ctrl-] leaves; the terminal
 * is restored on every way out, signals included. Without a terminal
 * (piped input, as tests do) it relays until stdin ends, then waits for the
 * guest's output to go quiet for --drain seconds (at most five times that). */
#include "cli/action.h"
#include "cli/args.h"
#include "cli/call.h"
#include "cli/console.h"
#include "cli/fmt.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

/* After piped input ends: leave once the guest was quiet for the drain
 * time, and at the latest NC_CLI_DRAIN_MAX_FACTOR drain times after the
 * input ended (a guest that prints heartbeats is never quiet). */
#define NC_CLI_DRAIN_QUIET_MS 1000
#define NC_CLI_DRAIN_MAX_FACTOR 5

/* Set by the signal handler; a global because signal handlers get no
 * argument. Only this file touches it. */
static volatile sig_atomic_t g_console_signal;

static void on_signal(int sig) { g_console_signal = sig; }

static const int k_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define NSIGNALS (sizeof k_signals / sizeof *k_signals)

struct session {
  struct sigaction old[NSIGNALS];
  struct sigaction old_pipe;
  struct termios saved;
  bool raw;
};

/* Raw mode as cfmakeraw(3), except output post-processing stays on so our
 * own "\n" messages still start at column 0. */
static int enter_raw(int fd, struct session *s) {
  struct termios t;
  if (tcgetattr(fd, &s->saved) != 0)
    return -errno;
  t = s->saved;
  cfmakeraw(&t);
  t.c_oflag |= OPOST;
  if (tcsetattr(fd, TCSAFLUSH, &t) != 0)
    return -errno;
  s->raw = true;
  return 0;
}

static void install_signals(struct session *s) {
  struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: poll sees EINTR */
  struct sigaction ign = {.sa_handler = SIG_IGN};
  sigemptyset(&sa.sa_mask);
  sigemptyset(&ign.sa_mask);
  g_console_signal = 0;
  for (size_t i = 0; i < NSIGNALS; i++)
    sigaction(k_signals[i], &sa, &s->old[i]);
  sigaction(SIGPIPE, &ign, &s->old_pipe);
}

static void restore(int fd, struct session *s) {
  if (s->raw)
    tcsetattr(fd, TCSAFLUSH, &s->saved);
  s->raw = false;
  for (size_t i = 0; i < NSIGNALS; i++)
    sigaction(k_signals[i], &s->old[i], NULL);
  sigaction(SIGPIPE, &s->old_pipe, NULL);
}

static int print_log(struct nc_cli *cli, const char *name, const char *tail_bytes) {
  struct nc_cli_http_resp resp = {0};
  char path[512];
  uint64_t n = 0;
  int rc;

  if (tail_bytes != NULL && nc_cli_parse_size(tail_bytes, &n) != 0)
    return nc_cli_usage_error(cli, "--tail-bytes \"%s\" is not a size (try 4096 or 64K)",
                              tail_bytes);
  rc = nc__cli_path(cli, path, sizeof path, "/v1/vms/%s/console", name);
  if (rc != 0)
    return rc;
  if (tail_bytes != NULL)
    snprintf(path + strlen(path), sizeof path - strlen(path), "?tail_bytes=%" PRIu64, n);
  rc = nc_cli_call_raw(cli, "GET", path, "text/plain", &resp);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_utf8_scrub(resp.body, resp.len);
    json_t *j = json_pack("{s:s, s:s%}", "vm", name, "log", resp.body, resp.len);
    nc_cli_print_json(cli, j);
    json_decref(j);
  } else {
    /* The guest's own output, as the console would have shown it. */
    fwrite(resp.body, 1, resp.len, cli->out);
  }
  nc_cli_http_resp_reset(&resp);
  return NC_CLI_EXIT_OK;
}

int nc_cli_cmd_vm_console(struct nc_cli *cli, int argc, char **argv) {
  bool log = false;
  const char *tail_bytes = NULL, *drain = NULL;
  const struct nc_cli_opt opts[] = {{"log", NC_CLI_OPT_BOOL, &log},
                                    {"tail-bytes", NC_CLI_OPT_STR, &tail_bytes},
                                    {"drain", NC_CLI_OPT_STR, &drain},
                                    {NULL, 0, NULL}};
  static const char *const names[] = {"NAME"};
  const struct nc_cli_argspec spec = {opts, names, 1, 1};
  const char *pos[1];
  char path[512];
  int64_t drain_ms = NC_CLI_DRAIN_QUIET_MS;
  json_t *vm = NULL;
  struct session s = {0};
  int rc, fd = -1;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  if (tail_bytes != NULL && !log)
    return nc_cli_usage_error(cli, "--tail-bytes goes with --log");
  if (drain != NULL && nc_cli_parse_duration(drain, &drain_ms) != 0)
    return nc_cli_usage_error(cli, "--drain \"%s\" is not a duration (try 1 or 500ms)", drain);
  if (log)
    return print_log(cli, pos[0], tail_bytes);

  rc = nc__cli_path(cli, path, sizeof path, "/v1/vms/%s", pos[0]);
  if (rc != 0)
    return rc;
  rc = nc_cli_call(cli, "GET", path, NULL, &vm);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  const char *sock = nc_cli_jstr(json_object_get(vm, "console"), "socket");
  const char *state = nc_cli_jstr_or(vm, "state", "unknown");
  const char *node = nc_cli_jstr_or(vm, "node", "unknown");
  if (sock == NULL || *sock == '\0') {
    rc = nc_cli_fail(cli, "vm \"%s\" has no console socket (it is %s); start it first", pos[0],
                     state);
    goto out;
  }
  fd = nc_cli_console_connect(sock);
  if (fd < 0) {
    rc = nc_cli_fail(cli, "vm \"%s\": cannot connect to its console socket %s: %s", pos[0], sock,
                     strerror(-fd));
    if (fd == -EACCES)
      fprintf(cli->err, "hint: the socket is root's: run as root\n");
    else
      fprintf(cli->err,
              "hint: the console is a local unix socket on the VM's host: run this on node "
              "\"%s\" (the VM is %s); 'novacron vm console %s --log' works from anywhere\n",
              node, state, pos[0]);
    goto out;
  }

  const struct nc_cli_io *io = cli->io;
  struct nc_cli_relay relay = {
      .in_fd = io->in_fd,
      .out_fd = io->out_fd,
      .sock_fd = fd,
      .escape = io->in_tty,
      .drain_quiet_ms = drain_ms,
      .drain_max_ms = drain_ms * NC_CLI_DRAIN_MAX_FACTOR,
      .clock = cli->clock,
      .stop = &g_console_signal,
  };
  enum nc_cli_relay_end end = NC_CLI_RELAY_INPUT_DONE;

  fflush(cli->out);
  install_signals(&s);
  if (io->in_tty) {
    fprintf(cli->err, "Connected to the serial console of vm \"%s\". Escape: Ctrl-]\n", pos[0]);
    fflush(cli->err);
    int err = enter_raw(io->in_fd, &s);
    if (err != 0) {
      restore(io->in_fd, &s);
      rc = nc_cli_fail(cli, "cannot put the terminal in raw mode: %s", strerror(-err));
      goto out;
    }
  }
  int err = nc_cli_console_relay(&relay, &end);
  restore(io->in_fd, &s);
  if (err != 0) {
    rc = nc_cli_fail(cli, "vm \"%s\" console: %s", pos[0], strerror(-err));
    goto out;
  }
  rc = NC_CLI_EXIT_OK;
  if (end == NC_CLI_RELAY_SIGNAL) {
    int sig = g_console_signal;
    close(fd);
    json_decref(vm);
    /* Die of the signal as if we had not caught it, now the terminal is
     * back. */
    fflush(NULL);
    signal(sig, SIG_DFL);
    raise(sig);
    return 128 + sig;
  }
  if (io->in_tty) {
    if (end == NC_CLI_RELAY_PEER_CLOSED)
      fprintf(cli->err, "\nThe console of vm \"%s\" closed (did the VM stop?)\n", pos[0]);
    else
      fprintf(cli->err, "\nLeft the console of vm \"%s\".\n", pos[0]);
  }
out:
  if (fd >= 0)
    close(fd);
  json_decref(vm);
  return rc;
}
