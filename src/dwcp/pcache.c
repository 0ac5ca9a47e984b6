/* Persistent page cache: content-addressed pages in one fixed-slot file.
 *
 * File layout (<dir>/NC_PCACHE_FILE), big endian; changing it breaks
 * compatibility with existing caches (they are discarded, not misread,
 * because the header is checked):
 *
 *   offset 0      header, PC_HDR_BYTES (4096) bytes:
 *                   8 bytes  magic "NCPCACHE"
 *                   u32      version (PC_VERSION)
 *                   u32      slot size in bytes (PC_SLOT_BYTES = 4112)
 *                   u32      page size in bytes (NC_HDE_PAGE = 4096)
 *                   u32      hash kind (1 = XXH3-128)
 *                   zero padding
 *   offset 4096 + i * 4112, slot i:
 *                   16 bytes XXH3-128 of the page, canonical (XXH128_canonical_t)
 *                   4096 bytes page
 *
 * A slot is valid only when its page hashes to its stored hash; a slot
 * never written (zeros) fails that test, so there is no separate "used"
 * mark. Slots are written with one pwritev and never fsynced: a crash can
 * tear a slot, which then fails the test and is dropped at open. Every get
 * re-checks the hash, so a slot damaged later is dropped too, never
 * returned.
 *
 * Memory: per slot its hash, a pin count and two flags; an open-addressing
 * index (linear probing, backward-shift deletion, load <= 1/2) from hash to
 * slot; a stack of free slots; per session a bitmap of the slots it pins.
 *
 * Eviction: CLOCK over valid unpinned slots. A hit (get, or a put of a
 * page already held) sets the slot's reference bit; a new entry starts
 * with it clear, so a bulk of new pages ages out in insertion order while
 * pages that were hit survive a sweep. Free slots (invalid and unpinned)
 * are always used first.
 *
 * Accounting: pinned (slots with a pin) + reserved (promised to sessions)
 * <= slots, always; see hde.h for the protocol built on it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <xxhash.h>

#include "dwcp/hde.h"
#include "util/err.h"

#define PC_VERSION 1u
#define PC_HASH_XXH3_128 1u
#define PC_HDR_BYTES 4096u
#define PC_HASH_BYTES 16u
#define PC_SLOT_BYTES (PC_HASH_BYTES + NC_HDE_PAGE)
#define PC_MAX_SLOTS (UINT32_C(1) << 30) /* 4 TiB of pages */
#define PC_SCAN_SLOTS 64u                /* slots read per pread at open */
#define PC_WB_SLOTS 64u /* write-behind batch: 257 KiB, one pwrite */

static const char pc_magic[8] = {'N', 'C', 'P', 'C', 'A', 'C', 'H', 'E'};

struct pc_slot {
  struct nc_hash128 h;
  uint32_t pins; /* sessions pinning this slot */
  uint8_t valid;
  uint8_t ref; /* CLOCK reference bit */
};

struct pc_session {
  uint64_t id;
  uint64_t reserved; /* slots still promised */
  uint64_t *bits;    /* slots pinned by this session */
};

struct nc_pcache {
  pthread_mutex_t mu;
  int fd;
  char *dir;
  uint32_t nslots;
  struct pc_slot *slots;
  uint32_t *index; /* slot + 1, 0 = empty */
  uint32_t index_mask;
  uint32_t *free_stack; /* exactly the slots that are invalid and unpinned */
  uint32_t nfree;
  uint32_t hand;
  uint64_t count;
  uint64_t pinned;
  uint64_t reserved;
  struct pc_session *sess;
  size_t nsess, sess_cap;
  uint8_t io[PC_SLOT_BYTES];
  /* Write-behind (nc_pcache_set_write_behind): slots [wfirst, wfirst+wn)
   * are valid and indexed but their bytes are still here, in slot layout,
   * until one pwrite puts them all in the file. */
  uint8_t *wbuf; /* PC_WB_SLOTS slots, or NULL when writing through */
  uint32_t wfirst, wn;
};

