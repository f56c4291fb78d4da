/*
 * console: a session on a VM's first serial port, like `virsh console`. The connection is upgraded
 * by the "console" request (see supervisor/qvmd/control.c): after the reply line, what is typed
 * goes to the daemon as it is, and the daemon sends frames (type byte, 4-byte big-endian length,
 * payload): 'o' guest output, 'e' the end, {"code","message"}.
 *
 * On a terminal: raw mode (restored on every way out), Ctrl-] detaches (exit 0). Otherwise stdin is
 * copied to the guest, and at its end the output is still copied until the guest has been quiet
 * for CTL_CONSOLE_DRAIN_MS (exit 0), so that `printf 'ls\n' | qvmctl console NAME` shows the
 * answer. The session also ends when the daemon ends it (the VM stopped: exit 1; too slow a
 * reader: exit 1) or the connection is lost (exit 3).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "clock.h"
#include "ctl_print.h"
#include "ctl_verbs.h"
#include "xalloc.h"

#define CTL_CONSOLE_ESCAPE   0x1d /* Ctrl-] */
#define CTL_CONSOLE_DRAIN_MS 1000
#define CTL_CONSOLE_FRAME    5
#define CTL_CONSOLE_MAX_MSG  (16u * 1024 * 1024)
#define CTL_CONSOLE_TAIL_MAX 100000

static volatile sig_atomic_t ctl_console_signal;

static void
ctl_console_on_signal(int sig)
{
	ctl_console_signal = sig;
}

/* One session: the socket, what is buffered each way, the terminal as it was. */
struct ctl_console {
	struct ctl *ctl;
	const char *vm;
	int fd;
	bool tty;
	bool raw; /* the terminal is in raw mode: restore saved */
	struct termios saved;
	char *in; /* from the daemon, not yet handled: in[0..inlen] */
	size_t inlen, incap;
	char out[4096]; /* typed, not yet sent: out[outoff..outlen] */
	size_t outoff, outlen;
};

static void
ctl_console_restore(struct ctl_console *cs)
{
	if (!cs->raw)
		return;
	tcsetattr(STDIN_FILENO, TCSADRAIN, &cs->saved);
	cs->raw = false;
}

static bool
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		buf += n;
		len -= (size_t)n;
	}
	return true;
}

/* Connects, asks for the console and reads the reply line; what follows it stays in cs->in. */
static int
ctl_console_open(struct ctl_console *cs, unsigned tail)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct json_object *req = json_object_new_object(), *args, *reply, *err;
	const char *line;
	char *nl;
	int rc;

	if (strlen(cs->ctl->socket) >= sizeof sun.sun_path)
		return ctl_fail(cs->ctl, PROTO_ERR_UNREACHABLE, "socket path too long: %s",
		                cs->ctl->socket);
	strcpy(sun.sun_path, cs->ctl->socket);
	cs->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cs->fd < 0 || connect(cs->fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		json_object_put(req);
		return ctl_fail(cs->ctl, PROTO_ERR_UNREACHABLE, "cannot connect to %s: %s",
		                cs->ctl->socket, strerror(errno));
	}
	json_object_object_add(req, "id", json_object_new_int(1));
	json_object_object_add(req, "cmd", json_object_new_string("console"));
	json_object_object_add(req, "vm", json_object_new_string(cs->vm));
	if (tail > 0) {
		args = json_object_new_object();
		json_object_object_add(args, "tail", json_object_new_int64(tail));
		json_object_object_add(req, "args", args);
	}
	line = xasprintf("%s\n", json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN));
	json_object_put(req);
	rc = write_all(cs->fd, line, strlen(line)) ? 0 : -1;
	free((char *)line);
	if (rc < 0)
		return ctl_fail(cs->ctl, PROTO_ERR_UNREACHABLE, "%s: %s", cs->ctl->socket,
		                strerror(errno));
	/* The reply line; bytes after it already belong to the session. */
	while ((nl = cs->inlen > 0 ? memchr(cs->in, '\n', cs->inlen) : NULL) == NULL) {
		ssize_t n;

		if (cs->inlen == cs->incap) {
			if (cs->incap >= CTL_CONSOLE_MAX_MSG)
				return ctl_fail(cs->ctl, PROTO_ERR_UNREACHABLE,
				                "%s: reply too long", cs->ctl->socket);
			cs->incap = cs->incap ? cs->incap * 2 : 65536;
			cs->in = xrealloc(cs->in, cs->incap);
		}
		n = read(cs->fd, cs->in + cs->inlen, cs->incap - cs->inlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return ctl_fail(cs->ctl, PROTO_ERR_UNREACHABLE,
			                "%s: connection to the daemon lost", cs->ctl->socket);
		cs->inlen += (size_t)n;
	}
	*nl = '\0';
	reply = json_tokener_parse(cs->in);
	if (reply == NULL)
		return ctl_fail(cs->ctl, PROTO_ERR_UNREACHABLE, "%s: malformed reply",
		                cs->ctl->socket);
	if (!ctl_json_bool(reply, "ok", false)) {
		err = ctl_json_obj(reply, "error");
		rc = ctl_fail(cs->ctl, proto_err_parse(ctl_json_str(err, "code", "failed")), "%s",
		              ctl_json_str(err, "message", "console refused"));
		json_object_put(reply);
		return rc;
	}
	json_object_put(reply);
	cs->inlen -= (size_t)(nl + 1 - cs->in);
	memmove(cs->in, nl + 1, cs->inlen);
	return CTL_EXIT_OK;
}

