/*
 * ctlflood SOCKET CLIENTS BYTES HOLD: a crowd of control clients that never read. Opens CLIENTS
 * non-blocking connections (a connect the listener's backlog refuses is counted, not retried),
 * prints "ready connected C refused R", then writes BYTES of {"cmd":"list"} lines on each until
 * every connection has taken them all, was closed by the daemon, or none made progress for 3 s,
 * and prints "flooded" and the counts below. Then it holds the connections, still not reading, for
 * HOLD seconds and prints "connected C refused R written W dropped D stalled S": dropped = closed
 * (or shut down) by the daemon, stalled = still open with requests the daemon did not take. "last:
 * LINE" follows with the last line the first dropped connection received. With BYTES 0 the
 * connections stay silent.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct conn {
	int fd; /* -1: dropped or never connected */
	size_t left;
	size_t off; /* into the request pattern */
};

static char pattern[16384];
static size_t pattern_len;
static char last[1024];
static int have_last;

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads what a dropped connection received, remembering the last line of the first one. */
static void
drop(struct conn *cn, int *dropped)
{
	char buf[65536], line[sizeof last];
	size_t ll = 0;
	ssize_t n;

	while (!have_last && (n = recv(cn->fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				line[ll] = '\0';
				memcpy(last, line, ll + 1);
				ll = 0;
			} else if (ll + 1 < sizeof line) {
				line[ll++] = buf[i];
			}
		}
	}
	if (last[0] != '\0')
		have_last = 1;
	close(cn->fd);
	cn->fd = -1;
	(*dropped)++;
}

int
main(int argc, char **argv)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct rlimit rl;
	struct conn *conns;
	struct pollfd *pfds;
	int nclients, connected = 0, refused = 0, dropped = 0, stalled = 0, hold;
	size_t bytes, written = 0;
	long long end;

	if (argc != 5)
		return 2;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", argv[1]);
	nclients = atoi(argv[2]);
	bytes = strtoul(argv[3], NULL, 10);
	hold = atoi(argv[4]);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	while (pattern_len + 16 <= sizeof pattern) {
		memcpy(pattern + pattern_len, "{\"cmd\":\"list\"}\n", 15);
		pattern_len += 15;
	}
	conns = calloc((size_t)nclients, sizeof *conns);
	pfds = calloc((size_t)nclients, sizeof *pfds);
	if (conns == NULL || pfds == NULL)
		return 1;
	for (int i = 0; i < nclients; i++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		conns[i].fd = -1;
		if (fd < 0) {
			perror("socket");
			return 1;
		}
		if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
			close(fd);
			refused++;
			continue;
		}
		conns[i].fd = fd;
		conns[i].left = bytes;
		connected++;
	}
	printf("ready connected %d refused %d\n", connected, refused);
	fflush(stdout);

	/* Write until done, dropped or stalled. */
	for (;;) {
		int n = 0, r;

		for (int i = 0; i < nclients; i++) {
			if (conns[i].fd < 0 || conns[i].left == 0)
				continue;
			pfds[n].fd = conns[i].fd;
			pfds[n].events = POLLOUT | POLLRDHUP;
			pfds[n].revents = 0;
			n++;
		}
		if (n == 0)
			break;
		r = poll(pfds, (nfds_t)n, 3000);
		if (r <= 0)
			break; /* nobody takes anything: stalled */
		for (int i = 0, k = 0; i < nclients && k < n; i++) {
			struct conn *cn = &conns[i];
			size_t len;
			ssize_t w;

			if (cn->fd < 0 || cn->fd != pfds[k].fd)
				continue;
			if (pfds[k++].revents & (POLLHUP | POLLERR | POLLRDHUP)) {
				drop(cn, &dropped);
				continue;
			}
			if (!(pfds[k - 1].revents & POLLOUT))
				continue;
			len = pattern_len - cn->off;
			if (len > cn->left)
				len = cn->left;
			w = send(cn->fd, pattern + cn->off, len, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w < 0) {
				if (errno != EAGAIN && errno != EINTR)
					drop(cn, &dropped);
				continue;
			}
			written += (size_t)w;
			cn->left -= (size_t)w;
			cn->off = (cn->off + (size_t)w) % pattern_len;
		}
	}

	for (int i = 0; i < nclients; i++) {
		if (conns[i].fd >= 0 && conns[i].left > 0)
			stalled++;
	}
	printf("flooded connected %d refused %d written %zu dropped %d stalled %d\n", connected,
	       refused, written, dropped, stalled);
	fflush(stdout);
	stalled = 0;

	/* Hold, still not reading; note what the daemon closes. */
	end = now_ms() + (long long)hold * 1000;
	for (;;) {
		long long left = end - now_ms();
		int n = 0;

		if (left <= 0)
			break;
		for (int i = 0; i < nclients; i++) {
			if (conns[i].fd < 0)
				continue;
			pfds[n].fd = conns[i].fd;
			pfds[n].events = POLLRDHUP;
			pfds[n].revents = 0;
			n++;
		}
		if (poll(pfds, (nfds_t)n, (int)left) <= 0)
			continue;
		for (int i = 0, k = 0; i < nclients && k < n; i++) {
			if (conns[i].fd < 0 || conns[i].fd != pfds[k].fd)
				continue;
			if (pfds[k++].revents & (POLLHUP | POLLERR | POLLRDHUP))
				drop(&conns[i], &dropped);
		}
	}
	for (int i = 0; i < nclients; i++) {
		if (conns[i].fd >= 0 && conns[i].left > 0)
			stalled++;
	}
	printf("connected %d refused %d written %zu dropped %d stalled %d\n", connected, refused,
	       written, dropped, stalled);
	if (have_last)
		printf("last: %s\n", last);
	for (int i = 0; i < nclients; i++) {
		if (conns[i].fd >= 0)
			close(conns[i].fd);
	}
	free(conns);
	free(pfds);
	return 0;
}
