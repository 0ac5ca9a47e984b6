/* nc-linkem: a userspace link emulator (delay, jitter, loss, rate) between
 * two network namespaces.
 *
 * This kernel has no netem (docs/testing-network.md, shared LAB notes), so
 * the test network gets its delay and loss here. One TUN device is created
 * in each namespace; both get an address of one subnet (say a /30), and a
 * single-threaded process moves IP packets between the two file
 * descriptors. Each direction ("lane") is an independent emulated wire:
 *
 *   arrival --loss?--> [bottleneck queue, tail-drop] --rate--> [delay line] --> other TUN
 *
 * The model of one lane is the textbook bottleneck link: a packet of len
 * bytes arriving at t starts transmission when the wire is free,
 * start = max(t, wire_free), finishes at start + len / rate, and is
 * delivered one propagation delay (plus jitter) later. The backlog at t is
 * (wire_free - t) * rate; a packet that would push it past --queue-bytes is
 * tail-dropped. Departure times within a lane never decrease (jitter never
 * reorders: TCP treats reordering as loss, and the links we emulate are
 * single paths), so each lane is a plain FIFO, not a timer wheel: O(1) per
 * packet, and the next wake-up is the head's departure time.
 *
 * Everything that decides a packet's fate (lane_admit) takes the time as
 * an argument and draws from a per-lane seeded PRNG, so a run is
 * reproducible and `nc-linkem --self-test` checks the model with simulated
 * time.
 *
 * Memory is bounded: every held packet is counted (header included) against
 * --mem-bytes per lane, on top of the --queue-bytes backlog rule. Packets
 * are read into one scratch buffer; a packet due at once with nothing ahead
 * of it is written straight through without a copy or an allocation.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull
#define LINKEM_MAX_PKT_BYTES 65536u
#define LINKEM_READ_BATCH 64
/* We wake when the head of a lane is due, and that wake-up also sends the
 * packets due within the next LINKEM_EARLY_NS: they leave up to 50 us
 * early, the head never does.
 * Without it each packet of a 1 Gbit/s flow (one every 12 us) costs its
 * own timer and ppoll: measured 77% of a core at 1 Gbit/s instead of 54%,
 * 23% instead of 18% at 100 Mbit/s. A real-time task gets no timer slack,
 * so the kernel would not batch these for us. 50 us is 0.2% of a 25 ms
 * delay and 4 packets of burst at 1 Gbit/s. */
#define LINKEM_EARLY_NS 50000ull

/* ---------------------------------------------------------------------- */
/* PRNG: xoshiro256** seeded by splitmix64. One stream per lane, so what   */
/* one direction carries never changes the other direction's draws.       */

