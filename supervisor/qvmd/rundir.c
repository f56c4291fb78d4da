/*
 * The per-VM run directory (<run_dir>/<name>/, root's, traversable by the VM's QEMU): QEMU's QMP
 * socket, plus what a restarted qvmd needs to re-attach (vm_adopt.c): state.json (pid, process
 * start time, start time) and NAME.ini (the definition the QEMU was started from), which QEMU can
 * neither read nor replace; and qemu/, the one directory QEMU owns, for its pidfile.
 */
#include "vm_private.h"

#include "cfg.h"
#include "log.h"
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The copy of the definition the QEMU was started from: <run_dir>/<name>/<name>.ini. */
char *
rundir_def_path(const struct vm *vm)
{
	return xasprintf("%s/%s/%s.ini", vm->env.conf->run_dir, vm->name, vm->name);
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

/*
 * Empties and removes QEMU's own directory. QEMU chose what is in it: nothing in it is followed
 * (unlinkat never follows a symlink; the directory itself is opened O_NOFOLLOW).
 */
static void
rundir_remove_qemu_dir(struct vm *vm)
{
	char *path = vm_run_path(vm, "qemu");
	struct dirent *de;
	DIR *dir = NULL;
	int fd;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 && (dir = fdopendir(fd)) == NULL)
		close(fd);
	while (dir != NULL && (de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
		    unlinkat(dirfd(dir), de->d_name, 0) < 0)
			log_warn("vm %s: cannot remove %s/%s: %s", vm->name, path, de->d_name,
			         strerror(errno));
	}
	if (dir != NULL)
		closedir(dir);
	if (rmdir(path) < 0 && errno != ENOENT)
		log_warn("vm %s: cannot remove %s: %s", vm->name, path, strerror(errno));
	free(path);
}

void
rundir_remove(struct vm *vm)
{
	static const char *const files[] = {
	    "state.json", "qmp.sock",      "state.json.tmp", "devices.json",   "devices.json.tmp",
	    "jobs.json",  "jobs.json.tmp", "media.json",     "media.json.tmp", "vnc.sock"};
	char *dir = vm_run_path(vm, ""), *def = rundir_def_path(vm),
	     *deftmp = xasprintf("%s.tmp", def);

	unlink(def);
	unlink(deftmp);
	free(def);
	free(deftmp);

	/* A background job still running (a snapshot's cleanup after its QEMU died) keeps its
	 * record, and with it the directory, so that a restarted qvmd settles it. */
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char *p;

		if (vm->bg != NULL && strncmp(files[i], "jobs.json", 9) == 0)
			continue;
		p = vm_run_path(vm, files[i]);
		unlink(p);
		free(p);
	}
	rundir_remove_qemu_dir(vm);
	if (vm->bg == NULL && rmdir(dir) < 0 && errno != ENOENT)
		log_warn("vm %s: cannot remove %s: %s", vm->name, dir, strerror(errno));
	free(dir);
}
