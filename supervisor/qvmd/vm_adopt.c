/*
 * Re-attaching to a QEMU left running by an earlier qvmd. The run directory says which process it
 * was; a pid alone never identifies a QEMU (pids are reused): the process start time and the
 * command line (its -pidfile and -name) must match too, and it must run as the uid recorded for
 * the VM (vm_uid.h). An adopted VM publishes the state it is found in, like any other state change.
 */
#include "vm.h"
#include "vm_private.h"

#include "cfg.h"
#include "clock.h"
#include "log.h"
#include "proc.h"
#include "qmp.h"
#include "vm_uid.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whether pid is the QEMU this VM's run directory describes. */
static bool
rundir_verify(struct vm *vm, pid_t pid, uint64_t starttime)
{
	uint64_t now;
	char *pidfile;
	bool ok;

	if (pid <= 0 || proc_starttime(pid, &now) < 0 || now != starttime)
		return false;
	pidfile = vm_run_path(vm, "qemu/qemu.pid");
	ok = proc_cmdline_has(pid, "-pidfile", pidfile);
	/* The -name argument must name this VM too. */
	if (ok) {
		char *name = xasprintf("guest=%s", vm->name);

		ok = proc_cmdline_has(pid, "-name", name);
		free(name);
	}
	free(pidfile);
	return ok;
}

/*
 * Whether a QEMU found running runs as the uid recorded for the VM. One that does not (another
 * VM's uid, root from an older qvmd, a record lost) is not adopted and not killed: the operator
 * decides. A qvmd that is not root runs every QEMU as itself and has no record to compare.
 */
static bool
adopt_uid_matches(struct vm *vm, pid_t pid)
{
	struct vm_ids ids;
	uid_t ruid, euid;

	if (geteuid() != 0)
		return true;
	if (proc_uids(pid, &ruid, &euid) < 0) {
		log_error("vm %s: cannot read the uid of qemu pid %d: not re-attaching", vm->name,
		          (int)pid);
		return false;
	}
	if (vm_uid_recorded(vm->env.conf, vm->name, &ids) < 0) {
		log_error("vm %s: qemu pid %d runs as uid %u but the vm has no recorded qemu uid: "
		          "not re-attaching; it keeps running (stop it by hand)",
		          vm->name, (int)pid, (unsigned)euid);
		return false;
	}
	if (ruid != ids.uid || euid != ids.uid) {
		log_error("vm %s: qemu pid %d runs as uid %u but the vm's recorded qemu uid is %u: "
		          "not re-attaching; it keeps running (stop it by hand)",
		          vm->name, (int)pid, (unsigned)euid, (unsigned)ids.uid);
		return false;
	}
	return true;
}

