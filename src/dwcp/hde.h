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

/* 3: checked frames (hashless page kinds) and DELTA_BASE. Nodes exchange
 * it before a migration and refuse another version (migrate/dest.c). */
#define NC_HDE_VERSION 3
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
/* Write-behind: new pages are kept in a batch of up to 64 consecutive
 * slots and written with one pwrite (about a third of the kernel's cost
 * of one write per page), when the batch is full, when a page goes to a
 * slot that does not follow it, before a get of one of its pages, on
 * nc_pcache_flush and on close. A put then reports only errors it can see
 * at once; a batch whose write fails has its entries dropped (a pinned one
 * stays pinned but is gone from the index, so a get of it is -ENOENT,
 * never wrong data). Off by default. 0, or -ENOMEM (the cache then
 * stays as it was). */
int nc_pcache_set_write_behind(struct nc_pcache *c, bool on);
/* Writes a pending write-behind batch now; 0 or the write's error (its
 * entries are then dropped, as above). Accepts NULL. */
int nc_pcache_flush(struct nc_pcache *c);
uint64_t nc_pcache_count(struct nc_pcache *c); /* entries held */
uint64_t nc_pcache_slots(struct nc_pcache *c); /* capacity in pages */
/* The directory the cache lives in (as given to nc_pcache_open; owned by
 * the cache). Per-VM migration records are kept under it (migrate/record.c). */
const char *nc_pcache_dir(const struct nc_pcache *c);
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

/* Bases for DELTA_BASE (hde.c): fills page with a candidate base for key
 * and returns 0, or returns nonzero when there is none. The encoder calls
 * it, with frames on and dedup on, for a page that has no other base in
 * the session (not sent before, no record entry), and uses the candidate
 * only when the destination holds it (the REF rule) and the XOR is sparser
 * than the page. Called on the encoding thread. */
typedef int (*nc_hde_base_fn)(void *arg, uint64_t key, uint8_t page[NC_HDE_PAGE]);
void nc_hde_enc_set_base_fn(struct nc_hde_enc *e, nc_hde_base_fn fn, void *arg);

