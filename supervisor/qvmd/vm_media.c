/*
 * Changing the medium of a cdrom drive (see vm_media.h). QEMU opens no image by name: qvmd opens
 * the ISO read-only and passes it with add-fd (its fdset's opaque is the drive's file node name,
 * "ID.file", as at start, so a later change finds and removes it), then changes the medium in
 * batches of pipelined commands (QEMU runs one monitor's commands in order):
 *   look:    [add-fd of the new image] query-block, query-named-block-nodes, query-fdsets
 *   change:  blockdev-open-tray (force), [blockdev-remove-medium], [blockdev-del ID.fmt, ID.file],
 *            [remove-fd of the old image's fdsets], then for an insert blockdev-add of ID.file
 *            (read-only, /dev/fdset/N) and ID.fmt (raw), blockdev-insert-medium; and
 *            blockdev-close-tray
 *   undo:    after a failure, what the change added that is not in the drive goes again
 * What the drive holds is QEMU's; which file that is, qvmd records in the copy of the definition
 * the QEMU runs (live_cfg) and in the run directory (media.json), read back by a restarted qvmd.
 */
#include "vm_media.h"

#include "vm_job.h"
#include "vm_private.h"

#include "argv.h"
#include "cfg.h"
#include "log.h"
#include "qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEDIA_MAX_SETS  8  /* old fdsets of one drive removed in one change */
#define MEDIA_MAX_STEPS 24 /* commands of one batch */
#define MEDIA_RECORD    "media.json"

enum media_step {
	STEP_ADD_FD,
	STEP_QUERY_BLOCK,
	STEP_QUERY_NODES,
	STEP_QUERY_FDSETS,
	STEP_OPEN,
	STEP_REMOVE,
	STEP_DEL_FMT,
	STEP_DEL_FILE,
	STEP_REMOVE_OLD_FD,
	STEP_ADD_FILE,
	STEP_ADD_FMT,
	STEP_INSERT,
	STEP_CLOSE,
	STEP_UNDO,
};

struct media_job;

/* A command of the current batch: its reply is routed by kind. */
struct media_call {
	struct media_job *mj;
	enum media_step step;
};

struct media_job {
	struct vm *vm;
	struct vm_job *job;
	char *id;
	size_t index; /* of the cdrom in live_cfg */
	char *file;   /* insert: the image; NULL: eject */
	bool persist;
	int fd;            /* the image as qvmd opened it, until add-fd is sent */
	long long new_set; /* its fdset once QEMU has it, else -1 */
	struct media_call calls[MEDIA_MAX_STEPS];
	size_t ncalls;
	unsigned pending; /* replies of this batch still to come */
	bool undoing;
	/* what QEMU had */
	bool found;    /* query-block lists the drive */
	bool had;      /* a medium was in it */
	bool has_fmt;  /* node ID.fmt exists */
	bool has_file; /* node ID.file exists */
	long long old_sets[MEDIA_MAX_SETS];
	size_t nold;
	/* what the change did */
	bool removed;    /* the old medium is out */
	bool added_file; /* the new nodes exist */
	bool added_fmt;
	bool inserted;       /* the new medium is in */
	enum proto_err code; /* the first failure, or PROTO_OK */
	char *error;
};

static void media_job_free(void *data);

static const struct vm_job_kind media_kind = {
    .name = "media",
    .op = VM_OP_ATTACH,
    .free = media_job_free,
};

static void
media_job_free(void *data)
{
	struct media_job *mj = data;

	if (mj->fd >= 0)
		close(mj->fd);
	free(mj->id);
	free(mj->file);
	free(mj->error);
	free(mj);
}

static struct json_object *
obj_str(const char *key, const char *value)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, key, json_object_new_string(value));
	return o;
}

/* Keeps the first failure of the operation. */
static void
media_fail(struct media_job *mj, enum proto_err code, char *msg)
{
	if (mj->error == NULL) {
		mj->code = code;
		mj->error = msg;
	} else {
		free(msg);
	}
}

static void media_reply(struct qmp_conn *conn, const struct qmp_reply *r, void *arg);

/* Sends one command of the current batch (args taken; fd >= 0 passed with it). */
static void
media_send(struct media_job *mj, enum media_step step, const char *command,
           struct json_object *args, int fd)
{
	struct media_call *call;
	char *cause = NULL;

