/* QEMU precopy migration stream codec: see qstream.h for the contract.
 *
 * FORMAT (as QEMU 7.2.22 and 10.0.2 emit it for the test guest)
 * ----------------------------------------------------------------------
 * All integers are big-endian. Read from QEMU's migration/savevm.c,
 * migration/ram.c and migration/qemu-file.c, and checked against streams
 * recorded from both versions (tests/data/qstream, record.sh there).
 *
 * File header (savevm.c qemu_savevm_state_header):
 *   be32 0x5145564d "QEVM", be32 3 (QEMU_VM_FILE_VERSION).
 * Configuration (same function, vmstate_configuration), when the machine
 * sends it (every modern machine type does):
 *   u8 0x07, be32 len, name[len] ("pc-i440fx-10.0", "pc-i440fx-7.2"),
 *   then optional subsections, each u8 0x05 (QEMU_VM_SUBSECTION), u8 len,
 *   name[len], be32 version_id, fields (savevm.c/vmstate.c
 *   vmstate_subsection_save):
 *     "configuration/target-page-bits"  be32 bits
 *     "configuration/capabilities"      be32 n, n x (u8 len, name[len])
 *     "configuration/uuid"              16 bytes
 *   The test guest sends none of them. A subsection ends where the next
 *   byte is not 0x05 (0x05 is never a top-level record type).
 * Top-level records (savevm.c QEMU_VM_*, save_section_header,
 * save_section_footer, qemu_savevm_command_send):
 *   0x01 START  be32 section_id, u8 len, idstr[len], be32 instance_id,
 *               be32 version_id, payload, [footer]
 *   0x04 FULL   same header as START, payload, [footer]
 *   0x02 PART, 0x03 END   be32 section_id, payload, [footer]
 *   0x08 COMMAND  be16 cmd, be16 len, data[len]; cmd 7 (MIG_CMD_PACKAGED)
 *               is followed by a whole nested stream (be32 size in data)
 *   0x00 EOF, then 0x06 VMDESCRIPTION be32 len, JSON[len]
 *   footer      0x7e (QEMU_VM_SECTION_FOOTER), be32 section_id; sent
 *               unless the machine sets send-section-footer=off
 *   A section payload has no length prefix: only its owner can size it.
 *   The only iterable section of the test guest is "ram" (version 4).
 * RAM payload (ram.c ram_save_setup, ram_save_iterate, ram_save_complete,
 * save_page_header, save_zero_page, save_normal_page; read by
 * ram_load_precopy and ram_block_from_stream). Each record starts with
 * be64 offset|flags; flags are the low 12 bits (TARGET_PAGE_BITS, x86):
 *   0x02 ZERO      block ref, u8 fill (0)
 *   0x04 MEM_SIZE  (the offset bits carry the total RAM size) the block
 *                  table: per block u8 len, idstr[len], be64 used_length,
 *                  [be64 page_size only with postcopy-ram and a block whose
 *                  page size differs from the host's], [be64 mr addr only
 *                  with x-ignore-shared], until the lengths add up to the
 *                  total (ram.c ram_save_setup / parse_ramblock)
 *   0x08 PAGE      block ref, 4096 bytes of page
 *   0x10 EOS       end of this section's RAM payload
 *   0x20 CONTINUE  modifier: the block ref is omitted, same block as the
 *                  previous ZERO/PAGE record (mis->last_recv_block, kept
 *                  across sections); without it the block ref is u8 len,
 *                  idstr[len]
 *   0x40 XBZRLE, 0x100 COMPRESS_PAGE (7.2 only), 0x01 FULL (obsolete):
 *                  not parsed here (passthrough)
 *   0x80 HOOK      (RDMA) header only
 *   0x200 MULTIFD_FLUSH (QEMU >= 8.0, multifd only) header only
 *
 * What the test guest's streams contain (pc machine, -nodefaults, -m 128M,
 * TCG; tests/data/qstream/streams.txt):
 *   QEMU 10.0.2: QEVM v3; configuration "pc-i440fx-10.0" with no
 *   subsection; RAM START (section_id 1, instance 0, version 4) holding
 *   MEM_SIZE (total 0x8082000) and a 6-block table with no per-block
 *   extras: pc.ram 0x8000000, /rom@etc/acpi/tables 0x20000, pc.bios
 *   0x40000, pc.rom 0x20000, /rom@etc/table-loader 0x1000,
 *   /rom@etc/acpi/rsdp 0x1000; then EOS and a footer. Five PARTs of ZERO
 *   and PAGE records (CONTINUE on all but the first record of each run in
 *   a block: 0x02/0x08 with a block name, 0x22/0x28 without), each ending
 *   in EOS and a footer. A COMMAND cmd 11 (MIG_CMD_SWITCHOVER_START, new in
 *   10.0, sent by migration.c through qemu_savevm_maybe_send_switchover_start)
 *   with len 0 just before RAM END. END, then FULL device sections ("timer"
 *   first), EOF, VMDESCRIPTION (~100 KB of JSON starting
 *   `{"configuration"`).
 *   QEMU 7.2.22: the same layout except configuration "pc-i440fx-7.2",
 *   RAM as section_id 2, and no command record.
 *   Flags seen: MEM_SIZE, ZERO, PAGE, CONTINUE, EOS. Never HOOK,
 *   MULTIFD_FLUSH, XBZRLE or COMPRESS_PAGE (they need RDMA, multifd,
 *   xbzrle or compress).
 *
 * PARSER
 * ----------------------------------------------------------------------
 * A state machine over "need N bytes" items, fed any split of the input.
 * Every byte but a page payload is OPAQUE, so bytes are forwarded as they
 * arrive (in runs, straight from the caller's buffer); a header split
 * across feeds is copied to hdr only to be interpreted. Only a partial
 * page is held back (page). Memory is fixed: one page plus hdr.
 *
 * RAM END is the last thing that carries pages. After it come FULL device
 * sections, which cannot be sized without QEMU's vmstate descriptions, so
 * the tail passes through (that is not "passthrough": the parse
 * succeeded). EOF is recognized in the tail by the VMDESCRIPTION that
 * follows it: 0x00 0x06 be32 len `{"` ending exactly at the end of the
 * stream (a device section that happened to contain that pattern and end
 * exactly where a truncated stream ends would fool it; nothing else can).
 *
 * Passthrough (the bytes still go out exactly, only the page split is
 * lost), with the reason nc_qs_passthrough_reason gives, for: a file
 * version other than 3; an unknown configuration subsection, target page
 * bits other than 12, a validated capability other than x-ignore-shared
 * (e.g. mapped-ram); an iterable section other than "ram", a second RAM
 * START, a RAM section version other than 4, a PART/END of another
 * section, a FULL device section before RAM END; MIG_CMD_PACKAGED
 * (postcopy); an unknown record type or bytes after the VMDESCRIPTION; a
 * block table outside the first RAM section, with more than
 * NC_QS_BLOCKS_MAX blocks, an empty name (per-block fields this parser
 * does not expect, such as postcopy's page size), a duplicate name, or
 * sizes that overshoot the total; a ZERO/PAGE record whose block is not in
 * the table, that continues before any block was named, or whose offset is
 * at or beyond its block's size; XBZRLE, COMPRESS_PAGE, FULL or any other
 * flag combination; a footer whose section id differs. Not passthrough:
 * truncation anywhere (finish flushes; eof stays false). */
