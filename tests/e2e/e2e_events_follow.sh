#!/bin/sh
# events --follow: a qvmd that stops and comes back is subscribed to again (a "reconnected" line
# marks the gap) and later events arrive; without --follow the client ends when qvmd goes away;
# SIGTERM ends a follower with status 0, also while it waits for a daemon. qvmd's own events:
# device attached / removal pending, restart scheduled, reload (to every subscriber).
. "$(dirname "$0")/lib.sh"

fw_vm e1 q35
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
"$QVMCTL" events --follow >"$T/follow.out" 2>"$T/follow.err" &
FPID=$!
"$QVMCTL" events >"$T/plain.out" 2>"$T/plain.err" &
PPID2=$!
"$QVMCTL" --json events e1 --follow >"$T/json.out" 2>&1 &
JPID=$!
sleep 0.5
check "start e1" ctl start e1
n=0
while [ $n -lt 100 ] && ! grep -q "e1 state .*running" "$T/follow.out"; do sleep 0.1; n=$((n + 1)); done
check "the follower sees e1 start" grep -q "e1 state .*running" "$T/follow.out"

stop_qvmd
wait "$PPID2"
rc=$?
check "without --follow the client ends when qvmd goes away (exit $rc)" [ "$rc" -eq 3 ]
sleep 1
check "the follower is still there" kill -0 "$FPID"
check "... and said it waits" grep -q "connection to the daemon lost; waiting" "$T/follow.err"
start_qvmd || not_ok "qvmd starts again"
n=0
while [ $n -lt 100 ] && ! grep -q " reconnected" "$T/follow.out"; do sleep 0.1; n=$((n + 1)); done
check "a reconnected line marks the gap" grep -q "^.* - reconnected$" "$T/follow.out"
check "... in --json too" grep -q '"event": *"reconnected"' "$T/json.out"
check "kill e1 through the new qvmd" ctl kill e1
n=0
while [ $n -lt 100 ] && ! grep -q "e1 state .*stopped" "$T/follow.out"; do sleep 0.1; n=$((n + 1)); done
check "the follower sees events of the new qvmd" grep -q "e1 state .*stopped" "$T/follow.out"
check "... and so does the one following e1 in json" grep -q '"state": *"stopped"' "$T/json.out"

# qvmd's own events.
wait_line() { # wait_line FILE PATTERN
	n=0
	while [ $n -lt 100 ] && ! grep -q "$2" "$1"; do sleep 0.1; n=$((n + 1)); done
	grep -q "$2" "$1"
}
qemu-img create -q -f qcow2 "$T/images/hd.qcow2" 16M
check "start e1 again" ctl start e1
check "attach a disk" ctl attach-disk e1 hd --file "$T/images/hd.qcow2"
check "a device event says it" wait_line "$T/follow.out" "e1 device attached disk hd$"
check "... in json with action, kind, device" \
	wait_line "$T/json.out" '"event":"device","vm":"e1","action":"attached","kind":"disk","device":"hd"'
ctl detach e1 hd --timeout 1s >/dev/null 2>&1
check "firmware does not let go: removal pending" wait_line "$T/follow.out" "e1 device removal-pending disk hd"
printf '[vm]\nname = r1\nmemory = 64M\nmachine = q35\naccel = %s\nconsole = none\nrestart = on-failure\n' \
	"$FW_ACCEL" >"$T/vms/r1.ini"
out=$(ctl reload 2>&1)
check "reload ($out)" wait_line "$T/follow.out" " - reload 1 added, 0 removed, 0 changed, 0 with errors"
check "... reaches a subscriber of one vm too" wait_line "$T/json.out" '"event": *"reload"'
check "start r1" ctl start r1
kill -9 "$(ctl --json status r1 | field .pid)"
check "a crash schedules a restart: its event" wait_line "$T/follow.out" "r1 restart scheduled in [0-9]* ms (attempt 1)"
ctl kill e1 >/dev/null 2>&1
wait_state r1 running 30 && ctl kill r1 >/dev/null 2>&1

kill -TERM "$FPID"
wait "$FPID"
check "SIGTERM ends a follower with status 0" [ $? -eq 0 ]
stop_qvmd
sleep 1
kill -TERM "$JPID"
wait "$JPID"
check "... also while it waits for a daemon" [ $? -eq 0 ]
start_qvmd >/dev/null
finish
