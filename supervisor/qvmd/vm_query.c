/* Read-only views of a VM (list rows, status) and the raw QMP passthrough: never serialized. */
#include "vm_private.h"

#include "vm_apply.h"
#include "vm_vnc.h"

#include "cfg.h"
#include "vm_job.h"
#include "clock.h"
#include "log.h"
#include "qmp.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static bool
definition_changed(const struct vm *vm)
{
	/* What the definitions mean, not their text: a comment is no change, nor a device
	 * hot-plugged as the file now says (vm_apply.c). */
	return vm_apply_needed(vm, false);
}

/* What differs between the running VM and cfg, each change as status lists it: what would be
 * applied live waits for `apply`, the rest for a restart. */
static struct json_object *
pending_json(const struct vm *vm, const struct vm_config *cfg, bool *changed)
{
	struct json_object *arr = json_object_new_array();
	struct vm_config *running = vm_apply_running(vm);
	struct cfg_diff diff;

	if (running == NULL)
		return arr;
	cfg_diff_vm(running, cfg, &diff);
	*changed = diff.n > 0;
	for (size_t i = 0; i < diff.n; i++) {
		const struct cfg_change *c = &diff.v[i];
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "what", json_object_new_string(c->what));
		json_object_object_add(o, "action",
		                       json_object_new_string(cfg_change_action_name(c->action)));
		json_object_object_add(o, "old",
		                       c->old_text ? json_object_new_string(c->old_text) : NULL);
		json_object_object_add(o, "new",
		                       c->new_text ? json_object_new_string(c->new_text) : NULL);
		json_object_object_add(o, "live", json_object_new_boolean(c->live));
		json_object_object_add(
		    o, "reason",
		    json_object_new_string(c->live ? "not applied yet (qvmctl apply)" : c->reason));
		json_object_array_add(arr, o);
	}
	cfg_diff_free(&diff);
	cfg_vm_free(running);
	return arr;
}

/* Since when the guest runs, or null when it does not. */
static struct json_object *
uptime_ms(const struct vm *vm)
{
	if ((vm->state != VM_RUNNING && vm->state != VM_PAUSED && vm->state != VM_STOPPING) ||
	    vm->started_at <= 0)
		return NULL;
	return json_object_new_int64(clock_now_ms() - vm->started_at);
}

struct json_object *
vm_list_row(const struct vm *vm)
{
	const struct vm_config *cfg = vm->live_cfg && vm_is_active(vm) ? vm->live_cfg : vm->cfg;
	struct json_object *o = json_object_new_object();

	if (cfg == NULL)
		cfg = vm->live_cfg;
	json_object_object_add(o, "name", json_object_new_string(vm->name));
	json_object_object_add(o, "state", json_object_new_string(vm_state_name(vm->state)));
	json_object_object_add(o, "pid", vm->pid > 0 ? json_object_new_int(vm->pid) : NULL);
	json_object_object_add(o, "vcpus", cfg ? json_object_new_int((int)cfg->vcpus) : NULL);
	json_object_object_add(o, "memory_bytes", cfg ? json_object_new_uint64(cfg->memory) : NULL);
	json_object_object_add(o, "uptime_ms", uptime_ms(vm));
	json_object_object_add(o, "qemu_status",
	                       vm_is_active(vm) && strcmp(vm->qemu_status, "none") != 0
	                           ? json_object_new_string(vm->qemu_status)
	                           : NULL);
	json_object_object_add(o, "restarts", json_object_new_int64(vm->restarts));
	json_object_object_add(o, "definition_changed",
	                       json_object_new_boolean(definition_changed(vm)));
	json_object_object_add(o, "definition_removed", json_object_new_boolean(vm->cfg == NULL));
	return o;
}

/*
 * What status says of the definition, from the file as it is on disk now (not as of the last
 * reload): whether it differs from what runs (or, for a stopped VM, from what was loaded), and the
 * file:line errors that would make the next start fail.
 */
static void
status_definition(const struct vm *vm, struct json_object *o)
{
	const struct vm_config *ref = vm_is_active(vm) && vm->live_cfg ? vm->live_cfg : vm->cfg;
	struct json_object *errors = json_object_new_array(), *pending = NULL;
	struct cfg_errors errs;
	struct vm_config *cfg;
	bool changed;

	if (vm->cfg == NULL) {
		json_object_object_add(o, "definition_errors", errors);
		return;
	}
	cfg_errors_init(&errs);
	cfg = cfg_vm_load(vm->cfg->path, &errs);
	for (size_t i = 0; i < errs.n; i++)
		json_object_array_add(errors, json_object_new_string(errs.msgs[i]));
	cfg_errors_free(&errs);
	changed = cfg == NULL || !cfg_vm_equal(cfg, ref);
	if (cfg != NULL && vm_is_active(vm) && vm->live_cfg != NULL)
		pending = pending_json(vm, cfg, &changed);
	cfg_vm_free(cfg);
	json_object_object_add(o, "definition_changed", json_object_new_boolean(changed));
	json_object_object_add(o, "definition_errors", errors);
	if (pending != NULL) /* a running VM's */
		json_object_object_add(o, "pending", pending);
}

