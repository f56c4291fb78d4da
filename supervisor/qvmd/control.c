/*
 * The control socket: accepts clients (peer credentials checked), frames newline-delimited JSON
 * requests (at most CONTROL_MAX_REQUEST bytes each), writes replies and event lines. A misbehaving
 * client (malformed or oversized requests, too slow to read its events) affects only itself.
 *
 * The console command upgrades a connection: after its ok reply line, the connection carries a
 * console session (vm_console.h) and no more requests. The client's bytes go to the guest as they
 * are. The daemon's bytes are frames, each a type byte, a 4-byte big-endian length and that many
 * bytes: 'o' guest output, 'e' the end of the session, {"code","message"} (the daemon then
 * closes the connection; e.g. "not-running" when the QEMU exited, "too-slow" for a client more
 * than CLIENT_CONSOLE_MAX_OUTPUT behind the guest). A console client is never closed as idle.
 */
#include "control.h"
#include "control_private.h"

#include "clock.h"

#include "argv.h"
#include "cfg.h"
#include "daemon.h"
#include "log.h"
#include "vm.h"
#include "vm_console.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <grp.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

/*
 * What one client may cost the daemon. A client is read only while it keeps up with its answers:
 * with more than CLIENT_OUTPUT_LOW bytes written for it and not yet taken by its socket, or
 * CLIENT_MAX_PENDING requests unanswered, its further requests stay in the kernel until it reads,
 * so a client that pipelines requests without reading stalls itself and costs nothing. Output that
 * does not depend on its requests (events) can still pile up: a client with more than
 * CLIENT_MAX_OUTPUT queued is dropped, and so is any client more than CLIENT_OUTPUT_LOW behind
 * while all clients together have more than CONTROL_MAX_OUTPUT queued. A client with no request
 * in flight, nothing queued and no subscription is closed after CONTROL_IDLE_TIMEOUT seconds
 * without a request (QVMD_TEST_IDLE_TIMEOUT in the environment overrides it, for tests).
 */
#define CLIENT_OUTPUT_LOW    (64 * 1024)
#define CLIENT_MAX_OUTPUT    (4 * 1024 * 1024)
#define CONTROL_MAX_OUTPUT   (32 * 1024 * 1024)
#define CLIENT_MAX_PENDING   256
#define CONTROL_IDLE_TIMEOUT 60
/* A closing client gets this long to take its last lines (and to close its side). */
#define CLIENT_LINGER 5
/* After freeing this much queued output, memory goes back to the system. */
#define CONTROL_TRIM_ABOVE (1024 * 1024)
/* A console client this far behind the guest's output is dropped (the guest never waits). */
#define CLIENT_CONSOLE_MAX_OUTPUT (1024 * 1024)
/* --tail: at most this many lines (the relay keeps VM_CONSOLE_RING bytes anyway). */
#define CONSOLE_TAIL_MAX 100000

/*
 * Descriptors. VMs need descriptors (QMP connection, pidfd, console relay; while starting: the QMP
 * socket, images, taps, qemu-img's pipes): clients may hold at most RLIMIT_NOFILE - (descriptors
 * open for anything else, counted at most once a second) - CONTROL_FD_RESERVE (for starts and
 * jobs in flight) - CONTROL_FD_PER_VM per defined VM (what a running VM may still open: a console
 * relay, a VNC listener), and never fewer than CONTROL_MIN_CLIENTS. What running VMs hold is
 * counted, not guessed: 5,000 VMs fit under a limit of 20,000 with thousands of clients to spare.
 * At that limit a new connection replaces the client idle the longest (at least
 * CONTROL_EVICT_AGE_MS without a request, as nginx reuses keepalive connections); when none is
 * idle it is refused and accepting stops until a client goes away. EMFILE or ENFILE from accept
 * stop accepting for a second (as tmux does).
 */
#define CONTROL_FD_RESERVE   128
#define CONTROL_FD_PER_VM    1
#define CONTROL_MIN_CLIENTS  4
#define CONTROL_FD_COUNT_MS  1000
#define CONTROL_EVICT_AGE_MS 1000

struct client {
	TAILQ_ENTRY(client) entry; /* least recently active first */
	struct control *c;
	uint64_t serial;
	struct bufferevent *bev; /* NULL once closed */
	struct event *idle_ev;
	int64_t active_ms; /* last request or answer */
	bool subscribed;
	char *sub_vm;     /* NULL: every VM */
	unsigned pending; /* requests not answered yet */
	bool paused;      /* not reading: too far behind */
	bool eof;         /* the client shut down its side: close once everything is answered */
	bool closing;     /* flush, then close */
	bool last;        /* the last line is queued: send nothing more */
	bool shut;        /* our side is shut down: waiting for the peer's EOF */
	/* the event kinds it subscribed to (an array of strings); NULL: every kind */
	struct json_object *sub_events;
	bool dead;
	struct ucred cred;                 /* the peer, when it connected */
	struct vm_console_client *console; /* a console session: no more requests */
	bool console_wait;                 /* not reading: the guest has input queued */
};

