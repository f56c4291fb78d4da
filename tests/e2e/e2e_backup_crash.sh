#!/bin/sh
# qvmd killed with SIGKILL during a backup (firmware-only VM, its disk written from the host through
# HMP qemu-io, a raw reference copy kept as in e2e_backup). QEMU is slowed down meanwhile (stopped
# and continued in turn), so that the test can act while a copy runs; where the copy stands is
# read from the size of the backup's target file, never from a delay:
#  1. qvmd killed once the copy of a full backup is under way (QEMU stopped there, then slowed
#     while the new qvmd re-attaches and cancels what is left of the backup);
#  2. qvmd killed in the middle of the copy of an incremental, and the copy left to finish in QEMU
#     while no qvmd runs.
# Each time the restarted qvmd re-attaches to the same QEMU, the interrupted backup ends failed
# (its files removed) or complete, no leftover (job, node, descriptor) blocks the next backup, and
# the next backup is an incremental that, restored, equals the reference bit for bit: whatever the
# interrupted backup had taken is in it (or in the interrupted backup, if that one is complete).
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f qcow2 "$T/images/d1.qcow2" 256M
qemu-img create -q -f raw "$T/ref-d1.raw" 256M
fw_vm c q35 "[disk d1]
file = $T/images/d1.qcow2"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "start c" ctl start c

wr() {
	ctl qmp c human-monitor-command \
		"{\"command-line\":\"qemu-io -d /machine/peripheral/d1/virtio-backend \\\"write -P $1 $2 $3\\\"\"}" \
		>/dev/null &&
		qemu-io -f raw -c "write -P $1 $2 $3" "$T/ref-d1.raw" >/dev/null
}
# bk NAME ARGS...: a backup of the paused VM, the reference kept as NAME.raw, its entry in NAME.json.
bk() {
	b=$1
	shift
	ctl pause c >/dev/null
	cp "$T/ref-d1.raw" "$T/$b.raw"
	ctl --json backup c "$@" >"$T/$b.json" 2>"$T/$b.err"
	r=$?
	ctl resume c >/dev/null
	return $r
}
jf() { field "$2" <"$T/$1.json"; }
restored_ok() {
	rm -rf "$T/images/r-$1"
	ctl restore c "$(jf "$1" .id)" --to "$T/images/r-$1" >/dev/null 2>"$T/r-$1.err" &&
		qemu-img compare -q -f qcow2 -F raw "$T/images/r-$1/d1.qcow2" "$T/$1.raw"
}
# status_of ID: the status `backups` gives backup ID.
status_of() {
	ctl --json backups c | "$BIN_DIR/tests/jget" . | grep -o "\"id\":\"$1\"[^}]*\"status\":\"[a-z]*\"" |
		sed 's/.*"status":"\([a-z]*\)"$/\1/'
}
bk_jobs() { ctl qmp c query-jobs | grep -c '"bk-'; }

# slow PID: QEMU gets about a twentieth of the time until unslow.
SLOW=
slow() {
	(while :; do kill -STOP "$1"; sleep 0.19; kill -CONT "$1"; sleep 0.01; done) &
	SLOW=$!
}
unslow() {
	[ -n "$SLOW" ] && kill "$SLOW" 2>/dev/null && wait "$SLOW" 2>/dev/null
	SLOW=
	kill -CONT "$qpid" 2>/dev/null
}
trap 'unslow; cleanup' EXIT
qpid=$(ctl --json status c | field .pid)

check "write A" wr 0xaa 0 32M
check "full backup p1" bk p1
check "... complete" [ "$(jf p1 .status)" = complete ]

