/*
 * fuzz_control: control-socket requests through the daemon's framing, parsing and dispatch
 * (supervisor/control.c, control_cmds.c), against a real daemon (daemon_init, daemon_reload,
 * control_new on a unix socket in a temp directory) with two VMs defined and never started. The
 * input is what one client sends: request lines, the last one possibly without its newline. The
 * harness connects, writes it, shuts its side down and runs the loop until the daemon closes the
 * connection (bounded: a request that never gets answered is a hang).
 *
 * So that no input starts a QEMU or spawns qemu-img (runs stay deterministic and fast), an input
 * with a request whose cmd is "start", or whose args has "create_size", is skipped; the harness
 * decides that with json-c's lenient parser, which accepts everything the daemon's strict one
 * does. A request that edits a definition (persist) is undone after the run.
 *
 * Checked: each reply line is valid UTF-8 and JSON, {"id","ok":true,"result":{...}} or
 * {"id","ok":false,"error":{"code": one of the documented codes,"message": a string}}; every
 * non-empty request line gets exactly one reply, in order (a subscriber's unterminated last line
 * may go unanswered), never ok to a line escaping a NUL (\u0000); a reply's id is null or exactly
 * its request's (a string or an integer); afterwards no client is left, no VM is active, both VMs
 * are still defined, and a new connection is answered `version`. FUZZ_CONTROL_TRACE=1 in the
 * environment prints the replies.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "fuzz_daemon_env.h"

#include "control.h"
#include "daemon.h"
#include "log.h"
#include "vm_private.h"

#define MAX_INPUT  65536
#define MAX_LINES  64
#define MAX_TURNS  100000 /* loop turns before a connection counts as hung */
#define MAX_OUTPUT (4 * 1024 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char def_web1[] = "[vm]\nname = web1\nmemory = 256M\nvcpus = 2\nmachine = q35\n"
                               "accel = tcg\nhotplug_slots = 2\nconsole = none\n\n"
                               "[disk root]\nfile = /srv/images/web1.qcow2\n\n"
                               "[net lan]\ntype = user\nmac = 52:54:00:12:34:56\n";
static const char def_db[] = "[vm]\nname = db\nmemory = 128M\nmachine = pc\naccel = tcg\n"
                             "console = none\n";

static const char *const codes[] = {
    "invalid", "not-found", "busy",   "not-running", "already-running", "qemu-error",
    "timeout", "denied",    "failed", "too-large",   "too-slow",        "idle",
};

static struct event_base *base;
static struct daemon d;
static struct daemon_config conf;

static void
restore_definitions(void)
{
	struct json_object *res;
	char vms[256];

	snprintf(vms, sizeof(vms), "%s/vms", fuzz_env_dir);
	fuzz_env_write(vms, "web1.ini", def_web1, sizeof(def_web1) - 1);
	fuzz_env_write(vms, "db.ini", def_db, sizeof(def_db) - 1);
	res = daemon_reload(&d);
	json_object_put(res);
}

static void
setup(void)
{
	char *cause = NULL;

	fuzz_env_init("fuzz_control", &conf);
	log_set_level(CFG_LOG_ERROR);
	base = event_base_new();
	FUZZ_CHECK(base != NULL);
	daemon_init(&d, base, &conf);
	restore_definitions();
	FUZZ_CHECK(d.nvms == 2);
	d.control = control_new(&d, conf.control_socket, NULL, &cause);
	FUZZ_CHECK(d.control != NULL);
}

static bool
valid_utf8(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i], n, min;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (i + n >= len)
			return false;
		for (unsigned k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

/* A request line as the daemon will see it. */
struct line {
	const char *p;
	size_t len;
	bool terminated;
	struct json_object *id; /* what the harness parsed as its id, or NULL */
	bool nul;               /* escapes a NUL (\u0000): must be refused */
};

/* Whether a request line escapes a NUL anywhere (in a value or a key). */
static bool
escapes_nul(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i] != '\\')
			continue;
		if (len - i >= 6 && memcmp(p + i + 1, "u0000", 5) == 0)
			return true;
		i++;
	}
	return false;
}

