/*
 * supervisor/qvmd/vm_backup_chain: reading backup files safely and pruning a store (private to the
 * VM layer, and to its tests). Pure file and manifest work; no process, no event loop.
 *
 * Backup files are written by the VM's QEMU, which runs unprivileged: their qcow2 headers are not
 * to be trusted. A compromised QEMU could name /etc/shadow as a file's backing file, or as its
 * external data file, and a qemu-img running as root would read it into a restore. So qvmd never
 * lets qemu-img follow a name found in a backup file: bk_chain_spec describes each disk's chain
 * from the manifests qvmd wrote, node by node ("json:{driver: qcow2, file: ..., backing: {...}}"
 * ending with "backing": null), and bk_qcow2_probe refuses a file whose header asks for an
 * external data file (the one other name a qcow2 header can carry).
 *
 * Pruning rewrites the oldest kept point of a chain as a standalone file under its own name (the
 * name later increments have as backing file). Its manifest goes through one intermediate state,
 * a "pending" object per disk (the new file's checksum and size, written before the rename): a
 * file whose header has no backing name any more is the new one. bk_pending_settle finishes or
 * drops that state after a crash, and bk_chain_spec reads it the same way meanwhile, so a point
 * stays restorable at every instant.
 */
#ifndef QVMD_VM_BACKUP_CHAIN_H
#define QVMD_VM_BACKUP_CHAIN_H

#include <stdbool.h>

struct json_object;

/* A backup file's qcow2 header: 0 (and *has_backing: it names a backing file), or -1 with *cause
 * when it is no qcow2 file or asks for an external data file. */
int bk_qcow2_probe(const char *path, bool *has_backing, char **cause);

/* One backup file alone, for qemu-img ("json:{...}" with "backing": null; caller frees). */
char *bk_file_spec(const char *path);
/*
 * The chain of disk as backup dir (manifest m) holds it, for qemu-img: "json:{...}" with every
 * layer's file and backing given explicitly from the manifests of dir and of the backups it builds
 * on (in the same store), the last with "backing": null (caller frees). Every layer is probed, and
 * a backing name that does not follow the manifests is refused. NULL with *cause.
 */
char *bk_chain_spec(const char *dir, struct json_object *m, const char *disk, char **cause);

/*
 * What pruning a VM's backups (bk_list's array, oldest first) to the newest keep complete ones
 * does: a new object with arrays of list entries "kept", "deleted" (older complete backups, and
 * failed ones older than the newest kept) and "merge" (kept backups whose parent is deleted: they
 * are made standalone first). A running backup and protect (the backup the dirty bitmaps count
 * from; may be NULL) are never deleted.
 */
struct json_object *bk_prune_plan(struct json_object *list, unsigned keep, const char *protect);

/* Marks each disk of manifest m being made standalone: disks is an array of {id, checksum,
 * size}. */
void bk_pending_set(struct json_object *m, struct json_object *disks);
/* Makes the pending state of disk id final (the new file is in place): no backing, the new
 * checksum; once no disk has a backing file the backup is full, without parent. */
void bk_pending_apply(struct json_object *m, const char *disk);
/* Once no disk of m has a backing file, m is a full backup without parent ("merged_from" keeps
 * the parent's id). */
void bk_manifest_standalone(struct json_object *m);
/*
 * Settles what a crash left in backup dir's manifest: a disk whose file has no backing name takes
 * its pending state, the others drop it. Writes the manifest when it changed. 0, or -1 with
 * *cause.
 */
int bk_pending_settle(const char *dir, char **cause);

/* Removes a backup directory so that a crash leaves nothing that passes for a backup: the
 * manifest is renamed away first (manifest.deleted), then the files, then the directory. */
void bk_delete(const char *dir);
/* Finishes what an interrupted prune left in vm's stores: deletions begun (manifest.deleted),
 * temporary files ("*.tmp") in backups other than running_id. */
void bk_sweep(char *const *stores, const char *vm, const char *running_id);

#endif
