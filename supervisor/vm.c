/*
 * One state machine per VM: stopped -> starting -> running | paused -> stopping -> stopped, plus
 * crashed. QEMU is spawned paused (-S) with a QMP listening socket qvmd created itself; qvmd
 * connects, negotiates, then sends `cont`, so no guest instruction runs before the supervisor is
 * attached. A VM is stopped only when both its process exit (pidfd) and QMP EOF have been seen.
 */
#include "vm.h"
#include "vm_private.h"

#include "argv.h"
#include "cfg.h"
#include "daemon.h"
#include "log.h"
#include "proc.h"
#include "qmp.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define START_TIMEOUT_MS     60000 /* QEMU exec -> QMP ready */
#define QMP_EOF_GRACE_MS     2000  /* exit seen, waiting for QMP EOF */
#define STATUS_TIMEOUT_MS    2000
#define RESTART_RESET_MS     60000 /* a VM that ran this long gets its back-off reset */
#define RESTART_MAX_DELAY_MS 60000

static const char *const state_names[] = {"stopped", "starting", "running",
                                          "paused",  "stopping", "crashed"};
static const char *const job_names[] = {"start", "powerdown", "kill",   "reset",
                                        "pause", "resume",    "attach", "detach"};
static const char *const step_names[] = {"guest", "quit", "sigterm", "sigkill"};

static void vm_qmp_ready(struct qmp_conn *conn, void *arg);
static void vm_qmp_event(struct qmp_conn *conn, const char *name, struct json_object *data,
                         int64_t sec, int64_t usec, void *arg);
static void vm_qmp_closed(struct qmp_conn *conn, const char *cause, void *arg);
static void vm_qmp_trace(struct qmp_conn *conn, const char *dir, const char *buf, size_t len,
                         void *arg);
static void vm_escalate(struct vm *vm);
static void vm_maybe_finalize(struct vm *vm);

const char *
vm_state_name(enum vm_state s)
{
	return state_names[s];
}

const char *
vm_job_name(enum vm_job_kind kind)
{
	return job_names[kind];
}

const char *
vm_name(const struct vm *vm)
{
	return vm->name;
}

enum vm_state
vm_state(const struct vm *vm)
{
	return vm->state;
}

bool
vm_is_active(const struct vm *vm)
{
	return vm->state == VM_STARTING || vm->state == VM_RUNNING || vm->state == VM_PAUSED ||
	       vm->state == VM_STOPPING || vm->pid > 0;
}

const struct vm_config *
vm_config(const struct vm *vm)
{
	return vm->cfg;
}

bool
vm_definition_removed(const struct vm *vm)
{
	return vm->cfg == NULL;
}

/* Path of a file in this VM's run directory (caller frees). */
char *
vm_run_path(const struct vm *vm, const char *file)
{
	return xasprintf("%s/%s/%s", vm->d->conf->run_dir, vm->name, file);
}

char *
vm_state_path(const struct vm *vm, const char *file)
{
	return xasprintf("%s/%s/%s", vm->d->conf->state_dir, vm->name, file);
}

char *
vm_read_text(const char *path)
{
	char *cause = NULL, *text = cfg_read_file(path, CFG_FILE_MAX, NULL, &cause);

	free(cause);
	return text;
}

struct vm *
vm_new(struct daemon *d, struct vm_config *cfg)
{
	struct vm *vm = xcalloc(1, sizeof *vm);

	vm->d = d;
	vm->name = xstrdup(cfg->name);
	vm->cfg = cfg;
	vm->disk_text = vm_read_text(cfg->path);
	vm->pidfd = -1;
	vm->state = VM_STOPPED;
	snprintf(vm->qemu_status, sizeof vm->qemu_status, "none");
	return vm;
}

void
vm_set_config(struct vm *vm, struct vm_config *cfg)
{
	cfg_vm_free(vm->cfg);
	vm->cfg = cfg;
	free(vm->disk_text);
	vm->disk_text = cfg ? vm_read_text(cfg->path) : NULL;
}

bool
vm_update_config(struct vm *vm, struct vm_config *cfg)
{
	char *text = vm_read_text(cfg->path);
	bool changed = vm->cfg == NULL || vm->disk_text == NULL || text == NULL ||
	               strcmp(vm->disk_text, text) != 0;

	free(text);
	if (!changed) {
		cfg_vm_free(cfg);
		return false;
	}
	vm_set_config(vm, cfg);
	return true;
}

void
vm_reload_definition(struct vm *vm, bool running_matches)
{
	struct cfg_errors errs;
	struct vm_config *cfg;

	if (vm->cfg == NULL)
		return;
	cfg_errors_init(&errs);
	cfg = cfg_vm_load(vm->cfg->path, &errs);
	for (size_t i = 0; i < errs.n; i++)
		log_error("%s", errs.msgs[i]);
	cfg_errors_free(&errs);
	if (cfg == NULL)
		return;
	vm_set_config(vm, cfg);
	/* A persisted hot-plug makes the definition match the running QEMU again. */
	if (running_matches && vm_is_active(vm) && vm->disk_text) {
		free(vm->live_text);
		vm->live_text = xstrdup(vm->disk_text);
		rundir_save(vm);
	}
}

static void
qmp_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	qmp_conn_free(arg);
}

/* Drops the QMP connection; freed on the next loop turn (we may be inside its callback). */
static void
vm_drop_qmp(struct vm *vm)
{
	struct qmp_conn *conn = vm->qmp;

	if (conn == NULL)
		return;
	vm->qmp = NULL; /* its closed callback now finds it is no longer ours */
	qmp_conn_close(conn, "connection dropped by qvmd");
	event_base_once(vm->d->base, -1, EV_TIMEOUT, qmp_free_deferred, conn, NULL);
}

