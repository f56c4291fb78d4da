/*
 * The daemon's command table: one entry per control command, each answering through control_done.
 * A request that names a VM has it in r->vm, and control_done starts each of its error messages
 * with "vm NAME: ": the messages written here leave it out.
 */
#include "control_private.h"

#include "cfg.h"
#include "daemon.h"
#include "log.h"
#include "vm.h"
#include "vm_apply.h"
#include "vm_media.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Event kinds a subscription may name at most (there are fewer kinds than this). */
#define SUBSCRIBE_MAX_KINDS 16

/* Whether a command acts on one VM named by the request's "vm". */
enum control_cmd_vm { CMD_VM_NONE, CMD_VM_REQUIRED, CMD_VM_OPTIONAL };

struct control_cmd {
	const char *name;
	enum control_cmd_vm vm;
	const char *const *args; /* the keys args may hold (NULL-terminated); NULL: none */
	/* vm is NULL unless CMD_VM_REQUIRED; args may be NULL. */
	void (*exec)(struct control_reply *r, struct vm *vm, const char *vm_name,
	             struct json_object *args);
};

static void reply_error(struct control_reply *r, enum proto_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
reply_error(struct control_reply *r, enum proto_err code, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	control_done(NULL, code, msg, r);
	free(msg);
}

/* Reads an optional non-negative integer member key of obj (named where.key in messages); false
 * (and a reply) when it is malformed. */
static bool
member_uint(struct control_reply *r, struct json_object *obj, const char *where, const char *key,
            uint64_t *out)
{
	struct json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) || v == NULL)
		return true;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0) {
		reply_error(r, PROTO_ERR_INVALID, "%s.%s must be a non-negative integer", where,
		            key);
		return false;
	}
	*out = (uint64_t)json_object_get_int64(v);
	return true;
}

/* Reads an optional non-negative integer argument; false (and a reply) when it is malformed. */
static bool
arg_uint(struct control_reply *r, struct json_object *args, const char *key, uint64_t *out)
{
	return member_uint(r, args, "args", key, out);
}

/* Reads an optional timeout in milliseconds, within the range definitions allow. */
static bool
arg_timeout(struct control_reply *r, struct json_object *args, const char *key, uint64_t *out)
{
	uint64_t ms = 0;
	struct json_object *v;

	if (args == NULL || !json_object_object_get_ex(args, key, &v) || v == NULL)
		return true;
	if (!arg_uint(r, args, key, &ms))
		return false;
	if (ms < CFG_SHUTDOWN_TIMEOUT_MIN_MS || ms > CFG_SHUTDOWN_TIMEOUT_MAX_MS) {
		reply_error(r, PROTO_ERR_INVALID, "args.%s must be between %llu and %llu (ms)", key,
		            (unsigned long long)CFG_SHUTDOWN_TIMEOUT_MIN_MS,
		            (unsigned long long)CFG_SHUTDOWN_TIMEOUT_MAX_MS);
		return false;
	}
	*out = ms;
	return true;
}

static bool
member_bool(struct control_reply *r, struct json_object *obj, const char *where, const char *key,
            bool *out)
{
	struct json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) || v == NULL)
		return true;
	if (!json_object_is_type(v, json_type_boolean)) {
		reply_error(r, PROTO_ERR_INVALID, "%s.%s must be true or false", where, key);
		return false;
	}
	*out = json_object_get_boolean(v);
	return true;
}

static bool
arg_bool(struct control_reply *r, struct json_object *args, const char *key, bool *out)
{
	return member_bool(r, args, "args", key, out);
}

static void
cmd_list(struct control_reply *r, struct vm *unused, const char *vm_name, struct json_object *args)
{
	struct daemon *d = control_daemon(r->c);
	struct json_object *res = json_object_new_object(), *arr = json_object_new_array();

	for (size_t i = 0; i < d->nvms; i++)
		json_object_array_add(arr, vm_list_row(d->vms[i]));
	json_object_object_add(res, "vms", arr);
	control_done(res, PROTO_OK, NULL, r);
}

static void
cmd_status(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	vm_status(vm, control_done, r);
}

