/*
 * The control server with the daemon's real command table (control_cmds.c): a real daemon
 * (daemon_init, daemon_reload of definitions in a temp directory) and its control socket on a real
 * event_base, talked to over the socket. Stopped VMs need no QEMU; the few cases that need a
 * running one (already-running, busy, qemu-error, timeout, the running shapes) use fakeqemu, the
 * project's stand-in, as the configured qemu.
 *
 * Checked: every error code the control layer can produce is provoked at least once (the last
 * test fails if one was not), each failure is exactly {"id","ok":false,"error":{"code","message"}}
 * and its message starts with "vm NAME: " when the request names a VM; the reply of each verb that
 * runs on a stopped VM has exactly its documented keys (absent values null, sizes in _bytes); raw
 * qmp is refused (`denied`) to a socket_group member who is not root unless qmp_passthrough =
 * group.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cfg.h"
#include "control.h"
#include "control_private.h"
#include "daemon.h"
#include "log.h"
#include "vm.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <json-c/json.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define REPLY_TURNS 3000 /* 10 ms loop turns before a missing reply fails the test (30 s) */

static const char def_web1[] = "[vm]\nname = web1\nmemory = 256M\nvcpus = 2\nmachine = q35\n"
                               "accel = tcg\nhotplug_slots = 2\nconsole = none\n\n"
                               "[disk root]\nfile = /srv/images/web1.qcow2\n\n"
                               "[net lan]\ntype = user\nmac = 52:54:00:12:34:56\n";
static const char def_db[] = "[vm]\nname = db\nmemory = 128M\nmachine = pc\naccel = tcg\n"
                             "console = none\n";
/* Started under fakeqemu. */
static const char def_run1[] = "[vm]\nname = run1\nmemory = 64M\nmachine = q35\naccel = tcg\n"
                               "hotplug_slots = 2\nconsole = none\nshutdown_timeout = 5s\n";

static struct daemon d;
static struct daemon_config conf;
static char dir[] = "/tmp/qvmd-test-ctlcmds.XXXXXX";
static int fd = -1; /* the test's client */
static bool seen[PROTO_ERR_COUNT];

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	remove(path);
	return 0;
}

static void
write_file(const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
run_for(int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	event_base_loopexit(d.base, &tv);
	event_base_dispatch(d.base);
}

static int
connect_to(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	assert_true(strlen(path) < sizeof sun.sun_path);
	memcpy(sun.sun_path, path, strlen(path) + 1);
	assert_true(s >= 0);
	assert_int_equal(connect(s, (struct sockaddr *)&sun, sizeof sun), 0);
	return s;
}

/* Writes all of buf, running the loop while the socket is full. */
static void
send_all(int s, const char *buf, size_t len)
{
	for (int i = 0; len > 0 && i < 100000; i++) {
		ssize_t n = send(s, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0) {
			buf += n;
			len -= (size_t)n;
		} else {
			assert_true(n < 0 && errno == EAGAIN);
			run_for(1);
		}
	}
	assert_int_equal(len, 0);
}

/*
 * The next line from s, parsed (the caller puts it), running the loop until it comes; NULL at end
 * of stream. Bytes after the line stay for the next call (one buffer per test: one client at a
 * time reads through here).
 */
static struct json_object *
next_line(int s)
{
	static char buf[1 << 16];
	static size_t len;
	static int owner = -1;

	if (owner != s)
		len = 0, owner = s;
	for (int turn = 0; turn < REPLY_TURNS; turn++) {
		char *nl = memchr(buf, '\n', len);
		ssize_t n;

		if (nl != NULL) {
			struct json_object *o;

			*nl = '\0';
			o = json_tokener_parse(buf);
			if (getenv("TEST_CONTROL_TRACE") != NULL)
				fprintf(stderr, "< %s\n", buf);
			assert_non_null(o);
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len);
			return o;
		}
		n = recv(s, buf + len, sizeof buf - len, MSG_DONTWAIT);
		if (n > 0) {
			len += (size_t)n;
			continue;
		}
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return NULL;
		run_for(10);
	}
	fail_msg("no reply within %d s", REPLY_TURNS / 100);
	return NULL;
}

/* Sends one request line and returns its reply. */
static struct json_object *
call(const char *req)
{
	char line[4096];

	if (getenv("TEST_CONTROL_TRACE") != NULL)
		fprintf(stderr, "> %s\n", req);
	snprintf(line, sizeof line, "%s\n", req);
	send_all(fd, line, strlen(line));
	return next_line(fd);
}

/* Asserts that o has exactly the keys listed (space-separated), in any order. */
static void
assert_keys(struct json_object *o, const char *keys)
{
	char buf[1024], *save = NULL;
	size_t n = 0;

	assert_true(json_object_is_type(o, json_type_object));
	snprintf(buf, sizeof buf, "%s", keys);
	for (char *k = strtok_r(buf, " ", &save); k != NULL; k = strtok_r(NULL, " ", &save)) {
		if (!json_object_object_get_ex(o, k, NULL))
			fail_msg("key %s missing in %s", k, json_object_to_json_string(o));
		n++;
	}
	if ((size_t)json_object_object_length(o) != n)
		fail_msg("keys %s expected, got %s", keys, json_object_to_json_string(o));
}

static struct json_object *
get(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	assert_true(json_object_object_get_ex(o, key, &v));
	return v;
}

static void
assert_type(struct json_object *o, const char *key, json_type type)
{
	struct json_object *v = get(o, key);

	if (!json_object_is_type(v, type))
		fail_msg("%s: type %s expected in %s", key, json_type_to_name(type),
		         json_object_to_json_string(o));
}

/* Checks a failure's shape (id 1 unless NULL is expected); frees reply. Returns nothing: the
 * message must start with "vm VM: " when vm is not NULL, and contain want when not NULL. */
