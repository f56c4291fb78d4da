/*
 * qvmd: the supervisor daemon. Loads every VM definition, re-attaches to QEMUs left running by an
 * earlier qvmd, starts autostart VMs, and serves the control socket from one event loop. It never
 * forks into the background (systemd, or the operator's shell, supervises it) and leaves QEMUs
 * running when it exits unless on_daemon_stop = powerdown.
 */
#include "argv.h"
#include "bgsync.h"
#include "cfg.h"
#include "control.h"
#include "daemon.h"
#include "lockfile.h"
#include "log.h"
#include "vm.h"
#include "vm_uid.h"

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <grp.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <limits.h>

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: qvmd [-f] [-d] [-c FILE]              run in the foreground (-f: the "
	    "default and\n"
	    "                                         only mode); -d: debug log\n"
	    "       qvmd -n [-c FILE]                 check every definition and exit\n"
	    "       qvmd --print-cmdline NAME [--shell] [-c FILE]\n"
	    "                                         print the QEMU command line of a VM, one\n"
	    "                                         argument a line (--shell: one quoted line)\n"
	    "       qvmd --stop [-c FILE]             ExecStop: power every VM down first when\n"
	    "                                         on_daemon_stop = powerdown\n");
}

/* Sends a message to systemd's notify socket, if any (no libsystemd needed). */
static void
sd_notify_msg(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	socklen_t len;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof sun.sun_path)
		return;
	strcpy(sun.sun_path, path);
	if (path[0] == '@')
		sun.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun, len) < 0)
		log_debug("sd_notify: %s", strerror(errno));
	close(fd);
}

static int
mkdir_mode(const char *path, mode_t mode, const char *group)
{
	struct group *gr;

	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return -1;
	if (chmod(path, mode) < 0)
		return -1;
	if (group != NULL && (gr = getgrnam(group)) != NULL &&
	    chown(path, (uid_t)-1, gr->gr_gid) < 0)
		return -1;
	return 0;
}

/* Every VM holds a pidfd and a QMP socket: lift the soft descriptor limit to the hard one. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("cannot raise the open-file limit: %s", strerror(errno));
	}
}

/*
 * Whom QEMUs will run as, checked against the system before anything starts: never root, never
 * an existing account's id. A qvmd that is not root has nothing to drop: its QEMUs run as itself.
 */
static int
check_qemu_ids(const struct daemon_config *conf)
{
	char *cause = NULL;

	if (geteuid() != 0) {
		log_info("qvmd runs as uid %u, not root: every qemu runs as uid %u too",
		         (unsigned)geteuid(), (unsigned)geteuid());
		return 0;
	}
	if (vm_uid_check_system(conf, &cause) < 0) {
		log_error("%s%s%s", conf->path ? conf->path : "", conf->path ? ": " : "", cause);
		free(cause);
		return -1;
	}
	return 0;
}

/* qvmd -n: every definition checked, every error printed. */
static int
check_config(struct daemon_config *conf)
{
	struct daemon d;
	struct json_object *res, *errors;
	size_t n;

	daemon_init(&d, event_base_new(), conf);
	res = daemon_reload(&d);
	json_object_object_get_ex(res, "errors", &errors);
	n = json_object_array_length(errors);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "%s\n",
		        json_object_get_string(json_object_array_get_idx(errors, i)));
	printf("qvmd: %zu vm definition%s ok, %zu error%s\n", d.nvms, d.nvms == 1 ? "" : "s", n,
	       n == 1 ? "" : "s");
	json_object_put(res);
	for (size_t i = 0; i < d.nvms; i++)
		vm_free(d.vms[i]);
	free(d.vms);
	vm_uid_books_free(d.vm_env.uids);
	bgsync_free(d.vm_env.bgsync);
	event_base_free(d.base);
	return n ? 1 : 0;
}

/* Prints what `powerdown --all` did, one line per VM; returns 0 when every VM stopped. */
static int
stop_report(struct json_object *reply)
{
	struct json_object *v, *res, *vms, *err;
	int rc = 0;

	if (!json_object_object_get_ex(reply, "ok", &v) || !json_object_get_boolean(v)) {
		const char *msg = "the daemon refused the request";

		if (json_object_object_get_ex(reply, "error", &err) &&
		    json_object_object_get_ex(err, "message", &v))
			msg = json_object_get_string(v);
		fprintf(stderr, "qvmd: --stop: %s\n", msg);
		return 1;
	}
	if (!json_object_object_get_ex(reply, "result", &res) ||
	    !json_object_object_get_ex(res, "results", &vms))
		return 0;
	for (size_t i = 0; i < json_object_array_length(vms); i++) {
		struct json_object *o = json_object_array_get_idx(vms, i), *name, *ok, *ended, *ms;

		json_object_object_get_ex(o, "name", &name);
		if (json_object_object_get_ex(o, "ok", &ok) && json_object_get_boolean(ok)) {
			json_object_object_get_ex(o, "ended_by", &ended);
			json_object_object_get_ex(o, "elapsed_ms", &ms);
			printf("vm %s: stopped (ended by %s, %lld ms)\n",
			       json_object_get_string(name), json_object_get_string(ended),
			       (long long)json_object_get_int64(ms));
		} else {
			const char *msg = "still running";

			if (json_object_object_get_ex(o, "error", &err) &&
			    json_object_object_get_ex(err, "message", &v))
				msg = json_object_get_string(v);
			fprintf(stderr, "qvmd: --stop: %s\n", msg);
			rc = 1;
		}
	}
	return rc;
}

