/*
 * supervisor/qvmd/argv: a pure function from a VM definition to the QEMU argument vector. No I/O.
 * Devices, drives and netdevs are passed in QEMU's JSON syntax built with json-c, so no config
 * value can inject options.
 */
#ifndef QVMD_ARGV_H
#define QVMD_ARGV_H

#include "cfg.h"

/*
 * One disk image as QEMU gets it: an fdset (QEMU's "file" driver opens "/dev/fdset/SET" by taking
 * a duplicate of the set's descriptor whose access mode it needs). A writable image's set holds an
 * O_RDWR and an O_RDONLY descriptor (QEMU reopens images read-only, e.g. for block jobs), a
 * read-only image's only an O_RDONLY one.
 */
struct argv_image {
	long long set;          /* fdset id */
	int fd_rw;              /* at spawn: the O_RDWR descriptor, -1 when used read-only */
	int fd_ro;              /* at spawn: the O_RDONLY descriptor */
	enum cfg_format format; /* [0]: the disk's own format */
};

/* A disk's images: [0] its own, [1..n-1] its backing chain, nearest first. */
struct argv_chain {
	const struct argv_image *images;
	size_t n;
};

/* Where things live for one VM, and descriptors the daemon opened for it. */
struct argv_env {
	const char *qemu;      /* argv[0] */
	const char *run_dir;   /* <run_dir>/<name>/qmp.sock, qemu/qemu.pid */
	const char *state_dir; /* <state_dir>/<name>/console.log, OVMF_VARS.fd */
	const char *ovmf_code; /* firmware = uefi */
	int qmp_fd;            /* >= 0: a listening socket QEMU inherits; < 0: -qmp unix:PATH */
	const int *net_fds; /* per cfg net index: tap fd for type = bridge (or -1); may be NULL */
	const struct argv_chain *disks; /* per cfg disk index (required for every disk) */
	/* per cfg cdrom index: the medium's descriptors (read-only: fd_rw -1, format raw), or
	 * set -1 for an empty drive; may be NULL when no cdrom has a file */
	const struct argv_image *cdroms;
	const struct argv_image *fw_vars; /* firmware = uefi: the variable store (required) */
};

/*
 * Builds the NULL-terminated argument vector (free with argv_free). Returns NULL with *cause when
 * the definition cannot be expressed (e.g. a bridge NIC without a tap fd).
 */
char **argv_build(const struct vm_config *vm, const struct argv_env *env, char **cause);
void argv_free(char **argv);
/* The vector as one line a POSIX shell reads back into the same arguments: each argument bare
 * when it holds only characters no shell treats specially, else in single quotes (a quote inside
 * as '\''); arguments separated by one space. Caller frees. */
char *argv_shell_line(char *const *argv);

/*
 * Names qvmd gives QEMU objects (a contract between argv and the hot-plug code). Device ids never
 * contain '.', so these cannot clash with operator ids.
 *   root port of a cold-plugged device ID: "rp.ID"     spare hot-plug root port N: "hp.N"
 *   block nodes of disk ID: "ID.file" (protocol) and "ID.fmt" (format); of its Nth backing file
 *   (N from 1): "ID.fileN" and "ID.fmtN" (at most 31 characters with a 24-character ID)
 *   the opaque string of an image's fdset: the name of its "file" node
 *   netdev of NIC ID: "ID.net"
 */
#define ARGV_SPARE_PORT_FMT "hp.%u"
#define ARGV_COLD_PORT_FMT  "rp.%s"
#define ARGV_NODE_FILE_FMT  "%s.file"
#define ARGV_NODE_FMT_FMT   "%s.fmt"
#define ARGV_FW_VARS        "qvmd.fw-vars"
#define ARGV_NETDEV_FMT     "%s.net"
/*
 * A cdrom ID is the ide-cd device with qdev id "ID" (what blockdev-open-tray, -insert-medium and
 * -close-tray name); its medium the nodes "ID.file" (read-only "file" on an fdset whose opaque is
 * "ID.file") and "ID.fmt" (raw, read-only), like a disk's image 0. bus = sata disks and cdroms
 * take the SATA/IDE positions in that order (disks, then cdroms, each in file order): on q35
 * position K is bus "ide.K", on pc bus "ide.(K/2)" unit K%2.
 */
#define ARGV_CDROM_DEVICE_FMT "%s"
/* display = vnc: QEMU's VNC server is "-vnc none" (no socket of its own): qvmd listens on
 * <run_dir>/<name>/vnc.sock and hands each accepted client over (getfd + add_client). */
#define ARGV_VNC_SOCKET "vnc.sock"
/* The serial console (console = log), below <run_dir>/<name>/ and <state_dir>/<name>/. */
#define ARGV_CONSOLE_SOCKET "qemu/console.sock"
#define ARGV_CONSOLE_LOG    "console.log"
/* Maximum root ports (cold + spare) on q35's pcie.0. */
#define ARGV_MAX_PORTS 28

/* JSON builders shared with hot-plug (return new json_object references; caller puts them). */
struct json_object;
/* Block node names of image i of disk id's chain (caller frees). */
char *argv_node_file(const char *id, size_t i);
char *argv_node_fmt(const char *id, size_t i);
/* The "file" and format nodes of image i of a disk's chain; the format node of a qcow2 names
 * the next image's format node as its backing, or null (QEMU opens no backing file by name). */
struct json_object *argv_blockdev_file_json(const struct cfg_disk *disk,
                                            const struct argv_chain *chain, size_t i);
struct json_object *argv_blockdev_fmt_json(const struct cfg_disk *disk,
                                           const struct argv_chain *chain, size_t i);
/* bus: the root port id on q35, NULL on pc (pci.0). */
struct json_object *argv_disk_device_json(const struct cfg_disk *disk, const char *bus);
/* fd_name: for tap/bridge NICs handed over by fd ("fd" as a number string or a getfd name). */
struct json_object *argv_netdev_json(const struct cfg_net *net, const char *fd_name);
struct json_object *argv_net_device_json(const struct cfg_net *net, const char *bus);

#endif
