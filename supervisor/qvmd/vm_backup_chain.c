/* Reading backup files safely, and pruning a store (see vm_backup_chain.h). */
#include "vm_backup_chain.h"
#include "vm_backup.h"

#include "xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* qcow2 header: magic, version, backing_file_offset; incompatible_features (version 3). */
#define QCOW2_MAGIC         0x514649fbu
#define QCOW2_HDR_V3        104
#define QCOW2_OFF_BACKING   8
#define QCOW2_OFF_INCOMPAT  72
#define QCOW2_INCOMPAT_DATA (1u << 2) /* external data file */
#define BK_CHAIN_MAX        4096

static uint64_t
be64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

int
bk_qcow2_probe(const char *path, bool *has_backing, char **cause)
{
	unsigned char h[QCOW2_HDR_V3];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n;
	uint32_t version;

	if (fd < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		return -1;
	}
	n = pread(fd, h, sizeof h, 0);
	close(fd);
	if (n < 72 || be64(h) >> 32 != QCOW2_MAGIC) {
		*cause = xasprintf("%s: not a qcow2 file", path);
		return -1;
	}
	version = (uint32_t)(be64(h) & 0xffffffffu);
	if (version != 2 && version != 3) {
		*cause = xasprintf("%s: qcow2 version %u", path, version);
		return -1;
	}
	if (version == 3 && (n < QCOW2_OFF_INCOMPAT + 8 ||
	                     (be64(h + QCOW2_OFF_INCOMPAT) & QCOW2_INCOMPAT_DATA) != 0)) {
		*cause = xasprintf("%s: asks for an external data file (refused: backup files "
		                   "carry their data)",
		                   path);
		return -1;
	}
	*has_backing = be64(h + QCOW2_OFF_BACKING) != 0;
	return 0;
}

/* One qcow2 node reading path, over backing (taken; NULL: none). */
static struct json_object *
chain_node(const char *path, struct json_object *backing)
{
	struct json_object *n = json_object_new_object(), *f = json_object_new_object();

	json_object_object_add(f, "driver", json_object_new_string("file"));
	json_object_object_add(f, "filename", json_object_new_string(path));
	json_object_object_add(n, "driver", json_object_new_string("qcow2"));
	json_object_object_add(n, "file", f);
	json_object_object_add(n, "backing", backing);
	return n;
}

static char *
spec_text(struct json_object *node)
{
	return xasprintf("json:%s",
	                 json_object_to_json_string_ext(node, JSON_C_TO_STRING_PLAIN |
	                                                          JSON_C_TO_STRING_NOSLASHESCAPE));
}

char *
bk_file_spec(const char *path)
{
	struct json_object *node = chain_node(path, NULL);
	char *res = spec_text(node);

	json_object_put(node);
	return res;
}

char *
bk_chain_spec(const char *dir, struct json_object *m, const char *disk, char **cause)
{
	char *store = xstrdup(dir), *slash = strrchr(store, '/'), *cur = xstrdup(dir), *res = NULL;
	char **paths = NULL;
	size_t n = 0;
	struct json_object *man = json_object_get(m), *node = NULL;

	if (slash != NULL)
		*slash = '\0';
	for (;;) {
		struct json_object *d = bk_manifest_disk(man, disk), *pm, *pd;
		const char *file = bk_jstr(d, "file"), *backing = bk_jstr(d, "backing"),
		           *parent = bk_jstr(man, "parent"), *pfile;
		bool has_backing, pending;
		char *want;

		if (file == NULL || strchr(file, '/') != NULL) {
			*cause = xasprintf("backup %s has no file for disk %s", cur, disk);
			goto out;
		}
		paths = xrealloc(paths, (n + 1) * sizeof *paths);
		paths[n++] = xasprintf("%s/%s", cur, file);
		if (bk_qcow2_probe(paths[n - 1], &has_backing, cause) < 0)
			goto out;
		pending = json_object_object_get_ex(d, "pending", NULL);
		/* The end of the chain: a full copy, or a file already made standalone. */
		if (backing == NULL || (pending && !has_backing))
			break;
		if (parent == NULL || !bk_id_valid(parent) || n >= BK_CHAIN_MAX) {
			*cause = xasprintf(
			    "backup %s: disk %s has a backing file but no valid parent", cur, disk);
			goto out;
		}
		free(cur);
		cur = xasprintf("%s/%s", store, parent);
		pm = bk_manifest_read(cur);
		pd = bk_manifest_disk(pm, disk);
		pfile = bk_jstr(pd, "file");
		if (pm == NULL || bk_jstr(pm, "status") == NULL ||
		    strcmp(bk_jstr(pm, "status"), "complete") != 0 || pfile == NULL) {
			*cause = xasprintf("backup %s, which disk %s builds on, is missing or "
			                   "incomplete",
			                   cur, disk);
			json_object_put(pm);
			goto out;
		}
		want = xasprintf("../%s/%s", parent, pfile);
		if (strcmp(want, backing) != 0) {
			*cause = xasprintf("%s: backing file %s does not follow the manifests (%s)",
			                   paths[n - 1], backing, want);
			free(want);
			json_object_put(pm);
			goto out;
		}
		free(want);
		json_object_put(man);
		man = pm;
	}
	for (size_t i = n; i > 0; i--)
		node = chain_node(paths[i - 1], node);
	res = spec_text(node);
out:
	json_object_put(node);
	json_object_put(man);
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	free(store);
	free(cur);
	return res;
}

