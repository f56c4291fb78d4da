/* The backup store as files (see vm_backup.h). */
#include "vm_backup.h"

#include "cfg.h"
#include "xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

void
bk_id_make(int64_t now_ms, char id[BK_ID_LEN + 1])
{
	int64_t ms0 = now_ms < 0 ? 0 : now_ms;
	time_t t = (time_t)(ms0 / 1000);
	int ms = (int)(ms0 % 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&t, &tm);
	strftime(base, sizeof base, "%Y%m%dT%H%M%S", &tm);

	memcpy(id, base, 15);
	id[15] = '.';
	id[16] = (char)('0' + ms / 100);
	id[17] = (char)('0' + ms / 10 % 10);
	id[18] = (char)('0' + ms % 10);
	id[19] = 'Z';
	id[20] = '\0';
}

bool
bk_id_valid(const char *s)
{
	static const char shape[] = "ddddddddTdddddd.dddZ";

	if (strlen(s) != BK_ID_LEN)
		return false;
	for (size_t i = 0; i < BK_ID_LEN; i++) {
		if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
			return false;
	}
	return true;
}

/* Whether path equals dir or lies below it (both resolved). */
static bool
path_below(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		n--;
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/' || n == 1);
}

/* Resolves the longest existing prefix of path and appends the rest (which must hold no "..").
 */
static char *
resolve(const char *path, char **cause)
{
	char *copy = xstrdup(path), *cut = NULL, *res;
	char real[PATH_MAX];

	if (path[0] != '/') {
		*cause = xasprintf("%s: not an absolute path", path);
		free(copy);
		return NULL;
	}
	if (strstr(path, "/../") != NULL || strcmp(path + strlen(path) - 3, "/..") == 0) {
		*cause = xasprintf("%s: holds '..'", path);
		free(copy);
		return NULL;
	}
	for (;;) {
		if (realpath(copy, real) != NULL)
			break;
		if (errno != ENOENT || (cut = strrchr(copy, '/')) == NULL || cut == copy) {
			*cause = xasprintf("%s: %s", path, strerror(errno));
			free(copy);
			return NULL;
		}
		*cut = '\0';
	}
	res = xasprintf("%s%s", strcmp(real, "/") == 0 ? "" : real, path + strlen(copy));
	free(copy);
	return res;
}

char *
bk_dir_allowed(const struct daemon_config *conf, const char *dir, char **cause)
{
	char *res = resolve(dir, cause), *base, *why = NULL;
	bool ok = false;

	if (res == NULL)
		return NULL;
	if ((base = resolve(conf->backup_dir, &why)) != NULL)
		ok = path_below(res, base);
	free(base);
	free(why);
	for (size_t i = 0; !ok && conf->image_dirs && conf->image_dirs[i]; i++) {
		why = NULL;
		if ((base = resolve(conf->image_dirs[i], &why)) != NULL)
			ok = path_below(res, base);
		free(base);
		free(why);
	}
	if (!ok) {
		*cause =
		    xasprintf("%s is neither below backup_dir (%s) nor below an image_dirs entry",
		              dir, conf->backup_dir);
		free(res);
		return NULL;
	}
	return res;
}

int
bk_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc, saved;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

const char *
bk_jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

const char *
bk_jtext(struct json_object *o, const char *key)
{
	const char *s = bk_jstr(o, key);

	return s != NULL ? s : "";
}

/* ---- files replaced atomically ----
 *
 * A file's next text is written beside it (PATH.tmp) and renamed over it; durable: the
 * temporary is fsynced before the rename and the directory after it, so that the file survives
 * a power loss as one version or the other. Staging and putting in place are apart so that a
 * caller can fsync the temporary together with other files.
 */

struct bk_staged {
	char *path;
	char *tmp;
	int fd;
};

static void
staged_free(struct bk_staged *s)
{
	if (s->fd >= 0)
		close(s->fd);
	free(s->path);
	free(s->tmp);
	free(s);
}

void
bk_stage_drop(struct bk_staged *s)
{
	if (s == NULL)
		return;
	unlink(s->tmp);
	staged_free(s);
}

