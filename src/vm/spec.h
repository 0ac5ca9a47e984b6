/* What a user asks for when defining a VM, and its validation.
 *
 * A VM name is a DNS label (RFC 1123): 1-63 characters of [a-z0-9-], not
 * starting or ending with '-'. Names become directory names under the data
 * directory, so nothing else is ever accepted (no "..", "/", spaces). */
#ifndef NC_VM_SPEC_H
#define NC_VM_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/errinfo.h"

#define NC_NAME_MAX 63
#define NC_VM_VCPUS_MAX 64
#define NC_VM_MEMORY_MIN (16ULL << 20)
#define NC_VM_MEMORY_MAX (1ULL << 40)
#define NC_VM_LABELS_MAX 32
#define NC_VM_LABEL_LEN_MAX 63
#define NC_VM_CMDLINE_MAX 1024
#define NC_VM_MACHINE_MAX 63 /* = NC_HV_MACHINE_LEN_MAX */

enum nc_vm_nic { NC_NIC_NONE, NC_NIC_USER };

struct nc_vm_spec {
  char name[NC_NAME_MAX + 1];
  int vcpus;
  uint64_t memory_bytes;
  char image[NC_NAME_MAX + 1];
  enum nc_vm_nic nic;
  json_t *labels; /* object of string → string; owned by the spec */
  char cmdline_append[NC_VM_CMDLINE_MAX + 1];
  /* QEMU machine type. The manager pins the versioned type ("pc-i440fx-
   * 10.0") at creation so the guest's hardware survives QEMU upgrades and
   * migrations between releases. "" only between a create request that
   * named none and the manager resolving it; a record stored before the
   * field existed reads back as "pc" (unpinned, as it always ran). */
  char machine[NC_VM_MACHINE_MAX + 1];
};

/* true when s is a valid DNS-label name. */
bool nc_name_valid(const char *s);
/* Writes a user-facing explanation of why name is invalid into err. */
int nc_name_check(const char *what, const char *field, const char *name, struct nc_errinfo *err);

/* Parses a create request: {"name","vcpus","memory","image","start","labels",
 * "nic","cmdline_append","machine"}. machine is only checked for its
 * characters here (the manager checks QEMU supports it) and left "" when
 * absent. Rejects unknown fields, wrong types, bad values.
 * *start receives the "start" flag (default false). On success spec owns
 * a reference to its labels; release with nc_vm_spec_clear(). On failure
 * spec holds nothing and err says what was wrong. */
int nc_vm_spec_from_request(json_t *req, struct nc_vm_spec *spec, bool *start,
                            struct nc_errinfo *err);

/* Serialises to the stored/API form (name, vcpus, memory, memory_bytes,
 * image, nic, labels, cmdline_append, machine: "pc" when ""). The stored
 * form is read back by older and newer novacrond and sent to migration
 * destinations: adding a field is compatible, renaming one is not. New
 * reference. */
json_t *nc_vm_spec_to_json(const struct nc_vm_spec *spec);
/* Reads the stored form back (trusted input from our own store or a
 * migration source, but still checked). A missing machine reads as "pc". */
int nc_vm_spec_from_json(json_t *obj, struct nc_vm_spec *spec);
void nc_vm_spec_clear(struct nc_vm_spec *spec);
/* Deep copy; dst must be cleared/uninitialised. */
void nc_vm_spec_copy(struct nc_vm_spec *dst, const struct nc_vm_spec *src);

/* Checks that obj only has keys from the NULL-terminated list allowed. */
int nc_json_check_fields(json_t *obj, const char *const *allowed, const char *what,
                         struct nc_errinfo *err);

#endif
