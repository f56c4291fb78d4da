/*
 * backup --all: every VM the daemon has, running and stopped, at most N at once (--parallel,
 * default 2), carrying on past a VM that fails: the nightly job of a host (contrib/systemd's
 * qvmd-backup.timer runs it).
 *
 * The VMs come from `list`. Each then gets a control connection of its own that carries one
 * `backup` request with wait=true and, with --keep and once that backup succeeded, one
 * `backup-prune` request with wait=true. qvmctl has no event loop: one ppoll(2) waits on every
 * connection in flight, and a VM's next step starts as soon as its reply is in. A line is printed
 * per VM as it ends ("NAME: backup ID TYPE (reason)", "NAME: failed: message"), then a summary;
 * with --json only {"results":[...]}, one entry per VM in the order of `list`, shaped like those
 * of powerdown --all: {vm, ok, backup, prune, error}, absent values null.
 *
 * A connection does what ctl_client does for one blocking request (a line of JSON out, lines in,
 * the reply found by its id, a "version" probe when the daemon has been silent for -t) without
 * blocking, so that many can wait at once. An interrupted qvmctl leaves the backups in flight
 * running in qvmd (a request with wait=true outlives its client) and starts no more.
 */
#include "ctl_backup_all.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "ctl_print.h"
#include "xalloc.h"

#define CTL_BACKUP_ALL_PARALLEL     2 /* the default of --parallel */
#define CTL_BACKUP_ALL_PARALLEL_MAX 64
#define CTL_BACKUP_ALL_KEEP_MAX     100000
#define CTL_BACKUP_ALL_READ_CHUNK   (16 * 1024)
#define CTL_BACKUP_ALL_JSON_DEPTH   128 /* as ctl_client: replies can nest deeply */

enum ctl_backup_all_step {
	CTL_BACKUP_ALL_QUEUED,
	CTL_BACKUP_ALL_BACKUP, /* the backup request is in flight */
	CTL_BACKUP_ALL_PRUNE,  /* the backup-prune request is in flight */
	CTL_BACKUP_ALL_DONE,
};

/* One VM of the run, and its connection while it has one. */
struct ctl_backup_all_vm {
	char *name;
	enum ctl_backup_all_step step;
	int fd;    /* -1: none */
	char *buf; /* received bytes not yet a whole line */
	size_t len, cap;
	int64_t next_id;
	int64_t want;               /* the id of the awaited reply */
	int64_t probe_id;           /* the liveness probe in flight, 0: none */
	int64_t heard_ms;           /* when the daemon last spoke on it (or we last asked) */
	struct json_object *backup; /* the backup's entry once it succeeded */
	struct json_object *prune;  /* the prune's result once it succeeded */
	struct json_object *error;  /* {code, message} of the failure, or NULL */
};

/* A run: the options and every VM. */
struct ctl_backup_all {
	struct ctl *ctl;
	const char *mode; /* "auto", "full" or "incremental" */
	long parallel;
	long keep; /* 0: no pruning */
	struct ctl_backup_all_vm *vms;
	size_t nvms, next, running, failed;
};

static volatile sig_atomic_t ctl_backup_all_interrupted;

static void
ctl_backup_all_signal(int sig)
{
	ctl_backup_all_interrupted = 1;
}

/* Parses option name as a count from min to max into *out (left alone when absent). */
static int
ctl_backup_all_count(struct ctl *ctl, const struct ctl_args *args, const char *name, long min,
                     long max, long *out)
{
	const char *s = ctl_args_get(args, name);
	char *end;
	long v;

	if (s == NULL)
		return CTL_EXIT_OK;
	errno = 0;
	v = strtol(s, &end, 10);
	if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v < min || v > max)
		return ctl_usage_error(ctl, "backup: --%s %s: give a number from %ld to %ld", name,
		                       s, min, max);
	*out = v;
	return CTL_EXIT_OK;
}

/* The length of array member key of obj (0 when absent). */
static size_t
ctl_backup_all_len(struct json_object *obj, const char *key)
{
	struct json_object *a = ctl_json_array(obj, key);

	return a != NULL ? json_object_array_length(a) : 0;
}