struct rng {
  uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++)
    r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(struct rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

/* Uniform in [0, 1). */
static double rng_unit(struct rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* ---------------------------------------------------------------------- */
/* The link model, one lane per direction. No clock and no I/O in here.   */

struct link_params {
  uint64_t delay_ns;           /* one-way propagation delay */
  uint64_t jitter_ns;          /* delay is uniform in [delay - jitter, delay + jitter] */
  double loss;                 /* Bernoulli drop probability per packet, 0..1 */
  uint64_t rate_bytes_per_s;   /* 0: no rate limit */
  uint64_t queue_bytes;        /* bottleneck backlog cap (only with a rate) */
  uint64_t mem_bytes;          /* cap on everything the lane holds */
};

struct lane_stats {
  uint64_t pkts_in, bytes_in;          /* read from the source TUN */
  uint64_t pkts_out, bytes_out;        /* written to the destination TUN */
  uint64_t drop_loss_pkts, drop_loss_bytes;
  uint64_t drop_queue_pkts, drop_queue_bytes; /* backlog or memory cap */
  uint64_t write_err_pkts;             /* the destination TUN refused it */
  uint64_t held_bytes_max;
};

struct pkt {
  struct pkt *next;
  uint64_t depart_ns;
  uint32_t len;
  unsigned char data[];
};

struct lane {
  const struct link_params *p;
  struct rng rng;
  struct pkt *head, *tail;
  uint64_t held_bytes;     /* sizeof(struct pkt) + len of every held packet */
  uint64_t wire_free_ns;   /* when the emulated wire finishes its backlog */
  uint64_t last_depart_ns; /* departures never go backwards */
  struct lane_stats st;
};

enum verdict { V_PASS = 0, V_LOSS, V_QUEUE };

static void lane_init(struct lane *l, const struct link_params *p, uint64_t seed) {
  memset(l, 0, sizeof(*l));
  l->p = p;
  rng_seed(&l->rng, seed);
}

/* Decides the fate of a len-byte packet arriving at now_ns. On V_PASS,
 * *depart_ns is when it must be handed to the other side and the caller
 * must either hold it (lane_push) or, if it is due and the lane is empty,
 * write it at once; held_bytes is not changed here. Loss is drawn first, so
 * the loss sequence of a seed does not depend on queue state: a lost packet
 * never reaches the queue. */
static enum verdict lane_admit(struct lane *l, uint32_t len, uint64_t now_ns,
                               uint64_t *depart_ns) {
  const struct link_params *p = l->p;
  l->st.pkts_in++;
  l->st.bytes_in += len;
  if (p->loss > 0 && rng_unit(&l->rng) < p->loss) {
    l->st.drop_loss_pkts++;
    l->st.drop_loss_bytes += len;
    return V_LOSS;
  }
  uint64_t cost = sizeof(struct pkt) + len;
  uint64_t start_ns = now_ns;
  uint64_t tx_end_ns = now_ns;
  if (p->rate_bytes_per_s) {
    if (l->wire_free_ns > now_ns)
      start_ns = l->wire_free_ns;
    uint64_t backlog_bytes =
        (uint64_t)((double)(start_ns - now_ns) * (double)p->rate_bytes_per_s / 1e9);
    if (backlog_bytes + len > p->queue_bytes)
      goto queue_drop;
    tx_end_ns = start_ns + (uint64_t)((double)len * 1e9 / (double)p->rate_bytes_per_s);
  }
  if (l->held_bytes + cost > p->mem_bytes)
    goto queue_drop;

  uint64_t d = tx_end_ns + p->delay_ns;
  if (p->jitter_ns) {
    /* uniform in [-jitter, +jitter], never earlier than the end of transmission */
    double j = (rng_unit(&l->rng) * 2.0 - 1.0) * (double)p->jitter_ns;
    if (j < 0 && (uint64_t)(-j) > d - tx_end_ns)
      d = tx_end_ns;
    else
      d = (uint64_t)((double)d + j);
  }
  if (d < l->last_depart_ns)
    d = l->last_depart_ns;
  l->last_depart_ns = d;
  if (p->rate_bytes_per_s)
    l->wire_free_ns = tx_end_ns;
  *depart_ns = d;
  return V_PASS;

queue_drop:
  l->st.drop_queue_pkts++;
  l->st.drop_queue_bytes += len;
  return V_QUEUE;
}

/* Takes ownership of pk (malloc'd); it leaves through lane_pop. */
static void lane_push(struct lane *l, struct pkt *pk) {
  pk->next = NULL;
  if (l->tail)
    l->tail->next = pk;
  else
    l->head = pk;
  l->tail = pk;
  l->held_bytes += sizeof(struct pkt) + pk->len;
  if (l->held_bytes > l->st.held_bytes_max)
    l->st.held_bytes_max = l->held_bytes;
}

/* Returns the head if it is due at now_ns (the caller then owns it), or NULL. */
static struct pkt *lane_pop_due(struct lane *l, uint64_t now_ns) {
  struct pkt *pk = l->head;
  if (!pk || pk->depart_ns > now_ns)
    return NULL;
  l->head = pk->next;
  if (!l->head)
    l->tail = NULL;
  l->held_bytes -= sizeof(struct pkt) + pk->len;
  return pk;
}

static void lane_clear(struct lane *l) {
  struct pkt *pk;
  while ((pk = l->head)) {
    l->head = pk->next;
    free(pk);
  }
  l->tail = NULL;
  l->held_bytes = 0;
}

/* ---------------------------------------------------------------------- */
/* Namespaces and TUN devices.                                            */

struct side {
  const char *ns;           /* netns name under /var/run/netns */
  char dev[IFNAMSIZ];       /* "lem%d" until the kernel names it */
  uint32_t addr_be;         /* our address, network order */
  int prefix_len;
  int tun_fd;
  int rtnl_fd;              /* NETLINK_ROUTE socket opened inside ns, for stats */
  int ifindex;
};

static int die_errno(const char *what, const char *detail) {
  int e = errno;
  fprintf(stderr, "nc-linkem: %s%s%s: %s\n", what, detail ? " " : "", detail ? detail : "",
          strerror(e));
  return -e;
}

static int rtnl_talk(int fd, struct nlmsghdr *req, char *resp, size_t resp_len) {
  if (send(fd, req, req->nlmsg_len, 0) < 0)
    return -errno;
  ssize_t n = recv(fd, resp, resp_len, 0);
  if (n < 0)
    return -errno;
  struct nlmsghdr *h = (struct nlmsghdr *)resp;
  if (!NLMSG_OK(h, (size_t)n))
    return -EPROTO;
  if (h->nlmsg_type == NLMSG_ERROR) {
    struct nlmsgerr *e = NLMSG_DATA(h);
    return e->error; /* 0 for an ACK */
  }
  return (int)n;
}

static void rta_add(struct nlmsghdr *h, int type, const void *data, size_t len) {
  struct rtattr *rta = (struct rtattr *)((char *)h + NLMSG_ALIGN(h->nlmsg_len));
  rta->rta_type = (unsigned short)type;
  rta->rta_len = (unsigned short)RTA_LENGTH(len);
  memcpy(RTA_DATA(rta), data, len);
  h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

/* `ip addr add A/len dev X`: local == address, so the kernel adds the
 * subnet route (a true point-to-point peer address would add only a /32). */
static int rtnl_add_addr(int fd, int ifindex, uint32_t addr_be, int prefix_len) {
  struct {
    struct nlmsghdr h;
    struct ifaddrmsg ifa;
    char attrs[64];
  } req;
  char resp[1024];
  memset(&req, 0, sizeof(req));
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
  req.h.nlmsg_type = RTM_NEWADDR;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
  req.ifa.ifa_family = AF_INET;
  req.ifa.ifa_prefixlen = (unsigned char)prefix_len;
  req.ifa.ifa_index = (unsigned)ifindex;
  rta_add(&req.h, IFA_LOCAL, &addr_be, 4);
  rta_add(&req.h, IFA_ADDRESS, &addr_be, 4);
  int rc = rtnl_talk(fd, &req.h, resp, sizeof(resp));
  return rc > 0 ? -EPROTO : rc;
}

/* Kernel counters of the TUN device: tx_dropped counts packets the kernel
 * dropped because we did not read them fast enough (its ring was full). */
static int rtnl_link_stats(int fd, int ifindex, struct rtnl_link_stats64 *out) {
  struct {
    struct nlmsghdr h;
    struct ifinfomsg ifi;
  } req;
  char resp[8192];
  memset(&req, 0, sizeof(req));
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
  req.h.nlmsg_type = RTM_GETLINK;
  req.h.nlmsg_flags = NLM_F_REQUEST;
  req.ifi.ifi_family = AF_UNSPEC;
  req.ifi.ifi_index = ifindex;
  int n = rtnl_talk(fd, &req.h, resp, sizeof(resp));
  if (n <= 0)
    return n < 0 ? n : -EPROTO;
  struct nlmsghdr *h = (struct nlmsghdr *)resp;
  if (h->nlmsg_type != RTM_NEWLINK)
    return -EPROTO;
  struct ifinfomsg *ifi = NLMSG_DATA(h);
  int alen = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*ifi)));
  for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
    if (a->rta_type == IFLA_STATS64 && RTA_PAYLOAD(a) >= sizeof(*out)) {
      memcpy(out, RTA_DATA(a), sizeof(*out));
      return 0;
    }
  }
  return -ENOENT;
}

static int ifreq_ioctl(int sock, unsigned long req, struct ifreq *ifr, const char *what,
                       const char *dev) {
  if (ioctl(sock, req, ifr) < 0)
    return die_errno(what, dev);
  return 0;
}

/* Enters s->ns, creates and configures the TUN there, keeps a netlink
 * socket of that namespace, and returns to the original namespace. On
 * failure the descriptors it opened are closed. */