/* Splits the input as the daemon frames it; false if the input is one the harness skips. */
static bool
split(const char *buf, size_t size, struct line *lines, size_t *nlines)
{
	struct json_tokener *tok = json_tokener_new();
	size_t off = 0;
	bool ok = true;

	*nlines = 0;
	while (off < size && ok) {
		const char *nl = memchr(buf + off, '\n', size - off);
		size_t len = nl ? (size_t)(nl - (buf + off)) : size - off;
		struct line *l = &lines[*nlines];
		struct json_object *req, *v, *args;

		l->p = buf + off;
		l->len = len;
		l->terminated = nl != NULL;
		l->id = NULL;
		off += len + (nl ? 1 : 0);
		if (l->len > 0 && l->p[l->len - 1] == '\r')
			l->len--;
		if (l->len == 0)
			continue;
		if (*nlines == MAX_LINES) {
			ok = false;
			break;
		}
		(*nlines)++;
		l->nul = escapes_nul(l->p, l->len);
		json_tokener_reset(tok);
		req = json_tokener_parse_ex(tok, l->p, (int)l->len);
		if (req == NULL || !json_object_is_type(req, json_type_object)) {
			json_object_put(req);
			continue;
		}
		if (json_object_object_get_ex(req, "cmd", &v) &&
		    json_object_is_type(v, json_type_string) &&
		    strcmp(json_object_get_string(v), "start") == 0)
			ok = false;
		if (json_object_object_get_ex(req, "args", &args) &&
		    json_object_is_type(args, json_type_object) &&
		    json_object_object_get_ex(args, "create_size", NULL))
			ok = false;
		if (json_object_object_get_ex(req, "id", &v) && v != NULL)
			l->id = json_object_get(v);
		json_object_put(req);
	}
	json_tokener_free(tok);
	return ok;
}

static int
connect_client(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	FUZZ_CHECK(fd >= 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", conf.control_socket);
	FUZZ_CHECK(connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0);
	return fd;
}

/* Runs the loop and reads what the daemon sends until it closes the connection. */
static char *
converse(const char *in, size_t inlen, size_t *outlen)
{
	size_t cap = 4096, len = 0, off = 0;
	char *out = malloc(cap);
	bool shut = false;
	int fd = connect_client();

	FUZZ_CHECK(out != NULL);
	for (int turns = 0;; turns++) {
		ssize_t n;

		FUZZ_CHECK(turns < MAX_TURNS);
		if (off < inlen) {
			n = send(fd, in + off, inlen - off, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n > 0)
				off += (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				off = inlen; /* the daemon closed: its last line says why */
		}
		if (off == inlen && !shut) {
			shutdown(fd, SHUT_WR);
			shut = true;
		}
		event_base_loop(base, EVLOOP_NONBLOCK);
		for (;;) {
			if (cap - len < 4096) {
				FUZZ_CHECK(cap < MAX_OUTPUT);
				cap *= 2;
				out = realloc(out, cap);
				FUZZ_CHECK(out != NULL);
			}
			n = recv(fd, out + len, cap - len, MSG_DONTWAIT);
			if (n > 0)
				len += (size_t)n;
			else
				break;
		}
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			break;
	}
	close(fd);
	*outlen = len;
	return out;
}

static bool
known_code(const char *code)
{
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		if (strcmp(codes[i], code) == 0)
			return true;
	}
	return false;
}

/* Checks one reply line; returns it parsed (caller puts it). */
static struct json_object *
check_reply(const char *p, size_t len, bool *is_event)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o, *v, *e;

	FUZZ_CHECK(valid_utf8((const unsigned char *)p, len));
	FUZZ_CHECK(memchr(p, '\0', len) == NULL);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, p, (int)len);
	FUZZ_CHECK(o != NULL && tok->char_offset == (int)len);
	json_tokener_free(tok);
	FUZZ_CHECK(json_object_is_type(o, json_type_object));
	*is_event = json_object_object_get_ex(o, "event", NULL) &&
	            !json_object_object_get_ex(o, "ok", NULL);
	if (*is_event)
		return o;
	FUZZ_CHECK(json_object_object_get_ex(o, "id", &v));
	FUZZ_CHECK(v == NULL || json_object_is_type(v, json_type_string) ||
	           json_object_is_type(v, json_type_int));
	FUZZ_CHECK(json_object_object_get_ex(o, "ok", &v) &&
	           json_object_is_type(v, json_type_boolean));
	if (json_object_get_boolean(v)) {
		FUZZ_CHECK(!json_object_object_get_ex(o, "error", NULL));
		FUZZ_CHECK(json_object_object_get_ex(o, "result", &v) &&
		           json_object_is_type(v, json_type_object));
	} else {
		FUZZ_CHECK(!json_object_object_get_ex(o, "result", NULL));
		FUZZ_CHECK(json_object_object_get_ex(o, "error", &e) &&
		           json_object_is_type(e, json_type_object));
		FUZZ_CHECK(json_object_object_get_ex(e, "code", &v) &&
		           json_object_is_type(v, json_type_string));
		if (!known_code(json_object_get_string(v))) {
			fprintf(stderr, "unknown code: %s\n", json_object_get_string(v));
			FUZZ_CHECK(!"an error code outside the documented set");
		}
		FUZZ_CHECK(json_object_object_get_ex(e, "message", &v) &&
		           json_object_is_type(v, json_type_string) &&
		           json_object_get_string_len(v) > 0);
	}
	return o;
}

