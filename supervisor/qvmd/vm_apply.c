/*
 * The apply job: a running VM made what its file says. config/cfg_diff lists the differences
 * between what the VM runs with (its start-time definition, with its devices as the hot-plug
 * bookkeeping has them now) and the file; the device changes are carried out as hot-plug
 * operations of this one job (vm_hotplug_attach / vm_hotplug_detach), all started at once so
 * that their QMP commands are pipelined: N added devices cost about what the slowest one costs.
 * A replace is an unplug, then the plug of the new section once the guest has let go. Each
 * operation keeps its own bookkeeping (devices.json before QEMU is touched) and its own rollback:
 * what applied stays applied, what failed leaves QEMU and the books as they were, and the next
 * apply sees it again as a difference.
 */
#include "vm_apply.h"

#include "cfg.h"
#include "log.h"
#include "vm_job.h"
#include "vm_private.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum apply_result { AR_PLANNED, AR_RUNNING, AR_APPLIED, AR_PENDING, AR_FAILED };

struct apply;

/* One change of the plan and its outcome. */
struct apply_change {
	struct apply *a;
	const struct cfg_change *c; /* in a->diff */
	enum apply_result result;
	char *reason; /* pending: why */
	char *error;  /* failed: why */
	struct hp_op *op;
	bool replugging; /* replace: the old device is gone, the new one is being plugged */
};

struct apply {
	struct vm *vm;
	struct vm_job *job;
	struct vm_config *running; /* what the diff was made from (owned) */
	struct vm_config *file;
	struct cfg_diff diff;
	struct apply_change *ch;
	size_t n;
	bool dry_run;
	bool starting; /* the operations are being started: the job may not end yet */
};

struct vm_config *
vm_apply_running(const struct vm *vm)
{
	struct vm_config *r;
	size_t nd = 0, nn = 0;

	if (!vm_is_active(vm) || vm->live_cfg == NULL)
		return NULL;
	r = cfg_vm_dup(vm->live_cfg);
	for (size_t i = 0; i < r->ndisks; i++)
		cfg_disk_clear(&r->disks[i]);
	for (size_t i = 0; i < r->nnets; i++)
		cfg_net_clear(&r->nets[i]);
	free(r->disks);
	free(r->nets);
	r->disks = NULL;
	r->nets = NULL;
	for (size_t i = 0; i < vm->ndevs; i++) {
		if (vm->devs[i]->attaching)
			continue; /* not the guest's (yet) */
		if (vm->devs[i]->is_disk)
			nd++;
		else
			nn++;
	}
	r->disks = nd ? xcalloc(nd, sizeof *r->disks) : NULL;
	r->nets = nn ? xcalloc(nn, sizeof *r->nets) : NULL;
	r->ndisks = r->nnets = 0;
	for (size_t i = 0; i < vm->ndevs; i++) {
		const struct vm_dev *dev = vm->devs[i];

		if (dev->attaching)
			continue;
		if (dev->is_disk)
			cfg_disk_copy(&r->disks[r->ndisks++], &dev->disk);
		else
			cfg_net_copy(&r->nets[r->nnets++], &dev->net);
	}
	return r;
}

void
vm_apply_live_edit(struct vm *vm, const struct cfg_disk *disk, const struct cfg_net *net,
                   const char *remove_id)
{
	char *path, *cause = NULL, *text = NULL;
	struct vm_config *cfg = NULL;
	struct cfg_errors errs;
	int rc;

	const char *id = disk ? disk->id : net ? net->id : remove_id;
	bool has = cfg_vm_disk(vm->live_cfg, id) || cfg_vm_net(vm->live_cfg, id);

	if (!vm_is_active(vm) || vm->live_cfg == NULL || vm->live_text == NULL ||
	    has == (remove_id == NULL))
		return; /* nothing to do: e.g. the removal of a device hot-plugged without --persist
		         */
	path = rundir_def_path(vm);
	rundir_write(path, vm->live_text);
	rc = disk != NULL  ? cfg_write_add_disk(path, disk, &cause)
	     : net != NULL ? cfg_write_add_net(path, net, &cause)
	                   : cfg_write_remove_device(path, remove_id, &cause);
	cfg_errors_init(&errs);
	if (rc == 0 && (cfg = cfg_vm_load(path, &errs)) != NULL)
		text = vm_read_text(path);
	if (rc < 0 || cfg == NULL || text == NULL) {
		/* The devices' own books (devices.json) still say what runs. */
		log_warn("vm %s: cannot update the running definition %s: %s", vm->name, path,
		         cause    ? cause
		         : errs.n ? errs.msgs[0]
		                  : "cannot read it back");
		rundir_write(path, vm->live_text);
	} else {
		free(cfg->path);
		cfg->path = xstrdup(vm->live_cfg->path);
		cfg_vm_free(vm->live_cfg);
		vm->live_cfg = cfg;
		cfg = NULL;
		free(vm->live_text);
		vm->live_text = text;
		text = NULL;
	}
	cfg_errors_free(&errs);
	cfg_vm_free(cfg);
	free(text);
	free(cause);
	free(path);
}

