/*
 * fake_qmp.c: the scripted QMP peer. It reads with recvmsg so that it sees passed fds, parses
 * the client's commands with its own json_tokener, and writes from an evbuffer through its own
 * write event so that a byte-at-a-time mode and streaming of huge messages are possible.
 */
#include <errno.h>
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
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <json-c/json.h>

#include "fake_qmp.h"

#define FAKE_MAX_FDS   8
#define FAKE_READ_SIZE 65536 /* bytes per read callback at most */

static const char fake_greeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"Debian 1:7.2+dfsg-7+deb12u7\"}, \"capabilities\": [\"oob\"]}}\r\n";

enum fake_step_type {
	FAKE_SEND,
	FAKE_EXPECT,
	FAKE_REPLY,
	FAKE_SLEEP,
	FAKE_CALL,
	FAKE_STREAM,
	FAKE_CLOSE,
};

struct fake_step {
	enum fake_step_type type;
	char *buf; /* SEND: bytes; STREAM: prefix */
	size_t len;
	char *suffix; /* STREAM */
	char fill;
	size_t count;
	int idx; /* EXPECT, REPLY */
	int ms;
	void (*fn)(void *);
	void *arg;
};

struct fake_expect {
	char *command;
	struct json_object *args;  /* NULL: not checked */
	struct json_object *reply; /* NULL: never answered */
	int later;
	int want_fd;
	dev_t dev;
	ino_t ino;
	struct json_object *cmd; /* the command received */
};

struct fake_rx {
	struct fake_rx *next;
	struct json_object *cmd;
	int nfds;
	int fds[FAKE_MAX_FDS];
};

struct fake_qmp {
	struct event_base *base;
	int fd;
	struct event *rev, *wev, *timer, *kick;
	struct evbuffer *out;
	size_t chunk;

	struct fake_step *steps;
	size_t nsteps, stepcap, pos;
	struct fake_expect *exps;
	size_t nexps, expcap;

	struct fake_rx *rx_head, **rx_tail;
	size_t nrx;
	int fds[FAKE_MAX_FDS]; /* received, for the next command to complete */
	int nfds;
	struct json_tokener *tok;
	int in_msg;

	int running, sleeping, streaming, closing, closed, gone;
	size_t stream_left, streamed;
	char *stream_suffix;
	char stream_fill;
	char *failure;
};

static void fake_run(struct fake_qmp *);

static void fake_fail(struct fake_qmp *, const char *, ...) __attribute__((format(printf, 2, 3)));

static void
fake_fail(struct fake_qmp *fq, const char *fmt, ...)
{
	va_list ap;

	if (fq->failure != NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(&fq->failure, fmt, ap) == -1)
		abort();
	va_end(ap);
}

static void
fake_close_socket(struct fake_qmp *fq)
{
	if (fq->closed)
		return;
	event_del(fq->rev);
	event_del(fq->wev);
	close(fq->fd);
	fq->fd = -1;
	fq->closed = 1;
}

static void
fake_update_write(struct fake_qmp *fq)
{
	if (fq->closed)
		return;
	if (evbuffer_get_length(fq->out) > 0 || fq->streaming)
		event_add(fq->wev, NULL);
	else
		event_del(fq->wev);
}

static void
fake_write_cb(evutil_socket_t fd, short what, void *arg)
{
	static char fillbuf[65536];
	struct fake_qmp *fq = arg;
	size_t limit = fq->chunk > 0 ? fq->chunk : SIZE_MAX, n;
	ssize_t w;

	if (evbuffer_get_length(fq->out) > 0) {
		w = evbuffer_write_atmost(fq->out, fd, limit > INT32_MAX ? -1 : (ssize_t)limit);
	} else if (fq->streaming && fq->stream_left > 0) {
		n = fq->stream_left;
		if (n > sizeof fillbuf)
			n = sizeof fillbuf;
		if (n > limit)
			n = limit;
		if (fillbuf[0] != fq->stream_fill)
			memset(fillbuf, fq->stream_fill, sizeof fillbuf);
		w = send(fd, fillbuf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			fq->stream_left -= (size_t)w;
			fq->streamed += (size_t)w;
		}
		if (w > 0 && fq->stream_left == 0) {
			evbuffer_add(fq->out, fq->stream_suffix, strlen(fq->stream_suffix));
			fq->streaming = 0;
		}
	} else {
		w = 0;
	}
	if (w == -1 && errno != EAGAIN && errno != EINTR) {
		/* The client went away: nothing more can be written. */
		fq->gone = 1;
		fq->streaming = 0;
		evbuffer_drain(fq->out, evbuffer_get_length(fq->out));
	}
	fake_update_write(fq);
	if (evbuffer_get_length(fq->out) == 0 && !fq->streaming)
		fake_run(fq);
}

