#!/bin/sh
# Faults a real QEMU does not produce on demand, played by fakeqemu (tests/fakeqemu/fakeqemu.c):
# QEMU dying in the middle of a hot-plug or a reset, a stalled monitor, a guest ignoring ACPI with
# a QEMU ignoring quit, a guest never releasing a device, QEMU crashing by itself, a QEMU that
# never gets ready, one dying on the `cont` that ends a start, qvmd stopping in the middle of an
# attach, and a backend deletion after detach that is never confirmed. fakeqemu reads its misbehaviour
# from the environment, which qvmd hands on to every QEMU it spawns: each scenario restarts qvmd
# with its own FAKEQEMU_* switches (the QEMUs of earlier scenarios keep running, are re-attached
# and keep the switches they started with).
. "$(dirname "$0")/lib.sh"

echo "qemu = $BIN_DIR/tests/fakeqemu" >>"$T/qvmd.conf"

# with_faults [VAR=VALUE...]: restarts qvmd with exactly these FAKEQEMU_* switches.
with_faults() {
	stop_qvmd
	unset FAKEQEMU_CRASH FAKEQEMU_STALL FAKEQEMU_IGNORE_POWERDOWN FAKEQEMU_NO_UNPLUG \
		FAKEQEMU_EXIT_AFTER_MS FAKEQEMU_STARTUP_DELAY_MS
	for kv in "$@"; do export "${kv?}"; done
	start_qvmd || { not_ok "qvmd starts with $*"; finish; exit 1; }
}
# ms_since T0: milliseconds since T0 (from date +%s%N).
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
st() { ctl --json status "$1" | field "$2"; }
# wait_field NAME PATH VALUE SECONDS: until status field PATH of NAME is VALUE.
wait_field() {
	n=0
	while [ "$n" -lt $(($4 * 10)) ]; do
		[ "$(st "$1" "$2" 2>/dev/null)" = "$3" ] && return 0
		sleep 0.1
		n=$((n + 1))
	done
	return 1
}
# jctl_has REGEX VERB...: the compact --json result of VERB matches REGEX (jctl_lacks: does not).
jctl_has() {
	re=$1
	shift
	jctl "$@" | grep -qE -- "$re"
}
jctl_lacks() { ! jctl_has "$@"; }
T0=$(date +%s%N)
phase() { echo "# $* (at $(ms_since "$T0") ms)"; }
qvmd_alive() { kill -0 "$QVMD_PID" 2>/dev/null; }
# contains_all TEXT PATTERN...: every fixed string is in TEXT.
contains_all() {
	t=$1
	shift
	for p in "$@"; do contains "$t" "$p" || return 1; done
}

fw_vm by q35 "restart = no"
fw_vm c1 q35 "restart = no"
fw_vm c2 q35 "restart = on-failure
restart_limit = 1"
fw_vm s1 q35
fw_vm p1 q35
fw_vm p2 pc
fw_vm u1 q35 "hotplug_slots = 2"
fw_vm e1 q35 "restart = always
restart_limit = 1"
fw_vm e2 pc "restart = no"
fw_vm d1 q35
fw_vm k1 pc "restart = no"
fw_vm a1 q35 "restart = no"
truncate -s 1M "$T/images/u1-a.raw" "$T/images/u1-b.raw" "$T/images/u1-c.raw"

# A bystander started by a qvmd without faults: every later scenario must leave it alone.
with_faults
check "start the bystander without faults" ctl start by
bypid=$(st by .pid)
bystander_ok() {
	b=$(ctl --json status by) &&
		[ "$(echo "$b" | field .pid) $(echo "$b" | field .state) $(echo "$b" | field .qemu_status)" = "$bypid running running" ] &&
		kill -0 "$bypid"
}

phase "1. qemu dies in the middle of attach-disk (device_add)"
with_faults FAKEQEMU_CRASH=device_add,system_reset
check "the bystander was re-attached (same pid)" bystander_ok
check "start c1" ctl start c1
c1pid=$(st c1 .pid)
cp "$T/vms/c1.ini" "$T/c1.ini.before"
out=$(ctl attach-disk c1 d1 --file "$T/images/c1-d1.raw" --format raw --create 1M --persist 2>&1)
rc=$?
check "attach-disk fails with exit 1 naming the failed step ($out)" \
	failed_with $rc "$out" "device_add d1 failed"
check "c1 is reported crashed" wait_state c1 crashed 5
check "c1's qemu is gone" gone "$c1pid"
le=$(st c1 .last_exit.text)
check "last exit names SIGABRT ($le)" \
	contains "$le" "signal 6"
