/*
 * config/cfg_vm: loads one VM definition (NAME.ini): [vm], [disk ID], [net ID] and [cdrom ID]
 * sections checked against the schema tables below, then the rules that span keys and sections
 * (type-specific keys, unique ids and MACs, the name matching the file, the machine's PCIe root
 * ports and SATA/IDE positions).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_priv.h"

#define MIB (1ULL << 20)
#define TIB (1ULL << 40)

static const char *const machine_names[] = {"q35", "pc", NULL};
static const char *const accel_names[] = {"kvm", "tcg", NULL};
static const char *const firmware_names[] = {"bios", "uefi", NULL};
static const char *const restart_names[] = {"no", "on-failure", "always", NULL};
static const char *const console_names[] = {"log", "none", NULL};
static const char *const apply_names[] = {"pending", "replace", NULL};

#define VM(f) offsetof(struct vm_config, f)
enum {
	VK_NAME,
	VK_MEMORY,
	VK_VCPUS,
	VK_MACHINE,
	VK_ACCEL,
	VK_CPU,
	VK_HOTPLUG_SLOTS,
	VK_KERNEL,
	VK_INITRD,
	VK_APPEND,
	VK_FIRMWARE,
	VK_SHUTDOWN_TIMEOUT,
	VK_RESTART,
	VK_RESTART_LIMIT,
	VK_AUTOSTART,
	VK_CONSOLE,
	VK_DISPLAY,
	VK_COUNT
};
static const struct key_spec vm_keys[VK_COUNT] = {
    [VK_NAME] = {.name = "name", .type = KEY_NAME, .off = VM(name), .flags = KEY_REQUIRED},
    [VK_MEMORY] = {.name = "memory",
                   .type = KEY_SIZE,
                   .off = VM(memory),
                   .flags = KEY_REQUIRED,
                   .min = 16 * MIB,
                   .max = 64 * TIB,
                   .multiple = MIB},
    [VK_VCPUS] = {.name = "vcpus", .type = KEY_UINT, .off = VM(vcpus), .min = 1, .max = 255},
    [VK_MACHINE] = {.name = "machine",
                    .type = KEY_ENUM,
                    .off = VM(machine),
                    .names = machine_names,
                    .hint = "q35 or pc"},
    [VK_ACCEL] = {.name = "accel",
                  .type = KEY_ENUM,
                  .off = VM(accel),
                  .names = accel_names,
                  .hint = "kvm or tcg"},
    [VK_CPU] = {.name = "cpu", .type = KEY_CPU, .off = VM(cpu)},
    [VK_HOTPLUG_SLOTS] = {.name = "hotplug_slots",
                          .type = KEY_UINT,
                          .off = VM(hotplug_slots),
                          .min = 0,
                          .max = CFG_PORTS_MAX},
    [VK_KERNEL] = {.name = "kernel", .type = KEY_PATH, .off = VM(kernel)},
    [VK_INITRD] = {.name = "initrd", .type = KEY_PATH, .off = VM(initrd)},
    [VK_APPEND] = {.name = "append", .type = KEY_STRING, .off = VM(append)},
    [VK_FIRMWARE] = {.name = "firmware",
                     .type = KEY_ENUM,
                     .off = VM(firmware),
                     .names = firmware_names,
                     .hint = "bios or uefi"},
    [VK_SHUTDOWN_TIMEOUT] = {.name = "shutdown_timeout",
                             .type = KEY_DURATION,
                             .off = VM(shutdown_timeout_ms),
                             .min = CFG_SHUTDOWN_TIMEOUT_MIN_MS,
                             .max = CFG_SHUTDOWN_TIMEOUT_MAX_MS},
    [VK_RESTART] = {.name = "restart",
                    .type = KEY_ENUM,
                    .off = VM(restart),
                    .names = restart_names,
                    .hint = "no, on-failure or always"},
    [VK_RESTART_LIMIT] = {.name = "restart_limit",
                          .type = KEY_UINT,
                          .off = VM(restart_limit),
                          .min = 0,
                          .max = 1000},
    [VK_AUTOSTART] = {.name = "autostart", .type = KEY_BOOL, .off = VM(autostart)},
    [VK_CONSOLE] = {.name = "console",
                    .type = KEY_ENUM,
                    .off = VM(console),
                    .names = console_names,
                    .hint = "log or none"},
    [VK_DISPLAY] = {.name = "display",
                    .type = KEY_ENUM,
                    .off = VM(display),
                    .names = cfg_display_names,
                    .hint = "none or vnc"},
};

#define DISK(f) offsetof(struct cfg_disk, f)
enum { DK_FILE, DK_FORMAT, DK_SIZE, DK_READONLY, DK_CACHE, DK_BOOT, DK_BUS, DK_APPLY, DK_COUNT };
static const struct key_spec disk_keys[DK_COUNT] = {
    [DK_FILE] = {.name = "file", .type = KEY_PATH, .off = DISK(file), .flags = KEY_REQUIRED},
    [DK_FORMAT] = {.name = "format",
                   .type = KEY_ENUM,
                   .off = DISK(format),
                   .names = cfg_format_names,
                   .hint = "qcow2 or raw"},
    [DK_SIZE] = {.name = "size",
                 .type = KEY_SIZE,
                 .off = DISK(size),
                 .min = CFG_DISK_SIZE_MIN,
                 .max = CFG_DISK_SIZE_MAX,
                 .multiple = CFG_DISK_SIZE_MULTIPLE},
    [DK_READONLY] = {.name = "readonly", .type = KEY_BOOL, .off = DISK(readonly)},
    [DK_CACHE] = {.name = "cache",
                  .type = KEY_ENUM,
                  .off = DISK(cache),
                  .names = cfg_cache_names,
                  .hint = "none, writeback, writethrough, directsync or unsafe"},
    [DK_BOOT] = {.name = "boot", .type = KEY_BOOL, .off = DISK(boot)},
    [DK_BUS] = {.name = "bus",
                .type = KEY_ENUM,
                .off = DISK(bus),
                .names = cfg_disk_bus_names,
                .hint = "virtio or sata"},
    [DK_APPLY] = {.name = "apply",
                  .type = KEY_ENUM,
                  .off = DISK(apply),
                  .names = apply_names,
                  .hint = "pending or replace"},
};

#define NET(f) offsetof(struct cfg_net, f)
static const struct key_spec net_keys[NK_COUNT] = {
    [NK_TYPE] = {.name = "type",
                 .type = KEY_ENUM,
                 .off = NET(type),
                 .names = cfg_net_type_names,
                 .hint = "user, tap or bridge"},
    [NK_MAC] = {.name = "mac", .type = KEY_MAC, .off = NET(mac)},
    [NK_BRIDGE] = {.name = "bridge", .type = KEY_IFNAME, .off = NET(bridge)},
    [NK_IFNAME] = {.name = "ifname", .type = KEY_IFNAME, .off = NET(ifname)},
    [NK_RESTRICT] = {.name = "restrict", .type = KEY_BOOL, .off = NET(restricted)},
    [NK_MODEL] = {.name = "model",
                  .type = KEY_ENUM,
                  .off = NET(model),
                  .names = cfg_net_model_names,
                  .hint = "virtio, e1000 or e1000e"},
    [NK_APPLY] = {.name = "apply",
                  .type = KEY_ENUM,
                  .off = NET(apply),
                  .names = apply_names,
                  .hint = "pending or replace"},
};

#define CDROM(f) offsetof(struct cfg_cdrom, f)
enum { CK_FILE, CK_BOOT, CK_COUNT };
static const struct key_spec cdrom_keys[CK_COUNT] = {
    [CK_FILE] = {.name = "file", .type = KEY_PATH, .off = CDROM(file), .flags = KEY_NOCOMMA},
    [CK_BOOT] = {.name = "boot", .type = KEY_BOOL, .off = CDROM(boot)},
};

/* Where each device and its keys came from, for messages about rules that span them. */
struct dev_lines {
	int keys[(int)DK_COUNT > (int)NK_COUNT ? (int)DK_COUNT : (int)NK_COUNT];
};

