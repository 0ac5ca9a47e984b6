/* TLS 1.3 for DWCP. Contract, identity and threading model in tls.h. */
#include "dwcp/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "util/err.h"
#include "util/hex.h"

#define STAGE_BYTES 16384 /* one full TLS record of plaintext */
#define CERT_DAYS 36500   /* pinned, so expiry means nothing; far away */
/* AES-128-GCM first: with AES-NI the cheapest, and as safe for a session
 * that lasts one migration. ChaCha20 for CPUs without AES instructions. */
#define CIPHERSUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

struct nc_tls {
  SSL_CTX *ctx; /* both roles: SSL_set_accept_state / SSL_set_connect_state */
  uint8_t fp[NC_TLS_FP_LEN];
};

struct nc_tls_conn {
  pthread_mutex_t mu; /* every SSL_* call on ssl; never held while waiting */
  SSL *ssl;
  int fd;
  bool pinned, mismatch, peer_seen, done;
  uint8_t pin[NC_TLS_FP_LEN], peer[NC_TLS_FP_LEN];
  uint8_t *stage; /* nc_tls_writev's coalescing buffer: the writer's only */
  size_t stage_len;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- fingerprints --------------------------------------------------------- */

static int cert_fp(X509 *x, uint8_t out[NC_TLS_FP_LEN]) {
  unsigned int n = 0;
  unsigned char md[EVP_MAX_MD_SIZE];
  if (X509_digest(x, EVP_sha256(), md, &n) != 1 || n != NC_TLS_FP_LEN)
    return -EINVAL;
  memcpy(out, md, NC_TLS_FP_LEN);
  return 0;
}

void nc_tls_fp_to_hex(const uint8_t fp[NC_TLS_FP_LEN], char out[NC_TLS_FP_HEX_LEN + 1]) {
  nc_hex_encode(fp, NC_TLS_FP_LEN, out);
}

int nc_tls_fp_parse(const char *s, uint8_t out[NC_TLS_FP_LEN]) {
  if (!s)
    return NC_E_INVALID;
  bool colons = strlen(s) == NC_TLS_FP_LEN * 3 - 1;
  for (int i = 0; i < NC_TLS_FP_LEN; i++) {
    if (nc_hex_decode(s, 1, &out[i]) != 0)
      return NC_E_INVALID;
    s += 2;
    if (colons && i < NC_TLS_FP_LEN - 1) {
      if (*s != ':')
        return NC_E_INVALID;
      s++;
    }
  }
  return *s == '\0' ? 0 : NC_E_INVALID;
}

const uint8_t *nc_tls_fingerprint(const struct nc_tls *t) { return t->fp; }

/* ---- identity ---------------------------------------------------------------- */

static X509 *make_cert(EVP_PKEY *key, const char *cn) {
  X509 *x = X509_new();
  uint64_t serial = 0;
  if (!x || RAND_bytes((unsigned char *)&serial, sizeof serial) != 1)
    goto fail;
  serial >>= 1; /* positive */
  X509_NAME *name = X509_get_subject_name(x);
  char subject[128];
  snprintf(subject, sizeof subject, "novacron node %s", cn && cn[0] ? cn : "-");
  if (X509_set_version(x, 2) != 1 || ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), serial) != 1 ||
      !X509_gmtime_adj(X509_getm_notBefore(x), -86400) ||
      !X509_time_adj_ex(X509_getm_notAfter(x), CERT_DAYS, 0, NULL) ||
      X509_set_pubkey(x, key) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)subject, -1,
                                 -1, 0) != 1 ||
      X509_set_issuer_name(x, name) != 1 || X509_sign(x, key, NULL) <= 0)
    goto fail;
  return x;
fail:
  X509_free(x);
  return NULL;
}

