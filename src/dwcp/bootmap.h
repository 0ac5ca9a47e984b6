/* Boot map: which bytes of its kernel file a guest holds at which address.
 *
 * QEMU boots our images with -kernel K where K is an ELF64 vmlinux (PVH
 * entry). Its loader copies each PT_LOAD segment's file bytes to
 * guest-physical p_paddr, so right after boot the guest's RAM page at
 * p_paddr + i * 4096 is the file's 4 KiB chunk at p_offset + i * 4096.
 * The running kernel then patches its text (alternatives, return thunks,
 * static calls) and writes its data, so most of those pages differ from
 * the file in a few hundred bytes: measured on the test guest, 2.6k text
 * pages differ in 210 bytes on average. An XOR delta against the file's
 * chunk is then nearly all zeros, where the page itself compresses only
 * about 2.5:1.
 *
 * The chunks are the ones nc_hde_seed_file puts in a destination's page
 * cache (page-aligned chunks of the file, the last one zero-padded), so a
 * source can send such a page as a delta against a chunk the destination
 * holds (HDE's DELTA_BASE).
 *
 * A wrong guess only costs bytes, never correctness: the destination
 * checks every rebuilt page against its hash. Kernels in other formats
 * (a bzImage) have no map: nc_bootmap_open says NC_E_PROTO.
 *
 * The file is read on demand (pread of one chunk), never mapped, so a file
 * replaced meanwhile gives wrong bases, not a crash. Thread-compatible: one
 * map per migration, used by one thread. */
#ifndef NC_DWCP_BOOTMAP_H
#define NC_DWCP_BOOTMAP_H

#include <stddef.h>
#include <stdint.h>

#define NC_BOOTMAP_PAGE 4096
#define NC_BOOTMAP_SEGS_MAX 16  /* PT_LOAD segments kept; more is NC_E_PROTO */
#define NC_BOOTMAP_HDR_MAX 65536 /* ELF header + program headers must fit */

struct nc_bootmap_seg {
  uint64_t gpa;  /* guest-physical start, page-aligned */
  uint64_t off;  /* file offset of gpa's chunk, page-aligned */
  uint64_t size; /* bytes of file data, rounded up to whole pages */
};

/* Parses an ELF64 little-endian header and its program headers from the
 * first len bytes of a file of file_size bytes. Keeps the PT_LOAD
 * segments with file bytes whose p_offset and p_paddr agree modulo 4096
 * (others cannot be matched page for page), clipped to the file; writes up
 * to cap of them to segs and their number to *n. 0, or NC_E_PROTO for
 * anything that is not such an ELF file (bad magic, class, data, sizes,
 * offsets or counts that overflow or point past len, more than
 * NC_BOOTMAP_SEGS_MAX loadable segments). Pure; fuzzed. */
int nc_bootmap_parse(const uint8_t *hdr, size_t len, uint64_t file_size,
                     struct nc_bootmap_seg *segs, size_t cap, size_t *n);

struct nc_bootmap;
/* Opens path and parses it. On success *out is the caller's
 * (nc_bootmap_free). -errno when it cannot be opened, NC_E_PROTO when it is
 * not an ELF64 kernel or has no usable segment. */
int nc_bootmap_open(const char *path, struct nc_bootmap **out);
void nc_bootmap_free(struct nc_bootmap *b); /* accepts NULL */
/* The chunk the loader put at guest-physical gpa (rounded down to a page),
 * zero-padded past the end of the file. 0; -ENOENT when no segment covers
 * gpa; -EIO (or -errno) when the read fails. */
int nc_bootmap_page(const struct nc_bootmap *b, uint64_t gpa, uint8_t page[NC_BOOTMAP_PAGE]);
size_t nc_bootmap_count(const struct nc_bootmap *b); /* segments kept */

#endif
