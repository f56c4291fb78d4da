/*
 * VM snapshots: internal qcow2 snapshots, the kind virsh and Proxmox make by default.
 *
 * A running VM's snapshot with its state (RAM and devices) is QEMU's snapshot-save job over every
 * writable qcow2 disk, the state stored in the first; --disk-only is one `transaction` of
 * blockdev-snapshot-internal-sync. Revert is snapshot-load (a running VM, a snapshot with VM
 * state) or `qemu-img snapshot -a` on every disk of a stopped VM; delete is snapshot-delete or
 * `qemu-img snapshot -d`. Each runs as the VM's background job with a record (vm_jobrec.c) that
 * survives qvmd.
 *
 * All or nothing: before anything is made, the tag must be on no disk; when a snapshot fails
 * half-way (a full disk, QEMU refusing, qvmd restarted in between), the tag is removed from every
 * disk that got it, so a tag is on every disk or on none. The operator's notes and the creation
 * time live in <state_dir>/<name>/snapshots.json; the snapshots themselves are what the images
 * say, read anew each time (QEMU's query-block, or qemu-img info).
 */
#include "vm_private.h"

#include "argv.h"
#include "clock.h"
#include "log.h"
#include "qmp.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* QEMU's own commands get this long; snapshot-save may hold the monitor for the whole save. */
#define SNAP_QMP_TIMEOUT_MS (10 * 60 * 1000)

enum snap_op { SNAP_CREATE, SNAP_REVERT, SNAP_DELETE, SNAP_LIST };

/* One snapshot on one disk. */
struct snap_tag {
	char *name;
	uint64_t vm_state; /* bytes of VM state, 0: disk-only */
	int64_t date_ms;
};

/* One disk as snapshots see it. */
struct snap_disk {
	char *id;
	char *file;
	char node[80]; /* its format node (running VM) */
	bool qcow2;
	bool readonly;
	bool excluded;
	bool done; /* offline create: this disk has the tag now (rollback removes it) */
	struct snap_tag *tags;
	size_t ntags;
};

struct snap {
	struct vm *vm;
	struct vm_job *job; /* NULL for a listing */
	enum snap_op op;
	char *tag;
	char *note;
	bool disk_only;
	bool no_wait;
	char **exclude;
	size_t nexclude;
	bool online;
	bool rollback;     /* removing a half-made snapshot */
	bool cancel_asked; /* job-cancel sent: QEMU's job decides how it ends */
	char *error;       /* why the rollback runs (the job's outcome) */
	struct snap_disk *disks;
	size_t ndisks;
	size_t next; /* offline: the next disk to run qemu-img on */
	struct vm_qemu_img *img;
	vm_done_cb cb; /* a listing's requester */
	void *arg;
};

static void snap_step(struct snap *s);
static struct snap *snap_new(struct vm *vm, enum snap_op op, const char *tag);

static void
disks_clear(struct snap *s)
{
	for (size_t i = 0; i < s->ndisks; i++) {
		for (size_t t = 0; t < s->disks[i].ntags; t++)
			free(s->disks[i].tags[t].name);
		free(s->disks[i].tags);
		free(s->disks[i].id);
		free(s->disks[i].file);
	}
	free(s->disks);
	s->disks = NULL;
	s->ndisks = 0;
}

static void
snap_free(void *data)
{
	struct snap *s = data;

	if (s == NULL)
		return;
	vm_qemu_img_free(s->img);
	disks_clear(s);
	for (size_t i = 0; i < s->nexclude; i++)
		free(s->exclude[i]);
	free(s->exclude);
	free(s->tag);
	free(s->note);
	free(s->error);
	free(s);
}

