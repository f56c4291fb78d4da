/*
 * lifecycle_bench: the timing parts of contrib/bench/lifecycle-bench.sh that a shell cannot do
 * precisely. Every figure is printed as a human line and a KEY=VALUE line (milliseconds) that the
 * script picks up.
 *
 *   lifecycle_bench cli KEY N CMD [ARG...]
 *       Runs CMD N times, one after the other (spawn to exit, output discarded); fails if a run
 *       fails. Used for "qvmctl status NAME" and "virsh domstate NAME".
 *   lifecycle_bench qmp ARGVFILE LOG CTLSOCK VM N
 *       Starts the QEMU of ARGVFILE (qvmd --print-cmdline of an identical VM, with its own QMP
 *       socket), pauses it like the VM the daemon runs, then measures: a raw one-shot client
 *       (connect, greeting, qmp_capabilities, query-status, close; 200 times), and N round trips
 *       of query-status on one QMP connection against N "status VM" requests on one control
 *       connection, in 10 alternating rounds so that machine noise hits both alike.
 *   lifecycle_bench startcmp QVMCTL CTLSOCK VM ARGVFILE LOG N
 *       N times, alternately: exec ARGVFILE's QEMU and time until its QMP greeting, and on until
 *       qmp_capabilities and cont are answered (then SIGKILL), and "qvmctl start VM" until it
 *       returns (the guest runs; then "qvmctl kill VM", untimed). QEMU 7.2 sends the greeting
 *       from its monitor thread while the machine is still being set up, so the greeting alone
 *       is not "QEMU ready": both differences are printed.
 *   lifecycle_bench many CTLSOCK PAR PREFIX N CMD [CMD2]
 *       Sends CMD (then CMD2 once CMD succeeded) for the VMs PREFIX1 .. PREFIXN over PAR control
 *       connections, each with one request in flight (PAR clients without qvmctl's exec cost);
 *       prints the wall time and the number of failures.
 *   lifecycle_bench killvms DIR
 *       SIGKILLs every process named by a DIR/<dir>/run/<vm>/qemu/qemu.pid whose command line
 * mentions DIR/ (a pid alone is not trusted), waits up to 10 s until they are gone; prints how
 * many.
 */
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bench_util.h"
#include "qmp_sync.h"

#define ONESHOT_RUNS 200
#define ROUNDS       10

static void
usage(void)
{
	fputs("usage: lifecycle_bench cli KEY N CMD [ARG...]\n"
	      "       lifecycle_bench qmp ARGVFILE LOG CTLSOCK VM N\n"
	      "       lifecycle_bench startcmp QVMCTL CTLSOCK VM ARGVFILE LOG N\n"
	      "       lifecycle_bench many CTLSOCK PAR PREFIX N CMD [CMD2]\n"
	      "       lifecycle_bench killvms DIR\n",
	      stderr);
	exit(2);
}

static size_t
count_arg(const char *s)
{
	long n = strtol(s, NULL, 10);

	if (n <= 0)
		usage();
	return (size_t)n;
}

static int
cmd_cli(int argc, char **argv)
{
	size_t n;
	int64_t *ns;
	char what[256];

	if (argc < 4)
		usage();
	n = count_arg(argv[2]);
	ns = bench_samples(n);
	for (size_t i = 0; i < n; i++) {
		int rc = bench_run(&argv[3], &ns[i]);

		if (rc != 0)
			bench_die("%s exited with %d (run %zu)", argv[3], rc, i + 1);
	}
	/* "qvmctl status b1 (process start to exit)": the command's base name, no socket option. */
	{
		const char *base = strrchr(argv[3], '/');
		size_t off;

		off = (size_t)snprintf(what, sizeof what, "%s", base ? base + 1 : argv[3]);
		for (int i = 4; i < argc && off < sizeof what; i++) {
			if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
				i++;
				continue;
			}
			off += (size_t)snprintf(what + off, sizeof what - off, " %s", argv[i]);
		}
		if (off < sizeof what)
			snprintf(what + off, sizeof what - off, " (process start to exit)");
	}
	bench_report(argv[1], what, ns, n);
	free(ns);
	return 0;
}

