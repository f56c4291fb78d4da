/*
 * test_vm.c: the VM state machine (supervisor/vm*.c) without QEMU. A VM is adopted the way a
 * restarted qvmd finds its QEMU: the run directory names a process (a shell waiting on a pipe,
 * with QEMU's -pidfile and -name on its command line) and a QMP socket the test listens on; the
 * test accepts the VM's connection and hands it to the scripted fake QMP peer
 * (tests/util/fake_qmp.h) on a real event_base. Ending that process (and removing its pidfile
 * for a clean exit) plays QEMU exiting.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <json-c/json.h>

#include "cfg.h"
#include "fake_qmp.h"
#include "log.h"
#include "proc.h"
#include "vm.h"
#include "vm_apply.h"
#include "protocol.h"
#include "vm_job.h"

extern char **environ;

#define DEADLINE_S 30 /* generous: nothing here waits on more than a 1 s timer */
#define MAX_DONES  16

#define SHUTDOWN_EVENT                                                                             \
	"{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": \"guest-shutdown\"}, "  \
	"\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 0}}\r\n"
#define STATUS_RUNNING "{\"return\": {\"status\": \"running\", \"running\": true}}"
#define RETURN_EMPTY   "{\"return\": {}}"
/* add-fd: QEMU put the descriptor in fdset 3. */
#define RETURN_FDSET "{\"return\": {\"fdset-id\": 3, \"fd\": 30}}"

/* What one requester was told (the first answer is kept; calls counts them all). */
struct done {
	int calls;
	int seq; /* order of the last answer among all answers of the test */
	char *code;
	char *message;
	struct json_object *result;
};

struct fx {
	char dir[64];
	struct daemon_config conf;
	struct event_base *base;
	struct vm_env env;
	struct vm *vm;
	struct fake_qmp *fq;
	int lfd;         /* the "QEMU's" listening QMP socket */
	pid_t child;     /* the "QEMU" process */
	int child_in;    /* its stdin: it lives while this is open */
	bool exit_clean; /* how the scripted exit ends it */
	bool may_restart;
	int may_restart_calls;
	bool watched; /* whether a client follows the VM's events (env.watched) */
	int gone_calls;
	struct json_object *events; /* everything published, in order */
	struct done dones[MAX_DONES];
	size_t ndones;
	int seq;
	/* the test job kinds */
	int bg_cancels;
	int job_frees;
	int probe_replies;
	bool expired;
	char *image; /* test_disk's file */
};

/* ---- files ---- */

static char *
fx_path(const struct fx *fx, const char *rel)
{
	return xasprintf("%s/%s", fx->dir, rel);
}

static void
write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static void
write_text(const char *path, const char *text)
{
	write_file(path, text, strlen(text));
}

static char *
read_text(const char *path)
{
	char *cause = NULL, *text = cfg_read_file(path, 1 << 20, NULL, &cause);

	if (text == NULL)
		fail_msg("%s", cause);
	return text;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

/* ---- the VM's owner ---- */

static void
env_publish(void *arg, const char *vm, struct json_object *ev)
{
	struct fx *fx = arg;

	assert_string_equal(vm, "t1");
	json_object_array_add(fx->events, ev);
}

static void
env_gone(void *arg, struct vm *vm)
{
	struct fx *fx = arg;

	fx->gone_calls++;
}

static bool
env_watched(void *arg, const char *vm)
{
	struct fx *fx = arg;

	return fx->watched;
}

static bool
env_may_restart(void *arg)
{
	struct fx *fx = arg;

	fx->may_restart_calls++;
	return fx->may_restart;
}

/* The states the VM published, in order, space-separated (static buffer). */
static const char *
fx_states(const struct fx *fx)
{
	static char buf[512];
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < json_object_array_length(fx->events); i++) {
		struct json_object *ev = json_object_array_get_idx(fx->events, i), *v;

		if (!json_object_object_get_ex(ev, "event", &v) ||
		    strcmp(json_object_get_string(v), "state") != 0)
			continue;
		json_object_object_get_ex(ev, "state", &v);
		len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", len ? " " : "",
		                        json_object_get_string(v));
		assert_true(len < sizeof buf);
	}
	return buf;
}

/* ---- answers ---- */

static struct done *
fx_done(struct fx *fx)
{
	assert_true(fx->ndones < MAX_DONES);
	return &fx->dones[fx->ndones++];
}

/* The test's seq counter lives in the fixture; done_cb reaches it through this. */
static struct fx *current_fx;

static void
done_cb(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	struct done *d = arg;

	d->calls++;
	d->seq = ++current_fx->seq;
	if (d->calls > 1) {
		json_object_put(result);
		return;
	}
	assert_true(code != PROTO_OK || result != NULL);
	/* Kept as the wire name: the assertions read like the replies clients get. */
	d->code = code != PROTO_OK ? strdup(proto_err_name(code)) : NULL;
	d->message = message ? strdup(message) : NULL;
	d->result = result;
}

static void
done_clear(struct done *d)
{
	free(d->code);
	free(d->message);
	json_object_put(d->result);
	memset(d, 0, sizeof *d);
}

/* A string member of an answer's result ("" when absent or null). */
static const char *
done_str(const struct done *d, const char *key)
{
	struct json_object *v;

	if (d->result == NULL || !json_object_object_get_ex(d->result, key, &v) || v == NULL)
		return "";
	return json_object_get_string(v);
}

/* Asserts d is one success (code NULL) whose result has "state": state. */
static void
assert_ok_state(const struct done *d, const char *state)
{
	assert_int_equal(d->calls, 1);
	if (d->code != NULL)
		fail_msg("expected success, got %s: %s", d->code, d->message);
	assert_string_equal(done_str(d, "state"), state);
}

/* Asserts d is one `busy` answer naming the job in the way. */
static void
assert_busy(const struct done *d, const char *job)
{
	assert_int_equal(d->calls, 1);
	assert_non_null(d->code);
	assert_string_equal(d->code, "busy");
	assert_non_null(d->message);
	if (strstr(d->message, job) == NULL)
		fail_msg("busy message '%s' does not name %s", d->message, job);
}

/* ---- the loop ---- */

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fx *fx = arg;

	fx->expired = true;
}

/* Runs one loop turn; false once the deadline passed or the fake peer saw a mismatch. */
static bool
fx_turn(struct fx *fx)
{
	if (fx->expired || (fx->fq != NULL && fake_qmp_failure(fx->fq) != NULL))
		return false;
	event_base_loop(fx->base, EVLOOP_ONCE);
	return true;
}

/* Runs the loop until cond holds (fails the test after DEADLINE_S or on a fake peer failure). */
#define RUN_UNTIL(fx, cond)                                                                        \
	do {                                                                                       \
		struct timeval tv_ = {DEADLINE_S, 0};                                              \
		struct event *t_ = evtimer_new((fx)->base, deadline_cb, (fx));                     \
		(fx)->expired = false;                                                             \
		evtimer_add(t_, &tv_);                                                             \
		while (!(cond) && fx_turn(fx))                                                     \
			;                                                                          \
		event_free(t_);                                                                    \
		if ((fx)->fq != NULL && fake_qmp_failure((fx)->fq) != NULL)                        \
			fail_msg("fake_qmp: %s", fake_qmp_failure((fx)->fq));                      \
		if (!(cond))                                                                       \
			fail_msg("timed out waiting for %s", #cond);                               \
	} while (0)

/* ---- fixture ---- */

static int
fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof *fx);
	struct cfg_errors errs;
	struct vm_config *cfg;
	char *p, *text;

	snprintf(fx->dir, sizeof fx->dir, "/tmp/test_vm.XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	for (const char *const *d = (const char *const[]){"run", "state", "vms", "images", NULL};
	     *d; d++) {
		p = fx_path(fx, *d);
		assert_int_equal(mkdir(p, 0700), 0);
		free(p);
	}
	text = xasprintf("[qvmd]\n"
	                 "vm_dir = %s/vms\n"
	                 "run_dir = %s/run\n"
	                 "state_dir = %s/state\n"
	                 "control_socket = %s/run/qvmd.sock\n"
	                 "qemu = /bin/false\n"
	                 "qemu_img = /bin/false\n"
	                 "image_dirs = %s/images\n",
	                 fx->dir, fx->dir, fx->dir, fx->dir, fx->dir);
	p = fx_path(fx, "qvmd.conf");
	write_text(p, text);
	free(text);
	cfg_errors_init(&errs);
	if (cfg_daemon_load(p, &fx->conf, &errs) < 0)
		fail_msg("qvmd.conf: %s", errs.n ? errs.msgs[0] : "?");
	cfg_errors_free(&errs);
	free(p);

	text = xasprintf("[vm]\n"
	                 "name = t1\n"
	                 "memory = 64M\n"
	                 "machine = q35\n"
	                 "accel = tcg\n"
	                 "restart = on-failure\n"
	                 "shutdown_timeout = 30s\n"
	                 "[disk root]\n"
	                 "file = %s/images/root.qcow2\n",
	                 fx->dir);
	p = fx_path(fx, "vms/t1.ini");
	write_text(p, text);
	free(text);
	cfg_errors_init(&errs);
	cfg = cfg_vm_load(p, &errs);
	if (cfg == NULL)
		fail_msg("t1.ini: %s", errs.n ? errs.msgs[0] : "?");
	cfg_errors_free(&errs);
	free(p);

	fx->base = event_base_new();
	fx->env.base = fx->base;
	fx->env.conf = &fx->conf;
	fx->env.publish = env_publish;
	fx->env.gone = env_gone;
	fx->env.may_restart = env_may_restart;
	fx->env.watched = env_watched;
	fx->env.arg = fx;
	fx->events = json_object_new_array();
	fx->lfd = -1;
	fx->child = -1;
	fx->child_in = -1;
	fx->vm = vm_new(&fx->env, cfg);
	current_fx = fx;
	*state = fx;
	return 0;
}

