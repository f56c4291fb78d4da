/*
 * qmp_bench: how fast and how small the qmp/ client is.
 *
 * 1. Round trip of query-status against one real paused QEMU: qmp/ on a libevent loop versus a
 *    minimal blocking client (write the same bytes, read until the reply line), taking turns on
 *    the same QMP socket in alternating rounds so that machine noise hits both alike.
 * 2. One event loop, N fakeqemu processes (spawned first, not timed): time to connect and
 *    negotiate with all of them, then to get one query-status answered by each; client memory
 *    per idle connection (malloc'ed bytes and RSS, deltas divided by N).
 *
 * Usage: qmp_bench [-q qemu] [-f fakeqemu] [-n N[,N...]] [-r round_trips]
 * The last line sums it up: qmp-bench: rtt_ratio=X conns=N all_ready_ms=MS bytes_per_conn=B
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "qmp.h"

#ifndef QMP_BENCH_QEMU
#define QMP_BENCH_QEMU "qemu-system-x86_64"
#endif
#ifndef QMP_BENCH_FAKEQEMU
#define QMP_BENCH_FAKEQEMU "fakeqemu"
#endif

#define ROUNDS 10

extern char **environ;

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("qmp-bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Sorts samples in place and returns the value at quantile q (0..1). */
static int64_t
quantile(int64_t *v, size_t n, double q)
{
	size_t i;

	qsort(v, n, sizeof(*v), cmp_i64);
	i = (size_t)(q * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

static long
rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, resident = 0;

	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static pid_t
spawn(char *const argv[])
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int rc;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0)
		die("spawn %s: %s", argv[0], strerror(rc));
	return pid;
}

/* Waits until the process listens on path (the file appears between bind and listen). */
static void
wait_for_path(const char *path, pid_t pid)
{
	int64_t end = now_ns() + 30 * 1000000000LL;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int status;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;

		if (fd >= 0)
			close(fd);
		if (ok)
			return;
		if (waitpid(pid, &status, WNOHANG) == pid)
			die("%s: the process exited before listening", path);
		if (now_ns() > end)
			die("%s: nobody listening after 30 s", path);
		usleep(1000);
	}
}

/* CPU time (user + system) of a process in milliseconds, from /proc/PID/stat. */
static double
proc_cpu_ms(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (p == NULL || (p = strrchr(buf, ')')) == NULL)
		return 0;
	/* After "pid (comm)": state is field 3; utime and stime are fields 14 and 15. */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static double
self_cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000.0 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000.0;
}

/* ---- 1. round trip against the real QEMU ---- */

struct rtt {
	struct event_base *base;
	struct qmp_conn *conn;
	int ready;
	int64_t *samples;
	size_t want, done;
	int64_t sent;
	int failed;
};

static void
rtt_ready(struct qmp_conn *conn, void *arg)
{
	struct rtt *r = arg;

	r->ready = 1;
	event_base_loopbreak(r->base);
}

static void
rtt_closed(struct qmp_conn *conn, const char *cause, void *arg)
{
	die("qmp connection to QEMU closed: %s", cause);
}

static void rtt_send(struct rtt *r);

static void
rtt_reply(struct qmp_conn *conn, const struct qmp_reply *reply, void *arg)
{
	struct rtt *r = arg;

	r->samples[r->done++] = now_ns() - r->sent;
	if (reply->status != QMP_OK)
		r->failed++;
	if (r->done == r->want)
		event_base_loopbreak(r->base);
	else
		rtt_send(r);
}

static void
rtt_send(struct rtt *r)
{
	char *cause = NULL;

	r->sent = now_ns();
	if (qmp_execute(r->conn, "query-status", NULL, 5000, rtt_reply, r, &cause) < 0)
		die("query-status: %s", cause);
}

