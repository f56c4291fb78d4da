/*
 * supervisor/control on a real event_base with a stub command table: a client that pipelines
 * without reading stalls itself, a subscriber that does not read is dropped with a last line, idle
 * connections are closed (subscribers and requests in flight are not), an oversized request is
 * refused, and a crowd of connections leaves descriptors free.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "control.h"
#include "control_private.h"
#include "cfg.h"
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static struct daemon d;
static struct control *ctl;
static char dir[] = "/tmp/qvmd-test-control.XXXXXX";
static char path[64];
static unsigned dispatched;
static struct control_reply *held;

/* The VM the console stub serves (console tests set it running). */
static enum vm_state stub_state = VM_STOPPED;
enum vm_state
vm_state(const struct vm *vm)
{
	return stub_state;
}
const char *
vm_name(const struct vm *vm)
{
	return "v";
}
const struct vm_config *
vm_config(const struct vm *vm)
{
	return NULL;
}
bool
vm_is_active(const struct vm *vm)
{
	return stub_state != VM_STOPPED;
}

/* The stub command table: "big" answers 4 KiB, "hold" answers when the test says so,
 * "subscribe" subscribes, anything else answers {}. */
void
control_dispatch(struct control_reply *r, const char *cmd, const char *vm, struct json_object *args)
{
	dispatched++;
	if (strcmp(cmd, "big") == 0) {
		char data[4096];
		struct json_object *res = json_object_new_object();

		memset(data, 'x', sizeof data - 1);
		data[sizeof data - 1] = '\0';
		json_object_object_add(res, "data", json_object_new_string(data));
		control_done(res, PROTO_OK, NULL, r);
	} else if (strcmp(cmd, "console") == 0) {
		control_console(r, (struct vm *)&stub_state, vm, args);
	} else if (strcmp(cmd, "hold") == 0) {
		held = r;
	} else {
		struct json_object *kinds = NULL;

		if (strcmp(cmd, "subscribe") == 0) {
			if (args != NULL)
				json_object_object_get_ex(args, "events", &kinds);
			control_subscribe(r, NULL, kinds);
		}
		control_done(NULL, PROTO_OK, NULL, r);
	}
}

static void
run_for(int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	event_base_loopexit(d.base, &tv);
	event_base_dispatch(d.base);
}

static int
connect_client(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof sun), 0);
	return fd;
}

/* Writes all of buf, running the loop while the socket is full. */
static void
write_all(int fd, const char *buf, size_t len)
{
	for (int i = 0; len > 0 && i < 10000; i++) {
		ssize_t n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0) {
			buf += n;
			len -= (size_t)n;
		} else {
			assert_true(n < 0 && errno == EAGAIN);
			run_for(1);
		}
	}
	assert_int_equal(len, 0);
}

/* Reads what is there (running the loop once first); returns the number of newlines, copies the
 * last complete line to last (if not NULL) and sets *eof at end of stream. */
static size_t
read_lines(int fd, char *last, size_t lastsz, bool *eof)
{
	static char line[65536];
	static size_t ll;
	char buf[65536];
	size_t lines = 0;
	ssize_t n;

	run_for(1);
	while ((n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != '\n') {
				if (ll + 1 < sizeof line)
					line[ll++] = buf[i];
				continue;
			}
			line[ll] = '\0';
			if (last != NULL) {
				/* The tail of a long line is not needed: keep what fits. */
				size_t keep = ll < lastsz ? ll : lastsz - 1;

				memcpy(last, line, keep);
				last[keep] = '\0';
			}
			ll = 0;
			lines++;
		}
	}
	if (eof != NULL)
		*eof = n == 0;
	return lines;
}

static int
setup(void **state)
{
	char *cause = NULL;

	signal(SIGPIPE, SIG_IGN);
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/sock", dir);
	d.base = event_base_new();
	ctl = control_new(&d, path, NULL, &cause);
	assert_non_null(ctl);
	dispatched = 0;
	held = NULL;
	return 0;
}