/* Writes PEM through a temporary file and rename, so a crash never leaves
 * half a key; mode applies from creation on. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert) {
  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  unlink(tmp);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0)
    return -errno;
  FILE *f = fdopen(fd, "w");
  if (!f) {
    int rc = -errno;
    close(fd);
    unlink(tmp);
    return rc;
  }
  int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
  ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok == 1;
  if (fclose(f) != 0)
    ok = 0;
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return -EIO;
  }
  return 0;
}

static int load_identity(const char *dir, const char *cn, EVP_PKEY **key_out, X509 **cert_out,
                         char *err, size_t err_len) {
  char kpath[1100], cpath[1100];
  snprintf(kpath, sizeof kpath, "%s/node.key", dir);
  snprintf(cpath, sizeof cpath, "%s/node.crt", dir);
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  int rc = 0;
  FILE *f = fopen(kpath, "re");
  if (f) {
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
      fclose(f);
      snprintf(err, err_len, "%s is readable by others; chmod 600 it (or delete it and %s to "
               "get a new node key)", kpath, cpath);
      return -EPERM;
    }
    key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!key) {
      snprintf(err, err_len, "%s is not a PEM private key; delete it and %s to get a new one",
               kpath, cpath);
      return -EINVAL;
    }
    f = fopen(cpath, "re");
    if (f) {
      cert = PEM_read_X509(f, NULL, NULL, NULL);
      fclose(f);
      if (!cert || X509_check_private_key(cert, key) != 1) {
        snprintf(err, err_len, "%s is not the certificate of %s; delete %s to get a new one",
                 cpath, kpath, cpath);
        rc = -EINVAL;
        goto fail;
      }
    }
  } else if (errno != ENOENT) {
    snprintf(err, err_len, "cannot read %s: %s", kpath, strerror(errno));
    return -errno;
  } else {
    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!key) {
      snprintf(err, err_len, "cannot generate an Ed25519 key (OpenSSL)");
      return -ENOMEM;
    }
    if ((rc = write_pem(kpath, 0600, key, NULL)) != 0) {
      snprintf(err, err_len, "cannot write %s: %s", kpath, nc_strerror(rc));
      goto fail;
    }
    unlink(cpath); /* a new key needs a new certificate */
  }
  if (!cert) {
    cert = make_cert(key, cn);
    if (!cert) {
      snprintf(err, err_len, "cannot make a certificate for %s (OpenSSL)", kpath);
      rc = -ENOMEM;
      goto fail;
    }
    if (dir && (rc = write_pem(cpath, 0644, NULL, cert)) != 0) {
      snprintf(err, err_len, "cannot write %s: %s", cpath, nc_strerror(rc));
      goto fail;
    }
  }
  *key_out = key;
  *cert_out = cert;
  return 0;
fail:
  EVP_PKEY_free(key);
  X509_free(cert);
  return rc;
}

/* Runs inside the handshake for every certificate the peer sent. Nothing
 * chains to a CA here: only the leaf (depth 0, the key that signs the
 * handshake) counts, and only its fingerprint. */
static int verify_cb(int preverify_ok, X509_STORE_CTX *xs) {
  (void)preverify_ok;
  SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
  struct nc_tls_conn *c = ssl ? SSL_get_app_data(ssl) : NULL;
  if (!c)
    return 0;
  if (X509_STORE_CTX_get_error_depth(xs) != 0)
    return 1;
  X509 *x = X509_STORE_CTX_get_current_cert(xs);
  if (!x || cert_fp(x, c->peer) != 0)
    return 0;
  c->peer_seen = true;
  if (c->pinned && CRYPTO_memcmp(c->peer, c->pin, NC_TLS_FP_LEN) != 0) {
    c->mismatch = true;
    X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);
    return 0;
  }
  X509_STORE_CTX_set_error(xs, X509_V_OK);
  return 1;
}

int nc_tls_new(const char *dir, const char *cn, struct nc_tls **out, char *err, size_t err_len) {
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  int rc;
  if (dir) {
    rc = load_identity(dir, cn, &key, &cert, err, err_len);
    if (rc)
      return rc;
  } else {
    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    cert = key ? make_cert(key, cn) : NULL;
    if (!cert) {
      EVP_PKEY_free(key);
      snprintf(err, err_len, "cannot make an in-memory TLS identity (OpenSSL)");
      return -ENOMEM;
    }
  }
  struct nc_tls *t = calloc(1, sizeof *t);
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  rc = -ENOMEM;
  if (!t || !ctx)
    goto fail;
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(ctx, CIPHERSUITES) != 1 || SSL_CTX_use_certificate(ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1 ||
      cert_fp(cert, t->fp) != 0) {
    snprintf(err, err_len, "cannot set up the TLS context (OpenSSL)");
    rc = -EINVAL;
    goto fail;
  }
  /* No tickets, no resumption: each connection handshakes once. Unexpected
   * EOF reads as EOF: DWCP frames its data and has its own FIN. */
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
  t->ctx = ctx;
  EVP_PKEY_free(key); /* the context holds its own references */
  X509_free(cert);
  *out = t;
  return 0;
fail:
  SSL_CTX_free(ctx);
  free(t);
  EVP_PKEY_free(key);
  X509_free(cert);
  return rc;
}