bool
vm_snapshot_tag_valid(const char *tag)
{
	size_t n = strlen(tag);

	if (n == 0 || n > 63)
		return false;
	for (const char *p = tag; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-'))
			return false;
	return true;
}

/* ---- metadata: notes and creation times ---- */

static struct json_object *
meta_load(struct vm *vm)
{
	char *path = vm_state_path(vm, "snapshots.json");
	struct json_object *o = json_object_from_file(path);

	free(path);
	if (o == NULL || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = json_object_new_object();
	}
	return o;
}

static void
meta_save(struct vm *vm, struct json_object *o)
{
	char *path = vm_state_path(vm, "snapshots.json");

	rundir_write(path, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
	free(path);
}

/* Records tag's note (pending: the snapshot is being made), or removes it (note NULL, !keep). */
static void
meta_set(struct vm *vm, const char *tag, const char *note, bool keep, bool pending)
{
	struct json_object *o = meta_load(vm), *e, *old;

	if (!keep) {
		json_object_object_del(o, tag);
	} else {
		e = json_object_new_object();
		if (note == NULL && json_object_object_get_ex(o, tag, &old) &&
		    json_object_object_get_ex(old, "note", &old))
			json_object_object_add(e, "note", json_object_get(old));
		else
			json_object_object_add(e, "note",
			                       note ? json_object_new_string(note) : NULL);
		json_object_object_add(e, "pending", json_object_new_boolean(pending));
		json_object_object_add(o, tag, e);
	}
	meta_save(vm, o);
	json_object_put(o);
}

/* ---- the disks and their snapshots ---- */

static struct snap_disk *
disk_add(struct snap *s, const char *id, const char *file, bool qcow2, bool readonly)
{
	struct snap_disk *d;

	s->disks = xrealloc(s->disks, (s->ndisks + 1) * sizeof *s->disks);
	d = &s->disks[s->ndisks++];
	memset(d, 0, sizeof *d);
	d->id = xstrdup(id);
	d->file = xstrdup(file);
	snprintf(d->node, sizeof d->node, ARGV_NODE_FMT_FMT, id);
	d->qcow2 = qcow2;
	d->readonly = readonly;
	for (size_t i = 0; i < s->nexclude; i++)
		d->excluded |= strcmp(s->exclude[i], id) == 0;
	return d;
}

/* Reads QEMU's or qemu-img's list of snapshots (an array of ImageSnapshotInfo) into d. */
static void
disk_tags(struct snap_disk *d, struct json_object *list)
{
	for (size_t i = 0; list && i < json_object_array_length(list); i++) {
		struct json_object *e = json_object_array_get_idx(list, i), *v;
		struct snap_tag *t;

		if (!json_object_object_get_ex(e, "name", &v))
			continue;
		d->tags = xrealloc(d->tags, (d->ntags + 1) * sizeof *d->tags);
		t = &d->tags[d->ntags++];
		t->name = xstrdup(json_object_get_string(v));
		t->vm_state = json_object_object_get_ex(e, "vm-state-size", &v)
		                  ? (uint64_t)json_object_get_int64(v)
		                  : 0;
		t->date_ms = json_object_object_get_ex(e, "date-sec", &v)
		                 ? json_object_get_int64(v) * 1000
		                 : 0;
		if (json_object_object_get_ex(e, "date-nsec", &v))
			t->date_ms += json_object_get_int64(v) / 1000000;
	}
}

static const struct snap_tag *
disk_tag(const struct snap_disk *d, const char *tag)
{
	for (size_t i = 0; i < d->ntags; i++)
		if (strcmp(d->tags[i].name, tag) == 0)
			return &d->tags[i];
	return NULL;
}

/* Whether the disk takes part: writable qcow2, not excluded. */
static bool
disk_in(const struct snap_disk *d)
{
	return d->qcow2 && !d->readonly && !d->excluded;
}

/* ---- answering ---- */

static void snap_fail(struct snap *s, enum proto_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
snap_fail(struct snap *s, enum proto_err code, const char *fmt, ...)
{
	char *msg;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	if (s->job == NULL) {
		vm_done_cb cb = s->cb;
		void *arg = s->arg;

		snap_free(s);
		cb(NULL, code, msg, arg);
	} else {
		if (s->job->rec != NULL)
			vm_jobrec_end(s->vm, s->job->rec, VM_JOBREC_FAILED, msg);
		vm_job_done(s->job, NULL, code, "%s", msg);
	}
	free(msg);
}

/* The rows of `snapshots`: one per tag, which writable disks hold it, the VM state's size. */
static struct json_object *
list_json(struct snap *s)
{
	struct json_object *meta = meta_load(s->vm), *rows = json_object_new_array();
	char **seen = NULL;
	size_t nseen = 0;

	for (size_t i = 0; i < s->ndisks; i++) {
		for (size_t t = 0; t < s->disks[i].ntags; t++) {
			const char *tag = s->disks[i].tags[t].name;
			struct json_object *row, *disks, *missing, *m, *note = NULL;
			uint64_t vm_state = 0;
			int64_t date = 0;
			bool dup = false, pending = false;

			for (size_t k = 0; k < nseen && !dup; k++)
				dup = strcmp(seen[k], tag) == 0;
			if (dup)
				continue;
			seen = xrealloc(seen, (nseen + 1) * sizeof *seen);
			seen[nseen++] = (char *)tag;
			disks = json_object_new_array();
			missing = json_object_new_array();
			for (size_t k = 0; k < s->ndisks; k++) {
				const struct snap_tag *st = disk_tag(&s->disks[k], tag);

				if (st != NULL) {
					json_object_array_add(
					    disks, json_object_new_string(s->disks[k].id));
					vm_state =
					    st->vm_state > vm_state ? st->vm_state : vm_state;
					if (date == 0 || (st->date_ms && st->date_ms < date))
						date = st->date_ms;
				} else if (disk_in(&s->disks[k])) {
					json_object_array_add(
					    missing, json_object_new_string(s->disks[k].id));
				}
			}
			if (json_object_object_get_ex(meta, tag, &m)) {
				struct json_object *v;

				if (json_object_object_get_ex(m, "note", &v) && v != NULL)
					note = json_object_get(v);
				if (json_object_object_get_ex(m, "pending", &v))
					pending = json_object_get_boolean(v);
			}
			row = json_object_new_object();
			json_object_object_add(row, "tag", json_object_new_string(tag));
			json_object_object_add(row, "date_ms", json_object_new_int64(date));
			json_object_object_add(row, "vm_state_bytes",
			                       vm_state ? json_object_new_uint64(vm_state) : NULL);
			json_object_object_add(row, "note", note);
			json_object_object_add(row, "disks", disks);
			json_object_object_add(row, "missing", missing);
			json_object_object_add(
			    row, "complete",
			    json_object_new_boolean(json_object_array_length(missing) == 0 &&
			                            !pending));
			json_object_array_add(rows, row);
		}
	}
	free(seen);
	json_object_put(meta);
	return rows;
}

/* ---- reading the disks' snapshots ---- */

static void
query_block_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct snap *s = arg;

	if (r->status == QMP_DISCONNECTED && s->job != NULL)
		return; /* the job ends with the QEMU */
	if (r->status != QMP_OK)
		return snap_fail(s, vm_qmp_err(r), "vm %s: query-block: %s", s->vm->name,
		                 r->error_desc ? r->error_desc : "failed");
	disks_clear(s);
	for (size_t i = 0; i < json_object_array_length(r->result); i++) {
		struct json_object *b = json_object_array_get_idx(r->result, i), *ins, *v, *img;
		const char *node, *fmt = "";
		struct vm_dev *dev;
		struct snap_disk *d;
		char id[80];
		size_t n;

		if (!json_object_object_get_ex(b, "inserted", &ins) ||
		    !json_object_object_get_ex(ins, "node-name", &v))
			continue;
		node = json_object_get_string(v);
		n = strlen(node);
		if (n < 5 || n - 4 >= sizeof id || strcmp(node + n - 4, ".fmt") != 0)
			continue;
		memcpy(id, node, n - 4);
		id[n - 4] = '\0';
		if ((dev = vm_devs_find(s->vm, id)) == NULL || !dev->is_disk || dev->attaching)
			continue;
		if (json_object_object_get_ex(ins, "image", &img) &&
		    json_object_object_get_ex(img, "format", &v))
			fmt = json_object_get_string(v);
		d = disk_add(s, id, dev->disk.file, strcmp(fmt, "qcow2") == 0, dev->disk.readonly);
		if (img != NULL && json_object_object_get_ex(img, "snapshots", &v))
			disk_tags(d, v);
	}
	snap_step(s);
}

static void
info_done(bool ok, char *out, void *arg)
{
	struct snap *s = arg;
	struct snap_disk *d = &s->disks[s->next];
	struct json_object *o, *v;

	s->img = NULL;
	if (!ok)
		return snap_fail(s, PROTO_ERR_FAILED, "vm %s: disk %s: qemu-img info %s: %s",
		                 s->vm->name, d->id, d->file, *out ? out : "failed");
	o = json_tokener_parse(out);
	if (o != NULL && json_object_object_get_ex(o, "snapshots", &v))
		disk_tags(d, v);
	json_object_put(o);
	s->next++;
	snap_step(s);
}

/* Reads the snapshots of a stopped VM's disks, one qemu-img info at a time. */
static bool
offline_inventory(struct snap *s)
{
	char *cause = NULL;

	if (s->ndisks == 0 && s->next == 0) {
		const struct vm_config *cfg = vm_config(s->vm);

		for (size_t i = 0; cfg != NULL && i < cfg->ndisks; i++)
			disk_add(s, cfg->disks[i].id, cfg->disks[i].file,
			         cfg->disks[i].format == CFG_FORMAT_QCOW2, cfg->disks[i].readonly);
	}
	while (s->next < s->ndisks && !s->disks[s->next].qcow2)
		s->next++;
	if (s->next >= s->ndisks)
		return true;
	{
		const char *args[] = {"info",  "--output=json",        "-f",
		                      "qcow2", s->disks[s->next].file, NULL};

		s->img = vm_qemu_img_run(s->vm, args, info_done, s, &cause);
	}
	if (s->img == NULL) {
		snap_fail(s, PROTO_ERR_FAILED, "vm %s: %s", s->vm->name, cause);
		free(cause);
	}
	return false;
}

/* ---- the steps ---- */

static void create_step(struct snap *s);
static void revert_step(struct snap *s);
static void delete_step(struct snap *s);

/* Called whenever the disks have been read: goes on with the operation. */
static void
snap_step(struct snap *s)
{
	if (!s->online && !offline_inventory(s))
		return;
	if (s->rollback)
		return delete_step(s);
	switch (s->op) {
	case SNAP_LIST: {
		vm_done_cb cb = s->cb;
		void *arg = s->arg;
		struct json_object *res = json_object_new_object();

		json_object_object_add(res, "vm", json_object_new_string(s->vm->name));
		json_object_object_add(res, "snapshots", list_json(s));
		snap_free(s);
		cb(res, PROTO_OK, NULL, arg);
		return;
	}
	case SNAP_CREATE:
		return create_step(s);
	case SNAP_REVERT:
		return revert_step(s);
	case SNAP_DELETE:
		return delete_step(s);
	}
}

/* Starts reading the disks (again): QEMU's view while it runs, qemu-img's otherwise. */
static void
snap_read(struct snap *s)
{
	char *cause = NULL;
	int64_t id;

	disks_clear(s);
	s->next = 0;
	if (!s->online)
		return snap_step(s);
	if (s->job != NULL)
		id = vm_job_send(s->job, "query-block", NULL, -1, SNAP_QMP_TIMEOUT_MS,
		                 query_block_done, s, &cause);
	else
		id = qmp_execute(s->vm->qmp, "query-block", NULL, VM_QUERY_TIMEOUT_MS,
		                 query_block_done, s, &cause);
	if (id < 0) {
		snap_fail(s, PROTO_ERR_NOT_RUNNING, "vm %s: %s", s->vm->name, cause);
		free(cause);
	}
}

static struct json_object *
result_json(struct snap *s)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "vm", json_object_new_string(s->vm->name));
	json_object_object_add(o, "tag", json_object_new_string(s->tag));
	json_object_object_add(o, "job",
	                       s->job->rec ? json_object_new_string(s->job->rec->id) : NULL);
	return o;
}

