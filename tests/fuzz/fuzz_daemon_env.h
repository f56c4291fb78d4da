/*
 * A scratch daemon set-up shared by the supervisor/ harnesses: a temp directory with vms/, run/,
 * state/ and images/, a qvmd.conf naming them (qemu and qemu-img are /bin/false, so an accidental
 * start fails fast), and a kill() that aborts: no input may make the daemon signal a process.
 */
#ifndef QVMD_FUZZ_DAEMON_ENV_H
#define QVMD_FUZZ_DAEMON_ENV_H

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "fuzz_util.h"

/* The daemon code calls kill() only on processes it spawned; the harnesses spawn none. */
int
kill(pid_t pid, int sig)
{
	fprintf(stderr, "fuzz: kill(%d, %d) called\n", (int)pid, sig);
	abort();
}

static char fuzz_env_dir[64];

static int
fuzz_env_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void
fuzz_env_cleanup(void)
{
	if (fuzz_env_dir[0] != '\0')
		nftw(fuzz_env_dir, fuzz_env_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes text to dir/name (dir NULL: the scratch directory). */
static void
fuzz_env_write(const char *dir, const char *name, const char *text, size_t len)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir ? dir : fuzz_env_dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(write(fd, text, len) == (ssize_t)len);
	close(fd);
}

/* Makes the scratch directory and loads its qvmd.conf into conf. */
static void
fuzz_env_init(const char *prefix, struct daemon_config *conf)
{
	static const char *const subdirs[] = {"vms", "run", "state", "images"};
	struct cfg_errors errs;
	char path[256], *text;

	/* On tmpfs when there is one: the harnesses are bound by file operations. */
	snprintf(fuzz_env_dir, sizeof(fuzz_env_dir), "%s/%s.XXXXXX",
	         access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", prefix);
	FUZZ_CHECK(mkdtemp(fuzz_env_dir) != NULL);
	atexit(fuzz_env_cleanup);
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", fuzz_env_dir, subdirs[i]);
		FUZZ_CHECK(mkdir(path, 0700) == 0);
	}
	FUZZ_CHECK(
	    asprintf(&text,
	             "[qvmd]\nvm_dir = %1$s/vms\nrun_dir = %1$s/run\nstate_dir = %1$s/state\n"
	             "control_socket = %1$s/qvmd.sock\nqemu = /bin/false\n"
	             "qemu_img = /bin/false\nimage_dirs = %1$s/images /etc\nlog_level = error\n",
	             fuzz_env_dir) > 0);
	fuzz_env_write(NULL, "qvmd.conf", text, strlen(text));
	free(text);
	snprintf(path, sizeof(path), "%s/qvmd.conf", fuzz_env_dir);
	cfg_errors_init(&errs);
	FUZZ_CHECK(cfg_daemon_load(path, conf, &errs) == 0);
	cfg_errors_free(&errs);
	signal(SIGPIPE, SIG_IGN);
}

#endif
