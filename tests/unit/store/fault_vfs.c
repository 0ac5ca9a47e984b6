#include "fault_vfs.h"

#include <sqlite3.h>
#include <string.h>

/* ---- a failure plan, shared by both injectors ---- */

struct plan {
  int kinds;
  int countdown; /* 0 = disarmed */
  bool persistent;
  bool tripped;
  int hits;
};

static struct plan g_io, g_mem;

static void plan_arm(struct plan *p, int kinds, int nth, bool persistent) {
  *p = (struct plan){.kinds = kinds, .countdown = nth > 0 ? nth : 1, .persistent = persistent};
}

/* Whether this operation of kind k must fail. */
static bool plan_fail(struct plan *p, int k) {
  if (!(p->kinds & k))
    return false;
  if (p->tripped && p->persistent) {
    p->hits++;
    return true;
  }
  if (p->countdown == 0)
    return false;
  if (--p->countdown > 0)
    return false;
  p->tripped = true;
  p->hits++;
  return true;
}

/* ---- the VFS ---- */

struct ffile {
  sqlite3_file base;
  sqlite3_file *real; /* follows this struct in the same allocation */
};

static sqlite3_vfs *g_real;
static sqlite3_vfs g_vfs;
static sqlite3_io_methods g_io_methods;

#define REAL(f) (((struct ffile *)(f))->real)

static int f_close(sqlite3_file *f) { return REAL(f)->pMethods->xClose(REAL(f)); }

static int f_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
  if (plan_fail(&g_io, FAULT_READ))
    return SQLITE_IOERR_READ;
  return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int f_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off) {
  if (plan_fail(&g_io, FAULT_WRITE))
    return (g_io.kinds & FAULT_FULL) ? SQLITE_FULL : SQLITE_IOERR_WRITE;
  return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}

