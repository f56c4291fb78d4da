/* supervisor/qvmd/proc: facts about processes from /proc, pidfds and spawning without a shell. */
#ifndef QVMD_PROC_H
#define QVMD_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* pidfd_open(2); returns the fd (O_CLOEXEC) or -1 with errno. */
int proc_pidfd_open(pid_t pid);
/* pidfd_send_signal(2); returns 0 or -1 with errno. */
int proc_pidfd_signal(int pidfd, int sig);
/* The process start time in clock ticks since boot (field 22 of /proc/PID/stat); 0 or -1. */
int proc_starttime(pid_t pid, uint64_t *ticks);
/* Whether /proc/PID/cmdline contains the argument sequence a, b (adjacent). */
bool proc_cmdline_has(pid_t pid, const char *a, const char *b);
/* The first process (other than us) whose command line has both adjacent pairs a1 a2 and b1 b2; 0
 * if none. */
pid_t proc_find(const char *a1, const char *a2, const char *b1, const char *b2);
/* The pid of the process holding a POSIX lock on a pidfile (QEMU locks its -pidfile for its whole
 * life), or 0 when none does or the file does not exist. */
pid_t proc_pidfile_owner(const char *path);
/* Resident set size in KiB, or -1. */
long proc_rss_kib(pid_t pid);

/*
 * Spawns argv[0] (absolute path, no shell) in a new session with stdin on /dev/null, stdout and
 * stderr on out_fd (or /dev/null when < 0), and only the descriptors in keep[] inherited (at their
 * numbers). Returns the pid and sets *pidfd (or -1 with *cause).
 */
pid_t proc_spawn(char *const *argv, int out_fd, const int *keep, size_t nkeep, int *pidfd,
                 char **cause);

/* The last lines (at most max bytes) of a file from offset on, single-line-joined with " | ". */
char *proc_file_tail(const char *path, long offset, size_t max);

#endif
