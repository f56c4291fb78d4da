/*
 * The VM layer's part of `create` and `undefine`: images for a definition that is not loaded yet,
 * made by the same qemu-img code as a start's (vm_host.c), and the removal of a VM's directories.
 */
#include "vm_define.h"
#include "vm_private.h"

#include "cfg.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Directories below a VM's own are qvmd's making and shallow: deeper is not followed. */
#define REMOVE_DEPTH_MAX 8
/* The record of the images a create is making, in the VM's state directory: a path a line. */
#define DEFINE_RECORD "creating"

struct vm_define_images {
	struct vm *vm;
	void (*done)(void *arg, char *error);
	void *arg;
	struct vm_images *batch; /* NULL once it reported */
	struct event *ev;        /* reports on a later loop turn */
	char *error;
	char **files; /* the images to create, NULL-terminated */
	size_t nfiles;
	bool made_state; /* the VM's state directory did not exist before */
	bool recorded;   /* DEFINE_RECORD written */
};

/*
 * Writes the record of w's images (temporary file, fsync, rename): should qvmd die before the
 * definition is written, the next create of the name finds what may be left.
 */
static int
record_write(struct vm_define_images *w, char **cause)
{
	char *path = vm_state_path(w->vm, DEFINE_RECORD), *tmp = xasprintf("%s.tmp", path);
	FILE *f = fopen(tmp, "we");
	int rc = -1;

	if (f != NULL) {
		for (size_t i = 0; i < w->nfiles; i++)
			fprintf(f, "%s\n", w->files[i]);
		if (fflush(f) == 0 && fsync(fileno(f)) == 0 && fclose(f) == 0) {
			f = NULL;
			rc = rename(tmp, path);
		}
	}
	if (rc < 0) {
		*cause = xasprintf("cannot write %s: %s", path, strerror(errno));
		if (f != NULL)
			fclose(f);
		unlink(tmp);
	}
	free(tmp);
	free(path);
	return rc;
}

char *
vm_define_leftovers(const char *state_dir, const char *name)
{
	char *path = xasprintf("%s/%s/%s", state_dir, name, DEFINE_RECORD), *list = NULL, *t;
	char *text = vm_read_text(path), *save = NULL;
	struct stat st;

	for (char *line = text != NULL ? strtok_r(text, "\n", &save) : NULL; line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		if (lstat(line, &st) < 0)
			continue;
		t = list == NULL ? xstrdup(line) : xasprintf("%s, %s", list, line);
		free(list);
		list = t;
	}
	if (text != NULL && list == NULL && unlink(path) == 0)
		log_info("vm %s: removed %s (the images it lists are gone)", name, path);
	free(text);
	free(path);
	return list;
}

static void
images_report(evutil_socket_t fd, short what, void *arg)
{
	struct vm_define_images *w = arg;
	char *error = w->error;

	w->error = NULL;
	w->done(w->arg, error);
}

static void
images_batch_done(void *arg, char *error)
{
	struct vm_define_images *w = arg;

	w->batch = NULL;
	w->error = error;
	/* The VM has no QEMU: what the images were made from is not a running definition. */
	cfg_vm_free(w->vm->live_cfg);
	w->vm->live_cfg = NULL;
	event_active(w->ev, EV_TIMEOUT, 0);
}

