#!/bin/sh
# Long snapshots: a Linux guest of 640 MiB whose RAM is mostly filled (qvmd.fill=448: 448 MiB of
# non-zero data in a tmpfs), so that snapshot-save has seconds of work, with two qcow2 disks.
#  - while the snapshot runs (`jobs` says so afterwards), `status` and `list` of that VM and of
#    another are answered; a second snapshot and the detach of a disk get `busy`;
#  - on a terminal (tmux), `qvmctl snapshot` shows its one-line progress; Ctrl-C leaves the job
#    running, says how to cancel it and exits non-zero; the job completes;
#  - qvmd killed (-9) in the middle: the restarted qvmd reports the job's outcome, and `snapshots`
#    agrees with `qemu-img snapshot -U -l` of every disk;
#  - QEMU killed (-9) in the middle: the tag ends up on every disk or on none;
#  - `qvmctl kill` in the middle: it cancels the snapshot first and says so; all or none again;
#  - QEMU dying between the disks' snapshot table entries (the first disk has the tag, the second
#    not: strace kills QEMU at its first write to the second image): once the VM is down, qvmd
#    removes the half-made snapshot from the disk that got it, and the job's error says so.
. "$(dirname "$0")/lib.sh"

TMUX_SOCK="$T/tmux.sock"
STRACE_PID=
long_cleanup() {
	[ -S "$TMUX_SOCK" ] && tmux -S "$TMUX_SOCK" kill-server 2>/dev/null
	[ -n "$STRACE_PID" ] && kill "$STRACE_PID" 2>/dev/null
	cleanup
}
trap long_cleanup EXIT

# tags FILE: the snapshot names qemu-img sees on an image (-U: QEMU may hold it).
tags() { qemu-img snapshot -U -l "$1" 2>/dev/null | awk 'NR > 2 { print $2 }' | sort | tr '\n' ' '; }
# job_field VM TAG KEY: KEY of the newest job record on TAG (e.g. state, id, qemu_status).
job_field() {
	jctl jobs "$1" | grep -o "{[^{}]*\"target\":\"$2\"[^{}]*}" | tail -n 1 |
		sed -n "s/.*\"$3\":\"\\([^\"]*\\)\".*/\\1/p"
}
# wait_job VM TAG STATE SECONDS: until the newest record on TAG is in STATE.
wait_job() {
	n=0
	while [ $n -lt $(($4 * 10)) ]; do
		[ "$(job_field "$1" "$2" state)" = "$3" ] && return 0
		sleep 0.1
		n=$((n + 1))
	done
	return 1
}
# wait_job_ended VM TAG SECONDS: until the newest record on TAG is no longer running.
wait_job_ended() {
	n=0
	while [ $n -lt $(($3 * 10)) ]; do
		s=$(job_field "$1" "$2" state)
		[ -n "$s" ] && [ "$s" != running ] && return 0
		sleep 0.1
		n=$((n + 1))
	done
	return 1
}
# listed VM DISK: the tags `snapshots VM` says DISK holds, sorted like tags.
listed() {
	jctl snapshots "$1" | grep -o '"tag":"[^"]*"[^}]*' | while read -r row; do
		t=$(echo "$row" | sed 's/^"tag":"\([^"]*\)".*/\1/')
		echo "$row" | sed 's/.*"disks":\[\([^]]*\)\].*/\1/' | grep -q "\"$2\"" && echo "$t"
	done | sort | tr '\n' ' '
}
# agree VM: `snapshots VM` and qemu-img agree on every disk.
agree() { [ "$(listed "$1" a)" = "$(tags "$T/images/a.qcow2")" ] && [ "$(listed "$1" b)" = "$(tags "$T/images/b.qcow2")" ]; }
# all_or_none TAG: TAG is on both disks or on neither.
all_or_none() {
	x=$(tags "$T/images/a.qcow2" | grep -cw "$1")
	y=$(tags "$T/images/b.qcow2" | grep -cw "$1")
	[ "$x" = "$y" ]
}
on_both() { contains "$(tags "$T/images/a.qcow2")" "$1" && contains "$(tags "$T/images/b.qcow2")" "$1"; }
on_neither() { lacks "$(tags "$T/images/a.qcow2")$(tags "$T/images/b.qcow2")" "$1"; }
# done_on_both_or_failed_on_neither STATE TAG: the job's outcome and the disks agree.
done_on_both_or_failed_on_neither() {
	{ [ "$1" = "done" ] && on_both "$2"; } || { [ "$1" = failed ] && on_neither "$2"; }
}

