/*
 * config/cfg_variant: the OS variants of `qvmctl create --os-variant`, the defaults a guest's OS
 * can drive without extra drivers. One table: qvmctl's help, the man page and the README list
 * these rows.
 */
#include <stddef.h>
#include <string.h>

#include "cfg.h"

/* clang-format off */
static const struct cfg_variant variants[] = {
	{"linux", "virtio disks and NICs, no display (serial console)",
	 CFG_BUS_VIRTIO, CFG_NET_MODEL_VIRTIO, CFG_NET_MODEL_VIRTIO, CFG_DISPLAY_NONE},
	{"windows", "SATA disks, e1000e NICs (e1000 on pc), VNC display",
	 CFG_BUS_SATA, CFG_NET_MODEL_E1000E, CFG_NET_MODEL_E1000, CFG_DISPLAY_VNC},
	{"generic", "SATA disks, e1000 NICs, VNC display (an OS qvmd knows nothing of)",
	 CFG_BUS_SATA, CFG_NET_MODEL_E1000, CFG_NET_MODEL_E1000, CFG_DISPLAY_VNC},
};
/* clang-format on */

const struct cfg_variant *
cfg_variants(size_t *n)
{
	*n = sizeof variants / sizeof variants[0];
	return variants;
}

const struct cfg_variant *
cfg_variant_find(const char *name)
{
	for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
		if (strcmp(variants[i].name, name) == 0)
			return &variants[i];
	}
	return NULL;
}