/* ---- helpers --------------------------------------------------------- */

static void hash_to_canon(const struct nc_hash128 *h, uint8_t out[PC_HASH_BYTES]) {
  XXH128_hash_t x = {.low64 = h->lo, .high64 = h->hi};
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, x);
  memcpy(out, c.digest, PC_HASH_BYTES);
}

static void canon_to_hash(const uint8_t in[PC_HASH_BYTES], struct nc_hash128 *h) {
  XXH128_canonical_t c;
  memcpy(c.digest, in, PC_HASH_BYTES);
  XXH128_hash_t x = XXH128_hashFromCanonical(&c);
  h->lo = x.low64;
  h->hi = x.high64;
}

static bool hash_eq(const struct nc_hash128 *a, const struct nc_hash128 *b) {
  return a->lo == b->lo && a->hi == b->hi;
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static off_t slot_off(uint32_t i) {
  return (off_t)PC_HDR_BYTES + (off_t)i * PC_SLOT_BYTES;
}

/* ---- index: hash -> slot --------------------------------------------- */

static uint32_t idx_home(const struct nc_pcache *c, const struct nc_hash128 *h) {
  return (uint32_t)h->lo & c->index_mask;
}

/* Position in the index of h, or -1. */
static int64_t idx_find(const struct nc_pcache *c, const struct nc_hash128 *h) {
  for (uint32_t i = idx_home(c, h);; i = (i + 1) & c->index_mask) {
    uint32_t v = c->index[i];
    if (v == 0)
      return -1;
    if (hash_eq(&c->slots[v - 1].h, h))
      return i;
  }
}

static void idx_insert(struct nc_pcache *c, uint32_t slot) {
  uint32_t i = idx_home(c, &c->slots[slot].h);
  while (c->index[i] != 0)
    i = (i + 1) & c->index_mask;
  c->index[i] = slot + 1;
}

/* Backward-shift deletion: keeps every probe chain unbroken. */
static void idx_remove_at(struct nc_pcache *c, uint32_t i) {
  uint32_t j = i;
  for (;;) {
    j = (j + 1) & c->index_mask;
    uint32_t v = c->index[j];
    if (v == 0)
      break;
    uint32_t k = idx_home(c, &c->slots[v - 1].h);
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (stays)
      continue;
    c->index[i] = v;
    i = j;
  }
  c->index[i] = 0;
}

/* ---- sessions -------------------------------------------------------- */

static struct pc_session *sess_find(struct nc_pcache *c, uint64_t id) {
  for (size_t i = 0; i < c->nsess; i++)
    if (c->sess[i].id == id)
      return &c->sess[i];
  return NULL;
}

static int sess_get(struct nc_pcache *c, uint64_t id, struct pc_session **out) {
  struct pc_session *s = sess_find(c, id);
  if (s) {
    *out = s;
    return 0;
  }
  if (c->nsess == c->sess_cap) {
    size_t ncap = c->sess_cap ? c->sess_cap * 2 : 4;
    struct pc_session *ns = realloc(c->sess, ncap * sizeof *ns);
    if (!ns)
      return -ENOMEM;
    c->sess = ns;
    c->sess_cap = ncap;
  }
  uint64_t *bits = calloc(((size_t)c->nslots + 63) / 64, sizeof *bits);
  if (!bits)
    return -ENOMEM;
  s = &c->sess[c->nsess++];
  s->id = id;
  s->reserved = 0;
  s->bits = bits;
  *out = s;
  return 0;
}

static bool sess_has(const struct pc_session *s, uint32_t i) {
  return (s->bits[i / 64] >> (i % 64)) & 1;
}

static uint64_t unclaimed(const struct nc_pcache *c) {
  return (uint64_t)c->nslots - c->pinned - c->reserved;
}

/* Pins slot i for s, which must not pin it yet. A slot nobody pinned takes
 * the session's reservation first when use_reserved (a new page the
 * session stores), then unclaimed capacity. */
static int pin(struct nc_pcache *c, struct pc_session *s, uint32_t i, bool use_reserved) {
  if (c->slots[i].pins == 0) {
    if (use_reserved && s->reserved > 0) {
      s->reserved--;
      c->reserved--;
    } else if (unclaimed(c) == 0) {
      return -ENOSPC;
    }
    c->pinned++;
  }
  c->slots[i].pins++;
  s->bits[i / 64] |= UINT64_C(1) << (i % 64);
  return 0;
}

/* ---- slots ----------------------------------------------------------- */

static void slot_drop(struct nc_pcache *c, uint32_t i) {
  int64_t pos = idx_find(c, &c->slots[i].h);
  if (pos >= 0 && c->index[pos] == i + 1)
    idx_remove_at(c, (uint32_t)pos);
  c->slots[i].valid = 0;
  c->slots[i].ref = 0;
  c->count--;
  if (c->slots[i].pins == 0)
    c->free_stack[c->nfree++] = i;
}

/* A slot to overwrite: a free one, else the CLOCK victim among unpinned
 * slots (dropped from the index). The caller has checked that an unpinned
 * slot exists. */
static uint32_t victim(struct nc_pcache *c) {
  if (c->nfree > 0)
    return c->free_stack[--c->nfree];
  /* No free slot: every unpinned slot is valid. Two turns clear every
   * reference bit, so this ends. */
  for (;;) {
    uint32_t i = c->hand;
    c->hand = (c->hand + 1) % c->nslots;
    struct pc_slot *s = &c->slots[i];
    if (s->pins > 0)
      continue;
    if (s->ref) {
      s->ref = 0;
      continue;
    }
    slot_drop(c, i);
    c->nfree--; /* slot_drop pushed it */
    return i;
  }
}

static int slot_write(struct nc_pcache *c, uint32_t i, const struct nc_hash128 *h,
                      const uint8_t *page) {
  uint8_t canon[PC_HASH_BYTES];
  hash_to_canon(h, canon);
  struct iovec iov[2] = {{canon, sizeof canon}, {(void *)page, NC_HDE_PAGE}};
  ssize_t n;
  do {
    n = pwritev(c->fd, iov, 2, slot_off(i));
  } while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  if ((size_t)n != PC_SLOT_BYTES)
    return -EIO;
  return 0;
}

/* Writes the write-behind batch out. On failure its slots are dropped
 * (a pinned one stays pinned but invalid, as after a failed read check),
 * so nothing whose bytes did not reach the file is ever listed or read. */
static int wb_flush(struct nc_pcache *c) {
  if (c->wn == 0)
    return 0;
  size_t len = (size_t)c->wn * PC_SLOT_BYTES;
  ssize_t n;
  do {
    n = pwrite(c->fd, c->wbuf, len, slot_off(c->wfirst));
  } while (n < 0 && errno == EINTR);
  int rc = n < 0 ? -errno : (size_t)n != len ? -EIO : 0;
  if (rc < 0) {
    for (uint32_t k = 0; k < c->wn; k++) {
      uint32_t i = c->wfirst + k;
      const uint8_t *b = c->wbuf + (size_t)k * PC_SLOT_BYTES;
      struct nc_hash128 h;
      canon_to_hash(b, &h);
      /* Still this batch's entry (not evicted and reused meanwhile)? */
      if (c->slots[i].valid && hash_eq(&c->slots[i].h, &h))
        slot_drop(c, i);
    }
  }
  c->wn = 0;
  return rc;
}

/* Stores h in a new slot; on failure the slot goes back to the free list.
 * With write-behind the page joins the batch when its slot follows the
 * batch's last one (an empty cache fills in slot order, and CLOCK sweeps
 * in order too), else the batch is written first. */
static int slot_store(struct nc_pcache *c, const struct nc_hash128 *h, const uint8_t *page,
                      uint32_t *out) {
  uint32_t i = victim(c);
  int rc = 0;
  if (c->wbuf) {
    if (c->wn > 0 && (i != c->wfirst + c->wn || c->wn == PC_WB_SLOTS))
      wb_flush(c); /* a failure dropped only that batch's entries */
    if (c->wn == 0)
      c->wfirst = i;
    uint8_t *b = c->wbuf + (size_t)c->wn * PC_SLOT_BYTES;
    hash_to_canon(h, b);
    memcpy(b + PC_HASH_BYTES, page, NC_HDE_PAGE);
    c->wn++;
  } else {
    rc = slot_write(c, i, h, page);
  }
  if (rc < 0) {
    c->free_stack[c->nfree++] = i;
    return rc;
  }
  c->slots[i].h = *h;
  c->slots[i].valid = 1;
  c->slots[i].ref = 0;
  c->count++;
  idx_insert(c, i);
  *out = i;
  return 0;
}

/* ---- open / close ---------------------------------------------------- */

static ssize_t pread_full(int fd, void *buf, size_t len, off_t off) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, (uint8_t *)buf + got, len - got, off + (off_t)got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

static int write_header(int fd) {
  uint8_t hdr[PC_HDR_BYTES] = {0};
  memcpy(hdr, pc_magic, sizeof pc_magic);
  put_be32(hdr + 8, PC_VERSION);
  put_be32(hdr + 12, PC_SLOT_BYTES);
  put_be32(hdr + 16, NC_HDE_PAGE);
  put_be32(hdr + 20, PC_HASH_XXH3_128);
  if (ftruncate(fd, 0) < 0)
    return -errno;
  ssize_t n = pwrite(fd, hdr, sizeof hdr, 0);
  if (n < 0)
    return -errno;
  return (size_t)n == sizeof hdr ? 0 : -EIO;
}

static bool header_ok(const uint8_t *hdr) {
  return memcmp(hdr, pc_magic, sizeof pc_magic) == 0 && get_be32(hdr + 8) == PC_VERSION &&
         get_be32(hdr + 12) == PC_SLOT_BYTES && get_be32(hdr + 16) == NC_HDE_PAGE &&
         get_be32(hdr + 20) == PC_HASH_XXH3_128;
}

/* Rebuilds the in-memory state from the first `present` slots on disk. */
static int scan(struct nc_pcache *c, uint32_t present) {
  uint8_t *buf = malloc((size_t)PC_SCAN_SLOTS * PC_SLOT_BYTES);
  if (!buf)
    return -ENOMEM;
  int rc = 0;
  for (uint32_t base = 0; base < present; base += PC_SCAN_SLOTS) {
    uint32_t n = present - base < PC_SCAN_SLOTS ? present - base : PC_SCAN_SLOTS;
    ssize_t got = pread_full(c->fd, buf, (size_t)n * PC_SLOT_BYTES, slot_off(base));
    if (got < 0) {
      rc = (int)got;
      goto out;
    }
    for (uint32_t k = 0; k < n && (size_t)(k + 1) * PC_SLOT_BYTES <= (size_t)got; k++) {
      const uint8_t *s = buf + (size_t)k * PC_SLOT_BYTES;
      struct nc_hash128 stored, actual;
      canon_to_hash(s, &stored);
      nc_hde_hash(s + PC_HASH_BYTES, &actual);
      if (!hash_eq(&stored, &actual) || idx_find(c, &stored) >= 0)
        continue; /* torn, never written, or a duplicate: stays free */
      struct pc_slot *sl = &c->slots[base + k];
      sl->h = stored;
      sl->valid = 1;
      c->count++;
      idx_insert(c, base + k);
    }
  }
out:
  free(buf);
  return rc;
}

static int open_file(const char *dir, int *fd_out) {
  if (mkdir(dir, 0700) < 0 && errno != EEXIST)
    return -errno;
  size_t dl = strlen(dir);
  char *path = malloc(dl + sizeof "/" NC_PCACHE_FILE);
  if (!path)
    return -ENOMEM;
  memcpy(path, dir, dl);
  memcpy(path + dl, "/" NC_PCACHE_FILE, sizeof "/" NC_PCACHE_FILE);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  int rc = fd < 0 ? -errno : 0;
  free(path);
  if (rc < 0)
    return rc;
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
    close(fd);
    return rc;
  }
  if (fchmod(fd, 0600) < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  *fd_out = fd;
  return 0;
}

int nc_pcache_open(const char *dir, uint64_t cap_bytes, struct nc_pcache **out) {
  if (!dir || !out)
    return -EINVAL;
  *out = NULL;
  if (cap_bytes < PC_HDR_BYTES + PC_SLOT_BYTES)
    return NC_E_INVALID;
  uint64_t nslots = (cap_bytes - PC_HDR_BYTES) / PC_SLOT_BYTES;
  if (nslots > PC_MAX_SLOTS)
    nslots = PC_MAX_SLOTS;

  struct nc_pcache *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  c->fd = -1;
  int rc = pthread_mutex_init(&c->mu, NULL);
  if (rc != 0) {
    free(c);
    return -rc;
  }
  c->nslots = (uint32_t)nslots;
  uint64_t isize = 2;
  while (isize < 2 * nslots)
    isize *= 2;
  c->index_mask = (uint32_t)(isize - 1);
  c->slots = calloc(nslots, sizeof *c->slots);
  c->index = calloc(isize, sizeof *c->index);
  c->free_stack = malloc(nslots * sizeof *c->free_stack);
  rc = -ENOMEM;
  if (!c->slots || !c->index || !c->free_stack)
    goto fail;

  rc = open_file(dir, &c->fd);
  if (rc < 0)
    goto fail;
  c->dir = strdup(dir);
  if (!c->dir) {
    rc = -ENOMEM;
    goto fail;
  }
  struct stat st;
  if (fstat(c->fd, &st) < 0) {
    rc = -errno;
    goto fail;
  }
  uint8_t hdr[PC_HDR_BYTES];
  ssize_t got = st.st_size >= PC_HDR_BYTES ? pread_full(c->fd, hdr, sizeof hdr, 0) : 0;
  if (got < 0) {
    rc = (int)got;
    goto fail;
  }
  uint64_t present = 0;
  if (got == PC_HDR_BYTES && header_ok(hdr)) {
    present = ((uint64_t)st.st_size - PC_HDR_BYTES) / PC_SLOT_BYTES;
    if (present > nslots)
      present = nslots;
  } else {
    rc = write_header(c->fd);
    if (rc < 0)
      goto fail;
  }
  if (ftruncate(c->fd, slot_off(c->nslots)) < 0) {
    rc = -errno;
    goto fail;
  }
  rc = scan(c, (uint32_t)present);
  if (rc < 0)
    goto fail;
  /* Free stack: lowest slot on top, so an empty cache fills in order. */
  for (uint32_t i = c->nslots; i-- > 0;)
    if (!c->slots[i].valid)
      c->free_stack[c->nfree++] = i;
  *out = c;
  return 0;

fail:
  pthread_mutex_destroy(&c->mu);
  if (c->fd >= 0)
    close(c->fd);
  free(c->dir);
  free(c->slots);
  free(c->index);
  free(c->free_stack);
  free(c);
  return rc;
}

void nc_pcache_close(struct nc_pcache *c) {
  if (!c)
    return;
  wb_flush(c);
  free(c->wbuf);
  for (size_t i = 0; i < c->nsess; i++)
    free(c->sess[i].bits);
  free(c->sess);
  close(c->fd); /* releases the flock */
  free(c->dir);
  pthread_mutex_destroy(&c->mu);
  free(c->slots);
  free(c->index);
  free(c->free_stack);
  free(c);
}

/* ---- put / get ------------------------------------------------------- */

static int put_locked(struct nc_pcache *c, struct pc_session *s, const struct nc_hash128 *h,
                      const uint8_t *page) {
  int64_t pos = idx_find(c, h);
  if (pos >= 0) {
    uint32_t i = c->index[pos] - 1;
    c->slots[i].ref = 1;
    if (!s || sess_has(s, i))
      return 0;
    return pin(c, s, i, true);
  }
  if (s) {
    /* Claim the pin's capacity before taking a slot; both come back if
     * the write fails. */
    if (s->reserved == 0 && unclaimed(c) == 0)
      return -ENOSPC;
  } else if (c->pinned == c->nslots) {
    return -ENOSPC;
  }
  uint32_t i;
  int rc = slot_store(c, h, page, &i);
  if (rc < 0 || !s)
    return rc;
  return pin(c, s, i, true); /* cannot fail: checked above */
}

static int put_common(struct nc_pcache *c, uint64_t session, const struct nc_hash128 *h,
                      const uint8_t *page) {
  if (!c || !h || !page)
    return -EINVAL;
  struct nc_hash128 actual;
  nc_hde_hash(page, &actual);
  if (!hash_eq(&actual, h))
    return NC_E_INVALID;
  pthread_mutex_lock(&c->mu);
  struct pc_session *s = NULL;
  int rc = 0;
  if (session != 0)
    rc = sess_get(c, session, &s);
  if (rc == 0)
    rc = put_locked(c, s, h, page);
  pthread_mutex_unlock(&c->mu);
  return rc;
}

int nc_pcache_put(struct nc_pcache *c, const struct nc_hash128 *h, const uint8_t page[NC_HDE_PAGE]) {
  return put_common(c, 0, h, page);
}

int nc_pcache_put_pinned(struct nc_pcache *c, uint64_t session, const struct nc_hash128 *h,
                         const uint8_t page[NC_HDE_PAGE]) {
  if (session == 0)
    return NC_E_INVALID;
  return put_common(c, session, h, page);
}

int nc_pcache_get(struct nc_pcache *c, const struct nc_hash128 *h, uint8_t page[NC_HDE_PAGE]) {
  if (!c || !h || !page)
    return -EINVAL;
  pthread_mutex_lock(&c->mu);
  int rc = -ENOENT;
  int64_t pos = idx_find(c, h);
  if (pos < 0)
    goto out;
  uint32_t i = c->index[pos] - 1;
  if (c->wn > 0 && i >= c->wfirst && i - c->wfirst < c->wn && wb_flush(c) < 0)
    goto out; /* the flush dropped it: -ENOENT */
  ssize_t got = pread_full(c->fd, c->io, PC_SLOT_BYTES, slot_off(i));
  if (got < 0) {
    rc = (int)got; /* an I/O error: keep the entry, it may read next time */
    goto out;
  }
  struct nc_hash128 stored, actual;
  canon_to_hash(c->io, &stored);
  if (got == PC_SLOT_BYTES) {
    nc_hde_hash(c->io + PC_HASH_BYTES, &actual);
  } else {
    actual.lo = ~stored.lo; /* short read: treat as damaged */
    actual.hi = ~stored.hi;
  }
  if (!hash_eq(&stored, h) || !hash_eq(&actual, h)) {
    slot_drop(c, i); /* damaged on disk: lose it, never return it */
    rc = -ENOENT;
    goto out;
  }
  memcpy(page, c->io + PC_HASH_BYTES, NC_HDE_PAGE);
  c->slots[i].ref = 1;
  rc = 0;
out:
  pthread_mutex_unlock(&c->mu);
  return rc;
}

int nc_pcache_set_write_behind(struct nc_pcache *c, bool on) {
  if (!c)
    return -EINVAL;
  pthread_mutex_lock(&c->mu);
  int rc = 0;
  if (on && !c->wbuf) {
    c->wbuf = malloc((size_t)PC_WB_SLOTS * PC_SLOT_BYTES);
    rc = c->wbuf ? 0 : -ENOMEM;
  } else if (!on && c->wbuf) {
    rc = wb_flush(c);
    free(c->wbuf);
    c->wbuf = NULL;
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

int nc_pcache_flush(struct nc_pcache *c) {
  if (!c)
    return 0;
  pthread_mutex_lock(&c->mu);
  int rc = wb_flush(c);
  pthread_mutex_unlock(&c->mu);
  return rc;
}

uint64_t nc_pcache_count(struct nc_pcache *c) {
  if (!c)
    return 0;
  pthread_mutex_lock(&c->mu);
  uint64_t n = c->count;
  pthread_mutex_unlock(&c->mu);
  return n;
}

const char *nc_pcache_dir(const struct nc_pcache *c) {
  return c ? c->dir : NULL;
}

uint64_t nc_pcache_slots(struct nc_pcache *c) {
  return c ? c->nslots : 0;
}

/* ---- sessions: reserve, summary, unpin ------------------------------- */

int nc_pcache_reserve(struct nc_pcache *c, uint64_t session, uint64_t pages, uint64_t *granted) {
  if (!c || !granted)
    return -EINVAL;
  *granted = 0;
  if (session == 0)
    return NC_E_INVALID;
  pthread_mutex_lock(&c->mu);
  struct pc_session *s;
  int rc = sess_get(c, session, &s);
  if (rc == 0) {
    uint64_t g = pages < unclaimed(c) ? pages : unclaimed(c);
    s->reserved += g;
    c->reserved += g;
    *granted = g;
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

uint64_t nc_pcache_reserved(struct nc_pcache *c, uint64_t session) {
  if (!c)
    return 0;
  pthread_mutex_lock(&c->mu);
  struct pc_session *s = sess_find(c, session);
  uint64_t r = s ? s->reserved : 0;
  pthread_mutex_unlock(&c->mu);
  return r;
}

static int cmp_canon(const void *a, const void *b) {
  return memcmp(a, b, PC_HASH_BYTES);
}

int nc_pcache_summary(struct nc_pcache *c, uint64_t session, uint8_t **buf, size_t *len) {
  if (!c || !buf || !len)
    return -EINVAL;
  *buf = NULL;
  *len = 0;
  if (session == 0)
    return NC_E_INVALID;
  pthread_mutex_lock(&c->mu);
  struct pc_session *s;
  uint8_t *out = NULL;
  int rc = sess_get(c, session, &s);
  if (rc < 0)
    goto out;
  out = malloc(9 + (size_t)c->count * PC_HASH_BYTES);
  if (!out) {
    rc = -ENOMEM;
    goto out;
  }
  /* Newest first (backwards from the CLOCK hand, where the next victims
   * are), so what a full budget leaves out is what would go first. */
  uint64_t n = 0;
  for (uint32_t k = 0; k < c->nslots; k++) {
    uint32_t i = (uint32_t)(((uint64_t)c->hand + c->nslots - 1 - k) % c->nslots);
    if (!c->slots[i].valid)
      continue;
    /* Never out of the session's own reservation: that is for the new
     * pages it will store. */
    if (!sess_has(s, i) && pin(c, s, i, false) < 0)
      continue; /* would need capacity that is pinned or promised */
    hash_to_canon(&c->slots[i].h, out + 9 + n * PC_HASH_BYTES);
    n++;
  }
  pthread_mutex_unlock(&c->mu);
  qsort(out + 9, n, PC_HASH_BYTES, cmp_canon);
  out[0] = 1;
  for (int b = 0; b < 8; b++)
    out[1 + b] = (uint8_t)(n >> (56 - 8 * b));
  *buf = out;
  *len = 9 + n * PC_HASH_BYTES;
  return 0;
out:
  pthread_mutex_unlock(&c->mu);
  return rc;
}

void nc_pcache_unpin_all(struct nc_pcache *c, uint64_t session) {
  if (!c)
    return;
  pthread_mutex_lock(&c->mu);
  struct pc_session *s = sess_find(c, session);
  if (!s)
    goto out;
  for (uint32_t w = 0; w < (c->nslots + 63) / 64; w++) {
    uint64_t bits = s->bits[w];
    while (bits) {
      uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(bits);
      bits &= bits - 1;
      if (--c->slots[i].pins == 0) {
        c->pinned--;
        if (!c->slots[i].valid)
          c->free_stack[c->nfree++] = i;
      }
    }
  }
  c->reserved -= s->reserved;
  free(s->bits);
  *s = c->sess[--c->nsess];
out:
  pthread_mutex_unlock(&c->mu);
}
