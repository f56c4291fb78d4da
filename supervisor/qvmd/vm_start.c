/*
 * Starting a VM, and the restart policy. A start is a job: the definition is read again (a file
 * with errors is refused with them), missing disk images are created, QEMU is spawned paused (-S)
 * with a QMP listening socket qvmd created itself; qvmd connects, negotiates, then sends `cont`,
 * so no guest instruction runs before the supervisor is attached. A start never spawns a second
 * QEMU for a VM whose QEMU still runs.
 */
#include "vm.h"
#include "vm_job.h"
#include "vm_private.h"

#include "argv.h"
#include "cfg.h"
#include "clock.h"
#include "imgchain.h"
#include "log.h"
#include "proc.h"
#include "vm_helper.h"
#include "vm_uid.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define START_TIMEOUT_MS     60000 /* QEMU exec -> QMP ready */
#define RESTART_RESET_MS     60000 /* a VM that ran this long gets its back-off reset */
#define RESTART_MAX_DELAY_MS 60000
#define SPAWN_FDS_MAX        256 /* descriptors a QEMU inherits: QMP socket, taps, images */

struct start_job {
	struct vm_images *images; /* while missing images are created */
	char *failed;             /* why the start failed, reported when QEMU is gone */
};

static void
start_free(void *data)
{
	struct start_job *sj = data;

	vm_host_images_free(sj->images);
	free(sj->failed);
	free(sj);
}

/* Marks the start failed and kills QEMU: the job ends when QEMU is gone. */
static void
start_abandon(struct vm_job *job, char *why)
{
	struct start_job *sj = job->data;

	if (sj->failed == NULL)
		sj->failed = why;
	else
		free(why);
	if (job->vm->pidfd >= 0)
		proc_pidfd_signal(job->vm->pidfd, SIGKILL);
}

static void
start_timer(struct vm_job *job)
{
	start_abandon(job, xasprintf("vm %s: qemu did not become ready within %d s", job->vm->name,
	                             START_TIMEOUT_MS / 1000));
}

static bool
start_qemu_gone(struct vm_job *job, const struct vm_exit *exit)
{
	struct start_job *sj = job->data;
	struct vm *vm = job->vm;

	vm_set_state(vm, VM_STOPPED);
	vm_set_last_exit(vm, exit, "start failed", xasprintf("qemu %s during start", exit->reason));
	if (sj->failed != NULL)
		vm_job_done(job, NULL, PROTO_ERR_FAILED, "%s", sj->failed);
	else
		vm_job_done(job, NULL, PROTO_ERR_FAILED, "vm %s: qemu %s during start%s%s",
		            vm->name, exit->reason, *exit->tail ? ": " : "", exit->tail);
	return true;
}

static const struct vm_job_kind start_kind = {
    .name = "start",
    .op = VM_OP_START,
    .timer = start_timer,
    .qemu_gone = start_qemu_gone,
    .free = start_free,
};

/* Fails a start before QEMU was spawned (takes msg). */
static void
start_fail(struct vm_job *job, char *msg)
{
	struct vm *vm = job->vm;

	vm_set_state(vm, VM_STOPPED);
	vm_set_last_exit(vm, NULL, "start failed", xasprintf("start failed: %s", msg));
	vm_job_done(job, NULL, PROTO_ERR_FAILED, "vm %s: %s", vm->name, msg);
	free(msg);
	vm_check_gone(vm);
}

/*
 * Who the VM's QEMU runs as, and what it needs of the file system under those ids. Its run and
 * state directories stay root's but become traversable (not listable, not writable) by its gid;
 * it creates files only in <run_dir>/<name>/qemu/ (its pidfile), a directory of its own. Its
 * console log is handed over to it. Everything else it opens by name is checked as its ids right
 * before exec: the kernel, initrd and firmware, /dev/kvm. With qvmd not root, QEMU runs as qvmd
 * (*use_creds false). Returns 0, or -1 with *cause.
 */