void nc_tls_free(struct nc_tls *t) {
  if (!t)
    return;
  SSL_CTX_free(t->ctx);
  free(t);
}

/* ---- connections ----------------------------------------------------------- */

int nc_tls_conn_new(struct nc_tls *t, int fd, bool server, const uint8_t *pin,
                    struct nc_tls_conn **out) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -errno;
  struct nc_tls_conn *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  c->fd = fd;
  c->ssl = SSL_new(t->ctx);
  if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
    SSL_free(c->ssl);
    free(c);
    return -ENOMEM;
  }
  SSL_set_app_data(c->ssl, c);
  if (server)
    SSL_set_accept_state(c->ssl);
  else
    SSL_set_connect_state(c->ssl);
  if (pin) {
    c->pinned = true;
    memcpy(c->pin, pin, NC_TLS_FP_LEN);
  }
  pthread_mutex_init(&c->mu, NULL);
  *out = c;
  return 0;
}

void nc_tls_conn_free(struct nc_tls_conn *c) {
  if (!c)
    return;
  SSL_free(c->ssl);
  free(c->stage);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

int nc_tls_handshake_step(struct nc_tls_conn *c) {
  pthread_mutex_lock(&c->mu);
  ERR_clear_error();
  errno = 0;
  int r = SSL_do_handshake(c->ssl);
  int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
  int sys = errno;
  int rc;
  if (e == SSL_ERROR_NONE) {
    /* Belt and braces: the certificate the session is bound to is the
     * one verify_cb saw and checked. */
    X509 *x = SSL_get0_peer_certificate(c->ssl);
    uint8_t fp[NC_TLS_FP_LEN];
    if (!x || cert_fp(x, fp) != 0)
      rc = -ECONNABORTED;
    else if (c->pinned && CRYPTO_memcmp(fp, c->pin, NC_TLS_FP_LEN) != 0)
      rc = -EKEYREJECTED;
    else
      rc = 0;
    c->done = rc == 0;
  } else if (e == SSL_ERROR_WANT_READ) {
    rc = POLLIN;
  } else if (e == SSL_ERROR_WANT_WRITE) {
    rc = POLLOUT;
  } else if (c->mismatch) {
    rc = -EKEYREJECTED;
  } else if (e == SSL_ERROR_SYSCALL && sys == EINTR) {
    rc = POLLIN | POLLOUT;
  } else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && (sys == 0 || sys == ECONNRESET ||
                                                                       sys == EPIPE))) {
    rc = -ECONNRESET;
  } else {
    rc = -ECONNABORTED;
  }
  ERR_clear_error();
  pthread_mutex_unlock(&c->mu);
  return rc;
}

/* Waits for events on the fd, at most one slice and never past deadline
 * (< 0: none). 0 when it is time to retry, -ETIMEDOUT past the deadline. */
static int wait_fd(int fd, short events, int64_t deadline) {
  int slice = NC_TLS_POLL_SLICE_MS;
  if (deadline >= 0) {
    int64_t left = deadline - now_ms();
    if (left <= 0)
      return -ETIMEDOUT;
    if (left < slice)
      slice = (int)left;
  }
  struct pollfd p = {.fd = fd, .events = events};
  if (poll(&p, 1, slice) < 0 && errno != EINTR)
    return -errno;
  return 0;
}

int nc_tls_handshake(struct nc_tls_conn *c, int timeout_ms) {
  int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  for (;;) {
    int rc = nc_tls_handshake_step(c);
    if (rc <= 0)
      return rc;
    rc = wait_fd(c->fd, (short)rc, deadline);
    if (rc)
      return rc;
  }
}

/* Under c->mu: what an SSL_read/SSL_write result means. >= 0 events to
 * wait for (0: retry at once), < 0 an error; *eof on a clean end. */
static int io_result(struct nc_tls_conn *c, int r, int sys, bool *eof) {
  int e = SSL_get_error(c->ssl, r);
  *eof = false;
  switch (e) {
  case SSL_ERROR_WANT_READ:
    return POLLIN;
  case SSL_ERROR_WANT_WRITE:
    return POLLOUT;
  case SSL_ERROR_ZERO_RETURN:
    *eof = true;
    return 0;
  case SSL_ERROR_SYSCALL:
    if (sys == EINTR)
      return 0;
    if (sys == 0) {
      *eof = true;
      return 0;
    }
    return -sys;
  default:
    return -ECONNABORTED;
  }
}

