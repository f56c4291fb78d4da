/*
 * qvmctl create and undefine: the daemon adds a VM from a new definition file, or drops a stopped
 * VM with its file (and, when asked, its images). The daemon does the work because it may write
 * vm_dir and image_dirs where the requester (a socket_group member) may not.
 *
 * create: everything is checked before anything is written (the name is free, the files named are
 * ones the requester may give, the text is validated by the same loader as reload), then the
 * images are created (qemu-img, asynchronously), then the file is written, then the VM is loaded
 * and started if asked. A failure at any step leaves nothing behind: no file, no new image.
 * qvmd killed while the images are made leaves no definition; the images being made (qemu-img
 * goes on without qvmd) are listed in a record that makes the next create of the name refuse,
 * naming them, until they are dealt with (vm_define_leftovers).
 */
#include "daemon.h"

#include "cfg.h"
#include "clock.h"
#include "log.h"
#include "vm.h"
#include "vm_define.h"
#include "vm_uid.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where a new definition is validated before anything else is written: a name no VM can have
 * (CFG_NAME_RESERVED), so it never meets a VM's run directory. */
#define DEFINE_SCRATCH CFG_NAME_RESERVED "define"

/* A create in progress: its images are being made; the VM is not in the daemon's table yet. */
struct define_op {
	struct daemon *d;
	struct define_op *next;
	char *name;
	char *path; /* vm_dir/NAME.ini */
	char *text; /* what goes into it */
	struct vm *vm;
	struct vm_define_images *images;
	struct json_object *created; /* the images made, for the reply */
	bool start;
	vm_done_cb cb;
	void *arg;
};

