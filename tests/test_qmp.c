/*
 * test_qmp.c: qmp/ against the scripted fake peer (tests/util/fake_qmp.c) on a real event_base.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <json-c/json.h>

#include "fake_qmp.h"
#include "qmp.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#define MAX_EVENTS 8

struct t;

/* What one command's callback saw. */
struct rec {
	struct t *t;
	int calls;
	int order; /* 1-based position among all replies */
	enum qmp_status status;
	char *result; /* the "return" value as JSON */
	char *error_class;
	char *error_desc;
	char *command;
	void (*then)(struct rec *); /* runs inside the callback */
	int64_t id;
};

struct t {
	struct event_base *base;
	struct event *deadline;
	int timed_out;
	struct fake_qmp *fq;
	struct qmp_conn *conn;
	int client_fd;
	int ready;
	int closed;
	char *closed_cause;
	int replies;
	int nevents;
	char *ev_name[MAX_EVENTS];
	char *ev_data[MAX_EVENTS];
	int64_t ev_sec[MAX_EVENTS], ev_usec[MAX_EVENTS];
	int checked_not_ready;
	/* trace */
	int ntrace_in, ntrace_out;
	size_t trace_longest;
	int trace_saw_caps, trace_saw_return_prefix;
	int64_t cancel_id;
};

static void
on_ready(struct qmp_conn *conn, void *arg)
{
	struct t *t = arg;

	t->ready++;
}

static void
on_event(struct qmp_conn *conn, const char *name, struct json_object *data, int64_t seconds,
         int64_t microseconds, void *arg)
{
	struct t *t = arg;

	if (t->nevents < MAX_EVENTS) {
		t->ev_name[t->nevents] = strdup(name);
		t->ev_data[t->nevents] =
		    data != NULL ? strdup(json_object_to_json_string(data)) : NULL;
		t->ev_sec[t->nevents] = seconds;
		t->ev_usec[t->nevents] = microseconds;
	}
	t->nevents++;
}

static void
on_closed(struct qmp_conn *conn, const char *cause, void *arg)
{
	struct t *t = arg;

	t->closed++;
	free(t->closed_cause);
	t->closed_cause = strdup(cause);
}

static void
on_trace(struct qmp_conn *conn, const char *dir, const char *buf, size_t len, void *arg)
{
	struct t *t = arg;

	if (strcmp(dir, "in") == 0)
		t->ntrace_in++;
	else
		t->ntrace_out++;
	if (len > t->trace_longest)
		t->trace_longest = len;
	if (strcmp(dir, "out") == 0 && memmem(buf, len, "qmp_capabilities", 16) != NULL)
		t->trace_saw_caps = 1;
	if (strcmp(dir, "in") == 0 && len == 1024 && strncmp(buf, "{ \"return\"", 10) == 0)
		t->trace_saw_return_prefix = 1;
}

static void
on_reply(struct qmp_conn *conn, const struct qmp_reply *reply, void *arg)
{
	struct rec *r = arg;

	r->calls++;
	r->order = ++r->t->replies;
	r->status = reply->status;
	free(r->result);
	free(r->error_class);
	free(r->error_desc);
	free(r->command);
	r->result =
	    reply->result != NULL
	        ? strdup(json_object_to_json_string_ext(reply->result, JSON_C_TO_STRING_PLAIN))
	        : NULL;
	r->error_class = reply->error_class != NULL ? strdup(reply->error_class) : NULL;
	r->error_desc = reply->error_desc != NULL ? strdup(reply->error_desc) : NULL;
	r->command = reply->command != NULL ? strdup(reply->command) : NULL;
	if (r->then != NULL)
		r->then(r);
}

static void
rec_clear(struct rec *r)
{
	free(r->result);
	free(r->error_class);
	free(r->error_desc);
	free(r->command);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct t *t = arg;

	t->timed_out = 1;
}

static int
setup(void **state)
{
	struct t *t = calloc(1, sizeof *t);
	struct qmp_callbacks cbs = {on_ready, on_event, on_closed, NULL, t};
	/* A guard against hangs, not a speed target: the fake peer reads one byte per recvmsg (as
	 * QEMU does), and 512 KiB take tens of seconds under ASan on a loaded two-core machine. */
	struct timeval tv = {180, 0};

	t->base = event_base_new();
	t->deadline = evtimer_new(t->base, deadline_cb, t);
	evtimer_add(t->deadline, &tv);
	t->fq = fake_qmp_new(t->base, &t->client_fd);
	assert_non_null(t->fq);
	t->conn = qmp_conn_new(t->base, &cbs);
	*state = t;
	return 0;
}

static int
teardown(void **state)
{
	struct t *t = *state;

	qmp_conn_free(t->conn);
	fake_qmp_free(t->fq);
	if (t->client_fd != -1)
		close(t->client_fd);
	event_free(t->deadline);
	event_base_free(t->base);
	for (int i = 0; i < MAX_EVENTS; i++) {
		free(t->ev_name[i]);
		free(t->ev_data[i]);
	}
	free(t->closed_cause);
	free(t);
	return 0;
}

/* Hands the client end of the socketpair to the connection. */
static void
start(struct t *t)
{
	char *cause = NULL;

	assert_int_equal(qmp_conn_connect_fd(t->conn, t->client_fd, &cause), 0);
	t->client_fd = -1;
}

/* Runs the loop until *flag becomes non-zero (or the fake fails, or the guard fires). */
static void
run_until(struct t *t, const int *flag)
{
	while (!*flag && !t->timed_out && fake_qmp_failure(t->fq) == NULL)
		event_base_loop(t->base, EVLOOP_ONCE);
	if (fake_qmp_failure(t->fq) != NULL)
		fail_msg("fake_qmp: %s", fake_qmp_failure(t->fq));
	if (t->timed_out)
		fail_msg("timed out waiting");
}

static void
run_for(struct t *t, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	event_base_loopexit(t->base, &tv);
	event_base_dispatch(t->base);
}

static void
run_ready(struct t *t)
{
	start(t);
	fake_qmp_handshake(t->fq);
	run_until(t, &t->ready);
}

