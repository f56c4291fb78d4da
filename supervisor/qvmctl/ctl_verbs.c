/* The verb table, per-verb option parsing and the request/reply step every verb shares. */
#include "ctl_verbs.h"
#include "protocol.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "ctl_print.h"
#include "xalloc.h"

/* One verb a line, in the order the overview lists them. */
/* clang-format off */
const struct ctl_verb *const ctl_verbs[] = {
	&ctl_verb_list,
	&ctl_verb_status,
	&ctl_verb_start,
	&ctl_verb_powerdown,
	&ctl_verb_restart,
	&ctl_verb_reboot,
	&ctl_verb_reset,
	&ctl_verb_pause,
	&ctl_verb_resume,
	&ctl_verb_console,
	&ctl_verb_kill,
	&ctl_verb_events,
	&ctl_verb_qmp,
	&ctl_verb_reload,
	&ctl_verb_version,
	&ctl_verb_help,
	&ctl_verb_create,
	&ctl_verb_undefine,
	&ctl_verb_attach_disk,
	&ctl_verb_attach_net,
	&ctl_verb_detach,
	&ctl_verb_devices,
	&ctl_verb_media,
	&ctl_verb_apply,
	&ctl_verb_diff,
	&ctl_verb_snapshot,
	&ctl_verb_snapshots,
	&ctl_verb_revert,
	&ctl_verb_snapshot_delete,
	&ctl_verb_jobs,
	&ctl_verb_job_cancel,
	&ctl_verb_backup,
	&ctl_verb_backups,
	&ctl_verb_restore,
	&ctl_verb_backup_verify,
	&ctl_verb_backup_prune,
	NULL,
};
/* clang-format on */

const struct ctl_verb *
ctl_verb_find(const char *name)
{
	for (size_t i = 0; ctl_verbs[i] != NULL; i++) {
		if (strcmp(ctl_verbs[i]->name, name) == 0)
			return ctl_verbs[i];
	}
	return NULL;
}

/* Prints "qvmctl VERB USAGE" after first, one line per " | "-separated alternative, the others
 * after rest. */
static void
ctl_verb_usage(FILE *f, const struct ctl_verb *verb, const char *first, const char *rest)
{
	const char *p = verb->usage, *bar;
	const char *lead = first;

	for (;;) {
		bar = strstr(p, " | ");
		fprintf(f, "%sqvmctl %s%s%.*s\n", lead, verb->name, *p != '\0' ? " " : "",
		        bar != NULL ? (int)(bar - p) : (int)strlen(p), p);
		if (bar == NULL)
			break;
		p = bar + 3;
		lead = rest;
	}
}

void
ctl_usage(FILE *f)
{
	int width = 0;

	fprintf(f,
	        "usage: qvmctl [-s SOCKET] [--json] [-t SECONDS] [-h] VERB [ARGS...]\n"
	        "  -s SOCKET   control socket (default $QVMD_SOCKET, else " CTL_DEFAULT_SOCKET ")\n"
	        "  --json      print the daemon's reply as JSON\n"
	        "  -t SECONDS  give up when the daemon does not answer for this long (exit 3);\n"
	        "              a slow operation is waited for while the daemon answers\n"
	        "verbs (qvmctl help VERB, or qvmctl VERB --help, for one verb's arguments):\n");
	for (size_t i = 0; ctl_verbs[i] != NULL; i++)
		if ((int)strlen(ctl_verbs[i]->name) > width)
			width = (int)strlen(ctl_verbs[i]->name);
	for (size_t i = 0; ctl_verbs[i] != NULL; i++)
		fprintf(f, "  %-*s  %s\n", width, ctl_verbs[i]->name,
		        ctl_verbs[i]->summary != NULL ? ctl_verbs[i]->summary : "");
}

void
ctl_usage_verb(FILE *f, const struct ctl_verb *verb)
{
	const struct ctl_opt *o;
	char name[64];
	int width = 0;

	ctl_verb_usage(f, verb, "usage: ", "       ");
	if (verb->summary != NULL)
		fprintf(f, "\n%s\n", verb->summary);
	for (o = verb->opts; o != NULL && o->name != NULL; o++)
		if ((int)strlen(o->name) + (o->has_value ? 8 : 2) > width)
			width = (int)strlen(o->name) + (o->has_value ? 8 : 2);
	if (verb->opts != NULL && verb->opts[0].name != NULL)
		fprintf(f, "\noptions:\n");
	for (o = verb->opts; o != NULL && o->name != NULL; o++) {
		snprintf(name, sizeof name, "--%s%s", o->name, o->has_value ? " VALUE" : "");
		fprintf(f, "  %-*s  %s\n", width, name, o->help != NULL ? o->help : "");
	}
	fprintf(f,
	        "\nexit status: 0 done; 1 the daemon refused it or it failed (why on stderr)%s%s;\n"
	        "2 a usage error (nothing was sent); 3 qvmd unreachable, or the connection lost\n"
	        "before the reply\n",
	        verb->exits != NULL ? ", or " : "", verb->exits != NULL ? verb->exits : "");
}

