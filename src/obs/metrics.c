#include "obs/metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIST_BUCKETS_MAX 32

struct series {
  char *labels[NC_METRICS_LABELS_MAX];
  double value; /* counter/gauge; histogram: sum */
  double count;
  double buckets[HIST_BUCKETS_MAX];
};

struct nc_metric {
  struct nc_metrics *owner;
  enum nc_metric_type type;
  char *name, *help;
  char *label_names[NC_METRICS_LABELS_MAX];
  size_t nlabels;
  double bounds[HIST_BUCKETS_MAX];
  size_t nbounds;
  struct series *series;
  size_t nseries, cap;
};

struct collector {
  nc_metrics_collect_fn fn;
  void *data;
};

struct nc_metrics {
  pthread_mutex_t mu;
  pthread_rwlock_t collecting; /* held shared by renders, exclusive by removal */
  struct nc_metric **families;
  size_t nfamilies;
  struct collector *collectors;
  size_t ncollectors;
  double dropped;
};

/* Growable output buffer for rendering. Aborts on OOM: render sizes come
 * from our own registry, not from input. */
struct nc_metrics_writer {
  char *buf;
  size_t len, cap;
};

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q)
    abort();
  return q;
}

static char *xstrdup(const char *s) {
  char *d = strdup(s);
  if (!d)
    abort();
  return d;
}

static void wprintf(struct nc_metrics_writer *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void wprintf(struct nc_metrics_writer *w, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->buf + w->len, w->cap - w->len, fmt, ap);
    va_end(ap);
    if (n < 0)
      return;
    if ((size_t)n < w->cap - w->len) {
      w->len += (size_t)n;
      return;
    }
    w->cap = w->cap * 2 + (size_t)n + 1;
    w->buf = xrealloc(w->buf, w->cap);
  }
}

static void write_escaped(struct nc_metrics_writer *w, const char *s) {
  for (; *s; s++) {
    if (*s == '\\')
      wprintf(w, "\\\\");
    else if (*s == '"')
      wprintf(w, "\\\"");
    else if (*s == '\n')
      wprintf(w, "\\n");
    else
      wprintf(w, "%c", *s);
  }
}

static void write_value(struct nc_metrics_writer *w, double v) {
  if (isinf(v))
    wprintf(w, v > 0 ? "+Inf" : "-Inf");
  else if (isnan(v))
    wprintf(w, "NaN");
  else if (fabs(v) < 1e15 && v == (double)(long long)v)
    wprintf(w, "%lld", (long long)v);
  else
    wprintf(w, "%.9g", v);
}

int nc_metrics_new(struct nc_metrics **out) {
  struct nc_metrics *m = calloc(1, sizeof *m);
  if (!m)
    return -ENOMEM;
  pthread_mutex_init(&m->mu, NULL);
  pthread_rwlock_init(&m->collecting, NULL);
  *out = m;
  return 0;
}

static void family_free(struct nc_metric *f) {
  for (size_t i = 0; i < f->nseries; i++)
    for (size_t j = 0; j < f->nlabels; j++)
      free(f->series[i].labels[j]);
  for (size_t j = 0; j < f->nlabels; j++)
    free(f->label_names[j]);
  free(f->series);
  free(f->name);
  free(f->help);
  free(f);
}

void nc_metrics_free(struct nc_metrics *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->nfamilies; i++)
    family_free(m->families[i]);
  free(m->families);
  free(m->collectors);
  pthread_rwlock_destroy(&m->collecting);
  pthread_mutex_destroy(&m->mu);
  free(m);
}

struct nc_metric *nc_metrics_register(struct nc_metrics *m, enum nc_metric_type type,
                                      const char *name, const char *help,
                                      const char *const *label_names, const double *buckets,
                                      size_t nbuckets) {
  pthread_mutex_lock(&m->mu);
  for (size_t i = 0; i < m->nfamilies; i++) {
    if (strcmp(m->families[i]->name, name) == 0) {
      struct nc_metric *existing = m->families[i];
      pthread_mutex_unlock(&m->mu);
      return existing;
    }
  }
  pthread_mutex_unlock(&m->mu);
  struct nc_metric *f = calloc(1, sizeof *f);
  if (!f)
    abort();
  f->owner = m;
  f->type = type;
  f->name = xstrdup(name);
  f->help = xstrdup(help);
  for (; label_names && label_names[f->nlabels] && f->nlabels < NC_METRICS_LABELS_MAX;)
    f->label_names[f->nlabels] = xstrdup(label_names[f->nlabels]), f->nlabels++;
  if (nbuckets > HIST_BUCKETS_MAX)
    nbuckets = HIST_BUCKETS_MAX;
  for (size_t i = 0; i < nbuckets; i++)
    f->bounds[i] = buckets[i];
  f->nbounds = nbuckets;
  pthread_mutex_lock(&m->mu);
  m->families = xrealloc(m->families, (m->nfamilies + 1) * sizeof *m->families);
  m->families[m->nfamilies++] = f;
  pthread_mutex_unlock(&m->mu);
  return f;
}

