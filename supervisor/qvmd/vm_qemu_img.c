/*
 * qemu-img runs for a VM's files outside its QEMU (snapshots of a stopped VM, restores, verify,
 * prune): one child with its output captured, finished when its output reached EOF and it has
 * exited (the way tmux's job.c ends a job), never blocking the loop.
 *
 * qemu-img runs as root. A file qvmd did not write itself (a backup file, written by the VM's
 * unprivileged QEMU) is never given to it by name: its header could name any file of the host as
 * backing or data file. Callers describe such a chain explicitly (bk_chain_spec, bk_file_spec in
 * vm_backup_chain.h), which also covers what running qemu-img under the VM's uid would not: files
 * that uid may read, and outputs only root may write.
 */
#include "vm_private.h"

#include "log.h"
#include "proc.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* More output than this is cut (qemu-img info of an image with thousands of snapshots). */
#define VM_QEMU_IMG_OUTPUT_MAX (1024 * 1024)

struct vm_qemu_img {
	struct vm *vm;
	vm_qemu_img_cb cb;
	void *arg;
	pid_t pid;
	int pidfd;
	int out;
	struct event *pid_ev;
	struct event *out_ev;
	char *buf;
	size_t len;
	bool exited;
	bool eof;
	int status;
};

static void
finish_if_done(struct vm_qemu_img *q)
{
	vm_qemu_img_cb cb = q->cb;
	void *arg = q->arg;
	char *out;
	bool ok;

	if (!q->exited || !q->eof)
		return;
	ok = WIFEXITED(q->status) && WEXITSTATUS(q->status) == 0;
	out = q->buf != NULL ? q->buf : xstrdup("");
	q->buf = NULL;
	/* Trailing newlines make poor error messages. */
	for (size_t n = strlen(out); n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'); n--)
		out[n - 1] = '\0';
	vm_qemu_img_free(q);
	cb(ok, out, arg);
	free(out);
}

static void
out_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm_qemu_img *q = arg;
	char chunk[8192];
	ssize_t n = read(fd, chunk, sizeof chunk);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		q->eof = true;
		event_del(q->out_ev);
		finish_if_done(q);
		return;
	}
	if (q->len + (size_t)n > VM_QEMU_IMG_OUTPUT_MAX)
		n = (ssize_t)(VM_QEMU_IMG_OUTPUT_MAX - q->len);
	q->buf = xrealloc(q->buf, q->len + (size_t)n + 1);
	memcpy(q->buf + q->len, chunk, (size_t)n);
	q->len += (size_t)n;
	q->buf[q->len] = '\0';
}

static void
pid_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vm_qemu_img *q = arg;

	if (waitpid(q->pid, &q->status, WNOHANG) != q->pid)
		return;
	q->exited = true;
	event_del(q->pid_ev);
	finish_if_done(q);
}

struct vm_qemu_img *
vm_qemu_img_run(struct vm *vm, const char *const *args, vm_qemu_img_cb cb, void *arg, char **cause)
{
	struct vm_qemu_img *q;
	const char *argv[16];
	size_t n = 0;
	int fds[2];

	argv[n++] = vm->env.conf->qemu_img;
	while (*args != NULL && n < sizeof argv / sizeof argv[0] - 1)
		argv[n++] = *args++;
	argv[n] = NULL;
	if (pipe2(fds, O_CLOEXEC) < 0) {
		*cause = xasprintf("pipe: %s", strerror(errno));
		return NULL;
	}
	q = xcalloc(1, sizeof *q);
	q->vm = vm;
	q->cb = cb;
	q->arg = arg;
	q->out = fds[0];
	q->pid = proc_spawn((char *const *)argv, fds[1], NULL, 0, &q->pidfd, cause);
	close(fds[1]);
	if (q->pid < 0) {
		close(fds[0]);
		free(q);
		return NULL;
	}
	fcntl(q->out, F_SETFL, fcntl(q->out, F_GETFL) | O_NONBLOCK);
	q->out_ev = event_new(vm->env.base, q->out, EV_READ | EV_PERSIST, out_cb, q);
	q->pid_ev = event_new(vm->env.base, q->pidfd, EV_READ | EV_PERSIST, pid_cb, q);
	event_add(q->out_ev, NULL);
	event_add(q->pid_ev, NULL);
	log_debug("vm %s: running %s %s", vm->name, argv[0], argv[1]);
	return q;
}

void
vm_qemu_img_free(struct vm_qemu_img *q)
{
	if (q == NULL)
		return;
	if (!q->exited) {
		proc_pidfd_signal(q->pidfd, SIGKILL);
		waitpid(q->pid, NULL, 0);
	}
	event_free(q->pid_ev);
	event_free(q->out_ev);
	close(q->pidfd);
	close(q->out);
	free(q->buf);
	free(q);
}
