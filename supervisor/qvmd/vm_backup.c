/*
 * Backups of a VM's disks, running or stopped: full and incremental, one point in time across
 * every disk, as the VM's background job (kind "backup").
 *
 * The backup is the same QMP conversation with a QEMU holding the disks either way; only which
 * QEMU differs. A running VM's is its own QEMU. A stopped VM's is a helper QEMU the job starts
 * (vm_helper.c: `qemu-system-x86_64 -machine none`, not qemu-storage-daemon, which cannot take
 * descriptors in QEMU 7.2; measured there), with the disks under the node names the VM's QEMU
 * gives them, as the VM's uid; the job owns it: it is stopped cleanly (SIGTERM: jobs ended,
 * persistent bitmaps written back) before the job ends, killed when the job is torn down (qvmd
 * exiting), and a helper left by a killed qvmd is killed by the restarted one (bk_restore). A
 * helper that was killed leaves its bitmaps inconsistent: the next backup is full and says so.
 * While the helper holds the disks, the VM cannot start (busy, by the job's masks).
 *
 * A backup is, over QMP, two or three batches of commands (QEMU runs one monitor's commands in
 * order, so a batch costs one round trip; and QEMU 7.2 reads QMP input one byte per main-loop
 * turn, ≈ 15 µs a byte measured here, so commands carry no argument that only repeats a
 * default, and what qvmd can do itself it does):
 *   clean:  query-named-block-nodes; and, unless the QEMU is a new helper or its last backup
 *           here was complete (vm->backup_clean), query-jobs and query-fdsets: what an
 *           interrupted backup left in QEMU (concluded "bk-*" jobs, target nodes "bk-*", their
 *           fdsets) is dismissed and removed, so a leftover never blocks the next backup
 *   plan:   the disks: the format nodes "ID.fmt" of the VM's writable disks, as
 *           query-named-block-nodes shows them (format, virtual size, dirty bitmaps);
 *           per disk: full or incremental, and why (vm_backup_plan.c); a bitmap that counts
 *           nothing (inconsistent: QEMU was killed; or not recording) is removed, and one is
 *           added where there is none (block-dirty-bitmap-add persistent). qvmd creates
 *           each target file and writes an empty qcow2 into it (qcow2_new.c; an
 *           incremental's with its parent's file as backing file by relative name).
 *   copy:   in one batch: the bitmap changes; each target's descriptor (add-fd into an fdset
 *           whose id qvmd chose, BK_FDSET_BASE), the qcow2 node "bk-<disk>" on it (its file
 *           node inline, on /dev/fdset/N, no-flush: qvmd fsyncs once at the end; no backing
 *           node: a backup job only writes whole clusters to it), one `transaction` of every
 *           disk's blockdev-backup (job "bk-<disk>", sync full or incremental, the bitmap with
 *           bitmap-mode on-success, auto-finalize false), completion mode grouped: one disk
 *           failing cancels them all (one disk: its blockdev-backup alone, a transaction of one
 *           action in QEMU). With on-success a bitmap is cleared only when its job succeeds and
 *           is finalized; a failed or cancelled job merges the changes it had frozen back, so
 *           the dirty information of a failed backup is never lost. Then the fdsets are removed
 *           (the nodes keep their own descriptors), while QEMU copies. The next incremental of
 *           a chain on a QEMU whose last backup here completed sends its clean step and its
 *           copy as one batch, planned from the last backup's manifest and checked against
 *           QEMU's answer before anything is finalized (guess_send).
 *   end:    once every job is pending (copied), in one batch: job-finalize of the group
 *           (before it, a cancel, a failure or a qvmd killed loses nothing; from it on, a
 *           backup that does not complete makes the next one full, and backups.json has said
 *           since the copy started that its jobs may clear the bitmaps: running_copy) and
 *           blockdev-del; a concluded job is dismissed by QEMU, and what it did comes with its
 *           BLOCK_JOB_COMPLETED (bytes, error). A job that concluded unfinalized (failed,
 *           cancelled) ends the same way. Then each file is hashed (xxh3, a piece per loop
 *           turn); the files and the new manifest and state are fsynced side by side, and only
 *           then are the manifest (saying complete) and the state put in place (bk_complete).
 *           Each file's data starts going to disk in the background as soon as its job is
 *           pending (bgsync.c), so that the fsync mostly finds it written.
 * A failed backup's files are removed and its manifest says failed (and why). The backup the
 * bitmaps count from is recorded only when a backup completed; when a full backup adds a bitmap
 * to a disk the last backup had, that record is cleared first, so a failure can never let an
 * incremental build on a point its bitmaps do not count from.
 */
#include "vm_backup.h"
#include "vm_backup_plan.h"
#include "bgsync.h"
#include "qcow2_new.h"
#include "vm_helper.h"
#include "vm_private.h"

#include "cfg.h"
#include "clock.h"
#include "log.h"
#include "qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BK_QMP_TIMEOUT_MS (60 * 1000)
#define BK_POLL_MS        1000
/* Bytes hashed per loop turn. */
#define BK_HASH_SLICE (16 * 1024 * 1024)
#define BK_PREFIX     "bk-"
/* The ids of backups' fdsets in QEMU start here. qvmd chooses them, so that a target's node can
 * be added in the batch that hands QEMU its descriptor. QEMU numbers every other set (the VM's
 * images at spawn, hot-plugged ones) from 0, the lowest free first. A set is never reused: QEMU
 * 7.2 closes a removed set's descriptors only while the VM runs, and a descriptor added to a set
 * that still holds them would join them; so each backup takes ids above every one taken before
 * in its QEMU (vm->backup_fdset; after a new QMP connection, above the sets the clean step
 * finds). */
#define BK_FDSET_BASE 100000

enum bk_step { BK_CLEAN, BK_PLAN, BK_COPY, BK_RETREAT, BK_END };

struct bk;
typedef void (*bk_reply_cb)(struct bk *b, const struct qmp_reply *r, size_t disk);

struct bk_call {
	struct bk *b;
	bk_reply_cb cb;
	size_t disk;
	struct bk_call *prev, *next; /* the backup's calls in flight (freed with it) */
};

struct bk {
	struct vm *vm;
	struct vm_job *job;
	enum vm_backup_mode mode;
	bool no_wait;
	char *to;
	enum bk_step step;
	int pending; /* commands of the current batch still in flight */
	char *error; /* the first failure of a batch, or of the copy */
	bool cancelled;
	struct vm_helper *helper; /* a stopped VM's: the QEMU holding its disks (else NULL) */
	struct vm_config *cfg;    /* a stopped VM's: its definition when the backup began */
	char *definition;         /* the definition's text for the manifest */
	bool ending;              /* the outcome is decided: waiting for the helper to end */
	enum vm_jobrec_state end_state;
	struct json_object *end_result;
	enum proto_err end_code;
	char *end_msg;
	struct json_object *q_jobs, *q_nodes, *q_fdsets;
	char id[BK_ID_LEN + 1];
	char *store;
	char *dir;
	struct bk_plan plan;
	size_t next;
	struct bk_hash *hash;
	struct json_object *manifest;
	struct bk_state st;
	bool dir_made;        /* dir is this backup's (made by it) */
	int64_t fdset0;       /* the fdset of its first disk's target (copy_send) */
	int64_t helper_fdset; /* a helper's next fdset id */
	bool guessed;         /* started on a guessed plan, not checked yet (guess_send) */
	bool retreat;         /* ... which QEMU's answer contradicts: undone, then planned anew */
	bool polling;
	bool finalized; /* job-finalize sent: the jobs succeeded and clear their bitmaps */
	bool detached;  /* every target whole and detached: what is left needs no QEMU */
	struct bk_call *calls;
};

static void bk_advance(struct bk *b);

static char *
state_path(struct vm *vm)
{
	return vm_state_path(vm, "backups.json");
}

static void
bk_free(void *data)
{
	struct bk *b = data;

	if (b == NULL)
		return;
	vm_helper_free(b->helper);
	cfg_vm_free(b->cfg);
	free(b->definition);
	json_object_put(b->end_result);
	free(b->end_msg);
	bk_hash_free(b->hash);
	bk_plan_free(&b->plan);
	while (b->calls != NULL) {
		struct bk_call *c = b->calls;

		b->calls = c->next;
		free(c);
	}
	json_object_put(b->q_jobs);
	json_object_put(b->q_nodes);
	json_object_put(b->q_fdsets);
	json_object_put(b->manifest);
	bk_state_free(&b->st);
	free(b->to);
	free(b->store);
	free(b->dir);
	free(b->error);
	free(b);
}

/* Publishes the record's new progress the way vm_jobrec.c does. */
static void
bk_publish(struct vm *vm, struct vm_jobrec *rec)
{
	struct json_object *ev = json_object_new_object();

	json_object_object_add(ev, "event", json_object_new_string("job"));
	json_object_object_add(ev, "vm", json_object_new_string(vm->name));
	json_object_object_add(ev, "job", vm_jobrec_json(vm, rec));
	json_object_object_add(ev, "ts", json_object_new_int64(clock_now_ms()));
	vm_publish(vm, ev);
}

