/*
 * test_fakeqemu: the fake QEMU behaves like QEMU 7.2 where the tests rely on it (greeting,
 * negotiation, run states, hot-plug and its events, exits and pidfile) and misbehaves on demand.
 * Driven with a raw blocking socket client so that nothing of qvmd is under test here.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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
#include <json-c/json.h>

#include "host.h"

#ifndef FAKEQEMU_BIN
#error "FAKEQEMU_BIN must name the fakeqemu executable"
#endif

#define MAX_EVENTS 32
#define MAX_LIVE   8

struct fake {
	pid_t pid;
	char dir[64];
	char sock[128];
	char pidfile[128];
	char errfile[128];
	int status; /* wait status once reaped */
	int reaped;
};

struct conn {
	int fd;
	char buf[1 << 16];
	size_t len;
	struct json_object *events[MAX_EVENTS];
	size_t nevents;
};

/*
 * Copies of the fakes the running test started, killed by the teardown when a failed assertion
 * skipped fake_stop (the test's own struct fake is gone by then).
 */
static struct fake live[MAX_LIVE];

static void
live_add(const struct fake *f)
{
	size_t i;

	for (i = 0; i < MAX_LIVE; i++) {
		if (live[i].pid == 0) {
			live[i] = *f;
			return;
		}
	}
}

static struct fake *
live_find(pid_t pid)
{
	size_t i;

	for (i = 0; i < MAX_LIVE; i++)
		if (live[i].pid == pid)
			return &live[i];
	return NULL;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/*
 * Starts fakeqemu with the standard options plus extra ones; env is a NULL-terminated list of
 * NAME=VALUE added to the environment; keep_fd (or -1) is left open in the child.
 */
static void
fake_start(struct fake *f, const char *const *extra, const char *const *env, int keep_fd,
           int with_qmp)
{
	const char *argv[64];
	size_t n = 0;

	memset(f, 0, sizeof(*f));
	strcpy(f->dir, "/tmp/test_fakeqemu.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/qmp.sock", f->dir);
	snprintf(f->pidfile, sizeof(f->pidfile), "%s/qemu.pid", f->dir);
	snprintf(f->errfile, sizeof(f->errfile), "%s/stderr", f->dir);
	argv[n++] = FAKEQEMU_BIN;
	argv[n++] = "-name";
	argv[n++] = "guest=t1,debug-threads=on";
	argv[n++] = "-S";
	argv[n++] = "-nodefaults";
	argv[n++] = "-pidfile";
	argv[n++] = f->pidfile;
	argv[n++] = "-machine";
	argv[n++] = "q35";
	argv[n++] = "-sandbox";
	argv[n++] = "on,obsolete=deny";
	char qmp[160];
	snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", f->sock);
	if (with_qmp) {
		argv[n++] = "-qmp";
		argv[n++] = qmp;
	}
	for (; extra != NULL && *extra != NULL; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;
	f->pid = fork();
	assert_true(f->pid >= 0);
	if (f->pid == 0) {
		int err = open(f->errfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int null = open("/dev/null", O_RDWR);

		if (err >= 0)
			dup2(err, 2);
		if (null >= 0)
			dup2(null, 1);
		if (keep_fd >= 0)
			fcntl(keep_fd, F_SETFD, 0);
		for (; env != NULL && *env != NULL; env++)
			putenv((char *)*env);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	live_add(f);
}

/* Waits up to timeout_ms for the fake to exit; 0 once reaped, -1 on timeout. */
static int
fake_wait(struct fake *f, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;

	while (!f->reaped) {
		pid_t r = waitpid(f->pid, &f->status, WNOHANG);

		if (r == f->pid) {
			struct fake *l = live_find(f->pid);

			f->reaped = 1;
			if (l != NULL)
				l->reaped = 1;
			break;
		}
		if (now_ms() > end)
			return -1;
		sleep_ms(5);
	}
	return 0;
}

static void
fake_stop(struct fake *f)
{
	struct fake *l = live_find(f->pid);

	if (l != NULL)
		l->pid = 0;
	if (!f->reaped) {
		kill(f->pid, SIGKILL);
		fake_wait(f, 5000);
	}
	unlink(f->sock);
	unlink(f->pidfile);
	unlink(f->errfile);
	rmdir(f->dir);
}

static int
connect_path(const char *path, int timeout_ms)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int64_t end = now_ms() + timeout_ms;

	strncpy(sun.sun_path, path, sizeof(sun.sun_path) - 1);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		assert_true(fd >= 0);
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
			return fd;
		close(fd);
		if (now_ms() > end)
			return -1;
		sleep_ms(5);
	}
}

/* The next message (one CRLF-terminated line); NULL on EOF or timeout. */
static struct json_object *
conn_next(struct conn *c, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;

	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		ssize_t n;
		int left;

		if (nl != NULL) {
			size_t line = (size_t)(nl - c->buf) + 1;
			struct json_object *msg;

			*nl = '\0';
			msg = json_tokener_parse(c->buf);
			memmove(c->buf, c->buf + line, c->len - line);
			c->len -= line;
			assert_non_null(msg);
			return msg;
		}
		left = (int)(end - now_ms());
		if (left <= 0 || poll(&p, 1, left) <= 0)
			return NULL;
		n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len - 1);
		if (n <= 0)
			return NULL;
		c->len += (size_t)n;
	}
}

static void
conn_open_fd(struct conn *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
}

