#include "cli/console.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int nc_cli_console_connect(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  int fd, rc;

  if (strlen(path) >= sizeof addr.sun_path)
    return -ENAMETOOLONG;
  strcpy(addr.sun_path, path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  do
    rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  return fd;
}

/* Writes all of buf; sockets use MSG_NOSIGNAL so a closed peer is EPIPE,
 * not a SIGPIPE. */
static int write_all(int fd, bool is_sock, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = is_sock ? send(fd, buf, len, MSG_NOSIGNAL) : write(fd, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

int nc_cli_console_relay(const struct nc_cli_relay *r, enum nc_cli_relay_end *end) {
  char buf[4096];
  bool in_open = true;
  int64_t eof_at = 0, last_out = 0;

  for (;;) {
    struct pollfd fds[2] = {{.fd = r->sock_fd, .events = POLLIN},
                            {.fd = r->in_fd, .events = POLLIN}};
    int timeout_ms = -1;

    if (r->stop != NULL && *r->stop) {
      *end = NC_CLI_RELAY_SIGNAL;
      return 0;
    }
    if (!in_open) {
      int64_t now = nc_mono_ms(r->clock);
      int64_t quiet_left = last_out + r->drain_quiet_ms - now;
      int64_t max_left = eof_at + r->drain_max_ms - now;
      int64_t left = quiet_left < max_left ? quiet_left : max_left;
      if (left <= 0) {
        *end = NC_CLI_RELAY_INPUT_DONE;
        return 0;
      }
      timeout_ms = (int)left;
    }
    int n = poll(fds, in_open ? 2 : 1, timeout_ms);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0) {
      /* Only the drain sets a timeout: a full quiet period passed. */
      *end = NC_CLI_RELAY_INPUT_DONE;
      return 0;
    }

    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t got = read(r->sock_fd, buf, sizeof buf);
      if (got < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (got == 0 || (got < 0 && errno == ECONNRESET)) {
        *end = NC_CLI_RELAY_PEER_CLOSED;
        return 0;
      }
      if (got < 0)
        return -errno;
      int rc = write_all(r->out_fd, false, buf, (size_t)got);
      if (rc != 0)
        return rc;
      last_out = nc_mono_ms(r->clock);
    }
    if (in_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t got = read(r->in_fd, buf, sizeof buf);
      if (got < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (got < 0)
        return -errno;
      if (got == 0) {
        in_open = false;
        eof_at = last_out = nc_mono_ms(r->clock);
        continue;
      }
      const char *esc = r->escape ? memchr(buf, NC_CLI_CONSOLE_ESCAPE, (size_t)got) : NULL;
      size_t len = esc ? (size_t)(esc - buf) : (size_t)got;
      int rc = write_all(r->sock_fd, true, buf, len);
      if (rc == -EPIPE || rc == -ECONNRESET) {
        *end = NC_CLI_RELAY_PEER_CLOSED;
        return 0;
      }
      if (rc != 0)
        return rc;
      if (esc != NULL) {
        *end = NC_CLI_RELAY_ESCAPE;
        return 0;
      }
    }
  }
}
