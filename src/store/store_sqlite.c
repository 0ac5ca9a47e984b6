/* The SQLite back-end: the single-node store, one file in the data dir.
 *
 * One connection, guarded by one mutex, serves every thread; SQLite's own
 * mutexes are off (SQLITE_OPEN_NOMUTEX) because ours already serialises.
 * Every write is one SQLite transaction (BEGIN IMMEDIATE ... COMMIT) that
 * also moves the revision in the meta row, so a failed write leaves no
 * trace: SQLite rolls the transaction back and nothing in memory changed.
 *
 * Durability: the database runs in WAL mode with synchronous=NORMAL. A
 * commit appends its frames to the WAL without an fsync; the WAL is synced
 * at checkpoints. So a crash of novacrond (kill -9, OOM, a segfault) loses
 * nothing, because committed frames are already in the kernel's page cache.
 * A power cut or kernel panic may lose the commits since the last
 * checkpoint sync, but never corrupts the file and never reorders: WAL
 * recovery stops at the first frame whose cumulative checksum fails, so
 * what survives is a prefix of history. We accept that on a single node
 * because the same power cut kills every guest on the host, and the daemon
 * reconciles stored state against the QEMU processes it finds at start-up;
 * synchronous=FULL would cost an fsync per write (milliseconds), which
 * throttles every watch-driven control loop. Cluster state, where a lost
 * write could give a VM two owners, lives in etcd, which fsyncs each entry.
 *
 * Leases: expiry deadlines are in the store clock's monotonic milliseconds,
 * which mean nothing after a restart; at open every lease gets its full TTL
 * again (what etcd does when a new leader takes over). Expiry is lazy: every
 * call first revokes the leases whose deadline passed, and watch_next also
 * wakes at the next deadline. With a manual clock, time moves only when the
 * test says so, which makes lease tests deterministic.
 *
 * Watches read the history table; a condition variable, broadcast after
 * each commit, wakes blocked watch_next calls. History is compacted
 * automatically in the commit that crosses history_revs (+10%), and on
 * request. */
#include "store/store_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "store/store_backend.h"
#include "util/err.h"
#include "util/log.h"

#define COMPONENT "store"

/* The on-disk format, version SCHEMA_VERSION (PRAGMA user_version).
 * Changing any table, column or the meaning of a value breaks
 * compatibility: bump SCHEMA_VERSION and add a migration in schema_init.
 *
 *  meta     one row (id 0): rev = current revision, 1 in a new store as in
 *           etcd (so that no real revision is 0, which watch_open reads as
 *           "now"); compact_rev = history at and below it is gone.
 *  kv       the current keys. Keys and values are BLOBs, always bound as
 *           BLOBs, so SQLite orders and compares them with memcmp (a TEXT
 *           and a BLOB never compare by content).
 *  history  one row per event: (rev, sub) = revision and position within
 *           it; type HIST_PUT or HIST_DELETE; for a put the key's value,
 *           create_rev, version and lease after the put; for a delete the
 *           value is NULL and the numbers 0.
 *  leases   id (AUTOINCREMENT: an id is never reused, so a stale id held by
 *           a client can never name a newer lease), ttl_ms, and expiry_ms in
 *           the store clock's monotonic time, rewritten at every open. */
#define SCHEMA_VERSION 1
#define HIST_PUT 0    /* on disk; never renumber */
#define HIST_DELETE 1 /* on disk; never renumber */

static const char schema_sql[] =
    "CREATE TABLE meta(id INTEGER PRIMARY KEY CHECK (id = 0),"
    " rev INTEGER NOT NULL, compact_rev INTEGER NOT NULL);"
    "INSERT INTO meta VALUES (0, 1, 0);"
    "CREATE TABLE kv(key BLOB NOT NULL PRIMARY KEY, value BLOB NOT NULL,"
    " create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL,"
    " version INTEGER NOT NULL, lease INTEGER NOT NULL);"
    "CREATE INDEX kv_by_lease ON kv(lease) WHERE lease <> 0;"
    "CREATE TABLE history(rev INTEGER NOT NULL, sub INTEGER NOT NULL,"
    " type INTEGER NOT NULL, key BLOB NOT NULL, value BLOB,"
    " create_rev INTEGER NOT NULL, version INTEGER NOT NULL,"
    " lease INTEGER NOT NULL, PRIMARY KEY (rev, sub));"
    "CREATE TABLE leases(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " ttl_ms INTEGER NOT NULL, expiry_ms INTEGER NOT NULL);"
    "CREATE INDEX leases_by_expiry ON leases(expiry_ms);"
    "PRAGMA user_version = 1;";

