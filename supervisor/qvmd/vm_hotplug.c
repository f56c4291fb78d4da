/*
 * Hot-plug of disks (add-fd, blockdev-add file + format node, device_add virtio-blk-pci) and NICs
 * (netdev_add, device_add virtio-net-pci), and their removal (device_del, DEVICE_DELETED, then the
 * backend). Each operation is a job of the VM. An attach is pipelined batches of QMP commands
 * (QEMU runs the commands of one monitor in order, so a batch costs one round trip):
 *   prepare: [qom-list PORT's bus (q35)] [getfd (bridge)] netdev_add | add-fd per image
 *   nodes:   (disk) add-fd of the O_RDONLY descriptor of a writable image, blockdev-add file +
 *            format node per image of its chain, backing files first
 *   plug:    device_add, qom-get ID parent_bus (the device is there), query-pci (its address)
 * QEMU opens no image by name: qvmd opens the disk's image and its backing chain (vm_disks.c) and
 * sends the descriptors with add-fd, one fdset per image, QEMU choosing the set's id (so no id
 * qvmd chose can collide with one, also after a daemon restart); each set's opaque string is its
 * file node's name, which is how a detach (or a restarted qvmd) finds the sets of a disk in
 * query-fdsets and removes them (remove-fd) once its nodes are deleted.
 * The next batch is sent only when every reply of the previous one is in; any failure rolls back
 * what was added, one command at a time in reverse order, so QEMU is left exactly as it was. On
 * q35 a device goes into a spare pcie-root-port that both the daemon's bookkeeping and QEMU's
 * device model show as empty; the port is chosen before device_add is sent (a port QEMU shows
 * taken costs one more qom-list round trip for the next one).
 *
 * QEMU's device model (QOM), not query-pci, is the proof that a device exists and where:
 * query-pci lists a device behind a root port only once the guest firmware has numbered that
 * port's bus, which is not yet the case right after start or reset, nor while paused. The PCI
 * address is extra information, null until the firmware has run.
 *
 * The record in devices.json is written before anything is sent to QEMU: an attach or detach
 * whose record cannot be written is refused with QEMU untouched.
 */
#include "vm_job.h"
#include "vm_private.h"

#include "argv.h"
#include "cfg.h"
#include "imgchain.h"
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

#define DETACH_TIMEOUT_MS VM_DETACH_TIMEOUT_MS

/* Images of one disk: its own and its backing files. */
#define HP_MAX_IMAGES (IMGCHAIN_DEPTH_MAX + 1)
/* Most commands one batch has in flight: a detach's device_del, then per image two blockdev-del
 * and a remove-fd, and query-fdsets. */
#define HP_MAX_CALLS (4 + 4 * HP_MAX_IMAGES)

/* One step's undo: a QMP command with one argument (blockdev-del node-name=..., netdev_del
 * id=..., closefd fdname=..., remove-fd fdset-id=N (numeric)), or, with command NULL, removing a
 * file the step made. */
struct hp_undo {
	const char *command;
	const char *key;
	char *value;
	bool numeric; /* value is an integer */
};

struct hp_op;

/* A command of the current batch; its reply pushes its undo when QEMU accepted it. */
struct hp_call {
	struct hp_op *op;
	int64_t id;
	qmp_reply_cb next;   /* the step's own handling of the reply (arg: the op) */
	struct hp_undo undo; /* command NULL and value NULL: nothing to undo */
	bool drops_fd;       /* netdev_add with a passed fd: the netdev owns the fd from now on */
	size_t image;        /* add-fd: the image of the chain it passes */
};

struct hp_op {
	struct vm *vm;
	struct vm_job *job; /* the job carrying the operation (it owns the op) */
	bool detach;
	bool is_disk;
	struct cfg_disk disk;
	struct cfg_net net;
	bool persist;
	uint64_t create_size;
	/* This batch's commands; pending: how many are unanswered. */
	struct hp_call calls[HP_MAX_CALLS];
	size_t ncalls;
	const struct hp_call *current; /* the call whose reply is being handled */
	unsigned pending;
	/* What the operation added to QEMU (and the host) so far, newest last: the steps that undo
	 * it, run in reverse order by hp_rollback. */
	struct hp_undo *undo;
	size_t nundo;
	/* Told the outcome (result taken; code PROTO_OK on success) once the operation is over. */
	void (*done)(struct hp_op *op, struct json_object *result, enum proto_err code,
	             const char *msg);
	/* One of several operations of a job (apply): told the outcome, then the op frees itself.
	 */
	vm_done_cb group_cb;
	void *group_arg;
	struct hp_op **slot; /* the owner's pointer to the op, cleared when it ends */
	char port[16];
	unsigned port_n;                   /* port is hp.<port_n> */
	bool have_port;                    /* QEMU showed port empty */
	bool port_busy[CFG_PORTS_MAX + 1]; /* spare ports QEMU showed taken */
	bool created; /* the image was made by --create (until the device owns it) */
	/* disk: its images as qvmd opened them, and their fdsets once QEMU has them */
	struct imgchain chain;
	struct argv_image images[HP_MAX_IMAGES];
	bool nodes_sent; /* batch "nodes" went out */
	char fdname[48];
	int tapfd;
	/* qemu-img child */
	pid_t img_pid;
	int img_pidfd;
	struct event *img_ev;
	/* failure being rolled back */
	enum proto_err err_code;
	char *err_msg;
	/* plug: device_add succeeded; QOM shows it on its bus (or why not); its PCI address if
	 * the firmware has numbered its bus already */
	bool plugged;
	bool confirmed;
	char *pci_addr;
	char *confirm_err;
	/* detach */
	char *id;
	uint64_t timeout_ms;
	bool released; /* DEVICE_DELETED came: the backend is being deleted */
};

static void hp_rollback(struct hp_op *op);
static void hp_open_images(struct hp_op *op);
static void hp_prepare(struct hp_op *op);
static void hp_prepared(struct hp_op *op);
static void hp_commit(struct hp_op *op);
static void hp_detached(struct hp_op *op);
static void port_checked(struct qmp_conn *conn, const struct qmp_reply *r, void *arg);

