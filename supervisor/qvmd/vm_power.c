/*
 * Power operations: powerdown (ACPI, then escalation: quit, SIGTERM, SIGKILL), kill (the
 * escalation at once; it takes over whatever job runs), graceful reboot, reset, pause, resume,
 * and bringing a VM down for a host shutdown (powerdown --all).
 */
#include "vm.h"
#include "vm_job.h"
#include "vm_private.h"

#include "cfg.h"
#include "clock.h"
#include "log.h"
#include "proc.h"
#include "qmp.h"

#include <event2/event.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUIT_WAIT_MS      5000 /* powerdown: each escalation step's wait */
#define KILL_QUIT_WAIT_MS 1000 /* kill: each escalation step's wait */

/* The step that ended a stop, as reported in ended_by. */
enum stop_step { STOP_GUEST, STOP_QUIT, STOP_SIGTERM, STOP_SIGKILL };
static const char *const step_names[] = {"guest", "quit", "sigterm", "sigkill"};

struct stop_job {
	enum stop_step step;
	uint64_t timeout_ms; /* powerdown: how long the guest gets */
	bool resumed;        /* a paused VM was resumed first (ACPI needs a running guest) */
	bool no_wait;        /* powerdown --no-wait: answered once QEMU accepted it */
	char cancelled[96];  /* a background job cancelled first ("snapshot snapshot-3"), or "" */
};

/* The stop takes over the note of a background job cancelled for it, to say so in its reply. */
static void
take_cancelled(struct vm *vm, struct stop_job *sj)
{
	if (vm->bg_cancelled[0] == '\0')
		return;
	memcpy(sj->cancelled, vm->bg_cancelled, sizeof sj->cancelled);
	vm->bg_cancelled[0] = '\0';
}

static void stop_timer(struct vm_job *job);
static bool stop_qemu_gone(struct vm_job *job, const struct vm_exit *exit);

static const struct vm_job_kind powerdown_kind = {
    .name = "powerdown",
    .op = VM_OP_POWERDOWN,
    .timer = stop_timer,
    .qemu_gone = stop_qemu_gone,
    .free = free,
};

static const struct vm_job_kind kill_kind = {
    .name = "kill",
    .op = VM_OP_KILL,
    .timer = stop_timer,
    .qemu_gone = stop_qemu_gone,
    .free = free,
};

static bool
refuse_not_running(struct vm *vm, vm_done_cb cb, void *arg)
{
	char *msg;

	if ((vm->state == VM_RUNNING || vm->state == VM_PAUSED) && vm->qmp != NULL)
		return false;
	msg = xasprintf("vm %s: not running (state %s)", vm->name, vm_state_name(vm->state));
	cb(NULL, PROTO_ERR_NOT_RUNNING, msg, arg);
	free(msg);
	return true;
}

static void
quit_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm_job *job = arg;

	if (r->status != QMP_OK && r->status != QMP_DISCONNECTED)
		log_debug("vm %s: quit: %s", job->vm->name, r->error_desc);
}

/* Takes the next step towards a stopped QEMU: quit, then SIGTERM, then SIGKILL. */
static void
stop_escalate(struct vm_job *job)
{
	struct stop_job *sj = job->data;
	struct vm *vm = job->vm;
	uint64_t wait = job->kind == &kill_kind ? KILL_QUIT_WAIT_MS : QUIT_WAIT_MS;
	char *cause = NULL;

	sj->step++;
	if (sj->step == STOP_QUIT && (vm->qmp == NULL || vm->qmp_closed))
		sj->step = STOP_SIGTERM;
	switch (sj->step) {
	case STOP_QUIT:
		log_warn("vm %s: %s: sending quit", vm->name,
		         job->kind == &kill_kind ? "kill" : "guest ignored powerdown");
		if (vm_job_send(job, "quit", NULL, -1, (int)wait, quit_done, job, &cause) < 0) {
			free(cause);
			stop_escalate(job);
			return;
		}
		break;
	case STOP_SIGTERM:
		log_warn("vm %s: sending SIGTERM to qemu pid %d", vm->name, (int)vm->pid);
		proc_pidfd_signal(vm->pidfd, SIGCONT);
		proc_pidfd_signal(vm->pidfd, SIGTERM);
		break;
	default:
		sj->step = STOP_SIGKILL;
		log_warn("vm %s: sending SIGKILL to qemu pid %d", vm->name, (int)vm->pid);
		proc_pidfd_signal(vm->pidfd, SIGKILL);
		return; /* the exit always comes */
	}
	vm_job_arm(job, wait);
}

