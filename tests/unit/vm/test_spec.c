/* VM create-request validation (src/vm/spec.h).
 *
 * One table of requests. Each row gives the JSON text, the expected
 * outcome and, for a refusal, the exact status, code and field in struct
 * nc_errinfo plus a piece of text the message must contain: the bad value
 * or the fix ("try 512M"). A person reading only the message must be able
 * to correct the request. */
#include "nc_test.h"

#include <jansson.h>
#include <stdbool.h>

#include "vm/spec.h"

#define MiB (1024ULL * 1024)

struct row {
  const char *json;
  int status;        /* 0 = accepted */
  const char *code;  /* for refusals */
  const char *field; /* "" when the error has no field */
  const char *hint;  /* the message must contain this */
};

static char name63[64], name64[65], name300[301], cmd1025[1026], cmd1024[1025];
static char req_name63[200], req_name64[200], req_name300[500], req_cmd1025[1200],
    req_cmd1024[1200], req_labels33[2000], req_labels32[2000], req_labelkey64[300],
    req_labelval64[300], req_machine64[300];

static void build_long_requests(void) {
  memset(name63, 'a', 63);
  memset(name64, 'a', 64);
  memset(name300, 'b', 300);
  memset(cmd1025, 'c', 1025);
  memset(cmd1024, 'c', 1024);
  snprintf(req_name63, sizeof req_name63, "{\"name\":\"%s\",\"image\":\"img\"}", name63);
  snprintf(req_name64, sizeof req_name64, "{\"name\":\"%s\",\"image\":\"img\"}", name64);
  snprintf(req_name300, sizeof req_name300, "{\"name\":\"%s\",\"image\":\"img\"}", name300);
  snprintf(req_cmd1025, sizeof req_cmd1025,
           "{\"name\":\"w\",\"image\":\"img\",\"cmdline_append\":\"%s\"}", cmd1025);
  snprintf(req_cmd1024, sizeof req_cmd1024,
           "{\"name\":\"w\",\"image\":\"img\",\"cmdline_append\":\"%s\"}", cmd1024);
  for (int n = 32; n <= 33; n++) {
    char *buf = n == 32 ? req_labels32 : req_labels33;
    size_t o = (size_t)snprintf(buf, 2000, "{\"name\":\"w\",\"image\":\"img\",\"labels\":{");
    for (int i = 0; i < n; i++)
      o += (size_t)snprintf(buf + o, 2000 - o, "%s\"k%d\":\"v\"", i ? "," : "", i);
    snprintf(buf + o, 2000 - o, "}}");
  }
  snprintf(req_labelkey64, sizeof req_labelkey64,
           "{\"name\":\"w\",\"image\":\"img\",\"labels\":{\"%s\":\"v\"}}", name64);
  snprintf(req_machine64, sizeof req_machine64,
           "{\"name\":\"w\",\"image\":\"img\",\"machine\":\"%s\"}", name64);
  snprintf(req_labelval64, sizeof req_labelval64,
           "{\"name\":\"w\",\"image\":\"img\",\"labels\":{\"k\":\"%s\"}}", name64);
}

#define OK(j) {j, 0, NULL, NULL, NULL}
#define BAD(j, code, field, hint) {j, 400, code, field, hint}

