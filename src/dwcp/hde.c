/* HDE page codec: one token per 4096-byte page.
 *
 * Token layout (NC_HDE_VERSION 2; version 1 had no PREV, DELTA_PREV, plain
 * codec or frames, and its tokens decode unchanged). Big endian. These bytes go on the wire:
 * changing anything here breaks compatibility; bump NC_HDE_VERSION.
 *
 *   off  size  field
 *   0    1     kind: 0 ZERO, 1 REF, 2 DELTA, 3 RAW, 4 STORED, 5 PREV,
 *              6 DELTA_PREV (5 and 6: below, no hash for PREV)
 *   1    16    XXH3-128 of the page the token produces, canonical form
 *              (XXH128_canonical_t: high 64 bits then low 64 bits, BE)
 *   17   ...   body, by kind:
 *     ZERO    none                                  total 17 bytes
 *     REF     none: the hash is the reference       total 17 bytes
 *     DELTA   u8 codec | u16 n | n bytes:           total 20 + n bytes
 *             the page XOR its previous version (the decoder's mirror
 *             cache entry for this key), compressed
 *     RAW     u8 codec | u16 n | n bytes:           total 20 + n bytes
 *             the page, compressed
 *     STORED  4096 bytes: the page                  total 4113 bytes
 *   codec: 0 = plain (v2): n = 4096 and the body is the page (RAW) or
 *              the XOR (DELTA, DELTA_PREV) itself, uncompressed. The
 *              encoder emits it only with frames on (nc_hde_enc_set_frames):
 *              the frame around the tokens compresses them together;
 *          1 = LZ4 block (LZ4_compress_fast; no frame),
 *          2 = one zstd frame without its 4-byte magic number (saves 4
 *              bytes a page); the frame must declare a content size of
 *              exactly 4096 and the body must hold nothing else.
 *   1 <= n <= 4095 for codecs 1 and 2. A token's length must match its
 *   kind exactly; anything else is NC_E_PROTO, as is a body that does not
 *   decompress to exactly 4096 bytes (decompression is bounded:
 *   LZ4_decompress_safe and ZSTD_decompressDCtx into the 4096-byte page,
 *   never more).
 *
 * Version 2 adds two kinds that use the record of the previous migration
 * of the same VM between the same two nodes (nc_hde_rec: key -> hash of
 * the last version both ends exchanged), announced at session start by
 * nc_hde_enc_set_prev / nc_hde_dec_set_prev with the same record and the
 * same "held" bitmap (the destination holds, and has pinned, that hash):
 *     PREV (5)        kind only, total 1 byte: the page is the content of
 *                     the record's hash for this key. The decoder reads it
 *                     from its cache, which checks it against that hash.
 *                     The encoder sends it only when the page's own hash
 *                     equals the record's, so this is a REF whose 16 bytes
 *                     both ends already agree on.
 *     DELTA_PREV (6)  as DELTA, but the XOR is against the content of the
 *                     record's hash for this key (read from the cache).
 *   A key without a held record entry makes both NC_E_PROTO.
 *
 * Checked frames (v2, what nc_hde_enc_set_frames turns on): the frame
 * carries one 128-bit check over all its pages (below), so the pages whose
 * bytes travel in the frame need no hash of their own. They use these
 * kinds, with a plain body, and are valid only inside a checked frame:
 *     RAW_F (8)         kind | 4096 bytes: the page        total 4097
 *     DELTA_F (9)       kind | 4096 bytes: the page XOR its previous
 *                       version (DELTA's base)            total 4097
 *     DELTA_PREV_F (10) kind | 4096 bytes: XOR DELTA_PREV's base
 *     DELTA_BASE (7)    kind | 16-byte hash of the base | 4096 bytes: the
 *                       page XOR the base                 total 4113
 *   DELTA_BASE's base is any page the destination holds: the encoder uses
 *   one only when the REF rule allows it to reference it (see below), and
 *   the decoder reads it from its cache, which checks it against its hash.
 *   Bases come from the caller (nc_hde_enc_set_base_fn): a source offers
 *   the chunk of the kernel file the guest's loader put at that address
 *   (bootmap.h), which the destination seeded.
 *   The check: XXH3-128 over, for every page token of the frame in order,
 *   u64 BE key | the 16-byte canonical hash of the page (the encoder's hash
 *   of the page QEMU gave it; the decoder's of the page it rebuilt). The
 *   decoder compares it in nc_hde_dec_frame_end, so a page rebuilt wrong is
 *   caught as surely as by its own hash, one frame later at most. Dropping
 *   the per-page hash saves 16 incompressible bytes a page (0.65 MiB of a
 *   cold 512 MiB guest, 0.3 MiB of a typical return leg).
 *
 * Frames (v2), the unit a DATA message carries (nc_hde_frame_pack):
 *   u8 codec (0 stored, 1 LZ4 block, 2 zstd frame with its magic; plus
 *   0x80 for a checked frame) | u32 plain length (1 .. the receiver's cap)
 *   | checked frames only: the 16-byte check (canonical XXH3-128) | body
 *   stored: the body is the plain bytes; lz4/zstd: it decompresses to
 *   exactly the plain length (zstd: one frame, declared content size equal
 *   to it, nothing after it).
 *
 * Shared state, kept identical on both sides by applying the same rules to
 * the same sequence of (key, page), so no message is ever needed:
 *
 * Mirror cache: key -> the key's last nonzero content, at most
 *   delta_cache_bytes / 4096 entries. After every page: a zero page removes
 *   its key; any other page inserts or overwrites it. Eviction is CLOCK in
 *   slot order: an overwrite sets the entry's reference bit, a new entry
 *   starts clear, the hand clears set bits and evicts the first clear one;
 *   freed slots (zero pages) are reused last-freed first. Nothing depends
 *   on time or on hash-table order.
 *
 * Session ledger L: after every DELTA, RAW or STORED token whose hash is
 *   not in L, while |L| < new_pages_quota, the hash joins L and the
 *   decoder stores the page in its cache pinned for the session (it holds
 *   a reservation of new_pages_quota slots, see hde.h). ZERO and REF
 *   tokens never count.
 *
 * REF rule: the encoder sends REF for hash h only when dedup is on and h is
 *   in the destination's summary (pinned there for the session) or in L.
 *   Everything else is not guaranteed to be there. The encoder may know
 *   less than the decoder holds (if it ran out of memory recording L it
 *   still counts the page, so it only ever references less), never more. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lz4.h>
#include <xxhash.h>
#include <zstd.h>

#include "dwcp/hde.h"
#include "util/err.h"

enum tok_kind {
  TOK_ZERO = 0,
  TOK_REF = 1,
  TOK_DELTA = 2,
  TOK_RAW = 3,
  TOK_STORED = 4,
  TOK_PREV = 5,
  TOK_DELTA_PREV = 6,
  TOK_DELTA_BASE = 7, /* checked frames only, no hash of the page */
  TOK_RAW_F = 8,
  TOK_DELTA_F = 9,
  TOK_DELTA_PREV_F = 10
};
enum tok_codec { TOK_PLAIN = 0, TOK_LZ4 = 1, TOK_ZSTD = 2 };

#define TOK_HDR 17                       /* kind + hash */
#define TOK_CHDR 20                      /* + codec + u16 n */
#define TOK_FHDR 1                       /* RAW_F, DELTA_F, DELTA_PREV_F */
#define TOK_BHDR 17                      /* DELTA_BASE: kind + the base's hash */
#define FRAME_CHECKED 0x80
#define FRAME_CHECK 16
#define TOK_BODY_MAX (NC_HDE_PAGE - 1)   /* largest n a decoder accepts */
#define ENC_BODY_MAX (NC_HDE_PAGE - 4)   /* RAW beats STORED: 20 + n < 4113 */
#define SUMMARY_VERSION 1
#define ZSTD_MAGIC_BYTES 4

