#!/bin/sh
# Never lose a VM: kill -9 of qvmd leaves every QEMU running and a new qvmd adopts them (same pids,
# no duplicates, the guest not rebooted); QEMUs that died or exited while qvmd was down are reported
# crashed / stopped; a stale pid that now belongs to another process is never adopted or signalled;
# a QEMU killed under a running qvmd is seen at once and restarted by policy until the limit.
. "$(dirname "$0")/lib.sh"

guest_vm g1 pc
fw_vm a1 q35 "restart = on-failure
restart_limit = 3"
fw_vm a2 pc
fw_vm a3 q35
fw_vm a4 pc
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
for v in g1 a1 a2 a3 a4; do spawn "$QVMCTL" start $v; done >/dev/null
wait_spawned
check "all 5 running" [ "$(ctl list | grep -c ' running ')" -eq 5 ]
check "guest booted" wait_console g1 GUEST-READY 1 60
before=$(for v in g1 a1 a2 a3 a4; do echo "$v $(ctl --json status $v | field .pid)"; done)

kill -9 "$QVMD_PID"; wait "$QVMD_PID" 2>/dev/null; QVMD_PID=
check "qemus survive kill -9 of qvmd" [ "$(qemu_pids | wc -l)" -eq 5 ]
start_qvmd
after=$(for v in g1 a1 a2 a3 a4; do echo "$v $(ctl --json status $v | field .pid)"; done)
check "all 5 adopted with the same pids" [ "$before" = "$after" ]
check "list shows all 5 running" [ "$(ctl list | grep -c ' running ')" -eq 5 ]
check "no duplicate qemus" [ "$(qemu_pids | wc -l)" -eq 5 ]
n=0
for v in g1 a1 a2 a3 a4; do
	[ "$(ctl --json qmp $v query-status | field .running)" = true ] && n=$((n + 1))
done
check "qmp works on all 5 after re-attach" [ $n -eq 5 ]
check "the guest kept running (one GUEST-INIT)" [ "$(console g1 | grep -c GUEST-INIT)" -eq 1 ]
check "pause works on an adopted vm" ctl pause a3
check "paused state is reported" [ "$(ctl --json status a3 | field .state)" = paused ]

# While qvmd is down: a1's QEMU is killed, a2's is told to quit through its own QMP socket.
kill -9 "$QVMD_PID"; wait "$QVMD_PID" 2>/dev/null; QVMD_PID=
kill -9 "$(echo "$after" | awk '$1=="a1"{print $2}')"
printf '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n' | "$CTLRAW" "$T/run/a2/qmp.sock" >/dev/null
sleep 0.5
# a4's run directory is made to point at a live process that is not a QEMU (a reused pid).
a4pid=$(echo "$after" | awk '$1=="a4"{print $2}')
kill -9 "$a4pid"
sleep 0.3
sleep 300 &
IMPOSTOR=$!
st=$(awk '{print $22}' /proc/$IMPOSTOR/stat)
printf '{"pid":%d,"starttime":%s,"started_at_ms":0}' "$IMPOSTOR" "$st" >"$T/run/a4/state.json"
echo "$IMPOSTOR" >"$T/run/a4/qemu/qemu.pid"
start_qvmd
check "a1 (killed while qvmd was down) is reported crashed" \
	contains "$(ctl --json status a1)" "died while qvmd was not running"
check "a2 (quit while qvmd was down) is reported stopped" [ "$(ctl --json status a2 | field .state)" = stopped ]
check "a4 pointing at an unrelated process is not adopted (no pid)" [ -z "$(ctl --json status a4 | field .pid)" ]
check "the unrelated process was not signalled" kill -0 $IMPOSTOR
check "a4's stale run directory is cleaned up" [ ! -e "$T/run/a4" ]
check "restart policy brings a1 back" wait_state a1 running 10
check "a2's run directory is cleaned up" [ ! -e "$T/run/a2" ]
kill $IMPOSTOR

# A QEMU killed under a running qvmd: crashed at once, restarted with back-off, up to the limit.
"$QVMCTL" --json events a1 >"$T/events.log" 2>&1 &
EV=$!
sleep 0.3
p=$(ctl --json status a1 | field .pid)
t0=$(date +%s%3N)
kill -9 "$p"
check "crash noticed" wait_state a1 crashed 5
t1=$(awk -F'"ts":' '/"state":"crashed"/ {split($2, a, /[,}]/); print a[1]; exit}' "$T/events.log")
check "crashed reported within 100 ms of the kill ($((${t1:-0} - t0)) ms)" \
	[ -n "$t1" ] && [ $((t1 - t0)) -ge 0 ] && [ $((t1 - t0)) -le 100 ]
check "restarted by policy" wait_state a1 running 10
p=$(ctl --json status a1 | field .pid)
kill -9 "$p"
check "... running again" wait_state a1 running 10
p=$(ctl --json status a1 | field .pid)
kill -9 "$p"
check "crashed again" wait_state a1 crashed 5
sleep 5
check "limit reached: stays crashed" [ "$(ctl --json status a1 | field .state)" = crashed ]
check "status says the restart limit was reached" contains "$(ctl --json status a1 | field .last_exit.text)" "restart limit"
check "status counts restarts" [ "$(ctl --json status a1 | field .restarts)" -ge 2 ]
kill $EV 2>/dev/null
finish
