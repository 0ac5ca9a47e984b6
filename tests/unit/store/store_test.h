/* Helpers shared by the store tests: assertions that print both values in
 * decimal (cmocka 1.1 prints hex) and name error codes. */
#ifndef NC_TESTS_STORE_TEST_H
#define NC_TESTS_STORE_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "util/err.h"

#define EXPECT_I64(got, want)                                                          \
  do {                                                                                 \
    long long got_ = (long long)(got), want_ = (long long)(want);                      \
    if (got_ != want_)                                                                 \
      fail_msg("%s is %lld, want %s = %lld", #got, got_, #want, want_);                \
  } while (0)

#define EXPECT_RC(got, want)                                                           \
  do {                                                                                 \
    int got_ = (got), want_ = (want);                                                  \
    if (got_ != want_)                                                                 \
      fail_msg("%s returned %d (%s), want %d (%s)", #got, got_, nc_strerror(got_),    \
               want_, nc_strerror(want_));                                             \
  } while (0)

#define EXPECT_TRUE(cond)                                                              \
  do {                                                                                 \
    if (!(cond))                                                                       \
      fail_msg("expected %s", #cond);                                                  \
  } while (0)

#endif
