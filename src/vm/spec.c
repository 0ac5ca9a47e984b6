#include "vm/spec.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hv/machine.h"
#include "util/err.h"
#include "util/size.h"

_Static_assert(NC_VM_MACHINE_MAX == NC_HV_MACHINE_LEN_MAX, "a spec holds any valid machine name");

bool nc_name_valid(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > NC_NAME_MAX || s[0] == '-' || s[n - 1] == '-')
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return false;
  }
  return true;
}

int nc_name_check(const char *what, const char *field, const char *name,
                  struct nc_errinfo *err) {
  if (nc_name_valid(name))
    return 0;
  size_t n = strlen(name);
  if (n == 0)
    return nc_errinfo_set(err, 400, "invalid_field", field, "%s name is empty", what);
  if (n > NC_NAME_MAX)
    return nc_errinfo_set(err, 400, "invalid_field", field,
                          "%s name is %zu characters long; the limit is %d", what, n,
                          NC_NAME_MAX);
  char ex[NC_EXCERPT_LEN];
  return nc_errinfo_set(err, 400, "invalid_field", field,
                        "%s name \"%s\" is not valid: use lower-case letters, digits and "
                        "'-' (not first or last), like web-1",
                        what, nc_excerpt(name, ex, sizeof ex));
}

int nc_json_check_fields(json_t *obj, const char *const *allowed, const char *what,
                         struct nc_errinfo *err) {
  const char *key;
  json_t *v;
  json_object_foreach(obj, key, v) {
    bool ok = false;
    for (const char *const *a = allowed; *a; a++) {
      if (strcmp(*a, key) == 0) {
        ok = true;
        break;
      }
    }
    char ex[NC_EXCERPT_LEN];
    if (!ok)
      return nc_errinfo_set(err, 400, "unknown_field", nc_excerpt(key, ex, sizeof ex),
                            "%s: unknown field \"%s\" (remove it; see docs/api.md)", what, ex);
  }
  return 0;
}

static int get_string(json_t *req, const char *field, bool required, const char **out,
                      struct nc_errinfo *err) {
  json_t *v = json_object_get(req, field);
  *out = NULL;
  if (!v) {
    if (required)
      return nc_errinfo_set(err, 400, "missing_field", field, "field \"%s\" is required",
                            field);
    return 0;
  }
  if (!json_is_string(v))
    return nc_errinfo_set(err, 400, "invalid_field", field, "field \"%s\" must be a string",
                          field);
  *out = json_string_value(v);
  return 0;
}

static int parse_labels(json_t *labels, json_t **out, struct nc_errinfo *err) {
  if (!json_is_object(labels))
    return nc_errinfo_set(err, 400, "invalid_field", "labels",
                          "labels must be an object of strings, like {\"app\":\"web\"}");
  if (json_object_size(labels) > NC_VM_LABELS_MAX)
    return nc_errinfo_set(err, 400, "invalid_field", "labels", "at most %d labels",
                          NC_VM_LABELS_MAX);
  const char *k;
  json_t *v;
  char ex[NC_EXCERPT_LEN];
  json_object_foreach(labels, k, v) {
    size_t kl = strlen(k);
    if (kl == 0 || kl > NC_VM_LABEL_LEN_MAX)
      return nc_errinfo_set(err, 400, "invalid_field", "labels",
                            "label keys must be 1-%d characters", NC_VM_LABEL_LEN_MAX);
    for (size_t i = 0; i < kl; i++) {
      char c = k[i];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '/'))
        return nc_errinfo_set(err, 400, "invalid_field", "labels",
                              "label key \"%s\" may only use letters, digits, - _ . /",
                              nc_excerpt(k, ex, sizeof ex));
    }
    if (!json_is_string(v) || json_string_length(v) > NC_VM_LABEL_LEN_MAX)
      return nc_errinfo_set(err, 400, "invalid_field", "labels",
                            "label \"%s\" must be a string of at most %d characters",
                            nc_excerpt(k, ex, sizeof ex),
                            NC_VM_LABEL_LEN_MAX);
  }
  *out = json_deep_copy(labels);
  return 0;
}