/* One QMP command on conn that must succeed. */
static void
qmp_ok(struct qmp_sync *conn, const char *cmd)
{
	struct json_object *r = qmp_sync_cmd(conn, cmd, NULL);

	if (qmp_sync_return(r) == NULL)
		bench_die("raw QMP %s failed", cmd);
	json_object_put(r);
}

static int
cmd_qmp(int argc, char **argv)
{
	char **qargv, *path, *cause = NULL;
	int64_t *one, *raw, *ctl, elapsed;
	size_t n, per;
	struct qmp_sync *q;
	struct bench_ctl *c;
	pid_t pid;
	int fd;

	if (argc != 6)
		usage();
	n = count_arg(argv[5]);
	per = n / ROUNDS > 0 ? n / ROUNDS : 1;
	n = per * ROUNDS;
	qargv = bench_read_argv(argv[1]);
	path = bench_qmp_path(qargv);
	pid = bench_spawn_qemu(qargv, path, argv[2], &fd, &elapsed);
	close(fd);
	q = qmp_sync_connect(path, 10000, &cause);
	if (q == NULL)
		bench_die("%s", cause);
	qmp_ok(q, "cont");
	qmp_ok(q, "stop");
	qmp_sync_close(q);

	/* A fresh client per request, like a CLI that connects each time. */
	one = bench_samples(ONESHOT_RUNS);
	for (size_t i = 0; i < ONESHOT_RUNS; i++) {
		int64_t t0 = bench_now_ns();

		q = qmp_sync_connect(path, 10000, &cause);
		if (q == NULL)
			bench_die("%s", cause);
		qmp_ok(q, "query-status");
		qmp_sync_close(q);
		one[i] = bench_now_ns() - t0;
	}
	bench_report("raw_oneshot_ms", "raw QMP in-process connect+negotiate+query-status+close",
	             one, ONESHOT_RUNS);

	q = qmp_sync_connect(path, 10000, &cause);
	if (q == NULL)
		bench_die("%s", cause);
	c = bench_ctl_connect(argv[3]);
	raw = bench_samples(n);
	ctl = bench_samples(n);
	for (size_t r = 0; r < ROUNDS; r++) {
		for (size_t i = 0; i < per; i++) {
			int64_t t0 = bench_now_ns();

			qmp_ok(q, "query-status");
			raw[r * per + i] = bench_now_ns() - t0;
		}
		for (size_t i = 0; i < per; i++) {
			int64_t t0 = bench_now_ns();
			int ok;
			struct json_object *rep = bench_ctl_call(c, "status", argv[4], NULL, &ok);

			ctl[r * per + i] = bench_now_ns() - t0;
			if (!ok)
				bench_die("status %s failed: %s", argv[4],
				          json_object_to_json_string(rep));
			json_object_put(rep);
		}
	}
	bench_report("raw_rtt_ms", "raw QMP query-status round trip (persistent connection)", raw,
	             n);
	bench_report("ctl_rtt_ms", "qvmd control 'status' round trip (persistent connection)", ctl,
	             n);
	printf("added_ratio=%.2f\n",
	       (double)bench_quantile(ctl, n, 0.5) / (double)bench_quantile(raw, n, 0.5));

	bench_ctl_close(c);
	qmp_sync_cmd(q, "quit", NULL);
	qmp_sync_wait_eof(q, 5000);
	qmp_sync_close(q);
	bench_kill(pid);
	free(one);
	free(raw);
	free(ctl);
	free(path);
	bench_free_argv(qargv);
	return 0;
}