#include "dwcp/qstream.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

/* savevm.c QEMU_VM_* */
#define QS_FILE_MAGIC 0x5145564du
#define QS_FILE_VERSION 3u
#define QS_EOF 0x00
#define QS_SECTION_START 0x01
#define QS_SECTION_PART 0x02
#define QS_SECTION_END 0x03
#define QS_SECTION_FULL 0x04
#define QS_SUBSECTION 0x05
#define QS_VMDESCRIPTION 0x06
#define QS_CONFIGURATION 0x07
#define QS_COMMAND 0x08
#define QS_SECTION_FOOTER 0x7e
#define QS_CMD_PACKAGED 7 /* savevm.c enum qemu_vm_cmd */

/* ram.c RAM_SAVE_FLAG_* (0x80 HOOK is in rdma.h, 0x200 in ram.h) */
#define QS_F_FULL 0x001u
#define QS_F_ZERO 0x002u
#define QS_F_MEM_SIZE 0x004u
#define QS_F_PAGE 0x008u
#define QS_F_EOS 0x010u
#define QS_F_CONTINUE 0x020u
#define QS_F_XBZRLE 0x040u
#define QS_F_HOOK 0x080u
#define QS_F_COMPRESS 0x100u
#define QS_F_MULTIFD_FLUSH 0x200u
#define QS_FLAGS_MASK ((uint64_t)NC_QS_PAGE_SIZE - 1)
#define QS_RAM_VERSION 4u