/* The operation succeeded: the record and the requester are told. */
static void
snap_succeed(struct snap *s)
{
	if (s->job->rec != NULL)
		vm_jobrec_end(s->vm, s->job->rec, VM_JOBREC_DONE, NULL);
	vm_job_done(s->job, result_json(s), PROTO_OK, NULL);
}

/* A failed snapshot: remove the tag from the disks that got it, then fail with why. */
static void
snap_roll_back(struct snap *s, const char *why)
{
	log_warn("vm %s: snapshot %s failed (%s): removing it from every disk", s->vm->name, s->tag,
	         why);
	free(s->error);
	s->error = xstrdup(why);
	s->rollback = true;
	snap_read(s);
}

static void
qemu_job_started(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct snap *s = arg;

	if (r->status == QMP_DISCONNECTED || r->status == QMP_OK)
		return; /* the outcome comes with the job's conclusion */
	if (s->op == SNAP_CREATE)
		meta_set(s->vm, s->tag, NULL, false, false);
	snap_fail(s, vm_qmp_err(r), "vm %s: %s %s: %s", s->vm->name, r->command, s->tag,
	          r->error_desc ? r->error_desc : "failed");
}

/* Sends one of QEMU's snapshot jobs over the disks that take part (only those holding the tag
 * for a delete). */