static int64_t
exec(struct t *t, const char *cmd, const char *args, int timeout_ms, struct rec *r)
{
	struct json_object *a = args != NULL ? json_tokener_parse(args) : NULL;
	char *cause = NULL;
	int64_t id;

	r->t = t;
	id = qmp_execute(t->conn, cmd, a, timeout_ms, on_reply, r, &cause);
	json_object_put(a);
	if (id == -1)
		fail_msg("qmp_execute %s: %s", cmd, cause);
	assert_true(id > 0);
	/* Never from inside qmp_execute. */
	assert_int_equal(r->calls, 0);
	r->id = id;
	return id;
}

static void
check_not_ready(void *arg)
{
	struct t *t = arg;

	/* The greeting has been read and qmp_capabilities sent, but not yet answered. */
	if (t->ready == 0 && !qmp_conn_is_ready(t->conn))
		t->checked_not_ready = 1;
}

static void
test_qmp_ready_after_capabilities_reply(void **state)
{
	struct t *t = *state;
	struct json_object *g, *v;
	int caps;

	start(t);
	fake_qmp_greeting(t->fq);
	caps = fake_qmp_expect_later(t->fq, "qmp_capabilities", NULL, "{\"return\": {}}");
	fake_qmp_sleep(t->fq, 30);
	fake_qmp_call(t->fq, check_not_ready, t);
	fake_qmp_reply(t->fq, caps);
	run_until(t, &t->ready);
	assert_int_equal(t->checked_not_ready, 1);
	assert_int_equal(t->ready, 1);
	assert_true(qmp_conn_is_ready(t->conn));
	g = qmp_conn_greeting(t->conn);
	assert_non_null(g);
	assert_true(json_object_object_get_ex(g, "version", &v));
	assert_true(json_object_object_get_ex(v, "qemu", &v));
	assert_true(json_object_object_get_ex(v, "major", &v));
	assert_int_equal(json_object_get_int(v), 7);
	fake_qmp_assert_done(t->fq);
}

static void
test_qmp_greeting_without_qmp_key_closes(void **state)
{
	struct t *t = *state;
	struct rec r = {0};

	exec(t, "query-status", NULL, 0, &r);
	start(t);
	fake_qmp_send(t->fq, "{\"hello\": {\"version\": {}}}\r\n");
	run_until(t, &t->closed);
	assert_int_equal(t->closed, 1);
	assert_int_equal(t->ready, 0);
	assert_non_null(strstr(t->closed_cause, "greeting has no \"QMP\" key"));
	assert_null(qmp_conn_greeting(t->conn));
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.status, QMP_DISCONNECTED);
	fake_qmp_assert_done(t->fq);
	rec_clear(&r);
}

static void
test_qmp_handshake_timeout(void **state)
{
	struct t *t = *state;

	qmp_conn_set_handshake_timeout(t->conn, 50);
	start(t);
	run_until(t, &t->closed);
	assert_string_equal(t->closed_cause, "no QMP greeting within 50 ms");
	assert_int_equal(t->ready, 0);
}

static void
test_qmp_commands_queued_before_ready(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0};

	exec(t, "query-status", NULL, 0, &a);
	exec(t, "query-name", NULL, 0, &b);
	assert_int_equal(qmp_conn_pending(t->conn), 2);
	start(t);
	/* The fake fails if anything but qmp_capabilities comes first. */
	fake_qmp_handshake(t->fq);
	fake_qmp_expect(t->fq, "query-status", NULL, "{\"return\": {\"status\": \"running\"}}");
	fake_qmp_expect(t->fq, "query-name", NULL, "{\"return\": {\"name\": \"vm1\"}}");
	run_until(t, &b.calls);
	assert_int_equal(t->ready, 1);
	assert_int_equal(a.calls, 1);
	assert_string_equal(a.result, "{\"status\":\"running\"}");
	assert_string_equal(b.result, "{\"name\":\"vm1\"}");
	assert_true(a.order < b.order);
	assert_int_equal(qmp_conn_pending(t->conn), 0);
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
	rec_clear(&b);
}

static void
test_qmp_execute_return_and_error(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0};

	run_ready(t);
	fake_qmp_expect(t->fq, "query-status", NULL,
	                "{\"return\": {\"status\": \"paused\", \"running\": false}}");
	fake_qmp_expect(t->fq, "device_add", "{\"driver\": \"virtio-net-pci\", \"id\": \"nic1\"}",
	                "{\"error\": {\"class\": \"GenericError\", "
	                "\"desc\": \"Duplicate ID 'nic1' for device\"}}");
	exec(t, "query-status", NULL, 0, &a);
	exec(t, "device_add", "{\"driver\": \"virtio-net-pci\", \"id\": \"nic1\"}", 0, &b);
	run_until(t, &b.calls);
	assert_int_equal(a.status, QMP_OK);
	assert_string_equal(a.command, "query-status");
	assert_string_equal(a.result, "{\"status\":\"paused\",\"running\":false}");
	assert_null(a.error_class);
	assert_int_equal(b.status, QMP_ERROR);
	assert_string_equal(b.command, "device_add");
	assert_string_equal(b.error_class, "GenericError");
	assert_string_equal(b.error_desc, "Duplicate ID 'nic1' for device");
	assert_null(b.result);
	assert_int_equal(t->closed, 0);
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
	rec_clear(&b);
}

static void
test_qmp_pipelined_out_of_order(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0}, c = {0};
	int ia, ib, ic;

	run_ready(t);
	ia = fake_qmp_expect_later(t->fq, "query-status", NULL, "{\"return\": {\"n\": 1}}");
	ib = fake_qmp_expect_later(t->fq, "query-name", NULL, "{\"return\": {\"n\": 2}}");
	ic = fake_qmp_expect_later(t->fq, "query-kvm", NULL, "{\"return\": {\"n\": 3}}");
	/* Three replies in reverse-ish order, written together. */
	fake_qmp_reply(t->fq, ic);
	fake_qmp_reply(t->fq, ia);
	fake_qmp_reply(t->fq, ib);
	exec(t, "query-status", NULL, 0, &a);
	exec(t, "query-name", NULL, 0, &b);
	exec(t, "query-kvm", NULL, 0, &c);
	assert_int_equal(qmp_conn_pending(t->conn), 3);
	run_until(t, &b.calls);
	assert_string_equal(a.result, "{\"n\":1}");
	assert_string_equal(b.result, "{\"n\":2}");
	assert_string_equal(c.result, "{\"n\":3}");
	assert_int_equal(c.order, 1);
	assert_int_equal(a.order, 2);
	assert_int_equal(b.order, 3);
	assert_int_equal(a.calls + b.calls + c.calls, 3);
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
	rec_clear(&b);
	rec_clear(&c);
}