	if (mj->ncalls == MEDIA_MAX_STEPS)
		fatal("vm %s: media: too many commands in one batch", mj->vm->name);
	call = &mj->calls[mj->ncalls++];
	call->mj = mj;
	call->step = step;
	if (vm_job_send(mj->job, command, args, fd, 0, media_reply, call, &cause) < 0) {
		media_fail(
		    mj, PROTO_ERR_FAILED,
		    xasprintf("vm %s: cdrom %s: %s: %s", mj->vm->name, mj->id, command, cause));
		free(cause);
		return;
	}
	mj->pending++;
}

/* ---- the record of what each drive holds ---- */

/* Writes media.json: every cdrom of the running definition and its medium (path or null). */
static void
media_save(struct vm *vm)
{
	struct json_object *o = json_object_new_object();
	char *path = vm_run_path(vm, MEDIA_RECORD);

	for (size_t i = 0; vm->live_cfg != NULL && i < vm->live_cfg->ncdroms; i++) {
		const struct cfg_cdrom *cd = &vm->live_cfg->cdroms[i];

		json_object_object_add(o, cd->id,
		                       cd->file ? json_object_new_string(cd->file) : NULL);
	}
	rundir_write(path, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	free(path);
}

void
vm_media_load(struct vm *vm)
{
	char *path = vm_run_path(vm, MEDIA_RECORD);
	struct json_object *o = json_object_from_file(path), *v;

	free(path);
	if (o == NULL)
		return; /* no medium was ever changed */
	for (size_t i = 0; vm->live_cfg != NULL && i < vm->live_cfg->ncdroms; i++) {
		struct cfg_cdrom *cd = &vm->live_cfg->cdroms[i];

		if (!json_object_object_get_ex(o, cd->id, &v))
			continue;
		free(cd->file);
		cd->file = json_object_is_type(v, json_type_string)
		               ? xstrdup(json_object_get_string(v))
		               : NULL;
	}
	json_object_put(o);
}

/* The drive now holds file (NULL: nothing). */
static void
media_record(struct vm *vm, size_t index, const char *file)
{
	struct cfg_cdrom *cd = &vm->live_cfg->cdroms[index];

	free(cd->file);
	cd->file = xstrdup(file);
	media_save(vm);
}

/* ---- the end ---- */

/* What a change answers: the drive's medium, whether QEMU has it (live) and the file says it. */
static struct json_object *
media_result(const char *id, const char *medium, bool live, bool persisted)
{
	struct json_object *res = json_object_new_object();

	json_object_object_add(res, "id", json_object_new_string(id));
	json_object_object_add(res, "medium", medium ? json_object_new_string(medium) : NULL);
	json_object_object_add(res, "tray", live ? json_object_new_string("closed") : NULL);
	json_object_object_add(res, "live", json_object_new_boolean(live));
	json_object_object_add(res, "persisted", json_object_new_boolean(persisted));
	return res;
}

/* Writes the medium into the definition and reloads it: 0, or -1 with *cause. */
static int
media_persist(struct vm *vm, const char *id, const char *file, char **cause)
{
	if (vm->cfg == NULL) {
		*cause = xstrdup("definition file was removed");
		return -1;
	}
	if (cfg_write_cdrom_medium(vm->cfg->path, id, file, cause) < 0)
		return -1;
	vm_reload_definition(vm, false);
	return 0;
}

/* A changed medium, for subscribers (`qvmctl events`): "device inserted cdrom cd0 /x.iso". */
static void
media_event(struct vm *vm, const char *id, const char *file, bool persistent)
{
	struct json_object *f = json_object_new_object();

	json_object_object_add(f, "action", json_object_new_string(file ? "inserted" : "ejected"));
	json_object_object_add(f, "kind", json_object_new_string("cdrom"));
	json_object_object_add(f, "device", json_object_new_string(id));
	json_object_object_add(f, "medium", file ? json_object_new_string(file) : NULL);
	json_object_object_add(f, "persistent", json_object_new_boolean(persistent));
	vm_event(vm, "device", f);
}

static void
media_finish(struct media_job *mj)
{
	struct vm *vm = mj->vm;

	if (mj->error == NULL) {
		struct json_object *res;
		char *cause = NULL;
		bool persisted = false;

		media_record(vm, mj->index, mj->file);
		log_info("vm %s: cdrom %s: %s%s", vm->name, mj->id,
		         mj->file ? "inserted " : "ejected", mj->file ? mj->file : "");
		if (mj->persist && media_persist(vm, mj->id, mj->file, &cause) < 0) {
			/* The drive changed (the event says so), the file did not: asked to do
			 * both, the command failed, as an attach whose --persist cannot be
			 * written does; the message says what the drive holds now. */
			media_event(vm, mj->id, mj->file, false);
			log_warn("vm %s: cdrom %s: the definition was not updated: %s", vm->name,
			         mj->id, cause);
			vm_job_done(mj->job, NULL, PROTO_ERR_FAILED,
			            "vm %s: cdrom %s: %s%s live, but not persisted: %s", vm->name,
			            mj->id, mj->file ? mj->file : "ejected",
			            mj->file ? " inserted" : "", cause);
			free(cause);
			return;
		}
		persisted = mj->persist;
		if (persisted)
			log_info("vm %s: cdrom %s: persisted in %s", vm->name, mj->id,
			         vm->cfg->path);
		res = media_result(mj->id, mj->file, true, persisted);
		media_event(vm, mj->id, mj->file, persisted);
		vm_job_done(mj->job, res, PROTO_OK, NULL);
		return;
	}
	if (mj->inserted) {
		media_record(vm, mj->index, mj->file);
	} else if (mj->removed || !mj->had) {
		media_record(vm, mj->index, NULL);
		if (mj->had || mj->file != NULL) {
			vm_job_done(mj->job, NULL, mj->code, "%s; the drive is empty now",
			            mj->error);
			return;
		}
	}
	vm_job_done(mj->job, NULL, mj->code, "%s", mj->error);
}

/* After a failure: takes back what the change added and the drive did not take. */
static void
media_undo(struct media_job *mj)
{
	mj->undoing = true;
	mj->ncalls = 0;
	if (!mj->inserted) {
		char *node;

		if (mj->added_fmt) {
			node = argv_node_fmt(mj->id, 0);
			media_send(mj, STEP_UNDO, "blockdev-del", obj_str("node-name", node), -1);
			free(node);
		}
		if (mj->added_file) {
			node = argv_node_file(mj->id, 0);
			media_send(mj, STEP_UNDO, "blockdev-del", obj_str("node-name", node), -1);
			free(node);
		}
		if (mj->new_set >= 0) {
			struct json_object *args = json_object_new_object();

			json_object_object_add(args, "fdset-id",
			                       json_object_new_int64(mj->new_set));
			media_send(mj, STEP_UNDO, "remove-fd", args, -1);
		}
	}
	if (mj->found)
		media_send(mj, STEP_UNDO, "blockdev-close-tray", obj_str("id", mj->id), -1);
	if (mj->pending == 0)
		media_finish(mj);
}

/* ---- batch "change" ---- */

static void
media_change(struct media_job *mj)
{
	char *file_node = argv_node_file(mj->id, 0), *fmt_node = argv_node_fmt(mj->id, 0);
	struct json_object *args;

	mj->ncalls = 0;
	args = obj_str("id", mj->id);
	json_object_object_add(args, "force", json_object_new_boolean(1));
	media_send(mj, STEP_OPEN, "blockdev-open-tray", args, -1);
	if (mj->had)
		media_send(mj, STEP_REMOVE, "blockdev-remove-medium", obj_str("id", mj->id), -1);
	if (mj->has_fmt)
		media_send(mj, STEP_DEL_FMT, "blockdev-del", obj_str("node-name", fmt_node), -1);
	if (mj->has_file)
		media_send(mj, STEP_DEL_FILE, "blockdev-del", obj_str("node-name", file_node), -1);
	for (size_t i = 0; i < mj->nold; i++) {
		args = json_object_new_object();
		json_object_object_add(args, "fdset-id", json_object_new_int64(mj->old_sets[i]));
		media_send(mj, STEP_REMOVE_OLD_FD, "remove-fd", args, -1);
	}
	if (mj->file != NULL) {
		char *fdset = xasprintf("/dev/fdset/%lld", mj->new_set);

		args = json_object_new_object();
		json_object_object_add(args, "driver", json_object_new_string("file"));
		json_object_object_add(args, "node-name", json_object_new_string(file_node));
		json_object_object_add(args, "filename", json_object_new_string(fdset));
		json_object_object_add(args, "read-only", json_object_new_boolean(1));
		media_send(mj, STEP_ADD_FILE, "blockdev-add", args, -1);
		args = json_object_new_object();
		json_object_object_add(args, "driver", json_object_new_string("raw"));
		json_object_object_add(args, "node-name", json_object_new_string(fmt_node));
		json_object_object_add(args, "file", json_object_new_string(file_node));
		json_object_object_add(args, "read-only", json_object_new_boolean(1));
		media_send(mj, STEP_ADD_FMT, "blockdev-add", args, -1);
		args = obj_str("id", mj->id);
		json_object_object_add(args, "node-name", json_object_new_string(fmt_node));
		media_send(mj, STEP_INSERT, "blockdev-insert-medium", args, -1);
		free(fdset);
	}
	media_send(mj, STEP_CLOSE, "blockdev-close-tray", obj_str("id", mj->id), -1);
	free(file_node);
	free(fmt_node);
}

/* ---- batch "look": what the drive holds now ---- */

static void
look_block(struct media_job *mj, struct json_object *result)
{
	for (size_t i = 0; i < json_object_array_length(result); i++) {
		struct json_object *dev = json_object_array_get_idx(result, i), *v;

		if (!json_object_object_get_ex(dev, "qdev", &v) ||
		    strcmp(json_object_get_string(v), mj->id) != 0)
			continue;
		mj->found = true;
		mj->had = json_object_object_get_ex(dev, "inserted", &v) && v != NULL;
	}
}

static void
look_nodes(struct media_job *mj, struct json_object *result)
{
	char *file_node = argv_node_file(mj->id, 0), *fmt_node = argv_node_fmt(mj->id, 0);

	for (size_t i = 0; i < json_object_array_length(result); i++) {
		struct json_object *n = json_object_array_get_idx(result, i), *v;
		const char *name;

		if (!json_object_object_get_ex(n, "node-name", &v))
			continue;
		name = json_object_get_string(v);
		mj->has_fmt = mj->has_fmt || strcmp(name, fmt_node) == 0;
		mj->has_file = mj->has_file || strcmp(name, file_node) == 0;
	}
	free(file_node);
	free(fmt_node);
}

/* The fdsets of the drive's earlier media: opaque "ID.file", but for the one just added. */
static void
look_fdsets(struct media_job *mj, struct json_object *result)
{
	char *opaque = argv_node_file(mj->id, 0);

	for (size_t i = 0; i < json_object_array_length(result); i++) {
		struct json_object *set = json_object_array_get_idx(result, i), *fds, *v;
		bool ours = false;
		long long id;

		if (!json_object_object_get_ex(set, "fdset-id", &v))
			continue;
		id = json_object_get_int64(v);
		if (!json_object_object_get_ex(set, "fds", &fds))
			continue;
		for (size_t k = 0; k < json_object_array_length(fds); k++) {
			struct json_object *fd = json_object_array_get_idx(fds, k);

			ours = ours || (json_object_object_get_ex(fd, "opaque", &v) &&
			                strcmp(json_object_get_string(v), opaque) == 0);
		}
		if (ours && id != mj->new_set && mj->nold < MEDIA_MAX_SETS)
			mj->old_sets[mj->nold++] = id;
	}
	free(opaque);
}

/* Every reply of every batch comes here. */
static void
media_reply(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct media_call *call = arg;
	struct media_job *mj = call->mj;
	struct vm *vm = mj->vm;
	struct json_object *v;

	mj->pending--;
	if (r->status != QMP_OK) {
		if (call->step == STEP_REMOVE_OLD_FD || call->step == STEP_UNDO) {
			/* A set QEMU removed already (it lists removed sets until the guest runs).
			 */
			log_debug("vm %s: cdrom %s: %s: %s", vm->name, mj->id, r->command,
			          r->error_desc);
		} else if (r->status == QMP_DISCONNECTED) {
			media_fail(mj, PROTO_ERR_FAILED,
			           xasprintf("vm %s: cdrom %s: qemu went away during %s (%s)",
			                     vm->name, mj->id, r->command, r->error_desc));
		} else {
			media_fail(mj, vm_qmp_err(r),
			           xasprintf("vm %s: cdrom %s: %s failed: %s", vm->name, mj->id,
			                     r->command, r->error_desc));
		}
	} else {
		switch (call->step) {
		case STEP_ADD_FD:
			if (json_object_object_get_ex(r->result, "fdset-id", &v))
				mj->new_set = json_object_get_int64(v);
			else
				media_fail(mj, PROTO_ERR_QEMU,
				           xasprintf("vm %s: cdrom %s: add-fd: no fdset-id in the "
				                     "reply",
				                     vm->name, mj->id));
			break;
		case STEP_QUERY_BLOCK:
			look_block(mj, r->result);
			break;
		case STEP_QUERY_NODES:
			look_nodes(mj, r->result);
			break;
		case STEP_QUERY_FDSETS:
			look_fdsets(mj, r->result);
			break;
		case STEP_REMOVE:
			mj->removed = true;
			break;
		case STEP_ADD_FILE:
			mj->added_file = true;
			break;
		case STEP_ADD_FMT:
			mj->added_fmt = true;
			break;
		case STEP_INSERT:
			mj->inserted = true;
			break;
		default:
			break;
		}
	}
	if (mj->pending > 0)
		return;
	if (mj->undoing) {
		media_finish(mj);
		return;
	}
	if (mj->error != NULL) {
		media_undo(mj);
		return;
	}
	if (call->step <= STEP_QUERY_FDSETS) {
		if (!mj->found) {
			media_fail(
			    mj, PROTO_ERR_QEMU,
			    xasprintf("vm %s: cdrom %s: qemu has no such drive", vm->name, mj->id));
			media_undo(mj);
			return;
		}
		media_change(mj);
		if (mj->pending == 0) /* nothing could be sent */
			media_undo(mj);
		return;
	}
	media_finish(mj);
}

/* ---- checks ---- */

static void
refuse(vm_done_cb cb, void *arg, enum proto_err code, char *msg)
{
	cb(NULL, code, msg, arg);
	free(msg);
}

/* The cdrom's index in cfg (the running definition, or the file's); else refuses naming the
 * drives there are. */
static bool
find_cdrom(struct vm *vm, const struct vm_config *cfg, const char *id, size_t *index, vm_done_cb cb,
           void *arg)
{
	char *list = NULL;

	for (size_t i = 0; cfg != NULL && i < cfg->ncdroms; i++) {
		char *l;

		if (strcmp(cfg->cdroms[i].id, id) == 0) {
			free(list);
			*index = i;
			return true;
		}
		l = xasprintf("%s%s%s", list ? list : "", list ? ", " : "", cfg->cdroms[i].id);
		free(list);
		list = l;
	}
	refuse(cb, arg, PROTO_ERR_NOT_FOUND,
	       xasprintf("vm %s: no cdrom '%s' (cdroms: %s)", vm->name, id, list ? list : "none"));
	free(list);
	return false;
}

/* Opens the image to insert: an existing regular file, readable by qvmd, that no VM writes to
 * and, for a requester that is not root, below an image directory. -1 after refusing. */
static int
open_medium(struct vm *vm, const char *file, bool any_path, vm_done_cb cb, void *arg)
{
	const struct vm *other;
	struct stat st;
	bool writable;
	int fd;

	if (file[0] != '/') {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: %s: the medium must be an absolute path", vm->name, file));
		return -1;
	}
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: %s: %s", vm->name, file, strerror(errno)));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: %s: not a regular file", vm->name, file));
		close(fd);
		return -1;
	}
	if (!any_path && !vm_image_path_allowed(vm->env.conf, file, false)) {
		refuse(cb, arg, PROTO_ERR_DENIED,
		       xasprintf("vm %s: %s is not below an image directory qvmd may use "
		                 "(image_dirs in qvmd.conf)",
		                 vm->name, file));
		close(fd);
		return -1;
	}
	other = vm->env.image_holder != NULL
	            ? vm->env.image_holder(vm->env.arg, vm, st.st_dev, st.st_ino, false)
	            : NULL;
	if (other == NULL && vm_holds_image(vm, st.st_dev, st.st_ino, &writable) && writable)
		other = vm;
	if (other != NULL) {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: %s is in use by vm %s (read-write)", vm->name, file,
		                 vm_name(other)));
		close(fd);
		return -1;
	}
	return fd;
}

