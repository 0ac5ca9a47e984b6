#include "cli/cli.h"

#include "cli/args.h"
#include "cli/fmt.h"
#include "nc_version.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_HELP "  --no-wait              print the operation id instead of waiting for it\n"

/* The command table (wg's `subcommands[]`). Order is the order of help. */
const struct nc_cli_cmd nc_cli_cmds[] = {
    {"vm", "create",
     "NAME --image IMG [--vcpus N] [--memory SIZE] [--label K=V]... [--nic user|none] "
     "[--cmdline-append STR] [--machine TYPE] [--start] [--no-wait] [--node NODE] [--ha [--ha-priority N]] "
     "[--anti-affinity G]... [--affinity G]... [--soft-anti-affinity G]... "
     "[--soft-affinity G]... [--spread-zones G]... [--require-label K=V]... [--zone Z] "
     "[--explain]",
     "define a VM (and start it with --start)",
     "  --image IMG            registered image to boot (required)\n"
     "  --vcpus N              virtual CPUs (server default when omitted)\n"
     "  --memory SIZE          memory, e.g. 256M or 2G\n"
     "  --label K=V            a label; repeat for more\n"
     "  --nic user|none        network: QEMU user networking, or none\n"
     "  --cmdline-append STR   appended to the image's kernel command line\n"
     "  --machine TYPE         QEMU machine type (default: what pc is on the node's QEMU)\n"
     "  --start                start it once defined\n" WAIT_HELP
     "\ncluster only (see docs/scheduling.md):\n"
     "  --node NODE            put it on this node (placement rules still apply)\n"
     "  --ha                   restart it on another node if its node dies\n"
     "  --ha-priority N        with --ha: 0 to 1000, higher restarts first\n"
     "  --anti-affinity G      never on the same host as another VM of group G\n"
     "  --affinity G           only on a host that runs group G\n"
     "  --soft-anti-affinity G prefer a host without group G\n"
     "  --soft-affinity G      prefer a host with group G\n"
     "  --spread-zones G       never in the same zone as another VM of group G\n"
     "  --require-label K=V    only on nodes labelled K=V; repeat for more\n"
     "  --zone Z               prefer nodes in zone Z\n"
     "  --explain              create nothing: show how each node would be judged\n",
     nc_cli_cmd_vm_create},
    {"vm", "list", "", "list VMs: NAME STATE VCPUS MEMORY IMAGE NODE AGE", NULL, nc_cli_cmd_vm_list},
    {"vm", "show", "NAME", "show one VM in detail", NULL, nc_cli_cmd_vm_show},
    {"vm", "start", "NAME [--no-wait]", "start a VM", WAIT_HELP, nc_cli_cmd_vm_start},
    {"vm", "stop", "NAME [--force] [--timeout-s N] [--no-wait]",
     "stop a VM (ACPI shutdown, then power off after the timeout)",
     "  --force                power off at once, without asking the guest\n"
     "  --timeout-s N          seconds to wait for the guest before powering off\n" WAIT_HELP,
     nc_cli_cmd_vm_stop},
    {"vm", "pause", "NAME [--no-wait]", "pause a running VM's vCPUs", WAIT_HELP, nc_cli_cmd_vm_pause},
    {"vm", "resume", "NAME [--no-wait]", "resume a paused VM", WAIT_HELP, nc_cli_cmd_vm_resume},
    {"vm", "reboot", "NAME [--no-wait]", "reboot a VM", WAIT_HELP, nc_cli_cmd_vm_reboot},
    {"vm", "delete", "NAME [--no-wait]", "stop a VM if needed and remove it with its disk",
     WAIT_HELP, nc_cli_cmd_vm_delete},
    {"vm", "console", "NAME [--log] [--tail-bytes N] [--drain SECONDS]",
     "attach to a VM's serial console (Ctrl-] leaves), or print its log",
     "  --log                  print the tail of the serial log instead of attaching\n"
     "  --tail-bytes N         with --log: how much of the log (server default 64 KiB)\n"
     "  --drain SECONDS        stdin not a tty: after it ends, leave once the guest was\n"
     "                         quiet this long (default 1; at most 5x that in all)\n",
     nc_cli_cmd_vm_console},
    {"vm", "snapshot", "NAME SNAP [--no-wait]", "take snapshot SNAP of a VM", WAIT_HELP,
     nc_cli_cmd_vm_snapshot},
    {"vm", "snapshots", "NAME", "list a VM's snapshots", NULL, nc_cli_cmd_vm_snapshots},
    {"vm", "restore", "NAME SNAP [--no-wait]", "roll a VM back to snapshot SNAP", WAIT_HELP,
     nc_cli_cmd_vm_restore},
    {"vm", "snapshot-delete", "NAME SNAP [--no-wait]", "delete snapshot SNAP of a VM", WAIT_HELP,
     nc_cli_cmd_vm_snapshot_delete},
    {"vm", "clone", "NAME NEWNAME [--start] [--no-wait]", "copy a VM to a new one",
     "  --start                start the clone once made\n" WAIT_HELP, nc_cli_cmd_vm_clone},
    {"vm", "migrate",
     "NAME --to HOST:PORT [--token T | --token-file FILE] [--mode auto|datacenter|hybrid|internet] "
     "[--streams N] [--max-downtime-ms N] [--timeout-s N] [--no-wait]",
     "live-migrate a running VM to another node",
     "  --to HOST:PORT         the destination novacrond's API address (required)\n"
     "  --token T              bearer token for the destination's API (default: this\n"
     "                         node's cluster token)\n"
     "  --token-file FILE      read that token from FILE\n"
     "  --mode MODE            auto (measure the link; default), datacenter, hybrid or\n"
     "                         internet\n"
     "  --streams N            parallel DWCP streams, 1 to 16 (server default 4)\n"
     "  --max-downtime-ms N    longest pause allowed at the switch, 10 to 60000\n"
     "                         (default 300)\n"
     "  --timeout-s N          give up (the VM keeps running here) if not converged by\n"
     "                         then, 5 to 86400 (default 300)\n" WAIT_HELP,
     nc_cli_cmd_vm_migrate},
    {"image", "list", "", "list registered images", NULL, nc_cli_cmd_image_list},
    {"image", "register",
     "NAME --kernel K [--initrd I] [--disk D] [--cmdline C] | [NAME] --from-json FILE",
     "register a bootable image (paths are on the daemon's host)",
     "  --kernel PATH          kernel to boot (required unless in --from-json)\n"
     "  --initrd PATH          initramfs\n"
     "  --disk PATH            base disk image\n"
     "  --cmdline STR          kernel command line\n"
     "  --from-json FILE       read name/kernel/initrd/disk/cmdline from an image.json;\n"
     "                         relative paths in it are relative to the file, and flags\n"
     "                         given too override its fields\n",
     nc_cli_cmd_image_register},
    {"node", "show", "", "show this node", NULL, nc_cli_cmd_node_show},
    {"node", "list", "", "list the cluster's nodes: NAME STATE ZONE VCPUS MEMORY VMS CONTROLLER",
     NULL, nc_cli_cmd_node_list},
    {"node", "cordon", "NODE", "place no new VMs on a node (its VMs stay)", NULL,
     nc_cli_cmd_node_cordon},
    {"node", "uncordon", "NODE", "let the scheduler use a node again (ends a drain)", NULL,
     nc_cli_cmd_node_uncordon},
    {"node", "drain", "NODE [--no-wait]", "move every VM off a node, and wait until it is empty",
     "  --no-wait              start the drain and return; follow it with 'node list'\n",
     nc_cli_cmd_node_drain},
    {"cluster", "status", "", "show the controller and every node of the cluster", NULL,
     nc_cli_cmd_cluster_status},
    {"cluster", "init", "--address IP [--etcd-client-port N] [--etcd-peer-port N]",
     "make this node the first of a new cluster (starts its etcd member)",
     "  --address IP           this node's address, the one other nodes reach it on\n"
     "  --etcd-client-port N   etcd's client port (default 2379)\n"
     "  --etcd-peer-port N     etcd's peer port (default 2380)\n",
     nc_cli_cmd_cluster_init},
    {"cluster", "join", "MEMBER --token TOKEN --address IP [--worker] [--etcd-*-port N]",
     "join the cluster a node at MEMBER (HOST:PORT of its API) belongs to",
     "  --token TOKEN          the cluster token `cluster init` printed\n"
     "  --address IP           this node's address, the one other nodes reach it on\n"
     "  --worker               run no etcd member here (only control-plane nodes do)\n",
     nc_cli_cmd_cluster_join},
    {"op", "list", "", "list recent operations: ID KIND TARGET STATUS PROGRESS AGE", NULL,
     nc_cli_cmd_op_list},
    {"op", "show", "ID [--wait]", "show an operation",
     "  --wait                 wait for it to finish first\n", nc_cli_cmd_op_show},
    {"op", "cancel", "ID", "ask a running operation to stop", NULL, nc_cli_cmd_op_cancel},
    {NULL, "events", "", "follow the event stream, one line per event", NULL, nc_cli_cmd_events},
    {NULL, "version", "", "print the client version", NULL, nc_cli_cmd_version},
    {NULL, "help", "[NOUN [VERB]]", "show help", NULL, nc_cli_cmd_help},
};
const size_t nc_cli_ncmds = sizeof nc_cli_cmds / sizeof nc_cli_cmds[0];