/* Prints a failure: {code, message} on one line of stdout with --json (a line of its own in the
 * event stream too), else the message on stderr. */
static void
ctl_vfail(const struct ctl *ctl, enum proto_err code, const char *fmt, va_list ap)
{
	struct json_object *err;
	char *msg;

	if (vasprintf(&msg, fmt, ap) < 0)
		fatal("out of memory");
	if (ctl->json) {
		err = json_object_new_object();
		json_object_object_add(err, "code", json_object_new_string(proto_err_name(code)));
		json_object_object_add(err, "message", json_object_new_string(msg));
		printf("%s\n", ctl_json_compact(err));
		json_object_put(err);
	} else {
		fprintf(stderr, "qvmctl: %s\n", msg);
	}
	free(msg);
}

int
ctl_fail(const struct ctl *ctl, enum proto_err code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ctl_vfail(ctl, code, fmt, ap);
	va_end(ap);
	return proto_err_exit(code);
}

int
ctl_usage_error(struct ctl *ctl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ctl_vfail(ctl, PROTO_ERR_INVALID, fmt, ap);
	va_end(ap);
	if (ctl->verb != NULL && !ctl->json)
		ctl_verb_usage(stderr, ctl->verb, "usage: ", "       ");
	return CTL_EXIT_USAGE;
}

static int
ctl_opt_index(const struct ctl_verb *verb, const char *name)
{
	for (int i = 0; verb->opts != NULL && verb->opts[i].name != NULL; i++) {
		if (strcmp(verb->opts[i].name, name) == 0)
			return i;
	}
	fatal("verb %s has no option --%s", verb->name, name);
}

int
ctl_verb_parse(const struct ctl_verb *verb, int argc, char **argv, struct ctl_args *args)
{
	struct option longopts[CTL_OPTS_MAX + 2];
	struct ctl ctl = {.verb = verb};
	int n = 0, ch, idx;

	memset(args, 0, sizeof *args);
	args->verb = verb;
	for (; verb->opts != NULL && verb->opts[n].name != NULL; n++) {
		if (n == CTL_OPTS_MAX)
			fatal("verb %s has too many options", verb->name);
		longopts[n] = (struct option){
		    verb->opts[n].name, verb->opts[n].has_value ? required_argument : no_argument,
		    NULL, 256 + n};
	}
	longopts[n] = (struct option){"help", no_argument, NULL, 'h'};
	longopts[n + 1] = (struct option){NULL, 0, NULL, 0};

	/* GNU getopt permutes, so options may follow the positional arguments. */
	optind = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":h", longopts, &idx)) != -1) {
		if (ch == 'h') {
			ctl_usage_verb(stdout, verb);
			return -1;
		}
		if (ch == ':') {
			if (optopt >= 256)
				return ctl_usage_error(&ctl, "%s: option '--%s' needs a value",
				                       verb->name, verb->opts[optopt - 256].name);
			return ctl_usage_error(&ctl, "%s: option '%s' needs a value", verb->name,
			                       argv[optind - 1]);
		}
		if (ch == '?') {
			if (optopt > 0 && optopt < 256)
				return ctl_usage_error(&ctl, "%s: unknown option '-%c'", verb->name,
				                       optopt);
			return ctl_usage_error(&ctl, "%s: unknown option '%s'", verb->name,
			                       argv[optind - 1]);
		}
		idx = ch - 256;
		args->value[idx] = verb->opts[idx].has_value ? optarg : "";
		if (args->nall[idx] == CTL_OPT_REPEAT_MAX)
			return ctl_usage_error(&ctl, "%s: option '--%s' given more than %d times",
			                       verb->name, verb->opts[idx].name,
			                       CTL_OPT_REPEAT_MAX);
		args->all[idx][args->nall[idx]++] = args->value[idx];
	}
	args->argc = argc - optind;
	args->argv = argv + optind;
	if (args->argc < verb->min_args)
		return ctl_usage_error(&ctl, "%s: missing arguments", verb->name);
	if (args->argc > verb->max_args)
		return ctl_usage_error(&ctl, "%s: too many arguments", verb->name);
	for (int i = 0; i < args->argc; i++) {
		if (args->argv[i][0] == '\0')
			return ctl_usage_error(&ctl, "%s: empty argument", verb->name);
	}
	/* A NAME that no definition can have is a usage error, not a question for the daemon. */
	if (args->argc > 0 &&
	    (strncmp(verb->usage, "NAME", 4) == 0 || strncmp(verb->usage, "[NAME]", 6) == 0)) {
		char *why = cfg_name_problem(args->argv[0]);

		if (why != NULL) {
			int rc = ctl_usage_error(&ctl, "%s: %s", verb->name, why);

			free(why);
			return rc;
		}
	}
	return CTL_EXIT_OK;
}

const char *
ctl_args_get(const struct ctl_args *args, const char *name)
{
	return args->value[ctl_opt_index(args->verb, name)];
}

size_t
ctl_args_all(const struct ctl_args *args, const char *name, const char *const **values)
{
	size_t i = ctl_opt_index(args->verb, name);

	*values = args->all[i];
	return args->nall[i];
}

