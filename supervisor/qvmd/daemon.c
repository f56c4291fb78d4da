/* The daemon's VM table: loading and reloading definitions, lookups, event fan-out. */
#include "daemon.h"

#include "bgsync.h"
#include "cfg.h"
#include "clock.h"
#include "control.h"
#include "log.h"
#include "proc.h"
#include "vm.h"
#include "vm_apply.h"
#include "vm_uid.h"

#include <dirent.h>
#include <sys/stat.h>
#include <errno.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int
vm_cmp(const void *a, const void *b)
{
	return strcmp(vm_name(*(struct vm *const *)a), vm_name(*(struct vm *const *)b));
}

static int
vm_key_cmp(const void *key, const void *elem)
{
	return strcmp(key, vm_name(*(struct vm *const *)elem));
}

struct vm *
daemon_find_vm(struct daemon *d, const char *name)
{
	struct vm **p;

	if (d->nvms == 0)
		return NULL;
	p = bsearch(name, d->vms, d->nvms, sizeof *d->vms, vm_key_cmp);

	return p ? *p : NULL;
}

void
daemon_publish(struct daemon *d, const char *vm, struct json_object *ev)
{
	if (d->control)
		control_publish(d->control, vm, ev);
	json_object_put(ev);
}

void
daemon_remove_vm(struct daemon *d, struct vm *vm)
{
	for (size_t i = 0; i < d->nvms; i++) {
		if (d->vms[i] != vm)
			continue;
		memmove(&d->vms[i], &d->vms[i + 1], (d->nvms - i - 1) * sizeof *d->vms);
		d->nvms--;
		break;
	}
}

static void
vm_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	vm_free(arg);
}

/* A VM without a definition stopped: it goes (freed on the next loop turn, it may be in a
 * callback of its own). */
static void
daemon_vm_gone(struct daemon *d, struct vm *vm)
{
	log_info("vm %s: definition removed and vm stopped: forgetting it", vm_name(vm));
	vm_uid_release(d->vm_env.uids, vm_name(vm));
	daemon_remove_vm(d, vm);
	event_base_once(d->base, -1, EV_TIMEOUT, vm_free_deferred, vm, NULL);
}

static void
env_publish(void *arg, const char *vm, struct json_object *ev)
{
	daemon_publish(arg, vm, ev);
}

static void
env_gone(void *arg, struct vm *vm)
{
	daemon_vm_gone(arg, vm);
}

static bool
env_may_restart(void *arg)
{
	struct daemon *d = arg;

	return !d->stopping && d->restarts_held == 0;
}

static bool
env_watched(void *arg, const char *vm)
{
	struct daemon *d = arg;

	return d->control != NULL && control_watched(d->control, vm);
}

/* One image is never given to two VMs unless both only read it: the VM (not self) whose QEMU
 * holds dev/ino in a way that forbids this use. */
static const struct vm *
env_image_holder(void *arg, const struct vm *self, dev_t dev, ino_t ino, bool writable)
{
	struct daemon *d = arg;
	bool held_writable;

	for (size_t i = 0; i < d->nvms; i++) {
		if (d->vms[i] != self && vm_holds_image(d->vms[i], dev, ino, &held_writable) &&
		    (writable || held_writable))
			return d->vms[i];
	}
	return NULL;
}

void
daemon_init(struct daemon *d, struct event_base *base, struct daemon_config *conf)
{
	memset(d, 0, sizeof *d);
	d->base = base;
	d->conf = conf;
	d->vm_env.base = base;
	d->vm_env.conf = conf;
	d->vm_env.uids = vm_uid_books_new(conf);
	d->vm_env.bgsync = bgsync_new(base);
	d->vm_env.publish = env_publish;
	d->vm_env.gone = env_gone;
	d->vm_env.may_restart = env_may_restart;
	d->vm_env.image_holder = env_image_holder;
	d->vm_env.watched = env_watched;
	d->vm_env.arg = d;
}