static void
hp_free(struct hp_op *op)
{
	if (op == NULL)
		return;
	/* No reply may reach a freed op (e.g. a detach finished by DEVICE_DELETED, the daemon
	 * exiting mid-attach); answered ids are ignored by qmp_cancel. */
	for (size_t i = 0; i < op->ncalls; i++) {
		if (op->vm->qmp)
			qmp_cancel(op->vm->qmp, op->calls[i].id);
		free(op->calls[i].undo.value);
	}
	for (size_t i = 0; i < op->nundo; i++)
		free(op->undo[i].value);
	free(op->undo);
	if (op->img_ev) {
		event_free(op->img_ev);
		kill(op->img_pid, SIGKILL);
		waitpid(op->img_pid, NULL, 0);
		close(op->img_pidfd);
	}
	if (op->tapfd >= 0)
		close(op->tapfd);
	imgchain_close(&op->chain);
	cfg_disk_clear(&op->disk);
	cfg_net_clear(&op->net);
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

static void
hp_job_free(void *data)
{
	hp_free(data);
}

/* QEMU went away during an attach: an image made for it goes too (the rest went with QEMU). When
 * qvmd exits instead, the job just ends: devices.json keeps the attach as "attaching" and the
 * next qvmd finishes or undoes it. */
static void
hp_drop_created(struct hp_op *op)
{
	if (op->created && op->disk.file != NULL && unlink(op->disk.file) == 0)
		log_info("vm %s: removed image %s created for the attach", op->vm->name,
		         op->disk.file);
	op->created = false;
}

static bool
attach_qemu_gone(struct vm_job *job, const struct vm_exit *exit)
{
	hp_drop_created(job->data);
	return false;
}

static void detach_timer(struct vm_job *job);
static struct hp_op *detach_job_op(struct vm_job *job, const char *id);

static const struct vm_job_kind attach_kind = {
    .name = "attach",
    .op = VM_OP_ATTACH,
    .qemu_gone = attach_qemu_gone,
    .free = hp_job_free,
};

static const struct vm_job_kind detach_kind = {
    .name = "detach",
    .op = VM_OP_DETACH,
    .timer = detach_timer,
    .free = hp_job_free,
    .detach_op = detach_job_op,
};

/* Ends the job with op's outcome and frees op; an attach's final state is written to the run
 * directory after the client has its answer. If that write fails, the record written before
 * QEMU was touched ("attaching", on its port) stays, and a restarted qvmd resolves it the same
 * way from QOM: kept when the device is there, undone when it is not. */
static void
hp_finish(struct hp_op *op, struct json_object *result, enum proto_err code, const char *msg)
{
	op->done(op, result, code, msg);
}

/* The done callback of an operation that is its job's only one: the job ends with it (and frees
 * it, after formatting msg, which may be op's). */
static void
hp_job_op_done(struct hp_op *op, struct json_object *result, enum proto_err code, const char *msg)
{
	struct vm *vm = op->vm;
	bool attach = !op->detach;

	if (code != PROTO_OK)
		vm_job_done(op->job, NULL, code, "%s", msg);
	else
		vm_job_done(op->job, result, PROTO_OK, NULL);
	if (attach)
		vm_devs_save(vm);
}

/* The done callback of one of several operations of a job: tells its owner, then frees op. */
static void
hp_group_op_done(struct hp_op *op, struct json_object *result, enum proto_err code, const char *msg)
{
	struct vm *vm = op->vm;
	bool attach = !op->detach;

	if (op->slot != NULL)
		*op->slot = NULL;
	op->group_cb(result, code, msg, op->group_arg);
	hp_free(op);
	if (attach)
		vm_devs_save(vm);
}

/* Records why the operation failed (the first failure is the one reported). */
static void
hp_verror(struct hp_op *op, enum proto_err code, const char *fmt, va_list ap)
{
	if (op->err_msg != NULL)
		return;
	op->err_code = code;
	if (vasprintf(&op->err_msg, fmt, ap) < 0)
		fatal("out of memory");
}

static void hp_error(struct hp_op *op, enum proto_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
hp_error(struct hp_op *op, enum proto_err code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	hp_verror(op, code, fmt, ap);
	va_end(ap);
}

/* Outside a batch: records why and starts undoing. */
static void hp_fail(struct hp_op *op, enum proto_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
hp_fail(struct hp_op *op, enum proto_err code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	hp_verror(op, code, fmt, ap);
	va_end(ap);
	hp_rollback(op);
}

/* Starts a batch: the commands sent until the next call are answered together. */
static void
hp_batch(struct hp_op *op)
{
	for (size_t i = 0; i < op->ncalls; i++)
		free(op->calls[i].undo.value);
	op->ncalls = 0;
	op->pending = 0;
}

/* Pushes a step's undo (takes value). */
static void
hp_push_undo(struct hp_op *op, const char *command, const char *key, char *value)
{
	op->undo = xrealloc(op->undo, (op->nundo + 1) * sizeof *op->undo);
	op->undo[op->nundo].command = command;
	op->undo[op->nundo].key = key;
	op->undo[op->nundo].value = value;
	op->undo[op->nundo].numeric = false;
	op->nundo++;
}

/* Forgets the undo steps: what they would remove belongs to the plugged device now. */
static void
hp_clear_undo(struct hp_op *op)
{
	for (size_t i = 0; i < op->nundo; i++)
		free(op->undo[i].value);
	op->nundo = 0;
}

static void
hp_call_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_call *c = arg;
	struct hp_op *op = c->op;

	if (r->status == QMP_OK && c->drops_fd) {
		for (size_t i = op->nundo; i-- > 0;) {
			if (op->undo[i].command != NULL &&
			    strcmp(op->undo[i].command, "closefd") == 0) {
				free(op->undo[i].value);
				memmove(&op->undo[i], &op->undo[i + 1],
				        (op->nundo - i - 1) * sizeof *op->undo);
				op->nundo--;
			}
		}
	}
	if (r->status == QMP_OK && (c->undo.command != NULL || c->undo.value != NULL)) {
		hp_push_undo(op, c->undo.command, c->undo.key, c->undo.value);
		c->undo.value = NULL;
	}
	op->current = c;
	c->next(conn, r, op);
}

/* Sends a command of the current batch (fd >= 0: passed along); cb gets its reply with the op.
 * When QEMU accepts it, undo_cmd undo_key=undo_value (if undo_cmd) is pushed on the undo stack. */
static bool
hp_send_step(struct hp_op *op, const char *cmd, struct json_object *args, int fd, qmp_reply_cb cb,
             const char *undo_cmd, const char *undo_key, const char *undo_value)
{
	struct hp_call *c;
	char *cause = NULL;
	int64_t id = -1;

	if (op->ncalls >= HP_MAX_CALLS)
		fatal("vm %s: hot-plug batch over %d commands", op->vm->name, HP_MAX_CALLS);
	c = &op->calls[op->ncalls];
	memset(c, 0, sizeof *c);
	c->op = op;
	c->next = cb;
	/* The command belongs to the job: it is cancelled when the job ends (and by hp_free when
	 * the operation ends first, as one of several in a job). */
	id = vm_job_send(op->job, cmd, args, fd, 0, hp_call_done, c, &cause);
	free(cause);
	if (id <= 0)
		return false;
	c->id = id;
	if (undo_cmd != NULL) {
		c->undo.command = undo_cmd;
		c->undo.key = undo_key;
		c->undo.value = xstrdup(undo_value);
	}
	op->ncalls++;
	op->pending++;
	return true;
}

static bool
hp_send(struct hp_op *op, const char *cmd, struct json_object *args, qmp_reply_cb cb)
{
	return hp_send_step(op, cmd, args, -1, cb, NULL, NULL, NULL);
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
	hp_error(op, PROTO_ERR_FAILED, "vm %s: qmp connection lost", op->vm->name);
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

static struct json_object *
obj1_int(const char *key, long long value)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, key, json_object_new_int64(value));
	return o;
}

/* The bookkeeping entry of the device being attached (NULL before hp_begin). */
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

/* Undoes the newest step left (one command at a time), then reports the original failure. */
static void
hp_rollback(struct hp_op *op)
{
	struct vm_dev *dev;

	hp_batch(op);
	while (op->nundo > 0) {
		struct hp_undo u = op->undo[--op->nundo];

		if (u.command == NULL) {
			if (unlink(u.value) == 0)
				log_info("vm %s: removed image %s created for the failed attach",
				         op->vm->name, u.value);
			if (op->created && strcmp(u.value, op->disk.file) == 0)
				op->created = false;
			free(u.value);
			continue;
		}
		if (hp_send(op, u.command,
		            u.numeric ? obj1_int(u.key, strtoll(u.value, NULL, 10))
		                      : obj1(u.key, u.value),
		            rollback_done)) {
			free(u.value);
			return;
		}
		free(u.value); /* no connection: QEMU took it with it */
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
		hp_fail(op, PROTO_ERR_FAILED, "vm %s: qemu-img create %s failed: %s", op->vm->name,
		        op->disk.file, tail);
		free(log);
		free(tail);
		return;
	}
	op->created = true;
	hp_push_undo(op, NULL, NULL, xstrdup(op->disk.file));
	log_info("vm %s: created image %s", op->vm->name, op->disk.file);
	hp_open_images(op);
}

static void
hp_create_image(struct hp_op *op)
{
	char *cause = NULL;
	long log_offset;

	op->img_pid = vm_spawn_qemu_img(op->vm, op->disk.file, op->disk.format, op->create_size,
	                                &log_offset, &op->img_pidfd, &cause);
	if (op->img_pid < 0) {
		hp_fail(op, PROTO_ERR_FAILED, "vm %s: %s", op->vm->name, cause);
		free(cause);
		return;
	}
	op->img_ev = event_new(op->vm->env.base, op->img_pidfd, EV_READ, img_done, op);
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

/* Whether a qom-list of a bus shows a device on it (each child is a "child[N]" link). */
static bool
bus_has_child(struct json_object *props)
{
	for (size_t i = 0; props && i < json_object_array_length(props); i++) {
		struct json_object *p = json_object_array_get_idx(props, i), *v;

		if (json_object_object_get_ex(p, "name", &v) &&
		    strncmp(json_object_get_string(v), "child[", 6) == 0)
			return true;
	}
	return false;
}

/* QOM path of the bus a spare port provides: /machine/peripheral/PORT/PORT. */
static char *
port_bus_path(const char *port)
{
	return xasprintf("/machine/peripheral/%s/%s", port, port);
}

/* Sends the qom-list that tells whether op->port is empty in QEMU (q35). */
static bool
hp_send_port_check(struct hp_op *op)
{
	char *path = port_bus_path(op->port);
	bool sent = hp_send(op, "qom-list", obj1("path", path), port_checked);

	free(path);
	return sent;
}

/* Batch "prepare" (q35): the port our books chose, checked against QEMU's device model. A port
 * with a device behind it is taken, whatever the books say and whether or not the firmware has
 * numbered its bus yet; the next one free in both is checked before device_add. */
static void
port_checked(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;
	struct vm_dev *tracked;
	char chosen[16];
	int n;

	hp_answered(op);
	if (r->status != QMP_OK) {
		hp_error(op, vm_qmp_err(r), "vm %s: qom-list %s failed: %s", op->vm->name, op->port,
		         r->error_desc);
	} else if (!bus_has_child(r->result)) {
		op->have_port = true;
	} else {
		log_info("vm %s: port %s has a device qvmd did not put there; trying the next",
		         op->vm->name, op->port);
		op->port_busy[op->port_n] = true;
		tracked = hp_dev(op);
		if (tracked != NULL) {
			free(tracked->port);
			tracked->port = NULL;
		}
		n = vm_devs_free_port(op->vm, op->port_busy, chosen);
		if (n < 0) {
			hp_error(
			    op, PROTO_ERR_FAILED,
			    "vm %s: no free hot-plug slot (all %u in use); raise hotplug_slots "
			    "in %s and restart the vm",
			    op->vm->name, op->vm->live_cfg->hotplug_slots,
			    op->vm->cfg ? op->vm->cfg->path : "its definition");
		} else {
			snprintf(op->port, sizeof op->port, "%s", chosen);
			op->port_n = (unsigned)n;
			if (tracked != NULL)
				tracked->port = xstrdup(chosen);
		}
	}
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
	if (r->status != QMP_OK)
		hp_error(op, vm_qmp_err(r), "vm %s: %s %s failed: %s", op->vm->name, r->command, id,
		         r->error_desc);
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
	if (op->confirmed) {
		hp_commit(op);
		return;
	}
	/* QEMU accepted device_add but its device model does not show the device where it was
	 * put (never seen; would be a QEMU bug): it stays tracked, detach removes it. */
	if (op->confirm_err == NULL && op->err_msg == NULL)
		op->confirm_err = xasprintf("vm %s: device_add %s succeeded but qom-get was not "
		                            "answered",
		                            op->vm->name, op->is_disk ? op->disk.id : op->net.id);
	hp_finish(op, NULL, PROTO_ERR_FAILED, op->confirm_err ? op->confirm_err : op->err_msg);
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
		hp_error(op, vm_qmp_err(r), "vm %s: device_add %s failed: %s", vm->name,
		         op->is_disk ? op->disk.id : op->net.id, r->error_desc);
	} else {
		/* From here on the device is the guest's, removed only by detach. The run
		 * directory says "attaching" until the client has its answer: a qvmd that dies in
		 * between finds the device in QOM (vm_hotplug_reconcile) and keeps it. */
		if ((dev = hp_dev(op)) != NULL)
			dev->attaching = dev->created = false;
		hp_clear_undo(op);
		op->created = false;
		op->plugged = true;
	}
	if (op->pending == 0)
		hp_plugged(op);
}

/* qom-get arguments for the bus the device being attached sits on. */
static struct json_object *
qom_bus_args(const struct hp_op *op)
{
	char *path = xasprintf("/machine/peripheral/%s", op->is_disk ? op->disk.id : op->net.id);
	struct json_object *args = obj1("path", path);

	json_object_object_add(args, "property", json_object_new_string("parent_bus"));
	free(path);
	return args;
}

/* Batch "plug": QEMU's device model has the device, on the bus it was put on (q35: the chosen
 * port's; pc: pci.0, where a device without "bus" goes). */
static void
bus_confirmed(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;
	const char *id = op->is_disk ? op->disk.id : op->net.id;
	char *want = op->have_port ? port_bus_path(op->port) : NULL;
	const char *bus = r->status == QMP_OK ? json_object_get_string(r->result) : NULL;

	hp_answered(op);
	if (bus != NULL && (want != NULL ? strcmp(bus, want) == 0 : *bus != '\0'))
		op->confirmed = true;
	else if (op->confirm_err == NULL && bus != NULL)
		op->confirm_err = xasprintf("vm %s: device_add %s succeeded but QEMU shows it on "
		                            "bus %s, not %s",
		                            op->vm->name, id, bus, want ? want : "pci.0");
	else if (op->confirm_err == NULL)
		op->confirm_err = xasprintf("vm %s: device_add %s succeeded but qom-get of its "
		                            "bus failed: %s",
		                            op->vm->name, id, r->error_desc);
	free(want);
	if (op->pending == 0)
		hp_plugged(op);
}

/* Batch "plug": the device's PCI address, if the guest firmware has numbered its bus yet
 * (otherwise null: `devices` asks again each time). */
static void
pci_found(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;
	const char *id = op->is_disk ? op->disk.id : op->net.id;
	char addr[16];

	hp_answered(op);
	if (r->status == QMP_OK && pci_find_all(r->result, id, addr, sizeof addr) != NULL)
		op->pci_addr = xstrdup(addr);
	if (op->pending == 0)
		hp_plugged(op);
}

/* One of qvmd's own events: a device attached, detached, or whose removal waits for the guest
 * (`qvmctl events`). */
static void
device_event(struct vm *vm, const char *action, bool is_disk, const char *id, bool persistent)
{
	struct json_object *f = json_object_new_object();

	json_object_object_add(f, "action", json_object_new_string(action));
	json_object_object_add(f, "kind", json_object_new_string(is_disk ? "disk" : "net"));
	/* "device", not "id": a line with an id is a reply in the control protocol. */
	json_object_object_add(f, "device", json_object_new_string(id));
	json_object_object_add(f, "persistent", json_object_new_boolean(persistent));
	vm_event(vm, "device", f);
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

	if (op->persist) {
		int rc = vm->cfg == NULL ? -1 /* removed while the attach ran */
		         : op->is_disk   ? cfg_write_add_disk(vm->cfg->path, &op->disk, &cause)
		                         : cfg_write_add_net(vm->cfg->path, &op->net, &cause);

		if (rc < 0 && cause == NULL)
			cause = xstrdup("definition file was removed");

		if (rc < 0) {
			char *msg = xasprintf("vm %s: %s attached, but not persisted: %s", vm->name,
			                      op->is_disk ? op->disk.id : op->net.id, cause);

			free(cause);
			hp_finish(op, NULL, PROTO_ERR_FAILED, msg);
			free(msg);
			return;
		}
		vm_reload_definition(vm, false);
		vm_apply_live_edit(vm, op->is_disk ? &op->disk : NULL,
		                   op->is_disk ? NULL : &op->net, NULL);
		persisted = true;
	}
	log_info("vm %s: attached %s %s%s%s", vm->name, op->is_disk ? "disk" : "nic",
	         op->is_disk ? op->disk.id : op->net.id, op->have_port ? " on " : "",
	         op->have_port ? op->port : "");
	device_event(vm, "attached", op->is_disk, op->is_disk ? op->disk.id : op->net.id,
	             persisted);
	res = dev ? vm_dev_json(dev) : json_object_new_object();
	json_object_object_add(res, "pci_addr",
	                       op->pci_addr ? json_object_new_string(op->pci_addr) : NULL);
	json_object_object_add(res, "live", json_object_new_boolean(1));
	json_object_object_add(res, "persistent", json_object_new_boolean(persisted));
	hp_finish(op, res, PROTO_OK, NULL);
}

/* Tracks the device from now on, as "attaching", and writes that down before anything is sent
 * to QEMU: a qvmd that goes away before the end finds it in devices.json and finishes or undoes
 * the attach (vm_hotplug_reconcile). On q35 it gets the port our books give (the caller checked
 * that there is one), so that the record is complete; QOM then checks it. Then creates its image
 * (--create) or sends batch "prepare"; a record that cannot be written ends the attach. */
static void
hp_begin(struct hp_op *op)
{
	struct vm *vm = op->vm;
	struct vm_dev *dev;
	int n;

	dev = op->is_disk ? vm_dev_new_disk(&op->disk, NULL) : vm_dev_new_net(&op->net, NULL);
	dev->attaching = true;
	dev->created = op->create_size > 0;
	if (vm->live_cfg->machine == CFG_MACHINE_Q35 &&
	    (n = vm_devs_free_port(vm, NULL, op->port)) >= 0) {
		op->port_n = (unsigned)n;
		dev->port = xstrdup(op->port);
	}
	vm_devs_add(vm, dev);
	if (vm_devs_save(vm) < 0) {
		hp_fail(
		    op, PROTO_ERR_FAILED,
		    "vm %s: cannot record %s in the run directory (%s): %s; nothing was attached",
		    vm->name, dev->id, vm->env.conf->run_dir, strerror(errno));
		return;
	}
	if (op->create_size > 0)
		hp_create_image(op);
	else if (op->is_disk)
		hp_open_images(op);
	else
		hp_prepare(op);
}

/* Opens the disk's image and its backing chain (refused when another VM, or another disk of
 * this one, holds one of them), records them on its device, then sends batch "prepare". */
static void
hp_open_images(struct hp_op *op)
{
	struct vm_dev *dev = hp_dev(op);
	char *cause = NULL;

	if (vm_disk_open(op->vm, &op->disk, dev, &op->chain, &cause) < 0) {
		hp_fail(op, PROTO_ERR_INVALID, "vm %s: %s", op->vm->name, cause);
		free(cause);
		return;
	}
	for (size_t j = 0; j < op->chain.n; j++) {
		op->images[j].set = -1;
		op->images[j].fd_ro = op->images[j].fd_rw = -1;
		op->images[j].format = op->chain.v[j].format;
	}
	if (dev != NULL)
		vm_dev_set_images(dev, &op->chain, !op->disk.readonly);
	hp_prepare(op);
}

/* Batch "prepare": add-fd of an image's first descriptor made a new fdset (QEMU chose its id):
 * removing the set undoes it. */
static void
fd_added(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;
	struct json_object *v;

	hp_answered(op);
	if (r->status != QMP_OK) {
		hp_error(op, vm_qmp_err(r), "vm %s: add-fd %s failed: %s", op->vm->name,
		         op->disk.id, r->error_desc);
	} else if (!json_object_object_get_ex(r->result, "fdset-id", &v)) {
		hp_error(op, PROTO_ERR_QEMU, "vm %s: add-fd %s: no fdset-id in the reply",
		         op->vm->name, op->disk.id);
	} else {
		op->images[op->current->image].set = json_object_get_int64(v);
		hp_push_undo(op, "remove-fd", "fdset-id",
		             xasprintf("%" PRId64, json_object_get_int64(v)));
		op->undo[op->nundo - 1].numeric = true;
	}
	if (op->pending == 0)
		hp_prepared(op);
}

/* Sends the add-fd of each image's first descriptor (O_RDWR for a writable disk's own image):
 * each makes a new fdset whose opaque string is the image's file node. */
static bool
hp_send_add_fds(struct hp_op *op)
{
	for (size_t j = 0; j < op->chain.n; j++) {
		const struct imgchain_image *im = &op->chain.v[j];
		char *opaque = argv_node_file(op->disk.id, j);
		bool sent = hp_send_step(op, "add-fd", obj1("opaque", opaque),
		                         im->fd_rw >= 0 ? im->fd_rw : im->fd_ro, fd_added, NULL,
		                         NULL, NULL);

		free(opaque);
		if (!sent)
			return false;
		op->calls[op->ncalls - 1].image = j;
	}
	return true;
}

/* Batch "nodes": the O_RDONLY descriptor of a writable image joins its set (QEMU reopens
 * images read-only, e.g. for block jobs), then the block nodes, backing files first. */
static bool
hp_send_nodes(struct hp_op *op)
{
	struct argv_chain chain = {op->images, op->chain.n};
	const struct imgchain_image *top = &op->chain.v[0];

	if (top->fd_rw >= 0) {
		char *opaque = argv_node_file(op->disk.id, 0);
		struct json_object *args = obj1("opaque", opaque);

		json_object_object_add(args, "fdset-id", json_object_new_int64(op->images[0].set));
		free(opaque);
		if (!hp_send_step(op, "add-fd", args, top->fd_ro, backend_added, NULL, NULL, NULL))
			return false;
	}
	for (size_t j = chain.n; j-- > 0;) {
		char *file = argv_node_file(op->disk.id, j), *fmt = argv_node_fmt(op->disk.id, j);
		bool sent =
		    hp_send_step(op, "blockdev-add", argv_blockdev_file_json(&op->disk, &chain, j),
		                 -1, backend_added, "blockdev-del", "node-name", file) &&
		    hp_send_step(op, "blockdev-add", argv_blockdev_fmt_json(&op->disk, &chain, j),
		                 -1, backend_added, "blockdev-del", "node-name", fmt);

		free(file);
		free(fmt);
		if (!sent)
			return false;
	}
	return true;
}

/* Sends batch "prepare" (the record is on disk already). */
static void
hp_prepare(struct hp_op *op)
{
	struct vm *vm = op->vm;
	/* Tap and bridge NICs: qvmd opens the tap (QEMU runs unprivileged) and passes it. */
	bool bridge = !op->is_disk && op->net.type != CFG_NET_USER;
	const char *id = op->is_disk ? op->disk.id : op->net.id;
	char netdev[64];
	bool sent = true;

	snprintf(netdev, sizeof netdev, ARGV_NETDEV_FMT, id);
	hp_batch(op);
	if (vm->live_cfg->machine == CFG_MACHINE_Q35)
		sent = hp_send_port_check(op);
	if (sent && bridge) {
		snprintf(op->fdname, sizeof op->fdname, "%s.tap", op->net.id);
		sent = hp_send_step(op, "getfd", obj1("fdname", op->fdname), op->tapfd,
		                    backend_added, "closefd", "fdname", op->fdname);
	}
	if (sent && op->is_disk)
		sent = hp_send_add_fds(op);
	else if (sent && hp_send_step(op, "netdev_add",
	                              argv_netdev_json(&op->net, bridge ? op->fdname : NULL), -1,
	                              backend_added, "netdev_del", "id", netdev))
		op->calls[op->ncalls - 1].drops_fd = bridge;
	else
		sent = false;
	if (!sent)
		hp_send_failed(op);
}

/* Every reply of "prepare" is in: plug the device, or undo. On q35 a port QEMU showed taken was
 * replaced by the next free one: that one is recorded and checked first. */
static void
hp_prepared(struct hp_op *op)
{
	bool q35 = op->vm->live_cfg->machine == CFG_MACHINE_Q35;
	const char *bus = op->have_port ? op->port : NULL;

	if (op->tapfd >= 0) {
		close(op->tapfd);
		op->tapfd = -1;
	}
	if (op->err_msg != NULL) {
		hp_rollback(op);
		return;
	}
	if (op->is_disk && !op->nodes_sent) {
		op->nodes_sent = true;
		hp_batch(op);
		if (!hp_send_nodes(op))
			hp_send_failed(op);
		return;
	}
	if (q35 && !op->have_port) {
		if (vm_devs_save(op->vm) < 0) {
			hp_fail(op, PROTO_ERR_FAILED,
			        "vm %s: cannot record %s in the run directory: %s", op->vm->name,
			        op->is_disk ? op->disk.id : op->net.id, strerror(errno));
			return;
		}
		hp_batch(op);
		if (!hp_send_port_check(op))
			hp_send_failed(op);
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
	if (!hp_send(op, "qom-get", qom_bus_args(op), bus_confirmed) ||
	    !hp_send(op, "query-pci", NULL, pci_found))
		hp_send_failed(op);
}

/* ---- validation ---- */

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
refuse(vm_done_cb cb, void *arg, enum proto_err code, char *msg)
{
	cb(NULL, code, msg, arg);
	free(msg);
	return true;
}

/* Checks an id: on a running VM it must not be live (a device of the definition that is not
 * live, e.g. after a detach without --persist, may be attached again under its own id), and with
 * --persist not in the definition either; on a stopped VM not in the definition. */
static bool
refuse_id(struct vm *vm, const char *id, bool persist, vm_done_cb cb, void *arg)
{
	bool in_file = vm->cfg && (cfg_vm_disk(vm->cfg, id) || cfg_vm_net(vm->cfg, id));

	if (!cfg_valid_device_id(id))
		return refuse(
		    cb, arg, PROTO_ERR_INVALID,
		    xasprintf("vm %s: '%s' is not a valid device id ([a-zA-Z][a-zA-Z0-9_-], "
		              "at most %d characters)",
		              vm->name, id, CFG_ID_MAX));
	if (vm_is_active(vm) ? vm_devs_find(vm, id) != NULL : in_file)
		return refuse(cb, arg, PROTO_ERR_INVALID,
		              xasprintf("vm %s: device id '%s' is already in use", vm->name, id));
	if (persist && in_file)
		return refuse(
		    cb, arg, PROTO_ERR_INVALID,
		    xasprintf("vm %s: device id '%s' is already in the definition (attach "
		              "it without --persist, or detach --persist it first)",
		              vm->name, id));
	return false;
}

/* Stopped VM: with --persist only the definition changes; without it there is nothing to do.
 * --persist needs the definition file, also on a running VM: refused before QEMU is touched. */
static bool
refuse_stopped(struct vm *vm, bool persist, vm_done_cb cb, void *arg)
{
	if (vm_is_active(vm) && vm->state != VM_RUNNING && vm->state != VM_PAUSED) {
		vm_job_refuse_busy(vm, cb, arg);
		return true;
	}
	if (!vm_is_active(vm) && !persist)
		return refuse(
		    cb, arg, PROTO_ERR_NOT_RUNNING,
		    xasprintf("vm %s: not running; use --persist to change its definition",
		              vm->name));
	if (persist && vm->cfg == NULL)
		return refuse(
		    cb, arg, PROTO_ERR_NOT_FOUND,
		    xasprintf("vm %s: definition file was removed; cannot persist", vm->name));
	return false;
}

/* q35: a spare port our books show free (QOM checks it later), refused before QEMU is touched. */
static bool
refuse_no_port(struct vm *vm, vm_done_cb cb, void *arg)
{
	char port[16];

	if (!vm_is_active(vm) || vm->live_cfg->machine != CFG_MACHINE_Q35 ||
	    vm_devs_free_port(vm, NULL, port) >= 0)
		return false;
	return refuse(cb, arg, PROTO_ERR_FAILED,
	              xasprintf("vm %s: no free hot-plug slot (all %u in use); raise "
	                        "hotplug_slots in %s and restart the vm",
	                        vm->name, vm->live_cfg->hotplug_slots,
	                        vm->cfg ? vm->cfg->path : "its definition"));
}

/* What a detach answers, whether the device was live or only in the file: it is not live now,
 * and whether the definition still has it. */
static struct json_object *
detach_result(struct vm *vm, const char *id, bool was_live)
{
	struct json_object *res = json_object_new_object();

	json_object_object_add(res, "id", json_object_new_string(id));
	json_object_object_add(res, "was_live", json_object_new_boolean(was_live));
	json_object_object_add(res, "live", json_object_new_boolean(0));
	json_object_object_add(res, "persistent",
	                       json_object_new_boolean(vm->cfg && (cfg_vm_disk(vm->cfg, id) ||
	                                                           cfg_vm_net(vm->cfg, id))));
	return res;
}

static void
persist_only_result(struct vm *vm, const char *id, bool attached, vm_done_cb cb, void *arg)
{
	struct json_object *res;
	const struct cfg_disk *disk;
	const struct cfg_net *net;
	struct vm_dev *dev = NULL;

	vm_reload_definition(vm, false);
	if (!attached) {
		cb(detach_result(vm, id, false), PROTO_OK, NULL, arg);
		return;
	}
	/* The same device object a live attach answers with, not live. */
	if ((disk = cfg_vm_disk(vm->cfg, id)) != NULL)
		dev = vm_dev_new_disk(disk, NULL);
	else if ((net = cfg_vm_net(vm->cfg, id)) != NULL)
		dev = vm_dev_new_net(net, NULL);
	res = dev != NULL ? vm_dev_json(dev) : json_object_new_object();
	vm_dev_free(dev);
	json_object_object_add(res, "pci_addr", NULL);
	json_object_object_add(res, "live", json_object_new_boolean(0));
	json_object_object_add(res, "persistent", json_object_new_boolean(dev != NULL));
	cb(res, PROTO_OK, NULL, arg);
}

/* Checks a disk to attach and returns the operation that plugs it into the running VM; on a
 * stopped VM (persist) writes it into the definition instead. NULL when there is nothing more to
 * do: cb has its answer. */
static struct hp_op *
attach_disk_op(struct vm *vm, const struct cfg_disk *disk, uint64_t create_size, bool persist,
               vm_done_cb cb, void *arg)
{
	struct hp_op *op;
	char *why;

	if (refuse_id(vm, disk->id, persist, cb, arg) || refuse_no_port(vm, cb, arg))
		return NULL;
	if (create_size == 0 && access(disk->file, F_OK) < 0) {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: %s: %s", vm->name, disk->file, strerror(errno)));
		return NULL;
	}
	if (disk->file[0] != '/' ||
	    !vm_image_path_allowed(vm->env.conf, disk->file, create_size > 0)) {
		refuse(
		    cb, arg, PROTO_ERR_DENIED,
		    xasprintf("vm %s: %s is not below an image directory qvmd may use (image_dirs "
		              "in qvmd.conf)",
		              vm->name, disk->file));
		return NULL;
	}
	if (create_size > 0 && access(disk->file, F_OK) == 0) {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: %s already exists (drop --create to attach it)", vm->name,
		                 disk->file));
		return NULL;
	}
	if (create_size == 0 && (why = check_image(disk->file, disk->format)) != NULL) {
		refuse(cb, arg, PROTO_ERR_INVALID, xasprintf("vm %s: %s", vm->name, why));
		free(why);
		return NULL;
	}
	if (!vm_is_active(vm)) {
		struct cfg_disk d = *disk;
		char *cause = NULL;

		d.size = create_size;
		if (cfg_write_add_disk(vm->cfg->path, &d, &cause) < 0) {
			refuse(cb, arg, PROTO_ERR_INVALID, xasprintf("vm %s: %s", vm->name, cause));
			free(cause);
			return NULL;
		}
		log_info("vm %s: disk %s added to the definition", vm->name, disk->id);
		persist_only_result(vm, disk->id, true, cb, arg);
		return NULL;
	}
	op = hp_new(vm);
	op->is_disk = true;
	cfg_disk_copy(&op->disk, disk);
	op->disk.boot = false;
	op->disk.size = 0;
	op->disk.apply = CFG_APPLY_PENDING;
	op->persist = persist;
	op->create_size = create_size;
	return op;
}

