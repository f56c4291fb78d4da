/* Tests of config/: value parsers, VM and daemon loading, golden error files and the writer. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "cfg_priv.h" /* cfg_vm_load_text */

#define CFG_DATA     QVMD_TEST_DATA "/cfg"
#define GOOD_DATA    QVMD_TEST_DATA "/good"
#define EXAMPLES_DIR QVMD_TEST_DATA "/../../contrib/examples"

static char *
read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0, r;

	if (f == NULL)
		return NULL;
	do {
		if (cap - n < 4096) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap + 1);
			assert_non_null(buf);
		}
		r = fread(buf + n, 1, cap - n, f);
		n += r;
	} while (r > 0);
	fclose(f);
	buf[n] = '\0';
	if (len != NULL)
		*len = n;
	return buf;
}

static void
write_all(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
}

static char *
join_errors(const struct cfg_errors *errs)
{
	size_t len = 1;
	char *s;

	for (size_t i = 0; i < errs->n; i++)
		len += strlen(errs->msgs[i]) + 1;
	s = calloc(1, len);
	assert_non_null(s);
	for (size_t i = 0; i < errs->n; i++) {
		strcat(s, errs->msgs[i]);
		strcat(s, "\n");
	}
	return s;
}

/* A scratch directory for one test, removed with everything in it by rm_tmpdir. */
static char *
make_tmpdir(void)
{
	char *dir = strdup("/tmp/qvmd-test-config.XXXXXX");

	assert_non_null(dir);
	assert_non_null(mkdtemp(dir));
	return dir;
}

static void
rm_tmpdir(char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		char path[4096];

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
	free(dir);
}

static size_t
count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* --- value parsers --- */

static void
test_config_parse_size(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(cfg_parse_size("1024", &v), 0);
	assert_int_equal(v, 1024);
	assert_int_equal(cfg_parse_size("512K", &v), 0);
	assert_int_equal(v, 512ULL << 10);
	assert_int_equal(cfg_parse_size("512M", &v), 0);
	assert_int_equal(v, 512ULL << 20);
	assert_int_equal(cfg_parse_size("1G", &v), 0);
	assert_int_equal(v, 1ULL << 30);
	assert_int_equal(cfg_parse_size("2t", &v), 0);
	assert_int_equal(v, 2ULL << 40);
	assert_int_equal(cfg_parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(cfg_parse_size("16777215T", &v), 0);
	assert_int_equal(v, 16777215ULL << 40);
	v = 7;
	assert_int_equal(cfg_parse_size("16777216T", &v), -1); /* 2^64: overflow */
	assert_int_equal(cfg_parse_size("18446744073709551616", &v), -1);
	assert_int_equal(cfg_parse_size("", &v), -1);
	assert_int_equal(cfg_parse_size("G", &v), -1);
	assert_int_equal(cfg_parse_size("12X", &v), -1);
	assert_int_equal(cfg_parse_size("1GB", &v), -1);
	assert_int_equal(cfg_parse_size("1.5G", &v), -1);
	assert_int_equal(cfg_parse_size("-1", &v), -1);
	assert_int_equal(cfg_parse_size(" 1G", &v), -1);
	assert_int_equal(cfg_parse_size(NULL, &v), -1);
	assert_int_equal(v, 7);
}

static void
test_config_parse_duration(void **state)
{
	uint64_t ms;

	(void)state;
	assert_int_equal(cfg_parse_duration("90", &ms), 0);
	assert_int_equal(ms, 90000);
	assert_int_equal(cfg_parse_duration("90s", &ms), 0);
	assert_int_equal(ms, 90000);
	assert_int_equal(cfg_parse_duration("500ms", &ms), 0);
	assert_int_equal(ms, 500);
	assert_int_equal(cfg_parse_duration("5m", &ms), 0);
	assert_int_equal(ms, 300000);
	assert_int_equal(cfg_parse_duration("1h", &ms), 0);
	assert_int_equal(ms, 3600000);
	ms = 7;
	assert_int_equal(cfg_parse_duration("", &ms), -1);
	assert_int_equal(cfg_parse_duration("s", &ms), -1);
	assert_int_equal(cfg_parse_duration("5x", &ms), -1);
	assert_int_equal(cfg_parse_duration("5 s", &ms), -1);
	assert_int_equal(cfg_parse_duration("1d", &ms), -1);
	assert_int_equal(cfg_parse_duration("5H", &ms), -1);
	assert_int_equal(cfg_parse_duration("18446744073709551615h", &ms), -1);
	assert_int_equal(ms, 7);
}

static void
test_config_parse_bool(void **state)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	bool b;

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		b = false;
		assert_int_equal(cfg_parse_bool(yes[i], &b), 0);
		assert_true(b);
		assert_int_equal(cfg_parse_bool(no[i], &b), 0);
		assert_false(b);
	}
	assert_int_equal(cfg_parse_bool("maybe", &b), -1);
	assert_int_equal(cfg_parse_bool("", &b), -1);
	assert_int_equal(cfg_parse_bool("2", &b), -1);
	assert_int_equal(cfg_parse_bool("yess", &b), -1);
}

static void
test_config_parse_mac(void **state)
{
	uint8_t mac[6] = {0}, want[6] = {0x52, 0x54, 0x00, 0x89, 0xba, 0x6f};
	char text[18];

	(void)state;
	assert_int_equal(cfg_parse_mac("52:54:00:89:ba:6f", mac), 0);
	assert_memory_equal(mac, want, 6);
	assert_int_equal(cfg_parse_mac("52:54:00:89:BA:6F", mac), 0);
	assert_memory_equal(mac, want, 6);
	cfg_mac_format(mac, text);
	assert_string_equal(text, "52:54:00:89:ba:6f");
	assert_int_equal(cfg_parse_mac("01:00:5e:00:00:01", mac), -1); /* multicast */
	assert_int_equal(cfg_parse_mac("ff:ff:ff:ff:ff:ff", mac), -1); /* broadcast */
	assert_int_equal(cfg_parse_mac("00:00:00:00:00:00", mac), -1);
	assert_int_equal(cfg_parse_mac("52:54:00:89:ba", mac), -1);
	assert_int_equal(cfg_parse_mac("52:54:00:89:ba:6f:00", mac), -1);
	assert_int_equal(cfg_parse_mac("52-54-00-89-ba-6f", mac), -1);
	assert_int_equal(cfg_parse_mac("52:54:00:89:bg:6f", mac), -1);
	assert_int_equal(cfg_parse_mac("", mac), -1);
	assert_memory_equal(mac, want, 6); /* untouched on failure */
}

static void
test_config_mac_derive(void **state)
{
	uint8_t a[6], b[6], c[6];
	char text[18];

	(void)state;
	cfg_mac_derive("web1", "lan0", a);
	cfg_mac_derive("web1", "lan0", b);
	assert_memory_equal(a, b, 6);
	assert_int_equal(a[0], 0x52);
	assert_int_equal(a[1], 0x54);
	assert_int_equal(a[2], 0x00);
	/* Stable across builds and releases: a VM's NIC keeps its address. */
	cfg_mac_format(a, text);
	assert_string_equal(text, "52:54:00:37:19:78");
	cfg_mac_derive("web1", "lan1", c);
	assert_memory_not_equal(a, c, 6);
	cfg_mac_derive("web2", "lan0", c);
	assert_memory_not_equal(a, c, 6);
	/* "vm/id" is hashed with the separator: ("web1", "0") and ("web", "10") differ. */
	cfg_mac_derive("web", "10", b);
	cfg_mac_derive("web1", "0", c);
	assert_memory_not_equal(b, c, 6);

	/* No collisions among 64 VMs x 8 NICs (a derived-MAC collision is an error at load). */
	{
		uint8_t(*all)[6] = calloc(512, 6);
		size_t n = 0;

		assert_non_null(all);
		for (int v = 0; v < 64; v++) {
			for (int i = 0; i < 8; i++) {
				char vm[16], id[16];

				snprintf(vm, sizeof(vm), "vm%d", v);
				snprintf(id, sizeof(id), "nic%d", i);
				cfg_mac_derive(vm, id, all[n]);
				for (size_t j = 0; j < n; j++)
					assert_memory_not_equal(all[j], all[n], 6);
				n++;
			}
		}
		free(all);
	}
}

static void
test_config_names(void **state)
{
	char name[70];

	(void)state;
	assert_true(cfg_valid_name("web1"));
	assert_true(cfg_valid_name("a.b_c-d"));
	assert_false(cfg_valid_name(""));
	assert_false(cfg_valid_name("."));
	assert_false(cfg_valid_name(".."));
	assert_false(cfg_valid_name("a b"));
	assert_false(cfg_valid_name("a/b"));
	memset(name, 'a', 63);
	name[63] = '\0';
	assert_true(cfg_valid_name(name));
	name[63] = 'a';
	name[64] = '\0';
	assert_false(cfg_valid_name(name));
	/* A name is an argument of qvmctl and a directory beside qvmd.sock and qvmd.lock. */
	assert_true(cfg_valid_name("0web"));
	assert_true(cfg_valid_name("qvmd"));
	assert_true(cfg_valid_name("qvmdx.a"));
	assert_false(cfg_valid_name("-web"));
	assert_false(cfg_valid_name("_web"));
	assert_false(cfg_valid_name(".web"));
	assert_false(cfg_valid_name("qvmd.sock"));
	assert_false(cfg_valid_name("qvmd.lock"));
	assert_false(cfg_valid_name("qvmd."));

	assert_true(cfg_valid_device_id("root"));
	assert_true(cfg_valid_device_id("a"));
	assert_true(cfg_valid_device_id("Lan_0-x"));
	assert_true(cfg_valid_device_id("abcdefghijklmnopqrstuvwx")); /* 24 */
	assert_false(cfg_valid_device_id("abcdefghijklmnopqrstuvwxy"));
	assert_false(cfg_valid_device_id("0lan"));
	assert_false(cfg_valid_device_id("_lan"));
	assert_false(cfg_valid_device_id("lan.0"));
	assert_false(cfg_valid_device_id(""));
	assert_false(cfg_valid_device_id(NULL));
}

