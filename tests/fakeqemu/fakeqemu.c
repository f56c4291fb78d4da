/*
 * fakeqemu: a stand-in for qemu-system-x86_64 where a real QEMU cannot do the job: scale tests with
 * thousands of VMs (one small single-threaded process each) and faults on demand. It accepts the
 * command lines qvmd generates and speaks QMP the way QEMU 7.2 does (messages and event order were
 * checked against the real one). It runs no guest: the "guest" is a cooperative one that releases
 * unplugged devices and obeys ACPI powerdown after a short delay, but only while it is running.
 *
 * Options understood (everything else is skipped, with its argument when it takes one):
 *   -name guest=NAME[,...] | NAME     -pidfile PATH (locked, removed on clean exit only)
 *   -qmp unix:PATH,server=on,wait=off (also "server,nowait"; the socket file is removed on clean
 * exit) -chardev socket,id=ID,fd=N|path=PATH,server=on,wait=off  +  -mon chardev=ID,mode=control -S
 * (start in "prelaunch")   -no-shutdown   -machine q35|pc[,...]   -smp N   -enable-kvm -device
 * {json}|DRIVER,k=v   -blockdev {json}|k=v   -netdev {json}|TYPE,k=v   -version A bad
 * -device/-blockdev/-netdev (unknown bus, duplicate id, ...) fails at startup like QEMU: a message
 * on stderr and exit status 1.
 *
 * Misbehaviour switches, read from the environment (qvmd passes its environment to QEMU):
 *   FAKEQEMU_IGNORE_POWERDOWN=1     system_powerdown is acknowledged, the guest never shuts down
 *   FAKEQEMU_POWERDOWN_DELAY_MS=N   guest shutdown N ms after system_powerdown (default 50)
 *   FAKEQEMU_NO_UNPLUG=1            device_del is acknowledged, DEVICE_DELETED never comes
 *   FAKEQEMU_UNPLUG_DELAY_MS=N      DEVICE_DELETED N ms after device_del (default 20)
 *   FAKEQEMU_STALL=CMD[,CMD...]     never answer these commands (later commands are still answered)
 *   FAKEQEMU_CRASH=CMD[,CMD...]     abort() when one of these commands arrives (SIGABRT, pidfile
 * left) FAKEQEMU_EXIT_AFTER_MS=N        abort() by itself N ms after start
 *   FAKEQEMU_SLOW=CMD[,CMD...]      take FAKEQEMU_SLOW_MS (default 2000) before running these
 *                                   commands, the whole process busy meanwhile (as QEMU is inside
 *                                   a long command: later commands wait); "fakeqemu: CMD: slow"
 *                                   goes to stderr first
 *   FAKEQEMU_JOB_MS=N               a backup job copies for N ms (default 50)
 *   FAKEQEMU_JOB_BYTES=N            ... and, when it succeeds, appends N bytes to its target's
 *                                   file (a node on /dev/fdset/N keeps its own descriptor)
 *   FAKEQEMU_CRASH_AFTER=CMD[,CMD...]  abort() right after answering one of these commands
 *   FAKEQEMU_STARTUP_DELAY_MS=N     wait N ms (after writing the pidfile) before the QMP socket is
 *                                   created or, for an inherited socket, before connections are
 * accepted
 *
 * Like QEMU: one QMP client at a time (a new one is accepted, with a fresh greeting, once the
 * previous one has gone); commands before qmp_capabilities fail with CommandNotFound; events are
 * sent only to a negotiated client; an event caused by a command is sent before that command's
 * reply; SIGTERM, SIGINT and SIGHUP emit SHUTDOWN {"guest":false,"reason":"host-signal"} and exit
 * 0. query-pci lists the devices behind a root port only once the VM has run (when firmware would
 * have numbered the buses); before that qom-list /machine/peripheral shows them, as with QEMU. A
 * device added to a root port that is already occupied is refused (QEMU would accept it on an
 * invisible slot).
 *
 * Backups the way QEMU 7.2 runs them, without copying anything: dirty bitmaps on block nodes
 * (block-dirty-bitmap-add/-remove, listed by query-named-block-nodes, never persisted),
 * blockdev-backup jobs (auto-dismissed) that run for FAKEQEMU_JOB_MS and then wait for
 * job-finalize unless auto-finalize, job-cancel, job-dismiss, query-jobs, with QEMU's events.
 * A job's bitmap is busy while it runs, cleared when it is finalized, kept when it is cancelled.
 *
 * Serve mode: "fakeqemu --serve-dir DIR --count N [options]" runs N such VMs in one process, with
 * QMP sockets DIR/0.sock .. DIR/N-1.sock (see serve_main()), for benchmarks that need thousands of
 * QMP peers without thousands of processes.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "xalloc.h"

#define FQ_QEMU_MAJOR   7
#define FQ_QEMU_MINOR   2
#define FQ_QEMU_MICRO   22
#define FQ_QEMU_PACKAGE "fakeqemu"
#define FQ_PCI_SLOTS    32

enum fq_status { FQ_PRELAUNCH, FQ_RUNNING, FQ_PAUSED, FQ_SHUTDOWN };

struct fq_device {
	struct fq_device *next;
	char *id; /* NULL: anonymous (/machine/peripheral-anon/device[anon]) */
	char *driver;
	char *
	    bus; /* PCI: the PCI bus (root bus name or a bridge's id); else the given bus or NULL */
	char *drive;  /* node-name held, or NULL */
	char *netdev; /* netdev id held, or NULL */
	int pci;
	int slot;
	int anon;
	int hotplugged;
	int unplugging;
};

struct fq_node {
	struct fq_node *next;
	char *name;
	char *driver;
	char *filename;
	char *file;    /* node-name of the "file" child, or NULL */
	char *backing; /* node-name of the "backing" child, or NULL */
	int fd;        /* its own descriptor of an fdset it was opened on, or -1 */
	struct fq_bitmap *bitmaps;
};

struct fq_bitmap {
	struct fq_bitmap *next;
	char *name;
	int persistent;
	int recording;
	int busy; /* a job uses it */
};

/* A blockdev-backup job. */
struct fq_job {
	struct fq_job *next;
	char *id;
	char *device; /* its source node */
	char *target;
	char *bitmap; /* an incremental's bitmap on device, or NULL */
	const char *status;
	int auto_finalize;
};

struct fq_netdev {
	struct fq_netdev *next;
	char *id;
	char *type;
	int fd;
};

struct fq_fd {
	struct fq_fd *next;
	char *name;
	int fd;
};

/* A descriptor of an fdset (add-fd), as QEMU keeps them. */
struct fq_setfd {
	struct fq_setfd *next;
	int64_t set;
	int fd;
	char *opaque;
};

enum fq_timer_kind { FQ_T_STARTUP, FQ_T_POWERDOWN, FQ_T_UNPLUG, FQ_T_EXIT, FQ_T_JOB };

struct fq_timer {
	struct fq_timer *next;
	int64_t due_ms;
	enum fq_timer_kind kind;
	char *device; /* FQ_T_UNPLUG; FQ_T_JOB: the job's id */
};

struct fq {
	const char *progname;
	char *name;
	char *pidfile;
	int pidfd;
	char *qmp_path; /* socket path to create, or NULL when inherited */
	int qmp_inherited_fd;
	char *qmp_chardev; /* -mon chardev=ID */
	int listen_fd;
	int client_fd;
	int negotiated;
	struct json_tokener *tok;
	char *out;
	size_t out_len, out_cap;
	int pending_fd; /* latest descriptor received with SCM_RIGHTS, for getfd */

	enum fq_status status;
	int q35;
	int kvm;
	int cpus;
	int no_shutdown;
	int has_run; /* firmware has numbered the bridges' buses */
	int anon_next;
	int exiting;

	/* Serve mode (--serve-dir): one of many VMs of this process. */
	int serve;
	int ended;           /* its sockets are closed: quit, poweroff, a signal or a crash */
	int reg_fd;          /* the descriptor it has in the epoll set, or -1 */
	uint32_t reg_events; /* and the events asked for */

	struct fq_device *devices;
	struct fq_node *nodes;
	struct fq_netdev *netdevs;
	struct fq_fd *fds;
	struct fq_setfd *setfds;
	struct fq_job *jobs;
	struct fq_timer *timers;

	int ignore_powerdown;
	int no_unplug;
	int powerdown_delay_ms;
	int unplug_delay_ms;
	const char *stall;
	const char *crash;
	const char *slow;
	const char *crash_after;
	int slow_ms;
	int job_ms;
	long long job_bytes;
};

/* The outcome of one command: a return value, or an error class and description. */
struct fq_reply {
	struct json_object *ret;
	const char *cls;
	char *desc;
};

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
env_int(const char *name, int def)
{
	const char *v = getenv(name);
	char *end;
	long n;

	if (v == NULL || *v == '\0')
		return def;
	n = strtol(v, &end, 10);
	if (*end != '\0' || n < 0 || n > INT_MAX)
		return def;
	return (int)n;
}

/* Whether word is one of the comma-separated words of list. */
static int
in_list(const char *list, const char *word)
{
	size_t len = strlen(word);
	const char *p = list;

	while (p != NULL && *p != '\0') {
		const char *comma = strchr(p, ',');
		size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);

		if (n == len && strncmp(p, word, n) == 0)
			return 1;
		p = comma != NULL ? comma + 1 : NULL;
	}
	return 0;
}

/* QEMU's id rule: a letter, then letters, digits, '-', '.', '_'. */
static int
is_identifier(const char *s)
{
	if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
		return 0;
	for (s++; *s != '\0'; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' || *s == '_'))
			return 0;
	}
	return 1;
}

