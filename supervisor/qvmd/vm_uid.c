/*
 * The uid (and gid) each VM's QEMU runs as, and its record in the VM's state directory. The state
 * directory is root's and QEMU can only traverse it, so a record cannot be forged by a guest that
 * took over its QEMU.
 */
#include "vm_uid.h"

#include "cfg.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECORD "qemu-uid"

int
vm_uid_check_system(const struct daemon_config *conf, char **cause)
{
	struct passwd *pw;
	struct group *gr;
	unsigned first = conf->qemu_uid_first, last = conf->qemu_uid_last;

	if (conf->qemu_user != NULL) {
		errno = 0;
		pw = getpwnam(conf->qemu_user);
		if (pw == NULL) {
			*cause =
			    errno != 0
			        ? xasprintf("qemu_user %s: %s", conf->qemu_user, strerror(errno))
			        : xasprintf("qemu_user %s: no such user", conf->qemu_user);
			return -1;
		}
		if (pw->pw_uid == 0 || pw->pw_gid == 0) {
			*cause =
			    xasprintf("qemu_user %s is uid %u gid %u: qemu never runs as root",
			              conf->qemu_user, (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
			return -1;
		}
		return 0;
	}
	/* config/ refused a range with 0 in it; this is the part only the system can answer. */
	setpwent();
	while ((pw = getpwent()) != NULL) {
		if (pw->pw_uid >= first && pw->pw_uid <= last) {
			*cause =
			    xasprintf("qemu_uid_range %u-%u overlaps user %s (uid %u): choose a "
			              "range no user or group uses",
			              first, last, pw->pw_name, (unsigned)pw->pw_uid);
			endpwent();
			return -1;
		}
	}
	endpwent();
	setgrent();
	while ((gr = getgrent()) != NULL) {
		if (gr->gr_gid >= first && gr->gr_gid <= last) {
			*cause =
			    xasprintf("qemu_uid_range %u-%u overlaps group %s (gid %u): choose a "
			              "range no user or group uses",
			              first, last, gr->gr_name, (unsigned)gr->gr_gid);
			endgrent();
			return -1;
		}
	}
	endgrent();
	return 0;
}

static char *
record_path(const struct daemon_config *conf, const char *name)
{
	return xasprintf("%s/%s/" RECORD, conf->state_dir, name);
}

/* Reads a record: 0, 1 when there is none, -1 (logged) when it is unusable. */
static int
record_read(const struct daemon_config *conf, const char *name, struct vm_ids *ids)
{
	char *path = record_path(conf, name), buf[64], extra;
	unsigned long u, g;
	struct stat st;
	ssize_t n;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	/* ENOTDIR: state_dir holds images too, not only VM directories. */
	if (fd < 0 && (errno == ENOENT || errno == ENOTDIR)) {
		free(path);
		return 1;
	}
	if (fd < 0 || fstat(fd, &st) < 0) {
		log_error("%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		log_error("%s: not a regular file of uid %u: ignored", path, (unsigned)geteuid());
		goto out;
	}
	n = read(fd, buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = '\0';
	if (sscanf(buf, "%lu %lu%c", &u, &g, &extra) != 3 || extra != '\n' || u == 0 || g == 0 ||
	    u > CFG_QEMU_UID_MAX || g > CFG_QEMU_UID_MAX) {
		log_error("%s: not a qemu uid record (\"UID GID\"): ignored", path);
		goto out;
	}
	ids->uid = (uid_t)u;
	ids->gid = (gid_t)g;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(path);
	return rc;
}

/* Replaces a VM's record (temp file + rename; the state directory exists). */
static int
record_write(const struct daemon_config *conf, const char *name, const struct vm_ids *ids,
             char **cause)
{
	char *path = record_path(conf, name), *tmp = xasprintf("%s.tmp", path), text[64];
	int fd, len, rc = -1;

	len = snprintf(text, sizeof text, "%u %u\n", (unsigned)ids->uid, (unsigned)ids->gid);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd >= 0 && write(fd, text, (size_t)len) == len && close(fd) == 0) {
		fd = -1;
		if (rename(tmp, path) == 0)
			rc = 0;
	}
	if (rc < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
	}
	free(path);
	free(tmp);
	return rc;
}

static int
record_cmp(const void *a, const void *b)
{
	return strcmp(((const struct vm_uid_record *)a)->name,
	              ((const struct vm_uid_record *)b)->name);
}

struct vm_uid_record *
vm_uid_records(const struct daemon_config *conf, size_t *n)
{
	DIR *dir = opendir(conf->state_dir);
	struct vm_uid_record *r = NULL;
	struct dirent *de;

	*n = 0;
	if (dir == NULL) {
		if (errno != ENOENT)
			log_error("%s: %s", conf->state_dir, strerror(errno));
		return NULL;
	}
	while ((de = readdir(dir)) != NULL) {
		struct vm_ids ids;

		if (de->d_name[0] == '.' || record_read(conf, de->d_name, &ids) != 0)
			continue;
		r = xrealloc(r, (*n + 1) * sizeof *r);
		r[*n].name = xstrdup(de->d_name);
		r[*n].ids = ids;
		(*n)++;
	}
	closedir(dir);
	if (*n > 0)
		qsort(r, *n, sizeof *r, record_cmp);
	return r;
}

void
vm_uid_records_free(struct vm_uid_record *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(r[i].name);
	free(r);
}

struct vm_uid_books {
	const struct daemon_config *conf;
	bool loaded;
	struct vm_uid_record *r; /* sorted by name */
	size_t n;
};

struct vm_uid_books *
vm_uid_books_new(const struct daemon_config *conf)
{
	struct vm_uid_books *b = xcalloc(1, sizeof *b);

	b->conf = conf;
	return b;
}

void
vm_uid_books_free(struct vm_uid_books *b)
{
	if (b == NULL)
		return;
	vm_uid_records_free(b->r, b->n);
	free(b);
}

static void
books_load(struct vm_uid_books *b)
{
	vm_uid_records_free(b->r, b->n);
	b->r = vm_uid_records(b->conf, &b->n);
	b->loaded = true;
}

/* The index of name's record, or of where it would go (*found false). */
static size_t
books_find(struct vm_uid_books *b, const char *name, bool *found)
{
	size_t lo = 0, hi;

	if (!b->loaded)
		books_load(b);
	hi = b->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(b->r[mid].name, name);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

/* Writes name's record and enters it in the books. */
static int
books_write(struct vm_uid_books *b, const char *name, const struct vm_ids *ids, char **cause)
{
	bool found;
	size_t i = books_find(b, name, &found);

	if (record_write(b->conf, name, ids, cause) < 0)
		return -1;
	if (!found) {
		b->r = xrealloc(b->r, (b->n + 1) * sizeof *b->r);
		memmove(&b->r[i + 1], &b->r[i], (b->n - i) * sizeof *b->r);
		b->r[i].name = xstrdup(name);
		b->n++;
	}
	b->r[i].ids = *ids;
	return 0;
}

static bool
in_range(const struct daemon_config *conf, uid_t uid)
{
	return uid >= conf->qemu_uid_first && uid <= conf->qemu_uid_last;
}

static int
uid_cmp(const void *a, const void *b)
{
	uid_t x = *(const uid_t *)a, y = *(const uid_t *)b;

	return x < y ? -1 : x > y;
}

/* The ids of qemu_user (checked at daemon start; the account may have changed since). */
static int
assign_user(struct vm_uid_books *b, const char *name, struct vm_ids *ids, char **cause)
{
	struct passwd *pw = getpwnam(b->conf->qemu_user);
	bool found;
	size_t i;

	if (pw == NULL || pw->pw_uid == 0 || pw->pw_gid == 0) {
		*cause = xasprintf("qemu_user %s: %s", b->conf->qemu_user,
		                   pw == NULL ? "no such user" : "is root");
		return -1;
	}
	ids->uid = pw->pw_uid;
	ids->gid = pw->pw_gid;
	i = books_find(b, name, &found);
	if (found && b->r[i].ids.uid == ids->uid && b->r[i].ids.gid == ids->gid)
		return 0;
	return books_write(b, name, ids, cause);
}

/* Another VM whose record holds uid, or NULL. */
static const char *
books_sharer(const struct vm_uid_books *b, const char *name, uid_t uid)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->r[i].ids.uid == uid && strcmp(b->r[i].name, name) != 0)
			return b->r[i].name;
	return NULL;
}

int
vm_uid_assign(struct vm_uid_books *b, const char *name, struct vm_ids *ids, char **cause)
{
	const struct daemon_config *conf = b->conf;
	const char *sharer;
	uid_t *used;
	size_t n, nused = 0;
	unsigned long long u;
	bool found;

	if (conf->qemu_user != NULL)
		return assign_user(b, name, ids, cause);
	n = books_find(b, name, &found);
	if (found && in_range(conf, b->r[n].ids.uid)) {
		if (books_sharer(b, name, b->r[n].ids.uid) != NULL) {
			books_load(b);
			n = books_find(b, name, &found);
		}
		if (found && (sharer = books_sharer(b, name, b->r[n].ids.uid)) != NULL) {
			*cause =
			    xasprintf("qemu uid %u is recorded for vm %s too (%s/%s/" RECORD
			              "): one uid is never shared; remove the wrong record",
			              (unsigned)b->r[n].ids.uid, sharer, conf->state_dir, sharer);
			return -1;
		}
		if (found && in_range(conf, b->r[n].ids.uid)) {
			*ids = b->r[n].ids;
			return 0;
		}
	}
	used = xcalloc(b->n + 1, sizeof *used);
	for (size_t i = 0; i < b->n; i++)
		if (strcmp(b->r[i].name, name) != 0)
			used[nused++] = b->r[i].ids.uid;
	qsort(used, nused, sizeof *used, uid_cmp);
	for (u = conf->qemu_uid_first; u <= conf->qemu_uid_last; u++) {
		uid_t cand = (uid_t)u;

		if (bsearch(&cand, used, nused, sizeof *used, uid_cmp) != NULL ||
		    getpwuid(cand) != NULL || getgrgid((gid_t)cand) != NULL)
			continue;
		free(used);
		ids->uid = cand;
		ids->gid = (gid_t)cand;
		if (books_write(b, name, ids, cause) < 0)
			return -1;
		log_info("vm %s: its qemu runs as uid %u gid %u", name, (unsigned)cand,
		         (unsigned)cand);
		return 0;
	}
	free(used);
	*cause = xasprintf("no free uid left in qemu_uid_range %u-%u", conf->qemu_uid_first,
	                   conf->qemu_uid_last);
	return -1;
}

int
vm_uid_recorded(const struct daemon_config *conf, const char *name, struct vm_ids *ids)
{
	return record_read(conf, name, ids) == 0 ? 0 : -1;
}

void
vm_uid_release(struct vm_uid_books *b, const char *name)
{
	char *path = record_path(b->conf, name);
	bool found;
	size_t i = books_find(b, name, &found);

	if (found) {
		free(b->r[i].name);
		memmove(&b->r[i], &b->r[i + 1], (b->n - i - 1) * sizeof *b->r);
		b->n--;
	}
	if (unlink(path) == 0)
		log_info("vm %s: its qemu uid is released", name);
	else if (errno != ENOENT)
		log_warn("vm %s: cannot remove %s: %s", name, path, strerror(errno));
	free(path);
}
