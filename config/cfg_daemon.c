/* config/cfg_daemon: the daemon's own settings, section [qvmd] of qvmd.conf, with defaults. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "cfg_priv.h"

static const char *const log_level_names[] = {"error", "warning", "info", "debug", NULL};
static const char *const on_stop_names[] = {"leave", "powerdown", NULL};
static const char *const qmp_passthrough_names[] = {"root", "group", NULL};

#define DC(f) offsetof(struct daemon_config, f)
enum {
	DK_VM_DIR,
	DK_RUN_DIR,
	DK_STATE_DIR,
	DK_CONTROL_SOCKET,
	DK_SOCKET_GROUP,
	DK_QEMU,
	DK_QEMU_IMG,
	DK_OVMF_CODE,
	DK_OVMF_VARS,
	DK_IMAGE_DIRS,
	DK_BACKUP_DIR,
	DK_LOG_LEVEL,
	DK_ON_DAEMON_STOP,
	DK_QMP_PASSTHROUGH,
	DK_QEMU_UID_RANGE,
	DK_QEMU_USER,
	DK_AUTO_APPLY,
	DK_CONSOLE_LOG_MAX,
	DK_COUNT
};
static const struct key_spec daemon_keys[DK_COUNT] = {
    [DK_VM_DIR] = {.name = "vm_dir", .type = KEY_PATH, .off = DC(vm_dir)},
    [DK_RUN_DIR] = {.name = "run_dir", .type = KEY_PATH, .off = DC(run_dir), .flags = KEY_NOCOMMA},
    [DK_STATE_DIR] = {.name = "state_dir",
                      .type = KEY_PATH,
                      .off = DC(state_dir),
                      .flags = KEY_NOCOMMA},
    [DK_CONTROL_SOCKET] = {.name = "control_socket", .type = KEY_PATH, .off = DC(control_socket)},
    [DK_SOCKET_GROUP] = {.name = "socket_group", .type = KEY_GROUP, .off = DC(socket_group)},
    [DK_QEMU] = {.name = "qemu", .type = KEY_PATH, .off = DC(qemu)},
    [DK_QEMU_IMG] = {.name = "qemu_img", .type = KEY_PATH, .off = DC(qemu_img)},
    [DK_OVMF_CODE] = {.name = "ovmf_code", .type = KEY_PATH, .off = DC(ovmf_code)},
    [DK_OVMF_VARS] = {.name = "ovmf_vars", .type = KEY_PATH, .off = DC(ovmf_vars)},
    [DK_IMAGE_DIRS] = {.name = "image_dirs", .type = KEY_PATHS, .off = DC(image_dirs)},
    [DK_BACKUP_DIR] = {.name = "backup_dir", .type = KEY_PATH, .off = DC(backup_dir)},
    [DK_LOG_LEVEL] = {.name = "log_level",
                      .type = KEY_ENUM,
                      .off = DC(log_level),
                      .names = log_level_names,
                      .hint = "error, warning, info or debug"},
    [DK_ON_DAEMON_STOP] = {.name = "on_daemon_stop",
                           .type = KEY_ENUM,
                           .off = DC(on_daemon_stop),
                           .names = on_stop_names,
                           .hint = "leave or powerdown"},
    [DK_QMP_PASSTHROUGH] = {.name = "qmp_passthrough",
                            .type = KEY_ENUM,
                            .off = DC(qmp_passthrough),
                            .names = qmp_passthrough_names,
                            .hint = "root or group"},
    [DK_QEMU_UID_RANGE] = {.name = "qemu_uid_range", .type = KEY_STRING, .off = DC(qemu_uid_range)},
    [DK_QEMU_USER] = {.name = "qemu_user", .type = KEY_STRING, .off = DC(qemu_user)},
    [DK_AUTO_APPLY] = {.name = "auto_apply", .type = KEY_BOOL, .off = DC(auto_apply)},
    [DK_CONSOLE_LOG_MAX] = {.name = "console_log_max",
                            .type = KEY_SIZE,
                            .off = DC(console_log_max),
                            .min = CFG_CONSOLE_LOG_MAX_MIN},
};

static void
daemon_defaults(struct daemon_config *c)
{
	memset(c, 0, sizeof(*c));
	c->vm_dir = cfg_xstrdup("/etc/qvmd/vms");
	c->run_dir = cfg_xstrdup(CFG_RUN_DIR_DEFAULT);
	c->state_dir = cfg_xstrdup("/var/lib/qvmd");
	c->qemu = cfg_xstrdup("/usr/bin/qemu-system-x86_64");
	c->qemu_img = cfg_xstrdup("/usr/bin/qemu-img");
	c->ovmf_code = cfg_xstrdup("/usr/share/OVMF/OVMF_CODE_4M.fd");
	c->ovmf_vars = cfg_xstrdup("/usr/share/OVMF/OVMF_VARS_4M.fd");
	c->log_level = CFG_LOG_INFO;
	c->on_daemon_stop = CFG_ON_STOP_LEAVE;
	c->qmp_passthrough = CFG_QMP_PASSTHROUGH_ROOT;
	c->qemu_uid_first = CFG_QEMU_UID_FIRST;
	c->qemu_uid_last = CFG_QEMU_UID_LAST;
	c->console_log_max = CFG_CONSOLE_LOG_MAX_DEFAULT;
}

/* Fills in the values that default to other values. */
static void
daemon_derived(struct daemon_config *c)
{
	if (c->control_socket == NULL)
		c->control_socket = cfg_xprintf("%s/" CFG_CONTROL_SOCKET_NAME, c->run_dir);
	if (c->image_dirs == NULL) {
		c->image_dirs = cfg_xcalloc(2, sizeof(*c->image_dirs));
		c->image_dirs[0] = cfg_xstrdup(c->state_dir);
	}
	if (c->backup_dir == NULL)
		c->backup_dir = cfg_xprintf("%s/backups", c->state_dir);
}