static void
expect_error_id(struct json_object *reply, bool id_null, enum proto_err code, const char *vm,
                const char *want)
{
	struct json_object *e;
	const char *msg;

	assert_non_null(reply);
	assert_keys(reply, "id ok error");
	if (id_null)
		assert_null(get(reply, "id"));
	else
		assert_int_equal(json_object_get_int(get(reply, "id")), 1);
	assert_false(json_object_get_boolean(get(reply, "ok")));
	e = get(reply, "error");
	assert_keys(e, "code message");
	assert_string_equal(json_object_get_string(get(e, "code")), proto_err_name(code));
	msg = json_object_get_string(get(e, "message"));
	if (vm != NULL) {
		char prefix[128];

		snprintf(prefix, sizeof prefix, "vm %s: ", vm);
		if (strncmp(msg, prefix, strlen(prefix)) != 0)
			fail_msg("message '%s' does not start with '%s'", msg, prefix);
		/* ... once */
		assert_null(strstr(msg + strlen(prefix), prefix));
	}
	if (want != NULL && strstr(msg, want) == NULL)
		fail_msg("message '%s' does not say '%s'", msg, want);
	seen[code] = true;
	json_object_put(reply);
}

static void
expect_error(struct json_object *reply, enum proto_err code, const char *vm, const char *want)
{
	expect_error_id(reply, false, code, vm, want);
}

/* Checks a failure (id 1) whose message is exactly msg; frees reply. */
static void
expect_error_exact(struct json_object *reply, enum proto_err code, const char *msg)
{
	struct json_object *e;

	assert_non_null(reply);
	assert_keys(reply, "id ok error");
	assert_int_equal(json_object_get_int(get(reply, "id")), 1);
	assert_false(json_object_get_boolean(get(reply, "ok")));
	e = get(reply, "error");
	assert_keys(e, "code message");
	assert_string_equal(json_object_get_string(get(e, "code")), proto_err_name(code));
	assert_string_equal(json_object_get_string(get(e, "message")), msg);
	seen[code] = true;
	json_object_put(reply);
}

/* Checks a success's shape; returns its result (owned by reply, which the caller puts). */
static struct json_object *
expect_ok(struct json_object *reply)
{
	assert_non_null(reply);
	if (json_object_object_get_ex(reply, "error", NULL))
		fail_msg("failed: %s", json_object_to_json_string(reply));
	assert_keys(reply, "id ok result");
	assert_int_equal(json_object_get_int(get(reply, "id")), 1);
	assert_true(json_object_get_boolean(get(reply, "ok")));
	assert_type(reply, "result", json_type_object);
	return get(reply, "result");
}

static enum vm_state
state_of(const char *name)
{
	struct vm *vm = daemon_find_vm(&d, name);

	assert_non_null(vm);
	return vm_state(vm);
}

static void
write_definitions(void)
{
	write_file("vms/web1.ini", def_web1);
	write_file("vms/db.ini", def_db);
	write_file("vms/run1.ini", def_run1);
}

static int
setup(void **state)
{
	static const char *const subdirs[] = {"vms", "run", "state", "images"};
	struct cfg_errors errs;
	struct json_object *res;
	char path[256], *text, *cause = NULL;

	(void)state;
	signal(SIGPIPE, SIG_IGN);
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0711), 0); /* the unprivileged client reaches the socket */
	for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, subdirs[i]);
		assert_int_equal(mkdir(path, 0711), 0); /* QEMU uids traverse run_dir */
	}
	assert_true(
	    asprintf(&text,
	             "[qvmd]\nvm_dir = %1$s/vms\nrun_dir = %1$s/run\nstate_dir = %1$s/state\n"
	             "control_socket = %1$s/qvmd.sock\nqemu = %2$s\nqemu_img = %3$s\n"
	             "image_dirs = %1$s/images\nlog_level = error\n",
	             dir, FAKEQEMU_BIN, QVMD_TEST_QEMU_IMG) > 0);
	write_file("qvmd.conf", text);
	free(text);
	snprintf(path, sizeof path, "%s/qvmd.conf", dir);
	cfg_errors_init(&errs);
	assert_int_equal(cfg_daemon_load(path, &conf, &errs), 0);
	cfg_errors_free(&errs);
	log_set_level(CFG_LOG_ERROR);
	daemon_init(&d, event_base_new(), &conf);
	write_definitions();
	res = daemon_reload(&d);
	json_object_put(res);
	assert_int_equal(d.nvms, 3);
	/* A group the unprivileged test client can be in (see test_control_cmds_qmp_denied). */
	d.control =
	    control_new(&d, conf.control_socket, getgrnam("nogroup") ? "nogroup" : NULL, &cause);
	assert_non_null(d.control);
	fd = connect_to(conf.control_socket);
	return 0;
}