static void
conn_close(struct conn *c)
{
	size_t i;

	for (i = 0; i < c->nevents; i++)
		json_object_put(c->events[i]);
	c->nevents = 0;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static void
conn_send(struct conn *c, const char *text, int fd)
{
	struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	if (fd >= 0) {
		struct cmsghdr *cm;

		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	assert_int_equal(sendmsg(c->fd, &mh, MSG_NOSIGNAL), (ssize_t)strlen(text));
}

/* Sends a command (JSON text) and returns its reply; events meanwhile are queued. */
static struct json_object *
conn_cmd_fd(struct conn *c, const char *text, int fd)
{
	conn_send(c, text, fd);
	for (;;) {
		struct json_object *msg = conn_next(c, 3000), *ev;

		if (msg == NULL)
			return NULL;
		if (!json_object_object_get_ex(msg, "event", &ev))
			return msg;
		assert_true(c->nevents < MAX_EVENTS);
		c->events[c->nevents++] = msg;
	}
}

static struct json_object *
conn_cmd(struct conn *c, const char *text)
{
	return conn_cmd_fd(c, text, -1);
}

/* Returns the next event (queued first), removed from the queue; NULL on timeout. */
static struct json_object *
conn_event(struct conn *c, int timeout_ms)
{
	if (c->nevents > 0) {
		struct json_object *ev = c->events[0];

		memmove(c->events, c->events + 1, (c->nevents - 1) * sizeof(c->events[0]));
		c->nevents--;
		return ev;
	}
	return conn_next(c, timeout_ms);
}

static const char *
get_str(struct json_object *obj, const char *path)
{
	char key[64];
	const char *dot;
	struct json_object *v = obj;

	while (v != NULL && *path != '\0') {
		dot = strchr(path, '.');
		snprintf(key, sizeof(key), "%.*s", dot ? (int)(dot - path) : (int)strlen(path),
		         path);
		if (json_object_is_type(v, json_type_array))
			v = json_object_array_get_idx(v, (size_t)atoi(key));
		else if (!json_object_object_get_ex(v, key, &v))
			return NULL;
		path = dot ? dot + 1 : "";
	}
	return v != NULL ? json_object_get_string(v) : NULL;
}

/* Asserts a reply is a success and frees it. */
static void
expect_ok(struct json_object *reply)
{
	assert_non_null(reply);
	if (!json_object_object_get_ex(reply, "return", NULL))
		fail_msg("unexpected reply %s", json_object_to_json_string(reply));
	json_object_put(reply);
}

/* Asserts a reply is an error of class cls whose description contains desc, and frees it. */
static void
expect_error(struct json_object *reply, const char *cls, const char *desc)
{
	assert_non_null(reply);
	assert_string_equal(get_str(reply, "error.class"), cls);
	if (strstr(get_str(reply, "error.desc"), desc) == NULL)
		fail_msg("error '%s' lacks '%s'", get_str(reply, "error.desc"), desc);
	json_object_put(reply);
}

static void
expect_event(struct conn *c, const char *name, const char *data_key, const char *data_value)
{
	struct json_object *ev = conn_event(c, 3000);

	assert_non_null(ev);
	assert_string_equal(get_str(ev, "event"), name);
	if (data_key != NULL) {
		char path[64];

		snprintf(path, sizeof(path), "data.%s", data_key);
		assert_non_null(get_str(ev, path));
		assert_string_equal(get_str(ev, path), data_value);
	}
	json_object_put(ev);
}

static void
expect_status(struct conn *c, const char *status)
{
	struct json_object *r = conn_cmd(c, "{\"execute\":\"query-status\"}");

	assert_non_null(r);
	assert_string_equal(get_str(r, "return.status"), status);
	json_object_put(r);
}

/* Connects, checks the greeting and negotiates. */
static void
conn_open(struct conn *c, const char *path)
{
	struct json_object *greeting;
	int fd = connect_path(path, 20000) /* a bound against hangs, not a speed target */;

	assert_true(fd >= 0);
	conn_open_fd(c, fd);
	greeting = conn_next(c, 3000);
	assert_non_null(greeting);
	assert_string_equal(get_str(greeting, "QMP.version.qemu.major"), "7");
	assert_string_equal(get_str(greeting, "QMP.version.qemu.minor"), "2");
	json_object_put(greeting);
	expect_ok(conn_cmd(c, "{\"execute\":\"qmp_capabilities\"}"));
}

static int
file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static void
expect_clean_exit(struct fake *f, struct conn *c)
{
	assert_null(conn_next(c, 3000)); /* EOF */
	assert_int_equal(fake_wait(f, 3000), 0);
	assert_true(WIFEXITED(f->status));
	assert_int_equal(WEXITSTATUS(f->status), 0);
	assert_false(file_exists(f->pidfile));
	assert_false(file_exists(f->sock));
}

static void
test_fakeqemu_negotiation(void **state)
{
	struct fake f;
	struct conn c;
	struct json_object *r;
	char pidtext[32] = "";
	FILE *fp;

	fake_start(&f, NULL, NULL, -1, 1);
	conn_open_fd(&c, connect_path(f.sock, 5000));
	assert_true(c.fd >= 0);
	r = conn_next(&c, 3000);
	assert_non_null(r);
	assert_string_equal(get_str(r, "QMP.capabilities.0"), "oob");
	json_object_put(r);
	r = conn_cmd(&c, "{\"execute\":\"query-status\",\"id\":7}");
	assert_string_equal(get_str(r, "id"), "7");
	expect_error(r, "CommandNotFound", "Expecting capabilities negotiation");
	expect_ok(conn_cmd(&c, "{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[]}}"));
	expect_error(conn_cmd(&c, "{\"execute\":\"qmp_capabilities\"}"), "CommandNotFound",
	             "already complete");
	r = conn_cmd(&c, "{\"execute\":\"query-status\",\"id\":{\"a\":[1]}}");
	assert_string_equal(get_str(r, "return.status"), "prelaunch");
	assert_string_equal(get_str(r, "return.running"), "false");
	assert_string_equal(get_str(r, "id.a"), "[ 1 ]");
	json_object_put(r);
	expect_error(conn_cmd(&c, "{\"execute\":\"no-such-command\"}"), "CommandNotFound",
	             "The command no-such-command has not been found");
	expect_error(conn_cmd(&c, "{\"execute\":\"query-status\",\"arguments\":{\"x\":1}}"),
	             "GenericError", "Parameter 'x' is unexpected");
	expect_error(conn_cmd(&c, "[1]"), "GenericError", "QMP input must be a JSON object");
	r = conn_cmd(&c, "{\"execute\":\"query-name\"}");
	assert_string_equal(get_str(r, "return.name"), "t1");
	json_object_put(r);
	fp = fopen(f.pidfile, "r");
	assert_non_null(fp);
	assert_non_null(fgets(pidtext, sizeof(pidtext), fp));
	fclose(fp);
	assert_int_equal(atoi(pidtext), f.pid);
	/* quit: SHUTDOWN before the reply, then EOF and a clean exit. */
	conn_send(&c, "{\"execute\":\"quit\",\"id\":\"q\"}", -1);
	r = conn_next(&c, 3000);
	assert_string_equal(get_str(r, "event"), "SHUTDOWN");
	assert_string_equal(get_str(r, "data.reason"), "host-qmp-quit");
	json_object_put(r);
	r = conn_next(&c, 3000);
	assert_string_equal(get_str(r, "id"), "q");
	expect_ok(r);
	expect_clean_exit(&f, &c);
	conn_close(&c);
	fake_stop(&f);
}

static void
test_fakeqemu_run_states(void **state)
{
	const char *const extra[] = {"-smp", "2", NULL};
	struct fake f;
	struct conn c;
	struct json_object *r;

	fake_start(&f, extra, NULL, -1, 1);
	conn_open(&c, f.sock);
	expect_ok(conn_cmd(&c, "{\"execute\":\"stop\"}"));
	assert_int_equal(c.nevents, 0); /* already paused: no STOP */
	expect_ok(conn_cmd(&c, "{\"execute\":\"cont\"}"));
	expect_event(&c, "RESUME", NULL, NULL);
	expect_status(&c, "running");
	expect_ok(conn_cmd(&c, "{\"execute\":\"stop\"}"));
	expect_event(&c, "STOP", NULL, NULL);
	expect_status(&c, "paused");
	expect_ok(conn_cmd(&c, "{\"execute\":\"system_reset\"}"));
	expect_event(&c, "RESET", "reason", "host-qmp-system-reset");
	expect_status(&c, "prelaunch");
	r = conn_cmd(&c, "{\"execute\":\"query-cpus-fast\"}");
	assert_non_null(r);
	assert_int_equal(json_object_array_length(json_object_object_get(r, "return")), 2);
	json_object_put(r);
	r = conn_cmd(&c, "{\"execute\":\"human-monitor-command\","
	                 "\"arguments\":{\"command-line\":\"info status\"}}");
	assert_string_equal(get_str(r, "return"), "VM status: paused (prelaunch)\r\n");
	json_object_put(r);
	conn_close(&c);
	fake_stop(&f);
}

/* Finds the device with qdev_id id in a query-pci bus list (recursing into bridges). */
static struct json_object *
pci_find(struct json_object *devices, const char *id)
{
	size_t i;

	for (i = 0; devices != NULL && i < json_object_array_length(devices); i++) {
		struct json_object *d = json_object_array_get_idx(devices, i), *br, *sub;

		if (strcmp(get_str(d, "qdev_id"), id) == 0)
			return d;
		if (json_object_object_get_ex(d, "pci_bridge", &br) &&
		    json_object_object_get_ex(br, "devices", &sub) && (sub = pci_find(sub, id)))
			return sub;
	}
	return NULL;
}

static struct json_object *
query_pci_root(struct conn *c, struct json_object **reply)
{
	*reply = conn_cmd(c, "{\"execute\":\"query-pci\"}");
	assert_non_null(*reply);
	return json_object_object_get(
	    json_object_array_get_idx(json_object_object_get(*reply, "return"), 0), "devices");
}

static const char *const hotplug_args[] = {
    "-device",
    "{\"driver\":\"pcie-root-port\",\"id\":\"rp.nic\",\"bus\":\"pcie.0\",\"chassis\":1}",
    "-device",
    "{\"driver\":\"pcie-root-port\",\"id\":\"hp.0\",\"bus\":\"pcie.0\",\"chassis\":2}",
    "-device",
    "{\"driver\":\"pcie-root-port\",\"id\":\"hp.1\",\"bus\":\"pcie.0\",\"chassis\":3}",
    "-netdev",
    "{\"type\":\"user\",\"id\":\"nic.net\",\"restrict\":true}",
    "-device",
    "{\"driver\":\"virtio-net-pci\",\"id\":\"nic\",\"netdev\":\"nic.net\",\"bus\":\"rp.nic\"}",
    NULL};

static void
test_fakeqemu_hotplug(void **state)
{
	struct fake f;
	struct conn c;
	struct json_object *r, *root;
	char add_file[256];
	const char *vs = "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"virtio-blk-pci\","
	                 "\"id\":\"d1\",\"drive\":\"d1.fmt\",\"bus\":\"%s\"}}";
	char cmd[512];

	fake_start(&f, hotplug_args, NULL, -1, 1);
	conn_open(&c, f.sock);
	snprintf(add_file, sizeof(add_file),
	         "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"file\","
	         "\"node-name\":\"d1.file\",\"filename\":\"%s\"}}",
	         f.pidfile);
	expect_ok(conn_cmd(&c, add_file));
	expect_error(conn_cmd(&c, add_file), "GenericError",
	             "Duplicate nodes with node-name='d1.file'");
	expect_ok(conn_cmd(&c, "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"qcow2\","
	                       "\"node-name\":\"d1.fmt\",\"file\":\"d1.file\"}}"));
	snprintf(cmd, sizeof(cmd), vs, "rp.nic");
	expect_error(conn_cmd(&c, cmd), "GenericError", "PCI: no slot/function available");
	snprintf(cmd, sizeof(cmd), vs, "nope");
	expect_error(conn_cmd(&c, cmd), "GenericError", "Bus 'nope' not found");
	snprintf(cmd, sizeof(cmd), vs, "pcie.0");
	expect_error(conn_cmd(&c, cmd), "GenericError", "does not support hotplugging");
	expect_error(conn_cmd(&c, "{\"execute\":\"device_add\",\"arguments\":{\"driver\":"
	                          "\"virtio-net-pci\",\"id\":\"nic\",\"bus\":\"hp.1\"}}"),
	             "GenericError", "Duplicate device ID 'nic'");
	snprintf(cmd, sizeof(cmd), vs, "hp.0");
	expect_ok(conn_cmd(&c, cmd));
	expect_error(conn_cmd(&c, "{\"execute\":\"blockdev-del\","
	                          "\"arguments\":{\"node-name\":\"d1.fmt\"}}"),
	             "GenericError", "Node d1.fmt is in use");
	r = conn_cmd(&c,
	             "{\"execute\":\"qom-list\",\"arguments\":{\"path\":\"/machine/peripheral\"}}");
	assert_non_null(strstr(json_object_to_json_string(r), "\"d1\""));
	json_object_put(r);
	r = conn_cmd(&c, "{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
	                 "\"/machine/peripheral/d1\",\"property\":\"parent_bus\"}}");
	assert_string_equal(get_str(r, "return"), "/machine/peripheral/hp.0/hp.0");
	json_object_put(r);
	/* Before the firmware ran, root ports list no devices; after, d1 sits behind hp.0. */
	root = query_pci_root(&c, &r);
	assert_non_null(pci_find(root, "hp.0"));
	assert_null(pci_find(root, "d1"));
	json_object_put(r);
	expect_ok(conn_cmd(&c, "{\"execute\":\"cont\"}"));
	expect_event(&c, "RESUME", NULL, NULL);
	root = query_pci_root(&c, &r);
	assert_non_null(pci_find(root, "d1"));
	assert_string_equal(get_str(pci_find(root, "d1"), "bus"), "2");
	json_object_put(r);
	r = conn_cmd(&c, "{\"execute\":\"query-named-block-nodes\"}");
	assert_non_null(strstr(json_object_to_json_string(r), "\"d1.fmt\""));
	json_object_put(r);
	/* Unplug: the reply, then the backend's event, then the device's. */
	expect_ok(conn_cmd(&c, "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"d1\"}}"));
	expect_event(&c, "DEVICE_DELETED", "path", "/machine/peripheral/d1/virtio-backend");
	expect_event(&c, "DEVICE_DELETED", "device", "d1");
	expect_ok(conn_cmd(&c, "{\"execute\":\"blockdev-del\","
	                       "\"arguments\":{\"node-name\":\"d1.fmt\"}}"));
	expect_ok(conn_cmd(&c, "{\"execute\":\"blockdev-del\","
	                       "\"arguments\":{\"node-name\":\"d1.file\"}}"));
	snprintf(cmd, sizeof(cmd), vs, "hp.0");
	expect_error(conn_cmd(&c, cmd), "GenericError",
	             "Property 'virtio-blk-device.drive' can't find value 'd1.fmt'");
	expect_error(conn_cmd(&c, "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"zz\"}}"),
	             "DeviceNotFound", "Device 'zz' not found");
	expect_ok(conn_cmd(&c, "{\"execute\":\"netdev_add\",\"arguments\":{\"type\":\"user\","
	                       "\"id\":\"n2.net\"}}"));
	expect_error(conn_cmd(&c, "{\"execute\":\"netdev_add\",\"arguments\":{\"type\":\"user\","
	                          "\"id\":\"n2.net\"}}"),
	             "GenericError", "Duplicate ID 'n2.net'");
	expect_ok(conn_cmd(&c, "{\"execute\":\"netdev_del\",\"arguments\":{\"id\":\"n2.net\"}}"));
	conn_close(&c);
	fake_stop(&f);
}

/* Backups as QEMU 7.2 runs them, without a copy: bitmaps on a node, a job waiting for
 * job-finalize, its events in QEMU's order, the bitmap busy meanwhile and free after; a cancel;
 * FAKEQEMU_JOB_MS and the refusals the backup code meets. */
static void
test_fakeqemu_backup_jobs(void **state)
{
	const char *const env[] = {"FAKEQEMU_JOB_MS=100", NULL};
	const char *bm =
	    "{\"execute\":\"block-dirty-bitmap-add\",\"arguments\":{\"node\":\"d1.fmt\","
	    "\"name\":\"b\",\"persistent\":true}}";
	const char *bk = "{\"execute\":\"blockdev-backup\",\"arguments\":{\"job-id\":\"j\","
	                 "\"device\":\"d1.fmt\",\"target\":\"t\",\"sync\":\"incremental\","
	                 "\"bitmap\":\"b\",\"auto-finalize\":false}}";
	struct fake f;
	struct conn c;
	struct json_object *r;
	char cmd[256];

	fake_start(&f, NULL, env, -1, 1);
	conn_open(&c, f.sock);
	snprintf(cmd, sizeof(cmd),
	         "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"qcow2\",\"node-name\":"
	         "\"d1.fmt\",\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}}",
	         f.pidfile);
	expect_ok(conn_cmd(&c, cmd));
	expect_ok(conn_cmd(&c, "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"qcow2\","
	                       "\"node-name\":\"t\",\"file\":{\"driver\":\"file\",\"filename\":"
	                       "\"/dev/null\"},\"cache\":{\"no-flush\":true},\"backing\":null}}"));
	expect_error(conn_cmd(&c, bk), "GenericError", "Dirty bitmap 'b' not found");
	expect_ok(conn_cmd(&c, bm));
	expect_error(conn_cmd(&c, bm), "GenericError", "Bitmap already exists: b");
	r = conn_cmd(&c, "{\"execute\":\"query-named-block-nodes\"}");
	for (size_t i = 0; i < json_object_array_length(json_object_object_get(r, "return")); i++) {
		struct json_object *n =
		    json_object_array_get_idx(json_object_object_get(r, "return"), i);

		if (strcmp(get_str(n, "node-name"), "d1.fmt") != 0) {
			assert_null(get_str(n, "dirty-bitmaps")); /* only where one was added */
			continue;
		}
		assert_non_null(get_str(n, "dirty-bitmaps.0.name"));
		assert_string_equal(get_str(n, "dirty-bitmaps.0.name"), "b");
		assert_string_equal(get_str(n, "dirty-bitmaps.0.recording"), "true");
		assert_string_equal(get_str(n, "dirty-bitmaps.0.persistent"), "true");
		assert_string_equal(get_str(n, "dirty-bitmaps.0.busy"), "false");
	}
	json_object_put(r);

	expect_ok(conn_cmd(&c, bk));
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "created");
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "running");
	expect_error(conn_cmd(&c, bk), "GenericError", "Job ID 'j' already in use");
	expect_error(conn_cmd(&c, "{\"execute\":\"block-dirty-bitmap-remove\",\"arguments\":{"
	                          "\"node\":\"d1.fmt\",\"name\":\"b\"}}"),
	             "GenericError", "is currently in use");
	expect_error(conn_cmd(&c, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"j\"}}"),
	             "GenericError", "in state 'running' cannot accept command verb 'finalize'");
	r = conn_cmd(&c, "{\"execute\":\"query-jobs\"}");
	assert_string_equal(get_str(r, "return.0.id"), "j");
	assert_string_equal(get_str(r, "return.0.status"), "running");
	json_object_put(r);
	/* after FAKEQEMU_JOB_MS, the copy is over */
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "waiting");
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "pending");
	expect_event(&c, "BLOCK_JOB_PENDING", "id", "j");
	expect_ok(conn_cmd(&c, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"j\"}}"));
	expect_event(&c, "BLOCK_JOB_COMPLETED", "device", "j");
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "concluded");
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "null");
	r = conn_cmd(&c, "{\"execute\":\"query-jobs\"}");
	assert_int_equal(json_object_array_length(json_object_object_get(r, "return")), 0);
	json_object_put(r);
	expect_error(conn_cmd(&c, "{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":\"j\"}}"),
	             "GenericError", "Job not found");

	/* cancelled while it copies: the bitmap is free again */
	expect_ok(conn_cmd(&c, bk));
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "created");
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "running");
	expect_ok(conn_cmd(&c, "{\"execute\":\"job-cancel\",\"arguments\":{\"id\":\"j\"}}"));
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "aborting");
	expect_event(&c, "BLOCK_JOB_CANCELLED", "device", "j");
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "concluded");
	expect_event(&c, "JOB_STATUS_CHANGE", "status", "null");
	assert_null(conn_event(&c, 300)); /* no copy ends later */
	expect_ok(conn_cmd(&c, "{\"execute\":\"block-dirty-bitmap-remove\",\"arguments\":{"
	                       "\"node\":\"d1.fmt\",\"name\":\"b\"}}"));
	expect_error(conn_cmd(&c, "{\"execute\":\"remove-fd\",\"arguments\":{}}"), "GenericError",
	             "Parameter 'fdset-id' is missing");
	conn_close(&c);
	fake_stop(&f);
}