/* Ends the "QEMU" process: a clean exit removes its pidfile first, as QEMU does. */
static void
fx_end_child(struct fx *fx, bool clean)
{
	if (clean) {
		char *pidfile = fx_path(fx, "run/t1/qemu/qemu.pid");

		unlink(pidfile);
		free(pidfile);
	}
	if (fx->child > 0) {
		kill(fx->child, SIGKILL);
		waitpid(fx->child, NULL, 0);
		fx->child = -1;
	}
	if (fx->child_in >= 0) {
		close(fx->child_in);
		fx->child_in = -1;
	}
}

static int
fx_teardown(void **state)
{
	struct fx *fx = *state;

	if (fx->vm != NULL) {
		vm_detach(fx->vm);
		vm_free(fx->vm);
	}
	fx_end_child(fx, false);
	fake_qmp_free(fx->fq);
	if (fx->lfd >= 0)
		close(fx->lfd);
	/* Connections dropped by the VM are freed on a later loop turn. */
	for (int i = 0; i < 4; i++)
		event_base_loop(fx->base, EVLOOP_NONBLOCK);
	event_base_free(fx->base);
	cfg_daemon_free(&fx->conf);
	json_object_put(fx->events);
	free(fx->image);
	for (size_t i = 0; i < fx->ndones; i++)
		done_clear(&fx->dones[i]);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	current_fx = NULL;
	free(fx);
	return 0;
}

/* What QEMU's exit looks like from the fake peer's side: called by the script after it closed. */
static void
script_end_child(void *arg)
{
	struct fx *fx = arg;

	fx_end_child(fx, fx->exit_clean);
}

/* Script steps: QEMU closes its QMP socket and exits (clean: status 0, pidfile removed). */
static void
script_exit(struct fx *fx, bool clean)
{
	fx->exit_clean = clean;
	fake_qmp_close(fx->fq);
	fake_qmp_call(fx->fq, script_end_child, fx);
}

static const char *
fx_qemu_status(const struct fx *fx)
{
	static char buf[32];
	struct json_object *row = vm_list_row(fx->vm), *v;

	snprintf(buf, sizeof buf, "%s",
	         json_object_object_get_ex(row, "qemu_status", &v) ? json_object_get_string(v)
	                                                           : "");
	json_object_put(row);
	return buf;
}

/*
 * Plays a QEMU left running by an earlier qvmd (run directory, process, QMP socket) and lets the
 * VM adopt it; query-status answers status. Returns once the VM has seen that answer.
 */
static void
fx_adopt(struct fx *fx, const char *status)
{
	char *rundir = fx_path(fx, "run/t1"), *sock = fx_path(fx, "run/t1/qmp.sock");
	char *pidfile = fx_path(fx, "run/t1/qemu/qemu.pid"), *def = fx_path(fx, "vms/t1.ini");
	char *copy = fx_path(fx, "run/t1/t1.ini"), *statefile = fx_path(fx, "run/t1/state.json");
	char *qemudir = fx_path(fx, "run/t1/qemu"), *statedir = fx_path(fx, "state/t1");
	char *record = fx_path(fx, "state/t1/qemu-uid"), script[32];
	char *argv[] = {"/bin/sh", "-c",    script,     "sh", "-pidfile",
	                pidfile,   "-name", "guest=t1", NULL};
	/* As root, qvmd re-attaches only to a QEMU under the uid recorded for the VM. */
	struct proc_creds creds = {.uid = 270123, .gid = 270123, .extra_gid = (gid_t)-1};
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	uint64_t starttime;
	char *text, *reply, *cause = NULL;
	int pipefd[2], cfd, pidfd;

	assert_int_equal(mkdir(rundir, 0700), 0);
	assert_int_equal(mkdir(qemudir, 0700), 0);
	assert_true(mkdir(statedir, 0700) == 0 || errno == EEXIST);
	write_text(record, "270123 270123\n");
	assert_true(strlen(sock) < sizeof sun.sun_path);
	strcpy(sun.sun_path, sock);
	fx->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fx->lfd >= 0);
	assert_int_equal(bind(fx->lfd, (struct sockaddr *)&sun, sizeof sun), 0);
	assert_int_equal(listen(fx->lfd, 4), 0);

	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	snprintf(script, sizeof script, "read x <&%d", pipefd[0]);
	/* proc_spawn_as returns after the exec: the command line is the shell's from then on. */
	fx->child =
	    proc_spawn_as(argv, -1, &pipefd[0], 1, geteuid() == 0 ? &creds : NULL, &pidfd, &cause);
	assert_true(fx->child > 0);
	close(pidfd);
	close(pipefd[0]);
	fx->child_in = pipefd[1];
	assert_int_equal(proc_starttime(fx->child, &starttime), 0);

	text = xasprintf("{\"pid\": %d, \"starttime\": %llu, \"started_at_ms\": 1}", (int)fx->child,
	                 (unsigned long long)starttime);
	write_text(statefile, text);
	free(text);
	text = read_text(def);
	write_text(copy, text);
	free(text);
	text = xasprintf("%d\n", (int)fx->child);
	write_text(pidfile, text);
	free(text);

	free(rundir);
	free(qemudir);
	free(statedir);
	free(record);
	free(sock);
	free(pidfile);
	free(def);
	free(copy);
	free(statefile);

	assert_true(vm_adopt(fx->vm));
	cfd = accept4(fx->lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(cfd >= 0);
	fx->fq = fake_qmp_new_fd(fx->base, cfd);
	fake_qmp_handshake(fx->fq);
	fake_qmp_expect(fx->fq, "set-action", "{\"shutdown\": \"poweroff\"}", "{\"return\": {}}");
	reply = xasprintf("{\"return\": {\"status\": \"%s\", \"running\": %s}}", status,
	                  strcmp(status, "running") == 0 ? "true" : "false");
	fake_qmp_expect(fx->fq, "query-status", NULL, reply);
	free(reply);
	RUN_UNTIL(fx, fake_qmp_done(fx->fq) && strcmp(fx_qemu_status(fx), status) == 0);
}

/*
 * qvmd restarts: the VM lets go of its QEMU (vm_detach, as qvmd does when it exits), is freed,
 * and a new VM from the same definition adopts the QEMU again. The old peer is checked and
 * freed; the new one answers the handshake, query-status, and the qom-list of
 * /machine/peripheral that checks the hot-plugged devices, with peripheral (a JSON reply).
 */
