#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum nc_log_level g_level = NC_LOG_INFO;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

void nc_log_set_level(enum nc_log_level level) { g_level = level; }

int nc_log_parse_level(const char *s, enum nc_log_level *out) {
  static const char *names[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++) {
    if (strcmp(s, names[i]) == 0) {
      *out = (enum nc_log_level)i;
      return 0;
    }
  }
  return -EINVAL;
}

void nc_log(enum nc_log_level level, const char *component, const char *fmt, ...) {
  static const char *tags[] = {"debug", "info", "warn", "error"};
  if (level < g_level)
    return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&g_lock);
  fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %-8s %s\n", tm.tm_year + 1900,
          tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
          tags[level], component, msg);
  pthread_mutex_unlock(&g_lock);
}