static void
reply_error(struct fq_reply *r, const char *cls, const char *fmt, ...)
{
	va_list ap;

	r->cls = cls;
	free(r->desc);
	va_start(ap, fmt);
	if (vasprintf(&r->desc, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
}

/* A descriptor of the fdset a filename "/dev/fdset/N" names (add-fd or -add-fd), or NULL (no such
 * set, or another name). */
static const struct fq_setfd *
fdset_find(const struct fq *fq, const char *filename)
{
	long long set;

	if (filename == NULL || strncmp(filename, "/dev/fdset/", 11) != 0)
		return NULL;
	set = strtoll(filename + 11, NULL, 10);
	for (const struct fq_setfd *f = fq->setfds; f != NULL; f = f->next)
		if (f->set == set)
			return f;
	return NULL;
}

static const char *
jstr(struct json_object *obj, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* ---- output ---- */

/* Writes as much buffered output as the socket takes now; drops the client on error. */
static void client_close(struct fq *fq);

static void
out_flush(struct fq *fq)
{
	while (fq->client_fd >= 0 && fq->out_len > 0) {
		ssize_t n = send(fq->client_fd, fq->out, fq->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			client_close(fq);
			return;
		}
		memmove(fq->out, fq->out + n, fq->out_len - (size_t)n);
		fq->out_len -= (size_t)n;
	}
	if (fq->out_len == 0 && fq->out_cap > 4096) {
		free(fq->out);
		fq->out = NULL;
		fq->out_cap = 0;
	}
}

/* Queues one message (QEMU ends lines with CRLF) and tries to send it. */
static void
out_json(struct fq *fq, struct json_object *msg)
{
	size_t len;
	const char *s = json_object_to_json_string_length(
	    msg, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

	if (fq->client_fd < 0)
		return;
	if (fq->out_len + len + 2 > fq->out_cap) {
		size_t cap = fq->out_cap ? fq->out_cap : 1024;
		char *p;

		while (cap < fq->out_len + len + 2)
			cap *= 2;
		p = realloc(fq->out, cap);
		if (p == NULL)
			fatal("out of memory");
		fq->out = p;
		fq->out_cap = cap;
	}
	memcpy(fq->out + fq->out_len, s, len);
	memcpy(fq->out + fq->out_len + len, "\r\n", 2);
	fq->out_len += len + 2;
	out_flush(fq);
}

/* Sends an event to the client if it has negotiated capabilities; takes ownership of data. */
static void
fq_event(struct fq *fq, const char *name, struct json_object *data)
{
	struct json_object *msg, *ts;
	struct timespec now;

	if (fq->client_fd < 0 || !fq->negotiated) {
		json_object_put(data);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	msg = json_object_new_object();
	ts = json_object_new_object();
	json_object_object_add(ts, "seconds", json_object_new_int64(now.tv_sec));
	json_object_object_add(ts, "microseconds", json_object_new_int64(now.tv_nsec / 1000));
	json_object_object_add(msg, "timestamp", ts);
	json_object_object_add(msg, "event", json_object_new_string(name));
	if (data != NULL)
		json_object_object_add(msg, "data", data);
	out_json(fq, msg);
	json_object_put(msg);
}

static void
fq_send_greeting(struct fq *fq)
{
	struct json_object *msg = json_object_new_object(), *qmp = json_object_new_object();
	struct json_object *version = json_object_new_object(), *qemu = json_object_new_object();
	struct json_object *caps = json_object_new_array();

	json_object_object_add(qemu, "micro", json_object_new_int(FQ_QEMU_MICRO));
	json_object_object_add(qemu, "minor", json_object_new_int(FQ_QEMU_MINOR));
	json_object_object_add(qemu, "major", json_object_new_int(FQ_QEMU_MAJOR));
	json_object_object_add(version, "qemu", qemu);
	json_object_object_add(version, "package", json_object_new_string(FQ_QEMU_PACKAGE));
	json_object_object_add(qmp, "version", version);
	json_object_array_add(caps, json_object_new_string("oob"));
	json_object_object_add(qmp, "capabilities", caps);
	json_object_object_add(msg, "QMP", qmp);
	out_json(fq, msg);
	json_object_put(msg);
}

/* ---- timers ---- */

static void
timer_add(struct fq *fq, enum fq_timer_kind kind, int delay_ms, const char *device)
{
	struct fq_timer *t = xcalloc(1, sizeof(*t));

	t->kind = kind;
	t->due_ms = now_ms() + delay_ms;
	t->device = xstrdup(device);
	t->next = fq->timers;
	fq->timers = t;
}

static int
timer_next_timeout(const struct fq *fq)
{
	int64_t now = now_ms(), best = -1;
	const struct fq_timer *t;

	for (t = fq->timers; t != NULL; t = t->next) {
		int64_t left = t->due_ms > now ? t->due_ms - now : 0;

		if (best < 0 || left < best)
			best = left;
	}
	return best > INT_MAX ? INT_MAX : (int)best;
}

/* ---- clean exit ---- */

/*
 * Serve mode: one VM of the process ends (its QEMU would have exited). Its sockets close; the
 * caller decides whether the socket file goes, as it does on a clean exit, or stays, as after a
 * crash.
 */
static void
fq_vm_end(struct fq *fq)
{
	struct fq_timer *t;

	client_close(fq);
	if (fq->listen_fd >= 0) {
		close(fq->listen_fd);
		fq->listen_fd = -1;
	}
	while ((t = fq->timers) != NULL) {
		fq->timers = t->next;
		free(t->device);
		free(t);
	}
	fq->ended = 1;
}

/* A crash on demand: abort(), or in serve mode only this VM's sockets close, file left behind. */
static void
fq_crash(struct fq *fq)
{
	if (!fq->serve)
		abort();
	fq_vm_end(fq);
}

/*
 * The exit paths of QEMU that remove the pidfile: quit, a termination signal, guest poweroff. The
 * pending output (the SHUTDOWN event, the quit reply) is written out before the socket closes.
 * Exits, except in serve mode, where only this VM ends (and the call returns).
 */
static void
fq_clean_exit(struct fq *fq)
{
	if (fq->client_fd >= 0 && fq->out_len > 0) {
		struct timeval tv = {.tv_sec = 1};
		int flags = fcntl(fq->client_fd, F_GETFL);

		fcntl(fq->client_fd, F_SETFL, flags & ~O_NONBLOCK);
		setsockopt(fq->client_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		while (fq->client_fd >= 0 && fq->out_len > 0) {
			ssize_t n = send(fq->client_fd, fq->out, fq->out_len, MSG_NOSIGNAL);

			if (n <= 0 && errno != EINTR)
				break;
			if (n > 0) {
				memmove(fq->out, fq->out + n, fq->out_len - (size_t)n);
				fq->out_len -= (size_t)n;
			}
		}
	}
	if (fq->qmp_path != NULL && fq->listen_fd >= 0)
		unlink(fq->qmp_path);
	if (fq->serve) {
		fq_vm_end(fq);
		return;
	}
	if (fq->pidfile != NULL && fq->pidfd >= 0)
		unlink(fq->pidfile);
	exit(0);
}

/* ---- devices and buses ---- */

static const char *const fq_bridges[] = {"pcie-root-port", "ioh3420",         "xio3130-downstream",
                                         "pci-bridge",     "pcie-pci-bridge", NULL};
static const char *const fq_pci_drivers[] = {
    "e1000",     "e1000e",         "rtl8139",       "vmxnet3",        "VGA",
    "qxl",       "qxl-vga",        "bochs-display", "qemu-xhci",      "nec-usb-xhci",
    "ich9-ahci", "ich9-intel-hda", "intel-hda",     "i6300esb",       "nvme",
    "megasas",   "lsi53c895a",     "pvscsi",        "ivshmem-plain",  "ivshmem-doorbell",
    "vfio-pci",  "pvpanic-pci",    "pxb-pcie",      "x3130-upstream", NULL};
static const char *const fq_other_drivers[] = {"scsi-hd",
                                               "scsi-cd",
                                               "scsi-generic",
                                               "scsi-block",
                                               "ide-hd",
                                               "ide-cd",
                                               "virtconsole",
                                               "virtserialport",
                                               "isa-serial",
                                               "isa-debugcon",
                                               "isa-debug-exit",
                                               "usb-tablet",
                                               "usb-kbd",
                                               "usb-mouse",
                                               "usb-storage",
                                               "usb-host",
                                               "pvpanic",
                                               "hda-duplex",
                                               "hda-output",
                                               "hda-micro",
                                               "ramfb",
                                               "nvme-ns",
                                               "vmcoreinfo",
                                               "tpm-crb",
                                               "tpm-tis",
                                               "sga",
                                               NULL};
/* Drivers that provide child buses named "ID.0", "ID.1", ... */
static const char *const fq_bus_providers[] = {
    "virtio-scsi-pci", "virtio-serial-pci", "qemu-xhci",  "nec-usb-xhci",
    "ich9-ahci",       "megasas",           "lsi53c895a", "pvscsi",
    "intel-hda",       "ich9-intel-hda",    "nvme",       NULL};

static int
in_table(const char *const *table, const char *s)
{
	for (; *table != NULL; table++)
		if (strcmp(*table, s) == 0)
			return 1;
	return 0;
}

static int
ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int
driver_is_pci(const char *driver)
{
	return in_table(fq_bridges, driver) || in_table(fq_pci_drivers, driver) ||
	       ends_with(driver, "-pci") || strstr(driver, "-pci-") != NULL;
}

static int
driver_is_known(const char *driver)
{
	return driver_is_pci(driver) || in_table(fq_other_drivers, driver) ||
	       strncmp(driver, "virtio-", 7) == 0;
}

/* A root port has one slot; other bridges 32. */
static int
driver_is_port(const char *driver)
{
	return in_table(fq_bridges, driver) && strcmp(driver, "pci-bridge") != 0 &&
	       strcmp(driver, "pcie-pci-bridge") != 0;
}

/* The name QEMU uses in property errors: virtio-net-pci's backend is virtio-net-device. */
static char *
prop_owner(const char *driver)
{
	if (strncmp(driver, "virtio-", 7) == 0 && ends_with(driver, "-pci"))
		return xasprintf("%.*s-device", (int)(strlen(driver) - 4), driver);
	return xstrdup(driver);
}

static const char *
root_bus(const struct fq *fq)
{
	return fq->q35 ? "pcie.0" : "pci.0";
}

/* The machine's own disk controller: q35's ICH9 AHCI (ide.0 .. ide.5), pc's PIIX IDE (ide.0 and
 * ide.1), present with -nodefaults too. */
static int
builtin_ide_bus(const struct fq *fq, const char *bus)
{
	return strncmp(bus, "ide.", 4) == 0 && bus[4] >= '0' && bus[4] <= (fq->q35 ? '5' : '1') &&
	       bus[5] == '\0';
}

static struct fq_device *
device_find(struct fq *fq, const char *id)
{
	struct fq_device *d;

	for (d = fq->devices; d != NULL; d = d->next)
		if (d->id != NULL && strcmp(d->id, id) == 0)
			return d;
	return NULL;
}

static char *
device_path(const struct fq_device *d)
{
	if (d->id != NULL)
		return xasprintf("/machine/peripheral/%s", d->id);
	return xasprintf("/machine/peripheral-anon/device[%d]", d->anon);
}

static struct fq_device *
device_at(struct fq *fq, const char *bus, int slot)
{
	struct fq_device *d;

	for (d = fq->devices; d != NULL; d = d->next)
		if (d->pci && strcmp(d->bus, bus) == 0 && d->slot == slot)
			return d;
	return NULL;
}

/* Parses a PCI "addr" ("0x3", "3", "3.0", or a number) into a slot; -1 if malformed. */
static int
parse_addr(struct json_object *v)
{
	const char *s;
	char *end;
	long n;

	if (json_object_is_type(v, json_type_int))
		return json_object_get_int(v) >= 0 && json_object_get_int(v) < FQ_PCI_SLOTS
		           ? json_object_get_int(v)
		           : -1;
	if (!json_object_is_type(v, json_type_string))
		return -1;
	s = json_object_get_string(v);
	n = strtol(s, &end, 16);
	if (end == s || (*end != '\0' && *end != '.') || n < 0 || n >= FQ_PCI_SLOTS)
		return -1;
	return (int)n;
}

/*
 * Places a PCI device: checks its bus exists and takes hot-plug, and finds its slot. Returns the
 * slot, or -1 with the error in r.
 */
static int
pci_place(struct fq *fq, const char *driver, const char *bus, struct json_object *addr, int hotplug,
          struct fq_reply *r)
{
	int lo, hi, slot;
	struct fq_device *busdev = NULL, *occ;

	if (strcmp(bus, root_bus(fq)) == 0) {
		if (hotplug && fq->q35) {
			reply_error(r, "GenericError", "Bus '%s' does not support hotplugging",
			            bus);
			return -1;
		}
		/* q35: 0 host bridge, 31 ICH9 functions; pc: 0 host bridge, 1 PIIX3. */
		lo = fq->q35 ? 1 : 2;
		hi = fq->q35 ? 30 : 31;
	} else {
		busdev = device_find(fq, bus);
		if (busdev == NULL || !in_table(fq_bridges, busdev->driver)) {
			const char *dot = strrchr(bus, '.');
			struct fq_device *owner = NULL;

			if (dot != NULL) {
				char *base = xasprintf("%.*s", (int)(dot - bus), bus);

				owner = device_find(fq, base);
				free(base);
			}
			if (owner != NULL && in_table(fq_bus_providers, owner->driver))
				reply_error(r, "GenericError", "Device '%s' can't go on %s bus",
				            driver, owner->driver);
			else
				reply_error(r, "GenericError", "Bus '%s' not found", bus);
			return -1;
		}
		if (busdev->unplugging) {
			reply_error(r, "GenericError", "Bus '%s' not found", bus);
			return -1;
		}
		lo = 0;
		hi = driver_is_port(busdev->driver) ? 0 : FQ_PCI_SLOTS - 1;
	}
	if (addr != NULL) {
		slot = parse_addr(addr);
		if (slot < 0) {
			reply_error(r, "GenericError", "Property '%s.addr' doesn't take value '%s'",
			            driver, json_object_get_string(addr));
			return -1;
		}
		occ = device_at(fq, bus, slot);
		if (occ != NULL) {
			reply_error(
			    r, "GenericError",
			    "PCI: slot %d function 0 not available for %s, in use by %s,id=%s",
			    slot, driver, occ->driver, occ->id ? occ->id : "");
			return -1;
		}
		if (slot < lo || slot > hi) {
			reply_error(r, "GenericError",
			            "PCI: slot %d function 0 not available for %s, reserved", slot,
			            driver);
			return -1;
		}
		return slot;
	}
	for (slot = lo; slot <= hi; slot++)
		if (device_at(fq, bus, slot) == NULL)
			return slot;
	reply_error(r, "GenericError",
	            "PCI: no slot/function available for %s, all in use or reserved", driver);
	return -1;
}

static struct fq_node *
node_find(struct fq *fq, const char *name)
{
	struct fq_node *n;

	for (n = fq->nodes; n != NULL; n = n->next)
		if (strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

static struct fq_netdev *
netdev_find(struct fq *fq, const char *id)
{
	struct fq_netdev *n;

	for (n = fq->netdevs; n != NULL; n = n->next)
		if (strcmp(n->id, id) == 0)
			return n;
	return NULL;
}

static struct fq_device *
device_holding_drive(struct fq *fq, const char *node)
{
	struct fq_device *d;

	for (d = fq->devices; d != NULL; d = d->next)
		if (d->drive != NULL && strcmp(d->drive, node) == 0)
			return d;
	return NULL;
}

/* Adds a device from its properties (-device at startup, or device_add). 0, or -1 with r. */
static int
device_create(struct fq *fq, struct json_object *props, int hotplug, struct fq_reply *r)
{
	const char *driver = jstr(props, "driver"), *id = jstr(props, "id");
	const char *bus = jstr(props, "bus"), *drive = jstr(props, "drive");
	const char *netdev = jstr(props, "netdev");
	struct json_object *addr = NULL;
	struct fq_device *d;
	int slot = -1, pci;

	if (driver == NULL) {
		reply_error(r, "GenericError", "Parameter 'driver' is missing");
		return -1;
	}
	if (!driver_is_known(driver)) {
		reply_error(r, "GenericError", "'%s' is not a valid device model name", driver);
		return -1;
	}
	if (id != NULL && !is_identifier(id)) {
		reply_error(r, "GenericError", "Parameter 'id' expects an identifier");
		return -1;
	}
	if (id != NULL && device_find(fq, id) != NULL) {
		reply_error(r, "GenericError", "Duplicate device ID '%s'", id);
		return -1;
	}
	pci = driver_is_pci(driver);
	json_object_object_get_ex(props, "addr", &addr);
	if (pci) {
		if (bus == NULL)
			bus = root_bus(fq);
		slot = pci_place(fq, driver, bus, addr, hotplug, r);
		if (slot < 0)
			return -1;
	} else if (bus != NULL) {
		const char *dot = strrchr(bus, '.');
		struct fq_device *owner = NULL;

		if (dot != NULL && dot[1] >= '0' && dot[1] <= '9') {
			char *base = xasprintf("%.*s", (int)(dot - bus), bus);

			owner = device_find(fq, base);
			free(base);
		}
		if (!builtin_ide_bus(fq, bus) &&
		    (owner == NULL || !in_table(fq_bus_providers, owner->driver))) {
			reply_error(r, "GenericError", "Bus '%s' not found", bus);
			return -1;
		}
	}
	if (drive != NULL) {
		struct fq_device *holder;
		char *owner = prop_owner(driver);

		if (node_find(fq, drive) == NULL) {
			reply_error(r, "GenericError", "Property '%s.drive' can't find value '%s'",
			            owner, drive);
			free(owner);
			return -1;
		}
		free(owner);
		holder = device_holding_drive(fq, drive);
		if (holder != NULL) {
			char *a = device_path(holder);
			char *b = id != NULL ? xasprintf("/machine/peripheral/%s", id)
			                     : xasprintf("/machine/peripheral-anon/device[%d]",
			                                 fq->anon_next);

			reply_error(
			    r, "GenericError",
			    "Permission conflict on node '%s': permissions 'write' are both "
			    "required by block device '%s/virtio-backend' (uses node '%s' as "
			    "'root' child) and unshared by block device '%s/virtio-backend' "
			    "(uses node '%s' as 'root' child).",
			    drive, a, drive, b, drive);
			free(a);
			free(b);
			return -1;
		}
	} else if (strcmp(driver, "virtio-blk-pci") == 0 || strcmp(driver, "scsi-hd") == 0 ||
	           strcmp(driver, "ide-hd") == 0) {
		reply_error(r, "GenericError", "drive property not set");
		return -1;
	}
	if (netdev != NULL) {
		struct fq_device *o;
		char *owner = prop_owner(driver);

		if (netdev_find(fq, netdev) == NULL) {
			reply_error(r, "GenericError", "Property '%s.netdev' can't find value '%s'",
			            owner, netdev);
			free(owner);
			return -1;
		}
		for (o = fq->devices; o != NULL; o = o->next) {
			if (o->netdev != NULL && strcmp(o->netdev, netdev) == 0) {
				reply_error(
				    r, "GenericError",
				    "Property '%s.netdev' can't take value '%s', it's in use",
				    owner, netdev);
				free(owner);
				return -1;
			}
		}
		free(owner);
	}
	d = xcalloc(1, sizeof(*d));
	d->id = xstrdup(id);
	d->driver = xstrdup(driver);
	d->bus = xstrdup(bus);
	d->drive = xstrdup(drive);
	d->netdev = xstrdup(netdev);
	d->pci = pci;
	d->slot = slot;
	d->hotplugged = hotplug;
	d->anon = id == NULL ? fq->anon_next++ : -1;
	/* Appended, so that query-pci and qom-list keep creation order. */
	if (fq->devices == NULL) {
		fq->devices = d;
	} else {
		struct fq_device *last = fq->devices;

		while (last->next != NULL)
			last = last->next;
		last->next = d;
	}
	return 0;
}

static void
device_free(struct fq_device *d)
{
	free(d->id);
	free(d->driver);
	free(d->bus);
	free(d->drive);
	free(d->netdev);
	free(d);
}

/* Removes a device (and what sits on its buses) and emits DEVICE_DELETED as QEMU does. */
static void
device_remove(struct fq *fq, struct fq_device *d)
{
	struct fq_device **pp, *c;
	char *path = device_path(d);
	struct json_object *data;

	for (;;) {
		for (c = fq->devices; c != NULL; c = c->next) {
			const char *bus = c->bus;

			if (bus != NULL && d->id != NULL && c != d &&
			    strncmp(bus, d->id, strlen(d->id)) == 0 &&
			    (bus[strlen(d->id)] == '\0' || bus[strlen(d->id)] == '.'))
				break;
		}
		if (c == NULL)
			break;
		device_remove(fq, c);
	}
	for (pp = &fq->devices; *pp != d; pp = &(*pp)->next)
		;
	*pp = d->next;
	if (strncmp(d->driver, "virtio-", 7) == 0 && d->pci) {
		char *backend = xasprintf("%s/virtio-backend", path);

		data = json_object_new_object();
		json_object_object_add(data, "path", json_object_new_string(backend));
		free(backend);
		fq_event(fq, "DEVICE_DELETED", data);
	}
	data = json_object_new_object();
	if (d->id != NULL)
		json_object_object_add(data, "device", json_object_new_string(d->id));
	json_object_object_add(data, "path", json_object_new_string(path));
	fq_event(fq, "DEVICE_DELETED", data);
	free(path);
	device_free(d);
}

/* ---- block nodes ---- */

static const char *const fq_block_drivers[] = {
    "file",  "host_device", "host_cdrom",   "qcow2", "raw",   "null-co", "null-aio", "nbd",
    "iscsi", "throttle",    "copy-on-read", "luks",  "vmdk",  "vdi",     "vhdx",     "vpc",
    "qed",   "blkdebug",    "nvme",         "http",  "https", NULL};

static void
node_free(struct fq_node *n)
{
	free(n->name);
	free(n->driver);
	free(n->filename);
	free(n->file);
	free(n->backing);
	if (n->fd >= 0)
		close(n->fd);
	while (n->bitmaps != NULL) {
		struct fq_bitmap *b = n->bitmaps;

		n->bitmaps = b->next;
		free(b->name);
		free(b);
	}
	free(n);
}

static void
node_unlink(struct fq *fq, struct fq_node *n)
{
	struct fq_node **pp;

	for (pp = &fq->nodes; *pp != n; pp = &(*pp)->next)
		;
	*pp = n->next;
	node_free(n);
}

static struct fq_node *
node_parent(struct fq *fq, const char *name)
{
	struct fq_node *n;

	for (n = fq->nodes; n != NULL; n = n->next)
		if ((n->file != NULL && strcmp(n->file, name) == 0) ||
		    (n->backing != NULL && strcmp(n->backing, name) == 0))
			return n;
	return NULL;
}

static int node_create(struct fq *fq, struct json_object *props, int root, struct fq_reply *r,
                       char **created);

/*
 * Resolves a child reference ("file", "backing"): a node-name, or an inline definition that becomes
 * an implicit node. *name gets the child's node-name; 0, or -1 with r.
 */
static int
node_child(struct fq *fq, struct json_object *v, char **name, struct fq_reply *r)
{
	*name = NULL;
	if (v == NULL || json_object_is_type(v, json_type_null))
		return 0;
	if (json_object_is_type(v, json_type_string)) {
		const char *ref = json_object_get_string(v);

		if (node_find(fq, ref) == NULL) {
			reply_error(r, "GenericError", "Cannot find device='%s' nor node-name='%s'",
			            ref, ref);
			return -1;
		}
		*name = xstrdup(ref);
		return 0;
	}
	if (json_object_is_type(v, json_type_object))
		return node_create(fq, v, 0, r, name);
	reply_error(r, "GenericError", "Invalid parameter type, expected: object or string");
	return -1;
}

/* Adds a block node from blockdev-add / -blockdev properties; *created gets its name. */
static int
node_create(struct fq *fq, struct json_object *props, int root, struct fq_reply *r, char **created)
{
	const char *driver = jstr(props, "driver"), *name = jstr(props, "node-name");
	const char *filename = jstr(props, "filename");
	struct json_object *file = NULL, *backing = NULL;
	char *file_name = NULL, *backing_name = NULL;
	static unsigned implicit_seq;
	const struct fq_setfd *setfd;
	struct fq_node *n;

	if (driver == NULL) {
		reply_error(r, "GenericError", "Parameter 'driver' is missing");
		return -1;
	}
	if (!in_table(fq_block_drivers, driver)) {
		reply_error(r, "GenericError", "Parameter 'driver' does not accept value '%s'",
		            driver);
		return -1;
	}
	if (name == NULL && root) {
		reply_error(r, "GenericError", "'node-name' must be specified for the root node");
		return -1;
	}
	if (name != NULL && !is_identifier(name)) {
		reply_error(r, "GenericError", "Invalid node-name: '%s'", name);
		return -1;
	}
	if (name != NULL && node_find(fq, name) != NULL) {
		reply_error(r, "GenericError", "Duplicate nodes with node-name='%s'", name);
		return -1;
	}
	if (strcmp(driver, "file") == 0 || strcmp(driver, "host_device") == 0 ||
	    strcmp(driver, "host_cdrom") == 0) {
		if (filename == NULL) {
			reply_error(r, "GenericError", "Parameter 'filename' is missing");
			return -1;
		}
		if (strncmp(filename, "/dev/fdset/", 11) == 0) {
			if (fdset_find(fq, filename) == NULL) {
				reply_error(r, "GenericError", "Could not open '%s': %s", filename,
				            strerror(EACCES));
				return -1;
			}
		} else if (access(filename, F_OK) != 0) {
			reply_error(r, "GenericError", "Could not open '%s': %s", filename,
			            strerror(errno));
			return -1;
		}
	}
	json_object_object_get_ex(props, "file", &file);
	json_object_object_get_ex(props, "backing", &backing);
	if (node_child(fq, file, &file_name, r) < 0)
		return -1;
	if (node_child(fq, backing, &backing_name, r) < 0) {
		if (file_name != NULL && json_object_is_type(file, json_type_object))
			node_unlink(fq, node_find(fq, file_name));
		free(file_name);
		return -1;
	}
	n = xcalloc(1, sizeof(*n));
	n->name = name != NULL ? xstrdup(name) : xasprintf("#block%03u", implicit_seq++);
	n->driver = xstrdup(driver);
	n->filename = xstrdup(filename);
	/* a node keeps its own descriptor, as QEMU's does: the set may go meanwhile */
	n->fd =
	    (setfd = fdset_find(fq, filename)) != NULL ? fcntl(setfd->fd, F_DUPFD_CLOEXEC, 0) : -1;
	n->file = file_name;
	n->backing = backing_name;
	n->next = fq->nodes;
	fq->nodes = n;
	*created = xstrdup(n->name);
	return 0;
}

/* Deletes a node and the implicit ("#block") children created with it. */
static void
node_delete(struct fq *fq, struct fq_node *n)
{
	char *file = xstrdup(n->file), *backing = xstrdup(n->backing);
	struct fq_node *c;

	node_unlink(fq, n);
	if (file != NULL && file[0] == '#' && (c = node_find(fq, file)) != NULL)
		node_delete(fq, c);
	if (backing != NULL && backing[0] == '#' && (c = node_find(fq, backing)) != NULL)
		node_delete(fq, c);
	free(file);
	free(backing);
}

/* ---- netdevs and passed descriptors ---- */

static const char *const fq_netdev_types[] = {
    "user",   "tap",     "bridge",     "socket",     "stream", "dgram", "vde",
    "l2tpv3", "hubport", "vhost-user", "vhost-vdpa", "netmap", NULL};

/* Takes a descriptor named by a netdev "fd": a getfd name (QMP) or an inherited number. */
static int
fd_param(struct fq *fq, const char *spec, int from_monitor, struct fq_reply *r)
{
	struct fq_fd **pp, *f;
	int fd;

	if (spec[0] >= '0' && spec[0] <= '9') {
		char *end;
		long n = strtol(spec, &end, 10);

		if (*end != '\0' || n > INT_MAX) {
			reply_error(r, "GenericError", "Invalid file descriptor number '%s'", spec);
			return -1;
		}
		if (fcntl((int)n, F_GETFD) < 0) {
			reply_error(r, "GenericError", "Could not use fd %s: %s", spec,
			            strerror(errno));
			return -1;
		}
		return (int)n;
	}
	if (!from_monitor) {
		reply_error(r, "GenericError", "Invalid file descriptor number '%s'", spec);
		return -1;
	}
	for (pp = &fq->fds; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->name, spec) == 0) {
			f = *pp;
			*pp = f->next;
			fd = f->fd;
			free(f->name);
			free(f);
			return fd;
		}
	}
	reply_error(r, "GenericError", "File descriptor named '%s' has not been found", spec);
	return -1;
}

static int
netdev_create(struct fq *fq, struct json_object *props, int from_monitor, struct fq_reply *r)
{
	const char *type = jstr(props, "type"), *id = jstr(props, "id");
	const char *fdspec = jstr(props, "fd");
	struct fq_netdev *n;
	int fd = -1;

	if (type == NULL) {
		reply_error(r, "GenericError", "Parameter 'type' is missing");
		return -1;
	}
	if (id == NULL) {
		reply_error(r, "GenericError", "Parameter 'id' is missing");
		return -1;
	}
	if (!in_table(fq_netdev_types, type)) {
		reply_error(r, "GenericError", "Parameter 'type' does not accept value '%s'", type);
		return -1;
	}
	if (!is_identifier(id)) {
		reply_error(r, "GenericError", "Parameter 'id' expects an identifier");
		return -1;
	}
	if (netdev_find(fq, id) != NULL) {
		reply_error(r, "GenericError", "Duplicate ID '%s' for netdev", id);
		return -1;
	}
	if (fdspec != NULL && (fd = fd_param(fq, fdspec, from_monitor, r)) < 0)
		return -1;
	n = xcalloc(1, sizeof(*n));
	n->id = xstrdup(id);
	n->type = xstrdup(type);
	n->fd = fd;
	n->next = fq->netdevs;
	fq->netdevs = n;
	return 0;
}

/* ---- commands ---- */

static const char *
status_name(enum fq_status s)
{
	switch (s) {
	case FQ_PRELAUNCH:
		return "prelaunch";
	case FQ_RUNNING:
		return "running";
	case FQ_PAUSED:
		return "paused";
	case FQ_SHUTDOWN:
		return "shutdown";
	}
	return "paused";
}

static void
cmd_capabilities(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct json_object *enable;
	size_t i;

	if (args != NULL && json_object_object_get_ex(args, "enable", &enable) &&
	    json_object_is_type(enable, json_type_array)) {
		for (i = 0; i < json_object_array_length(enable); i++) {
			const char *cap =
			    json_object_get_string(json_object_array_get_idx(enable, i));

			if (strcmp(cap, "oob") != 0) {
				reply_error(r, "GenericError",
				            "Parameter 'enable' does not accept value '%s'", cap);
				return;
			}
		}
	}
	fq->negotiated = 1;
}

static void
cmd_query_status(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	r->ret = json_object_new_object();
	json_object_object_add(r->ret, "status", json_object_new_string(status_name(fq->status)));
	json_object_object_add(r->ret, "singlestep", json_object_new_boolean(0));
	json_object_object_add(r->ret, "running",
	                       json_object_new_boolean(fq->status == FQ_RUNNING));
}

static void
cmd_cont(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	if (fq->status == FQ_SHUTDOWN) {
		reply_error(r, "GenericError", "Resetting the Virtual Machine is required");
		return;
	}
	if (fq->status == FQ_RUNNING)
		return;
	fq->status = FQ_RUNNING;
	fq->has_run = 1;
	fq_event(fq, "RESUME", NULL);
}

static void
cmd_stop(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	if (fq->status != FQ_RUNNING)
		return;
	fq->status = FQ_PAUSED;
	fq_event(fq, "STOP", NULL);
}

static void
cmd_system_reset(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct json_object *data = json_object_new_object();

	json_object_object_add(data, "guest", json_object_new_boolean(0));
	json_object_object_add(data, "reason", json_object_new_string("host-qmp-system-reset"));
	fq_event(fq, "RESET", data);
	/* QEMU: a reset of a VM that is not running leaves it in prelaunch. */
	if (fq->status != FQ_RUNNING)
		fq->status = FQ_PRELAUNCH;
}

static void
cmd_system_powerdown(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	fq_event(fq, "POWERDOWN", NULL);
	if (!fq->ignore_powerdown)
		timer_add(fq, FQ_T_POWERDOWN, fq->powerdown_delay_ms, NULL);
}

static void
cmd_quit(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct json_object *data = json_object_new_object();

	json_object_object_add(data, "guest", json_object_new_boolean(0));
	json_object_object_add(data, "reason", json_object_new_string("host-qmp-quit"));
	fq_event(fq, "SHUTDOWN", data);
	fq->exiting = 1;
}

static void
cmd_query_version(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct json_object *qemu = json_object_new_object();

	json_object_object_add(qemu, "micro", json_object_new_int(FQ_QEMU_MICRO));
	json_object_object_add(qemu, "minor", json_object_new_int(FQ_QEMU_MINOR));
	json_object_object_add(qemu, "major", json_object_new_int(FQ_QEMU_MAJOR));
	r->ret = json_object_new_object();
	json_object_object_add(r->ret, "qemu", qemu);
	json_object_object_add(r->ret, "package", json_object_new_string(FQ_QEMU_PACKAGE));
}

static void
cmd_query_name(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	r->ret = json_object_new_object();
	if (fq->name != NULL)
		json_object_object_add(r->ret, "name", json_object_new_string(fq->name));
}

static void
cmd_query_kvm(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	r->ret = json_object_new_object();
	json_object_object_add(r->ret, "enabled", json_object_new_boolean(fq->kvm));
	json_object_object_add(r->ret, "present", json_object_new_boolean(1));
}

static void
cmd_query_cpus_fast(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	int i;

	r->ret = json_object_new_array();
	for (i = 0; i < fq->cpus; i++) {
		struct json_object *cpu = json_object_new_object(),
		                   *props = json_object_new_object();
		char *path = xasprintf("/machine/unattached/device[%d]", i);

		json_object_object_add(props, "core-id", json_object_new_int(0));
		json_object_object_add(props, "thread-id", json_object_new_int(0));
		json_object_object_add(props, "socket-id", json_object_new_int(i));
		json_object_object_add(cpu, "thread-id", json_object_new_int(getpid()));
		json_object_object_add(cpu, "props", props);
		json_object_object_add(cpu, "qom-path", json_object_new_string(path));
		json_object_object_add(cpu, "cpu-index", json_object_new_int(i));
		json_object_object_add(cpu, "target", json_object_new_string("x86_64"));
		json_object_array_add(r->ret, cpu);
		free(path);
	}
}

/* PCI identity of a device for query-pci: vendor, device id, class. */
static void
pci_identity(const char *driver, int *vendor, int *device, int *cls)
{
	static const struct {
		const char *driver;
		int vendor, device, cls;
	} table[] = {
	    {"pcie-root-port", 0x1b36, 0x000c, 0x0604},
	    {"pci-bridge", 0x1b36, 0x0001, 0x0604},
	    {"pcie-pci-bridge", 0x1b36, 0x000e, 0x0604},
	    {"ioh3420", 0x8086, 0x3420, 0x0604},
	    {"virtio-net-pci", 0x1af4, 0x1041, 0x0200},
	    {"virtio-blk-pci", 0x1af4, 0x1042, 0x0100},
	    {"virtio-serial-pci", 0x1af4, 0x1043, 0x0780},
	    {"virtio-rng-pci", 0x1af4, 0x1044, 0x00ff},
	    {"virtio-balloon-pci", 0x1af4, 0x1045, 0x00ff},
	    {"virtio-scsi-pci", 0x1af4, 0x1048, 0x0100},
	    {"virtio-gpu-pci", 0x1af4, 0x1050, 0x0380},
	    {"e1000", 0x8086, 0x100e, 0x0200},
	    {"e1000e", 0x8086, 0x10d3, 0x0200},
	    {"rtl8139", 0x10ec, 0x8139, 0x0200},
	    {"qemu-xhci", 0x1b36, 0x000d, 0x0c03},
	    {"VGA", 0x1234, 0x1111, 0x0300},
	};
	size_t i;

	for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (strcmp(table[i].driver, driver) == 0) {
			*vendor = table[i].vendor;
			*device = table[i].device;
			*cls = table[i].cls;
			return;
		}
	}
	*vendor = 0x1af4;
	*device = 0x1040;
	*cls = 0x00ff;
}

static const char *
pci_class_desc(int cls)
{
	switch (cls) {
	case 0x0100:
		return "SCSI controller";
	case 0x0106:
		return "SATA controller";
	case 0x0200:
		return "Ethernet controller";
	case 0x0300:
		return "VGA controller";
	case 0x0600:
		return "Host bridge";
	case 0x0601:
		return "ISA bridge";
	case 0x0604:
		return "PCI bridge";
	case 0x0c03:
		return "USB controller";
	case 0x0c05:
		return "SMBus";
	}
	return NULL;
}

static struct json_object *
pci_entry(int bus, int slot, int function, int vendor, int device, int cls, const char *qdev_id)
{
	struct json_object *e = json_object_new_object(), *ci = json_object_new_object();
	struct json_object *id = json_object_new_object();
	const char *desc = pci_class_desc(cls);

	json_object_object_add(e, "bus", json_object_new_int(bus));
	json_object_object_add(e, "slot", json_object_new_int(slot));
	json_object_object_add(e, "function", json_object_new_int(function));
	json_object_object_add(ci, "class", json_object_new_int(cls));
	if (desc != NULL)
		json_object_object_add(ci, "desc", json_object_new_string(desc));
	json_object_object_add(e, "class_info", ci);
	json_object_object_add(id, "device", json_object_new_int(device));
	json_object_object_add(id, "vendor", json_object_new_int(vendor));
	json_object_object_add(e, "id", id);
	json_object_object_add(e, "irq_pin", json_object_new_int(slot == 0 && bus == 0 ? 0 : 1));
	json_object_object_add(e, "qdev_id", json_object_new_string(qdev_id));
	json_object_object_add(e, "regions", json_object_new_array());
	return e;
}

static struct json_object *
pci_range(int64_t base, int64_t limit)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "base", json_object_new_int64(base));
	json_object_object_add(o, "limit", json_object_new_int64(limit));
	return o;
}

/*
 * The devices of one PCI bus in slot order, with QEMU's built-in functions on the root bus. Once
 * the VM has run, bridges get bus numbers (depth first, as firmware does) and list their devices.
 */
static struct json_object *
pci_bus_devices(struct fq *fq, const char *bus, int number, int *last)
{
	struct json_object *devs = json_object_new_array();
	int root = strcmp(bus, root_bus(fq)) == 0, slot;

	for (slot = 0; slot < FQ_PCI_SLOTS; slot++) {
		struct fq_device *d = device_at(fq, bus, slot);
		int vendor, device, cls;
		struct json_object *e;

		if (root && slot == 0) {
			json_object_array_add(
			    devs,
			    pci_entry(0, 0, 0, 0x8086, fq->q35 ? 0x29c0 : 0x1237, 0x0600, ""));
			continue;
		}
		if (root && fq->q35 && slot == 31) {
			json_object_array_add(devs,
			                      pci_entry(0, 31, 0, 0x8086, 0x2918, 0x0601, ""));
			json_object_array_add(devs,
			                      pci_entry(0, 31, 2, 0x8086, 0x2922, 0x0106, ""));
			json_object_array_add(devs,
			                      pci_entry(0, 31, 3, 0x8086, 0x2930, 0x0c05, ""));
			continue;
		}
		if (root && !fq->q35 && slot == 1) {
			json_object_array_add(devs, pci_entry(0, 1, 0, 0x8086, 0x7000, 0x0601, ""));
			json_object_array_add(devs, pci_entry(0, 1, 1, 0x8086, 0x7010, 0x0101, ""));
			json_object_array_add(devs, pci_entry(0, 1, 3, 0x8086, 0x7113, 0x0680, ""));
			continue;
		}
		if (d == NULL)
			continue;
		pci_identity(d->driver, &vendor, &device, &cls);
		e = pci_entry(number, slot, 0, vendor, device, cls, d->id != NULL ? d->id : "");
		if (in_table(fq_bridges, d->driver) && d->id != NULL) {
			struct json_object *br = json_object_new_object();
			struct json_object *b = json_object_new_object(), *children = NULL;
			int secondary = 0, subordinate = 0;

			if (fq->has_run) {
				secondary = ++*last;
				children = pci_bus_devices(fq, d->id, secondary, last);
				subordinate = *last;
			}
			json_object_object_add(b, "number", json_object_new_int(number));
			json_object_object_add(b, "secondary", json_object_new_int(secondary));
			json_object_object_add(b, "subordinate", json_object_new_int(subordinate));
			json_object_object_add(b, "io_range", pci_range(61440, 4095));
			json_object_object_add(b, "memory_range", pci_range(4293918720, 1048575));
			json_object_object_add(b, "prefetchable_range",
			                       pci_range(4293918720, 1048575));
			json_object_object_add(br, "bus", b);
			if (children != NULL)
				json_object_object_add(br, "devices", children);
			json_object_object_add(e, "pci_bridge", br);
		}
		json_object_array_add(devs, e);
	}
	return devs;
}

static void
cmd_query_pci(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct json_object *bus = json_object_new_object();
	int last = 0;

	json_object_object_add(bus, "bus", json_object_new_int(0));
	json_object_object_add(bus, "devices", pci_bus_devices(fq, root_bus(fq), 0, &last));
	r->ret = json_object_new_array();
	json_object_array_add(r->ret, bus);
}

static void
cmd_device_add(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	device_create(fq, args, 1, r);
}

static void
cmd_device_del(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *id = jstr(args, "id");
	struct fq_device *d = device_find(fq, id);

	if (d == NULL) {
		reply_error(r, "DeviceNotFound", "Device '%s' not found", id);
		return;
	}
	if (d->unplugging) {
		reply_error(r, "GenericError", "Device %s is already in the process of unplug", id);
		return;
	}
	if (d->pci && fq->q35 && strcmp(d->bus, root_bus(fq)) == 0) {
		reply_error(r, "GenericError", "Bus '%s' does not support hotplugging", d->bus);
		return;
	}
	if (!d->pci) {
		/* Unplugged at once; QEMU sends the event after the reply. */
		d->unplugging = 1;
		timer_add(fq, FQ_T_UNPLUG, 0, id);
		return;
	}
	d->unplugging = 1;
	if (!fq->no_unplug)
		timer_add(fq, FQ_T_UNPLUG, fq->unplug_delay_ms, id);
}

static void
cmd_netdev_add(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	netdev_create(fq, args, 1, r);
}

static void
cmd_netdev_del(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *id = jstr(args, "id");
	struct fq_netdev **pp, *n;

	for (pp = &fq->netdevs; *pp != NULL; pp = &(*pp)->next)
		if (strcmp((*pp)->id, id) == 0)
			break;
	if (*pp == NULL) {
		reply_error(r, "DeviceNotFound", "Device '%s' not found", id);
		return;
	}
	n = *pp;
	*pp = n->next;
	if (n->fd >= 0)
		close(n->fd);
	free(n->id);
	free(n->type);
	free(n);
}

static void
cmd_blockdev_add(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	char *name = NULL;

	if (node_create(fq, args, 1, r, &name) == 0)
		free(name);
}

static void
cmd_blockdev_del(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *name = jstr(args, "node-name");
	struct fq_node *n = node_find(fq, name);

	if (n == NULL) {
		reply_error(r, "GenericError", "Failed to find node with node-name='%s'", name);
		return;
	}
	if (device_holding_drive(fq, name) != NULL) {
		reply_error(r, "GenericError", "Node %s is in use", name);
		return;
	}
	if (node_parent(fq, name) != NULL) {
		reply_error(r, "GenericError", "Block device %s is in use", name);
		return;
	}
	node_delete(fq, n);
}

static struct json_object *bitmaps_json(const struct fq_node *n);

static void
cmd_query_named_block_nodes(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct fq_node *n;

	r->ret = json_object_new_array();
	for (n = fq->nodes; n != NULL; n = n->next) {
		struct json_object *o = json_object_new_object(), *img = json_object_new_object();
		struct json_object *cache = json_object_new_object();
		const struct fq_node *leaf = n;
		const char *file;

		while (leaf->filename == NULL && leaf->file != NULL && node_find(fq, leaf->file))
			leaf = node_find(fq, leaf->file);
		file = leaf->filename != NULL ? leaf->filename : "";
		json_object_object_add(o, "node-name", json_object_new_string(n->name));
		json_object_object_add(o, "drv", json_object_new_string(n->driver));
		json_object_object_add(o, "file", json_object_new_string(file));
		json_object_object_add(o, "ro", json_object_new_boolean(0));
		json_object_object_add(o, "encrypted", json_object_new_boolean(0));
		json_object_object_add(o, "backing_file_depth", json_object_new_int(0));
		json_object_object_add(o, "detect_zeroes", json_object_new_string("off"));
		json_object_object_add(o, "write_threshold", json_object_new_int(0));
		json_object_object_add(cache, "writeback", json_object_new_boolean(1));
		json_object_object_add(cache, "direct", json_object_new_boolean(0));
		json_object_object_add(cache, "no-flush", json_object_new_boolean(0));
		json_object_object_add(o, "cache", cache);
		json_object_object_add(img, "filename", json_object_new_string(file));
		json_object_object_add(img, "format", json_object_new_string(n->driver));
		json_object_object_add(img, "virtual-size", json_object_new_int64(0));
		json_object_object_add(o, "image", img);
		if (n->bitmaps != NULL)
			json_object_object_add(o, "dirty-bitmaps", bitmaps_json(n));
		json_object_array_add(r->ret, o);
	}
}

/* ---- dirty bitmaps and backup jobs ---- */

/* QEMU's refusal of a bitmap a job uses. */
#define FQ_BITMAP_BUSY "Bitmap '%s' is currently in use by another operation and cannot be used"

static struct fq_bitmap *
bitmap_find(const struct fq_node *n, const char *name)
{
	struct fq_bitmap *b;

	for (b = n != NULL ? n->bitmaps : NULL; b != NULL; b = b->next)
		if (strcmp(b->name, name) == 0)
			return b;
	return NULL;
}

/* The node named by a command's "node" or "device", or NULL with r. */
static struct fq_node *
node_arg(struct fq *fq, const char *name, struct fq_reply *r)
{
	struct fq_node *n = node_find(fq, name);

	if (n == NULL)
		reply_error(r, "GenericError", "Cannot find device='%s' nor node-name='%s'", name,
		            name);
	return n;
}

static void
cmd_bitmap_add(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *name = jstr(args, "name");
	struct fq_node *n = node_arg(fq, jstr(args, "node"), r);
	struct json_object *v;
	struct fq_bitmap *b;

	if (n == NULL)
		return;
	if (bitmap_find(n, name) != NULL) {
		reply_error(r, "GenericError", "Bitmap already exists: %s", name);
		return;
	}
	b = xcalloc(1, sizeof(*b));
	b->name = xstrdup(name);
	b->persistent =
	    json_object_object_get_ex(args, "persistent", &v) && json_object_get_boolean(v);
	b->recording =
	    !(json_object_object_get_ex(args, "disabled", &v) && json_object_get_boolean(v));
	b->next = n->bitmaps;
	n->bitmaps = b;
}

static void
cmd_bitmap_remove(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *name = jstr(args, "name");
	struct fq_node *n = node_arg(fq, jstr(args, "node"), r);
	struct fq_bitmap **pp, *b;

	if (n == NULL)
		return;
	for (pp = &n->bitmaps; *pp != NULL && strcmp((*pp)->name, name) != 0; pp = &(*pp)->next)
		;
	if ((b = *pp) == NULL) {
		reply_error(r, "GenericError", "Dirty bitmap '%s' not found", name);
		return;
	}
	if (b->busy) {
		reply_error(r, "GenericError", FQ_BITMAP_BUSY, name);
		return;
	}
	*pp = b->next;
	free(b->name);
	free(b);
}

static struct json_object *
bitmaps_json(const struct fq_node *n)
{
	struct json_object *a = json_object_new_array();
	const struct fq_bitmap *b;

	for (b = n->bitmaps; b != NULL; b = b->next) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "name", json_object_new_string(b->name));
		json_object_object_add(o, "recording", json_object_new_boolean(b->recording));
		json_object_object_add(o, "persistent", json_object_new_boolean(b->persistent));
		json_object_object_add(o, "busy", json_object_new_boolean(b->busy));
		json_object_object_add(o, "granularity", json_object_new_int(65536));
		json_object_object_add(o, "count", json_object_new_int(0));
		json_object_array_add(a, o);
	}
	return a;
}

static struct fq_job *
job_find(struct fq *fq, const char *id)
{
	struct fq_job *j;

	for (j = fq->jobs; j != NULL; j = j->next)
		if (strcmp(j->id, id) == 0)
			return j;
	return NULL;
}

static void
job_status(struct fq *fq, struct fq_job *j, const char *status)
{
	struct json_object *data = json_object_new_object();

	j->status = status;
	json_object_object_add(data, "status", json_object_new_string(status));
	json_object_object_add(data, "id", json_object_new_string(j->id));
	fq_event(fq, "JOB_STATUS_CHANGE", data);
}

/* BLOCK_JOB_COMPLETED or BLOCK_JOB_CANCELLED: the job's device is its id, as in QEMU. */
static void
job_block_event(struct fq *fq, const struct fq_job *j, const char *event)
{
	struct json_object *data = json_object_new_object();

	json_object_object_add(data, "device", json_object_new_string(j->id));
	json_object_object_add(data, "len", json_object_new_int64(0));
	json_object_object_add(data, "offset", json_object_new_int64(0));
	json_object_object_add(data, "speed", json_object_new_int64(0));
	json_object_object_add(data, "type", json_object_new_string("backup"));
	fq_event(fq, event, data);
}

/* FAKEQEMU_JOB_BYTES: appends that many bytes to the file under the job's target node. */
static void
job_write(struct fq *fq, const struct fq_job *j)
{
	const struct fq_node *n = node_find(fq, j->target);
	static char buf[65536];
	long long left = fq->job_bytes;
	struct stat sb;

	while (n != NULL && n->fd < 0 && n->file != NULL)
		n = node_find(fq, n->file);
	if (n == NULL || n->fd < 0 || fstat(n->fd, &sb) < 0)
		return;
	memset(buf, 0x5a, sizeof(buf));
	for (off_t off = sb.st_size; left > 0;) {
		size_t len = left < (long long)sizeof(buf) ? (size_t)left : sizeof(buf);
		ssize_t w = pwrite(n->fd, buf, len, off);

		if (w <= 0)
			return;
		off += w;
		left -= w;
	}
}

/* The job ends (concluded, then dismissed): its bitmap is let go, cleared when it succeeded. */
static void
job_end(struct fq *fq, struct fq_job *j, int ok)
{
	struct fq_bitmap *b = j->bitmap ? bitmap_find(node_find(fq, j->device), j->bitmap) : NULL;
	struct fq_job **pp;
	struct fq_timer **tp;

	if (b != NULL)
		b->busy = 0; /* "count" is always 0 here: cleared or merged back alike */
	if (ok && fq->job_bytes > 0)
		job_write(fq, j);
	job_block_event(fq, j, ok ? "BLOCK_JOB_COMPLETED" : "BLOCK_JOB_CANCELLED");
	job_status(fq, j, "concluded");
	job_status(fq, j, "null");
	for (tp = &fq->timers; *tp != NULL;) {
		struct fq_timer *t = *tp;

		if (t->kind == FQ_T_JOB && strcmp(t->device, j->id) == 0) {
			*tp = t->next;
			free(t->device);
			free(t);
			continue;
		}
		tp = &t->next;
	}
	for (pp = &fq->jobs; *pp != j; pp = &(*pp)->next)
		;
	*pp = j->next;
	free(j->id);
	free(j->device);
	free(j->target);
	free(j->bitmap);
	free(j);
}

/* The copy is over: the job waits for job-finalize, or finalizes itself. */
static void
job_copied(struct fq *fq, const char *id)
{
	struct fq_job *j = job_find(fq, id);
	struct json_object *data;

	if (j == NULL)
		return;
	job_status(fq, j, "waiting");
	job_status(fq, j, "pending");
	if (j->auto_finalize) {
		job_end(fq, j, 1);
		return;
	}
	data = json_object_new_object();
	json_object_object_add(data, "type", json_object_new_string("backup"));
	json_object_object_add(data, "id", json_object_new_string(j->id));
	fq_event(fq, "BLOCK_JOB_PENDING", data);
}

static void
cmd_blockdev_backup(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *id = jstr(args, "job-id"), *sync = jstr(args, "sync");
	const char *bitmap = jstr(args, "bitmap");
	struct fq_node *src, *dst;
	struct fq_bitmap *b = NULL;
	struct json_object *v;
	struct fq_job *j;

	if ((src = node_arg(fq, jstr(args, "device"), r)) == NULL ||
	    (dst = node_arg(fq, jstr(args, "target"), r)) == NULL)
		return;
	if (job_find(fq, id) != NULL) {
		reply_error(r, "GenericError", "Job ID '%s' already in use", id);
		return;
	}
	if (strcmp(sync, "full") != 0 && strcmp(sync, "incremental") != 0) {
		reply_error(r, "GenericError", "Parameter 'sync' does not accept value '%s'", sync);
		return;
	}
	if (bitmap != NULL && (b = bitmap_find(src, bitmap)) == NULL) {
		reply_error(r, "GenericError", "Dirty bitmap '%s' not found", bitmap);
		return;
	}
	if (strcmp(sync, "incremental") == 0 && b == NULL) {
		reply_error(r, "GenericError",
		            "must provide a valid bitmap name for 'incremental' "
		            "sync mode");
		return;
	}
	if (b != NULL && b->busy) {
		reply_error(r, "GenericError", FQ_BITMAP_BUSY, bitmap);
		return;
	}
	j = xcalloc(1, sizeof(*j));
	j->id = xstrdup(id);
	j->device = xstrdup(src->name);
	j->target = xstrdup(dst->name);
	j->bitmap = xstrdup(bitmap);
	j->auto_finalize =
	    !(json_object_object_get_ex(args, "auto-finalize", &v) && !json_object_get_boolean(v));
	j->next = fq->jobs;
	fq->jobs = j;
	if (b != NULL)
		b->busy = 1;
	job_status(fq, j, "created");
	job_status(fq, j, "running");
	timer_add(fq, FQ_T_JOB, fq->job_ms, j->id);
}

/* The job by a command's "id", or NULL with r. */
static struct fq_job *
job_arg(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *id = jstr(args, "id");
	struct fq_job *j = job_find(fq, id);

	if (j == NULL)
		reply_error(r, "GenericError", "Job not found");
	return j;
}

static void
cmd_job_finalize(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct fq_job *j = job_arg(fq, args, r);

	if (j == NULL)
		return;
	if (strcmp(j->status, "pending") != 0) {
		reply_error(r, "GenericError",
		            "Job '%s' in state '%s' cannot accept command verb "
		            "'finalize'",
		            j->id, j->status);
		return;
	}
	job_end(fq, j, 1);
}

static void
cmd_job_cancel(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct fq_job *j = job_arg(fq, args, r);

	if (j == NULL)
		return;
	job_status(fq, j, "aborting");
	job_end(fq, j, 0);
}

static void
cmd_job_dismiss(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct fq_job *j = job_arg(fq, args, r);

	if (j != NULL) /* every job here is dismissed as it concludes */
		reply_error(r, "GenericError",
		            "Job '%s' in state '%s' cannot accept command verb "
		            "'dismiss'",
		            j->id, j->status);
}

static void
cmd_query_jobs(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const struct fq_job *j;

	r->ret = json_object_new_array();
	for (j = fq->jobs; j != NULL; j = j->next) {
		struct json_object *o = json_object_new_object();
		int done = strcmp(j->status, "running") != 0;

		json_object_object_add(o, "current-progress", json_object_new_int64(done ? 1 : 0));
		json_object_object_add(o, "status", json_object_new_string(j->status));
		json_object_object_add(o, "total-progress", json_object_new_int64(1));
		json_object_object_add(o, "type", json_object_new_string("backup"));
		json_object_object_add(o, "id", json_object_new_string(j->id));
		json_object_array_add(r->ret, o);
	}
}

static void
cmd_getfd(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *name = jstr(args, "fdname");
	struct fq_fd *f;

	if (fq->pending_fd < 0) {
		reply_error(r, "GenericError", "No file descriptor supplied via SCM_RIGHTS");
		return;
	}
	if (name[0] >= '0' && name[0] <= '9') {
		close(fq->pending_fd);
		fq->pending_fd = -1;
		reply_error(r, "GenericError",
		            "Parameter 'fdname' expects a name not starting with a digit");
		return;
	}
	for (f = fq->fds; f != NULL; f = f->next) {
		if (strcmp(f->name, name) == 0) {
			close(f->fd);
			f->fd = fq->pending_fd;
			fq->pending_fd = -1;
			return;
		}
	}
	f = xcalloc(1, sizeof(*f));
	f->name = xstrdup(name);
	f->fd = fq->pending_fd;
	fq->pending_fd = -1;
	f->next = fq->fds;
	fq->fds = f;
}

static void
cmd_closefd(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *name = jstr(args, "fdname");
	struct fq_fd **pp, *f;

	for (pp = &fq->fds; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->name, name) == 0) {
			f = *pp;
			*pp = f->next;
			close(f->fd);
			free(f->name);
			free(f);
			return;
		}
	}
	reply_error(r, "GenericError", "File descriptor named '%s' not found", name);
}

