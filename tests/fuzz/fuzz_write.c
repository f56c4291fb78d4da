/*
 * fuzz_write: the --persist writer (cfg_write_add_disk, cfg_write_add_net,
 * cfg_write_remove_device) on a fuzzed definition. Each call must either refuse, leaving the file
 * byte for byte as it was and no temporary file behind, or produce a file that loads again with
 * the device present (added) or absent (removed), every other device and setting unchanged, and
 * every other byte preserved: an addition only appends, a removal cuts one range of lines that
 * holds the device's section.
 *
 * Input: byte 0 the operation (add disk, add net, remove), byte 1 the device id, bytes 2-3 the
 * device's settings, the rest the file.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "cfg_priv.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const ids[] = {"root", "lan0", "d1", "n1", "data", "uplink", "x", "-bad"};
static const char *const files[] = {"/var/lib/qvmd/new.qcow2", "/var/lib/qvmd/web1-root.qcow2",
                                    "/srv/a b.img", "/srv/x;y"};

static char *dir, *path;

/* Removes the scratch directory when the fuzzer exits. */
static void
cleanup(void)
{
	unlink(path);
	rmdir(dir);
}

static void
write_file(const uint8_t *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(n == 0 || write(fd, p, n) == (ssize_t)n);
	FUZZ_CHECK(close(fd) == 0);
}

/* The directory holds the definition and nothing else (no temporary file left). */
static void
check_dir_clean(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	FUZZ_CHECK(d != NULL);
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		FUZZ_CHECK(strcmp(e->d_name, "web1.ini") == 0);
		n++;
	}
	closedir(d);
	FUZZ_CHECK(n == 1);
}

