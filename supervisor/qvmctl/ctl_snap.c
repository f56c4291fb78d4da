/*
 * Snapshot and job verbs: snapshot, snapshots, revert, snapshot-delete, jobs, job-cancel.
 *
 * A verb that waits for its job subscribes to the VM's events first, then asks for the job without
 * waiting and follows the job's events until it ends: progress is shown on a terminal (one line,
 * rewritten in place), and an interrupted client leaves the job running and says how to cancel it.
 */
#include <stdlib.h>
#include <string.h>

#include "ctl_job.h"
#include "ctl_print.h"
#include "ctl_verbs.h"
#include "xalloc.h"

/* A snapshot job's progress on a terminal: "snapshot-3: running active 0%". */
static bool
ctl_snap_progress(struct json_object *job, bool tty, void *arg)
{
	int64_t cur = ctl_json_int(job, "progress_current", 0),
	        total = ctl_json_int(job, "progress_total", 0);

	if (!tty)
		return false;
	printf("\r%s: %s %s", ctl_json_str(job, "id", "?"), ctl_json_str(job, "state", "?"),
	       ctl_json_str(job, "qemu_status", ""));
	if (total > 0)
		printf(" %3d%%", (int)(cur * 100 / total));
	printf("\033[K");
	fflush(stdout);
	return true;
}

/*
 * Runs a job verb: with --no-wait prints the job's id, else follows the job to its end. req is
 * taken over.
 */