bool
vm_apply_needed(const struct vm *vm, bool live_only)
{
	struct vm_config *running = vm_apply_running(vm);
	struct cfg_diff diff;
	bool needed = false;

	if (running == NULL || vm->cfg == NULL) {
		cfg_vm_free(running);
		return false;
	}
	cfg_diff_vm(running, vm->cfg, &diff);
	for (size_t i = 0; i < diff.n; i++)
		needed = needed || !live_only || diff.v[i].live;
	cfg_diff_free(&diff);
	cfg_vm_free(running);
	return needed;
}

static const char *
result_name(enum apply_result r)
{
	switch (r) {
	case AR_PLANNED:
		return "planned";
	case AR_RUNNING:
		return "running";
	case AR_APPLIED:
		return "applied";
	case AR_PENDING:
		return "pending";
	case AR_FAILED:
		return "failed";
	}
	return "?";
}

static struct json_object *
str_or_null(const char *s)
{
	return s != NULL ? json_object_new_string(s) : NULL;
}

/* A change as `diff` and status show it. */
static struct json_object *
change_json(const struct cfg_change *c)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "what", json_object_new_string(c->what));
	json_object_object_add(o, "action",
	                       json_object_new_string(cfg_change_action_name(c->action)));
	json_object_object_add(o, "old", str_or_null(c->old_text));
	json_object_object_add(o, "new", str_or_null(c->new_text));
	json_object_object_add(o, "live", json_object_new_boolean(c->live));
	json_object_object_add(o, "reason", str_or_null(c->reason));
	return o;
}

static struct json_object *
apply_result_json(const struct apply *a)
{
	struct json_object *res = json_object_new_object(), *arr = json_object_new_array();
	size_t count[AR_FAILED + 1] = {0};

	for (size_t i = 0; i < a->n; i++) {
		const struct apply_change *ac = &a->ch[i];
		struct json_object *o = change_json(ac->c);

		json_object_object_del(o, "live");
		json_object_object_del(o, "reason");
		json_object_object_add(o, "result",
		                       json_object_new_string(result_name(ac->result)));
		if (ac->reason != NULL)
			json_object_object_add(o, "reason", json_object_new_string(ac->reason));
		if (ac->error != NULL)
			json_object_object_add(o, "error", json_object_new_string(ac->error));
		json_object_array_add(arr, o);
		count[ac->result]++;
	}
	json_object_object_add(res, "changes", arr);
	json_object_object_add(res, "dry_run", json_object_new_boolean(a->dry_run));
	json_object_object_add(res, "applied", json_object_new_int64((int64_t)count[AR_APPLIED]));
	json_object_object_add(res, "pending", json_object_new_int64((int64_t)count[AR_PENDING]));
	json_object_object_add(res, "failed", json_object_new_int64((int64_t)count[AR_FAILED]));
	return res;
}

static void
apply_free(struct apply *a)
{
	if (a == NULL)
		return;
	for (size_t i = 0; i < a->n; i++) {
		vm_hotplug_op_free(a->ch[i].op);
		free(a->ch[i].reason);
		free(a->ch[i].error);
	}
	free(a->ch);
	cfg_diff_free(&a->diff);
	cfg_vm_free(a->running);
	cfg_vm_free(a->file);
	free(a);
}

static void
apply_job_free(void *data)
{
	apply_free(data);
}

