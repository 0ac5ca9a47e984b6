/* libFuzzer target for everything that reads bytes from QEMU's QMP socket:
 * the line framer and message parser (src/hv/qmp_msg.c), and the client's
 * handshake, reply matching and event queue (src/hv/qmp.c).
 *
 * The input is what QEMU would have sent; corpus/qmp/ holds real QMP
 * traffic captured from QEMU 10.0. Build: cmake -DNC_FUZZ=ON with clang;
 * the ordinary test run replays the corpus (tests/CMakeLists.txt). */
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hv/qmp.h"
#include "hv/qmp_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads every field the parser hands out, so a dangling or unterminated
 * pointer shows up under ASan. */
static void touch(const struct nc_qmp_msg *m) {
  volatile size_t sink = 0;
  if (m->event)
    sink += strlen(m->event);
  if (m->err_class)
    sink += strlen(m->err_class) + strlen(m->err_desc);
  if (m->value) {
    char *s = json_dumps(m->value, JSON_ENCODE_ANY | JSON_COMPACT);
    sink += s ? strlen(s) : 0;
    free(s);
  }
  (void)sink;
}

/* Feeds data in chunks of `chunk` bytes and parses every line. */
static void frame_and_parse(const uint8_t *data, size_t size, size_t cap, size_t chunk) {
  struct nc_qmp_framer f;
  nc_qmp_framer_init(&f, cap);
  size_t off = 0;
  for (;;) {
    const char *line;
    size_t len;
    int rc;
    while ((rc = nc_qmp_framer_next(&f, &line, &len)) == 1) {
      if (len == 0 || len > cap || memchr(line, '\n', len))
        abort(); /* the framer's contract */
      struct nc_qmp_msg m;
      if (nc_qmp_msg_parse(line, len, &m) == 0) {
        touch(&m);
        nc_qmp_msg_clear(&m);
      }
    }
    if (rc < 0 || off == size)
      break;
    size_t n = size - off < chunk ? size - off : chunk;
    int took = nc_qmp_framer_push(&f, data + off, n);
    if (took < 0)
      break;
    off += (size_t)took;
  }
  nc_qmp_framer_free(&f);
}

/* Plays data as QEMU's side of a socket, then lets the client connect,
 * run one command and drain events, all without waiting (timeout 0). */
static void client(const uint8_t *data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return;
  fcntl(sv[1], F_SETFL, O_NONBLOCK);
  size_t off = 0;
  while (off < size) {
    ssize_t w = write(sv[1], data + off, size - off);
    if (w <= 0)
      break; /* socket buffer full: the rest is dropped */
    off += (size_t)w;
  }
  shutdown(sv[1], SHUT_WR);
  struct nc_qmp_opts opts = {.max_msg_bytes = 4096, .max_events = 4};
  struct nc_qmp *q;
  if (nc_qmp_attach_fd(sv[0], &opts, 0, &q) == 0) {
    json_t *ret = NULL;
    nc_qmp_execute(q, "query-status", NULL, 0, &ret);
    json_decref(ret);
    nc_qmp_wait_event(q, 0);
    json_t *ev;
    while (nc_qmp_next_event(q, &ev) == 1)
      json_decref(ev);
    (void)nc_qmp_error_desc(q);
    nc_qmp_close(q);
  }
  close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t chunks[] = {1, 7, 4096};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++)
    frame_and_parse(data, size, 4096, chunks[i]);
  frame_and_parse(data, size, 64, 13); /* small cap: the too-long path */
  struct nc_qmp_msg m;
  if (size > 0 && nc_qmp_msg_parse((const char *)data, size, &m) == 0) {
    touch(&m);
    nc_qmp_msg_clear(&m);
  }
  client(data, size);
  return 0;
}