static int
cmd_startcmp(int argc, char **argv)
{
	char *start[] = {argv[1], "-s", argv[2], "start", argv[3], NULL};
	char *stop[] = {argv[1], "-s", argv[2], "kill", argv[3], NULL};
	char **qargv, *path;
	int64_t *greet, *ready, *st, ignored;
	size_t n;

	if (argc != 7)
		usage();
	n = count_arg(argv[6]);
	qargv = bench_read_argv(argv[4]);
	path = bench_qmp_path(qargv);
	greet = bench_samples(n);
	ready = bench_samples(n);
	st = bench_samples(n);
	for (size_t i = 0; i < n; i++) {
		int fd, rc;
		int64_t t0 = bench_now_ns();
		pid_t pid = bench_spawn_qemu(qargv, path, argv[5], &fd, &greet[i]);

		/* What a supervisor needs at the least before the guest runs. */
		bench_qmp_raw(fd, "{\"execute\":\"qmp_capabilities\"}");
		bench_qmp_raw(fd, "{\"execute\":\"cont\"}");
		ready[i] = bench_now_ns() - t0;
		close(fd);
		bench_kill(pid);
		rc = bench_run(start, &st[i]);
		if (rc != 0)
			bench_die("qvmctl start %s exited with %d", argv[3], rc);
		rc = bench_run(stop, &ignored);
		if (rc != 0)
			bench_die("qvmctl kill %s exited with %d", argv[3], rc);
	}
	bench_report("greeting_ms", "QEMU exec -> QMP greeting (same argv, run by hand)", greet, n);
	bench_report("ready_ms", "QEMU exec -> greeting + qmp_capabilities + cont answered", ready,
	             n);
	bench_report("start_ms", "qvmctl start -> running (process start to exit)", st, n);
	printf("start_overhead_ms=%.3f\n",
	       (double)(bench_quantile(st, n, 0.5) - bench_quantile(greet, n, 0.5)) / 1e6);
	printf("start_overhead_vs_ready_ms=%.3f\n",
	       (double)(bench_quantile(st, n, 0.5) - bench_quantile(ready, n, 0.5)) / 1e6);
	free(greet);
	free(ready);
	free(st);
	free(path);
	bench_free_argv(qargv);
	return 0;
}

/* One of the PAR clients of "many": its socket, the VM it works on, its step, its input. */
struct many_client {
	int fd;
	long vm;
	int step;
	char buf[65536];
	size_t len;
};

static void
many_send(struct many_client *c, const char *cmd, const char *prefix)
{
	char req[512];
	int n = snprintf(req, sizeof req, "{\"id\":%ld,\"cmd\":\"%s\",\"vm\":\"%s%ld\"}\n", c->vm,
	                 cmd, prefix, c->vm);

	if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
		bench_die("control socket: send failed");
}