struct bk_staged *
bk_stage(const char *path, const char *text, char **cause)
{
	struct bk_staged *s = xcalloc(1, sizeof *s);
	size_t len = strlen(text), off = 0;
	int saved;

	s->path = xstrdup(path);
	s->tmp = xasprintf("%s.tmp", path);
	if ((s->fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		goto fail;
	while (off < len) {
		ssize_t n = write(s->fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = ENOSPC;
			goto fail;
		}
		off += (size_t)n;
	}
	return s;
fail:
	saved = errno;
	*cause = xasprintf("%s: %s", path, strerror(saved));
	bk_stage_drop(s);
	errno = saved;
	return NULL;
}

int
bk_stage_fd(const struct bk_staged *s)
{
	return s->fd;
}

int
bk_stage_put(struct bk_staged *s, char **cause)
{
	int fd = s->fd, saved;

	s->fd = -1;
	if (close(fd) < 0 || rename(s->tmp, s->path) < 0) {
		saved = errno;
		*cause = xasprintf("%s: %s", s->path, strerror(saved));
		bk_stage_drop(s);
		errno = saved;
		return -1;
	}
	staged_free(s);
	return 0;
}

/* Puts a staged file in place, in dir; durable: its temporary fsynced first, dir after. */
static int
stage_finish(struct bk_staged *s, const char *dir, bool durable, char **cause)
{
	if (durable && fsync(s->fd) < 0) {
		*cause = xasprintf("%s: %s", s->path, strerror(errno));
		bk_stage_drop(s);
		return -1;
	}
	if (bk_stage_put(s, cause) < 0)
		return -1;
	if (durable && bk_sync_dir(dir) < 0) {
		*cause = xasprintf("%s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

struct bk_staged *
bk_manifest_stage(const char *dir, struct json_object *m, char **cause)
{
	char *path = xasprintf("%s/manifest.json", dir);
	struct bk_staged *s =
	    bk_stage(path, json_object_to_json_string_ext(m, JSON_C_TO_STRING_PRETTY), cause);

	free(path);
	return s;
}

int
bk_manifest_write(const char *dir, struct json_object *m, char **cause)
{
	const char *status = bk_jstr(m, "status");
	struct bk_staged *s = bk_manifest_stage(dir, m, cause);

	/* A running backup is of no use after a power loss (its QEMU died with it, and with it
	 * the dirty bitmaps' consistency): what it says need not be durable, only atomic. */
	return s != NULL
	           ? stage_finish(s, dir, status == NULL || strcmp(status, "running") != 0, cause)
	           : -1;
}

struct json_object *
bk_manifest_read(const char *dir)
{
	char *path = xasprintf("%s/manifest.json", dir);
	struct json_object *m = json_object_from_file(path);

	free(path);
	if (m != NULL && !json_object_is_type(m, json_type_object)) {
		json_object_put(m);
		m = NULL;
	}
	return m;
}

static void
copy_key(struct json_object *to, struct json_object *from, const char *key)
{
	struct json_object *v = NULL;

	json_object_object_get_ex(from, key, &v);
	json_object_object_add(to, key, json_object_get(v));
}

struct json_object *
bk_manifest_disk(struct json_object *m, const char *id)
{
	struct json_object *disks;

	if (!json_object_object_get_ex(m, "disks", &disks) ||
	    !json_object_is_type(disks, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(disks); i++) {
		struct json_object *d = json_object_array_get_idx(disks, i);
		const char *did = bk_jstr(d, "id");

		if (did != NULL && strcmp(did, id) == 0)
			return d;
	}
	return NULL;
}

struct json_object *
bk_manifest_entry(struct json_object *m)
{
	struct json_object *e = json_object_new_object(), *disks, *out = json_object_new_array();

	copy_key(e, m, "id");
	copy_key(e, m, "type");
	copy_key(e, m, "parent");
	copy_key(e, m, "created");
	copy_key(e, m, "status");
	if (json_object_object_get_ex(m, "disks", &disks) &&
	    json_object_is_type(disks, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(disks); i++) {
			struct json_object *d = json_object_array_get_idx(disks, i),
			                   *o = json_object_new_object();

			copy_key(o, d, "id");
			copy_key(o, d, "file");
			copy_key(o, d, "size");
			copy_key(o, d, "sync");
			json_object_array_add(out, o);
		}
	}
	json_object_object_add(e, "disks", out);
	if (bk_jstr(m, "reason") != NULL)
		copy_key(e, m, "reason");
	if (bk_jstr(m, "error") != NULL)
		copy_key(e, m, "error");
	return e;
}

struct json_object *
bk_entry(struct json_object *m, const char *dir)
{
	struct json_object *e = bk_manifest_entry(m), *disks;

	json_object_object_add(e, "dir", json_object_new_string(dir));
	json_object_object_get_ex(e, "disks", &disks);
	for (size_t i = 0; i < json_object_array_length(disks); i++) {
		struct json_object *o = json_object_array_get_idx(disks, i);
		const char *f = bk_jstr(o, "file");
		char *full;

		if (f == NULL || strchr(f, '/') != NULL)
			continue;
		full = xasprintf("%s/%s", dir, f);
		json_object_object_add(o, "file", json_object_new_string(full));
		free(full);
	}
	return e;
}

/* ---- the VM's backup state ---- */

void
bk_state_set(char **field, const char *value)
{
	free(*field);
	*field = value ? xstrdup(value) : NULL;
}

void
bk_state_add_store(struct bk_state *st, const char *store)
{
	size_t n = 0;

	for (; st->stores != NULL && st->stores[n] != NULL; n++)
		if (strcmp(st->stores[n], store) == 0)
			return;
	st->stores = xrealloc(st->stores, (n + 2) * sizeof *st->stores);
	st->stores[n] = xstrdup(store);
	st->stores[n + 1] = NULL;
}

void
bk_state_free(struct bk_state *st)
{
	for (size_t i = 0; st->stores != NULL && st->stores[i] != NULL; i++)
		free(st->stores[i]);
	free(st->stores);
	free(st->last_id);
	free(st->last_dir);
	free(st->running_id);
	free(st->running_dir);
	free(st->next_full);
	memset(st, 0, sizeof *st);
}

void
bk_state_load(struct bk_state *st, const char *path)
{
	struct json_object *o = json_object_from_file(path), *a;

	memset(st, 0, sizeof *st);
	st->stores = xcalloc(1, sizeof *st->stores);
	if (o == NULL)
		return;
	if (json_object_object_get_ex(o, "stores", &a) && json_object_is_type(a, json_type_array))
		for (size_t i = 0; i < json_object_array_length(a) && i < 256; i++) {
			struct json_object *s = json_object_array_get_idx(a, i);

			if (json_object_is_type(s, json_type_string) &&
			    json_object_get_string(s)[0] == '/')
				bk_state_add_store(st, json_object_get_string(s));
		}
	bk_state_set(&st->last_id, bk_jstr(o, "last_id"));
	bk_state_set(&st->last_dir, bk_jstr(o, "last_dir"));
	bk_state_set(&st->running_id, bk_jstr(o, "running_id"));
	bk_state_set(&st->running_dir, bk_jstr(o, "running_dir"));
	bk_state_set(&st->next_full, bk_jstr(o, "next_full"));
	st->running_copy = json_object_object_get_ex(o, "running_copy", &a) &&
	                   json_object_is_type(a, json_type_boolean) && json_object_get_boolean(a);
	json_object_put(o);
}

static struct json_object *
jstr_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

/* The state's text (a new string). */
static char *
state_text(const struct bk_state *st)
{
	struct json_object *o = json_object_new_object(), *a = json_object_new_array();
	char *text;

	for (size_t i = 0; st->stores != NULL && st->stores[i] != NULL; i++)
		json_object_array_add(a, json_object_new_string(st->stores[i]));
	json_object_object_add(o, "stores", a);
	json_object_object_add(o, "last_id", jstr_or_null(st->last_id));
	json_object_object_add(o, "last_dir", jstr_or_null(st->last_dir));
	json_object_object_add(o, "running_id", jstr_or_null(st->running_id));
	json_object_object_add(o, "running_dir", jstr_or_null(st->running_dir));
	json_object_object_add(o, "next_full", jstr_or_null(st->next_full));
	json_object_object_add(o, "running_copy", json_object_new_boolean(st->running_copy));
	text = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
	json_object_put(o);
	return text;
}

struct bk_staged *
bk_state_stage(const struct bk_state *st, const char *path, char **cause)
{
	char *text = state_text(st);
	struct bk_staged *s = bk_stage(path, text, cause);

	free(text);
	return s;
}

int
bk_state_save(const struct bk_state *st, const char *path, bool durable, char **cause)
{
	char *dir = xstrdup(path), *slash = strrchr(dir, '/');
	struct bk_staged *s = bk_state_stage(st, path, cause);
	int rc;

	if (slash != NULL)
		*slash = '\0';
	rc = s != NULL ? stage_finish(s, dir, durable, cause) : -1;
	free(dir);
	return rc;
}

/* ---- listing ---- */

static int
entry_cmp(const void *a, const void *b)
{
	const char *x = bk_jstr(*(struct json_object *const *)a, "id"),
	           *y = bk_jstr(*(struct json_object *const *)b, "id");

	return strcmp(x ? x : "", y ? y : "");
}

struct json_object *
bk_list(char *const *stores, const char *vm)
{
	struct json_object **v = NULL, *out = json_object_new_array();
	size_t n = 0;

	for (size_t s = 0; stores != NULL && stores[s] != NULL; s++) {
		DIR *d = opendir(stores[s]);
		struct dirent *de;

		while (d != NULL && (de = readdir(d)) != NULL) {
			char *dir;
			struct json_object *m, *e;
			const char *mvm, *mid;

			if (!bk_id_valid(de->d_name))
				continue;
			dir = xasprintf("%s/%s", stores[s], de->d_name);
			m = bk_manifest_read(dir);
			mvm = bk_jstr(m, "vm");
			mid = bk_jstr(m, "id");
			if (m != NULL && mvm != NULL && strcmp(mvm, vm) == 0 && mid != NULL &&
			    strcmp(mid, de->d_name) == 0) {
				e = bk_entry(m, dir);
				v = xrealloc(v, (n + 1) * sizeof *v);
				v[n++] = e;
			}
			json_object_put(m);
			free(dir);
		}
		if (d != NULL)
			closedir(d);
	}
	if (n > 0)
		qsort(v, n, sizeof *v, entry_cmp);
	for (size_t i = 0; i < n; i++)
		json_object_array_add(out, v[i]);
	free(v);
	return out;
}

char *
bk_find(char *const *stores, const char *vm, const char *id)
{
	if (!bk_id_valid(id))
		return NULL;
	for (size_t s = 0; stores != NULL && stores[s] != NULL; s++) {
		char *dir = xasprintf("%s/%s", stores[s], id);
		struct json_object *m = bk_manifest_read(dir);
		const char *mvm = bk_jstr(m, "vm");
		bool ok = mvm != NULL && strcmp(mvm, vm) == 0;

		json_object_put(m);
		if (ok)
			return dir;
		free(dir);
	}
	return NULL;
}

void
bk_remove_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	while (d != NULL && (de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);

		if ((n > 6 && strcmp(de->d_name + n - 6, ".qcow2") == 0) ||
		    (n > 4 && strcmp(de->d_name + n - 4, ".tmp") == 0))
			unlinkat(dirfd(d), de->d_name, 0);
	}
	if (d != NULL)
		closedir(d);
}

/* ---- checksums ---- */

struct bk_hash {
	int fd;
	XXH3_state_t *st;
	char *path;
	char *buf;
};

#define BK_HASH_BUF (1024 * 1024)

struct bk_hash *
bk_hash_open(const char *path, char **cause)
{
	struct bk_hash *h;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		return NULL;
	}
	h = xcalloc(1, sizeof *h);
	h->fd = fd;
	h->path = xstrdup(path);
	h->buf = xmalloc(BK_HASH_BUF);
	if ((h->st = XXH3_createState()) == NULL)
		fatal("out of memory");
	XXH3_64bits_reset(h->st);
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	return h;
}

int
bk_hash_step(struct bk_hash *h, size_t max, char **hex, char **cause)
{
	size_t done = 0;

	while (done < max) {
		ssize_t n = read(h->fd, h->buf, BK_HASH_BUF);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*cause = xasprintf("%s: %s", h->path, strerror(errno));
			return -1;
		}
		if (n == 0) {
			*hex = xasprintf("xxh3:%016llx",
			                 (unsigned long long)XXH3_64bits_digest(h->st));
			return 1;
		}
		XXH3_64bits_update(h->st, h->buf, (size_t)n);
		done += (size_t)n;
	}
	return 0;
}

int
bk_hash_sync(struct bk_hash *h, char **cause)
{
	if (fsync(h->fd) < 0) {
		*cause = xasprintf("%s: fsync: %s", h->path, strerror(errno));
		return -1;
	}
	return 0;
}

void
bk_hash_free(struct bk_hash *h)
{
	if (h == NULL)
		return;
	close(h->fd);
	XXH3_freeState(h->st);
	free(h->path);
	free(h->buf);
	free(h);
}