static int
ctl_snap_run(struct ctl *ctl, struct ctl_args *args, struct json_object *req, const char *done_text)
{
	const char *vm = args->argv[0];
	struct json_object *reply, *res, *done;
	bool wait = !ctl_args_has(args, "no-wait");
	const char *id;
	int64_t sub = 0;
	int rc;

	if (wait && (rc = ctl_job_subscribe(ctl, vm, &sub)) != CTL_EXIT_OK) {
		json_object_put(req);
		return rc;
	}
	json_object_object_add(req, "wait", json_object_new_boolean(false));
	if ((rc = ctl_call(ctl, ctl->verb->name, vm, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	id = ctl_json_str(res, "job", NULL);
	if (!wait || id == NULL) {
		if (ctl->json)
			ctl_print_json(stdout, res);
		else
			printf("%s: %s started (job %s)\n", vm, ctl->verb->name, id ? id : "-");
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	if ((rc = ctl_job_subscribed(ctl, sub)) != CTL_EXIT_OK) {
		json_object_put(reply);
		return rc;
	}
	{
		char *copy = xstrdup(id);

		json_object_put(reply);
		rc = ctl_job_follow(ctl, vm, copy, copy, ctl_snap_progress, NULL, &done);
		if (rc == CTL_EXIT_OK) {
			if (ctl->json)
				ctl_print_json(stdout, done);
			else
				printf("%s: %s (job %s)\n", vm, done_text, copy);
			json_object_put(done);
		}
		free(copy);
	}
	return rc;
}

/* A tag as the daemon takes it; exit 2 before anything is sent otherwise. */
static bool
ctl_snap_tag_ok(const char *tag)
{
	size_t n = strlen(tag);

	if (n == 0 || n > 63)
		return false;
	return strspn(tag, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") ==
	       n;
}

static int
ctl_snap_bad_tag(struct ctl *ctl, const char *tag)
{
	return ctl_usage_error(ctl, "%s: tag '%s': use 1 to 63 of A-Z a-z 0-9 _ . -",
	                       ctl->verb->name, tag);
}

static int
ctl_snap_create(struct ctl *ctl, struct ctl_args *args)
{
	const char *tag = args->argv[1], *note = ctl_args_get(args, "note"),
	           *exclude = ctl_args_get(args, "exclude");
	struct json_object *req;
	char *done;
	int rc;

	if (!ctl_snap_tag_ok(tag))
		return ctl_snap_bad_tag(ctl, tag);
	req = json_object_new_object();
	json_object_object_add(req, "tag", json_object_new_string(tag));
	if (note != NULL)
		json_object_object_add(req, "note", json_object_new_string(note));
	json_object_object_add(req, "disk_only",
	                       json_object_new_boolean(ctl_args_has(args, "disk-only")));
	if (exclude != NULL) {
		struct json_object *a = json_object_new_array();
		char *list = xstrdup(exclude), *save = NULL;

		for (char *id = strtok_r(list, ",", &save); id; id = strtok_r(NULL, ",", &save))
			json_object_array_add(a, json_object_new_string(id));
		free(list);
		json_object_object_add(req, "exclude", a);
	}
	done = xasprintf("snapshot %s created", tag);
	rc = ctl_snap_run(ctl, args, req, done);
	free(done);
	return rc;
}

static int
ctl_snap_tag_verb(struct ctl *ctl, struct ctl_args *args, const char *what)
{
	const char *tag = args->argv[1];
	struct json_object *req;
	char *done;
	int rc;

	if (!ctl_snap_tag_ok(tag))
		return ctl_snap_bad_tag(ctl, tag);
	req = json_object_new_object();
	json_object_object_add(req, "tag", json_object_new_string(tag));
	done = xasprintf("%s %s", what, tag);
	rc = ctl_snap_run(ctl, args, req, done);
	free(done);
	return rc;
}

static int
ctl_snap_revert(struct ctl *ctl, struct ctl_args *args)
{
	return ctl_snap_tag_verb(ctl, args, "reverted to snapshot");
}

static int
ctl_snap_delete(struct ctl *ctl, struct ctl_args *args)
{
	return ctl_snap_tag_verb(ctl, args, "deleted snapshot");
}

static int
ctl_snap_list(struct ctl *ctl, struct ctl_args *args)
{
	static const char *const headers[] = {"TAG", "DATE", "VM-STATE", "NOTE", "DISKS"};
	struct json_object *reply, *res, *list;
	struct ctl_table *t;
	int rc;

	if ((rc = ctl_call(ctl, "snapshots", args->argv[0], NULL, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	t = ctl_table_new(5, headers);
	list = ctl_json_array(res, "snapshots");
	for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
		struct json_object *row = json_object_array_get_idx(list, i);
		struct json_object *disks = ctl_json_array(row, "disks"),
		                   *missing = ctl_json_array(row, "missing");
		char date[64], state[32], *dl = xstrdup("");
		const char *cells[5];

		ctl_fmt_time(ctl_json_int(row, "date_ms", 0), date, sizeof date);
		if (ctl_json_int(row, "vm_state_bytes", 0) > 0)
			ctl_fmt_size((uint64_t)ctl_json_int(row, "vm_state_bytes", 0), state,
			             sizeof state);
		else
			snprintf(state, sizeof state, "-");
		for (size_t k = 0; disks != NULL && k < json_object_array_length(disks); k++) {
			char *n =
			    xasprintf("%s%s%s", dl, *dl ? "," : "",
			              json_object_get_string(json_object_array_get_idx(disks, k)));

			free(dl);
			dl = n;
		}
		if (!ctl_json_bool(row, "complete", true)) {
			char *n = xasprintf(
			    "%s (INCOMPLETE%s", dl,
			    missing && json_object_array_length(missing) ? ": missing on " : "");

			free(dl);
			dl = n;
			for (size_t k = 0; missing != NULL && k < json_object_array_length(missing);
			     k++) {
				n = xasprintf(
				    "%s%s%s", dl, k ? "," : "",
				    json_object_get_string(json_object_array_get_idx(missing, k)));
				free(dl);
				dl = n;
			}
			n = xasprintf("%s)", dl);
			free(dl);
			dl = n;
		}
		cells[0] = ctl_json_str(row, "tag", "?");
		cells[1] = date;
		cells[2] = state;
		cells[3] = ctl_json_str(row, "note", "-");
		cells[4] = dl;
		ctl_table_add(t, cells);
		free(dl);
	}
	ctl_table_print(t, stdout);
	ctl_table_free(t);
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static int
ctl_snap_jobs(struct ctl *ctl, struct ctl_args *args)
{
	static const char *const headers[] = {"VM", "JOB", "KIND", "STATE", "PROGRESS", "STARTED"};
	struct json_object *reply, *res, *list;
	struct ctl_table *t;
	int rc;

	if ((rc = ctl_call(ctl, "jobs", args->argc > 0 ? args->argv[0] : NULL, NULL, &reply,
	                   &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	t = ctl_table_new(6, headers);
	list = ctl_json_array(res, "jobs");
	for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
		struct json_object *job = json_object_array_get_idx(list, i);
		int64_t cur = ctl_json_int(job, "progress_current", 0),
		        total = ctl_json_int(job, "progress_total", 0);
		char progress[16], started[64];
		const char *cells[6];

		if (total > 0)
			snprintf(progress, sizeof progress, "%d%%", (int)(cur * 100 / total));
		else
			snprintf(progress, sizeof progress, "-");
		ctl_fmt_time(ctl_json_int(job, "started_ms", 0), started, sizeof started);
		cells[0] = ctl_json_str(job, "vm", "?");
		cells[1] = ctl_json_str(job, "id", "?");
		cells[2] = ctl_json_str(job, "kind", "?");
		cells[3] = ctl_json_str(job, "state", "?");
		cells[4] = progress;
		cells[5] = started;
		ctl_table_add(t, cells);
	}
	ctl_table_print(t, stdout);
	ctl_table_free(t);
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static int
ctl_snap_job_cancel(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *req = json_object_new_object(), *reply, *res;
	int rc;

	json_object_object_add(req, "job", json_object_new_string(args->argv[1]));
	if ((rc = ctl_call(ctl, "job-cancel", args->argv[0], req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json)
		ctl_print_json(stdout, res);
	else
		printf("%s: job %s %s\n", args->argv[0], args->argv[1],
		       strcmp(ctl_json_str(res, "state", "cancelled"), "cancelling") == 0
		           ? "is being cancelled (it ends when qemu's job does)"
		           : "cancelled");
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static const struct ctl_opt ctl_snap_create_opts[] = {
    {"disk-only", false, "only the disks, not the RAM and device state"},
    {"note", true, "a note kept with the snapshot"},
    {"exclude", true, "disks to leave out (ids, comma-separated)"},
    {"no-wait", false, "return the job's id at once; follow it with jobs or events"},
    {NULL, false, NULL},
};
static const struct ctl_opt ctl_snap_tag_opts[] = {
    {"no-wait", false, "return the job's id at once; follow it with jobs or events"},
    {NULL, false, NULL},
};

const struct ctl_verb ctl_verb_snapshot = {
    "snapshot",
    "NAME TAG [--disk-only] [--note TEXT] [--exclude ID[,ID...]] [--no-wait]",
    2,
    2,
    ctl_snap_create_opts,
    ctl_snap_create,
    "take a snapshot of every qcow2 disk and, of a running VM, its RAM",
    NULL,
};
const struct ctl_verb ctl_verb_snapshots = {
    "snapshots", "NAME", 1, 1, NULL, ctl_snap_list, "a VM's snapshots: tag, date, size, note", NULL,
};
const struct ctl_verb ctl_verb_revert = {
    "revert",        "NAME TAG [--no-wait]",  2,    2, ctl_snap_tag_opts,
    ctl_snap_revert, "go back to a snapshot", NULL,
};
const struct ctl_verb ctl_verb_snapshot_delete = {
    "snapshot-delete", "NAME TAG [--no-wait]", 2,    2, ctl_snap_tag_opts,
    ctl_snap_delete,   "delete a snapshot",    NULL,
};
const struct ctl_verb ctl_verb_jobs = {
    "jobs",
    "[NAME]",
    0,
    1,
    NULL,
    ctl_snap_jobs,
    "background jobs (snapshots, backups ...) and their progress",
    NULL,
};
const struct ctl_verb ctl_verb_job_cancel = {
    "job-cancel", "NAME JOB", 2, 2, NULL, ctl_snap_job_cancel, "cancel a background job", NULL,
};
