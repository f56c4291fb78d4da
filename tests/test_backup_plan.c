/*
 * supervisor/qvmd/vm_backup_plan: what a backup copies and how, from QEMU's block nodes, the disks
 * wanted, the VM's backup record and the last backup's manifest on disk. A first backup is full;
 * an intact chain with recording bitmaps gives an incremental whose files build on the last
 * backup's; every reason to fall back (a bitmap inconsistent, not recording, busy or missing, a
 * disk grown, --full, a restore in place, another store, an incomplete or partial last backup)
 * makes it full and says so; a new or raw disk is copied whole inside an incremental, noted;
 * --incremental refuses instead of falling back. The guess from the last manifest plans what
 * QEMU's real answer plans when nothing changed, and differs when something did.
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

#include "scratch.h"
#include "vm_backup.h"
#include "vm_backup_plan.h"

#define LAST "20260101T000000.000Z"
#define GIB  "1073741824"

/* A node as QEMU 7.2 lists it (the fields the plan reads, and some it does not). */
#define NODE(id, fmt, size, bitmaps)                                                               \
	"{\"node-name\": \"" id ".fmt\", \"drv\": \"" fmt "\", \"ro\": false, \"image\": "         \
	"{\"format\": \"" fmt "\", \"virtual-size\": " size ", \"filename\": "                     \
	"\"/dev/fdset/0\", \"cluster-size\": 65536}" bitmaps "}"
#define BITMAP(recording, busy, extra)                                                             \
	", \"dirty-bitmaps\": [{\"name\": \"other\", \"recording\": false, \"busy\": true, "       \
	"\"persistent\": true, \"granularity\": 65536, \"count\": 0}, {\"name\": "                 \
	"\"qvmd-backup\", \"recording\": " recording ", \"busy\": " busy ", \"persistent\": "      \
	"true, \"granularity\": 65536, \"count\": 655360" extra "}]"
#define RECORDING BITMAP("true", "false", "")
/* A disk of the last backup's manifest. */
#define MDISK(id, fmt, size, bitmap)                                                               \
	"{\"id\": \"" id "\", \"file\": \"" id ".qcow2\", \"format\": \"" fmt                      \
	"\", \"virtual_size\": " size                                                              \
	", \"sync\": \"full\", \"backing\": null, \"bitmap\": " bitmap "}"

struct fix {
	char *store;
	struct bk_state st;
	const char *wanted[8];
	struct bk_plan_in in;
	struct bk_plan plan;
};

static int
setup(void **state)
{
	struct fix *f = calloc(1, sizeof *f);

	assert_non_null(f);
	f->store = scratch_dir_new("bkplan");
	f->in = (struct bk_plan_in){.vm = "v",
	                            .mode = VM_BACKUP_AUTO,
	                            .st = &f->st,
	                            .store = f->store,
	                            .wanted = f->wanted};
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fix *f = *state;

	bk_plan_free(&f->plan);
	bk_state_free(&f->st);
	scratch_dir_remove(f->store);
	free(f);
	return 0;
}

static void
want(struct fix *f, const char *id)
{
	f->wanted[f->in.nwanted++] = id;
}

/* The last complete backup LAST in the store, with disks (a JSON array's items) and their files
 * (all but the one named missing); the record names it. */
static void
last_backup(struct fix *f, const char *status, const char *disks, const char *missing)
{
	char *dir = scratch_printf("%s/" LAST, f->store), *text, *cause = NULL;
	struct json_object *m, *arr;

	assert_int_equal(mkdir(dir, 0700), 0);
	text = scratch_printf("{\"format\": 1, \"vm\": \"v\", \"id\": \"" LAST "\", \"type\": "
	                      "\"full\", \"status\": \"%s\", \"disks\": [%s]}",
	                      status, disks);
	assert_non_null(m = json_tokener_parse(text));
	assert_int_equal(bk_manifest_write(dir, m, &cause), 0);
	json_object_object_get_ex(m, "disks", &arr);
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		const char *file = bk_jstr(json_object_array_get_idx(arr, i), "file");
		char *path = scratch_printf("%s/%s", dir, file);
		FILE *fp;

		if (missing == NULL || strcmp(file, missing) != 0) {
			assert_non_null(fp = fopen(path, "w"));
			fclose(fp);
		}
		free(path);
	}
	bk_state_set(&f->st.last_id, LAST);
	bk_state_set(&f->st.last_dir, dir);
	json_object_put(m);
	free(text);
	free(dir);
}

