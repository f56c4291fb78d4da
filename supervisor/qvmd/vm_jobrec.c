/*
 * The records of a VM's long-running jobs: what `qvmctl jobs` lists and events report, and what a
 * restarted qvmd reads back from <run_dir>/<name>/jobs.json to go on following a job (the job
 * model's persist/restore). A record carried by a QEMU job (snapshot-save, snapshot-load,
 * snapshot-delete ...) follows it: QEMU's JOB_STATUS_CHANGE events move it, `query-jobs` gives
 * its progress and error once it concluded, and qvmd dismisses it (every QEMU job waits to be
 * dismissed, so its outcome is learnt even after a restart).
 */
#include "vm_private.h"

#include "clock.h"
#include "log.h"
#include "qmp.h"

#include <errno.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Ended jobs kept per VM for `qvmctl jobs`. */
#define VM_JOBREC_HISTORY 8
/* How often a running QEMU job's progress is asked for. */
#define VM_JOBREC_POLL_MS 1000

static const char *const state_names[] = {"running", "done", "failed", "cancelled"};

const char *
vm_jobrec_state_name(enum vm_jobrec_state s)
{
	return state_names[s];
}

static int
state_parse(const char *s)
{
	for (size_t i = 0; i < sizeof state_names / sizeof state_names[0]; i++)
		if (strcmp(state_names[i], s) == 0)
			return (int)i;
	return -1;
}

static void
rec_free(struct vm_jobrec *rec)
{
	if (rec == NULL)
		return;
	free(rec->id);
	free(rec->kind);
	free(rec->target);
	free(rec->error);
	json_object_put(rec->result);
	free(rec);
}

struct json_object *
vm_jobrec_json(const struct vm *vm, const struct vm_jobrec *rec)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "vm", json_object_new_string(vm->name));
	json_object_object_add(o, "id", json_object_new_string(rec->id));
	json_object_object_add(o, "kind", json_object_new_string(rec->kind));
	json_object_object_add(o, "target",
	                       rec->target ? json_object_new_string(rec->target) : NULL);
	json_object_object_add(o, "state", json_object_new_string(state_names[rec->state]));
	json_object_object_add(o, "qemu_job", json_object_new_boolean(rec->qemu_job));
	json_object_object_add(o, "qemu_status",
	                       rec->qemu_status[0] ? json_object_new_string(rec->qemu_status)
	                                           : NULL);
	json_object_object_add(o, "progress_current", json_object_new_uint64(rec->cur));
	json_object_object_add(o, "progress_total", json_object_new_uint64(rec->total));
	json_object_object_add(o, "started_ms", json_object_new_int64(rec->started));
	json_object_object_add(o, "ended_ms",
	                       rec->ended ? json_object_new_int64(rec->ended) : NULL);
	json_object_object_add(o, "error", rec->error ? json_object_new_string(rec->error) : NULL);
	if (rec->result != NULL)
		json_object_object_add(o, "result", json_object_get(rec->result));
	return o;
}

