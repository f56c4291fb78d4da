/*
 * The helper QEMU of a stopped VM's disks (see vm_helper.h).
 *
 * Why a QEMU with "-machine none" and not qemu-storage-daemon, measured with QEMU 7.2 here:
 * qemu-storage-daemon's QMP has no add-fd (nor getfd, query-fdsets) and its command line no
 * -add-fd, so it could only open images by name, as the VM's uid, which may not read them; and
 * its query-block is empty (no block backends). `qemu-system-x86_64 -machine none -S -nodefaults
 * -display none` with the disks as -add-fd/-blockdev takes the descriptors qvmd opened, answers
 * add-fd over its unix socket (SCM_RIGHTS), blockdev-add on /dev/fdset/N, persistent bitmaps,
 * transaction and blockdev-backup like the VM's QEMU, is ready in 0.1 s with 33 MiB resident, and
 * on SIGTERM ends its jobs (a cancelled backup merges its bitmap back) and writes its persistent
 * bitmaps back, exiting 0; killed, it leaves them "in-use", inconsistent for the next QEMU.
 */
#include "vm_helper.h"

#include "argv.h"
#include "imgchain.h"
#include "log.h"
#include "proc.h"
#include "qmp.h"
#include "vm_private.h"
#include "vm_uid.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HELPER_PIDFILE  "qemu/helper.pid"
#define HELPER_SOCKET   "helper.sock"
#define HELPER_GRACE_MS 30000 /* SIGTERM -> SIGKILL */
#define HELPER_FDS_MAX  256
#define HELPER_SANDBOX  "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

struct vm_helper {
	struct vm *vm;
	struct vm_helper_cbs cbs;
	void *arg;
	pid_t pid;
	int pidfd;
	struct event *pid_ev;
	struct event *grace_ev;
	struct qmp_conn *qmp;
	long log_offset;
	bool stopping;
	bool exited;
};

/* ---- the process ---- */

/* Whom the helper runs as: the VM's ids (as root), with its pidfile directory its own; the run
 * directory stays root's, traversable by the VM's gid. *use false: qvmd is not root. */
static int
helper_creds(struct vm *vm, struct proc_creds *creds, struct proc_path *path, bool *use,
             char **cause)
{
	char *run = vm_run_path(vm, ""), *qemu_dir = vm_run_path(vm, "qemu");
	struct vm_ids ids;
	int rc = -1;

	if (vm_host_dirs(vm, cause) < 0)
		goto out;
	*use = geteuid() == 0;
	if (!*use) {
		if (mkdir(qemu_dir, 0700) < 0 && errno != EEXIST) {
			*cause = xasprintf("cannot create %s: %s", qemu_dir, strerror(errno));
			goto out;
		}
		rc = 0;
		goto out;
	}
	if (vm_uid_assign(vm->env.uids, vm->name, &ids, cause) < 0 ||
	    vm_host_own_dir(run, false, &ids, 0710, cause) < 0 ||
	    vm_host_own_dir(qemu_dir, true, &ids, 0700, cause) < 0)
		goto out;
	*path = (struct proc_path){"pidfile directory", NULL, W_OK | X_OK};
	*creds = (struct proc_creds){
	    .uid = ids.uid, .gid = ids.gid, .extra_gid = (gid_t)-1, .paths = path, .npaths = 1};
	rc = 0;
out:
	free(run);
	free(qemu_dir);
	return rc;
}

/* Appends s (taken) to the NULL-terminated vector v of *n entries. */
static void
push(char ***v, size_t *n, char *s)
{
	*v = xrealloc(*v, (*n + 2) * sizeof **v);
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
}

/* Opens the writable disks' chains and describes them as the VM's QEMU gets them: fdsets named
 * after the file nodes, then the nodes from the bottom of each chain up. Descriptors to inherit
 * go to keep[]. 0, or -1 with *cause. */
