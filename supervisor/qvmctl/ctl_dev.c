/* Hot-plug verbs: attach-disk, attach-net, detach, devices. */
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "ctl_print.h"
#include "ctl_verbs.h"
#include "xalloc.h"

/* Sends cmd with req for args->argv[0] and prints "VM: <what> ID" (or the result with --json). */
static int
ctl_dev_send(struct ctl *ctl, struct ctl_args *args, struct json_object *req, const char *what)
{
	struct json_object *reply, *res;
	int rc;

	if ((rc = ctl_call(ctl, ctl->verb->name, args->argv[0], req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json)
		ctl_print_json(stdout, res);
	else if (ctl_args_has(args, "persist") && !ctl_json_bool(res, "live", true) &&
	         !ctl_json_bool(res, "was_live", true))
		printf("%s: %s %s in the definition only (it is not live)\n", args->argv[0], what,
		       args->argv[1]);
	else
		printf("%s: %s %s%s\n", args->argv[0], what, args->argv[1],
		       ctl_args_has(args, "persist") ? " (persisted)" : "");
	json_object_put(reply);
	return CTL_EXIT_OK;
}

/* Refuses a device that the daemon would refuse, with the same words: exit 2, nothing sent. */
static int
ctl_dev_refuse(struct ctl *ctl, char *why)
{
	int rc = ctl_usage_error(ctl, "%s: %s", ctl->verb->name, why);

	free(why);
	return rc;
}

static int
ctl_dev_attach_disk(struct ctl *ctl, struct ctl_args *args)
{
	const char *file = ctl_args_get(args, "file"), *format = ctl_args_get(args, "format");
	const char *cache = ctl_args_get(args, "cache"), *create = ctl_args_get(args, "create");
	struct cfg_disk disk = {.id = args->argv[1], .format = CFG_FORMAT_QCOW2};
	struct json_object *req;
	char *why = NULL;

	if (file == NULL || *file == '\0')
		return ctl_usage_error(ctl, "attach-disk: --file PATH is required");
	if (format != NULL && cfg_format_parse(format, &disk.format) != 0)
		return ctl_usage_error(ctl, "attach-disk: --format: '%s' is not qcow2 or raw",
		                       format);
	if (cache != NULL && cfg_cache_parse(cache, &disk.cache) != 0)
		return ctl_usage_error(ctl,
		                       "attach-disk: --cache: '%s' is not none, writeback, "
		                       "writethrough, directsync or unsafe",
		                       cache);
	if (create != NULL && (cfg_parse_size(create, &disk.size) != 0 || disk.size == 0))
		return ctl_usage_error(
		    ctl, "attach-disk: --create: '%s' is not a size (use e.g. 10G)", create);
	/* The daemon resolves nothing against qvmctl's working directory. */
	if (file[0] != '/')
		return ctl_usage_error(ctl, "attach-disk: --file: '%s' is not an absolute path",
		                       file);
	disk.file = (char *)file;
	disk.readonly = ctl_args_has(args, "readonly");
	if (cfg_disk_check(&disk, &why) != 0)
		return ctl_dev_refuse(ctl, why);

	req = json_object_new_object();
	json_object_object_add(req, "id", json_object_new_string(args->argv[1]));
	json_object_object_add(req, "file", json_object_new_string(file));
	if (format != NULL)
		json_object_object_add(req, "format",
		                       json_object_new_string(cfg_format_name(disk.format)));
	json_object_object_add(req, "readonly", json_object_new_boolean(disk.readonly));
	if (cache != NULL)
		json_object_object_add(req, "cache",
		                       json_object_new_string(cfg_cache_name(disk.cache)));
	if (create != NULL)
		json_object_object_add(req, "create_size", json_object_new_uint64(disk.size));
	json_object_object_add(req, "persist",
	                       json_object_new_boolean(ctl_args_has(args, "persist")));
	return ctl_dev_send(ctl, args, req, "attached disk");
}

static int
ctl_dev_attach_net(struct ctl *ctl, struct ctl_args *args)
{
	const char *type = ctl_args_get(args, "type"), *mac = ctl_args_get(args, "mac");
	const char *bridge = ctl_args_get(args, "bridge"), *ifname = ctl_args_get(args, "ifname");
	struct cfg_net net = {.id = args->argv[1], .type = CFG_NET_USER};
	struct json_object *req;
	char text[18], *why = NULL;

	if (type != NULL && cfg_net_type_parse(type, &net.type) != 0)
		return ctl_usage_error(ctl, "attach-net: --type: '%s' is not user, tap or bridge",
		                       type);
	if (mac != NULL && cfg_parse_mac(mac, net.mac) != 0)
		return ctl_usage_error(ctl,
		                       "attach-net: --mac: '%s' is not a unicast MAC address (use "
		                       "e.g. 52:54:00:12:34:56)",
		                       mac);
	if (bridge != NULL && *bridge == '\0')
		return ctl_usage_error(ctl, "attach-net: --bridge: empty name");
	if (ifname != NULL && *ifname == '\0')
		return ctl_usage_error(ctl, "attach-net: --ifname: empty name");
	/* The same rules as a [net] section, live or --persist alike. */
	net.mac_given = mac != NULL;
	net.bridge = (char *)bridge;
	net.ifname = (char *)ifname;
	net.restricted = ctl_args_has(args, "restrict");
	if (cfg_net_check(&net, &why) != 0)
		return ctl_dev_refuse(ctl, why);

	req = json_object_new_object();
	json_object_object_add(req, "id", json_object_new_string(args->argv[1]));
	if (type != NULL)
		json_object_object_add(req, "type",
		                       json_object_new_string(cfg_net_type_name(net.type)));
	if (mac != NULL) {
		cfg_mac_format(net.mac, text);
		json_object_object_add(req, "mac", json_object_new_string(text));
	}
	if (bridge != NULL)
		json_object_object_add(req, "bridge", json_object_new_string(bridge));
	if (ifname != NULL)
		json_object_object_add(req, "ifname", json_object_new_string(ifname));
	json_object_object_add(req, "restrict", json_object_new_boolean(net.restricted));
	json_object_object_add(req, "persist",
	                       json_object_new_boolean(ctl_args_has(args, "persist")));
	return ctl_dev_send(ctl, args, req, "attached net");
}

static int
ctl_dev_detach(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *req;
	uint64_t timeout_ms;
	bool has_timeout;
	int rc;

	if ((rc = ctl_args_timeout(ctl, args, "timeout", &timeout_ms, &has_timeout)) != 0)
		return rc;
	if (!cfg_valid_device_id(args->argv[1]))
		return ctl_usage_error(
		    ctl,
		    "detach: '%s' is not a valid device id (a letter, then up to "
		    "%d letters, digits, '_' or '-')",
		    args->argv[1], CFG_ID_MAX - 1);
	req = json_object_new_object();
	json_object_object_add(req, "id", json_object_new_string(args->argv[1]));
	json_object_object_add(req, "persist",
	                       json_object_new_boolean(ctl_args_has(args, "persist")));
	if (has_timeout)
		json_object_object_add(req, "timeout_ms", json_object_new_uint64(timeout_ms));
	return ctl_dev_send(ctl, args, req, "detached");
}

static int
ctl_dev_devices(struct ctl *ctl, struct ctl_args *args)
{
	static const char *const headers[] = {"ID",   "KIND", "BACKEND", "MAC/FORMAT",
	                                      "PORT", "ADDR", "LIVE",    "PERSISTENT"};
	struct json_object *reply, *res, *list, *dev;
	const char *row[8], *kind;
	struct ctl_table *t;
	int rc;

	if ((rc = ctl_call(ctl, "devices", args->argv[0], NULL, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	t = ctl_table_new(8, headers);
	list = ctl_json_array(res, "devices");
	for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
		dev = json_object_array_get_idx(list, i);
		kind = ctl_json_str(dev, "kind", "?");
		row[0] = ctl_json_str(dev, "id", "?");
		row[1] = kind;
		if (strcmp(kind, "net") == 0) {
			row[2] = ctl_json_str(dev, "type", "-");
			row[3] = ctl_json_str(dev, "mac", "-");
		} else if (strcmp(kind, "cdrom") == 0) {
			/* A drive's backend is its medium; an ISO is read raw. */
			row[2] = ctl_json_str(dev, "medium", "(empty)");
			row[3] = ctl_json_str(dev, "medium", NULL) != NULL ? "raw" : "-";
		} else {
			row[2] = ctl_json_str(dev, "file", "-");
			row[3] = ctl_json_str(dev, "format", "-");
		}
		/* The port qvmd chose, and the PCI address once the firmware numbered its bus. */
		row[4] = ctl_json_str(dev, "bus", "-");
		row[5] = ctl_json_str(dev, "pci_addr", "-");
		if (ctl_json_bool(dev, "pending_removal", false))
			row[6] = "removing";
		else if (ctl_json_bool(dev, "pending_attach", false))
			row[6] = "attaching";
		else
			row[6] = ctl_json_bool(dev, "live", false) ? "yes" : "no";
		row[7] = ctl_json_bool(dev, "persistent", false) ? "yes" : "no";
		ctl_table_add(t, row);
	}
	ctl_table_print(t, stdout);
	ctl_table_free(t);
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static const struct ctl_opt ctl_dev_disk_opts[] = {
    {"file", true, "the image (below image_dirs)"},
    {"format", true, "qcow2 or raw (default: what the image is)"},
    {"readonly", false, "the guest cannot write it"},
    {"cache", true, "none, writeback, writethrough, directsync or unsafe"},
    {"create", true, "create the image with this size first (qcow2)"},
    {"persist", false, "also write it into the VM's definition"},
    {NULL, false, NULL},
};
static const struct ctl_opt ctl_dev_net_opts[] = {
    {"type", true, "user (default), tap or bridge"},
    {"mac", true, "its MAC address (default: one derived from the VM and id)"},
    {"bridge", true, "with --type bridge: the host bridge"},
    {"ifname", true, "with --type tap: the tap device"},
    {"restrict", false, "with --type user: no traffic beyond the host"},
    {"persist", false, "also write it into the VM's definition"},
    {NULL, false, NULL},
};
static const struct ctl_opt ctl_dev_detach_opts[] = {
    {"persist", false, "also remove it from the VM's definition"},
    {"timeout", true, "how long the guest gets to let go of it"},
    {NULL, false, NULL},
};

const struct ctl_verb ctl_verb_attach_disk = {
    "attach-disk",
    "NAME ID --file PATH [--format qcow2|raw] [--readonly] [--cache MODE] [--create SIZE] "
    "[--persist]",
    2,
    2,
    ctl_dev_disk_opts,
    ctl_dev_attach_disk,
    "hot-plug a disk (blockdev-add, device_add); rolled back if any step fails",
    NULL,
};
const struct ctl_verb ctl_verb_attach_net = {
    "attach-net",
    "NAME ID [--type user|tap|bridge] [--mac MAC] [--bridge BR] [--ifname TAP] [--restrict] "
    "[--persist]",
    2,
    2,
    ctl_dev_net_opts,
    ctl_dev_attach_net,
    "hot-plug a NIC (netdev_add, device_add); rolled back if any step fails",
    NULL,
};
const struct ctl_verb ctl_verb_detach = {
    "detach",
    "NAME ID [--persist] [--timeout D]",
    2,
    2,
    ctl_dev_detach_opts,
    ctl_dev_detach,
    "hot-unplug a disk or NIC, waiting for the guest to let go",
    NULL,
};
const struct ctl_verb ctl_verb_devices = {
    "devices",
    "NAME",
    1,
    1,
    NULL,
    ctl_dev_devices,
    "a VM's disks, NICs and cdrom drives: id, kind, port, address, file, MAC or medium",
    NULL,
};
