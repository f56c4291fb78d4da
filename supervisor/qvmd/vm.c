/*
 * The VM object: its definitions, its state, its QEMU process and its QMP connection. States:
 * stopped -> starting -> running | paused -> stopping -> stopped, plus crashed. A VM is down only
 * when both its process exit (pidfd) and QMP EOF have been seen; then every job still running is
 * told (vm_jobs_qemu_gone), and the exit is either one a job asked for (powerdown, kill, a failed
 * start) or a shutdown or crash that the restart policy looks at. What changes the VM lives
 * elsewhere: vm_start.c, vm_power.c, vm_hotplug.c, vm_adopt.c; the job model in vm_job.c.
 */
#include "vm.h"
#include "vm_job.h"
#include "vm_private.h"
#include "vm_vnc.h"

#include "cfg.h"
#include "clock.h"
#include "log.h"
#include "proc.h"
#include "qmp.h"

#include <event2/event.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define QMP_EOF_GRACE_MS 2000 /* exit seen, waiting for QMP EOF */

static const char *const state_names[] = {"stopped", "starting", "running",
                                          "paused",  "stopping", "crashed"};

static void vm_maybe_finalize(struct vm *vm);

const char *
vm_state_name(enum vm_state s)
{
	return state_names[s];
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

enum proto_err
vm_qmp_err(const struct qmp_reply *r)
{
	switch (r->status) {
	case QMP_OK:
		return PROTO_OK;
	case QMP_ERROR:
		return PROTO_ERR_QEMU;
	case QMP_TIMEOUT:
		return PROTO_ERR_TIMEOUT;
	default:
		return PROTO_ERR_FAILED;
	}
}

/* Path of a file in this VM's run directory (caller frees). */
char *
vm_run_path(const struct vm *vm, const char *file)
{
	return xasprintf("%s/%s/%s", vm->env.conf->run_dir, vm->name, file);
}

char *
vm_state_path(const struct vm *vm, const char *file)
{
	return xasprintf("%s/%s/%s", vm->env.conf->state_dir, vm->name, file);
}

char *
vm_read_text(const char *path)
{
	char *cause = NULL, *text = cfg_read_file(path, CFG_FILE_MAX, NULL, &cause);

	free(cause);
	return text;
}

struct vm *
vm_new(const struct vm_env *env, struct vm_config *cfg)
{
	struct vm *vm = xcalloc(1, sizeof *vm);

	vm->env = *env;
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
	/* What the definition means, not its text: a comment is no change. */
	bool changed =
	    vm->cfg == NULL || !cfg_vm_equal(vm->cfg, cfg) || strcmp(vm->cfg->path, cfg->path) != 0;

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
		char *path = vm->live_cfg ? xstrdup(vm->live_cfg->path) : NULL;

		free(vm->live_text);
		vm->live_text = xstrdup(vm->disk_text);
		cfg_vm_free(vm->live_cfg);
		vm->live_cfg = cfg_vm_dup(vm->cfg);
		if (path != NULL) {
			free(vm->live_cfg->path);
			vm->live_cfg->path = path;
		}
		vm_media_load(vm); /* the drives hold what they hold, whatever the file says */
		rundir_save(vm);
	}
}

void
vm_publish(struct vm *vm, struct json_object *ev)
{
	vm->env.publish(vm->env.arg, vm->name, ev);
}

void
vm_event(struct vm *vm, const char *event, struct json_object *fields)
{
	struct json_object *ev = json_object_new_object();

	json_object_object_add(ev, "event", json_object_new_string(event));
	json_object_object_add(ev, "vm", json_object_new_string(vm->name));
	json_object_object_foreach(fields, key, val)
	{
		json_object_object_add(ev, key, json_object_get(val));
	}
	json_object_put(fields);
	json_object_object_add(ev, "ts", json_object_new_int64(clock_now_ms()));
	vm_publish(vm, ev);
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
	json_object_object_add(ev, "ts", json_object_new_int64(clock_now_ms()));
	vm_publish(vm, ev);
}

void
vm_set_last_exit(struct vm *vm, const struct vm_exit *exit, const char *cause, char *text)
{
	free(vm->last_exit.text);
	vm->last_exit.kind = exit != NULL ? exit->kind : VM_EXIT_NONE;
	vm->last_exit.value = exit != NULL ? exit->value : 0;
	vm->last_exit.cause = cause;
	vm->last_exit.text = text;
}

struct json_object *
vm_last_exit_json(const struct vm *vm)
{
	static const char *const kinds[] = {"none", "exit", "signal", "unknown"};
	const struct vm_last_exit *le = &vm->last_exit;
	struct json_object *o;

	if (le->text == NULL)
		return NULL;
	o = json_object_new_object();
	json_object_object_add(o, "kind", json_object_new_string(kinds[le->kind]));
	if (le->kind == VM_EXIT_STATUS)
		json_object_object_add(o, "code", json_object_new_int(le->value));
	if (le->kind == VM_EXIT_SIGNAL)
		json_object_object_add(o, "signal", json_object_new_int(le->value));
	json_object_object_add(o, "cause", json_object_new_string(le->cause));
	json_object_object_add(o, "text", json_object_new_string(le->text));
	return o;
}