static int side_open(struct side *s, int orig_ns_fd, int mtu, int txqueuelen) {
  char path[PATH_MAX];
  int rc = 0, ns_fd = -1, sock = -1;
  bool entered = false;
  s->tun_fd = s->rtnl_fd = -1;

  snprintf(path, sizeof(path), "/var/run/netns/%s", s->ns);
  ns_fd = open(path, O_RDONLY | O_CLOEXEC);
  if (ns_fd < 0) {
    rc = -errno;
    fprintf(stderr, "nc-linkem: netns \"%s\": cannot open %s: %s (create it with `ip netns add %s`)\n",
            s->ns, path, strerror(-rc), s->ns);
    goto out;
  }
  if (setns(ns_fd, CLONE_NEWNET) < 0) {
    rc = die_errno("setns into", path);
    goto out;
  }
  entered = true;

  s->tun_fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (s->tun_fd < 0) {
    rc = die_errno("open", "/dev/net/tun");
    goto out;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", s->dev);
  if ((rc = ifreq_ioctl(s->tun_fd, TUNSETIFF, &ifr, "TUNSETIFF", s->dev)) < 0)
    goto out;
  snprintf(s->dev, IFNAMSIZ, "%s", ifr.ifr_name);

  sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) {
    rc = die_errno("socket", NULL);
    goto out;
  }
  memset(&ifr, 0, sizeof(ifr));
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", s->dev);
  ifr.ifr_mtu = mtu;
  if ((rc = ifreq_ioctl(sock, SIOCSIFMTU, &ifr, "set MTU of", s->dev)) < 0)
    goto out;
  ifr.ifr_qlen = txqueuelen;
  if ((rc = ifreq_ioctl(sock, SIOCSIFTXQLEN, &ifr, "set txqueuelen of", s->dev)) < 0)
    goto out;
  if ((rc = ifreq_ioctl(sock, SIOCGIFINDEX, &ifr, "get index of", s->dev)) < 0)
    goto out;
  s->ifindex = ifr.ifr_ifindex;

  /* No IPv6 on the link: its router solicitations and MLD reports would
   * only add noise to the counters. /proc/sys/net follows our netns. */
  snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", s->dev);
  int v6 = open(path, O_WRONLY | O_CLOEXEC);
  if (v6 >= 0) {
    if (write(v6, "1", 1) < 0) { /* best effort: IPv6 may be off already */
    }
    close(v6);
  }

  s->rtnl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s->rtnl_fd < 0) {
    rc = die_errno("netlink socket", NULL);
    goto out;
  }
  if ((rc = rtnl_add_addr(s->rtnl_fd, s->ifindex, s->addr_be, s->prefix_len)) < 0) {
    char a[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &s->addr_be, a, sizeof(a));
    fprintf(stderr, "nc-linkem: netns \"%s\": adding %s/%d to %s: %s\n", s->ns, a,
            s->prefix_len, s->dev, strerror(-rc));
    goto out;
  }
  if ((rc = ifreq_ioctl(sock, SIOCGIFFLAGS, &ifr, "get flags of", s->dev)) < 0)
    goto out;
  ifr.ifr_flags |= IFF_UP;
  if ((rc = ifreq_ioctl(sock, SIOCSIFFLAGS, &ifr, "bring up", s->dev)) < 0)
    goto out;

out:
  if (sock >= 0)
    close(sock);
  if (ns_fd >= 0)
    close(ns_fd);
  if (entered && setns(orig_ns_fd, CLONE_NEWNET) < 0 && rc == 0)
    rc = die_errno("setns back to the original namespace", NULL);
  if (rc < 0) {
    if (s->tun_fd >= 0)
      close(s->tun_fd);
    if (s->rtnl_fd >= 0)
      close(s->rtnl_fd);
    s->tun_fd = s->rtnl_fd = -1;
  }
  return rc;
}

static void side_close(struct side *s) {
  if (s->tun_fd >= 0)
    close(s->tun_fd); /* the TUN is not persistent: it disappears with the fd */
  if (s->rtnl_fd >= 0)
    close(s->rtnl_fd);
  s->tun_fd = s->rtnl_fd = -1;
}

/* ---------------------------------------------------------------------- */
/* Options.                                                               */

struct opts {
  struct side a, b;
  struct link_params p[2]; /* [0]: a->b, [1]: b->a */
  bool queue_bytes_set[2];
  uint64_t seed;
  int mtu, txqueuelen;
  const char *stats_file;
  uint64_t stats_interval_ns;
  bool exit_with_parent;
  int fifo_prio; /* 0: normal scheduling */
};

static void usage(FILE *f) {
  fprintf(f,
          "usage: nc-linkem --ns-a NAME --ns-b NAME --addr-a A/LEN --addr-b B/LEN [options]\n"
          "Joins two network namespaces with an emulated link: one TUN device in each,\n"
          "packets carried by this process with delay, jitter, loss and a rate limit.\n"
          "\n"
          "  --ns-a NAME, --ns-b NAME   namespaces (as in `ip netns list`)\n"
          "  --addr-a A/LEN, --addr-b B/LEN  IPv4 addresses of one subnet, e.g. 10.77.1.1/30\n"
          "  --dev-a NAME, --dev-b NAME TUN device names (default lem%%d: first free)\n"
          "  --delay-ms MS              one-way delay, each direction (default 0; fractions ok)\n"
          "  --jitter-ms MS             delay varies uniformly by +-MS; never reorders\n"
          "  --loss P                   drop probability per packet, 0..1 (or N%%)\n"
          "  --rate-mbit R              wire rate per direction, 10^6 bit/s (default: none)\n"
          "  --queue-bytes N            bottleneck buffer when rated (default: rate x\n"
          "                             max(2*delay, 10 ms), at least 150000); tail-drop\n"
          "  --mem-bytes N              cap on bytes held per direction (default 64 MiB)\n"
          "  --dir a-b|b-a|both         the link options after it apply to that direction\n"
          "                             only (default both), e.g. --delay-ms 25 --dir a-b --loss 0.1\n"
          "  --seed S                   PRNG seed for loss and jitter (default 1)\n"
          "  --mtu N                    TUN MTU (default 1500)\n"
          "  --txqueuelen N             TUN transmit queue (default 1000)\n"
          "  --stats-file PATH          write JSON stats there periodically and at exit\n"
          "  --stats-interval-ms MS     period of --stats-file (default 1000)\n"
          "  --exit-with-parent         exit (cleanly) when the parent process dies\n"
          "  --sched-fifo PRIO          run as SCHED_FIFO: timing holds on a busy machine\n"
          "  --self-test                check the link model with simulated time, then exit\n"
          "SIGTERM/SIGINT: stop, print stats, remove the TUN devices. SIGUSR1: print stats.\n");
}

