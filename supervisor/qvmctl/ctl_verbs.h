/*
 * supervisor/qvmctl/ctl_verbs: qvmctl's verb table. Each verb declares its usage, how many
 * positional arguments it takes and which long options it accepts; the dispatcher parses those and
 * the verb's exec builds one request, sends it and prints the reply.
 */
#ifndef QVMD_CTL_VERBS_H
#define QVMD_CTL_VERBS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "cfg.h"
#include "ctl_client.h"
#include "protocol.h"

#define CTL_DEFAULT_SOCKET CFG_CONTROL_SOCKET_DEFAULT

/* Exit codes, a contract with scripts. */
enum ctl_exit {
	CTL_EXIT_OK = 0,
	CTL_EXIT_FAILED = 1,      /* the daemon answered ok:false */
	CTL_EXIT_USAGE = 2,       /* bad verb, option or value: nothing was sent */
	CTL_EXIT_UNREACHABLE = 3, /* no connection, or it was lost before the reply */
};

/* One run of qvmctl: global options and the connection, opened on first use. */
struct ctl {
	const char *socket;
	bool json;
	int64_t timeout_ms; /* -t: how long an unresponsive daemon is waited for; -1: forever */
	const struct ctl_verb *verb;
	struct ctl_client *client;
};

#define CTL_OPTS_MAX 12
/* Occurrences kept of one option (create's --disk and --net repeat; a VM has at most
 * CFG_PORTS_MAX devices). */
#define CTL_OPT_REPEAT_MAX 32

/* A long option of a verb ("--timeout D" has a value, "--persist" does not). */
struct ctl_opt {
	const char *name;
	bool has_value;
	const char *help; /* one line for `qvmctl help VERB` */
};

/* A verb's command line after option parsing. */
struct ctl_args {
	const struct ctl_verb *verb;
	int argc; /* positional arguments, options removed */
	char **argv;
	const char *value[CTL_OPTS_MAX]; /* by index in the verb's opts; NULL when not given; the
	                                    last one when given more than once */
	const char *all[CTL_OPTS_MAX][CTL_OPT_REPEAT_MAX]; /* every occurrence, in order */
	size_t nall[CTL_OPTS_MAX];
};

struct ctl_verb {
	const char *name;
	const char *usage; /* what follows the verb; alternatives separated by " | " */
	int min_args, max_args;
	const struct ctl_opt *opts; /* terminated by a NULL name; NULL for none */
	int (*exec)(struct ctl *ctl, struct ctl_args *args);
	const char *summary; /* one line for the overview and `qvmctl help VERB` */
	const char *exits;   /* what exit status 1 means beyond a refusal, or NULL */
};

extern const struct ctl_verb ctl_verb_list, ctl_verb_status, ctl_verb_start, ctl_verb_powerdown,
    ctl_verb_restart, ctl_verb_reboot, ctl_verb_reset, ctl_verb_pause, ctl_verb_resume,
    ctl_verb_kill;
extern const struct ctl_verb ctl_verb_events, ctl_verb_qmp, ctl_verb_reload, ctl_verb_version,
    ctl_verb_help;
extern const struct ctl_verb ctl_verb_console;
extern const struct ctl_verb ctl_verb_attach_disk, ctl_verb_attach_net, ctl_verb_detach,
    ctl_verb_devices;
extern const struct ctl_verb ctl_verb_snapshot, ctl_verb_snapshots, ctl_verb_revert,
    ctl_verb_snapshot_delete, ctl_verb_jobs, ctl_verb_job_cancel;
extern const struct ctl_verb ctl_verb_backup, ctl_verb_backups, ctl_verb_restore,
    ctl_verb_backup_verify, ctl_verb_backup_prune;
extern const struct ctl_verb ctl_verb_apply, ctl_verb_diff;
extern const struct ctl_verb ctl_verb_create, ctl_verb_undefine, ctl_verb_media;

/* The table, NULL-terminated, in the order usage lists it. */
extern const struct ctl_verb *const ctl_verbs[];

const struct ctl_verb *ctl_verb_find(const char *name);
/* Prints the global usage and every verb with its summary to f. */
void ctl_usage(FILE *f);
/* Prints one verb's help to f: its usage lines, summary, options and exit statuses. */
void ctl_usage_verb(FILE *f, const struct ctl_verb *verb);
/*
 * Parses argv (argv[0] is the verb) into args. Returns CTL_EXIT_OK; CTL_EXIT_USAGE after printing
 * why; or -1 after printing the verb's usage for --help.
 */
int ctl_verb_parse(const struct ctl_verb *verb, int argc, char **argv, struct ctl_args *args);

/* The value of option name: NULL when not given, "" for a given flag. */
const char *ctl_args_get(const struct ctl_args *args, const char *name);
bool ctl_args_has(const struct ctl_args *args, const char *name);
/* Every value option name was given, in command-line order; returns how many (0: none). */
size_t ctl_args_all(const struct ctl_args *args, const char *name, const char *const **values);

/*
 * Prints a failure the one way qvmctl does: with --json one {"code","message"} object on stdout,
 * else "qvmctl: <message>" on stderr. Returns the exit status for code (proto_err_exit).
 */
int ctl_fail(const struct ctl *ctl, enum proto_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prints "qvmctl: <fmt>" and the verb's usage to stderr (with --json: an "invalid" error object on
 * stdout); returns CTL_EXIT_USAGE. */
int ctl_usage_error(struct ctl *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Parses a --timeout option with cfg_parse_timeout (the range of shutdown_timeout) into *ms;
 * absent: 0 and *given false. Returns CTL_EXIT_OK, or CTL_EXIT_USAGE after printing why.
 */
int ctl_args_timeout(struct ctl *ctl, const struct ctl_args *args, const char *name, uint64_t *ms,
                     bool *given);

/*
 * Sends cmd for vm (NULL: none) with args (taken over; NULL: none) and waits for the reply. Returns
 * CTL_EXIT_OK with *reply (the caller's; put it) and *result borrowed from it; otherwise prints the
 * failure (stderr, or the error object on stdout with --json) and returns the exit code.
 */
int ctl_call(struct ctl *ctl, const char *cmd, const char *vm, struct json_object *args,
             struct json_object **reply, struct json_object **result);

/* ctl_call in two: sends the request (args taken over) without waiting, *id its id; then
 * ctl_reply waits for that reply, with ctl_call's results. A request sent before another one
 * (pipelined) is answered first; its reply is kept until asked for. */
int ctl_send(struct ctl *ctl, const char *cmd, const char *vm, struct json_object *args,
             int64_t *id);
int ctl_reply(struct ctl *ctl, int64_t id, struct json_object **reply, struct json_object **result);

/* Connects if not yet done; prints why not and returns CTL_EXIT_UNREACHABLE on failure. */
int ctl_connect(struct ctl *ctl);

#endif
