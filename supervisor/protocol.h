/*
 * supervisor/protocol: what the daemon and qvmctl agree on about the control protocol. Error codes
 * are one enum with one name table: the wire names ("busy", "not-found" ...) are a contract with
 * scripts and never change; the CLI's exit code for each comes from the same table.
 */
#ifndef QVMD_PROTOCOL_H
#define QVMD_PROTOCOL_H

#include <stdbool.h>

enum proto_err {
	PROTO_OK = 0,
	PROTO_ERR_INVALID,         /* "invalid": a malformed request or a bad argument */
	PROTO_ERR_NOT_FOUND,       /* "not-found": no such vm or device */
	PROTO_ERR_BUSY,            /* "busy": another job of the vm is in the way */
	PROTO_ERR_NOT_RUNNING,     /* "not-running": the vm has no qemu */
	PROTO_ERR_ALREADY_RUNNING, /* "already-running" */
	PROTO_ERR_QEMU,            /* "qemu-error": qemu refused a command */
	PROTO_ERR_TIMEOUT,         /* "timeout": qemu or the guest did not answer in time */
	PROTO_ERR_DENIED,          /* "denied": not allowed (peer credentials, host resources) */
	PROTO_ERR_FAILED,          /* "failed": anything else */
	PROTO_ERR_TOO_LARGE,       /* "too-large": a request over the size limit */
	PROTO_ERR_TOO_SLOW,        /* "too-slow": a client that does not read its replies */
	PROTO_ERR_IDLE,            /* "idle": a connection closed for inactivity */
	PROTO_ERR_UNREACHABLE,     /* "unreachable": qvmctl only, the daemon did not answer */
	PROTO_ERR_COUNT
};

/* The wire name of code ("failed" for an out-of-range value); PROTO_OK is "ok". */
const char *proto_err_name(enum proto_err code);
/* The code named name; PROTO_ERR_FAILED for an unknown name (a newer daemon's code). */
enum proto_err proto_err_parse(const char *name);
/* qvmctl's exit status for code: 0 ok, 1 the daemon answered with an error, 3 unreachable. */
int proto_err_exit(enum proto_err code);

#endif