qemu-img create -q -f qcow2 "$T/images/a.qcow2" 64M
# b is fully allocated (its growth is the snapshot table entry alone: see the SIGXFSZ case) and
# larger than a ever gets (a receives the VM state of each snapshot).
qemu-img create -q -f qcow2 -o preallocation=falloc "$T/images/b.qcow2" 4G
cat >"$T/vms/big.ini" <<INI
[vm]
name = big
memory = 640M
machine = q35
accel = tcg
kernel = $GUEST_DIR/vmlinuz
initrd = $GUEST_DIR/initrd.img
append = console=ttyS0 quiet panic=-1 qvmd.fill=448
shutdown_timeout = 30s
[disk a]
file = $T/images/a.qcow2
[disk b]
file = $T/images/b.qcow2
INI
fw_vm other
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "start big" ctl start big
check "start other" ctl start other
check "the guest filled 448 MiB of its RAM" wait_console big "GUEST-FILLED 448" 1 300

# ---- queries beside a running snapshot; conflicting operations are busy ----
out=$(ctl snapshot big s1 --no-wait 2>&1); rc=$?
job=$(echo "$out" | sed -n 's/.*(job \(snapshot-[0-9]*\)).*/\1/p')
check "snapshot --no-wait starts job $job ($out)" sh -c '[ $0 -eq 0 ] && [ -n "$1" ]' $rc "$job"
st=$(ctl --json status big 2>&1); rc1=$?
ls=$(ctl list 2>&1); rc2=$?
so=$(ctl --json status other 2>&1); rc3=$?
running=$(job_field big s1 state)
check "status of big answered while $job runs ($(echo "$st" | field .state))" \
	sh -c '[ $0 -eq 0 ] && [ "$1" = running ]' $rc1 "$running"
check "list answered while $job runs" sh -c '[ $0 -eq 0 ] && echo "$1" | grep -q "^big " && echo "$1" | grep -q "^other "' $rc2 "$ls"
check "status of other answered while $job runs" sh -c '[ $0 -eq 0 ] && [ "$1" = running ]' $rc3 "$(echo "$so" | field .state)"
out=$(ctl snapshot big s2 2>&1); rc=$?
check "a second snapshot is busy, naming the job ($out)" failed_with $rc "$out" "busy: snapshot snapshot-"
out=$(ctl detach big b 2>&1); rc=$?
check "detach of a disk is busy ($out)" failed_with $rc "$out" "busy: snapshot snapshot-"
check "... and all of that while $job still ran" [ "$(job_field big s1 state)" = running ]
check "$job completes" wait_job big s1 "done" 600
check "s1 is on both disks" on_both s1
check "no s2 anywhere" on_neither s2
check "b is still attached" contains "$(jctl devices big)" '"id":"b"'

