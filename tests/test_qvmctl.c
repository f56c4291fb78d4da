/*
 * qvmctl against a fake control server: the real binary runs as a child process, the server is a
 * thread of this test that accepts one connection, records the request line and sends a canned
 * reply. Checks the exact request JSON, the human and --json output and the exit codes.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "clock.h"
#include <json-c/json.h>

#ifndef QVMCTL_BIN
#error QVMCTL_BIN must name the qvmctl binary
#endif

extern char **environ;

/* One scripted connection of the fake daemon. */
struct fake {
	char dir[64];
	char sock[128];
	char out[160], err[160];
	int lfd;
	pthread_t thread;
	bool running;
	/* script */
	const char *reply; /* JSON object; the request's id is added. NULL: see raw */
	const char *raw;   /* sent verbatim instead of a reply (NULL too: close at once) */
	const char *after; /* sent verbatim after the reply (event lines) */
	bool hold;         /* keep the connection until the client closes it */
	int slow_ms;       /* delay the reply this long, answering "version" probes meanwhile */
	/* what happened */
	char *request; /* the first request line, without its newline */
	int accepted;
	int probes; /* "version" requests answered while slow */
};

/* The outcome of one qvmctl run. */
struct run {
	int status; /* exit code, or -1 when killed by a signal */
	char *out, *err;
};

static void
send_all(int fd, const char *text)
{
	size_t len = strlen(text);

	while (len > 0) {
		ssize_t n = send(fd, text, len, MSG_NOSIGNAL);

		if (n <= 0)
			return;
		text += n;
		len -= (size_t)n;
	}
}

/* Waits up to ms for fd to be readable. */
static bool
wait_readable(int fd, int ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	return poll(&pfd, 1, ms) == 1;
}

/* A daemon busy with a slow operation: for slow_ms, only "version" requests get answers. */
static void
fake_slow(struct fake *f, int fd)
{
	int64_t end = clock_mono_ms() + f->slow_ms;
	char buf[4096], *line, *nl;
	size_t len = 0;
	ssize_t n;

	while (clock_mono_ms() < end) {
		if (!wait_readable(fd, (int)(end - clock_mono_ms())))
			continue;
		n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
		if (n <= 0)
			return;
		len += (size_t)n;
		buf[len] = '\0';
		while ((nl = memchr(buf, '\n', len)) != NULL) {
			struct json_object *req, *id = NULL;

			*nl = '\0';
			req = json_tokener_parse(buf);
			if (req != NULL && json_object_object_get_ex(req, "id", &id) &&
			    strstr(buf, "\"cmd\":\"version\"") != NULL &&
			    asprintf(&line,
			             "{\"id\":%s,\"ok\":true,\"result\":{\"version\":\"t\"}}\n",
			             json_object_to_json_string(id)) > 0) {
				send_all(fd, line);
				free(line);
				f->probes++;
			}
			json_object_put(req);
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len);
		}
	}
}

static void *
fake_thread(void *arg)
{
	struct fake *f = arg;
	char buf[65536], *nl;
	size_t len = 0;
	ssize_t n;
	int fd;

	if (!wait_readable(f->lfd, 10000))
		return NULL;
	fd = accept(f->lfd, NULL, NULL);
	if (fd == -1)
		return NULL;
	f->accepted++;
	while ((nl = memchr(buf, '\n', len)) == NULL && len < sizeof buf - 1) {
		if (!wait_readable(fd, 10000))
			break;
		n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (nl != NULL) {
		*nl = '\0';
		f->request = strdup(buf);
	}
	if (f->slow_ms > 0 && nl != NULL)
		fake_slow(f, fd);
	if (f->reply != NULL && f->request != NULL) {
		struct json_object *req = json_tokener_parse(f->request);
		struct json_object *rep = json_tokener_parse(f->reply), *id = NULL;
		char *line;

		if (req != NULL && rep != NULL) {
			json_object_object_get_ex(req, "id", &id);
			json_object_object_add(rep, "id", json_object_get(id));
			if (asprintf(&line, "%s\n",
			             json_object_to_json_string_ext(rep, JSON_C_TO_STRING_PLAIN)) >
			    0) {
				send_all(fd, line);
				free(line);
			}
		}
		json_object_put(req);
		json_object_put(rep);
	} else if (f->raw != NULL) {
		send_all(fd, f->raw);
	}
	if (f->after != NULL)
		send_all(fd, f->after);
	if (f->hold) {
		while (wait_readable(fd, 20000) && recv(fd, buf, sizeof buf, 0) > 0)
			;
	}
	close(fd);
	return NULL;
}

static int
setup(void **state)
{
	struct fake *f = calloc(1, sizeof *f);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	assert_non_null(f);
	strcpy(f->dir, "/tmp/test_qvmctl.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof f->sock, "%s/qvmd.sock", f->dir);
	snprintf(f->out, sizeof f->out, "%s/out", f->dir);
	snprintf(f->err, sizeof f->err, "%s/err", f->dir);
	strcpy(sun.sun_path, f->sock);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sun, sizeof sun), 0);
	assert_int_equal(listen(f->lfd, 4), 0);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fake *f = *state;

	if (f->running)
		pthread_join(f->thread, NULL);
	close(f->lfd);
	unlink(f->sock);
	unlink(f->out);
	unlink(f->err);
	rmdir(f->dir);
	free(f->request);
	free(f);
	return 0;
}

/* Starts serving the script set in f. */
static void
fake_serve(struct fake *f)
{
	assert_int_equal(pthread_create(&f->thread, NULL, fake_thread, f), 0);
	f->running = true;
}

/* Waits for the server thread to finish its connection. */
static void
fake_done(struct fake *f)
{
	if (f->running)
		pthread_join(f->thread, NULL);
	f->running = false;
}

/* True if a client connected to the listening socket that nobody accepted. */
static bool
fake_pending(struct fake *f)
{
	return wait_readable(f->lfd, 0);
}