/* start: a VM by name, or args.all (every autostart VM; with args.force every VM). */
static void
cmd_start(struct control_reply *r, struct vm *unused, const char *name, struct json_object *args)
{
	struct daemon *d = control_daemon(r->c);
	bool all = false, force = false;
	struct vm *vm;

	if (!arg_bool(r, args, "all", &all) || !arg_bool(r, args, "force", &force))
		return;
	if (all && name != NULL)
		return reply_error(r, PROTO_ERR_INVALID, "start: a vm name or args.all, not both");
	if (force && !all)
		return reply_error(r, PROTO_ERR_INVALID, "start: args.force goes with args.all");
	if (all)
		return daemon_start_all(d, force, control_done, r);
	if (name == NULL)
		return reply_error(r, PROTO_ERR_INVALID,
		                   "start: a vm name or args.all is required");
	if ((vm = daemon_find_vm(d, name)) == NULL)
		return reply_error(r, PROTO_ERR_NOT_FOUND, "no such vm");
	vm_start(vm, control_done, r);
}

/* restart: powerdown (with its escalation) and start again. */
static void
cmd_restart(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	uint64_t timeout_ms = 0;

	if (arg_timeout(r, args, "timeout_ms", &timeout_ms))
		daemon_restart(control_daemon(r->c), vm, timeout_ms, control_done, r);
}

static void
cmd_reset(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	vm_reset(vm, control_done, r);
}

static void
cmd_pause(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	vm_pause(vm, control_done, r);
}

static void
cmd_resume(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	vm_resume(vm, control_done, r);
}

static void
cmd_kill(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	vm_kill(vm, control_done, r);
}

/* reboot: args.timeout_ms (the guest's time to shut down before a hard reset). */
static void
cmd_reboot(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	uint64_t timeout_ms = 0;

	if (arg_timeout(r, args, "timeout_ms", &timeout_ms))
		vm_reboot(vm, timeout_ms, control_done, r);
}

static void
cmd_powerdown(struct control_reply *r, struct vm *unused, const char *name,
              struct json_object *args)
{
	struct daemon *d = control_daemon(r->c);
	uint64_t timeout_ms = 0;
	bool wait = true, all = false;
	struct vm *vm;

	if (!arg_timeout(r, args, "timeout_ms", &timeout_ms) || !arg_bool(r, args, "wait", &wait) ||
	    !arg_bool(r, args, "all", &all))
		return;
	if (!all) {
		if (name == NULL)
			return reply_error(r, PROTO_ERR_INVALID,
			                   "powerdown: a vm name or args.all is required");
		vm = daemon_find_vm(d, name);
		if (vm == NULL)
			return reply_error(r, PROTO_ERR_NOT_FOUND, "no such vm");
		vm_powerdown(vm, timeout_ms, wait, control_done, r);
		return;
	}
	daemon_powerdown_all(d, timeout_ms, control_done, r);
}

bool
control_may_passthrough(const struct daemon_config *conf, uid_t uid)
{
	return uid == 0 || uid == getuid() || conf->qmp_passthrough == CFG_QMP_PASSTHROUGH_GROUP;
}

/*
 * Raw QMP can do anything QEMU can (open any file as QEMU's user, write it with HMP qemu-io, dump
 * guest memory to a path): unless qvmd.conf says otherwise, only root and qvmd's own user may use
 * it, not every member of socket_group.
 */
static void
cmd_qmp(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	struct json_object *command, *arguments = NULL;

	if (!control_may_passthrough(control_daemon(r->c)->conf, r->uid)) {
		log_warn("vm %s: raw qmp denied to uid %d pid %d", n, (int)r->uid, (int)r->pid);
		return reply_error(r, PROTO_ERR_DENIED,
		                   "raw qmp is for root and qvmd's user only, not uid %d "
		                   "(qmp_passthrough = root in qvmd.conf)",
		                   (int)r->uid);
	}
	if (args == NULL || !json_object_object_get_ex(args, "command", &command) ||
	    !json_object_is_type(command, json_type_string))
		return reply_error(r, PROTO_ERR_INVALID, "qmp: args.command must be a string");
	if (json_object_object_get_ex(args, "arguments", &arguments) && arguments != NULL &&
	    !json_object_is_type(arguments, json_type_object))
		return reply_error(r, PROTO_ERR_INVALID, "qmp: args.arguments must be an object");
	vm_qmp(vm, json_object_get_string(command), arguments, control_done, r);
}

static void
cmd_subscribe(struct control_reply *r, struct vm *unused, const char *vm_name,
              struct json_object *args)
{
	struct daemon *d = control_daemon(r->c);
	struct json_object *v, *res, *events = NULL;

