/*
 * fake_qmp: a scriptable QMP peer for unit tests, in the spirit of libvirt's
 * qemumonitortestutils. It lives on the test's event_base (no threads) at one end of a socket
 * and runs a script of steps in order: send bytes, expect a command and answer it, sleep, call
 * back into the test, stream a huge message, close. A command that does not match the expected
 * one, a reply to a command never received, or a step left unused makes fake_qmp_assert_done()
 * fail the test.
 */
#ifndef QVMD_FAKE_QMP_H
#define QVMD_FAKE_QMP_H

#include <stddef.h>

struct event_base;
struct json_object;
struct fake_qmp;

/* A peer on a new socketpair; *client_fd gets the other end (the caller's to own). */
struct fake_qmp *fake_qmp_new(struct event_base *base, int *client_fd);
/* A peer on an already-connected socket; takes ownership of fd. */
struct fake_qmp *fake_qmp_new_fd(struct event_base *base, int fd);
void fake_qmp_free(struct fake_qmp *fq);

/* Writes at most this many bytes per loop turn (1 = byte-at-a-time delivery); 0 = no limit. */
void fake_qmp_set_chunk(struct fake_qmp *fq, size_t bytes);

/* Stops (0) or resumes (1) reading from the socket, at once: lets the client's writes back up. */
void fake_qmp_set_reading(struct fake_qmp *fq, int on);

/* Script steps, run in the order they are added. */
/* Sends QEMU 7.2's greeting followed by CRLF. */
void fake_qmp_greeting(struct fake_qmp *fq);
/* Greeting, then expects qmp_capabilities and answers {"return":{}}. */
void fake_qmp_handshake(struct fake_qmp *fq);
/* Sends raw bytes. */
void fake_qmp_send(struct fake_qmp *fq, const char *raw);
void fake_qmp_send_len(struct fake_qmp *fq, const void *buf, size_t len);
/*
 * Expects the next command to be `command` (with `args` as JSON if not NULL) and answers
 * `reply` (JSON; the command's id is added) followed by CRLF; reply NULL = never answer.
 * The command must not carry an fd. Returns the expectation's index for fake_qmp_reply().
 */
int fake_qmp_expect(struct fake_qmp *fq, const char *command, const char *args, const char *reply);
/* Same, but the reply is only sent by a later fake_qmp_reply() step. */
int fake_qmp_expect_later(struct fake_qmp *fq, const char *command, const char *args,
                          const char *reply);
/* Same as fake_qmp_expect, and the command must carry an fd for the same file as same_as. */
int fake_qmp_expect_fd(struct fake_qmp *fq, const char *command, const char *args,
                       const char *reply, int same_as);
/* Sends the reply of expectation idx (again, if it was sent already: a duplicate). */
void fake_qmp_reply(struct fake_qmp *fq, int idx);
/* Waits ms milliseconds. */
void fake_qmp_sleep(struct fake_qmp *fq, int ms);
/* Calls fn(arg) from the loop when the script reaches this step. */
void fake_qmp_call(struct fake_qmp *fq, void (*fn)(void *), void *arg);
/*
 * Streams prefix, count bytes of fill, then suffix, without holding them in memory. Ends when
 * all is written or when the client stops reading (closes).
 */
void fake_qmp_stream(struct fake_qmp *fq, const char *prefix, char fill, size_t count,
                     const char *suffix);
/* Waits until everything queued is written, then closes the socket (the client sees EOF). */
void fake_qmp_close(struct fake_qmp *fq);

/* Results. */
/* 1 once every step ran. */
int fake_qmp_done(const struct fake_qmp *fq);
/* 1 once the client closed its end (EOF or a write error seen by the peer). */
int fake_qmp_client_gone(const struct fake_qmp *fq);
/* The first failure (mismatch, protocol violation seen by the peer), else NULL. */
const char *fake_qmp_failure(const struct fake_qmp *fq);
/* Bytes of the stream step written so far. */
size_t fake_qmp_streamed(const struct fake_qmp *fq);
/* The command matched by expectation idx (borrowed), or NULL if none arrived yet. */
struct json_object *fake_qmp_command(const struct fake_qmp *fq, int idx);
/* Number of commands received and not consumed by an expectation. */
size_t fake_qmp_unexpected(const struct fake_qmp *fq);
/* cmocka: fails the test if a failure was recorded, a step is unused or a command unexpected. */
void fake_qmp_assert_done(const struct fake_qmp *fq);

#endif
