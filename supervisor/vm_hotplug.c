/*
 * Hot-plug of disks (blockdev-add file + format node, device_add virtio-blk-pci) and NICs
 * (netdev_add, device_add virtio-net-pci), and their removal (device_del, DEVICE_DELETED, then the
 * backend). Each operation is a job of the VM. An attach is two pipelined batches of QMP commands
 * (QEMU runs the commands of one monitor in order, so a batch costs one round trip):
 *   prepare: [query-pci (q35)] [getfd (bridge)] netdev_add | blockdev-add file + format
 *   plug:    device_add, query-pci (the device is there)
 * The next batch is sent only when every reply of the previous one is in; any failure rolls back
 * what was added, one command at a time in reverse order, so QEMU is left exactly as it was. On
 * q35 a device goes into a spare pcie-root-port that both the daemon's bookkeeping and QEMU's
 * query-pci show as empty; the port is chosen before device_add is sent.
 */
#include "vm_private.h"

#include "argv.h"
#include "cfg.h"
#include "daemon.h"
#include "log.h"
#include "proc.h"
#include "qmp.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DETACH_TIMEOUT_MS 30000

/* Most commands one batch has in flight: query-pci, getfd, two blockdev-add. */
#define HP_MAX_CALLS 4

struct hp_op {
	struct vm *vm;
	bool detach;
	bool is_disk;
	struct cfg_disk disk;
	struct cfg_net net;
	bool persist;
	uint64_t create_size;
	/* Ids of this batch's commands; pending: how many are unanswered. */
	int64_t calls[HP_MAX_CALLS];
	size_t ncalls;
	unsigned pending;
	char port[16];
	bool have_port;
	/* What has been added so far, for rollback. */
	bool created, fd_sent, file_added, fmt_added, netdev_added;
	char fdname[48];
	int tapfd;
	/* qemu-img child */
	pid_t img_pid;
	int img_pidfd;
	struct event *img_ev;
	/* failure being rolled back */
	char *err_code;
	char *err_msg;
	/* plug: device_add succeeded; where query-pci shows it, or why it does not */
	bool plugged;
	bool port_moved; /* query-pci chose another port than the books did */
	char *pci_addr;
	char *confirm_err;
	/* detach */
	char *id;
	uint64_t timeout_ms;
	bool released; /* DEVICE_DELETED came: the backend is being deleted */
};

static void hp_rollback(struct hp_op *op);
static void hp_prepare(struct hp_op *op);
static void hp_prepared(struct hp_op *op);
static void hp_commit(struct hp_op *op);
static void hp_detached(struct hp_op *op);

static void
hp_free(struct hp_op *op)
{
	if (op == NULL)
		return;
	/* No reply may reach a freed op (e.g. a detach finished by DEVICE_DELETED, the daemon
	 * exiting mid-attach); answered ids are ignored by qmp_cancel. */
	for (size_t i = 0; op->vm->qmp && i < op->ncalls; i++)
		qmp_cancel(op->vm->qmp, op->calls[i]);
	if (op->img_ev) {
		event_free(op->img_ev);
		kill(op->img_pid, SIGKILL);
		waitpid(op->img_pid, NULL, 0);
		close(op->img_pidfd);
	}
	if (op->tapfd >= 0)
		close(op->tapfd);
	free(op->disk.id);
	free(op->disk.file);
	free(op->net.id);
	free(op->net.bridge);
	free(op->net.ifname);
	free(op->err_code);
	free(op->err_msg);
	free(op->pci_addr);
	free(op->confirm_err);
	free(op->id);
	free(op);
}

static struct hp_op *
hp_new(struct vm *vm)
{
	struct hp_op *op = xcalloc(1, sizeof *op);

	op->vm = vm;
	op->tapfd = -1;
	op->img_pidfd = -1;
	return op;
}

/* Ends the job with op's outcome and frees op; an attach's final state is written to the run
 * directory after the client has its answer. */
static void
hp_finish(struct hp_op *op, struct json_object *result, const char *code, const char *msg)
{
	struct vm *vm = op->vm;
	bool attach = !op->detach;

	if (vm->job && vm->job->op == op)
		vm->job->op = NULL;
	if (code)
		vm_job_finish(vm, NULL, code, "%s", msg);
	else
		vm_job_finish(vm, result, NULL, NULL);
	hp_free(op);
	if (attach)
		vm_devs_save(vm);
}

/* Records why the operation failed (the first failure is the one reported). */
static void
hp_verror(struct hp_op *op, const char *code, const char *fmt, va_list ap)
{
	if (op->err_msg != NULL)
		return;
	op->err_code = xstrdup(code);
	if (vasprintf(&op->err_msg, fmt, ap) < 0)
		fatal("out of memory");
}

static void hp_error(struct hp_op *op, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
hp_error(struct hp_op *op, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	hp_verror(op, code, fmt, ap);
	va_end(ap);
}

/* Outside a batch: records why and starts undoing. */
static void hp_fail(struct hp_op *op, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
hp_fail(struct hp_op *op, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	hp_verror(op, code, fmt, ap);
	va_end(ap);
	hp_rollback(op);
}

static const char *
reply_code(const struct qmp_reply *r)
{
	return r->status == QMP_ERROR     ? "qemu-error"
	       : r->status == QMP_TIMEOUT ? "timeout"
	                                  : "failed";
}

/* Starts a batch: the commands sent until the next call are answered together. */
static void
hp_batch(struct hp_op *op)
{
	op->ncalls = 0;
	op->pending = 0;
}

/* Sends a command of the current batch (fd >= 0: passed along); cb gets its reply. */
static bool
hp_send_fd(struct hp_op *op, const char *cmd, struct json_object *args, int fd, qmp_reply_cb cb)
{
	char *cause = NULL;
	int64_t id = -1;

	if (op->vm->qmp != NULL && op->ncalls < HP_MAX_CALLS)
		id = fd >= 0 ? qmp_execute_fd(op->vm->qmp, cmd, args, fd, 0, cb, op, &cause)
		             : qmp_execute(op->vm->qmp, cmd, args, 0, cb, op, &cause);
	json_object_put(args);
	free(cause);
	if (id <= 0)
		return false;
	op->calls[op->ncalls++] = id;
	op->pending++;
	return true;
}

static bool
hp_send(struct hp_op *op, const char *cmd, struct json_object *args, qmp_reply_cb cb)
{
	return hp_send_fd(op, cmd, args, -1, cb);
}

/* One reply of the batch is in (callbacks check op->pending == 0 for the last one). */
static void
hp_answered(struct hp_op *op)
{
	op->pending--;
}

/* A command of the batch could not be sent: the batch ends when the others are answered. */
static void
hp_send_failed(struct hp_op *op)
{
	hp_error(op, "failed", "vm %s: qmp connection lost", op->vm->name);
	if (op->pending == 0)
		hp_rollback(op);
}

static struct json_object *
obj1(const char *key, const char *value)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, key, json_object_new_string(value));
	return o;
}