	if (args != NULL && json_object_object_get_ex(args, "events", &events) && events != NULL) {
		size_t n = json_object_is_type(events, json_type_array)
		               ? json_object_array_length(events)
		               : 0;

		if (n == 0 || n > SUBSCRIBE_MAX_KINDS)
			return reply_error(
			    r, PROTO_ERR_INVALID,
			    "subscribe: args.events must be an array of 1 to %d event "
			    "kinds",
			    SUBSCRIBE_MAX_KINDS);
		for (size_t i = 0; i < n; i++) {
			struct json_object *k = json_object_array_get_idx(events, i);

			if (!json_object_is_type(k, json_type_string) ||
			    json_object_get_string_len(k) == 0 ||
			    json_object_get_string_len(k) > 32)
				return reply_error(
				    r, PROTO_ERR_INVALID,
				    "subscribe: args.events[%zu] must be an event kind "
				    "(a string of 1 to 32 characters)",
				    i);
		}
	}
	if (vm_name == NULL && args != NULL && json_object_object_get_ex(args, "vm", &v) &&
	    json_object_is_type(v, json_type_string)) {
		vm_name = json_object_get_string(v);
		free(r->vm);
		r->vm = xstrdup(vm_name);
	}
	if (vm_name != NULL && daemon_find_vm(d, vm_name) == NULL)
		return reply_error(r, PROTO_ERR_NOT_FOUND, "no such vm");
	control_subscribe(r, vm_name, events);
	res = json_object_new_object();
	json_object_object_add(res, "subscribed", json_object_new_boolean(1));
	control_done(res, PROTO_OK, NULL, r);
}

static void
cmd_reload(struct control_reply *r, struct vm *unused, const char *n, struct json_object *args)
{
	struct json_object *res = daemon_reload(control_daemon(r->c));

	daemon_log_reload(res);
	control_done(res, PROTO_OK, NULL, r);
}

static void
cmd_version(struct control_reply *r, struct vm *unused, const char *n, struct json_object *args)
{
	struct json_object *res = json_object_new_object();

	json_object_object_add(res, "version", json_object_new_string(QVMD_VERSION));
	control_done(res, PROTO_OK, NULL, r);
}

/* Reads an optional string member key of obj (named where.key in messages); false (and a reply)
 * when it is not a string. */
static bool
member_str(struct control_reply *r, struct json_object *obj, const char *where, const char *key,
           const char **out)
{
	struct json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) || v == NULL)
		return true;
	if (!json_object_is_type(v, json_type_string)) {
		reply_error(r, PROTO_ERR_INVALID, "%s.%s must be a string", where, key);
		return false;
	}
	*out = json_object_get_string(v);
	return true;
}

/* Reads an optional string argument; false (and a reply) when it is not a string. */
static bool
arg_str(struct control_reply *r, struct json_object *args, const char *key, const char **out)
{
	return member_str(r, args, "args", key, out);
}

/* Reads a required device id. */
static const char *
arg_id(struct control_reply *r, struct json_object *args)
{
	const char *id = NULL;

	if (!arg_str(r, args, "id", &id))
		return NULL;
	if (id == NULL)
		reply_error(r, PROTO_ERR_INVALID, "args.id (the device id) is required");
	return id;
}

/* One validation for a live attach and a persisted one (cfg_disk_check / cfg_net_check): true
 * when rc is 0; else replies invalid with the cause (freed). */
static bool
device_ok(struct control_reply *r, int rc, char *cause)
{
	if (rc == 0)
		return true;
	reply_error(r, PROTO_ERR_INVALID, "%s", cause);
	free(cause);
	return false;
}

static void
cmd_attach_disk(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	struct cfg_disk disk = {0};
	const char *file = NULL, *format = "qcow2", *cache = "none";
	char *cause = NULL;
	int rc;
	uint64_t create = 0;
	bool persist = false;

	if ((disk.id = (char *)arg_id(r, args)) == NULL)
		return;
	if (!arg_str(r, args, "file", &file) || !arg_str(r, args, "format", &format) ||
	    !arg_str(r, args, "cache", &cache) || !arg_bool(r, args, "readonly", &disk.readonly) ||
	    !arg_bool(r, args, "persist", &persist) || !arg_uint(r, args, "create_size", &create))
		return;
	if (file == NULL)
		return reply_error(r, PROTO_ERR_INVALID, "attach-disk: args.file is required");
	if (cfg_format_parse(format, &disk.format) < 0)
		return reply_error(r, PROTO_ERR_INVALID,
		                   "attach-disk: format '%s' (use qcow2 or raw)", format);
	if (cfg_cache_parse(cache, &disk.cache) < 0)
		return reply_error(r, PROTO_ERR_INVALID,
		                   "attach-disk: cache '%s' (use none, writeback, writethrough, "
		                   "directsync or unsafe)",
		                   cache);
	if (strchr(file, '\n') || file[0] != '/')
		return reply_error(r, PROTO_ERR_INVALID,
		                   "attach-disk: file '%s' must be an absolute path", file);
	disk.file = (char *)file;
	rc = cfg_disk_check(&disk, &cause);
	if (!device_ok(r, rc, cause))
		return;
	vm_attach_disk(vm, &disk, create, persist, control_done, r);
}