static char *
slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0;

	if (fp == NULL)
		return strdup("");
	buf = calloc(1, 1 << 22);
	if (buf != NULL)
		len = fread(buf, 1, (1 << 22) - 1, fp);
	buf[len] = '\0';
	fclose(fp);
	return buf;
}

/*
 * Starts qvmctl with argv (NULL-terminated, without the program name); stdout and stderr go to
 * f->out and f->err. env_socket: the QVMD_SOCKET to set, or NULL to remove it.
 */
static pid_t
spawn_ctl(struct fake *f, const char *env_socket, const char *const *argv)
{
	posix_spawn_file_actions_t fa;
	char *args[32], *envp[256], *sock_env = NULL;
	size_t n = 0, e = 0;
	pid_t pid;

	args[n++] = (char *)QVMCTL_BIN;
	for (size_t i = 0; argv[i] != NULL && n < 31; i++)
		args[n++] = (char *)argv[i];
	args[n] = NULL;
	for (size_t i = 0; environ[i] != NULL && e < 250; i++) {
		if (strncmp(environ[i], "QVMD_SOCKET=", 12) != 0 &&
		    strncmp(environ[i], "TZ=", 3) != 0)
			envp[e++] = environ[i];
	}
	envp[e++] = (char *)"TZ=UTC";
	if (env_socket != NULL) {
		assert_true(asprintf(&sock_env, "QVMD_SOCKET=%s", env_socket) > 0);
		envp[e++] = sock_env;
	}
	envp[e] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, f->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_addopen(&fa, 2, f->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(posix_spawn(&pid, QVMCTL_BIN, &fa, NULL, args, envp), 0);
	posix_spawn_file_actions_destroy(&fa);
	free(sock_env);
	return pid;
}

/* Waits (at most 30 s) for the qvmctl started by spawn_ctl and collects its output. */
static void
wait_ctl(struct fake *f, pid_t pid, struct run *r)
{
	int status = 0;

	for (int i = 0; i < 3000; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		if (i == 2999) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
		}
		usleep(10000);
	}
	r->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	r->out = slurp(f->out);
	r->err = slurp(f->err);
	fake_done(f);
}

static void
run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