/* Writes jobs.json (the run directory exists while the VM has a QEMU or a job). */
static void
recs_save(struct vm *vm)
{
	struct json_object *o = json_object_new_object(), *a = json_object_new_array();
	char *path = vm_run_path(vm, "jobs.json"), *dir = vm_run_path(vm, "");

	/* A stopped VM's run directory may be gone: the records make it again. */
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		log_warn("vm %s: cannot make %s: %s", vm->name, dir, strerror(errno));
	free(dir);
	json_object_object_add(o, "seq", json_object_new_uint64(vm->jobrec_seq));
	for (size_t i = 0; i < vm->njobrecs; i++)
		json_object_array_add(a, vm_jobrec_json(vm, vm->jobrecs[i]));
	json_object_object_add(o, "jobs", a);
	rundir_write(path, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	free(path);
}

static void
rec_publish(struct vm *vm, const struct vm_jobrec *rec)
{
	struct json_object *ev = json_object_new_object();

	json_object_object_add(ev, "event", json_object_new_string("job"));
	json_object_object_add(ev, "vm", json_object_new_string(vm->name));
	json_object_object_add(ev, "job", vm_jobrec_json(vm, rec));
	json_object_object_add(ev, "ts", json_object_new_int64(clock_now_ms()));
	vm_publish(vm, ev);
}

/* Drops the oldest ended records beyond the history. */
static void
recs_trim(struct vm *vm)
{
	size_t ended = 0;

	for (size_t i = 0; i < vm->njobrecs; i++)
		ended += vm->jobrecs[i]->state != VM_JOBREC_RUNNING;
	for (size_t i = 0; i < vm->njobrecs && ended > VM_JOBREC_HISTORY;) {
		if (vm->jobrecs[i]->state == VM_JOBREC_RUNNING) {
			i++;
			continue;
		}
		rec_free(vm->jobrecs[i]);
		memmove(&vm->jobrecs[i], &vm->jobrecs[i + 1],
		        (vm->njobrecs - i - 1) * sizeof *vm->jobrecs);
		vm->njobrecs--;
		ended--;
	}
}

static void poll_arm(struct vm *vm);

struct vm_jobrec *
vm_jobrec_new(struct vm *vm, const char *kind, const char *target, bool qemu_job)
{
	struct vm_jobrec *rec = xcalloc(1, sizeof *rec);

	rec->id = xasprintf("%s-%u", kind, ++vm->jobrec_seq);
	rec->kind = xstrdup(kind);
	rec->target = xstrdup(target);
	rec->qemu_job = qemu_job;
	rec->state = VM_JOBREC_RUNNING;
	rec->total = 1;
	rec->started = clock_now_ms();
	vm->jobrecs = xrealloc(vm->jobrecs, (vm->njobrecs + 1) * sizeof *vm->jobrecs);
	vm->jobrecs[vm->njobrecs++] = rec;
	recs_save(vm);
	rec_publish(vm, rec);
	if (qemu_job)
		poll_arm(vm);
	return rec;
}

void
vm_jobrec_end(struct vm *vm, struct vm_jobrec *rec, enum vm_jobrec_state state, const char *error)
{
	if (rec->state != VM_JOBREC_RUNNING)
		return;
	rec->state = state;
	rec->ended = clock_now_ms();
	if (state == VM_JOBREC_DONE)
		rec->cur = rec->total;
	free(rec->error);
	rec->error = error ? xstrdup(error) : NULL;
	log_info("vm %s: job %s %s%s%s", vm->name, rec->id, state_names[state], error ? ": " : "",
	         error ? error : "");
	rec_publish(vm, rec);
	recs_trim(vm);
	recs_save(vm);
}

struct vm_jobrec *
vm_jobrec_find(const struct vm *vm, const char *id)
{
	for (size_t i = 0; i < vm->njobrecs; i++)
		if (strcmp(vm->jobrecs[i]->id, id) == 0)
			return vm->jobrecs[i];
	return NULL;
}

struct json_object *
vm_jobs_json(const struct vm *vm)
{
	struct json_object *a = json_object_new_array();

	for (size_t i = 0; i < vm->njobrecs; i++)
		json_object_array_add(a, vm_jobrec_json(vm, vm->jobrecs[i]));
	return a;
}

void
vm_jobrecs_free(struct vm *vm)
{
	if (vm->jobrec_poll != NULL)
		event_free(vm->jobrec_poll);
	vm->jobrec_poll = NULL;
	for (size_t i = 0; i < vm->njobrecs; i++)
		rec_free(vm->jobrecs[i]);
	free(vm->jobrecs);
	vm->jobrecs = NULL;
	vm->njobrecs = 0;
}

/* Reads jobs.json after a daemon restart (vm_adopt.c): records of jobs that were running stay
 * running until vm_jobrecs_reattach learns their outcome from QEMU. */
void
vm_jobrecs_load(struct vm *vm)
{
	char *path = vm_run_path(vm, "jobs.json");
	struct json_object *o = json_object_from_file(path), *a, *v;

	free(path);
	vm_jobrecs_free(vm);
	if (o == NULL)
		return;
	if (json_object_object_get_ex(o, "seq", &v) && json_object_is_type(v, json_type_int) &&
	    json_object_get_int64(v) > 0 && json_object_get_int64(v) < 1000000000)
		vm->jobrec_seq = (unsigned)json_object_get_int64(v);
	if (!json_object_object_get_ex(o, "jobs", &a) || !json_object_is_type(a, json_type_array)) {
		json_object_put(o);
		return;
	}
	for (size_t i = 0; i < json_object_array_length(a) && i < 64; i++) {
		struct json_object *j = json_object_array_get_idx(a, i), *f;
		const char *id = NULL, *kind = NULL, *state = NULL;
		struct vm_jobrec *rec;

		if (json_object_object_get_ex(j, "id", &f) &&
		    json_object_is_type(f, json_type_string))
			id = json_object_get_string(f);
		if (json_object_object_get_ex(j, "kind", &f) &&
		    json_object_is_type(f, json_type_string))
			kind = json_object_get_string(f);
		if (json_object_object_get_ex(j, "state", &f) &&
		    json_object_is_type(f, json_type_string))
			state = json_object_get_string(f);
		if (id == NULL || kind == NULL || state == NULL || state_parse(state) < 0 ||
		    strlen(id) > 64 || vm_jobrec_find(vm, id) != NULL)
			continue;
		rec = xcalloc(1, sizeof *rec);
		rec->id = xstrdup(id);
		rec->kind = xstrdup(kind);
		rec->state = (enum vm_jobrec_state)state_parse(state);
		if (json_object_object_get_ex(j, "target", &f) &&
		    json_object_is_type(f, json_type_string))
			rec->target = xstrdup(json_object_get_string(f));
		if (json_object_object_get_ex(j, "error", &f) &&
		    json_object_is_type(f, json_type_string))
			rec->error = xstrdup(json_object_get_string(f));
		if (json_object_object_get_ex(j, "qemu_job", &f))
			rec->qemu_job = json_object_get_boolean(f);
		if (json_object_object_get_ex(j, "started_ms", &f))
			rec->started = json_object_get_int64(f);
		if (json_object_object_get_ex(j, "ended_ms", &f))
			rec->ended = json_object_get_int64(f);
		rec->total = 1;
		vm->jobrecs = xrealloc(vm->jobrecs, (vm->njobrecs + 1) * sizeof *vm->jobrecs);
		vm->jobrecs[vm->njobrecs++] = rec;
	}
	json_object_put(o);
}

/* ---- following QEMU's jobs ---- */

/* A concluded QEMU job: its error (if any) from query-jobs, then dismissed. */
struct conclude {
	struct vm *vm;
	char *id;
	char *error;
	bool found;
};

/* The kind that can take up a record again after a restart, by name. */
static const struct vm_job_kind *
kind_find(const char *name)
{
	static const struct vm_job_kind *const kinds[] = {
	    &vm_snapshot_kind,    &vm_revert_kind,         &vm_snapshot_delete_kind,
	    &vm_backup_kind,      &vm_backup_restore_kind, &vm_backup_verify_kind,
	    &vm_backup_prune_kind};

	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
		if (strcmp(kinds[i]->name, name) == 0)
			return kinds[i];
	return NULL;
}

/* Hands a record whose job no background job of this qvmd follows to its kind (restore), which
 * takes it up again (running) or cleans up and ends it. */
static void
rec_restore(struct vm *vm, struct vm_jobrec *rec, bool running, const char *error)
{
	const struct vm_job_kind *kind = kind_find(rec->kind);

	if (kind != NULL && kind->restore != NULL)
		kind->restore(vm, rec, running, error);
	if (rec->state == VM_JOBREC_RUNNING && !running)
		vm_jobrec_end(vm, rec, error ? VM_JOBREC_FAILED : VM_JOBREC_DONE, error);
}

static void
conclude_finish(struct conclude *c)
{
	struct vm_jobrec *rec = vm_jobrec_find(c->vm, c->id);
	struct vm_job *bg = c->vm->bg;

	if (rec != NULL && rec->state == VM_JOBREC_RUNNING) {
		if (bg != NULL && bg->rec == rec && bg->kind->concluded != NULL)
			bg->kind->concluded(bg, c->error);
		else
			rec_restore(c->vm, rec, false, c->error);
	}
	free(c->id);
	free(c->error);
	free(c);
}

static void
dismiss_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct conclude *c = arg;

	if (r->status != QMP_OK && r->status != QMP_DISCONNECTED)
		log_warn("vm %s: job-dismiss %s: %s", c->vm->name, c->id,
		         r->error_desc ? r->error_desc : "failed");
	if (r->status == QMP_DISCONNECTED) {
		free(c->id);
		free(c->error);
		free(c);
		return;
	}
	conclude_finish(c);
}