static void
cmd_attach_net(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	struct cfg_net net = {0};
	const char *type = "user", *mac = NULL, *bridge = NULL, *ifname = NULL;
	char *cause = NULL;
	int rc;
	bool persist = false;

	if ((net.id = (char *)arg_id(r, args)) == NULL)
		return;
	if (!arg_str(r, args, "type", &type) || !arg_str(r, args, "mac", &mac) ||
	    !arg_str(r, args, "bridge", &bridge) || !arg_str(r, args, "ifname", &ifname) ||
	    !arg_bool(r, args, "restrict", &net.restricted) ||
	    !arg_bool(r, args, "persist", &persist))
		return;
	if (cfg_net_type_parse(type, &net.type) < 0)
		return reply_error(r, PROTO_ERR_INVALID,
		                   "attach-net: type '%s' (use user, tap or bridge)", type);
	if (mac != NULL && cfg_parse_mac(mac, net.mac) < 0)
		return reply_error(r, PROTO_ERR_INVALID,
		                   "attach-net: mac '%s' is not a unicast MAC address (e.g. "
		                   "52:54:00:12:34:56)",
		                   mac);
	net.mac_given = mac != NULL;
	net.bridge = (char *)bridge;
	net.ifname = (char *)ifname;
	rc = cfg_net_check(&net, &cause);
	if (!device_ok(r, rc, cause))
		return;
	vm_attach_net(vm, &net, persist, control_done, r);
}

static void
cmd_detach(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	const char *id = arg_id(r, args);
	uint64_t timeout_ms = 0;
	bool persist = false;

	if (id == NULL || !arg_bool(r, args, "persist", &persist) ||
	    !arg_timeout(r, args, "timeout_ms", &timeout_ms))
		return;
	vm_detach_device(vm, id, persist, timeout_ms, control_done, r);
}

/* media: args.insert (an image path) or args.eject, for cdrom args.id of a running VM. Any
 * path for root and qvmd's user; other requesters name images below image_dirs. */
static void
cmd_media(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	const char *id = arg_id(r, args), *file = NULL;
	bool eject = false, persist = false;

	if (id == NULL || !arg_str(r, args, "insert", &file) ||
	    !arg_bool(r, args, "eject", &eject) || !arg_bool(r, args, "persist", &persist))
		return;
	if ((file == NULL) == !eject)
		return reply_error(r, PROTO_ERR_INVALID,
		                   "media: one of args.insert (a path) and args.eject is required");
	if (file != NULL && (file[0] != '/' || strchr(file, '\n') != NULL))
		return reply_error(r, PROTO_ERR_INVALID,
		                   "media: insert '%s' must be an absolute path", file);
	vm_media_change(vm, id, file, r->uid == 0 || r->uid == getuid(), persist, control_done, r);
}

static void
cmd_apply(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	bool dry_run = false;

	if (!arg_bool(r, args, "dry_run", &dry_run))
		return;
	vm_apply(vm, dry_run, control_done, r);
}

static void
cmd_diff(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	vm_diff(vm, control_done, r);
}

static void
cmd_devices(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	vm_devices(vm, control_done, r);
}

/* Reads the required snapshot tag. */
static const char *
arg_tag(struct control_reply *r, struct vm *vm, struct json_object *args)
{
	const char *tag = NULL;

	if (!arg_str(r, args, "tag", &tag))
		return NULL;
	if (tag == NULL)
		reply_error(r, PROTO_ERR_INVALID,
		            "vm %s: args.tag (the snapshot's name) is required", vm_name(vm));
	return tag;
}