static void
test_qmp_unknown_id_discarded(void **state)
{
	struct t *t = *state;
	struct rec a = {0};
	int ia;

	run_ready(t);
	ia = fake_qmp_expect_later(t->fq, "query-status", NULL, "{\"return\": {\"mine\": true}}");
	fake_qmp_send(t->fq, "{\"return\": {\"bogus\": 1}, \"id\": 999999}\r\n");
	fake_qmp_send(t->fq, "{\"return\": {\"bogus\": 2}, \"id\": \"someone-else\"}\r\n");
	fake_qmp_send(t->fq, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}, "
	                     "\"id\": -3}\r\n");
	fake_qmp_reply(t->fq, ia);
	exec(t, "query-status", NULL, 0, &a);
	run_until(t, &a.calls);
	run_for(t, 20);
	assert_int_equal(a.calls, 1);
	assert_string_equal(a.result, "{\"mine\":true}");
	assert_int_equal(t->closed, 0);
	assert_true(qmp_conn_is_ready(t->conn));
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
}

static void
test_qmp_duplicate_reply_discarded(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0};
	int ia, ib;

	run_ready(t);
	ia = fake_qmp_expect(t->fq, "query-status", NULL, "{\"return\": {\"n\": 1}}");
	ib = fake_qmp_expect_later(t->fq, "query-name", NULL, "{\"return\": {\"n\": 2}}");
	fake_qmp_reply(t->fq, ia); /* again, while query-name is pending */
	fake_qmp_sleep(t->fq, 20);
	fake_qmp_reply(t->fq, ib);
	exec(t, "query-status", NULL, 0, &a);
	exec(t, "query-name", NULL, 0, &b);
	run_until(t, &b.calls);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 1);
	assert_string_equal(b.result, "{\"n\":2}");
	assert_int_equal(t->closed, 0);
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
	rec_clear(&b);
}

static void
test_qmp_reply_without_id_closes(void **state)
{
	struct t *t = *state;
	struct rec a = {0};

	run_ready(t);
	fake_qmp_expect(t->fq, "query-status", NULL, NULL);
	fake_qmp_send(t->fq, "{\"return\": {}}\r\n");
	exec(t, "query-status", NULL, 0, &a);
	run_until(t, &t->closed);
	assert_string_equal(t->closed_cause, "protocol error: reply without id");
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, QMP_DISCONNECTED);
	assert_string_equal(a.error_desc, "protocol error: reply without id");
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
}

static void
test_qmp_timeout_then_late_reply(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0};
	int ia;

	run_ready(t);
	ia = fake_qmp_expect_later(t->fq, "device_del", NULL, "{\"return\": {\"late\": true}}");
	fake_qmp_sleep(t->fq, 150);
	fake_qmp_reply(t->fq, ia);
	fake_qmp_expect(t->fq, "query-status", NULL, "{\"return\": {\"ok\": 1}}");
	exec(t, "device_del", "{\"id\": \"nic1\"}", 50, &a);
	run_until(t, &a.calls);
	assert_int_equal(a.status, QMP_TIMEOUT);
	assert_string_equal(a.error_desc, "device_del: no reply within 50 ms");
	assert_string_equal(a.command, "device_del");
	assert_int_equal(qmp_conn_pending(t->conn), 0);
	/* The late reply must not reach a later command or close the connection. */
	exec(t, "query-status", NULL, 0, &b);
	run_until(t, &b.calls);
	assert_int_equal(a.calls, 1);
	assert_string_equal(b.result, "{\"ok\":1}");
	assert_int_equal(t->closed, 0);
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
	rec_clear(&b);
}

static void
test_qmp_default_timeouts(void **state)
{
	assert_int_equal(qmp_default_timeout_ms("query-status"), 5000);
	assert_int_equal(qmp_default_timeout_ms("query-qmp-schema"), 5000);
	assert_int_equal(qmp_default_timeout_ms("qom-list"), 5000);
	assert_int_equal(qmp_default_timeout_ms("device_add"), 60000);
	assert_int_equal(qmp_default_timeout_ms("device_del"), 60000);
	assert_int_equal(qmp_default_timeout_ms("blockdev-add"), 60000);
	assert_int_equal(qmp_default_timeout_ms("blockdev-del"), 60000);
	assert_int_equal(qmp_default_timeout_ms("netdev_add"), 60000);
	assert_int_equal(qmp_default_timeout_ms("netdev_del"), 60000);
	assert_int_equal(qmp_default_timeout_ms("getfd"), 60000);
	assert_int_equal(qmp_default_timeout_ms("quit"), 10000);
	assert_int_equal(qmp_default_timeout_ms("cont"), 30000);
	assert_int_equal(qmp_default_timeout_ms("system_powerdown"), 30000);
}

static void
test_qmp_events(void **state)
{
	struct t *t = *state;
	int two = 2;

	run_ready(t);
	fake_qmp_send(t->fq, "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 123456}, "
	                     "\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"nic1\", "
	                     "\"path\": \"/machine/peripheral/nic1\"}}\r\n");
	fake_qmp_send(t->fq, "{\"timestamp\": {\"seconds\": 1700000001, \"microseconds\": 7}, "
	                     "\"event\": \"STOP\"}\r\n");
	while (t->nevents < two && !t->timed_out)
		event_base_loop(t->base, EVLOOP_ONCE);
	assert_int_equal(t->nevents, 2);
	assert_string_equal(t->ev_name[0], "DEVICE_DELETED");
	assert_string_equal(
	    t->ev_data[0],
	    "{ \"device\": \"nic1\", \"path\": \"\\/machine\\/peripheral\\/nic1\" }");
	assert_int_equal(t->ev_sec[0], 1700000000);
	assert_int_equal(t->ev_usec[0], 123456);
	assert_string_equal(t->ev_name[1], "STOP");
	assert_null(t->ev_data[1]);
	assert_int_equal(t->ev_sec[1], 1700000001);
	assert_int_equal(t->ev_usec[1], 7);
	fake_qmp_assert_done(t->fq);
}