/* A user name: the rule of a group name (KEY_GROUP); useradd's default is stricter still. */
static bool
valid_user(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 32 || *s == '-')
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '.' || *s == '-'))
			return false;
	return true;
}

/* Parses "FIRST-LAST" (plain decimal uids); returns why it is bad (allocated), or NULL. */
static char *
uid_range_problem(const char *v, unsigned *first, unsigned *last)
{
	unsigned long long n[2] = {0, 0};
	const char *p = v;

	for (int i = 0; i < 2; i++) {
		const char *start = p;

		/* Past the largest uid the value only has to stay above it. */
		for (; *p >= '0' && *p <= '9'; p++)
			if (n[i] <= CFG_QEMU_UID_MAX)
				n[i] = n[i] * 10 + (unsigned)(*p - '0');
		if (p == start)
			break;
		if (i == 0 && *p++ != '-')
			break;
		if (i == 1 && *p == '\0') {
			if (n[0] == 0)
				return cfg_xprintf(
				    "'%s' includes 0 (root): qemu never runs as root", v);
			if (n[1] > CFG_QEMU_UID_MAX)
				return cfg_xprintf("'%s': uids go up to %u", v, CFG_QEMU_UID_MAX);
			if (n[0] > n[1])
				return cfg_xprintf("'%s': the first uid is above the last", v);
			*first = (unsigned)n[0];
			*last = (unsigned)n[1];
			return NULL;
		}
	}
	return cfg_xprintf("'%s' is not a uid range (use FIRST-LAST, e.g. %u-%u)", v,
	                   CFG_QEMU_UID_FIRST, CFG_QEMU_UID_LAST);
}

/* Checks qemu_uid_range and qemu_user (their values and that at most one is given). */
static void
daemon_check_qemu_ids(struct daemon_config *c, const int *lines, struct cfg_diag *d)
{
	char *why;

	if (c->qemu_uid_range != NULL &&
	    (why = uid_range_problem(c->qemu_uid_range, &c->qemu_uid_first, &c->qemu_uid_last)) !=
	        NULL) {
		cfg_diag_add(d, lines[DK_QEMU_UID_RANGE], "[qvmd] qemu_uid_range: %s", why);
		free(why);
	}
	if (c->qemu_user == NULL)
		return;
	if (*c->qemu_user == '\0')
		cfg_diag_add(d, lines[DK_QEMU_USER],
		             "[qvmd] qemu_user: empty value (remove the line for a uid per vm)");
	else if (!valid_user(c->qemu_user))
		cfg_diag_add(d, lines[DK_QEMU_USER],
		             "[qvmd] qemu_user: '%s' is not a user name (up to 32 letters, digits, "
		             "'_', '.' or '-')",
		             c->qemu_user);
	else if (c->qemu_uid_range != NULL)
		cfg_diag_add(d, lines[DK_QEMU_USER],
		             "[qvmd] qemu_user: cannot be combined with qemu_uid_range (line %d): "
		             "every qemu runs as one user, or each vm as a uid of its own",
		             lines[DK_QEMU_UID_RANGE]);
}

