/* Unit tests for supervisor/proc: process facts from /proc and spawning without a shell. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

/* Field 22 of /proc/PID/stat read the simple way (the test process has no odd command name). */
static uint64_t
starttime_by_fields(pid_t pid)
{
	char path[64], buf[1024];
	FILE *f;
	char *p, *save = NULL;
	uint64_t v = 0;
	int field = 0;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof buf, f));
	fclose(f);
	for (p = strtok_r(buf, " ", &save); p; p = strtok_r(NULL, " ", &save)) {
		if (++field == 22)
			v = strtoull(p, NULL, 10);
	}
	return v;
}

static void
test_proc_starttime_is_field_22(void **state)
{
	uint64_t t = 0;

	assert_int_equal(proc_starttime(getpid(), &t), 0);
	assert_true(t > 0);
	assert_int_equal(t, starttime_by_fields(getpid()));
	assert_int_equal(proc_starttime(0x7ffffff0, &t), -1);
}

static void
test_proc_starttime_survives_odd_command_names(void **state)
{
	char *argv[] = {"/bin/sleep", "5", NULL};
	int pidfd;
	char *cause = NULL;
	pid_t pid;
	uint64_t before = 0, after = 0;

	/* prctl-free way to get a command name with ") (" in it: a symlink named like that. */
	char dir[] = "/tmp/qvmd-proc-XXXXXX", link[128];

	assert_non_null(mkdtemp(dir));
	snprintf(link, sizeof link, "%s/a) (b c", dir);
	assert_int_equal(symlink("/bin/sleep", link), 0);
	argv[0] = link;
	pid = proc_spawn(argv, -1, NULL, 0, &pidfd, &cause);
	assert_true(pid > 0);
	usleep(100 * 1000);
	assert_int_equal(proc_starttime(pid, &before), 0);
	usleep(100 * 1000);
	assert_int_equal(proc_starttime(pid, &after), 0);
	assert_int_equal(before, after); /* not a field that changes while it runs */
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(pidfd);
	unlink(link);
	rmdir(dir);
}

static void
test_proc_cmdline_has_adjacent_pairs(void **state)
{
	char pidfile[64], *cause = NULL;
	int pidfd;
	pid_t pid, found;

	/* sh keeps its own argv (the trailing "true" stops it from exec'ing sleep). */
	snprintf(pidfile, sizeof pidfile, "/run/qvmd-test/%d/qemu.pid", (int)getpid());
	char *argv[] = {"/bin/sh", "-c", "sleep 30; true", "marker", "-pidfile", pidfile, NULL};

	pid = proc_spawn(argv, -1, NULL, 0, &pidfd, &cause);
	assert_true(pid > 0);
	usleep(200 * 1000);
	assert_true(proc_cmdline_has(pid, "-pidfile", pidfile));
	assert_true(proc_cmdline_has(pid, "-c", "sleep 30; true"));
	assert_false(proc_cmdline_has(pid, pidfile, "-pidfile")); /* order matters */
	assert_false(proc_cmdline_has(pid, "marker", pidfile));   /* adjacency matters */
	assert_false(proc_cmdline_has(getpid(), "-pidfile", pidfile));
	found = proc_find("-pidfile", pidfile, "-c", "sleep 30; true");
	assert_int_equal(found, pid);
	assert_int_equal(proc_find("-pidfile", pidfile, "-c", "other"), 0);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(pidfd);
	assert_int_equal(proc_find("-pidfile", pidfile, "-c", "sleep 30; true"), 0);
}

static void
test_proc_spawn_passes_only_kept_fds(void **state)
{
	int keep[2], other[2], pidfd, status;
	char *cause = NULL, script[256];
	pid_t pid;

	assert_int_equal(pipe2(keep, O_CLOEXEC), 0);
	/* A descriptor qvmd left inheritable by mistake does not reach the child either. */
	assert_int_equal(pipe(other), 0);
	/* The child checks that the kept fd is open and the other one is not. */
	snprintf(script, sizeof script, "[ -e /proc/self/fd/%d ] && [ ! -e /proc/self/fd/%d ]",
	         keep[1], other[1]);
	char *argv[] = {"/bin/sh", "-c", script, NULL};
	pid = proc_spawn(argv, -1, &keep[1], 1, &pidfd, &cause);
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(pidfd);
	for (int i = 0; i < 2; i++) {
		close(keep[i]);
		close(other[i]);
	}
}