/* Adds a VM to the sorted table. */
void
daemon_add_vm(struct daemon *d, struct vm *vm)
{
	d->vms = xrealloc(d->vms, (d->nvms + 1) * sizeof *d->vms);
	d->vms[d->nvms++] = vm;
	qsort(d->vms, d->nvms, sizeof *d->vms, vm_cmp);
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
add_name(struct json_object *arr, const char *name)
{
	json_object_array_add(arr, json_object_new_string(name));
}

/* The end of an apply that a reload started (auto_apply): its outcome is in the log. */
static void
auto_apply_done(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	char *name = arg;

	if (code != PROTO_OK)
		log_warn("reload: apply of vm %s failed: %s", name, message);
	json_object_put(result);
	free(name);
}

/* auto_apply: every running VM whose file says something else than what runs, in something that
 * can change live, gets an apply (also a VM whose last apply failed half-way: the next one tries
 * again). Lists them in apply. */
static void
daemon_auto_apply(struct daemon *d, struct json_object *apply)
{
	for (size_t i = 0; i < d->nvms; i++) {
		struct vm *vm = d->vms[i];

		if (vm_state(vm) != VM_RUNNING && vm_state(vm) != VM_PAUSED)
			continue;
		if (!vm_apply_needed(vm, true))
			continue; /* nothing to do live (what waits for a restart stays pending) */
		add_name(apply, vm_name(vm));
		log_info("reload: vm %s: applying its changed definition", vm_name(vm));
		vm_apply(vm, false, auto_apply_done, xstrdup(vm_name(vm)));
	}
}

/* qvmd's own event for a reload, to every subscriber: what was added, removed, changed, and how
 * many definitions have errors. */
static void
daemon_reload_event(struct daemon *d, struct json_object *res)
{
	struct json_object *ev = json_object_new_object(), *v;
	static const char *const keys[] = {"added", "removed", "changed"};

	json_object_object_add(ev, "event", json_object_new_string("reload"));
	json_object_object_add(ev, "vm", NULL);
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (json_object_object_get_ex(res, keys[i], &v))
			json_object_object_add(ev, keys[i], json_object_get(v));
	json_object_object_add(ev, "errors",
	                       json_object_new_int64(json_object_object_get_ex(res, "errors", &v)
	                                                 ? (int64_t)json_object_array_length(v)
	                                                 : 0));
	json_object_object_add(ev, "ts", json_object_new_int64(clock_now_ms()));
	daemon_publish(d, NULL, ev);
}

struct json_object *
daemon_reload(struct daemon *d)
{
	struct json_object *res = json_object_new_object(), *added = json_object_new_array(),
	                   *removed = json_object_new_array(), *changed = json_object_new_array(),
	                   *errors = json_object_new_array();
	DIR *dir = opendir(d->conf->vm_dir);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0;
	bool *seen = xcalloc(d->nvms + 1, sizeof *seen);
	struct vm **old = xcalloc(d->nvms + 1, sizeof *old);
	size_t nold = d->nvms;

	if (nold > 0)
		memcpy(old, d->vms, nold * sizeof *old);
	if (dir == NULL)
		goto unreadable;
	for (;;) {
		size_t len;

		errno = 0;
		if ((de = readdir(dir)) == NULL)
			break;
		len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len < 5 || strcmp(de->d_name + len - 4, ".ini") != 0)
			continue;
		names = xrealloc(names, (n + 1) * sizeof *names);
		names[n++] = xasprintf("%s/%s", d->conf->vm_dir, de->d_name);
	}
	if (errno != 0)
		goto unreadable;
	closedir(dir);
	dir = NULL;
	if (n > 0)
		qsort(names, n, sizeof *names, name_cmp);

	for (size_t i = 0; i < n; i++) {
		struct cfg_errors errs;
		struct vm_config *cfg;
		struct vm *vm;
		const char *base = strrchr(names[i], '/') + 1;
		char *name = xasprintf("%.*s", (int)(strlen(base) - 4), base);

		cfg_errors_init(&errs);
		cfg = cfg_vm_load(names[i], &errs);
		for (size_t e = 0; e < errs.n; e++)
			json_object_array_add(errors, json_object_new_string(errs.msgs[e]));
		cfg_errors_free(&errs);
		vm = daemon_find_vm(d, name);
		if (vm != NULL) {
			for (size_t k = 0; k < nold; k++) {
				if (old[k] == vm)
					seen[k] = true;
			}
		}
		free(name);
		if (cfg == NULL)
			continue; /* a broken file never disturbs what runs or what loaded before */
		if (vm == NULL) {
			vm = vm_new(&d->vm_env, cfg);
			daemon_add_vm(d, vm);
			add_name(added, vm_name(vm));
			continue;
		}
		if (vm_update_config(vm, cfg))
			add_name(changed, vm_name(vm));
	}
	for (size_t k = 0; k < nold; k++) {
		struct vm *vm = old[k];

		if (seen[k])
			continue;
		/* The file is gone: a stopped VM goes now, a running one when it stops. */
		add_name(removed, vm_name(vm));
		if (vm_is_active(vm)) {
			log_warn("vm %s: definition removed; it keeps running until stopped",
			         vm_name(vm));
			vm_set_config(vm, NULL);
		} else {
			daemon_vm_gone(d, vm);
		}
	}
	goto out;
unreadable:
	/* A directory that cannot be read says nothing about which VMs exist: change nothing. */
	{
		char *msg = xasprintf("%s: cannot read the vm directory: %s (nothing changed)",
		                      d->conf->vm_dir, strerror(errno));

		json_object_array_add(errors, json_object_new_string(msg));
		free(msg);
	}
	if (dir != NULL)
		closedir(dir);
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(seen);
	free(old);
	json_object_object_add(res, "added", added);
	json_object_object_add(res, "removed", removed);
	json_object_object_add(res, "changed", changed);
	json_object_object_add(res, "errors", errors);
	if (d->conf->auto_apply) {
		struct json_object *apply = json_object_new_array();

		daemon_auto_apply(d, apply);
		json_object_object_add(res, "apply", apply);
	}
	daemon_reload_event(d, res);
	return res;
}