static int f_truncate(sqlite3_file *f, sqlite3_int64 size) {
  if (plan_fail(&g_io, FAULT_TRUNC))
    return SQLITE_IOERR_TRUNCATE;
  return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int f_sync(sqlite3_file *f, int flags) {
  if (plan_fail(&g_io, FAULT_SYNC))
    return SQLITE_IOERR_FSYNC;
  return REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int f_size(sqlite3_file *f, sqlite3_int64 *size) {
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int f_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int f_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int f_check_lock(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_fcntl(sqlite3_file *f, int op, void *arg) {
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int f_devchar(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp) {
  return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int f_shm_lock(sqlite3_file *f, int off, int n, int flags) {
  return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void f_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int f_shm_unmap(sqlite3_file *f, int del) {
  return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                  int *out_flags) {
  struct ffile *ff = (struct ffile *)file;
  ff->real = (sqlite3_file *)(ff + 1);
  memset(ff->real, 0, (size_t)g_real->szOsFile);
  int rc = g_real->xOpen(g_real, name, ff->real, flags, out_flags);
  if (rc != SQLITE_OK) {
    if (ff->real->pMethods)
      ff->real->pMethods->xClose(ff->real);
    ff->base.pMethods = NULL;
    return rc;
  }
  ff->base.pMethods = &g_io_methods;
  return SQLITE_OK;
}

static int v_delete(sqlite3_vfs *v, const char *name, int sync) {
  return g_real->xDelete(g_real, name, sync);
}
static int v_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  return g_real->xAccess(g_real, name, flags, out);
}
static int v_full(sqlite3_vfs *v, const char *name, int n, char *out) {
  return g_real->xFullPathname(g_real, name, n, out);
}
static void *v_dlopen(sqlite3_vfs *v, const char *name) { return g_real->xDlOpen(g_real, name); }
static void v_dlerror(sqlite3_vfs *v, int n, char *msg) { g_real->xDlError(g_real, n, msg); }
static void (*v_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void) {
  return g_real->xDlSym(g_real, h, sym);
}
static void v_dlclose(sqlite3_vfs *v, void *h) { g_real->xDlClose(g_real, h); }
static int v_random(sqlite3_vfs *v, int n, char *out) { return g_real->xRandomness(g_real, n, out); }
static int v_sleep(sqlite3_vfs *v, int us) { return g_real->xSleep(g_real, us); }
static int v_time(sqlite3_vfs *v, double *out) { return g_real->xCurrentTime(g_real, out); }
static int v_lasterr(sqlite3_vfs *v, int n, char *out) {
  return g_real->xGetLastError(g_real, n, out);
}
static int v_time64(sqlite3_vfs *v, sqlite3_int64 *out) {
  return g_real->xCurrentTimeInt64(g_real, out);
}

int fault_vfs_register(void) {
  if (g_real)
    return SQLITE_OK;
  g_real = sqlite3_vfs_find(NULL);
  if (!g_real)
    return SQLITE_ERROR;
  g_io_methods = (sqlite3_io_methods){
      .iVersion = 2, /* with shared memory (WAL); no mmap */
      .xClose = f_close,
      .xRead = f_read,
      .xWrite = f_write,
      .xTruncate = f_truncate,
      .xSync = f_sync,
      .xFileSize = f_size,
      .xLock = f_lock,
      .xUnlock = f_unlock,
      .xCheckReservedLock = f_check_lock,
      .xFileControl = f_fcntl,
      .xSectorSize = f_sector,
      .xDeviceCharacteristics = f_devchar,
      .xShmMap = f_shm_map,
      .xShmLock = f_shm_lock,
      .xShmBarrier = f_shm_barrier,
      .xShmUnmap = f_shm_unmap,
  };
  g_vfs = (sqlite3_vfs){
      .iVersion = 2,
      .szOsFile = (int)sizeof(struct ffile) + g_real->szOsFile,
      .mxPathname = g_real->mxPathname,
      .zName = FAULT_VFS_NAME,
      .xOpen = v_open,
      .xDelete = v_delete,
      .xAccess = v_access,
      .xFullPathname = v_full,
      .xDlOpen = v_dlopen,
      .xDlError = v_dlerror,
      .xDlSym = v_dlsym,
      .xDlClose = v_dlclose,
      .xRandomness = v_random,
      .xSleep = v_sleep,
      .xCurrentTime = v_time,
      .xGetLastError = v_lasterr,
      .xCurrentTimeInt64 = v_time64,
  };
  return sqlite3_vfs_register(&g_vfs, 0);
}

void fault_vfs_arm(int kinds, int nth, bool persistent) { plan_arm(&g_io, kinds, nth, persistent); }
void fault_vfs_disarm(void) { g_io = (struct plan){0}; }
int fault_vfs_hits(void) { return g_io.hits; }

/* ---- the allocator ---- */

static sqlite3_mem_methods g_mem_real;

static void *m_malloc(int n) {
  if (plan_fail(&g_mem, 1))
    return NULL;
  return g_mem_real.xMalloc(n);
}

static void *m_realloc(void *p, int n) {
  if (plan_fail(&g_mem, 1))
    return NULL;
  return g_mem_real.xRealloc(p, n);
}

static void m_free(void *p) { g_mem_real.xFree(p); }
static int m_size(void *p) { return g_mem_real.xSize(p); }
static int m_roundup(int n) { return g_mem_real.xRoundup(n); }
static int m_init(void *d) { return g_mem_real.xInit(d); }
static void m_shutdown(void *d) { g_mem_real.xShutdown(d); }

int fault_malloc_install(void) {
  int rc = sqlite3_config(SQLITE_CONFIG_GETMALLOC, &g_mem_real);
  if (rc != SQLITE_OK)
    return rc;
  static sqlite3_mem_methods wrap;
  wrap = g_mem_real;
  wrap.xMalloc = m_malloc;
  wrap.xRealloc = m_realloc;
  wrap.xFree = m_free;
  wrap.xSize = m_size;
  wrap.xRoundup = m_roundup;
  wrap.xInit = m_init;
  wrap.xShutdown = m_shutdown;
  return sqlite3_config(SQLITE_CONFIG_MALLOC, &wrap);
}

void fault_malloc_arm(int nth, bool persistent) { plan_arm(&g_mem, 1, nth, persistent); }
void fault_malloc_disarm(void) { g_mem = (struct plan){0}; }
int fault_malloc_hits(void) { return g_mem.hits; }