static const char *const k_nouns[] = {"vm", "image", "node", "cluster", "op"};

bool nc_cli_is_noun(const char *word) {
  for (size_t i = 0; i < sizeof k_nouns / sizeof *k_nouns; i++)
    if (strcmp(word, k_nouns[i]) == 0)
      return true;
  return false;
}

const struct nc_cli_cmd *nc_cli_find(const char *noun, const char *verb) {
  for (size_t i = 0; i < nc_cli_ncmds; i++) {
    const struct nc_cli_cmd *c = &nc_cli_cmds[i];
    if (strcmp(c->verb, verb) != 0)
      continue;
    if ((noun == NULL && c->noun == NULL) ||
        (noun != NULL && c->noun != NULL && strcmp(noun, c->noun) == 0))
      return c;
  }
  return NULL;
}

static void cmd_name(const struct nc_cli_cmd *cmd, char *buf, size_t n) {
  if (cmd->noun != NULL)
    snprintf(buf, n, "%s %s", cmd->noun, cmd->verb);
  else
    snprintf(buf, n, "%s", cmd->verb);
}

void nc_cli_print_usage_line(FILE *f, const struct nc_cli_cmd *cmd) {
  char name[64];
  cmd_name(cmd, name, sizeof name);
  fprintf(f, "usage: novacron %s%s%s\n", name, cmd->args[0] ? " " : "", cmd->args);
}

