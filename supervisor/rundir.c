/*
 * The per-VM run directory (<run_dir>/<name>/): QEMU's QMP socket and pidfile, plus what a
 * restarted qvmd needs to re-attach: state.json (pid, process start time, start time) and NAME.ini
 * (the definition the QEMU was started from). A pid alone never identifies a QEMU: the start time
 * and the command line must match too.
 */
#include "vm_private.h"

#include "cfg.h"
#include "daemon.h"
#include "log.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The copy of the definition the QEMU was started from: <run_dir>/<name>/<name>.ini. */
static char *
rundir_def_path(const struct vm *vm)
{
	return xasprintf("%s/%s/%s.ini", vm->d->conf->run_dir, vm->name, vm->name);
}

/*
 * Writes text to path atomically against a qvmd crash (temp file, rename). No fsync: the run
 * directory lives in /run and describes QEMUs that do not survive a power loss either, and an fsync
 * here would stall the event loop (and every other VM) for milliseconds.
 */
int
rundir_write(const char *path, const char *text)
{
	char *tmp = xasprintf("%s.tmp", path);
	size_t len = strlen(text);
	int fd, rc = -1;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0 && write(fd, text, len) == (ssize_t)len && rename(tmp, path) == 0)
		rc = 0;
	if (fd >= 0)
		close(fd);
	if (rc < 0) {
		log_error("cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
	}
	free(tmp);
	return rc;
}

void
rundir_save(struct vm *vm)
{
	struct json_object *o = json_object_new_object();
	char *path = vm_run_path(vm, "state.json"), *ini = rundir_def_path(vm);

	json_object_object_add(o, "pid", json_object_new_int(vm->pid));
	json_object_object_add(o, "starttime", json_object_new_uint64(vm->starttime));
	json_object_object_add(o, "started_at_ms", json_object_new_int64(vm->started_at));
	json_object_object_add(o, "restarts", json_object_new_int64(vm->restarts));
	json_object_object_add(o, "definition", json_object_new_string(vm->live_cfg->path));
	if (vm->live_text)
		rundir_write(ini, vm->live_text);
	rundir_write(path, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	free(path);
	free(ini);
}

void
rundir_remove(struct vm *vm)
{
	static const char *const files[] = {"state.json",     "qmp.sock",     "qemu.pid",
	                                    "state.json.tmp", "devices.json", "devices.json.tmp"};
	char *dir = vm_run_path(vm, ""), *def = rundir_def_path(vm),
	     *deftmp = xasprintf("%s.tmp", def);

	unlink(def);
	unlink(deftmp);
	free(def);
	free(deftmp);

	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char *p = vm_run_path(vm, files[i]);

		unlink(p);
		free(p);
	}
	if (rmdir(dir) < 0 && errno != ENOENT)
		log_warn("vm %s: cannot remove %s: %s", vm->name, dir, strerror(errno));
	free(dir);
}

/* Whether pid is the QEMU this VM's run directory describes. */
static bool
rundir_verify(struct vm *vm, pid_t pid, uint64_t starttime)
{
	uint64_t now;
	char *pidfile;
	bool ok;

	if (pid <= 0 || proc_starttime(pid, &now) < 0 || now != starttime)
		return false;
	pidfile = vm_run_path(vm, "qemu.pid");
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
	pidfile = vm_run_path(vm, "qemu.pid");
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
	if (!had_state || !rundir_verify(vm, pid, starttime)) {
		/* No usable state.json (qvmd died between spawning QEMU and writing it, or the file
		 * is stale): QEMU's own command line still names this VM's pidfile. */
		char *pf = vm_run_path(vm, "qemu.pid"), *gname = xasprintf("guest=%s", vm->name);

		pid = proc_find("-pidfile", pf, "-name", gname);
		free(pf);
		free(gname);
		if (pid > 0 && proc_starttime(pid, &starttime) == 0) {
			log_warn("vm %s: found its qemu (pid %d) by command line", vm->name,
			         (int)pid);
			vm->started_at = daemon_now_ms();
		} else {
			pid = 0;
		}
	}
	if (pid == 0) {
		/* QEMU deletes its pidfile on a clean exit, not when it is killed. */
		free(vm->last_exit);
		if (had_state && pidfile_left) {
			vm->last_exit = xstrdup("qemu died while qvmd was not running");
			vm->state = VM_CRASHED;
			log_warn("vm %s: its qemu died while qvmd was down", vm->name);
		} else {
			vm->last_exit = xstrdup("qemu exited while qvmd was not running");
			log_info("vm %s: qemu exited while qvmd was down", vm->name);
		}
		rundir_remove(vm);
		return false;
	}

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
	vm->start_mono = daemon_mono_ms();
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
	vm->state = VM_RUNNING;
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
