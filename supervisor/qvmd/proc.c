/* Process facts from /proc, and spawning (clone and exec, never a shell) under given ids. */
#include "proc.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
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

int
proc_uids(pid_t pid, uid_t *ruid, uid_t *euid)
{
	char path[64], buf[4096], *p;
	unsigned long r, e;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	if (read_proc(path, buf, sizeof buf) <= 0 || (p = strstr(buf, "\nUid:")) == NULL ||
	    sscanf(p + 5, "%lu %lu", &r, &e) != 2)
		return -1;
	*ruid = (uid_t)r;
	*euid = (uid_t)e;
	return 0;
}

/*
 * Why ids cannot reach a path (the child runs this with its final ids, where access(2) checks
 * exactly them): the first directory on the way that is not traversable, or the file itself.
 * Returns 0 when the path is reachable.
 */
static int
spawn_path_problem(const struct proc_path *p, const struct proc_creds *c, char *buf, size_t size)
{
	char dir[4096];
	struct stat st;
	int err;

	if (access(p->path, p->mode) == 0)
		return 0;
	err = errno;
	for (const char *s = strchr(p->path + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
		int len = (int)(s - p->path); /* the directory is printed from p->path */

		if ((size_t)len >= sizeof dir)
			break;
		memcpy(dir, p->path, (size_t)len);
		dir[len] = '\0';
		if (access(dir, X_OK) == 0)
			continue;
		if (stat(dir, &st) == 0)
			snprintf(
			    buf, size,
			    "%s %s: directory %.*s (mode %04o, owner %u:%u) is not traversable by "
			    "uid %u gid %u",
			    p->what, p->path, len, p->path, (unsigned)(st.st_mode & 07777),
			    (unsigned)st.st_uid, (unsigned)st.st_gid, (unsigned)c->uid,
			    (unsigned)c->gid);
		else
			snprintf(buf, size, "%s %s: directory %.*s: %s (as uid %u gid %u)", p->what,
			         p->path, len, p->path, strerror(errno), (unsigned)c->uid,
			         (unsigned)c->gid);
		return -1;
	}
	if (err != EACCES || stat(p->path, &st) < 0)
		snprintf(buf, size, "%s %s: %s (as uid %u gid %u)", p->what, p->path, strerror(err),
		         (unsigned)c->uid, (unsigned)c->gid);
	else
		snprintf(buf, size, "%s %s (mode %04o, owner %u:%u) is not %s by uid %u gid %u",
		         p->what, p->path, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
		         (unsigned)st.st_gid,
		         p->mode & W_OK   ? "writable"
		         : p->mode & X_OK ? "traversable"
		                          : "readable",
		         (unsigned)c->uid, (unsigned)c->gid);
	return -1;
}

/*
 * Gives up every capability and becomes uid/gid for good. 0, or -1 with the reason in buf. Runs in
 * the spawned child, which shares qvmd's memory until exec: the ids change through raw system
 * calls (credentials belong to the calling task), never through libc's wrappers, which may try to
 * change them for every thread of the process they believe they are in.
 */
static int
spawn_drop(const struct proc_creds *c, char *buf, size_t size)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	gid_t groups[2] = {c->gid, c->extra_gid};
	uid_t r, e, s;
	const char *step;

	if (c->uid == 0 || c->gid == 0) {
		snprintf(buf, size, "refusing to run as uid %u gid %u", (unsigned)c->uid,
		         (unsigned)c->gid);
		return -1;
	}
	/* The bounding set limits what any later exec could gain; only root may shrink it. */
	step = "drop the capability bounding set";
	for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
			goto fail;
	step = "setgroups";
	if (syscall(SYS_setgroups, c->extra_gid != (gid_t)-1 && c->extra_gid != c->gid ? 2 : 1,
	            groups) < 0)
		goto fail;
	step = "setresgid";
	if (syscall(SYS_setresgid, c->gid, c->gid, c->gid) < 0)
		goto fail;
	/* With every uid non-zero the kernel clears the permitted and effective sets. */
	step = "setresuid";
	if (syscall(SYS_setresuid, c->uid, c->uid, c->uid) < 0)
		goto fail;
	step = "clear the ambient capabilities";
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		goto fail;
	step = "clear the capabilities";
	memset(data, 0, sizeof data);
	if (syscall(SYS_capset, &hdr, data) < 0)
		goto fail;
	if (syscall(SYS_getresuid, &r, &e, &s) < 0 || r != c->uid || e != c->uid || s != c->uid ||
	    syscall(SYS_setuid, 0) == 0) {
		snprintf(buf, size, "still privileged after dropping to uid %u", (unsigned)c->uid);
		return -1;
	}
	return 0;
fail:
	snprintf(buf, size, "cannot run as uid %u gid %u: %s: %s", (unsigned)c->uid,
	         (unsigned)c->gid, step, strerror(errno));
	return -1;
}