static int
setup_idle(void **state)
{
	setenv("QVMD_TEST_IDLE_TIMEOUT", "1", 1);
	setup(state);
	unsetenv("QVMD_TEST_IDLE_TIMEOUT");
	return 0;
}

static int
teardown(void **state)
{
	control_free(ctl);
	run_for(1); /* deferred frees */
	event_base_free(d.base);
	rmdir(dir);
	strcpy(dir, "/tmp/qvmd-test-control.XXXXXX");
	return 0;
}

static void
test_control_pipelining_client_stalls(void **state)
{
	const char req[] = "{\"cmd\":\"big\"}\n";
	char *buf = malloc(2000 * (sizeof req - 1));
	size_t got = 0;
	int fd = connect_client();

	for (int i = 0; i < 2000; i++)
		memcpy(buf + i * (sizeof req - 1), req, sizeof req - 1);
	write_all(fd, buf, 2000 * (sizeof req - 1));
	run_for(200);
	/* Its socket takes some answers, 64 KiB more wait: then qvmd stops reading it. */
	assert_true(dispatched > 0);
	assert_true(dispatched < 200);
	assert_int_equal(control_clients(ctl), 1);
	/* Reading lets it go on, to the end. */
	for (int i = 0; i < 100000 && got < 2000; i++)
		got += read_lines(fd, NULL, 0, NULL);
	assert_int_equal(got, 2000);
	assert_int_equal(dispatched, 2000);
	close(fd);
	free(buf);
}

static void
test_control_subscriber_not_reading_dropped(void **state)
{
	char last[512] = "", *data = malloc(8192);
	bool eof = false;
	int fd = connect_client();
	struct json_object *ev = json_object_new_object();

	write_all(fd, "{\"cmd\":\"subscribe\"}\n", 20);
	run_for(20);
	assert_int_equal(read_lines(fd, NULL, 0, NULL), 1);
	memset(data, 'e', 8191);
	data[8191] = '\0';
	json_object_object_add(ev, "data", json_object_new_string(data));
	for (int i = 0; i < 1000; i++) /* 8 MiB of events */
		control_publish(ctl, "vm1", ev);
	json_object_put(ev);
	free(data);
	/* What it was sent before ends at a line; then comes why, then the end. */
	for (int i = 0; i < 1000 && !eof; i++)
		read_lines(fd, last, sizeof last, &eof);
	assert_true(eof);
	assert_non_null(strstr(last, "\"too-slow\""));
	close(fd);
	run_for(20);
	assert_int_equal(control_clients(ctl), 0);
}

/* A subscriber that named event kinds gets those only; one that named none gets all. */
static void
test_control_subscriber_event_kinds(void **state)
{
	char last[512] = "";
	int only = connect_client(), all = connect_client();
	struct json_object *job = json_tokener_parse("{\"event\":\"job\",\"n\":1}");
	struct json_object *qmp = json_tokener_parse("{\"event\":\"qmp\",\"n\":2}");

	write_all(only, "{\"cmd\":\"subscribe\",\"args\":{\"events\":[\"state\",\"job\"]}}\n", 54);
	write_all(all, "{\"cmd\":\"subscribe\"}\n", 20);
	run_for(20);
	assert_int_equal(read_lines(only, NULL, 0, NULL), 1);
	assert_int_equal(read_lines(all, NULL, 0, NULL), 1);
	control_publish(ctl, "vm1", qmp);
	control_publish(ctl, "vm1", job);
	control_publish(ctl, "vm1", qmp);
	assert_int_equal(read_lines(only, last, sizeof last, NULL), 1);
	assert_non_null(strstr(last, "\"job\""));
	assert_int_equal(read_lines(all, NULL, 0, NULL), 3);
	json_object_put(job);
	json_object_put(qmp);
	close(only);
	close(all);
	run_for(20);
}