#define QS_VMDESC_MAX (64u << 20) /* a VMDESCRIPTION longer than this is not one */
#define QS_HDR_MAX (1 + 255 + 8 + 8) /* the longest item: a block table entry */
_Static_assert(QS_HDR_MAX + NC_QS_PAGE_SIZE <= NC_QS_BUFFER_MAX, "buffers exceed the contract");

enum qs_state {
  ST_MAGIC,        /* 8: QEVM, version */
  ST_TOP,          /* 1: record type */
  ST_CONF_LEN,     /* 4: configuration name length */
  ST_CONF_PEEK,    /* 1: 0x05 subsection, or the next record type */
  ST_SUB_NAMELEN,  /* 1 */
  ST_SUB_NAME,     /* len + 4: name, version_id */
  ST_SUB_PAGEBITS, /* 4 */
  ST_CAPS_COUNT,   /* 4 */
  ST_CAP_LEN,      /* 1 */
  ST_CAP_NAME,     /* len */
  ST_SEC_HDR,      /* 5: section_id, idstr length (START, FULL) */
  ST_SEC_NAME,     /* len + 8: idstr, instance_id, version_id */
  ST_SEC_ID,       /* 4: section_id (PART, END) */
  ST_CMD,          /* 4: be16 cmd, be16 len */
  ST_AFTER_EOF,    /* 1: 0x06 VMDESCRIPTION expected */
  ST_VMDESC_LEN,   /* 4 */
  ST_TRAILER,      /* 1: nothing may follow the VMDESCRIPTION */
  ST_RAM_REC,      /* 8: be64 offset|flags */
  ST_RAM_IDLEN,    /* 1 */
  ST_RAM_ID,       /* len */
  ST_RAM_ZERO,     /* 1: fill byte */
  ST_BLK_LEN,      /* 1 */
  ST_BLK_ENTRY,    /* len + 8 [+ 8] */
  ST_FOOTER_PEEK,  /* 1: 0x7e, or the next record type */
  ST_FOOTER_ID,    /* 4 */
  /* states that do not collect a fixed item */
  ST_SKIP,     /* p->skip opaque bytes, then p->after_skip */
  ST_RAM_PAGE, /* 4096 bytes of page payload */
  ST_TAIL,     /* after RAM END: opaque, watching for EOF + VMDESCRIPTION */
  ST_PASS,     /* passthrough */
};

struct qs_block {
  uint64_t used_bytes;
  uint8_t name_len;
  char name[256];
};

struct nc_qs_parser {
  struct nc_qs_sink sink;
  enum qs_state state;
  size_t need, have; /* item size, bytes of it in hdr */
  uint8_t hdr[QS_HDR_MAX];
  uint64_t skip;
  enum qs_state after_skip;
  uint8_t page[NC_QS_PAGE_SIZE];
  size_t page_have;

  uint8_t sec_type; /* of the section being read */
  uint32_t sec_id;
  bool ram_started;
  uint32_t ram_id;
  uint32_t caps_left;
  bool ignore_shared; /* x-ignore-shared: the block table carries addr */

  uint64_t rec_offset;
  uint64_t rec_flags;
  int32_t last_block; /* -1: none yet (a CONTINUE record is invalid) */
  uint32_t nblocks;
  uint64_t table_total, table_sum;
  struct qs_block blocks[NC_QS_BLOCKS_MAX];

