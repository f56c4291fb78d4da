/*
 * supervisor/qvmd/imgchain: a disk image and its backing chain, opened by qvmd so that QEMU gets
 * descriptors and never opens an image by name. The backing file name and format of a qcow2 image
 * are read from its header here; the chain is bounded, and a loop, an unreadable header, a
 * backing file given as a protocol or JSON specification, a backing file of unknown format or an
 * external data file is an error, never a guess.
 */
#ifndef QVMD_IMGCHAIN_H
#define QVMD_IMGCHAIN_H

#include "cfg.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Backing files one disk may have (images in a chain: one more). */
#define IMGCHAIN_DEPTH_MAX 16

/* One image of a chain. */
struct imgchain_image {
	char *path; /* as qvmd opened it (a backing file's name resolved against its overlay) */
	enum cfg_format format;
	int fd_ro; /* O_RDONLY | O_CLOEXEC */
	int fd_rw; /* O_RDWR | O_CLOEXEC, or -1: the image is used read-only */
	dev_t dev; /* the identity of the opened file */
	ino_t ino;
};

/* [0] the disk's own image, [1..n-1] its backing files, nearest first. */
struct imgchain {
	struct imgchain_image *v;
	size_t n;
};

/*
 * Opens file (a regular file or a block device) as format: read-write too when writable, and
 * every image of a qcow2's backing chain read-only. Fills *c (which must be zeroed or closed);
 * returns 0, or -1 with *cause ("PATH: why", or "backing file PATH of IMAGE: why") and *c empty.
 */
int imgchain_open(struct imgchain *c, const char *file, enum cfg_format format, bool writable,
                  char **cause);
/* Closes the descriptors still open and frees the chain (leaves it empty); NULL or empty is fine.
 */
void imgchain_close(struct imgchain *c);

/*
 * Reads a qcow2 header from fd: *backing gets the backing file name (NULL when there is none)
 * and *format its recorded format (NULL when the header records none); both allocated. Returns 0,
 * or -1 with *cause when fd is not a well-formed qcow2 image qvmd can describe to QEMU.
 */
int imgchain_qcow2_backing(int fd, char **backing, char **format, char **cause);

#endif