/* Queues the reply of expectation exp, with the id of the command it received. */
static void
fake_send_reply(struct fake_qmp *fq, struct fake_expect *exp)
{
	struct json_object *id;
	const char *s;

	if (exp->cmd == NULL) {
		fake_fail(fq, "reply to %s, which was never received", exp->command);
		return;
	}
	if (json_object_object_get_ex(exp->cmd, "id", &id))
		json_object_object_add(exp->reply, "id", json_object_get(id));
	s = json_object_to_json_string_ext(exp->reply, JSON_C_TO_STRING_SPACED);
	evbuffer_add(fq->out, s, strlen(s));
	evbuffer_add(fq->out, "\r\n", 2);
}

static void
fake_close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* Checks the received command rx against expectation exp. */
static void
fake_match(struct fake_qmp *fq, struct fake_expect *exp, struct fake_rx *rx)
{
	struct json_object *v, *args = NULL;
	const char *name;
	struct stat st;

	if (!json_object_object_get_ex(rx->cmd, "execute", &v)) {
		fake_fail(fq, "command without \"execute\": %s",
		          json_object_to_json_string(rx->cmd));
		return;
	}
	name = json_object_get_string(v);
	if (strcmp(name, exp->command) != 0) {
		fake_fail(fq, "expected command %s, got %s", exp->command,
		          json_object_to_json_string(rx->cmd));
		return;
	}
	if (!json_object_object_get_ex(rx->cmd, "id", NULL)) {
		fake_fail(fq, "%s: command without id", name);
		return;
	}
	json_object_object_get_ex(rx->cmd, "arguments", &args);
	if (exp->args != NULL && !json_object_equal(exp->args, args)) {
		fake_fail(fq, "%s: expected arguments %s, got %s", name,
		          json_object_to_json_string(exp->args),
		          args != NULL ? json_object_to_json_string(args) : "none");
		return;
	}
	if (!exp->want_fd && rx->nfds != 0) {
		fake_fail(fq, "%s: unexpected fd with the command", name);
		return;
	}
	if (exp->want_fd) {
		if (rx->nfds != 1) {
			fake_fail(fq, "%s: expected one fd, got %d", name, rx->nfds);
			return;
		}
		if (fstat(rx->fds[0], &st) == -1 || st.st_dev != exp->dev ||
		    st.st_ino != exp->ino) {
			fake_fail(fq, "%s: the fd received is not the file sent", name);
			return;
		}
	}
	exp->cmd = json_object_get(rx->cmd);
}