void
vm_crashed_while_away(struct vm *vm)
{
	if (vm->cfg != NULL && vm->cfg->restart != CFG_RESTART_NO)
		vm_schedule_restart(vm, true);
}

void
vm_detach(struct vm *vm)
{
	vm_hotplug_abort(vm, false);
	if (vm->job != NULL)
		vm_job_finish(vm, NULL, "failed", "vm %s: qvmd is exiting", vm->name);
	vm_drop_qmp(vm);
}

void
vm_free(struct vm *vm)
{
	if (vm == NULL)
		return;
	vm_hotplug_abort(vm, false);
	vm_devs_clear(vm);
	if (vm->job != NULL) {
		if (vm->job->timer)
			event_free(vm->job->timer);
		free(vm->job->waiters);
		free(vm->job->failed);
		free(vm->job);
	}
	if (vm->restart_ev)
		event_free(vm->restart_ev);
	if (vm->eof_timer)
		event_free(vm->eof_timer);
	if (vm->pid_ev)
		event_free(vm->pid_ev);
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	vm_drop_qmp(vm);
	cfg_vm_free(vm->cfg);
	cfg_vm_free(vm->live_cfg);
	free(vm->disk_text);
	free(vm->live_text);
	free(vm->last_exit);
	free(vm->name);
	free(vm);
}

void
vm_set_state(struct vm *vm, enum vm_state s)
{
	enum vm_state old = vm->state;
	struct json_object *ev;

	if (old == s)
		return;
	vm->state = s;
	log_info("vm %s: %s -> %s", vm->name, state_names[old], state_names[s]);
	ev = json_object_new_object();
	json_object_object_add(ev, "event", json_object_new_string("state"));
	json_object_object_add(ev, "vm", json_object_new_string(vm->name));
	json_object_object_add(ev, "state", json_object_new_string(state_names[s]));
	json_object_object_add(ev, "old", json_object_new_string(state_names[old]));
	json_object_object_add(ev, "ts", json_object_new_int64(daemon_now_ms()));
	daemon_publish(vm->d, vm->name, ev);
}

/* ---- jobs ---- */

struct vm_job *
vm_job_start(struct vm *vm, enum vm_job_kind kind, vm_done_cb cb, void *arg)
{
	struct vm_job *job = xcalloc(1, sizeof *job);

	job->kind = kind;
	job->cb = cb;
	job->arg = arg;
	job->t0 = daemon_mono_ms();
	vm->job = job;
	return job;
}

/* Ends the VM's current job and tells its requester (if still waiting). Takes result. */
void
vm_job_finish(struct vm *vm, struct json_object *result, const char *code, const char *fmt, ...)
{
	struct vm_job *job = vm->job;
	char *msg = NULL;
	va_list ap;

	if (job == NULL) {
		json_object_put(result);
		return;
	}
	vm->job = NULL;
	if (job->timer)
		event_free(job->timer);
	if (job->qmp_id > 0 && vm->qmp)
		qmp_cancel(vm->qmp, job->qmp_id);
	if (code != NULL) {
		va_start(ap, fmt);
		if (vasprintf(&msg, fmt, ap) < 0)
			fatal("out of memory");
		va_end(ap);
		log_warn("%s", msg);
	}
	for (size_t i = 0; i < job->nwaiters; i++)
		job->waiters[i].cb(result ? json_object_get(result) : NULL, code, msg,
		                   job->waiters[i].arg);
	if (job->cb)
		job->cb(result, code, msg, job->arg);
	else
		json_object_put(result);
	free(msg);
	free(job->waiters);
	free(job->failed); /* may be what fmt's argument pointed to: freed only now */
	free(job);
}

/* Adds a waiter to the VM's current job: told its outcome like the requester. */
static void
vm_job_join(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct vm_job *job = vm->job;

	job->waiters = xrealloc(job->waiters, (job->nwaiters + 1) * sizeof *job->waiters);
	job->waiters[job->nwaiters].cb = cb;
	job->waiters[job->nwaiters].arg = arg;
	job->nwaiters++;
}

/* Refuses a request when another job runs; returns true if refused. */
static bool
vm_refuse_busy(struct vm *vm, vm_done_cb cb, void *arg)
{
	char *msg;

	if (vm->job == NULL)
		return false;
	msg = xasprintf("vm %s: busy: %s in progress", vm->name, job_names[vm->job->kind]);
	cb(NULL, "busy", msg, arg);
	free(msg);
	return true;
}

static bool
vm_refuse_not_running(struct vm *vm, vm_done_cb cb, void *arg)
{
	char *msg;

	if ((vm->state == VM_RUNNING || vm->state == VM_PAUSED) && vm->qmp != NULL)
		return false;
	msg = xasprintf("vm %s: not running (state %s)", vm->name, state_names[vm->state]);
	cb(NULL, "not-running", msg, arg);
	free(msg);
	return true;
}

static void
job_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm *vm = arg;

	if (vm->job == NULL)
		return;
	switch (vm->job->kind) {
	case VM_JOB_START:
		if (vm->pid > 0)
			proc_pidfd_signal(vm->pidfd, SIGKILL);
		vm->job->failed = xasprintf("vm %s: qemu did not become ready within %d s",
		                            vm->name, START_TIMEOUT_MS / 1000);
		break;
	case VM_JOB_POWERDOWN:
	case VM_JOB_KILL:
		vm_escalate(vm);
		break;
	case VM_JOB_DETACH:
		vm_detach_timeout(vm);
		break;
	default:
		break;
	}
}

void
vm_job_arm_timer(struct vm *vm, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};

	if (vm->job->timer == NULL)
		vm->job->timer = evtimer_new(vm->d->base, job_timer_cb, vm);
	evtimer_add(vm->job->timer, &tv);
}

