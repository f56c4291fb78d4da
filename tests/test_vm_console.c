/*
 * supervisor/qvmd/vm_console: the ring of recent output (--tail), the rotation of a log another
 * process appends to, and the relay on a real event_base against a stand-in for QEMU's console
 * socket (output to every client, input to the guest, rotation past log_max, the end).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "vm_console.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* The ring's content from offset start, as a string (static buffer). */
static const char *
ring_from(const struct vm_console_ring *r, size_t start)
{
	static char buf[256];

	assert_true(r->len - start < sizeof buf);
	vm_console_ring_copy(r, start, r->len - start, buf);
	buf[r->len - start] = '\0';
	return buf;
}

static const char *
ring_tail(const struct vm_console_ring *r, unsigned n)
{
	return ring_from(r, vm_console_ring_tail_start(r, n));
}

static void
test_vm_console_ring_tail_lines(void **state)
{
	struct vm_console_ring r;

	vm_console_ring_init(&r, 64);
	assert_string_equal(ring_tail(&r, 3), "");
	vm_console_ring_add(&r, "one\ntwo\nthree\n", 14);
	assert_string_equal(ring_tail(&r, 0), "");
	assert_string_equal(ring_tail(&r, 1), "three\n");
	assert_string_equal(ring_tail(&r, 2), "two\nthree\n");
	assert_string_equal(ring_tail(&r, 9), "one\ntwo\nthree\n");
	/* A last line without its newline (a prompt) counts as a line, as with tail -n. */
	vm_console_ring_add(&r, "# ", 2);
	assert_string_equal(ring_tail(&r, 1), "# ");
	assert_string_equal(ring_tail(&r, 2), "three\n# ");
	vm_console_ring_free(&r);
}

static void
test_vm_console_ring_keeps_last_bytes(void **state)
{
	struct vm_console_ring r;
	char big[100];

	vm_console_ring_init(&r, 16);
	/* Wrapping in small pieces: only the last 16 bytes stay, in order. */
	for (int i = 0; i < 10; i++) {
		char line[8];

		snprintf(line, sizeof line, "l%d\n", i);
		vm_console_ring_add(&r, line, strlen(line));
	}
	assert_int_equal(r.len, 16);
	assert_string_equal(ring_from(&r, 0), "\nl5\nl6\nl7\nl8\nl9\n");
	assert_string_equal(ring_tail(&r, 2), "l8\nl9\n");
	/* More lines asked for than the ring holds: all of it. */
	assert_string_equal(ring_tail(&r, 100), "\nl5\nl6\nl7\nl8\nl9\n");
	/* One write larger than the ring. */
	memset(big, 'x', sizeof big);
	big[sizeof big - 1] = 'y';
	vm_console_ring_add(&r, big, sizeof big);
	assert_int_equal(r.len, 16);
	assert_string_equal(ring_from(&r, 0), "xxxxxxxxxxxxxxxy");
	vm_console_ring_free(&r);
}

static char dir[] = "/tmp/qvmd-test-console.XXXXXX";