static void
created_text(int64_t ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Saves the backup state; a failure is logged (the backup goes on: the state is a hint). Only
 * a completed backup's record (the backup the dirty bitmaps count from) must survive a power
 * loss: one in progress dies with its QEMU, and its dirty bitmaps' consistency with it. */
static void
state_save(struct bk *b, bool durable)
{
	char *path = state_path(b->vm), *cause = NULL;

	if (bk_state_save(&b->st, path, durable, &cause) < 0) {
		log_error("vm %s: %s", b->vm->name, cause);
		free(cause);
	}
	free(path);
}

/* A failed backup whose manifest cannot say so (a full file system) is removed altogether. */
static void
bk_drop(struct vm *vm, const char *dir, const char *why)
{
	char *m = xasprintf("%s/manifest.json", dir);

	log_error("vm %s: %s: removing the failed backup %s", vm->name, why, dir);
	bk_remove_files(dir);
	unlink(m);
	if (rmdir(dir) < 0)
		log_error("vm %s: cannot remove %s: %s", vm->name, dir, strerror(errno));
	free(m);
}

/* ---- cleaning up what is in QEMU ---- */

/* The QEMU holding the disks: the helper of a stopped VM, else the VM's own (NULL: gone). */
static struct qmp_conn *
bk_qmp(const struct bk *b)
{
	if (b->helper != NULL)
		return vm_helper_qmp(b->helper);
	return b->vm->qmp_closed ? NULL : b->vm->qmp;
}

/* Sends a command that must outlive the job (cleanup after it ends); errors are only logged. */
static void
fire(struct qmp_conn *conn, const char *command, struct json_object *args)
{
	char *cause = NULL;

	if (conn != NULL &&
	    qmp_execute(conn, command, args, VM_QUERY_TIMEOUT_MS, NULL, NULL, &cause) < 0)
		free(cause);
	json_object_put(args);
}

static struct json_object *
obj1(const char *key, const char *value)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, key, json_object_new_string(value));
	return o;
}

static struct json_object *
obj1_int(const char *key, int64_t value)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, key, json_object_new_int64(value));
	return o;
}

/* The outcome bk_end recorded reaches the job's record and its requester; the job ends. */
static void
bk_finish(struct bk *b)
{
	struct json_object *result = b->end_result;
	struct vm_job *job = b->job;

	b->end_result = NULL;
	/* The backup's entry rides on the job's end event: a waiting qvmctl needs nothing more. */
	if (job->rec != NULL && b->end_state == VM_JOBREC_DONE && result != NULL)
		job->rec->result = json_object_get(result);
	if (job->rec != NULL)
		vm_jobrec_end(b->vm, job->rec, b->end_state,
		              b->end_state == VM_JOBREC_DONE ? NULL : b->end_msg);
	if (b->end_code == PROTO_OK)
		vm_job_done(job, result, PROTO_OK, NULL);
	else /* the message is formatted before the job's data (b) goes */
		vm_job_done(job, result, b->end_code, "%s", b->end_msg);
}

/* Ends the job with its outcome (result and msg taken): at once, or, with a helper still running,
 * once it has ended cleanly, so that its bitmaps are on disk and the disks free again when the
 * requester hears of it. */
static void
bk_end(struct bk *b, enum vm_jobrec_state state, struct json_object *result, enum proto_err code,
       char *msg)
{
	if (b->ending) { /* a second outcome while the helper ends: the first one stands */
		json_object_put(result);
		free(msg);
		return;
	}
	b->ending = true;
	b->end_state = state;
	b->end_result = result;
	b->end_code = code;
	b->end_msg = msg;
	if (b->helper != NULL && vm_helper_qmp(b->helper) != NULL)
		vm_helper_stop(b->helper); /* bk_helper_exited finishes */
	else
		bk_finish(b);
}

/* A backup failed after its jobs were finalized: they had cleared the bitmaps, so what they
 * copied is in no backup now, and the next backup must be full. */
static void
chain_cleared(struct bk *b)
{
	char *why =
	    xasprintf("backup %s failed after its copy had cleared the dirty bitmaps", b->id);

	log_warn("vm %s: %s: the next backup is full", b->vm->name, why);
	bk_state_set(&b->st.last_id, NULL);
	bk_state_set(&b->st.last_dir, NULL);
	bk_state_set(&b->st.next_full, why);
	free(why);
}

/* The failed backup: what it left in QEMU goes (what cannot go yet is left to the next
 * backup's clean step), its files are removed, its manifest says why. */
static void bk_fail(struct bk *b, enum proto_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
bk_fail(struct bk *b, enum proto_err code, const char *fmt, ...)
{
	struct vm *vm = b->vm;
	char *msg, *cause = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	if (b->ending) {
		free(msg);
		return;
	}
	/* What is fired below is not waited for: the next backup asks what is left. */
	if (b->helper == NULL)
		vm->backup_clean = false;
	for (size_t i = 0; i < b->plan.ndisks; i++) {
		struct bk_disk *d = &b->plan.disks[i];
		char job[96];

		snprintf(job, sizeof job, BK_PREFIX "%s", d->id);
		if (d->started && !d->concluded)
			fire(bk_qmp(b), "job-cancel", obj1("id", job));
	}
	for (size_t i = 0; i < b->plan.ndisks; i++) {
		struct bk_disk *d = &b->plan.disks[i];
		char node[96];

		if (d->started && !d->concluded)
			continue; /* still in use: the next backup removes it */
		if (d->nodes) {
			snprintf(node, sizeof node, BK_PREFIX "%s", d->id);
			fire(bk_qmp(b), "blockdev-del", obj1("node-name", node));
		}
		if (d->set >= 0)
			fire(bk_qmp(b), "remove-fd", obj1_int("fdset-id", d->set));
	}
	if (b->dir != NULL) {
		bk_remove_files(b->dir);
		if (b->manifest != NULL) {
			json_object_object_add(b->manifest, "status",
			                       json_object_new_string("failed"));
			json_object_object_add(b->manifest, "error", json_object_new_string(msg));
			if (bk_manifest_write(b->dir, b->manifest, &cause) < 0) {
				bk_drop(vm, b->dir, cause);
				free(cause);
			}
		}
	}
	/* Recorded as running (running_record), or past job-finalize: the record says it ended. */
	if (b->finalized || (b->id[0] != '\0' && b->st.running_id != NULL &&
	                     strcmp(b->st.running_id, b->id) == 0)) {
		bk_state_set(&b->st.running_id, NULL);
		bk_state_set(&b->st.running_dir, NULL);
		b->st.running_copy = false;
		if (b->finalized)
			chain_cleared(b);
		state_save(b, b->finalized);
	}
	bk_end(b, b->cancelled ? VM_JOBREC_CANCELLED : VM_JOBREC_FAILED, NULL, code, msg);
}

/* ---- batches of QMP commands ---- */

static void
call_unlink(struct bk_call *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->b->calls = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
}

static void
call_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct bk_call *c = arg;
	struct bk *b = c->b;
	bk_reply_cb cb = c->cb;
	size_t disk = c->disk;

	call_unlink(c);
	free(c);
	if (r->status == QMP_DISCONNECTED || b->ending)
		return; /* the job ends with the QEMU, or has ended */
	b->pending--;
	if (cb != NULL)
		cb(b, r, disk);
	else if (r->status != QMP_OK && b->error == NULL)
		b->error =
		    xasprintf("%s: %s", r->command, r->error_desc ? r->error_desc : "failed");
	if (b->pending == 0)
		bk_advance(b);
}

/* Sends a command of the current batch (args taken); false when it could not be sent (the
 * backup has failed then). */
static bool
bk_send(struct bk *b, const char *command, struct json_object *args, int fd, bk_reply_cb cb,
        size_t disk)
{
	struct bk_call *c = xcalloc(1, sizeof *c);
	char *cause = NULL;

	c->b = b;
	c->cb = cb;
	c->disk = disk;
	if (vm_job_send(b->job, command, args, fd, BK_QMP_TIMEOUT_MS, call_done, c, &cause) < 0) {
		free(c);
		bk_fail(b, PROTO_ERR_NOT_RUNNING, "vm %s: backup: %s: %s", b->vm->name, command,
		        cause);
		free(cause);
		return false;
	}
	c->next = b->calls;
	if (b->calls != NULL)
		b->calls->prev = c;
	b->calls = c;
	b->pending++;
	return true;
}

/* ---- clean ---- */

static void
keep_result(struct bk *b, const struct qmp_reply *r, size_t which)
{
	struct json_object **slot = which == 0   ? &b->q_jobs
	                            : which == 1 ? &b->q_nodes
	                                         : &b->q_fdsets;

	if (r->status != QMP_OK) {
		if (b->error == NULL)
			b->error = xasprintf("%s: %s", r->command,
			                     r->error_desc ? r->error_desc : "failed");
		return;
	}
	*slot = json_object_get(r->result);
}

static void bk_pick_id(struct bk *b);

/*
 * The record names a backup as running although none is (this one was admitted alone, and a
 * restarted qvmd settles the backups it has job records of, bk_restore): one whose end could
 * not be recorded (backups.json could not be written), or one whose job record was never written
 * (a qvmd that died between the two). If its copy had started, its jobs may have cleared the
 * bitmaps: the next backup must be full. A directory of it that still says running is marked
 * failed and its files removed; one without a manifest (it died before writing it) goes.
 */
static void
stale_settle(struct bk *b)
{
	struct json_object *m;
	char *cause = NULL;

	if (b->st.running_id == NULL)
		return;
	log_warn("vm %s: backup %s had not ended in backups.json: settled now", b->vm->name,
	         b->st.running_id);
	if (b->st.running_copy && b->st.next_full == NULL) {
		char *why =
		    xasprintf("backup %s ended after its copy had started, and its end was not "
		              "recorded: its jobs may have cleared the dirty bitmaps",
		              b->st.running_id);

		bk_state_set(&b->st.next_full, why);
		free(why);
	}
	if (b->st.running_dir == NULL)
		return;
	if ((m = bk_manifest_read(b->st.running_dir)) == NULL) {
		bk_remove_files(b->st.running_dir);
		rmdir(b->st.running_dir);
		return;
	}
	if (strcmp(bk_jtext(m, "status"), "running") == 0) {
		bk_remove_files(b->st.running_dir);
		json_object_object_add(m, "status", json_object_new_string("failed"));
		json_object_object_add(
		    m, "error", json_object_new_string("interrupted before its end was recorded"));
		if (bk_manifest_write(b->st.running_dir, m, &cause) < 0) {
			log_error("vm %s: %s", b->vm->name, cause);
			free(cause);
		}
	}
	json_object_put(m);
}