static void
test_qmp_eof_fails_pending_once(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0}, c = {0};
	char *cause = NULL;

	run_ready(t);
	fake_qmp_expect(t->fq, "query-status", NULL, NULL);
	fake_qmp_expect(t->fq, "device_add", NULL, NULL);
	fake_qmp_close(t->fq);
	exec(t, "query-status", NULL, 0, &a);
	exec(t, "device_add", "{\"driver\": \"e1000\"}", 0, &b);
	run_until(t, &t->closed);
	run_for(t, 20);
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->closed_cause, "connection closed by peer");
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, QMP_DISCONNECTED);
	assert_string_equal(a.error_desc, "connection closed by peer");
	assert_string_equal(a.command, "query-status");
	assert_int_equal(b.calls, 1);
	assert_int_equal(b.status, QMP_DISCONNECTED);
	assert_int_equal(qmp_conn_pending(t->conn), 0);
	assert_false(qmp_conn_is_ready(t->conn));
	/* Sticky: later commands are refused at once, without a callback. */
	c.t = t;
	assert_int_equal(qmp_execute(t->conn, "query-status", NULL, 0, on_reply, &c, &cause), -1);
	assert_string_equal(cause, "connection closed by peer");
	assert_string_equal(qmp_conn_error(t->conn), "connection closed by peer");
	run_for(t, 10);
	assert_int_equal(c.calls, 0);
	free(cause);
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
	rec_clear(&b);
}

static void
test_qmp_eof_mid_message(void **state)
{
	struct t *t = *state;
	struct rec a = {0};

	run_ready(t);
	fake_qmp_expect(t->fq, "query-status", NULL, NULL);
	fake_qmp_send(t->fq, "{\"return\": {\"sta");
	fake_qmp_close(t->fq);
	exec(t, "query-status", NULL, 0, &a);
	run_until(t, &t->closed);
	assert_string_equal(t->closed_cause,
	                    "connection closed by peer in the middle of a message");
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, QMP_DISCONNECTED);
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
}

static void
test_qmp_garbage_closes(void **state)
{
	struct t *t = *state;
	struct rec a = {0};

	run_ready(t);
	fake_qmp_expect(t->fq, "query-status", NULL, NULL);
	fake_qmp_send(t->fq, "\x01\x02 garbage}}\r\n");
	exec(t, "query-status", NULL, 0, &a);
	run_until(t, &t->closed);
	assert_non_null(strstr(t->closed_cause, "invalid JSON from peer"));
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, QMP_DISCONNECTED);
	assert_non_null(strstr(a.error_desc, "invalid JSON from peer"));
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
}

static void
test_qmp_truncated_json_closes(void **state)
{
	struct t *t = *state;
	int ia;
	struct rec a = {0};

	run_ready(t);
	/* A message cut short and followed by a complete one: the parser must not resync. */
	ia = fake_qmp_expect_later(t->fq, "query-status", NULL, "{\"return\": {}}");
	fake_qmp_send(t->fq, "{\"return\": [1, 2\r\n");
	fake_qmp_reply(t->fq, ia);
	exec(t, "query-status", NULL, 0, &a);
	run_until(t, &t->closed);
	assert_non_null(strstr(t->closed_cause, "invalid JSON from peer"));
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, QMP_DISCONNECTED);
	rec_clear(&a);
}

static void
test_qmp_non_object_message_closes(void **state)
{
	struct t *t = *state;

	run_ready(t);
	fake_qmp_send(t->fq, "[1, 2, 3]\r\n");
	run_until(t, &t->closed);
	assert_string_equal(t->closed_cause, "protocol error: message is not a JSON object");
}

static void
test_qmp_oversized_message_streamed(void **state)
{
	struct t *t = *state;
	struct rec a = {0};
	const size_t total = 100u * 1024 * 1024;

	run_ready(t);
	fake_qmp_expect(t->fq, "query-qmp-schema", NULL, NULL);
	fake_qmp_stream(t->fq, "{\"return\": \"", 'x', total, "\"}\r\n");
	exec(t, "query-qmp-schema", NULL, -1, &a);
	run_until(t, &t->closed);
	assert_string_equal(t->closed_cause, "message larger than 67108864 bytes");
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, QMP_DISCONNECTED);
	assert_string_equal(a.error_desc, "message larger than 67108864 bytes");
	/* The client stopped reading near the limit instead of swallowing 100 MB. */
	while (!fake_qmp_done(t->fq) && !t->timed_out)
		event_base_loop(t->base, EVLOOP_ONCE);
	assert_true(fake_qmp_client_gone(t->fq));
	assert_true(fake_qmp_streamed(t->fq) < QMP_DEFAULT_MAX_MESSAGE + 8u * 1024 * 1024);
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
}

/* Sends an event whose JSON text is exactly len bytes (plus CRLF). */
static void
send_event_of_size(struct fake_qmp *fq, size_t len)
{
	const char *head = "{\"event\": \"BIG\", \"data\": {\"s\": \"";
	const char *tail = "\"}}";
	size_t fill = len - strlen(head) - strlen(tail);
	char *buf = malloc(len + 3);

	memcpy(buf, head, strlen(head));
	memset(buf + strlen(head), 'y', fill);
	memcpy(buf + strlen(head) + fill, tail, strlen(tail));
	memcpy(buf + len, "\r\n", 3);
	fake_qmp_send(fq, buf);
	free(buf);
}

static void
test_qmp_max_message_limit(void **state)
{
	struct t *t = *state;

	qmp_conn_set_max_message(t->conn, 1024);
	run_ready(t);
	send_event_of_size(t->fq, 1024);
	send_event_of_size(t->fq, 1025);
	run_until(t, &t->closed);
	assert_int_equal(t->nevents, 1);
	assert_string_equal(t->ev_name[0], "BIG");
	assert_string_equal(t->closed_cause, "message larger than 1024 bytes");
}