/* Prepared once at open, reused under the mutex. */
enum {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_META_GET,
  ST_META_SET_REV,
  ST_META_SET_COMPACT,
  ST_KV_GET,
  ST_KV_META,
  ST_KV_PUT,
  ST_KV_DEL,
  ST_KV_RANGE,
  ST_KV_RANGE_KEYS,
  ST_KV_DEL_RANGE,
  ST_KV_LEASE_KEYS,
  ST_KV_DEL_LEASE,
  ST_HIST_PUT,
  ST_HIST_NEXT,
  ST_HIST_MORE_AT,
  ST_HIST_COMPACT,
  ST_LEASE_NEW,
  ST_LEASE_GET,
  ST_LEASE_KEEPALIVE,
  ST_LEASE_DEL,
  ST_LEASE_EXPIRED,
  ST_LEASE_MIN,
  ST__COUNT
};

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_META_GET] = "SELECT rev, compact_rev FROM meta WHERE id = 0",
    [ST_META_SET_REV] = "UPDATE meta SET rev = ?1 WHERE id = 0",
    [ST_META_SET_COMPACT] = "UPDATE meta SET compact_rev = ?1 WHERE id = 0",
    [ST_KV_GET] = "SELECT value, create_rev, mod_rev, version, lease FROM kv WHERE key = ?1",
    [ST_KV_META] = "SELECT create_rev, mod_rev, version FROM kv WHERE key = ?1",
    [ST_KV_PUT] = "INSERT INTO kv(key, value, create_rev, mod_rev, version, lease)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(key) DO UPDATE SET"
                  " value = excluded.value, create_rev = excluded.create_rev,"
                  " mod_rev = excluded.mod_rev, version = excluded.version,"
                  " lease = excluded.lease",
    [ST_KV_DEL] = "DELETE FROM kv WHERE key = ?1",
    [ST_KV_RANGE] = "SELECT key, value, create_rev, mod_rev, version, lease FROM kv"
                    " WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3",
    [ST_KV_RANGE_KEYS] = "SELECT key FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key",
    [ST_KV_DEL_RANGE] = "DELETE FROM kv WHERE key >= ?1 AND key < ?2",
    [ST_KV_LEASE_KEYS] = "SELECT key FROM kv WHERE lease = ?1 ORDER BY key",
    [ST_KV_DEL_LEASE] = "DELETE FROM kv WHERE lease = ?1",
    [ST_HIST_PUT] = "INSERT INTO history(rev, sub, type, key, value, create_rev, version, lease)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_HIST_NEXT] = "SELECT rev, sub, type, key, value, create_rev, version, lease"
                     " FROM history WHERE (rev, sub) > (?1, ?2) AND key >= ?3 AND key < ?4"
                     " ORDER BY rev, sub LIMIT 1",
    [ST_HIST_MORE_AT] = "SELECT 1 FROM history WHERE rev = ?1 AND sub > ?2"
                        " AND key >= ?3 AND key < ?4 LIMIT 1",
    [ST_HIST_COMPACT] = "DELETE FROM history WHERE rev <= ?1",
    [ST_LEASE_NEW] = "INSERT INTO leases(ttl_ms, expiry_ms) VALUES (?1, ?2)",
    [ST_LEASE_GET] = "SELECT ttl_ms, expiry_ms FROM leases WHERE id = ?1",
    [ST_LEASE_KEEPALIVE] = "UPDATE leases SET expiry_ms = ?2 + ttl_ms WHERE id = ?1",
    [ST_LEASE_DEL] = "DELETE FROM leases WHERE id = ?1",
    [ST_LEASE_EXPIRED] = "SELECT id FROM leases WHERE expiry_ms <= ?1"
                         " ORDER BY expiry_ms, id LIMIT 1",
    [ST_LEASE_MIN] = "SELECT min(expiry_ms) FROM leases",
};

/* Half-open key interval [lo, hi) holding exactly the keys with a prefix.
 * With no byte left to increment (the prefix is "" or all 0xff) hi is
 * NC_STORE_KEY_MAX + 1 bytes of 0xff, above every key the caps allow. */
struct bounds {
  size_t lo_len, hi_len;
  unsigned char lo[NC_STORE_KEY_MAX];
  unsigned char hi[NC_STORE_KEY_MAX + 1];
};

struct sq_store {
  struct nc_store base; /* first */
  sqlite3 *db;
  sqlite3_stmt *st[ST__COUNT];
  pthread_mutex_t mu;         /* guards everything below and the connection */
  pthread_cond_t committed;   /* broadcast after every commit; CLOCK_MONOTONIC */
  int lock_fd;                /* flock'ed "<path>.lock"; -1 for :memory: */
  int64_t history_revs;
  int64_t next_expiry_ms;     /* cached min(leases.expiry_ms); INT64_MAX = none */
  size_t open_watches;        /* the struct lives until these are closed */
  bool closed;                /* nc_store_close ran; connection and lock gone */
  bool expiry_failing;        /* a read-side expiry failed; warned once */
};

struct sq_watch {
  struct nc_store_watch base; /* first */
  int64_t last_rev;           /* position of the last event delivered */
  int64_t last_sub;
  bool mid_rev;               /* more matching events remain at last_rev */
  struct bounds b;
};

static const struct nc_store_backend sq_backend;

/* ---- errors and small helpers ---- */

static int map_sqlite(int rc, int sys_errno) {
  switch (rc & 0xff) {
  case SQLITE_OK:
  case SQLITE_ROW:
  case SQLITE_DONE:
    return 0;
  case SQLITE_NOMEM:
    return -ENOMEM;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return -EBUSY;
  case SQLITE_FULL:
    return -ENOSPC;
  case SQLITE_READONLY:
    return -EROFS;
  case SQLITE_TOOBIG:
    return NC_E_TOOBIG;
  case SQLITE_PERM:
  case SQLITE_AUTH:
    return -EACCES;
  case SQLITE_CANTOPEN:
    return sys_errno > 0 ? -sys_errno : -EIO;
  default: /* IOERR, CORRUPT, NOTADB, ... */
    return -EIO;
  }
}

/* Logs a failed SQLite call and returns it as a negative errno. */
static int sq_fail(struct sq_store *s, int rc, const char *what) {
  int sys = s->db ? sqlite3_system_errno(s->db) : 0;
  int err = map_sqlite(rc, sys);
  nc_error(COMPONENT, "sqlite: %s failed: %s (%s, os errno %d)", what,
           s->db ? sqlite3_errmsg(s->db) : "no connection", sqlite3_errstr(rc), sys);
  if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB) {
    const char *file = s->db ? sqlite3_db_filename(s->db, "main") : NULL;
    nc_error(COMPONENT, "%s is damaged or not an SQLite file; stop novacrond and move it "
             "aside (a new one starts empty)", file && *file ? file : "the state database");
  }
  return err;
}

/* SQLite reports an allocation failure met while producing or reading a
 * row only through the connection's error code: the step still says
 * SQLITE_ROW and the column reads as NULL or 0 (sqlite3_column_blob(3),
 * "memory allocation errors"). Every row read ends with this check, or an
 * OOM could read the revision as 0. */
static int row_err(struct sq_store *s) {
  return (sqlite3_errcode(s->db) & 0xff) == SQLITE_NOMEM ? -ENOMEM : 0;
}

static int64_t real_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void prefix_bounds(const char *prefix, struct bounds *b) {
  size_t n = strlen(prefix); /* <= NC_STORE_KEY_MAX, checked by store.c */
  memcpy(b->lo, prefix, n);
  b->lo_len = n;
  while (n > 0 && (unsigned char)prefix[n - 1] == 0xff)
    n--;
  if (n == 0) {
    memset(b->hi, 0xff, sizeof b->hi);
    b->hi_len = sizeof b->hi;
    return;
  }
  memcpy(b->hi, prefix, n);
  b->hi[n - 1]++;
  b->hi_len = n;
}

static int bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n) {
  if (n == 0)
    return sqlite3_bind_zeroblob(st, i, 0); /* a NULL pointer would bind NULL */
  return sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC);
}

