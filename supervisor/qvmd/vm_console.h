/*
 * supervisor/qvmd/vm_console: the console relay of a running VM. QEMU serves the guest's first
 * serial port on a unix socket and appends everything the guest writes to console.log itself
 * (argv.c); the relay is qvmd's one connection to that socket. It always reads at once (the guest
 * never waits for qvmd or for a client), keeps the last VM_CONSOLE_RING bytes for --tail, hands
 * the output to every attached client, passes what clients type to the guest, and rotates
 * console.log (one .1) once it is larger than console_log_max.
 *
 * A relay ends when QEMU closes the socket (its process exits): its clients are told and detached,
 * and the object stays, dead (vm_console_alive false), until its owner frees it.
 */
#ifndef QVMD_VM_CONSOLE_H
#define QVMD_VM_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct vm_console;
struct vm_console_client;

/* Recent output kept per VM for --tail. */
#define VM_CONSOLE_RING (64 * 1024)
/* Input queued for the guest beyond which clients are asked to stop sending. */
#define VM_CONSOLE_INPUT_MAX (64 * 1024)

/* What a relay tells one attached client; arg is the client's. None may detach another client. */
struct vm_console_client_cbs {
	/* Guest output (borrowed). The client may detach itself here. */
	void (*output)(void *arg, const void *buf, size_t len);
	/* The relay ended (why: "qemu closed the console"): the client is already detached. */
	void (*closed)(void *arg, const char *why);
	/* The guest takes input again after vm_console_input said it was behind. */
	void (*writable)(void *arg);
};

/*
 * Connects to the console socket of VM name (sock) and starts relaying; log is its console.log
 * (primes the recent output, rotated beyond log_max bytes). Never blocks. Returns NULL with *cause
 * when the socket cannot be reached (no such file: the VM has no console).
 */
struct vm_console *vm_console_open(struct event_base *base, const char *name, const char *sock,
                                   const char *log, uint64_t log_max, char **cause);
/* Frees a relay; clients still attached are detached without being told. NULL: no-op. Never
 * inside one of its own callbacks. */
void vm_console_free(struct vm_console *con);
const char *vm_console_name(const struct vm_console *con);
/* Whether the relay is still connected to QEMU. */
bool vm_console_alive(const struct vm_console *con);
/* The console.log size limit from now on. */
void vm_console_set_log_max(struct vm_console *con, uint64_t log_max);

/* Attaches a client (cbs borrowed, must outlive it) to a live relay. */
struct vm_console_client *vm_console_attach(struct vm_console *con,
                                            const struct vm_console_client_cbs *cbs, void *arg);
/* Detaches a client (also from inside its own output callback). NULL: no-op. */
void vm_console_detach(struct vm_console_client *cl);
/*
 * Moves what the client typed (all of in) towards the guest. Returns true when input is queued
 * beyond VM_CONSOLE_INPUT_MAX: the client should stop reading until its writable callback.
 */
bool vm_console_input(struct vm_console_client *cl, struct evbuffer *in);
/* Appends the last lines of recent output to out: at most n lines, a last one without its newline
 * counted (as tail -n does), as far as VM_CONSOLE_RING reaches. */
void vm_console_tail(const struct vm_console *con, unsigned n, struct evbuffer *out);

/* A byte ring keeping the last cap bytes written (exposed for the unit tests). */
struct vm_console_ring {
	char *buf;
	size_t cap, head, len; /* head: where the next byte goes */
};
void vm_console_ring_init(struct vm_console_ring *r, size_t cap);
void vm_console_ring_free(struct vm_console_ring *r);
void vm_console_ring_add(struct vm_console_ring *r, const void *data, size_t len);
/* The offset (from the oldest byte) where the last n lines start; r->len when n is 0. */
size_t vm_console_ring_tail_start(const struct vm_console_ring *r, unsigned n);
/* Copies len bytes from offset off (from the oldest byte) to dst. */
void vm_console_ring_copy(const struct vm_console_ring *r, size_t off, size_t len, void *dst);

/*
 * Rotates a log another process appends to (O_APPEND): its content goes to PATH.1 (replaced
 * atomically), then it is truncated, so the writer goes on at its start. Bytes the writer appends
 * between the last copy and the truncation are lost (the copy is retried until the size holds
 * still, so that window is the few instructions between a stat and ftruncate). fd: the log open
 * for writing (not appending). Returns 0, or -1 with *cause.
 */
int vm_console_rotate(int fd, const char *path, char **cause);

#endif
