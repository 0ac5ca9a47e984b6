/* novacron cluster init --address IP
 * novacron cluster join HOST:PORT --token TOKEN --address IP [--worker]
 *
 * Both ask the local novacrond (POST /v1/cluster/init|join) to form or
 * join a cluster; the daemon starts its etcd member, moves its records into
 * etcd and restarts itself in cluster mode (docs/cluster.md). The command
 * then waits until the restarted daemon answers GET /v1/cluster. */
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/op.h"

#include <stdio.h>
#include <string.h>

#define RESTART_WAIT_MS 90000

static int add_port(struct nc_cli *cli, json_t *body, const char *flag, const char *field,
                    const char *value) {
  uint64_t n;
  if (value == NULL)
    return 0;
  if (nc_cli_parse_uint(value, 65535, &n) != 0 || n == 0)
    return nc_cli_usage_error(cli, "--%s \"%s\" is not a port from 1 to 65535", flag, value);
  json_object_set_new(body, field, json_integer((json_int_t)n));
  return 0;
}

/* Adds the etcd port flags to body, then POSTs it to path (the daemon
 * starts etcd, so give it time). Returns the exit status; *out on OK. */
static int post_with_ports(struct nc_cli *cli, const char *path, json_t *body,
                           const char *cport, const char *pport, int64_t timeout_ms,
                           json_t **out) {
  int rc = add_port(cli, body, "etcd-client-port", "etcd_client_port", cport);
  if (rc == 0)
    rc = add_port(cli, body, "etcd-peer-port", "etcd_peer_port", pport);
  if (rc == 0)
    rc = nc__cli_call_timeout(cli, "POST", path, body, timeout_ms, out);
  json_decref(body);
  return rc;
}

/* Polls GET /v1/cluster until the daemon is back in cluster mode. */
static int wait_clustered(struct nc_cli *cli) {
  /* While the daemon restarts, "cannot reach" is expected: keep quiet. */
  FILE *quiet = fopen("/dev/null", "w");
  FILE *saved = cli->err;
  for (int64_t waited = 0; waited < RESTART_WAIT_MS; waited += 500) {
    nc__cli_sleep_ms(cli, 500);
    struct nc_cli_http_resp failed = {0};
    json_t *out = NULL;
    if (quiet)
      cli->err = quiet;
    int rc = nc__cli_call_ex(cli, "GET", "/v1/cluster", NULL, 5000, &failed, &out);
    cli->err = saved;
    nc_cli_http_resp_reset(&failed);
    if (rc == NC_CLI_EXIT_OK && nc_cli_jstr(out, "node") != NULL) {
      if (cli->output != NC_CLI_OUTPUT_JSON)
        fprintf(cli->out, "node \"%s\" is in the cluster (controller: %s)\n",
                nc_cli_jstr(out, "node"),
                nc_cli_jstr(out, "controller") ? nc_cli_jstr(out, "controller")
                                               : "being elected");
      json_decref(out);
      if (quiet)
        fclose(quiet);
      return NC_CLI_EXIT_OK;
    }
    json_decref(out);
  }
  if (quiet)
    fclose(quiet);
  fprintf(cli->err, "novacron: the daemon did not come back in cluster mode within %d s; see "
                    "its log\n", RESTART_WAIT_MS / 1000);
  return NC_CLI_EXIT_FAIL;
}

int nc_cli_cmd_cluster_init(struct nc_cli *cli, int argc, char **argv) {
  const char *address = NULL, *cport = NULL, *pport = NULL;
  const struct nc_cli_opt opts[] = {
      {"address", NC_CLI_OPT_STR, &address},
      {"etcd-client-port", NC_CLI_OPT_STR, &cport},
      {"etcd-peer-port", NC_CLI_OPT_STR, &pport},
      {NULL, 0, NULL},
  };
  const struct nc_cli_argspec spec = {opts, NULL, 0, 0};
  int rc = nc_cli_args_parse(cli, &spec, argc, argv, NULL);
  if (rc != 0)
    return nc_cli_args_status(rc);
  if (address == NULL)
    return nc_cli_usage_error(cli, "--address is required: this node's IP that the other "
                                   "nodes reach it on");
  json_t *out = NULL;
  rc = post_with_ports(cli, "/v1/cluster/init", json_pack("{s:s}", "address", address), cport,
                       pport, 120000, &out);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, out);
  } else {
    fprintf(cli->out, "cluster initialised; etcd member at %s\n",
            nc_cli_jstr_or(out, "etcd", "?"));
    fprintf(cli->out, "cluster token: %s\n", nc_cli_jstr_or(out, "token", "?"));
    fprintf(cli->out, "join other nodes with:\n  %s\n", nc_cli_jstr_or(out, "join", "?"));
  }
  json_decref(out);
  return wait_clustered(cli);
}

int nc_cli_cmd_cluster_join(struct nc_cli *cli, int argc, char **argv) {
  const char *token = NULL, *address = NULL, *cport = NULL, *pport = NULL;
  bool worker = false;
  const struct nc_cli_opt opts[] = {
      {"token", NC_CLI_OPT_STR, &token},
      {"address", NC_CLI_OPT_STR, &address},
      {"worker", NC_CLI_OPT_BOOL, &worker},
      {"etcd-client-port", NC_CLI_OPT_STR, &cport},
      {"etcd-peer-port", NC_CLI_OPT_STR, &pport},
      {NULL, 0, NULL},
  };
  static const char *const names[] = {"MEMBER"};
  const struct nc_cli_argspec spec = {opts, names, 1, 1};
  const char *pos[1];
  int rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  if (token == NULL)
    return nc_cli_usage_error(cli, "--token is required (what `cluster init` printed)");
  if (address == NULL)
    return nc_cli_usage_error(cli, "--address is required: this node's IP that the other "
                                   "nodes reach it on");
  if (strchr(pos[0], ':') == NULL)
    return nc_cli_usage_error(cli, "MEMBER \"%s\" must be HOST:PORT of a cluster node's API",
                              pos[0]);
  json_t *body = json_pack("{s:s, s:s, s:s, s:b}", "address", pos[0], "token", token,
                           "advertise", address, "control_plane", !worker);
  json_t *out = NULL;
  rc = post_with_ports(cli, "/v1/cluster/join", body, cport, pport, 180000, &out);
  if (rc != NC_CLI_EXIT_OK)
    return rc;
  if (cli->output == NC_CLI_OUTPUT_JSON)
    nc_cli_print_json(cli, out);
  else
    fprintf(cli->out, "joined the cluster through %s as %s\n", pos[0],
            worker ? "a worker" : "a control-plane node (with an etcd member)");
  json_decref(out);
  return wait_clustered(cli);
}