static void
stop_timer(struct vm_job *job)
{
	stop_escalate(job);
}

static bool
stop_qemu_gone(struct vm_job *job, const struct vm_exit *exit)
{
	struct stop_job *sj = job->data;
	struct vm *vm = job->vm;
	int64_t elapsed = clock_mono_ms() - job->t0;
	struct json_object *res;
	const char *ended_by;

	/* QEMU dying on its own before the guest or an escalation step ended it. */
	if (sj->step == STOP_GUEST && !exit->clean && !vm->shutdown_seen)
		ended_by = "crash";
	else
		ended_by = step_names[sj->step];
	vm_set_last_exit(vm, exit, job->kind == &kill_kind ? "kill" : "powerdown",
	                 xasprintf("%s (ended by %s)", exit->reason, ended_by));
	vm_set_state(vm, VM_STOPPED);
	log_info("vm %s: stopped after %lld ms, ended by %s", vm->name, (long long)elapsed,
	         ended_by);
	res = json_object_new_object();
	json_object_object_add(res, "state", json_object_new_string("stopped"));
	json_object_object_add(res, "ended_by", json_object_new_string(ended_by));
	json_object_object_add(res, "elapsed_ms", json_object_new_int64(elapsed));
	if (sj->resumed)
		json_object_object_add(res, "resumed", json_object_new_boolean(1));
	json_object_object_add(res, "cancelled_job",
	                       sj->cancelled[0] ? json_object_new_string(sj->cancelled) : NULL);
	vm_job_done(job, res, PROTO_OK, NULL);
	return true;
}

static void
powerdown_sent(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm_job *job = arg;
	struct stop_job *sj = job->data;
	struct json_object *res;

	if (r->status != QMP_OK) {
		log_warn("vm %s: system_powerdown failed: %s", job->vm->name, r->error_desc);
		if (sj->step == STOP_GUEST)
			stop_escalate(job);
		return;
	}
	if (!sj->no_wait)
		return;
	res = json_object_new_object();
	json_object_object_add(res, "state", json_object_new_string("stopping"));
	vm_job_reply_early(job, res);
}

static void
powerdown_cont_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm_job *job = arg;

	if (r->status != QMP_OK && r->status != QMP_DISCONNECTED)
		log_warn("vm %s: cont before powerdown failed: %s", job->vm->name, r->error_desc);
}

void
vm_powerdown(struct vm *vm, uint64_t timeout_ms, bool wait, vm_done_cb cb, void *arg)
{
	struct stop_job *sj;
	struct vm_job *job;
	char *cause = NULL;

	if (!vm_job_admit(vm, VM_OP_POWERDOWN, cb, arg) || refuse_not_running(vm, cb, arg))
		return;
	sj = xcalloc(1, sizeof *sj);
	sj->timeout_ms = timeout_ms ? timeout_ms : vm->live_cfg->shutdown_timeout_ms;
	/* A paused guest never sees the ACPI event: it is resumed first (one pipeline: QEMU runs
	 * cont, then system_powerdown), and the reply says so. */
	sj->resumed = vm->state == VM_PAUSED;
	sj->no_wait = !wait;
	take_cancelled(vm, sj);
	job = vm_job_new(vm, &powerdown_kind, sj, cb, arg);
	vm_set_state(vm, VM_STOPPING);
	log_info("vm %s: powerdown (timeout %llu ms)%s", vm->name,
	         (unsigned long long)sj->timeout_ms, sj->resumed ? ", resuming it first" : "");
	if (sj->resumed &&
	    vm_job_send(job, "cont", NULL, -1, 0, powerdown_cont_done, job, &cause) < 0) {
		free(cause);
		cause = NULL;
	}
	if (vm_job_send(job, "system_powerdown", NULL, -1, 0, powerdown_sent, job, &cause) < 0) {
		free(cause);
		stop_escalate(job);
		return;
	}
	vm_job_arm(job, sj->timeout_ms);
}

/* Starts the kill of a VM with no stop in progress. */
static void
kill_start(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct stop_job *sj = xcalloc(1, sizeof *sj);
	struct vm_job *job;

	take_cancelled(vm, sj);
	job = vm_job_new(vm, &kill_kind, sj, cb, arg);

	vm_set_state(vm, VM_STOPPING);
	log_info("vm %s: kill", vm->name);
	stop_escalate(job);
}