/* FAKEQEMU_SLOW: the command is answered after FAKEQEMU_SLOW_MS, commands behind it wait. */
static void
test_fakeqemu_slow(void **state)
{
	const char *const env[] = {"FAKEQEMU_SLOW=query-status", "FAKEQEMU_SLOW_MS=400", NULL};
	struct fake f;
	struct conn c;
	struct json_object *r;

	fake_start(&f, NULL, env, -1, 1);
	conn_open(&c, f.sock);
	conn_send(&c, "{\"execute\":\"query-status\",\"id\":1}", -1);
	conn_send(&c, "{\"execute\":\"query-version\",\"id\":2}", -1);
	assert_null(conn_next(&c, 200));
	r = conn_next(&c, 3000);
	assert_string_equal(get_str(r, "id"), "1");
	json_object_put(r);
	r = conn_next(&c, 3000);
	assert_string_equal(get_str(r, "id"), "2");
	json_object_put(r);
	conn_close(&c);
	fake_stop(&f);
}

static void
test_fakeqemu_no_unplug(void **state)
{
	const char *const env[] = {"FAKEQEMU_NO_UNPLUG=1", NULL};
	struct fake f;
	struct conn c;

	fake_start(&f, hotplug_args, env, -1, 1);
	conn_open(&c, f.sock);
	expect_ok(conn_cmd(&c, "{\"execute\":\"cont\"}"));
	expect_event(&c, "RESUME", NULL, NULL);
	expect_ok(conn_cmd(&c, "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"nic\"}}"));
	assert_null(conn_event(&c, 300));
	expect_error(conn_cmd(&c, "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"nic\"}}"),
	             "GenericError", "Device nic is already in the process of unplug");
	conn_close(&c);
	fake_stop(&f);
}