static int check_cmdline(const char *s, struct nc_errinfo *err) {
  if (strlen(s) > NC_VM_CMDLINE_MAX)
    return nc_errinfo_set(err, 400, "invalid_field", "cmdline_append",
                          "cmdline_append is longer than %d characters", NC_VM_CMDLINE_MAX);
  for (const char *p = s; *p; p++) {
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      return nc_errinfo_set(err, 400, "invalid_field", "cmdline_append",
                            "cmdline_append may not contain control characters");
  }
  return 0;
}

int nc_vm_spec_from_request(json_t *req, struct nc_vm_spec *spec, bool *start,
                            struct nc_errinfo *err) {
  static const char *const allowed[] = {"name",   "vcpus", "memory",         "image",
                                        "start",  "labels", "nic", "cmdline_append",
                                        "machine", NULL};
  memset(spec, 0, sizeof *spec);
  *start = false;
  if (!json_is_object(req))
    return nc_errinfo_set(err, 400, "bad_json", NULL, "the request body must be a JSON object");
  int rc = nc_json_check_fields(req, allowed, "create vm", err);
  if (rc)
    return rc;

  const char *name, *image, *memory, *nic, *cmdline;
  if ((rc = get_string(req, "name", true, &name, err)) ||
      (rc = nc_name_check("vm", "name", name, err)))
    return rc;
  snprintf(spec->name, sizeof spec->name, "%s", name);

  if ((rc = get_string(req, "image", true, &image, err)))
    return rc;
  char ex[NC_EXCERPT_LEN];
  if (!nc_name_valid(image))
    return nc_errinfo_set(err, 400, "invalid_field", "image",
                          "vm \"%s\": image \"%s\" is not a valid image name (see "
                          "`novacron image list`)",
                          spec->name, nc_excerpt(image, ex, sizeof ex));
  snprintf(spec->image, sizeof spec->image, "%s", image);

  spec->vcpus = 1;
  json_t *v = json_object_get(req, "vcpus");
  if (v) {
    if (!json_is_integer(v))
      return nc_errinfo_set(err, 400, "invalid_field", "vcpus",
                            "vm \"%s\": vcpus must be an integer from 1 to %d", spec->name,
                            NC_VM_VCPUS_MAX);
    json_int_t n = json_integer_value(v);
    if (n < 1 || n > NC_VM_VCPUS_MAX)
      return nc_errinfo_set(err, 400, "invalid_field", "vcpus",
                            "vm \"%s\": vcpus %lld is out of range (1 to %d)", spec->name,
                            (long long)n, NC_VM_VCPUS_MAX);
    spec->vcpus = (int)n;
  }

  spec->memory_bytes = 256ULL << 20;
  v = json_object_get(req, "memory");
  if (v) {
    if (json_is_integer(v)) {
      json_int_t n = json_integer_value(v);
      if (n <= 0)
        return nc_errinfo_set(err, 400, "invalid_field", "memory",
                              "vm \"%s\": memory must be positive (try 512M or 2G)", spec->name);
      spec->memory_bytes = (uint64_t)n;
    } else if (json_is_string(v)) {
      memory = json_string_value(v);
      rc = nc_size_parse(memory, &spec->memory_bytes);
      if (rc)
        return nc_errinfo_set(err, 400, "invalid_field", "memory",
                              "vm \"%s\": memory \"%s\" is not a size (try 512M or 2G)",
                              spec->name, nc_excerpt(memory, ex, sizeof ex));
    } else {
      return nc_errinfo_set(err, 400, "invalid_field", "memory",
                            "vm \"%s\": memory must be a size string like \"512M\"", spec->name);
    }
    if (spec->memory_bytes < NC_VM_MEMORY_MIN || spec->memory_bytes > NC_VM_MEMORY_MAX ||
        spec->memory_bytes % (1 << 20) != 0)
      return nc_errinfo_set(err, 400, "invalid_field", "memory",
                            "vm \"%s\": memory must be a whole number of MiB between 16M and "
                            "1T (try 512M or 2G)",
                            spec->name);
  }

  spec->nic = NC_NIC_USER;
  if ((rc = get_string(req, "nic", false, &nic, err)))
    return rc;
  if (nic) {
    if (strcmp(nic, "user") == 0)
      spec->nic = NC_NIC_USER;
    else if (strcmp(nic, "none") == 0)
      spec->nic = NC_NIC_NONE;
    else
      return nc_errinfo_set(err, 400, "invalid_field", "nic",
                            "vm \"%s\": nic \"%s\" is not supported (use \"user\" or \"none\")",
                            spec->name, nc_excerpt(nic, ex, sizeof ex));
  }

  if ((rc = get_string(req, "cmdline_append", false, &cmdline, err)))
    return rc;
  if (cmdline) {
    if ((rc = check_cmdline(cmdline, err)))
      return rc;
    snprintf(spec->cmdline_append, sizeof spec->cmdline_append, "%s", cmdline);
  }

  const char *machine;
  if ((rc = get_string(req, "machine", false, &machine, err)))
    return rc;
  if (machine) {
    if (!nc_hv_machine_name_valid(machine))
      return nc_errinfo_set(err, 400, "invalid_field", "machine",
                            "vm \"%s\": machine \"%s\" is not a QEMU machine type: use 1-%d "
                            "letters, digits, '.', '_' or '-', like pc-i440fx-10.0 or q35",
                            spec->name, nc_excerpt(machine, ex, sizeof ex), NC_VM_MACHINE_MAX);
    snprintf(spec->machine, sizeof spec->machine, "%s", machine);
  }

  v = json_object_get(req, "start");
  if (v) {
    if (!json_is_boolean(v))
      return nc_errinfo_set(err, 400, "invalid_field", "start", "start must be true or false");
    *start = json_is_true(v);
  }

  v = json_object_get(req, "labels");
  if (v) {
    if ((rc = parse_labels(v, &spec->labels, err)))
      return rc;
  } else {
    spec->labels = json_object();
  }
  return 0;
}

