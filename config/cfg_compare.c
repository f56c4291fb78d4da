/*
 * config/cfg_compare: whether two definitions say the same thing. Only what a definition means
 * counts: comments, blank lines, key order, the spelling of a value (1G or 1024M) and the lines
 * sections sit on do not. The file's path does not either: a definition moved to another file is
 * the same definition.
 */
#include "cfg.h"

#include <string.h>

static bool
str_equal(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

bool
cfg_disk_equal(const struct cfg_disk *a, const struct cfg_disk *b)
{
	return str_equal(a->id, b->id) && str_equal(a->file, b->file) && a->format == b->format &&
	       a->size == b->size && a->readonly == b->readonly && a->cache == b->cache &&
	       a->boot == b->boot && a->bus == b->bus && a->apply == b->apply;
}

bool
cfg_net_equal(const struct cfg_net *a, const struct cfg_net *b)
{
	return str_equal(a->id, b->id) && a->type == b->type &&
	       memcmp(a->mac, b->mac, sizeof a->mac) == 0 && a->mac_given == b->mac_given &&
	       str_equal(a->bridge, b->bridge) && str_equal(a->ifname, b->ifname) &&
	       a->restricted == b->restricted && a->model == b->model && a->apply == b->apply;
}

bool
cfg_cdrom_equal(const struct cfg_cdrom *a, const struct cfg_cdrom *b)
{
	return str_equal(a->id, b->id) && str_equal(a->file, b->file) && a->boot == b->boot;
}

bool
cfg_vm_equal(const struct vm_config *a, const struct vm_config *b)
{
	if (a == b)
		return true;
	if (a == NULL || b == NULL)
		return false;
	if (!str_equal(a->name, b->name) || a->memory != b->memory || a->vcpus != b->vcpus ||
	    a->machine != b->machine || a->accel != b->accel || !str_equal(a->cpu, b->cpu) ||
	    a->hotplug_slots != b->hotplug_slots || !str_equal(a->kernel, b->kernel) ||
	    !str_equal(a->initrd, b->initrd) || !str_equal(a->append, b->append) ||
	    a->firmware != b->firmware || a->shutdown_timeout_ms != b->shutdown_timeout_ms ||
	    a->restart != b->restart || a->restart_limit != b->restart_limit ||
	    a->autostart != b->autostart || a->console != b->console || a->display != b->display ||
	    a->ndisks != b->ndisks || a->nnets != b->nnets || a->ncdroms != b->ncdroms)
		return false;
	for (size_t i = 0; i < a->ndisks; i++)
		if (!cfg_disk_equal(&a->disks[i], &b->disks[i]))
			return false;
	for (size_t i = 0; i < a->nnets; i++)
		if (!cfg_net_equal(&a->nets[i], &b->nets[i]))
			return false;
	for (size_t i = 0; i < a->ncdroms; i++)
		if (!cfg_cdrom_equal(&a->cdroms[i], &b->cdroms[i]))
			return false;
	return true;
}