/* One round of sequential query-status calls through qmp/ on a fresh connection. */
static void
rtt_round_qmp(struct event_base *base, const char *sock, int64_t *samples, size_t n)
{
	struct rtt r = {.base = base, .samples = samples, .want = n};
	const struct qmp_callbacks cbs = {.ready = rtt_ready, .closed = rtt_closed, .arg = &r};
	char *cause = NULL;

	r.conn = qmp_conn_new(base, &cbs);
	if (qmp_conn_connect_path(r.conn, sock, &cause) != 0)
		die("connect %s: %s", sock, cause);
	while (!r.ready)
		event_base_dispatch(base);
	rtt_send(&r);
	while (r.done < r.want)
		event_base_dispatch(base);
	if (r.failed)
		die("%d query-status calls failed", r.failed);
	qmp_conn_free(r.conn);
	/* libevent closes a freed bufferevent's socket from the loop: let it, before QEMU can
	 * accept the next client. */
	event_base_loop(base, EVLOOP_NONBLOCK);
}

/* Reads until a line that is not an event; returns its length. */
static size_t
blocking_read_reply(int fd, char *buf, size_t cap, size_t *have)
{
	for (;;) {
		char *nl = memchr(buf, '\n', *have);
		ssize_t n;

		if (nl != NULL) {
			size_t len = (size_t)(nl - buf) + 1;
			int event = memmem(buf, len, "\"event\"", 7) != NULL;

			memmove(buf, buf + len, *have - len);
			*have -= len;
			if (!event)
				return len;
			continue;
		}
		n = read(fd, buf + *have, cap - *have);
		if (n <= 0)
			die("blocking client: read: %s", n == 0 ? "EOF" : strerror(errno));
		*have += (size_t)n;
	}
}

/* One round through the minimal blocking client, sending the same bytes qmp/ sends. */
static void
rtt_round_blocking(const char *sock, int64_t *samples, size_t n, int64_t first_id)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char buf[8192], line[128];
	size_t have = 0, i;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	const char *caps = "{\"execute\":\"qmp_capabilities\",\"id\":1}";

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
		die("blocking client: connect %s: %s", sock, strerror(errno));
	blocking_read_reply(fd, buf, sizeof(buf), &have); /* greeting */
	if (write(fd, caps, strlen(caps)) != (ssize_t)strlen(caps))
		die("blocking client: write: %s", strerror(errno));
	blocking_read_reply(fd, buf, sizeof(buf), &have);
	for (i = 0; i < n; i++) {
		int len = snprintf(line, sizeof(line), "{\"execute\":\"query-status\",\"id\":%lld}",
		                   (long long)(first_id + (int64_t)i));
		int64_t t0 = now_ns();

		if (write(fd, line, (size_t)len) != len)
			die("blocking client: write: %s", strerror(errno));
		blocking_read_reply(fd, buf, sizeof(buf), &have);
		samples[i] = now_ns() - t0;
	}
	close(fd);
}