static void
fx_readopt(struct fx *fx, const char *peripheral)
{
	struct cfg_errors errs;
	struct vm_config *cfg;
	char *def = fx_path(fx, "vms/t1.ini");
	int cfd;

	vm_detach(fx->vm);
	vm_free(fx->vm);
	fx->vm = NULL;
	RUN_UNTIL(fx, fake_qmp_client_gone(fx->fq));
	fake_qmp_assert_done(fx->fq);
	fake_qmp_free(fx->fq);
	fx->fq = NULL;

	cfg_errors_init(&errs);
	cfg = cfg_vm_load(def, &errs);
	cfg_errors_free(&errs);
	free(def);
	assert_non_null(cfg);
	fx->vm = vm_new(&fx->env, cfg);
	assert_true(vm_adopt(fx->vm));
	cfd = accept4(fx->lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(cfd >= 0);
	fx->fq = fake_qmp_new_fd(fx->base, cfd);
	fake_qmp_handshake(fx->fq);
	fake_qmp_expect(fx->fq, "set-action", "{\"shutdown\": \"poweroff\"}", "{\"return\": {}}");
	fake_qmp_expect(fx->fq, "query-status", NULL, STATUS_RUNNING);
	fake_qmp_expect(fx->fq, "qom-list", "{\"path\": \"/machine/peripheral\"}", peripheral);
	RUN_UNTIL(fx, fake_qmp_done(fx->fq) && strcmp(fx_qemu_status(fx), "running") == 0);
}

/* Waits until the VM has read every reply sent so far: QEMU answers in order, so once a
 * query-status sent now is answered, all earlier replies were handled. */
static void
fx_sync(struct fx *fx)
{
	struct done *d = fx_done(fx);

	fake_qmp_expect(fx->fq, "query-status", NULL, STATUS_RUNNING);
	vm_status(fx->vm, done_cb, d);
	RUN_UNTIL(fx, d->calls > 0);
}

/* Script of a disk's backend that QEMU accepts: its image's descriptors (add-fd: O_RDWR makes
 * fdset 3, O_RDONLY joins it), then its file and format nodes. */
static void
script_disk_backend(struct fx *fx)
{
	int fd = open(fx->image, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	fake_qmp_expect_fd(fx->fq, "add-fd", "{\"opaque\": \"d1.file\"}", RETURN_FDSET, fd);
	fake_qmp_expect_fd(fx->fq, "add-fd", "{\"opaque\": \"d1.file\", \"fdset-id\": 3}",
	                   RETURN_FDSET, fd);
	close(fd);
	fake_qmp_expect(fx->fq, "blockdev-add", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "blockdev-add", NULL, RETURN_EMPTY);
}

/* The same, but QEMU refuses the format node. */
static void
script_disk_backend_failing(struct fx *fx)
{
	int fd = open(fx->image, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	fake_qmp_expect_fd(fx->fq, "add-fd", "{\"opaque\": \"d1.file\"}", RETURN_FDSET, fd);
	fake_qmp_expect_fd(fx->fq, "add-fd", "{\"opaque\": \"d1.file\", \"fdset-id\": 3}",
	                   RETURN_FDSET, fd);
	close(fd);
	fake_qmp_expect(fx->fq, "blockdev-add", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "blockdev-add", NULL,
	                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"bad image\"}}");
}

/* Script of the release of a disk's images once its nodes are deleted: QEMU lists its fdset (2)
 * among another disk's (9), qvmd removes it. */
static void
script_release_fdsets(struct fx *fx, const char *id)
{
	char *sets =
	    xasprintf("{\"return\": [{\"fdset-id\": 9, \"fds\": [{\"fd\": 40, \"opaque\": "
	              "\"other.file\"}]}, {\"fdset-id\": 2, \"fds\": [{\"fd\": 20, "
	              "\"opaque\": \"%s.file\"}, {\"fd\": 21, \"opaque\": \"%s.file\"}]}]}",
	              id, id);

	fake_qmp_expect(fx->fq, "query-fdsets", NULL, sets);
	fake_qmp_expect(fx->fq, "remove-fd", "{\"fdset-id\": 2}", RETURN_EMPTY);
	free(sets);
}

/* Script of a q35 disk attach that QEMU accepts, on port hp.N. */
static void
script_attach(struct fx *fx, const char *id, unsigned n)
{
	char *args = xasprintf("{\"path\": \"/machine/peripheral/hp.%u/hp.%u\"}", n, n);
	char *qom =
	    xasprintf("{\"path\": \"/machine/peripheral/%s\", \"property\": \"parent_bus\"}", id);
	char *bus = xasprintf("{\"return\": \"/machine/peripheral/hp.%u/hp.%u\"}", n, n);

	fake_qmp_expect(fx->fq, "qom-list", args, "{\"return\": []}");
	script_disk_backend(fx);
	fake_qmp_expect(fx->fq, "device_add", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "qom-get", qom, bus);
	fake_qmp_expect(fx->fq, "query-pci", NULL, "{\"return\": []}");
	free(args);
	free(qom);
	free(bus);
}

/* The ids of the devices the VM's books say are live (vm_devices, with QEMU's own view
 * unavailable), space-separated (static buffer). */
static const char *
fx_live_devices(struct fx *fx)
{
	static const char err[] = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}";
	static char buf[256];
	struct done *d = fx_done(fx);
	struct json_object *arr, *v;
	size_t len = 0;

	fake_qmp_expect(fx->fq, "qom-list", NULL, err);
	fake_qmp_expect(fx->fq, "query-pci", NULL, err);
	vm_devices(fx->vm, done_cb, d);
	RUN_UNTIL(fx, d->calls > 0);
	assert_null(d->code);
	buf[0] = '\0';
	assert_true(json_object_object_get_ex(d->result, "devices", &arr));
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *o = json_object_array_get_idx(arr, i);

		if (!json_object_object_get_ex(o, "live", &v) || !json_object_get_boolean(v))
			continue;
		json_object_object_get_ex(o, "id", &v);
		len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", len ? " " : "",
		                        json_object_get_string(v));
		assert_true(len < sizeof buf);
	}
	return buf;
}

/* ---- adoption ---- */