static void
cmd_snapshot(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	struct vm_snapshot_args a = {0};
	const char *excl[64];
	struct json_object *v;
	bool wait = true;

	if ((a.tag = arg_tag(r, vm, args)) == NULL || !arg_str(r, args, "note", &a.note) ||
	    !arg_bool(r, args, "disk_only", &a.disk_only) || !arg_bool(r, args, "wait", &wait))
		return;
	if (a.note != NULL && strlen(a.note) > 1024)
		return reply_error(r, PROTO_ERR_INVALID, "vm %s: args.note: at most 1024 bytes",
		                   vm_name(vm));
	if (json_object_object_get_ex(args, "exclude", &v) && v != NULL) {
		size_t len =
		    json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;

		if (!json_object_is_type(v, json_type_array) || len > 64)
			return reply_error(
			    r, PROTO_ERR_INVALID,
			    "vm %s: args.exclude must be an array of at most 64 disk ids",
			    vm_name(vm));
		for (size_t i = 0; i < len; i++) {
			struct json_object *e = json_object_array_get_idx(v, i);

			if (!json_object_is_type(e, json_type_string))
				return reply_error(
				    r, PROTO_ERR_INVALID,
				    "vm %s: args.exclude must hold disk ids (strings)",
				    vm_name(vm));
			excl[a.nexclude++] = json_object_get_string(e);
		}
	}
	a.exclude = excl;
	a.no_wait = !wait;
	vm_snapshot_create(vm, &a, control_done, r);
}

static void
cmd_snapshots(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	vm_snapshots(vm, control_done, r);
}

static void
cmd_revert(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	const char *tag;
	bool wait = true;

	if ((tag = arg_tag(r, vm, args)) == NULL || !arg_bool(r, args, "wait", &wait))
		return;
	vm_snapshot_revert(vm, tag, !wait, control_done, r);
}

static void
cmd_snapshot_delete(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	const char *tag;
	bool wait = true;

	if ((tag = arg_tag(r, vm, args)) == NULL || !arg_bool(r, args, "wait", &wait))
		return;
	vm_snapshot_delete(vm, tag, !wait, control_done, r);
}

/* Background jobs of one VM or of all, running and recently ended. */
static void
cmd_jobs(struct control_reply *r, struct vm *unused, const char *vm_name, struct json_object *args)
{
	struct daemon *d = control_daemon(r->c);
	struct json_object *res = json_object_new_object(), *all = json_object_new_array();
	struct vm *one = NULL;

	if (vm_name != NULL && (one = daemon_find_vm(d, vm_name)) == NULL) {
		json_object_put(res);
		json_object_put(all);
		return reply_error(r, PROTO_ERR_NOT_FOUND, "vm %s: no such vm", vm_name);
	}
	for (size_t i = 0; i < d->nvms; i++) {
		struct json_object *jobs;

		if (one != NULL && d->vms[i] != one)
			continue;
		jobs = vm_jobs_json(d->vms[i]);
		for (size_t k = 0; k < json_object_array_length(jobs); k++)
			json_object_array_add(all,
			                      json_object_get(json_object_array_get_idx(jobs, k)));
		json_object_put(jobs);
	}
	json_object_object_add(res, "jobs", all);
	control_done(res, PROTO_OK, NULL, r);
}

static void
cmd_job_cancel(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	const char *job = NULL;

	if (!arg_str(r, args, "job", &job))
		return;
	if (job == NULL)
		return reply_error(r, PROTO_ERR_INVALID, "vm %s: args.job (the job id) is required",
		                   vm_name(vm));
	vm_job_cancel(vm, job, control_done, r);
}

/* backup: args.mode "auto" (default) | "full" | "incremental", args.to, args.wait. */
static void
cmd_backup(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	struct vm_backup_args a = {0};
	const char *mode = NULL;
	bool wait = true;

	if (!arg_str(r, args, "mode", &mode) || !arg_str(r, args, "to", &a.to) ||
	    !arg_bool(r, args, "wait", &wait))
		return;
	if (mode == NULL || strcmp(mode, "auto") == 0)
		a.mode = VM_BACKUP_AUTO;
	else if (strcmp(mode, "full") == 0)
		a.mode = VM_BACKUP_FULL;
	else if (strcmp(mode, "incremental") == 0)
		a.mode = VM_BACKUP_INCREMENTAL;
	else
		return reply_error(r, PROTO_ERR_INVALID,
		                   "vm %s: args.mode must be auto, full or incremental",
		                   vm_name(vm));
	if (a.to != NULL && a.to[0] != '/')
		return reply_error(r, PROTO_ERR_INVALID, "vm %s: args.to must be an absolute path",
		                   vm_name(vm));
	a.no_wait = !wait;
	vm_backup(vm, &a, control_done, r);
}

static void
cmd_backups(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	vm_backups(vm, control_done, r);
}

/* Reads the required backup id. */
static const char *
arg_backup(struct control_reply *r, struct vm *vm, struct json_object *args)
{
	const char *id = NULL;

	if (!arg_str(r, args, "backup", &id))
		return NULL;
	if (id == NULL)
		reply_error(r, PROTO_ERR_INVALID,
		            "vm %s: args.backup (the backup's id) is required", vm_name(vm));
	return id;
}

