/* What only the SQLite back-end promises: the exclusive lock, the on-disk
 * format checks, automatic compaction, lease TTLs across restarts, exact
 * compaction edges for open watches, and that I/O and allocation failures
 * return an error and leave the state as it was (fault injection in the
 * spirit of SQLite's faultsim). */
#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fault_vfs.h"
#include "store/store.h"
#include "store/store_sqlite.h"
#include "store_test.h"
#include "util/clock.h"

struct fx {
  struct nc_store *s;
  struct nc_clock_manual clock;
  char dir[128];
  char path[256];
  char uri[300];
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  nc_clock_manual_init(&f->clock, 5000);
  snprintf(f->dir, sizeof f->dir, "/tmp/nc-store-sqlite-XXXXXX");
  if (!mkdtemp(f->dir)) {
    free(f);
    return -1;
  }
  snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
  snprintf(f->uri, sizeof f->uri, "sqlite:%s", f->path);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  nc_store_close(f->s);
  DIR *d = opendir(f->dir);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char p[512];
    snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
    unlink(p);
  }
  if (d)
    closedir(d);
  rmdir(f->dir);
  free(f);
  return 0;
}

static void open_default(struct fx *f) {
  EXPECT_RC(nc_store_open(f->uri, &f->clock.clock, &f->s), 0);
}

static void open_opts(struct fx *f, const char *vfs, int64_t history_revs) {
  struct nc__store_sqlite_opts o = {.vfs = vfs, .history_revs = history_revs};
  EXPECT_RC(nc__store_sqlite_open(f->path, &f->clock.clock, &o, &f->s), 0);
}

static void reopen(struct fx *f, const char *vfs) {
  nc_store_close(f->s);
  f->s = NULL;
  open_opts(f, vfs, 0);
}

static int64_t cur(struct fx *f) {
  int64_t rev = nc_store_current_rev(f->s);
  if (rev < 0)
    fail_msg("current_rev failed: %s", nc_strerror((int)rev));
  return rev;
}