check "the daemon keeps serving" qvmd_alive
check "list answers" ctl list
check "the bystander is unaffected (same pid, status answers)" bystander_ok
check "no run directory left for c1" [ ! -e "$T/run/c1" ]
check "the image made by --create was removed" [ ! -e "$T/images/c1-d1.raw" ]
check "--persist did not touch the definition" cmp -s "$T/vms/c1.ini" "$T/c1.ini.before"
check "devices of c1 does not list d1" \
	jctl_lacks '"id":"d1"' devices c1
# The same VM starts again and the id is free: nothing of the failed attach was kept.
check "c1 starts again" ctl start c1
check "the new qemu has no node of d1" \
	jctl_lacks d1 qmp c1 query-named-block-nodes
check "kill c1" ctl kill c1

phase "2. qemu dies on system_reset; restart = on-failure, restart_limit = 1"
check "start c2" ctl start c2
c2pid=$(st c2 .pid)
out=$(ctl reset c2 2>&1)
rc=$?
check "reset fails with exit 1 ($out)" failed_with $rc "$out" "system_reset failed"
check "c2's qemu is gone" gone "$c2pid"
check "the policy restarts c2: status shows restarts 1" wait_field c2 .restarts 1 6
check "c2 runs again" wait_state c2 running 5
le=$(st c2 .last_exit.text)
check "status shows the last exit with the signal ($le)" \
	contains "$le" "killed by signal 6"
newpid=$(st c2 .pid)
check "c2 runs a new qemu ($c2pid -> $newpid)" [ "$newpid" != "$c2pid" -a "$newpid" != 0 ]
out=$(ctl reset c2 2>&1)
check "a second crash ($out) leaves c2 crashed" wait_state c2 crashed 5
sleep 1.5 # no restart may come any more
check "after the limit it stays crashed" [ "$(st c2 .state)" = crashed ]
check "restarts is still 1" [ "$(st c2 .restarts)" = 1 ]
le=$(st c2 .last_exit.text)
check "last exit says the restart limit was reached ($le)" \
	contains "$le" "restart limit (1) reached"
check "the bystander is unaffected" bystander_ok

phase "3. a stalled qemu (query-status never answered)"
with_faults FAKEQEMU_STALL=query-status
check "start s1" ctl start s1
s1pid=$(st s1 .pid)
t0=$(date +%s%N)
out=$(ctl --json status s1 2>&1)
ms=$(ms_since "$t0")
# QMP would wait 5 s; status gives up after 2 s (how long exactly is not asserted: a loaded machine
# stretches it; the pipelined order below shows status does not wait for QMP's timeout).
check "status of the stalled vm answers (${ms} ms)" [ -n "$out" ]
check "qemu status reads timeout" [ "$(echo "$out" | field .qemu_status)" = timeout ]
check "state is still running" [ "$(echo "$out" | field .state)" = running ]
# Pipelined on one connection: a raw query-status (QMP's default timeout for queries: 5 s) and a
# status (2 s) wait for the stalled QEMU; the list and the bystander's status sent after them must
# not, so the replies come in the order 3 4 2 1, however loaded the machine is.
printf '%s\n' '{"id":1,"cmd":"qmp","vm":"s1","args":{"command":"query-status"}}' \
	'{"id":2,"cmd":"status","vm":"s1"}' '{"id":3,"cmd":"list"}' \
	'{"id":4,"cmd":"status","vm":"by"}' | "$CTLRAW" "$SOCK" >"$T/pipelined" 2>&1
order=$(grep -o '^{"id":[0-9]*' "$T/pipelined" | cut -d: -f2 | tr '\n' ' ')
check "list and the bystander's status are answered before the stalled requests ($order)" \
	[ "$order" = "3 4 2 1 " ]
check "the stalled status got its answer: qemu status timeout" \
	contains "$(grep '^{"id":2,' "$T/pipelined")" '"qemu_status":"timeout"'
check "the stalled raw command failed with a timeout ($(grep '^{"id":1,' "$T/pipelined"))" \
	contains_all "$(grep '^{"id":1,' "$T/pipelined")" '"code":"timeout"' "query-status timed out"
check "the bystander still answers" bystander_ok
check "other commands still go through s1's monitor" ctl qmp s1 query-kvm
out=$(jctl kill s1 2>&1)
check "kill ends the stalled vm ($out)" [ "$(echo "$out" | field .state)" = stopped ]
check "s1's qemu is gone" gone "$s1pid"
check "s1 is stopped" [ "$(st s1 .state)" = stopped ]