/* The backup's id and directory are picked (a stopped VM's backup has them already) and
 * recorded as running, with its store, so that a qvmd that dies from here on finds them at its
 * restart (bk_restore); copying: the batch that starts its jobs goes next, in this loop turn. */
static void
running_record(struct bk *b, bool copying)
{
	stale_settle(b);
	b->st.running_copy = copying;
	if (b->id[0] == '\0')
		bk_pick_id(b);
	bk_state_add_store(&b->st, b->store);
	bk_state_set(&b->st.running_id, b->id);
	bk_state_set(&b->st.running_dir, b->dir);
	state_save(b, false);
}

/* The first batch: the block nodes, and what an earlier backup may have left in this QEMU. A
 * helper is new, and a QEMU whose last backup here ended with everything detached (a complete
 * backup) holds nothing of one, so only the nodes are asked for then. While QEMU answers, the
 * backup is recorded as running. */
static void
clean_query(struct bk *b)
{
	bool leftovers = b->helper == NULL && !b->vm->backup_clean;

	b->step = BK_CLEAN;
	if (leftovers && !bk_send(b, "query-jobs", NULL, -1, keep_result, 0))
		return;
	/* Not "flat": it only leaves out what qvmd does not read, and costs QEMU 28 bytes. */
	if (!bk_send(b, "query-named-block-nodes", NULL, -1, keep_result, 1) ||
	    (leftovers && !bk_send(b, "query-fdsets", NULL, -1, keep_result, 2)))
		return;
	running_record(b, false);
}

static bool
has_prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

static void
ignore_reply(struct bk *b, const struct qmp_reply *r, size_t disk)
{
	if (r->status != QMP_OK)
		log_warn("vm %s: backup: cleaning up: %s: %s", b->vm->name, r->command,
		         r->error_desc ? r->error_desc : "failed");
}

/* Removes what an interrupted backup left in QEMU. Returns false when the backup cannot start
 * (it has failed then). */
static bool
clean_send(struct bk *b)
{
	size_t n;

	n = b->q_jobs ? json_object_array_length(b->q_jobs) : 0;
	for (size_t i = 0; i < n; i++) {
		struct json_object *j = json_object_array_get_idx(b->q_jobs, i);
		const char *id = bk_jtext(j, "id"), *status = bk_jtext(j, "status");

		if (!has_prefix(id, BK_PREFIX))
			continue;
		if (strcmp(status, "concluded") != 0) {
			fire(bk_qmp(b), "job-cancel", obj1("id", id));
			bk_fail(b, PROTO_ERR_BUSY,
			        "vm %s: busy: the qemu job %s of an interrupted backup is still "
			        "ending (%s); try again in a moment",
			        b->vm->name, id, status);
			return false;
		}
		if (!bk_send(b, "job-dismiss", obj1("id", id), -1, ignore_reply, 0))
			return false;
	}
	n = b->q_nodes ? json_object_array_length(b->q_nodes) : 0;
	for (size_t i = 0; i < n; i++) {
		const char *node = bk_jtext(json_object_array_get_idx(b->q_nodes, i), "node-name");

		if (has_prefix(node, BK_PREFIX) &&
		    !bk_send(b, "blockdev-del", obj1("node-name", node), -1, ignore_reply, 0))
			return false;
	}
	n = b->q_fdsets ? json_object_array_length(b->q_fdsets) : 0;
	for (size_t i = 0; i < n; i++) {
		struct json_object *s = json_object_array_get_idx(b->q_fdsets, i), *fds, *id;
		bool ours = false;

		if (!json_object_object_get_ex(s, "fdset-id", &id))
			continue;
		/* in the range, or named "bk-*" as a qvmd before the range named them */
		ours = json_object_get_int64(id) >= BK_FDSET_BASE;
		if (ours && json_object_get_int64(id) >= b->vm->backup_fdset)
			b->vm->backup_fdset = json_object_get_int64(id) + 1;
		if (json_object_object_get_ex(s, "fds", &fds))
			for (size_t k = 0; k < json_object_array_length(fds); k++)
				ours |= has_prefix(
				    bk_jtext(json_object_array_get_idx(fds, k), "opaque"),
				    BK_PREFIX);
		if (ours &&
		    !bk_send(b, "remove-fd", obj1_int("fdset-id", json_object_get_int64(id)), -1,
		             ignore_reply, 0))
			return false;
	}
	return true;
}

/* ---- plan ---- */

/* What the plan is made from; the wanted disks point into the VM's devices or definition and
 * live until plan_in_free. A running VM's writable disks, not one being hot-plugged; a stopped
 * one's from the definition the backup began with. */
static void
plan_in(struct bk *b, struct bk_plan_in *in)
{
	size_t n = 0;

	*in = (struct bk_plan_in){
	    .vm = b->vm->name, .mode = b->mode, .st = &b->st, .store = b->store};
	if (b->cfg != NULL) {
		in->wanted = xcalloc(b->cfg->ndisks + 1, sizeof *in->wanted);
		for (size_t i = 0; i < b->cfg->ndisks; i++)
			if (!b->cfg->disks[i].readonly)
				in->wanted[n++] = b->cfg->disks[i].id;
	} else {
		in->wanted = xcalloc(b->vm->ndevs + 1, sizeof *in->wanted);
		for (size_t i = 0; i < b->vm->ndevs; i++) {
			const struct vm_dev *dev = b->vm->devs[i];

			if (dev->is_disk && !dev->attaching && !dev->disk.readonly)
				in->wanted[n++] = dev->id;
		}
	}
	in->nwanted = n;
}

static void
plan_in_free(struct bk_plan_in *in)
{
	free(in->wanted);
}

/* Plans from QEMU's block nodes (b->q_nodes), or the backup fails (false). */
static bool
plan(struct bk *b)
{
	struct bk_plan_in in;
	char *msg;

	plan_in(b, &in);
	bk_plan_disks(&b->plan, &in, b->q_nodes);
	msg = bk_plan_decide(&b->plan, &in);
	plan_in_free(&in);
	if (msg == NULL)
		return true;
	bk_fail(b, PROTO_ERR_INVALID, "%s", msg);
	free(msg);
	return false;
}

static struct json_object *
manifest_new(struct bk *b)
{
	struct json_object *m = json_object_new_object(), *disks = json_object_new_array();
	char created[32];

	created_text(clock_now_ms(), created, sizeof created);
	json_object_object_add(m, "format", json_object_new_int(1));
	json_object_object_add(m, "vm", json_object_new_string(b->vm->name));
	json_object_object_add(m, "id", json_object_new_string(b->id));
	json_object_object_add(
	    m, "type", json_object_new_string(b->plan.incremental ? "incremental" : "full"));
	json_object_object_add(m, "parent",
	                       b->plan.parent ? json_object_new_string(b->plan.parent) : NULL);
	json_object_object_add(m, "created", json_object_new_string(created));
	json_object_object_add(m, "status", json_object_new_string("running"));
	json_object_object_add(m, "reason",
	                       b->plan.reason ? json_object_new_string(b->plan.reason) : NULL);
	json_object_object_add(m, "definition",
	                       b->definition ? json_object_new_string(b->definition) : NULL);
	for (size_t i = 0; i < b->plan.ndisks; i++) {
		struct bk_disk *d = &b->plan.disks[i];
		struct json_object *o = json_object_new_object();
		char *file = xasprintf("%s.qcow2", d->id);

		json_object_object_add(o, "id", json_object_new_string(d->id));
		json_object_object_add(o, "file", json_object_new_string(file));
		json_object_object_add(o, "format",
		                       json_object_new_string(d->qcow2 ? "qcow2" : "raw"));
		json_object_object_add(o, "virtual_size", json_object_new_uint64(d->vsize));
		json_object_object_add(
		    o, "sync", json_object_new_string(d->incremental ? "incremental" : "full"));
		json_object_object_add(o, "backing",
		                       d->backing ? json_object_new_string(d->backing) : NULL);
		json_object_object_add(o, "bitmap",
		                       d->qcow2 ? json_object_new_string(BK_BITMAP) : NULL);
		json_object_array_add(disks, o);
		free(file);
	}
	json_object_object_add(m, "disks", disks);
	return m;
}

static struct json_object *
result_json(struct bk *b)
{
	struct json_object *e = bk_entry(b->manifest, b->dir);

	json_object_object_add(e, "vm", json_object_new_string(b->vm->name));
	json_object_object_add(e, "job",
	                       b->job->rec ? json_object_new_string(b->job->rec->id) : NULL);
	return e;
}

/* Picks the backup's id (its time, made unique in the store) and directory. */
static void
bk_pick_id(struct bk *b)
{
	int64_t now = clock_now_ms();

	for (;;) {
		bk_id_make(now, b->id);
		free(b->dir);
		b->dir = xasprintf("%s/%s", b->store, b->id);
		if (access(b->dir, F_OK) != 0)
			break;
		now++;
	}
}

/* Makes the store and the backup's directory (once), and names the disks' targets in it; false
 * when it cannot (failed then). */
static bool
dir_make(struct bk *b)
{
	if (!b->dir_made && mkdir(b->store, 0700) < 0 && errno != EEXIST) {
		bk_fail(b, PROTO_ERR_FAILED, "vm %s: backup: %s: %s", b->vm->name, b->store,
		        strerror(errno));
		return false;
	}
	if (!b->dir_made && mkdir(b->dir, 0700) < 0) {
		char *d = b->dir;

		b->dir = NULL; /* not ours: bk_fail leaves it alone */
		bk_fail(b, PROTO_ERR_FAILED, "vm %s: backup: %s: %s", b->vm->name, d,
		        strerror(errno));
		free(d);
		return false;
	}
	b->dir_made = true;
	for (size_t i = 0; i < b->plan.ndisks; i++)
		if (b->plan.disks[i].file == NULL)
			b->plan.disks[i].file =
			    xasprintf("%s/%s.qcow2", b->dir, b->plan.disks[i].id);
	return true;
}