/* Brings every VM down (kill), then frees what the daemon's exit would. */
static int
teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < d.nvms; i++) {
		if (vm_is_active(d.vms[i]))
			vm_kill(d.vms[i], NULL, NULL);
	}
	for (int turn = 0; turn < REPLY_TURNS; turn++) {
		bool active = false;

		for (size_t i = 0; i < d.nvms; i++)
			active |= vm_is_active(d.vms[i]);
		if (!active)
			break;
		run_for(10);
	}
	close(fd);
	control_free(d.control);
	run_for(10);
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* Request errors before any VM is looked at, and argument errors naming the VM. */
static void
test_control_cmds_invalid(void **state)
{
	(void)state;
	expect_error(call("{\"id\":1,\"cmd\":\"frobnicate\"}"), PROTO_ERR_INVALID, NULL,
	             "unknown command 'frobnicate'");
	expect_error(call("{\"id\":1,\"cmd\":\"status\"}"), PROTO_ERR_INVALID, NULL,
	             "status: \"vm\" is required");
	expect_error(call("{\"id\":1,\"cmd\":\"powerdown\"}"), PROTO_ERR_INVALID, NULL,
	             "a vm name or args.all is required");
	expect_error_id(call("{\"id\":1.5,\"cmd\":\"list\"}"), true, PROTO_ERR_INVALID, NULL,
	                "\"id\" must be");
	/* Argument errors of a command naming a VM: the message names it. */
	expect_error(call("{\"id\":1,\"cmd\":\"status\",\"vm\":\"web1\",\"args\":{\"x\":1}}"),
	             PROTO_ERR_INVALID, "web1", "status: unknown argument args.x");
	expect_error(call("{\"id\":1,\"cmd\":\"powerdown\",\"vm\":\"web1\",\"args\":"
	                  "{\"wait\":\"yes\"}}"),
	             PROTO_ERR_INVALID, "web1", "args.wait must be true or false");
	expect_error(call("{\"id\":1,\"cmd\":\"powerdown\",\"vm\":\"web1\",\"args\":"
	                  "{\"timeout_ms\":10}}"),
	             PROTO_ERR_INVALID, "web1", "args.timeout_ms must be between");
	expect_error(call("{\"id\":1,\"cmd\":\"detach\",\"vm\":\"web1\",\"args\":{}}"),
	             PROTO_ERR_INVALID, "web1", "args.id (the device id) is required");
	expect_error(call("{\"id\":1,\"cmd\":\"detach\",\"vm\":\"web1\",\"args\":{\"id\":7}}"),
	             PROTO_ERR_INVALID, "web1", "args.id must be a string");
	expect_error(call("{\"id\":1,\"cmd\":\"attach-disk\",\"vm\":\"web1\",\"args\":"
	                  "{\"id\":\"d1\"}}"),
	             PROTO_ERR_INVALID, "web1", "attach-disk: args.file is required");
	expect_error(call("{\"id\":1,\"cmd\":\"attach-disk\",\"vm\":\"web1\",\"args\":"
	                  "{\"id\":\"d1\",\"file\":\"rel.qcow2\"}}"),
	             PROTO_ERR_INVALID, "web1", "must be an absolute path");
	expect_error(call("{\"id\":1,\"cmd\":\"attach-disk\",\"vm\":\"web1\",\"args\":"
	                  "{\"id\":\"d1\",\"file\":\"/x\",\"format\":\"vmdk\"}}"),
	             PROTO_ERR_INVALID, "web1", "format 'vmdk'");
	expect_error(call("{\"id\":1,\"cmd\":\"attach-disk\",\"vm\":\"web1\",\"args\":"
	                  "{\"id\":\"d1\",\"file\":\"/x\",\"create_size\":-1}}"),
	             PROTO_ERR_INVALID, "web1", "args.create_size must be a non-negative");
	expect_error(call("{\"id\":1,\"cmd\":\"attach-net\",\"vm\":\"web1\",\"args\":"
	                  "{\"id\":\"n1\",\"type\":\"slirp\"}}"),
	             PROTO_ERR_INVALID, "web1", "type 'slirp'");
	expect_error(call("{\"id\":1,\"cmd\":\"attach-net\",\"vm\":\"web1\",\"args\":"
	                  "{\"id\":\"n1\",\"mac\":\"01:00:00:00:00:01\"}}"),
	             PROTO_ERR_INVALID, "web1", "not a unicast MAC");
	expect_error(call("{\"id\":1,\"cmd\":\"attach-net\",\"vm\":\"web1\",\"args\":"
	                  "{\"id\":\"n1\",\"type\":\"tap\"}}"),
	             PROTO_ERR_INVALID, "web1", "ifname");
	expect_error(call("{\"id\":1,\"cmd\":\"qmp\",\"vm\":\"web1\",\"args\":{}}"),
	             PROTO_ERR_INVALID, "web1", "qmp: args.command must be a string");
	expect_error(call("{\"id\":1,\"cmd\":\"qmp\",\"vm\":\"web1\",\"args\":"
	                  "{\"command\":\"query-status\",\"arguments\":[]}}"),
	             PROTO_ERR_INVALID, "web1", "qmp: args.arguments must be an object");
	/* A persisted attach outside image_dirs is denied by the VM layer, naming the VM. */
	expect_error(call("{\"id\":1,\"cmd\":\"attach-disk\",\"vm\":\"web1\",\"args\":"
	                  "{\"id\":\"d1\",\"file\":\"/etc/passwd\",\"persist\":true}}"),
	             PROTO_ERR_DENIED, "web1", "not below an image directory");
}

static void
test_control_cmds_not_found(void **state)
{
	(void)state;
	expect_error(call("{\"id\":1,\"cmd\":\"status\",\"vm\":\"nope\"}"), PROTO_ERR_NOT_FOUND,
	             "nope", "no such vm");
	expect_error(call("{\"id\":1,\"cmd\":\"powerdown\",\"vm\":\"nope\"}"), PROTO_ERR_NOT_FOUND,
	             "nope", "no such vm");
	expect_error(call("{\"id\":1,\"cmd\":\"subscribe\",\"args\":{\"vm\":\"nope\"}}"),
	             PROTO_ERR_NOT_FOUND, "nope", "no such vm");
	expect_error(call("{\"id\":1,\"cmd\":\"detach\",\"vm\":\"web1\",\"args\":"
	                  "{\"id\":\"nic9\",\"persist\":true}}"),
	             PROTO_ERR_NOT_FOUND, "web1", "nic9");
}

static void
test_control_cmds_not_running(void **state)
{
	static const char *const cmds[] = {"pause", "resume", "reset", "kill"};
	char req[256];

	(void)state;
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
		snprintf(req, sizeof req, "{\"id\":1,\"cmd\":\"%s\",\"vm\":\"db\"}", cmds[i]);
		expect_error(call(req), PROTO_ERR_NOT_RUNNING, "db", NULL);
	}
	expect_error(call("{\"id\":1,\"cmd\":\"powerdown\",\"vm\":\"db\"}"), PROTO_ERR_NOT_RUNNING,
	             "db", NULL);
	expect_error(call("{\"id\":1,\"cmd\":\"qmp\",\"vm\":\"db\",\"args\":"
	                  "{\"command\":\"query-status\"}}"),
	             PROTO_ERR_NOT_RUNNING, "db", NULL);
	/* A live detach (no persist) needs a QEMU. */
	expect_error(
	    call("{\"id\":1,\"cmd\":\"detach\",\"vm\":\"web1\",\"args\":{\"id\":\"lan\"}}"),
	    PROTO_ERR_NOT_RUNNING, "web1", NULL);
}

