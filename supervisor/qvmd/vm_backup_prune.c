/*
 * backup-prune: keeps a VM's newest N restore points (complete backups) and deletes the older
 * ones, as the VM's background job (kind "backup-prune"), qemu-img as a child and hashing a piece
 * per loop turn.
 *
 * A kept backup whose parent goes is made standalone first (bk_prune_plan's "merge"): each of its
 * disks with a backing file is converted, with its whole chain described from the manifests
 * (bk_chain_spec: no name from a backup file is followed), into FILE.prune.tmp beside it, hashed
 * and fsynced. Then, in one loop turn: the manifest records each new file's checksum as
 * "pending", each temporary is renamed over its file (the name later increments have as backing
 * file, so they stay valid, and so does the chain the dirty bitmaps count from), and the manifest
 * says full, without parent, with the new checksums. Only then are the older backups deleted
 * (bk_delete: the manifest first). A crash at any point leaves every kept point restorable and
 * its verify clean: before the rename the old chain is intact; after it the new file reads the
 * same alone or over its old parent; a pending state is settled from the file's header
 * (bk_pending_settle) and the next prune sweeps what was left (bk_sweep).
 */
#include "vm_backup.h"
#include "vm_backup_chain.h"
#include "vm_private.h"

#include "log.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PR_HASH_SLICE (16 * 1024 * 1024)
#define PR_TMP_SUFFIX ".prune.tmp"

struct pr_file {
	char *disk;
	char *file; /* the backup's file */
	char *tmp;  /* its standalone copy being made */
	char *spec; /* its chain, for qemu-img */
	char *sum;
	uint64_t size;
	bool made;
};

/* A kept backup made standalone. */
struct pr_merge {
	char *id;
	char *dir;
	struct pr_file *files;
	size_t nfiles;
};

struct pr {
	struct vm *vm;
	struct vm_job *job;
	struct json_object *kept, *deleted, *merged; /* ids, for the result */
	struct pr_merge *merges;
	size_t nmerges, mi, fi;
	char **dels;
	size_t ndels, di;
	bool hashing;
	struct vm_qemu_img *img;
	struct bk_hash *hash;
	char *error;
};

/* Removes the temporaries of the merge in progress. */
static void
pr_unmake(struct pr *p)
{
	for (size_t m = 0; m < p->nmerges; m++)
		for (size_t i = 0; i < p->merges[m].nfiles; i++)
			if (p->merges[m].files[i].made) {
				unlink(p->merges[m].files[i].tmp);
				p->merges[m].files[i].made = false;
			}
}

static void
pr_free(void *data)
{
	struct pr *p = data;

	if (p == NULL)
		return;
	vm_qemu_img_free(p->img);
	bk_hash_free(p->hash);
	pr_unmake(p);
	for (size_t m = 0; m < p->nmerges; m++) {
		for (size_t i = 0; i < p->merges[m].nfiles; i++) {
			struct pr_file *f = &p->merges[m].files[i];

			free(f->disk);
			free(f->file);
			free(f->tmp);
			free(f->spec);
			free(f->sum);
		}
		free(p->merges[m].files);
		free(p->merges[m].id);
		free(p->merges[m].dir);
	}
	free(p->merges);
	for (size_t i = 0; i < p->ndels; i++)
		free(p->dels[i]);
	free(p->dels);
	json_object_put(p->kept);
	json_object_put(p->deleted);
	json_object_put(p->merged);
	free(p->error);
	free(p);
}

static struct json_object *
pr_result(struct pr *p)
{
	struct json_object *res = json_object_new_object();

	json_object_object_add(res, "vm", json_object_new_string(p->vm->name));
	json_object_object_add(res, "job",
	                       p->job->rec ? json_object_new_string(p->job->rec->id) : NULL);
	json_object_object_add(res, "kept", json_object_get(p->kept));
	json_object_object_add(res, "deleted", json_object_get(p->deleted));
	json_object_object_add(res, "merged", json_object_get(p->merged));
	return res;
}

static void
pr_end(struct pr *p)
{
	struct vm_jobrec *rec = p->job->rec;

	if (p->error != NULL) {
		char *msg = xasprintf("vm %s: backup-prune: %s", p->vm->name, p->error);

		pr_unmake(p);
		if (rec != NULL)
			vm_jobrec_end(p->vm, rec, VM_JOBREC_FAILED, msg);
		vm_job_done(p->job, NULL, PROTO_ERR_FAILED, "%s", msg);
		free(msg);
		return;
	}
	if (rec != NULL)
		vm_jobrec_end(p->vm, rec, VM_JOBREC_DONE, NULL);
	vm_job_done(p->job, pr_result(p), PROTO_OK, NULL);
}

