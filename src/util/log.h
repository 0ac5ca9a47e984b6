/* Logging: one line per record to stderr (journald adds timestamps when run
 * under systemd; we add our own otherwise). Thread-safe. */
#ifndef NC_UTIL_LOG_H
#define NC_UTIL_LOG_H

enum nc_log_level { NC_LOG_DEBUG, NC_LOG_INFO, NC_LOG_WARN, NC_LOG_ERROR };

void nc_log_set_level(enum nc_log_level level);
/* Parses "debug|info|warn|error"; returns -EINVAL on anything else. */
int nc_log_parse_level(const char *s, enum nc_log_level *out);
void nc_log(enum nc_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define nc_debug(comp, ...) nc_log(NC_LOG_DEBUG, comp, __VA_ARGS__)
#define nc_info(comp, ...) nc_log(NC_LOG_INFO, comp, __VA_ARGS__)
#define nc_warn(comp, ...) nc_log(NC_LOG_WARN, comp, __VA_ARGS__)
#define nc_error(comp, ...) nc_log(NC_LOG_ERROR, comp, __VA_ARGS__)

#endif