/* add-fd: the descriptor that came with the command joins fdset-id (or a new set). */
static void
cmd_add_fd(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct json_object *v;
	struct fq_setfd *f;
	int64_t set = -1;

	if (fq->pending_fd < 0) {
		reply_error(r, "GenericError", "No file descriptor supplied via SCM_RIGHTS");
		return;
	}
	if (args != NULL && json_object_object_get_ex(args, "fdset-id", &v))
		set = json_object_get_int64(v);
	if (set < 0) {
		set = 0;
		for (f = fq->setfds; f != NULL; f = f->next)
			if (f->set >= set)
				set = f->set + 1;
	}
	f = xcalloc(1, sizeof(*f));
	f->set = set;
	f->fd = fq->pending_fd;
	fq->pending_fd = -1;
	f->opaque = xstrdup(args ? jstr(args, "opaque") : NULL);
	f->next = fq->setfds;
	fq->setfds = f;
	r->ret = json_object_new_object();
	json_object_object_add(r->ret, "fdset-id", json_object_new_int64(set));
	json_object_object_add(r->ret, "fd", json_object_new_int(f->fd));
}

/* remove-fd: a whole fdset, or one descriptor of it. */
static void
cmd_remove_fd(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	struct json_object *v;
	struct fq_setfd **pp, *f;
	int64_t set =
	    json_object_object_get_ex(args, "fdset-id", &v) ? json_object_get_int64(v) : -1;
	int fd = json_object_object_get_ex(args, "fd", &v) ? json_object_get_int(v) : -1;
	int found = 0;

	if (set < 0) {
		reply_error(r, "GenericError", "Parameter 'fdset-id' is missing");
		return;
	}

	for (pp = &fq->setfds; *pp != NULL;) {
		f = *pp;
		if (f->set == set && (fd < 0 || f->fd == fd)) {
			*pp = f->next;
			close(f->fd);
			free(f->opaque);
			free(f);
			found = 1;
			continue;
		}
		pp = &f->next;
	}
	if (!found)
		reply_error(r, "GenericError", "File descriptor named 'fdset-id:%lld' not found",
		            (long long)set);
}

