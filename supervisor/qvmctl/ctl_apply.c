/* Verbs of config-driven deployments: apply a VM's edited file to the running VM, and diff. */
#include "ctl_verbs.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ctl_print.h"

/* "old -> new" cells: an absent side is "-". */
static const char *
ctl_apply_side(struct json_object *change, const char *key)
{
	return ctl_json_str(change, key, "-");
}

static int
ctl_apply(struct ctl *ctl, struct ctl_args *args)
{
	static const char *const headers[] = {"WHAT", "ACTION", "OLD", "NEW", "RESULT", "DETAIL"};
	struct json_object *reply, *res, *req = NULL, *list, *c;
	struct ctl_table *t;
	bool dry_run = ctl_args_has(args, "dry-run");
	size_t n;
	int rc;

	if (dry_run) {
		req = json_object_new_object();
		json_object_object_add(req, "dry_run", json_object_new_boolean(1));
	}
	if ((rc = ctl_call(ctl, "apply", args->argv[0], req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	/* A change that failed is a failure for scripts, though the others applied. */
	rc = ctl_json_int(res, "failed", 0) > 0 ? CTL_EXIT_FAILED : CTL_EXIT_OK;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return rc;
	}
	list = ctl_json_array(res, "changes");
	n = list != NULL ? json_object_array_length(list) : 0;
	if (n == 0) {
		printf("no changes: vm %s runs what its file says\n", args->argv[0]);
		json_object_put(reply);
		return rc;
	}
	t = ctl_table_new(6, headers);
	for (size_t i = 0; i < n; i++) {
		const char *row[6];

		c = json_object_array_get_idx(list, i);
		row[0] = ctl_json_str(c, "what", "?");
		row[1] = ctl_json_str(c, "action", "?");
		row[2] = ctl_apply_side(c, "old");
		row[3] = ctl_apply_side(c, "new");
		row[4] = ctl_json_str(c, "result", "?");
		row[5] = ctl_json_str(c, "error", ctl_json_str(c, "reason", ""));
		ctl_table_add(t, row);
	}
	ctl_table_print(t, stdout);
	ctl_table_free(t);
	printf("%s%" PRId64 " applied, %" PRId64 " pending, %" PRId64 " failed\n",
	       dry_run ? "dry run, nothing changed: " : "", ctl_json_int(res, "applied", 0),
	       ctl_json_int(res, "pending", 0), ctl_json_int(res, "failed", 0));
	json_object_put(reply);
	return rc;
}

static int
ctl_diff(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *reply, *res, *list, *c;
	size_t n;
	int rc;

	if ((rc = ctl_call(ctl, "diff", args->argv[0], NULL, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	list = ctl_json_array(res, "changes");
	n = list != NULL ? json_object_array_length(list) : 0;
	/* One line per difference: live (apply does it now) or pending (and why). */
	for (size_t i = 0; i < n; i++) {
		c = json_object_array_get_idx(list, i);
		if (ctl_json_bool(c, "live", false))
			printf("live     %s %s: %s -> %s\n", ctl_json_str(c, "action", "?"),
			       ctl_json_str(c, "what", "?"), ctl_apply_side(c, "old"),
			       ctl_apply_side(c, "new"));
		else
			printf("pending  %s %s: %s -> %s (%s)\n", ctl_json_str(c, "action", "?"),
			       ctl_json_str(c, "what", "?"), ctl_apply_side(c, "old"),
			       ctl_apply_side(c, "new"),
			       ctl_json_str(c, "reason", "restart needed"));
	}
	if (n == 0)
		printf("no differences%s\n", ctl_json_bool(res, "running", false)
		                                 ? ""
		                                 : " (not running: the file applies at start)");
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static const struct ctl_opt ctl_apply_opts[] = {
    {"dry-run", false, "print what would change, change nothing"},
    {NULL, false, NULL},
};

const struct ctl_verb ctl_verb_apply = {
    "apply",
    "NAME [--dry-run]",
    1,
    1,
    ctl_apply_opts,
    ctl_apply,
    "make a running VM what its file says: devices hot-plugged, the rest pending until restart",
    "a change failed (each change's result is listed)",
};
const struct ctl_verb ctl_verb_diff = {
    "diff",
    "NAME",
    1,
    1,
    NULL,
    ctl_diff,
    "the running VM against its file, one line per difference, marked live or pending",
    NULL,
};
