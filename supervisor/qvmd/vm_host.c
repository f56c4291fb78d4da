/*
 * What a VM uses of the host: its run and state directories, its QMP socket, the disk images a
 * definition asks for (size = ..., created with qemu-img before QEMU starts), the UEFI variable
 * store, and the tap devices of bridge NICs. This is the one place that knows which files and
 * devices a VM's QEMU is given.
 *
 * Bridge NICs: QEMU's own bridge helper needs to spawn a process, which -sandbox spawn=deny
 * forbids, so qvmd opens the tap device itself, enslaves it to the bridge and hands QEMU the
 * descriptor (as libvirt does).
 */
#include "vm_private.h"

#include "cfg.h"
#include "log.h"
#include "proc.h"
#include "vm_uid.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Whether the real path real is an image dir (dir_ok) or below one. */
static bool
below_image_dirs(const struct daemon_config *conf, const char *real, bool dir_ok)
{
	for (char **d = conf->image_dirs; d != NULL && *d != NULL; d++) {
		char rd[PATH_MAX];
		size_t n;

		if (realpath(*d, rd) == NULL)
			continue;
		n = strlen(rd);
		if (strncmp(real, rd, n) == 0 && (real[n] == '/' || (dir_ok && real[n] == '\0')))
			return true;
	}
	return false;
}

bool
vm_image_path_allowed(const struct daemon_config *conf, const char *path, bool create)
{
	char real[PATH_MAX], *dir, *slash;
	struct stat st;
	bool ok;

	if (lstat(path, &st) == 0 || errno != ENOENT || !create)
		return realpath(path, real) != NULL && below_image_dirs(conf, real, false);
	dir = xstrdup(path);
	slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir || strcmp(slash, "/..") == 0 ||
	    strcmp(slash, "/.") == 0) {
		free(dir);
		return false;
	}
	*slash = '\0';
	ok = realpath(dir, real) != NULL && below_image_dirs(conf, real, true);
	free(dir);
	return ok;
}

