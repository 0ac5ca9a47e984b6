#include "boot/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/errinfo.h"
#include "util/log.h"
#include "util/size.h"
#include "vm/spec.h"

void nc_config_defaults(struct nc_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->data_dir, sizeof cfg->data_dir, "/var/lib/novacron");
  char host[256] = "node";
  if (gethostname(host, sizeof host) != 0)
    snprintf(host, sizeof host, "node");
  host[sizeof host - 1] = '\0';
  /* Node names follow the VM name rules; fold a hostname into them. */
  size_t o = 0;
  for (size_t i = 0; host[i] && o < sizeof cfg->node_name - 1; i++) {
    char c = (char)tolower((unsigned char)host[i]);
    if (c == '.')
      break;
    cfg->node_name[o++] = (isalnum((unsigned char)c) || c == '-') ? c : '-';
  }
  if (!nc_name_valid(cfg->node_name))
    snprintf(cfg->node_name, sizeof cfg->node_name, "node");
  snprintf(cfg->log_level, sizeof cfg->log_level, "info");
  snprintf(cfg->qemu, sizeof cfg->qemu, "qemu-system-x86_64");
  snprintf(cfg->qemu_img, sizeof cfg->qemu_img, "qemu-img");
  cfg->accel = NC_ACCEL_PREF_AUTO;
  snprintf(cfg->hypervisor, sizeof cfg->hypervisor, "qemu");
  cfg->stop_timeout_s = 30;
  cfg->reconcile_interval_ms = 1000;
  cfg->kvm_probe_timeout_ms = 8000;
  cfg->page_cache_bytes = 512ULL << 20;
  snprintf(cfg->dwcp_tls, sizeof cfg->dwcp_tls, "auto");
  cfg->control_plane = 1;
  cfg->lease_ttl_ms = 6000;
  snprintf(cfg->placement, sizeof cfg->placement, "pack");
  cfg->rebalance_threshold_pct = 25;
}

int nc_config_parse_listen(const char *s, char *host, size_t host_len, int *port) {
  const char *colon;
  size_t hl;
  bool v6 = s[0] == '[';
  if (v6) {
    const char *close = strchr(s, ']');
    if (!close || close[1] != ':')
      return -EINVAL;
    hl = (size_t)(close - s - 1);
    s++;
    colon = close + 1;
  } else {
    colon = strrchr(s, ':');
    if (!colon)
      return -EINVAL;
    hl = (size_t)(colon - s);
  }
  if (hl == 0 || hl >= host_len)
    return -EINVAL;
  /* The host must be a numeric address (the listener binds without name
   * resolution); an unbracketed IPv6 address is ambiguous. */
  char tmp[64];
  unsigned char addr[16];
  if (hl >= sizeof tmp)
    return -EINVAL;
  memcpy(tmp, s, hl);
  tmp[hl] = '\0';
  if (inet_pton(v6 ? AF_INET6 : AF_INET, tmp, addr) != 1)
    return -EINVAL;
  char *end;
  errno = 0;
  long p = strtol(colon + 1, &end, 10);
  if (errno || end == colon + 1 || *end || p < 0 || p > 65535)
    return -EINVAL;
  memcpy(host, s, hl);
  host[hl] = '\0';
  *port = (int)p;
  return 0;
}

static int parse_int(const char *v, int lo, int hi, int *out) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || end == v || *end || n < lo || n > hi)
    return -EINVAL;
  *out = (int)n;
  return 0;
}

static bool label_part_ok(const char *p, size_t n) {
  if (n == 0 || n > 63)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)p[i]) && p[i] != '.' && p[i] != '_' && p[i] != '-')
      return false;
  return true;
}

int nc_config_labels_valid(const char *s) {
  size_t count = 0;
  while (*s) {
    const char *end = strchr(s, ',');
    size_t n = end ? (size_t)(end - s) : strlen(s);
    const char *eq = memchr(s, '=', n);
    if (!eq || !label_part_ok(s, (size_t)(eq - s)) ||
        !label_part_ok(eq + 1, n - (size_t)(eq - s) - 1) || ++count > 16)
      return -EINVAL;
    s += n;
    if (*s == ',' && *++s == '\0')
      return -EINVAL;
  }
  return 0;
}

