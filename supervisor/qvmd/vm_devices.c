/*
 * The daemon's bookkeeping of a running VM's disks and NICs: which are live, on which root port,
 * which are being removed. Cold-plugged devices come from the definition the QEMU started with;
 * hot-plugged ones are added by vm_hotplug.c, flagged "attaching" from the moment their backend
 * is sent until device_add is answered. Saved in the run directory (devices.json) so that a
 * restarted qvmd knows what is plugged in and which hot-plug it has to finish or undo.
 */
#include "vm_private.h"

#include "argv.h"
#include "cfg.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *
dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

void
vm_dev_free(struct vm_dev *dev)
{
	if (dev == NULL)
		return;
	cfg_disk_clear(&dev->disk);
	cfg_net_clear(&dev->net);
	free(dev->imgs);
	free(dev->port);
	free(dev->id);
	free(dev);
}

struct vm_dev *
vm_dev_new_disk(const struct cfg_disk *disk, const char *port)
{
	struct vm_dev *dev = xcalloc(1, sizeof *dev);

	dev->id = xstrdup(disk->id);
	dev->is_disk = true;
	cfg_disk_copy(&dev->disk, disk);
	dev->port = dup_or_null(port);
	return dev;
}

struct vm_dev *
vm_dev_new_net(const struct cfg_net *net, const char *port)
{
	struct vm_dev *dev = xcalloc(1, sizeof *dev);

	dev->id = xstrdup(net->id);
	cfg_net_copy(&dev->net, net);
	dev->port = dup_or_null(port);
	return dev;
}

void
vm_devs_clear(struct vm *vm)
{
	for (size_t i = 0; i < vm->ndevs; i++)
		vm_dev_free(vm->devs[i]);
	free(vm->devs);
	vm->devs = NULL;
	vm->ndevs = 0;
}

void
vm_devs_add(struct vm *vm, struct vm_dev *dev)
{
	vm->devs = xrealloc(vm->devs, (vm->ndevs + 1) * sizeof *vm->devs);
	vm->devs[vm->ndevs++] = dev;
}

void
vm_devs_remove(struct vm *vm, struct vm_dev *dev)
{
	for (size_t i = 0; i < vm->ndevs; i++) {
		if (vm->devs[i] != dev)
			continue;
		memmove(&vm->devs[i], &vm->devs[i + 1], (vm->ndevs - i - 1) * sizeof *vm->devs);
		vm->ndevs--;
		vm_dev_free(dev);
		return;
	}
}

struct vm_dev *
vm_devs_find(const struct vm *vm, const char *id)
{
	for (size_t i = 0; i < vm->ndevs; i++) {
		if (strcmp(vm->devs[i]->id, id) == 0)
			return vm->devs[i];
	}
	return NULL;
}

/* The devices of a freshly started QEMU: exactly its definition's, each on its own port (q35). */
void
vm_devs_init(struct vm *vm)
{
	const struct vm_config *cfg = vm->live_cfg;
	bool q35 = cfg->machine == CFG_MACHINE_Q35;
	char port[64];

	vm_devs_clear(vm);
	for (size_t i = 0; i < cfg->ndisks; i++) {
		snprintf(port, sizeof port, ARGV_COLD_PORT_FMT, cfg->disks[i].id);
		/* A sata disk sits on the SATA/IDE controller, on no root port. */
		vm_devs_add(
		    vm, vm_dev_new_disk(&cfg->disks[i],
		                        q35 && cfg->disks[i].bus == CFG_BUS_VIRTIO ? port : NULL));
		vm->devs[vm->ndevs - 1]->cold = true;
	}
	for (size_t i = 0; i < cfg->nnets; i++) {
		snprintf(port, sizeof port, ARGV_COLD_PORT_FMT, cfg->nets[i].id);
		vm_devs_add(vm, vm_dev_new_net(&cfg->nets[i], q35 ? port : NULL));
		vm->devs[vm->ndevs - 1]->cold = true;
	}
}

/* A spare hot-plug port no device (live or being removed) occupies, or -1. */
int
vm_devs_free_port(const struct vm *vm, const bool *busy_in_qemu, char out[16])
{
	unsigned slots = vm->live_cfg ? vm->live_cfg->hotplug_slots : 0;

	for (unsigned n = 0; n < slots; n++) {
		bool used = busy_in_qemu && busy_in_qemu[n];

		snprintf(out, 16, ARGV_SPARE_PORT_FMT, n);
		for (size_t i = 0; i < vm->ndevs && !used; i++)
			used = vm->devs[i]->port && strcmp(vm->devs[i]->port, out) == 0;
		if (!used)
			return (int)n;
	}
	return -1;
}

