/*
 * qmp.c: the QMP client. A connection goes NEW -> GREETING -> NEGOTIATING -> READY -> CLOSED.
 * Incoming bytes are fed chunk by chunk to a json_tokener that exists only while a message is
 * being parsed; outgoing commands wait in a send queue until negotiation is done. A command is
 * written to the socket at once when nothing is waiting before it (the rest, if any, goes to the
 * bufferevent's output buffer, and write errors surface from the loop), except a command carrying
 * a file descriptor, which is written with sendmsg(SCM_RIGHTS) once everything queued before it
 * has left the output buffer.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <json-c/json.h>

#include "qmp.h"

/* At most this many bytes of one message go to the trace callback. */
#define QMP_TRACE_MAX            1024
#define QMP_DEFAULT_HANDSHAKE_MS 30000
/* Deep enough for anything QEMU sends (query-qmp-schema nests about 6 levels). */
#define QMP_JSON_DEPTH 64

enum qmp_state {
	QMP_S_NEW,         /* no socket yet; commands are queued */
	QMP_S_GREETING,    /* connected, waiting for the greeting */
	QMP_S_NEGOTIATING, /* qmp_capabilities sent, waiting for its reply */
	QMP_S_READY,
	QMP_S_CLOSED,
};

struct qmp_cmd {
	TAILQ_ENTRY(qmp_cmd) entry;       /* conn->cmds: every pending command, in id order */
	TAILQ_ENTRY(qmp_cmd) sendq_entry; /* conn->sendq while not yet handed to the socket */
	struct qmp_conn *conn;
	int64_t id;
	char *name;
	char *line; /* the serialized command while it waits in the send queue */
	size_t len;
	int fd; /* a duplicate of the fd to pass, until it is sent; else -1 */
	int queued;
	int timeout_ms;
	int timer_armed;
	struct event timer;
	qmp_reply_cb cb;
	void *arg;
};

TAILQ_HEAD(qmp_cmds, qmp_cmd);

struct qmp_conn {
	struct event_base *base;
	struct qmp_callbacks cbs;
	enum qmp_state state;
	struct bufferevent *bev;
	struct event *handshake_timer; /* only until READY */
	struct event *flush_ev;        /* created on the first fd-passing command */
	int handshake_ms;
	size_t max_message;

	char *greeting; /* the "QMP" object, serialized (cheaper than a json tree) */
	struct json_object *greeting_obj; /* parsed from greeting on first request */
	char *error;                      /* sticky cause once CLOSED */

	int64_t next_id;
	int64_t caps_id;
	struct qmp_cmds cmds;
	struct qmp_cmds sendq;
	size_t npending;

	/* The message being parsed. */
	struct json_tokener *tok;
	int in_message;
	size_t msg_bytes;
	char *tin; /* first QMP_TRACE_MAX bytes, kept only when tracing */
	size_t tin_len;
};

static void qmp_fail(struct qmp_conn *, const char *, ...) __attribute__((format(printf, 2, 3)));

/* vasprintf that aborts on out-of-memory, like the rest of qvmd's fatal() policy. */
static char *
qmp_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		abort();
	va_end(ap);
	return s;
}

static char *
qmp_strdup(const char *s)
{
	char *d = strdup(s);

	if (d == NULL)
		abort();
	return d;
}

static void
qmp_set_cause(char **cause, const char *fmt, ...)
{
	va_list ap;

	if (cause == NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) == -1)
		abort();
	va_end(ap);
}

static void
qmp_trace(struct qmp_conn *conn, const char *dir, const char *buf, size_t len)
{
	if (conn->cbs.trace == NULL)
		return;
	conn->cbs.trace(conn, dir, buf, len < QMP_TRACE_MAX ? len : QMP_TRACE_MAX, conn->cbs.arg);
}

struct qmp_conn *
qmp_conn_new(struct event_base *base, const struct qmp_callbacks *cbs)
{
	struct qmp_conn *conn = calloc(1, sizeof *conn);

	if (conn == NULL)
		abort();
	conn->base = base;
	if (cbs != NULL)
		conn->cbs = *cbs;
	conn->state = QMP_S_NEW;
	conn->handshake_ms = QMP_DEFAULT_HANDSHAKE_MS;
	conn->max_message = QMP_DEFAULT_MAX_MESSAGE;
	conn->next_id = 1;
	TAILQ_INIT(&conn->cmds);
	TAILQ_INIT(&conn->sendq);
	return conn;
}