static void
test_qmp_byte_at_a_time(void **state)
{
	struct t *t = *state;
	struct rec a = {0};

	fake_qmp_set_chunk(t->fq, 1);
	start(t);
	fake_qmp_handshake(t->fq);
	fake_qmp_send(t->fq, "{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, "
	                     "\"microseconds\": 2}}\r\n");
	fake_qmp_expect(t->fq, "query-status", NULL,
	                "{\"return\": {\"status\": \"running\", \"singlestep\": false, "
	                "\"running\": true}}");
	exec(t, "query-status", NULL, 0, &a);
	run_until(t, &a.calls);
	assert_int_equal(t->ready, 1);
	assert_int_equal(t->nevents, 1);
	assert_string_equal(t->ev_name[0], "RESUME");
	assert_int_equal(a.status, QMP_OK);
	assert_string_equal(a.result,
	                    "{\"status\":\"running\",\"singlestep\":false,\"running\":true}");
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
}

static void
test_qmp_several_messages_in_one_write(void **state)
{
	struct t *t = *state;
	int three = 3;

	run_ready(t);
	fake_qmp_send(t->fq, "{\"event\": \"A\"}\r\n{\"event\": \"B\"}{\"event\": \"C\", "
	                     "\"data\": {}}\r\n");
	while (t->nevents < three && !t->timed_out)
		event_base_loop(t->base, EVLOOP_ONCE);
	assert_int_equal(t->nevents, 3);
	assert_string_equal(t->ev_name[0], "A");
	assert_string_equal(t->ev_name[1], "B");
	assert_string_equal(t->ev_name[2], "C");
	assert_int_equal(t->closed, 0);
}

static void
test_qmp_crlf_framing(void **state)
{
	struct t *t = *state;
	int two = 2;

	start(t);
	fake_qmp_send(t->fq, "\r\n \t\n");
	fake_qmp_handshake(t->fq);
	fake_qmp_send(t->fq, "\r\n\r\n{\"event\": \"A\"}\r\n\r\n  \t\r\n{\"event\": \"B\"}\n\n");
	while ((t->nevents < two || !t->ready) && !t->timed_out)
		event_base_loop(t->base, EVLOOP_ONCE);
	assert_int_equal(t->ready, 1);
	assert_int_equal(t->nevents, 2);
	assert_int_equal(t->closed, 0);
	fake_qmp_assert_done(t->fq);
}

/* A query-qmp-schema-sized reply: an array of n small objects. */
static char *
big_reply(int n, size_t *len)
{
	struct json_object *ret = json_object_new_array(), *msg = json_object_new_object();
	char name[64];
	char *s;

	for (int i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();
		snprintf(name, sizeof name, "command-%d", i);
		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "meta-type", json_object_new_string("command"));
		json_object_object_add(o, "arg-type", json_object_new_string("0"));
		json_object_object_add(o, "ret-type", json_object_new_string("1"));
		json_object_array_add(ret, o);
	}
	json_object_object_add(msg, "return", ret);
	s = strdup(json_object_to_json_string_ext(msg, JSON_C_TO_STRING_SPACED));
	*len = strlen(s);
	json_object_put(msg);
	return s;
}

static void
test_qmp_large_reply(void **state)
{
	struct t *t = *state;
	struct rec a = {0};
	struct json_object *res;
	size_t len;
	char *reply = big_reply(6000, &len);

	assert_true(len > 400 * 1024);
	run_ready(t);
	fake_qmp_expect(t->fq, "query-qmp-schema", NULL, reply);
	exec(t, "query-qmp-schema", NULL, 0, &a);
	run_until(t, &a.calls);
	assert_int_equal(a.status, QMP_OK);
	res = json_tokener_parse(a.result);
	assert_non_null(res);
	assert_int_equal(json_object_array_length(res), 6000);
	json_object_put(res);
	fake_qmp_assert_done(t->fq);
	free(reply);
	rec_clear(&a);
}

static void
test_qmp_fd_passing(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0}, c = {0};
	char dir[] = "/tmp/test_qmp.XXXXXX", path[64], *cause = NULL;
	struct json_object *args = json_tokener_parse("{\"fdname\": \"tap0\"}");
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/file", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	unlink(path);
	rmdir(dir);

	run_ready(t);
	fake_qmp_expect(t->fq, "query-status", NULL, "{\"return\": {}}");
	fake_qmp_expect_fd(t->fq, "getfd", "{\"fdname\": \"tap0\"}", "{\"return\": {}}", fd);
	fake_qmp_expect(t->fq, "query-name", NULL, "{\"return\": {}}");
	/* query-status sits in the output buffer when getfd is issued: the fd must wait for it. */
	exec(t, "query-status", NULL, 0, &a);
	b.t = t;
	assert_true(qmp_execute_fd(t->conn, "getfd", args, fd, 0, on_reply, &b, &cause) > 0);
	assert_int_equal(b.calls, 0);
	exec(t, "query-name", NULL, 0, &c);
	run_until(t, &c.calls);
	assert_int_equal(a.status, QMP_OK);
	assert_int_equal(b.status, QMP_OK);
	assert_int_equal(c.status, QMP_OK);
	assert_true(a.order < b.order && b.order < c.order);
	/* The caller's fd is borrowed: still open. */
	assert_true(fcntl(fd, F_GETFD) != -1);
	fake_qmp_assert_done(t->fq);
	close(fd);
	json_object_put(args);
	rec_clear(&a);
	rec_clear(&b);
	rec_clear(&c);
}

/* Nothing queued: a command with an fd goes to the socket within the call (no loop turn), and so
 * does the command after it. */
