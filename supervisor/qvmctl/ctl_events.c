/*
 * events: subscribe and print the daemon's event lines until interrupted or the daemon goes away;
 * with --follow, a daemon that goes away (a restart, an upgrade) is waited for and subscribed to
 * again, and a "reconnected" event line marks the gap in which events may have been missed.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl_job.h"
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
	} else if (strcmp(kind, "device") == 0) {
		/* "device attached disk d1", "... removal-pending net n2",
		 * "... inserted cdrom cd0 /srv/iso/x.iso" */
		const char *medium = ctl_json_str(ev, "medium", NULL);

		text = xasprintf("%s %s %s%s%s%s", ctl_json_str(ev, "action", "?"),
		                 ctl_json_str(ev, "kind", "?"), ctl_json_str(ev, "device", "?"),
		                 medium ? " " : "", medium ? medium : "",
		                 ctl_json_bool(ev, "persistent", false) ? " (persistent)" : "");
	} else if (strcmp(kind, "restart") == 0) {
		if (ctl_json_bool(ev, "scheduled", false))
			text = xasprintf("scheduled in %lld ms (attempt %lld)",
			                 (long long)ctl_json_int(ev, "in_ms", 0),
			                 (long long)ctl_json_int(ev, "attempt", 0));
		else
			text = xasprintf("not scheduled: %s", ctl_json_str(ev, "reason", "?"));
	} else if (strcmp(kind, "reload") == 0) {
		struct json_object *a = ctl_json_array(ev, "added"),
		                   *r = ctl_json_array(ev, "removed"),
		                   *c = ctl_json_array(ev, "changed");

		text = xasprintf(
		    "%zu added, %zu removed, %zu changed, %lld with errors",
		    a ? json_object_array_length(a) : 0, r ? json_object_array_length(r) : 0,
		    c ? json_object_array_length(c) : 0, (long long)ctl_json_int(ev, "errors", 0));
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

/* How often --follow tries to reach a daemon that went away. */
#define CTL_EVENTS_RETRY_MS 500

/* Subscribes on a new connection: CTL_EXIT_OK, or the failure (printed unless quiet). */
static int
ctl_events_subscribe(struct ctl *ctl, const char *vm, bool quiet)
{
	struct json_object *req = NULL, *reply, *res;
	char *cause = NULL;

	if (quiet) {
		/* Nothing printed while the daemon is away: the retry loop says it once. */
		ctl->client = ctl_client_connect(ctl->socket, ctl->timeout_ms, &cause);
		free(cause);
		if (ctl->client == NULL)
			return CTL_EXIT_UNREACHABLE;
	}
	if (vm != NULL) {
		req = json_object_new_object();
		json_object_object_add(req, "vm", json_object_new_string(vm));
	}
	if (ctl_call(ctl, "subscribe", NULL, req, &reply, &res) != CTL_EXIT_OK)
		return CTL_EXIT_FAILED;
	json_object_put(reply);
	return CTL_EXIT_OK;
}

/* Waits up to ms with SIGINT/SIGTERM let through: false once one arrived. */
static bool
ctl_events_pause(const sigset_t *block, int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

	if (sigtimedwait(block, NULL, &ts) >= 0)
		return false;
	return !ctl_events_stop;
}

/* Prints one event line: as it came with --json, else for people. */
static void
ctl_events_emit(struct ctl *ctl, struct json_object *ev)
{
	if (ctl->json)
		printf("%s\n", ctl_json_compact(ev));
	else
		ctl_events_print(ev);
	fflush(stdout);
}

/* The line that marks a reconnection (events in the gap may be missing). */
static void
ctl_events_reconnected(struct ctl *ctl)
{
	struct json_object *ev = json_object_new_object();
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	json_object_object_add(ev, "event", json_object_new_string("reconnected"));
	json_object_object_add(ev, "vm", NULL);
	json_object_object_add(
	    ev, "ts", json_object_new_int64((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000));
	ctl_events_emit(ctl, ev);
	json_object_put(ev);
}

static int
ctl_events(struct ctl *ctl, struct ctl_args *args)
{
	const char *vm = args->argc > 0 ? args->argv[0] : NULL;
	bool follow = ctl_args_has(args, "follow");
	struct json_object *ev;
	sigset_t block, waitmask;
	char *cause = NULL;
	enum ctl_io io;
	int rc;

	/* SIGINT and SIGTERM get through only while the client waits (and in the pause between
	 * reconnection attempts). */
	ctl_catch_stop_signals(ctl_events_signal, &block, &waitmask);

	if ((rc = ctl_events_subscribe(ctl, vm, false)) != CTL_EXIT_OK)
		return rc;
	for (;;) {
		ctl_client_set_waitmask(ctl->client, &waitmask);
		io = ctl_client_next(ctl->client, &ev, &cause);
		if (io == CTL_IO_INTR) {
			if (ctl_events_stop)
				return CTL_EXIT_OK;
			continue;
		}
		if (io == CTL_IO_OK) {
			ctl_events_emit(ctl, ev);
			json_object_put(ev);
			continue;
		}
		if (!follow || io == CTL_IO_ERROR)
			break;
		/* The daemon went away: wait for the next one and subscribe again. */
		free(cause);
		cause = NULL;
		ctl_client_free(ctl->client);
		ctl->client = NULL;
		fprintf(stderr, "qvmctl: %s: connection to the daemon lost; waiting for it\n",
		        ctl->socket);
		do {
			if (!ctl_events_pause(&block, CTL_EVENTS_RETRY_MS))
				return CTL_EXIT_OK;
			if (ctl->client != NULL) { /* connected, but the subscription failed */
				ctl_client_free(ctl->client);
				ctl->client = NULL;
			}
		} while (ctl_events_subscribe(ctl, vm, true) != CTL_EXIT_OK);
		ctl_events_reconnected(ctl);
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

static const struct ctl_opt ctl_events_opts[] = {
    {"follow", false, "when qvmd goes away, wait for it and subscribe again"},
    {NULL, false, NULL},
};

const struct ctl_verb ctl_verb_events = {
    "events",
    "[NAME] [--follow]",
    0,
    1,
    ctl_events_opts,
    ctl_events,
    "follow state changes, QEMU events and job changes until interrupted",
    NULL,
};