static void fail(struct pr *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
fail(struct pr *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (p->error == NULL && vasprintf(&p->error, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	pr_end(p);
}

/* Every file of merge m is written: pending state, renames, final manifest (one loop turn). */
static int
pr_commit(struct pr *p, struct pr_merge *m, char **cause)
{
	struct json_object *man = bk_manifest_read(m->dir), *pend = json_object_new_array();
	int rc = -1;

	if (man == NULL) {
		*cause = xasprintf("%s: manifest unreadable", m->dir);
		json_object_put(pend);
		return -1;
	}
	for (size_t i = 0; i < m->nfiles; i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "id", json_object_new_string(m->files[i].disk));
		json_object_object_add(o, "checksum", json_object_new_string(m->files[i].sum));
		json_object_object_add(o, "size", json_object_new_uint64(m->files[i].size));
		json_object_array_add(pend, o);
	}
	bk_pending_set(man, pend);
	if (bk_manifest_write(m->dir, man, cause) < 0)
		goto out;
	for (size_t i = 0; i < m->nfiles; i++) {
		if (rename(m->files[i].tmp, m->files[i].file) < 0) {
			*cause = xasprintf("%s: %s", m->files[i].file, strerror(errno));
			goto out;
		}
		m->files[i].made = false;
	}
	if (bk_sync_dir(m->dir) < 0) {
		*cause = xasprintf("%s: fsync: %s", m->dir, strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < m->nfiles; i++)
		bk_pending_apply(man, m->files[i].disk);
	/* Also when no disk needed a new file (only full copies, e.g. raw disks). */
	bk_manifest_standalone(man);
	if (bk_manifest_write(m->dir, man, cause) < 0)
		goto out;
	log_info("vm %s: backup %s is standalone now (%zu file%s rewritten)", p->vm->name, m->id,
	         m->nfiles, m->nfiles == 1 ? "" : "s");
	rc = 0;
out:
	/* A failure after the pending state was written is settled by the next prune. */
	json_object_put(man);
	json_object_put(pend);
	return rc;
}

static void pr_next(struct pr *p);

static void
img_done(bool ok, char *out, void *arg)
{
	struct pr *p = arg;
	struct pr_file *f = &p->merges[p->mi].files[p->fi];

	p->img = NULL;
	if (!ok)
		return fail(p, "backup %s: disk %s: qemu-img convert: %s", p->merges[p->mi].id,
		            f->disk, *out ? out : "failed");
	p->hashing = true;
	pr_next(p);
}

/* Hashes a slice of the new file; once done, fsyncs it. */
static void
pr_hash(struct pr *p)
{
	struct pr_file *f = &p->merges[p->mi].files[p->fi];
	char *cause = NULL;
	struct stat sb;
	int rc;

	if (p->hash == NULL && (p->hash = bk_hash_open(f->tmp, &cause)) == NULL)
		goto bad;
	if ((rc = bk_hash_step(p->hash, PR_HASH_SLICE, &f->sum, &cause)) < 0)
		goto bad;
	if (rc == 0) {
		vm_job_arm(p->job, 0);
		return;
	}
	if (bk_hash_sync(p->hash, &cause) < 0)
		goto bad;
	f->size = stat(f->tmp, &sb) == 0 ? (uint64_t)sb.st_size : 0;
	bk_hash_free(p->hash);
	p->hash = NULL;
	p->hashing = false;
	p->fi++;
	if (p->job->rec != NULL)
		p->job->rec->cur++;
	vm_job_arm(p->job, 0);
	return;
bad:
	fail(p, "%s", cause);
	free(cause);
}

static void
pr_next(struct pr *p)
{
	char *cause = NULL;

	if (p->mi < p->nmerges) {
		struct pr_merge *m = &p->merges[p->mi];
		struct pr_file *f;

		if (p->fi >= m->nfiles) {
			if (pr_commit(p, m, &cause) < 0) {
				fail(p, "backup %s: %s", m->id, cause);
				free(cause);
				return;
			}
			json_object_array_add(p->merged, json_object_new_string(m->id));
			p->mi++;
			p->fi = 0;
			vm_job_arm(p->job, 0);
			return;
		}
		f = &m->files[p->fi];
		if (p->hashing)
			return pr_hash(p);
		{
			const char *args[] = {"convert", "-q",    "-t",   "writeback", "-O",
			                      "qcow2",   f->spec, f->tmp, NULL};

			unlink(f->tmp);
			f->made = true;
			if ((p->img = vm_qemu_img_run(p->vm, args, img_done, p, &cause)) == NULL) {
				fail(p, "%s", cause);
				free(cause);
			}
		}
		return;
	}
	if (p->di < p->ndels) {
		bk_delete(p->dels[p->di]);
		log_info("vm %s: backup-prune: deleted %s", p->vm->name, p->dels[p->di]);
		p->di++;
		if (p->job->rec != NULL)
			p->job->rec->cur++;
		vm_job_arm(p->job, 0);
		return;
	}
	pr_end(p);
}

static void
pr_timer(struct vm_job *job)
{
	pr_next(job->data);
}

static char *
pr_cancel(struct vm_job *job, const char *why)
{
	struct pr *p = job->data;

	vm_qemu_img_free(p->img);
	p->img = NULL;
	if (p->job->rec != NULL)
		vm_jobrec_end(p->vm, p->job->rec, VM_JOBREC_CANCELLED, why);
	fail(p, "%s", why);
	return NULL;
}

/* The VM's store directories and backup state (caller frees with bk_state_free). */
static void
pr_state(struct vm *vm, struct bk_state *st)
{
	char *path = vm_state_path(vm, "backups.json"),
	     *def = xasprintf("%s/%s", vm->env.conf->backup_dir, vm->name);

	bk_state_load(st, path);
	bk_state_add_store(st, def);
	free(path);
	free(def);
}

/* What an interrupted prune left: deletions finished, temporaries removed, pending states
 * settled from the files' headers. */
static void
pr_tidy(struct vm *vm, const struct bk_state *st)
{
	struct json_object *list;
	char *cause = NULL;

	bk_sweep(st->stores, vm->name, st->running_id);
	list = bk_list(st->stores, vm->name);
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		const char *dir = bk_jstr(json_object_array_get_idx(list, i), "dir");

		if (dir != NULL && bk_pending_settle(dir, &cause) < 0) {
			log_error("vm %s: %s", vm->name, cause);
			free(cause);
			cause = NULL;
		}
	}
	json_object_put(list);
}

/* After a restart of qvmd: a prune was running; what it left is tidied now. */
static void
pr_restore(struct vm *vm, struct vm_jobrec *rec, bool running, const char *error)
{
	struct bk_state st;

	pr_state(vm, &st);
	pr_tidy(vm, &st);
	bk_state_free(&st);
}

/* Beside any other operation of the VM: it touches only backup files. */
#define PR_ALLOWS                                                                                  \
	(VM_OP_BIT(VM_OP_START) | VM_OP_BIT(VM_OP_POWERDOWN) | VM_OP_BIT(VM_OP_KILL) |             \
	 VM_OP_BIT(VM_OP_RESET) | VM_OP_BIT(VM_OP_PAUSE) | VM_OP_BIT(VM_OP_RESUME) |               \
	 VM_OP_BIT(VM_OP_ATTACH) | VM_OP_BIT(VM_OP_DETACH))

/* Its records are taken up after a restart once vm_jobrec.c's kind_find lists it. */
const struct vm_job_kind vm_backup_prune_kind = {
    .name = "backup-prune",
    .op = VM_OP_BACKUP,
    .background = true,
    .allows = PR_ALLOWS,
    .timer = pr_timer,
    .cancel = pr_cancel,
    .free = pr_free,
    .restore = pr_restore,
};

static struct json_object *
ids_of(struct json_object *entries)
{
	struct json_object *a = json_object_new_array();

	for (size_t i = 0; i < json_object_array_length(entries); i++)
		json_object_array_add(a, json_object_new_string(
		                             bk_jstr(json_object_array_get_idx(entries, i), "id")));
	return a;
}

/* The files of kept backup e (dir) that have a backing file; false with *cause. */
static bool
merge_add(struct pr *p, struct json_object *e, char **cause)
{
	const char *dir = bk_jstr(e, "dir"), *id = bk_jstr(e, "id");
	struct json_object *man = bk_manifest_read(dir), *disks;
	struct pr_merge *m;

	if (man == NULL || !json_object_object_get_ex(man, "disks", &disks) ||
	    !json_object_is_type(disks, json_type_array)) {
		*cause = xasprintf("backup %s: manifest unreadable", id);
		json_object_put(man);
		return false;
	}
	p->merges = xrealloc(p->merges, (p->nmerges + 1) * sizeof *p->merges);
	m = &p->merges[p->nmerges++];
	memset(m, 0, sizeof *m);
	m->id = xstrdup(id);
	m->dir = xstrdup(dir);
	for (size_t i = 0; i < json_object_array_length(disks); i++) {
		struct json_object *d = json_object_array_get_idx(disks, i);
		const char *disk = bk_jstr(d, "id"), *file = bk_jstr(d, "file");
		struct pr_file *f;
		char *spec;

		if (disk == NULL || file == NULL || bk_jstr(d, "backing") == NULL)
			continue;
		if ((spec = bk_chain_spec(dir, man, disk, cause)) == NULL) {
			json_object_put(man);
			return false;
		}
		m->files = xrealloc(m->files, (m->nfiles + 1) * sizeof *m->files);
		f = &m->files[m->nfiles++];
		memset(f, 0, sizeof *f);
		f->disk = xstrdup(disk);
		f->file = xasprintf("%s/%s", dir, file);
		f->tmp = xasprintf("%s/%s" PR_TMP_SUFFIX, dir, file);
		f->spec = spec;
	}
	json_object_put(man);
	return true;
}

void
vm_backup_prune(struct vm *vm, unsigned keep, bool no_wait, vm_done_cb cb, void *arg)
{
	char *cause = NULL, *msg;
	struct json_object *list, *plan, *a;
	struct bk_state st;
	struct pr *p;

	if (keep < 1) {
		msg = xasprintf("vm %s: backup-prune: keep must be at least 1", vm->name);
		cb(NULL, PROTO_ERR_INVALID, msg, arg);
		free(msg);
		return;
	}
	if (!vm_job_admit(vm, vm_backup_prune_kind.op, cb, arg))
		return;
	pr_state(vm, &st);
	pr_tidy(vm, &st);
	list = bk_list(st.stores, vm->name);
	plan = bk_prune_plan(list, keep, st.last_id);
	bk_state_free(&st);

	p = xcalloc(1, sizeof *p);
	p->vm = vm;
	json_object_object_get_ex(plan, "kept", &a);
	p->kept = ids_of(a);
	json_object_object_get_ex(plan, "deleted", &a);
	p->deleted = ids_of(a);
	for (size_t i = 0; i < json_object_array_length(a); i++)
		if (bk_jstr(json_object_array_get_idx(a, i), "dir") != NULL) {
			p->dels = xrealloc(p->dels, (p->ndels + 1) * sizeof *p->dels);
			p->dels[p->ndels++] =
			    xstrdup(bk_jstr(json_object_array_get_idx(a, i), "dir"));
		}
	p->merged = json_object_new_array();
	json_object_object_get_ex(plan, "merge", &a);
	for (size_t i = 0; i < json_object_array_length(a) && cause == NULL; i++)
		merge_add(p, json_object_array_get_idx(a, i), &cause);
	json_object_put(plan);
	json_object_put(list);
	p->job = vm_job_new(vm, &vm_backup_prune_kind, p, cb, arg);
	msg = xasprintf("keep %u", keep);
	p->job->rec = vm_jobrec_new(vm, vm_backup_prune_kind.name, msg, false);
	free(msg);
	p->job->rec->total = p->ndels;
	for (size_t m = 0; m < p->nmerges; m++)
		p->job->rec->total += p->merges[m].nfiles;
	if (p->job->rec->total == 0)
		p->job->rec->total = 1;
	if (cause != NULL) {
		/* Nothing is deleted when a kept point cannot be made standalone. */
		fail(p, "%s", cause);
		free(cause);
		return;
	}
	log_info("vm %s: backup-prune: keeping %zu, deleting %zu, making %zu standalone", vm->name,
	         json_object_array_length(p->kept), p->ndels, p->nmerges);
	if (no_wait) {
		struct json_object *res = pr_result(p), *planned = json_object_new_array();

		/* Not merged yet: the ones that will be. */
		for (size_t m = 0; m < p->nmerges; m++)
			json_object_array_add(planned, json_object_new_string(p->merges[m].id));
		json_object_object_add(res, "merged", planned);
		vm_job_reply_early(p->job, res);
	}
	pr_next(p);
}
