/*
 * hotplug_bench: hot-plug latency through qvmctl against the same raw QMP sequence on an identical
 * VM (contrib/bench/hotplug-bench.sh builds the guest and the daemon and runs this).
 *
 *   hotplug_bench QVMCTL CTLSOCK VM CONSOLE ARGVFILE LOG RAW_CONSOLE IMG IMG_RAW N MACHINE
 *
 * VM runs under qvmd (already started; CONSOLE is its console log). ARGVFILE is qvmd
 * --print-cmdline of an identical VM whose run and state directories differ: this program starts
 * it, sends cont like qvmd does, and waits until both guests printed GUEST-READY. Then N times,
 * alternating between the two VMs so that machine noise hits both alike:
 *   qvmd: "qvmctl attach-disk VM bd --file IMG", "qvmctl attach-net VM bn --restrict",
 *         "qvmctl detach VM bd", "qvmctl detach VM bn" (each timed from spawn to exit);
 *   raw:  disk: [q35: qom-list of a spare root port's bus: it is empty] blockdev-add file,
 *         blockdev-add qcow2, device_add virtio-blk-pci, qom-get parent_bus (the device is there,
 *         on that port), query-pci (its address); NIC: [q35: qom-list] netdev_add user restrict,
 *         device_add virtio-net-pci, qom-get parent_bus, query-pci; detach: device_del,
 *         wait for DEVICE_DELETED naming the device, blockdev-del x2 or netdev_del.
 * Then "qvmctl version" N times: what any qvmctl call costs (exec, connect, one request).
 * Figures as human lines and KEY=VALUE lines (milliseconds, medians).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bench_util.h"
#include "qmp_sync.h"

#define READY_TIMEOUT_S 300
#define READY_MARKER    "GUEST-READY"

/* Runs one QMP command that must succeed; returns the reply (caller puts it). */
static struct json_object *
qmp_must(struct qmp_sync *q, const char *cmd, const char *args)
{
	struct json_object *r = qmp_sync_cmd(q, cmd, args);

	if (qmp_sync_return(r) == NULL)
		bench_die("raw QMP %s %s failed: %s", cmd, args ? args : "",
		          r ? json_object_to_json_string(r) : "no reply");
	return r;
}

static void
qmp_run(struct qmp_sync *q, const char *cmd, const char *args)
{
	json_object_put(qmp_must(q, cmd, args));
}

static const char *
jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

/* Root ports our raw side has filled; the same bookkeeping qvmd keeps. */
static char used_port[2][32];

/* Hot-plug ports per VM (hotplug_slots of the bench's definitions is at least this). */
#define RAW_PORTS 4

/*
 * q35: a spare root port (hp.N) we did not fill, checked empty in QOM: a qom-list of its bus has
 * one child[K] link per device behind it. query-pci would not do: it does not list a device behind
 * a port whose bus the firmware has not numbered yet (right after start or reset).
 */
static void
pick_port(struct qmp_sync *q, char *port, size_t len)
{
	for (int n = 0; n < RAW_PORTS; n++) {
		struct json_object *r, *props;
		char args[128];
		bool busy = false;

		snprintf(port, len, "hp.%d", n);
		if (strcmp(port, used_port[0]) == 0 || strcmp(port, used_port[1]) == 0)
			continue;
		snprintf(args, sizeof args, "{\"path\":\"/machine/peripheral/%s/%s\"}", port, port);
		r = qmp_must(q, "qom-list", args);
		props = qmp_sync_return(r);
		for (size_t i = 0; props && i < json_object_array_length(props); i++) {
			const char *name = jstr(json_object_array_get_idx(props, i), "name");

			busy = busy || (name != NULL && strncmp(name, "child[", 6) == 0);
		}
		json_object_put(r);
		if (!busy)
			return;
	}
	bench_die("raw VM: no free root port");
}

/* The device is there, on the bus it was put on (QOM), and its address if numbered (query-pci):
 * what qvmd's confirmation asks, in one round trip. */
