/*
 * The images of a VM's disks. qvmd opens every image a VM's QEMU needs (each disk's own image,
 * every backing file of a qcow2 one (imgchain.c), the UEFI variable store) and hands QEMU the
 * descriptors in fdsets: inherited at spawn (-add-fd, argv.c), sent with add-fd for a hot-plug
 * (vm_hotplug.c). So QEMU, whatever uid it runs as, never opens an image by name, and images
 * keep their owner and mode.
 *
 * qvmd also knows which file each VM's QEMU holds (st_dev/st_ino of the descriptors it opened):
 * an image is never given to two VMs unless both only read it (a shared base image, an ISO),
 * and one VM never names an image twice. Other VMs are asked through the owner's image_holder
 * hook (struct vm_env): a VM knows nothing of the daemon.
 */
#include "vm_private.h"

#include "argv.h"
#include "imgchain.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Whether a use of an image conflicts with one already held: one of them writes, or they are two
 * disks of one VM. */
static bool
uses_conflict(const struct vm_image_id *held, bool writable, bool top)
{
	return held->writable || writable || (held->top && top);
}

static bool
same_file(const struct vm_image_id *held, dev_t dev, ino_t ino)
{
	return held->ino != 0 && held->dev == dev && held->ino == ino;
}

/* The cdrom of a running VM whose medium is the file dev/ino (a medium is held read-only), or
 * NULL. The media are known by name (live_cfg, media.json after a restart of qvmd). */
static const struct cfg_cdrom *
medium_of(const struct vm *vm, dev_t dev, ino_t ino)
{
	struct stat st;

	for (size_t i = 0; vm->live_cfg != NULL && i < vm->live_cfg->ncdroms; i++) {
		const struct cfg_cdrom *cd = &vm->live_cfg->cdroms[i];

		if (cd->file != NULL && stat(cd->file, &st) == 0 && st.st_dev == dev &&
		    st.st_ino == ino)
			return cd;
	}
	return NULL;
}

bool
vm_holds_image(const struct vm *vm, dev_t dev, ino_t ino, bool *writable)
{
	bool held = false;

	*writable = false;
	if (!vm_is_active(vm))
		return false;
	if (medium_of(vm, dev, ino) != NULL)
		held = true;
	if (same_file(&vm->fw_vars, dev, ino)) {
		held = true;
		*writable = true;
	}
	for (size_t i = 0; i < vm->ndevs; i++) {
		const struct vm_dev *d = vm->devs[i];

		for (size_t k = 0; d->is_disk && k < d->nimgs; k++) {
			if (same_file(&d->imgs[k], dev, ino)) {
				held = true;
				*writable = *writable || d->imgs[k].writable;
			}
		}
	}
	return held;
}

/* Refuses an image another VM holds in a way this use conflicts with. */
static int
check_others(struct vm *vm, const char *what, const struct imgchain_image *im, bool writable,
             char **cause)
{
	const struct vm *other;

	if (vm->env.image_holder == NULL)
		return 0;
	other = vm->env.image_holder(vm->env.arg, vm, im->dev, im->ino, writable);
	if (other == NULL)
		return 0;
	*cause = xasprintf("%s: image %s is in use by vm %s", what, im->path, vm_name(other));
	return -1;
}

/* Refuses an image this running VM holds already (but for self, the device being attached). */
static int
check_own(struct vm *vm, const char *what, const struct vm_dev *self,
          const struct imgchain_image *im, bool writable, bool top, char **cause)
{
	const struct cfg_cdrom *cd;

	if (same_file(&vm->fw_vars, im->dev, im->ino)) {
		*cause = xasprintf("%s: image %s is this vm's uefi variable store", what, im->path);
		return -1;
	}
	if (writable && (cd = medium_of(vm, im->dev, im->ino)) != NULL) {
		*cause = xasprintf("%s: image %s is the medium in cdrom %s of this vm", what,
		                   im->path, cd->id);
		return -1;
	}
	for (size_t i = 0; i < vm->ndevs; i++) {
		const struct vm_dev *d = vm->devs[i];

		if (d == self || !d->is_disk)
			continue;
		for (size_t k = 0; k < d->nimgs; k++) {
			if (same_file(&d->imgs[k], im->dev, im->ino) &&
			    uses_conflict(&d->imgs[k], writable, top)) {
				*cause =
				    xasprintf("%s: image %s is also used by disk %s of this vm",
				              what, im->path, d->id);
				return -1;
			}
		}
	}
	return 0;
}

/* Refuses an image that another disk of the start being prepared (chains [0, n)) or its variable
 * store uses already. */