int nc_config_set(struct nc_config *cfg, const char *key, const char *value, char *err,
                  size_t err_len) {
  size_t vl = strlen(value);
  char vex[NC_EXCERPT_LEN], kex[NC_EXCERPT_LEN];
  nc_excerpt(value, vex, sizeof vex);
  nc_excerpt(key, kex, sizeof kex);
  if (vl > NC_CONFIG_VALUE_MAX) {
    snprintf(err, err_len, "%s: value is longer than %d characters", key, NC_CONFIG_VALUE_MAX);
    return -EINVAL;
  }
  if (strcmp(key, "data_dir") == 0) {
    if (value[0] != '/') {
      snprintf(err, err_len, "data_dir must be an absolute path, like /var/lib/novacron");
      return -EINVAL;
    }
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", value);
  } else if (strcmp(key, "listen") == 0) {
    if (value[0] == '\0') {
      cfg->listen_host[0] = '\0';
      return 0;
    }
    if (nc_config_parse_listen(value, cfg->listen_host, sizeof cfg->listen_host,
                               &cfg->listen_port) != 0) {
      snprintf(err, err_len,
               "listen \"%s\" is not ADDRESS:PORT with a numeric address (try "
               "127.0.0.1:8470, 0.0.0.0:8470 or [::1]:8470)",
               vex);
      return -EINVAL;
    }
  } else if (strcmp(key, "node_name") == 0) {
    if (!nc_name_valid(value)) {
      snprintf(err, err_len,
               "node_name \"%s\" must be lower-case letters, digits and '-', like host-a",
               vex);
      return -EINVAL;
    }
    snprintf(cfg->node_name, sizeof cfg->node_name, "%s", value);
  } else if (strcmp(key, "log_level") == 0) {
    enum nc_log_level l;
    if (nc_log_parse_level(value, &l) != 0) {
      snprintf(err, err_len, "log_level \"%s\" must be debug, info, warn or error", vex);
      return -EINVAL;
    }
    snprintf(cfg->log_level, sizeof cfg->log_level, "%s", value);
  } else if (strcmp(key, "qemu") == 0) {
    snprintf(cfg->qemu, sizeof cfg->qemu, "%s", value);
  } else if (strcmp(key, "qemu_img") == 0) {
    snprintf(cfg->qemu_img, sizeof cfg->qemu_img, "%s", value);
  } else if (strcmp(key, "accel") == 0) {
    if (strcmp(value, "auto") == 0)
      cfg->accel = NC_ACCEL_PREF_AUTO;
    else if (strcmp(value, "tcg") == 0)
      cfg->accel = NC_ACCEL_PREF_TCG;
    else if (strcmp(value, "kvm") == 0)
      cfg->accel = NC_ACCEL_PREF_KVM;
    else {
      snprintf(err, err_len, "accel \"%s\" must be auto, tcg or kvm", vex);
      return -EINVAL;
    }
  } else if (strcmp(key, "hypervisor") == 0) {
    if (strcmp(value, "qemu") != 0 && strcmp(value, "noop") != 0) {
      snprintf(err, err_len,
               "hypervisor \"%s\" must be qemu, or noop (runs no guests; for control-plane "
               "benchmarks only)",
               vex);
      return -EINVAL;
    }
    snprintf(cfg->hypervisor, sizeof cfg->hypervisor, "%s", value);
  } else if (strcmp(key, "stop_timeout_s") == 0) {
    if (parse_int(value, 1, 3600, &cfg->stop_timeout_s) != 0) {
      snprintf(err, err_len, "stop_timeout_s must be a whole number of seconds, 1 to 3600");
      return -EINVAL;
    }
  } else if (strcmp(key, "reconcile_interval_ms") == 0) {
    if (parse_int(value, 100, 60000, &cfg->reconcile_interval_ms) != 0) {
      snprintf(err, err_len, "reconcile_interval_ms must be 100 to 60000");
      return -EINVAL;
    }
  } else if (strcmp(key, "kvm_probe_timeout_ms") == 0) {
    if (parse_int(value, 500, 120000, &cfg->kvm_probe_timeout_ms) != 0) {
      snprintf(err, err_len, "kvm_probe_timeout_ms must be 500 to 120000");
      return -EINVAL;
    }
  } else if (strcmp(key, "store") == 0) {
    if (value[0] && strncmp(value, "sqlite:/", 8) != 0 && strncmp(value, "etcd:http://", 12) != 0) {
      snprintf(err, err_len,
               "store \"%s\" must be sqlite:/ABSOLUTE/PATH or etcd:http://HOST:PORT[,...]", vex);
      return -EINVAL;
    }
    snprintf(cfg->store, sizeof cfg->store, "%s", value);
  } else if (strcmp(key, "cluster_token_file") == 0) {
    if (value[0] && value[0] != '/') {
      snprintf(err, err_len, "cluster_token_file must be an absolute path");
      return -EINVAL;
    }
    snprintf(cfg->cluster_token_file, sizeof cfg->cluster_token_file, "%s", value);
  } else if (strcmp(key, "dwcp_host") == 0) {
    unsigned char addr[16];
    if (value[0] && inet_pton(AF_INET, value, addr) != 1 && inet_pton(AF_INET6, value, addr) != 1) {
      snprintf(err, err_len, "dwcp_host \"%s\" must be a numeric IP address", vex);
      return -EINVAL;
    }
    snprintf(cfg->dwcp_host, sizeof cfg->dwcp_host, "%s", value);
  } else if (strcmp(key, "dwcp_tls") == 0) {
    if (strcmp(value, "auto") != 0 && strcmp(value, "on") != 0 && strcmp(value, "off") != 0) {
      snprintf(err, err_len,
               "dwcp_tls \"%s\" must be auto (TLS 1.3 unless both ends are loopback), on or off",
               vex);
      return -EINVAL;
    }
    snprintf(cfg->dwcp_tls, sizeof cfg->dwcp_tls, "%s", value);
  } else if (strcmp(key, "page_cache_bytes") == 0) {
    uint64_t v = 0;
    if (strcmp(value, "0") != 0 && nc_size_parse(value, &v) != 0) {
      snprintf(err, err_len, "page_cache_bytes \"%s\" is not a size (try 512M, 2G or 0)", vex);
      return -EINVAL;
    }
    cfg->page_cache_bytes = v;
  } else if (strcmp(key, "zone") == 0 || strcmp(key, "rack") == 0) {
    if (value[0] && !nc_name_valid(value)) {
      snprintf(err, err_len, "%s \"%s\" must be 1-63 characters of a-z, 0-9 and '-'", key, vex);
      return -EINVAL;
    }
    snprintf(key[0] == 'z' ? cfg->zone : cfg->rack, sizeof cfg->zone, "%s", value);
  } else if (strcmp(key, "labels") == 0) {
    if (nc_config_labels_valid(value) != 0) {
      snprintf(err, err_len,
               "labels \"%s\" must be KEY=VALUE pairs separated by commas (each 1-63 "
               "characters of A-Z, a-z, 0-9, '.', '_', '-'), e.g. ssd=true,gpu=a100", vex);
      return -EINVAL;
    }
    snprintf(cfg->labels, sizeof cfg->labels, "%s", value);
  } else if (strcmp(key, "control_plane") == 0) {
    if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0) {
      snprintf(err, err_len, "control_plane must be true or false");
      return -EINVAL;
    }
    cfg->control_plane = value[0] == 't';
  } else if (strcmp(key, "lease_ttl_ms") == 0) {
    if (parse_int(value, 3000, 60000, &cfg->lease_ttl_ms) != 0) {
      snprintf(err, err_len, "lease_ttl_ms must be 3000 to 60000 (docs/ha.md)");
      return -EINVAL;
    }
  } else if (strcmp(key, "rebalance") == 0) {
    if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0) {
      snprintf(err, err_len, "rebalance must be on or off (docs/cluster.md)");
      return -EINVAL;
    }
    cfg->rebalance = value[1] == 'n';
  } else if (strcmp(key, "rebalance_threshold_pct") == 0) {
    if (parse_int(value, 5, 100, &cfg->rebalance_threshold_pct) != 0) {
      snprintf(err, err_len, "rebalance_threshold_pct must be 5 to 100 (percent of capacity)");
      return -EINVAL;
    }
  } else if (strcmp(key, "placement") == 0) {
    if (strcmp(value, "pack") != 0 && strcmp(value, "spread") != 0) {
      snprintf(err, err_len, "placement \"%s\" must be pack or spread", vex);
      return -EINVAL;
    }
    snprintf(cfg->placement, sizeof cfg->placement, "%s", value);
  } else {
    snprintf(err, err_len,
             "unknown key \"%s\" (known: data_dir, listen, node_name, log_level, qemu, "
             "qemu_img, accel, hypervisor, stop_timeout_s, reconcile_interval_ms, "
             "kvm_probe_timeout_ms, cluster_token_file, dwcp_host, dwcp_tls, page_cache_bytes, "
             "store, zone, rack, labels, control_plane, lease_ttl_ms, placement, rebalance, "
             "rebalance_threshold_pct)",
             kex);
    return -EINVAL;
  }
  return 0;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
    s[--n] = '\0';
  return s;
}

