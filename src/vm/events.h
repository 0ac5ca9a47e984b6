/* An in-process event bus: a bounded ring of recent events, each a JSON
 * text with a sequence number. Readers (the SSE endpoint) remember the last
 * sequence they saw and wait for newer ones; a reader that falls more than
 * the ring behind is told how many it missed. Thread-safe. */
#ifndef NC_VM_EVENTS_H
#define NC_VM_EVENTS_H

#include <jansson.h>
#include <stdint.h>

#define NC_EVENTS_RING 1024

struct nc_events;

int nc_events_new(struct nc_events **out);
void nc_events_free(struct nc_events *ev); /* accepts NULL */
/* Publishes {"type": type, ...data}; steals the data reference. */
void nc_events_publish(struct nc_events *ev, const char *type, json_t *data);
/* Sequence number of the newest event (0 when none). */
uint64_t nc_events_last(struct nc_events *ev);
/* Waits up to timeout_ms for an event with seq > after. On success *text is
 * a malloc'd JSON string (the caller's), *type a malloc'd type name, *seq
 * its number and *missed how many were dropped from the ring in between.
 * -ETIMEDOUT when none arrived; -ECANCELED after nc_events_close. */
int nc_events_wait(struct nc_events *ev, uint64_t after, int timeout_ms, char **type,
                   char **text, uint64_t *seq, uint64_t *missed);
/* Wakes every waiter for good (shutdown). */
void nc_events_close(struct nc_events *ev);

#endif