static int
helper_disks(struct vm *vm, const struct vm_config *cfg, struct imgchain *chains, char ***argv,
             size_t *argc, int *keep, size_t *nkeep, char **cause)
{
	long long set = 0;

	for (size_t i = 0; i < cfg->ndisks; i++) {
		const struct cfg_disk *disk = &cfg->disks[i];
		struct imgchain *c = &chains[i];
		struct argv_image images[IMGCHAIN_DEPTH_MAX + 1];
		struct argv_chain chain = {images, 0};

		if (disk->readonly)
			continue;
		if (vm_disk_open(vm, disk, NULL, c, cause) < 0)
			return -1;
		if (*nkeep + 2 * c->n > HELPER_FDS_MAX) {
			imgchain_close(c);
			*cause = xasprintf("disk %s: too many images", disk->id);
			return -1;
		}
		for (size_t j = 0; j < c->n; j++) {
			char *opaque = argv_node_file(disk->id, j);

			images[j] = (struct argv_image){++set, c->v[j].fd_rw, c->v[j].fd_ro,
			                                c->v[j].format};
			if (c->v[j].fd_rw >= 0) {
				keep[(*nkeep)++] = c->v[j].fd_rw;
				push(argv, argc, xstrdup("-add-fd"));
				push(argv, argc,
				     xasprintf("fd=%d,set=%lld,opaque=%s", c->v[j].fd_rw, set,
				               opaque));
			}
			keep[(*nkeep)++] = c->v[j].fd_ro;
			push(argv, argc, xstrdup("-add-fd"));
			push(argv, argc,
			     xasprintf("fd=%d,set=%lld,opaque=%s", c->v[j].fd_ro, set, opaque));
			free(opaque);
		}
		chain.n = c->n;
		for (size_t j = c->n; j-- > 0;) {
			struct json_object *o[2] = {argv_blockdev_file_json(disk, &chain, j),
			                            argv_blockdev_fmt_json(disk, &chain, j)};

			for (size_t k = 0; k < 2; k++) {
				push(argv, argc, xstrdup("-blockdev"));
				push(argv, argc,
				     xstrdup(json_object_to_json_string_ext(
				         o[k],
				         JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)));
				json_object_put(o[k]);
			}
		}
	}
	return 0;
}

static char *
exit_text(int status)
{
	if (WIFEXITED(status))
		return xasprintf("exited with status %d", WEXITSTATUS(status));
	if (WIFSIGNALED(status))
		return xasprintf("killed by signal %d (%s)", WTERMSIG(status),
		                 strsignal(WTERMSIG(status)));
	return xstrdup("ended");
}

static void
qmp_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	qmp_conn_free(arg);
}

/* Closes the QMP connection now and frees it on the next loop turn (this may run inside one of
 * its callbacks). */
static void
helper_drop_qmp(struct vm_helper *h)
{
	struct qmp_conn *conn = h->qmp;

	if (conn == NULL)
		return;
	h->qmp = NULL;
	qmp_conn_close(conn, "backup helper gone");
	event_base_once(h->vm->env.base, -1, EV_TIMEOUT, qmp_free_deferred, conn, NULL);
}

static void
pid_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm_helper *h = arg;
	char *how, *tail, *why, *logpath;
	int status = 0;
	bool clean;

	if (waitpid(h->pid, &status, WNOHANG) != h->pid)
		return;
	h->exited = true;
	event_del(h->pid_ev);
	if (h->grace_ev != NULL)
		event_del(h->grace_ev);
	clean = h->stopping && WIFEXITED(status) && WEXITSTATUS(status) == 0;
	how = exit_text(status);
	logpath = vm_state_path(h->vm, "qemu.log");
	tail = proc_file_tail(logpath, h->log_offset, 512);
	why = xasprintf("backup helper (pid %d) %s%s%s", (int)h->pid, how,
	                tail && *tail ? ": " : "", tail ? tail : "");
	log_info("vm %s: %s", h->vm->name, why);
	helper_drop_qmp(h);
	h->cbs.exited(h, clean, why, h->arg);
	free(why);
	free(tail);
	free(logpath);
	free(how);
}

static void
grace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm_helper *h = arg;

	log_warn("vm %s: backup helper (pid %d) did not end within %d s: killing it", h->vm->name,
	         (int)h->pid, HELPER_GRACE_MS / 1000);
	proc_pidfd_signal(h->pidfd, SIGKILL);
}

/* ---- its QMP connection ---- */

static void
helper_qmp_ready(struct qmp_conn *conn, void *arg)
{
	struct vm_helper *h = arg;

	h->cbs.ready(h, h->arg);
}

static void
helper_qmp_event(struct qmp_conn *conn, const char *name, struct json_object *data, int64_t seconds,
                 int64_t microseconds, void *arg)
{
	struct vm_helper *h = arg;

	h->cbs.event(h, name, data, h->arg);
}

