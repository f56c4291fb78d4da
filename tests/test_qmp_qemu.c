/*
 * test_qmp_qemu: the qmp/ client against the real qemu-system-x86_64 (paused at -S, q35, no
 * devices), everything on one real event_base: negotiation, a large reply, events, fd passing,
 * pipelining, quit, and a stopped QEMU timing out while another keeps answering.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <json-c/json.h>

#include "host.h"
#include "qmp.h"

#define MAX_QEMU   2
#define MAX_EVENTS 16
#define PIPELINED  1000

struct qemu {
	pid_t pid;
	int reaped;
	int status;
	char dir[64];
	char sock[128];
	char pidfile[128];
	struct qmp_conn *conn;
	int ready;
	int closed;
	char *events[MAX_EVENTS]; /* "NAME data-as-json" */
	size_t nevents;
};

struct ctx {
	struct event_base *base;
	struct qemu q[MAX_QEMU];
};

/* What one command's callback saw. */
struct rec {
	int calls;
	enum qmp_status status;
	char *result;
	char *error_class;
	int64_t done_ms;
	int *order_counter; /* pipelining: callbacks must come in issue order */
	int index;
	int *order_ok;
};

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
on_ready(struct qmp_conn *conn, void *arg)
{
	((struct qemu *)arg)->ready = 1;
}

static void
on_closed(struct qmp_conn *conn, const char *cause, void *arg)
{
	((struct qemu *)arg)->closed = 1;
}

static void
on_event(struct qmp_conn *conn, const char *name, struct json_object *data, int64_t seconds,
         int64_t microseconds, void *arg)
{
	struct qemu *q = arg;

	if (q->nevents < MAX_EVENTS &&
	    asprintf(&q->events[q->nevents], "%s %s", name,
	             data ? json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN) : "") > 0)
		q->nevents++;
}

static void
on_reply(struct qmp_conn *conn, const struct qmp_reply *reply, void *arg)
{
	struct rec *r = arg;

	r->calls++;
	r->status = reply->status;
	r->done_ms = now_ms();
	if (reply->result != NULL)
		r->result =
		    strdup(json_object_to_json_string_ext(reply->result, JSON_C_TO_STRING_PLAIN));
	if (reply->error_class != NULL)
		r->error_class = strdup(reply->error_class);
	if (r->order_counter != NULL) {
		if (*r->order_counter != r->index)
			*r->order_ok = 0;
		(*r->order_counter)++;
	}
}

static void
rec_clear(struct rec *r)
{
	free(r->result);
	free(r->error_class);
	memset(r, 0, sizeof(*r));
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
	*(int *)arg = 1;
}

/* Runs the loop until *value reaches target or timeout_ms passes; returns whether it did. */
static int
run_until_count(struct event_base *base, const int *value, int target, int timeout_ms)
{
	int expired = 0;
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	struct event *t = evtimer_new(base, on_deadline, &expired);

	evtimer_add(t, &tv);
	while (*value < target && !expired)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return *value >= target;
}

static int
run_until(struct event_base *base, const int *flag, int timeout_ms)
{
	return run_until_count(base, flag, 1, timeout_ms);
}

