/* Per-VM records of the last migration (hde.h, nc_hde_rec).
 * Kept with the page cache they refer to: <cache dir>/vm/<name>.rec, one
 * per VM that migrated to or from this node, at most REC_FILES_MAX files
 * (the oldest go first), each at most 24 bytes per guest page (3 MiB for
 * 512 MiB of guest). A record is only a hint: both ends use it only when
 * their digests agree, and every page built from it is hash-checked. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwcp/hde.h"
#include "migrate/migrate_int.h"
#include "util/err.h"
#include "util/log.h"

static int rec_path(struct nc_migrate *m, const char *name, char *out, size_t len) {
  const char *dir = nc_pcache_dir(m->cfg.pcache);
  if (!dir)
    return -ENOENT;
  int n = snprintf(out, len, "%s/vm/%s.rec", dir, name);
  return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

struct nc_hde_rec *nc__mig_rec_load(struct nc_migrate *m, const char *name) {
  char path[1400];
  struct nc_hde_rec *r = NULL;
  if (rec_path(m, name, path, sizeof path) != 0)
    return NULL;
  int rc = nc_hde_rec_load(path, &r);
  if (rc && rc != -ENOENT)
    nc_warn("migrate", "vm \"%s\": ignoring the migration record %s (%s)", name, path,
            nc_strerror(rc));
  return r;
}

/* Removes the oldest records beyond REC_FILES_MAX. */
static void rec_prune(const char *vdir) {
  for (;;) {
    DIR *dp = opendir(vdir);
    if (!dp)
      return;
    int n = 0;
    char oldest[512] = "";
    struct timespec ot = {0, 0};
    struct dirent *de;
    while ((de = readdir(dp))) {
      size_t l = strlen(de->d_name);
      if (l < 5 || strcmp(de->d_name + l - 4, ".rec") != 0 || l >= sizeof oldest)
        continue;
      char p[2048];
      struct stat st;
      int pl = snprintf(p, sizeof p, "%s/%s", vdir, de->d_name);
      if (pl < 0 || (size_t)pl >= sizeof p || stat(p, &st) != 0)
        continue;
      n++;
      if (!oldest[0] || st.st_mtim.tv_sec < ot.tv_sec ||
          (st.st_mtim.tv_sec == ot.tv_sec && st.st_mtim.tv_nsec < ot.tv_nsec)) {
        ot = st.st_mtim;
        snprintf(oldest, sizeof oldest, "%s", de->d_name);
      }
    }
    closedir(dp);
    if (n <= REC_FILES_MAX || !oldest[0])
      return;
    char p[2048];
    int pl = snprintf(p, sizeof p, "%s/%s", vdir, oldest);
    if (pl < 0 || (size_t)pl >= sizeof p || unlink(p) != 0)
      return;
  }
}

void nc__mig_rec_store(struct nc_migrate *m, const char *name, struct nc_hde_rec *r) {
  char path[1400], vdir[1400];
  const char *dir = nc_pcache_dir(m->cfg.pcache);
  if (!r || !dir || rec_path(m, name, path, sizeof path) != 0)
    return;
  int vl = snprintf(vdir, sizeof vdir, "%s/vm", dir);
  if (vl < 0 || (size_t)vl >= sizeof vdir || (mkdir(vdir, 0700) != 0 && errno != EEXIST))
    return;
  int rc = nc_hde_rec_save(r, path);
  if (rc)
    nc_warn("migrate", "vm \"%s\": cannot save the migration record %s (%s)", name, path,
            nc_strerror(rc));
  rec_prune(vdir);
}