  uint64_t tail_window; /* the last 8 tail bytes */
  uint64_t end_at;      /* where a complete stream ends, 0: not known */

  struct nc_qs_stats st;
  int err; /* sticky: a sink's error, or NC_E_PROTO */
  bool finished;
  char reason[192];
};

static uint16_t be16(const uint8_t *b) { return (uint16_t)(b[0] << 8 | b[1]); }

static uint32_t be32(const uint8_t *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t be64(const uint8_t *b) { return (uint64_t)be32(b) << 32 | be32(b + 4); }

static void expect(struct nc_qs_parser *p, enum qs_state st, size_t n) {
  p->state = st;
  p->need = n;
}

static void skip_then(struct nc_qs_parser *p, uint64_t n, enum qs_state next, size_t next_need) {
  p->skip = n;
  p->after_skip = next;
  p->need = next_need;
  p->state = n ? ST_SKIP : next;
}

static void passthrough(struct nc_qs_parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Gives up on the structure for the rest of the stream: all OPAQUE. */
static void passthrough(struct nc_qs_parser *p, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->reason, sizeof p->reason, fmt, ap);
  va_end(ap);
  p->st.passthrough = true;
  p->state = ST_PASS;
}

/* Copies a length-prefixed name for a message; never more than it holds. */
static const char *name_of(char *out, size_t cap, const uint8_t *b, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n && k + 1 < cap; i++)
    out[k++] = (b[i] >= 0x20 && b[i] < 0x7f) ? (char)b[i] : '?';
  out[k] = '\0';
  return out;
}

/* A record type byte at top level (also one read where a subsection or
 * footer could have been). */
static void on_record_type(struct nc_qs_parser *p, uint8_t type) {
  p->sec_type = type;
  switch (type) {
  case QS_SECTION_START:
  case QS_SECTION_FULL:
    expect(p, ST_SEC_HDR, 5);
    break;
  case QS_SECTION_PART:
  case QS_SECTION_END:
    expect(p, ST_SEC_ID, 4);
    break;
  case QS_COMMAND:
    expect(p, ST_CMD, 4);
    break;
  case QS_CONFIGURATION:
    if (p->ram_started)
      passthrough(p, "configuration record after RAM started");
    else
      expect(p, ST_CONF_LEN, 4);
    break;
  case QS_EOF:
    p->end_at = p->st.bytes_in; /* ends here unless a VMDESCRIPTION follows */
    expect(p, ST_AFTER_EOF, 1);
    break;
  default:
    passthrough(p, "unknown record type 0x%02x", type);
    break;
  }
}

/* The section whose payload just ended (EOS and footer read). */
static void section_done(struct nc_qs_parser *p) {
  if (p->sec_type == QS_SECTION_END) {
    p->st.ram_done = true;
    p->state = ST_TAIL;
  } else {
    expect(p, ST_TOP, 1);
  }
}

static void tail_scan(struct nc_qs_parser *p, const uint8_t *b, size_t n, uint64_t pos) {
  uint64_t w = p->tail_window;
  for (size_t i = 0; i < n; i++) {
    w = w << 8 | b[i];
    /* 0x00 0x06 len32 '{' '"': QEMU_VM_EOF, QEMU_VM_VMDESCRIPTION, JSON */
    if ((w >> 48) == 0x0006u && (w & 0xffffu) == 0x7b22u) {
      uint32_t len = (uint32_t)(w >> 16);
      if (len >= 2 && len <= QS_VMDESC_MAX)
        p->end_at = pos + i - 1 + len; /* '{' is at pos + i - 1 */
    }
  }
  p->tail_window = w;
}

static int find_block(const struct nc_qs_parser *p, const uint8_t *name, size_t n) {
  for (uint32_t i = 0; i < p->nblocks; i++)
    if (p->blocks[i].name_len == n && memcmp(p->blocks[i].name, name, n) == 0)
      return (int)i;
  return -1;
}