/* Runs "qvmctl -s SOCK args..." to completion. */
static void
run(struct fake *f, struct run *r, ...)
{
	const char *argv[32];
	size_t n = 0;
	va_list ap;

	argv[n++] = "-s";
	argv[n++] = f->sock;
	va_start(ap, r);
	while (n < 31 && (argv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	argv[n] = NULL;
	wait_ctl(f, spawn_ctl(f, NULL, argv), r);
}

/* Asserts that the recorded request equals the JSON text want. */
static void
assert_request(struct fake *f, const char *want)
{
	struct json_object *got, *exp;
	bool same;

	assert_non_null(f->request);
	got = json_tokener_parse(f->request);
	exp = json_tokener_parse(want);
	assert_non_null(got);
	assert_non_null(exp);
	same = json_object_equal(got, exp);
	if (!same)
		fprintf(stderr, "request: %s\nwanted:  %s\n", f->request, want);
	json_object_put(got);
	json_object_put(exp);
	assert_true(same);
}

/* Asserts that text is JSON equal to the JSON text want. */
static void
assert_json_equal(const char *text, const char *want)
{
	struct json_object *got = json_tokener_parse(text), *exp = json_tokener_parse(want);
	bool same;

	assert_non_null(got);
	assert_non_null(exp);
	same = json_object_equal(got, exp);
	if (!same)
		fprintf(stderr, "got:    %s\nwanted: %s\n", text, want);
	json_object_put(got);
	json_object_put(exp);
	assert_true(same);
}

static const char list_reply[] =
    "{\"ok\":true,\"result\":{\"vms\":["
    "{\"name\":\"db\",\"state\":\"stopped\",\"pid\":null,\"vcpus\":1,\"memory_bytes\":536870912,"
    "\"uptime_ms\":0,\"qemu_status\":\"\",\"restarts\":0,\"definition_changed\":false},"
    "{\"name\":\"mail\",\"state\":\"paused\",\"pid\":77,\"vcpus\":4,\"memory_bytes\":2684354560,"
    "\"uptime_ms\":273642000,\"qemu_status\":\"paused\",\"restarts\":1,\"definition_changed\":"
    "false},"
    "{\"name\":\"web1\",\"state\":\"running\",\"pid\":4242,\"vcpus\":2,\"memory_bytes\":1073741824,"
    "\"uptime_ms\":7530000,\"qemu_status\":\"running\",\"restarts\":0,\"definition_changed\":true},"
    "{\"name\":\"x\",\"state\":\"starting\",\"pid\":5,\"vcpus\":1,\"memory_bytes\":17179869184,"
    "\"uptime_ms\":42900,\"qemu_status\":\"prelaunch\",\"restarts\":0,\"definition_changed\":false}"
    "]}}";

static void
test_qvmctl_list_table(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = list_reply;
	fake_serve(f);
	run(f, &r, "list", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f, "{\"id\":1,\"cmd\":\"list\"}");
	assert_string_equal(r.out, "NAME  STATE     PID   VCPUS  MEMORY  UPTIME\n"
	                           "db    stopped   -     1      512M    -\n"
	                           "mail  paused    77    4      2.5G    3d04h\n"
	                           "web1  running   4242  2      1.0G    2h05m\n"
	                           "x     starting  5     1      16G     42s\n");
	assert_string_equal(r.err, "");
	run_free(&r);
}

static void
test_qvmctl_list_json(void **state)
{
	struct fake *f = *state;
	struct json_object *reply, *result;
	struct run r;

	f->reply = list_reply;
	fake_serve(f);
	run(f, &r, "--json", "list", NULL);
	assert_int_equal(r.status, 0);
	reply = json_tokener_parse(list_reply);
	json_object_object_get_ex(reply, "result", &result);
	assert_json_equal(r.out, json_object_to_json_string(result));
	/* pretty: one member per line */
	assert_non_null(strstr(r.out, "\n  \"vms\": [\n"));
	json_object_put(reply);
	run_free(&r);
}

static void
test_qvmctl_status_human(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply =
	    "{\"ok\":true,\"result\":{\"name\":\"web1\",\"state\":\"running\","
	    "\"qemu_status\":\"running\",\"pid\":4242,\"uptime_ms\":125000,\"vcpus\":2,"
	    "\"memory_bytes\":1073741824,\"machine\":\"q35\",\"accel\":\"kvm\",\"restarts\":3,"
	    "\"last_exit\":{\"kind\":\"signal\",\"signal\":9,\"cause\":\"crash\",\"text\":\"killed "
	    "by SIGKILL\"},\"definition_changed\":true,\"job\":null,"
	    "\"disks\":[{\"id\":\"root\",\"file\":\"/var/lib/qvmd/web1.qcow2\","
	    "\"format\":\"qcow2\",\"readonly\":false},{\"id\":\"iso\",\"file\":\"/srv/a.iso\","
	    "\"format\":\"raw\",\"readonly\":true}],"
	    "\"nets\":[{\"id\":\"nic0\",\"type\":\"user\",\"mac\":\"52:54:00:12:34:56\"}]}}";
	fake_serve(f);
	run(f, &r, "status", "web1", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f, "{\"id\":1,\"cmd\":\"status\",\"vm\":\"web1\"}");
	assert_string_equal(r.out, "state:              running\n"
	                           "qemu status:        running\n"
	                           "pid:                4242\n"
	                           "uptime:             2m05s\n"
	                           "vcpus:              2\n"
	                           "memory:             1.0G\n"
	                           "machine:            q35\n"
	                           "accel:              kvm\n"
	                           "restarts:           3\n"
	                           "last exit:          killed by SIGKILL\n"
	                           "definition changed: yes\n"
	                           "job:                -\n"
	                           "disk root:          /var/lib/qvmd/web1.qcow2 (qcow2)\n"
	                           "disk iso:           /srv/a.iso (raw, read-only)\n"
	                           "net nic0:           user 52:54:00:12:34:56\n");
	run_free(&r);
}

static void
test_qvmctl_status_stopped_dashes(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"name\":\"db\",\"state\":\"stopped\","
	           "\"qemu_status\":\"unknown\",\"pid\":null,\"uptime_ms\":null,\"vcpus\":1,"
	           "\"memory_bytes\":536870912,\"machine\":\"pc\",\"accel\":\"tcg\",\"restarts\":0,"
	           "\"last_exit\":null,\"definition_changed\":false,\"job\":\"start\","
	           "\"disks\":[],\"nets\":[]}}";
	fake_serve(f);
	run(f, &r, "status", "db", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "\npid:                -\n"));
	assert_non_null(strstr(r.out, "\nuptime:             -\n"));
	assert_non_null(strstr(r.out, "\nlast exit:          -\n"));
	assert_non_null(strstr(r.out, "\ndefinition changed: no\n"));
	assert_non_null(strstr(r.out, "\njob:                start\n"));
	assert_null(strstr(r.out, "disk "));
	run_free(&r);
}

static void
test_qvmctl_devices_table(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply =
	    "{\"ok\":true,\"result\":{\"devices\":["
	    "{\"id\":\"root\",\"kind\":\"disk\",\"file\":\"/img/root.qcow2\",\"format\":\"qcow2\","
	    "\"bus\":\"hp.0\",\"pci_addr\":\"01:00.0\",\"live\":true,\"persistent\":true,"
	    "\"pending_attach\":false,\"pending_removal\":false},"
	    "{\"id\":\"nic1\",\"kind\":\"net\",\"type\":\"bridge\",\"mac\":\"52:54:00:00:00:01\","
	    "\"bus\":\"hp.1\",\"pci_addr\":null,\"live\":true,\"persistent\":false,"
	    "\"pending_attach\":false,\"pending_removal\":true},"
	    "{\"id\":\"new\",\"kind\":\"net\",\"type\":\"user\",\"mac\":\"52:54:00:00:00:02\","
	    "\"bus\":\"hp.2\",\"pci_addr\":null,\"live\":false,\"persistent\":false,"
	    "\"pending_attach\":true,\"pending_removal\":false},"
	    "{\"id\":\"data\",\"kind\":\"disk\",\"file\":\"/img/d.raw\",\"format\":\"raw\","
	    "\"bus\":null,\"pci_addr\":null,\"live\":false,\"persistent\":true,"
	    "\"pending_attach\":false,\"pending_removal\":false}]}}";
	fake_serve(f);
	run(f, &r, "devices", "web1", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f, "{\"id\":1,\"cmd\":\"devices\",\"vm\":\"web1\"}");
	assert_string_equal(
	    r.out,
	    "ID    KIND  BACKEND          MAC/FORMAT         PORT  ADDR     LIVE       PERSISTENT\n"
	    "root  disk  /img/root.qcow2  qcow2              hp.0  01:00.0  yes        yes\n"
	    "nic1  net   bridge           52:54:00:00:00:01  hp.1  -        removing   no\n"
	    "new   net   user             52:54:00:00:00:02  hp.2  -        attaching  no\n"
	    "data  disk  /img/d.raw       raw                -     -        no         yes\n");
	run_free(&r);
}

static void
test_qvmctl_start_prints_pid(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"state\":\"running\",\"pid\":99}}";
	fake_serve(f);
	run(f, &r, "start", "web1", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f, "{\"id\":1,\"cmd\":\"start\",\"vm\":\"web1\"}");
	assert_string_equal(r.out, "web1: running (pid 99)\n");
	run_free(&r);
}

static void
test_qvmctl_simple_verbs(void **state)
{
	static const struct {
		const char *verb, *reply, *out;
	} cases[] = {
	    {"reset", "{\"state\":\"running\"}", "web1: reset (running)\n"},
	    {"pause", "{\"state\":\"paused\"}", "web1: paused\n"},
	    {"resume", "{\"state\":\"running\"}", "web1: running\n"},
	    {"kill", "{\"state\":\"stopped\",\"ended_by\":\"sigkill\"}",
	     "web1: stopped (ended by sigkill)\n"},
	};
	struct fake *f = *state;
	char reply[256], want[256];
	struct run r;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(reply, sizeof reply, "{\"ok\":true,\"result\":%s}", cases[i].reply);
		f->reply = reply;
		free(f->request);
		f->request = NULL;
		fake_serve(f);
		run(f, &r, cases[i].verb, "web1", NULL);
		assert_int_equal(r.status, 0);
		snprintf(want, sizeof want, "{\"id\":1,\"cmd\":\"%s\",\"vm\":\"web1\"}",
		         cases[i].verb);
		assert_request(f, want);
		assert_string_equal(r.out, cases[i].out);
		run_free(&r);
	}
}