/* Handles the complete frames in cs->in. Returns -1 to go on, else the exit status. */
static int
ctl_console_frames(struct ctl_console *cs, bool *output)
{
	size_t off = 0;
	int rc = -1;

	while (rc < 0 && cs->inlen - off >= CTL_CONSOLE_FRAME) {
		const unsigned char *h = (const unsigned char *)cs->in + off;
		size_t len = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
		const char *payload = cs->in + off + CTL_CONSOLE_FRAME;

		if (len > CTL_CONSOLE_MAX_MSG)
			return ctl_fail(cs->ctl, PROTO_ERR_UNREACHABLE, "%s: malformed frame",
			                cs->ctl->socket);
		if (cs->inlen - off - CTL_CONSOLE_FRAME < len)
			break;
		if (h[0] == 'o') {
			if (!write_all(STDOUT_FILENO, payload, len)) {
				ctl_console_restore(cs);
				rc = ctl_fail(cs->ctl, PROTO_ERR_FAILED, "stdout: %s",
				              strerror(errno));
			}
			*output = true;
		} else if (h[0] == 'e') {
			char *text = xmalloc(len + 1);
			struct json_object *end;
			const char *msg;

			memcpy(text, payload, len);
			text[len] = '\0';
			end = json_tokener_parse(text);
			free(text);
			ctl_console_restore(cs);
			msg = ctl_json_str(end, "message", "console closed");
			if (strncmp(msg, "vm ", 3) == 0)
				rc = ctl_fail(cs->ctl,
				              proto_err_parse(ctl_json_str(end, "code", "")), "%s",
				              msg);
			else
				rc = ctl_fail(cs->ctl,
				              proto_err_parse(ctl_json_str(end, "code", "")),
				              "vm %s: %s", cs->vm, msg);
			json_object_put(end);
		}
		off += CTL_CONSOLE_FRAME + len;
	}
	cs->inlen -= off;
	memmove(cs->in, cs->in + off, cs->inlen);
	return rc;
}

/* Reads what the daemon sent. Returns -1 to go on, else the exit status. */
static int
ctl_console_recv(struct ctl_console *cs, bool *output)
{
	ssize_t n;

	if (cs->incap - cs->inlen < 65536) {
		cs->incap = cs->inlen + 65536;
		cs->in = xrealloc(cs->in, cs->incap);
	}
	n = read(cs->fd, cs->in + cs->inlen, cs->incap - cs->inlen);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return -1;
	if (n <= 0) {
		ctl_console_restore(cs);
		return ctl_fail(cs->ctl, PROTO_ERR_UNREACHABLE, "%s: connection to the daemon lost",
		                cs->ctl->socket);
	}
	cs->inlen += (size_t)n;
	return ctl_console_frames(cs, output);
}

/* Reads what was typed. Returns -1 to go on, 0 at Ctrl-] (tty) , 1 at the end of stdin. */
static int
ctl_console_stdin(struct ctl_console *cs)
{
	ssize_t n = read(STDIN_FILENO, cs->out, sizeof cs->out);
	char *esc;

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return -1;
	if (n <= 0)
		return cs->tty ? 0 : 1;
	cs->outoff = 0;
	cs->outlen = (size_t)n;
	if (cs->tty && (esc = memchr(cs->out, CTL_CONSOLE_ESCAPE, cs->outlen)) != NULL) {
		cs->outlen = (size_t)(esc - cs->out);
		if (cs->outlen > 0)
			(void)send(cs->fd, cs->out, cs->outlen, MSG_NOSIGNAL);
		return 0;
	}
	return -1;
}

