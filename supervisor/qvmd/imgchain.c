/*
 * A disk image and its backing chain, opened by qvmd. QEMU is told the chain explicitly (one block
 * node per image, each on its own fdset), so it never opens a backing file by the name written in
 * an overlay: that name is read here, from the qcow2 header (QEMU's docs/interop/qcow2.txt):
 *
 *   0 magic "QFI\xfb" | 4 version (2, 3) | 8 backing_file_offset (u64) | 16 backing_file_size
 *   (u32) | 20 cluster_bits | ... | 72 incompatible_features (v3) | 100 header_length (v3)
 *
 * followed by header extensions (u32 type, u32 length, data padded to 8 bytes, type 0 ends them)
 * up to the end of the first cluster; type 0xE2792ACA holds the backing file's format. All fields
 * are big-endian. A relative backing file name is relative to the directory of its overlay.
 */
#include "imgchain.h"

#include "xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define QCOW2_MAGIC              "QFI\xfb"
#define QCOW2_V2_HEADER          72
#define QCOW2_V3_HEADER          104
#define QCOW2_EXT_END            0x00000000u
#define QCOW2_EXT_BACKING_FMT    0xe2792acau
#define QCOW2_EXTS_MAX           64
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_BACKING_NAME_MAX   1023 /* QEMU's own limit */
#define QCOW2_FORMAT_NAME_MAX    16
/* What is read of the first cluster: the header and its extensions. */
#define QCOW2_READ_MAX 65536

