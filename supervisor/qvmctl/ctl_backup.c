/*
 * Backup verbs: backup, backups, restore, backup-verify (backup --all: ctl_backup_all.c).
 *
 * `backup` waits the way snapshot verbs do: it subscribes to the VM's events, asks for the backup
 * without waiting and follows the job's events to its end, showing bytes done / total, rate and
 * time left on a terminal (one line rewritten in place; plain lines every 10% otherwise).
 * Interrupting it leaves the backup running and says how to cancel it. restore and backup-verify
 * wait for the daemon's answer.
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
	json_object_put(done);
	if ((e = ctl_backup_entry(ctl, vm, id)) == NULL)
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
	int rc;

	if (args->argc == 0 || ctl_args_has(args, "all") || ctl_args_has(args, "parallel") ||
	    ctl_args_has(args, "keep"))
		return ctl_backup_all(ctl, args); /* which also refuses a NAME with --all */
	if (full && inc)
		return ctl_usage_error(ctl, "backup: --full and --incremental exclude each other");
	if (to != NULL && to[0] != '/')
		return ctl_usage_error(ctl, "backup: --to %s: give an absolute directory", to);
	if (wait && (rc = ctl_job_subscribe(ctl, vm)) != CTL_EXIT_OK)
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
	struct json_object *req, *reply, *res, *disks;
	int rc;

	if (!ctl_backup_id_ok(id))
		return ctl_usage_error(
		    ctl, "restore: '%s' is not a backup id (see qvmctl backups %s)", id, vm);
	if (to == NULL || to[0] != '/')
		return ctl_usage_error(ctl,
		                       "restore: --to DIR (an absolute directory) is required");
	req = json_object_new_object();
	json_object_object_add(req, "backup", json_object_new_string(id));
	json_object_object_add(req, "to", json_object_new_string(to));
	if ((rc = ctl_call(ctl, "restore", vm, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
	} else {
		disks = ctl_json_array(res, "disks");
		for (size_t i = 0; disks != NULL && i < json_object_array_length(disks); i++) {
			struct json_object *d = json_object_array_get_idx(disks, i);

			printf("%s: disk %s restored from %s into %s\n", vm,
			       ctl_json_str(d, "id", "?"), id, ctl_json_str(d, "file", "?"));
		}
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
    {"full", false}, {"incremental", false}, {"to", true},   {"no-wait", false},
    {"all", false},  {"parallel", true},     {"keep", true}, {NULL, false},
};
static const struct ctl_opt ctl_restore_opts[] = {
    {"to", true},
    {NULL, false},
};

const struct ctl_verb ctl_verb_backup = {
    "backup",
    "NAME [--full|--incremental] [--to DIR] [--no-wait] | "
    "--all [--parallel N] [--keep N] [--full|--incremental]",
    0,
    1,
    ctl_backup_opts,
    ctl_backup_run,
};
const struct ctl_verb ctl_verb_backups = {"backups", "NAME", 1, 1, NULL, ctl_backup_list};
const struct ctl_verb ctl_verb_restore = {
    "restore", "NAME BACKUP --to DIR", 2, 2, ctl_restore_opts, ctl_backup_restore,
};
const struct ctl_verb ctl_verb_backup_verify = {
    "backup-verify", "NAME BACKUP", 2, 2, NULL, ctl_backup_verify,
};