static void
daemon_check(struct daemon_config *c, const int *lines, int sec_line, struct cfg_diag *d)
{
	struct sockaddr_un sun;

	int line = lines[DK_CONTROL_SOCKET] ? lines[DK_CONTROL_SOCKET] : lines[DK_RUN_DIR];

	if (strlen(c->control_socket) >= sizeof(sun.sun_path))
		cfg_diag_add(d, line ? line : sec_line,
		             "[qvmd] control_socket: '%s' is too long for a unix socket (at most "
		             "%zu bytes)",
		             c->control_socket, sizeof(sun.sun_path) - 1);
	daemon_check_qemu_ids(c, lines, d);
}

int
cfg_daemon_load_text(const char *path, const char *text, size_t len, struct daemon_config *out,
                     struct cfg_errors *errs)
{
	struct cfg_diag d;
	struct ini_doc doc;
	int lines[DK_COUNT] = {0}, sec_line = 0;
	bool failed;

	daemon_defaults(out);
	cfg_diag_init(&d, path);
	out->path = cfg_xstrdup(path);
	ini_lex(text, len, &doc, &d);
	for (size_t i = 0; i < doc.n; i++) {
		const struct ini_section *s = &doc.secs[i];
		char *label;

		if (s->ignored)
			continue;
		if (strcmp(s->kind, "qvmd") == 0 && s->id == NULL) {
			sec_line = s->line;
			cfg_apply_section(s, daemon_keys, DK_COUNT, out, lines, &d);
			continue;
		}
		label = ini_section_label(s);
		cfg_diag_add(&d, s->line, "%s: unknown section (use [qvmd])", label);
		free(label);
	}
	ini_doc_free(&doc);
	daemon_derived(out);
	daemon_check(out, lines, sec_line, &d);
	failed = d.n > 0;
	cfg_diag_flush(&d, errs);
	if (failed) {
		cfg_daemon_free(out);
		return -1;
	}
	return 0;
}

int
cfg_daemon_load(const char *path, struct daemon_config *out, struct cfg_errors *errs)
{
	struct cfg_diag d;
	char *text;
	size_t len;
	int ret;

	if (path == NULL || strcmp(path, CFG_DAEMON_CONF_DEFAULT) == 0) {
		struct stat st;

		if (path == NULL || (stat(path, &st) < 0 && errno == ENOENT)) {
			daemon_defaults(out);
			daemon_derived(out);
			return 0;
		}
	}
	cfg_diag_init(&d, path);
	if (cfg_read_diag(path, &text, &len, &d) < 0) {
		memset(out, 0, sizeof(*out));
		cfg_diag_flush(&d, errs);
		return -1;
	}
	ret = cfg_daemon_load_text(path, text, len, out, errs);
	free(text);
	return ret;
}

void
cfg_daemon_free(struct daemon_config *conf)
{
	if (conf == NULL)
		return;
	free(conf->path);
	free(conf->vm_dir);
	free(conf->run_dir);
	free(conf->state_dir);
	free(conf->control_socket);
	free(conf->socket_group);
	free(conf->qemu);
	free(conf->qemu_img);
	free(conf->ovmf_code);
	free(conf->ovmf_vars);
	free(conf->qemu_uid_range);
	free(conf->qemu_user);
	free(conf->backup_dir);
	for (size_t i = 0; conf->image_dirs != NULL && conf->image_dirs[i] != NULL; i++)
		free(conf->image_dirs[i]);
	free(conf->image_dirs);
	memset(conf, 0, sizeof(*conf));
}
