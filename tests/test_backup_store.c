/*
 * supervisor/qvmd/vm_backup_store: the backup store as files. Ids sort by time and nothing else
 * passes for one; --to must lie below backup_dir or an image_dirs entry (also through symlinks
 * and "..": refused); a manifest written is read back and only a manifest naming its own VM and
 * id is listed, oldest first, with absolute file names; the state round-trips; a file staged
 * replaces its old version only when put in place; checksums are
 * xxh3 of the whole file, in slices. Reading backup files: a qcow2 header's backing name is seen
 * but never followed, an external data file is refused, a chain is described from the manifests
 * alone. Pruning: what is kept, deleted and made standalone; a pending rewrite is settled from the
 * file's header; deletions and temporaries an interrupted prune left are swept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <xxhash.h>

#include "cfg.h"
#include "vm_backup.h"
#include "vm_backup_chain.h"

static char dir[64];
/* Paths made by path(), freed by teardown. */
static char *made[256];
static size_t nmade;

static int
setup(void **state)
{
	snprintf(dir, sizeof dir, "/tmp/qvmd-bkstore.XXXXXX");
	assert_non_null(mkdtemp(dir));
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	while (nmade > 0)
		free(made[--nmade]);
	return 0;
}

static char *
path(const char *fmt, const char *a)
{
	char *s;

	assert_true(asprintf(&s, fmt, dir, a) >= 0);
	assert_true(nmade < 256);
	made[nmade++] = s;
	return s;
}

static void
test_backup_store_ids_sort_by_time(void **state)
{
	char a[BK_ID_LEN + 1], b[BK_ID_LEN + 1];

	bk_id_make(1735787045678LL, a);
	assert_string_equal(a, "20250102T030405.678Z");
	bk_id_make(1735787045679LL, b);
	assert_true(strcmp(a, b) < 0);
	assert_true(bk_id_valid(a));
	assert_false(bk_id_valid("../20250102T030405"));
	assert_false(bk_id_valid("20250102T030405.678"));
	assert_false(bk_id_valid("2025010xT030405.678Z"));
	assert_false(bk_id_valid(""));
}

static void
test_backup_store_dir_allowed(void **state)
{
	struct daemon_config conf = {0};
	char *img = path("%s/images%s", ""), *bk = path("%s/backups%s", ""), *cause = NULL, *r;
	char *dirs[] = {img, NULL}, *link = path("%s/images/escape%s", "");

	mkdir(img, 0700);
	mkdir(bk, 0700);
	conf.backup_dir = bk;
	conf.image_dirs = dirs;
	r = bk_dir_allowed(&conf, path("%s/backups/web1/new%s", ""), &cause);
	assert_non_null(r);
	free(r);
	r = bk_dir_allowed(&conf, path("%s/images%s", ""), &cause);
	assert_non_null(r);
	free(r);
	assert_null(bk_dir_allowed(&conf, "/etc", &cause));
	assert_non_null(strstr(cause, "neither below"));
	free(cause);
	cause = NULL;
	assert_null(bk_dir_allowed(&conf, path("%s/images/../x%s", ""), &cause));
	free(cause);
	cause = NULL;
	assert_null(bk_dir_allowed(&conf, "relative/dir", &cause));
	free(cause);
	cause = NULL;
	/* A symlink below an allowed directory that leads out of it is refused. */
	assert_int_equal(symlink("/etc", link), 0);
	assert_null(bk_dir_allowed(&conf, path("%s/images/escape/sub%s", ""), &cause));
	free(cause);
}

static struct json_object *
manifest(const char *vm, const char *id, const char *status)
{
	struct json_object *m = json_object_new_object(), *disks = json_object_new_array(),
	                   *d = json_object_new_object();

	json_object_object_add(m, "vm", json_object_new_string(vm));
	json_object_object_add(m, "id", json_object_new_string(id));
	json_object_object_add(m, "type", json_object_new_string("full"));
	json_object_object_add(m, "parent", NULL);
	json_object_object_add(m, "created", json_object_new_string("2025-01-02T03:04:05Z"));
	json_object_object_add(m, "status", json_object_new_string(status));
	json_object_object_add(d, "id", json_object_new_string("vda"));
	json_object_object_add(d, "file", json_object_new_string("vda.qcow2"));
	json_object_object_add(d, "size", json_object_new_int64(4096));
	json_object_array_add(disks, d);
	json_object_object_add(m, "disks", disks);
	return m;
}

