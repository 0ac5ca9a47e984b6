/* Operations: every long action (start, stop, snapshot, ...) is an
 * operation with an id, a status, progress, an error and a cancel flag.
 *
 * Operations are kept in memory (the newest NC_OPS_KEEP finished ones plus
 * every unfinished one) and written to the store at every status change
 * under /nc/ops/<id>, so `GET /v1/operations/{id}` survives a daemon
 * restart. An operation found unfinished in the store at start-up was cut
 * short by a crash and is marked failed.
 *
 * Thread-safe. An nc_op pointer stays valid while the caller holds a
 * reference (nc_ops_create hands one out; release with nc_op_unref). */
#ifndef NC_VM_OPS_H
#define NC_VM_OPS_H

#include <jansson.h>
#include <stdbool.h>

#include "store/store.h"
#include "util/clock.h"
#include "util/errinfo.h"

#define NC_OPS_KEEP 500
#define NC_OP_ID_LEN 19 /* "op-" + 16 hex */

struct nc_ops;
struct nc_op;
struct nc_events;

enum nc_op_status { NC_OP_PENDING, NC_OP_RUNNING, NC_OP_SUCCEEDED, NC_OP_FAILED, NC_OP_CANCELLED };

int nc_ops_new(struct nc_store *store, struct nc_clock *clock, struct nc_rand *rand,
               struct nc_events *events, struct nc_ops **out);
void nc_ops_free(struct nc_ops *ops); /* accepts NULL */
/* Loads recent operations from the store and fails unfinished ones. */
int nc_ops_recover(struct nc_ops *ops);

/* New pending operation. *out holds one reference for the caller. */
int nc_ops_create(struct nc_ops *ops, const char *kind, const char *target, struct nc_op **out);
void nc_op_ref(struct nc_op *op);
void nc_op_unref(struct nc_op *op);
const char *nc_op_id(const struct nc_op *op);

void nc_op_running(struct nc_op *op, const char *message);
void nc_op_progress(struct nc_op *op, double fraction, const char *message);
/* Finishes: rc == 0 → succeeded; NC_E_CANCELLED → cancelled; else failed
 * with err (may be NULL: the message comes from nc_strerror(rc)). */
void nc_op_finish(struct nc_op *op, int rc, const struct nc_errinfo *err);
/* The message a successful finish leaves (default "done"), e.g. a
 * summary of what the operation did. */
void nc_op_set_result(struct nc_op *op, const char *message);
bool nc_op_cancel_requested(struct nc_op *op);
/* Operations are not cancellable unless marked so; cancelling one that is
 * not answers NC_E_CONFLICT. */
void nc_op_set_cancellable(struct nc_op *op, bool cancellable);

/* Snapshot as the API shows it. New reference. */
json_t *nc_op_to_json(struct nc_op *op);
/* Finds by id; waits up to wait_ms for it to finish. -ENOENT if unknown. */
int nc_ops_get_json(struct nc_ops *ops, const char *id, int wait_ms, json_t **out);
json_t *nc_ops_list_json(struct nc_ops *ops);
/* Requests cancellation. -ENOENT unknown; NC_E_CONFLICT already finished
 * or not cancellable (*out is still filled when found). */
int nc_ops_cancel(struct nc_ops *ops, const char *id, json_t **out);
/* Counts by status, for metrics. */
void nc_ops_counts(struct nc_ops *ops, unsigned counts[5]);
const char *nc_op_status_name(enum nc_op_status s);

#endif
