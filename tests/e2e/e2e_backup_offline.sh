#!/bin/sh
# Backups of a stopped VM: qvmd runs the backup's QMP jobs in a helper QEMU ("-machine none")
# holding the VM's disks, as the VM's uid. The disks of the stopped VM are written with qemu-io
# (which loads the persistent bitmaps and records its writes in them); a raw reference copy of
# each disk gets the same writes, and every backup point is restored and compared with the copy
# of its instant.
#  - a full backup of the running VM, then incremental backups of the stopped one (the writes
#    made while it was stopped are in them; the raw disk gets a full copy, saying so);
#  - a full backup of a stopped VM with no chain;
#  - the helper runs under the VM's uid, never root; `start` while it runs is busy;
#  - job-cancel of an offline backup: failed, the next incremental has every change;
#  - qvmd killed -9 during an offline backup: the restarted qvmd kills the helper, the backup is
#    failed, and the next backup is right (full: the killed helper left its bitmap inconsistent).
. "$(dirname "$0")/lib.sh"

. "$(dirname "$0")/backup_lib.sh"
backup_vm_b
qemu-img create -q -f qcow2 "$T/images/c1.qcow2" 16M
fw_vm c q35 "[disk c1]
file = $T/images/c1.qcow2"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }

HELPER_PIDFILE="$T/run/b/qemu/helper.pid"
fmt_of() { case $1 in *.raw) echo raw ;; *) echo qcow2 ;; esac; }
img() { if [ "$1" = d1 ]; then echo "$T/images/d1.qcow2"; else echo "$T/images/d2.raw"; fi; }
# owr DISK PATTERN OFFSET LEN: straight into the stopped VM's image, and into the reference.
owr() {
	i=$(img "$1")
	qemu-io -f "$(fmt_of "$i")" -c "write -P $2 $3 $4" "$i" >/dev/null &&
		qemu-io -f raw -c "write -P $2 $3 $4" "$T/ref-$1.raw" >/dev/null
}
# bk NAME ARGS...: a backup of b, its --json entry in $T/NAME.json (with --json qvmctl prints the
# result object only, never progress lines: jf fails to parse otherwise).
bk() {
	n=$1
	shift
	point "$n"
	ctl --json backup b "$@" >"$T/$n.json" 2>"$T/$n.err"
}
restored_ok() {
	id=$(jf "$1" .id)
	rm -rf "$T/images/r-$1"
	ctl restore b "$id" --to "$T/images/r-$1" >/dev/null 2>"$T/r-$1.err" &&
		qemu-img compare -q -f qcow2 -F raw "$T/images/r-$1/d1.qcow2" "$T/$1-d1.raw" &&
		qemu-img compare -q -f qcow2 -F raw "$T/images/r-$1/d2.qcow2" "$T/$1-d2.raw"
}
manifest_status() { field .status <"$T/state/backups/b/$1/manifest.json"; }
running_backup_job() { ctl --json jobs b | field .jobs | grep -o '"id": *"backup-[0-9]*"[^}]*"state": *"running"' | grep -o 'backup-[0-9]*' | head -n 1; }
# job_state JOB: the state of a background job of b.
job_state() { ctl --json jobs b | field .jobs | grep -o "\"id\": *\"$1\"[^}]*" | grep -o '"state": *"[a-z]*"' | cut -d'"' -f4; }
# helper_frozen ARGS...: starts an offline backup of b in the background (qvmctl's pid in BGCTL,
# its job in JOB) and freezes its helper (SIGSTOP, its pid in HP) as soon as its pidfile names it,
# before it has even opened the disks.
helper_frozen() {
	rm -f "$HELPER_PIDFILE"
	HP=
	"$QVMCTL" backup b "$@" >"$T/bg.out" 2>&1 &
	BGCTL=$!
	n=0
	while [ $n -lt 2000 ] && [ -z "$HP" ] && kill -0 "$BGCTL" 2>/dev/null; do
		p=$(cat "$HELPER_PIDFILE" 2>/dev/null)
		[ -n "$p" ] && kill -STOP "$p" 2>/dev/null && HP=$p
		[ -n "$HP" ] || sleep 0.005
		n=$((n + 1))
	done
	JOB=$(running_backup_job)
	[ -n "$HP" ]
}
# qvmd_frozen ARGS...: starts an offline backup of b in the background and freezes qvmd (SIGSTOP)
# as soon as the backup's manifest exists (the helper holds the disks; the manifest says running
# until qvmd has copied and hashed everything). Sets BGCTL, BDIR, HP and JOB (from jobs.json).
qvmd_frozen() {
	rm -f "$HELPER_PIDFILE"
	BDIR= HP= JOB=
	"$QVMCTL" backup b "$@" >"$T/bg.out" 2>&1 &
	BGCTL=$!
	n=0
	while [ $n -lt 2000 ] && [ -z "$BDIR" ] && kill -0 "$BGCTL" 2>/dev/null; do
		m=$(grep -l '"status": *"running"' "$T"/state/backups/b/*/manifest.json 2>/dev/null)
		if [ -n "$m" ]; then
			kill -STOP "$QVMD_PID"
			BDIR=$(dirname "$m")
		else
			sleep 0.005
		fi
		n=$((n + 1))
	done
	HP=$(cat "$HELPER_PIDFILE" 2>/dev/null)
	JOB=$(grep -o '"id": *"backup-[0-9]*"[^}]*"state": *"running"' "$T/run/b/jobs.json" | grep -o 'backup-[0-9]*')
	[ -n "$BDIR" ] && [ "$(field .status <"$BDIR/manifest.json")" = running ]
}
job_target() { ctl --json jobs b | field .jobs | grep -o "\"id\": *\"$1\"[^}]*" | grep -o '"target": *"[^"]*"' | cut -d'"' -f4; }
# backup_failed DIR: a failed backup without images; failed_or_absent DIR: that, or a backup
# directory never made.
backup_failed() {
	[ "$(field .status <"$1/manifest.json")" = failed ] && ! ls "$1"/*.qcow2 2>/dev/null | grep -q .
}
failed_or_absent() { [ ! -d "$1" ] || backup_failed "$1"; }
# reaped PID: there was a helper, and it is gone.
reaped() { [ -n "$1" ] && gone "$1"; }
# no_helper: no helper QEMU of b runs.
no_helper() { ! pgrep -f "$T/run/b/qemu/[h]elper.pid" >/dev/null; }

# The chain starts while the VM runs.
check "start b" ctl start b
check "write A" wr d1 0xaa 0 4M
check "write A on the raw disk" wr d2 0x11 0 1M
ctl pause b >/dev/null
check "full backup of the running vm" bk p1
check "... full" [ "$(jf p1 .type)" = full ]
check "b stops cleanly" ctl kill b
check "b is stopped" wait_state b stopped 30

# Writes to the stopped VM's disks, then an offline backup.
check "write B into the stopped image (qemu-io)" owr d1 0xbb 1M 512k
check "write B into the stopped raw image" owr d2 0x22 64k 64k
check "backup of the stopped vm" bk p2
check "... is incremental ($(cat "$T/p2.err"))" [ "$(jf p2 .type)" = incremental ]
check "... on the full one" [ "$(jf p2 .parent)" = "$(jf p1 .id)" ]
check "... the raw disk's full copy is said ($(jf p2 .reason))" contains "$(jf p2 .reason)" "d2 is raw"
check "... complete" [ "$(jf p2 .status)" = complete ]
sz1=$(stat -c %s "$T/state/backups/b/$(jf p1 .id)/d1.qcow2")
sz2=$(stat -c %s "$T/state/backups/b/$(jf p2 .id)/d1.qcow2")
check "the offline incremental holds only the change ($sz2 < $sz1 bytes)" [ "$sz2" -lt $((sz1 / 2)) ]
check "b is still stopped" [ "$(ctl --json status b | field .state)" = stopped ]
check "no helper is left" no_helper
check "the helper ended cleanly: the bitmap is not left in use" \
	sh -c '! qemu-img info --output=json "$0" | grep -q in-use' "$T/images/d1.qcow2"
check "write C while stopped" owr d1 0xcc 8M 1M
check "--incremental of the stopped vm" bk p3 --incremental
check "... is incremental on p2" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p3 .type)" "$(jf p3 .parent)" "$(jf p2 .id)"

# A stopped VM with no chain: full, saying why.
out=$(ctl --json backup c 2>&1)
check "full backup of a stopped vm with no chain ($(printf '%s' "$out" | field .reason))" \
	sh -c '[ "$0" = full ] && [ "$1" = complete ]' "$(printf '%s' "$out" | field .type)" "$(printf '%s' "$out" | field .status)"

# The helper's uid, and start while it runs; a cancel before it holds the disks.
helper_frozen
hp=$HP job=$JOB
BDIR="$T/state/backups/b/$(job_target "$job")"
check "an offline backup's helper runs (pid $hp, job $job)" sh -c '[ -n "$0" ] && [ -n "$1" ]' "$hp" "$job"
vmuid=$(cut -d' ' -f1 "$T/state/b/qemu-uid" 2>/dev/null)
huid=$(ps -o uid= -p "$hp" | tr -d ' ')
check "the helper runs as the vm's uid ($huid = $vmuid), not root" sh -c '[ -n "$0" ] && [ "$0" = "$1" ] && [ "$0" != 0 ]' "$huid" "$vmuid"
check "the helper was spawned without a shell" sh -c 'tr "\0" " " </proc/$0/cmdline | grep -q "^/[^ ]*qemu-system-x86_64 .*-machine none"' "$hp"
check "its qmp socket is qvmd's, in the vm's run directory" \
	sh -c '[ -S "$0" ] && [ "$(stat -c %u "$0")" = 0 ]' "$T/run/b/helper.sock"
out=$(ctl start b 2>&1); rc=$?
check "start during the offline backup is busy ($out)" sh -c '[ "$0" -ne 0 ] && printf "%s" "$1" | grep -q "busy: backup $2 in progress"' "$rc" "$out" "$job"
out=$(ctl backup b 2>&1); rc=$?
check "a second backup at once is busy ($out)" sh -c '[ "$0" -ne 0 ] && printf "%s" "$1" | grep -q "busy: backup $2 in progress"' "$rc" "$out" "$job"
check "... and left the first one's helper alone" sh -c 'kill -0 "$0"' "$hp"
out=$(ctl kill b 2>&1)
check "kill of the stopped vm does not touch the backup ($out)" [ "$(job_state "$job")" = running ]
out=$(ctl job-cancel b "$job" 2>&1)
check "job-cancel of the offline backup ($out)" [ $? -eq 0 ]
kill -CONT "$hp"
wait "$BGCTL"
check "the backup waiting for it failed ($(cat "$T/bg.out"))" grep -q "cancel" "$T/bg.out"
check "... its job is cancelled" [ "$(job_state "$job")" = cancelled ]
n=0
while [ $n -lt 100 ] && ! gone "$hp"; do sleep 0.1; n=$((n + 1)); done
check "... its helper is gone" reaped "$hp"
check "... the cancelled backup left no image" failed_or_absent "$BDIR"
check "start b works again" ctl start b
check "... and b stops" ctl kill b
wait_state b stopped 30

# A cancel while the helper holds the disks. A big write makes the copy take a while.
check "write D (40M) while stopped" owr d1 0xdd 16M 40M
check "an offline backup is under way" qvmd_frozen
hp=$HP job=$JOB
kill -STOP "$hp"
kill -CONT "$QVMD_PID"
out=$(ctl job-cancel b "$job" 2>&1)
kill -CONT "$hp"
wait "$BGCTL"
n=0
while [ $n -lt 100 ] && ! gone "$hp"; do sleep 0.1; n=$((n + 1)); done
check "... its helper is gone after the cancel ($out)" reaped "$hp"
if [ "$(job_state "$job")" = cancelled ]; then
	check "the cancelled backup is failed and left no image" backup_failed "$BDIR"
else
	check "the backup ended before the cancel ($(job_state "$job"))" [ "$(job_state "$job")" = done ]
fi
check "write E while stopped" owr d1 0xee 3M 1M
check "backup after the cancel" bk p4
check "... is incremental (every change since: D and E)" [ "$(jf p4 .type)" = incremental ]

# qvmd killed during an offline backup.
check "write F while stopped" owr d1 0x0f 5M 40M
check "an offline backup is under way" qvmd_frozen --full
hp=$HP job=$JOB
kill -9 "$QVMD_PID"
wait "$QVMD_PID" 2>/dev/null
wait "$BGCTL" 2>/dev/null
check "the helper outlives the killed qvmd" sh -c 'kill -0 "$0"' "$hp"
check "qvmd starts again" start_qvmd
n=0
while [ $n -lt 100 ] && ! gone "$hp"; do sleep 0.1; n=$((n + 1)); done
check "the restarted qvmd killed the leftover helper" reaped "$hp"
check "... the interrupted backup's job is failed" [ "$(job_state "$job")" = failed ]
check "... the interrupted backup is failed, no image left" backup_failed "$BDIR"
check "write G while stopped" owr d1 0x77 6M 64k
check "backup after the restart" bk p5
check "... is full: the killed helper left the bitmap inconsistent ($(jf p5 .reason))" \
	sh -c '[ "$0" = full ] && printf "%s" "$1" | grep -q inconsistent' "$(jf p5 .type)" "$(jf p5 .reason)"
check "write H while stopped" owr d1 0x48 10M 1M
check "the next backup is incremental again" bk p6
check "... on p5" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p6 .type)" "$(jf p6 .parent)" "$(jf p5 .id)"

# Back to running: the offline chain goes on.
check "start b after the offline backups" ctl start b
check "write I" wr d1 0x99 12M 1M
ctl pause b >/dev/null
check "backup of the running vm again" bk p7
check "... incremental on p6" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p7 .type)" "$(jf p7 .parent)" "$(jf p6 .id)"
ctl kill b >/dev/null

for p in p1 p2 p3 p4 p5 p6 p7; do
	check "restore $p and compare with the disks of its instant" restored_ok $p
done
finish
