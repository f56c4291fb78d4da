/* Lifecycle verbs: list, status, start, powerdown, restart, reboot, reset, pause, resume, kill. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_print.h"
#include "ctl_verbs.h"
#include "xalloc.h"

/* " (ended by quit after 2.0s timeout)", or " (ended by guest)", and "; cancelled JOB first" when
 * the stop cancelled a background job; timeout_ms 0 when not given. */
static void
ctl_vm_ended_by(struct json_object *res, uint64_t timeout_ms, char *out, size_t len)
{
	const char *by = ctl_json_str(res, "ended_by", NULL),
	           *cancelled = ctl_json_str(res, "cancelled_job", NULL);
	int64_t elapsed = ctl_json_int(res, "elapsed_ms", -1);
	char secs[32];
	size_t n;

	if (by == NULL) {
		out[0] = '\0';
		return;
	}
	if (strcmp(by, "guest") == 0) {
		snprintf(out, len, " (ended by guest)");
	} else if (timeout_ms > 0) {
		ctl_fmt_seconds(timeout_ms, secs, sizeof secs);
		snprintf(out, len, " (ended by %s after %s timeout)", by, secs);
	} else if (elapsed >= 0) {
		ctl_fmt_seconds((uint64_t)elapsed, secs, sizeof secs);
		snprintf(out, len, " (ended by %s after %s)", by, secs);
	} else {
		snprintf(out, len, " (ended by %s)", by);
	}
	n = strlen(out);
	if (cancelled != NULL && n < len)
		snprintf(out + n, len - n, "; cancelled %s first", cancelled);
}