void
vm_attach_disk(struct vm *vm, const struct cfg_disk *disk, uint64_t create_size, bool persist,
               vm_done_cb cb, void *arg)
{
	struct hp_op *op;

	if (!vm_job_admit(vm, VM_OP_ATTACH, cb, arg))
		return;
	if (refuse_stopped(vm, persist, cb, arg) ||
	    (op = attach_disk_op(vm, disk, create_size, persist, cb, arg)) == NULL)
		return;
	op->done = hp_job_op_done;
	op->job = vm_job_new(vm, &attach_kind, op, cb, arg);
	hp_begin(op);
}

/* The NIC counterpart of attach_disk_op. */
static struct hp_op *
attach_net_op(struct vm *vm, const struct cfg_net *net, bool persist, vm_done_cb cb, void *arg)
{
	struct hp_op *op;
	struct cfg_net n = *net;
	char *cause = NULL;

	if (refuse_id(vm, net->id, persist, cb, arg) || refuse_no_port(vm, cb, arg))
		return NULL;
	if (!n.mac_given)
		cfg_mac_derive(vm->name, net->id, n.mac);
	for (size_t i = 0; vm_is_active(vm) && i < vm->ndevs; i++) {
		if (!vm->devs[i]->is_disk && memcmp(vm->devs[i]->net.mac, n.mac, 6) == 0) {
			char mac[18];

			cfg_mac_format(n.mac, mac);
			refuse(cb, arg, PROTO_ERR_INVALID,
			       xasprintf("vm %s: mac %s is already used by nic %s", vm->name, mac,
			                 vm->devs[i]->id));
			return NULL;
		}
	}
	if (n.type == CFG_NET_TAP && (n.ifname == NULL || n.bridge != NULL)) {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: a tap nic needs --ifname (and no --bridge)", vm->name));
		return NULL;
	}
	if (n.type == CFG_NET_BRIDGE && n.bridge == NULL) {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: a bridge nic needs --bridge", vm->name));
		return NULL;
	}
	if (n.type == CFG_NET_USER && (n.bridge || n.ifname)) {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: --bridge and --ifname are for tap and bridge nics",
		                 vm->name));
		return NULL;
	}
	n.mac_given = true; /* keep the MAC it got, also when persisted */
	n.apply = CFG_APPLY_PENDING;
	if (!vm_is_active(vm)) {
		if (cfg_write_add_net(vm->cfg->path, &n, &cause) < 0) {
			refuse(cb, arg, PROTO_ERR_INVALID, xasprintf("vm %s: %s", vm->name, cause));
			free(cause);
			return NULL;
		}
		log_info("vm %s: nic %s added to the definition", vm->name, net->id);
		persist_only_result(vm, net->id, true, cb, arg);
		return NULL;
	}
	op = hp_new(vm);
	cfg_net_copy(&op->net, &n);
	op->persist = persist;
	if (n.type != CFG_NET_USER) {
		op->tapfd = vm_tap_open(n.ifname, n.bridge, &cause);
		if (op->tapfd < 0) {
			refuse(cb, arg, PROTO_ERR_FAILED,
			       xasprintf("vm %s: nic %s: %s", vm->name, n.id, cause));
			free(cause);
			hp_free(op);
			return NULL;
		}
	}
	return op;
}