/* Caller holds the registry lock. NULL when the series cap is reached. */
static struct series *find_series(struct nc_metric *f, const char *const *values) {
  for (size_t i = 0; i < f->nseries; i++) {
    size_t j = 0;
    for (; j < f->nlabels; j++)
      if (strcmp(f->series[i].labels[j], values[j] ? values[j] : "") != 0)
        break;
    if (j == f->nlabels)
      return &f->series[i];
  }
  if (f->nseries >= NC_METRICS_SERIES_MAX) {
    f->owner->dropped++;
    return NULL;
  }
  if (f->nseries == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 8;
    f->series = xrealloc(f->series, f->cap * sizeof *f->series);
  }
  struct series *s = &f->series[f->nseries++];
  memset(s, 0, sizeof *s);
  for (size_t j = 0; j < f->nlabels; j++)
    s->labels[j] = xstrdup(values[j] ? values[j] : "");
  return s;
}

void nc_metric_add(struct nc_metric *f, const char *const *label_values, double delta) {
  pthread_mutex_lock(&f->owner->mu);
  struct series *s = find_series(f, label_values);
  if (s)
    s->value += delta;
  pthread_mutex_unlock(&f->owner->mu);
}

void nc_metric_set(struct nc_metric *f, const char *const *label_values, double value) {
  pthread_mutex_lock(&f->owner->mu);
  struct series *s = find_series(f, label_values);
  if (s)
    s->value = value;
  pthread_mutex_unlock(&f->owner->mu);
}

void nc_metric_observe(struct nc_metric *f, const char *const *label_values, double value) {
  pthread_mutex_lock(&f->owner->mu);
  struct series *s = find_series(f, label_values);
  if (s) {
    s->value += value;
    s->count += 1;
    for (size_t i = 0; i < f->nbounds; i++)
      if (value <= f->bounds[i])
        s->buckets[i] += 1;
  }
  pthread_mutex_unlock(&f->owner->mu);
}

void nc_metric_reset(struct nc_metric *f) {
  pthread_mutex_lock(&f->owner->mu);
  for (size_t i = 0; i < f->nseries; i++)
    for (size_t j = 0; j < f->nlabels; j++)
      free(f->series[i].labels[j]);
  f->nseries = 0;
  pthread_mutex_unlock(&f->owner->mu);
}

void nc_metrics_add_collector(struct nc_metrics *m, nc_metrics_collect_fn fn, void *data) {
  pthread_mutex_lock(&m->mu);
  m->collectors = xrealloc(m->collectors, (m->ncollectors + 1) * sizeof *m->collectors);
  m->collectors[m->ncollectors++] = (struct collector){fn, data};
  pthread_mutex_unlock(&m->mu);
}

void nc_metrics_remove_collector(struct nc_metrics *m, nc_metrics_collect_fn fn, void *data) {
  pthread_rwlock_wrlock(&m->collecting);
  pthread_mutex_lock(&m->mu);
  size_t w = 0;
  for (size_t i = 0; i < m->ncollectors; i++)
    if (!(m->collectors[i].fn == fn && m->collectors[i].data == data))
      m->collectors[w++] = m->collectors[i];
  m->ncollectors = w;
  pthread_mutex_unlock(&m->mu);
  pthread_rwlock_unlock(&m->collecting);
}

static const char *type_name(enum nc_metric_type t) {
  return t == NC_METRIC_COUNTER ? "counter" : t == NC_METRIC_GAUGE ? "gauge" : "histogram";
}