static void
put(const char *id, const char *vm, const char *status)
{
	char *d = path("%s/%s", id), *cause = NULL;
	struct json_object *m = manifest(vm, id, status);

	mkdir(d, 0700);
	assert_int_equal(bk_manifest_write(d, m, &cause), 0);
	json_object_put(m);
}

static void
test_backup_store_list_and_find(void **state)
{
	char *stores[] = {dir, NULL}, *found, *tmp;
	struct json_object *list, *e, *v;

	put("20250102T030405.678Z", "web1", "complete");
	put("20250101T000000.000Z", "web1", "failed");
	put("20250103T000000.000Z", "db1", "complete");
	tmp = path("%s/%s", "notanid");
	mkdir(tmp, 0700);
	tmp = path("%s/20250102T030405.678Z/%s", "manifest.json.tmp");
	assert_int_equal(access(tmp, F_OK), -1); /* the temporary file was renamed */
	list = bk_list(stores, "web1");
	assert_int_equal(json_object_array_length(list), 2);
	e = json_object_array_get_idx(list, 0);
	assert_true(json_object_object_get_ex(e, "id", &v));
	assert_string_equal(json_object_get_string(v), "20250101T000000.000Z");
	assert_true(json_object_object_get_ex(e, "status", &v));
	assert_string_equal(json_object_get_string(v), "failed");
	e = json_object_array_get_idx(list, 1);
	assert_true(json_object_object_get_ex(e, "disks", &v));
	assert_true(json_object_object_get_ex(json_object_array_get_idx(v, 0), "file", &v));
	tmp = path("%s/20250102T030405.678Z/%s", "vda.qcow2");
	assert_string_equal(json_object_get_string(v), tmp);
	json_object_put(list);
	found = bk_find(stores, "web1", "20250102T030405.678Z");
	assert_non_null(found);
	free(found);
	assert_null(bk_find(stores, "web1", "20250103T000000.000Z")); /* db1's */
	assert_null(bk_find(stores, "web1", "../etc"));
}

static void
test_backup_store_state_round_trip(void **state)
{
	struct bk_state st = {0}, back;
	char *p = path("%s/%s", "backups.json"), *cause = NULL;

	bk_state_load(&st, p);
	assert_null(st.last_id);
	bk_state_add_store(&st, "/srv/a");
	bk_state_add_store(&st, "/srv/a");
	bk_state_add_store(&st, "/srv/b");
	bk_state_set(&st.last_id, "20250102T030405.678Z");
	bk_state_set(&st.last_dir, "/srv/a/20250102T030405.678Z");
	assert_int_equal(bk_state_save(&st, p, true, &cause), 0);
	bk_state_load(&back, p);
	assert_string_equal(back.stores[0], "/srv/a");
	assert_string_equal(back.stores[1], "/srv/b");
	assert_null(back.stores[2]);
	assert_string_equal(back.last_id, "20250102T030405.678Z");
	assert_null(back.running_id);
	bk_state_free(&st);
	bk_state_free(&back);
}

/* Reads a whole small file into buf (NUL-terminated); -1 when it cannot be opened. */
static int
slurp(const char *p, char *buf, size_t size)
{
	FILE *f = fopen(p, "r");
	size_t n;

	if (f == NULL)
		return -1;
	n = fread(buf, 1, size - 1, f);
	buf[n] = '\0';
	fclose(f);
	return 0;
}

/* A staged file is written beside its path and replaces it only when put in place; a dropped
 * one leaves no trace; one that cannot be put keeps the old file and says why. */