static int parse_double(const char *s, double lo, double hi, double *out, bool allow_pct) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno)
    return -EINVAL;
  if (allow_pct && *end == '%') {
    v /= 100.0;
    end++;
  }
  if (*end || !(v >= lo && v <= hi))
    return -EINVAL;
  *out = v;
  return 0;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end;
  errno = 0;
  if (*s == '-')
    return -EINVAL;
  unsigned long long v = strtoull(s, &end, 0);
  if (end == s || *end || errno || v < lo || v > hi)
    return -EINVAL;
  *out = v;
  return 0;
}

static int parse_cidr(const char *s, struct side *side) {
  char buf[64];
  snprintf(buf, sizeof(buf), "%s", s);
  char *slash = strchr(buf, '/');
  if (!slash)
    return -EINVAL;
  *slash = 0;
  struct in_addr a;
  uint64_t len;
  if (inet_pton(AF_INET, buf, &a) != 1 || parse_u64(slash + 1, 1, 30, &len) < 0)
    return -EINVAL;
  side->addr_be = a.s_addr;
  side->prefix_len = (int)len;
  return 0;
}

static int bad_opt(const char *name, const char *val, const char *hint) {
  fprintf(stderr, "nc-linkem: --%s \"%s\" is not valid (%s)\n", name, val, hint);
  return -EINVAL;
}

enum { O_NS_A = 256, O_NS_B, O_ADDR_A, O_ADDR_B, O_DEV_A, O_DEV_B, O_DELAY, O_JITTER, O_LOSS,
       O_RATE, O_QUEUE, O_MEM, O_SEED, O_MTU, O_TXQ, O_STATS, O_STATS_IVL, O_DIR, O_PARENT, O_FIFO, O_SELFTEST,
       O_HELP };

