/* What the files of the VM state machine (vm*.c, rundir.c) share; nothing outside them includes it.
 */
#ifndef QVMD_VM_PRIVATE_H
#define QVMD_VM_PRIVATE_H

#include "vm.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct event;
struct qmp_conn;

enum vm_job_kind {
	VM_JOB_START,
	VM_JOB_POWERDOWN,
	VM_JOB_KILL,
	VM_JOB_RESET,
	VM_JOB_PAUSE,
	VM_JOB_RESUME,
	VM_JOB_ATTACH,
	VM_JOB_DETACH
};

#include "cfg.h"

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
};

/* Someone else waiting for a job's end (powerdown --all joining a powerdown in flight). */
struct vm_waiter {
	vm_done_cb cb;
	void *arg;
};

struct vm_job {
	enum vm_job_kind kind;
	vm_done_cb cb; /* NULL once the requester has been answered (powerdown --no-wait) */
	void *arg;
	struct vm_waiter *waiters; /* told the same outcome as cb */
	size_t nwaiters;
	int64_t t0;          /* monotonic ms */
	int64_t qmp_id;      /* the command this job waits for, cancelled when the job ends */
	struct event *timer; /* start timeout, powerdown escalation */
	int step;            /* powerdown/kill: 0 ACPI, 1 quit, 2 SIGTERM, 3 SIGKILL */
	uint64_t timeout_ms;
	bool wait;
	bool resumed;     /* powerdown of a paused VM: resumed first (ACPI needs a running guest) */
	char *failed;     /* start: why it failed, reported when QEMU is gone */
	struct hp_op *op; /* attach/detach: the hot-plug operation in progress */
};

struct vm {
	struct daemon *d;
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
	struct event *eof_timer;
	bool shutdown_seen;
	bool shutdown_guest;
	char shutdown_reason[48];

	struct vm_job *job;
	struct vm_dev **devs; /* live devices */
	size_t ndevs;

	unsigned restarts;         /* restarts done by the policy */
	unsigned restart_attempts; /* since the VM last ran for a minute */
	struct event *restart_ev;
	int64_t restart_due;
	char *last_exit;
};

/* A whole small file as a string (caller frees), or NULL. */
char *vm_read_text(const char *path);
const char *vm_job_name(enum vm_job_kind kind);
char *vm_run_path(const struct vm *vm, const char *file);
char *vm_state_path(const struct vm *vm, const char *file);
void vm_set_state(struct vm *vm, enum vm_state s);
void vm_job_finish(struct vm *vm, struct json_object *result, const char *code, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
struct vm_job *vm_job_start(struct vm *vm, enum vm_job_kind kind, vm_done_cb cb, void *arg);
void vm_job_arm_timer(struct vm *vm, uint64_t ms);
/* Re-reads the definition after qvmd edited it (running_matches: the QEMU now matches it). */
void vm_reload_definition(struct vm *vm, bool running_matches);
void vm_watch_pid(struct vm *vm);
int vm_open_qmp(struct vm *vm, int fd, char **cause);
void vm_schedule_restart(struct vm *vm, bool crashed);

/* vm_images.c: creates missing disk images, then calls vm_images_done (error: allocated or NULL).
 */
void vm_create_images(struct vm *vm);
/* Runs `qemu-img create -f FORMAT FILE SIZE`, output appended to the VM's qemu.log (its size
 * before in *log_offset). Returns the pid (and *pidfd), or -1 with *cause. */
pid_t vm_spawn_qemu_img(struct vm *vm, const char *file, enum cfg_format format, uint64_t size,
                        long *log_offset, int *pidfd, char **cause);
void vm_images_done(struct vm *vm, char *error);
/* Copies the UEFI variable store template for a VM that has none yet. */
int vm_prepare_firmware(struct vm *vm, char **cause);

/* vm_taps.c: opens tap devices for bridge NICs (fds appended to keep[], per NIC in net_fds). */
int vm_open_taps(struct vm *vm, int *net_fds, int *keep, size_t *nkeep, char **cause);

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
struct json_object *vm_dev_json(const struct vm_dev *dev);
/* Writes devices.json: 0, or -1 with errno. */
int vm_devs_save(struct vm *vm);
void vm_devs_load(struct vm *vm);

/* vm_hotplug.c: DEVICE_DELETED and friends; a job's operation torn down when QEMU goes away. */
void vm_hotplug_event(struct vm *vm, const char *name, struct json_object *data);
void vm_hotplug_abort(struct vm *vm, bool qemu_gone);
void vm_hotplug_reconcile(struct vm *vm);
void vm_detach_timeout(struct vm *vm);
/* vm_taps.c: a tap device on a bridge, up; returns its fd or -1 with *cause. */
int vm_tap_open(const char *ifname, const char *bridge, char **cause);

/* rundir.c: what a restarted qvmd needs to re-attach. */
void rundir_save(struct vm *vm);
void rundir_remove(struct vm *vm);
/* Replaces path with text atomically (temp file + rename; see rundir.c for why no fsync). */
int rundir_write(const char *path, const char *text);

#endif