/* Drops the parser state of a partly received message. */
static void
qmp_reset_message(struct qmp_conn *conn)
{
	if (conn->tok != NULL) {
		json_tokener_free(conn->tok);
		conn->tok = NULL;
	}
	free(conn->tin);
	conn->tin = NULL;
	conn->tin_len = 0;
	conn->in_message = 0;
	conn->msg_bytes = 0;
}

/* Releases the socket, timers and parser; the command lists are left alone. */
static void
qmp_release_io(struct qmp_conn *conn)
{
	if (conn->bev != NULL) {
		bufferevent_free(conn->bev);
		conn->bev = NULL;
	}
	if (conn->handshake_timer != NULL) {
		event_free(conn->handshake_timer);
		conn->handshake_timer = NULL;
	}
	if (conn->flush_ev != NULL) {
		event_free(conn->flush_ev);
		conn->flush_ev = NULL;
	}
	qmp_reset_message(conn);
}

/* Takes a command off every list and stops its timer; the caller frees it. */
static void
qmp_cmd_unlink(struct qmp_conn *conn, struct qmp_cmd *cmd)
{
	TAILQ_REMOVE(&conn->cmds, cmd, entry);
	conn->npending--;
	if (cmd->queued) {
		TAILQ_REMOVE(&conn->sendq, cmd, sendq_entry);
		cmd->queued = 0;
	}
	if (cmd->timer_armed) {
		evtimer_del(&cmd->timer);
		cmd->timer_armed = 0;
	}
}

static void
qmp_cmd_free(struct qmp_cmd *cmd)
{
	if (cmd->fd != -1)
		close(cmd->fd);
	free(cmd->line);
	free(cmd->name);
	free(cmd);
}

void
qmp_conn_free(struct qmp_conn *conn)
{
	struct qmp_cmd *cmd;

	if (conn == NULL)
		return;
	qmp_release_io(conn);
	while ((cmd = TAILQ_FIRST(&conn->cmds)) != NULL) {
		qmp_cmd_unlink(conn, cmd);
		qmp_cmd_free(cmd);
	}
	if (conn->greeting_obj != NULL)
		json_object_put(conn->greeting_obj);
	free(conn->greeting);
	free(conn->error);
	free(conn);
}

void
qmp_conn_close(struct qmp_conn *conn, const char *cause)
{
	struct qmp_cmd *cmd;
	struct qmp_reply reply;

	if (conn == NULL || conn->state == QMP_S_CLOSED)
		return;
	conn->state = QMP_S_CLOSED;
	conn->error = qmp_strdup(cause != NULL ? cause : "connection closed");
	qmp_release_io(conn);

	/*
	 * A callback may cancel other commands, execute new ones (refused now) or close again
	 * (a no-op): take the head of the list afresh every time.
	 */
	while ((cmd = TAILQ_FIRST(&conn->cmds)) != NULL) {
		qmp_cmd_unlink(conn, cmd);
		memset(&reply, 0, sizeof reply);
		reply.status = QMP_DISCONNECTED;
		reply.error_desc = conn->error;
		reply.command = cmd->name;
		if (cmd->cb != NULL)
			cmd->cb(conn, &reply, cmd->arg);
		qmp_cmd_free(cmd);
	}
	if (conn->cbs.closed != NULL)
		conn->cbs.closed(conn, conn->error, conn->cbs.arg);
}

/* Closes the connection with a formatted cause. */
static void
qmp_fail(struct qmp_conn *conn, const char *fmt, ...)
{
	va_list ap;
	char *cause;

	va_start(ap, fmt);
	if (vasprintf(&cause, fmt, ap) == -1)
		abort();
	va_end(ap);
	qmp_conn_close(conn, cause);
	free(cause);
}

void
qmp_conn_set_max_message(struct qmp_conn *conn, size_t bytes)
{
	conn->max_message = bytes > 0 ? bytes : QMP_DEFAULT_MAX_MESSAGE;
}

void
qmp_conn_set_handshake_timeout(struct qmp_conn *conn, int timeout_ms)
{
	conn->handshake_ms = timeout_ms;
}

int
qmp_conn_is_ready(const struct qmp_conn *conn)
{
	return conn->state == QMP_S_READY;
}

