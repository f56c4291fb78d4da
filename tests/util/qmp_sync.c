/*
 * tests/util/qmp_sync: a blocking QMP client for tests, built on poll(), read() and json-c's
 * incremental tokener (QEMU may put several messages in one read or split one across reads).
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "qmp_sync.h"

#define QMP_SYNC_DEFAULT_TIMEOUT 10000

struct qmp_sync {
	int fd;
	bool eof;
	struct json_tokener *tok;
	struct json_object *greeting;
	struct json_object **events;
	size_t nevents, cap;
	int timeout_ms;
	int64_t next_id;
	char buf[4096];
	size_t off, len;
};

static char *
qmp_sync_cause(const char *fmt, const char *arg)
{
	char *s;

	if (asprintf(&s, fmt, arg) < 0)
		abort();
	return s;
}

static int64_t
qmp_sync_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The next message from QEMU, or NULL on timeout, EOF or a parse error. */
static struct json_object *
qmp_sync_next(struct qmp_sync *conn, int64_t deadline)
{
	for (;;) {
		while (conn->off < conn->len) {
			struct json_object *obj;
			enum json_tokener_error jerr;

			obj = json_tokener_parse_ex(conn->tok, conn->buf + conn->off,
			                            (int)(conn->len - conn->off));
			jerr = json_tokener_get_error(conn->tok);
			if (jerr == json_tokener_continue) {
				conn->off = conn->len;
				break;
			}
			if (jerr != json_tokener_success) {
				fprintf(stderr, "qmp_sync: bad JSON from QEMU: %s\n",
				        json_tokener_error_desc(jerr));
				conn->eof = true;
				return NULL;
			}
			conn->off += json_tokener_get_parse_end(conn->tok);
			if (obj != NULL)
				return obj;
		}
		if (conn->eof)
			return NULL;

		int64_t left = deadline - qmp_sync_now_ms();
		struct pollfd pfd = {.fd = conn->fd, .events = POLLIN};
		ssize_t n;

		if (left <= 0)
			return NULL;
		if (poll(&pfd, 1, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		if (pfd.revents == 0)
			continue;
		n = read(conn->fd, conn->buf, sizeof(conn->buf));
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			conn->eof = true;
			return NULL;
		}
		if (n == 0) {
			conn->eof = true;
			return NULL;
		}
		conn->off = 0;
		conn->len = (size_t)n;
	}
}

static void
qmp_sync_queue_event(struct qmp_sync *conn, struct json_object *event)
{
	if (conn->nevents == conn->cap) {
		size_t cap = conn->cap == 0 ? 16 : conn->cap * 2;
		struct json_object **v = realloc(conn->events, cap * sizeof(*v));

		if (v == NULL)
			abort();
		conn->events = v;
		conn->cap = cap;
	}
	conn->events[conn->nevents++] = event;
}

static int
qmp_sync_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Sends cmd and reads until its reply, queueing events; the reply or NULL. */
static struct json_object *
qmp_sync_exec(struct qmp_sync *conn, const char *cmd, struct json_object *args, int64_t deadline)
{
	struct json_object *req = json_object_new_object(), *msg;
	int64_t id = conn->next_id++;
	const char *text;
	int rc;

	json_object_object_add(req, "execute", json_object_new_string(cmd));
	if (args != NULL)
		json_object_object_add(req, "arguments", args);
	json_object_object_add(req, "id", json_object_new_int64(id));
	text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	rc = qmp_sync_write_all(conn->fd, text, strlen(text));
	json_object_put(req);
	if (rc != 0)
		return NULL;

	while ((msg = qmp_sync_next(conn, deadline)) != NULL) {
		struct json_object *jid;

		if (json_object_object_get_ex(msg, "event", NULL)) {
			qmp_sync_queue_event(conn, msg);
			continue;
		}
		/* A reply to an earlier command that timed out is dropped. */
		if (json_object_object_get_ex(msg, "id", &jid) && json_object_get_int64(jid) == id)
			return msg;
		json_object_put(msg);
	}
	return NULL;
}

struct qmp_sync *
qmp_sync_connect(const char *path, int timeout_ms, char **cause)
{
	int64_t deadline = qmp_sync_now_ms() + timeout_ms;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct qmp_sync *conn;
	struct json_object *reply;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		*cause = qmp_sync_cause("qmp %s: path too long", path);
		return NULL;
	}
	strcpy(sun.sun_path, path);
	for (;;) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			*cause = qmp_sync_cause("qmp %s: socket failed", path);
			return NULL;
		}
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
			break;
		close(fd);
		if ((errno != ENOENT && errno != ECONNREFUSED) || qmp_sync_now_ms() >= deadline) {
			*cause = qmp_sync_cause("qmp %s: cannot connect", path);
			return NULL;
		}
		usleep(2000);
	}

	conn = calloc(1, sizeof(*conn));
	if (conn == NULL)
		abort();
	conn->fd = fd;
	conn->tok = json_tokener_new();
	conn->timeout_ms = QMP_SYNC_DEFAULT_TIMEOUT;
	conn->next_id = 1;
	if (conn->tok == NULL)
		abort();

	conn->greeting = qmp_sync_next(conn, deadline);
	if (conn->greeting == NULL || !json_object_object_get_ex(conn->greeting, "QMP", NULL)) {
		*cause = qmp_sync_cause("qmp %s: no greeting", path);
		qmp_sync_close(conn);
		return NULL;
	}
	reply = qmp_sync_exec(conn, "qmp_capabilities", NULL, deadline);
	if (qmp_sync_return(reply) == NULL) {
		*cause = qmp_sync_cause("qmp %s: qmp_capabilities failed", path);
		json_object_put(reply);
		qmp_sync_close(conn);
		return NULL;
	}
	json_object_put(reply);
	return conn;
}