/* A helper whose QMP is gone is of no use: it is killed, and its exit reported. */
static void
helper_qmp_closed(struct qmp_conn *conn, const char *cause, void *arg)
{
	struct vm_helper *h = arg;

	if (h->exited || h->stopping)
		return;
	log_warn("vm %s: backup helper: qmp: %s", h->vm->name, cause);
	proc_pidfd_signal(h->pidfd, SIGKILL);
}

/* ---- the object ---- */

struct vm_helper *
vm_helper_start(struct vm *vm, const struct vm_config *cfg, const struct vm_helper_cbs *cbs,
                void *arg, char **cause)
{
	const struct daemon_config *conf = vm->env.conf;
	struct qmp_callbacks qcbs = {helper_qmp_ready, helper_qmp_event, helper_qmp_closed, NULL,
	                             NULL};
	char *sock = vm_run_path(vm, HELPER_SOCKET), *pidfile = vm_run_path(vm, HELPER_PIDFILE);
	char *qemu_dir = vm_run_path(vm, "qemu"), *logpath = vm_state_path(vm, "qemu.log");
	struct imgchain *chains = xcalloc(cfg->ndisks + 1, sizeof *chains);
	struct vm_helper *h = NULL;
	struct proc_creds creds;
	struct proc_path path;
	int keep[HELPER_FDS_MAX], lfd = -1, logfd = -1, cfd, pidfd;
	size_t nkeep = 0, argc = 0;
	char **argv = NULL;
	struct stat st;
	bool use_creds = false;
	long log_offset;
	pid_t pid;

	if (helper_creds(vm, &creds, &path, &use_creds, cause) < 0)
		goto out;
	path.path = qemu_dir;
	push(&argv, &argc, xstrdup(conf->qemu));
	push(&argv, &argc, xstrdup("-name"));
	push(&argv, &argc, xasprintf("guest=%s,process=qvmd-backup-%s", vm->name, vm->name));
	push(&argv, &argc, xstrdup("-machine"));
	push(&argv, &argc, xstrdup("none"));
	push(&argv, &argc, xstrdup("-nodefaults"));
	push(&argv, &argc, xstrdup("-no-user-config"));
	push(&argv, &argc, xstrdup("-S"));
	push(&argv, &argc, xstrdup("-display"));
	push(&argv, &argc, xstrdup("none"));
	push(&argv, &argc, xstrdup("-sandbox"));
	push(&argv, &argc, xstrdup(HELPER_SANDBOX));
	push(&argv, &argc, xstrdup("-pidfile"));
	push(&argv, &argc, xstrdup(pidfile));
	if ((lfd = vm_qmp_listen(sock, cause)) < 0)
		goto out;
	keep[nkeep++] = lfd;
	push(&argv, &argc, xstrdup("-chardev"));
	push(&argv, &argc, xasprintf("socket,id=qvmd.qmp,fd=%d,server=on,wait=off", lfd));
	push(&argv, &argc, xstrdup("-mon"));
	push(&argv, &argc, xstrdup("chardev=qvmd.qmp,mode=control"));
	if (helper_disks(vm, cfg, chains, &argv, &argc, keep, &nkeep, cause) < 0)
		goto out;
	logfd = open(logpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (logfd < 0) {
		*cause = xasprintf("%s: %s", logpath, strerror(errno));
		goto out;
	}
	log_offset = fstat(logfd, &st) == 0 ? (long)st.st_size : 0;
	unlink(pidfile);
	pid = proc_spawn_as(argv, logfd, keep, nkeep, use_creds ? &creds : NULL, &pidfd, cause);
	if (pid < 0)
		goto out;
	h = xcalloc(1, sizeof *h);
	h->vm = vm;
	h->cbs = *cbs;
	h->arg = arg;
	h->pid = pid;
	h->pidfd = pidfd;
	h->log_offset = log_offset;
	h->pid_ev = event_new(vm->env.base, pidfd, EV_READ | EV_PERSIST, pid_cb, h);
	event_add(h->pid_ev, NULL);
	log_info("vm %s: backup helper started, pid %d, uid %u", vm->name, (int)pid,
	         use_creds ? (unsigned)creds.uid : (unsigned)geteuid());
	qcbs.arg = h;
	h->qmp = qmp_conn_new(vm->env.base, &qcbs);
	/* Connected while qvmd holds the listening socket: it waits in the backlog until the
	 * helper accepts, and fails at once if the helper dies first. */
	cfd = vm_qmp_dial(sock);
	if (cfd < 0 || qmp_conn_connect_fd(h->qmp, cfd, cause) < 0) {
		if (cfd < 0)
			*cause = xasprintf("connect %s: %s", sock, strerror(errno));
		vm_helper_free(h);
		h = NULL;
	}
out:
	for (size_t i = 0; i < nkeep; i++)
		close(keep[i]);
	for (size_t i = 0; i < cfg->ndisks; i++) {
		for (size_t j = 0; j < chains[i].n; j++)
			chains[i].v[j].fd_rw = chains[i].v[j].fd_ro = -1; /* closed with keep[] */
		imgchain_close(&chains[i]);
	}
	if (h == NULL)
		unlink(sock);
	if (logfd >= 0)
		close(logfd);
	for (size_t i = 0; i < argc; i++)
		free(argv[i]);
	free(argv);
	free(chains);
	free(sock);
	free(pidfile);
	free(qemu_dir);
	free(logpath);
	return h;
}

struct qmp_conn *
vm_helper_qmp(const struct vm_helper *h)
{
	return h->qmp;
}

pid_t
vm_helper_pid(const struct vm_helper *h)
{
	return h->pid;
}

void
vm_helper_stop(struct vm_helper *h)
{
	struct timeval tv = {HELPER_GRACE_MS / 1000, 0};

	if (h->exited || h->stopping)
		return;
	h->stopping = true;
	proc_pidfd_signal(h->pidfd, SIGTERM);
	h->grace_ev = evtimer_new(h->vm->env.base, grace_cb, h);
	evtimer_add(h->grace_ev, &tv);
}

void
vm_helper_free(struct vm_helper *h)
{
	char *sock;

	if (h == NULL)
		return;
	if (!h->exited) {
		proc_pidfd_signal(h->pidfd, SIGKILL);
		waitpid(h->pid, NULL, 0);
		h->exited = true;
		log_info("vm %s: backup helper (pid %d) killed", h->vm->name, (int)h->pid);
	}
	helper_drop_qmp(h);
	sock = vm_run_path(h->vm, HELPER_SOCKET);
	unlink(sock);
	free(sock);
	if (h->grace_ev != NULL)
		event_free(h->grace_ev);
	event_free(h->pid_ev);
	close(h->pidfd);
	free(h);
}

/* ---- a helper left by an earlier qvmd ---- */

pid_t
vm_helper_leftover(const struct vm *vm)
{
	char *pidfile = vm_run_path(vm, HELPER_PIDFILE);
	pid_t pid = proc_pidfile_owner(pidfile);

	/* The lock holder is a process that opened this pidfile; its command line says it is the
	 * helper that wrote it (not, say, an operator's tool reading it). */
	if (pid > 0 && !proc_cmdline_has(pid, "-pidfile", pidfile))
		pid = 0;
	free(pidfile);
	return pid;
}

pid_t
vm_helper_kill_leftover(const struct vm *vm)
{
	pid_t pid = vm_helper_leftover(vm);
	int pidfd;

	if (pid <= 0 || (pidfd = proc_pidfd_open(pid)) < 0)
		return 0;
	/* Checked again through the pidfd: the signal cannot reach a process that reused the pid.
	 */
	if (vm_helper_leftover(vm) == pid && proc_pidfd_signal(pidfd, SIGKILL) == 0)
		log_warn("vm %s: killed the backup helper (pid %d) an earlier qvmd left running",
		         vm->name, (int)pid);
	else
		pid = 0;
	close(pidfd);
	return pid;
}

bool
vm_helper_refuse_busy(struct vm *vm, vm_done_cb cb, void *arg)
{
	pid_t pid = vm_helper_kill_leftover(vm);
	char *msg;

	if (pid <= 0 && (pid = vm_helper_leftover(vm)) <= 0)
		return false;
	msg = xasprintf("vm %s: busy: the end of an interrupted backup (helper pid %d) in "
	                "progress; try again in a moment",
	                vm->name, (int)pid);
	cb(NULL, PROTO_ERR_BUSY, msg, arg);
	free(msg);
	return true;
}