/*
 * A device object as devices and attach show it (full), or as status lists it: status leaves out
 * pci_addr, live and persistent today (vm_query.c), although the README calls them the same.
 */
static void
check_device(struct json_object *dev, bool full)
{
	const char *kind = json_object_get_string(get(dev, "kind"));
	char keys[512];

	snprintf(keys, sizeof keys, "%s bus pending_attach pending_removal%s",
	         strcmp(kind, "disk") == 0 ? "id kind file format readonly cache"
	                                   : "id kind type mac bridge ifname restrict",
	         full ? " pci_addr live persistent" : "");
	assert_keys(dev, keys);
	assert_type(dev, "id", json_type_string);
	assert_type(dev, "pending_attach", json_type_boolean);
	assert_type(dev, "pending_removal", json_type_boolean);
	/* A stopped VM's device sits on no bus and has no address: null, not "". */
	assert_null(get(dev, "bus"));
	if (full) {
		assert_type(dev, "live", json_type_boolean);
		assert_type(dev, "persistent", json_type_boolean);
		assert_false(json_object_get_boolean(get(dev, "live")));
		assert_null(get(dev, "pci_addr"));
	}
	if (strcmp(kind, "net") == 0) {
		assert_type(dev, "mac", json_type_string);
		assert_type(dev, "restrict", json_type_boolean);
		assert_null(get(dev, "bridge"));
		assert_null(get(dev, "ifname"));
	} else {
		assert_type(dev, "file", json_type_string);
		assert_type(dev, "readonly", json_type_boolean);
	}
}

#define LIST_ROW_KEYS                                                                              \
	"name state pid vcpus memory_bytes uptime_ms qemu_status restarts definition_changed "     \
	"definition_removed"

static void
check_stopped_row(struct json_object *row)
{
	struct json_object *v;

	assert_type(row, "name", json_type_string);
	assert_string_equal(json_object_get_string(get(row, "state")), "stopped");
	assert_null(get(row, "pid"));
	assert_null(get(row, "uptime_ms"));
	/* No QEMU: null by the protocol's rule. */
	v = get(row, "qemu_status");
	assert_true(json_object_object_get_ex(row, "qemu_status", NULL));
	assert_null(v);
	assert_type(row, "vcpus", json_type_int);
	assert_type(row, "memory_bytes", json_type_int);
	assert_type(row, "restarts", json_type_int);
	assert_type(row, "definition_changed", json_type_boolean);
	assert_type(row, "definition_removed", json_type_boolean);
}

/* The replies of the verbs that run without a QEMU, key by key. */
static void
test_control_cmds_shapes_stopped(void **state)
{
	struct json_object *reply, *res, *arr, *row, *v;

	(void)state;
	reply = call("{\"id\":1,\"cmd\":\"version\"}");
	res = expect_ok(reply);
	assert_keys(res, "version");
	assert_string_equal(json_object_get_string(get(res, "version")), QVMD_VERSION);
	json_object_put(reply);

	reply = call("{\"id\":1,\"cmd\":\"list\"}");
	res = expect_ok(reply);
	assert_keys(res, "vms");
	arr = get(res, "vms");
	assert_int_equal(json_object_array_length(arr), 3);
	for (size_t i = 0; i < 3; i++) {
		row = json_object_array_get_idx(arr, i);
		assert_keys(row, LIST_ROW_KEYS);
		check_stopped_row(row);
	}
	row = json_object_array_get_idx(arr, 1); /* sorted: db run1 web1 */
	assert_string_equal(json_object_get_string(get(row, "name")), "run1");
	assert_int_equal(json_object_get_int64(get(row, "memory_bytes")), 64 << 20);
	json_object_put(reply);

	reply = call("{\"id\":1,\"cmd\":\"status\",\"vm\":\"web1\"}");
	res = expect_ok(reply);
	assert_keys(
	    res, LIST_ROW_KEYS
	    " machine accel job disks nets cdroms display vnc_socket definition_errors last_exit");
	check_stopped_row(res);
	assert_string_equal(json_object_get_string(get(res, "machine")), "q35");
	assert_string_equal(json_object_get_string(get(res, "accel")), "tcg");
	assert_int_equal(json_object_get_int64(get(res, "memory_bytes")), 256 << 20);
	assert_int_equal(json_object_get_int(get(res, "vcpus")), 2);
	assert_null(get(res, "job"));
	assert_null(get(res, "last_exit")); /* never ran */
	v = get(res, "definition_errors");
	assert_true(v == NULL || json_object_array_length(v) == 0);
	assert_int_equal(json_object_array_length(get(res, "disks")), 1);
	assert_int_equal(json_object_array_length(get(res, "nets")), 1);
	check_device(json_object_array_get_idx(get(res, "disks"), 0), false);
	check_device(json_object_array_get_idx(get(res, "nets"), 0), false);
	json_object_put(reply);

	reply = call("{\"id\":1,\"cmd\":\"devices\",\"vm\":\"web1\"}");
	res = expect_ok(reply);
	assert_keys(res, "devices");
	arr = get(res, "devices");
	assert_int_equal(json_object_array_length(arr), 2);
	for (size_t i = 0; i < 2; i++) {
		check_device(json_object_array_get_idx(arr, i), true);
		assert_true(
		    json_object_get_boolean(get(json_object_array_get_idx(arr, i), "persistent")));
	}
	json_object_put(reply);

	/* --persist on a stopped VM: the device object, live false. */
	reply = call("{\"id\":1,\"cmd\":\"attach-net\",\"vm\":\"web1\",\"args\":"
	             "{\"id\":\"lan2\",\"persist\":true}}");
	res = expect_ok(reply);
	check_device(res, true);
	assert_string_equal(json_object_get_string(get(res, "id")), "lan2");
	assert_string_equal(json_object_get_string(get(res, "type")), "user");
	assert_true(json_object_get_boolean(get(res, "persistent")));
	json_object_put(reply);

	write_file("images/data.raw", "");
	{
		char req[512];

		snprintf(req, sizeof req,
		         "{\"id\":1,\"cmd\":\"attach-disk\",\"vm\":\"web1\",\"args\":"
		         "{\"id\":\"data\",\"file\":\"%s/images/data.raw\",\"format\":\"raw\","
		         "\"persist\":true}}",
		         dir);
		reply = call(req);
	}
	res = expect_ok(reply);
	check_device(res, true);
	assert_string_equal(json_object_get_string(get(res, "format")), "raw");
	assert_true(json_object_get_boolean(get(res, "persistent")));
	json_object_put(reply);

	reply = call("{\"id\":1,\"cmd\":\"detach\",\"vm\":\"web1\",\"args\":"
	             "{\"id\":\"lan2\",\"persist\":true}}");
	res = expect_ok(reply);
	assert_keys(res, "id was_live live persistent");
	assert_string_equal(json_object_get_string(get(res, "id")), "lan2");
	assert_false(json_object_get_boolean(get(res, "was_live")));
	assert_false(json_object_get_boolean(get(res, "live")));
	assert_false(json_object_get_boolean(get(res, "persistent")));
	json_object_put(reply);
	reply = call("{\"id\":1,\"cmd\":\"detach\",\"vm\":\"web1\",\"args\":"
	             "{\"id\":\"data\",\"persist\":true}}");
	expect_ok(reply);
	json_object_put(reply);

	/* The definition is what it was (the persisted edits undone): reload sees no change. */
	reply = call("{\"id\":1,\"cmd\":\"reload\"}");
	res = expect_ok(reply);
	assert_keys(res, "added removed changed errors");
	for (size_t i = 0; i < 4; i++) {
		static const char *const k[] = {"added", "removed", "changed", "errors"};

		assert_type(res, k[i], json_type_array);
	}
	json_object_put(reply);

	reply = call("{\"id\":1,\"cmd\":\"powerdown\",\"args\":{\"all\":true}}");
	res = expect_ok(reply);
	assert_keys(res, "results");
	assert_int_equal(json_object_array_length(get(res, "results")), 0); /* nothing runs */
	json_object_put(reply);
}