static void
test_fakeqemu_powerdown(void **state)
{
	const char *const env[] = {"FAKEQEMU_POWERDOWN_DELAY_MS=200", NULL};
	struct fake f;
	struct conn c;
	int64_t t0;

	fake_start(&f, NULL, env, -1, 1);
	conn_open(&c, f.sock);
	expect_ok(conn_cmd(&c, "{\"execute\":\"cont\"}"));
	expect_event(&c, "RESUME", NULL, NULL);
	t0 = now_ms();
	expect_ok(conn_cmd(&c, "{\"execute\":\"system_powerdown\"}"));
	expect_event(&c, "POWERDOWN", NULL, NULL);
	expect_event(&c, "SHUTDOWN", "reason", "guest-shutdown");
	assert_true(now_ms() - t0 >= 200);
	expect_clean_exit(&f, &c);
	conn_close(&c);
	fake_stop(&f);
}

static void
test_fakeqemu_ignore_powerdown(void **state)
{
	const char *const env[] = {"FAKEQEMU_IGNORE_POWERDOWN=1", "FAKEQEMU_POWERDOWN_DELAY_MS=10",
	                           NULL};
	struct fake f;
	struct conn c;

	fake_start(&f, NULL, env, -1, 1);
	conn_open(&c, f.sock);
	expect_ok(conn_cmd(&c, "{\"execute\":\"cont\"}"));
	expect_event(&c, "RESUME", NULL, NULL);
	expect_ok(conn_cmd(&c, "{\"execute\":\"system_powerdown\"}"));
	expect_event(&c, "POWERDOWN", NULL, NULL);
	assert_null(conn_event(&c, 300));
	expect_status(&c, "running");
	conn_close(&c);
	fake_stop(&f);
}

