/* novacrond configuration (src/boot/config.h): defaults, every key, every
 * bad value (the message names the line and the key), unknown keys,
 * quotes, comments, the line and file caps, and listen parsing with IPv6. */
#include "nc_test.h"

#include "boot/config.h"

static int parse(struct nc_config *c, const char *text, char *err, size_t err_len) {
  nc_config_defaults(c);
  err[0] = '\0';
  return nc_config_parse(c, text, strlen(text), err, err_len);
}

static void test_defaults(void **state) {
  (void)state;
  struct nc_config c;
  memset(&c, 0x7f, sizeof c);
  nc_config_defaults(&c);
  EXPECT_STR(c.data_dir, "/var/lib/novacron");
  EXPECT_STR(c.listen_host, "");
  EXPECT_STR(c.log_level, "info");
  EXPECT_STR(c.qemu, "qemu-system-x86_64");
  EXPECT_STR(c.qemu_img, "qemu-img");
  EXPECT_I64(c.accel, NC_ACCEL_PREF_AUTO);
  EXPECT_I64(c.stop_timeout_s, 30);
  EXPECT_I64(c.reconcile_interval_ms, 1000);
  EXPECT_I64(c.kvm_probe_timeout_ms, 8000);
  EXPECT_STR(c.dwcp_tls, "auto");
  /* the node name is the host name folded into a DNS label */
  EXPECT_TRUE(c.node_name[0] != '\0');
  EXPECT_I64(strspn(c.node_name, "abcdefghijklmnopqrstuvwxyz0123456789-"), strlen(c.node_name));
}

static void test_every_key(void **state) {
  (void)state;
  struct nc_config c;
  char err[512];
  const char *text = "# novacrond.conf\n"
                     "\n"
                     "data_dir = /srv/nc\n"
                     "listen = 127.0.0.1:8470\n"
                     "node_name = host-a\n"
                     "log_level = debug\n"
                     "qemu = /opt/qemu/bin/qemu-system-x86_64\n"
                     "qemu_img = /opt/qemu/bin/qemu-img\n"
                     "accel = kvm\n"
                     "stop_timeout_s = 3600\n"
                     "reconcile_interval_ms = 100\n"
                     "kvm_probe_timeout_ms = 120000\n";
  int rc = parse(&c, text, err, sizeof err);
  if (rc)
    fail_msg("parse failed: %s", err);
  EXPECT_STR(c.data_dir, "/srv/nc");
  EXPECT_STR(c.listen_host, "127.0.0.1");
  EXPECT_I64(c.listen_port, 8470);
  EXPECT_STR(c.node_name, "host-a");
  EXPECT_STR(c.log_level, "debug");
  EXPECT_STR(c.qemu, "/opt/qemu/bin/qemu-system-x86_64");
  EXPECT_STR(c.qemu_img, "/opt/qemu/bin/qemu-img");
  EXPECT_I64(c.accel, NC_ACCEL_PREF_KVM);
  EXPECT_I64(c.stop_timeout_s, 3600);
  EXPECT_I64(c.reconcile_interval_ms, 100);
  EXPECT_I64(c.kvm_probe_timeout_ms, 120000);

  /* Later lines win; other accel values; lower bounds. */
  rc = parse(&c,
             "accel = tcg\naccel = auto\nstop_timeout_s = 1\nreconcile_interval_ms = 60000\n"
             "kvm_probe_timeout_ms = 500\nlog_level = error\nlisten = 127.0.0.1:1\nlisten =\n",
             err, sizeof err);
  if (rc)
    fail_msg("parse failed: %s", err);
  EXPECT_I64(c.accel, NC_ACCEL_PREF_AUTO);
  EXPECT_I64(c.stop_timeout_s, 1);
  EXPECT_I64(c.reconcile_interval_ms, 60000);
  EXPECT_I64(c.kvm_probe_timeout_ms, 500);
  EXPECT_STR(c.log_level, "error");
  EXPECT_STR(c.listen_host, ""); /* "listen =" turns TCP off again */

  rc = parse(&c, "dwcp_tls = off\n", err, sizeof err);
  if (rc)
    fail_msg("parse failed: %s", err);
  EXPECT_STR(c.dwcp_tls, "off");
  rc = parse(&c, "dwcp_tls = on\n", err, sizeof err);
  if (rc)
    fail_msg("parse failed: %s", err);
  EXPECT_STR(c.dwcp_tls, "on");
}

