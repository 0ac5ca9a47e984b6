#include "vm/events.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/sync.h"

struct slot {
  uint64_t seq;
  char *type;
  char *text;
};

struct nc_events {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct slot ring[NC_EVENTS_RING];
  uint64_t last;
  bool closed;
};

int nc_events_new(struct nc_events **out) {
  struct nc_events *ev = calloc(1, sizeof *ev);
  if (!ev)
    return -ENOMEM;
  pthread_mutex_init(&ev->mu, NULL);
  nc_cond_init_mono(&ev->cv);
  *out = ev;
  return 0;
}

void nc_events_free(struct nc_events *ev) {
  if (!ev)
    return;
  for (size_t i = 0; i < NC_EVENTS_RING; i++) {
    free(ev->ring[i].type);
    free(ev->ring[i].text);
  }
  pthread_cond_destroy(&ev->cv);
  pthread_mutex_destroy(&ev->mu);
  free(ev);
}

void nc_events_publish(struct nc_events *ev, const char *type, json_t *data) {
  char *text = json_dumps(data, JSON_COMPACT);
  char *t = strdup(type);
  json_decref(data);
  if (!text || !t) {
    free(text);
    free(t);
    return;
  }
  pthread_mutex_lock(&ev->mu);
  uint64_t seq = ++ev->last;
  struct slot *s = &ev->ring[seq % NC_EVENTS_RING];
  free(s->type);
  free(s->text);
  *s = (struct slot){seq, t, text};
  pthread_cond_broadcast(&ev->cv);
  pthread_mutex_unlock(&ev->mu);
}

uint64_t nc_events_last(struct nc_events *ev) {
  pthread_mutex_lock(&ev->mu);
  uint64_t l = ev->last;
  pthread_mutex_unlock(&ev->mu);
  return l;
}

int nc_events_wait(struct nc_events *ev, uint64_t after, int timeout_ms, char **type,
                   char **text, uint64_t *seq, uint64_t *missed) {
  struct timespec dl = nc_deadline(timeout_ms);
  int rc = 0;
  pthread_mutex_lock(&ev->mu);
  while (!ev->closed && ev->last <= after) {
    if (pthread_cond_timedwait(&ev->cv, &ev->mu, &dl) == ETIMEDOUT) {
      rc = -ETIMEDOUT;
      break;
    }
  }
  if (ev->closed) {
    rc = -ECANCELED;
  } else if (rc == 0) {
    uint64_t next = after + 1;
    uint64_t oldest = ev->last >= NC_EVENTS_RING ? ev->last - NC_EVENTS_RING + 1 : 1;
    *missed = next < oldest ? oldest - next : 0;
    if (next < oldest)
      next = oldest;
    struct slot *s = &ev->ring[next % NC_EVENTS_RING];
    *type = strdup(s->type);
    *text = strdup(s->text);
    *seq = s->seq;
    if (!*type || !*text) {
      free(*type);
      free(*text);
      rc = -ENOMEM;
    }
  }
  pthread_mutex_unlock(&ev->mu);
  return rc;
}

void nc_events_close(struct nc_events *ev) {
  pthread_mutex_lock(&ev->mu);
  ev->closed = true;
  pthread_cond_broadcast(&ev->cv);
  pthread_mutex_unlock(&ev->mu);
}