void nc_metrics_write_family(struct nc_metrics_writer *w, const char *name,
                             enum nc_metric_type type, const char *help) {
  wprintf(w, "# HELP %s ", name);
  for (const char *p = help; *p; p++) {
    if (*p == '\\')
      wprintf(w, "\\\\");
    else if (*p == '\n')
      wprintf(w, "\\n");
    else
      wprintf(w, "%c", *p);
  }
  wprintf(w, "\n# TYPE %s %s\n", name, type_name(type));
}

static void write_labels(struct nc_metrics_writer *w, char *const *names, char *const *values,
                         size_t n, const char *extra_name, const char *extra_value) {
  if (n == 0 && !extra_name)
    return;
  wprintf(w, "{");
  for (size_t i = 0; i < n; i++) {
    wprintf(w, "%s%s=\"", i ? "," : "", names[i]);
    write_escaped(w, values[i]);
    wprintf(w, "\"");
  }
  if (extra_name) {
    wprintf(w, "%s%s=\"%s\"", n ? "," : "", extra_name, extra_value);
  }
  wprintf(w, "}");
}

void nc_metrics_write_sample(struct nc_metrics_writer *w, const char *name,
                             const char *const *labels, double value) {
  wprintf(w, "%s", name);
  if (labels && labels[0]) {
    wprintf(w, "{");
    for (size_t i = 0; labels[i] && labels[i + 1]; i += 2) {
      wprintf(w, "%s%s=\"", i ? "," : "", labels[i]);
      write_escaped(w, labels[i + 1]);
      wprintf(w, "\"");
    }
    wprintf(w, "}");
  }
  wprintf(w, " ");
  write_value(w, value);
  wprintf(w, "\n");
}

static void render_family(struct nc_metrics_writer *w, struct nc_metric *f) {
  nc_metrics_write_family(w, f->name, f->type, f->help);
  for (size_t i = 0; i < f->nseries; i++) {
    struct series *s = &f->series[i];
    if (f->type != NC_METRIC_HISTOGRAM) {
      wprintf(w, "%s", f->name);
      write_labels(w, f->label_names, s->labels, f->nlabels, NULL, NULL);
      wprintf(w, " ");
      write_value(w, s->value);
      wprintf(w, "\n");
      continue;
    }
    for (size_t b = 0; b <= f->nbounds; b++) {
      char le[32];
      if (b == f->nbounds)
        snprintf(le, sizeof le, "+Inf");
      else
        snprintf(le, sizeof le, "%g", f->bounds[b]);
      wprintf(w, "%s_bucket", f->name);
      write_labels(w, f->label_names, s->labels, f->nlabels, "le", le);
      wprintf(w, " ");
      write_value(w, b == f->nbounds ? s->count : s->buckets[b]);
      wprintf(w, "\n");
    }
    wprintf(w, "%s_sum", f->name);
    write_labels(w, f->label_names, s->labels, f->nlabels, NULL, NULL);
    wprintf(w, " ");
    write_value(w, s->value);
    wprintf(w, "\n%s_count", f->name);
    write_labels(w, f->label_names, s->labels, f->nlabels, NULL, NULL);
    wprintf(w, " ");
    write_value(w, s->count);
    wprintf(w, "\n");
  }
}

int nc_metrics_render(struct nc_metrics *m, char **out, size_t *len) {
  struct nc_metrics_writer w = {malloc(16384), 0, 16384};
  if (!w.buf)
    return -ENOMEM;
  w.buf[0] = '\0';
  pthread_rwlock_rdlock(&m->collecting);
  pthread_mutex_lock(&m->mu);
  for (size_t i = 0; i < m->nfamilies; i++)
    render_family(&w, m->families[i]);
  double dropped = m->dropped;
  size_t ncol = m->ncollectors;
  struct collector cols[32];
  if (ncol > 32)
    ncol = 32;
  if (ncol > 0)
    memcpy(cols, m->collectors, ncol * sizeof *cols);
  pthread_mutex_unlock(&m->mu);
  nc_metrics_write_family(&w, "novacron_metrics_dropped_series_total", NC_METRIC_COUNTER,
                          "Series dropped because a family reached its series cap.");
  nc_metrics_write_sample(&w, "novacron_metrics_dropped_series_total", NULL, dropped);
  /* Collectors run without the registry lock: they take their own. */
  for (size_t i = 0; i < ncol; i++)
    cols[i].fn(&w, cols[i].data);
  pthread_rwlock_unlock(&m->collecting);
  *out = w.buf;
  if (len)
    *len = w.len;
  return 0;
}
