/*
 * supervisor/imgchain: a disk image and its backing chain as qvmd opens them for QEMU. Images made
 * by qemu-img, and qcow2 headers written by hand for what qemu-img refuses to make (no recorded
 * backing format, protocol names, external data files, truncation).
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

#include "imgchain.h"
#include "scratch.h"

struct fixture {
	char *dir;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->dir = scratch_dir_new("imgchain");
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	scratch_dir_remove(f->dir);
	free(f);
	return 0;
}

/* qemu-img create -q -f FORMAT [-u -b BACKING -F BFORMAT] DIR/NAME 16M */
static void
img(struct fixture *f, const char *name, const char *format, const char *backing,
    const char *bformat)
{
	char *path = scratch_printf("%s/%s", f->dir, name);
	char *argv[] = {QVMD_TEST_QEMU_IMG,
	                "create",
	                "-q",
	                "-f",
	                (char *)format,
	                path,
	                "16M",
	                NULL,
	                NULL,
	                NULL,
	                NULL,
	                NULL,
	                NULL};

	if (backing != NULL) {
		argv[6] = "-u";
		argv[7] = "-b";
		argv[8] = (char *)backing;
		argv[9] = "-F";
		argv[10] = (char *)bformat;
		argv[11] = "16M";
	}
	assert_int_equal(scratch_run(argv, NULL), 0);
	free(path);
}

static void
put_be32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* A qcow2 v3 header by hand: backing file name at offset 512 (NULL: none), a backing format
 * extension (NULL: none), incompatible feature bits. */