/* The manifest, saying running, and the job's record; false when the manifest cannot be
 * written (failed then). */
static bool
manifest_start(struct bk *b)
{
	char *cause = NULL;

	json_object_put(b->manifest);
	b->manifest = manifest_new(b);
	if (bk_manifest_write(b->dir, b->manifest, &cause) < 0) {
		bk_fail(b, PROTO_ERR_FAILED, "vm %s: backup: %s", b->vm->name, cause);
		free(cause);
		return false;
	}
	if (b->job->rec == NULL)
		b->job->rec = vm_jobrec_new(b->vm, "backup", b->id, false);
	return true;
}

/* The plan is settled: the log says what it is, and --no-wait's reply goes. */
static void
plan_told(struct bk *b)
{
	log_info("vm %s: backup %s: %s%s%s", b->vm->name, b->id,
	         b->plan.incremental ? "incremental" : "full", b->plan.reason ? ": " : "",
	         b->plan.reason ? b->plan.reason : "");
	if (b->no_wait)
		vm_job_reply_early(b->job, result_json(b));
}

static bool copy_send(struct bk *b);

/* Plans from QEMU's block nodes, then sends the bitmap changes and the copy in one batch
 * (QEMU runs them in order); the manifest and the job's record are written while QEMU reads
 * it. */
static void
plan_send(struct bk *b)
{
	bool clear_last = false;

	if (!plan(b) || !dir_make(b))
		return;
	/* A bitmap made now counts from now: the last backup is no base for it. Recorded before
	 * the bitmap is made. */
	for (size_t i = 0; i < b->plan.ndisks; i++)
		clear_last |= b->plan.disks[i].qcow2 &&
		              (!b->plan.disks[i].bitmap || b->plan.disks[i].bitmap_bad);
	if (clear_last && !b->plan.incremental && b->st.last_id != NULL) {
		bk_state_set(&b->st.last_id, NULL);
		bk_state_set(&b->st.last_dir, NULL);
		state_save(b, false);
	}
	b->step = BK_COPY;
	for (size_t i = 0; i < b->plan.ndisks; i++) {
		struct bk_disk *d = &b->plan.disks[i];
		struct json_object *a;

		if (!d->qcow2)
			continue;
		if (d->bitmap_bad) {
			a = obj1("node", d->node);
			json_object_object_add(a, "name", json_object_new_string(BK_BITMAP));
			if (!bk_send(b, "block-dirty-bitmap-remove", a, -1, NULL, i))
				return;
		}
		if (!d->bitmap || d->bitmap_bad) {
			a = obj1("node", d->node);
			json_object_object_add(a, "name", json_object_new_string(BK_BITMAP));
			json_object_object_add(a, "persistent", json_object_new_boolean(true));
			if (!bk_send(b, "block-dirty-bitmap-add", a, -1, NULL, i))
				return;
		}
	}
	if (!copy_send(b))
		return;
	/* Recorded while QEMU reads the batch: the copy is under way. */
	if (!b->st.running_copy) {
		b->st.running_copy = true;
		state_save(b, false);
	}
	if (manifest_start(b))
		plan_told(b);
}

/* ---- files ----
 *
 * qvmd makes each target itself: an empty file it creates and formats as an empty qcow2 (an
 * incremental's with its parent's file as backing file, by relative name; qcow2_new.c, the
 * image qemu-img would make), and QEMU gets the read-write descriptor, never a name. No
 * qemu-img process and no blockdev-create job per disk: at QEMU's byte a turn, the create
 * alone cost an incremental more than its copy. The target is never synced by QEMU (no-flush);
 * qvmd fsyncs each file once the copy is over, before the manifest says complete.
 */

static void batch_error(struct bk *b, const struct qmp_reply *r, const char *disk);

