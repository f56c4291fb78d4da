/*
 * supervisor/qvmd/vm_job: the job model of a VM (private to the VM layer).
 *
 * Every operation that changes a VM is a job. A VM runs at most one ordinary job (start,
 * powerdown, kill, reset, pause, resume, attach, detach ...) and at most one background job (long
 * work such as a snapshot or a backup), the way libvirt separates its async jobs. A background job
 * kind declares which ordinary operations may run beside it; queries never wait for any job.
 *
 * A job kind is a table of callbacks (struct vm_job_kind). A job owns its data and the QMP
 * commands it sent through vm_job_send: when the job ends, its timer stops, every command still in
 * flight is cancelled (its callback will never run) and the kind's free callback releases the
 * data, so no callback can ever reach a finished job.
 */
#ifndef QVMD_VM_JOB_H
#define QVMD_VM_JOB_H

#include "qmp.h"
#include "vm.h"

#include <stdbool.h>
#include <stdint.h>

struct event;
struct json_object;
struct vm;
struct hp_op;
struct vm_job;
struct vm_jobrec;

/* The operations a client can ask of a VM, as far as jobs are concerned. */
enum vm_op {
	VM_OP_START,
	VM_OP_POWERDOWN,
	VM_OP_KILL,
	VM_OP_RESET,
	VM_OP_PAUSE,
	VM_OP_RESUME,
	VM_OP_ATTACH,
	VM_OP_DETACH,
	VM_OP_SNAPSHOT,
	VM_OP_REVERT,
	VM_OP_SNAPSHOT_DELETE,
	VM_OP_BACKUP,
	VM_OP_REBOOT,
	VM_OP_APPLY,
	VM_OP_COUNT
};
#define VM_OP_BIT(op) (1u << (op))

/* How a QEMU ended: its exit status, the signal that killed it, or unknown (an adopted QEMU is
 * not our child: only whether it removed its pidfile tells a clean exit); NONE: no QEMU ran
 * (a start that failed before spawning, or never started). */
enum vm_exit_kind { VM_EXIT_NONE, VM_EXIT_STATUS, VM_EXIT_SIGNAL, VM_EXIT_UNKNOWN };

/* How QEMU went away, for a job that must end with it. */
struct vm_exit {
	enum vm_exit_kind kind; /* how the process ended, as far as qvmd could see */
	int value;              /* VM_EXIT_STATUS: the status; VM_EXIT_SIGNAL: the signal */
	const char *reason;     /* "exited with status 0", "killed by signal 9 (Killed)" ... */
	const char *tail;       /* the end of this run's qemu.log, "" if none */
	bool clean;             /* exit status 0, or an adopted QEMU that removed its pidfile */
};

struct vm_job_kind {
	const char *name;
	enum vm_op op;       /* the operation this job carries out */
	bool background;     /* long-running: runs in the background slot */
	unsigned allows;     /* background: ordinary operations that may run beside it */
	unsigned cancel_for; /* background: operations that cancel it first (and say so) */

	/* Every callback is optional. data is the job's own state. */
	/* A QMP event (after the VM's own handling). */
	void (*event)(struct vm_job *job, const char *name, struct json_object *data);
	/* The timer armed with vm_job_arm fired. */
	void (*timer)(struct vm_job *job);
	/* QEMU is gone (exited and QMP closed). Returns true when the job has set the VM's state
	 * and ended itself (the exit was its doing, e.g. a powerdown); false: the VM treats the
	 * exit as unexpected and ends the job with an error. */
	bool (*qemu_gone)(struct vm_job *job, const struct vm_exit *exit);
	/* Asked to stop early (job-cancel, kill, powerdown): end the job now or soon, and return
	 * NULL; or, past the point where stopping would undo nothing, let it finish and return
	 * why (allocated). */
	char *(*cancel)(struct vm_job *job, const char *why);
	/* A job carrying detaches: its detach operation waiting for device id to leave the guest
	 * (vm_hotplug.c routes DEVICE_DELETED to it), or NULL. */
	struct hp_op *(*detach_op)(struct vm_job *job, const char *id);
	/* Releases data; called once, when the job has ended (answered or not). */
	void (*free)(void *data);

	/* Background kinds, whose record (vm_jobrec.c) is the job's persisted form. */
	/* The QEMU job carrying it concluded (error NULL: it succeeded) and was dismissed. */
	void (*concluded)(struct vm_job *job, const char *error);
	/* Restore after a restart of qvmd: a record of this kind was still running. running: QEMU
	 * still runs the job (take it up again: start a background job following rec); else
	 * settle what it left (error NULL: it succeeded while qvmd was away). A record the kind
	 * leaves running without a job following it is ended by the caller. */
	void (*restore)(struct vm *vm, struct vm_jobrec *rec, bool running, const char *error);
};

