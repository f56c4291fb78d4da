/*
 * The VNC display of a VM (see vm_vnc.h). The socket belongs to qvmd, not to QEMU: QEMU gets
 * each accepted connection as a descriptor (getfd over QMP, SCM_RIGHTS), so it never binds a
 * socket of its own (no TCP port, nothing a sandboxed QEMU could create in the run directory),
 * and the socket lives exactly while qvmd can hand clients over. A client that connects while
 * QMP is not ready (QEMU dying, qvmd not yet re-attached) is closed at once.
 */
#include "vm_vnc.h"

#include "vm_private.h"

#include "argv.h"
#include "cfg.h"
#include "log.h"
#include "qmp.h"

#include <errno.h>
#include <event2/event.h>
#include <grp.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define VNC_BACKLOG     16
#define VNC_ACCEPT_MAX  16   /* clients taken per wake-up */
#define VNC_RETRY_MS    1000 /* accepting pauses this long after EMFILE and the like */
#define VNC_FDNAME_SIZE 40

struct vm_vnc {
	struct vm *vm;
	char *path;
	int fd;
	struct event *ev;    /* the socket is readable: clients are waiting */
	struct event *retry; /* accepting resumes after a shortage of descriptors */
	uint64_t seq;        /* names the descriptors handed to QEMU */
};

/* One client on its way to QEMU: getfd and add_client in flight. */
struct vnc_client {
	struct vm *vm;
	char fdname[VNC_FDNAME_SIZE];
	unsigned pending;
	bool have_fd; /* getfd succeeded: QEMU holds the descriptor under fdname */
};

const char *
vm_vnc_socket(const struct vm *vm)
{
	return vm->vnc != NULL ? vm->vnc->path : NULL;
}

static void
closefd_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;

	if (r->status != QMP_OK && r->status != QMP_DISCONNECTED)
		log_warn("vm %s: vnc: closefd failed: %s", vm->name, r->error_desc);
}

static void
client_release(struct vnc_client *c)
{
	if (--c->pending == 0)
		free(c);
}

static void
getfd_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vnc_client *c = arg;

	if (r->status == QMP_OK)
		c->have_fd = true;
	else if (r->status != QMP_DISCONNECTED)
		log_warn("vm %s: vnc: getfd failed: %s", c->vm->name, r->error_desc);
	client_release(c);
}

static void
add_client_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vnc_client *c = arg;
	struct vm *vm = c->vm;

	if (r->status == QMP_OK) {
		log_debug("vm %s: vnc client handed to qemu (%s)", vm->name, c->fdname);
	} else if (r->status != QMP_DISCONNECTED) {
		log_warn("vm %s: vnc: add_client failed: %s", vm->name, r->error_desc);
		/* QEMU keeps a descriptor it was given until something takes it. */
		if (c->have_fd) {
			struct json_object *args = json_object_new_object();
			char *cause = NULL;

			json_object_object_add(args, "fdname", json_object_new_string(c->fdname));
			if (qmp_execute(conn, "closefd", args, 0, closefd_done, vm, &cause) < 0)
				free(cause);
			json_object_put(args);
		}
	}
	client_release(c);
}

