/* What the files of the VM state machine (vm*.c, rundir.c) share; nothing outside them includes it. */
#ifndef QVMD_VM_PRIVATE_H
#define QVMD_VM_PRIVATE_H

#include "vm.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct event;
struct qmp_conn;

enum vm_job_kind { VM_JOB_START, VM_JOB_POWERDOWN, VM_JOB_KILL, VM_JOB_RESET, VM_JOB_PAUSE,
		   VM_JOB_RESUME };

struct vm_job {
	enum vm_job_kind kind;
	vm_done_cb cb; /* NULL once the requester has been answered (powerdown --no-wait) */
	void *arg;
	int64_t t0;          /* monotonic ms */
	int64_t qmp_id;      /* the command this job waits for, cancelled when the job ends */
	struct event *timer; /* start timeout, powerdown escalation */
	int step;            /* powerdown/kill: 0 ACPI, 1 quit, 2 SIGTERM, 3 SIGKILL */
	uint64_t timeout_ms;
	bool wait;
	char *failed; /* start: why it failed, reported when QEMU is gone */
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

	unsigned restarts;         /* restarts done by the policy */
	unsigned restart_attempts; /* since the VM last ran for a minute */
	struct event *restart_ev;
	int64_t restart_due;
	char *last_exit;
};

/* A whole small file as a string (caller frees), or NULL. */
char *vm_read_text(const char *path);
char *vm_run_path(const struct vm *vm, const char *file);
char *vm_state_path(const struct vm *vm, const char *file);
void vm_set_state(struct vm *vm, enum vm_state s);
void vm_job_finish(struct vm *vm, struct json_object *result, const char *code, const char *fmt,
		   ...) __attribute__((format(printf, 4, 5)));
void vm_watch_pid(struct vm *vm);
int vm_open_qmp(struct vm *vm, int fd, char **cause);
void vm_schedule_restart(struct vm *vm, bool crashed);

/* vm_images.c: creates missing disk images, then calls vm_images_done (error: allocated or NULL). */
void vm_create_images(struct vm *vm);
void vm_images_done(struct vm *vm, char *error);
/* Copies the UEFI variable store template for a VM that has none yet. */
int vm_prepare_firmware(struct vm *vm, char **cause);

/* vm_taps.c: opens tap devices for bridge NICs (fds appended to keep[], per NIC in net_fds). */
int vm_open_taps(struct vm *vm, int *net_fds, int *keep, size_t *nkeep, char **cause);

/* rundir.c: what a restarted qvmd needs to re-attach. */
void rundir_save(struct vm *vm);
void rundir_remove(struct vm *vm);

#endif