void
vm_attach_net(struct vm *vm, const struct cfg_net *net, bool persist, vm_done_cb cb, void *arg)
{
	struct hp_op *op;

	if (!vm_job_admit(vm, VM_OP_ATTACH, cb, arg))
		return;
	if (refuse_stopped(vm, persist, cb, arg) ||
	    (op = attach_net_op(vm, net, persist, cb, arg)) == NULL)
		return;
	op->done = hp_job_op_done;
	op->job = vm_job_new(vm, &attach_kind, op, cb, arg);
	hp_begin(op);
}

/* Makes op one of several of job (apply), told through cb; *slot points at it until it ends. */
static void
hp_join_group(struct hp_op *op, struct vm_job *job, struct hp_op **slot, vm_done_cb cb, void *arg)
{
	op->job = job;
	op->done = hp_group_op_done;
	op->group_cb = cb;
	op->group_arg = arg;
	op->slot = slot;
	*slot = op;
}

void
vm_hotplug_attach(struct vm_job *job, const struct cfg_disk *disk, const struct cfg_net *net,
                  struct hp_op **slot, vm_done_cb cb, void *arg)
{
	struct vm *vm = job->vm;
	struct hp_op *op;
	uint64_t create = 0;

	*slot = NULL;
	if (disk != NULL) {
		/* As at start: a missing image whose size the definition gives is created. */
		if (disk->size > 0 && access(disk->file, F_OK) < 0 && errno == ENOENT)
			create = disk->size;
		op = attach_disk_op(vm, disk, create, false, cb, arg);
	} else {
		op = attach_net_op(vm, net, false, cb, arg);
	}
	if (op == NULL)
		return;
	hp_join_group(op, job, slot, cb, arg);
	hp_begin(op);
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
		hp_error(op, vm_qmp_err(r), "vm %s: %s removed from the guest, but %s failed: %s",
		         op->vm->name, op->id, r->command, r->error_desc);
	if (op->pending == 0)
		hp_detached(op);
}