static const uint8_t zstd_magic[ZSTD_MAGIC_BYTES] = {0x28, 0xb5, 0x2f, 0xfd}; /* LE 0xFD2FB528 */
static const uint8_t zero_page[NC_HDE_PAGE];

_Static_assert(TOK_HDR + NC_HDE_PAGE <= NC_HDE_TOKEN_MAX, "STORED token must fit");
_Static_assert(TOK_CHDR + TOK_BODY_MAX <= NC_HDE_TOKEN_MAX, "compressed token must fit");
_Static_assert(TOK_BHDR + NC_HDE_PAGE <= NC_HDE_TOKEN_MAX, "DELTA_BASE token must fit");

void nc_hde_hash(const uint8_t page[NC_HDE_PAGE], struct nc_hash128 *out) {
  XXH128_hash_t x = XXH3_128bits(page, NC_HDE_PAGE);
  out->lo = x.low64;
  out->hi = x.high64;
}

static void hash_canon(const struct nc_hash128 *h, uint8_t out[16]) {
  XXH128_hash_t x = {.low64 = h->lo, .high64 = h->hi};
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, x);
  memcpy(out, c.digest, 16);
}

static void hash_uncanon(const uint8_t in[16], struct nc_hash128 *h) {
  XXH128_canonical_t c;
  memcpy(c.digest, in, 16);
  XXH128_hash_t x = XXH128_hashFromCanonical(&c);
  h->lo = x.low64;
  h->hi = x.high64;
}

static bool page_is_zero(const uint8_t *p) {
  for (size_t i = 0; i < NC_HDE_PAGE; i += 64) {
    uint64_t w[8], acc = 0;
    memcpy(w, p + i, sizeof w);
    for (int k = 0; k < 8; k++)
      acc |= w[k];
    if (acc)
      return false;
  }
  return true;
}

static void page_xor(uint8_t *dst, const uint8_t *a, const uint8_t *b) {
  for (size_t i = 0; i < NC_HDE_PAGE; i += 8) {
    uint64_t x, y;
    memcpy(&x, a + i, 8);
    memcpy(&y, b + i, 8);
    x ^= y;
    memcpy(dst + i, &x, 8);
  }
}

/* ---- mirror cache: key -> last content, CLOCK eviction ---------------- */

struct mirror_ent {
  uint64_t key;
  uint32_t v; /* slot + 1, 0 = empty */
};

struct mirror {
  uint32_t n; /* slots; 0 disables DELTA */
  uint8_t *pages;
  uint64_t *keys;
  uint8_t *ref;
  uint32_t *free_stack;
  uint32_t nfree, hand;
  struct mirror_ent *tab;
  uint32_t mask;
};

static uint64_t mix64(uint64_t x) { /* splitmix64 finalizer */
  x ^= x >> 30;
  x *= UINT64_C(0xbf58476d1ce4e5b9);
  x ^= x >> 27;
  x *= UINT64_C(0x94d049bb133111eb);
  x ^= x >> 31;
  return x;
}

static int mirror_init(struct mirror *m, uint64_t bytes) {
  memset(m, 0, sizeof *m);
  m->n = (uint32_t)(bytes / NC_HDE_PAGE);
  if (m->n == 0)
    return 0;
  uint64_t tsize = 2;
  while (tsize < 2 * (uint64_t)m->n)
    tsize *= 2;
  m->mask = (uint32_t)(tsize - 1);
  /* Large, and touched only as pages arrive. */
  m->pages = malloc((size_t)m->n * NC_HDE_PAGE);
  m->keys = malloc((size_t)m->n * sizeof *m->keys);
  m->ref = calloc(m->n, 1);
  m->free_stack = malloc((size_t)m->n * sizeof *m->free_stack);
  m->tab = calloc(tsize, sizeof *m->tab);
  if (!m->pages || !m->keys || !m->ref || !m->free_stack || !m->tab)
    return -ENOMEM;
  for (uint32_t i = m->n; i-- > 0;)
    m->free_stack[m->nfree++] = i; /* slot 0 on top */
  return 0;
}

static void mirror_free(struct mirror *m) {
  free(m->pages);
  free(m->keys);
  free(m->ref);
  free(m->free_stack);
  free(m->tab);
}

static int64_t mirror_pos(const struct mirror *m, uint64_t key) {
  if (m->n == 0)
    return -1;
  for (uint32_t i = (uint32_t)mix64(key) & m->mask;; i = (i + 1) & m->mask) {
    if (m->tab[i].v == 0)
      return -1;
    if (m->tab[i].key == key)
      return i;
  }
}

static void mirror_remove_at(struct mirror *m, uint32_t i) {
  uint32_t j = i;
  for (;;) {
    j = (j + 1) & m->mask;
    if (m->tab[j].v == 0)
      break;
    uint32_t k = (uint32_t)mix64(m->tab[j].key) & m->mask;
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (stays)
      continue;
    m->tab[i] = m->tab[j];
    i = j;
  }
  m->tab[i].v = 0;
}

/* The previous version of key, or NULL. */
static const uint8_t *mirror_get(const struct mirror *m, uint64_t key) {
  int64_t pos = mirror_pos(m, key);
  return pos < 0 ? NULL : m->pages + (size_t)(m->tab[pos].v - 1) * NC_HDE_PAGE;
}

static void mirror_del(struct mirror *m, uint64_t key) {
  int64_t pos = mirror_pos(m, key);
  if (pos < 0)
    return;
  uint32_t s = m->tab[pos].v - 1;
  mirror_remove_at(m, (uint32_t)pos);
  m->ref[s] = 0;
  m->free_stack[m->nfree++] = s;
}

static void mirror_put(struct mirror *m, uint64_t key, const uint8_t *page) {
  if (m->n == 0)
    return;
  int64_t pos = mirror_pos(m, key);
  uint32_t s;
  if (pos >= 0) {
    s = m->tab[pos].v - 1;
    m->ref[s] = 1;
    memcpy(m->pages + (size_t)s * NC_HDE_PAGE, page, NC_HDE_PAGE);
    return;
  }
  if (m->nfree > 0) {
    s = m->free_stack[--m->nfree];
  } else {
    /* Every slot holds an entry; at most one full turn clears all bits. */
    for (;;) {
      s = m->hand;
      m->hand = (m->hand + 1) % m->n;
      if (!m->ref[s])
        break;
      m->ref[s] = 0;
    }
    mirror_remove_at(m, (uint32_t)mirror_pos(m, m->keys[s]));
  }
  m->keys[s] = key;
  m->ref[s] = 0;
  memcpy(m->pages + (size_t)s * NC_HDE_PAGE, page, NC_HDE_PAGE);
  uint32_t i = (uint32_t)mix64(key) & m->mask;
  while (m->tab[i].v != 0)
    i = (i + 1) & m->mask;
  m->tab[i].key = key;
  m->tab[i].v = s + 1;
}

/* ---- set of hashes (summary, ledger) ---------------------------------- */

struct hset {
  struct nc_hash128 *e; /* {0,0} = empty */
  uint64_t mask, n;
  bool has_zero; /* the all-zero hash itself, kept aside */
};

static bool h_is_zero(const struct nc_hash128 *h) {
  return h->lo == 0 && h->hi == 0;
}

