/* The daemon's run-directory lock (see lockfile.h). */
#include "lockfile.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* The pid written in a held lock file, or 0 when it cannot be read. */
static long
lockfile_owner(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	long pid;

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	pid = strtol(buf, NULL, 10);
	return pid > 0 ? pid : 0;
}

int
lockfile_acquire(const char *run_dir, char **cause)
{
	char *path = xasprintf("%s/%s", run_dir, LOCKFILE_NAME);
	char pid[32];
	int fd, len;
	long owner;

	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK) {
			owner = lockfile_owner(fd);
			*cause = owner > 0
			             ? xasprintf("another qvmd (pid %ld) owns %s (lock %s)", owner,
			                         run_dir, path)
			             : xasprintf("another qvmd owns %s (lock %s)", run_dir, path);
		} else {
			*cause = xasprintf("%s: %s", path, strerror(errno));
		}
		close(fd);
		free(path);
		return -1;
	}
	len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len)
		log_warn("%s: cannot record the pid: %s", path, strerror(errno));
	free(path);
	return fd;
}
