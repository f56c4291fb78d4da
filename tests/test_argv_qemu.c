/*
 * supervisor/argv against the real qemu-system-x86_64: the vectors argv_build makes start QEMU
 * paused, with exactly the block nodes, devices, root ports and MACs they describe. Everything
 * lives in a mkdtemp directory; every QEMU started is killed on failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "scratch.h"
#include <json-c/json.h>

#include "argv.h"
#include "imgchain.h"
#include "host.h"
#include "qmp_sync.h"

#define QMP_TIMEOUT_MS 30000

/* One test's world: a temp dir with run/, state/ and images/, and the QEMU it started. */
struct fixture {
	char dir[64];
	char *run_dir, *state_dir;
	pid_t pid;
	struct qmp_sync *qmp;
	double ready_ms; /* exec → qmp_capabilities answered */
	/* The disks' images as qvmd opens them (imgchain), handed to QEMU as fdsets. */
	struct imgchain chains[4];
	struct argv_image images[4][IMGCHAIN_DEPTH_MAX + 1];
	struct argv_chain argv_chains[4];
	/* The cdroms' media, opened read-only the same way (vm_start.c). */
	struct imgchain media[4];
	struct argv_image media_images[4];
};

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void
xmkdir(const char *path)
{
	assert_int_equal(mkdir(path, 0700), 0);
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char *p;

	assert_non_null(f);
	strcpy(f->dir, "/tmp/qvmd-argv-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->run_dir = scratch_printf("%s/run", f->dir);
	f->state_dir = scratch_printf("%s/state", f->dir);
	xmkdir(f->run_dir);
	xmkdir(f->state_dir);
	p = scratch_printf("%s/images", f->dir);
	xmkdir(p);
	free(p);
	f->pid = -1;
	*state = f;
	return 0;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	qmp_sync_close(f->qmp);
	if (f->pid > 0) {
		kill(f->pid, SIGKILL);
		waitpid(f->pid, NULL, 0);
	}
	for (size_t i = 0; i < 4; i++) {
		imgchain_close(&f->chains[i]);
		imgchain_close(&f->media[i]);
	}
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f->run_dir);
	free(f->state_dir);
	free(f);
	return 0;
}

