/*
 * snapshot_bench: snapshot create, revert and delete through qvmctl against the same QMP job
 * sequence written by hand on an identical VM (contrib/bench/snapshot-bench.sh builds the guest
 * and the daemon and runs this).
 *
 *   snapshot_bench QVMCTL CTLSOCK VM CONSOLE ARGVFILE LOG RAW_CONSOLE DISK N
 *
 * VM runs under qvmd (already started; CONSOLE is its console log) with one qcow2 disk whose id is
 * DISK. ARGVFILE is qvmd --print-cmdline of an identical VM whose run and state directories and
 * image differ: this program starts it, sends cont like qvmd does, and waits until both guests
 * printed GUEST-READY. Then N times, alternating between the two VMs so that machine noise hits
 * both alike (each timed from spawn to exit, or from the first command to the last reply):
 *   qvmd: "qvmctl snapshot VM bN", "qvmctl revert VM bN", "qvmctl snapshot-delete VM bN";
 *   raw:  snapshot-save / snapshot-load / snapshot-delete with a job-id (VM state in DISK's qcow2
 *         node), then JOB_STATUS_CHANGE "concluded" for that job, query-jobs (its error, if any),
 *         job-dismiss.
 * Figures as human lines and KEY=VALUE lines (milliseconds, medians).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bench_util.h"
#include "qmp_sync.h"

#define READY_TIMEOUT_S 300
#define READY_MARKER    "GUEST-READY"
/* A snapshot of 256 MiB under TCG on a loaded machine: seconds at worst. */
#define JOB_TIMEOUT_MS 120000

static const char *
jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

/* Runs one QMP command that must succeed. */
static void
qmp_run(struct qmp_sync *q, const char *cmd, const char *args)
{
	struct json_object *r = qmp_sync_cmd(q, cmd, args);

	if (qmp_sync_return(r) == NULL)
		bench_die("raw QMP %s %s failed: %s", cmd, args ? args : "",
		          r ? json_object_to_json_string(r) : "no reply");
	json_object_put(r);
}

/*
 * The hand-written job sequence: the command with its job-id, JOB_STATUS_CHANGE "concluded" for
 * that id (QEMU 7.2's snapshot jobs always wait to be dismissed), query-jobs for its outcome,
 * job-dismiss.
 */
static void
raw_job(struct qmp_sync *q, const char *cmd, const char *id, const char *tag, const char *node,
        bool vmstate)
{
	struct json_object *r, *jobs;
	char args[512];
	bool found = false;

	snprintf(args, sizeof args, "{\"job-id\":\"%s\",\"tag\":\"%s\",%s%s%s\"devices\":[\"%s\"]}",
	         id, tag, vmstate ? "\"vmstate\":\"" : "", vmstate ? node : "",
	         vmstate ? "\"," : "", node);
	qmp_run(q, cmd, args);
	for (;;) {
		struct json_object *ev =
		    qmp_sync_wait_event(q, "JOB_STATUS_CHANGE", JOB_TIMEOUT_MS);
		struct json_object *data;
		bool done;

		if (ev == NULL)
			bench_die("raw VM: %s %s: no JOB_STATUS_CHANGE", cmd, id);
		done = json_object_object_get_ex(ev, "data", &data) && jstr(data, "id") != NULL &&
		       strcmp(jstr(data, "id"), id) == 0 && jstr(data, "status") != NULL &&
		       strcmp(jstr(data, "status"), "concluded") == 0;
		json_object_put(ev);
		if (done)
			break;
	}
	r = qmp_sync_cmd(q, "query-jobs", NULL);
	jobs = qmp_sync_return(r);
	for (size_t i = 0; jobs != NULL && i < json_object_array_length(jobs); i++) {
		struct json_object *j = json_object_array_get_idx(jobs, i);

		if (jstr(j, "id") == NULL || strcmp(jstr(j, "id"), id) != 0)
			continue;
		found = true;
		if (jstr(j, "error") != NULL)
			bench_die("raw VM: %s %s: %s", cmd, id, jstr(j, "error"));
	}
	json_object_put(r);
	if (!found)
		bench_die("raw VM: %s %s: not in query-jobs", cmd, id);
	snprintf(args, sizeof args, "{\"id\":\"%s\"}", id);
	qmp_run(q, "job-dismiss", args);
}