struct loader {
	struct cfg_diag *d;
	struct vm_config *vm;
	int vm_line; /* line of [vm], 0 when absent */
	int vm_keys[VK_COUNT];
	struct dev_lines *disk_lines, *net_lines, *cdrom_lines;
};

void
cfg_vm_defaults(struct vm_config *vm)
{
	vm->vcpus = 1;
	vm->machine = CFG_MACHINE_Q35;
	vm->accel = CFG_ACCEL_KVM;
	vm->hotplug_slots = 4;
	vm->firmware = CFG_FIRMWARE_BIOS;
	vm->shutdown_timeout_ms = 60 * 1000;
	vm->restart = CFG_RESTART_NO;
	vm->restart_limit = 5;
	vm->autostart = false;
	vm->console = CFG_CONSOLE_LOG;
	vm->display = CFG_DISPLAY_NONE;
}

unsigned
cfg_sata_max(enum cfg_machine machine)
{
	return machine == CFG_MACHINE_PC ? CFG_SATA_MAX_PC : CFG_SATA_MAX_Q35;
}

/* The name a file must define: its base name without ".ini". */
static char *
expected_name(const char *path)
{
	const char *base = strrchr(path, '/');
	size_t n;

	base = base != NULL ? base + 1 : path;
	n = strlen(base);
	if (n > 4 && strcmp(base + n - 4, ".ini") == 0)
		n -= 4;
	return cfg_xprintf("%.*s", (int)n, base);
}