static void define_fail(vm_done_cb cb, void *arg, enum proto_err code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
define_fail(vm_done_cb cb, void *arg, enum proto_err code, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	cb(NULL, code, msg, arg);
	free(msg);
}

/* The rule of attach-disk for files qvmd opens for an unprivileged QEMU (vm_image_path_allowed);
 * root may name any absolute path (an LVM volume). */
static bool
file_allowed(const struct daemon_config *conf, uid_t uid, const char *file)
{
	return uid == 0 || vm_image_path_allowed(conf, file, true);
}

static bool
id_taken(const struct vm_config *cfg, const char *id)
{
	for (size_t i = 0; i < cfg->ndisks; i++)
		if (cfg->disks[i].id != NULL && strcmp(cfg->disks[i].id, id) == 0)
			return true;
	for (size_t i = 0; i < cfg->nnets; i++)
		if (cfg->nets[i].id != NULL && strcmp(cfg->nets[i].id, id) == 0)
			return true;
	return false;
}

/* The first "PREFIXn" (n = 0, 1 ...) that no device of cfg has. */
static char *
next_id(const struct vm_config *cfg, const char *prefix)
{
	for (unsigned n = 0;; n++) {
		char *id = xasprintf("%s%u", prefix, n);

		if (!id_taken(cfg, id))
			return id;
		free(id);
	}
}

/* Fills the disks of cfg from the request. Returns PROTO_OK or an error with *cause. */
static enum proto_err
build_disks(struct daemon *d, const struct daemon_create *a, const struct cfg_variant *variant,
            struct vm_config *cfg, char **cause)
{
	struct stat st;

	cfg->disks = xcalloc(a->ndisks + 1, sizeof *cfg->disks);
	/* Counted at once: the ids set before a refusal are freed with cfg. */
	cfg->ndisks = a->ndisks;
	/* Named disks first, so that a generated id never takes a name given later. */
	for (size_t i = 0; i < a->ndisks; i++) {
		const char *id = a->disks[i].id;

		if (id == NULL)
			continue;
		if (!cfg_valid_device_id(id)) {
			*cause = xasprintf("disk '%s': not a valid id (a letter, then up to 23 "
			                   "letters, digits, '_' or '-')",
			                   id);
			return PROTO_ERR_INVALID;
		}
		for (size_t k = 0; k < i; k++) {
			if (a->disks[k].id != NULL && strcmp(a->disks[k].id, id) == 0) {
				*cause = xasprintf("disk %s: id given twice", id);
				return PROTO_ERR_INVALID;
			}
		}
		cfg->disks[i].id = xstrdup(id);
	}
	for (size_t i = 0; i < a->ndisks; i++) {
		const struct daemon_create_disk *in = &a->disks[i];
		struct cfg_disk *disk = &cfg->disks[i];

		if (disk->id == NULL)
			disk->id = next_id(cfg, "disk");
		disk->bus = variant->bus;
		disk->boot = i == 0;
		disk->size = in->size;
		disk->format = CFG_FORMAT_QCOW2;
		if (in->format != NULL && cfg_format_parse(in->format, &disk->format) < 0) {
			*cause = xasprintf("disk %s: format '%s' (use qcow2 or raw)", disk->id,
			                   in->format);
			return PROTO_ERR_INVALID;
		}
		if (in->path == NULL) {
			/* A new image: image_dirs[0]/NAME-ID.qcow2. */
			if (in->size == 0) {
				*cause = xasprintf("disk %s: a size is required for a new image",
				                   disk->id);
				return PROTO_ERR_INVALID;
			}
			if (d->conf->image_dirs == NULL || d->conf->image_dirs[0] == NULL) {
				*cause = xstrdup("no image_dirs in qvmd.conf to create images in");
				return PROTO_ERR_FAILED;
			}
			disk->file = xasprintf("%s/%s-%s.%s", d->conf->image_dirs[0], a->name,
			                       disk->id, cfg_format_name(disk->format));
			if (lstat(disk->file, &st) == 0) {
				*cause = xasprintf("disk %s: %s already exists (name it with "
				                   "--disk path=%s to use it)",
				                   disk->id, disk->file, disk->file);
				return PROTO_ERR_INVALID;
			}
			continue;
		}
		disk->file = xstrdup(in->path);
		if (disk->file[0] != '/') {
			*cause = xasprintf("disk %s: '%s' is not an absolute path", disk->id,
			                   disk->file);
			return PROTO_ERR_INVALID;
		}
		/* The right to the path first: a refusal tells nothing of what is outside. */
		if (!file_allowed(d->conf, a->uid, disk->file)) {
			*cause = xasprintf("disk %s: %s is not below an image directory qvmd may "
			                   "use (image_dirs in qvmd.conf)",
			                   disk->id, disk->file);
			return PROTO_ERR_DENIED;
		}
		if (lstat(disk->file, &st) < 0 && (errno != ENOENT || in->size == 0)) {
			*cause =
			    xasprintf("disk %s: %s: %s%s", disk->id, disk->file, strerror(errno),
			              errno == ENOENT ? " (give a size to create it)" : "");
			return PROTO_ERR_INVALID;
		}
	}
	for (size_t i = 0; i < cfg->ndisks; i++) {
		if (cfg_disk_check(&cfg->disks[i], cause) < 0)
			return PROTO_ERR_INVALID;
	}
	return PROTO_OK;
}

/* Fills the NICs and the cdrom of cfg from the request. */
static enum proto_err
build_nets(struct daemon *d, const struct daemon_create *a, const struct cfg_variant *variant,
           struct vm_config *cfg, char **cause)
{
	cfg->nets = xcalloc(a->nnets + 1, sizeof *cfg->nets);
	for (size_t i = 0; i < a->nnets; i++) {
		const struct daemon_create_net *in = &a->nets[i];
		struct cfg_net *net = &cfg->nets[cfg->nnets];

		net->id = next_id(cfg, "net");
		cfg->nnets++;
		if (cfg_net_type_parse(in->type != NULL ? in->type : "user", &net->type) < 0) {
			*cause = xasprintf("net %s: type '%s' (use user, tap or bridge)", net->id,
			                   in->type);
			return PROTO_ERR_INVALID;
		}
		net->bridge = xstrdup(in->bridge);
		net->ifname = xstrdup(in->ifname);
		net->restricted = in->restricted;
		net->model =
		    cfg->machine == CFG_MACHINE_PC ? variant->model_pc : variant->model_q35;
		cfg_mac_derive(a->name, net->id, net->mac);
		if (cfg_net_check(net, cause) < 0)
			return PROTO_ERR_INVALID;
	}
	if (a->cdrom != NULL) {
		struct stat st;
		int fd;

		cfg->cdroms = xcalloc(1, sizeof *cfg->cdroms);
		cfg->ncdroms = 1;
		cfg->cdroms[0].id = xstrdup("cdrom0");
		cfg->cdroms[0].file = xstrdup(a->cdrom);
		cfg->cdroms[0].boot = true;
		if (a->cdrom[0] != '/') {
			*cause = xasprintf("cdrom: '%s' is not an absolute path", a->cdrom);
			return PROTO_ERR_INVALID;
		}
		/* Before qvmd opens it: root opening a device for a requester may do things. */
		if (!file_allowed(d->conf, a->uid, a->cdrom)) {
			*cause = xasprintf("cdrom: %s is not below an image directory qvmd may use "
			                   "(image_dirs in qvmd.conf)",
			                   a->cdrom);
			return PROTO_ERR_DENIED;
		}
		/* It must be there and readable now: an installer that is not is a typo. */
		fd = open(a->cdrom, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
			*cause = xasprintf("cdrom: %s: %s", a->cdrom,
			                   fd < 0 ? strerror(errno) : "not a file");
			if (fd >= 0)
				close(fd);
			return PROTO_ERR_INVALID;
		}
		close(fd);
	}
	return PROTO_OK;
}

/* The definition a request asks for (defaults: vcpus 1, q35, kvm, linux). */
static enum proto_err
build_config(struct daemon *d, const struct daemon_create *a, const char *path,
             struct vm_config **out, char **cause)
{
	struct vm_config *cfg = xcalloc(1, sizeof *cfg);
	const struct cfg_variant *variant;
	enum proto_err code;
	size_t n;

	*out = cfg;
	cfg->path = xstrdup(path);
	cfg->name = xstrdup(a->name);
	cfg->memory = a->memory;
	cfg->vcpus = a->vcpus > 0 ? a->vcpus : 1;
	/* The loader's defaults (cfg_vm.c): cfg_vm_format writes only what differs from them. */
	cfg->machine = CFG_MACHINE_Q35;
	cfg->accel = CFG_ACCEL_KVM;
	cfg->firmware = CFG_FIRMWARE_BIOS;
	cfg->shutdown_timeout_ms = 60 * 1000;
	cfg->restart = CFG_RESTART_NO;
	cfg->restart_limit = 5;
	cfg->hotplug_slots = 4;
	cfg->console = CFG_CONSOLE_LOG;
	cfg->autostart = a->autostart;
	if (a->machine != NULL && strcmp(a->machine, "q35") != 0) {
		if (strcmp(a->machine, "pc") != 0) {
			*cause = xasprintf("machine '%s' (use q35 or pc)", a->machine);
			return PROTO_ERR_INVALID;
		}
		cfg->machine = CFG_MACHINE_PC;
		cfg->hotplug_slots = 0; /* what the loader makes of pc: no spare root ports */
	}
	if (a->accel != NULL && strcmp(a->accel, "kvm") != 0) {
		if (strcmp(a->accel, "tcg") != 0) {
			*cause = xasprintf("accel '%s' (use kvm or tcg)", a->accel);
			return PROTO_ERR_INVALID;
		}
		cfg->accel = CFG_ACCEL_TCG;
	}
	variant = cfg_variant_find(a->os_variant != NULL ? a->os_variant : "linux");
	if (variant == NULL) {
		const struct cfg_variant *all = cfg_variants(&n);
		char *known = xstrdup(all[0].name), *t;

		for (size_t i = 1; i < n; i++) {
			t = xasprintf("%s, %s", known, all[i].name);
			free(known);
			known = t;
		}
		*cause = xasprintf("unknown --os-variant '%s' (known: %s)", a->os_variant, known);
		free(known);
		return PROTO_ERR_INVALID;
	}
	cfg->display = variant->display;
	if ((code = build_disks(d, a, variant, cfg, cause)) != PROTO_OK)
		return code;
	return build_nets(d, a, variant, cfg, cause);
}

/* Replaces every "from" in s by "to" (caller frees). */
static char *
replace_all(const char *s, const char *from, const char *to)
{
	size_t nf = strlen(from);
	char *out = xstrdup(""), *t;
	const char *p;

	while ((p = strstr(s, from)) != NULL) {
		t = xasprintf("%s%.*s%s", out, (int)(p - s), s, to);
		free(out);
		out = t;
		s = p + nf;
	}
	t = xasprintf("%s%s", out, s);
	free(out);
	return t;
}

/*
 * Validates text as the definition path would hold, with the loader reload uses, without touching
 * vm_dir: it is written to a scratch directory under run_dir and loaded from there. Returns the
 * loaded definition (its path set to path), or NULL with *cause (every error, naming path).
 */
static struct vm_config *
define_validate(struct daemon *d, const char *name, const char *path, const char *text,
                char **cause)
{
	char *dir = xasprintf("%s/%s", d->conf->run_dir, DEFINE_SCRATCH);
	char *scratch = xasprintf("%s/%s.ini", dir, name), *why = NULL;
	struct vm_config *cfg = NULL;
	struct cfg_errors errs;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		*cause = xasprintf("%s: %s", dir, strerror(errno));
		goto out;
	}
	unlink(scratch); /* left by a qvmd that died half-way */
	if (cfg_write_create(scratch, text, &why) < 0) {
		*cause = replace_all(why, scratch, path);
		free(why);
		goto out;
	}
	cfg_errors_init(&errs);
	cfg = cfg_vm_load(scratch, &errs);
	if (cfg == NULL)
		*cause = replace_all(errs.n > 0 ? errs.msgs[0] : "does not load", scratch, path);
	cfg_errors_free(&errs);
	unlink(scratch);
	if (cfg != NULL) {
		free(cfg->path);
		cfg->path = xstrdup(path);
	}
out:
	free(scratch);
	free(dir);
	return cfg;
}