/* Runs script steps until one has to wait (for a command, a timer, the output to drain). */
static void
fake_run(struct fake_qmp *fq)
{
	struct fake_step *step;
	struct fake_expect *exp;
	struct fake_rx *rx;
	struct timeval tv;
	void (*fn)(void *);
	void *arg;

	if (fq->running)
		return;
	fq->running = 1;
	while (fq->failure == NULL && fq->pos < fq->nsteps && !fq->sleeping && !fq->streaming) {
		step = &fq->steps[fq->pos];
		switch (step->type) {
		case FAKE_SEND:
			evbuffer_add(fq->out, step->buf, step->len);
			break;
		case FAKE_EXPECT:
			if (fq->rx_head == NULL)
				goto wait;
			rx = fq->rx_head;
			fq->rx_head = rx->next;
			if (fq->rx_head == NULL)
				fq->rx_tail = &fq->rx_head;
			fq->nrx--;
			exp = &fq->exps[step->idx];
			fake_match(fq, exp, rx);
			fake_close_fds(rx->fds, rx->nfds);
			json_object_put(rx->cmd);
			free(rx);
			if (fq->failure == NULL && exp->reply != NULL && !exp->later)
				fake_send_reply(fq, exp);
			break;
		case FAKE_REPLY:
			fake_send_reply(fq, &fq->exps[step->idx]);
			break;
		case FAKE_SLEEP:
			tv.tv_sec = step->ms / 1000;
			tv.tv_usec = (step->ms % 1000) * 1000;
			evtimer_add(fq->timer, &tv);
			fq->sleeping = 1;
			break;
		case FAKE_CALL:
			/* fn may add steps, which may move the array. */
			fn = step->fn;
			arg = step->arg;
			fq->pos++;
			fn(arg);
			continue;
		case FAKE_STREAM:
			evbuffer_add(fq->out, step->buf, step->len);
			fq->stream_left = step->count;
			fq->stream_suffix = step->suffix;
			fq->stream_fill = step->fill;
			fq->streaming = 1;
			break;
		case FAKE_CLOSE:
			if (evbuffer_get_length(fq->out) > 0 && !fq->gone)
				goto wait;
			fake_close_socket(fq);
			break;
		}
		fq->pos++;
	}
wait:
	fq->running = 0;
	fake_update_write(fq);
}

/* Parses what the client sent; fds must arrive with the first byte of a command. */
static void
fake_parse(struct fake_qmp *fq, const char *p, size_t n, const int *fds, int nfds)
{
	struct json_object *obj;
	struct fake_rx *rx;
	size_t used;

	for (int i = 0; i < nfds; i++) {
		if (fq->in_msg || fq->nfds >= FAKE_MAX_FDS) {
			fake_fail(fq, "fd received in the middle of a command");
			close(fds[i]);
			continue;
		}
		fq->fds[fq->nfds++] = fds[i];
	}
	while (n > 0) {
		if (!fq->in_msg) {
			if (*p == ' ' || *p == '\r' || *p == '\n' || *p == '\t') {
				p++;
				n--;
				continue;
			}
			fq->in_msg = 1;
		}
		obj = json_tokener_parse_ex(fq->tok, p, (int)n);
		if (obj == NULL) {
			if (json_tokener_get_error(fq->tok) != json_tokener_continue)
				fake_fail(fq, "client sent invalid JSON");
			return;
		}
		used = json_tokener_get_parse_end(fq->tok);
		json_tokener_reset(fq->tok);
		fq->in_msg = 0;
		p += used;
		n -= used;
		rx = calloc(1, sizeof *rx);
		rx->cmd = obj;
		rx->nfds = fq->nfds;
		memcpy(rx->fds, fq->fds, sizeof fq->fds);
		fq->nfds = 0;
		*fq->rx_tail = rx;
		fq->rx_tail = &rx->next;
		fq->nrx++;
	}
}

/*
 * Reads what the client sent one byte per recvmsg, as QEMU does: a passed fd then arrives with
 * exactly the byte it was sent with, which lets fake_parse check it starts a command.
 */
static void
fake_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fake_qmp *fq = arg;
	union {
		char buf[CMSG_SPACE(FAKE_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct msghdr msg;
	struct iovec iov;
	struct cmsghdr *cmsg;
	int fds[FAKE_MAX_FDS], nfds;
	ssize_t n;
	char c;

	for (int i = 0; i < FAKE_READ_SIZE && !fq->gone; i++) {
		memset(&msg, 0, sizeof msg);
		iov.iov_base = &c;
		iov.iov_len = 1;
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof control.buf;
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			fq->gone = 1;
			event_del(fq->rev);
			break;
		}
		nfds = 0;
		for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
			if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
				continue;
			int k = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int j = 0; j < k && nfds < FAKE_MAX_FDS; j++)
				memcpy(&fds[nfds++], CMSG_DATA(cmsg) + j * sizeof(int),
				       sizeof(int));
		}
		fake_parse(fq, &c, 1, fds, nfds);
	}
	fake_run(fq);
}

static void
fake_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fake_qmp *fq = arg;

	fq->sleeping = 0;
	fake_run(fq);
}

static void
fake_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	fake_run(arg);
}

