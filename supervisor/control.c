/*
 * The control socket: accepts clients (peer credentials checked), frames newline-delimited JSON
 * requests (at most CONTROL_MAX_REQUEST bytes each), writes replies and event lines. A misbehaving
 * client (malformed or oversized requests, too slow to read its events) affects only itself.
 */
#include "control.h"
#include "control_private.h"

#include "daemon.h"
#include "log.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <grp.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define CLIENT_MAX_OUTPUT (16 * 1024 * 1024) /* a subscriber this far behind is dropped */

struct client {
	TAILQ_ENTRY(client) entry;
	struct control *c;
	uint64_t serial;
	struct bufferevent *bev;
	bool subscribed;
	char *sub_vm;     /* NULL: every VM */
	unsigned pending; /* requests not answered yet */
	bool eof;         /* the client shut down its side: close once everything is answered */
	bool closing;     /* flush, then close */
	bool shut;        /* our side is shut down: waiting for the peer's EOF */
	bool dead;
};

struct control {
	struct daemon *d;
	struct evconnlistener *listener;
	struct event *retry_ev;
	char *path;
	gid_t gid;
	bool have_gid;
	uint64_t next_serial;
	size_t nclients;
	TAILQ_HEAD(, client) clients;
};

static void client_read_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);

struct daemon *
control_daemon(struct control *c)
{
	return c->d;
}

size_t
control_clients(const struct control *c)
{
	return c->nclients;
}

static void
client_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct client *cl = arg;

	bufferevent_free(cl->bev);
	free(cl->sub_vm);
	free(cl);
}

/* Drops a client; the memory goes on the next loop turn (we may be in its callback). */
static void
client_drop(struct client *cl, const char *why)
{
	if (cl->dead)
		return;
	cl->dead = true;
	log_debug("control: client %llu gone: %s", (unsigned long long)cl->serial, why);
	TAILQ_REMOVE(&cl->c->clients, cl, entry);
	cl->c->nclients--;
	bufferevent_disable(cl->bev, EV_READ | EV_WRITE);
	event_base_once(cl->c->d->base, -1, EV_TIMEOUT, client_free_deferred, cl, NULL);
}

