/* Machine types a hypervisor can run, as QEMU lists them in
 * `qemu-system-x86_64 -machine help`.
 *
 * Why it matters: "pc" is an alias that every QEMU release points at its
 * newest versioned type ("pc-i440fx-10.0" on QEMU 10.0). Live migration
 * needs the same versioned type on both ends, and a VM's virtual hardware
 * should not change when its host's QEMU is upgraded, so vm/ pins the
 * versioned type in the VM's spec when the VM is created (as libvirt and
 * Proxmox do) and checks it on a migration's destination. */
#ifndef NC_HV_MACHINE_H
#define NC_HV_MACHINE_H

#include <stdbool.h>
#include <stddef.h>

#define NC_HV_MACHINE_LEN_MAX 63 /* longest name kept; QEMU's are < 32 */
#define NC_HV_MACHINES_MAX 256   /* QEMU 10.0 lists 64 for x86_64 */
/* What a machine help listing may be: input past it is NC_E_TOOBIG. */
#define NC_HV_MACHINE_HELP_MAX (64 * 1024)

struct nc_hv_machine {
  char name[NC_HV_MACHINE_LEN_MAX + 1];     /* "pc-i440fx-10.0", or an alias: "pc" */
  char alias_of[NC_HV_MACHINE_LEN_MAX + 1]; /* an alias: the type it names; else "" */
  bool deprecated;
};

struct nc_hv_machines {
  size_t n;
  struct nc_hv_machine v[NC_HV_MACHINES_MAX];
};

/* true when s looks like a QEMU machine type name: 1-63 characters of
 * [A-Za-z0-9._-]. Nothing else can reach a -machine argument (a ',' would
 * add options to it). */
bool nc_hv_machine_name_valid(const char *s);

/* Parses the output of `<qemu> -machine help` (QEMU 7.2 to 10.0 print
 *   Supported machines are:
 *   pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-10.0)
 *   pc-i440fx-10.0       Standard PC (i440FX + PIIX, 1996) (default)
 * one type a line; hw/core/machine-qmp-cmds.c and vl.c machine_help_func).
 * Lines whose name is not valid are skipped. NC_E_PROTO when there is no
 * header or no machine, NC_E_TOOBIG past NC_HV_MACHINES_MAX machines or
 * NC_HV_MACHINE_HELP_MAX bytes. *out is filled (and only meaningful) on
 * success. */
int nc_hv_machines_parse(const char *text, struct nc_hv_machines *out);

/* The entry named name (a type or an alias), or NULL. */
const struct nc_hv_machine *nc_hv_machines_find(const struct nc_hv_machines *m,
                                                const char *name);

/* The versioned type name resolves to: an alias's target, a type itself.
 * NULL when m does not list it. The pointer is into m. */
const char *nc_hv_machines_resolve(const struct nc_hv_machines *m, const char *name);

/* true for the types NovaCron's command line can run: the PC machines
 * (pc-i440fx-*, pc-q35-* and the aliases naming them). microvm, isapc,
 * none and x-remote have no PCI bus for the virtio devices we add. */
bool nc_hv_machine_usable(const struct nc_hv_machines *m, const char *name);

/* Writes the usable names of m (each alias with the type it names first,
 * then the other types in QEMU's order, deprecated ones last), ", "-separated, into out, ending with
 * "and N more" when they do not all fit. Always NUL-terminates (cap > 0). */
void nc_hv_machines_format(const struct nc_hv_machines *m, char *out, size_t cap);

#endif