/* ---- pruning ---- */

static bool
id_in(struct json_object *a, const char *id)
{
	for (size_t i = 0; id != NULL && i < json_object_array_length(a); i++) {
		const char *x = bk_jstr(json_object_array_get_idx(a, i), "id");

		if (x != NULL && strcmp(x, id) == 0)
			return true;
	}
	return false;
}

struct json_object *
bk_prune_plan(struct json_object *list, unsigned keep, const char *protect)
{
	struct json_object *plan = json_object_new_object(), *kept = json_object_new_array(),
	                   *deleted = json_object_new_array(), *merge = json_object_new_array();
	size_t n = json_object_array_length(list), complete = 0, seen = 0;
	const char *newest = NULL;

	for (size_t i = 0; i < n; i++) {
		const char *st = bk_jstr(json_object_array_get_idx(list, i), "status");

		complete += st != NULL && strcmp(st, "complete") == 0;
	}
	/* Complete backups: the newest keep stay (and the one the bitmaps count from). */
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(list, i);
		const char *st = bk_jstr(e, "status"), *id = bk_jstr(e, "id");

		if (id == NULL || st == NULL || strcmp(st, "complete") != 0)
			continue;
		seen++;
		if (complete - seen < keep || (protect != NULL && strcmp(id, protect) == 0)) {
			json_object_array_add(kept, json_object_get(e));
			newest = id;
		} else {
			json_object_array_add(deleted, json_object_get(e));
		}
	}
	/* Failed backups older than the newest kept one; a running one is never touched. */
	for (size_t i = 0; newest != NULL && i < n; i++) {
		struct json_object *e = json_object_array_get_idx(list, i);
		const char *st = bk_jstr(e, "status"), *id = bk_jstr(e, "id");

		if (id != NULL && st != NULL && strcmp(st, "complete") != 0 &&
		    strcmp(st, "running") != 0 && strcmp(id, newest) < 0)
			json_object_array_add(deleted, json_object_get(e));
	}
	for (size_t i = 0; i < json_object_array_length(kept); i++) {
		struct json_object *e = json_object_array_get_idx(kept, i);

		if (id_in(deleted, bk_jstr(e, "parent")))
			json_object_array_add(merge, json_object_get(e));
	}
	json_object_object_add(plan, "kept", kept);
	json_object_object_add(plan, "deleted", deleted);
	json_object_object_add(plan, "merge", merge);
	return plan;
}

void
bk_pending_set(struct json_object *m, struct json_object *disks)
{
	for (size_t i = 0; i < json_object_array_length(disks); i++) {
		struct json_object *p = json_object_array_get_idx(disks, i),
		                   *d = bk_manifest_disk(m, bk_jstr(p, "id"));

		if (d != NULL)
			json_object_object_add(d, "pending", json_object_get(p));
	}
}