static void
test_fakeqemu_sigterm(void **state)
{
	struct fake f;
	struct conn c;

	fake_start(&f, NULL, NULL, -1, 1);
	conn_open(&c, f.sock);
	kill(f.pid, SIGTERM);
	expect_event(&c, "SHUTDOWN", "reason", "host-signal");
	expect_clean_exit(&f, &c);
	conn_close(&c);
	fake_stop(&f);
}

static void
test_fakeqemu_crash_on_command(void **state)
{
	const char *const env[] = {"FAKEQEMU_CRASH=system_reset,query-status", NULL};
	struct fake f;
	struct conn c;

	fake_start(&f, NULL, env, -1, 1);
	conn_open(&c, f.sock);
	expect_ok(conn_cmd(&c, "{\"execute\":\"query-version\"}"));
	assert_null(conn_cmd(&c, "{\"execute\":\"query-status\"}"));
	assert_int_equal(fake_wait(&f, 3000), 0);
	assert_true(WIFSIGNALED(f.status));
	assert_int_equal(WTERMSIG(f.status), SIGABRT);
	assert_true(file_exists(f.pidfile)); /* an unclean death leaves it */
	conn_close(&c);
	fake_stop(&f);
}

static void
test_fakeqemu_exit_after(void **state)
{
	const char *const env[] = {"FAKEQEMU_EXIT_AFTER_MS=200", NULL};
	struct fake f;
	struct conn c;
	int64_t t0 = now_ms();

	fake_start(&f, NULL, env, -1, 1);
	conn_open(&c, f.sock);
	assert_null(conn_event(&c, 3000)); /* EOF when it dies */
	assert_int_equal(fake_wait(&f, 3000), 0);
	assert_true(now_ms() - t0 >= 200);
	assert_true(WIFSIGNALED(f.status));
	assert_int_equal(WTERMSIG(f.status), SIGABRT);
	assert_true(file_exists(f.pidfile));
	conn_close(&c);
	fake_stop(&f);
}

