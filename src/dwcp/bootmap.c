/* Boot map (bootmap.h): ELF64 program headers to guest-physical chunks.
 *
 * Format reference: the System V ABI's ELF-64 object file format (header
 * e_ident, e_phoff, e_phentsize, e_phnum; program header p_type, p_offset,
 * p_paddr, p_filesz), and QEMU's hw/core/loader.c (load_elf copies p_filesz
 * bytes of each PT_LOAD to p_paddr and zero-fills to p_memsz). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwcp/bootmap.h"
#include "util/err.h"

#define EHDR64 64
#define PHDR64 56
#define PT_LOAD 1
#define PAGE_MASK ((uint64_t)NC_BOOTMAP_PAGE - 1)

struct nc_bootmap {
  int fd;
  uint64_t file_size;
  size_t n;
  struct nc_bootmap_seg seg[NC_BOOTMAP_SEGS_MAX];
};

static uint64_t le(const uint8_t *p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

int nc_bootmap_parse(const uint8_t *hdr, size_t len, uint64_t file_size,
                     struct nc_bootmap_seg *segs, size_t cap, size_t *n) {
  if (!hdr || !n || (!segs && cap))
    return -EINVAL;
  *n = 0;
  /* \x7fELF, ELFCLASS64, ELFDATA2LSB, EV_CURRENT */
  if (len < EHDR64 || memcmp(hdr, "\x7f" "ELF\x02\x01\x01", 7) != 0)
    return NC_E_PROTO;
  uint64_t phoff = le(hdr + 32, 8);
  uint64_t phentsize = le(hdr + 54, 2), phnum = le(hdr + 56, 2);
  if (phentsize < PHDR64 || phnum == 0 || phoff > len || phnum > (len - phoff) / phentsize)
    return NC_E_PROTO;
  uint64_t file_pages_end = (file_size + PAGE_MASK) & ~PAGE_MASK;
  if (file_pages_end < file_size)
    return NC_E_PROTO;
  size_t kept = 0, loads = 0;
  for (uint64_t i = 0; i < phnum; i++) {
    const uint8_t *ph = hdr + phoff + i * phentsize;
    if (le(ph, 4) != PT_LOAD)
      continue;
    if (++loads > NC_BOOTMAP_SEGS_MAX)
      return NC_E_PROTO;
    uint64_t off = le(ph + 8, 8), paddr = le(ph + 24, 8), filesz = le(ph + 32, 8);
    if (filesz == 0 || (off & PAGE_MASK) != (paddr & PAGE_MASK) || off >= file_size)
      continue;
    if (filesz > file_size - off)
      filesz = file_size - off; /* clipped to the file: no overflow below */
    uint64_t start = off & ~PAGE_MASK;
    uint64_t end = (off + filesz + PAGE_MASK) & ~PAGE_MASK;
    if (end > file_pages_end)
      end = file_pages_end;
    if (kept < cap)
      segs[kept] = (struct nc_bootmap_seg){paddr & ~PAGE_MASK, start, end - start};
    kept++;
  }
  *n = kept < cap ? kept : cap;
  return 0;
}

int nc_bootmap_open(const char *path, struct nc_bootmap **out) {
  if (!path || !out)
    return -EINVAL;
  *out = NULL;
  /* O_NONBLOCK: a FIFO put where the kernel should be must not hang us. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return -errno;
  struct nc_bootmap *b = calloc(1, sizeof *b);
  uint8_t *hdr = malloc(NC_BOOTMAP_HDR_MAX);
  struct stat st;
  int rc = 0;
  if (!b || !hdr) {
    rc = -ENOMEM;
    goto fail;
  }
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    goto fail;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = NC_E_PROTO;
    goto fail;
  }
  ssize_t got = pread(fd, hdr, NC_BOOTMAP_HDR_MAX, 0);
  if (got < 0) {
    rc = -errno;
    goto fail;
  }
  b->fd = fd;
  b->file_size = (uint64_t)st.st_size;
  rc = nc_bootmap_parse(hdr, (size_t)got, b->file_size, b->seg, NC_BOOTMAP_SEGS_MAX, &b->n);
  if (rc == 0 && b->n == 0)
    rc = NC_E_PROTO;
  if (rc)
    goto fail;
  free(hdr);
  *out = b;
  return 0;
fail:
  free(hdr);
  free(b);
  close(fd);
  return rc;
}

void nc_bootmap_free(struct nc_bootmap *b) {
  if (!b)
    return;
  close(b->fd);
  free(b);
}

size_t nc_bootmap_count(const struct nc_bootmap *b) { return b ? b->n : 0; }

int nc_bootmap_page(const struct nc_bootmap *b, uint64_t gpa, uint8_t page[NC_BOOTMAP_PAGE]) {
  if (!b || !page)
    return -EINVAL;
  gpa &= ~PAGE_MASK;
  for (size_t i = 0; i < b->n; i++) {
    const struct nc_bootmap_seg *s = &b->seg[i];
    if (gpa < s->gpa || gpa - s->gpa >= s->size)
      continue;
    uint64_t off = s->off + (gpa - s->gpa);
    ssize_t got = pread(b->fd, page, NC_BOOTMAP_PAGE, (off_t)off);
    if (got < 0)
      return -errno;
    if (got == 0 && off < b->file_size)
      return -EIO;
    memset(page + got, 0, NC_BOOTMAP_PAGE - (size_t)got);
    return 0;
  }
  return -ENOENT;
}