static void
test_qmp_fd_sent_at_once(void **state)
{
	struct t *t = *state;
	struct qmp_callbacks cbs = {on_ready, on_event, on_closed, on_trace, t};
	struct json_object *args = json_tokener_parse("{\"fdname\": \"tap2\"}");
	struct rec a = {0}, b = {0};
	char *cause = NULL;
	int fds[2];

	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	qmp_conn_free(t->conn);
	t->conn = qmp_conn_new(t->base, &cbs);
	run_ready(t);
	assert_int_equal(t->ntrace_out, 1); /* qmp_capabilities */
	fake_qmp_expect_fd(t->fq, "getfd", "{\"fdname\": \"tap2\"}", "{\"return\": {}}", fds[1]);
	fake_qmp_expect(t->fq, "query-name", NULL, "{\"return\": {}}");
	b.t = t;
	assert_true(qmp_execute_fd(t->conn, "getfd", args, fds[1], 0, on_reply, &b, &cause) > 0);
	assert_int_equal(t->ntrace_out, 2);
	exec(t, "query-name", NULL, 0, &a);
	assert_int_equal(t->ntrace_out, 3);
	run_until(t, &a.calls);
	assert_int_equal(b.status, QMP_OK);
	assert_int_equal(a.status, QMP_OK);
	assert_true(b.order < a.order);
	assert_true(fcntl(fds[1], F_GETFD) != -1); /* borrowed */
	fake_qmp_assert_done(t->fq);
	close(fds[0]);
	close(fds[1]);
	json_object_put(args);
	rec_clear(&a);
	rec_clear(&b);
}

static void
resume_reading(void *arg)
{
	struct t *t = arg;

	fake_qmp_set_reading(t->fq, 1);
}

static void
test_qmp_fd_passing_under_backpressure(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0};
	struct json_object *args = json_tokener_parse("{\"fdname\": \"tap1\"}");
	char *cause = NULL, spaces[4096];
	int fds[2], sock = t->client_fd;
	size_t filled = 0;
	ssize_t n;

	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	run_ready(t);
	/* Fill the socket behind the client's back (whitespace between commands is legal). */
	fake_qmp_set_reading(t->fq, 0);
	memset(spaces, ' ', sizeof spaces);
	while ((n = send(sock, spaces, sizeof spaces, MSG_DONTWAIT)) > 0)
		filled += (size_t)n;
	assert_true(filled > 0);
	assert_int_equal(errno, EAGAIN);
	/* sendmsg of getfd now meets a full socket: it must wait for room, not fail or drop. */
	b.t = t;
	assert_true(qmp_execute_fd(t->conn, "getfd", args, fds[1], 0, on_reply, &b, &cause) > 0);
	exec(t, "query-name", NULL, 0, &a);
	fake_qmp_sleep(t->fq, 50);
	fake_qmp_call(t->fq, resume_reading, t);
	fake_qmp_expect_fd(t->fq, "getfd", "{\"fdname\": \"tap1\"}", "{\"return\": {}}", fds[1]);
	fake_qmp_expect(t->fq, "query-name", NULL, "{\"return\": {}}");
	run_until(t, &a.calls);
	assert_int_equal(b.status, QMP_OK);
	assert_int_equal(a.status, QMP_OK);
	assert_true(b.order < a.order);
	assert_int_equal(t->closed, 0);
	fake_qmp_assert_done(t->fq);
	close(fds[0]);
	close(fds[1]);
	json_object_put(args);
	rec_clear(&a);
	rec_clear(&b);
}

static void
test_qmp_large_command_partly_written(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0};
	size_t n = 512 * 1024;
	char *args = malloc(n + 32);

	/* Far more than a socket buffer: written partly at once, the rest by the loop, in order. */
	assert_non_null(args);
	strcpy(args, "{\"data\": \"");
	memset(args + strlen(args), 'x', n);
	strcpy(args + strlen("{\"data\": \"") + n, "\"}");
	run_ready(t);
	fake_qmp_expect(t->fq, "guest-data", args, "{\"return\": {}}");
	fake_qmp_expect(t->fq, "query-name", NULL, "{\"return\": {\"name\": \"vm\"}}");
	/* Generous timeouts: this is about order, and a loaded machine (ASan, two cores) may take
	 * seconds to push 512 KiB through the fake peer. */
	exec(t, "guest-data", args, 120000, &a);
	exec(t, "query-name", NULL, 120000, &b);
	run_until(t, &b.calls);
	assert_int_equal(a.status, QMP_OK);
	assert_int_equal(b.status, QMP_OK);
	assert_string_equal(b.result, "{\"name\":\"vm\"}");
	assert_true(a.order < b.order);
	assert_int_equal(t->closed, 0);
	fake_qmp_assert_done(t->fq);
	free(args);
	rec_clear(&a);
	rec_clear(&b);
}

static void
test_qmp_command_name_escaped(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0};

	/* Names are normally plain identifiers; anything else must still be valid JSON. */
	run_ready(t);
	fake_qmp_expect(t->fq, "we\"ird\\na\tme\xc3\xa9", NULL, "{\"return\": {}}");
	fake_qmp_expect(t->fq, "query-status", NULL, "{\"return\": {}}");
	exec(t, "we\"ird\\na\tme\xc3\xa9", NULL, 0, &a);
	exec(t, "query-status", NULL, 0, &b);
	run_until(t, &b.calls);
	assert_int_equal(a.status, QMP_OK);
	assert_int_equal(b.status, QMP_OK);
	assert_int_equal(t->closed, 0);
	fake_qmp_assert_done(t->fq);
	rec_clear(&a);
	rec_clear(&b);
}

static void
test_qmp_write_error_reported_from_loop(void **state)
{
	struct t *t = *state;
	struct rec a = {0};
	int sock = t->client_fd;

	run_ready(t);
	/* Writes now fail with EPIPE: exec() checks the callback does not run inside the call. */
	assert_int_equal(shutdown(sock, SHUT_WR), 0);
	exec(t, "query-status", NULL, 0, &a);
	assert_int_equal(qmp_conn_pending(t->conn), 1);
	run_until(t, &t->closed);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, QMP_DISCONNECTED);
	assert_non_null(strstr(t->closed_cause, "write error"));
	assert_string_equal(a.error_desc, t->closed_cause);
	rec_clear(&a);
}

static void
close_conn(struct rec *r)
{
	qmp_conn_close(r->t->conn, "closed by test");
}

