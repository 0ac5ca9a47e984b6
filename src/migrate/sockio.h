/* Small socket helpers shared by the migration's source, destination and
 * disk relay. Internal to src/migrate. */
#ifndef NC_MIGRATE_SOCKIO_H
#define NC_MIGRATE_SOCKIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>

/* Fills a unix socket address; -ENAMETOOLONG if path does not fit. */
int nc__unix_addr(struct sockaddr_un *sa, const char *path);
/* Connects to the unix socket at path, retrying every 20 ms for up to
 * timeout_ms while nobody listens yet (QEMU creates its sockets a moment
 * after it was asked to). The fd, or the last -errno. */
int nc__unix_connect(const char *path, int timeout_ms);
/* Writes all n bytes (restarting after EINTR); 0 or -errno. */
int nc__write_all(int fd, const uint8_t *p, size_t n);

#endif
