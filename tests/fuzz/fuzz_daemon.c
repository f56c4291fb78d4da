/*
 * fuzz_daemon: qvmd.conf through lexing and validation (cfg_daemon_load_text). Any input must give
 * either settings the daemon can use as they are or a non-empty list of "file:line:" errors,
 * without a crash, a leak or undefined behaviour.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "cfg.h"
#include "cfg_priv.h"
#include "fuzz_cfg.h"

#define PATH "/fuzz/qvmd.conf"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_path(const char *p)
{
	FUZZ_CHECK(p != NULL && p[0] == '/');
	FUZZ_CHECK(!cfg_has_control(p));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct daemon_config conf;
	struct cfg_errors errs;
	struct sockaddr_un sun;
	char *text;

	if (size > CFG_FILE_MAX)
		return -1;
	text = fuzz_copy(data, size);
	cfg_errors_init(&errs);
	memset(&conf, 0xa5, sizeof(conf)); /* the loader must set every field */
	if (cfg_daemon_load_text(PATH, text, size, &conf, &errs) == 0) {
		FUZZ_CHECK(errs.n == 0);
		FUZZ_CHECK(conf.path != NULL && strcmp(conf.path, PATH) == 0);
		check_path(conf.vm_dir);
		check_path(conf.run_dir);
		check_path(conf.state_dir);
		check_path(conf.control_socket);
		check_path(conf.qemu);
		check_path(conf.qemu_img);
		check_path(conf.ovmf_code);
		check_path(conf.ovmf_vars);
		/* These end up in QEMU option strings. */
		FUZZ_CHECK(strchr(conf.run_dir, ',') == NULL);
		FUZZ_CHECK(strchr(conf.state_dir, ',') == NULL);
		FUZZ_CHECK(strlen(conf.control_socket) < sizeof(sun.sun_path));
		FUZZ_CHECK(conf.socket_group == NULL ||
		           (conf.socket_group[0] != '\0' && !cfg_has_control(conf.socket_group)));
		FUZZ_CHECK(conf.image_dirs != NULL && conf.image_dirs[0] != NULL);
		for (size_t i = 0; conf.image_dirs[i] != NULL; i++)
			check_path(conf.image_dirs[i]);
		FUZZ_CHECK(conf.log_level >= CFG_LOG_ERROR && conf.log_level <= CFG_LOG_DEBUG);
		FUZZ_CHECK(conf.on_daemon_stop == CFG_ON_STOP_LEAVE ||
		           conf.on_daemon_stop == CFG_ON_STOP_POWERDOWN);
	} else {
		fuzz_check_errors(&errs, PATH);
		/* A refused file leaves nothing behind to free. */
		FUZZ_CHECK(conf.path == NULL && conf.vm_dir == NULL && conf.image_dirs == NULL);
	}
	cfg_daemon_free(&conf);
	cfg_errors_free(&errs);
	free(text);
	return 0;
}
