#!/bin/sh
# An upgrade restarts qvmd: with on_daemon_stop = powerdown the stopping qvmd would power every VM
# down. The package's postinst writes run_dir/qvmd.restarting first; a qvmd stopping (ExecStop's
# qvmd --stop, then SIGTERM) with that marker leaves the VMs running, and the next qvmd removes the
# marker and re-attaches. Without the marker the same stop powers the VMs down.
. "$(dirname "$0")/lib.sh"

echo "on_daemon_stop = powerdown" >>"$T/qvmd.conf"
printf '[vm]\nname = m1\nmemory = 64M\nmachine = q35\naccel = %s\nshutdown_timeout = 1s\nconsole = none\n' \
	"$FW_ACCEL" >"$T/vms/m1.ini"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "start m1" ctl start m1
pid=$(ctl --json status m1 | field .pid)
check "m1 has a QEMU ($pid)" [ -n "$pid" ]

touch "$T/run/qvmd.restarting"
out=$("$QVMD" --stop -c "$T/qvmd.conf" 2>&1); rc=$?
check "qvmd --stop with the marker: exit 0, a restart ($out)" exited_with $rc 0 "$out" "a restart"
stop_qvmd
check "qvmd stopped for the restart: m1's QEMU runs on" kill -0 "$pid"
check "its log says why" grep -q "stopping for a restart" "$T/qvmd.log"
start_qvmd || { not_ok "qvmd starts again"; finish; exit 1; }
check "the new qvmd removed the marker" [ ! -e "$T/run/qvmd.restarting" ]
check "and re-attached to the same QEMU" [ "$(ctl --json status m1 | field .pid)" = "$pid" ]

# Without the marker, a stop powers the VMs down (firmware ignores ACPI: escalation after 1 s).
out=$("$QVMD" --stop -c "$T/qvmd.conf" 2>&1); rc=$?
check "qvmd --stop without the marker powers the VMs down ($out)" [ $rc -eq 0 ]
# (The QEMU outlived the qvmd that spawned it: whoever inherited it may reap it late.)
dead() { gone "$1" || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
check "m1's QEMU is gone" dead "$pid"
finish