static int bind_bounds(sqlite3_stmt *st, int first, const struct bounds *b) {
  int rc = bind_blob(st, first, b->lo, b->lo_len);
  if (rc == SQLITE_OK)
    rc = bind_blob(st, first + 1, b->hi, b->hi_len);
  return rc;
}

static void done(sqlite3_stmt *st) {
  sqlite3_reset(st);
  sqlite3_clear_bindings(st); /* SQLITE_STATIC pointers must not outlive the call */
}

/* Copies column col into a fresh NUL-terminated buffer. Sizes come from the
 * file, so allocation failure is a clean -ENOMEM. */
static int dup_col(sqlite3_stmt *st, int col, char **out, size_t *len_out) {
  const void *p = sqlite3_column_blob(st, col);
  size_t n = (size_t)sqlite3_column_bytes(st, col);
  if (!p && n > 0)
    return -ENOMEM; /* SQLite could not materialise it */
  char *buf = malloc(n + 1);
  if (!buf)
    return -ENOMEM;
  if (n > 0)
    memcpy(buf, p, n);
  buf[n] = '\0';
  *out = buf;
  if (len_out)
    *len_out = n;
  return 0;
}

/* Runs a statement that yields no rows; binds must already be in place. */
static int run(struct sq_store *s, int id, const char *what) {
  sqlite3_stmt *st = s->st[id];
  int rc = sqlite3_step(st);
  int err = rc == SQLITE_DONE ? 0 : sq_fail(s, rc, what);
  done(st);
  return err;
}

static int sq_begin(struct sq_store *s) { return run(s, ST_BEGIN, "begin"); }

static int sq_commit(struct sq_store *s) { return run(s, ST_COMMIT, "commit"); }

/* Safe after any failure: SQLite may already have rolled back itself. */
static void sq_rollback(struct sq_store *s) {
  if (sqlite3_get_autocommit(s->db))
    return;
  int rc = sqlite3_step(s->st[ST_ROLLBACK]);
  if (rc != SQLITE_DONE)
    sq_fail(s, rc, "rollback");
  done(s->st[ST_ROLLBACK]);
}

static int meta_read(struct sq_store *s, int64_t *rev, int64_t *compact_rev) {
  sqlite3_stmt *st = s->st[ST_META_GET];
  int rc = sqlite3_step(st);
  int err = 0;
  if (rc == SQLITE_ROW) {
    *rev = sqlite3_column_int64(st, 0);
    if (compact_rev)
      *compact_rev = sqlite3_column_int64(st, 1);
    err = row_err(s);
  } else {
    err = rc == SQLITE_DONE ? -EIO : sq_fail(s, rc, "read meta");
    if (rc == SQLITE_DONE)
      nc_error(COMPONENT, "sqlite: the meta row is missing; the state database is damaged");
  }
  done(st);
  return err;
}

static int meta_set(struct sq_store *s, int id, int64_t v, const char *what) {
  sqlite3_bind_int64(s->st[id], 1, v);
  return run(s, id, what);
}

/* ---- leases ---- */

static void refresh_next_expiry(struct sq_store *s) {
  sqlite3_stmt *st = s->st[ST_LEASE_MIN];
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    s->next_expiry_ms = sqlite3_column_type(st, 0) == SQLITE_NULL
                            ? INT64_MAX
                            : sqlite3_column_int64(st, 0);
    if (row_err(s) < 0)
      s->next_expiry_ms = INT64_MIN; /* look again on the next call */
  } else {
    sq_fail(s, rc, "find next lease expiry");
    s->next_expiry_ms = INT64_MIN; /* look again on the next call */
  }
  done(st);
}

static int hist_put(struct sq_store *s, int64_t rev, int64_t sub, int type, const void *key,
                    size_t key_len, const void *value, size_t value_len, int64_t create_rev,
                    int64_t version, int64_t lease) {
  sqlite3_stmt *st = s->st[ST_HIST_PUT];
  sqlite3_bind_int64(st, 1, rev);
  sqlite3_bind_int64(st, 2, sub);
  sqlite3_bind_int(st, 3, type);
  bind_blob(st, 4, key, key_len);
  if (type == HIST_PUT)
    bind_blob(st, 5, value, value_len);
  else
    sqlite3_bind_null(st, 5);
  sqlite3_bind_int64(st, 6, create_rev);
  sqlite3_bind_int64(st, 7, version);
  sqlite3_bind_int64(st, 8, lease);
  return run(s, ST_HIST_PUT, "record event");
}

/* Drops history at and below rev. Inside the caller's transaction. */
static int compact_to(struct sq_store *s, int64_t rev) {
  sqlite3_bind_int64(s->st[ST_HIST_COMPACT], 1, rev);
  int rc = run(s, ST_HIST_COMPACT, "compact history");
  if (rc == 0)
    rc = meta_set(s, ST_META_SET_COMPACT, rev, "record compaction");
  return rc;
}

/* Ends a write that produced events at new_rev: moves the revision and
 * compacts when history has grown 10% past its bound, so the delete is
 * amortised over many commits. Inside the caller's transaction. */
static int finish_write(struct sq_store *s, int64_t new_rev, int64_t compact_rev) {
  int rc = meta_set(s, ST_META_SET_REV, new_rev, "advance revision");
  int64_t slack = s->history_revs / 10 + 1;
  if (rc == 0 && new_rev - compact_rev > s->history_revs + slack)
    rc = compact_to(s, new_rev - s->history_revs);
  return rc;
}

/* Deletes lease id and every key attached to it, in one transaction and (if
 * any key went) one revision. NC_E_LEASE if the lease does not exist. */
