/* NovaCron error codes.
 *
 * Every function that can fail returns an int: 0 on success, a negative
 * errno (-ENOMEM, -ENOENT, ...) or one of the project codes below. The
 * project codes sit far below any errno so the two never collide. */
#ifndef NC_UTIL_ERR_H
#define NC_UTIL_ERR_H

#include <errno.h>

#define NC_ERRNO_MAP(X)                                                       \
  X(NC_E_INVALID,   -10001, "invalid input")                                  \
  X(NC_E_CONFLICT,  -10002, "conflicting state")                              \
  X(NC_E_TOOBIG,    -10003, "input exceeds its size cap")                     \
  X(NC_E_PROTO,     -10004, "protocol error from peer")                       \
  X(NC_E_HV,        -10005, "hypervisor error")                               \
  X(NC_E_CANCELLED, -10006, "operation cancelled")                            \
  X(NC_E_TXNFAIL,   -10007, "transaction compare failed")                     \
  X(NC_E_COMPACTED, -10008, "revision compacted")                             \
  X(NC_E_LEASE,     -10009, "lease not found or expired")                     \
  X(NC_E_UNAVAIL,   -10010, "component unavailable")

enum {
#define NC__ERR_ENUM(name, value, text) name = value,
  NC_ERRNO_MAP(NC__ERR_ENUM)
#undef NC__ERR_ENUM
};

/* Text for a code returned by any nc_* function (negative errno or NC_E_*).
 * The returned string is static. */
const char *nc_strerror(int err);

#endif