static void
confirm(struct qmp_sync *q, const char *id, const char *port)
{
	struct json_object *r;
	char args[256], bus[128];
	const char *got;

	snprintf(args, sizeof args,
	         "{\"path\":\"/machine/peripheral/%s\",\"property\":\"parent_bus\"}", id);
	r = qmp_must(q, "qom-get", args);
	got = json_object_get_string(qmp_sync_return(r));
	if (port[0] != '\0')
		snprintf(bus, sizeof bus, "/machine/peripheral/%s/%s", port, port);
	if (got == NULL || (port[0] != '\0' && strcmp(got, bus) != 0))
		bench_die("raw VM: %s is not on %s", id, port[0] ? bus : "its bus");
	json_object_put(r);
	json_object_put(qmp_must(q, "query-pci", NULL));
}

static void
raw_attach_disk(struct qmp_sync *q, bool q35, const char *img)
{
	char args[4096], port[32] = "";

	if (q35)
		pick_port(q, port, sizeof port);
	snprintf(args, sizeof args,
	         "{\"driver\":\"file\",\"filename\":\"%s\",\"node-name\":\"bd.file\","
	         "\"read-only\":false,\"cache\":{\"direct\":true,\"no-flush\":false}}",
	         img);
	qmp_run(q, "blockdev-add", args);
	qmp_run(q, "blockdev-add",
	        "{\"driver\":\"qcow2\",\"file\":\"bd.file\",\"node-name\":\"bd.fmt\","
	        "\"read-only\":false}");
	snprintf(args, sizeof args,
	         "{\"driver\":\"virtio-blk-pci\",\"id\":\"bd\",\"drive\":\"bd.fmt\"%s%s%s}",
	         q35 ? ",\"bus\":\"" : "", port, q35 ? "\"" : "");
	qmp_run(q, "device_add", args);
	confirm(q, "bd", port);
	snprintf(used_port[0], sizeof used_port[0], "%s", port);
}

static void
raw_attach_net(struct qmp_sync *q, bool q35)
{
	char args[1024], port[32] = "";

	if (q35)
		pick_port(q, port, sizeof port);
	qmp_run(q, "netdev_add", "{\"type\":\"user\",\"id\":\"bn.net\",\"restrict\":true}");
	snprintf(args, sizeof args,
	         "{\"driver\":\"virtio-net-pci\",\"id\":\"bn\",\"netdev\":\"bn.net\","
	         "\"mac\":\"52:54:00:be:4c:01\"%s%s%s}",
	         q35 ? ",\"bus\":\"" : "", port, q35 ? "\"" : "");
	qmp_run(q, "device_add", args);
	confirm(q, "bn", port);
	snprintf(used_port[1], sizeof used_port[1], "%s", port);
}

/* device_del, then DEVICE_DELETED naming id (virtio also sends one for its anonymous part). */
static void
raw_detach(struct qmp_sync *q, const char *id)
{
	char args[256];

	snprintf(args, sizeof args, "{\"id\":\"%s\"}", id);
	qmp_run(q, "device_del", args);
	for (;;) {
		struct json_object *ev = qmp_sync_wait_event(q, "DEVICE_DELETED", 30000), *data;
		const char *dev;
		bool ours;

		if (ev == NULL)
			bench_die("raw VM: no DEVICE_DELETED for %s", id);
		ours = json_object_object_get_ex(ev, "data", &data) &&
		       (dev = jstr(data, "device")) != NULL && strcmp(dev, id) == 0;
		json_object_put(ev);
		if (ours)
			break;
	}
	if (strcmp(id, "bd") == 0) {
		qmp_run(q, "blockdev-del", "{\"node-name\":\"bd.fmt\"}");
		qmp_run(q, "blockdev-del", "{\"node-name\":\"bd.file\"}");
		used_port[0][0] = '\0';
	} else {
		qmp_run(q, "netdev_del", "{\"id\":\"bn.net\"}");
		used_port[1][0] = '\0';
	}
}