static void
test_config_enum_names(void **state)
{
	enum cfg_format f;
	enum cfg_cache c;
	enum cfg_net_type t;

	(void)state;
	assert_int_equal(cfg_format_parse("raw", &f), 0);
	assert_int_equal(f, CFG_FORMAT_RAW);
	assert_string_equal(cfg_format_name(f), "raw");
	assert_int_equal(cfg_format_parse("vmdk", &f), -1);
	assert_int_equal(cfg_cache_parse("directsync", &c), 0);
	assert_int_equal(c, CFG_CACHE_DIRECTSYNC);
	assert_string_equal(cfg_cache_name(CFG_CACHE_UNSAFE), "unsafe");
	assert_int_equal(cfg_cache_parse("fast", &c), -1);
	assert_int_equal(cfg_net_type_parse("bridge", &t), 0);
	assert_int_equal(t, CFG_NET_BRIDGE);
	assert_string_equal(cfg_net_type_name(CFG_NET_TAP), "tap");
	assert_int_equal(cfg_net_type_parse("vde", &t), -1);
}

/* --- VM definitions --- */

/*
 * Every tests/data/cfg/<case>.ini must fail to load with exactly the lines of <case>.err. With
 * QVMD_REGENERATE=1 the .err files are rewritten instead (review the diff).
 */
static void
test_config_golden_errors(void **state)
{
	bool regen =
	    getenv("QVMD_REGENERATE") != NULL && strcmp(getenv("QVMD_REGENERATE"), "1") == 0;
	struct dirent **names;
	int n, cases = 0, failures = 0, cwd;

	(void)state;
	cwd = open(".", O_RDONLY | O_DIRECTORY);
	assert_true(cwd >= 0);
	assert_int_equal(chdir(CFG_DATA), 0);
	n = scandir(".", &names, NULL, alphasort);
	assert_true(n > 0);
	for (int i = 0; i < n; i++) {
		const char *file = names[i]->d_name;
		size_t len = strlen(file);
		struct cfg_errors errs;
		struct vm_config *vm;
		char errfile[300], *got, *want;

		if (len < 5 || strcmp(file + len - 4, ".ini") != 0) {
			free(names[i]);
			continue;
		}
		snprintf(errfile, sizeof(errfile), "%.*s.err", (int)(len - 4), file);
		cfg_errors_init(&errs);
		vm = cfg_vm_load(file, &errs);
		got = join_errors(&errs);
		if (vm != NULL) {
			print_error("%s: loaded without errors\n", file);
			failures++;
		}
		if (errs.n == 0) {
			print_error("%s: no error reported\n", file);
			failures++;
		}
		if (regen) {
			write_all(errfile, got);
		} else {
			want = read_all(errfile, NULL);
			if (want == NULL) {
				print_error("%s: missing (run with QVMD_REGENERATE=1)\n", errfile);
				failures++;
			} else if (strcmp(want, got) != 0) {
				print_error("%s: errors differ\n--- expected\n%s--- got\n%s", file,
				            want, got);
				failures++;
			}
			free(want);
		}
		free(got);
		cfg_vm_free(vm);
		cfg_errors_free(&errs);
		cases++;
		free(names[i]);
	}
	free(names);
	assert_int_equal(fchdir(cwd), 0);
	close(cwd);
	assert_true(cases >= 24);
	assert_int_equal(failures, 0);
}

static struct vm_config *
load_ok(const char *path)
{
	struct cfg_errors errs;
	struct vm_config *vm;

	cfg_errors_init(&errs);
	vm = cfg_vm_load(path, &errs);
	for (size_t i = 0; i < errs.n; i++)
		print_error("%s\n", errs.msgs[i]);
	assert_int_equal(errs.n, 0);
	assert_non_null(vm);
	cfg_errors_free(&errs);
	return vm;
}

static void
check_full(const struct vm_config *vm)
{
	uint8_t derived[6], mac[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0x0e};
	const struct cfg_disk *d;
	const struct cfg_net *n;

	assert_string_equal(vm->name, "full");
	assert_int_equal(vm->memory, 1536ULL << 20);
	assert_int_equal(vm->vcpus, 4);
	assert_int_equal(vm->machine, CFG_MACHINE_Q35);
	assert_int_equal(vm->accel, CFG_ACCEL_TCG);
	assert_string_equal(vm->cpu, "qemu64,+ssse3");
	assert_int_equal(vm->hotplug_slots, 6);
	assert_string_equal(vm->kernel, "/boot/vmlinuz");
	assert_string_equal(vm->initrd, "/boot/initrd.img");
	assert_string_equal(vm->append, "console=ttyS0 root=/dev/vda1 quiet;noisy # not a comment");
	assert_int_equal(vm->firmware, CFG_FIRMWARE_UEFI);
	assert_int_equal(vm->shutdown_timeout_ms, 1500);
	assert_int_equal(vm->restart, CFG_RESTART_ON_FAILURE);
	assert_int_equal(vm->restart_limit, 0);
	assert_true(vm->autostart);
	assert_int_equal(vm->console, CFG_CONSOLE_NONE);

	assert_int_equal(vm->ndisks, 2);
	d = &vm->disks[0];
	assert_ptr_equal(cfg_vm_disk(vm, "root"), d);
	assert_string_equal(d->id, "root");
	assert_string_equal(d->file, "/var/lib/qvmd/full-root.qcow2");
	assert_int_equal(d->format, CFG_FORMAT_QCOW2);
	assert_int_equal(d->size, 10ULL << 30);
	assert_false(d->readonly);
	assert_int_equal(d->cache, CFG_CACHE_NONE);
	assert_true(d->boot);
	assert_int_equal(d->line, 21);
	d = &vm->disks[1];
	assert_ptr_equal(cfg_vm_disk(vm, "data"), d);
	assert_string_equal(d->file, "/var/lib/qvmd/full data.img");
	assert_int_equal(d->format, CFG_FORMAT_RAW);
	assert_int_equal(d->size, 0);
	assert_true(d->readonly);
	assert_int_equal(d->cache, CFG_CACHE_WRITEBACK);
	assert_false(d->boot);
	assert_int_equal(d->line, 26);
	assert_null(cfg_vm_disk(vm, "lan0"));

	assert_int_equal(vm->nnets, 3);
	n = &vm->nets[0];
	assert_ptr_equal(cfg_vm_net(vm, "lan0"), n);
	assert_int_equal(n->type, CFG_NET_USER);
	assert_true(n->restricted);
	assert_false(n->mac_given);
	cfg_mac_derive("full", "lan0", derived);
	assert_memory_equal(n->mac, derived, 6);
	assert_null(n->bridge);
	assert_null(n->ifname);
	n = &vm->nets[1];
	assert_ptr_equal(cfg_vm_net(vm, "br"), n);
	assert_int_equal(n->type, CFG_NET_BRIDGE);
	assert_string_equal(n->bridge, "br0");
	assert_string_equal(n->ifname, "tap-full");
	assert_true(n->mac_given);
	assert_memory_equal(n->mac, mac, 6);
	assert_false(n->restricted);
	n = &vm->nets[2];
	assert_int_equal(n->type, CFG_NET_TAP);
	assert_string_equal(n->ifname, "tap1");
	assert_null(n->bridge);
	assert_int_equal(n->line, 42);
	assert_null(cfg_vm_net(vm, "root"));
}

static void
test_config_vm_good_fixture(void **state)
{
	struct vm_config *vm;

	(void)state;
	vm = load_ok(GOOD_DATA "/full.ini");
	assert_string_equal(vm->path, GOOD_DATA "/full.ini");
	check_full(vm);
	cfg_vm_free(vm);
}

static void
test_config_vm_defaults(void **state)
{
	char *dir = make_tmpdir(), path[4200];
	struct vm_config *vm;

	(void)state;
	snprintf(path, sizeof(path), "%s/min.ini", dir);
	write_all(path, "[vm]\nname = min\nmemory = 16M\n\n[disk d]\nfile = /x.img\n\n[net n]\n");
	vm = load_ok(path);
	assert_int_equal(vm->memory, 16ULL << 20);
	assert_int_equal(vm->vcpus, 1);
	assert_int_equal(vm->machine, CFG_MACHINE_Q35);
	assert_int_equal(vm->accel, CFG_ACCEL_KVM);
	assert_null(vm->cpu);
	assert_int_equal(vm->hotplug_slots, 4);
	assert_null(vm->kernel);
	assert_null(vm->initrd);
	assert_null(vm->append);
	assert_int_equal(vm->firmware, CFG_FIRMWARE_BIOS);
	assert_int_equal(vm->shutdown_timeout_ms, 60000);
	assert_int_equal(vm->restart, CFG_RESTART_NO);
	assert_int_equal(vm->restart_limit, 5);
	assert_false(vm->autostart);
	assert_int_equal(vm->console, CFG_CONSOLE_LOG);
	assert_int_equal(vm->disks[0].format, CFG_FORMAT_QCOW2);
	assert_int_equal(vm->disks[0].cache, CFG_CACHE_NONE);
	assert_false(vm->disks[0].readonly);
	assert_false(vm->disks[0].boot);
	assert_int_equal(vm->nets[0].type, CFG_NET_USER);
	assert_false(vm->nets[0].restricted);
	cfg_vm_free(vm);

	/* machine = pc has no spare root ports; 0 may be spelled out. */
	write_all(path, "[vm]\nname = min\nmemory = 1G\nmachine = pc\nhotplug_slots = 0\n");
	vm = load_ok(path);
	assert_int_equal(vm->machine, CFG_MACHINE_PC);
	assert_int_equal(vm->hotplug_slots, 0);
	cfg_vm_free(vm);
	rm_tmpdir(dir);
}

static void
test_config_vm_missing_file(void **state)
{
	struct cfg_errors errs;

	(void)state;
	cfg_errors_init(&errs);
	assert_null(cfg_vm_load("/nonexistent/qvmd/web1.ini", &errs));
	assert_int_equal(errs.n, 1);
	assert_string_equal(errs.msgs[0],
	                    "/nonexistent/qvmd/web1.ini: cannot open: No such file or directory");
	cfg_errors_free(&errs);
	assert_null(cfg_vm_load(QVMD_TEST_DATA, &errs));
	assert_int_equal(errs.n, 1);
	assert_non_null(strstr(errs.msgs[0], "is a directory"));
	cfg_errors_free(&errs);
}

static void
test_config_vm_errors_appended(void **state)
{
	struct cfg_errors errs;

	(void)state;
	cfg_errors_init(&errs);
	cfg_errors_add(&errs, "earlier %d", 1);
	assert_null(cfg_vm_load("/nonexistent/a.ini", &errs));
	assert_int_equal(errs.n, 2);
	assert_string_equal(errs.msgs[0], "earlier 1");
	cfg_errors_free(&errs);
	assert_int_equal(errs.n, 0);
	cfg_errors_free(&errs); /* twice is fine */
}