/* Sends a deletion of name nobody waits for (args taken); cb reports its outcome (and frees its
 * description). */
static void
del_unwaited_args(struct vm *vm, const char *cmd, struct json_object *args, const char *name,
                  qmp_reply_cb cb)
{
	char *what = xasprintf("vm %s: %s %s", vm->name, cmd, name), *cause = NULL;

	if (qmp_execute(vm->qmp, cmd, args, 0, cb, what, &cause) < 0)
		free(what);
	json_object_put(args);
	free(cause);
}

static void
del_unwaited(struct vm *vm, const char *cmd, const char *key, const char *name, qmp_reply_cb cb)
{
	del_unwaited_args(vm, cmd, obj1(key, name), name, cb);
}

/* Deletes one backend object (args taken): as part of op (detach waiting for it), or on its
 * own. */
static void
backend_del_args(struct vm *vm, struct hp_op *op, const char *cmd, struct json_object *args,
                 const char *name)
{
	if (op != NULL) {
		if (!hp_send(op, cmd, args, backend_deleted))
			hp_error(op, PROTO_ERR_FAILED,
			         "vm %s: %s removed from the guest, but %s %s: qmp "
			         "connection lost",
			         vm->name, op->id, cmd, name);
		return;
	}
	del_unwaited_args(vm, cmd, args, name, backend_del_done);
}