static void
handmade(struct fixture *f, const char *name, const char *backing, const char *format,
         uint32_t incompat)
{
	unsigned char buf[1024] = {'Q', 'F', 'I', 0xfb};
	char *path = scratch_printf("%s/%s", f->dir, name);
	size_t off = 104;
	int fd;

	put_be32(buf + 4, 3);
	put_be32(buf + 20, 16); /* cluster_bits */
	put_be32(buf + 76, incompat);
	put_be32(buf + 100, 104); /* header_length */
	if (format != NULL) {
		put_be32(buf + off, 0xe2792aca);
		put_be32(buf + off + 4, (uint32_t)strlen(format));
		memcpy(buf + off + 8, format, strlen(format));
	}
	if (backing != NULL) {
		put_be32(buf + 12, 512); /* backing_file_offset (low half) */
		put_be32(buf + 16, (uint32_t)strlen(backing));
		memcpy(buf + 512, backing, strlen(backing));
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	close(fd);
	free(path);
}

/* imgchain_open of DIR/NAME; returns the cause (or NULL on success, chain in *c). */
static char *
open_chain(struct fixture *f, const char *name, enum cfg_format format, bool writable,
           struct imgchain *c)
{
	char *path = scratch_printf("%s/%s", f->dir, name), *cause = NULL;

	memset(c, 0, sizeof(*c));
	if (imgchain_open(c, path, format, writable, &cause) == 0) {
		free(path);
		return NULL;
	}
	assert_int_equal(c->n, 0);
	free(path);
	return cause;
}

static void
assert_cause(char *cause, const char *want)
{
	assert_non_null(cause);
	if (strstr(cause, want) == NULL)
		fail_msg("cause '%s' lacks '%s'", cause, want);
	free(cause);
}

static void
test_imgchain_single(void **state)
{
	struct fixture *f = *state;
	struct imgchain c;
	struct stat st;
	char *path = scratch_printf("%s/a.qcow2", f->dir);

	img(f, "a.qcow2", "qcow2", NULL, NULL);
	assert_null(open_chain(f, "a.qcow2", CFG_FORMAT_QCOW2, true, &c));
	assert_int_equal(c.n, 1);
	assert_string_equal(c.v[0].path, path);
	assert_true(c.v[0].fd_ro >= 0 && c.v[0].fd_rw >= 0);
	assert_int_equal(fcntl(c.v[0].fd_ro, F_GETFL) & O_ACCMODE, O_RDONLY);
	assert_int_equal(fcntl(c.v[0].fd_rw, F_GETFL) & O_ACCMODE, O_RDWR);
	assert_true(fcntl(c.v[0].fd_ro, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(stat(path, &st), 0);
	assert_true(c.v[0].dev == st.st_dev && c.v[0].ino == st.st_ino);
	imgchain_close(&c);
	/* Read-only: no O_RDWR descriptor. */
	assert_null(open_chain(f, "a.qcow2", CFG_FORMAT_QCOW2, false, &c));
	assert_int_equal(c.v[0].fd_rw, -1);
	imgchain_close(&c);
	free(path);
}

/* Relative names are relative to the overlay's directory; backing files are opened read-only. */
static void
test_imgchain_backing(void **state)
{
	struct fixture *f = *state;
	struct imgchain c;
	char *sub = scratch_printf("%s/sub", f->dir);

	assert_int_equal(mkdir(sub, 0700), 0);
	img(f, "base.raw", "raw", NULL, NULL);
	img(f, "sub/mid.qcow2", "qcow2", "../base.raw", "raw");
	img(f, "top.qcow2", "qcow2", "sub/mid.qcow2", "qcow2");
	assert_null(open_chain(f, "top.qcow2", CFG_FORMAT_QCOW2, true, &c));
	assert_int_equal(c.n, 3);
	assert_int_equal(c.v[1].format, CFG_FORMAT_QCOW2);
	assert_int_equal(c.v[2].format, CFG_FORMAT_RAW);
	assert_non_null(strstr(c.v[1].path, "/sub/mid.qcow2"));
	assert_non_null(strstr(c.v[2].path, "/sub/../base.raw"));
	assert_true(c.v[0].fd_rw >= 0);
	assert_int_equal(c.v[1].fd_rw, -1);
	assert_int_equal(c.v[2].fd_rw, -1);
	imgchain_close(&c);
	free(sub);
}

static void
test_imgchain_errors(void **state)
{
	struct fixture *f = *state;
	struct imgchain c;
	char *p;

	assert_cause(open_chain(f, "none.qcow2", CFG_FORMAT_QCOW2, true, &c),
	             "none.qcow2: No such file or directory");
	img(f, "orphan.qcow2", "qcow2", "gone.qcow2", "qcow2");
	p = scratch_printf(
	    "backing file %s/gone.qcow2: No such file or directory (of %s/orphan.qcow2)", f->dir,
	    f->dir);
	assert_cause(open_chain(f, "orphan.qcow2", CFG_FORMAT_QCOW2, true, &c), p);
	free(p);
	img(f, "l1.qcow2", "qcow2", "l2.qcow2", "qcow2");
	img(f, "l2.qcow2", "qcow2", "l1.qcow2", "qcow2");
	assert_cause(open_chain(f, "l1.qcow2", CFG_FORMAT_QCOW2, true, &c), "loops back to");
	img(f, "r.raw", "raw", NULL, NULL);
	assert_cause(open_chain(f, "r.raw", CFG_FORMAT_QCOW2, true, &c), "not a qcow2 image");
	p = scratch_printf("%s/fifo", f->dir);
	assert_int_equal(mkfifo(p, 0600), 0);
	free(p);
	assert_cause(open_chain(f, "fifo", CFG_FORMAT_RAW, false, &c),
	             "not a regular file or block device");
	assert_cause(open_chain(f, ".", CFG_FORMAT_RAW, false, &c), "is a directory");

	handmade(f, "nofmt.qcow2", "r.raw", NULL, 0);
	assert_cause(open_chain(f, "nofmt.qcow2", CFG_FORMAT_QCOW2, true, &c),
	             "has no recorded format");
	handmade(f, "vmdk.qcow2", "r.raw", "vmdk", 0);
	assert_cause(open_chain(f, "vmdk.qcow2", CFG_FORMAT_QCOW2, true, &c), "format 'vmdk'");
	handmade(f, "nbd.qcow2", "nbd:localhost:10809", "raw", 0);
	assert_cause(open_chain(f, "nbd.qcow2", CFG_FORMAT_QCOW2, true, &c),
	             "is not a plain file name");
	handmade(f, "json.qcow2", "json:{\"driver\":\"file\"}", "raw", 0);
	assert_cause(open_chain(f, "json.qcow2", CFG_FORMAT_QCOW2, true, &c),
	             "is not a plain file name");
	handmade(f, "data.qcow2", NULL, NULL, 1u << 2);
	assert_cause(open_chain(f, "data.qcow2", CFG_FORMAT_QCOW2, true, &c), "external data file");
	/* A handmade header with a recorded format does work. */
	handmade(f, "ok.qcow2", "r.raw", "raw", 0);
	assert_null(open_chain(f, "ok.qcow2", CFG_FORMAT_QCOW2, true, &c));
	assert_int_equal(c.n, 2);
	imgchain_close(&c);
}

/* At most IMGCHAIN_DEPTH_MAX backing files. */
static void
test_imgchain_depth(void **state)
{
	struct fixture *f = *state;
	struct imgchain c;
	char name[32], below[32];

	img(f, "c0.qcow2", "qcow2", NULL, NULL);
	for (int i = 1; i <= IMGCHAIN_DEPTH_MAX + 1; i++) {
		snprintf(name, sizeof(name), "c%d.qcow2", i);
		snprintf(below, sizeof(below), "c%d.qcow2", i - 1);
		img(f, name, "qcow2", below, "qcow2");
	}
	snprintf(name, sizeof(name), "c%d.qcow2", IMGCHAIN_DEPTH_MAX);
	assert_null(open_chain(f, name, CFG_FORMAT_QCOW2, true, &c));
	assert_int_equal(c.n, IMGCHAIN_DEPTH_MAX + 1);
	imgchain_close(&c);
	snprintf(name, sizeof(name), "c%d.qcow2", IMGCHAIN_DEPTH_MAX + 1);
	assert_cause(open_chain(f, name, CFG_FORMAT_QCOW2, true, &c), "more than 16 backing files");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_imgchain_single, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_imgchain_backing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_imgchain_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_imgchain_depth, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
