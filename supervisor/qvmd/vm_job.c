/* The job model of a VM (see vm_job.h). */
#include "vm_job.h"

#include "clock.h"
#include "log.h"
#include "qmp.h"
#include "vm_private.h"

#include <event2/event.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vm_job *
vm_job_current(const struct vm *vm)
{
	return vm->job;
}

struct vm_job *
vm_job_background(const struct vm *vm)
{
	return vm->bg;
}

struct vm_job *
vm_job_find(const struct vm *vm, const struct vm_job_kind *kind)
{
	if (vm->job != NULL && vm->job->kind == kind)
		return vm->job;
	if (vm->bg != NULL && vm->bg->kind == kind)
		return vm->bg;
	return NULL;
}

static void
refuse_busy(struct vm *vm, const char *what, vm_done_cb cb, void *arg)
{
	char *msg = xasprintf("vm %s: busy: %s in progress", vm->name, what);

	cb(NULL, PROTO_ERR_BUSY, msg, arg);
	free(msg);
}

/* What a background job is called in messages: its kind, and its record's id once it has one
 * ("snapshot snapshot-3"), so that the operator can find it in `jobs` and cancel it. */
static char *
bg_name(const struct vm_job *bg)
{
	return bg->rec != NULL ? xasprintf("%s %s", bg->kind->name, bg->rec->id)
	                       : xstrdup(bg->kind->name);
}

void
vm_job_refuse_busy(struct vm *vm, vm_done_cb cb, void *arg)
{
	const char *what = vm_state_name(vm->state);
	char *name = NULL;

	if (vm->job != NULL)
		what = vm->job->kind->name;
	else if (vm->bg != NULL)
		what = name = bg_name(vm->bg);
	else if (vm->state == VM_STARTING)
		what = "start";
	else if (vm->state == VM_STOPPING)
		what = "shutdown";
	refuse_busy(vm, what, cb, arg);
	free(name);
}

void
vm_job_cancel_background(struct vm *vm, const char *why)
{
	struct vm_job *bg = vm->bg;
	char *name, *no;

	if (bg == NULL || bg->kind->cancel == NULL)
		return;
	name = bg_name(bg); /* a copy: the cancel may end the job */
	log_info("vm %s: cancelling %s first", vm->name, name);
	if ((no = bg->kind->cancel(bg, why)) != NULL)
		log_info("vm %s: %s goes on: %s", vm->name, name, no);
	else
		snprintf(vm->bg_cancelled, sizeof vm->bg_cancelled, "%s", name);
	free(no);
	free(name);
}

bool
vm_job_admit(struct vm *vm, enum vm_op op, vm_done_cb cb, void *arg)
{
	struct vm_job *bg = vm->bg;

	if (vm->job != NULL) {
		refuse_busy(vm, vm->job->kind->name, cb, arg);
		return false;
	}
	if (bg == NULL || (bg->kind->allows & VM_OP_BIT(op)))
		return true;
	if ((bg->kind->cancel_for & VM_OP_BIT(op)) && bg->kind->cancel != NULL) {
		vm_job_cancel_background(vm, "cancelled by a powerdown or kill");
		return true;
	}
	{
		char *name = bg_name(bg);

		refuse_busy(vm, name, cb, arg);
		free(name);
	}
	return false;
}

struct vm_job *
vm_job_new(struct vm *vm, const struct vm_job_kind *kind, void *data, vm_done_cb cb, void *arg)
{
	struct vm_job *job = xcalloc(1, sizeof *job);
	struct vm_job **slot = kind->background ? &vm->bg : &vm->job;

	if (*slot != NULL)
		fatal("vm %s: %s started while %s runs", vm->name, kind->name, (*slot)->kind->name);
	job->kind = kind;
	job->vm = vm;
	job->data = data;
	job->cb = cb;
	job->arg = arg;
	job->t0 = clock_mono_ms();
	*slot = job;
	return job;
}

/* The QEMU the job's commands go to. */
static struct qmp_conn *
job_qmp(const struct vm_job *job)
{
	return job->qmp != NULL ? job->qmp : job->vm->qmp;
}