static int parse_opts(int argc, char **argv, struct opts *o, bool *self_test) {
  static const struct option lo[] = {
      {"ns-a", 1, 0, O_NS_A},         {"ns-b", 1, 0, O_NS_B},
      {"addr-a", 1, 0, O_ADDR_A},     {"addr-b", 1, 0, O_ADDR_B},
      {"dev-a", 1, 0, O_DEV_A},       {"dev-b", 1, 0, O_DEV_B},
      {"delay-ms", 1, 0, O_DELAY},    {"jitter-ms", 1, 0, O_JITTER},
      {"loss", 1, 0, O_LOSS},         {"rate-mbit", 1, 0, O_RATE},
      {"queue-bytes", 1, 0, O_QUEUE}, {"mem-bytes", 1, 0, O_MEM},
      {"seed", 1, 0, O_SEED},         {"mtu", 1, 0, O_MTU},
      {"txqueuelen", 1, 0, O_TXQ},    {"stats-file", 1, 0, O_STATS},
      {"stats-interval-ms", 1, 0, O_STATS_IVL},
      {"dir", 1, 0, O_DIR},
      {"exit-with-parent", 0, 0, O_PARENT},
      {"sched-fifo", 1, 0, O_FIFO},
      {"self-test", 0, 0, O_SELFTEST},
      {"help", 0, 0, O_HELP},         {0, 0, 0, 0}};
  bool have_addr_a = false, have_addr_b = false;
  memset(o, 0, sizeof(*o));
  snprintf(o->a.dev, IFNAMSIZ, "lem%%d");
  snprintf(o->b.dev, IFNAMSIZ, "lem%%d");
  o->seed = 1;
  o->mtu = 1500;
  o->txqueuelen = 1000;
  o->p[0].mem_bytes = o->p[1].mem_bytes = 64ull << 20;
  o->stats_interval_ns = NS_PER_S;
  *self_test = false;

  int c;
  double d;
  uint64_t u;
  unsigned dirs = 3; /* bit 0: a->b, bit 1: b->a; set by --dir */
  while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    switch (c) {
    case O_NS_A: o->a.ns = optarg; break;
    case O_NS_B: o->b.ns = optarg; break;
    case O_ADDR_A:
      if (parse_cidr(optarg, &o->a) < 0)
        return bad_opt("addr-a", optarg, "try 10.77.1.1/30");
      have_addr_a = true;
      break;
    case O_ADDR_B:
      if (parse_cidr(optarg, &o->b) < 0)
        return bad_opt("addr-b", optarg, "try 10.77.1.2/30");
      have_addr_b = true;
      break;
    case O_DEV_A:
    case O_DEV_B:
      if (!*optarg || strlen(optarg) >= IFNAMSIZ || strchr(optarg, '/'))
        return bad_opt(c == O_DEV_A ? "dev-a" : "dev-b", optarg, "1 to 15 characters, no '/'");
      snprintf(c == O_DEV_A ? o->a.dev : o->b.dev, IFNAMSIZ, "%s", optarg);
      break;
    case O_DELAY:
      if (parse_double(optarg, 0, 60000, &d, false) < 0)
        return bad_opt("delay-ms", optarg, "milliseconds, 0 to 60000");
      for (int k = 0; k < 2; k++)
        if (dirs & (1u << k))
          o->p[k].delay_ns = (uint64_t)llround(d * 1e6);
      break;
    case O_JITTER:
      if (parse_double(optarg, 0, 60000, &d, false) < 0)
        return bad_opt("jitter-ms", optarg, "milliseconds, 0 to 60000");
      for (int k = 0; k < 2; k++)
        if (dirs & (1u << k))
          o->p[k].jitter_ns = (uint64_t)llround(d * 1e6);
      break;
    case O_LOSS:
      if (parse_double(optarg, 0, 1, &d, true) < 0)
        return bad_opt("loss", optarg, "a probability 0..1 such as 0.01, or 1%");
      for (int k = 0; k < 2; k++)
        if (dirs & (1u << k))
          o->p[k].loss = d;
      break;
    case O_RATE:
      if (parse_double(optarg, 0.001, 100000, &d, false) < 0)
        return bad_opt("rate-mbit", optarg, "megabit/s, 0.001 to 100000");
      for (int k = 0; k < 2; k++)
        if (dirs & (1u << k))
          o->p[k].rate_bytes_per_s = (uint64_t)llround(d * 1e6 / 8);
      break;
    case O_QUEUE:
      if (parse_u64(optarg, 1500, 1ull << 32, &u) < 0)
        return bad_opt("queue-bytes", optarg, "bytes, 1500 to 4294967296");
      for (int k = 0; k < 2; k++)
        if (dirs & (1u << k)) {
          o->p[k].queue_bytes = u;
          o->queue_bytes_set[k] = true;
        }
      break;
    case O_MEM:
      if (parse_u64(optarg, 65536, 1ull << 34, &u) < 0)
        return bad_opt("mem-bytes", optarg, "bytes, 65536 to 17179869184");
      for (int k = 0; k < 2; k++)
        if (dirs & (1u << k))
          o->p[k].mem_bytes = u;
      break;
    case O_SEED:
      if (parse_u64(optarg, 0, UINT64_MAX, &u) < 0)
        return bad_opt("seed", optarg, "an unsigned integer");
      o->seed = u;
      break;
    case O_MTU:
      if (parse_u64(optarg, 576, LINKEM_MAX_PKT_BYTES - 1, &u) < 0)
        return bad_opt("mtu", optarg, "576 to 65535");
      o->mtu = (int)u;
      break;
    case O_TXQ:
      if (parse_u64(optarg, 1, 100000, &u) < 0)
        return bad_opt("txqueuelen", optarg, "packets, 1 to 100000");
      o->txqueuelen = (int)u;
      break;
    case O_STATS: o->stats_file = optarg; break;
    case O_STATS_IVL:
      if (parse_u64(optarg, 10, 3600000, &u) < 0)
        return bad_opt("stats-interval-ms", optarg, "10 to 3600000");
      o->stats_interval_ns = u * NS_PER_MS;
      break;
    case O_DIR:
      if (!strcmp(optarg, "a-b"))
        dirs = 1;
      else if (!strcmp(optarg, "b-a"))
        dirs = 2;
      else if (!strcmp(optarg, "both"))
        dirs = 3;
      else
        return bad_opt("dir", optarg, "a-b, b-a or both");
      break;
    case O_PARENT: o->exit_with_parent = true; break;
    case O_FIFO:
      if (parse_u64(optarg, 1, 99, &u) < 0)
        return bad_opt("sched-fifo", optarg, "a real-time priority, 1 to 99");
      o->fifo_prio = (int)u;
      break;
    case O_SELFTEST: *self_test = true; return 0;
    case 'h':
    case O_HELP: usage(stdout); exit(0);
    default: usage(stderr); return -EINVAL;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "nc-linkem: unexpected argument \"%s\" (see --help)\n", argv[optind]);
    return -EINVAL;
  }
  if (!o->a.ns || !o->b.ns || !have_addr_a || !have_addr_b) {
    fprintf(stderr, "nc-linkem: --ns-a, --ns-b, --addr-a and --addr-b are required (see --help)\n");
    return -EINVAL;
  }
  if (!strcmp(o->a.ns, o->b.ns)) {
    fprintf(stderr, "nc-linkem: --ns-a and --ns-b are both \"%s\"; a link needs two namespaces\n",
            o->a.ns);
    return -EINVAL;
  }
  uint32_t mask = htonl(~0u << (32 - o->a.prefix_len));
  if (o->a.prefix_len != o->b.prefix_len || (o->a.addr_be & mask) != (o->b.addr_be & mask) ||
      o->a.addr_be == o->b.addr_be) {
    fprintf(stderr, "nc-linkem: --addr-a and --addr-b must be two addresses of one subnet "
                    "(try 10.77.1.1/30 and 10.77.1.2/30)\n");
    return -EINVAL;
  }
  for (int k = 0; k < 2; k++) {
    struct link_params *p = &o->p[k];
    if (p->jitter_ns > p->delay_ns) {
      fprintf(stderr, "nc-linkem: %s: --jitter-ms is larger than --delay-ms; delay cannot "
                      "go below zero (lower the jitter)\n", k ? "b->a" : "a->b");
      return -EINVAL;
    }
    if (!o->queue_bytes_set[k]) {
      /* One bandwidth-delay product at the round trip of a symmetric
       * path, the classic router buffer; but at least 10 ms at the rate,
       * because arrivals are stamped when we read them: after the
       * scheduler kept us off the CPU for a few ms, a paced sender's
       * packets arrive here as one burst, and a smaller buffer would drop
       * packets the emulated link would have carried. */
      double rtt_s = 2.0 * (double)(p->delay_ns + p->jitter_ns) / 1e9;
      if (rtt_s < 0.010)
        rtt_s = 0.010;
      double q = (double)p->rate_bytes_per_s * rtt_s;
      p->queue_bytes = q > 150000 ? (uint64_t)q : 150000;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Stats.                                                                 */

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

struct linkem {
  struct opts o;
  struct lane ab, ba;  /* a->b and b->a */
  uint64_t start_ns;
  unsigned char buf[LINKEM_MAX_PKT_BYTES];
};

static uint64_t tun_tx_dropped(const struct side *s) {
  struct rtnl_link_stats64 st;
  if (s->rtnl_fd < 0 || rtnl_link_stats(s->rtnl_fd, s->ifindex, &st) < 0)
    return 0;
  return st.tx_dropped;
}

static void lane_json(FILE *f, const char *name, const struct lane *l, uint64_t tun_drops) {
  const struct lane_stats *s = &l->st;
  fprintf(f,
          "  \"%s\": {\"packets_in\": %" PRIu64 ", \"bytes_in\": %" PRIu64
          ", \"packets_out\": %" PRIu64 ", \"bytes_out\": %" PRIu64
          ", \"dropped_loss_packets\": %" PRIu64 ", \"dropped_loss_bytes\": %" PRIu64
          ", \"dropped_queue_packets\": %" PRIu64 ", \"dropped_queue_bytes\": %" PRIu64
          ", \"write_errors\": %" PRIu64 ", \"held_bytes\": %" PRIu64
          ", \"held_bytes_max\": %" PRIu64 ", \"tun_tx_dropped\": %" PRIu64 "}",
          name, s->pkts_in, s->bytes_in, s->pkts_out, s->bytes_out, s->drop_loss_pkts,
          s->drop_loss_bytes, s->drop_queue_pkts, s->drop_queue_bytes, s->write_err_pkts,
          l->held_bytes, s->held_bytes_max, tun_drops);
}

static void cpu_seconds(double *user_s, double *sys_s) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *user_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
  *sys_s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Writes PATH.tmp and renames it, so a reader never sees half a file.
 * Wire format for scripts: keys are stable; "a_to_b" counts packets that
 * entered the TUN in --ns-a and left in --ns-b. */
static int write_stats_file(struct linkem *le, uint64_t now_ns, bool final) {
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof(tmp), "%s.tmp", le->o.stats_file);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return -errno;
  double u, s;
  cpu_seconds(&u, &s);
  fprintf(f, "{\n  \"version\": 1,\n  \"final\": %s,\n  \"uptime_s\": %.3f,\n"
             "  \"cpu_user_s\": %.3f,\n  \"cpu_sys_s\": %.3f,\n  \"seed\": %" PRIu64 ",\n",
          final ? "true" : "false", (double)(now_ns - le->start_ns) / 1e9, u, s, le->o.seed);
  fprintf(f, "  \"dev_a\": \"%s\",\n  \"dev_b\": \"%s\",\n", le->o.a.dev, le->o.b.dev);
  /* a->b packets are transmitted by TUN a: its tx_dropped is that lane's kernel drop */
  lane_json(f, "a_to_b", &le->ab, tun_tx_dropped(&le->o.a));
  fprintf(f, ",\n");
  lane_json(f, "b_to_a", &le->ba, tun_tx_dropped(&le->o.b));
  fprintf(f, "\n}\n");
  int rc = 0;
  if (fclose(f) != 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, le->o.stats_file) < 0)
    rc = -errno;
  return rc;
}

