/* The disk relay. Contract and wire in relay.h. */
#include "migrate/relay.h"
#include "migrate/sockio.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util/err.h"
#include "util/log.h"
#include "util/sync.h"

#define BUF_BYTES 65536
#define SETUP_TIMEOUT_MS 10000   /* TCP connect, TLS handshake, session id */
#define QEMU_ACCEPT_TIMEOUT_MS 30000
#define PEER_USER_TIMEOUT_MS 10000 /* a dead link ends the relay within this */

struct nc__relay {
  bool dest;
  pthread_mutex_t mu; /* the fds below and stopping */
  bool stopping;
  int listen_fd; /* source: unix, for QEMU; destination: TCP, for the source */
  int local_fd;  /* QEMU's side */
  int peer_fd;   /* the other daemon's side */
  int wake[2];
  struct nc_tls_conn *tls; /* on peer_fd; NULL: plain */
  struct nc_tls *id;
  bool pinned;
  uint8_t pin[NC_TLS_FP_LEN];
  uint8_t session[16];
  char sock[1200];
  pthread_t thread;
  bool started;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Publishes an fd the stopper must be able to shut down. */
static void set_fd(struct nc__relay *r, int *slot, int fd) {
  pthread_mutex_lock(&r->mu);
  *slot = fd;
  if (r->stopping && fd >= 0)
    shutdown(fd, SHUT_RDWR);
  pthread_mutex_unlock(&r->mu);
}

static bool is_stopping(struct nc__relay *r) {
  pthread_mutex_lock(&r->mu);
  bool s = r->stopping;
  pthread_mutex_unlock(&r->mu);
  return s;
}

/* Reads exactly n bytes from a plain fd within timeout_ms. */
static int read_exact_plain(int fd, uint8_t *p, size_t n, int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  while (n > 0) {
    int64_t left = deadline - now_ms();
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (left <= 0 || poll(&pf, 1, (int)left) == 0)
      return -ETIMEDOUT;
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return r == 0 ? -ECONNRESET : -errno;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* ---- pumping ---------------------------------------------------------------- */

struct dir {
  struct nc__relay *r;
  bool to_peer; /* local -> peer, else peer -> local */
};

static void *pump(void *arg) {
  struct dir *d = arg;
  (void)pthread_setname_np(pthread_self(), "nc-mig-relay");
  struct nc__relay *r = d->r;
  uint8_t *buf = malloc(BUF_BYTES);
  while (buf) {
    ssize_t n;
    int rc;
    if (d->to_peer) {
      n = read(r->local_fd, buf, BUF_BYTES);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      rc = r->tls ? nc_tls_write(r->tls, buf, (size_t)n) : nc__write_all(r->peer_fd, buf, (size_t)n);
    } else {
      if (r->tls) {
        n = nc_tls_read(r->tls, buf, BUF_BYTES, -1);
      } else {
        n = read(r->peer_fd, buf, BUF_BYTES);
        if (n < 0 && errno == EINTR)
          continue;
      }
      if (n <= 0)
        break;
      rc = nc__write_all(r->local_fd, buf, (size_t)n);
    }
    if (rc)
      break;
  }
  free(buf);
  /* Either side ended: end both, so QEMU's requests fail fast. */
  shutdown(r->local_fd, SHUT_RDWR);
  shutdown(r->peer_fd, SHUT_RDWR);
  return NULL;
}

/* Both directions until either ends: one here, one on a helper thread. */
static void pump_both(struct nc__relay *r) {
  struct dir up = {r, true}, down = {r, false};
  pthread_t t;
  if (pthread_create(&t, NULL, pump, &down) != 0) {
    shutdown(r->local_fd, SHUT_RDWR);
    shutdown(r->peer_fd, SHUT_RDWR);
    return;
  }
  pump(&up);
  pthread_join(t, NULL);
}

/* ---- source ------------------------------------------------------------------- */

static void *source_main(void *arg) {
  struct nc__relay *r = arg;
  (void)pthread_setname_np(pthread_self(), "nc-mig-relay");
  struct pollfd a[2] = {{r->listen_fd, POLLIN, 0}, {r->wake[0], POLLIN, 0}};
  if (poll(a, 2, QEMU_ACCEPT_TIMEOUT_MS) <= 0 || (a[1].revents & POLLIN))
    return NULL;
  int fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0)
    return NULL;
  set_fd(r, &r->local_fd, fd);
  pump_both(r);
  return NULL;
}

static struct nc__relay *relay_new(bool dest, struct nc_tls *tls, const uint8_t *peer_fp,
                                   const uint8_t session[16], const char *sock) {
  struct nc__relay *r = calloc(1, sizeof *r);
  if (!r)
    return NULL;
  r->dest = dest;
  r->listen_fd = r->local_fd = r->peer_fd = -1;
  r->wake[0] = r->wake[1] = -1;
  r->id = tls;
  if (peer_fp) {
    r->pinned = true;
    memcpy(r->pin, peer_fp, NC_TLS_FP_LEN);
  }
  memcpy(r->session, session, 16);
  snprintf(r->sock, sizeof r->sock, "%s", sock);
  pthread_mutex_init(&r->mu, NULL);
  return r;
}

int nc__relay_source(const char *sock, const char *host, int port, struct nc_tls *tls,
                     const uint8_t *peer_fp, const uint8_t session[16], struct nc__relay **out) {
  if (tls && !peer_fp)
    return NC_E_INVALID;
  struct sockaddr_storage ss;
  socklen_t sl;
  struct sockaddr_un sa;
  if (nc_sockaddr_numeric(host, port, &ss, &sl) != 0)
    return -EINVAL;
  int rc = nc__unix_addr(&sa, sock);
  if (rc)
    return rc;
  struct nc__relay *r = relay_new(false, tls, peer_fp, session, sock);
  if (!r)
    return -ENOMEM;
  unlink(sock);
  if (pipe2(r->wake, O_CLOEXEC) != 0) {
    rc = -errno;
    goto fail;
  }
  r->peer_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (r->peer_fd < 0) {
    rc = -errno;
    goto fail;
  }
  unsigned int uto = PEER_USER_TIMEOUT_MS;
  int one = 1;
  setsockopt(r->peer_fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof uto);
  setsockopt(r->peer_fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  struct timeval tv = {.tv_sec = SETUP_TIMEOUT_MS / 1000};
  setsockopt(r->peer_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds connect() */
  if (connect(r->peer_fd, (struct sockaddr *)&ss, sl) != 0) {
    rc = errno == EINPROGRESS ? -ETIMEDOUT : -errno;
    goto fail;
  }
  if (tls) {
    if ((rc = nc_tls_conn_new(tls, r->peer_fd, false, peer_fp, &r->tls)) != 0 ||
        (rc = nc_tls_handshake(r->tls, SETUP_TIMEOUT_MS)) != 0 ||
        (rc = nc_tls_write(r->tls, session, 16)) != 0)
      goto fail;
  } else {
    struct timeval none = {0};
    setsockopt(r->peer_fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    if ((rc = nc__write_all(r->peer_fd, session, 16)) != 0)
      goto fail;
  }
  r->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (r->listen_fd < 0 || bind(r->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(r->listen_fd, 1) != 0) {
    rc = -errno;
    goto fail;
  }
  if ((rc = pthread_create(&r->thread, NULL, source_main, r)) != 0) {
    rc = -rc;
    goto fail;
  }
  r->started = true;
  *out = r;
  return 0;
fail:
  nc__relay_stop(r);
  return rc;
}

/* ---- destination ----------------------------------------------------------------- */

/* Takes one candidate connection through TLS and the session id. 0: it is
 * the source; <0: refuse it. */
static int admit(struct nc__relay *r, int fd) {
  uint8_t id[16];
  int rc;
  if (r->id) {
    if ((rc = nc_tls_conn_new(r->id, fd, true, r->pinned ? r->pin : NULL, &r->tls)) != 0 ||
        (rc = nc_tls_handshake(r->tls, SETUP_TIMEOUT_MS)) != 0)
      return rc;
    for (size_t got = 0; got < sizeof id;) {
      ssize_t n = nc_tls_read(r->tls, id + got, sizeof id - got, SETUP_TIMEOUT_MS);
      if (n <= 0)
        return n == 0 ? -ECONNRESET : (int)n;
      got += (size_t)n;
    }
  } else if ((rc = read_exact_plain(fd, id, sizeof id, SETUP_TIMEOUT_MS)) != 0) {
    return rc;
  }
  uint8_t d = 0;
  for (int i = 0; i < 16; i++)
    d |= (uint8_t)(id[i] ^ r->session[i]);
  return d == 0 ? 0 : NC_E_PROTO;
}

static void *dest_main(void *arg) {
  struct nc__relay *r = arg;
  (void)pthread_setname_np(pthread_self(), "nc-mig-relay");
  for (;;) {
    struct pollfd a[2] = {{r->listen_fd, POLLIN, 0}, {r->wake[0], POLLIN, 0}};
    if (poll(a, 2, -1) < 0 && errno != EINTR)
      return NULL;
    if (a[1].revents & POLLIN || is_stopping(r))
      return NULL;
    if (!(a[0].revents & POLLIN))
      continue;
    int fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    set_fd(r, &r->peer_fd, fd);
    int rc = admit(r, fd);
    if (rc == 0)
      break;
    nc_warn("migrate", "disk relay: refused a connection (%s)", nc_strerror(rc));
    set_fd(r, &r->peer_fd, -1);
    nc_tls_conn_free(r->tls);
    r->tls = NULL;
    close(fd);
  }
  nc_info("migrate", "disk relay: the source connected%s%s", r->tls ? " over " : " (plain TCP)",
          r->tls ? nc_tls_cipher(r->tls) : "");
  unsigned int uto = PEER_USER_TIMEOUT_MS;
  int one = 1;
  setsockopt(r->peer_fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof uto);
  setsockopt(r->peer_fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  int fd = nc__unix_connect(r->sock, SETUP_TIMEOUT_MS);
  if (fd < 0) {
    nc_warn("migrate", "disk relay: cannot reach QEMU's NBD socket %s: %s", r->sock,
            nc_strerror(fd));
    shutdown(r->peer_fd, SHUT_RDWR);
    return NULL;
  }
  set_fd(r, &r->local_fd, fd);
  pump_both(r);
  return NULL;
}

int nc__relay_dest(const char *host, struct nc_tls *tls, const uint8_t *peer_fp,
                   const uint8_t session[16], const char *sock, int *port,
                   struct nc__relay **out) {
  struct sockaddr_storage ss;
  socklen_t sl;
  struct sockaddr_un sa;
  if (nc_sockaddr_numeric(host, 0, &ss, &sl) != 0)
    return -EINVAL;
  int rc = nc__unix_addr(&sa, sock);
  if (rc)
    return rc;
  struct nc__relay *r = relay_new(true, tls, peer_fp, session, sock);
  if (!r)
    return -ENOMEM;
  if (pipe2(r->wake, O_CLOEXEC) != 0) {
    rc = -errno;
    goto fail;
  }
  r->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (r->listen_fd < 0 || bind(r->listen_fd, (struct sockaddr *)&ss, sl) != 0 ||
      listen(r->listen_fd, 4) != 0 || getsockname(r->listen_fd, (struct sockaddr *)&ss, &sl) != 0) {
    rc = -errno;
    goto fail;
  }
  *port = nc_sockaddr_port(&ss);
  if ((rc = pthread_create(&r->thread, NULL, dest_main, r)) != 0) {
    rc = -rc;
    goto fail;
  }
  r->started = true;
  *out = r;
  return 0;
fail:
  nc__relay_stop(r);
  return rc;
}

void nc__relay_stop(struct nc__relay *r) {
  if (!r)
    return;
  pthread_mutex_lock(&r->mu);
  r->stopping = true;
  if (r->wake[1] >= 0 && write(r->wake[1], "x", 1) < 0) {
    /* the pipe cannot be full: one byte, written once */
  }
  if (r->local_fd >= 0)
    shutdown(r->local_fd, SHUT_RDWR);
  if (r->peer_fd >= 0)
    shutdown(r->peer_fd, SHUT_RDWR);
  pthread_mutex_unlock(&r->mu);
  if (r->started)
    pthread_join(r->thread, NULL);
  nc_tls_conn_free(r->tls);
  int *fds[] = {&r->listen_fd, &r->local_fd, &r->peer_fd, &r->wake[0], &r->wake[1]};
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    if (*fds[i] >= 0)
      close(*fds[i]);
  if (!r->dest)
    unlink(r->sock);
  pthread_mutex_destroy(&r->mu);
  free(r);
}