static uint32_t
be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
be64(const unsigned char *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* Reads the backing file format extension, if any, from the extension area [off, limit). */
static int
qcow2_extensions(const unsigned char *buf, size_t off, size_t limit, char **format, char **cause)
{
	for (unsigned i = 0; i < QCOW2_EXTS_MAX && off + 8 <= limit; i++) {
		uint32_t type = be32(buf + off), len = be32(buf + off + 4);

		if (type == QCOW2_EXT_END)
			return 0;
		if (len > limit - off - 8) {
			*cause = xstrdup("qcow2 header extension runs past the header");
			return -1;
		}
		if (type == QCOW2_EXT_BACKING_FMT) {
			if (len == 0 || len > QCOW2_FORMAT_NAME_MAX ||
			    memchr(buf + off + 8, '\0', len) != NULL) {
				*cause = xstrdup("qcow2 backing format extension is malformed");
				return -1;
			}
			free(*format);
			*format = xasprintf("%.*s", (int)len, (const char *)(buf + off + 8));
		}
		off += 8 + (((size_t)len + 7) & ~(size_t)7);
	}
	return 0;
}

/* Whether a backing file name is a protocol or JSON specification ("nbd:...", "json:{...}"):
 * QEMU would connect or open something else than a file; qvmd cannot pass that as a descriptor. */
static bool
qcow2_name_has_protocol(const char *name)
{
	const char *colon = strchr(name, ':'), *slash = strchr(name, '/');

	return colon != NULL && (slash == NULL || colon < slash);
}

int
imgchain_qcow2_backing(int fd, char **backing, char **format, char **cause)
{
	unsigned char *buf = xmalloc(QCOW2_READ_MAX);
	uint64_t name_off;
	uint32_t version, name_len, cluster_bits;
	size_t ext_off, limit;
	ssize_t n;
	char *name = NULL;

	*backing = NULL;
	*format = NULL;
	n = pread(fd, buf, QCOW2_READ_MAX, 0);
	if (n < 0) {
		*cause = xasprintf("cannot read its header: %s", strerror(errno));
		goto fail;
	}
	if ((size_t)n < QCOW2_V2_HEADER || memcmp(buf, QCOW2_MAGIC, 4) != 0) {
		*cause = xstrdup("not a qcow2 image");
		goto fail;
	}
	version = be32(buf + 4);
	name_off = be64(buf + 8);
	name_len = be32(buf + 16);
	cluster_bits = be32(buf + 20);
	if (version != 2 && version != 3) {
		*cause = xasprintf("unsupported qcow2 version %u", version);
		goto fail;
	}
	if (cluster_bits < 9 || cluster_bits > 21) {
		*cause = xasprintf("qcow2 header has an invalid cluster size (2^%u)", cluster_bits);
		goto fail;
	}
	limit = (size_t)1 << cluster_bits;
	if (limit > (size_t)n)
		limit = (size_t)n;
	ext_off = QCOW2_V2_HEADER;
	if (version == 3) {
		if ((size_t)n < QCOW2_V3_HEADER || be32(buf + 100) < QCOW2_V3_HEADER ||
		    be32(buf + 100) > limit) {
			*cause = xstrdup("qcow2 header is truncated");
			goto fail;
		}
		if (be64(buf + 72) & QCOW2_INCOMPAT_DATA_FILE) {
			*cause = xstrdup("qcow2 image with an external data file (not supported)");
			goto fail;
		}
		ext_off = be32(buf + 100);
	}
	if (name_off != 0 && name_off < limit)
		limit = (size_t)name_off;
	if (ext_off < limit && qcow2_extensions(buf, ext_off, limit, format, cause) < 0)
		goto fail;
	if (name_off != 0) {
		if (name_len == 0 || name_len > QCOW2_BACKING_NAME_MAX) {
			*cause = xasprintf("qcow2 backing file name has an invalid length (%u)",
			                   name_len);
			goto fail;
		}
		name = xmalloc((size_t)name_len + 1);
		n = pread(fd, name, name_len, (off_t)name_off);
		if (n != (ssize_t)name_len || memchr(name, '\0', name_len) != NULL) {
			*cause = xstrdup("qcow2 backing file name is unreadable");
			goto fail;
		}
		name[name_len] = '\0';
	}
	free(buf);
	*backing = name;
	return 0;
fail:
	free(name);
	free(buf);
	free(*format);
	*format = NULL;
	return -1;
}

/* Opens path with flags (no blocking on a FIFO, no controlling tty) and checks what it is. */
static int
image_open(const char *path, int flags, struct stat *st, char **cause)
{
	int fd = open(path, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, st) < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
		*cause = xasprintf("%s: %s", path,
		                   S_ISDIR(st->st_mode) ? "is a directory"
		                                        : "not a regular file or block device");
		close(fd);
		return -1;
	}
	/* QEMU sets the flags it wants (O_DIRECT ...) on its duplicates; blocking I/O is its own.
	 */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Opens one image of the chain into im (path taken). */
static int
imgchain_open_one(struct imgchain_image *im, char *path, enum cfg_format format, bool writable,
                  char **cause)
{
	struct stat st, st_rw;

	im->path = path;
	im->format = format;
	im->fd_ro = im->fd_rw = -1;
	im->fd_ro = image_open(path, O_RDONLY, &st, cause);
	if (im->fd_ro < 0)
		return -1;
	im->dev = st.st_dev;
	im->ino = st.st_ino;
	if (!writable)
		return 0;
	im->fd_rw = image_open(path, O_RDWR, &st_rw, cause);
	if (im->fd_rw < 0)
		return -1;
	if (st_rw.st_dev != st.st_dev || st_rw.st_ino != st.st_ino) {
		*cause = xasprintf("%s: replaced while being opened", path);
		return -1;
	}
	return 0;
}

/* The path of a backing file named in the overlay at path. */
static char *
backing_path(const char *overlay, const char *name)
{
	const char *slash = strrchr(overlay, '/');

	if (name[0] == '/' || slash == NULL)
		return xstrdup(name);
	return xasprintf("%.*s/%s", (int)(slash - overlay), overlay, name);
}

int
imgchain_open(struct imgchain *c, const char *file, enum cfg_format format, bool writable,
              char **cause)
{
	char *why = NULL, *backing = NULL, *bformat = NULL;
	char *path = xstrdup(file);
	enum cfg_format fmt = format;

	c->v = xcalloc(IMGCHAIN_DEPTH_MAX + 1, sizeof *c->v);
	c->n = 0;
	for (;;) {
		struct imgchain_image *im = &c->v[c->n++];

		if (imgchain_open_one(im, path, fmt, writable && c->n == 1, &why) < 0)
			goto fail;
		for (size_t i = 0; i + 1 < c->n; i++) {
			if (c->v[i].dev == im->dev && c->v[i].ino == im->ino) {
				why = xasprintf("%s: the backing chain loops back to %s", im->path,
				                c->v[i].path);
				goto fail;
			}
		}
		if (fmt != CFG_FORMAT_QCOW2)
			break;
		if (imgchain_qcow2_backing(im->fd_ro, &backing, &bformat, &why) < 0) {
			char *s = xasprintf("%s: %s", im->path, why);

			free(why);
			why = s;
			goto fail;
		}
		if (backing == NULL)
			break;
		if (c->n > IMGCHAIN_DEPTH_MAX) {
			*cause =
			    xasprintf("%s: more than %d backing files", file, IMGCHAIN_DEPTH_MAX);
			goto out;
		}
		if (qcow2_name_has_protocol(backing)) {
			why = xasprintf("%s: backing file '%s' is not a plain file name (not "
			                "supported)",
			                im->path, backing);
			goto fail;
		}
		if (bformat == NULL) {
			why = xasprintf("%s: its backing file %s has no recorded format (record it "
			                "with qemu-img rebase -u -b %s -F raw|qcow2 %s)",
			                im->path, backing, backing, im->path);
			goto fail;
		}
		if (cfg_format_parse(bformat, &fmt) < 0) {
			why = xasprintf("%s: its backing file %s has format '%s' (only qcow2 and "
			                "raw are supported)",
			                im->path, backing, bformat);
			goto fail;
		}
		path = backing_path(im->path, backing);
		free(backing);
		free(bformat);
		backing = bformat = NULL;
	}
	return 0;
fail:
	/* why starts with the path of the image it is about: a backing file is said to be one,
	 * with the overlay that names it. */
	if (c->n > 1) {
		*cause = xasprintf("backing file %s (of %s)", why, c->v[c->n - 2].path);
		free(why);
	} else {
		*cause = why;
	}
out:
	free(backing);
	free(bformat);
	imgchain_close(c);
	return -1;
}

void
imgchain_close(struct imgchain *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++) {
		if (c->v[i].fd_ro >= 0)
			close(c->v[i].fd_ro);
		if (c->v[i].fd_rw >= 0)
			close(c->v[i].fd_rw);
		free(c->v[i].path);
	}
	free(c->v);
	c->v = NULL;
	c->n = 0;
}
