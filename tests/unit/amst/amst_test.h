/* Helpers shared by the AMST test programs: a connected session pair over
 * loopback, a deterministic message generator, and a raw peer that speaks
 * the wire format by hand (so tests can send what a broken peer would). */
#ifndef NC_TEST_AMST_H
#define NC_TEST_AMST_H

#include <stddef.h>
#include <stdint.h>

#include "dwcp/amst.h"

struct amst_pair {
  struct nc_amst_listener *l;
  struct nc_amst *src; /* connector */
  struct nc_amst *dst; /* acceptor */
};

int64_t t_now_ms(void);
void t_sleep_ms(int ms);
void t_session_id(uint8_t id[16], uint8_t tag);

/* Connects src (cfg_src) to dst (cfg_dst) over 127.0.0.1; asserts success. */
void pair_open(struct amst_pair *p, const struct nc_amst_config *cfg_src,
               const struct nc_amst_config *cfg_dst);
void pair_close(struct amst_pair *p);

/* Message i of a deterministic stream: its type and length. */
struct msg_gen {
  uint64_t state;
};
void gen_init(struct msg_gen *g, uint64_t seed);
uint64_t gen_next(struct msg_gen *g);
/* Fills buf with message i's bytes (index in the first 8 bytes). */
void msg_fill(uint8_t *buf, size_t len, uint64_t i);
/* FNV-1a over (type, len, payload), chained. */
uint64_t msg_hash(uint64_t h, uint8_t type, const void *p, size_t len);

/* Raw peer: connects to port, sends a HELLO for (id, index, count). */
int raw_connect(int port, const uint8_t id[16], int index, int count);
/* Reads the acceptor's 48-byte HELLO reply; 0 on success. */
int raw_read_hello(int fd);
int raw_write(int fd, const void *buf, size_t len);
/* A plain TCP connection to 127.0.0.1:port, nothing sent. */
int raw_tcp_connect(int port);
/* Reads until the peer closes: 0 when it did (EOF or reset) within
 * timeout_ms, -1 when the connection is still open. */
int raw_expect_closed(int fd, int timeout_ms);

#endif
