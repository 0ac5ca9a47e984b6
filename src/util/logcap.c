/* Capping an appended-to log file: see logcap.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/logcap.h"

#define COPY_CHUNK (64 * 1024)

int nc_logcap(const char *path, uint64_t cap) {
  if (!path || cap < 2)
    return -EINVAL;
  struct stat st;
  if (stat(path, &st) != 0)
    return errno == ENOENT ? 0 : -errno;
  if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size <= cap)
    return 0;
  char old[4096], tmp[4096];
  if ((size_t)snprintf(old, sizeof old, "%s.1", path) >= sizeof old ||
      (size_t)snprintf(tmp, sizeof tmp, "%s.1.tmp", path) >= sizeof tmp)
    return -ENAMETOOLONG;
  int in = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (in < 0)
    return -errno;
  int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
  if (out < 0) {
    int rc = -errno;
    close(in);
    return rc;
  }
  int rc = 0;
  char *buf = malloc(COPY_CHUNK);
  off_t off = st.st_size - (off_t)(cap / 2), end = st.st_size;
  if (!buf)
    rc = -ENOMEM;
  while (rc == 0 && off < end) {
    size_t want = (size_t)(end - off) < COPY_CHUNK ? (size_t)(end - off) : COPY_CHUNK;
    ssize_t n = pread(in, buf, want, off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      rc = n < 0 ? -errno : 0; /* shorter than stat said: keep what came */
      break;
    }
    for (ssize_t done = 0; done < n;) {
      ssize_t w = write(out, buf + done, (size_t)(n - done));
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0) {
        rc = -errno;
        break;
      }
      done += w;
    }
    if (rc)
      break;
    off += n;
  }
  free(buf);
  close(in);
  if (close(out) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, old) != 0)
    rc = -errno;
  if (rc) {
    unlink(tmp);
    return rc;
  }
  return truncate(path, 0) == 0 ? 0 : -errno;
}
