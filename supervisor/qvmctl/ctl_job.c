/* Waiting for a background job (see ctl_job.h). */
#include "ctl_job.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_print.h"

static volatile sig_atomic_t ctl_job_interrupted;

static void
ctl_job_signal(int sig)
{
	ctl_job_interrupted = 1;
}

int
ctl_job_subscribe(struct ctl *ctl, const char *vm, int64_t *id)
{
	struct json_object *sub = json_object_new_object(), *kinds = json_object_new_array();

	/* Only job events: a job's QEMU events would wake qvmctl for nothing. */
	json_object_array_add(kinds, json_object_new_string("job"));
	json_object_object_add(sub, "vm", json_object_new_string(vm));
	json_object_object_add(sub, "events", kinds);
	return ctl_send(ctl, "subscribe", NULL, sub, id);
}

int
ctl_job_subscribed(struct ctl *ctl, int64_t id)
{
	struct json_object *reply, *res;
	int rc;

	if ((rc = ctl_reply(ctl, id, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	json_object_put(reply);
	return CTL_EXIT_OK;
}

void
ctl_catch_stop_signals(void (*handler)(int), sigset_t *block, sigset_t *waitmask)
{
	struct sigaction sa = {.sa_handler = handler};

	sigemptyset(block);
	sigaddset(block, SIGINT);
	sigaddset(block, SIGTERM);
	sigprocmask(SIG_BLOCK, block, waitmask);
	sigdelset(waitmask, SIGINT);
	sigdelset(waitmask, SIGTERM);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

int
ctl_job_follow(struct ctl *ctl, const char *vm, const char *job, const char *what,
               ctl_job_progress_cb progress, void *arg, struct json_object **done)
{
	bool tty = isatty(STDOUT_FILENO) && !ctl->json, shown = false;
	sigset_t block, waitmask;
	struct json_object *ev;
	char *cause = NULL;
	enum ctl_io io;
	int rc;

	*done = NULL;
	/* SIGINT and SIGTERM get through only while the client waits. */
	ctl_catch_stop_signals(ctl_job_signal, &block, &waitmask);
	ctl_client_set_waitmask(ctl->client, &waitmask);

	for (;;) {
		struct json_object *j;
		const char *state;

		io = ctl_client_next(ctl->client, &ev, &cause);
		if (io == CTL_IO_INTR && ctl_job_interrupted) {
			if (shown)
				printf("\n");
			fprintf(
			    stderr,
			    "qvmctl: %s goes on in qvmd (interrupting qvmctl does not cancel it); "
			    "cancel it with: qvmctl job-cancel %s %s\n",
			    what, vm, job);
			return 130;
		}
		if (io == CTL_IO_INTR)
			continue;
		if (io != CTL_IO_OK)
			break;
		if (strcmp(ctl_json_str(ev, "event", ""), "job") != 0 ||
		    (j = ctl_json_obj(ev, "job")) == NULL ||
		    strcmp(ctl_json_str(j, "id", ""), job) != 0) {
			json_object_put(ev);
			continue;
		}
		state = ctl_json_str(j, "state", "?");
		if (strcmp(state, "running") == 0) {
			/* --json prints one object, the result: no progress lines. */
			if (progress != NULL && !ctl->json)
				shown = progress(j, tty, arg) || shown;
			json_object_put(ev);
			continue;
		}
		if (shown)
			printf("\r\033[K");
		if (strcmp(state, "done") == 0) {
			*done = json_object_get(j);
			rc = CTL_EXIT_OK;
		} else {
			rc = ctl_fail(ctl, PROTO_ERR_FAILED, "%s", ctl_json_str(j, "error", state));
		}
		json_object_put(ev);
		return rc;
	}
	if (shown)
		printf("\n");
	rc = ctl_fail(ctl, PROTO_ERR_UNREACHABLE,
	              "%s: connection to the daemon lost while %s ran%s%s", ctl->socket, what,
	              cause ? ": " : "", cause ? cause : "");
	free(cause);
	return rc;
}