void
vm_check_gone(struct vm *vm)
{
	if (vm->cfg == NULL && !vm_is_active(vm) && vm->job == NULL && vm->bg == NULL)
		vm->env.gone(vm->env.arg, vm);
}

static void
qmp_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	qmp_conn_free(arg);
}

/* Drops the QMP connection; freed on the next loop turn (we may be inside its callback). Pending
 * commands fail (their callbacks run) as the connection closes. */
static void
vm_drop_qmp(struct vm *vm)
{
	struct qmp_conn *conn = vm->qmp;

	if (conn == NULL)
		return;
	vm->qmp = NULL; /* its closed callback now finds it is no longer ours */
	qmp_conn_close(conn, "connection dropped by qvmd");
	event_base_once(vm->env.base, -1, EV_TIMEOUT, qmp_free_deferred, conn, NULL);
}

void
vm_detach(struct vm *vm)
{
	/* Jobs end first: their QMP commands are cancelled before the connection goes. */
	vm_jobs_abort(vm, PROTO_ERR_FAILED, "qvmd is exiting");
	vm_vnc_close(vm);
	vm_drop_qmp(vm);
}

void
vm_free(struct vm *vm)
{
	if (vm == NULL)
		return;
	vm_jobs_abort(vm, PROTO_ERR_FAILED, "the vm is being removed");
	vm_vnc_close(vm);
	vm_devs_clear(vm);
	vm_jobrecs_free(vm);
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
	free(vm->last_exit.text);
	free(vm->name);
	free(vm);
}

/* ---- QMP ---- */

static void
vm_qmp_trace(struct qmp_conn *conn, const char *dir, const char *buf, size_t len, void *arg)
{
	struct vm *vm = arg;

	log_debug("vm %s: qmp %s %.*s", vm->name, dir, (int)(len > 1024 ? 1024 : len), buf);
}

static void
vm_qmp_ready(struct qmp_conn *conn, void *arg)
{
	struct vm *vm = arg;

	char *cause = NULL;

	if (!vm_start_qmp_ready(vm))
		vm_adopt_qmp_ready(vm);
	/* From now on QEMU can take VNC clients (again, after a restart of qvmd). */
	if (vm_vnc_open(vm, &cause) < 0) {
		log_error("vm %s: no vnc display: %s", vm->name, cause);
		free(cause);
	}
}

static void
on_shutdown(struct vm *vm, struct json_object *data)
{
	struct json_object *v;

	vm->shutdown_seen = true;
	vm->shutdown_guest =
	    json_object_object_get_ex(data, "guest", &v) && json_object_get_boolean(v);
	snprintf(vm->shutdown_reason, sizeof vm->shutdown_reason, "%s",
	         json_object_object_get_ex(data, "reason", &v) ? json_object_get_string(v)
	                                                       : "unknown");
	log_info("vm %s: qemu reports shutdown (%s)", vm->name, vm->shutdown_reason);
}

static void
on_stop(struct vm *vm, struct json_object *data)
{
	snprintf(vm->qemu_status, sizeof vm->qemu_status, "paused");
	if (vm->state == VM_RUNNING)
		vm_set_state(vm, VM_PAUSED);
}

static void
on_resume(struct vm *vm, struct json_object *data)
{
	snprintf(vm->qemu_status, sizeof vm->qemu_status, "running");
	if (vm->state == VM_PAUSED)
		vm_set_state(vm, VM_RUNNING);
}

/* What the VM itself does with a QMP event, before its jobs see it. */
struct vm_event_handler {
	const char *name;
	void (*handle)(struct vm *vm, struct json_object *data);
};

/* Sorted by name (bsearch). */
static const struct vm_event_handler event_table[] = {
    {"DEVICE_DELETED", vm_hotplug_device_deleted},
    {"JOB_STATUS_CHANGE", vm_jobrec_status_change},
    {"RESUME", on_resume},
    {"SHUTDOWN", on_shutdown},
    {"STOP", on_stop},
};

static int
event_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct vm_event_handler *)elem)->name);
}