static int
kvm_usable(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

/* Measures both clients against one paused QEMU; returns median(qmp) / median(blocking). */
static double
bench_rtt(struct event_base *base, const char *qemu, const char *dir, size_t calls)
{
	char sock[256], qmp[300];
	char *argv[] = {
	    (char *)qemu, "-S",   "-machine", "q35", "-nodefaults", "-no-user-config",
	    "-display",   "none", "-m",       "64M", "-accel",      kvm_usable() ? "kvm" : "tcg",
	    "-qmp",       qmp,    NULL};
	size_t per = calls / ROUNDS, i;
	int64_t *a = calloc(calls, sizeof(int64_t)), *b = calloc(calls, sizeof(int64_t));
	int64_t ma, mb, pa, pb;
	pid_t pid;
	int status;

	if (a == NULL || b == NULL)
		die("out of memory");
	snprintf(sock, sizeof(sock), "%s/qemu.sock", dir);
	snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", sock);
	pid = spawn(argv);
	wait_for_path(sock, pid);
	for (i = 0; i < ROUNDS; i++) {
		rtt_round_qmp(base, sock, a + i * per, per);
		rtt_round_blocking(sock, b + i * per, per, (int64_t)(i * per) + 2);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	unlink(sock);
	ma = quantile(a, per * ROUNDS, 0.5);
	pa = quantile(a, per * ROUNDS, 0.99);
	mb = quantile(b, per * ROUNDS, 0.5);
	pb = quantile(b, per * ROUNDS, 0.99);
	printf("rtt query-status, %zu calls each, QEMU %s:\n", per * ROUNDS,
	       kvm_usable() ? "kvm" : "tcg");
	printf("  qmp/ (libevent)   median %7.1f us  p99 %7.1f us\n", ma / 1e3, pa / 1e3);
	printf("  blocking client   median %7.1f us  p99 %7.1f us\n", mb / 1e3, pb / 1e3);
	printf("  ratio (median)    %.3f\n", (double)ma / (double)mb);
	free(a);
	free(b);
	return (double)ma / (double)mb;
}

/* ---- 2. many connections on one loop ---- */

struct many {
	struct event_base *base;
	int ready, answered, closed, failed;
	int want;
};

static void
many_ready(struct qmp_conn *conn, void *arg)
{
	struct many *m = arg;

	if (++m->ready == m->want)
		event_base_loopbreak(m->base);
}

static void
many_closed(struct qmp_conn *conn, const char *cause, void *arg)
{
	struct many *m = arg;

	m->closed++;
	fprintf(stderr, "qmp-bench: a connection closed: %s\n", cause);
	event_base_loopbreak(m->base);
}

static void
many_reply(struct qmp_conn *conn, const struct qmp_reply *reply, void *arg)
{
	struct many *m = arg;

	if (reply->status != QMP_OK)
		m->failed++;
	if (++m->answered == m->want)
		event_base_loopbreak(m->base);
}

struct many_result {
	double ready_ms, query_ms;
	double client_cpu_ms, fakes_cpu_ms;
	double heap_per_conn, rss_per_conn;
};

/* Connects to the first n fake QEMUs at once, negotiates, one query-status each. */
static struct many_result
bench_many(struct event_base *base, char **socks, const pid_t *pids, int n)
{
	struct many m = {.base = base, .want = n};
	const struct qmp_callbacks cbs = {.ready = many_ready, .closed = many_closed, .arg = &m};
	struct qmp_conn **conns = calloc((size_t)n, sizeof(*conns));
	struct mallinfo2 before, after;
	struct many_result res;
	long rss_before, rss_after;
	int64_t t0, t1, t2;
	int i;

	if (conns == NULL)
		die("out of memory");
	res.fakes_cpu_ms = 0;
	for (i = 0; i < n; i++)
		res.fakes_cpu_ms -= proc_cpu_ms(pids[i]);
	res.client_cpu_ms = -self_cpu_ms();
	malloc_trim(0);
	before = mallinfo2();
	rss_before = rss_kib();
	t0 = now_ns();
	for (i = 0; i < n; i++) {
		char *cause = NULL;

		conns[i] = qmp_conn_new(base, &cbs);
		if (conns[i] == NULL || qmp_conn_connect_path(conns[i], socks[i], &cause) != 0)
			die("connect %s: %s", socks[i], cause ? cause : "out of memory");
	}
	while (m.ready < n && m.closed == 0)
		event_base_dispatch(base);
	if (m.closed)
		die("%d connections closed", m.closed);
	t1 = now_ns();
	for (i = 0; i < n; i++) {
		char *cause = NULL;

		if (qmp_execute(conns[i], "query-status", NULL, 30000, many_reply, &m, &cause) < 0)
			die("query-status: %s", cause);
	}
	while (m.answered < n && m.closed == 0)
		event_base_dispatch(base);
	t2 = now_ns();
	res.client_cpu_ms += self_cpu_ms();
	for (i = 0; i < n; i++)
		res.fakes_cpu_ms += proc_cpu_ms(pids[i]);
	if (m.failed || m.closed)
		die("%d query-status failed, %d connections closed", m.failed, m.closed);
	/* Idle now: what the connections cost while they wait for the next command. */
	after = mallinfo2();
	rss_after = rss_kib();
	res.ready_ms = (double)(t1 - t0) / 1e6;
	res.query_ms = (double)(t2 - t1) / 1e6;
	res.heap_per_conn =
	    (double)(after.uordblks + after.hblkhd - before.uordblks - before.hblkhd) / n;
	res.rss_per_conn = (double)(rss_after - rss_before) * 1024.0 / n;
	for (i = 0; i < n; i++)
		qmp_conn_free(conns[i]);
	free(conns);
	/* Let the fakes see EOF and go back to listening. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	return res;
}

static void
raise_nofile(int need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		die("getrlimit: %s", strerror(errno));
	if (rl.rlim_cur < (rlim_t)need) {
		rl.rlim_cur = rl.rlim_max < (rlim_t)need ? rl.rlim_max : (rlim_t)need;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			die("setrlimit: %s", strerror(errno));
	}
	if (rl.rlim_cur < (rlim_t)need)
		die("RLIMIT_NOFILE hard limit %llu is below %d", (unsigned long long)rl.rlim_max,
		    need);
}

int
main(int argc, char **argv)
{
	const char *qemu = QMP_BENCH_QEMU, *fake = QMP_BENCH_FAKEQEMU, *ns = "1000,5000";
	size_t calls = 10000;
	char dir[] = "/tmp/qmp-bench.XXXXXX", **socks;
	int counts[8], ncounts = 0, max = 0, i, opt;
	pid_t *pids;
	struct event_base *base;
	double ratio;
	struct many_result last = {0};
	char *p;
	int64_t t0;

	while ((opt = getopt(argc, argv, "q:f:n:r:")) != -1) {
		switch (opt) {
		case 'q':
			qemu = optarg;
			break;
		case 'f':
			fake = optarg;
			break;
		case 'n':
			ns = optarg;
			break;
		case 'r':
			calls = strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: qmp_bench [-q qemu] [-f fakeqemu] [-n N[,N...]] "
			                "[-r round_trips]\n");
			return 2;
		}
	}
	if (calls < ROUNDS)
		calls = ROUNDS;
	for (p = (char *)ns; *p != '\0' && ncounts < 8;) {
		counts[ncounts] = (int)strtol(p, &p, 10);
		if (counts[ncounts] > max)
			max = counts[ncounts];
		ncounts++;
		if (*p == ',')
			p++;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile(max + 64);
	if (mkdtemp(dir) == NULL)
		die("mkdtemp: %s", strerror(errno));
	base = event_base_new();
	if (base == NULL)
		die("event_base_new failed");

	ratio = bench_rtt(base, qemu, dir, calls);

	socks = calloc((size_t)max, sizeof(*socks));
	pids = calloc((size_t)max, sizeof(*pids));
	if (socks == NULL || pids == NULL)
		die("out of memory");
	t0 = now_ns();
	for (i = 0; i < max; i++) {
		char qmp[300];
		char *fargv[] = {(char *)fake, "-S", "-machine", "q35", "-qmp", qmp, NULL};

		if (asprintf(&socks[i], "%s/f%d.sock", dir, i) < 0)
			die("out of memory");
		snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", socks[i]);
		pids[i] = spawn(fargv);
	}
	for (i = 0; i < max; i++)
		wait_for_path(socks[i], pids[i]);
	printf("spawned %d fakeqemu in %.0f ms (not part of the figures)\n", max,
	       (double)(now_ns() - t0) / 1e6);
	for (i = 0; i < ncounts; i++) {
		last = bench_many(base, socks, pids, counts[i]);
		printf(
		    "conns=%d: connect+negotiate %.1f ms, one query-status each %.1f ms, "
		    "total %.1f ms; client memory per idle connection: heap %.0f B, RSS %.0f B\n",
		    counts[i], last.ready_ms, last.query_ms, last.ready_ms + last.query_ms,
		    last.heap_per_conn, last.rss_per_conn);
		printf("  cpu during it: client %.0f ms, all fakeqemu together %.0f ms\n",
		       last.client_cpu_ms, last.fakes_cpu_ms);
	}
	for (i = 0; i < max; i++) {
		int status;

		kill(pids[i], SIGKILL);
		waitpid(pids[i], &status, 0);
		unlink(socks[i]);
		free(socks[i]);
	}
	free(socks);
	free(pids);
	rmdir(dir);
	event_base_free(base);
	printf("qmp-bench: rtt_ratio=%.3f conns=%d all_ready_ms=%.1f bytes_per_conn=%.0f\n", ratio,
	       ncounts ? counts[ncounts - 1] : 0, last.ready_ms + last.query_ms,
	       last.heap_per_conn);
	return 0;
}