/* What the spawned child needs; it lives on the parent's stack, which the child shares. */
struct spawn_args {
	char *const *argv;
	int devnull;
	int out_fd;
	const int *keep;
	size_t nkeep;
	const struct proc_creds *creds;
	int errfd;
};

/*
 * The child between clone and exec. It shares qvmd's memory (qvmd waits, suspended, until it
 * execs or exits), so it allocates nothing and changes no variable qvmd owns; its descriptor
 * table, signal handlers and ids are its own. Reports a failure on errfd and exits.
 */
static int
spawn_child(void *arg)
{
	const struct spawn_args *a = arg;
	const struct proc_creds *c = a->creds;
	char msg[1024];
	sigset_t none;
	size_t len;

	setsid();
	/* qvmd's handlers must not run here: default them before unblocking (qvmd blocked all). */
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (dup2(a->devnull, 0) < 0 || dup2(a->out_fd >= 0 ? a->out_fd : a->devnull, 1) < 0 ||
	    dup2(a->out_fd >= 0 ? a->out_fd : a->devnull, 2) < 0) {
		snprintf(msg, sizeof msg, "dup2: %s", strerror(errno));
		goto fail;
	}
	/* Exactly the descriptors QEMU is told about survive exec, whatever else qvmd has open
	 * without O_CLOEXEC. */
	if (syscall(SYS_close_range, 3, ~0u, CLOSE_RANGE_CLOEXEC) < 0) {
		snprintf(msg, sizeof msg, "close_range: %s", strerror(errno));
		goto fail;
	}
	for (size_t i = 0; i < a->nkeep; i++) {
		if (fcntl(a->keep[i], F_SETFD, 0) < 0) {
			snprintf(msg, sizeof msg, "descriptor %d: %s", a->keep[i], strerror(errno));
			goto fail;
		}
	}
	umask(077);
	if (c != NULL && spawn_drop(c, msg, sizeof msg) < 0)
		goto fail;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		snprintf(msg, sizeof msg, "no_new_privs: %s", strerror(errno));
		goto fail;
	}
	for (size_t i = 0; c != NULL && i < c->npaths; i++)
		if (spawn_path_problem(&c->paths[i], c, msg, sizeof msg) < 0)
			goto fail;
	execve(a->argv[0], a->argv, environ);
	snprintf(msg, sizeof msg, "cannot run %s: %s", a->argv[0], strerror(errno));
fail:
	len = strlen(msg);
	if (write(a->errfd, msg, len) != (ssize_t)len)
		_exit(126);
	_exit(127);
}

/* Bytes of the child's stack (spawn_path_problem's buffers are the largest user), and the
 * inaccessible page below it that stops an overflow. */
#define SPAWN_STACK_SIZE (256 * 1024)

/*
 * The child's stack, made once: qvmd is one thread and waits while a child runs on it, so one
 * stack serves every spawn. NULL if it cannot be mapped.
 */