/* A ZERO or PAGE record whose block is now known. */
static void ram_page_record(struct nc_qs_parser *p) {
  const struct qs_block *blk = &p->blocks[p->last_block];
  if (p->rec_offset >= blk->used_bytes) {
    passthrough(p, "RAM record offset 0x%llx beyond block \"%s\" (0x%llx bytes)",
                (unsigned long long)p->rec_offset, blk->name,
                (unsigned long long)blk->used_bytes);
    return;
  }
  if (p->rec_flags & QS_F_PAGE) {
    p->page_have = 0;
    p->state = ST_RAM_PAGE;
  } else {
    expect(p, ST_RAM_ZERO, 1);
  }
}

static void ram_record(struct nc_qs_parser *p, uint64_t v) {
  uint64_t flags = v & QS_FLAGS_MASK;
  p->rec_offset = v & ~QS_FLAGS_MASK;
  p->rec_flags = flags;
  switch (flags & ~(uint64_t)QS_F_CONTINUE) {
  case QS_F_ZERO:
  case QS_F_PAGE:
    if (!(flags & QS_F_CONTINUE)) {
      expect(p, ST_RAM_IDLEN, 1);
    } else if (p->last_block < 0) {
      passthrough(p, "RAM record continues a block before any was named");
    } else {
      ram_page_record(p);
    }
    break;
  case QS_F_MEM_SIZE:
    if (p->sec_type != QS_SECTION_START || p->nblocks || p->table_total) {
      passthrough(p, "RAM block table outside the first RAM section");
      break;
    }
    p->table_total = p->rec_offset;
    p->table_sum = 0;
    if (p->table_total)
      expect(p, ST_BLK_LEN, 1);
    break;
  case QS_F_EOS:
    expect(p, ST_FOOTER_PEEK, 1);
    break;
  case QS_F_HOOK:
  case QS_F_MULTIFD_FLUSH:
    break; /* header only */
  case QS_F_XBZRLE:
    passthrough(p, "XBZRLE page (capability xbzrle)");
    break;
  case QS_F_COMPRESS:
    passthrough(p, "compressed page (capability compress)");
    break;
  default:
    passthrough(p, "RAM record flags 0x%03llx", (unsigned long long)flags);
    break;
  }
}

static void block_entry(struct nc_qs_parser *p, const uint8_t *h) {
  size_t n = p->need - 8 - (p->ignore_shared ? 8 : 0);
  uint64_t used = be64(h + n);
  if (p->nblocks == NC_QS_BLOCKS_MAX) {
    passthrough(p, "more than %d RAM blocks", NC_QS_BLOCKS_MAX);
    return;
  }
  if (used & QS_FLAGS_MASK || used > p->table_total - p->table_sum) {
    char nm[64];
    passthrough(p, "RAM block \"%s\" size 0x%llx does not fit the table (total 0x%llx)",
                name_of(nm, sizeof nm, h, n), (unsigned long long)used,
                (unsigned long long)p->table_total);
    return;
  }
  if (find_block(p, h, n) >= 0) {
    char nm[64];
    passthrough(p, "RAM block \"%s\" listed twice", name_of(nm, sizeof nm, h, n));
    return;
  }
  struct qs_block *blk = &p->blocks[p->nblocks++];
  blk->used_bytes = used;
  blk->name_len = (uint8_t)n;
  memcpy(blk->name, h, n);
  blk->name[n] = '\0';
  p->table_sum += used;
  if (p->table_sum == p->table_total)
    expect(p, ST_RAM_REC, 8);
  else
    expect(p, ST_BLK_LEN, 1);
}