static void
test_config_vm_dup(void **state)
{
	struct vm_config *vm, *copy;

	(void)state;
	vm = load_ok(GOOD_DATA "/full.ini");
	copy = cfg_vm_dup(vm);
	assert_ptr_not_equal(copy, vm);
	assert_ptr_not_equal(copy->name, vm->name);
	assert_ptr_not_equal(copy->disks, vm->disks);
	assert_ptr_not_equal(copy->disks[0].file, vm->disks[0].file);
	assert_ptr_not_equal(copy->nets[1].bridge, vm->nets[1].bridge);
	/* Free the original first: the copy must not share anything with it (ASan checks). */
	cfg_vm_free(vm);
	check_full(copy);
	cfg_vm_free(copy);
	cfg_vm_free(NULL);
}

/* The install-media keys: display, a disk's bus, a NIC's model, [cdrom ID] sections. */
static void
test_config_vm_devices(void **state)
{
	char *dir = make_tmpdir(), path[4200];
	struct vm_config *vm, *copy;
	struct cfg_cdrom cd;

	(void)state;
	snprintf(path, sizeof(path), "%s/inst.ini", dir);
	write_all(path, "[vm]\nname = inst\nmemory = 1G\ndisplay = vnc\n\n"
	                "[cdrom cd0]\nfile = /srv/iso/d.iso\nboot = yes\n\n"
	                "[disk root]\nfile = /srv/root.qcow2\nbus = sata\n\n"
	                "[disk data]\nfile = /srv/data.qcow2\nbus = virtio\n\n"
	                "[net a]\nmodel = e1000\n\n[net b]\nmodel = e1000e\n\n[net c]\n\n"
	                "[cdrom drv]\n");
	vm = load_ok(path);
	assert_int_equal(vm->display, CFG_DISPLAY_VNC);
	assert_int_equal(vm->disks[0].bus, CFG_BUS_SATA);
	assert_int_equal(vm->disks[1].bus, CFG_BUS_VIRTIO);
	assert_int_equal(vm->nets[0].model, CFG_NET_MODEL_E1000);
	assert_int_equal(vm->nets[1].model, CFG_NET_MODEL_E1000E);
	assert_int_equal(vm->nets[2].model, CFG_NET_MODEL_VIRTIO);
	assert_int_equal(vm->ncdroms, 2);
	assert_string_equal(vm->cdroms[0].id, "cd0");
	assert_string_equal(vm->cdroms[0].file, "/srv/iso/d.iso");
	assert_true(vm->cdroms[0].boot);
	assert_int_equal(vm->cdroms[0].line, 6);
	assert_string_equal(vm->cdroms[1].id, "drv");
	assert_null(vm->cdroms[1].file);
	assert_false(vm->cdroms[1].boot);
	assert_ptr_equal(cfg_vm_cdrom(vm, "drv"), &vm->cdroms[1]);
	assert_null(cfg_vm_cdrom(vm, "root"));
	assert_string_equal(cfg_display_name(vm->display), "vnc");
	assert_string_equal(cfg_disk_bus_name(CFG_BUS_SATA), "sata");
	assert_string_equal(cfg_net_model_name(CFG_NET_MODEL_E1000E), "e1000e");

	/* A deep copy, equal; every new field counts for equality. */
	copy = cfg_vm_dup(vm);
	assert_ptr_not_equal(copy->cdroms, vm->cdroms);
	assert_ptr_not_equal(copy->cdroms[0].file, vm->cdroms[0].file);
	assert_true(cfg_vm_equal(vm, copy));
	copy->display = CFG_DISPLAY_NONE;
	assert_false(cfg_vm_equal(vm, copy));
	copy->display = CFG_DISPLAY_VNC;
	copy->disks[0].bus = CFG_BUS_VIRTIO;
	assert_false(cfg_vm_equal(vm, copy));
	copy->disks[0].bus = CFG_BUS_SATA;
	copy->nets[2].model = CFG_NET_MODEL_E1000;
	assert_false(cfg_vm_equal(vm, copy));
	copy->nets[2].model = CFG_NET_MODEL_VIRTIO;
	copy->cdroms[1].boot = true;
	assert_false(cfg_vm_equal(vm, copy));
	copy->cdroms[1].boot = false;
	assert_true(cfg_vm_equal(vm, copy));
	copy->ncdroms = 1;
	assert_false(cfg_vm_equal(vm, copy));
	copy->ncdroms = 2;
	cfg_cdrom_copy(&cd, &vm->cdroms[0]);
	assert_true(cfg_cdrom_equal(&cd, &vm->cdroms[0]));
	free(cd.file);
	cd.file = NULL;
	assert_false(cfg_cdrom_equal(&cd, &vm->cdroms[0]));
	cfg_cdrom_clear(&cd);
	assert_null(cd.id);
	cfg_vm_free(vm);
	cfg_vm_free(copy);
	rm_tmpdir(dir);
}

/* q35's root ports go to virtio disks and NICs only: sata disks and cdroms take none. */
static void
test_config_vm_ports_not_sata(void **state)
{
	char *dir = make_tmpdir(), path[4200];
	struct cfg_errors errs;
	struct vm_config *vm;
	const char *devices =
	    "[disk v1]\nfile = /v1\n[disk v2]\nfile = /v2\n"
	    "[disk s1]\nfile = /s1\nbus = sata\n[disk s2]\nfile = /s2\nbus = sata\n"
	    "[cdrom c1]\n[cdrom c2]\n[net n1]\n[net n2]\nmodel = e1000\n";
	char *text;

	(void)state;
	snprintf(path, sizeof(path), "%s/ports.ini", dir);
	/* 2 virtio disks + 2 NICs + 24 spare ports = 28: fits, whatever the SATA/IDE side holds. */
	assert_true(asprintf(&text, "[vm]\nname = ports\nmemory = 1G\nhotplug_slots = 24\n%s",
	                     devices) > 0);
	write_all(path, text);
	free(text);
	vm = load_ok(path);
	cfg_vm_free(vm);
	/* One spare port more does not. */
	assert_true(asprintf(&text, "[vm]\nname = ports\nmemory = 1G\nhotplug_slots = 25\n%s",
	                     devices) > 0);
	write_all(path, text);
	free(text);
	cfg_errors_init(&errs);
	assert_null(cfg_vm_load(path, &errs));
	assert_int_equal(errs.n, 1);
	assert_non_null(strstr(errs.msgs[0], ":4: [vm] hotplug_slots: 4 devices + 25 hot-plug "
	                                     "slots exceed 28"));
	cfg_errors_free(&errs);
	rm_tmpdir(dir);
}

/* A definition with every [vm] key away from its default and every kind of section. */
static const char every_key[] =
    "[vm]\nname = every\nmemory = 1536M\nvcpus = 3\nmachine = q35\naccel = tcg\ncpu = max\n"
    "hotplug_slots = 2\nkernel = /boot/vmlinuz\ninitrd = /boot/initrd\n"
    "append = console=ttyS0 quiet\nfirmware = uefi\nshutdown_timeout = 90s\n"
    "restart = on-failure\nrestart_limit = 9\nautostart = yes\nconsole = none\n"
    "display = vnc\n\n"
    "[disk root]\nfile = /srv/every.qcow2\nsize = 10G\ncache = writeback\nboot = yes\n"
    "bus = sata\napply = replace\n\n"
    "[disk data]\nfile = /srv/every.raw\nformat = raw\nreadonly = yes\n\n"
    "[net lan0]\ntype = bridge\nbridge = br0\nifname = tap-every\nmodel = e1000e\n"
    "mac = 52:54:00:aa:bb:cc\n\n"
    "[net lan1]\nrestrict = yes\napply = replace\n\n"
    "[net lan2]\ntype = tap\nifname = tap9\nmodel = e1000\n\n"
    "[cdrom cd0]\nfile = /srv/iso/install.iso\nboot = yes\n\n[cdrom cd1]\n";

/* cfg_vm_format: the text reads back as the same definition; defaults are left out. */
static void
test_config_format_round_trip(void **state)
{
	char *dir = make_tmpdir(), path[4200], *text;
	struct vm_config *vm, *back;

	(void)state;
	snprintf(path, sizeof(path), "%s/every.ini", dir);
	write_all(path, every_key);
	vm = load_ok(path);
	text = cfg_vm_format(vm, "made by a test\n\nsecond line");
	assert_true(strncmp(text,
	                    "# made by a test\n#\n# second line\n[vm]\nname = every\n"
	                    "memory = 1536M\nvcpus = 3\n",
	                    strlen("# made by a test\n#\n# second line\n[vm]\nname = every\n"
	                           "memory = 1536M\nvcpus = 3\n")) == 0);
	assert_null(strstr(text, "machine ="));               /* q35 is the default */
	assert_null(strstr(text, "lan1]\ntype = user\nmac")); /* a derived MAC is not written */
	assert_non_null(strstr(text, "\n[cdrom cd1]\n"));
	write_all(path, text);
	back = load_ok(path);
	if (!cfg_vm_equal(vm, back))
		print_error("%s", text);
	assert_true(cfg_vm_equal(vm, back));
	free(text);
	cfg_vm_free(back);
	cfg_vm_free(vm);

	/* A minimal definition is two keys; pc writes no hotplug_slots. */
	write_all(path, "[vm]\nname = every\nmemory = 1G\nmachine = pc\n");
	vm = load_ok(path);
	text = cfg_vm_format(vm, NULL);
	assert_string_equal(text, "[vm]\nname = every\nmemory = 1G\nmachine = pc\n");
	free(text);
	cfg_vm_free(vm);
	rm_tmpdir(dir);
}