static void print_stats(struct linkem *le, uint64_t now_ns) {
  double u, s;
  cpu_seconds(&u, &s);
  double up = (double)(now_ns - le->start_ns) / 1e9;
  fprintf(stderr, "nc-linkem: %.1f s, cpu user %.2f s sys %.2f s (%.1f%% of one core)\n", up, u,
          s, up > 0 ? 100.0 * (u + s) / up : 0.0);
  const struct {
    const char *name;
    const struct lane *l;
    const struct side *src;
  } rows[] = {{"a->b", &le->ab, &le->o.a}, {"b->a", &le->ba, &le->o.b}};
  for (int i = 0; i < 2; i++) {
    const struct lane_stats *st = &rows[i].l->st;
    fprintf(stderr,
            "nc-linkem: %s in %" PRIu64 " pkts %" PRIu64 " B, out %" PRIu64 " pkts %" PRIu64
            " B, lost %" PRIu64 ", queue-dropped %" PRIu64 ", write errors %" PRIu64
            ", tun drops %" PRIu64 ", max held %" PRIu64 " B\n",
            rows[i].name, st->pkts_in, st->bytes_in, st->pkts_out, st->bytes_out,
            st->drop_loss_pkts, st->drop_queue_pkts, st->write_err_pkts,
            tun_tx_dropped(rows[i].src), st->held_bytes_max);
  }
}

/* ---------------------------------------------------------------------- */
/* The loop.                                                              */

static volatile sig_atomic_t g_stop, g_dump;

static void on_signal(int sig) {
  if (sig == SIGUSR1)
    g_dump = 1;
  else
    g_stop = 1;
}

static void deliver(struct lane *l, int out_fd, const unsigned char *data, uint32_t len) {
  if (write(out_fd, data, len) == (ssize_t)len) {
    l->st.pkts_out++;
    l->st.bytes_out += len;
  } else {
    l->st.write_err_pkts++;
  }
}

static void flush_due(struct lane *l, int out_fd, uint64_t now_ns) {
  struct pkt *pk;
  while ((pk = lane_pop_due(l, now_ns))) {
    deliver(l, out_fd, pk->data, pk->len);
    free(pk);
  }
}

/* Reads what in_fd holds (at most one batch, so the other side and the
 * timers get their turn) into lane l, bound for out_fd. */
static void pump(struct linkem *le, struct lane *l, int in_fd, int out_fd) {
  for (int i = 0; i < LINKEM_READ_BATCH; i++) {
    ssize_t n = read(in_fd, le->buf, sizeof(le->buf));
    if (n <= 0)
      return; /* EAGAIN: drained */
    uint32_t len = (uint32_t)n;
    uint64_t now_ns = mono_ns(), depart_ns;
    if (lane_admit(l, len, now_ns, &depart_ns) != V_PASS)
      continue;
    if (!l->head && depart_ns <= now_ns) {
      deliver(l, out_fd, le->buf, len);
      continue;
    }
    struct pkt *pk = malloc(sizeof(*pk) + len);
    if (!pk) { /* bounded by --mem-bytes; count as a queue drop */
      l->st.drop_queue_pkts++;
      l->st.drop_queue_bytes += len;
      continue;
    }
    pk->depart_ns = depart_ns;
    pk->len = len;
    memcpy(pk->data, le->buf, len);
    lane_push(l, pk);
  }
}

static int run(struct linkem *le) {
  int fa = le->o.a.tun_fd, fb = le->o.b.tun_fd;
  sigset_t block, wait_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGHUP);
  sigprocmask(SIG_BLOCK, &block, &wait_mask);
  sigdelset(&wait_mask, SIGTERM);
  sigdelset(&wait_mask, SIGINT);
  sigdelset(&wait_mask, SIGUSR1);
  sigdelset(&wait_mask, SIGHUP);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);

  uint64_t next_stats_ns = le->start_ns + le->o.stats_interval_ns;
  while (!g_stop) {
    uint64_t now_ns = mono_ns();
    flush_due(&le->ab, fb, now_ns + LINKEM_EARLY_NS);
    flush_due(&le->ba, fa, now_ns + LINKEM_EARLY_NS);
    if (g_dump) {
      g_dump = 0;
      print_stats(le, now_ns);
    }
    if (le->o.stats_file && now_ns >= next_stats_ns) {
      write_stats_file(le, now_ns, false);
      next_stats_ns = now_ns + le->o.stats_interval_ns;
    }
    uint64_t wake_ns = UINT64_MAX;
    if (le->ab.head)
      wake_ns = le->ab.head->depart_ns;
    if (le->ba.head && le->ba.head->depart_ns < wake_ns)
      wake_ns = le->ba.head->depart_ns;
    if (le->o.stats_file && next_stats_ns < wake_ns)
      wake_ns = next_stats_ns;
    struct timespec ts, *tsp = NULL;
    if (wake_ns != UINT64_MAX) {
      uint64_t dt = wake_ns > now_ns ? wake_ns - now_ns : 0;
      ts.tv_sec = (time_t)(dt / NS_PER_S);
      ts.tv_nsec = (long)(dt % NS_PER_S);
      tsp = &ts;
    }
    struct pollfd pfd[2] = {{.fd = fa, .events = POLLIN}, {.fd = fb, .events = POLLIN}};
    int n = ppoll(pfd, 2, tsp, &wait_mask);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return die_errno("ppoll", NULL);
    }
    if ((pfd[0].revents | pfd[1].revents) & (POLLERR | POLLHUP | POLLNVAL)) {
      fprintf(stderr, "nc-linkem: a TUN device went away (namespace deleted?); stopping\n");
      break;
    }
    if (pfd[0].revents & POLLIN)
      pump(le, &le->ab, fa, fb);
    if (pfd[1].revents & POLLIN)
      pump(le, &le->ba, fb, fa);
  }
  return 0;
}