static int
ctl_vm_list(struct ctl *ctl, struct ctl_args *args)
{
	static const char *const headers[] = {"NAME", "STATE", "PID", "VCPUS", "MEMORY", "UPTIME"};
	struct json_object *reply, *res, *vms, *vm;
	struct ctl_table *t;
	char pid[24], vcpus[24], mem[24], up[24];
	const char *row[6];
	int64_t p;
	int rc;

	if ((rc = ctl_call(ctl, "list", NULL, NULL, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	t = ctl_table_new(6, headers);
	vms = ctl_json_array(res, "vms");
	for (size_t i = 0; vms != NULL && i < json_object_array_length(vms); i++) {
		vm = json_object_array_get_idx(vms, i);
		p = ctl_json_int(vm, "pid", 0);
		snprintf(pid, sizeof pid, "%" PRId64, p);
		snprintf(vcpus, sizeof vcpus, "%" PRId64, ctl_json_int(vm, "vcpus", 0));
		ctl_fmt_size((uint64_t)ctl_json_int(vm, "memory_bytes", 0), mem, sizeof mem);
		ctl_fmt_uptime((uint64_t)ctl_json_int(vm, "uptime_ms", 0), up, sizeof up);
		row[0] = ctl_json_str(vm, "name", "?");
		row[1] = ctl_json_str(vm, "state", "?");
		row[2] = p > 0 ? pid : "-";
		row[3] = vcpus;
		row[4] = mem;
		row[5] = p > 0 ? up : "-";
		ctl_table_add(t, row);
	}
	ctl_table_print(t, stdout);
	ctl_table_free(t);
	json_object_put(reply);
	return CTL_EXIT_OK;
}

/* One "key: value" line of status, values aligned; NULL prints "-". */
static void
ctl_vm_field(const char *key, const char *value)
{
	int pad = 18 - (int)strlen(key);

	printf("%s:%*s %s\n", key, pad > 0 ? pad : 0, "", value != NULL ? value : "-");
}

static int
ctl_vm_status(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *reply, *res, *list, *dev;
	char buf[4200], key[64]; /* a disk line carries a path */
	int64_t pid;
	int rc;

	if ((rc = ctl_call(ctl, "status", args->argv[0], NULL, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	pid = ctl_json_int(res, "pid", 0);
	ctl_vm_field("state", ctl_json_str(res, "state", NULL));
	ctl_vm_field("qemu status", ctl_json_str(res, "qemu_status", NULL));
	snprintf(buf, sizeof buf, "%" PRId64, pid);
	ctl_vm_field("pid", pid > 0 ? buf : NULL);
	ctl_fmt_uptime((uint64_t)ctl_json_int(res, "uptime_ms", 0), buf, sizeof buf);
	ctl_vm_field("uptime", pid > 0 ? buf : NULL);
	snprintf(buf, sizeof buf, "%" PRId64, ctl_json_int(res, "vcpus", 0));
	ctl_vm_field("vcpus", buf);
	ctl_fmt_size((uint64_t)ctl_json_int(res, "memory_bytes", 0), buf, sizeof buf);
	ctl_vm_field("memory", buf);
	ctl_vm_field("machine", ctl_json_str(res, "machine", NULL));
	ctl_vm_field("accel", ctl_json_str(res, "accel", NULL));
	snprintf(buf, sizeof buf, "%" PRId64, ctl_json_int(res, "restarts", 0));
	ctl_vm_field("restarts", buf);
	ctl_vm_field("last exit", ctl_json_str(ctl_json_obj(res, "last_exit"), "text", NULL));
	ctl_vm_field("definition changed",
	             ctl_json_bool(res, "definition_changed", false) ? "yes" : "no");
	ctl_vm_field("job", ctl_json_str(res, "job", NULL));

	list = ctl_json_array(res, "disks");
	for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
		dev = json_object_array_get_idx(list, i);
		snprintf(key, sizeof key, "disk %s", ctl_json_str(dev, "id", "?"));
		snprintf(buf, sizeof buf, "%s (%s%s)", ctl_json_str(dev, "file", "?"),
		         ctl_json_str(dev, "format", "?"),
		         ctl_json_bool(dev, "readonly", false) ? ", read-only" : "");
		ctl_vm_field(key, buf);
	}
	list = ctl_json_array(res, "nets");
	for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
		dev = json_object_array_get_idx(list, i);
		snprintf(key, sizeof key, "net %s", ctl_json_str(dev, "id", "?"));
		snprintf(buf, sizeof buf, "%s %s", ctl_json_str(dev, "type", "?"),
		         ctl_json_str(dev, "mac", "-"));
		ctl_vm_field(key, buf);
	}
	list = ctl_json_array(res, "cdroms");
	for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
		const char *tray;

		dev = json_object_array_get_idx(list, i);
		tray = ctl_json_str(dev, "tray", NULL);
		snprintf(key, sizeof key, "cdrom %s", ctl_json_str(dev, "id", "?"));
		snprintf(buf, sizeof buf, "%s%s%s%s%s", ctl_json_str(dev, "medium", "empty"),
		         tray ? " (tray " : "", tray ? tray : "", tray ? ")" : "",
		         ctl_json_bool(dev, "boot", false) ? " boot" : "");
		ctl_vm_field(key, buf);
	}
	/* "vnc /run/qvmd/NAME/vnc.sock" while QEMU takes clients, else the setting alone (an
	 * older qvmd says nothing of displays). */
	if (ctl_json_str(res, "display", NULL) != NULL) {
		snprintf(buf, sizeof buf, "%s%s%s", ctl_json_str(res, "display", "none"),
		         ctl_json_str(res, "vnc_socket", NULL) ? " " : "",
		         ctl_json_str(res, "vnc_socket", ""));
		ctl_vm_field("display", buf);
	}
	/* What the file says and the running VM does not (yet): "memory 1G -> 2G (why)". */
	list = ctl_json_array(res, "pending");
	for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
		dev = json_object_array_get_idx(list, i);
		printf("pending: %s %s -> %s (%s)\n", ctl_json_str(dev, "what", "?"),
		       ctl_json_str(dev, "old", "-"), ctl_json_str(dev, "new", "-"),
		       ctl_json_str(dev, "reason", "restart needed"));
	}
	json_object_put(reply);
	return CTL_EXIT_OK;
}

/* start, restart, reset, pause, resume and kill: the verb is the command, one line of output;
 * req (taken, may be NULL) its args. */
static int
ctl_vm_one(struct ctl *ctl, const char *vm, struct json_object *req, uint64_t timeout_ms)
{
	const char *verb = ctl->verb->name;
	struct json_object *reply, *res;
	const char *state;
	char ended[256];
	int rc;

	if ((rc = ctl_call(ctl, verb, vm, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	state = ctl_json_str(res, "state", "?");
	ctl_vm_ended_by(res, timeout_ms, ended, sizeof ended);
	if ((strcmp(verb, "start") == 0 || strcmp(verb, "restart") == 0) &&
	    ctl_json_int(res, "pid", 0) > 0) {
		printf("%s: %s (pid %" PRId64 ")%s%s\n", vm, state, ctl_json_int(res, "pid", 0),
		       ended[0] ? "; stopped first" : "", ended);
	} else if (strcmp(verb, "reset") == 0) {
		printf("%s: reset (%s)\n", vm, state);
	} else {
		printf("%s: %s%s\n", vm, state, ended);
	}
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static int
ctl_vm_simple(struct ctl *ctl, struct ctl_args *args)
{
	return ctl_vm_one(ctl, args->argv[0], NULL, 0);
}

/* powerdown --all and start --all: one line per VM, exit 1 if any of them failed. */
static int
ctl_vm_all(struct ctl *ctl, struct json_object *req, uint64_t timeout_ms)
{
	const char *verb = ctl->verb->name;
	struct json_object *reply, *res, *vms, *vm, *err;
	size_t failed = 0, n;
	char ended[256];
	int rc;

	json_object_object_add(req, "all", json_object_new_boolean(1));
	if ((rc = ctl_call(ctl, verb, NULL, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	vms = ctl_json_array(res, "results");
	n = vms != NULL ? json_object_array_length(vms) : 0;
	for (size_t i = 0; i < n; i++) {
		vm = json_object_array_get_idx(vms, i);
		if (!ctl_json_bool(vm, "ok", false)) {
			failed++;
			if (!json_object_object_get_ex(vm, "error", &err))
				err = NULL;
			if (!ctl->json)
				printf("%s: failed: %s\n", ctl_json_str(vm, "name", "?"),
				       ctl_json_str(err, "message", "unknown error"));
			continue;
		}
		if (!ctl->json) {
			ctl_vm_ended_by(vm, timeout_ms, ended, sizeof ended);
			printf("%s: %s%s\n", ctl_json_str(vm, "name", "?"),
			       ctl_json_str(vm, "state", "?"), ended);
		}
	}
	if (ctl->json)
		ctl_print_json(stdout, res);
	else if (failed > 0)
		fprintf(stderr, "qvmctl: %s failed for %zu of %zu vms\n", verb, failed, n);
	json_object_put(reply);
	return failed > 0 ? CTL_EXIT_FAILED : CTL_EXIT_OK;
}

static int
ctl_vm_start(struct ctl *ctl, struct ctl_args *args)
{
	bool all = ctl_args_has(args, "all"), force = ctl_args_has(args, "force");
	struct json_object *req;

	if (all && args->argc > 0)
		return ctl_usage_error(ctl, "start: --all takes no NAME");
	if (force && !all)
		return ctl_usage_error(ctl, "start: --force goes with --all");
	if (!all && args->argc == 0)
		return ctl_usage_error(ctl, "start: NAME or --all is required");
	if (!all)
		return ctl_vm_simple(ctl, args);
	req = json_object_new_object();
	if (force)
		json_object_object_add(req, "force", json_object_new_boolean(1));
	return ctl_vm_all(ctl, req, 0);
}

static int
ctl_vm_restart(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *req;
	uint64_t timeout_ms;
	bool has_timeout;
	int rc;

	if ((rc = ctl_args_timeout(ctl, args, "timeout", &timeout_ms, &has_timeout)) != 0)
		return rc;
	req = json_object_new_object();
	if (has_timeout)
		json_object_object_add(req, "timeout_ms", json_object_new_uint64(timeout_ms));
	return ctl_vm_one(ctl, args->argv[0], req, timeout_ms);
}

static int
ctl_vm_powerdown(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *req, *reply, *res;
	uint64_t timeout_ms;
	bool has_timeout, all = ctl_args_has(args, "all"), nowait = ctl_args_has(args, "no-wait");
	char ended[256];
	int rc;

	if ((rc = ctl_args_timeout(ctl, args, "timeout", &timeout_ms, &has_timeout)) != 0)
		return rc;
	if (all && args->argc > 0)
		return ctl_usage_error(ctl, "powerdown: --all takes no NAME");
	if (all && nowait)
		return ctl_usage_error(ctl, "powerdown: --all always waits");
	if (!all && args->argc == 0)
		return ctl_usage_error(ctl, "powerdown: NAME or --all is required");

	req = json_object_new_object();
	if (has_timeout)
		json_object_object_add(req, "timeout_ms", json_object_new_uint64(timeout_ms));
	if (all)
		return ctl_vm_all(ctl, req, timeout_ms);
	json_object_object_add(req, "wait", json_object_new_boolean(!nowait));
	if ((rc = ctl_call(ctl, "powerdown", args->argv[0], req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
	} else {
		ctl_vm_ended_by(res, timeout_ms, ended, sizeof ended);
		printf("%s: %s%s\n", args->argv[0], ctl_json_str(res, "state", "?"), ended);
	}
	json_object_put(reply);
	return CTL_EXIT_OK;
}

/* reboot: "web1: running (rebooted by guest after 3.2s)". */
static int
ctl_vm_reboot(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *req = json_object_new_object(), *reply, *res;
	uint64_t timeout_ms;
	bool has_timeout;
	const char *by;
	char secs[32];
	int rc;

	if ((rc = ctl_args_timeout(ctl, args, "timeout", &timeout_ms, &has_timeout)) != 0) {
		json_object_put(req);
		return rc;
	}
	if (has_timeout)
		json_object_object_add(req, "timeout_ms", json_object_new_uint64(timeout_ms));
	if ((rc = ctl_call(ctl, "reboot", args->argv[0], req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
	} else {
		by = ctl_json_str(res, "rebooted_by", "?");
		ctl_fmt_seconds((uint64_t)ctl_json_int(res, "elapsed_ms", 0), secs, sizeof secs);
		printf("%s: %s (%s after %s)%s\n", args->argv[0], ctl_json_str(res, "state", "?"),
		       strcmp(by, "reset") == 0         ? "guest ignored powerdown: reset"
		       : strcmp(by, "guest-reset") == 0 ? "the guest rebooted itself"
		                                        : "rebooted by the guest",
		       secs,
		       ctl_json_bool(res, "resumed", false) ? "; it was paused: resumed first"
		                                            : "");
	}
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static const struct ctl_opt ctl_vm_reboot_opts[] = {
    {"timeout", true, "how long the guest gets to shut down (default: its shutdown_timeout)"},
    {NULL, false, NULL},
};

static const struct ctl_opt ctl_vm_powerdown_opts[] = {
    {"timeout", true, "how long the guest gets before the escalation (default: shutdown_timeout)"},
    {"no-wait", false, "return once the guest was asked"},
    {"all", false, "every VM that has a QEMU, in parallel (host shutdown)"},
    {NULL, false, NULL},
};

static const struct ctl_opt ctl_vm_start_opts[] = {
    {"all", false, "every VM with autostart = yes that has no QEMU, in parallel"},
    {"force", false, "with --all: every VM, whatever its autostart"},
    {NULL, false, NULL},
};

const struct ctl_verb ctl_verb_list = {
    "list", "", 0, 0, NULL, ctl_vm_list, "every VM: state, pid, vCPUs, memory, uptime", NULL,
};
const struct ctl_verb ctl_verb_status = {
    "status",
    "NAME",
    1,
    1,
    NULL,
    ctl_vm_status,
    "one VM in detail: state, QEMU, job, devices, last exit, definition changes",
    NULL,
};
const struct ctl_verb ctl_verb_start = {
    "start",
    "NAME | --all [--force]",
    0,
    1,
    ctl_vm_start_opts,
    ctl_vm_start,
    "start a VM, returning when the guest runs",
    "with --all: a VM failed to start",
};
const struct ctl_verb ctl_verb_restart = {
    "restart",
    "NAME [--timeout D]",
    1,
    1,
    ctl_vm_reboot_opts,
    ctl_vm_restart,
    "powerdown (with its escalation), then start",
    NULL,
};
const struct ctl_verb ctl_verb_powerdown = {
    "powerdown",
    "NAME [--timeout D] [--no-wait] | --all [--timeout D]",
    0,
    1,
    ctl_vm_powerdown_opts,
    ctl_vm_powerdown,
    "ACPI powerdown; after the timeout quit, then SIGTERM, then SIGKILL",
    "with --all: a VM still runs at the end",
};
const struct ctl_verb ctl_verb_reboot = {
    "reboot",
    "NAME [--timeout D]",
    1,
    1,
    ctl_vm_reboot_opts,
    ctl_vm_reboot,
    "graceful reboot in the same QEMU process; a hard reset if the guest ignores ACPI",
    NULL,
};
const struct ctl_verb ctl_verb_reset = {
    "reset", "NAME", 1, 1, NULL, ctl_vm_simple, "hard reset (system_reset)", NULL,
};
const struct ctl_verb ctl_verb_pause = {
    "pause", "NAME", 1, 1, NULL, ctl_vm_simple, "stop the guest's vCPUs", NULL,
};
const struct ctl_verb ctl_verb_resume = {
    "resume", "NAME", 1, 1, NULL, ctl_vm_simple, "let a paused guest run again", NULL,
};
const struct ctl_verb ctl_verb_kill = {
    "kill",
    "NAME",
    1,
    1,
    NULL,
    ctl_vm_simple,
    "stop the VM at once (quit, SIGTERM, SIGKILL); cancels a background job",
    NULL,
};
