/*
 * supervisor/qvmd/argv: turns a validated VM definition into QEMU's argument vector. Everything a
 * config value can reach is either a JSON string built with json-c (devices, block nodes, netdevs)
 * or an option QEMU does not split on commas (-kernel, -append, -pidfile); the remaining option
 * strings only embed the run and state directories, which are refused when they contain a comma,
 * and (-add-fd) descriptor numbers and block node names made of validated device ids. Disk images,
 * cdrom media and the UEFI variable store are never named: QEMU gets them as fdsets of descriptors
 * the daemon opened (env->disks, env->cdroms, env->fw_vars), backing chains included.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <json-c/json.h>

#include "argv.h"
#include "xalloc.h"

/* pc: slot 0 is the host bridge and slot 1 the PIIX3; the rest of pci.0 is ours. */
#define ARGV_PC_MAX_DEVICES 30

#define ARGV_SANDBOX "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
#define ARGV_FW_CODE "qvmd.fw-code"

/* A growing NULL-terminated vector. */
struct argv_vec {
	char **v;
	size_t n;
	size_t cap;
};

/* Appends s, taking ownership. */
static void
argv_push_owned(struct argv_vec *a, char *s)
{
	if (a->n + 2 > a->cap) {
		size_t cap = a->cap == 0 ? 64 : a->cap * 2;
		a->v = xrealloc(a->v, cap * sizeof(*a->v));
		a->cap = cap;
	}
	a->v[a->n++] = s;
	a->v[a->n] = NULL;
}

static void
argv_push(struct argv_vec *a, const char *s)
{
	argv_push_owned(a, xstrdup(s));
}

static void
argv_push2(struct argv_vec *a, const char *opt, const char *value)
{
	argv_push(a, opt);
	argv_push(a, value);
}

/* Appends opt and obj serialized as compact JSON; puts obj. */
static void
argv_push_json(struct argv_vec *a, const char *opt, struct json_object *obj)
{
	const char *text;

	text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
	                                               JSON_C_TO_STRING_NOSLASHESCAPE);
	if (text == NULL)
		fatal("out of memory");
	argv_push2(a, opt, text);
	json_object_put(obj);
}

void
argv_free(char **argv)
{
	if (argv == NULL)
		return;
	for (char **p = argv; *p != NULL; p++)
		free(*p);
	free(argv);
}

