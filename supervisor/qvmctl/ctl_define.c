/*
 * qvmctl create and undefine: a new VM from options (the virt-install of qvmd), written by the
 * daemon into vm_dir as the file an operator would write; and its removal.
 */
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "ctl_print.h"
#include "ctl_verbs.h"
#include "xalloc.h"

/* At most as many disks, NICs together as a definition can hold devices. */
#define CTL_DEFINE_DEVICES_MAX CFG_PORTS_MAX

static const struct ctl_opt ctl_create_opts[] = {
    {"memory", true, "guest RAM, e.g. 1G or 512M (required)"},
    {"vcpus", true, "virtual CPUs (default 1)"},
    {"disk", true,
     "SIZE: a new qcow2 image in the first image_dirs entry; or path=FILE[,format=qcow2|raw]"
     "[,size=S] (created when missing and a size is given); id=ID names it; repeatable"},
    {"net", true,
     "user[,restrict] | bridge=BR | tap=IF: a NIC (restrict: no way out of the guest); "
     "repeatable"},
    {"cdrom", true, "an installer ISO (absolute path), booted after the disks"},
    {"machine", true, "q35 (default) or pc"},
    {"accel", true, "kvm (default) or tcg (no KVM on this host)"},
    {"os-variant", true, "linux (default), windows or generic: the devices' defaults"},
    {"autostart", false, "start it when qvmd starts (autostart = yes)"},
    {"start", false, "start it once created"},
    {NULL, false, NULL},
};

/* One "key=value" of a --disk or --net list: splits item in place; false when it has no '='. */
static bool
split_kv(char *item, char **key, char **value)
{
	char *eq = strchr(item, '=');

	if (eq == NULL)
		return false;
	*eq = '\0';
	*key = item;
	*value = eq + 1;
	return true;
}

/* Parses a size; 0 when it is not one. */
static uint64_t
parse_size(const char *text)
{
	uint64_t v;

	return cfg_parse_size(text, &v) == 0 ? v : 0;
}

/* --disk SIZE | key=value[,key=value...] into a request element (the copy of text is kept in
 * *keep, freed by the caller). */
static int
parse_disk(struct ctl *ctl, const char *text, struct json_object *disk, char **keep)
{
	char *copy, *item, *save = NULL, *key, *value;
	uint64_t size;

	if (strchr(text, '=') == NULL) {
		if ((size = parse_size(text)) == 0)
			return ctl_usage_error(ctl, "--disk: '%s' is not a size (use e.g. 10G)",
			                       text);
		json_object_object_add(disk, "size_bytes", json_object_new_uint64(size));
		return CTL_EXIT_OK;
	}
	copy = *keep = xstrdup(text);
	for (item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
		if (!split_kv(item, &key, &value))
			return ctl_usage_error(ctl,
			                       "--disk: '%s' is not key=value (use path, "
			                       "format, size, id)",
			                       item);
		if (json_object_object_get_ex(disk, strcmp(key, "size") == 0 ? "size_bytes" : key,
		                              NULL))
			return ctl_usage_error(ctl, "--disk: %s given twice", key);
		if (strcmp(key, "path") == 0) {
			if (value[0] != '/')
				return ctl_usage_error(
				    ctl, "--disk: path: '%s' is not an absolute path", value);
			json_object_object_add(disk, "path", json_object_new_string(value));
		} else if (strcmp(key, "format") == 0) {
			enum cfg_format f;

			if (cfg_format_parse(value, &f) != 0)
				return ctl_usage_error(
				    ctl, "--disk: format: '%s' is not qcow2 or raw", value);
			json_object_object_add(disk, "format", json_object_new_string(value));
		} else if (strcmp(key, "size") == 0) {
			if ((size = parse_size(value)) == 0)
				return ctl_usage_error(
				    ctl, "--disk: size: '%s' is not a size (use e.g. 10G)", value);
			json_object_object_add(disk, "size_bytes", json_object_new_uint64(size));
		} else if (strcmp(key, "id") == 0) {
			if (!cfg_valid_device_id(value))
				return ctl_usage_error(ctl,
				                       "--disk: id: '%s' is not a device id (a "
				                       "letter, then letters, digits, '_' or '-')",
				                       value);
			json_object_object_add(disk, "id", json_object_new_string(value));
		} else {
			return ctl_usage_error(
			    ctl, "--disk: unknown key '%s' (use path, format, size, id)", key);
		}
	}
	if (!json_object_object_get_ex(disk, "path", NULL) &&
	    !json_object_object_get_ex(disk, "size_bytes", NULL))
		return ctl_usage_error(ctl, "--disk: '%s' needs a path or a size", text);
	return CTL_EXIT_OK;
}

