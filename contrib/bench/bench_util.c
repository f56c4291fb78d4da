/* contrib/bench/bench_util: helpers shared by lifecycle_bench and hotplug_bench (see the header).
 */
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#define BENCH_GREETING_TIMEOUT_MS 60000

extern char **environ;

int64_t
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
bench_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static int
bench_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

int64_t
bench_quantile(int64_t *v, size_t n, double q)
{
	size_t i;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), bench_cmp);
	i = (size_t)(q * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

int64_t *
bench_samples(size_t n)
{
	int64_t *v = calloc(n, sizeof(*v));

	if (v == NULL)
		abort();
	return v;
}

void
bench_report(const char *key, const char *what, int64_t *ns, size_t n)
{
	double med = (double)bench_quantile(ns, n, 0.5) / 1e6;

	printf("%-58s median %8.3f ms  p10 %8.3f  p90 %8.3f  min %8.3f  (n=%zu)\n", what, med,
	       (double)bench_quantile(ns, n, 0.1) / 1e6, (double)bench_quantile(ns, n, 0.9) / 1e6,
	       (double)ns[0] / 1e6, n);
	printf("%s=%.3f\n", key, med);
	fflush(stdout);
}

static pid_t
bench_spawn(char *const argv[], const char *outpath)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int rc;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (outpath != NULL)
		posix_spawn_file_actions_addopen(&fa, 1, outpath, O_WRONLY | O_APPEND | O_CREAT,
		                                 0644);
	else
		posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0)
		bench_die("cannot run %s: %s", argv[0], strerror(rc));
	return pid;
}

int
bench_run(char *const argv[], int64_t *elapsed_ns)
{
	int64_t t0 = bench_now_ns();
	pid_t pid = bench_spawn(argv, NULL);
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	*elapsed_ns = bench_now_ns() - t0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

char **
bench_read_argv(const char *path)
{
	FILE *f = fopen(path, "r");
	char **argv = NULL, *line = NULL;
	size_t n = 0, cap = 0;
	ssize_t len;

	if (f == NULL)
		bench_die("%s: %s", path, strerror(errno));
	while ((len = getline(&line, &cap, f)) >= 0) {
		if (len > 0 && line[len - 1] == '\n')
			line[len - 1] = '\0';
		argv = realloc(argv, (n + 2) * sizeof(*argv));
		if (argv == NULL)
			abort();
		argv[n++] = strdup(line);
	}
	free(line);
	fclose(f);
	if (n == 0)
		bench_die("%s: empty", path);
	argv[n] = NULL;
	return argv;
}

void
bench_free_argv(char **argv)
{
	for (char **a = argv; a && *a; a++)
		free(*a);
	free(argv);
}

char *
bench_qmp_path(char **argv)
{
	for (size_t i = 0; argv[i] && argv[i + 1]; i++) {
		if (strcmp(argv[i], "-qmp") == 0 && strncmp(argv[i + 1], "unix:", 5) == 0) {
			char *p = strdup(argv[i + 1] + 5), *comma = strchr(p, ',');

			if (comma != NULL)
				*comma = '\0';
			return p;
		}
	}
	bench_die("no -qmp unix:PATH in the command line");
}

/* Connects to path; -1 while nothing listens there yet. */
int
bench_dial(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	if (fd < 0)
		bench_die("socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0)
		return fd;
	close(fd);
	return -1;
}

/* Reads until the first newline (the greeting); -1 on EOF or timeout. */
static int
bench_read_line(int fd, int64_t deadline_ns)
{
	char c[4096];

	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int64_t left = (deadline_ns - bench_now_ns()) / 1000000;
		ssize_t n;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			return -1;
		n = recv(fd, c, sizeof c, MSG_PEEK);
		if (n <= 0)
			return -1;
		char *nl = memchr(c, '\n', (size_t)n);
		if (nl != NULL) {
			/* Consume exactly the greeting line. */
			if (recv(fd, c, (size_t)(nl - c + 1), 0) < 0)
				return -1;
			return 0;
		}
		if ((size_t)n == sizeof c)
			return -1;
	}
}

pid_t
bench_spawn_qemu(char **argv, const char *qmp_path, const char *logpath, int *fdp,
                 int64_t *elapsed_ns)
{
	char *dir = strdup(qmp_path), *slash = strrchr(dir, '/');
	int64_t t0, deadline;
	int ino, fd = -1;
	pid_t pid;

	if (slash == NULL)
		bench_die("%s: not a path", qmp_path);
	*slash = '\0';
	unlink(qmp_path);
	ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (ino < 0 || inotify_add_watch(ino, dir, IN_CREATE) < 0)
		bench_die("inotify %s: %s", dir, strerror(errno));
	t0 = bench_now_ns();
	deadline = t0 + (int64_t)BENCH_GREETING_TIMEOUT_MS * 1000000;
	pid = bench_spawn(argv, logpath);
	/* Wake on every entry created in the directory (the pidfile, then the socket); QEMU binds
	 * before it listens, so a refused connect just waits for the next event or 1 ms. */
	while ((fd = bench_dial(qmp_path)) < 0) {
		struct pollfd pfd = {.fd = ino, .events = POLLIN};
		char buf[4096];
		int st;

		if (bench_now_ns() > deadline)
			bench_die("%s: no QMP socket after %d ms", argv[0],
			          BENCH_GREETING_TIMEOUT_MS);
		if (waitpid(pid, &st, WNOHANG) == pid)
			bench_die("%s exited before its QMP socket appeared (see %s)", argv[0],
			          logpath);
		if (poll(&pfd, 1, 1) > 0)
			while (read(ino, buf, sizeof buf) > 0)
				;
	}
	if (bench_read_line(fd, deadline) < 0)
		bench_die("%s: no QMP greeting", argv[0]);
	*elapsed_ns = bench_now_ns() - t0;
	close(ino);
	free(dir);
	*fdp = fd;
	return pid;
}

void
bench_qmp_raw(int fd, const char *json)
{
	int64_t deadline = bench_now_ns() + (int64_t)BENCH_GREETING_TIMEOUT_MS * 1000000;
	size_t len = strlen(json);
	char line[4096];

	if (send(fd, json, len, MSG_NOSIGNAL) != (ssize_t)len ||
	    send(fd, "\n", 1, MSG_NOSIGNAL) != 1)
		bench_die("raw QMP %s: send failed", json);
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t n;
		char *nl;

		if (poll(&pfd, 1, (int)((deadline - bench_now_ns()) / 1000000)) <= 0)
			bench_die("raw QMP %s: no reply", json);
		n = recv(fd, line, sizeof line - 1, MSG_PEEK);
		if (n <= 0)
			bench_die("raw QMP %s: connection closed", json);
		nl = memchr(line, '\n', (size_t)n);
		if (nl == NULL) {
			if ((size_t)n == sizeof line - 1)
				bench_die("raw QMP %s: overlong line", json);
			continue;
		}
		if (recv(fd, line, (size_t)(nl - line + 1), 0) < 0)
			bench_die("raw QMP %s: recv failed", json);
		*nl = '\0';
		if (strstr(line, "\"event\"") != NULL && strstr(line, "\"return\"") == NULL)
			continue;
		if (strncmp(line, "{\"return\"", 9) != 0)
			bench_die("raw QMP %s: %s", json, line);
		return;
	}
}

