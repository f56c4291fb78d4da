/*
 * fuzz_rundir: the run-directory files a restarted qvmd reads for one VM (supervisor/vm_adopt.c,
 * vm_devices.c, daemon.c's orphans): state.json, devices.json and the definition copy fz.ini,
 * for a VM "fz" whose definition on disk is a fixed small one.
 *
 * Input: byte 0 is flags, the rest the files, separated by lines "%%\n": state.json, then
 * devices.json, then fz.ini; a file the input does not reach is absent.
 *   bit 0  qemu/qemu.pid is left in the run directory (a QEMU that was killed)
 *   bit 1  the VM's definition file is gone too: the run directory is an orphan's
 *          (daemon_adopt_orphans on a daemon with no VMs)
 *   bit 2  run step 2 (adoption scans /proc for the QEMU when state.json does not match one:
 *          a hundred times slower than step 1, so the fuzzer's time goes mostly to step 1)
 *
 * 1. vm_devs_load() with the definition copy as the live definition (or the one on disk, when
 *    the copy does not load, as vm_adopt does): every device has an id, a disk a file, ids are
 *    unique lookups; vm_devs_save() then vm_devs_load() gives the same devices back.
 * 2. (bit 2) vm_adopt() (or the orphan scan): no process has this run directory's pidfile on its
 * command line, so adoption fails cleanly: no pid, no pidfd, the run directory removed, the VM
 * stopped, or crashed exactly when state.json was readable and qemu.pid left. No process is
 * signalled (kill() aborts, fuzz_daemon_env.h).
 *
 * The scan of every /proc/PID/cmdline that adoption falls back to (proc_find) depends on nothing in
 * the input and cost more than 95% of the time: the harness links with -Wl,--wrap=proc_find and
 * checks the arguments instead (this VM's pidfile and name) and answers what the real scan would:
 * no such process. The pid of state.json still goes through the real proc_starttime and
 * proc_cmdline_has.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "fuzz_daemon_env.h"

#include "daemon.h"
#include "log.h"
#include "vm_private.h"

#define MAX_INPUT 65536
#define SEP       "%%\n"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char def_fz[] = "[vm]\nname = fz\nmemory = 128M\nmachine = q35\naccel = tcg\n"
                             "hotplug_slots = 2\nconsole = none\n\n"
                             "[disk root]\nfile = /srv/images/fz.qcow2\n\n"
                             "[net lan]\ntype = user\nmac = 52:54:00:12:34:56\n";

static struct event_base *base;
static struct daemon_config conf;
static struct vm_config *fixed;
static struct daemon orphans; /* no VMs: sees the run directory as an orphan's */
static char run_fz[256], vms_dir[256];

pid_t __wrap_proc_find(const char *a1, const char *a2, const char *b1, const char *b2);
pid_t __real_proc_find(const char *a1, const char *a2, const char *b1, const char *b2);

/* What vm_adopt asks the /proc scan for: always this VM's pidfile and name. */
pid_t
__wrap_proc_find(const char *a1, const char *a2, const char *b1, const char *b2)
{
	char pf[300];

	snprintf(pf, sizeof(pf), "%s/qemu/qemu.pid", run_fz);
	FUZZ_CHECK(strcmp(a1, "-pidfile") == 0 && strcmp(a2, pf) == 0);
	FUZZ_CHECK(strcmp(b1, "-name") == 0 && strcmp(b2, "guest=fz") == 0);
	return 0;
}

static void
setup(void)
{
	struct cfg_errors errs;
	char path[300];

	fuzz_env_init("fuzz_rundir", &conf);
	log_set_level(CFG_LOG_ERROR);
	base = event_base_new();
	FUZZ_CHECK(base != NULL);
	snprintf(vms_dir, sizeof(vms_dir), "%s/vms", fuzz_env_dir);
	snprintf(run_fz, sizeof(run_fz), "%s/run/fz", fuzz_env_dir);
	fuzz_env_write(vms_dir, "fz.ini", def_fz, sizeof(def_fz) - 1);
	snprintf(path, sizeof(path), "%s/fz.ini", vms_dir);
	cfg_errors_init(&errs);
	fixed = cfg_vm_load(path, &errs);
	FUZZ_CHECK(fixed != NULL);
	cfg_errors_free(&errs);
	daemon_init(&orphans, base, &conf);
	/* The real scan once: it finds no process with this pidfile either. */
	snprintf(path, sizeof(path), "%s/qemu/qemu.pid", run_fz);
	FUZZ_CHECK(__real_proc_find("-pidfile", path, "-name", "guest=fz") == 0);
}

static void
publish(void *arg, const char *vm, struct json_object *ev)
{
	(void)arg;
	FUZZ_CHECK(vm != NULL && strcmp(vm, "fz") == 0);
	json_object_put(ev);
}

static void
gone(void *arg, struct vm *vm)
{
	(void)arg;
	(void)vm;
}

static bool
may_restart(void *arg)
{
	(void)arg;
	return false;
}

/*
 * Writes the input's files into run/fz/ (absent: each run ends with it removed); only_devices: just
 * devices.json again (or removes it when the input does not reach it).
 */