/* --persist refused before QEMU is touched when the file could not take the medium: no file,
 * no such section there, or a path the loader refuses (QEMU gets the image as an fd, a definition
 * names it in option strings). */
static bool
refuse_persist(struct vm *vm, const char *id, const char *file, vm_done_cb cb, void *arg)
{
	size_t index;

	if (vm->cfg == NULL) {
		refuse(cb, arg, PROTO_ERR_NOT_FOUND,
		       xasprintf("vm %s: definition file was removed; cannot persist", vm->name));
		return true;
	}
	if (!vm_is_active(vm))
		return !find_cdrom(vm, vm->cfg, id, &index, cb, arg);
	if (cfg_vm_cdrom(vm->cfg, id) == NULL) {
		refuse(cb, arg, PROTO_ERR_NOT_FOUND,
		       xasprintf("vm %s: cdrom %s is not in %s; cannot persist (change it without "
		                 "--persist)",
		                 vm->name, id, vm->cfg->path));
		return true;
	}
	if (file != NULL && strchr(file, ',') != NULL) {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: cdrom %s: '%s' cannot be persisted: a definition's file "
		                 "must not contain ','",
		                 vm->name, id, file));
		return true;
	}
	return false;
}

/* A stopped VM: --persist edits only its definition (the next start uses it). */
static void
media_persist_only(struct vm *vm, const char *id, const char *file, bool any_path, vm_done_cb cb,
                   void *arg)
{
	char *cause = NULL;
	int fd;

	if (file != NULL) {
		if ((fd = open_medium(vm, file, any_path, cb, arg)) < 0)
			return;
		close(fd);
	}
	if (media_persist(vm, id, file, &cause) < 0) {
		refuse(cb, arg, PROTO_ERR_FAILED, xasprintf("vm %s: %s", vm->name, cause));
		free(cause);
		return;
	}
	log_info("vm %s: cdrom %s: %s%s in the definition (not running)", vm->name, id,
	         file ? "medium " : "no medium", file ? file : "");
	cb(media_result(id, file, false, true), PROTO_OK, NULL, arg);
}