static void
send_qemu_job(struct snap *s, const char *command, const char *vmstate)
{
	struct json_object *args = json_object_new_object(), *devs = json_object_new_array();
	char *cause = NULL;

	for (size_t i = 0; i < s->ndisks; i++) {
		if (!disk_in(&s->disks[i]))
			continue;
		if (s->op == SNAP_DELETE && disk_tag(&s->disks[i], s->tag) == NULL)
			continue;
		json_object_array_add(devs, json_object_new_string(s->disks[i].node));
	}
	s->job->rec = vm_jobrec_new(s->vm, s->job->kind->name, s->tag, true);
	json_object_object_add(args, "job-id", json_object_new_string(s->job->rec->id));
	json_object_object_add(args, "tag", json_object_new_string(s->tag));
	if (vmstate != NULL)
		json_object_object_add(args, "vmstate", json_object_new_string(vmstate));
	json_object_object_add(args, "devices", devs);
	if (vm_job_send(s->job, command, args, -1, SNAP_QMP_TIMEOUT_MS, qemu_job_started, s,
	                &cause) < 0) {
		snap_fail(s, PROTO_ERR_NOT_RUNNING, "vm %s: %s: %s", s->vm->name, command, cause);
		free(cause);
		return;
	}
	if (s->no_wait)
		vm_job_reply_early(s->job, result_json(s));
}

/* QEMU's job concluded (error NULL: it succeeded). */
static void
snap_concluded(struct vm_job *job, const char *error)
{
	struct snap *s = job->data;

	if (error == NULL) {
		if (s->op == SNAP_CREATE)
			meta_set(s->vm, s->tag, NULL, true, false);
		if (s->op == SNAP_DELETE)
			meta_set(s->vm, s->tag, NULL, false, false);
		return snap_succeed(s);
	}
	if (s->op == SNAP_CREATE) {
		char *why = xasprintf("%s", error);

		snap_roll_back(s, why);
		free(why);
		return;
	}
	snap_fail(s, PROTO_ERR_QEMU, "vm %s: %s %s: %s", s->vm->name, job->kind->name, s->tag,
	          error);
}

/* ---- create ---- */

static void
transaction_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct snap *s = arg;

	if (r->status == QMP_DISCONNECTED)
		return; /* the job ends with the QEMU */
	if (r->status != QMP_OK) {
		/* A transaction is all or nothing in QEMU: nothing to remove. */
		meta_set(s->vm, s->tag, NULL, false, false);
		return snap_fail(s, vm_qmp_err(r), "vm %s: snapshot %s: %s", s->vm->name, s->tag,
		                 r->error_desc ? r->error_desc : "failed");
	}
	meta_set(s->vm, s->tag, NULL, true, false);
	snap_succeed(s);
}

static void offline_next(struct snap *s);

/*
 * A rollback has removed the tag from every disk it could: the job fails with why it was rolled
 * back and which disks held a piece of the snapshot (those it was removed from, and any it could
 * not be removed from).
 */
static void
rollback_end(struct snap *s, enum proto_err code)
{
	char *removed = xstrdup(""), *left = xstrdup(""), *n;

	for (size_t i = 0; i < s->ndisks; i++) {
		const struct snap_disk *d = &s->disks[i];
		char **list = d->done ? &removed : &left;

		if (!disk_in(d) || disk_tag(d, s->tag) == NULL)
			continue;
		n = xasprintf("%s%s%s", *list, **list ? ", " : "", d->id);
		free(*list);
		*list = n;
	}
	if (*left == '\0')
		meta_set(s->vm, s->tag, NULL, false, false);
	if (s->op == SNAP_DELETE)
		n = *removed ? xasprintf("the delete was finished on disk %s", removed)
		             : xstrdup("no disk holds it any more");
	else
		n = *removed ? xasprintf("the half-made snapshot was removed from disk %s", removed)
		             : xstrdup("no disk held any of it");
	if (*left != '\0')
		snap_fail(s, code, "vm %s: snapshot %s: %s; %s, but disk %s still holds it",
		          s->vm->name, s->tag, s->error, n, left);
	else
		snap_fail(s, code, "vm %s: snapshot %s: %s; %s", s->vm->name, s->tag, s->error, n);
	free(n);
	free(removed);
	free(left);
}

static void
offline_img_done(bool ok, char *out, void *arg)
{
	struct snap *s = arg;
	struct snap_disk *d = &s->disks[s->next];

	s->img = NULL;
	if (!ok) {
		char *why = xasprintf("disk %s: qemu-img snapshot %s: %s", d->id, d->file,
		                      *out ? out : "failed");

		if (s->rollback) {
			/* The other disks are cleaned all the same; the end says what is left. */
			log_error("vm %s: cannot remove the half-made snapshot %s: %s", s->vm->name,
			          s->tag, why);
			free(why);
			s->next++;
			return offline_next(s);
		}
		if (s->op == SNAP_CREATE) {
			snap_roll_back(s, why);
		} else {
			vm_jobrec_end(s->vm, s->job->rec, VM_JOBREC_FAILED, why);
			vm_job_done(s->job, NULL, PROTO_ERR_FAILED, "vm %s: %s %s: %s", s->vm->name,
			            s->job->kind->name, s->tag, why);
		}
		free(why);
		return;
	}
	d->done = true;
	s->next++;
	offline_next(s);
}