void nc_cli_print_cmd_help(FILE *f, const struct nc_cli_cmd *cmd) {
  nc_cli_print_usage_line(f, cmd);
  fprintf(f, "\n%c%s.\n\nflags:\n", cmd->summary[0] - 'a' + 'A', cmd->summary + 1);
  if (cmd->help != NULL)
    fputs(cmd->help, f);
  fputs("  -o, --output FMT       table (default) or json\n"
        "  -h, --help             this help\n"
        "\nGlobal flags (--endpoint, --token, --data-dir, --timeout) go before the noun;\n"
        "see 'novacron help'.\n",
        f);
}

void nc_cli_print_noun_help(FILE *f, const char *noun) {
  fprintf(f, "usage: novacron %s <verb> [ARGS]\n\nverbs:\n", noun);
  for (size_t i = 0; i < nc_cli_ncmds; i++) {
    const struct nc_cli_cmd *c = &nc_cli_cmds[i];
    if (c->noun != NULL && strcmp(c->noun, noun) == 0)
      fprintf(f, "  %-16s %s\n", c->verb, c->summary);
  }
  fprintf(f, "\nRun 'novacron %s <verb> --help' for a verb's flags.\n", noun);
}

void nc_cli_print_global_help(FILE *f) {
  fputs("usage: novacron [GLOBAL FLAGS] <noun> <verb> [ARGS]\n"
        "\n"
        "Manage NovaCron virtual machines through novacrond's REST API.\n"
        "\n"
        "commands:\n",
        f);
  for (size_t i = 0; i < nc_cli_ncmds; i++) {
    char name[64];
    cmd_name(&nc_cli_cmds[i], name, sizeof name);
    fprintf(f, "  %-20s %s\n", name, nc_cli_cmds[i].summary);
  }
  fputs("\n"
        "global flags:\n"
        "  --endpoint URL         http://HOST:PORT or unix:/PATH\n"
        "                         (default unix:<data-dir>/api.sock; $NOVACRON_ENDPOINT)\n"
        "  --token TOKEN          bearer token for a TCP endpoint ($NOVACRON_TOKEN)\n"
        "  --token-file FILE      read the token from FILE (default for a TCP endpoint:\n"
        "                         <data-dir>/api.token when readable)\n"
        "  --data-dir DIR         novacrond's data directory\n"
        "                         (default " NC_CLI_DEFAULT_DATA_DIR "; $NOVACRON_DATA_DIR)\n"
        "  -o, --output FMT       table (default) or json; also accepted after the verb\n"
        "  --timeout SECONDS      give up after this long (default: 30s per request,\n"
        "                         no limit on waiting for an operation)\n"
        "\n"
        "exit status: 0 success, 1 the server refused or the operation failed,\n"
        "2 usage error, 3 novacrond could not be reached.\n"
        "\n"
        "Run 'novacron <noun> --help' or 'novacron <noun> <verb> --help' for more.\n",
        f);
}