static void section_header(struct nc_qs_parser *p, const uint8_t *h) {
  size_t n = p->need - 8;
  uint32_t version = be32(h + n + 4);
  char nm[64];
  name_of(nm, sizeof nm, h, n);
  if (p->sec_type == QS_SECTION_FULL) {
    passthrough(p, "device section \"%s\" before RAM END cannot be sized", nm);
  } else if (n != 3 || memcmp(h, "ram", 3) != 0) {
    passthrough(p, "iterable section \"%s\" cannot be sized", nm);
  } else if (p->ram_started) {
    passthrough(p, "a second RAM START section");
  } else if (version != QS_RAM_VERSION) {
    passthrough(p, "RAM section version %u (want %u)", version, QS_RAM_VERSION);
  } else {
    p->ram_started = true;
    p->ram_id = p->sec_id;
    p->st.passes++;
    expect(p, ST_RAM_REC, 8);
  }
}

static void subsection(struct nc_qs_parser *p, const uint8_t *h) {
  size_t n = p->need - 4;
  char nm[64];
  name_of(nm, sizeof nm, h, n);
  if (strcmp(nm, "configuration/target-page-bits") == 0)
    expect(p, ST_SUB_PAGEBITS, 4);
  else if (strcmp(nm, "configuration/capabilities") == 0)
    expect(p, ST_CAPS_COUNT, 4);
  else if (strcmp(nm, "configuration/uuid") == 0)
    skip_then(p, 16, ST_CONF_PEEK, 1);
  else
    passthrough(p, "unknown configuration subsection \"%s\"", nm);
}

static void capability(struct nc_qs_parser *p, const uint8_t *h) {
  char nm[64];
  name_of(nm, sizeof nm, h, p->need);
  /* The capabilities QEMU validates (savevm.c should_validate_capability)
   * are the ones that change the stream. */
  if (strcmp(nm, "x-ignore-shared") == 0) {
    p->ignore_shared = true;
  } else {
    passthrough(p, "capability \"%s\" changes the RAM format", nm);
    return;
  }
  if (--p->caps_left)
    expect(p, ST_CAP_LEN, 1);
  else
    expect(p, ST_CONF_PEEK, 1);
}