void
vm_kill(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct vm_job *job = vm->job;
	char *msg;

	if ((vm->pid <= 0 || vm->exited) && job != NULL) {
		vm_job_refuse_busy(vm, cb, arg);
		return;
	}
	if (vm->pid <= 0 || vm->exited) {
		msg =
		    xasprintf("vm %s: not running (state %s)", vm->name, vm_state_name(vm->state));
		cb(NULL, PROTO_ERR_NOT_RUNNING, msg, arg);
		free(msg);
		return;
	}
	if (job != NULL && job->kind == &kill_kind) {
		vm_job_refuse_busy(vm, cb, arg);
		return;
	}
	/* kill is the operator's way out of anything stuck: a background job is cancelled, and it
	 * takes over whatever ordinary job runs. */
	vm_job_cancel_background(vm, "cancelled by kill");
	if (job != NULL && job->kind == &powerdown_kind) {
		vm_done_cb old = job->cb;
		void *old_arg = job->arg;

		/* Waiters (powerdown --all, a waiting requester) keep waiting for the stop; the
		 * kill's requester hears when it is over, never "stopping". */
		((struct stop_job *)job->data)->no_wait = false;
		take_cancelled(vm, job->data);
		job->kind = &kill_kind;
		job->cb = cb;
		job->arg = arg;
		if (old != NULL) {
			msg = xasprintf("vm %s: powerdown interrupted by kill", vm->name);
			old(NULL, PROTO_ERR_FAILED, msg, old_arg);
			free(msg);
		}
		stop_escalate(job);
		return;
	}
	if (job != NULL)
		vm_job_done(job, NULL, PROTO_ERR_FAILED, "vm %s: %s interrupted by kill", vm->name,
		            job->kind->name);
	kill_start(vm, cb, arg);
}

/* ---- graceful reboot ----
 *
 * The way libvirt reboots a guest over ACPI: QEMU is told to pause instead of exiting when the
 * guest powers off (set-action shutdown=pause), and the guest gets the ACPI power button. When it
 * has shut down (SHUTDOWN), the same QEMU resets and continues (system_reset, cont): the same
 * process with every hot-plugged device. A guest that reboots by itself meanwhile (RESET from the
 * guest) is rebooted too; one that ignores ACPI until the timeout is reset hard. Every path ends
 * with set-action shutdown=poweroff again (a QEMU adopted by a restarted qvmd gets it as well, in
 * case qvmd died in between: vm_adopt.c).
 */

enum reboot_step { REBOOT_ACPI, REBOOT_RESETTING };

struct reboot_job {
	enum reboot_step step;
	uint64_t timeout_ms;
	bool resumed;
	const char *by; /* "guest", "guest-reset", "reset" */
};

static void reboot_event(struct vm_job *job, const char *name, struct json_object *data);
static void reboot_timer(struct vm_job *job);

static const struct vm_job_kind reboot_kind = {
    .name = "reboot",
    .op = VM_OP_REBOOT,
    .event = reboot_event,
    .timer = reboot_timer,
    .free = free,
};

static struct json_object *
shutdown_action(const char *action)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "shutdown", json_object_new_string(action));
	return o;
}

static void
restore_action_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	if (r->status != QMP_OK && r->status != QMP_DISCONNECTED)
		log_warn("vm %s: set-action shutdown=poweroff: %s", (const char *)arg,
		         r->error_desc);
}

/* Any failed step ends the reboot; QEMU's shutdown action goes back to poweroff regardless. */
static bool
reboot_step_failed(struct vm_job *job, const struct qmp_reply *r)
{
	struct vm *vm = job->vm;
	struct json_object *args;
	char *cause = NULL;

	if (r->status == QMP_OK)
		return false;
	if (vm->qmp != NULL && !vm->qmp_closed) {
		args = shutdown_action("poweroff");
		if (qmp_execute(vm->qmp, "set-action", args, 0, restore_action_done, vm->name,
		                &cause) < 0)
			free(cause);
		json_object_put(args);
	}
	vm_job_done(job, NULL, r->status == QMP_TIMEOUT ? PROTO_ERR_TIMEOUT : vm_qmp_err(r),
	            "vm %s: reboot: %s failed: %s", vm->name, r->command, r->error_desc);
	return true;
}

static void
reboot_checked(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	reboot_step_failed(arg, r);
}