static void
backend_del(struct vm *vm, struct hp_op *op, const char *cmd, const char *key, const char *name)
{
	backend_del_args(vm, op, cmd, obj1(key, name), name);
}

/* The fdsets of disk id in a query-fdsets result (their opaque string names its file nodes):
 * their ids and the image of its chain each one serves; returns how many. */
static size_t
disk_fdsets(struct json_object *result, const char *id, long long *sets, size_t *images, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; result && i < json_object_array_length(result) && n < max; i++) {
		struct json_object *set = json_object_array_get_idx(result, i), *fds, *v;

		if (!json_object_object_get_ex(set, "fdset-id", &v) ||
		    !json_object_object_get_ex(set, "fds", &fds))
			continue;
		for (size_t k = 0; k < json_object_array_length(fds); k++) {
			struct json_object *fd = json_object_array_get_idx(fds, k), *o;

			if (json_object_object_get_ex(fd, "opaque", &o) &&
			    vm_disk_fdset_of(json_object_get_string(o), id, &images[n]) &&
			    images[n] < HP_MAX_IMAGES) {
				sets[n++] = json_object_get_int64(v);
				break;
			}
		}
	}
	return n;
}

/* The disk's own nodes are deleted (sent before): deletes the nodes of its backing files, nearest
 * first (each has lost its last parent by then), and removes every fdset of the disk, so that
 * QEMU closes its descriptors. As part of op, or on its own. */
static void
fdsets_release(struct vm *vm, struct hp_op *op, const char *id, struct json_object *result)
{
	long long sets[HP_MAX_IMAGES];
	size_t images[HP_MAX_IMAGES], n = disk_fdsets(result, id, sets, images, HP_MAX_IMAGES);
	size_t deepest = 0;

	for (size_t k = 0; k < n; k++)
		deepest = images[k] > deepest ? images[k] : deepest;
	for (size_t j = 1; j <= deepest; j++) {
		char *fmt = argv_node_fmt(id, j), *file = argv_node_file(id, j);

		backend_del(vm, op, "blockdev-del", "node-name", fmt);
		backend_del(vm, op, "blockdev-del", "node-name", file);
		free(fmt);
		free(file);
	}
	for (size_t k = 0; k < n; k++) {
		char *name = xasprintf("fdset %lld", sets[k]);

		backend_del_args(vm, op, "remove-fd", obj1_int("fdset-id", sets[k]), name);
		free(name);
	}
}

/* Detach: query-fdsets is answered; the detach ends when what it sends is answered too. */
static void
fdsets_listed(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;

	hp_answered(op);
	if (r->status == QMP_OK)
		fdsets_release(op->vm, op, op->id, r->result);
	else if (r->status != QMP_DISCONNECTED)
		log_warn("vm %s: %s: query-fdsets failed: %s; its images stay open in qemu",
		         op->vm->name, op->id, r->error_desc);
	if (op->pending == 0)
		hp_detached(op);
}

