/*
 * supervisor/qvmd/qcow2_new: an empty qcow2 image written into a file qvmd has just created, the
 * image `qemu-img create -f qcow2` makes (version 3, 64 KiB clusters, 16-bit refcounts, no
 * options), byte for byte. Backup targets are made this way: no qemu-img process and no QEMU
 * blockdev-create job per disk, which cost an incremental backup more than its copy.
 */
#ifndef QVMD_QCOW2_NEW_H
#define QVMD_QCOW2_NEW_H

#include <stdint.h>

/* The largest virtual size (QEMU's own limit: an L1 table of at most 32 MiB). */
#define QCOW2_NEW_SIZE_MAX (UINT64_C(1) << 51)

/*
 * Writes an empty qcow2 image of virtual size `size` (a multiple of 512, at most
 * QCOW2_NEW_SIZE_MAX) into the empty regular file fd; with backing (a file name, as QEMU will
 * resolve it: relative to the image's directory) and backing_fmt (e.g. "qcow2", or NULL), the
 * image is an overlay of it. Nothing is synced. Returns 0, or -1 with *cause (the file may hold
 * part of an image then).
 */
int qcow2_new(int fd, uint64_t size, const char *backing, const char *backing_fmt, char **cause);

#endif
