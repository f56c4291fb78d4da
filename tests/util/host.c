#include "host.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

bool
host_kvm_usable(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

bool
host_process_has_file(pid_t pid, int fd)
{
	char dirpath[64];
	struct stat want;
	struct dirent *de;
	DIR *dir;
	bool found = false;

	snprintf(dirpath, sizeof dirpath, "/proc/%d/fd", (int)pid);
	if (fstat(fd, &want) < 0 || (dir = opendir(dirpath)) == NULL)
		return false;
	while (!found && (de = readdir(dir)) != NULL) {
		char p[384];
		struct stat st;

		snprintf(p, sizeof p, "%s/%s", dirpath, de->d_name);
		found = stat(p, &st) == 0 && st.st_ino == want.st_ino && st.st_dev == want.st_dev;
	}
	closedir(dir);
	return found;
}
