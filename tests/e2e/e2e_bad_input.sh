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
# The half-written request's client hangs for 3 s: a daemon blocked on it would not answer
# this within that time (a liveness check, not a speed target).
check "a half-written request does not block others" timeout 2 "$QVMCTL" list
kill $HANG 2>/dev/null
wait $HANG 2>/dev/null

# Strict input: every string whole (no NUL), valid UTF-8 only, ids echoed exactly or refused.
out=$(printf '{"id":1,"cmd":"status\\u0000junk","vm":"ok1"}\n' | "$CTLRAW" "$SOCK")
check "a NUL inside cmd is invalid ($out)" contains "$out" '"code":"invalid","message":"malformed request: a string contains a NUL character"'
out=$(printf '{"id":2,"cmd":"status","vm":"ok1\\u0000../../etc"}\n' | "$CTLRAW" "$SOCK")
check "a NUL inside vm is invalid ($out)" contains "$out" '"id":2,"ok":false,"error":{"code":"invalid"'
out=$(printf '{"id":3,"cmd":"attach-disk","vm":"ok1","args":{"id":"d\\u0000x","file":"/x"}}\n' | "$CTLRAW" "$SOCK")
check "a NUL inside an args string is invalid ($out)" contains "$out" '"code":"invalid"'
out=$(printf '{"id":"\377\376","cmd":"version"}\n{"id":4,"cmd":"st\351tus"}\n' | "$CTLRAW" "$SOCK")
check "non-UTF-8 bytes are invalid, never echoed ($out)" [ "$(echo "$out" | grep -c '"code":"invalid","message":"malformed request: not valid UTF-8"')" -eq 2 ]
check "... and the replies are valid UTF-8" sh -c "printf '%s' '$out' | iconv -f UTF-8 -t UTF-8 >/dev/null"
for id in NaN Infinity 1.5 99999999999999999999999 true '[1]' '{}'; do
	out=$(printf '{"id":%s,"cmd":"version"}\n' "$id" | "$CTLRAW" "$SOCK")
	check "id $id is invalid and not echoed ($out)" contains "$out" '{"id":null,"ok":false,"error":{"code":"invalid"'
done
out=$(printf '{"id":"a-1","cmd":"version"}\n{"id":9007199254740991,"cmd":"version"}\n' | "$CTLRAW" "$SOCK")
check "a string id is echoed exactly ($out)" contains "$out" '"id":"a-1","ok":true'
check "an integer id up to 2^53-1 is echoed exactly" contains "$out" '"id":9007199254740991,"ok":true'
out=$(printf '{"id":5,"cmd":"qmp","vm":"ok1","args":{"command":"x","arguments":{"a":NaN}}}\n' | "$CTLRAW" "$SOCK")
check "a number that is not finite is invalid anywhere ($out)" contains "$out" "not finite"
out=$(printf '{"id":6,"cmd":"version"}' | "$CTLRAW" "$SOCK")
check "a last request without a newline is answered ($out)" contains "$out" '"id":6,"ok":true'

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
check "qvmd -n exits non-zero on a bad file" [ $rc -ne 0 ]
check "... and reports it with file:line" contains "$out" "broken.ini:3"
check "kill ok1" ctl kill ok1
finish