/* The bookkeeping entry of the device being attached (NULL before hp_track). */
static struct vm_dev *
hp_dev(const struct hp_op *op)
{
	return vm_devs_find(op->vm, op->is_disk ? op->disk.id : op->net.id);
}

/* ---- rollback: undo in reverse order, then report the original failure ---- */

static void
rollback_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;

	hp_answered(op);
	if (r->status != QMP_OK)
		log_warn("vm %s: rollback of %s: %s failed: %s", op->vm->name,
		         op->is_disk ? op->disk.id : op->net.id, r->command, r->error_desc);
	hp_rollback(op);
}

static void
hp_rollback(struct hp_op *op)
{
	struct vm_dev *dev;
	char name[64];
	const char *id = op->is_disk ? op->disk.id : op->net.id;

	hp_batch(op);
	if (op->fmt_added) {
		op->fmt_added = false;
		snprintf(name, sizeof name, ARGV_NODE_FMT_FMT, id);
		if (hp_send(op, "blockdev-del", obj1("node-name", name), rollback_done))
			return;
	}
	if (op->file_added) {
		op->file_added = false;
		snprintf(name, sizeof name, ARGV_NODE_FILE_FMT, id);
		if (hp_send(op, "blockdev-del", obj1("node-name", name), rollback_done))
			return;
	}
	if (op->netdev_added) {
		op->netdev_added = false;
		snprintf(name, sizeof name, ARGV_NETDEV_FMT, id);
		if (hp_send(op, "netdev_del", obj1("id", name), rollback_done))
			return;
	}
	if (op->fd_sent) {
		op->fd_sent = false;
		if (hp_send(op, "closefd", obj1("fdname", op->fdname), rollback_done))
			return;
	}
	if (op->created) {
		op->created = false;
		if (unlink(op->disk.file) == 0)
			log_info("vm %s: removed image %s created for the failed attach",
			         op->vm->name, op->disk.file);
	}
	if (!op->detach && (dev = hp_dev(op)) != NULL && dev->attaching)
		vm_devs_remove(op->vm, dev);
	hp_finish(op, NULL, op->err_code, op->err_msg);
}

/* ---- attach steps ---- */

static void
img_done(evutil_socket_t fd, short what, void *arg)
{
	struct hp_op *op = arg;
	int status = 0;

	waitpid(op->img_pid, &status, 0);
	event_free(op->img_ev);
	op->img_ev = NULL;
	close(op->img_pidfd);
	op->img_pidfd = -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char *log = vm_state_path(op->vm, "qemu.log"), *tail = proc_file_tail(log, 0, 300);

		unlink(op->disk.file);
		hp_fail(op, "failed", "vm %s: qemu-img create %s failed: %s", op->vm->name,
		        op->disk.file, tail);
		free(log);
		free(tail);
		return;
	}
	op->created = true;
	log_info("vm %s: created image %s", op->vm->name, op->disk.file);
	hp_prepare(op);
}

static void
hp_create_image(struct hp_op *op)
{
	char *cause = NULL;
	long log_offset;

	op->img_pid = vm_spawn_qemu_img(op->vm, op->disk.file, op->disk.format, op->create_size,
	                                &log_offset, &op->img_pidfd, &cause);
	if (op->img_pid < 0) {
		hp_fail(op, "failed", "vm %s: %s", op->vm->name, cause);
		free(cause);
		return;
	}
	op->img_ev = event_new(op->vm->d->base, op->img_pidfd, EV_READ, img_done, op);
	event_add(op->img_ev, NULL);
}

/* Finds the device with qdev_id id in a query-pci bus list (recursing into bridges). */
static struct json_object *
pci_find(struct json_object *devices, const char *id, char *addr, size_t addrlen, int bus)
{
	for (size_t i = 0; devices && i < json_object_array_length(devices); i++) {
		struct json_object *d = json_object_array_get_idx(devices, i), *v, *br, *sub;

		if (json_object_object_get_ex(d, "qdev_id", &v) &&
		    strcmp(json_object_get_string(v), id) == 0) {
			int slot =
			    json_object_object_get_ex(d, "slot", &v) ? json_object_get_int(v) : 0;
			int fn = json_object_object_get_ex(d, "function", &v)
			             ? json_object_get_int(v)
			             : 0;

			snprintf(addr, addrlen, "%02x:%02x.%x", bus, slot, fn);
			return d;
		}
		if (json_object_object_get_ex(d, "pci_bridge", &br) &&
		    json_object_object_get_ex(br, "devices", &sub)) {
			struct json_object *b, *n;
			int secondary = 0;

			if (json_object_object_get_ex(br, "bus", &b) &&
			    json_object_object_get_ex(b, "secondary", &n))
				secondary = json_object_get_int(n);
			if ((v = pci_find(sub, id, addr, addrlen, secondary)) != NULL)
				return v;
		}
	}
	return NULL;
}

