/* Base-disk identity (src/vm/imgid.h): what it reads, what tells two files
 * apart, its errors, its wire form, and the daemon's cache of it.
 *
 * The expected identities are computed here a second way, from the
 * definition in imgid.h (the sampled bytes gathered into one buffer and
 * hashed at once), and one is pinned as a known answer: changing the
 * definition breaks compatibility between nodes, so it must fail here. */
#include "nc_test.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "vm/imgid.h"

#define MiB (1024ULL * 1024)
#define GiB (1024ULL * MiB)

static char dir[128];

static int setup(void **state) {
  (void)state;
  return nct_mkdtemp(dir, sizeof dir, "imgid");
}

static int teardown(void **state) {
  (void)state;
  nct_rmtree(dir);
  return 0;
}

static void path_of(char *out, size_t len, const char *name) {
  snprintf(out, len, "%s/%s", dir, name);
}

/* Deterministic content: byte i of the file is a function of i and seed. */
static uint8_t content_at(uint64_t i, uint8_t seed) {
  uint64_t z = (i / 8 + seed) * 0x9e3779b97f4a7c15ULL;
  z ^= z >> 29;
  return (uint8_t)(z >> (8 * (i % 8)));
}

static void write_file(const char *path, uint64_t size, uint8_t seed) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  static uint8_t buf[1 << 16];
  for (uint64_t off = 0; off < size;) {
    size_t n = size - off < sizeof buf ? (size_t)(size - off) : sizeof buf;
    for (size_t i = 0; i < n; i++)
      buf[i] = content_at(off + i, seed);
    assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
    off += n;
  }
  assert_int_equal(close(fd), 0);
}

static void poke(const char *path, uint64_t off, uint8_t v) {
  int fd = open(path, O_WRONLY);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, &v, 1, (off_t)off), 1);
  assert_int_equal(close(fd), 0);
}

static uint8_t peek(const char *path, uint64_t off) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  uint8_t v = 0;
  assert_int_equal(pread(fd, &v, 1, (off_t)off), 1);
  close(fd);
  return v;
}

/* Offset of middle block i, straight from imgid.h (128-bit arithmetic). */
static uint64_t block_off(uint64_t size, int i) {
  unsigned __int128 span = size - NC_IMGID_HEAD_BYTES - NC_IMGID_TAIL_BYTES - NC_IMGID_BLOCK_BYTES;
  return NC_IMGID_HEAD_BYTES + (uint64_t)(span * (unsigned)i / (NC_IMGID_BLOCKS - 1));
}

/* The identity by the definition: gather the samples, hash them at once. */
static void reference_id(const char *path, struct nc_imgid *out) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  uint64_t size = (uint64_t)st.st_size;
  uint8_t *all = malloc(NC_IMGID_SAMPLE_BYTES);
  assert_non_null(all);
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  size_t len = 0;
  if (size <= NC_IMGID_SAMPLE_BYTES) {
    assert_int_equal(pread(fd, all, size, 0), (ssize_t)size);
    len = size;
  } else {
    assert_int_equal(pread(fd, all, NC_IMGID_HEAD_BYTES, 0), NC_IMGID_HEAD_BYTES);
    len = NC_IMGID_HEAD_BYTES;
    for (int i = 0; i < NC_IMGID_BLOCKS; i++) {
      uint64_t off = block_off(size, i);
      assert_int_equal(pread(fd, all + len, NC_IMGID_BLOCK_BYTES, (off_t)off),
                       NC_IMGID_BLOCK_BYTES);
      len += NC_IMGID_BLOCK_BYTES;
    }
    assert_int_equal(pread(fd, all + len, NC_IMGID_TAIL_BYTES,
                           (off_t)(size - NC_IMGID_TAIL_BYTES)),
                     NC_IMGID_TAIL_BYTES);
    len += NC_IMGID_TAIL_BYTES;
  }
  close(fd);
  EXPECT_U64(len, size < NC_IMGID_SAMPLE_BYTES ? size : NC_IMGID_SAMPLE_BYTES);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(all, len));
  free(all);
  out->size_bytes = size;
  memcpy(out->xxh128, c.digest, 16);
}