static void
reboot_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm_job *job = arg;
	struct reboot_job *rj = job->data;
	struct vm *vm = job->vm;
	int64_t elapsed = clock_mono_ms() - job->t0;
	struct json_object *res;

	if (reboot_step_failed(job, r))
		return;
	/* The shutdown was part of the reboot, not an end of the VM. */
	vm->shutdown_seen = false;
	vm->shutdown_guest = false;
	log_info("vm %s: rebooted after %lld ms (%s)", vm->name, (long long)elapsed, rj->by);
	res = json_object_new_object();
	json_object_object_add(res, "state", json_object_new_string(vm_state_name(vm->state)));
	json_object_object_add(res, "rebooted_by", json_object_new_string(rj->by));
	json_object_object_add(res, "elapsed_ms", json_object_new_int64(elapsed));
	if (rj->resumed)
		json_object_object_add(res, "resumed", json_object_new_boolean(1));
	vm_job_done(job, res, PROTO_OK, NULL);
}

/* Sends the commands in order (set-action: shutdown back to poweroff), the last one answering
 * the reboot. */
static void
reboot_send(struct vm_job *job, const char *const *commands)
{
	char *cause = NULL;

	for (const char *const *c = commands; *c != NULL; c++) {
		bool last = c[1] == NULL;
		struct json_object *args =
		    strcmp(*c, "set-action") == 0 ? shutdown_action("poweroff") : NULL;

		if (vm_job_send(job, *c, args, -1, 0, last ? reboot_done : reboot_checked, job,
		                &cause) < 0) {
			vm_job_done(job, NULL, PROTO_ERR_FAILED, "vm %s: reboot: %s: %s",
			            job->vm->name, *c, cause);
			free(cause);
			return;
		}
	}
}

/* The guest is down (or ignored ACPI): reset the machine and let it run again. */
static void
reboot_reset(struct vm_job *job, const char *by)
{
	static const char *const commands[] = {"system_reset", "cont", "set-action", NULL};
	struct reboot_job *rj = job->data;

	rj->step = REBOOT_RESETTING;
	rj->by = by;
	log_info("vm %s: reboot: %s", job->vm->name,
	         strcmp(by, "reset") == 0 ? "guest ignored powerdown: system_reset"
	                                  : "guest shut down: system_reset");
	reboot_send(job, commands);
}

static void
reboot_event(struct vm_job *job, const char *name, struct json_object *data)
{
	struct reboot_job *rj = job->data;
	struct json_object *guest;
	static const char *const restore[] = {"set-action", NULL};

	if (rj->step != REBOOT_ACPI)
		return;
	if (strcmp(name, "SHUTDOWN") == 0) {
		reboot_reset(job, "guest");
	} else if (strcmp(name, "RESET") == 0 && json_object_object_get_ex(data, "guest", &guest) &&
	           json_object_get_boolean(guest)) {
		/* It rebooted by itself: nothing left but the shutdown action. */
		rj->step = REBOOT_RESETTING;
		rj->by = "guest-reset";
		reboot_send(job, restore);
	}
}

static void
reboot_timer(struct vm_job *job)
{
	struct reboot_job *rj = job->data;

	if (rj->step == REBOOT_ACPI)
		reboot_reset(job, "reset");
}

void
vm_reboot(struct vm *vm, uint64_t timeout_ms, vm_done_cb cb, void *arg)
{
	static const char *const resume_first[] = {"cont", "set-action", "system_powerdown", NULL};
	static const char *const acpi[] = {"set-action", "system_powerdown", NULL};
	struct reboot_job *rj;
	struct vm_job *job;
	char *cause = NULL;

	if (!vm_job_admit(vm, VM_OP_REBOOT, cb, arg) || refuse_not_running(vm, cb, arg))
		return;
	rj = xcalloc(1, sizeof *rj);
	rj->timeout_ms = timeout_ms ? timeout_ms : vm->live_cfg->shutdown_timeout_ms;
	rj->resumed = vm->state == VM_PAUSED;
	job = vm_job_new(vm, &reboot_kind, rj, cb, arg);
	log_info("vm %s: reboot (timeout %llu ms)%s", vm->name, (unsigned long long)rj->timeout_ms,
	         rj->resumed ? ", resuming it first" : "");
	/* One pipeline; QEMU runs them in order. A paused guest never sees ACPI: resumed first. */
	for (const char *const *c = rj->resumed ? resume_first : acpi; *c != NULL; c++) {
		struct json_object *args =
		    strcmp(*c, "set-action") == 0 ? shutdown_action("pause") : NULL;

		if (vm_job_send(job, *c, args, -1, 0, reboot_checked, job, &cause) < 0) {
			vm_job_done(job, NULL, PROTO_ERR_FAILED, "vm %s: reboot: %s: %s", vm->name,
			            *c, cause);
			free(cause);
			return;
		}
	}
	vm_job_arm(job, rj->timeout_ms);
}