static void vreport(FILE *f, const char *prefix, const char *fmt, va_list ap) {
  char raw[1024], clean[1024];
  vsnprintf(raw, sizeof raw, fmt, ap);
  nc_cli_sanitize(raw, clean, sizeof clean);
  fprintf(f, "%s%s\n", prefix, clean);
}

int nc_cli_usage_error(struct nc_cli *cli, const char *fmt, ...) {
  char prefix[96] = "novacron: ";
  va_list ap;
  if (cli->cmd != NULL) {
    char name[64];
    cmd_name(cli->cmd, name, sizeof name);
    snprintf(prefix, sizeof prefix, "novacron %s: ", name);
  }
  va_start(ap, fmt);
  vreport(cli->err, prefix, fmt, ap);
  va_end(ap);
  if (cli->cmd != NULL) {
    char name[64];
    cmd_name(cli->cmd, name, sizeof name);
    nc_cli_print_usage_line(cli->err, cli->cmd);
    fprintf(cli->err, "Run 'novacron %s --help' for details.\n", name);
  } else {
    fputs("usage: novacron [GLOBAL FLAGS] <noun> <verb> [ARGS]\n"
          "Run 'novacron help' for the commands and flags.\n",
          cli->err);
  }
  return NC_CLI_EXIT_USAGE;
}

int nc_cli_fail(struct nc_cli *cli, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(cli->err, "novacron: ", fmt, ap);
  va_end(ap);
  return NC_CLI_EXIT_FAIL;
}

int64_t nc_cli_request_timeout_ms(const struct nc_cli *cli) {
  return cli->timeout_ms > 0 ? cli->timeout_ms : NC_CLI_DEFAULT_REQUEST_TIMEOUT_MS;
}

struct nc_cli_transport *nc_cli_transport(struct nc_cli *cli) {
  if (cli->transport != NULL)
    return cli->transport;
  int64_t connect_ms = NC_CLI_CONNECT_TIMEOUT_MS;
  if (cli->timeout_ms > 0 && cli->timeout_ms < connect_ms)
    connect_ms = cli->timeout_ms;
  int rc = nc_cli_curl_transport_new(&cli->ep, cli->token, connect_ms, &cli->transport);
  if (rc != 0) {
    nc_cli_fail(cli, "cannot set up the HTTP client (libcurl): %s", strerror(-rc));
    cli->transport = NULL;
    return NULL;
  }
  cli->own_transport = true;
  return cli->transport;
}

int nc__cli_read_token_file(const char *path, char **out) {
  char buf[NC_CLI_TOKEN_MAX + 2];
  size_t len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  int rc = 0;
  if (fd < 0)
    return -errno;
  for (;;) {
    ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = -errno;
      goto out;
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len >= sizeof buf - 1) {
      rc = -EFBIG;
      goto out;
    }
  }
  buf[len] = '\0';
  char *start = buf + strspn(buf, " \t\r\n");
  size_t tlen = strcspn(start, "\r\n");
  while (tlen > 0 && (start[tlen - 1] == ' ' || start[tlen - 1] == '\t'))
    tlen--;
  if (tlen == 0) {
    rc = -EINVAL;
    goto out;
  }
  *out = strndup(start, tlen);
  if (*out == NULL)
    rc = -ENOMEM;