/* All devices in a query-pci result, flattened over its buses. */
static struct json_object *
pci_find_all(struct json_object *result, const char *id, char *addr, size_t addrlen)
{
	for (size_t i = 0; result && i < json_object_array_length(result); i++) {
		struct json_object *bus = json_object_array_get_idx(result, i), *devs, *v;
		int n = json_object_object_get_ex(bus, "bus", &v) ? json_object_get_int(v) : 0;

		if (json_object_object_get_ex(bus, "devices", &devs) &&
		    (v = pci_find(devs, id, addr, addrlen, n)) != NULL)
			return v;
	}
	return NULL;
}

/* Batch "prepare": the spare root ports, checked against QEMU's view (q35). */
static void
port_checked(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;
	unsigned slots = op->vm->live_cfg->hotplug_slots;
	struct vm_dev *tracked;
	bool *busy;
	char addr[16], chosen[16];

	hp_answered(op);
	if (r->status != QMP_OK) {
		hp_error(op, reply_code(r), "vm %s: query-pci failed: %s", op->vm->name,
		         r->error_desc);
		goto out;
	}
	/* QEMU's view: a spare port with a device behind it is taken, whatever our books say. */
	busy = xcalloc(slots + 1, sizeof *busy);
	for (unsigned n = 0; n < slots; n++) {
		char port[16];
		struct json_object *dev, *br, *devs;

		snprintf(port, sizeof port, ARGV_SPARE_PORT_FMT, n);
		dev = pci_find_all(r->result, port, addr, sizeof addr);
		if (dev && json_object_object_get_ex(dev, "pci_bridge", &br) &&
		    json_object_object_get_ex(br, "devices", &devs) &&
		    json_object_array_length(devs) > 0)
			busy[n] = true;
	}
	/* The port written down before asking is kept unless QEMU's view says otherwise. */
	tracked = hp_dev(op);
	if (tracked != NULL) {
		free(tracked->port);
		tracked->port = NULL;
	}
	if (vm_devs_free_port(op->vm, busy, chosen) < 0)
		hp_error(op, "failed",
		         "vm %s: no free hot-plug slot (all %u in use); raise hotplug_slots in %s "
		         "and restart the vm",
		         op->vm->name, slots, op->vm->cfg ? op->vm->cfg->path : "its definition");
	else
		op->have_port = true;
	if (op->have_port) {
		op->port_moved = strcmp(chosen, op->port) != 0;
		snprintf(op->port, sizeof op->port, "%s", chosen);
		if (tracked != NULL)
			tracked->port = xstrdup(chosen);
	}
	free(busy);
out:
	if (op->pending == 0)
		hp_prepared(op);
}

/* Batch "prepare": getfd, netdev_add, blockdev-add (file, then format). */
static void
backend_added(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;
	const char *id = op->is_disk ? op->disk.id : op->net.id;

	hp_answered(op);
	if (r->status != QMP_OK) {
		hp_error(op, reply_code(r), "vm %s: %s %s failed: %s", op->vm->name, r->command, id,
		         r->error_desc);
	} else if (strcmp(r->command, "getfd") == 0) {
		op->fd_sent = true;
	} else if (strcmp(r->command, "netdev_add") == 0) {
		op->fd_sent = false; /* the netdev owns the fd now */
		op->netdev_added = true;
	} else if (op->file_added) {
		op->fmt_added = true;
	} else {
		op->file_added = true;
	}
	if (op->pending == 0)
		hp_prepared(op);
}

/* Every reply of "plug" is in: report, or undo when device_add failed. */
static void
hp_plugged(struct hp_op *op)
{
	if (!op->plugged) {
		hp_rollback(op); /* device_added recorded why */
		return;
	}
	if (op->pci_addr != NULL) {
		hp_commit(op);
		return;
	}
	/* Plugged but not confirmed: the device stays tracked (detach removes it). */
	hp_finish(op, NULL, "failed",
	          op->confirm_err ? op->confirm_err
	          : op->err_msg   ? op->err_msg
	                          : "device_add succeeded but query-pci was not answered");
}

/* Batch "plug": device_add. */
static void
device_added(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;
	struct vm *vm = op->vm;
	struct vm_dev *dev;

	hp_answered(op);
	if (r->status != QMP_OK) {
		hp_error(op, reply_code(r), "vm %s: device_add %s failed: %s", vm->name,
		         op->is_disk ? op->disk.id : op->net.id, r->error_desc);
	} else {
		/* From here on the device is the guest's, removed only by detach. The run
		 * directory says "attaching" until the client has its answer: a qvmd that dies in
		 * between finds the device in query-pci and keeps it. */
		if ((dev = hp_dev(op)) != NULL)
			dev->attaching = dev->created = false;
		op->file_added = op->fmt_added = op->netdev_added = op->created = false;
		op->plugged = true;
	}
	if (op->pending == 0)
		hp_plugged(op);
}

/* Batch "plug": the query-pci behind device_add shows the device. */
static void
confirmed(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;
	const char *id = op->is_disk ? op->disk.id : op->net.id;
	char addr[16];

	hp_answered(op);
	if (r->status == QMP_OK && pci_find_all(r->result, id, addr, sizeof addr) != NULL)
		op->pci_addr = xstrdup(addr);
	else
		op->confirm_err =
		    xstrdup(r->status == QMP_OK
		                ? "device_add succeeded but query-pci does not show the device"
		                : r->error_desc);
	if (op->pending == 0)
		hp_plugged(op);
}