static int revoke_locked(struct sq_store *s, int64_t id) {
  int64_t rev = 0, compact = 0, sub = 0;
  int rc = sq_begin(s);
  if (rc < 0)
    return rc;
  sqlite3_stmt *st = s->st[ST_LEASE_GET];
  sqlite3_bind_int64(st, 1, id);
  int src = sqlite3_step(st);
  done(st);
  if (src == SQLITE_DONE) {
    rc = NC_E_LEASE;
    goto out;
  }
  if (src != SQLITE_ROW) {
    rc = sq_fail(s, src, "look up lease");
    goto out;
  }
  rc = meta_read(s, &rev, &compact);
  if (rc < 0)
    goto out;
  st = s->st[ST_KV_LEASE_KEYS];
  sqlite3_bind_int64(st, 1, id);
  while ((src = sqlite3_step(st)) == SQLITE_ROW) {
    const void *key = sqlite3_column_blob(st, 0);
    size_t key_len = (size_t)sqlite3_column_bytes(st, 0);
    rc = row_err(s);
    if (rc == 0)
      rc = hist_put(s, rev + 1, sub++, HIST_DELETE, key, key_len, NULL, 0, 0, 0, 0);
    if (rc < 0)
      break;
  }
  if (rc == 0 && src != SQLITE_DONE)
    rc = sq_fail(s, src, "list lease keys");
  done(st);
  if (rc < 0)
    goto out;
  if (sub > 0) {
    sqlite3_bind_int64(s->st[ST_KV_DEL_LEASE], 1, id);
    rc = run(s, ST_KV_DEL_LEASE, "delete lease keys");
    if (rc == 0)
      rc = finish_write(s, rev + 1, compact);
    if (rc < 0)
      goto out;
  }
  sqlite3_bind_int64(s->st[ST_LEASE_DEL], 1, id);
  rc = run(s, ST_LEASE_DEL, "delete lease");
  if (rc == 0)
    rc = sq_commit(s);
out:
  if (rc < 0) {
    sq_rollback(s);
  } else if (sub > 0) {
    pthread_cond_broadcast(&s->committed);
  }
  refresh_next_expiry(s);
  return rc;
}

/* Revokes every lease whose deadline has passed on the store clock. */
static int expire_locked(struct sq_store *s) {
  int64_t now = nc_mono_ms(s->base.clock);
  while (s->next_expiry_ms <= now) {
    sqlite3_stmt *st = s->st[ST_LEASE_EXPIRED];
    sqlite3_bind_int64(st, 1, now);
    int rc = sqlite3_step(st);
    int64_t id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    int err = rc == SQLITE_ROW ? row_err(s) : 0;
    done(st);
    if (err < 0)
      return err;
    if (rc == SQLITE_DONE) {
      refresh_next_expiry(s);
      if (s->next_expiry_ms == INT64_MIN)
        return -EIO;
      if (s->next_expiry_ms <= now)
        return -EIO; /* the two queries disagree; never spin */
      break;
    }
    if (rc != SQLITE_ROW)
      return sq_fail(s, rc, "find expired lease");
    rc = revoke_locked(s, id);
    if (rc < 0)
      return rc;
    nc_debug(COMPONENT, "lease %lld expired", (long long)id);
  }
  s->expiry_failing = false;
  return 0;
}

/* Reads still work when expiry cannot commit (say the disk is full): etcd
 * too keeps serving reads when it cannot write. Warn once per episode. */
static void expire_for_read(struct sq_store *s) {
  int rc = expire_locked(s);
  if (rc < 0 && !s->expiry_failing) {
    nc_warn(COMPONENT, "cannot expire leases (%s); reads may show keys of expired leases",
            nc_strerror(rc));
    s->expiry_failing = true;
  }
}

/* ---- reads ---- */

static int sq_get(struct nc_store *base, const char *key, struct nc_kv *out) {
  struct sq_store *s = (struct sq_store *)base;
  size_t key_len = strlen(key);
  pthread_mutex_lock(&s->mu);
  expire_for_read(s);
  sqlite3_stmt *st = s->st[ST_KV_GET];
  bind_blob(st, 1, key, key_len);
  int rc = sqlite3_step(st);
  int err = 0;
  if (rc == SQLITE_DONE) {
    err = -ENOENT;
  } else if (rc != SQLITE_ROW) {
    err = sq_fail(s, rc, "get");
  } else {
    out->create_rev = sqlite3_column_int64(st, 1);
    out->mod_rev = sqlite3_column_int64(st, 2);
    out->version = sqlite3_column_int64(st, 3);
    out->lease = sqlite3_column_int64(st, 4);
    err = dup_col(st, 0, &out->value, &out->value_len);
    if (err == 0)
      err = row_err(s);
    if (err == 0) {
      out->key = strdup(key);
      if (!out->key)
        err = -ENOMEM;
    }
  }
  done(st);
  pthread_mutex_unlock(&s->mu);
  if (err < 0)
    nc_kv_free(out);
  return err;
}

static int sq_range(struct nc_store *base, const char *prefix, size_t limit,
                    struct nc_kv_list *out) {
  struct sq_store *s = (struct sq_store *)base;
  struct bounds b;
  prefix_bounds(prefix, &b);
  /* Ask for one row past the cap so that "no limit" can tell overflow. */
  bool capped = limit == 0 || limit > NC_STORE_RANGE_MAX;
  size_t want = capped ? NC_STORE_RANGE_MAX : limit;
  size_t cap = 0, bytes = 0;
  int err = 0;

  pthread_mutex_lock(&s->mu);
  expire_for_read(s);
  err = meta_read(s, &out->rev, NULL);
  if (err < 0)
    goto out;
  sqlite3_stmt *st = s->st[ST_KV_RANGE];
  bind_bounds(st, 1, &b);
  sqlite3_bind_int64(st, 3, (int64_t)want + (capped ? 1 : 0));
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (out->count == want) {
      nc_warn(COMPONENT, "range \"%s\": more than %d keys; use a limit or a longer prefix",
              prefix, NC_STORE_RANGE_MAX);
      err = NC_E_TOOBIG;
      break;
    }
    if (out->count == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      if (ncap > want)
        ncap = want;
      struct nc_kv *items = realloc(out->items, ncap * sizeof *items);
      if (!items) {
        err = -ENOMEM;
        break;
      }
      out->items = items;
      cap = ncap;
    }
    struct nc_kv *kv = &out->items[out->count];
    memset(kv, 0, sizeof *kv);
    out->count++;
    size_t key_len = 0;
    err = dup_col(st, 0, &kv->key, &key_len);
    if (err == 0)
      err = dup_col(st, 1, &kv->value, &kv->value_len);
    if (err < 0)
      break;
    kv->create_rev = sqlite3_column_int64(st, 2);
    kv->mod_rev = sqlite3_column_int64(st, 3);
    kv->version = sqlite3_column_int64(st, 4);
    kv->lease = sqlite3_column_int64(st, 5);
    err = row_err(s);
    if (err < 0)
      break;
    bytes += key_len + kv->value_len;
    if (bytes > NC_STORE_RANGE_BYTES_MAX) {
      nc_warn(COMPONENT, "range \"%s\": more than %d bytes; use a limit or a longer prefix",
              prefix, NC_STORE_RANGE_BYTES_MAX);
      err = NC_E_TOOBIG;
      break;
    }
  }
  if (err == 0 && rc != SQLITE_DONE)
    err = sq_fail(s, rc, "range");
  done(st);