static void
test_qvmctl_powerdown_timeout_no_wait(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"state\":\"stopping\"}}";
	fake_serve(f);
	run(f, &r, "powerdown", "web1", "--timeout", "2s", "--no-wait", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f, "{\"id\":1,\"cmd\":\"powerdown\",\"vm\":\"web1\","
	                  "\"args\":{\"timeout_ms\":2000,\"wait\":false}}");
	assert_string_equal(r.out, "web1: stopping\n");
	run_free(&r);
}

static void
test_qvmctl_powerdown_ended_by(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"state\":\"stopped\",\"ended_by\":\"quit\","
	           "\"elapsed_ms\":2040}}";
	fake_serve(f);
	run(f, &r, "powerdown", "--timeout=2s", "web1", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f, "{\"id\":1,\"cmd\":\"powerdown\",\"vm\":\"web1\","
	                  "\"args\":{\"timeout_ms\":2000,\"wait\":true}}");
	assert_string_equal(r.out, "web1: stopped (ended by quit after 2.0s timeout)\n");
	run_free(&r);

	f->reply = "{\"ok\":true,\"result\":{\"state\":\"stopped\",\"ended_by\":\"guest\","
	           "\"elapsed_ms\":800}}";
	free(f->request);
	f->request = NULL;
	fake_serve(f);
	run(f, &r, "powerdown", "web1", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f,
	               "{\"id\":1,\"cmd\":\"powerdown\",\"vm\":\"web1\",\"args\":{\"wait\":true}}");
	assert_string_equal(r.out, "web1: stopped (ended by guest)\n");
	run_free(&r);
}

static void
test_qvmctl_powerdown_all(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"results\":["
	           "{\"name\":\"a\",\"ok\":true,\"state\":\"stopped\",\"ended_by\":\"guest\","
	           "\"elapsed_ms\":5,\"error\":null},"
	           "{\"name\":\"b\",\"ok\":false,\"state\":null,\"ended_by\":null,"
	           "\"elapsed_ms\":null,\"error\":{\"code\":\"busy\",\"message\":"
	           "\"vm b: busy: start in progress\"}},"
	           "{\"name\":\"c\",\"ok\":true,\"state\":\"stopped\",\"ended_by\":\"sigterm\","
	           "\"elapsed_ms\":60000,\"error\":null}]}}";
	fake_serve(f);
	run(f, &r, "powerdown", "--all", "--timeout", "1m", NULL);
	assert_int_equal(r.status, 1);
	assert_request(
	    f, "{\"id\":1,\"cmd\":\"powerdown\",\"args\":{\"all\":true,\"timeout_ms\":60000}}");
	assert_string_equal(r.out, "a: stopped (ended by guest)\n"
	                           "b: failed: vm b: busy: start in progress\n"
	                           "c: stopped (ended by sigterm after 60.0s timeout)\n");
	assert_non_null(strstr(r.err, "1 of 3"));
	run_free(&r);

	f->reply =
	    "{\"ok\":true,\"result\":{\"results\":[{\"name\":\"a\",\"ok\":true,"
	    "\"state\":\"stopped\",\"ended_by\":\"guest\",\"elapsed_ms\":5,\"error\":null}]}}";
	free(f->request);
	f->request = NULL;
	fake_serve(f);
	run(f, &r, "powerdown", "--all", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f, "{\"id\":1,\"cmd\":\"powerdown\",\"args\":{\"all\":true}}");
	run_free(&r);
}

static void
test_qvmctl_powerdown_usage_errors(void **state)
{
	static const char *const bad[][5] = {
	    {"powerdown", "--all", "web1", NULL},
	    {"powerdown", NULL},
	    {"powerdown", "web1", "--timeout", "soon", NULL},
	    {"powerdown", "web1", "--timeout", NULL},
	    {"powerdown", "--all", "--no-wait", NULL},
	    {"powerdown", "web1", "web2", NULL},
	    {"powerdown", "web1", "--bogus", NULL},
	};
	struct fake *f = *state;
	struct run r;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *argv[8] = {"-s", f->sock};

		for (size_t j = 0; bad[i][j] != NULL; j++)
			argv[2 + j] = bad[i][j];
		wait_ctl(f, spawn_ctl(f, NULL, argv), &r);
		assert_int_equal(r.status, 2);
		assert_non_null(strstr(r.err, "usage: qvmctl powerdown NAME"));
		run_free(&r);
	}
	/* nothing was sent: usage errors never connect */
	assert_false(fake_pending(f));
}

static const char events_after[] =
    "{\"event\":\"state\",\"vm\":\"web1\",\"state\":\"stopping\",\"old\":\"running\","
    "\"ts\":1700000000123}\n"
    "{\"event\":\"qmp\",\"vm\":\"web1\",\"name\":\"SHUTDOWN\",\"data\":{\"guest\":true,"
    "\"reason\":\"guest-shutdown\"},\"ts\":1700000001000}\n"
    "{\"event\":\"qmp\",\"vm\":\"web1\",\"name\":\"STOP\",\"data\":{},\"ts\":1700000001005}\n";

