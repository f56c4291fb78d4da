/*
 * supervisor/qvmd/vm_backup_store: the backup store as files. Ids sort by time and nothing else
 * passes for one; --to must lie below backup_dir or an image_dirs entry (also through symlinks
 * and "..": refused); a manifest written is read back and only a manifest naming its own VM and
 * id is listed, oldest first, with absolute file names; the state round-trips; checksums are
 * xxh3 of the whole file, in slices.
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

static char dir[64];
/* Paths made by path(), freed by teardown. */
static char *made[32];
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
	assert_true(nmade < 32);
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
	assert_int_equal(bk_state_save(&st, p, &cause), 0);
	bk_state_load(&back, p);
	assert_string_equal(back.stores[0], "/srv/a");
	assert_string_equal(back.stores[1], "/srv/b");
	assert_null(back.stores[2]);
	assert_string_equal(back.last_id, "20250102T030405.678Z");
	assert_null(back.running_id);
	bk_state_free(&st);
	bk_state_free(&back);
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_backup_store_ids_sort_by_time),
	    cmocka_unit_test_setup_teardown(test_backup_store_dir_allowed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_store_list_and_find, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_store_state_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_store_hash_whole_file_in_slices, setup,
	                                    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
