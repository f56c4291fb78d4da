/* What control.c (socket, clients, framing) and control_cmds.c (the command table) share. */
#ifndef QVMD_CONTROL_PRIVATE_H
#define QVMD_CONTROL_PRIVATE_H

#include "control.h"
#include "protocol.h"

#include <stdbool.h>
#include <stdint.h>

struct json_object;

/* Where a reply goes: the client is looked up by serial when the answer is ready, so a client that
 * went away in the meantime is simply skipped. */
struct control_reply {
	struct control *c;
	uint64_t serial;
	struct json_object *id;
};

/* A vm_done_cb: writes the reply and frees the control_reply. */
void control_done(struct json_object *result, enum proto_err code, const char *message, void *arg);
/* Marks the requesting client as a subscriber (vm NULL: all VMs). */
void control_subscribe(struct control_reply *r, const char *vm);
struct daemon *control_daemon(struct control *c);

/* control_cmds.c: runs one request; answers through r (now or later). */
void control_dispatch(struct control_reply *r, const char *cmd, const char *vm,
                      struct json_object *args);

#endif
