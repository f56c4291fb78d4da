/* What a backup copies, and how (see vm_backup_plan.h). */
#include "vm_backup_plan.h"
#include "vm_backup.h"

#include "xalloc.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void
bk_plan_free(struct bk_plan *p)
{
	for (size_t i = 0; i < p->ndisks; i++) {
		struct bk_disk *d = &p->disks[i];

		free(d->id);
		free(d->bitmap_why);
		free(d->backing);
		free(d->file);
		free(d->checksum);
		if (d->fd >= 0)
			close(d->fd);
	}
	free(p->disks);
	free(p->reason);
	free(p->parent);
	*p = (struct bk_plan){0};
}

static struct bk_disk *
disk_add(struct bk_plan *p, const char *id)
{
	struct bk_disk *d;

	p->disks = xrealloc(p->disks, (p->ndisks + 1) * sizeof *p->disks);
	d = &p->disks[p->ndisks++];
	memset(d, 0, sizeof *d);
	d->id = xstrdup(id);
	d->fd = -1;
	d->set = -1;
	return d;
}

static bool
wanted(const struct bk_plan_in *in, const char *id)
{
	for (size_t i = 0; i < in->nwanted; i++)
		if (strcmp(in->wanted[i], id) == 0)
			return true;
	return false;
}

static int
disk_cmp(const void *a, const void *b)
{
	return strcmp(((const struct bk_disk *)a)->id, ((const struct bk_disk *)b)->id);
}

static bool
flag(struct json_object *o, const char *key, bool dflt)
{
	struct json_object *f;

	return json_object_object_get_ex(o, key, &f) ? json_object_get_boolean(f) : dflt;
}

/* Reads the state of BK_BITMAP from a node's "dirty-bitmaps" into d. */
static void
disk_bitmap(struct bk_disk *d, struct json_object *bms)
{
	d->bitmap_why = xasprintf("disk %s has no bitmap " BK_BITMAP, d->id);
	for (size_t k = 0; bms != NULL && k < json_object_array_length(bms); k++) {
		struct json_object *bm = json_object_array_get_idx(bms, k);

		if (strcmp(bk_jtext(bm, "name"), BK_BITMAP) != 0)
			continue;
		d->bitmap = true;
		free(d->bitmap_why);
		d->bitmap_why = NULL;
		if (flag(bm, "inconsistent", false)) {
			d->bitmap_bad = true;
			d->bitmap_why = xasprintf("disk %s: bitmap " BK_BITMAP
			                          " is inconsistent (qemu was killed or crashed "
			                          "since the last backup)",
			                          d->id);
		} else if (flag(bm, "busy", false)) {
			d->bitmap_why = xasprintf("disk %s: bitmap " BK_BITMAP " is busy", d->id);
		} else if (!flag(bm, "recording", true)) {
			d->bitmap_bad = true;
			d->bitmap_why =
			    xasprintf("disk %s: bitmap " BK_BITMAP " is not recording", d->id);
		}
	}
}

void
bk_plan_disks(struct bk_plan *p, const struct bk_plan_in *in, struct json_object *nodes)
{
	size_t n = nodes ? json_object_array_length(nodes) : 0;

	for (size_t i = 0; i < n; i++) {
		struct json_object *ins = json_object_array_get_idx(nodes, i), *img, *bms, *v;
		const char *node = bk_jtext(ins, "node-name");
		size_t len = strlen(node);
		struct bk_disk *d;
		char id[80];

		if (len < 5 || len - 4 >= sizeof id || strcmp(node + len - 4, ".fmt") != 0)
			continue;
		memcpy(id, node, len - 4);
		id[len - 4] = '\0';
		if (!wanted(in, id))
			continue;
		d = disk_add(p, id);
		snprintf(d->node, sizeof d->node, "%s", node);
		if (json_object_object_get_ex(ins, "image", &img)) {
			d->qcow2 = strcmp(bk_jtext(img, "format"), "qcow2") == 0;
			if (json_object_object_get_ex(img, "virtual-size", &v))
				d->vsize = (uint64_t)json_object_get_int64(v);
		}
		if (!d->qcow2) {
			d->bitmap_why = xasprintf("disk %s is raw: a raw disk has no dirty bitmap "
			                          "and takes full copies only",
			                          id);
			continue;
		}
		disk_bitmap(d, json_object_object_get_ex(ins, "dirty-bitmaps", &bms) ? bms : NULL);
	}
	if (p->ndisks > 1)
		qsort(p->disks, p->ndisks, sizeof *p->disks, disk_cmp);
}