static int
start_creds(struct vm *vm, const char *qemu_dir, struct proc_creds *creds, struct proc_path *paths,
            bool *use_creds, char **cause)
{
	const struct vm_config *cfg = vm->live_cfg;
	const struct daemon_config *conf = vm->env.conf;
	char *run = vm_run_path(vm, ""), *state = vm_state_path(vm, "");
	char *console = vm_state_path(vm, "console.log");
	struct vm_ids ids;
	struct group *kvm;
	size_t n = 0;
	int rc = -1, fd;

	*use_creds = geteuid() == 0;
	if (!*use_creds) {
		if (mkdir(qemu_dir, 0700) < 0 && errno != EEXIST) {
			*cause = xasprintf("cannot create %s: %s", qemu_dir, strerror(errno));
			goto out;
		}
		rc = 0;
		goto out;
	}
	if (vm_uid_assign(vm->env.uids, vm->name, &ids, cause) < 0 ||
	    vm_host_own_dir(run, false, &ids, 0710, cause) < 0 ||
	    vm_host_own_dir(qemu_dir, true, &ids, 0700, cause) < 0 ||
	    vm_host_own_dir(state, false, &ids, 0710, cause) < 0)
		goto out;
	if (cfg->console == CFG_CONSOLE_LOG) {
		fd =
		    open(console,
		         O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
		if (fd < 0 || fchown(fd, ids.uid, ids.gid) < 0) {
			*cause = xasprintf("%s: %s", console, strerror(errno));
			if (fd >= 0)
				close(fd);
			goto out;
		}
		close(fd);
	}
	paths[n++] = (struct proc_path){"pidfile directory", qemu_dir, W_OK | X_OK};
	if (cfg->kernel != NULL)
		paths[n++] = (struct proc_path){"kernel", cfg->kernel, R_OK};
	if (cfg->initrd != NULL)
		paths[n++] = (struct proc_path){"initrd", cfg->initrd, R_OK};
	if (cfg->firmware == CFG_FIRMWARE_UEFI)
		paths[n++] = (struct proc_path){"uefi firmware", conf->ovmf_code, R_OK};
	if (cfg->accel == CFG_ACCEL_KVM && access("/dev/kvm", F_OK) == 0)
		paths[n++] = (struct proc_path){"kvm device", "/dev/kvm", R_OK | W_OK};
	kvm = getgrnam("kvm");
	*creds = (struct proc_creds){.uid = ids.uid,
	                             .gid = ids.gid,
	                             .extra_gid = kvm != NULL ? kvm->gr_gid : (gid_t)-1,
	                             .paths = paths,
	                             .npaths = n};
	rc = 0;
out:
	free(run);
	free(state);
	free(console);
	return rc;
}

/* The cdroms' media of a start: opened like a disk's image, read-only. */
struct start_media {
	struct imgchain *chains; /* per live_cfg cdrom; empty for an empty drive */
	struct argv_image *images;
	size_t n;
};

static void
start_media_close(struct start_media *m)
{
	for (size_t i = 0; i < m->n; i++)
		imgchain_close(&m->chains[i]);
	free(m->chains);
	free(m->images);
	memset(m, 0, sizeof *m);
}

/* The first fdset after the variable store's and the disks' images (vm_disks_open's). */
static long long
start_next_set(const struct vm_disk_fds *fds)
{
	long long n = fds->argv_vars != NULL ? 1 : 0;

	for (size_t i = 0; i < fds->n; i++)
		n += (long long)fds->argv_chains[i].n;
	return n;
}

/*
 * Opens each cdrom's medium read-only (imgchain: a regular file or a block device, opened without
 * blocking, no tty; never created) and hands its descriptor to keep[], in the fdset after the
 * disks' on. A missing medium fails the start: "cdrom ID: PATH: why"; so does one that another VM
 * or a disk of this start writes.
 */
static int
start_media_open(struct vm *vm, struct start_media *m, const struct vm_disk_fds *disks, int *keep,
                 size_t *nkeep, char **cause)
{
	long long first_set = start_next_set(disks);
	const struct vm_config *cfg = vm->live_cfg;
	long long set = first_set;
	char *why = NULL;

	memset(m, 0, sizeof *m);
	if (cfg->ncdroms == 0)
		return 0;
	m->chains = xcalloc(cfg->ncdroms, sizeof *m->chains);
	m->images = xcalloc(cfg->ncdroms, sizeof *m->images);
	m->n = cfg->ncdroms;
	for (size_t i = 0; i < cfg->ncdroms; i++) {
		const struct cfg_cdrom *cd = &cfg->cdroms[i];
		struct imgchain_image *im;

		m->images[i].set = -1;
		m->images[i].fd_rw = m->images[i].fd_ro = -1;
		m->images[i].format = CFG_FORMAT_RAW;
		if (cd->file == NULL)
			continue;
		if (imgchain_open(&m->chains[i], cd->file, CFG_FORMAT_RAW, false, &why) < 0) {
			*cause = xasprintf("cdrom %s: %s", cd->id, why);
			free(why);
			return -1;
		}
		if (*nkeep + 1 > SPAWN_FDS_MAX) {
			*cause = xasprintf("cdrom %s: more than %d descriptors for QEMU", cd->id,
			                   SPAWN_FDS_MAX);
			return -1;
		}
		im = &m->chains[i].v[0];
		if (vm_medium_check(vm, cd, disks, im, cause) < 0)
			return -1;
		m->images[i].set = set++;
		m->images[i].fd_ro = im->fd_ro;
		keep[(*nkeep)++] = im->fd_ro; /* the spawn's now */
		im->fd_ro = -1;
	}
	return 0;
}

/* Spawns QEMU once the disk images exist. */
static void
start_spawn(struct vm_job *job)
{
	struct vm *vm = job->vm;
	const struct daemon_config *conf = vm->env.conf;
	struct argv_env env = {.qemu = conf->qemu,
	                       .run_dir = conf->run_dir,
	                       .state_dir = conf->state_dir,
	                       .ovmf_code = conf->ovmf_code,
	                       .qmp_fd = -1};
	char *sock = vm_run_path(vm, "qmp.sock"), *pidfile = vm_run_path(vm, "qemu/qemu.pid");
	char *qemu_dir = vm_run_path(vm, "qemu");
	char *logpath = vm_state_path(vm, "qemu.log");
	char *cause = NULL, **argv = NULL;
	int lfd = -1, logfd = -1, cfd = -1, *net_fds = NULL;
	int keep[SPAWN_FDS_MAX];
	size_t nkeep = 0;
	struct stat st;
	struct proc_creds creds;
	struct proc_path paths[8];
	bool use_creds;
	struct vm_disk_fds disk_fds = {0};
	struct start_media media = {0};

	if (vm_prepare_firmware(vm, &cause) < 0)
		goto fail;
	if (start_creds(vm, qemu_dir, &creds, paths, &use_creds, &cause) < 0)
		goto fail;
	lfd = vm_qmp_listen(sock, &cause);
	if (lfd < 0)
		goto fail;
	keep[nkeep++] = lfd;
	env.qmp_fd = lfd;
	net_fds = xcalloc(vm->live_cfg->nnets + 1, sizeof *net_fds);
	if (vm_open_taps(vm, net_fds, keep, &nkeep, SPAWN_FDS_MAX, &cause) < 0)
		goto fail;
	env.net_fds = net_fds;
	/* QEMU opens no image by name: qvmd opens them, QEMU inherits them as fdsets. */
	if (vm_disks_open(vm, &disk_fds, keep, &nkeep, SPAWN_FDS_MAX, &cause) < 0)
		goto fail;
	env.disks = disk_fds.argv_chains;
	env.fw_vars = disk_fds.argv_vars;
	if (start_media_open(vm, &media, &disk_fds, keep, &nkeep, &cause) < 0)
		goto fail;
	env.cdroms = media.images;
	argv = argv_build(vm->live_cfg, &env, &cause);
	if (argv == NULL)
		goto fail;
	logfd = open(logpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (logfd < 0) {
		cause = xasprintf("%s: %s", logpath, strerror(errno));
		goto fail;
	}
	vm->log_offset = fstat(logfd, &st) == 0 ? (long)st.st_size : 0;
	unlink(pidfile);
	vm->pid =
	    proc_spawn_as(argv, logfd, keep, nkeep, use_creds ? &creds : NULL, &vm->pidfd, &cause);
	if (vm->pid < 0) {
		vm->pid = 0;
		goto fail;
	}
	vm->child = true;
	vm->exited = false;
	vm->have_wstatus = false;
	vm->started_at = clock_now_ms();
	vm->start_mono = clock_mono_ms();
	proc_starttime(vm->pid, &vm->starttime);
	if (use_creds)
		log_info("vm %s: qemu started, pid %d, uid %u", vm->name, (int)vm->pid,
		         (unsigned)creds.uid);
	else
		log_info("vm %s: qemu started, pid %d", vm->name, (int)vm->pid);
	vm_watch_pid(vm);
	vm_devs_init(vm);
	vm_disks_record(vm, &disk_fds);
	rundir_save(vm);
	vm_devs_save(vm);
	/* Connect while we still hold the listening socket: the connection waits in its backlog
	 * until QEMU accepts it, and fails at once if QEMU dies first (the socket then has no
	 * holder). */
	cfd = vm_qmp_dial(sock);
	if (cfd < 0 || vm_open_qmp(vm, cfd, &cause) < 0) {
		if (cause == NULL)
			cause = xasprintf("connect %s: %s", sock, strerror(errno));
		start_abandon(job, xasprintf("vm %s: %s", vm->name, cause));
		free(cause);
		cause = NULL;
	}
	vm_job_arm(job, START_TIMEOUT_MS);
	goto out;
fail:
	start_fail(job, cause);
out:
	for (size_t i = 0; i < nkeep; i++)
		close(keep[i]);
	if (logfd >= 0)
		close(logfd);
	vm_disks_close(&disk_fds);
	start_media_close(&media);
	argv_free(argv);
	free(net_fds);
	free(sock);
	free(pidfile);
	free(qemu_dir);
	free(logpath);
}

/* Every missing image exists (or one failed). */
static void
start_images_done(void *arg, char *error)
{
	struct vm_job *job = arg;
	struct start_job *sj = job->data;

	sj->images = NULL; /* the batch is gone */
	if (error != NULL)
		start_fail(job, error);
	else
		start_spawn(job);
}

static void
cont_done(struct qmp_conn *conn, const struct qmp_reply *r, void *arg)
{
	struct vm_job *job = arg;
	struct vm *vm = job->vm;
	struct json_object *res;

	if (r->status != QMP_OK) {
		start_abandon(job, xasprintf("vm %s: cont failed: %s", vm->name, r->error_desc));
		return;
	}
	snprintf(vm->qemu_status, sizeof vm->qemu_status, "running");
	vm->start_mono = clock_mono_ms();
	vm_set_state(vm, VM_RUNNING);
	res = json_object_new_object();
	json_object_object_add(res, "state", json_object_new_string("running"));
	json_object_object_add(res, "pid", json_object_new_int(vm->pid));
	vm_job_done(job, res, PROTO_OK, NULL);
}

bool
vm_start_qmp_ready(struct vm *vm)
{
	struct vm_job *job = vm_job_find(vm, &start_kind);
	char *cause = NULL;

	if (job == NULL)
		return false;
	if (vm_job_send(job, "cont", NULL, -1, 0, cont_done, job, &cause) < 0)
		start_abandon(job, xasprintf("vm %s: cont: %s", vm->name, cause));
	free(cause);
	return true;
}

/*
 * A start runs what the file says now: the definition is read again, and a file with errors is
 * refused with them (never the last good definition, silently). Returns false (and replies) when
 * refused.
 */
static bool
vm_refresh_definition(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct cfg_errors errs;
	struct vm_config *cfg;
	char *msg, *list = NULL;

	if (vm->cfg == NULL)
		return true; /* refused by the caller */
	cfg_errors_init(&errs);
	cfg = cfg_vm_load(vm->cfg->path, &errs);
	if (cfg != NULL) {
		cfg_errors_free(&errs);
		vm_update_config(vm, cfg);
		return true;
	}
	for (size_t i = 0; i < errs.n; i++) {
		char *l = xasprintf("%s%s%s", list ? list : "", list ? "; " : "", errs.msgs[i]);

		free(list);
		list = l;
	}
	msg =
	    xasprintf("vm %s: the definition has errors: %s", vm->name, list ? list : "unreadable");
	cb(NULL, PROTO_ERR_INVALID, msg, arg);
	free(msg);
	free(list);
	cfg_errors_free(&errs);
	return false;
}

/*
 * Whether a QEMU of this VM still runs although the books say none does (a run directory qvmd
 * did not adopt, or books lost): QEMU holds a lock on its pidfile for its whole life. If so, qvmd
 * re-attaches to it instead of starting a second QEMU on the same disks.
 */
static bool
vm_found_running(struct vm *vm, vm_done_cb cb, void *arg)
{
	char *pidfile = vm_run_path(vm, "qemu/qemu.pid"), *msg;
	pid_t owner = proc_pidfile_owner(pidfile);

	free(pidfile);
	if (owner <= 0)
		return false;
	if (vm_adopt(vm))
		msg = xasprintf("vm %s: already running (qemu pid %d, re-attached)", vm->name,
		                (int)vm->pid);
	else
		msg = xasprintf("vm %s: a qemu (pid %d) holds its pidfile but cannot be "
		                "re-attached; not starting a second one",
		                vm->name, (int)owner);
	log_warn("%s", msg);
	cb(NULL, PROTO_ERR_ALREADY_RUNNING, msg, arg);
	free(msg);
	return true;
}

/* Starts the VM (an operator's start or the restart policy's). */
static void
vm_start_job(struct vm *vm, vm_done_cb cb, void *arg)
{
	struct start_job *sj;
	struct vm_job *job;
	char *msg, *cause = NULL;

	/* A backup of the stopped VM holds its disks: its job refuses the start (busy); so does a
	 * backup helper an earlier qvmd left, while it is being killed. */
	if (!vm_job_admit(vm, VM_OP_START, cb, arg))
		return;
	if (!vm_is_active(vm) && vm_helper_refuse_busy(vm, cb, arg))
		return;
	if (!vm_is_active(vm) && !vm_refresh_definition(vm, cb, arg))
		return;
	if (!vm_is_active(vm) && vm_found_running(vm, cb, arg))
		return;
	if (vm->cfg == NULL || vm_is_active(vm)) {
		msg = vm->cfg == NULL
		          ? xasprintf("vm %s: definition was removed", vm->name)
		          : xasprintf("vm %s: already %s", vm->name, vm_state_name(vm->state));
		cb(NULL, vm->cfg == NULL ? PROTO_ERR_NOT_FOUND : PROTO_ERR_ALREADY_RUNNING, msg,
		   arg);
		free(msg);
		return;
	}
	if (vm->restart_ev)
		evtimer_del(vm->restart_ev);
	sj = xcalloc(1, sizeof *sj);
	job = vm_job_new(vm, &start_kind, sj, cb, arg);
	cfg_vm_free(vm->live_cfg);
	vm->live_cfg = cfg_vm_dup(vm->cfg);
	free(vm->live_text);
	vm->live_text = vm->disk_text ? xstrdup(vm->disk_text) : NULL;
	vm->shutdown_seen = false;
	vm->shutdown_guest = false;
	vm->qmp_closed = false;
	vm_set_state(vm, VM_STARTING);
	if (vm_host_dirs(vm, &cause) < 0) {
		start_fail(job, cause);
		return;
	}
	/* Last: done may run at once (nothing to create) and end the job. */
	vm_host_create_images(vm, &sj->images, start_images_done, job);
}

void
vm_start(struct vm *vm, vm_done_cb cb, void *arg)
{
	/* An operator's start is a fresh start: the restart policy counts from zero again. */
	if (vm->job == NULL && !vm_is_active(vm))
		vm->restart_attempts = 0;
	vm_start_job(vm, cb, arg);
}

/* ---- restart policy ---- */

static void
restart_done(struct json_object *result, enum proto_err code, const char *message, void *arg)
{
	struct vm *vm = arg;

	json_object_put(result);
	if (code == PROTO_OK || vm_is_active(vm))
		return; /* started, or found running and re-attached */
	log_error("vm %s: restart failed: %s", vm->name, message);
	vm_set_state(vm, VM_CRASHED);
	vm_schedule_restart(vm, true);
}

static void
restart_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm *vm = arg;

	if (vm_is_active(vm) || vm->job != NULL || vm->cfg == NULL)
		return;
	if (vm->bg != NULL) {
		/* A background job on the stopped VM's images (a snapshot's cleanup): the restart
		 * waits for it instead of failing as busy. */
		struct timeval tv = {1, 0};

		evtimer_add(vm->restart_ev, &tv);
		return;
	}
	vm->restarts++;
	log_info("vm %s: restarting (attempt %u of %u)", vm->name, vm->restart_attempts,
	         vm->cfg->restart_limit);
	vm_start_job(vm, restart_done, vm);
}

void
vm_schedule_restart(struct vm *vm, bool crashed)
{
	const struct vm_config *cfg = vm->cfg;
	struct json_object *f;
	uint64_t delay;
	struct timeval tv;

	if (cfg == NULL)
		return;
	if (!vm->env.may_restart(vm->env.arg)) {
		log_info("vm %s: no restart: qvmd is stopping or powering every vm down", vm->name);
		return;
	}
	if (vm->start_mono > 0 && clock_mono_ms() - vm->start_mono >= RESTART_RESET_MS)
		vm->restart_attempts = 0;
	if (vm->restart_attempts >= cfg->restart_limit) {
		char *old = vm->last_exit.text;

		vm->last_exit.text = xasprintf("%s; restart limit (%u) reached",
		                               old ? old : "crashed", cfg->restart_limit);
		free(old);
		log_error("vm %s: restart limit (%u) reached, staying %s", vm->name,
		          cfg->restart_limit, vm_state_name(vm->state));
		f = json_object_new_object();
		json_object_object_add(f, "scheduled", json_object_new_boolean(0));
		json_object_object_add(f, "reason",
		                       json_object_new_string("restart limit reached"));
		vm_event(vm, "restart", f);
		return;
	}
	delay = 1000ull << (vm->restart_attempts < 6 ? vm->restart_attempts : 6);
	if (delay > RESTART_MAX_DELAY_MS)
		delay = RESTART_MAX_DELAY_MS;
	vm->restart_attempts++;
	if (vm->restart_ev == NULL)
		vm->restart_ev = evtimer_new(vm->env.base, restart_cb, vm);
	tv.tv_sec = (time_t)(delay / 1000);
	tv.tv_usec = (suseconds_t)(delay % 1000) * 1000;
	evtimer_add(vm->restart_ev, &tv);
	vm->restart_due = clock_mono_ms() + (int64_t)delay;
	log_info("vm %s: restart in %llu ms (restart = %s)", vm->name, (unsigned long long)delay,
	         crashed ? "after crash" : "always");
	f = json_object_new_object();
	json_object_object_add(f, "scheduled", json_object_new_boolean(1));
	json_object_object_add(f, "in_ms", json_object_new_int64((int64_t)delay));
	json_object_object_add(f, "attempt", json_object_new_int64(vm->restart_attempts));
	vm_event(vm, "restart", f);
}
