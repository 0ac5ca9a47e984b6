/* Start-up in four phases with a component registry.
 *
 *   1 pre-init   config, logging, environment probe (qemu, accelerator)
 *   2 core       data directory, store, hypervisor driver
 *   3 services   VM manager (re-adoption, reconciler), API, metrics
 *   4 post-init  health and readiness
 *
 * Each component is critical (its failure stops start-up with its own
 * message, and the components already started are stopped in reverse) or
 * optional (its failure is recorded and shown by /readyz as degraded).
 * Components may also report their status later (an asynchronous probe). */
#ifndef NC_BOOT_BOOT_H
#define NC_BOOT_BOOT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum nc_boot_phase {
  NC_PHASE_PREINIT,
  NC_PHASE_CORE,
  NC_PHASE_SERVICES,
  NC_PHASE_POSTINIT,
  NC_PHASE__COUNT
};

struct nc_component {
  const char *name;
  enum nc_boot_phase phase;
  bool critical;
  /* Returns 0, or a negative code with a message for the operator in err
   * (what is missing and how to fix it). */
  int (*start)(void *ctx, char *err, size_t err_len);
  void (*stop)(void *ctx); /* may be NULL */
};

struct nc_boot;
struct nc_metrics;

int nc_boot_new(void *ctx, struct nc_boot **out);
void nc_boot_free(struct nc_boot *b); /* accepts NULL; does not stop components */
/* Registers c (copied). At most 32 components. */
int nc_boot_register(struct nc_boot *b, const struct nc_component *c);
/* Runs every phase in order. On a critical failure returns its code and
 * "component <name>: <message>" in err, after stopping what had started. */
int nc_boot_run(struct nc_boot *b, char *err, size_t err_len);
/* Stops started components in reverse order. */
void nc_boot_shutdown(struct nc_boot *b);
/* Updates a component's status from elsewhere (e.g. a background probe).
 * status: "up", "degraded", "failed" or "pending". */
void nc_boot_set_status(struct nc_boot *b, const char *name, const char *status,
                        const char *message);
/* {"ready": bool, "components": [{name, phase, critical, status, message,
 * start_seconds}]}. New reference. Thread-safe. */
json_t *nc_boot_readiness(struct nc_boot *b);
/* Exposes boot timings and component status on the registry, which must
 * outlive b (nc_boot_free unregisters the collector). */
void nc_boot_export_metrics(struct nc_boot *b, struct nc_metrics *m);
/* Seconds from nc_boot_new to the end of the last phase (0 before). */
double nc_boot_ready_seconds(struct nc_boot *b);

#endif
