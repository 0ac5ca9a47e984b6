/* HDE: hierarchical delta encoding of RAM pages.
 *
 * For each page payload the encoder picks the cheapest representation the
 * decoder can resolve without a round trip:
 *   ZERO    the page is all zero bytes;
 *   REF     the destination already holds this content (its persistent page
 *           cache, announced in its summary at session start, or one of
 *           the first new_pages_quota new pages of this session, which it
 *           stores);
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

/* XXH3-128 of a page: the content address used by tokens and the cache. */
void nc_hde_hash(const uint8_t page[NC_HDE_PAGE], struct nc_hash128 *out);

/* ---- persistent page cache ("regional cache") ---------------------------
 * Content-addressed store of pages on disk, capped at cap_bytes, shared by
 * every migration and VM on a node. Survives restarts. Thread-safe (one
 * mutex; every call may block on disk I/O).
 *
 * On disk: <dir>/NC_PCACHE_FILE, mode 0600, one fixed-size slot per page
 * (layout in pcache.c). Nothing is fsynced: after a crash a slot may hold
 * anything, and every read checks the content against its hash, so a slot
 * can be lost but never return the wrong page.
 *
 * Pinning and reservations, per session (a nonzero id chosen by the
 * caller, e.g. the migration id; 0 means "no session"):
 *   - nc_pcache_summary pins every entry it lists for the session;
 *   - nc_pcache_reserve promises the session a number of slots that
 *     nc_pcache_put_pinned can fill later, whatever else happens;
 *   - pinned entries are never evicted; nc_pcache_unpin_all releases the
 *     session's pins and what is left of its reservation.
 * The cache keeps pinned + reserved <= slots, so a reservation can always
 * be honoured, and eviction (CLOCK over the unpinned slots) never touches a
 * pin. A destination therefore calls, in this order:
 *   nc_pcache_reserve(c, s, want, &quota)    -- before the summary, or a
 *                                               full cache grants nothing;
 *   nc_pcache_summary(c, s, &buf, &len)      -- pins what it lists;
 *   send buf and quota to the source (new_pages_quota on both sides);
 *   nc_hde_dec_new(..., c, s, ...) ... nc_hde_dec_free;
 *   nc_pcache_unpin_all(c, s)                -- also when the session fails. */
#define NC_PCACHE_FILE "pcache.dat"

/* Opens (creating dir and file if needed) the cache in dir, holding at most
 * cap_bytes of file (header included; at least one slot). An existing file
 * of another format is discarded; a larger one is truncated to the cap.
 * Entries whose slot fails its hash check are dropped. The file is locked:
 * a second open of the same dir returns -EBUSY. On success *out belongs to
 * the caller (nc_pcache_close). */
int nc_pcache_open(const char *dir, uint64_t cap_bytes, struct nc_pcache **out);
void nc_pcache_close(struct nc_pcache *c); /* accepts NULL */
/* Stores page under h, unpinned. h must be nc_hde_hash(page), else
 * NC_E_INVALID. Evicts an unpinned entry when full; -ENOSPC when every slot
 * is pinned. A page already present is not written again. */
int nc_pcache_put(struct nc_pcache *c, const struct nc_hash128 *h, const uint8_t page[NC_HDE_PAGE]);
/* As nc_pcache_put, and pins the entry for session (nonzero). A pin that
 * takes a slot no one else pins uses the session's reservation first, then
 * capacity nobody has pinned or reserved; -ENOSPC when there is neither. */
int nc_pcache_put_pinned(struct nc_pcache *c, uint64_t session, const struct nc_hash128 *h,
                         const uint8_t page[NC_HDE_PAGE]);
/* -ENOENT when absent. Verifies the content's hash on read: a slot that
 * fails the check is dropped and reported as -ENOENT (never wrong data).
 * On failure page is left unchanged. */
int nc_pcache_get(struct nc_pcache *c, const struct nc_hash128 *h, uint8_t page[NC_HDE_PAGE]);
uint64_t nc_pcache_count(struct nc_pcache *c); /* entries held */
uint64_t nc_pcache_slots(struct nc_pcache *c); /* capacity in pages */
/* Reserves up to pages slots for session (nonzero) out of the capacity
 * that is neither pinned nor reserved; *granted is what it could promise
 * (possibly 0). Reservations add up across calls. */
int nc_pcache_reserve(struct nc_pcache *c, uint64_t session, uint64_t pages, uint64_t *granted);
/* What is left of session's reservation. */
uint64_t nc_pcache_reserved(struct nc_pcache *c, uint64_t session);
/* A summary of the hashes held, to send to a source: on success *buf is
 * malloc'd and belongs to the caller. Every entry listed is pinned for
 * session (nonzero) until nc_pcache_unpin_all. Entries that would need new
 * pins beyond the capacity not pinned or reserved by anyone are left out
 * (the most recently stored are kept), so a summary never breaks a
 * reservation. Format (big endian, changing it breaks compatibility):
 *   u8 version (1) | u64 count | count x 16-byte hash (XXH128 canonical),
 *   strictly ascending. */
