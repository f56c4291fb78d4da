/*
 * The console relay of a running VM (see vm_console.h). QEMU's socket chardev (server=on,
 * wait=off, logfile=console.log, logappend=on) accepts one connection at a time: the relay's. It
 * writes each byte of guest output to the socket and then to the log, and to the log alone while
 * nobody is connected (e.g. while qvmd restarts), so console.log is complete whatever qvmd does.
 * The serial port waits for the socket to take a byte before the guest may send the next one: the
 * relay therefore reads whenever the socket is readable, and a client that cannot keep up is its
 * owner's problem (the output callback never blocks, control.c drops such a client).
 *
 * Measured with QEMU 7.2: when the socket is full (the relay behind by QEMU's socket send buffer,
 * about 200 KiB), QEMU logs the byte it could not send and logs it again once it is sent, so the
 * log then holds some bytes twice (what the relay receives is exact). Reading large pieces at
 * once keeps the relay ahead.
 */
#include "vm_console.h"

#include "log.h"
#include "xalloc.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* At most this much is read from QEMU per loop turn (libevent's default is 16 KiB). */
#define VM_CONSOLE_READ_MAX (128 * 1024)

struct vm_console_client {
	TAILQ_ENTRY(vm_console_client) entry;
	struct vm_console *con;
	const struct vm_console_client_cbs *cbs;
	void *arg;
	bool waiting; /* told to stop sending: gets writable */
};

struct vm_console {
	char *name;
	char *log;
	int log_fd; /* console.log, for its size and rotation; -1 if it could not be opened */
	uint64_t log_max;
	uint64_t log_size;       /* what the log holds, as far as the relay knows */
	struct bufferevent *bev; /* NULL once QEMU closed the console */
	struct vm_console_ring ring;
	TAILQ_HEAD(, vm_console_client) clients;
};

/* ---- the ring of recent output ---- */

void
vm_console_ring_init(struct vm_console_ring *r, size_t cap)
{
	r->buf = xmalloc(cap);
	r->cap = cap;
	r->head = 0;
	r->len = 0;
}

void
vm_console_ring_free(struct vm_console_ring *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = r->head = r->len = 0;
}

void
vm_console_ring_add(struct vm_console_ring *r, const void *data, size_t len)
{
	const char *p = data;
	size_t n;

	if (len >= r->cap) {
		memcpy(r->buf, p + len - r->cap, r->cap);
		r->head = 0;
		r->len = r->cap;
		return;
	}
	n = r->cap - r->head < len ? r->cap - r->head : len;
	memcpy(r->buf + r->head, p, n);
	memcpy(r->buf, p + n, len - n);
	r->head = (r->head + len) % r->cap;
	r->len = r->len + len > r->cap ? r->cap : r->len + len;
}

/* The byte at offset off from the oldest. */
static char
ring_at(const struct vm_console_ring *r, size_t off)
{
	return r->buf[(r->head + r->cap - r->len + off) % r->cap];
}

size_t
vm_console_ring_tail_start(const struct vm_console_ring *r, unsigned n)
{
	size_t i = r->len;

	if (n == 0 || r->len == 0)
		return r->len;
	/* A last line ends with its newline, or at the end without one: that newline is not a
	 * boundary. Each newline before it starts one more line. */
	if (ring_at(r, i - 1) == '\n')
		i--;
	while (i > 0) {
		if (ring_at(r, i - 1) == '\n' && --n == 0)
			return i;
		i--;
	}
	return 0;
}

void
vm_console_ring_copy(const struct vm_console_ring *r, size_t off, size_t len, void *dst)
{
	size_t start = (r->head + r->cap - r->len + off) % r->cap;
	size_t n = r->cap - start < len ? r->cap - start : len;

	memcpy(dst, r->buf + start, n);
	memcpy((char *)dst + n, r->buf, len - n);
}

/* ---- console.log ---- */

/* Copies path's descriptor from offset *done to its end into out. */
static int
rotate_copy(int fd, int out, uint64_t *done)
{
	char buf[64 * 1024];
	ssize_t n;

	while ((n = pread(fd, buf, sizeof buf, (off_t)*done)) > 0) {
		for (ssize_t w, off = 0; off < n; off += w) {
			if ((w = write(out, buf + off, (size_t)(n - off))) < 0)
				return -1;
		}
		*done += (uint64_t)n;
	}
	return n < 0 ? -1 : 0;
}