static void
test_proc_spawn_pidfd_reports_exit(void **state)
{
	char *argv[] = {"/bin/true", NULL};
	char *cause = NULL;
	int pidfd;
	pid_t pid = proc_spawn(argv, -1, NULL, 0, &pidfd, &cause);
	struct pollfd p;

	assert_true(pid > 0);
	p.fd = pidfd;
	p.events = POLLIN;
	assert_int_equal(poll(&p, 1, 5000), 1);
	waitpid(pid, NULL, 0);
	close(pidfd);
}

static void
test_proc_spawn_missing_program_fails(void **state)
{
	char *argv[] = {"/nonexistent/qemu", NULL};
	char *cause = NULL;
	int pidfd = -1;

	assert_int_equal(proc_spawn(argv, -1, NULL, 0, &pidfd, &cause), -1);
	assert_non_null(cause);
	assert_non_null(strstr(cause, "/nonexistent/qemu"));
	free(cause);
}

/* Runs argv under creds with stdout to a temp file; returns the output (caller frees) or NULL
 * with *cause when the spawn failed. */
static char *
spawn_output(char *const *argv, const struct proc_creds *creds, char **cause)
{
	char path[] = "/tmp/qvmd-spawn-XXXXXX", *out = calloc(1, 65536);
	int fd = mkstemp(path), pidfd, status;
	pid_t pid;

	assert_true(fd >= 0);
	unlink(path);
	pid = proc_spawn_as(argv, fd, NULL, 0, creds, &pidfd, cause);
	if (pid < 0) {
		close(fd);
		free(out);
		return NULL;
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	close(pidfd);
	assert_true(pread(fd, out, 65535, 0) >= 0);
	close(fd);
	return out;
}

/* The value after "Key:" in a /proc/PID/status text, spaces squeezed, e.g. "200123 200123 ..." */
static void
status_field(const char *status, const char *key, char *out, size_t size)
{
	const char *p = strstr(status, key);
	size_t n = 0;

	assert_non_null(p);
	for (p += strlen(key); *p == ':' || *p == '\t' || *p == ' '; p++)
		;
	for (; *p != '\n' && *p != '\0' && n + 1 < size; p++)
		if (*p != '\t' || (n > 0 && out[n - 1] != ' '))
			out[n++] = *p == '\t' ? ' ' : *p;
	out[n] = '\0';
}

static void
test_proc_spawn_as_drops_every_privilege(void **state)
{
	struct proc_creds c = {.uid = 200123, .gid = 200124, .extra_gid = 200125};
	char *argv[] = {"/bin/cat", "/proc/self/status", NULL};
	char *cause = NULL, *out, v[128];

	if (geteuid() != 0)
		skip();
	out = spawn_output(argv, &c, &cause);
	assert_non_null(out);
	status_field(out, "\nUid", v, sizeof v);
	assert_string_equal(v, "200123 200123 200123 200123");
	status_field(out, "\nGid", v, sizeof v);
	assert_string_equal(v, "200124 200124 200124 200124");
	status_field(out, "\nGroups", v, sizeof v);
	assert_string_equal(v, "200124 200125 ");
	status_field(out, "\nCapInh", v, sizeof v);
	assert_string_equal(v, "0000000000000000");
	status_field(out, "\nCapPrm", v, sizeof v);
	assert_string_equal(v, "0000000000000000");
	status_field(out, "\nCapEff", v, sizeof v);
	assert_string_equal(v, "0000000000000000");
	status_field(out, "\nCapBnd", v, sizeof v);
	assert_string_equal(v, "0000000000000000");
	status_field(out, "\nCapAmb", v, sizeof v);
	assert_string_equal(v, "0000000000000000");
	status_field(out, "\nNoNewPrivs", v, sizeof v);
	assert_string_equal(v, "1");
	free(out);

	/* Never root, whatever the caller asks. */
	c.uid = 0;
	assert_null(spawn_output(argv, &c, &cause));
	assert_string_equal(cause, "refusing to run as uid 0 gid 200124");
	free(cause);
}

static void
on_usr1(int sig)
{
	(void)sig;
}

/*
 * The child shares qvmd's memory until exec (clone, not fork): what it changes for itself (ids,
 * signal dispositions and mask) must stay its own, and the program it runs starts with default
 * dispositions and nothing blocked, whatever qvmd ignores or blocks.
 */
static void
test_proc_spawn_leaves_the_parent_as_it_was(void **state)
{
	struct proc_creds c = {.uid = 200123, .gid = 200124, .extra_gid = (gid_t)-1};
	char *argv[] = {"/bin/cat", "/proc/self/status", NULL};
	char *cause = NULL, *out, v[128];
	struct sigaction usr1 = {.sa_handler = on_usr1}, old_usr1, now;
	sigset_t blocked, old_mask, mask;
	uid_t r, e, s;

	(void)state;
	sigemptyset(&usr1.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &usr1, &old_usr1), 0);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGUSR2);
	sigprocmask(SIG_BLOCK, &blocked, &old_mask);

	out = spawn_output(argv, geteuid() == 0 ? &c : NULL, &cause);
	assert_non_null(out);
	status_field(out, "\nSigBlk", v, sizeof v);
	assert_string_equal(v, "0000000000000000");
	status_field(out, "\nSigIgn", v, sizeof v);
	assert_string_equal(v, "0000000000000000");
	free(out);

	assert_int_equal(getresuid(&r, &e, &s), 0);
	if (geteuid() == 0 || r == 0)
		assert_true(r == 0 && e == 0 && s == 0);
	assert_int_equal(sigaction(SIGUSR1, NULL, &now), 0);
	assert_ptr_equal(now.sa_handler, on_usr1);
	assert_int_equal(sigaction(SIGPIPE, NULL, &now), 0);
	assert_ptr_equal(now.sa_handler, SIG_IGN);
	sigprocmask(SIG_SETMASK, NULL, &mask);
	assert_true(sigismember(&mask, SIGUSR2));
	assert_false(sigismember(&mask, SIGUSR1));

	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	signal(SIGPIPE, SIG_DFL);
	sigaction(SIGUSR1, &old_usr1, NULL);
}