/* value NULL: absent. */
static void want_value(struct fx *f, const char *key, const char *value) {
  struct nc_kv kv;
  int rc = nc_store_get(f->s, key, &kv);
  if (!value) {
    EXPECT_RC(rc, -ENOENT);
    return;
  }
  if (rc != 0)
    fail_msg("get \"%s\": %d (%s), want \"%s\"", key, rc, nc_strerror(rc), value);
  assert_string_equal(kv.value, value);
  nc_kv_free(&kv);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A raw connection beside the store: WAL lets it read while the store runs. */
static int64_t raw_int(struct fx *f, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int64_t v = -1;
  assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

/* ---- opening ---- */

static void test_second_open_is_busy(void **state) {
  struct fx *f = *state;
  open_default(f);
  assert_string_equal(nc_store_backend_name(f->s), "sqlite");
  EXPECT_RC(nc_store_put(f->s, "k", "v", 1, 0, NULL), 0);
  struct nc_store *s2 = (struct nc_store *)f; /* must be reset to NULL */
  EXPECT_RC(nc_store_open(f->uri, &f->clock.clock, &s2), -EBUSY);
  EXPECT_TRUE(s2 == NULL);

  /* Another process too (flock is per open file, so this is the daemon case). */
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct nc_store *s3 = NULL;
    int rc = nc_store_open(f->uri, NULL, &s3);
    _exit(rc == -EBUSY ? 0 : 1);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  /* The lock goes with the store. */
  nc_store_close(f->s);
  f->s = NULL;
  EXPECT_RC(nc_store_open(f->uri, &f->clock.clock, &s2), 0);
  want_value(&(struct fx){.s = s2}, "k", "v");
  nc_store_close(s2);
}

static void test_open_errors(void **state) {
  struct fx *f = *state;
  struct nc_store *s = NULL;
  char uri[400];
  snprintf(uri, sizeof uri, "sqlite:%s/no/such/dir/state.db", f->dir);
  EXPECT_RC(nc_store_open(uri, NULL, &s), -ENOENT);
  EXPECT_TRUE(s == NULL);

  /* Not a database: refused, and left as it was. */
  FILE *fp = fopen(f->path, "w");
  assert_non_null(fp);
  for (int i = 0; i < 200; i++)
    fputs("this is not sqlite\n", fp);
  fclose(fp);
  EXPECT_RC(nc_store_open(f->uri, NULL, &s), -EIO);
  EXPECT_TRUE(s == NULL);
  fp = fopen(f->path, "r");
  char line[64] = "";
  assert_non_null(fgets(line, sizeof line, fp));
  fclose(fp);
  assert_string_equal(line, "this is not sqlite\n");
  unlink(f->path);

  /* Somebody else's SQLite database gets no tables added. */
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "CREATE TABLE theirs(x)", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  EXPECT_RC(nc_store_open(f->uri, NULL, &s), -EIO);
  EXPECT_I64(raw_int(f, "SELECT count(*) FROM sqlite_schema"), 1);
  unlink(f->path);

  /* A schema from the future is refused, not "upgraded". */
  open_default(f);
  nc_store_close(f->s);
  f->s = NULL;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  EXPECT_RC(nc_store_open(f->uri, NULL, &s), -ENOTSUP);
  EXPECT_TRUE(s == NULL);
}

static void test_file_mode_and_wal(void **state) {
  struct fx *f = *state;
  open_default(f);
  EXPECT_RC(nc_store_put(f->s, "k", "v", 1, 0, NULL), 0);
  struct stat st;
  assert_int_equal(stat(f->path, &st), 0);
  EXPECT_I64(st.st_mode & 0777, 0600);
  char lock[300];
  snprintf(lock, sizeof lock, "%s.lock", f->path);
  assert_int_equal(stat(lock, &st), 0);
  EXPECT_I64(st.st_mode & 0777, 0600);
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(q), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
  sqlite3_finalize(q);
  sqlite3_close(db);
  EXPECT_I64(raw_int(f, "PRAGMA user_version"), 1);
}

static void test_memory_store(void **state) {
  (void)state;
  struct nc_store *a = NULL, *b = NULL;
  EXPECT_RC(nc_store_open("sqlite::memory:", NULL, &a), 0);
  EXPECT_RC(nc_store_open("sqlite::memory:", NULL, &b), 0); /* private, so no lock */
  EXPECT_RC(nc_store_put(a, "k", "a", 1, 0, NULL), 0);
  struct nc_kv kv;
  EXPECT_RC(nc_store_get(a, "k", &kv), 0);
  nc_kv_free(&kv);
  EXPECT_RC(nc_store_get(b, "k", &kv), -ENOENT);
  EXPECT_I64(nc_store_current_rev(b), 1);
  EXPECT_I64(nc_store_current_rev(a), 2);
  EXPECT_RC(nc__store_sqlite_exec(NULL, "SELECT 1"), -EINVAL);
  EXPECT_TRUE(nc__store_sqlite_exec(a, "this is not sql") < 0);
  nc_store_close(a);
  nc_store_close(b);
}

/* ---- leases across restarts ---- */

static void test_lease_ttl_restarts_on_reopen(void **state) {
  struct fx *f = *state;
  open_default(f);
  int64_t id = 0;
  EXPECT_RC(nc_store_lease_grant(f->s, 1000, &id), 0);
  EXPECT_RC(nc_store_put(f->s, "k", "v", 1, id, NULL), 0);
  nc_clock_manual_advance(&f->clock, 900);
  reopen(f, NULL);
  nc_clock_manual_advance(&f->clock, 999); /* 1899 ms after the grant */
  want_value(f, "k", "v");
  nc_clock_manual_advance(&f->clock, 1);
  want_value(f, "k", NULL);
  EXPECT_RC(nc_store_lease_keepalive(f->s, id), NC_E_LEASE);
  /* Ids are never reused, even across restarts. */
  int64_t id2 = 0;
  EXPECT_RC(nc_store_lease_grant(f->s, 1000, &id2), 0);
  EXPECT_TRUE(id2 > id);
}

/* With the real clock nobody calls the store: watch_next must wake itself at
 * the lease deadline, well before its own timeout. */
static void test_watch_wakes_at_lease_deadline(void **state) {
  struct fx *f = *state;
  EXPECT_RC(nc_store_open(f->uri, NULL, &f->s), 0);
  int64_t id = 0;
  EXPECT_RC(nc_store_lease_grant(f->s, 150, &id), 0);
  EXPECT_RC(nc_store_put(f->s, "k", "v", 1, id, NULL), 0);
  struct nc_store_watch *w = NULL;
  EXPECT_RC(nc_store_watch_open(f->s, "", 0, &w), 0);
  int64_t t0 = now_ms();
  struct nc_store_event ev;
  int rc = nc_store_watch_next(w, 5000, &ev);
  int64_t took = now_ms() - t0;
  nc_store_watch_close(w);
  EXPECT_RC(rc, 0);
  EXPECT_I64(ev.type, NC_EV_DELETE);
  assert_string_equal(ev.kv.key, "k");
  nc_store_event_free(&ev);
  if (took < 100 || took > 2500)
    fail_msg("expiry event came after %lld ms, want about 150", (long long)took);
}

/* ---- compaction ---- */

static void test_auto_compaction(void **state) {
  struct fx *f = *state;
  open_opts(f, NULL, 100);
  for (int i = 0; i < 300; i++)
    EXPECT_RC(nc_store_put(f->s, i % 2 ? "a" : "b", "v", 1, 0, NULL), 0);
  int64_t r = cur(f);
  EXPECT_I64(r, 301);
  /* At least the last 100 revisions are kept... */
  struct nc_store_watch *w = NULL;
  EXPECT_RC(nc_store_watch_open(f->s, "", r - 100, &w), 0);
  int n = 0;
  struct nc_store_event ev;
  while (nc_store_watch_next(w, 0, &ev) == 0) {
    nc_store_event_free(&ev);
    n++;
  }
  nc_store_watch_close(w);
  EXPECT_I64(n, 100);
  /* ...and at most 100 plus the 10% slack. */
  EXPECT_RC(nc_store_watch_open(f->s, "", r - 112, &w), NC_E_COMPACTED);
  EXPECT_RC(nc_store_watch_open(f->s, "", 1, &w), NC_E_COMPACTED);
  int64_t rows = raw_int(f, "SELECT count(*) FROM history");
  EXPECT_TRUE(rows >= 100 && rows <= 111);
  /* Data is untouched. */
  struct nc_kv kv;
  EXPECT_RC(nc_store_get(f->s, "a", &kv), 0);
  EXPECT_I64(kv.version, 150);
  nc_kv_free(&kv);
}

static void test_lagging_watch_compaction_edges(void **state) {
  struct fx *f = *state;
  open_default(f);
  EXPECT_RC(nc_store_put(f->s, "x", "0", 1, 0, NULL), 0);
  int64_t r0 = cur(f);
  struct nc_store_op ops[] = {
      {.type = NC_OP_PUT, .key = "a", .value = "1", .value_len = 1},
      {.type = NC_OP_PUT, .key = "b", .value = "2", .value_len = 1},
  };
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, ops, 2, NULL, 0, NULL, NULL), 0);
  int64_t r = r0 + 1;
  struct nc_store_watch *half = NULL, *whole = NULL, *only_a = NULL, *lag = NULL;
  EXPECT_RC(nc_store_watch_open(f->s, "", r0, &half), 0);
  EXPECT_RC(nc_store_watch_open(f->s, "", r0, &whole), 0);
  EXPECT_RC(nc_store_watch_open(f->s, "a", r0, &only_a), 0);
  EXPECT_RC(nc_store_watch_open(f->s, "", r0 - 1, &lag), 0);
  struct nc_store_event ev;
  EXPECT_RC(nc_store_watch_next(half, 0, &ev), 0);
  nc_store_event_free(&ev);
  EXPECT_RC(nc_store_watch_next(whole, 0, &ev), 0);
  nc_store_event_free(&ev);
  EXPECT_RC(nc_store_watch_next(whole, 0, &ev), 0);
  assert_string_equal(ev.kv.key, "b");
  EXPECT_I64(ev.kv.mod_rev, r);
  nc_store_event_free(&ev);
  EXPECT_RC(nc_store_watch_next(only_a, 0, &ev), 0);
  assert_string_equal(ev.kv.key, "a");
  nc_store_event_free(&ev);

  EXPECT_RC(nc_store_compact(f->s, r), 0);
  /* Half-way through revision r: its rest is gone. */
  EXPECT_RC(nc_store_watch_next(half, 0, &ev), NC_E_COMPACTED);
  EXPECT_RC(nc_store_watch_next(half, 0, &ev), NC_E_COMPACTED);
  EXPECT_RC(nc_store_watch_next(lag, 0, &ev), NC_E_COMPACTED);
  /* Done with revision r: nothing lost, the watch lives on. */
  EXPECT_RC(nc_store_watch_next(whole, 0, &ev), -ETIMEDOUT);
  EXPECT_RC(nc_store_watch_next(only_a, 0, &ev), -ETIMEDOUT);
  EXPECT_RC(nc_store_put(f->s, "a", "3", 1, 0, NULL), 0);
  EXPECT_RC(nc_store_watch_next(whole, 0, &ev), 0);
  assert_string_equal(ev.kv.value, "3");
  nc_store_event_free(&ev);
  EXPECT_RC(nc_store_watch_next(only_a, 0, &ev), 0);
  assert_string_equal(ev.kv.value, "3");
  nc_store_event_free(&ev);
  nc_store_watch_close(half);
  nc_store_watch_close(whole);
  nc_store_watch_close(only_a);
  nc_store_watch_close(lag);
}