struct fake_qmp *
fake_qmp_new_fd(struct event_base *base, int fd)
{
	struct fake_qmp *fq = calloc(1, sizeof *fq);

	/* A client that closes makes our writes fail: report EPIPE, do not die. */
	signal(SIGPIPE, SIG_IGN);
	evutil_make_socket_nonblocking(fd);
	fq->base = base;
	fq->fd = fd;
	fq->out = evbuffer_new();
	fq->rev = event_new(base, fd, EV_READ | EV_PERSIST, fake_read_cb, fq);
	fq->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, fake_write_cb, fq);
	fq->timer = evtimer_new(base, fake_timer_cb, fq);
	fq->kick = event_new(base, -1, 0, fake_kick_cb, fq);
	fq->tok = json_tokener_new();
	fq->rx_tail = &fq->rx_head;
	event_add(fq->rev, NULL);
	return fq;
}

struct fake_qmp *
fake_qmp_new(struct event_base *base, int *client_fd)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return NULL;
	*client_fd = sv[1];
	return fake_qmp_new_fd(base, sv[0]);
}

void
fake_qmp_free(struct fake_qmp *fq)
{
	struct fake_rx *rx;

	if (fq == NULL)
		return;
	fake_close_socket(fq);
	event_free(fq->rev);
	event_free(fq->wev);
	event_free(fq->timer);
	event_free(fq->kick);
	evbuffer_free(fq->out);
	json_tokener_free(fq->tok);
	while ((rx = fq->rx_head) != NULL) {
		fq->rx_head = rx->next;
		fake_close_fds(rx->fds, rx->nfds);
		json_object_put(rx->cmd);
		free(rx);
	}
	fake_close_fds(fq->fds, fq->nfds);
	for (size_t i = 0; i < fq->nsteps; i++) {
		free(fq->steps[i].buf);
		free(fq->steps[i].suffix);
	}
	for (size_t i = 0; i < fq->nexps; i++) {
		free(fq->exps[i].command);
		json_object_put(fq->exps[i].args);
		json_object_put(fq->exps[i].reply);
		json_object_put(fq->exps[i].cmd);
	}
	free(fq->steps);
	free(fq->exps);
	free(fq->failure);
	free(fq);
}

void
fake_qmp_set_chunk(struct fake_qmp *fq, size_t bytes)
{
	fq->chunk = bytes;
}

void
fake_qmp_set_reading(struct fake_qmp *fq, int on)
{
	if (fq->closed || fq->gone)
		return;
	if (on)
		event_add(fq->rev, NULL);
	else
		event_del(fq->rev);
}

static struct fake_step *
fake_add_step(struct fake_qmp *fq, enum fake_step_type type)
{
	struct fake_step *step;

	if (fq->nsteps == fq->stepcap) {
		fq->stepcap = fq->stepcap ? fq->stepcap * 2 : 16;
		fq->steps = realloc(fq->steps, fq->stepcap * sizeof *fq->steps);
	}
	step = &fq->steps[fq->nsteps++];
	memset(step, 0, sizeof *step);
	step->type = type;
	/* Run from the loop, never from inside the test's call. */
	event_active(fq->kick, EV_TIMEOUT, 1);
	return step;
}

static struct json_object *
fake_parse_json(const char *what, const char *s)
{
	struct json_object *obj;

	if (s == NULL)
		return NULL;
	obj = json_tokener_parse(s);
	if (obj == NULL)
		fail_msg("fake_qmp: bad JSON in %s: %s", what, s);
	return obj;
}

static int
fake_add_expect(struct fake_qmp *fq, const char *command, const char *args, const char *reply,
                int later, int same_as)
{
	struct fake_expect *exp;
	struct stat st;
	int idx;

	if (fq->nexps == fq->expcap) {
		fq->expcap = fq->expcap ? fq->expcap * 2 : 16;
		fq->exps = realloc(fq->exps, fq->expcap * sizeof *fq->exps);
	}
	idx = (int)fq->nexps++;
	exp = &fq->exps[idx];
	memset(exp, 0, sizeof *exp);
	exp->command = strdup(command);
	exp->args = fake_parse_json("args", args);
	exp->reply = fake_parse_json("reply", reply);
	exp->later = later;
	if (same_as != -1) {
		if (fstat(same_as, &st) == -1)
			fail_msg("fake_qmp: fstat: %s", strerror(errno));
		exp->want_fd = 1;
		exp->dev = st.st_dev;
		exp->ino = st.st_ino;
	}
	fake_add_step(fq, FAKE_EXPECT)->idx = idx;
	return idx;
}