/* What QEMU says of drive id in query-block's result: whether it holds a medium, the tray. */
static bool
block_drive(struct json_object *block, const char *id, bool *inserted, bool *tray_open)
{
	for (size_t i = 0; block != NULL && i < json_object_array_length(block); i++) {
		struct json_object *dev = json_object_array_get_idx(block, i), *v;

		if (!json_object_object_get_ex(dev, "qdev", &v) ||
		    strcmp(json_object_get_string(v), id) != 0)
			continue;
		*inserted = json_object_object_get_ex(dev, "inserted", &v) && v != NULL;
		*tray_open =
		    json_object_object_get_ex(dev, "tray_open", &v) && json_object_get_boolean(v);
		return true;
	}
	return false;
}

/*
 * The cdrom drives: {id, medium (the image's path, or null: empty), tray ("open", "closed", or
 * null when QEMU was not asked), boot}. Which file a drive holds is qvmd's record; whether it
 * holds one at all and the tray are QEMU's (block: query-block's result, or NULL).
 */
static struct json_object *
status_cdroms(const struct vm_config *cfg, struct json_object *block)
{
	struct json_object *arr = json_object_new_array();

	for (size_t i = 0; cfg != NULL && i < cfg->ncdroms; i++) {
		const struct cfg_cdrom *cd = &cfg->cdroms[i];
		struct json_object *o = json_object_new_object();
		bool inserted = cd->file != NULL, tray_open = false;
		bool asked = block_drive(block, cd->id, &inserted, &tray_open);

		json_object_object_add(o, "id", json_object_new_string(cd->id));
		json_object_object_add(
		    o, "medium",
		    inserted && cd->file != NULL ? json_object_new_string(cd->file) : NULL);
		json_object_object_add(o, "tray",
		                       asked ? json_object_new_string(tray_open ? "open" : "closed")
		                             : NULL);
		json_object_object_add(o, "boot", json_object_new_boolean(cd->boot));
		json_object_array_add(arr, o);
	}
	return arr;
}

static struct json_object *
status_object(const struct vm *vm, const char *qemu_status, struct json_object *block)
{
	const struct vm_config *cfg = vm->live_cfg && vm_is_active(vm) ? vm->live_cfg : vm->cfg;
	struct json_object *o = vm_list_row(vm), *disks, *nets;
	if (cfg == NULL)
		cfg = vm->live_cfg;
	json_object_object_add(o, "qemu_status",
	                       vm_is_active(vm) && strcmp(qemu_status, "none") != 0
	                           ? json_object_new_string(qemu_status)
	                           : NULL);
	json_object_object_add(
	    o, "machine",
	    json_object_new_string(cfg && cfg->machine == CFG_MACHINE_PC ? "pc" : "q35"));
	json_object_object_add(
	    o, "accel", json_object_new_string(cfg && cfg->accel == CFG_ACCEL_TCG ? "tcg" : "kvm"));
	json_object_object_add(o, "last_exit", vm_last_exit_json(vm));
	json_object_object_add(o, "job",
	                       vm->job ? json_object_new_string(vm->job->kind->name) : NULL);
	if (vm->restart_ev && vm->restart_due > clock_mono_ms() && !vm_is_active(vm))
		json_object_object_add(o, "restart_in_ms",
		                       json_object_new_int64(vm->restart_due - clock_mono_ms()));
	disks = json_object_new_array();
	nets = json_object_new_array();
	if (vm_is_active(vm)) {
		for (size_t i = 0; i < vm->ndevs; i++)
			json_object_array_add(vm->devs[i]->is_disk ? disks : nets,
			                      vm_dev_json(vm->devs[i]));
	} else {
		for (size_t i = 0; cfg && i < cfg->ndisks; i++) {
			struct vm_dev *dev = vm_dev_new_disk(&cfg->disks[i], NULL);

			json_object_array_add(disks, vm_dev_json(dev));
			vm_dev_free(dev);
		}
		for (size_t i = 0; cfg && i < cfg->nnets; i++) {
			struct vm_dev *dev = vm_dev_new_net(&cfg->nets[i], NULL);

			json_object_array_add(nets, vm_dev_json(dev));
			vm_dev_free(dev);
		}
	}
	json_object_object_add(o, "disks", disks);
	json_object_object_add(o, "nets", nets);
	json_object_object_add(o, "cdroms", status_cdroms(cfg, block));
	json_object_object_add(o, "display",
	                       json_object_new_string(cfg_display_name(
	                           cfg != NULL ? cfg->display : CFG_DISPLAY_NONE)));
	json_object_object_add(
	    o, "vnc_socket", vm_vnc_socket(vm) ? json_object_new_string(vm_vnc_socket(vm)) : NULL);
	status_definition(vm, o);
	return o;
}