/* Ends the job once every operation has its outcome. */
static void
apply_settle(struct apply *a)
{
	size_t applied = 0, pending = 0, failed = 0;

	if (a->starting)
		return;
	for (size_t i = 0; i < a->n; i++) {
		if (a->ch[i].result == AR_RUNNING)
			return;
		applied += a->ch[i].result == AR_APPLIED;
		pending += a->ch[i].result == AR_PENDING;
		failed += a->ch[i].result == AR_FAILED;
	}
	log_info("vm %s: apply: %zu applied, %zu pending, %zu failed", a->vm->name, applied,
	         pending, failed);
	vm_job_done(a->job, apply_result_json(a), PROTO_OK, NULL);
}

static void start_change(struct apply_change *ac);

/* An operation of the job ended. */
static void
op_done(struct json_object *result, enum proto_err code, const char *msg, void *arg)
{
	struct apply_change *ac = arg;
	const struct cfg_change *c = ac->c;

	json_object_put(result);
	if (code == PROTO_OK && c->action == CFG_CHANGE_REPLACE && !ac->replugging) {
		/* The old device is gone: plug the new section. */
		ac->replugging = true;
		start_change(ac);
		return;
	}
	if (code == PROTO_OK) {
		ac->result = AR_APPLIED;
	} else if (c->action != CFG_CHANGE_ADD && !ac->replugging &&
	           (code == PROTO_ERR_TIMEOUT || code == PROTO_ERR_BUSY)) {
		/* The guest has not let go (yet): the removal completes when it does. */
		ac->result = AR_PENDING;
		ac->reason = xstrdup("removal pending (waiting for the guest to release it)");
	} else {
		ac->result = AR_FAILED;
		ac->error = ac->replugging
		                ? xasprintf("removed, but plugging the new one failed: %s",
		                            msg ? msg : "unknown error")
		                : xstrdup(msg ? msg : "unknown error");
	}
	log_info("vm %s: apply: %s %s: %s%s%s", ac->a->vm->name, cfg_change_action_name(c->action),
	         c->what, result_name(ac->result), ac->error ? ": " : "",
	         ac->error ? ac->error : "");
	apply_settle(ac->a);
}

/* Starts the operation of one live change (a replace: its unplug, then its plug). */
static void
start_change(struct apply_change *ac)
{
	const struct cfg_change *c = ac->c;
	struct vm_job *job = ac->a->job;

	ac->result = AR_RUNNING;
	switch (c->action) {
	case CFG_CHANGE_ADD:
		vm_hotplug_attach(job, c->new_disk, c->new_net, &ac->op, op_done, ac);
		break;
	case CFG_CHANGE_REMOVE:
		vm_hotplug_detach(job, c->old_disk ? c->old_disk->id : c->old_net->id, &ac->op,
		                  op_done, ac);
		break;
	case CFG_CHANGE_REPLACE:
		if (ac->replugging)
			vm_hotplug_attach(job, c->new_disk, c->new_net, &ac->op, op_done, ac);
		else
			vm_hotplug_detach(job, c->old_disk ? c->old_disk->id : c->old_net->id,
			                  &ac->op, op_done, ac);
		break;
	case CFG_CHANGE_CHANGE:
		break;
	}
}

/* The guest did not release a device in time: that removal stays pending. */
static void
apply_timer(struct vm_job *job)
{
	struct apply *a = job->data;

	a->starting = true; /* one settle after all of them */
	for (size_t i = 0; i < a->n; i++)
		if (a->ch[i].op != NULL)
			vm_hotplug_op_timeout(a->ch[i].op);
	a->starting = false;
	apply_settle(a);
}

static bool
apply_qemu_gone(struct vm_job *job, const struct vm_exit *exit)
{
	struct apply *a = job->data;

	for (size_t i = 0; i < a->n; i++)
		if (a->ch[i].op != NULL)
			vm_hotplug_op_qemu_gone(a->ch[i].op);
	return false;
}

static struct hp_op *
apply_detach_op(struct vm_job *job, const char *id)
{
	struct apply *a = job->data;
	struct hp_op *op;

	for (size_t i = 0; i < a->n; i++)
		if ((op = vm_hotplug_op_detaching(a->ch[i].op, id)) != NULL)
			return op;
	return NULL;
}

static const struct vm_job_kind apply_kind = {
    .name = "apply",
    .op = VM_OP_APPLY,
    .timer = apply_timer,
    .qemu_gone = apply_qemu_gone,
    .detach_op = apply_detach_op,
    .free = apply_job_free,
};

/*
 * Reads the VM's file again. Returns it (the caller's), or NULL with cb answered: the file is
 * gone or has errors (each "file:line: ..."), nothing changed.
 */
