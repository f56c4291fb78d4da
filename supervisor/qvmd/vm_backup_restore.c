/*
 * Reading backups: the listing (`backups`), restore into new images (`restore --to`, one
 * `qemu-img convert` of each disk's chain into a standalone qcow2, written back with -t writeback
 * so that it is flushed before qemu-img exits), restore in place (`restore --in-place`, below) and
 * `backup-verify` (every file of the chain up to the backup present, `qemu-img check` clean, its
 * xxh3 checksum the one recorded when it was written). Restore and verify run as the VM's
 * background job, qemu-img as a child and hashing a piece per loop turn, so the daemon never
 * blocks on them.
 *
 * qemu-img runs as root, and backup files are written by the VM's unprivileged QEMU: it never
 * follows a name from a backup file's header. Each chain is given to it explicitly from the
 * manifests (bk_chain_spec: every layer's file and backing node, "backing": null at the end), and
 * a file asking for an external data file is refused (vm_backup_chain.h).
 *
 * Restore in place replaces a stopped VM's own disk files. Each disk is converted beside its file
 * (FILE.qvmd-restore.tmp, raw for a raw disk, qcow2 otherwise); once every disk is written, each
 * is fsynced, given the old file's owner and mode, the state says the next backup must be full,
 * then per disk the old file is linked to FILE.pre-restore and the new one renamed over FILE:
 * at every instant FILE is the old or the new image, never a partial one. The .pre-restore files
 * stay until the next complete backup (bk_pre_restore_clear) or the operator removes them. The job
 * refuses a start of the VM while it runs; a restart of qvmd during it removes the temporaries
 * (the kind's restore), and so does the next restore in place.
 */
#include "vm_backup.h"
#include "vm_backup_chain.h"
#include "vm_private.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RV_HASH_SLICE (16 * 1024 * 1024)

static char *
state_path(struct vm *vm)
{
	return vm_state_path(vm, "backups.json");
}

/* The VM's store directories: backup_dir/NAME and those recorded. */
static void
stores_load(struct vm *vm, struct bk_state *st)
{
	char *path = state_path(vm), *def = xasprintf("%s/%s", vm->env.conf->backup_dir, vm->name);

	bk_state_load(st, path);
	bk_state_add_store(st, def);
	free(def);
	free(path);
}

void
vm_backups(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct json_object *res = json_object_new_object(), *list;
	struct bk_state st;

	stores_load(vm, &st);
	list = bk_list(st.stores, vm->name);
	/* A backup that is running only for a qvmd that is gone failed (it says so after a
	 * restart of qvmd is settled; meanwhile it shows as running). */
	json_object_object_add(res, "vm", json_object_new_string(vm->name));
	json_object_object_add(res, "backups", list);
	bk_state_free(&st);
	cb(res, PROTO_OK, NULL, arg);
}

/* ---- restore and verify ---- */

/* The temporary a disk is restored into, beside its file. */
#define RV_TMP_SUFFIX ".qvmd-restore.tmp"
#define RV_PRE_SUFFIX ".pre-restore"

struct rv_file {
	char *disk;
	char *path;   /* verify: the backup file */
	char *spec;   /* restore: the chain, for qemu-img (bk_chain_spec) */
	char *sum;    /* verify: the recorded checksum */
	char *sum2;   /* verify: the checksum of a file being made standalone by a prune */
	char *out;    /* restore: what qemu-img writes (the new image, or a temporary) */
	char *target; /* in place: the VM's disk file */
	char *prev;   /* in place: target + ".pre-restore" once the old file is kept there */
	bool raw;     /* in place: a raw disk */
	bool made;    /* out was created */
};

struct rv {
	struct vm *vm;
	struct vm_job *job;
	bool verify;
	bool in_place;
	bool no_wait;
	char *id;
	char *dir;
	struct rv_file *files;
	size_t nfiles;
	size_t next;
	bool hashing;
	struct vm_qemu_img *img;
	struct bk_hash *hash;
	char *problems;
	struct json_object *left_alone; /* in place: disks of the VM the backup does not have */
	struct json_object *skipped;    /* in place: disks of the backup the VM no longer has */
};

