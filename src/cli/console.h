/* The serial console relay behind "novacron vm console". QEMU exposes each
 * VM's serial port as a local unix socket (the VM's "console.socket"); the
 * relay copies bytes both ways with poll(2). It takes descriptors, not the
 * terminal, so it is unit-tested over socketpairs and pipes. */
#ifndef NC_CLI_CONSOLE_H
#define NC_CLI_CONSOLE_H

#include "util/clock.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

/* Ctrl-], as in telnet and virsh console. */
#define NC_CLI_CONSOLE_ESCAPE 0x1d

enum nc_cli_relay_end {
  NC_CLI_RELAY_ESCAPE,      /* the escape byte arrived on in_fd */
  NC_CLI_RELAY_PEER_CLOSED, /* the console socket closed (QEMU exited) */
  NC_CLI_RELAY_INPUT_DONE,  /* in_fd ended and the socket went quiet */
  NC_CLI_RELAY_SIGNAL,      /* *stop became non-zero */
};

struct nc_cli_relay {
  int in_fd, out_fd, sock_fd;
  bool escape;            /* stop at NC_CLI_CONSOLE_ESCAPE on in_fd (interactive) */
  int64_t drain_quiet_ms; /* after in_fd EOF, leave once the socket was quiet this long */
  int64_t drain_max_ms;   /* ... and at the latest this long after EOF */
  struct nc_clock *clock;
  volatile sig_atomic_t *stop; /* set by a signal handler to end the relay; may be NULL */
};

/* Relays until one of the ends above. Bytes before the escape byte are
 * still sent; the escape byte and anything after it are not. Returns 0
 * with *end set, or a negative errno when reading or writing failed. */
int nc_cli_console_relay(const struct nc_cli_relay *r, enum nc_cli_relay_end *end);

/* Connects to the unix socket at path. Returns a descriptor, or a negative
 * errno (-ENAMETOOLONG when the path does not fit sun_path). */
int nc_cli_console_connect(const char *path);

#endif