/* The entry of query-jobs' answer for id, or NULL. */
static struct json_object *
qemu_job_entry(struct json_object *jobs, const char *id)
{
	for (size_t i = 0; jobs && i < json_object_array_length(jobs); i++) {
		struct json_object *j = json_object_array_get_idx(jobs, i), *v;

		if (json_object_object_get_ex(j, "id", &v) &&
		    strcmp(json_object_get_string(v), id) == 0)
			return j;
	}
	return NULL;
}

static void
entry_progress(struct vm_jobrec *rec, struct json_object *j)
{
	struct json_object *v;

	if (json_object_object_get_ex(j, "current-progress", &v))
		rec->cur = (uint64_t)json_object_get_int64(v);
	if (json_object_object_get_ex(j, "total-progress", &v))
		rec->total = (uint64_t)json_object_get_int64(v);
	if (json_object_object_get_ex(j, "status", &v))
		snprintf(rec->qemu_status, sizeof rec->qemu_status, "%s",
		         json_object_get_string(v));
}

static void
conclude_jobs_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct conclude *c = arg;
	struct json_object *j, *v, *args;
	struct vm_jobrec *rec;
	char *cause = NULL;

	if (r->status == QMP_DISCONNECTED) {
		free(c->id);
		free(c);
		return;
	}
	j = r->status == QMP_OK ? qemu_job_entry(r->result, c->id) : NULL;
	if (j == NULL) {
		c->error = xasprintf("qemu no longer knows job %s", c->id);
		conclude_finish(c);
		return;
	}
	if ((rec = vm_jobrec_find(c->vm, c->id)) != NULL)
		entry_progress(rec, j);
	if (json_object_object_get_ex(j, "error", &v))
		c->error = xstrdup(json_object_get_string(v));
	args = json_object_new_object();
	json_object_object_add(args, "id", json_object_new_string(c->id));
	if (qmp_execute(conn, "job-dismiss", args, VM_QUERY_TIMEOUT_MS, dismiss_done, c, &cause) <
	    0) {
		free(cause);
		conclude_finish(c);
	}
	json_object_put(args);
}