/* Runs qemu-img snapshot on the next disk that takes part (a stopped VM). */
static void
offline_next(struct snap *s)
{
	const char *flag = s->rollback || s->op == SNAP_DELETE ? "-d"
	                   : s->op == SNAP_REVERT              ? "-a"
	                                                       : "-c";
	char *cause = NULL;

	while (s->next < s->ndisks &&
	       (!disk_in(&s->disks[s->next]) || ((s->rollback || s->op == SNAP_DELETE) &&
	                                         disk_tag(&s->disks[s->next], s->tag) == NULL)))
		s->next++;
	if (s->next >= s->ndisks) {
		if (s->rollback)
			return rollback_end(s, PROTO_ERR_FAILED);
		if (s->op == SNAP_CREATE)
			meta_set(s->vm, s->tag, NULL, true, false);
		if (s->op == SNAP_DELETE)
			meta_set(s->vm, s->tag, NULL, false, false);
		return snap_succeed(s);
	}
	{
		const char *args[] = {"snapshot", "-q", flag, s->tag, s->disks[s->next].file, NULL};

		s->img = vm_qemu_img_run(s->vm, args, offline_img_done, s, &cause);
	}
	if (s->img == NULL) {
		snap_fail(s, PROTO_ERR_FAILED, "vm %s: %s", s->vm->name, cause);
		free(cause);
	}
}

/* Starts the job on a stopped VM: its record, --no-wait's reply, then qemu-img disk by disk. */
static void
offline_start(struct snap *s)
{
	s->job->rec = vm_jobrec_new(s->vm, s->job->kind->name, s->tag, false);
	if (s->no_wait)
		vm_job_reply_early(s->job, result_json(s));
	s->next = 0;
	offline_next(s);
}

/* Checks what takes part; false (and the job failed) when the snapshot cannot be made. */
static bool
create_check(struct snap *s)
{
	const struct snap_disk *first = NULL;

	for (size_t i = 0; i < s->nexclude; i++) {
		bool known = false;

		for (size_t k = 0; k < s->ndisks && !known; k++)
			known = strcmp(s->disks[k].id, s->exclude[i]) == 0;
		if (!known) {
			snap_fail(s, PROTO_ERR_NOT_FOUND, "vm %s: --exclude %s: no such disk",
			          s->vm->name, s->exclude[i]);
			return false;
		}
	}
	for (size_t i = 0; i < s->ndisks; i++) {
		const struct snap_disk *d = &s->disks[i];

		if (d->readonly || d->excluded)
			continue;
		if (!d->qcow2) {
			snap_fail(
			    s, PROTO_ERR_INVALID,
			    "vm %s: disk %s is a writable raw image, which cannot hold a snapshot "
			    "(convert it to qcow2, or leave it out with --exclude %s)",
			    s->vm->name, d->id, d->id);
			return false;
		}
		if (disk_tag(d, s->tag) != NULL) {
			snap_fail(s, PROTO_ERR_INVALID,
			          "vm %s: snapshot %s exists already (disk %s)", s->vm->name,
			          s->tag, d->id);
			return false;
		}
		if (first == NULL)
			first = d;
	}
	if (first == NULL) {
		snap_fail(s, PROTO_ERR_INVALID, "vm %s: no writable qcow2 disk to snapshot",
		          s->vm->name);
		return false;
	}
	return true;
}

static void
create_step(struct snap *s)
{
	const struct snap_disk *first = NULL;
	struct json_object *args, *actions;
	char *cause = NULL;

	if (!create_check(s))
		return;
	for (size_t i = 0; i < s->ndisks && first == NULL; i++)
		if (disk_in(&s->disks[i]))
			first = &s->disks[i];
	meta_set(s->vm, s->tag, s->note, true, true);
	if (!s->online)
		return offline_start(s);
	if (!s->disk_only)
		return send_qemu_job(s, "snapshot-save", first->node);
	s->job->rec = vm_jobrec_new(s->vm, s->job->kind->name, s->tag, false);
	actions = json_object_new_array();
	for (size_t i = 0; i < s->ndisks; i++) {
		struct json_object *a, *data;

		if (!disk_in(&s->disks[i]))
			continue;
		a = json_object_new_object();
		data = json_object_new_object();
		json_object_object_add(data, "device", json_object_new_string(s->disks[i].node));
		json_object_object_add(data, "name", json_object_new_string(s->tag));
		json_object_object_add(a, "type",
		                       json_object_new_string("blockdev-snapshot-internal-sync"));
		json_object_object_add(a, "data", data);
		json_object_array_add(actions, a);
	}
	args = json_object_new_object();
	json_object_object_add(args, "actions", actions);
	if (vm_job_send(s->job, "transaction", args, -1, SNAP_QMP_TIMEOUT_MS, transaction_done, s,
	                &cause) < 0) {
		snap_fail(s, PROTO_ERR_NOT_RUNNING, "vm %s: transaction: %s", s->vm->name, cause);
		free(cause);
	}
}

/* ---- revert ---- */

/* Whether any disk holds the tag. */
static bool
disk_tag_anywhere(const struct snap *s)
{
	for (size_t i = 0; i < s->ndisks; i++)
		if (disk_tag(&s->disks[i], s->tag) != NULL)
			return true;
	return false;
}

