/* Unit tests for supervisor/qvmd/vm_uid: handing out uids, their records, the system checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "vm_uid.h"

struct fx {
	char dir[64];
	struct daemon_config conf;
	struct vm_uid_books *books; /* a qvmd's, since its start */
};

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof *fx);

	snprintf(fx->dir, sizeof fx->dir, "/tmp/qvmd-uid-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	fx->conf.state_dir = fx->dir;
	fx->conf.qemu_uid_first = 270100;
	fx->conf.qemu_uid_last = 270102;
	fx->books = vm_uid_books_new(&fx->conf);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;
	char cmd[128];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
	assert_int_equal(system(cmd), 0);
	vm_uid_books_free(fx->books);
	free(fx);
	return 0;
}

/* The VM's state directory, as vm_host_dirs makes it before a start. */
static void
vm_dir(struct fx *fx, const char *name)
{
	char path[128];

	snprintf(path, sizeof path, "%s/%s", fx->dir, name);
	assert_true(mkdir(path, 0700) == 0 || errno == EEXIST);
}

static char *
record(struct fx *fx, const char *name)
{
	static char buf[64];
	char path[128];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s/qemu-uid", fx->dir, name);
	f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	buf[0] = '\0';
	assert_non_null(fgets(buf, sizeof buf, f));
	fclose(f);
	return buf;
}