static void
test_fakeqemu_stall(void **state)
{
	const char *const env[] = {"FAKEQEMU_STALL=query-status", NULL};
	struct fake f;
	struct conn c;
	struct json_object *r;

	fake_start(&f, NULL, env, -1, 1);
	conn_open(&c, f.sock);
	conn_send(&c, "{\"execute\":\"query-status\",\"id\":1}", -1);
	assert_null(conn_next(&c, 300));
	r = conn_cmd(&c, "{\"execute\":\"query-version\",\"id\":2}");
	assert_string_equal(get_str(r, "id"), "2");
	json_object_put(r);
	conn_close(&c);
	fake_stop(&f);
}

static void
test_fakeqemu_startup_delay(void **state)
{
	/* The pidfile comes before the delay, the socket after it: a delay far longer than a
	 * process start on a loaded machine keeps the order observable without timing the start. */
	const char *const env[] = {"FAKEQEMU_STARTUP_DELAY_MS=5000", NULL};
	struct fake f;
	struct conn c;
	int64_t t0 = now_ms();

	fake_start(&f, NULL, env, -1, 1);
	while (!file_exists(f.pidfile) && now_ms() - t0 < 4000)
		sleep_ms(5);
	assert_true(file_exists(f.pidfile));
	assert_false(file_exists(f.sock));
	conn_open(&c, f.sock);
	assert_true(now_ms() - t0 >= 5000);
	conn_close(&c);
	fake_stop(&f);
}

/* An inherited listening socket; a second client after the first has gone is greeted anew. */
static void
test_fakeqemu_inherited_socket_reconnect(void **state)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char path[160], chardev[192];
	const char *extra[] = {"-chardev", chardev, "-mon", "chardev=qvmd.qmp,mode=control", NULL};
	struct fake f;
	struct conn c;
	int lfd;

	strcpy(path, "/tmp/test_fakeqemu_inh.XXXXXX");
	assert_non_null(mkdtemp(path));
	strcat(path, "/s");
	strcpy(sun.sun_path, path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	snprintf(chardev, sizeof(chardev), "socket,id=qvmd.qmp,fd=%d,server=on,wait=off", lfd);
	fake_start(&f, extra, NULL, lfd, 0);
	close(lfd);
	conn_open(&c, path);
	expect_ok(conn_cmd(&c, "{\"execute\":\"cont\"}"));
	expect_event(&c, "RESUME", NULL, NULL);
	conn_close(&c);
	conn_open_fd(&c, connect_path(path, 3000));
	json_object_put(conn_next(&c, 3000)); /* greeting */
	expect_error(conn_cmd(&c, "{\"execute\":\"query-status\"}"), "CommandNotFound",
	             "Expecting capabilities negotiation");
	expect_ok(conn_cmd(&c, "{\"execute\":\"qmp_capabilities\"}"));
	expect_status(&c, "running");
	conn_close(&c);
	fake_stop(&f);
	unlink(path);
	*strrchr(path, '/') = '\0';
	rmdir(path);
}

static void
test_fakeqemu_getfd(void **state)
{
	struct fake f;
	struct conn c;
	int sp[2];

	fake_start(&f, NULL, NULL, -1, 1);
	conn_open(&c, f.sock);
	assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp), 0);
	expect_error(conn_cmd(&c, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"t0\"}}"),
	             "GenericError", "No file descriptor supplied via SCM_RIGHTS");
	expect_ok(
	    conn_cmd_fd(&c, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"t0\"}}", sp[0]));
	assert_true(host_process_has_file(f.pid, sp[0]));
	expect_ok(conn_cmd(&c, "{\"execute\":\"netdev_add\",\"arguments\":{\"type\":\"socket\","
	                       "\"id\":\"s.net\",\"fd\":\"t0\"}}"));
	expect_error(conn_cmd(&c, "{\"execute\":\"netdev_add\",\"arguments\":{\"type\":\"socket\","
	                          "\"id\":\"s2.net\",\"fd\":\"t0\"}}"),
	             "GenericError", "File descriptor named 't0' has not been found");
	close(sp[0]);
	close(sp[1]);
	conn_close(&c);
	fake_stop(&f);
}

static void
test_fakeqemu_startup_errors(void **state)
{
	const char *const extra[] = {
	    "-device", "{\"driver\":\"virtio-net-pci\",\"id\":\"n\",\"bus\":\"nope\"}", NULL};
	struct fake f;
	char err[512] = "";
	FILE *fp;

	fake_start(&f, extra, NULL, -1, 1);
	assert_int_equal(fake_wait(&f, 3000), 0);
	assert_true(WIFEXITED(f.status));
	assert_int_equal(WEXITSTATUS(f.status), 1);
	assert_false(file_exists(f.pidfile));
	fp = fopen(f.errfile, "r");
	assert_non_null(fp);
	assert_non_null(fgets(err, sizeof(err), fp));
	fclose(fp);
	assert_non_null(strstr(err, "Bus 'nope' not found"));
	fake_stop(&f);
}

/* Rewrites one golden argv line: daemon paths into dir, disk files to an existing file. */
static char *
golden_rewrite(const char *line, const char *dir, const char *disk)
{
	const char *prefixes[] = {"/run/qvmd/", "/var/lib/qvmd/"};
	struct json_object *o;
	char *out = NULL;
	size_t i;

	if (line[0] == '{' && (o = json_tokener_parse(line)) != NULL) {
		struct json_object *fn;

		if (json_object_object_get_ex(o, "filename", &fn))
			json_object_object_add(o, "filename", json_object_new_string(disk));
		out = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
		                                                   JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(o);
		return out;
	}
	for (i = 0; i < 2; i++) {
		const char *p = strstr(line, prefixes[i]);

		if (p != NULL) {
			assert_true(asprintf(&out, "%.*s%s/%s", (int)(p - line), line, dir,
			                     p + strlen(prefixes[i])) > 0);
			return out;
		}
	}
	return strdup(line);
}