/* ---- range caps ---- */

static void test_range_caps(void **state) {
  (void)state;
  struct nc_store *s = NULL;
  EXPECT_RC(nc_store_open("sqlite::memory:", NULL, &s), 0);
  /* Bytes: 65 values of 1 MiB pass NC_STORE_RANGE_BYTES_MAX. */
  char *big = malloc(NC_STORE_VALUE_MAX);
  assert_non_null(big);
  memset(big, 'v', NC_STORE_VALUE_MAX);
  char key[32];
  int nbig = NC_STORE_RANGE_BYTES_MAX / NC_STORE_VALUE_MAX + 1;
  for (int i = 0; i < nbig; i++) {
    snprintf(key, sizeof key, "big/%03d", i);
    EXPECT_RC(nc_store_put(s, key, big, NC_STORE_VALUE_MAX, 0, NULL), 0);
  }
  free(big);
  struct nc_kv_list l;
  EXPECT_RC(nc_store_range(s, "big/", 0, &l), NC_E_TOOBIG);
  EXPECT_TRUE(l.items == NULL && l.count == 0);
  EXPECT_RC(nc_store_range(s, "big/", 8, &l), 0);
  EXPECT_I64(l.count, 8);
  nc_kv_list_free(&l);

  /* Count: one past NC_STORE_RANGE_MAX with no limit is an error, not a
   * silent truncation; with a limit it is a page. */
  static struct nc_store_op ops[NC_STORE_TXN_OPS_MAX];
  static char keys[NC_STORE_TXN_OPS_MAX][32];
  for (int done = 0; done <= NC_STORE_RANGE_MAX;) {
    int n = 0;
    for (; n < NC_STORE_TXN_OPS_MAX && done <= NC_STORE_RANGE_MAX; n++, done++) {
      snprintf(keys[n], sizeof keys[n], "many/%06d", done);
      ops[n] = (struct nc_store_op){.type = NC_OP_PUT, .key = keys[n], .value = "", .value_len = 0};
    }
    EXPECT_RC(nc_store_txn(s, NULL, 0, ops, (size_t)n, NULL, 0, NULL, NULL), 0);
  }
  EXPECT_RC(nc_store_range(s, "many/", 0, &l), NC_E_TOOBIG);
  EXPECT_RC(nc_store_range(s, "many/", NC_STORE_RANGE_MAX, &l), 0);
  EXPECT_I64(l.count, NC_STORE_RANGE_MAX);
  assert_string_equal(l.items[NC_STORE_RANGE_MAX - 1].key, "many/099999");
  nc_kv_list_free(&l);
  EXPECT_RC(nc_store_range(s, "many/0", 0, &l), 0); /* 0..099999 */
  EXPECT_I64(l.count, NC_STORE_RANGE_MAX);
  nc_kv_list_free(&l);
  nc_store_close(s);
}