static const struct row *rows(size_t *n) {
  static struct row r[] = {
      /* ---- accepted ---- */
      OK("{\"name\":\"web-1\",\"image\":\"nc-test\"}"),
      OK("{\"name\":\"a\",\"vcpus\":64,\"memory\":\"1T\",\"image\":\"img\",\"start\":true,"
         "\"labels\":{\"app\":\"web\",\"app.kubernetes.io/name\":\"x_y-z\"},\"nic\":\"none\","
         "\"cmdline_append\":\"console=ttyS0 quiet\"}"),
      OK("{\"name\":\"0\",\"image\":\"img\",\"memory\":16777216}"),
      OK("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"512MiB\",\"nic\":\"user\"}"),
      OK("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"16384K\",\"start\":false}"),
      OK("{\"name\":\"w\",\"image\":\"img\",\"labels\":{}, \"cmdline_append\":\"\"}"),
      {req_name63, 0, NULL, NULL, NULL},
      {req_labels32, 0, NULL, NULL, NULL},
      {req_cmd1024, 0, NULL, NULL, NULL},
      /* ---- the body ---- */
      {"[]", 400, "bad_json", "", "JSON object"},
      {"\"web\"", 400, "bad_json", "", "JSON object"},
      {"null", 400, "bad_json", "", "JSON object"},
      BAD("{\"name\":\"w\",\"image\":\"img\",\"colour\":\"red\"}", "unknown_field", "colour",
          "colour"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"Name\":\"w\"}", "unknown_field", "Name", "Name"),
      /* ---- name ---- */
      {"{\"image\":\"img\"}", 400, "missing_field", "name", "required"},
      BAD("{\"name\":7,\"image\":\"img\"}", "invalid_field", "name", "string"),
      BAD("{\"name\":null,\"image\":\"img\"}", "invalid_field", "name", "string"),
      BAD("{\"name\":\"\",\"image\":\"img\"}", "invalid_field", "name", "empty"),
      BAD("{\"name\":\"A\",\"image\":\"img\"}", "invalid_field", "name", "\"A\""),
      BAD("{\"name\":\"-a\",\"image\":\"img\"}", "invalid_field", "name", "\"-a\""),
      BAD("{\"name\":\"a-\",\"image\":\"img\"}", "invalid_field", "name", "lower-case"),
      BAD("{\"name\":\"../x\",\"image\":\"img\"}", "invalid_field", "name", "\"../x\""),
      BAD("{\"name\":\"a/b\",\"image\":\"img\"}", "invalid_field", "name", "a/b"),
      BAD("{\"name\":\"web 1\",\"image\":\"img\"}", "invalid_field", "name", "like web-1"),
      BAD("{\"name\":\"w\\u00e9b\",\"image\":\"img\"}", "invalid_field", "name", "w\xc3\xa9" "b"),
      BAD("{\"name\":\"web_1\",\"image\":\"img\"}", "invalid_field", "name", "web_1"),
      {req_name64, 400, "invalid_field", "name", "64 characters"},
      {req_name300, 400, "invalid_field", "name", "300 characters"},
      /* ---- image ---- */
      {"{\"name\":\"w\"}", 400, "missing_field", "image", "required"},
      BAD("{\"name\":\"w\",\"image\":\"../etc\"}", "invalid_field", "image", "image list"),
      BAD("{\"name\":\"w\",\"image\":[]}", "invalid_field", "image", "string"),
      /* ---- vcpus ---- */
      BAD("{\"name\":\"w\",\"image\":\"img\",\"vcpus\":\"2\"}", "invalid_field", "vcpus",
          "integer from 1 to 64"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"vcpus\":1.5}", "invalid_field", "vcpus",
          "integer"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"vcpus\":0}", "invalid_field", "vcpus", "0"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"vcpus\":-1}", "invalid_field", "vcpus", "-1"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"vcpus\":65}", "invalid_field", "vcpus", "65"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"vcpus\":9223372036854775807}", "invalid_field",
          "vcpus", "1 to 64"),
      /* ---- memory ---- */
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"12X\"}", "invalid_field", "memory",
          "\"12X\""),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"12X\"}", "invalid_field", "memory",
          "try 512M"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"1.5G\"}", "invalid_field", "memory",
          "1.5G"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"\"}", "invalid_field", "memory",
          "try 512M"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"-512M\"}", "invalid_field", "memory",
          "-512M"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"99999999999999999999999\"}",
          "invalid_field", "memory", "try 512M"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":0}", "invalid_field", "memory",
          "positive"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":-268435456}", "invalid_field", "memory",
          "try 512M"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"0\"}", "invalid_field", "memory",
          "try 512M"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"15M\"}", "invalid_field", "memory",
          "between 16M and 1T"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":\"2T\"}", "invalid_field", "memory",
          "between 16M and 1T"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":1000000}", "invalid_field", "memory",
          "whole number of MiB"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":9223372036854775807}", "invalid_field",
          "memory", "1T"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":true}", "invalid_field", "memory",
          "\"512M\""),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"memory\":512.0}", "invalid_field", "memory",
          "\"512M\""),
      /* ---- nic ---- */
      BAD("{\"name\":\"w\",\"image\":\"img\",\"nic\":\"bridge\"}", "invalid_field", "nic",
          "\"bridge\""),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"nic\":\"USER\"}", "invalid_field", "nic",
          "use \"user\" or \"none\""),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"nic\":1}", "invalid_field", "nic", "string"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"nic\":null}", "invalid_field", "nic", "string"),
      /* ---- cmdline_append ---- */
      BAD("{\"name\":\"w\",\"image\":\"img\",\"cmdline_append\":\"a\\nb\"}", "invalid_field",
          "cmdline_append", "control characters"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"cmdline_append\":\"a\\tb\"}", "invalid_field",
          "cmdline_append", "control characters"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"cmdline_append\":\"a\\u007fb\"}",
          "invalid_field", "cmdline_append", "control characters"),
      {req_cmd1025, 400, "invalid_field", "cmdline_append", "1024"},
      BAD("{\"name\":\"w\",\"image\":\"img\",\"cmdline_append\":42}", "invalid_field",
          "cmdline_append", "string"),
      /* ---- start ---- */
      BAD("{\"name\":\"w\",\"image\":\"img\",\"start\":\"yes\"}", "invalid_field", "start",
          "true or false"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"start\":1}", "invalid_field", "start",
          "true or false"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"start\":null}", "invalid_field", "start",
          "true or false"),
      /* ---- labels ---- */
      BAD("{\"name\":\"w\",\"image\":\"img\",\"labels\":[]}", "invalid_field", "labels",
          "{\"app\":\"web\"}"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"labels\":\"app=web\"}", "invalid_field", "labels",
          "object"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"labels\":null}", "invalid_field", "labels",
          "object"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"labels\":{\"app\":1}}", "invalid_field", "labels",
          "\"app\""),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"labels\":{\"app\":{}}}", "invalid_field", "labels",
          "string"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"labels\":{\"\":\"v\"}}", "invalid_field", "labels",
          "1-63"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"labels\":{\"a b\":\"v\"}}", "invalid_field",
          "labels", "\"a b\""),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"labels\":{\"k\\u00e9\":\"v\"}}", "invalid_field",
          "labels", "letters, digits"),
      {req_labels33, 400, "invalid_field", "labels", "at most 32"},
      {req_labelkey64, 400, "invalid_field", "labels", "1-63"},
      {req_labelval64, 400, "invalid_field", "labels", "at most 63"},
      /* ---- machine (syntax only; the manager checks QEMU has it) ---- */
      OK("{\"name\":\"w\",\"image\":\"img\",\"machine\":\"pc-i440fx-9.2\"}"),
      OK("{\"name\":\"w\",\"image\":\"img\",\"machine\":\"q35\"}"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"machine\":\"pc,accel=kvm\"}",
          "invalid_field", "machine", "\"pc,accel=kvm\" is not a QEMU machine type"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"machine\":\"\"}", "invalid_field",
          "machine", "like pc-i440fx-10.0"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"machine\":\"pc i440fx\"}", "invalid_field",
          "machine", "letters, digits"),
      BAD("{\"name\":\"w\",\"image\":\"img\",\"machine\":7}", "invalid_field", "machine",
          "string"),
      {req_machine64, 400, "invalid_field", "machine", "1-63"},
  };
  *n = sizeof r / sizeof r[0];
  return r;
}