static void
test_proc_spawn_as_names_the_untraversable_directory(void **state)
{
	char dir[] = "/tmp/qvmd-paths-XXXXXX", sub[128], file[160], want[512];
	struct proc_path paths[] = {{"kernel", file, R_OK}};
	struct proc_creds c = {
	    .uid = 200123, .gid = 200123, .extra_gid = (gid_t)-1, .paths = paths, .npaths = 1};
	char *argv[] = {"/bin/true", NULL};
	char *cause = NULL, *out;
	int fd;

	if (geteuid() != 0)
		skip();
	assert_non_null(mkdtemp(dir));
	snprintf(sub, sizeof sub, "%s/boot", dir);
	snprintf(file, sizeof file, "%s/vmlinuz", sub);
	assert_int_equal(mkdir(sub, 0755), 0);
	fd = open(file, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);

	/* mkdtemp made dir 0700: the kernel below it cannot be reached. */
	assert_null(spawn_output(argv, &c, &cause));
	snprintf(want, sizeof want,
	         "kernel %s: directory %s (mode 0700, owner 0:0) is not traversable "
	         "by uid 200123 gid 200123",
	         file, dir);
	assert_string_equal(cause, want);
	free(cause);

	/* Traversable, but the file is root's alone. */
	assert_int_equal(chmod(dir, 0711), 0);
	assert_int_equal(chmod(file, 0600), 0);
	assert_null(spawn_output(argv, &c, &cause));
	snprintf(want, sizeof want,
	         "kernel %s (mode 0600, owner 0:0) is not readable by uid 200123 gid 200123", file);
	assert_string_equal(cause, want);
	free(cause);

	/* Readable: the program runs. */
	assert_int_equal(chmod(file, 0644), 0);
	out = spawn_output(argv, &c, &cause);
	assert_non_null(out);
	free(out);
	unlink(file);
	rmdir(sub);
	rmdir(dir);
}