/* cfg_write_create: a new file (0644) with the text, or nothing at all. */
static void
test_config_write_create(void **state)
{
	char *dir = make_tmpdir(), path[4200], *got, *cause = NULL;
	const char *bad = "[vm]\nname = every\nmemory = 1X\n[disk d]\nbus = pci\n";
	struct vm_config *vm;
	struct stat st;
	mode_t old = umask(077);

	(void)state;
	snprintf(path, sizeof(path), "%s/every.ini", dir);
	if (cfg_write_create(path, every_key, &cause) != 0)
		print_error("%s\n", cause);
	assert_null(cause);
	umask(old);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	got = read_all(path, NULL);
	assert_string_equal(got, every_key);
	free(got);
	vm = load_ok(path);
	cfg_vm_free(vm);
	assert_int_equal(count_entries(dir), 1); /* no temp file left */

	/* An existing file is refused and left as it is. */
	assert_int_equal(cfg_write_create(path, "[vm]\nname = every\nmemory = 2G\n", &cause), -1);
	assert_non_null(strstr(cause, "every.ini: already exists"));
	free(cause);
	got = read_all(path, NULL);
	assert_string_equal(got, every_key);
	free(got);

	/* Bad text: every error, no file. */
	unlink(path);
	assert_int_equal(cfg_write_create(path, bad, &cause), -1);
	got = cfg_xprintf("%s:3: [vm] memory: '1X' is not a size (use e.g. 512M or 2G)\n"
	                  "%s:4: [disk d] file: required key missing\n"
	                  "%s:5: [disk d] bus: 'pci' is not valid (use virtio or sata)",
	                  path, path, path);
	assert_string_equal(cause, got);
	free(got);
	free(cause);
	assert_int_equal(count_entries(dir), 0);
	/* The name must match the file, as on a reload. */
	snprintf(path, sizeof(path), "%s/other.ini", dir);
	assert_int_equal(cfg_write_create(path, every_key, &cause), -1);
	assert_non_null(strstr(cause, "does not match the file name"));
	free(cause);
	assert_int_equal(count_entries(dir), 0);
	rm_tmpdir(dir);
}

static void
test_config_vm_crlf_and_comments(void **state)
{
	char *dir = make_tmpdir(), path[4200];
	struct vm_config *vm;

	(void)state;
	snprintf(path, sizeof(path), "%s/crlf.ini", dir);
	write_all(path,
	          "\xef\xbb\xbf; BOM, CRLF, comments\r\n# hash comment\r\n[vm] ; header "
	          "comment\r\n  name   =   crlf  \r\nmemory: 2G ; inline\r\n\r\n[ disk\tboot ]\r\n"
	          "file = /a;b.img\r\n");
	vm = load_ok(path);
	assert_string_equal(vm->name, "crlf");
	assert_int_equal(vm->memory, 2ULL << 30);
	assert_int_equal(vm->ndisks, 1);
	assert_string_equal(vm->disks[0].id, "boot");
	assert_string_equal(vm->disks[0].file, "/a;b.img");
	assert_int_equal(vm->disks[0].line, 7);
	cfg_vm_free(vm);
	rm_tmpdir(dir);
}

/* --- daemon configuration --- */

static void
test_config_daemon_defaults(void **state)
{
	struct daemon_config c;
	struct cfg_errors errs;

	(void)state;
	cfg_errors_init(&errs);
	assert_int_equal(cfg_daemon_load(NULL, &c, &errs), 0);
	assert_int_equal(errs.n, 0);
	assert_null(c.path);
	assert_string_equal(c.vm_dir, "/etc/qvmd/vms");
	assert_string_equal(c.run_dir, "/run/qvmd");
	assert_string_equal(c.state_dir, "/var/lib/qvmd");
	assert_string_equal(c.control_socket, "/run/qvmd/qvmd.sock");
	assert_null(c.socket_group);
	assert_string_equal(c.qemu, "/usr/bin/qemu-system-x86_64");
	assert_string_equal(c.qemu_img, "/usr/bin/qemu-img");
	assert_string_equal(c.ovmf_code, "/usr/share/OVMF/OVMF_CODE_4M.fd");
	assert_string_equal(c.ovmf_vars, "/usr/share/OVMF/OVMF_VARS_4M.fd");
	assert_non_null(c.image_dirs);
	assert_string_equal(c.image_dirs[0], "/var/lib/qvmd");
	assert_null(c.image_dirs[1]);
	assert_int_equal(c.log_level, CFG_LOG_INFO);
	assert_int_equal(c.on_daemon_stop, CFG_ON_STOP_LEAVE);
	assert_null(c.qemu_uid_range);
	assert_int_equal(c.qemu_uid_first, 200000);
	assert_int_equal(c.qemu_uid_last, 299999);
	assert_null(c.qemu_user);
	cfg_daemon_free(&c);
	cfg_daemon_free(&c); /* cleared: a second free is harmless */

	/* The default path may be absent: defaults, no error. */
	if (access(CFG_DAEMON_CONF_DEFAULT, F_OK) < 0 && errno == ENOENT) {
		assert_int_equal(cfg_daemon_load(CFG_DAEMON_CONF_DEFAULT, &c, &errs), 0);
		assert_int_equal(errs.n, 0);
		assert_string_equal(c.run_dir, "/run/qvmd");
		cfg_daemon_free(&c);
	}
}

static void
test_config_daemon_file(void **state)
{
	char *dir = make_tmpdir(), path[4200];
	struct daemon_config c;
	struct cfg_errors errs;

	(void)state;
	cfg_errors_init(&errs);
	snprintf(path, sizeof(path), "%s/qvmd.conf", dir);
	write_all(path,
	          "; test\n[qvmd]\nvm_dir = /srv/vms\nrun_dir = /tmp/run\nstate_dir = /srv/st\n"
	          "socket_group = kvm\nqemu = /opt/q\nqemu_img = /opt/qi\novmf_code = /c.fd\n"
	          "ovmf_vars = /v.fd\nimage_dirs = /a  /b/c\nlog_level = debug\n"
	          "on_daemon_stop = powerdown\n");
	assert_int_equal(cfg_daemon_load(path, &c, &errs), 0);
	assert_int_equal(errs.n, 0);
	assert_string_equal(c.path, path);
	assert_string_equal(c.vm_dir, "/srv/vms");
	assert_string_equal(c.run_dir, "/tmp/run");
	assert_string_equal(c.state_dir, "/srv/st");
	assert_string_equal(c.control_socket, "/tmp/run/qvmd.sock"); /* follows run_dir */
	assert_string_equal(c.socket_group, "kvm");
	assert_string_equal(c.qemu, "/opt/q");
	assert_string_equal(c.qemu_img, "/opt/qi");
	assert_string_equal(c.ovmf_code, "/c.fd");
	assert_string_equal(c.ovmf_vars, "/v.fd");
	assert_string_equal(c.image_dirs[0], "/a");
	assert_string_equal(c.image_dirs[1], "/b/c");
	assert_null(c.image_dirs[2]);
	assert_int_equal(c.log_level, CFG_LOG_DEBUG);
	assert_int_equal(c.on_daemon_stop, CFG_ON_STOP_POWERDOWN);
	cfg_daemon_free(&c);

	/* image_dirs defaults to state_dir, control_socket may be set on its own. */
	write_all(path, "[qvmd]\nstate_dir = /srv/st\ncontrol_socket = /run/q.sock\n");
	assert_int_equal(cfg_daemon_load(path, &c, &errs), 0);
	assert_string_equal(c.image_dirs[0], "/srv/st");
	assert_null(c.image_dirs[1]);
	assert_string_equal(c.control_socket, "/run/q.sock");
	cfg_daemon_free(&c);

	/* An empty file: defaults. */
	write_all(path, "");
	assert_int_equal(cfg_daemon_load(path, &c, &errs), 0);
	assert_string_equal(c.vm_dir, "/etc/qvmd/vms");
	cfg_daemon_free(&c);
	rm_tmpdir(dir);
}

/* qemu_uid_range and qemu_user: values, bounds, and never both. */
static void
test_config_daemon_qemu_ids(void **state)
{
	static const struct {
		const char *text, *err; /* err NULL: loads */
		unsigned first, last;
	} cases[] = {
	    {"qemu_uid_range = 300000-300009\n", NULL, 300000, 300009},
	    {"qemu_uid_range = 7-7\n", NULL, 7, 7},
	    {"qemu_uid_range = 1-4294967294\n", NULL, 1, 4294967294u},
	    {"qemu_user = libvirt-qemu\n", NULL, 200000, 299999},
	    {"qemu_uid_range = 0-10\n",
	     "qvmd.conf:2: [qvmd] qemu_uid_range: '0-10' includes 0 "
	     "(root): qemu never runs as root",
	     0, 0},
	    {"qemu_uid_range = 20-10\n",
	     "qvmd.conf:2: [qvmd] qemu_uid_range: '20-10': the first uid is above the last", 0, 0},
	    {"qemu_uid_range = 1-4294967295\n",
	     "qvmd.conf:2: [qvmd] qemu_uid_range: '1-4294967295': uids go up to 4294967294", 0, 0},
	    {"qemu_uid_range = 1-99999999999999999999999\n",
	     "qvmd.conf:2: [qvmd] qemu_uid_range: '1-99999999999999999999999': uids go up to "
	     "4294967294",
	     0, 0},
	    {"qemu_uid_range = 200000\n",
	     "qvmd.conf:2: [qvmd] qemu_uid_range: '200000' is not a uid "
	     "range (use FIRST-LAST, e.g. 200000-299999)",
	     0, 0},
	    {"qemu_uid_range = 1 - 5\n",
	     "qvmd.conf:2: [qvmd] qemu_uid_range: '1 - 5' is not a uid "
	     "range (use FIRST-LAST, e.g. 200000-299999)",
	     0, 0},
	    {"qemu_uid_range = -5\n",
	     "qvmd.conf:2: [qvmd] qemu_uid_range: '-5' is not a uid range "
	     "(use FIRST-LAST, e.g. 200000-299999)",
	     0, 0},
	    {"qemu_uid_range = 5-\n",
	     "qvmd.conf:2: [qvmd] qemu_uid_range: '5-' is not a uid range "
	     "(use FIRST-LAST, e.g. 200000-299999)",
	     0, 0},
	    {"qemu_uid_range = 5-6x\n",
	     "qvmd.conf:2: [qvmd] qemu_uid_range: '5-6x' is not a uid "
	     "range (use FIRST-LAST, e.g. 200000-299999)",
	     0, 0},
	    {"qemu_uid_range =\n",
	     "qvmd.conf:2: [qvmd] qemu_uid_range: '' is not a uid range (use "
	     "FIRST-LAST, e.g. 200000-299999)",
	     0, 0},
	    {"qemu_user =\n",
	     "qvmd.conf:2: [qvmd] qemu_user: empty value (remove the line for a uid per vm)", 0, 0},
	    {"qemu_user = a b\n",
	     "qvmd.conf:2: [qvmd] qemu_user: 'a b' is not a user name (up to "
	     "32 letters, digits, '_', '.' or '-')",
	     0, 0},
	    {"qemu_user = -x\n",
	     "qvmd.conf:2: [qvmd] qemu_user: '-x' is not a user name (up to 32 "
	     "letters, digits, '_', '.' or '-')",
	     0, 0},
	    {"qemu_uid_range = 300000-300009\nqemu_user = qemu\n",
	     "qvmd.conf:3: [qvmd] qemu_user: cannot be combined with qemu_uid_range (line 2): "
	     "every "
	     "qemu runs as one user, or each vm as a uid of its own",
	     0, 0},
	};
	char *dir = make_tmpdir(), path[4200], text[256];
	struct daemon_config c;
	struct cfg_errors errs;

	(void)state;
	cfg_errors_init(&errs);
	assert_int_equal(chdir(dir), 0);
	snprintf(path, sizeof(path), "%s/qvmd.conf", dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), "[qvmd]\n%s", cases[i].text);
		write_all(path, text);
		if (cases[i].err == NULL) {
			assert_int_equal(cfg_daemon_load("qvmd.conf", &c, &errs), 0);
			assert_int_equal(c.qemu_uid_first, cases[i].first);
			assert_int_equal(c.qemu_uid_last, cases[i].last);
			if (strstr(cases[i].text, "qemu_user") != NULL)
				assert_string_equal(c.qemu_user, "libvirt-qemu");
			else
				assert_null(c.qemu_user);
			cfg_daemon_free(&c);
			continue;
		}
		assert_int_equal(cfg_daemon_load("qvmd.conf", &c, &errs), -1);
		assert_int_equal(errs.n, 1);
		assert_string_equal(errs.msgs[0], cases[i].err);
		cfg_errors_free(&errs);
	}
	assert_int_equal(chdir("/"), 0);
	rm_tmpdir(dir);
}