/* Spawns a paused q35 QEMU with its QMP socket in a fresh temp directory and connects to it. */
static void
qemu_start(struct ctx *c, struct qemu *q)
{
	const struct qmp_callbacks cbs = {
	    .ready = on_ready, .event = on_event, .closed = on_closed, .arg = q};
	char qmp[160];
	const char *argv[32];
	size_t n = 0;
	char *cause = NULL;
	int64_t end;

	memset(q, 0, sizeof(*q));
	strcpy(q->dir, "/tmp/test_qmp_qemu.XXXXXX");
	assert_non_null(mkdtemp(q->dir));
	snprintf(q->sock, sizeof(q->sock), "%s/qmp.sock", q->dir);
	snprintf(q->pidfile, sizeof(q->pidfile), "%s/qemu.pid", q->dir);
	snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", q->sock);
	argv[n++] = QVMD_TEST_QEMU;
	argv[n++] = "-S";
	argv[n++] = "-machine";
	argv[n++] = "q35";
	argv[n++] = "-nodefaults";
	argv[n++] = "-no-user-config";
	argv[n++] = "-display";
	argv[n++] = "none";
	if (host_kvm_usable()) {
		argv[n++] = "-enable-kvm";
	} else {
		argv[n++] = "-accel";
		argv[n++] = "tcg";
	}
	argv[n++] = "-m";
	argv[n++] = "64M";
	argv[n++] = "-pidfile";
	argv[n++] = q->pidfile;
	argv[n++] = "-qmp";
	argv[n++] = qmp;
	argv[n] = NULL;
	q->pid = fork();
	assert_true(q->pid >= 0);
	if (q->pid == 0) {
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	/*
	 * The socket file appears at bind(), a moment before listen(): retry while the connection
	 * is refused.
	 */
	end = now_ms() + 20000;
	for (;;) {
		q->conn = qmp_conn_new(c->base, &cbs);
		assert_non_null(q->conn);
		if (qmp_conn_connect_path(q->conn, q->sock, &cause) == 0)
			break;
		qmp_conn_free(q->conn);
		q->conn = NULL;
		if (now_ms() > end)
			fail_msg("connect: %s", cause);
		free(cause);
		cause = NULL;
		assert_int_equal(waitpid(q->pid, &q->status, WNOHANG), 0);
		usleep(5000);
	}
	assert_true(run_until(c->base, &q->ready, 20000));
}

static void
qemu_stop(struct qemu *q)
{
	size_t i;

	if (q->pid == 0)
		return;
	qmp_conn_free(q->conn);
	q->conn = NULL;
	if (!q->reaped) {
		kill(q->pid, SIGKILL);
		kill(q->pid, SIGCONT);
		waitpid(q->pid, &q->status, 0);
	}
	for (i = 0; i < q->nevents; i++)
		free(q->events[i]);
	unlink(q->sock);
	unlink(q->pidfile);
	rmdir(q->dir);
	q->pid = 0;
}

/* Executes one command on the loop and waits for its callback. */
static void
execute(struct ctx *c, struct qemu *q, const char *command, const char *args, int timeout_ms,
        struct rec *r)
{
	struct json_object *a = args != NULL ? json_tokener_parse(args) : NULL;
	char *cause = NULL;

	memset(r, 0, sizeof(*r));
	if (qmp_execute(q->conn, command, a, timeout_ms, on_reply, r, &cause) < 0)
		fail_msg("%s: %s", command, cause);
	json_object_put(a);
	assert_true(run_until(c->base, &r->calls, 30000));
	assert_int_equal(r->calls, 1);
}

static int
setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return -1;
	c->base = event_base_new();
	*state = c;
	return c->base != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
	struct ctx *c = *state;
	size_t i;

	for (i = 0; i < MAX_QEMU; i++)
		qemu_stop(&c->q[i]);
	event_base_free(c->base);
	free(c);
	return 0;
}

static void
test_qmp_qemu_negotiation_and_status(void **state)
{
	struct ctx *c = *state;
	struct qemu *q = &c->q[0];
	struct json_object *greeting, *v;
	struct rec r;

	qemu_start(c, q);
	greeting = qmp_conn_greeting(q->conn);
	assert_non_null(greeting);
	assert_true(json_object_object_get_ex(greeting, "version", &v));
	assert_true(json_object_object_get_ex(v, "qemu", &v));
	assert_true(json_object_object_get_ex(v, "major", &v));
	assert_true(json_object_get_int(v) >= 7);
	assert_true(qmp_conn_is_ready(q->conn));
	execute(c, q, "query-status", NULL, 2000, &r);
	assert_int_equal(r.status, QMP_OK);
	assert_non_null(strstr(r.result, "\"status\":\"prelaunch\""));
	rec_clear(&r);
	execute(c, q, "no-such-command", NULL, 2000, &r);
	assert_int_equal(r.status, QMP_ERROR);
	assert_string_equal(r.error_class, "CommandNotFound");
	rec_clear(&r);
	assert_int_equal(qmp_conn_pending(q->conn), 0);
}

static void
test_qmp_qemu_large_schema(void **state)
{
	struct ctx *c = *state;
	struct qemu *q = &c->q[0];
	struct json_object *schema;
	struct rec r;

	qemu_start(c, q);
	execute(c, q, "query-qmp-schema", NULL, 10000, &r);
	assert_int_equal(r.status, QMP_OK);
	assert_true(strlen(r.result) > 100000);
	schema = json_tokener_parse(r.result);
	assert_non_null(schema);
	assert_true(json_object_array_length(schema) > 1000);
	json_object_put(schema);
	rec_clear(&r);
}

static void
test_qmp_qemu_reset_event(void **state)
{
	struct ctx *c = *state;
	struct qemu *q = &c->q[0];
	struct rec r;

	qemu_start(c, q);
	execute(c, q, "system_reset", NULL, 2000, &r);
	assert_int_equal(r.status, QMP_OK);
	rec_clear(&r);
	/* QEMU sends the event before the reply: it has been delivered by now. */
	assert_int_equal(q->nevents, 1);
	assert_string_equal(q->events[0],
	                    "RESET {\"guest\":false,\"reason\":\"host-qmp-system-reset\"}");
}