static void
test_backup_store_stage_put_drop(void **state)
{
	char *p = path("%s/%s", "f.json"), *tmp = path("%s/%s", "f.json.tmp");
	char *sub = path("%s/%s", "sub"), *lost = path("%s/%s", "sub/f.json");
	char buf[64], *cause = NULL;
	struct bk_staged *s;
	FILE *f = fopen(p, "w");

	fputs("old", f);
	fclose(f);
	s = bk_stage(p, "new", &cause);
	assert_non_null(s);
	assert_true(bk_stage_fd(s) >= 0);
	assert_int_equal(fsync(bk_stage_fd(s)), 0);
	assert_int_equal(slurp(p, buf, sizeof buf), 0);
	assert_string_equal(buf, "old");
	assert_int_equal(slurp(tmp, buf, sizeof buf), 0);
	assert_string_equal(buf, "new");
	assert_int_equal(bk_stage_put(s, &cause), 0);
	assert_int_equal(slurp(p, buf, sizeof buf), 0);
	assert_string_equal(buf, "new");
	assert_int_not_equal(access(tmp, F_OK), 0);

	s = bk_stage(p, "dropped", &cause);
	assert_non_null(s);
	bk_stage_drop(s);
	bk_stage_drop(NULL);
	assert_int_equal(slurp(p, buf, sizeof buf), 0);
	assert_string_equal(buf, "new");
	assert_int_not_equal(access(tmp, F_OK), 0);

	/* the temporary goes away between staging and putting */
	assert_int_equal(mkdir(sub, 0700), 0);
	s = bk_stage(lost, "x", &cause);
	assert_non_null(s);
	assert_int_equal(unlink(path("%s/%s", "sub/f.json.tmp")), 0);
	assert_int_equal(bk_stage_put(s, &cause), -1);
	assert_non_null(strstr(cause, "sub/f.json: No such file"));
	free(cause);
	cause = NULL;
	assert_int_equal(rmdir(sub), 0);
	assert_null(bk_stage(lost, "x", &cause));
	assert_non_null(strstr(cause, "No such file"));
	free(cause);
}

static void
test_backup_store_hash_whole_file_in_slices(void **state)
{
	size_t n = 3 * 1024 * 1024 + 17;
	char *buf = malloc(n), *p = path("%s/%s", "blob"), *hex = NULL, *cause = NULL, want[64];
	struct bk_hash *h;
	FILE *f;
	int rc;

	for (size_t i = 0; i < n; i++)
		buf[i] = (char)(i * 7 + i / 4096);
	f = fopen(p, "w");
	assert_int_equal(fwrite(buf, 1, n, f), n);
	fclose(f);
	snprintf(want, sizeof want, "xxh3:%016llx", (unsigned long long)XXH3_64bits(buf, n));
	h = bk_hash_open(p, &cause);
	assert_non_null(h);
	while ((rc = bk_hash_step(h, 1024 * 1024, &hex, &cause)) == 0)
		;
	assert_int_equal(rc, 1);
	assert_string_equal(hex, want);
	assert_int_equal(bk_hash_sync(h, &cause), 0);
	bk_hash_free(h);
	free(hex);
	free(buf);
}

/* Writes a qcow2 header (version 3): with a backing name (offset only), an external data file. */
static void
qcow2(const char *p, bool backing, bool data_file)
{
	unsigned char h[104] = {0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3};
	FILE *f = fopen(p, "w");

	assert_non_null(f);
	if (backing)
		h[15] = 200; /* backing_file_offset */
	if (data_file)
		h[79] = 1u << 2; /* incompatible_features: external data file */
	assert_int_equal(fwrite(h, 1, sizeof h, f), sizeof h);
	fclose(f);
}