/* A subscription is answered {"subscribed":true}; the client then gets event lines. */
static void
test_control_cmds_subscribe(void **state)
{
	int s = connect_to(conf.control_socket), saved = fd;
	struct json_object *reply, *res;

	(void)state;
	fd = s;
	reply = call("{\"id\":1,\"cmd\":\"subscribe\",\"vm\":\"db\"}");
	res = expect_ok(reply);
	assert_keys(res, "subscribed");
	assert_true(json_object_get_boolean(get(res, "subscribed")));
	json_object_put(reply);
	reply =
	    call("{\"id\":1,\"cmd\":\"subscribe\",\"vm\":\"db\",\"args\":{\"events\":[\"job\"]}}");
	expect_ok(reply);
	json_object_put(reply);
	/* events: an array of 1 to 16 kinds, each a string of 1 to 32 characters */
	expect_error(call("{\"id\":1,\"cmd\":\"subscribe\",\"args\":{\"events\":\"job\"}}"),
	             PROTO_ERR_INVALID, NULL,
	             "args.events must be an array of 1 to 16 event kinds");
	expect_error(call("{\"id\":1,\"cmd\":\"subscribe\",\"args\":{\"events\":[]}}"),
	             PROTO_ERR_INVALID, NULL, "args.events must be an array");
	expect_error(call("{\"id\":1,\"cmd\":\"subscribe\",\"args\":{\"events\":"
	                  "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\","
	                  "\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]}}"),
	             PROTO_ERR_INVALID, NULL, "args.events must be an array");
	expect_error(call("{\"id\":1,\"cmd\":\"subscribe\",\"args\":{\"events\":[\"job\",7]}}"),
	             PROTO_ERR_INVALID, NULL, "args.events[1] must be an event kind");
	expect_error(call("{\"id\":1,\"cmd\":\"subscribe\",\"args\":{\"events\":[\"\"]}}"),
	             PROTO_ERR_INVALID, NULL, "args.events[0] must be an event kind");
	fd = saved;
	close(s);
}

/* create: "vm NAME: " (or "create: " without a name) then the argument at fault. */
#define CREATE(name, args) "{\"id\":1,\"cmd\":\"create\",\"vm\":\"" name "\",\"args\":" args "}"

/*
 * create's argument checks, each with its exact reply: the request's keys, the keys inside
 * disks[] and nets[], the types, the name, the variant. Nothing is written for any of them.
 */