static bool hset_has(const struct hset *s, const struct nc_hash128 *h) {
  if (h_is_zero(h))
    return s->has_zero;
  if (!s->e)
    return false;
  for (uint64_t i = h->lo & s->mask;; i = (i + 1) & s->mask) {
    if (h_is_zero(&s->e[i]))
      return false;
    if (s->e[i].lo == h->lo && s->e[i].hi == h->hi)
      return true;
  }
}

/* Makes room for `more` insertions without allocating. */
static int hset_reserve(struct hset *s, uint64_t more) {
  uint64_t need = s->n + more, cap = s->e ? s->mask + 1 : 0;
  if (need <= cap / 2)
    return 0;
  uint64_t ncap = cap ? cap : 64;
  while (ncap / 2 < need) {
    if (ncap > (SIZE_MAX / sizeof *s->e) / 4)
      return -ENOMEM;
    ncap *= 2;
  }
  struct nc_hash128 *ne = calloc(ncap, sizeof *ne);
  if (!ne)
    return -ENOMEM;
  for (uint64_t i = 0; i < cap; i++) {
    if (h_is_zero(&s->e[i]))
      continue;
    uint64_t j = s->e[i].lo & (ncap - 1);
    while (!h_is_zero(&ne[j]))
      j = (j + 1) & (ncap - 1);
    ne[j] = s->e[i];
  }
  free(s->e);
  s->e = ne;
  s->mask = ncap - 1;
  return 0;
}

/* h must be absent and room reserved. */
static void hset_add(struct hset *s, const struct nc_hash128 *h) {
  if (h_is_zero(h)) {
    s->has_zero = true;
    return;
  }
  uint64_t i = h->lo & s->mask;
  while (!h_is_zero(&s->e[i]))
    i = (i + 1) & s->mask;
  s->e[i] = *h;
  s->n++;
}


/* ---- key -> hash maps (the previous record, this session's record) ---- */

struct kent {
  uint64_t key;
  struct nc_hash128 h;
  uint8_t used;
};

struct kmap {
  struct kent *e;
  uint64_t mask, n;
  bool broken; /* an insertion could not get memory: the record is incomplete */
};

static const struct kent *kmap_get(const struct kmap *m, uint64_t key) {
  if (!m->e)
    return NULL;
  for (uint64_t i = mix64(key) & m->mask;; i = (i + 1) & m->mask) {
    if (!m->e[i].used)
      return NULL;
    if (m->e[i].key == key)
      return &m->e[i];
  }
}

static int kmap_grow(struct kmap *m) {
  uint64_t cap = m->e ? m->mask + 1 : 0;
  if (m->n + 1 <= cap / 2)
    return 0;
  if (m->n + 1 > NC_HDE_REC_MAX)
    return NC_E_TOOBIG;
  uint64_t ncap = cap ? cap * 2 : 1024;
  struct kent *ne = calloc(ncap, sizeof *ne);
  if (!ne)
    return -ENOMEM;
  for (uint64_t i = 0; i < cap; i++) {
    if (!m->e[i].used)
      continue;
    uint64_t j = mix64(m->e[i].key) & (ncap - 1);
    while (ne[j].used)
      j = (j + 1) & (ncap - 1);
    ne[j] = m->e[i];
  }
  free(m->e);
  m->e = ne;
  m->mask = ncap - 1;
  return 0;
}

static int kmap_put(struct kmap *m, uint64_t key, const struct nc_hash128 *h) {
  struct kent *x = (struct kent *)kmap_get(m, key);
  if (x) {
    x->h = *h;
    return 0;
  }
  int rc = kmap_grow(m);
  if (rc < 0)
    return rc;
  uint64_t i = mix64(key) & m->mask;
  while (m->e[i].used)
    i = (i + 1) & m->mask;
  m->e[i].key = key;
  m->e[i].h = *h;
  m->e[i].used = 1;
  m->n++;
  return 0;
}

static void kmap_del(struct kmap *m, uint64_t key) {
  const struct kent *x = kmap_get(m, key);
  if (!x)
    return;
  uint64_t i = (uint64_t)(x - m->e), j = i;
  for (;;) {
    j = (j + 1) & m->mask;
    if (!m->e[j].used)
      break;
    uint64_t k = mix64(m->e[j].key) & m->mask;
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (stays)
      continue;
    m->e[i] = m->e[j];
    i = j;
  }
  memset(&m->e[i], 0, sizeof m->e[i]);
  m->n--;
}

/* This session's record: what the page at key is after this token. */
static void cur_note(struct kmap *m, uint64_t key, const struct nc_hash128 *h) {
  if (!h) {
    kmap_del(m, key);
    return;
  }
  if (!m->broken && kmap_put(m, key, h) < 0)
    m->broken = true;
}

/* ---- parameters ------------------------------------------------------- */

static int params_check(const struct nc_hde_params *p) {
  if (!p)
    return -EINVAL;
  if (p->codec != NC_HDE_NONE && p->codec != NC_HDE_LZ4 && p->codec != NC_HDE_ZSTD)
    return NC_E_INVALID;
  if (p->delta_cache_bytes > NC_HDE_DELTA_CACHE_MAX)
    return NC_E_TOOBIG;
  return 0;
}

static uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

/* ---- encoder ---------------------------------------------------------- */

struct nc_hde_enc {
  struct nc_hde_params p; /* codec and level: the current ones */
  int lz4_accel;
  struct mirror m;
  struct hset known; /* summary (when dedup) and L */
  uint64_t quota_used;
  struct nc_pcache *local;
  ZSTD_CCtx *zc;
  struct nc_hde_stats st;
  bool frames;       /* plain bodies: the frame compresses them */
  struct kmap prev;  /* key -> held hash of the previous migration's record */
  struct kmap cur;   /* key -> hash of this session's last version */
  nc_hde_base_fn base_fn; /* DELTA_BASE candidates, or NULL */
  void *base_arg;
  XXH3_state_t *check; /* checked frames: over this frame's pages so far */
  uint8_t zero_canon[16];
  uint8_t xbuf[NC_HDE_PAGE];
  uint8_t base[NC_HDE_PAGE];
  /* Compressor output: the body starts at +ZSTD_MAGIC_BYTES, so zstd
   * writes its magic in front and nothing is moved. */
  uint8_t dbuf[ZSTD_MAGIC_BYTES + NC_HDE_PAGE];
  uint8_t rbuf[ZSTD_MAGIC_BYTES + NC_HDE_PAGE];
};

static int summary_load(struct hset *s, const uint8_t *buf, size_t len) {
  if (!buf || len == 0)
    return 0;
  if (len < 9 || buf[0] != SUMMARY_VERSION)
    return NC_E_PROTO;
  uint64_t count = 0;
  for (int i = 0; i < 8; i++)
    count = count << 8 | buf[1 + i];
  if (count != (len - 9) / 16 || (len - 9) % 16 != 0)
    return NC_E_PROTO;
  const uint8_t *h = buf + 9;
  for (uint64_t i = 1; i < count; i++)
    if (memcmp(h + (i - 1) * 16, h + i * 16, 16) >= 0)
      return NC_E_PROTO; /* strictly ascending: sorted, no duplicates */
  int rc = hset_reserve(s, count);
  if (rc < 0)
    return rc;
  for (uint64_t i = 0; i < count; i++) {
    struct nc_hash128 x;
    hash_uncanon(h + i * 16, &x);
    hset_add(s, &x);
  }
  return 0;
}