/* ---------------------------------------------------------------------- */
/* --self-test: the model under simulated time.                           */

static int st_failures;

#define CHECK_EQ_U64(what, got, want)                                                         \
  st_check_u64(__LINE__, what, (uint64_t)(got), (uint64_t)(want), (uint64_t)(want))
#define CHECK_RANGE_U64(what, got, lo, hi)                                                    \
  st_check_u64(__LINE__, what, (uint64_t)(got), (uint64_t)(lo), (uint64_t)(hi))

static void st_check_u64(int line, const char *what, uint64_t got, uint64_t lo, uint64_t hi) {
  if (got >= lo && got <= hi)
    return;
  st_failures++;
  if (lo == hi)
    fprintf(stderr, "self-test line %d: %s: got %" PRIu64 ", want %" PRIu64 "\n", line, what,
            got, lo);
  else
    fprintf(stderr, "self-test line %d: %s: got %" PRIu64 ", want %" PRIu64 "..%" PRIu64 "\n",
            line, what, got, lo, hi);
}

/* Admits and holds a packet the way pump() does, without data. */
static enum verdict st_send(struct lane *l, uint32_t len, uint64_t now_ns, uint64_t *depart_ns) {
  enum verdict v = lane_admit(l, len, now_ns, depart_ns);
  if (v == V_PASS) {
    struct pkt *pk = calloc(1, sizeof(*pk) + len);
    if (!pk)
      abort();
    pk->len = len;
    pk->depart_ns = *depart_ns;
    lane_push(l, pk);
  }
  return v;
}

static int self_test(void) {
  struct link_params p;
  struct lane l;
  uint64_t d = 0;

  /* Pure delay: every packet leaves exactly delay after it came. */
  memset(&p, 0, sizeof(p));
  p.delay_ns = 25 * NS_PER_MS;
  p.mem_bytes = 1 << 20;
  lane_init(&l, &p, 1);
  for (uint64_t t = 0; t < 10 * NS_PER_MS; t += NS_PER_MS) {
    CHECK_EQ_U64("delay verdict", st_send(&l, 100, t, &d), V_PASS);
    CHECK_EQ_U64("delay departure", d, t + 25 * NS_PER_MS);
  }
  CHECK_EQ_U64("nothing due before the delay", lane_pop_due(&l, 25 * NS_PER_MS - 1) == NULL, 1);
  struct pkt *pk = lane_pop_due(&l, 25 * NS_PER_MS);
  CHECK_EQ_U64("first due at the delay", pk != NULL, 1);
  free(pk);
  lane_clear(&l);

  /* Rate: a burst of 100 x 1500 B at 100 Mbit/s (12.5 MB/s) leaves one
   * every 120 us, then the delay; the backlog cap tail-drops the rest. */
  memset(&p, 0, sizeof(p));
  p.delay_ns = 25 * NS_PER_MS;
  p.rate_bytes_per_s = 12500000;
  p.queue_bytes = 15000; /* 10 packets */
  p.mem_bytes = 1 << 20;
  lane_init(&l, &p, 1);
  int passed = 0;
  for (int i = 0; i < 100; i++) {
    if (st_send(&l, 1500, 0, &d) == V_PASS) {
      passed++;
      CHECK_EQ_U64("rated departure", d, (uint64_t)passed * 120000 + 25 * NS_PER_MS);
    }
  }
  CHECK_EQ_U64("burst admitted up to the queue cap", passed, 10);
  CHECK_EQ_U64("queue drops counted", l.st.drop_queue_pkts, 90);
  /* once the wire drained, the queue takes packets again */
  CHECK_EQ_U64("admitted after drain", st_send(&l, 1500, 2 * NS_PER_MS, &d), V_PASS);
  CHECK_EQ_U64("departure after drain", d, 2 * NS_PER_MS + 120000 + 25 * NS_PER_MS);
  lane_clear(&l);

  /* A steady 100 Mbit/s offered load fits exactly, with no drops. */
  lane_init(&l, &p, 1);
  for (uint64_t i = 0; i < 10000; i++) {
    while ((pk = lane_pop_due(&l, i * 120000)))
      free(pk);
    st_send(&l, 1500, i * 120000, &d);
  }
  CHECK_RANGE_U64("line-rate load: delay line holds one delay's worth", l.st.held_bytes_max,
                  208 * (sizeof(struct pkt) + 1500), 210 * (sizeof(struct pkt) + 1500));
  CHECK_EQ_U64("line-rate load: no drops", l.st.drop_queue_pkts, 0);
  CHECK_EQ_U64("line-rate load: last departure", d, 10000 * 120000ull + 25 * NS_PER_MS);
  lane_clear(&l);

  /* Memory cap: without a rate, the delay line holds at most mem_bytes. */
  memset(&p, 0, sizeof(p));
  p.delay_ns = 100 * NS_PER_MS;
  p.mem_bytes = 100 * (sizeof(struct pkt) + 1000);
  lane_init(&l, &p, 1);
  for (int i = 0; i < 150; i++)
    st_send(&l, 1000, (uint64_t)i, &d);
  CHECK_EQ_U64("mem cap: held", l.held_bytes, p.mem_bytes);
  CHECK_EQ_U64("mem cap: drops", l.st.drop_queue_pkts, 50);
  lane_clear(&l);

  /* Loss: 10% of 100000 within 4 sigma; the same seed repeats exactly,
   * another seed differs. */
  memset(&p, 0, sizeof(p));
  p.loss = 0.1;
  p.mem_bytes = 1ull << 34;
  uint64_t lost[3];
  uint64_t seeds[3] = {7, 7, 8};
  for (int k = 0; k < 3; k++) {
    lane_init(&l, &p, seeds[k]);
    uint64_t pattern = 0;
    for (int i = 0; i < 100000; i++) {
      enum verdict v = lane_admit(&l, 100, 0, &d);
      if (i < 64 && v == V_LOSS)
        pattern |= 1ull << i;
    }
    lost[k] = l.st.drop_loss_pkts ^ (pattern << 20);
    CHECK_RANGE_U64("loss 10% of 100000", l.st.drop_loss_pkts, 8800, 11200);
  }
  CHECK_EQ_U64("same seed, same losses", lost[0], lost[1]);
  CHECK_EQ_U64("different seed, different losses", lost[0] != lost[2], 1);

  /* Jitter: departures stay within [delay - J, delay + J] of arrival
   * unless held back to keep order, never go backwards, and spread. */
  memset(&p, 0, sizeof(p));
  p.delay_ns = 25 * NS_PER_MS;
  p.jitter_ns = 5 * NS_PER_MS;
  p.mem_bytes = 1ull << 30;
  lane_init(&l, &p, 3);
  uint64_t prev = 0, min_off = UINT64_MAX, max_off = 0;
  bool ordered = true;
  for (uint64_t i = 0; i < 10000; i++) {
    uint64_t t = i * 10 * NS_PER_MS; /* sparse: order never binds */
    lane_admit(&l, 100, t, &d);
    if (d < prev)
      ordered = false;
    prev = d;
    uint64_t off = d - t;
    min_off = off < min_off ? off : min_off;
    max_off = off > max_off ? off : max_off;
  }
  CHECK_EQ_U64("jitter keeps order", ordered, 1);
  CHECK_RANGE_U64("jitter min", min_off, 20 * NS_PER_MS, 20 * NS_PER_MS + NS_PER_MS / 10);
  CHECK_RANGE_U64("jitter max", max_off, 30 * NS_PER_MS - NS_PER_MS / 10, 30 * NS_PER_MS);
  lane_init(&l, &p, 3);
  prev = 0;
  ordered = true;
  for (uint64_t i = 0; i < 10000; i++) { /* dense: order binds often */
    lane_admit(&l, 100, i * 100000, &d);
    if (d < prev)
      ordered = false;
    prev = d;
  }
  CHECK_EQ_U64("dense jitter keeps order", ordered, 1);

  if (st_failures) {
    fprintf(stderr, "nc-linkem self-test: %d check(s) failed\n", st_failures);
    return 1;
  }
  printf("nc-linkem self-test: all checks passed\n");
  return 0;
}