/* Asks QEMU how job id ended, dismisses it and ends its record. */
static void
conclude(struct vm *vm, const char *id)
{
	struct conclude *c;
	char *cause = NULL;

	if (vm->qmp == NULL)
		return;
	c = xcalloc(1, sizeof *c);
	c->vm = vm;
	c->id = xstrdup(id);
	if (qmp_execute(vm->qmp, "query-jobs", NULL, VM_QUERY_TIMEOUT_MS, conclude_jobs_done, c,
	                &cause) < 0) {
		free(cause);
		free(c->id);
		free(c);
	}
}

void
vm_jobrec_status_change(struct vm *vm, struct json_object *data)
{
	struct json_object *v;
	struct vm_jobrec *rec;
	const char *id, *status;

	if (data == NULL || !json_object_object_get_ex(data, "id", &v))
		return;
	id = json_object_get_string(v);
	if (!json_object_object_get_ex(data, "status", &v))
		return;
	status = json_object_get_string(v);
	rec = vm_jobrec_find(vm, id);
	/* "null": QEMU forgot the job (dismissed); its last real status stays. */
	if (rec == NULL || !rec->qemu_job || rec->state != VM_JOBREC_RUNNING ||
	    strcmp(status, "null") == 0)
		return;
	snprintf(rec->qemu_status, sizeof rec->qemu_status, "%s", status);
	if (strcmp(status, "concluded") == 0)
		conclude(vm, id);
	else
		rec_publish(vm, rec);
}

static bool
any_qemu_job_running(const struct vm *vm)
{
	for (size_t i = 0; i < vm->njobrecs; i++)
		if (vm->jobrecs[i]->qemu_job && vm->jobrecs[i]->state == VM_JOBREC_RUNNING)
			return true;
	return false;
}

static void
poll_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;

	vm->jobrec_polling = false;
	if (r->status == QMP_DISCONNECTED)
		return;
	for (size_t i = 0; r->status == QMP_OK && i < vm->njobrecs; i++) {
		struct vm_jobrec *rec = vm->jobrecs[i];
		struct json_object *j;
		uint64_t cur = rec->cur, total = rec->total;

		if (!rec->qemu_job || rec->state != VM_JOBREC_RUNNING)
			continue;
		if ((j = qemu_job_entry(r->result, rec->id)) == NULL)
			continue;
		entry_progress(rec, j);
		if (cur != rec->cur || total != rec->total)
			rec_publish(vm, rec);
		if (strcmp(rec->qemu_status, "concluded") == 0)
			conclude(vm, rec->id);
	}
	poll_arm(vm);
}

static void
poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm *vm = arg;
	char *cause = NULL;

	if (!any_qemu_job_running(vm) || vm->qmp == NULL || vm->qmp_closed || vm->jobrec_polling)
		return;
	/* Progress is for whoever watches; a conclusion comes as an event anyway. */
	if (vm->env.watched != NULL && !vm->env.watched(vm->env.arg, vm->name)) {
		poll_arm(vm);
		return;
	}
	vm->jobrec_polling = true;
	if (qmp_execute(vm->qmp, "query-jobs", NULL, VM_QUERY_TIMEOUT_MS * 5, poll_done, vm,
	                &cause) < 0) {
		free(cause);
		vm->jobrec_polling = false;
	}
}

/* Polls progress while a QEMU job runs and someone watches the VM's events (and so also learns of a
 * conclusion whose event was missed). */