out:
  pthread_mutex_unlock(&s->mu);
  if (err < 0)
    nc_kv_list_free(out);
  return err;
}

static int64_t sq_current_rev(struct nc_store *base) {
  struct sq_store *s = (struct sq_store *)base;
  int64_t rev = 0;
  pthread_mutex_lock(&s->mu);
  expire_for_read(s);
  int err = meta_read(s, &rev, NULL);
  pthread_mutex_unlock(&s->mu);
  return err < 0 ? err : rev;
}

/* ---- writes ---- */

static bool cmp_holds(enum nc_store_cmp_op op, int c) {
  switch (op) {
  case NC_CMP_EQ:
    return c == 0;
  case NC_CMP_NE:
    return c != 0;
  case NC_CMP_LT:
    return c < 0;
  case NC_CMP_GT:
    return c > 0;
  }
  return false;
}

/* etcd's applyCompare: numbers of an absent key are 0; a value compare on
 * an absent key is false whatever the op. Values compare as bytes.Compare. */
static int eval_cmp(struct sq_store *s, const struct nc_store_cmp *c, bool *holds) {
  bool is_value = c->target == NC_CMP_VALUE;
  sqlite3_stmt *st = s->st[is_value ? ST_KV_GET : ST_KV_META];
  bind_blob(st, 1, c->key, strlen(c->key));
  int rc = sqlite3_step(st);
  int err = 0;
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    err = sq_fail(s, rc, "read key for compare");
  } else if (is_value) {
    if (rc == SQLITE_DONE) {
      *holds = false;
    } else {
      const void *v = sqlite3_column_blob(st, 0);
      size_t n = (size_t)sqlite3_column_bytes(st, 0);
      err = row_err(s);
      if (err == 0 && !v && n > 0)
        err = -ENOMEM;
      if (err == 0) {
        size_t m = n < c->value_len ? n : c->value_len;
        int d = m > 0 ? memcmp(v, c->value, m) : 0;
        if (d == 0)
          d = n < c->value_len ? -1 : n > c->value_len;
        *holds = cmp_holds(c->op, d);
      }
    }
  } else {
    int64_t have = 0;
    if (rc == SQLITE_ROW) {
      int col = c->target == NC_CMP_CREATE_REV ? 0 : c->target == NC_CMP_MOD_REV ? 1 : 2;
      have = sqlite3_column_int64(st, col);
      err = row_err(s);
    }
    *holds = cmp_holds(c->op, have < c->num ? -1 : have > c->num);
  }
  done(st);
  return err;
}

static int lease_exists(struct sq_store *s, int64_t id) {
  sqlite3_stmt *st = s->st[ST_LEASE_GET];
  sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  int err = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? NC_E_LEASE : sq_fail(s, rc, "find lease");
  done(st);
  return err;
}

static int apply_put(struct sq_store *s, const struct nc_store_op *op, int64_t rev,
                     int64_t *sub) {
  size_t key_len = strlen(op->key);
  int64_t create_rev = rev, version = 1;
  int err = 0;
  if (op->lease != 0) {
    err = lease_exists(s, op->lease);
    if (err < 0)
      return err;
  }
  sqlite3_stmt *st = s->st[ST_KV_META];
  bind_blob(st, 1, op->key, key_len);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    create_rev = sqlite3_column_int64(st, 0);
    version = sqlite3_column_int64(st, 2) + 1;
    err = row_err(s);
  } else if (rc != SQLITE_DONE) {
    err = sq_fail(s, rc, "read key for put");
  }
  done(st);
  if (err < 0)
    return err;
  st = s->st[ST_KV_PUT];
  bind_blob(st, 1, op->key, key_len);
  bind_blob(st, 2, op->value, op->value_len);
  sqlite3_bind_int64(st, 3, create_rev);
  sqlite3_bind_int64(st, 4, rev);
  sqlite3_bind_int64(st, 5, version);
  sqlite3_bind_int64(st, 6, op->lease);
  err = run(s, ST_KV_PUT, "put");
  if (err == 0)
    err = hist_put(s, rev, (*sub)++, HIST_PUT, op->key, key_len, op->value, op->value_len,
                   create_rev, version, op->lease);
  return err;
}

static int apply_delete(struct sq_store *s, const char *key, int64_t rev, int64_t *sub) {
  size_t key_len = strlen(key);
  bind_blob(s->st[ST_KV_DEL], 1, key, key_len);
  int err = run(s, ST_KV_DEL, "delete");
  if (err == 0 && sqlite3_changes(s->db) > 0)
    err = hist_put(s, rev, (*sub)++, HIST_DELETE, key, key_len, NULL, 0, 0, 0, 0);
  return err;
}

/* Records one delete event per key, in key order (as etcd's DeleteRange),
 * then deletes the range with one statement. */
static int apply_delete_prefix(struct sq_store *s, const char *prefix, int64_t rev,
                               int64_t *sub) {
  struct bounds b;
  prefix_bounds(prefix, &b);
  sqlite3_stmt *st = s->st[ST_KV_RANGE_KEYS];
  bind_bounds(st, 1, &b);
  int rc, err = 0;
  int64_t found = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const void *key = sqlite3_column_blob(st, 0);
    size_t key_len = (size_t)sqlite3_column_bytes(st, 0);
    err = row_err(s);
    if (err == 0)
      err = hist_put(s, rev, (*sub)++, HIST_DELETE, key, key_len, NULL, 0, 0, 0, 0);
    if (err < 0)
      break;
    found++;
  }
  if (err == 0 && rc != SQLITE_DONE)
    err = sq_fail(s, rc, "list keys to delete");
  done(st);
  if (err < 0 || found == 0)
    return err;
  bind_bounds(s->st[ST_KV_DEL_RANGE], 1, &b);
  return run(s, ST_KV_DEL_RANGE, "delete prefix");
}