/* Times one raw job into *ns. */
static void
raw_timed(struct qmp_sync *q, const char *cmd, const char *id, const char *tag, const char *node,
          bool vmstate, int64_t *ns)
{
	int64_t t0 = bench_now_ns();

	raw_job(q, cmd, id, tag, node, vmstate);
	*ns = bench_now_ns() - t0;
}

int
main(int argc, char **argv)
{
	char **qargv, *path, *cause = NULL, node[128], tag[32], id[64];
	const char *qvmctl, *sock, *vm;
	int64_t *q_create, *q_revert, *q_delete, *r_create, *r_revert, *r_delete, greet;
	size_t n;
	struct qmp_sync *q;
	pid_t pid;
	int fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 10) {
		fputs(
		    "usage: snapshot_bench QVMCTL CTLSOCK VM CONSOLE ARGVFILE LOG RAW_CONSOLE DISK "
		    "N\n",
		    stderr);
		return 2;
	}
	qvmctl = argv[1];
	sock = argv[2];
	vm = argv[3];
	snprintf(node, sizeof node, "%s.fmt", argv[8]);
	n = (size_t)strtol(argv[9], NULL, 10);
	if (n == 0)
		bench_die("N must be positive");

	qargv = bench_read_argv(argv[5]);
	path = bench_qmp_path(qargv);
	pid = bench_spawn_qemu(qargv, path, argv[6], &fd, &greet);
	close(fd);
	q = qmp_sync_connect(path, 10000, &cause);
	if (q == NULL)
		bench_die("%s", cause);
	qmp_sync_set_timeout(q, JOB_TIMEOUT_MS);
	qmp_run(q, "cont", NULL);
	bench_wait_marker(argv[4], argv[7], READY_MARKER, READY_TIMEOUT_S);
	printf("both guests printed %s\n", READY_MARKER);

	q_create = bench_samples(n);
	q_revert = bench_samples(n);
	q_delete = bench_samples(n);
	r_create = bench_samples(n);
	r_revert = bench_samples(n);
	r_delete = bench_samples(n);
	for (size_t i = 0; i < n; i++) {
		char *create[] = {(char *)qvmctl, "-s", (char *)sock, "snapshot",
		                  (char *)vm,     tag,  NULL};
		char *revert[] = {(char *)qvmctl, "-s", (char *)sock, "revert",
		                  (char *)vm,     tag,  NULL};
		char *delete[] = {(char *)qvmctl, "-s",        (char *)sock, "snapshot-delete",
		                  (char *)vm,     (char *)tag, NULL};

		snprintf(tag, sizeof tag, "b%zu", i);
		bench_ctl_timed(create, &q_create[i]);
		snprintf(id, sizeof id, "save-%zu", i);
		raw_timed(q, "snapshot-save", id, tag, node, true, &r_create[i]);
		bench_ctl_timed(revert, &q_revert[i]);
		snprintf(id, sizeof id, "load-%zu", i);
		raw_timed(q, "snapshot-load", id, tag, node, true, &r_revert[i]);
		bench_ctl_timed(delete, &q_delete[i]);
		snprintf(id, sizeof id, "delete-%zu", i);
		raw_timed(q, "snapshot-delete", id, tag, node, false, &r_delete[i]);
	}
	/* What any qvmctl call costs here (exec, connect, one trivial request): the floor. */
	{
		char *version[] = {(char *)qvmctl, "-s", (char *)sock, "version", NULL};
		int64_t *v = bench_samples(n);

		for (size_t i = 0; i < n; i++)
			bench_ctl_timed(version, &v[i]);
		bench_report("version_ms", "qvmctl version (the floor of any qvmctl call)", v, n);
		free(v);
	}
	bench_report("create_ms", "qvmctl snapshot (process start to exit)", q_create, n);
	bench_report("raw_create_ms", "raw QMP snapshot-save job", r_create, n);
	bench_report("revert_ms", "qvmctl revert (process start to exit)", q_revert, n);
	bench_report("raw_revert_ms", "raw QMP snapshot-load job", r_revert, n);
	bench_report("delete_ms", "qvmctl snapshot-delete (process start to exit)", q_delete, n);
	bench_report("raw_delete_ms", "raw QMP snapshot-delete job", r_delete, n);

	json_object_put(qmp_sync_cmd(q, "quit", NULL));
	qmp_sync_wait_eof(q, 5000);
	qmp_sync_close(q);
	bench_kill(pid);
	free(q_create);
	free(q_revert);
	free(q_delete);
	free(r_create);
	free(r_revert);
	free(r_delete);
	free(path);
	bench_free_argv(qargv);
	return 0;
}