static void
test_backup_store_qcow2_probe(void **state)
{
	char *a = path("%s/%s", "a.qcow2"), *b = path("%s/%s", "b.qcow2"),
	     *c = path("%s/%s", "c.qcow2"), *r = path("%s/%s", "r.raw"), *cause = NULL;
	bool hb = true;
	FILE *f;

	qcow2(a, false, false);
	assert_int_equal(bk_qcow2_probe(a, &hb, &cause), 0);
	assert_false(hb);
	qcow2(b, true, false);
	assert_int_equal(bk_qcow2_probe(b, &hb, &cause), 0);
	assert_true(hb);
	qcow2(c, false, true);
	assert_int_equal(bk_qcow2_probe(c, &hb, &cause), -1);
	assert_non_null(strstr(cause, "external data file"));
	free(cause);
	cause = NULL;
	f = fopen(r, "w");
	fputs(
	    "just some raw bytes, long enough to look at: 0123456789012345678901234567890123456789"
	    "0123456789",
	    f);
	fclose(f);
	assert_int_equal(bk_qcow2_probe(r, &hb, &cause), -1);
	assert_non_null(strstr(cause, "not a qcow2"));
	free(cause);
}

/* A backup with one disk vda: full (parent NULL) or incremental on parent. */
static struct json_object *
chain_put(const char *id, const char *parent, bool header_backing)
{
	char *d = path("%s/%s", id), *cause = NULL, *f, *backing;
	struct json_object *m = manifest("web1", id, "complete"), *disks, *vda;

	mkdir(d, 0700);
	json_object_object_get_ex(m, "disks", &disks);
	vda = json_object_array_get_idx(disks, 0);
	if (parent != NULL) {
		assert_true(asprintf(&backing, "../%s/vda.qcow2", parent) > 0);
		json_object_object_add(m, "type", json_object_new_string("incremental"));
		json_object_object_add(m, "parent", json_object_new_string(parent));
		json_object_object_add(vda, "backing", json_object_new_string(backing));
		free(backing);
	}
	json_object_object_add(vda, "checksum", json_object_new_string("xxh3:old"));
	f = path("%s/%s/vda.qcow2", id);
	qcow2(f, header_backing, false);
	assert_int_equal(bk_manifest_write(d, m, &cause), 0);
	return m;
}

/* The filenames of a chain spec, top first, joined by spaces (caller frees). */
static char *
spec_files(const char *spec)
{
	struct json_object *o, *n, *f, *v;
	char *out = strdup(""), *x;

	assert_true(strncmp(spec, "json:", 5) == 0);
	o = json_tokener_parse(spec + 5);
	assert_non_null(o);
	for (n = o; n != NULL;) {
		assert_true(json_object_object_get_ex(n, "driver", &v));
		assert_string_equal(json_object_get_string(v), "qcow2");
		assert_true(json_object_object_get_ex(n, "file", &f));
		assert_true(json_object_object_get_ex(f, "filename", &v));
		assert_true(
		    asprintf(&x, "%s%s%s", out, *out ? " " : "", json_object_get_string(v)) > 0);
		free(out);
		out = x;
		/* Every node says what is below it: another node, or null. */
		assert_true(json_object_object_get_ex(n, "backing", &n));
	}
	json_object_put(o);
	return out;
}

