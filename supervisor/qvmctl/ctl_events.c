/* events: subscribe and print the daemon's event lines until interrupted or the daemon goes away.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl_print.h"
#include "ctl_verbs.h"
#include "xalloc.h"

static volatile sig_atomic_t ctl_events_stop;

static void
ctl_events_signal(int sig)
{
	ctl_events_stop = 1;
}

/* Prints one event as "TIME VM EVENT DETAILS". */
static void
ctl_events_print(struct json_object *ev)
{
	const char *kind = ctl_json_str(ev, "event", "?"), *name = kind;
	struct json_object *details = NULL, *data;
	char when[64], *text = NULL;
	struct timespec now;
	int64_t ts;

	clock_gettime(CLOCK_REALTIME, &now);
	ts = ctl_json_int(ev, "ts", (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
	ctl_fmt_time(ts, when, sizeof when);

	if (strcmp(kind, "state") == 0) {
		const char *old = ctl_json_str(ev, "old", NULL);

		if (old != NULL)
			text = xasprintf("%s -> %s", old, ctl_json_str(ev, "state", "?"));
		else
			text = xstrdup(ctl_json_str(ev, "state", "?"));
	} else if (strcmp(kind, "job") == 0 && (data = ctl_json_obj(ev, "job")) != NULL) {
		/* "job snapshot-3 snapshot pre-upgrade running 0/1" */
		name = "job";
		text = xasprintf("%s %s %s %s %lld/%lld%s%s", ctl_json_str(data, "id", "?"),
		                 ctl_json_str(data, "kind", "?"), ctl_json_str(data, "target", "-"),
		                 ctl_json_str(data, "state", "?"),
		                 (long long)ctl_json_int(data, "progress_current", 0),
		                 (long long)ctl_json_int(data, "progress_total", 0),
		                 ctl_json_str(data, "error", NULL) ? ": " : "",
		                 ctl_json_str(data, "error", ""));
	} else if (strcmp(kind, "qmp") == 0) {
		name = ctl_json_str(ev, "name", "?");
		if (json_object_object_get_ex(ev, "data", &data) && data != NULL &&
		    !(json_object_is_type(data, json_type_object) &&
		      json_object_object_length(data) == 0))
			text = xstrdup(ctl_json_compact(data));
	} else {
		/* An event this client does not know: show every member but the common ones. */
		details = json_object_new_object();
		json_object_object_foreach(ev, key, val)
		{
			if (strcmp(key, "event") != 0 && strcmp(key, "vm") != 0 &&
			    strcmp(key, "ts") != 0)
				json_object_object_add(details, key, json_object_get(val));
		}
		if (json_object_object_length(details) > 0)
			text = xstrdup(ctl_json_compact(details));
		json_object_put(details);
	}
	printf("%s %s %s%s%s\n", when, ctl_json_str(ev, "vm", "-"), name, text != NULL ? " " : "",
	       text != NULL ? text : "");
	free(text);
}

static int
ctl_events(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *req = NULL, *reply, *res, *ev;
	struct sigaction sa = {.sa_handler = ctl_events_signal};
	sigset_t block, waitmask;
	char *cause = NULL;
	enum ctl_io io;
	int rc;

	if (args->argc > 0) {
		req = json_object_new_object();
		json_object_object_add(req, "vm", json_object_new_string(args->argv[0]));
	}
	if ((rc = ctl_call(ctl, "subscribe", NULL, req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	json_object_put(reply);

	/*
	 * SIGINT and SIGTERM stay blocked except inside the client's ppoll, so a signal either
	 * interrupts a wait or is seen at the next one: never lost between a check and a wait.
	 */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &waitmask);
	sigdelset(&waitmask, SIGINT);
	sigdelset(&waitmask, SIGTERM);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	ctl_client_set_waitmask(ctl->client, &waitmask);

	for (;;) {
		io = ctl_client_next(ctl->client, &ev, &cause);
		if (io == CTL_IO_INTR) {
			if (ctl_events_stop)
				return CTL_EXIT_OK;
			continue;
		}
		if (io != CTL_IO_OK)
			break;
		if (ctl->json)
			printf("%s\n", ctl_json_compact(ev));
		else
			ctl_events_print(ev);
		fflush(stdout);
		json_object_put(ev);
	}
	if (io == CTL_IO_TIMEOUT)
		rc = ctl_fail(ctl, PROTO_ERR_UNREACHABLE, "%s: timed out", ctl->socket);
	else if (io == CTL_IO_EOF)
		rc = ctl_fail(ctl, PROTO_ERR_UNREACHABLE, "%s: connection to the daemon lost",
		              ctl->socket);
	else
		rc = ctl_fail(ctl, PROTO_ERR_UNREACHABLE, "%s: %s", ctl->socket, cause);
	free(cause);
	return rc;
}

const struct ctl_verb ctl_verb_events = {"events", "[NAME]", 0, 1, NULL, ctl_events};
