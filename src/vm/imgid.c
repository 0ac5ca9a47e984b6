/* Base-disk identity and its cache; the definition is in imgid.h. */
#include "vm/imgid.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "util/err.h"
#include "util/hex.h"

#define READ_CHUNK_BYTES (256u << 10) /* the one buffer a computation uses */
#define CACHE_ENTRIES_MAX 4096

/* Hashes len bytes of fd from off. -EIO when the file ends first. */
static int hash_range(int fd, XXH3_state_t *st, uint8_t *buf, uint64_t off, uint64_t len) {
  while (len > 0) {
    size_t want = len < READ_CHUNK_BYTES ? (size_t)len : READ_CHUNK_BYTES;
    ssize_t n = pread(fd, buf, want, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      return -EIO; /* shorter than fstat said: it changed under us */
    (void)XXH3_128bits_update(st, buf, (size_t)n);
    off += (uint64_t)n;
    len -= (uint64_t)n;
  }
  return 0;
}

/* The samples of imgid.h, in order of offset. */
static int hash_samples(int fd, uint64_t size, XXH3_state_t *st, uint8_t *buf) {
  if (size <= NC_IMGID_SAMPLE_BYTES)
    return hash_range(fd, st, buf, 0, size);
  int rc = hash_range(fd, st, buf, 0, NC_IMGID_HEAD_BYTES);
  /* floor(span * i / (BLOCKS - 1)) without overflowing 64 bits. */
  uint64_t span = size - NC_IMGID_HEAD_BYTES - NC_IMGID_TAIL_BYTES - NC_IMGID_BLOCK_BYTES;
  uint64_t q = span / (NC_IMGID_BLOCKS - 1), r = span % (NC_IMGID_BLOCKS - 1);
  for (uint64_t i = 0; rc == 0 && i < NC_IMGID_BLOCKS; i++) {
    uint64_t off = NC_IMGID_HEAD_BYTES + q * i + r * i / (NC_IMGID_BLOCKS - 1);
    rc = hash_range(fd, st, buf, off, NC_IMGID_BLOCK_BYTES);
  }
  if (rc == 0)
    rc = hash_range(fd, st, buf, size - NC_IMGID_TAIL_BYTES, NC_IMGID_TAIL_BYTES);
  return rc;
}

/* The identity of the open file fd whose fstat is st. */
static int compute_fd(int fd, const struct stat *st, struct nc_imgid *out) {
  if (!S_ISREG(st->st_mode))
    return -EINVAL;
  uint8_t *buf = malloc(READ_CHUNK_BYTES);
  XXH3_state_t *xs = XXH3_createState();
  int rc = buf && xs ? 0 : -ENOMEM;
  if (rc == 0 && XXH3_128bits_reset(xs) != XXH_OK)
    rc = -ENOMEM;
  uint64_t size = (uint64_t)st->st_size;
  if (rc == 0)
    rc = hash_samples(fd, size, xs, buf);
  if (rc == 0) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
    out->size_bytes = size;
    memcpy(out->xxh128, c.digest, sizeof out->xxh128);
  }
  XXH3_freeState(xs);
  free(buf);
  return rc;
}

static int open_file(const char *path, struct stat *st) {
  if (!path || !path[0])
    return -EINVAL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK); /* a FIFO: no hang */
  if (fd < 0)
    return -errno;
  if (fstat(fd, st) != 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  if (!S_ISREG(st->st_mode)) {
    close(fd);
    return -EINVAL;
  }
  return fd;
}

int nc_imgid_compute(const char *path, struct nc_imgid *out) {
  struct stat st;
  int fd = open_file(path, &st);
  if (fd < 0)
    return fd;
  int rc = compute_fd(fd, &st, out);
  close(fd);
  return rc;
}

bool nc_imgid_equal(const struct nc_imgid *a, const struct nc_imgid *b) {
  return a->size_bytes == b->size_bytes && memcmp(a->xxh128, b->xxh128, sizeof a->xxh128) == 0;
}

const char *nc_imgid_hex(const struct nc_imgid *id, char *out) {
  return nc_hex_encode(id->xxh128, sizeof id->xxh128, out);
}

json_t *nc_imgid_to_json(const struct nc_imgid *id) {
  char hex[NC_IMGID_HEX_LEN + 1];
  return json_pack("{s:I, s:s}", "size", (json_int_t)id->size_bytes, "xxh128",
                   nc_imgid_hex(id, hex));
}