# ---- a terminal: one-line progress, Ctrl-C leaves the job running ----
if command -v tmux >/dev/null 2>&1; then
	tmux -S "$TMUX_SOCK" new-session -d -x 160 -y 20 -s snap \
		"QVMD_SOCKET='$SOCK' '$QVMCTL' snapshot big t1; echo \"EXIT=\$?\" >'$T/tty.rc'; sleep 600"
	pane() { tmux -S "$TMUX_SOCK" capture-pane -p -t snap 2>/dev/null; }
	n=0
	while [ $n -lt 300 ] && ! pane | grep -q "^snapshot-[0-9]*: running"; do sleep 0.1; n=$((n + 1)); done
	p=$(pane)
	check "on a terminal the job's progress is one line: JOB: running ... ($p)" \
		sh -c 'echo "$0" | grep -q "^snapshot-[0-9]*: running" && [ "$(echo "$0" | grep -c "snapshot-")" -eq 1 ]' "$p"
	check "the snapshot is running when Ctrl-C comes" [ "$(job_field big t1 state)" = running ]
	tmux -S "$TMUX_SOCK" send-keys -t snap C-c
	n=0
	while [ $n -lt 100 ] && [ ! -s "$T/tty.rc" ]; do sleep 0.1; n=$((n + 1)); done
	p=$(pane)
	check "Ctrl-C: qvmctl exits non-zero ($(cat "$T/tty.rc" 2>/dev/null))" \
		sh -c 'grep -q "^EXIT=[1-9]" "$0"' "$T/tty.rc"
	check "... saying the job goes on and how to cancel it ($p)" \
		sh -c 'echo "$0" | grep -q "goes on in qvmd" && echo "$0" | grep -q "qvmctl job-cancel big snapshot-"' "$p"
	check "... while the job still runs" [ "$(job_field big t1 state)" = running ]
	check "the job completes anyway" wait_job big t1 "done" 600
	check "t1 is on both disks" on_both t1
	tmux -S "$TMUX_SOCK" kill-server 2>/dev/null
else
	not_ok "tmux is installed (contrib/deps.sh installs it)"
fi
# Off a terminal: plain lines, nothing rewritten in place.
ctl snapshot-delete big t1 >"$T/plain.out" 2>&1
check "off a terminal the output has no carriage return or escape ($(cat "$T/plain.out"))" \
	sh -c '! tr "\r\033" "##" <"$0" | grep -q "#"' "$T/plain.out"
check "snapshot-delete s1" ctl snapshot-delete big s1

# ---- qvmd killed in the middle of snapshot-save ----
out=$(ctl snapshot big k1 --no-wait 2>&1)
n=0
while [ $n -lt 300 ] && [ "$(job_field big k1 qemu_status)" != running ]; do sleep 0.1; n=$((n + 1)); done
check "qemu runs the snapshot-save job of k1 ($out)" [ "$(job_field big k1 qemu_status)" = running ]
kill -9 "$QVMD_PID"
wait "$QVMD_PID" 2>/dev/null
QVMD_PID=
check "qvmd starts again" start_qvmd
check "the restarted qvmd reports how k1 ended" wait_job_ended big k1 600
outcome=$(job_field big k1 state)
check "k1 is done and on both disks, or failed and on neither ($outcome: $(tags "$T/images/a.qcow2")/ $(tags "$T/images/b.qcow2"))" \
	done_on_both_or_failed_on_neither "$outcome" k1
check "snapshots agrees with qemu-img on every disk ($(jctl snapshots big))" agree big
check "qemu holds no job any more" contains "$(jctl qmp big query-jobs)" '[]'

# ---- QEMU killed in the middle of snapshot-save ----
out=$(ctl snapshot big q1 --no-wait 2>&1)
n=0
while [ $n -lt 300 ] && [ "$(job_field big q1 qemu_status)" != running ]; do sleep 0.1; n=$((n + 1)); done
check "qemu runs the snapshot-save job of q1 ($out)" [ "$(job_field big q1 qemu_status)" = running ]
pid=$(ctl --json status big | field .pid)
kill -9 "$pid"
check "the job on q1 ends" wait_job_ended big q1 120
outcome=$(job_field big q1 state)
check "q1 is on every disk or on none ($outcome: $(tags "$T/images/a.qcow2")/ $(tags "$T/images/b.qcow2"))" all_or_none q1
check "... done and on both, or failed and on neither" \
	done_on_both_or_failed_on_neither "$outcome" q1