static void
test_control_cmds_create_args(void **state)
{
	char path[256];
	struct stat st;

	(void)state;
	expect_error_exact(
	    call("{\"id\":1,\"cmd\":\"create\",\"args\":{\"memory_bytes\":67108864}}"),
	    PROTO_ERR_INVALID, "create: \"vm\" (the new name) is required");
	expect_error_exact(call(CREATE("n1", "{}")), PROTO_ERR_INVALID,
	                   "vm n1: create: args.memory_bytes is required");
	expect_error_exact(call("{\"id\":1,\"cmd\":\"create\",\"vm\":\"n1\"}"), PROTO_ERR_INVALID,
	                   "vm n1: create: args.memory_bytes is required");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":\"64M\"}")), PROTO_ERR_INVALID,
	                   "vm n1: args.memory_bytes must be a non-negative integer");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":-1}")), PROTO_ERR_INVALID,
	                   "vm n1: args.memory_bytes must be a non-negative integer");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"vcpus\":1025}")),
	                   PROTO_ERR_INVALID, "vm n1: create: args.vcpus is out of range");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"start\":1}")),
	                   PROTO_ERR_INVALID, "vm n1: args.start must be true or false");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"cdrom\":7}")),
	                   PROTO_ERR_INVALID, "vm n1: args.cdrom must be a string");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"size\":1}")),
	                   PROTO_ERR_INVALID, "vm n1: create: unknown argument args.size");

	/* disks[] and nets[]: arrays of objects with known keys only. */
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":{}}")),
	                   PROTO_ERR_INVALID,
	                   "vm n1: create: args.disks must be an array of at most 28");
	expect_error_exact(
	    call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":[{},{},{},{},{},{},{},{},{},{},"
	                      "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}]}")),
	    PROTO_ERR_INVALID, "vm n1: create: args.disks must be an array of at most 28");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":[8388608]}")),
	                   PROTO_ERR_INVALID, "vm n1: create: args.disks[0] must be an object");
	expect_error_exact(
	    call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":[{\"size\":8388608}]}")),
	    PROTO_ERR_INVALID, "vm n1: create: unknown argument args.disks[0].size");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":"
	                                     "[{\"size_bytes\":8388608},{\"file\":\"/x\"}]}")),
	                   PROTO_ERR_INVALID, "vm n1: create: unknown argument args.disks[1].file");
	expect_error_exact(
	    call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":[{\"size_bytes\":\"8M\"}]}")),
	    PROTO_ERR_INVALID, "vm n1: args.disks[0].size_bytes must be a non-negative integer");
	expect_error_exact(
	    call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":[{\"path\":1}]}")),
	    PROTO_ERR_INVALID, "vm n1: args.disks[0].path must be a string");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"nets\":\"user\"}")),
	                   PROTO_ERR_INVALID,
	                   "vm n1: create: args.nets must be an array of at most 28");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"nets\":[\"user\"]}")),
	                   PROTO_ERR_INVALID, "vm n1: create: args.nets[0] must be an object");
	expect_error_exact(
	    call(CREATE("n1", "{\"memory_bytes\":67108864,\"nets\":[{\"type\":\"user\",\"mac\":"
	                      "\"52:54:00:00:00:01\"}]}")),
	    PROTO_ERR_INVALID, "vm n1: create: unknown argument args.nets[0].mac");
	expect_error_exact(
	    call(CREATE("n1", "{\"memory_bytes\":67108864,\"nets\":[{\"restrict\":\"yes\"}]}")),
	    PROTO_ERR_INVALID, "vm n1: args.nets[0].restrict must be true or false");

	/* The daemon's checks: the name, the variant, the values. */
	expect_error_exact(
	    call(CREATE("../x", "{\"memory_bytes\":67108864}")), PROTO_ERR_INVALID,
	    "vm ../x: create: '../x' is not a valid name (a letter or digit, then up "
	    "to 62 letters, digits, '_', '.' or '-')");
	expect_error_exact(call(CREATE("qvmd.define", "{\"memory_bytes\":67108864}")),
	                   PROTO_ERR_INVALID,
	                   "vm qvmd.define: create: 'qvmd.define' is reserved (names starting with "
	                   "'qvmd.' are qvmd's own files in run_dir)");
	expect_error_exact(call(CREATE("web1", "{\"memory_bytes\":67108864}")), PROTO_ERR_INVALID,
	                   "vm web1: already defined");
	expect_error_exact(
	    call(CREATE("n1", "{\"memory_bytes\":67108864,\"os_variant\":\"beos\"}")),
	    PROTO_ERR_INVALID,
	    "vm n1: unknown --os-variant 'beos' (known: linux, windows, generic)");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"machine\":\"isapc\"}")),
	                   PROTO_ERR_INVALID, "vm n1: machine 'isapc' (use q35 or pc)");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"accel\":\"hvf\"}")),
	                   PROTO_ERR_INVALID, "vm n1: accel 'hvf' (use kvm or tcg)");
	expect_error_exact(
	    call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":[{\"format\":\"raw\"}]}")),
	    PROTO_ERR_INVALID, "vm n1: disk disk0: a size is required for a new image");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":"
	                                     "[{\"size_bytes\":8388608,\"format\":\"vmdk\"}]}")),
	                   PROTO_ERR_INVALID,
	                   "vm n1: disk disk0: format 'vmdk' (use qcow2 or raw)");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":"
	                                     "[{\"path\":\"rel.qcow2\"}]}")),
	                   PROTO_ERR_INVALID,
	                   "vm n1: disk disk0: 'rel.qcow2' is not an absolute path");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"disks\":"
	                                     "[{\"size_bytes\":8388608,\"id\":\"a\"},"
	                                     "{\"size_bytes\":8388608,\"id\":\"a\"}]}")),
	                   PROTO_ERR_INVALID, "vm n1: disk a: id given twice");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"nets\":"
	                                     "[{\"type\":\"slirp\"}]}")),
	                   PROTO_ERR_INVALID,
	                   "vm n1: net net0: type 'slirp' (use user, tap or bridge)");
	expect_error_exact(call(CREATE("n1", "{\"memory_bytes\":67108864,\"cdrom\":\"x.iso\"}")),
	                   PROTO_ERR_INVALID, "vm n1: cdrom: 'x.iso' is not an absolute path");

	/* None of them left a definition, an image or a VM. */
	snprintf(path, sizeof path, "%s/vms/n1.ini", dir);
	assert_int_equal(stat(path, &st), -1);
	snprintf(path, sizeof path, "%s/images/n1-disk0.qcow2", dir);
	assert_int_equal(stat(path, &st), -1);
	assert_null(daemon_find_vm(&d, "n1"));
	assert_int_equal(d.nvms, 3);
}