/* Logs what a reload found: each error on its own line, then one summary line. */
void
daemon_log_reload(struct json_object *res)
{
	struct json_object *errors, *added, *removed, *changed;

	json_object_object_get_ex(res, "errors", &errors);
	json_object_object_get_ex(res, "added", &added);
	json_object_object_get_ex(res, "removed", &removed);
	json_object_object_get_ex(res, "changed", &changed);
	for (size_t i = 0; i < json_object_array_length(errors); i++)
		log_error("%s", json_object_get_string(json_object_array_get_idx(errors, i)));
	log_info("reload: %zu added, %zu removed, %zu changed, %zu errors",
	         json_object_array_length(added), json_object_array_length(removed),
	         json_object_array_length(changed), json_object_array_length(errors));
}

/*
 * Re-attaches to the QEMUs whose run directory names a VM that has no definition any more (its file
 * was removed while it ran, then qvmd restarted): such a VM is listed with its definition removed
 * and stays manageable until it stops. The run directory keeps the definition it was started with.
 */
void
daemon_adopt_orphans(struct daemon *d)
{
	DIR *dir = opendir(d->conf->run_dir);
	struct dirent *de;

	if (dir == NULL) {
		log_error("%s: %s", d->conf->run_dir, strerror(errno));
		return;
	}
	while ((de = readdir(dir)) != NULL) {
		struct cfg_errors errs;
		struct vm_config *cfg;
		struct stat st;
		struct vm *vm;
		char *dirpath, *ini;

		if (de->d_name[0] == '.' || daemon_find_vm(d, de->d_name) != NULL)
			continue;
		dirpath = xasprintf("%s/%s", d->conf->run_dir, de->d_name);
		if (lstat(dirpath, &st) < 0 || !S_ISDIR(st.st_mode)) {
			free(dirpath);
			continue;
		}
		ini = xasprintf("%s/%s.ini", dirpath, de->d_name);
		free(dirpath);
		cfg_errors_init(&errs);
		cfg = cfg_vm_load(ini, &errs);
		if (cfg == NULL) {
			if (access(ini, F_OK) == 0)
				log_error(
				    "%s: cannot re-attach: its definition copy does not load: %s",
				    ini, errs.n ? errs.msgs[0] : "unknown error");
			cfg_errors_free(&errs);
			free(ini);
			continue;
		}
		cfg_errors_free(&errs);
		free(ini);
		if (strcmp(cfg->name, de->d_name) != 0) {
			cfg_vm_free(cfg);
			continue;
		}
		vm = vm_new(&d->vm_env, cfg);
		vm_set_config(vm, NULL);
		if (!vm_adopt(vm)) {
			vm_free(vm);
			continue;
		}
		log_warn("vm %s: re-attached although its definition was removed; it is managed "
		         "until it stops",
		         vm_name(vm));
		daemon_add_vm(d, vm);
	}
	closedir(dir);
}

static int
record_uid_cmp(const void *a, const void *b)
{
	uid_t x = ((const struct vm_uid_record *)a)->ids.uid,
	      y = ((const struct vm_uid_record *)b)->ids.uid;

	return x < y ? -1 : x > y;
}