static void
test_config_daemon_errors(void **state)
{
	char *dir = make_tmpdir(), path[4200], *got, want[8192], name[4300];
	struct daemon_config c;
	struct cfg_errors errs;

	(void)state;
	cfg_errors_init(&errs);
	assert_int_equal(chdir(dir), 0);
	snprintf(path, sizeof(path), "%s/qvmd.conf", dir);
	write_all(path, "log_level = info\n[qvmd]\nvm_dir = vms\nrun_dir = /run/a,b\n"
	                "state_dir = /var/lib/q\x02\nqemu =\nlog_level = loud\non_daemon_stop = "
	                "kill\nsocket_group = two words\nimage_dirs = /ok rel\nvm_dir = /x\n"
	                "qemu_imgg = /y\n[vm]\n[qvmd]\n");
	assert_int_equal(cfg_daemon_load("qvmd.conf", &c, &errs), -1);
	got = join_errors(&errs);
	snprintf(
	    want, sizeof(want),
	    "qvmd.conf:1: log_level: key outside of any section (put it below a [section] "
	    "header)\n"
	    "qvmd.conf:3: [qvmd] vm_dir: 'vms' is not an absolute path\n"
	    "qvmd.conf:4: [qvmd] run_dir: '/run/a,b' must not contain ',' (it ends up in QEMU "
	    "option strings)\n"
	    "qvmd.conf:5: [qvmd] state_dir: value contains a control character (0x02)\n"
	    "qvmd.conf:6: [qvmd] qemu: empty value (use an absolute path)\n"
	    "qvmd.conf:7: [qvmd] log_level: 'loud' is not valid (use error, warning, info or "
	    "debug)\n"
	    "qvmd.conf:8: [qvmd] on_daemon_stop: 'kill' is not valid (use leave or powerdown)\n"
	    "qvmd.conf:9: [qvmd] socket_group: 'two words' is not a group name (up to 32 "
	    "letters, digits, '_', '.' or '-')\n"
	    "qvmd.conf:10: [qvmd] image_dirs: 'rel' is not an absolute path\n"
	    "qvmd.conf:11: [qvmd] vm_dir: duplicate key (first set on line 3)\n"
	    "qvmd.conf:12: [qvmd] qemu_imgg: unknown key (did you mean qemu_img?)\n"
	    "qvmd.conf:13: [vm]: unknown section (use [qvmd])\n"
	    "qvmd.conf:14: [qvmd]: duplicate section (first on line 2)\n");
	assert_string_equal(got, want);
	free(got);
	cfg_errors_free(&errs);
	/* Failure leaves nothing allocated in c. */
	assert_null(c.vm_dir);
	assert_null(c.image_dirs);

	/* A socket path that does not fit in sockaddr_un. */
	memset(name, 'r', 120);
	name[0] = '/';
	name[120] = '\0';
	snprintf(want, sizeof(want), "[qvmd]\nrun_dir = %s\n", name);
	write_all(path, want);
	assert_int_equal(cfg_daemon_load("qvmd.conf", &c, &errs), -1);
	assert_int_equal(errs.n, 1);
	assert_non_null(strstr(errs.msgs[0], "qvmd.conf:2: [qvmd] control_socket: '"));
	assert_non_null(strstr(errs.msgs[0], "is too long for a unix socket (at most 107 bytes)"));
	cfg_errors_free(&errs);

	assert_int_equal(cfg_daemon_load("missing.conf", &c, &errs), -1);
	assert_int_equal(errs.n, 1);
	assert_string_equal(errs.msgs[0], "missing.conf: cannot open: No such file or directory");
	cfg_errors_free(&errs);
	assert_int_equal(chdir("/"), 0);
	rm_tmpdir(dir);
}

/* qmp_passthrough: root by default, group when asked, anything else a file:line error. */
static void
test_config_daemon_qmp_passthrough(void **state)
{
	char *dir = make_tmpdir(), path[4200], *got;
	struct daemon_config c;
	struct cfg_errors errs;

	(void)state;
	cfg_errors_init(&errs);
	snprintf(path, sizeof(path), "%s/qvmd.conf", dir);
	write_all(path, "[qvmd]\n");
	assert_int_equal(cfg_daemon_load(path, &c, &errs), 0);
	assert_int_equal(c.qmp_passthrough, CFG_QMP_PASSTHROUGH_ROOT);
	cfg_daemon_free(&c);
	write_all(path, "[qvmd]\nqmp_passthrough = group\n");
	assert_int_equal(cfg_daemon_load(path, &c, &errs), 0);
	assert_int_equal(c.qmp_passthrough, CFG_QMP_PASSTHROUGH_GROUP);
	cfg_daemon_free(&c);
	write_all(path, "[qvmd]\nqmp_passthrough = root\n");
	assert_int_equal(cfg_daemon_load(path, &c, &errs), 0);
	assert_int_equal(c.qmp_passthrough, CFG_QMP_PASSTHROUGH_ROOT);
	cfg_daemon_free(&c);
	assert_int_equal(chdir(dir), 0);
	write_all(path, "[qvmd]\nlog_level = info\nqmp_passthrough = everyone\n");
	assert_int_equal(cfg_daemon_load("qvmd.conf", &c, &errs), -1);
	got = join_errors(&errs);
	assert_string_equal(got, "qvmd.conf:3: [qvmd] qmp_passthrough: 'everyone' is not valid "
	                         "(use root or group)\n");
	free(got);
	cfg_errors_free(&errs);
	assert_int_equal(chdir("/"), 0);
	rm_tmpdir(dir);
}

/* --- writer --- */

static const char writer_base[] = "; web server\n"
                                  "[vm]\n"
                                  "name = wr\n"
                                  "memory = 1G   ; plenty\n"
                                  "\n"
                                  "# the root disk\n"
                                  "[disk root]\n"
                                  "file = /var/lib/qvmd/wr-root.qcow2\n"
                                  "boot = yes\n"
                                  "\n"
                                  "[net lan0]\n"
                                  "restrict = yes\n";

static char *
writer_setup(char **dir, const char *text)
{
	char *path;

	*dir = make_tmpdir();
	assert_true(asprintf(&path, "%s/wr.ini", *dir) > 0);
	write_all(path, text);
	return path;
}

static void
assert_file_is(const char *path, const char *text)
{
	char *got = read_all(path, NULL);

	assert_non_null(got);
	assert_string_equal(got, text);
	free(got);
}

static void
test_config_write_round_trip(void **state)
{
	struct cfg_disk disk = {.id = "data",
	                        .file = "/var/lib/qvmd/wr-data.img",
	                        .format = CFG_FORMAT_RAW,
	                        .size = 3ULL << 30,
	                        .readonly = true,
	                        .cache = CFG_CACHE_WRITEBACK};
	struct cfg_net net = {.id = "lan1", .type = CFG_NET_TAP, .ifname = "tap-wr"};
	char *dir, *path = writer_setup(&dir, writer_base), *cause = NULL, *want;
	struct vm_config *vm;

	(void)state;
	cfg_mac_derive("wr", "lan1", net.mac);
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), 0);
	assert_null(cause);
	assert_true(asprintf(&want,
	                     "%s\n[disk data]\nfile = /var/lib/qvmd/wr-data.img\nformat = raw\n"
	                     "size = 3G\nreadonly = yes\ncache = writeback\n",
	                     writer_base) > 0);
	assert_file_is(path, want);
	free(want);

	assert_int_equal(cfg_write_add_net(path, &net, &cause), 0);
	vm = load_ok(path);
	assert_int_equal(vm->ndisks, 2);
	assert_int_equal(vm->disks[1].size, 3ULL << 30);
	assert_true(vm->disks[1].readonly);
	assert_int_equal(vm->nnets, 2);
	assert_int_equal(vm->nets[1].type, CFG_NET_TAP);
	assert_string_equal(vm->nets[1].ifname, "tap-wr");
	assert_true(vm->nets[1].mac_given);
	assert_memory_equal(vm->nets[1].mac, net.mac, 6);
	cfg_vm_free(vm);

	assert_int_equal(cfg_write_remove_device(path, "data", &cause), 0);
	assert_int_equal(cfg_write_remove_device(path, "lan1", &cause), 0);
	assert_file_is(path, writer_base);
	assert_int_equal(count_entries(dir), 1); /* no temp file left behind */
	free(path);
	rm_tmpdir(dir);
}