/* restore: args.backup, exactly one of args.to (a directory) and args.in_place (true), args.wait.
 */
static void
cmd_restore(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	const char *id, *to = NULL;
	bool wait = true, in_place = false;

	if ((id = arg_backup(r, vm, args)) == NULL || !arg_str(r, args, "to", &to) ||
	    !arg_bool(r, args, "in_place", &in_place) || !arg_bool(r, args, "wait", &wait))
		return;
	if ((to != NULL) == in_place)
		return reply_error(
		    r, PROTO_ERR_INVALID,
		    "vm %s: give exactly one of args.to (a directory for new images) "
		    "and args.in_place (replace the vm's own disks)",
		    vm_name(vm));
	if (to != NULL && to[0] != '/')
		return reply_error(r, PROTO_ERR_INVALID,
		                   "vm %s: args.to must be an absolute directory", vm_name(vm));
	/* A NULL directory restores in place. */
	vm_backup_restore(vm, id, to, !wait, control_done, r);
}

/* backup-prune: args.keep (>= 1, required), args.wait. */
static void
cmd_backup_prune(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	struct json_object *v = NULL;
	bool wait = true;

	if (!arg_bool(r, args, "wait", &wait))
		return;
	if (args == NULL || !json_object_object_get_ex(args, "keep", &v) ||
	    !json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1 ||
	    json_object_get_int64(v) > 1000000)
		return reply_error(r, PROTO_ERR_INVALID,
		                   "vm %s: args.keep (how many restore points to keep, at least 1) "
		                   "is required",
		                   vm_name(vm));
	vm_backup_prune(vm, (unsigned)json_object_get_int64(v), !wait, control_done, r);
}

static void
cmd_backup_verify(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	const char *id;
	bool wait = true;

	if ((id = arg_backup(r, vm, args)) == NULL || !arg_bool(r, args, "wait", &wait))
		return;
	vm_backup_verify(vm, id, !wait, control_done, r);
}

/* Whether obj (the element where of an array) holds only the keys of known; else a reply. */
static bool
arg_keys(struct control_reply *r, struct json_object *obj, const char *where,
         const char *const *known)
{
	if (!json_object_is_type(obj, json_type_object)) {
		reply_error(r, PROTO_ERR_INVALID, "create: %s must be an object", where);
		return false;
	}
	json_object_object_foreach(obj, key, val)
	{
		bool ok = false;

		(void)val;
		for (const char *const *k = known; *k != NULL && !ok; k++)
			ok = strcmp(*k, key) == 0;
		if (!ok) {
			reply_error(r, PROTO_ERR_INVALID, "create: unknown argument %s.%s", where,
			            key);
			return false;
		}
	}
	return true;
}

/* The array args.name (absent: n 0), at most max long; false (and a reply) when malformed. */
static bool
arg_array(struct control_reply *r, struct json_object *args, const char *name, size_t max,
          struct json_object **arr, size_t *n)
{
	*arr = NULL;
	*n = 0;
	if (args == NULL || !json_object_object_get_ex(args, name, arr) || *arr == NULL)
		return true;
	if (!json_object_is_type(*arr, json_type_array) || json_object_array_length(*arr) > max) {
		reply_error(r, PROTO_ERR_INVALID, "create: args.%s must be an array of at most %zu",
		            name, max);
		return false;
	}
	*n = json_object_array_length(*arr);
	return true;
}

/*
 * create: vm (the new name), args.memory_bytes (required), vcpus, machine, accel, os_variant,
 * autostart, start, disks [{id, path, format, size_bytes}], nets [{type, bridge, ifname,
 * restrict}], cdrom.
 */