const struct key_spec *
cfg_vm_keys(size_t *n)
{
	*n = VK_COUNT;
	return vm_keys;
}

const struct key_spec *
cfg_disk_keys(size_t *n)
{
	*n = DK_COUNT;
	return disk_keys;
}

const struct key_spec *
cfg_net_keys(size_t *n)
{
	*n = NK_COUNT;
	return net_keys;
}

const struct key_spec *
cfg_cdrom_keys(size_t *n)
{
	*n = CK_COUNT;
	return cdrom_keys;
}

void
cfg_disk_defaults(struct cfg_disk *disk)
{
	memset(disk, 0, sizeof(*disk));
	disk->format = CFG_FORMAT_QCOW2;
	disk->cache = CFG_CACHE_NONE;
	disk->apply = CFG_APPLY_PENDING;
	disk->bus = CFG_BUS_VIRTIO;
}

void
cfg_net_defaults(struct cfg_net *net)
{
	memset(net, 0, sizeof(*net));
	net->type = CFG_NET_USER;
	net->apply = CFG_APPLY_PENDING;
	net->model = CFG_NET_MODEL_VIRTIO;
}

void
cfg_cdrom_defaults(struct cfg_cdrom *cdrom)
{
	memset(cdrom, 0, sizeof(*cdrom));
}

static void
load_device_section(struct loader *l, const struct ini_section *s)
{
	struct vm_config *vm = l->vm;

	if (strcmp(s->kind, "disk") == 0) {
		struct cfg_disk *disk;

		vm->disks = cfg_xrealloc(vm->disks, vm->ndisks + 1, sizeof(*vm->disks));
		l->disk_lines = cfg_xrealloc(l->disk_lines, vm->ndisks + 1, sizeof(*l->disk_lines));
		disk = &vm->disks[vm->ndisks];
		cfg_disk_defaults(disk);
		disk->id = cfg_xstrdup(s->id);
		disk->line = s->line;
		cfg_apply_section(s, disk_keys, DK_COUNT, disk, l->disk_lines[vm->ndisks].keys,
		                  l->d);
		vm->ndisks++;
	} else if (strcmp(s->kind, "cdrom") == 0) {
		struct cfg_cdrom *cdrom;

		vm->cdroms = cfg_xrealloc(vm->cdroms, vm->ncdroms + 1, sizeof(*vm->cdroms));
		l->cdrom_lines =
		    cfg_xrealloc(l->cdrom_lines, vm->ncdroms + 1, sizeof(*l->cdrom_lines));
		cdrom = &vm->cdroms[vm->ncdroms];
		cfg_cdrom_defaults(cdrom);
		cdrom->id = cfg_xstrdup(s->id);
		cdrom->line = s->line;
		cfg_apply_section(s, cdrom_keys, CK_COUNT, cdrom, l->cdrom_lines[vm->ncdroms].keys,
		                  l->d);
		vm->ncdroms++;
	} else {
		struct cfg_net *net;

		vm->nets = cfg_xrealloc(vm->nets, vm->nnets + 1, sizeof(*vm->nets));
		l->net_lines = cfg_xrealloc(l->net_lines, vm->nnets + 1, sizeof(*l->net_lines));
		net = &vm->nets[vm->nnets];
		cfg_net_defaults(net);
		net->id = cfg_xstrdup(s->id);
		net->line = s->line;
		cfg_apply_section(s, net_keys, NK_COUNT, net, l->net_lines[vm->nnets].keys, l->d);
		vm->nnets++;
	}
}