static char *
read_file(const char *path)
{
	static char buf[8192];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

static void
test_vm_console_rotate_appender_goes_on(void **state)
{
	char *log = NULL, *old = NULL, *cause = NULL;
	int writer, fd;

	assert_true(asprintf(&log, "%s/rot.log", dir) > 0);
	assert_true(asprintf(&old, "%s/rot.log.1", dir) > 0);
	writer = open(log, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0600);
	assert_true(writer >= 0);
	assert_int_equal(write(writer, "before\n", 7), 7);
	fd = open(log, O_RDWR);
	assert_int_equal(vm_console_rotate(fd, log, &cause), 0);
	assert_string_equal(read_file(old), "before\n");
	assert_string_equal(read_file(log), "");
	/* The appending writer goes on at the start of the emptied log, not after a hole. */
	assert_int_equal(write(writer, "after\n", 6), 6);
	assert_string_equal(read_file(log), "after\n");
	/* A second rotation replaces the .1. */
	assert_int_equal(vm_console_rotate(fd, log, &cause), 0);
	assert_string_equal(read_file(old), "after\n");
	close(fd);
	close(writer);
	unlink(log);
	unlink(old);
	free(log);
	free(old);
}

/* ---- the relay against a stand-in for QEMU ---- */

struct sink {
	char out[8192];
	size_t len;
	char closed[256];
	struct vm_console_client *cl;
	bool detach_on_output;
};

static void
sink_output(void *arg, const void *buf, size_t len)
{
	struct sink *s = arg;

	assert_true(s->len + len < sizeof s->out);
	memcpy(s->out + s->len, buf, len);
	s->len += len;
	s->out[s->len] = '\0';
	if (s->detach_on_output) {
		vm_console_detach(s->cl);
		s->cl = NULL;
	}
}

static void
sink_closed(void *arg, const char *why)
{
	struct sink *s = arg;

	snprintf(s->closed, sizeof s->closed, "%s", why);
	s->cl = NULL;
}

static void
sink_writable(void *arg)
{
}

static const struct vm_console_client_cbs sink_cbs = {sink_output, sink_closed, sink_writable};

static void
run_for(struct event_base *base, int ms)
{
	struct timeval tv = {0, ms * 1000};

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static void
test_vm_console_relay_fans_out_and_rotates(void **state)
{
	struct event_base *base = event_base_new();
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct sink a = {0}, b = {0}, c = {0};
	struct vm_console *con;
	struct evbuffer *typed = evbuffer_new(), *tail = evbuffer_new();
	char *sock = NULL, *log = NULL, *old = NULL, *cause = NULL, buf[64], big[6000];
	int lfd, qemu, logw;
	struct stat st;
	ssize_t n;

	assert_true(asprintf(&sock, "%s/console.sock", dir) > 0);
	assert_true(asprintf(&log, "%s/console.log", dir) > 0);
	assert_true(asprintf(&old, "%s/console.log.1", dir) > 0);
	/* No socket: no console. */
	assert_null(vm_console_open(base, "v", sock, log, 4096, &cause));
	assert_non_null(strstr(cause, "No such file"));
	free(cause);

	strcpy(sun.sun_path, sock);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof sun), 0);
	assert_int_equal(listen(lfd, 1), 0);
	/* What "QEMU" logged before the relay came: it primes --tail. */
	logw = open(log, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0600);
	assert_int_equal(write(logw, "old1\nold2\n", 10), 10);

	con = vm_console_open(base, "v", sock, log, 4096, &cause);
	assert_non_null(con);
	assert_true(vm_console_alive(con));
	qemu = accept(lfd, NULL, NULL);
	assert_true(qemu >= 0);
	a.cl = vm_console_attach(con, &sink_cbs, &a);
	b.cl = vm_console_attach(con, &sink_cbs, &b);
	c.cl = vm_console_attach(con, &sink_cbs, &c);
	c.detach_on_output = true;

	assert_int_equal(write(qemu, "hello\n", 6), 6);
	assert_int_equal(write(logw, "hello\n", 6), 6);
	run_for(base, 50);
	assert_string_equal(a.out, "hello\n");
	assert_string_equal(b.out, "hello\n");
	assert_string_equal(c.out, "hello\n"); /* and it detached itself from inside */
	assert_null(c.cl);
	vm_console_tail(con, 2, tail);
	n = evbuffer_remove(tail, buf, sizeof buf - 1);
	buf[n] = '\0';
	assert_string_equal(buf, "old2\nhello\n");

	/* What a client types reaches the guest. */
	evbuffer_add(typed, "ls\r", 3);
	assert_false(vm_console_input(a.cl, typed));
	assert_int_equal(evbuffer_get_length(typed), 0);
	run_for(base, 50);
	n = read(qemu, buf, sizeof buf);
	assert_int_equal(n, 3);
	assert_memory_equal(buf, "ls\r", 3);

	/* Past log_max the log is rotated. */
	memset(big, 'z', sizeof big);
	assert_int_equal(write(logw, big, sizeof big), (ssize_t)sizeof big);
	assert_int_equal(write(qemu, big, sizeof big), (ssize_t)sizeof big);
	run_for(base, 100);
	assert_int_equal(stat(old, &st), 0);
	assert_int_equal(st.st_size, 10 + 6 + (ssize_t)sizeof big);
	assert_int_equal(stat(log, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(a.len, 6 + sizeof big);

	/* QEMU goes away: every client is told. */
	close(qemu);
	run_for(base, 50);
	assert_false(vm_console_alive(con));
	assert_string_equal(a.closed, "qemu closed the console");
	assert_string_equal(b.closed, "qemu closed the console");
	assert_null(a.cl);
	vm_console_free(con);

	close(logw);
	close(lfd);
	unlink(sock);
	unlink(log);
	unlink(old);
	free(sock);
	free(log);
	free(old);
	evbuffer_free(typed);
	evbuffer_free(tail);
	event_base_free(base);
}

static int
setup(void **state)
{
	return mkdtemp(dir) != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
	return rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vm_console_ring_tail_lines),
	    cmocka_unit_test(test_vm_console_ring_keeps_last_bytes),
	    cmocka_unit_test(test_vm_console_rotate_appender_goes_on),
	    cmocka_unit_test(test_vm_console_relay_fans_out_and_rotates),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