static char *
spawn_stack_top(void)
{
	static char *top;
	long page = sysconf(_SC_PAGESIZE);
	char *base;

	if (top != NULL)
		return top;
	base = mmap(NULL, SPAWN_STACK_SIZE + (size_t)page, PROT_READ | PROT_WRITE,
	            MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (base == MAP_FAILED)
		return NULL;
	if (mprotect(base, (size_t)page, PROT_NONE) < 0) {
		munmap(base, SPAWN_STACK_SIZE + (size_t)page);
		return NULL;
	}
	top = base + (size_t)page + SPAWN_STACK_SIZE; /* the stack grows down */
	return top;
}

/*
 * Spawns without copying qvmd's page tables: fork would copy them and write-protect every page,
 * and qvmd would then take a fault on each page it writes after every spawn (at 5,000 VMs that
 * was most of a start's cost). The child shares qvmd's memory, as vfork and posix_spawn do, and
 * qvmd waits until it has exec'd or exited; CLONE_PIDFD gives the pidfd without a window for pid
 * reuse.
 */
pid_t
proc_spawn_as(char *const *argv, int out_fd, const int *keep, size_t nkeep,
              const struct proc_creds *creds, int *pidfd, char **cause)
{
	struct spawn_args a = {
	    .argv = argv, .out_fd = out_fd, .keep = keep, .nkeep = nkeep, .creds = creds};
	char msg[1024], *stack = spawn_stack_top();
	sigset_t all, old;
	size_t len = 0;
	ssize_t n;
	pid_t pid;
	int errpipe[2], err, fd = -1;

	if (stack == NULL) {
		*cause = xasprintf("mmap of a stack for the child: %s", strerror(errno));
		return -1;
	}
	a.devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (a.devnull < 0) {
		*cause = xasprintf("open /dev/null: %s", strerror(errno));
		return -1;
	}
	/* The child reports what failed before exec here; exec closes it (O_CLOEXEC), so EOF
	 * without a message means the program runs. */
	if (pipe2(errpipe, O_CLOEXEC) < 0) {
		*cause = xasprintf("pipe: %s", strerror(errno));
		close(a.devnull);
		return -1;
	}
	a.errfd = errpipe[1];
	/* No handler of qvmd's may run in the child before it has reset them. */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = clone(spawn_child, stack, CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &a, &fd);
	err = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(errpipe[1]);
	close(a.devnull);
	if (pid < 0) {
		close(errpipe[0]);
		*cause = xasprintf("clone: %s", strerror(err));
		return -1;
	}
	while (len < sizeof msg - 1 &&
	       ((n = read(errpipe[0], msg + len, sizeof msg - 1 - len)) > 0 ||
	        (n < 0 && errno == EINTR)))
		len += n > 0 ? (size_t)n : 0;
	close(errpipe[0]);
	if (len > 0) {
		msg[len] = '\0';
		close(fd);
		waitpid(pid, NULL, 0);
		*cause = xstrdup(msg);
		return -1;
	}
	*pidfd = fd;
	return pid;
}

pid_t
proc_spawn(char *const *argv, int out_fd, const int *keep, size_t nkeep, int *pidfd, char **cause)
{
	return proc_spawn_as(argv, out_fd, keep, nkeep, NULL, pidfd, cause);
}

/* Whether a line of QEMU's log is one of its warnings ("PROGRAM: warning: ..." or "warning: ..."):
 * they come at start-up (a CPU feature TCG lacks, a deprecated option) and never explain why
 * QEMU failed. */
static bool
is_warning_line(const char *line, size_t len)
{
	static const char w[] = "warning: ";
	const char *colon = memchr(line, ':', len);

	if (len >= sizeof w - 1 && memcmp(line, w, sizeof w - 1) == 0)
		return true;
	/* The program name: no blank before its colon. */
	if (colon == NULL || memchr(line, ' ', (size_t)(colon - line)) != NULL)
		return false;
	len -= (size_t)(colon - line) + 1;
	line = colon + 1;
	return len >= sizeof w && line[0] == ' ' && memcmp(line + 1, w, sizeof w - 1) == 0;
}

char *
proc_file_tail(const char *path, long offset, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf, *out, *start;
	ssize_t n;
	size_t o = 0, len;

	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return xstrdup("");
	}
	/* Read more than max: the warnings dropped below may fill the last max bytes. */
	if (st.st_size - offset > (off_t)PROC_TAIL_WINDOW)
		offset = (long)(st.st_size - (off_t)PROC_TAIL_WINDOW);
	if (offset < 0)
		offset = 0;
	buf = xcalloc(1, PROC_TAIL_WINDOW + 1);
	n = pread(fd, buf, PROC_TAIL_WINDOW, offset);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = '\0';
	out = xcalloc(1, (size_t)n * 3 + 1);
	for (char *line = buf, *end; line < buf + n; line = end + 1) {
		if ((end = memchr(line, '\n', (size_t)(buf + n - line))) == NULL)
			end = buf + n;
		if (end == line || is_warning_line(line, (size_t)(end - line)))
			continue;
		size_t at = o, sep = o > 0 ? 3 : 0;

		if (sep > 0)
			memcpy(out + o, " | ", 3);
		o += sep;
		for (char *c = line; c < end; c++)
			if ((unsigned char)*c >= 0x20 || *c == '\t')
				out[o++] = *c;
		if (o == at + sep) /* nothing printable: no line */
			o = at;
	}
	out[o] = '\0';
	free(buf);
	/* The last max bytes, from a line's start when one begins in them. */
	if (o > max) {
		start = out + o - max;
		len = max;
		for (char *c = start; c + 3 <= out + o; c++)
			if (memcmp(c, " | ", 3) == 0) {
				len -= (size_t)(c + 3 - start);
				start = c + 3;
				break;
			}
		for (; len > 0 && *start == ' '; len--)
			start++;
		memmove(out, start, len + 1);
	}
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
