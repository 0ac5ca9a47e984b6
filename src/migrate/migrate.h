/* Live migration between nodes over DWCP.
 *
 * Source side (POST /v1/vms/{name}/migrate): asks the destination daemon to
 * prepare (POST /v1/migrations/incoming), opens an AMST session to it,
 * makes the source QEMU migrate into a local unix socket, splits that
 * stream with the QEMU stream codec, encodes pages with HDE and sends
 * everything in order. The destination rebuilds the exact byte stream and
 * writes it into its QEMU, started with -incoming defer -S.
 *
 * Exactly one copy, always:
 *   1. destination: stream complete and QEMU's incoming migration
 *      "completed" (guest paused) -> sends COMMIT_REQ;
 *   2. source: records that it handed the VM over (from now on it never
 *      resumes on its own) -> sends COMMIT_ACK;
 *   3. destination: records itself as owner, resumes the guest -> RESUMED;
 *   4. source: destroys its paused QEMU and its record.
 * Any failure before step 2 rolls back: the destination tears down, the
 * source resumes. A failure after step 2 with no RESUMED leaves the source
 * paused and asks the destination's API what happened: the destination
 * runs it -> the source cleans up; the destination does not have it -> the
 * source resumes; no answer -> the source stays paused and failed with a
 * reason that says so (never two copies).
 *
 * Messages on the AMST session (types from NC_AMST_TYPE_USER; payload
 * layouts in migrate.c; changing them breaks compatibility). */
#ifndef NC_MIGRATE_MIGRATE_H
#define NC_MIGRATE_MIGRATE_H

#include <jansson.h>

#include "util/errinfo.h"

/* dwcp_tls: whether the DWCP streams and the disk relay run over TLS 1.3.
 *   AUTO  TLS unless the DWCP address is loopback (the source looks at the
 *         destination's address, the destination at its own dwcp_host);
 *   ON    always TLS; as destination, refuse a source asking for plain TCP;
 *   OFF   do not ask for TLS, do not require it (a source that asks for
 *         TLS still gets it: one node cannot downgrade another).
 * The source decides, the destination enforces its own setting. With TLS,
 * each side pins the other's certificate fingerprint, exchanged in the
 * POST /v1/migrations/incoming request and answer. */
enum nc_migrate_tls { NC_MIGRATE_TLS_AUTO, NC_MIGRATE_TLS_ON, NC_MIGRATE_TLS_OFF };

struct nc_migrate;
struct nc_tls;
struct nc_vmm;
struct nc_pcache;
struct nc_metrics;

struct nc_migrate_config {
  struct nc_vmm *vmm;
  struct nc_pcache *pcache;   /* this node's page cache; may be NULL */
  struct nc_metrics *metrics; /* may be NULL */
  const char *node_name;
  /* Address this node's DWCP listeners bind to and peers connect to. */
  const char *dwcp_host;
  /* Bearer token sent to peers' APIs when a request names none. */
  const char *peer_token;
  /* This node's DWCP identity (dwcp/tls.h); NULL only with TLS off. */
  struct nc_tls *tls;
  enum nc_migrate_tls tls_mode;
  /* Destination side, may be NULL: takes ownership of the VM in the
   * cluster (from the source node) after the source handed over and
   * before the guest resumes; non-zero keeps it from resuming here. */
  int (*claim)(void *data, const char *vm, const char *from);
  /* Undoes a claim (hands the VM back to `to`, the source) when the guest
   * then cannot resume here; set whenever claim is. */
  int (*release)(void *data, const char *vm, const char *to);
  void *claim_data;
};

int nc_migrate_new(const struct nc_migrate_config *cfg, struct nc_migrate **out);
/* Cancels running migrations and waits for their threads. Accepts NULL. */
void nc_migrate_free(struct nc_migrate *m);

/* Source: body {"to": "HOST:PORT", "token": "...", "mode":
 * "auto|datacenter|hybrid|internet", "streams": N, "max_downtime_ms": N}.
 * *out is {"operation": OP}. */
int nc_migrate_start(struct nc_migrate *m, const char *name, json_t *body, json_t **out,
                     struct nc_errinfo *err);
/* Destination (peer API): body {"vm": spec, "source": node, "streams": N,
 * "tls": bool, "fingerprint": hex (the source's certificate), "hde_version":
 * N, "base_disk": {"size": N, "xxh128": hex} or null (vm/imgid.h),
 * "prev_record": hex}.
 * *out is {"session": hex, "port": N, "nbd_port": N, "operation": id,
 * "tls": bool, "fingerprint": hex (ours)}. 409 tls_required when the
 * source asks for plain TCP and our dwcp_tls does not allow it; 409
 * image_mismatch when our image of the VM's name has another base disk
 * (checked before anything is created); 409 incompatible_version without
 * hde_version or base_disk (an older source). */
int nc_migrate_incoming(struct nc_migrate *m, json_t *body, json_t **out,
                        struct nc_errinfo *err);

#endif
