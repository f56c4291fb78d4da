/* What control.c (socket, clients, framing) and control_cmds.c (the command table) share. */
#ifndef QVMD_CONTROL_PRIVATE_H
#define QVMD_CONTROL_PRIVATE_H

#include "control.h"
#include "protocol.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct daemon_config;
struct json_object;

/* Where a reply goes: the client is looked up by serial when the answer is ready, so a client that
 * went away in the meantime is simply skipped. Also what the request's handler may need to know
 * of its requester. */
struct control_reply {
	struct control *c;
	uint64_t serial;
	struct json_object *id;
	/* The VM the request names (owned), or NULL: every error message of the request starts
	 * with "vm NAME: " (control_done adds it where the message lacks it). */
	char *vm;
	/* The requesting client's credentials (SO_PEERCRED, read once when it connected). */
	uid_t uid;
	gid_t gid;
	pid_t pid;
};

/* A vm_done_cb: writes the reply and frees the control_reply. */
void control_done(struct json_object *result, enum proto_err code, const char *message, void *arg);
/* Marks the requesting client as a subscriber (vm NULL: all VMs). */
/* Makes the client a subscriber to vm's events (NULL: every VM's), of the kinds in events (an
 * array of strings, borrowed; NULL: every kind). */
void control_subscribe(struct control_reply *r, const char *vm, struct json_object *events);
struct daemon *control_daemon(struct control *c);

/* The console command (control.c): upgrades the requesting connection to a console session of vm
 * (args.tail: first the last N lines of its output). */
struct vm;
void control_console(struct control_reply *r, struct vm *vm, const char *vm_name,
                     struct json_object *args);

/* control_cmds.c: runs one request; answers through r (now or later). */
void control_dispatch(struct control_reply *r, const char *cmd, const char *vm,
                      struct json_object *args);
/* Whether a client running as uid may send raw QMP (the qmp command): root and qvmd's own user
 * always, members of socket_group only with qmp_passthrough = group. */
bool control_may_passthrough(const struct daemon_config *conf, uid_t uid);

#endif
