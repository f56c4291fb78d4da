/*
 * supervisor/qvmd/lockfile: one qvmd per run directory. The lock is an flock(2) on
 * <run_dir>/qvmd.lock held for the daemon's whole life; the kernel drops it when the daemon dies,
 * however it dies, so a stale file never blocks. The file holds the owner's pid so that a refusal
 * can name it.
 */
#ifndef QVMD_LOCKFILE_H
#define QVMD_LOCKFILE_H

#define LOCKFILE_NAME "qvmd.lock"

/* Takes the lock of run_dir. Returns the descriptor to keep open (O_CLOEXEC), or -1 with *cause
 * ("another qvmd (pid N) owns …" when it is held). */
int lockfile_acquire(const char *run_dir, char **cause);

#endif
