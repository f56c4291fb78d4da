/*
 * qmp_bench: how fast and how small the qmp/ client is.
 *
 * 1. Round trip of query-status against one real paused QEMU: qmp/ on a libevent loop versus a
 *    minimal blocking client (write the same bytes, read until the reply line), taking turns on
 *    the same QMP socket in alternating rounds so that machine noise hits both alike.
 * 2. One event loop, N fake QEMUs: time to connect and negotiate with all of them, then to get
 *    one query-status answered by each; the client's CPU time in each phase; client memory per
 *    idle connection (malloc'ed bytes and RSS, deltas divided by N). The fake QEMUs are served by
 *    a few fakeqemu processes in serve mode (fakeqemu --serve-dir, one per CPU by default, each
 *    with an equal share of the sockets; started first, not timed), so that the figure measures
 *    the client and not the kernel scheduling thousands of processes.
 *
 * Usage: qmp_bench [-q qemu] [-f fakeqemu] [-n N[,N...]] [-r round_trips] [-s servers] [-C]
 *   -s  fakeqemu server processes for part 2 (default: one per cpu)
 *   -C  an event base with EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST (qvmd uses the default base: an
 *       experiment, it coalesces epoll_ctl calls)
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
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "host.h"
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

/* The first "model name" of /proc/cpuinfo. */
static const char *
cpu_model(void)
{
	static char model[128] = "unknown cpu";
	char line[256];
	FILE *f = fopen("/proc/cpuinfo", "r");

	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		char *colon = strchr(line, ':');

		if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
			snprintf(model, sizeof(model), "%s", colon + 2);
			model[strcspn(model, "\n")] = '\0';
			break;
		}
	}
	if (f != NULL)
		fclose(f);
	return model;
}