/* ---------------------------------------------------------------------- */

int main(int argc, char **argv) {
  static struct linkem le; /* 64 KiB scratch buffer: not on the stack */
  bool st;
  int rc = parse_opts(argc, argv, &le.o, &st);
  if (rc < 0)
    return 2;
  if (st)
    return self_test();

  le.o.a.tun_fd = le.o.b.tun_fd = le.o.a.rtnl_fd = le.o.b.rtnl_fd = -1;
  pid_t parent = getppid();
  if (le.o.exit_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) /* the parent died before prctl */
      return 0;
  }
  int orig_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (orig_ns < 0) {
    die_errno("open", "/proc/self/ns/net");
    return 1;
  }
  if (side_open(&le.o.a, orig_ns, le.o.mtu, le.o.txqueuelen) < 0 ||
      side_open(&le.o.b, orig_ns, le.o.mtu, le.o.txqueuelen) < 0) {
    side_close(&le.o.a);
    close(orig_ns);
    return 1;
  }
  close(orig_ns);

  lane_init(&le.ab, &le.o.p[0], le.o.seed);
  lane_init(&le.ba, &le.o.p[1], le.o.seed ^ 0x5bd1e9955bd1e995ull);
  /* Timers fire up to the slack late (50 us by default); batching is
   * LINKEM_EARLY_NS's job, so let the timer itself be exact. */
  prctl(PR_SET_TIMERSLACK, 1000UL);
  if (le.o.fifo_prio) {
    /* On a loaded machine a normal process wakes late by milliseconds,
     * which shows up as delay. Our CPU use is bounded by the traffic, and
     * the kernel's RT throttling leaves the others 5% at worst. */
    struct sched_param sp = {.sched_priority = le.o.fifo_prio};
    if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0)
      fprintf(stderr, "nc-linkem: warning: SCHED_FIFO %d refused (%s); timing will suffer "
                      "under load\n", le.o.fifo_prio, strerror(errno));
  }
  le.start_ns = mono_ns();
  char aa[INET_ADDRSTRLEN], ab[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &le.o.a.addr_be, aa, sizeof(aa));
  inet_ntop(AF_INET, &le.o.b.addr_be, ab, sizeof(ab));
  fprintf(stderr, "nc-linkem: ready: %s/%d on %s in %s <-> %s/%d on %s in %s; seed %" PRIu64 "\n",
          aa, le.o.a.prefix_len, le.o.a.dev, le.o.a.ns, ab, le.o.b.prefix_len, le.o.b.dev,
          le.o.b.ns, le.o.seed);
  for (int k = 0; k < 2; k++) {
    const struct link_params *p = &le.o.p[k];
    fprintf(stderr,
            "nc-linkem: %s: delay %.3f ms jitter %.3f ms loss %g rate %.3f Mbit/s queue %" PRIu64
            " B mem %" PRIu64 " B\n",
            k ? "b->a" : "a->b", (double)p->delay_ns / 1e6, (double)p->jitter_ns / 1e6, p->loss,
            (double)p->rate_bytes_per_s * 8 / 1e6, p->queue_bytes, p->mem_bytes);
  }
  if (le.o.stats_file)
    write_stats_file(&le, le.start_ns, false);

  rc = run(&le);

  uint64_t now_ns = mono_ns();
  print_stats(&le, now_ns);
  if (le.o.stats_file) {
    int wrc = write_stats_file(&le, now_ns, true);
    if (wrc < 0)
      fprintf(stderr, "nc-linkem: writing %s: %s\n", le.o.stats_file, strerror(-wrc));
  }
  lane_clear(&le.ab);
  lane_clear(&le.ba);
  side_close(&le.o.a);
  side_close(&le.o.b);
  return rc < 0 ? 1 : 0;
}