/* Persists the device (when asked) and reports success. */
static void
hp_commit(struct hp_op *op)
{
	struct vm *vm = op->vm;
	struct json_object *res;
	struct vm_dev *dev = vm_devs_find(vm, op->is_disk ? op->disk.id : op->net.id);
	char *cause = NULL;
	bool persisted = false;

	if (op->persist && vm->cfg != NULL) {
		int rc = op->is_disk ? cfg_write_add_disk(vm->cfg->path, &op->disk, &cause)
		                     : cfg_write_add_net(vm->cfg->path, &op->net, &cause);

		if (rc < 0) {
			char *msg = xasprintf("vm %s: %s attached, but not persisted: %s", vm->name,
			                      op->is_disk ? op->disk.id : op->net.id, cause);

			free(cause);
			hp_finish(op, NULL, "failed", msg);
			free(msg);
			return;
		}
		vm_reload_definition(vm, true);
		persisted = true;
	}
	log_info("vm %s: attached %s %s%s%s", vm->name, op->is_disk ? "disk" : "nic",
	         op->is_disk ? op->disk.id : op->net.id, op->have_port ? " on " : "",
	         op->have_port ? op->port : "");
	res = dev ? vm_dev_json(dev) : json_object_new_object();
	json_object_object_add(res, "pci_addr",
	                       op->pci_addr ? json_object_new_string(op->pci_addr) : NULL);
	json_object_object_add(res, "live", json_object_new_boolean(1));
	json_object_object_add(res, "persistent", json_object_new_boolean(persisted));
	hp_finish(op, res, NULL, NULL);
}

/* Tracks the device from now on, as "attaching": a qvmd that goes away before the end finds it
 * in devices.json and finishes or undoes the attach (vm_hotplug_reconcile). On q35 it gets the
 * port our books give, so that the record is complete; query-pci then checks it. */
static void
hp_track(struct hp_op *op)
{
	struct vm *vm = op->vm;
	struct vm_dev *dev;

	dev = op->is_disk ? vm_dev_new_disk(&op->disk, NULL) : vm_dev_new_net(&op->net, NULL);
	dev->attaching = true;
	dev->created = op->create_size > 0;
	if (vm->live_cfg->machine == CFG_MACHINE_Q35) {
		if (vm_devs_free_port(vm, NULL, op->port) >= 0)
			dev->port = xstrdup(op->port);
		else
			op->port[0] = '\0';
	}
	vm_devs_add(vm, dev);
}

/* Sends batch "prepare". */
static void
hp_prepare(struct hp_op *op)
{
	struct vm *vm = op->vm;
	bool bridge = !op->is_disk && op->net.type == CFG_NET_BRIDGE;
	bool sent = true;

	hp_batch(op);
	if (vm->live_cfg->machine == CFG_MACHINE_Q35)
		sent = hp_send(op, "query-pci", NULL, port_checked);
	/* The record goes to disk before any backend is sent (QEMU meanwhile runs query-pci). */
	vm_devs_save(vm);
	if (sent && bridge) {
		snprintf(op->fdname, sizeof op->fdname, "%s.tap", op->net.id);
		sent =
		    hp_send_fd(op, "getfd", obj1("fdname", op->fdname), op->tapfd, backend_added);
	}
	if (sent && op->is_disk)
		sent =
		    hp_send(op, "blockdev-add", argv_blockdev_file_json(&op->disk),
		            backend_added) &&
		    hp_send(op, "blockdev-add", argv_blockdev_fmt_json(&op->disk), backend_added);
	else if (sent)
		sent =
		    hp_send(op, "netdev_add",
		            argv_netdev_json(&op->net, bridge ? op->fdname : NULL), backend_added);
	if (!sent)
		hp_send_failed(op);
}

/* Every reply of "prepare" is in: plug the device, or undo. */
static void
hp_prepared(struct hp_op *op)
{
	const char *bus = op->have_port ? op->port : NULL;

	if (op->tapfd >= 0) {
		close(op->tapfd);
		op->tapfd = -1;
	}
	if (op->err_msg != NULL) {
		hp_rollback(op);
		return;
	}
	hp_batch(op);
	if (!hp_send(op, "device_add",
	             op->is_disk ? argv_disk_device_json(&op->disk, bus)
	                         : argv_net_device_json(&op->net, bus),
	             device_added)) {
		hp_send_failed(op);
		return;
	}
	if (!hp_send(op, "query-pci", NULL, confirmed)) {
		hp_send_failed(op);
		return;
	}
	if (op->port_moved)
		vm_devs_save(op->vm); /* while QEMU runs device_add */
}

/* ---- validation ---- */

/* Whether path (or, for a file still to be created, its directory) lies below an image dir. */
static bool
path_allowed(const struct vm *vm, const char *path, bool create)
{
	char real[PATH_MAX], *dir = NULL;
	bool ok = false;

	if (create) {
		char *slash;

		dir = xstrdup(path);
		slash = strrchr(dir, '/');
		if (slash == NULL || slash == dir) {
			free(dir);
			return false;
		}
		*slash = '\0';
		if (realpath(dir, real) == NULL) {
			free(dir);
			return false;
		}
		free(dir);
	} else if (realpath(path, real) == NULL) {
		return false;
	}
	for (char **d = vm->d->conf->image_dirs; d && *d && !ok; d++) {
		char rd[PATH_MAX];
		size_t n;

		if (realpath(*d, rd) == NULL)
			continue;
		n = strlen(rd);
		ok = strncmp(real, rd, n) == 0 && (real[n] == '/' || (create && real[n] == '\0'));
	}
	return ok;
}

/* Checks an image file: readable, and of the format it is said to be. */
static char *
check_image(const char *file, enum cfg_format format)
{
	unsigned char magic[4];
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	bool qcow2;

	if (fd < 0)
		return xasprintf("%s: %s", file, strerror(errno));
	n = read(fd, magic, sizeof magic);
	close(fd);
	qcow2 = n == 4 && memcmp(magic, "QFI\xfb", 4) == 0;
	if (format == CFG_FORMAT_QCOW2 && !qcow2)
		return xasprintf("%s is not a qcow2 image (use --format raw for raw images)", file);
	if (format == CFG_FORMAT_RAW && qcow2)
		return xasprintf(
		    "%s is a qcow2 image: attaching it as raw would expose its metadata "
		    "(use --format qcow2)",
		    file);
	return NULL;
}

static bool
refuse(vm_done_cb cb, void *arg, const char *code, char *msg)
{
	cb(NULL, code, msg, arg);
	free(msg);
	return true;
}

