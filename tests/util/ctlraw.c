/*
 * ctlraw SOCKET [--hang SECONDS]: sends stdin verbatim to a unix socket and prints what comes back,
 * for tests that feed the daemon malformed, oversized or half-written requests. Without --hang it
 * shuts down its write side after stdin and prints replies until EOF or 5 s of silence; with --hang
 * it keeps the connection open, silent, for SECONDS, then exits.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char buf[65536];
	ssize_t n;
	int fd, hang = argc > 3 && strcmp(argv[2], "--hang") == 0 ? atoi(argv[3]) : -1;

	if (argc < 2)
		return 2;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", argv[1]);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		perror("connect");
		return 3;
	}
	while ((n = read(0, buf, sizeof buf)) > 0) {
		if (write(fd, buf, (size_t)n) != n)
			break; /* the daemon may close on an oversized request */
	}
	if (hang >= 0) {
		sleep((unsigned)hang);
		return 0;
	}
	shutdown(fd, SHUT_WR);
	for (;;) {
		struct pollfd pfd = {fd, POLLIN, 0};

		if (poll(&pfd, 1, 5000) <= 0)
			break;
		n = read(fd, buf, sizeof buf);
		if (n <= 0)
			break;
		fwrite(buf, 1, (size_t)n, stdout);
	}
	return 0;
}