static void
test_control_idle_client_closed(void **state)
{
	char last[512] = "";
	bool eof = false;
	int silent = connect_client(), sub = connect_client(), busy = connect_client();

	write_all(sub, "{\"cmd\":\"subscribe\"}\n", 20);
	write_all(busy, "{\"id\":7,\"cmd\":\"hold\"}\n", 22);
	run_for(1500);
	read_lines(silent, last, sizeof last, &eof);
	assert_true(eof);
	assert_non_null(strstr(last, "\"idle\""));
	close(silent);
	run_for(20);
	assert_int_equal(control_clients(ctl), 2); /* the subscriber and the request in flight */
	assert_non_null(held);
	control_done(NULL, PROTO_OK, NULL, held);
	assert_int_equal(read_lines(busy, last, sizeof last, NULL), 1);
	assert_non_null(strstr(last, "\"id\":7"));
	close(sub);
	close(busy);
}

static void
test_control_request_too_large(void **state)
{
	size_t len = CONTROL_MAX_REQUEST + 4096;
	char last[512] = "", *big = malloc(len);
	bool eof = false;
	int fd = connect_client(), fd2;

	memset(big, 'x', len);
	write_all(fd, big, len);
	for (int i = 0; i < 1000 && !eof; i++)
		read_lines(fd, last, sizeof last, &eof);
	assert_true(eof);
	assert_non_null(strstr(last, "\"too-large\""));
	close(fd);
	fd2 = connect_client();
	write_all(fd2, "{\"cmd\":\"version\"}\n", 18);
	run_for(20);
	assert_int_equal(read_lines(fd2, NULL, 0, NULL), 1);
	close(fd2);
	free(big);
}

static void
test_control_crowd_leaves_descriptors(void **state)
{
	struct rlimit old, rl;
	char last[512] = "";
	int fds[64], fd, n = 0, status;
	pid_t pid;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	rl = old;
	rl.rlim_cur = 256;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with the test, however it ends */
		setrlimit(RLIMIT_NOFILE, &old);
		for (int i = 0; i < 1000; i++) {
			struct sockaddr_un sun = {.sun_family = AF_UNIX};
			int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);

			snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
			connect(c, (struct sockaddr *)&sun, sizeof sun);
		}
		pause();
		_exit(0);
	}
	run_for(1500);
	/* What a VM start needs is still there. */
	for (n = 0; n < 64; n++) {
		fds[n] = dup(0);
		if (fds[n] < 0)
			break;
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
	assert_int_equal(n, 64);
	/* A new client gets in: the longest idle one makes room. */
	fd = connect_client();
	write_all(fd, "{\"id\":1,\"cmd\":\"version\"}\n", 25);
	for (int i = 0; i < 200 && n == 64; i++) {
		run_for(50);
		if (read_lines(fd, last, sizeof last, NULL) == 1)
			n = 0;
	}
	assert_int_equal(n, 0);
	assert_non_null(strstr(last, "\"ok\":true"));
	close(fd);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	setrlimit(RLIMIT_NOFILE, &old);
}

/* Requests json-c would take differently from their text are refused before dispatch: a key
 * escaping a NUL (json-c cuts keys short there: "all\u0000x" would be "all"), and bytes that are
 * not UTF-8 although json-c's own check lets them through (lead byte F7). */
static void
test_control_refuses_nul_keys_and_bad_utf8(void **state)
{
	static const char *const reqs[] = {
	    "{\"id\":1,\"cmd\":\"x\",\"args\":{\"all\\u0000x\":true}}\n",
	    "{\"id\":2,\"cmd\":\"st\xf7\x9e\x8b\x86t\"}\n",
	    "{\"id\":3,\"cmd\":\"\xed\xa0\x80\"}\n",
	};
	static const char *const want[] = {"a string contains a NUL character", "not valid UTF-8",
	                                   "not valid UTF-8"};
	static const char escaped[] = "{\"id\":4,\"cmd\":\"x\\\\u0000\"}\n";
	char last[512];
	int fd = connect_client();

	for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
		last[0] = '\0';
		write_all(fd, reqs[i], strlen(reqs[i]));
		for (int k = 0; k < 100 && last[0] == '\0'; k++)
			read_lines(fd, last, sizeof last, NULL);
		assert_non_null(strstr(last, "\"invalid\""));
		assert_non_null(strstr(last, want[i]));
	}
	assert_int_equal(dispatched, 0);
	/* An escaped backslash before "u0000" is text, not a NUL. */
	last[0] = '\0';
	write_all(fd, escaped, sizeof escaped - 1);
	for (int k = 0; k < 100 && last[0] == '\0'; k++)
		read_lines(fd, last, sizeof last, NULL);
	assert_int_equal(dispatched, 1);
	close(fd);
}

