/* HDE: hierarchical delta encoding of RAM pages.
 *
 * For each page payload the encoder picks the cheapest representation the
 * decoder can resolve without a round trip:
 *   ZERO    the page is all zero bytes;
 *   REF     the destination already holds this content (its persistent page
 *           cache, announced in its summary at session start, or a page
 *           sent earlier in this session that it will have stored);
 *   DELTA   XOR against this page's previous version in the session's
 *           mirror cache, compressed;
 *   RAW     compressed (lz4 or zstd at a level chosen per link) or stored.
 * Every token names the content hash (XXH3-128) of the page it produces,
 * and the decoder checks the page it rebuilds against it, so a bug or a
 * stale cache can never silently corrupt a guest: a mismatch is an error
 * and the migration aborts (the source VM keeps running).
 *
 * Determinism: the mirror delta cache and the "will the destination have
 * stored it" ledger are updated by encoder and decoder from the same
 * sequence of pages with the same fixed rules, so both sides agree without
 * any message. Token bytes go on the wire: see hde.c for the layout;
 * changing it breaks compatibility (bump NC_HDE_VERSION). */
#ifndef NC_DWCP_HDE_H
#define NC_DWCP_HDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NC_HDE_VERSION 1
#define NC_HDE_PAGE 4096
#define NC_HDE_TOKEN_MAX (NC_HDE_PAGE + 64) /* worst case: stored + header */

struct nc_pcache;
struct nc_hde_enc;
struct nc_hde_dec;

struct nc_hash128 {
  uint64_t lo, hi;
};

void nc_hde_hash(const uint8_t page[NC_HDE_PAGE], struct nc_hash128 *out);

/* ---- persistent page cache ("regional cache") ---------------------------
 * Content-addressed store of pages on disk, capped at cap_bytes, shared by
 * every migration and VM on a node. Survives restarts. Thread-safe. */
int nc_pcache_open(const char *dir, uint64_t cap_bytes, struct nc_pcache **out);
void nc_pcache_close(struct nc_pcache *c); /* accepts NULL */
int nc_pcache_put(struct nc_pcache *c, const struct nc_hash128 *h, const uint8_t page[NC_HDE_PAGE]);
/* -ENOENT when absent. Verifies the content's hash on read. */
int nc_pcache_get(struct nc_pcache *c, const struct nc_hash128 *h, uint8_t page[NC_HDE_PAGE]);
uint64_t nc_pcache_count(struct nc_pcache *c);
/* A summary of every hash held, to send to a source: a buffer the caller
 * frees. Entries in it are pinned (never evicted) until nc_pcache_unpin_all
 * for this session id. */
int nc_pcache_summary(struct nc_pcache *c, uint64_t session, uint8_t **buf, size_t *len);
void nc_pcache_unpin_all(struct nc_pcache *c, uint64_t session);

/* ---- codec ------------------------------------------------------------- */
enum nc_hde_codec { NC_HDE_NONE, NC_HDE_LZ4, NC_HDE_ZSTD };

struct nc_hde_params {
  enum nc_hde_codec codec;
  int level;                  /* zstd level, or lz4 acceleration */
  uint64_t delta_cache_bytes; /* mirror cache size; both sides must agree */
  uint64_t new_pages_quota;   /* pages the destination promises to store this session */
  bool dedup;                 /* use REF at all */
};

/* summary: as produced by nc_pcache_summary on the destination (may be
 * NULL/0). local: the source's own cache (may be NULL); every page sent is
 * also stored there so a later migration back to this node can reference
 * it. */
int nc_hde_enc_new(const struct nc_hde_params *p, const uint8_t *summary, size_t summary_len,
                   struct nc_pcache *local, struct nc_hde_enc **out);
void nc_hde_enc_free(struct nc_hde_enc *e);
/* Encodes one page (key: block << 48 | page offset). out must hold
 * NC_HDE_TOKEN_MAX bytes. */
int nc_hde_encode(struct nc_hde_enc *e, uint64_t key, const uint8_t page[NC_HDE_PAGE],
                  uint8_t *out, size_t *out_len);
/* Codec can be changed between pages (link adaptation); the decoder reads
 * it from each token. */
void nc_hde_enc_set_codec(struct nc_hde_enc *e, enum nc_hde_codec codec, int level);

struct nc_hde_stats {
  uint64_t pages, zero, ref, delta, raw, stored;
  uint64_t bytes_in, bytes_out;
};
void nc_hde_enc_stats(const struct nc_hde_enc *e, struct nc_hde_stats *out);

/* cache: the destination's page cache (references resolve from it; new
 * pages are stored in it up to new_pages_quota). session: as passed to
 * nc_pcache_summary. */
int nc_hde_dec_new(const struct nc_hde_params *p, struct nc_pcache *cache, uint64_t session,
                   struct nc_hde_dec **out);
void nc_hde_dec_free(struct nc_hde_dec *d);
/* Rebuilds the page for key from a token of len bytes. NC_E_PROTO for a
 * malformed token, -ENOENT for a reference it cannot resolve, NC_E_INVALID
 * when the rebuilt page does not match the token's hash. */
int nc_hde_decode(struct nc_hde_dec *d, uint64_t key, const uint8_t *tok, size_t len,
                  uint8_t page[NC_HDE_PAGE]);

#endif