/* ---- faults ---- */

/* Each round writes "a" and "b" to round's value in one txn. After a
 * failure both must still hold the previous round's value. */
struct expect {
  int64_t rev;
  char val[16];
};

static void check_state(struct fx *f, const struct expect *e, const char *when) {
  int64_t rev = nc_store_current_rev(f->s);
  if (rev != e->rev)
    fail_msg("%s: revision %lld, want %lld", when, (long long)rev, (long long)e->rev);
  want_value(f, "a", e->val);
  want_value(f, "b", e->val);
}

static int write_round(struct fx *f, int round, struct expect *e) {
  char val[16];
  snprintf(val, sizeof val, "r%d", round);
  struct nc_store_op ops[] = {
      {.type = NC_OP_PUT, .key = "a", .value = val, .value_len = strlen(val)},
      {.type = NC_OP_PUT, .key = "b", .value = val, .value_len = strlen(val)},
      {.type = NC_OP_DELETE_PREFIX, .key = "junk/"},
  };
  int64_t rev = -1;
  int rc = nc_store_txn(f->s, NULL, 0, ops, 3, NULL, 0, NULL, &rev);
  if (rc == 0) {
    EXPECT_I64(rev, e->rev + 1);
    e->rev = rev;
    snprintf(e->val, sizeof e->val, "%s", val);
  }
  return rc;
}