# target_size ID: the size of backup ID's target file (0 while there is none).
target_size() { stat -c %s "$T/state/backups/c/$1/d1.qcow2" 2>/dev/null || echo 0; }
# wait_target ID BYTES: until backup ID's target file has at least BYTES.
wait_target() {
	n=0
	while [ $n -lt 1200 ] && [ "$(target_size "$1")" -lt "$2" ]; do sleep 0.05; n=$((n + 1)); done
	[ "$(target_size "$1")" -ge "$2" ]
}
# start_slow ARGS...: a backup ARGS of the paused VM, without waiting, on a slowed QEMU; its id in $id.
start_slow() {
	ctl pause c >/dev/null
	slow "$qpid"
	out=$(ctl --json backup c --no-wait "$@" 2>&1)
	id=$(printf '%s' "$out" | field .id)
}
# restart slowed | [DESCRIPTION COMMAND...]: kills qvmd with SIGKILL and starts it again, QEMU
# slowed meanwhile; else QEMU runs at full speed and COMMAND (a wait) is checked before the start.
restart() {
	kill -9 "$QVMD_PID"
	wait "$QVMD_PID" 2>/dev/null
	QVMD_PID=
	if [ "${1:-}" = slowed ]; then
		shift
		slow "$qpid"
	else
		unslow
	fi
	check "$label: QEMU outlives qvmd" kill -0 "$qpid"
	if [ $# -gt 0 ]; then
		d=$1
		shift
		check "$label: $d" "$@"
	fi
	check "$label: qvmd starts again" start_qvmd
	check "$label: ... re-attached to the same QEMU" \
		sh -c '[ "$("$0" --json status c | "$1" .pid)" = "$2" ]' "$QVMCTL" "$BIN_DIR/tests/jget" "$qpid"
	n=0
	while [ $n -lt 600 ] && [ "$(status_of "$id")" = running ]; do sleep 0.1; n=$((n + 1)); done
	st=$(status_of "$id")
	unslow
	check "$label: the interrupted backup ended ($st)" sh -c '[ "$0" = failed ] || [ "$0" = complete ]' "$st"
	if [ "$st" = failed ]; then
		check "$label: ... and left no image behind" \
			sh -c '! ls "$0"/*.qcow2 >/dev/null 2>&1' "$T/state/backups/c/$id"
	fi
	ctl resume c >/dev/null
}

label="mid-copy"
check "write B (taken by the interrupted backup only)" wr 0xbb 1M 2M
# (qvmd passes no QMP command to a VM while its backup job runs, so the copy cannot be held with
# job-pause: QEMU is stopped instead, and stays slowed while the new qvmd re-attaches.)
start_slow --full
check "$label: a full backup started ($id)" [ -n "$id" ]
check "$label: its copy is under way (target file over 1 MiB)" wait_target "$id" 1048576
kill -STOP "$qpid" # at once; again once the slowing loop (which may continue it) is gone
[ -n "$SLOW" ] && kill "$SLOW" 2>/dev/null && wait "$SLOW" 2>/dev/null
SLOW=
kill -STOP "$qpid"
# Where the copy stands is information, not a check: QEMU may copy the rest in one of its slices.
echo "# $label: QEMU stopped with $(target_size "$id") bytes of the target file written (about 32 MiB in all)"
restart slowed
st1=$st
check "write C" wr 0xcc 4M 1M
check "backup after it (nothing left over blocks it)" bk p2
# chain_ok NAME: an incremental on a complete backup (the interrupted one's jobs were cancelled,
# which merged their bitmaps back), or a full one saying why (its jobs had succeeded, clearing
# the bitmaps, before qvmd could record the backup complete).
chain_ok() {
	case $(jf "$1" .type) in
	incremental) [ "$(status_of "$(jf "$1" .parent)")" = complete ] ;;
	full) contains "$(jf "$1" .reason)" "interrupted by a restart of qvmd" ;;
	*) false ;;
	esac
}
check "... incremental on the last complete backup, or full saying why ($(jf p2 .type): $(jf p2 .reason))" chain_ok p2
check "... no QEMU job of the interrupted backup is left" [ "$(bk_jobs)" -eq 0 ]
check "... no target node is left" sh -c '! "$0" qmp c query-named-block-nodes | grep -q "\"node-name\": *\"bk-"' "$QVMCTL"

label="finished without qvmd"
check "write D (taken by the interrupted backup only)" wr 0xdd 8M 16M
start_slow
check "$label: an incremental backup started ($id)" [ -n "$id" ]
check "$label: its copy is under way (target file over 1 MiB)" wait_target "$id" 1048576
restart "the copy finishes in QEMU while no qvmd runs" wait_target "$id" 16777216
check "write E" wr 0xee 6M 1M
check "backup after it" bk p3
check "... complete" [ "$(jf p3 .status)" = complete ]
check "... incremental on a complete backup, or full saying why ($(jf p3 .type): $(jf p3 .reason))" chain_ok p3
BUG=""

check "restore p1: bit for bit the reference of its instant" restored_ok p1
check "restore p2: bit for bit the reference of its instant (interrupted: $st1)$BUG" restored_ok p2
check "restore p3: bit for bit the reference of its instant (interrupted: $st)$BUG" restored_ok p3
ctl kill c >/dev/null
finish
