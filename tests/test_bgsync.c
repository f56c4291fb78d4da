/*
 * supervisor/qvmd/bgsync: background fdatasyncs end on their own: the event loop sees their
 * completions and lets go of each descriptor; one the kernel refuses (a pipe cannot be synced)
 * fails at once with the kernel's errno, its descriptor closed all the same; without a queue
 * nothing starts (ENOSYS). Freeing the queue with syncs in flight waits for them. Several
 * fsyncs at once (bgsync_all): each descriptor's own result, with the queue and without, and a
 * background sync that ends meanwhile is let go there.
 */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "bgsync.h"

/* An anonymous file (O_TMPFILE, on disk under /var/tmp: no name to pick or remove) with 4 MiB of
 * data dirty in the page cache, opened again read-only (as the backup opens its targets for the
 * sync). */
static int
dirty_file(void)
{
	char buf[65536], self[64];
	int fd = open("/var/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600), ro;

	assert_true(fd >= 0);
	memset(buf, 0x5a, sizeof buf);
	for (int i = 0; i < 64; i++)
		assert_int_equal(write(fd, buf, sizeof buf), (ssize_t)sizeof buf);
	snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
	ro = open(self, O_RDONLY | O_CLOEXEC);
	assert_true(ro >= 0);
	close(fd);
	return ro;
}

static bool
is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static void
test_bgsync_ends_and_lets_go(void **state)
{
	struct event_base *base = event_base_new();
	struct bgsync *s = bgsync_new(base);
	int a = dirty_file(), b = dirty_file();

	(void)state;
	assert_int_equal(bgsync_start(s, a), 0);
	assert_int_equal(bgsync_start(s, b), 0);
	/* The loop turns until both have ended: each takes its descriptor with it. */
	for (int turns = 0; (is_open(a) || is_open(b)) && turns < 100000; turns++)
		assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
	assert_false(is_open(a));
	assert_false(is_open(b));
	bgsync_free(s);
	event_base_free(base);
}

static void
test_bgsync_refused(void **state)
{
	struct event_base *base = event_base_new();
	struct bgsync *s = bgsync_new(base);
	int p[2], fd;

	(void)state;
	assert_int_equal(pipe(p), 0);
	errno = 0;
	assert_int_equal(bgsync_start(s, p[0]), -1);
	assert_int_equal(errno, EINVAL);
	assert_false(is_open(p[0]));
	close(p[1]);
	/* No queue: nothing starts, the descriptor is closed. */
	fd = dirty_file();
	errno = 0;
	assert_int_equal(bgsync_start(NULL, fd), -1);
	assert_int_equal(errno, ENOSYS);
	assert_false(is_open(fd));
	bgsync_free(s);
	bgsync_free(NULL);
	event_base_free(base);
}

static void
test_bgsync_free_waits(void **state)
{
	struct event_base *base = event_base_new();
	struct bgsync *s = bgsync_new(base);
	int fd = dirty_file();

	(void)state;
	assert_int_equal(bgsync_start(s, fd), 0);
	bgsync_free(s); /* no loop turn: the sync may still be in flight */
	assert_false(is_open(fd));
	event_base_free(base);
}

static void
test_bgsync_all_results(void **state)
{
	struct event_base *base = event_base_new();
	struct bgsync *s = bgsync_new(base);
	int p[2], fds[5], errs[5];

	(void)state;
	assert_int_equal(pipe(p), 0);
	fds[0] = dirty_file();
	fds[1] = open("/var/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fds[2] = dirty_file();
	assert_true(fds[1] >= 0);
	/* Files and a directory: all synced. */
	memset(errs, 0xff, sizeof errs);
	assert_int_equal(bgsync_all(s, fds, 3, errs), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(errs[i], 0);
	/* A pipe cannot be synced and a closed descriptor is none: each says so, the rest are
	 * synced all the same; with the queue and without. */
	fds[3] = p[0];
	fds[4] = 1000;
	for (int k = 0; k < 2; k++) {
		memset(errs, 0xff, sizeof errs);
		assert_int_equal(bgsync_all(k == 0 ? s : NULL, fds, 5, errs), -1);
		assert_int_equal(errs[0], 0);
		assert_int_equal(errs[1], 0);
		assert_int_equal(errs[2], 0);
		assert_int_equal(errs[3], EINVAL);
		assert_int_equal(errs[4], EBADF);
	}
	assert_int_equal(bgsync_all(s, fds, 0, errs), 0);
	/* The descriptors are the caller's. */
	for (int i = 0; i < 4; i++) {
		assert_true(is_open(fds[i]));
		close(fds[i]);
	}
	close(p[1]);
	bgsync_free(s);
	event_base_free(base);
}

/* A background sync that ends while bgsync_all waits on the same queue is let go there (its
 * descriptor closed without a loop turn), and the loop's own completion handling finds nothing
 * left afterwards. */
static void
test_bgsync_all_beside_background(void **state)
{
	struct event_base *base = event_base_new();
	struct bgsync *s = bgsync_new(base);
	int bg = dirty_file(), mine = dirty_file(), later, err;

	(void)state;
	assert_int_equal(bgsync_start(s, bg), 0);
	for (int i = 0; i < 2000 && is_open(bg); i++)
		assert_int_equal(bgsync_all(s, &mine, 1, &err), 0);
	assert_false(is_open(bg));
	assert_int_equal(event_base_loop(base, EVLOOP_NONBLOCK), 0);
	/* and the queue goes on working */
	later = dirty_file();
	assert_int_equal(bgsync_start(s, later), 0);
	for (int turns = 0; is_open(later) && turns < 100000; turns++)
		assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
	assert_false(is_open(later));
	close(mine);
	bgsync_free(s);
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bgsync_ends_and_lets_go),
	    cmocka_unit_test(test_bgsync_refused),
	    cmocka_unit_test(test_bgsync_free_waits),
	    cmocka_unit_test(test_bgsync_all_results),
	    cmocka_unit_test(test_bgsync_all_beside_background),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