/* --net user[,restrict] | bridge=BR | tap=IF, checked as a [net] section would be. */
static int
parse_net(struct ctl *ctl, const char *text, struct json_object *jnet)
{
	struct cfg_net net = {.id = "net0", .type = CFG_NET_USER};
	char *copy = xstrdup(text), *value, *why = NULL;
	int rc = CTL_EXIT_OK;

	if (strcmp(copy, "user") == 0 || strcmp(copy, "user,restrict") == 0) {
		net.restricted = strcmp(copy, "user") != 0;
	} else if (strncmp(copy, "bridge=", 7) == 0 && copy[7] != '\0') {
		net.type = CFG_NET_BRIDGE;
		net.bridge = copy + 7;
	} else if (strncmp(copy, "tap=", 4) == 0 && copy[4] != '\0') {
		net.type = CFG_NET_TAP;
		net.ifname = copy + 4;
	} else {
		rc = ctl_usage_error(
		    ctl, "--net: '%s' (use user, user,restrict, bridge=BR or tap=IF)", text);
		goto out;
	}
	if (cfg_net_check(&net, &why) != 0) {
		value = strchr(why, ']'); /* "[net net0] key: why": the section is not the user's */
		rc = ctl_usage_error(ctl, "--net: %s", value != NULL ? value + 2 : why);
		free(why);
		goto out;
	}
	json_object_object_add(jnet, "type", json_object_new_string(cfg_net_type_name(net.type)));
	if (net.bridge != NULL)
		json_object_object_add(jnet, "bridge", json_object_new_string(net.bridge));
	if (net.ifname != NULL)
		json_object_object_add(jnet, "ifname", json_object_new_string(net.ifname));
	if (net.restricted)
		json_object_object_add(jnet, "restrict", json_object_new_boolean(1));
out:
	free(copy);
	return rc;
}

/* The error of an unknown --os-variant, listing the table. */
static int
bad_variant(struct ctl *ctl, const char *name)
{
	size_t n;
	const struct cfg_variant *v = cfg_variants(&n);
	char *known = xstrdup(v[0].name), *t;
	int rc;

	for (size_t i = 1; i < n; i++) {
		t = xasprintf("%s, %s", known, v[i].name);
		free(known);
		known = t;
	}
	rc = ctl_usage_error(ctl, "unknown --os-variant '%s' (known: %s)", name, known);
	free(known);
	return rc;
}

/* Checks one single-valued option and adds it to req. */
static int
create_option(struct ctl *ctl, const char *name, const char *value, struct json_object *req)
{
	uint64_t v;

	if (strcmp(name, "memory") == 0) {
		if ((v = parse_size(value)) == 0)
			return ctl_usage_error(ctl, "--memory: '%s' is not a size (use e.g. 1G)",
			                       value);
		json_object_object_add(req, "memory_bytes", json_object_new_uint64(v));
	} else if (strcmp(name, "vcpus") == 0) {
		char *end;
		unsigned long n = strtoul(value, &end, 10);

		if (*value < '1' || *value > '9' || *end != '\0' || n > 1024)
			return ctl_usage_error(ctl, "--vcpus: '%s' is not a number of CPUs", value);
		json_object_object_add(req, "vcpus", json_object_new_int64((int64_t)n));
	} else if (strcmp(name, "cdrom") == 0) {
		if (value[0] != '/')
			return ctl_usage_error(ctl, "--cdrom: '%s' is not an absolute path", value);
		json_object_object_add(req, "cdrom", json_object_new_string(value));
	} else if (strcmp(name, "machine") == 0) {
		if (strcmp(value, "q35") != 0 && strcmp(value, "pc") != 0)
			return ctl_usage_error(ctl, "--machine: '%s' is not q35 or pc", value);
		json_object_object_add(req, "machine", json_object_new_string(value));
	} else if (strcmp(name, "accel") == 0) {
		if (strcmp(value, "kvm") != 0 && strcmp(value, "tcg") != 0)
			return ctl_usage_error(ctl, "--accel: '%s' is not kvm or tcg", value);
		json_object_object_add(req, "accel", json_object_new_string(value));
	} else if (strcmp(name, "os-variant") == 0) {
		if (cfg_variant_find(value) == NULL)
			return bad_variant(ctl, value);
		json_object_object_add(req, "os_variant", json_object_new_string(value));
	} else {
		/* autostart, start */
		json_object_object_add(req, name, json_object_new_boolean(1));
	}
	return CTL_EXIT_OK;
}

