/* Fault injection under SQLite, for the store's fault tests (in the spirit
 * of SQLite's own test_vfs.c / faultsim): a pass-through VFS named
 * "ncfault" that fails the Nth file operation of chosen kinds, and an
 * allocator wrapper that fails the Nth SQLite allocation.
 * Not thread-safe; the fault tests drive the store from one thread. */
#ifndef NC_TESTS_FAULT_VFS_H
#define NC_TESTS_FAULT_VFS_H

#include <stdbool.h>

#define FAULT_VFS_NAME "ncfault"

enum {
  FAULT_WRITE = 1 << 0, /* xWrite fails with SQLITE_IOERR_WRITE */
  FAULT_SYNC = 1 << 1,  /* xSync with SQLITE_IOERR_FSYNC */
  FAULT_TRUNC = 1 << 2, /* xTruncate with SQLITE_IOERR_TRUNCATE */
  FAULT_READ = 1 << 3,  /* xRead with SQLITE_IOERR_READ */
  FAULT_FULL = 1 << 4,  /* with FAULT_WRITE: fail with SQLITE_FULL instead */
};

/* Registers "ncfault" over the default VFS (not as the default). */
int fault_vfs_register(void);
/* From now on, the nth matching operation (1 = the next) fails; with
 * persistent, every later one fails too, like a disk that died. */
void fault_vfs_arm(int kinds, int nth, bool persistent);
void fault_vfs_disarm(void);
/* Operations failed since the last arm. */
int fault_vfs_hits(void);

/* Wraps SQLite's allocator. Must run before SQLite initialises (before any
 * store is opened). Returns 0 or an SQLite error code. */
int fault_malloc_install(void);
/* Like fault_vfs_arm, for allocations (xMalloc and xRealloc). */
void fault_malloc_arm(int nth, bool persistent);
void fault_malloc_disarm(void);
int fault_malloc_hits(void);

#endif
