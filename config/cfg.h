/*
 * config/: VM definitions (one INI file per VM) and the daemon's own file (qvmd.conf), turned into
 * validated values, and single device sections written back atomically. Knows nothing of QMP or
 * processes.
 */
#ifndef QVMD_CFG_H
#define QVMD_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * VM names: [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}, not starting with "qvmd." (CFG_NAME_RESERVED): a name
 * is a directory in run_dir beside qvmd's own qvmd.sock and qvmd.lock, and an argument of qvmctl,
 * where a leading '-' would read as an option.
 */
#define CFG_NAME_MAX      63
#define CFG_NAME_RESERVED "qvmd."
#define CFG_ID_MAX        24 /* device ids: [a-zA-Z][a-zA-Z0-9_-]{0,23} (QEMU node-names are <= 31) */
/* Cold-plugged devices + hotplug_slots of one VM (q35 root ports; the same as ARGV_MAX_PORTS). */
#define CFG_PORTS_MAX 28
/* Bounds on what one configuration file may hold (each gives a "file:line:" error). */
#define CFG_FILE_MAX     (1024 * 1024) /* bytes in a definition or qvmd.conf */
#define CFG_SECTIONS_MAX 64            /* sections in one file (a VM has at most 1 + 28) */
#define CFG_KEYS_MAX     64            /* key = value lines in one section */
#define CFG_ERRORS_MAX   100           /* errors listed for one file; the rest are counted */
/* shutdown_timeout of a definition and every timeout of a powerdown or detach request (ms). */
#define CFG_SHUTDOWN_TIMEOUT_MIN_MS 1000ULL
#define CFG_SHUTDOWN_TIMEOUT_MAX_MS (3600ULL * 1000)
/* Sizes of a [disk] image (size = and attach-disk --create). */
#define CFG_DISK_SIZE_MIN      (1ULL << 20)
#define CFG_DISK_SIZE_MAX      (64ULL << 40)
#define CFG_DISK_SIZE_MULTIPLE 512
/* qvmd.conf's usual place: cfg_daemon_load() with this path and no such file means defaults. */
#define CFG_DAEMON_CONF_DEFAULT "/etc/qvmd/qvmd.conf"
#define CFG_RUN_DIR_DEFAULT     "/run/qvmd"
/* The control socket unless qvmd.conf says otherwise: run_dir's qvmd.sock. */
#define CFG_CONTROL_SOCKET_NAME    "qvmd.sock"
#define CFG_CONTROL_SOCKET_DEFAULT CFG_RUN_DIR_DEFAULT "/" CFG_CONTROL_SOCKET_NAME

/* A list of error messages, each already formatted as "file:line: section: key: what is wrong". */
struct cfg_errors {
	char **msgs;
	size_t n;
	size_t cap;
};