/* Section kinds whose id names a QEMU device: ids are unique across them. */
static bool
is_device_kind(const char *kind)
{
	return strcmp(kind, "disk") == 0 || strcmp(kind, "net") == 0 || strcmp(kind, "cdrom") == 0;
}

static void
load_section(struct loader *l, const struct ini_section *s)
{
	char *label;

	if (s->ignored)
		return;
	label = ini_section_label(s);
	if (strcmp(s->kind, "vm") == 0) {
		if (s->id != NULL) {
			cfg_diag_add(l->d, s->line, "%s: unknown section (use [vm] without an id)",
			             label);
		} else {
			l->vm_line = s->line;
			cfg_apply_section(s, vm_keys, VK_COUNT, l->vm, l->vm_keys, l->d);
		}
	} else if (is_device_kind(s->kind)) {
		if (s->id == NULL)
			cfg_diag_add(l->d, s->line,
			             "%s: device id missing (use [%s ID], e.g. [%s])", label,
			             s->kind,
			             strcmp(s->kind, "disk") == 0  ? "disk root"
			             : strcmp(s->kind, "net") == 0 ? "net lan0"
			                                           : "cdrom cd0");
		else if (!cfg_valid_device_id(s->id))
			cfg_diag_add(l->d, s->line,
			             "%s: '%s' is not a valid device id (a letter, then up to %d "
			             "letters, digits, '_' or '-')",
			             label, s->id, CFG_ID_MAX - 1);
		else
			load_device_section(l, s);
	} else {
		cfg_diag_add(l->d, s->line,
		             "%s: unknown section (use [vm], [disk ID], [net ID] or [cdrom ID])",
		             label);
	}
	free(label);
}

static void
check_vm(struct loader *l, const char *path)
{
	struct vm_config *vm = l->vm;
	const int *k = l->vm_keys;
	size_t ndev = vm->nnets;

	/* Root ports on q35: virtio disks and NICs (of every model); the SATA/IDE controller is
	 * the machine's own. */
	for (size_t i = 0; i < vm->ndisks; i++)
		if (vm->disks[i].bus == CFG_BUS_VIRTIO)
			ndev++;
	if (l->vm_line == 0) {
		cfg_diag_add(l->d, 0, "[vm] name: required key missing");
		cfg_diag_add(l->d, 0, "[vm] memory: required key missing");
		return;
	}
	if (vm->name != NULL) {
		char *want = expected_name(path);

		if (strcmp(vm->name, want) != 0)
			cfg_diag_add(l->d, k[VK_NAME],
			             "[vm] name: '%s' does not match the file name (%s.ini must "
			             "define name = %s)",
			             vm->name, want, want);
		free(want);
	}
	if (vm->machine == CFG_MACHINE_PC) {
		if (k[VK_HOTPLUG_SLOTS] != 0 && vm->hotplug_slots != 0)
			cfg_diag_add(l->d, k[VK_HOTPLUG_SLOTS],
			             "[vm] hotplug_slots: only for machine = q35 (pc hot-plugs "
			             "into pci.0; remove the key or set 0)");
		vm->hotplug_slots = 0;
	}
	if (ndev + vm->hotplug_slots > CFG_PORTS_MAX)
		cfg_diag_add(l->d, k[VK_HOTPLUG_SLOTS] ? k[VK_HOTPLUG_SLOTS] : l->vm_line,
		             "[vm] hotplug_slots: %zu devices + %u hot-plug slots exceed %d "
		             "(lower hotplug_slots or remove devices)",
		             ndev, vm->hotplug_slots, CFG_PORTS_MAX);
	if (vm->kernel == NULL && k[VK_KERNEL] == 0) {
		if (k[VK_INITRD] != 0)
			cfg_diag_add(l->d, k[VK_INITRD], "[vm] initrd: only valid with kernel");
		if (k[VK_APPEND] != 0)
			cfg_diag_add(l->d, k[VK_APPEND], "[vm] append: only valid with kernel");
	}
}

