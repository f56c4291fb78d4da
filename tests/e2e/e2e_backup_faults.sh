#!/bin/sh
# Backup faults a real QEMU does not produce on demand, played by fakeqemu (its backup jobs copy
# nothing and its dirty bitmaps live as long as its process; tests/fakeqemu/fakeqemu.c):
#  1. job-cancel while QEMU is inside job-finalize: the copy is over and the bitmaps are being
#     cleared, so the cancel is refused (exit 1, saying why), the backup completes, and the next
#     backup is incremental on it;
#     A kill at that moment does not cancel it either: QEMU ends after the targets are detached
#     and the backup completes;
#  2. QEMU dying on job-finalize: its jobs may have cleared the bitmaps, so the backup fails and
#     the next one is full, saying why (then incremental again); the daemon and a bystander VM
#     go on;
#  3. QEMU ending once every target is whole and detached (a guest shutting down, a kill): what
#     is left needs no QEMU, so the backup completes (its job copies 64 MiB into the target, so
#     that the hashing spans several loop turns and QEMU's end is seen in between), and the VM
#     is crashed as it would be without a backup;
#  4. the same with a stopped VM's backup helper: it ends, the backup completes;
#  5. qvmd killed while QEMU is inside job-finalize: the restarted qvmd finds the jobs gone
#     (succeeded, their bitmaps cleared), fails the backup, and makes the next one full, saying
#     why (then incremental again);
#  6. the same with a full backup (--full: planned from QEMU's answer, not guessed).
. "$(dirname "$0")/lib.sh"

echo "qemu = $BIN_DIR/tests/fakeqemu" >>"$T/qvmd.conf"

# with_faults [VAR=VALUE...]: restarts qvmd with exactly these FAKEQEMU_* switches (QEMUs already
# running keep theirs).
with_faults() {
	stop_qvmd
	unset FAKEQEMU_CRASH FAKEQEMU_CRASH_AFTER FAKEQEMU_SLOW FAKEQEMU_SLOW_MS FAKEQEMU_JOB_BYTES
	for kv in "$@"; do export "${kv?}"; done
	start_qvmd || { not_ok "qvmd starts with $*"; finish; exit 1; }
}
jf() { field "$2" <"$T/$1.json"; }
# bk NAME ARGS...: a backup of f, its --json entry in $T/NAME.json.
bk() {
	n=$1
	shift
	ctl --json backup f "$@" >"$T/$n.json" 2>"$T/$n.err"
}
manifest() { cat "$T/state/backups/f/$1/manifest.json" 2>/dev/null; }
# wait_manifest ID STATUS: until backup ID's manifest says STATUS (10 s).
wait_manifest() {
	n=0
	while [ $n -lt 100 ] && ! manifest "$1" | grep -q "\"status\": *\"$2\""; do
		sleep 0.1
		n=$((n + 1))
	done
	manifest "$1" | grep -q "\"status\": *\"$2\""
}
# slow_count: how many job-finalize commands the fake has begun (they take FAKEQEMU_SLOW_MS).
slow_count() { grep -c "fakeqemu: job-finalize: slow" "$T/state/f/qemu.log" 2>/dev/null; }
st() { ctl --json status "$1" | field "$2"; }
# bystander MSG: checks that the bystander still runs the QEMU it had at the start ($bypid).
bystander() {
	check "$1" sh -c '[ "$("$0" --json status by | "$1" .pid)" = "$2" ] && kill -0 "$2"' \
		"$QVMCTL" "$BIN_DIR/tests/jget" "$bypid"
}
# killed_in_finalize WHAT ARGS...: starts "backup f ARGS --no-wait" (its id in $killed), waits
# until the fake is inside its job-finalize, then kills qvmd (SIGKILL) and starts it again
# without faults. The new qvmd's questions wait for the finalize (QEMU runs a monitor's commands
# in order): the jobs it asks about have succeeded and are gone.
killed_in_finalize() {
	what=$1
	shift
	n0=$(slow_count)
	killed=$(ctl --json backup f "$@" --no-wait 2>&1 | field .id)
	n=0
	while [ $n -lt 100 ] && [ "$(slow_count)" != $((n0 + 1)) ]; do sleep 0.05; n=$((n + 1)); done
	check "$what is inside its job-finalize ($killed)" [ "$(slow_count)" = $((n0 + 1)) ]
	kill -9 "$QVMD_PID"
	wait "$QVMD_PID" 2>/dev/null
	QVMD_PID=
	with_faults
}

