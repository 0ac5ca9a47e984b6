/* A small Prometheus metrics registry.
 *
 * Families are registered once (counter, gauge, histogram) with a fixed
 * list of label names; series are created on first use with label values.
 * Rendering follows the text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/).
 * Values that live elsewhere (per-VM stats, VMs by state) are emitted at
 * scrape time by collectors, so nothing is duplicated or goes stale.
 *
 * Every family caps its number of series (NC_METRICS_SERIES_MAX); past it,
 * new label combinations are dropped and counted in
 * novacron_metrics_dropped_series_total. Thread-safe. */
#ifndef NC_OBS_METRICS_H
#define NC_OBS_METRICS_H

#include <stddef.h>

#define NC_METRICS_SERIES_MAX 4096
#define NC_METRICS_LABELS_MAX 4

struct nc_metrics;
struct nc_metric;
struct nc_metrics_writer;

enum nc_metric_type { NC_METRIC_COUNTER, NC_METRIC_GAUGE, NC_METRIC_HISTOGRAM };

int nc_metrics_new(struct nc_metrics **out);
void nc_metrics_free(struct nc_metrics *m); /* accepts NULL */

/* Registers a family, or returns the one already registered under name
 * (whose type and labels then win). label_names: NULL-terminated, at most
 * NC_METRICS_LABELS_MAX. buckets (histograms only): ascending upper bounds,
 * nbuckets of them (+Inf is implicit). The family belongs to the registry. */
struct nc_metric *nc_metrics_register(struct nc_metrics *m, enum nc_metric_type type,
                                      const char *name, const char *help,
                                      const char *const *label_names, const double *buckets,
                                      size_t nbuckets);

/* label_values: as many as the family has label names (NULL when none). */
void nc_metric_add(struct nc_metric *f, const char *const *label_values, double delta);
void nc_metric_set(struct nc_metric *f, const char *const *label_values, double value);
void nc_metric_observe(struct nc_metric *f, const char *const *label_values, double value);
/* Removes every series of a gauge family (e.g. before re-filling). */
void nc_metric_reset(struct nc_metric *f);

/* Collectors run at every render, in registration order. */
typedef void (*nc_metrics_collect_fn)(struct nc_metrics_writer *w, void *data);
void nc_metrics_add_collector(struct nc_metrics *m, nc_metrics_collect_fn fn, void *data);
/* Removes a collector added with the same fn and data (before data is
 * freed). Waits for a render in progress to finish. */
void nc_metrics_remove_collector(struct nc_metrics *m, nc_metrics_collect_fn fn, void *data);
/* For collectors: start a family, then emit its samples. labels is a
 * NULL-terminated list of name, value pairs (values are escaped here). */
void nc_metrics_write_family(struct nc_metrics_writer *w, const char *name,
                             enum nc_metric_type type, const char *help);
void nc_metrics_write_sample(struct nc_metrics_writer *w, const char *name,
                             const char *const *labels, double value);

/* Renders everything. On success *out is a malloc'd NUL-terminated string
 * that belongs to the caller. */
int nc_metrics_render(struct nc_metrics *m, char **out, size_t *len);

#endif