static void
test_config_write_remove_keeps_layout(void **state)
{
	static const char text[] = "[vm]\n"
	                           "name = wr\n"
	                           "memory = 1G\n"
	                           "\n"
	                           "; data disk, added by hand\n"
	                           "[disk data]\n"
	                           "file = /d.img ; raw\n"
	                           "format = raw\n"
	                           "\n"
	                           "; the NIC below is the uplink\n"
	                           "# (two comment lines)\n"
	                           "[net up]\n"
	                           "type = user\n"
	                           "\n"
	                           "[disk last]\n"
	                           "file = /l.img\n";
	static const char no_data[] = "[vm]\n"
	                              "name = wr\n"
	                              "memory = 1G\n"
	                              "\n"
	                              "; data disk, added by hand\n"
	                              "; the NIC below is the uplink\n"
	                              "# (two comment lines)\n"
	                              "[net up]\n"
	                              "type = user\n"
	                              "\n"
	                              "[disk last]\n"
	                              "file = /l.img\n";
	static const char no_last[] = "[vm]\n"
	                              "name = wr\n"
	                              "memory = 1G\n"
	                              "\n"
	                              "; data disk, added by hand\n"
	                              "; the NIC below is the uplink\n"
	                              "# (two comment lines)\n"
	                              "[net up]\n"
	                              "type = user\n";
	char *dir, *path = writer_setup(&dir, text), *cause = NULL;

	(void)state;
	assert_int_equal(cfg_write_remove_device(path, "data", &cause), 0);
	assert_file_is(path, no_data);
	assert_int_equal(cfg_write_remove_device(path, "last", &cause), 0);
	assert_file_is(path, no_last);
	free(path);
	rm_tmpdir(dir);
}

static void
test_config_write_refuses(void **state)
{
	struct cfg_disk disk = {.id = "root", .file = "/x.img"};
	struct cfg_net net = {.id = "root", .type = CFG_NET_USER};
	char *dir, *path = writer_setup(&dir, writer_base), *cause = NULL;

	(void)state;
	cfg_mac_derive("wr", "x", net.mac);
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), -1);
	assert_non_null(strstr(cause, "device id 'root' is already defined ([disk root])"));
	free(cause);
	cause = NULL;
	assert_int_equal(cfg_write_add_net(path, &net, &cause), -1); /* ids span kinds */
	assert_non_null(strstr(cause, "already defined"));
	free(cause);
	cause = NULL;
	net.id = "lan0";
	assert_int_equal(cfg_write_add_net(path, &net, &cause), -1);
	assert_non_null(strstr(cause, "([net lan0])"));
	free(cause);
	cause = NULL;
	assert_int_equal(cfg_write_remove_device(path, "nope", &cause), -1);
	assert_non_null(strstr(cause, "no device 'nope' is defined"));
	free(cause);
	cause = NULL;
	assert_int_equal(cfg_write_remove_device(path, "bad.id", &cause), -1);
	assert_non_null(cause);
	free(cause);
	cause = NULL;
	disk.id = "0bad";
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), -1);
	assert_non_null(strstr(cause, "not a valid device id"));
	free(cause);
	assert_file_is(path, writer_base);
	assert_int_equal(count_entries(dir), 1);
	free(path);
	rm_tmpdir(dir);
}

/* A result that would not load (or not mean what was asked) leaves the original untouched. */
static void
test_config_write_atomic_on_invalid(void **state)
{
	struct cfg_disk disk = {.id = "data", .file = "relative.img"};
	struct cfg_net net = {.id = "lan1", .type = CFG_NET_BRIDGE}; /* bridge missing */
	char *dir, *path = writer_setup(&dir, writer_base), *cause = NULL;
	struct stat st;

	(void)state;
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), -1);
	assert_non_null(strstr(cause, "'relative.img' is not an absolute path"));
	free(cause);
	cause = NULL;
	cfg_mac_derive("wr", "lan1", net.mac);
	assert_int_equal(cfg_write_add_net(path, &net, &cause), -1);
	assert_non_null(strstr(cause, "bridge: required for type = bridge"));
	free(cause);
	cause = NULL;
	/* Values the INI syntax would alter: a newline, an inline comment, outer spaces. */
	disk.file = "/a.img\nreadonly = yes";
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), -1);
	free(cause);
	cause = NULL;
	disk.file = "/a.img ; b";
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), -1);
	assert_non_null(strstr(cause, "cannot be written as given"));
	free(cause);
	cause = NULL;
	disk.file = "/a.img ";
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), -1);
	free(cause);
	cause = NULL;
	assert_file_is(path, writer_base);
	assert_int_equal(count_entries(dir), 1);

	/* A definition that is already broken is not edited. */
	write_all(path, "[vm]\nname = wr\n");
	disk.file = "/ok.img";
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), -1);
	assert_non_null(strstr(cause, "the definition has errors"));
	free(cause);
	assert_file_is(path, "[vm]\nname = wr\n");

	/* The mode survives a successful write. */
	write_all(path, writer_base);
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(count_entries(dir), 1);
	free(path);
	rm_tmpdir(dir);
}

static void
test_config_write_no_trailing_newline(void **state)
{
	struct cfg_net net = {.id = "n2", .type = CFG_NET_USER, .restricted = true};
	char *dir, *path = writer_setup(&dir, "[vm]\nname = wr\nmemory = 1G"), *cause = NULL;
	char want[200];

	(void)state;
	cfg_mac_derive("wr", "n2", net.mac);
	assert_int_equal(cfg_write_add_net(path, &net, &cause), 0);
	snprintf(want, sizeof(want),
	         "[vm]\nname = wr\nmemory = 1G\n\n[net n2]\ntype = user\nmac = "
	         "52:54:00:%02x:%02x:%02x\nrestrict = yes\n",
	         net.mac[3], net.mac[4], net.mac[5]);
	assert_file_is(path, want);
	free(path);
	rm_tmpdir(dir);
}

/* media --persist: [cdrom ID] file replaced in place, added below the header, removed. */
static const char cdrom_base[] = "[vm]\n"
                                 "name = wr\n"
                                 "memory = 1G\n"
                                 "\n"
                                 "; the installer drive\n"
                                 "[cdrom cd0]   # first\n"
                                 "boot = yes ; keep\n"
                                 "\n"
                                 "[cdrom cd1]\n"
                                 "  file  =  /isos/old.iso   ; the old one\n"
                                 "# after file\n"
                                 "\n"
                                 "[disk root]\n"
                                 "file = /r.img\n";

static void
test_config_write_cdrom_medium(void **state)
{
	static const char added[] = "[vm]\n"
	                            "name = wr\n"
	                            "memory = 1G\n"
	                            "\n"
	                            "; the installer drive\n"
	                            "[cdrom cd0]   # first\n"
	                            "file = /isos/new.iso\n"
	                            "boot = yes ; keep\n"
	                            "\n"
	                            "[cdrom cd1]\n"
	                            "  file  =  /isos/old.iso   ; the old one\n"
	                            "# after file\n"
	                            "\n"
	                            "[disk root]\n"
	                            "file = /r.img\n";
	static const char replaced[] = "[vm]\n"
	                               "name = wr\n"
	                               "memory = 1G\n"
	                               "\n"
	                               "; the installer drive\n"
	                               "[cdrom cd0]   # first\n"
	                               "file = /isos/new.iso\n"
	                               "boot = yes ; keep\n"
	                               "\n"
	                               "[cdrom cd1]\n"
	                               "file = /isos/other.iso\n"
	                               "# after file\n"
	                               "\n"
	                               "[disk root]\n"
	                               "file = /r.img\n";
	static const char removed[] = "[vm]\n"
	                              "name = wr\n"
	                              "memory = 1G\n"
	                              "\n"
	                              "; the installer drive\n"
	                              "[cdrom cd0]   # first\n"
	                              "file = /isos/new.iso\n"
	                              "boot = yes ; keep\n"
	                              "\n"
	                              "[cdrom cd1]\n"
	                              "# after file\n"
	                              "\n"
	                              "[disk root]\n"
	                              "file = /r.img\n";
	char *dir, *path = writer_setup(&dir, cdrom_base), *cause = NULL;
	struct vm_config *vm;

	(void)state;
	/* add: right below the header, comments and the other keys as they were */
	assert_int_equal(cfg_write_cdrom_medium(path, "cd0", "/isos/new.iso", &cause), 0);
	assert_null(cause);
	assert_file_is(path, added);
	vm = load_ok(path);
	assert_string_equal(cfg_vm_cdrom(vm, "cd0")->file, "/isos/new.iso");
	assert_true(cfg_vm_cdrom(vm, "cd0")->boot);
	cfg_vm_free(vm);
	/* replace: the line itself, in place */
	assert_int_equal(cfg_write_cdrom_medium(path, "cd1", "/isos/other.iso", &cause), 0);
	assert_file_is(path, replaced);
	vm = load_ok(path);
	assert_string_equal(cfg_vm_cdrom(vm, "cd1")->file, "/isos/other.iso");
	cfg_vm_free(vm);
	/* remove: only that line */
	assert_int_equal(cfg_write_cdrom_medium(path, "cd1", NULL, &cause), 0);
	assert_file_is(path, removed);
	vm = load_ok(path);
	assert_null(cfg_vm_cdrom(vm, "cd1")->file);
	cfg_vm_free(vm);
	/* removing an absent line, or writing what is there: nothing changes */
	assert_int_equal(cfg_write_cdrom_medium(path, "cd1", NULL, &cause), 0);
	assert_int_equal(cfg_write_cdrom_medium(path, "cd0", "/isos/new.iso", &cause), 0);
	assert_file_is(path, removed);
	assert_int_equal(count_entries(dir), 1); /* no temp file left behind */
	free(path);
	rm_tmpdir(dir);
}

/* A header that ends the file (no newline), and CRLF lines, keep their shape. */
static void
test_config_write_cdrom_medium_edges(void **state)
{
	char *dir, *path = writer_setup(&dir, "[vm]\nname = wr\nmemory = 1G\n[cdrom cd0]"),
	           *cause = NULL;

	(void)state;
	assert_int_equal(cfg_write_cdrom_medium(path, "cd0", "/a.iso", &cause), 0);
	assert_file_is(path, "[vm]\nname = wr\nmemory = 1G\n[cdrom cd0]\nfile = /a.iso\n");
	assert_int_equal(cfg_write_cdrom_medium(path, "cd0", NULL, &cause), 0);
	assert_file_is(path, "[vm]\nname = wr\nmemory = 1G\n[cdrom cd0]\n");
	write_all(path, "[vm]\r\nname = wr\r\nmemory = 1G\r\n[cdrom cd0]\r\nboot = yes\r\n");
	assert_int_equal(cfg_write_cdrom_medium(path, "cd0", "/a.iso", &cause), 0);
	assert_file_is(path,
	               "[vm]\r\nname = wr\r\nmemory = 1G\r\n[cdrom cd0]\r\nfile = /a.iso\r\nboot = "
	               "yes\r\n");
	assert_int_equal(cfg_write_cdrom_medium(path, "cd0", "/b.iso", &cause), 0);
	assert_file_is(path,
	               "[vm]\r\nname = wr\r\nmemory = 1G\r\n[cdrom cd0]\r\nfile = /b.iso\r\nboot = "
	               "yes\r\n");
	free(path);
	rm_tmpdir(dir);
}

