/*
 * qmp/: an asynchronous QMP client on a libevent event loop. One struct qmp_conn per QMP socket:
 * greeting, qmp_capabilities negotiation, commands with ids and a callback each, per-command
 * timeouts, events, and a single "closed" notification that fails every pending command exactly
 * once. Knows nothing of VMs.
 */
#ifndef QVMD_QMP_H
#define QVMD_QMP_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct json_object;
struct qmp_conn;

#define QMP_DEFAULT_MAX_MESSAGE (64u * 1024 * 1024)

enum qmp_status {
	QMP_OK,           /* "return": result holds the value */
	QMP_ERROR,        /* "error": error_class and error_desc from QEMU */
	QMP_TIMEOUT,      /* no reply within the command's timeout; a late reply is discarded */
	QMP_DISCONNECTED, /* the connection was lost (or closed) before a reply came */
};

struct qmp_reply {
	enum qmp_status status;
	struct json_object
	    *result;             /* QMP_OK: the "return" value; borrowed, valid during the call */
	const char *error_class; /* QMP_ERROR: e.g. "GenericError"; else NULL */
	const char *error_desc;  /* every failure: a human-readable description */
	const char *command;     /* the command's name */
};

typedef void (*qmp_reply_cb)(struct qmp_conn *conn, const struct qmp_reply *reply, void *arg);
/* An asynchronous event; data may be NULL; borrowed, valid during the call. */
typedef void (*qmp_event_cb)(struct qmp_conn *conn, const char *name, struct json_object *data,
                             int64_t seconds, int64_t microseconds, void *arg);
/* Negotiation finished: the connection accepts commands (queued ones are sent now). */
typedef void (*qmp_ready_cb)(struct qmp_conn *conn, void *arg);
/* The connection is gone for good (EOF, error, protocol violation, oversized message). */
typedef void (*qmp_closed_cb)(struct qmp_conn *conn, const char *cause, void *arg);
/* Raw traffic for debug logging: dir is "in" or "out"; buf is not NUL-terminated. */
typedef void (*qmp_trace_cb)(struct qmp_conn *conn, const char *dir, const char *buf, size_t len,
                             void *arg);

struct qmp_callbacks {
	qmp_ready_cb ready;
	qmp_event_cb event;
	qmp_closed_cb closed;
	qmp_trace_cb trace; /* may be NULL */
	void *arg;
};

/* Creates an unconnected client on base; callbacks are copied. */
struct qmp_conn *qmp_conn_new(struct event_base *base, const struct qmp_callbacks *cbs);
/*
 * Frees the client and closes its socket. Pending commands' callbacks are NOT called and the closed
 * callback does not fire. Must not be called from inside one of this connection's callbacks (defer
 * it to the next loop turn). NULL is a no-op.
 */
void qmp_conn_free(struct qmp_conn *conn);

/* Starts a non-blocking connect to a unix socket path. Returns 0, or -1 with *cause. */
int qmp_conn_connect_path(struct qmp_conn *conn, const char *path, char **cause);
/* Uses an already-connected socket; takes ownership of fd (closed on failure too). */
int qmp_conn_connect_fd(struct qmp_conn *conn, int fd, char **cause);

/* Largest accepted incoming message in bytes (default QMP_DEFAULT_MAX_MESSAGE). */
void qmp_conn_set_max_message(struct qmp_conn *conn, size_t bytes);
/*
 * Closes the connection with a cause when greeting + qmp_capabilities take longer than this
 * (default 30000 ms; <= 0 = never). Call before connecting.
 */
void qmp_conn_set_handshake_timeout(struct qmp_conn *conn, int timeout_ms);
/* 1 once negotiation is done and until the connection is closed. */
int qmp_conn_is_ready(const struct qmp_conn *conn);
/* The greeting's "QMP" object (version, capabilities) once received, else NULL; borrowed. */
struct json_object *qmp_conn_greeting(const struct qmp_conn *conn);
/* The sticky cause after the connection closed, else NULL. */
const char *qmp_conn_error(const struct qmp_conn *conn);

/*
 * Closes the connection now: every pending command fails with QMP_DISCONNECTED (cause), then the
 * closed callback fires. Idempotent. Safe inside callbacks.
 */
void qmp_conn_close(struct qmp_conn *conn, const char *cause);

/* Default timeout for a command, from a table (queries 5 s, device_add/del etc. 60 s). */
int qmp_default_timeout_ms(const char *command);

/*
 * Sends a command (queued until ready). args is borrowed (may be NULL). timeout_ms: 0 = the default
 * from the table, < 0 = none. cb is called exactly once (never from inside this call), unless the
 * command is cancelled. Returns the command id (> 0), or -1 with *cause if the connection has
 * already failed (sticky error; cb is not called).
 */
int64_t qmp_execute(struct qmp_conn *conn, const char *command, struct json_object *args,
                    int timeout_ms, qmp_reply_cb cb, void *arg, char **cause);
/* Same, and passes fd (borrowed; duplicated internally) with the command via SCM_RIGHTS. */
int64_t qmp_execute_fd(struct qmp_conn *conn, const char *command, struct json_object *args, int fd,
                       int timeout_ms, qmp_reply_cb cb, void *arg, char **cause);
/* Forgets a pending command: its callback will not be called. Unknown ids are ignored. */
void qmp_cancel(struct qmp_conn *conn, int64_t id);
/* Number of commands sent or queued and not yet answered. */
size_t qmp_conn_pending(const struct qmp_conn *conn);

#endif