/* Plans from QEMU's nodes (a JSON array's items); returns what bk_plan_decide returned. */
static char *
plan(struct fix *f, struct bk_plan *p, const char *nodes)
{
	char *text = scratch_printf("[%s]", nodes);
	struct json_object *n = json_tokener_parse(text);
	char *why;

	assert_non_null(n);
	bk_plan_disks(p, &f->in, n);
	why = bk_plan_decide(p, &f->in);
	json_object_put(n);
	free(text);
	return why;
}

static void
assert_full(struct fix *f, const char *reason)
{
	assert_false(f->plan.incremental);
	assert_null(f->plan.parent);
	assert_non_null(f->plan.reason);
	if (strstr(f->plan.reason, reason) == NULL)
		fail_msg("reason \"%s\" lacks \"%s\"", f->plan.reason, reason);
	for (size_t i = 0; i < f->plan.ndisks; i++) {
		assert_false(f->plan.disks[i].incremental);
		assert_null(f->plan.disks[i].backing);
	}
}

static void
test_first_backup_full(void **state)
{
	struct fix *f = *state;
	struct bk_disk *d;

	want(f, "z");
	want(f, "a");
	/* QEMU lists newest first; file nodes, a read-only disk's node and a leftover target
	 * node are not disks to back up */
	assert_null(
	    plan(f, &f->plan,
	         NODE("z", "qcow2", GIB, RECORDING) "," NODE(
	             "ro", "qcow2", GIB,
	             "") ","
	                 "{\"node-name\": \"a.file\", \"image\": {\"format\": \"file\"}},"
	                 "{\"node-name\": \"a.thr\", \"image\": {\"format\": \"qcow2\"}},"
	                 "{\"node-name\": \"bk-a\", \"image\": {\"format\": \"qcow2\"}},"
	                 "{\"node-name\": \".fmt\"}," NODE("a", "qcow2", "2147483648", "")));
	assert_int_equal(f->plan.ndisks, 2);
	d = &f->plan.disks[0];
	assert_string_equal(d->id, "a");
	assert_string_equal(d->node, "a.fmt");
	assert_true(d->qcow2);
	assert_int_equal(d->vsize, UINT64_C(2147483648));
	assert_false(d->bitmap);
	assert_false(d->bitmap_bad);
	assert_string_equal(d->bitmap_why, "disk a has no bitmap qvmd-backup");
	assert_int_equal(d->fd, -1);
	assert_int_equal(d->set, -1);
	d = &f->plan.disks[1];
	assert_string_equal(d->id, "z");
	assert_true(d->bitmap);
	assert_null(d->bitmap_why);
	assert_full(f, "no complete backup to build on");
}

static void
test_incremental(void **state)
{
	struct fix *f = *state;
	struct bk_disk *d;

	want(f, "d");
	last_backup(f, "complete", MDISK("d", "qcow2", GIB, "\"qvmd-backup\""), NULL);
	assert_null(plan(f, &f->plan, NODE("d", "qcow2", GIB, RECORDING)));
	assert_true(f->plan.incremental);
	assert_string_equal(f->plan.parent, LAST);
	assert_null(f->plan.reason);
	assert_int_equal(f->plan.ndisks, 1);
	d = &f->plan.disks[0];
	assert_true(d->incremental);
	assert_string_equal(d->backing, "../" LAST "/d.qcow2");
}