static void
test_backup_store_chain_from_manifests(void **state)
{
	struct json_object *f = chain_put("20250101T000000.000Z", NULL, false),
	                   *i1 = chain_put("20250102T000000.000Z", "20250101T000000.000Z", true),
	                   *i2 = chain_put("20250103T000000.000Z", "20250102T000000.000Z", true),
	                   *vda;
	char *d2 = path("%s/%s", "20250103T000000.000Z"), *spec, *files, *want, *cause = NULL;

	spec = bk_chain_spec(d2, i2, "vda", &cause);
	assert_non_null(spec);
	files = spec_files(spec);
	assert_true(asprintf(&want,
	                     "%s/20250103T000000.000Z/vda.qcow2 %s/20250102T000000.000Z/vda.qcow2 "
	                     "%s/20250101T000000.000Z/vda.qcow2",
	                     dir, dir, dir) > 0);
	assert_string_equal(files, want);
	free(want);
	free(files);
	free(spec);

	/* A disk being made standalone whose file has no backing name any more ends the chain. */
	vda = bk_manifest_disk(i2, "vda");
	json_object_object_add(vda, "pending", json_object_new_object());
	qcow2(path("%s/20250103T000000.000Z/%s", "vda.qcow2"), false, false);
	spec = bk_chain_spec(d2, i2, "vda", &cause);
	assert_non_null(spec);
	files = spec_files(spec);
	assert_true(asprintf(&want, "%s/20250103T000000.000Z/vda.qcow2", dir) > 0);
	assert_string_equal(files, want);
	free(want);
	free(files);
	free(spec);
	json_object_object_del(vda, "pending");

	/* A backing name in the manifest that does not follow its parent is refused. */
	json_object_object_add(vda, "backing", json_object_new_string("../../../etc/x"));
	assert_null(bk_chain_spec(d2, i2, "vda", &cause));
	assert_non_null(strstr(cause, "does not follow"));
	free(cause);
	cause = NULL;
	json_object_object_add(vda, "backing",
	                       json_object_new_string("../20250102T000000.000Z/vda.qcow2"));
	/* A layer asking for an external data file is refused. */
	qcow2(path("%s/20250101T000000.000Z/%s", "vda.qcow2"), false, true);
	assert_null(bk_chain_spec(d2, i2, "vda", &cause));
	assert_non_null(strstr(cause, "external data file"));
	free(cause);
	cause = NULL;
	/* A missing parent. */
	assert_int_equal(unlink(path("%s/20250101T000000.000Z/%s", "manifest.json")), 0);
	qcow2(path("%s/20250101T000000.000Z/%s", "vda.qcow2"), false, false);
	assert_null(bk_chain_spec(d2, i2, "vda", &cause));
	assert_non_null(strstr(cause, "missing"));
	free(cause);
	cause = NULL;
	assert_null(bk_chain_spec(d2, i2, "vdb", &cause));
	free(cause);
	json_object_put(f);
	json_object_put(i1);
	json_object_put(i2);
}

static struct json_object *
entry(const char *id, const char *status, const char *parent)
{
	struct json_object *e = json_object_new_object();

	json_object_object_add(e, "id", json_object_new_string(id));
	json_object_object_add(e, "status", json_object_new_string(status));
	json_object_object_add(e, "parent", parent ? json_object_new_string(parent) : NULL);
	return e;
}

/* The ids of plan[key], joined by spaces (static buffer). */
static const char *
ids(struct json_object *plan, const char *key)
{
	static char buf[256];
	struct json_object *a, *v;

	buf[0] = '\0';
	assert_true(json_object_object_get_ex(plan, key, &a));
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		assert_true(json_object_object_get_ex(json_object_array_get_idx(a, i), "id", &v));
		strcat(buf, i ? " " : "");
		strcat(buf, json_object_get_string(v));
	}
	return buf;
}

static void
test_backup_store_prune_plan(void **state)
{
	struct json_object *list = json_object_new_array(), *plan;

	json_object_array_add(list, entry("t1", "complete", NULL));
	json_object_array_add(list, entry("t2", "complete", "t1"));
	json_object_array_add(list, entry("t3", "failed", "t2"));
	json_object_array_add(list, entry("t4", "complete", "t2"));
	json_object_array_add(list, entry("t5", "running", "t4"));
	json_object_array_add(list, entry("t6", "complete", "t4"));
	json_object_array_add(list, entry("t7", "failed", "t6"));

	plan = bk_prune_plan(list, 2, "t6");
	assert_string_equal(ids(plan, "kept"), "t4 t6");
	/* Failed ones older than the newest kept go; t7 is newer, the running t5 is untouched. */
	assert_string_equal(ids(plan, "deleted"), "t1 t2 t3");
	assert_string_equal(ids(plan, "merge"), "t4");
	json_object_put(plan);

	plan = bk_prune_plan(list, 1, "t6");
	assert_string_equal(ids(plan, "kept"), "t6");
	assert_string_equal(ids(plan, "deleted"), "t1 t2 t4 t3");
	assert_string_equal(ids(plan, "merge"), "t6");
	json_object_put(plan);

	/* The backup the bitmaps count from is never deleted, even when older than the newest. */
	plan = bk_prune_plan(list, 1, "t4");
	assert_string_equal(ids(plan, "kept"), "t4 t6");
	json_object_put(plan);

	plan = bk_prune_plan(list, 10, NULL);
	assert_string_equal(ids(plan, "kept"), "t1 t2 t4 t6");
	assert_string_equal(ids(plan, "deleted"), "t3");
	assert_string_equal(ids(plan, "merge"), "");
	json_object_put(plan);
	json_object_put(list);
}