int nc_pcache_summary(struct nc_pcache *c, uint64_t session, uint8_t **buf, size_t *len);
/* Releases session's pins and reservation. Accepts unknown sessions. */
void nc_pcache_unpin_all(struct nc_pcache *c, uint64_t session);

/* ---- codec ------------------------------------------------------------- */
enum nc_hde_codec { NC_HDE_NONE, NC_HDE_LZ4, NC_HDE_ZSTD };

/* Largest mirror cache either side accepts (the decoder allocates what the
 * peer asks for, up to this; apply a tighter local policy before). */
#define NC_HDE_DELTA_CACHE_MAX (UINT64_C(4) << 30)

/* Everything but codec and level must be identical on both sides of a
 * session (exchanged at session start); codec and level are the encoder's
 * alone and travel in every token. */
struct nc_hde_params {
  enum nc_hde_codec codec;    /* NONE: ZERO, REF and STORED only, no DELTA */
  int level;                  /* zstd level (0 = zstd's default), or lz4
                                 acceleration (<= 1 means 1). On 4 KiB
                                 pages zstd above ~12 buys < 3% and costs
                                 ms a page (19: ~1.4 ms, 22: ~20 ms) */
  uint64_t delta_cache_bytes; /* mirror cache size: floor(bytes / 4096)
                                 pages; both sides must agree */
  uint64_t new_pages_quota;   /* pages the destination promises to store
                                 this session: what nc_pcache_reserve
                                 granted; both sides must agree */
  bool dedup;                 /* use REF at all */
};

/* summary: as produced by nc_pcache_summary on the destination (may be
 * NULL/0; NC_E_PROTO when malformed; ignored when !p->dedup); it is only
 * read during the call and stays the caller's. local: the source's own cache (may be NULL); every
 * nonzero page encoded is also stored there, unpinned, best effort, so a
 * later migration back to this node can reference it; it must outlive the
 * encoder. On success *out belongs to the caller (nc_hde_enc_free).
 * An encoder is used by one thread at a time. */
int nc_hde_enc_new(const struct nc_hde_params *p, const uint8_t *summary, size_t summary_len,
                   struct nc_pcache *local, struct nc_hde_enc **out);
void nc_hde_enc_free(struct nc_hde_enc *e); /* accepts NULL */
/* Encodes one page (key: block << 48 | page offset). out must hold
 * NC_HDE_TOKEN_MAX bytes; *out_len is set to the token's length. Fails only
 * on invalid arguments (-EINVAL), and then changes no state. */
int nc_hde_encode(struct nc_hde_enc *e, uint64_t key, const uint8_t page[NC_HDE_PAGE],
                  uint8_t *out, size_t *out_len);
/* Codec can be changed between pages (link adaptation); the decoder reads
 * it from each token. An unknown codec means NC_HDE_NONE; the level is
 * clamped to what the codec supports. */
void nc_hde_enc_set_codec(struct nc_hde_enc *e, enum nc_hde_codec codec, int level);

struct nc_hde_stats {
  uint64_t pages, zero, ref, delta, raw, stored;
  uint64_t bytes_in, bytes_out; /* page bytes in, token bytes out (encoder);
                                   token bytes in, page bytes out (decoder) */
  uint64_t stored_new;          /* pages counted against new_pages_quota */
  uint64_t local_put_errors;    /* encoder: puts into the local cache that
                                   failed (the page was still encoded) */
};
void nc_hde_enc_stats(const struct nc_hde_enc *e, struct nc_hde_stats *out);

/* cache: the destination's page cache (references resolve from it; new
 * pages are stored in it, pinned for session, up to new_pages_quota).
 * session: as passed to nc_pcache_reserve and nc_pcache_summary. A nonzero
 * quota needs a cache holding a reservation for session at least that
 * large, else NC_E_INVALID. The cache must outlive the decoder; the caller
 * still calls nc_pcache_unpin_all after nc_hde_dec_free. On success *out
 * belongs to the caller. A decoder is used by one thread at a time. */
int nc_hde_dec_new(const struct nc_hde_params *p, struct nc_pcache *cache, uint64_t session,
                   struct nc_hde_dec **out);
void nc_hde_dec_free(struct nc_hde_dec *d); /* accepts NULL */
/* Rebuilds the page for key from a token of len bytes. NC_E_PROTO for a
 * malformed token (wrong length, unknown kind or codec, a body that does
 * not decompress to exactly one page, a delta with no previous version),
 * -ENOENT for a reference it cannot resolve, NC_E_INVALID when the rebuilt
 * page does not match the token's hash, or the error from storing a new
 * page in the cache. On any failure page is zeroed, the decoder's state is
 * unchanged, and the session cannot continue (the encoder has moved on):
 * abort the migration. */
int nc_hde_decode(struct nc_hde_dec *d, uint64_t key, const uint8_t *tok, size_t len,
                  uint8_t page[NC_HDE_PAGE]);
void nc_hde_dec_stats(const struct nc_hde_dec *d, struct nc_hde_stats *out);

#endif