/* ---- process watching ---- */

static void
eof_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm *vm = arg;

	/* The process is gone; a QMP socket that never reports EOF is dead anyway. */
	if (vm->qmp)
		qmp_conn_close(vm->qmp, "qemu exited");
	vm->qmp_closed = true;
	vm_maybe_finalize(vm);
}

static void
pidfd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm *vm = arg;
	int status;

	if (vm->child && waitpid(vm->pid, &status, WNOHANG) == vm->pid) {
		vm->wstatus = status;
		vm->have_wstatus = true;
	}
	event_free(vm->pid_ev);
	vm->pid_ev = NULL;
	close(vm->pidfd);
	vm->pidfd = -1;
	vm->exited = true;
	log_debug("vm %s: qemu pid %d exited", vm->name, (int)vm->pid);
	if (vm->qmp != NULL && !vm->qmp_closed) {
		struct timeval tv = {QMP_EOF_GRACE_MS / 1000, 0};

		vm->eof_timer = evtimer_new(vm->d->base, eof_timer_cb, vm);
		evtimer_add(vm->eof_timer, &tv);
		return;
	}
	vm_maybe_finalize(vm);
}

void
vm_watch_pid(struct vm *vm)
{
	vm->pid_ev = event_new(vm->d->base, vm->pidfd, EV_READ, pidfd_cb, vm);
	event_add(vm->pid_ev, NULL);
}

/* Opens the QMP connection on an already-connected socket, or on the run directory's path. */
int
vm_open_qmp(struct vm *vm, int fd, char **cause)
{
	struct qmp_callbacks cbs = {vm_qmp_ready, vm_qmp_event, vm_qmp_closed, NULL, vm};
	char *path;
	int rc;

	if (log_enabled(CFG_LOG_DEBUG))
		cbs.trace = vm_qmp_trace;
	vm->qmp = qmp_conn_new(vm->d->base, &cbs);
	vm->qmp_closed = false;
	if (fd >= 0)
		return qmp_conn_connect_fd(vm->qmp, fd, cause);
	path = vm_run_path(vm, "qmp.sock");
	rc = qmp_conn_connect_path(vm->qmp, path, cause);
	free(path);
	return rc;
}

/* Describes how the process ended, and whether that was a clean exit. */
static char *
exit_reason(struct vm *vm, bool *clean)
{
	char *pidfile;
	bool left;

	if (vm->have_wstatus) {
		int st = vm->wstatus;

		if (WIFEXITED(st)) {
			*clean = WEXITSTATUS(st) == 0;
			return xasprintf("exited with status %d", WEXITSTATUS(st));
		}
		*clean = false;
		return xasprintf("killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	}
	/* Not our child (adopted): QEMU deletes its pidfile only when it exits cleanly. */
	pidfile = vm_run_path(vm, "qemu.pid");
	left = access(pidfile, F_OK) == 0;
	free(pidfile);
	*clean = !left;
	return xstrdup(left ? "died (pidfile left behind)" : "exited cleanly");
}

/* Called when both the exit and QMP EOF have been seen: the VM is down. */
static void
vm_maybe_finalize(struct vm *vm)
{
	struct vm_job *job = vm->job;
	struct json_object *res;
	char *reason, *tail, *log;
	bool clean, crashed = false, restart = false;
	const char *ended_by;
	enum cfg_restart policy;

	if (!vm->exited || (vm->qmp != NULL && !vm->qmp_closed))
		return;
	vm->exited = false; /* accounted for: later calls are no-ops */
	if (vm->eof_timer) {
		event_free(vm->eof_timer);
		vm->eof_timer = NULL;
	}
	reason = exit_reason(vm, &clean);
	log = vm_state_path(vm, "qemu.log");
	tail = proc_file_tail(log, vm->log_offset, 600);
	free(log);
	vm_hotplug_abort(vm, true);
	vm_drop_qmp(vm);
	rundir_remove(vm);
	vm_devs_clear(vm);
	vm->pid = 0;
	vm->child = false;
	snprintf(vm->qemu_status, sizeof vm->qemu_status, "none");
	policy = vm->live_cfg ? vm->live_cfg->restart : CFG_RESTART_NO;

	if (job != NULL && job->kind == VM_JOB_START) {
		vm_set_state(vm, VM_STOPPED);
		free(vm->last_exit);
		vm->last_exit = xasprintf("qemu %s during start", reason);
		if (job->failed)
			vm_job_finish(vm, NULL, "failed", "%s", job->failed);
		else
			vm_job_finish(vm, NULL, "failed", "vm %s: qemu %s during start%s%s",
			              vm->name, reason, *tail ? ": " : "", tail);
		goto out;
	}
	if (job != NULL && (job->kind == VM_JOB_POWERDOWN || job->kind == VM_JOB_KILL)) {
		int64_t elapsed = daemon_mono_ms() - job->t0;

		/* QEMU dying on its own before the guest or an escalation step ended it. */
		if (job->step == 0 && !clean && !vm->shutdown_seen)
			ended_by = "crash";
		else
			ended_by = step_names[job->step];
		free(vm->last_exit);
		vm->last_exit = xasprintf("%s (ended by %s)", reason, ended_by);
		vm_set_state(vm, VM_STOPPED);
		log_info("vm %s: stopped after %lld ms, ended by %s", vm->name, (long long)elapsed,
		         ended_by);
		res = json_object_new_object();
		json_object_object_add(res, "state", json_object_new_string("stopped"));
		json_object_object_add(res, "ended_by", json_object_new_string(ended_by));
		json_object_object_add(res, "elapsed_ms", json_object_new_int64(elapsed));
		if (job->resumed)
			json_object_object_add(res, "resumed", json_object_new_boolean(1));
		vm_job_finish(vm, res, NULL, NULL);
		goto out;
	}
	if (job != NULL)
		vm_job_finish(vm, NULL, "failed", "vm %s: qemu %s", vm->name, reason);

	free(vm->last_exit);
	if (vm->shutdown_seen && clean) {
		vm->last_exit = xasprintf("shut down (%s), %s", vm->shutdown_reason, reason);
		restart = vm->shutdown_guest && policy == CFG_RESTART_ALWAYS;
		vm_set_state(vm, VM_STOPPED);
	} else {
		vm->last_exit = *tail ? xasprintf("%s: %s", reason, tail) : xstrdup(reason);
		crashed = true;
		restart = policy != CFG_RESTART_NO;
		log_error("vm %s: qemu %s%s%s", vm->name, reason, *tail ? ": " : "", tail);
		vm_set_state(vm, VM_CRASHED);
	}
	if (restart)
		vm_schedule_restart(vm, crashed);
out:
	free(reason);
	free(tail);
	if (vm->cfg == NULL && !vm_is_active(vm) && vm->job == NULL)
		daemon_vm_gone(vm->d, vm);
}

/* ---- QMP callbacks ---- */

static void
vm_qmp_trace(struct qmp_conn *conn, const char *dir, const char *buf, size_t len, void *arg)
{
	struct vm *vm = arg;

	log_debug("vm %s: qmp %s %.*s", vm->name, dir, (int)(len > 1024 ? 1024 : len), buf);
}

static void
cont_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;
	struct json_object *res;

	if (vm->job == NULL || vm->job->kind != VM_JOB_START)
		return;
	vm->job->qmp_id = 0;
	if (r->status != QMP_OK) {
		vm->job->failed = xasprintf("vm %s: cont failed: %s", vm->name, r->error_desc);
		proc_pidfd_signal(vm->pidfd, SIGKILL);
		return;
	}
	snprintf(vm->qemu_status, sizeof vm->qemu_status, "running");
	vm->start_mono = daemon_mono_ms();
	vm_set_state(vm, VM_RUNNING);
	res = json_object_new_object();
	json_object_object_add(res, "state", json_object_new_string("running"));
	json_object_object_add(res, "pid", json_object_new_int(vm->pid));
	vm_job_finish(vm, res, NULL, NULL);
}

static void
ignore_reply(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;

	if (r->status != QMP_OK)
		log_warn("vm %s: %s failed: %s", vm->name, r->command, r->error_desc);
}

static void
adopt_status_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;
	struct json_object *st;

	if (r->status != QMP_OK || !json_object_object_get_ex(r->result, "status", &st))
		return;
	snprintf(vm->qemu_status, sizeof vm->qemu_status, "%s", json_object_get_string(st));
	if (vm->state == VM_RUNNING && strcmp(vm->qemu_status, "paused") == 0)
		vm_set_state(vm, VM_PAUSED);
	/* qvmd died between spawning QEMU (-S) and `cont`: finish that start now. */
	if (strcmp(vm->qemu_status, "prelaunch") == 0) {
		char *cause = NULL;

		log_info(
		    "vm %s: was left paused before its first instruction; continuing the start",
		    vm->name);
		qmp_execute(conn, "cont", NULL, 0, ignore_reply, vm, &cause);
		free(cause);
	}
}

