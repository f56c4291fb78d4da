/*
 * supervisor/argv: golden files (tests/data/argv/<case>.ini → <case>.argv, or <case>.err when the
 * definition is refused) and unit tests of the properties the goldens cannot show at a glance.
 * QVMD_REGENERATE=1 rewrites the golden files; review the diff.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "scratch.h"
#include <json-c/json.h>

#include "argv.h"
#include "xalloc.h"

#define GOLDEN_DIR QVMD_TEST_DATA "/argv"

static const struct argv_env test_env = {
    .qemu = "/usr/bin/qemu-system-x86_64",
    .run_dir = "/run/qvmd",
    .state_dir = "/var/lib/qvmd",
    .ovmf_code = "/usr/share/OVMF/OVMF_CODE_4M.fd",
    .qmp_fd = -1,
    .net_fds = NULL,
};

/*
 * The descriptors the daemon would pass for a definition: the variable store in fdset 0 (uefi),
 * then one fdset per disk image (an O_RDWR and an O_RDONLY descriptor for a writable disk, O_RDONLY
 * for a read-only one), then one per cdrom medium (O_RDONLY), fake descriptor numbers counting from
 * *next_fd (argv_build only prints them).
 */
struct fake_fds {
	struct argv_env env;
	struct argv_image vars;
	struct argv_image images[64];
	struct argv_chain chains[32];
	struct argv_image media[8];
};

static const struct argv_env *
fake_env(struct fake_fds *f, const struct argv_env *base, const struct vm_config *vm, int *next_fd)
{
	long long set = 0;

	assert_true(vm->ndisks <= 32);
	memset(f, 0, sizeof(*f));
	f->env = *base;
	if (vm->firmware == CFG_FIRMWARE_UEFI) {
		f->vars.set = set++;
		f->vars.fd_rw = (*next_fd)++;
		f->vars.fd_ro = (*next_fd)++;
		f->env.fw_vars = &f->vars;
	}
	for (size_t i = 0; i < vm->ndisks; i++) {
		struct argv_image *im = &f->images[i];

		im->set = set++;
		im->fd_rw = vm->disks[i].readonly ? -1 : (*next_fd)++;
		im->fd_ro = (*next_fd)++;
		im->format = vm->disks[i].format;
		f->chains[i].images = im;
		f->chains[i].n = 1;
	}
	f->env.disks = f->chains;
	/* then one fdset per cdrom medium, read-only */
	assert_true(vm->ncdroms <= 8);
	for (size_t i = 0; i < vm->ncdroms; i++) {
		struct argv_image *im = &f->media[i];

		im->set = vm->cdroms[i].file != NULL ? set++ : -1;
		im->fd_rw = -1;
		im->fd_ro = vm->cdroms[i].file != NULL ? (*next_fd)++ : -1;
		im->format = CFG_FORMAT_RAW;
	}
	f->env.cdroms = f->media;
	return &f->env;
}

/* A small valid definition: 256M, 1 vCPU, q35, tcg, no devices. Strings are literals. */
static void
vm_init(struct vm_config *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->name = "t1";
	vm->memory = 256ull << 20;
	vm->vcpus = 1;
	vm->machine = CFG_MACHINE_Q35;
	vm->accel = CFG_ACCEL_TCG;
	vm->console = CFG_CONSOLE_NONE;
}

static void
disk_init(struct cfg_disk *d, const char *id, const char *file)
{
	memset(d, 0, sizeof(*d));
	d->id = (char *)id;
	d->file = (char *)file;
	d->format = CFG_FORMAT_QCOW2;
	d->cache = CFG_CACHE_NONE;
}

static void
net_init(struct cfg_net *n, const char *id, enum cfg_net_type type)
{
	memset(n, 0, sizeof(*n));
	n->id = (char *)id;
	n->type = type;
	n->restricted = true;
	n->mac[0] = 0x52;
	n->mac[1] = 0x54;
	n->mac[5] = 0x01;
}

/* Index of the first argument equal to s at or after from, or -1. */
static int
argv_find(char **argv, const char *s, int from)
{
	for (int i = from; argv[i] != NULL; i++) {
		if (strcmp(argv[i], s) == 0)
			return i;
	}
	return -1;
}

