/*
 * supervisor/qvmd/vm_backup: the backup store of a VM, as files (private to the VM layer, and to
 * its tests).
 *
 * A store is a directory holding one directory per backup, named by the backup's id (a UTC time
 * stamp to the millisecond, "20250102T030405.678Z", so ids sort by time). A backup directory
 * holds one qcow2 file per disk ("<disk id>.qcow2") and manifest.json: the VM, the backup's type
 * (full | incremental), its parent, its status (running, complete, failed), the VM definition as
 * it was, and per disk its file, virtual size, bytes, the sync it got, its backing file and the
 * xxh3 checksum of the file. An incremental's files have the parent backup's files as backing
 * files, by relative name ("../PARENT/vda.qcow2"): every backup is an ordinary qcow2 chain.
 * A manifest is written atomically (temporary file, fsync, rename, fsync of the directory): a
 * backup whose manifest says complete has every file on stable storage.
 *
 * Which stores a VM uses (backup_dir/NAME, and every --to DIR it was given), which backup the
 * dirty bitmaps of its disks count from, and the backup in progress are kept in
 * <state_dir>/NAME/backups.json (struct bk_state).
 */
#ifndef QVMD_VM_BACKUP_H
#define QVMD_VM_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct daemon_config;
struct json_object;

/* The name of the persistent dirty bitmap qvmd keeps in each qcow2 disk. */
#define BK_BITMAP "qvmd-backup"
/* A backup id's length: "YYYYmmddTHHMMSS.mmmZ". */
#define BK_ID_LEN 20

/* Makes the id of a backup taken at now_ms (epoch ms) into id. */
void bk_id_make(int64_t now_ms, char id[BK_ID_LEN + 1]);
/* Whether s has the shape of a backup id (nothing else may name a backup directory). */
bool bk_id_valid(const char *s);

/*
 * Whether dir (an absolute path; it need not exist yet) lies below backup_dir or an image_dirs
 * entry, after resolving the part of it that exists. Returns the resolved path (caller frees),
 * or NULL with *cause.
 */
char *bk_dir_allowed(const struct daemon_config *conf, const char *dir, char **cause);

/* A string member of a manifest or state object, or NULL (absent, null or not a string). */
const char *bk_jstr(struct json_object *o, const char *key);
/* The same, or "" (for comparing: QEMU's answers and manifests). */
const char *bk_jtext(struct json_object *o, const char *key);

/* A file's next text, written beside it (PATH.tmp), not yet in place: what bk_manifest_write and
 * bk_state_save do in one step, apart, so that the temporary can be fsynced together with other
 * files before it is put in place. */
struct bk_staged;
/* Writes text to path.tmp; NULL with *cause. */
struct bk_staged *bk_stage(const char *path, const char *text, char **cause);
/* The temporary's descriptor (open until put or dropped), to fsync. */
int bk_stage_fd(const struct bk_staged *s);
/* Renames it over path (no fsync: the caller has synced the descriptor where it needs to, and
 * syncs the directory after); frees s. 0, or -1 with *cause (the old file stays). */
int bk_stage_put(struct bk_staged *s, char **cause);
/* Forgets it (the temporary is removed); NULL is fine. */
void bk_stage_drop(struct bk_staged *s);

/* Writes m as dir/manifest.json atomically, and durably unless it says running (such a backup
 * is of no use after a power loss). 0, or -1 with *cause. */
int bk_manifest_write(const char *dir, struct json_object *m, char **cause);
/* Stages what bk_manifest_write writes; NULL with *cause. */
struct bk_staged *bk_manifest_stage(const char *dir, struct json_object *m, char **cause);
/* Reads dir/manifest.json (caller puts it), or NULL. */
struct json_object *bk_manifest_read(const char *dir);
/* The entry `backups` shows for a manifest (a new object): id, type, parent, created, status,
 * disks [{id, file, size}], and reason, error when set. */
struct json_object *bk_manifest_entry(struct json_object *m);
/* The entry as `backups` lists it: the manifest's (m, of the backup in dir), with "dir" and each
 * disk's "file" as a path. */
struct json_object *bk_entry(struct json_object *m, const char *dir);
/* A disk of a manifest by id, or NULL (borrowed). */
struct json_object *bk_manifest_disk(struct json_object *m, const char *id);

/* What qvmd remembers of a VM's backups (state_dir/NAME/backups.json). */
struct bk_state {
	char **stores; /* store directories this VM used, NULL-terminated */
	char *last_id; /* the backup the dirty bitmaps count from (NULL: none) */
	char *last_dir;
	char *running_id; /* the backup in progress (NULL: none) */
	char *running_dir;
	char *next_full;   /* why the next backup must be full (a restore in place), or NULL */
	bool running_copy; /* the batch starting the running backup's QEMU jobs was sent: once
	                    * they succeed, the dirty bitmaps no longer hold what they copied */
};
/* Reads path (missing or unreadable: empty state). */
void bk_state_load(struct bk_state *st, const char *path);
/* Writes it atomically, and durably with durable (what a completed backup or a restore in place
 * records); 0, or -1 with *cause. */
int bk_state_save(const struct bk_state *st, const char *path, bool durable, char **cause);
/* Stages what bk_state_save writes; NULL with *cause. */
struct bk_staged *bk_state_stage(const struct bk_state *st, const char *path, char **cause);
void bk_state_free(struct bk_state *st);
/* Adds store to the list (once). */
void bk_state_add_store(struct bk_state *st, const char *store);
/* Sets a string field (value copied; NULL clears it). */
void bk_state_set(char **field, const char *value);

/* Every backup of vm in the stores, oldest first, as entries with "dir" added (a new array). */
struct json_object *bk_list(char *const *stores, const char *vm);
/* The directory of backup id of vm (caller frees), or NULL. */
char *bk_find(char *const *stores, const char *vm, const char *id);

/* The xxh3 checksum of a file, computed a piece at a time. */
struct bk_hash;
/* Opens path for hashing; NULL with *cause. */
struct bk_hash *bk_hash_open(const char *path, char **cause);
/* Hashes up to max bytes more. Returns 1 when the whole file is done (then *hex holds
 * "xxh3:HEX", caller frees), 0 when more remains, -1 with *cause on a read error. */
int bk_hash_step(struct bk_hash *h, size_t max, char **hex, char **cause);
/* fsyncs the file (its data is durable once this returns 0); -1 with *cause. */
int bk_hash_sync(struct bk_hash *h, char **cause);
void bk_hash_free(struct bk_hash *h);

/* fsyncs a directory (a file created or renamed in it is durable). 0, or -1 with errno. */
int bk_sync_dir(const char *dir);
/* Removes a backup directory's qcow2 files and temporary files (not its manifest). */
void bk_remove_files(const char *dir);

/* vm_backup_restore.c: removes the FILE.pre-restore files a restore in place kept (call once a
 * backup is complete). */
struct vm;
void bk_pre_restore_clear(struct vm *vm);

#endif
