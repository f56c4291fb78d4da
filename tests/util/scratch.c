/* Scratch space for cmocka tests that work on real files (scratch.h). */
#include "scratch.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

char *
scratch_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	assert_true(vasprintf(&s, fmt, ap) >= 0);
	va_end(ap);
	return s;
}

char *
scratch_dir_new(const char *tag)
{
	char *dir = scratch_printf("/tmp/qvmd-%s-XXXXXX", tag);

	assert_non_null(mkdtemp(dir));
	return dir;
}

void
scratch_dir_remove(char *dir)
{
	char *argv[] = {"/bin/rm", "-rf", dir, NULL};

	assert_int_equal(scratch_run(argv, NULL), 0);
	free(dir);
}

int
scratch_run(char *const argv[], const char *out)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (fd < 0 || dup2(fd, 1) < 0)
			_exit(126);
		execv(argv[0], argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}