void
bench_kill(pid_t pid)
{
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

struct bench_ctl {
	int fd;
	int64_t next_id;
	char *buf;
	size_t len, cap;
};

struct bench_ctl *
bench_ctl_connect(const char *path)
{
	struct bench_ctl *c = calloc(1, sizeof(*c));

	if (c == NULL)
		abort();
	c->fd = bench_dial(path);
	if (c->fd < 0)
		bench_die("cannot connect to %s: %s", path, strerror(errno));
	c->next_id = 1;
	return c;
}

void
bench_ctl_close(struct bench_ctl *c)
{
	if (c == NULL)
		return;
	close(c->fd);
	free(c->buf);
	free(c);
}

struct json_object *
bench_ctl_call(struct bench_ctl *c, const char *cmd, const char *vm, const char *args, int *ok)
{
	char req[8192];
	int64_t id = c->next_id++;
	int n =
	    snprintf(req, sizeof req, "{\"id\":%lld,\"cmd\":\"%s\",\"vm\":\"%s\",\"args\":%s}\n",
	             (long long)id, cmd, vm ? vm : "", args ? args : "{}");
	struct json_object *reply, *jok, *jid;
	char *nl;

	if (n < 0 || (size_t)n >= sizeof req)
		bench_die("request too long");
	for (const char *p = req; n > 0;) {
		ssize_t w = send(c->fd, p, (size_t)n, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			bench_die("control socket: send: %s", strerror(errno));
		}
		p += w;
		n -= (int)w;
	}
	for (;;) {
		/* Replies are one line each; lines of other ids (none here) are skipped. */
		while ((nl = c->len ? memchr(c->buf, '\n', c->len) : NULL) == NULL) {
			ssize_t r;

			if (c->cap - c->len < 65536) {
				c->cap = c->cap * 2 + 65536;
				c->buf = realloc(c->buf, c->cap);
				if (c->buf == NULL)
					abort();
			}
			r = read(c->fd, c->buf + c->len, c->cap - c->len);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				bench_die("control socket closed");
			c->len += (size_t)r;
		}
		*nl = '\0';
		reply = json_tokener_parse(c->buf);
		c->len -= (size_t)(nl + 1 - c->buf);
		memmove(c->buf, nl + 1, c->len);
		if (reply == NULL)
			bench_die("unparsable reply from qvmd");
		if (json_object_object_get_ex(reply, "id", &jid) &&
		    json_object_get_int64(jid) == id)
			break;
		json_object_put(reply);
	}
	*ok = json_object_object_get_ex(reply, "ok", &jok) && json_object_get_boolean(jok);
	return reply;
}

static bool
bench_file_contains(const char *path, const char *marker)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	bool found = false;

	if (f == NULL)
		return false;
	while (!found && fgets(line, sizeof line, f) != NULL)
		found = strstr(line, marker) != NULL;
	fclose(f);
	return found;
}

void
bench_wait_marker(const char *a, const char *b, const char *marker, int timeout_s)
{
	for (int i = 0; i < timeout_s * 10; i++) {
		if (bench_file_contains(a, marker) && bench_file_contains(b, marker))
			return;
		usleep(100000);
	}
	bench_die("no %s in %s and %s after %d s", marker, a, b, timeout_s);
}

void
bench_ctl_timed(char **argv, int64_t *ns)
{
	int rc = bench_run(argv, ns);

	if (rc != 0) {
		char what[512] = "qvmctl";
		size_t off = strlen(what);

		/* argv: qvmctl -s SOCKET VERB ARGS... */
		for (char **a = argv + 3; *a && off < sizeof what; a++)
			off += (size_t)snprintf(what + off, sizeof what - off, " %s", *a);
		bench_die("%s exited with %d", what, rc);
	}
}