bool
ctl_args_has(const struct ctl_args *args, const char *name)
{
	return ctl_args_get(args, name) != NULL;
}

int
ctl_args_timeout(struct ctl *ctl, const struct ctl_args *args, const char *name, uint64_t *ms,
                 bool *given)
{
	const char *text = ctl_args_get(args, name);
	char *cause = NULL;
	int rc;

	*ms = 0;
	*given = text != NULL;
	if (text == NULL)
		return CTL_EXIT_OK;
	if (cfg_parse_timeout(text, ms, &cause) == 0)
		return CTL_EXIT_OK;
	rc = ctl_usage_error(ctl, "%s: --%s: %s", ctl->verb->name, name, cause);
	free(cause);
	return rc;
}

int
ctl_connect(struct ctl *ctl)
{
	char *cause = NULL;

	if (ctl->client != NULL)
		return CTL_EXIT_OK;
	ctl->client = ctl_client_connect(ctl->socket, ctl->timeout_ms, &cause);
	if (ctl->client == NULL) {
		ctl_fail(ctl, PROTO_ERR_UNREACHABLE, "%s (is qvmd running?)", cause);
		free(cause);
		return CTL_EXIT_UNREACHABLE;
	}
	return CTL_EXIT_OK;
}

/* Prints why the exchange with the daemon failed; returns CTL_EXIT_UNREACHABLE. */
static int
ctl_io_failed(struct ctl *ctl, enum ctl_io io, char *cause)
{
	switch (io) {
	case CTL_IO_TIMEOUT:
		ctl_fail(ctl, PROTO_ERR_UNREACHABLE,
		         "%s: timed out: the daemon stopped answering (-t)", ctl->socket);
		break;
	case CTL_IO_EOF:
		ctl_fail(ctl, PROTO_ERR_UNREACHABLE, "%s: connection lost before the reply",
		         ctl->socket);
		break;
	default:
		ctl_fail(ctl, PROTO_ERR_UNREACHABLE, "%s: %s", ctl->socket,
		         cause != NULL ? cause : "error");
		break;
	}
	free(cause);
	return CTL_EXIT_UNREACHABLE;
}

int
ctl_send(struct ctl *ctl, const char *cmd, const char *vm, struct json_object *args, int64_t *id)
{
	char *cause = NULL;
	enum ctl_io io;
	int rc;

	if ((rc = ctl_connect(ctl)) != CTL_EXIT_OK) {
		json_object_put(args);
		return rc;
	}
	io = ctl_client_send(ctl->client, cmd, vm, args, id, &cause);
	json_object_put(args);
	return io == CTL_IO_OK ? CTL_EXIT_OK : ctl_io_failed(ctl, io, cause);
}

int
ctl_call(struct ctl *ctl, const char *cmd, const char *vm, struct json_object *args,
         struct json_object **reply, struct json_object **result)
{
	int64_t id;
	int rc;

	*reply = NULL;
	*result = NULL;
	if ((rc = ctl_send(ctl, cmd, vm, args, &id)) != CTL_EXIT_OK)
		return rc;
	return ctl_reply(ctl, id, reply, result);
}

int
ctl_reply(struct ctl *ctl, int64_t id, struct json_object **reply, struct json_object **result)
{
	struct json_object *ok, *err, *res;
	enum proto_err code;
	char *cause = NULL;
	enum ctl_io io;

	*reply = NULL;
	*result = NULL;
	io = ctl_client_reply(ctl->client, id, reply, &cause);
	if (io != CTL_IO_OK)
		return ctl_io_failed(ctl, io, cause);

	if (!json_object_object_get_ex(*reply, "ok", &ok) ||
	    !json_object_is_type(ok, json_type_boolean)) {
		json_object_put(*reply);
		*reply = NULL;
		return ctl_io_failed(ctl, CTL_IO_ERROR, xstrdup("reply without \"ok\""));
	}
	if (!json_object_get_boolean(ok)) {
		if (!json_object_object_get_ex(*reply, "error", &err) ||
		    !json_object_is_type(err, json_type_object))
			err = NULL;
		/* The daemon's code is passed on as it came (even one this qvmctl does not know);
		 * the exit status comes from the table. */
		code = proto_err_parse(ctl_json_str(err, "code", NULL));
		if (code == PROTO_OK || code == PROTO_ERR_UNREACHABLE)
			code = PROTO_ERR_FAILED;
		if (ctl->json && err != NULL && ctl_json_str(err, "code", NULL) != NULL &&
		    ctl_json_str(err, "message", NULL) != NULL)
			printf("%s\n", ctl_json_compact(err));
		else
			ctl_fail(ctl, code, "%s", ctl_json_str(err, "message", "request failed"));
		json_object_put(*reply);
		*reply = NULL;
		return proto_err_exit(code);
	}
	if (!json_object_object_get_ex(*reply, "result", &res) ||
	    !json_object_is_type(res, json_type_object)) {
		res = json_object_new_object();
		json_object_object_add(*reply, "result", res);
	}
	*result = res;
	return CTL_EXIT_OK;
}