/* undefine's checks, then a create and an undefine that succeed, their replies key by key. */
static void
test_control_cmds_create_undefine(void **state)
{
	struct json_object *reply, *res;
	char path[256], req[512];
	struct stat st;

	(void)state;
	expect_error_exact(call("{\"id\":1,\"cmd\":\"undefine\"}"), PROTO_ERR_INVALID,
	                   "undefine: \"vm\" is required");
	expect_error_exact(call("{\"id\":1,\"cmd\":\"undefine\",\"vm\":\"nope\"}"),
	                   PROTO_ERR_NOT_FOUND, "vm nope: no such vm");
	expect_error_exact(call("{\"id\":1,\"cmd\":\"undefine\",\"vm\":\"db\",\"args\":"
	                        "{\"remove_disks\":\"yes\"}}"),
	                   PROTO_ERR_INVALID, "vm db: args.remove_disks must be true or false");
	expect_error_exact(call("{\"id\":1,\"cmd\":\"undefine\",\"vm\":\"db\",\"args\":"
	                        "{\"force\":true}}"),
	                   PROTO_ERR_INVALID, "vm db: undefine: unknown argument args.force");
	assert_non_null(daemon_find_vm(&d, "db"));

	reply = call(
	    CREATE("n2", "{\"memory_bytes\":67108864,\"accel\":\"tcg\","
	                 "\"disks\":[{\"size_bytes\":8388608}],\"nets\":[{\"restrict\":true}]}"));
	res = expect_ok(reply);
	assert_keys(res, "name path definition images_created started");
	assert_string_equal(json_object_get_string(get(res, "name")), "n2");
	snprintf(path, sizeof path, "%s/vms/n2.ini", dir);
	assert_string_equal(json_object_get_string(get(res, "path")), path);
	assert_type(res, "definition", json_type_string);
	assert_false(json_object_get_boolean(get(res, "started")));
	assert_int_equal(json_object_array_length(get(res, "images_created")), 1);
	snprintf(path, sizeof path, "%s/images/n2-disk0.qcow2", dir);
	assert_string_equal(
	    json_object_get_string(json_object_array_get_idx(get(res, "images_created"), 0)), path);
	assert_int_equal(stat(path, &st), 0);
	json_object_put(reply);
	assert_int_equal(state_of("n2"), VM_STOPPED);
	expect_error_exact(call(CREATE("n2", "{\"memory_bytes\":67108864}")), PROTO_ERR_INVALID,
	                   "vm n2: already defined");

	snprintf(req, sizeof req,
	         "{\"id\":1,\"cmd\":\"undefine\",\"vm\":\"n2\",\"args\":{\"remove_disks\":true}}");
	reply = call(req);
	res = expect_ok(reply);
	assert_keys(res, "name removed_file removed_images kept_images backups_kept");
	assert_int_equal(json_object_array_length(get(res, "removed_images")), 1);
	assert_int_equal(json_object_array_length(get(res, "kept_images")), 0);
	assert_null(get(res, "backups_kept"));
	json_object_put(reply);
	assert_int_equal(stat(path, &st), -1);
	snprintf(path, sizeof path, "%s/vms/n2.ini", dir);
	assert_int_equal(stat(path, &st), -1);
	assert_null(daemon_find_vm(&d, "n2"));
	run_for(10); /* the VM is freed on the next loop turn */
}