static void expect_id(const char *what, const struct nc_imgid *got,
                      const struct nc_imgid *want) {
  char g[NC_IMGID_HEX_LEN + 1], w[NC_IMGID_HEX_LEN + 1];
  if (!nc_imgid_equal(got, want))
    fail_msg("%s: identity %llu/%s, want %llu/%s", what, (unsigned long long)got->size_bytes,
             nc_imgid_hex(got, g), (unsigned long long)want->size_bytes, nc_imgid_hex(want, w));
}

static void expect_differ(const char *what, const struct nc_imgid *a,
                          const struct nc_imgid *b) {
  char h[NC_IMGID_HEX_LEN + 1];
  if (nc_imgid_equal(a, b))
    fail_msg("%s: both are %llu/%s, want different identities", what,
             (unsigned long long)a->size_bytes, nc_imgid_hex(a, h));
}

static void compute(const char *path, struct nc_imgid *out) {
  EXPECT_RC(nc_imgid_compute(path, out), 0);
}

/* ---- the identity --------------------------------------------------------- */

static void test_same_content_same_id(void **state) {
  (void)state;
  char a[200], b[200];
  struct nc_imgid ia, ib, ref;
  for (int k = 0; k < 3; k++) {
    uint64_t size = k == 0 ? 4096 : k == 1 ? NC_IMGID_SAMPLE_BYTES : 13 * MiB + 123;
    path_of(a, sizeof a, "a");
    path_of(b, sizeof b, "b");
    write_file(a, size, 7);
    write_file(b, size, 7);
    compute(a, &ia);
    compute(b, &ib);
    expect_id("two files of the same content", &ib, &ia);
    EXPECT_U64(ia.size_bytes, size);
    reference_id(a, &ref);
    expect_id("the identity against its definition", &ia, &ref);
  }
}

/* Pinned: the identity of 7 MiB + 5 bytes of content_at(i, 1), as a
 * separate script got it too (Python, the samples sliced by hand, hashed
 * by libxxhash's XXH3_128bits through ctypes). A change here is a change
 * of the definition, which breaks compatibility. */
static void test_known_answer(void **state) {
  (void)state;
  char p[200], hex[NC_IMGID_HEX_LEN + 1];
  path_of(p, sizeof p, "kat");
  write_file(p, 7 * MiB + 5, 1);
  struct nc_imgid id;
  compute(p, &id);
  EXPECT_U64(id.size_bytes, 7 * MiB + 5);
  EXPECT_STR(nc_imgid_hex(&id, hex), "1d165467102d13094ab3e0ec2eb416ec");
}

static void test_sampled_byte_changes_id(void **state) {
  (void)state;
  char p[200];
  path_of(p, sizeof p, "f");
  uint64_t size = 40 * MiB + 4097;
  write_file(p, size, 3);
  struct nc_imgid before, after, ref;
  compute(p, &before);
  /* The first and last byte of the head, of some middle blocks, of the tail. */
  const uint64_t offs[] = {0,
                           NC_IMGID_HEAD_BYTES - 1,
                           block_off(size, 0),
                           block_off(size, 1) + 100,
                           block_off(size, 23) + NC_IMGID_BLOCK_BYTES - 1,
                           block_off(size, NC_IMGID_BLOCKS - 1),
                           size - NC_IMGID_TAIL_BYTES,
                           size - 1};
  for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
    uint8_t old = peek(p, offs[i]);
    poke(p, offs[i], (uint8_t)(old ^ 0x01));
    compute(p, &after);
    char what[100];
    snprintf(what, sizeof what, "one bit flipped at offset %llu (a sampled byte)",
             (unsigned long long)offs[i]);
    expect_differ(what, &before, &after);
    reference_id(p, &ref);
    expect_id(what, &after, &ref);
    poke(p, offs[i], old);
    compute(p, &after);
    expect_id("the byte put back", &after, &before);
  }
  /* The documented limit: a byte between two samples goes unnoticed. */
  uint64_t gap = block_off(size, 5) + NC_IMGID_BLOCK_BYTES + 10;
  assert_true(gap < block_off(size, 6));
  poke(p, gap, (uint8_t)(peek(p, gap) ^ 0xff));
  compute(p, &after);
  expect_id("a byte changed outside the samples", &after, &before);
}