bool
vm_adopt(struct vm *vm)
{
	char *path = vm_run_path(vm, "state.json"), *ini, *pidfile, *cause = NULL;
	struct json_object *o = json_object_from_file(path), *v;
	struct cfg_errors errs;
	pid_t pid = 0;
	uint64_t starttime = 0;
	bool pidfile_left, has_dir, had_state = false;
	char *dir;

	free(path);
	pidfile = vm_run_path(vm, "qemu/qemu.pid");
	pidfile_left = access(pidfile, F_OK) == 0;
	free(pidfile);
	if (o != NULL) {
		if (json_object_object_get_ex(o, "pid", &v))
			pid = (pid_t)json_object_get_int(v);
		if (json_object_object_get_ex(o, "starttime", &v))
			starttime = json_object_get_uint64(v);
		if (json_object_object_get_ex(o, "started_at_ms", &v))
			vm->started_at = json_object_get_int64(v);
		if (json_object_object_get_ex(o, "restarts", &v))
			vm->restarts = (unsigned)json_object_get_int64(v);
		json_object_put(o);
		had_state = true;
	}
	dir = vm_run_path(vm, "");
	has_dir = access(dir, F_OK) == 0;
	free(dir);
	if (!has_dir)
		return false; /* never started, or cleanly gone */
	vm_jobrecs_load(vm);
	if (!had_state && !pidfile_left && vm->njobrecs > 0) {
		/* Only the records of jobs on a stopped VM's images (qemu-img): no QEMU ran. */
		vm_jobrecs_orphaned(vm, "interrupted by a restart of qvmd");
		return false;
	}
	if (!had_state || !rundir_verify(vm, pid, starttime)) {
		/* No usable state.json (qvmd died between spawning QEMU and writing it, or the file
		 * is stale): QEMU's own command line still names this VM's pidfile. */
		char *pf = vm_run_path(vm, "qemu/qemu.pid"),
		     *gname = xasprintf("guest=%s", vm->name);

		pid = proc_find("-pidfile", pf, "-name", gname);
		free(pf);
		free(gname);
		if (pid > 0 && proc_starttime(pid, &starttime) == 0) {
			log_warn("vm %s: found its qemu (pid %d) by command line", vm->name,
			         (int)pid);
			vm->started_at = clock_now_ms();
		} else {
			pid = 0;
		}
	}
	if (pid == 0) {
		/* QEMU deletes its pidfile on a clean exit, not when it is killed. */
		struct vm_exit away = {.kind = VM_EXIT_UNKNOWN};

		if (had_state && pidfile_left) {
			vm_set_last_exit(vm, &away, "crash",
			                 xstrdup("qemu died while qvmd was not running"));
			vm_set_state(vm, VM_CRASHED);
			log_warn("vm %s: its qemu died while qvmd was down", vm->name);
		} else {
			vm_set_last_exit(vm, &away, "exit",
			                 xstrdup("qemu exited while qvmd was not running"));
			log_info("vm %s: qemu exited while qvmd was down", vm->name);
		}
		rundir_remove(vm);
		vm_jobrecs_orphaned(vm, "its qemu ended while qvmd was not running");
		return false;
	}

	if (!adopt_uid_matches(vm, pid))
		return false;
	vm->pidfd = proc_pidfd_open(pid);
	if (vm->pidfd < 0) {
		log_warn("vm %s: pid %d vanished during re-attach", vm->name, (int)pid);
		rundir_remove(vm);
		return false;
	}
	vm->pid = pid;
	vm->starttime = starttime;
	vm->child = false;
	vm->exited = false;
	vm->start_mono = clock_mono_ms();
	ini = rundir_def_path(vm);
	cfg_errors_init(&errs);
	vm->live_cfg = cfg_vm_load(ini, &errs);
	cfg_errors_free(&errs);
	if (vm->live_cfg == NULL) {
		/* The copy is unreadable: fall back to the definition on disk. */
		vm->live_cfg = vm->cfg ? cfg_vm_dup(vm->cfg) : NULL;
	} else {
		free(vm->live_cfg->path);
		vm->live_cfg->path = xstrdup(vm->cfg ? vm->cfg->path : ini);
	}
	vm->live_text = vm_read_text(ini);
	free(ini);
	vm_media_load(vm);
	vm_set_state(vm, VM_RUNNING);
	vm_devs_load(vm);
	rundir_save(vm);
	vm_watch_pid(vm);
	if (vm_open_qmp(vm, -1, &cause) < 0) {
		log_error("vm %s: cannot re-open qmp: %s", vm->name, cause);
		free(cause);
	}
	log_info("vm %s: re-attached to qemu pid %d", vm->name, (int)pid);
	return true;
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
	/* qvmd died in a reboot after the guest shut down (QEMU waits, paused, as vm_reboot told
	 * it to): finish the reboot. */
	if (strcmp(vm->qemu_status, "shutdown") == 0) {
		char *cause = NULL;

		log_info("vm %s: was left shut down in a reboot; resetting it", vm->name);
		if (qmp_execute(conn, "system_reset", NULL, 0, ignore_reply, vm, &cause) < 0 ||
		    qmp_execute(conn, "cont", NULL, 0, ignore_reply, vm, &cause) < 0)
			free(cause);
	}
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

void
vm_adopt_qmp_ready(struct vm *vm)
{
	char *cause = NULL;

	struct json_object *poweroff = json_object_new_object();

	/* A guest powering off ends its QEMU, even if an earlier qvmd died in a reboot that had
	 * told QEMU to pause instead. Then learn whether the guest runs or is paused, and what
	 * became of hot-plugs that were in flight or pending. */
	json_object_object_add(poweroff, "shutdown", json_object_new_string("poweroff"));
	if (qmp_execute(vm->qmp, "set-action", poweroff, 0, ignore_reply, vm, &cause) < 0 ||
	    qmp_execute(vm->qmp, "query-status", NULL, VM_QUERY_TIMEOUT_MS, adopt_status_done, vm,
	                &cause) < 0)
		free(cause);
	json_object_put(poweroff);
	vm_hotplug_reconcile(vm);
	vm_jobrecs_reattach(vm);
}

void
vm_crashed_while_away(struct vm *vm)
{
	if (vm->cfg != NULL && vm->cfg->restart != CFG_RESTART_NO)
		vm_schedule_restart(vm, true);
}
