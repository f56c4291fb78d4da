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
struct define_op;
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
	unsigned restarts_held;    /* powerdowns of every VM in progress: no restart policy runs */
	struct define_op *defines; /* creates in progress (daemon_define.c) */
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
/* The VM table (daemon.c) for daemon_define.c: adds a VM (taken), or takes one out (the caller
 * frees it, on a later loop turn). */
void daemon_add_vm(struct daemon *d, struct vm *vm);
void daemon_remove_vm(struct daemon *d, struct vm *vm);

/*
 * qvmctl create (daemon_define.c): a new VM from a request. Strings are borrowed; defaults: vcpus
 * 1, machine q35, accel kvm, os_variant linux. Disks without a path get a new image
 * image_dirs[0]/NAME-ID.qcow2 of size bytes; with a path, the file is used, or created when
 * missing and a size is given. Only root (uid 0) may name files outside image_dirs.
 */
struct daemon_create_disk {
	const char *id;     /* NULL: disk0, disk1 ... */
	const char *path;   /* NULL: a new image in image_dirs[0] */
	const char *format; /* NULL: qcow2 */
	uint64_t size;      /* bytes; 0: none (the file must exist) */
};
struct daemon_create_net {
	const char *type; /* user (NULL), tap, bridge */
	const char *bridge, *ifname;
	bool restricted; /* type user: restrict = yes */
};
struct daemon_create {
	const char *name;
	uint64_t memory;
	unsigned vcpus;
	const char *machine, *accel, *os_variant; /* NULL: the default */
	bool autostart, start;
	const struct daemon_create_disk *disks;
	size_t ndisks;
	const struct daemon_create_net *nets;
	size_t nnets;
	const char *cdrom; /* the installer's ISO, or NULL */
	uid_t uid;         /* the requester */
};
/*
 * Checks everything, creates the images, writes vm_dir/NAME.ini (the text cfg_vm_format makes,
 * validated by the loader first), loads the VM and starts it with a->start. On any failure before
 * the start nothing is left (no file, no image made). Answers {name, path, definition,
 * images_created, started}; a failed start is an error that says the VM is defined.
 */
void daemon_create(struct daemon *d, const struct daemon_create *a, vm_done_cb cb, void *arg);
/* Fails every create in progress (qvmd exits) and removes what they made. */
void daemon_define_abort(struct daemon *d);
/*
 * qvmctl undefine: removes a stopped VM's definition file, run and state directories, and (with
 * remove_disks) each disk image below image_dirs that no other VM names; backups stay. Refused
 * with busy while it has a QEMU or a job. Answers {name, removed_file, removed_images,
 * kept_images: [{file, reason}], backups_kept}.
 */
void daemon_undefine(struct daemon *d, struct vm *vm, bool remove_disks, vm_done_cb cb, void *arg);

#endif