static void test_small_file_is_hashed_whole(void **state) {
  (void)state;
  char p[200];
  path_of(p, sizeof p, "small");
  write_file(p, 3 * MiB + 1, 9);
  struct nc_imgid before, after;
  compute(p, &before);
  for (uint64_t off = 0; off < 3 * MiB + 1; off += 333 * 1024 + 7) {
    uint8_t old = peek(p, off);
    poke(p, off, (uint8_t)(old + 1));
    compute(p, &after);
    expect_differ("a byte changed in a file under 5 MiB", &before, &after);
    poke(p, off, old);
  }
}

static void test_size_changes_id(void **state) {
  (void)state;
  char a[200], b[200];
  path_of(a, sizeof a, "a");
  path_of(b, sizeof b, "b");
  struct nc_imgid ia, ib;
  /* Equal samples but for the size: a hole-filled file and one byte more
   * of holes (zeros everywhere). */
  int fa = open(a, O_WRONLY | O_CREAT | O_TRUNC, 0600), fb = open(b, O_WRONLY | O_CREAT, 0600);
  assert_int_equal(ftruncate(fa, (off_t)(20 * MiB)), 0);
  assert_int_equal(ftruncate(fb, (off_t)(20 * MiB + 1)), 0);
  close(fa);
  close(fb);
  compute(a, &ia);
  compute(b, &ib);
  EXPECT_U64(ib.size_bytes, 20 * MiB + 1);
  expect_differ("files of 20 MiB and 20 MiB + 1 byte of zeros", &ia, &ib);
  write_file(a, 100, 1);
  write_file(b, 101, 1);
  compute(a, &ia);
  compute(b, &ib);
  expect_differ("the same first 100 bytes, one more byte", &ia, &ib);
}

static void test_empty_file(void **state) {
  (void)state;
  char a[200], b[200];
  path_of(a, sizeof a, "empty-a");
  path_of(b, sizeof b, "empty-b");
  write_file(a, 0, 0);
  write_file(b, 0, 0);
  struct nc_imgid ia, ib, one;
  compute(a, &ia);
  compute(b, &ib);
  EXPECT_U64(ia.size_bytes, 0);
  expect_id("two empty files", &ib, &ia);
  write_file(b, 1, 0);
  compute(b, &one);
  expect_differ("an empty file and a 1-byte one", &ia, &one);
}

/* 100 GiB (sparse): 5 MiB read, offsets computed without overflow, and a
 * byte in the last middle block is seen. */
static void test_huge_sparse_file(void **state) {
  (void)state;
  char p[200];
  path_of(p, sizeof p, "huge");
  uint64_t size = 100 * GiB + 12345;
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  if (ftruncate(fd, (off_t)size) != 0) {
    close(fd);
    skip(); /* a file system without 100 GiB sparse files */
  }
  close(fd);
  struct nc_imgid a, b, ref;
  int64_t t0 = nct_now_ms();
  compute(p, &a);
  int64_t took = nct_now_ms() - t0;
  if (took > 2000)
    fail_msg("the identity of a 100 GiB file took %lld ms; it reads 5 MiB", (long long)took);
  poke(p, block_off(size, NC_IMGID_BLOCKS - 2) + 5, 1);
  compute(p, &b);
  expect_differ("a byte in block 46 of a 100 GiB file", &a, &b);
  reference_id(p, &ref);
  expect_id("the 100 GiB file against the definition", &b, &ref);
}

static void test_errors(void **state) {
  (void)state;
  char p[200];
  struct nc_imgid id;
  path_of(p, sizeof p, "no-such-file");
  EXPECT_RC(nc_imgid_compute(p, &id), -ENOENT);
  EXPECT_RC(nc_imgid_compute(dir, &id), -EINVAL); /* a directory */
  EXPECT_RC(nc_imgid_compute("", &id), -EINVAL);
  EXPECT_RC(nc_imgid_compute(NULL, &id), -EINVAL);
  path_of(p, sizeof p, "fifo");
  assert_int_equal(mkfifo(p, 0600), 0);
  EXPECT_RC(nc_imgid_compute(p, &id), -EINVAL); /* and no hang waiting for a writer */
  path_of(p, sizeof p, "dir-as-parent/x");
  char f[200];
  path_of(f, sizeof f, "dir-as-parent");
  write_file(f, 10, 0);
  EXPECT_RC(nc_imgid_compute(p, &id), -ENOTDIR);
  if (geteuid() != 0) { /* root reads a mode-000 file anyway */
    path_of(p, sizeof p, "unreadable");
    write_file(p, 10, 0);
    assert_int_equal(chmod(p, 0), 0);
    EXPECT_RC(nc_imgid_compute(p, &id), -EACCES);
  }
  EXPECT_RC(nc_imgid_cache_get(NULL, "/nonexistent/base.qcow2", &id, NULL), -ENOENT);
}

