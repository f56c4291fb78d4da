/*
 * supervisor/qvmctl/ctl_backup_all: `qvmctl backup --all`, the nightly backup of every VM (see
 * ctl_backup_all.c).
 */
#ifndef QVMD_CTL_BACKUP_ALL_H
#define QVMD_CTL_BACKUP_ALL_H

#include "ctl_verbs.h"

/*
 * Backs up every VM the daemon has, running or stopped, at most --parallel at once, and prunes each
 * to --keep points after its backup succeeded. args are the backup verb's (it has the options
 * all, parallel, keep, full, incremental, to, no-wait). Returns CTL_EXIT_OK when every VM was
 * backed up, CTL_EXIT_FAILED when any failed (after listing them), CTL_EXIT_USAGE for bad options,
 * CTL_EXIT_UNREACHABLE when the VMs could not be listed, 130 when interrupted.
 */
int ctl_backup_all(struct ctl *ctl, struct ctl_args *args);

#endif
