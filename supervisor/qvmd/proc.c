/* Process facts from /proc and spawning with posix_spawn (never a shell). */
#include "proc.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

int
proc_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

int
proc_pidfd_signal(int pidfd, int sig)
{
	return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

/* Reads a small /proc file whole; returns its length or -1. */
static ssize_t
read_proc(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t len = 0;
	ssize_t n;

	if (fd < 0)
		return -1;
	while (len < size - 1 && (n = read(fd, buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
	return (ssize_t)len;
}

int
proc_starttime(pid_t pid, uint64_t *ticks)
{
	char path[64], buf[1024], *p;
	int field;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if (read_proc(path, buf, sizeof buf) <= 0)
		return -1;
	/* The command name may contain spaces and parentheses: fields restart after the last ')',
	 * where p points at the space before field 3 (state). */
	p = strrchr(buf, ')');
	if (p == NULL)
		return -1;
	p++;
	for (field = 3; field < 22 && p != NULL; field++)
		p = strchr(p + 1, ' ');
	if (p == NULL)
		return -1;
	*ticks = strtoull(p + 1, NULL, 10);
	return 0;
}

bool
proc_cmdline_has(pid_t pid, const char *a, const char *b)
{
	char path[64];
	char *buf;
	ssize_t len;
	bool found = false;
	size_t size = 256 * 1024;

	snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
	buf = xmalloc(size);
	len = read_proc(path, buf, size);
	for (ssize_t i = 0; len > 0 && i < len && !found;) {
		const char *arg = buf + i;
		size_t alen = strlen(arg);

		if (strcmp(arg, a) == 0 && i + (ssize_t)alen + 1 < len &&
		    strcmp(arg + alen + 1, b) == 0)
			found = true;
		i += (ssize_t)alen + 1;
	}
	free(buf);
	return found;
}

pid_t
proc_find(const char *a1, const char *a2, const char *b1, const char *b2)
{
	DIR *dir = opendir("/proc");
	struct dirent *de;
	pid_t found = 0, self = getpid();

	while (dir != NULL && found == 0 && (de = readdir(dir)) != NULL) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);

		if (*end != '\0' || pid <= 0 || pid == self)
			continue;
		if (proc_cmdline_has((pid_t)pid, a1, a2) && proc_cmdline_has((pid_t)pid, b1, b2))
			found = (pid_t)pid;
	}
	if (dir != NULL)
		closedir(dir);
	return found;
}

long
proc_rss_kib(pid_t pid)
{
	char path[64], buf[4096], *p;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	if (read_proc(path, buf, sizeof buf) <= 0)
		return -1;
	p = strstr(buf, "VmRSS:");
	return p ? strtol(p + 6, NULL, 10) : -1;
}

pid_t
proc_spawn(char *const *argv, int out_fd, const int *keep, size_t nkeep, int *pidfd, char **cause)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	pid_t pid;
	int err, devnull;

	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0) {
		*cause = xasprintf("open /dev/null: %s", strerror(errno));
		return -1;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_adddup2(&fa, devnull, 0);
	posix_spawn_file_actions_adddup2(&fa, out_fd >= 0 ? out_fd : devnull, 1);
	posix_spawn_file_actions_adddup2(&fa, out_fd >= 0 ? out_fd : devnull, 2);
	/* dup2 onto itself clears FD_CLOEXEC: exactly the descriptors QEMU is told about survive.
	 */
	for (size_t i = 0; i < nkeep; i++)
		posix_spawn_file_actions_adddup2(&fa, keep[i], keep[i]);
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
	                                    POSIX_SPAWN_SETSIGDEF);
	err = posix_spawn(&pid, argv[0], &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(devnull);
	if (err != 0) {
		*cause = xasprintf("cannot run %s: %s", argv[0], strerror(err));
		return -1;
	}
	*pidfd = proc_pidfd_open(pid);
	if (*pidfd < 0) {
		err = errno;
		kill(pid, SIGKILL);
		*cause = xasprintf("pidfd_open: %s", strerror(err));
		return -1;
	}
	return pid;
}

char *
proc_file_tail(const char *path, long offset, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf, *out;
	ssize_t n;
	size_t o = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return xstrdup("");
	}
	if (st.st_size - offset > (off_t)max)
		offset = (long)(st.st_size - (off_t)max);
	if (offset < 0)
		offset = 0;
	buf = xcalloc(1, max + 1);
	n = pread(fd, buf, max, offset);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = '\0';
	out = xcalloc(1, (size_t)n * 3 + 1);
	for (ssize_t i = 0; i < n; i++) {
		if (buf[i] == '\n') {
			if (i + 1 < n && o > 0) {
				memcpy(out + o, " | ", 3);
				o += 3;
			}
		} else if ((unsigned char)buf[i] >= 0x20 || buf[i] == '\t') {
			out[o++] = buf[i];
		}
	}
	out[o] = '\0';
	free(buf);
	return out;
}

pid_t
proc_pidfile_owner(const char *path)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	pid_t owner = 0;

	if (fd < 0)
		return 0;
	/* F_GETLK reports the holder of a conflicting lock (the kernel fills in its pid). */
	if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
		owner = fl.l_pid;
	close(fd);
	return owner;
}
