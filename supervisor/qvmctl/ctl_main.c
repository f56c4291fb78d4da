/* qvmctl: the command-line client of qvmd. Global options, then one verb from the table. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "ctl_client.h"
#include "ctl_verbs.h"

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"json", no_argument, NULL, 'j'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct ctl ctl = {.timeout_ms = -1};
	const char *env = getenv("QVMD_SOCKET");
	struct ctl_args args;
	uint64_t timeout_ms = 0;
	int ch, rc;

	ctl.socket = env != NULL && *env != '\0' ? env : CTL_DEFAULT_SOCKET;
	opterr = 0;
	/* "+": stop at the verb, whose own options are parsed by the verb. */
	while ((ch = getopt_long(argc, argv, "+:s:t:jh", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			ctl.socket = optarg;
			break;
		case 'j':
			ctl.json = true;
			break;
		case 't':
			if (cfg_parse_duration(optarg, &timeout_ms) != 0 || timeout_ms == 0) {
				fprintf(stderr,
				        "qvmctl: -t: '%s' is not a timeout (use e.g. 10 or 2m)\n",
				        optarg);
				return CTL_EXIT_USAGE;
			}
			break;
		case 'h':
			ctl_usage(stdout);
			return CTL_EXIT_OK;
		case ':':
			fprintf(stderr, "qvmctl: option '%s' needs a value\n", argv[optind - 1]);
			ctl_usage(stderr);
			return CTL_EXIT_USAGE;
		default:
			if (optopt > 0)
				fprintf(stderr, "qvmctl: unknown option '-%c'\n", optopt);
			else
				fprintf(stderr, "qvmctl: unknown option '%s'\n", argv[optind - 1]);
			ctl_usage(stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "qvmctl: no verb given\n");
		ctl_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	ctl.verb = ctl_verb_find(argv[optind]);
	if (ctl.verb == NULL) {
		fprintf(stderr, "qvmctl: unknown verb '%s'\n", argv[optind]);
		ctl_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	rc = ctl_verb_parse(ctl.verb, argc - optind, argv + optind, &args);
	if (rc != CTL_EXIT_OK)
		return rc == -1 ? CTL_EXIT_OK : rc;
	if (timeout_ms > 0)
		ctl.timeout_ms = (int64_t)timeout_ms;
	rc = ctl.verb->exec(&ctl, &args);
	ctl_client_free(ctl.client);
	if (fflush(stdout) != 0 && rc == CTL_EXIT_OK) {
		perror("qvmctl: stdout");
		rc = CTL_EXIT_FAILED;
	}
	return rc;
}