/* Refusals leave the file byte for byte as it was. */
static void
test_config_write_cdrom_medium_refuses(void **state)
{
	static const struct {
		const char *id, *file, *want;
	} bad[] = {
	    {"cd9", "/a.iso", "[cdrom cd9]: no such section"},
	    {"root", "/a.iso", "[cdrom root]: no such section"}, /* a disk is no cdrom */
	    {"cd0", "/a,b.iso", "[cdrom cd0] file: '/a,b.iso' must not contain ','"},
	    {"cd0", "a.iso", "[cdrom cd0] file: 'a.iso' is not an absolute path"},
	    {"cd0", "/a.iso\nboot = no", "contains a control character"},
	    {"cd0", "/a.iso ; x", "cannot be written as given"},
	    {"cd0", "/a.iso ", "cannot be written as given"},
	    {"cd0", "/r.img", "already used by [disk root]"}, /* the result would not load */
	    {"0bad", "/a.iso", "not a valid device id"},
	};
	char *dir, *path = writer_setup(&dir, cdrom_base), *cause;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cause = NULL;
		assert_int_equal(cfg_write_cdrom_medium(path, bad[i].id, bad[i].file, &cause), -1);
		assert_non_null(cause);
		if (strstr(cause, bad[i].want) == NULL)
			fail_msg("%s / %s: got '%s', want '%s'", bad[i].id, bad[i].file, cause,
			         bad[i].want);
		assert_true(strncmp(cause, path, strlen(path)) == 0); /* "PATH: ..." */
		free(cause);
		assert_file_is(path, cdrom_base);
	}
	cause = NULL;
	assert_int_equal(cfg_write_cdrom_medium(path, "cd9", NULL, &cause), -1);
	assert_non_null(strstr(cause, "[cdrom cd9]: no such section"));
	free(cause);
	assert_file_is(path, cdrom_base);
	assert_int_equal(count_entries(dir), 1);
	free(path);
	rm_tmpdir(dir);
}

/* --- shipped examples --- */

static void
test_config_examples_load(void **state)
{
	struct daemon_config c;
	struct cfg_errors errs;
	struct vm_config *vm;

	(void)state;
	vm = load_ok(EXAMPLES_DIR "/web1.ini");
	assert_string_equal(vm->name, "web1");
	assert_int_equal(vm->accel, CFG_ACCEL_KVM);
	assert_true(vm->ndisks >= 1);
	assert_int_equal(vm->disks[0].cache, CFG_CACHE_NONE);
	assert_true(vm->nnets >= 1);
	cfg_vm_free(vm);

	cfg_errors_init(&errs);
	assert_int_equal(cfg_daemon_load(EXAMPLES_DIR "/qvmd.conf", &c, &errs), 0);
	for (size_t i = 0; i < errs.n; i++)
		print_error("%s\n", errs.msgs[i]);
	assert_int_equal(errs.n, 0);
	/* The example documents the defaults. */
	assert_string_equal(c.vm_dir, "/etc/qvmd/vms");
	assert_string_equal(c.run_dir, "/run/qvmd");
	assert_string_equal(c.control_socket, "/run/qvmd/qvmd.sock");
	assert_int_equal(c.log_level, CFG_LOG_INFO);
	cfg_daemon_free(&c);
}

/* One timeout rule for definitions and qvmctl: 1s..1h, never a silent 0. */
static void
test_config_parse_timeout(void **state)
{
	uint64_t ms = 7;
	char *cause = NULL;

	(void)state;
	assert_int_equal(cfg_parse_timeout("90s", &ms, &cause), 0);
	assert_int_equal(ms, 90000);
	assert_int_equal(cfg_parse_timeout("1h", &ms, &cause), 0);
	assert_int_equal(ms, CFG_SHUTDOWN_TIMEOUT_MAX_MS);
	assert_int_equal(cfg_parse_timeout("1000ms", &ms, &cause), 0);
	assert_int_equal(ms, CFG_SHUTDOWN_TIMEOUT_MIN_MS);
	ms = 7;
	assert_int_equal(cfg_parse_timeout("0", &ms, &cause), -1);
	assert_string_equal(cause, "'0' is out of range (1s..1h)");
	free(cause);
	assert_int_equal(cfg_parse_timeout("2h", &ms, &cause), -1);
	assert_string_equal(cause, "'2h' is out of range (1s..1h)");
	free(cause);
	assert_int_equal(cfg_parse_timeout("999ms", &ms, &cause), -1);
	free(cause);
	assert_int_equal(cfg_parse_timeout("soon", &ms, &cause), -1);
	assert_string_equal(cause, "'soon' is not a duration (use e.g. 90s, 500ms, 5m or 1h)");
	free(cause);
	assert_int_equal(ms, 7); /* untouched on failure */
}

static void
expect_net(const struct cfg_net *net, const char *want)
{
	char *cause = NULL;

	if (want == NULL) {
		if (cfg_net_check(net, &cause) != 0)
			fail_msg("unexpected: %s", cause);
		return;
	}
	assert_int_equal(cfg_net_check(net, &cause), -1);
	assert_string_equal(cause, want);
	free(cause);
}

static void
test_config_net_check(void **state)
{
	struct cfg_net net = {.id = "lan0", .type = CFG_NET_USER, .restricted = true};

	(void)state;
	expect_net(&net, NULL);
	net.type = CFG_NET_TAP;
	net.ifname = "tap0";
	expect_net(&net, "[net lan0] restrict: only for type = user (this NIC is type = tap)");
	net.restricted = false;
	expect_net(&net, NULL);
	net.ifname = NULL;
	expect_net(&net, "[net lan0] ifname: required for type = tap");
	net.type = CFG_NET_BRIDGE;
	expect_net(&net, "[net lan0] bridge: required for type = bridge");
	net.bridge = "br0";
	expect_net(&net, NULL);
	net.ifname = "tap0"; /* the tap's name, optional with a bridge */
	expect_net(&net, NULL);
	net.type = CFG_NET_USER;
	expect_net(&net, "[net lan0] bridge: only for type = bridge (this NIC is type = user)");
	net.bridge = NULL;
	expect_net(&net,
	           "[net lan0] ifname: only for type = tap or bridge (this NIC is type = user)");
	net.ifname = NULL;
	net.mac_given = true;
	memcpy(net.mac, "\x53\x54\x00\x00\x00\x01", 6);
	expect_net(&net, "[net lan0] mac: '53:54:00:00:00:01' is a multicast address (the first "
	                 "byte must be even, e.g. 52:54:00:...)");
	net.mac[0] = 0x52;
	expect_net(&net, NULL);
	net.type = CFG_NET_TAP;
	net.ifname = "a/b";
	expect_net(&net, "[net lan0] ifname: 'a/b' is not an interface name (1-15 characters, no "
	                 "spaces, '/' or ':')");
	net.ifname = "tap0";
	net.id = "0lan";
	expect_net(&net, "[net 0lan]: '0lan' is not a valid device id (a letter, then up to 23 "
	                 "letters, digits, '_' or '-')");
}

static void
expect_disk(const struct cfg_disk *disk, const char *want)
{
	char *cause = NULL;

	if (want == NULL) {
		if (cfg_disk_check(disk, &cause) != 0)
			fail_msg("unexpected: %s", cause);
		return;
	}
	assert_int_equal(cfg_disk_check(disk, &cause), -1);
	assert_string_equal(cause, want);
	free(cause);
}

static void
test_config_disk_check(void **state)
{
	struct cfg_disk disk = {.id = "data", .file = "/var/lib/qvmd/d.img", .size = 1ULL << 30};

	(void)state;
	expect_disk(&disk, NULL);
	disk.size = 1000;
	expect_disk(&disk, "[disk data] size: '1000' is too small (at least 1M)");
	disk.size = (1ULL << 20) + 100;
	expect_disk(&disk, "[disk data] size: '1048676' is not a multiple of 512");
	disk.size = 65ULL << 40;
	expect_disk(&disk, "[disk data] size: '65T' is too large (at most 64T)");
	disk.size = 0;
	disk.file = "d.img";
	expect_disk(&disk, "[disk data] file: 'd.img' is not an absolute path");
	disk.file = NULL;
	expect_disk(&disk, "[disk data] file: required (an absolute path)");
	disk.file = "/a\nb";
	expect_disk(&disk, "[disk data] file: contains a control character");
	disk.file = "/a.img";
	disk.id = "a.b";
	expect_disk(&disk, "[disk a.b]: 'a.b' is not a valid device id (a letter, then up to 23 "
	                   "letters, digits, '_' or '-')");
}

/* The writer applies the same checks as the loader and the control server: never a file that
 * says something the live attach refused, or the reverse. */
static void
test_config_write_checks_device(void **state)
{
	struct cfg_net net = {
	    .id = "lan9", .type = CFG_NET_TAP, .ifname = "tap9", .restricted = true};
	struct cfg_disk disk = {.id = "big", .file = "/var/lib/qvmd/big.img", .size = 100};
	char *dir, *path = writer_setup(&dir, writer_base), *cause = NULL;

	(void)state;
	assert_int_equal(cfg_write_add_net(path, &net, &cause), -1);
	assert_non_null(strstr(cause, "[net lan9] restrict: only for type = user"));
	free(cause);
	cause = NULL;
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), -1);
	assert_non_null(strstr(cause, "[disk big] size: '100' is too small (at least 1M)"));
	free(cause);
	assert_file_is(path, writer_base);
	free(path);
	rm_tmpdir(dir);
}