/* Makes the target files; false when one cannot be made (the backup has failed then). */
static bool
files_make(struct bk *b)
{
	for (size_t i = 0; i < b->plan.ndisks; i++) {
		struct bk_disk *d = &b->plan.disks[i];
		char *cause = NULL;

		d->fd = open(d->file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (d->fd < 0) {
			bk_fail(b, PROTO_ERR_FAILED, "vm %s: backup %s: %s: %s", b->vm->name, b->id,
			        d->file, strerror(errno));
			return false;
		}
		if (qcow2_new(d->fd, d->vsize, d->backing, d->backing ? "qcow2" : NULL, &cause) <
		    0) {
			bk_fail(b, PROTO_ERR_FAILED, "vm %s: backup %s: disk %s: creating %s: %s",
			        b->vm->name, b->id, d->id, d->file, cause);
			free(cause);
			return false;
		}
	}
	return true;
}

/* Takes fdset ids for the targets, above every one taken before in this QEMU. */
static void
fdsets_take(struct bk *b)
{
	int64_t *next = b->helper != NULL ? &b->helper_fdset : &b->vm->backup_fdset;

	if (*next < BK_FDSET_BASE)
		*next = BK_FDSET_BASE;
	b->fdset0 = *next;
	*next += (int64_t)b->plan.ndisks;
}

/* The fdset QEMU gets disk i's target in. */
static int64_t
disk_fdset(const struct bk *b, size_t i)
{
	return b->fdset0 + (int64_t)i;
}

/* qvmd keeps its descriptor: the fsync that makes the file durable is on it. */
static void
fd_added(struct bk *b, const struct qmp_reply *r, size_t disk)
{
	if (r->status != QMP_OK)
		return batch_error(b, r, b->plan.disks[disk].id);
	b->plan.disks[disk].set = disk_fdset(b, disk);
}

/* ---- the copy ---- */

/* Records a failed command of a batch (the first error is the one reported). */
static void
batch_error(struct bk *b, const struct qmp_reply *r, const char *disk)
{
	if (b->error == NULL)
		b->error = xasprintf("%s%s%s: %s", disk ? "disk " : "", disk ? disk : "",
		                     disk ? ": " : "", r->error_desc ? r->error_desc : "failed");
}

static void
transaction_done(struct bk *b, const struct qmp_reply *r, size_t unused)
{
	if (r->status != QMP_OK)
		return batch_error(b, r, NULL);
	for (size_t i = 0; i < b->plan.ndisks; i++)
		b->plan.disks[i].started = true;
}

static void
node_added(struct bk *b, const struct qmp_reply *r, size_t disk)
{
	if (r->status != QMP_OK)
		return batch_error(b, r, b->plan.disks[disk].id);
	b->plan.disks[disk].nodes = true;
}

/* The fdset's own descriptor is closed; the node's copy lives as long as the node. */
static void
fd_removed(struct bk *b, const struct qmp_reply *r, size_t disk)
{
	if (r->status != QMP_OK)
		return batch_error(b, r, b->plan.disks[disk].id);
	b->plan.disks[disk].set = -1;
}

/* The qcow2 node on a disk's target, its file given inline (deleted with it). */
static bool
node_send(struct bk *b, size_t i)
{
	struct bk_disk *d = &b->plan.disks[i];
	struct json_object *a, *file, *cache;
	char node[96], path[64];

	snprintf(node, sizeof node, BK_PREFIX "%s", d->id);
	snprintf(path, sizeof path, "/dev/fdset/%" PRId64, disk_fdset(b, i));
	file = obj1("driver", "file");
	json_object_object_add(file, "filename", json_object_new_string(path));
	a = obj1("driver", "qcow2");
	json_object_object_add(a, "node-name", json_object_new_string(node));
	json_object_object_add(a, "file", file);
	/* inherited by the file: QEMU never syncs the target */
	cache = json_object_new_object();
	json_object_object_add(cache, "no-flush", json_object_new_boolean(true));
	json_object_object_add(a, "cache", cache);
	/* null: QEMU opens no backing file by name; a backup job never reads it */
	json_object_object_add(a, "backing", NULL);
	return bk_send(b, "blockdev-add", a, -1, node_added, i);
}

/* The fdsets removed once the copy has started (QEMU reads them while it copies): QEMU closes
 * its descriptor there and the node keeps its own. */
static bool
fdsets_send(struct bk *b)
{
	for (size_t i = 0; i < b->plan.ndisks; i++)
		if (!bk_send(b, "remove-fd", obj1_int("fdset-id", disk_fdset(b, i)), -1, fd_removed,
		             i))
			return false;
	return true;
}

/* The blockdev-backup arguments of a disk's job "bk-<disk>". */
static struct json_object *
backup_args(const struct bk_disk *d)
{
	struct json_object *a = json_object_new_object(), *perf;
	char job[96];

	snprintf(job, sizeof job, BK_PREFIX "%s", d->id);
	json_object_object_add(a, "job-id", json_object_new_string(job));
	json_object_object_add(a, "device", json_object_new_string(d->node));
	json_object_object_add(a, "target", json_object_new_string(job));
	json_object_object_add(a, "sync",
	                       json_object_new_string(d->incremental ? "incremental" : "full"));
	if (d->qcow2)
		json_object_object_add(a, "bitmap", json_object_new_string(BK_BITMAP));
	/* incremental implies on-success (and refuses any other mode) */
	if (d->qcow2 && !d->incremental)
		json_object_object_add(a, "bitmap-mode", json_object_new_string("on-success"));
	/* qvmd finalizes: until then a cancel or failure merges the bitmaps back. A concluded
	 * job goes by itself (auto-dismiss); what it did, its BLOCK_JOB_COMPLETED says. */
	json_object_object_add(a, "auto-finalize", json_object_new_boolean(false));
	/* Copy offload (copy_file_range between the descriptors): several times faster than
	 * QEMU's read and write loop here; QEMU falls back to that loop by itself where the
	 * kernel or file system cannot. */
	perf = json_object_new_object();
	json_object_object_add(perf, "use-copy-range", json_object_new_boolean(true));
	json_object_object_add(a, "x-perf", perf);
	return a;
}

/*
 * The targets made, one batch hands each to QEMU (add-fd into the disk's fdset), adds the node
 * on it, and starts the copy: a `transaction` of every disk's blockdev-backup, completion mode
 * grouped (one disk failing cancels them all), or one disk's blockdev-backup alone (which QEMU
 * runs as a transaction of that one action); then the fdsets go. QEMU runs a monitor's commands
 * in order, so a descriptor or node that failed makes the copy fail too, and its error, the
 * first, is the one reported. False when it could not be sent (the backup has failed then).
 */
static bool
copy_send(struct bk *b)
{
	struct json_object *args, *actions, *props;
	bool sent;

	b->step = BK_COPY;
	if (!files_make(b))
		return false;
	fdsets_take(b);
	for (size_t i = 0; i < b->plan.ndisks; i++)
		if (!bk_send(b, "add-fd", obj1_int("fdset-id", disk_fdset(b, i)),
		             b->plan.disks[i].fd, fd_added, i) ||
		    !node_send(b, i))
			return false;
	if (b->plan.ndisks == 1) {
		sent = bk_send(b, "blockdev-backup", backup_args(&b->plan.disks[0]), -1,
		               transaction_done, 0);
		goto started;
	}
	actions = json_object_new_array();
	for (size_t i = 0; i < b->plan.ndisks; i++) {
		struct json_object *a = json_object_new_object();

		json_object_object_add(a, "type", json_object_new_string("blockdev-backup"));
		json_object_object_add(a, "data", backup_args(&b->plan.disks[i]));
		json_object_array_add(actions, a);
	}
	args = json_object_new_object();
	json_object_object_add(args, "actions", actions);
	props = json_object_new_object();
	json_object_object_add(props, "completion-mode", json_object_new_string("grouped"));
	json_object_object_add(args, "properties", props);
	sent = bk_send(b, "transaction", args, -1, transaction_done, 0);
started:
	if (!sent || !fdsets_send(b))
		return false;
	vm_job_arm(b->job, BK_POLL_MS);
	return true;
}

static struct bk_disk *
disk_of_job(struct bk *b, const char *job)
{
	if (!has_prefix(job, BK_PREFIX))
		return NULL;
	for (size_t i = 0; i < b->plan.ndisks; i++)
		if (strcmp(b->plan.disks[i].id, job + strlen(BK_PREFIX)) == 0)
			return &b->plan.disks[i];
	return NULL;
}

static bool
all_concluded(struct bk *b)
{
	for (size_t i = 0; i < b->plan.ndisks; i++)
		if (!b->plan.disks[i].concluded)
			return false;
	return true;
}

static void
node_deleted(struct bk *b, const struct qmp_reply *r, size_t disk)
{
	if (r->status != QMP_OK)
		return batch_error(b, r, b->plan.disks[disk].id);
	b->plan.disks[disk].nodes = false;
}

/* Sends the blockdev-del of each target node still in QEMU; false when one could not be sent (the
 * backup has failed then). */
static bool
nodes_del_send(struct bk *b)
{
	for (size_t i = 0; i < b->plan.ndisks; i++) {
		char name[96];

		snprintf(name, sizeof name, BK_PREFIX "%s", b->plan.disks[i].id);
		if (b->plan.disks[i].nodes &&
		    !bk_send(b, "blockdev-del", obj1("node-name", name), -1, node_deleted, i))
			return false;
	}
	return true;
}

/* Detaches every target, its job concluded (and gone): the nodes deleted, which writes their
 * last qcow2 metadata and closes QEMU's descriptors. A job that concluded unfinalized (failed
 * or cancelled) ends the copy this way too; its error came with its BLOCK_JOB_COMPLETED. */
static void
end_send(struct bk *b)
{
	b->step = BK_END;
	b->next = 0; /* the disk being hashed, once every target is detached */
	nodes_del_send(b);
}

/* Every job pending (copied): in one batch, the group finalized (the bitmaps cleared; each job
 * concludes within the command and is dismissed, its BLOCK_JOB_COMPLETED, with an error if it
 * failed, before the reply) and the targets detached. Only a complete backup may leave the
 * bitmaps cleared: backups.json has said since the copy started that it may (running_copy),
 * for a qvmd that dies from here on. */
static void
finalize_send(struct bk *b)
{
	char id[96];

	b->finalized = true;
	snprintf(id, sizeof id, BK_PREFIX "%s", b->plan.disks[0].id);
	if (bk_send(b, "job-finalize", obj1("id", id), -1, NULL, 0))
		end_send(b);
}

/* A disk's target holds every cluster of the copy (only the qcow2 metadata QEMU caches is still
 * to come, when the node is deleted): its data starts going to disk now, in the background,
 * while the jobs are finalized and the targets detached, so that the fsync before the manifest
 * says complete finds little left to write. The background sync has a descriptor of its own:
 * a write-back error is reported once to each open file that existed when it happened, so the
 * error this sync takes (and ignores) is still there for the fsync on the creating descriptor. */
static void
disk_sync(struct bk *b, struct bk_disk *d)
{
	int fd;

	if ((fd = open(d->file, O_RDONLY | O_CLOEXEC)) < 0 ||
	    bgsync_start(b->vm->env.bgsync, fd) < 0)
		log_debug("vm %s: backup %s: disk %s: no background sync: %s", b->vm->name, b->id,
		          d->id, strerror(errno));
}

static void copy_next(struct bk *b);
static void retreat(struct bk *b);

/* A disk's job is pending (copied): its data starts going to disk first, as what takes longest
 * from here on is making it durable (the group's finalize, when it is the last, has time: it is
 * done long before the data is on disk). */
static void
disk_copied(struct bk *b, struct bk_disk *d)
{
	if (d->waiting)
		return;
	d->waiting = true;
	disk_sync(b, d);
	copy_next(b);
}

static bool
all_waiting(struct bk *b)
{
	for (size_t i = 0; i < b->plan.ndisks; i++)
		if (!b->plan.disks[i].waiting && !b->plan.disks[i].concluded)
			return false;
	return true;
}

/*
 * The copy's next step, once its batch is answered: every job pending (copied, in one group) is
 * finalized, which clears the bitmaps; every job concluded before that (failed or cancelled: a
 * failed job goes straight to concluded, its bitmap merged back) ends the copy. Up to
 * job-finalize nothing is lost whatever happens; from it on the backup must complete or make
 * the next one full (bk_fail); for a qvmd that dies in between, backups.json has said since
 * the copy started that it may (running_copy, settled by bk_restore).
 */
static void
copy_next(struct bk *b)
{
	if (b->pending > 0 || b->step != BK_COPY)
		return;
	if (all_concluded(b))
		return end_send(b);
	if (b->cancelled || b->guessed || b->retreat || !all_waiting(b))
		return;
	finalize_send(b);
}

/* A disk's BLOCK_JOB_COMPLETED: the bytes it copied, and whether it failed. */
static void
disk_completed(struct bk *b, struct bk_disk *d, struct json_object *data)
{
	struct json_object *v;

	if (json_object_object_get_ex(data, "offset", &v))
		d->cur = (uint64_t)json_object_get_int64(v);
	if (!json_object_object_get_ex(data, "error", &v)) {
		d->completed = true;
		return;
	}
	if (b->error == NULL)
		b->error = xasprintf("disk %s: %s", d->id, json_object_get_string(v));
}

static void
bk_event(struct vm_job *job, const char *name, struct json_object *data)
{
	struct bk *b = job->data;
	struct bk_disk *d;

	if (b->ending || (b->step != BK_COPY && b->step != BK_RETREAT && b->step != BK_END))
		return;
	/* Undoing a wrong guess: only the end of its jobs matters. */
	if (b->step == BK_RETREAT) {
		if (strcmp(name, "JOB_STATUS_CHANGE") == 0 &&
		    strcmp(bk_jtext(data, "status"), "concluded") == 0 &&
		    (d = disk_of_job(b, bk_jtext(data, "id"))) != NULL) {
			d->concluded = true;
			retreat(b);
		}
		return;
	}
	if (strcmp(name, "BLOCK_JOB_COMPLETED") == 0) {
		if ((d = disk_of_job(b, bk_jtext(data, "device"))) != NULL)
			disk_completed(b, d, data);
		return;
	}
	if (strcmp(name, "BLOCK_JOB_CANCELLED") == 0) {
		if ((d = disk_of_job(b, bk_jtext(data, "device"))) != NULL && b->error == NULL)
			b->error = xasprintf("disk %s: its copy was cancelled", d->id);
		return;
	}
	if (strcmp(name, "JOB_STATUS_CHANGE") != 0 ||
	    (d = disk_of_job(b, bk_jtext(data, "id"))) == NULL)
		return;
	if (strcmp(bk_jtext(data, "status"), "pending") == 0)
		return disk_copied(b, d);
	if (strcmp(bk_jtext(data, "status"), "concluded") == 0) {
		d->concluded = true;
		copy_next(b);
	}
}

static void
poll_done(struct bk *b, const struct qmp_reply *r, size_t unused)
{
	uint64_t cur = 0, total = 0;

	b->polling = false;
	if (r->status != QMP_OK || b->step != BK_COPY)
		return;
	for (size_t i = 0; i < json_object_array_length(r->result); i++) {
		struct json_object *j = json_object_array_get_idx(r->result, i), *v;
		struct bk_disk *d = disk_of_job(b, bk_jtext(j, "id"));

		if (d == NULL)
			continue;
		if (json_object_object_get_ex(j, "current-progress", &v))
			d->cur = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(j, "total-progress", &v))
			d->total = (uint64_t)json_object_get_int64(v);
		if (strcmp(bk_jtext(j, "status"), "pending") == 0)
			disk_copied(b, d); /* an event missed */
		if (strcmp(bk_jtext(j, "status"), "concluded") == 0)
			d->concluded = true;
	}
	for (size_t i = 0; i < b->plan.ndisks; i++) {
		cur += b->plan.disks[i].cur;
		total += b->plan.disks[i].total;
	}
	if (b->job->rec != NULL && total > 0 &&
	    (cur != b->job->rec->cur || total != b->job->rec->total)) {
		b->job->rec->cur = cur;
		b->job->rec->total = total;
		bk_publish(b->vm, b->job->rec);
	}
}