/* ---- the wire form ---------------------------------------------------------- */

static void test_json(void **state) {
  (void)state;
  struct nc_imgid id = {.size_bytes = 67108864}, back;
  for (int i = 0; i < 16; i++)
    id.xxh128[i] = (uint8_t)(0xf0 + i);
  json_t *j = nc_imgid_to_json(&id);
  char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  EXPECT_STR(text, "{\"size\":67108864,\"xxh128\":\"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\"}");
  free(text);
  EXPECT_RC(nc_imgid_from_json(j, &back), 0);
  expect_id("to JSON and back", &back, &id);
  json_decref(j);
  static const char *const bad[] = {
      "null",
      "[]",
      "{}",
      "{\"size\": 1}",
      "{\"xxh128\": \"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\"}",
      "{\"size\": -1, \"xxh128\": \"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\"}",
      "{\"size\": 1.5, \"xxh128\": \"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\"}",
      "{\"size\": \"1\", \"xxh128\": \"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\"}",
      "{\"size\": 1, \"xxh128\": \"f0f1f2f3f4f5f6f7f8f9fafbfcfdfe\"}",
      "{\"size\": 1, \"xxh128\": \"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff00\"}",
      "{\"size\": 1, \"xxh128\": \"g0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\"}",
      "{\"size\": 1, \"xxh128\": 5}",
      "{\"size\": 1, \"xxh128\": \"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\", \"path\": \"/x\"}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    json_t *b = json_loads(bad[i], JSON_DECODE_ANY, NULL);
    assert_non_null(b);
    int rc = nc_imgid_from_json(b, &back);
    json_decref(b);
    if (rc != NC_E_INVALID)
      fail_msg("nc_imgid_from_json(%s) returned %d (%s), want NC_E_INVALID", bad[i], rc,
               nc_strerror(rc));
  }
  json_t *upper = json_loads("{\"size\": 1, \"xxh128\": \"F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF\"}",
                             0, NULL);
  EXPECT_RC(nc_imgid_from_json(upper, &back), 0);
  json_decref(upper);
  EXPECT_U64(back.xxh128[15], 0xff);
}

/* ---- the cache ------------------------------------------------------------- */