/* The JSON value of the -device/-blockdev/-netdev whose "id"/"node-name" is id, or NULL. */
static struct json_object *
argv_json_with(char **argv, const char *opt, const char *key, const char *id, int *pos)
{
	assert_non_null(id);
	for (int i = 0; argv[i] != NULL && argv[i + 1] != NULL; i++) {
		struct json_object *o, *v;

		if (strcmp(argv[i], opt) != 0 || argv[i + 1][0] != '{')
			continue;
		o = json_tokener_parse(argv[i + 1]);
		assert_non_null(o);
		if (json_object_object_get_ex(o, key, &v) &&
		    strcmp(json_object_get_string(v), id) == 0) {
			if (pos != NULL)
				*pos = i;
			return o;
		}
		json_object_put(o);
	}
	return NULL;
}

static const char *
jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	return json_object_get_string(v);
}

static void
test_argv_free_null(void **state)
{
	argv_free(NULL);
}

static void
test_argv_fixed_prefix(void **state)
{
	struct vm_config vm;
	char *cause = NULL;
	char **argv;
	int i;

	vm_init(&vm);
	argv = argv_build(&vm, &test_env, &cause);
	assert_non_null(argv);
	assert_string_equal(argv[0], "/usr/bin/qemu-system-x86_64");
	assert_string_equal(argv[1], "-name");
	assert_string_equal(argv[2], "guest=t1");
	assert_true(argv_find(argv, "-nodefaults", 0) > 0);
	assert_true(argv_find(argv, "-no-user-config", 0) > 0);
	assert_true(argv_find(argv, "-S", 0) > 0);
	i = argv_find(argv, "-sandbox", 0);
	assert_true(i > 0);
	assert_string_equal(
	    argv[i + 1], "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
	i = argv_find(argv, "-pidfile", 0);
	assert_true(i > 0);
	assert_string_equal(argv[i + 1], "/run/qvmd/t1/qemu/qemu.pid");
	i = argv_find(argv, "-m", 0);
	assert_true(i > 0);
	assert_string_equal(argv[i + 1], "256M");
	assert_int_equal(argv_find(argv, "-enable-kvm", 0), -1);
	argv_free(argv);
}

static void
test_argv_qmp_unix(void **state)
{
	struct vm_config vm;
	char *cause = NULL;
	char **argv;
	int i;

	vm_init(&vm);
	argv = argv_build(&vm, &test_env, &cause);
	assert_non_null(argv);
	i = argv_find(argv, "-qmp", 0);
	assert_true(i > 0);
	assert_string_equal(argv[i + 1], "unix:/run/qvmd/t1/qmp.sock,server=on,wait=off");
	assert_int_equal(argv_find(argv, "-mon", 0), -1);
	argv_free(argv);
}

static void
test_argv_qmp_fd(void **state)
{
	struct argv_env env = test_env;
	struct vm_config vm;
	char *cause = NULL;
	char **argv;
	int i;

	vm_init(&vm);
	env.qmp_fd = 7;
	argv = argv_build(&vm, &env, &cause);
	assert_non_null(argv);
	assert_int_equal(argv_find(argv, "-qmp", 0), -1);
	i = argv_find(argv, "-chardev", 0);
	assert_true(i > 0);
	assert_string_equal(argv[i + 1], "socket,id=qvmd.qmp,fd=7,server=on,wait=off");
	i = argv_find(argv, "-mon", 0);
	assert_true(i > 0);
	assert_string_equal(argv[i + 1], "chardev=qvmd.qmp,mode=control");
	argv_free(argv);
}

static void
test_argv_bridge_without_fd(void **state)
{
	struct argv_env env = test_env;
	struct cfg_net nets[2];
	int fds[2] = {100, -1};
	struct vm_config vm;
	char *cause = NULL;

	vm_init(&vm);
	net_init(&nets[0], "lan0", CFG_NET_BRIDGE);
	net_init(&nets[1], "lan1", CFG_NET_BRIDGE);
	nets[0].bridge = nets[1].bridge = "br0";
	vm.nets = nets;
	vm.nnets = 2;
	assert_null(argv_build(&vm, &env, &cause));
	assert_string_equal(cause, "net lan0: bridge NIC needs a tap fd");
	free(cause);
	cause = NULL;

	env.net_fds = fds;
	assert_null(argv_build(&vm, &env, &cause));
	assert_string_equal(cause, "net lan1: bridge NIC needs a tap fd");
	free(cause);
}

static void
test_argv_bridge_fd(void **state)
{
	struct argv_env env = test_env;
	struct cfg_net nets[2];
	int fds[2] = {-1, 42};
	struct vm_config vm;
	struct json_object *o;
	char *cause = NULL;
	char **argv;

	vm_init(&vm);
	net_init(&nets[0], "nat", CFG_NET_USER);
	net_init(&nets[1], "lan", CFG_NET_BRIDGE);
	nets[1].bridge = "br0";
	vm.nets = nets;
	vm.nnets = 2;
	env.net_fds = fds;
	argv = argv_build(&vm, &env, &cause);
	assert_non_null(argv);
	o = argv_json_with(argv, "-netdev", "id", "lan.net", NULL);
	assert_non_null(o);
	assert_string_equal(jstr(o, "type"), "tap");
	assert_string_equal(jstr(o, "fd"), "42");
	assert_null(jstr(o, "ifname"));
	json_object_put(o);
	argv_free(argv);
}

static void
test_argv_comma_in_dirs(void **state)
{
	struct argv_env env = test_env;
	struct vm_config vm;
	char *cause = NULL;

	vm_init(&vm);
	env.run_dir = "/run/q,vmd";
	assert_null(argv_build(&vm, &env, &cause));
	assert_non_null(strstr(cause, "run directory '/run/q,vmd' contains a comma"));
	free(cause);
	cause = NULL;

	env = test_env;
	env.state_dir = "/var/lib/qvmd,server=off";
	assert_null(argv_build(&vm, &env, &cause));
	assert_non_null(strstr(cause, "state directory"));
	free(cause);
}

/* An image's name never reaches QEMU, whatever it holds: QEMU gets its fdset. */
static void
test_argv_image_path_never_passed(void **state)
{
	const char *path = "/srv/a, \"b\",format=raw\\c d.img";
	struct fake_fds f;
	struct cfg_disk disk;
	struct vm_config vm;
	struct json_object *o;
	char *cause = NULL;
	char **argv;
	int fd = 10;

	vm_init(&vm);
	disk_init(&disk, "root", path);
	vm.disks = &disk;
	vm.ndisks = 1;
	argv = argv_build(&vm, fake_env(&f, &test_env, &vm, &fd), &cause);
	assert_non_null(argv);
	o = argv_json_with(argv, "-blockdev", "node-name", "root.file", NULL);
	assert_non_null(o);
	assert_string_equal(jstr(o, "filename"), "/dev/fdset/0");
	json_object_put(o);
	for (char **p = argv; *p != NULL; p++)
		assert_null(strstr(*p, "/srv/a"));
	argv_free(argv);
}

/* -add-fd: both descriptors of a writable image in its set, opaque its file node; the UEFI
 * variable store likewise; a read-only disk gets only its O_RDONLY descriptor. */
static void
test_argv_add_fd(void **state)
{
	struct fake_fds f;
	struct cfg_disk disks[2];
	struct vm_config vm;
	struct json_object *o;
	char *cause = NULL;
	char **argv;
	int fd = 10, i;

	vm_init(&vm);
	vm.firmware = CFG_FIRMWARE_UEFI;
	disk_init(&disks[0], "root", "/root.qcow2");
	disk_init(&disks[1], "iso", "/x.iso");
	disks[1].format = CFG_FORMAT_RAW;
	disks[1].readonly = true;
	vm.disks = disks;
	vm.ndisks = 2;
	argv = argv_build(&vm, fake_env(&f, &test_env, &vm, &fd), &cause);
	assert_non_null(argv);
	i = argv_find(argv, "fd=10,set=0,opaque=qvmd.fw-vars", 0);
	assert_true(i > 0);
	assert_string_equal(argv[i - 1], "-add-fd");
	assert_string_equal(argv[i + 2], "fd=11,set=0,opaque=qvmd.fw-vars");
	o = argv_json_with(argv, "-blockdev", "node-name", "qvmd.fw-vars", NULL);
	assert_string_equal(jstr(o, "filename"), "/dev/fdset/0");
	json_object_put(o);
	assert_true(argv_find(argv, "fd=12,set=1,opaque=root.file", 0) > 0);
	assert_true(argv_find(argv, "fd=13,set=1,opaque=root.file", 0) > 0);
	assert_true(argv_find(argv, "fd=14,set=2,opaque=iso.file", 0) > 0);
	assert_int_equal(argv_find(argv, "fd=15,set=2,opaque=iso.file", 0), -1);
	o = argv_json_with(argv, "-blockdev", "node-name", "iso.file", NULL);
	assert_string_equal(jstr(o, "filename"), "/dev/fdset/2");
	assert_string_equal(jstr(o, "read-only"), "true");
	json_object_put(o);
	argv_free(argv);
}

/* A backing chain is spelled out: one fdset and two nodes per image, read-only below the top,
 * each qcow2 naming the next as its backing and the last one none (null), bottom nodes first. */
static void
test_argv_backing_chain(void **state)
{
	struct argv_image images[3] = {
	    {.set = 4, .fd_rw = 20, .fd_ro = 21, .format = CFG_FORMAT_QCOW2},
	    {.set = 5, .fd_rw = -1, .fd_ro = 22, .format = CFG_FORMAT_QCOW2},
	    {.set = 6, .fd_rw = -1, .fd_ro = 23, .format = CFG_FORMAT_RAW},
	};
	struct argv_chain chain = {images, 3};
	struct argv_env env = test_env;
	struct cfg_disk disk;
	struct vm_config vm;
	struct json_object *o, *v;
	char *cause = NULL;
	char **argv;
	int top, mid, bottom;

	vm_init(&vm);
	disk_init(&disk, "root", "/top.qcow2");
	vm.disks = &disk;
	vm.ndisks = 1;
	env.disks = &chain;
	argv = argv_build(&vm, &env, &cause);
	assert_non_null(argv);
	assert_true(argv_find(argv, "fd=22,set=5,opaque=root.file1", 0) > 0);
	assert_true(argv_find(argv, "fd=23,set=6,opaque=root.file2", 0) > 0);

	o = argv_json_with(argv, "-blockdev", "node-name", "root.fmt", &top);
	assert_string_equal(jstr(o, "backing"), "root.fmt1");
	assert_string_equal(jstr(o, "read-only"), "false");
	json_object_put(o);
	o = argv_json_with(argv, "-blockdev", "node-name", "root.fmt1", &mid);
	assert_string_equal(jstr(o, "driver"), "qcow2");
	assert_string_equal(jstr(o, "file"), "root.file1");
	assert_string_equal(jstr(o, "backing"), "root.fmt2");
	assert_string_equal(jstr(o, "read-only"), "true");
	json_object_put(o);
	o = argv_json_with(argv, "-blockdev", "node-name", "root.fmt2", &bottom);
	assert_string_equal(jstr(o, "driver"), "raw");
	assert_false(json_object_object_get_ex(o, "backing", &v));
	json_object_put(o);
	o = argv_json_with(argv, "-blockdev", "node-name", "root.file2", NULL);
	assert_string_equal(jstr(o, "filename"), "/dev/fdset/6");
	assert_string_equal(jstr(o, "read-only"), "true");
	json_object_put(o);
	assert_true(bottom < mid && mid < top);
	argv_free(argv);

	/* A qcow2 at the end of the chain has no backing: null, so QEMU opens none by name. */
	chain.n = 1;
	argv = argv_build(&vm, &env, &cause);
	assert_non_null(argv);
	o = argv_json_with(argv, "-blockdev", "node-name", "root.fmt", NULL);
	assert_true(json_object_object_get_ex(o, "backing", &v));
	assert_null(v);
	json_object_put(o);
	argv_free(argv);
}

/* A disk (or the variable store) without descriptors is refused: argv never names an image. */
static void
test_argv_images_need_fds(void **state)
{
	struct argv_image im = {.set = 1, .fd_rw = -1, .fd_ro = 9, .format = CFG_FORMAT_QCOW2};
	struct argv_chain chain = {&im, 1};
	struct argv_env env = test_env;
	struct cfg_disk disk;
	struct vm_config vm;
	char *cause = NULL;

	vm_init(&vm);
	disk_init(&disk, "root", "/top.qcow2");
	vm.disks = &disk;
	vm.ndisks = 1;
	assert_null(argv_build(&vm, &env, &cause));
	assert_string_equal(cause, "vm t1: disk root: no descriptors for its images");
	free(cause);
	cause = NULL;
	env.disks = &chain; /* writable, but no O_RDWR descriptor */
	assert_null(argv_build(&vm, &env, &cause));
	assert_string_equal(cause, "vm t1: disk root: no descriptors for its images");
	free(cause);
	cause = NULL;

	vm.ndisks = 0;
	vm.firmware = CFG_FIRMWARE_UEFI;
	assert_null(argv_build(&vm, &env, &cause));
	assert_string_equal(cause, "vm t1: uefi firmware needs descriptors of its variable store");
	free(cause);
}

/* Every device names an existing root port declared before it; chassis numbers are unique. */
static void
test_argv_ports_before_devices(void **state)
{
	struct cfg_disk disks[2];
	struct cfg_net nets[1];
	const char *ids[] = {"d0", "d1", "n0"};
	bool chassis_seen[ARGV_MAX_PORTS + 1] = {false};
	struct fake_fds f;
	int fd = 10;
	struct vm_config vm;
	char *cause = NULL;
	char **argv;
	int ports = 0;

	vm_init(&vm);
	disk_init(&disks[0], "d0", "/a.qcow2");
	disk_init(&disks[1], "d1", "/b.qcow2");
	net_init(&nets[0], "n0", CFG_NET_USER);
	vm.disks = disks;
	vm.ndisks = 2;
	vm.nets = nets;
	vm.nnets = 1;
	vm.hotplug_slots = 3;
	argv = argv_build(&vm, fake_env(&f, &test_env, &vm, &fd), &cause);
	assert_non_null(argv);

	for (size_t k = 0; k < 3; k++) {
		struct json_object *dev, *port;
		int dpos, ppos;

		dev = argv_json_with(argv, "-device", "id", ids[k], &dpos);
		assert_non_null(dev);
		port = argv_json_with(argv, "-device", "id", jstr(dev, "bus"), &ppos);
		assert_non_null(port);
		assert_string_equal(jstr(port, "driver"), "pcie-root-port");
		assert_true(ppos < dpos);
		json_object_put(port);
		json_object_put(dev);
	}
	for (int i = 0; argv[i] != NULL && argv[i + 1] != NULL; i++) {
		struct json_object *o, *ch;

		if (strcmp(argv[i], "-device") != 0 ||
		    strstr(argv[i + 1], "pcie-root-port") == NULL)
			continue;
		o = json_tokener_parse(argv[i + 1]);
		assert_non_null(o);
		assert_true(json_object_object_get_ex(o, "chassis", &ch));
		assert_in_range(json_object_get_int(ch), 1, ARGV_MAX_PORTS);
		assert_false(chassis_seen[json_object_get_int(ch)]);
		chassis_seen[json_object_get_int(ch)] = true;
		json_object_put(o);
		ports++;
	}
	assert_int_equal(ports, 6);
	argv_free(argv);
}

/* Counts the arguments equal to s. */
static int
argv_count(char **argv, const char *s)
{
	int n = 0;

	for (int i = 0; argv[i] != NULL; i++)
		n += strstr(argv[i], s) != NULL;
	return n;
}

/* q35: sata disks and cdroms take SATA/IDE positions, not root ports; 7 positions do not fit. */
static void
test_argv_sata_positions(void **state)
{
	struct vm_config vm;
	struct cfg_disk disks[6];
	struct cfg_cdrom cdroms[3];
	struct fake_fds f;
	const struct argv_env *env;
	char *cause = NULL, **argv;
	int next_fd = 100;

	(void)state;
	vm_init(&vm);
	disk_init(&disks[0], "v1", "/v1");
	disk_init(&disks[1], "v2", "/v2");
	disk_init(&disks[2], "s1", "/s1");
	disk_init(&disks[3], "s2", "/s2");
	disk_init(&disks[4], "s3", "/s3");
	disk_init(&disks[5], "s4", "/s4");
	for (size_t i = 2; i < 6; i++)
		disks[i].bus = CFG_BUS_SATA;
	memset(cdroms, 0, sizeof cdroms);
	cdroms[0].id = "c1";
	cdroms[0].file = "/c1.iso";
	cdroms[1].id = "c2";
	cdroms[2].id = "c3";
	vm.disks = disks;
	vm.ndisks = 6;
	vm.cdroms = cdroms;
	vm.ncdroms = 2;
	vm.hotplug_slots = ARGV_MAX_PORTS - 2;
	env = fake_env(&f, &test_env, &vm, &next_fd);
	argv = argv_build(&vm, env, &cause);
	if (argv == NULL)
		fail_msg("%s", cause);
	assert_int_equal(argv_count(argv, "\"pcie-root-port\""), ARGV_MAX_PORTS);
	assert_int_equal(argv_count(argv, "\"ide-hd\""), 4);
	assert_int_equal(argv_count(argv, "\"ide-cd\""), 2);
	assert_int_equal(argv_count(argv, "\"bus\":\"ide.5\""), 1);
	assert_int_equal(argv_count(argv, "rp.s1"), 0);
	argv_free(argv);

	vm.ncdroms = 3;
	env = fake_env(&f, &test_env, &vm, &next_fd);
	assert_null(argv_build(&vm, env, &cause));
	assert_string_equal(cause, "vm t1: 7 sata disks and cdroms do not fit on the q35 machine's "
	                           "SATA/IDE controller (at most 6)");
	free(cause);

	/* A medium needs its descriptor. */
	vm.ncdroms = 1;
	env = fake_env(&f, &test_env, &vm, &next_fd);
	f.media[0].fd_ro = -1;
	assert_null(argv_build(&vm, env, &cause));
	assert_string_equal(cause, "vm t1: cdrom c1: no descriptor for its medium");
	free(cause);
}

static void
test_argv_port_limit(void **state)
{
	struct vm_config vm;
	char *cause = NULL;
	char **argv;

	vm_init(&vm);
	vm.hotplug_slots = ARGV_MAX_PORTS;
	argv = argv_build(&vm, &test_env, &cause);
	assert_non_null(argv);
	argv_free(argv);

	vm.hotplug_slots = ARGV_MAX_PORTS + 1;
	assert_null(argv_build(&vm, &test_env, &cause));
	assert_non_null(strstr(cause, "at most 28 fit"));
	free(cause);

	/* pc has no root ports: hotplug_slots does not count there. */
	vm.machine = CFG_MACHINE_PC;
	argv = argv_build(&vm, &test_env, &cause);
	assert_non_null(argv);
	for (char **p = argv; *p != NULL; p++)
		assert_null(strstr(*p, "pcie-root-port"));
	argv_free(argv);
}

/* The shared hot-plug builders give the same objects as cold plug. */
static void
test_argv_builders_match_cold_plug(void **state)
{
	struct cfg_disk disk;
	struct cfg_net net;
	struct vm_config vm;
	struct json_object *a, *b;
	struct fake_fds f;
	char *cause = NULL;
	char **argv;
	int fd = 10;

	vm_init(&vm);
	vm.machine = CFG_MACHINE_PC;
	disk_init(&disk, "data", "/x.raw");
	disk.format = CFG_FORMAT_RAW;
	disk.cache = CFG_CACHE_DIRECTSYNC;
	net_init(&net, "nic", CFG_NET_USER);
	vm.disks = &disk;
	vm.ndisks = 1;
	vm.nets = &net;
	vm.nnets = 1;
	argv = argv_build(&vm, fake_env(&f, &test_env, &vm, &fd), &cause);
	assert_non_null(argv);

	a = argv_json_with(argv, "-device", "id", "data", NULL);
	b = argv_disk_device_json(&disk, NULL);
	assert_true(json_object_equal(a, b));
	assert_string_equal(jstr(b, "write-cache"), "off");
	json_object_put(a);
	json_object_put(b);
	a = argv_json_with(argv, "-blockdev", "node-name", "data.fmt", NULL);
	b = argv_blockdev_fmt_json(&disk, &f.chains[0], 0);
	assert_true(json_object_equal(a, b));
	assert_string_equal(jstr(b, "driver"), "raw");
	json_object_put(a);
	json_object_put(b);
	a = argv_json_with(argv, "-blockdev", "node-name", "data.file", NULL);
	b = argv_blockdev_file_json(&disk, &f.chains[0], 0);
	assert_true(json_object_equal(a, b));
	json_object_put(a);
	json_object_put(b);
	a = argv_json_with(argv, "-netdev", "id", "nic.net", NULL);
	b = argv_netdev_json(&net, NULL);
	assert_true(json_object_equal(a, b));
	json_object_put(a);
	json_object_put(b);
	a = argv_json_with(argv, "-device", "id", "nic", NULL);
	b = argv_net_device_json(&net, NULL);
	assert_true(json_object_equal(a, b));
	assert_string_equal(jstr(b, "mac"), "52:54:00:00:00:01");
	json_object_put(a);
	json_object_put(b);
	argv_free(argv);
}

/* The cache modes map onto direct / no-flush / write-cache as documented in argv.c. */
static void
test_argv_cache_modes(void **state)
{
	static const struct {
		enum cfg_cache cache;
		bool direct, no_flush, wc_off;
	} cases[] = {
	    {CFG_CACHE_NONE, true, false, false},
	    {CFG_CACHE_WRITEBACK, false, false, false},
	    {CFG_CACHE_WRITETHROUGH, false, false, true},
	    {CFG_CACHE_DIRECTSYNC, true, false, true},
	    {CFG_CACHE_UNSAFE, false, true, false},
	};
	struct argv_image im = {.set = 3, .fd_rw = 10, .fd_ro = 11, .format = CFG_FORMAT_QCOW2};
	struct argv_chain chain = {&im, 1};
	struct cfg_disk disk;

	disk_init(&disk, "d", "/d.qcow2");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_object *file, *dev, *cache, *v;

		disk.cache = cases[i].cache;
		file = argv_blockdev_file_json(&disk, &chain, 0);
		dev = argv_disk_device_json(&disk, "rp.d");
		assert_true(json_object_object_get_ex(file, "cache", &cache));
		assert_true(json_object_object_get_ex(cache, "direct", &v));
		assert_int_equal(json_object_get_boolean(v), cases[i].direct);
		assert_true(json_object_object_get_ex(cache, "no-flush", &v));
		assert_int_equal(json_object_get_boolean(v), cases[i].no_flush);
		assert_int_equal(jstr(dev, "write-cache") != NULL, cases[i].wc_off);
		json_object_put(file);
		json_object_put(dev);
	}
}