phase "4. a guest ignoring ACPI powerdown, then also a qemu ignoring quit"
with_faults FAKEQEMU_IGNORE_POWERDOWN=1
check "start p1" ctl start p1
t0=$(date +%s%N)
out=$(jctl powerdown p1 --timeout 1s 2>&1)
ms=$(ms_since "$t0")
check "powerdown escalates to quit ($out)" [ "$(echo "$out" | field .ended_by)" = quit ]
check "not before the 1 s timeout (${ms} ms)" [ "$ms" -ge 900 ]
check "p1 is stopped" [ "$(st p1 .state)" = stopped ]
with_faults FAKEQEMU_IGNORE_POWERDOWN=1 FAKEQEMU_STALL=quit
check "start p2" ctl start p2
p2pid=$(st p2 .pid)
t0=$(date +%s%N)
out=$(jctl powerdown p2 --timeout 1s 2>&1)
ms=$(ms_since "$t0")
check "powerdown escalates to sigterm ($out)" [ "$(echo "$out" | field .ended_by)" = sigterm ]
check "not before the timeout and quit's grace (${ms} ms)" [ "$ms" -ge 5500 ]
check "p2 is stopped" [ "$(st p2 .state)" = stopped ]
check "p2's qemu is gone" gone "$p2pid"
le=$(st p2 .last_exit.text)
check "last exit says sigterm ended it ($le)" \
	contains "$le" "ended by sigterm"

phase "5. a guest that never releases an unplugged disk"
with_faults FAKEQEMU_NO_UNPLUG=1
check "start u1" ctl start u1
check "attach disk a" ctl attach-disk u1 a --file "$T/images/u1-a.raw" --format raw
porta=$(jctl devices u1 | grep -o '"id":"a"[^}]*' | grep -o '"bus":"[^"]*"')
check "disk a sits on a spare port ($porta)" contains "$porta" '"bus":"hp.'
t0=$(date +%s%N)
out=$(ctl --json detach u1 a --timeout 1s 2>"$T/detach.err")
rc=$?
ms=$(ms_since "$t0")
check "detach fails with exit 1 after the 1 s timeout (${ms} ms)" [ $rc -eq 1 -a "$ms" -ge 900 ]
check "the error is a timeout saying removal pending ($(cat "$T/detach.err"))" \
	contains_all "$(echo "$out" | field .code) $(echo "$out" | field .message)" timeout \
	"removal pending"
check "devices shows a pending" \
	jctl_has '"id":"a"[^}]*"pending_removal":true' devices u1
out=$(ctl detach u1 a --timeout 1s 2>&1)
rc=$?
check "a second detach is refused ($out)" failed_with $rc "$out" "busy: removal of a in progress"
check "attach disk b" ctl attach-disk u1 b --file "$T/images/u1-b.raw" --format raw
portb=$(jctl devices u1 | grep -o '"id":"b"[^}]*' | grep -o '"bus":"[^"]*"')
check "b did not get a's port ($porta, $portb)" [ -n "$portb" -a "$portb" != "$porta" ]
out=$(ctl attach-disk u1 c --file "$T/images/u1-c.raw" --format raw 2>&1)
rc=$?
check "with 2 slots, the pending port is not reused for a third disk ($out)" \
	failed_with $rc "$out" "no free hot-plug slot"
check "u1 still runs" [ "$(st u1 .state)" = running ]
check "kill u1" ctl kill u1
check "no run directory left for u1" [ ! -e "$T/run/u1" ]

phase "6. qemu crashing by itself 1.5 s after start"
with_faults FAKEQEMU_EXIT_AFTER_MS=1500
"$QVMCTL" --json events e1 >"$T/e1.events" 2>&1 &
evpid=$!
check "start e1 (restart = always, restart_limit = 1)" ctl start e1
check "start e2 (restart = no)" ctl start e2
e1pid=$(st e1 .pid)
check "e2 is reported crashed" wait_state e2 crashed 5
sleep 1.5 # longer than any restart back-off
check "e2 stays crashed" [ "$(st e2 .state)" = crashed ]
le=$(st e2 .last_exit.text)
check "e2's last exit names the signal ($le)" \
	contains "$le" "killed by signal 6 (Aborted)"
check "e2 was not restarted" [ "$(st e2 .restarts)" = 0 ]
check "e1 is restarted once" wait_field e1 .restarts 1 6
check "e1 crashes again and stays crashed at the limit" wait_state e1 crashed 6
sleep 0.3
kill "$evpid" 2>/dev/null
wait "$evpid" 2>/dev/null
seq=$(grep -o '"state":"[a-z]*"' "$T/e1.events" | cut -d'"' -f4 | tr '\n' ' ')
check "e1 went crashed, starting, running, crashed ($seq)" \
	contains "$seq" "crashed starting running crashed"
check "e1's first qemu is gone" gone "$e1pid"
le=$(st e1 .last_exit.text)
check "e1's last exit names the signal and the limit ($le)" \
	contains_all "$le" "signal 6" "restart limit (1) reached"

