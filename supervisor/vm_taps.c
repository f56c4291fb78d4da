/*
 * Bridge NICs: QEMU's own bridge helper needs to spawn a process, which -sandbox spawn=deny
 * forbids, so qvmd opens the tap device itself, enslaves it to the bridge and hands QEMU the
 * descriptor (as libvirt does).
 */
#include "vm_private.h"

#include "cfg.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* Opens a tap device named ifname (or a kernel-chosen name) and adds it to bridge, up. */
int
vm_tap_open(const char *ifname, const char *bridge, char **cause)
{
	struct ifreq ifr;
	int fd, sock = -1;

	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		*cause = xasprintf("/dev/net/tun: %s", strerror(errno));
		return -1;
	}
	memset(&ifr, 0, sizeof ifr);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname ? ifname : "qvmd%d");
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		*cause = xasprintf("create tap %s: %s", ifr.ifr_name, strerror(errno));
		goto fail;
	}
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) {
		*cause = xasprintf("tap %s: %s", ifr.ifr_name, strerror(errno));
		goto fail;
	}
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) {
		*cause = xasprintf("tap %s up: %s", ifr.ifr_name, strerror(errno));
		goto fail;
	}
	{
		struct ifreq br;
		unsigned idx = if_nametoindex(ifr.ifr_name);

		memset(&br, 0, sizeof br);
		snprintf(br.ifr_name, sizeof br.ifr_name, "%s", bridge);
		br.ifr_ifindex = (int)idx;
		if (idx == 0 || ioctl(sock, SIOCBRADDIF, &br) < 0) {
			*cause = xasprintf("add tap %s to bridge %s: %s", ifr.ifr_name, bridge,
			                   strerror(errno));
			goto fail;
		}
	}
	close(sock);
	return fd;
fail:
	if (sock >= 0)
		close(sock);
	close(fd);
	return -1;
}

int
vm_open_taps(struct vm *vm, int *net_fds, int *keep, size_t *nkeep, char **cause)
{
	const struct vm_config *cfg = vm->live_cfg;

	for (size_t i = 0; i < cfg->nnets; i++) {
		const struct cfg_net *net = &cfg->nets[i];
		char *why = NULL;
		int fd;

		net_fds[i] = -1;
		if (net->type != CFG_NET_BRIDGE)
			continue;
		if (*nkeep >= 63) {
			*cause = xasprintf("net %s: too many bridge NICs", net->id);
			return -1;
		}
		fd = vm_tap_open(net->ifname, net->bridge, &why);
		if (fd < 0) {
			*cause = xasprintf("net %s: %s", net->id, why);
			free(why);
			return -1;
		}
		net_fds[i] = fd;
		keep[(*nkeep)++] = fd;
	}
	return 0;
}