static void
cmd_create(struct control_reply *r, struct vm *unused, const char *name, struct json_object *args)
{
	static const char *const disk_keys[] = {"id", "path", "format", "size_bytes", NULL};
	static const char *const net_keys[] = {"type", "bridge", "ifname", "restrict", NULL};
	struct daemon_create_disk disks[CFG_PORTS_MAX];
	struct daemon_create_net nets[CFG_PORTS_MAX];
	struct daemon_create a = {.name = name, .uid = r->uid, .disks = disks, .nets = nets};
	struct json_object *jd, *jn;
	uint64_t vcpus = 0;

	if (name == NULL)
		return reply_error(r, PROTO_ERR_INVALID,
		                   "create: \"vm\" (the new name) is required");
	if (!arg_uint(r, args, "memory_bytes", &a.memory) || !arg_uint(r, args, "vcpus", &vcpus) ||
	    !arg_str(r, args, "machine", &a.machine) || !arg_str(r, args, "accel", &a.accel) ||
	    !arg_str(r, args, "os_variant", &a.os_variant) ||
	    !arg_bool(r, args, "autostart", &a.autostart) ||
	    !arg_bool(r, args, "start", &a.start) || !arg_str(r, args, "cdrom", &a.cdrom) ||
	    !arg_array(r, args, "disks", CFG_PORTS_MAX, &jd, &a.ndisks) ||
	    !arg_array(r, args, "nets", CFG_PORTS_MAX, &jn, &a.nnets))
		return;
	if (a.memory == 0)
		return reply_error(r, PROTO_ERR_INVALID, "create: args.memory_bytes is required");
	if (vcpus > 1024)
		return reply_error(r, PROTO_ERR_INVALID, "create: args.vcpus is out of range");
	a.vcpus = (unsigned)vcpus;
	for (size_t i = 0; i < a.ndisks; i++) {
		struct json_object *o = json_object_array_get_idx(jd, i);
		char at[48];

		snprintf(at, sizeof at, "args.disks[%zu]", i);
		memset(&disks[i], 0, sizeof disks[i]);
		if (!arg_keys(r, o, at, disk_keys) || !member_str(r, o, at, "id", &disks[i].id) ||
		    !member_str(r, o, at, "path", &disks[i].path) ||
		    !member_str(r, o, at, "format", &disks[i].format) ||
		    !member_uint(r, o, at, "size_bytes", &disks[i].size))
			return;
	}
	for (size_t i = 0; i < a.nnets; i++) {
		struct json_object *o = json_object_array_get_idx(jn, i);
		char at[48];

		snprintf(at, sizeof at, "args.nets[%zu]", i);
		memset(&nets[i], 0, sizeof nets[i]);
		if (!arg_keys(r, o, at, net_keys) || !member_str(r, o, at, "type", &nets[i].type) ||
		    !member_str(r, o, at, "bridge", &nets[i].bridge) ||
		    !member_str(r, o, at, "ifname", &nets[i].ifname) ||
		    !member_bool(r, o, at, "restrict", &nets[i].restricted))
			return;
	}
	daemon_create(control_daemon(r->c), &a, control_done, r);
}

/* undefine: args.remove_disks. */
static void
cmd_undefine(struct control_reply *r, struct vm *vm, const char *n, struct json_object *args)
{
	bool remove_disks = false;

	if (arg_bool(r, args, "remove_disks", &remove_disks))
		daemon_undefine(control_daemon(r->c), vm, remove_disks, control_done, r);
}

static const char *const args_snapshot[] = {"tag", "note", "disk_only", "exclude", "wait", NULL};
static const char *const args_tag[] = {"tag", "wait", NULL};
static const char *const args_job_cancel[] = {"job", NULL};
static const char *const args_backup[] = {"mode", "to", "wait", NULL};
static const char *const args_restore[] = {"backup", "to", "in_place", "wait", NULL};
static const char *const args_backup_prune[] = {"keep", "wait", NULL};
static const char *const args_backup_verify[] = {"backup", "wait", NULL};

static const char *const args_attach_disk[] = {"id",       "file",        "format",  "cache",
                                               "readonly", "create_size", "persist", NULL};
static const char *const args_attach_net[] = {"id",     "type",     "mac",     "bridge",
                                              "ifname", "restrict", "persist", NULL};
static const char *const args_apply[] = {"dry_run", NULL};
static const char *const args_create[] = {"memory_bytes", "vcpus",     "machine", "accel",
                                          "os_variant",   "autostart", "start",   "disks",
                                          "nets",         "cdrom",     NULL};
static const char *const args_undefine[] = {"remove_disks", NULL};
static const char *const args_media[] = {"id", "insert", "eject", "persist", NULL};
static const char *const args_detach[] = {"id", "persist", "timeout_ms", NULL};
static const char *const args_powerdown[] = {"timeout_ms", "wait", "all", NULL};
static const char *const args_timeout[] = {"timeout_ms", NULL};
static const char *const args_start[] = {"all", "force", NULL};
static const char *const args_qmp[] = {"command", "arguments", NULL};
static const char *const args_subscribe[] = {"vm", "events", NULL};