static void
cancel_other_and_close_again(struct rec *r)
{
	qmp_cancel(r->t->conn, r->t->cancel_id);
	qmp_conn_close(r->t->conn, "second close");
}

static void
test_qmp_close_inside_callback(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0}, c = {0};
	int ia;

	run_ready(t);
	ia = fake_qmp_expect_later(t->fq, "query-status", NULL, "{\"return\": {}}");
	fake_qmp_expect(t->fq, "query-name", NULL, NULL);
	fake_qmp_expect(t->fq, "query-kvm", NULL, NULL);
	/* The reply and an event in one write: the event must not be delivered after close. */
	fake_qmp_reply(t->fq, ia);
	fake_qmp_send(t->fq, "{\"event\": \"STOP\"}\r\n");
	a.then = close_conn;
	b.then = cancel_other_and_close_again;
	exec(t, "query-status", NULL, 0, &a);
	exec(t, "query-name", NULL, 0, &b);
	t->cancel_id = exec(t, "query-kvm", NULL, 0, &c);
	run_until(t, &t->closed);
	run_for(t, 20);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, QMP_OK);
	assert_int_equal(b.calls, 1);
	assert_int_equal(b.status, QMP_DISCONNECTED);
	assert_string_equal(b.error_desc, "closed by test");
	assert_int_equal(c.calls, 0); /* cancelled from b's callback */
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->closed_cause, "closed by test");
	assert_int_equal(t->nevents, 0);
	assert_int_equal(qmp_conn_pending(t->conn), 0);
	rec_clear(&a);
	rec_clear(&b);
}

static void
test_qmp_cancel(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0}, q = {0};
	int64_t ida, idq;

	/* Cancelled before ready: never sent. */
	idq = exec(t, "query-kvm", NULL, 0, &q);
	start(t);
	fake_qmp_handshake(t->fq);
	qmp_cancel(t->conn, idq);
	run_until(t, &t->ready);
	fake_qmp_expect(t->fq, "query-status", NULL, "{\"return\": {}}");
	fake_qmp_expect(t->fq, "query-name", NULL, "{\"return\": {}}");
	ida = exec(t, "query-status", NULL, 0, &a);
	exec(t, "query-name", NULL, 0, &b);
	qmp_cancel(t->conn, ida);
	qmp_cancel(t->conn, 424242); /* unknown: ignored */
	assert_int_equal(qmp_conn_pending(t->conn), 1);
	run_until(t, &b.calls);
	run_for(t, 20);
	assert_int_equal(a.calls, 0);
	assert_int_equal(b.calls, 1);
	assert_int_equal(q.calls, 0);
	assert_int_equal(t->closed, 0);
	fake_qmp_assert_done(t->fq);
	rec_clear(&b);
}

static void
test_qmp_sticky_error_after_close(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0};
	char *cause = NULL;

	run_ready(t);
	fake_qmp_expect(t->fq, "query-status", NULL, NULL);
	exec(t, "query-status", NULL, 0, &a);
	run_for(t, 20);
	qmp_conn_close(t->conn, "bye");
	assert_int_equal(t->closed, 1);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, QMP_DISCONNECTED);
	assert_string_equal(a.error_desc, "bye");
	qmp_conn_close(t->conn, "again");
	assert_int_equal(t->closed, 1);
	assert_string_equal(qmp_conn_error(t->conn), "bye");
	b.t = t;
	assert_int_equal(qmp_execute(t->conn, "cont", NULL, 0, on_reply, &b, &cause), -1);
	assert_string_equal(cause, "bye");
	free(cause);
	cause = NULL;
	assert_int_equal(qmp_execute_fd(t->conn, "getfd", NULL, 0, 0, on_reply, &b, &cause), -1);
	assert_string_equal(cause, "bye");
	free(cause);
	run_for(t, 20);
	assert_int_equal(b.calls, 0);
	assert_int_equal(a.calls, 1);
	assert_int_equal(t->closed, 1);
	assert_true(fake_qmp_client_gone(t->fq));
	rec_clear(&a);
}

static void
test_qmp_free_with_pending(void **state)
{
	struct t *t = *state;
	struct rec a = {0}, b = {0};

	run_ready(t);
	fake_qmp_expect(t->fq, "query-status", NULL, NULL);
	exec(t, "query-status", NULL, 0, &a);
	exec(t, "getfd", NULL, 0, &b);
	qmp_conn_free(t->conn);
	t->conn = NULL;
	run_for(t, 20);
	assert_int_equal(a.calls, 0);
	assert_int_equal(b.calls, 0);
	assert_int_equal(t->closed, 0);
}

static void
test_qmp_connect_path(void **state)
{
	struct t *t = *state;
	char dir[] = "/tmp/test_qmp.XXXXXX", path[128], *cause = NULL;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int lfd, sfd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/qmp.sock", dir);
	assert_int_equal(qmp_conn_connect_path(t->conn, path, &cause), -1);
	assert_non_null(strstr(cause, path));
	assert_non_null(strstr(cause, "No such file"));
	free(cause);
	cause = NULL;

	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	strcpy(sun.sun_path, path);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof sun), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(qmp_conn_connect_path(t->conn, path, &cause), 0);
	assert_int_equal(qmp_conn_connect_path(t->conn, path, &cause), -1);
	assert_string_equal(cause, "already connected");
	free(cause);
	sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(sfd >= 0);
	close(lfd);
	unlink(path);
	rmdir(dir);
	fake_qmp_free(t->fq);
	t->fq = fake_qmp_new_fd(t->base, sfd);
	fake_qmp_handshake(t->fq);
	run_until(t, &t->ready);
	assert_true(qmp_conn_is_ready(t->conn));
	fake_qmp_assert_done(t->fq);
}

