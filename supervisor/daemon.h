/* supervisor/daemon: the daemon's state: its settings, its VMs, its control socket, one event loop.
 */
#ifndef QVMD_DAEMON_H
#define QVMD_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct control;
struct daemon_config;
struct event_base;
struct json_object;
struct vm;

struct daemon {
	struct event_base *base;
	struct daemon_config *conf;
	char *conf_path;
	struct vm **vms; /* sorted by name */
	size_t nvms;
	struct control *control;
	bool stopping;
};

struct vm *daemon_find_vm(struct daemon *d, const char *name);
/* Loads every definition in vm_dir; adds new VMs, updates changed ones, drops removed stopped ones.
 */
struct json_object *daemon_reload(struct daemon *d);
/* Publishes an event to subscribers (takes ownership of ev). */
void daemon_publish(struct daemon *d, const char *vm, struct json_object *ev);
/* Called by a VM whose definition was removed and that just stopped. */
void daemon_vm_gone(struct daemon *d, struct vm *vm);

/* Milliseconds since the epoch / on the monotonic clock. */
int64_t daemon_now_ms(void);
int64_t daemon_mono_ms(void);

#endif
