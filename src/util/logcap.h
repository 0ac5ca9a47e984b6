/* Capping a log file that another process appends to (a VM's serial.log,
 * which QEMU writes with O_APPEND for as long as the VM runs).
 *
 * nc_logcap keeps at most cap bytes in path: once it is larger, its last
 * cap / 2 bytes become path.1 (replacing the previous one, written to a
 * temporary file and renamed, so a reader sees the old or the new whole)
 * and path is truncated to zero. The writer's next append then lands at
 * the start: O_APPEND writes go to the end as it is now. Lines the writer
 * appends between the copy and the truncation (microseconds) are lost; a
 * writer without O_APPEND would leave a hole the size of the old file
 * instead. At most 2 x cap bytes are on disk for the log. */
#ifndef NC_UTIL_LOGCAP_H
#define NC_UTIL_LOGCAP_H

#include <stdint.h>

/* 0 when nothing was to be done or the log was rotated; -errno otherwise
 * (a missing file is 0). cap must be at least 2. */
int nc_logcap(const char *path, uint64_t cap);

#endif