int nc_hde_enc_new(const struct nc_hde_params *p, const uint8_t *summary, size_t summary_len,
                   struct nc_pcache *local, struct nc_hde_enc **out) {
  if (!out)
    return -EINVAL;
  *out = NULL;
  int rc = params_check(p);
  if (rc < 0)
    return rc;
  struct nc_hde_enc *e = calloc(1, sizeof *e);
  if (!e)
    return -ENOMEM;
  e->p = *p;
  e->local = local;
  struct nc_hash128 z;
  nc_hde_hash(zero_page, &z);
  hash_canon(&z, e->zero_canon);
  rc = mirror_init(&e->m, p->delta_cache_bytes);
  if (rc < 0)
    goto fail;
  if (p->dedup) {
    rc = summary_load(&e->known, summary, summary_len);
    if (rc < 0)
      goto fail;
  }
  e->zc = ZSTD_createCCtx();
  if (!e->zc) {
    rc = -ENOMEM;
    goto fail;
  }
  if (ZSTD_isError(ZSTD_CCtx_setParameter(e->zc, ZSTD_c_contentSizeFlag, 1)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(e->zc, ZSTD_c_checksumFlag, 0))) {
    rc = NC_E_INVALID;
    goto fail;
  }
  e->check = XXH3_createState();
  if (!e->check || XXH3_128bits_reset(e->check) != XXH_OK) {
    rc = -ENOMEM;
    goto fail;
  }
  nc_hde_enc_set_codec(e, p->codec, p->level);
  *out = e;
  return 0;
fail:
  nc_hde_enc_free(e);
  return rc;
}

void nc_hde_enc_free(struct nc_hde_enc *e) {
  if (!e)
    return;
  mirror_free(&e->m);
  free(e->known.e);
  free(e->prev.e);
  free(e->cur.e);
  ZSTD_freeCCtx(e->zc);
  XXH3_freeState(e->check);
  free(e);
}

void nc_hde_enc_set_base_fn(struct nc_hde_enc *e, nc_hde_base_fn fn, void *arg) {
  if (!e)
    return;
  e->base_fn = fn;
  e->base_arg = arg;
}

void nc_hde_enc_set_codec(struct nc_hde_enc *e, enum nc_hde_codec codec, int level) {
  if (!e)
    return;
  if (codec != NC_HDE_LZ4 && codec != NC_HDE_ZSTD)
    codec = NC_HDE_NONE;
  e->p.codec = codec;
  if (codec == NC_HDE_LZ4) {
    e->lz4_accel = level < 1 ? 1 : level > 65537 ? 65537 : level;
    e->p.level = e->lz4_accel;
  } else if (codec == NC_HDE_ZSTD) {
    int lv = level == 0 ? ZSTD_CLEVEL_DEFAULT : level;
    if (lv < ZSTD_minCLevel())
      lv = ZSTD_minCLevel();
    if (lv > ZSTD_maxCLevel())
      lv = ZSTD_maxCLevel();
    e->p.level = lv;
    (void)ZSTD_CCtx_setParameter(e->zc, ZSTD_c_compressionLevel, lv); /* in range */
  } else {
    e->p.level = 0;
  }
}

/* Compresses a page into buf (body at buf + ZSTD_MAGIC_BYTES) with the
 * current codec; the body's length, or 0 when it would exceed cap. */
static size_t compress_page(struct nc_hde_enc *e, const uint8_t *src, uint8_t *buf, size_t cap) {
  if (cap == 0)
    return 0;
  if (e->p.codec == NC_HDE_LZ4) {
    int n = LZ4_compress_fast((const char *)src, (char *)buf + ZSTD_MAGIC_BYTES, NC_HDE_PAGE,
                              (int)cap, e->lz4_accel);
    return n > 0 ? (size_t)n : 0;
  }
  size_t r = ZSTD_compress2(e->zc, buf, cap + ZSTD_MAGIC_BYTES, src, NC_HDE_PAGE);
  if (ZSTD_isError(r) || r <= ZSTD_MAGIC_BYTES || memcmp(buf, zstd_magic, ZSTD_MAGIC_BYTES) != 0)
    return 0;
  return r - ZSTD_MAGIC_BYTES;
}

static unsigned nz_words(const uint8_t *p) {
  unsigned n = 0;
  for (size_t i = 0; i < NC_HDE_PAGE; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    n += w != 0;
  }
  return n;
}

/* With frames: DELTA_F, DELTA_PREV_F or DELTA_BASE against base when the
 * XOR has fewer nonzero words than the page (a cheap stand-in for
 * "compresses smaller"), else RAW_F; the body in plain, no hash (the
 * frame's check covers it). DELTA_BASE's base hash is at out + 1 already.
 * Returns the token length. */
static size_t encode_plain(struct nc_hde_enc *e, const uint8_t *page, const uint8_t *base,
                           uint8_t dkind, uint8_t *out) {
  const uint8_t *body = page;
  out[0] = TOK_RAW_F;
  if (base) {
    page_xor(e->xbuf, page, base);
    if (nz_words(e->xbuf) < nz_words(page)) {
      body = e->xbuf;
      out[0] = dkind;
    }
  }
  size_t h = out[0] == TOK_DELTA_BASE ? TOK_BHDR : TOK_FHDR;
  memcpy(out + h, body, NC_HDE_PAGE);
  return h + NC_HDE_PAGE;
}

/* Checked frames: the page's key and hash join the frame's check. */
static void check_add(XXH3_state_t *st, uint64_t key, const uint8_t canon[16]) {
  uint8_t b[24];
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)(key >> (56 - 8 * i));
  memcpy(b + 8, canon, 16);
  (void)XXH3_128bits_update(st, b, sizeof b);
}