static void
define_op_unlink(struct define_op *op)
{
	for (struct define_op **p = &op->d->defines; *p != NULL; p = &(*p)->next) {
		if (*p == op) {
			*p = op->next;
			return;
		}
	}
}

/* Ends a create (removed from the daemon's list); undo: what it made goes, the VM too. */
static void
define_op_free(struct define_op *op, bool undo)
{
	define_op_unlink(op);
	vm_define_images_free(op->images, undo);
	if (undo)
		vm_free(op->vm);
	json_object_put(op->created);
	free(op->name);
	free(op->path);
	free(op->text);
	free(op);
}

static struct json_object *
define_result(struct define_op *op, bool started)
{
	struct json_object *res = json_object_new_object();

	json_object_object_add(res, "name", json_object_new_string(op->name));
	json_object_object_add(res, "path", json_object_new_string(op->path));
	json_object_object_add(res, "definition", json_object_new_string(op->text));
	json_object_object_add(res, "images_created", json_object_get(op->created));
	json_object_object_add(res, "started", json_object_new_boolean(started));
	return res;
}

static void
define_started(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	struct define_op *op = arg;

	json_object_put(result);
	if (code != PROTO_OK) {
		/* The definition stays: the operator fixes the cause and starts it. */
		char *prefix = xasprintf("vm %s: ", op->name);
		size_t n = strlen(prefix);

		define_fail(op->cb, op->arg, code, "vm %s: defined in %s, but the start failed: %s",
		            op->name, op->path,
		            strncmp(message, prefix, n) == 0 ? message + n : message);
		free(prefix);
	} else {
		op->cb(define_result(op, true), PROTO_OK, NULL, op->arg);
	}
	define_op_free(op, false);
}