/* Runs argv (no shell) with output to /dev/null and returns its exit status. */
static int
run(char *const argv[])
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 1);
		execv(argv[0], argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *
make_image(struct fixture *f, const char *name, const char *format)
{
	char *path = scratch_printf("%s/images/%s", f->dir, name);
	char *argv[] = {QVMD_TEST_QEMU_IMG, "create", "-q",  "-f",
	                (char *)format,     path,     "64M", NULL};

	assert_int_equal(run(argv), 0);
	return path;
}

/* The per-VM directories qvmd would create before spawning. */
static void
make_vm_dirs(struct fixture *f, const char *name)
{
	char *p = scratch_printf("%s/%s", f->run_dir, name);

	xmkdir(p);
	free(p);
	p = scratch_printf("%s/%s/qemu", f->run_dir, name); /* the pidfile's */
	xmkdir(p);
	free(p);
	p = scratch_printf("%s/%s", f->state_dir, name);
	xmkdir(p);
	free(p);
}

/* A listening unix socket at path, inheritable (no CLOEXEC), for the qmp_fd variant. */
static int
listen_unix(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(sun.sun_path));
	strcpy(sun.sun_path, path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

/* Starts QEMU with argv and connects to its QMP socket; records the time to QMP readiness. */
static void
start_qemu(struct fixture *f, const struct vm_config *vm, char **argv)
{
	char *sock = scratch_printf("%s/%s/qmp.sock", f->run_dir, vm->name);
	char *log = scratch_printf("%s/%s/qemu.log", f->state_dir, vm->name);
	char *cause = NULL;
	double t0 = now_ms();

	f->pid = fork();
	assert_true(f->pid >= 0);
	if (f->pid == 0) {
		int out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		dup2(out, 1);
		dup2(out, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	f->qmp = qmp_sync_connect(sock, QMP_TIMEOUT_MS, &cause);
	if (f->qmp == NULL) {
		FILE *lf = fopen(log, "r");
		char line[512];

		fprintf(stderr, "%s\n", cause);
		while (lf != NULL && fgets(line, sizeof(line), lf) != NULL)
			fprintf(stderr, "qemu: %s", line);
		if (lf != NULL)
			fclose(lf);
	}
	assert_non_null(f->qmp);
	f->ready_ms = now_ms() - t0;
	qmp_sync_set_timeout(f->qmp, QMP_TIMEOUT_MS);
	free(sock);
	free(log);
}

/* Runs cmd and returns its "return" value (reference owned by *reply; caller puts *reply). */
static struct json_object *
qmp_ok(struct fixture *f, const char *cmd, const char *args, struct json_object **reply)
{
	struct json_object *ret;

	*reply = qmp_sync_cmd(f->qmp, cmd, args);
	assert_non_null(*reply);
	ret = qmp_sync_return(*reply);
	if (ret == NULL)
		fprintf(stderr, "%s %s: %s\n", cmd, args != NULL ? args : "",
		        json_object_to_json_string(*reply));
	assert_non_null(ret);
	return ret;
}

static const char *
jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	return json_object_get_string(v);
}

/* A qom-get of a string property. Returns a copy. */
static char *
qom_get_str(struct fixture *f, const char *path, const char *prop)
{
	struct json_object *reply, *ret;
	char *args, *value;

	args = scratch_printf("{\"path\":\"%s\",\"property\":\"%s\"}", path, prop);
	ret = qmp_ok(f, "qom-get", args, &reply);
	value = strdup(json_object_get_string(ret));
	json_object_put(reply);
	free(args);
	return value;
}

/* The pid in the pidfile equals the QEMU we started. */
static void
check_pidfile(struct fixture *f, const char *name)
{
	char *path = scratch_printf("%s/%s/qemu/qemu.pid", f->run_dir, name);
	FILE *pf = fopen(path, "r");
	long pid = -1;

	assert_non_null(pf);
	assert_int_equal(fscanf(pf, "%ld", &pid), 1);
	fclose(pf);
	assert_int_equal(pid, f->pid);
	free(path);
}

static void
check_prelaunch(struct fixture *f)
{
	struct json_object *reply, *ret, *running;

	ret = qmp_ok(f, "query-status", NULL, &reply);
	assert_string_equal(jstr(ret, "status"), "prelaunch");
	assert_true(json_object_object_get_ex(ret, "running", &running));
	assert_false(json_object_get_boolean(running));
	json_object_put(reply);
}

/* query-named-block-nodes lists exactly ID.file and ID.fmt for every disk and cdrom medium. */
static void
check_block_nodes(struct fixture *f, const struct vm_config *vm)
{
	struct json_object *reply, *ret;
	size_t n, media = 0;

	for (size_t i = 0; i < vm->ncdroms; i++)
		media += vm->cdroms[i].file != NULL;
	ret = qmp_ok(f, "query-named-block-nodes", NULL, &reply);
	n = json_object_array_length(ret);
	assert_int_equal(n, 2 * (vm->ndisks + media));
	for (size_t i = 0; i < vm->ndisks; i++) {
		const struct cfg_disk *d = &vm->disks[i];
		char *want_file = scratch_printf("%s.file", d->id),
		     *want_fmt = scratch_printf("%s.fmt", d->id);
		int found = 0;

		for (size_t k = 0; k < n; k++) {
			struct json_object *node = json_object_array_get_idx(ret, k), *ro;
			const char *nn = jstr(node, "node-name");

			if (strcmp(nn, want_file) == 0) {
				assert_string_equal(jstr(node, "drv"), "file");
				/* QEMU got the image as an fdset, never its name. */
				assert_true(strncmp(jstr(node, "file"), "/dev/fdset/", 11) == 0);
				found++;
			} else if (strcmp(nn, want_fmt) == 0) {
				assert_string_equal(jstr(node, "drv"), cfg_format_name(d->format));
				found++;
			} else {
				continue;
			}
			assert_true(json_object_object_get_ex(node, "ro", &ro));
			assert_int_equal(json_object_get_boolean(ro), d->readonly);
		}
		assert_int_equal(found, 2);
		free(want_file);
		free(want_fmt);
	}
	json_object_put(reply);
}

static void
check_macs(struct fixture *f, const struct vm_config *vm)
{
	for (size_t i = 0; i < vm->nnets; i++) {
		char *path = scratch_printf("/machine/peripheral/%s", vm->nets[i].id);
		char *mac = qom_get_str(f, path, "mac");
		char want[18];

		cfg_mac_format(vm->nets[i].mac, want);
		assert_string_equal(mac, want);
		free(mac);
		free(path);
	}
}

/* quit, then QEMU closes QMP, exits 0 and removes its pidfile. */
static void
quit_qemu(struct fixture *f, const char *name)
{
	struct json_object *reply;
	char *pidfile = scratch_printf("%s/%s/qemu/qemu.pid", f->run_dir, name);
	int status;

	qmp_ok(f, "quit", NULL, &reply);
	json_object_put(reply);
	assert_int_equal(qmp_sync_wait_eof(f->qmp, QMP_TIMEOUT_MS), 0);
	assert_int_equal(waitpid(f->pid, &status, 0), f->pid);
	f->pid = -1;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(access(pidfile, F_OK), -1);
	free(pidfile);
}

static void
vm_init(struct vm_config *vm, const char *name, enum cfg_machine machine)
{
	memset(vm, 0, sizeof(*vm));
	vm->name = (char *)name;
	vm->memory = 128ull << 20;
	vm->vcpus = 1;
	vm->machine = machine;
	vm->accel = host_kvm_usable() ? CFG_ACCEL_KVM : CFG_ACCEL_TCG;
	vm->console = CFG_CONSOLE_LOG;
}

static void
disk_init(struct cfg_disk *d, const char *id, char *file, enum cfg_format format)
{
	memset(d, 0, sizeof(*d));
	d->id = (char *)id;
	d->file = file;
	d->format = format;
	d->cache = CFG_CACHE_WRITEBACK;
}

static void
net_init(struct cfg_net *n, const char *vm, const char *id)
{
	memset(n, 0, sizeof(*n));
	n->id = (char *)id;
	n->type = CFG_NET_USER;
	n->restricted = true;
	cfg_mac_derive(vm, id, n->mac);
}

static char **
build(struct fixture *f, const struct vm_config *vm, int qmp_fd)
{
	struct argv_env env = {
	    .qemu = QVMD_TEST_QEMU,
	    .run_dir = f->run_dir,
	    .state_dir = f->state_dir,
	    .ovmf_code = "/usr/share/OVMF/OVMF_CODE_4M.fd",
	    .qmp_fd = qmp_fd,
	    .disks = f->argv_chains,
	};
	char *cause = NULL;
	char **argv;
	long long set = 0;

	/* As qvmd does (vm_start.c): the images opened, their descriptors inherited by QEMU. */
	assert_true(vm->ndisks <= 4);
	for (size_t i = 0; i < vm->ndisks; i++) {
		const struct cfg_disk *d = &vm->disks[i];
		struct imgchain *c = &f->chains[i];

		if (imgchain_open(c, d->file, d->format, !d->readonly, &cause) < 0)
			fail_msg("imgchain_open: %s", cause);
		for (size_t j = 0; j < c->n; j++) {
			struct argv_image *im = &f->images[i][j];

			im->set = set++;
			im->fd_ro = c->v[j].fd_ro;
			im->fd_rw = c->v[j].fd_rw;
			im->format = c->v[j].format;
			fcntl(im->fd_ro, F_SETFD, 0);
			if (im->fd_rw >= 0)
				fcntl(im->fd_rw, F_SETFD, 0);
		}
		f->argv_chains[i].images = f->images[i];
		f->argv_chains[i].n = c->n;
	}
	assert_true(vm->ncdroms <= 4);
	for (size_t i = 0; i < vm->ncdroms; i++) {
		struct argv_image *im = &f->media_images[i];

		im->set = -1;
		im->fd_rw = im->fd_ro = -1;
		im->format = CFG_FORMAT_RAW;
		if (vm->cdroms[i].file == NULL)
			continue;
		if (imgchain_open(&f->media[i], vm->cdroms[i].file, CFG_FORMAT_RAW, false, &cause) <
		    0)
			fail_msg("imgchain_open: %s", cause);
		im->set = set++;
		im->fd_ro = f->media[i].v[0].fd_ro;
		fcntl(im->fd_ro, F_SETFD, 0);
	}
	env.cdroms = f->media_images;
	argv = argv_build(vm, &env, &cause);

	if (argv == NULL)
		fprintf(stderr, "argv_build: %s\n", cause);
	assert_non_null(argv);
	return argv;
}

/* pc: devices sit on pci.0, where query-pci sees them even before the firmware ran. */
static void
test_argv_qemu_pc(void **state)
{
	struct fixture *f = *state;
	struct cfg_disk disks[2];
	struct cfg_net nets[1];
	struct vm_config vm;
	struct json_object *reply, *ret, *devs;
	const char *want[] = {"root", "data", "nic0"};
	char **argv;

	vm_init(&vm, "pc1", CFG_MACHINE_PC);
	disk_init(&disks[0], "root", make_image(f, "root.qcow2", "qcow2"), CFG_FORMAT_QCOW2);
	disks[0].boot = true;
	disk_init(&disks[1], "data", make_image(f, "data.raw", "raw"), CFG_FORMAT_RAW);
	disks[1].readonly = true;
	disks[1].cache = CFG_CACHE_NONE;
	net_init(&nets[0], vm.name, "nic0");
	vm.disks = disks;
	vm.ndisks = 2;
	vm.nets = nets;
	vm.nnets = 1;
	make_vm_dirs(f, vm.name);

	argv = build(f, &vm, -1);
	start_qemu(f, &vm, argv);
	fprintf(stderr, "pc: exec -> QMP ready %.1f ms (%s)\n", f->ready_ms,
	        vm.accel == CFG_ACCEL_KVM ? "kvm" : "tcg");
	check_pidfile(f, vm.name);
	check_prelaunch(f);
	check_block_nodes(f, &vm);

	ret = qmp_ok(f, "query-pci", NULL, &reply);
	assert_true(json_object_object_get_ex(json_object_array_get_idx(ret, 0), "devices", &devs));
	for (size_t k = 0; k < 3; k++) {
		bool found = false;

		for (size_t i = 0; i < json_object_array_length(devs); i++) {
			struct json_object *d = json_object_array_get_idx(devs, i), *id, *vendor;

			if (strcmp(jstr(d, "qdev_id"), want[k]) != 0)
				continue;
			assert_true(json_object_object_get_ex(d, "id", &id));
			assert_true(json_object_object_get_ex(id, "vendor", &vendor));
			assert_int_equal(json_object_get_int(vendor), 0x1af4); /* virtio */
			found = true;
		}
		if (!found)
			fprintf(stderr, "query-pci: no device %s\n", want[k]);
		assert_true(found);
	}
	json_object_put(reply);
	check_macs(f, &vm);
	quit_qemu(f, vm.name);

	argv_free(argv);
	free(disks[0].file);
	free(disks[1].file);
}

/* Whether the bus of the QOM device at path holds a device (its child[N] links). */
static bool
port_occupied(struct fixture *f, const char *port)
{
	struct json_object *reply, *ret;
	char *args = scratch_printf("{\"path\":\"/machine/peripheral/%s/%s\"}", port, port);
	bool child = false;

	ret = qmp_ok(f, "qom-list", args, &reply);
	for (size_t i = 0; i < json_object_array_length(ret); i++) {
		if (strncmp(jstr(json_object_array_get_idx(ret, i), "name"), "child[", 6) == 0)
			child = true;
	}
	json_object_put(reply);
	free(args);
	return child;
}

/* q35: each cold-plugged device on its own rp.ID, the spare hp.N ports present and empty. */
static void
test_argv_qemu_q35(void **state)
{
	struct fixture *f = *state;
	struct cfg_disk disks[2];
	struct cfg_net nets[2];
	struct vm_config vm;
	struct json_object *reply, *ret;
	const char *devices[] = {"root", "data", "nic0", "nic1"};
	char **argv, *sock;
	int lfd, children = 0;

	vm_init(&vm, "q35a", CFG_MACHINE_Q35);
	disk_init(&disks[0], "root", make_image(f, "root.qcow2", "qcow2"), CFG_FORMAT_QCOW2);
	disks[0].boot = true;
	disk_init(&disks[1], "data", make_image(f, "data.qcow2", "qcow2"), CFG_FORMAT_QCOW2);
	disks[1].cache = CFG_CACHE_DIRECTSYNC;
	net_init(&nets[0], vm.name, "nic0");
	net_init(&nets[1], vm.name, "nic1");
	vm.disks = disks;
	vm.ndisks = 2;
	vm.nets = nets;
	vm.nnets = 2;
	vm.hotplug_slots = 4;
	make_vm_dirs(f, vm.name);

	/* The qmp_fd variant: QEMU inherits a socket already listening at the usual path. */
	sock = scratch_printf("%s/%s/qmp.sock", f->run_dir, vm.name);
	lfd = listen_unix(sock);
	argv = build(f, &vm, lfd);
	start_qemu(f, &vm, argv);
	close(lfd);
	fprintf(stderr, "q35: exec -> QMP ready %.1f ms (%s, 6 devices + 4 spare ports)\n",
	        f->ready_ms, vm.accel == CFG_ACCEL_KVM ? "kvm" : "tcg");
	check_pidfile(f, vm.name);
	check_prelaunch(f);
	check_block_nodes(f, &vm);

	/* Exactly the 4 devices, their 4 ports and the 4 spare ports (isa-serial has no id). */
	ret = qmp_ok(f, "qom-list", "{\"path\":\"/machine/peripheral\"}", &reply);
	for (size_t i = 0; i < json_object_array_length(ret); i++) {
		struct json_object *p = json_object_array_get_idx(ret, i);
		const char *name = jstr(p, "name");

		if (strncmp(jstr(p, "type"), "child<", 6) != 0)
			continue;
		children++;
		if (strncmp(name, "rp.", 3) == 0 || strncmp(name, "hp.", 3) == 0)
			assert_string_equal(jstr(p, "type"), "child<pcie-root-port>");
		else
			assert_non_null(strstr(jstr(p, "type"), "virtio-"));
	}
	assert_int_equal(children, 12);
	json_object_put(reply);

	for (size_t k = 0; k < 4; k++) {
		char *path = scratch_printf("/machine/peripheral/%s", devices[k]);
		char *want =
		    scratch_printf("/machine/peripheral/rp.%s/rp.%s", devices[k], devices[k]);
		char *bus = qom_get_str(f, path, "parent_bus");
		char *port = scratch_printf("rp.%s", devices[k]);

		assert_string_equal(bus, want);
		assert_true(port_occupied(f, port));
		free(port);
		free(bus);
		free(want);
		free(path);
	}
	for (unsigned k = 0; k < vm.hotplug_slots; k++) {
		char *port = scratch_printf("hp.%u", k);
		char *path = scratch_printf("/machine/peripheral/%s", port);
		char *type = qom_get_str(f, path, "type");

		assert_string_equal(type, "pcie-root-port");
		assert_false(port_occupied(f, port));
		free(type);
		free(path);
		free(port);
	}
	check_macs(f, &vm);
	quit_qemu(f, vm.name);

	argv_free(argv);
	free(sock);
	free(disks[0].file);
	free(disks[1].file);
}

/* The bridge entry of a query-pci device, or NULL. */
static struct json_object *
pci_bridge_bus(struct json_object *dev)
{
	struct json_object *br, *bus;

	if (!json_object_object_get_ex(dev, "pci_bridge", &br) ||
	    !json_object_object_get_ex(br, "bus", &bus))
		return NULL;
	return bus;
}

/*
 * q35 with ARGV_MAX_PORTS root ports runs its firmware: SeaBIOS numbers every port's secondary
 * bus and gives the devices behind the cold ports their memory BARs (no I/O space needed).
 */
static void
test_argv_qemu_q35_full(void **state)
{
	struct fixture *f = *state;
	struct cfg_disk disks[2];
	struct cfg_net nets[1];
	struct vm_config vm;
	struct json_object *reply, *ret, *devs;
	char **argv, *console;
	int ports = 0, numbered = 0, behind = 0;
	double t0;
	struct stat st;

	vm_init(&vm, "q35full", CFG_MACHINE_Q35);
	disk_init(&disks[0], "root", make_image(f, "root.qcow2", "qcow2"), CFG_FORMAT_QCOW2);
	disks[0].boot = true;
	disk_init(&disks[1], "data", make_image(f, "data.raw", "raw"), CFG_FORMAT_RAW);
	net_init(&nets[0], vm.name, "nic0");
	vm.disks = disks;
	vm.ndisks = 2;
	vm.nets = nets;
	vm.nnets = 1;
	vm.hotplug_slots = ARGV_MAX_PORTS - 3;
	make_vm_dirs(f, vm.name);

	argv = build(f, &vm, -1);
	start_qemu(f, &vm, argv);
	fprintf(stderr, "q35 %d ports: exec -> QMP ready %.1f ms\n", ARGV_MAX_PORTS, f->ready_ms);
	qmp_ok(f, "cont", NULL, &reply);
	json_object_put(reply);

	/* Poll until the firmware has numbered every bus behind a root port. */
	t0 = now_ms();
	for (;;) {
		ports = numbered = behind = 0;
		ret = qmp_ok(f, "query-pci", NULL, &reply);
		assert_true(
		    json_object_object_get_ex(json_object_array_get_idx(ret, 0), "devices", &devs));
		for (size_t i = 0; i < json_object_array_length(devs); i++) {
			struct json_object *bus =
			    pci_bridge_bus(json_object_array_get_idx(devs, i));
			struct json_object *sec, *br, *sub;

			if (bus == NULL)
				continue;
			ports++;
			assert_true(json_object_object_get_ex(bus, "secondary", &sec));
			if (json_object_get_int(sec) > 0)
				numbered++;
			json_object_object_get_ex(json_object_array_get_idx(devs, i), "pci_bridge",
			                          &br);
			if (!json_object_object_get_ex(br, "devices", &sub))
				continue;
			for (size_t k = 0; k < json_object_array_length(sub); k++) {
				struct json_object *d = json_object_array_get_idx(sub, k), *regs;
				bool mem = false;

				assert_true(json_object_object_get_ex(d, "regions", &regs));
				for (size_t r = 0; r < json_object_array_length(regs); r++) {
					struct json_object *reg =
					    json_object_array_get_idx(regs, r);
					struct json_object *addr;

					json_object_object_get_ex(reg, "address", &addr);
					if (strcmp(jstr(reg, "type"), "memory") == 0 &&
					    json_object_get_int64(addr) != 0 &&
					    json_object_get_int64(addr) != -1)
						mem = true;
				}
				if (mem)
					behind++;
			}
		}
		json_object_put(reply);
		if (numbered == ARGV_MAX_PORTS && behind == 3)
			break;
		if (now_ms() - t0 > QMP_TIMEOUT_MS) {
			fprintf(stderr, "firmware: %d ports, %d numbered, %d devices with BARs\n",
			        ports, numbered, behind);
			fail();
		}
		usleep(20000);
	}
	fprintf(stderr, "q35 %d ports: firmware numbered all buses %.0f ms after cont\n",
	        ARGV_MAX_PORTS, now_ms() - t0);
	assert_int_equal(ports, ARGV_MAX_PORTS);

	console = scratch_printf("%s/%s/console.log", f->state_dir, vm.name);
	assert_int_equal(stat(console, &st), 0);
	free(console);
	quit_qemu(f, vm.name);

	argv_free(argv);
	free(disks[0].file);
	free(disks[1].file);
}

static long long
qom_get_int(struct fixture *f, const char *path, const char *prop)
{
	struct json_object *reply, *ret;
	char *args;
	long long value;

	args = scratch_printf("{\"path\":\"%s\",\"property\":\"%s\"}", path, prop);
	ret = qmp_ok(f, "qom-get", args, &reply);
	value = json_object_get_int64(ret);
	json_object_put(reply);
	free(args);
	return value;
}

/* The query-block entry of qdev id (a reference the caller puts), or fails. */
static struct json_object *
block_of(struct fixture *f, const char *qdev)
{
	struct json_object *reply, *ret, *found = NULL;

	ret = qmp_ok(f, "query-block", NULL, &reply);
	for (size_t i = 0; i < json_object_array_length(ret); i++) {
		struct json_object *b = json_object_array_get_idx(ret, i);
		const char *q = jstr(b, "qdev");

		if (q != NULL && strcmp(q, qdev) == 0)
			found = json_object_get(b);
	}
	json_object_put(reply);
	if (found == NULL)
		fail_msg("query-block: no device %s", qdev);
	return found;
}

/* A QOM device: its type, the bus it sits on (the last component of parent_bus) and, unit >= 0,
 * its IDE unit. */
static void
check_device(struct fixture *f, const char *id, const char *type, const char *bus, int unit)
{
	char *path = scratch_printf("/machine/peripheral/%s", id);
	char *got_type = qom_get_str(f, path, "type"), *parent = qom_get_str(f, path, "parent_bus");
	const char *last = strrchr(parent, '/');

	assert_string_equal(got_type, type);
	assert_non_null(last);
	assert_string_equal(last + 1, bus);
	if (unit >= 0)
		assert_int_equal(qom_get_int(f, path, "unit"), unit);
	free(got_type);
	free(parent);
	free(path);
}

/* A cdrom: a medium (read-only, raw, on its own nodes) or an empty tray. */
static void
check_cdrom(struct fixture *f, const struct cfg_cdrom *cd)
{
	struct json_object *b = block_of(f, cd->id), *ins, *ro, *removable;

	assert_true(json_object_object_get_ex(b, "removable", &removable));
	assert_true(json_object_get_boolean(removable));
	if (cd->file == NULL) {
		assert_false(json_object_object_get_ex(b, "inserted", &ins));
	} else {
		char *node = scratch_printf("%s.fmt", cd->id);

		assert_true(json_object_object_get_ex(b, "inserted", &ins));
		assert_string_equal(jstr(ins, "node-name"), node);
		assert_string_equal(jstr(ins, "drv"), "raw");
		assert_true(json_object_object_get_ex(ins, "ro", &ro));
		assert_true(json_object_get_boolean(ro));
		free(node);
	}
	json_object_put(b);
}

/* display = vnc: a VGA (no id: peripheral-anon) and QEMU's VNC server without a socket. */
static void
check_vnc(struct fixture *f)
{
	struct json_object *reply, *ret;
	bool vga = false;

	ret = qmp_ok(f, "qom-list", "{\"path\":\"/machine/peripheral-anon\"}", &reply);
	for (size_t i = 0; i < json_object_array_length(ret); i++)
		if (strcmp(jstr(json_object_array_get_idx(ret, i), "type"), "child<VGA>") == 0)
			vga = true;
	json_object_put(reply);
	assert_true(vga);
	ret = qmp_ok(f, "query-vnc-servers", NULL, &reply);
	assert_int_equal(json_object_array_length(ret), 1);
	json_object_put(reply);
}

/* An empty drive takes a medium later, as `qvmctl media` will do it. */
static void
insert_medium(struct fixture *f, const char *id, const char *file)
{
	struct json_object *reply;
	char *args;

	args =
	    scratch_printf("{\"driver\":\"raw\",\"node-name\":\"new.fmt\",\"read-only\":true,"
	                   "\"file\":{\"driver\":\"file\",\"filename\":\"%s\",\"read-only\":true}}",
	                   file);
	qmp_ok(f, "blockdev-add", args, &reply);
	json_object_put(reply);
	free(args);
	args = scratch_printf("{\"id\":\"%s\"}", id);
	qmp_ok(f, "blockdev-open-tray", args, &reply);
	json_object_put(reply);
	free(args);
	args = scratch_printf("{\"id\":\"%s\",\"node-name\":\"new.fmt\"}", id);
	qmp_ok(f, "blockdev-insert-medium", args, &reply);
	json_object_put(reply);
	free(args);
	args = scratch_printf("{\"id\":\"%s\"}", id);
	qmp_ok(f, "blockdev-close-tray", args, &reply);
	json_object_put(reply);
	free(args);
}

/*
 * Install media on q35: a bus = sata disk and two cdroms (one with a medium, one empty) on the
 * AHCI ports ide.0..2 with no root port of their own, e1000 and e1000e NICs behind root ports,
 * the boot order disks first, and display = vnc.
 */
static void
test_argv_qemu_ide_q35(void **state)
{
	struct fixture *f = *state;
	struct cfg_disk disks[2];
	struct cfg_net nets[2];
	struct cfg_cdrom cdroms[2];
	struct vm_config vm;
	struct json_object *reply, *ret, *b, *ins;
	char **argv, *iso;
	int children = 0;

	vm_init(&vm, "ideq35", CFG_MACHINE_Q35);
	disk_init(&disks[0], "root", make_image(f, "root.qcow2", "qcow2"), CFG_FORMAT_QCOW2);
	disk_init(&disks[1], "sd0", make_image(f, "sd0.qcow2", "qcow2"), CFG_FORMAT_QCOW2);
	disks[1].bus = CFG_BUS_SATA;
	disks[1].boot = true;
	net_init(&nets[0], vm.name, "nic0");
	nets[0].model = CFG_NET_MODEL_E1000;
	net_init(&nets[1], vm.name, "nic1");
	nets[1].model = CFG_NET_MODEL_E1000E;
	memset(cdroms, 0, sizeof cdroms);
	iso = make_image(f, "install.iso", "raw");
	cdroms[0].id = "cd0";
	cdroms[0].file = iso;
	cdroms[0].boot = true;
	cdroms[1].id = "cd1";
	vm.disks = disks;
	vm.ndisks = 2;
	vm.nets = nets;
	vm.nnets = 2;
	vm.cdroms = cdroms;
	vm.ncdroms = 2;
	vm.hotplug_slots = 1;
	vm.display = CFG_DISPLAY_VNC;
	make_vm_dirs(f, vm.name);

	argv = build(f, &vm, -1);
	start_qemu(f, &vm, argv);
	check_prelaunch(f);
	check_block_nodes(f, &vm);
	check_device(f, "root", "virtio-blk-pci", "rp.root", -1);
	check_device(f, "sd0", "ide-hd", "ide.0", -1);
	check_device(f, "cd0", "ide-cd", "ide.1", -1);
	check_device(f, "cd1", "ide-cd", "ide.2", -1);
	check_device(f, "nic0", "e1000", "rp.nic0", -1);
	check_device(f, "nic1", "e1000e", "rp.nic1", -1);
	/* Root ports for root, nic0, nic1 and one spare: none for sata disks and cdroms. */
	ret = qmp_ok(f, "qom-list", "{\"path\":\"/machine/peripheral\"}", &reply);
	for (size_t i = 0; i < json_object_array_length(ret); i++)
		if (strcmp(jstr(json_object_array_get_idx(ret, i), "type"),
		           "child<pcie-root-port>") == 0)
			children++;
	json_object_put(reply);
	assert_int_equal(children, 4);
	/* bootindex: the sata disk (boot = yes), then the cdrom. */
	assert_int_equal(qom_get_int(f, "/machine/peripheral/sd0", "bootindex"), 1);
	assert_int_equal(qom_get_int(f, "/machine/peripheral/cd0", "bootindex"), 2);
	check_cdrom(f, &cdroms[0]);
	check_cdrom(f, &cdroms[1]);
	b = block_of(f, "sd0");
	assert_true(json_object_object_get_ex(b, "inserted", &ins));
	assert_string_equal(jstr(ins, "node-name"), "sd0.fmt");
	json_object_put(b);
	check_macs(f, &vm);
	check_vnc(f);

	insert_medium(f, "cd1", iso);
	b = block_of(f, "cd1");
	assert_true(json_object_object_get_ex(b, "inserted", &ins));
	assert_string_equal(jstr(ins, "node-name"), "new.fmt");
	json_object_put(b);
	quit_qemu(f, vm.name);

	argv_free(argv);
	free(iso);
	free(disks[0].file);
	free(disks[1].file);
}

/* Install media on pc: PIIX IDE's two buses of two units (disk, cdrom, cdrom), e1000e on pci.0.
 */
static void
test_argv_qemu_ide_pc(void **state)
{
	struct fixture *f = *state;
	struct cfg_disk disks[1];
	struct cfg_net nets[1];
	struct cfg_cdrom cdroms[2];
	struct vm_config vm;
	char **argv, *iso;

	vm_init(&vm, "idepc", CFG_MACHINE_PC);
	disk_init(&disks[0], "sd0", make_image(f, "sd0.raw", "raw"), CFG_FORMAT_RAW);
	disks[0].bus = CFG_BUS_SATA;
	net_init(&nets[0], vm.name, "nic0");
	nets[0].model = CFG_NET_MODEL_E1000E;
	memset(cdroms, 0, sizeof cdroms);
	iso = make_image(f, "install.iso", "raw");
	cdroms[0].id = "cd0";
	cdroms[0].boot = true;
	cdroms[1].id = "cd1";
	cdroms[1].file = iso;
	vm.disks = disks;
	vm.ndisks = 1;
	vm.nets = nets;
	vm.nnets = 1;
	vm.cdroms = cdroms;
	vm.ncdroms = 2;
	vm.display = CFG_DISPLAY_VNC;
	make_vm_dirs(f, vm.name);

	argv = build(f, &vm, -1);
	start_qemu(f, &vm, argv);
	check_prelaunch(f);
	check_block_nodes(f, &vm);
	check_device(f, "sd0", "ide-hd", "ide.0", 0);
	check_device(f, "cd0", "ide-cd", "ide.0", 1);
	check_device(f, "cd1", "ide-cd", "ide.1", 0);
	check_device(f, "nic0", "e1000e", "pci.0", -1);
	assert_int_equal(qom_get_int(f, "/machine/peripheral/cd0", "bootindex"), 1);
	check_cdrom(f, &cdroms[0]);
	check_cdrom(f, &cdroms[1]);
	check_macs(f, &vm);
	check_vnc(f);
	quit_qemu(f, vm.name);

	argv_free(argv);
	free(iso);
	free(disks[0].file);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_argv_qemu_pc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_argv_qemu_q35, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_argv_qemu_q35_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_argv_qemu_ide_q35, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_argv_qemu_ide_pc, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