static void
client_write_cb(struct bufferevent *bev, void *arg)
{
	struct client *cl = arg;

	struct timeval linger = {5, 0};

	if (!cl->closing || cl->shut || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	if (cl->eof) {
		client_drop(cl, "closed");
		return;
	}
	/* Closing a unix socket with unread input can make the peer lose our last reply
	 * (ECONNRESET): say we are done, and close when the peer does (or after a while). */
	shutdown(bufferevent_getfd(bev), SHUT_WR);
	cl->shut = true;
	bufferevent_set_timeouts(bev, &linger, NULL);
	bufferevent_enable(bev, EV_READ);
}

static void
client_send(struct client *cl, struct json_object *o)
{
	size_t len;
	const char *s = json_object_to_json_string_length(
	    o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	struct evbuffer *out = bufferevent_get_output(cl->bev);

	if (cl->dead)
		return;
	if (evbuffer_get_length(out) > CLIENT_MAX_OUTPUT) {
		client_drop(cl, "not reading its output");
		return;
	}
	if (evbuffer_get_length(out) == 0) {
		/* Nothing queued: write now rather than on the next loop turn; what the socket
		 * does not take (or an error, which the bufferevent then reports) is queued. */
		struct iovec iov[2] = {{(void *)s, len}, {"\n", 1}};
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
		ssize_t n = sendmsg(bufferevent_getfd(cl->bev), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n == (ssize_t)len + 1)
			return;
		if (n > 0) {
			if ((size_t)n < len)
				evbuffer_add(out, s + n, len - (size_t)n);
			evbuffer_add(out, "\n", 1);
			return;
		}
	}
	evbuffer_add(out, s, len);
	evbuffer_add(out, "\n", 1);
}

static void
client_error(struct client *cl, struct json_object *id, const char *code, const char *message)
{
	struct json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(o, "id", json_object_get(id));
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "message", json_object_new_string(message));
	json_object_object_add(o, "error", e);
	client_send(cl, o);
	json_object_put(o);
}

static struct client *
client_find(struct control *c, uint64_t serial)
{
	struct client *cl;

	TAILQ_FOREACH(cl, &c->clients, entry)
	{
		if (cl->serial == serial)
			return cl;
	}
	return NULL;
}

void
control_done(struct json_object *result, const char *code, const char *message, void *arg)
{
	struct control_reply *r = arg;
	struct client *cl = client_find(r->c, r->serial);

	if (cl != NULL) {
		cl->pending--;
		if (code != NULL) {
			client_error(cl, r->id, code, message);
		} else {
			struct json_object *o = json_object_new_object();

			json_object_object_add(o, "id", json_object_get(r->id));
			json_object_object_add(o, "ok", json_object_new_boolean(1));
			json_object_object_add(o, "result",
			                       result ? json_object_get(result)
			                              : json_object_new_object());
			client_send(cl, o);
			json_object_put(o);
		}
		if (cl->eof && cl->pending == 0 && !cl->subscribed) {
			cl->closing = true;
			client_write_cb(cl->bev, cl);
		}
	}
	json_object_put(result);
	json_object_put(r->id);
	free(r);
}

void
control_subscribe(struct control_reply *r, const char *vm)
{
	struct client *cl = client_find(r->c, r->serial);

	if (cl == NULL)
		return;
	cl->subscribed = true;
	free(cl->sub_vm);
	cl->sub_vm = vm ? xstrdup(vm) : NULL;
}

void
control_publish(struct control *c, const char *vm, struct json_object *ev)
{
	struct client *cl, *next;

	for (cl = TAILQ_FIRST(&c->clients); cl != NULL; cl = next) {
		next = TAILQ_NEXT(cl, entry);
		if (cl->subscribed && (cl->sub_vm == NULL || strcmp(cl->sub_vm, vm) == 0))
			client_send(cl, ev);
	}
}

/* Parses one request line and dispatches it. */
static void
client_request(struct client *cl, const char *line, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *req, *id = NULL, *v, *args = NULL;
	const char *cmd = NULL, *vm = NULL;
	struct control_reply *r;

	req = json_tokener_parse_ex(tok, line, (int)len);
	if (req == NULL || json_tokener_get_error(tok) != json_tokener_success ||
	    tok->char_offset < (int)len) {
		client_error(cl, NULL, "invalid", "malformed request: not a JSON object");
		goto out;
	}
	if (!json_object_is_type(req, json_type_object)) {
		client_error(cl, NULL, "invalid", "malformed request: not a JSON object");
		goto out;
	}
	json_object_object_get_ex(req, "id", &id);
	if (!json_object_object_get_ex(req, "cmd", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		client_error(cl, id, "invalid", "malformed request: \"cmd\" must be a string");
		goto out;
	}
	cmd = json_object_get_string(v);
	if (json_object_object_get_ex(req, "vm", &v) && v != NULL) {
		if (!json_object_is_type(v, json_type_string)) {
			client_error(cl, id, "invalid",
			             "malformed request: \"vm\" must be a string");
			goto out;
		}
		vm = json_object_get_string(v);
	}
	if (json_object_object_get_ex(req, "args", &args) && args != NULL &&
	    !json_object_is_type(args, json_type_object)) {
		client_error(cl, id, "invalid", "malformed request: \"args\" must be an object");
		goto out;
	}
	r = xcalloc(1, sizeof *r);
	r->c = cl->c;
	r->serial = cl->serial;
	r->id = json_object_get(id);
	cl->pending++;
	control_dispatch(r, cmd, vm, args);
out:
	json_object_put(req);
	json_tokener_free(tok);
}

static void
client_read_cb(struct bufferevent *bev, void *arg)
{
	struct client *cl = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	if (cl->closing) {
		evbuffer_drain(in, evbuffer_get_length(in)); /* no more requests from this one */
		return;
	}
	while (!cl->dead && !cl->closing) {
		struct evbuffer_ptr nl = evbuffer_search(in, "\n", 1, NULL);
		size_t len;
		char *line;

		if (nl.pos < 0) {
			if (evbuffer_get_length(in) > CONTROL_MAX_REQUEST)
				goto too_large;
			return;
		}
		if ((size_t)nl.pos > CONTROL_MAX_REQUEST)
			goto too_large;
		line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
		if (line == NULL)
			return;
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		if (len > 0)
			client_request(cl, line, len);
		free(line);
	}
	return;
too_large:
	client_error(cl, NULL, "too-large", "request larger than 1 MiB: closing the connection");
	evbuffer_drain(in, evbuffer_get_length(in));
	cl->closing = true;
	client_write_cb(bev, cl);
}

static void
client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct client *cl = arg;

	if (cl->closing) {
		client_drop(cl, "closed");
		return;
	}
	/* A client that half-closed after its requests still gets its answers. */
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !cl->subscribed) {
		cl->eof = true;
		bufferevent_disable(bev, EV_READ);
		if (cl->pending == 0) {
			cl->closing = true;
			client_write_cb(bev, cl);
		}
		return;
	}
	client_drop(cl, (what & BEV_EVENT_EOF) ? "eof" : "error");
}