/* Fails the nth I/O operation of the given kinds during one write, for
 * every n until the write gets through untouched, checking after each that
 * the error left the old state (or the write fully done), that the store
 * keeps working, and that a reopen recovers the same state. */
static void io_torture(struct fx *f, int kinds, bool persistent, const char *pragmas) {
  open_opts(f, FAULT_VFS_NAME, 0);
  if (pragmas)
    EXPECT_RC(nc__store_sqlite_exec(f->s, pragmas), 0);
  struct expect e = {.rev = cur(f)};
  snprintf(e.val, sizeof e.val, "none");
  EXPECT_RC(nc_store_put(f->s, "a", "none", 4, 0, NULL), 0);
  EXPECT_RC(nc_store_put(f->s, "b", "none", 4, 0, NULL), 0);
  e.rev += 2;
  int failures = 0, round = 0;
  for (int nth = 1; nth < 500; nth++) {
    fault_vfs_arm(kinds, nth, persistent);
    int rc = write_round(f, ++round, &e);
    int hits = fault_vfs_hits();
    fault_vfs_disarm();
    if (rc < 0) {
      failures++;
      EXPECT_TRUE(hits > 0);
      EXPECT_TRUE(rc == -EIO || rc == -ENOSPC || rc == -ENOMEM || rc == -EBUSY);
    }
    check_state(f, &e, "after a fault");
    /* Still usable, and what is on disk agrees. */
    EXPECT_RC(write_round(f, ++round, &e), 0);
    if (pragmas == NULL || nth % 4 == 0) {
      reopen(f, FAULT_VFS_NAME);
      if (pragmas)
        EXPECT_RC(nc__store_sqlite_exec(f->s, pragmas), 0);
      check_state(f, &e, "after reopen");
    }
    if (hits == 0)
      break; /* the write finished before the nth operation */
  }
  if (failures == 0)
    fail_msg("no injected fault ever failed a write (kinds %d)", kinds);
}

static void test_io_faults_write(void **state) {
  io_torture(*state, FAULT_WRITE, false, NULL);
}

static void test_io_faults_dead_disk(void **state) {
  io_torture(*state, FAULT_WRITE | FAULT_SYNC | FAULT_TRUNC, true, NULL);
}