/* A request waiting for QEMU's answer. */
struct query {
	struct vm *vm;
	vm_done_cb cb;
	void *arg;
	/* status: query-status (and query-block for the cdroms) */
	unsigned pending;
	char qemu_status[32];
	struct json_object *block;
};

static void
status_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct query *q = arg;
	struct json_object *st;

	if (strcmp(r->command, "query-block") == 0) {
		if (r->status == QMP_OK)
			q->block = json_object_get(r->result);
	} else {
		const char *qs = "unknown";

		if (r->status == QMP_OK && json_object_object_get_ex(r->result, "status", &st))
			qs = json_object_get_string(st);
		else if (r->status == QMP_TIMEOUT)
			qs = "timeout";
		if (r->status == QMP_OK)
			snprintf(q->vm->qemu_status, sizeof q->vm->qemu_status, "%s", qs);
		snprintf(q->qemu_status, sizeof q->qemu_status, "%s", qs);
	}
	if (--q->pending > 0)
		return;
	q->cb(status_object(q->vm, q->qemu_status, q->block), PROTO_OK, NULL, q->arg);
	json_object_put(q->block);
	free(q);
}

void
vm_status(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct query *q;
	char *cause = NULL;

	/* A background job may hold QEMU's monitor for a long time (snapshot-save writes all RAM
	 * before QEMU reads another command): status then comes from what qvmd knows. */
	if (vm->qmp == NULL || vm->qmp_closed || !qmp_conn_is_ready(vm->qmp) || vm->bg != NULL) {
		cb(status_object(vm, vm->qemu_status, NULL), PROTO_OK, NULL, arg);
		return;
	}
	q = xcalloc(1, sizeof *q);
	q->vm = vm;
	q->cb = cb;
	q->arg = arg;
	if (qmp_execute(vm->qmp, "query-status", NULL, VM_QUERY_TIMEOUT_MS, status_done, q,
	                &cause) < 0) {
		free(cause);
		free(q);
		cb(status_object(vm, vm->qemu_status, NULL), PROTO_OK, NULL, arg);
		return;
	}
	q->pending = 1;
	/* The drives' media and trays, in the same round trip. */
	if (vm->live_cfg != NULL && vm->live_cfg->ncdroms > 0) {
		if (qmp_execute(vm->qmp, "query-block", NULL, VM_QUERY_TIMEOUT_MS, status_done, q,
		                &cause) < 0)
			free(cause);
		else
			q->pending++;
	}
}

static void
passthrough_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct query *q = arg;
	struct json_object *res;
	char *msg;

	if (r->status == QMP_OK) {
		res = json_object_new_object();
		json_object_object_add(res, "return", json_object_get(r->result));
		q->cb(res, PROTO_OK, NULL, q->arg);
		free(q);
		return;
	}
	if (r->status == QMP_ERROR)
		msg = xasprintf("vm %s: %s: %s", q->vm->name, r->error_class, r->error_desc);
	else if (r->status == QMP_TIMEOUT)
		msg = xasprintf("vm %s: %s timed out", q->vm->name, r->command);
	else
		msg = xasprintf("vm %s: %s", q->vm->name, r->error_desc);
	q->cb(NULL, vm_qmp_err(r), msg, q->arg);
	free(msg);
	free(q);
}

void
vm_qmp(struct vm *vm, const char *command, struct json_object *args, vm_done_cb cb, void *arg)
{
	struct query *q;
	char *cause = NULL, *msg;

	if (vm->qmp == NULL || vm->qmp_closed || !qmp_conn_is_ready(vm->qmp)) {
		msg =
		    xasprintf("vm %s: not running (state %s)", vm->name, vm_state_name(vm->state));
		cb(NULL, PROTO_ERR_NOT_RUNNING, msg, arg);
		free(msg);
		return;
	}
	q = xcalloc(1, sizeof *q);
	q->vm = vm;
	q->cb = cb;
	q->arg = arg;
	if (qmp_execute(vm->qmp, command, args, 0, passthrough_done, q, &cause) < 0) {
		msg = xasprintf("vm %s: %s", vm->name, cause);
		cb(NULL, PROTO_ERR_FAILED, msg, arg);
		free(msg);
		free(cause);
		free(q);
	}
}