static void
vm_qmp_ready(struct qmp_conn *conn, void *arg)
{
	struct vm *vm = arg;
	char *cause = NULL;

	if (vm->job != NULL && vm->job->kind == VM_JOB_START) {
		vm->job->qmp_id = qmp_execute(conn, "cont", NULL, 0, cont_done, vm, &cause);
		free(cause);
		return;
	}
	/* Adopted after a daemon restart: learn whether the guest runs or is paused, and what
	 * became of hot-plugs that were in flight or pending. */
	qmp_execute(conn, "query-status", NULL, STATUS_TIMEOUT_MS, adopt_status_done, vm, &cause);
	free(cause);
	vm_hotplug_reconcile(vm);
}

static void
vm_qmp_event(struct qmp_conn *conn, const char *name, struct json_object *data, int64_t sec,
             int64_t usec, void *arg)
{
	struct vm *vm = arg;
	struct json_object *ev, *v;

	if (strcmp(name, "SHUTDOWN") == 0) {
		vm->shutdown_seen = true;
		vm->shutdown_guest =
		    json_object_object_get_ex(data, "guest", &v) && json_object_get_boolean(v);
		snprintf(vm->shutdown_reason, sizeof vm->shutdown_reason, "%s",
		         json_object_object_get_ex(data, "reason", &v) ? json_object_get_string(v)
		                                                       : "unknown");
		log_info("vm %s: qemu reports shutdown (%s)", vm->name, vm->shutdown_reason);
	} else if (strcmp(name, "STOP") == 0) {
		snprintf(vm->qemu_status, sizeof vm->qemu_status, "paused");
		if (vm->state == VM_RUNNING)
			vm_set_state(vm, VM_PAUSED);
	} else if (strcmp(name, "RESUME") == 0) {
		snprintf(vm->qemu_status, sizeof vm->qemu_status, "running");
		if (vm->state == VM_PAUSED)
			vm_set_state(vm, VM_RUNNING);
	}
	vm_hotplug_event(vm, name, data);

	ev = json_object_new_object();
	json_object_object_add(ev, "event", json_object_new_string("qmp"));
	json_object_object_add(ev, "vm", json_object_new_string(vm->name));
	json_object_object_add(ev, "name", json_object_new_string(name));
	json_object_object_add(ev, "data", data ? json_object_get(data) : NULL);
	json_object_object_add(ev, "ts", json_object_new_int64(sec * 1000 + usec / 1000));
	daemon_publish(vm->d, vm->name, ev);
}