/* The 1-minute load average: other work on the machine skews the wall-clock figures. */
static const char *
loadavg(void)
{
	static char buf[32] = "?";
	FILE *f = fopen("/proc/loadavg", "r");

	if (f != NULL) {
		if (fscanf(f, "%31s", buf) != 1)
			strcpy(buf, "?");
		fclose(f);
	}
	return buf;
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

/* CPU time (user + system) of a process in milliseconds, to the nanosecond. */
static double
proc_cpu_ms(pid_t pid)
{
	struct timespec ts;
	clockid_t clock;

	if (clock_getcpuclockid(pid, &clock) != 0 || clock_gettime(clock, &ts) != 0)
		return 0;
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static double
self_cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
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

/* Measures both clients against one paused QEMU; returns median(qmp) / median(blocking). */
static double
bench_rtt(struct event_base *base, const char *qemu, const char *dir, size_t calls)
{
	char sock[256], qmp[300];
	char *argv[] = {(char *)qemu, "-S",          "-machine",
	                "q35",        "-nodefaults", "-no-user-config",
	                "-display",   "none",        "-m",
	                "64M",        "-accel",      host_kvm_usable() ? "kvm" : "tcg",
	                "-qmp",       qmp,           NULL};
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
	       host_kvm_usable() ? "kvm" : "tcg");
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

/* The four timed phases of bench_many. */
enum { PH_CONNECT, PH_NEGOTIATE, PH_SEND, PH_ANSWER, PH_COUNT };

static const char *const phase_names[PH_COUNT] = {"connect", "greeting+negotiation",
                                                  "send query-status", "replies"};

struct many_result {
	double wall_ms[PH_COUNT];
	double client_cpu_ms[PH_COUNT];
	double fakes_cpu_ms;
	double heap_per_conn, rss_per_conn;
};

static double
fakes_cpu_ms(const pid_t *pids, int npids)
{
	double sum = 0;
	int i;

	for (i = 0; i < npids; i++)
		sum += proc_cpu_ms(pids[i]);
	return sum;
}

/* Ends a phase: its wall and client CPU time since the previous mark. */
static void
phase_end(struct many_result *res, int phase, int64_t *wall, double *cpu)
{
	int64_t w = now_ns();
	double c = self_cpu_ms();

	res->wall_ms[phase] = (double)(w - *wall) / 1e6;
	res->client_cpu_ms[phase] = c - *cpu;
	*wall = w;
	*cpu = c;
}

/* Connects to the first n fake QEMUs at once, negotiates, one query-status each. */
static struct many_result
bench_many(struct event_base *base, char **socks, const pid_t *pids, int npids, int n)
{
	struct many m = {.base = base, .want = n};
	const struct qmp_callbacks cbs = {.ready = many_ready, .closed = many_closed, .arg = &m};
	struct qmp_conn **conns = calloc((size_t)n, sizeof(*conns));
	struct mallinfo2 before, after;
	struct many_result res = {0};
	long rss_before, rss_after;
	int64_t wall;
	double cpu;
	int i;

	if (conns == NULL)
		die("out of memory");
	malloc_trim(0);
	before = mallinfo2();
	rss_before = rss_kib();
	res.fakes_cpu_ms = -fakes_cpu_ms(pids, npids);
	cpu = self_cpu_ms();
	wall = now_ns();
	for (i = 0; i < n; i++) {
		char *cause = NULL;

		conns[i] = qmp_conn_new(base, &cbs);
		if (conns[i] == NULL || qmp_conn_connect_path(conns[i], socks[i], &cause) != 0)
			die("connect %s: %s", socks[i], cause ? cause : "out of memory");
	}
	phase_end(&res, PH_CONNECT, &wall, &cpu);
	while (m.ready < n && m.closed == 0)
		event_base_dispatch(base);
	if (m.closed)
		die("%d connections closed", m.closed);
	phase_end(&res, PH_NEGOTIATE, &wall, &cpu);
	for (i = 0; i < n; i++) {
		char *cause = NULL;

		if (qmp_execute(conns[i], "query-status", NULL, 30000, many_reply, &m, &cause) < 0)
			die("query-status: %s", cause);
	}
	phase_end(&res, PH_SEND, &wall, &cpu);
	while (m.answered < n && m.closed == 0)
		event_base_dispatch(base);
	phase_end(&res, PH_ANSWER, &wall, &cpu);
	res.fakes_cpu_ms += fakes_cpu_ms(pids, npids);
	if (m.failed || m.closed)
		die("%d query-status failed, %d connections closed", m.failed, m.closed);
	/* Idle now: what the connections cost while they wait for the next command. */
	after = mallinfo2();
	rss_after = rss_kib();
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

static double
sum_phases(const double *v)
{
	double sum = 0;
	int i;

	for (i = 0; i < PH_COUNT; i++)
		sum += v[i];
	return sum;
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

/*
 * Starts nservers fakeqemu processes in serve mode for max sockets in all: server k listens on
 * DIR/sK/J.sock; socket i of the list is served by server i % nservers, so that any prefix of the
 * list is spread evenly over the servers.
 */
static void
start_servers(const char *fake, const char *dir, int max, int nservers, char **socks, pid_t *pids)
{
	int k, i;

	for (k = 0; k < nservers; k++) {
		char sdir[256], count[16], last[300];
		int share = max / nservers + (k < max % nservers);
		char *fargv[] = {(char *)fake, "-S",      "-machine", "q35", "--serve-dir",
		                 sdir,         "--count", count,      NULL};

		snprintf(sdir, sizeof(sdir), "%s/s%d", dir, k);
		if (mkdir(sdir, 0700) != 0)
			die("mkdir %s: %s", sdir, strerror(errno));
		snprintf(count, sizeof(count), "%d", share);
		pids[k] = spawn(fargv);
		/* The sockets are created in order: once the last one listens, all do. */
		snprintf(last, sizeof(last), "%s/%d.sock", sdir, share - 1);
		wait_for_path(last, pids[k]);
	}
	for (i = 0; i < max; i++) {
		if (asprintf(&socks[i], "%s/s%d/%d.sock", dir, i % nservers, i / nservers) < 0)
			die("out of memory");
	}
}

static void
stop_servers(const char *dir, int max, int nservers, char **socks, pid_t *pids)
{
	char sdir[256];
	int i, status;

	for (i = 0; i < nservers; i++) {
		kill(pids[i], SIGKILL);
		waitpid(pids[i], &status, 0);
	}
	for (i = 0; i < max; i++) {
		unlink(socks[i]);
		free(socks[i]);
	}
	for (i = 0; i < nservers; i++) {
		snprintf(sdir, sizeof(sdir), "%s/s%d", dir, i);
		rmdir(sdir);
	}
}

int
main(int argc, char **argv)
{
	const char *qemu = QMP_BENCH_QEMU, *fake = QMP_BENCH_FAKEQEMU, *ns = "1000,5000";
	size_t calls = 10000;
	char dir[] = "/tmp/qmp-bench.XXXXXX", **socks;
	int counts[8], ncounts = 0, max = 0, i, j, opt;
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN), nservers = ncpu > 0 ? ncpu : 1;
	int changelist = 0;
	struct event_config *cfg;
	pid_t *pids;
	struct event_base *base;
	double ratio;
	struct many_result last = {0};
	char *p;
	int64_t t0;

	while ((opt = getopt(argc, argv, "q:f:n:r:s:C")) != -1) {
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
		case 's':
			nservers = atoi(optarg);
			break;
		case 'C':
			changelist = 1;
			break;
		default:
			fprintf(stderr, "usage: qmp_bench [-q qemu] [-f fakeqemu] [-n N[,N...]] "
			                "[-r round_trips] [-s servers] [-C]\n");
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
	if (max < 1)
		die("-n: no connection count");
	if (nservers < 1)
		nservers = 1;
	if (nservers > max)
		nservers = max;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile(max + 64);
	if (mkdtemp(dir) == NULL)
		die("mkdtemp: %s", strerror(errno));
	cfg = event_config_new();
	if (cfg == NULL)
		die("event_config_new failed");
	if (changelist)
		event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (base == NULL)
		die("event_base_new failed");
	printf("machine: %d cpus, %s, load %s; libevent %s (%s backend%s)\n", ncpu, cpu_model(),
	       loadavg(), event_get_version(), event_base_get_method(base),
	       changelist ? ", changelist" : "");

	ratio = bench_rtt(base, qemu, dir, calls);

	socks = calloc((size_t)max, sizeof(*socks));
	pids = calloc((size_t)nservers, sizeof(*pids));
	if (socks == NULL || pids == NULL)
		die("out of memory");
	t0 = now_ns();
	start_servers(fake, dir, max, nservers, socks, pids);
	printf("fake QEMUs: %d sockets served by %d fakeqemu process%s in serve mode "
	       "(--serve-dir, ~%d sockets each%s), this client in one process; "
	       "started in %.0f ms (not part of the figures)\n",
	       max, nservers, nservers == 1 ? "" : "es", (max + nservers - 1) / nservers,
	       nservers == ncpu ? ", one per cpu" : "", (double)(now_ns() - t0) / 1e6);
	for (i = 0; i < ncounts; i++) {
		last = bench_many(base, socks, pids, nservers, counts[i]);
		printf(
		    "conns=%d: connect+negotiate %.1f ms, one query-status each %.1f ms, "
		    "total %.1f ms; client memory per idle connection: heap %.0f B, RSS %.0f B\n",
		    counts[i], last.wall_ms[PH_CONNECT] + last.wall_ms[PH_NEGOTIATE],
		    last.wall_ms[PH_SEND] + last.wall_ms[PH_ANSWER], sum_phases(last.wall_ms),
		    last.heap_per_conn, last.rss_per_conn);
		printf("  cpu during it: client %.0f ms (%.1f us per connection), fakeqemu servers "
		       "together %.0f ms\n",
		       sum_phases(last.client_cpu_ms),
		       sum_phases(last.client_cpu_ms) * 1000.0 / counts[i], last.fakes_cpu_ms);
		for (j = 0; j < PH_COUNT; j++)
			printf("    %-22s wall %7.1f ms  client cpu %7.1f ms (%5.1f us/conn)\n",
			       phase_names[j], last.wall_ms[j], last.client_cpu_ms[j],
			       last.client_cpu_ms[j] * 1000.0 / counts[i]);
	}
	stop_servers(dir, max, nservers, socks, pids);
	free(socks);
	free(pids);
	rmdir(dir);
	event_base_free(base);
	printf("qmp-bench: rtt_ratio=%.3f conns=%d all_ready_ms=%.1f bytes_per_conn=%.0f\n", ratio,
	       ncounts ? counts[ncounts - 1] : 0, sum_phases(last.wall_ms), last.heap_per_conn);
	return 0;
}