static void
check_disks(struct loader *l)
{
	struct vm_config *vm = l->vm;

	for (size_t i = 0; i < vm->ndisks; i++) {
		const struct cfg_disk *disk = &vm->disks[i];

		if (disk->readonly && disk->bus == CFG_BUS_SATA)
			cfg_diag_add(l->d, l->disk_lines[i].keys[DK_READONLY],
			             "[disk %s] readonly: %s", disk->id, CFG_SATA_READONLY_WHY);
		if (disk->file == NULL)
			continue;
		for (size_t j = 0; j < i; j++) {
			if (vm->disks[j].file != NULL &&
			    strcmp(vm->disks[j].file, disk->file) == 0) {
				cfg_diag_add(l->d, l->disk_lines[i].keys[DK_FILE],
				             "[disk %s] file: '%s' is already used by [disk %s] "
				             "on line %d",
				             disk->id, disk->file, vm->disks[j].id,
				             vm->disks[j].line);
				break;
			}
		}
	}
	/* A medium is read-only: never the image of a disk, which QEMU may write. */
	for (size_t i = 0; i < vm->ncdroms; i++) {
		const struct cfg_cdrom *cdrom = &vm->cdroms[i];

		for (size_t j = 0; cdrom->file != NULL && j < vm->ndisks; j++) {
			if (vm->disks[j].file != NULL &&
			    strcmp(vm->disks[j].file, cdrom->file) == 0) {
				cfg_diag_add(l->d, l->cdrom_lines[i].keys[CK_FILE],
				             "[cdrom %s] file: '%s' is already used by [disk %s] "
				             "on line %d",
				             cdrom->id, cdrom->file, vm->disks[j].id,
				             vm->disks[j].line);
				break;
			}
		}
	}
}

/*
 * bus = sata disks and cdroms share the machine's SATA/IDE positions (disks first, then cdroms,
 * each in file order, as argv.c assigns them); the first that finds none left is reported.
 */
static void
check_sata(struct loader *l)
{
	struct vm_config *vm = l->vm;
	const char *machine = vm->machine == CFG_MACHINE_PC ? "pc" : "q35";
	unsigned max = cfg_sata_max(vm->machine), used = 0;

	for (size_t i = 0; i < vm->ndisks; i++) {
		const struct cfg_disk *disk = &vm->disks[i];

		if (disk->bus != CFG_BUS_SATA || ++used <= max)
			continue;
		cfg_diag_add(l->d, l->disk_lines[i].keys[DK_BUS],
		             "[disk %s] bus: no SATA/IDE position left (machine = %s has %u, "
		             "shared by bus = sata disks and cdroms)",
		             disk->id, machine, max);
		return;
	}
	for (size_t i = 0; i < vm->ncdroms; i++) {
		const struct cfg_cdrom *cdrom = &vm->cdroms[i];

		if (++used <= max)
			continue;
		cfg_diag_add(l->d, cdrom->line,
		             "[cdrom %s]: no SATA/IDE position left (machine = %s has %u, shared "
		             "by bus = sata disks and cdroms)",
		             cdrom->id, machine, max);
		return;
	}
}

struct net_rule_arg {
	struct loader *l;
	const struct cfg_net *net;
	const int *lines;
};

/* Reports a broken rule on the line of the key at fault, or of the section header. */
static void
net_rule_report(void *arg, int key, const char *why)
{
	struct net_rule_arg *ra = arg;
	int line = key >= 0 && ra->lines[key] != 0 ? ra->lines[key] : ra->net->line;

	cfg_diag_add(ra->l->d, line, "[net %s] %s", ra->net->id, why);
}