static void
cmd_query_fdsets(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	r->ret = json_object_new_array();
	for (struct fq_setfd *f = fq->setfds; f != NULL; f = f->next) {
		struct json_object *set = NULL, *fds, *e;

		for (size_t i = 0; i < json_object_array_length(r->ret) && set == NULL; i++) {
			struct json_object *s = json_object_array_get_idx(r->ret, i), *id;

			if (json_object_object_get_ex(s, "fdset-id", &id) &&
			    json_object_get_int64(id) == f->set)
				set = s;
		}
		if (set == NULL) {
			set = json_object_new_object();
			json_object_object_add(set, "fdset-id", json_object_new_int64(f->set));
			json_object_object_add(set, "fds", json_object_new_array());
			json_object_array_add(r->ret, set);
		}
		json_object_object_get_ex(set, "fds", &fds);
		e = json_object_new_object();
		json_object_object_add(e, "fd", json_object_new_int(f->fd));
		if (f->opaque != NULL)
			json_object_object_add(e, "opaque", json_object_new_string(f->opaque));
		json_object_array_add(fds, e);
	}
}

/* Finds the device a QOM path names (/machine/peripheral/ID or .../peripheral-anon/device[N]). */
static struct fq_device *
device_by_path(struct fq *fq, const char *path)
{
	struct fq_device *d;

	for (d = fq->devices; d != NULL; d = d->next) {
		char *p = device_path(d);
		int match = strcmp(p, path) == 0;

		free(p);
		if (match)
			return d;
	}
	return NULL;
}

