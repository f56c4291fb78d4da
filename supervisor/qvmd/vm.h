/*
 * supervisor/qvmd/vm: one state machine per VM. Every operation that changes a VM is a job
 * (vm_job.h): at most one ordinary job and one background job per VM (others get `busy`), queries
 * are always answered at once, and different VMs never wait on each other. Results reach the
 * requester through a vm_done_cb. A VM knows nothing of the daemon: it gets what it needs (the
 * event loop, the daemon's settings, where its events go) in a struct vm_env.
 */
#ifndef QVMD_VM_H
#define QVMD_VM_H

#include "protocol.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct daemon_config;
struct event_base;
struct json_object;
struct vm;
struct vm_config;
struct vm_uid_books;
struct bgsync;

enum vm_state { VM_STOPPED, VM_STARTING, VM_RUNNING, VM_PAUSED, VM_STOPPING, VM_CRASHED };

/*
 * The result of an operation: on success code is PROTO_OK, message NULL and result a new json
 * object the callee owns (it must json_object_put it); on failure code is an error code
 * (PROTO_ERR_BUSY, PROTO_ERR_QEMU, ...), message says what went wrong and result is NULL.
 */
typedef void (*vm_done_cb)(struct json_object *result, enum proto_err code, const char *message,
                           void *arg);

/* What a VM needs from its owner. Borrowed for the VM's life. */
struct vm_env {
	struct event_base *base;
	const struct daemon_config *conf;
	struct vm_uid_books *uids; /* whom each QEMU runs as (vm_uid.h) */
	struct bgsync *bgsync;     /* background fdatasyncs (bgsync.h); may be NULL */
	/* Where the VM's events go (takes ev). */
	void (*publish)(void *arg, const char *vm, struct json_object *ev);
	/* The VM has no QEMU, no job and no definition any more: its owner may forget it (free it
	 * on a later loop turn, never inside this call). */
	void (*gone)(void *arg, struct vm *vm);
	/* Whether the restart policy may start the VM now (not while the daemon stops or powers
	 * every VM down). */
	bool (*may_restart)(void *arg);
	/* Whether anyone follows the VM's events now (NULL: assume so): a running job's progress
	 * is asked of QEMU only then. */
	bool (*watched)(void *arg, const char *vm);
	/* Another VM (not self) whose QEMU holds the image dev/ino in a way that forbids this use:
	 * read-write, or at all when this use is writable; NULL when none does. May be NULL. */
	const struct vm *(*image_holder)(void *arg, const struct vm *self, dev_t dev, ino_t ino,
	                                 bool writable);
	void *arg;
};

/*
 * The rule for every file qvmd opens for an unprivileged QEMU at the request of someone other
 * than root: it lies below one of conf's image_dirs by its real path (symbolic links and ".."
 * resolved). An existing path is judged itself; a missing one, when it may be created (create),
 * by its directory, which may be an image dir itself.
 */
bool vm_image_path_allowed(const struct daemon_config *conf, const char *path, bool create);

/* Takes ownership of cfg. */
struct vm *vm_new(const struct vm_env *env, struct vm_config *cfg);
/* Frees a VM that has no QEMU (state stopped or crashed, no job). */
void vm_free(struct vm *vm);

const char *vm_name(const struct vm *vm);
enum vm_state vm_state(const struct vm *vm);
const char *vm_state_name(enum vm_state s);
bool vm_is_active(const struct vm *vm); /* a QEMU process exists (or is being started) */
const struct vm_config *vm_config(const struct vm *vm);
/* Replaces the on-disk definition (takes ownership; NULL = the file was removed). */
void vm_set_config(struct vm *vm, struct vm_config *cfg);
bool vm_definition_removed(const struct vm *vm);
/* Takes a freshly loaded definition (ownership): replaces the VM's when it means something else
 * (cfg_vm_equal: a comment-only edit is no change). Returns whether it did. */
bool vm_update_config(struct vm *vm, struct vm_config *cfg);

/* Whether the VM's QEMU holds the image dev/ino (a disk's, a backing file's, the UEFI variable
 * store); *writable: read-write. */
bool vm_holds_image(const struct vm *vm, dev_t dev, ino_t ino, bool *writable);

/* The list row of a VM (never waits on QEMU). */
struct json_object *vm_list_row(const struct vm *vm);

void vm_start(struct vm *vm, vm_done_cb cb, void *arg);
/* timeout_ms 0: the definition's shutdown_timeout. wait false: reply once QEMU accepted it. */
void vm_powerdown(struct vm *vm, uint64_t timeout_ms, bool wait, vm_done_cb cb, void *arg);
void vm_kill(struct vm *vm, vm_done_cb cb, void *arg);
/*
 * Brings a VM down for a host shutdown: powers down a running or paused VM, joins a powerdown or
 * kill in flight (the shorter timeout wins), waits for any other job (start, reset, hot-plug) to
 * end and then powers down, and cancels a pending restart. Returns false (cb not called) when the
 * VM has no QEMU and none is coming.
 */