static void
poll_arm(struct vm *vm)
{
	struct timeval tv = {VM_JOBREC_POLL_MS / 1000, (VM_JOBREC_POLL_MS % 1000) * 1000};

	if (!any_qemu_job_running(vm))
		return;
	if (vm->jobrec_poll == NULL)
		vm->jobrec_poll = evtimer_new(vm->env.base, poll_cb, vm);
	if (!evtimer_pending(vm->jobrec_poll, NULL))
		evtimer_add(vm->jobrec_poll, &tv);
}

/* After a re-attach: every record still running learns from QEMU whether its job ended while qvmd
 * was away (then its outcome is taken and the job dismissed), still runs (followed again), or is
 * unknown to QEMU (failed). Kinds that need to (snapshots: all or nothing) are told. */
static void
reattach_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;

	if (r->status == QMP_DISCONNECTED)
		return;
	for (size_t i = 0; i < vm->njobrecs; i++) {
		struct vm_jobrec *rec = vm->jobrecs[i];
		struct json_object *j;

		if (rec->state != VM_JOBREC_RUNNING)
			continue;
		j = rec->qemu_job && r->status == QMP_OK ? qemu_job_entry(r->result, rec->id)
		                                         : NULL;
		if (j == NULL) {
			rec_restore(vm, rec, false,
			            rec->qemu_job ? "qemu no longer knows the job"
			                          : "interrupted by a restart of qvmd");
			continue;
		}
		entry_progress(rec, j);
		log_info("vm %s: job %s is %s in qemu: following it again", vm->name, rec->id,
		         rec->qemu_status);
		if (strcmp(rec->qemu_status, "concluded") == 0)
			conclude(vm, rec->id);
		else
			rec_restore(vm, rec, true, NULL);
	}
	poll_arm(vm);
}

void
vm_jobrecs_reattach(struct vm *vm)
{
	char *cause = NULL;
	bool running = false;

	for (size_t i = 0; i < vm->njobrecs; i++)
		running |= vm->jobrecs[i]->state == VM_JOBREC_RUNNING;
	if (!running || vm->qmp == NULL)
		return;
	if (qmp_execute(vm->qmp, "query-jobs", NULL, VM_QUERY_TIMEOUT_MS * 5, reattach_done, vm,
	                &cause) < 0) {
		log_warn("vm %s: cannot ask qemu for its jobs: %s", vm->name, cause);
		free(cause);
	}
}

/* A record still running whose job no qvmd follows (the VM's QEMU is gone, or it ran outside
 * QEMU): it failed, and its kind cleans up what it can. */
void
vm_jobrecs_orphaned(struct vm *vm, const char *why)
{
	for (size_t i = 0; i < vm->njobrecs; i++) {
		struct vm_jobrec *rec = vm->jobrecs[i];

		if (rec->state == VM_JOBREC_RUNNING && (vm->bg == NULL || vm->bg->rec != rec))
			rec_restore(vm, rec, false, why);
	}
}

void
vm_job_cancel(struct vm *vm, const char *id, vm_done_cb cb, void *arg)
{
	struct vm_jobrec *rec = vm_jobrec_find(vm, id);
	struct vm_job *bg = vm->bg;
	struct json_object *res;
	char *msg, *no;

	if (rec == NULL || rec->state != VM_JOBREC_RUNNING || bg == NULL || bg->rec != rec ||
	    bg->kind->cancel == NULL) {
		msg = rec == NULL ? xasprintf("vm %s: no job %s", vm->name, id)
		                  : xasprintf("vm %s: job %s has ended (%s)", vm->name, id,
		                              vm_jobrec_state_name(rec->state));
		cb(NULL, rec == NULL ? PROTO_ERR_NOT_FOUND : PROTO_ERR_INVALID, msg, arg);
		free(msg);
		return;
	}
	if ((no = bg->kind->cancel(bg, "cancelled by the operator")) != NULL) {
		msg = xasprintf("vm %s: job %s is not cancelled: %s", vm->name, id, no);
		log_info("%s", msg);
		cb(NULL, PROTO_ERR_INVALID, msg, arg);
		free(msg);
		free(no);
		return;
	}
	/* The record may have ended now, or ends when QEMU's job does ("cancelling"). */
	res = json_object_new_object();
	json_object_object_add(res, "vm", json_object_new_string(vm->name));
	json_object_object_add(res, "job", json_object_new_string(id));
	rec = vm_jobrec_find(vm, id);
	json_object_object_add(res, "state",
	                       json_object_new_string(rec == NULL || rec->state != VM_JOBREC_RUNNING
	                                                  ? "cancelled"
	                                                  : "cancelling"));
	cb(res, PROTO_OK, NULL, arg);
}
