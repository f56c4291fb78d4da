/*
 * supervisor/qvmd/vm_uid: whom each VM's QEMU runs as. Every VM gets a uid of its own (its gid is
 * the same number) from qemu_uid_range, or every QEMU runs as qemu_user. The choice is recorded in
 * the VM's state directory (<state_dir>/<name>/qemu-uid, "UID GID\n", root's) so that it stays the
 * VM's across restarts of the VM and of qvmd; the records are the only books: the uid a new VM
 * gets is the lowest one no record holds and no account uses. The daemon reads them once into a
 * struct vm_uid_books and keeps that in step with every record it writes or removes (it is their
 * only writer), so a start never rereads thousands of records. Knows nothing of struct vm.
 */
#ifndef QVMD_VM_UID_H
#define QVMD_VM_UID_H

#include <stddef.h>
#include <sys/types.h>

struct daemon_config;

struct vm_ids {
	uid_t uid;
	gid_t gid;
};

/* One record found in the state directory. */
struct vm_uid_record {
	char *name; /* the VM (the directory's name) */
	struct vm_ids ids;
};

/*
 * At daemon start (as root): qemu_user must exist and not be root; qemu_uid_range must not hold
 * the id of any user or group of the system. Returns 0, or -1 with *cause naming the account.
 */
int vm_uid_check_system(const struct daemon_config *conf, char **cause);

/* Every record in the state directory, sorted by name (*n of them; free with vm_uid_records_free).
 * Unreadable or malformed records are logged and left out. */
struct vm_uid_record *vm_uid_records(const struct daemon_config *conf, size_t *n);
void vm_uid_records_free(struct vm_uid_record *r, size_t n);

/* The records in memory (conf borrowed; the records are read at the first use). */
struct vm_uid_books;
struct vm_uid_books *vm_uid_books_new(const struct daemon_config *conf);
void vm_uid_books_free(struct vm_uid_books *b);

/*
 * The ids a VM's QEMU runs as: qemu_user's, or the VM's recorded uid when it lies in the range,
 * else the lowest free uid of the range (then recorded). A uid that another VM's record holds too
 * is an error, never shared (the records are read again before saying so: an operator may have
 * removed the wrong one). Returns 0, or -1 with *cause.
 */
int vm_uid_assign(struct vm_uid_books *b, const char *name, struct vm_ids *ids, char **cause);
/* The recorded ids of a VM, read from its record: 0, or -1 when it has no valid record. */
int vm_uid_recorded(const struct daemon_config *conf, const char *name, struct vm_ids *ids);
/* Removes a VM's record: its definition is gone and no QEMU of it runs. */
void vm_uid_release(struct vm_uid_books *b, const char *name);

#endif