check "big is down" sh -c 's=$("$0" --json status big | "$1" .state); [ "$s" = crashed ] || [ "$s" = stopped ]' "$QVMCTL" "$BIN_DIR/tests/jget"
check "snapshots (offline) agrees with qemu-img on every disk ($(jctl snapshots big))" agree big

# ---- qvmctl kill in the middle of snapshot-save: the kill cancels it first and says so ----
check "start big again" ctl start big
check "the guest filled its RAM again" wait_console big "GUEST-FILLED 448" 2 300
out=$(ctl snapshot big c1 --no-wait 2>&1)
n=0
while [ $n -lt 300 ] && [ "$(job_field big c1 qemu_status)" != running ]; do sleep 0.1; n=$((n + 1)); done
check "qemu runs the snapshot-save job of c1 ($out)" [ "$(job_field big c1 qemu_status)" = running ]
out=$(ctl kill big 2>&1); rc=$?
check "kill stops big and says it cancelled the snapshot first ($out)" \
	sh -c '[ $0 -eq 0 ] && echo "$1" | grep -q "cancelled snapshot snapshot-[0-9]* first"' $rc "$out"
check "the job on c1 ends" wait_job_ended big c1 120
check "c1 is on every disk or on none ($(job_field big c1 state): $(tags "$T/images/a.qcow2")/ $(tags "$T/images/b.qcow2"))" all_or_none c1

# ---- QEMU dies after the first disk got the tag, before the second ----
# strace, attached to a VM's QEMU, kills it (SIGKILL injected) at its first write to the second
# disk: the snapshot table entry snapshot-save writes there after the first disk's (the guest
# writes nothing, and the VM state goes to the first disk). So the first disk has the tag, the
# second not, and QEMU is gone: qvmd must remove the tag from the first disk once the VM is down.
# (With strace as its tracer, qvmd may see the QEMU end as "died" rather than "killed by signal 9".)
qemu-img create -q -f qcow2 "$T/images/ha.qcow2" 16M
qemu-img create -q -f qcow2 "$T/images/hb.qcow2" 16M
fw_vm half q35 "[disk ha]
file = $T/images/ha.qcow2
[disk hb]
file = $T/images/hb.qcow2"
ctl reload >/dev/null
check "start half" ctl start half
pid=$(ctl --json status half | field .pid)
strace -f -p "$pid" -P "$T/images/hb.qcow2" -e trace=pwrite64,pwritev,pwritev2,write \
	-e inject=pwrite64,pwritev,pwritev2,write:signal=KILL -o "$T/strace.out" 2>"$T/strace.err" &
STRACE_PID=$!
n=0
while [ $n -lt 100 ] && ! grep -q attached "$T/strace.err"; do sleep 0.1; n=$((n + 1)); done
check "strace watches half's writes to hb" grep -q attached "$T/strace.err"
out=$(ctl snapshot half h1 2>&1); rc=$?
check "the snapshot fails: qemu was killed in the middle ($out)" \
	sh -c '[ $0 -eq 1 ] && echo "$1" | grep -Eq "qemu (killed by signal 9|died)"' $rc "$out"
wait "$STRACE_PID" 2>/dev/null
STRACE_PID=
err=$(jctl jobs half | grep -o '{[^{}]*"target":"h1"[^{}]*}' | tail -n 1)
check "the job failed, its error says the half-made snapshot was removed from disk ha ($err)" \
	sh -c 'echo "$0" | grep -q "\"state\":\"failed\"" && echo "$0" | grep -q "removed from disk ha\""' "$err"
check "h1 is on neither disk ($(tags "$T/images/ha.qcow2")/ $(tags "$T/images/hb.qcow2"))" \
	[ "$(tags "$T/images/ha.qcow2")$(tags "$T/images/hb.qcow2")" = "" ]
check "snapshots lists no h1 ($(jctl snapshots half))" lacks "$(jctl snapshots half)" '"tag":"h1"'
check "half starts again" ctl start half
check "snapshot h1 now works" ctl snapshot half h1
ctl kill half >/dev/null
ctl kill other >/dev/null
finish