/* Interprets a complete item h[0 .. p->need). */
static int step(struct nc_qs_parser *p, const uint8_t *h) {
  switch (p->state) {
  case ST_MAGIC:
    if (be32(h) != QS_FILE_MAGIC)
      return NC_E_PROTO;
    if (be32(h + 4) != QS_FILE_VERSION)
      passthrough(p, "stream version %u (want %u)", be32(h + 4), QS_FILE_VERSION);
    else
      expect(p, ST_TOP, 1);
    break;
  case ST_TOP:
    on_record_type(p, h[0]);
    break;
  case ST_CONF_LEN:
    skip_then(p, be32(h), ST_CONF_PEEK, 1);
    break;
  case ST_CONF_PEEK:
    if (h[0] == QS_SUBSECTION)
      expect(p, ST_SUB_NAMELEN, 1);
    else
      on_record_type(p, h[0]);
    break;
  case ST_SUB_NAMELEN:
    expect(p, ST_SUB_NAME, (size_t)h[0] + 4);
    break;
  case ST_SUB_NAME:
    subsection(p, h);
    break;
  case ST_SUB_PAGEBITS:
    if (be32(h) != 12)
      passthrough(p, "target page bits %u (only 12, 4 KiB pages)", be32(h));
    else
      expect(p, ST_CONF_PEEK, 1);
    break;
  case ST_CAPS_COUNT:
    p->caps_left = be32(h);
    if (p->caps_left)
      expect(p, ST_CAP_LEN, 1);
    else
      expect(p, ST_CONF_PEEK, 1);
    break;
  case ST_CAP_LEN:
    if (h[0] == 0)
      passthrough(p, "empty capability name");
    else
      expect(p, ST_CAP_NAME, h[0]);
    break;
  case ST_CAP_NAME:
    capability(p, h);
    break;
  case ST_SEC_HDR:
    p->sec_id = be32(h);
    expect(p, ST_SEC_NAME, (size_t)h[4] + 8);
    break;
  case ST_SEC_NAME:
    section_header(p, h);
    break;
  case ST_SEC_ID:
    p->sec_id = be32(h);
    if (!p->ram_started || p->sec_id != p->ram_id) {
      passthrough(p, "%s of section %u, which is not RAM",
                  p->sec_type == QS_SECTION_END ? "END" : "PART", p->sec_id);
    } else {
      p->st.passes++;
      expect(p, ST_RAM_REC, 8);
    }
    break;
  case ST_CMD:
    if (be16(h) == QS_CMD_PACKAGED)
      passthrough(p, "packaged command (postcopy)");
    else
      skip_then(p, be16(h + 2), ST_TOP, 1);
    break;
  case ST_AFTER_EOF:
    if (h[0] == QS_VMDESCRIPTION)
      expect(p, ST_VMDESC_LEN, 4);
    else
      passthrough(p, "record type 0x%02x after EOF", h[0]);
    break;
  case ST_VMDESC_LEN:
    p->end_at = p->st.bytes_in + be32(h); /* bytes_in: through this item */
    skip_then(p, be32(h), ST_TRAILER, 1);
    break;
  case ST_TRAILER:
    passthrough(p, "bytes after the end of the stream");
    break;
  case ST_RAM_REC:
    ram_record(p, be64(h));
    break;
  case ST_RAM_IDLEN:
    expect(p, ST_RAM_ID, h[0]);
    break;
  case ST_RAM_ID: {
    int b = find_block(p, h, p->need);
    if (b < 0) {
      char nm[64];
      passthrough(p, "RAM record names block \"%s\", not in the block table",
                  name_of(nm, sizeof nm, h, p->need));
    } else {
      p->last_block = b;
      ram_page_record(p);
    }
    break;
  }
  case ST_RAM_ZERO:
    p->st.zero_pages++;
    expect(p, ST_RAM_REC, 8);
    break;
  case ST_BLK_LEN:
    if (h[0] == 0)
      passthrough(p, "RAM block with an empty name (per-block fields this parser "
                     "does not know, e.g. postcopy page size)");
    else
      expect(p, ST_BLK_ENTRY, (size_t)h[0] + 8 + (p->ignore_shared ? 8 : 0));
    break;
  case ST_BLK_ENTRY:
    block_entry(p, h);
    break;
  case ST_FOOTER_PEEK:
    if (h[0] == QS_SECTION_FOOTER) {
      expect(p, ST_FOOTER_ID, 4);
    } else {
      section_done(p);
      if (p->state == ST_TAIL)
        tail_scan(p, h, 1, p->st.bytes_in - 1);
      else
        on_record_type(p, h[0]);
    }
    break;
  case ST_FOOTER_ID:
    if (be32(h) != p->sec_id)
      passthrough(p, "footer of section %u ends section %u", be32(h), p->sec_id);
    else
      section_done(p);
    break;
  default:
    break;
  }
  return 0;
}

int nc_qs_parser_new(const struct nc_qs_sink *sink, struct nc_qs_parser **out) {
  if (!sink || !sink->opaque || !sink->page || !out)
    return -EINVAL;
  struct nc_qs_parser *p = calloc(1, sizeof *p);
  if (!p)
    return -ENOMEM;
  p->sink = *sink;
  p->last_block = -1;
  expect(p, ST_MAGIC, 8);
  *out = p;
  return 0;
}

void nc_qs_parser_free(struct nc_qs_parser *p) { free(p); }

static int emit_opaque(struct nc_qs_parser *p, const uint8_t *b, size_t n) {
  if (n == 0)
    return 0;
  p->st.opaque_bytes += n;
  return p->sink.opaque(p->sink.data, b, n);
}

static int emit_page(struct nc_qs_parser *p, const uint8_t *page) {
  p->st.pages++;
  p->state = ST_RAM_REC;
  p->need = 8;
  return p->sink.page(p->sink.data, (uint32_t)p->last_block, p->rec_offset, page);
}