/* Checks the whole conversation against the request lines. */
static void
check_output(const char *out, size_t len, struct line *lines, size_t nlines)
{
	size_t off = 0, nreplies = 0;
	bool subscribed = false, closed = false;

	FUZZ_CHECK(len == 0 || out[len - 1] == '\n');
	while (off < len) {
		const char *nl = memchr(out + off, '\n', len - off);
		size_t l = (size_t)(nl - (out + off));
		struct json_object *o, *id, *res, *v;
		bool is_event;

		o = check_reply(out + off, l, &is_event);
		off += l + 1;
		if (is_event) {
			json_object_put(o);
			continue;
		}
		FUZZ_CHECK(!closed); /* a closing error is the last line */
		json_object_object_get_ex(o, "id", &id);
		if (nreplies == nlines) {
			/* Only a connection-closing error may come on top of the replies. */
			FUZZ_CHECK(id == NULL);
			closed = true;
			json_object_put(o);
			continue;
		}
		if (id != NULL) {
			struct json_object *want = lines[nreplies].id;

			if (want == NULL || !json_object_equal(id, want)) {
				fprintf(stderr, "reply %zu: id %s, request id %s\n", nreplies,
				        json_object_to_json_string(id),
				        want ? json_object_to_json_string(want) : "(none)");
				FUZZ_CHECK(!"a reply's id is not its request's");
			}
		}
		/* A NUL cut short would change the request's meaning. */
		if (lines[nreplies].nul && json_object_object_get_ex(o, "ok", &v) &&
		    json_object_get_boolean(v)) {
			fprintf(stderr, "request %zu escapes a NUL and was accepted\n", nreplies);
			FUZZ_CHECK(!"a request with a NUL escape was accepted");
		}
		if (json_object_object_get_ex(o, "result", &res) &&
		    json_object_object_get_ex(res, "subscribed", &v) && json_object_get_boolean(v))
			subscribed = true;
		nreplies++;
		json_object_put(o);
	}
	if (closed)
		return;
	/* A subscriber's half-close drops it: an unterminated last request goes unanswered. */
	if (subscribed && nlines > 0 && !lines[nlines - 1].terminated && nreplies == nlines - 1)
		return;
	if (nreplies != nlines) {
		fprintf(stderr, "%zu request lines, %zu replies\n", nlines, nreplies);
		FUZZ_CHECK(!"not every request got exactly one reply");
	}
}

/* The daemon still answers a new client. */
static void
check_daemon(void)
{
	static const char req[] = "{\"id\":\"v\",\"cmd\":\"version\"}\n";
	struct json_object *o, *v;
	size_t len;
	char *out;
	bool is_event;

	for (size_t i = 0; i < d.nvms; i++)
		FUZZ_CHECK(!vm_is_active(d.vms[i]));
	out = converse(req, sizeof(req) - 1, &len);
	FUZZ_CHECK(len > 0 && out[len - 1] == '\n' && memchr(out, '\n', len) == out + len - 1);
	o = check_reply(out, len - 1, &is_event);
	FUZZ_CHECK(!is_event);
	FUZZ_CHECK(json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v));
	FUZZ_CHECK(json_object_object_get_ex(o, "id", &v) &&
	           strcmp(json_object_get_string(v), "v") == 0);
	json_object_put(o);
	free(out);
	/* Dropped clients are freed on a later loop turn. */
	for (int turns = 0; turns < 4; turns++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	FUZZ_CHECK(control_clients(d.control) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct line lines[MAX_LINES + 1];
	size_t nlines = 0, outlen;
	char *in, *out;
	bool changed = false;

	if (size > MAX_INPUT)
		return -1;
	if (base == NULL)
		setup();
	in = fuzz_copy(data, size);
	if (!split(in, size, lines, &nlines)) {
		for (size_t i = 0; i < nlines; i++)
			json_object_put(lines[i].id);
		free(in);
		return -1;
	}
	out = converse(in, size, &outlen);
	if (getenv("FUZZ_CONTROL_TRACE") != NULL)
		fwrite(out, 1, outlen, stderr);
	check_output(out, outlen, lines, nlines);
	free(out);
	for (size_t i = 0; i < nlines; i++)
		json_object_put(lines[i].id);
	free(in);

	/* A persisted attach or detach edited a definition: put it back. */
	for (size_t i = 0; i < d.nvms; i++) {
		const struct vm *vm = d.vms[i];
		const char *want = strcmp(vm->name, "web1") == 0 ? def_web1 : def_db;

		if (vm->disk_text == NULL || strcmp(vm->disk_text, want) != 0)
			changed = true;
	}
	if (changed || d.nvms != 2)
		restore_definitions();
	FUZZ_CHECK(d.nvms == 2);
	check_daemon();
	return 0;
}
