/*
 * Backup verbs: backup, backups, restore, backup-verify, backup-prune (backup --all:
 * ctl_backup_all.c).
 *
 * `backup` waits the way snapshot verbs do: it subscribes to the VM's events, asks for the backup
 * without waiting and follows the job's events to its end, showing bytes done / total, rate and
 * time left on a terminal (one line rewritten in place; plain lines every 10% otherwise).
 * Interrupting it leaves the backup running and says how to cancel it. restore, backup-verify and
 * backup-prune wait for the daemon's answer (backup-prune --no-wait: only for the job to start).
 */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ctl_backup_all.h"
#include "ctl_job.h"
#include "ctl_print.h"
#include "ctl_verbs.h"
#include "xalloc.h"

/* A backup id as the daemon takes it (exit 2 before anything is sent otherwise). */
static bool
ctl_backup_id_ok(const char *s)
{
	static const char shape[] = "ddddddddTdddddd.dddZ";

	if (strlen(s) != sizeof shape - 1)
		return false;
	for (size_t i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
			return false;
	return true;
}

/* Where a backup's progress stands: when it started, the last 10% step printed. */
struct ctl_backup_watch {
	int64_t t0;
	int last_step;
};

/* Prints the progress of a backup: "backup-3: 120 MiB / 1.0 GiB, 40 MiB/s, 22 s left". */
static bool
ctl_backup_progress(struct json_object *job, bool tty, void *arg)
{
	struct ctl_backup_watch *w = arg;
	int64_t cur = ctl_json_int(job, "progress_current", 0),
	        total = ctl_json_int(job, "progress_total", 0), ms = clock_mono_ms() - w->t0;
	char c[32], t[32], rate[32], left[48];
	int step;

	if (total <= 1)
		return false;
	step = (int)(cur * 10 / total);
	if (!tty && step == w->last_step)
		return false;
	w->last_step = step;
	ctl_fmt_size((uint64_t)cur, c, sizeof c);
	ctl_fmt_size((uint64_t)total, t, sizeof t);
	if (ms > 0 && cur > 0) {
		uint64_t bps = (uint64_t)(cur * 1000 / ms);

		ctl_fmt_size(bps, rate, sizeof rate);
		snprintf(left, sizeof left, ", %s/s, %d s left", rate,
		         (int)((total - cur) / (int64_t)(bps ? bps : 1)));
	} else {
		left[0] = '\0';
	}
	printf("%s%s: %s / %s (%d%%)%s%s", tty ? "\r" : "", ctl_json_str(job, "id", "?"), c, t,
	       (int)(cur * 100 / total), left, tty ? "\033[K" : "\n");
	fflush(stdout);
	return tty;
}

/* The entry of backup id in `backups` (a new reference), or NULL. */
static struct json_object *
ctl_backup_entry(struct ctl *ctl, const char *vm, const char *id)
{
	struct json_object *reply, *res, *list, *found = NULL;

	if (ctl_call(ctl, "backups", vm, NULL, &reply, &res) != CTL_EXIT_OK)
		return NULL;
	list = ctl_json_array(res, "backups");
	for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
		struct json_object *e = json_object_array_get_idx(list, i);

		if (strcmp(ctl_json_str(e, "id", ""), id) == 0)
			found = json_object_get(e);
	}
	json_object_put(reply);
	return found;
}

static void
ctl_backup_print(struct ctl *ctl, const char *vm, struct json_object *e)
{
	struct json_object *disks = ctl_json_array(e, "disks");
	uint64_t size = 0;
	char sz[32];

	if (ctl->json) {
		ctl_print_json(stdout, e);
		return;
	}
	for (size_t i = 0; disks != NULL && i < json_object_array_length(disks); i++)
		size += (uint64_t)ctl_json_int(json_object_array_get_idx(disks, i), "size", 0);
	ctl_fmt_size(size, sz, sizeof sz);
	printf("%s: backup %s %s (%s, %zu disk%s, %s)\n", vm, ctl_json_str(e, "id", "?"),
	       ctl_json_str(e, "status", "?"), ctl_json_str(e, "type", "?"),
	       disks ? json_object_array_length(disks) : 0,
	       disks && json_object_array_length(disks) == 1 ? "" : "s", sz);
	if (ctl_json_str(e, "reason", NULL) != NULL)
		printf("  reason: %s\n", ctl_json_str(e, "reason", ""));
}

