#!/bin/sh
# The real Linux test guest under TCG: start -> GUEST-READY, reset -> GUEST-INIT again, powerdown
# ended by the guest itself (ACPI), with SHUTDOWN reason guest-shutdown and state stopped; a paused
# guest is resumed for its powerdown.
. "$(dirname "$0")/lib.sh"

guest_vm g1 q35
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
"$QVMCTL" --json events g1 >"$T/events.log" 2>&1 &
EVPID=$!

out=$(ctl start g1 2>&1)
check "start returns running ($out)" [ "$(ctl --json status g1 | field .state)" = running ]
check "guest prints GUEST-READY" wait_console g1 GUEST-READY 1 60
pid=$(ctl --json status g1 | field .pid)
check "status shows a live qemu pid" kill -0 "$pid"
check "status shows qemu's own run state" [ "$(ctl --json status g1 | field .qemu_status)" = running ]
check "list shows the vm running" [ "$(ctl list | awk '$1=="g1"{print $2}')" = running ]

check "reset succeeds" ctl reset g1
check "reset reboots the guest (GUEST-INIT twice)" wait_console g1 GUEST-INIT 2 60
check "guest ready again after reset" wait_console g1 GUEST-READY 2 60

out=$(ctl --json powerdown g1 2>&1)
check "powerdown ended by the guest ($out)" [ "$(echo "$out" | field .ended_by)" = guest ]
check "guest ran its power-button handler" wait_console g1 GUEST-POWERDOWN 1 5
check "state stopped after powerdown" [ "$(ctl --json status g1 | field .state)" = stopped ]
check "qemu process is gone" gone $pid
sleep 0.3
check "events stream saw SHUTDOWN with reason guest-shutdown" \
	contains "$(grep SHUTDOWN "$T/events.log")" guest-shutdown
check "events stream saw the state change to stopped" grep -q "stopped" "$T/events.log"
check "run directory cleaned up" [ ! -e "$T/run/g1" ]

# A paused guest never sees ACPI: powerdown resumes it first and says so.
ctl start g1 >/dev/null
check "guest ready after a new start" wait_console g1 GUEST-READY 3 60
check "pause" ctl pause g1
out=$(ctl --json powerdown g1 --timeout 60s 2>&1)
check "powerdown of a paused vm is ended by the guest ($out)" [ "$(echo "$out" | field .ended_by)" = guest ]
check "... and says it resumed the vm first" [ "$(echo "$out" | field .resumed)" = true ]
check "the guest ran its power-button handler again" wait_console g1 GUEST-POWERDOWN 2 5
kill $EVPID 2>/dev/null
finish