int
vm_console_rotate(int fd, const char *path, char **cause)
{
	char *old = xasprintf("%s.1", path), *tmp = xasprintf("%s.1.tmp", path);
	uint64_t done = 0;
	struct stat st;
	int out, rc = -1;

	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0) {
		*cause = xasprintf("%s: %s", tmp, strerror(errno));
		goto out;
	}
	/* The writer keeps appending: copy until the size holds still (a few rounds at most, as
	 * each round copies only what came during the last). */
	for (int round = 0; round < 8; round++) {
		if (rotate_copy(fd, out, &done) < 0 || fstat(fd, &st) < 0) {
			*cause = xasprintf("%s: %s", path, strerror(errno));
			goto out;
		}
		if ((uint64_t)st.st_size <= done)
			break;
	}
	if (close(out) < 0) {
		out = -1;
		*cause = xasprintf("%s: %s", tmp, strerror(errno));
		goto out;
	}
	out = -1;
	if (rename(tmp, old) < 0) {
		*cause = xasprintf("%s: %s", old, strerror(errno));
		goto out;
	}
	if (ftruncate(fd, 0) < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (out >= 0)
		close(out);
	if (rc < 0)
		unlink(tmp);
	free(old);
	free(tmp);
	return rc;
}

/* Rotates console.log once it has grown past its limit. */
static void
console_check_log(struct vm_console *con)
{
	struct stat st;
	char *cause = NULL;

	if (con->log_fd < 0 || con->log_size <= con->log_max)
		return;
	if (fstat(con->log_fd, &st) < 0)
		return;
	con->log_size = (uint64_t)st.st_size;
	if (con->log_size <= con->log_max)
		return;
	if (vm_console_rotate(con->log_fd, con->log, &cause) < 0) {
		log_warn("vm %s: cannot rotate %s: %s", con->name, con->log, cause);
		free(cause);
		/* Try again after as much output again. */
		con->log_size = 0;
		return;
	}
	log_info("vm %s: %s rotated at %llu bytes", con->name, con->log,
	         (unsigned long long)st.st_size);
	con->log_size = 0;
}

/* Fills the ring with the end of console.log: --tail also shows what came before this relay
 * (e.g. before a qvmd restart). */
static void
console_prime(struct vm_console *con)
{
	struct stat st;
	char *buf;
	off_t from;
	ssize_t n;

	if (con->log_fd < 0 || fstat(con->log_fd, &st) < 0)
		return;
	con->log_size = (uint64_t)st.st_size;
	from = st.st_size > VM_CONSOLE_RING ? st.st_size - VM_CONSOLE_RING : 0;
	buf = xmalloc(VM_CONSOLE_RING);
	n = pread(con->log_fd, buf, VM_CONSOLE_RING, from);
	if (n > 0)
		vm_console_ring_add(&con->ring, buf, (size_t)n);
	free(buf);
}

/* ---- the relay ---- */

/* QEMU closed the console: every client is told and detached. */
static void
console_end(struct vm_console *con, const char *why)
{
	struct vm_console_client *cl;

	log_debug("vm %s: console relay ended: %s", con->name, why);
	if (con->bev != NULL) {
		bufferevent_free(con->bev); /* safe inside its own callback */
		con->bev = NULL;
	}
	while ((cl = TAILQ_FIRST(&con->clients)) != NULL) {
		TAILQ_REMOVE(&con->clients, cl, entry);
		cl->cbs->closed(cl->arg, why);
		free(cl);
	}
}

static void
console_read_cb(struct bufferevent *bev, void *arg)
{
	struct vm_console *con = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct vm_console_client *cl, *next;
	char buf[VM_CONSOLE_READ_MAX];
	int n;

	while ((n = evbuffer_remove(in, buf, sizeof buf)) > 0) {
		vm_console_ring_add(&con->ring, buf, (size_t)n);
		con->log_size += (uint64_t)n;
		/* A client may detach itself (only itself) from its callback. */
		for (cl = TAILQ_FIRST(&con->clients); cl != NULL; cl = next) {
			next = TAILQ_NEXT(cl, entry);
			cl->cbs->output(cl->arg, buf, (size_t)n);
		}
	}
	console_check_log(con);
}

