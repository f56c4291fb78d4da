/*
 * fuzz_qmp: a QMP byte stream from the peer through qmp/. The client runs on a real event_base
 * over a socketpair; the harness plays QEMU by writing the input into the other end, in chunks,
 * and runs the loop until every byte is consumed, then closes its end and runs the loop until the
 * client reports the connection closed. Commands are issued before the greeting, once ready and
 * from inside callbacks, so that replies are matched, commands cancelled and the connection closed
 * in the middle of a dispatch. Checked: every command's callback runs exactly once (never for a
 * cancelled one), the closed callback exactly once, nothing pending after it, no leak.
 *
 * Input: byte 0 chooses the set-up, the rest is what the peer sends.
 *   bit 0    trace callback on (keeps the first bytes of each message)
 *   bit 1    max_message 512 instead of the default
 *   bits 2-4 0: everything in one write; k: writes of 2^(k-1) bytes (at most 64 writes), the
 *            loop run after each
 *   bit 5    the third command passes a file descriptor (SCM_RIGHTS), queued before the greeting
 * Events steer the harness: "X-CLOSE" closes the connection, "X-EXEC" and "X-EXECFD" send a
 * command, "X-CANCEL" cancels the oldest pending one; a reply whose "return" is an object with a
 * "close" key closes the connection from the reply callback.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "fuzz_util.h"
#include "qmp.h"

#define MAX_CMDS   32
#define MAX_PUMPS  100000 /* loop turns after EOF before the client counts as hung */
#define MAX_WRITES 64     /* writes per input: the fuzzer's time goes to the parser */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct slot {
	int64_t id;
	const char *name;
	int calls;
	bool cancelled;
};

struct run {
	struct qmp_conn *conn;
	struct slot slots[MAX_CMDS];
	size_t nslots;
	int ready_calls;
	int closed_calls;
	int fd;    /* passed with some commands */
	int extra; /* commands sent from callbacks */
};

static void
reply_cb(struct qmp_conn *conn, const struct qmp_reply *reply, void *arg)
{
	struct slot *s = arg;
	struct json_object *v;

	FUZZ_CHECK(s->calls == 0 && !s->cancelled);
	s->calls++;
	FUZZ_CHECK(reply->command != NULL && strcmp(reply->command, s->name) == 0);
	switch (reply->status) {
	case QMP_OK:
		FUZZ_CHECK(reply->error_class == NULL);
		if (json_object_is_type(reply->result, json_type_object) &&
		    json_object_object_get_ex(reply->result, "close", &v))
			qmp_conn_close(conn, "closed by the harness from a reply");
		break;
	case QMP_ERROR:
		FUZZ_CHECK(reply->error_class != NULL && reply->error_desc != NULL);
		break;
	case QMP_TIMEOUT:
	case QMP_DISCONNECTED:
		FUZZ_CHECK(reply->error_desc != NULL && reply->error_class == NULL);
		break;
	default:
		FUZZ_CHECK(!"unknown status");
	}
}

static void
run_exec(struct run *r, const char *name, struct json_object *args, bool with_fd)
{
	struct slot *s;
	char *cause = NULL;
	int64_t id;

	if (r->nslots == MAX_CMDS)
		return;
	s = &r->slots[r->nslots];
	memset(s, 0, sizeof(*s));
	s->name = name;
	id = qmp_execute_fd(r->conn, name, args, with_fd ? r->fd : -1, 0, reply_cb, s, &cause);
	if (id < 0) {
		/* Refused only once closed, and then with the sticky cause. */
		FUZZ_CHECK(r->closed_calls == 1 && cause != NULL);
		FUZZ_CHECK(strcmp(cause, qmp_conn_error(r->conn)) == 0);
		free(cause);
		return;
	}
	FUZZ_CHECK(id > 0 && (r->nslots == 0 || id > r->slots[r->nslots - 1].id));
	s->id = id;
	r->nslots++;
}

static void
ready_cb(struct qmp_conn *conn, void *arg)
{
	struct run *r = arg;
	struct json_object *g = qmp_conn_greeting(conn);

	FUZZ_CHECK(r->ready_calls == 0 && r->closed_calls == 0);
	r->ready_calls++;
	FUZZ_CHECK(qmp_conn_is_ready(conn));
	/* Whatever greeting was accepted can be handed out. */
	FUZZ_CHECK(json_object_is_type(g, json_type_object));
	run_exec(r, "query-block", NULL, false);
	run_exec(r, "stop", NULL, false);
}

static void
event_cb(struct qmp_conn *conn, const char *name, struct json_object *data, int64_t seconds,
         int64_t microseconds, void *arg)
{
	struct run *r = arg;

	FUZZ_CHECK(name != NULL && r->closed_calls == 0);
	(void)json_object_to_json_string(data);
	if (strcmp(name, "X-CLOSE") == 0) {
		qmp_conn_close(conn, "closed by the harness from an event");
		FUZZ_CHECK(r->closed_calls == 1 && qmp_conn_pending(conn) == 0);
	} else if ((strcmp(name, "X-EXEC") == 0 || strcmp(name, "X-EXECFD") == 0) && r->extra < 8) {
		struct json_object *args = json_object_new_object();

		json_object_object_add(args, "id", json_object_new_string("x\"\\y\x01"));
		r->extra++;
		run_exec(r, "x-exec", args, strcmp(name, "X-EXECFD") == 0);
		json_object_put(args);
	} else if (strcmp(name, "X-CANCEL") == 0) {
		for (size_t i = 0; i < r->nslots; i++) {
			struct slot *s = &r->slots[i];

			if (s->calls == 0 && !s->cancelled) {
				size_t before = qmp_conn_pending(conn);

				qmp_cancel(conn, s->id);
				s->cancelled = true;
				FUZZ_CHECK(qmp_conn_pending(conn) == before - 1);
				break;
			}
		}
	}
}

