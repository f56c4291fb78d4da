/*
 * supervisor/qvmd/vm_backup_plan: what a backup copies, and how (private to the VM layer, and to
 * its tests). Pure decisions: QEMU's block nodes, the disks to back up, the VM's backup record
 * and the last backup's manifest in; a plan out. No QMP, no process, no event loop.
 *
 * A backup copies the VM's writable disks, each from its format node "ID.fmt". It is incremental
 * when the chain allows it: a full backup was not asked for, nothing recorded that the next one
 * must be full, the last complete backup is in the same store with its files present, and each
 * of its disks is still a qcow2 of the same virtual size whose persistent dirty bitmap BK_BITMAP
 * is present, recording, not inconsistent (QEMU was killed) and not busy. Otherwise the backup
 * is full and the reason says why. Inside an incremental, a disk new since the last backup, or a
 * raw one, gets a full copy, and the reason notes it. A bitmap that counts nothing (inconsistent,
 * or not recording) is marked to be remade; a missing one to be made.
 */
#ifndef QVMD_VM_BACKUP_PLAN_H
#define QVMD_VM_BACKUP_PLAN_H

#include "vm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;
struct bk_state;

/* A disk of a backup: what the plan decided, then how its copy goes (vm_backup.c). */
struct bk_disk {
	char *id;
	char node[80]; /* its format node */
	bool qcow2;
	uint64_t vsize;
	bool bitmap;      /* BK_BITMAP exists on the disk */
	bool bitmap_bad;  /* ... and counts nothing (inconsistent, or not recording): remade */
	char *bitmap_why; /* why it cannot serve an incremental (NULL: it can) */
	bool incremental; /* sync incremental (else full) */
	char *backing;    /* the target's backing file (relative: "../PARENT/ID.qcow2"), or NULL */

	/* The copy's, left to vm_backup.c (the plan sets fd and set to -1, the rest to 0). */
	char *file;      /* the target's path */
	int fd;          /* the target, open read-write from its creation to the end */
	int64_t set;     /* its fdset in QEMU, -1: none (yet, or any more) */
	bool nodes;      /* its target node is in QEMU */
	bool started;    /* its QEMU job was made */
	bool waiting;    /* its job is pending: copied, waiting for job-finalize */
	bool concluded;  /* ... and has ended (QEMU dismisses it then) */
	bool cancelling; /* job-cancel sent (a wrong guess's job) */
	bool completed;  /* BLOCK_JOB_COMPLETED without an error: the copy is whole */
	char *checksum;
	uint64_t cur, total;
};

/* A backup's plan. It owns its disks: bk_plan_free frees them, closes their fds and leaves it
 * empty ({0} is an empty plan). */
struct bk_plan {
	struct bk_disk *disks; /* in the order of their ids */
	size_t ndisks;
	bool incremental;
	char *reason; /* why full, or what an incremental copies whole; NULL: nothing to say */
	char *parent; /* an incremental's parent backup */
};

/* What a plan is made from. */
struct bk_plan_in {
	const char *vm; /* the VM's name, for messages */
	enum vm_backup_mode mode;
	const struct bk_state *st; /* its backup record */
	const char *store;         /* the store the backup goes to */
	const char **wanted;       /* the ids of the disks to back up */
	size_t nwanted;
};

void bk_plan_free(struct bk_plan *p);

/* Reads the wanted disks and their bitmaps from QEMU's block nodes (query-named-block-nodes's
 * answer, or NULL) into the empty plan p, in the order of their ids (QEMU lists nodes newest
 * first: manifests and replies should not depend on it). Nothing is decided yet. */
void bk_plan_disks(struct bk_plan *p, const struct bk_plan_in *in, struct json_object *nodes);

/* Decides full or incremental for p's disks, and p's reason and parent: NULL, or why the backup
 * cannot be done as asked (allocated; nothing decided then). */
char *bk_plan_decide(struct bk_plan *p, const struct bk_plan_in *in);

/* Why the last backup cannot be built on (allocated), or NULL with *parent its manifest (the
 * caller puts it). Its files are not looked at. */
char *bk_plan_chain_base(const struct bk_plan_in *in, struct json_object **parent);

/* Whether a and b are the same plan, disk by disk. */
bool bk_plan_same(const struct bk_plan *a, const struct bk_plan *b);

/*
 * Plans into the empty plan p as if nothing changed since the last backup: QEMU's block nodes
 * as that backup's manifest describes its disks, each bitmap recording. True when that gives an
 * incremental of exactly the wanted disks, else false (p left empty). QEMU's real answer must
 * then be planned and compared (bk_plan_same) before the copy is trusted.
 */
bool bk_plan_guess(struct bk_plan *p, const struct bk_plan_in *in);

#endif