static void
test_vm_adopt_publishes_running(void **state)
{
	struct fx *fx = *state;
	struct json_object *row = NULL, *v;

	fx_adopt(fx, "running");
	assert_int_equal(vm_state(fx->vm), VM_RUNNING);
	assert_string_equal(fx_states(fx), "running");
	row = vm_list_row(fx->vm);
	assert_true(json_object_object_get_ex(row, "pid", &v));
	assert_int_equal(json_object_get_int(v), fx->child);
	json_object_put(row);
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_adopt_publishes_paused(void **state)
{
	struct fx *fx = *state;

	fx_adopt(fx, "paused");
	assert_int_equal(vm_state(fx->vm), VM_PAUSED);
	assert_string_equal(fx_states(fx), "running paused");
	fake_qmp_assert_done(fx->fq);
}

/* ---- the state machine ---- */

static void
test_vm_pause_resume_reset(void **state)
{
	struct fx *fx = *state;
	struct done *p = fx_done(fx), *r = fx_done(fx), *rs = fx_done(fx), *bad = fx_done(fx);

	fx_adopt(fx, "running");

	fake_qmp_expect(fx->fq, "stop", NULL, RETURN_EMPTY);
	vm_pause(fx->vm, done_cb, p);
	RUN_UNTIL(fx, p->calls > 0);
	assert_ok_state(p, "paused");
	assert_int_equal(vm_state(fx->vm), VM_PAUSED);
	assert_string_equal(fx_states(fx), "running paused");

	fake_qmp_expect(fx->fq, "cont", NULL, RETURN_EMPTY);
	vm_resume(fx->vm, done_cb, r);
	RUN_UNTIL(fx, r->calls > 0);
	assert_ok_state(r, "running");
	assert_string_equal(fx_states(fx), "running paused running");

	fake_qmp_expect(fx->fq, "system_reset", NULL, RETURN_EMPTY);
	vm_reset(fx->vm, done_cb, rs);
	RUN_UNTIL(fx, rs->calls > 0);
	assert_ok_state(rs, "running");
	assert_string_equal(fx_states(fx), "running paused running");

	/* QEMU's refusal reaches the requester as qemu-error, the state unchanged. */
	fake_qmp_expect(fx->fq, "stop", NULL,
	                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}");
	vm_pause(fx->vm, done_cb, bad);
	RUN_UNTIL(fx, bad->calls > 0);
	assert_string_equal(bad->code, "qemu-error");
	assert_int_equal(vm_state(fx->vm), VM_RUNNING);
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_crash_no_restart_when_refused(void **state)
{
	struct fx *fx = *state;
	struct done *bd = fx_done(fx);

	fx_adopt(fx, "running");
	fx->may_restart = false;
	script_exit(fx, false); /* killed: the pidfile stays */
	RUN_UNTIL(fx, vm_state(fx->vm) == VM_CRASHED);
	assert_string_equal(fx_states(fx), "running crashed");
	assert_true(fx->may_restart_calls > 0);
	/* No restart is coming: there is nothing to bring down. */
	assert_false(vm_bring_down(fx->vm, 0, done_cb, bd));
	assert_int_equal(bd->calls, 0);
	assert_false(vm_is_active(fx->vm));
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_crash_schedules_restart(void **state)
{
	struct fx *fx = *state;
	struct done *bd = fx_done(fx);

	fx_adopt(fx, "running");
	fx->may_restart = true;
	script_exit(fx, false);
	RUN_UNTIL(fx, vm_state(fx->vm) == VM_CRASHED);
	assert_true(fx->may_restart_calls > 0);
	/* The restart policy (on-failure) scheduled one: bringing the VM down cancels it. */
	assert_true(vm_bring_down(fx->vm, 0, done_cb, bd));
	assert_ok_state(bd, "crashed");
	assert_string_equal(done_str(bd, "ended_by"), "restart-cancelled");
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_clean_shutdown_is_stopped(void **state)
{
	struct fx *fx = *state;

	fx_adopt(fx, "running");
	fx->may_restart = true;
	fake_qmp_send(fx->fq, SHUTDOWN_EVENT);
	script_exit(fx, true);
	RUN_UNTIL(fx, vm_state(fx->vm) == VM_STOPPED && fx_states(fx)[0] != '\0' &&
	                  strcmp(fx_states(fx), "running") != 0);
	assert_string_equal(fx_states(fx), "running stopped");
	/* on-failure: a guest shutdown is no failure, so no restart was even asked about. */
	assert_int_equal(fx->may_restart_calls, 0);
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_crash_during_reset(void **state)
{
	struct fx *fx = *state;
	struct done *rs = fx_done(fx), *p = fx_done(fx);
	int held;

	fx_adopt(fx, "running");
	held = fake_qmp_expect_later(fx->fq, "system_reset", NULL, RETURN_EMPTY);
	vm_reset(fx->vm, done_cb, rs);
	RUN_UNTIL(fx, fake_qmp_command(fx->fq, held) != NULL);
	script_exit(fx, false);
	RUN_UNTIL(fx, vm_state(fx->vm) == VM_CRASHED);
	assert_int_equal(rs->calls, 1);
	assert_non_null(rs->code);
	assert_string_equal(fx_states(fx), "running crashed");
	/* No job is left behind. */
	vm_pause(fx->vm, done_cb, p);
	assert_int_equal(p->calls, 1);
	assert_string_equal(p->code, "not-running");
	fake_qmp_assert_done(fx->fq);
}

/* ---- job conflicts ---- */

/* A disk for hot-plug: a file below image_dirs with a qcow2 (v3) header and no backing file (the
 * fixture owns its path). */
static struct cfg_disk
test_disk(struct fx *fx, const char *id)
{
	struct cfg_disk disk = {0};
	unsigned char header[112] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};
	char *rel = xasprintf("images/%s.qcow2", id);

	header[23] = 16;   /* cluster_bits */
	header[103] = 104; /* header_length; header extensions end at once */
	free(fx->image);
	fx->image = fx_path(fx, rel);
	free(rel);
	write_file(fx->image, header, sizeof header);
	disk.id = (char *)id;
	disk.file = fx->image;
	disk.format = CFG_FORMAT_QCOW2;
	disk.cache = CFG_CACHE_NONE;
	return disk;
}

static void
test_vm_busy_while_reset_held(void **state)
{
	struct fx *fx = *state;
	struct done *rs = fx_done(fx), *p = fx_done(fx), *a = fx_done(fx), *dt = fx_done(fx);
	struct done *st = fx_done(fx), *p2 = fx_done(fx);
	struct json_object *row, *v;
	struct cfg_disk disk;
	int held;

	fx_adopt(fx, "running");
	disk = test_disk(fx, "d1");
	held = fake_qmp_expect_later(fx->fq, "system_reset", NULL, RETURN_EMPTY);
	vm_reset(fx->vm, done_cb, rs);
	RUN_UNTIL(fx, fake_qmp_command(fx->fq, held) != NULL);

	vm_pause(fx->vm, done_cb, p);
	assert_busy(p, "reset");
	vm_attach_disk(fx->vm, &disk, 0, false, done_cb, a);
	assert_busy(a, "reset");
	vm_detach_device(fx->vm, "root", false, 0, done_cb, dt);
	assert_busy(dt, "reset");

	/* Queries never wait for a job. */
	row = vm_list_row(fx->vm);
	assert_true(json_object_object_get_ex(row, "state", &v));
	assert_string_equal(json_object_get_string(v), "running");
	json_object_put(row);
	fake_qmp_expect(fx->fq, "query-status", NULL, STATUS_RUNNING);
	vm_status(fx->vm, done_cb, st);
	RUN_UNTIL(fx, st->calls > 0);
	assert_null(st->code);
	assert_int_equal(rs->calls, 0);

	fake_qmp_reply(fx->fq, held);
	RUN_UNTIL(fx, rs->calls > 0);
	assert_ok_state(rs, "running");

	/* The job is over: pause is accepted again. */
	fake_qmp_expect(fx->fq, "stop", NULL, RETURN_EMPTY);
	vm_pause(fx->vm, done_cb, p2);
	RUN_UNTIL(fx, p2->calls > 0);
	assert_ok_state(p2, "paused");
	fake_qmp_assert_done(fx->fq);
}

/* ---- background jobs ---- */

static char *
test_bg_cancel(struct vm_job *job, const char *why)
{
	struct fx *fx = job->data;

	fx->bg_cancels++;
	vm_job_done(job, NULL, PROTO_ERR_FAILED, "vm %s: test-bg: %s", vm_name(job->vm), why);
	return NULL;
}

static void
test_job_free(void *data)
{
	struct fx *fx = data;

	fx->job_frees++;
}

/* A long job in the background slot (like a backup): pause and resume may run beside it, a
 * powerdown or kill cancels it first. It carries no client operation of its own. */
static const struct vm_job_kind test_bg_kind = {
    .name = "test-bg",
    .op = VM_OP_COUNT,
    .background = true,
    .allows = VM_OP_BIT(VM_OP_PAUSE) | VM_OP_BIT(VM_OP_RESUME),
    .cancel_for = VM_OP_BIT(VM_OP_POWERDOWN) | VM_OP_BIT(VM_OP_KILL),
    .cancel = test_bg_cancel,
    .free = test_job_free,
};

static void
test_vm_background_job_masks(void **state)
{
	struct fx *fx = *state;
	struct done *bg = fx_done(fx), *p = fx_done(fx), *r = fx_done(fx), *rs = fx_done(fx);
	struct done *pd = fx_done(fx);

	fx_adopt(fx, "running");
	assert_non_null(vm_job_new(fx->vm, &test_bg_kind, fx, done_cb, bg));

	/* Allowed beside it. */
	fake_qmp_expect(fx->fq, "stop", NULL, RETURN_EMPTY);
	vm_pause(fx->vm, done_cb, p);
	RUN_UNTIL(fx, p->calls > 0);
	assert_ok_state(p, "paused");
	fake_qmp_expect(fx->fq, "cont", NULL, RETURN_EMPTY);
	vm_resume(fx->vm, done_cb, r);
	RUN_UNTIL(fx, r->calls > 0);
	assert_ok_state(r, "running");

	/* Not allowed, not cancelling: refused, naming it. */
	vm_reset(fx->vm, done_cb, rs);
	assert_busy(rs, "test-bg");
	assert_int_equal(bg->calls, 0);
	assert_int_equal(fx->bg_cancels, 0);

	/* A powerdown cancels it first, then goes ahead. */
	fake_qmp_expect(fx->fq, "system_powerdown", NULL, RETURN_EMPTY);
	vm_powerdown(fx->vm, 0, true, done_cb, pd);
	assert_int_equal(fx->bg_cancels, 1);
	assert_int_equal(fx->job_frees, 1);
	assert_int_equal(bg->calls, 1);
	assert_string_equal(bg->code, "failed");
	assert_int_equal(pd->calls, 0);
	fake_qmp_send(fx->fq, SHUTDOWN_EVENT);
	script_exit(fx, true);
	RUN_UNTIL(fx, pd->calls > 0);
	assert_ok_state(pd, "stopped");
	assert_string_equal(done_str(pd, "ended_by"), "guest");
	assert_true(bg->seq < pd->seq);
	assert_int_equal(bg->calls, 1);
	assert_string_equal(fx_states(fx), "running paused running stopping stopped");
	fake_qmp_assert_done(fx->fq);
}

/* Runs the loop for ms milliseconds. */
static void
fx_run_for(struct fx *fx, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	event_base_loopexit(fx->base, &tv);
	event_base_dispatch(fx->base);
}

/* A running QEMU job's progress is asked for (query-jobs, once a second) only while a client
 * follows the VM's events; its conclusion comes as an event either way. */
static void
test_vm_job_progress_only_when_watched(void **state)
{
	struct fx *fx = *state;
	struct done *d = fx_done(fx);
	struct vm_snapshot_args a = {.tag = "t", .no_wait = true};

	fx_adopt(fx, "running");
	fake_qmp_expect(fx->fq, "query-block", NULL,
	                "{\"return\": [{\"device\": \"\", \"inserted\": {\"node-name\": "
	                "\"root.fmt\", \"ro\": false, \"image\": {\"format\": \"qcow2\", "
	                "\"filename\": \"/dev/fdset/1\"}}}]}");
	fake_qmp_expect(fx->fq, "snapshot-save", NULL, RETURN_EMPTY);
	fx->watched = false;
	vm_snapshot_create(fx->vm, &a, done_cb, d);
	RUN_UNTIL(fx, d->calls > 0 && fake_qmp_done(fx->fq));
	assert_null(d->code);
	/* Nobody watches: 2.5 polling periods and no query-jobs (the peer fails on any). */
	fx_run_for(fx, 2500);
	assert_int_equal(fake_qmp_unexpected(fx->fq), 0);
	/* Someone subscribes: progress is asked for at the next period. */
	fx->watched = true;
	fake_qmp_expect(fx->fq, "query-jobs", NULL,
	                "{\"return\": [{\"id\": \"snapshot-1\", \"type\": \"snapshot-save\", "
	                "\"status\": \"running\", \"current-progress\": 0, "
	                "\"total-progress\": 1}]}");
	RUN_UNTIL(fx, fake_qmp_done(fx->fq));
	fake_qmp_assert_done(fx->fq);
}

/* ---- apply ---- */

/* Two NICs added to the file: one apply hot-plugs both, pipelined: the second NIC's first batch
 * (port check, netdev_add) goes out before the first NIC's device_add, not after it. */
static void
test_vm_apply_pipelines_devices(void **state)
{
	struct fx *fx = *state;
	struct done *a = fx_done(fx), *again = fx_done(fx);
	char *def = fx_path(fx, "vms/t1.ini"), *text;
	struct json_object *v;

	fx_adopt(fx, "running");
	text = read_text(def);
	{
		char *more = xasprintf("%s\n[net n1]\nrestrict = yes\n\n[net n2]\n", text);

		write_text(def, more);
		free(more);
	}
	for (unsigned n = 0; n < 2; n++) {
		char *args = xasprintf("{\"path\": \"/machine/peripheral/hp.%u/hp.%u\"}", n, n);

		fake_qmp_expect(fx->fq, "qom-list", args, "{\"return\": []}");
		fake_qmp_expect(fx->fq, "netdev_add", NULL, RETURN_EMPTY);
		free(args);
	}
	for (unsigned n = 0; n < 2; n++) {
		char *qom = xasprintf(
		    "{\"path\": \"/machine/peripheral/n%u\", \"property\": \"parent_bus\"}", n + 1);
		char *bus = xasprintf("{\"return\": \"/machine/peripheral/hp.%u/hp.%u\"}", n, n);

		fake_qmp_expect(fx->fq, "device_add", NULL, RETURN_EMPTY);
		fake_qmp_expect(fx->fq, "qom-get", qom, bus);
		fake_qmp_expect(fx->fq, "query-pci", NULL, "{\"return\": []}");
		free(qom);
		free(bus);
	}
	vm_apply(fx->vm, false, done_cb, a);
	RUN_UNTIL(fx, a->calls > 0);
	if (a->code != NULL)
		fail_msg("apply: %s: %s", a->code, a->message);
	assert_true(json_object_object_get_ex(a->result, "applied", &v));
	assert_int_equal(json_object_get_int(v), 2);
	fake_qmp_assert_done(fx->fq);
	assert_string_equal(fx_live_devices(fx), "root n1 n2");
	/* The books say what the file says now: nothing more to apply. */
	vm_apply(fx->vm, true, done_cb, again);
	assert_int_equal(again->calls, 1);
	assert_true(json_object_object_get_ex(again->result, "changes", &v));
	assert_int_equal(json_object_array_length(v), 0);
	free(text);
	free(def);
}

/* ---- kill interrupting hot-plug ---- */

static void
test_vm_attach_disk_q35(void **state)
{
	struct fx *fx = *state;
	struct done *a = fx_done(fx);
	struct json_object *cmd, *args, *v;
	struct cfg_disk disk;
	int dev;

	fx_adopt(fx, "running");
	disk = test_disk(fx, "d1");
	fake_qmp_expect(fx->fq, "qom-list", "{\"path\": \"/machine/peripheral/hp.0/hp.0\"}",
	                "{\"return\": [{\"name\": \"type\", \"type\": \"string\"}]}");
	script_disk_backend(fx);
	dev = fake_qmp_expect(fx->fq, "device_add", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "qom-get",
	                "{\"path\": \"/machine/peripheral/d1\", \"property\": \"parent_bus\"}",
	                "{\"return\": \"/machine/peripheral/hp.0/hp.0\"}");
	fake_qmp_expect(fx->fq, "query-pci", NULL, "{\"return\": []}");
	vm_attach_disk(fx->vm, &disk, 0, false, done_cb, a);
	RUN_UNTIL(fx, a->calls > 0);
	if (a->code != NULL)
		fail_msg("attach: %s: %s", a->code, a->message);
	assert_string_equal(done_str(a, "id"), "d1");
	assert_true(json_object_object_get_ex(a->result, "live", &v));
	assert_true(json_object_get_boolean(v));
	cmd = fake_qmp_command(fx->fq, dev);
	assert_true(json_object_object_get_ex(cmd, "arguments", &args));
	assert_true(json_object_object_get_ex(args, "bus", &v));
	assert_string_equal(json_object_get_string(v), "hp.0");
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_kill_during_attach(void **state)
{
	struct fx *fx = *state;
	struct done *a = fx_done(fx), *k = fx_done(fx);
	struct cfg_disk disk;
	int dev, qom, pci;

	fx_adopt(fx, "running");
	disk = test_disk(fx, "d1");
	fake_qmp_expect(fx->fq, "qom-list", NULL, "{\"return\": []}");
	script_disk_backend(fx);
	/* The guest never finishes the plug before the kill; the answers come after it. */
	dev = fake_qmp_expect_later(fx->fq, "device_add", NULL, RETURN_EMPTY);
	qom = fake_qmp_expect_later(fx->fq, "qom-get", NULL,
	                            "{\"return\": \"/machine/peripheral/hp.0/hp.0\"}");
	pci = fake_qmp_expect_later(fx->fq, "query-pci", NULL, "{\"return\": []}");
	vm_attach_disk(fx->vm, &disk, 0, false, done_cb, a);
	RUN_UNTIL(fx, fake_qmp_command(fx->fq, pci) != NULL);
	assert_int_equal(a->calls, 0);

	vm_kill(fx->vm, done_cb, k);
	assert_int_equal(a->calls, 1);
	assert_string_equal(a->code, "failed");
	if (strstr(a->message, "interrupted by kill") == NULL)
		fail_msg("attach answered '%s'", a->message);

	fake_qmp_reply(fx->fq, dev);
	fake_qmp_reply(fx->fq, qom);
	fake_qmp_reply(fx->fq, pci);
	fake_qmp_expect(fx->fq, "quit", NULL, RETURN_EMPTY);
	script_exit(fx, true);
	RUN_UNTIL(fx, k->calls > 0);
	assert_ok_state(k, "stopped");
	assert_int_equal(vm_state(fx->vm), VM_STOPPED);
	/* No callback of the attach ran after it ended (ASan would see one reach freed memory). */
	assert_int_equal(a->calls, 1);
	assert_true(a->seq < k->seq);
	assert_string_equal(fx_states(fx), "running stopping stopped");
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_kill_during_detach(void **state)
{
	struct fx *fx = *state;
	struct done *dt = fx_done(fx), *k = fx_done(fx);
	int del;

	fx_adopt(fx, "running");
	del = fake_qmp_expect_later(fx->fq, "device_del", "{\"id\": \"root\"}", RETURN_EMPTY);
	vm_detach_device(fx->vm, "root", false, 0, done_cb, dt);
	RUN_UNTIL(fx, fake_qmp_command(fx->fq, del) != NULL);
	assert_int_equal(dt->calls, 0);

	vm_kill(fx->vm, done_cb, k);
	assert_int_equal(dt->calls, 1);
	assert_string_equal(dt->code, "failed");
	if (strstr(dt->message, "interrupted by kill") == NULL)
		fail_msg("detach answered '%s'", dt->message);

	fake_qmp_reply(fx->fq, del);
	fake_qmp_expect(fx->fq, "quit", NULL, RETURN_EMPTY);
	script_exit(fx, true);
	RUN_UNTIL(fx, k->calls > 0);
	assert_ok_state(k, "stopped");
	assert_int_equal(dt->calls, 1);
	assert_string_equal(fx_states(fx), "running stopping stopped");
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_kill_takes_over_powerdown(void **state)
{
	struct fx *fx = *state;
	struct done *pd = fx_done(fx), *bd = fx_done(fx), *k = fx_done(fx);

	fx_adopt(fx, "running");
	fake_qmp_expect(fx->fq, "system_powerdown", NULL, RETURN_EMPTY);
	vm_powerdown(fx->vm, 0, true, done_cb, pd);
	RUN_UNTIL(fx, fake_qmp_done(fx->fq));
	assert_true(vm_bring_down(fx->vm, 0, done_cb, bd));

	fake_qmp_expect(fx->fq, "quit", NULL, RETURN_EMPTY);
	script_exit(fx, true);
	vm_kill(fx->vm, done_cb, k);
	/* The powerdown's requester is told at once; whoever joined it waits for the stop. */
	assert_int_equal(pd->calls, 1);
	assert_string_equal(pd->code, "failed");
	if (strstr(pd->message, "interrupted by kill") == NULL)
		fail_msg("powerdown answered '%s'", pd->message);
	assert_int_equal(bd->calls, 0);
	RUN_UNTIL(fx, k->calls > 0 && bd->calls > 0);
	assert_ok_state(k, "stopped");
	assert_ok_state(bd, "stopped");
	assert_string_equal(done_str(k, "ended_by"), "quit");
	assert_int_equal(pd->calls, 1);
	assert_string_equal(fx_states(fx), "running stopping stopped");
	fake_qmp_assert_done(fx->fq);
}

/*
 * A failed hot-plug rolls back and ends its job with the operation's own error code and message
 * (both owned by the operation, which the job frees): the requester gets them intact.
 */
static void
test_vm_attach_rollback(void **state)
{
	struct fx *fx = *state;
	struct done *a = fx_done(fx), *a2 = fx_done(fx);
	struct cfg_disk disk;

	fx_adopt(fx, "running");
	disk = test_disk(fx, "d1");
	fake_qmp_expect(fx->fq, "qom-list", NULL, "{\"return\": []}");
	script_disk_backend_failing(fx);
	/* What was added is removed again before the answer: the file node, the image's fdset. */
	fake_qmp_expect(fx->fq, "blockdev-del", "{\"node-name\": \"d1.file\"}", RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "remove-fd", "{\"fdset-id\": 3}", RETURN_EMPTY);
	vm_attach_disk(fx->vm, &disk, 0, false, done_cb, a);
	RUN_UNTIL(fx, a->calls > 0);
	assert_string_equal(a->code, "qemu-error");
	if (strstr(a->message, "bad image") == NULL)
		fail_msg("attach answered '%s'", a->message);
	fake_qmp_assert_done(fx->fq);

	/* Nothing is left tracked: the same id attaches, on the same port. */
	script_attach(fx, "d1", 0);
	vm_attach_disk(fx->vm, &disk, 0, false, done_cb, a2);
	RUN_UNTIL(fx, a2->calls > 0);
	assert_null(a2->code);
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_attach_skips_port_taken_in_qemu(void **state)
{
	struct fx *fx = *state;
	struct done *a = fx_done(fx);
	struct json_object *args, *v;
	struct cfg_disk disk;
	int dev;

	fx_adopt(fx, "running");
	disk = test_disk(fx, "d1");
	fake_qmp_expect(
	    fx->fq, "qom-list", "{\"path\": \"/machine/peripheral/hp.0/hp.0\"}",
	    "{\"return\": [{\"name\": \"child[0]\", \"type\": \"child<virtio-blk-pci>\"}]}");
	script_disk_backend(fx);
	fake_qmp_expect(fx->fq, "qom-list", "{\"path\": \"/machine/peripheral/hp.1/hp.1\"}",
	                "{\"return\": []}");
	dev = fake_qmp_expect(fx->fq, "device_add", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "qom-get", NULL, "{\"return\": \"/machine/peripheral/hp.1/hp.1\"}");
	fake_qmp_expect(fx->fq, "query-pci", NULL, "{\"return\": []}");
	vm_attach_disk(fx->vm, &disk, 0, false, done_cb, a);
	RUN_UNTIL(fx, a->calls > 0);
	if (a->code != NULL)
		fail_msg("attach: %s: %s", a->code, a->message);
	assert_true(json_object_object_get_ex(fake_qmp_command(fx->fq, dev), "arguments", &args));
	assert_true(json_object_object_get_ex(args, "bus", &v));
	assert_string_equal(json_object_get_string(v), "hp.1");
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_detach_disk(void **state)
{
	struct fx *fx = *state;
	struct done *dt = fx_done(fx), *again = fx_done(fx);

	fx_adopt(fx, "running");
	assert_string_equal(fx_live_devices(fx), "root");
	fake_qmp_expect(fx->fq, "device_del", "{\"id\": \"root\"}", RETURN_EMPTY);
	/* virtio: a first DEVICE_DELETED for the virtio backend (no id), then the device's. */
	fake_qmp_send(fx->fq, "{\"event\": \"DEVICE_DELETED\", \"data\": {\"path\": "
	                      "\"/machine/peripheral/root/virtio-backend\"}, \"timestamp\": "
	                      "{\"seconds\": 1, \"microseconds\": 0}}\r\n");
	fake_qmp_send(fx->fq, "{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"root\", "
	                      "\"path\": \"/machine/peripheral/root\"}, \"timestamp\": "
	                      "{\"seconds\": 1, \"microseconds\": 0}}\r\n");
	fake_qmp_expect(fx->fq, "blockdev-del", "{\"node-name\": \"root.fmt\"}", RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "blockdev-del", "{\"node-name\": \"root.file\"}", RETURN_EMPTY);
	script_release_fdsets(fx, "root");
	vm_detach_device(fx->vm, "root", false, 0, done_cb, dt);
	RUN_UNTIL(fx, dt->calls > 0);
	if (dt->code != NULL)
		fail_msg("detach: %s: %s", dt->code, dt->message);
	assert_string_equal(done_str(dt, "id"), "root");
	fake_qmp_assert_done(fx->fq);
	/* The device is gone from the books. */
	vm_detach_device(fx->vm, "root", false, 0, done_cb, again);
	assert_int_equal(again->calls, 1);
	assert_string_equal(again->code, "not-found");
}

static void
test_vm_detach_timeout_then_released(void **state)
{
	struct fx *fx = *state;
	struct done *dt = fx_done(fx), *again = fx_done(fx);

	fx_adopt(fx, "running");
	fake_qmp_expect(fx->fq, "device_del", "{\"id\": \"root\"}", RETURN_EMPTY);
	vm_detach_device(fx->vm, "root", false, 1000, done_cb, dt);
	RUN_UNTIL(fx, dt->calls > 0);
	assert_string_equal(dt->code, "timeout");
	/* Still leaving: a second detach is refused, not sent. */
	vm_detach_device(fx->vm, "root", false, 0, done_cb, again);
	assert_int_equal(again->calls, 1);
	assert_string_equal(again->code, "busy");

	/* The guest lets go later: the removal completes with nobody waiting. */
	fake_qmp_send(fx->fq, "{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"root\", "
	                      "\"path\": \"/machine/peripheral/root\"}, \"timestamp\": "
	                      "{\"seconds\": 1, \"microseconds\": 0}}\r\n");
	fake_qmp_expect(fx->fq, "blockdev-del", "{\"node-name\": \"root.fmt\"}", RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "blockdev-del", "{\"node-name\": \"root.file\"}", RETURN_EMPTY);
	script_release_fdsets(fx, "root");
	RUN_UNTIL(fx, fake_qmp_done(fx->fq));
	assert_string_equal(fx_live_devices(fx), "");
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_readopt_keeps_attached_disk(void **state)
{
	struct fx *fx = *state;
	struct done *a = fx_done(fx), *dt = fx_done(fx);
	struct cfg_disk disk;

	fx_adopt(fx, "running");
	disk = test_disk(fx, "d1");
	script_attach(fx, "d1", 0);
	vm_attach_disk(fx->vm, &disk, 0, false, done_cb, a);
	RUN_UNTIL(fx, a->calls > 0);
	assert_null(a->code);

	/* The new qvmd checks its books against QEMU's device model: d1 is there. */
	fx_readopt(fx, "{\"return\": [{\"name\": \"d1\", \"type\": \"child<virtio-blk-pci>\"}, "
	               "{\"name\": \"root\", \"type\": \"child<virtio-blk-pci>\"}]}");
	fx_sync(fx);
	assert_int_equal(vm_state(fx->vm), VM_RUNNING);
	/* It is still known: detaching it sends device_del. */
	fake_qmp_expect(fx->fq, "device_del", "{\"id\": \"d1\"}", NULL);
	vm_detach_device(fx->vm, "d1", false, 0, done_cb, dt);
	fx_sync(fx);
	assert_int_equal(dt->calls, 0);
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_readopt_undoes_interrupted_attach(void **state)
{
	struct fx *fx = *state;
	struct done *a = fx_done(fx), *again = fx_done(fx);
	struct cfg_disk disk;
	int dev;

	fx_adopt(fx, "running");
	disk = test_disk(fx, "d1");
	fake_qmp_expect(fx->fq, "qom-list", NULL, "{\"return\": []}");
	script_disk_backend(fx);
	dev = fake_qmp_expect(fx->fq, "device_add", NULL, NULL);
	fake_qmp_expect(fx->fq, "qom-get", NULL, NULL);
	fake_qmp_expect(fx->fq, "query-pci", NULL, NULL);
	vm_attach_disk(fx->vm, &disk, 0, false, done_cb, a);
	RUN_UNTIL(fx, fake_qmp_done(fx->fq));
	assert_non_null(fake_qmp_command(fx->fq, dev));

	/* qvmd exits mid-attach; the next one finds d1 recorded as attaching, not in QEMU. */
	fx_readopt(fx, "{\"return\": [{\"name\": \"root\", \"type\": \"child<virtio-blk-pci>\"}]}");
	assert_int_equal(a->calls, 1);
	assert_non_null(a->code);
	fake_qmp_expect(fx->fq, "blockdev-del", "{\"node-name\": \"d1.fmt\"}", RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "blockdev-del", "{\"node-name\": \"d1.file\"}", RETURN_EMPTY);
	script_release_fdsets(fx, "d1");
	RUN_UNTIL(fx, fake_qmp_done(fx->fq));
	/* Undone: d1 is unknown again. */
	vm_detach_device(fx->vm, "d1", false, 0, done_cb, again);
	assert_int_equal(again->calls, 1);
	assert_string_equal(again->code, "not-found");
	fake_qmp_assert_done(fx->fq);
}

/* ---- cancel semantics ---- */

static void
test_probe_reply(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct fx *fx = arg;

	fx->probe_replies++;
}

/* An ordinary job that only sends commands. */
static const struct vm_job_kind test_probe_kind = {
    .name = "test-probe",
    .op = VM_OP_RESET,
    .free = test_job_free,
};

static void
test_vm_job_done_cancels_commands(void **state)
{
	struct fx *fx = *state;
	struct done *d = fx_done(fx), *st = fx_done(fx);
	struct vm_job *job;
	char *cause = NULL;
	int held;

	fx_adopt(fx, "running");
	job = vm_job_new(fx->vm, &test_probe_kind, fx, done_cb, d);

	/* A command answered while the job runs reaches its callback. */
	fake_qmp_expect(fx->fq, "query-name", NULL, RETURN_EMPTY);
	assert_true(vm_job_send(job, "query-name", NULL, -1, 0, test_probe_reply, fx, &cause) > 0);
	RUN_UNTIL(fx, fx->probe_replies == 1);

	/* One still in flight when the job ends never does. */
	held = fake_qmp_expect_later(fx->fq, "query-uuid", NULL, RETURN_EMPTY);
	assert_true(vm_job_send(job, "query-uuid", NULL, -1, 0, test_probe_reply, fx, &cause) > 0);
	RUN_UNTIL(fx, fake_qmp_command(fx->fq, held) != NULL);
	vm_job_done(job, json_object_new_object(), PROTO_OK, NULL);
	assert_int_equal(d->calls, 1);
	assert_null(d->code);
	assert_int_equal(fx->job_frees, 1);

	fake_qmp_reply(fx->fq, held);
	/* QEMU answers in order: once query-status is answered, the held reply was read too. */
	fake_qmp_expect(fx->fq, "query-status", NULL, STATUS_RUNNING);
	vm_status(fx->vm, done_cb, st);
	RUN_UNTIL(fx, st->calls > 0);
	assert_int_equal(fx->probe_replies, 1);
	assert_int_equal(d->calls, 1);
	fake_qmp_assert_done(fx->fq);
}

#define SET_ACTION(a) "{\"shutdown\": \"" a "\"}"

/*
 * reboot: QEMU told to pause at the guest's poweroff, ACPI; the guest shuts down (SHUTDOWN):
 * reset, cont and poweroff again, in the same process, and the VM was never "stopped". The
 * shutdown does not count as an end of the VM afterwards.
 */
static void
test_vm_reboot_guest_shuts_down(void **state)
{
	struct fx *fx = *state;
	struct done *rb = fx_done(fx), *p = fx_done(fx);
	struct json_object *row;
	int64_t pid;

	fx_adopt(fx, "running");
	row = vm_list_row(fx->vm);
	pid = json_object_get_int64(json_object_object_get(row, "pid"));
	json_object_put(row);
	fake_qmp_expect(fx->fq, "set-action", SET_ACTION("pause"), RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "system_powerdown", NULL, RETURN_EMPTY);
	vm_reboot(fx->vm, 3600 * 1000, done_cb, rb);
	RUN_UNTIL(fx, fake_qmp_done(fx->fq));
	vm_pause(fx->vm, done_cb, p);
	assert_busy(p, "reboot");
	fake_qmp_send(fx->fq, SHUTDOWN_EVENT);
	fake_qmp_expect(fx->fq, "system_reset", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "cont", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "set-action", SET_ACTION("poweroff"), RETURN_EMPTY);
	RUN_UNTIL(fx, rb->calls > 0);
	assert_ok_state(rb, "running");
	assert_string_equal(done_str(rb, "rebooted_by"), "guest");
	row = vm_list_row(fx->vm);
	assert_int_equal(json_object_get_int64(json_object_object_get(row, "pid")), pid);
	json_object_put(row);
	assert_string_equal(fx_states(fx), "running");
	fake_qmp_assert_done(fx->fq);
	/* The reboot's shutdown is forgotten: QEMU ending now without one is a crash. */
	script_exit(fx, true);
	RUN_UNTIL(fx, vm_state(fx->vm) == VM_CRASHED);
}

/* A guest that ignores ACPI until the timeout is reset hard; a paused one is resumed first. */
static void
test_vm_reboot_ignored_resets(void **state)
{
	struct fx *fx = *state;
	struct done *rb = fx_done(fx);

	fx_adopt(fx, "paused");
	fake_qmp_expect(fx->fq, "cont", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "set-action", SET_ACTION("pause"), RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "system_powerdown", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "system_reset", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "cont", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "set-action", SET_ACTION("poweroff"), RETURN_EMPTY);
	vm_reboot(fx->vm, 20, done_cb, rb);
	RUN_UNTIL(fx, rb->calls > 0);
	assert_string_equal(done_str(rb, "rebooted_by"), "reset");
	assert_string_equal(done_str(rb, "resumed"), "true");
	fake_qmp_assert_done(fx->fq);
}

/* A step QEMU refuses ends the reboot with its error, and the shutdown action is put back. */
static void
test_vm_reboot_refused_step(void **state)
{
	struct fx *fx = *state;
	struct done *rb = fx_done(fx);

	fx_adopt(fx, "running");
	fake_qmp_expect(fx->fq, "set-action", SET_ACTION("pause"), RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "system_powerdown", NULL,
	                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no acpi\"}}");
	fake_qmp_expect(fx->fq, "set-action", SET_ACTION("poweroff"), RETURN_EMPTY);
	vm_reboot(fx->vm, 3600 * 1000, done_cb, rb);
	RUN_UNTIL(fx, rb->calls > 0 && fake_qmp_done(fx->fq));
	assert_string_equal(rb->code, "qemu-error");
	if (strstr(rb->message, "system_powerdown failed: no acpi") == NULL)
		fail_msg("reboot answered '%s'", rb->message);
	assert_int_equal(vm_state(fx->vm), VM_RUNNING);
}

/* ---- powerdown ---- */

static void
test_vm_powerdown_no_wait(void **state)
{
	struct fx *fx = *state;
	struct done *pd = fx_done(fx), *p = fx_done(fx);

	fx_adopt(fx, "running");
	fake_qmp_expect(fx->fq, "system_powerdown", NULL, RETURN_EMPTY);
	vm_powerdown(fx->vm, 0, false, done_cb, pd);
	RUN_UNTIL(fx, pd->calls > 0);
	assert_ok_state(pd, "stopping");
	assert_int_equal(vm_state(fx->vm), VM_STOPPING);

	/* The job goes on. */
	vm_pause(fx->vm, done_cb, p);
	assert_busy(p, "powerdown");
	fake_qmp_send(fx->fq, SHUTDOWN_EVENT);
	script_exit(fx, true);
	RUN_UNTIL(fx, vm_state(fx->vm) == VM_STOPPED);
	assert_int_equal(pd->calls, 1);
	assert_string_equal(fx_states(fx), "running stopping stopped");
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_powerdown_paused_resumes_first(void **state)
{
	struct fx *fx = *state;
	struct done *pd = fx_done(fx);
	struct json_object *v;

	fx_adopt(fx, "paused");
	fake_qmp_expect(fx->fq, "cont", NULL, RETURN_EMPTY);
	fake_qmp_expect(fx->fq, "system_powerdown", NULL, RETURN_EMPTY);
	fake_qmp_send(fx->fq, SHUTDOWN_EVENT);
	script_exit(fx, true);
	vm_powerdown(fx->vm, 0, true, done_cb, pd);
	RUN_UNTIL(fx, pd->calls > 0);
	assert_ok_state(pd, "stopped");
	assert_string_equal(done_str(pd, "ended_by"), "guest");
	assert_true(json_object_object_get_ex(pd->result, "resumed", &v));
	assert_true(json_object_get_boolean(v));
	assert_string_equal(fx_states(fx), "running paused stopping stopped");
	fake_qmp_assert_done(fx->fq);
}

/* ---- bringing every VM down ---- */

static void
test_vm_bring_down_joins_powerdown(void **state)
{
	struct fx *fx = *state;
	struct done *pd = fx_done(fx), *bd = fx_done(fx);

	fx_adopt(fx, "running");
	fake_qmp_expect(fx->fq, "system_powerdown", NULL, RETURN_EMPTY);
	vm_powerdown(fx->vm, 3600 * 1000, true, done_cb, pd);
	RUN_UNTIL(fx, fake_qmp_done(fx->fq));

	/* The guest ignores it; the 1 s of the bring-down, not the powerdown's hour, applies. */
	assert_true(vm_bring_down(fx->vm, 1000, done_cb, bd));
	fake_qmp_expect(fx->fq, "quit", NULL, RETURN_EMPTY);
	script_exit(fx, true);
	RUN_UNTIL(fx, pd->calls > 0 && bd->calls > 0);
	assert_ok_state(pd, "stopped");
	assert_ok_state(bd, "stopped");
	assert_string_equal(done_str(pd, "ended_by"), "quit");
	assert_string_equal(done_str(bd, "ended_by"), "quit");
	assert_string_equal(fx_states(fx), "running stopping stopped");
	fake_qmp_assert_done(fx->fq);
}

static void
test_vm_bring_down_waits_for_job(void **state)
{
	struct fx *fx = *state;
	struct done *rs = fx_done(fx), *bd = fx_done(fx), *st = fx_done(fx);
	int held;

	fx_adopt(fx, "running");
	held = fake_qmp_expect_later(fx->fq, "system_reset", NULL, RETURN_EMPTY);
	vm_reset(fx->vm, done_cb, rs);
	RUN_UNTIL(fx, fake_qmp_command(fx->fq, held) != NULL);

	assert_true(vm_bring_down(fx->vm, 0, done_cb, bd));
	/* Nothing is sent while the reset runs: the next command QEMU sees is this query. */
	fake_qmp_expect(fx->fq, "query-status", NULL, STATUS_RUNNING);
	vm_status(fx->vm, done_cb, st);
	RUN_UNTIL(fx, st->calls > 0);
	assert_int_equal(bd->calls, 0);
	assert_int_equal(vm_state(fx->vm), VM_RUNNING);

	fake_qmp_reply(fx->fq, held);
	fake_qmp_expect(fx->fq, "system_powerdown", NULL, RETURN_EMPTY);
	fake_qmp_send(fx->fq, SHUTDOWN_EVENT);
	script_exit(fx, true);
	RUN_UNTIL(fx, bd->calls > 0);
	assert_ok_state(rs, "running");
	assert_ok_state(bd, "stopped");
	assert_string_equal(done_str(bd, "ended_by"), "guest");
	assert_true(rs->seq < bd->seq);
	assert_string_equal(fx_states(fx), "running stopping stopped");
	fake_qmp_assert_done(fx->fq);
}

/*
 * A kill that takes over a powerdown --no-wait whose system_powerdown is still unanswered: the
 * kill's requester must get one answer, when QEMU is gone.
 */
static void
test_vm_kill_takes_over_powerdown_no_wait(void **state)
{
	struct fx *fx = *state;
	struct done *pd = fx_done(fx), *k = fx_done(fx);
	int held;

	fx_adopt(fx, "running");
	held = fake_qmp_expect_later(fx->fq, "system_powerdown", NULL, RETURN_EMPTY);
	vm_powerdown(fx->vm, 0, false, done_cb, pd);
	RUN_UNTIL(fx, fake_qmp_command(fx->fq, held) != NULL);
	vm_kill(fx->vm, done_cb, k);
	assert_int_equal(pd->calls, 1);
	assert_string_equal(pd->code, "failed");

	fake_qmp_reply(fx->fq, held);
	fake_qmp_expect(fx->fq, "quit", NULL, RETURN_EMPTY);
	script_exit(fx, true);
	RUN_UNTIL(fx, vm_state(fx->vm) == VM_STOPPED);
	assert_ok_state(k, "stopped");
	fake_qmp_assert_done(fx->fq);
}

/*
 * vm_bring_down waiting for a job (here a detach waiting for the guest) when QEMU dies: it must
 * be answered, and no job may be left on the VM.
 */
static void
test_vm_bring_down_waiting_qemu_dies(void **state)
{
	struct fx *fx = *state;
	struct done *dt = fx_done(fx), *bd = fx_done(fx), *st = fx_done(fx), *p = fx_done(fx);

	fx_adopt(fx, "running");
	fake_qmp_expect(fx->fq, "device_del", "{\"id\": \"root\"}", RETURN_EMPTY);
	vm_detach_device(fx->vm, "root", false, 0, done_cb, dt);
	/* Once query-status is answered, device_del's answer was read too. */
	fake_qmp_expect(fx->fq, "query-status", NULL, STATUS_RUNNING);
	vm_status(fx->vm, done_cb, st);
	RUN_UNTIL(fx, st->calls > 0);
	assert_int_equal(dt->calls, 0);

	assert_true(vm_bring_down(fx->vm, 0, done_cb, bd));
	script_exit(fx, false);
	RUN_UNTIL(fx, dt->calls > 0 && bd->calls > 0);
	assert_non_null(dt->code);
	assert_int_equal(bd->calls, 1);
	assert_null(bd->code);
	assert_int_equal(vm_state(fx->vm), VM_CRASHED);
	vm_pause(fx->vm, done_cb, p);
	assert_int_equal(p->calls, 1);
	assert_string_equal(p->code, "not-running");
	fake_qmp_assert_done(fx->fq);
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

/* An argument runs only the cases matching it (a cmocka pattern, e.g. 'test_vm_kill*'). */
int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    T(test_vm_adopt_publishes_running),
	    T(test_vm_adopt_publishes_paused),
	    T(test_vm_pause_resume_reset),
	    T(test_vm_crash_no_restart_when_refused),
	    T(test_vm_crash_schedules_restart),
	    T(test_vm_clean_shutdown_is_stopped),
	    T(test_vm_crash_during_reset),
	    T(test_vm_busy_while_reset_held),
	    T(test_vm_background_job_masks),
	    T(test_vm_job_progress_only_when_watched),
	    T(test_vm_attach_disk_q35),
	    T(test_vm_apply_pipelines_devices),
	    T(test_vm_kill_during_attach),
	    T(test_vm_kill_during_detach),
	    T(test_vm_kill_takes_over_powerdown),
	    T(test_vm_attach_skips_port_taken_in_qemu),
	    T(test_vm_detach_disk),
	    T(test_vm_detach_timeout_then_released),
	    T(test_vm_readopt_keeps_attached_disk),
	    T(test_vm_readopt_undoes_interrupted_attach),
	    T(test_vm_job_done_cancels_commands),
	    T(test_vm_powerdown_no_wait),
	    T(test_vm_reboot_guest_shuts_down),
	    T(test_vm_reboot_ignored_resets),
	    T(test_vm_reboot_refused_step),
	    T(test_vm_powerdown_paused_resumes_first),
	    T(test_vm_bring_down_joins_powerdown),
	    T(test_vm_bring_down_waits_for_job),
	    T(test_vm_attach_rollback),
	    T(test_vm_kill_takes_over_powerdown_no_wait),
	    T(test_vm_bring_down_waiting_qemu_dies),
	};

	signal(SIGPIPE, SIG_IGN);
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
