/*
 * supervisor/qvmd/vm_media: the medium of a running VM's cdrom drives ([cdrom ID] sections):
 * an ISO image inserted, or the drive emptied, over QMP with the tray opened and closed again;
 * and, with --persist, in the VM's definition.
 */
#ifndef QVMD_VM_MEDIA_H
#define QVMD_VM_MEDIA_H

#include "vm.h"

#include <stdbool.h>

/*
 * Changes the medium of cdrom id of a running (or paused) VM, as one job: file (an absolute path
 * to an existing regular file, opened read-only by qvmd and passed to QEMU as an fdset) goes in,
 * or, with file NULL, the drive is left closed and empty. A guest that locked the tray is
 * overruled. any_path: the requester may name any file (root, qvmd's user); else file must lie
 * below one of qvmd.conf's image_dirs. persist: also write the medium into the definition
 * (cfg_write_cdrom_medium), refused up front when the file has no such drive; on a stopped VM
 * only the definition changes. Answers {id, medium (the path or null), tray ("closed", null when
 * not live), live, persisted}; a definition that could not be written after the drive changed
 * adds a "warning" (ok all the same: the drive holds what the answer says). A failure after the
 * old medium was taken out says that the drive is empty. file and id are borrowed.
 */
void vm_media_change(struct vm *vm, const char *id, const char *file, bool any_path, bool persist,
                     vm_done_cb cb, void *arg);

#endif