out:
  memset(buf, 0, sizeof buf);
  close(fd);
  return rc;
}

/* A token goes into an HTTP header: printable ASCII without spaces only. */
static bool token_ok(const char *t) {
  for (const unsigned char *p = (const unsigned char *)t; *p; p++)
    if (*p <= 0x20 || *p >= 0x7f)
      return false;
  return *t != '\0';
}

struct global_flags {
  const char *endpoint, *token, *token_file, *data_dir, *output, *timeout;
};

/* Parses the flags before the noun. Returns the index of the noun, or -1
 * after a usage error, or -2 after printing help or the version. */
static int parse_globals(struct nc_cli *cli, int argc, char **argv, struct global_flags *g) {
  static const struct {
    const char *name;
    size_t off;
  } flags[] = {
      {"endpoint", offsetof(struct global_flags, endpoint)},
      {"token", offsetof(struct global_flags, token)},
      {"token-file", offsetof(struct global_flags, token_file)},
      {"data-dir", offsetof(struct global_flags, data_dir)},
      {"output", offsetof(struct global_flags, output)},
      {"timeout", offsetof(struct global_flags, timeout)},
  };
  int i;
  for (i = 1; i < argc && argv[i][0] == '-'; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--") == 0)
      return i + 1;
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      nc_cli_print_global_help(cli->out);
      return -2;
    }
    if (strcmp(arg, "--version") == 0) {
      fprintf(cli->out, "novacron %s\n", NC_VERSION);
      return -2;
    }
    if (strcmp(arg, "-o") == 0)
      arg = "--output";
    const char *name = arg + 2, *eq = strchr(name, '='), *value = NULL;
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    size_t k;
    for (k = 0; k < sizeof flags / sizeof *flags; k++)
      if (strncmp(arg, "--", 2) == 0 && strlen(flags[k].name) == len &&
          strncmp(flags[k].name, name, len) == 0)
        break;
    if (k == sizeof flags / sizeof *flags) {
      nc_cli_usage_error(cli, "unknown global flag %s", argv[i]);
      return -1;
    }
    if (eq != NULL)
      value = eq + 1;
    else if (i + 1 < argc)
      value = argv[++i];
    if (value == NULL || *value == '\0') {
      nc_cli_usage_error(cli, "--%s needs a value", flags[k].name);
      return -1;
    }
    const char **dest = (const char **)((char *)g + flags[k].off);
    if (*dest != NULL) {
      nc_cli_usage_error(cli, "--%s given twice", flags[k].name);
      return -1;
    }
    *dest = value;
  }
  return i;
}

/* Turns the global flags and environment into cli's endpoint, token,
 * output and timeout. Returns 0 or an exit status after printing why. */