json_t *nc_vm_spec_to_json(const struct nc_vm_spec *spec) {
  char mem[32];
  nc_size_format(spec->memory_bytes, mem, sizeof mem);
  return json_pack("{s:s, s:i, s:s, s:I, s:s, s:s, s:O, s:s, s:s}", "name", spec->name,
                   "vcpus", spec->vcpus, "memory", mem, "memory_bytes",
                   (json_int_t)spec->memory_bytes, "image", spec->image, "nic",
                   spec->nic == NC_NIC_USER ? "user" : "none", "labels",
                   spec->labels ? spec->labels : json_object(), "cmdline_append",
                   spec->cmdline_append, "machine", spec->machine[0] ? spec->machine : "pc");
}

int nc_vm_spec_from_json(json_t *obj, struct nc_vm_spec *spec) {
  const char *name = NULL, *image = NULL, *nic = NULL, *cmdline = "", *machine = "pc";
  json_int_t vcpus = 0, mem = 0;
  json_t *labels = NULL;
  memset(spec, 0, sizeof *spec);
  if (json_unpack(obj, "{s:s, s:I, s:I, s:s, s:s, s?o, s?s, s?s}", "name", &name, "vcpus",
                  &vcpus, "memory_bytes", &mem, "image", &image, "nic", &nic, "labels", &labels,
                  "cmdline_append", &cmdline, "machine", &machine) != 0)
    return NC_E_INVALID;
  if (!nc_name_valid(name) || vcpus < 1 || vcpus > NC_VM_VCPUS_MAX || mem <= 0 ||
      strlen(image) > NC_NAME_MAX || strlen(cmdline) > NC_VM_CMDLINE_MAX ||
      !nc_hv_machine_name_valid(machine))
    return NC_E_INVALID;
  snprintf(spec->machine, sizeof spec->machine, "%s", machine);
  snprintf(spec->name, sizeof spec->name, "%s", name);
  snprintf(spec->image, sizeof spec->image, "%s", image);
  snprintf(spec->cmdline_append, sizeof spec->cmdline_append, "%s", cmdline);
  spec->vcpus = (int)vcpus;
  spec->memory_bytes = (uint64_t)mem;
  spec->nic = strcmp(nic, "none") == 0 ? NC_NIC_NONE : NC_NIC_USER;
  spec->labels = labels && json_is_object(labels) ? json_deep_copy(labels) : json_object();
  return 0;
}

void nc_vm_spec_clear(struct nc_vm_spec *spec) {
  if (!spec)
    return;
  json_decref(spec->labels);
  spec->labels = NULL;
}

void nc_vm_spec_copy(struct nc_vm_spec *dst, const struct nc_vm_spec *src) {
  *dst = *src;
  dst->labels = src->labels ? json_deep_copy(src->labels) : json_object();
}