ssize_t nc_tls_read(struct nc_tls_conn *c, void *buf, size_t n, int timeout_ms) {
  int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  if (n == 0)
    return 0;
  for (;;) {
    size_t got = 0;
    bool eof;
    pthread_mutex_lock(&c->mu);
    ERR_clear_error();
    errno = 0;
    int r = SSL_read_ex(c->ssl, buf, n, &got);
    int sys = errno;
    int ev = r == 1 ? 0 : io_result(c, r, sys, &eof);
    ERR_clear_error();
    pthread_mutex_unlock(&c->mu);
    if (r == 1)
      return (ssize_t)got;
    if (ev < 0)
      return ev;
    if (eof)
      return 0;
    if (ev == 0)
      continue;
    if (timeout_ms == 0)
      return -EAGAIN;
    int rc = wait_fd(c->fd, (short)ev, deadline);
    if (rc)
      return rc;
  }
}

int nc_tls_write(struct nc_tls_conn *c, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n > 0) {
    size_t w = 0;
    bool eof;
    pthread_mutex_lock(&c->mu);
    ERR_clear_error();
    errno = 0;
    int r = SSL_write_ex(c->ssl, p, n, &w);
    int sys = errno;
    int ev = r == 1 ? 0 : io_result(c, r, sys, &eof);
    ERR_clear_error();
    pthread_mutex_unlock(&c->mu);
    if (r == 1) {
      p += w;
      n -= w;
      continue;
    }
    if (ev < 0)
      return ev;
    if (eof)
      return -EPIPE;
    if (ev == 0)
      continue;
    int rc = wait_fd(c->fd, (short)ev, -1);
    if (rc)
      return rc;
  }
  return 0;
}

static int stage_flush(struct nc_tls_conn *c) {
  if (c->stage_len == 0)
    return 0;
  int rc = nc_tls_write(c, c->stage, c->stage_len);
  c->stage_len = 0;
  return rc;
}

int nc_tls_writev(struct nc_tls_conn *c, const struct iovec *iov, int n) {
  if (!c->stage && !(c->stage = malloc(STAGE_BYTES)))
    return -ENOMEM;
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    const uint8_t *p = iov[i].iov_base;
    size_t left = iov[i].iov_len;
    while (left > 0 && rc == 0) {
      if (c->stage_len == 0 && left >= STAGE_BYTES) {
        /* Whole records straight from the caller's buffer; the tail (if
         * any) is staged and may share a record with what follows. */
        size_t whole = left - left % STAGE_BYTES;
        rc = nc_tls_write(c, p, whole);
        p += whole;
        left -= whole;
        continue;
      }
      size_t k = STAGE_BYTES - c->stage_len;
      if (k > left)
        k = left;
      memcpy(c->stage + c->stage_len, p, k);
      c->stage_len += k;
      p += k;
      left -= k;
      if (c->stage_len == STAGE_BYTES)
        rc = stage_flush(c);
    }
  }
  if (rc == 0)
    rc = stage_flush(c);
  c->stage_len = 0;
  return rc;
}

const char *nc_tls_version(struct nc_tls_conn *c) {
  pthread_mutex_lock(&c->mu);
  const char *v = SSL_get_version(c->ssl);
  pthread_mutex_unlock(&c->mu);
  return v;
}

const char *nc_tls_cipher(struct nc_tls_conn *c) {
  pthread_mutex_lock(&c->mu);
  const char *v = SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
  pthread_mutex_unlock(&c->mu);
  return v ? v : "";
}

bool nc_tls_peer_fingerprint(struct nc_tls_conn *c, uint8_t out[NC_TLS_FP_LEN]) {
  pthread_mutex_lock(&c->mu);
  bool ok = c->peer_seen;
  if (ok)
    memcpy(out, c->peer, NC_TLS_FP_LEN);
  pthread_mutex_unlock(&c->mu);
  return ok;
}

int nc__tls_key_update(struct nc_tls_conn *c) {
  pthread_mutex_lock(&c->mu);
  int ok = SSL_key_update(c->ssl, SSL_KEY_UPDATE_REQUESTED);
  ERR_clear_error();
  pthread_mutex_unlock(&c->mu);
  return ok == 1 ? 0 : -EPROTO;
}