static void
check_nets(struct loader *l)
{
	struct vm_config *vm = l->vm;

	for (size_t i = 0; i < vm->nnets; i++) {
		struct cfg_net *net = &vm->nets[i];
		const int *k = l->net_lines[i].keys;
		struct net_rule_arg ra = {l, net, k};
		bool given[NK_COUNT];

		for (int key = 0; key < NK_COUNT; key++)
			given[key] = k[key] != 0;
		given[NK_RESTRICT] = net->restricted; /* restrict = no is fine on any NIC */
		cfg_net_rules(net, given, net_rule_report, &ra);
		if (k[NK_MAC] != 0) {
			net->mac_given = true;
		} else if (vm->name != NULL) {
			cfg_mac_derive(vm->name, net->id, net->mac);
		}
	}
	for (size_t i = 0; i < vm->nnets; i++) {
		const struct cfg_net *net = &vm->nets[i];
		char mac[18];

		if (!net->mac_given && vm->name == NULL)
			continue;
		if (net->mac_given && l->net_lines[i].keys[NK_MAC] != 0 && net->mac[0] == 0 &&
		    net->mac[1] == 0 && net->mac[2] == 0 && net->mac[3] == 0 && net->mac[4] == 0 &&
		    net->mac[5] == 0)
			continue; /* a bad mac = value, already reported */
		cfg_mac_format(net->mac, mac);
		for (size_t j = 0; j < i; j++) {
			const struct cfg_net *o = &vm->nets[j];

			if (memcmp(o->mac, net->mac, 6) != 0)
				continue;
			if (net->mac_given)
				cfg_diag_add(l->d, l->net_lines[i].keys[NK_MAC],
				             "[net %s] mac: %s is already used by [net %s] on line "
				             "%d",
				             net->id, mac, o->id, o->line);
			else
				cfg_diag_add(l->d, net->line,
				             "[net %s] mac: derived address %s is already used by "
				             "[net %s] on line %d (set mac = explicitly)",
				             net->id, mac, o->id, o->line);
			break;
		}
		if (net->ifname == NULL)
			continue;
		for (size_t j = 0; j < i; j++) {
			const struct cfg_net *o = &vm->nets[j];

			if (o->ifname != NULL && strcmp(o->ifname, net->ifname) == 0) {
				cfg_diag_add(l->d, l->net_lines[i].keys[NK_IFNAME],
				             "[net %s] ifname: '%s' is already used by [net %s] on "
				             "line %d",
				             net->id, net->ifname, o->id, o->line);
				break;
			}
		}
	}
}

/* Device ids name QEMU objects: unique across disks, NICs and cdroms. */
static void
check_device_ids(struct loader *l, const struct ini_doc *doc)
{
	for (size_t i = 0; i < doc->n; i++) {
		const struct ini_section *s = &doc->secs[i];

		if (s->ignored || s->id == NULL || !is_device_kind(s->kind) ||
		    !cfg_valid_device_id(s->id))
			continue;
		for (size_t j = 0; j < i; j++) {
			const struct ini_section *o = &doc->secs[j];

			if (o->ignored || o->id == NULL || strcmp(o->id, s->id) != 0 ||
			    !is_device_kind(o->kind))
				continue;
			cfg_diag_add(l->d, s->line,
			             "[%s %s]: duplicate device id '%s' (first used by [%s %s] on "
			             "line %d)",
			             s->kind, s->id, s->id, o->kind, o->id, o->line);
			break;
		}
	}
}

struct vm_config *
cfg_vm_load_text(const char *path, const char *text, size_t len, struct cfg_errors *errs)
{
	struct cfg_diag d;
	struct ini_doc doc;
	struct loader l = {.d = &d};
	bool failed;

	cfg_diag_init(&d, path);
	l.vm = cfg_xcalloc(1, sizeof(*l.vm));
	l.vm->path = cfg_xstrdup(path);
	cfg_vm_defaults(l.vm);
	ini_lex(text, len, &doc, &d);
	for (size_t i = 0; i < doc.n; i++)
		load_section(&l, &doc.secs[i]);
	check_device_ids(&l, &doc);
	check_vm(&l, path);
	check_disks(&l);
	check_sata(&l);
	check_nets(&l);
	ini_doc_free(&doc);
	free(l.disk_lines);
	free(l.net_lines);
	free(l.cdrom_lines);
	failed = d.n > 0;
	cfg_diag_flush(&d, errs);
	if (failed) {
		cfg_vm_free(l.vm);
		return NULL;
	}
	return l.vm;
}

struct vm_config *
cfg_vm_load(const char *path, struct cfg_errors *errs)
{
	struct vm_config *vm;
	struct cfg_diag d;
	char *text;
	size_t len;

	cfg_diag_init(&d, path);
	if (cfg_read_diag(path, &text, &len, &d) < 0) {
		cfg_diag_flush(&d, errs);
		return NULL;
	}
	vm = cfg_vm_load_text(path, text, len, errs);
	free(text);
	return vm;
}

static char *
dup_or_null(const char *s)
{
	return s != NULL ? cfg_xstrdup(s) : NULL;
}