static const char *const args_console[] = {"tail", NULL};
static const struct control_cmd control_cmds[] = {
    {"apply", CMD_VM_REQUIRED, args_apply, cmd_apply},
    {"attach-disk", CMD_VM_REQUIRED, args_attach_disk, cmd_attach_disk},
    {"attach-net", CMD_VM_REQUIRED, args_attach_net, cmd_attach_net},
    {"backup", CMD_VM_REQUIRED, args_backup, cmd_backup},
    {"backup-prune", CMD_VM_REQUIRED, args_backup_prune, cmd_backup_prune},
    {"backup-verify", CMD_VM_REQUIRED, args_backup_verify, cmd_backup_verify},
    {"backups", CMD_VM_REQUIRED, NULL, cmd_backups},
    {"console", CMD_VM_REQUIRED, args_console, control_console},
    {"create", CMD_VM_OPTIONAL, args_create, cmd_create},
    {"detach", CMD_VM_REQUIRED, args_detach, cmd_detach},
    {"devices", CMD_VM_REQUIRED, NULL, cmd_devices},
    {"diff", CMD_VM_REQUIRED, NULL, cmd_diff},
    {"job-cancel", CMD_VM_REQUIRED, args_job_cancel, cmd_job_cancel},
    {"jobs", CMD_VM_OPTIONAL, NULL, cmd_jobs},
    {"kill", CMD_VM_REQUIRED, NULL, cmd_kill},
    {"list", CMD_VM_NONE, NULL, cmd_list},
    {"media", CMD_VM_REQUIRED, args_media, cmd_media},
    {"pause", CMD_VM_REQUIRED, NULL, cmd_pause},
    {"powerdown", CMD_VM_OPTIONAL, args_powerdown, cmd_powerdown},
    {"qmp", CMD_VM_REQUIRED, args_qmp, cmd_qmp},
    {"reboot", CMD_VM_REQUIRED, args_timeout, cmd_reboot},
    {"reload", CMD_VM_NONE, NULL, cmd_reload},
    {"reset", CMD_VM_REQUIRED, NULL, cmd_reset},
    {"restart", CMD_VM_REQUIRED, args_timeout, cmd_restart},
    {"restore", CMD_VM_REQUIRED, args_restore, cmd_restore},
    {"resume", CMD_VM_REQUIRED, NULL, cmd_resume},
    {"revert", CMD_VM_REQUIRED, args_tag, cmd_revert},
    {"snapshot", CMD_VM_REQUIRED, args_snapshot, cmd_snapshot},
    {"snapshot-delete", CMD_VM_REQUIRED, args_tag, cmd_snapshot_delete},
    {"snapshots", CMD_VM_REQUIRED, NULL, cmd_snapshots},
    {"start", CMD_VM_OPTIONAL, args_start, cmd_start},
    {"status", CMD_VM_REQUIRED, NULL, cmd_status},
    {"subscribe", CMD_VM_OPTIONAL, args_subscribe, cmd_subscribe},
    {"undefine", CMD_VM_REQUIRED, args_undefine, cmd_undefine},
    {"version", CMD_VM_NONE, NULL, cmd_version},
};

/* The first key of args that the command does not take, or NULL. */
static const char *
unknown_arg(const struct control_cmd *c, struct json_object *args)
{
	if (args == NULL)
		return NULL;
	json_object_object_foreach(args, key, val)
	{
		bool known = false;

		(void)val;
		for (const char *const *k = c->args; k && *k && !known; k++)
			known = strcmp(*k, key) == 0;
		if (!known)
			return key;
	}
	return NULL;
}

void
control_dispatch(struct control_reply *r, const char *cmd, const char *vm_name,
                 struct json_object *args)
{
	const struct control_cmd *c = NULL;
	const char *bad;
	struct vm *vm = NULL;

	for (size_t i = 0; i < sizeof control_cmds / sizeof control_cmds[0]; i++) {
		if (strcmp(control_cmds[i].name, cmd) == 0)
			c = &control_cmds[i];
	}
	if (c == NULL)
		return reply_error(r, PROTO_ERR_INVALID, "unknown command '%s'", cmd);
	if (c->vm != CMD_VM_NONE && vm_name != NULL)
		r->vm = xstrdup(vm_name);
	if ((bad = unknown_arg(c, args)) != NULL)
		return reply_error(r, PROTO_ERR_INVALID, "%s: unknown argument args.%s", cmd, bad);
	if (c->vm == CMD_VM_REQUIRED) {
		if (vm_name == NULL)
			return reply_error(r, PROTO_ERR_INVALID, "%s: \"vm\" is required", cmd);
		vm = daemon_find_vm(control_daemon(r->c), vm_name);
		if (vm == NULL)
			return reply_error(r, PROTO_ERR_NOT_FOUND, "no such vm");
	}
	c->exec(r, vm, vm_name, args);
}
