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
	assert_int_equal(pipe2(other, O_CLOEXEC), 0);
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
	    cmocka_unit_test(test_proc_file_tail_joins_last_lines),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
