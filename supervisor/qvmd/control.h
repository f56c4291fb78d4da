/*
 * supervisor/qvmd/control: the daemon side of the control socket. Newline-delimited JSON requests
 * {"id","cmd","vm","args"} get one reply each, {"id","ok":true,"result"} or
 * {"id","ok":false,"error":{"code","message"}}; subscribers get event lines.
 */
#ifndef QVMD_CONTROL_H
#define QVMD_CONTROL_H

#include <stddef.h>

#include <stdbool.h>

struct control;
struct daemon;
struct json_object;

#define CONTROL_MAX_REQUEST (1024 * 1024)

/* Creates the socket (mode 0660, group `group` if not NULL) and starts accepting. */
struct control *control_new(struct daemon *d, const char *path, const char *group, char **cause);
void control_free(struct control *c);
/* Sends an event line to every subscriber interested in vm (borrowed; NULL: an event of qvmd
 * itself, to every subscriber). */
void control_publish(struct control *c, const char *vm, struct json_object *ev);
/* Whether a client follows vm's events (subscribed to it or to every VM). */
bool control_watched(const struct control *c, const char *vm);
/* Number of connected clients. */
size_t control_clients(const struct control *c);

#endif
