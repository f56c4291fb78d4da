/* The daemon's VM table: loading and reloading definitions, lookups, event fan-out. */
#include "daemon.h"

#include "cfg.h"
#include "control.h"
#include "log.h"
#include "vm.h"
#include "vm_private.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t
daemon_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
daemon_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

static void
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

void
daemon_vm_gone(struct daemon *d, struct vm *vm)
{
	log_info("vm %s: definition removed and vm stopped: forgetting it", vm_name(vm));
	daemon_remove_vm(d, vm);
	event_base_once(d->base, -1, EV_TIMEOUT, vm_free_deferred, vm, NULL);
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
	if (dir == NULL) {
		char *msg = xasprintf("%s: %s", d->conf->vm_dir, strerror(errno));

		log_error("%s", msg);
		json_object_array_add(errors, json_object_new_string(msg));
		free(msg);
	}
	while (dir != NULL && (de = readdir(dir)) != NULL) {
		size_t len = strlen(de->d_name);

		if (de->d_name[0] == '.' || len < 5 || strcmp(de->d_name + len - 4, ".ini") != 0)
			continue;
		names = xrealloc(names, (n + 1) * sizeof *names);
		names[n++] = xasprintf("%s/%s", d->conf->vm_dir, de->d_name);
	}
	if (dir != NULL)
		closedir(dir);
	if (n > 0)
		qsort(names, n, sizeof *names, name_cmp);

	for (size_t i = 0; i < n; i++) {
		struct cfg_errors errs;
		struct vm_config *cfg;
		struct vm *vm;
		const char *base = strrchr(names[i], '/') + 1;
		char *name = xasprintf("%.*s", (int)(strlen(base) - 4), base);
		char *text;

		cfg_errors_init(&errs);
		cfg = cfg_vm_load(names[i], &errs);
		for (size_t e = 0; e < errs.n; e++) {
			log_error("%s", errs.msgs[e]);
			json_object_array_add(errors, json_object_new_string(errs.msgs[e]));
		}
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
			vm = vm_new(d, cfg);
			d->vms = xrealloc(d->vms, (d->nvms + 1) * sizeof *d->vms);
			d->vms[d->nvms++] = vm;
			qsort(d->vms, d->nvms, sizeof *d->vms, vm_cmp);
			add_name(added, vm_name(vm));
			continue;
		}
		text = vm_read_text(cfg->path);
		if (vm_definition_removed(vm) || vm->disk_text == NULL || text == NULL ||
		    strcmp(vm->disk_text, text) != 0) {
			add_name(changed, vm_name(vm));
			vm_set_config(vm, cfg);
		} else {
			cfg_vm_free(cfg);
		}
		free(text);
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
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(seen);
	free(old);
	json_object_object_add(res, "added", added);
	json_object_object_add(res, "removed", removed);
	json_object_object_add(res, "changed", changed);
	json_object_object_add(res, "errors", errors);
	return res;
}