/* Checks an id against the live devices and the definition. */
static bool
refuse_id(struct vm *vm, const char *id, vm_done_cb cb, void *arg)
{
	if (!cfg_valid_device_id(id))
		return refuse(
		    cb, arg, "invalid",
		    xasprintf("vm %s: '%s' is not a valid device id ([a-zA-Z][a-zA-Z0-9_-], "
		              "at most %d characters)",
		              vm->name, id, CFG_ID_MAX));
	if ((vm_is_active(vm) && vm_devs_find(vm, id)) ||
	    (vm->cfg && (cfg_vm_disk(vm->cfg, id) || cfg_vm_net(vm->cfg, id))))
		return refuse(cb, arg, "invalid",
		              xasprintf("vm %s: device id '%s' is already in use", vm->name, id));
	return false;
}

/* Stopped VM: with --persist only the definition changes; without it there is nothing to do. */
static bool
refuse_stopped(struct vm *vm, bool persist, vm_done_cb cb, void *arg)
{
	if (vm_is_active(vm) && vm->state != VM_RUNNING && vm->state != VM_PAUSED)
		return refuse(
		    cb, arg, "busy",
		    xasprintf("vm %s: busy: it is %s", vm->name, vm_state_name(vm->state)));
	if (!vm_is_active(vm) && !persist)
		return refuse(
		    cb, arg, "not-running",
		    xasprintf("vm %s: not running; use --persist to change its definition",
		              vm->name));
	if (!vm_is_active(vm) && vm->cfg == NULL)
		return refuse(cb, arg, "not-found",
		              xasprintf("vm %s: definition was removed", vm->name));
	return false;
}

static void
persist_only_result(struct vm *vm, const char *id, bool attached, vm_done_cb cb, void *arg)
{
	struct json_object *res = json_object_new_object();

	vm_reload_definition(vm, false);
	json_object_object_add(res, "id", json_object_new_string(id));
	json_object_object_add(res, "live", json_object_new_boolean(0));
	json_object_object_add(res, "persistent", json_object_new_boolean(attached));
	cb(res, NULL, NULL, arg);
}

void
vm_attach_disk(struct vm *vm, const struct cfg_disk *disk, uint64_t create_size, bool persist,
               vm_done_cb cb, void *arg)
{
	struct hp_op *op;
	char *why;

	if (vm->job && refuse(cb, arg, "busy",
	                      xasprintf("vm %s: busy: another operation is in progress", vm->name)))
		return;
	if (refuse_stopped(vm, persist, cb, arg) || refuse_id(vm, disk->id, cb, arg))
		return;
	if (create_size == 0 && access(disk->file, F_OK) < 0) {
		refuse(cb, arg, "invalid",
		       xasprintf("vm %s: %s: %s", vm->name, disk->file, strerror(errno)));
		return;
	}
	if (disk->file[0] != '/' || !path_allowed(vm, disk->file, create_size > 0)) {
		refuse(
		    cb, arg, "denied",
		    xasprintf("vm %s: %s is not below an image directory qvmd may use (image_dirs "
		              "in qvmd.conf)",
		              vm->name, disk->file));
		return;
	}
	if (create_size > 0 && access(disk->file, F_OK) == 0) {
		refuse(cb, arg, "invalid",
		       xasprintf("vm %s: %s already exists (drop --create to attach it)", vm->name,
		                 disk->file));
		return;
	}
	if (create_size == 0 && (why = check_image(disk->file, disk->format)) != NULL) {
		refuse(cb, arg, "invalid", xasprintf("vm %s: %s", vm->name, why));
		free(why);
		return;
	}
	if (!vm_is_active(vm)) {
		struct cfg_disk d = *disk;
		char *cause = NULL;

		d.size = create_size;
		if (cfg_write_add_disk(vm->cfg->path, &d, &cause) < 0) {
			refuse(cb, arg, "invalid", xasprintf("vm %s: %s", vm->name, cause));
			free(cause);
			return;
		}
		log_info("vm %s: disk %s added to the definition", vm->name, disk->id);
		persist_only_result(vm, disk->id, true, cb, arg);
		return;
	}
	op = hp_new(vm);
	op->is_disk = true;
	op->disk = *disk;
	op->disk.id = xstrdup(disk->id);
	op->disk.file = xstrdup(disk->file);
	op->disk.boot = false;
	op->disk.size = 0;
	op->persist = persist;
	op->create_size = create_size;
	vm_job_start(vm, VM_JOB_ATTACH, cb, arg)->op = op;
	hp_track(op);
	if (create_size > 0) {
		vm_devs_save(vm); /* before the image exists */
		hp_create_image(op);
	} else {
		hp_prepare(op);
	}
}