struct control {
	struct daemon *d;
	struct evconnlistener *listener;
	struct event *retry_ev;
	bool accept_paused;
	char *path;
	gid_t gid;
	bool have_gid;
	uint64_t next_serial;
	size_t nclients;
	size_t nfds;      /* clients' descriptors still open (dropped ones until freed) */
	size_t fds_other; /* descriptors open for anything but clients, when last counted */
	int64_t fds_counted_ms;
	size_t out_total; /* output queued for all clients */
	bool trim;        /* much output was queued: give memory back once it is gone */
	const struct timeval *idle_tv;
	TAILQ_HEAD(, client) clients;
	/* Dropped clients, freed by reap_ev on the next loop turn (one may be in its own callback);
	 * an event of the control's own, so that control_free can cancel it and free them. */
	TAILQ_HEAD(, client) dropped;
	struct event *reap_ev;
	struct vm_console **consoles; /* a relay per VM whose QEMU serves a console */
	size_t nconsoles;
};

static void client_read_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);
static void client_write_cb(struct bufferevent *bev, void *arg);
static void control_listen(struct control *c);
static void client_console_read(struct client *cl);
static void control_console_follow(struct control *c, const char *vm, struct json_object *ev);

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

/* Gives freed buffers back to the system once a burst of queued output is gone. */
static void
control_trim(struct control *c)
{
	if (!c->trim || c->out_total > CLIENT_OUTPUT_LOW)
		return;
	c->trim = false;
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

/* Keeps the total of queued output across clients. */
static void
client_output_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct control *c = arg;

	c->out_total += info->n_added;
	c->out_total -= info->n_deleted;
	if (c->out_total > CONTROL_TRIM_ABOVE)
		c->trim = true;
}

/* Closes the client's socket now: libevent 2.1 would close it only on a later loop turn, and a
 * burst of evictions must really make room. */
static void
client_close_bev(struct client *cl)
{
	evutil_socket_t fd;

	if (cl->bev == NULL)
		return;
	fd = bufferevent_getfd(cl->bev);
	bufferevent_setfd(cl->bev, -1);
	bufferevent_free(cl->bev);
	cl->bev = NULL;
	if (fd >= 0)
		close(fd);
	cl->c->nfds--;
}

static void
client_free(struct client *cl)
{
	client_close_bev(cl);
	event_free(cl->idle_ev);
	json_object_put(cl->sub_events);
	free(cl->sub_vm);
	free(cl);
}

/* Frees the clients dropped since the last loop turn. */
static void
control_reap(evutil_socket_t fd, short what, void *arg)
{
	struct control *c = arg;
	struct client *cl;

	while ((cl = TAILQ_FIRST(&c->dropped)) != NULL) {
		TAILQ_REMOVE(&c->dropped, cl, entry);
		client_free(cl);
	}
	control_trim(c);
	control_listen(c);
}

/* Empties a client's output. A socket bufferevent freezes the start of its output buffer (only
 * it may take from there): unfreeze it for the moment. */
static void
client_discard_output(struct client *cl, size_t keep)
{
	struct evbuffer *out = bufferevent_get_output(cl->bev);
	struct evbuffer *head;

	evbuffer_unfreeze(out, 1);
	if (keep == 0) {
		evbuffer_drain(out, evbuffer_get_length(out));
	} else {
		if ((head = evbuffer_new()) == NULL)
			fatal("out of memory");
		evbuffer_remove_buffer(out, head, keep);
		evbuffer_drain(out, evbuffer_get_length(out));
		evbuffer_add_buffer(out, head);
		evbuffer_free(head);
	}
	evbuffer_freeze(out, 1);
}

/* Drops a client; the memory goes on the next loop turn (we may be in its callback). Its buffers
 * go at once. */
static void
client_drop(struct client *cl, const char *why)
{
	if (cl->dead)
		return;
	cl->dead = true;
	log_debug("control: client %llu gone: %s", (unsigned long long)cl->serial, why);
	TAILQ_REMOVE(&cl->c->clients, cl, entry);
	cl->c->nclients--;
	evtimer_del(cl->idle_ev);
	vm_console_detach(cl->console);
	cl->console = NULL;
	if (cl->bev != NULL) {
		bufferevent_disable(cl->bev, EV_READ | EV_WRITE);
		bufferevent_setcb(cl->bev, NULL, NULL, NULL, NULL);
		client_discard_output(cl, 0);
		evbuffer_drain(bufferevent_get_input(cl->bev),
		               evbuffer_get_length(bufferevent_get_input(cl->bev)));
	}
	TAILQ_INSERT_TAIL(&cl->c->dropped, cl, entry);
	event_active(cl->c->reap_ev, EV_TIMEOUT, 0);
}

/* Whether the client is too far behind to be given more work. */
static bool
client_behind(struct client *cl)
{
	return evbuffer_get_length(bufferevent_get_output(cl->bev)) > CLIENT_OUTPUT_LOW ||
	       cl->pending >= CLIENT_MAX_PENDING;
}

/* Whether the client costs nothing but its descriptor: nothing asked, nothing owed. */
static bool
client_idle(struct client *cl)
{
	return !cl->dead && !cl->closing && !cl->subscribed && cl->console == NULL &&
	       cl->pending == 0 && evbuffer_get_length(bufferevent_get_output(cl->bev)) == 0;
}