static void
rv_free(void *data)
{
	struct rv *v = data;

	if (v == NULL)
		return;
	vm_qemu_img_free(v->img);
	bk_hash_free(v->hash);
	for (size_t i = 0; i < v->nfiles; i++) {
		free(v->files[i].disk);
		free(v->files[i].path);
		free(v->files[i].spec);
		free(v->files[i].sum);
		free(v->files[i].sum2);
		free(v->files[i].out);
		free(v->files[i].target);
		free(v->files[i].prev);
	}
	free(v->files);
	free(v->id);
	free(v->dir);
	free(v->problems);
	json_object_put(v->left_alone);
	json_object_put(v->skipped);
	free(v);
}

static struct rv_file *
file_add(struct rv *v, const char *disk, char *path)
{
	struct rv_file *f;

	v->files = xrealloc(v->files, (v->nfiles + 1) * sizeof *v->files);
	f = &v->files[v->nfiles++];
	memset(f, 0, sizeof *f);
	f->disk = xstrdup(disk);
	f->path = path;
	return f;
}

static void problem(struct rv *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
problem(struct rv *v, const char *fmt, ...)
{
	char *msg, *n;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	n = xasprintf("%s%s%s", v->problems ? v->problems : "", v->problems ? "; " : "", msg);
	free(v->problems);
	v->problems = n;
	free(msg);
}

/* The directory of a file (caller frees). */
static char *
dir_of(const char *path)
{
	char *d = xstrdup(path), *slash = strrchr(d, '/');

	if (slash == NULL) {
		free(d);
		return xstrdup(".");
	}
	if (slash == d)
		slash[1] = '\0';
	else
		*slash = '\0';
	return d;
}

/* Makes a restored temporary durable, with the owner and mode of the file it replaces. */
static int
inplace_sync(struct rv_file *f, char **cause)
{
	int fd = open(f->out, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	struct stat sb;

	if (fd < 0) {
		*cause = xasprintf("%s: %s", f->out, strerror(errno));
		return -1;
	}
	if (stat(f->target, &sb) == 0 &&
	    (fchown(fd, sb.st_uid, sb.st_gid) < 0 || fchmod(fd, sb.st_mode & 07777) < 0)) {
		*cause = xasprintf("%s: %s", f->out, strerror(errno));
		close(fd);
		return -1;
	}
	if (fsync(fd) < 0) {
		*cause = xasprintf("%s: fsync: %s", f->out, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Every disk is written: the next backup is made full, then each new file takes its disk's
 * name, the old one kept as FILE.pre-restore. */
static void
inplace_commit(struct rv *v)
{
	char *path = state_path(v->vm), *cause = NULL, *why;
	struct bk_state st;

	for (size_t i = 0; i < v->nfiles; i++) {
		if (inplace_sync(&v->files[i], &cause) < 0) {
			problem(v, "%s", cause);
			free(cause);
			free(path);
			return;
		}
	}
	bk_state_load(&st, path);
	why = xasprintf("the disks were replaced by a restore in place of backup %s", v->id);
	bk_state_set(&st.next_full, why);
	free(why);
	if (bk_state_save(&st, path, true, &cause) < 0) {
		problem(v, "%s", cause);
		free(cause);
		bk_state_free(&st);
		free(path);
		return;
	}
	bk_state_free(&st);
	free(path);
	for (size_t i = 0; i < v->nfiles; i++) {
		struct rv_file *f = &v->files[i];
		char *pre = xasprintf("%s" RV_PRE_SUFFIX, f->target), *dir = dir_of(f->target);

		if (unlink(pre) < 0 && errno != ENOENT) {
			problem(v, "%s: %s", pre, strerror(errno));
		} else if (link(f->target, pre) == 0) {
			f->prev = pre;
			pre = NULL;
		} else if (errno != ENOENT) {
			problem(v, "%s: %s", pre, strerror(errno));
		}
		if (v->problems == NULL && rename(f->out, f->target) < 0)
			problem(v, "%s: %s", f->target, strerror(errno));
		else if (v->problems == NULL)
			f->made = false; /* it is the disk's file now */
		if (bk_sync_dir(dir) < 0 && v->problems == NULL)
			problem(v, "%s: fsync: %s", dir, strerror(errno));
		free(pre);
		free(dir);
		if (v->problems != NULL)
			return;
		log_info("vm %s: disk %s restored in place from backup %s (the old file is %s)",
		         v->vm->name, f->disk, v->id, f->prev ? f->prev : "none");
	}
}

static void
rv_end(struct rv *v)
{
	struct vm_jobrec *rec = v->job->rec;
	struct json_object *res, *a;

	if (v->in_place && v->problems == NULL)
		inplace_commit(v);
	if (v->problems != NULL) {
		char *msg = xasprintf("vm %s: backup %s: %s", v->vm->name, v->id, v->problems);

		for (size_t i = 0; !v->verify && i < v->nfiles; i++)
			if (v->files[i].made)
				unlink(v->files[i].out);
		if (rec != NULL)
			vm_jobrec_end(v->vm, rec, VM_JOBREC_FAILED, msg);
		vm_job_done(v->job, NULL, PROTO_ERR_FAILED, "%s", msg);
		free(msg);
		return;
	}
	res = json_object_new_object();
	a = json_object_new_array();
	json_object_object_add(res, "vm", json_object_new_string(v->vm->name));
	json_object_object_add(res, "backup", json_object_new_string(v->id));
	json_object_object_add(res, "job", rec ? json_object_new_string(rec->id) : NULL);
	for (size_t i = 0; i < v->nfiles; i++) {
		struct rv_file *f = &v->files[i];
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "id", json_object_new_string(f->disk));
		json_object_object_add(o, "file",
		                       json_object_new_string(v->verify     ? f->path
		                                              : v->in_place ? f->target
		                                                            : f->out));
		if (v->in_place)
			json_object_object_add(o, "previous",
			                       f->prev ? json_object_new_string(f->prev) : NULL);
		json_object_array_add(a, o);
	}
	json_object_object_add(res, v->verify ? "files" : "disks", a);
	if (v->verify)
		json_object_object_add(res, "ok", json_object_new_boolean(true));
	if (v->in_place) {
		json_object_object_add(res, "in_place", json_object_new_boolean(true));
		json_object_object_add(res, "left_alone", json_object_get(v->left_alone));
		json_object_object_add(res, "skipped", json_object_get(v->skipped));
	}
	if (rec != NULL)
		vm_jobrec_end(v->vm, rec, VM_JOBREC_DONE, NULL);
	vm_job_done(v->job, res, PROTO_OK, NULL);
}

static void rv_next(struct rv *v);

static void
img_done(bool ok, char *out, void *arg)
{
	struct rv *v = arg;
	struct rv_file *f = &v->files[v->next];

	v->img = NULL;
	if (!v->verify) {
		if (!ok) {
			problem(v, "disk %s: qemu-img convert: %s", f->disk, *out ? out : "failed");
			return rv_end(v);
		}
		v->next++;
		return rv_next(v);
	}
	if (!ok)
		problem(v, "%s: qemu-img check: %s", f->path, *out ? out : "failed");
	v->hashing = true;
	rv_next(v);
}

/* Hashes a slice of the current file (verify). */
static void
rv_hash(struct rv *v)
{
	struct rv_file *f = &v->files[v->next];
	char *cause = NULL, *hex = NULL;
	int rc;

	if (v->hash == NULL && (v->hash = bk_hash_open(f->path, &cause)) == NULL) {
		rc = -1;
	} else if ((rc = bk_hash_step(v->hash, RV_HASH_SLICE, &hex, &cause)) == 0) {
		vm_job_arm(v->job, 0);
		return;
	}
	if (rc < 0) {
		problem(v, "%s", cause);
		free(cause);
	} else if ((f->sum == NULL || strcmp(hex, f->sum) != 0) &&
	           (f->sum2 == NULL || strcmp(hex, f->sum2) != 0)) {
		problem(v, "%s: checksum %s, recorded %s", f->path, hex, f->sum ? f->sum : "none");
	}
	free(hex);
	bk_hash_free(v->hash);
	v->hash = NULL;
	v->hashing = false;
	v->next++;
	rv_next(v);
}

static void
rv_timer(struct vm_job *job)
{
	rv_hash(job->data);
}

static void
rv_next(struct rv *v)
{
	struct rv_file *f;
	char *cause = NULL;

	if (v->next >= v->nfiles)
		return rv_end(v);
	f = &v->files[v->next];
	if (v->hashing)
		return rv_hash(v);
	if (v->job->rec != NULL) {
		v->job->rec->cur = v->next;
		v->job->rec->total = v->nfiles;
	}
	if (v->verify) {
		char *spec;
		bool has_backing;

		/* The file alone: its header's names are not followed (see the top). */
		if (bk_qcow2_probe(f->path, &has_backing, &cause) < 0) {
			problem(v, "%s", cause);
			free(cause);
			v->next++;
			return rv_next(v);
		}
		spec = bk_file_spec(f->path);
		{
			const char *args[] = {"check", "-q", spec, NULL};

			v->img = vm_qemu_img_run(v->vm, args, img_done, v, &cause);
		}
		free(spec);
	} else {
		const char *args[] = {"convert",   "-q",   "-t",
		                      "writeback", "-O",   f->raw ? "raw" : "qcow2",
		                      f->spec,     f->out, NULL};

		if (!v->in_place && access(f->out, F_OK) == 0) {
			problem(v, "%s exists already", f->out);
			return rv_end(v);
		}
		f->made = true;
		v->img = vm_qemu_img_run(v->vm, args, img_done, v, &cause);
	}
	if (v->img == NULL) {
		problem(v, "%s", cause);
		free(cause);
		rv_end(v);
	}
}

static char *
rv_cancel(struct vm_job *job, const char *why)
{
	struct rv *v = job->data;

	problem(v, "%s", why);
	vm_qemu_img_free(v->img);
	v->img = NULL;
	/* Nothing of an in-place restore is committed yet: its temporaries go. */
	v->in_place = false;
	rv_end(v);
	return NULL;
}

/* Removes the temporaries an in-place restore of vm left (qvmd died during it). */
static void
inplace_remove_tmp(const struct vm_config *cfg)
{
	for (size_t i = 0; cfg != NULL && i < cfg->ndisks; i++) {
		char *tmp = xasprintf("%s" RV_TMP_SUFFIX, cfg->disks[i].file);

		unlink(tmp);
		free(tmp);
	}
}

/* After a restart of qvmd: a restore was running; an in-place one may have left temporaries. */
static void
rv_restore(struct vm *vm, struct vm_jobrec *rec, bool running, const char *error)
{
	inplace_remove_tmp(vm->cfg);
}

void
bk_pre_restore_clear(struct vm *vm)
{
	const struct vm_config *cfgs[2] = {vm->cfg, vm->live_cfg};

	for (size_t c = 0; c < 2; c++) {
		for (size_t i = 0; cfgs[c] != NULL && i < cfgs[c]->ndisks; i++) {
			char *pre = xasprintf("%s" RV_PRE_SUFFIX, cfgs[c]->disks[i].file);

			if (unlink(pre) == 0)
				log_info("vm %s: removed %s (a backup is complete)", vm->name, pre);
			free(pre);
		}
	}
}

#define RV_ALLOWS                                                                                  \
	(VM_OP_BIT(VM_OP_START) | VM_OP_BIT(VM_OP_POWERDOWN) | VM_OP_BIT(VM_OP_KILL) |             \
	 VM_OP_BIT(VM_OP_RESET) | VM_OP_BIT(VM_OP_PAUSE) | VM_OP_BIT(VM_OP_RESUME) |               \
	 VM_OP_BIT(VM_OP_ATTACH) | VM_OP_BIT(VM_OP_DETACH))

const struct vm_job_kind vm_backup_restore_kind = {
    .name = "restore",
    .op = VM_OP_BACKUP,
    .background = true,
    .allows = RV_ALLOWS,
    .timer = rv_timer,
    .cancel = rv_cancel,
    .free = rv_free,
    .restore = rv_restore,
};

/* In place: the VM is stopped and must stay so (a start is refused as busy). Its records are
 * "restore" records: after a restart of qvmd the kind above takes them. */
static const struct vm_job_kind vm_backup_restore_in_place_kind = {
    .name = "restore",
    .op = VM_OP_BACKUP,
    .background = true,
    .allows = 0,
    .timer = rv_timer,
    .cancel = rv_cancel,
    .free = rv_free,
};

const struct vm_job_kind vm_backup_verify_kind = {
    .name = "backup-verify",
    .op = VM_OP_BACKUP,
    .background = true,
    .allows = RV_ALLOWS,
    .timer = rv_timer,
    .cancel = rv_cancel,
    .free = rv_free,
};

static void reply_err(vm_done_cb cb, void *arg, enum proto_err code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
reply_err(vm_done_cb cb, void *arg, enum proto_err code, const char *fmt, ...)
{
	char *msg;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	cb(NULL, code, msg, arg);
	free(msg);
}

/* Finds backup id of vm: its directory and manifest; NULL (and answered) when there is none. */
static struct json_object *
find_backup(struct vm *vm, const char *id, char **dir, vm_done_cb cb, void *arg)
{
	struct bk_state st;
	struct json_object *m;

	if (!bk_id_valid(id)) {
		reply_err(cb, arg, PROTO_ERR_INVALID,
		          "vm %s: '%s' is not a backup id (see qvmctl backups %s)", vm->name, id,
		          vm->name);
		return NULL;
	}
	stores_load(vm, &st);
	*dir = bk_find(st.stores, vm->name, id);
	bk_state_free(&st);
	if (*dir == NULL || (m = bk_manifest_read(*dir)) == NULL) {
		reply_err(cb, arg, PROTO_ERR_NOT_FOUND, "vm %s: no backup %s", vm->name, id);
		free(*dir);
		*dir = NULL;
		return NULL;
	}
	if (bk_jstr(m, "status") == NULL || strcmp(bk_jstr(m, "status"), "complete") != 0) {
		reply_err(cb, arg, PROTO_ERR_INVALID, "vm %s: backup %s is %s, not complete",
		          vm->name, id, bk_jstr(m, "status") ? bk_jstr(m, "status") : "unreadable");
		json_object_put(m);
		free(*dir);
		*dir = NULL;
		return NULL;
	}
	return m;
}

/* The checksum a disk's pending state (a prune making it standalone) records, or NULL. */
static const char *
pending_sum(struct json_object *d)
{
	struct json_object *p;

	return json_object_object_get_ex(d, "pending", &p) ? bk_jstr(p, "checksum") : NULL;
}

/* Adds the files of dir's backup and of every backup it builds on (verify). */
static bool
verify_files(struct rv *v, const char *dir, struct json_object *m)
{
	char *store = xstrdup(dir), *slash = strrchr(store, '/'), *cur = xstrdup(dir);
	struct json_object *man = json_object_get(m);
	bool ok = true;

	*slash = '\0';
	for (int depth = 0; man != NULL; depth++) {
		struct json_object *disks;
		const char *parent = bk_jstr(man, "parent");

		if (json_object_object_get_ex(man, "disks", &disks))
			for (size_t i = 0; i < json_object_array_length(disks); i++) {
				struct json_object *d = json_object_array_get_idx(disks, i);
				const char *id = bk_jstr(d, "id"), *file = bk_jstr(d, "file");
				struct rv_file *f;

				if (id == NULL || file == NULL || strchr(file, '/') != NULL)
					continue;
				f = file_add(v, id, xasprintf("%s/%s", cur, file));
				f->sum =
				    bk_jstr(d, "checksum") ? xstrdup(bk_jstr(d, "checksum")) : NULL;
				f->sum2 = pending_sum(d) ? xstrdup(pending_sum(d)) : NULL;
			}
		/* parent points into man: it is used before man goes. */
		if (parent == NULL) {
			json_object_put(man);
			man = NULL;
			break;
		}
		if (!bk_id_valid(parent) || depth > 4096) {
			problem(v, "backup %s: bad parent", cur);
			ok = false;
			break;
		}
		free(cur);
		cur = xasprintf("%s/%s", store, parent);
		json_object_put(man);
		if ((man = bk_manifest_read(cur)) == NULL) {
			problem(v, "parent backup %s is missing", cur);
			ok = false;
		}
	}
	json_object_put(man);
	free(store);
	free(cur);
	return ok;
}

/* The files of a restore: each disk's chain, written into out (--to) or beside the VM's disk
 * (in place: cfg's disks; those the backup lacks are left alone, those cfg lacks skipped). */
static void
restore_files(struct rv *v, struct json_object *m, const char *out, const struct vm_config *cfg)
{
	struct json_object *disks;

	if (!json_object_object_get_ex(m, "disks", &disks) ||
	    !json_object_is_type(disks, json_type_array))
		return;
	for (size_t i = 0; i < json_object_array_length(disks); i++) {
		struct json_object *d = json_object_array_get_idx(disks, i);
		const char *disk = bk_jstr(d, "id");
		const struct cfg_disk *cd = NULL;
		struct rv_file *f;
		char *cause = NULL;

		if (disk == NULL)
			continue;
		for (size_t k = 0; cfg != NULL && k < cfg->ndisks; k++)
			if (strcmp(cfg->disks[k].id, disk) == 0)
				cd = &cfg->disks[k];
		if (cfg != NULL && cd == NULL) {
			json_object_array_add(v->skipped, json_object_new_string(disk));
			continue;
		}
		f = file_add(v, disk, NULL);
		if ((f->spec = bk_chain_spec(v->dir, m, disk, &cause)) == NULL) {
			problem(v, "disk %s: %s", disk, cause);
			free(cause);
		}
		if (cd != NULL) {
			f->target = xstrdup(cd->file);
			f->out = xasprintf("%s" RV_TMP_SUFFIX, cd->file);
			f->raw = cd->format == CFG_FORMAT_RAW;
		} else {
			f->out = xasprintf("%s/%s.qcow2", out, disk);
		}
	}
	for (size_t k = 0; cfg != NULL && k < cfg->ndisks; k++)
		if (bk_manifest_disk(m, cfg->disks[k].id) == NULL)
			json_object_array_add(v->left_alone,
			                      json_object_new_string(cfg->disks[k].id));
}

/* Whether vm can have its disks replaced now; if not, answers cb. */
static bool
inplace_allowed(struct vm *vm, vm_done_cb cb, void *arg)
{
	switch (vm->state) {
	case VM_STOPPED:
	case VM_CRASHED:
		break;
	case VM_RUNNING:
	case VM_PAUSED:
		reply_err(cb, arg, PROTO_ERR_ALREADY_RUNNING,
		          "vm %s: is %s: restore --in-place replaces its disks and needs it "
		          "stopped (powerdown or kill it first)",
		          vm->name, vm_state_name(vm->state));
		return false;
	default:
		vm_job_refuse_busy(vm, cb, arg);
		return false;
	}
	if (vm->cfg == NULL) {
		reply_err(cb, arg, PROTO_ERR_NOT_FOUND, "vm %s: definition was removed", vm->name);
		return false;
	}
	return true;
}

static void
rv_start(struct vm *vm, bool verify, const char *id, const char *to, bool no_wait, vm_done_cb cb,
         void *arg)
{
	bool in_place = !verify && to == NULL;
	const struct vm_job_kind *kind = verify     ? &vm_backup_verify_kind
	                                 : in_place ? &vm_backup_restore_in_place_kind
	                                            : &vm_backup_restore_kind;
	struct json_object *m;
	char *dir = NULL, *out = NULL, *cause = NULL;
	struct rv *v;

	if (in_place && !inplace_allowed(vm, cb, arg))
		return;
	if (!verify && !in_place && (out = bk_dir_allowed(vm->env.conf, to, &cause)) == NULL) {
		reply_err(cb, arg, PROTO_ERR_INVALID, "vm %s: --to %s", vm->name, cause);
		free(cause);
		return;
	}
	if ((m = find_backup(vm, id, &dir, cb, arg)) == NULL) {
		free(out);
		return;
	}
	if (!vm_job_admit(vm, kind->op, cb, arg)) {
		json_object_put(m);
		free(dir);
		free(out);
		return;
	}
	if (out != NULL && mkdir(out, 0700) < 0 && errno != EEXIST) {
		reply_err(cb, arg, PROTO_ERR_FAILED, "vm %s: --to %s: %s", vm->name, out,
		          strerror(errno));
		json_object_put(m);
		free(dir);
		free(out);
		return;
	}
	v = xcalloc(1, sizeof *v);
	v->vm = vm;
	v->verify = verify;
	v->in_place = in_place;
	v->no_wait = no_wait;
	v->id = xstrdup(id);
	v->dir = dir;
	v->left_alone = json_object_new_array();
	v->skipped = json_object_new_array();
	if (verify) {
		verify_files(v, dir, m);
	} else {
		if (in_place)
			inplace_remove_tmp(vm->cfg);
		restore_files(v, m, out, in_place ? vm->cfg : NULL);
		if (in_place && v->nfiles == 0 && v->problems == NULL)
			problem(v, "has none of the disks of vm %s", vm->name);
	}
	json_object_put(m);
	free(out);
	v->job = vm_job_new(vm, kind, v, cb, arg);
	v->job->rec = vm_jobrec_new(vm, kind->name, id, false);
	if (no_wait) {
		struct json_object *res = json_object_new_object();

		json_object_object_add(res, "vm", json_object_new_string(vm->name));
		json_object_object_add(res, "backup", json_object_new_string(id));
		json_object_object_add(res, "job", json_object_new_string(v->job->rec->id));
		vm_job_reply_early(v->job, res);
	}
	if (v->problems != NULL) {
		v->in_place = false;
		return rv_end(v);
	}
	rv_next(v);
}

void
vm_backup_restore(struct vm *vm, const char *id, const char *to, bool no_wait, vm_done_cb cb,
                  void *arg)
{
	rv_start(vm, false, id, to, no_wait, cb, arg);
}

void
vm_backup_verify(struct vm *vm, const char *id, bool no_wait, vm_done_cb cb, void *arg)
{
	rv_start(vm, true, id, NULL, no_wait, cb, arg);
}