static void
test_qvmctl_events_stream_until_eof(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"subscribed\":true}}";
	f->after = events_after;
	fake_serve(f);
	run(f, &r, "events", "web1", NULL);
	assert_int_equal(r.status, 3);
	assert_request(f, "{\"id\":1,\"cmd\":\"subscribe\",\"args\":{\"vm\":\"web1\"}}");
	assert_string_equal(
	    r.out,
	    "2023-11-14T22:13:20.123 web1 state running -> stopping\n"
	    "2023-11-14T22:13:21.000 web1 SHUTDOWN {\"guest\":true,\"reason\":\"guest-shutdown\"}\n"
	    "2023-11-14T22:13:21.005 web1 STOP\n");
	assert_non_null(strstr(r.err, f->sock));
	run_free(&r);
}

static void
test_qvmctl_events_json_lines(void **state)
{
	struct fake *f = *state;
	const char *tail;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"subscribed\":true}}";
	f->after = events_after;
	fake_serve(f);
	run(f, &r, "--json", "events", NULL);
	assert_int_equal(r.status, 3);
	assert_request(f, "{\"id\":1,\"cmd\":\"subscribe\"}");
	/* The events, then the failure as one more JSON line, and nothing on stderr. */
	tail = r.out + strlen(events_after);
	assert_memory_equal(r.out, events_after, strlen(events_after));
	assert_true(strncmp(tail, "{\"code\":\"unreachable\",\"message\":",
	                    strlen("{\"code\":\"unreachable\",\"message\":")) == 0);
	assert_ptr_equal(strchr(tail, '\n'), tail + strlen(tail) - 1);
	assert_string_equal(r.err, "");
	run_free(&r);
}

static void
test_qvmctl_events_sigint_exits_0(void **state)
{
	struct fake *f = *state;
	const char *argv[] = {"-s", f->sock, "events", NULL};
	struct run r;
	char *out = NULL;
	pid_t pid;

	f->reply = "{\"ok\":true,\"result\":{\"subscribed\":true}}";
	f->after = events_after;
	f->hold = true;
	fake_serve(f);
	pid = spawn_ctl(f, NULL, argv);
	for (int i = 0; i < 1000; i++) {
		free(out);
		out = slurp(f->out);
		if (strstr(out, "STOP\n") != NULL)
			break;
		usleep(10000);
	}
	assert_non_null(strstr(out, "STOP\n"));
	free(out);
	kill(pid, SIGINT);
	wait_ctl(f, pid, &r);
	assert_int_equal(r.status, 0);
	run_free(&r);
}

static void
test_qvmctl_qmp_passthrough(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply =
	    "{\"ok\":true,\"result\":{\"return\":{\"status\":\"running\",\"running\":true}}}";
	fake_serve(f);
	run(f, &r, "qmp", "web1", "query-status", "{\"a\": [1, {\"b\": null}]}", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f, "{\"id\":1,\"cmd\":\"qmp\",\"vm\":\"web1\",\"args\":{\"command\":"
	                  "\"query-status\",\"arguments\":{\"a\":[1,{\"b\":null}]}}}");
	assert_string_equal(r.out, "{\n  \"status\": \"running\",\n  \"running\": true\n}\n");
	run_free(&r);

	/* --json prints the same thing: QEMU's return value, unwrapped. */
	free(f->request);
	f->request = NULL;
	fake_serve(f);
	run(f, &r, "--json", "qmp", "web1", "query-status", NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "{\n  \"status\": \"running\",\n  \"running\": true\n}\n");
	run_free(&r);
}

static void
test_qvmctl_qmp_bad_json_args(void **state)
{
	static const char *const bad[] = {"{\"a\":", "[1,2]", "{\"a\":1} x", "nope", ""};
	struct fake *f = *state;
	struct run r;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		run(f, &r, "qmp", "web1", "query-status", bad[i], NULL);
		assert_int_equal(r.status, 2);
		assert_non_null(strstr(r.err, "JSON-ARGS"));
		assert_string_equal(r.out, "");
		run_free(&r);
	}
	assert_false(fake_pending(f));
}

static void
test_qvmctl_qmp_large_reply(void **state)
{
	struct fake *f = *state;
	size_t big = 3 * 1024 * 1024;
	char *reply = malloc(big + 100), *want = malloc(big + 10);
	struct run r;

	assert_non_null(reply);
	assert_non_null(want);
	strcpy(reply, "{\"ok\":true,\"result\":{\"return\":\"");
	memset(reply + strlen(reply), 'x', big);
	strcpy(reply + strlen("{\"ok\":true,\"result\":{\"return\":\"") + big, "\"}}");
	want[0] = '"';
	memset(want + 1, 'x', big);
	strcpy(want + 1 + big, "\"\n");
	f->reply = reply;
	fake_serve(f);
	run(f, &r, "qmp", "web1", "x", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f,
	               "{\"id\":1,\"cmd\":\"qmp\",\"vm\":\"web1\",\"args\":{\"command\":\"x\"}}");
	assert_true(strcmp(r.out, want) == 0);
	run_free(&r);
	free(reply);
	free(want);
}

static void
test_qvmctl_reload_summary(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"added\":[\"web3\"],\"removed\":[],"
	           "\"changed\":[\"web1\",\"web2\"],\"errors\":[\"bad.ini:3: memory: 'x' is not a "
	           "size\"]}}";
	fake_serve(f);
	run(f, &r, "reload", NULL);
	assert_int_equal(r.status, 1); /* a definition did not load: the summary, then exit 1 */
	assert_request(f, "{\"id\":1,\"cmd\":\"reload\"}");
	assert_string_equal(r.out, "added: web3\n"
	                           "removed: none\n"
	                           "changed: web1, web2\n"
	                           "errors:\n"
	                           "  bad.ini:3: memory: 'x' is not a size\n");
	run_free(&r);
}

/* With --json too: the result on stdout, exit 1 while a definition does not load; 0 when all do. */
static void
test_qvmctl_reload_errors_exit_1(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"added\":[],\"removed\":[],\"changed\":[],"
	           "\"errors\":[\"x.ini: not a regular file\"]}}";
	fake_serve(f);
	run(f, &r, "--json", "reload", NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.out, "x.ini: not a regular file"));
	run_free(&r);
	free(f->request);
	f->request = NULL;

	f->reply = "{\"ok\":true,\"result\":{\"added\":[],\"removed\":[],\"changed\":[],"
	           "\"errors\":[]}}";
	fake_serve(f);
	run(f, &r, "--json", "reload", NULL);
	assert_int_equal(r.status, 0);
	run_free(&r);
	free(f->request);
	f->request = NULL;
	fake_serve(f);
	run(f, &r, "reload", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "errors: none\n"));
	run_free(&r);
}