/* The images exist (or one failed): the file is written and the VM joins the daemon. */
static void
define_images_done(void *arg, char *error)
{
	struct define_op *op = arg;
	struct daemon *d = op->d;
	struct cfg_errors errs;
	struct vm_config *cfg;
	struct json_object *ev;
	const char *const *files;
	char *cause = NULL;
	size_t n;

	if (error != NULL) {
		define_fail(op->cb, op->arg, PROTO_ERR_FAILED, "vm %s: %s", op->name, error);
		free(error);
		define_op_free(op, true);
		return;
	}
	files = vm_define_images_list(op->images, &n);
	for (size_t i = 0; i < n; i++)
		json_object_array_add(op->created, json_object_new_string(files[i]));
	if (cfg_write_create(op->path, op->text, &cause) < 0) {
		define_fail(op->cb, op->arg, PROTO_ERR_FAILED, "vm %s: %s", op->name, cause);
		free(cause);
		define_op_free(op, true);
		return;
	}
	cfg_errors_init(&errs);
	cfg = cfg_vm_load(op->path, &errs);
	if (cfg == NULL) {
		/* Changed under us between writing and reading: take nothing half-way. */
		define_fail(op->cb, op->arg, PROTO_ERR_FAILED, "vm %s: %s", op->name,
		            errs.n > 0 ? errs.msgs[0] : "the new definition does not load");
		cfg_errors_free(&errs);
		unlink(op->path);
		define_op_free(op, true);
		return;
	}
	cfg_errors_free(&errs);
	vm_set_config(op->vm, cfg);
	vm_define_images_free(op->images, false);
	op->images = NULL;
	daemon_add_vm(d, op->vm);
	log_info("vm %s: defined in %s (qvmctl create)", op->name, op->path);

	ev = json_object_new_object();
	json_object_object_add(ev, "event", json_object_new_string("define"));
	json_object_object_add(ev, "vm", json_object_new_string(op->name));
	json_object_object_add(ev, "path", json_object_new_string(op->path));
	json_object_object_add(ev, "ts", json_object_new_int64(clock_now_ms()));
	daemon_publish(d, op->name, ev);

	if (op->start) {
		vm_start(op->vm, define_started, op);
		return;
	}
	op->cb(define_result(op, false), PROTO_OK, NULL, op->arg);
	define_op_free(op, false);
}