static void
test_qmp_qemu_getfd_passes_descriptor(void **state)
{
	struct ctx *c = *state;
	struct qemu *q = &c->q[0];
	struct json_object *args;
	char *cause = NULL;
	struct rec r = {0};
	int sp[2];

	qemu_start(c, q);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	assert_false(host_process_has_file(q->pid, sp[0]));
	args = json_tokener_parse("{\"fdname\":\"sock0\"}");
	assert_true(qmp_execute_fd(q->conn, "getfd", args, sp[0], 2000, on_reply, &r, &cause) > 0);
	json_object_put(args);
	assert_true(run_until(c->base, &r.calls, 10000));
	assert_int_equal(r.status, QMP_OK);
	rec_clear(&r);
	assert_true(host_process_has_file(q->pid, sp[0]));
	/* QEMU uses the named descriptor for a netdev: the name is consumed. */
	execute(c, q, "netdev_add", "{\"type\":\"socket\",\"id\":\"s0\",\"fd\":\"sock0\"}", 2000,
	        &r);
	assert_int_equal(r.status, QMP_OK);
	rec_clear(&r);
	execute(c, q, "netdev_add", "{\"type\":\"socket\",\"id\":\"s1\",\"fd\":\"sock0\"}", 2000,
	        &r);
	assert_int_equal(r.status, QMP_ERROR);
	rec_clear(&r);
	close(sp[0]);
	close(sp[1]);
}

static void
test_qmp_qemu_pipelined_commands(void **state)
{
	struct ctx *c = *state;
	struct qemu *q = &c->q[0];
	struct rec *recs = calloc(PIPELINED, sizeof(*recs));
	int counter = 0, order_ok = 1, i, ok = 0;
	char *cause = NULL;

	assert_non_null(recs);
	qemu_start(c, q);
	for (i = 0; i < PIPELINED; i++) {
		recs[i].order_counter = &counter;
		recs[i].order_ok = &order_ok;
		recs[i].index = i;
		assert_true(qmp_execute(q->conn, "query-status", NULL, 30000, on_reply, &recs[i],
		                        &cause) > 0);
	}
	assert_int_equal(qmp_conn_pending(q->conn), PIPELINED);
	assert_true(run_until_count(c->base, &counter, PIPELINED, 60000));
	for (i = 0; i < PIPELINED; i++) {
		assert_int_equal(recs[i].calls, 1);
		ok += recs[i].status == QMP_OK;
		free(recs[i].result);
	}
	assert_int_equal(ok, PIPELINED);
	assert_true(order_ok);
	assert_int_equal(qmp_conn_pending(q->conn), 0);
	free(recs);
}

static void
test_qmp_qemu_quit(void **state)
{
	struct ctx *c = *state;
	struct qemu *q = &c->q[0];
	struct rec r;

	qemu_start(c, q);
	execute(c, q, "quit", NULL, 5000, &r);
	assert_int_equal(r.status, QMP_OK);
	rec_clear(&r);
	assert_true(q->nevents >= 1);
	assert_string_equal(q->events[0],
	                    "SHUTDOWN {\"guest\":false,\"reason\":\"host-qmp-quit\"}");
	assert_true(run_until(c->base, &q->closed, 10000));
	assert_false(qmp_conn_is_ready(q->conn));
	assert_int_equal(waitpid(q->pid, &q->status, 0), q->pid);
	q->reaped = 1;
	assert_true(WIFEXITED(q->status));
	assert_int_equal(WEXITSTATUS(q->status), 0);
	assert_false(access(q->pidfile, F_OK) == 0);
}

/* A QEMU frozen with SIGSTOP times its command out while another QEMU on the loop answers. */
static void
test_qmp_qemu_stopped_times_out(void **state)
{
	struct ctx *c = *state;
	struct qemu *a = &c->q[0], *b = &c->q[1];
	struct rec ra = {0}, rb;
	char *cause = NULL;
	int64_t t0;

	qemu_start(c, a);
	qemu_start(c, b);
	assert_int_equal(kill(a->pid, SIGSTOP), 0);
	t0 = now_ms();
	assert_true(qmp_execute(a->conn, "query-status", NULL, 400, on_reply, &ra, &cause) > 0);
	execute(c, b, "query-status", NULL, 2000, &rb);
	assert_int_equal(rb.status, QMP_OK);
	assert_int_equal(ra.calls, 0); /* b answered first, a still pending */
	rec_clear(&rb);
	assert_true(run_until(c->base, &ra.calls, 5000));
	assert_int_equal(ra.status, QMP_TIMEOUT);
	assert_true(ra.done_ms - t0 >= 390); /* libevent may use a coarse clock */
	assert_true(ra.done_ms - t0 < 3000);
	rec_clear(&ra);
	/* b still works, and a works again once resumed (its late reply is discarded). */
	execute(c, b, "query-status", NULL, 2000, &rb);
	assert_int_equal(rb.status, QMP_OK);
	rec_clear(&rb);
	assert_int_equal(kill(a->pid, SIGCONT), 0);
	execute(c, a, "query-version", NULL, 5000, &ra);
	assert_int_equal(ra.status, QMP_OK);
	assert_non_null(strstr(ra.result, "\"qemu\""));
	rec_clear(&ra);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_qmp_qemu_negotiation_and_status, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_qmp_qemu_large_schema, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_qmp_qemu_reset_event, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_qmp_qemu_getfd_passes_descriptor, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_qmp_qemu_pipelined_commands, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_qmp_qemu_quit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_qmp_qemu_stopped_times_out, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
