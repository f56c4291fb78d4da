/*
 * Files' data written to disk in the background, while the event loop goes on: fdatasyncs the
 * kernel runs for us (Linux AIO IOCB_CMD_FDSYNC, their completions on an eventfd that the loop
 * watches). A head start, never a guarantee: whoever needs the data durable still calls fsync,
 * which then finds little or nothing left to write.
 */
#ifndef QVMD_BGSYNC_H
#define QVMD_BGSYNC_H

struct event_base;
struct bgsync;

/* The background syncs of base's loop (the kernel's AIO context is set up by the first one; where
 * the kernel has none, every sync is left to the fsync that follows). */
struct bgsync *bgsync_new(struct event_base *base);

/* Starts the background fdatasync of fd, which it takes (closed once the sync has ended, or at
 * once on failure). Returns 0, or -1 with errno when it could not start (s NULL: ENOSYS; too
 * many in flight: EAGAIN; no AIO: ENOSYS; a file that cannot be synced: the kernel's errno). */
int bgsync_start(struct bgsync *s, int fd);

/* Waits for the syncs still in flight (the kernel cannot abandon them), then frees s (NULL: no
 * effect). */
void bgsync_free(struct bgsync *s);

#endif