struct json_object *
qmp_conn_greeting(const struct qmp_conn *conn)
{
	/* A parsed greeting costs a few KiB of hash tables: keep the string and parse on demand. */
	struct qmp_conn *c = (struct qmp_conn *)conn;

	struct json_tokener *tok;

	/* With the connection's depth limit: json_tokener_parse stops at 32 and would give NULL. */
	if (c->greeting_obj == NULL && c->greeting != NULL) {
		tok = json_tokener_new_ex(QMP_JSON_DEPTH);
		if (tok == NULL)
			abort();
		c->greeting_obj = json_tokener_parse_ex(tok, c->greeting, -1);
		json_tokener_free(tok);
	}
	return c->greeting_obj;
}

const char *
qmp_conn_error(const struct qmp_conn *conn)
{
	return conn->error;
}

size_t
qmp_conn_pending(const struct qmp_conn *conn)
{
	return conn->npending;
}

static const struct {
	const char *name;
	int ms;
} qmp_timeouts[] = {
    {"add-fd", 60000},      {"blockdev-add", 60000},   {"blockdev-del", 60000},
    {"chardev-add", 60000}, {"chardev-remove", 60000}, {"closefd", 60000},
    {"device_add", 60000},  {"device_del", 60000},     {"getfd", 60000},
    {"netdev_add", 60000},  {"netdev_del", 60000},     {"object-add", 60000},
    {"object-del", 60000},  {"remove-fd", 60000},      {"qmp_capabilities", 5000},
    {"qom-get", 5000},      {"qom-list", 5000},        {"quit", 10000},
};

int
qmp_default_timeout_ms(const char *command)
{
	size_t i;

	if (command == NULL)
		return 30000;
	if (strncmp(command, "query-", 6) == 0)
		return 5000;
	for (i = 0; i < sizeof qmp_timeouts / sizeof qmp_timeouts[0]; i++) {
		if (strcmp(command, qmp_timeouts[i].name) == 0)
			return qmp_timeouts[i].ms;
	}
	return 30000;
}

/*
 * Appends to the output buffer for the loop to write. EV_WRITE is enabled on the first use only:
 * enabled on an empty buffer, the write event would fire at once for nothing.
 */
static void
qmp_out(struct qmp_conn *conn, const char *buf, size_t len)
{
	if (bufferevent_write(conn->bev, buf, len) != 0)
		abort();
	if (!(bufferevent_get_enabled(conn->bev) & EV_WRITE))
		bufferevent_enable(conn->bev, EV_WRITE);
}

/*
 * Sends bytes that must follow everything already queued: straight to the socket when the output
 * buffer is empty (no write event, no extra loop turn), the rest into the buffer. Never reports
 * an error: on one the bytes go to the buffer and the loop's write hits it again and closes.
 */
static void
qmp_send(struct qmp_conn *conn, const char *buf, size_t len)
{
	ssize_t n = 0;

	if (evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0) {
		do
			n = send(bufferevent_getfd(conn->bev), buf, len,
			         MSG_NOSIGNAL | MSG_DONTWAIT);
		while (n == -1 && errno == EINTR);
		if (n == -1)
			n = 0;
	}
	if ((size_t)n < len)
		qmp_out(conn, buf + n, len - (size_t)n);
}

/* Writes a command carrying an fd; the fd rides on the first byte. Returns bytes sent or -1. */
static ssize_t
qmp_send_fd(struct qmp_conn *conn, struct qmp_cmd *cmd)
{
	struct msghdr msg;
	struct iovec iov;
	struct cmsghdr *cmsg;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	ssize_t n;

	memset(&msg, 0, sizeof msg);
	memset(&control, 0, sizeof control);
	iov.iov_base = cmd->line;
	iov.iov_len = cmd->len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof control.buf;
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &cmd->fd, sizeof(int));
	do
		n = sendmsg(bufferevent_getfd(conn->bev), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n == -1 && errno == EINTR);
	return n;
}

/* Sends a command carrying an fd at once, if nothing is in the output buffer and the socket takes
 * it now: 1 (the fd is closed, what the socket did not take is buffered). 0 leaves it to the
 * loop (qmp_flush), which reports a failure there: sendmsg can fail, and no callback may run
 * inside qmp_execute_fd. */