/* Someone waiting for a job's end besides its requester (powerdown --all joining it). */
struct vm_waiter {
	vm_done_cb cb;
	void *arg;
};

struct vm_job {
	const struct vm_job_kind *kind;
	struct vm *vm;
	void *data;
	vm_done_cb cb; /* NULL once the requester has been answered early (powerdown --no-wait) */
	void *arg;
	struct vm_waiter *waiters;
	size_t nwaiters;
	int64_t t0; /* monotonic ms */
	struct event *timer;
	struct qmp_conn *qmp; /* where vm_job_send goes: NULL the VM's QEMU, else the job's own
	                       * (a helper QEMU holding a stopped VM's disks), borrowed */
	int64_t *calls;       /* QMP commands in flight, cancelled when the job ends */
	size_t ncalls;
	bool ending;           /* vm_job_done runs: no new commands, no second end */
	bool outlives_qemu;    /* background: QEMU's part is over; if QEMU ends now, the job goes
	                        * on (it is not told, nor ended with the exit) */
	struct vm_jobrec *rec; /* background: its record, once it has one (owned by the VM) */
};

/*
 * Whether op may start now; if not, answers cb with `busy` naming the job in the way (and, for a
 * background job that op cancels, cancels it first and lets op proceed: returns true then).
 */
bool vm_job_admit(struct vm *vm, enum vm_op op, vm_done_cb cb, void *arg);

/* Cancels the background job for an operation that cancels it (a powerdown, a kill), noting its
 * name in vm->bg_cancelled for that operation's reply; a job past the point of cancelling goes
 * on (logged, not noted). No-op without one. */
void vm_job_cancel_background(struct vm *vm, const char *why);

/* Answers cb with `busy`, worded the one way: "vm NAME: busy: JOB in progress" (the ordinary job,
 * else the background one, else what the VM's state says it is doing). */
void vm_job_refuse_busy(struct vm *vm, vm_done_cb cb, void *arg);

/* Starts a job of kind (takes ownership of data: kind->free releases it). */
struct vm_job *vm_job_new(struct vm *vm, const struct vm_job_kind *kind, void *data, vm_done_cb cb,
                          void *arg);
/* Ends the job: answers its requester and waiters (result taken; code PROTO_OK on success, else
 * the error code and a message, which may point into the job's data), cancels its QMP commands and
 * timer, frees it. */
void vm_job_done(struct vm_job *job, struct json_object *result, enum proto_err code,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Answers the requester now; the job goes on (powerdown --no-wait). Takes result. */
void vm_job_reply_early(struct vm_job *job, struct json_object *result);
/* Adds a waiter told the job's outcome like the requester. */
void vm_job_join(struct vm_job *job, vm_done_cb cb, void *arg);
/* (Re-)arms the job's timer: kind->timer runs after ms. */
void vm_job_arm(struct vm_job *job, uint64_t ms);
/*
 * Sends a QMP command on behalf of the job to its QEMU (job->qmp, else the VM's; args taken; fd >=
 * 0 is passed along with it); cb runs with arg unless the job ends first. Returns the command id,
 * or -1 with *cause (no connection).
 */
int64_t vm_job_send(struct vm_job *job, const char *command, struct json_object *args, int fd,
                    int timeout_ms, qmp_reply_cb cb, void *arg, char **cause);

/* The VM's jobs: the ordinary one, the background one. */
struct vm_job *vm_job_current(const struct vm *vm);
struct vm_job *vm_job_background(const struct vm *vm);
/* The job of kind running on vm, or NULL. */
struct vm_job *vm_job_find(const struct vm *vm, const struct vm_job_kind *kind);

/* Dispatch from the VM: a QMP event. */
void vm_jobs_event(struct vm *vm, const char *name, struct json_object *data);
/*
 * QEMU is gone, in two steps so that whoever waits for a job sees the VM's final state: first
 * each job may claim the exit (kind->qemu_gone returns true: the job asked for it, set the state
 * and ended); if none did, the VM records a shutdown or crash; then the jobs still running end
 * with an error. A background job that outlives its QEMU (outlives_qemu) takes part in neither.
 */
bool vm_jobs_claim_exit(struct vm *vm, const struct vm_exit *exit);
void vm_jobs_end_unclaimed(struct vm *vm, const struct vm_exit *exit);
/* Ends every job with an error (qvmd exiting, the VM being freed). */
void vm_jobs_abort(struct vm *vm, enum proto_err code, const char *why);

#endif