static void test_io_faults_disk_full(void **state) {
  io_torture(*state, FAULT_WRITE | FAULT_FULL, true, NULL);
}

/* Checkpoint on every commit, so syncs and truncates sit on the write path. */
static void test_io_faults_checkpoint(void **state) {
  io_torture(*state, FAULT_SYNC | FAULT_TRUNC | FAULT_WRITE, false,
             "PRAGMA wal_autocheckpoint = 1");
}

/* Reads that fail return an error, never wrong data. */
static void test_io_faults_read(void **state) {
  struct fx *f = *state;
  open_opts(f, FAULT_VFS_NAME, 0);
  char key[16];
  for (int i = 0; i < 50; i++) {
    snprintf(key, sizeof key, "k/%02d", i);
    EXPECT_RC(nc_store_put(f->s, key, key, strlen(key), 0, NULL), 0);
  }
  reopen(f, FAULT_VFS_NAME); /* cold cache: reads reach the file */
  int failures = 0;
  for (int nth = 1; nth < 200; nth++) {
    struct nc_kv_list l;
    fault_vfs_arm(FAULT_READ, nth, false);
    int rc = nc_store_range(f->s, "k/", 0, &l);
    int hits = fault_vfs_hits();
    fault_vfs_disarm();
    if (rc < 0) {
      failures++;
      EXPECT_TRUE(l.items == NULL && l.count == 0);
    } else {
      EXPECT_I64(l.count, 50);
      for (size_t i = 0; i < l.count; i++)
        assert_string_equal(l.items[i].key, l.items[i].value);
      nc_kv_list_free(&l);
    }
    if (hits == 0)
      break;
    reopen(f, FAULT_VFS_NAME);
  }
  EXPECT_TRUE(failures > 0);
}

/* Out of memory inside SQLite, at every allocation of a write and a read. */
static void test_malloc_faults(void **state) {
  struct fx *f = *state;
  open_default(f);
  struct expect e = {.rev = cur(f)};
  EXPECT_RC(nc_store_put(f->s, "a", "none", 4, 0, NULL), 0);
  EXPECT_RC(nc_store_put(f->s, "b", "none", 4, 0, NULL), 0);
  e.rev += 2;
  snprintf(e.val, sizeof e.val, "none");
  int failures = 0, round = 0;
  for (int nth = 1; nth < 2000; nth++) {
    bool persistent = nth % 2 == 0;
    fault_malloc_arm(nth / 2 + 1, persistent);
    int rc = write_round(f, ++round, &e);
    struct nc_kv_list l;
    int rrc = nc_store_range(f->s, "", 0, &l);
    int hits = fault_malloc_hits();
    fault_malloc_disarm();
    if (rc < 0)
      failures++;
    if (rrc == 0)
      nc_kv_list_free(&l);
    check_state(f, &e, "after an allocation failure");
    if (hits == 0)
      break;
  }
  EXPECT_TRUE(failures > 0);
  reopen(f, NULL);
  check_state(f, &e, "after reopen");
}

/* A watch read under allocation failure delivers the right event or an
 * error, and after an error the same event comes again. */
static void test_malloc_faults_watch(void **state) {
  struct fx *f = *state;
  open_default(f);
  EXPECT_RC(nc_store_put(f->s, "a", "1", 1, 0, NULL), 0);
  int64_t r = cur(f);
  EXPECT_RC(nc_store_put(f->s, "b", "2", 1, 0, NULL), 0);
  struct nc_store_watch *w = NULL;
  EXPECT_RC(nc_store_watch_open(f->s, "", r - 1, &w), 0);
  int failures = 0, seen = 0;
  for (int nth = 1; nth < 500 && seen < 2; nth++) {
    struct nc_store_event ev;
    fault_malloc_arm(nth, false);
    int rc = nc_store_watch_next(w, 0, &ev);
    int hits = fault_malloc_hits();
    fault_malloc_disarm();
    if (rc < 0) {
      failures++;
      EXPECT_TRUE(ev.kv.key == NULL);
      continue;
    }
    EXPECT_RC(rc, 0);
    assert_string_equal(ev.kv.key, seen == 0 ? "a" : "b");
    assert_string_equal(ev.kv.value, seen == 0 ? "1" : "2");
    EXPECT_I64(ev.kv.mod_rev, r + seen);
    nc_store_event_free(&ev);
    seen++;
    if (hits == 0 && seen == 1)
      nth = 0; /* the second event gets its own sweep */
  }
  EXPECT_I64(seen, 2);
  EXPECT_TRUE(failures > 0);
  nc_store_watch_close(w);
}