phase "7. a qemu that never gets ready"
with_faults FAKEQEMU_STARTUP_DELAY_MS=60000
"$QVMCTL" start d1 >"$T/d1.start" 2>&1 &
startpid=$!
check "d1 is starting" wait_state d1 starting 5
d1pid=$(st d1 .pid)
check "list answers while d1 starts" ctl list
t0=$(date +%s%N)
out=$(jctl kill d1 2>&1)
ms=$(ms_since "$t0")
check "kill ends the vm that is still starting (${ms} ms: $out)" \
	[ "$(echo "$out" | field .state)" = stopped ]
wait "$startpid"
rc=$?
check "the start request fails with exit 1 ($(cat "$T/d1.start"))" \
	failed_with $rc "$(cat "$T/d1.start")" "interrupted by kill"
check "d1 is stopped" [ "$(st d1 .state)" = stopped ]
check "d1's qemu is gone" gone "$d1pid"
check "no run directory left for d1" [ ! -e "$T/run/d1" ]

check "the bystander survived every scenario" bystander_ok
check "kill the bystander" ctl kill by

phase "8. qemu dies on cont, the last step of a start"
with_faults FAKEQEMU_CRASH=cont
out=$(ctl start k1 2>&1)
rc=$?
check "the start fails with exit 1 saying cont failed ($out)" failed_with $rc "$out" "cont failed"
check "the daemon keeps serving" qvmd_alive
check "k1 is stopped" [ "$(st k1 .state)" = stopped ]
le=$(st k1 .last_exit.text)
check "k1's last exit says it died during start ($le)" \
	contains "$le" "during start"
check "no run directory left for k1" [ ! -e "$T/run/k1" ]

phase "9. qvmd stops while an attach waits for a stalled device_add; the next qvmd undoes it"
with_faults FAKEQEMU_STALL=device_add
check "start a1" ctl start a1
a1pid=$(st a1 .pid)
"$QVMCTL" attach-disk a1 x1 --file "$T/images/a1-x1.raw" --format raw --create 1M \
	>"$T/a1.attach" 2>&1 &
att=$!
check "a1 is busy with the attach" wait_field a1 .job attach 5
sleep 0.3 # the first batch (query-pci, blockdev-add x2) is answered at once; device_add never is
check "devices.json records the attach in progress" \
	contains "$(cat "$T/run/a1/devices.json")" '"id":"x1"'
check "... flagged attaching" contains "$(cat "$T/run/a1/devices.json")" '"attaching":true'
check "the image was created" [ -e "$T/images/a1-x1.raw" ]
check "... and x1's block nodes added" jctl_has '"x1.fmt"' qmp a1 query-named-block-nodes
stop_qvmd
wait $att
rc=$?
check "the attach fails with exit 1: qvmd is exiting ($(cat "$T/a1.attach"))" \
	failed_with $rc "$(cat "$T/a1.attach")" "exiting"
with_faults
check "a1 is adopted by the next qvmd (same pid)" [ "$(st a1 .pid)" = "$a1pid" ]
undone() { jctl_lacks '"x1' qmp a1 query-named-block-nodes && jctl_lacks '"x1"' devices a1; }
n=0
while ! undone && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
check "the next qvmd deleted x1's block nodes and forgot x1" undone
check "... and removed the image made for it" [ ! -e "$T/images/a1-x1.raw" ]
check "... and said so" grep -q "x1: its attach was interrupted" "$T/qvmd.log"
check "kill a1" ctl kill a1

phase "10. QEMU never confirms deleting a detached disk's backend"
with_faults FAKEQEMU_STALL=blockdev-del
check "start a1 again" ctl start a1
check "attach disk a" ctl attach-disk a1 a --file "$T/images/u1-c.raw" --format raw
out=$(ctl --json detach a1 a --timeout 1s 2>"$T/detach2.err")
rc=$?
check "detach fails with exit 1 ($(cat "$T/detach2.err"))" [ $rc -eq 1 ]
check "... a timeout saying the guest let go but the backend deletion is unconfirmed" \
	contains_all "$(echo "$out" | field .code) $(echo "$out" | field .message)" timeout \
	"removed from the guest" "did not confirm"
check "a1's devices no longer list a (the guest released it)" jctl_lacks '"id":"a"' devices a1
check "kill a1 again" ctl kill a1

no_qemu_left() {
	n=0
	while [ -n "$(qemu_pids)" ] && [ $n -lt 20 ]; do sleep 0.1; n=$((n + 1)); done
	for p in $(qemu_pids); do echo "# left: $(tr '\0' ' ' </proc/"$p"/cmdline | cut -c1-200)"; done
	[ -z "$(qemu_pids)" ]
}
check "no qemu left" no_qemu_left
finish