void
daemon_check_uids(struct daemon *d)
{
	size_t n, kept = 0;
	struct vm_uid_record *r = vm_uid_records(d->conf, &n);

	for (size_t i = 0; i < n; i++) {
		/* Known VMs include every QEMU adopted without a definition; a QEMU that could not
		 * be adopted (books lost) still holds its pidfile's lock, and its uid. */
		if (daemon_find_vm(d, r[i].name) == NULL) {
			char *pidfile =
			    xasprintf("%s/%s/qemu/qemu.pid", d->conf->run_dir, r[i].name);
			pid_t owner = proc_pidfile_owner(pidfile);

			free(pidfile);
			if (owner > 0) {
				log_warn(
				    "vm %s: no definition, but its qemu (pid %d) runs: it keeps "
				    "qemu uid %u",
				    r[i].name, (int)owner, (unsigned)r[i].ids.uid);
			} else {
				vm_uid_release(d->vm_env.uids, r[i].name);
				free(r[i].name);
				continue;
			}
		}
		r[kept++] = r[i];
	}
	/* With qemu_user every record holds the same uid; a range hands each out once. */
	if (d->conf->qemu_user == NULL && kept > 1) {
		qsort(r, kept, sizeof *r, record_uid_cmp);
		for (size_t i = 1; i < kept; i++) {
			/* Records from an earlier qemu_user or range are replaced at the next
			 * start. */
			if (r[i].ids.uid == r[i - 1].ids.uid &&
			    r[i].ids.uid >= d->conf->qemu_uid_first &&
			    r[i].ids.uid <= d->conf->qemu_uid_last)
				log_error(
				    "vm %s and vm %s: both record qemu uid %u (%s/NAME/qemu-uid): "
				    "neither starts until the wrong record is removed",
				    r[i - 1].name, r[i].name, (unsigned)r[i].ids.uid,
				    d->conf->state_dir);
		}
	}
	vm_uid_records_free(r, kept);
}

/*
 * An operation on many VMs at once (powerdown --all, start --all): one aggregate reply once each
 * VM has answered, `results` with one entry per VM: name, ok, the result's keys the operation
 * names (null when absent) and error ({code, message} or null).
 */
struct fanout {
	struct daemon *d;
	struct json_object *results;
	size_t pending;
	const char *const *keys;
	void (*end)(struct fanout *fo); /* before the reply, or NULL */
	vm_done_cb cb;
	void *arg;
};

struct fanout_one {
	struct fanout *fo;
	char *name;
};

/* The {code, message} object of a failure. */
static struct json_object *
error_object(enum proto_err code, const char *message)
{
	struct json_object *e = json_object_new_object();

	json_object_object_add(e, "code", json_object_new_string(proto_err_name(code)));
	json_object_object_add(e, "message", json_object_new_string(message));
	return e;
}

static struct fanout *
fanout_new(struct daemon *d, const char *const *keys, void (*end)(struct fanout *), vm_done_cb cb,
           void *arg)
{
	struct fanout *fo = xcalloc(1, sizeof *fo);

	fo->d = d;
	fo->results = json_object_new_array();
	fo->pending = 1; /* held while dispatching: fanout_release */
	fo->keys = keys;
	fo->end = end;
	fo->cb = cb;
	fo->arg = arg;
	return fo;
}

static void
fanout_release(struct fanout *fo)
{
	struct json_object *res;

	if (--fo->pending > 0)
		return;
	if (fo->end != NULL)
		fo->end(fo);
	res = json_object_new_object();
	json_object_object_add(res, "results", fo->results);
	fo->cb(res, PROTO_OK, NULL, fo->arg);
	free(fo);
}

static void
fanout_one_done(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	struct fanout_one *one = arg;
	struct fanout *fo = one->fo;
	struct json_object *o = json_object_new_object(), *v;

	/* One shape for every entry: absent values are null. */
	json_object_object_add(o, "name", json_object_new_string(one->name));
	json_object_object_add(o, "ok", json_object_new_boolean(code == PROTO_OK));
	for (const char *const *k = fo->keys; *k != NULL; k++)
		json_object_object_add(o, *k,
		                       code == PROTO_OK && json_object_object_get_ex(result, *k, &v)
		                           ? json_object_get(v)
		                           : NULL);
	json_object_object_add(o, "error", code == PROTO_OK ? NULL : error_object(code, message));
	json_object_array_add(fo->results, o);
	json_object_put(result);
	free(one->name);
	free(one);
	fanout_release(fo);
}

/* The callback and argument for one VM of fo (release with fanout_skip if op never answers). */
static struct fanout_one *
fanout_add(struct fanout *fo, struct vm *vm)
{
	struct fanout_one *one = xcalloc(1, sizeof *one);

	one->fo = fo;
	one->name = xstrdup(vm_name(vm));
	fo->pending++;
	return one;
}

static void
fanout_skip(struct fanout_one *one)
{
	one->fo->pending--;
	free(one->name);
	free(one);
}

