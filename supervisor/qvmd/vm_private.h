/* What the files of the VM state machine (vm*.c, rundir.c) share; nothing outside them includes it.
 */
#ifndef QVMD_VM_PRIVATE_H
#define QVMD_VM_PRIVATE_H

#include "vm.h"
#include "vm_job.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* How long a query (query-status, query-pci ...) may take before it is answered without QEMU. */
#define VM_QUERY_TIMEOUT_MS 2000

/* The last exit of a VM as status reports it. */
struct vm_last_exit {
	enum vm_exit_kind kind;
	int value; /* the status or the signal */
	const char
	    *cause; /* static: "shutdown", "crash", "powerdown", "kill", "start failed" ... */
	char *text; /* for people: "killed by signal 9 (Killed) (ended by sigkill)" */
};

struct event;
struct qmp_conn;
struct qmp_reply;
struct vm_images;
struct vm_ids;
struct vm_job;
struct vm_vnc;

#include "cfg.h"

/* An image a VM's QEMU holds (a disk's, one of its backing files', the UEFI variable store). */
struct vm_image_id {
	dev_t dev;
	ino_t ino;
	bool writable;
	bool top; /* the disk's own image, not a backing file */
};

/* A disk or NIC of a running VM, as the daemon tracks it. */
struct vm_dev {
	char *id;
	bool is_disk;
	struct cfg_disk disk; /* is_disk */
	struct cfg_net net;   /* !is_disk */
	char *port;           /* q35: the root port it sits on; pc: NULL (pci.0) */
	bool cold;            /* from the command line, not hot-plugged */
	bool pending_removal; /* device_del sent, DEVICE_DELETED not seen yet */
	bool persist_removal; /* remove it from the definition once it is gone */
	bool attaching;       /* hot-plug in progress: its backend may exist, the device may not */
	bool created;         /* attaching: its image was made by --create */
	struct vm_image_id *imgs; /* disk: its images, own first (not in devices.json) */
	size_t nimgs;
};

struct vm {
	struct vm_env env; /* what the VM needs from its owner */
	char *name;
	struct vm_config *cfg;      /* the definition on disk; NULL once its file was removed */
	char *disk_text;            /* that file's text */
	struct vm_config *live_cfg; /* what the running QEMU was started with */
	char *live_text;
	enum vm_state state;
	char qemu_status[32]; /* QEMU's own run state as last seen */

	pid_t pid;
	int pidfd;
	struct event *pid_ev;
	bool child; /* spawned by this qvmd (waitpid works); false when adopted */
	uint64_t starttime;
	int64_t started_at; /* epoch ms */
	int64_t start_mono; /* monotonic ms when the guest started running */
	bool exited;
	bool have_wstatus;
	int wstatus;
	long log_offset; /* qemu.log size at spawn: the tail after it is this run's */

	struct qmp_conn *qmp;
	bool qmp_closed;
	bool backup_clean;    /* this QEMU holds nothing of a backup: its last one here completed
	                       * (vm_backup.c); false with each new QMP connection */
	int64_t backup_fdset; /* the next fdset id a backup may give this QEMU (vm_backup.c); 0
	                       * with each new QMP connection */
	struct event *eof_timer;
	bool shutdown_seen;
	bool shutdown_guest;
	char shutdown_reason[48];

	struct vm_job *job;   /* the ordinary job (vm_job.h) */
	struct vm_job *bg;    /* the background job */
	struct vm_dev **devs; /* live devices */
	size_t ndevs;
	struct vm_image_id fw_vars; /* the UEFI variable store its QEMU holds (ino 0: none) */

	unsigned restarts;         /* restarts done by the policy */
	unsigned restart_attempts; /* since the VM last ran for a minute */
	struct event *restart_ev;
	int64_t restart_due;
	struct vm_last_exit last_exit; /* how the QEMU last ended (kind VM_EXIT_NONE: never) */

	struct vm_jobrec **jobrecs; /* background jobs: running and the last few ended */
	size_t njobrecs;
	unsigned jobrec_seq;
	struct event *jobrec_poll; /* progress of a running QEMU job */
	char bg_cancelled[96]; /* the background job a powerdown or kill cancelled first, for its
	                        * reply ("snapshot snapshot-3"); "" when none */
	bool jobrec_polling;

	struct vm_vnc *vnc; /* display = vnc: the listening socket while QMP is ready */
};