char *
argv_shell_line(char *const *argv)
{
	static const char bare[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	                           "_@%+=:,./-";
	size_t len = 1, o = 0;
	char *line;

	for (char *const *a = argv; *a != NULL; a++)
		len += 3 + strlen(*a) * 4; /* a space, two quotes, each ' as '\'' */
	line = xmalloc(len);
	for (char *const *a = argv; *a != NULL; a++) {
		const char *s = *a;

		if (a != argv)
			line[o++] = ' ';
		if (*s != '\0' && s[strspn(s, bare)] == '\0') {
			memcpy(line + o, s, strlen(s));
			o += strlen(s);
			continue;
		}
		line[o++] = '\'';
		for (; *s != '\0'; s++) {
			if (*s == '\'') {
				memcpy(line + o, "'\\''", 4);
				o += 4;
			} else
				line[o++] = *s;
		}
		line[o++] = '\'';
	}
	line[o] = '\0';
	return line;
}

static struct json_object *
argv_jnew(void)
{
	struct json_object *o = json_object_new_object();

	if (o == NULL)
		fatal("out of memory");
	return o;
}

static void
argv_jadd(struct json_object *o, const char *key, struct json_object *value)
{
	if (value == NULL || json_object_object_add(o, key, value) != 0)
		fatal("out of memory");
}

static void
argv_jstr(struct json_object *o, const char *key, const char *value)
{
	argv_jadd(o, key, json_object_new_string(value));
}

static void
argv_jbool(struct json_object *o, const char *key, bool value)
{
	argv_jadd(o, key, json_object_new_boolean(value));
}

static void
argv_jint(struct json_object *o, const char *key, int64_t value)
{
	argv_jadd(o, key, json_object_new_int64(value));
}

/* Sets key to printf(fmt, id): the derived node, netdev and port names. */
static void argv_jid(struct json_object *o, const char *key, const char *fmt, const char *id)
    __attribute__((format(printf, 3, 0)));

static void
argv_jid(struct json_object *o, const char *key, const char *fmt, const char *id)
{
	char *name;

	name = xasprintf(fmt, id);
	argv_jstr(o, key, name);
	free(name);
}

char *
argv_node_file(const char *id, size_t i)
{
	return i == 0 ? xasprintf(ARGV_NODE_FILE_FMT, id) : xasprintf("%s.file%zu", id, i);
}

char *
argv_node_fmt(const char *id, size_t i)
{
	return i == 0 ? xasprintf(ARGV_NODE_FMT_FMT, id) : xasprintf("%s.fmt%zu", id, i);
}

static void
argv_jown(struct json_object *o, const char *key, char *value)
{
	argv_jstr(o, key, value);
	free(value);
}

/* The "filename" of an image QEMU gets as an fdset. */
static char *
argv_fdset_path(long long set)
{
	return xasprintf("/dev/fdset/%lld", set);
}

struct json_object *
argv_blockdev_file_json(const struct cfg_disk *disk, const struct argv_chain *chain, size_t i)
{
	struct json_object *o = argv_jnew(), *cache = argv_jnew();
	bool direct = disk->cache == CFG_CACHE_NONE || disk->cache == CFG_CACHE_DIRECTSYNC;

	argv_jstr(o, "driver", "file");
	argv_jown(o, "filename", argv_fdset_path(chain->images[i].set));
	argv_jown(o, "node-name", argv_node_file(disk->id, i));
	argv_jbool(o, "read-only", disk->readonly || i > 0);
	argv_jbool(cache, "direct", direct);
	argv_jbool(cache, "no-flush", disk->cache == CFG_CACHE_UNSAFE);
	argv_jadd(o, "cache", cache);
	return o;
}

struct json_object *
argv_blockdev_fmt_json(const struct cfg_disk *disk, const struct argv_chain *chain, size_t i)
{
	struct json_object *o = argv_jnew();
	bool qcow2 = chain->images[i].format == CFG_FORMAT_QCOW2;

	argv_jstr(o, "driver", qcow2 ? "qcow2" : "raw");
	argv_jown(o, "file", argv_node_file(disk->id, i));
	argv_jown(o, "node-name", argv_node_fmt(disk->id, i));
	argv_jbool(o, "read-only", disk->readonly || i > 0);
	if (qcow2 && i + 1 < chain->n)
		argv_jown(o, "backing", argv_node_fmt(disk->id, i + 1));
	else if (qcow2 && json_object_object_add(o, "backing", NULL) != 0)
		fatal("out of memory"); /* null: no backing file, whatever the header says */
	return o;
}

struct json_object *
argv_disk_device_json(const struct cfg_disk *disk, const char *bus)
{
	struct json_object *o = argv_jnew();

	argv_jstr(o, "driver", "virtio-blk-pci");
	argv_jstr(o, "id", disk->id);
	argv_jid(o, "drive", ARGV_NODE_FMT_FMT, disk->id);
	if (bus != NULL)
		argv_jstr(o, "bus", bus);
	/* Write-through modes: the guest sees no volatile cache, so every write is stable. */
	if (disk->cache == CFG_CACHE_WRITETHROUGH || disk->cache == CFG_CACHE_DIRECTSYNC)
		argv_jstr(o, "write-cache", "off");
	return o;
}

struct json_object *
argv_netdev_json(const struct cfg_net *net, const char *fd_name)
{
	struct json_object *o = argv_jnew();

	if (net->type == CFG_NET_USER) {
		argv_jstr(o, "type", "user");
		argv_jid(o, "id", ARGV_NETDEV_FMT, net->id);
		if (net->restricted)
			argv_jbool(o, "restrict", true);
		return o;
	}
	argv_jstr(o, "type", "tap");
	argv_jid(o, "id", ARGV_NETDEV_FMT, net->id);
	if (fd_name != NULL) {
		argv_jstr(o, "fd", fd_name);
	} else {
		/* Only a tap NIC can get here without a descriptor: QEMU opens the named device. */
		if (net->ifname != NULL)
			argv_jstr(o, "ifname", net->ifname);
		argv_jstr(o, "script", "no");
		argv_jstr(o, "downscript", "no");
	}
	return o;
}

/* The QEMU device of a NIC model. */
static const char *
argv_net_driver(enum cfg_net_model model)
{
	switch (model) {
	case CFG_NET_MODEL_E1000:
		return "e1000";
	case CFG_NET_MODEL_E1000E:
		return "e1000e";
	case CFG_NET_MODEL_VIRTIO:
		break;
	}
	return "virtio-net-pci";
}

struct json_object *
argv_net_device_json(const struct cfg_net *net, const char *bus)
{
	struct json_object *o = argv_jnew();
	char mac[18];

	cfg_mac_format(net->mac, mac);
	argv_jstr(o, "driver", argv_net_driver(net->model));
	argv_jstr(o, "id", net->id);
	argv_jid(o, "netdev", ARGV_NETDEV_FMT, net->id);
	argv_jstr(o, "mac", mac);
	if (bus != NULL)
		argv_jstr(o, "bus", bus);
	return o;
}

/*
 * A pcie-root-port on pcie.0. Chassis numbers must be unique; the slot number doubles as the
 * guest's hot-plug slot name. io-reserve 0 tells the firmware not to reserve 4K of I/O space
 * behind the port: virtio devices on PCIe ports are modern-only and need none, and I/O space
 * (64K) would otherwise run out after a dozen ports.
 */
static void
argv_push_port(struct argv_vec *a, const char *id, unsigned chassis)
{
	struct json_object *o = argv_jnew();

	argv_jstr(o, "driver", "pcie-root-port");
	argv_jstr(o, "id", id);
	argv_jstr(o, "bus", "pcie.0");
	argv_jint(o, "chassis", chassis);
	argv_jint(o, "slot", chassis);
	argv_jint(o, "io-reserve", 0);
	argv_push_json(a, "-device", o);
}

/* Whether an image has the descriptors -add-fd needs (numbers above stderr's). */
static bool
argv_image_ok(const struct argv_image *im, bool writable)
{
	return im->set >= 0 && im->fd_ro > 2 && (!writable || im->fd_rw > 2);
}

/* Disks on virtio (a PCI device each; bus = sata disks are on the machine's own controller). */
static size_t
argv_virtio_disks(const struct vm_config *vm)
{
	size_t n = 0;

	for (size_t i = 0; i < vm->ndisks; i++)
		if (vm->disks[i].bus == CFG_BUS_VIRTIO)
			n++;
	return n;
}

/* Whether the devices fit: q35's root ports (virtio disks, NICs, spare ports), pc's PCI slots
 * (the same devices and the VGA of display = vnc), the SATA/IDE positions. */
static int
argv_check_slots(const struct vm_config *vm, char **cause)
{
	size_t nvirtio = argv_virtio_disks(vm), nsata = vm->ndisks - nvirtio + vm->ncdroms;
	size_t max_sata = vm->machine == CFG_MACHINE_Q35 ? CFG_SATA_MAX_Q35 : CFG_SATA_MAX_PC;

	if (vm->machine == CFG_MACHINE_Q35) {
		size_t ports = nvirtio + vm->nnets + vm->hotplug_slots;

		if (ports > ARGV_MAX_PORTS) {
			*cause = xasprintf("vm %s: %zu virtio disks, %zu NICs and %u hot-plug "
			                   "slots need %zu PCIe root ports, at most %d fit",
			                   vm->name, nvirtio, vm->nnets, vm->hotplug_slots, ports,
			                   ARGV_MAX_PORTS);
			return -1;
		}
	} else if (nvirtio + vm->nnets + (vm->display == CFG_DISPLAY_VNC) > ARGV_PC_MAX_DEVICES) {
		*cause = xasprintf("vm %s: %zu virtio disks and %zu NICs do not fit on pc's PCI "
		                   "bus (at most %d devices%s)",
		                   vm->name, nvirtio, vm->nnets, ARGV_PC_MAX_DEVICES,
		                   vm->display == CFG_DISPLAY_VNC ? ", one of them the VGA" : "");
		return -1;
	}
	if (nsata > max_sata) {
		*cause = xasprintf("vm %s: %zu sata disks and cdroms do not fit on the %s "
		                   "machine's SATA/IDE controller (at most %zu)",
		                   vm->name, nsata, vm->machine == CFG_MACHINE_Q35 ? "q35" : "pc",
		                   max_sata);
		return -1;
	}
	return 0;
}

/* Checks what the JSON builders cannot: values that end up in comma-separated option strings. */
static int
argv_check(const struct vm_config *vm, const struct argv_env *env, char **cause)
{
	struct sockaddr_un sun;
	size_t n;

	if (!cfg_valid_name(vm->name)) {
		*cause = xasprintf("vm %s: invalid name", vm->name);
		return -1;
	}
	if (env->qemu == NULL || env->run_dir == NULL || env->state_dir == NULL) {
		*cause = xasprintf("vm %s: qemu, run and state directories are required", vm->name);
		return -1;
	}
	if (strchr(env->run_dir, ',') != NULL) {
		*cause =
		    xasprintf("vm %s: run directory '%s' contains a comma", vm->name, env->run_dir);
		return -1;
	}
	if (strchr(env->state_dir, ',') != NULL) {
		*cause = xasprintf("vm %s: state directory '%s' contains a comma", vm->name,
		                   env->state_dir);
		return -1;
	}
	n = strlen(env->run_dir) + 1 + strlen(vm->name) + strlen("/qmp.sock");
	if (env->qmp_fd < 0 && n >= sizeof(sun.sun_path)) {
		*cause = xasprintf("vm %s: qmp socket path is longer than %zu bytes", vm->name,
		                   sizeof(sun.sun_path) - 1);
		return -1;
	}
	n = strlen(env->run_dir) + 1 + strlen(vm->name) + 1 + strlen(ARGV_CONSOLE_SOCKET);
	if (vm->console == CFG_CONSOLE_LOG && n >= sizeof(sun.sun_path)) {
		*cause = xasprintf("vm %s: console socket path is longer than %zu bytes", vm->name,
		                   sizeof(sun.sun_path) - 1);
		return -1;
	}
	if (vm->memory == 0 || vm->memory % (1024 * 1024) != 0) {
		*cause = xasprintf("vm %s: memory must be a non-zero multiple of 1M", vm->name);
		return -1;
	}
	if (vm->vcpus == 0) {
		*cause = xasprintf("vm %s: vcpus must be at least 1", vm->name);
		return -1;
	}
	if (vm->firmware == CFG_FIRMWARE_UEFI && env->ovmf_code == NULL) {
		*cause = xasprintf("vm %s: uefi firmware needs an OVMF code file", vm->name);
		return -1;
	}
	if (vm->firmware == CFG_FIRMWARE_UEFI &&
	    (env->fw_vars == NULL || !argv_image_ok(env->fw_vars, true))) {
		*cause = xasprintf("vm %s: uefi firmware needs descriptors of its variable store",
		                   vm->name);
		return -1;
	}
	for (size_t i = 0; i < vm->ndisks; i++) {
		const struct cfg_disk *disk = &vm->disks[i];
		const struct argv_chain *chain = env->disks != NULL ? &env->disks[i] : NULL;
		bool ok = chain != NULL && chain->n > 0 && chain->images[0].format == disk->format;

		if (!cfg_valid_device_id(disk->id)) {
			*cause = xasprintf("vm %s: invalid disk id '%s'", vm->name, disk->id);
			return -1;
		}
		if (disk->bus == CFG_BUS_SATA && disk->readonly) {
			*cause = xasprintf("vm %s: disk %s: a bus = sata disk cannot be read-only",
			                   vm->name, disk->id);
			return -1;
		}
		for (size_t j = 0; ok && j < chain->n; j++)
			ok = argv_image_ok(&chain->images[j], j == 0 && !disk->readonly) &&
			     (j + 1 == chain->n || chain->images[j].format == CFG_FORMAT_QCOW2);
		if (!ok) {
			*cause = xasprintf("vm %s: disk %s: no descriptors for its images",
			                   vm->name, disk->id);
			return -1;
		}
	}
	for (size_t i = 0; i < vm->nnets; i++) {
		const struct cfg_net *net = &vm->nets[i];
		int fd = env->net_fds != NULL ? env->net_fds[i] : -1;

		if (!cfg_valid_device_id(net->id)) {
			*cause = xasprintf("vm %s: invalid net id '%s'", vm->name, net->id);
			return -1;
		}
		if (net->type == CFG_NET_BRIDGE && fd < 0) {
			*cause = xasprintf("net %s: bridge NIC needs a tap fd", net->id);
			return -1;
		}
		if (net->type == CFG_NET_TAP && fd < 0 && net->ifname == NULL) {
			*cause = xasprintf("net %s: tap NIC needs an interface name", net->id);
			return -1;
		}
	}
	for (size_t i = 0; i < vm->ncdroms; i++) {
		const struct cfg_cdrom *cdrom = &vm->cdroms[i];
		const struct argv_image *im = env->cdroms != NULL ? &env->cdroms[i] : NULL;

		if (!cfg_valid_device_id(cdrom->id)) {
			*cause = xasprintf("vm %s: invalid cdrom id '%s'", vm->name, cdrom->id);
			return -1;
		}
		if (cdrom->file != NULL && (im == NULL || !argv_image_ok(im, false))) {
			*cause = xasprintf("vm %s: cdrom %s: no descriptor for its medium",
			                   vm->name, cdrom->id);
			return -1;
		}
	}
	return argv_check_slots(vm, cause);
}

/* -add-fd for an image's descriptors (O_RDWR first); opaque is a node name, never a comma. */
static void
argv_push_add_fd(struct argv_vec *a, const struct argv_image *im, const char *opaque)
{
	if (im->fd_rw >= 0) {
		argv_push(a, "-add-fd");
		argv_push_owned(a,
		                xasprintf("fd=%d,set=%lld,opaque=%s", im->fd_rw, im->set, opaque));
	}
	argv_push(a, "-add-fd");
	argv_push_owned(a, xasprintf("fd=%d,set=%lld,opaque=%s", im->fd_ro, im->set, opaque));
}

/* -machine, and the two firmware block nodes the machine's pflash properties refer to: the code
 * (read-only system data) by name, the VM's variable store as an fdset. */
static void
argv_push_machine(struct argv_vec *a, const struct vm_config *vm, const struct argv_env *env)
{
	const char *type = vm->machine == CFG_MACHINE_Q35 ? "q35" : "pc";
	struct json_object *o;

	if (vm->firmware != CFG_FIRMWARE_UEFI) {
		argv_push2(a, "-machine", type);
		return;
	}
	argv_push(a, "-machine");
	argv_push_owned(a, xasprintf("%s,pflash0=%s,pflash1=%s", type, ARGV_FW_CODE, ARGV_FW_VARS));

	o = argv_jnew();
	argv_jstr(o, "driver", "file");
	argv_jstr(o, "filename", env->ovmf_code);
	argv_jstr(o, "node-name", ARGV_FW_CODE);
	argv_jbool(o, "read-only", true);
	argv_push_json(a, "-blockdev", o);

	argv_push_add_fd(a, env->fw_vars, ARGV_FW_VARS);
	o = argv_jnew();
	argv_jstr(o, "driver", "file");
	argv_jown(o, "filename", argv_fdset_path(env->fw_vars->set));
	argv_jstr(o, "node-name", ARGV_FW_VARS);
	argv_jbool(o, "read-only", false);
	argv_push_json(a, "-blockdev", o);
}

static void
argv_push_qmp(struct argv_vec *a, const struct vm_config *vm, const struct argv_env *env)
{
	if (env->qmp_fd >= 0) {
		argv_push(a, "-chardev");
		argv_push_owned(
		    a, xasprintf("socket,id=qvmd.qmp,fd=%d,server=on,wait=off", env->qmp_fd));
		argv_push2(a, "-mon", "chardev=qvmd.qmp,mode=control");
		return;
	}
	argv_push(a, "-qmp");
	argv_push_owned(
	    a, xasprintf("unix:%s/%s/qmp.sock,server=on,wait=off", env->run_dir, vm->name));
}

/*
 * The first serial port. QEMU listens on a unix socket in the VM's own pidfile directory (only its
 * uid and root can reach it, see vm_start.c) and writes everything the guest sends to console.log
 * itself, whether or not qvmd's console relay (vm_console.c) is connected: the log never depends
 * on qvmd. wait=off: the guest runs without anyone connected.
 */
static void
argv_push_console(struct argv_vec *a, const struct vm_config *vm, const struct argv_env *env)
{
	struct json_object *o;

	if (vm->console != CFG_CONSOLE_LOG)
		return;
	argv_push(a, "-chardev");
	argv_push_owned(a, xasprintf("socket,id=qvmd.console,path=%s/%s/" ARGV_CONSOLE_SOCKET
	                             ",server=on,wait=off,logfile=%s/%s/" ARGV_CONSOLE_LOG
	                             ",logappend=on",
	                             env->run_dir, vm->name, env->state_dir, vm->name));
	o = argv_jnew();
	argv_jstr(o, "driver", "isa-serial");
	argv_jstr(o, "chardev", "qvmd.console");
	argv_push_json(a, "-device", o);
}

/* The root port name of a cold-plugged device on q35, NULL on pc (caller frees). */
static char *
argv_cold_port(const struct vm_config *vm, const char *id)
{
	if (vm->machine != CFG_MACHINE_Q35)
		return NULL;
	return xasprintf(ARGV_COLD_PORT_FMT, id);
}

/*
 * On q35 every root port comes before the devices: cold ports in device order (virtio disks,
 * then NICs), then the spare ones for hot-plug, numbered by chassis from 1.
 */
static void
argv_push_ports(struct argv_vec *a, const struct vm_config *vm)
{
	unsigned chassis = 1;
	char *id;

	if (vm->machine != CFG_MACHINE_Q35)
		return;
	for (size_t i = 0; i < vm->ndisks; i++) {
		if (vm->disks[i].bus != CFG_BUS_VIRTIO)
			continue;
		id = argv_cold_port(vm, vm->disks[i].id);
		argv_push_port(a, id, chassis++);
		free(id);
	}
	for (size_t i = 0; i < vm->nnets; i++) {
		id = argv_cold_port(vm, vm->nets[i].id);
		argv_push_port(a, id, chassis++);
		free(id);
	}
	for (unsigned i = 0; i < vm->hotplug_slots; i++) {
		id = xasprintf(ARGV_SPARE_PORT_FMT, i);
		argv_push_port(a, id, chassis++);
		free(id);
	}
}

/*
 * Puts an IDE device (ide-hd, ide-cd) at SATA/IDE position pos: q35's AHCI has one unit per bus
 * ("ide.0" .. "ide.5"), pc's PIIX two buses of two units.
 */
static void
argv_ide_position(struct json_object *o, const struct vm_config *vm, unsigned pos)
{
	char bus[16];

	if (vm->machine == CFG_MACHINE_Q35) {
		snprintf(bus, sizeof bus, "ide.%u", pos);
		argv_jstr(o, "bus", bus);
		return;
	}
	snprintf(bus, sizeof bus, "ide.%u", pos / 2);
	argv_jstr(o, "bus", bus);
	argv_jint(o, "unit", pos % 2);
}

/* A bus = sata disk: an ide-hd on the machine's controller (the guest sees the same write cache
 * as with virtio). */
static struct json_object *
argv_sata_disk_json(const struct vm_config *vm, const struct cfg_disk *disk, unsigned pos)
{
	struct json_object *o = argv_jnew();

	argv_jstr(o, "driver", "ide-hd");
	argv_jstr(o, "id", disk->id);
	argv_jid(o, "drive", ARGV_NODE_FMT_FMT, disk->id);
	argv_ide_position(o, vm, pos);
	if (disk->cache == CFG_CACHE_WRITETHROUGH || disk->cache == CFG_CACHE_DIRECTSYNC)
		argv_jstr(o, "write-cache", "off");
	return o;
}

/* Each disk: its images' descriptors, then its chain's block nodes from the bottom up (a node's
 * backing must exist before it), then the device. bus = sata disks take the first SATA/IDE
 * positions (*sata counts them). */
static void
argv_push_disks(struct argv_vec *a, const struct vm_config *vm, const struct argv_env *env,
                unsigned *bootindex, unsigned *sata)
{
	for (size_t i = 0; i < vm->ndisks; i++) {
		const struct cfg_disk *disk = &vm->disks[i];
		const struct argv_chain *chain = &env->disks[i];
		struct json_object *dev;
		char *bus = disk->bus == CFG_BUS_VIRTIO ? argv_cold_port(vm, disk->id) : NULL;

		for (size_t j = 0; j < chain->n; j++) {
			char *opaque = argv_node_file(disk->id, j);

			argv_push_add_fd(a, &chain->images[j], opaque);
			free(opaque);
		}
		for (size_t j = chain->n; j-- > 0;) {
			argv_push_json(a, "-blockdev", argv_blockdev_file_json(disk, chain, j));
			argv_push_json(a, "-blockdev", argv_blockdev_fmt_json(disk, chain, j));
		}
		if (disk->bus == CFG_BUS_SATA)
			dev = argv_sata_disk_json(vm, disk, (*sata)++);
		else
			dev = argv_disk_device_json(disk, bus);
		if (disk->boot)
			argv_jint(dev, "bootindex", (*bootindex)++);
		argv_push_json(a, "-device", dev);
		free(bus);
	}
}

/*
 * Each cdrom after the sata disks: its medium's descriptor, a read-only "file" node and a
 * read-only raw node on it, then the ide-cd. An empty drive is an ide-cd without a drive: QEMU
 * gives it an empty tray that blockdev-open-tray / -insert-medium / -close-tray can fill later.
 * Cdrom boot entries come after every disk's.
 */
static void
argv_push_cdroms(struct argv_vec *a, const struct vm_config *vm, const struct argv_env *env,
                 unsigned *bootindex, unsigned *sata)
{
	for (size_t i = 0; i < vm->ncdroms; i++) {
		const struct cfg_cdrom *cdrom = &vm->cdroms[i];
		struct json_object *o;

		if (cdrom->file != NULL) {
			struct argv_image im = env->cdroms[i];
			char *opaque = argv_node_file(cdrom->id, 0);

			im.fd_rw = -1; /* a medium is only read */
			argv_push_add_fd(a, &im, opaque);
			free(opaque);
			o = argv_jnew();
			argv_jstr(o, "driver", "file");
			argv_jown(o, "filename", argv_fdset_path(im.set));
			argv_jown(o, "node-name", argv_node_file(cdrom->id, 0));
			argv_jbool(o, "read-only", true);
			argv_push_json(a, "-blockdev", o);
			o = argv_jnew();
			argv_jstr(o, "driver", "raw");
			argv_jown(o, "file", argv_node_file(cdrom->id, 0));
			argv_jown(o, "node-name", argv_node_fmt(cdrom->id, 0));
			argv_jbool(o, "read-only", true);
			argv_push_json(a, "-blockdev", o);
		}
		o = argv_jnew();
		argv_jstr(o, "driver", "ide-cd");
		argv_jid(o, "id", ARGV_CDROM_DEVICE_FMT, cdrom->id);
		if (cdrom->file != NULL)
			argv_jid(o, "drive", ARGV_NODE_FMT_FMT, cdrom->id);
		argv_ide_position(o, vm, (*sata)++);
		if (cdrom->boot)
			argv_jint(o, "bootindex", (*bootindex)++);
		argv_push_json(a, "-device", o);
	}
}

/* display = vnc: the standard VGA, and a VNC server without a socket of its own (qvmd hands it
 * each client with add_client). */
static void
argv_push_display(struct argv_vec *a, const struct vm_config *vm)
{
	struct json_object *o;

	if (vm->display != CFG_DISPLAY_VNC)
		return;
	argv_push2(a, "-vnc", "none");
	o = argv_jnew();
	argv_jstr(o, "driver", "VGA");
	argv_push_json(a, "-device", o);
}

static void
argv_push_nets(struct argv_vec *a, const struct vm_config *vm, const struct argv_env *env)
{
	for (size_t i = 0; i < vm->nnets; i++) {
		const struct cfg_net *net = &vm->nets[i];
		int fd = env->net_fds != NULL ? env->net_fds[i] : -1;
		char *fd_name = NULL, *bus = argv_cold_port(vm, net->id);

		if (net->type != CFG_NET_USER && fd >= 0)
			fd_name = xasprintf("%d", fd);
		argv_push_json(a, "-netdev", argv_netdev_json(net, fd_name));
		argv_push_json(a, "-device", argv_net_device_json(net, bus));
		free(fd_name);
		free(bus);
	}
}

char **
argv_build(const struct vm_config *vm, const struct argv_env *env, char **cause)
{
	struct argv_vec a = {0};
	unsigned bootindex = 1, sata = 0;
	char *s;

	if (argv_check(vm, env, cause) != 0)
		return NULL;

	argv_push(&a, env->qemu);
	argv_push(&a, "-name");
	argv_push_owned(&a, xasprintf("guest=%s", vm->name));
	argv_push(&a, "-nodefaults");
	argv_push(&a, "-no-user-config");
	argv_push(&a, "-S");
	argv_push2(&a, "-display", "none");
	argv_push2(&a, "-sandbox", ARGV_SANDBOX);
	argv_push(&a, "-pidfile");
	/* QEMU creates its pidfile in a directory of its own: it runs as the VM's uid, which may
	 * write nowhere else (see vm_start.c). */
	argv_push_owned(&a, xasprintf("%s/%s/qemu/qemu.pid", env->run_dir, vm->name));
	argv_push_machine(&a, vm, env);
	if (vm->accel == CFG_ACCEL_KVM)
		argv_push(&a, "-enable-kvm");
	else
		argv_push2(&a, "-accel", "tcg");
	if (vm->cpu != NULL)
		argv_push2(&a, "-cpu", vm->cpu);
	s = xasprintf("%" PRIu64 "M", vm->memory / (1024 * 1024));
	argv_push2(&a, "-m", s);
	free(s);
	s = xasprintf("%u", vm->vcpus);
	argv_push2(&a, "-smp", s);
	free(s);
	/* QEMU stores these three verbatim (no option splitting), so any text is safe here. */
	if (vm->kernel != NULL)
		argv_push2(&a, "-kernel", vm->kernel);
	if (vm->initrd != NULL)
		argv_push2(&a, "-initrd", vm->initrd);
	if (vm->append != NULL)
		argv_push2(&a, "-append", vm->append);
	argv_push_qmp(&a, vm, env);
	argv_push_console(&a, vm, env);
	argv_push_display(&a, vm);
	argv_push_ports(&a, vm);
	argv_push_disks(&a, vm, env, &bootindex, &sata);
	argv_push_cdroms(&a, vm, env, &bootindex, &sata);
	argv_push_nets(&a, vm, env);
	return a.v;
}
