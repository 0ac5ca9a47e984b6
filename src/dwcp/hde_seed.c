/* Seeding the page cache from boot images (hde.h, nc_hde_seed_file).
 *
 * A guest booted with -kernel K -initrd I holds many pages that are byte
 * for byte page-aligned 4 KiB chunks of K (QEMU's PVH/ELF loader copies
 * the segments at page-aligned offsets) and of the files the kernel
 * unpacked from I (the page cache of its rootfs: each file starts on a
 * page, its tail is zero-padded). Measured on the test guest: 4.6k pages
 * from vmlinux and 0.8k from the initramfs files, about 6 MiB of a cold
 * migration's compressed bytes. A destination that has the same image
 * holds those pages once they are seeded, and the source references them.
 *
 * initramfs: gzip (RFC 1952, possibly several members) around newc cpio
 * archives (the kernel's Documentation/driver-api/early-userspace/
 * buffer-format.rst: "070701", 13 eight-digit hex fields, the name padded
 * to 4 bytes with the 110-byte header, the data padded to 4). Anything
 * else is seeded as a plain file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "dwcp/hde.h"
#include "util/err.h"

#define SEED_FILE_MAX (UINT64_C(1) << 30)
#define SEED_PLAIN_MAX (UINT64_C(1) << 30)
#define CPIO_HDR 110

struct seeder {
  struct nc_pcache *c;
  uint64_t max_pages, added;
};

static bool is_zero(const uint8_t *p) {
  for (size_t i = 0; i < NC_HDE_PAGE; i++)
    if (p[i])
      return false;
  return true;
}

/* Seeds the page-aligned chunks of data[0..len), the last one zero-padded.
 * Returns false once the budget is spent. */
static bool seed_bytes(struct seeder *s, const uint8_t *data, size_t len) {
  uint8_t page[NC_HDE_PAGE];
  for (size_t off = 0; off < len; off += NC_HDE_PAGE) {
    if (s->added >= s->max_pages)
      return false;
    size_t n = len - off < NC_HDE_PAGE ? len - off : NC_HDE_PAGE;
    const uint8_t *p = data + off;
    if (n < NC_HDE_PAGE) {
      memcpy(page, p, n);
      memset(page + n, 0, NC_HDE_PAGE - n);
      p = page;
    }
    if (is_zero(p))
      continue;
    struct nc_hash128 h;
    nc_hde_hash(p, &h);
    uint64_t before = nc_pcache_count(s->c);
    if (nc_pcache_put(s->c, &h, p) == 0 && nc_pcache_count(s->c) > before)
      s->added++;
  }
  return true;
}

static int read_file(const char *path, uint8_t **out, size_t *len) {
  FILE *f = fopen(path, "rbe");
  if (!f)
    return -errno;
  struct stat st;
  int rc = 0;
  uint8_t *buf = NULL;
  if (fstat(fileno(f), &st) != 0) {
    rc = -errno;
    goto out;
  }
  if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > SEED_FILE_MAX) {
    rc = NC_E_TOOBIG;
    goto out;
  }
  buf = malloc(st.st_size ? (size_t)st.st_size : 1);
  if (!buf) {
    rc = -ENOMEM;
    goto out;
  }
  if (fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
    rc = -EIO;
    goto out;
  }
  *out = buf;
  *len = (size_t)st.st_size;
  buf = NULL;
out:
  free(buf);
  fclose(f);
  return rc;
}

/* Every gzip member, concatenated; capped. */
static int gunzip(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
    return -ENOMEM;
  size_t cap = len * 4 + 65536, n = 0;
  uint8_t *buf = malloc(cap);
  int rc = buf ? 0 : -ENOMEM;
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)(len > UINT32_MAX ? UINT32_MAX : len);
  while (rc == 0) {
    if (n == cap) {
      if (cap >= SEED_PLAIN_MAX) {
        rc = NC_E_TOOBIG;
        break;
      }
      size_t ncap = cap * 2 > SEED_PLAIN_MAX ? SEED_PLAIN_MAX : cap * 2;
      uint8_t *nb = realloc(buf, ncap);
      if (!nb) {
        rc = -ENOMEM;
        break;
      }
      buf = nb;
      cap = ncap;
    }
    z.next_out = buf + n;
    z.avail_out = (uInt)(cap - n > UINT32_MAX ? UINT32_MAX : cap - n);
    int zr = inflate(&z, Z_NO_FLUSH);
    n = (size_t)(z.next_out - buf);
    if (zr == Z_STREAM_END) {
      if (z.avail_in == 0 || *z.next_in != 0x1f) /* another member? */
        break;
      if (inflateReset(&z) != Z_OK)
        rc = NC_E_PROTO;
    } else if (zr != Z_OK && !(zr == Z_BUF_ERROR && z.avail_out == 0)) {
      rc = n > 0 ? 0 : NC_E_PROTO; /* a damaged tail: use what came out */
      break;
    }
  }
  inflateEnd(&z);
  if (rc) {
    free(buf);
    return rc;
  }
  *out = buf;
  *out_len = n;
  return 0;
}

static bool hex8(const uint8_t *p, uint32_t *v) {
  uint32_t x = 0;
  for (int i = 0; i < 8; i++) {
    int c = p[i], d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return false;
    x = x << 4 | (uint32_t)d;
  }
  *v = x;
  return true;
}

/* Walks newc archives (the kernel also accepts several in a row, with
 * zero padding between them); seeds every regular file's data. */
static void seed_cpio(struct seeder *s, const uint8_t *p, size_t len) {
  size_t off = 0;
  while (off + CPIO_HDR <= len) {
    if (p[off] == 0) { /* padding between archives */
      off += 4;
      continue;
    }
    if (memcmp(p + off, "070701", 6) != 0 && memcmp(p + off, "070702", 6) != 0)
      return;
    uint32_t f[13];
    for (int i = 0; i < 13; i++)
      if (!hex8(p + off + 6 + 8 * i, &f[i]))
        return;
    uint32_t mode = f[1], fsize = f[6], nsize = f[11];
    size_t name = off + CPIO_HDR;
    if (nsize == 0 || nsize > len - name)
      return;
    size_t data = (name + nsize + 3) & ~(size_t)3;
    if (data > len || fsize > len - data)
      return;
    if (nsize == 11 && memcmp(p + name, "TRAILER!!!", 11) == 0) {
      off = data;
      continue;
    }
    if ((mode & 0170000) == 0100000 && fsize > 0 && !seed_bytes(s, p + data, fsize))
      return;
    off = (data + fsize + 3) & ~(size_t)3;
  }
}

int nc_hde_seed_file(struct nc_pcache *c, const char *path, uint64_t max_pages,
                     uint64_t *added) {
  if (!c || !path || !added)
    return -EINVAL;
  *added = 0;
  uint8_t *raw = NULL, *plain = NULL;
  size_t rlen = 0, plen = 0;
  int rc = read_file(path, &raw, &rlen);
  if (rc)
    return rc;
  struct seeder s = {c, max_pages, 0};
  if (rlen >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
    rc = gunzip(raw, rlen, &plain, &plen);
    if (rc == 0)
      seed_cpio(&s, plain, plen);
  } else if (rlen >= 6 && memcmp(raw, "07070", 5) == 0) {
    seed_cpio(&s, raw, rlen);
  } else {
    seed_bytes(&s, raw, rlen);
  }
  free(raw);
  free(plain);
  *added = s.added;
  return rc;
}