static int sq_txn(struct nc_store *base, const struct nc_store_cmp *cmps, size_t ncmps,
                  const struct nc_store_op *then_ops, size_t nthen,
                  const struct nc_store_op *else_ops, size_t nelse, bool *succeeded,
                  int64_t *rev_out) {
  struct sq_store *s = (struct sq_store *)base;
  int64_t rev = 0, compact = 0, sub = 0;
  bool ok = true;
  pthread_mutex_lock(&s->mu);
  int err = expire_locked(s);
  if (err < 0)
    goto unlock;
  err = sq_begin(s);
  if (err < 0)
    goto unlock;
  err = meta_read(s, &rev, &compact);
  for (size_t i = 0; err == 0 && ok && i < ncmps; i++)
    err = eval_cmp(s, &cmps[i], &ok);
  const struct nc_store_op *ops = ok ? then_ops : else_ops;
  size_t nops = ok ? nthen : nelse;
  for (size_t i = 0; err == 0 && i < nops; i++) {
    switch (ops[i].type) {
    case NC_OP_PUT:
      err = apply_put(s, &ops[i], rev + 1, &sub);
      break;
    case NC_OP_DELETE:
      err = apply_delete(s, ops[i].key, rev + 1, &sub);
      break;
    case NC_OP_DELETE_PREFIX:
      err = apply_delete_prefix(s, ops[i].key, rev + 1, &sub);
      break;
    }
  }
  if (err == 0 && sub > 0)
    err = finish_write(s, rev + 1, compact);
  if (err == 0)
    err = sq_commit(s);
  if (err < 0) {
    sq_rollback(s);
    goto unlock;
  }
  if (sub > 0) {
    rev++;
    pthread_cond_broadcast(&s->committed);
  }
  *succeeded = ok;
  *rev_out = rev;
unlock:
  pthread_mutex_unlock(&s->mu);
  return err;
}

static int sq_compact(struct nc_store *base, int64_t rev) {
  struct sq_store *s = (struct sq_store *)base;
  int64_t cur = 0, compact = 0;
  pthread_mutex_lock(&s->mu);
  expire_for_read(s); /* compaction frees space; do not let expiry block it */
  int err = sq_begin(s);
  if (err < 0)
    goto unlock;
  err = meta_read(s, &cur, &compact);
  if (err == 0 && rev > cur)
    err = -EINVAL;
  else if (err == 0 && rev <= compact)
    err = NC_E_COMPACTED;
  if (err == 0)
    err = compact_to(s, rev);
  if (err == 0)
    err = sq_commit(s);
  if (err < 0)
    sq_rollback(s);
  else
    pthread_cond_broadcast(&s->committed); /* lagging watches now fail */
unlock:
  pthread_mutex_unlock(&s->mu);
  return err;
}

/* ---- leases ---- */

static int sq_lease_grant(struct nc_store *base, int64_t ttl_ms, int64_t *lease_out) {
  struct sq_store *s = (struct sq_store *)base;
  pthread_mutex_lock(&s->mu);
  int err = expire_locked(s);
  if (err < 0)
    goto unlock;
  int64_t expiry = nc_mono_ms(s->base.clock) + ttl_ms;
  sqlite3_stmt *st = s->st[ST_LEASE_NEW];
  sqlite3_bind_int64(st, 1, ttl_ms);
  sqlite3_bind_int64(st, 2, expiry);
  err = run(s, ST_LEASE_NEW, "grant lease"); /* one statement: its own transaction */
  if (err < 0)
    goto unlock;
  *lease_out = sqlite3_last_insert_rowid(s->db);
  if (expiry < s->next_expiry_ms)
    s->next_expiry_ms = expiry;
unlock:
  pthread_mutex_unlock(&s->mu);
  return err;
}

static int sq_lease_keepalive(struct nc_store *base, int64_t lease) {
  struct sq_store *s = (struct sq_store *)base;
  pthread_mutex_lock(&s->mu);
  int err = expire_locked(s); /* an expired lease is gone before we look */
  if (err < 0)
    goto unlock;
  sqlite3_stmt *st = s->st[ST_LEASE_KEEPALIVE];
  sqlite3_bind_int64(st, 1, lease);
  sqlite3_bind_int64(st, 2, nc_mono_ms(s->base.clock));
  err = run(s, ST_LEASE_KEEPALIVE, "keep lease alive");
  if (err == 0 && sqlite3_changes(s->db) == 0)
    err = NC_E_LEASE;
  if (err == 0)
    refresh_next_expiry(s);
unlock:
  pthread_mutex_unlock(&s->mu);
  return err;
}

static int sq_lease_revoke(struct nc_store *base, int64_t lease) {
  struct sq_store *s = (struct sq_store *)base;
  pthread_mutex_lock(&s->mu);
  int err = expire_locked(s);
  if (err == 0)
    err = revoke_locked(s, lease);
  pthread_mutex_unlock(&s->mu);
  return err;
}

/* ---- watches ---- */

static int sq_watch_open(struct nc_store *base, const char *prefix, int64_t start_rev,
                         struct nc_store_watch **out) {
  struct sq_store *s = (struct sq_store *)base;
  struct sq_watch *w = calloc(1, sizeof *w);
  if (!w)
    return -ENOMEM;
  w->base.store = base;
  prefix_bounds(prefix, &w->b);
  int64_t rev = 0, compact = 0;
  pthread_mutex_lock(&s->mu);
  expire_for_read(s);
  int err = meta_read(s, &rev, &compact);
  if (err == 0 && start_rev != 0 && start_rev < compact)
    err = NC_E_COMPACTED;
  if (err == 0) {
    w->last_rev = start_rev == 0 ? rev : start_rev;
    w->last_sub = INT64_MAX; /* all of last_rev is behind us */
    s->open_watches++;
  }
  pthread_mutex_unlock(&s->mu);
  if (err < 0) {
    free(w);
    return err;
  }
  *out = &w->base;
  return 0;
}

/* Fills ev from the history row st is on; *rev and *sub get its position. */
static int take_event(struct sq_store *s, sqlite3_stmt *st, struct nc_store_event *ev,
                      int64_t *rev, int64_t *sub) {
  *rev = sqlite3_column_int64(st, 0);
  *sub = sqlite3_column_int64(st, 1);
  bool is_put = sqlite3_column_int(st, 2) == HIST_PUT;
  ev->type = is_put ? NC_EV_PUT : NC_EV_DELETE;
  ev->kv.mod_rev = *rev;
  int err = dup_col(st, 3, &ev->kv.key, NULL);
  if (err == 0)
    err = dup_col(st, 4, &ev->kv.value, &ev->kv.value_len); /* NULL reads as "" */
  if (err == 0 && is_put) {
    ev->kv.create_rev = sqlite3_column_int64(st, 5);
    ev->kv.version = sqlite3_column_int64(st, 6);
    ev->kv.lease = sqlite3_column_int64(st, 7);
  }
  return err < 0 ? err : row_err(s);
}

