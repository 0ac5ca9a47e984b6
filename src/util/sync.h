/* Small helpers for threads and sockets shared by several modules. */
#ifndef NC_UTIL_SYNC_H
#define NC_UTIL_SYNC_H

#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

/* Initialises a condition variable that times out on CLOCK_MONOTONIC, so
 * waits are immune to wall-clock jumps. Pair with nc_deadline(). */
void nc_cond_init_mono(pthread_cond_t *cv);
/* The CLOCK_MONOTONIC instant timeout_ms from now, for
 * pthread_cond_timedwait on a nc_cond_init_mono condition. */
struct timespec nc_deadline(int timeout_ms);
/* Fills ss from a numeric IPv4 or IPv6 address and a port. -EINVAL if
 * host is not a numeric address. */
int nc_sockaddr_numeric(const char *host, int port, struct sockaddr_storage *ss,
                        socklen_t *len);
/* The port of a bound IPv4/IPv6 socket address. */
int nc_sockaddr_port(const struct sockaddr_storage *ss);

#endif