/* Prints the line of a VM that has ended. */
static void
ctl_backup_all_print(const struct ctl_backup_all_vm *v)
{
	const char *reason = ctl_json_str(v->backup, "reason", NULL);

	if (v->backup == NULL) {
		printf("%s: failed: %s\n", v->name, ctl_json_str(v->error, "message", "?"));
		fflush(stdout);
		return;
	}
	printf("%s: backup %s %s", v->name, ctl_json_str(v->backup, "id", "?"),
	       ctl_json_str(v->backup, "type", "?"));
	if (reason != NULL)
		printf(" (%s)", reason);
	if (v->prune != NULL)
		printf("; pruned: kept %zu, deleted %zu, merged %zu",
		       ctl_backup_all_len(v->prune, "kept"),
		       ctl_backup_all_len(v->prune, "deleted"),
		       ctl_backup_all_len(v->prune, "merged"));
	if (v->error != NULL)
		printf("; prune failed: %s", ctl_json_str(v->error, "message", "?"));
	printf("\n");
	fflush(stdout);
}

/* The VM's requests are over (answered, failed or refused): its line, its connection closed. */
static void
ctl_backup_all_end(struct ctl_backup_all *ba, struct ctl_backup_all_vm *v)
{
	if (v->fd != -1) {
		close(v->fd);
		v->fd = -1;
		ba->running--;
	}
	free(v->buf);
	v->buf = NULL;
	v->len = v->cap = 0;
	v->step = CTL_BACKUP_ALL_DONE;
	if (v->error != NULL)
		ba->failed++;
	if (!ba->ctl->json)
		ctl_backup_all_print(v);
}

/* Ends v with a failure: code is the daemon's wire name (or qvmctl's own "unreachable"). */
static void __attribute__((format(printf, 4, 5)))
ctl_backup_all_fail(struct ctl_backup_all *ba, struct ctl_backup_all_vm *v, const char *code,
                    const char *fmt, ...)
{
	struct json_object *e = json_object_new_object();
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "message", json_object_new_string(msg));
	free(msg);
	json_object_put(v->error);
	v->error = e;
	ctl_backup_all_end(ba, v);
}

/* Sends {"id":N,"cmd":cmd,"vm":vm,"args":args} on v's connection (args taken over; vm and args
 * left out when NULL). Returns the id, or -1 with *cause. */
static int64_t
ctl_backup_all_send(struct ctl_backup_all_vm *v, const char *cmd, const char *vm,
                    struct json_object *args, char **cause)
{
	struct json_object *req = json_object_new_object();
	int64_t id = v->next_id++;
	const char *p;
	char *line;
	size_t left;
	ssize_t n;