static int
check_start(const struct vm_config *cfg, const struct vm_disk_fds *fds, size_t n, const char *what,
            const struct imgchain_image *im, bool writable, bool top, char **cause)
{
	if (fds->vars != NULL && fds->vars->v[0].dev == im->dev && fds->vars->v[0].ino == im->ino) {
		*cause = xasprintf("%s: image %s is this vm's uefi variable store", what, im->path);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		const struct imgchain *c = &fds->chains[i];

		for (size_t k = 0; k < c->n; k++) {
			struct vm_image_id held = {c->v[k].dev, c->v[k].ino,
			                           k == 0 && !cfg->disks[i].readonly, k == 0};

			if (same_file(&held, im->dev, im->ino) &&
			    uses_conflict(&held, writable, top)) {
				*cause = xasprintf("%s: image %s is also used by disk %s", what,
				                   im->path, cfg->disks[i].id);
				return -1;
			}
		}
	}
	return 0;
}

int
vm_medium_check(struct vm *vm, const struct cfg_cdrom *cd, const struct vm_disk_fds *fds,
                const struct imgchain_image *im, char **cause)
{
	char *what = xasprintf("cdrom %s", cd->id);
	int rc = check_others(vm, what, im, false, cause);

	if (rc == 0)
		rc = check_start(vm->live_cfg, fds, fds->n, what, im, false, false, cause);
	free(what);
	return rc;
}

/* Hands an image's descriptors to keep[] (they are the spawn's now) and describes it to argv. */
static int
hand_over(struct imgchain_image *im, long long set, struct argv_image *out, int *keep,
          size_t *nkeep, size_t keep_max)
{
	if (*nkeep + 2 > keep_max)
		return -1;
	out->set = set;
	out->fd_rw = im->fd_rw;
	out->fd_ro = im->fd_ro;
	out->format = im->format;
	if (im->fd_rw >= 0)
		keep[(*nkeep)++] = im->fd_rw;
	keep[(*nkeep)++] = im->fd_ro;
	im->fd_rw = im->fd_ro = -1;
	return 0;
}

int
vm_disks_open(struct vm *vm, struct vm_disk_fds *fds, int *keep, size_t *nkeep, size_t keep_max,
              char **cause)
{
	const struct vm_config *cfg = vm->live_cfg;
	size_t nimages = 0, k = 0, first_keep = *nkeep;
	long long set = 0;
	char *why = NULL, *path;

	memset(fds, 0, sizeof *fds);
	memset(&vm->fw_vars, 0, sizeof vm->fw_vars); /* the last run's */
	fds->chains = xcalloc(cfg->ndisks + 1, sizeof *fds->chains);
	fds->n = cfg->ndisks;
	if (cfg->firmware == CFG_FIRMWARE_UEFI) {
		fds->vars = xcalloc(1, sizeof *fds->vars);
		path = vm_state_path(vm, "OVMF_VARS.fd");
		if (imgchain_open(fds->vars, path, CFG_FORMAT_RAW, true, &why) < 0) {
			*cause = xasprintf("uefi variable store: %s", why);
			free(path);
			goto fail;
		}
		free(path);
		if (check_others(vm, "uefi variable store", &fds->vars->v[0], true, cause) < 0)
			goto fail;
	}
	for (size_t i = 0; i < cfg->ndisks; i++) {
		const struct cfg_disk *d = &cfg->disks[i];
		struct imgchain *c = &fds->chains[i];
		char *what = xasprintf("disk %s", d->id);
		int rc = 0;

		if (imgchain_open(c, d->file, d->format, !d->readonly, &why) < 0) {
			*cause = xasprintf("%s: %s", what, why);
			free(what);
			goto fail;
		}
		for (size_t j = 0; j < c->n && rc == 0; j++) {
			bool writable = j == 0 && !d->readonly;

			rc = check_others(vm, what, &c->v[j], writable, cause);
			if (rc == 0)
				rc = check_start(cfg, fds, i, what, &c->v[j], writable, j == 0,
				                 cause);
		}
		free(what);
		if (rc < 0)
			goto fail;
		nimages += c->n;
	}

	/* Every image is open and checked: fdset 0 the variable store, then the disks' images. */
	fds->argv_images = xcalloc(nimages + 1, sizeof *fds->argv_images);
	fds->argv_chains = xcalloc(cfg->ndisks + 1, sizeof *fds->argv_chains);
	if (fds->vars != NULL) {
		fds->argv_vars = xcalloc(1, sizeof *fds->argv_vars);
		if (hand_over(&fds->vars->v[0], set++, fds->argv_vars, keep, nkeep, keep_max) < 0)
			goto too_many;
	}
	for (size_t i = 0; i < cfg->ndisks; i++) {
		struct imgchain *c = &fds->chains[i];

		fds->argv_chains[i].images = &fds->argv_images[k];
		fds->argv_chains[i].n = c->n;
		for (size_t j = 0; j < c->n; j++) {
			if (hand_over(&c->v[j], set++, &fds->argv_images[k++], keep, nkeep,
			              keep_max) < 0)
				goto too_many;
		}
	}
	return 0;
too_many:
	*cause = xasprintf("disk images need more than %zu descriptors", keep_max - first_keep);
	for (size_t i = first_keep; i < *nkeep; i++)
		close(keep[i]);
	*nkeep = first_keep;
fail:
	free(why);
	vm_disks_close(fds);
	return -1;
}