static void
revert_step(struct snap *s)
{
	const struct snap_disk *state = NULL;

	for (size_t i = 0; i < s->ndisks; i++) {
		const struct snap_disk *d = &s->disks[i];
		const struct snap_tag *t = disk_tag(d, s->tag);

		if (!disk_in(d))
			continue;
		if (t == NULL)
			return snap_fail(
			    s, disk_tag_anywhere(s) ? PROTO_ERR_INVALID : PROTO_ERR_NOT_FOUND,
			    disk_tag_anywhere(s)
			        ? "vm %s: snapshot %s is incomplete: disk %s lacks it"
			        : "vm %s: no snapshot %s (disk %s)",
			    s->vm->name, s->tag, d->id);
		if (t->vm_state > 0 && state == NULL)
			state = d;
	}
	if (s->online && state == NULL)
		return snap_fail(s, PROTO_ERR_INVALID,
		                 "vm %s: snapshot %s holds no VM state (disk-only): stop the VM to "
		                 "revert its disks",
		                 s->vm->name, s->tag);
	if (s->online)
		return send_qemu_job(s, "snapshot-load", state->node);
	offline_start(s);
}

/* ---- delete (and the rollback of a failed create) ---- */

static void
rollback_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct snap *s = arg;

	if (r->status == QMP_DISCONNECTED)
		return; /* the job ends with the QEMU */
	if (r->status != QMP_OK)
		log_error("vm %s: cannot remove the half-made snapshot %s: %s", s->vm->name, s->tag,
		          r->error_desc ? r->error_desc : "failed");
	else
		s->disks[s->next].done = true;
	s->next++;
	delete_step(s);
}

static void
delete_step(struct snap *s)
{
	char *cause = NULL;

	if (!s->rollback) {
		if (!disk_tag_anywhere(s))
			return snap_fail(s, PROTO_ERR_NOT_FOUND, "vm %s: no snapshot %s",
			                 s->vm->name, s->tag);
		if (s->online)
			return send_qemu_job(s, "snapshot-delete", NULL);
		return offline_start(s);
	}
	if (!s->online) {
		if (s->job->rec == NULL)
			s->job->rec = vm_jobrec_new(s->vm, s->job->kind->name, s->tag, false);
		s->next = 0;
		return offline_next(s);
	}
	/* Online rollback: one synchronous delete per disk holding the tag. */
	while (s->next < s->ndisks && disk_tag(&s->disks[s->next], s->tag) == NULL)
		s->next++;
	if (s->next >= s->ndisks)
		return rollback_end(s, PROTO_ERR_QEMU);
	{
		struct json_object *args = json_object_new_object();

		json_object_object_add(args, "device",
		                       json_object_new_string(s->disks[s->next].node));
		json_object_object_add(args, "name", json_object_new_string(s->tag));
		if (vm_job_send(s->job, "blockdev-snapshot-delete-internal-sync", args, -1,
		                SNAP_QMP_TIMEOUT_MS, rollback_done, s, &cause) < 0) {
			snap_fail(s, PROTO_ERR_NOT_RUNNING, "vm %s: snapshot %s: %s", s->vm->name,
			          s->tag, cause);
			free(cause);
		}
	}
}

/* ---- the job kinds ---- */

static char *
snap_cancel(struct vm_job *job, const char *why)
{
	struct snap *s = job->data;
	struct vm_jobrec *rec = job->rec;

	if (rec != NULL && rec->qemu_job && s->vm->qmp != NULL && !s->vm->qmp_closed) {
		/*
		 * QEMU's job decides how this ends: QEMU 7.2 cannot stop a snapshot-save part-way,
		 * so the job ends when QEMU reports it concluded (a snapshot made is kept, a failed
		 * one removed from every disk) or when QEMU is gone (the half-made snapshot is then
		 * removed with qemu-img). Ending it here would leave that to nobody.
		 */
		struct json_object *args;
		char *cause = NULL;

		if (s->cancel_asked)
			return NULL;
		s->cancel_asked = true;
		log_info("vm %s: %s: asking qemu to cancel %s (%s)", s->vm->name, job->kind->name,
		         rec->id, why);
		args = json_object_new_object();
		json_object_object_add(args, "id", json_object_new_string(rec->id));
		if (qmp_execute(s->vm->qmp, "job-cancel", args, VM_QUERY_TIMEOUT_MS, NULL, NULL,
		                &cause) < 0)
			free(cause);
		json_object_put(args);
		return NULL;
	}
	if (s->op == SNAP_CREATE && !s->online && !s->rollback) {
		/* qemu-img on a stopped VM's disks: stop it, and take the tag off every disk. */
		vm_qemu_img_free(s->img);
		s->img = NULL;
		snap_roll_back(s, why);
		return NULL;
	}
	if (s->img != NULL) /* an offline revert or delete, or a roll-back: not stopped half-way */
		return xstrdup("qemu-img is changing the stopped vm's disks and is not stopped "
		               "half-way; it ends in a moment");
	if (rec != NULL)
		vm_jobrec_end(s->vm, rec, VM_JOBREC_CANCELLED, why);
	vm_job_done(job, NULL, PROTO_ERR_FAILED, "vm %s: %s %s: %s", s->vm->name, job->kind->name,
	            s->tag, why);
	return NULL;
}

/* A snapshot or delete whose QEMU died: the clean-up to run once the VM is down. */
struct snap_orphan {
	struct snap *s; /* offline, rolling back, over the disks the job covered */
	const struct vm_job_kind *kind;
	char *rec_id;
};