static struct vm_config *
reread(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct cfg_errors errs;
	struct vm_config *cfg;
	char *msg = NULL, *next;

	if (vm->cfg == NULL) {
		msg = xasprintf("vm %s: definition file was removed; nothing to apply", vm->name);
		cb(NULL, PROTO_ERR_NOT_FOUND, msg, arg);
		free(msg);
		return NULL;
	}
	cfg_errors_init(&errs);
	cfg = cfg_vm_load(vm->cfg->path, &errs);
	if (cfg == NULL) {
		for (size_t i = 0; i < errs.n; i++) {
			next = msg == NULL ? xstrdup(errs.msgs[i])
			                   : xasprintf("%s; %s", msg, errs.msgs[i]);
			free(msg);
			msg = next;
		}
		next = xasprintf("vm %s: the definition has errors, nothing was applied: %s",
		                 vm->name, msg ? msg : vm->cfg->path);
		cb(NULL, PROTO_ERR_INVALID, next, arg);
		free(next);
		free(msg);
		cfg_errors_free(&errs);
		return NULL;
	}
	cfg_errors_free(&errs);
	return cfg;
}

void
vm_apply(struct vm *vm, bool dry_run, vm_done_cb cb, void *arg)
{
	struct vm_config *cfg;
	struct apply *a;
	bool armed = false;
	char *msg;

	if (!dry_run && !vm_job_admit(vm, VM_OP_APPLY, cb, arg))
		return;
	if ((cfg = reread(vm, cb, arg)) == NULL)
		return;
	vm_update_config(vm, cfg); /* as a reload would (takes cfg) */
	if (vm->state != VM_RUNNING && vm->state != VM_PAUSED) {
		if (vm_is_active(vm)) {
			vm_job_refuse_busy(vm, cb, arg);
			return;
		}
		msg = xasprintf("vm %s: not running (state %s); its definition applies when it "
		                "starts",
		                vm->name, vm_state_name(vm->state));
		cb(NULL, PROTO_ERR_NOT_RUNNING, msg, arg);
		free(msg);
		return;
	}
	a = xcalloc(1, sizeof *a);
	a->vm = vm;
	a->dry_run = dry_run;
	a->running = vm_apply_running(vm);
	a->file = cfg_vm_dup(vm->cfg);
	cfg_diff_vm(a->running, a->file, &a->diff);
	a->n = a->diff.n;
	a->ch = a->n ? xcalloc(a->n, sizeof *a->ch) : NULL;
	for (size_t i = 0; i < a->n; i++) {
		a->ch[i].a = a;
		a->ch[i].c = &a->diff.v[i];
		a->ch[i].result = a->diff.v[i].live ? AR_PLANNED : AR_PENDING;
		if (!a->diff.v[i].live)
			a->ch[i].reason = xstrdup(a->diff.v[i].reason);
	}
	if (dry_run) {
		cb(apply_result_json(a), PROTO_OK, NULL, arg);
		apply_free(a);
		return;
	}
	a->job = vm_job_new(vm, &apply_kind, a, cb, arg);
	a->starting = true;
	for (size_t i = 0; i < a->n; i++) {
		if (!a->ch[i].c->live)
			continue;
		if (a->ch[i].c->action != CFG_CHANGE_ADD && !armed) {
			vm_job_arm(a->job, VM_DETACH_TIMEOUT_MS);
			armed = true;
		}
		start_change(&a->ch[i]);
	}
	a->starting = false;
	apply_settle(a);
}

void
vm_diff(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct json_object *res, *arr;
	struct vm_config *running, *cfg;
	struct cfg_diff diff;

	if ((cfg = reread(vm, cb, arg)) == NULL)
		return;
	res = json_object_new_object();
	arr = json_object_new_array();
	if ((running = vm_apply_running(vm)) != NULL) {
		cfg_diff_vm(running, cfg, &diff);
		for (size_t i = 0; i < diff.n; i++)
			json_object_array_add(arr, change_json(&diff.v[i]));
		cfg_diff_free(&diff);
		cfg_vm_free(running);
	}
	cfg_vm_free(cfg);
	json_object_object_add(res, "running", json_object_new_boolean(vm_is_active(vm)));
	json_object_object_add(res, "changes", arr);
	cb(res, PROTO_OK, NULL, arg);
}
