/*
 * supervisor/qvmd/vm_apply: a running VM made what its definition file says, as far as QEMU can
 * do it live (devices added, removed, replaced), everything else listed as pending until the next
 * start. The file is read again each time: an edited file needs no reload first.
 */
#ifndef QVMD_VM_APPLY_H
#define QVMD_VM_APPLY_H

#include "vm.h"

#include <stdbool.h>

struct json_object;

/*
 * Applies the VM's file to the running VM, as one job: every device change goes to QEMU at once
 * (pipelined), each rolled back alone when it fails. The result lists each change: {what, action
 * (add|remove|replace|change), old, new, result (applied|pending|failed), reason or error}, and
 * the counts applied, pending, failed. dry_run: the plan only (result "planned" for what would be
 * applied), nothing changes. A file with errors applies nothing: the error names file:line.
 */
void vm_apply(struct vm *vm, bool dry_run, vm_done_cb cb, void *arg);

/* The differences between the running VM and its file as it is on disk now: {changes: [{what,
 * action, old, new, live, reason}]}; a stopped VM has none. */
void vm_diff(struct vm *vm, vm_done_cb cb, void *arg);

/* Whether the definition qvmd has for a running VM differs from what runs (live_only: in something
 * an apply would change now, for auto_apply). */
bool vm_apply_needed(const struct vm *vm, bool live_only);

#endif