void
vm_attach_net(struct vm *vm, const struct cfg_net *net, bool persist, vm_done_cb cb, void *arg)
{
	struct hp_op *op;
	struct cfg_net n = *net;
	char *cause = NULL;

	if (vm->job && refuse(cb, arg, "busy",
	                      xasprintf("vm %s: busy: another operation is in progress", vm->name)))
		return;
	if (refuse_stopped(vm, persist, cb, arg) || refuse_id(vm, net->id, cb, arg))
		return;
	if (!n.mac_given)
		cfg_mac_derive(vm->name, net->id, n.mac);
	for (size_t i = 0; vm_is_active(vm) && i < vm->ndevs; i++) {
		if (!vm->devs[i]->is_disk && memcmp(vm->devs[i]->net.mac, n.mac, 6) == 0) {
			char mac[18];

			cfg_mac_format(n.mac, mac);
			refuse(cb, arg, "invalid",
			       xasprintf("vm %s: mac %s is already used by nic %s", vm->name, mac,
			                 vm->devs[i]->id));
			return;
		}
	}
	if (n.type == CFG_NET_TAP && (n.ifname == NULL || n.bridge != NULL)) {
		refuse(cb, arg, "invalid",
		       xasprintf("vm %s: a tap nic needs --ifname (and no --bridge)", vm->name));
		return;
	}
	if (n.type == CFG_NET_BRIDGE && n.bridge == NULL) {
		refuse(cb, arg, "invalid",
		       xasprintf("vm %s: a bridge nic needs --bridge", vm->name));
		return;
	}
	if (n.type == CFG_NET_USER && (n.bridge || n.ifname)) {
		refuse(cb, arg, "invalid",
		       xasprintf("vm %s: --bridge and --ifname are for tap and bridge nics",
		                 vm->name));
		return;
	}
	n.mac_given = true; /* keep the MAC it got, also when persisted */
	if (!vm_is_active(vm)) {
		if (cfg_write_add_net(vm->cfg->path, &n, &cause) < 0) {
			refuse(cb, arg, "invalid", xasprintf("vm %s: %s", vm->name, cause));
			free(cause);
			return;
		}
		log_info("vm %s: nic %s added to the definition", vm->name, net->id);
		persist_only_result(vm, net->id, true, cb, arg);
		return;
	}
	op = hp_new(vm);
	op->net = n;
	op->net.id = xstrdup(n.id);
	op->net.bridge = n.bridge ? xstrdup(n.bridge) : NULL;
	op->net.ifname = n.ifname ? xstrdup(n.ifname) : NULL;
	op->persist = persist;
	if (n.type == CFG_NET_BRIDGE) {
		op->tapfd = vm_tap_open(n.ifname, n.bridge, &cause);
		if (op->tapfd < 0) {
			refuse(cb, arg, "failed",
			       xasprintf("vm %s: nic %s: %s", vm->name, n.id, cause));
			free(cause);
			hp_free(op);
			return;
		}
	}
	vm_job_start(vm, VM_JOB_ATTACH, cb, arg)->op = op;
	hp_track(op);
	hp_prepare(op);
}

/* ---- detach ---- */

/* A backend deletion nobody waits for (a removal that completes after its detach timed out). */
static void
backend_del_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	char *what = arg;

	if (r->status != QMP_OK && r->status != QMP_DISCONNECTED)
		log_warn("%s failed: %s", what, r->error_desc);
	free(what);
}

/* Detach: one backend deletion answered; the job ends with the last one. */
static void
backend_deleted(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;

	hp_answered(op);
	/* A QEMU that went away took the backend with it. */
	if (r->status != QMP_OK && r->status != QMP_DISCONNECTED)
		hp_error(op, reply_code(r), "vm %s: %s removed from the guest, but %s failed: %s",
		         op->vm->name, op->id, r->command, r->error_desc);
	if (op->pending == 0)
		hp_detached(op);
}

/* Sends a deletion nobody waits for; cb reports its outcome (and frees its description). */
static void
del_unwaited(struct vm *vm, const char *cmd, const char *key, const char *name, qmp_reply_cb cb)
{
	struct json_object *args = obj1(key, name);
	char *what = xasprintf("vm %s: %s %s", vm->name, cmd, name), *cause = NULL;

	if (qmp_execute(vm->qmp, cmd, args, 0, cb, what, &cause) < 0)
		free(what);
	json_object_put(args);
	free(cause);
}

/* Deletes one backend object: as part of op (detach waiting for it), or on its own. */
static void
backend_del(struct vm *vm, struct hp_op *op, const char *cmd, const char *key, const char *name)
{
	if (op != NULL) {
		if (!hp_send(op, cmd, obj1(key, name), backend_deleted))
			hp_error(op, "failed",
			         "vm %s: %s removed from the guest, but %s %s: qmp "
			         "connection lost",
			         vm->name, op->id, cmd, name);
		return;
	}
	del_unwaited(vm, cmd, key, name, backend_del_done);
}

/* The guest released the device: remove its backend (op: the detach waiting for it), free its
 * port, update the definition. */
static void
dev_released(struct vm *vm, struct vm_dev *dev, struct hp_op *op)
{
	char name[64], *cause = NULL;
	const char *id = dev->id;

	if (vm->qmp) {
		if (dev->is_disk) {
			snprintf(name, sizeof name, ARGV_NODE_FMT_FMT, id);
			backend_del(vm, op, "blockdev-del", "node-name", name);
			snprintf(name, sizeof name, ARGV_NODE_FILE_FMT, id);
			backend_del(vm, op, "blockdev-del", "node-name", name);
		} else {
			snprintf(name, sizeof name, ARGV_NETDEV_FMT, id);
			backend_del(vm, op, "netdev_del", "id", name);
		}
	}
	if (dev->persist_removal && vm->cfg &&
	    (cfg_vm_disk(vm->cfg, id) || cfg_vm_net(vm->cfg, id))) {
		if (cfg_write_remove_device(vm->cfg->path, id, &cause) < 0) {
			log_error("vm %s: %s removed, but not from the definition: %s", vm->name,
			          id, cause);
			free(cause);
		} else {
			vm_reload_definition(vm, true);
		}
	}
	log_info("vm %s: %s %s removed%s%s", vm->name, dev->is_disk ? "disk" : "nic", id,
	         dev->port ? ", port " : "", dev->port ? dev->port : "");
	vm_devs_remove(vm, dev);
	vm_devs_save(vm);
}

/* Detach: the guest let go and every backend deletion is answered. */
static void
hp_detached(struct hp_op *op)
{
	struct vm *vm = op->vm;
	struct json_object *res;

	if (op->err_msg != NULL) {
		hp_finish(op, NULL, op->err_code, op->err_msg);
		return;
	}
	res = json_object_new_object();
	json_object_object_add(res, "id", json_object_new_string(op->id));
	json_object_object_add(res, "removed", json_object_new_boolean(1));
	json_object_object_add(
	    res, "persistent",
	    json_object_new_boolean(!op->persist && vm->cfg &&
	                            (cfg_vm_disk(vm->cfg, op->id) || cfg_vm_net(vm->cfg, op->id))));
	hp_finish(op, res, NULL, NULL);
}

