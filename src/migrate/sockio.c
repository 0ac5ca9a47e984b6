/* Socket helpers shared by the migration code. See sockio.h. */
#include "migrate/sockio.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int nc__unix_addr(struct sockaddr_un *sa, const char *path) {
  size_t n = strlen(path);
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (n >= sizeof sa->sun_path)
    return -ENAMETOOLONG;
  memcpy(sa->sun_path, path, n + 1);
  return 0;
}

int nc__unix_connect(const char *path, int timeout_ms) {
  struct sockaddr_un sa;
  int rc = nc__unix_addr(&sa, path);
  if (rc)
    return rc;
  int64_t deadline = mono_ms() + timeout_ms;
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
      return fd;
    int e = errno;
    close(fd);
    if (mono_ms() > deadline)
      return -e;
    usleep(20 * 1000);
  }
}

int nc__write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}