static void
vm_qmp_closed(struct qmp_conn *conn, const char *cause, void *arg)
{
	struct vm *vm = arg;

	if (conn != vm->qmp)
		return;
	vm->qmp_closed = true;
	log_debug("vm %s: qmp connection closed: %s", vm->name, cause);
	vm_maybe_finalize(vm);
}

/* ---- start ---- */

static int
mkdir_p(const char *path, mode_t mode)
{
	char *p = xstrdup(path);
	int rc = 0;

	for (char *s = p + 1; *s && rc == 0; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			rc = -1;
		*s = '/';
	}
	if (rc == 0 && mkdir(p, mode) < 0 && errno != EEXIST)
		rc = -1;
	free(p);
	return rc;
}

/* Creates the listening QMP socket QEMU will inherit. Returns the fd or -1 with *cause. */
static int
qmp_listen(const char *path, char **cause)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof sun.sun_path) {
		*cause = xasprintf("socket path too long: %s", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 || listen(fd, 4) < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int
qmp_dial(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd;

	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0 && errno != EINPROGRESS &&
	    errno != EAGAIN) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Fails a start before QEMU was spawned. */
static void
start_fail(struct vm *vm, const char *code, char *msg)
{
	vm_set_state(vm, VM_STOPPED);
	free(vm->last_exit);
	vm->last_exit = xasprintf("start failed: %s", msg);
	vm_job_finish(vm, NULL, code, "vm %s: %s", vm->name, msg);
	free(msg);
	if (vm->cfg == NULL)
		daemon_vm_gone(vm->d, vm);
}

/* Spawns QEMU once the disk images exist. */
static void
start_spawn(struct vm *vm)
{
	struct daemon_config *conf = vm->d->conf;
	struct argv_env env = {conf->qemu, conf->run_dir, conf->state_dir, conf->ovmf_code,
	                       -1,         NULL};
	char *sock = vm_run_path(vm, "qmp.sock"), *pidfile = vm_run_path(vm, "qemu.pid");
	char *logpath = vm_state_path(vm, "qemu.log");
	char *cause = NULL, **argv = NULL;
	int lfd = -1, logfd = -1, cfd = -1, *net_fds = NULL;
	int keep[64];
	size_t nkeep = 0;
	struct stat st;

	if (vm_prepare_firmware(vm, &cause) < 0)
		goto fail;
	lfd = qmp_listen(sock, &cause);
	if (lfd < 0)
		goto fail;
	keep[nkeep++] = lfd;
	env.qmp_fd = lfd;
	net_fds = xcalloc(vm->live_cfg->nnets + 1, sizeof *net_fds);
	if (vm_open_taps(vm, net_fds, keep, &nkeep, &cause) < 0)
		goto fail;
	env.net_fds = net_fds;
	argv = argv_build(vm->live_cfg, &env, &cause);
	if (argv == NULL)
		goto fail;
	logfd = open(logpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (logfd < 0) {
		cause = xasprintf("%s: %s", logpath, strerror(errno));
		goto fail;
	}
	vm->log_offset = fstat(logfd, &st) == 0 ? (long)st.st_size : 0;
	unlink(pidfile);
	vm->pid = proc_spawn(argv, logfd, keep, nkeep, &vm->pidfd, &cause);
	if (vm->pid < 0) {
		vm->pid = 0;
		goto fail;
	}
	vm->child = true;
	vm->exited = false;
	vm->have_wstatus = false;
	vm->started_at = daemon_now_ms();
	vm->start_mono = daemon_mono_ms();
	proc_starttime(vm->pid, &vm->starttime);
	log_info("vm %s: qemu started, pid %d", vm->name, (int)vm->pid);
	vm_watch_pid(vm);
	vm_devs_init(vm);
	rundir_save(vm);
	vm_devs_save(vm);
	/* Connect while we still hold the listening socket: the connection waits in its backlog
	 * until QEMU accepts it, and fails at once if QEMU dies first (the socket then has no
	 * holder). */
	cfd = qmp_dial(sock);
	if (cfd < 0 || vm_open_qmp(vm, cfd, &cause) < 0) {
		if (cause == NULL)
			cause = xasprintf("connect %s: %s", sock, strerror(errno));
		vm->job->failed = xasprintf("vm %s: %s", vm->name, cause);
		free(cause);
		cause = NULL;
		proc_pidfd_signal(vm->pidfd, SIGKILL);
	}
	vm_job_arm_timer(vm, START_TIMEOUT_MS);
	goto out;
fail:
	start_fail(vm, "failed", cause);
out:
	for (size_t i = 0; i < nkeep; i++)
		close(keep[i]);
	if (logfd >= 0)
		close(logfd);
	argv_free(argv);
	free(net_fds);
	free(sock);
	free(pidfile);
	free(logpath);
}

/* Called by the image creator when every missing image exists (or one failed). */
void
vm_images_done(struct vm *vm, char *error)
{
	if (vm->job == NULL || vm->job->kind != VM_JOB_START)
		return free(error);
	if (error != NULL)
		return start_fail(vm, "failed", error);
	start_spawn(vm);
}

/*
 * A start runs what the file says now: the definition is read again, and a file with errors is
 * refused with them (never the last good definition, silently). Returns false (and replies) when
 * refused.
 */
static bool
vm_refresh_definition(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct cfg_errors errs;
	struct vm_config *cfg;
	char *msg, *list = NULL;

	if (vm->cfg == NULL)
		return true; /* refused below */
	cfg_errors_init(&errs);
	cfg = cfg_vm_load(vm->cfg->path, &errs);
	if (cfg != NULL) {
		cfg_errors_free(&errs);
		vm_update_config(vm, cfg);
		return true;
	}
	for (size_t i = 0; i < errs.n; i++) {
		char *l = xasprintf("%s%s%s", list ? list : "", list ? "; " : "", errs.msgs[i]);

		free(list);
		list = l;
	}
	msg =
	    xasprintf("vm %s: the definition has errors: %s", vm->name, list ? list : "unreadable");
	cb(NULL, "invalid", msg, arg);
	free(msg);
	free(list);
	cfg_errors_free(&errs);
	return false;
}

/*
 * Whether a QEMU of this VM still runs although the books say none does (a run directory qvmd
 * did not adopt, or books lost): QEMU holds a lock on its pidfile for its whole life. If so, qvmd
 * re-attaches to it instead of starting a second QEMU on the same disks.
 */
static bool
vm_found_running(struct vm *vm, vm_done_cb cb, void *arg)
{
	char *pidfile = vm_run_path(vm, "qemu.pid"), *msg;
	pid_t owner = proc_pidfile_owner(pidfile);

	free(pidfile);
	if (owner <= 0)
		return false;
	if (vm_adopt(vm))
		msg = xasprintf("vm %s: already running (qemu pid %d, re-attached)", vm->name,
		                (int)vm->pid);
	else
		msg = xasprintf("vm %s: a qemu (pid %d) holds its pidfile but cannot be "
		                "re-attached; not starting a second one",
		                vm->name, (int)owner);
	log_warn("%s", msg);
	cb(NULL, "already-running", msg, arg);
	free(msg);
	return true;
}

static void vm_start_job(struct vm *vm, vm_done_cb cb, void *arg);

void
vm_start(struct vm *vm, vm_done_cb cb, void *arg)
{
	if (vm_refuse_busy(vm, cb, arg))
		return;
	/* An operator's start is a fresh start: the restart policy counts from zero again. */
	if (!vm_is_active(vm))
		vm->restart_attempts = 0;
	vm_start_job(vm, cb, arg);
}

/* Starts the VM (an operator's start or the restart policy's). */
static void
vm_start_job(struct vm *vm, vm_done_cb cb, void *arg)
{
	char *msg, *dir;

	if (vm_refuse_busy(vm, cb, arg))
		return;
	if (!vm_is_active(vm) && !vm_refresh_definition(vm, cb, arg))
		return;
	if (!vm_is_active(vm) && vm_found_running(vm, cb, arg))
		return;
	if (vm->cfg == NULL || vm_is_active(vm)) {
		msg = vm->cfg == NULL
		          ? xasprintf("vm %s: definition was removed", vm->name)
		          : xasprintf("vm %s: already %s", vm->name, state_names[vm->state]);
		cb(NULL, vm->cfg == NULL ? "not-found" : "already-running", msg, arg);
		free(msg);
		return;
	}
	if (vm->restart_ev)
		evtimer_del(vm->restart_ev);
	vm_job_start(vm, VM_JOB_START, cb, arg);
	cfg_vm_free(vm->live_cfg);
	vm->live_cfg = cfg_vm_dup(vm->cfg);
	free(vm->live_text);
	vm->live_text = vm->disk_text ? xstrdup(vm->disk_text) : NULL;
	vm->shutdown_seen = false;
	vm->shutdown_guest = false;
	vm->qmp_closed = false;
	vm_set_state(vm, VM_STARTING);

	dir = vm_run_path(vm, "");
	if (mkdir_p(dir, 0700) < 0) {
		start_fail(vm, "failed", xasprintf("cannot create %s: %s", dir, strerror(errno)));
		free(dir);
		return;
	}
	free(dir);
	dir = vm_state_path(vm, "");
	if (mkdir_p(dir, 0750) < 0) {
		start_fail(vm, "failed", xasprintf("cannot create %s: %s", dir, strerror(errno)));
		free(dir);
		return;
	}
	free(dir);
	vm_create_images(vm);
}

/* ---- powerdown and kill ---- */

static void
escalate_quit_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;

	if (vm->job)
		vm->job->qmp_id = 0;
}

/* Takes the next step towards a stopped QEMU: quit, then SIGTERM, then SIGKILL. */
static void
vm_escalate(struct vm *vm)
{
	struct vm_job *job = vm->job;
	char *cause = NULL;
	uint64_t wait = job->kind == VM_JOB_KILL ? 1000 : 5000;

	job->step++;
	if (job->step == 1 && (vm->qmp == NULL || vm->qmp_closed))
		job->step = 2;
	switch (job->step) {
	case 1:
		log_warn("vm %s: %s: sending quit", vm->name,
		         job->kind == VM_JOB_KILL ? "kill" : "guest ignored powerdown");
		job->qmp_id =
		    qmp_execute(vm->qmp, "quit", NULL, (int)wait, escalate_quit_done, vm, &cause);
		free(cause);
		break;
	case 2:
		log_warn("vm %s: sending SIGTERM to qemu pid %d", vm->name, (int)vm->pid);
		proc_pidfd_signal(vm->pidfd, SIGCONT);
		proc_pidfd_signal(vm->pidfd, SIGTERM);
		break;
	default:
		job->step = 3;
		log_warn("vm %s: sending SIGKILL to qemu pid %d", vm->name, (int)vm->pid);
		proc_pidfd_signal(vm->pidfd, SIGKILL);
		return; /* the exit always comes */
	}
	vm_job_arm_timer(vm, wait);
}

static void
powerdown_sent(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;
	struct vm_job *job = vm->job;
	struct json_object *res;

	if (job == NULL || job->kind != VM_JOB_POWERDOWN)
		return;
	job->qmp_id = 0;
	if (r->status != QMP_OK) {
		log_warn("vm %s: system_powerdown failed: %s", vm->name, r->error_desc);
		if (job->step == 0)
			vm_escalate(vm);
		return;
	}
	if (!job->wait && job->cb) {
		res = json_object_new_object();
		json_object_object_add(res, "state", json_object_new_string("stopping"));
		job->cb(res, NULL, NULL, job->arg);
		job->cb = NULL;
	}
}

static void
powerdown_cont_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;

	if (r->status != QMP_OK)
		log_warn("vm %s: cont before powerdown failed: %s", vm->name, r->error_desc);
}

void
vm_powerdown(struct vm *vm, uint64_t timeout_ms, bool wait, vm_done_cb cb, void *arg)
{
	struct vm_job *job;
	char *cause = NULL;

	if (vm_refuse_busy(vm, cb, arg) || vm_refuse_not_running(vm, cb, arg))
		return;
	job = vm_job_start(vm, VM_JOB_POWERDOWN, cb, arg);
	job->wait = wait;
	job->timeout_ms = timeout_ms ? timeout_ms : vm->live_cfg->shutdown_timeout_ms;
	/* A paused guest never sees the ACPI event: it is resumed first (one pipeline: QEMU runs
	 * cont, then system_powerdown), and the reply says so. */
	job->resumed = vm->state == VM_PAUSED;
	vm_set_state(vm, VM_STOPPING);
	log_info("vm %s: powerdown (timeout %llu ms)%s", vm->name,
	         (unsigned long long)job->timeout_ms, job->resumed ? ", resuming it first" : "");
	if (job->resumed &&
	    qmp_execute(vm->qmp, "cont", NULL, 0, powerdown_cont_done, vm, &cause) < 0) {
		free(cause);
		cause = NULL;
	}
	job->qmp_id = qmp_execute(vm->qmp, "system_powerdown", NULL, 0, powerdown_sent, vm, &cause);
	if (job->qmp_id < 0) {
		free(cause);
		vm_escalate(vm);
		return;
	}
	vm_job_arm_timer(vm, job->timeout_ms);
}

/* bring_down: one VM of a host shutdown (powerdown --all), waiting for whatever it does first. */
struct bring_down {
	struct vm *vm;
	uint64_t timeout_ms;
	vm_done_cb cb;
	void *arg;
};

static void
bring_down_next(struct json_object *result, const char *code, const char *message, void *arg)
{
	struct bring_down *bd = arg;
	struct vm *vm = bd->vm;
	vm_done_cb cb = bd->cb;
	void *cbarg = bd->arg;
	uint64_t timeout_ms = bd->timeout_ms;

	json_object_put(result);
	free(bd);
	/* The job it waited for (start, reset, hot-plug ...) is over: power down what runs now. */
	if (!vm_bring_down(vm, timeout_ms, cb, cbarg)) {
		struct json_object *res = json_object_new_object();

		json_object_object_add(res, "state",
		                       json_object_new_string(state_names[vm->state]));
		json_object_object_add(res, "ended_by", NULL);
		cb(res, NULL, NULL, cbarg);
	}
}

bool
vm_bring_down(struct vm *vm, uint64_t timeout_ms, vm_done_cb cb, void *arg)
{
	struct vm_job *job = vm->job;

	if (vm->restart_ev != NULL && evtimer_pending(vm->restart_ev, NULL) && !vm_is_active(vm)) {
		struct json_object *res = json_object_new_object();

		evtimer_del(vm->restart_ev);
		log_info("vm %s: pending restart cancelled (powerdown of every vm)", vm->name);
		json_object_object_add(res, "state",
		                       json_object_new_string(state_names[vm->state]));
		json_object_object_add(res, "ended_by",
		                       json_object_new_string("restart-cancelled"));
		cb(res, NULL, NULL, arg);
		return true;
	}
	if (job == NULL) {
		if (!vm_is_active(vm))
			return false;
		vm_powerdown(vm, timeout_ms, true, cb, arg);
		return true;
	}
	if (job->kind == VM_JOB_POWERDOWN || job->kind == VM_JOB_KILL) {
		uint64_t limit = timeout_ms ? timeout_ms : vm->live_cfg->shutdown_timeout_ms;
		int64_t left = job->t0 + (int64_t)limit - daemon_mono_ms();

		/* Join it; the shorter of the two timeouts wins. */
		if (job->kind == VM_JOB_POWERDOWN && job->step == 0 && limit < job->timeout_ms) {
			job->timeout_ms = limit;
			vm_job_arm_timer(vm, left > 0 ? (uint64_t)left : 0);
		}
		vm_job_join(vm, cb, arg);
		return true;
	}
	{
		struct bring_down *bd = xcalloc(1, sizeof *bd);

		bd->vm = vm;
		bd->timeout_ms = timeout_ms;
		bd->cb = cb;
		bd->arg = arg;
		vm_job_join(vm, bring_down_next, bd);
	}
	return true;
}

void
vm_kill(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct vm_job *job;
	char *msg;

	if (vm->pid <= 0 || vm->exited) {
		if (vm->job == NULL || vm->pid <= 0) {
			msg = xasprintf("vm %s: not running (state %s)", vm->name,
			                state_names[vm->state]);
			cb(NULL, vm->job ? "busy" : "not-running", msg, arg);
			free(msg);
			return;
		}
	}
	if (vm->job != NULL && vm->job->kind == VM_JOB_KILL)
		return (void)vm_refuse_busy(vm, cb, arg);
	/* kill is the operator's way out of anything stuck: it takes over whatever job runs. */
	if (vm->job != NULL && vm->job->kind == VM_JOB_POWERDOWN) {
		vm->job->kind = VM_JOB_KILL;
		if (vm->job->cb)
			vm->job->cb(NULL, "failed", "powerdown interrupted by kill", vm->job->arg);
		vm->job->cb = cb;
		vm->job->arg = arg;
		vm_escalate(vm);
		return;
	}
	if (vm->job != NULL)
		vm_job_finish(vm, NULL, "failed", "vm %s: %s interrupted by kill", vm->name,
		              job_names[vm->job->kind]);
	job = vm_job_start(vm, VM_JOB_KILL, cb, arg);
	vm_set_state(vm, VM_STOPPING);
	log_info("vm %s: kill", vm->name);
	vm_escalate(vm);
	(void)job;
}

/* ---- simple QMP jobs: reset, pause, resume ---- */

static void
simple_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;
	struct json_object *res;

	if (vm->job == NULL)
		return;
	vm->job->qmp_id = 0;
	if (r->status == QMP_TIMEOUT) {
		vm_job_finish(vm, NULL, "timeout", "vm %s: %s timed out", vm->name, r->command);
		return;
	}
	if (r->status != QMP_OK) {
		vm_job_finish(vm, NULL, r->status == QMP_ERROR ? "qemu-error" : "failed",
		              "vm %s: %s failed: %s", vm->name, r->command, r->error_desc);
		return;
	}
	if (vm->job->kind == VM_JOB_PAUSE) {
		snprintf(vm->qemu_status, sizeof vm->qemu_status, "paused");
		vm_set_state(vm, VM_PAUSED);
	} else if (vm->job->kind == VM_JOB_RESUME) {
		snprintf(vm->qemu_status, sizeof vm->qemu_status, "running");
		vm_set_state(vm, VM_RUNNING);
	}
	res = json_object_new_object();
	json_object_object_add(res, "state", json_object_new_string(state_names[vm->state]));
	vm_job_finish(vm, res, NULL, NULL);
}