void
vm_media_change(struct vm *vm, const char *id, const char *file, bool any_path, bool persist,
                vm_done_cb cb, void *arg)
{
	struct json_object *args;
	struct media_job *mj;
	size_t index;
	int fd = -1;

	if (!vm_job_admit(vm, VM_OP_ATTACH, cb, arg))
		return;
	if (!vm_is_active(vm) && !persist) {
		refuse(cb, arg, PROTO_ERR_NOT_RUNNING,
		       xasprintf("vm %s: not running; use --persist to change its definition",
		                 vm->name));
		return;
	}
	if (persist && refuse_persist(vm, id, file, cb, arg))
		return;
	if (!vm_is_active(vm)) {
		media_persist_only(vm, id, file, any_path, cb, arg);
		return;
	}
	if ((vm->state != VM_RUNNING && vm->state != VM_PAUSED) || vm->qmp == NULL ||
	    vm->live_cfg == NULL) {
		refuse(
		    cb, arg, PROTO_ERR_NOT_RUNNING,
		    xasprintf("vm %s: not running (state %s)", vm->name, vm_state_name(vm->state)));
		return;
	}
	if (!find_cdrom(vm, vm->live_cfg, id, &index, cb, arg))
		return;
	if (file != NULL && (fd = open_medium(vm, file, any_path, cb, arg)) < 0)
		return;
	mj = xcalloc(1, sizeof *mj);
	mj->vm = vm;
	mj->id = xstrdup(id);
	mj->index = index;
	mj->file = xstrdup(file);
	mj->persist = persist;
	mj->fd = fd;
	mj->new_set = -1;
	mj->job = vm_job_new(vm, &media_kind, mj, cb, arg);
	log_info("vm %s: cdrom %s: %s%s", vm->name, id, file ? "inserting " : "ejecting",
	         file ? file : "");
	if (file != NULL) {
		char *opaque = argv_node_file(id, 0);

		media_send(mj, STEP_ADD_FD, "add-fd", obj_str("opaque", opaque), fd);
		free(opaque);
		close(mj->fd); /* QEMU has its own duplicate (or the job fails) */
		mj->fd = -1;
	}
	media_send(mj, STEP_QUERY_BLOCK, "query-block", NULL, -1);
	args = json_object_new_object();
	json_object_object_add(args, "flat", json_object_new_boolean(1));
	media_send(mj, STEP_QUERY_NODES, "query-named-block-nodes", args, -1);
	media_send(mj, STEP_QUERY_FDSETS, "query-fdsets", NULL, -1);
	if (mj->pending == 0)
		vm_job_done(mj->job, NULL, mj->code, "%s", mj->error);
}