int
vm_host_own_dir(const char *path, bool owned, const struct vm_ids *ids, mode_t mode, char **cause)
{
	int fd;

	if (mkdir(path, mode) < 0 && errno != EEXIST) {
		*cause = xasprintf("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fchown(fd, owned ? ids->uid : 0, ids->gid) < 0 || fchmod(fd, mode) < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* ---- directories ---- */

static int
mkdir_p(const char *path, mode_t mode)
{
	char *p = xstrdup(path);
	int rc = 0;

	for (char *s = p + 1; *s && rc == 0; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			rc = -1;
		*s = '/';
	}
	if (rc == 0 && mkdir(p, mode) < 0 && errno != EEXIST)
		rc = -1;
	free(p);
	return rc;
}

int
vm_host_dirs(struct vm *vm, char **cause)
{
	char *run = vm_run_path(vm, ""), *state = vm_state_path(vm, "");
	int rc = 0;

	if (mkdir_p(run, 0700) < 0) {
		*cause = xasprintf("cannot create %s: %s", run, strerror(errno));
		rc = -1;
	} else if (mkdir_p(state, 0750) < 0) {
		*cause = xasprintf("cannot create %s: %s", state, strerror(errno));
		rc = -1;
	}
	free(run);
	free(state);
	return rc;
}

/* ---- the QMP socket ---- */

/* Creates the listening QMP socket QEMU will inherit. Returns the fd or -1 with *cause. */
int
vm_qmp_listen(const char *path, char **cause)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof sun.sun_path) {
		*cause = xasprintf("socket path too long: %s", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 || listen(fd, 4) < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

int
vm_qmp_dial(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd;

	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0 && errno != EINPROGRESS &&
	    errno != EAGAIN) {
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- disk images ---- */

/* The qemu-img children of one start; the batch is done when the last one exits. */
struct vm_images {
	struct vm *vm;
	void (*done)(void *arg, char *error);
	void *arg;
	struct image_child *children;
	int pending;
	char *error;
};

struct image_child {
	struct vm_images *batch;
	struct image_child *next;
	pid_t pid;
	int pidfd;
	struct event *ev;
	char *file;
	char *log;
	long log_offset;
};

static void
image_child_free(struct image_child *c)
{
	event_free(c->ev);
	close(c->pidfd);
	free(c->file);
	free(c->log);
	free(c);
}

static void
images_unlink(struct vm_images *b, struct image_child *c)
{
	for (struct image_child **p = &b->children; *p != NULL; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			return;
		}
	}
}

/* Reports the batch's outcome and frees it. */
static void
images_finish(struct vm_images *b)
{
	void (*done)(void *, char *) = b->done;
	void *arg = b->arg;
	char *error = b->error;

	free(b);
	done(arg, error);
}

static void
image_child_done(evutil_socket_t fd, short what, void *arg)
{
	struct image_child *c = arg;
	struct vm_images *b = c->batch;
	int status = 0;

	waitpid(c->pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char *tail = proc_file_tail(c->log, c->log_offset, 400);

		if (b->error == NULL)
			b->error = xasprintf("qemu-img create %s failed: %s", c->file,
			                     *tail ? tail : "no output");
		free(tail);
		unlink(c->file);
	} else {
		log_info("vm %s: created disk image %s", b->vm->name, c->file);
	}
	images_unlink(b, c);
	image_child_free(c);
	if (--b->pending == 0)
		images_finish(b);
}

void
vm_host_images_free(struct vm_images *b)
{
	struct image_child *c, *next;

	if (b == NULL)
		return;
	for (c = b->children; c != NULL; c = next) {
		next = c->next;
		proc_pidfd_signal(c->pidfd, SIGKILL);
		waitpid(c->pid, NULL, 0);
		unlink(c->file); /* half written */
		image_child_free(c);
	}
	free(b->error);
	free(b);
}

pid_t
vm_spawn_qemu_img(struct vm *vm, const char *file, enum cfg_format format, uint64_t size,
                  long *log_offset, int *pidfd, char **cause)
{
	char sz[32], *logpath = vm_state_path(vm, "qemu.log");
	char *argv[] = {vm->env.conf->qemu_img,          "create",     "-q", "-f",
	                (char *)cfg_format_name(format), (char *)file, sz,   NULL};
	int logfd = open(logpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	pid_t pid;

	free(logpath);
	snprintf(sz, sizeof sz, "%" PRIu64, size);
	*log_offset = logfd >= 0 ? (long)lseek(logfd, 0, SEEK_END) : 0;
	pid = proc_spawn(argv, logfd, NULL, 0, pidfd, cause);
	if (logfd >= 0)
		close(logfd);
	return pid;
}

void
vm_host_create_images(struct vm *vm, struct vm_images **batch, void (*done)(void *arg, char *error),
                      void *arg)
{
	const struct vm_config *cfg = vm->live_cfg;
	struct vm_images *b = xcalloc(1, sizeof *b);
	char *logpath = vm_state_path(vm, "qemu.log");

	b->vm = vm;
	b->done = done;
	b->arg = arg;
	b->pending = 1; /* held until every child is spawned */
	*batch = b;
	for (size_t i = 0; i < cfg->ndisks && b->error == NULL; i++) {
		const struct cfg_disk *disk = &cfg->disks[i];
		struct image_child *c;
		struct stat st;

		if (disk->size == 0 || stat(disk->file, &st) == 0)
			continue;
		if (errno != ENOENT) {
			b->error =
			    xasprintf("disk %s: %s: %s", disk->id, disk->file, strerror(errno));
			break;
		}
		c = xcalloc(1, sizeof *c);
		c->batch = b;
		c->file = xstrdup(disk->file);
		c->log = xstrdup(logpath);
		c->pid = vm_spawn_qemu_img(vm, disk->file, disk->format, disk->size, &c->log_offset,
		                           &c->pidfd, &b->error);
		if (c->pid < 0) {
			free(c->file);
			free(c->log);
			free(c);
			break;
		}
		log_info("vm %s: creating %s image %s (%" PRIu64 " bytes)", vm->name,
		         cfg_format_name(disk->format), disk->file, disk->size);
		c->ev = event_new(vm->env.base, c->pidfd, EV_READ, image_child_done, c);
		event_add(c->ev, NULL);
		c->next = b->children;
		b->children = c;
		b->pending++;
	}
	free(logpath);
	if (--b->pending == 0)
		images_finish(b);
}

/* ---- UEFI variables ---- */

int
vm_prepare_firmware(struct vm *vm, char **cause)
{
	char *dst, buf[65536];
	int in = -1, out = -1, rc = -1;
	ssize_t n;

	if (vm->live_cfg->firmware != CFG_FIRMWARE_UEFI)
		return 0;
	dst = vm_state_path(vm, "OVMF_VARS.fd");
	if (access(dst, F_OK) == 0) {
		free(dst);
		return 0;
	}
	in = open(vm->env.conf->ovmf_vars, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		*cause = xasprintf("uefi variable store template %s: %s", vm->env.conf->ovmf_vars,
		                   strerror(errno));
		goto out;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (out < 0) {
		*cause = xasprintf("%s: %s", dst, strerror(errno));
		goto out;
	}
	while ((n = read(in, buf, sizeof buf)) > 0) {
		if (write(out, buf, (size_t)n) != n) {
			*cause = xasprintf("%s: %s", dst, strerror(errno));
			unlink(dst);
			goto out;
		}
	}
	rc = 0;
out:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	free(dst);
	return rc;
}

/* ---- taps ---- */

/* Opens a tap device named ifname (or a kernel-chosen name), up, and adds it to bridge (if not
 * NULL). */
int
vm_tap_open(const char *ifname, const char *bridge, char **cause)
{
	struct ifreq ifr;
	int fd, sock = -1;

	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		*cause = xasprintf("/dev/net/tun: %s", strerror(errno));
		return -1;
	}
	memset(&ifr, 0, sizeof ifr);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname ? ifname : "qvmd%d");
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		*cause = xasprintf("create tap %s: %s", ifr.ifr_name, strerror(errno));
		goto fail;
	}
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) {
		*cause = xasprintf("tap %s: %s", ifr.ifr_name, strerror(errno));
		goto fail;
	}
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) {
		*cause = xasprintf("tap %s up: %s", ifr.ifr_name, strerror(errno));
		goto fail;
	}
	if (bridge != NULL) {
		struct ifreq br;
		unsigned idx = if_nametoindex(ifr.ifr_name);

		memset(&br, 0, sizeof br);
		snprintf(br.ifr_name, sizeof br.ifr_name, "%s", bridge);
		br.ifr_ifindex = (int)idx;
		if (idx == 0 || ioctl(sock, SIOCBRADDIF, &br) < 0) {
			*cause = xasprintf("add tap %s to bridge %s: %s", ifr.ifr_name, bridge,
			                   strerror(errno));
			goto fail;
		}
	}
	close(sock);
	return fd;
fail:
	if (sock >= 0)
		close(sock);
	close(fd);
	return -1;
}

int
vm_open_taps(struct vm *vm, int *net_fds, int *keep, size_t *nkeep, size_t keep_max, char **cause)
{
	const struct vm_config *cfg = vm->live_cfg;

	for (size_t i = 0; i < cfg->nnets; i++) {
		const struct cfg_net *net = &cfg->nets[i];
		char *why = NULL;
		int fd;

		net_fds[i] = -1;
		/* A tap NIC too: QEMU, unprivileged, could not open /dev/net/tun itself. */
		if (net->type == CFG_NET_USER)
			continue;
		if (*nkeep >= keep_max) {
			*cause = xasprintf("net %s: too many bridge NICs", net->id);
			return -1;
		}
		fd = vm_tap_open(net->ifname, net->bridge, &why);
		if (fd < 0) {
			*cause = xasprintf("net %s: %s", net->id, why);
			free(why);
			return -1;
		}
		net_fds[i] = fd;
		keep[(*nkeep)++] = fd;
	}
	return 0;
}