/* Each state of the bitmap that cannot serve an incremental: whether it is remade, and why. */
static void
test_bitmap_states(void **state)
{
	static const struct {
		const char *bitmaps;
		bool present, bad;
		const char *why;
	} cases[] = {
	    {BITMAP("true", "false", ", \"inconsistent\": true"), true, true,
	     "disk d: bitmap qvmd-backup is inconsistent (qemu was killed or crashed since the "
	     "last backup)"},
	    {BITMAP("false", "false", ""), true, true,
	     "disk d: bitmap qvmd-backup is not recording"},
	    {BITMAP("true", "true", ""), true, false, "disk d: bitmap qvmd-backup is busy"},
	    {"", false, false, "disk d has no bitmap qvmd-backup"},
	    {", \"dirty-bitmaps\": []", false, false, "disk d has no bitmap qvmd-backup"},
	};
	struct fix *f = *state;

	want(f, "d");
	last_backup(f, "complete", MDISK("d", "qcow2", GIB, "\"qvmd-backup\""), NULL);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *nodes = scratch_printf("{\"node-name\": \"d.fmt\", \"image\": {\"format\": "
		                             "\"qcow2\", \"virtual-size\": " GIB "}%s}",
		                             cases[i].bitmaps);

		bk_plan_free(&f->plan);
		assert_null(plan(f, &f->plan, nodes));
		assert_int_equal(f->plan.disks[0].bitmap, cases[i].present);
		assert_int_equal(f->plan.disks[0].bitmap_bad, cases[i].bad);
		assert_string_equal(f->plan.disks[0].bitmap_why, cases[i].why);
		assert_full(f, cases[i].why);
		free(nodes);
	}
}

static void
test_grown_disk_full(void **state)
{
	struct fix *f = *state;

	want(f, "d");
	last_backup(f, "complete", MDISK("d", "qcow2", GIB, "\"qvmd-backup\""), NULL);
	assert_null(plan(f, &f->plan, NODE("d", "qcow2", "2147483648", RECORDING)));
	assert_full(f, "disk d changed size since the last backup");
}

/* A disk added since the last backup and a raw disk are copied whole inside an incremental. */
static void
test_new_and_raw_disks_inside_incremental(void **state)
{
	struct fix *f = *state;

	want(f, "a");
	want(f, "n");
	want(f, "r");
	last_backup(f, "complete",
	            MDISK("a", "qcow2", GIB, "\"qvmd-backup\"") "," MDISK("r", "raw", GIB, "null"),
	            NULL);
	assert_null(plan(f, &f->plan,
	                 NODE("r", "raw", GIB, "") "," NODE("n", "qcow2", GIB, "") "," NODE(
	                     "a", "qcow2", GIB, RECORDING)));
	assert_true(f->plan.incremental);
	assert_string_equal(f->plan.parent, LAST);
	assert_string_equal(f->plan.reason,
	                    "disk n is new since the last backup: a full copy of it; disk r is "
	                    "raw: a raw disk has no dirty bitmap and takes full copies only");
	assert_true(f->plan.disks[0].incremental);
	assert_false(f->plan.disks[1].incremental);
	assert_null(f->plan.disks[1].backing);
	assert_false(f->plan.disks[2].qcow2);
	assert_false(f->plan.disks[2].incremental);
}

static void
test_only_raw_full(void **state)
{
	struct fix *f = *state;

	want(f, "r");
	last_backup(f, "complete", MDISK("r", "raw", GIB, "null"), NULL);
	assert_null(plan(f, &f->plan, NODE("r", "raw", GIB, "")));
	assert_full(f, "disk r is raw: a raw disk has no dirty bitmap");
}

/* What in the record or the store makes the backup full, whatever the bitmaps say. */
static void
test_chain_problems(void **state)
{
	struct fix *f = *state;

	want(f, "d");
	f->in.mode = VM_BACKUP_FULL;
	last_backup(f, "complete", MDISK("d", "qcow2", GIB, "\"qvmd-backup\""), NULL);
	assert_null(plan(f, &f->plan, NODE("d", "qcow2", GIB, RECORDING)));
	assert_full(f, "a full backup was asked for (--full)");

	f->in.mode = VM_BACKUP_AUTO;
	bk_state_set(&f->st.next_full, "backup X was restored in place");
	bk_plan_free(&f->plan);
	assert_null(plan(f, &f->plan, NODE("d", "qcow2", GIB, RECORDING)));
	assert_full(f, "backup X was restored in place");
	bk_state_set(&f->st.next_full, NULL);

	/* a store whose name the last backup's directory only starts with */
	f->in.store = "/tmp/qvmd-bkplan";
	bk_plan_free(&f->plan);
	assert_null(plan(f, &f->plan, NODE("d", "qcow2", GIB, RECORDING)));
	assert_full(f, "the last backup " LAST " is in another directory");
	f->in.store = f->store;

	bk_plan_free(&f->plan);
	assert_null(plan(f, &f->plan, NODE("d", "qcow2", GIB, RECORDING)));
	assert_true(f->plan.incremental);
}

