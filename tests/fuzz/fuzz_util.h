/* Helpers shared by the libFuzzer harnesses (tests/fuzz/fuzz_<target>.c). */
#ifndef QVMD_FUZZ_UTIL_H
#define QVMD_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A broken promise is a crash: libFuzzer saves the input. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* An exact-size heap copy of the input (1 byte for an empty one): reads past size are caught. */
static inline char *
fuzz_copy(const uint8_t *data, size_t size)
{
	char *p = malloc(size > 0 ? size : 1);

	FUZZ_CHECK(p != NULL);
	if (size > 0)
		memcpy(p, data, size);
	return p;
}

#endif