void
cfg_disk_copy(struct cfg_disk *dst, const struct cfg_disk *src)
{
	*dst = *src;
	dst->id = dup_or_null(src->id);
	dst->file = dup_or_null(src->file);
}

void
cfg_disk_clear(struct cfg_disk *disk)
{
	free(disk->id);
	free(disk->file);
	disk->id = disk->file = NULL;
}

void
cfg_net_copy(struct cfg_net *dst, const struct cfg_net *src)
{
	*dst = *src;
	dst->id = dup_or_null(src->id);
	dst->bridge = dup_or_null(src->bridge);
	dst->ifname = dup_or_null(src->ifname);
}

void
cfg_net_clear(struct cfg_net *net)
{
	free(net->id);
	free(net->bridge);
	free(net->ifname);
	net->id = net->bridge = net->ifname = NULL;
}

void
cfg_cdrom_copy(struct cfg_cdrom *dst, const struct cfg_cdrom *src)
{
	*dst = *src;
	dst->id = dup_or_null(src->id);
	dst->file = dup_or_null(src->file);
}

void
cfg_cdrom_clear(struct cfg_cdrom *cdrom)
{
	free(cdrom->id);
	free(cdrom->file);
	cdrom->id = cdrom->file = NULL;
}

void
cfg_vm_free(struct vm_config *vm)
{
	if (vm == NULL)
		return;
	for (size_t i = 0; i < vm->ndisks; i++)
		cfg_disk_clear(&vm->disks[i]);
	for (size_t i = 0; i < vm->nnets; i++)
		cfg_net_clear(&vm->nets[i]);
	for (size_t i = 0; i < vm->ncdroms; i++)
		cfg_cdrom_clear(&vm->cdroms[i]);
	free(vm->disks);
	free(vm->nets);
	free(vm->cdroms);
	free(vm->path);
	free(vm->name);
	free(vm->cpu);
	free(vm->kernel);
	free(vm->initrd);
	free(vm->append);
	free(vm);
}

struct vm_config *
cfg_vm_dup(const struct vm_config *vm)
{
	struct vm_config *c = cfg_xmalloc(sizeof(*c));

	*c = *vm;
	c->path = dup_or_null(vm->path);
	c->name = dup_or_null(vm->name);
	c->cpu = dup_or_null(vm->cpu);
	c->kernel = dup_or_null(vm->kernel);
	c->initrd = dup_or_null(vm->initrd);
	c->append = dup_or_null(vm->append);
	c->disks = vm->ndisks ? cfg_xcalloc(vm->ndisks, sizeof(*c->disks)) : NULL;
	for (size_t i = 0; i < vm->ndisks; i++)
		cfg_disk_copy(&c->disks[i], &vm->disks[i]);
	c->nets = vm->nnets ? cfg_xcalloc(vm->nnets, sizeof(*c->nets)) : NULL;
	for (size_t i = 0; i < vm->nnets; i++)
		cfg_net_copy(&c->nets[i], &vm->nets[i]);
	c->cdroms = vm->ncdroms ? cfg_xcalloc(vm->ncdroms, sizeof(*c->cdroms)) : NULL;
	for (size_t i = 0; i < vm->ncdroms; i++)
		cfg_cdrom_copy(&c->cdroms[i], &vm->cdroms[i]);
	return c;
}

const struct cfg_disk *
cfg_vm_disk(const struct vm_config *vm, const char *id)
{
	for (size_t i = 0; vm != NULL && id != NULL && i < vm->ndisks; i++)
		if (strcmp(vm->disks[i].id, id) == 0)
			return &vm->disks[i];
	return NULL;
}

const struct cfg_net *
cfg_vm_net(const struct vm_config *vm, const char *id)
{
	for (size_t i = 0; vm != NULL && id != NULL && i < vm->nnets; i++)
		if (strcmp(vm->nets[i].id, id) == 0)
			return &vm->nets[i];
	return NULL;
}

const struct cfg_cdrom *
cfg_vm_cdrom(const struct vm_config *vm, const char *id)
{
	for (size_t i = 0; vm != NULL && id != NULL && i < vm->ncdroms; i++)
		if (strcmp(vm->cdroms[i].id, id) == 0)
			return &vm->cdroms[i];
	return NULL;
}