static void test_whitespace_comments_quotes(void **state) {
  (void)state;
  struct nc_config c;
  char err[512];
  const char *text = "   # indented comment\r\n"
                     "\tqemu\t=\t/usr/bin/qemu  \r\n"
                     "accel = kvm   # the fast one\n"
                     "qemu_img = \"/opt/my tools/qemu-img\"\n"
                     "data_dir=\"/srv/a#b\"\n"
                     "# data_dir = /nope\n"
                     "node_name = \"n-1\"\n"
                     "   \n"
                     "log_level = warn"; /* no final newline */
  int rc = parse(&c, text, err, sizeof err);
  if (rc)
    fail_msg("parse failed: %s", err);
  EXPECT_STR(c.qemu, "/usr/bin/qemu");
  EXPECT_I64(c.accel, NC_ACCEL_PREF_KVM);
  EXPECT_STR(c.qemu_img, "/opt/my tools/qemu-img");
  EXPECT_STR(c.data_dir, "/srv/a#b"); /* '#' inside quotes is data */
  EXPECT_STR(c.node_name, "n-1");
  EXPECT_STR(c.log_level, "warn");
  /* An empty quoted value is an empty value. */
  rc = parse(&c, "qemu = \"\"\n", err, sizeof err);
  EXPECT_RC(rc, 0);
  EXPECT_STR(c.qemu, "");
}

/* '#' starts a comment (config.h) after a quoted value too. */
static void test_comment_after_quoted_value(void **state) {
  (void)state;
  struct nc_config c;
  char err[512];
  int rc = parse(&c, "qemu = \"/opt/q/qemu\"  # local build\n", err, sizeof err);
  if (rc)
    fail_msg("a comment after a quoted value is refused: %s", err);
  EXPECT_STR(c.qemu, "/opt/q/qemu");
  rc = parse(&c, "qemu = \"/opt/q/qemu\" # \"quoted\" comment\n", err, sizeof err);
  if (rc)
    fail_msg("a comment after a quoted value is refused: %s", err);
  EXPECT_STR(c.qemu, "/opt/q/qemu");
}

struct bad {
  const char *text;
  int line;
  const char *must; /* the message must also contain this (the key, the fix) */
};

static void test_bad_values(void **state) {
  (void)state;
  static const struct bad bad[] = {
      {"data_dir = relative/path\n", 1, "data_dir"},
      {"data_dir =\n", 1, "data_dir"},
      {"\n\nlisten = 8470\n", 3, "listen"},
      {"listen = host:\n", 1, "127.0.0.1:8470"},
      {"listen = :8470\n", 1, "listen"},
      {"listen = 127.0.0.1:65536\n", 1, "listen"},
      {"listen = 127.0.0.1:-1\n", 1, "listen"},
      {"listen = 127.0.0.1:80x\n", 1, "listen"},
      {"listen = [::1]\n", 1, "[::1]:8470"},
      {"listen = [::1]8470\n", 1, "listen"},
      {"listen = []:8470\n", 1, "listen"},
      {"node_name = Host_A\n", 1, "node_name"},
      {"node_name = -a\n", 1, "node_name"},
      {"node_name =\n", 1, "node_name"},
      {"log_level = verbose\n", 1, "debug, info, warn or error"},
      {"log_level = INFO\n", 1, "log_level"},
      {"accel = hvf\n", 1, "auto, tcg or kvm"},
      {"accel =\n", 1, "accel"},
      {"dwcp_tls = yes\n", 1, "auto (TLS 1.3 unless both ends are loopback), on or off"},
      {"dwcp_tls =\n", 1, "dwcp_tls"},
      {"stop_timeout_s = 0\n", 1, "stop_timeout_s"},
      {"stop_timeout_s = 3601\n", 1, "1 to 3600"},
      {"stop_timeout_s = 10s\n", 1, "stop_timeout_s"},
      {"stop_timeout_s = \n", 1, "stop_timeout_s"},
      {"stop_timeout_s = 99999999999999999999\n", 1, "stop_timeout_s"},
      {"reconcile_interval_ms = 99\n", 1, "reconcile_interval_ms"},
      {"reconcile_interval_ms = 60001\n", 1, "100 to 60000"},
      {"kvm_probe_timeout_ms = 499\n", 1, "kvm_probe_timeout_ms"},
      {"kvm_probe_timeout_ms = 120001\n", 1, "500 to 120000"},
      {"# ok\nqemu = /x\nbogus = 1\n", 3, "\"bogus\""},
      {"Data_Dir = /x\n", 1, "known: data_dir"},
      {"just some words\n", 1, "key = value"},
      {"qemu = \"/unterminated\n", 1, "unterminated"},
      {"qemu = \"\n", 1, "unterminated"},
      {"= value\n", 1, "unknown key \"\""},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct nc_config c;
    char err[512];
    int rc = parse(&c, bad[i].text, err, sizeof err);
    if (rc != -EINVAL)
      fail_msg("case %zu \"%s\": returned %d, want -EINVAL", i, bad[i].text, rc);
    char want_line[32];
    snprintf(want_line, sizeof want_line, "line %d: ", bad[i].line);
    if (strncmp(err, want_line, strlen(want_line)) != 0)
      fail_msg("case %zu \"%s\": message \"%s\" does not start with \"%s\"", i, bad[i].text,
               err, want_line);
    if (!strstr(err, bad[i].must))
      fail_msg("case %zu \"%s\": message \"%s\" does not contain \"%s\"", i, bad[i].text, err,
               bad[i].must);
  }
}