/* Turns create's parsed options into a request; CTL_EXIT_OK or a usage error. */
static int
create_parse(struct ctl *ctl, struct ctl_args *args, struct json_object *req)
{
	struct json_object *disks = json_object_new_array(), *nets = json_object_new_array();
	char *keep[CTL_DEFINE_DEVICES_MAX] = {NULL};
	const char *const *disk, *const *net;
	size_t ndisk = ctl_args_all(args, "disk", &disk), nnet = ctl_args_all(args, "net", &net);
	size_t nkeep = 0;
	int rc = CTL_EXIT_OK;

	json_object_object_add(req, "disks", disks);
	json_object_object_add(req, "nets", nets);
	if (ndisk + nnet > CTL_DEFINE_DEVICES_MAX)
		return ctl_usage_error(ctl, "create: at most %d disks and NICs",
		                       CTL_DEFINE_DEVICES_MAX);
	for (size_t i = 0; rc == CTL_EXIT_OK && i < ndisk; i++) {
		struct json_object *o = json_object_new_object();

		json_object_array_add(disks, o);
		rc = parse_disk(ctl, disk[i], o, &keep[nkeep++]);
	}
	for (size_t i = 0; rc == CTL_EXIT_OK && i < nnet; i++) {
		struct json_object *o = json_object_new_object();

		json_object_array_add(nets, o);
		rc = parse_net(ctl, net[i], o);
	}
	for (size_t i = 0; i < nkeep; i++)
		free(keep[i]);
	for (size_t i = 0; rc == CTL_EXIT_OK && ctl_create_opts[i].name != NULL; i++) {
		const char *opt = ctl_create_opts[i].name, *const * v;
		size_t n;

		if (strcmp(opt, "disk") == 0 || strcmp(opt, "net") == 0)
			continue;
		if ((n = ctl_args_all(args, opt, &v)) > 1)
			rc = ctl_usage_error(ctl, "create: --%s given twice", opt);
		else if (n == 1)
			rc = create_option(ctl, opt, v[0], req);
	}
	if (rc == CTL_EXIT_OK && !json_object_object_get_ex(req, "memory_bytes", NULL))
		rc = ctl_usage_error(ctl, "create: --memory SIZE is required");
	return rc;
}

static int
ctl_create(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *req = json_object_new_object(), *reply, *res, *imgs;
	const char *name = args->argv[0];
	int rc;

	if ((rc = create_parse(ctl, args, req)) != CTL_EXIT_OK) {
		json_object_put(req);
		return rc;
	}
	if ((rc = ctl_call(ctl, "create", name, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
	} else {
		printf("vm %s: defined in %s\n", name, ctl_json_str(res, "path", "?"));
		imgs = ctl_json_array(res, "images_created");
		for (size_t i = 0; imgs != NULL && i < json_object_array_length(imgs); i++)
			printf("vm %s: created image %s\n", name,
			       json_object_get_string(json_object_array_get_idx(imgs, i)));
		if (ctl_json_bool(res, "started", false))
			printf("vm %s: started\n", name);
	}
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static int
ctl_undefine(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *req = json_object_new_object(), *reply, *res, *a;
	const char *name = args->argv[0];
	int rc;

	json_object_object_add(req, "remove_disks",
	                       json_object_new_boolean(ctl_args_has(args, "remove-disks")));
	if ((rc = ctl_call(ctl, "undefine", name, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return CTL_EXIT_OK;
	}
	printf("vm %s: undefined (%s removed)\n", name, ctl_json_str(res, "removed_file", "?"));
	a = ctl_json_array(res, "removed_images");
	for (size_t i = 0; a != NULL && i < json_object_array_length(a); i++)
		printf("vm %s: removed image %s\n", name,
		       json_object_get_string(json_object_array_get_idx(a, i)));
	a = ctl_json_array(res, "kept_images");
	for (size_t i = 0; a != NULL && i < json_object_array_length(a); i++) {
		struct json_object *o = json_object_array_get_idx(a, i);

		printf("vm %s: kept image %s (%s)\n", name, ctl_json_str(o, "file", "?"),
		       ctl_json_str(o, "reason", "?"));
	}
	if (ctl_json_str(res, "backups_kept", NULL) != NULL)
		printf("vm %s: backups kept in %s\n", name, ctl_json_str(res, "backups_kept", "?"));
	if (ctl_json_str(res, "warning", NULL) != NULL)
		fprintf(stderr, "qvmctl: vm %s: %s\n", name, ctl_json_str(res, "warning", "?"));
	json_object_put(reply);
	return CTL_EXIT_OK;
}

static const struct ctl_opt ctl_undefine_opts[] = {
    {"remove-disks", false, "delete its disk images too (only those below image_dirs)"},
    {NULL, false, NULL},
};

const struct ctl_verb ctl_verb_create = {
    "create",
    "NAME --memory SIZE [--vcpus N] [--disk SIZE|path=FILE[,format=F][,size=S][,id=ID]]... "
    "[--net user[,restrict]|bridge=BR|tap=IF]... [--cdrom ISO] [--machine q35|pc] "
    "[--accel kvm|tcg] [--os-variant V] [--autostart] [--start]",
    1,
    1,
    ctl_create_opts,
    ctl_create,
    "define a new VM: write its file into vm_dir, create its images, optionally start it",
    NULL,
};
const struct ctl_verb ctl_verb_undefine = {
    "undefine",
    "NAME [--remove-disks]",
    1,
    1,
    ctl_undefine_opts,
    ctl_undefine,
    "remove a stopped VM's definition (and with --remove-disks its images); backups stay",
    NULL,
};
