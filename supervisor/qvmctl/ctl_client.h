/*
 * supervisor/qvmctl/ctl_client: qvmctl's blocking connection to the daemon's control socket. One
 * request, one reply (matched by id); after a subscription, the event lines that follow; liveness
 * probes while a reply is slow.
 */
#ifndef QVMD_CTL_CLIENT_H
#define QVMD_CTL_CLIENT_H

#include <signal.h>
#include <stdint.h>

#include <json-c/json.h>

#define CTL_CLIENT_MAX_LINE (64u * 1024 * 1024) /* largest reply or event line accepted */

/* Outcome of a read or a request. */
enum ctl_io {
	CTL_IO_OK,      /* a message arrived */
	CTL_IO_EOF,     /* the daemon closed the connection */
	CTL_IO_ERROR,   /* socket error or a malformed line; *cause says which */
	CTL_IO_TIMEOUT, /* the daemon did not answer a liveness probe in time */
	CTL_IO_INTR,    /* a signal unblocked by the client's signal mask arrived */
};

struct ctl_client;

/*
 * Connects to the unix socket at path. timeout_ms (-1: none) bounds the connect and an unresponsive
 * daemon, never a running operation: after timeout_ms without a word from the daemon, a "version"
 * request is sent as a liveness probe, and calls give up with CTL_IO_TIMEOUT only when that probe
 * is not answered within timeout_ms either (or the daemon reads nothing for that long). Returns
 * NULL with *cause on failure.
 */
struct ctl_client *ctl_client_connect(const char *path, int64_t timeout_ms, char **cause);
void ctl_client_free(struct ctl_client *c);

/*
 * Signals to let through while waiting (the rest of the time they stay as the caller blocked them):
 * a wait interrupted by one of them returns CTL_IO_INTR. NULL: waits keep the current mask.
 */
void ctl_client_set_waitmask(struct ctl_client *c, const sigset_t *mask);

/*
 * Sends {"id":N,"cmd":cmd,"vm":vm,"args":args} (vm and args left out when NULL; args borrowed)
 * without waiting: *id is N, for ctl_client_reply (requests may be pipelined: the daemon answers
 * each in turn).
 */
enum ctl_io ctl_client_send(struct ctl_client *c, const char *cmd, const char *vm,
                            struct json_object *args, int64_t *id, char **cause);

/*
 * Waits for the reply to request id. Replies to this client's other requests that arrive
 * meanwhile are kept for their own ctl_client_reply, events for ctl_client_next. On CTL_IO_OK,
 * *reply is the caller's; otherwise *cause is set (except for CTL_IO_EOF and CTL_IO_TIMEOUT, where
 * it may be NULL).
 */
enum ctl_io ctl_client_reply(struct ctl_client *c, int64_t id, struct json_object **reply,
                             char **cause);

/* ctl_client_send, then ctl_client_reply: sends a request and waits for its reply. */
enum ctl_io ctl_client_request(struct ctl_client *c, const char *cmd, const char *vm,
                               struct json_object *args, struct json_object **reply, char **cause);

/* Returns the next message without an id (an event); *msg is the caller's. */
enum ctl_io ctl_client_next(struct ctl_client *c, struct json_object **msg, char **cause);

#endif