/* Records activity: restarts the idle clock and moves the client to the end of the list. */
static void
client_touch(struct client *cl)
{
	if (cl->dead)
		return;
	cl->active_ms = clock_mono_ms();
	TAILQ_REMOVE(&cl->c->clients, cl, entry);
	TAILQ_INSERT_TAIL(&cl->c->clients, cl, entry);
	evtimer_add(cl->idle_ev, cl->c->idle_tv);
}

/* Reads requests again once the client has caught up; what is already buffered is handled on the
 * next loop turn (not here: we may be answering one of its requests). */
static void
client_resume(struct client *cl)
{
	if (!cl->paused || cl->dead || cl->closing || client_behind(cl))
		return;
	cl->paused = false;
	if (!cl->eof)
		bufferevent_enable(cl->bev, EV_READ);
	bufferevent_trigger(cl->bev, EV_READ,
	                    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* Flushes what is queued (within CLIENT_LINGER), then closes. */
static void
client_finish(struct client *cl)
{
	struct timeval linger = {CLIENT_LINGER, 0};

	cl->closing = true;
	evtimer_del(cl->idle_ev);
	bufferevent_set_timeouts(cl->bev, &linger, &linger);
	bufferevent_enable(cl->bev, EV_WRITE);
	client_write_cb(cl->bev, cl);
}

static void
client_write_cb(struct bufferevent *bev, void *arg)
{
	struct client *cl = arg;
	size_t queued = evbuffer_get_length(bufferevent_get_output(bev));

	if (!cl->closing) {
		if (queued == 0) {
			if (cl->pending == 0)
				client_touch(cl);
			control_trim(cl->c);
		}
		client_resume(cl);
		return;
	}
	if (cl->shut || queued > 0)
		return;
	if (cl->eof) {
		client_drop(cl, "closed");
		return;
	}
	/* Closing a unix socket with unread input can make the peer lose our last reply
	 * (ECONNRESET): say we are done, and close when the peer does (or after a while). */
	shutdown(bufferevent_getfd(bev), SHUT_WR);
	cl->shut = true;
	bufferevent_enable(bev, EV_READ);
}

static void client_close(struct client *cl, enum proto_err code, const char *message, bool discard);

static void
client_send(struct client *cl, struct json_object *o)
{
	size_t len, queued;
	const char *s = json_object_to_json_string_length(
	    o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	struct evbuffer *out;

	if (cl->dead || cl->last)
		return;
	out = bufferevent_get_output(cl->bev);
	queued = evbuffer_get_length(out);
	if (!cl->closing && (queued > CLIENT_MAX_OUTPUT || (cl->c->out_total > CONTROL_MAX_OUTPUT &&
	                                                    queued > CLIENT_OUTPUT_LOW))) {
		log_warn("control: client %llu does not read its output (%zu bytes queued): "
		         "dropping it",
		         (unsigned long long)cl->serial, queued);
		client_close(cl, PROTO_ERR_TOO_SLOW,
		             "client does not read its output: closing the connection", true);
		return;
	}
	if (queued == 0) {
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
client_error(struct client *cl, struct json_object *id, enum proto_err code, const char *message)
{
	struct json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(o, "id", json_object_get(id));
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(e, "code", json_object_new_string(proto_err_name(code)));
	json_object_object_add(e, "message", json_object_new_string(message));
	json_object_object_add(o, "error", e);
	client_send(cl, o);
	json_object_put(o);
}

/*
 * Ends a client's session with a last error line, flushed within CLIENT_LINGER. With discard, what
 * was queued for it goes at once, except the rest of the line its socket has started to take, so
 * that the error is still a line of its own.
 */
static void
client_close(struct client *cl, enum proto_err code, const char *message, bool discard)
{
	struct evbuffer *in, *out;

	if (cl->dead || cl->last)
		return;
	in = bufferevent_get_input(cl->bev);
	out = bufferevent_get_output(cl->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	if (discard) {
		struct evbuffer_ptr nl = evbuffer_search(out, "\n", 1, NULL);

		client_discard_output(cl, nl.pos >= 0 ? (size_t)nl.pos + 1 : 0);
	}
	bufferevent_disable(cl->bev, EV_READ);
	cl->paused = false;
	cl->closing = true; /* no limit applies to the last line */
	client_error(cl, NULL, code, message);
	cl->last = true;
	client_finish(cl);
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

/* Whether message starts with "vm NAME:". */
static bool
names_vm(const char *message, const char *vm)
{
	size_t n = strlen(vm);

	return strncmp(message, "vm ", 3) == 0 && strncmp(message + 3, vm, n) == 0 &&
	       message[3 + n] == ':';
}

void
control_done(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	struct control_reply *r = arg;
	struct client *cl = client_find(r->c, r->serial);

	if (cl != NULL) {
		cl->pending--;
		if (code != PROTO_OK && r->vm != NULL && !names_vm(message, r->vm)) {
			char *msg = xasprintf("vm %s: %s", r->vm, message);

			client_error(cl, r->id, code, msg);
			free(msg);
		} else if (code != PROTO_OK) {
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
		if (!cl->dead && !cl->closing) {
			if (cl->eof && cl->pending == 0 && !cl->subscribed) {
				client_finish(cl);
			} else {
				client_touch(cl);
				client_resume(cl);
			}
		}
	}
	json_object_put(result);
	json_object_put(r->id);
	free(r->vm);
	free(r);
}

void
control_subscribe(struct control_reply *r, const char *vm, struct json_object *events)
{
	struct client *cl = client_find(r->c, r->serial);

	if (cl == NULL)
		return;
	cl->subscribed = true;
	free(cl->sub_vm);
	cl->sub_vm = vm ? xstrdup(vm) : NULL;
	json_object_put(cl->sub_events);
	cl->sub_events = json_object_get(events);
}

/* Whether the subscriber asked for events of ev's kind. */
static bool
client_wants(const struct client *cl, struct json_object *ev)
{
	struct json_object *kind;

	if (cl->sub_events == NULL)
		return true;
	if (!json_object_object_get_ex(ev, "event", &kind))
		return false;
	for (size_t i = 0; i < json_object_array_length(cl->sub_events); i++)
		if (strcmp(json_object_get_string(json_object_array_get_idx(cl->sub_events, i)),
		           json_object_get_string(kind)) == 0)
			return true;
	return false;
}

void
control_publish(struct control *c, const char *vm, struct json_object *ev)
{
	struct client *cl, *next;

	if (vm != NULL)
		control_console_follow(c, vm, ev);
	for (cl = TAILQ_FIRST(&c->clients); cl != NULL; cl = next) {
		next = TAILQ_NEXT(cl, entry);
		/* An event of no VM (a reload) goes to every subscriber. */
		if (cl->subscribed &&
		    (cl->sub_vm == NULL || vm == NULL || strcmp(cl->sub_vm, vm) == 0) &&
		    client_wants(cl, ev))
			client_send(cl, ev);
	}
}

bool
control_watched(const struct control *c, const char *vm)
{
	const struct client *cl;

	TAILQ_FOREACH(cl, &c->clients, entry)
	{
		if (cl->subscribed && !cl->dead &&
		    (cl->sub_vm == NULL || strcmp(cl->sub_vm, vm) == 0))
			return true;
	}
	return false;
}

/* ---- console sessions ---- */

/* Queues one frame of a console session (see the top of this file). */
static void
console_frame(struct client *cl, char type, const void *buf, size_t len)
{
	struct evbuffer *out = bufferevent_get_output(cl->bev);
	unsigned char head[5] = {(unsigned char)type, (unsigned char)(len >> 24),
	                         (unsigned char)(len >> 16), (unsigned char)(len >> 8),
	                         (unsigned char)len};

	evbuffer_add(out, head, sizeof head);
	evbuffer_add(out, buf, len);
}

/* Ends a console session with its 'e' frame; what is queued is still sent (within
 * CLIENT_LINGER). The client is already detached from the relay, or is detached here. */
static void
client_console_end(struct client *cl, enum proto_err code, const char *message)
{
	struct json_object *o;
	const char *s;
	size_t len;

	vm_console_detach(cl->console);
	cl->console = NULL;
	if (cl->dead || cl->last)
		return;
	o = json_object_new_object();
	json_object_object_add(o, "code", json_object_new_string(proto_err_name(code)));
	json_object_object_add(o, "message", json_object_new_string(message));
	s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
	evbuffer_drain(bufferevent_get_input(cl->bev),
	               evbuffer_get_length(bufferevent_get_input(cl->bev)));
	bufferevent_disable(cl->bev, EV_READ);
	cl->closing = true;
	console_frame(cl, 'e', s, len);
	json_object_put(o);
	cl->last = true;
	client_finish(cl);
}

/* Guest output for one client: a client that does not keep up is dropped, never waited for. */
static void
client_console_output(void *arg, const void *buf, size_t len)
{
	struct client *cl = arg;
	size_t queued = evbuffer_get_length(bufferevent_get_output(cl->bev));

	if (queued > CLIENT_CONSOLE_MAX_OUTPUT ||
	    (cl->c->out_total > CONTROL_MAX_OUTPUT && queued > CLIENT_OUTPUT_LOW)) {
		log_warn("control: console client %llu does not keep up with the guest (%zu bytes "
		         "queued): dropping it",
		         (unsigned long long)cl->serial, queued);
		client_console_end(cl, PROTO_ERR_TOO_SLOW,
		                   "console client too slow for the guest's output: dropped");
		return;
	}
	console_frame(cl, 'o', buf, len);
}

static void
client_console_closed(void *arg, const char *why)
{
	struct client *cl = arg;

	cl->console = NULL; /* the relay detached it */
	client_console_end(cl, PROTO_ERR_NOT_RUNNING, why);
}

static void
client_console_writable(void *arg)
{
	struct client *cl = arg;

	if (!cl->console_wait || cl->dead || cl->closing)
		return;
	cl->console_wait = false;
	bufferevent_enable(cl->bev, EV_READ);
	bufferevent_trigger(cl->bev, EV_READ,
	                    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

static const struct vm_console_client_cbs client_console_cbs = {
    client_console_output, client_console_closed, client_console_writable};

/* What a console client typed goes to the guest; it waits while the guest is behind. */
static void
client_console_read(struct client *cl)
{
	if (cl->console_wait)
		return;
	if (vm_console_input(cl->console, bufferevent_get_input(cl->bev))) {
		cl->console_wait = true;
		bufferevent_disable(cl->bev, EV_READ);
	}
}

/* The live relay of vm, connected now if needed; NULL with *cause if QEMU serves no console. */
static struct vm_console *
control_console_relay(struct control *c, const char *vm, char **cause)
{
	const struct daemon_config *conf = c->d->conf;
	struct vm_console *con;
	char *sock, *log;

	for (size_t i = 0; i < c->nconsoles; i++) {
		if (strcmp(vm_console_name(c->consoles[i]), vm) != 0)
			continue;
		if (vm_console_alive(c->consoles[i])) {
			vm_console_set_log_max(c->consoles[i], conf->console_log_max);
			return c->consoles[i];
		}
		vm_console_free(c->consoles[i]);
		c->consoles[i] = c->consoles[--c->nconsoles];
		break;
	}
	sock = xasprintf("%s/%s/" ARGV_CONSOLE_SOCKET, conf->run_dir, vm);
	log = xasprintf("%s/%s/" ARGV_CONSOLE_LOG, conf->state_dir, vm);
	con = vm_console_open(c->d->base, vm, sock, log, conf->console_log_max, cause);
	free(sock);
	free(log);
	if (con == NULL)
		return NULL;
	c->consoles = xrealloc(c->consoles, (c->nconsoles + 1) * sizeof *c->consoles);
	c->consoles[c->nconsoles++] = con;
	return con;
}

/*
 * The relays follow the VMs' state events: a QEMU that runs (started, or re-attached after a
 * qvmd restart) gets its relay at once, so that its output is read, kept for --tail and its log
 * rotated whether or not anyone is attached. A relay ends by itself when its QEMU exits.
 */
static void
control_console_follow(struct control *c, const char *vm, struct json_object *ev)
{
	struct json_object *v;
	char *cause = NULL;

	if (!json_object_object_get_ex(ev, "event", &v) ||
	    strcmp(json_object_get_string(v), "state") != 0 ||
	    !json_object_object_get_ex(ev, "state", &v) ||
	    (strcmp(json_object_get_string(v), "running") != 0 &&
	     strcmp(json_object_get_string(v), "paused") != 0))
		return;
	if (control_console_relay(c, vm, &cause) == NULL) {
		log_debug("vm %s: no console relay: %s", vm, cause);
		free(cause);
	}
}

void
control_console(struct control_reply *r, struct vm *vm, const char *vm_name,
                struct json_object *args)
{
	struct client *cl = client_find(r->c, r->serial);
	const struct vm_config *cfg = vm_config(vm);
	struct json_object *v, *res;
	struct vm_console *con;
	struct evbuffer *tail;
	char *cause = NULL, *msg;
	int64_t n = 0;

	if (args != NULL && json_object_object_get_ex(args, "tail", &v) && v != NULL) {
		if (!json_object_is_type(v, json_type_int) || (n = json_object_get_int64(v)) < 0 ||
		    n > CONSOLE_TAIL_MAX) {
			msg = xasprintf("console: args.tail must be an integer from 0 to %d",
			                CONSOLE_TAIL_MAX);
			control_done(NULL, PROTO_ERR_INVALID, msg, r);
			free(msg);
			return;
		}
	}
	if (cl == NULL || cl->subscribed || cl->pending > 1) {
		control_done(NULL, PROTO_ERR_BUSY,
		             "console: needs a connection of its own (no subscription, no other "
		             "request in flight)",
		             r);
		return;
	}
	if (cfg != NULL && cfg->console == CFG_CONSOLE_NONE && !vm_is_active(vm)) {
		control_done(NULL, PROTO_ERR_NOT_FOUND, "has no console (console = none)", r);
		return;
	}
	if (vm_state(vm) != VM_RUNNING && vm_state(vm) != VM_PAUSED) {
		control_done(NULL, PROTO_ERR_NOT_RUNNING, "not running", r);
		return;
	}
	if ((con = control_console_relay(r->c, vm_name, &cause)) == NULL) {
		if (cfg != NULL && cfg->console == CFG_CONSOLE_NONE) {
			control_done(NULL, PROTO_ERR_NOT_FOUND, "has no console (console = none)",
			             r);
		} else {
			msg = xasprintf("console unavailable: %s", cause);
			control_done(NULL, PROTO_ERR_FAILED, msg, r);
			free(msg);
		}
		free(cause);
		return;
	}
	cl->console = vm_console_attach(con, &client_console_cbs, cl);
	res = json_object_new_object();
	json_object_object_add(res, "vm", json_object_new_string(vm_name));
	control_done(res, PROTO_OK, NULL, r);
	if (n > 0 && cl->console != NULL && !cl->closing) {
		if ((tail = evbuffer_new()) == NULL)
			fatal("out of memory");
		vm_console_tail(con, (unsigned)n, tail);
		while (evbuffer_get_length(tail) > 0) {
			char buf[16 * 1024];
			int k = evbuffer_remove(tail, buf, sizeof buf);

			console_frame(cl, 'o', buf, (size_t)k);
		}
		evbuffer_free(tail);
	}
}

/* Request ids: a string, or an integer JSON numbers can carry exactly (|id| <= 2^53 - 1). */
#define CONTROL_ID_MAX ((int64_t)1 << 53)

/* Why a parsed request value cannot be taken as it is: a string with a NUL in it (it would be
 * cut short: "status\u0000junk" is not "status"), or a number that is not finite. NULL if fine. */
static const char *
value_problem(struct json_object *v, int depth)
{
	const char *why = NULL;

	if (depth > 64)
		return "nested too deeply";
	switch (json_object_get_type(v)) {
	case json_type_string:
		if (strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
			return "a string contains a NUL character";
		return NULL;
	case json_type_double:
		return isfinite(json_object_get_double(v)) ? NULL : "a number is not finite";
	case json_type_object: {
		/* A block: the macro declares variables, which C11 allows after a label only in
		 * one. */
		json_object_object_foreach(v, key, val)
		{
			(void)key;
			if ((why = value_problem(val, depth + 1)) != NULL)
				return why;
		}
		return NULL;
	}
	case json_type_array:
		for (size_t i = 0; i < json_object_array_length(v) && why == NULL; i++)
			why = value_problem(json_object_array_get_idx(v, i), depth + 1);
		return why;
	default:
		return NULL;
	}
}

/* Whether the request text escapes a NUL (\u0000) anywhere: json-c cuts object keys short at a
 * NUL ("wait\u0000junk" would be taken for "wait"), so keys cannot be checked after parsing. */
static bool
has_nul_escape(const char *line, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (line[i] != '\\')
			continue;
		if (line[i + 1] == 'u' && i + 5 < len && memcmp(line + i + 2, "0000", 4) == 0)
			return true;
		i++; /* the escaped character: "\\u0000" is a backslash, then text */
	}
	return false;
}

/* Whether s is valid UTF-8 (RFC 3629: no overlong forms, surrogates or code points past
 * U+10FFFF). json-c's JSON_TOKENER_VALIDATE_UTF8 lets lead bytes F5-F7 through, and a reply
 * echoes what the request held. */
static bool
utf8_valid(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		unsigned char c = s[i];
		unsigned char lo = 0x80, hi = 0xbf;
		size_t n;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3;
		else
			return false;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
		else if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
		if (len - i <= n || s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
		}
		i += n + 1;
	}
	return true;
}

/* Whether id can be echoed back as it came: absent, null, a string, or an exact integer. */
static bool
id_ok(struct json_object *id)
{
	int64_t n;

	if (id == NULL || json_object_is_type(id, json_type_string))
		return true;
	if (!json_object_is_type(id, json_type_int))
		return false;
	n = json_object_get_int64(id);
	/* json-c clamps integers beyond 64 bits: only ids well inside the range are exact. */
	return n > -CONTROL_ID_MAX && n < CONTROL_ID_MAX;
}

/* Parses one request line and dispatches it. */
static void
client_request(struct client *cl, const char *line, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *req, *id = NULL, *v, *args = NULL;
	const char *cmd = NULL, *vm = NULL, *why;
	struct control_reply *r;

	/* Strict: only valid UTF-8 (a reply echoes id, cmd and vm: it must be valid too). */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	if (!utf8_valid((const unsigned char *)line, len)) {
		client_error(cl, NULL, PROTO_ERR_INVALID, "malformed request: not valid UTF-8");
		goto out_tok;
	}
	req = json_tokener_parse_ex(tok, line, (int)len);
	if (req == NULL || json_tokener_get_error(tok) != json_tokener_success ||
	    tok->char_offset < (int)len) {
		client_error(cl, NULL, PROTO_ERR_INVALID,
		             json_tokener_get_error(tok) == json_tokener_error_parse_utf8_string
		                 ? "malformed request: not valid UTF-8"
		                 : "malformed request: not a JSON object");
		goto out;
	}
	if (!json_object_is_type(req, json_type_object)) {
		client_error(cl, NULL, PROTO_ERR_INVALID, "malformed request: not a JSON object");
		goto out;
	}
	json_object_object_get_ex(req, "id", &id);
	if (!id_ok(id)) {
		client_error(cl, NULL, PROTO_ERR_INVALID,
		             "malformed request: \"id\" must be a string or an integer below 2^53");
		goto out;
	}
	why = value_problem(req, 0);
	if (why == NULL && has_nul_escape(line, len))
		why = "a string contains a NUL character";
	if (why != NULL) {
		char *msg = xasprintf("malformed request: %s", why);

		client_error(cl, id, PROTO_ERR_INVALID, msg);
		free(msg);
		goto out;
	}
	if (!json_object_object_get_ex(req, "cmd", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		client_error(cl, id, PROTO_ERR_INVALID,
		             "malformed request: \"cmd\" must be a string");
		goto out;
	}
	cmd = json_object_get_string(v);
	if (json_object_object_get_ex(req, "vm", &v) && v != NULL) {
		if (!json_object_is_type(v, json_type_string)) {
			client_error(cl, id, PROTO_ERR_INVALID,
			             "malformed request: \"vm\" must be a string");
			goto out;
		}
		vm = json_object_get_string(v);
	}
	if (json_object_object_get_ex(req, "args", &args) && args != NULL &&
	    !json_object_is_type(args, json_type_object)) {
		client_error(cl, id, PROTO_ERR_INVALID,
		             "malformed request: \"args\" must be an object");
		goto out;
	}
	r = xcalloc(1, sizeof *r);
	r->c = cl->c;
	r->serial = cl->serial;
	r->id = json_object_get(id);
	r->uid = cl->cred.uid;
	r->gid = cl->cred.gid;
	r->pid = cl->cred.pid;
	cl->pending++;
	control_dispatch(r, cmd, vm, args);
out:
	json_object_put(req);
out_tok:
	json_tokener_free(tok);
}

/* One request line (its newline removed; takes line): a trailing CR goes, an empty line is
 * ignored. */
static void
client_line(struct client *cl, char *line, size_t len)
{
	if (len > 0 && line[len - 1] == '\r')
		line[--len] = '\0';
	if (len > 0) {
		client_touch(cl);
		client_request(cl, line, len);
	}
	free(line);
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
		struct evbuffer_ptr nl;
		size_t len;
		char *line;

		if (cl->console != NULL) {
			/* Upgraded: the rest is typed at the console. */
			client_console_read(cl);
			return;
		}
		if (client_behind(cl)) {
			/* The rest waits, here and in the socket, until the client catches up. */
			cl->paused = true;
			bufferevent_disable(bev, EV_READ);
			return;
		}
		nl = evbuffer_search(in, "\n", 1, NULL);
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
		client_line(cl, line, len);
	}
	return;
too_large:
	client_close(cl, PROTO_ERR_TOO_LARGE, "request larger than 1 MiB: closing the connection",
	             false);
}

/* At EOF: what is left in the input is a last request without its newline. */
static void
client_last_request(struct client *cl)
{
	struct evbuffer *in = bufferevent_get_input(cl->bev);
	size_t len = evbuffer_get_length(in);
	char *line;

	if (len == 0 || len > CONTROL_MAX_REQUEST || client_behind(cl))
		return;
	line = xmalloc(len + 1);
	evbuffer_remove(in, line, len);
	line[len] = '\0';
	client_line(cl, line, len);
}

static void
client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct client *cl = arg;

	if (cl->closing || cl->console != NULL) {
		client_drop(cl, "closed");
		return;
	}
	/* A client that half-closed after its requests still gets its answers, also to a last
	 * request that had no newline. */
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !cl->subscribed) {
		client_last_request(cl);
		if (cl->dead || cl->closing)
			return;
		cl->eof = true;
		bufferevent_disable(bev, EV_READ);
		if (cl->pending == 0)
			client_finish(cl);
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

/* A client with nothing in flight, after CONTROL_IDLE_TIMEOUT without a request. */
static void
client_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client *cl = arg;

	if (!client_idle(cl))
		return; /* busy: the clock restarts when it is idle again */
	log_debug("control: client %llu idle: closing it", (unsigned long long)cl->serial);
	client_close(cl, PROTO_ERR_IDLE, "no request for too long: closing the connection", false);
}

/* Counts our open descriptors (not the one reading the directory); -1 if /proc cannot tell. */
static long
count_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *e;
	long n = 0;

	if (dir == NULL)
		return -1;
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] != '.')
			n++;
	}
	closedir(dir);
	return n > 0 ? n - 1 : 0;
}

/* Descriptors held for anything but clients, counted again once CONTROL_FD_COUNT_MS passed
 * (reading a directory of thousands of entries on every accept would cost more than the accept);
 * the reserve covers what opens in between. */
static size_t
control_other_fds(struct control *c)
{
	int64_t now = clock_mono_ms();
	long n;

	if (c->fds_counted_ms != 0 && now - c->fds_counted_ms < CONTROL_FD_COUNT_MS)
		return c->fds_other;
	c->fds_counted_ms = now;
	if ((n = count_fds()) >= 0)
		c->fds_other = (size_t)n > c->nfds ? (size_t)n - c->nfds : 0;
	return c->fds_other;
}

/* How many descriptors clients may hold (see CONTROL_FD_RESERVE). */
static size_t
control_fd_budget(struct control *c)
{
	struct rlimit rl;
	size_t keep = control_other_fds(c) + CONTROL_FD_RESERVE + CONTROL_FD_PER_VM * c->d->nvms;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > SIZE_MAX)
		return SIZE_MAX;
	if ((size_t)rl.rlim_cur < keep + CONTROL_MIN_CLIENTS)
		return CONTROL_MIN_CLIENTS;
	return (size_t)rl.rlim_cur - keep;
}

/* Closes the client idle the longest to make room for a new one; false if none has been idle for
 * CONTROL_EVICT_AGE_MS. Its descriptor is closed at once. */
static bool
control_evict(struct control *c)
{
	int64_t now = clock_mono_ms();
	struct client *cl;

	TAILQ_FOREACH(cl, &c->clients, entry)
	{
		if (now - cl->active_ms < CONTROL_EVICT_AGE_MS)
			break; /* the list is in order of activity: the rest are younger */
		if (!client_idle(cl) && !cl->shut)
			continue;
		if (!cl->shut)
			client_error(cl, NULL, PROTO_ERR_IDLE,
			             "too many clients: closing this idle connection");
		client_drop(cl, "evicted: too many clients");
		client_close_bev(cl);
		return true;
	}
	return false;
}

/* Accepts again once clients have made room. */
static void
control_listen(struct control *c)
{
	if (!c->accept_paused || c->nfds >= control_fd_budget(c))
		return;
	c->accept_paused = false;
	evtimer_del(c->retry_ev);
	evconnlistener_enable(c->listener);
}

static void
control_stop_accepting(struct control *c)
{
	struct timeval tv = {1, 0};

	c->accept_paused = true;
	evconnlistener_disable(c->listener);
	evtimer_add(c->retry_ev, &tv);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
	static const char busy[] = "{\"id\":null,\"ok\":false,\"error\":{\"code\":\"busy\","
	                           "\"message\":\"too many clients: try again later\"}}\n";
	struct control *c = arg;
	struct client *cl;
	struct ucred cred = {.uid = (uid_t)-1, .gid = (gid_t)-1};
	bool allowed;

	if (c->nfds >= control_fd_budget(c) && !control_evict(c)) {
		log_warn("control: %zu clients, none idle: refusing connections for now",
		         c->nclients);
		if (send(fd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			log_debug("control: refusing a client: %s", strerror(errno));
		close(fd);
		control_stop_accepting(c);
		return;
	}
	allowed = peer_allowed(c, fd, &cred);
	cl = xcalloc(1, sizeof *cl);
	cl->c = c;
	cl->serial = ++c->next_serial;
	cl->cred = cred;
	cl->bev = bufferevent_socket_new(c->d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (cl->bev == NULL)
		fatal("out of memory");
	c->nfds++;
	cl->idle_ev = evtimer_new(c->d->base, client_idle_cb, cl);
	if (cl->idle_ev == NULL)
		fatal("out of memory");
	bufferevent_setcb(cl->bev, client_read_cb, client_write_cb, client_event_cb, cl);
	/* Called back when the output falls to CLIENT_OUTPUT_LOW: a paused client resumes. */
	bufferevent_setwatermark(cl->bev, EV_WRITE, CLIENT_OUTPUT_LOW, 0);
	evbuffer_add_cb(bufferevent_get_output(cl->bev), client_output_cb, c);
	TAILQ_INSERT_TAIL(&c->clients, cl, entry);
	c->nclients++;
	client_touch(cl);
	if (!allowed) {
		log_warn("control: denied connection from uid %d pid %d", (int)cred.uid,
		         (int)cred.pid);
		client_close(cl, PROTO_ERR_DENIED,
		             "permission denied: not root, qvmd's user or in socket_group", false);
		return;
	}
	bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct control *c = arg;

	c->accept_paused = false;
	evconnlistener_enable(c->listener);
}

/* Out of descriptors: stop accepting for a second instead of spinning. */
static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct control *c = arg;
	int err = EVUTIL_SOCKET_ERROR();

	log_error("control: accept: %s", strerror(err));
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
		control_stop_accepting(c);
}

struct control *
control_new(struct daemon *d, const char *path, const char *group, char **cause)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct control *c;
	struct group *gr = NULL;
	struct timeval idle = {CONTROL_IDLE_TIMEOUT, 0};
	const char *env;
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
	TAILQ_INIT(&c->dropped);
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
	c->reap_ev = evtimer_new(d->base, control_reap, c);
	if (c->retry_ev == NULL || c->reap_ev == NULL)
		fatal("out of memory");
	c->fds_other = (size_t)fd + 1; /* until counted: at least everything below the socket */
	if ((env = getenv("QVMD_TEST_IDLE_TIMEOUT")) != NULL && atoi(env) > 0)
		idle.tv_sec = atoi(env);
	c->idle_tv = event_base_init_common_timeout(d->base, &idle);
	if (c->idle_tv == NULL)
		fatal("out of memory");
	/* QEMUs re-attached before the socket existed: their state events went unseen. */
	for (size_t i = 0; i < d->nvms; i++) {
		char *why = NULL;

		if (vm_state(d->vms[i]) != VM_RUNNING && vm_state(d->vms[i]) != VM_PAUSED)
			continue;
		if (control_console_relay(c, vm_name(d->vms[i]), &why) == NULL) {
			log_debug("vm %s: no console relay: %s", vm_name(d->vms[i]), why);
			free(why);
		}
	}
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
		client_free(cl);
	}
	while ((cl = TAILQ_FIRST(&c->dropped)) != NULL) {
		TAILQ_REMOVE(&c->dropped, cl, entry);
		client_free(cl);
	}
	for (size_t i = 0; i < c->nconsoles; i++)
		vm_console_free(c->consoles[i]);
	free(c->consoles);
	event_free(c->reap_ev);
	evconnlistener_free(c->listener);
	event_free(c->retry_ev);
	unlink(c->path);
	free(c->path);
	free(c);
}