/* vm.c: the VM object, its QEMU process and QMP connection. */
/* A definition's text (caller frees), or NULL; never blocks (cfg_read_file). */
char *vm_read_text(const char *path);
char *vm_run_path(const struct vm *vm, const char *file);
char *vm_state_path(const struct vm *vm, const char *file);
void vm_set_state(struct vm *vm, enum vm_state s);
/* Records how the QEMU ended (exit may be NULL: no QEMU ran); takes text. */
void vm_set_last_exit(struct vm *vm, const struct vm_exit *exit, const char *cause, char *text);
/* The last exit as a reply's object, or NULL when the VM never ran. */
struct json_object *vm_last_exit_json(const struct vm *vm);
/* The error code of a failed QMP command: qemu-error (QEMU refused it), timeout, else failed. */
enum proto_err vm_qmp_err(const struct qmp_reply *r);
/* Publishes an event of this VM to the owner's sink (takes ev). */
void vm_publish(struct vm *vm, struct json_object *ev);
/* Publishes one of qvmd's own events about the VM: {"event": event, "vm": NAME, the members of
 * fields (taken), "ts": now}. */
void vm_event(struct vm *vm, const char *event, struct json_object *fields);
/* Re-reads the definition after qvmd edited it (running_matches: the QEMU now matches it). */
void vm_reload_definition(struct vm *vm, bool running_matches);
/* Watches the QEMU process (pid, pidfd set) and connects QMP (fd >= 0: a connected socket; else
 * the run directory's socket). Returns -1 with *cause when QMP cannot be opened. */
void vm_watch_pid(struct vm *vm);
int vm_open_qmp(struct vm *vm, int fd, char **cause);
/* The process of a VM that has none any more is forgotten; the owner is told when the VM has
 * neither a QEMU, a job nor a definition. */
void vm_check_gone(struct vm *vm);

/* vm_start.c: the start job and the restart policy. */
void vm_schedule_restart(struct vm *vm, bool crashed);
/* QMP is ready on a VM being started: sends cont (true), or the VM was adopted (false). */
bool vm_start_qmp_ready(struct vm *vm);

/* vm_adopt.c: a QEMU found running after a daemon restart. */
void vm_adopt_qmp_ready(struct vm *vm);

/* vm_host.c: what a VM uses of the host: its directories, images, firmware variables, taps and
 * QMP socket. The one place that knows which files a VM's QEMU opens. */
int vm_host_dirs(struct vm *vm, char **cause);
/* Makes a directory root's (or, owned, ids' uid's) with ids' gid as its group and mode, refusing
 * a symlink in its place: how a VM's QEMU (and its backup helper) get their directories. 0, or -1
 * with *cause. */
int vm_host_own_dir(const char *path, bool owned, const struct vm_ids *ids, mode_t mode,
                    char **cause);
/* Creates the definition's missing disk images (qemu-img); done(arg, error) runs when all exist
 * or one failed (error allocated, or NULL), possibly before this returns. *batch holds the work
 * in progress until then (set before anything else, cleared by no one but the owner);
 * vm_host_images_free(*batch) stops it (children killed, done never called). */
void vm_host_create_images(struct vm *vm, struct vm_images **batch,
                           void (*done)(void *arg, char *error), void *arg);
void vm_host_images_free(struct vm_images *b);
/* Runs `qemu-img create -f FORMAT FILE SIZE`, output appended to the VM's qemu.log (its size
 * before in *log_offset). Returns the pid (and *pidfd), or -1 with *cause. */
pid_t vm_spawn_qemu_img(struct vm *vm, const char *file, enum cfg_format format, uint64_t size,
                        long *log_offset, int *pidfd, char **cause);
/* Copies the UEFI variable store template for a VM that has none yet. */
int vm_prepare_firmware(struct vm *vm, char **cause);
/* Opens tap devices for bridge NICs (fds appended to keep[], per NIC in net_fds). */
int vm_open_taps(struct vm *vm, int *net_fds, int *keep, size_t *nkeep, size_t keep_max,
                 char **cause);
/* A tap device on a bridge, up; returns its fd or -1 with *cause. */
int vm_tap_open(const char *ifname, const char *bridge, char **cause);
/* The listening QMP socket QEMU inherits, and a connection to it made before QEMU runs. */
int vm_qmp_listen(const char *path, char **cause);
int vm_qmp_dial(const char *path);

/* vm_disks.c: the images of a VM's disks, opened by qvmd and handed to QEMU as fdsets. */
struct argv_chain;
struct argv_image;
struct imgchain;
struct imgchain_image;
/* Everything a start passes: per disk its chain, and the UEFI variable store. */
struct vm_disk_fds {
	struct imgchain *chains; /* per live_cfg disk */
	size_t n;
	struct imgchain *vars; /* firmware = uefi, else NULL */
	struct argv_chain *argv_chains;
	struct argv_image *argv_images;
	struct argv_image *argv_vars;
};
/* Opens every image a start needs and checks that no other VM holds one of them (and that this
 * VM does not name one twice); the descriptors QEMU inherits go to keep[]. Returns 0, or -1 with
 * *cause ("disk ID: ...") and nothing left open. */
