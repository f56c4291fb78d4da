/* config/cfg_error: error lists, per-file diagnostics sorted by line, allocation and file reading.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg_priv.h"

static void
cfg_oom(void)
{
	fputs("qvmd: out of memory\n", stderr);
	abort();
}

void *
cfg_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		cfg_oom();
	return p;
}

void *
cfg_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		cfg_oom();
	return p;
}

void *
cfg_xrealloc(void *p, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		cfg_oom();
	p = realloc(p, n * size != 0 ? n * size : 1);
	if (p == NULL)
		cfg_oom();
	return p;
}

char *
cfg_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		cfg_oom();
	return p;
}

static char *
cfg_vxprintf(const char *fmt, va_list ap)
{
	char *s;

	if (vasprintf(&s, fmt, ap) < 0)
		cfg_oom();
	return s;
}

char *
cfg_xprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = cfg_vxprintf(fmt, ap);
	va_end(ap);
	return s;
}

void
cfg_errors_init(struct cfg_errors *errs)
{
	errs->msgs = NULL;
	errs->n = 0;
	errs->cap = 0;
}

void
cfg_errors_free(struct cfg_errors *errs)
{
	if (errs == NULL)
		return;
	for (size_t i = 0; i < errs->n; i++)
		free(errs->msgs[i]);
	free(errs->msgs);
	cfg_errors_init(errs);
}

static void
cfg_errors_push(struct cfg_errors *errs, char *msg)
{
	if (errs->n == errs->cap) {
		errs->cap = errs->cap ? errs->cap * 2 : 8;
		errs->msgs = cfg_xrealloc(errs->msgs, errs->cap, sizeof(*errs->msgs));
	}
	errs->msgs[errs->n++] = msg;
}

void
cfg_errors_add(struct cfg_errors *errs, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cfg_errors_push(errs, cfg_vxprintf(fmt, ap));
	va_end(ap);
}

void
cfg_diag_init(struct cfg_diag *d, const char *file)
{
	d->file = file;
	d->v = NULL;
	d->n = 0;
	d->cap = 0;
	d->dropped = 0;
}

void
cfg_diag_add(struct cfg_diag *d, int line, const char *fmt, ...)
{
	va_list ap;
	char *what;

	/* A garbage file must not turn into a million log lines. */
	if (d->n >= CFG_ERRORS_MAX) {
		d->dropped++;
		return;
	}
	va_start(ap, fmt);
	what = cfg_vxprintf(fmt, ap);
	va_end(ap);
	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 8;
		d->v = cfg_xrealloc(d->v, d->cap, sizeof(*d->v));
	}
	d->v[d->n].line = line;
	if (line > 0)
		d->v[d->n].msg = cfg_xprintf("%s:%d: %s", d->file, line, what);
	else
		d->v[d->n].msg = cfg_xprintf("%s: %s", d->file, what);
	d->n++;
	free(what);
}

void
cfg_diag_flush(struct cfg_diag *d, struct cfg_errors *errs)
{
	/* Insertion sort: stable, and at most CFG_ERRORS_MAX messages. */
	for (size_t i = 1; i < d->n; i++) {
		struct cfg_diag_msg m = d->v[i];
		size_t j = i;

		while (j > 0 && d->v[j - 1].line > m.line) {
			d->v[j] = d->v[j - 1];
			j--;
		}
		d->v[j] = m;
	}
	for (size_t i = 0; i < d->n; i++)
		cfg_errors_push(errs, d->v[i].msg);
	if (d->dropped > 0)
		cfg_errors_push(errs,
		                cfg_xprintf("%s: %zu more errors not listed", d->file, d->dropped));
	free(d->v);
	d->v = NULL;
	d->n = 0;
	d->cap = 0;
	d->dropped = 0;
}

char *
cfg_read_file(const char *path, size_t max, size_t *lenp, char **cause)
{
	struct stat st;
	char *buf = NULL;
	size_t n = 0, cap = 0;
	int fd, saved;

	/*
	 * O_NONBLOCK: opening a FIFO (or a device) for reading must not wait for a writer; its
	 * type is checked on the descriptor, so nothing is swapped in between.
	 */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		*cause = cfg_xprintf("%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0) {
		saved = errno;
		close(fd);
		*cause = cfg_xprintf("%s: cannot read: %s", path, strerror(saved));
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		*cause = cfg_xprintf("%s: %s", path,
		                     S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
		return NULL;
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		*cause = cfg_xprintf("%s: too large (%lld bytes, at most %zu)", path,
		                     (long long)st.st_size, max);
		return NULL;
	}
	for (;;) {
		ssize_t r;

		if (n == cap) {
			cap = cap ? cap * 2 : 8192;
			if (cap > max + 1)
				cap = max + 1; /* one byte more tells that the file grew past max */
			buf = cfg_xrealloc(buf, cap + 1, 1);
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			saved = errno;
			close(fd);
			free(buf);
			*cause = cfg_xprintf("%s: cannot read: %s", path, strerror(saved));
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			close(fd);
			free(buf);
			*cause = cfg_xprintf("%s: too large (more than %zu bytes)", path, max);
			return NULL;
		}
	}
	close(fd);
	/* The text is kept (a VM holds its definition's): no 8 KiB buffer for a 100-byte file. */
	buf = cfg_xrealloc(buf, n + 1, 1);
	buf[n] = '\0';
	if (lenp != NULL)
		*lenp = n;
	return buf;
}

int
cfg_read_diag(const char *path, char **text, size_t *len, struct cfg_diag *d)
{
	char *cause = NULL;
	size_t plen = strlen(path);

	*text = cfg_read_file(path, CFG_FILE_MAX, len, &cause);
	if (*text != NULL)
		return 0;
	/* The diagnostic adds "PATH: " itself. */
	if (strncmp(cause, path, plen) == 0 && strncmp(cause + plen, ": ", 2) == 0)
		cfg_diag_add(d, 0, "%s", cause + plen + 2);
	else
		cfg_diag_add(d, 0, "%s", cause);
	free(cause);
	return -1;
}