/* The disk whose fdsets a query-fdsets nobody waits for is about. */
struct fdsets_unwaited {
	struct vm *vm;
	char *id;
};

static void
fdsets_listed_unwaited(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct fdsets_unwaited *u = arg;

	if (r->status == QMP_OK)
		fdsets_release(u->vm, NULL, u->id, r->result);
	else if (r->status != QMP_DISCONNECTED)
		log_warn("vm %s: %s: query-fdsets failed: %s; its images stay open in qemu",
		         u->vm->name, u->id, r->error_desc);
	free(u->id);
	free(u);
}

/* Lists the fdsets to find those of disk id (after its own nodes' deletion was sent). */
static void
disk_images_release(struct vm *vm, struct hp_op *op, const char *id)
{
	struct fdsets_unwaited *u;
	char *cause = NULL;

	if (op != NULL) {
		if (!hp_send(op, "query-fdsets", NULL, fdsets_listed))
			hp_error(op, PROTO_ERR_FAILED,
			         "vm %s: %s removed from the guest, but query-fdsets: qmp "
			         "connection lost",
			         vm->name, id);
		return;
	}
	u = xcalloc(1, sizeof *u);
	u->vm = vm;
	u->id = xstrdup(id);
	if (qmp_execute(vm->qmp, "query-fdsets", NULL, 0, fdsets_listed_unwaited, u, &cause) < 0) {
		free(u->id);
		free(u);
	}
	free(cause);
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
			disk_images_release(vm, op, id);
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
			vm_reload_definition(vm, false);
			vm_apply_live_edit(vm, NULL, NULL, id);
		}
	}
	log_info("vm %s: %s %s removed%s%s", vm->name, dev->is_disk ? "disk" : "nic", id,
	         dev->port ? ", port " : "", dev->port ? dev->port : "");
	device_event(vm, "detached", dev->is_disk, id, dev->persist_removal);
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
	res = detach_result(vm, op->id, true);
	hp_finish(op, res, PROTO_OK, NULL);
}

/* DEVICE_DELETED: the guest released a device. The detach waiting for it finishes; a removal
 * nobody waits for any more (its detach timed out) is completed all the same. */
