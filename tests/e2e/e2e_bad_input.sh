#!/bin/sh
# Bad input at every door: unknown vms, double start, powerdown of a stopped vm, malformed and
# oversized control requests, a client that sends half a line and hangs, bad definitions. Each gets
# a clear error; the daemon and the running vm are unaffected.
. "$(dirname "$0")/lib.sh"

fw_vm ok1 pc
printf '[vm]\nname = broken\nmemory = 12X\n' >"$T/vms/broken.ini"
fw_vm badcpu q35 "cpu = no-such-cpu-model"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "a bad definition is reported with file:line" grep -q "broken.ini:3: \[vm\] memory" "$T/qvmd.log"
check "the good vm loaded anyway" contains "$(ctl list)" ok1
check "start ok1" ctl start ok1
pid=$(ctl --json status ok1 | field .pid)

out=$(ctl status nosuch 2>&1); rc=$?
check "unknown vm: exit 1, not-found ($out)" failed_with $rc "$out" "no such vm"
out=$(ctl start ok1 2>&1); rc=$?
check "double start: exit 1, already running ($out)" failed_with $rc "$out" already
out=$(ctl start badcpu 2>&1); rc=$?
check "qemu exiting during start: exit 1 with its stderr tail ($out)" failed_with $rc "$out" "no-such-cpu-model"
check "... and the vm is stopped, not running" [ "$(ctl --json status badcpu | field .state)" = stopped ]
check "... and its run directory is gone" [ ! -e "$T/run/badcpu" ]
out=$(ctl frobnicate 2>&1); rc=$?
check "unknown verb: exit 2" [ $rc -eq 2 ]
out=$(ctl -s "$T/nope.sock" list 2>&1); rc=$?
check "unreachable daemon: exit 3" [ $rc -eq 3 ]

out=$(printf 'this is not json\n' | "$CTLRAW" "$SOCK")
check "malformed JSON gets invalid ($out)" contains "$out" '"code":"invalid"'
out=$(printf '{"id":7,"cmd":"launch-missiles"}\n' | "$CTLRAW" "$SOCK")
check "unknown command gets invalid with its id" contains "$out" '"id":7,"ok":false,"error":{"code":"invalid","message":"unknown command'
out=$(printf '[1,2]\n{"cmd":5}\n{"cmd":"status","vm":3}\n{"id":1,"cmd":"list"}\n' | "$CTLRAW" "$SOCK")
check "non-object and mistyped requests each get an error, the next one an answer" \
	[ "$(echo "$out" | grep -c '"ok":false')" -eq 3 ] && [ "$(echo "$out" | grep -c '"ok":true')" -eq 1 ]
head -c 2000000 /dev/zero | tr '\0' 'a' >"$T/big"
out=$("$CTLRAW" "$SOCK" <"$T/big")
check "oversized request gets too-large and the connection closes" contains "$out" too-large
printf '{"id":1,"cmd":"li' | "$CTLRAW" "$SOCK" --hang 3 &
HANG=$!
sleep 0.3
t0=$(date +%s%N)
check "a half-written request does not block others" ctl list
t1=$(date +%s%N)
check "... and they answer promptly ($(((t1 - t0) / 1000000)) ms)" [ $(((t1 - t0) / 1000000)) -lt 1000 ]
kill $HANG 2>/dev/null
wait $HANG 2>/dev/null

# A peer that is not root, qvmd's user or in socket_group: the socket is opened up on purpose so
# that the daemon's SO_PEERCRED check, not the file mode, is what refuses it.
chmod 0711 "$T" "$T/run"
chmod 0666 "$SOCK"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$QVMCTL" list 2>&1); rc=$?
check "an unprivileged peer is denied by the daemon ($out)" failed_with $rc "$out" "permission denied"
chmod 0660 "$SOCK"

check "daemon still alive" kill -0 "$QVMD_PID"
check "the vm kept running, same pid" [ "$(ctl --json status ok1 | field .pid)" = "$pid" ]
out=$("$QVMD" -n -c "$T/qvmd.conf" 2>&1); rc=$?
check "qvmd -n reports the bad file and exits non-zero" [ $rc -ne 0 ] && contains "$out" "broken.ini:3"
check "kill ok1" ctl kill ok1
finish