void
vm_hotplug_event(struct vm *vm, const char *name, struct json_object *data)
{
	struct json_object *v;
	struct vm_dev *dev;
	struct hp_op *op = vm->job ? vm->job->op : NULL;

	/* Each virtio device_del brings two DEVICE_DELETED: only the second names the device. */
	if (strcmp(name, "DEVICE_DELETED") != 0 || !json_object_object_get_ex(data, "device", &v))
		return;
	dev = vm_devs_find(vm, json_object_get_string(v));
	if (dev == NULL)
		return;
	if (op == NULL || !op->detach || op->released || strcmp(op->id, dev->id) != 0) {
		dev_released(vm, dev, NULL); /* e.g. a removal left pending by an earlier detach */
		return;
	}
	/* The deletions join device_del's batch if its reply is still to come. */
	op->released = true;
	dev_released(vm, dev, op);
	if (op->pending == 0)
		hp_detached(op);
}

static void
device_del_sent(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;
	struct vm_dev *dev = vm_devs_find(op->vm, op->id);
	char *msg;

	hp_answered(op);
	if (r->status != QMP_OK) {
		msg = xasprintf("vm %s: device_del %s failed: %s", op->vm->name, op->id,
		                r->error_desc);
		hp_finish(op, NULL, reply_code(r), msg);
		free(msg);
		return;
	}
	if (dev != NULL && !dev->pending_removal) {
		dev->pending_removal = true;
		vm_devs_save(op->vm);
	}
	if (op->released && op->pending == 0) /* DEVICE_DELETED came before this reply */
		hp_detached(op);
}

/* The guest did not let go in time: the device stays "removal pending" until it does. */
void
vm_detach_timeout(struct vm *vm)
{
	struct hp_op *op = vm->job ? vm->job->op : NULL;
	char *msg;

	if (op == NULL || !op->detach)
		return;
	if (op->released) {
		msg = xasprintf("vm %s: %s removed from the guest, but QEMU did not confirm the "
		                "deletion of its backend within %" PRIu64 " ms",
		                vm->name, op->id, op->timeout_ms);
		hp_finish(op, NULL, "timeout", msg);
		free(msg);
		return;
	}
	msg = xasprintf("vm %s: device %s: the guest did not release it within %" PRIu64
	                " ms; removal pending (completes when the guest lets go)",
	                vm->name, op->id, op->timeout_ms);
	hp_finish(op, NULL, "timeout", msg);
	free(msg);
}

void
vm_detach_device(struct vm *vm, const char *id, bool persist, uint64_t timeout_ms, vm_done_cb cb,
                 void *arg)
{
	struct hp_op *op;
	struct vm_dev *dev;
	char *cause = NULL;

	if (vm->job && refuse(cb, arg, "busy",
	                      xasprintf("vm %s: busy: another operation is in progress", vm->name)))
		return;
	if (refuse_stopped(vm, persist, cb, arg))
		return;
	if (!vm_is_active(vm)) {
		if (cfg_write_remove_device(vm->cfg->path, id, &cause) < 0) {
			refuse(cb, arg, "not-found", xasprintf("vm %s: %s", vm->name, cause));
			free(cause);
			return;
		}
		log_info("vm %s: %s removed from the definition", vm->name, id);
		persist_only_result(vm, id, false, cb, arg);
		return;
	}
	dev = vm_devs_find(vm, id);
	if (dev == NULL) {
		refuse(cb, arg, "not-found", xasprintf("vm %s: no device '%s'", vm->name, id));
		return;
	}
	if (dev->pending_removal) {
		refuse(
		    cb, arg, "busy",
		    xasprintf("vm %s: device %s: removal already pending (waiting for the guest)",
		              vm->name, id));
		return;
	}
	op = hp_new(vm);
	op->detach = true;
	op->id = xstrdup(id);
	op->persist = persist;
	op->timeout_ms = timeout_ms ? timeout_ms : DETACH_TIMEOUT_MS;
	dev->persist_removal = persist;
	vm_job_start(vm, VM_JOB_DETACH, cb, arg)->op = op;
	vm_job_arm_timer(vm, op->timeout_ms);
	hp_batch(op);
	if (!hp_send(op, "device_del", obj1("id", id), device_del_sent))
		hp_finish(op, NULL, "failed", "qmp connection lost");
}

/* The operation in flight ends unanswered: QEMU went away (qemu_gone: an image made for the
 * attach is removed), or qvmd is exiting (devices.json keeps an attach as "attaching": the next
 * qvmd finishes or undoes it). */
void
vm_hotplug_abort(struct vm *vm, bool qemu_gone)
{
	struct hp_op *op = vm->job ? vm->job->op : NULL;

	if (op == NULL)
		return;
	vm->job->op = NULL;
	if (qemu_gone && op->created && op->disk.file)
		unlink(op->disk.file);
	hp_free(op);
}

/* ---- after a daemon restart ---- */

static void
undo_del_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	char *what = arg;

	if (r->status != QMP_OK) /* expected: the attach may not have got that far */
		log_debug("%s: %s", what, r->error_desc);
	free(what);
}

/* Deletes what an interrupted attach may have added (some of it usually is not there). */
static void
undo_attach(struct vm *vm, struct vm_dev *dev)
{
	char name[64];

	log_warn("vm %s: %s %s: its attach was interrupted by qvmd going away; undoing it",
	         vm->name, dev->is_disk ? "disk" : "nic", dev->id);
	if (dev->is_disk) {
		snprintf(name, sizeof name, ARGV_NODE_FMT_FMT, dev->id);
		del_unwaited(vm, "blockdev-del", "node-name", name, undo_del_done);
		snprintf(name, sizeof name, ARGV_NODE_FILE_FMT, dev->id);
		del_unwaited(vm, "blockdev-del", "node-name", name, undo_del_done);
		if (dev->created && unlink(dev->disk.file) == 0)
			log_info("vm %s: removed image %s created for it", vm->name,
			         dev->disk.file);
	} else {
		snprintf(name, sizeof name, ARGV_NETDEV_FMT, dev->id);
		del_unwaited(vm, "netdev_del", "id", name, undo_del_done);
		if (dev->net.type == CFG_NET_BRIDGE) {
			snprintf(name, sizeof name, "%s.tap", dev->id);
			del_unwaited(vm, "closefd", "fdname", name, undo_del_done);
		}
	}
	vm_devs_remove(vm, dev);
}