static int
cmd_many(int argc, char **argv)
{
	const char *prefix, *cmds[2];
	long n, next = 1, done = 0, failed = 0;
	size_t par, ncmds;
	struct many_client *cl;
	struct pollfd *pfd;
	int64_t t0;

	if (argc != 6 && argc != 7)
		usage();
	par = count_arg(argv[2]);
	prefix = argv[3];
	n = (long)count_arg(argv[4]);
	cmds[0] = argv[5];
	cmds[1] = argc == 7 ? argv[6] : NULL;
	ncmds = argc == 7 ? 2 : 1;
	if (par > (size_t)n)
		par = (size_t)n;
	cl = calloc(par, sizeof(*cl));
	pfd = calloc(par, sizeof(*pfd));
	if (cl == NULL || pfd == NULL)
		abort();
	t0 = bench_now_ns();
	for (size_t i = 0; i < par; i++) {
		cl[i].fd = bench_dial(argv[1]);
		if (cl[i].fd < 0)
			bench_die("cannot connect to %s", argv[1]);
		cl[i].vm = next++;
		many_send(&cl[i], cmds[0], prefix);
		pfd[i].fd = cl[i].fd;
		pfd[i].events = POLLIN;
	}
	while (done < n) {
		if (poll(pfd, par, 600000) <= 0)
			bench_die("many: no reply for 10 minutes");
		for (size_t i = 0; i < par; i++) {
			struct many_client *c = &cl[i];
			char *nl;
			ssize_t r;

			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			r = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
			if (r <= 0)
				bench_die("many: control connection closed");
			c->len += (size_t)r;
			c->buf[c->len] = '\0';
			if ((nl = strchr(c->buf, '\n')) == NULL)
				continue;
			*nl = '\0';
			if (strstr(c->buf, "\"ok\":true") == NULL) {
				if (failed++ < 5)
					fprintf(stderr, "many: %s %s%ld: %s\n", cmds[c->step],
					        prefix, c->vm, c->buf);
				c->step = (int)ncmds;
			} else {
				c->step++;
			}
			c->len -= (size_t)(nl + 1 - c->buf);
			memmove(c->buf, nl + 1, c->len);
			if ((size_t)c->step < ncmds) {
				many_send(c, cmds[c->step], prefix);
				continue;
			}
			done++;
			if (next <= n) {
				c->vm = next++;
				c->step = 0;
				many_send(c, cmds[0], prefix);
			} else {
				pfd[i].fd = -1;
			}
		}
	}
	printf("many_s=%.3f\nmany_failed=%ld\n", (double)(bench_now_ns() - t0) / 1e9, failed);
	for (size_t i = 0; i < par; i++)
		close(cl[i].fd);
	free(cl);
	free(pfd);
	return 0;
}

/* Whether /proc/pid/cmdline contains needle (arguments joined by spaces). */
static bool
cmdline_has(pid_t pid, const char *needle)
{
	char path[64], buf[65536];
	ssize_t n;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return false;
	n = (ssize_t)fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == '\0')
			buf[i] = ' ';
	buf[n > 0 ? n : 0] = '\0';
	return strstr(buf, needle) != NULL;
}

static int
cmd_killvms(int argc, char **argv)
{
	char pattern[4096], needle[4096];
	pid_t *pids;
	size_t n = 0, left;
	glob_t g;

	if (argc != 2)
		usage();
	snprintf(pattern, sizeof pattern, "%s/*/run/*/qemu/qemu.pid", argv[1]);
	snprintf(needle, sizeof needle, "%s/", argv[1]);
	if (glob(pattern, 0, NULL, &g) != 0) {
		printf("killvms: 0 processes\n");
		return 0;
	}
	pids = calloc(g.gl_pathc, sizeof(*pids));
	if (pids == NULL)
		abort();
	for (size_t i = 0; i < g.gl_pathc; i++) {
		FILE *f = fopen(g.gl_pathv[i], "r");
		int pid = 0;

		if (f == NULL)
			continue;
		if (fscanf(f, "%d", &pid) == 1 && pid > 1 && cmdline_has(pid, needle) &&
		    kill(pid, SIGKILL) == 0)
			pids[n++] = pid;
		fclose(f);
	}
	globfree(&g);
	for (int tries = 0; tries < 1000; tries++) {
		left = 0;
		for (size_t i = 0; i < n; i++)
			if (pids[i] != 0 && kill(pids[i], 0) == 0 && cmdline_has(pids[i], needle))
				left++;
			else
				pids[i] = 0;
		if (left == 0)
			break;
		usleep(10000);
	}
	printf("killvms: %zu processes\n", n);
	free(pids);
	return 0;
}

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "cli") == 0)
		return cmd_cli(argc - 1, argv + 1);
	if (strcmp(argv[1], "qmp") == 0)
		return cmd_qmp(argc - 1, argv + 1);
	if (strcmp(argv[1], "killvms") == 0)
		return cmd_killvms(argc - 1, argv + 1);
	if (strcmp(argv[1], "many") == 0)
		return cmd_many(argc - 1, argv + 1);
	if (strcmp(argv[1], "startcmp") == 0)
		return cmd_startcmp(argc - 1, argv + 1);
	usage();
}