/* Lease expiry that fails part-way (allocation or I/O) is atomic: either
 * the lease's keys went in one revision or nothing happened, and the next
 * call finishes the job. arm(nth) arms the injector; hits() reads it. */
static void lease_expiry_torture(struct fx *f, void (*arm)(int), int (*hits)(void),
                                 void (*disarm)(void)) {
  int failures = 0;
  for (int nth = 1; nth < 2000; nth++) {
    int64_t id = 0;
    EXPECT_RC(nc_store_lease_grant(f->s, 10, &id), 0);
    EXPECT_RC(nc_store_put(f->s, "l/1", "v", 1, id, NULL), 0);
    EXPECT_RC(nc_store_put(f->s, "l/2", "v", 1, id, NULL), 0);
    int64_t r = cur(f);
    nc_clock_manual_advance(&f->clock, 10);
    arm(nth);
    int rc = nc_store_put(f->s, "x", "y", 1, 0, NULL); /* expiry runs first */
    int h = hits();
    disarm();
    if (rc < 0)
      failures++;
    want_value(f, "l/1", NULL);
    want_value(f, "l/2", NULL);
    EXPECT_I64(cur(f), r + 1 + (rc == 0));
    struct nc_store_watch *w = NULL;
    struct nc_store_event ev;
    EXPECT_RC(nc_store_watch_open(f->s, "", r, &w), 0);
    for (int i = 0; i < 2; i++) {
      EXPECT_RC(nc_store_watch_next(w, 0, &ev), 0);
      EXPECT_I64(ev.type, NC_EV_DELETE);
      EXPECT_I64(ev.kv.mod_rev, r + 1);
      assert_string_equal(ev.kv.key, i == 0 ? "l/1" : "l/2");
      nc_store_event_free(&ev);
    }
    if (rc == 0) {
      EXPECT_RC(nc_store_watch_next(w, 0, &ev), 0);
      assert_string_equal(ev.kv.key, "x");
      nc_store_event_free(&ev);
    }
    EXPECT_RC(nc_store_watch_next(w, 0, &ev), -ETIMEDOUT);
    nc_store_watch_close(w);
    EXPECT_RC(nc_store_lease_keepalive(f->s, id), NC_E_LEASE);
    if (h == 0)
      break;
  }
  EXPECT_TRUE(failures > 0);
}

static void arm_malloc(int nth) { fault_malloc_arm(nth, false); }
static void arm_io(int nth) { fault_vfs_arm(FAULT_WRITE | FAULT_SYNC, nth, true); }

static void test_malloc_faults_lease_expiry(void **state) {
  struct fx *f = *state;
  open_default(f);
  lease_expiry_torture(f, arm_malloc, fault_malloc_hits, fault_malloc_disarm);
}

static void test_io_faults_lease_expiry(void **state) {
  struct fx *f = *state;
  open_opts(f, FAULT_VFS_NAME, 0);
  lease_expiry_torture(f, arm_io, fault_vfs_hits, fault_vfs_disarm);
}

