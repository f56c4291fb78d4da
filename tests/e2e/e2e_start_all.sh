#!/bin/sh
# start --all (every VM with autostart = yes that has no QEMU, in parallel; --force: every VM),
# its per-VM results and failures, and restart (powerdown with its escalation, then start).
. "$(dirname "$0")/lib.sh"

fw_vm a1 q35 "autostart = yes"
fw_vm a2 q35 "autostart = yes"
fw_vm b1 q35
# Its start fails: the disk image does not exist.
fw_vm x1 q35 "[disk d]
file = $T/images/missing.qcow2"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
# qvmd itself started the autostart VMs at boot (daemon_start_all): stop them for the test.
wait_state a1 running 60 && wait_state a2 running 60
ctl kill a1 >/dev/null
ctl kill a2 >/dev/null

out=$(ctl start --all 2>&1); rc=$?
check "start --all succeeds ($out)" [ $rc -eq 0 ]
check "... starting a1 and a2" sh -c 'echo "$0" | grep -q "^a1: running" && echo "$0" | grep -q "^a2: running"' "$out"
check "... not b1 (no autostart)" [ "$(ctl --json status b1 | field .state)" = stopped ]
out=$(ctl --json start --all 2>&1); rc=$?
check "start --all with everything up starts nothing ($out)" \
	sh -c '[ "$0" -eq 0 ] && [ "$(echo "$1" | "$2" ".results")" = "[]" ]' $rc "$out" "$BIN_DIR/tests/jget"

out=$(ctl --json start --all --force 2>&1); rc=$?
check "start --all --force fails for x1 only: exit 1 ($out)" [ $rc -eq 1 ]
J() { echo "$out" | field "$1"; }
check "... b1 started" [ "$(ctl --json status b1 | field .state)" = running ]
check "... the results name b1 and x1, no other" \
	sh -c '[ "$0" = "b1 x1" ] || [ "$0" = "x1 b1" ]' "$(J ".results[0].name") $(J ".results[1].name")$(J ".results[2]")"
i=0
[ "$(J ".results[0].name")" = x1 ] || i=1
check "... x1's entry: ok false, state null (jget prints nothing), error {code, message}" \
	sh -c '[ "$0" = false ] && [ -z "$1" ] && [ -n "$2" ] && [ -n "$3" ]' \
	"$(J ".results[$i].ok")" "$(J ".results[$i].state")" "$(J ".results[$i].error.code")" \
	"$(J ".results[$i].error.message")"
check "... its state key is there, as null" sh -c 'echo "$0" | grep -q "\"state\": null"' "$out"
ctl kill b1 >/dev/null
out=$(ctl start --all --force 2>&1); rc=$?
check "text: a failed line and exit 1 ($out)" sh -c '[ "$0" -eq 1 ] && echo "$1" | grep -q "^x1: failed: "' $rc "$out"

# restart: firmware ignores ACPI, so the powerdown escalates to quit after the timeout.
pid=$(ctl --json status a1 | field .pid)
out=$(ctl --json restart a1 --timeout 1s 2>&1); rc=$?
check "restart a1 ($out)" [ $rc -eq 0 ]
check "... a new qemu" sh -c '[ "$0" != "$1" ] && kill -0 "$0"' "$(ctl --json status a1 | field .pid)" "$pid"
check "... after a powerdown ended by quit" [ "$(echo "$out" | field .ended_by)" = quit ]
check "... running" [ "$(echo "$out" | field .state)" = running ]
ctl kill b1 >/dev/null 2>&1
out=$(ctl restart b1 2>&1); rc=$?
check "restart of a stopped vm starts it ($out)" sh -c '[ "$0" -eq 0 ] && echo "$1" | grep -q "^b1: running (pid"' $rc "$out"
out=$(ctl restart x1 2>&1); rc=$?
check "restart of a vm that cannot start fails ($out)" [ $rc -eq 1 ]

# Usage
out=$(ctl start --all a1 2>&1); rc=$?
check "start --all NAME is a usage error ($out)" exited_with $rc 2 "$out" "--all takes no NAME"
out=$(ctl start --force a1 2>&1); rc=$?
check "--force without --all ($out)" exited_with $rc 2 "$out" "--force goes with --all"
out=$(ctl start 2>&1); rc=$?
check "start without NAME or --all ($out)" exited_with $rc 2 "$out" "NAME or --all"
out=$(ctl restart 2>&1); rc=$?
check "restart without NAME ($out)" [ $rc -eq 2 ]
out=$(ctl restart nosuch 2>&1); rc=$?
check "restart of an unknown vm ($out)" failed_with $rc "$out" "no such vm"
for v in a1 a2 b1; do ctl kill $v >/dev/null 2>&1; done
finish