static int
qmp_send_fd_now(struct qmp_conn *conn, struct qmp_cmd *cmd)
{
	ssize_t n;

	if (evbuffer_get_length(bufferevent_get_output(conn->bev)) > 0 ||
	    (n = qmp_send_fd(conn, cmd)) <= 0)
		return 0;
	if ((size_t)n < cmd->len)
		qmp_out(conn, cmd->line + n, cmd->len - (size_t)n);
	close(cmd->fd);
	cmd->fd = -1;
	return 1;
}

static void qmp_flush_ev_cb(evutil_socket_t, short, void *);

/* Arms flush_ev: for writability (wait), or to run on the next loop turn (now). */
static void
qmp_schedule_flush(struct qmp_conn *conn, int wait)
{
	if (conn->flush_ev == NULL) {
		conn->flush_ev = event_new(conn->base, bufferevent_getfd(conn->bev), EV_WRITE,
		                           qmp_flush_ev_cb, conn);
		if (conn->flush_ev == NULL)
			abort();
	}
	if (wait)
		event_add(conn->flush_ev, NULL);
	else
		event_active(conn->flush_ev, EV_WRITE, 0);
}

/*
 * Moves queued commands to the socket in order. A command with an fd waits until the output
 * buffer is empty (the bufferevent's write callback resumes us), so that QEMU sees the fd with
 * that command and not with an earlier one. Never calls user callbacks: returns -1 with errno
 * for the caller (always in loop context) to close.
 */
static int
qmp_flush(struct qmp_conn *conn)
{
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	struct qmp_cmd *cmd;
	ssize_t n;

	while ((cmd = TAILQ_FIRST(&conn->sendq)) != NULL) {
		if (cmd->fd == -1) {
			qmp_send(conn, cmd->line, cmd->len);
		} else {
			if (evbuffer_get_length(out) > 0)
				return 0;
			n = qmp_send_fd(conn, cmd);
			if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				qmp_schedule_flush(conn, 1);
				return 0;
			}
			if (n == -1)
				return -1;
			if ((size_t)n < cmd->len)
				qmp_out(conn, cmd->line + n, cmd->len - n);
			close(cmd->fd);
			cmd->fd = -1;
		}
		qmp_trace(conn, "out", cmd->line, cmd->len);
		TAILQ_REMOVE(&conn->sendq, cmd, sendq_entry);
		cmd->queued = 0;
		free(cmd->line);
		cmd->line = NULL;
	}
	return 0;
}

/* Flushes from loop context, closing the connection if the socket refuses. */
static void
qmp_flush_or_fail(struct qmp_conn *conn)
{
	if (conn->state == QMP_S_READY && qmp_flush(conn) == -1)
		qmp_fail(conn, "write error: %s", strerror(errno));
}

static void
qmp_flush_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	qmp_flush_or_fail(arg);
}

static void
qmp_bev_write_cb(struct bufferevent *bev, void *arg)
{
	struct qmp_conn *conn = arg;

	if (!TAILQ_EMPTY(&conn->sendq))
		qmp_flush_or_fail(conn);
}

static void
qmp_cmd_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qmp_cmd *cmd = arg;
	struct qmp_conn *conn = cmd->conn;
	struct qmp_reply reply;
	char *desc;

	cmd->timer_armed = 0;
	qmp_cmd_unlink(conn, cmd);
	desc = qmp_printf("%s: no reply within %d ms", cmd->name, cmd->timeout_ms);
	memset(&reply, 0, sizeof reply);
	reply.status = QMP_TIMEOUT;
	reply.error_desc = desc;
	reply.command = cmd->name;
	if (cmd->cb != NULL)
		cmd->cb(conn, &reply, cmd->arg);
	free(desc);
	qmp_cmd_free(cmd);
}

/* 1 if s is printable ASCII that JSON strings carry as is (no quote, backslash or control). */
static int
qmp_is_plain_string(const char *s)
{
	const unsigned char *p;

	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\')
			return 0;
	}
	return 1;
}