/* Everything qvmctl can check itself is a usage error (exit 2) and nothing is sent. */
static void
test_qvmctl_local_checks_exit_2(void **state)
{
	static const char *const cases[][12] = {
	    {"attach-disk", "web1", "d1", "--file", "relative.img", NULL},
	    {"attach-disk", "web1", "d1", "--file", "/x.img", "--create", "100", NULL},
	    {"attach-disk", "web1", "d1", "--file", "/x.img", "--create", "1048577", NULL},
	    {"attach-disk", "web1", "1d", "--file", "/x.img", NULL},
	    {"attach-net", "web1", "n1", "--type", "tap", "--ifname", "tap0", "--restrict", NULL},
	    {"attach-net", "web1", "n1", "--type", "tap", NULL},
	    {"attach-net", "web1", "n1", "--type", "bridge", NULL},
	    {"attach-net", "web1", "n1", "--bridge", "br0", NULL},
	    {"attach-net", "web1", "n1", "--type", "tap", "--ifname", "a/b", NULL},
	    {"powerdown", "web1", "--timeout", "0", NULL},
	    {"powerdown", "web1", "--timeout", "2h", NULL},
	    {"powerdown", "--all", "--timeout", "500ms", NULL},
	    {"detach", "web1", "d1", "--timeout", "0", NULL},
	    {"detach", "web1", "d1", "--timeout", "90m", NULL},
	    {"detach", "web1", "a.b", NULL},
	    {"status", "bad name", NULL},
	    {"start", "qvmd.sock", NULL},
	    {"devices", "_web", NULL},
	};
	static const char *const why[] = {
	    "--file: 'relative.img' is not an absolute path",
	    "size: '100' is too small (at least 1M)",
	    "size: '1048577' is not a multiple of 512",
	    "'1d' is not a valid device id",
	    "[net n1] restrict: only for type = user (this NIC is type = tap)",
	    "[net n1] ifname: required for type = tap",
	    "[net n1] bridge: required for type = bridge",
	    "[net n1] bridge: only for type = bridge (this NIC is type = user)",
	    "'a/b' is not an interface name",
	    "--timeout: '0' is out of range (1s..1h)",
	    "--timeout: '2h' is out of range (1s..1h)",
	    "--timeout: '500ms' is out of range (1s..1h)",
	    "--timeout: '0' is out of range (1s..1h)",
	    "--timeout: '90m' is out of range (1s..1h)",
	    "'a.b' is not a valid device id",
	    "'bad name' is not a valid name",
	    "'qvmd.sock' is reserved",
	    "'_web' is not a valid name",
	};
	struct fake *f = *state;
	struct run r;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *argv[16] = {"-s", f->sock};
		size_t n = 2;

		for (size_t j = 0; cases[i][j] != NULL; j++)
			argv[n++] = cases[i][j];
		argv[n] = NULL;
		wait_ctl(f, spawn_ctl(f, NULL, argv), &r);
		if (r.status != 2 || strstr(r.err, why[i]) == NULL)
			fail_msg("case %zu (%s %s): exit %d, stderr: %s", i, cases[i][0],
			         cases[i][1], r.status, r.err);
		assert_non_null(strstr(r.err, "usage: qvmctl "));
		run_free(&r);
	}
	assert_false(fake_pending(f));
}

/*
 * -t bounds an unresponsive daemon, not an operation: a powerdown that takes 1.5 s under -t 300ms
 * succeeds because the daemon answers the "version" probes sent meanwhile on the same connection.
 */
static void
test_qvmctl_timeout_slow_operation(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"state\":\"stopped\",\"ended_by\":\"guest\"}}";
	f->slow_ms = 1500;
	fake_serve(f);
	run(f, &r, "-t", "300ms", "powerdown", "web1", NULL);
	if (r.status != 0)
		fail_msg("exit %d, stderr: %s", r.status, r.err);
	assert_string_equal(r.out, "web1: stopped (ended by guest)\n");
	assert_true(f->probes >= 1);
	assert_request(f, "{\"id\":1,\"cmd\":\"powerdown\",\"vm\":\"web1\",\"args\":{"
	                  "\"wait\":true}}");
	run_free(&r);
}

static void
test_qvmctl_version(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"version\":\"9.8.7\"}}";
	fake_serve(f);
	run(f, &r, "version", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f, "{\"id\":1,\"cmd\":\"version\"}");
	assert_string_equal(r.out, "qvmctl " QVMD_VERSION "\nqvmd 9.8.7\n");
	run_free(&r);
}

static void
test_qvmctl_attach_disk_request(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{}}";
	fake_serve(f);
	run(f, &r, "attach-disk", "web1", "data", "--file", "/img/d.raw", "--format", "raw",
	    "--readonly", "--cache", "none", "--create", "1G", "--persist", NULL);
	assert_int_equal(r.status, 0);
	assert_request(
	    f, "{\"id\":1,\"cmd\":\"attach-disk\",\"vm\":\"web1\",\"args\":{"
	       "\"id\":\"data\",\"file\":\"/img/d.raw\",\"format\":\"raw\",\"readonly\":true,"
	       "\"cache\":\"none\",\"create_size\":1073741824,\"persist\":true}}");
	assert_string_equal(r.out, "web1: attached disk data (persisted)\n");
	run_free(&r);

	f->reply = "{\"ok\":true,\"result\":{}}";
	free(f->request);
	f->request = NULL;
	fake_serve(f);
	run(f, &r, "attach-disk", "--file=/img/e.qcow2", "web1", "e", NULL);
	assert_int_equal(r.status, 0);
	assert_request(
	    f, "{\"id\":1,\"cmd\":\"attach-disk\",\"vm\":\"web1\",\"args\":{"
	       "\"id\":\"e\",\"file\":\"/img/e.qcow2\",\"readonly\":false,\"persist\":false}}");
	run_free(&r);
}