/* ---- console sessions, against a stand-in for QEMU's console socket ---- */

/* The stand-in's listening socket at dir/v/qemu/console.sock (the daemon's paths point at dir). */
static int
console_qemu_listen(struct daemon_config *conf)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char p[128];
	int fd;

	conf->run_dir = dir;
	conf->state_dir = dir;
	conf->console_log_max = CFG_CONSOLE_LOG_MAX_DEFAULT;
	d.conf = conf;
	snprintf(p, sizeof p, "%s/v", dir);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof p, "%s/v/qemu", dir);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s/v/qemu/console.sock", dir);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static void
console_qemu_cleanup(int lfd)
{
	char p[128];

	close(lfd);
	snprintf(p, sizeof p, "%s/v/qemu/console.sock", dir);
	unlink(p);
	snprintf(p, sizeof p, "%s/v/qemu", dir);
	rmdir(p);
	snprintf(p, sizeof p, "%s/v", dir);
	rmdir(p);
	d.conf = NULL;
}

/* What a console client received: the reply line, then frames. */
struct frames {
	char line[512];
	bool have_line;
	char out[4096]; /* 'o' payloads: the first bytes */
	size_t outlen;
	char end[512]; /* the 'e' payload */
	bool eof;
	char buf[256 * 1024];
	size_t len;
};

static void
frames_read(int fd, struct frames *f)
{
	ssize_t n;

	run_for(1);
	while ((n = recv(fd, f->buf + f->len, sizeof f->buf - f->len, MSG_DONTWAIT)) > 0) {
		size_t off = 0;

		f->len += (size_t)n;
		if (!f->have_line) {
			char *nl = memchr(f->buf, '\n', f->len);

			if (nl == NULL)
				continue;
			assert_true((size_t)(nl - f->buf) < sizeof f->line);
			memcpy(f->line, f->buf, (size_t)(nl - f->buf));
			f->have_line = true;
			off = (size_t)(nl - f->buf) + 1;
		}
		while (f->len - off >= 5) {
			const unsigned char *h = (const unsigned char *)f->buf + off;
			size_t len =
			    (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];

			if (f->len - off - 5 < len)
				break;
			if (h[0] == 'o') {
				/* The first bytes are kept, the rest only counted. */
				size_t keep = f->outlen < sizeof f->out - 1
				                  ? sizeof f->out - 1 - f->outlen
				                  : 0;

				keep = keep < len ? keep : len;
				memcpy(f->out + f->outlen, h + 5, keep);
				f->outlen += len;
				f->out[f->outlen < sizeof f->out ? f->outlen : sizeof f->out - 1] =
				    '\0';
			} else {
				assert_int_equal(h[0], 'e');
				assert_true(len < sizeof f->end);
				memcpy(f->end, h + 5, len);
			}
			off += 5 + len;
		}
		memmove(f->buf, f->buf + off, f->len - off);
		f->len -= off;
	}
	if (n == 0)
		f->eof = true;
}

static int
console_attach(const char *args)
{
	char req[256];
	int fd = connect_client();

	snprintf(req, sizeof req, "{\"id\":1,\"cmd\":\"console\",\"vm\":\"v\"%s}\n", args);
	write_all(fd, req, strlen(req));
	return fd;
}

/*
 * A console session: the reply line, then the guest's output as frames to every client and what
 * one types to the guest; not closed as idle; a client that does not read is dropped with a
 * too-slow end while the guest goes on and the other client gets everything; a subscriber cannot
 * upgrade; the end of QEMU ends the sessions with not-running.
 */