/* Serializes {"execute":..., "arguments":..., "id":...} compactly (QEMU reads byte by byte). */
static char *
qmp_serialize(const char *command, struct json_object *args, int64_t id, size_t *len)
{
	struct json_object *msg;
	const char *s;
	char *line;
	size_t size;
	int n;

	/* The usual command without arguments: the same bytes as json-c's, without a tree. */
	if (args == NULL && qmp_is_plain_string(command)) {
		size = strlen(command) + sizeof "{\"execute\":\"\",\"id\":-9223372036854775808}";
		line = malloc(size);
		if (line == NULL)
			abort();
		n = snprintf(line, size, "{\"execute\":\"%s\",\"id\":%" PRId64 "}", command, id);
		if (n < 0 || (size_t)n >= size)
			abort();
		*len = (size_t)n;
		return line;
	}
	msg = json_object_new_object();
	json_object_object_add(msg, "execute", json_object_new_string(command));
	if (args != NULL)
		json_object_object_add(msg, "arguments", json_object_get(args));
	json_object_object_add(msg, "id", json_object_new_int64(id));
	s = json_object_to_json_string_length(
	    msg, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
	if (s == NULL)
		abort();
	line = malloc(*len);
	if (line == NULL)
		abort();
	memcpy(line, s, *len);
	json_object_put(msg);
	return line;
}

int64_t
qmp_execute_fd(struct qmp_conn *conn, const char *command, struct json_object *args, int fd,
               int timeout_ms, qmp_reply_cb cb, void *arg, char **cause)
{
	struct qmp_cmd *cmd;
	struct timeval tv;
	int dupfd = -1;

	if (conn->state == QMP_S_CLOSED) {
		qmp_set_cause(cause, "%s", conn->error);
		return -1;
	}
	if (command == NULL || *command == '\0') {
		qmp_set_cause(cause, "no command name");
		return -1;
	}
	if (fd != -1) {
		dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (dupfd == -1) {
			qmp_set_cause(cause, "%s: cannot duplicate fd %d: %s", command, fd,
			              strerror(errno));
			return -1;
		}
	}

	cmd = calloc(1, sizeof *cmd);
	if (cmd == NULL)
		abort();
	cmd->conn = conn;
	cmd->id = conn->next_id++;
	cmd->name = qmp_strdup(command);
	cmd->fd = dupfd;
	cmd->cb = cb;
	cmd->arg = arg;
	cmd->line = qmp_serialize(command, args, cmd->id, &cmd->len);
	cmd->timeout_ms = timeout_ms == 0 ? qmp_default_timeout_ms(command) : timeout_ms;
	TAILQ_INSERT_TAIL(&conn->cmds, cmd, entry);
	conn->npending++;

	if (cmd->timeout_ms > 0) {
		evtimer_assign(&cmd->timer, conn->base, qmp_cmd_timeout_cb, cmd);
		tv.tv_sec = cmd->timeout_ms / 1000;
		tv.tv_usec = (cmd->timeout_ms % 1000) * 1000;
		evtimer_add(&cmd->timer, &tv);
		cmd->timer_armed = 1;
	}

	if (conn->state == QMP_S_READY && TAILQ_EMPTY(&conn->sendq) &&
	    (dupfd == -1 || qmp_send_fd_now(conn, cmd))) {
		/*
		 * The common case: written now if nothing is waiting, else appended to the output
		 * buffer; a write error is left for the loop to report. A command with an fd went
		 * out now (above) when the socket took its first byte at once.
		 */
		if (dupfd == -1)
			qmp_send(conn, cmd->line, cmd->len);
		qmp_trace(conn, "out", cmd->line, cmd->len);
		free(cmd->line);
		cmd->line = NULL;
	} else {
		TAILQ_INSERT_TAIL(&conn->sendq, cmd, sendq_entry);
		cmd->queued = 1;
		/* sendmsg can fail: do it from the loop so no callback runs inside this call. */
		if (conn->state == QMP_S_READY)
			qmp_schedule_flush(conn, 0);
	}
	return cmd->id;
}

int64_t
qmp_execute(struct qmp_conn *conn, const char *command, struct json_object *args, int timeout_ms,
            qmp_reply_cb cb, void *arg, char **cause)
{
	return qmp_execute_fd(conn, command, args, -1, timeout_ms, cb, arg, cause);
}

void
qmp_cancel(struct qmp_conn *conn, int64_t id)
{
	struct qmp_cmd *cmd;

	TAILQ_FOREACH(cmd, &conn->cmds, entry)
	{
		if (cmd->id == id) {
			qmp_cmd_unlink(conn, cmd);
			qmp_cmd_free(cmd);
			return;
		}
	}
}

/* The greeting: remember its "QMP" object and negotiate capabilities. */
static void
qmp_on_greeting(struct qmp_conn *conn, struct json_object *msg)
{
	struct json_object *qmp;
	const char *s;
	size_t len;
	char *line;

	if (!json_object_object_get_ex(msg, "QMP", &qmp) ||
	    !json_object_is_type(qmp, json_type_object)) {
		qmp_fail(conn, "protocol error: greeting has no \"QMP\" key");
		return;
	}
	s = json_object_to_json_string_ext(qmp, JSON_C_TO_STRING_PLAIN);
	conn->greeting = qmp_strdup(s);

	conn->caps_id = conn->next_id++;
	line = qmp_serialize("qmp_capabilities", NULL, conn->caps_id, &len);
	qmp_send(conn, line, len);
	qmp_trace(conn, "out", line, len);
	free(line);
	conn->state = QMP_S_NEGOTIATING;
}

/* The qmp_capabilities reply: the connection is ready (QEMU's greeting comes earlier). */
static void
qmp_on_caps_reply(struct qmp_conn *conn, struct json_object *msg)
{
	struct json_object *err, *desc;

	if (json_object_object_get_ex(msg, "error", &err)) {
		json_object_object_get_ex(err, "desc", &desc);
		qmp_fail(conn, "qmp_capabilities failed: %s",
		         desc != NULL ? json_object_get_string(desc) : "unknown error");
		return;
	}
	conn->state = QMP_S_READY;
	conn->caps_id = 0;
	if (conn->handshake_timer != NULL) {
		event_free(conn->handshake_timer);
		conn->handshake_timer = NULL;
	}
	if (qmp_flush(conn) == -1) {
		qmp_fail(conn, "write error: %s", strerror(errno));
		return;
	}
	if (conn->cbs.ready != NULL)
		conn->cbs.ready(conn, conn->cbs.arg);
}

static void
qmp_on_reply(struct qmp_conn *conn, struct json_object *msg)
{
	struct json_object *idobj, *ret = NULL, *err, *cls = NULL, *desc = NULL;
	struct qmp_cmd *cmd;
	struct qmp_reply reply;
	int64_t id;

	if (!json_object_object_get_ex(msg, "id", &idobj)) {
		if (conn->npending > 0 || conn->caps_id != 0)
			qmp_fail(conn, "protocol error: reply without id");
		return;
	}
	/* Ids are ours and always integers: anything else is somebody else's reply. */
	if (!json_object_is_type(idobj, json_type_int))
		return;
	id = json_object_get_int64(idobj);
	if (conn->caps_id != 0 && id == conn->caps_id) {
		qmp_on_caps_reply(conn, msg);
		return;
	}
	TAILQ_FOREACH(cmd, &conn->cmds, entry)
	{
		if (cmd->id == id && !cmd->queued)
			break;
	}
	if (cmd == NULL)
		return; /* a late reply after a timeout or cancel, or a duplicate */

	memset(&reply, 0, sizeof reply);
	reply.command = cmd->name;
	if (json_object_object_get_ex(msg, "return", &ret)) {
		reply.status = QMP_OK;
		reply.result = ret;
	} else {
		json_object_object_get_ex(msg, "error", &err);
		json_object_object_get_ex(err, "class", &cls);
		json_object_object_get_ex(err, "desc", &desc);
		reply.status = QMP_ERROR;
		reply.error_class = cls != NULL ? json_object_get_string(cls) : "GenericError";
		reply.error_desc = desc != NULL ? json_object_get_string(desc) : "unknown error";
	}
	qmp_cmd_unlink(conn, cmd);
	if (cmd->cb != NULL)
		cmd->cb(conn, &reply, cmd->arg);
	qmp_cmd_free(cmd);
}

static void
qmp_on_event(struct qmp_conn *conn, struct json_object *msg, struct json_object *name)
{
	struct json_object *data = NULL, *ts, *v;
	int64_t sec = 0, usec = 0;

	if (!json_object_is_type(name, json_type_string)) {
		qmp_fail(conn, "protocol error: event name is not a string");
		return;
	}
	json_object_object_get_ex(msg, "data", &data);
	if (json_object_object_get_ex(msg, "timestamp", &ts)) {
		if (json_object_object_get_ex(ts, "seconds", &v))
			sec = json_object_get_int64(v);
		if (json_object_object_get_ex(ts, "microseconds", &v))
			usec = json_object_get_int64(v);
	}
	if (conn->cbs.event != NULL)
		conn->cbs.event(conn, json_object_get_string(name), data, sec, usec, conn->cbs.arg);
}

/* Classifies one complete message: greeting, event or reply. */
static void
qmp_dispatch(struct qmp_conn *conn, struct json_object *msg)
{
	struct json_object *v;

	if (!json_object_is_type(msg, json_type_object)) {
		qmp_fail(conn, "protocol error: message is not a JSON object");
		return;
	}
	if (conn->state == QMP_S_GREETING)
		qmp_on_greeting(conn, msg);
	else if (json_object_object_get_ex(msg, "event", &v))
		qmp_on_event(conn, msg, v);
	else if (json_object_object_get_ex(msg, "return", NULL) ||
	         json_object_object_get_ex(msg, "error", NULL))
		qmp_on_reply(conn, msg);
	else
		qmp_fail(conn, "protocol error: message is neither a reply nor an event");
}

static int
qmp_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Keeps the first QMP_TRACE_MAX bytes of the current message for the trace callback. */
static void
qmp_trace_keep(struct qmp_conn *conn, const char *p, size_t n)
{
	size_t room;

	if (conn->cbs.trace == NULL)
		return;
	if (conn->tin == NULL) {
		conn->tin = malloc(QMP_TRACE_MAX);
		if (conn->tin == NULL)
			abort();
	}
	room = QMP_TRACE_MAX - conn->tin_len;
	if (n > room)
		n = room;
	memcpy(conn->tin + conn->tin_len, p, n);
	conn->tin_len += n;
}

/*
 * Feeds the start of one input chunk to the tokener, never more than one byte past the size
 * limit. Drains what it used from in, and dispatches a completed message.
 */
static void
qmp_feed(struct qmp_conn *conn, struct evbuffer *in, const char *p, size_t n)
{
	struct json_object *msg;
	enum json_tokener_error err;
	size_t used, body, room = conn->max_message - conn->msg_bytes + 1;

	if (n > room)
		n = room;
	if (n > INT_MAX)
		n = INT_MAX;
	msg = json_tokener_parse_ex(conn->tok, p, (int)n);
	err = json_tokener_get_error(conn->tok);
	if (msg == NULL && err != json_tokener_continue) {
		qmp_trace_keep(conn, p, n);
		qmp_trace(conn, "in", conn->tin, conn->tin_len);
		qmp_fail(conn, "invalid JSON from peer: %s", json_tokener_error_desc(err));
		return;
	}
	used = msg != NULL ? json_tokener_get_parse_end(conn->tok) : n;
	/* The tokener eats whitespace after a message: that is not part of its size. */
	body = used;
	while (msg != NULL && body > 0 && qmp_is_space(p[body - 1]))
		body--;
	qmp_trace_keep(conn, p, body);
	conn->msg_bytes += body;
	if (conn->msg_bytes > conn->max_message) {
		json_object_put(msg);
		qmp_trace(conn, "in", conn->tin, conn->tin_len);
		qmp_fail(conn, "message larger than %zu bytes", conn->max_message);
		return;
	}
	evbuffer_drain(in, used);
	if (msg == NULL)
		return;
	qmp_trace(conn, "in", conn->tin, conn->tin_len);
	free(conn->tin);
	conn->tin = NULL;
	conn->tin_len = 0;
	conn->in_message = 0;
	conn->msg_bytes = 0;
	json_tokener_reset(conn->tok);
	qmp_dispatch(conn, msg);
	json_object_put(msg);
}

static void
qmp_bev_read_cb(struct bufferevent *bev, void *arg)
{
	struct qmp_conn *conn = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_iovec v;
	const char *p;
	size_t skip;

	/* A callback run by a message may close the connection: stop as soon as it does. */
	while (conn->state != QMP_S_CLOSED && evbuffer_get_length(in) > 0) {
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		p = v.iov_base;
		if (!conn->in_message) {
			/* QEMU ends messages with CRLF; any whitespace between them is fine. */
			for (skip = 0; skip < v.iov_len; skip++) {
				if (!qmp_is_space(p[skip]))
					break;
			}
			if (skip > 0) {
				evbuffer_drain(in, skip);
				continue;
			}
			if (conn->tok == NULL) {
				conn->tok = json_tokener_new_ex(QMP_JSON_DEPTH);
				if (conn->tok == NULL)
					abort();
				json_tokener_set_flags(conn->tok,
				                       JSON_TOKENER_STRICT |
				                           JSON_TOKENER_ALLOW_TRAILING_CHARS);
			}
			conn->in_message = 1;
			conn->msg_bytes = 0;
		}
		qmp_feed(conn, in, p, v.iov_len);
	}
	/* Idle connections keep no parser: thousands of them must stay cheap. */
	if (conn->state != QMP_S_CLOSED && !conn->in_message)
		qmp_reset_message(conn);
}

static void
qmp_bev_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct qmp_conn *conn = arg;
	int err = EVUTIL_SOCKET_ERROR();

	if (what & BEV_EVENT_EOF) {
		if (conn->in_message)
			qmp_fail(conn, "connection closed by peer in the middle of a message");
		else
			qmp_fail(conn, "connection closed by peer");
	} else if (what & BEV_EVENT_ERROR) {
		qmp_fail(conn, "%s error: %s", (what & BEV_EVENT_WRITING) ? "write" : "read",
		         strerror(err));
	}
}