static void
add_prop(struct json_object *list, const char *name, const char *type)
{
	struct json_object *p = json_object_new_object();

	json_object_object_add(p, "name", json_object_new_string(name));
	json_object_object_add(p, "type", json_object_new_string(type));
	json_object_array_add(list, p);
}

/* qom-list of the bus a bridge provides (/machine/peripheral/ID/ID, as for a pcie-root-port):
 * one "child[N]" link per device on it, whether or not the firmware has numbered the bus. */
static int
bus_list(struct fq *fq, const char *path, struct fq_reply *r)
{
	const char *pre = "/machine/peripheral/", *id, *slash;
	struct fq_device *d;
	size_t n;
	int k = 0;

	if (strncmp(path, pre, strlen(pre)) != 0)
		return 0;
	id = path + strlen(pre);
	slash = strchr(id, '/');
	if (slash == NULL || strncmp(slash + 1, id, (size_t)(slash - id)) != 0 ||
	    strlen(slash + 1) != (size_t)(slash - id))
		return 0;
	n = (size_t)(slash - id);
	for (d = fq->devices; d != NULL; d = d->next)
		if (d->id != NULL && strlen(d->id) == n && strncmp(d->id, id, n) == 0)
			break;
	if (d == NULL)
		return 0;
	r->ret = json_object_new_array();
	add_prop(r->ret, "type", "string");
	add_prop(r->ret, "realized", "bool");
	for (d = fq->devices; d != NULL; d = d->next) {
		if (d->bus != NULL && strlen(d->bus) == n && strncmp(d->bus, id, n) == 0) {
			char *name = xasprintf("child[%d]", k++),
			     *type = xasprintf("link<%s>", d->driver);

			add_prop(r->ret, name, type);
			free(name);
			free(type);
		}
	}
	add_prop(r->ret, "hotplug-handler", "link<hotplug-handler>");
	return 1;
}