static void
test_qvmctl_attach_disk_usage_errors(void **state)
{
	static const char *const bad[][8] = {
	    {"attach-disk", "web1", "d", NULL},
	    {"attach-disk", "web1", "d", "--file", "/x", "--create", "lots", NULL},
	    {"attach-disk", "web1", "d", "--file", "/x", "--format", "vmdk", NULL},
	    {"attach-disk", "web1", "d", "--file", "/x", "--cache", "fast", NULL},
	    {"attach-disk", "web1", "--file", "/x", NULL},
	};
	struct fake *f = *state;
	struct run r;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *argv[12] = {"-s", f->sock};

		for (size_t j = 0; bad[i][j] != NULL; j++)
			argv[2 + j] = bad[i][j];
		wait_ctl(f, spawn_ctl(f, NULL, argv), &r);
		assert_int_equal(r.status, 2);
		assert_non_null(strstr(r.err, "usage: qvmctl attach-disk NAME ID --file PATH"));
		run_free(&r);
	}
	assert_false(fake_pending(f));
}

static void
test_qvmctl_attach_net_request(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{}}";
	fake_serve(f);
	run(f, &r, "attach-net", "web1", "nic1", "--type", "bridge", "--mac", "52:54:00:AB:cd:01",
	    "--bridge", "br0", "--ifname", "tap7", NULL);
	assert_int_equal(r.status, 0);
	assert_request(
	    f, "{\"id\":1,\"cmd\":\"attach-net\",\"vm\":\"web1\",\"args\":{"
	       "\"id\":\"nic1\",\"type\":\"bridge\",\"mac\":\"52:54:00:ab:cd:01\","
	       "\"bridge\":\"br0\",\"ifname\":\"tap7\",\"restrict\":false,\"persist\":false}}");
	assert_string_equal(r.out, "web1: attached net nic1\n");
	run_free(&r);

	run(f, &r, "attach-net", "web1", "nic1", "--mac", "01:00:5e:00:00:01", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "--mac"));
	run_free(&r);
	run(f, &r, "attach-net", "web1", "nic1", "--type", "vde", NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	assert_false(fake_pending(f));
}

static void
test_qvmctl_detach_request(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{}}";
	fake_serve(f);
	run(f, &r, "detach", "web1", "disk1", "--persist", "--timeout", "1500ms", NULL);
	assert_int_equal(r.status, 0);
	assert_request(f, "{\"id\":1,\"cmd\":\"detach\",\"vm\":\"web1\",\"args\":{"
	                  "\"id\":\"disk1\",\"persist\":true,\"timeout_ms\":1500}}");
	assert_string_equal(r.out, "web1: detached disk1 (persisted)\n");
	run_free(&r);
}

static void
test_qvmctl_failure_exit_1(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":false,\"error\":{\"code\":\"busy\","
	           "\"message\":\"vm web1: busy: powerdown in progress\"}}";
	fake_serve(f);
	run(f, &r, "start", "web1", NULL);
	assert_int_equal(r.status, 1);
	assert_string_equal(r.err, "qvmctl: vm web1: busy: powerdown in progress\n");
	assert_string_equal(r.out, "");
	run_free(&r);
}

static void
test_qvmctl_failure_json(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply =
	    "{\"ok\":false,\"error\":{\"code\":\"not-found\",\"message\":\"vm nope: not found\"}}";
	fake_serve(f);
	run(f, &r, "--json", "status", "nope", NULL);
	assert_int_equal(r.status, 1);
	assert_json_equal(r.out, "{\"code\":\"not-found\",\"message\":\"vm nope: not found\"}");
	assert_string_equal(r.err, ""); /* the message once: on stdout only */
	run_free(&r);
}

static void
test_qvmctl_json_result(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"state\":\"stopped\",\"ended_by\":\"guest\","
	           "\"elapsed_ms\":5}}";
	fake_serve(f);
	run(f, &r, "--json", "powerdown", "web1", NULL);
	assert_int_equal(r.status, 0);
	assert_json_equal(r.out, "{\"state\":\"stopped\",\"ended_by\":\"guest\",\"elapsed_ms\":5}");
	run_free(&r);
}

static void
test_qvmctl_unreachable_exit_3(void **state)
{
	struct fake *f = *state;
	char path[200];
	struct run r;
	const char *argv[] = {"-s", path, "list", NULL};

	snprintf(path, sizeof path, "%s/absent.sock", f->dir);
	wait_ctl(f, spawn_ctl(f, NULL, argv), &r);
	assert_int_equal(r.status, 3);
	assert_non_null(strstr(r.err, path));
	run_free(&r);
}

/* --json: an unreachable daemon is one {code, message} object on stdout, like any failure. */
static void
test_qvmctl_unreachable_json(void **state)
{
	struct fake *f = *state;
	char path[200];
	struct run r;
	const char *argv[] = {"-s", path, "--json", "status", "web1", NULL};

	snprintf(path, sizeof path, "%s/absent.sock", f->dir);
	wait_ctl(f, spawn_ctl(f, NULL, argv), &r);
	assert_int_equal(r.status, 3);
	assert_true(strncmp(r.out, "{\"code\":\"unreachable\",\"message\":",
	                    strlen("{\"code\":\"unreachable\",\"message\":")) == 0);
	assert_non_null(strstr(r.out, path));
	assert_string_equal(r.err, "");
	run_free(&r);
}

static void
test_qvmctl_closed_mid_reply_exit_3(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->raw = "{\"id\":1,\"ok\":tr";
	fake_serve(f);
	run(f, &r, "list", NULL);
	assert_int_equal(r.status, 3);
	assert_non_null(strstr(r.err, "connection lost"));
	assert_string_equal(r.out, "");
	run_free(&r);
}

static void
test_qvmctl_closed_without_reply_exit_3(void **state)
{
	struct fake *f = *state;
	struct run r;

	fake_serve(f); /* reads the request, then closes */
	run(f, &r, "status", "web1", NULL);
	assert_int_equal(r.status, 3);
	assert_non_null(strstr(r.err, f->sock));
	run_free(&r);
}

