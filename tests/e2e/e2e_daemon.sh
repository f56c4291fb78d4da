#!/bin/sh
# The daemon's own life: sd_notify readiness, autostart (and no second start of an adopted VM),
# reload by SIGHUP and by qvmctl (new, changed, broken and removed definitions), a running VM whose
# definition changed or vanished, and on_daemon_stop = powerdown.
. "$(dirname "$0")/lib.sh"

fw_vm auto1 q35 "autostart = yes"
fw_vm man1 pc
"$BIN_DIR/tests/notifyrecv" "$T/notify.sock" 8 >"$T/notify.log" &
NR=$!
sleep 0.2
NOTIFY_SOCKET="$T/notify.sock" start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "autostart vm is started" wait_state auto1 running 20
check "other vm stays stopped" [ "$(ctl --json status man1 | field .state)" = stopped ]
sleep 0.5
check "READY=1 sent to NOTIFY_SOCKET" grep -qx "READY=1" "$T/notify.log"

pid=$(ctl --json status auto1 | field .pid)
kill -9 "$QVMD_PID"; wait "$QVMD_PID" 2>/dev/null; QVMD_PID=
start_qvmd
sleep 0.5
check "an adopted autostart vm is not started again (same pid)" [ "$(ctl --json status auto1 | field .pid)" = "$pid" ]
check "exactly one qemu" [ "$(qemu_pids | wc -l)" -eq 1 ]

"$QVMD" --stop -c "$T/qvmd.conf" >/dev/null
check "qvmd --stop with on_daemon_stop = leave leaves vms running" [ "$(ctl --json status auto1 | field .pid)" = "$pid" ]

sed -i 's/^memory = 64M/memory = 96M/' "$T/vms/auto1.ini"
fw_vm new1 q35
kill -HUP "$QVMD_PID"
sleep 0.5
check "SIGHUP: the new definition appears" contains "$(ctl list)" new1
check "changed definition of a running vm is flagged" [ "$(ctl --json status auto1 | field .definition_changed)" = true ]
check "... and it keeps what it was started with" [ "$(ctl --json status auto1 | field .memory_bytes)" = 67108864 ]

printf 'this line is broken\n' >>"$T/vms/man1.ini"
out=$(ctl --json reload)
check "reload reports the broken file with its line ($out)" contains "$out" "man1.ini:"
check "the broken vm keeps its previous definition" contains "$(ctl list)" man1
check "no vm disturbed by the broken file" [ "$(ctl --json status auto1 | field .pid)" = "$pid" ]

rm "$T/vms/man1.ini" "$T/vms/auto1.ini"
out=$(ctl --json reload)
check "reload lists removed definitions ($out)" contains "$out" '"man1"'
check "a removed stopped vm is gone" [ -z "$(ctl list | awk '$1=="man1"')" ]
check "a removed running vm stays until stopped" [ "$(ctl --json status auto1 | field .state)" = running ]
check "... flagged as removed" [ "$(ctl --json status auto1 | field .definition_removed)" = true ]
ctl kill auto1 >/dev/null
sleep 0.3
check "... and disappears once stopped" [ -z "$(ctl list | awk '$1=="auto1"')" ]

# on_daemon_stop = powerdown: stopping qvmd powers every vm down first.
stop_qvmd
printf 'on_daemon_stop = powerdown\n' >>"$T/qvmd.conf"
fw_vm pd1 q35 "autostart = yes"
sed -i 's/^shutdown_timeout = 30s/shutdown_timeout = 1s/' "$T/vms/pd1.ini" "$T/vms/new1.ini"
start_qvmd
check "pd1 autostarted" wait_state pd1 running 20
check "start new1" ctl start new1
"$QVMD" --stop -c "$T/qvmd.conf" >/dev/null
check "qvmd --stop (ExecStop) powers every vm down when configured to" [ -z "$(qemu_pids)" ]
check "... and qvmd keeps running" kill -0 "$QVMD_PID"
check "start new1 again" ctl start new1
kill -TERM "$QVMD_PID"
n=0
while kill -0 "$QVMD_PID" 2>/dev/null && [ $n -lt 200 ]; do sleep 0.1; n=$((n + 1)); done
check "qvmd exits after powering vms down" gone "$QVMD_PID"
QVMD_PID=
check "no qemu left running" [ -z "$(qemu_pids)" ]
check "run directories cleaned" [ -z "$(ls -d "$T"/run/*/ 2>/dev/null)" ]
kill $NR 2>/dev/null
finish