/* Whether w's prefix has more events at rev after sub; decides whether a
 * compaction of exactly rev costs the watch anything. */
static int more_at_rev(struct sq_store *s, struct sq_watch *w, int64_t rev, int64_t sub,
                       bool *more) {
  sqlite3_stmt *st = s->st[ST_HIST_MORE_AT];
  sqlite3_bind_int64(st, 1, rev);
  sqlite3_bind_int64(st, 2, sub);
  bind_bounds(st, 3, &w->b);
  int rc = sqlite3_step(st);
  int err = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sq_fail(s, rc, "watch lookahead");
  *more = rc == SQLITE_ROW;
  done(st);
  return err;
}

static void wait_ms(struct sq_store *s, int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += (time_t)(ms / 1000);
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait(&s->committed, &s->mu, &ts);
}

/* The timeout is real time: a blocked thread cannot wait on a simulated
 * clock. Lease deadlines follow the store clock: the wait is cut short at
 * the next one, and each pass expires leases before it looks for events. */
static int sq_watch_next(struct nc_store_watch *wbase, int timeout_ms,
                         struct nc_store_event *out) {
  struct sq_watch *w = (struct sq_watch *)wbase;
  struct sq_store *s = (struct sq_store *)wbase->store;
  int64_t deadline = real_mono_ms() + timeout_ms;
  int err;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    if (s->closed) {
      err = -ESHUTDOWN;
      break;
    }
    expire_for_read(s);
    int64_t rev = 0, compact = 0;
    err = meta_read(s, &rev, &compact);
    if (err < 0)
      break;
    int64_t done_rev = w->mid_rev ? w->last_rev - 1 : w->last_rev;
    if (compact > done_rev) {
      err = NC_E_COMPACTED;
      break;
    }
    sqlite3_stmt *st = s->st[ST_HIST_NEXT];
    sqlite3_bind_int64(st, 1, w->last_rev);
    sqlite3_bind_int64(st, 2, w->last_sub);
    bind_bounds(st, 3, &w->b);
    int rc = sqlite3_step(st);
    int64_t ev_rev = 0, ev_sub = 0;
    bool more = false;
    if (rc == SQLITE_ROW)
      err = take_event(s, st, out, &ev_rev, &ev_sub);
    else if (rc != SQLITE_DONE)
      err = sq_fail(s, rc, "read history");
    done(st);
    if (rc == SQLITE_ROW && err == 0)
      err = more_at_rev(s, w, ev_rev, ev_sub, &more);
    if (rc == SQLITE_ROW && err == 0) {
      /* Move only once the event is surely delivered. */
      w->last_rev = ev_rev;
      w->last_sub = ev_sub;
      w->mid_rev = more;
    }
    if (rc != SQLITE_DONE)
      break;
    int64_t left = deadline - real_mono_ms();
    if (left <= 0) {
      err = -ETIMEDOUT;
      break;
    }
    if (s->next_expiry_ms != INT64_MAX) {
      int64_t until = s->next_expiry_ms - nc_mono_ms(s->base.clock);
      if (until < 1)
        until = 1;
      if (until < left)
        left = until;
    }
    wait_ms(s, left);
  }
  pthread_mutex_unlock(&s->mu);
  if (err < 0)
    nc_store_event_free(out);
  return err;
}

static void sq_free(struct sq_store *s) {
  pthread_cond_destroy(&s->committed);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

static void sq_watch_close(struct nc_store_watch *wbase) {
  struct sq_store *s = (struct sq_store *)wbase->store;
  pthread_mutex_lock(&s->mu);
  bool last = --s->open_watches == 0 && s->closed;
  pthread_mutex_unlock(&s->mu);
  free(wbase);
  if (last)
    sq_free(s);
}

/* ---- open and close ---- */

/* Lets go of the connection and the lock; the struct stays. */
static void sq_release(struct sq_store *s) {
  for (int i = 0; i < ST__COUNT; i++) {
    sqlite3_finalize(s->st[i]); /* accepts NULL */
    s->st[i] = NULL;
  }
  if (s->db) {
    int rc = sqlite3_close(s->db);
    if (rc != SQLITE_OK)
      nc_error(COMPONENT, "sqlite: close failed: %s", sqlite3_errstr(rc));
    s->db = NULL;
  }
  if (s->lock_fd >= 0)
    close(s->lock_fd); /* releases the flock */
  s->lock_fd = -1;
}

/* For a store that never finished opening: no mutex yet. */
static void sq_destroy(struct sq_store *s) {
  sq_release(s);
  free(s);
}

/* Watches still open keep the struct alive (they point at it) and fail with
 * -ESHUTDOWN from now on; the last watch_close frees it. */
static void sq_close(struct nc_store *base) {
  struct sq_store *s = (struct sq_store *)base;
  pthread_mutex_lock(&s->mu);
  sq_release(s);
  s->closed = true;
  size_t watches = s->open_watches;
  pthread_cond_broadcast(&s->committed); /* blocked watch_next calls return */
  pthread_mutex_unlock(&s->mu);
  if (watches > 0)
    nc_warn(COMPONENT, "store closed with %zu watches open; they now fail until closed",
            watches);
  else
    sq_free(s);
}

/* The flock on a sidecar file (not on the database: SQLite's own POSIX
 * locks on it would be released by any close() of another fd on that file
 * in this process) keeps a second daemon off the same data dir. O_CLOEXEC:
 * QEMU children must not inherit it. The file is never unlinked; unlinking
 * lock files races with the next locker. */
static int take_lock(const char *path, int *fd_out) {
  char lock_path[4096];
  int n = snprintf(lock_path, sizeof lock_path, "%s.lock", path);
  if (n < 0 || (size_t)n >= sizeof lock_path)
    return -ENAMETOOLONG;
  int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = -errno;
    nc_error(COMPONENT, "cannot create lock file %s: %s (does the data dir exist and is it "
             "writable?)", lock_path, strerror(-err));
    return err;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int err = errno == EWOULDBLOCK ? -EBUSY : -errno;
    if (err == -EBUSY)
      nc_error(COMPONENT, "state database %s is in use by another novacrond (%s is locked); "
               "stop it or give this one its own data dir", path, lock_path);
    else
      nc_error(COMPONENT, "cannot lock %s: %s", lock_path, strerror(-err));
    close(fd);
    return err;
  }
  *fd_out = fd;
  return 0;
}

