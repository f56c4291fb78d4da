/* Log lines go to stderr with a syslog priority prefix when journald reads it, else a timestamp. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>

static enum cfg_log_level log_level = CFG_LOG_INFO;

void
log_set_level(enum cfg_log_level level)
{
	log_level = level;
}

int
log_enabled(enum cfg_log_level level)
{
	return level <= log_level;
}

void
log_msg(enum cfg_log_level level, const char *fmt, ...)
{
	static const char *names[] = {"error", "warning", "info", "debug"};
	static const int prio[] = {3, 4, 6, 7};
	char buf[2048];
	va_list ap;
	int saved = errno;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (getenv("JOURNAL_STREAM") != NULL) {
		fprintf(stderr, "<%d>%s\n", prio[level], buf);
	} else {
		struct timespec ts;
		struct tm tm;
		char when[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		strftime(when, sizeof when, "%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ld qvmd %s: %s\n", when, ts.tv_nsec / 1000000, names[level],
		        buf);
	}
	errno = saved;
}