void
qmp_sync_close(struct qmp_sync *conn)
{
	if (conn == NULL)
		return;
	close(conn->fd);
	json_tokener_free(conn->tok);
	json_object_put(conn->greeting);
	for (size_t i = 0; i < conn->nevents; i++)
		json_object_put(conn->events[i]);
	free(conn->events);
	free(conn);
}

struct json_object *
qmp_sync_greeting(struct qmp_sync *conn)
{
	return conn->greeting;
}

void
qmp_sync_set_timeout(struct qmp_sync *conn, int timeout_ms)
{
	conn->timeout_ms = timeout_ms;
}

struct json_object *
qmp_sync_cmd(struct qmp_sync *conn, const char *cmd, const char *args)
{
	struct json_object *jargs = NULL;

	if (args != NULL) {
		jargs = json_tokener_parse(args);
		if (jargs == NULL || !json_object_is_type(jargs, json_type_object)) {
			fprintf(stderr, "qmp_sync: arguments of %s are not a JSON object\n", cmd);
			json_object_put(jargs);
			return NULL;
		}
	}
	return qmp_sync_exec(conn, cmd, jargs, qmp_sync_now_ms() + conn->timeout_ms);
}

struct json_object *
qmp_sync_return(struct json_object *reply)
{
	struct json_object *ret;

	if (reply == NULL || !json_object_object_get_ex(reply, "return", &ret))
		return NULL;
	return ret;
}

static bool
qmp_sync_is_event(struct json_object *msg, const char *name)
{
	struct json_object *ev;

	return json_object_object_get_ex(msg, "event", &ev) &&
	       strcmp(json_object_get_string(ev), name) == 0;
}

struct json_object *
qmp_sync_wait_event(struct qmp_sync *conn, const char *name, int timeout_ms)
{
	int64_t deadline = qmp_sync_now_ms() + timeout_ms;
	struct json_object *msg;

	for (size_t i = 0; i < conn->nevents; i++) {
		if (qmp_sync_is_event(conn->events[i], name)) {
			msg = conn->events[i];
			memmove(&conn->events[i], &conn->events[i + 1],
			        (conn->nevents - i - 1) * sizeof(*conn->events));
			conn->nevents--;
			return msg;
		}
	}
	while ((msg = qmp_sync_next(conn, deadline)) != NULL) {
		if (qmp_sync_is_event(msg, name))
			return msg;
		if (json_object_object_get_ex(msg, "event", NULL))
			qmp_sync_queue_event(conn, msg);
		else
			json_object_put(msg);
	}
	return NULL;
}

int
qmp_sync_wait_eof(struct qmp_sync *conn, int timeout_ms)
{
	int64_t deadline = qmp_sync_now_ms() + timeout_ms;
	struct json_object *msg;

	while ((msg = qmp_sync_next(conn, deadline)) != NULL) {
		if (json_object_object_get_ex(msg, "event", NULL))
			qmp_sync_queue_event(conn, msg);
		else
			json_object_put(msg);
	}
	return conn->eof ? 0 : -1;
}