static void test_request_table(void **state) {
  (void)state;
  build_long_requests();
  size_t n;
  const struct row *r = rows(&n);
  EXPECT_TRUE(n >= 30);
  size_t accepted = 0, refused = 0;
  for (size_t i = 0; i < n; i++) {
    json_error_t jerr;
    json_t *req = json_loads(r[i].json, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!req)
      fail_msg("row %zu: test input is not JSON (%s): %.200s", i, jerr.text, r[i].json);
    struct nc_vm_spec spec;
    memset(&spec, 0x5a, sizeof spec);
    bool start = true;
    struct nc_errinfo err;
    memset(&err, 0, sizeof err);
    int rc = nc_vm_spec_from_request(req, &spec, &start, &err);
    if (r[i].status == 0) {
      if (rc != 0)
        fail_msg("row %zu: %.200s\n  refused with %d %s field \"%s\": %s", i, r[i].json,
                 err.status, err.code, err.field, err.message);
      EXPECT_TRUE(json_is_object(spec.labels));
      nc_vm_spec_clear(&spec);
      accepted++;
    } else {
      if (rc == 0)
        fail_msg("row %zu: %.200s\n  accepted; want %d %s field \"%s\"", i, r[i].json,
                 r[i].status, r[i].code, r[i].field);
      if (rc >= 0)
        fail_msg("row %zu: refused with a non-negative code %d", i, rc);
      if (err.status != r[i].status || strcmp(err.code, r[i].code) != 0 ||
          strcmp(err.field, r[i].field) != 0)
        fail_msg("row %zu: %.200s\n  got %d %s field \"%s\" (%s)\n  want %d %s field \"%s\"", i,
                 r[i].json, err.status, err.code, err.field, err.message, r[i].status,
                 r[i].code, r[i].field);
      if (err.message[0] == '\0')
        fail_msg("row %zu: empty message", i);
      if (!strstr(err.message, r[i].hint))
        fail_msg("row %zu: %.200s\n  message \"%s\" does not contain \"%s\"", i, r[i].json,
                 err.message, r[i].hint);
      /* "On failure spec holds nothing." */
      if (spec.labels != NULL)
        fail_msg("row %zu: spec.labels is set after a refusal", i);
      refused++;
    }
    json_decref(req);
  }
  EXPECT_TRUE(accepted >= 5);
  EXPECT_TRUE(refused >= 30);
}