qemu-img create -q -f qcow2 "$T/images/f-d1.qcow2" 16M
fw_vm f q35 "restart = no
[disk d1]
file = $T/images/f-d1.qcow2"
fw_vm by q35 "restart = no"

echo "# 1. job-cancel while QEMU is inside job-finalize"
# 0.8 s: long enough for a cancel to arrive meanwhile, shorter than the 1 s a kill waits after quit
with_faults FAKEQEMU_SLOW=job-finalize FAKEQEMU_SLOW_MS=800
check "start the bystander" ctl start by
bypid=$(st by .pid)
check "start f" ctl start f
check "first backup" bk p1
check "... is full and complete" [ "$(jf p1 .type) $(jf p1 .status)" = "full complete" ]
check "... its job-finalize was slow" [ "$(slow_count)" = 1 ]
out=$(ctl --json backup f --no-wait 2>&1)
job=$(printf '%s' "$out" | field .job)
id=$(printf '%s' "$out" | field .id)
check "a second backup runs ($job, $id)" [ -n "$job" ] && [ -n "$id" ]
n=0
while [ $n -lt 100 ] && [ "$(slow_count)" != 2 ]; do sleep 0.05; n=$((n + 1)); done
check "... and QEMU is inside its job-finalize" [ "$(slow_count)" = 2 ]
cout=$(ctl job-cancel f "$job" 2>&1)
rc=$?
check "job-cancel is refused with exit 1, saying the copy is over ($cout)" \
	failed_with $rc "$cout" "job $job is not cancelled: backup $id has copied everything"
check "the backup completed" wait_manifest "$id" complete
check "... its job is done" sh -c '"$0" --json jobs f | "$1" . | grep -q "\"id\":\"$2\",[^}]*\"state\":\"done\""' \
	"$QVMCTL" "$BIN_DIR/tests/jget" "$job"
check "the next backup" bk p3
check "... is incremental on it" [ "$(jf p3 .type) $(jf p3 .parent)" = "incremental $id" ]

echo "# 1b. kill while QEMU is inside job-finalize"
out=$(ctl --json backup f --no-wait 2>&1)
id2=$(printf '%s' "$out" | field .id)
n=0
while [ $n -lt 100 ] && [ "$(slow_count)" != 4 ]; do sleep 0.05; n=$((n + 1)); done
check "a backup is inside its job-finalize ($id2)" [ "$(slow_count)" = 4 ]
kout=$(ctl --json kill f 2>&1)
check "kill answers without cancelling the backup ($(printf '%s' "$kout" | tr -d '\n'))" \
	contains "$kout" '"cancelled_job": null'
check "f is stopped" wait_state f stopped 10
check "the backup completed all the same" wait_manifest "$id2" complete

echo "# 2. QEMU dies on job-finalize"
with_faults FAKEQEMU_CRASH=job-finalize
check "start f with the fault" ctl start f
check "a backup (full: a new fake has no bitmap) ... " sh -c '! "$0" --json backup f >"$1" 2>"$2"' \
	"$QVMCTL" "$T/p4.json" "$T/p4.err"
check "... fails, saying QEMU went ($(cat "$T/p4.err" "$T/p4.json" | tr -d '\n' | cut -c1-200))" \
	grep -q "qemu" "$T/p4.err" "$T/p4.json"
check "f crashed" wait_state f crashed 10
p4=$(ls "$T/state/backups/f" | sort | tail -1)
check "the failed backup's manifest says failed ($p4)" sh -c 'grep -q "\"status\": *\"failed\"" "$0"' \
	"$T/state/backups/f/$p4/manifest.json"