void
bk_manifest_standalone(struct json_object *m)
{
	struct json_object *disks;

	if (!json_object_object_get_ex(m, "disks", &disks) ||
	    !json_object_is_type(disks, json_type_array))
		return;
	for (size_t i = 0; i < json_object_array_length(disks); i++)
		if (bk_jstr(json_object_array_get_idx(disks, i), "backing") != NULL)
			return;
	if (bk_jstr(m, "parent") != NULL) {
		json_object_object_add(m, "merged_from",
		                       json_object_new_string(bk_jstr(m, "parent")));
		json_object_object_add(m, "type", json_object_new_string("full"));
		json_object_object_add(m, "parent", NULL);
	}
}

void
bk_pending_apply(struct json_object *m, const char *disk)
{
	struct json_object *d = bk_manifest_disk(m, disk), *p, *v;

	if (d == NULL || !json_object_object_get_ex(d, "pending", &p))
		return;
	if (json_object_object_get_ex(p, "checksum", &v))
		json_object_object_add(d, "checksum", json_object_get(v));
	if (json_object_object_get_ex(p, "size", &v))
		json_object_object_add(d, "size", json_object_get(v));
	json_object_object_add(d, "backing", NULL);
	json_object_object_add(d, "sync", json_object_new_string("full"));
	json_object_object_del(d, "pending");
	bk_manifest_standalone(m);
}

int
bk_pending_settle(const char *dir, char **cause)
{
	struct json_object *m = bk_manifest_read(dir), *disks;
	bool changed = false;
	int rc = 0;

	if (m == NULL || !json_object_object_get_ex(m, "disks", &disks) ||
	    !json_object_is_type(disks, json_type_array)) {
		json_object_put(m);
		return 0;
	}
	for (size_t i = 0; i < json_object_array_length(disks); i++) {
		struct json_object *d = json_object_array_get_idx(disks, i);
		const char *file = bk_jstr(d, "file");
		bool has_backing = true;
		char *path, *why = NULL;

		if (!json_object_object_get_ex(d, "pending", NULL) || file == NULL ||
		    strchr(file, '/') != NULL)
			continue;
		path = xasprintf("%s/%s", dir, file);
		if (bk_qcow2_probe(path, &has_backing, &why) < 0)
			free(why);
		free(path);
		if (!has_backing)
			bk_pending_apply(m, bk_jstr(d, "id"));
		else
			json_object_object_del(d, "pending");
		changed = true;
	}
	if (changed)
		rc = bk_manifest_write(dir, m, cause);
	json_object_put(m);
	return rc;
}

void
bk_delete(const char *dir)
{
	char *m = xasprintf("%s/manifest.json", dir), *gone = xasprintf("%s/manifest.deleted", dir);

	if (rename(m, gone) == 0)
		bk_sync_dir(dir);
	bk_remove_files(dir);
	unlink(gone);
	rmdir(dir);
	free(m);
	free(gone);
}

/* Removes dir's temporary files ("*.tmp"). */
static void
remove_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	while (d != NULL && (de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);

		if (n > 4 && strcmp(de->d_name + n - 4, ".tmp") == 0)
			unlinkat(dirfd(d), de->d_name, 0);
	}
	if (d != NULL)
		closedir(d);
}

void
bk_sweep(char *const *stores, const char *vm, const char *running_id)
{
	for (size_t s = 0; stores != NULL && stores[s] != NULL; s++) {
		DIR *d = opendir(stores[s]);
		struct dirent *de;

		while (d != NULL && (de = readdir(d)) != NULL) {
			char *dir, *path;
			struct json_object *m;
			const char *mvm;

			if (!bk_id_valid(de->d_name) ||
			    (running_id != NULL && strcmp(de->d_name, running_id) == 0))
				continue;
			dir = xasprintf("%s/%s", stores[s], de->d_name);
			if ((m = bk_manifest_read(dir)) != NULL) {
				mvm = bk_jstr(m, "vm");
				if (mvm != NULL && strcmp(mvm, vm) == 0 &&
				    strcmp(bk_jstr(m, "status") ? bk_jstr(m, "status") : "",
				           "running") != 0)
					remove_tmp(dir);
			} else {
				path = xasprintf("%s/manifest.deleted", dir);
				m = json_object_from_file(path);
				mvm = m != NULL && json_object_is_type(m, json_type_object)
				          ? bk_jstr(m, "vm")
				          : NULL;
				if (mvm != NULL && strcmp(mvm, vm) == 0)
					bk_delete(dir);
				free(path);
			}
			json_object_put(m);
			free(dir);
		}
		if (d != NULL)
			closedir(d);
	}
}