static void
cmd_qom_list(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *path = jstr(args, "path");
	int anon = strcmp(path, "/machine/peripheral-anon") == 0;
	struct fq_device *d;

	if (strcmp(path, "/machine/peripheral") == 0 || anon) {
		r->ret = json_object_new_array();
		add_prop(r->ret, "type", "string");
		for (d = fq->devices; d != NULL; d = d->next) {
			char *type = xasprintf("child<%s>", d->driver);

			if (anon && d->id == NULL) {
				char *name = xasprintf("device[%d]", d->anon);

				add_prop(r->ret, name, type);
				free(name);
			} else if (!anon && d->id != NULL) {
				add_prop(r->ret, d->id, type);
			}
			free(type);
		}
		return;
	}
	if (strcmp(path, "/machine") == 0) {
		r->ret = json_object_new_array();
		add_prop(r->ret, "type", "string");
		add_prop(r->ret, "peripheral", "child<container>");
		add_prop(r->ret, "peripheral-anon", "child<container>");
		add_prop(r->ret, "unattached", "child<container>");
		return;
	}
	d = device_by_path(fq, path);
	if (d == NULL && bus_list(fq, path, r))
		return;
	if (d == NULL) {
		reply_error(r, "DeviceNotFound", "Device '%s' not found", path);
		return;
	}
	r->ret = json_object_new_array();
	add_prop(r->ret, "type", "string");
	add_prop(r->ret, "parent_bus", "link<bus>");
	add_prop(r->ret, "realized", "bool");
	add_prop(r->ret, "hotplugged", "bool");
	add_prop(r->ret, "hotpluggable", "bool");
	if (d->pci)
		add_prop(r->ret, "addr", "int32");
}

static void
cmd_qom_get(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *path = jstr(args, "path"), *prop = jstr(args, "property");
	struct fq_device *d = device_by_path(fq, path);

	if (d == NULL) {
		reply_error(r, "DeviceNotFound", "Device '%s' not found", path);
		return;
	}
	if (strcmp(prop, "type") == 0) {
		r->ret = json_object_new_string(d->driver);
	} else if (strcmp(prop, "realized") == 0 || strcmp(prop, "hotpluggable") == 0) {
		r->ret = json_object_new_boolean(1);
	} else if (strcmp(prop, "hotplugged") == 0) {
		r->ret = json_object_new_boolean(d->hotplugged);
	} else if (strcmp(prop, "addr") == 0 && d->pci) {
		r->ret = json_object_new_int(d->slot << 3);
	} else if (strcmp(prop, "parent_bus") == 0) {
		char *bus;

		if (d->bus == NULL)
			bus = xstrdup("");
		else if (strcmp(d->bus, root_bus(fq)) == 0)
			bus = xasprintf("/machine/%s/%s", fq->q35 ? "q35" : "i440fx", d->bus);
		else if (d->pci)
			bus = xasprintf("/machine/peripheral/%s/%s", d->bus, d->bus);
		else
			bus = xasprintf("/machine/peripheral/%.*s/%s",
			                (int)(strrchr(d->bus, '.') - d->bus), d->bus, d->bus);
		r->ret = json_object_new_string(bus);
		free(bus);
	} else {
		reply_error(r, "GenericError", "Property '%s.%s' not found", d->driver, prop);
	}
}

static void
cmd_hmp(struct fq *fq, struct json_object *args, struct fq_reply *r)
{
	const char *line = jstr(args, "command-line");
	char *out;

	while (*line == ' ')
		line++;
	if (strcmp(line, "info status") == 0) {
		if (fq->status == FQ_RUNNING)
			out = xstrdup("VM status: running\r\n");
		else if (fq->status == FQ_PAUSED)
			out = xstrdup("VM status: paused\r\n");
		else
			out = xasprintf("VM status: paused (%s)\r\n", status_name(fq->status));
	} else if (strcmp(line, "info version") == 0) {
		out = xasprintf("%d.%d.%d%s\r\n", FQ_QEMU_MAJOR, FQ_QEMU_MINOR, FQ_QEMU_MICRO,
		                FQ_QEMU_PACKAGE);
	} else if (strcmp(line, "info name") == 0) {
		out = fq->name != NULL ? xasprintf("%s\r\n", fq->name) : xstrdup("");
	} else if (*line == '\0') {
		out = xstrdup("");
	} else {
		out = xasprintf("unknown command: '%.*s'\r\n", (int)strcspn(line, " "), line);
	}
	r->ret = json_object_new_string(out);
	free(out);
}

static const char *const fq_no_args[] = {NULL};
static const char *const fq_opt_caps[] = {"enable", NULL};
static const char *const fq_opt_flat[] = {"flat", NULL};
static const char *const fq_opt_hmp[] = {"cpu-index", NULL};
static const char *const fq_req_id[] = {"id", NULL};
static const char *const fq_req_driver[] = {"driver", NULL};
static const char *const fq_req_netdev[] = {"type", "id", NULL};
static const char *const fq_req_node[] = {"node-name", NULL};
static const char *const fq_req_fdname[] = {"fdname", NULL};
static const char *const fq_opt_add_fd[] = {"fdset-id", "opaque", NULL};
static const char *const fq_opt_remove_fd[] = {"fdset-id", "fd", NULL};
static const char *const fq_req_path[] = {"path", NULL};
static const char *const fq_req_qom_get[] = {"path", "property", NULL};
static const char *const fq_req_hmp[] = {"command-line", NULL};
static const char *const fq_req_bitmap[] = {"node", "name", NULL};
static const char *const fq_opt_bitmap_add[] = {"persistent", "granularity", "disabled", NULL};
static const char *const fq_req_backup[] = {"job-id", "device", "target", "sync", NULL};
static const char *const fq_opt_backup[] = {
    "bitmap", "bitmap-mode", "auto-finalize",   "auto-dismiss",    "x-perf",
    "speed",  "compress",    "on-source-error", "on-target-error", NULL};

/* The commands: required string arguments, other accepted arguments (NULL: anything). */
static const struct fq_cmd {
	const char *name;
	void (*fn)(struct fq *, struct json_object *, struct fq_reply *);
	const char *const *req;
	const char *const *opt;
} fq_cmds[] = {
    {"qmp_capabilities", cmd_capabilities, fq_no_args, fq_opt_caps},
    {"query-status", cmd_query_status, fq_no_args, fq_no_args},
    {"cont", cmd_cont, fq_no_args, fq_no_args},
    {"stop", cmd_stop, fq_no_args, fq_no_args},
    {"system_reset", cmd_system_reset, fq_no_args, fq_no_args},
    {"system_powerdown", cmd_system_powerdown, fq_no_args, fq_no_args},
    {"quit", cmd_quit, fq_no_args, fq_no_args},
    {"query-version", cmd_query_version, fq_no_args, fq_no_args},
    {"query-name", cmd_query_name, fq_no_args, fq_no_args},
    {"query-kvm", cmd_query_kvm, fq_no_args, fq_no_args},
    {"query-cpus-fast", cmd_query_cpus_fast, fq_no_args, fq_no_args},
    {"query-pci", cmd_query_pci, fq_no_args, fq_no_args},
    {"device_add", cmd_device_add, fq_req_driver, NULL},
    {"device_del", cmd_device_del, fq_req_id, fq_no_args},
    {"netdev_add", cmd_netdev_add, fq_req_netdev, NULL},
    {"netdev_del", cmd_netdev_del, fq_req_id, fq_no_args},
    {"blockdev-add", cmd_blockdev_add, fq_req_driver, NULL},
    {"blockdev-del", cmd_blockdev_del, fq_req_node, fq_no_args},
    {"query-named-block-nodes", cmd_query_named_block_nodes, fq_no_args, fq_opt_flat},
    {"block-dirty-bitmap-add", cmd_bitmap_add, fq_req_bitmap, fq_opt_bitmap_add},
    {"block-dirty-bitmap-remove", cmd_bitmap_remove, fq_req_bitmap, fq_no_args},
    {"blockdev-backup", cmd_blockdev_backup, fq_req_backup, fq_opt_backup},
    {"job-finalize", cmd_job_finalize, fq_req_id, fq_no_args},
    {"job-cancel", cmd_job_cancel, fq_req_id, fq_no_args},
    {"job-dismiss", cmd_job_dismiss, fq_req_id, fq_no_args},
    {"query-jobs", cmd_query_jobs, fq_no_args, fq_no_args},
    {"getfd", cmd_getfd, fq_req_fdname, fq_no_args},
    {"closefd", cmd_closefd, fq_req_fdname, fq_no_args},
    {"add-fd", cmd_add_fd, fq_no_args, fq_opt_add_fd},
    {"remove-fd", cmd_remove_fd, fq_no_args, fq_opt_remove_fd},
    {"query-fdsets", cmd_query_fdsets, fq_no_args, fq_no_args},
    {"qom-list", cmd_qom_list, fq_req_path, fq_no_args},
    {"qom-get", cmd_qom_get, fq_req_qom_get, fq_no_args},
    {"human-monitor-command", cmd_hmp, fq_req_hmp, fq_opt_hmp},
};

/* Checks arguments against a command's table entry, with QEMU's messages; 0 or -1 with r. */
static int
check_args(const struct fq_cmd *cmd, struct json_object *args, struct fq_reply *r)
{
	const char *const *p;

	if (args != NULL && cmd->opt != NULL) {
		json_object_object_foreach(args, key, val)
		{
			(void)val;
			if (!in_table(cmd->req, key) && !in_table(cmd->opt, key)) {
				reply_error(r, "GenericError", "Parameter '%s' is unexpected", key);
				return -1;
			}
		}
	}
	for (p = cmd->req; *p != NULL; p++) {
		struct json_object *v = NULL;

		if (args == NULL || !json_object_object_get_ex(args, *p, &v)) {
			reply_error(r, "GenericError", "Parameter '%s' is missing", *p);
			return -1;
		}
		if (!json_object_is_type(v, json_type_string)) {
			reply_error(r, "GenericError",
			            "Invalid parameter type for '%s', expected: string", *p);
			return -1;
		}
	}
	return 0;
}

static void
send_reply(struct fq *fq, struct json_object *id, struct fq_reply *r)
{
	struct json_object *msg = json_object_new_object();

	if (r->cls != NULL) {
		struct json_object *err = json_object_new_object();

		json_object_object_add(err, "class", json_object_new_string(r->cls));
		json_object_object_add(err, "desc", json_object_new_string(r->desc));
		json_object_object_add(msg, "error", err);
		json_object_put(r->ret);
	} else {
		json_object_object_add(msg, "return",
		                       r->ret != NULL ? r->ret : json_object_new_object());
	}
	if (id != NULL)
		json_object_object_add(msg, "id", json_object_get(id));
	out_json(fq, msg);
	json_object_put(msg);
	free(r->desc);
}