/* A refused line changes nothing that came before it. */
static void test_error_keeps_earlier_values(void **state) {
  (void)state;
  struct nc_config c;
  char err[512];
  EXPECT_RC(parse(&c, "stop_timeout_s = 5\nstop_timeout_s = 0\n", err, sizeof err), -EINVAL);
  EXPECT_I64(c.stop_timeout_s, 5);
  EXPECT_RC(parse(&c, "listen = 127.0.0.1:80\nlisten = nope\n", err, sizeof err), -EINVAL);
  EXPECT_STR(c.listen_host, "127.0.0.1");
  EXPECT_I64(c.listen_port, 80);
}

static void test_caps(void **state) {
  (void)state;
  struct nc_config c;
  char err[512];
  /* value cap: 1023 characters fit, 1024 do not */
  char *text = malloc(NC_CONFIG_FILE_MAX + 100);
  assert_non_null(text);
  strcpy(text, "qemu = /");
  memset(text + 8, 'q', NC_CONFIG_VALUE_MAX - 1);
  strcpy(text + 8 + NC_CONFIG_VALUE_MAX - 1, "\n");
  EXPECT_RC(parse(&c, text, err, sizeof err), 0);
  EXPECT_I64(strlen(c.qemu), NC_CONFIG_VALUE_MAX);
  strcpy(text, "\nqemu = /");
  memset(text + 9, 'q', NC_CONFIG_VALUE_MAX);
  strcpy(text + 9 + NC_CONFIG_VALUE_MAX, "\n");
  EXPECT_RC(parse(&c, text, err, sizeof err), -EINVAL);
  EXPECT_CONTAINS(err, "line 2: ");
  EXPECT_CONTAINS(err, "qemu");
  EXPECT_CONTAINS(err, "1023");

  /* line cap: a very long line is an error naming the line, not a crash */
  memset(text, ' ', 5000);
  memcpy(text + 4990, "accel=kvm\n", 11);
  EXPECT_RC(parse(&c, text, err, sizeof err), -EINVAL);
  EXPECT_CONTAINS(err, "line 1: longer than");

  /* file cap: exactly NC_CONFIG_FILE_MAX bytes is fine, one more is not */
  size_t o = 0;
  while (o + 64 <= NC_CONFIG_FILE_MAX) {
    memset(text + o, '#', 63);
    text[o + 63] = '\n';
    o += 64;
  }
  EXPECT_I64(o, NC_CONFIG_FILE_MAX);
  nc_config_defaults(&c);
  EXPECT_RC(nc_config_parse(&c, text, o, err, sizeof err), 0);
  text[o] = '\n';
  EXPECT_RC(nc_config_parse(&c, text, o + 1, err, sizeof err), -EINVAL);
  EXPECT_CONTAINS(err, "larger than");
  free(text);

  /* a NUL inside a line */
  static const char nul[] = "accel = kvm\nqemu = /a\0b\n";
  nc_config_defaults(&c);
  EXPECT_RC(nc_config_parse(&c, nul, sizeof nul - 1, err, sizeof err), -EINVAL);
  EXPECT_CONTAINS(err, "line 2: ");
  EXPECT_CONTAINS(err, "NUL");

  /* a tiny error buffer is truncated, still terminated */
  char small[12];
  memset(small, 'x', sizeof small);
  nc_config_defaults(&c);
  EXPECT_RC(nc_config_parse(&c, "bogus = 1\n", 10, small, sizeof small), -EINVAL);
  EXPECT_I64(strnlen(small, sizeof small), sizeof small - 1);
}

struct listen_case {
  const char *in;
  const char *host; /* NULL: refused */
  int port;
};