check "... and it left no image" sh -c '! ls "$0"/*.qcow2 2>/dev/null | grep -q .' "$T/state/backups/f/$p4"
check "the daemon keeps serving" ctl list
with_faults
check "start f without faults" ctl start f
check "the next backup" bk p5
check "... is full ($(jf p5 .reason))" [ "$(jf p5 .type)" = full ]
check "... because the failed one's copy had cleared the bitmaps" \
	contains "$(jf p5 .reason)" "failed after its copy had cleared the dirty bitmaps"
check "the one after" bk p6
check "... is incremental again" [ "$(jf p6 .type) $(jf p6 .parent)" = "incremental $(jf p5 .id)" ]
bystander "the bystander is untouched (same pid, running)"

echo "# 3. QEMU ends right after the targets are detached"
check "kill f" ctl kill f
with_faults FAKEQEMU_CRASH_AFTER=blockdev-del FAKEQEMU_JOB_BYTES=67108864
check "start f with the fault" ctl start f
check "a backup whose QEMU ends once its targets are detached" bk p7
check "... completes ($(cat "$T/p7.err"))" [ "$(jf p7 .status)" = complete ]
check "... its manifest says so" wait_manifest "$(jf p7 .id)" complete
check "... and its file holds what the job wrote" \
	sh -c '[ "$(stat -c %s "$0")" -gt 67108864 ]' "$T/state/backups/f/$(jf p7 .id)/d1.qcow2"
check "f crashed all the same" wait_state f crashed 10
bystander "the bystander is still untouched"

echo "# 4. a stopped VM's backup helper ends right after the targets are detached"
check "a backup of the stopped f" bk p8
check "... completes though its helper ended ($(cat "$T/p8.err"))" [ "$(jf p8 .status)" = complete ]
check "... and its file holds what the job wrote" \
	sh -c '[ "$(stat -c %s "$0")" -gt 67108864 ]' "$T/state/backups/f/$(jf p8 .id)/d1.qcow2"
check "... and qvmd said how the helper ended" grep -q "backup $(jf p8 .id): backup helper .* after the copy; the backup completes" "$T/qvmd.log"
check "f starts afterwards" ctl start f
check "kill f" ctl kill f

echo "# 5. qvmd killed while QEMU is inside job-finalize"
with_faults FAKEQEMU_SLOW=job-finalize FAKEQEMU_SLOW_MS=800
check "start f with the slow job-finalize" ctl start f
check "a backup (full: a new fake has no bitmap)" bk p9
check "... complete" [ "$(jf p9 .status)" = complete ]
killed_in_finalize "the next backup"
id3=$killed
check "the interrupted backup is marked failed" wait_manifest "$id3" failed
check "the next backup" bk p10
check "... is full, saying why ($(jf p10 .reason))" sh -c '[ "$0" = full ] && echo "$1" | grep -q "backup $2 was interrupted by a restart of qvmd"' \
	"$(jf p10 .type)" "$(jf p10 .reason)" "$id3"
check "the one after is incremental on it" bk p11
check "... (incremental on $(jf p10 .id))" [ "$(jf p11 .type) $(jf p11 .parent)" = "incremental $(jf p10 .id)" ]
bystander "the bystander is still untouched"

echo "# 6. the same with a --full backup (planned from QEMU's answer, not guessed)"
killed_in_finalize "a full backup" --full
id4=$killed
check "the interrupted full backup is marked failed" wait_manifest "$id4" failed
check "the next backup" bk p12
check "... is full, saying why ($(jf p12 .reason))" sh -c '[ "$0" = full ] && echo "$1" | grep -q "backup $2 was interrupted by a restart of qvmd"' \
	"$(jf p12 .type)" "$(jf p12 .reason)" "$id4"
bystander "the bystander is still untouched"
check "kill f" ctl kill f
check "kill the bystander" ctl kill by
finish