/* Follows the backup's job to its end; prints the backup's entry. */
static int
ctl_backup_follow(struct ctl *ctl, const char *vm, const char *job, const char *id)
{
	struct ctl_backup_watch w = {clock_mono_ms(), -1};
	struct json_object *done, *e;
	char *what = xasprintf("backup %s", id);
	int rc;

	rc = ctl_job_follow(ctl, vm, job, what, ctl_backup_progress, &w, &done);
	free(what);
	if (rc != CTL_EXIT_OK)
		return rc;
	/* The entry comes with the job's end (from a qvmd that sends it), else from the list. */
	e = json_object_get(ctl_json_obj(done, "result"));
	json_object_put(done);
	if (e == NULL && (e = ctl_backup_entry(ctl, vm, id)) == NULL)
		return CTL_EXIT_FAILED;
	ctl_backup_print(ctl, vm, e);
	json_object_put(e);
	return CTL_EXIT_OK;
}

static int
ctl_backup_run(struct ctl *ctl, struct ctl_args *args)
{
	const char *vm = args->argv[0], *to = ctl_args_get(args, "to");
	bool full = ctl_args_has(args, "full"), inc = ctl_args_has(args, "incremental"),
	     wait = !ctl_args_has(args, "no-wait");
	struct json_object *req, *reply, *res;
	char *job, *id;
	int64_t sub = 0;
	int rc;

	if (args->argc == 0 || ctl_args_has(args, "all") || ctl_args_has(args, "parallel") ||
	    ctl_args_has(args, "keep"))
		return ctl_backup_all(ctl, args); /* which also refuses a NAME with --all */
	if (full && inc)
		return ctl_usage_error(ctl, "backup: --full and --incremental exclude each other");
	if (to != NULL && to[0] != '/')
		return ctl_usage_error(ctl, "backup: --to %s: give an absolute directory", to);
	if (wait && (rc = ctl_job_subscribe(ctl, vm, &sub)) != CTL_EXIT_OK)
		return rc;
	req = json_object_new_object();
	json_object_object_add(req, "mode",
	                       json_object_new_string(full  ? "full"
	                                              : inc ? "incremental"
	                                                    : "auto"));
	if (to != NULL)
		json_object_object_add(req, "to", json_object_new_string(to));
	json_object_object_add(req, "wait", json_object_new_boolean(false));
	if ((rc = ctl_call(ctl, "backup", vm, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (!wait || ctl_json_str(res, "job", NULL) == NULL) {
		if (ctl->json)
			ctl_print_json(stdout, res);
		else
			printf("%s: backup %s started (%s, job %s)\n", vm,
			       ctl_json_str(res, "id", "?"), ctl_json_str(res, "type", "?"),
			       ctl_json_str(res, "job", "-"));
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	if ((rc = ctl_job_subscribed(ctl, sub)) != CTL_EXIT_OK) {
		json_object_put(reply);
		return rc;
	}
	job = xstrdup(ctl_json_str(res, "job", ""));
	id = xstrdup(ctl_json_str(res, "id", ""));
	json_object_put(reply);
	rc = ctl_backup_follow(ctl, vm, job, id);
	free(job);
	free(id);
	return rc;
}

static int
ctl_backup_list(struct ctl *ctl, struct ctl_args *args)
{
	static const char *const headers[] = {"ID", "TYPE", "PARENT", "CREATED", "SIZE", "STATUS"};
	struct json_object *reply, *res, *list;
	struct ctl_table *t;
	int rc;

	if ((rc = ctl_call(ctl, "backups", args->argv[0], NULL, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	t = ctl_table_new(6, headers);
	list = ctl_json_array(res, "backups");
	for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
		struct json_object *e = json_object_array_get_idx(list, i),
		                   *disks = ctl_json_array(e, "disks");
		uint64_t size = 0;
		const char *cells[6];
		char sz[32];

		for (size_t k = 0; disks != NULL && k < json_object_array_length(disks); k++)
			size +=
			    (uint64_t)ctl_json_int(json_object_array_get_idx(disks, k), "size", 0);
		ctl_fmt_size(size, sz, sizeof sz);
		cells[0] = ctl_json_str(e, "id", "?");
		cells[1] = ctl_json_str(e, "type", "?");
		cells[2] = ctl_json_str(e, "parent", "-");
		cells[3] = ctl_json_str(e, "created", "-");
		cells[4] = sz;
		cells[5] = ctl_json_str(e, "status", "?");
		ctl_table_add(t, cells);
	}
	ctl_table_print(t, stdout);
	ctl_table_free(t);
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static int
ctl_backup_restore(struct ctl *ctl, struct ctl_args *args)
{
	const char *vm = args->argv[0], *id = args->argv[1], *to = ctl_args_get(args, "to");
	bool in_place = ctl_args_has(args, "in-place");
	struct json_object *req, *reply, *res, *disks, *a;
	int rc;

	if (!ctl_backup_id_ok(id))
		return ctl_usage_error(
		    ctl, "restore: '%s' is not a backup id (see qvmctl backups %s)", id, vm);
	if ((to != NULL) == in_place)
		return ctl_usage_error(ctl,
		                       "restore: give exactly one of --to DIR (new images) and "
		                       "--in-place (replace the vm's own disks)");
	if (to != NULL && to[0] != '/')
		return ctl_usage_error(ctl,
		                       "restore: --to DIR (an absolute directory) is required");
	req = json_object_new_object();
	json_object_object_add(req, "backup", json_object_new_string(id));
	if (to != NULL)
		json_object_object_add(req, "to", json_object_new_string(to));
	else
		json_object_object_add(req, "in_place", json_object_new_boolean(true));
	if ((rc = ctl_call(ctl, "restore", vm, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	disks = ctl_json_array(res, "disks");
	for (size_t i = 0; disks != NULL && i < json_object_array_length(disks); i++) {
		struct json_object *d = json_object_array_get_idx(disks, i);

		if (in_place)
			printf("%s: disk %s (%s) restored in place from %s; the old file is %s\n",
			       vm, ctl_json_str(d, "id", "?"), ctl_json_str(d, "file", "?"), id,
			       ctl_json_str(d, "previous", "gone (there was none)"));
		else
			printf("%s: disk %s restored from %s into %s\n", vm,
			       ctl_json_str(d, "id", "?"), id, ctl_json_str(d, "file", "?"));
	}
	a = ctl_json_array(res, "left_alone");
	for (size_t i = 0; a != NULL && i < json_object_array_length(a); i++)
		printf("%s: disk %s left alone (backup %s does not have it)\n", vm,
		       json_object_get_string(json_object_array_get_idx(a, i)), id);
	a = ctl_json_array(res, "skipped");
	for (size_t i = 0; a != NULL && i < json_object_array_length(a); i++)
		printf("%s: disk %s of backup %s skipped (no longer in the definition)\n", vm,
		       json_object_get_string(json_object_array_get_idx(a, i)), id);
	if (in_place)
		printf("%s: the next backup will be a full one\n", vm);
	json_object_put(reply);
	return CTL_EXIT_OK;
}

/* Prints the ids of a prune's result list: "deleted: A B" or "deleted: none". */
static void
ctl_backup_ids(const char *vm, const char *what, struct json_object *a)
{
	size_t n = a != NULL ? json_object_array_length(a) : 0;

	printf("%s: %s:%s", vm, what, n == 0 ? " none" : "");
	for (size_t i = 0; i < n; i++)
		printf(" %s", json_object_get_string(json_object_array_get_idx(a, i)));
	printf("\n");
}

static int
ctl_backup_prune(struct ctl *ctl, struct ctl_args *args)
{
	const char *vm = args->argv[0], *keep = ctl_args_get(args, "keep");
	bool wait = !ctl_args_has(args, "no-wait");
	struct json_object *req, *reply, *res;
	char *end = NULL;
	long n;
	int rc;

	if (keep == NULL)
		return ctl_usage_error(ctl, "backup-prune: --keep N is required");
	n = strtol(keep, &end, 10);
	if (end == keep || *end != '\0' || n < 1 || n > 1000000)
		return ctl_usage_error(ctl,
		                       "backup-prune: --keep %s: give how many restore points to "
		                       "keep (a number, at least 1)",
		                       keep);
	req = json_object_new_object();
	json_object_object_add(req, "keep", json_object_new_int64(n));
	json_object_object_add(req, "wait", json_object_new_boolean(wait));
	if ((rc = ctl_call(ctl, "backup-prune", vm, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
	} else {
		if (!wait)
			printf("%s: backup-prune started (job %s)\n", vm,
			       ctl_json_str(res, "job", "-"));
		ctl_backup_ids(vm, "kept", ctl_json_array(res, "kept"));
		ctl_backup_ids(vm, wait ? "deleted" : "to delete", ctl_json_array(res, "deleted"));
		ctl_backup_ids(vm, wait ? "made standalone" : "to make standalone",
		               ctl_json_array(res, "merged"));
	}
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static int
ctl_backup_verify(struct ctl *ctl, struct ctl_args *args)
{
	const char *vm = args->argv[0], *id = args->argv[1];
	struct json_object *req, *reply, *res, *files;
	int rc;

	if (!ctl_backup_id_ok(id))
		return ctl_usage_error(
		    ctl, "backup-verify: '%s' is not a backup id (see qvmctl backups %s)", id, vm);
	req = json_object_new_object();
	json_object_object_add(req, "backup", json_object_new_string(id));
	if ((rc = ctl_call(ctl, "backup-verify", vm, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	files = ctl_json_array(res, "files");
	if (ctl->json)
		ctl_print_json(stdout, res);
	else
		printf("%s: backup %s verified (%zu file%s: present, qemu-img check clean, "
		       "checksums as recorded)\n",
		       vm, id, files ? json_object_array_length(files) : 0,
		       files && json_object_array_length(files) == 1 ? "" : "s");
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static const struct ctl_opt ctl_backup_opts[] = {
    {"full", false, "start a new chain"},
    {"incremental", false, "fail rather than fall back to a full backup"},
    {"to", true, "the store (below backup_dir or an image_dirs entry)"},
    {"no-wait", false, "return the job's id at once; follow it with jobs or events"},
    {"all", false, "every VM, running and stopped, carrying on past failures"},
    {"parallel", true, "with --all: at most this many backups at once (default 2)"},
    {"keep", true, "with --all: prune each VM to its newest N backups after its backup"},
    {NULL, false, NULL},
};
static const struct ctl_opt ctl_restore_opts[] = {
    {"to", true, "the directory for the restored images (DIR/<disk id>.qcow2)"},
    {"in-place", false,
     "replace a stopped VM's own disk files (the old ones kept as .pre-restore)"},
    {NULL, false, NULL},
};
static const struct ctl_opt ctl_prune_opts[] = {
    {"keep", true, "how many of the newest complete backups to keep (1 or more)"},
    {"no-wait", false, "return the job's id at once; follow it with jobs or events"},
    {NULL, false, NULL},
};

const struct ctl_verb ctl_verb_backup = {
    "backup",
    "NAME [--full|--incremental] [--to DIR] [--no-wait] | "
    "--all [--parallel N] [--keep N] [--full|--incremental]",
    0,
    1,
    ctl_backup_opts,
    ctl_backup_run,
    "back a VM's disks up: incremental when its chain allows, else full (and says why)",
    "with --all: a VM's backup or prune failed (listed on stderr)",
};
const struct ctl_verb ctl_verb_backups = {
    "backups",
    "NAME",
    1,
    1,
    NULL,
    ctl_backup_list,
    "a VM's backups: id, type, parent, created, size, status",
    NULL,
};
const struct ctl_verb ctl_verb_restore = {
    "restore",
    "NAME BACKUP --to DIR | NAME BACKUP --in-place",
    2,
    2,
    ctl_restore_opts,
    ctl_backup_restore,
    "write each disk as it was at a backup: into standalone images, or over a stopped VM's own",
    NULL,
};
const struct ctl_verb ctl_verb_backup_prune = {
    "backup-prune",
    "NAME --keep N [--no-wait]",
    1,
    1,
    ctl_prune_opts,
    ctl_backup_prune,
    "keep the newest N backups; older ones are merged into what is kept, so each still restores",
    NULL,
};
const struct ctl_verb ctl_verb_backup_verify = {
    "backup-verify",
    "NAME BACKUP",
    2,
    2,
    NULL,
    ctl_backup_verify,
    "check a backup's chain: files present, qemu-img check clean, checksums as recorded",
    NULL,
};