/*
 * Runs when the job whose QEMU died has ended (the VM is stopped or crashed by then): removes the
 * tag with qemu-img from the disks that got it, as a new background job carrying the same record,
 * so that `jobs` says how it ended only once the disks agree, and a start waits until then.
 */
static void
snap_orphan_cleanup(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	struct snap_orphan *o = arg;
	struct snap *s = o->s;
	struct vm *vm = s->vm;
	struct vm_jobrec *rec = vm_jobrec_find(vm, o->rec_id);

	json_object_put(result);
	free(o->rec_id);
	if (rec == NULL || rec->state != VM_JOBREC_RUNNING || vm->bg != NULL || vm->cfg == NULL ||
	    !(vm->state == VM_STOPPED || vm->state == VM_CRASHED)) {
		if (rec != NULL && rec->state == VM_JOBREC_RUNNING) {
			char *why = xasprintf(
			    "vm %s: snapshot %s: %s; not cleaned up (the vm is %s): "
			    "see `qvmctl snapshots %s`",
			    vm->name, s->tag, s->error,
			    vm->cfg == NULL ? "no longer defined" : vm_state_name(vm->state),
			    vm->name);

			vm_jobrec_end(vm, rec, VM_JOBREC_FAILED, why);
			free(why);
		}
		snap_free(s);
		free(o);
		return;
	}
	log_warn("vm %s: %s %s: %s: removing the tag from every disk", vm->name, o->kind->name,
	         s->tag, s->error);
	s->job = vm_job_new(vm, o->kind, s, NULL, NULL);
	s->job->rec = rec;
	free(o);
	/* The disks are known (hot-plugged ones too): read their snapshots, then remove the tag. */
	s->next = 0;
	snap_step(s);
}

/*
 * QEMU went away during the job. A snapshot (or a delete) may be on some disks only: each qcow2
 * image gets its snapshot table entry on its own. Once the VM is down, the tag is removed from
 * every disk the job covered (snap_orphan_cleanup); a revert leaves nothing to clean.
 */
static bool
snap_qemu_gone(struct vm_job *job, const struct vm_exit *exit)
{
	struct snap *s = job->data, *c;
	struct snap_orphan *o;
	char *why;

	if (job->rec == NULL || !s->online)
		return false;
	why = xasprintf("qemu %s", exit->reason);
	if (s->op == SNAP_REVERT) {
		vm_jobrec_end(s->vm, job->rec, VM_JOBREC_FAILED, why);
		free(why);
		return false;
	}
	c = snap_new(s->vm, s->op, s->tag);
	c->online = false;
	c->rollback = true;
	c->error = why;
	for (size_t i = 0; i < s->ndisks; i++)
		if (disk_in(&s->disks[i]))
			disk_add(c, s->disks[i].id, s->disks[i].file, true, false);
	o = xcalloc(1, sizeof *o);
	o->s = c;
	o->kind = job->kind;
	o->rec_id = xstrdup(job->rec->id);
	vm_job_join(job, snap_orphan_cleanup, o);
	return false;
}

static void snap_restore(struct vm *vm, struct vm_jobrec *rec, bool running, const char *error);

#define SNAP_CANCEL_FOR (VM_OP_BIT(VM_OP_POWERDOWN) | VM_OP_BIT(VM_OP_KILL))

const struct vm_job_kind vm_snapshot_kind = {
    .name = "snapshot",
    .op = VM_OP_SNAPSHOT,
    .background = true,
    .allows = VM_OP_BIT(VM_OP_PAUSE) | VM_OP_BIT(VM_OP_RESUME) | VM_OP_BIT(VM_OP_ATTACH),
    .cancel_for = SNAP_CANCEL_FOR,
    .qemu_gone = snap_qemu_gone,
    .cancel = snap_cancel,
    .free = snap_free,
    .concluded = snap_concluded,
    .restore = snap_restore,
};

const struct vm_job_kind vm_revert_kind = {
    .name = "revert",
    .op = VM_OP_REVERT,
    .background = true,
    .allows = VM_OP_BIT(VM_OP_PAUSE) | VM_OP_BIT(VM_OP_RESUME),
    .cancel_for = SNAP_CANCEL_FOR,
    .qemu_gone = snap_qemu_gone,
    .cancel = snap_cancel,
    .free = snap_free,
    .concluded = snap_concluded,
    .restore = snap_restore,
};

const struct vm_job_kind vm_snapshot_delete_kind = {
    .name = "snapshot-delete",
    .op = VM_OP_SNAPSHOT_DELETE,
    .background = true,
    .allows = VM_OP_BIT(VM_OP_PAUSE) | VM_OP_BIT(VM_OP_RESUME) | VM_OP_BIT(VM_OP_ATTACH),
    .cancel_for = SNAP_CANCEL_FOR,
    .qemu_gone = snap_qemu_gone,
    .cancel = snap_cancel,
    .free = snap_free,
    .concluded = snap_concluded,
    .restore = snap_restore,
};

static enum snap_op
kind_op(const struct vm_job_kind *kind)
{
	return kind == &vm_revert_kind            ? SNAP_REVERT
	       : kind == &vm_snapshot_delete_kind ? SNAP_DELETE
	                                          : SNAP_CREATE;
}

static struct snap *
snap_new(struct vm *vm, enum snap_op op, const char *tag)
{
	struct snap *s = xcalloc(1, sizeof *s);

	s->vm = vm;
	s->op = op;
	s->tag = xstrdup(tag);
	s->online = vm->state == VM_RUNNING || vm->state == VM_PAUSED;
	return s;
}