static void
test_control_console_session(void **state)
{
	struct daemon_config conf = {0};
	static struct frames a, b;
	int lfd = console_qemu_listen(&conf), qemu, fa, fb, fs;
	const char *sub_then_console =
	    "{\"cmd\":\"subscribe\"}\n{\"id\":2,\"cmd\":\"console\",\"vm\":\"v\"}\n";
	char typed[16], chunk[64 * 1024], last[512] = "";
	size_t sent = 0;

	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	stub_state = VM_STOPPED;
	fa = console_attach("");
	for (int k = 0; k < 100 && !a.have_line; k++)
		frames_read(fa, &a);
	assert_non_null(strstr(a.line, "\"code\":\"not-running\""));
	close(fa);
	memset(&a, 0, sizeof a);

	stub_state = VM_RUNNING;
	fa = console_attach("");
	for (int k = 0; k < 100 && !a.have_line; k++)
		frames_read(fa, &a);
	assert_non_null(strstr(a.line, "\"ok\":true"));
	qemu = accept(lfd, NULL, NULL);
	assert_true(qemu >= 0);
	fcntl(qemu, F_SETFL, O_NONBLOCK);
	assert_int_equal(write(qemu, "hello\n", 6), 6);
	for (int k = 0; k < 100 && a.outlen < 6; k++)
		frames_read(fa, &a);
	assert_string_equal(a.out, "hello\n");
	/* --tail from the ring. */
	fb = console_attach(",\"args\":{\"tail\":1}");
	for (int k = 0; k < 100 && b.outlen < 6; k++)
		frames_read(fb, &b);
	assert_string_equal(b.out, "hello\n");
	/* Typed bytes reach the guest as they are. */
	write_all(fa, "ls\r\n", 4);
	for (int k = 0; k < 100 && recv(qemu, typed, sizeof typed, MSG_DONTWAIT | MSG_PEEK) < 4;
	     k++)
		run_for(1);
	assert_int_equal(recv(qemu, typed, sizeof typed, MSG_DONTWAIT), 4);
	assert_memory_equal(typed, "ls\r\n", 4);
	/* Idle for longer than the idle timeout (1 s here): not closed. */
	run_for(1500);
	frames_read(fa, &a);
	assert_false(a.eof);
	/* A subscriber cannot upgrade. */
	fs = connect_client();
	write_all(fs, sub_then_console, strlen(sub_then_console));
	for (int k = 0; k < 100 && strstr(last, "busy") == NULL; k++)
		read_lines(fs, last, sizeof last, NULL);
	assert_non_null(strstr(last, "\"code\":\"busy\""));
	close(fs);
	/* 3 MiB of output: b never reads and is dropped; the guest's writes never wait; a gets it
	 * all. */
	memset(chunk, 'x', sizeof chunk);
	while (sent < 3u * 1024 * 1024) {
		ssize_t n = write(qemu, chunk, sizeof chunk);

		if (n > 0)
			sent += (size_t)n;
		frames_read(fa, &a);
	}
	for (int k = 0; k < 1000 && a.outlen < 6 + sent; k++)
		frames_read(fa, &a);
	assert_int_equal(a.outlen, 6 + sent);
	for (int k = 0; k < 1000 && !b.eof; k++)
		frames_read(fb, &b);
	assert_true(b.eof);
	assert_non_null(strstr(b.end, "\"code\":\"too-slow\""));
	/* QEMU goes away. */
	close(qemu);
	for (int k = 0; k < 1000 && !a.eof; k++)
		frames_read(fa, &a);
	assert_true(a.eof);
	assert_non_null(strstr(a.end, "\"code\":\"not-running\""));
	assert_non_null(strstr(a.end, "qemu closed the console"));
	close(fa);
	close(fb);
	control_free(ctl);
	ctl = NULL;
	console_qemu_cleanup(lfd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_control_pipelining_client_stalls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_control_subscriber_event_kinds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_control_subscriber_not_reading_dropped, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_control_idle_client_closed, setup_idle, teardown),
	    cmocka_unit_test_setup_teardown(test_control_request_too_large, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_control_crowd_leaves_descriptors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_control_refuses_nul_keys_and_bad_utf8, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_control_console_session, setup_idle, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