void
vm_job_done(struct vm_job *job, struct json_object *result, enum proto_err code, const char *fmt,
            ...)
{
	struct vm *vm = job->vm;
	char *msg = NULL;
	va_list ap;

	if (job->ending) {
		json_object_put(result);
		return;
	}
	job->ending = true;
	if (vm->job == job)
		vm->job = NULL;
	if (vm->bg == job)
		vm->bg = NULL;
	if (job->timer != NULL)
		event_free(job->timer);
	for (size_t i = 0; job_qmp(job) != NULL && i < job->ncalls; i++)
		qmp_cancel(job_qmp(job), job->calls[i]);
	if (code != PROTO_OK) {
		va_start(ap, fmt);
		if (vasprintf(&msg, fmt, ap) < 0)
			fatal("out of memory");
		va_end(ap);
		log_warn("%s", msg);
	}
	/* The message may point into the job's data: it is formatted before the data goes. */
	if (job->kind->free != NULL)
		job->kind->free(job->data);
	for (size_t i = 0; i < job->nwaiters; i++)
		job->waiters[i].cb(result ? json_object_get(result) : NULL, code, msg,
		                   job->waiters[i].arg);
	if (job->cb != NULL)
		job->cb(result, code, msg, job->arg);
	else
		json_object_put(result);
	free(msg);
	free(job->waiters);
	free(job->calls);
	free(job);
}

void
vm_job_reply_early(struct vm_job *job, struct json_object *result)
{
	vm_done_cb cb = job->cb;

	job->cb = NULL;
	if (cb != NULL)
		cb(result, PROTO_OK, NULL, job->arg);
	else
		json_object_put(result);
}

void
vm_job_join(struct vm_job *job, vm_done_cb cb, void *arg)
{
	job->waiters = xrealloc(job->waiters, (job->nwaiters + 1) * sizeof *job->waiters);
	job->waiters[job->nwaiters].cb = cb;
	job->waiters[job->nwaiters].arg = arg;
	job->nwaiters++;
}

static void
job_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm_job *job = arg;

	if (job->kind->timer != NULL)
		job->kind->timer(job);
}

void
vm_job_arm(struct vm_job *job, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};

	if (job->timer == NULL)
		job->timer = evtimer_new(job->vm->env.base, job_timer_cb, job);
	evtimer_add(job->timer, &tv);
}

int64_t
vm_job_send(struct vm_job *job, const char *command, struct json_object *args, int fd,
            int timeout_ms, qmp_reply_cb cb, void *arg, char **cause)
{
	struct qmp_conn *qmp = job_qmp(job);
	int64_t id;

	if (qmp == NULL || job->ending) {
		json_object_put(args);
		*cause = xasprintf("no qmp connection");
		return -1;
	}
	id = fd >= 0 ? qmp_execute_fd(qmp, command, args, fd, timeout_ms, cb, arg, cause)
	             : qmp_execute(qmp, command, args, timeout_ms, cb, arg, cause);
	json_object_put(args);
	if (id < 0)
		return -1;
	job->calls = xrealloc(job->calls, (job->ncalls + 1) * sizeof *job->calls);
	job->calls[job->ncalls++] = id;
	return id;
}

void
vm_jobs_event(struct vm *vm, const char *name, struct json_object *data)
{
	struct vm_job *job = vm->job;

	if (job != NULL && job->kind->event != NULL)
		job->kind->event(job, name, data);
	job = vm->bg;
	if (job != NULL && job->kind->event != NULL)
		job->kind->event(job, name, data);
}

bool
vm_jobs_claim_exit(struct vm *vm, const struct vm_exit *exit)
{
	struct vm_job *jobs[2] = {vm->bg, vm->job};
	bool claimed = false;

	for (size_t i = 0; i < 2; i++) {
		if (jobs[i] != NULL && !jobs[i]->outlives_qemu &&
		    jobs[i]->kind->qemu_gone != NULL && jobs[i]->kind->qemu_gone(jobs[i], exit))
			claimed = true;
	}
	return claimed;
}

void
vm_jobs_end_unclaimed(struct vm *vm, const struct vm_exit *exit)
{
	if (vm->bg != NULL && !vm->bg->outlives_qemu)
		vm_job_done(vm->bg, NULL, PROTO_ERR_FAILED, "vm %s: %s: qemu %s%s%s", vm->name,
		            vm->bg->kind->name, exit->reason, *exit->tail ? ": " : "", exit->tail);
	if (vm->job != NULL)
		vm_job_done(vm->job, NULL, PROTO_ERR_FAILED, "vm %s: %s: qemu %s%s%s", vm->name,
		            vm->job->kind->name, exit->reason, *exit->tail ? ": " : "", exit->tail);
}

void
vm_jobs_abort(struct vm *vm, enum proto_err code, const char *why)
{
	if (vm->bg != NULL)
		vm_job_done(vm->bg, NULL, code, "vm %s: %s: %s", vm->name, vm->bg->kind->name, why);
	if (vm->job != NULL)
		vm_job_done(vm->job, NULL, code, "vm %s: %s: %s", vm->name, vm->job->kind->name,
		            why);
}