void
fake_qmp_send_len(struct fake_qmp *fq, const void *buf, size_t len)
{
	struct fake_step *step = fake_add_step(fq, FAKE_SEND);

	step->buf = malloc(len > 0 ? len : 1);
	memcpy(step->buf, buf, len);
	step->len = len;
}

void
fake_qmp_send(struct fake_qmp *fq, const char *raw)
{
	fake_qmp_send_len(fq, raw, strlen(raw));
}

void
fake_qmp_greeting(struct fake_qmp *fq)
{
	fake_qmp_send(fq, fake_greeting);
}

void
fake_qmp_handshake(struct fake_qmp *fq)
{
	fake_qmp_greeting(fq);
	fake_qmp_expect(fq, "qmp_capabilities", NULL, "{\"return\": {}}");
}

int
fake_qmp_expect(struct fake_qmp *fq, const char *command, const char *args, const char *reply)
{
	return fake_add_expect(fq, command, args, reply, 0, -1);
}

int
fake_qmp_expect_later(struct fake_qmp *fq, const char *command, const char *args, const char *reply)
{
	return fake_add_expect(fq, command, args, reply, 1, -1);
}

int
fake_qmp_expect_fd(struct fake_qmp *fq, const char *command, const char *args, const char *reply,
                   int same_as)
{
	return fake_add_expect(fq, command, args, reply, 0, same_as);
}

void
fake_qmp_reply(struct fake_qmp *fq, int idx)
{
	fake_add_step(fq, FAKE_REPLY)->idx = idx;
}

void
fake_qmp_sleep(struct fake_qmp *fq, int ms)
{
	fake_add_step(fq, FAKE_SLEEP)->ms = ms;
}

void
fake_qmp_call(struct fake_qmp *fq, void (*fn)(void *), void *arg)
{
	struct fake_step *step = fake_add_step(fq, FAKE_CALL);

	step->fn = fn;
	step->arg = arg;
}

void
fake_qmp_stream(struct fake_qmp *fq, const char *prefix, char fill, size_t count,
                const char *suffix)
{
	struct fake_step *step = fake_add_step(fq, FAKE_STREAM);

	step->buf = strdup(prefix);
	step->len = strlen(prefix);
	step->fill = fill;
	step->count = count;
	step->suffix = strdup(suffix);
}

void
fake_qmp_close(struct fake_qmp *fq)
{
	fake_add_step(fq, FAKE_CLOSE);
}

int
fake_qmp_done(const struct fake_qmp *fq)
{
	return fq->pos == fq->nsteps && evbuffer_get_length(fq->out) == 0 && !fq->sleeping &&
	       !fq->streaming;
}

int
fake_qmp_client_gone(const struct fake_qmp *fq)
{
	return fq->gone;
}

const char *
fake_qmp_failure(const struct fake_qmp *fq)
{
	return fq->failure;
}

size_t
fake_qmp_streamed(const struct fake_qmp *fq)
{
	return fq->streamed;
}

struct json_object *
fake_qmp_command(const struct fake_qmp *fq, int idx)
{
	if (idx < 0 || (size_t)idx >= fq->nexps)
		return NULL;
	return fq->exps[idx].cmd;
}

size_t
fake_qmp_unexpected(const struct fake_qmp *fq)
{
	return fq->nrx;
}

void
fake_qmp_assert_done(const struct fake_qmp *fq)
{
	if (fq->failure != NULL)
		fail_msg("fake_qmp: %s", fq->failure);
	if (fq->pos < fq->nsteps) {
		const struct fake_step *step = &fq->steps[fq->pos];
		if (step->type == FAKE_EXPECT)
			fail_msg("fake_qmp: expected command %s never came",
			         fq->exps[step->idx].command);
		fail_msg("fake_qmp: script stopped at step %zu of %zu", fq->pos + 1, fq->nsteps);
	}
	if (fq->rx_head != NULL)
		fail_msg("fake_qmp: unexpected command %s",
		         json_object_to_json_string(fq->rx_head->cmd));
}