int nc_hde_encode(struct nc_hde_enc *e, uint64_t key, const uint8_t page[NC_HDE_PAGE],
                  uint8_t *out, size_t *out_len) {
  if (!e || !page || !out || !out_len)
    return -EINVAL;
  size_t len;
  uint8_t canon[16];
  if (page_is_zero(page)) {
    out[0] = TOK_ZERO;
    memcpy(out + 1, e->zero_canon, 16);
    memcpy(canon, e->zero_canon, 16);
    len = TOK_HDR;
    mirror_del(&e->m, key);
    cur_note(&e->cur, key, NULL);
    e->st.zero++;
    goto done;
  }

  struct nc_hash128 h;
  nc_hde_hash(page, &h);
  hash_canon(&h, canon);
  const struct kent *pv = kmap_get(&e->prev, key);
  if (pv && pv->h.lo == h.lo && pv->h.hi == h.hi) {
    out[0] = TOK_PREV; /* both ends agree on the hash: it need not travel */
    len = 1;
    e->st.prev++;
    goto store;
  }
  memcpy(out + 1, canon, 16);
  if (e->p.dedup && hset_has(&e->known, &h)) {
    out[0] = TOK_REF;
    len = TOK_HDR;
    e->st.ref++;
    goto store;
  }

  if (e->frames && e->p.codec != NC_HDE_NONE) {
    const uint8_t *base = mirror_get(&e->m, key);
    uint8_t dkind = TOK_DELTA_F;
    if (!base && pv && e->local && nc_pcache_get(e->local, &pv->h, e->base) == 0) {
      base = e->base;
      dkind = TOK_DELTA_PREV_F;
    }
    if (!base && e->base_fn && e->p.dedup && e->base_fn(e->base_arg, key, e->base) == 0) {
      struct nc_hash128 bh;
      nc_hde_hash(e->base, &bh);
      if (hset_has(&e->known, &bh)) { /* the REF rule: it is there */
        base = e->base;
        dkind = TOK_DELTA_BASE;
        hash_canon(&bh, out + 1);
      }
    }
    len = encode_plain(e, page, base, dkind, out);
    if (out[0] == TOK_RAW_F)
      e->st.raw++;
    else if (out[0] == TOK_DELTA_F)
      e->st.delta++;
    else if (out[0] == TOK_DELTA_BASE)
      e->st.delta_base++;
    else
      e->st.delta_prev++;
    goto ledger;
  }

  /* DELTA wins only when strictly smaller than RAW; RAW only when smaller
   * than STORED. Each attempt is capped so a loser stops early. */
  size_t dlen = 0, rlen = 0;
  if (e->p.codec != NC_HDE_NONE) {
    const uint8_t *prev = mirror_get(&e->m, key);
    if (prev) {
      page_xor(e->xbuf, page, prev);
      dlen = compress_page(e, e->xbuf, e->dbuf, ENC_BODY_MAX);
    }
    rlen = compress_page(e, page, e->rbuf, dlen ? dlen : ENC_BODY_MAX);
  }
  uint8_t wire_codec = e->p.codec == NC_HDE_LZ4 ? TOK_LZ4 : TOK_ZSTD;
  if (rlen || dlen) {
    const uint8_t *body = rlen ? e->rbuf : e->dbuf;
    size_t n = rlen ? rlen : dlen;
    out[0] = rlen ? TOK_RAW : TOK_DELTA;
    out[17] = wire_codec;
    put_be16(out + 18, (uint16_t)n);
    memcpy(out + TOK_CHDR, body + ZSTD_MAGIC_BYTES, n);
    len = TOK_CHDR + n;
    if (rlen)
      e->st.raw++;
    else
      e->st.delta++;
  } else {
    out[0] = TOK_STORED;
    memcpy(out + TOK_HDR, page, NC_HDE_PAGE);
    len = TOK_HDR + NC_HDE_PAGE;
    e->st.stored++;
  }

ledger:
  /* Ledger, by the rule the decoder applies (see the top of this file). */
  if (e->quota_used < e->p.new_pages_quota && !hset_has(&e->known, &h)) {
    e->quota_used++;
    e->st.stored_new++;
    if (hset_reserve(&e->known, 1) == 0)
      hset_add(&e->known, &h);
    /* else: counted but not recorded; we just never reference it */
  }

store:
  mirror_put(&e->m, key, page);
  cur_note(&e->cur, key, &h);
  if (e->local && nc_pcache_put(e->local, &h, page) < 0)
    e->st.local_put_errors++;
done:
  if (e->frames)
    check_add(e->check, key, canon);
  e->st.pages++;
  e->st.bytes_in += NC_HDE_PAGE;
  e->st.bytes_out += len;
  *out_len = len;
  return 0;
}

void nc_hde_enc_stats(const struct nc_hde_enc *e, struct nc_hde_stats *out) {
  if (!out)
    return;
  if (e)
    *out = e->st;
  else
    memset(out, 0, sizeof *out);
}

/* ---- decoder ---------------------------------------------------------- */

struct nc_hde_dec {
  struct nc_hde_params p;
  struct mirror m;
  struct hset stored; /* L */
  uint64_t quota_used;
  struct nc_pcache *cache;
  uint64_t session;
  ZSTD_DCtx *zd;  /* tokens: pages of 4096 bytes */
  ZSTD_DCtx *zfd; /* frames */
  struct nc_hde_stats st;
  struct kmap prev; /* as the encoder's */
  struct kmap cur;
  XXH3_state_t *check; /* the current checked frame's pages so far */
  bool checking;       /* inside a checked frame: framed kinds allowed */
  uint8_t want[FRAME_CHECK];
  uint8_t zero_canon[16];
  uint8_t zin[ZSTD_MAGIC_BYTES + TOK_BODY_MAX];
  uint8_t base[NC_HDE_PAGE];
};

int nc_hde_dec_new(const struct nc_hde_params *p, struct nc_pcache *cache, uint64_t session,
                   struct nc_hde_dec **out) {
  if (!out)
    return -EINVAL;
  *out = NULL;
  int rc = params_check(p);
  if (rc < 0)
    return rc;
  if (p->new_pages_quota > 0 &&
      (!cache || session == 0 || nc_pcache_reserved(cache, session) < p->new_pages_quota))
    return NC_E_INVALID; /* a quota nobody guarantees: REFs would fail */
  struct nc_hde_dec *d = calloc(1, sizeof *d);
  if (!d)
    return -ENOMEM;
  d->p = *p;
  d->cache = cache;
  d->session = session;
  struct nc_hash128 z;
  nc_hde_hash(zero_page, &z);
  hash_canon(&z, d->zero_canon);
  rc = mirror_init(&d->m, p->delta_cache_bytes);
  if (rc < 0)
    goto fail;
  d->zd = ZSTD_createDCtx();
  if (!d->zd) {
    rc = -ENOMEM;
    goto fail;
  }
  d->zfd = ZSTD_createDCtx();
  d->check = XXH3_createState();
  if (!d->zfd || !d->check) {
    rc = -ENOMEM;
    goto fail;
  }
  /* Pages are 4096 bytes: no legitimate frame needs a larger window; a
   * DATA frame is at most NC_HDE_FRAME_PLAIN_MAX. */
  if (ZSTD_isError(ZSTD_DCtx_setParameter(d->zd, ZSTD_d_windowLogMax, 12)) ||
      ZSTD_isError(ZSTD_DCtx_setParameter(d->zfd, ZSTD_d_windowLogMax, NC_HDE_FRAME_WLOG))) {
    rc = NC_E_INVALID;
    goto fail;
  }
  *out = d;
  return 0;
fail:
  nc_hde_dec_free(d);
  return rc;
}

void nc_hde_dec_free(struct nc_hde_dec *d) {
  if (!d)
    return;
  mirror_free(&d->m);
  free(d->stored.e);
  free(d->prev.e);
  free(d->cur.e);
  ZSTD_freeDCtx(d->zd);
  ZSTD_freeDCtx(d->zfd);
  XXH3_freeState(d->check);
  free(d);
}

/* Decompresses a body into exactly one page. */
static int decompress_page(struct nc_hde_dec *d, uint8_t codec, const uint8_t *body, size_t n,
                           uint8_t *dst) {
  if (codec == TOK_LZ4) {
    int r = LZ4_decompress_safe((const char *)body, (char *)dst, (int)n, NC_HDE_PAGE);
    return r == NC_HDE_PAGE ? 0 : NC_E_PROTO;
  }
  if (codec != TOK_ZSTD)
    return NC_E_PROTO;
  memcpy(d->zin, zstd_magic, ZSTD_MAGIC_BYTES);
  memcpy(d->zin + ZSTD_MAGIC_BYTES, body, n);
  size_t zn = ZSTD_MAGIC_BYTES + n;
  if (ZSTD_getFrameContentSize(d->zin, zn) != NC_HDE_PAGE)
    return NC_E_PROTO; /* unknown, larger, smaller, or not a frame */
  size_t fsize = ZSTD_findFrameCompressedSize(d->zin, zn);
  if (ZSTD_isError(fsize) || fsize != zn)
    return NC_E_PROTO; /* exactly one frame, nothing after it */
  size_t r = ZSTD_decompressDCtx(d->zd, dst, NC_HDE_PAGE, d->zin, zn);
  return !ZSTD_isError(r) && r == NC_HDE_PAGE ? 0 : NC_E_PROTO;
}

/* The base a delta kind is XORed against, into d->base or the mirror's
 * copy; NULL with *rc set when there is none (the encoder would never send
 * the token, so NC_E_PROTO, or the cache's error). */
