/* The media verb: insert an image into a running VM's cdrom drive, or empty the drive; with
 * --persist also in its definition (on a stopped VM, only there). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "ctl_print.h"
#include "ctl_verbs.h"

static int
ctl_media(struct ctl *ctl, struct ctl_args *args)
{
	const char *vm = args->argv[0], *id = args->argv[1];
	const char *insert = ctl_args_get(args, "insert");
	bool eject = ctl_args_has(args, "eject");
	struct json_object *req, *reply, *res;
	const char *medium;
	bool persisted;
	int rc;

	if ((insert == NULL) == !eject)
		return ctl_usage_error(ctl, "media: one of --insert ISO and --eject is required");
	if (!cfg_valid_device_id(id))
		return ctl_usage_error(ctl,
		                       "media: '%s' is not a valid device id (a letter, then up to "
		                       "%d letters, digits, '_' or '-')",
		                       id, CFG_ID_MAX - 1);
	if (insert != NULL && insert[0] != '/')
		return ctl_usage_error(ctl, "media: --insert: '%s' is not an absolute path",
		                       insert);
	req = json_object_new_object();
	json_object_object_add(req, "id", json_object_new_string(id));
	if (insert != NULL)
		json_object_object_add(req, "insert", json_object_new_string(insert));
	else
		json_object_object_add(req, "eject", json_object_new_boolean(1));
	if (ctl_args_has(args, "persist"))
		json_object_object_add(req, "persist", json_object_new_boolean(1));
	if ((rc = ctl_call(ctl, "media", vm, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	medium = ctl_json_str(res, "medium", NULL);
	persisted = ctl_json_bool(res, "persisted", false);
	if (ctl->json)
		ctl_print_json(stdout, res);
	else if (!ctl_json_bool(res, "live", true))
		printf("%s: cdrom %s: %s in the definition (not running: the next start uses it)\n",
		       vm, id, medium != NULL ? medium : "empty");
	else if (medium != NULL)
		printf("%s: cdrom %s: %s inserted%s\n", vm, id, medium,
		       persisted ? " (persisted)" : "");
	else
		printf("%s: cdrom %s: empty%s\n", vm, id, persisted ? " (persisted)" : "");
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static const struct ctl_opt ctl_media_opts[] = {
    {"insert", true, "the image to put in the drive (an ISO; below image_dirs unless root)"},
    {"eject", false, "take the medium out, leaving the drive closed and empty"},
    {"persist", false, "also write the medium into the VM's definition (a stopped VM: only there)"},
    {NULL, false, NULL},
};

const struct ctl_verb ctl_verb_media = {
    "media",
    "NAME ID --insert ISO [--persist] | NAME ID --eject [--persist]",
    2,
    2,
    ctl_media_opts,
    ctl_media,
    "change the medium of a running VM's cdrom drive (the tray is opened, even if the guest "
    "locked it, and closed again); --persist: also in its definition",
    NULL,
};