/* Reads a whole file, NULL when it does not exist. */
static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0;
	FILE *m;
	int c;

	if (f == NULL)
		return NULL;
	m = open_memstream(&buf, &len);
	assert_non_null(m);
	while ((c = getc(f)) != EOF)
		putc(c, m);
	fclose(f);
	fclose(m);
	return buf;
}

static void
spit(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* Prints the first differing line of two texts. */
static void
show_diff(const char *name, const char *want, const char *got)
{
	int line = 1;
	const char *w = want, *g = got;

	while (*w != '\0' && *w == *g) {
		if (*w == '\n')
			line++;
		w++;
		g++;
	}
	while (w > want && w[-1] != '\n') {
		w--;
		g--;
	}
	fprintf(stderr, "%s: line %d differs\n  want: %.*s\n  got:  %.*s\n", name, line,
	        (int)strcspn(w, "\n"), w, (int)strcspn(g, "\n"), g);
}

/*
 * Builds one case (ini relative to the golden directory, so messages name only the file); returns
 * the argv text, or the config errors or argv_build's cause, and whether the case was refused.
 */
static char *
golden_output(const char *ini, bool *refused)
{
	struct cfg_errors errs;
	struct vm_config *vm;
	struct fake_fds f;
	const struct argv_env *env;
	int *fds;
	char *cause = NULL, *out = NULL;
	size_t len = 0;
	char **argv;
	FILE *m;
	int next_fd = 100;

	m = open_memstream(&out, &len);
	assert_non_null(m);
	cfg_errors_init(&errs);
	vm = cfg_vm_load(ini, &errs);
	if (vm == NULL) {
		*refused = true;
		for (size_t i = 0; i < errs.n; i++)
			fprintf(m, "%s\n", errs.msgs[i]);
		assert_true(errs.n > 0);
		cfg_errors_free(&errs);
		fclose(m);
		return out;
	}
	cfg_errors_free(&errs);

	fds = calloc(vm->nnets + 1, sizeof(*fds));
	assert_non_null(fds);
	for (size_t i = 0; i < vm->nnets; i++)
		fds[i] = vm->nets[i].type == CFG_NET_BRIDGE ? next_fd++ : -1;
	env = fake_env(&f, &test_env, vm, &next_fd);
	f.env.net_fds = fds;

	argv = argv_build(vm, env, &cause);
	if (argv == NULL) {
		*refused = true;
		fprintf(m, "%s\n", cause);
	} else {
		*refused = false;
		for (char **p = argv; *p != NULL; p++)
			fprintf(m, "%s\n", *p);
	}
	fclose(m);
	free(cause);
	argv_free(argv);
	free(fds);
	cfg_vm_free(vm);
	return out;
}

static void
test_argv_golden(void **state)
{
	bool regen =
	    getenv("QVMD_REGENERATE") != NULL && strcmp(getenv("QVMD_REGENERATE"), "1") == 0;
	struct dirent **names;
	int n, cases = 0, failed = 0;

	char cwd[4096];

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(GOLDEN_DIR), 0);
	n = scandir(".", &names, NULL, alphasort);
	assert_true(n >= 0);
	for (int i = 0; i < n; i++) {
		const char *name = names[i]->d_name;
		size_t len = strlen(name);
		char *base, *ini, *argv_path, *err_path, *got, *want;
		bool refused;

		if (len < 5 || strcmp(name + len - 4, ".ini") != 0) {
			free(names[i]);
			continue;
		}
		base = scratch_printf("%.*s", (int)(len - 4), name);
		ini = scratch_printf("%s.ini", base);
		argv_path = scratch_printf("%s.argv", base);
		err_path = scratch_printf("%s.err", base);
		got = golden_output(ini, &refused);
		if (regen) {
			spit(refused ? err_path : argv_path, got);
			unlink(refused ? argv_path : err_path);
		}
		want = slurp(refused ? err_path : argv_path);
		if (want == NULL) {
			fprintf(stderr, "%s: %s missing (the case was %s)\n", name,
			        refused ? err_path : argv_path, refused ? "refused" : "accepted");
			failed++;
		} else if (strcmp(want, got) != 0) {
			show_diff(name, want, got);
			failed++;
		}
		cases++;
		free(want);
		free(got);
		free(base);
		free(ini);
		free(argv_path);
		free(err_path);
		free(names[i]);
	}
	free(names);
	assert_int_equal(chdir(cwd), 0);
	if (regen)
		fprintf(stderr, "regenerated %d golden files in %s\n", cases, GOLDEN_DIR);
	assert_true(cases >= 14);
	assert_int_equal(failed, 0);
}