/*
 * A restart, not a stop: <run_dir>/qvmd.restarting (written by the package's postinst before it
 * restarts qvmd on an upgrade) tells the stopping qvmd to leave every VM running whatever
 * on_daemon_stop says; the next qvmd removes it when it starts.
 */
#define QVMD_RESTART_MARKER "qvmd.restarting"

static bool
restart_marked(const struct daemon_config *conf)
{
	char path[PATH_MAX];

	snprintf(path, sizeof path, "%s/%s", conf->run_dir, QVMD_RESTART_MARKER);
	return access(path, F_OK) == 0;
}

/*
 * qvmd --stop (the unit's ExecStop): with on_daemon_stop = powerdown, asks the running daemon to
 * power every VM down (in parallel, escalating per VM) and waits; with leave, does nothing.
 */
static int
stop_hook(struct daemon_config *conf)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct json_object *req, *args, *reply;
	struct json_tokener *tok;
	const char *line;
	char buf[65536];
	ssize_t n;
	size_t len;
	int fd, rc = 1;

	if (conf->on_daemon_stop != CFG_ON_STOP_POWERDOWN)
		return 0;
	if (restart_marked(conf)) {
		fprintf(stderr, "qvmd: --stop: a restart (%s/%s): the vms keep running\n",
		        conf->run_dir, QVMD_RESTART_MARKER);
		return 0;
	}
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", conf->control_socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		fprintf(stderr, "qvmd: --stop: %s: %s\n", conf->control_socket, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	req = json_object_new_object();
	args = json_object_new_object();
	json_object_object_add(args, "all", json_object_new_boolean(1));
	json_object_object_add(req, "id", json_object_new_int(1));
	json_object_object_add(req, "cmd", json_object_new_string("powerdown"));
	json_object_object_add(req, "args", args);
	line = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	len = strlen(line);
	if (write(fd, line, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
		fprintf(stderr, "qvmd: --stop: %s: %s\n", conf->control_socket, strerror(errno));
		json_object_put(req);
		close(fd);
		return 1;
	}
	json_object_put(req);
	/* The reply is one JSON object on one line; the tokener tells when it is complete. */
	tok = json_tokener_new();
	reply = NULL;
	while (reply == NULL && (n = read(fd, buf, sizeof buf)) > 0) {
		reply = json_tokener_parse_ex(tok, buf, (int)n);
		if (reply == NULL && json_tokener_get_error(tok) != json_tokener_continue)
			break;
	}
	json_tokener_free(tok);
	close(fd);
	if (reply == NULL) {
		fprintf(stderr, "qvmd: --stop: no reply from the daemon\n");
		return 1;
	}
	rc = stop_report(reply);
	json_object_put(reply);
	return rc;
}

