/*
 * Background fdatasync through Linux AIO (kernel 4.18 and later run IOCB_CMD_FDSYNC on a kernel
 * worker), and fsyncs of several files at once, waited for (bgsync_all). One AIO context for the
 * daemon's life: creating one is cheap, but destroying one waits for an RCU grace period (30-40 ms
 * measured here), far longer than the syncs it would save. Each request carries its descriptor; the
 * completions name their request (aio_data).
 */
#include "bgsync.h"

#include "xalloc.h"

#include <errno.h>
#include <stdbool.h>
#include <event2/event.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Syncs in flight at most (more are refused: EAGAIN). */
#define BGSYNC_MAX 64

struct bgsync_req {
	int fd;
	struct bgsync_req *prev, *next;
};

struct bgsync {
	struct event_base *base;
	bool broken; /* the kernel would not set the context up: nothing in the background */
	aio_context_t ctx;
	int efd;
	struct event *ev;
	unsigned inflight;
	struct bgsync_req *reqs;
};

static void
req_end(struct bgsync *s, struct bgsync_req *r)
{
	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		s->reqs = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	close(r->fd);
	free(r);
	s->inflight--;
}

/* Completions: each ended sync lets go of its descriptor (an error result is no concern of a
 * head start: the fsync that follows reports it). */
static void
bgsync_done(evutil_socket_t efd, short what, void *arg)
{
	struct bgsync *s = arg;
	struct io_event done[16];
	struct timespec now = {0, 0};
	uint64_t n;
	long got;

	(void)what;
	if (read(efd, &n, sizeof n) < 0)
		return;
	do {
		got = syscall(SYS_io_getevents, s->ctx, 0, 16, done, &now);
		for (long i = 0; i < got; i++)
			req_end(s, (struct bgsync_req *)(uintptr_t)done[i].data);
	} while (got == 16);
}

struct bgsync *
bgsync_new(struct event_base *base)
{
	struct bgsync *s = xcalloc(1, sizeof *s);

	s->base = base;
	s->efd = -1;
	return s;
}

/* The context, set up for the first sync (a daemon that never syncs never pays for its
 * teardown). */
static int
bgsync_setup(struct bgsync *s)
{
	if (s->ctx != 0)
		return 0;
	if (!s->broken) {
		s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (s->efd >= 0 && syscall(SYS_io_setup, BGSYNC_MAX, &s->ctx) == 0 &&
		    (s->ev = event_new(s->base, s->efd, EV_READ | EV_PERSIST, bgsync_done, s)) !=
		        NULL &&
		    event_add(s->ev, NULL) == 0)
			return 0;
		s->broken = true;
	}
	errno = ENOSYS;
	return -1;
}

int
bgsync_start(struct bgsync *s, int fd)
{
	struct iocb cb, *cbs[1] = {&cb};
	struct bgsync_req *r;
	int saved;

	if (s == NULL || bgsync_setup(s) < 0 || s->inflight >= BGSYNC_MAX) {
		close(fd);
		errno = s == NULL || s->broken ? ENOSYS : EAGAIN;
		return -1;
	}
	r = xcalloc(1, sizeof *r);
	r->fd = fd;
	memset(&cb, 0, sizeof cb);
	cb.aio_data = (uint64_t)(uintptr_t)r;
	cb.aio_lio_opcode = IOCB_CMD_FDSYNC;
	cb.aio_fildes = (uint32_t)fd;
	cb.aio_flags = IOCB_FLAG_RESFD;
	cb.aio_resfd = (uint32_t)s->efd;
	if (syscall(SYS_io_submit, s->ctx, 1, cbs) != 1) {
		saved = errno;
		close(fd);
		free(r);
		errno = saved;
		return -1;
	}
	r->next = s->reqs;
	if (s->reqs != NULL)
		s->reqs->prev = r;
	s->reqs = r;
	s->inflight++;
	return 0;
}

/* One fsync after the other, from i on (no AIO, or the kernel took no more). */
static void
sync_rest(const int *fds, size_t n, size_t i, int *errs)
{
	for (; i < n; i++)
		errs[i] = fsync(fds[i]) < 0 ? errno : 0;
}

int
bgsync_all(struct bgsync *s, const int *fds, size_t n, int *errs)
{
	struct iocb *cbs = NULL, **ptrs = NULL;
	size_t sent = 0, done = 0;
	long got;
	int rc = 0;

	if (n > 0 && s != NULL && bgsync_setup(s) == 0) {
		cbs = xcalloc(n, sizeof *cbs);
		ptrs = xcalloc(n, sizeof *ptrs);
		for (size_t i = 0; i < n; i++) {
			/* no aio_data: a completion of ours is told apart by its iocb */
			cbs[i].aio_lio_opcode = IOCB_CMD_FSYNC;
			cbs[i].aio_fildes = (uint32_t)fds[i];
			ptrs[i] = &cbs[i];
		}
		got = syscall(SYS_io_submit, s->ctx, (long)n, ptrs);
		sent = got > 0 ? (size_t)got : 0;
	}
	/* The kernel took the first `sent`: whatever it refused is synced here meanwhile. */
	sync_rest(fds, n, sent, errs);
	while (done < sent) {
		struct io_event ev[16];

		got = syscall(SYS_io_getevents, s->ctx, 1, 16, ev, NULL);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			/* cannot happen with a valid context; the syncs' results are unknown */
			for (size_t i = 0; i < sent; i++)
				errs[i] = errno;
			break;
		}
		for (long k = 0; k < got; k++) {
			struct iocb *cb = (struct iocb *)(uintptr_t)ev[k].obj;

			if (cb >= cbs && cb < cbs + sent) {
				errs[cb - cbs] = ev[k].res < 0 ? (int)-ev[k].res : 0;
				done++;
			} else {
				/* a background sync's: its eventfd count stays, and finds nothing
				 */
				req_end(s, (struct bgsync_req *)(uintptr_t)ev[k].data);
			}
		}
	}
	free(cbs);
	free(ptrs);
	for (size_t i = 0; i < n; i++)
		if (errs[i] != 0)
			rc = -1;
	return rc;
}

void
bgsync_free(struct bgsync *s)
{
	if (s == NULL)
		return;
	if (s->ev != NULL)
		event_free(s->ev);
	if (s->ctx != 0)
		syscall(SYS_io_destroy, s->ctx); /* waits for the syncs in flight */
	while (s->reqs != NULL)
		req_end(s, s->reqs);
	if (s->efd >= 0)
		close(s->efd);
	free(s);
}