char *
bk_plan_chain_base(const struct bk_plan_in *in, struct json_object **parent)
{
	const struct bk_state *st = in->st;
	size_t slen = strlen(in->store);
	struct json_object *m;

	*parent = NULL;
	if (in->mode == VM_BACKUP_FULL)
		return xstrdup("a full backup was asked for (--full)");
	if (st->next_full != NULL)
		return xstrdup(st->next_full);
	if (st->last_id == NULL || st->last_dir == NULL)
		return xstrdup("no complete backup to build on");
	if (strncmp(st->last_dir, in->store, slen) != 0 || st->last_dir[slen] != '/')
		return xasprintf("the last backup %s is in another directory (%s)", st->last_id,
		                 st->last_dir);
	m = bk_manifest_read(st->last_dir);
	if (m == NULL || strcmp(bk_jtext(m, "status"), "complete") != 0) {
		json_object_put(m);
		return xasprintf("the last backup %s is not complete", st->last_id);
	}
	*parent = m;
	return NULL;
}

/* Why the last backup (manifest m) lacks the file of one of p's disks, or NULL. */
static char *
chain_files(const struct bk_plan *p, const struct bk_plan_in *in, struct json_object *m)
{
	char *why = NULL;

	for (size_t i = 0; i < p->ndisks && why == NULL; i++) {
		struct json_object *pd = bk_manifest_disk(m, p->disks[i].id);
		struct stat sb;
		char *f;

		if (pd == NULL)
			continue;
		f = xasprintf("%s/%s", in->st->last_dir, bk_jtext(pd, "file"));
		if (stat(f, &sb) < 0)
			why = xasprintf("the last backup %s lacks %s", in->st->last_id, f);
		free(f);
	}
	return why;
}

/* Why the last backup cannot be built on for p's disks (allocated), or NULL with *parent its
 * manifest. */
static char *
chain_problem(const struct bk_plan *p, const struct bk_plan_in *in, struct json_object **parent)
{
	char *why = bk_plan_chain_base(in, parent);

	if (why == NULL && (why = chain_files(p, in, *parent)) != NULL) {
		json_object_put(*parent);
		*parent = NULL;
	}
	return why;
}

/* Why a disk of the last backup (parent) cannot be copied incrementally, which makes the whole
 * backup full; NULL when none. */
static char *
disks_problem(const struct bk_plan *p, struct json_object *parent)
{
	for (size_t i = 0; i < p->ndisks; i++) {
		const struct bk_disk *d = &p->disks[i];
		struct json_object *pd = bk_manifest_disk(parent, d->id), *v;

		if (pd == NULL || !d->qcow2)
			continue;
		if (d->bitmap_why != NULL)
			return xstrdup(d->bitmap_why);
		if (json_object_object_get_ex(pd, "virtual_size", &v) &&
		    (uint64_t)json_object_get_int64(v) != d->vsize)
			return xasprintf("disk %s changed size since the last backup", d->id);
	}
	return NULL;
}

char *
bk_plan_decide(struct bk_plan *p, const struct bk_plan_in *in)
{
	struct json_object *parent = NULL;
	char *why = chain_problem(p, in, &parent), *notes = NULL, *msg;
	bool any_incremental = false;

	if (p->ndisks == 0) {
		free(why);
		json_object_put(parent);
		return xasprintf("vm %s: no writable disk to back up", in->vm);
	}
	if (why == NULL)
		why = disks_problem(p, parent);
	for (size_t i = 0; why == NULL && i < p->ndisks; i++) {
		struct bk_disk *d = &p->disks[i];
		struct json_object *pd = bk_manifest_disk(parent, d->id);
		char *note, *n;

		if (pd != NULL && d->qcow2) {
			d->incremental = true;
			d->backing = xasprintf("../%s/%s", in->st->last_id, bk_jtext(pd, "file"));
			any_incremental = true;
			continue;
		}
		note = pd == NULL ? xasprintf("disk %s is new since the last backup: a full copy "
		                              "of it",
		                              d->id)
		                  : xstrdup(d->bitmap_why);
		n = xasprintf("%s%s%s", notes ? notes : "", notes ? "; " : "", note);
		free(note);
		free(notes);
		notes = n;
	}
	json_object_put(parent);
	if (why == NULL && !any_incremental)
		why = xstrdup(notes ? notes : "no disk can take an incremental backup");
	if (why != NULL) { /* no disk was made incremental */
		free(notes);
		if (in->mode == VM_BACKUP_INCREMENTAL) {
			msg = xasprintf("vm %s: no incremental backup possible: %s", in->vm, why);
			free(why);
			return msg;
		}
		p->incremental = false;
		p->reason = why;
		return NULL;
	}
	p->incremental = true;
	p->reason = notes;
	p->parent = xstrdup(in->st->last_id);
	return NULL;
}