static void
test_proc_uids_reads_status(void **state)
{
	uid_t r = 1, e = 1;

	assert_int_equal(proc_uids(getpid(), &r, &e), 0);
	assert_int_equal(r, getuid());
	assert_int_equal(e, geteuid());
	assert_int_equal(proc_uids(0x7ffffff0, &r, &e), -1);
}

static void
test_proc_file_tail_joins_last_lines(void **state)
{
	char path[] = "/tmp/qvmd-tail-XXXXXX", *tail;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "old line\nqemu: bad thing\nsecond\n", 32), 32);
	close(fd);
	tail = proc_file_tail(path, 9, 600);
	assert_string_equal(tail, "qemu: bad thing | second");
	free(tail);
	tail = proc_file_tail(path, 0, 7);
	assert_string_equal(tail, "second");
	free(tail);
	unlink(path);
	tail = proc_file_tail(path, 0, 100);
	assert_string_equal(tail, "");
	free(tail);
}

static void
test_proc_file_tail_leaves_out_qemu_warnings(void **state)
{
	static const char log[] =
	    "qemu-system-x86_64: warning: TCG doesn't support requested feature: "
	    "CPUID.01H:ECX.vmx\n"
	    "warning: host doesn't support requested feature\n"
	    "\n"
	    "qemu-system-x86_64: -blockdev node-name=d: Could not open '/dev/fdset/1': warning: "
	    "no\n"
	    "qemu-system-x86_64: terminating on signal 15 from pid 7 (qvmd)\n";
	char path[] = "/tmp/qvmd-tail-XXXXXX", *tail, *big;
	int fd = mkstemp(path);
	size_t n = PROC_TAIL_WINDOW / 2;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, log, sizeof log - 1), (ssize_t)(sizeof log - 1));
	tail = proc_file_tail(path, 0, 600);
	assert_string_equal(tail,
	                    "qemu-system-x86_64: -blockdev node-name=d: Could not open "
	                    "'/dev/fdset/1': warning: no | qemu-system-x86_64: terminating on "
	                    "signal 15 from pid 7 (qvmd)");
	free(tail);
	/* More warnings than max bytes after the error: the error is still found. */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, "qemu: the error\n", 16, 0), 16);
	big = malloc(n);
	assert_non_null(big);
	for (size_t i = 0; i < n; i += 32)
		memcpy(big + i, "qemu: warning: feature missing!\n", 32);
	assert_int_equal(pwrite(fd, big, n, 16), (ssize_t)n);
	free(big);
	close(fd);
	tail = proc_file_tail(path, 0, 600);
	assert_string_equal(tail, "qemu: the error");
	free(tail);
	/* Cut to max: from a line's start when one begins in the last max bytes. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "first line\nsecond\n", 18), 18);
	close(fd);
	tail = proc_file_tail(path, 0, 10);
	assert_string_equal(tail, "second");
	free(tail);
	unlink(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_proc_starttime_is_field_22),
	    cmocka_unit_test(test_proc_starttime_survives_odd_command_names),
	    cmocka_unit_test(test_proc_cmdline_has_adjacent_pairs),
	    cmocka_unit_test(test_proc_spawn_passes_only_kept_fds),
	    cmocka_unit_test(test_proc_spawn_pidfd_reports_exit),
	    cmocka_unit_test(test_proc_spawn_missing_program_fails),
	    cmocka_unit_test(test_proc_spawn_as_drops_every_privilege),
	    cmocka_unit_test(test_proc_spawn_leaves_the_parent_as_it_was),
	    cmocka_unit_test(test_proc_spawn_as_names_the_untraversable_directory),
	    cmocka_unit_test(test_proc_uids_reads_status),
	    cmocka_unit_test(test_proc_file_tail_joins_last_lines),
	    cmocka_unit_test(test_proc_file_tail_leaves_out_qemu_warnings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