static const uint8_t *dec_base(struct nc_hde_dec *d, uint8_t kind, uint64_t key,
                               const uint8_t *tok, int *rc) {
  *rc = NC_E_PROTO;
  if (kind == TOK_DELTA || kind == TOK_DELTA_F)
    return mirror_get(&d->m, key);
  struct nc_hash128 bh;
  if (kind == TOK_DELTA_BASE) {
    hash_uncanon(tok + 1, &bh);
  } else {
    const struct kent *pv = kmap_get(&d->prev, key);
    if (!pv)
      return NULL;
    bh = pv->h;
  }
  if (!d->cache) {
    *rc = kind == TOK_DELTA_BASE ? -ENOENT : NC_E_PROTO;
    return NULL;
  }
  *rc = nc_pcache_get(d->cache, &bh, d->base); /* checks the content's hash */
  return *rc == 0 ? d->base : NULL;
}

int nc_hde_decode(struct nc_hde_dec *d, uint64_t key, const uint8_t *tok, size_t len,
                  uint8_t page[NC_HDE_PAGE]) {
  if (!d || !page)
    return -EINVAL;
  int rc = NC_E_PROTO;
  if (!tok || len < 1)
    goto fail;
  uint8_t kind = tok[0];
  bool framed = kind == TOK_DELTA_BASE || kind == TOK_RAW_F || kind == TOK_DELTA_F ||
                kind == TOK_DELTA_PREV_F;
  if (framed && !d->checking)
    goto fail; /* no hash of its own: only a checked frame may carry it */
  if (kind != TOK_PREV && !framed && len < TOK_HDR)
    goto fail;
  struct nc_hash128 h = {0, 0};
  if (kind != TOK_PREV && !framed)
    hash_uncanon(tok + 1, &h);
  const uint8_t *prev = NULL;

  switch (kind) {
  case TOK_ZERO:
    if (len != TOK_HDR)
      goto fail;
    if (memcmp(tok + 1, d->zero_canon, 16) != 0) {
      rc = NC_E_INVALID;
      goto fail;
    }
    memset(page, 0, NC_HDE_PAGE);
    mirror_del(&d->m, key);
    cur_note(&d->cur, key, NULL);
    d->st.zero++;
    goto done;
  case TOK_REF:
    if (len != TOK_HDR)
      goto fail;
    if (!d->cache) {
      rc = -ENOENT;
      goto fail;
    }
    rc = nc_pcache_get(d->cache, &h, page); /* checks the content's hash */
    if (rc < 0)
      goto fail;
    d->st.ref++;
    goto store;
  case TOK_PREV: {
    if (len != 1)
      goto fail;
    const struct kent *pv = kmap_get(&d->prev, key);
    if (!pv || !d->cache)
      goto fail; /* no held record entry: the encoder would never send this */
    rc = nc_pcache_get(d->cache, &pv->h, page); /* checks the content's hash */
    if (rc < 0)
      goto fail;
    h = pv->h;
    d->st.prev++;
    goto store;
  }
  case TOK_RAW_F:
  case TOK_DELTA_F:
  case TOK_DELTA_PREV_F:
  case TOK_DELTA_BASE: {
    size_t hl = kind == TOK_DELTA_BASE ? TOK_BHDR : TOK_FHDR;
    if (len != hl + NC_HDE_PAGE)
      goto fail;
    if (kind != TOK_RAW_F && !(prev = dec_base(d, kind, key, tok, &rc)))
      goto fail;
    memcpy(page, tok + hl, NC_HDE_PAGE);
    break;
  }
  case TOK_DELTA:
  case TOK_DELTA_PREV:
  case TOK_RAW: {
    if (len < TOK_CHDR)
      goto fail;
    uint8_t codec = tok[17];
    size_t n = (size_t)tok[18] << 8 | tok[19];
    if (codec == TOK_PLAIN ? n != NC_HDE_PAGE : n == 0 || n > TOK_BODY_MAX)
      goto fail;
    if (len != TOK_CHDR + n)
      goto fail;
    if (kind != TOK_RAW && !(prev = dec_base(d, kind, key, tok, &rc)))
      goto fail;
    if (codec == TOK_PLAIN) {
      memcpy(page, tok + TOK_CHDR, NC_HDE_PAGE);
    } else {
      rc = decompress_page(d, codec, tok + TOK_CHDR, n, page);
      if (rc < 0)
        goto fail;
    }
    break;
  }
  case TOK_STORED:
    if (len != TOK_HDR + NC_HDE_PAGE)
      goto fail;
    memcpy(page, tok + TOK_HDR, NC_HDE_PAGE);
    break;
  default:
    goto fail;
  }
  if (prev)
    page_xor(page, page, prev);

  /* A page with its own hash must be what the token names; a framed one is
   * checked with its frame (nc_hde_dec_frame_end). */
  struct nc_hash128 actual;
  nc_hde_hash(page, &actual);
  if (framed) {
    h = actual;
  } else if (actual.lo != h.lo || actual.hi != h.hi) {
    rc = NC_E_INVALID;
    goto fail;
  }
  /* Ledger, by the encoder's rule: store and pin the page for the session.
   * Room in the set first, so nothing can fail after the cache has it. */
  if (d->quota_used < d->p.new_pages_quota && !hset_has(&d->stored, &h)) {
    rc = hset_reserve(&d->stored, 1);
    if (rc < 0)
      goto fail;
    rc = nc_pcache_put_pinned(d->cache, d->session, &h, page);
    if (rc < 0)
      goto fail;
    hset_add(&d->stored, &h);
    d->quota_used++;
    d->st.stored_new++;
  }
  if (kind == TOK_DELTA || kind == TOK_DELTA_F)
    d->st.delta++;
  else if (kind == TOK_DELTA_PREV || kind == TOK_DELTA_PREV_F)
    d->st.delta_prev++;
  else if (kind == TOK_DELTA_BASE)
    d->st.delta_base++;
  else if (kind == TOK_RAW || kind == TOK_RAW_F)
    d->st.raw++;
  else
    d->st.stored++;

store:
  mirror_put(&d->m, key, page);
  cur_note(&d->cur, key, &h);
done:
  if (d->checking) {
    uint8_t canon[16];
    hash_canon(&h, canon);
    check_add(d->check, key, kind == TOK_ZERO ? d->zero_canon : canon);
  }
  d->st.pages++;
  d->st.bytes_in += len;
  d->st.bytes_out += NC_HDE_PAGE;
  return 0;
fail:
  memset(page, 0, NC_HDE_PAGE);
  return rc;
}

void nc_hde_dec_stats(const struct nc_hde_dec *d, struct nc_hde_stats *out) {
  if (!out)
    return;
  if (d)
    *out = d->st;
  else
    memset(out, 0, sizeof *out);
}

/* ---- frames ------------------------------------------------------------ */

enum { FRAME_STORED = 0, FRAME_LZ4 = 1, FRAME_ZSTD = 2 };

int nc_hde_enc_set_frames(struct nc_hde_enc *e, bool on) {
  if (!e)
    return -EINVAL;
  e->frames = on;
  (void)XXH3_128bits_reset(e->check); /* a frame's check covers only its pages */
  return 0;
}

size_t nc_hde_frame_bound(size_t plain_len) {
  size_t z = ZSTD_compressBound(plain_len);
  size_t l = plain_len <= LZ4_MAX_INPUT_SIZE ? (size_t)LZ4_compressBound((int)plain_len) : 0;
  size_t m = z > l ? z : l;
  return NC_HDE_FRAME_HDR + FRAME_CHECK + (m > plain_len ? m : plain_len);
}