/* The string key of disk vda of backup id's manifest, or NULL (static copy). */
static const char *
vda_key(const char *id, const char *key)
{
	static char buf[128];
	struct json_object *m = bk_manifest_read(path("%s/%s", id)), *v;
	bool ok = json_object_object_get_ex(bk_manifest_disk(m, "vda"), key, &v) && v != NULL;

	snprintf(buf, sizeof buf, "%s", ok ? json_object_get_string(v) : "");
	json_object_put(m);
	return ok ? buf : NULL;
}

static const char *
top_key(const char *id, const char *key)
{
	static char buf[128];
	struct json_object *m = bk_manifest_read(path("%s/%s", id)), *v;
	bool ok = json_object_object_get_ex(m, key, &v) && v != NULL;

	snprintf(buf, sizeof buf, "%s", ok ? json_object_get_string(v) : "");
	json_object_put(m);
	return ok ? buf : NULL;
}

static void
pending_put(const char *id)
{
	struct json_object *m = bk_manifest_read(path("%s/%s", id)), *p = json_object_new_array(),
	                   *o = json_object_new_object();
	char *cause = NULL;

	json_object_object_add(o, "id", json_object_new_string("vda"));
	json_object_object_add(o, "checksum", json_object_new_string("xxh3:new"));
	json_object_object_add(o, "size", json_object_new_int64(5));
	json_object_array_add(p, o);
	bk_pending_set(m, p);
	assert_int_equal(bk_manifest_write(path("%s/%s", id), m, &cause), 0);
	json_object_put(p);
	json_object_put(m);
}

static void
test_backup_store_pending_settle(void **state)
{
	char *cause = NULL;

	json_object_put(chain_put("20250101T000000.000Z", NULL, false));
	json_object_put(chain_put("20250102T000000.000Z", "20250101T000000.000Z", true));
	json_object_put(chain_put("20250103T000000.000Z", "20250101T000000.000Z", true));

	/* Crashed after the rename: the file has no backing name, the new state is taken. */
	pending_put("20250102T000000.000Z");
	qcow2(path("%s/20250102T000000.000Z/%s", "vda.qcow2"), false, false);
	assert_int_equal(bk_pending_settle(path("%s/%s", "20250102T000000.000Z"), &cause), 0);
	assert_null(vda_key("20250102T000000.000Z", "pending"));
	assert_null(vda_key("20250102T000000.000Z", "backing"));
	assert_string_equal(vda_key("20250102T000000.000Z", "checksum"), "xxh3:new");
	assert_string_equal(top_key("20250102T000000.000Z", "type"), "full");
	assert_null(top_key("20250102T000000.000Z", "parent"));
	assert_string_equal(top_key("20250102T000000.000Z", "merged_from"), "20250101T000000.000Z");

	/* Crashed before the rename: the old file is there, the old state stays. */
	pending_put("20250103T000000.000Z");
	assert_int_equal(bk_pending_settle(path("%s/%s", "20250103T000000.000Z"), &cause), 0);
	assert_null(vda_key("20250103T000000.000Z", "pending"));
	assert_string_equal(vda_key("20250103T000000.000Z", "backing"),
	                    "../20250101T000000.000Z/vda.qcow2");
	assert_string_equal(vda_key("20250103T000000.000Z", "checksum"), "xxh3:old");
	assert_string_equal(top_key("20250103T000000.000Z", "type"), "incremental");
}

/* A kept incremental whose disks are all full copies (raw disks) has nothing to rewrite: it only
 * stops naming its parent. */
