/* supervisor/qvmd/daemon: the daemon's state: its settings, its VMs, its control socket, one event
 * loop.
 */
#ifndef QVMD_DAEMON_H
#define QVMD_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct control;
struct daemon_config;
struct event_base;
struct json_object;
struct vm;

#include "vm.h"

struct daemon {
	struct event_base *base;
	struct vm_env vm_env; /* what each VM gets from the daemon (daemon_init) */
	struct daemon_config *conf;
	char *conf_path;
	struct vm **vms; /* sorted by name */
	size_t nvms;
	struct control *control;
	bool stopping;
	unsigned restarts_held; /* powerdowns of every VM in progress: no restart policy runs */
};

/* Sets up an empty daemon on base with conf (both borrowed). */
void daemon_init(struct daemon *d, struct event_base *base, struct daemon_config *conf);
struct vm *daemon_find_vm(struct daemon *d, const char *name);
/* Loads every definition in vm_dir; adds new VMs, updates changed ones, drops removed stopped ones.
 */
struct json_object *daemon_reload(struct daemon *d);
/* Re-attaches to running QEMUs whose definition file is gone (at start-up, after the first
 * reload and the adoption of the known VMs). */
void daemon_adopt_orphans(struct daemon *d);
/* At start-up, after the adoptions: releases the qemu uid records of VMs that are gone (their
 * definition was removed while qvmd was down) and logs uids recorded for two VMs. */
void daemon_check_uids(struct daemon *d);
/*
 * Powers every VM down for a host shutdown (vm_bring_down on each, restarts held until all are
 * done). cb gets {"results":[{name, ok, state, ended_by, elapsed_ms, error}]}; a VM still running
 * at the end is reported with ok false.
 */
void daemon_powerdown_all(struct daemon *d, uint64_t timeout_ms, vm_done_cb cb, void *arg);
/* Starts every VM whose definition says autostart = yes (force: every VM) and that has no QEMU,
 * in parallel; answers once each has: results [{name, ok, state, error}]. */
void daemon_start_all(struct daemon *d, bool force, vm_done_cb cb, void *arg);
/* Powers a running or paused VM down (vm_powerdown, waiting; timeout_ms 0: its
 * shutdown_timeout) and, once its QEMU is gone, starts it again; starts a VM without QEMU.
 * Answers with start's result plus ended_by of the powerdown (null if none ran). */
void daemon_restart(struct daemon *d, struct vm *vm, uint64_t timeout_ms, vm_done_cb cb, void *arg);
/* Logs a reload's result (errors and a summary). */
void daemon_log_reload(struct json_object *res);
/* Publishes an event to subscribers (takes ownership of ev). */
void daemon_publish(struct daemon *d, const char *vm, struct json_object *ev);

#endif