static void
test_last_backup_incomplete(void **state)
{
	struct fix *f = *state;

	want(f, "d");
	last_backup(f, "failed", MDISK("d", "qcow2", GIB, "\"qvmd-backup\""), NULL);
	assert_null(plan(f, &f->plan, NODE("d", "qcow2", GIB, RECORDING)));
	assert_full(f, "the last backup " LAST " is not complete");
}

static void
test_last_backup_file_missing(void **state)
{
	struct fix *f = *state;

	want(f, "d");
	want(f, "e");
	last_backup(f, "complete",
	            MDISK("d", "qcow2", GIB, "\"qvmd-backup\"") "," MDISK("e", "qcow2", GIB,
	                                                                  "\"qvmd-backup\""),
	            "e.qcow2");
	assert_null(
	    plan(f, &f->plan,
	         NODE("d", "qcow2", GIB, RECORDING) "," NODE("e", "qcow2", GIB, RECORDING)));
	assert_full(f, "the last backup " LAST " lacks ");
	assert_non_null(strstr(f->plan.reason, "/e.qcow2"));
}

/* --incremental refuses instead of falling back, and decides nothing. */
static void
test_incremental_refused(void **state)
{
	struct fix *f = *state;
	char *why;

	want(f, "d");
	f->in.mode = VM_BACKUP_INCREMENTAL;
	why = plan(f, &f->plan, NODE("d", "qcow2", GIB, RECORDING));
	assert_non_null(why);
	assert_string_equal(why, "vm v: no incremental backup possible: no complete backup to "
	                         "build on");
	assert_false(f->plan.incremental);
	assert_null(f->plan.reason);
	free(why);

	last_backup(f, "complete", MDISK("d", "qcow2", GIB, "\"qvmd-backup\""), NULL);
	bk_plan_free(&f->plan);
	assert_null(plan(f, &f->plan, NODE("d", "qcow2", GIB, RECORDING)));
	assert_true(f->plan.incremental);
}

static void
test_no_disk(void **state)
{
	struct fix *f = *state;
	char *why;

	want(f, "d");
	why = plan(f, &f->plan, NODE("ro", "qcow2", GIB, ""));
	assert_non_null(why);
	assert_string_equal(why, "vm v: no writable disk to back up");
	free(why);
}

/* The guess plans exactly what QEMU's answer plans when nothing changed. */
static void
test_guess_is_the_answer(void **state)
{
	struct fix *f = *state;
	struct bk_plan real = {0};

	want(f, "b");
	want(f, "a");
	last_backup(f, "complete",
	            MDISK("a", "qcow2", GIB, "\"qvmd-backup\"") "," MDISK(
	                "b", "qcow2", "2147483648", "\"qvmd-backup\""),
	            NULL);
	assert_true(bk_plan_guess(&f->plan, &f->in));
	assert_true(f->plan.incremental);
	assert_int_equal(f->plan.ndisks, 2);
	assert_null(plan(
	    f, &real,
	    NODE("b", "qcow2", "2147483648", RECORDING) "," NODE("a", "qcow2", GIB, RECORDING)));
	assert_true(bk_plan_same(&real, &f->plan));
	bk_plan_free(&real);
}