static int
ctl_console_loop(struct ctl_console *cs, const sigset_t *waitmask)
{
	bool stdin_open = true, output = false;
	int64_t quiet_until = -1;
	int rc;

	if (cs->inlen > 0 && (rc = ctl_console_frames(cs, &output)) >= 0)
		return rc;
	for (;;) {
		struct pollfd pfd[2] = {{.fd = cs->fd, .events = POLLIN}, {.fd = -1}};
		struct timespec ts, *tsp = NULL;
		int64_t now;

		if (cs->outoff < cs->outlen)
			pfd[0].events |= POLLOUT;
		else if (stdin_open)
			pfd[1] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
		if (!stdin_open && cs->outoff == cs->outlen) {
			now = clock_mono_ms();
			if (quiet_until < 0 || output)
				quiet_until = now + CTL_CONSOLE_DRAIN_MS;
			output = false;
			if (now >= quiet_until)
				return CTL_EXIT_OK;
			ts.tv_sec = (quiet_until - now) / 1000;
			ts.tv_nsec = (quiet_until - now) % 1000 * 1000000;
			tsp = &ts;
		}
		if (ppoll(pfd, 2, tsp, waitmask) < 0) {
			if (errno != EINTR)
				return ctl_fail(cs->ctl, PROTO_ERR_FAILED, "poll: %s",
				                strerror(errno));
			if (ctl_console_signal != 0) {
				ctl_console_restore(cs);
				return CTL_EXIT_FAILED;
			}
			continue;
		}
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			if ((rc = ctl_console_recv(cs, &output)) >= 0)
				return rc;
		}
		if ((pfd[0].revents & POLLOUT) && cs->outoff < cs->outlen) {
			ssize_t n = send(cs->fd, cs->out + cs->outoff, cs->outlen - cs->outoff,
			                 MSG_NOSIGNAL | MSG_DONTWAIT);

			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				ctl_console_restore(cs);
				return ctl_fail(cs->ctl, PROTO_ERR_UNREACHABLE,
				                "%s: connection to the daemon lost",
				                cs->ctl->socket);
			}
			if (n > 0)
				cs->outoff += (size_t)n;
		}
		if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			rc = ctl_console_stdin(cs);
			if (rc == 0)
				return CTL_EXIT_OK; /* detached */
			if (rc == 1)
				stdin_open = false;
		}
	}
}

static int
ctl_console(struct ctl *ctl, struct ctl_args *args)
{
	struct ctl_console cs = {.ctl = ctl, .vm = args->argv[0], .fd = -1};
	const char *tail_text = ctl_args_get(args, "tail");
	struct sigaction sa = {.sa_handler = ctl_console_on_signal}, ign = {.sa_handler = SIG_IGN};
	sigset_t block, waitmask;
	struct termios raw;
	unsigned long tail = 0;
	char *end;
	int rc;

	if (tail_text != NULL) {
		errno = 0;
		tail = strtoul(tail_text, &end, 10);
		if (*tail_text == '\0' || *tail_text == '-' || *end != '\0' || errno != 0 ||
		    tail > CTL_CONSOLE_TAIL_MAX)
			return ctl_usage_error(ctl,
			                       "--tail: '%s' is not a number of lines (0 to %d)",
			                       tail_text, CTL_CONSOLE_TAIL_MAX);
	}
	sigaction(SIGPIPE, &ign, NULL);
	if ((rc = ctl_console_open(&cs, (unsigned)tail)) != CTL_EXIT_OK)
		goto out;

	/*
	 * The signals that end the session stay blocked except inside ppoll, so the terminal is
	 * restored by the loop, never from a handler.
	 */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGQUIT);
	sigprocmask(SIG_BLOCK, &block, &waitmask);
	sigdelset(&waitmask, SIGINT);
	sigdelset(&waitmask, SIGTERM);
	sigdelset(&waitmask, SIGHUP);
	sigdelset(&waitmask, SIGQUIT);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);

	cs.tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &cs.saved) == 0;
	if (cs.tty) {
		fprintf(stderr, "Connected to vm %s (escape character is ^])\n", cs.vm);
		raw = cs.saved;
		cfmakeraw(&raw);
		if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
			cs.raw = true;
	}
	rc = ctl_console_loop(&cs, &waitmask);
	if (cs.tty && cs.raw) {
		ctl_console_restore(&cs);
		fputc('\n', stderr);
	}
out:
	ctl_console_restore(&cs);
	if (cs.fd >= 0)
		close(cs.fd);
	free(cs.in);
	return rc;
}

static const struct ctl_opt ctl_console_opts[] = {
    {"tail", true, "first print the last N lines the guest wrote"},
    {NULL, false, NULL},
};

const struct ctl_verb ctl_verb_console = {
    "console",
    "NAME [--tail N]",
    1,
    1,
    ctl_console_opts,
    ctl_console,
    "an interactive session on the guest's first serial port (Ctrl-] detaches)",
    "the VM stopped, has no console, or the client fell too far behind",
};
