/*
 * Files' data written to disk in the background, while the event loop goes on: fdatasyncs the
 * kernel runs for us (Linux AIO IOCB_CMD_FDSYNC, their completions on an eventfd that the loop
 * watches). A head start, never a guarantee: whoever needs the data durable still calls fsync,
 * which then finds little or nothing left to write. That fsync, for several files at once, is
 * bgsync_all.
 */
#ifndef QVMD_BGSYNC_H
#define QVMD_BGSYNC_H

#include <stddef.h>

struct event_base;
struct bgsync;

/* The background syncs of base's loop (the kernel's AIO context is set up by the first one; where
 * the kernel has none, every sync is left to the fsync that follows). */
struct bgsync *bgsync_new(struct event_base *base);

/* Starts the background fdatasync of fd, which it takes (closed once the sync has ended, or at
 * once on failure). Returns 0, or -1 with errno when it could not start (s NULL: ENOSYS; too
 * many in flight: EAGAIN; no AIO: ENOSYS; a file that cannot be synced: the kernel's errno). */
int bgsync_start(struct bgsync *s, int fd);

/* fsyncs every descriptor of fds at once and waits for all of them: the kernel runs them side by
 * side, and a journaling file system may carry them on one commit and one device flush, where
 * one fsync after the other costs each its own. errs[i] gets fds[i]'s result (0 or an errno).
 * Where the kernel has no AIO (or s is NULL), one fsync after the other. Returns 0 when every
 * one succeeded, else -1. Blocks, as fsync does. */
int bgsync_all(struct bgsync *s, const int *fds, size_t n, int *errs);

/* Waits for the syncs still in flight (the kernel cannot abandon them), then frees s (NULL: no
 * effect). */
void bgsync_free(struct bgsync *s);

#endif