static int
print_cmdline(struct daemon_config *conf, const char *name, bool shell)
{
	struct cfg_errors errs;
	char *path = xasprintf("%s/%s.ini", conf->vm_dir, name), *cause = NULL, **argv;
	struct vm_config *cfg;
	struct argv_env env = {.qemu = conf->qemu,
	                       .run_dir = conf->run_dir,
	                       .state_dir = conf->state_dir,
	                       .ovmf_code = conf->ovmf_code,
	                       .qmp_fd = -1};
	struct argv_image vars = {.set = 0, .fd_rw = 200, .fd_ro = 201}, *images;
	struct argv_chain *chains;
	int *fds, rc = 1;

	cfg_errors_init(&errs);
	cfg = cfg_vm_load(path, &errs);
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "%s\n", errs.msgs[i]);
	cfg_errors_free(&errs);
	free(path);
	if (cfg == NULL)
		return 1;
	/* Tap and bridge NICs get their tap descriptor at start; show where it will go. */
	fds = xcalloc(cfg->nnets + 1, sizeof *fds);
	for (size_t i = 0; i < cfg->nnets; i++)
		fds[i] = cfg->nets[i].type != CFG_NET_USER ? 100 + (int)i : -1;
	env.net_fds = fds;
	/* Images reach QEMU as fdsets of descriptors qvmd opens at start (backing files too, which
	 * are not shown here): placeholders show where they go. */
	images = xcalloc(cfg->ndisks + 1, sizeof *images);
	chains = xcalloc(cfg->ndisks + 1, sizeof *chains);
	for (size_t i = 0; i < cfg->ndisks; i++) {
		images[i].set = 1 + (long long)i;
		images[i].fd_rw = cfg->disks[i].readonly ? -1 : 202 + 2 * (int)i;
		images[i].fd_ro = 203 + 2 * (int)i;
		images[i].format = cfg->disks[i].format;
		chains[i].images = &images[i];
		chains[i].n = 1;
	}
	env.disks = chains;
	env.fw_vars = &vars;
	argv = argv_build(cfg, &env, &cause);
	if (argv == NULL) {
		fprintf(stderr, "qvmd: vm %s: %s\n", name, cause);
		free(cause);
	} else if (shell) {
		char *line = argv_shell_line(argv);

		printf("%s\n", line);
		free(line);
		rc = 0;
	} else {
		for (char **a = argv; *a; a++)
			printf("%s\n", *a);
		rc = 0;
	}
	argv_free(argv);
	free(fds);
	free(images);
	free(chains);
	cfg_vm_free(cfg);
	return rc;
}

static void
shutdown_done(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	struct daemon *d = arg;
	struct json_object *vms;

	if (json_object_object_get_ex(result, "results", &vms)) {
		for (size_t i = 0; i < json_object_array_length(vms); i++) {
			struct json_object *o = json_object_array_get_idx(vms, i), *err, *msg;

			if (json_object_object_get_ex(o, "error", &err) &&
			    json_object_object_get_ex(err, "message", &msg))
				log_error("%s", json_object_get_string(msg));
		}
	}
	json_object_put(result);
	event_base_loopbreak(d->base);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

	if (sig == SIGHUP) {
		struct json_object *res;

		log_info("SIGHUP: reloading definitions");
		res = daemon_reload(d);
		daemon_log_reload(res);
		json_object_put(res);
		return;
	}
	if (d->stopping) {
		log_warn("second signal: exiting now, vms keep running");
		event_base_loopbreak(d->base);
		return;
	}
	d->stopping = true;
	sd_notify_msg("STOPPING=1");
	if (d->conf->on_daemon_stop == CFG_ON_STOP_POWERDOWN && restart_marked(d->conf)) {
		log_info("stopping for a restart (%s): vms keep running", QVMD_RESTART_MARKER);
		event_base_loopbreak(d->base);
	} else if (d->conf->on_daemon_stop == CFG_ON_STOP_POWERDOWN) {
		log_info("stopping: powering down every vm (on_daemon_stop = powerdown)");
		daemon_powerdown_all(d, 0, shutdown_done, d);
	} else {
		log_info("stopping: vms keep running (on_daemon_stop = leave)");
		event_base_loopbreak(d->base);
	}
}

