/*
 * supervisor/qvmd/vm_helper: a QEMU that never runs the guest, holding a stopped VM's disks so
 * that block jobs run on them over QMP exactly as they would on the VM's own QEMU (private to the
 * VM layer).
 *
 * The helper is `qemu-system-x86_64 -machine none -S -nodefaults -display none` with only the
 * VM's writable disks: qvmd opens each image and its backing chain (imgchain.c) and the helper
 * inherits the descriptors as fdsets, under the block node names the VM's QEMU gives them
 * ("ID.fmt", argv.h), so the same QMP commands (add-fd, blockdev-add, persistent dirty bitmaps,
 * transaction, blockdev-backup) serve both. It runs as the VM's own uid and gid, never as root,
 * spawned without a shell; its QMP socket (helper.sock) is qvmd's, in the VM's run directory
 * beside qmp.sock, and it locks its pidfile <run_dir>/NAME/qemu/helper.pid for its whole life,
 * so a restarted qvmd can find (and verify) a helper its predecessor left behind.
 */
#ifndef QVMD_VM_HELPER_H
#define QVMD_VM_HELPER_H

#include <stdbool.h>
#include <sys/types.h>

#include "vm.h"

struct json_object;
struct qmp_conn;
struct vm;
struct vm_config;
struct vm_helper;

struct vm_helper_cbs {
	/* QMP is ready: commands may be sent. */
	void (*ready)(struct vm_helper *h, void *arg);
	/* A QMP event of the helper (data borrowed, may be NULL). */
	void (*event)(struct vm_helper *h, const char *name, struct json_object *data, void *arg);
	/* The helper is gone and reaped: after vm_helper_stop (clean: it exited with status 0), or
	 * on its own (why says how). The helper may be freed from here. */
	void (*exited)(struct vm_helper *h, bool clean, const char *why, void *arg);
};

/*
 * Starts a helper for the writable disks of cfg (a stopped VM's definition; borrowed). Returns
 * it, or NULL with *cause (an image that cannot be opened or that another VM holds, no uid for
 * the VM, a spawn failure). cbs is copied.
 */
struct vm_helper *vm_helper_start(struct vm *vm, const struct vm_config *cfg,
                                  const struct vm_helper_cbs *cbs, void *arg, char **cause);
/* Its QMP connection (borrowed; valid until the helper is freed). */
struct qmp_conn *vm_helper_qmp(const struct vm_helper *h);
/* Its process id. */
pid_t vm_helper_pid(const struct vm_helper *h);
/* Asks it to end cleanly (SIGTERM: QEMU ends its jobs and writes its persistent bitmaps back),
 * killing it when it does not within a grace period; exited runs once it is gone. */
void vm_helper_stop(struct vm_helper *h);
/* Kills it now (SIGKILL) if it still runs, reaps it and frees it; no callback runs. NULL is a
 * no-op. Safe inside the helper's own callbacks. */
void vm_helper_free(struct vm_helper *h);

/*
 * A helper of vm still running that no one follows (left by a qvmd that was killed), found by the
 * lock on its pidfile and verified by its command line; 0 when there is none.
 */
pid_t vm_helper_leftover(const struct vm *vm);
/* Kills such a leftover helper (SIGKILL, not waited for: vm_helper_leftover tells when it is
 * gone). Returns its pid, or 0 when there was none. */
pid_t vm_helper_kill_leftover(const struct vm *vm);
/*
 * Whether vm's disks are still held by a leftover helper: if so, answers cb with `busy` (worded
 * like every busy) and returns true.
 */
bool vm_helper_refuse_busy(struct vm *vm, vm_done_cb cb, void *arg);

#endif
