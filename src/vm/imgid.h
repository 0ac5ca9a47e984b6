/* Base-disk identity: is the file an image's base disk names on this node
 * the same content as on another node?
 *
 * A VM's disk is a qcow2 overlay over its image's base disk, and a live
 * migration carries only the overlay's own data: the destination's overlay
 * reads every cluster the VM never wrote from the destination's base disk,
 * found by image name. Both nodes therefore compare this identity before
 * anything is prepared (docs/migration.md, "Doing it").
 *
 * The identity (changing any part breaks compatibility between nodes: every
 * image would compare as different):
 *   size_bytes  the file's size;
 *   xxh128      XXH3-128 (seed 0) over the file's sampled bytes, in the
 *               order of their offsets:
 *               - a file of at most NC_IMGID_SAMPLE_BYTES (5 MiB): all of it;
 *               - a larger one: the first NC_IMGID_HEAD_BYTES (1 MiB), then
 *                 NC_IMGID_BLOCKS (48) blocks of NC_IMGID_BLOCK_BYTES
 *                 (64 KiB), block i at offset
 *                   HEAD + floor((size - HEAD - TAIL - BLOCK) * i / 47),
 *                 then the last NC_IMGID_TAIL_BYTES (1 MiB).
 *               The middle is at least 3 MiB, so the blocks never overlap;
 *               the first starts where the head ends, the last ends where
 *               the tail begins.
 * So it reads at most 5 MiB whatever the size (milliseconds for a 100 GiB
 * image) and depends on nothing but the bytes: not on the path, inode or
 * mtime. It tells a different image apart, not every single-byte change
 * outside the samples of a file over 5 MiB.
 *
 * On the wire (POST /v1/migrations/incoming, "base_disk"):
 *   {"size": N, "xxh128": "<32 lowercase hex digits, the canonical form:
 *    high 64 bits then low 64 bits, big endian>"} */
#ifndef NC_VM_IMGID_H
#define NC_VM_IMGID_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NC_IMGID_HEAD_BYTES (1u << 20)
#define NC_IMGID_TAIL_BYTES (1u << 20)
#define NC_IMGID_BLOCK_BYTES (64u << 10)
#define NC_IMGID_BLOCKS 48
#define NC_IMGID_SAMPLE_BYTES                                                                 \
  ((uint64_t)NC_IMGID_HEAD_BYTES + NC_IMGID_TAIL_BYTES +                                      \
   (uint64_t)NC_IMGID_BLOCKS * NC_IMGID_BLOCK_BYTES)
#define NC_IMGID_HEX_LEN 32

struct nc_imgid {
  uint64_t size_bytes;
  uint8_t xxh128[16]; /* canonical XXH128 (big endian) */
};

/* The identity of the regular file at path. 0, or a negative errno:
 * -ENOENT, -EACCES, ... from open; -EINVAL when it is not a regular file;
 * -EIO when it got shorter while being read; -ENOMEM. */
int nc_imgid_compute(const char *path, struct nc_imgid *out);

bool nc_imgid_equal(const struct nc_imgid *a, const struct nc_imgid *b);
/* out holds NC_IMGID_HEX_LEN + 1 bytes. Returns out. */
const char *nc_imgid_hex(const struct nc_imgid *id, char *out);
/* {"size": N, "xxh128": hex}. New reference. */
json_t *nc_imgid_to_json(const struct nc_imgid *id);
/* Parses the wire form above. 0, or NC_E_INVALID for anything else (not an
 * object, a field missing, of the wrong type or negative, a hash that is
 * not 32 hex digits, another field). */
int nc_imgid_from_json(json_t *j, struct nc_imgid *out);

/* A daemon's identities of the files it has read, so that repeated
 * migrations of VMs of the same image read nothing: at most `entries`
 * files, keyed by (device, inode, size, mtime, ctime) — ctime too, so a
 * file rewritten in place with its mtime put back is read again. The least
 * recently used entry goes first. Thread-safe; a file is read outside the
 * lock. */
struct nc_imgid_cache;

/* entries: 1 to 4096. */
int nc_imgid_cache_new(size_t entries, struct nc_imgid_cache **out);
/* Accepts NULL. */
void nc_imgid_cache_free(struct nc_imgid_cache *c);
/* nc_imgid_compute through the cache (c NULL: no cache). *cached (may be
 * NULL) says whether the answer came from it. An identity whose file
 * changed while it was read is returned but not kept. Errors as
 * nc_imgid_compute. */
int nc_imgid_cache_get(struct nc_imgid_cache *c, const char *path, struct nc_imgid *out,
                       bool *cached);

#endif