/* ---- checksums ---- */

/* What descriptor i of bk_complete's first round of fsyncs is (for its error). */
static const char *
synced_name(const struct bk *b, size_t i)
{
	if (i < b->plan.ndisks)
		return b->plan.disks[i].file;
	return i == b->plan.ndisks ? b->dir : "manifest.json.tmp";
}

/*
 * Every file is hashed: the manifest says complete once they are durable. Two rounds of fsyncs,
 * each run side by side (bgsync_all: one journal commit and device flush where the file system
 * allows, instead of one per file):
 *  1. every target's data, through the descriptor qvmd created it with (opened before anything
 *     was written: a write-back error since is reported to it, whoever else saw it first), the
 *     backup's directory (the targets' entries), and the temporaries of the new manifest and
 *     state;
 *  2. once both are renamed into place: the backup's directory and the state's.
 * The renames of round 2 may reach the disk in either order: a state naming a backup whose
 * manifest is not complete makes the next backup full (vm_backup_plan.c), and a complete manifest
 * with an older state means QEMU died with the power, and its bitmaps' consistency with it (the
 * next backup is full again).
 */
static void
bk_complete(struct bk *b)
{
	struct json_object *disks;
	struct bk_staged *man = NULL, *st = NULL;
	char *cause = NULL, *path = state_path(b->vm), *sdir = vm_state_path(b->vm, "");
	size_t n = 0;
	int *fds = xcalloc(b->plan.ndisks + 3, sizeof *fds),
	    *errs = xcalloc(b->plan.ndisks + 3, sizeof *errs);
	int dirs[2] = {-1, -1}, derrs[2];

	for (size_t i = 0; cause == NULL && i < b->plan.ndisks; i++)
		if (b->plan.disks[i].checksum == NULL)
			cause = xasprintf("disk %s was not hashed", b->plan.disks[i].id);
	if (cause != NULL)
		goto end;
	json_object_object_get_ex(b->manifest, "disks", &disks);
	for (size_t i = 0; i < b->plan.ndisks; i++) {
		struct json_object *o = json_object_array_get_idx(disks, i);
		struct stat sb;

		json_object_object_add(o, "checksum",
		                       json_object_new_string(b->plan.disks[i].checksum));
		json_object_object_add(o, "size",
		                       json_object_new_uint64(fstat(b->plan.disks[i].fd, &sb) == 0
		                                                  ? (uint64_t)sb.st_size
		                                                  : 0));
		json_object_object_add(o, "bytes_written",
		                       json_object_new_uint64(b->plan.disks[i].cur));
	}
	json_object_object_add(b->manifest, "status", json_object_new_string("complete"));
	/* From here on a failure goes through bk_fail, which records the chain as cleared. */
	bk_state_set(&b->st.last_id, b->id);
	bk_state_set(&b->st.last_dir, b->dir);
	bk_state_set(&b->st.running_id, NULL);
	bk_state_set(&b->st.running_dir, NULL);
	b->st.running_copy = false;
	bk_state_set(&b->st.next_full, NULL);
	if ((man = bk_manifest_stage(b->dir, b->manifest, &cause)) == NULL ||
	    (st = bk_state_stage(&b->st, path, &cause)) == NULL)
		goto end;
	if ((dirs[0] = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (dirs[1] = open(sdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		cause = xasprintf("%s: %s", dirs[0] < 0 ? b->dir : sdir, strerror(errno));
		goto end;
	}
	for (size_t i = 0; i < b->plan.ndisks; i++)
		fds[n++] = b->plan.disks[i].fd;
	fds[n++] = dirs[0];
	fds[n++] = bk_stage_fd(man);
	fds[n++] = bk_stage_fd(st);
	bgsync_all(b->vm->env.bgsync, fds, n, errs);
	for (size_t i = 0; cause == NULL && i < n - 1; i++)
		if (errs[i] != 0)
			cause = xasprintf("%s: fsync: %s", synced_name(b, i), strerror(errs[i]));
	if (cause != NULL)
		goto end;
	if (bk_stage_put(man, &cause) < 0) {
		man = NULL; /* dropped by bk_stage_put */
		goto end;
	}
	man = NULL;
	/* The state's temporary was synced beside them: if it failed, or cannot be put in place,
	 * the old state stays, naming this backup as running with its copy started (the next
	 * backup is full: stale_settle). */
	if (errs[n - 1] != 0) {
		log_error("vm %s: backup %s: %s: fsync: %s", b->vm->name, b->id, path,
		          strerror(errs[n - 1]));
		bk_stage_drop(st);
	} else if (bk_stage_put(st, &cause) < 0) {
		log_error("vm %s: backup %s: %s", b->vm->name, b->id, cause);
		free(cause);
		cause = NULL;
	}
	st = NULL;
	bgsync_all(b->vm->env.bgsync, dirs, 2, derrs);
	if (derrs[0] != 0)
		cause = xasprintf("%s: fsync: %s", b->dir, strerror(derrs[0]));
	else if (derrs[1] != 0)
		log_error("vm %s: backup %s: %s: fsync: %s", b->vm->name, b->id, sdir,
		          strerror(derrs[1]));
end: /* failed when cause is set */
	bk_stage_drop(man);
	bk_stage_drop(st);
	for (size_t i = 0; i < 2; i++)
		if (dirs[i] >= 0)
			close(dirs[i]);
	free(fds);
	free(errs);
	free(path);
	free(sdir);
	if (cause != NULL) {
		bk_fail(b, PROTO_ERR_FAILED, "vm %s: backup %s: %s", b->vm->name, b->id, cause);
		free(cause);
		return;
	}
	/* A complete backup after a restore in place: the old disk files are not needed now. */
	bk_pre_restore_clear(b->vm);
	/* Every job dismissed, every node deleted, every fdset removed: nothing left to clean. */
	if (b->helper == NULL)
		b->vm->backup_clean = true;
	bk_end(b, VM_JOBREC_DONE, result_json(b), PROTO_OK, NULL);
}

/* Hashes a slice of the current file; the job's timer brings the next. */
static void
hash_step(struct bk *b)
{
	char *cause = NULL, *hex = NULL;
	int rc;

	for (;;) {
		struct bk_disk *d;

		if (b->next >= b->plan.ndisks)
			return bk_complete(b);
		d = &b->plan.disks[b->next];
		if (b->hash == NULL && (b->hash = bk_hash_open(d->file, &cause)) == NULL)
			break;
		if ((rc = bk_hash_step(b->hash, BK_HASH_SLICE, &hex, &cause)) < 0)
			break;
		if (rc == 0) {
			vm_job_arm(b->job, 0);
			return;
		}
		d->checksum = hex;
		bk_hash_free(b->hash);
		b->hash = NULL;
		b->next++;
	}
	bk_fail(b, PROTO_ERR_FAILED, "vm %s: backup %s: %s", b->vm->name, b->id, cause);
	free(cause);
}

static void
bk_timer(struct vm_job *job)
{
	struct bk *b = job->data;

	if (b->ending)
		return;
	/* The copy's poll may still fire while the targets are detached: the hashing starts only
	 * once they are (bk_advance). */
	if (b->step == BK_END) {
		if (b->pending == 0)
			hash_step(b);
		return;
	}
	if (b->step != BK_COPY)
		return;
	if (!b->polling && b->pending == 0) {
		b->polling = true;
		if (!bk_send(b, "query-jobs", NULL, -1, poll_done, 0))
			return;
	}
	vm_job_arm(job, BK_POLL_MS);
}

/*
 * ---- the next incremental, guessed ----
 *
 * Most backups are the next incremental of a chain, on a QEMU whose last backup here
 * completed: their plan is the last backup's manifest (the same disks, each incremental on its
 * file there) unless something changed behind qvmd's back (a bitmap removed, disabled or left
 * inconsistent, a disk resized or added). Such a backup does not wait for QEMU's block nodes
 * before it starts: one batch asks for them and starts the copy as guessed, and QEMU's answer,
 * the first reply, is checked against the guess long before the copy can be finalized. A wrong
 * guess loses nothing: nothing is finalized before the check, so the jobs it started are
 * cancelled (which merges their bitmaps back), their targets go, and the backup is planned
 * from the answer as any other (retreat).
 */

/* Plans the backup as if nothing changed since the last backup; true when that is an
 * incremental (b planned), else false (nothing planned). Only on a QEMU whose last backup here
 * completed: it holds nothing of an earlier one. */
static bool
guess(struct bk *b)
{
	struct bk_plan_in in;
	bool ok;

	if (b->helper != NULL || !b->vm->backup_clean || b->mode == VM_BACKUP_FULL ||
	    b->st.running_id != NULL)
		return false;
	plan_in(b, &in);
	ok = bk_plan_guess(&b->plan, &in);
	plan_in_free(&in);
	return ok;
}

/* QEMU's block nodes, the batch's first reply: the backup is planned from them as any other;
 * the same plan confirms the guess, another one undoes it once the batch is answered. */
static void
guess_check(struct bk *b, const struct qmp_reply *r, size_t unused)
{
	struct bk_plan real = {0};
	struct bk_plan_in in;
	char *why;
	bool same;

	keep_result(b, r, 1);
	if (r->status != QMP_OK)
		return; /* the backup fails with the batch */
	b->guessed = false;
	plan_in(b, &in);
	bk_plan_disks(&real, &in, b->q_nodes);
	why = bk_plan_decide(&real, &in);
	plan_in_free(&in);
	same = why == NULL && bk_plan_same(&real, &b->plan);
	if (!same && why == NULL)
		why = xstrdup(real.reason ? real.reason : "its disks differ");
	bk_plan_free(&real);
	if (same)
		return plan_told(b);
	log_info("vm %s: backup %s: not as at the last backup (%s): planned anew", b->vm->name,
	         b->id, why);
	free(why);
	b->retreat = true;
}

/* Starts the guessed incremental: one batch asks for the block nodes and starts the copy;
 * while QEMU reads it, the backup is recorded as running, and its manifest written. */
static void
guess_send(struct bk *b)
{
	b->step = BK_COPY;
	b->guessed = true;
	if (!bk_send(b, "query-named-block-nodes", NULL, -1, guess_check, 0))
		return;
	running_record(b, true);
	if (dir_make(b) && copy_send(b))
		manifest_start(b);
}

/*
 * Undoes a wrong guess, one step a call (each batch answered or event seen calls again): the
 * guessed jobs cancelled (their bitmaps merged back) and waited for, their nodes deleted and
 * fdsets removed, the targets closed and removed; then the backup is planned from QEMU's
 * answer, in the same directory, under the same record.
 */
static void
retreat(struct bk *b)
{
	bool busy = false;

	b->step = BK_RETREAT;
	if (b->pending > 0)
		return;
	for (size_t i = 0; i < b->plan.ndisks; i++) {
		struct bk_disk *d = &b->plan.disks[i];
		char job[96];

		if (!d->started || d->concluded)
			continue;
		busy = true;
		snprintf(job, sizeof job, BK_PREFIX "%s", d->id);
		if (!d->cancelling &&
		    !bk_send(b, "job-cancel", obj1("id", job), -1, ignore_reply, i))
			return;
		d->cancelling = true;
	}
	if (busy)
		return; /* until every job has concluded */
	if (!nodes_del_send(b))
		return;
	for (size_t i = 0; i < b->plan.ndisks; i++)
		if (b->plan.disks[i].set >= 0 &&
		    !bk_send(b, "remove-fd", obj1_int("fdset-id", b->plan.disks[i].set), -1,
		             fd_removed, i))
			return;
	if (b->pending > 0)
		return;
	if (b->error != NULL) {
		char *e = b->error;

		b->error = NULL;
		bk_fail(b, PROTO_ERR_QEMU, "vm %s: backup %s: undoing its start: %s", b->vm->name,
		        b->id, e);
		free(e);
		return;
	}
	for (size_t i = 0; i < b->plan.ndisks; i++)
		if (b->plan.disks[i].file != NULL)
			unlink(b->plan.disks[i].file);
	bk_plan_free(&b->plan);
	b->retreat = false;
	b->step = BK_PLAN;
	plan_send(b);
}

/* The current batch is answered: the next step. */
static void
bk_advance(struct bk *b)
{
	if (b->error != NULL && b->step != BK_COPY && b->step != BK_RETREAT && b->step != BK_END) {
		char *e = b->error;

		b->error = NULL;
		bk_fail(b, PROTO_ERR_QEMU, "vm %s: backup%s%s: %s", b->vm->name,
		        b->id[0] ? " " : "", b->id, e);
		free(e);
		return;
	}
	switch (b->step) {
	case BK_CLEAN:
		b->step = BK_PLAN;
		if (clean_send(b) && b->pending == 0)
			plan_send(b);
		return;
	case BK_PLAN:
		return plan_send(b);
	case BK_COPY:
		/* A wrong guess: its errors were the guess's. */
		if (b->retreat && !b->cancelled) {
			free(b->error);
			b->error = NULL;
			return retreat(b);
		}
		/* A target not made, or the transaction refused: bk_fail cancels a job that
		 * started. */
		if (b->error != NULL) {
			char *e = b->error;

			b->error = NULL;
			bk_fail(b, PROTO_ERR_QEMU, "vm %s: backup %s: %s", b->vm->name, b->id, e);
			free(e);
			return;
		}
		copy_next(b);
		return;
	case BK_RETREAT:
		return retreat(b);
	case BK_END:
		if (b->error != NULL) {
			char *e = b->error;

			b->error = NULL;
			bk_fail(b, b->cancelled ? PROTO_ERR_FAILED : PROTO_ERR_QEMU,
			        "vm %s: backup %s: %s", b->vm->name, b->id,
			        b->cancelled ? "cancelled" : e);
			free(e);
			return;
		}
		for (size_t i = 0; i < b->plan.ndisks; i++)
			if (!b->plan.disks[i].completed)
				return bk_fail(b, PROTO_ERR_QEMU,
				               "vm %s: backup %s: disk %s: qemu did not report its "
				               "copy complete",
				               b->vm->name, b->id, b->plan.disks[i].id);
		/* Every target is whole and detached: what is left (hashing, fsyncs, the manifest)
		 * needs no QEMU. A VM that stops or crashes now (a guest shutting down, a kill), or
		 * a helper that dies, leaves a backup that completes; a restart waits for it. */
		b->detached = true;
		if (b->helper == NULL)
			b->job->outlives_qemu = true;
		b->next = 0;
		return hash_step(b);
	}
}

/* ---- the job kind ---- */

static char *
bk_cancel(struct vm_job *job, const char *why)
{
	struct bk *b = job->data;
	bool running = false;

	if (b->ending)
		return NULL;
	/* Finalized, the copy is over and the bitmaps are cleared: stopping now would only make
	 * the next backup full. It completes. */
	if (b->finalized)
		return xasprintf("backup %s has copied everything and is being completed", b->id);
	b->cancelled = true;
	for (size_t i = 0; i < b->plan.ndisks; i++)
		running |= b->plan.disks[i].started && !b->plan.disks[i].concluded;
	if (b->step == BK_COPY && running) {
		/* The jobs end cancelled, their bitmaps merged back; the end is the usual one. */
		for (size_t i = 0; i < b->plan.ndisks; i++) {
			char id[96];

			snprintf(id, sizeof id, BK_PREFIX "%s", b->plan.disks[i].id);
			if (b->plan.disks[i].started && !b->plan.disks[i].concluded &&
			    !bk_send(b, "job-cancel", obj1("id", id), -1, ignore_reply, i))
				return NULL;
		}
		return NULL;
	}
	bk_fail(b, PROTO_ERR_FAILED, "vm %s: backup: %s", b->vm->name, why);
	return NULL;
}

static bool
bk_qemu_gone(struct vm_job *job, const struct vm_exit *exit)
{
	struct bk *b = job->data;
	char *cause = NULL;

	if (b->dir == NULL)
		return false;
	bk_remove_files(b->dir);
	if (b->manifest != NULL) {
		char *why = xasprintf("qemu %s during the backup", exit->reason);

		json_object_object_add(b->manifest, "status", json_object_new_string("failed"));
		json_object_object_add(b->manifest, "error", json_object_new_string(why));
		if (bk_manifest_write(b->dir, b->manifest, &cause) < 0) {
			bk_drop(b->vm, b->dir, cause);
			free(cause);
		}
		if (job->rec != NULL)
			vm_jobrec_end(b->vm, job->rec, VM_JOBREC_FAILED, why);
		free(why);
	}
	bk_state_set(&b->st.running_id, NULL);
	bk_state_set(&b->st.running_dir, NULL);
	b->st.running_copy = false;
	if (b->finalized)
		chain_cleared(b);
	state_save(b, b->finalized);
	return false;
}

/* After a restart of qvmd, what the interrupted backup's QEMU jobs did to the dirty bitmaps:
 * a job still running is cancelled and one that failed has merged its bitmap back (the changes
 * it froze are counted again); one that succeeded, or is gone (dismissed once the copy was
 * over), has cleared its bitmap, so the last complete backup is no base for an incremental any
 * more, and the next backup must be full. */
struct bk_settle {
	struct vm *vm;
	char *id;
	bool copied; /* the jobs had been started (backups.json running_copy) */
};

/* The interrupted backup's jobs succeeded, or are gone: the last complete backup is no base any
 * more. */
static void
settle_cleared(struct vm *vm, const char *id)
{
	char *path = state_path(vm), *why, *cause = NULL;
	struct bk_state st;

	why =
	    xasprintf("backup %s was interrupted by a restart of qvmd after its copy had started, "
	              "and its jobs may have cleared the dirty bitmaps",
	              id);
	log_warn("vm %s: %s: the next backup is full", vm->name, why);
	bk_state_load(&st, path);
	bk_state_set(&st.last_id, NULL);
	bk_state_set(&st.last_dir, NULL);
	bk_state_set(&st.next_full, why);
	if (bk_state_save(&st, path, true, &cause) < 0) {
		log_error("vm %s: %s", vm->name, cause);
		free(cause);
	}
	bk_state_free(&st);
	free(why);
	free(path);
}

static void
restore_settle_jobs(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct bk_settle *s = arg;
	bool seen = false, succeeded = false;
	struct json_object *v;

	if (r->status == QMP_OK) {
		for (size_t i = 0; i < json_object_array_length(r->result); i++) {
			struct json_object *j = json_object_array_get_idx(r->result, i);
			const char *id = bk_jtext(j, "id");

			if (!has_prefix(id, BK_PREFIX))
				continue;
			seen = true;
			if (strcmp(bk_jtext(j, "status"), "concluded") != 0)
				fire(conn, "job-cancel", obj1("id", id));
			else if (!json_object_object_get_ex(j, "error", &v))
				succeeded = true;
		}
		/* Gone after they were started: dismissed once the copy was over (or once it
		 * failed: a full backup next is never wrong). */
		if (succeeded || (!seen && s->copied))
			settle_cleared(s->vm, s->id);
	}
	free(s->id);
	free(s);
}

static const struct vm_job_kind bk_offline_kind;

/* After a restart of qvmd, a backup that was running: it failed. On a running VM its QEMU jobs
 * are cancelled, which merges their bitmaps back (the next backup removes what they leave); a
 * stopped VM's helper is killed, which leaves its bitmaps inconsistent (the next backup is full
 * and says why). */
static void
bk_restore(struct vm *vm, struct vm_jobrec *rec, bool running, const char *error)
{
	char *path = state_path(vm), *cause = NULL;
	struct bk_settle *settle = NULL;
	struct bk_state st;
	bool killed = false;

	/* A helper killed now leaves its bitmaps marked in use: the next backup is full by itself,
	 * saying they are inconsistent. */
	if (vm_job_find(vm, &bk_offline_kind) == NULL)
		killed = vm_helper_kill_leftover(vm) > 0;

	bk_state_load(&st, path);
	if (st.running_dir != NULL && rec->target != NULL && st.running_id != NULL &&
	    strcmp(st.running_id, rec->target) == 0) {
		struct json_object *m = bk_manifest_read(st.running_dir);

		bk_remove_files(st.running_dir);
		if (m == NULL)
			rmdir(st.running_dir); /* it died before its manifest: never a backup */
		if (m != NULL) {
			json_object_object_add(m, "status", json_object_new_string("failed"));
			json_object_object_add(
			    m, "error",
			    json_object_new_string(error ? error
			                                 : "interrupted by a restart of qvmd"));
			if (bk_manifest_write(st.running_dir, m, &cause) < 0) {
				log_error("vm %s: %s", vm->name, cause);
				free(cause);
				cause = NULL;
			}
			json_object_put(m);
		}
		settle = xcalloc(1, sizeof *settle);
		settle->vm = vm;
		settle->id = xstrdup(st.running_id);
		settle->copied = st.running_copy;
		bk_state_set(&st.running_id, NULL);
		bk_state_set(&st.running_dir, NULL);
		st.running_copy = false;
		if (bk_state_save(&st, path, true, &cause) < 0) {
			log_error("vm %s: %s", vm->name, cause);
			free(cause);
			cause = NULL;
		}
	} else if (rec->target != NULL && st.last_id != NULL &&
	           strcmp(st.last_id, rec->target) == 0) {
		/* It had completed; only its helper's end was interrupted. */
		vm_jobrec_end(vm, rec, VM_JOBREC_DONE, NULL);
	}
	if (settle == NULL) {
		settle = xcalloc(1, sizeof *settle);
		settle->vm = vm;
		settle->id = xstrdup(rec->target != NULL ? rec->target : rec->id);
	}
	if (vm->qmp != NULL && !vm->qmp_closed &&
	    qmp_execute(vm->qmp, "query-jobs", NULL, VM_QUERY_TIMEOUT_MS, restore_settle_jobs,
	                settle, &cause) >= 0) {
		settle = NULL;
	} else if (settle->copied && !killed) {
		/* No QEMU to ask (a stopped VM's helper ended by itself): its jobs may have
		 * succeeded, and saved their cleared bitmaps. */
		settle_cleared(vm, settle->id);
	}
	if (settle != NULL) {
		free(settle->id);
		free(settle);
	}
	free(cause);
	bk_state_free(&st);
	free(path);
}

/* Events of the helper's QMP, as the VM's come to a running VM's job. */
static void
bk_helper_event(struct vm_helper *h, const char *name, struct json_object *data, void *arg)
{
	struct bk *b = arg;

	bk_event(b->job, name, data);
}

static void
bk_helper_ready(struct vm_helper *h, void *arg)
{
	clean_query(arg);
}

/* The helper is gone: the end bk_end was waiting for, or a failure of the backup. */
static void
bk_helper_exited(struct vm_helper *h, bool clean, const char *why, void *arg)
{
	struct bk *b = arg;

	b->job->qmp = NULL;
	if (b->ending) {
		if (!clean)
			log_warn("vm %s: backup: %s; the bitmaps of its disks may be left "
			         "inconsistent (the next backup would then be full)",
			         b->vm->name, why);
		bk_finish(b);
		return;
	}
	if (b->detached) {
		log_warn(
		    "vm %s: backup %s: %s after the copy; the backup completes without it (the "
		    "bitmaps of the disks may be left inconsistent: the next backup would then "
		    "be full)",
		    b->vm->name, b->id, why);
		return;
	}
	bk_fail(b, PROTO_ERR_FAILED, "vm %s: backup%s%s: %s", b->vm->name, b->id[0] ? " " : "",
	        b->id, why);
}

static const struct vm_helper_cbs bk_helper_cbs = {
    .ready = bk_helper_ready,
    .event = bk_helper_event,
    .exited = bk_helper_exited,
};

/* A running VM's backup allows what leaves its disks' nodes alone; a powerdown or kill cancels
 * it first. */
#define BK_ALLOWS                                                                                  \
	(VM_OP_BIT(VM_OP_PAUSE) | VM_OP_BIT(VM_OP_RESUME) | VM_OP_BIT(VM_OP_ATTACH) |              \
	 VM_OP_BIT(VM_OP_DETACH) | VM_OP_BIT(VM_OP_RESET))

const struct vm_job_kind vm_backup_kind = {
    .name = "backup",
    .op = VM_OP_BACKUP,
    .background = true,
    .allows = BK_ALLOWS,
    .cancel_for = VM_OP_BIT(VM_OP_POWERDOWN) | VM_OP_BIT(VM_OP_KILL),
    .event = bk_event,
    .timer = bk_timer,
    .qemu_gone = bk_qemu_gone,
    .cancel = bk_cancel,
    .free = bk_free,
    .restore = bk_restore,
};

/* A stopped VM's backup: its helper holds the disks, so a start is refused (busy) until it ends;
 * the verbs that need a running VM answer as on any stopped VM (not running), and an attach or
 * detach --persist changes a definition the backup no longer reads. Same name, same callbacks:
 * its record is restored like a running VM's. */
#define BK_OFFLINE_ALLOWS (BK_ALLOWS | VM_OP_BIT(VM_OP_POWERDOWN) | VM_OP_BIT(VM_OP_KILL))

static const struct vm_job_kind bk_offline_kind = {
    .name = "backup",
    .op = VM_OP_BACKUP,
    .background = true,
    .allows = BK_OFFLINE_ALLOWS,
    .event = bk_event,
    .timer = bk_timer,
    .cancel = bk_cancel,
    .free = bk_free,
    .restore = bk_restore,
};

/* Refuses a backup the VM's state does not allow now; true when refused. */
static bool
bk_refuse_state(struct vm *vm, vm_done_cb cb, void *arg)
{
	char *msg;

	switch (vm->state) {
	case VM_RUNNING:
	case VM_PAUSED:
		if (vm->qmp != NULL && !vm->qmp_closed)
			return false;
		break;
	case VM_STOPPED:
	case VM_CRASHED:
		if (vm->cfg != NULL)
			return false;
		msg = xasprintf("vm %s: its definition was removed", vm->name);
		cb(NULL, PROTO_ERR_NOT_FOUND, msg, arg);
		free(msg);
		return true;
	default:
		break;
	}
	vm_job_refuse_busy(vm, cb, arg);
	return true;
}

void
vm_backup(struct vm *vm, const struct vm_backup_args *a, vm_done_cb cb, void *arg)
{
	bool offline = vm->state == VM_STOPPED || vm->state == VM_CRASHED;
	const struct vm_job_kind *kind = offline ? &bk_offline_kind : &vm_backup_kind;
	struct bk *b;
	char *msg, *cause = NULL, *store;

	if (bk_refuse_state(vm, cb, arg))
		return;
	if (a->to != NULL) {
		if ((store = bk_dir_allowed(vm->env.conf, a->to, &cause)) == NULL) {
			msg = xasprintf("vm %s: --to %s", vm->name, cause);
			cb(NULL, PROTO_ERR_INVALID, msg, arg);
			free(msg);
			free(cause);
			return;
		}
	} else {
		store = xasprintf("%s/%s", vm->env.conf->backup_dir, vm->name);
		if (mkdir(vm->env.conf->backup_dir, 0700) < 0 && errno != EEXIST) {
			msg = xasprintf("vm %s: backup_dir %s: %s", vm->name,
			                vm->env.conf->backup_dir, strerror(errno));
			cb(NULL, PROTO_ERR_FAILED, msg, arg);
			free(msg);
			free(store);
			return;
		}
	}
	/* A helper still running with no job of this qvmd following it is a leftover: killed, and
	 * the disks are busy until it is gone. */
	if (!vm_job_admit(vm, kind->op, cb, arg) ||
	    (offline && vm_helper_refuse_busy(vm, cb, arg))) {
		free(store);
		return;
	}
	b = xcalloc(1, sizeof *b);
	b->vm = vm;
	b->mode = a->mode;
	b->no_wait = a->no_wait;
	b->store = store;
	{
		char *path = state_path(vm);

		bk_state_load(&b->st, path);
		free(path);
	}
	b->job = vm_job_new(vm, kind, b, cb, arg);
	if (!offline) {
		b->definition = vm->live_text ? xstrdup(vm->live_text) : NULL;
		if (guess(b))
			guess_send(b);
		else
			clean_query(b);
		return;
	}
	/* The definition as it is now: the disks the VM would start with. */
	b->cfg = cfg_vm_dup(vm->cfg);
	b->definition = vm->disk_text ? xstrdup(vm->disk_text) : NULL;
	/* Its record exists before the helper does: a restarted qvmd finds the helper through it.
	 */
	bk_pick_id(b);
	b->job->rec = vm_jobrec_new(vm, "backup", b->id, false);
	b->helper = vm_helper_start(vm, b->cfg, &bk_helper_cbs, b, &cause);
	if (b->helper == NULL) {
		bk_fail(b, PROTO_ERR_FAILED, "vm %s: backup: %s", vm->name, cause);
		free(cause);
		return;
	}
	b->job->qmp = vm_helper_qmp(b->helper);
}