void cfg_errors_init(struct cfg_errors *errs);
void cfg_errors_free(struct cfg_errors *errs);
/* Appends one message (printf-style). */
void cfg_errors_add(struct cfg_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

enum cfg_machine { CFG_MACHINE_Q35, CFG_MACHINE_PC };
enum cfg_accel { CFG_ACCEL_KVM, CFG_ACCEL_TCG };
enum cfg_firmware { CFG_FIRMWARE_BIOS, CFG_FIRMWARE_UEFI };
enum cfg_restart { CFG_RESTART_NO, CFG_RESTART_ON_FAILURE, CFG_RESTART_ALWAYS };
enum cfg_console { CFG_CONSOLE_LOG, CFG_CONSOLE_NONE };
enum cfg_format { CFG_FORMAT_QCOW2, CFG_FORMAT_RAW };
enum cfg_cache {
	CFG_CACHE_NONE,
	CFG_CACHE_WRITEBACK,
	CFG_CACHE_WRITETHROUGH,
	CFG_CACHE_DIRECTSYNC,
	CFG_CACHE_UNSAFE
};
enum cfg_net_type { CFG_NET_USER, CFG_NET_TAP, CFG_NET_BRIDGE };
/* How a disk reaches the guest: virtio-blk (a PCI(e) device, hot-pluggable), or the machine's
 * own SATA/IDE controller (q35: ICH9 AHCI, pc: PIIX IDE; drivers in every OS, never hot-plugged).
 */
enum cfg_disk_bus { CFG_BUS_VIRTIO, CFG_BUS_SATA };
/* The NIC the guest sees: virtio-net-pci, e1000 (Intel 82540EM) or e1000e (Intel 82574L). */
enum cfg_net_model { CFG_NET_MODEL_VIRTIO, CFG_NET_MODEL_E1000, CFG_NET_MODEL_E1000E };
/* [vm] display: none, or the standard VGA device with a VNC server that has no listening socket
 * of its own; qvmd accepts on <run_dir>/NAME/vnc.sock and hands each client to QEMU. */
enum cfg_display { CFG_DISPLAY_NONE, CFG_DISPLAY_VNC };
/* SATA/IDE positions shared by bus = sata disks and cdroms: q35's AHCI has 6 ports (ide.0 ..
 * ide.5), pc's IDE 2 buses of 2 units (ide.0/ide.1, unit 0/1). */
#define CFG_SATA_MAX_Q35 6
#define CFG_SATA_MAX_PC  4
/* What `apply` does with a changed device section on a running VM: leave the change pending until
 * the next start (the default), or replace the device live (unplug, then plug the new one). */
enum cfg_apply { CFG_APPLY_PENDING, CFG_APPLY_REPLACE };

/* A [disk ID] section. */
struct cfg_disk {
	char *id;
	char *file;
	enum cfg_format format;
	uint64_t size; /* bytes; 0 = not given (never create) */
	bool readonly;
	enum cfg_cache cache;
	bool boot;
	enum cfg_disk_bus bus; /* virtio */
	enum cfg_apply apply;  /* how `apply` changes it (cfg_diff ignores it, cfg_*_equal not) */
	int line;              /* line of the section header, 0 when not from a file */
};

/* A [net ID] section. */
struct cfg_net {
	char *id;
	enum cfg_net_type type;
	uint8_t mac[6]; /* always set: given, or derived with cfg_mac_derive */
	bool mac_given;
	char *bridge; /* type = bridge */
	char *ifname; /* type = tap (required), bridge (optional tap name) */
	bool
	    restricted; /* type = user: restrict = yes isolates the guest from the host's network */
	enum cfg_net_model model; /* virtio */
	enum cfg_apply apply;
	int line;
};

/* A [cdrom ID] section: a read-only optical drive (ide-cd) on the SATA/IDE controller. */
struct cfg_cdrom {
	char *id;
	char *file; /* the medium (an ISO image); NULL: an empty drive */
	bool boot;  /* in the boot order after the disks that say boot = yes (a blank disk falls
	               through to the installer; an installed one boots itself) */
	int line;
};

/* One validated VM definition. */
struct vm_config {
	char *path; /* the file it came from */
	char *name;
	uint64_t memory; /* bytes */
	unsigned vcpus;
	enum cfg_machine machine;
	enum cfg_accel accel;
	char *cpu;              /* NULL: QEMU's default */
	unsigned hotplug_slots; /* q35 spare pcie-root-ports */
	char *kernel, *initrd, *append;
	enum cfg_firmware firmware;
	uint64_t shutdown_timeout_ms;
	enum cfg_restart restart;
	unsigned restart_limit; /* attempts before staying crashed */
	bool autostart;
	enum cfg_console console;
	enum cfg_display display; /* none */
	struct cfg_disk *disks;
	size_t ndisks;
	struct cfg_net *nets;
	size_t nnets;
	struct cfg_cdrom *cdroms;
	size_t ncdroms;
};

/*
 * Reads a whole configuration file (a definition or qvmd.conf) without ever blocking: it is opened
 * O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_NOCTTY and then must be a regular file (a symlink to one is
 * fine) of at most max bytes. Returns the text, NUL-terminated and owned by the caller, with its
 * length in *len (may be NULL; the text may hold NUL bytes); or NULL with *cause, e.g.
 * "PATH: not a regular file" or "PATH: too large (more than 1048576 bytes)".
 */
char *cfg_read_file(const char *path, size_t max, size_t *len, char **cause);

/*
 * Loads and validates one VM definition. The VM name must match the file's base name without
 * ".ini". Every problem in the file is appended to errs; returns NULL if there was any.
 */
struct vm_config *cfg_vm_load(const char *path, struct cfg_errors *errs);
void cfg_vm_free(struct vm_config *vm);
/* A deep copy (never NULL: fatal on out-of-memory). */
struct vm_config *cfg_vm_dup(const struct vm_config *vm);
/* Whether two definitions (or device sections) mean the same: comments, key order, the spelling
 * of values, line numbers and the file's path do not count (cfg_compare.c). */
bool cfg_vm_equal(const struct vm_config *a, const struct vm_config *b);
bool cfg_disk_equal(const struct cfg_disk *a, const struct cfg_disk *b);
bool cfg_net_equal(const struct cfg_net *a, const struct cfg_net *b);
/* Deep copies of one device's section (dst's previous contents are not freed), and freeing what a
 * copy owns (the struct itself stays; its pointers become NULL). */
void cfg_disk_copy(struct cfg_disk *dst, const struct cfg_disk *src);
void cfg_disk_clear(struct cfg_disk *disk);
void cfg_net_copy(struct cfg_net *dst, const struct cfg_net *src);
void cfg_net_clear(struct cfg_net *net);
void cfg_cdrom_copy(struct cfg_cdrom *dst, const struct cfg_cdrom *src);
void cfg_cdrom_clear(struct cfg_cdrom *cdrom);
bool cfg_cdrom_equal(const struct cfg_cdrom *a, const struct cfg_cdrom *b);
const struct cfg_disk *cfg_vm_disk(const struct vm_config *vm, const char *id);
const struct cfg_net *cfg_vm_net(const struct vm_config *vm, const char *id);
const struct cfg_cdrom *cfg_vm_cdrom(const struct vm_config *vm, const char *id);

/*
 * A whole definition as the text an operator would write (cfg_write.c), for `qvmctl create`:
 * header (may be NULL) as '#' comment lines, then [vm] with the keys that differ from their
 * defaults (name and memory always), then every [disk], [net] and [cdrom] section. The text reads
 * back (cfg_vm_load_text) as an equal definition. Caller frees.
 */
char *cfg_vm_format(const struct vm_config *vm, const char *header);
/*
 * Writes a new definition file: refuses when path exists; the text must load without errors
 * (every error in *cause, "PATH:LINE: ..." lines); atomic (temp file in the same directory,
 * fsync, link to path so an existing file is never replaced, fsync of the directory), mode 0644.
 * Returns 0, or -1 with *cause.
 */
int cfg_write_create(const char *path, const char *text, char **cause);

/*
 * OS variants for `qvmctl create --os-variant` (cfg_variant.c): the defaults a variant picks
 * for devices the guest's OS can drive without extra drivers.
 */
struct cfg_variant {
	const char *name;    /* "linux", "windows", "generic" */
	const char *summary; /* one line for `qvmctl help create` and the man page */
	enum cfg_disk_bus bus;
	enum cfg_net_model model_q35, model_pc;
	enum cfg_display display;
};
/* The table (never empty) and its length; a name's entry or NULL. */
const struct cfg_variant *cfg_variants(size_t *n);
const struct cfg_variant *cfg_variant_find(const char *name);

/*
 * The difference between what runs and what a file says (cfg_diff.c), for `apply` and `diff`:
 * one change per [vm] key, and per device section added, removed or changed. Only meaning counts
 * (cfg_vm_equal's rules); besides, a disk's size (used only to create its image), a NIC's
 * mac_given (a derived MAC and the same one written down are one MAC), `apply` and `autostart`
 * (which concern no running VM) are no change.
 */
enum cfg_change_action {
	CFG_CHANGE_ADD,     /* a device section the running VM lacks */
	CFG_CHANGE_REMOVE,  /* a device the file no longer has */
	CFG_CHANGE_REPLACE, /* a changed device section that says apply = replace */
	CFG_CHANGE_CHANGE,  /* a changed [vm] key or device that only a restart can apply */
};
struct cfg_change {
	enum cfg_change_action action;
	bool live;      /* can be applied to the running VM (else pending until it restarts) */
	char *what;     /* "memory", "disk data2", "net lan0" */
	char *old_text; /* "1G"; a device: its keys as "file=/x format=raw"; NULL: absent */
	char *new_text;
	char *reason; /* !live: why it waits, e.g. "restart needed" */
	/* Device changes: the sections concerned, borrowed from the definitions compared. */
	const struct cfg_disk *old_disk, *new_disk;
	const struct cfg_net *old_net, *new_net;
};
struct cfg_diff {
	struct cfg_change *v;
	size_t n;
};
/*
 * Lists what differs from running (what the VM runs with: its start-time definition with its
 * devices as they are now) to file: [vm] keys in schema order, then removed, changed and added
 * devices. diff borrows both definitions' sections: it is valid while they are.
 */
void cfg_diff_vm(const struct vm_config *running, const struct vm_config *file,
                 struct cfg_diff *diff);
void cfg_diff_free(struct cfg_diff *diff);
const char *cfg_change_action_name(enum cfg_change_action a); /* "add", "remove" ... */

/* The daemon's own settings, section [qvmd] of qvmd.conf. */
enum cfg_log_level { CFG_LOG_ERROR, CFG_LOG_WARNING, CFG_LOG_INFO, CFG_LOG_DEBUG };
enum cfg_on_stop { CFG_ON_STOP_LEAVE, CFG_ON_STOP_POWERDOWN };
/* Who may send raw QMP (the qmp command): root and qvmd's user only, or socket_group too. */
enum cfg_qmp_passthrough { CFG_QMP_PASSTHROUGH_ROOT, CFG_QMP_PASSTHROUGH_GROUP };
#define CFG_QEMU_UID_FIRST 200000u /* qemu_uid_range's default */
#define CFG_QEMU_UID_LAST  299999u
#define CFG_QEMU_UID_MAX   4294967294u /* (uid_t)-1 means "no change" to the kernel */

struct daemon_config {
	char *path;           /* NULL when only defaults are used */
	char *vm_dir;         /* /etc/qvmd/vms */
	char *run_dir;        /* /run/qvmd */
	char *state_dir;      /* /var/lib/qvmd */
	char *control_socket; /* <run_dir>/qvmd.sock */
	char *socket_group;   /* NULL: no group change */
	char *qemu;           /* /usr/bin/qemu-system-x86_64 */
	char *qemu_img;       /* /usr/bin/qemu-img */
	char *ovmf_code;      /* /usr/share/OVMF/OVMF_CODE_4M.fd */
	char *ovmf_vars;      /* /usr/share/OVMF/OVMF_VARS_4M.fd (template, copied per VM) */
	char **image_dirs;    /* NULL-terminated; hot-plugged images must be below one; default
	                         state_dir */
	char *backup_dir;     /* <state_dir>/backups: where backups go (NAME/ID/) by default */
	enum cfg_log_level log_level;
	enum cfg_on_stop on_daemon_stop;
	enum cfg_qmp_passthrough qmp_passthrough; /* root */
	bool auto_apply; /* reload applies each running VM's changed definition (no) */
	/* Whom each QEMU runs as: per-VM uids (gid = uid) from qemu_uid_first..qemu_uid_last
	 * (200000-299999), or qemu_user (NULL: the range) for every QEMU. */
	char *qemu_uid_range; /* the text as written; the numbers below are derived from it */
	unsigned qemu_uid_first, qemu_uid_last;
	char *qemu_user;
	/* console.log is rotated (to console.log.1) once it is larger than this (16M). */
	uint64_t console_log_max;
};
#define CFG_CONSOLE_LOG_MAX_DEFAULT (16ull * 1024 * 1024)
#define CFG_CONSOLE_LOG_MAX_MIN     (4ull * 1024)

/*
 * Loads qvmd.conf. path NULL: defaults only. A missing file at the default path is not an error.
 * Returns 0, or -1 with every problem in errs.
 */
int cfg_daemon_load(const char *path, struct daemon_config *out, struct cfg_errors *errs);
void cfg_daemon_free(struct daemon_config *conf);

/*
 * Whole-section checks of a filled [disk] / [net] (the values and the rules across keys, e.g.
 * restrict only with type = user, tap needs ifname), the same the loader applies to a file. For
 * devices that do not come from a file (qvmctl, the control server, cfg_write_add_*). Returns 0,
 * or -1 with *cause, e.g. "[net lan0] restrict: only for type = user (this NIC is type = tap)".
 * net->mac is checked only when mac_given.
 */
int cfg_disk_check(const struct cfg_disk *disk, char **cause);
int cfg_net_check(const struct cfg_net *net, char **cause);

/*
 * A timeout for stopping a VM (--timeout of powerdown and detach, shutdown_timeout): a duration in
 * cfg_parse_duration's syntax within CFG_SHUTDOWN_TIMEOUT_MIN_MS..MAX_MS. Returns 0, or -1 with
 * *cause, e.g. "'2h' is out of range (1s..1h)".
 */
int cfg_parse_timeout(const char *s, uint64_t *ms, char **cause);

/* Value parsers shared with the CLI. Each returns 0, or -1 if the text is not a valid value. */
int cfg_parse_size(const char *text, uint64_t *bytes);  /* 1024, 512K, 512M, 1G, 2T */
int cfg_parse_duration(const char *text, uint64_t *ms); /* 90, 90s, 500ms, 5m, 1h */
int cfg_parse_bool(const char *text, bool *value);      /* yes/no true/false on/off 1/0 */
int cfg_parse_mac(const char *text, uint8_t mac[6]);    /* 52:54:00:89:ba:6f, unicast only */
void cfg_mac_derive(const char *vm, const char *id, uint8_t mac[6]); /* stable, 52:54:00:xx:xx:xx */
void cfg_mac_format(const uint8_t mac[6], char out[18]);
bool cfg_valid_name(const char *name);
/* Why name is not a valid VM name ("'-x' is not a valid name (...)", allocated), or NULL. */
char *cfg_name_problem(const char *name);
bool cfg_valid_device_id(const char *id);
const char *cfg_format_name(enum cfg_format f);
const char *cfg_cache_name(enum cfg_cache c);
const char *cfg_net_type_name(enum cfg_net_type t);
int cfg_format_parse(const char *text, enum cfg_format *f);
int cfg_cache_parse(const char *text, enum cfg_cache *c);
int cfg_net_type_parse(const char *text, enum cfg_net_type *t);
const char *cfg_disk_bus_name(enum cfg_disk_bus b);   /* "virtio", "sata" */
const char *cfg_net_model_name(enum cfg_net_model m); /* "virtio", "e1000", "e1000e" */
const char *cfg_display_name(enum cfg_display d);     /* "none", "vnc" */

/*
 * Writer for --persist: adds one [disk ID] / [net ID] section at the end of a definition, or
 * removes one, keeping every other line (comments, order, spacing) byte for byte. Atomic: a temp
 * file in the same directory, fsync, rename, fsync of the directory. Refuses to add an id that is
 * present or to remove one that is absent. Returns 0, or -1 with *cause.
 */
int cfg_write_add_disk(const char *path, const struct cfg_disk *disk, char **cause);
int cfg_write_add_net(const char *path, const struct cfg_net *net, char **cause);
int cfg_write_remove_device(const char *path, const char *id, char **cause);
/*
 * Writer for media --persist: sets the medium of [cdrom id] (file: an absolute path without ',';
 * NULL: an empty drive) by replacing its file line in place, adding one right below the header, or
 * removing it; every other byte stays. Atomic, as above; a file that already says so is left as it
 * is. Refuses a missing section ("PATH: [cdrom ID]: no such section") and a value the loader would
 * refuse or read differently. Returns 0, or -1 with *cause.
 */
int cfg_write_cdrom_medium(const char *path, const char *id, const char *file, char **cause);

#endif
