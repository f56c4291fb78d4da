/* supervisor/xalloc: the one out-of-memory policy of qvmd's programs (daemon, CLI, test stand-ins):
 * allocation cannot fail, it ends the program with a message. */
#ifndef QVMD_XALLOC_H
#define QVMD_XALLOC_H

#include <stddef.h>

/* Out-of-memory and broken invariants only: prints "PROGRAM: fatal: ..." and aborts. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
/* xstrdup(NULL) is NULL. */
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