/* After a restart of qvmd, a record of a snapshot job that was running: follow the QEMU job
 * again, or settle what it left (a failed snapshot is removed from every disk). */
static void
snap_restore(struct vm *vm, struct vm_jobrec *rec, bool running, const char *error)
{
	const struct vm_job_kind *kind = strcmp(rec->kind, "revert") == 0 ? &vm_revert_kind
	                                 : strcmp(rec->kind, "snapshot-delete") == 0
	                                     ? &vm_snapshot_delete_kind
	                                     : &vm_snapshot_kind;
	enum snap_op op = kind_op(kind);
	struct snap *s;

	if (rec->target == NULL || !vm_snapshot_tag_valid(rec->target) || vm->bg != NULL)
		return;
	if (!running && error == NULL) {
		if (op == SNAP_CREATE)
			meta_set(vm, rec->target, NULL, true, false);
		if (op == SNAP_DELETE)
			meta_set(vm, rec->target, NULL, false, false);
		return;
	}
	if (!running && op == SNAP_REVERT)
		return;
	s = snap_new(vm, op, rec->target);
	s->job = vm_job_new(vm, kind, s, NULL, NULL);
	s->job->rec = rec;
	if (!running) {
		snap_roll_back(s, error);
		return;
	}
	log_info("vm %s: following %s %s again", vm->name, rec->id, rec->target);
}

/* Whether the VM can run a snapshot operation now: a QEMU that is up, or none at all. */
static bool
snap_state_ok(struct vm *vm, vm_done_cb cb, void *arg)
{
	char *msg;

	switch (vm->state) {
	case VM_RUNNING:
	case VM_PAUSED:
		if (vm->qmp != NULL && !vm->qmp_closed)
			return true;
		break;
	case VM_STOPPED:
	case VM_CRASHED:
		if (vm->cfg != NULL)
			return true;
		msg = xasprintf("vm %s: its definition was removed", vm->name);
		cb(NULL, PROTO_ERR_NOT_FOUND, msg, arg);
		free(msg);
		return false;
	default:
		break;
	}
	vm_job_refuse_busy(vm, cb, arg);
	return false;
}

/* Starts a snapshot operation as the VM's background job. */
static void
snap_start(struct snap *s, const struct vm_job_kind *kind, vm_done_cb cb, void *arg)
{
	struct vm *vm = s->vm;
	char *cause = NULL;

	if (!vm_job_admit(vm, kind->op, cb, arg)) {
		snap_free(s);
		return;
	}
	if (!s->online && vm_host_dirs(vm, &cause) < 0) {
		char *msg = xasprintf("vm %s: %s", vm->name, cause);

		snap_free(s);
		cb(NULL, PROTO_ERR_FAILED, msg, arg);
		free(msg);
		free(cause);
		return;
	}
	s->job = vm_job_new(vm, kind, s, cb, arg);
	snap_read(s);
}

static bool
tag_ok(struct vm *vm, const char *tag, vm_done_cb cb, void *arg)
{
	char *msg;

	if (vm_snapshot_tag_valid(tag))
		return true;
	msg =
	    xasprintf("vm %s: snapshot tag '%s': use 1 to 63 of A-Z a-z 0-9 _ . -", vm->name, tag);
	cb(NULL, PROTO_ERR_INVALID, msg, arg);
	free(msg);
	return false;
}

void
vm_snapshot_create(struct vm *vm, const struct vm_snapshot_args *a, vm_done_cb cb, void *arg)
{
	struct snap *s;

	if (!tag_ok(vm, a->tag, cb, arg) || !snap_state_ok(vm, cb, arg))
		return;
	s = snap_new(vm, SNAP_CREATE, a->tag);
	s->note = a->note ? xstrdup(a->note) : NULL;
	s->disk_only = a->disk_only || !s->online;
	s->no_wait = a->no_wait;
	s->exclude = xcalloc(a->nexclude + 1, sizeof *s->exclude);
	for (size_t i = 0; i < a->nexclude; i++)
		s->exclude[s->nexclude++] = xstrdup(a->exclude[i]);
	snap_start(s, &vm_snapshot_kind, cb, arg);
}

/* A revert or a delete: the tag and the VM checked, then the job started. */
static void
snap_tag_op(struct vm *vm, enum snap_op op, const struct vm_job_kind *kind, const char *tag,
            bool no_wait, vm_done_cb cb, void *arg)
{
	struct snap *s;

	if (!tag_ok(vm, tag, cb, arg) || !snap_state_ok(vm, cb, arg))
		return;
	s = snap_new(vm, op, tag);
	s->no_wait = no_wait;
	snap_start(s, kind, cb, arg);
}

void
vm_snapshot_revert(struct vm *vm, const char *tag, bool no_wait, vm_done_cb cb, void *arg)
{
	snap_tag_op(vm, SNAP_REVERT, &vm_revert_kind, tag, no_wait, cb, arg);
}

void
vm_snapshot_delete(struct vm *vm, const char *tag, bool no_wait, vm_done_cb cb, void *arg)
{
	snap_tag_op(vm, SNAP_DELETE, &vm_snapshot_delete_kind, tag, no_wait, cb, arg);
}

void
vm_snapshots(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct snap *s;

	if (vm->bg != NULL && !(vm->state == VM_RUNNING || vm->state == VM_PAUSED)) {
		/* qemu-img cannot read images another qemu-img is changing. */
		vm_job_refuse_busy(vm, cb, arg);
		return;
	}
	if (!snap_state_ok(vm, cb, arg))
		return;
	s = snap_new(vm, SNAP_LIST, "");
	s->cb = cb;
	s->arg = arg;
	snap_read(s);
}
