/*
 * config/cfg_diff: what changes when a running VM becomes what its file says. Every value is
 * compared as the schema prints it (cfg_key_text), so the spelling in the file (1G or 1024M) and
 * everything cfg_vm_equal ignores never count; the keys listed in skip_keys never do either.
 * Devices on the SATA/IDE controller (bus = sata disks, cdroms) never change live: the machine's
 * controller has no hot-plug.
 */
#include <stdlib.h>
#include <string.h>

#include "cfg_priv.h"

/* Keys that are no change of a running VM: the name is the file's, autostart concerns qvmd's
 * start, a disk's size only creates a missing image, apply is how to change, not what. */
static bool
skip_key(const char *kind, const char *key)
{
	if (strcmp(kind, "vm") == 0)
		return strcmp(key, "name") == 0 || strcmp(key, "autostart") == 0;
	if (strcmp(kind, "disk") == 0)
		return strcmp(key, "size") == 0 || strcmp(key, "apply") == 0;
	return strcmp(key, "apply") == 0;
}

#define SATA_PENDING "restart needed (sata/ide devices cannot be hot-plugged)"

static bool
text_equal(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Appends " key=value" (value NULL: "(none)") to *out. */
static void
append_kv(char **out, const char *key, const char *value)
{
	char *next = cfg_xprintf("%s%s%s=%s", *out ? *out : "", *out ? " " : "", key,
	                         value ? value : "(none)");

	free(*out);
	*out = next;
}

/* A device section for people: "file=/x format=raw", its keys that are not at their default
 * (always its first key: file of a disk, type of a NIC). */
static char *
section_text(const char *kind, const struct key_spec *specs, size_t n, const void *dev,
             const void *defaults)
{
	char *out = NULL;

	for (size_t i = 0; i < n; i++) {
		char *v, *d;

		if (skip_key(kind, specs[i].name))
			continue;
		v = cfg_key_text(&specs[i], dev);
		d = cfg_key_text(&specs[i], defaults);
		if (i == 0 || !text_equal(v, d))
			append_kv(&out, specs[i].name, v);
		free(v);
		free(d);
	}
	return out != NULL ? out : cfg_xstrdup("");
}

/* The keys that differ between two sections, each side as "key=value ..."; returns how many,
 * and in *only_boot whether boot is the one. */
static size_t
section_delta(const char *kind, const struct key_spec *specs, size_t n, const void *a,
              const void *b, char **old_text, char **new_text, bool *only_boot)
{
	size_t ndiff = 0;

	*old_text = *new_text = NULL;
	*only_boot = true;
	for (size_t i = 0; i < n; i++) {
		char *va, *vb;

		if (skip_key(kind, specs[i].name))
			continue;
		va = cfg_key_text(&specs[i], a);
		vb = cfg_key_text(&specs[i], b);
		if (!text_equal(va, vb)) {
			append_kv(old_text, specs[i].name, va);
			append_kv(new_text, specs[i].name, vb);
			if (strcmp(specs[i].name, "boot") != 0)
				*only_boot = false;
			ndiff++;
		}
		free(va);
		free(vb);
	}
	return ndiff;
}

static struct cfg_change *
diff_push(struct cfg_diff *diff, enum cfg_change_action action, bool live, char *what)
{
	struct cfg_change *c;

	diff->v = cfg_xrealloc(diff->v, diff->n + 1, sizeof(*diff->v));
	c = &diff->v[diff->n++];
	memset(c, 0, sizeof(*c));
	c->action = action;
	c->live = live;
	c->what = what;
	return c;
}

static void
diff_vm_keys(const struct vm_config *running, const struct vm_config *file, struct cfg_diff *diff)
{
	size_t n;
	const struct key_spec *specs = cfg_vm_keys(&n);

	for (size_t i = 0; i < n; i++) {
		char *a, *b;
		struct cfg_change *c;

		if (skip_key("vm", specs[i].name))
			continue;
		a = cfg_key_text(&specs[i], running);
		b = cfg_key_text(&specs[i], file);
		if (text_equal(a, b)) {
			free(a);
			free(b);
			continue;
		}
		c = diff_push(diff, CFG_CHANGE_CHANGE, false, cfg_xstrdup(specs[i].name));
		c->old_text = a;
		c->new_text = b;
		c->reason = cfg_xstrdup("restart needed");
	}
}

/* The disk of vm whose image is file, other than the one with id (a disk renamed in the file). */
static const struct cfg_disk *
disk_by_file(const struct vm_config *vm, const char *file)
{
	for (size_t i = 0; i < vm->ndisks; i++)
		if (vm->disks[i].file != NULL && file != NULL &&
		    strcmp(vm->disks[i].file, file) == 0)
			return &vm->disks[i];
	return NULL;
}

/* A disk of running whose id the file gave to its image under another name: a change of its
 * device id, which only a restart applies (the guest would see another disk). */
static const struct cfg_disk *
renamed_from(const struct vm_config *running, const struct vm_config *file,
             const struct cfg_disk *added)
{
	const struct cfg_disk *old = disk_by_file(running, added->file);

	return old != NULL && cfg_vm_disk(file, old->id) == NULL ? old : NULL;
}

static void
diff_disks(const struct vm_config *running, const struct vm_config *file, struct cfg_diff *diff,
           enum cfg_change_action pass)
{
	size_t n;
	const struct key_spec *specs = cfg_disk_keys(&n);
	struct cfg_disk defaults;
	struct cfg_change *c;

	cfg_disk_defaults(&defaults);
	if (pass == CFG_CHANGE_REMOVE) {
		for (size_t i = 0; i < running->ndisks; i++) {
			const struct cfg_disk *old = &running->disks[i], *now;

			if (cfg_vm_disk(file, old->id) != NULL)
				continue;
			if ((now = disk_by_file(file, old->file)) != NULL &&
			    renamed_from(running, file, now) == old)
				continue; /* listed as a change of its id */
			c = diff_push(diff, CFG_CHANGE_REMOVE, old->bus == CFG_BUS_VIRTIO,
			              cfg_xprintf("disk %s", old->id));
			c->old_text = section_text("disk", specs, n, old, &defaults);
			c->old_disk = old;
			if (old->bus != CFG_BUS_VIRTIO)
				c->reason = cfg_xstrdup(SATA_PENDING);
		}
		return;
	}
	for (size_t i = 0; i < file->ndisks; i++) {
		const struct cfg_disk *now = &file->disks[i], *old = cfg_vm_disk(running, now->id);
		char *a, *b;
		bool only_boot;

		if (pass == CFG_CHANGE_ADD && old == NULL) {
			const struct cfg_disk *from = renamed_from(running, file, now);

			if (from != NULL) {
				c = diff_push(diff, CFG_CHANGE_CHANGE, false,
				              cfg_xprintf("disk %s", now->id));
				c->old_text = cfg_xprintf("id=%s", from->id);
				c->new_text = cfg_xprintf("id=%s", now->id);
				c->reason = cfg_xstrdup("restart needed (a disk's device id)");
				c->old_disk = from;
				c->new_disk = now;
				continue;
			}
			c = diff_push(diff, CFG_CHANGE_ADD, now->bus == CFG_BUS_VIRTIO,
			              cfg_xprintf("disk %s", now->id));
			c->new_text = section_text("disk", specs, n, now, &defaults);
			c->new_disk = now;
			if (now->bus != CFG_BUS_VIRTIO)
				c->reason = cfg_xstrdup(SATA_PENDING);
		} else if (pass == CFG_CHANGE_CHANGE && old != NULL &&
		           section_delta("disk", specs, n, old, now, &a, &b, &only_boot) > 0) {
			bool sata = old->bus != CFG_BUS_VIRTIO || now->bus != CFG_BUS_VIRTIO;
			bool replace = now->apply == CFG_APPLY_REPLACE && !only_boot && !sata;

			c = diff_push(diff, replace ? CFG_CHANGE_REPLACE : CFG_CHANGE_CHANGE,
			              replace, cfg_xprintf("disk %s", now->id));
			c->old_text = a;
			c->new_text = b;
			c->old_disk = old;
			c->new_disk = now;
			if (!replace)
				c->reason = cfg_xstrdup(
				    only_boot ? "restart needed (boot order)"
				    : sata    ? SATA_PENDING
				           : "restart needed (or apply = replace in its section)");
		}
	}
}

static void
diff_nets(const struct vm_config *running, const struct vm_config *file, struct cfg_diff *diff,
          enum cfg_change_action pass)
{
	size_t n;
	const struct key_spec *specs = cfg_net_keys(&n);
	struct cfg_net defaults;
	struct cfg_change *c;

	cfg_net_defaults(&defaults);
	if (pass == CFG_CHANGE_REMOVE) {
		for (size_t i = 0; i < running->nnets; i++) {
			const struct cfg_net *old = &running->nets[i];

			if (cfg_vm_net(file, old->id) != NULL)
				continue;
			c = diff_push(diff, CFG_CHANGE_REMOVE, true,
			              cfg_xprintf("net %s", old->id));
			c->old_text = section_text("net", specs, n, old, &defaults);
			c->old_net = old;
		}
		return;
	}
	for (size_t i = 0; i < file->nnets; i++) {
		const struct cfg_net *now = &file->nets[i], *old = cfg_vm_net(running, now->id);
		char *a, *b;
		bool only_boot;

		if (pass == CFG_CHANGE_ADD && old == NULL) {
			c = diff_push(diff, CFG_CHANGE_ADD, true, cfg_xprintf("net %s", now->id));
			c->new_text = section_text("net", specs, n, now, &defaults);
			c->new_net = now;
		} else if (pass == CFG_CHANGE_CHANGE && old != NULL &&
		           section_delta("net", specs, n, old, now, &a, &b, &only_boot) > 0) {
			bool replace = now->apply == CFG_APPLY_REPLACE;

			c = diff_push(diff, replace ? CFG_CHANGE_REPLACE : CFG_CHANGE_CHANGE,
			              replace, cfg_xprintf("net %s", now->id));
			c->old_text = a;
			c->new_text = b;
			c->old_net = old;
			c->new_net = now;
			if (!replace)
				c->reason = cfg_xstrdup(
				    "restart needed (or apply = replace in its section)");
		}
	}
}

/* Cdroms: added, removed or changed, always at the next start. */
static void
diff_cdroms(const struct vm_config *running, const struct vm_config *file, struct cfg_diff *diff,
            enum cfg_change_action pass)
{
	size_t n;
	const struct key_spec *specs = cfg_cdrom_keys(&n);
	struct cfg_cdrom defaults;
	struct cfg_change *c;

	cfg_cdrom_defaults(&defaults);
	if (pass == CFG_CHANGE_REMOVE) {
		for (size_t i = 0; i < running->ncdroms; i++) {
			const struct cfg_cdrom *old = &running->cdroms[i];

			if (cfg_vm_cdrom(file, old->id) != NULL)
				continue;
			c = diff_push(diff, CFG_CHANGE_REMOVE, false,
			              cfg_xprintf("cdrom %s", old->id));
			c->old_text = section_text("cdrom", specs, n, old, &defaults);
			c->reason = cfg_xstrdup(SATA_PENDING);
		}
		return;
	}
	for (size_t i = 0; i < file->ncdroms; i++) {
		const struct cfg_cdrom *now = &file->cdroms[i],
		                       *old = cfg_vm_cdrom(running, now->id);
		char *a, *b;
		bool only_boot;

		if (pass == CFG_CHANGE_ADD && old == NULL) {
			c = diff_push(diff, CFG_CHANGE_ADD, false,
			              cfg_xprintf("cdrom %s", now->id));
			c->new_text = section_text("cdrom", specs, n, now, &defaults);
			c->reason = cfg_xstrdup(SATA_PENDING);
		} else if (pass == CFG_CHANGE_CHANGE && old != NULL &&
		           section_delta("cdrom", specs, n, old, now, &a, &b, &only_boot) > 0) {
			c = diff_push(diff, CFG_CHANGE_CHANGE, false,
			              cfg_xprintf("cdrom %s", now->id));
			c->old_text = a;
			c->new_text = b;
			c->reason =
			    cfg_xstrdup(only_boot ? "restart needed (boot order)" : SATA_PENDING);
		}
	}
}

void
cfg_diff_vm(const struct vm_config *running, const struct vm_config *file, struct cfg_diff *diff)
{
	static const enum cfg_change_action passes[] = {CFG_CHANGE_REMOVE, CFG_CHANGE_CHANGE,
	                                                CFG_CHANGE_ADD};

	diff->v = NULL;
	diff->n = 0;
	diff_vm_keys(running, file, diff);
	/* Removals first: an added device may need the port, MAC or image a removed one holds. */
	for (size_t p = 0; p < sizeof passes / sizeof passes[0]; p++) {
		diff_disks(running, file, diff, passes[p]);
		diff_nets(running, file, diff, passes[p]);
		diff_cdroms(running, file, diff, passes[p]);
	}
}

void
cfg_diff_free(struct cfg_diff *diff)
{
	for (size_t i = 0; i < diff->n; i++) {
		free(diff->v[i].what);
		free(diff->v[i].old_text);
		free(diff->v[i].new_text);
		free(diff->v[i].reason);
	}
	free(diff->v);
	diff->v = NULL;
	diff->n = 0;
}

const char *
cfg_change_action_name(enum cfg_change_action a)
{
	switch (a) {
	case CFG_CHANGE_ADD:
		return "add";
	case CFG_CHANGE_REMOVE:
		return "remove";
	case CFG_CHANGE_REPLACE:
		return "replace";
	case CFG_CHANGE_CHANGE:
		return "change";
	}
	return "?";
}