void
daemon_create(struct daemon *d, const struct daemon_create *a, vm_done_cb cb, void *arg)
{
	struct vm_config *cfg = NULL, *loaded;
	struct define_op *op;
	enum proto_err code;
	char *why, *cause = NULL, *path, *text, *header, *left;
	struct stat st;

	if ((why = cfg_name_problem(a->name)) != NULL) {
		define_fail(cb, arg, PROTO_ERR_INVALID, "create: %s", why);
		free(why);
		return;
	}
	if (daemon_find_vm(d, a->name) != NULL)
		return define_fail(cb, arg, PROTO_ERR_INVALID, "vm %s: already defined", a->name);
	for (op = d->defines; op != NULL; op = op->next) {
		if (strcmp(op->name, a->name) == 0)
			return define_fail(cb, arg, PROTO_ERR_BUSY, "vm %s: being created",
			                   a->name);
	}
	path = xasprintf("%s/%s.ini", d->conf->vm_dir, a->name);
	if (lstat(path, &st) == 0 || errno != ENOENT) {
		define_fail(cb, arg, PROTO_ERR_INVALID,
		            "vm %s: %s already exists (a definition that does not load: qvmd -n "
		            "says why)",
		            a->name, path);
		free(path);
		return;
	}
	if ((left = vm_define_leftovers(d->conf->state_dir, a->name)) != NULL) {
		define_fail(
		    cb, arg, PROTO_ERR_INVALID,
		    "vm %s: a create of it that qvmd did not finish left %s (perhaps "
		    "half-written): remove them, or remove %s/%s/creating to use them, then "
		    "create again",
		    a->name, left, d->conf->state_dir, a->name);
		free(left);
		free(path);
		return;
	}
	code = build_config(d, a, path, &cfg, &cause);
	if (code != PROTO_OK) {
		define_fail(cb, arg, code, "vm %s: %s", a->name, cause);
		free(cause);
		cfg_vm_free(cfg);
		free(path);
		return;
	}
	header = xasprintf("Written by qvmctl create (os variant %s). Edit it, then qvmctl "
	                   "reload or apply.",
	                   a->os_variant != NULL ? a->os_variant : "linux");
	text = cfg_vm_format(cfg, header);
	free(header);
	cfg_vm_free(cfg);
	if ((loaded = define_validate(d, a->name, path, text, &cause)) == NULL) {
		define_fail(cb, arg, PROTO_ERR_INVALID, "vm %s: %s", a->name, cause);
		free(cause);
		free(text);
		free(path);
		return;
	}

	op = xcalloc(1, sizeof *op);
	op->d = d;
	op->name = xstrdup(a->name);
	op->path = path;
	op->text = text;
	op->start = a->start;
	op->cb = cb;
	op->arg = arg;
	op->created = json_object_new_array();
	op->vm = vm_new(&d->vm_env, loaded);
	op->next = d->defines;
	d->defines = op;
	log_info("vm %s: creating (qvmctl create, uid %d)", a->name, (int)a->uid);
	op->images = vm_define_images(op->vm, define_images_done, op);
}

void
daemon_define_abort(struct daemon *d)
{
	while (d->defines != NULL) {
		struct define_op *op = d->defines;

		define_fail(op->cb, op->arg, PROTO_ERR_FAILED, "vm %s: qvmd is exiting", op->name);
		define_op_free(op, true);
	}
}

/* ---- undefine ---- */

/* Another VM whose definition names the image real (a real path), or NULL. */
static const char *
image_user(struct daemon *d, const struct vm *self, const char *real)
{
	for (size_t i = 0; i < d->nvms; i++) {
		const struct vm_config *cfg = vm_config(d->vms[i]);

		if (d->vms[i] == self || cfg == NULL)
			continue;
		for (size_t k = 0; k < cfg->ndisks; k++) {
			char other[PATH_MAX];

			if (realpath(cfg->disks[k].file, other) != NULL && strcmp(other, real) == 0)
				return vm_name(d->vms[i]);
		}
	}
	return NULL;
}

static void
add_kept(struct json_object *kept, const char *file, const char *reason)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "file", json_object_new_string(file));
	json_object_object_add(o, "reason", json_object_new_string(reason));
	json_object_array_add(kept, o);
}

