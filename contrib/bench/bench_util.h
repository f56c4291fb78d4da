/*
 * contrib/bench/bench_util: what the lifecycle and hot-plug benchmarks share: a monotonic clock,
 * sample statistics, spawning and timing commands, reading an argv file (qvmd --print-cmdline
 * output), starting a QEMU from it and timing its QMP greeting, and a blocking client for qvmd's
 * control socket (one request at a time).
 */
#ifndef QVMD_BENCH_UTIL_H
#define QVMD_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct json_object;

int64_t bench_now_ns(void);
void bench_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Sorts v in place; the value at quantile q (0..1). */
int64_t bench_quantile(int64_t *v, size_t n, double q);
/* Room for n timings (nanoseconds), zeroed; aborts when out of memory. */
int64_t *bench_samples(size_t n);

/* Prints "NAME: median=X ms p10=X p90=X min=X (n=N)" and the KEY=median_ms line for scripts. */
void bench_report(const char *key, const char *what, int64_t *ns, size_t n);

/* Runs argv (stdin, stdout and stderr on /dev/null) and waits: its exit status, or -1. */
int bench_run(char *const argv[], int64_t *elapsed_ns);
/* Runs a qvmctl command line (qvmctl -s SOCKET VERB ARGS...) timed into *elapsed_ns; exits naming
 * the command when it fails. */
void bench_ctl_timed(char **argv, int64_t *elapsed_ns);

/* Reads an argv file (one argument per line, as qvmd --print-cmdline prints); NULL-terminated. */
char **bench_read_argv(const char *path);
void bench_free_argv(char **argv);

/* The socket path of the "-qmp unix:PATH,..." argument of argv. */
char *bench_qmp_path(char **argv);

/*
 * Spawns argv with stdout and stderr appended to logpath and waits until its QMP greeting has
 * arrived on qmp_path (the socket is watched with inotify, then connected). Returns the pid; the
 * connected socket (greeting read, nothing sent) in *fd; *elapsed_ns from spawn to greeting.
 */
pid_t bench_spawn_qemu(char **argv, const char *qmp_path, const char *logpath, int *fd,
                       int64_t *elapsed_ns);
/*
 * Sends one command line (JSON text, no newline) on a raw QMP socket and reads until its reply,
 * skipping events. Dies on EOF, an error reply or a timeout.
 */
void bench_qmp_raw(int fd, const char *json);
/* Waits until both files (guest console logs) hold a line with marker; dies after timeout_s. */
void bench_wait_marker(const char *a, const char *b, const char *marker, int timeout_s);
/* SIGKILLs pid and reaps it. */
void bench_kill(pid_t pid);

/* A connected unix stream socket to path, or -1. */
int bench_dial(const char *path);

/* A blocking control-socket client. */
struct bench_ctl;
struct bench_ctl *bench_ctl_connect(const char *path);
void bench_ctl_close(struct bench_ctl *c);
/*
 * Sends {"id":N,"cmd":cmd,"vm":vm,"args":args} (args: JSON text or NULL) and returns the reply
 * (caller puts it); dies on a broken connection. ok reports the reply's "ok".
 */
struct json_object *bench_ctl_call(struct bench_ctl *c, const char *cmd, const char *vm,
                                   const char *args, int *ok);

#endif
