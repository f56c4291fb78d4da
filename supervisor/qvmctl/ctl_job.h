/*
 * supervisor/qvmctl/ctl_job: how a verb waits for a background job (snapshot, revert, backup ...).
 * It subscribes to the VM's events before asking for the job (so no event is missed), asks without
 * waiting, and follows the job's record through its "job" events to the end: progress on a
 * terminal, and an interrupted client leaves the job running and says how to cancel it.
 */
#ifndef QVMD_CTL_JOB_H
#define QVMD_CTL_JOB_H

#include <signal.h>
#include <stdbool.h>

#include <json-c/json.h>

#include "ctl_verbs.h"

/* Shows a running job's progress (tty: rewrite one line in place); returns whether a line is on
 * the terminal that the outcome must replace. */
typedef bool (*ctl_job_progress_cb)(struct json_object *job, bool tty, void *arg);

/* Subscribes the connection to vm's job events, without waiting for the answer (the request for
 * the job follows at once): CTL_EXIT_OK with *id the request's, or the failure's exit code
 * (printed). ctl_job_subscribed takes the answer: CTL_EXIT_OK, or the failure's exit code. */
int ctl_job_subscribe(struct ctl *ctl, const char *vm, int64_t *id);
int ctl_job_subscribed(struct ctl *ctl, int64_t id);

/*
 * Follows job of vm until it ends. Done: CTL_EXIT_OK and *done holds the job's final record (the
 * caller puts it). Failed or cancelled: prints the job's error and returns its exit code.
 * Interrupted (SIGINT, SIGTERM): says that `what` goes on in qvmd and how to cancel it, returns
 * 130. Lost connection: exit code for unreachable.
 */
int ctl_job_follow(struct ctl *ctl, const char *vm, const char *job, const char *what,
                   ctl_job_progress_cb progress, void *arg, struct json_object **done);

/*
 * Blocks SIGINT and SIGTERM and makes handler catch them; *block is the set blocked, *waitmask
 * the mask to let them through with (a client's ppoll, sigtimedwait): so a signal either
 * interrupts a wait or is seen at the next one, never lost between a check and a wait.
 */
void ctl_catch_stop_signals(void (*handler)(int), sigset_t *block, sigset_t *waitmask);

#endif