static void
vm_qmp_event(struct qmp_conn *conn, const char *name, struct json_object *data, int64_t sec,
             int64_t usec, void *arg)
{
	struct vm *vm = arg;
	const struct vm_event_handler *h =
	    bsearch(name, event_table, sizeof event_table / sizeof event_table[0],
	            sizeof event_table[0], event_cmp);
	struct json_object *ev;

	if (h != NULL)
		h->handle(vm, data);
	vm_jobs_event(vm, name, data);

	ev = json_object_new_object();
	json_object_object_add(ev, "event", json_object_new_string("qmp"));
	json_object_object_add(ev, "vm", json_object_new_string(vm->name));
	json_object_object_add(ev, "name", json_object_new_string(name));
	json_object_object_add(ev, "data", data ? json_object_get(data) : NULL);
	json_object_object_add(ev, "ts", json_object_new_int64(sec * 1000 + usec / 1000));
	vm_publish(vm, ev);
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

int
vm_open_qmp(struct vm *vm, int fd, char **cause)
{
	struct qmp_callbacks cbs = {vm_qmp_ready, vm_qmp_event, vm_qmp_closed, NULL, vm};
	char *path;
	int rc;

	if (log_enabled(CFG_LOG_DEBUG))
		cbs.trace = vm_qmp_trace;
	vm->qmp = qmp_conn_new(vm->env.base, &cbs);
	vm->qmp_closed = false;
	vm->backup_clean = false;
	vm->backup_fdset = 0;
	if (fd >= 0)
		return qmp_conn_connect_fd(vm->qmp, fd, cause);
	path = vm_run_path(vm, "qmp.sock");
	rc = qmp_conn_connect_path(vm->qmp, path, cause);
	free(path);
	return rc;
}

/* ---- the QEMU process ---- */

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

		vm->eof_timer = evtimer_new(vm->env.base, eof_timer_cb, vm);
		evtimer_add(vm->eof_timer, &tv);
		return;
	}
	vm_maybe_finalize(vm);
}

void
vm_watch_pid(struct vm *vm)
{
	vm->pid_ev = event_new(vm->env.base, vm->pidfd, EV_READ, pidfd_cb, vm);
	event_add(vm->pid_ev, NULL);
}

/* Describes how the process ended, and whether that was a clean exit. */
static char *
exit_reason(struct vm *vm, struct vm_exit *exit)
{
	char *pidfile;
	bool left;

	if (vm->have_wstatus) {
		int st = vm->wstatus;

		if (WIFEXITED(st)) {
			exit->kind = VM_EXIT_STATUS;
			exit->value = WEXITSTATUS(st);
			exit->clean = exit->value == 0;
			return xasprintf("exited with status %d", exit->value);
		}
		exit->kind = VM_EXIT_SIGNAL;
		exit->value = WTERMSIG(st);
		exit->clean = false;
		return xasprintf("killed by signal %d (%s)", exit->value, strsignal(exit->value));
	}
	/* Not our child (adopted): QEMU deletes its pidfile only when it exits cleanly. */
	pidfile = vm_run_path(vm, "qemu/qemu.pid");
	left = access(pidfile, F_OK) == 0;
	free(pidfile);
	exit->kind = VM_EXIT_UNKNOWN;
	exit->value = 0;
	exit->clean = !left;
	return xstrdup(left ? "died (pidfile left behind)" : "exited cleanly");
}

/* A shutdown or crash no job asked for: state, last exit, and the restart policy. */
static void
vm_unexpected_exit(struct vm *vm, const struct vm_exit *exit)
{
	enum cfg_restart policy = vm->live_cfg ? vm->live_cfg->restart : CFG_RESTART_NO;
	const char *tail = exit->tail;

	if (vm->shutdown_seen && exit->clean) {
		vm_set_last_exit(
		    vm, exit, "shutdown",
		    xasprintf("shut down (%s), %s", vm->shutdown_reason, exit->reason));
		vm_set_state(vm, VM_STOPPED);
		if (vm->shutdown_guest && policy == CFG_RESTART_ALWAYS)
			vm_schedule_restart(vm, false);
		return;
	}
	vm_set_last_exit(vm, exit, "crash",
	                 *tail ? xasprintf("%s: %s", exit->reason, tail) : xstrdup(exit->reason));
	log_error("vm %s: qemu %s%s%s", vm->name, exit->reason, *tail ? ": " : "", tail);
	vm_set_state(vm, VM_CRASHED);
	if (policy != CFG_RESTART_NO)
		vm_schedule_restart(vm, true);
}

/* Called when both the exit and QMP EOF have been seen: the VM is down. */
static void
vm_maybe_finalize(struct vm *vm)
{
	struct vm_exit exit = {0};
	char *reason, *tail, *log;

	if (!vm->exited || (vm->qmp != NULL && !vm->qmp_closed))
		return;
	vm->exited = false; /* accounted for: later calls are no-ops */
	if (vm->eof_timer) {
		event_free(vm->eof_timer);
		vm->eof_timer = NULL;
	}
	reason = exit_reason(vm, &exit);
	log = vm_state_path(vm, "qemu.log");
	tail = proc_file_tail(log, vm->log_offset, 600);
	free(log);
	exit.reason = reason;
	exit.tail = tail;
	vm->pid = 0;
	vm->child = false;
	snprintf(vm->qemu_status, sizeof vm->qemu_status, "none");
	/* The jobs first (they may still look at the devices), then the QEMU's traces. */
	if (!vm_jobs_claim_exit(vm, &exit))
		vm_unexpected_exit(vm, &exit);
	vm_jobs_end_unclaimed(vm, &exit);
	vm_vnc_close(vm);
	vm_drop_qmp(vm);
	rundir_remove(vm);
	vm_devs_clear(vm);
	free(reason);
	free(tail);
	vm_check_gone(vm);
}