static void
simple_job(struct vm *vm, enum vm_job_kind kind, const char *command, vm_done_cb cb, void *arg)
{
	char *cause = NULL;

	if (vm_refuse_busy(vm, cb, arg) || vm_refuse_not_running(vm, cb, arg))
		return;
	vm_job_start(vm, kind, cb, arg);
	log_info("vm %s: %s", vm->name, job_names[kind]);
	vm->job->qmp_id = qmp_execute(vm->qmp, command, NULL, 0, simple_done, vm, &cause);
	if (vm->job->qmp_id < 0) {
		vm_job_finish(vm, NULL, "failed", "vm %s: %s", vm->name, cause);
		free(cause);
	}
}

void
vm_reset(struct vm *vm, vm_done_cb cb, void *arg)
{
	simple_job(vm, VM_JOB_RESET, "system_reset", cb, arg);
}

void
vm_pause(struct vm *vm, vm_done_cb cb, void *arg)
{
	simple_job(vm, VM_JOB_PAUSE, "stop", cb, arg);
}

void
vm_resume(struct vm *vm, vm_done_cb cb, void *arg)
{
	simple_job(vm, VM_JOB_RESUME, "cont", cb, arg);
}

/* ---- restart policy ---- */

static void
restart_done(struct json_object *result, const char *code, const char *message, void *arg)
{
	struct vm *vm = arg;

	json_object_put(result);
	if (code == NULL || vm_is_active(vm))
		return; /* started, or found running and re-attached */
	log_error("vm %s: restart failed: %s", vm->name, message);
	vm_set_state(vm, VM_CRASHED);
	vm_schedule_restart(vm, true);
}

