/* QEMU command lines for the driver. Internal to src/hv; separate so unit
 * tests can check the argv without starting QEMU. */
#ifndef NC_HV_QEMU_ARGV_H
#define NC_HV_QEMU_ARGV_H

#include <stddef.h>

#include "hv/hv.h"

/* A NULL-terminated argv; every string and the array are owned. */
struct nc__qemu_argv {
  char **argv;
  size_t argc; /* not counting the NULL */
  size_t cap;
};

/* Builds the argv that launches spec with binary qemu. Paths in spec
 * (run_dir, kernel, initrd, disk) must already be absolute; they are used
 * as given. On success *out owns everything (nc__qemu_argv_free); on
 * failure *out is empty. NC_E_INVALID for a spec QEMU cannot run. */
int nc__qemu_argv_build(const char *qemu, const struct nc_hv_spec *spec,
                        struct nc__qemu_argv *out);
void nc__qemu_argv_free(struct nc__qemu_argv *a);

/* The value of -qmp for run_dir. adopt() looks for exactly this argument
 * in /proc/<pid>/cmdline. Returns -ENAMETOOLONG if it does not fit. */
int nc__qemu_qmp_arg(const char *run_dir, char *out, size_t out_cap);

/* s with every ',' doubled, the escape of QEMU's option syntax
 * (docs/system/invocation: "to include a comma, double it"). Caller
 * frees. NULL on allocation failure. */
char *nc__qemu_opt_escape(const char *s);

#endif