/* The guest took the queued input: clients asked to wait may send again. */
static void
console_write_cb(struct bufferevent *bev, void *arg)
{
	struct vm_console *con = arg;
	struct vm_console_client *cl, *next;

	for (cl = TAILQ_FIRST(&con->clients); cl != NULL; cl = next) {
		next = TAILQ_NEXT(cl, entry);
		if (cl->waiting) {
			cl->waiting = false;
			cl->cbs->writable(cl->arg);
		}
	}
}

static void
console_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct vm_console *con = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		console_end(con, "qemu closed the console");
}

struct vm_console *
vm_console_open(struct event_base *base, const char *name, const char *sock, const char *log,
                uint64_t log_max, char **cause)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct vm_console *con;
	int fd;

	if (strlen(sock) >= sizeof sun.sun_path) {
		*cause = xasprintf("%s: path too long", sock);
		return NULL;
	}
	strcpy(sun.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*cause = xasprintf("socket: %s", strerror(errno));
		return NULL;
	}
	/* A unix connect completes at once or fails at once (EAGAIN: QEMU's backlog is full). */
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		*cause = xasprintf("%s: %s", sock, strerror(errno));
		close(fd);
		return NULL;
	}
	con = xcalloc(1, sizeof *con);
	con->name = xstrdup(name);
	con->log = xstrdup(log);
	con->log_max = log_max;
	TAILQ_INIT(&con->clients);
	vm_console_ring_init(&con->ring, VM_CONSOLE_RING);
	/* O_NONBLOCK: a FIFO planted in its place must not hang the daemon. Never written
	 * through: only truncated (rotation). */
	con->log_fd = open(log, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (con->log_fd < 0)
		log_warn("vm %s: %s: %s (no rotation)", name, log, strerror(errno));
	else
		console_prime(con);
	con->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (con->bev == NULL)
		fatal("out of memory");
	bufferevent_setcb(con->bev, console_read_cb, console_write_cb, console_event_cb, con);
	bufferevent_set_max_single_read(con->bev, VM_CONSOLE_READ_MAX);
	bufferevent_enable(con->bev, EV_READ | EV_WRITE);
	console_check_log(con);
	log_debug("vm %s: console relay connected", name);
	return con;
}

void
vm_console_free(struct vm_console *con)
{
	struct vm_console_client *cl;

	if (con == NULL)
		return;
	while ((cl = TAILQ_FIRST(&con->clients)) != NULL) {
		TAILQ_REMOVE(&con->clients, cl, entry);
		free(cl);
	}
	if (con->bev != NULL)
		bufferevent_free(con->bev);
	if (con->log_fd >= 0)
		close(con->log_fd);
	vm_console_ring_free(&con->ring);
	free(con->name);
	free(con->log);
	free(con);
}

const char *
vm_console_name(const struct vm_console *con)
{
	return con->name;
}

bool
vm_console_alive(const struct vm_console *con)
{
	return con->bev != NULL;
}

void
vm_console_set_log_max(struct vm_console *con, uint64_t log_max)
{
	con->log_max = log_max;
}

struct vm_console_client *
vm_console_attach(struct vm_console *con, const struct vm_console_client_cbs *cbs, void *arg)
{
	struct vm_console_client *cl = xcalloc(1, sizeof *cl);

	cl->con = con;
	cl->cbs = cbs;
	cl->arg = arg;
	TAILQ_INSERT_TAIL(&con->clients, cl, entry);
	return cl;
}

void
vm_console_detach(struct vm_console_client *cl)
{
	if (cl == NULL)
		return;
	TAILQ_REMOVE(&cl->con->clients, cl, entry);
	free(cl);
}

bool
vm_console_input(struct vm_console_client *cl, struct evbuffer *in)
{
	struct vm_console *con = cl->con;
	struct evbuffer *out;

	if (con->bev == NULL) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return false;
	}
	out = bufferevent_get_output(con->bev);
	evbuffer_add_buffer(out, in);
	if (evbuffer_get_length(out) <= VM_CONSOLE_INPUT_MAX)
		return false;
	cl->waiting = true;
	return true;
}

void
vm_console_tail(const struct vm_console *con, unsigned n, struct evbuffer *out)
{
	size_t start = vm_console_ring_tail_start(&con->ring, n);
	size_t len = con->ring.len - start;
	char *buf;

	if (len == 0)
		return;
	buf = xmalloc(len);
	vm_console_ring_copy(&con->ring, start, len, buf);
	evbuffer_add(out, buf, len);
	free(buf);
}
