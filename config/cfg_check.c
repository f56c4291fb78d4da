/*
 * config/cfg_check: whole-section checks of a [disk] or [net] that did not come from a file
 * (qvmctl, the control server, the writer), and the rules across a NIC's keys that the loader
 * applies too: one validation for every way a device is described.
 */
#include <stdlib.h>
#include <string.h>

#include "cfg_priv.h"

int
cfg_net_rules(const struct cfg_net *net, const bool given[NK_COUNT], cfg_net_rule_cb cb, void *arg)
{
	const char *type = cfg_net_type_name(net->type);
	char *why;
	int n = 0;

	if (net->type != CFG_NET_BRIDGE && given[NK_BRIDGE]) {
		why = cfg_xprintf("bridge: only for type = bridge (this NIC is type = %s)", type);
		cb(arg, NK_BRIDGE, why);
		free(why);
		n++;
	}
	if (net->type == CFG_NET_BRIDGE && !given[NK_BRIDGE]) {
		cb(arg, -1, "bridge: required for type = bridge");
		n++;
	}
	if (net->type == CFG_NET_USER && given[NK_IFNAME]) {
		cb(arg, NK_IFNAME,
		   "ifname: only for type = tap or bridge (this NIC is type = user)");
		n++;
	}
	if (net->type == CFG_NET_TAP && !given[NK_IFNAME]) {
		cb(arg, -1, "ifname: required for type = tap");
		n++;
	}
	if (net->type != CFG_NET_USER && given[NK_RESTRICT]) {
		why = cfg_xprintf("restrict: only for type = user (this NIC is type = %s)", type);
		cb(arg, NK_RESTRICT, why);
		free(why);
		n++;
	}
	return n;
}

/* Keeps the first broken rule as the cause. */
static void
first_rule(void *arg, int key, const char *why)
{
	char **first = arg;

	(void)key;
	if (*first == NULL)
		*first = cfg_xstrdup(why);
}

int
cfg_net_check(const struct cfg_net *net, char **cause)
{
	const char *id = net->id != NULL ? net->id : "";
	bool given[NK_COUNT] = {false};
	char mac[18], *why = NULL;

	if (!cfg_valid_device_id(net->id)) {
		*cause =
		    cfg_xprintf("[net %s]: '%s' is not a valid device id (a letter, then up to "
		                "%d letters, digits, '_' or '-')",
		                id, id, CFG_ID_MAX - 1);
		return -1;
	}
	if ((unsigned)net->type > CFG_NET_BRIDGE) {
		*cause = cfg_xprintf("[net %s] type: not user, tap or bridge", id);
		return -1;
	}
	if ((unsigned)net->model > CFG_NET_MODEL_E1000E) {
		*cause = cfg_xprintf("[net %s] model: not virtio, e1000 or e1000e", id);
		return -1;
	}
	if (net->mac_given) {
		const char *problem;

		cfg_mac_format(net->mac, mac);
		if ((problem = cfg_mac_problem(mac)) != NULL) {
			*cause = cfg_xprintf("[net %s] mac: '%s' %s", id, mac, problem);
			return -1;
		}
	}
	if (net->bridge != NULL && !cfg_valid_ifname(net->bridge)) {
		*cause = cfg_xprintf("[net %s] bridge: '%s' is not an interface name (1-15 "
		                     "characters, no spaces, '/' or ':')",
		                     id, net->bridge);
		return -1;
	}
	if (net->ifname != NULL && !cfg_valid_ifname(net->ifname)) {
		*cause = cfg_xprintf("[net %s] ifname: '%s' is not an interface name (1-15 "
		                     "characters, no spaces, '/' or ':')",
		                     id, net->ifname);
		return -1;
	}
	given[NK_TYPE] = true;
	given[NK_MAC] = net->mac_given;
	given[NK_BRIDGE] = net->bridge != NULL;
	given[NK_IFNAME] = net->ifname != NULL;
	given[NK_RESTRICT] = net->restricted;
	given[NK_MODEL] = true;
	if (cfg_net_rules(net, given, first_rule, &why) > 0) {
		*cause = cfg_xprintf("[net %s] %s", id, why);
		free(why);
		return -1;
	}
	return 0;
}

int
cfg_disk_check(const struct cfg_disk *disk, char **cause)
{
	const char *id = disk->id != NULL ? disk->id : "";
	char text[32], *why;

	if (!cfg_valid_device_id(disk->id)) {
		*cause = cfg_xprintf("[disk %s]: '%s' is not a valid device id (a letter, then up "
		                     "to %d letters, digits, '_' or '-')",
		                     id, id, CFG_ID_MAX - 1);
		return -1;
	}
	if (disk->file == NULL || disk->file[0] == '\0') {
		*cause = cfg_xprintf("[disk %s] file: required (an absolute path)", id);
		return -1;
	}
	if (disk->file[0] != '/') {
		*cause =
		    cfg_xprintf("[disk %s] file: '%s' is not an absolute path", id, disk->file);
		return -1;
	}
	if (cfg_has_control(disk->file)) {
		*cause = cfg_xprintf("[disk %s] file: contains a control character", id);
		return -1;
	}
	if ((unsigned)disk->format > CFG_FORMAT_RAW) {
		*cause = cfg_xprintf("[disk %s] format: not qcow2 or raw", id);
		return -1;
	}
	if ((unsigned)disk->bus > CFG_BUS_SATA) {
		*cause = cfg_xprintf("[disk %s] bus: not virtio or sata", id);
		return -1;
	}
	if (disk->readonly && disk->bus == CFG_BUS_SATA) {
		*cause = cfg_xprintf("[disk %s] readonly: %s", id, CFG_SATA_READONLY_WHY);
		return -1;
	}
	if ((unsigned)disk->cache > CFG_CACHE_UNSAFE) {
		*cause = cfg_xprintf("[disk %s] cache: not none, writeback, writethrough, "
		                     "directsync or unsafe",
		                     id);
		return -1;
	}
	if (disk->size != 0) {
		cfg_size_format(disk->size, text);
		why = cfg_size_problem(text, disk->size, CFG_DISK_SIZE_MIN, CFG_DISK_SIZE_MAX,
		                       CFG_DISK_SIZE_MULTIPLE);
		if (why != NULL) {
			*cause = cfg_xprintf("[disk %s] size: %s", id, why);
			free(why);
			return -1;
		}
	}
	return 0;
}