static void test_listen(void **state) {
  (void)state;
  static const struct listen_case cases[] = {
      {"127.0.0.1:8470", "127.0.0.1", 8470},
      {"0.0.0.0:1", "0.0.0.0", 1},
      {"127.0.0.1:65535", "127.0.0.1", 65535},
      {"localhost:8470", NULL, 0}, /* the listener binds numeric addresses only */
      {"127.0.0.1:0", "127.0.0.1", 0}, /* 0: pick a free port */
      {"[::1]:8470", "::1", 8470},
      {"[::]:80", "::", 80},
      {"[fe80::1%eth0]:8470", NULL, 0}, /* scoped addresses are not supported */
      {"[2001:db8::1]:443", "2001:db8::1", 443},
      {"8470", NULL, 0},
      {"host:", NULL, 0},
      {":8470", NULL, 0},
      {"[::1]", NULL, 0},
      {"[::1]:", NULL, 0},
      {"[::1]8470", NULL, 0},
      {"[]:8470", NULL, 0},
      {"[::1:8470", NULL, 0},
      {"h:65536", NULL, 0},
      {"h:-1", NULL, 0},
      {"h:1e3", NULL, 0},
      {"", NULL, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char host[256] = "unchanged";
    int port = -7;
    int rc = nc_config_parse_listen(cases[i].in, host, sizeof host, &port);
    if (cases[i].host) {
      if (rc != 0 || strcmp(host, cases[i].host) != 0 || port != cases[i].port)
        fail_msg("\"%s\": rc %d host \"%s\" port %d, want \"%s\" %d", cases[i].in, rc, host,
                 port, cases[i].host, cases[i].port);
    } else if (rc == 0) {
      fail_msg("\"%s\" accepted as host \"%s\" port %d", cases[i].in, host, port);
    }
  }
  /* a host longer than the buffer is refused, not truncated */
  char small[8];
  int port;
  EXPECT_RC(nc_config_parse_listen("10.0.0.1:80", small, sizeof small, &port), -EINVAL);
  EXPECT_RC(nc_config_parse_listen("1.2.3.4:80", small, sizeof small, &port), 0);
}

/* An IPv6 address has colons, so only the bracketed form is HOST:PORT
 * (config.h: "HOST:PORT" or "[V6]:PORT"). Unbracketed, "::1" must not
 * become host ":" port 1. */
static void test_listen_unbracketed_ipv6_refused(void **state) {
  (void)state;
  static const char *const bad[] = {"::1", "2001:db8::1", "::1:8470", "fe80::1:80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char host[256] = "";
    int port = -1;
    if (nc_config_parse_listen(bad[i], host, sizeof host, &port) == 0)
      fail_msg("\"%s\" accepted as host \"%s\" port %d; want a refusal asking for [V6]:PORT",
               bad[i], host, port);
  }
}

static void test_set_directly(void **state) {
  (void)state;
  struct nc_config c;
  char err[512];
  nc_config_defaults(&c);
  EXPECT_RC(nc_config_set(&c, "listen", "[::1]:9000", err, sizeof err), 0);
  EXPECT_STR(c.listen_host, "::1");
  EXPECT_I64(c.listen_port, 9000);
  EXPECT_RC(nc_config_set(&c, "accel", "nope", err, sizeof err), -EINVAL);
  EXPECT_CONTAINS(err, "accel \"nope\"");
  EXPECT_RC(nc_config_set(&c, "nope", "1", err, sizeof err), -EINVAL);
  EXPECT_CONTAINS(err, "unknown key \"nope\"");
}

static void test_load_file(void **state) {
  (void)state;
  char dir[128], path[256], err[600];
  EXPECT_RC(nct_mkdtemp(dir, sizeof dir, "conf"), 0);
  snprintf(path, sizeof path, "%s/novacrond.conf", dir);
  struct nc_config c;
  nc_config_defaults(&c);
  EXPECT_RC(nc_config_load_file(&c, path, err, sizeof err), -ENOENT);
  EXPECT_CONTAINS(err, path);
  EXPECT_RC(nct_write_file(path, "node_name = from-file\naccel = tcg\n"), 0);
  EXPECT_RC(nc_config_load_file(&c, path, err, sizeof err), 0);
  EXPECT_STR(c.node_name, "from-file");
  EXPECT_I64(c.accel, NC_ACCEL_PREF_TCG);
  EXPECT_RC(nct_write_file(path, "accel = tcg\naccel = warp\n"), 0);
  EXPECT_RC(nc_config_load_file(&c, path, err, sizeof err), -EINVAL);
  EXPECT_CONTAINS(err, path);
  EXPECT_CONTAINS(err, "line 2: accel");
  /* bigger than the cap: refused, whatever the content */
  FILE *fp = fopen(path, "w");
  for (int i = 0; i <= NC_CONFIG_FILE_MAX / 8; i++)
    fputs("# pad.\n\n", fp);
  fclose(fp);
  EXPECT_RC(nc_config_load_file(&c, path, err, sizeof err), -EINVAL);
  EXPECT_CONTAINS(err, "larger than");
  nct_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_every_key),
      cmocka_unit_test(test_whitespace_comments_quotes),
      cmocka_unit_test(test_comment_after_quoted_value),
      cmocka_unit_test(test_bad_values),
      cmocka_unit_test(test_error_keeps_earlier_values),
      cmocka_unit_test(test_caps),
      cmocka_unit_test(test_listen),
      cmocka_unit_test(test_listen_unbracketed_ipv6_refused),
      cmocka_unit_test(test_set_directly),
      cmocka_unit_test(test_load_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