static void frame_hdr(uint8_t *out, uint8_t codec, size_t plain_len) {
  out[0] = codec;
  out[1] = (uint8_t)(plain_len >> 24);
  out[2] = (uint8_t)(plain_len >> 16);
  out[3] = (uint8_t)(plain_len >> 8);
  out[4] = (uint8_t)plain_len;
}

int nc_hde_frame_pack(struct nc_hde_enc *e, const uint8_t *plain, size_t len, uint8_t *out,
                      size_t cap, size_t *out_len) {
  if (!e || !plain || !out || !out_len || len == 0 || len > NC_HDE_FRAME_PLAIN_MAX ||
      cap < nc_hde_frame_bound(len))
    return -EINVAL;
  size_t n = 0, hdr = NC_HDE_FRAME_HDR + (e->frames ? FRAME_CHECK : 0);
  uint8_t codec = FRAME_STORED;
  if (e->p.codec == NC_HDE_LZ4) {
    int r = LZ4_compress_fast((const char *)plain, (char *)out + hdr, (int)len, (int)(cap - hdr),
                              e->lz4_accel);
    if (r > 0) {
      n = (size_t)r;
      codec = FRAME_LZ4;
    }
  } else if (e->p.codec == NC_HDE_ZSTD) {
    size_t r = ZSTD_compress2(e->zc, out + hdr, cap - hdr, plain, len);
    if (!ZSTD_isError(r)) {
      n = r;
      codec = FRAME_ZSTD;
    }
  }
  if (codec == FRAME_STORED || n >= len) { /* the stored fallback */
    codec = FRAME_STORED;
    memcpy(out + hdr, plain, len);
    n = len;
  }
  if (e->frames) { /* the check over the pages encoded since the last frame */
    struct nc_hash128 c;
    XXH128_hash_t x = XXH3_128bits_digest(e->check);
    c.lo = x.low64;
    c.hi = x.high64;
    hash_canon(&c, out + NC_HDE_FRAME_HDR);
    (void)XXH3_128bits_reset(e->check);
    codec |= FRAME_CHECKED;
  }
  frame_hdr(out, codec, len);
  *out_len = hdr + n;
  e->st.frames++;
  e->st.frame_bytes_in += len;
  e->st.frame_bytes_out += *out_len;
  return 0;
}

int nc_hde_frame_unpack(struct nc_hde_dec *d, const uint8_t *in, size_t len, uint8_t *plain,
                        size_t cap, size_t *out_len) {
  if (!d || !in || !plain || !out_len)
    return -EINVAL;
  *out_len = 0;
  if (d->checking)
    return NC_E_INVALID; /* the last checked frame was not ended */
  bool checked = len > 0 && (in[0] & FRAME_CHECKED);
  size_t hdr = NC_HDE_FRAME_HDR + (checked ? FRAME_CHECK : 0);
  if (len < hdr)
    return NC_E_PROTO;
  size_t plen = (size_t)in[1] << 24 | (size_t)in[2] << 16 | (size_t)in[3] << 8 | in[4];
  const uint8_t *body = in + hdr;
  size_t n = len - hdr;
  if (plen == 0 || plen > NC_HDE_FRAME_PLAIN_MAX)
    return NC_E_PROTO;
  if (plen > cap)
    return NC_E_TOOBIG;
  switch (in[0] & ~FRAME_CHECKED) {
  case FRAME_STORED:
    if (n != plen)
      return NC_E_PROTO;
    memcpy(plain, body, plen);
    break;
  case FRAME_LZ4: {
    if (n == 0 || n > (size_t)LZ4_MAX_INPUT_SIZE)
      return NC_E_PROTO;
    int r = LZ4_decompress_safe((const char *)body, (char *)plain, (int)n, (int)plen);
    if (r < 0 || (size_t)r != plen)
      return NC_E_PROTO;
    break;
  }
  case FRAME_ZSTD: {
    if (ZSTD_getFrameContentSize(body, n) != plen)
      return NC_E_PROTO; /* unknown, other, or not a frame */
    size_t fsize = ZSTD_findFrameCompressedSize(body, n);
    if (ZSTD_isError(fsize) || fsize != n)
      return NC_E_PROTO; /* exactly one frame, nothing after it */
    size_t r = ZSTD_decompressDCtx(d->zfd, plain, plen, body, n);
    if (ZSTD_isError(r) || r != plen)
      return NC_E_PROTO;
    break;
  }
  default:
    return NC_E_PROTO;
  }
  if (checked) {
    memcpy(d->want, in + NC_HDE_FRAME_HDR, FRAME_CHECK);
    (void)XXH3_128bits_reset(d->check);
    d->checking = true;
  }
  *out_len = plen;
  return 0;
}

int nc_hde_dec_frame_end(struct nc_hde_dec *d) {
  if (!d)
    return -EINVAL;
  if (!d->checking)
    return 0;
  d->checking = false;
  struct nc_hash128 c;
  XXH128_hash_t x = XXH3_128bits_digest(d->check);
  c.lo = x.low64;
  c.hi = x.high64;
  uint8_t got[FRAME_CHECK];
  hash_canon(&c, got);
  return memcmp(got, d->want, FRAME_CHECK) == 0 ? 0 : NC_E_INVALID;
}

/* ---- the previous migration's record ----------------------------------- */

struct rec_ent {
  uint64_t key;
  struct nc_hash128 h;
};

struct nc_hde_rec {
  uint64_t n;
  struct rec_ent *e; /* ascending by key, keys distinct */
  uint8_t digest[16];
};

#define REC_MAGIC "NCHDEREC"
#define REC_VERSION 1u
#define REC_HDR 20    /* magic, u32 version, u64 count */
#define REC_ENT 24    /* u64 key, 16-byte hash */

static void rec_ent_put(uint8_t *p, const struct rec_ent *x) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(x->key >> (56 - 8 * i));
  hash_canon(&x->h, p + 8);
}

/* The digest: XXH3-128 of the entries as stored (count, then each). */
static void rec_digest(struct nc_hde_rec *r) {
  XXH3_state_t *st = XXH3_createState();
  uint8_t buf[REC_ENT];
  XXH128_hash_t x = {0, 0};
  if (st && XXH3_128bits_reset(st) == XXH_OK) {
    for (int i = 0; i < 8; i++)
      buf[i] = (uint8_t)(r->n >> (56 - 8 * i));
    XXH3_128bits_update(st, buf, 8);
    for (uint64_t i = 0; i < r->n; i++) {
      rec_ent_put(buf, &r->e[i]);
      XXH3_128bits_update(st, buf, REC_ENT);
    }
    x = XXH3_128bits_digest(st);
  } else {
    x = XXH3_128bits(&r->n, 0); /* no memory: a digest no peer will match... */
    x.low64 ^= UINT64_C(0x9e3779b97f4a7c15) ^ r->n;
  }
  XXH3_freeState(st);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, x);
  memcpy(r->digest, c.digest, 16);
}

static int cmp_rec(const void *a, const void *b) {
  uint64_t x = ((const struct rec_ent *)a)->key, y = ((const struct rec_ent *)b)->key;
  return x < y ? -1 : x > y;
}

static int rec_from_map(const struct kmap *m, struct nc_hde_rec **out) {
  *out = NULL;
  if (m->broken)
    return -ENOMEM;
  struct nc_hde_rec *r = calloc(1, sizeof *r);
  if (!r)
    return -ENOMEM;
  r->e = malloc((m->n ? m->n : 1) * sizeof *r->e);
  if (!r->e) {
    free(r);
    return -ENOMEM;
  }
  for (uint64_t i = 0; m->e && i <= m->mask; i++)
    if (m->e[i].used)
      r->e[r->n++] = (struct rec_ent){m->e[i].key, m->e[i].h};
  qsort(r->e, r->n, sizeof *r->e, cmp_rec);
  rec_digest(r);
  *out = r;
  return 0;
}