/* Whether a qom-list of /machine/peripheral has the device with this id. */
static bool
peripheral_has(struct json_object *props, const char *id)
{
	for (size_t i = 0; props && i < json_object_array_length(props); i++) {
		struct json_object *p = json_object_array_get_idx(props, i), *v;

		if (json_object_object_get_ex(p, "name", &v) &&
		    strcmp(json_object_get_string(v), id) == 0 &&
		    json_object_object_get_ex(p, "type", &v) &&
		    strncmp(json_object_get_string(v), "child<", 6) == 0)
			return true;
	}
	return false;
}

static void
reconcile_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm *vm = arg;
	bool changed = false;

	if (r->status != QMP_OK) {
		log_warn("vm %s: cannot check its devices after re-attach: qom-list: %s", vm->name,
		         r->error_desc);
		return;
	}
	for (size_t i = vm->ndevs; i-- > 0;) {
		struct vm_dev *dev = vm->devs[i];
		bool present = peripheral_has(r->result, dev->id);

		if (dev->cold && !dev->pending_removal)
			continue;
		if (dev->attaching && present) {
			log_info("vm %s: %s %s: its attach completed while qvmd was away", vm->name,
			         dev->is_disk ? "disk" : "nic", dev->id);
			dev->attaching = dev->created = false;
			changed = true;
		} else if (dev->attaching) {
			undo_attach(vm, dev);
			changed = true;
		} else if (!present) {
			/* DEVICE_DELETED came while nobody listened: finish the removal now. */
			log_info("vm %s: %s left the guest while qvmd was away", vm->name, dev->id);
			dev_released(vm, dev, NULL);
		}
	}
	if (changed)
		vm_devs_save(vm);
}

/* A re-attached VM: its devices.json against the devices QEMU has (attaches interrupted by qvmd
 * going away, removals completed while it was away). QOM's /machine/peripheral, not query-pci:
 * query-pci does not list the devices behind a bridge the guest has not numbered yet (firmware
 * running after a reset), and they are there all the same. */
void
vm_hotplug_reconcile(struct vm *vm)
{
	struct json_object *args;
	char *cause = NULL;
	bool hotplugged = false;
	int64_t id;

	for (size_t i = 0; i < vm->ndevs && !hotplugged; i++)
		hotplugged = !vm->devs[i]->cold || vm->devs[i]->pending_removal;
	if (!hotplugged || vm->qmp == NULL)
		return;
	args = obj1("path", "/machine/peripheral");
	id = qmp_execute(vm->qmp, "qom-list", args, 0, reconcile_done, vm, &cause);
	json_object_put(args);
	if (id < 0) {
		log_warn("vm %s: cannot check its devices after re-attach: %s", vm->name, cause);
		free(cause);
	}
}

/* ---- devices ---- */

struct devices_query {
	struct vm *vm;
	vm_done_cb cb;
	void *arg;
};

static void
devices_reply(struct vm *vm, struct json_object *pci, vm_done_cb cb, void *arg)
{
	struct json_object *res = json_object_new_object(), *arr = json_object_new_array();
	const struct vm_config *cfg = vm->cfg;
	bool active = vm_is_active(vm);
	char addr[16];

	for (size_t i = 0; active && i < vm->ndevs; i++) {
		struct vm_dev *dev = vm->devs[i];
		struct json_object *o = vm_dev_json(dev);

		json_object_object_add(o, "pci_addr",
		                       pci && pci_find_all(pci, dev->id, addr, sizeof addr)
		                           ? json_object_new_string(addr)
		                           : NULL);
		json_object_object_add(o, "live", json_object_new_boolean(1));
		json_object_object_add(o, "persistent",
		                       json_object_new_boolean(cfg && (cfg_vm_disk(cfg, dev->id) ||
		                                                       cfg_vm_net(cfg, dev->id))));
		json_object_array_add(arr, o);
	}
	for (size_t i = 0; cfg && i < cfg->ndisks + cfg->nnets; i++) {
		bool is_disk = i < cfg->ndisks;
		const char *id = is_disk ? cfg->disks[i].id : cfg->nets[i - cfg->ndisks].id;
		struct vm_dev *dev;
		struct json_object *o;

		if (active && vm_devs_find(vm, id))
			continue;
		dev = is_disk ? vm_dev_new_disk(&cfg->disks[i], NULL)
		              : vm_dev_new_net(&cfg->nets[i - cfg->ndisks], NULL);
		o = vm_dev_json(dev);
		vm_dev_free(dev);
		json_object_object_add(o, "pci_addr", NULL);
		json_object_object_add(o, "live", json_object_new_boolean(0));
		json_object_object_add(o, "persistent", json_object_new_boolean(1));
		json_object_array_add(arr, o);
	}
	json_object_object_add(res, "devices", arr);
	cb(res, NULL, NULL, arg);
}

static void
devices_pci_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct devices_query *q = arg;

	devices_reply(q->vm, r->status == QMP_OK ? r->result : NULL, q->cb, q->arg);
	free(q);
}

void
vm_devices(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct devices_query *q;
	char *cause = NULL;

	if (vm->qmp == NULL || vm->qmp_closed || !qmp_conn_is_ready(vm->qmp)) {
		devices_reply(vm, NULL, cb, arg);
		return;
	}
	q = xcalloc(1, sizeof *q);
	q->vm = vm;
	q->cb = cb;
	q->arg = arg;
	if (qmp_execute(vm->qmp, "query-pci", NULL, 2000, devices_pci_done, q, &cause) < 0) {
		free(cause);
		free(q);
		devices_reply(vm, NULL, cb, arg);
	}
}
