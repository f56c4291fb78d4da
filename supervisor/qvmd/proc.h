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

/* A path a spawned process must be able to reach with its own ids (checked before exec). */
struct proc_path {
	const char *what; /* for messages: "kernel", "pidfile directory" */
	const char *path;
	int mode; /* access(2) mode: R_OK, W_OK | X_OK ... */
};

/*
 * Whom a spawned process runs as: uid and gid (the only groups, plus extra_gid when it is not
 * (gid_t)-1, e.g. kvm for /dev/kvm), with no capabilities left (permitted, effective, inheritable,
 * ambient and bounding sets empty). Each of paths[] is checked with these ids before exec.
 */
struct proc_creds {
	uid_t uid;
	gid_t gid;
	gid_t extra_gid;
	const struct proc_path *paths;
	size_t npaths;
};

/*
 * Spawns argv[0] (absolute path, no shell) in a new session with stdin on /dev/null, stdout and
 * stderr on out_fd (or /dev/null when < 0), only the descriptors in keep[] inherited (at their
 * numbers), default signal handling, umask 077 and no_new_privs. With creds (may be NULL: as
 * qvmd), it runs under those ids. Anything that fails before exec (dropping privileges, a path the
 * ids cannot reach, exec itself) fails the spawn with the reason. Returns the pid and sets *pidfd
 * (or -1 with *cause).
 */
pid_t proc_spawn_as(char *const *argv, int out_fd, const int *keep, size_t nkeep,
                    const struct proc_creds *creds, int *pidfd, char **cause);
/* proc_spawn_as without creds. */
pid_t proc_spawn(char *const *argv, int out_fd, const int *keep, size_t nkeep, int *pidfd,
                 char **cause);

/* The real and effective uids of a process (the Uid: line of /proc/PID/status); 0 or -1. */
int proc_uids(pid_t pid, uid_t *ruid, uid_t *euid);

/* Bytes of a log proc_file_tail reads at most (from its end). */
#define PROC_TAIL_WINDOW (64 * 1024)
/* The last lines (at most max bytes, from a line's start when one fits) of a file from offset on,
 * single-line-joined with " | ", without empty lines and without QEMU's warnings ("qemu-...:
 * warning: ..."), which never say why QEMU failed. */
char *proc_file_tail(const char *path, long offset, size_t max);

#endif