static int exec_sql(struct sq_store *s, const char *sql, const char *what) {
  int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : sq_fail(s, rc, what);
}

/* Reads the one-row result of a PRAGMA or query into buf / *num. */
static int pragma(struct sq_store *s, const char *sql, char *buf, size_t len, int64_t *num) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK)
    return sq_fail(s, rc, sql);
  rc = sqlite3_step(st);
  int err = 0;
  if (rc == SQLITE_ROW) {
    const unsigned char *text = sqlite3_column_text(st, 0);
    if (buf && !text)
      err = -ENOMEM; /* the only way a PRAGMA row has no text */
    else if (buf)
      snprintf(buf, len, "%s", (const char *)text);
    if (num)
      *num = sqlite3_column_int64(st, 0);
    if (err == 0)
      err = row_err(s);
  } else if (rc == SQLITE_DONE) {
    nc_error(COMPONENT, "sqlite: \"%s\" returned no row", sql);
    err = -EIO;
  } else {
    err = sq_fail(s, rc, sql);
  }
  sqlite3_finalize(st);
  return err;
}

/* Runs before the statements are prepared (they need the tables), so it
 * uses plain sqlite3_exec for its transaction. */
static int schema_init(struct sq_store *s, const char *path) {
  int64_t version = 0, objects = 0;
  int err = exec_sql(s, "BEGIN IMMEDIATE", "begin schema check");
  if (err < 0)
    return err;
  err = pragma(s, "PRAGMA user_version", NULL, 0, &version);
  if (err == 0 && version == 0)
    err = pragma(s, "SELECT count(*) FROM sqlite_schema", NULL, 0, &objects);
  /* Only a truly empty file gets our schema: never add tables to somebody
   * else's database. */
  if (err == 0 && version == 0 && objects > 0) {
    nc_error(COMPONENT, "%s is an SQLite database but not a NovaCron state database; give "
             "novacrond its own file", path);
    err = -EIO;
  } else if (err == 0 && version == 0) {
    err = exec_sql(s, schema_sql, "create schema");
  } else if (err == 0 && version != SCHEMA_VERSION) {
    nc_error(COMPONENT, "state database %s has schema version %lld but this novacrond knows "
             "only %d; run a matching novacrond", path, (long long)version, SCHEMA_VERSION);
    err = -ENOTSUP;
  }
  if (err == 0)
    err = exec_sql(s, "COMMIT", "commit schema");
  if (err < 0 && !sqlite3_get_autocommit(s->db))
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return err;
}

int nc__store_sqlite_open(const char *path, struct nc_clock *clock,
                          const struct nc__store_sqlite_opts *opts, struct nc_store **out) {
  static const struct nc__store_sqlite_opts defaults = {0};
  bool in_memory = strcmp(path, ":memory:") == 0;
  char mode[32] = "";
  if (!opts)
    opts = &defaults;
  *out = NULL;
  struct sq_store *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->base.be = &sq_backend;
  s->base.clock = clock;
  s->lock_fd = -1;
  s->history_revs = opts->history_revs > 0 ? opts->history_revs : NC__STORE_SQLITE_HISTORY_REVS;

  int err = 0;
  if (!in_memory) {
    err = take_lock(path, &s->lock_fd);
    if (err < 0)
      goto fail;
    /* Create it 0600 ourselves; SQLite gives -wal and -shm the same mode. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      err = -errno;
      nc_error(COMPONENT, "cannot open state database %s: %s", path, strerror(-err));
      goto fail;
    }
    close(fd);
  }
  int rc = sqlite3_open_v2(path, &s->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           opts->vfs);
  if (rc != SQLITE_OK) {
    err = sq_fail(s, rc, "open");
    goto fail;
  }
  sqlite3_extended_result_codes(s->db, 1);
  sqlite3_busy_timeout(s->db, 2000); /* only outside readers (sqlite3 CLI) contend */
  err = pragma(s, "PRAGMA journal_mode = WAL", mode, sizeof mode, NULL);
  if (err == 0 && !in_memory && strcmp(mode, "wal") != 0) {
    nc_error(COMPONENT, "state database %s: cannot switch to WAL (journal mode \"%s\")", path,
             mode);
    err = -EIO;
  }
  if (err == 0)
    err = exec_sql(s, "PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 67108864;",
                   "set pragmas");
  if (err == 0)
    err = schema_init(s, path);
  for (int i = 0; err == 0 && i < ST__COUNT; i++) {
    rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
    if (rc != SQLITE_OK)
      err = sq_fail(s, rc, stmt_sql[i]);
  }
  if (err < 0)
    goto fail;
  /* Monotonic deadlines from a previous run mean nothing: restart TTLs. */
  sqlite3_stmt *st = NULL;
  rc = sqlite3_prepare_v2(s->db, "UPDATE leases SET expiry_ms = ?1 + ttl_ms", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, nc_mono_ms(clock));
    rc = sqlite3_step(st);
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    err = sq_fail(s, rc, "restart lease TTLs");
    goto fail;
  }
  refresh_next_expiry(s);

  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->committed, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&s->mu, NULL);
  *out = &s->base;
  return 0;

fail:
  sq_destroy(s);
  return err;
}

int nc__store_sqlite_exec(struct nc_store *base, const char *sql) {
  if (!base || base->be != &sq_backend || !sql)
    return -EINVAL;
  struct sq_store *s = (struct sq_store *)base;
  pthread_mutex_lock(&s->mu);
  int err = exec_sql(s, sql, "test hook");
  pthread_mutex_unlock(&s->mu);
  return err;
}

static const struct nc_store_backend sq_backend = {
    .version = 1,
    .name = "sqlite",
    .close = sq_close,
    .get = sq_get,
    .range = sq_range,
    .txn = sq_txn,
    .lease_grant = sq_lease_grant,
    .lease_keepalive = sq_lease_keepalive,
    .lease_revoke = sq_lease_revoke,
    .watch_open = sq_watch_open,
    .watch_next = sq_watch_next,
    .watch_close = sq_watch_close,
    .compact = sq_compact,
    .current_rev = sq_current_rev,
};