static void
closed_cb(struct qmp_conn *conn, const char *cause, void *arg)
{
	struct run *r = arg;

	r->closed_calls++;
	FUZZ_CHECK(r->closed_calls == 1);
	FUZZ_CHECK(cause != NULL && qmp_conn_error(conn) != NULL);
	FUZZ_CHECK(strcmp(cause, qmp_conn_error(conn)) == 0);
	FUZZ_CHECK(!qmp_conn_is_ready(conn));
	/* Every pending command has failed before this. */
	FUZZ_CHECK(qmp_conn_pending(conn) == 0);
	for (size_t i = 0; i < r->nslots; i++)
		FUZZ_CHECK(r->slots[i].cancelled || r->slots[i].calls == 1);
}

static void
trace_cb(struct qmp_conn *conn, const char *dir, const char *buf, size_t len, void *arg)
{
	FUZZ_CHECK(strcmp(dir, "in") == 0 || strcmp(dir, "out") == 0);
	FUZZ_CHECK(len <= 1024);
	/* Every byte handed out must be readable (ASan checks the copy). */
	if (len > 0) {
		char *copy = fuzz_copy((const uint8_t *)buf, len);

		free(copy);
	}
}

/* Reads and drops what the client wrote (commands, passed descriptors). */
static void
drain_peer(int fd)
{
	char buf[4096];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

/* Runs the loop until the client has read everything sent to it, or has closed. */
static void
pump(struct event_base *base, struct run *r, int client, int peer)
{
	int avail = 0;

	for (int turns = 0; turns < MAX_PUMPS; turns++) {
		drain_peer(peer);
		if (r->closed_calls == 0 && ioctl(client, FIONREAD, &avail) < 0)
			avail = 0;
		if (r->closed_calls > 0)
			avail = 0;
		if (avail == 0 && event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) == 0)
			return;
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	FUZZ_CHECK(!"the client does not consume its input");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* One loop for every run, as in the daemon: what a connection leaves behind shows. */
	static struct event_base *base;
	struct qmp_callbacks cbs = {0};
	struct json_object *args;
	struct run r;
	char *cause = NULL;
	size_t chunk, off;
	uint8_t flags;
	int sv[2];

	if (size < 1)
		return -1;
	flags = data[0];
	data++;
	size--;
	memset(&r, 0, sizeof(r));
	r.fd = -1;
	if (base == NULL)
		base = event_base_new();
	FUZZ_CHECK(base != NULL);
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
	cbs.ready = ready_cb;
	cbs.event = event_cb;
	cbs.closed = closed_cb;
	cbs.trace = (flags & 1) ? trace_cb : NULL;
	cbs.arg = &r;
	r.conn = qmp_conn_new(base, &cbs);
	if (flags & 2)
		qmp_conn_set_max_message(r.conn, 512);
	r.fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	FUZZ_CHECK(r.fd >= 0);

	/* Queued before the greeting: ids 1, 2, 3; qmp_capabilities gets 4. */
	run_exec(&r, "query-status", NULL, false);
	args = json_object_new_object();
	json_object_object_add(args, "driver", json_object_new_string("virtio-net-pci"));
	json_object_object_add(args, "id", json_object_new_string("nic1"));
	run_exec(&r, "device_add", args, false);
	json_object_put(args);
	run_exec(&r, (flags & 0x20) ? "getfd" : "query-name", NULL, (flags & 0x20) != 0);
	FUZZ_CHECK(qmp_conn_connect_fd(r.conn, sv[0], &cause) == 0);

	chunk = ((flags >> 2) & 7) == 0 ? size : (size_t)1 << (((flags >> 2) & 7) - 1);
	if (chunk < (size + MAX_WRITES - 1) / MAX_WRITES)
		chunk = (size + MAX_WRITES - 1) / MAX_WRITES;
	if (chunk == 0)
		chunk = 1;
	for (off = 0; off < size && r.closed_calls == 0;) {
		size_t n = size - off < chunk ? size - off : chunk;
		ssize_t w = send(sv[1], data + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (w < 0 && errno != EAGAIN && errno != EINTR)
			break; /* the client closed its end */
		if (w > 0)
			off += (size_t)w;
		pump(base, &r, sv[0], sv[1]);
	}
	/* The peer goes away: the client must notice and fail whatever is still pending. */
	shutdown(sv[1], SHUT_WR);
	for (int turns = 0; r.closed_calls == 0; turns++) {
		FUZZ_CHECK(turns < MAX_PUMPS);
		drain_peer(sv[1]);
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	FUZZ_CHECK(r.closed_calls == 1 && qmp_conn_pending(r.conn) == 0);
	for (size_t i = 0; i < r.nslots; i++)
		FUZZ_CHECK(r.slots[i].cancelled ? r.slots[i].calls == 0 : r.slots[i].calls == 1);
	/* After the close, commands are refused with the sticky cause. */
	FUZZ_CHECK(qmp_execute(r.conn, "query-status", NULL, 0, reply_cb, NULL, &cause) == -1);
	FUZZ_CHECK(cause != NULL && strcmp(cause, qmp_conn_error(r.conn)) == 0);
	free(cause);
	qmp_conn_free(r.conn);
	close(r.fd);
	close(sv[1]);
	/* The bufferevent is finalized on a later loop turn; then nothing may be left. */
	for (int turns = 0; event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) > 0; turns++) {
		FUZZ_CHECK(turns < MAX_PUMPS);
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	FUZZ_CHECK(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED) == 0);
	return 0;
}