/* Executes one parsed input message. */
static void
handle_message(struct fq *fq, struct json_object *msg)
{
	struct fq_reply r = {0};
	struct json_object *id = NULL, *exec = NULL, *args = NULL;
	const struct fq_cmd *cmd = NULL;
	const char *name;
	size_t i;

	if (!json_object_is_type(msg, json_type_object)) {
		reply_error(&r, "GenericError", "QMP input must be a JSON object");
		send_reply(fq, NULL, &r);
		return;
	}
	json_object_object_get_ex(msg, "id", &id);
	json_object_object_foreach(msg, key, val)
	{
		(void)val;
		if (strcmp(key, "execute") != 0 && strcmp(key, "arguments") != 0 &&
		    strcmp(key, "id") != 0) {
			reply_error(&r, "GenericError", "QMP input member '%s' is unexpected", key);
			send_reply(fq, id, &r);
			return;
		}
	}
	if (!json_object_object_get_ex(msg, "execute", &exec)) {
		reply_error(&r, "GenericError", "QMP input lacks member 'execute'");
		send_reply(fq, id, &r);
		return;
	}
	if (!json_object_is_type(exec, json_type_string)) {
		reply_error(&r, "GenericError", "QMP input member 'execute' must be a string");
		send_reply(fq, id, &r);
		return;
	}
	if (json_object_object_get_ex(msg, "arguments", &args) &&
	    !json_object_is_type(args, json_type_object)) {
		reply_error(&r, "GenericError", "QMP input member 'arguments' must be an object");
		send_reply(fq, id, &r);
		return;
	}
	name = json_object_get_string(exec);
	if (in_list(fq->crash, name)) {
		fq_crash(fq);
		return;
	}
	if (in_list(fq->stall, name))
		return;
	if (in_list(fq->slow, name)) {
		struct timespec ts = {fq->slow_ms / 1000, (long)(fq->slow_ms % 1000) * 1000000L};

		fprintf(stderr, "fakeqemu: %s: slow\n", name);
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	for (i = 0; i < sizeof(fq_cmds) / sizeof(fq_cmds[0]); i++)
		if (strcmp(fq_cmds[i].name, name) == 0)
			cmd = &fq_cmds[i];
	if (!fq->negotiated && (cmd == NULL || cmd->fn != cmd_capabilities)) {
		reply_error(&r, "CommandNotFound",
		            "Expecting capabilities negotiation with 'qmp_capabilities'");
	} else if (fq->negotiated && cmd != NULL && cmd->fn == cmd_capabilities) {
		reply_error(&r, "CommandNotFound",
		            "Capabilities negotiation is already complete, command ignored");
	} else if (cmd == NULL) {
		reply_error(&r, "CommandNotFound", "The command %s has not been found", name);
	} else if (check_args(cmd, args, &r) == 0) {
		cmd->fn(fq, args, &r);
	}
	send_reply(fq, id, &r);
	if (in_list(fq->crash_after, name))
		fq_crash(fq);
}

/* ---- the QMP socket ---- */

static void
client_close(struct fq *fq)
{
	if (fq->client_fd < 0)
		return;
	close(fq->client_fd);
	fq->client_fd = -1;
	fq->negotiated = 0;
	fq->out_len = 0;
	free(fq->out);
	fq->out = NULL;
	fq->out_cap = 0;
	if (fq->pending_fd >= 0) {
		close(fq->pending_fd);
		fq->pending_fd = -1;
	}
	json_tokener_reset(fq->tok);
}

static void
client_accept(struct fq *fq)
{
	int fd = accept4(fq->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	fq->client_fd = fd;
	fq->negotiated = 0;
	json_tokener_reset(fq->tok);
	fq_send_greeting(fq);
}

/* Keeps the latest descriptor passed with SCM_RIGHTS for the next getfd. */
static void
take_fds(struct fq *fq, struct msghdr *mh)
{
	struct cmsghdr *c;

	for (c = CMSG_FIRSTHDR(mh); c != NULL; c = CMSG_NXTHDR(mh, c)) {
		size_t n, i;
		int fd;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < n; i++) {
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (fq->pending_fd >= 0)
				close(fq->pending_fd);
			fq->pending_fd = fd;
		}
	}
}

/* Reads what the client sent and executes every complete message in it. */
static void
client_read(struct fq *fq)
{
	char buf[4096];
	union {
		char buf[CMSG_SPACE(16 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;
	size_t off = 0;

	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	n = recvmsg(fq->client_fd, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_close(fq);
		return;
	}
	take_fds(fq, &mh);
	while (off < (size_t)n && fq->client_fd >= 0 && !fq->exiting) {
		struct json_object *msg =
		    json_tokener_parse_ex(fq->tok, buf + off, (int)((size_t)n - off));
		enum json_tokener_error err = json_tokener_get_error(fq->tok);
		size_t used = json_tokener_get_parse_end(fq->tok);

		if (msg != NULL) {
			off += used;
			handle_message(fq, msg);
			json_object_put(msg);
			continue;
		}
		if (err == json_tokener_continue)
			break;
		/* Like QEMU: report the error and resynchronise at the next line. */
		{
			struct fq_reply r = {0};
			const char *nl = memchr(buf + off + used, '\n', (size_t)n - off - used);

			reply_error(&r, "GenericError", "JSON parse error, %s",
			            json_tokener_error_desc(err));
			send_reply(fq, NULL, &r);
			json_tokener_reset(fq->tok);
			off = nl != NULL ? (size_t)(nl - buf) + 1 : (size_t)n;
		}
	}
	if (fq->exiting)
		fq_clean_exit(fq);
}

static int
listen_path(const char *path, char **err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		*err = xasprintf("UNIX socket path '%s' is too long", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = xasprintf("Failed to create socket: %s", strerror(errno));
		return -1;
	}
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 8) < 0) {
		*err = xasprintf("Failed to bind socket to %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Makes the monitor accept connections (after FAKEQEMU_STARTUP_DELAY_MS). */
static void
monitor_start(struct fq *fq)
{
	char *err = NULL;

	if (fq->qmp_path != NULL) {
		fq->listen_fd = listen_path(fq->qmp_path, &err);
		if (fq->listen_fd < 0) {
			fprintf(stderr, "%s: -qmp unix:%s: %s\n", fq->progname, fq->qmp_path, err);
			free(err);
			if (fq->pidfile != NULL)
				unlink(fq->pidfile);
			exit(1);
		}
	} else if (fq->qmp_inherited_fd >= 0) {
		fq->listen_fd = fq->qmp_inherited_fd;
	}
}

static void
fire_timer(struct fq *fq, struct fq_timer *t)
{
	struct fq_device *d;
	struct json_object *data;

	switch (t->kind) {
	case FQ_T_STARTUP:
		monitor_start(fq);
		break;
	case FQ_T_EXIT:
		fq_crash(fq);
		break;
	case FQ_T_POWERDOWN:
		/* A paused guest cannot react to the ACPI event yet: try again later. */
		if (fq->status != FQ_RUNNING) {
			timer_add(fq, FQ_T_POWERDOWN, fq->powerdown_delay_ms, NULL);
			break;
		}
		data = json_object_new_object();
		json_object_object_add(data, "guest", json_object_new_boolean(1));
		json_object_object_add(data, "reason", json_object_new_string("guest-shutdown"));
		fq_event(fq, "SHUTDOWN", data);
		if (!fq->no_shutdown) {
			fq_clean_exit(fq);
			break;
		}
		fq->status = FQ_SHUTDOWN;
		fq_event(fq, "STOP", NULL);
		break;
	case FQ_T_JOB:
		job_copied(fq, t->device);
		break;
	case FQ_T_UNPLUG:
		d = device_find(fq, t->device);
		if (d == NULL)
			break;
		if (d->pci && fq->status != FQ_RUNNING) {
			timer_add(fq, FQ_T_UNPLUG, fq->unplug_delay_ms, t->device);
			break;
		}
		device_remove(fq, d);
		break;
	}
}

static void
run_timers(struct fq *fq)
{
	int64_t now = now_ms();
	struct fq_timer **pp = &fq->timers, *t;

	while (*pp != NULL) {
		t = *pp;
		if (t->due_ms > now) {
			pp = &t->next;
			continue;
		}
		*pp = t->next;
		fire_timer(fq, t);
		free(t->device);
		free(t);
		pp = &fq->timers; /* firing may have added timers */
	}
}

static void
handle_signal(struct fq *fq, int sigfd)
{
	struct signalfd_siginfo si;
	struct json_object *data;

	if (read(sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	data = json_object_new_object();
	json_object_object_add(data, "guest", json_object_new_boolean(0));
	json_object_object_add(data, "reason", json_object_new_string("host-signal"));
	fq_event(fq, "SHUTDOWN", data);
	fq_clean_exit(fq);
}

static void __attribute__((noreturn)) main_loop(struct fq *fq, int sigfd)
{
	for (;;) {
		struct pollfd p[3];
		nfds_t n = 0;
		int listen_i = -1, client_i = -1, i;

		p[n++] = (struct pollfd){.fd = sigfd, .events = POLLIN};
		if (fq->client_fd >= 0) {
			client_i = (int)n;
			p[n++] = (struct pollfd){.fd = fq->client_fd,
			                         .events = POLLIN | (fq->out_len ? POLLOUT : 0)};
		} else if (fq->listen_fd >= 0) {
			listen_i = (int)n;
			p[n++] = (struct pollfd){.fd = fq->listen_fd, .events = POLLIN};
		}
		if (poll(p, n, timer_next_timeout(fq)) < 0 && errno != EINTR) {
			fprintf(stderr, "%s: poll: %s\n", fq->progname, strerror(errno));
			abort();
		}
		for (i = 0; i < (int)n; i++) {
			if (p[i].revents == 0)
				continue;
			if (i == 0)
				handle_signal(fq, sigfd);
			else if (i == listen_i)
				client_accept(fq);
			else if (i == client_i && (p[i].revents & POLLOUT))
				out_flush(fq);
			if (i == client_i && fq->client_fd >= 0 &&
			    (p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				client_read(fq);
		}
		run_timers(fq);
	}
}

/* ---- command line ---- */

/* Options without an argument; every other option is taken to have one. */
static const char *const fq_flag_options[] = {"-S",
                                              "-s",
                                              "-nodefaults",
                                              "-no-user-config",
                                              "-enable-kvm",
                                              "-no-shutdown",
                                              "-no-reboot",
                                              "-daemonize",
                                              "-snapshot",
                                              "-nographic",
                                              "-no-hpet",
                                              "-no-acpi",
                                              "-full-screen",
                                              "-win2k-hack",
                                              "-no-fd-bootchk",
                                              "-alt-grab",
                                              "-ctrl-grab",
                                              "-preconfig",
                                              "-only-migratable",
                                              "-singlestep",
                                              "-usb",
                                              "-curses",
                                              "-h",
                                              "-help",
                                              "-version",
                                              "-enable-fips",
                                              "-xen-attach",
                                              "-old-param",
                                              "-semihosting",
                                              "-nouserconfig",
                                              "-no-quit",
                                              "-perfmode",
                                              "-rtc-td-hack",
                                              "-no-kvm-pit-reinjection",
                                              "-no-kvm",
                                              "-no-frame",
                                              "-disable-kvm",
                                              "-fake-no-op",
                                              NULL};

/*
 * Parses QEMU's "key=value,key=value" syntax (",," is a literal comma) into a json object of
 * strings. A first item without '=' is the value of implied_key; a later "flag" means flag=on and
 * "noflag" flag=off.
 */
static struct json_object *
parse_keyval(const char *s, const char *implied_key)
{
	struct json_object *obj = json_object_new_object();
	char *item = xcalloc(1, strlen(s) + 1);
	int first = 1;

	while (*s != '\0') {
		size_t len = 0;
		char *eq;

		while (*s != '\0') {
			if (*s == ',' && s[1] == ',') {
				item[len++] = ',';
				s += 2;
			} else if (*s == ',') {
				s++;
				break;
			} else {
				item[len++] = *s++;
			}
		}
		item[len] = '\0';
		eq = strchr(item, '=');
		if (eq != NULL) {
			*eq = '\0';
			json_object_object_add(obj, item, json_object_new_string(eq + 1));
		} else if (first && implied_key != NULL) {
			json_object_object_add(obj, implied_key, json_object_new_string(item));
		} else if (strncmp(item, "no", 2) == 0 && item[2] != '\0') {
			json_object_object_add(obj, item + 2, json_object_new_string("off"));
		} else if (item[0] != '\0') {
			json_object_object_add(obj, item, json_object_new_string("on"));
		}
		first = 0;
	}
	free(item);
	return obj;
}

/* -device/-blockdev/-netdev take JSON when the value starts with '{', else key=value. */
static struct json_object *
parse_option_value(const char *s, const char *implied_key)
{
	if (s[0] == '{')
		return json_tokener_parse(s);
	return parse_keyval(s, implied_key);
}

static int
opt_true(struct json_object *o, const char *key)
{
	const char *v = jstr(o, key);

	return v != NULL && (strcmp(v, "on") == 0 || strcmp(v, "true") == 0 ||
	                     strcmp(v, "yes") == 0 || strcmp(v, "y") == 0);
}

static void __attribute__((noreturn))
startup_error(struct fq *fq, const char *opt, const char *value, const char *msg)
{
	fprintf(stderr, "%s: %s %s: %s\n", fq->progname, opt, value, msg);
	exit(1);
}

struct fq_chardev {
	char *id;
	int fd;
	char *path;
};

/* Interprets the command line; exits with status 1 on a definition QEMU would refuse. */
static void
parse_args(struct fq *fq, int argc, char **argv)
{
	struct fq_chardev chardevs[8];
	size_t nchardevs = 0, c;
	int i;

	for (i = 1; i < argc; i++) {
		const char *opt = argv[i], *val;
		struct json_object *o;
		struct fq_reply r = {0};

		if (opt[0] == '-' && opt[1] == '-')
			opt++;
		if (opt[0] != '-') /* a disk image as a bare argument */
			continue;
		if (strcmp(opt, "-version") == 0) {
			printf("QEMU emulator version %d.%d.%d (%s)\n", FQ_QEMU_MAJOR,
			       FQ_QEMU_MINOR, FQ_QEMU_MICRO, FQ_QEMU_PACKAGE);
			exit(0);
		}
		if (strcmp(opt, "-S") == 0) {
			fq->status = FQ_PRELAUNCH;
			continue;
		}
		if (strcmp(opt, "-no-shutdown") == 0) {
			fq->no_shutdown = 1;
			continue;
		}
		if (strcmp(opt, "-enable-kvm") == 0) {
			fq->kvm = 1;
			continue;
		}
		if (strcmp(opt, "-daemonize") == 0)
			startup_error(fq, opt, "", "not supported by fakeqemu");
		if (in_table(fq_flag_options, opt))
			continue;
		if (i + 1 >= argc) {
			fprintf(stderr, "%s: %s: requires an argument\n", fq->progname, opt);
			exit(1);
		}
		val = argv[++i];
		if (strcmp(opt, "-name") == 0) {
			o = parse_keyval(val, "guest");
			free(fq->name);
			fq->name = xstrdup(jstr(o, "guest"));
			json_object_put(o);
		} else if (strcmp(opt, "-pidfile") == 0) {
			free(fq->pidfile);
			fq->pidfile = xstrdup(val);
		} else if (strcmp(opt, "-machine") == 0 || strcmp(opt, "-M") == 0) {
			const char *type, *accel;

			o = parse_option_value(val, "type");
			if (o == NULL)
				startup_error(fq, opt, val, "invalid JSON");
			type = jstr(o, "type");
			accel = jstr(o, "accel");
			if (type != NULL)
				fq->q35 = strstr(type, "q35") != NULL;
			if (accel != NULL)
				fq->kvm = strncmp(accel, "kvm", 3) == 0;
			json_object_put(o);
		} else if (strcmp(opt, "-accel") == 0) {
			o = parse_option_value(val, "accel");
			fq->kvm = jstr(o, "accel") != NULL && strcmp(jstr(o, "accel"), "kvm") == 0;
			json_object_put(o);
		} else if (strcmp(opt, "-smp") == 0) {
			const char *cpus;

			o = parse_keyval(val, "cpus");
			cpus = jstr(o, "cpus");
			fq->cpus = cpus != NULL ? atoi(cpus) : 1;
			if (cpus == NULL && jstr(o, "sockets") != NULL)
				fq->cpus = atoi(jstr(o, "sockets"));
			if (fq->cpus < 1)
				fq->cpus = 1;
			json_object_put(o);
		} else if (strcmp(opt, "-qmp") == 0) {
			if (strncmp(val, "unix:", 5) != 0)
				startup_error(fq, opt, val, "only unix: sockets are supported");
			o = parse_keyval(val + 5, "path");
			if (!opt_true(o, "server"))
				startup_error(fq, opt, val, "only server sockets are supported");
			free(fq->qmp_path);
			fq->qmp_path = xstrdup(jstr(o, "path"));
			json_object_put(o);
		} else if (strcmp(opt, "-chardev") == 0) {
			o = parse_keyval(val, "backend");
			if (jstr(o, "backend") != NULL &&
			    strcmp(jstr(o, "backend"), "socket") == 0 && jstr(o, "id") != NULL &&
			    nchardevs < sizeof(chardevs) / sizeof(*chardevs)) {
				const char *fd = jstr(o, "fd");

				if (!opt_true(o, "server"))
					startup_error(fq, opt, val,
					              "only server sockets are supported");
				chardevs[nchardevs].id = xstrdup(jstr(o, "id"));
				chardevs[nchardevs].fd = fd != NULL ? atoi(fd) : -1;
				chardevs[nchardevs].path = xstrdup(jstr(o, "path"));
				nchardevs++;
			}
			json_object_put(o);
		} else if (strcmp(opt, "-mon") == 0) {
			o = parse_keyval(val, "chardev");
			if (jstr(o, "mode") != NULL && strcmp(jstr(o, "mode"), "control") == 0) {
				free(fq->qmp_chardev);
				fq->qmp_chardev = xstrdup(jstr(o, "chardev"));
			}
			json_object_put(o);
		} else if (strcmp(opt, "-device") == 0) {
			o = parse_option_value(val, "driver");
			if (o == NULL)
				startup_error(fq, opt, val, "invalid JSON");
			if (device_create(fq, o, 0, &r) < 0)
				startup_error(fq, opt, val, r.desc);
			json_object_put(o);
		} else if (strcmp(opt, "-blockdev") == 0) {
			char *name = NULL;

			o = parse_option_value(val, NULL);
			if (o == NULL)
				startup_error(fq, opt, val, "invalid JSON");
			if (node_create(fq, o, 1, &r, &name) < 0)
				startup_error(fq, opt, val, r.desc);
			free(name);
			json_object_put(o);
		} else if (strcmp(opt, "-add-fd") == 0) {
			/* fd=N,set=S[,opaque=TEXT]: an inherited descriptor joins fdset S. */
			struct fq_setfd *f = xcalloc(1, sizeof(*f));
			char *copy = xstrdup(val), *save = NULL;

			f->fd = -1;
			f->set = -1;
			for (char *kv = strtok_r(copy, ",", &save); kv;
			     kv = strtok_r(NULL, ",", &save)) {
				if (strncmp(kv, "fd=", 3) == 0)
					f->fd = atoi(kv + 3);
				else if (strncmp(kv, "set=", 4) == 0)
					f->set = atoll(kv + 4);
				else if (strncmp(kv, "opaque=", 7) == 0)
					f->opaque = xstrdup(kv + 7);
			}
			free(copy);
			if (f->fd < 0 || f->set < 0 || fcntl(f->fd, F_GETFD) < 0)
				startup_error(fq, opt, val,
				              "fd and set are required, fd must be open");
			f->next = fq->setfds;
			fq->setfds = f;
		} else if (strcmp(opt, "-netdev") == 0) {
			o = parse_option_value(val, "type");
			if (o == NULL)
				startup_error(fq, opt, val, "invalid JSON");
			if (netdev_create(fq, o, 0, &r) < 0)
				startup_error(fq, opt, val, r.desc);
			json_object_put(o);
		}
	}
	for (c = 0; c < nchardevs; c++) {
		if (fq->qmp_chardev != NULL && strcmp(chardevs[c].id, fq->qmp_chardev) == 0) {
			if (chardevs[c].fd >= 0) {
				int type = 0;
				socklen_t len = sizeof(type);

				if (getsockopt(chardevs[c].fd, SOL_SOCKET, SO_TYPE, &type, &len) <
				    0)
					startup_error(fq, "-chardev", chardevs[c].id,
					              strerror(errno));
				fcntl(chardevs[c].fd, F_SETFL,
				      fcntl(chardevs[c].fd, F_GETFL) | O_NONBLOCK);
				fcntl(chardevs[c].fd, F_SETFD, FD_CLOEXEC);
				fq->qmp_inherited_fd = chardevs[c].fd;
			} else if (chardevs[c].path != NULL) {
				free(fq->qmp_path);
				fq->qmp_path = xstrdup(chardevs[c].path);
			}
		}
		free(chardevs[c].id);
		free(chardevs[c].path);
	}
}

/*
 * Runs one greeting, negotiation and query-status through the real code over a socketpair before
 * the monitor opens: with thousands of instances, the page faults and symbol lookups of a first
 * exchange would otherwise land on the first client (a benchmark's timed phase).
 */
static void
warm_up(struct fq *fq)
{
	static const char msgs[] = "{\"execute\":\"qmp_capabilities\"}"
	                           "{\"execute\":\"query-status\",\"id\":1}";
	const char *crash = fq->crash, *stall = fq->stall, *slow = fq->slow,
	           *crash_after = fq->crash_after;
	char sink[1024];
	int sp[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) < 0)
		return;
	fq->crash = NULL;
	fq->stall = NULL;
	fq->slow = NULL;
	fq->crash_after = NULL;
	fq->client_fd = sp[0];
	fq_send_greeting(fq);
	if (write(sp[1], msgs, sizeof(msgs) - 1) == (ssize_t)sizeof(msgs) - 1)
		client_read(fq);
	while (read(sp[1], sink, sizeof(sink)) > 0)
		;
	client_close(fq);
	close(sp[1]);
	fq->crash = crash;
	fq->stall = stall;
	fq->slow = slow;
	fq->crash_after = crash_after;
}

/* Writes and locks the pidfile the way QEMU does; exits with status 1 if that fails. */
static void
write_pidfile(struct fq *fq)
{
	char buf[32];
	int n;

	fq->pidfd = open(fq->pidfile, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fq->pidfd < 0) {
		fprintf(stderr, "%s: cannot create PID file: %s\n", fq->progname, strerror(errno));
		exit(1);
	}
	if (lockf(fq->pidfd, F_TLOCK, 0) < 0) {
		fprintf(stderr, "%s: cannot create PID file: Cannot lock pid file: %s\n",
		        fq->progname, strerror(errno));
		exit(1);
	}
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (ftruncate(fq->pidfd, 0) < 0 || write(fq->pidfd, buf, (size_t)n) != n) {
		fprintf(stderr, "%s: cannot create PID file: %s\n", fq->progname, strerror(errno));
		exit(1);
	}
}

/* The defaults and the environment's switches, before the command line. */
static void
fq_init(struct fq *fq, const char *progname)
{
	*fq = (struct fq){
	    .progname = progname,
	    .pidfd = -1,
	    .qmp_inherited_fd = -1,
	    .listen_fd = -1,
	    .client_fd = -1,
	    .pending_fd = -1,
	    .status = FQ_RUNNING,
	    .cpus = 1,
	    .reg_fd = -1,
	};
	fq->tok = json_tokener_new();
	if (fq->tok == NULL)
		fatal("out of memory");
	fq->ignore_powerdown = env_int("FAKEQEMU_IGNORE_POWERDOWN", 0) != 0;
	fq->no_unplug = env_int("FAKEQEMU_NO_UNPLUG", 0) != 0;
	fq->powerdown_delay_ms = env_int("FAKEQEMU_POWERDOWN_DELAY_MS", 50);
	fq->unplug_delay_ms = env_int("FAKEQEMU_UNPLUG_DELAY_MS", 20);
	fq->stall = getenv("FAKEQEMU_STALL");
	fq->crash = getenv("FAKEQEMU_CRASH");
	fq->slow = getenv("FAKEQEMU_SLOW");
	fq->slow_ms = env_int("FAKEQEMU_SLOW_MS", 2000);
	fq->job_ms = env_int("FAKEQEMU_JOB_MS", 50);
	fq->job_bytes = env_int("FAKEQEMU_JOB_BYTES", 0);
	fq->crash_after = getenv("FAKEQEMU_CRASH_AFTER");
}

/* ---- serve mode: one process, many VMs ---- */

/*
 * fakeqemu --serve-dir DIR --count N [QEMU options]: N VMs in one single-threaded process, each
 * configured by the same QEMU options and each with its own QMP socket DIR/0.sock .. DIR/N-1.sock
 * (and its own run state, devices, timers and client), served from one epoll set. A VM behaves
 * like a fakeqemu of its own: the same greeting, commands, events and FAKEQEMU_* switches. Where
 * that QEMU would exit, the VM ends instead: quit, a guest poweroff or SIGTERM/SIGINT/SIGHUP
 * (which ends them all) close its sockets and remove its socket file; a crash on demand
 * (FAKEQEMU_CRASH, FAKEQEMU_EXIT_AFTER_MS) closes them and leaves the file. The process exits 0
 * once no VM is left. -pidfile names the process's pidfile; -qmp and -chardev/-mon are refused.
 * For scale benchmarks: thousands of QMP peers without thousands of processes to schedule.
 */
struct fq_server {
	struct fq *vms;
	int count;
	int epfd;
	int sigfd;
	char *pidfile; /* removed when the process exits */
};

/* Puts the VM's one descriptor (client, else listening socket) in the epoll set, or updates it. */
static void
serve_sync(struct fq_server *s, struct fq *fq)
{
	struct epoll_event ev = {.data.ptr = fq};
	int fd = -1;

	if (!fq->ended && fq->client_fd >= 0) {
		fd = fq->client_fd;
		ev.events = EPOLLIN | (fq->out_len > 0 ? EPOLLOUT : 0);
	} else if (!fq->ended && fq->listen_fd >= 0) {
		fd = fq->listen_fd; /* like QEMU: nobody else is accepted while a client is there */
		ev.events = EPOLLIN;
	}
	if (fd == fq->reg_fd && (fd < 0 || ev.events == fq->reg_events))
		return;
	if (fd >= 0 && fd == fq->reg_fd) {
		if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 && errno == ENOENT &&
		    epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			goto fail;
	} else {
		/*
		 * A client socket that is no longer the VM's was closed, which took it out of the
		 * set; a listening socket is still open while a client is connected.
		 */
		if (fq->reg_fd >= 0 && fq->reg_fd == fq->listen_fd)
			epoll_ctl(s->epfd, EPOLL_CTL_DEL, fq->reg_fd, NULL);
		if (fd >= 0 && epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			goto fail;
	}
	fq->reg_fd = fd;
	fq->reg_events = ev.events;
	return;
fail:
	fprintf(stderr, "%s: epoll_ctl: %s\n", fq->progname, strerror(errno));
	abort();
}

static void __attribute__((noreturn)) serve_exit(struct fq_server *s)
{
	if (s->pidfile != NULL)
		unlink(s->pidfile);
	exit(0);
}

/* SIGTERM, SIGINT, SIGHUP: every VM says SHUTDOWN (host-signal) and ends; the process exits. */
static void
serve_signal(struct fq_server *s)
{
	struct signalfd_siginfo si;
	int i;

	if (read(s->sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	for (i = 0; i < s->count; i++) {
		struct fq *fq = &s->vms[i];
		struct json_object *data;

		if (fq->ended)
			continue;
		data = json_object_new_object();
		json_object_object_add(data, "guest", json_object_new_boolean(0));
		json_object_object_add(data, "reason", json_object_new_string("host-signal"));
		fq_event(fq, "SHUTDOWN", data);
		fq_clean_exit(fq);
	}
	serve_exit(s);
}

/* One VM's descriptor is ready: the same handling as main_loop's. */
static void
serve_event(struct fq *fq, uint32_t events)
{
	if (fq->ended)
		return;
	if (fq->reg_fd == fq->listen_fd && fq->client_fd < 0) {
		client_accept(fq);
		return;
	}
	if (events & EPOLLOUT)
		out_flush(fq);
	if (fq->client_fd >= 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		client_read(fq);
}

static void __attribute__((noreturn)) serve_loop(struct fq_server *s)
{
	struct epoll_event evs[256];

	for (;;) {
		int timeout = -1, live = 0, n, i;

		for (i = 0; i < s->count; i++) {
			struct fq *fq = &s->vms[i];

			if (fq->ended)
				continue;
			live++;
			if (fq->timers != NULL) {
				int t = timer_next_timeout(fq);

				if (timeout < 0 || t < timeout)
					timeout = t;
			}
		}
		if (live == 0)
			serve_exit(s);
		n = epoll_wait(s->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "%s: epoll_wait: %s\n", s->vms[0].progname,
			        strerror(errno));
			abort();
		}
		for (i = 0; i < n; i++) {
			struct fq *fq = evs[i].data.ptr;

			if (fq == NULL) {
				serve_signal(s);
				continue;
			}
			serve_event(fq, evs[i].events);
			serve_sync(s, fq);
		}
		for (i = 0; i < s->count; i++) {
			if (s->vms[i].timers != NULL) {
				run_timers(&s->vms[i]);
				serve_sync(s, &s->vms[i]);
			}
		}
	}
}

/* Sets up count VMs from the same command line, each listening on DIR/I.sock, and serves them. */
static void __attribute__((noreturn))
serve_main(const char *progname, const char *dir, int count, int argc, char **argv, int sigfd)
{
	struct fq_server s = {.count = count, .sigfd = sigfd};
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	struct rlimit rl;
	int startup_delay = env_int("FAKEQEMU_STARTUP_DELAY_MS", 0);
	int exit_after = env_int("FAKEQEMU_EXIT_AFTER_MS", -1);
	rlim_t need = (rlim_t)count * 2 + 32;
	int i;

	/* A listening socket and a client per VM. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
		rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
		fprintf(stderr, "%s: --count %d needs %llu open files, the limit is %llu\n",
		        progname, count, (unsigned long long)need, (unsigned long long)rl.rlim_cur);
		exit(1);
	}
	s.vms = xcalloc((size_t)count, sizeof(*s.vms));
	for (i = 0; i < count; i++) {
		struct fq *fq = &s.vms[i];

		fq_init(fq, progname);
		parse_args(fq, argc, argv);
		if (fq->qmp_path != NULL || fq->qmp_chardev != NULL) {
			fprintf(stderr,
			        "%s: --serve-dir creates the QMP sockets: no -qmp or -mon\n",
			        progname);
			exit(1);
		}
		if (fq->status == FQ_RUNNING)
			fq->has_run = 1;
		fq->serve = 1;
		fq->qmp_path = xasprintf("%s/%d.sock", dir, i);
		if (i > 0) { /* the process has one pidfile, written once, removed by serve_exit */
			free(fq->pidfile);
			fq->pidfile = s.vms[0].pidfile;
		}
	}
	s.pidfile = s.vms[0].pidfile;
	if (s.pidfile != NULL)
		write_pidfile(&s.vms[0]);
	warm_up(&s.vms[0]);
	s.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s.epfd < 0 || epoll_ctl(s.epfd, EPOLL_CTL_ADD, sigfd, &ev) < 0) {
		fprintf(stderr, "%s: epoll: %s\n", progname, strerror(errno));
		exit(1);
	}
	for (i = 0; i < count; i++) {
		struct fq *fq = &s.vms[i];

		if (exit_after >= 0)
			timer_add(fq, FQ_T_EXIT, exit_after, NULL);
		if (startup_delay > 0)
			timer_add(fq, FQ_T_STARTUP, startup_delay, NULL);
		else
			monitor_start(fq);
		serve_sync(&s, fq);
	}
	serve_loop(&s);
}

int
main(int argc, char **argv)
{
	struct fq fq;
	struct rlimit no_core = {0, 0};
	sigset_t mask;
	int sigfd, startup_delay, exit_after, i, serve_count = -1;
	const char *slash = strrchr(argv[0], '/'), *serve_dir = NULL;

	/* Crashes on demand must not litter the disk with thousands of core files. */
	setrlimit(RLIMIT_CORE, &no_core);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sigfd < 0) {
		perror("fakeqemu: signalfd");
		return 1;
	}
	/* parse_args skips these two (unknown options with an argument). */
	for (i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], "--serve-dir") == 0)
			serve_dir = argv[++i];
		else if (strcmp(argv[i], "--count") == 0)
			serve_count = atoi(argv[++i]);
	}
	if (serve_dir != NULL) {
		if (serve_count < 1) {
			fprintf(stderr, "fakeqemu: --serve-dir needs --count N (N >= 1)\n");
			return 1;
		}
		serve_main(slash != NULL ? slash + 1 : argv[0], serve_dir, serve_count, argc, argv,
		           sigfd);
	}
	fq_init(&fq, slash != NULL ? slash + 1 : argv[0]);
	startup_delay = env_int("FAKEQEMU_STARTUP_DELAY_MS", 0);
	exit_after = env_int("FAKEQEMU_EXIT_AFTER_MS", -1);

	parse_args(&fq, argc, argv);
	if (fq.status == FQ_RUNNING)
		fq.has_run = 1;
	if (fq.qmp_path == NULL && fq.qmp_inherited_fd < 0) {
		fprintf(stderr, "%s: no QMP monitor (-qmp or -chardev + -mon mode=control)\n",
		        fq.progname);
		return 1;
	}
	if (fq.pidfile != NULL)
		write_pidfile(&fq);
	warm_up(&fq);
	if (exit_after >= 0)
		timer_add(&fq, FQ_T_EXIT, exit_after, NULL);
	if (startup_delay > 0)
		timer_add(&fq, FQ_T_STARTUP, startup_delay, NULL);
	else
		monitor_start(&fq);
	main_loop(&fq, sigfd);
}
