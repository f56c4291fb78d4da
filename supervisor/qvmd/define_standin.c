/*
 * TEMPORARY stand-in (helper `define`): cfg_vm_format and cfg_write_create until branch `devices`
 * lands them in config/cfg_write.c. Removed by the merge of `devices`.
 */
#include "cfg.h"
#include "cfg_priv.h"
#include "xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
cat(char **s, const char *fmt, const char *a, const char *b)
{
	char *t, *u = xasprintf(fmt, a, b);

	t = xasprintf("%s%s", *s, u);
	free(u);
	free(*s);
	*s = t;
}

char *
cfg_vm_format(const struct vm_config *vm, const char *header)
{
	char *s = xstrdup(""), sz[32], n[16];

	if (header != NULL)
		cat(&s, "# %s%s\n", header, "");
	cat(&s, "[vm]\nname = %s%s\n", vm->name, "");
	cfg_size_format(vm->memory, sz);
	cat(&s, "memory = %s%s\n", sz, "");
	snprintf(n, sizeof n, "%u", vm->vcpus);
	if (vm->vcpus != 1)
		cat(&s, "vcpus = %s%s\n", n, "");
	if (vm->machine == CFG_MACHINE_PC)
		cat(&s, "machine = pc%s%s\n", "", "");
	if (vm->accel == CFG_ACCEL_TCG)
		cat(&s, "accel = tcg%s%s\n", "", "");
	if (vm->autostart)
		cat(&s, "autostart = yes%s%s\n", "", "");
	for (size_t i = 0; i < vm->ndisks; i++) {
		const struct cfg_disk *d = &vm->disks[i];

		cat(&s, "\n[disk %s]\nfile = %s\n", d->id, d->file);
		if (d->format != CFG_FORMAT_QCOW2)
			cat(&s, "format = %s%s\n", cfg_format_name(d->format), "");
		if (d->size) {
			cfg_size_format(d->size, sz);
			cat(&s, "size = %s%s\n", sz, "");
		}
		if (d->boot)
			cat(&s, "boot = yes%s%s\n", "", "");
	}
	for (size_t i = 0; i < vm->nnets; i++) {
		const struct cfg_net *t = &vm->nets[i];

		cat(&s, "\n[net %s]\ntype = %s\n", t->id, cfg_net_type_name(t->type));
		if (t->bridge)
			cat(&s, "bridge = %s%s\n", t->bridge, "");
		if (t->ifname)
			cat(&s, "ifname = %s%s\n", t->ifname, "");
		if (t->restricted)
			cat(&s, "restrict = yes%s%s\n", "", "");
	}
	for (size_t i = 0; i < vm->ncdroms; i++)
		cat(&s, "\n[cdrom %s]\nfile = %s\nboot = yes\n", vm->cdroms[i].id,
		    vm->cdroms[i].file);
	return s;
}

int
cfg_write_create(const char *path, const char *text, char **cause)
{
	struct cfg_errors errs;
	struct vm_config *vm;
	char *tmp;
	int fd;

	cfg_errors_init(&errs);
	vm = cfg_vm_load_text(path, text, strlen(text), &errs);
	if (vm == NULL) {
		*cause = xstrdup(errs.n ? errs.msgs[0] : "invalid");
		cfg_errors_free(&errs);
		return -1;
	}
	cfg_vm_free(vm);
	cfg_errors_free(&errs);
	tmp = xasprintf("%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fsync(fd) < 0 ||
	    link(tmp, path) < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		free(tmp);
		return -1;
	}
	close(fd);
	unlink(tmp);
	free(tmp);
	return 0;
}

const char *
cfg_disk_bus_name(enum cfg_disk_bus b)
{
	return b == CFG_BUS_SATA ? "sata" : "virtio";
}