int nc_qs_feed(struct nc_qs_parser *p, const uint8_t *buf, size_t len) {
  if (p->err)
    return p->err;
  if (p->finished)
    return NC_E_INVALID;
  if (len == 0)
    return 0;
  const uint8_t *cur = buf, *end = buf + len;
  const uint8_t *run = buf; /* start of the opaque bytes not yet emitted */
  uint64_t base = p->st.bytes_in; /* stream offset of buf[0] */
  int rc = 0;

  while (cur < end) {
    size_t avail = (size_t)(end - cur);
    if (p->state == ST_PASS) {
      cur = end;
    } else if (p->state == ST_TAIL) {
      tail_scan(p, cur, avail, base + (uint64_t)(cur - buf));
      cur = end;
    } else if (p->state == ST_SKIP) {
      size_t n = p->skip < avail ? (size_t)p->skip : avail;
      p->skip -= n;
      cur += n;
      if (p->skip == 0)
        p->state = p->after_skip;
    } else if (p->state == ST_RAM_PAGE) {
      if ((rc = emit_opaque(p, run, (size_t)(cur - run))) != 0)
        goto out;
      if (p->page_have == 0 && avail >= NC_QS_PAGE_SIZE) {
        p->st.bytes_in = base + (uint64_t)(cur - buf) + NC_QS_PAGE_SIZE;
        rc = emit_page(p, cur);
        cur += NC_QS_PAGE_SIZE;
      } else {
        size_t n = NC_QS_PAGE_SIZE - p->page_have;
        if (n > avail)
          n = avail;
        memcpy(p->page + p->page_have, cur, n);
        p->page_have += n;
        cur += n;
        if (p->page_have == NC_QS_PAGE_SIZE) {
          p->page_have = 0;
          p->st.bytes_in = base + (uint64_t)(cur - buf);
          rc = emit_page(p, p->page);
        }
      }
      run = cur;
      if (rc != 0)
        goto out;
    } else {
      const uint8_t *item;
      if (p->have == 0 && avail >= p->need) {
        item = cur;
        cur += p->need;
      } else {
        size_t n = p->need - p->have;
        if (n > avail)
          n = avail;
        memcpy(p->hdr + p->have, cur, n);
        p->have += n;
        cur += n;
        if (p->have < p->need)
          break;
        p->have = 0;
        item = p->hdr;
      }
      p->st.bytes_in = base + (uint64_t)(cur - buf);
      if (p->state == ST_MAGIC) {
        /* Held back until checked: a stream that is not QEMU's gets
         * nothing through. The magic is the first item, so run is empty. */
        if ((rc = step(p, item)) != 0)
          goto out;
        if ((rc = emit_opaque(p, item, 8)) != 0)
          goto out;
        run = cur;
      } else if ((rc = step(p, item)) != 0) {
        goto out;
      }
    }
  }
  if (p->state == ST_MAGIC)
    run = end; /* a partial magic stays in hdr */
  rc = emit_opaque(p, run, (size_t)(end - run));
out:
  p->st.bytes_in = base + len;
  if (rc != 0)
    p->err = rc;
  return rc;
}

int nc_qs_finish(struct nc_qs_parser *p) {
  if (p->err)
    return p->err;
  if (p->finished)
    return 0;
  p->finished = true;
  int rc = 0;
  if (p->state == ST_MAGIC && p->have) {
    /* A stream cut inside its header: pass what came if it can be QEMU's. */
    if (memcmp(p->hdr, "QEVM", p->have < 4 ? p->have : 4) != 0)
      rc = NC_E_PROTO;
    else
      rc = emit_opaque(p, p->hdr, p->have);
    p->have = 0;
  } else if (p->state == ST_RAM_PAGE && p->page_have) {
    rc = emit_opaque(p, p->page, p->page_have); /* truncated inside a page */
    p->page_have = 0;
  }
  if (rc != 0)
    p->err = rc;
  return rc;
}

void nc_qs_stats(const struct nc_qs_parser *p, struct nc_qs_stats *out) {
  *out = p->st;
  out->eof = p->end_at != 0 && p->end_at == p->st.bytes_in && !p->st.passthrough;
}

const char *nc_qs_block_name(const struct nc_qs_parser *p, uint32_t block) {
  return block < p->nblocks ? p->blocks[block].name : NULL;
}

const char *nc_qs_passthrough_reason(const struct nc_qs_parser *p) {
  return p->st.passthrough ? p->reason : "";
}