static void test_defaults(void **state) {
  (void)state;
  json_t *req = json_loads("{\"name\":\"web-1\",\"image\":\"nc-test\"}", 0, NULL);
  struct nc_vm_spec spec;
  bool start = true;
  struct nc_errinfo err = {0};
  EXPECT_RC(nc_vm_spec_from_request(req, &spec, &start, &err), 0);
  EXPECT_STR(spec.name, "web-1");
  EXPECT_STR(spec.image, "nc-test");
  EXPECT_I64(spec.vcpus, 1);
  EXPECT_U64(spec.memory_bytes, 256 * MiB);
  EXPECT_I64(spec.nic, NC_NIC_USER);
  EXPECT_I64(start, false);
  EXPECT_STR(spec.cmdline_append, "");
  EXPECT_STR(spec.machine, ""); /* the manager pins it */
  EXPECT_I64(json_object_size(spec.labels), 0);
  nc_vm_spec_clear(&spec);
  json_decref(req);
}

static void test_every_field(void **state) {
  (void)state;
  json_t *req = json_loads("{\"name\":\"db-2\",\"vcpus\":4,\"memory\":\"2G\",\"image\":\"img\","
                           "\"start\":true,\"labels\":{\"tier\":\"db\"},\"nic\":\"none\","
                           "\"cmdline_append\":\"quiet\"}",
                           0, NULL);
  struct nc_vm_spec spec;
  bool start = false;
  struct nc_errinfo err = {0};
  EXPECT_RC(nc_vm_spec_from_request(req, &spec, &start, &err), 0);
  EXPECT_I64(spec.vcpus, 4);
  EXPECT_U64(spec.memory_bytes, 2048 * MiB);
  EXPECT_I64(spec.nic, NC_NIC_NONE);
  EXPECT_I64(start, true);
  EXPECT_STR(spec.cmdline_append, "quiet");
  EXPECT_STR(json_string_value(json_object_get(spec.labels, "tier")), "db");
  /* The spec owns a copy: changing the request does not change it. */
  json_object_set_new(json_object_get(req, "labels"), "tier", json_string("web"));
  EXPECT_STR(json_string_value(json_object_get(spec.labels, "tier")), "db");
  nc_vm_spec_clear(&spec);
  nc_vm_spec_clear(&spec); /* twice is harmless */
  json_decref(req);
}