bool vm_bring_down(struct vm *vm, uint64_t timeout_ms, vm_done_cb cb, void *arg);
void vm_reset(struct vm *vm, vm_done_cb cb, void *arg);
/*
 * A graceful reboot in the same QEMU process: ACPI powerdown, and once the guest has shut down,
 * system_reset and cont; a guest that ignores ACPI for timeout_ms (0: the definition's
 * shutdown_timeout) is reset hard. Answers when the guest runs again: state, rebooted_by
 * ("guest": it shut down; "guest-reset": it rebooted itself; "reset": the timeout passed),
 * elapsed_ms, resumed (a paused VM was resumed first).
 */
void vm_reboot(struct vm *vm, uint64_t timeout_ms, vm_done_cb cb, void *arg);
void vm_pause(struct vm *vm, vm_done_cb cb, void *arg);
void vm_resume(struct vm *vm, vm_done_cb cb, void *arg);
void vm_status(struct vm *vm, vm_done_cb cb, void *arg);
/* Raw QMP passthrough; args borrowed. */
void vm_qmp(struct vm *vm, const char *command, struct json_object *args, vm_done_cb cb, void *arg);

/*
 * Re-attaches to a QEMU left running by an earlier qvmd, from the VM's run directory, and
 * publishes the state it finds (running, or crashed). Cleans the run directory of a QEMU that is
 * gone. Returns true if adopted.
 */
bool vm_adopt(struct vm *vm);

struct cfg_disk;
struct cfg_net;
/* Hot-plug (running vm) or, with persist on a stopped vm, a definition edit. */
void vm_attach_disk(struct vm *vm, const struct cfg_disk *disk, uint64_t create_size, bool persist,
                    vm_done_cb cb, void *arg);
void vm_attach_net(struct vm *vm, const struct cfg_net *net, bool persist, vm_done_cb cb,
                   void *arg);
/* timeout_ms 0: 30 s. */
void vm_detach_device(struct vm *vm, const char *id, bool persist, uint64_t timeout_ms,
                      vm_done_cb cb, void *arg);
/* Live and persistent disks and NICs, with PCI addresses. */
void vm_devices(struct vm *vm, vm_done_cb cb, void *arg);

/* Snapshots (internal qcow2 snapshots of every writable disk), as the VM's background job. */
struct vm_snapshot_args {
	const char *tag; /* 1-63 of [A-Za-z0-9_.-] */
	const char *note;
	bool disk_only;             /* running VM: no RAM/device state */
	const char *const *exclude; /* disk ids left out */
	size_t nexclude;
	bool no_wait; /* reply once the job runs */
};
bool vm_snapshot_tag_valid(const char *tag);
void vm_snapshot_create(struct vm *vm, const struct vm_snapshot_args *a, vm_done_cb cb, void *arg);
void vm_snapshot_revert(struct vm *vm, const char *tag, bool no_wait, vm_done_cb cb, void *arg);
void vm_snapshot_delete(struct vm *vm, const char *tag, bool no_wait, vm_done_cb cb, void *arg);
/* The snapshots on the VM's disks, one row per tag. */
void vm_snapshots(struct vm *vm, vm_done_cb cb, void *arg);
/* The VM's background jobs (running, and the last few ended), as an array (never waits). */
struct json_object *vm_jobs_json(const struct vm *vm);
/* Cancels the running background job id. */
void vm_job_cancel(struct vm *vm, const char *id, vm_done_cb cb, void *arg);

/* Backups (vm_backup.c): full and incremental, of every writable disk at one point in time. */
enum vm_backup_mode { VM_BACKUP_AUTO, VM_BACKUP_FULL, VM_BACKUP_INCREMENTAL };
struct vm_backup_args {
	enum vm_backup_mode mode; /* AUTO: incremental when the chain allows, else full */
	const char *to;           /* the store directory (NULL: backup_dir/NAME) */
	bool no_wait;             /* reply once the job runs */
};
void vm_backup(struct vm *vm, const struct vm_backup_args *a, vm_done_cb cb, void *arg);
/* The VM's backups, oldest first (never waits on QEMU). */
void vm_backups(struct vm *vm, vm_done_cb cb, void *arg);
/* Writes each disk as it was at backup id into to/<disk>.qcow2 (standalone images), or, with to
 * NULL, over the stopped VM's own disk files (restore in place: each written beside its file,
 * fsynced, renamed over it; the old one kept as FILE.pre-restore; the next backup is full). */
void vm_backup_restore(struct vm *vm, const char *id, const char *to, bool no_wait, vm_done_cb cb,
                       void *arg);
/* Checks every file of backup id's chain: present, qemu-img check clean, checksum as recorded. */
void vm_backup_verify(struct vm *vm, const char *id, bool no_wait, vm_done_cb cb, void *arg);
/* Keeps the newest keep (>= 1) complete backups, merging into the oldest kept one what it needs
 * of those deleted (backup-prune). */
void vm_backup_prune(struct vm *vm, unsigned keep, bool no_wait, vm_done_cb cb, void *arg);

/* Applies the restart policy to a VM found crashed when qvmd started. */
void vm_crashed_while_away(struct vm *vm);
/* Lets go of the QEMU without stopping it (qvmd is exiting): pending requests fail. */
void vm_detach(struct vm *vm);

#endif