static bool
write_files(const uint8_t *data, size_t size, uint8_t flags, bool only_devices)
{
	static const char *const names[] = {"state.json", "devices.json", "fz.ini"};
	size_t off = 0, i;
	bool have_state = false;
	char p[300];

	if (!only_devices)
		FUZZ_CHECK(mkdir(run_fz, 0700) == 0);
	for (i = 0; i < 3 && off <= size; i++) {
		const uint8_t *end = NULL;
		size_t len;

		for (size_t k = off; k + 3 <= size && end == NULL; k++) {
			if (memcmp(data + k, SEP, 3) == 0)
				end = data + k;
		}
		len = end ? (size_t)(end - (data + off)) : size - off;
		if (!only_devices || i == 1)
			fuzz_env_write(run_fz, names[i], (const char *)data + off, len);
		if (i == 0)
			have_state = true;
		off += len + 3;
	}
	if (only_devices && i < 2) {
		snprintf(p, sizeof(p), "%s/devices.json", run_fz);
		FUZZ_CHECK(unlink(p) == 0);
	}
	if ((flags & 1) && !only_devices) {
		char qdir[300];

		snprintf(qdir, sizeof(qdir), "%s/qemu", run_fz);
		FUZZ_CHECK(mkdir(qdir, 0700) == 0 || errno == EEXIST);
		fuzz_env_write(qdir, "qemu.pid", "12345\n", 6);
	}
	return have_state;
}

/* The devices as JSON, in order (caller puts it). */
static struct json_object *
devs_json(const struct vm *vm)
{
	struct json_object *arr = json_object_new_array();

	for (size_t i = 0; i < vm->ndevs; i++) {
		const struct vm_dev *dev = vm->devs[i];

		FUZZ_CHECK(dev->id != NULL);
		if (dev->is_disk)
			FUZZ_CHECK(dev->disk.file != NULL && dev->disk.id != NULL &&
			           strcmp(dev->disk.id, dev->id) == 0);
		else
			FUZZ_CHECK(dev->net.id != NULL && strcmp(dev->net.id, dev->id) == 0);
		/* A lookup by id finds the first device with it. */
		FUZZ_CHECK(vm_devs_find(vm, dev->id) != NULL);
		json_object_array_add(arr, vm_dev_json(dev));
	}
	return arr;
}

static void
check_devices(struct vm *vm)
{
	struct json_object *before, *after;
	struct cfg_errors errs;
	char *ini = rundir_def_path(vm), port[16];

	cfg_errors_init(&errs);
	vm->live_cfg = cfg_vm_load(ini, &errs);
	cfg_errors_free(&errs);
	free(ini);
	if (vm->live_cfg == NULL)
		vm->live_cfg = cfg_vm_dup(vm->cfg);
	vm_devs_load(vm);
	before = devs_json(vm);
	(void)vm_devs_free_port(vm, NULL, port);
	/* What is saved loads back the same. */
	FUZZ_CHECK(vm_devs_save(vm) == 0);
	vm_devs_clear(vm);
	vm_devs_load(vm);
	after = devs_json(vm);
	if (!json_object_equal(before, after)) {
		fprintf(stderr, "before: %s\nafter:  %s\n", json_object_to_json_string(before),
		        json_object_to_json_string(after));
		FUZZ_CHECK(!"devices.json does not load back what was saved");
	}
	json_object_put(before);
	json_object_put(after);
	vm_devs_clear(vm);
	cfg_vm_free(vm->live_cfg);
	vm->live_cfg = NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_env env = {0};
	struct stat st;
	struct vm *vm;
	uint8_t flags;
	bool have_state, adopted, pidfile;
	struct json_object *state;
	char *path;

	if (size < 1 || size > MAX_INPUT)
		return -1;
	if (base == NULL)
		setup();
	flags = data[0];
	data++;
	size--;
	env.base = base;
	env.conf = &conf;
	env.publish = publish;
	env.gone = gone;
	env.may_restart = may_restart;

	vm = vm_new(&env, cfg_vm_dup(fixed));
	have_state = write_files(data, size, flags, false);
	check_devices(vm);
	/* The round trip rewrote devices.json: the input's again for the adoption. */
	(void)write_files(data, size, flags, true);
	path = vm_run_path(vm, "state.json");
	state = have_state ? json_object_from_file(path) : NULL;
	free(path);
	path = vm_run_path(vm, "qemu/qemu.pid");
	pidfile = access(path, F_OK) == 0;
	free(path);

	if (!(flags & 4)) {
		vm_free(vm);
		vm = NULL;
	} else if (flags & 2) {
		vm_free(vm);
		vm = NULL;
		daemon_adopt_orphans(&orphans);
		FUZZ_CHECK(orphans.nvms == 0);
	} else {
		adopted = vm_adopt(vm);
		FUZZ_CHECK(!adopted);
		FUZZ_CHECK(vm->pid == 0 && vm->pidfd < 0 && vm->live_cfg == NULL);
		FUZZ_CHECK(vm->ndevs == 0 && vm->qmp == NULL);
		FUZZ_CHECK(vm->last_exit.text != NULL);
		if (state != NULL && pidfile)
			FUZZ_CHECK(vm->state == VM_CRASHED);
		else
			FUZZ_CHECK(vm->state == VM_STOPPED);
		FUZZ_CHECK(stat(run_fz, &st) < 0 && errno == ENOENT);
		vm_free(vm);
	}
	json_object_put(state);
	/* An orphan whose copy does not load (or names another VM) is left alone: clear it. */
	if (stat(run_fz, &st) == 0) {
		static const char *const names[] = {"state.json", "devices.json", "fz.ini",
		                                    "qemu/qemu.pid", "jobs.json"};
		char p[300];

		FUZZ_CHECK((flags & 6) != 4);
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			snprintf(p, sizeof(p), "%s/%s", run_fz, names[i]);
			unlink(p);
		}
		snprintf(p, sizeof(p), "%s/qemu", run_fz);
		rmdir(p);
		FUZZ_CHECK(rmdir(run_fz) == 0);
	}
	for (int turns = 0; turns < 4; turns++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	return 0;
}