/* Deletes the images of cfg that are below image_dirs and no other VM names; lists the rest. */
static void
undefine_images(struct daemon *d, struct vm *vm, const struct vm_config *cfg, bool remove,
                struct json_object *removed, struct json_object *kept)
{
	for (size_t i = 0; i < cfg->ndisks; i++) {
		const char *file = cfg->disks[i].file, *user;
		char real[PATH_MAX], *why;

		if (!remove) {
			add_kept(kept, file, "no --remove-disks");
			continue;
		}
		if (realpath(file, real) == NULL) {
			why = xasprintf("%s", strerror(errno));
			add_kept(kept, file, why);
			free(why);
			continue;
		}
		if (!vm_image_path_allowed(d->conf, real, false)) {
			add_kept(kept, file, "not below image_dirs");
			continue;
		}
		if ((user = image_user(d, vm, real)) != NULL) {
			why = xasprintf("also a disk of vm %s", user);
			add_kept(kept, file, why);
			free(why);
			continue;
		}
		if (unlink(real) < 0) {
			why = xasprintf("cannot remove: %s", strerror(errno));
			add_kept(kept, file, why);
			free(why);
			continue;
		}
		log_info("vm %s: removed image %s", vm_name(vm), real);
		json_object_array_add(removed, json_object_new_string(file));
	}
}

static void
vm_free_later(evutil_socket_t fd, short what, void *arg)
{
	vm_free(arg);
}

void
daemon_undefine(struct daemon *d, struct vm *vm, bool remove_disks, vm_done_cb cb, void *arg)
{
	const struct vm_config *cfg = vm_config(vm);
	struct json_object *res, *removed, *kept, *ev;
	char *backups, *cause = NULL;
	struct stat st;

	if (vm_is_active(vm) || cfg == NULL) {
		enum vm_state state = vm_state(vm);

		/* A QEMU with no state of its own yet (being adopted) counts as running. */
		return define_fail(
		    cb, arg, PROTO_ERR_BUSY, "vm %s: %s (stop it first)", vm_name(vm),
		    state == VM_STOPPED || state == VM_CRASHED ? "running" : vm_state_name(state));
	}
	if (!vm_define_idle(vm))
		return define_fail(cb, arg, PROTO_ERR_BUSY,
		                   "vm %s: a job runs on it (wait for it, or job-cancel it)",
		                   vm_name(vm));
	/* The file first: if it cannot go, nothing else has changed. */
	if (unlink(cfg->path) < 0 && errno != ENOENT)
		return define_fail(cb, arg, PROTO_ERR_FAILED, "vm %s: cannot remove %s: %s",
		                   vm_name(vm), cfg->path, strerror(errno));
	res = json_object_new_object();
	removed = json_object_new_array();
	kept = json_object_new_array();
	json_object_object_add(res, "name", json_object_new_string(vm_name(vm)));
	json_object_object_add(res, "removed_file", json_object_new_string(cfg->path));
	undefine_images(d, vm, cfg, remove_disks, removed, kept);
	json_object_object_add(res, "removed_images", removed);
	json_object_object_add(res, "kept_images", kept);
	/* Backups are a record of the past, not part of the definition: they always stay. */
	backups = xasprintf("%s/%s", d->conf->backup_dir, vm_name(vm));
	json_object_object_add(res, "backups_kept",
	                       stat(backups, &st) == 0 ? json_object_new_string(backups) : NULL);
	free(backups);

	daemon_remove_vm(d, vm);
	vm_uid_release(d->vm_env.uids, vm_name(vm));
	if (vm_define_remove_dirs(vm, &cause) < 0) {
		log_warn("vm %s: %s", vm_name(vm), cause);
		json_object_object_add(res, "warning", json_object_new_string(cause));
		free(cause);
	}
	log_info("vm %s: undefined (%s removed)", vm_name(vm), cfg->path);
	ev = json_object_new_object();
	json_object_object_add(ev, "event", json_object_new_string("undefine"));
	json_object_object_add(ev, "vm", json_object_new_string(vm_name(vm)));
	json_object_object_add(ev, "ts", json_object_new_int64(clock_now_ms()));
	daemon_publish(d, vm_name(vm), ev);
	cb(res, PROTO_OK, NULL, arg);
	/* The request may have come from one of the VM's own callbacks' neighbours: free it on
	 * the next loop turn, as a VM that goes on its own is. */
	event_base_once(d->base, -1, EV_TIMEOUT, vm_free_later, vm, NULL);
}