int nc_imgid_from_json(json_t *j, struct nc_imgid *out) {
  if (!json_is_object(j) || json_object_size(j) != 2)
    return NC_E_INVALID;
  json_t *sz = json_object_get(j, "size");
  const char *hex = json_string_value(json_object_get(j, "xxh128"));
  if (!json_is_integer(sz) || json_integer_value(sz) < 0 || !hex ||
      strlen(hex) != NC_IMGID_HEX_LEN)
    return NC_E_INVALID;
  if (nc_hex_decode(hex, sizeof out->xxh128, out->xxh128) != 0)
    return NC_E_INVALID;
  out->size_bytes = (uint64_t)json_integer_value(sz);
  return 0;
}

/* ---- the cache ------------------------------------------------------------ */

struct cache_key {
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime, ctime;
};

struct cache_entry {
  bool used;
  uint64_t last_use; /* c->clock when last returned or stored */
  struct cache_key key;
  struct nc_imgid id;
};

struct nc_imgid_cache {
  pthread_mutex_t mu;
  uint64_t clock; /* under mu */
  size_t n;
  struct cache_entry *e; /* n entries, under mu */
};

static struct cache_key key_of(const struct stat *st) {
  struct cache_key k;
  memset(&k, 0, sizeof k);
  k.dev = st->st_dev;
  k.ino = st->st_ino;
  k.size = st->st_size;
  k.mtime = st->st_mtim;
  k.ctime = st->st_ctim;
  return k;
}

static bool key_equal(const struct cache_key *a, const struct cache_key *b) {
  return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
         a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
         a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

int nc_imgid_cache_new(size_t entries, struct nc_imgid_cache **out) {
  if (entries < 1 || entries > CACHE_ENTRIES_MAX)
    return -EINVAL;
  struct nc_imgid_cache *c = calloc(1, sizeof *c);
  if (!c || !(c->e = calloc(entries, sizeof *c->e))) {
    free(c);
    return -ENOMEM;
  }
  c->n = entries;
  pthread_mutex_init(&c->mu, NULL);
  *out = c;
  return 0;
}

void nc_imgid_cache_free(struct nc_imgid_cache *c) {
  if (!c)
    return;
  pthread_mutex_destroy(&c->mu);
  free(c->e);
  free(c);
}

/* Caller holds c->mu. */
static bool lookup_locked(struct nc_imgid_cache *c, const struct cache_key *k,
                          struct nc_imgid *out) {
  for (size_t i = 0; i < c->n; i++) {
    struct cache_entry *e = &c->e[i];
    if (e->used && key_equal(&e->key, k)) {
      e->last_use = ++c->clock;
      *out = e->id;
      return true;
    }
  }
  return false;
}

/* Caller holds c->mu. Replaces the entry of the same file (dev, ino), else
 * a free one, else the least recently used. */
static void store_locked(struct nc_imgid_cache *c, const struct cache_key *k,
                         const struct nc_imgid *id) {
  struct cache_entry *slot = NULL;
  for (size_t i = 0; i < c->n && !slot; i++)
    if (c->e[i].used && c->e[i].key.dev == k->dev && c->e[i].key.ino == k->ino)
      slot = &c->e[i];
  for (size_t i = 0; i < c->n && !slot; i++)
    if (!c->e[i].used)
      slot = &c->e[i];
  if (!slot) {
    slot = &c->e[0];
    for (size_t i = 1; i < c->n; i++)
      if (c->e[i].last_use < slot->last_use)
        slot = &c->e[i];
  }
  slot->used = true;
  slot->key = *k;
  slot->id = *id;
  slot->last_use = ++c->clock;
}

int nc_imgid_cache_get(struct nc_imgid_cache *c, const char *path, struct nc_imgid *out,
                       bool *cached) {
  if (cached)
    *cached = false;
  struct stat st;
  int fd = open_file(path, &st);
  if (fd < 0)
    return fd;
  struct cache_key k = key_of(&st);
  bool hit = false;
  if (c) {
    pthread_mutex_lock(&c->mu);
    hit = lookup_locked(c, &k, out);
    pthread_mutex_unlock(&c->mu);
  }
  int rc = 0;
  if (!hit) {
    rc = compute_fd(fd, &st, out);
    struct stat after;
    if (rc == 0 && c && fstat(fd, &after) == 0) {
      struct cache_key k2 = key_of(&after);
      if (key_equal(&k, &k2)) {
        pthread_mutex_lock(&c->mu);
        store_locked(c, &k, out);
        pthread_mutex_unlock(&c->mu);
      }
    }
  }
  close(fd);
  if (cached)
    *cached = hit;
  return rc;
}