void
vm_hotplug_device_deleted(struct vm *vm, struct json_object *data)
{
	struct vm_job *job = vm_job_current(vm);
	struct hp_op *op;
	struct json_object *v;
	struct vm_dev *dev;

	/* Each virtio device_del brings two DEVICE_DELETED: only the second names the device. */
	if (!json_object_object_get_ex(data, "device", &v))
		return;
	dev = vm_devs_find(vm, json_object_get_string(v));
	if (dev == NULL)
		return;
	/* The detach waiting for it: a detach job's, or one of several in a job (apply). */
	op =
	    job != NULL && job->kind->detach_op != NULL ? job->kind->detach_op(job, dev->id) : NULL;
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

/* device_del was refused: the device stays, and so does its record (no longer "leaving"). */
static void
device_del_refused(struct hp_op *op, enum proto_err code, const char *why)
{
	struct vm_dev *dev = vm_devs_find(op->vm, op->id);
	char *msg;

	if (dev != NULL) {
		dev->pending_removal = dev->persist_removal = false;
		if (vm_devs_save(op->vm) < 0)
			log_error("vm %s: %s: its record still says removal pending: %s",
			          op->vm->name, op->id, strerror(errno));
	}
	msg = xasprintf("vm %s: device_del %s failed: %s", op->vm->name, op->id, why);
	hp_finish(op, NULL, code, msg);
	free(msg);
}

static void
device_del_sent(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct hp_op *op = arg;

	hp_answered(op);
	if (r->status != QMP_OK) {
		device_del_refused(op, vm_qmp_err(r), r->error_desc);
		return;
	}
	if (op->released && op->pending == 0) /* DEVICE_DELETED came before this reply */
		hp_detached(op);
}

static struct hp_op *
detach_job_op(struct vm_job *job, const char *id)
{
	return job->data;
}

/* The guest did not let go in time: the device stays "removal pending" until it does. */
static void
hp_detach_timeout(struct hp_op *op)
{
	struct vm *vm = op->vm;
	char *msg;

	if (op->released) {
		msg = xasprintf("vm %s: %s removed from the guest, but QEMU did not confirm the "
		                "deletion of its backend within %" PRIu64 " ms",
		                vm->name, op->id, op->timeout_ms);
		hp_finish(op, NULL, PROTO_ERR_TIMEOUT, msg);
		free(msg);
		return;
	}
	msg = xasprintf("vm %s: device %s: the guest did not release it within %" PRIu64
	                " ms; removal pending (completes when the guest lets go)",
	                vm->name, op->id, op->timeout_ms);
	{
		const struct vm_dev *dev = vm_devs_find(vm, op->id);

		device_event(vm, "removal-pending", dev != NULL && dev->is_disk, op->id, false);
	}
	hp_finish(op, NULL, PROTO_ERR_TIMEOUT, msg);
	free(msg);
}

static void
detach_timer(struct vm_job *job)
{
	hp_detach_timeout(job->data);
}

/* Records the removal of dev, then sends device_del on op's job. Returns false when the record
 * cannot be written: nothing was changed, cb has its answer and op is freed. */
static bool
detach_begin(struct hp_op *op, struct vm_dev *dev, vm_done_cb cb, void *arg)
{
	struct vm *vm = op->vm;

	if (dev->is_disk && dev->disk.bus == CFG_BUS_SATA) {
		refuse(cb, arg, PROTO_ERR_INVALID,
		       xasprintf("vm %s: disk %s is on the SATA controller, which has no hot-plug: "
		                 "remove it from the definition (detach --persist on the stopped "
		                 "vm, or edit the file) and restart",
		                 vm->name, op->id));
		hp_free(op);
		return false;
	}
	/* The removal is recorded before device_del goes out: a qvmd restarted after the guest
	 * let go must know the device is leaving (vm_hotplug_reconcile finishes the removal). */
	dev->pending_removal = true;
	dev->persist_removal = op->persist;
	if (vm_devs_save(vm) < 0) {
		int err = errno;

		dev->pending_removal = dev->persist_removal = false;
		refuse(cb, arg, PROTO_ERR_FAILED,
		       xasprintf("vm %s: cannot record the removal of %s in the run directory "
		                 "(%s): %s; nothing was changed",
		                 vm->name, op->id, vm->env.conf->run_dir, strerror(err)));
		hp_free(op);
		return false;
	}
	return true;
}

/* Sends device_del (the removal is recorded). */
static void
detach_send(struct hp_op *op)
{
	hp_batch(op);
	if (!hp_send(op, "device_del", obj1("id", op->id), device_del_sent))
		device_del_refused(op, PROTO_ERR_FAILED, "qmp connection lost");
}

void
vm_detach_device(struct vm *vm, const char *id, bool persist, uint64_t timeout_ms, vm_done_cb cb,
                 void *arg)
{
	struct hp_op *op;
	struct vm_dev *dev;
	char *cause = NULL;
	bool in_file;

	if (!vm_job_admit(vm, VM_OP_DETACH, cb, arg))
		return;
	if (refuse_stopped(vm, persist, cb, arg))
		return;
	in_file = vm->cfg && (cfg_vm_disk(vm->cfg, id) || cfg_vm_net(vm->cfg, id));
	if (!vm_is_active(vm)) {
		if (cfg_write_remove_device(vm->cfg->path, id, &cause) < 0) {
			refuse(cb, arg, PROTO_ERR_NOT_FOUND,
			       xasprintf("vm %s: %s", vm->name, cause));
			free(cause);
			return;
		}
		log_info("vm %s: %s removed from the definition", vm->name, id);
		persist_only_result(vm, id, false, cb, arg);
		return;
	}
	dev = vm_devs_find(vm, id);
	if (dev == NULL && in_file && persist) {
		/* Only in the definition (e.g. detached live earlier): the file alone changes. */
		if (cfg_write_remove_device(vm->cfg->path, id, &cause) < 0) {
			refuse(cb, arg, PROTO_ERR_FAILED, xasprintf("vm %s: %s", vm->name, cause));
			free(cause);
			return;
		}
		log_info("vm %s: %s removed from the definition (it was not live)", vm->name, id);
		persist_only_result(vm, id, false, cb, arg);
		return;
	}
	if (dev == NULL) {
		refuse(cb, arg, PROTO_ERR_NOT_FOUND,
		       in_file ? xasprintf("vm %s: %s is not live, only in the definition (use "
		                           "--persist to remove it from there)",
		                           vm->name, id)
		               : xasprintf("vm %s: no device '%s'", vm->name, id));
		return;
	}
	if (dev->pending_removal) {
		refuse(cb, arg, PROTO_ERR_BUSY,
		       xasprintf("vm %s: busy: removal of %s in progress (waiting for the guest)",
		                 vm->name, id));
		return;
	}
	op = hp_new(vm);
	op->detach = true;
	op->id = xstrdup(id);
	op->persist = persist;
	op->timeout_ms = timeout_ms ? timeout_ms : DETACH_TIMEOUT_MS;
	if (!detach_begin(op, dev, cb, arg))
		return;
	op->done = hp_job_op_done;
	op->job = vm_job_new(vm, &detach_kind, op, cb, arg);
	vm_job_arm(op->job, op->timeout_ms);
	detach_send(op);
}

void
vm_hotplug_detach(struct vm_job *job, const char *id, struct hp_op **slot, vm_done_cb cb, void *arg)
{
	struct vm *vm = job->vm;
	struct vm_dev *dev = vm_devs_find(vm, id);
	struct hp_op *op;

	*slot = NULL;
	if (dev == NULL) {
		refuse(cb, arg, PROTO_ERR_NOT_FOUND,
		       xasprintf("vm %s: no device '%s'", vm->name, id));
		return;
	}
	if (dev->pending_removal) {
		refuse(cb, arg, PROTO_ERR_BUSY,
		       xasprintf("vm %s: removal of %s pending (waiting for the guest)", vm->name,
		                 id));
		return;
	}
	op = hp_new(vm);
	op->detach = true;
	op->id = xstrdup(id);
	op->timeout_ms = DETACH_TIMEOUT_MS;
	if (!detach_begin(op, dev, cb, arg))
		return;
	hp_join_group(op, job, slot, cb, arg);
	detach_send(op);
}

struct hp_op *
vm_hotplug_op_detaching(struct hp_op *op, const char *id)
{
	return op != NULL && op->detach && strcmp(op->id, id) == 0 ? op : NULL;
}

void
vm_hotplug_op_timeout(struct hp_op *op)
{
	if (op->detach)
		hp_detach_timeout(op);
}

void
vm_hotplug_op_qemu_gone(struct hp_op *op)
{
	if (!op->detach)
		hp_drop_created(op);
}

void
vm_hotplug_op_free(struct hp_op *op)
{
	if (op != NULL && op->slot != NULL)
		*op->slot = NULL;
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
		disk_images_release(vm, NULL, dev->id);
		if (dev->created && unlink(dev->disk.file) == 0)
			log_info("vm %s: removed image %s created for it", vm->name,
			         dev->disk.file);
	} else {
		snprintf(name, sizeof name, ARGV_NETDEV_FMT, dev->id);
		del_unwaited(vm, "netdev_del", "id", name, undo_del_done);
		if (dev->net.type != CFG_NET_USER) {
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

/* One `devices` request: query-pci (addresses) and qom-list /machine/peripheral (which devices
 * QEMU has), pipelined; answered when both are in. */
struct devices_query {
	struct vm *vm;
	vm_done_cb cb;
	void *arg;
	unsigned pending;
	struct json_object *pci;  /* query-pci result, or NULL */
	struct json_object *peri; /* qom-list result, or NULL */
};

/* A cdrom drive's row: its medium (what the drive holds when live, else what the file says). */
static struct json_object *
cdrom_json(const struct cfg_cdrom *cd, bool live, bool persistent)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "id", json_object_new_string(cd->id));
	json_object_object_add(o, "kind", json_object_new_string("cdrom"));
	json_object_object_add(o, "medium", cd->file ? json_object_new_string(cd->file) : NULL);
	json_object_object_add(o, "boot", json_object_new_boolean(cd->boot));
	json_object_object_add(o, "bus", NULL);
	json_object_object_add(o, "pending_attach", json_object_new_boolean(0));
	json_object_object_add(o, "pending_removal", json_object_new_boolean(0));
	json_object_object_add(o, "pci_addr", NULL);
	json_object_object_add(o, "live", json_object_new_boolean(live));
	json_object_object_add(o, "persistent", json_object_new_boolean(persistent));
	return o;
}

/* Builds the reply: the tracked devices (live as QOM shows them when it answered, PCI address
 * when query-pci knows it), then the definition's devices that are not live; then the cdrom
 * drives the QEMU runs with, and the definition's others. */
static void
devices_reply(struct vm *vm, struct json_object *pci, struct json_object *peri, vm_done_cb cb,
              void *arg)
{
	struct json_object *res = json_object_new_object(), *arr = json_object_new_array();
	const struct vm_config *cfg = vm->cfg;
	bool active = vm_is_active(vm);
	char addr[16];

	for (size_t i = 0; active && i < vm->ndevs; i++) {
		struct vm_dev *dev = vm->devs[i];
		struct json_object *o = vm_dev_json(dev);
		bool live = peri ? peripheral_has(peri, dev->id) : !dev->attaching;

		json_object_object_add(o, "pci_addr",
		                       pci && pci_find_all(pci, dev->id, addr, sizeof addr)
		                           ? json_object_new_string(addr)
		                           : NULL);
		json_object_object_add(o, "live", json_object_new_boolean(live));
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
	for (size_t i = 0; active && vm->live_cfg && i < vm->live_cfg->ncdroms; i++) {
		const struct cfg_cdrom *cd = &vm->live_cfg->cdroms[i];

		json_object_array_add(arr,
		                      cdrom_json(cd, peri ? peripheral_has(peri, cd->id) : true,
		                                 cfg && cfg_vm_cdrom(cfg, cd->id)));
	}
	for (size_t i = 0; cfg && i < cfg->ncdroms; i++) {
		if (active && vm->live_cfg && cfg_vm_cdrom(vm->live_cfg, cfg->cdroms[i].id))
			continue;
		json_object_array_add(arr, cdrom_json(&cfg->cdroms[i], false, true));
	}
	json_object_object_add(res, "devices", arr);
	cb(res, PROTO_OK, NULL, arg);
}

static void
devices_part_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct devices_query *q = arg;

	if (r->status == QMP_OK && strcmp(r->command, "query-pci") == 0)
		q->pci = json_object_get(r->result);
	else if (r->status == QMP_OK)
		q->peri = json_object_get(r->result);
	if (--q->pending > 0)
		return;
	devices_reply(q->vm, q->pci, q->peri, q->cb, q->arg);
	json_object_put(q->pci);
	json_object_put(q->peri);
	free(q);
}

void
vm_devices(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct devices_query *q;
	struct json_object *args;
	char *cause = NULL;
	bool sent;

	if (vm->qmp == NULL || vm->qmp_closed || !qmp_conn_is_ready(vm->qmp)) {
		devices_reply(vm, NULL, NULL, cb, arg);
		return;
	}
	q = xcalloc(1, sizeof *q);
	q->vm = vm;
	q->cb = cb;
	q->arg = arg;
	q->pending = 2;
	args = obj1("path", "/machine/peripheral");
	sent = qmp_execute(vm->qmp, "qom-list", args, VM_QUERY_TIMEOUT_MS, devices_part_done, q,
	                   &cause) >= 0;
	json_object_put(args);
	if (!sent) {
		free(cause);
		free(q);
		devices_reply(vm, NULL, NULL, cb, arg);
		return;
	}
	if (qmp_execute(vm->qmp, "query-pci", NULL, VM_QUERY_TIMEOUT_MS, devices_part_done, q,
	                &cause) < 0) {
		free(cause);
		q->pending--; /* the qom-list reply answers alone */
	}
}