/* ---- reset, pause, resume: one QMP command each ---- */

static const struct vm_job_kind reset_kind = {.name = "reset", .op = VM_OP_RESET};
static const struct vm_job_kind pause_kind = {.name = "pause", .op = VM_OP_PAUSE};
static const struct vm_job_kind resume_kind = {.name = "resume", .op = VM_OP_RESUME};

static void
simple_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm_job *job = arg;
	struct vm *vm = job->vm;
	struct json_object *res;

	if (r->status == QMP_TIMEOUT) {
		vm_job_done(job, NULL, PROTO_ERR_TIMEOUT, "vm %s: %s timed out", vm->name,
		            r->command);
		return;
	}
	if (r->status != QMP_OK) {
		vm_job_done(job, NULL, vm_qmp_err(r), "vm %s: %s failed: %s", vm->name, r->command,
		            r->error_desc);
		return;
	}
	if (job->kind == &pause_kind) {
		snprintf(vm->qemu_status, sizeof vm->qemu_status, "paused");
		vm_set_state(vm, VM_PAUSED);
	} else if (job->kind == &resume_kind) {
		snprintf(vm->qemu_status, sizeof vm->qemu_status, "running");
		vm_set_state(vm, VM_RUNNING);
	}
	res = json_object_new_object();
	json_object_object_add(res, "state", json_object_new_string(vm_state_name(vm->state)));
	vm_job_done(job, res, PROTO_OK, NULL);
}

static void
simple_job(struct vm *vm, const struct vm_job_kind *kind, const char *command, vm_done_cb cb,
           void *arg)
{
	struct vm_job *job;
	char *cause = NULL;

	if (!vm_job_admit(vm, kind->op, cb, arg) || refuse_not_running(vm, cb, arg))
		return;
	job = vm_job_new(vm, kind, NULL, cb, arg);
	log_info("vm %s: %s", vm->name, kind->name);
	if (vm_job_send(job, command, NULL, -1, 0, simple_done, job, &cause) < 0) {
		vm_job_done(job, NULL, PROTO_ERR_FAILED, "vm %s: %s: %s", vm->name, command, cause);
		free(cause);
	}
}

void
vm_reset(struct vm *vm, vm_done_cb cb, void *arg)
{
	simple_job(vm, &reset_kind, "system_reset", cb, arg);
}

void
vm_pause(struct vm *vm, vm_done_cb cb, void *arg)
{
	simple_job(vm, &pause_kind, "stop", cb, arg);
}

void
vm_resume(struct vm *vm, vm_done_cb cb, void *arg)
{
	simple_job(vm, &resume_kind, "cont", cb, arg);
}

/* ---- bringing every VM down ---- */

struct bring_down {
	struct vm *vm;
	uint64_t timeout_ms;
	vm_done_cb cb;
	void *arg;
};

static void
bring_down_next(struct json_object *result, enum proto_err code, const char *message, void *arg)
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
		                       json_object_new_string(vm_state_name(vm->state)));
		json_object_object_add(res, "ended_by", NULL);
		cb(res, PROTO_OK, NULL, cbarg);
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
		                       json_object_new_string(vm_state_name(vm->state)));
		json_object_object_add(res, "ended_by",
		                       json_object_new_string("restart-cancelled"));
		cb(res, PROTO_OK, NULL, arg);
		return true;
	}
	if (job == NULL) {
		if (!vm_is_active(vm))
			return false;
		vm_powerdown(vm, timeout_ms, true, cb, arg);
		return true;
	}
	if (job->kind == &powerdown_kind || job->kind == &kill_kind) {
		struct stop_job *sj = job->data;
		uint64_t limit = timeout_ms ? timeout_ms : vm->live_cfg->shutdown_timeout_ms;
		int64_t left = job->t0 + (int64_t)limit - clock_mono_ms();

		/* Join it; the shorter of the two timeouts wins. */
		if (job->kind == &powerdown_kind && sj->step == STOP_GUEST &&
		    limit < sj->timeout_ms) {
			sj->timeout_ms = limit;
			vm_job_arm(job, left > 0 ? (uint64_t)left : 0);
		}
		vm_job_join(job, cb, arg);
		return true;
	}
	{
		struct bring_down *bd = xcalloc(1, sizeof *bd);

		bd->vm = vm;
		bd->timeout_ms = timeout_ms;
		bd->cb = cb;
		bd->arg = arg;
		vm_job_join(job, bring_down_next, bd);
	}
	return true;
}
