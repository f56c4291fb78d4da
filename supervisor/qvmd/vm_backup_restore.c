/*
 * Reading backups: the listing (`backups`), restore into new images (`restore --to`, one
 * `qemu-img convert` of each disk's chain into a standalone qcow2, written back with -t writeback
 * so that it is flushed before qemu-img exits) and `backup-verify` (every file of the chain up
 * to the backup present, `qemu-img check` clean, its xxh3 checksum the one recorded when it was
 * written). Restore and verify run as the VM's background job, qemu-img as a child and hashing a
 * piece per loop turn, so the daemon never blocks on them.
 */
#include "vm_backup.h"
#include "vm_private.h"

#include "log.h"

#include <errno.h>
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

static const char *
jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) || v == NULL ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
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

struct rv_file {
	char *disk;
	char *path; /* the backup file (the chain's top for a restore) */
	char *sum;  /* verify: the recorded checksum */
	char *out;  /* restore: the new image */
	bool made;  /* restore: out was created */
};

struct rv {
	struct vm *vm;
	struct vm_job *job;
	bool verify;
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
		free(v->files[i].sum);
		free(v->files[i].out);
	}
	free(v->files);
	free(v->id);
	free(v->dir);
	free(v->problems);
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

static void
rv_end(struct rv *v)
{
	struct vm_jobrec *rec = v->job->rec;
	struct json_object *res, *a;

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
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "id", json_object_new_string(v->files[i].disk));
		json_object_object_add(
		    o, "file",
		    json_object_new_string(v->verify ? v->files[i].path : v->files[i].out));
		json_object_array_add(a, o);
	}
	json_object_object_add(res, v->verify ? "files" : "disks", a);
	if (v->verify)
		json_object_object_add(res, "ok", json_object_new_boolean(true));
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
	} else if (f->sum == NULL || strcmp(hex, f->sum) != 0) {
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
		const char *args[] = {"check", "-q", "-f", "qcow2", f->path, NULL};

		if (access(f->path, F_OK) != 0) {
			problem(v, "%s: %s", f->path, strerror(errno));
			v->next++;
			return rv_next(v);
		}
		v->img = vm_qemu_img_run(v->vm, args, img_done, v, &cause);
	} else {
		const char *args[] = {"convert", "-q",    "-t",    "writeback", "-f", "qcow2",
		                      "-O",      "qcow2", f->path, f->out,      NULL};

		if (access(f->out, F_OK) == 0) {
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

static void
rv_cancel(struct vm_job *job, const char *why)
{
	struct rv *v = job->data;

	problem(v, "%s", why);
	vm_qemu_img_free(v->img);
	v->img = NULL;
	rv_end(v);
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
	if (jstr(m, "status") == NULL || strcmp(jstr(m, "status"), "complete") != 0) {
		reply_err(cb, arg, PROTO_ERR_INVALID, "vm %s: backup %s is %s, not complete",
		          vm->name, id, jstr(m, "status") ? jstr(m, "status") : "unreadable");
		json_object_put(m);
		free(*dir);
		*dir = NULL;
		return NULL;
	}
	return m;
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
		const char *parent = jstr(man, "parent");

		if (json_object_object_get_ex(man, "disks", &disks))
			for (size_t i = 0; i < json_object_array_length(disks); i++) {
				struct json_object *d = json_object_array_get_idx(disks, i);
				const char *id = jstr(d, "id"), *file = jstr(d, "file");
				struct rv_file *f;

				if (id == NULL || file == NULL || strchr(file, '/') != NULL)
					continue;
				f = file_add(v, id, xasprintf("%s/%s", cur, file));
				f->sum = jstr(d, "checksum") ? xstrdup(jstr(d, "checksum")) : NULL;
			}
		json_object_put(man);
		man = NULL;
		if (parent == NULL)
			break;
		if (!bk_id_valid(parent) || depth > 4096) {
			problem(v, "backup %s: bad parent", cur);
			ok = false;
			break;
		}
		free(cur);
		cur = xasprintf("%s/%s", store, parent);
		if ((man = bk_manifest_read(cur)) == NULL) {
			problem(v, "parent backup %s is missing (%s)", parent, cur);
			ok = false;
		}
	}
	json_object_put(man);
	free(store);
	free(cur);
	return ok;
}

static void
rv_start(struct vm *vm, bool verify, const char *id, const char *to, bool no_wait, vm_done_cb cb,
         void *arg)
{
	const struct vm_job_kind *kind = verify ? &vm_backup_verify_kind : &vm_backup_restore_kind;
	struct json_object *m, *disks;
	char *dir = NULL, *out = NULL, *cause = NULL;
	struct rv *v;

	if (!verify && (out = bk_dir_allowed(vm->env.conf, to, &cause)) == NULL) {
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
	v->no_wait = no_wait;
	v->id = xstrdup(id);
	v->dir = dir;
	if (verify) {
		verify_files(v, dir, m);
	} else if (json_object_object_get_ex(m, "disks", &disks)) {
		for (size_t i = 0; i < json_object_array_length(disks); i++) {
			struct json_object *d = json_object_array_get_idx(disks, i);
			const char *disk = jstr(d, "id"), *file = jstr(d, "file");
			struct rv_file *f;

			if (disk == NULL || file == NULL || strchr(file, '/') != NULL)
				continue;
			f = file_add(v, disk, xasprintf("%s/%s", dir, file));
			f->out = xasprintf("%s/%s.qcow2", out, f->disk);
		}
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
	if (v->problems != NULL)
		return rv_end(v);
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