/* The autostart at boot has ended: each failure is logged (the VM says why in status too). */
static void
autostart_done(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	struct json_object *vms, *e, *m;

	if (json_object_object_get_ex(result, "results", &vms)) {
		for (size_t i = 0; i < json_object_array_length(vms); i++) {
			e = json_object_object_get(json_object_array_get_idx(vms, i), "error");
			if (e != NULL && json_object_object_get_ex(e, "message", &m))
				log_error("autostart: %s", json_object_get_string(m));
		}
	}
	json_object_put(result);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {{"print-cmdline", required_argument, NULL, 'p'},
	                                         {"help", no_argument, NULL, 'h'},
	                                         {"version", no_argument, NULL, 'V'},
	                                         {"stop", no_argument, NULL, 'S'},
	                                         {"shell", no_argument, NULL, 'L'},
	                                         {NULL, 0, NULL, 0}};
	const char *conf_path = NULL, *print_name = NULL;
	bool check = false, debug = false, stop = false, shell = false;
	struct daemon_config conf;
	struct cfg_errors errs;
	struct daemon d;
	struct event *sigs[4];
	static const int signums[] = {SIGTERM, SIGINT, SIGHUP};
	struct json_object *res;
	char *cause = NULL;
	int ch, rc, lock_fd;

	while ((ch = getopt_long(argc, argv, "c:fdnh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			conf_path = optarg;
			break;
		case 'f':
			break; /* qvmd always stays in the foreground */
		case 'd':
			debug = true;
			break;
		case 'n':
			check = true;
			break;
		case 'p':
			print_name = optarg;
			break;
		case 'S':
			stop = true;
			break;
		case 'L':
			shell = true;
			break;
		case 'V':
			printf("qvmd %s\n", QVMD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || (shell && print_name == NULL)) {
		usage(stderr);
		return 2;
	}
	if (conf_path == NULL && access(CFG_DAEMON_CONF_DEFAULT, F_OK) == 0)
		conf_path = CFG_DAEMON_CONF_DEFAULT;
	cfg_errors_init(&errs);
	rc = cfg_daemon_load(conf_path, &conf, &errs);
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "%s\n", errs.msgs[i]);
	cfg_errors_free(&errs);
	if (rc < 0)
		return 1;
	log_set_level(debug ? CFG_LOG_DEBUG : conf.log_level);
	if (!stop && print_name == NULL && check_qemu_ids(&conf) < 0) {
		cfg_daemon_free(&conf);
		return 1;
	}
	if (check) {
		rc = check_config(&conf);
		cfg_daemon_free(&conf);
		return rc;
	}
	if (stop) {
		rc = stop_hook(&conf);
		cfg_daemon_free(&conf);
		return rc;
	}
	if (print_name != NULL) {
		rc = print_cmdline(&conf, print_name, shell);
		cfg_daemon_free(&conf);
		return rc;
	}

	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	daemon_init(&d, event_base_new(), &conf);
	if (d.base == NULL)
		fatal("event_base_new failed");
	/* Every QEMU traverses both to reach its own directories below (vm_start.c); neither can be
	 * listed by anyone but root. */
	if (mkdir_mode(conf.run_dir, 0711, conf.socket_group) < 0 ||
	    mkdir_mode(conf.state_dir, 0711, NULL) < 0) {
		log_error("cannot create %s or %s: %s", conf.run_dir, conf.state_dir,
		          strerror(errno));
		return 1;
	}
	/* One qvmd per run directory: a second one would re-attach to the same QEMUs and replace
	 * the first one's control socket. */
	lock_fd = lockfile_acquire(conf.run_dir, &cause);
	if (lock_fd < 0) {
		log_error("%s", cause);
		free(cause);
		return 1;
	}
	{
		char path[PATH_MAX];

		/* This start ends the restart the marker announced. */
		snprintf(path, sizeof path, "%s/%s", conf.run_dir, QVMD_RESTART_MARKER);
		if (unlink(path) == 0)
			log_info("restarted: removed %s", path);
	}
	res = daemon_reload(&d);
	daemon_log_reload(res);
	json_object_put(res);
	/* Re-attach first: a QEMU that still runs must never be started a second time. */
	for (size_t i = 0; i < d.nvms; i++)
		vm_adopt(d.vms[i]);
	daemon_adopt_orphans(&d);
	daemon_check_uids(&d);
	d.control = control_new(&d, conf.control_socket, conf.socket_group, &cause);
	if (d.control == NULL) {
		log_error("control socket: %s", cause);
		free(cause);
		return 1;
	}
	for (size_t i = 0; i < sizeof signums / sizeof signums[0]; i++) {
		sigs[i] = evsignal_new(d.base, signums[i], signal_cb, &d);
		event_add(sigs[i], NULL);
	}
	for (size_t i = 0; i < d.nvms; i++) {
		const struct vm_config *cfg = vm_config(d.vms[i]);

		if (!(cfg && cfg->autostart) && vm_state(d.vms[i]) == VM_CRASHED)
			vm_crashed_while_away(d.vms[i]);
	}
	daemon_start_all(&d, false, autostart_done, NULL);
	log_info("qvmd %s ready: %zu vms, control socket %s", QVMD_VERSION, d.nvms,
	         conf.control_socket);
	sd_notify_msg("READY=1");
	event_base_dispatch(d.base);

	log_info("qvmd exiting");
	for (size_t i = 0; i < sizeof signums / sizeof signums[0]; i++)
		event_free(sigs[i]);
	/* Jobs in flight end now, and their clients hear why before the socket goes. */
	for (size_t i = 0; i < d.nvms; i++)
		vm_detach(d.vms[i]);
	daemon_define_abort(&d); /* a create still making images removes them */
	control_free(d.control);
	d.control = NULL;
	event_base_loop(d.base, EVLOOP_NONBLOCK);
	for (size_t i = 0; i < d.nvms; i++)
		vm_free(d.vms[i]);
	event_base_loop(d.base, EVLOOP_NONBLOCK);
	free(d.vms);
	vm_uid_books_free(d.vm_env.uids);
	bgsync_free(d.vm_env.bgsync);
	event_base_free(d.base);
	cfg_daemon_free(&conf);
	close(lock_fd);
	return 0;
}