static void
test_qmp_trace_bounded(void **state)
{
	struct t *t = *state;
	struct qmp_callbacks cbs = {on_ready, on_event, on_closed, on_trace, t};
	struct rec a = {0};
	size_t len;
	char *reply = big_reply(2000, &len);

	qmp_conn_free(t->conn);
	t->conn = qmp_conn_new(t->base, &cbs);
	run_ready(t);
	fake_qmp_expect(t->fq, "query-qmp-schema", NULL, reply);
	exec(t, "query-qmp-schema", NULL, 0, &a);
	run_until(t, &a.calls);
	assert_int_equal(a.status, QMP_OK);
	assert_true(t->trace_saw_caps);
	assert_true(t->trace_saw_return_prefix);
	assert_int_equal(t->trace_longest, 1024);
	assert_int_equal(t->ntrace_in, 3);  /* greeting, caps reply, schema */
	assert_int_equal(t->ntrace_out, 2); /* qmp_capabilities, query-qmp-schema */
	free(reply);
	rec_clear(&a);
}

static size_t
allocated_bytes(void)
{
#ifdef TEST_ASAN
	return __sanitizer_get_current_allocated_bytes();
#else
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
#endif
}

static void
count_ready(struct qmp_conn *conn, void *arg)
{
	(*(int *)arg)++;
}

/* Reads the id of the qmp_capabilities command waiting on fd. */
static long
read_caps_id(int fd)
{
	char buf[256];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	char *p;

	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strstr(buf, "\"id\":");
	return p != NULL ? strtol(p + 5, NULL, 10) : -1;
}

static void
test_qmp_idle_connection_memory(void **state)
{
	enum { N = 200 };
	static const char greeting[] =
	    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
	    "\"package\": \"Debian 1:7.2+dfsg-7+deb12u7\"}, \"capabilities\": [\"oob\"]}}\r\n";
	struct event_base *base = event_base_new();
	struct qmp_conn *conns[N];
	int peers[N], clients[N], ready = 0, sv[2], i, rounds;
	struct qmp_callbacks cbs = {count_ready, NULL, NULL, NULL, &ready};
	char reply[64];
	size_t before, after;
	long id;

	for (i = 0; i < N; i++) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		peers[i] = sv[0];
		clients[i] = sv[1];
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	/* Everything allocated from here on is the clients' (the peers are bare fds). */
	before = allocated_bytes();
	for (i = 0; i < N; i++) {
		conns[i] = qmp_conn_new(base, &cbs);
		assert_int_equal(qmp_conn_connect_fd(conns[i], clients[i], NULL), 0);
		assert_int_equal(write(peers[i], greeting, strlen(greeting)),
		                 (ssize_t)strlen(greeting));
	}
	for (rounds = 0; rounds < 10; rounds++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	for (i = 0; i < N; i++) {
		id = read_caps_id(peers[i]);
		assert_true(id > 0);
		snprintf(reply, sizeof reply, "{\"return\": {}, \"id\": %ld}\r\n", id);
		assert_int_equal(write(peers[i], reply, strlen(reply)), (ssize_t)strlen(reply));
	}
	for (rounds = 0; rounds < 100 && ready < N; rounds++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(ready, N);
	after = allocated_bytes();
	print_message("idle connection: %zu bytes each\n", (after - before) / N);
	assert_true((after - before) / N < 4096);
	for (i = 0; i < N; i++) {
		qmp_conn_free(conns[i]);
		close(peers[i]);
	}
	event_base_free(base);
}

/* Found by fuzz_qmp: a greeting nested deeper than json-c's default limit of 32 was accepted by
 * the connection but qmp_conn_greeting() gave NULL for it. */
static void
test_qmp_deep_greeting_handed_out(void **state)
{
	struct t *t = *state;
	struct json_object *g, *v;
	char msg[256];
	int n, depth = 40;

	start(t);
	n = snprintf(msg, sizeof(msg), "{\"QMP\": {\"version\": {}, \"deep\": ");
	for (int i = 0; i < depth; i++)
		msg[n++] = '[';
	for (int i = 0; i < depth; i++)
		msg[n++] = ']';
	snprintf(msg + n, sizeof(msg) - (size_t)n, "}}\r\n");
	fake_qmp_send(t->fq, msg);
	fake_qmp_expect(t->fq, "qmp_capabilities", NULL, "{\"return\": {}}");
	run_until(t, &t->ready);
	assert_int_equal(t->ready, 1);
	g = qmp_conn_greeting(t->conn);
	assert_non_null(g);
	assert_true(json_object_object_get_ex(g, "deep", &v));
	assert_true(json_object_is_type(v, json_type_array));
	fake_qmp_assert_done(t->fq);
}

int
main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_qmp_ready_after_capabilities_reply),
	    T(test_qmp_greeting_without_qmp_key_closes),
	    T(test_qmp_handshake_timeout),
	    T(test_qmp_commands_queued_before_ready),
	    T(test_qmp_execute_return_and_error),
	    T(test_qmp_pipelined_out_of_order),
	    T(test_qmp_unknown_id_discarded),
	    T(test_qmp_duplicate_reply_discarded),
	    T(test_qmp_reply_without_id_closes),
	    T(test_qmp_timeout_then_late_reply),
	    cmocka_unit_test(test_qmp_default_timeouts),
	    T(test_qmp_events),
	    T(test_qmp_eof_fails_pending_once),
	    T(test_qmp_eof_mid_message),
	    T(test_qmp_garbage_closes),
	    T(test_qmp_truncated_json_closes),
	    T(test_qmp_non_object_message_closes),
	    T(test_qmp_oversized_message_streamed),
	    T(test_qmp_max_message_limit),
	    T(test_qmp_byte_at_a_time),
	    T(test_qmp_several_messages_in_one_write),
	    T(test_qmp_crlf_framing),
	    T(test_qmp_large_reply),
	    T(test_qmp_fd_passing),
	    T(test_qmp_fd_passing_under_backpressure),
	    T(test_qmp_fd_sent_at_once),
	    T(test_qmp_large_command_partly_written),
	    T(test_qmp_write_error_reported_from_loop),
	    T(test_qmp_command_name_escaped),
	    T(test_qmp_close_inside_callback),
	    T(test_qmp_cancel),
	    T(test_qmp_sticky_error_after_close),
	    T(test_qmp_free_with_pending),
	    T(test_qmp_connect_path),
	    T(test_qmp_trace_bounded),
	    cmocka_unit_test(test_qmp_idle_connection_memory),
	    T(test_qmp_deep_greeting_handed_out),
	};
#undef T

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
