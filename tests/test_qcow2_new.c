/*
 * supervisor/qcow2_new: the empty qcow2 image qvmd writes for a backup target is the one
 * `qemu-img create -f qcow2` writes, byte for byte (sizes across one and several L1 clusters,
 * with and without a backing file), QEMU opens it (qemu-img check, a write and a read back
 * through qemu-io, the backing file's data seen through it), and bad arguments are refused.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "qcow2_new.h"
#include "scratch.h"

static int
setup(void **state)
{
	*state = scratch_dir_new("qcow2new");
	return 0;
}

static int
teardown(void **state)
{
	scratch_dir_remove(*state);
	return 0;
}

/* Reads a whole file; *len its length. */
static unsigned char *
slurp(const char *path, size_t *len)
{
	struct stat sb;
	unsigned char *buf;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &sb), 0);
	buf = malloc((size_t)sb.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, (size_t)sb.st_size, 0), sb.st_size);
	close(fd);
	*len = (size_t)sb.st_size;
	return buf;
}

/* Writes DIR/mine.qcow2 with qcow2_new and DIR/ref.qcow2 with qemu-img create (same size and
 * backing file, not opened: -u) and asserts they are the same bytes. */
static void
same_as_qemu_img(const char *dir, uint64_t size, const char *backing)
{
	char *mine = scratch_printf("%s/mine.qcow2", dir),
	     *ref = scratch_printf("%s/ref.qcow2", dir);
	char *sz = scratch_printf("%llu", (unsigned long long)size), *cause = NULL;
	char *argv[] = {QVMD_TEST_QEMU_IMG,
	                "create",
	                "-q",
	                "-f",
	                "qcow2",
	                ref,
	                sz,
	                NULL,
	                NULL,
	                NULL,
	                NULL,
	                NULL,
	                NULL,
	                NULL};
	unsigned char *a, *b;
	size_t alen, blen;
	int fd;

	unlink(mine);
	unlink(ref);
	if (backing != NULL) {
		argv[6] = "-u";
		argv[7] = "-b";
		argv[8] = (char *)backing;
		argv[9] = "-F";
		argv[10] = "qcow2";
		argv[11] = sz;
	}
	assert_int_equal(scratch_run(argv, NULL), 0);
	fd = open(mine, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	if (qcow2_new(fd, size, backing, backing ? "qcow2" : NULL, &cause) < 0)
		fail_msg("qcow2_new(%s, %s): %s", sz, backing ? backing : "-", cause);
	close(fd);
	a = slurp(mine, &alen);
	b = slurp(ref, &blen);
	if (alen != blen)
		fail_msg("size %s backing %s: %zu bytes, qemu-img's %zu", sz,
		         backing ? backing : "-", alen, blen);
	for (size_t i = 0; i < alen; i++)
		if (a[i] != b[i])
			fail_msg("size %s backing %s: byte %zu is %#x, qemu-img's %#x", sz,
			         backing ? backing : "-", i, a[i], b[i]);
	free(a);
	free(b);
	free(mine);
	free(ref);
	free(sz);
}

static void
test_qcow2_new_same_as_qemu_img(void **state)
{
	static const uint64_t sizes[] = {
	    0,
	    512,
	    1ull << 20,
	    512ull << 20,         /* one L1 entry, exactly */
	    (512ull << 20) + 512, /* two */
	    1ull << 30,
	    3ull << 30,
	    1ull << 40,
	    5ull << 40, /* an L1 table of two clusters */
	    (1ull << 51),
	};

	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		same_as_qemu_img(*state, sizes[i], NULL);
		same_as_qemu_img(*state, sizes[i], "../20261203T030356.098Z/disk-1.qcow2");
	}
	same_as_qemu_img(*state, 1ull << 30, "base.qcow2");
}

/* QEMU reads the image as an overlay of its backing file and writes to it; check is clean. */
static void
test_qcow2_new_qemu_uses_it(void **state)
{
	const char *dir = *state;
	char *base = scratch_printf("%s/base.qcow2", dir),
	     *top = scratch_printf("%s/top.qcow2", dir);
	char *out = scratch_printf("%s/out", dir), *cause = NULL;
	char *mk[] = {QVMD_TEST_QEMU_IMG, "create", "-q", "-f", "qcow2", base, "64M", NULL};
	char *wb[] = {"/usr/bin/qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", base, NULL};
	char *wt[] = {"/usr/bin/qemu-io", "-f", "qcow2", "-c", "write -P 0xa5 8M 64k", top, NULL};
	char *rd[] = {"/usr/bin/qemu-io",    "-f", "qcow2", "-c", "read -P 0x5a 1M 64k", "-c",
	              "read -P 0xa5 8M 64k", top,  NULL};
	char *ck[] = {QVMD_TEST_QEMU_IMG, "check", "-q", top, NULL};
	unsigned char *o;
	size_t len;
	int fd;

	assert_int_equal(scratch_run(mk, NULL), 0);
	assert_int_equal(scratch_run(wb, NULL), 0);
	fd = open(top, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(qcow2_new(fd, 64ull << 20, "base.qcow2", "qcow2", &cause), 0);
	close(fd);
	assert_int_equal(scratch_run(wt, NULL), 0);
	assert_int_equal(scratch_run(rd, out), 0);
	o = slurp(out, &len);
	o[len] = '\0';
	/* qemu-io prints a failed pattern check and still exits 0 */
	assert_null(strstr((char *)o, "Pattern verification failed"));
	assert_non_null(strstr((char *)o, "read 65536/65536 bytes at offset 8388608"));
	assert_int_equal(scratch_run(ck, NULL), 0);
	free(o);
	free(base);
	free(top);
	free(out);
}

static void
test_qcow2_new_refuses(void **state)
{
	const char *dir = *state;
	char *path = scratch_printf("%s/bad.qcow2", dir), *cause = NULL;
	char name[1100];
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);

	assert_true(fd >= 0);
	assert_int_equal(qcow2_new(fd, 1000, NULL, NULL, &cause), -1);
	assert_non_null(strstr(cause, "multiple of 512"));
	free(cause);
	assert_int_equal(qcow2_new(fd, (1ull << 51) + 512, NULL, NULL, &cause), -1);
	free(cause);
	memset(name, 'a', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	assert_int_equal(qcow2_new(fd, 1 << 20, name, "qcow2", &cause), -1);
	assert_non_null(strstr(cause, "backing file name"));
	free(cause);
	assert_int_equal(qcow2_new(fd, 1 << 20, NULL, "qcow2", &cause), -1);
	free(cause);
	/* Never over an existing image. */
	assert_int_equal(write(fd, "x", 1), 1);
	assert_int_equal(qcow2_new(fd, 1 << 20, NULL, NULL, &cause), -1);
	assert_non_null(strstr(cause, "not an empty regular file"));
	free(cause);
	close(fd);
	free(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_qcow2_new_same_as_qemu_img, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_qcow2_new_qemu_uses_it, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_qcow2_new_refuses, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