struct json_object *
vm_dev_json(const struct vm_dev *dev)
{
	struct json_object *o = json_object_new_object();
	char mac[18];

	json_object_object_add(o, "id", json_object_new_string(dev->id));
	json_object_object_add(o, "kind", json_object_new_string(dev->is_disk ? "disk" : "net"));
	if (dev->is_disk) {
		json_object_object_add(o, "file", json_object_new_string(dev->disk.file));
		json_object_object_add(o, "format",
		                       json_object_new_string(cfg_format_name(dev->disk.format)));
		json_object_object_add(o, "readonly", json_object_new_boolean(dev->disk.readonly));
		json_object_object_add(o, "cache",
		                       json_object_new_string(cfg_cache_name(dev->disk.cache)));
	} else {
		cfg_mac_format(dev->net.mac, mac);
		json_object_object_add(o, "type",
		                       json_object_new_string(cfg_net_type_name(dev->net.type)));
		json_object_object_add(o, "mac", json_object_new_string(mac));
		json_object_object_add(
		    o, "bridge", dev->net.bridge ? json_object_new_string(dev->net.bridge) : NULL);
		json_object_object_add(
		    o, "ifname", dev->net.ifname ? json_object_new_string(dev->net.ifname) : NULL);
		json_object_object_add(o, "restrict", json_object_new_boolean(dev->net.restricted));
	}
	json_object_object_add(o, "bus", dev->port ? json_object_new_string(dev->port) : NULL);
	json_object_object_add(o, "pending_attach", json_object_new_boolean(dev->attaching));
	json_object_object_add(o, "pending_removal", json_object_new_boolean(dev->pending_removal));
	return o;
}

/* A device's record in devices.json: what replies show plus the daemon's own bookkeeping, which
 * never appears in a reply. */
static struct json_object *
dev_record(const struct vm_dev *dev)
{
	struct json_object *o = vm_dev_json(dev);

	json_object_object_add(o, "cold", json_object_new_boolean(dev->cold));
	if (dev->persist_removal)
		json_object_object_add(o, "persist_removal", json_object_new_boolean(1));
	if (dev->attaching)
		json_object_object_add(o, "attaching", json_object_new_boolean(1));
	if (dev->created)
		json_object_object_add(o, "created", json_object_new_boolean(1));
	return o;
}

static const char *
jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
	           ? json_object_get_string(v)
	           : NULL;
}

static bool
jbool(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

/* Rebuilds one device from its devices.json entry; NULL if the entry is unusable. */
static struct vm_dev *
dev_from_json(struct json_object *o)
{
	const char *id = jstr(o, "id"), *kind = jstr(o, "kind"), *port = jstr(o, "bus");
	struct vm_dev *dev;

	if (id == NULL || kind == NULL)
		return NULL;
	if (strcmp(kind, "disk") == 0) {
		struct cfg_disk disk = {0};

		disk.id = (char *)id;
		disk.file = (char *)jstr(o, "file");
		if (disk.file == NULL || jstr(o, "format") == NULL ||
		    cfg_format_parse(jstr(o, "format"), &disk.format) < 0 ||
		    cfg_cache_parse(jstr(o, "cache") ? jstr(o, "cache") : "none", &disk.cache) < 0)
			return NULL;
		disk.readonly = jbool(o, "readonly");
		dev = vm_dev_new_disk(&disk, port);
	} else {
		struct cfg_net net = {0};

		net.id = (char *)id;
		if (jstr(o, "type") == NULL || cfg_net_type_parse(jstr(o, "type"), &net.type) < 0 ||
		    jstr(o, "mac") == NULL || cfg_parse_mac(jstr(o, "mac"), net.mac) < 0)
			return NULL;
		net.mac_given = true;
		net.bridge = (char *)jstr(o, "bridge");
		net.ifname = (char *)jstr(o, "ifname");
		net.restricted = jbool(o, "restrict");
		dev = vm_dev_new_net(&net, port);
	}
	dev->cold = jbool(o, "cold");
	dev->pending_removal = jbool(o, "pending_removal");
	dev->persist_removal = jbool(o, "persist_removal");
	dev->attaching = jbool(o, "attaching");
	dev->created = jbool(o, "created");
	return dev;
}

/* Writes devices.json; -1 with errno when it could not be written (full or read-only run_dir). */
int
vm_devs_save(struct vm *vm)
{
	struct json_object *arr = json_object_new_array();
	char *path = vm_run_path(vm, "devices.json");
	int rc, saved;

	for (size_t i = 0; i < vm->ndevs; i++)
		json_object_array_add(arr, dev_record(vm->devs[i]));
	errno = 0;
	rc = rundir_write(path, json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
	saved = errno != 0 ? errno : EIO; /* a short write leaves errno alone */
	json_object_put(arr);
	free(path);
	if (rc < 0)
		errno = saved;
	return rc;
}

/* After a daemon restart: the saved bookkeeping, or the definition's devices if there is none, and
 * the images they hold (for the checks of other VMs' starts and attaches). */
void
vm_devs_load(struct vm *vm)
{
	char *path = vm_run_path(vm, "devices.json");
	struct json_object *arr = json_object_from_file(path);

	free(path);
	if (arr == NULL || !json_object_is_type(arr, json_type_array)) {
		json_object_put(arr);
		if (vm->live_cfg)
			vm_devs_init(vm);
		vm_disks_identify(vm);
		return;
	}
	vm_devs_clear(vm);
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct vm_dev *dev = dev_from_json(json_object_array_get_idx(arr, i));

		if (dev)
			vm_devs_add(vm, dev);
	}
	json_object_put(arr);
	vm_disks_identify(vm);
}
