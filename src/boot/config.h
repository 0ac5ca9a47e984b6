/* novacrond configuration: built-in defaults, then the config file, then
 * command-line flags, each overriding the one before.
 *
 * The file is lines of `key = value`; '#' starts a comment; blank lines
 * are ignored; values may be wrapped in double quotes. Unknown keys are an
 * error (a typo must not silently fall back to a default). See
 * docs/operations.md for every key. */
#ifndef NC_BOOT_CONFIG_H
#define NC_BOOT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define NC_CONFIG_FILE_MAX (64 * 1024)
#define NC_CONFIG_VALUE_MAX 1023

enum nc_accel_pref { NC_ACCEL_PREF_AUTO, NC_ACCEL_PREF_TCG, NC_ACCEL_PREF_KVM };

struct nc_config {
  char data_dir[NC_CONFIG_VALUE_MAX + 1];
  char listen_host[256]; /* "" = no TCP listener */
  int listen_port;
  char node_name[64];
  char log_level[16];
  char qemu[NC_CONFIG_VALUE_MAX + 1];
  char qemu_img[NC_CONFIG_VALUE_MAX + 1];
  enum nc_accel_pref accel;
  char hypervisor[8];   /* "qemu", or "noop" (no guests; control-plane benchmarks) */
  int stop_timeout_s;
  int reconcile_interval_ms;
  int kvm_probe_timeout_ms;
  char cluster_token_file[NC_CONFIG_VALUE_MAX + 1]; /* "" = none */
  char dwcp_host[64];        /* "" = the listen address, or 127.0.0.1 */
  char dwcp_tls[8];          /* "auto" (TLS unless loopback), "on", "off" */
  uint64_t page_cache_bytes; /* 0 = no page cache */
  char store[NC_CONFIG_VALUE_MAX + 1]; /* "" = sqlite:<data_dir>/state.db */
  /* Cluster (used when the store is etcd; docs/cluster.md). */
  char zone[64], rack[64];
  char labels[NC_CONFIG_VALUE_MAX + 1]; /* "k=v,k=v" */
  int control_plane;                    /* 1: may be elected controller */
  int lease_ttl_ms;
  char placement[8];                    /* "pack" or "spread" */
  int rebalance;                        /* 1: the controller evens out load */
  int rebalance_threshold_pct;          /* load gap that triggers it, percent */
};

/* Fills the built-in defaults (data_dir /var/lib/novacron, node name from
 * the hostname, no TCP listener, accel auto). */
void nc_config_defaults(struct nc_config *cfg);
/* Applies `key = value` text of length len. On error returns -EINVAL and
 * writes "line N: <what is wrong and how to fix it>" to err. */
int nc_config_parse(struct nc_config *cfg, const char *text, size_t len, char *err,
                    size_t err_len);
/* Reads and applies a file (at most NC_CONFIG_FILE_MAX bytes). */
int nc_config_load_file(struct nc_config *cfg, const char *path, char *err, size_t err_len);
/* Sets one key (used by the parser and by command-line flags). */
int nc_config_set(struct nc_config *cfg, const char *key, const char *value, char *err,
                  size_t err_len);
/* 0 when s is "" or KEY=VALUE pairs separated by commas (at most 16). */
int nc_config_labels_valid(const char *s);
/* "HOST:PORT" or "[V6]:PORT" → host and port. */
int nc_config_parse_listen(const char *s, char *host, size_t host_len, int *port);

#endif