static bool
same_str(const char *a, const char *b)
{
	return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

static bool
same_disk(const struct cfg_disk *a, const struct cfg_disk *b)
{
	return same_str(a->id, b->id) && same_str(a->file, b->file) && a->format == b->format &&
	       a->size == b->size && a->readonly == b->readonly && a->cache == b->cache &&
	       a->boot == b->boot;
}

static bool
same_net(const struct cfg_net *a, const struct cfg_net *b)
{
	return same_str(a->id, b->id) && a->type == b->type && memcmp(a->mac, b->mac, 6) == 0 &&
	       same_str(a->bridge, b->bridge) && same_str(a->ifname, b->ifname) &&
	       a->restricted == b->restricted;
}

/* Everything of old except device id is in new, unchanged. */
static void
check_rest_kept(const struct vm_config *old, const struct vm_config *new, const char *id)
{
	FUZZ_CHECK(same_str(old->name, new->name) && old->memory == new->memory &&
	           old->vcpus == new->vcpus && old->machine == new->machine &&
	           old->accel == new->accel &&same_str(old->cpu, new->cpu) &&
	           old->hotplug_slots == new->hotplug_slots &&same_str(old->kernel, new->kernel) &&
	           same_str(old->initrd, new->initrd) && same_str(old->append, new->append) &&
	           old->firmware == new->firmware &&
	           old->shutdown_timeout_ms == new->shutdown_timeout_ms &&
	           old->restart == new->restart && old->restart_limit == new->restart_limit &&
	           old->autostart == new->autostart && old->console == new->console);
	for (size_t i = 0; i < old->ndisks; i++) {
		const struct cfg_disk *o = &old->disks[i], *n = cfg_vm_disk(new, o->id);

		if (strcmp(o->id, id) != 0)
			FUZZ_CHECK(n != NULL && same_disk(o, n));
	}
	for (size_t i = 0; i < old->nnets; i++) {
		const struct cfg_net *o = &old->nets[i], *n = cfg_vm_net(new, o->id);

		if (strcmp(o->id, id) != 0)
			FUZZ_CHECK(n != NULL && same_net(o, n));
	}
	/* Order kept: the loader's order is the file's. */
	for (size_t i = 0, j = 0; i < old->ndisks; i++) {
		if (strcmp(old->disks[i].id, id) == 0)
			continue;
		while (j < new->ndisks && strcmp(new->disks[j].id, old->disks[i].id) != 0)
			j++;
		FUZZ_CHECK(j < new->ndisks);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg_errors errs;
	struct vm_config *old, *new;
	struct cfg_disk disk;
	struct cfg_net net;
	const char *id, *kind;
	char *cause = NULL, *text, *head;
	size_t len, tlen;
	int op, rc;

	if (size < 4 || size > 64 * 1024)
		return -1;
	if (dir == NULL) {
		char tmpl[] = "/dev/shm/qvmd-fuzz-write.XXXXXX";

		dir = mkdtemp(tmpl) != NULL ? strdup(tmpl) : NULL;
		FUZZ_CHECK(dir != NULL);
		path = cfg_xprintf("%s/web1.ini", dir);
		atexit(cleanup);
	}
	op = data[0] % 3;
	id = ids[data[1] % 8];
	text = fuzz_copy(data + 4, size - 4);
	tlen = size - 4;
	write_file(data + 4, tlen);
	cfg_errors_init(&errs);
	old = cfg_vm_load_text(path, text, tlen, &errs);
	cfg_errors_free(&errs);

	kind = op == 0 ? "disk" : "net";
	memset(&disk, 0, sizeof(disk));
	memset(&net, 0, sizeof(net));
	if (op == 0) {
		disk.id = (char *)id;
		disk.file = (char *)files[(data[2] >> 6) & 3];
		disk.format = data[2] & 1 ? CFG_FORMAT_RAW : CFG_FORMAT_QCOW2;
		disk.readonly = data[2] & 2;
		disk.boot = data[2] & 4;
		disk.cache = (enum cfg_cache)(((data[2] >> 3) & 7) % 5);
		disk.size = data[3] & 1 ? 1ULL << 30 : data[3] & 2 ? 1000 : 0;
		rc = cfg_write_add_disk(path, &disk, &cause);
	} else if (op == 1) {
		static const uint8_t base[6] = {0x52, 0x54, 0x00, 0x89, 0xba, 0x6f};

		net.id = (char *)id;
		net.type = (enum cfg_net_type)(data[2] % 3);
		net.restricted = data[2] & 4;
		memcpy(net.mac, base, 6);
		net.mac[5] = data[3];
		net.mac_given = true;
		if (data[2] & 8)
			net.bridge = "br0";
		if (data[2] & 16)
			net.ifname = data[2] & 32 ? "tap-web1" : "tap0";
		rc = cfg_write_add_net(path, &net, &cause);
	} else {
		rc = cfg_write_remove_device(path, id, &cause);
		if (old != NULL) {
			const struct cfg_disk *d = cfg_vm_disk(old, id);

			kind = d != NULL ? "disk" : "net";
		}
	}

	if (rc != 0) {
		FUZZ_CHECK(cause != NULL && strncmp(cause, path, strlen(path)) == 0);
		free(cause);
		cause = NULL;
	} else {
		FUZZ_CHECK(cause == NULL);
	}
	head = cfg_read_file(path, CFG_FILE_MAX, &len, &cause);
	FUZZ_CHECK(head != NULL);
	if (rc != 0) {
		FUZZ_CHECK(len == tlen && memcmp(head, text, len) == 0);
	} else {
		char *label = cfg_xprintf("[%s %s]", kind, id);

		FUZZ_CHECK(old != NULL); /* a definition with errors is never edited */
		cfg_errors_init(&errs);
		new = cfg_vm_load_text(path, head, len, &errs);
		FUZZ_CHECK(new != NULL);
		cfg_errors_free(&errs);
		check_rest_kept(old, new, id);
		if (op == 2) {
			size_t p = 0, s = 0, cut = tlen - len, a;

			FUZZ_CHECK(cfg_vm_disk(old, id) != NULL || cfg_vm_net(old, id) != NULL);
			FUZZ_CHECK(cfg_vm_disk(new, id) == NULL && cfg_vm_net(new, id) == NULL);
			FUZZ_CHECK(new->ndisks + new->nnets + 1 == old->ndisks + old->nnets);
			/*
			 * new = text minus one range [a, a + cut) that holds the header. Where text
			 * repeats around the range (a next section "[disk ruot]" after "[disk
			 * root]"), every a from len - s to p fits: one of them must hold it.
			 */
			FUZZ_CHECK(len < tlen);
			while (p < len && head[p] == text[p])
				p++;
			while (s < len && head[len - 1 - s] == text[tlen - 1 - s])
				s++;
			FUZZ_CHECK(p + s >= len);
			for (a = len - s; a <= p; a++) {
				if (memmem(text + a, cut, "[", 1) != NULL &&
				    memmem(text + a, cut, id, strlen(id)) != NULL)
					break;
			}
			FUZZ_CHECK(a <= p);
		} else {
			size_t at = tlen;

			FUZZ_CHECK(old->ndisks + old->nnets + 1 == new->ndisks + new->nnets);
			FUZZ_CHECK(op == 0 ? cfg_vm_disk(new, id) != NULL &&
			                         same_disk(cfg_vm_disk(new, id), &disk)
			                   : cfg_vm_net(new, id) != NULL &&
			                         same_net(cfg_vm_net(new, id), &net));
			/* text, a line break and a blank line as needed, then the new section. */
			FUZZ_CHECK(len > tlen && memcmp(head, text, tlen) == 0);
			for (int i = 0; i < 2 && at < len && head[at] == '\n'; i++)
				at++;
			FUZZ_CHECK(len - at > strlen(label) &&
			           memcmp(head + at, label, strlen(label)) == 0 &&
			           head[at + strlen(label)] == '\n');
			FUZZ_CHECK(memchr(head + at, '\0', len - at) == NULL);
		}
		free(label);
		cfg_vm_free(new);
	}
	check_dir_clean();
	free(head);
	cfg_vm_free(old);
	free(text);
	return 0;
}