static void set_mtime(const char *path, time_t sec, long nsec) {
  struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void get(struct nc_imgid_cache *c, const char *path, struct nc_imgid *out,
                bool want_cached, const char *what) {
  bool cached = !want_cached;
  EXPECT_RC(nc_imgid_cache_get(c, path, out, &cached), 0);
  if (cached != want_cached)
    fail_msg("%s: %s, want %s", what, cached ? "from the cache" : "read from the file",
             want_cached ? "from the cache" : "read from the file");
}

static void test_cache(void **state) {
  (void)state;
  struct nc_imgid_cache *c = NULL;
  EXPECT_RC(nc_imgid_cache_new(0, &c), -EINVAL);
  EXPECT_RC(nc_imgid_cache_new(4097, &c), -EINVAL);
  EXPECT_RC(nc_imgid_cache_new(8, &c), 0);
  char p[200];
  path_of(p, sizeof p, "base");
  uint64_t size = 9 * MiB;
  write_file(p, size, 4);
  set_mtime(p, 1700000000, 1);
  struct nc_imgid first, again, now, ref;
  get(c, p, &first, false, "the first look");
  get(c, p, &again, true, "the second look");
  expect_id("the cached identity", &again, &first);

  /* A sampled byte changed and a new mtime: read again. */
  poke(p, NC_IMGID_HEAD_BYTES + 3, (uint8_t)(peek(p, NC_IMGID_HEAD_BYTES + 3) ^ 0x80));
  set_mtime(p, 1700000100, 0);
  get(c, p, &now, false, "after a write and a new mtime");
  expect_differ("the identity after a write", &first, &now);
  reference_id(p, &ref);
  expect_id("the new identity", &now, &ref);
  get(c, p, &again, true, "then again");
  expect_id("the cached new identity", &again, &now);

  /* Rewritten in place with its mtime put back (cp -p, rsync -t): the
   * ctime still moves, so it is read again (after a pause longer than
   * the file system's timestamp granularity). */
  nct_sleep_ms(30);
  poke(p, size - 1, (uint8_t)(peek(p, size - 1) ^ 0x80));
  set_mtime(p, 1700000100, 0);
  get(c, p, &again, false, "after a write with the mtime put back");
  expect_differ("the identity after the second write", &again, &now);

  /* Size: one byte appended. */
  int fd = open(p, O_WRONLY | O_APPEND);
  assert_int_equal(write(fd, "x", 1), 1);
  close(fd);
  set_mtime(p, 1700000100, 0);
  get(c, p, &now, false, "after growing by a byte");
  EXPECT_U64(now.size_bytes, size + 1);
  get(c, p, &now, true, "then again");

  /* Another file of the same content is another entry, same identity. */
  char q[200];
  path_of(q, sizeof q, "copy");
  write_file(q, 9 * MiB, 4);
  get(c, q, &again, false, "a copy under another name");
  expect_id("the copy", &again, &first);
  get(c, q, &again, true, "the copy again");

  /* An unreadable path is an error, and not cached. */
  path_of(q, sizeof q, "missing");
  EXPECT_RC(nc_imgid_cache_get(c, q, &again, NULL), -ENOENT);
  nc_imgid_cache_free(c);
  nc_imgid_cache_free(NULL);
}

static void test_cache_is_bounded(void **state) {
  (void)state;
  struct nc_imgid_cache *c = NULL;
  EXPECT_RC(nc_imgid_cache_new(2, &c), 0);
  char a[200], b[200], d[200];
  path_of(a, sizeof a, "a");
  path_of(b, sizeof b, "b");
  path_of(d, sizeof d, "d");
  write_file(a, 1000, 1);
  write_file(b, 1000, 2);
  write_file(d, 1000, 3);
  struct nc_imgid id;
  get(c, a, &id, false, "a, first");
  get(c, b, &id, false, "b, first");
  get(c, a, &id, true, "a, second"); /* b is now the least recently used */
  get(c, d, &id, false, "d, first (evicts b)");
  get(c, a, &id, true, "a, third");
  get(c, d, &id, true, "d, second");
  get(c, b, &id, false, "b after it was evicted");
  nc_imgid_cache_free(c);
}

struct worker {
  struct nc_imgid_cache *c;
  const char *paths[3];
  struct nc_imgid want[3];
  int bad;
};

static void *worker_main(void *arg) {
  struct worker *w = arg;
  for (int i = 0; i < 60; i++) {
    struct nc_imgid id;
    int k = i % 3;
    if (nc_imgid_cache_get(w->c, w->paths[k], &id, NULL) != 0 || !nc_imgid_equal(&id, &w->want[k]))
      w->bad++;
  }
  return NULL;
}

static void test_cache_threads(void **state) {
  (void)state;
  struct nc_imgid_cache *c = NULL;
  EXPECT_RC(nc_imgid_cache_new(2, &c), 0); /* fewer entries than files: evictions race too */
  static char p[3][200];
  struct worker w[4];
  for (int k = 0; k < 3; k++) {
    char name[8];
    snprintf(name, sizeof name, "t%d", k);
    path_of(p[k], sizeof p[k], name);
    write_file(p[k], 6 * MiB + (uint64_t)k, (uint8_t)k);
  }
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    w[i].c = c;
    w[i].bad = 0;
    for (int k = 0; k < 3; k++) {
      w[i].paths[k] = p[k];
      compute(p[k], &w[i].want[k]);
    }
    assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    EXPECT_I64(w[i].bad, 0);
  }
  nc_imgid_cache_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_same_content_same_id, setup, teardown),
      cmocka_unit_test_setup_teardown(test_known_answer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sampled_byte_changes_id, setup, teardown),
      cmocka_unit_test_setup_teardown(test_small_file_is_hashed_whole, setup, teardown),
      cmocka_unit_test_setup_teardown(test_size_changes_id, setup, teardown),
      cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_huge_sparse_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
      cmocka_unit_test(test_json),
      cmocka_unit_test_setup_teardown(test_cache, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cache_is_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cache_threads, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
