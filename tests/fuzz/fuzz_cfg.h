/* Checks shared by the config/ harnesses. */
#ifndef QVMD_FUZZ_CFG_H
#define QVMD_FUZZ_CFG_H

#include "cfg.h"
#include "fuzz_util.h"

/*
 * The error list of a refused file: at least one message, at most CFG_ERRORS_MAX plus the one that
 * counts the rest, each "PATH: ..." or "PATH:LINE: ..." on a single line.
 */
static inline void
fuzz_check_errors(const struct cfg_errors *errs, const char *path)
{
	size_t plen = strlen(path);
	long prev = 0;

	FUZZ_CHECK(errs->n > 0);
	FUZZ_CHECK(errs->n <= CFG_ERRORS_MAX + 1);
	for (size_t i = 0; i < errs->n; i++) {
		const char *m = errs->msgs[i];

		FUZZ_CHECK(m != NULL);
		FUZZ_CHECK(strncmp(m, path, plen) == 0 && m[plen] == ':');
		FUZZ_CHECK(strchr(m, '\n') == NULL);
		/* In file order: "PATH: ..." (line 0) first, then by line. */
		if (m[plen + 1] >= '0' && m[plen + 1] <= '9') {
			long line = strtol(m + plen + 1, NULL, 10);

			FUZZ_CHECK(line > 0 && line >= prev);
			prev = line;
		} else if (strstr(m, " more errors not listed") == NULL) {
			FUZZ_CHECK(prev == 0);
		}
	}
}

#endif
