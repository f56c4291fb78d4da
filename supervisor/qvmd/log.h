/* supervisor/qvmd/log: leveled log lines to stderr (journald adds its own timestamps). */
#ifndef QVMD_LOG_H
#define QVMD_LOG_H

#include "cfg.h"
#include "xalloc.h"

void log_set_level(enum cfg_log_level level);
int log_enabled(enum cfg_log_level level);
void log_msg(enum cfg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(CFG_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(CFG_LOG_WARNING, __VA_ARGS__)
#define log_info(...)  log_msg(CFG_LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(CFG_LOG_DEBUG, __VA_ARGS__)

#endif