static void test_round_trip(void **state) {
  (void)state;
  json_t *req = json_loads("{\"name\":\"db-2\",\"vcpus\":3,\"memory\":1610612736,\"image\":\"img\","
                           "\"labels\":{\"a\":\"b\",\"c\":\"\"},\"nic\":\"none\","
                           "\"cmdline_append\":\"x=1 y\",\"machine\":\"pc-i440fx-7.2\"}",
                           0, NULL);
  struct nc_vm_spec a, b, c;
  bool start;
  struct nc_errinfo err = {0};
  EXPECT_RC(nc_vm_spec_from_request(req, &a, &start, &err), 0);
  json_t *j = nc_vm_spec_to_json(&a);
  assert_non_null(j);
  EXPECT_STR(json_string_value(json_object_get(j, "memory")), "1536M");
  EXPECT_I64(json_integer_value(json_object_get(j, "memory_bytes")), 1610612736);
  EXPECT_STR(json_string_value(json_object_get(j, "nic")), "none");
  EXPECT_STR(json_string_value(json_object_get(j, "machine")), "pc-i440fx-7.2");
  EXPECT_RC(nc_vm_spec_from_json(j, &b), 0);
  EXPECT_STR(b.machine, "pc-i440fx-7.2");
  EXPECT_STR(b.name, a.name);
  EXPECT_STR(b.image, a.image);
  EXPECT_STR(b.cmdline_append, a.cmdline_append);
  EXPECT_I64(b.vcpus, a.vcpus);
  EXPECT_U64(b.memory_bytes, a.memory_bytes);
  EXPECT_I64(b.nic, a.nic);
  EXPECT_TRUE(json_equal(b.labels, a.labels));
  nc_vm_spec_copy(&c, &b);
  EXPECT_TRUE(json_equal(c.labels, a.labels));
  EXPECT_TRUE(c.labels != b.labels);
  EXPECT_STR(c.machine, "pc-i440fx-7.2");
  nc_vm_spec_clear(&a);
  nc_vm_spec_clear(&b);
  nc_vm_spec_clear(&c);
  json_decref(j);
  json_decref(req);
}

/* A record stored before specs had a machine: it reads back as "pc", the
 * type it always ran, and is written out with it from then on. An unset
 * machine (a create request before the manager pins it) is also "pc". */
static void test_round_trip_without_machine(void **state) {
  (void)state;
  json_t *old = json_loads("{\"name\":\"old-1\",\"vcpus\":1,\"memory\":\"256M\","
                           "\"memory_bytes\":268435456,\"image\":\"img\",\"nic\":\"user\","
                           "\"labels\":{},\"cmdline_append\":\"\"}",
                           0, NULL);
  assert_non_null(old);
  struct nc_vm_spec s;
  EXPECT_RC(nc_vm_spec_from_json(old, &s), 0);
  EXPECT_STR(s.machine, "pc");
  json_t *j = nc_vm_spec_to_json(&s);
  EXPECT_STR(json_string_value(json_object_get(j, "machine")), "pc");
  json_decref(j);
  s.machine[0] = '\0';
  j = nc_vm_spec_to_json(&s);
  EXPECT_STR(json_string_value(json_object_get(j, "machine")), "pc");
  json_decref(j);
  nc_vm_spec_clear(&s);
  json_decref(old);
}

static void test_from_json_rejects(void **state) {
  (void)state;
  static const char *const bad[] = {
      "{}",
      "{\"name\":\"A\",\"vcpus\":1,\"memory_bytes\":1,\"image\":\"i\",\"nic\":\"user\"}",
      "{\"name\":\"a\",\"vcpus\":0,\"memory_bytes\":1,\"image\":\"i\",\"nic\":\"user\"}",
      "{\"name\":\"a\",\"vcpus\":65,\"memory_bytes\":1,\"image\":\"i\",\"nic\":\"user\"}",
      "{\"name\":\"a\",\"vcpus\":1,\"memory_bytes\":0,\"image\":\"i\",\"nic\":\"user\"}",
      "{\"name\":\"a\",\"vcpus\":1,\"memory_bytes\":-1,\"image\":\"i\",\"nic\":\"user\"}",
      "{\"name\":\"a\",\"vcpus\":\"1\",\"memory_bytes\":1,\"image\":\"i\",\"nic\":\"user\"}",
      "{\"name\":\"a\",\"vcpus\":1,\"memory_bytes\":1,\"nic\":\"user\"}",
      /* a machine that would smuggle options into -machine, or no string */
      "{\"name\":\"a\",\"vcpus\":1,\"memory_bytes\":1,\"image\":\"i\",\"nic\":\"user\","
      "\"machine\":\"pc,accel=kvm\"}",
      "{\"name\":\"a\",\"vcpus\":1,\"memory_bytes\":1,\"image\":\"i\",\"nic\":\"user\","
      "\"machine\":\"\"}",
      "{\"name\":\"a\",\"vcpus\":1,\"memory_bytes\":1,\"image\":\"i\",\"nic\":\"user\","
      "\"machine\":1}",
      "[]",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    json_t *j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
    assert_non_null(j);
    struct nc_vm_spec s;
    int rc = nc_vm_spec_from_json(j, &s);
    if (rc == 0) {
      nc_vm_spec_clear(&s);
      fail_msg("nc_vm_spec_from_json accepted %s", bad[i]);
    }
    json_decref(j);
  }
}