static void
write_record(struct fx *fx, const char *name, const char *text)
{
	char path[128];
	FILE *f;

	vm_dir(fx, name);
	snprintf(path, sizeof path, "%s/%s/qemu-uid", fx->dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* qvmd restarted: records written by hand while it was down are in its books. */
static void
restart(struct fx *fx)
{
	vm_uid_books_free(fx->books);
	fx->books = vm_uid_books_new(&fx->conf);
}

static uid_t
assign(struct fx *fx, const char *name)
{
	struct vm_ids ids = {0, 0};
	char *cause = NULL;

	vm_dir(fx, name);
	if (vm_uid_assign(fx->books, name, &ids, &cause) < 0) {
		print_error("%s\n", cause);
		free(cause);
		return 0;
	}
	assert_int_equal(ids.gid, ids.uid);
	return ids.uid;
}

static void
test_vm_uid_each_vm_its_own_and_it_stays(void **state)
{
	struct fx *fx = *state;
	struct vm_ids ids;
	char *cause = NULL;

	assert_int_equal(assign(fx, "a"), 270100);
	assert_int_equal(assign(fx, "b"), 270101);
	assert_string_equal(record(fx, "a"), "270100 270100\n");
	assert_int_equal(assign(fx, "a"), 270100); /* the next start */
	assert_int_equal(assign(fx, "b"), 270101);
	assert_int_equal(vm_uid_recorded(&fx->conf, "b", &ids), 0);
	assert_int_equal(ids.uid, 270101);
	assert_int_equal(assign(fx, "c"), 270102);
	/* The range is used up. */
	vm_dir(fx, "d");
	assert_int_equal(vm_uid_assign(fx->books, "d", &ids, &cause), -1);
	assert_string_equal(cause, "no free uid left in qemu_uid_range 270100-270102");
	free(cause);
	assert_null(record(fx, "d"));
}

static void
test_vm_uid_release_frees_the_lowest(void **state)
{
	struct fx *fx = *state;
	struct vm_ids ids;

	assert_int_equal(assign(fx, "a"), 270100);
	assert_int_equal(assign(fx, "b"), 270101);
	vm_uid_release(fx->books, "a");
	assert_null(record(fx, "a"));
	assert_int_equal(vm_uid_recorded(&fx->conf, "a", &ids), -1);
	vm_uid_release(fx->books, "a"); /* twice: nothing to do */
	assert_int_equal(assign(fx, "c"), 270100);
}

static void
test_vm_uid_duplicate_record_is_refused(void **state)
{
	struct fx *fx = *state;
	struct vm_uid_record *r;
	struct vm_ids ids;
	char *cause = NULL, want[256];
	size_t n;

	assert_int_equal(assign(fx, "a"), 270100);
	write_record(fx, "b", "270100 270100\n");
	restart(fx);
	assert_int_equal(vm_uid_assign(fx->books, "b", &ids, &cause), -1);
	snprintf(want, sizeof want,
	         "qemu uid 270100 is recorded for vm a too (%s/a/qemu-uid): one uid is never "
	         "shared; remove the wrong record",
	         fx->dir);
	assert_string_equal(cause, want);
	free(cause);
	r = vm_uid_records(&fx->conf, &n);
	assert_int_equal(n, 2);
	assert_string_equal(r[0].name, "a");
	assert_string_equal(r[1].name, "b");
	assert_int_equal(r[1].ids.uid, 270100);
	vm_uid_records_free(r, n);
	/* The operator removes the wrong record: the next start reads the records again instead of
	 * trusting the books, and b gets a uid of its own. */
	snprintf(want, sizeof want, "%s/b/qemu-uid", fx->dir);
	assert_int_equal(unlink(want), 0);
	assert_int_equal(assign(fx, "b"), 270101);
	assert_int_equal(assign(fx, "a"), 270100);
}

static void
test_vm_uid_bad_or_foreign_record_is_replaced(void **state)
{
	struct fx *fx = *state;
	size_t n;
	struct vm_uid_record *r;

	/* Outside today's range (an earlier range or qemu_user): a new uid. */
	write_record(fx, "a", "1000 1000\n");
	assert_int_equal(assign(fx, "a"), 270100);
	assert_string_equal(record(fx, "a"), "270100 270100\n");
	/* An image beside the VM directories is no VM. */
	{
		char path[128];
		FILE *f;

		snprintf(path, sizeof path, "%s/disk.qcow2", fx->dir);
		f = fopen(path, "w");
		assert_non_null(f);
		fclose(f);
	}
	/* Not a record: left out of the books, replaced at the next start. */
	write_record(fx, "b", "270101\n");
	write_record(fx, "c", "0 0\n");
	r = vm_uid_records(&fx->conf, &n);
	assert_int_equal(n, 1);
	vm_uid_records_free(r, n);
	assert_int_equal(assign(fx, "b"), 270101);
	assert_int_equal(assign(fx, "c"), 270102);
}

static void
test_vm_uid_skips_existing_accounts(void **state)
{
	struct fx *fx = *state;
	struct passwd *pw = getpwnam("nobody");

	if (pw == NULL)
		skip();
	fx->conf.qemu_uid_first = pw->pw_uid;
	fx->conf.qemu_uid_last = pw->pw_uid + 3;
	assert_true(assign(fx, "a") > pw->pw_uid);
}

static void
test_vm_uid_qemu_user(void **state)
{
	struct fx *fx = *state;
	struct passwd *pw = getpwnam("nobody");
	char want[64];
	uid_t uid, gid;

	if (pw == NULL)
		skip();
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	fx->conf.qemu_user = "nobody";
	vm_dir(fx, "a");
	{
		struct vm_ids ids;
		char *cause = NULL;

		assert_int_equal(vm_uid_assign(fx->books, "a", &ids, &cause), 0);
		assert_int_equal(ids.uid, uid);
		assert_int_equal(ids.gid, gid);
		/* Every VM the same user: no duplicate error. */
		vm_dir(fx, "b");
		assert_int_equal(vm_uid_assign(fx->books, "b", &ids, &cause), 0);
		assert_int_equal(ids.uid, uid);
	}
	snprintf(want, sizeof want, "%u %u\n", (unsigned)uid, (unsigned)gid);
	assert_string_equal(record(fx, "a"), want);
}

static void
test_vm_uid_check_system(void **state)
{
	struct fx *fx = *state;
	struct passwd *pw = getpwnam("nobody");
	char *cause = NULL, want[256];

	assert_int_equal(vm_uid_check_system(&fx->conf, &cause), 0);
	if (pw == NULL)
		skip();
	fx->conf.qemu_uid_first = pw->pw_uid - 1;
	fx->conf.qemu_uid_last = pw->pw_uid + 1;
	assert_int_equal(vm_uid_check_system(&fx->conf, &cause), -1);
	snprintf(want, sizeof want,
	         "qemu_uid_range %u-%u overlaps user nobody (uid %u): choose a range no user or "
	         "group uses",
	         (unsigned)pw->pw_uid - 1, (unsigned)pw->pw_uid + 1, (unsigned)pw->pw_uid);
	assert_string_equal(cause, want);
	free(cause);

	fx->conf.qemu_user = "qvmd-no-such-user";
	assert_int_equal(vm_uid_check_system(&fx->conf, &cause), -1);
	assert_string_equal(cause, "qemu_user qvmd-no-such-user: no such user");
	free(cause);
	fx->conf.qemu_user = "root";
	assert_int_equal(vm_uid_check_system(&fx->conf, &cause), -1);
	assert_string_equal(cause, "qemu_user root is uid 0 gid 0: qemu never runs as root");
	free(cause);
	fx->conf.qemu_user = "nobody";
	assert_int_equal(vm_uid_check_system(&fx->conf, &cause), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_vm_uid_each_vm_its_own_and_it_stays, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_vm_uid_release_frees_the_lowest, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vm_uid_duplicate_record_is_refused, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_vm_uid_bad_or_foreign_record_is_replaced, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_vm_uid_skips_existing_accounts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vm_uid_qemu_user, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vm_uid_check_system, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
