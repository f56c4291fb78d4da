/*
 * supervisor/qvmd/vm_define: what the VM layer does for `qvmctl create` and `undefine`: creates
 * the disk images of a VM that is not loaded yet (with the start's own qemu-img code), and removes
 * the directories of a VM that goes for good. The daemon (daemon_define.c) decides when.
 */
#ifndef QVMD_VM_DEFINE_H
#define QVMD_VM_DEFINE_H

#include <stdbool.h>
#include <stddef.h>

struct vm;
struct vm_define_images;

/*
 * Creates the images of vm's definition that are missing and have a size (qemu-img create, as a
 * start would), for a VM with no QEMU that its owner has not published yet. done(arg, error) runs
 * on a later loop turn, never inside this call: error NULL when every image exists, else the
 * first failure (allocated, the callee's to free; nothing is left of the image that failed).
 * Until then a record of the images being made is in the VM's state directory (see
 * vm_define_leftovers); vm_define_images_free removes it.
 * Returns the work, which the caller frees with vm_define_images_free once done ran (or to stop it
 * early: done never runs then). Both borrow vm, which must outlive them.
 */
struct vm_define_images *vm_define_images(struct vm *vm, void (*done)(void *arg, char *error),
                                          void *arg);
/*
 * What a create of name that qvmd did not finish (killed while it made the images, before it wrote
 * the definition) left: the files of its record (state_dir/NAME/creating, written before the
 * first qemu-img runs) that exist, as "FILE, FILE" (caller frees); NULL when there is no record
 * or when every file it lists is gone, and then the record goes too.
 */
char *vm_define_leftovers(const char *state_dir, const char *name);
/* The images this work creates (absolute paths, borrowed from it), in definition order. */
const char *const *vm_define_images_list(const struct vm_define_images *w, size_t *n);
/* Stops the work (children killed); undo: every image it created is removed, and the VM's state
 * directory if the work made it. NULL is a no-op. */
void vm_define_images_free(struct vm_define_images *w, bool undo);

/* Whether vm may be undefined now: no QEMU, none coming, no job of any kind. */
bool vm_define_idle(const struct vm *vm);
/*
 * Removes a stopped VM's run directory and its state directory (console log, QEMU log, job
 * records, UEFI variables) with all they hold, never following a symbolic link. Returns 0, or -1
 * with *cause naming the first thing that could not be removed (the rest is still tried).
 */
int vm_define_remove_dirs(struct vm *vm, char **cause);

#endif