/* Raw qmp: the check on its own, then through the socket as a socket_group member. */
static void
test_control_cmds_qmp_denied(void **state)
{
	struct daemon_config c = {0};
	struct passwd *pw = getpwnam("nobody");
	struct group *gr = getgrnam("nogroup");
	char reply[4096] = "";
	int pfd[2], status;
	ssize_t n;
	pid_t pid;

	(void)state;
	c.qmp_passthrough = CFG_QMP_PASSTHROUGH_ROOT;
	assert_true(control_may_passthrough(&c, 0));
	assert_true(control_may_passthrough(&c, getuid()));
	if (getuid() != 12345)
		assert_false(control_may_passthrough(&c, 12345));
	c.qmp_passthrough = CFG_QMP_PASSTHROUGH_GROUP;
	assert_true(control_may_passthrough(&c, 12345));

	if (getuid() != 0 || pw == NULL || gr == NULL)
		skip(); /* the rest changes uid */
	/* A child as nobody:nogroup (socket_group) asks for raw qmp on run1: refused before
	 * anything reaches the VM (stopped: not-running would come otherwise). */
	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static const char req[] = "{\"id\":1,\"cmd\":\"qmp\",\"vm\":\"run1\",\"args\":"
		                          "{\"command\":\"human-monitor-command\",\"arguments\":"
		                          "{\"command-line\":\"info version\"}}}\n";
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		char buf[4096];
		size_t len = 0;
		int s;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (setgroups(0, NULL) < 0 || setgid(gr->gr_gid) < 0 || setuid(pw->pw_uid) < 0)
			_exit(2);
		s = socket(AF_UNIX, SOCK_STREAM, 0);
		snprintf(sun.sun_path, sizeof sun.sun_path, "%s", conf.control_socket);
		if (connect(s, (struct sockaddr *)&sun, sizeof sun) < 0 ||
		    write(s, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
			_exit(3);
		while (len < sizeof buf - 1 && memchr(buf, '\n', len) == NULL) {
			ssize_t k = read(s, buf + len, sizeof buf - 1 - len);

			if (k <= 0)
				break;
			len += (size_t)k;
		}
		if (write(pfd[1], buf, len) < 0)
			_exit(4);
		_exit(0);
	}
	close(pfd[1]);
	/* The directories on the way to the socket must let nobody through. */
	for (int turn = 0; turn < REPLY_TURNS; turn++) {
		struct pollfd p = {pfd[0], POLLIN, 0};

		run_for(10);
		if (poll(&p, 1, 0) == 1)
			break;
	}
	n = read(pfd[0], reply, sizeof reply - 1);
	close(pfd[0]);
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_true(n > 0);
	reply[n] = '\0';
	*strchr(reply, '\n') = '\0';
	expect_error(json_tokener_parse(reply), PROTO_ERR_DENIED, "run1", "qmp_passthrough");
	assert_int_equal(state_of("run1"), VM_STOPPED);
}

/* The codes that need a QEMU: fakeqemu plays it. */
static void
test_control_cmds_running(void **state)
{
	struct json_object *reply, *res, *row;
	char two[512];

	(void)state;
	/* QEMU exits during start: failed. */
	setenv("FAKEQEMU_CRASH", "cont", 1);
	expect_error(call("{\"id\":1,\"cmd\":\"start\",\"vm\":\"run1\"}"), PROTO_ERR_FAILED, "run1",
	             NULL);
	unsetenv("FAKEQEMU_CRASH");
	assert_int_not_equal(state_of("run1"), VM_RUNNING);

	/* Its unplugs never complete (a guest that does not release the device). */
	setenv("FAKEQEMU_NO_UNPLUG", "1", 1);
	reply = call("{\"id\":1,\"cmd\":\"start\",\"vm\":\"run1\"}");
	unsetenv("FAKEQEMU_NO_UNPLUG");
	expect_ok(reply);
	json_object_put(reply);
	assert_int_equal(state_of("run1"), VM_RUNNING);

	expect_error(call("{\"id\":1,\"cmd\":\"start\",\"vm\":\"run1\"}"),
	             PROTO_ERR_ALREADY_RUNNING, "run1", NULL);
	expect_error(call("{\"id\":1,\"cmd\":\"qmp\",\"vm\":\"run1\",\"args\":"
	                  "{\"command\":\"no-such-command\"}}"),
	             PROTO_ERR_QEMU, "run1", NULL);

	/* root may: {"return": V}. */
	reply = call("{\"id\":1,\"cmd\":\"qmp\",\"vm\":\"run1\",\"args\":"
	             "{\"command\":\"query-status\"}}");
	res = expect_ok(reply);
	assert_keys(res, "return");
	assert_string_equal(json_object_get_string(get(get(res, "return"), "status")), "running");
	json_object_put(reply);

	reply = call("{\"id\":1,\"cmd\":\"list\"}");
	res = expect_ok(reply);
	row = json_object_array_get_idx(get(res, "vms"), 1);
	assert_keys(row, LIST_ROW_KEYS);
	assert_string_equal(json_object_get_string(get(row, "state")), "running");
	assert_type(row, "pid", json_type_int);
	assert_type(row, "uptime_ms", json_type_int);
	assert_type(row, "qemu_status", json_type_string);
	json_object_put(reply);

	/* A live attach: the device object, live. */
	reply = call("{\"id\":1,\"cmd\":\"attach-net\",\"vm\":\"run1\",\"args\":{\"id\":\"n1\"}}");
	res = expect_ok(reply);
	assert_true(json_object_get_boolean(get(res, "live")));
	assert_false(json_object_get_boolean(get(res, "persistent")));
	assert_type(res, "bus", json_type_string);
	json_object_put(reply);

	/* The guest never releases it: timeout (1 s, the shortest allowed). */
	expect_error(call("{\"id\":1,\"cmd\":\"detach\",\"vm\":\"run1\",\"args\":"
	                  "{\"id\":\"n1\",\"timeout_ms\":1000}}"),
	             PROTO_ERR_TIMEOUT, "run1", NULL);

	/* Two requests in one write: the second finds the first's job in progress. */
	snprintf(two, sizeof two, "%s\n%s\n", "{\"id\":1,\"cmd\":\"powerdown\",\"vm\":\"run1\"}",
	         "{\"id\":1,\"cmd\":\"reset\",\"vm\":\"run1\"}");
	send_all(fd, two, strlen(two));
	expect_error(next_line(fd), PROTO_ERR_BUSY, "run1", "busy");
	reply = next_line(fd);
	expect_ok(reply);
	json_object_put(reply);
	assert_int_equal(state_of("run1"), VM_STOPPED);
}

/* The connection-level codes, through the real table's socket. */
static void
test_control_cmds_connection_codes(void **state)
{
	size_t len = CONTROL_MAX_REQUEST + 4096;
	char *big = malloc(len), *data = malloc(8192), *cause = NULL, path[256];
	struct json_object *ev = json_object_new_object(), *reply;
	struct control *idle_ctl;
	int s = connect_to(conf.control_socket), saved = fd;

	(void)state;
	/* too-large */
	memset(big, 'x', len);
	send_all(s, big, len);
	expect_error_id(next_line(s), true, PROTO_ERR_TOO_LARGE, NULL, "larger than 1 MiB");
	assert_null(next_line(s));
	close(s);
	free(big);

	/* too-slow: a subscriber that does not read */
	s = connect_to(conf.control_socket);
	fd = s;
	reply = call("{\"id\":1,\"cmd\":\"subscribe\"}");
	expect_ok(reply);
	json_object_put(reply);
	memset(data, 'e', 8191);
	data[8191] = '\0';
	json_object_object_add(ev, "data", json_object_new_string(data));
	for (int i = 0; i < 1000; i++)
		control_publish(d.control, "db", ev);
	json_object_put(ev);
	free(data);
	for (;;) {
		struct json_object *o = next_line(s);

		assert_non_null(o);
		if (json_object_object_get_ex(o, "event", NULL) ||
		    json_object_object_get_ex(o, "data", NULL)) {
			json_object_put(o);
			continue;
		}
		expect_error_id(o, true, PROTO_ERR_TOO_SLOW, NULL, "does not read");
		break;
	}
	close(s);
	fd = saved;

	/* idle: a second control socket on the same daemon, with a 1 s idle timeout */
	snprintf(path, sizeof path, "%s/idle.sock", dir);
	setenv("QVMD_TEST_IDLE_TIMEOUT", "1", 1);
	idle_ctl = control_new(&d, path, NULL, &cause);
	unsetenv("QVMD_TEST_IDLE_TIMEOUT");
	assert_non_null(idle_ctl);
	s = connect_to(path);
	expect_error_id(next_line(s), true, PROTO_ERR_IDLE, NULL, "no request for too long");
	close(s);
	control_free(idle_ctl);
}

/* Every code the control layer can produce was met above (unreachable is qvmctl's own). */
static void
test_control_cmds_every_code_provoked(void **state)
{
	(void)state;
	for (int i = PROTO_OK + 1; i < PROTO_ERR_COUNT; i++) {
		if (i == PROTO_ERR_UNREACHABLE)
			continue;
		if (!seen[i])
			fail_msg("error code %s was never provoked", proto_err_name(i));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_control_cmds_invalid),
	    cmocka_unit_test(test_control_cmds_not_found),
	    cmocka_unit_test(test_control_cmds_not_running),
	    cmocka_unit_test(test_control_cmds_shapes_stopped),
	    cmocka_unit_test(test_control_cmds_subscribe),
	    cmocka_unit_test(test_control_cmds_create_args),
	    cmocka_unit_test(test_control_cmds_create_undefine),
	    cmocka_unit_test(test_control_cmds_qmp_denied),
	    cmocka_unit_test(test_control_cmds_running),
	    cmocka_unit_test(test_control_cmds_connection_codes),
	    cmocka_unit_test(test_control_cmds_every_code_provoked),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