int vm_disks_open(struct vm *vm, struct vm_disk_fds *fds, int *keep, size_t *nkeep, size_t keep_max,
                  char **cause);
/* Checks a cdrom's medium (opened as im) for a start: no other VM and no disk of this start
 * (fds) may write it; sharing it read-only is fine. 0, or -1 with *cause ("cdrom ID: ..."). */
int vm_medium_check(struct vm *vm, const struct cfg_cdrom *cd, const struct vm_disk_fds *fds,
                    const struct imgchain_image *im, char **cause);
/* Records the images of a started QEMU on its devices (after vm_devs_init). */
void vm_disks_record(struct vm *vm, const struct vm_disk_fds *fds);
void vm_disks_close(struct vm_disk_fds *fds);
/* Opens the chain of a disk being attached (c zeroed) and checks it like a start does, against
 * every image of this VM but self's and of the other VMs. 0, or -1 with *cause. */
int vm_disk_open(struct vm *vm, const struct cfg_disk *disk, const struct vm_dev *self,
                 struct imgchain *c, char **cause);
/* Records a disk's images (opened as chain c) on its device. */
void vm_dev_set_images(struct vm_dev *dev, const struct imgchain *c, bool writable);
/* After a re-attach: the images of the live disks and of the variable store, from their names. */
void vm_disks_identify(struct vm *vm);
/* Whether an fdset's opaque string (its file node's name) belongs to disk id; *image: which image
 * of its chain (0 its own, N its Nth backing file). */
bool vm_disk_fdset_of(const char *opaque, const char *id, size_t *image);

/* vm_devices.c: bookkeeping of live devices. */
struct vm_dev *vm_dev_new_disk(const struct cfg_disk *disk, const char *port);
struct vm_dev *vm_dev_new_net(const struct cfg_net *net, const char *port);
void vm_dev_free(struct vm_dev *dev);
void vm_devs_init(struct vm *vm);
void vm_devs_clear(struct vm *vm);
void vm_devs_add(struct vm *vm, struct vm_dev *dev);
void vm_devs_remove(struct vm *vm, struct vm_dev *dev);
struct vm_dev *vm_devs_find(const struct vm *vm, const char *id);
/* Picks a spare port (busy_in_qemu[n]: QEMU shows a device on hp.n); -1 if none is free. */
int vm_devs_free_port(const struct vm *vm, const bool *busy_in_qemu, char out[16]);
/* A device as replies show it (no bookkeeping of devices.json). */
struct json_object *vm_dev_json(const struct vm_dev *dev);
/* Writes devices.json: 0, or -1 with errno. */
int vm_devs_save(struct vm *vm);
void vm_devs_load(struct vm *vm);

/* vm_media.c: the media in the cdrom drives, recorded in the run directory (media.json): after a
 * restart of qvmd, the running definition gets the media they held (live_cfg must be set). */
void vm_media_load(struct vm *vm);

/* vm_hotplug.c: devices released by the guest without a detach waiting, and the books checked
 * against QEMU after a re-attach. */
void vm_hotplug_device_deleted(struct vm *vm, struct json_object *data);
void vm_hotplug_reconcile(struct vm *vm);
/*
 * Hot-plug operations composed in one job (apply): each is checked and carried out as a single
 * attach (never persisted) or detach would be, its QMP commands pipelined with the others', and
 * rolled back alone when it fails. cb is told its outcome exactly once, possibly before the call
 * returns (refused, QEMU untouched); *slot points at the operation while it runs and is cleared
 * before cb runs. A disk whose image is missing and whose size is given gets its image created.
 */
#define VM_DETACH_TIMEOUT_MS 30000
void vm_hotplug_attach(struct vm_job *job, const struct cfg_disk *disk, const struct cfg_net *net,
                       struct hp_op **slot, vm_done_cb cb, void *arg);
void vm_hotplug_detach(struct vm_job *job, const char *id, struct hp_op **slot, vm_done_cb cb,
                       void *arg);
/* op, if it is a detach waiting for device id (for a job kind's detach_op); else NULL. */
struct hp_op *vm_hotplug_op_detaching(struct hp_op *op, const char *id);
/* The job's timer fired: a detach still waiting for the guest ends as "removal pending". */
void vm_hotplug_op_timeout(struct hp_op *op);
/* QEMU went away: an image created for an attach goes too. */
void vm_hotplug_op_qemu_gone(struct hp_op *op);
/* Stops an operation whose job ends first (cb never runs; NULL is a no-op). */
void vm_hotplug_op_free(struct hp_op *op);

