/*
 * tests/util/qmp_sync: a minimal blocking QMP client for tests and benchmarks (the daemon uses the
 * asynchronous qmp/ module). One command at a time; events that arrive meanwhile are queued and
 * can be waited for. Every call is bounded by the deadline given at connect time plus its own
 * timeout.
 */
#ifndef QVMD_QMP_SYNC_H
#define QVMD_QMP_SYNC_H

struct json_object;
struct qmp_sync;

/*
 * Connects to the unix socket at path, retrying until timeout_ms has passed (the socket may not
 * exist yet), reads the greeting and negotiates capabilities. Returns NULL with *cause.
 */
struct qmp_sync *qmp_sync_connect(const char *path, int timeout_ms, char **cause);
void qmp_sync_close(struct qmp_sync *conn);

/* The greeting QEMU sent (borrowed). */
struct json_object *qmp_sync_greeting(struct qmp_sync *conn);

/* Timeout of each later command or wait, milliseconds (default 10000). */
void qmp_sync_set_timeout(struct qmp_sync *conn, int timeout_ms);

/*
 * Sends {"execute":cmd,"arguments":args} (args: JSON text of an object, or NULL) and returns the
 * whole reply ({"return":...} or {"error":...}; caller puts it), or NULL on a broken connection,
 * a timeout or unparsable args. Events received meanwhile are queued.
 */
struct json_object *qmp_sync_cmd(struct qmp_sync *conn, const char *cmd, const char *args);

/* The "return" member of a reply, or NULL for an error reply (borrowed from reply). */
struct json_object *qmp_sync_return(struct json_object *reply);

/*
 * Returns the first queued or incoming event named name and removes it from the queue (caller puts
 * it); NULL on timeout or a broken connection.
 */
struct json_object *qmp_sync_wait_event(struct qmp_sync *conn, const char *name, int timeout_ms);

/* Waits until QEMU closes the connection (e.g. after quit). Returns 0, or -1 on timeout. */
int qmp_sync_wait_eof(struct qmp_sync *conn, int timeout_ms);

#endif