static void
qmp_handshake_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qmp_conn *conn = arg;

	if (conn->state == QMP_S_GREETING)
		qmp_fail(conn, "no QMP greeting within %d ms", conn->handshake_ms);
	else
		qmp_fail(conn, "no reply to qmp_capabilities within %d ms", conn->handshake_ms);
}

/*
 * Wraps a connected socket in the bufferevent and starts waiting for the greeting. The state must
 * be NEW. set_flags: make fd non-blocking and close-on-exec (a caller's fd; our own socket was
 * created that way). Takes ownership of fd.
 */
static int
qmp_attach(struct qmp_conn *conn, int fd, int set_flags, char **cause)
{
	struct timeval tv;

	if (set_flags && (evutil_make_socket_nonblocking(fd) == -1 ||
	                  evutil_make_socket_closeonexec(fd) == -1)) {
		qmp_set_cause(cause, "cannot set up socket: %s", strerror(errno));
		close(fd);
		return -1;
	}
	conn->bev = bufferevent_socket_new(conn->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (conn->bev == NULL) {
		qmp_set_cause(cause, "cannot create bufferevent");
		close(fd);
		return -1;
	}
	bufferevent_setcb(conn->bev, qmp_bev_read_cb, qmp_bev_write_cb, qmp_bev_event_cb, conn);
	/* EV_WRITE waits for the first output (qmp_out). */
	bufferevent_enable(conn->bev, EV_READ);
	if (conn->handshake_ms > 0) {
		conn->handshake_timer = evtimer_new(conn->base, qmp_handshake_timeout_cb, conn);
		if (conn->handshake_timer == NULL)
			abort();
		tv.tv_sec = conn->handshake_ms / 1000;
		tv.tv_usec = (conn->handshake_ms % 1000) * 1000;
		evtimer_add(conn->handshake_timer, &tv);
	}
	conn->state = QMP_S_GREETING;
	return 0;
}

int
qmp_conn_connect_fd(struct qmp_conn *conn, int fd, char **cause)
{
	if (conn->state != QMP_S_NEW) {
		close(fd);
		if (conn->state == QMP_S_CLOSED)
			qmp_set_cause(cause, "%s", conn->error);
		else
			qmp_set_cause(cause, "already connected");
		return -1;
	}
	return qmp_attach(conn, fd, 1, cause);
}

int
qmp_conn_connect_path(struct qmp_conn *conn, const char *path, char **cause)
{
	struct sockaddr_un sun;
	int fd, saved;

	if (conn->state != QMP_S_NEW) {
		if (conn->state == QMP_S_CLOSED)
			qmp_set_cause(cause, "%s", conn->error);
		else
			qmp_set_cause(cause, "already connected");
		return -1;
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun.sun_path) {
		qmp_set_cause(cause, "%s: socket path too long", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		qmp_set_cause(cause, "socket: %s", strerror(errno));
		return -1;
	}
	/*
	 * A unix stream connect completes at once or fails at once (EAGAIN: backlog full);
	 * it never goes on in the background, so there is nothing to wait for.
	 */
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		saved = errno;
		close(fd);
		qmp_set_cause(cause, "connect %s: %s", path, strerror(saved));
		errno = saved;
		return -1;
	}
	return qmp_attach(conn, fd, 0, cause);
}