/* powerdown --all is over: any VM that still has a QEMU is reported as a failure. */
static void
powerdown_all_end(struct fanout *fo)
{
	struct daemon *d = fo->d;
	char *msg;

	for (size_t i = 0; i < json_object_array_length(fo->results); i++) {
		struct json_object *o = json_object_array_get_idx(fo->results, i), *v;
		struct vm *vm;

		json_object_object_get_ex(o, "name", &v);
		vm = daemon_find_vm(d, json_object_get_string(v));
		if (vm == NULL || !vm_is_active(vm) ||
		    !json_object_get_boolean(json_object_object_get(o, "ok")))
			continue;
		json_object_object_add(o, "ok", json_object_new_boolean(0));
		json_object_object_add(o, "state",
		                       json_object_new_string(vm_state_name(vm_state(vm))));
		msg = xasprintf("vm %s: still %s after the powerdown", vm_name(vm),
		                vm_state_name(vm_state(vm)));
		json_object_object_add(o, "error", error_object(PROTO_ERR_FAILED, msg));
		free(msg);
	}
	d->restarts_held--;
}

void
daemon_powerdown_all(struct daemon *d, uint64_t timeout_ms, vm_done_cb cb, void *arg)
{
	static const char *const keys[] = {"state", "ended_by", "elapsed_ms", NULL};
	struct fanout *fo = fanout_new(d, keys, powerdown_all_end, cb, arg);

	d->restarts_held++;
	for (size_t i = 0; i < d->nvms; i++) {
		struct fanout_one *one = fanout_add(fo, d->vms[i]);

		if (!vm_bring_down(d->vms[i], timeout_ms, fanout_one_done, one))
			fanout_skip(one);
	}
	fanout_release(fo);
}

void
daemon_start_all(struct daemon *d, bool force, vm_done_cb cb, void *arg)
{
	static const char *const keys[] = {"state", NULL};
	struct fanout *fo = fanout_new(d, keys, NULL, cb, arg);

	for (size_t i = 0; i < d->nvms; i++) {
		const struct vm_config *cfg = vm_config(d->vms[i]);

		if (cfg != NULL && (force || cfg->autostart) && !vm_is_active(d->vms[i]))
			vm_start(d->vms[i], fanout_one_done, fanout_add(fo, d->vms[i]));
	}
	fanout_release(fo);
}

/* restart: the powerdown's answer comes while the VM still tears its QEMU down; the start waits
 * for the next loop turn, and finds the VM by name again (a reload may have removed it). */
struct restart {
	struct daemon *d;
	char *name;
	struct json_object *ended_by; /* the powerdown's, or NULL */
	vm_done_cb cb;
	void *arg;
};

static void
restart_free(struct restart *rs)
{
	json_object_put(rs->ended_by);
	free(rs->name);
	free(rs);
}

static void
restart_started(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	struct restart *rs = arg;

	if (code == PROTO_OK)
		json_object_object_add(result, "ended_by", json_object_get(rs->ended_by));
	rs->cb(result, code, message, rs->arg);
	restart_free(rs);
}

static void
restart_start(evutil_socket_t fd, short what, void *arg)
{
	struct restart *rs = arg;
	struct vm *vm = daemon_find_vm(rs->d, rs->name);
	char *msg;

	if (vm == NULL) {
		msg = xasprintf("vm %s: its definition went away during the restart", rs->name);
		rs->cb(NULL, PROTO_ERR_NOT_FOUND, msg, rs->arg);
		free(msg);
		restart_free(rs);
		return;
	}
	vm_start(vm, restart_started, rs);
}

static void
restart_stopped(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	struct restart *rs = arg;
	struct json_object *v;

	if (code != PROTO_OK) {
		rs->cb(NULL, code, message, rs->arg);
		restart_free(rs);
		return;
	}
	if (json_object_object_get_ex(result, "ended_by", &v))
		rs->ended_by = json_object_get(v);
	json_object_put(result);
	if (event_base_once(rs->d->base, -1, EV_TIMEOUT, restart_start, rs, NULL) < 0) {
		rs->cb(NULL, PROTO_ERR_FAILED, "restart: cannot schedule the start", rs->arg);
		restart_free(rs);
	}
}

void
daemon_restart(struct daemon *d, struct vm *vm, uint64_t timeout_ms, vm_done_cb cb, void *arg)
{
	struct restart *rs = xcalloc(1, sizeof *rs);

	rs->d = d;
	rs->name = xstrdup(vm_name(vm));
	rs->cb = cb;
	rs->arg = arg;
	log_info("vm %s: restart", rs->name);
	if (vm_state(vm) == VM_RUNNING || vm_state(vm) == VM_PAUSED)
		vm_powerdown(vm, timeout_ms, true, restart_stopped, rs);
	else
		vm_start(vm, restart_started, rs);
}