/* argv_shell_line: a POSIX shell reads the line back into exactly the same arguments. */
static void
test_argv_shell_line_round_trips(void **state)
{
	char *const args[] = {"/usr/bin/qemu-system-x86_64",
	                      "-append",
	                      "console=ttyS0 it's \"quoted\" $HOME `id` \\ * ? ; & | > <",
	                      "",
	                      "two\nlines",
	                      "file,id=c,path=/run/qvmd/web1/console.log,append=on",
	                      "'",
	                      NULL};
	char *line = argv_shell_line(args), *cmd, out[1024];
	size_t n = 0, i = 0;
	FILE *f;
	static const char head[] = "/usr/bin/qemu-system-x86_64 -append 'console=ttyS0 it'\\''s";

	(void)state;
	assert_memory_equal(line, head, sizeof head - 1);
	assert_non_null(strstr(line, " file,id=c,path=/run/qvmd/web1/console.log,append=on "));
	cmd = xasprintf("printf '%%s\\0' %s", line);
	f = popen(cmd, "r");
	assert_non_null(f);
	n = fread(out, 1, sizeof out, f);
	assert_int_equal(pclose(f), 0);
	for (size_t o = 0; args[i] != NULL; i++) {
		assert_true(o + strlen(args[i]) < n);
		assert_string_equal(out + o, args[i]);
		o += strlen(args[i]) + 1;
	}
	free(cmd);
	free(line);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_argv_free_null),
	    cmocka_unit_test(test_argv_fixed_prefix),
	    cmocka_unit_test(test_argv_qmp_unix),
	    cmocka_unit_test(test_argv_qmp_fd),
	    cmocka_unit_test(test_argv_bridge_without_fd),
	    cmocka_unit_test(test_argv_bridge_fd),
	    cmocka_unit_test(test_argv_comma_in_dirs),
	    cmocka_unit_test(test_argv_image_path_never_passed),
	    cmocka_unit_test(test_argv_add_fd),
	    cmocka_unit_test(test_argv_backing_chain),
	    cmocka_unit_test(test_argv_images_need_fds),
	    cmocka_unit_test(test_argv_ports_before_devices),
	    cmocka_unit_test(test_argv_port_limit),
	    cmocka_unit_test(test_argv_sata_positions),
	    cmocka_unit_test(test_argv_builders_match_cold_plug),
	    cmocka_unit_test(test_argv_cache_modes),
	    cmocka_unit_test(test_argv_golden),
	    cmocka_unit_test(test_argv_shell_line_round_trips),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