/* Hands an accepted connection to QEMU, or closes it when QEMU cannot take it now. */
static void
vnc_hand_over(struct vm_vnc *v, int fd)
{
	struct vm *vm = v->vm;
	struct json_object *args;
	struct vnc_client *c;
	char *cause = NULL;

	if (vm->qmp == NULL || vm->qmp_closed || !qmp_conn_is_ready(vm->qmp)) {
		log_info("vm %s: vnc client closed: qemu is not ready", vm->name);
		close(fd);
		return;
	}
	c = xcalloc(1, sizeof *c);
	c->vm = vm;
	snprintf(c->fdname, sizeof c->fdname, "qvmd.vnc.%" PRIu64, ++v->seq);
	/* Both go out at once: QEMU runs one monitor's commands in order. */
	args = json_object_new_object();
	json_object_object_add(args, "fdname", json_object_new_string(c->fdname));
	if (qmp_execute_fd(vm->qmp, "getfd", args, fd, 0, getfd_done, c, &cause) < 0) {
		log_warn("vm %s: vnc: getfd: %s", vm->name, cause);
		free(cause);
		json_object_put(args);
		free(c);
		close(fd);
		return;
	}
	c->pending++;
	json_object_put(args);
	close(fd); /* the QMP client passes a duplicate */
	args = json_object_new_object();
	json_object_object_add(args, "protocol", json_object_new_string("vnc"));
	json_object_object_add(args, "fdname", json_object_new_string(c->fdname));
	json_object_object_add(args, "skipauth", json_object_new_boolean(1));
	if (qmp_execute(vm->qmp, "add_client", args, 0, add_client_done, c, &cause) < 0) {
		log_warn("vm %s: vnc: add_client: %s", vm->name, cause);
		free(cause);
	} else {
		c->pending++;
	}
	json_object_put(args);
}

static void
vnc_resume(evutil_socket_t unused, short what, void *arg)
{
	struct vm_vnc *v = arg;

	event_add(v->ev, NULL);
}

static void
vnc_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct vm_vnc *v = arg;

	for (int i = 0; i < VNC_ACCEPT_MAX; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			vnc_hand_over(v, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			struct timeval tv = {VNC_RETRY_MS / 1000, (VNC_RETRY_MS % 1000) * 1000};

			/* The client stays in the backlog until descriptors are free again. */
			log_error("vm %s: vnc: accept: %s", v->vm->name, strerror(errno));
			event_del(v->ev);
			evtimer_add(v->retry, &tv);
		} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
			log_error("vm %s: vnc: accept: %s", v->vm->name, strerror(errno));
		}
		return;
	}
}

/* Creates the listening socket at path: 0600, or 0660 with group gr. -1 with *cause. */
static int
vnc_listen(const char *path, const struct group *gr, char **cause)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof sun.sun_path) {
		*cause = xasprintf("vnc socket path too long: %s", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*cause = xasprintf("socket: %s", strerror(errno));
		return -1;
	}
	unlink(path); /* left by a qvmd that was killed */
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		*cause = xasprintf("bind %s: %s", path, strerror(errno));
		umask(old);
		close(fd);
		return -1;
	}
	umask(old);
	if ((gr != NULL && (chown(path, (uid_t)-1, gr->gr_gid) < 0 || chmod(path, 0660) < 0)) ||
	    listen(fd, VNC_BACKLOG) < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		unlink(path);
		close(fd);
		return -1;
	}
	return fd;
}

int
vm_vnc_open(struct vm *vm, char **cause)
{
	const struct vm_config *cfg = vm->live_cfg;
	const char *group = vm->env.conf->socket_group;
	struct group *gr = NULL;
	struct vm_vnc *v;
	char *path;
	int fd;

	if (cfg == NULL || cfg->display != CFG_DISPLAY_VNC || vm->vnc != NULL)
		return 0;
	if (group != NULL && (gr = getgrnam(group)) == NULL) {
		*cause = xasprintf("socket_group %s: no such group", group);
		return -1;
	}
	path = vm_run_path(vm, ARGV_VNC_SOCKET);
	if ((fd = vnc_listen(path, gr, cause)) < 0) {
		free(path);
		return -1;
	}
	v = xcalloc(1, sizeof *v);
	v->vm = vm;
	v->path = path;
	v->fd = fd;
	v->ev = event_new(vm->env.base, fd, EV_READ | EV_PERSIST, vnc_accept, v);
	v->retry = evtimer_new(vm->env.base, vnc_resume, v);
	event_add(v->ev, NULL);
	vm->vnc = v;
	log_info("vm %s: vnc display on %s", vm->name, path);
	return 0;
}

void
vm_vnc_close(struct vm *vm)
{
	struct vm_vnc *v = vm->vnc;

	if (v == NULL)
		return;
	vm->vnc = NULL;
	event_free(v->ev);
	event_free(v->retry);
	close(v->fd);
	unlink(v->path);
	free(v->path);
	free(v);
}