static void
test_backup_store_standalone_without_files(void **state)
{
	struct json_object *m = manifest("web1", "20250102T000000.000Z", "complete"), *v;

	json_object_object_add(m, "type", json_object_new_string("incremental"));
	json_object_object_add(m, "parent", json_object_new_string("20250101T000000.000Z"));
	bk_manifest_standalone(m);
	assert_true(json_object_object_get_ex(m, "type", &v));
	assert_string_equal(json_object_get_string(v), "full");
	assert_true(json_object_object_get_ex(m, "parent", &v));
	assert_null(v);
	/* A disk with a backing file keeps it incremental. */
	json_object_object_add(m, "type", json_object_new_string("incremental"));
	json_object_object_add(m, "parent", json_object_new_string("20250101T000000.000Z"));
	json_object_object_add(bk_manifest_disk(m, "vda"), "backing",
	                       json_object_new_string("../20250101T000000.000Z/vda.qcow2"));
	bk_manifest_standalone(m);
	assert_true(json_object_object_get_ex(m, "type", &v));
	assert_string_equal(json_object_get_string(v), "incremental");
	json_object_put(m);
}

static void
test_backup_store_delete_and_sweep(void **state)
{
	char *stores[] = {dir, NULL}, *cause = NULL;
	struct json_object *m;

	json_object_put(chain_put("20250101T000000.000Z", NULL, false));
	bk_delete(path("%s/%s", "20250101T000000.000Z"));
	assert_int_equal(access(path("%s/%s", "20250101T000000.000Z"), F_OK), -1);

	/* A deletion interrupted after its manifest was renamed away: not listed, swept. */
	json_object_put(chain_put("20250102T000000.000Z", NULL, false));
	assert_int_equal(rename(path("%s/20250102T000000.000Z/%s", "manifest.json"),
	                        path("%s/20250102T000000.000Z/%s", "manifest.deleted")),
	                 0);
	m = bk_list(stores, "web1");
	assert_int_equal(json_object_array_length(m), 0);
	json_object_put(m);
	/* Another VM's interrupted deletion in a shared store is not this VM's to finish. */
	m = manifest("db1", "20250104T000000.000Z", "complete");
	mkdir(path("%s/%s", "20250104T000000.000Z"), 0700);
	assert_int_equal(bk_manifest_write(path("%s/%s", "20250104T000000.000Z"), m, &cause), 0);
	json_object_put(m);
	assert_int_equal(rename(path("%s/20250104T000000.000Z/%s", "manifest.json"),
	                        path("%s/20250104T000000.000Z/%s", "manifest.deleted")),
	                 0);
	/* A kept backup with a prune's temporary; a running backup's temporary stays. */
	json_object_put(chain_put("20250103T000000.000Z", NULL, false));
	qcow2(path("%s/20250103T000000.000Z/%s", "vda.qcow2.prune.tmp"), false, false);
	put("20250105T000000.000Z", "web1", "running");
	qcow2(path("%s/20250105T000000.000Z/%s", "vda.qcow2.prune.tmp"), false, false);

	bk_sweep(stores, "web1", NULL);
	assert_int_equal(access(path("%s/%s", "20250102T000000.000Z"), F_OK), -1);
	assert_int_equal(access(path("%s/20250104T000000.000Z/%s", "manifest.deleted"), F_OK), 0);
	assert_int_equal(access(path("%s/20250103T000000.000Z/%s", "vda.qcow2.prune.tmp"), F_OK),
	                 -1);
	assert_int_equal(access(path("%s/20250103T000000.000Z/%s", "vda.qcow2"), F_OK), 0);
	assert_int_equal(access(path("%s/20250105T000000.000Z/%s", "vda.qcow2.prune.tmp"), F_OK),
	                 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_backup_store_ids_sort_by_time),
	    cmocka_unit_test_setup_teardown(test_backup_store_dir_allowed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_store_list_and_find, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_store_state_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_store_stage_put_drop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_store_hash_whole_file_in_slices, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_backup_store_qcow2_probe, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_store_chain_from_manifests, setup,
	                                    teardown),
	    cmocka_unit_test(test_backup_store_prune_plan),
	    cmocka_unit_test_setup_teardown(test_backup_store_pending_settle, setup, teardown),
	    cmocka_unit_test(test_backup_store_standalone_without_files),
	    cmocka_unit_test_setup_teardown(test_backup_store_delete_and_sweep, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