void
vm_dev_set_images(struct vm_dev *dev, const struct imgchain *c, bool writable)
{
	free(dev->imgs);
	dev->imgs = xcalloc(c->n + 1, sizeof *dev->imgs);
	dev->nimgs = c->n;
	for (size_t j = 0; j < c->n; j++) {
		dev->imgs[j].dev = c->v[j].dev;
		dev->imgs[j].ino = c->v[j].ino;
		dev->imgs[j].writable = j == 0 && writable;
		dev->imgs[j].top = j == 0;
	}
}

void
vm_disks_record(struct vm *vm, const struct vm_disk_fds *fds)
{
	const struct vm_config *cfg = vm->live_cfg;

	if (fds->vars != NULL) {
		vm->fw_vars.dev = fds->vars->v[0].dev;
		vm->fw_vars.ino = fds->vars->v[0].ino;
		vm->fw_vars.writable = vm->fw_vars.top = true;
	}
	for (size_t i = 0; i < fds->n; i++) {
		struct vm_dev *dev = vm_devs_find(vm, cfg->disks[i].id);

		if (dev != NULL && dev->is_disk)
			vm_dev_set_images(dev, &fds->chains[i], !cfg->disks[i].readonly);
	}
}

void
vm_disks_close(struct vm_disk_fds *fds)
{
	for (size_t i = 0; fds->chains != NULL && i < fds->n; i++)
		imgchain_close(&fds->chains[i]);
	free(fds->chains);
	imgchain_close(fds->vars);
	free(fds->vars);
	free(fds->argv_chains);
	free(fds->argv_images);
	free(fds->argv_vars);
	memset(fds, 0, sizeof *fds);
}

int
vm_disk_open(struct vm *vm, const struct cfg_disk *disk, const struct vm_dev *self,
             struct imgchain *c, char **cause)
{
	char *what = xasprintf("disk %s", disk->id), *why = NULL;
	int rc = 0;

	if (imgchain_open(c, disk->file, disk->format, !disk->readonly, &why) < 0) {
		*cause = xasprintf("%s: %s", what, why);
		free(why);
		free(what);
		return -1;
	}
	for (size_t j = 0; j < c->n && rc == 0; j++) {
		bool writable = j == 0 && !disk->readonly;

		rc = check_others(vm, what, &c->v[j], writable, cause);
		if (rc == 0)
			rc = check_own(vm, what, self, &c->v[j], writable, j == 0, cause);
	}
	free(what);
	if (rc < 0)
		imgchain_close(c);
	return rc;
}

void
vm_disks_identify(struct vm *vm)
{
	struct stat st;
	char *path;

	memset(&vm->fw_vars, 0, sizeof vm->fw_vars);
	if (vm->live_cfg != NULL && vm->live_cfg->firmware == CFG_FIRMWARE_UEFI) {
		path = vm_state_path(vm, "OVMF_VARS.fd");
		if (stat(path, &st) == 0) {
			vm->fw_vars.dev = st.st_dev;
			vm->fw_vars.ino = st.st_ino;
			vm->fw_vars.writable = vm->fw_vars.top = true;
		}
		free(path);
	}
	for (size_t i = 0; i < vm->ndevs; i++) {
		struct vm_dev *dev = vm->devs[i];
		struct imgchain c = {0};
		char *why = NULL;

		if (!dev->is_disk)
			continue;
		if (imgchain_open(&c, dev->disk.file, dev->disk.format, false, &why) < 0) {
			log_warn("vm %s: disk %s: %s (other vms are not kept off its images)",
			         vm->name, dev->id, why);
			free(why);
			continue;
		}
		vm_dev_set_images(dev, &c, !dev->disk.readonly);
		imgchain_close(&c);
	}
}

bool
vm_disk_fdset_of(const char *opaque, const char *id, size_t *image)
{
	char *prefix = xasprintf(ARGV_NODE_FILE_FMT, id);
	size_t n = strlen(prefix), digits;
	const char *rest = opaque + n;
	bool ok = strncmp(opaque, prefix, n) == 0;

	free(prefix);
	if (!ok)
		return false;
	if (*rest == '\0') {
		*image = 0;
		return true;
	}
	digits = strspn(rest, "0123456789");
	if (digits == 0 || digits > 3 || rest[digits] != '\0' || rest[0] == '0')
		return false;
	*image = (size_t)strtoul(rest, NULL, 10);
	return true;
}
