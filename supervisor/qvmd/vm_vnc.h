/*
 * supervisor/qvmd/vm_vnc (private to the VM layer): the VNC display of a VM with display = vnc.
 * QEMU runs "-vnc none": a VNC server without a socket of its own. While its QMP is ready, qvmd
 * listens on <run_dir>/NAME/vnc.sock (never a TCP port) and hands each client it accepts to QEMU
 * (getfd, then add_client with skipauth: whoever may open the socket may see the screen).
 */
#ifndef QVMD_VM_VNC_H
#define QVMD_VM_VNC_H

struct vm;

/*
 * Starts listening for a VM whose running definition says display = vnc (no-op otherwise, or
 * when it listens already). Mode 0600, or 0660 with qvmd.conf's socket_group as its group.
 * Returns 0, or -1 with *cause (the VM runs on without a display socket).
 */
int vm_vnc_open(struct vm *vm, char **cause);
/* Stops listening and removes the socket (the QEMU is gone, or qvmd lets go of it). Clients
 * already handed over stay QEMU's. No-op without a listener. */
void vm_vnc_close(struct vm *vm);
/* The socket's path while qvmd listens on it (borrowed), else NULL. */
const char *vm_vnc_socket(const struct vm *vm);

#endif