/* Writes text of len bytes to path. */
static void
write_bytes(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/*
 * Nothing read from vm_dir or qvmd.conf may block: a FIFO (no writer) is refused, not waited on.
 * alarm() turns a regression (a blocking open) into a failure instead of a hung test.
 */
static void
test_config_read_never_blocks(void **state)
{
	char *dir = make_tmpdir(), fifo[4200], link[4200], reg[4200], *cause = NULL, *text;
	struct daemon_config c;
	struct cfg_errors errs;
	struct vm_config *vm;
	size_t len = 0;

	(void)state;
	snprintf(fifo, sizeof fifo, "%s/x.ini", dir);
	snprintf(reg, sizeof reg, "%s/real.txt", dir);
	snprintf(link, sizeof link, "%s/web1.ini", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	alarm(20);
	assert_null(cfg_read_file(fifo, CFG_FILE_MAX, &len, &cause));
	assert_non_null(strstr(cause, "x.ini: not a regular file"));
	free(cause);
	cause = NULL;
	cfg_errors_init(&errs);
	assert_null(cfg_vm_load(fifo, &errs));
	assert_int_equal(errs.n, 1);
	assert_string_equal(errs.msgs[0] + strlen(dir), "/x.ini: not a regular file");
	cfg_errors_free(&errs);
	assert_int_equal(cfg_daemon_load(fifo, &c, &errs), -1);
	assert_int_equal(errs.n, 1);
	assert_non_null(strstr(errs.msgs[0], "x.ini: not a regular file"));
	cfg_errors_free(&errs);
	alarm(0);

	/* Symlinks to regular files stay allowed (configuration management uses them). */
	write_all(reg, "[vm]\nname = web1\nmemory = 1G\n");
	assert_int_equal(symlink(reg, link), 0);
	vm = cfg_vm_load(link, &errs);
	assert_non_null(vm);
	assert_string_equal(vm->name, "web1");
	cfg_vm_free(vm);
	text = cfg_read_file(link, CFG_FILE_MAX, &len, &cause);
	assert_non_null(text);
	assert_int_equal(len, strlen("[vm]\nname = web1\nmemory = 1G\n"));
	assert_string_equal(text, "[vm]\nname = web1\nmemory = 1G\n");
	free(text);
	/* The bound is the caller's; len may be NULL. */
	assert_null(cfg_read_file(link, 10, NULL, &cause));
	assert_non_null(strstr(cause, "web1.ini: too large"));
	free(cause);
	rm_tmpdir(dir);
}

/* A definition is at most CFG_FILE_MAX bytes: a larger one gets one clear error. */
static void
test_config_file_size_bound(void **state)
{
	char *dir = make_tmpdir(), path[4200], *text;
	struct cfg_errors errs;
	size_t n = CFG_FILE_MAX + 1;

	(void)state;
	snprintf(path, sizeof path, "%s/big.ini", dir);
	text = malloc(n);
	assert_non_null(text);
	memset(text, ';', n); /* one long comment line: only the size can be wrong */
	write_bytes(path, text, n);
	free(text);
	cfg_errors_init(&errs);
	assert_null(cfg_vm_load(path, &errs));
	assert_int_equal(errs.n, 1);
	assert_non_null(
	    strstr(errs.msgs[0], "big.ini: too large (1048577 bytes, at most 1048576)"));
	cfg_errors_free(&errs);
	rm_tmpdir(dir);
}

/*
 * 20,000 section headers (the 29 s file of issue 10, a fifth of it): the parse completes and stops
 * at the bound with a file:line error. No timing is asserted: the lexer stops recording sections
 * at CFG_SECTIONS_MAX, so its duplicate checks scan at most that many entries per line.
 */
static void
test_config_many_sections(void **state)
{
	char *dir = make_tmpdir(), path[4200], want[128], *text, *p;
	struct cfg_errors errs;
	bool found = false;
	int nsec = 20000;

	(void)state;
	snprintf(path, sizeof path, "%s/many.ini", dir);
	text = malloc((size_t)nsec * 16 + 64);
	assert_non_null(text);
	p = text + sprintf(text, "[vm]\nname = many\nmemory = 1G\n");
	for (int i = 0; i < nsec; i++)
		p += sprintf(p, "[x%d]\n", i);
	write_bytes(path, text, (size_t)(p - text));
	cfg_errors_init(&errs);
	assert_null(cfg_vm_load(path, &errs));
	/* [vm] on line 1, [x0] on line 4: section CFG_SECTIONS_MAX + 1 is on line 3 + that. */
	snprintf(want, sizeof want, "many.ini:%d: too many sections (at most %d in one file)",
	         3 + CFG_SECTIONS_MAX, CFG_SECTIONS_MAX);
	for (size_t i = 0; i < errs.n; i++)
		if (strstr(errs.msgs[i], want) != NULL)
			found = true;
	if (!found)
		fail_msg("no '%s' among %zu errors", want, errs.n);
	assert_true(errs.n <= CFG_ERRORS_MAX + 1);
	cfg_errors_free(&errs);

	/* Keys: the same with one section of 20,000 distinct keys. */
	p = text + sprintf(text, "[vm]\nname = many\nmemory = 1G\n");
	for (int i = 0; i < nsec && p - text < nsec * 15; i++)
		p += sprintf(p, "k%d = 1\n", i);
	write_bytes(path, text, (size_t)(p - text));
	assert_null(cfg_vm_load(path, &errs));
	snprintf(want, sizeof want, "many.ini:%d: [vm]: too many keys (at most %d in one section)",
	         1 + CFG_KEYS_MAX + 1, CFG_KEYS_MAX);
	found = false;
	for (size_t i = 0; i < errs.n; i++)
		if (strstr(errs.msgs[i], want) != NULL)
			found = true;
	if (!found)
		fail_msg("no '%s' among %zu errors", want, errs.n);
	cfg_errors_free(&errs);
	free(text);
	rm_tmpdir(dir);
}

/* Loads a definition from text (path only names it). */
static struct vm_config *
load_text(const char *path, const char *text)
{
	struct cfg_errors errs;
	struct vm_config *vm;

	cfg_errors_init(&errs);
	vm = cfg_vm_load_text(path, text, strlen(text), &errs);
	if (vm == NULL)
		fail_msg("%s", errs.n ? errs.msgs[0] : "no error given");
	cfg_errors_free(&errs);
	return vm;
}

static void
test_config_equal_means_the_same(void **state)
{
	const char *a = "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\n\n[disk root]\n"
	                "file = /var/lib/qvmd/r.qcow2\n\n[net lan0]\ntype = user\n";
	/* Comments, blank lines, key order and 1G spelled 1024M: the same definition. */
	const char *same = "; the web server\n[vm]\nvcpus = 2\nmemory = 1024M\n# one gig\n"
	                   "name = web1\n[disk root]\nfile = /var/lib/qvmd/r.qcow2\n"
	                   "[net lan0]\n; user networking\ntype = user\n";
	const char *other[] = {
	    "[vm]\nname = web1\nmemory = 2G\nvcpus = 2\n[disk root]\n"
	    "file = /var/lib/qvmd/r.qcow2\n[net lan0]\ntype = user\n",
	    "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\n[disk root]\n"
	    "file = /var/lib/qvmd/r.qcow2\nreadonly = yes\n[net lan0]\ntype = user\n",
	    "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\n[disk root]\n"
	    "file = /var/lib/qvmd/r.qcow2\n[net lan0]\ntype = user\nrestrict = yes\n",
	    "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\n[disk root]\n"
	    "file = /var/lib/qvmd/r.qcow2\n",
	};
	struct vm_config *va = load_text("/etc/qvmd/vms/web1.ini", a);
	struct vm_config *vs = load_text("/elsewhere/web1.ini", same);

	assert_true(cfg_vm_equal(va, va));
	assert_true(cfg_vm_equal(va, vs));
	for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
		struct vm_config *vo = load_text("/etc/qvmd/vms/web1.ini", other[i]);

		if (cfg_vm_equal(va, vo))
			fail_msg("definition %zu reads as unchanged", i);
		cfg_vm_free(vo);
	}
	assert_false(cfg_vm_equal(va, NULL));
	cfg_vm_free(va);
	cfg_vm_free(vs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config_parse_size),
	    cmocka_unit_test(test_config_parse_duration),
	    cmocka_unit_test(test_config_parse_bool),
	    cmocka_unit_test(test_config_parse_mac),
	    cmocka_unit_test(test_config_mac_derive),
	    cmocka_unit_test(test_config_names),
	    cmocka_unit_test(test_config_enum_names),
	    cmocka_unit_test(test_config_golden_errors),
	    cmocka_unit_test(test_config_vm_good_fixture),
	    cmocka_unit_test(test_config_vm_defaults),
	    cmocka_unit_test(test_config_vm_missing_file),
	    cmocka_unit_test(test_config_vm_errors_appended),
	    cmocka_unit_test(test_config_vm_dup),
	    cmocka_unit_test(test_config_vm_devices),
	    cmocka_unit_test(test_config_vm_ports_not_sata),
	    cmocka_unit_test(test_config_format_round_trip),
	    cmocka_unit_test(test_config_write_create),
	    cmocka_unit_test(test_config_vm_crlf_and_comments),
	    cmocka_unit_test(test_config_daemon_defaults),
	    cmocka_unit_test(test_config_daemon_file),
	    cmocka_unit_test(test_config_daemon_errors),
	    cmocka_unit_test(test_config_daemon_qmp_passthrough),
	    cmocka_unit_test(test_config_daemon_qemu_ids),
	    cmocka_unit_test(test_config_write_round_trip),
	    cmocka_unit_test(test_config_write_remove_keeps_layout),
	    cmocka_unit_test(test_config_write_refuses),
	    cmocka_unit_test(test_config_write_atomic_on_invalid),
	    cmocka_unit_test(test_config_write_no_trailing_newline),
	    cmocka_unit_test(test_config_write_cdrom_medium),
	    cmocka_unit_test(test_config_write_cdrom_medium_edges),
	    cmocka_unit_test(test_config_write_cdrom_medium_refuses),
	    cmocka_unit_test(test_config_examples_load),
	    cmocka_unit_test(test_config_parse_timeout),
	    cmocka_unit_test(test_config_net_check),
	    cmocka_unit_test(test_config_disk_check),
	    cmocka_unit_test(test_config_write_checks_device),
	    cmocka_unit_test(test_config_read_never_blocks),
	    cmocka_unit_test(test_config_file_size_bound),
	    cmocka_unit_test(test_config_many_sections),
	    cmocka_unit_test(test_config_equal_means_the_same),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