int
main(int argc, char **argv)
{
	char **qargv, *path, *cause = NULL;
	const char *qvmctl, *sock, *vm, *img, *img_raw;
	int64_t *q_disk, *q_net, *q_det, *r_disk, *r_net, *r_det, t0, greet;
	size_t n;
	struct qmp_sync *q;
	bool q35;
	pid_t pid;
	int fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 12) {
		fputs("usage: hotplug_bench QVMCTL CTLSOCK VM CONSOLE ARGVFILE LOG RAW_CONSOLE IMG "
		      "IMG_RAW N MACHINE\n",
		      stderr);
		return 2;
	}
	qvmctl = argv[1];
	sock = argv[2];
	vm = argv[3];
	img = argv[8];
	img_raw = argv[9];
	n = (size_t)strtol(argv[10], NULL, 10);
	q35 = strcmp(argv[11], "q35") == 0;
	if (n == 0)
		bench_die("N must be positive");

	qargv = bench_read_argv(argv[5]);
	path = bench_qmp_path(qargv);
	pid = bench_spawn_qemu(qargv, path, argv[6], &fd, &greet);
	close(fd);
	q = qmp_sync_connect(path, 10000, &cause);
	if (q == NULL)
		bench_die("%s", cause);
	qmp_sync_set_timeout(q, 30000);
	qmp_run(q, "cont", NULL);
	bench_wait_marker(argv[4], argv[7], READY_MARKER, READY_TIMEOUT_S);
	printf("both guests printed %s\n", READY_MARKER);

	char *attach_disk[] = {(char *)qvmctl, "-s",     (char *)sock, "attach-disk", (char *)vm,
	                       "bd",           "--file", (char *)img,  NULL};
	char *attach_net[] = {(char *)qvmctl, "-s", (char *)sock, "attach-net",
	                      (char *)vm,     "bn", "--restrict", NULL};
	char *detach_disk[] = {(char *)qvmctl, "-s", (char *)sock, "detach",
	                       (char *)vm,     "bd", NULL};
	char *detach_net[] = {(char *)qvmctl, "-s", (char *)sock, "detach", (char *)vm, "bn", NULL};

	q_disk = bench_samples(n);
	q_net = bench_samples(n);
	q_det = bench_samples(2 * n);
	r_disk = bench_samples(n);
	r_net = bench_samples(n);
	r_det = bench_samples(2 * n);
	for (size_t i = 0; i < n; i++) {
		bench_ctl_timed(attach_disk, &q_disk[i]);
		bench_ctl_timed(attach_net, &q_net[i]);
		bench_ctl_timed(detach_disk, &q_det[2 * i]);
		bench_ctl_timed(detach_net, &q_det[2 * i + 1]);

		t0 = bench_now_ns();
		raw_attach_disk(q, q35, img_raw);
		r_disk[i] = bench_now_ns() - t0;
		t0 = bench_now_ns();
		raw_attach_net(q, q35);
		r_net[i] = bench_now_ns() - t0;
		t0 = bench_now_ns();
		raw_detach(q, "bd");
		r_det[2 * i] = bench_now_ns() - t0;
		t0 = bench_now_ns();
		raw_detach(q, "bn");
		r_det[2 * i + 1] = bench_now_ns() - t0;
	}
	/* What any qvmctl call costs here (exec, connect, one trivial request): the floor. */
	{
		char *version[] = {(char *)qvmctl, "-s", (char *)sock, "version", NULL};
		int64_t *v = bench_samples(n);

		for (size_t i = 0; i < n; i++)
			bench_ctl_timed(version, &v[i]);
		bench_report("version_ms", "qvmctl version (the floor of any qvmctl call)", v, n);
		free(v);
	}
	bench_report("attach_disk_ms", "qvmctl attach-disk (process start to exit)", q_disk, n);
	bench_report("raw_disk_ms", "raw QMP disk attach sequence", r_disk, n);
	bench_report("attach_net_ms", "qvmctl attach-net (process start to exit)", q_net, n);
	bench_report("raw_net_ms", "raw QMP NIC attach sequence", r_net, n);
	bench_report("detach_ms", "qvmctl detach (disk and NIC)", q_det, 2 * n);
	bench_report("raw_detach_ms", "raw QMP detach sequence (disk and NIC)", r_det, 2 * n);

	qmp_sync_cmd(q, "quit", NULL);
	qmp_sync_wait_eof(q, 5000);
	qmp_sync_close(q);
	bench_kill(pid);
	free(q_disk);
	free(q_net);
	free(q_det);
	free(r_disk);
	free(r_net);
	free(r_det);
	free(path);
	bench_free_argv(qargv);
	return 0;
}