/* Opening cleans up after an allocation failure at any point. */
static void test_malloc_faults_open(void **state) {
  struct fx *f = *state;
  open_default(f);
  EXPECT_RC(nc_store_put(f->s, "a", "x", 1, 0, NULL), 0);
  nc_store_close(f->s);
  f->s = NULL;
  /* Capture the log: running out of memory must never be reported as a
   * damaged database (an operator would move a good file aside). */
  char log_path[300];
  snprintf(log_path, sizeof log_path, "%s/log", f->dir);
  fflush(stderr);
  int saved = dup(2);
  int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(saved >= 0 && log_fd >= 0);
  dup2(log_fd, 2);
  close(log_fd);
  int failures = 0;
  for (int nth = 1; nth < 2000; nth++) {
    struct nc_store *s = NULL;
    fault_malloc_arm(nth, false);
    int rc = nc_store_open(f->uri, &f->clock.clock, &s);
    int hits = fault_malloc_hits();
    fault_malloc_disarm();
    if (rc < 0) {
      failures++;
      EXPECT_TRUE(s == NULL);
    } else {
      struct fx g = {.s = s};
      want_value(&g, "a", "x");
      nc_store_close(s);
    }
    if (hits == 0)
      break;
  }
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  EXPECT_TRUE(failures > 0);
  FILE *lf = fopen(log_path, "r");
  assert_non_null(lf);
  char line[2048];
  int lines = 0;
  while (fgets(line, sizeof line, lf)) {
    lines++;
    if (strstr(line, "damaged") || strstr(line, "not a NovaCron"))
      fail_msg("out of memory reported as a bad database: %s", line);
  }
  fclose(lf);
  EXPECT_TRUE(lines >= failures); /* the capture really captured */
}

/* A "full disk" made with max_page_count on the store's own connection. */
static void test_disk_full_pragma(void **state) {
  struct fx *f = *state;
  open_default(f);
  EXPECT_RC(nc_store_put(f->s, "first", "1", 1, 0, NULL), 0);
  int64_t pages = raw_int(f, "PRAGMA page_count");
  assert_true(pages > 0);
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages + 16);
  EXPECT_RC(nc__store_sqlite_exec(f->s, sql), 0);

  static char val[16384];
  memset(val, 'x', sizeof val);
  char key[16];
  int ok = 0, rc = 0;
  int64_t rev = cur(f);
  for (int i = 0; i < 100; i++) {
    snprintf(key, sizeof key, "fill/%02d", i);
    rc = nc_store_put(f->s, key, val, sizeof val, 0, NULL);
    if (rc < 0)
      break;
    ok++;
  }
  EXPECT_RC(rc, -ENOSPC);
  EXPECT_TRUE(ok > 0);
  EXPECT_I64(cur(f), rev + ok);
  want_value(f, key, NULL); /* the failed put left nothing */
  struct nc_kv_list l;
  EXPECT_RC(nc_store_range(f->s, "fill/", 0, &l), 0);
  EXPECT_I64(l.count, ok);
  nc_kv_list_free(&l);
  /* Room again: the store carries on where it was. */
  EXPECT_RC(nc__store_sqlite_exec(f->s, "PRAGMA max_page_count = 1073741823"), 0);
  EXPECT_RC(nc_store_put(f->s, key, "late", 4, 0, NULL), 0);
  EXPECT_I64(cur(f), rev + ok + 1);
  reopen(f, NULL);
  EXPECT_I64(cur(f), rev + ok + 1);
  want_value(f, key, "late");
}

int main(void) {
  /* SQLite's allocator can only be wrapped before SQLite initialises. */
  if (fault_malloc_install() != SQLITE_OK || fault_vfs_register() != SQLITE_OK) {
    fprintf(stderr, "cannot install SQLite fault injection\n");
    return 1;
  }
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_second_open_is_busy),
      T(test_open_errors),
      T(test_file_mode_and_wal),
      T(test_memory_store),
      T(test_lease_ttl_restarts_on_reopen),
      T(test_watch_wakes_at_lease_deadline),
      T(test_auto_compaction),
      T(test_lagging_watch_compaction_edges),
      T(test_range_caps),
      T(test_io_faults_write),
      T(test_io_faults_dead_disk),
      T(test_io_faults_disk_full),
      T(test_io_faults_checkpoint),
      T(test_io_faults_read),
      T(test_malloc_faults),
      T(test_malloc_faults_open),
      T(test_malloc_faults_watch),
      T(test_malloc_faults_lease_expiry),
      T(test_io_faults_lease_expiry),
      T(test_disk_full_pragma),
  };
#undef T
  return cmocka_run_group_tests_name("store_sqlite", tests, NULL, NULL);
}
