/* The control protocol's error codes (see protocol.h). */
#include "protocol.h"

#include <string.h>

static const struct {
	const char *name;
	int exit; /* qvmctl's exit status */
} proto_errs[PROTO_ERR_COUNT] = {
    [PROTO_OK] = {"ok", 0},
    [PROTO_ERR_INVALID] = {"invalid", 1},
    [PROTO_ERR_NOT_FOUND] = {"not-found", 1},
    [PROTO_ERR_BUSY] = {"busy", 1},
    [PROTO_ERR_NOT_RUNNING] = {"not-running", 1},
    [PROTO_ERR_ALREADY_RUNNING] = {"already-running", 1},
    [PROTO_ERR_QEMU] = {"qemu-error", 1},
    [PROTO_ERR_TIMEOUT] = {"timeout", 1},
    [PROTO_ERR_DENIED] = {"denied", 1},
    [PROTO_ERR_FAILED] = {"failed", 1},
    [PROTO_ERR_TOO_LARGE] = {"too-large", 1},
    [PROTO_ERR_TOO_SLOW] = {"too-slow", 1},
    [PROTO_ERR_IDLE] = {"idle", 1},
    [PROTO_ERR_UNREACHABLE] = {"unreachable", 3},
};

const char *
proto_err_name(enum proto_err code)
{
	if ((unsigned)code >= PROTO_ERR_COUNT)
		code = PROTO_ERR_FAILED;
	return proto_errs[code].name;
}

enum proto_err
proto_err_parse(const char *name)
{
	for (unsigned i = 0; name != NULL && i < PROTO_ERR_COUNT; i++) {
		if (strcmp(proto_errs[i].name, name) == 0)
			return (enum proto_err)i;
	}
	return PROTO_ERR_FAILED;
}

int
proto_err_exit(enum proto_err code)
{
	if ((unsigned)code >= PROTO_ERR_COUNT)
		code = PROTO_ERR_FAILED;
	return proto_errs[code].exit;
}