/* vm_apply.c: the apply job (the running VM made what its file says), and what differs. */
/* What the VM runs with: its start-time definition with its devices as they are now (caller
 * frees); NULL when it does not run. */
struct vm_config *vm_apply_running(const struct vm *vm);
/* A hot-plug was persisted into the VM's file (disk or net added, or remove_id removed): the copy
 * of the definition the QEMU runs (run directory, live_cfg, live_text) gets the same edit, so that
 * it stays the start-time definition plus the hot-plugs, its other keys what QEMU runs. */
void vm_apply_live_edit(struct vm *vm, const struct cfg_disk *disk, const struct cfg_net *net,
                        const char *remove_id);

/* rundir.c: what a restarted qvmd needs to re-attach. */
/* The copy of the definition the QEMU was started from (caller frees). */
char *rundir_def_path(const struct vm *vm);
void rundir_save(struct vm *vm);
void rundir_remove(struct vm *vm);
/* Replaces path with text atomically (temp file + rename; see rundir.c for why no fsync). */
int rundir_write(const char *path, const char *text);

/* vm_jobrec.c: the records of background jobs (jobs.json), following QEMU's jobs. */
enum vm_jobrec_state { VM_JOBREC_RUNNING, VM_JOBREC_DONE, VM_JOBREC_FAILED, VM_JOBREC_CANCELLED };
struct vm_jobrec {
	char *id;     /* "snapshot-3": unique per VM, also the QEMU job's id when qemu_job */
	char *kind;   /* the job kind's name */
	char *target; /* what it acts on (a snapshot tag) */
	bool qemu_job;
	enum vm_jobrec_state state;
	char qemu_status[16];   /* the QEMU job's status as last seen */
	uint64_t cur, total;    /* progress */
	int64_t started, ended; /* epoch ms; ended 0 while running */
	char *error;
	struct json_object *result; /* what a done job made (a backup's entry), or NULL; saved in
	                             * jobs.json but not read back after a restart */
};
const char *vm_jobrec_state_name(enum vm_jobrec_state s);
/* A new running record (saved, published); the VM owns it. */
struct vm_jobrec *vm_jobrec_new(struct vm *vm, const char *kind, const char *target, bool qemu_job);
/* Ends a running record (no-op once ended): saved, published, history trimmed. */
void vm_jobrec_end(struct vm *vm, struct vm_jobrec *rec, enum vm_jobrec_state state,
                   const char *error);
struct vm_jobrec *vm_jobrec_find(const struct vm *vm, const char *id);
struct json_object *vm_jobrec_json(const struct vm *vm, const struct vm_jobrec *rec);
/* QEMU's JOB_STATUS_CHANGE event. */
void vm_jobrec_status_change(struct vm *vm, struct json_object *data);
/* After a restart of qvmd: read jobs.json (vm_adopt), then, with QMP up, ask QEMU about the
 * records still running (reattach), or settle them when the VM has no QEMU (orphaned). */
void vm_jobrecs_load(struct vm *vm);
void vm_jobrecs_reattach(struct vm *vm);
void vm_jobrecs_orphaned(struct vm *vm, const char *why);
void vm_jobrecs_free(struct vm *vm);

/* vm_snapshot.c: the background job kinds of snapshots. */
extern const struct vm_job_kind vm_snapshot_kind;
extern const struct vm_job_kind vm_revert_kind;
extern const struct vm_job_kind vm_snapshot_delete_kind;

/* vm_backup.c, vm_backup_restore.c: the background job kinds of backups. */
extern const struct vm_job_kind vm_backup_kind;
extern const struct vm_job_kind vm_backup_restore_kind;
extern const struct vm_job_kind vm_backup_verify_kind;
extern const struct vm_job_kind vm_backup_prune_kind;

/* vm_qemu_img.c: one qemu-img child with its output captured. */
struct vm_qemu_img;
/* ok: exit status 0; out: stdout and stderr (borrowed, trailing newlines cut). */
typedef void (*vm_qemu_img_cb)(bool ok, char *out, void *arg);
/* Runs qemu-img with args (NULL-terminated, at most 14); NULL with *cause if it cannot start. */
struct vm_qemu_img *vm_qemu_img_run(struct vm *vm, const char *const *args, vm_qemu_img_cb cb,
                                    void *arg, char **cause);
/* Kills and forgets the child (cb never runs). NULL is a no-op. */
void vm_qemu_img_free(struct vm_qemu_img *q);

#endif
