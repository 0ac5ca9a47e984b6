/* HDE encode/decode throughput on one core, and bytes out per byte in.
 *
 *   cmake -S . -B build && make -C build nc_dwcp
 *   cc -O2 -D_GNU_SOURCE -Isrc bench/hde_bench.c build/src/dwcp/libnc_dwcp.a \
 *      build/src/libnc_util.a -lzstd -llz4 -lxxhash -lpthread -o build/hde_bench
 *   build/hde_bench [MiB, default 64]
 *
 * Memory images (each MiB pages, one per key):
 *   sparse   the guest workload's compressible pattern (guest/workload.c):
 *            a few 64-bit words written into an otherwise zero page;
 *   random   every byte random (incompressible);
 *   mixed    1/4 zero, 1/4 sparse, 1/4 text-like, 1/4 random.
 * Pass 1 sends the image; pass 2 re-sends it after rewriting 4 words of
 * every page (what a precopy iteration sees), so DELTA applies. dedup is
 * off (no REF) so the codec itself is measured; "+local" also stores every
 * page in a source page cache on /tmp, as the encoder does in a migration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dwcp/hde.h"

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void) {
  rs ^= rs << 13;
  rs ^= rs >> 7;
  rs ^= rs << 17;
  return rs;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sparse_write(uint8_t *p, int words) {
  for (int k = 0; k < words; k++) {
    uint64_t v = rnd() | 1;
    memcpy(p + (rnd() % (NC_HDE_PAGE / 8)) * 8, &v, 8);
  }
}

static void fill(uint8_t *mem, size_t pages, int kind) {
  static const char *words[] = {"the ", "migration ", "page ", "cache ", "of ", "0x7f3a ", "\n"};
  for (size_t i = 0; i < pages; i++) {
    uint8_t *p = mem + i * NC_HDE_PAGE;
    int k = kind == 2 ? (int)(i % 4) : kind == 0 ? 1 : 3;
    memset(p, 0, NC_HDE_PAGE);
    if (k == 1) {
      sparse_write(p, 4);
    } else if (k == 2) {
      size_t o = 0;
      while (o < NC_HDE_PAGE) {
        const char *w = words[rnd() % 7];
        size_t l = strlen(w);
        if (o + l > NC_HDE_PAGE)
          l = NC_HDE_PAGE - o;
        memcpy(p + o, w, l);
        o += l;
      }
    } else if (k == 3) {
      for (size_t o = 0; o < NC_HDE_PAGE; o += 8) {
        uint64_t v = rnd();
        memcpy(p + o, &v, 8);
      }
    }
  }
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 64;
  size_t pages = mib * 256;
  uint8_t *mem = malloc(pages * NC_HDE_PAGE), *toks = malloc(pages * NC_HDE_TOKEN_MAX);
  size_t *lens = malloc(pages * sizeof *lens);
  uint8_t page[NC_HDE_PAGE];
  if (!mem || !toks || !lens)
    return 1;
  static const struct {
    enum nc_hde_codec c;
    int level;
    const char *name;
  } cs[] = {{NC_HDE_NONE, 0, "none"},   {NC_HDE_LZ4, 1, "lz4"},   {NC_HDE_ZSTD, 1, "zstd-1"},
            {NC_HDE_ZSTD, 3, "zstd-3"}, {NC_HDE_ZSTD, 6, "zstd-6"}};
  static const char *kinds[] = {"sparse", "random", "mixed"};
  printf("%zu MiB, one core\n%-7s %-8s %-6s %-6s %10s %10s %9s  %s\n", mib, "codec", "image", "cache",
         "pass", "enc MiB/s", "dec MiB/s", "out/in", "zero/ref/delta/raw/stored");
  for (int kind = 0; kind < 3; kind++)
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++)
      for (int local = 0; local < 2; local++) {
        if (local && cs[c].c != NC_HDE_LZ4)
          continue;
        rs = 88172645463325252ull;
        fill(mem, pages, kind);
        struct nc_hde_params p = {.codec = cs[c].c,
                                  .level = cs[c].level,
                                  .delta_cache_bytes = (uint64_t)pages * NC_HDE_PAGE};
        struct nc_pcache *lc = NULL;
        char dir[] = "/tmp/nc_hde_bench_XXXXXX";
        if (local && (!mkdtemp(dir) || nc_pcache_open(dir, (uint64_t)(pages + 2) * 4112, &lc)))
          return 1;
        struct nc_hde_enc *e;
        struct nc_hde_dec *d;
        if (nc_hde_enc_new(&p, NULL, 0, lc, &e) || nc_hde_dec_new(&p, NULL, 0, &d))
          return 1;
        for (int pass = 1; pass <= 2; pass++) {
          if (pass == 2)
            for (size_t i = 0; i < pages; i++)
              sparse_write(mem + i * NC_HDE_PAGE, 4);
          struct nc_hde_stats s0, s1;
          nc_hde_enc_stats(e, &s0);
          double t0 = now_s();
          for (size_t i = 0; i < pages; i++)
            nc_hde_encode(e, i, mem + i * NC_HDE_PAGE, toks + i * NC_HDE_TOKEN_MAX, &lens[i]);
          double t1 = now_s();
          for (size_t i = 0; i < pages; i++)
            if (nc_hde_decode(d, i, toks + i * NC_HDE_TOKEN_MAX, lens[i], page) != 0 ||
                memcmp(page, mem + i * NC_HDE_PAGE, NC_HDE_PAGE) != 0) {
              fprintf(stderr, "decode mismatch at page %zu\n", i);
              return 1;
            }
          double t2 = now_s();
          nc_hde_enc_stats(e, &s1);
          printf("%-7s %-8s %-6s %-6d %10.0f %10.0f %9.4f  %llu/%llu/%llu/%llu/%llu\n", cs[c].name,
                 kinds[kind], local ? "+local" : "-", pass, (double)mib / (t1 - t0),
                 (double)mib / (t2 - t1),
                 (double)(s1.bytes_out - s0.bytes_out) / (double)(s1.bytes_in - s0.bytes_in),
                 (unsigned long long)(s1.zero - s0.zero), (unsigned long long)(s1.ref - s0.ref),
                 (unsigned long long)(s1.delta - s0.delta), (unsigned long long)(s1.raw - s0.raw),
                 (unsigned long long)(s1.stored - s0.stored));
        }
        nc_hde_enc_free(e);
        nc_hde_dec_free(d);
        if (lc) {
          nc_pcache_close(lc);
          char f[64];
          snprintf(f, sizeof f, "%s/%s", dir, NC_PCACHE_FILE);
          unlink(f);
          rmdir(dir);
        }
      }
  free(mem);
  free(toks);
  free(lens);
  return 0;
}