int nc_config_parse(struct nc_config *cfg, const char *text, size_t len, char *err,
                    size_t err_len) {
  if (len > NC_CONFIG_FILE_MAX) {
    snprintf(err, err_len, "config is larger than %d bytes", NC_CONFIG_FILE_MAX);
    return -EINVAL;
  }
  char line[NC_CONFIG_VALUE_MAX + 256];
  size_t pos = 0;
  int lineno = 0;
  while (pos < len) {
    lineno++;
    size_t end = pos;
    while (end < len && text[end] != '\n')
      end++;
    size_t ll = end - pos;
    if (ll >= sizeof line) {
      snprintf(err, err_len, "line %d: longer than %zu characters", lineno, sizeof line - 1);
      return -EINVAL;
    }
    memcpy(line, text + pos, ll);
    line[ll] = '\0';
    pos = end + 1;
    if (memchr(line, '\0', ll)) {
      snprintf(err, err_len, "line %d: contains a NUL byte", lineno);
      return -EINVAL;
    }
    char *hash = strchr(line, '#');
    char *eq = strchr(line, '=');
    if (hash && (!eq || hash < eq))
      *hash = '\0';
    char *s = trim(line);
    if (*s == '\0')
      continue;
    eq = strchr(s, '=');
    if (!eq) {
      snprintf(err, err_len, "line %d: expected `key = value`", lineno);
      return -EINVAL;
    }
    *eq = '\0';
    char *key = trim(s), *val = trim(eq + 1);
    if (val[0] == '"') {
      /* "value" [# comment]: the value ends at the next quote. */
      char *close = strchr(val + 1, '"');
      if (!close) {
        snprintf(err, err_len, "line %d: unterminated quoted value", lineno);
        return -EINVAL;
      }
      char *rest = close + 1;
      while (*rest == ' ' || *rest == '\t')
        rest++;
      if (*rest && *rest != '#') {
        snprintf(err, err_len, "line %d: unexpected text after the quoted value", lineno);
        return -EINVAL;
      }
      *close = '\0';
      val++;
    } else {
      char *h = strchr(val, '#'); /* trailing comment after an unquoted value */
      if (h) {
        *h = '\0';
        val = trim(val);
      }
    }
    char e[400];
    if (nc_config_set(cfg, key, val, e, sizeof e) != 0) {
      snprintf(err, err_len, "line %d: %s", lineno, e);
      return -EINVAL;
    }
  }
  return 0;
}

int nc_config_load_file(struct nc_config *cfg, const char *path, char *err, size_t err_len) {
  FILE *f = fopen(path, "re");
  if (!f) {
    int rc = -errno;
    snprintf(err, err_len, "%s: %s", path, strerror(errno));
    return rc;
  }
  char *buf = malloc(NC_CONFIG_FILE_MAX + 1);
  if (!buf) {
    fclose(f);
    return -ENOMEM;
  }
  size_t n = fread(buf, 1, NC_CONFIG_FILE_MAX + 1, f);
  fclose(f);
  char e[512];
  int rc = nc_config_parse(cfg, buf, n, e, sizeof e);
  if (rc)
    snprintf(err, err_len, "%s: %s", path, e);
  free(buf);
  return rc;
}
