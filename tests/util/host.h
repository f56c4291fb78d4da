/*
 * What the test host offers, for tests and benchmarks that run real processes: a usable KVM, and
 * which files another process holds open.
 */
#ifndef QVMD_TEST_HOST_H
#define QVMD_TEST_HOST_H

#include <stdbool.h>
#include <sys/types.h>

/* Whether /dev/kvm can be opened (tests then run firmware-only QEMUs with -accel kvm). */
bool host_kvm_usable(void);

/* Whether process pid holds a descriptor for the same file as fd (from /proc/PID/fd); false also
 * when pid's descriptors cannot be read. */
bool host_process_has_file(pid_t pid, int fd);

#endif