static int resolve_globals(struct nc_cli *cli, const struct global_flags *g) {
  const struct nc_cli_io *io = cli->io;
  const char *ep, *ep_src;
  int rc;

  cli->data_dir = g->data_dir ? g->data_dir
                  : io->env_data_dir && *io->env_data_dir ? io->env_data_dir
                                                          : NC_CLI_DEFAULT_DATA_DIR;
  if (g->output != NULL && nc_cli_parse_output(cli, g->output) != 0)
    return nc_cli_usage_error(cli, "--output \"%s\" is not table or json", g->output);
  if (g->timeout != NULL && nc_cli_parse_duration(g->timeout, &cli->timeout_ms) != 0)
    return nc_cli_usage_error(cli, "--timeout \"%s\" is not a duration (try 30 or 2m)",
                              g->timeout);

  if (g->endpoint != NULL) {
    ep = g->endpoint;
    ep_src = "--endpoint";
  } else if (io->env_endpoint != NULL && *io->env_endpoint != '\0') {
    ep = io->env_endpoint;
    ep_src = "$NOVACRON_ENDPOINT";
  } else {
    snprintf(cli->endpoint, sizeof cli->endpoint, "unix:%s/api.sock", cli->data_dir);
    ep = NULL;
    ep_src = "--data-dir";
  }
  if (ep != NULL)
    snprintf(cli->endpoint, sizeof cli->endpoint, "%s", ep);
  rc = nc_cli_endpoint_parse(cli->endpoint, &cli->ep);
  if (rc == -ENAMETOOLONG)
    return nc_cli_usage_error(cli, "%s: socket path in \"%s\" is too long for a unix socket",
                              ep_src, cli->endpoint);
  if (rc != 0)
    return nc_cli_usage_error(cli, "%s \"%s\" is not http://HOST:PORT or unix:/PATH", ep_src,
                              cli->endpoint);

  if (g->token != NULL && g->token_file != NULL)
    return nc_cli_usage_error(cli, "give --token or --token-file, not both");
  if (g->token != NULL) {
    cli->token = strdup(g->token);
  } else if (g->token_file != NULL) {
    rc = nc__cli_read_token_file(g->token_file, &cli->token);
    if (rc != 0)
      return nc_cli_usage_error(cli, "cannot read --token-file %s: %s", g->token_file,
                                rc == -EFBIG    ? "larger than a token can be"
                                : rc == -EINVAL ? "it is empty"
                                                : strerror(-rc));
  } else if (io->env_token != NULL && *io->env_token != '\0') {
    cli->token = strdup(io->env_token);
  } else if (cli->ep.kind == NC_CLI_EP_HTTP) {
    /* The daemon writes its token here on first start (docs/api.md). Not
     * readable (not root, remote daemon) simply means no token. */
    char path[4096];
    snprintf(path, sizeof path, "%s/api.token", cli->data_dir);
    if (nc__cli_read_token_file(path, &cli->token) != 0)
      cli->token = NULL;
  }
  if (cli->token != NULL && !token_ok(cli->token))
    return nc_cli_usage_error(cli, "the token contains spaces or control characters");
  return 0;
}

int nc_cli_main(const struct nc_cli_io *io, int argc, char **argv) {
  struct nc_cli cli = {
      .io = io,
      .out = io->out,
      .err = io->err,
      .clock = io->clock ? io->clock : nc_clock_system(),
      .transport = io->transport,
  };
  struct global_flags g = {0};
  const struct nc_cli_cmd *cmd;
  int rc, i;

  i = parse_globals(&cli, argc, argv, &g);
  if (i < 0) {
    rc = i == -2 ? NC_CLI_EXIT_OK : NC_CLI_EXIT_USAGE;
    goto out;
  }
  rc = resolve_globals(&cli, &g);
  if (rc != 0)
    goto out;
  if (i >= argc) {
    nc_cli_print_global_help(cli.err);
    rc = NC_CLI_EXIT_USAGE;
    goto out;
  }

  const char *word = argv[i];
  if (nc_cli_is_noun(word)) {
    const char *verb = i + 1 < argc ? argv[i + 1] : NULL;
    if (verb == NULL) {
      nc_cli_print_noun_help(cli.err, word);
      rc = NC_CLI_EXIT_USAGE;
      goto out;
    }
    if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0 || strcmp(verb, "help") == 0) {
      nc_cli_print_noun_help(cli.out, word);
      rc = NC_CLI_EXIT_OK;
      goto out;
    }
    cmd = nc_cli_find(word, verb);
    if (cmd == NULL) {
      rc = nc_cli_usage_error(&cli, "%s: unknown verb \"%s\"", word, verb);
      nc_cli_print_noun_help(cli.err, word);
      goto out;
    }
    i++;
  } else {
    cmd = nc_cli_find(NULL, word);
    if (cmd == NULL) {
      rc = nc_cli_usage_error(&cli, "unknown command \"%s\"", word);
      goto out;
    }
  }
  cli.cmd = cmd;
  rc = cmd->run(&cli, argc - i, argv + i);
out:
  fflush(cli.out);
  fflush(cli.err);
  if (cli.own_transport)
    nc_cli_transport_destroy(cli.transport);
  if (cli.token != NULL) {
    memset(cli.token, 0, strlen(cli.token));
    free(cli.token);
  }
  return rc;
}
