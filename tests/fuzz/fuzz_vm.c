/*
 * fuzz_vm: a VM definition through lexing and validation (cfg_vm_load_text). Any input must give
 * either a VM that satisfies the loader's promises or a non-empty list of "file:line:" errors,
 * without a crash, a leak or undefined behaviour.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "cfg_priv.h"
#include "fuzz_cfg.h"

#define PATH "/fuzz/web1.ini"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What a loaded definition promises its users (supervisor/argv relies on these). */
static void
check_vm(const struct vm_config *vm)
{
	char mac[18];

	FUZZ_CHECK(vm->name != NULL && strcmp(vm->name, "web1") == 0);
	FUZZ_CHECK(vm->path != NULL && strcmp(vm->path, PATH) == 0);
	FUZZ_CHECK(vm->memory >= 16ULL << 20 && vm->memory % (1ULL << 20) == 0);
	FUZZ_CHECK(vm->vcpus >= 1 && vm->vcpus <= 255);
	FUZZ_CHECK(vm->shutdown_timeout_ms >= CFG_SHUTDOWN_TIMEOUT_MIN_MS &&
	           vm->shutdown_timeout_ms <= CFG_SHUTDOWN_TIMEOUT_MAX_MS);
	FUZZ_CHECK(vm->ndisks + vm->nnets + vm->hotplug_slots <= CFG_PORTS_MAX);
	FUZZ_CHECK(vm->machine != CFG_MACHINE_PC || vm->hotplug_slots == 0);
	FUZZ_CHECK(vm->kernel != NULL || (vm->initrd == NULL && vm->append == NULL));
	for (size_t i = 0; i < vm->ndisks; i++) {
		const struct cfg_disk *d = &vm->disks[i];
		char *why = NULL;

		FUZZ_CHECK(cfg_valid_device_id(d->id));
		FUZZ_CHECK(d->file != NULL && d->file[0] == '/');
		FUZZ_CHECK(cfg_vm_disk(vm, d->id) == d);
		FUZZ_CHECK(cfg_vm_net(vm, d->id) == NULL);
		if (cfg_disk_check(d, &why) != 0) {
			fprintf(stderr, "loaded disk fails cfg_disk_check: %s\n", why);
			abort();
		}
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(vm->disks[j].file, d->file) != 0);
	}
	for (size_t i = 0; i < vm->nnets; i++) {
		const struct cfg_net *n = &vm->nets[i];
		char *why = NULL;

		FUZZ_CHECK(cfg_valid_device_id(n->id));
		FUZZ_CHECK(cfg_vm_net(vm, n->id) == n);
		cfg_mac_format(n->mac, mac);
		FUZZ_CHECK(cfg_mac_problem(mac) == NULL);
		if (cfg_net_check(n, &why) != 0) {
			fprintf(stderr, "loaded nic fails cfg_net_check: %s\n", why);
			abort();
		}
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(memcmp(vm->nets[j].mac, n->mac, 6) != 0);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg_errors errs;
	struct vm_config *vm, *dup;
	char *text;

	if (size > CFG_FILE_MAX)
		return -1;
	/* An exact-size copy without a NUL: a read past the end is caught. */
	text = fuzz_copy(data, size);
	cfg_errors_init(&errs);
	vm = cfg_vm_load_text(PATH, text, size, &errs);
	if (vm != NULL) {
		FUZZ_CHECK(errs.n == 0);
		check_vm(vm);
		dup = cfg_vm_dup(vm);
		check_vm(dup);
		cfg_vm_free(dup);
	} else {
		fuzz_check_errors(&errs, PATH);
	}
	cfg_vm_free(vm);
	cfg_errors_free(&errs);
	free(text);
	return 0;
}
