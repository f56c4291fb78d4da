/* Disk images a definition asks for (size = ...) are created with qemu-img before QEMU starts. */
#include "vm_private.h"

#include "cfg.h"
#include "daemon.h"
#include "log.h"
#include "proc.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* One qemu-img child of a start; the batch finishes when the last one exits. */
struct image_batch {
	struct vm *vm;
	struct vm_job *job; /* the start job the batch belongs to */
	int pending;
	char *error;
};

struct image_child {
	struct image_batch *batch;
	pid_t pid;
	int pidfd;
	struct event *ev;
	char *file;
	char *log;
	long log_offset;
};

static void
image_child_done(evutil_socket_t fd, short what, void *arg)
{
	struct image_child *c = arg;
	struct image_batch *b = c->batch;
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
	event_free(c->ev);
	close(c->pidfd);
	free(c->file);
	free(c->log);
	free(c);
	if (--b->pending > 0)
		return;
	/* Only the start that asked for these images may go on. */
	if (b->vm->job == b->job)
		vm_images_done(b->vm, b->error);
	else
		free(b->error);
	free(b);
}

pid_t
vm_spawn_qemu_img(struct vm *vm, const char *file, enum cfg_format format, uint64_t size,
                  long *log_offset, int *pidfd, char **cause)
{
	char sz[32], *logpath = vm_state_path(vm, "qemu.log");
	char *argv[] = {vm->d->conf->qemu_img,           "create",     "-q", "-f",
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
vm_create_images(struct vm *vm)
{
	const struct vm_config *cfg = vm->live_cfg;
	struct image_batch *b = xcalloc(1, sizeof *b);
	char *logpath = vm_state_path(vm, "qemu.log");

	b->vm = vm;
	b->job = vm->job;
	b->pending = 1; /* held until every child is spawned */
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
		c->ev = event_new(vm->d->base, c->pidfd, EV_READ, image_child_done, c);
		event_add(c->ev, NULL);
		b->pending++;
	}
	free(logpath);
	if (--b->pending > 0)
		return;
	vm_images_done(vm, b->error);
	free(b);
}

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
	in = open(vm->d->conf->ovmf_vars, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		*cause = xasprintf("uefi variable store template %s: %s", vm->d->conf->ovmf_vars,
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