	json_object_object_add(req, "id", json_object_new_int64(id));
	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	if (vm != NULL)
		json_object_object_add(req, "vm", json_object_new_string(vm));
	if (args != NULL)
		json_object_object_add(req, "args", args);
	line = xasprintf("%s\n", json_object_to_json_string_ext(
	                             req, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(req);
	/* A request is a few hundred bytes on a connection with nothing else queued: the socket
	 * (blocking, sends bounded by SO_SNDTIMEO under -t) takes it at once. */
	for (p = line, left = strlen(line); left > 0; p += n, left -= (size_t)n) {
		n = send(v->fd, p, left, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n < 0) {
			*cause = xasprintf("send: %s", strerror(errno));
			free(line);
			return -1;
		}
	}
	free(line);
	v->heard_ms = clock_mono_ms();
	return id;
}

/* Sends v's request of its current step: backup, or backup-prune. */
static void
ctl_backup_all_request(struct ctl_backup_all *ba, struct ctl_backup_all_vm *v)
{
	struct json_object *a = json_object_new_object();
	const char *cmd;
	char *cause = NULL;

	if (v->step == CTL_BACKUP_ALL_BACKUP) {
		cmd = "backup";
		json_object_object_add(a, "mode", json_object_new_string(ba->mode));
	} else {
		cmd = "backup-prune";
		json_object_object_add(a, "keep", json_object_new_int64(ba->keep));
	}
	json_object_object_add(a, "wait", json_object_new_boolean(1));
	if ((v->want = ctl_backup_all_send(v, cmd, v->name, a, &cause)) < 0) {
		ctl_backup_all_fail(ba, v, proto_err_name(PROTO_ERR_UNREACHABLE), "%s: %s",
		                    ba->ctl->socket, cause);
		free(cause);
	}
}

/* Connects a VM's own connection and sends its backup request. */
static void
ctl_backup_all_start(struct ctl_backup_all *ba, struct ctl_backup_all_vm *v)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	const char *path = ba->ctl->socket;
	int saved;

	v->step = CTL_BACKUP_ALL_BACKUP;
	if (strlen(path) >= sizeof sun.sun_path)
		return ctl_backup_all_fail(ba, v, proto_err_name(PROTO_ERR_UNREACHABLE),
		                           "socket path too long: %s", path);
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if ((v->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return ctl_backup_all_fail(ba, v, proto_err_name(PROTO_ERR_UNREACHABLE),
		                           "socket: %s", strerror(errno));
	ba->running++;
	if (ba->ctl->timeout_ms >= 0) {
		/* A unix connect blocks only while the listener's backlog is full. */
		int64_t t = ba->ctl->timeout_ms > 0 ? ba->ctl->timeout_ms : 1;
		struct timeval tv = {.tv_sec = t / 1000, .tv_usec = (t % 1000) * 1000};

		setsockopt(v->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	}
	if (connect(v->fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		saved = errno;
		return ctl_backup_all_fail(ba, v, proto_err_name(PROTO_ERR_UNREACHABLE),
		                           "cannot connect to %s: %s", path,
		                           saved == EAGAIN ? "timed out" : strerror(saved));
	}
	v->next_id = 1;
	ctl_backup_all_request(ba, v);
}

/* The reply to v's request: the next step, or the end. */
static void
ctl_backup_all_reply(struct ctl_backup_all *ba, struct ctl_backup_all_vm *v,
                     struct json_object *msg)
{
	struct json_object *ok, *err, *res;

	if (!json_object_object_get_ex(msg, "ok", &ok) ||
	    !json_object_is_type(ok, json_type_boolean))
		return ctl_backup_all_fail(ba, v, proto_err_name(PROTO_ERR_UNREACHABLE),
		                           "%s: reply without \"ok\"", ba->ctl->socket);
	if (!json_object_get_boolean(ok)) {
		/* The daemon's code is passed on as it came, even one this qvmctl does not know. */
		err = ctl_json_obj(msg, "error");
		return ctl_backup_all_fail(ba, v, ctl_json_str(err, "code", "failed"), "%s",
		                           ctl_json_str(err, "message", "request failed"));
	}
	res = ctl_json_obj(msg, "result");
	res = res != NULL ? json_object_get(res) : json_object_new_object();
	if (v->step == CTL_BACKUP_ALL_BACKUP) {
		v->backup = res;
		if (ba->keep == 0)
			return ctl_backup_all_end(ba, v);
		v->step = CTL_BACKUP_ALL_PRUNE;
		return ctl_backup_all_request(ba, v);
	}
	v->prune = res;
	ctl_backup_all_end(ba, v);
}

/* One line from v's connection: the reply awaited, a probe's answer, or nothing of ours. */
static void
ctl_backup_all_line(struct ctl_backup_all *ba, struct ctl_backup_all_vm *v, const char *line,
                    size_t len)
{
	struct json_tokener *tok;
	struct json_object *msg, *id;
	int64_t n;

	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (len == 0)
		return;
	if ((tok = json_tokener_new_ex(CTL_BACKUP_ALL_JSON_DEPTH)) == NULL)
		fatal("out of memory");
	msg = json_tokener_parse_ex(tok, line, (int)len);
	if (msg == NULL || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len || !json_object_is_type(msg, json_type_object)) {
		json_tokener_free(tok);
		json_object_put(msg);
		return ctl_backup_all_fail(ba, v, proto_err_name(PROTO_ERR_UNREACHABLE),
		                           "%s: invalid JSON from the daemon", ba->ctl->socket);
	}
	json_tokener_free(tok);
	if (!json_object_object_get_ex(msg, "id", &id)) {
		json_object_put(msg); /* an event: none was asked for */
		return;
	}
	n = json_object_is_type(id, json_type_int) ? json_object_get_int64(id) : 0;
	if (v->probe_id != 0 && n == v->probe_id)
		v->probe_id = 0;
	else if (id == NULL || n == v->want) /* a null id: about the connection itself */
		ctl_backup_all_reply(ba, v, msg);
	json_object_put(msg);
}

/* Reads what v's connection holds and handles each whole line. */
static void
ctl_backup_all_input(struct ctl_backup_all *ba, struct ctl_backup_all_vm *v)
{
	size_t off = 0;
	ssize_t n;
	char *nl;

	if (v->cap - v->len < CTL_BACKUP_ALL_READ_CHUNK) {
		v->cap = v->cap == 0 ? 4 * CTL_BACKUP_ALL_READ_CHUNK : v->cap * 2;
		v->buf = xrealloc(v->buf, v->cap);
	}
	n = recv(v->fd, v->buf + v->len, v->cap - v->len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0)
		return ctl_backup_all_fail(
		    ba, v, proto_err_name(PROTO_ERR_UNREACHABLE),
		    "%s: connection to the daemon lost while %s of vm %s ran%s%s", ba->ctl->socket,
		    v->step == CTL_BACKUP_ALL_PRUNE ? "the prune" : "the backup", v->name,
		    n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
	v->len += (size_t)n;
	v->heard_ms = clock_mono_ms();
	while (v->step != CTL_BACKUP_ALL_DONE &&
	       (nl = memchr(v->buf + off, '\n', v->len - off)) != NULL) {
		size_t llen = (size_t)(nl - (v->buf + off));

		ctl_backup_all_line(ba, v, v->buf + off, llen);
		off += llen + 1;
	}
	if (v->step == CTL_BACKUP_ALL_DONE)
		return; /* its buffer is gone */
	memmove(v->buf, v->buf + off, v->len - off);
	v->len -= off;
	if (v->len > CTL_CLIENT_MAX_LINE)
		ctl_backup_all_fail(ba, v, proto_err_name(PROTO_ERR_UNREACHABLE),
		                    "%s: message from the daemon larger than %u MiB",
		                    ba->ctl->socket, CTL_CLIENT_MAX_LINE >> 20);
}

/* With -t: a connection silent that long gets a "version" probe, and fails when that is not
 * answered in time either. Returns how long the wait may last (-1: forever). */
static int64_t
ctl_backup_all_liveness(struct ctl_backup_all *ba)
{
	int64_t t = ba->ctl->timeout_ms, now = clock_mono_ms(), wait = -1, left;
	char *cause = NULL;

	if (t < 0)
		return -1;
	for (size_t i = 0; i < ba->nvms; i++) {
		struct ctl_backup_all_vm *v = &ba->vms[i];

		if (v->fd == -1)
			continue;
		if (now - v->heard_ms >= t && v->probe_id != 0) {
			ctl_backup_all_fail(ba, v, proto_err_name(PROTO_ERR_UNREACHABLE),
			                    "%s: timed out: the daemon stopped answering (-t)",
			                    ba->ctl->socket);
			continue;
		}
		if (now - v->heard_ms >= t) {
			if ((v->probe_id = ctl_backup_all_send(v, "version", NULL, NULL, &cause)) <
			    0) {
				ctl_backup_all_fail(ba, v, proto_err_name(PROTO_ERR_UNREACHABLE),
				                    "%s: %s", ba->ctl->socket, cause);
				free(cause);
				cause = NULL;
				continue;
			}
		}
		left = v->heard_ms + t - now;
		if (wait < 0 || left < wait)
			wait = left > 0 ? left : 0;
	}
	return wait;
}

/* Says what an interrupt leaves behind; returns 130. */
static int
ctl_backup_all_interrupt(struct ctl_backup_all *ba)
{
	char *going = xstrdup(""), *left = xstrdup(""), *s;

	for (size_t i = 0; i < ba->nvms; i++) {
		struct ctl_backup_all_vm *v = &ba->vms[i];
		char **list = v->step == CTL_BACKUP_ALL_QUEUED ? &left : &going;

		if (v->step == CTL_BACKUP_ALL_DONE)
			continue;
		s = xasprintf("%s%s%s", *list, **list != '\0' ? ", " : "", v->name);
		free(*list);
		*list = s;
	}
	fprintf(stderr, "qvmctl: backup --all interrupted");
	if (*going != '\0')
		fprintf(stderr,
		        "; going on in qvmd (interrupting qvmctl does not cancel them, "
		        "see qvmctl jobs NAME): %s",
		        going);
	if (*left != '\0')
		fprintf(stderr, "; not started: %s", left);
	fprintf(stderr, "\n");
	free(going);
	free(left);
	return 130;
}

/* Runs every VM through its steps, at most ba->parallel at once. CTL_EXIT_OK, or 130. */
static int
ctl_backup_all_run(struct ctl_backup_all *ba)
{
	struct sigaction sa = {.sa_handler = ctl_backup_all_signal}, old_int, old_term;
	struct pollfd *pfd = xcalloc(ba->nvms, sizeof *pfd);
	struct ctl_backup_all_vm **who = xcalloc(ba->nvms, sizeof *who);
	sigset_t block, waitmask, saved;
	struct timespec ts;
	int64_t wait;
	int rc = CTL_EXIT_OK, n;
	size_t np;

	/* SIGINT and SIGTERM get through only inside ppoll: never lost between a check and a wait.
	 */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &saved);
	waitmask = saved;
	sigdelset(&waitmask, SIGINT);
	sigdelset(&waitmask, SIGTERM);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	for (;;) {
		while (ba->running < (size_t)ba->parallel && ba->next < ba->nvms)
			ctl_backup_all_start(ba, &ba->vms[ba->next++]);
		wait = ctl_backup_all_liveness(ba);
		np = 0;
		for (size_t i = 0; i < ba->nvms; i++) {
			if (ba->vms[i].fd == -1)
				continue;
			pfd[np] = (struct pollfd){.fd = ba->vms[i].fd, .events = POLLIN};
			who[np++] = &ba->vms[i];
		}
		if (np == 0 && ba->next == ba->nvms)
			break;
		if (np == 0)
			continue; /* every start failed at once: start the next ones */
		ts.tv_sec = wait / 1000;
		ts.tv_nsec = (wait % 1000) * 1000000;
		n = ppoll(pfd, np, wait >= 0 ? &ts : NULL, &waitmask);
		if (n < 0 && errno == EINTR && ctl_backup_all_interrupted) {
			rc = ctl_backup_all_interrupt(ba);
			break;
		}
		if (n < 0 && errno != EINTR)
			fatal("ppoll: %s", strerror(errno));
		for (size_t i = 0; n > 0 && i < np; i++) {
			if (pfd[i].revents != 0 && who[i]->fd == pfd[i].fd)
				ctl_backup_all_input(ba, who[i]);
		}
	}
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigprocmask(SIG_SETMASK, &saved, NULL);
	free(pfd);
	free(who);
	return rc;
}

/* Prints the outcome: {"results":[...]} with --json, else a summary (failures on stderr). */
static void
ctl_backup_all_report(struct ctl_backup_all *ba)
{
	struct json_object *res, *results, *o;
	char *names, *s;

	if (ba->ctl->json) {
		res = json_object_new_object();
		results = json_object_new_array();
		for (size_t i = 0; i < ba->nvms; i++) {
			struct ctl_backup_all_vm *v = &ba->vms[i];

			o = json_object_new_object();
			json_object_object_add(o, "vm", json_object_new_string(v->name));
			json_object_object_add(o, "ok", json_object_new_boolean(v->error == NULL));
			json_object_object_add(o, "backup", json_object_get(v->backup));
			json_object_object_add(o, "prune", json_object_get(v->prune));
			json_object_object_add(o, "error", json_object_get(v->error));
			json_object_array_add(results, o);
		}
		json_object_object_add(res, "results", results);
		ctl_print_json(stdout, res);
		json_object_put(res);
		return;
	}
	if (ba->nvms == 0) {
		printf("backup --all: no vms\n");
		return;
	}
	printf("backup --all: %zu of %zu vm%s backed up%s\n", ba->nvms - ba->failed, ba->nvms,
	       ba->nvms == 1 ? "" : "s", ba->keep > 0 ? " and pruned" : "");
	if (ba->failed == 0)
		return;
	names = xstrdup("");
	for (size_t i = 0; i < ba->nvms; i++) {
		if (ba->vms[i].error == NULL)
			continue;
		s = xasprintf("%s%s%s", names, *names != '\0' ? ", " : "", ba->vms[i].name);
		free(names);
		names = s;
	}
	fflush(stdout);
	fprintf(stderr, "qvmctl: backup --all failed for %zu of %zu vm%s: %s\n", ba->failed,
	        ba->nvms, ba->nvms == 1 ? "" : "s", names);
	free(names);
}

int
ctl_backup_all(struct ctl *ctl, struct ctl_args *args)
{
	struct ctl_backup_all ba = {
	    .ctl = ctl, .mode = "auto", .parallel = CTL_BACKUP_ALL_PARALLEL};
	bool full = ctl_args_has(args, "full"), inc = ctl_args_has(args, "incremental");
	struct json_object *reply, *res, *vms;
	int rc;

	if (!ctl_args_has(args, "all"))
		return ctl_usage_error(ctl, args->argc == 0 ? "backup: NAME or --all is required"
		                                            : "backup: --parallel and --keep go "
		                                              "with --all");
	if (args->argc > 0)
		return ctl_usage_error(ctl, "backup: --all takes no NAME");
	if (ctl_args_has(args, "to"))
		return ctl_usage_error(ctl, "backup: --all takes no --to (each vm's backups go to "
		                            "backup_dir/NAME)");
	if (ctl_args_has(args, "no-wait"))
		return ctl_usage_error(ctl, "backup: --all always waits");
	if (full && inc)
		return ctl_usage_error(ctl, "backup: --full and --incremental exclude each other");
	if ((rc = ctl_backup_all_count(ctl, args, "parallel", 1, CTL_BACKUP_ALL_PARALLEL_MAX,
	                               &ba.parallel)) != CTL_EXIT_OK ||
	    (rc = ctl_backup_all_count(ctl, args, "keep", 1, CTL_BACKUP_ALL_KEEP_MAX, &ba.keep)) !=
	        CTL_EXIT_OK)
		return rc;
	ba.mode = full ? "full" : inc ? "incremental" : "auto";

	if ((rc = ctl_call(ctl, "list", NULL, NULL, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	vms = ctl_json_array(res, "vms");
	ba.nvms = vms != NULL ? json_object_array_length(vms) : 0;
	ba.vms = xcalloc(ba.nvms > 0 ? ba.nvms : 1, sizeof *ba.vms);
	for (size_t i = 0; i < ba.nvms; i++) {
		ba.vms[i].name =
		    xstrdup(ctl_json_str(json_object_array_get_idx(vms, i), "name", "?"));
		ba.vms[i].fd = -1;
	}
	json_object_put(reply);
	/* Each VM has a connection of its own; this one would only sit idle. */
	ctl_client_free(ctl->client);
	ctl->client = NULL;

	rc = ctl_backup_all_run(&ba);
	if (rc == CTL_EXIT_OK) {
		ctl_backup_all_report(&ba);
		rc = ba.failed > 0 ? CTL_EXIT_FAILED : CTL_EXIT_OK;
	}
	for (size_t i = 0; i < ba.nvms; i++) {
		struct ctl_backup_all_vm *v = &ba.vms[i];

		if (v->fd != -1)
			close(v->fd);
		free(v->buf);
		free(v->name);
		json_object_put(v->backup);
		json_object_put(v->prune);
		json_object_put(v->error);
	}
	free(ba.vms);
	return rc;
}