struct nc_hde_stats {
  uint64_t pages, zero, ref, delta, raw, stored;
  uint64_t prev, delta_prev;    /* PREV and DELTA_PREV tokens (v2) */
  uint64_t delta_base;          /* DELTA_BASE tokens (v2) */
  uint64_t frames, frame_bytes_in, frame_bytes_out; /* encoder: frames packed */
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

/* ---- frames (v2) --------------------------------------------------------
 * A frame is what one DATA message carries: the caller's records (tokens
 * and anything else), compressed together with the encoder's current codec
 * (layout in hde.c). Compressing many pages in one unit finds redundancy
 * across pages that per-token compression cannot. With frames on
 * (nc_hde_enc_set_frames), the encoder puts the pages whose bytes travel
 * (RAW, the deltas) in plain and without their hash, and leaves
 * compression to the frame; every frame then carries one 128-bit check
 * over the keys and hashes of all its pages, which the decoder compares
 * (nc_hde_dec_frame_end) against the pages it rebuilt. Off by default, so
 * a v1 peer's tokens and the v1 encoder are unchanged. */
#define NC_HDE_FRAME_HDR 5 /* without a checked frame's 16-byte check */
#define NC_HDE_FRAME_PLAIN_MAX (1u << 20) /* largest plain frame either side accepts */
#define NC_HDE_FRAME_WLOG 20              /* zstd window the decoder allows */
int nc_hde_enc_set_frames(struct nc_hde_enc *e, bool on);
/* Bytes out must hold to pack plain_len bytes. */
size_t nc_hde_frame_bound(size_t plain_len);
/* Packs len (1..NC_HDE_FRAME_PLAIN_MAX) plain bytes into out (cap >=
 * nc_hde_frame_bound(len)); stored when compressing does not make it
 * smaller. -EINVAL on bad arguments only. */
int nc_hde_frame_pack(struct nc_hde_enc *e, const uint8_t *plain, size_t len, uint8_t *out,
                      size_t cap, size_t *out_len);
/* Unpacks a frame of len bytes into plain (cap bytes). NC_E_PROTO for a
 * malformed frame, NC_E_TOOBIG when its plain length exceeds cap,
 * NC_E_INVALID when the last checked frame was not ended. */
int nc_hde_frame_unpack(struct nc_hde_dec *d, const uint8_t *in, size_t len, uint8_t *plain,
                        size_t cap, size_t *out_len);
/* After decoding every page record of a frame: a checked frame's pages
 * must match its check (hde.c), else NC_E_INVALID and the session cannot
 * continue (abort the migration: some page of the frame was rebuilt
 * wrong). 0 for an unchecked frame. Must be called before the next
 * nc_hde_frame_unpack. */
int nc_hde_dec_frame_end(struct nc_hde_dec *d);

/* ---- the previous migration's record (v2) -------------------------------
 * For each guest page (key), the hash of the last version one migration of
 * a VM carried. Encoder and decoder build the same record from the same
 * tokens (nc_hde_enc_record / nc_hde_dec_record: a zero page removes its
 * key), so after a migration A->B both nodes can keep it; when the VM goes
 * back B->A, the two records have the same digest, and the destination
 * says which of its hashes it still holds (nc_hde_rec_match, which also
 * pins nothing new: the hashes come from its summary, pinned already).
 * Then a page the guest did not change travels as PREV (1 byte) and one it
 * changed a little as DELTA_PREV against the version both ends hold.
 * At most NC_HDE_REC_MAX entries (a 64 GiB guest).
 * File (changing it breaks compatibility; a file that fails any check is
 * refused, never half-used): "NCHDEREC" | u32 BE version 1 | u64 BE count |
 * count x (u64 BE key, 16-byte XXH3-128 canonical), keys ascending |
 * 16-byte digest (XXH3-128 of u64 BE count then the entries). */
#define NC_HDE_REC_MAX (UINT64_C(1) << 24)
struct nc_hde_rec;
/* This session's record so far; *out belongs to the caller. -ENOMEM when
 * the session could not keep all of it (then there is no record). */
int nc_hde_enc_record(const struct nc_hde_enc *e, struct nc_hde_rec **out);
int nc_hde_dec_record(const struct nc_hde_dec *d, struct nc_hde_rec **out);
void nc_hde_rec_free(struct nc_hde_rec *r); /* accepts NULL */
uint64_t nc_hde_rec_count(const struct nc_hde_rec *r);
void nc_hde_rec_digest(const struct nc_hde_rec *r, uint8_t out[16]);
/* Writes path atomically (a temporary file, then rename). */
int nc_hde_rec_save(const struct nc_hde_rec *r, const char *path);
/* -ENOENT when absent, NC_E_PROTO when damaged or of another version. */
int nc_hde_rec_load(const char *path, struct nc_hde_rec **out);
/* Destination: marks in *held (malloc'd, (count + 7) / 8 bytes, bit i =
 * entry i, LSB first) the record's hashes that summary lists, and removes
 * them from summary in place (the source learns them from the bitmap, so
 * they need not travel twice). */
int nc_hde_rec_match(const struct nc_hde_rec *r, uint8_t *summary, size_t *summary_len,
                     uint8_t **held, size_t *held_len);
/* Both sides, before the first page, with the same record and bitmap:
 * entries whose bit is set become bases for PREV and DELTA_PREV (the
 * encoder also references their hashes). The record is only read during
 * the call. NC_E_PROTO when held_len does not fit the record. */
int nc_hde_enc_set_prev(struct nc_hde_enc *e, const struct nc_hde_rec *r, const uint8_t *held,
                        size_t held_len);
int nc_hde_dec_set_prev(struct nc_hde_dec *d, const struct nc_hde_rec *r, const uint8_t *held,
                        size_t held_len);

/* ---- seeding the cache from boot images ---------------------------------
 * Stores (unpinned) the nonzero page-aligned 4 KiB chunks of a file, and,
 * for a gzip'd newc cpio (an initramfs), of every regular file inside it
 * (its tail zero-padded), as a guest holds them after loading a kernel or
 * an initramfs. Stops after max_pages new entries. *added: pages stored
 * that the cache did not hold. Input sizes are capped (1 GiB of file, 1 GiB
 * decompressed). */
int nc_hde_seed_file(struct nc_pcache *c, const char *path, uint64_t max_pages,
                     uint64_t *added);

#endif