static void test_name_valid(void **state) {
  (void)state;
  static const char *const good[] = {"a", "0", "web-1", "a-b-c", "x9"};
  static const char *const bad[] = {"", "-", "-a", "a-", "A", "a.b", "a_b", "a b", "..", "é",
                                    NULL};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    if (!nc_name_valid(good[i]))
      fail_msg("nc_name_valid(\"%s\") is false", good[i]);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (nc_name_valid(bad[i]))
      fail_msg("nc_name_valid(\"%s\") is true", bad[i] ? bad[i] : "(null)");
  char n[70];
  memset(n, 'a', sizeof n);
  n[63] = '\0';
  EXPECT_TRUE(nc_name_valid(n));
  n[63] = 'a';
  n[64] = '\0';
  EXPECT_TRUE(!nc_name_valid(n));
}

static void test_check_fields(void **state) {
  (void)state;
  static const char *const allowed[] = {"a", "b", NULL};
  json_t *ok = json_loads("{\"a\":1,\"b\":2}", 0, NULL);
  json_t *bad = json_loads("{\"a\":1,\"zz\":2}", 0, NULL);
  struct nc_errinfo err = {0};
  EXPECT_RC(nc_json_check_fields(ok, allowed, "thing", &err), 0);
  EXPECT_TRUE(nc_json_check_fields(bad, allowed, "thing", &err) < 0);
  EXPECT_I64(err.status, 400);
  EXPECT_STR(err.code, "unknown_field");
  EXPECT_STR(err.field, "zz");
  EXPECT_CONTAINS(err.message, "thing");
  json_decref(ok);
  json_decref(bad);
}

/* Every message the API sends is put into a JSON string, and jansson
 * refuses strings that are not valid UTF-8. A validator that quotes user
 * input with a byte limit ("%.32s") must not cut a multi-byte character
 * in half, or the API cannot render the error at all. */
static bool utf8_valid(const char *s) {
  json_t *j = json_string(s);
  json_decref(j);
  return j != NULL;
}

static void test_messages_stay_utf8(void **state) {
  (void)state;
  static const char *const reqs[] = {
      /* 31 ASCII bytes then é: "%.32s" would keep only the first byte of é */
      "{\"name\":\"w\",\"image\":\"img\",\"memory\":\"1111111111111111111111111111111\\u00e9\"}",
      "{\"name\":\"w\",\"image\":\"img\",\"nic\":\"1111111111111111111111111111111\\u00e9\"}",
      /* image: 63 ASCII bytes then é, quoted with "%.64s" */
      "{\"name\":\"w\",\"image\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "\\u00e9\"}",
      /* unknown key: 63 ASCII bytes then é, quoted with "%.64s" */
      "{\"name\":\"w\",\"image\":\"img\",\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaa\\u00e9\":1}",
      "{\"name\":\"w\",\"image\":\"img\",\"labels\":{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaa\\u00e9\":\"v\"}}",
  };
  int bad = 0;
  for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
    json_t *req = json_loads(reqs[i], 0, NULL);
    assert_non_null(req);
    struct nc_vm_spec spec;
    bool start;
    struct nc_errinfo err = {0};
    EXPECT_TRUE(nc_vm_spec_from_request(req, &spec, &start, &err) < 0);
    if (!utf8_valid(err.message) || !utf8_valid(err.field)) {
      char shown[600];
      size_t o = 0;
      for (const unsigned char *p = (const unsigned char *)err.message; *p && o < 590; p++)
        o += (size_t)snprintf(shown + o, sizeof shown - o, *p < 0x80 ? "%c" : "\\x%02x", *p);
      print_error("request %zu: the %s error is not valid UTF-8 (a character was cut), so "
                  "the API cannot put it in JSON: \"%s\"\n",
                  i, err.field, shown);
      bad++;
    }
    json_decref(req);
  }
  EXPECT_I64(bad, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request_table),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_every_field),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_round_trip_without_machine),
      cmocka_unit_test(test_from_json_rejects),
      cmocka_unit_test(test_name_valid),
      cmocka_unit_test(test_check_fields),
      cmocka_unit_test(test_messages_stay_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
