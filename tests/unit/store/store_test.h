/* The store tests use the assertions shared by every unit test. */
#ifndef NC_TESTS_STORE_TEST_H
#define NC_TESTS_STORE_TEST_H

#include "nc_test.h"

#endif