/* Every golden argv of supervisor/argv starts the fake, which then knows every device id. */
static void
test_fakeqemu_accepts_golden_argv(void **state)
{
	DIR *dir = opendir(QVMD_TEST_DATA "/argv");
	struct dirent *de;
	int count = 0;

	assert_non_null(dir);
	while ((de = readdir(dir)) != NULL) {
		char path[512], line[4096], tmp[] = "/tmp/test_fakeqemu_argv.XXXXXX", disk[600];
		char *argv[128], sock[600] = "", pidfile[600] = "", *ids[64];
		size_t argc = 0, nids = 0, i;
		FILE *fp;
		pid_t pid;
		int status, sp[2], fd;
		struct fake gf;
		struct conn c;
		struct json_object *r;
		const char *list;

		if (strlen(de->d_name) < 6 ||
		    strcmp(de->d_name + strlen(de->d_name) - 5, ".argv") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/argv/%s", QVMD_TEST_DATA, de->d_name);
		assert_non_null(mkdtemp(tmp));
		snprintf(disk, sizeof(disk), "%s/disk.img", tmp);
		fd = open(disk, O_WRONLY | O_CREAT, 0600);
		assert_true(fd >= 0);
		close(fd);
		fp = fopen(path, "r");
		assert_non_null(fp);
		argv[argc++] = strdup(FAKEQEMU_BIN);
		while (fgets(line, sizeof(line), fp) != NULL) {
			line[strcspn(line, "\n")] = '\0';
			if (argc == 1 && line[0] == '/')
				continue; /* argv[0]: the real QEMU's path */
			assert_true(argc < 126);
			argv[argc] = golden_rewrite(line, tmp, disk);
			if (argc > 1 && strcmp(argv[argc - 1], "-qmp") == 0)
				snprintf(sock, sizeof(sock), "%s", argv[argc] + 5);
			if (argc > 1 && strcmp(argv[argc - 1], "-pidfile") == 0)
				snprintf(pidfile, sizeof(pidfile), "%s", argv[argc]);
			if (argc > 1 && strcmp(argv[argc - 1], "-device") == 0) {
				struct json_object *o = json_tokener_parse(argv[argc]);
				const char *id = o != NULL ? get_str(o, "id") : NULL;

				if (id != NULL && nids < 64)
					ids[nids++] = strdup(id);
				json_object_put(o);
			}
			argc++;
		}
		fclose(fp);
		argv[argc] = NULL;
		sock[strcspn(sock, ",")] = '\0';
		assert_true(sock[0] != '\0');
		/* The run directory qvmd would have made, and the tap fds it would pass. */
		assert_true(pidfile[0] != '\0');
		/* <run>/NAME/qemu/qemu.pid: NAME's directory, then QEMU's own below it. */
		*strrchr(pidfile, '/') = '\0';
		*strrchr(pidfile, '/') = '\0';
		assert_int_equal(mkdir(pidfile, 0700), 0);
		strcat(pidfile, "/qemu");
		assert_int_equal(mkdir(pidfile, 0700), 0);
		assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM, 0, sp), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			for (fd = 100; fd < 110; fd++)
				dup2(sp[0], fd);
			execv(argv[0], argv);
			_exit(127);
		}
		memset(&gf, 0, sizeof(gf));
		gf.pid = pid;
		live_add(&gf);
		conn_open(&c, sock);
		r = conn_cmd(&c, "{\"execute\":\"qom-list\","
		                 "\"arguments\":{\"path\":\"/machine/peripheral\"}}");
		assert_non_null(r);
		list = json_object_to_json_string(r);
		for (i = 0; i < nids; i++) {
			char want[128];

			snprintf(want, sizeof(want), "\"%s\"", ids[i]);
			if (strstr(list, want) == NULL)
				fail_msg("%s: device %s missing", de->d_name, ids[i]);
			free(ids[i]);
		}
		json_object_put(r);
		expect_status(&c, "prelaunch");
		conn_send(&c, "{\"execute\":\"quit\"}", -1);
		while ((r = conn_next(&c, 3000)) != NULL) /* SHUTDOWN, reply, EOF */
			json_object_put(r);
		conn_close(&c);
		assert_int_equal(fake_wait(&gf, 3000), 0);
		status = gf.status;
		live_find(pid)->pid = 0;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail_msg("%s: fakeqemu exit status %d", de->d_name, status);
		close(sp[0]);
		close(sp[1]);
		for (i = 0; i < argc; i++)
			free(argv[i]);
		snprintf(path, sizeof(path), "rm -rf '%s'", tmp);
		assert_int_equal(system(path), 0);
		count++;
	}
	closedir(dir);
	if (count == 0)
		skip();
}

static int
teardown(void **state)
{
	size_t i;

	for (i = 0; i < MAX_LIVE; i++) {
		if (live[i].pid != 0) {
			struct fake f = live[i];

			fake_stop(&f);
		}
	}
	return 0;
}

/* ---- serve mode: many VMs in one process ---- */

#define SERVE_VMS 3

/* The socket directory of the running serve-mode test, emptied and removed by serve_teardown. */
static char serve_dir[64];

/* Starts one fakeqemu serving SERVE_VMS VMs in serve_dir, with the standard options (-S ...). */
static void
serve_start(struct fake *f, const char *const *env)
{
	char count[16];
	const char *extra[] = {"--serve-dir", serve_dir, "--count", count, NULL};

	strcpy(serve_dir, "/tmp/test_fakeqemu_serve.XXXXXX");
	assert_non_null(mkdtemp(serve_dir));
	snprintf(count, sizeof(count), "%d", SERVE_VMS);
	fake_start(f, extra, env, -1, 0);
}

static void
serve_path(char *buf, size_t size, int vm)
{
	snprintf(buf, size, "%s/%d.sock", serve_dir, vm);
}

static void
serve_dir_remove(void)
{
	char path[96];
	int i;

	if (serve_dir[0] == '\0')
		return;
	for (i = 0; i < SERVE_VMS; i++) {
		serve_path(path, sizeof(path), i);
		unlink(path);
	}
	rmdir(serve_dir);
	serve_dir[0] = '\0';
}

static int
serve_teardown(void **state)
{
	teardown(state);
	serve_dir_remove();
	return 0;
}

