#!/bin/sh
# qvmctl reboot: the Linux test guest shuts down over ACPI (GUEST-POWERDOWN) and boots again in
# the same QEMU process with its hot-plugged disk; afterwards a guest poweroff still ends QEMU
# (the shutdown action is back to poweroff). A firmware-only VM (ignores ACPI) is reset after the
# timeout; a paused one is resumed first. A qvmd killed while the guest is down in a reboot: the
# next qvmd finishes it. Bad input.
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f qcow2 "$T/images/hd.qcow2" 16M
guest_vm g1 q35
fw_vm f1 q35
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }

check "start g1" ctl start g1
check "guest ready" wait_console g1 GUEST-READY 1 120
check "attach a disk" ctl attach-disk g1 hd --file "$T/images/hd.qcow2"
check "the guest sees it" wait_console g1 "GUEST-EVENT add block/vda" 1 60
pid=$(ctl --json status g1 | field .pid)

out=$(ctl --json reboot g1 2>&1)
check "reboot is done by the guest ($out)" [ "$(echo "$out" | field .rebooted_by)" = guest ]
check "... and answers once it runs again" [ "$(echo "$out" | field .state)" = running ]
check "the guest ran its power-button handler" wait_console g1 GUEST-POWERDOWN 1 5
check "the guest boots again" wait_console g1 GUEST-READY 2 120
check "... seeing its hot-plugged disk at boot" wait_console g1 "GUEST-EVENT add block/vda" 2 10
check "the same qemu process ($pid)" [ "$(ctl --json status g1 | field .pid)" = "$pid" ]
check "the disk is still in qvmd's books" sh -c '"$0" devices g1 | grep -q "^hd "' "$QVMCTL"
check "state running" [ "$(ctl --json status g1 | field .state)" = running ]
out=$(ctl reboot g1 --timeout 30m 2>&1)
check "a second reboot, text output ($out)" contains "$out" "g1: running (rebooted by the guest after"
check "the guest boots a third time" wait_console g1 GUEST-READY 3 120

# qvmd dies while the guest is down in a reboot: QEMU waits paused; the next qvmd resets it.
sent() { grep -c '"execute":"system_powerdown"' "$T/qvmd.log"; }
c0=$(sent)
ctl reboot g1 >"$T/rb.out" 2>&1 &
rbpid=$!
n=0
while [ $n -lt 600 ] && [ "$(sent)" -le "$c0" ]; do sleep 0.05; n=$((n + 1)); done
kill -STOP "$QVMD_PID"
check "the guest shuts down while qvmd is stopped" wait_console g1 GUEST-POWERDOWN 3 60
sleep 1
check "... and its qemu stays (paused, not gone)" kill -0 "$pid"
kill -KILL "$QVMD_PID"
wait "$QVMD_PID" 2>/dev/null
wait "$rbpid" 2>/dev/null
start_qvmd || not_ok "qvmd starts again"
check "the next qvmd finishes the reboot: the guest boots" wait_console g1 GUEST-READY 4 120
check "... in the same process" [ "$(ctl --json status g1 | field .pid)" = "$pid" ]
check "... running" wait_state g1 running 10

# The shutdown action is poweroff again: a powerdown ends QEMU.
out=$(ctl --json powerdown g1 2>&1)
check "powerdown after reboots is ended by the guest ($out)" [ "$(echo "$out" | field .ended_by)" = guest ]
# (Adopted by the second qvmd, that QEMU is not its child: it is reaped by init, a moment later.)
n=0
while [ $n -lt 100 ] && ! gone "$pid"; do sleep 0.1; n=$((n + 1)); done
check "... and qemu is gone" gone "$pid"

# Firmware only: ignores ACPI, reset after the timeout; paused: resumed first.
check "start f1" ctl start f1
fpid=$(ctl --json status f1 | field .pid)
out=$(ctl --json reboot f1 --timeout 1s 2>&1)
check "a guest ignoring ACPI is reset ($out)" [ "$(echo "$out" | field .rebooted_by)" = reset ]
check "... in the same process" [ "$(ctl --json status f1 | field .pid)" = "$fpid" ]
out=$(ctl reboot f1 --timeout 1s 2>&1)
check "text output says so ($out)" contains "$out" "guest ignored powerdown: reset"
check "pause f1" ctl pause f1
out=$(ctl --json reboot f1 --timeout 1s 2>&1)
check "a paused vm is resumed first ($out)" [ "$(echo "$out" | field .resumed)" = true ]
check "... and runs" [ "$(ctl --json status f1 | field .state)" = running ]

# Bad input
out=$(ctl reboot nosuch 2>&1); rc=$?
check "unknown vm ($out)" failed_with $rc "$out" "no such vm"
out=$(ctl reboot g1 2>&1); rc=$?
check "a stopped vm ($out)" failed_with $rc "$out" "not running"
out=$(ctl reboot f1 --timeout 0 2>&1); rc=$?
check "a bad timeout is a usage error ($out)" [ $rc -eq 2 ]
out=$(ctl reboot 2>&1); rc=$?
check "no name is a usage error ($out)" [ $rc -eq 2 ]
ctl kill f1 >/dev/null
finish
