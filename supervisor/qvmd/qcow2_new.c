/*
 * An empty qcow2 image (QEMU's docs/interop/qcow2.txt), laid out as QEMU 7.2's qcow2 driver lays
 * out a new one, so that tests can compare the two byte for byte:
 *
 *   cluster 0   the header (version 3, 112 bytes), its extensions (the backing file's format
 *               when there is one, the feature name table, the end), then the backing file name
 *   cluster 1   the refcount table: one entry, the refcount block at cluster 2
 *   cluster 2   the refcount block (16-bit entries): 1 for each cluster in use
 *   cluster 3   the L1 table, all zero (nothing allocated): one entry per 512 MiB of virtual
 *               size; the file ends with it
 *
 * All fields are big-endian.
 */
#include "qcow2_new.h"

#include "xalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CLUSTER_BITS  16
#define CLUSTER       (1u << CLUSTER_BITS)
#define HEADER_LEN    112 /* version 3 with the compression type byte, padded to 8 */
#define REFCOUNT_BITS 16
/* Virtual bytes one L1 entry covers: an L2 table of CLUSTER / 8 entries of a cluster each. */
#define L1_SPAN ((uint64_t)CLUSTER * (CLUSTER / 8))

#define EXT_END         0x00000000u
#define EXT_BACKING_FMT 0xe2792acau
#define EXT_FEATURES    0x6803f857u
#define FEATURE_NAME    46 /* bytes of a feature's name in the table */
/* QEMU refuses longer backing file names. */
#define BACKING_NAME_MAX 1023
#define FORMAT_NAME_MAX  16

/* The feature name table QEMU writes into every new image: type (0 incompatible, 1 compatible,
 * 2 autoclear), bit, name. */
static const struct {
	unsigned char type, bit;
	const char *name;
} features[] = {
    {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
    {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},          {2, 1, "raw external data"},
};

static void
put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void
put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static size_t
pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

/* Writes all of len bytes at off. */
static int
write_at(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* The first cluster's used part into buf (zeroed, at least CLUSTER bytes); returns its length. */
static size_t
header(unsigned char *buf, uint64_t size, uint32_t l1_size, const char *backing,
       const char *backing_fmt)
{
	size_t off = HEADER_LEN;

	memcpy(buf, "QFI\xfb", 4);
	put32(buf + 4, 3);
	/* 8 backing_file_offset, 16 backing_file_size: below, once the extensions are laid */
	put32(buf + 20, CLUSTER_BITS);
	put64(buf + 24, size);
	/* 32 crypt_method: none */
	put32(buf + 36, l1_size);
	put64(buf + 40, l1_size > 0 ? 3 * (uint64_t)CLUSTER : 0); /* no table: none */
	put64(buf + 48, CLUSTER);
	put32(buf + 56, 1);
	/* 60 nb_snapshots, 64 snapshots_offset, 72/80/88 feature bits: none */
	put32(buf + 96, 4); /* refcount_order: 2^4 bits */
	put32(buf + 100, HEADER_LEN);
	/* 104 compression_type: zlib; 105..111 padding */
	if (backing_fmt != NULL) {
		put32(buf + off, EXT_BACKING_FMT);
		put32(buf + off + 4, (uint32_t)strlen(backing_fmt));
		memcpy(buf + off + 8, backing_fmt, strlen(backing_fmt));
		off += 8 + pad8(strlen(backing_fmt));
	}
	put32(buf + off, EXT_FEATURES);
	put32(buf + off + 4, (uint32_t)(sizeof features / sizeof features[0] * (2 + FEATURE_NAME)));
	off += 8;
	for (size_t i = 0; i < sizeof features / sizeof features[0]; i++) {
		buf[off] = features[i].type;
		buf[off + 1] = features[i].bit;
		memcpy(buf + off + 2, features[i].name, strlen(features[i].name));
		off += 2 + FEATURE_NAME;
	}
	put32(buf + off, EXT_END);
	put32(buf + off + 4, 0);
	off += 8;
	if (backing != NULL) {
		put64(buf + 8, off);
		put32(buf + 16, (uint32_t)strlen(backing));
		memcpy(buf + off, backing, strlen(backing));
		off += strlen(backing);
	}
	return off;
}

int
qcow2_new(int fd, uint64_t size, const char *backing, const char *backing_fmt, char **cause)
{
	uint64_t l1_size, l1_bytes, clusters;
	unsigned char *buf, *rb, rt[8];
	struct stat sb;
	size_t len;
	int rc = 0;

	if (size % 512 != 0 || size > QCOW2_NEW_SIZE_MAX) {
		*cause = xasprintf("qcow2: virtual size %" PRIu64
		                   " is not a multiple of 512 bytes up to 2 PiB",
		                   size);
		return -1;
	}
	if (backing != NULL && (backing[0] == '\0' || strlen(backing) > BACKING_NAME_MAX)) {
		*cause =
		    xasprintf("qcow2: a backing file name has 1 to %d bytes", BACKING_NAME_MAX);
		return -1;
	}
	if (backing_fmt != NULL && (backing == NULL || strlen(backing_fmt) > FORMAT_NAME_MAX)) {
		*cause = xstrdup("qcow2: a backing format needs a backing file and a short name");
		return -1;
	}
	if (fstat(fd, &sb) < 0) {
		*cause = xasprintf("qcow2: %s", strerror(errno));
		return -1;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size != 0) {
		*cause = xstrdup("qcow2: not an empty regular file");
		return -1;
	}
	l1_size = (size + L1_SPAN - 1) / L1_SPAN;
	l1_bytes = l1_size * 8;
	/* In use: the header, the refcount table and block, the L1 table (the refcount block has
	 * room for CLUSTER / 2 clusters: the largest L1 table takes 512). */
	clusters = 3 + (l1_bytes + CLUSTER - 1) / CLUSTER;
	buf = xcalloc(1, CLUSTER);
	len = header(buf, size, (uint32_t)l1_size, backing, backing_fmt);
	put64(rt, 2 * (uint64_t)CLUSTER);
	rb = xcalloc(clusters, 2);
	for (uint64_t i = 0; i < clusters; i++)
		rb[2 * i + 1] = 1;
	if (write_at(fd, buf, len, 0) < 0 || write_at(fd, rt, sizeof rt, CLUSTER) < 0 ||
	    write_at(fd, rb, 2 * clusters, 2 * (off_t)CLUSTER) < 0 ||
	    ftruncate(fd, 3 * (off_t)CLUSTER + (off_t)l1_bytes) < 0) {
		*cause = xasprintf("qcow2: writing the image: %s", strerror(errno));
		rc = -1;
	}
	free(rb);
	free(buf);
	return rc;
}