/* Every socket is a VM of its own: greeting, negotiation, run state; quit ends only that one. */
static void
test_fakeqemu_serve_many_vms(void **state)
{
	struct fake f;
	struct conn c[SERVE_VMS];
	char path[96], buf[32];
	int i, fd;

	serve_start(&f, NULL);
	for (i = 0; i < SERVE_VMS; i++) {
		serve_path(path, sizeof(path), i);
		fd = connect_path(path, 5000);
		assert_true(fd >= 0);
		conn_open_fd(&c[i], fd);
	}
	/* All connected at once; each negotiates on its own. */
	for (i = 0; i < SERVE_VMS; i++) {
		struct json_object *greeting = conn_next(&c[i], 3000);

		assert_non_null(greeting);
		assert_string_equal(get_str(greeting, "QMP.version.qemu.major"), "7");
		json_object_put(greeting);
	}
	expect_error(conn_cmd(&c[1], "{\"execute\":\"query-status\"}"), "CommandNotFound",
	             "qmp_capabilities");
	for (i = 0; i < SERVE_VMS; i++)
		expect_ok(conn_cmd(&c[i], "{\"execute\":\"qmp_capabilities\"}"));
	expect_ok(conn_cmd(&c[1], "{\"execute\":\"cont\"}"));
	expect_event(&c[1], "RESUME", NULL, NULL);
	expect_status(&c[0], "prelaunch");
	expect_status(&c[1], "running");
	expect_status(&c[2], "prelaunch");
	assert_int_equal(c[0].nevents + c[2].nevents, 0); /* RESUME went to VM 1 only */
	/* The pidfile is the process's. */
	fd = open(f.pidfile, O_RDONLY);
	assert_true(fd >= 0);
	memset(buf, 0, sizeof(buf));
	assert_true(read(fd, buf, sizeof(buf) - 1) > 0);
	close(fd);
	assert_int_equal(atoi(buf), f.pid);
	/* quit ends VM 0 alone: SHUTDOWN, EOF, its socket file gone; the others go on. */
	expect_ok(conn_cmd(&c[0], "{\"execute\":\"quit\"}"));
	expect_event(&c[0], "SHUTDOWN", "reason", "host-qmp-quit");
	assert_null(conn_next(&c[0], 3000));
	serve_path(path, sizeof(path), 0);
	assert_false(file_exists(path));
	assert_int_equal(fake_wait(&f, 200), -1);
	expect_status(&c[2], "prelaunch");
	/* A signal ends every VM that is left, then the process, cleanly. */
	kill(f.pid, SIGTERM);
	expect_event(&c[1], "SHUTDOWN", "reason", "host-signal");
	expect_event(&c[2], "SHUTDOWN", "reason", "host-signal");
	for (i = 1; i < SERVE_VMS; i++)
		assert_null(conn_next(&c[i], 3000));
	assert_int_equal(fake_wait(&f, 3000), 0);
	assert_true(WIFEXITED(f.status));
	assert_int_equal(WEXITSTATUS(f.status), 0);
	assert_false(file_exists(f.pidfile));
	for (i = 0; i < SERVE_VMS; i++) {
		serve_path(path, sizeof(path), i);
		assert_false(file_exists(path));
		conn_close(&c[i]);
	}
	fake_stop(&f);
	serve_dir_remove();
}

/* Like QEMU, one client per VM at a time: the next one is greeted once the first has gone. */
static void
test_fakeqemu_serve_one_client_per_vm(void **state)
{
	struct fake f;
	struct conn a, b, other;
	char path[96];

	serve_start(&f, NULL);
	serve_path(path, sizeof(path), 2);
	conn_open(&a, path);
	conn_open_fd(&b, connect_path(path, 5000));
	assert_true(b.fd >= 0);
	assert_null(conn_next(&b, 300)); /* waits in the backlog */
	serve_path(path, sizeof(path), 1);
	conn_open(&other, path); /* another VM is not held up */
	expect_status(&other, "prelaunch");
	conn_close(&a);
	json_object_put(conn_next(&b, 3000)); /* the greeting, now */
	expect_ok(conn_cmd(&b, "{\"execute\":\"qmp_capabilities\"}"));
	expect_status(&b, "prelaunch");
	conn_close(&b);
	conn_close(&other);
	fake_stop(&f);
	serve_dir_remove();
}

/* A crash on demand takes down its VM only, and leaves its socket file behind. */
static void
test_fakeqemu_serve_crash_one_vm(void **state)
{
	const char *const env[] = {"FAKEQEMU_CRASH=system_reset", NULL};
	struct fake f;
	struct conn a, b;
	char path[96];

	serve_start(&f, env);
	serve_path(path, sizeof(path), 0);
	conn_open(&a, path);
	serve_path(path, sizeof(path), 1);
	conn_open(&b, path);
	assert_null(conn_cmd(&b, "{\"execute\":\"system_reset\"}")); /* EOF, no reply */
	assert_true(file_exists(path));
	assert_int_equal(connect_path(path, 0), -1); /* nobody listens any more */
	expect_status(&a, "prelaunch");
	assert_int_equal(fake_wait(&f, 200), -1);
	conn_close(&a);
	conn_close(&b);
	fake_stop(&f);
	serve_dir_remove();
}

/* Serve mode creates the sockets itself: a -qmp option is refused at startup. */
static void
test_fakeqemu_serve_refuses_qmp(void **state)
{
	struct fake f;

	strcpy(serve_dir, "/tmp/test_fakeqemu_serve.XXXXXX");
	assert_non_null(mkdtemp(serve_dir));
	{
		const char *extra[] = {"--serve-dir", serve_dir, "--count", "2", NULL};

		fake_start(&f, extra, NULL, -1, 1);
	}
	assert_int_equal(fake_wait(&f, 3000), 0);
	assert_true(WIFEXITED(f.status));
	assert_int_equal(WEXITSTATUS(f.status), 1);
	assert_false(file_exists(f.sock));
	fake_stop(&f);
	serve_dir_remove();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_fakeqemu_negotiation, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_run_states, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_hotplug, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_no_unplug, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_powerdown, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_ignore_powerdown, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_sigterm, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_crash_on_command, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_exit_after, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_stall, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_slow, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_backup_jobs, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_startup_delay, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_inherited_socket_reconnect, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_getfd, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_startup_errors, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_accepts_golden_argv, teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_serve_many_vms, serve_teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_serve_one_client_per_vm, serve_teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_serve_crash_one_vm, serve_teardown),
	    cmocka_unit_test_teardown(test_fakeqemu_serve_refuses_qmp, serve_teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
