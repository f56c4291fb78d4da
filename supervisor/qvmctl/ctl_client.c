/*
 * qvmctl's side of the control socket: blocking I/O on a non-blocking socket, bounded by ppoll.
 *
 * The timeout bounds an unresponsive daemon, not an operation: when nothing arrives for that long,
 * a "version" request goes out on the same connection as a liveness probe (the daemon serves a
 * client's requests as they come and tags each reply with its id, so the probe is answered while a
 * slow powerdown is still pending). The wait goes on as long as probes are answered in time.
 */
#include "ctl_client.h"
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "xalloc.h"

#define CTL_CLIENT_READ_CHUNK (64 * 1024)
#define CTL_CLIENT_JSON_DEPTH 128 /* QMP replies can nest deeper than json-c's default of 32 */

struct ctl_client {
	int fd;
	int64_t timeout_ms; /* -1: none */
	int64_t heard_ms;   /* when the daemon last answered (or we last asked) */
	int64_t probe_id;   /* the liveness probe awaiting its reply, 0: none */
	sigset_t waitmask;
	bool have_waitmask;
	char *buf; /* received bytes not yet consumed: buf[off] .. buf[len] */
	size_t off, len, cap;
	bool eof;
	int64_t next_id;
	struct json_object *queue;   /* events received while waiting for a reply */
	struct json_object *replies; /* replies that came while another one was waited for */
};

struct ctl_client *
ctl_client_connect(const char *path, int64_t timeout_ms, char **cause)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct ctl_client *c;
	int fd, saved;

	if (strlen(path) >= sizeof sun.sun_path) {
		*cause = xasprintf("socket path too long: %s", path);
		return NULL;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		*cause = xasprintf("socket: %s", strerror(errno));
		return NULL;
	}
	if (timeout_ms >= 0) {
		/* A unix connect blocks only while the listener's backlog is full. */
		int64_t left = timeout_ms > 0 ? timeout_ms : 1;
		struct timeval tv;

		tv.tv_sec = left / 1000;
		tv.tv_usec = (left % 1000) * 1000;
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		saved = errno;
		close(fd);
		if (saved == EAGAIN || saved == EINPROGRESS)
			*cause = xasprintf("cannot connect to %s: timed out", path);
		else
			*cause = xasprintf("cannot connect to %s: %s", path, strerror(saved));
		return NULL;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1) {
		saved = errno;
		close(fd);
		*cause = xasprintf("%s: fcntl: %s", path, strerror(saved));
		return NULL;
	}
	c = xcalloc(1, sizeof *c);
	c->fd = fd;
	c->timeout_ms = timeout_ms;
	c->heard_ms = clock_mono_ms();
	c->next_id = 1;
	c->queue = json_object_new_array();
	c->replies = json_object_new_array();
	return c;
}

void
ctl_client_free(struct ctl_client *c)
{
	if (c == NULL)
		return;
	close(c->fd);
	free(c->buf);
	json_object_put(c->queue);
	json_object_put(c->replies);
	free(c);
}

void
ctl_client_set_waitmask(struct ctl_client *c, const sigset_t *mask)
{
	c->have_waitmask = mask != NULL;
	if (mask != NULL)
		c->waitmask = *mask;
}

/*
 * Waits until fd is ready for events, deadline (clock_mono_ms() time, -1: none) passes or a
 * let-through signal arrives.
 */
static enum ctl_io
ctl_client_wait(struct ctl_client *c, short events, int64_t deadline, char **cause)
{
	struct pollfd pfd = {.fd = c->fd, .events = events};
	struct timespec ts, *tsp = NULL;
	int64_t left;
	int n;

	for (;;) {
		if (deadline >= 0) {
			left = deadline - clock_mono_ms();
			if (left <= 0)
				return CTL_IO_TIMEOUT;
			ts.tv_sec = left / 1000;
			ts.tv_nsec = (left % 1000) * 1000000;
			tsp = &ts;
		}
		n = ppoll(&pfd, 1, tsp, c->have_waitmask ? &c->waitmask : NULL);
		if (n > 0)
			return CTL_IO_OK;
		if (n == 0)
			continue; /* the deadline check above ends the loop */
		if (errno != EINTR) {
			*cause = xasprintf("poll: %s", strerror(errno));
			return CTL_IO_ERROR;
		}
		if (c->have_waitmask)
			return CTL_IO_INTR;
	}
}