static void
restart_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm *vm = arg;

	if (vm_is_active(vm) || vm->job != NULL || vm->cfg == NULL)
		return;
	vm->restarts++;
	log_info("vm %s: restarting (attempt %u of %u)", vm->name, vm->restart_attempts,
	         vm->cfg->restart_limit);
	vm_start_job(vm, restart_done, vm);
}

void
vm_schedule_restart(struct vm *vm, bool crashed)
{
	const struct vm_config *cfg = vm->cfg ? vm->cfg : vm->live_cfg;
	uint64_t delay;
	struct timeval tv;

	if (cfg == NULL || vm->cfg == NULL || vm->d->stopping)
		return;
	if (vm->d->restarts_held > 0) {
		log_info("vm %s: no restart: every vm is being powered down", vm->name);
		return;
	}
	if (vm->start_mono > 0 && daemon_mono_ms() - vm->start_mono >= RESTART_RESET_MS)
		vm->restart_attempts = 0;
	if (vm->restart_attempts >= cfg->restart_limit) {
		char *old = vm->last_exit;

		vm->last_exit = xasprintf("%s; restart limit (%u) reached", old ? old : "crashed",
		                          cfg->restart_limit);
		free(old);
		log_error("vm %s: restart limit (%u) reached, staying %s", vm->name,
		          cfg->restart_limit, state_names[vm->state]);
		return;
	}
	delay = 1000ull << (vm->restart_attempts < 6 ? vm->restart_attempts : 6);
	if (delay > RESTART_MAX_DELAY_MS)
		delay = RESTART_MAX_DELAY_MS;
	vm->restart_attempts++;
	if (vm->restart_ev == NULL)
		vm->restart_ev = evtimer_new(vm->d->base, restart_cb, vm);
	tv.tv_sec = (time_t)(delay / 1000);
	tv.tv_usec = (suseconds_t)(delay % 1000) * 1000;
	evtimer_add(vm->restart_ev, &tv);
	vm->restart_due = daemon_mono_ms() + (int64_t)delay;
	log_info("vm %s: restart in %llu ms (restart = %s)", vm->name, (unsigned long long)delay,
	         crashed ? "after crash" : "always");
}
