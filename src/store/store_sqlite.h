/* The SQLite back-end's constructor and test hooks. Internal to src/store/
 * and its tests; the daemon opens stores with nc_store_open("sqlite:..."). */
#ifndef NC_STORE_STORE_SQLITE_H
#define NC_STORE_STORE_SQLITE_H

#include <stdint.h>

#include "store/store.h"

/* Default number of revisions of history kept for watches. */
#define NC__STORE_SQLITE_HISTORY_REVS 10000

struct nc__store_sqlite_opts {
  const char *vfs;      /* sqlite3_vfs name; NULL = the default VFS */
  int64_t history_revs; /* revisions kept by automatic compaction; 0 = default */
};

/* Opens (creating if missing) the database at path, or a private in-memory
 * one for ":memory:". clock must not be NULL and must outlive the store;
 * opts may be NULL. Takes an exclusive flock on "<path>.lock": -EBUSY if
 * another store holds it. On success *out belongs to the caller
 * (nc_store_close). */
int nc__store_sqlite_open(const char *path, struct nc_clock *clock,
                          const struct nc__store_sqlite_opts *opts, struct nc_store **out);

/* Test hook: runs sql (no result rows) on the store's connection, e.g. a
 * PRAGMA that simulates a full disk. Returns 0 or a negative errno. */
int nc__store_sqlite_exec(struct nc_store *s, const char *sql);

#endif