/* Writes all of buf, waiting as needed: a daemon that reads nothing for the timeout is gone. */
static enum ctl_io
ctl_client_write(struct ctl_client *c, const char *buf, size_t len, char **cause)
{
	int64_t deadline = c->timeout_ms >= 0 ? clock_mono_ms() + c->timeout_ms : -1;
	enum ctl_io io;
	ssize_t n;

	while (len > 0) {
		n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EPIPE || errno == ECONNRESET)
			return CTL_IO_EOF;
		if (errno != EAGAIN) {
			*cause = xasprintf("send: %s", strerror(errno));
			return CTL_IO_ERROR;
		}
		if ((io = ctl_client_wait(c, POLLOUT, deadline, cause)) != CTL_IO_OK)
			return io;
	}
	return CTL_IO_OK;
}

enum ctl_io
ctl_client_send(struct ctl_client *c, const char *cmd, const char *vm, struct json_object *args,
                int64_t *id, char **cause)
{
	struct json_object *req = json_object_new_object();
	enum ctl_io io;
	char *line;

	*id = c->next_id++;
	json_object_object_add(req, "id", json_object_new_int64(*id));
	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	if (vm != NULL)
		json_object_object_add(req, "vm", json_object_new_string(vm));
	if (args != NULL)
		json_object_object_add(req, "args", json_object_get(args));
	line = xasprintf("%s\n", json_object_to_json_string_ext(
	                             req, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(req);
	io = ctl_client_write(c, line, strlen(line), cause);
	free(line);
	return io;
}

/* True (and the probe settled) when msg is the reply to the outstanding liveness probe. */
static bool
ctl_client_probe_reply(struct ctl_client *c, struct json_object *msg)
{
	struct json_object *id;

	if (c->probe_id == 0 || !json_object_object_get_ex(msg, "id", &id) ||
	    !json_object_is_type(id, json_type_int) || json_object_get_int64(id) != c->probe_id)
		return false;
	c->probe_id = 0;
	return true;
}

/* Parses one complete line; an empty line gives CTL_IO_OK with *msg NULL. */
static enum ctl_io
ctl_client_parse(const char *line, size_t len, struct json_object **msg, char **cause)
{
	struct json_tokener *tok;
	struct json_object *obj;
	enum json_tokener_error err;
	size_t end;

	*msg = NULL;
	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (len == 0)
		return CTL_IO_OK;
	tok = json_tokener_new_ex(CTL_CLIENT_JSON_DEPTH);
	if (tok == NULL)
		fatal("out of memory");
	obj = json_tokener_parse_ex(tok, line, (int)len);
	err = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (obj == NULL || err != json_tokener_success || end != len) {
		*cause = xasprintf("invalid JSON from the daemon: %s",
		                   err != json_tokener_success ? json_tokener_error_desc(err)
		                                               : "trailing characters");
		json_object_put(obj);
		return CTL_IO_ERROR;
	}
	if (!json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		*cause = xstrdup("invalid message from the daemon: not a JSON object");
		return CTL_IO_ERROR;
	}
	*msg = obj;
	return CTL_IO_OK;
}

/* Reads the next non-empty line from the socket as a JSON object. */
static enum ctl_io
ctl_client_read(struct ctl_client *c, struct json_object **msg, char **cause)
{
	enum ctl_io io;
	char *nl;
	size_t llen;
	ssize_t n;

	for (;;) {
		nl = c->len > c->off ? memchr(c->buf + c->off, '\n', c->len - c->off) : NULL;
		if (nl != NULL) {
			llen = (size_t)(nl - (c->buf + c->off));
			io = ctl_client_parse(c->buf + c->off, llen, msg, cause);
			c->off += llen + 1;
			if (io != CTL_IO_OK)
				return io;
			if (*msg == NULL)
				continue;
			c->heard_ms = clock_mono_ms();
			if (ctl_client_probe_reply(c, *msg)) {
				json_object_put(*msg);
				*msg = NULL;
				continue;
			}
			return io;
		}
		if (c->len - c->off > CTL_CLIENT_MAX_LINE) {
			*cause = xasprintf("message from the daemon larger than %u MiB",
			                   CTL_CLIENT_MAX_LINE >> 20);
			return CTL_IO_ERROR;
		}
		if (c->eof)
			return CTL_IO_EOF; /* a partial line before EOF is a lost reply */
		if (c->off > 0) {
			memmove(c->buf, c->buf + c->off, c->len - c->off);
			c->len -= c->off;
			c->off = 0;
		}
		if (c->cap - c->len < CTL_CLIENT_READ_CHUNK) {
			c->cap = c->cap == 0 ? 2 * CTL_CLIENT_READ_CHUNK : c->cap * 2;
			c->buf = xrealloc(c->buf, c->cap);
		}
		n = read(c->fd, c->buf + c->len, c->cap - c->len);
		if (n > 0) {
			c->len += (size_t)n;
		} else if (n == 0) {
			c->eof = true;
		} else if (errno == ECONNRESET) {
			c->eof = true;
		} else if (errno == EAGAIN) {
			int64_t deadline = c->timeout_ms >= 0 ? c->heard_ms + c->timeout_ms : -1;
			int64_t id;

			io = ctl_client_wait(c, POLLIN, deadline, cause);
			if (io == CTL_IO_TIMEOUT && c->probe_id == 0) {
				/* Silence: ask whether the daemon is still there. */
				io = ctl_client_send(c, "version", NULL, NULL, &id, cause);
				if (io != CTL_IO_OK)
					return io;
				c->probe_id = id;
				c->heard_ms = clock_mono_ms();
				continue;
			}
			if (io != CTL_IO_OK)
				return io;
		} else if (errno != EINTR) {
			*cause = xasprintf("read: %s", strerror(errno));
			return CTL_IO_ERROR;
		}
	}
}

/* Replies kept for a later ctl_client_reply: only to this client's own pipelined requests, so a
 * few; more would be a daemon answering what was never asked. */
#define CTL_CLIENT_MAX_KEPT 16

/* Takes the kept reply to request id, if it came. */
static struct json_object *
ctl_client_kept(struct ctl_client *c, int64_t id)
{
	for (size_t i = 0; i < json_object_array_length(c->replies); i++) {
		struct json_object *m = json_object_array_get_idx(c->replies, i), *v;

		if (json_object_object_get_ex(m, "id", &v) && json_object_get_int64(v) == id) {
			json_object_get(m);
			json_object_array_del_idx(c->replies, i, 1);
			return m;
		}
	}
	return NULL;
}

enum ctl_io
ctl_client_reply(struct ctl_client *c, int64_t want, struct json_object **reply, char **cause)
{
	struct json_object *msg, *id;
	enum ctl_io io;

	if ((*reply = ctl_client_kept(c, want)) != NULL)
		return CTL_IO_OK;
	c->heard_ms = clock_mono_ms();
	for (;;) {
		if ((io = ctl_client_read(c, &msg, cause)) != CTL_IO_OK)
			return io;
		if (!json_object_object_get_ex(msg, "id", &id)) {
			json_object_array_add(c->queue, msg);
			continue;
		}
		/* An error with a null id concerns the connection itself (e.g. the peer was
		 * denied): it is the answer to whatever we asked. */
		if ((json_object_is_type(id, json_type_int) && json_object_get_int64(id) == want) ||
		    id == NULL) {
			*reply = msg;
			return CTL_IO_OK;
		}
		/* the reply to another request of ours that is not waited for yet */
		if (json_object_is_type(id, json_type_int) &&
		    json_object_get_int64(id) < c->next_id &&
		    json_object_array_length(c->replies) < CTL_CLIENT_MAX_KEPT)
			json_object_array_add(c->replies, msg);
		else
			json_object_put(msg);
	}
}

enum ctl_io
ctl_client_request(struct ctl_client *c, const char *cmd, const char *vm, struct json_object *args,
                   struct json_object **reply, char **cause)
{
	int64_t want;
	enum ctl_io io;

	*reply = NULL;
	if ((io = ctl_client_send(c, cmd, vm, args, &want, cause)) != CTL_IO_OK)
		return io;
	return ctl_client_reply(c, want, reply, cause);
}

enum ctl_io
ctl_client_next(struct ctl_client *c, struct json_object **msg, char **cause)
{
	struct json_object *id;
	enum ctl_io io;

	if (json_object_array_length(c->queue) > 0) {
		*msg = json_object_get(json_object_array_get_idx(c->queue, 0));
		json_object_array_del_idx(c->queue, 0, 1);
		return CTL_IO_OK;
	}
	for (;;) {
		if ((io = ctl_client_read(c, msg, cause)) != CTL_IO_OK)
			return io;
		if (!json_object_object_get_ex(*msg, "id", &id))
			return CTL_IO_OK;
		json_object_put(*msg); /* a late reply: not an event */
		*msg = NULL;
	}
}