static bool
str_same(const char *a, const char *b)
{
	return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

bool
bk_plan_same(const struct bk_plan *a, const struct bk_plan *b)
{
	if (a->ndisks != b->ndisks || a->incremental != b->incremental ||
	    !str_same(a->reason, b->reason) || !str_same(a->parent, b->parent))
		return false;
	for (size_t i = 0; i < a->ndisks; i++) {
		const struct bk_disk *x = &a->disks[i], *y = &b->disks[i];

		if (strcmp(x->id, y->id) != 0 || strcmp(x->node, y->node) != 0 ||
		    x->qcow2 != y->qcow2 || x->vsize != y->vsize || x->bitmap != y->bitmap ||
		    x->bitmap_bad != y->bitmap_bad || x->incremental != y->incremental ||
		    !str_same(x->backing, y->backing))
			return false;
	}
	return true;
}

/* The block nodes QEMU would list if nothing changed since the last backup (manifest m): each
 * of its disks' format node, its format and size, a qcow2 one with the backup bitmap recording. */
static struct json_object *
nodes_expected(struct json_object *m)
{
	struct json_object *nodes = json_object_new_array(), *disks, *v;

	if (!json_object_object_get_ex(m, "disks", &disks))
		return nodes;
	for (size_t i = 0; i < json_object_array_length(disks); i++) {
		struct json_object *pd = json_object_array_get_idx(disks, i);
		struct json_object *n = json_object_new_object(), *img = json_object_new_object();
		char *name = xasprintf("%s.fmt", bk_jtext(pd, "id"));

		json_object_object_add(n, "node-name", json_object_new_string(name));
		json_object_object_add(img, "format",
		                       json_object_new_string(bk_jtext(pd, "format")));
		if (json_object_object_get_ex(pd, "virtual_size", &v))
			json_object_object_add(img, "virtual-size", json_object_get(v));
		json_object_object_add(n, "image", img);
		if (strcmp(bk_jtext(pd, "bitmap"), BK_BITMAP) == 0) {
			struct json_object *bm = json_object_new_object(), *bms;

			json_object_object_add(bm, "name", json_object_new_string(BK_BITMAP));
			json_object_object_add(bm, "recording", json_object_new_boolean(true));
			json_object_object_add(bm, "busy", json_object_new_boolean(false));
			bms = json_object_new_array();
			json_object_array_add(bms, bm);
			json_object_object_add(n, "dirty-bitmaps", bms);
		}
		json_object_array_add(nodes, n);
		free(name);
	}
	return nodes;
}

bool
bk_plan_guess(struct bk_plan *p, const struct bk_plan_in *in)
{
	struct json_object *m = NULL, *disks, *nodes;
	char *why;

	if ((why = bk_plan_chain_base(in, &m)) != NULL) {
		free(why);
		return false;
	}
	if (!json_object_object_get_ex(m, "disks", &disks) ||
	    json_object_array_length(disks) != in->nwanted) {
		json_object_put(m);
		return false;
	}
	nodes = nodes_expected(m);
	json_object_put(m);
	bk_plan_disks(p, in, nodes);
	json_object_put(nodes);
	if ((why = bk_plan_decide(p, in)) == NULL && p->incremental && p->ndisks == in->nwanted)
		return true;
	free(why);
	bk_plan_free(p);
	return false;
}