struct vm_define_images *
vm_define_images(struct vm *vm, void (*done)(void *arg, char *error), void *arg)
{
	struct vm_define_images *w = xcalloc(1, sizeof *w);
	char *state = vm_state_path(vm, ""), *cause = NULL;
	struct stat st;

	w->vm = vm;
	w->done = done;
	w->arg = arg;
	w->ev = event_new(vm->env.base, -1, 0, images_report, w);
	w->files = xcalloc(vm->cfg->ndisks + 1, sizeof *w->files);
	/* The rule of vm_host_create_images: a disk with a size whose file is missing. */
	for (size_t i = 0; i < vm->cfg->ndisks; i++) {
		const struct cfg_disk *disk = &vm->cfg->disks[i];

		if (disk->size > 0 && stat(disk->file, &st) < 0 && errno == ENOENT)
			w->files[w->nfiles++] = xstrdup(disk->file);
	}
	w->made_state = stat(state, &st) < 0;
	free(state);
	/* qemu-img's output goes to the VM's qemu.log, in its state directory. */
	if (w->nfiles > 0 && (vm_host_dirs(vm, &cause) < 0 || record_write(w, &cause) < 0)) {
		w->error = xasprintf("vm %s: %s", vm->name, cause);
		free(cause);
		event_active(w->ev, EV_TIMEOUT, 0);
		return w;
	}
	w->recorded = w->nfiles > 0;
	cfg_vm_free(vm->live_cfg);
	vm->live_cfg = cfg_vm_dup(vm->cfg);
	vm_host_create_images(vm, &w->batch, images_batch_done, w);
	return w;
}

const char *const *
vm_define_images_list(const struct vm_define_images *w, size_t *n)
{
	*n = w->nfiles;
	return (const char *const *)w->files;
}

void
vm_define_images_free(struct vm_define_images *w, bool undo)
{
	if (w == NULL)
		return;
	if (w->batch != NULL) {
		vm_host_images_free(w->batch);
		cfg_vm_free(w->vm->live_cfg);
		w->vm->live_cfg = NULL;
	}
	event_free(w->ev);
	for (size_t i = 0; i < w->nfiles; i++) {
		if (undo && unlink(w->files[i]) == 0)
			log_info("vm %s: removed image %s again", w->vm->name, w->files[i]);
		free(w->files[i]);
	}
	/* Done, or undone: what the record warns of is settled either way. */
	if (w->recorded) {
		char *record = vm_state_path(w->vm, DEFINE_RECORD);

		unlink(record);
		free(record);
	}
	if (undo && w->made_state) {
		char *cause = NULL;

		if (vm_define_remove_dirs(w->vm, &cause) < 0) {
			log_warn("vm %s: %s", w->vm->name, cause);
			free(cause);
		}
	}
	free(w->files);
	free(w->error);
	free(w);
}

bool
vm_define_idle(const struct vm *vm)
{
	return !vm_is_active(vm) && vm->job == NULL && vm->bg == NULL;
}

/* Removes name (below the directory parent) and, for a directory, all it holds, without
 * following symbolic links. Keeps the first failure in *cause (shown as path). */
static void
remove_tree(int parent, const char *name, const char *path, int depth, char **cause)
{
	struct dirent *de;
	struct stat st;
	DIR *dir;
	int fd;

	if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT && *cause == NULL)
			*cause = xasprintf("%s: %s", path, strerror(errno));
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(parent, name, 0) < 0 && errno != ENOENT && *cause == NULL)
			*cause = xasprintf("cannot remove %s: %s", path, strerror(errno));
		return;
	}
	fd = depth < REMOVE_DEPTH_MAX
	         ? openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
	         : -1;
	if (fd >= 0 && (dir = fdopendir(fd)) != NULL) {
		while ((de = readdir(dir)) != NULL) {
			char *sub;

			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			sub = xasprintf("%s/%s", path, de->d_name);
			remove_tree(dirfd(dir), de->d_name, sub, depth + 1, cause);
			free(sub);
		}
		closedir(dir);
	} else if (fd >= 0) {
		close(fd);
	}
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT && *cause == NULL)
		*cause = xasprintf("cannot remove %s: %s", path, strerror(errno));
}

int
vm_define_remove_dirs(struct vm *vm, char **cause)
{
	const char *roots[] = {vm->env.conf->run_dir, vm->env.conf->state_dir};
	char *why = NULL;

	for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
		char *path = xasprintf("%s/%s", roots[i], vm->name);

		remove_tree(AT_FDCWD, path, path, 0, &why);
		free(path);
	}
	if (why == NULL)
		return 0;
	*cause = why;
	return -1;
}
