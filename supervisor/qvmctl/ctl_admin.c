/* Verbs about the daemon rather than one VM's lifecycle: qmp passthrough, reload, version. */
#include <stdlib.h>
#include <string.h>

#include "ctl_print.h"
#include "ctl_verbs.h"
#include "xalloc.h"

#define CTL_QMP_JSON_DEPTH 128

/* Parses the JSON-ARGS of qmp: one object and nothing after it. NULL after printing why. */
static struct json_object *
ctl_qmp_parse_args(struct ctl *ctl, const char *text)
{
	struct json_tokener *tok = json_tokener_new_ex(CTL_QMP_JSON_DEPTH);
	struct json_object *obj;
	enum json_tokener_error err;
	size_t end, len = strlen(text);

	if (tok == NULL)
		fatal("out of memory");
	obj = json_tokener_parse_ex(tok, text, (int)len);
	err = json_tokener_get_error(tok);
	if (err == json_tokener_continue) /* input ended inside a value */
		obj = json_tokener_parse_ex(tok, "", 1);
	err = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (obj == NULL || err != json_tokener_success) {
		json_object_put(obj);
		ctl_usage_error(ctl, "qmp: JSON-ARGS is not valid JSON: %s",
		                err != json_tokener_success ? json_tokener_error_desc(err)
		                                            : "empty input");
		return NULL;
	}
	while (end < len && strchr(" \t\r\n", text[end]) != NULL)
		end++;
	if (end < len) {
		json_object_put(obj);
		ctl_usage_error(
		    ctl, "qmp: JSON-ARGS is not valid JSON: unexpected text at offset %zu", end);
		return NULL;
	}
	if (!json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		ctl_usage_error(
		    ctl, "qmp: JSON-ARGS must be a JSON object, like '{\"device\":\"nic1\"}'");
		return NULL;
	}
	return obj;
}

static int
ctl_qmp(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *req, *arguments = NULL, *reply, *res, *ret;
	int rc;

	if (args->argc == 3 && (arguments = ctl_qmp_parse_args(ctl, args->argv[2])) == NULL)
		return CTL_EXIT_USAGE;
	req = json_object_new_object();
	json_object_object_add(req, "command", json_object_new_string(args->argv[1]));
	if (arguments != NULL)
		json_object_object_add(req, "arguments", arguments);
	if ((rc = ctl_call(ctl, "qmp", args->argv[0], req, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	/* QEMU's return value, unwrapped, with or without --json: the daemon's {"return": ...}
	 * wrapper adds nothing (a failure is the {code, message} object) and the plain output is
	 * already JSON. */
	if (json_object_object_get_ex(res, "return", &ret))
		ctl_print_json(stdout, ret);
	else
		ctl_print_json(stdout, res);
	json_object_put(reply);
	return CTL_EXIT_OK;
}

/* Prints "key: a, b" or "key: none". */
static void
ctl_reload_names(struct json_object *res, const char *key)
{
	struct json_object *list = ctl_json_array(res, key);
	size_t n = list != NULL ? json_object_array_length(list) : 0;

	printf("%s:", key);
	for (size_t i = 0; i < n; i++)
		printf("%s %s", i > 0 ? "," : "",
		       json_object_get_string(json_object_array_get_idx(list, i)));
	printf("%s\n", n == 0 ? " none" : "");
}

static int
ctl_reload(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *reply, *res, *errors;
	size_t n;
	int rc;

	if ((rc = ctl_call(ctl, "reload", NULL, NULL, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	/* A definition that did not load is a failure for scripts, though the rest reloaded. */
	errors = ctl_json_array(res, "errors");
	n = errors != NULL ? json_object_array_length(errors) : 0;
	rc = n > 0 ? CTL_EXIT_FAILED : CTL_EXIT_OK;
	if (ctl->json) {
		ctl_print_json(stdout, res);
		json_object_put(reply);
		return rc;
	}
	ctl_reload_names(res, "added");
	ctl_reload_names(res, "removed");
	ctl_reload_names(res, "changed");
	printf("errors:%s\n", n == 0 ? " none" : "");
	for (size_t i = 0; i < n; i++)
		printf("  %s\n", json_object_get_string(json_object_array_get_idx(errors, i)));
	json_object_put(reply);
	return rc;
}

static int
ctl_version(struct ctl *ctl, struct ctl_args *args)
{
	struct json_object *reply, *res;
	int rc;

	if (!ctl->json)
		printf("qvmctl %s\n", QVMD_VERSION);
	fflush(stdout);
	if ((rc = ctl_call(ctl, "version", NULL, NULL, &reply, &res)) != CTL_EXIT_OK)
		return rc;
	if (ctl->json) {
		json_object_object_add(res, "client_version", json_object_new_string(QVMD_VERSION));
		ctl_print_json(stdout, res);
	} else {
		printf("qvmd %s\n", ctl_json_str(res, "version", "?"));
	}
	json_object_put(reply);
	return CTL_EXIT_OK;
}

/* help [VERB]: the overview, or one verb's arguments, options and exit statuses (no daemon). */
static int
ctl_help(struct ctl *ctl, struct ctl_args *args)
{
	const struct ctl_verb *verb;

	if (args->argc == 0) {
		ctl_usage(stdout);
		return CTL_EXIT_OK;
	}
	if ((verb = ctl_verb_find(args->argv[0])) == NULL)
		return ctl_usage_error(ctl, "help: unknown verb '%s'", args->argv[0]);
	ctl_usage_verb(stdout, verb);
	return CTL_EXIT_OK;
}

const struct ctl_verb ctl_verb_qmp = {
    "qmp",
    "NAME COMMAND [JSON-ARGS]",
    2,
    3,
    NULL,
    ctl_qmp,
    "send one raw QMP command and print QEMU's answer (root and qvmd's user only, unless "
    "qmp_passthrough = group)",
    NULL,
};
const struct ctl_verb ctl_verb_reload = {
    "reload",
    "",
    0,
    0,
    NULL,
    ctl_reload,
    "re-read every definition: added, removed and changed VMs, and each file:line error",
    "a definition has errors (the others were reloaded)",
};
const struct ctl_verb ctl_verb_version = {
    "version", "", 0, 0, NULL, ctl_version, "qvmctl's version and the running qvmd's", NULL,
};
const struct ctl_verb ctl_verb_help = {
    "help",
    "[VERB]",
    0,
    1,
    NULL,
    ctl_help,
    "this overview, or one verb's arguments, options and exit statuses",
    NULL,
};