/* Whether the peer may talk to the daemon: root, our own uid, or a member of socket_group. */
static bool
peer_allowed(struct control *c, int fd, struct ucred *cred)
{
	socklen_t len = sizeof *cred;
	char path[64], line[1024];
	FILE *f;
	bool ok = false;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
		return false;
	if (cred->uid == 0 || cred->uid == getuid())
		return true;
	if (!c->have_gid)
		return false;
	if (cred->gid == c->gid)
		return true;
	snprintf(path, sizeof path, "/proc/%d/status", (int)cred->pid);
	f = fopen(path, "re");
	if (f == NULL)
		return false;
	while (!ok && fgets(line, sizeof line, f) != NULL) {
		char *p, *end;

		if (strncmp(line, "Groups:", 7) != 0)
			continue;
		for (p = line + 7;; p = end) {
			long g = strtol(p, &end, 10);

			if (end == p)
				break;
			if ((gid_t)g == c->gid)
				ok = true;
		}
	}
	fclose(f);
	return ok;
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
	struct control *c = arg;
	struct client *cl;
	struct ucred cred = {0};
	bool allowed = peer_allowed(c, fd, &cred);

	cl = xcalloc(1, sizeof *cl);
	cl->c = c;
	cl->serial = ++c->next_serial;
	cl->bev = bufferevent_socket_new(c->d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(cl->bev, client_read_cb, client_write_cb, client_event_cb, cl);
	TAILQ_INSERT_TAIL(&c->clients, cl, entry);
	c->nclients++;
	if (!allowed) {
		log_warn("control: denied connection from uid %d pid %d", (int)cred.uid,
		         (int)cred.pid);
		client_error(cl, NULL, "denied",
		             "permission denied: not root, qvmd's user or in socket_group");
		cl->closing = true;
		bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
		client_write_cb(cl->bev, cl); /* the refusal may already be written */
		return;
	}
	bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct control *c = arg;

	evconnlistener_enable(c->listener);
}

/* Out of descriptors: stop accepting for a second instead of spinning. */
static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct control *c = arg;
	struct timeval tv = {1, 0};
	int err = EVUTIL_SOCKET_ERROR();

	log_error("control: accept: %s", strerror(err));
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		evconnlistener_disable(l);
		evtimer_add(c->retry_ev, &tv);
	}
}

struct control *
control_new(struct daemon *d, const char *path, const char *group, char **cause)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct control *c;
	struct group *gr = NULL;
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof sun.sun_path) {
		*cause = xasprintf("control socket path too long: %s", path);
		return NULL;
	}
	if (group != NULL && (gr = getgrnam(group)) == NULL) {
		*cause = xasprintf("socket_group %s: no such group", group);
		return NULL;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*cause = xasprintf("socket: %s", strerror(errno));
		return NULL;
	}
	unlink(path);
	old = umask(0117);
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		*cause = xasprintf("bind %s: %s", path, strerror(errno));
		umask(old);
		close(fd);
		return NULL;
	}
	umask(old);
	if (chmod(path, 0660) < 0 || (gr != NULL && chown(path, (uid_t)-1, gr->gr_gid) < 0)) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	c = xcalloc(1, sizeof *c);
	c->d = d;
	c->path = xstrdup(path);
	TAILQ_INIT(&c->clients);
	if (gr != NULL) {
		c->gid = gr->gr_gid;
		c->have_gid = true;
	}
	c->listener = evconnlistener_new(d->base, accept_cb, c,
	                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 128, fd);
	if (c->listener == NULL) {
		*cause = xasprintf("listen %s: %s", path, strerror(errno));
		close(fd);
		free(c->path);
		free(c);
		return NULL;
	}
	evconnlistener_set_error_cb(c->listener, accept_error_cb);
	c->retry_ev = evtimer_new(d->base, retry_cb, c);
	return c;
}

void
control_free(struct control *c)
{
	struct client *cl;

	if (c == NULL)
		return;
	while ((cl = TAILQ_FIRST(&c->clients)) != NULL) {
		TAILQ_REMOVE(&c->clients, cl, entry);
		bufferevent_free(cl->bev);
		free(cl->sub_vm);
		free(cl);
	}
	evconnlistener_free(c->listener);
	event_free(c->retry_ev);
	unlink(c->path);
	free(c->path);
	free(c);
}
