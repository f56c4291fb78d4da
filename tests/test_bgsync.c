/*
 * supervisor/qvmd/bgsync: background fdatasyncs end on their own: the event loop sees their
 * completions and lets go of each descriptor; one the kernel refuses (a pipe cannot be synced)
 * fails at once with the kernel's errno, its descriptor closed all the same; without a queue
 * nothing starts (ENOSYS). Freeing the queue with syncs in flight waits for them.
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

/* A temp file with 4 MiB of data dirty in the page cache, open read-only (as the backup opens
 * its targets for the sync). */
static int
dirty_file(char *path)
{
	char buf[65536];
	int fd = mkstemp(path), ro;

	assert_true(fd >= 0);
	memset(buf, 0x5a, sizeof buf);
	for (int i = 0; i < 64; i++)
		assert_int_equal(write(fd, buf, sizeof buf), (ssize_t)sizeof buf);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(ro >= 0);
	close(fd);
	unlink(path);
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
	char p1[] = "/var/tmp/qvmd-bgsync.XXXXXX", p2[] = "/var/tmp/qvmd-bgsync.XXXXXX";
	int a = dirty_file(p1), b = dirty_file(p2);

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
	char path[] = "/var/tmp/qvmd-bgsync.XXXXXX";
	int p[2], fd;

	(void)state;
	assert_int_equal(pipe(p), 0);
	errno = 0;
	assert_int_equal(bgsync_start(s, p[0]), -1);
	assert_int_equal(errno, EINVAL);
	assert_false(is_open(p[0]));
	close(p[1]);
	/* No queue: nothing starts, the descriptor is closed. */
	fd = dirty_file(path);
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
	char path[] = "/var/tmp/qvmd-bgsync.XXXXXX";
	int fd = dirty_file(path);

	(void)state;
	assert_int_equal(bgsync_start(s, fd), 0);
	bgsync_free(s); /* no loop turn: the sync may still be in flight */
	assert_false(is_open(fd));
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bgsync_ends_and_lets_go),
	    cmocka_unit_test(test_bgsync_refused),
	    cmocka_unit_test(test_bgsync_free_waits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