int nc_hde_enc_record(const struct nc_hde_enc *e, struct nc_hde_rec **out) {
  if (!e || !out)
    return -EINVAL;
  return rec_from_map(&e->cur, out);
}

int nc_hde_dec_record(const struct nc_hde_dec *d, struct nc_hde_rec **out) {
  if (!d || !out)
    return -EINVAL;
  return rec_from_map(&d->cur, out);
}

void nc_hde_rec_free(struct nc_hde_rec *r) {
  if (!r)
    return;
  free(r->e);
  free(r);
}

uint64_t nc_hde_rec_count(const struct nc_hde_rec *r) {
  return r ? r->n : 0;
}

void nc_hde_rec_digest(const struct nc_hde_rec *r, uint8_t out[16]) {
  if (r)
    memcpy(out, r->digest, 16);
  else
    memset(out, 0, 16);
}

int nc_hde_rec_save(const struct nc_hde_rec *r, const char *path) {
  if (!r || !path)
    return -EINVAL;
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 5);
  size_t size = REC_HDR + (size_t)r->n * REC_ENT + 16;
  uint8_t *buf = malloc(size);
  int rc = -ENOMEM;
  if (!tmp || !buf)
    goto out;
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  memcpy(buf, REC_MAGIC, 8);
  for (int i = 0; i < 4; i++)
    buf[8 + i] = (uint8_t)(REC_VERSION >> (24 - 8 * i));
  for (int i = 0; i < 8; i++)
    buf[12 + i] = (uint8_t)(r->n >> (56 - 8 * i));
  for (uint64_t i = 0; i < r->n; i++)
    rec_ent_put(buf + REC_HDR + i * REC_ENT, &r->e[i]);
  memcpy(buf + size - 16, r->digest, 16);
  FILE *f = fopen(tmp, "wbe");
  if (!f) {
    rc = -errno;
    goto out;
  }
  size_t w = fwrite(buf, 1, size, f);
  rc = fclose(f) == 0 && w == size ? 0 : -EIO;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc < 0)
    unlink(tmp);
out:
  free(tmp);
  free(buf);
  return rc;
}

int nc_hde_rec_load(const char *path, struct nc_hde_rec **out) {
  if (!path || !out)
    return -EINVAL;
  *out = NULL;
  FILE *f = fopen(path, "rbe");
  if (!f)
    return -errno;
  uint8_t hdr[REC_HDR];
  int rc = NC_E_PROTO;
  struct nc_hde_rec *r = NULL;
  uint8_t *buf = NULL;
  if (fread(hdr, 1, REC_HDR, f) != REC_HDR || memcmp(hdr, REC_MAGIC, 8) != 0 ||
      get_be32(hdr + 8) != REC_VERSION)
    goto out;
  uint64_t n = (uint64_t)get_be32(hdr + 12) << 32 | get_be32(hdr + 16);
  if (n > NC_HDE_REC_MAX)
    goto out;
  size_t body = (size_t)n * REC_ENT + 16;
  r = calloc(1, sizeof *r);
  buf = malloc(body);
  if (!r || !buf || !(r->e = malloc((n ? n : 1) * sizeof *r->e))) {
    rc = -ENOMEM;
    goto out;
  }
  if (fread(buf, 1, body, f) != body || fgetc(f) != EOF)
    goto out;
  for (uint64_t i = 0; i < n; i++) {
    const uint8_t *p = buf + i * REC_ENT;
    uint64_t k = (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
    if (i > 0 && k <= r->e[i - 1].key)
      goto out; /* ascending, distinct */
    r->e[i].key = k;
    hash_uncanon(p + 8, &r->e[i].h);
  }
  r->n = n;
  rec_digest(r);
  if (memcmp(r->digest, buf + body - 16, 16) != 0)
    goto out; /* damaged */
  *out = r;
  r = NULL;
  rc = 0;
out:
  fclose(f);
  free(buf);
  nc_hde_rec_free(r);
  return rc;
}

static bool summary_has(const uint8_t *sum, uint64_t count, const uint8_t canon[16],
                        uint64_t *pos) {
  uint64_t lo = 0, hi = count;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    int c = memcmp(sum + 9 + mid * 16, canon, 16);
    if (c == 0) {
      *pos = mid;
      return true;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return false;
}

int nc_hde_rec_match(const struct nc_hde_rec *r, uint8_t *summary, size_t *summary_len,
                     uint8_t **held, size_t *held_len) {
  if (!r || !summary || !summary_len || !held || !held_len)
    return -EINVAL;
  *held = NULL;
  *held_len = 0;
  size_t len = *summary_len;
  if (len < 9 || summary[0] != SUMMARY_VERSION || (len - 9) % 16 != 0)
    return NC_E_PROTO;
  uint64_t count = (len - 9) / 16;
  size_t blen = (size_t)((r->n + 7) / 8);
  uint8_t *bits = calloc(blen ? blen : 1, 1);
  uint8_t *drop = calloc(count ? count : 1, 1);
  if (!bits || !drop) {
    free(bits);
    free(drop);
    return -ENOMEM;
  }
  for (uint64_t i = 0; i < r->n; i++) {
    uint8_t c[16];
    uint64_t pos;
    hash_canon(&r->e[i].h, c);
    if (summary_has(summary, count, c, &pos)) {
      bits[i / 8] |= (uint8_t)(1u << (i % 8));
      drop[pos] = 1;
    }
  }
  uint64_t kept = 0;
  for (uint64_t i = 0; i < count; i++)
    if (!drop[i])
      memmove(summary + 9 + kept++ * 16, summary + 9 + i * 16, 16);
  for (int b = 0; b < 8; b++)
    summary[1 + b] = (uint8_t)(kept >> (56 - 8 * b));
  *summary_len = 9 + kept * 16;
  free(drop);
  *held = bits;
  *held_len = blen;
  return 0;
}

static int prev_load(struct kmap *m, struct hset *known, const struct nc_hde_rec *r,
                     const uint8_t *held, size_t held_len) {
  if (!r || (!held && held_len))
    return -EINVAL;
  if (held_len != (r->n + 7) / 8)
    return NC_E_PROTO;
  free(m->e);
  memset(m, 0, sizeof *m);
  for (uint64_t i = 0; i < r->n; i++) {
    if (!(held[i / 8] >> (i % 8) & 1))
      continue;
    int rc = kmap_put(m, r->e[i].key, &r->e[i].h);
    if (rc == 0 && known) {
      if (!hset_has(known, &r->e[i].h)) {
        rc = hset_reserve(known, 1);
        if (rc == 0)
          hset_add(known, &r->e[i].h);
      }
    }
    if (rc < 0) {
      free(m->e);
      memset(m, 0, sizeof *m);
      return rc;
    }
  }
  return 0;
}

int nc_hde_enc_set_prev(struct nc_hde_enc *e, const struct nc_hde_rec *r, const uint8_t *held,
                        size_t held_len) {
  if (!e)
    return -EINVAL;
  return prev_load(&e->prev, e->p.dedup ? &e->known : NULL, r, held, held_len);
}

int nc_hde_dec_set_prev(struct nc_hde_dec *d, const struct nc_hde_rec *r, const uint8_t *held,
                        size_t held_len) {
  if (!d)
    return -EINVAL;
  return prev_load(&d->prev, NULL, r, held, held_len);
}
