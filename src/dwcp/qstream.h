/* QEMU migration stream codec (precopy), for QEMU 7.2 and 10.0.
 *
 * The source side splits the byte stream QEMU writes into an ordered
 * sequence of segments:
 *   - OPAQUE bytes: everything that is not the 4096-byte payload of a RAM
 *     page record (file header, configuration, section headers and
 *     footers, RAM block table, every record header including its be64
 *     offset|flags and optional block idstr, zero-page fill bytes, device
 *     sections, the trailing VMDESCRIPTION JSON, ...);
 *   - PAGE payloads: the 4096 bytes that follow a RAM_SAVE_FLAG_PAGE record
 *     header, identified by RAM block index and offset.
 * Concatenating the segments in order gives back the original stream byte
 * for byte; the destination does exactly that, so re-emission is exact by
 * construction and the parser only has to find page payloads correctly.
 *
 * Format reference: QEMU migration/savevm.c (qemu_savevm_state_*,
 * QEMU_VM_* section types) and migration/ram.c (RAM_SAVE_FLAG_*,
 * save_page_header, ram_load_precopy); what 7.2 and 10.0 actually emit is
 * documented at the top of qstream.c. Anything the parser does not
 * understand before RAM END switches it to passthrough for the rest of the
 * stream (all OPAQUE, with a reason): slower, never wrong. After RAM END
 * (device state, EOF, VMDESCRIPTION) every byte is OPAQUE by design.
 *
 * The parser is a push parser with bounded memory: it never buffers more
 * than one record header plus one page (NC_QS_BUFFER_MAX). Not
 * thread-safe; one parser per stream. */
#ifndef NC_DWCP_QSTREAM_H
#define NC_DWCP_QSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NC_QS_PAGE_SIZE 4096
#define NC_QS_BLOCKS_MAX 64
#define NC_QS_BUFFER_MAX (NC_QS_PAGE_SIZE + 512)

struct nc_qs_parser;

struct nc_qs_sink {
  void *data;
  /* n > 0 bytes of opaque stream, in order. The bytes are valid only
   * during the call (they often point into the buffer given to
   * nc_qs_feed). Return 0 to go on, or a negative code to stop the parser:
   * nc_qs_feed returns it, and every later call returns it again. */
  int (*opaque)(void *data, const uint8_t *bytes, size_t n);
  /* One page payload, valid only during the call. block is the index of
   * the RAM block in the order of the block table (its name through
   * nc_qs_block_name), offset its byte offset in that block (page-aligned,
   * below the block's size). Return as for opaque. */
  int (*page)(void *data, uint32_t block, uint64_t offset, const uint8_t page[NC_QS_PAGE_SIZE]);
};

struct nc_qs_stats {
  uint64_t bytes_in;       /* total fed */
  uint64_t pages;          /* full page payloads found */
  uint64_t zero_pages;     /* QEMU's own zero-page records */
  uint64_t opaque_bytes;
  uint32_t passes;         /* RAM sections seen (START + PARTs + END) */
  bool passthrough;        /* gave up parsing; see nc_qs_passthrough_reason */
  bool ram_done;           /* RAM END section seen: only device state left */
  bool eof;                /* the bytes so far end exactly after QEMU_VM_EOF
                              and the VMDESCRIPTION that follows it: the
                              stream is complete (false if more comes) */
};

/* On success *out is the caller's (nc_qs_parser_free). sink is copied.
 * -EINVAL without both callbacks, -ENOMEM. */
int nc_qs_parser_new(const struct nc_qs_sink *sink, struct nc_qs_parser **out);
void nc_qs_parser_free(struct nc_qs_parser *p); /* accepts NULL */
/* Feeds len bytes, split anywhere (one byte at a time works). Calls the
 * sink zero or more times; every byte fed has gone out when it returns,
 * except the start of a page payload not yet complete (and of the 8-byte
 * file header, which is checked first). buf stays the
 * caller's. Returns 0, a sink's error, or NC_E_PROTO for a stream that is
 * malformed in a way that cannot be passed through (a bad magic at offset
 * 0; then nothing was emitted). Errors stick. NC_E_INVALID after
 * nc_qs_finish. */
int nc_qs_feed(struct nc_qs_parser *p, const uint8_t *buf, size_t len);
/* End of stream: flushes a partial page as OPAQUE (a truncated stream is
 * not an error; stats.eof tells a complete one). NC_E_PROTO if fewer than
 * 8 bytes came and they are not the start of "QEVM". */
int nc_qs_finish(struct nc_qs_parser *p);
void nc_qs_stats(const struct nc_qs_parser *p, struct nc_qs_stats *out);
/* Name of RAM block i ("pc.ram", ...), or NULL. Valid while p lives. */
const char *nc_qs_block_name(const struct nc_qs_parser *p, uint32_t block);
/* Why the parser switched to passthrough, or "". Valid while p lives. */
const char *nc_qs_passthrough_reason(const struct nc_qs_parser *p);

#endif