static void
test_qvmctl_timeout_exit_3(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->hold = true; /* never replies */
	fake_serve(f);
	run(f, &r, "-t", "300ms", "start", "web1", NULL);
	assert_int_equal(r.status, 3);
	assert_non_null(strstr(r.err, "timed out"));
	run_free(&r);
}

static void
test_qvmctl_event_before_reply_skipped(void **state)
{
	struct fake *f = *state;
	struct run r;

	f->raw = "{\"event\":\"state\",\"vm\":\"a\",\"state\":\"running\",\"ts\":1}\n"
	         "{\"id\":1,\"ok\":true,\"result\":{\"state\":\"paused\"}}\n";
	fake_serve(f);
	run(f, &r, "pause", "web1", NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "web1: paused\n");
	run_free(&r);
}

static void
test_qvmctl_env_socket(void **state)
{
	struct fake *f = *state;
	const char *plain[] = {"version", NULL};
	const char *override[] = {"-s", f->sock, "version", NULL};
	struct run r;

	f->reply = "{\"ok\":true,\"result\":{\"version\":\"1\"}}";
	fake_serve(f);
	wait_ctl(f, spawn_ctl(f, f->sock, plain), &r);
	assert_int_equal(r.status, 0);
	assert_non_null(f->request);
	run_free(&r);

	/* -s wins over QVMD_SOCKET */
	free(f->request);
	f->request = NULL;
	fake_serve(f);
	wait_ctl(f, spawn_ctl(f, "/nonexistent/qvmd.sock", override), &r);
	assert_int_equal(r.status, 0);
	assert_non_null(f->request);
	run_free(&r);

	/* and QVMD_SOCKET wins over the default */
	wait_ctl(f, spawn_ctl(f, "/nonexistent/qvmd.sock", plain), &r);
	assert_int_equal(r.status, 3);
	assert_non_null(strstr(r.err, "/nonexistent/qvmd.sock"));
	run_free(&r);
}

static void
test_qvmctl_usage_errors_exit_2(void **state)
{
	struct fake *f = *state;
	struct run r;

	run(f, &r, "frobnicate", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "unknown verb 'frobnicate'"));
	/* The overview: every verb with its summary line. */
	assert_non_null(strstr(r.err, "\n  attach-net       hot-plug a NIC"));
	run_free(&r);
	/* help VERB and VERB --help: its usage, options with their help, exit statuses; no daemon
	 * is asked. */
	run(f, &r, "help", "attach-net", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "usage: qvmctl attach-net NAME ID"));
	assert_non_null(strstr(r.out, "  --restrict      with --type user: no traffic beyond"));
	assert_non_null(strstr(r.out, "exit status: 0 done;"));
	run_free(&r);
	run(f, &r, "powerdown", "--help", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "       qvmctl powerdown --all [--timeout D]"));
	assert_non_null(strstr(r.out, "or with --all: a VM still runs at the end;"));
	run_free(&r);
	run(f, &r, "help", "frobnicate", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "help: unknown verb 'frobnicate'"));
	run_free(&r);
	run(f, &r, "status", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "usage: qvmctl status NAME"));
	run_free(&r);
	run(f, &r, "list", "extra", NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	run(f, &r, "--bogus", "list", NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	run(f, &r, "detach", "web1", "d", "--timeout", "1x", NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	run(f, &r, NULL);
	assert_int_equal(r.status, 2);
	run_free(&r);
	assert_false(fake_pending(f));

	run(f, &r, "-h", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "usage: qvmctl [-s SOCKET] [--json]"));
	assert_non_null(
	    strstr(r.out, "\n  powerdown        ACPI powerdown; after the timeout quit"));
	run_free(&r);
	run(f, &r, "powerdown", "--help", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "usage: qvmctl powerdown NAME [--timeout D] [--no-wait]\n"
	                              "       qvmctl powerdown --all [--timeout D]\n"));
	run_free(&r);
	assert_false(fake_pending(f));
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_qvmctl_list_table),
	    T(test_qvmctl_list_json),
	    T(test_qvmctl_status_human),
	    T(test_qvmctl_status_stopped_dashes),
	    T(test_qvmctl_devices_table),
	    T(test_qvmctl_start_prints_pid),
	    T(test_qvmctl_simple_verbs),
	    T(test_qvmctl_powerdown_timeout_no_wait),
	    T(test_qvmctl_powerdown_ended_by),
	    T(test_qvmctl_powerdown_all),
	    T(test_qvmctl_powerdown_usage_errors),
	    T(test_qvmctl_events_stream_until_eof),
	    T(test_qvmctl_events_json_lines),
	    T(test_qvmctl_events_sigint_exits_0),
	    T(test_qvmctl_qmp_passthrough),
	    T(test_qvmctl_qmp_bad_json_args),
	    T(test_qvmctl_qmp_large_reply),
	    T(test_qvmctl_reload_summary),
	    T(test_qvmctl_version),
	    T(test_qvmctl_attach_disk_request),
	    T(test_qvmctl_attach_disk_usage_errors),
	    T(test_qvmctl_attach_net_request),
	    T(test_qvmctl_detach_request),
	    T(test_qvmctl_failure_exit_1),
	    T(test_qvmctl_failure_json),
	    T(test_qvmctl_json_result),
	    T(test_qvmctl_unreachable_exit_3),
	    T(test_qvmctl_unreachable_json),
	    T(test_qvmctl_closed_mid_reply_exit_3),
	    T(test_qvmctl_closed_without_reply_exit_3),
	    T(test_qvmctl_timeout_exit_3),
	    T(test_qvmctl_timeout_slow_operation),
	    T(test_qvmctl_reload_errors_exit_1),
	    T(test_qvmctl_local_checks_exit_2),
	    T(test_qvmctl_event_before_reply_skipped),
	    T(test_qvmctl_env_socket),
	    T(test_qvmctl_usage_errors_exit_2),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