/* Whatever QEMU's answer says that the last backup does not makes the plans differ. */
static void
test_guess_differs(void **state)
{
	static const char *const answers[] = {
	    /* the bitmap disabled behind qvmd's back */
	    NODE("a", "qcow2", GIB, BITMAP("false", "false", "")),
	    /* removed */
	    NODE("a", "qcow2", GIB, ""),
	    /* the disk grown (block_resize) */
	    NODE("a", "qcow2", "2147483648", RECORDING),
	    /* QEMU killed since */
	    NODE("a", "qcow2", GIB, BITMAP("true", "false", ", \"inconsistent\": true")),
	    /* another disk in its place */
	    NODE("c", "qcow2", GIB, RECORDING),
	};
	struct fix *f = *state;

	want(f, "a");
	want(f, "c");
	f->in.nwanted = 1;
	last_backup(f, "complete", MDISK("a", "qcow2", GIB, "\"qvmd-backup\""), NULL);
	for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
		struct bk_plan real = {0};
		char *why;

		f->wanted[0] = "a";
		bk_plan_free(&f->plan);
		assert_true(bk_plan_guess(&f->plan, &f->in));
		if (i == 4)
			f->wanted[0] = "c";
		why = plan(f, &real, answers[i]);
		assert_null(why);
		assert_false(bk_plan_same(&real, &f->plan));
		bk_plan_free(&real);
	}
}

/* No guess where it could not be an incremental of exactly the wanted disks. */
static void
test_no_guess(void **state)
{
	struct fix *f = *state;

	want(f, "a");
	assert_false(bk_plan_guess(&f->plan, &f->in)); /* no chain */
	assert_int_equal(f->plan.ndisks, 0);
	last_backup(f, "complete",
	            MDISK("a", "qcow2", GIB, "\"qvmd-backup\"") "," MDISK("r", "raw", GIB, "null"),
	            NULL);
	assert_false(bk_plan_guess(&f->plan, &f->in)); /* a disk fewer than the last backup */
	want(f, "r");
	want(f, "n");
	assert_false(bk_plan_guess(&f->plan, &f->in)); /* one more */
	f->in.nwanted = 2;
	assert_true(bk_plan_guess(&f->plan, &f->in));
	bk_plan_free(&f->plan);
	f->in.mode = VM_BACKUP_FULL;
	assert_false(bk_plan_guess(&f->plan, &f->in));
	assert_int_equal(f->plan.ndisks, 0);
	assert_null(f->plan.reason);
}

static void
test_no_guess_on_raw_only(void **state)
{
	struct fix *f = *state;

	want(f, "r");
	last_backup(f, "complete", MDISK("r", "raw", GIB, "null"), NULL);
	assert_false(bk_plan_guess(&f->plan, &f->in));
	assert_int_equal(f->plan.ndisks, 0);
}

/* Every field the copy depends on is compared. */
static void
test_plan_same_fields(void **state)
{
	struct fix *f = *state;
	struct bk_plan other = {0};

	want(f, "a");
	last_backup(f, "complete", MDISK("a", "qcow2", GIB, "\"qvmd-backup\""), NULL);
	assert_null(plan(f, &f->plan, NODE("a", "qcow2", GIB, RECORDING)));
	for (int field = 0; field < 9; field++) {
		struct bk_disk *d;

		bk_plan_free(&other);
		assert_null(plan(f, &other, NODE("a", "qcow2", GIB, RECORDING)));
		assert_true(bk_plan_same(&f->plan, &other));
		d = &other.disks[0];
		switch (field) {
		case 0:
			snprintf(d->node, sizeof d->node, "a2.fmt");
			break;
		case 1:
			d->qcow2 = false;
			break;
		case 2:
			d->vsize++;
			break;
		case 3:
			d->bitmap = false;
			break;
		case 4:
			d->bitmap_bad = true;
			break;
		case 5:
			d->incremental = false;
			break;
		case 6:
			free(d->backing);
			d->backing = NULL;
			break;
		case 7:
			other.incremental = false;
			break;
		case 8:
			free(other.parent);
			other.parent = strdup("20260101T000000.001Z");
			break;
		}
		assert_false(bk_plan_same(&f->plan, &other));
		assert_false(bk_plan_same(&other, &f->plan));
	}
	bk_plan_free(&other);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_first_backup_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_incremental, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bitmap_states, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_grown_disk_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_new_and_raw_disks_inside_incremental, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_only_raw_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_chain_problems, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_last_backup_incomplete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_last_backup_file_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_incremental_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_disk, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guess_is_the_answer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guess_differs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_guess, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_guess_on_raw_only, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_plan_same_fields, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
