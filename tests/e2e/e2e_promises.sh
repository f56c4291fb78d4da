#!/bin/sh
# Promises a deployment script relies on from day one (issue "broken promises"): one qvmd per run
# directory; a running VM whose definition was removed is never lost across a qvmd restart (and
# never gets a second QEMU); `powerdown --all` covers every VM with a QEMU or about to get one;
# `start` runs what the file says now; a vm_dir that cannot be read changes nothing; a manual start
# resets the restart counter; a paused VM is resumed for its powerdown; unknown request arguments
# are refused; `qvmd --stop` and `qvmd -n` print for people. Firmware-only VMs run with KVM when it
# is usable and under TCG (both, when KVM is usable).
. "$(dirname "$0")/lib.sh"

ACCELS=tcg
[ "$FW_ACCEL" = kvm ] && ACCELS="kvm tcg"

# A QEMU wrapper that delays its start while $T/slow exists: a VM caught in `starting`.
cat >"$T/qemu-wrap" <<WRAP
#!/bin/sh
[ -e "$T/slow" ] && sleep 3
exec qemu-system-x86_64 "\$@"
WRAP
chmod +x "$T/qemu-wrap"
echo "qemu = $T/qemu-wrap" >>"$T/qvmd.conf"

# ---- 1. two daemons on the same directories ----
fw_vm one q35
sed -i 's/^shutdown_timeout = .*/shutdown_timeout = 2s/' "$T/vms/one.ini"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
out=$(timeout 10 "$QVMD" -f -c "$T/qvmd.conf" 2>&1)
rc=$?
check "a second qvmd on the same run_dir refuses to start (rc $rc)" [ $rc -eq 1 ]
check "... naming the first one's pid ($out)" contains "$out" "pid $QVMD_PID"
check "the first qvmd still answers" ctl version
check "its control socket is still there" [ -S "$SOCK" ]
kill -9 "$QVMD_PID"; wait "$QVMD_PID" 2>/dev/null; QVMD_PID=
check "a dead qvmd leaves its lock file" [ -f "$T/run/qvmd.lock" ]
check "a stale lock from a dead qvmd does not block" start_qvmd
check "the new qvmd answers" ctl version

# ---- 2. a running VM whose definition was removed survives a qvmd restart ----
for a in $ACCELS; do
	v=lost$a
	fw_vm $v q35
	sed -i "s/^accel = .*/accel = $a/" "$T/vms/$v.ini"
done
ctl reload >/dev/null
for a in $ACCELS; do
	v=lost$a
	check "$v starts" ctl start $v
	pid=$(ctl --json status $v | field .pid)
	mv "$T/vms/$v.ini" "$T/$v.ini.away"
	ctl reload >/dev/null
	kill -9 "$QVMD_PID"; wait "$QVMD_PID" 2>/dev/null; QVMD_PID=
	start_qvmd
	check "$v: still listed after the restart" contains "$(ctl list)" $v
	check "$v: running with the same pid" [ "$(ctl --json status $v | field .pid)" = "$pid" ]
	check "$v: status says its definition was removed" [ "$(ctl --json status $v | field .definition_removed)" = true ]
	check "$v: qmp works on it" [ "$(ctl --json qmp $v query-status | field .status)" = running ]
	check "$v: devices answers" ctl devices $v
	mv "$T/$v.ini.away" "$T/vms/$v.ini"
	ctl reload >/dev/null
	check "$v: the file is back: the same vm, still running" [ "$(ctl --json status $v | field .pid)" = "$pid" ]
	out=$(ctl start $v 2>&1)
	check "$v: start does not spawn a second qemu ($out)" [ "$(pgrep -f "$T/run/$v/" | wc -l)" -eq 1 ]
	check "$v: powerdown works" ctl powerdown $v --timeout 1s
	check "$v: no qemu left" [ "$(pgrep -f "$T/run/$v/" | wc -l)" -eq 0 ]
done

# Removed, qvmd restarted, then killed: the VM is forgotten once stopped.
fw_vm gone q35
ctl reload >/dev/null
ctl start gone >/dev/null
rm "$T/vms/gone.ini"
ctl reload >/dev/null
kill -9 "$QVMD_PID"; wait "$QVMD_PID" 2>/dev/null; QVMD_PID=
start_qvmd
check "gone: adopted without a definition" [ "$(ctl --json status gone | field .state)" = running ]
check "gone: kill stops it" ctl kill gone
sleep 0.3
check "gone: forgotten once stopped" lacks "$(ctl list)" gone

# Books lost (state.json and the definition copy gone) while its QEMU runs: start re-attaches.
fw_vm books q35
ctl reload >/dev/null
ctl start books >/dev/null
pid=$(ctl --json status books | field .pid)
kill -9 "$QVMD_PID"; wait "$QVMD_PID" 2>/dev/null; QVMD_PID=
mv "$T/vms/books.ini" "$T/books.ini.away"
rm -f "$T/run/books/state.json" "$T/run/books/books.ini"
start_qvmd
mv "$T/books.ini.away" "$T/vms/books.ini"
ctl reload >/dev/null
out=$(ctl start books 2>&1)
check "books: start finds the running qemu instead of starting one ($out)" contains "$out" "already running"
check "books: exactly one qemu" [ "$(pgrep -f "$T/run/books/" | wc -l)" -eq 1 ]
check "books: re-attached to the same pid" [ "$(ctl --json status books | field .pid)" = "$pid" ]
ctl kill books >/dev/null

# ---- 3. powerdown --all covers every VM with a QEMU or about to get one ----
fw_vm p1 q35
fw_vm p2 pc
fw_vm p3 q35 "restart = on-failure
restart_limit = 5"
fw_vm p4 pc
ctl reload >/dev/null
for v in p1 p2 p3; do ctl start $v >/dev/null; done
check "p2: powerdown --no-wait with a long timeout puts it in stopping" ctl powerdown p2 --timeout 1h --no-wait
# p3 crashes twice: its next restart is 2 s away.
kill -9 "$(ctl --json status p3 | field .pid)"
wait_state p3 running 10
kill -9 "$(ctl --json status p3 | field .pid)"
wait_state p3 crashed 5
check "p3: crashed with a restart pending" [ -n "$(ctl --json status p3 | field .restart_in_ms)" ]
touch "$T/slow"
ctl start p4 >"$T/p4.out" 2>&1 &
P4=$!
sleep 0.5
check "p4: caught while starting" [ "$(ctl --json status p4 | field .state)" = starting ]
rm -f "$T/slow"
out=$(ctl --json powerdown --all --timeout 2s)
rc=$?
out=$(printf '%s' "$out" | field .)
check "powerdown --all exits 0 when every vm stopped (rc $rc)" [ $rc -eq 0 ]
wait $P4
for v in p1 p2 p3 p4; do
	check "powerdown --all reported $v" contains "$out" "\"name\":\"$v\""
done
check "p4: its start completed before the powerdown" grep -q running "$T/p4.out"
check "p2: the shorter timeout of the joined powerdown won" \
	[ "$(printf '%s' "$out" | grep -o '"name":"p2"[^}]*' | grep -o '"elapsed_ms":[0-9]*' | cut -d: -f2)" -lt 60000 ]
sleep 3
for v in p1 p2 p3 p4; do
	s=$(ctl --json status $v | field .state)
	check "$v: no qemu after powerdown --all (state $s)" [ "$(pgrep -f "$T/run/$v/" | wc -l)" -eq 0 ]
done
check "p3: its pending restart was cancelled" [ "$(ctl --json status p3 | field .state)" != running ]

# ---- 4. start runs what the file says now ----
fw_vm s1 q35
ctl reload >/dev/null
sed -i 's/^memory = 64M/memory = 80M/' "$T/vms/s1.ini"
check "status of a stopped vm sees the edited file" [ "$(ctl --json status s1 | field .definition_changed)" = true ]
echo "vcpus = two" >>"$T/vms/s1.ini"
st=$(ctl --json status s1)
check "status lists the file's errors with file:line" contains "$st" "s1.ini:"
out=$(ctl start s1 2>&1)
rc=$?
check "start refuses a definition with errors (rc $rc)" [ $rc -eq 1 ]
check "... with the file:line error ($out)" contains "$out" "s1.ini:"
check "... and starts no qemu" [ "$(pgrep -f "$T/run/s1/" | wc -l)" -eq 0 ]
sed -i '/^vcpus = two/d' "$T/vms/s1.ini"
check "the fixed file starts without a reload" ctl start s1
check "... with the edited memory" [ "$(ctl --json status s1 | field .memory_bytes)" = 83886080 ]
ctl kill s1 >/dev/null

# A comment-only edit of a running VM's file is no change (the parsed definitions are compared).
ctl start s1 >/dev/null
printf '; maintained by config management\n' >>"$T/vms/s1.ini"
out=$(jctl reload)
check "a comment-only edit is not reported changed by reload ($out)" contains "$out" '"changed":[]'
check "... nor by status" [ "$(ctl --json status s1 | field .definition_changed)" = false ]
sed -i 's/^memory = 80M/memory = 96M/' "$T/vms/s1.ini"
check "a real edit is" [ "$(ctl --json status s1 | field .definition_changed)" = true ]
ctl kill s1 >/dev/null

# ---- 5. a vm_dir that cannot be read changes nothing ----
fw_vm keep1 q35 "restart = on-failure"
ctl reload >/dev/null
ctl start keep1 >/dev/null
before=$(ctl list | wc -l)
mv "$T/vms" "$T/vms.away"
out=$(ctl --json reload 2>&1)
check "reload of an unreadable vm_dir reports it ($out)" contains "$out" "cannot read the vm directory"
check "... and removes no vm" [ "$(ctl list | wc -l)" -eq "$before" ]
mv "$T/vms.away" "$T/vms"
kill -9 "$(ctl --json status keep1 | field .pid)"
check "keep1 kept its restart policy" wait_state keep1 running 10
ctl kill keep1 >/dev/null

# ---- 6. a manual start resets the restart counter ----
fw_vm rc1 q35 "restart = on-failure
restart_limit = 1"
ctl reload >/dev/null
ctl start rc1 >/dev/null
kill -9 "$(ctl --json status rc1 | field .pid)"
check "rc1: restarted once by policy" wait_state rc1 running 10
kill -9 "$(ctl --json status rc1 | field .pid)"
sleep 2
check "rc1: limit reached, stays crashed" [ "$(ctl --json status rc1 | field .state)" = crashed ]
st=$(jctl status rc1)
check "rc1: last_exit is structured: killed by signal 9, a crash ($st)" contains "$st" '"last_exit":{"kind":"signal","signal":9,"cause":"crash","text":"killed by signal 9'
check "rc1: a VM without a QEMU has pid null" contains "$st" '"pid":null'
check "rc1: ... and uptime null" contains "$st" '"uptime_ms":null'
check "rc1: a manual start" ctl start rc1
kill -9 "$(ctl --json status rc1 | field .pid)"
check "rc1: the policy restarts it again after a manual start" wait_state rc1 running 10
ctl kill rc1 >/dev/null

# ---- 7. unknown request arguments; qvmd -n and --stop output ----
out=$(printf '{"id":1,"cmd":"powerdown","vm":"one","args":{"timeout":1000}}\n' | "$CTLRAW" "$SOCK")
check "an unknown args key is invalid ($out)" contains "$out" '"code":"invalid"'
check "... naming the key" contains "$out" "args.timeout"
out=$(printf '{"id":2,"cmd":"attach-net","vm":"one","args":{"id":"t1","type":"tap","ifname":"tap9","restrict":true}}\n' | "$CTLRAW" "$SOCK")
check "attach-net of a tap with restrict is refused as --persist would ($out)" contains "$out" '"code":"invalid"'
check "... saying why" contains "$out" "restrict"
for ms in 0 999 3600001 9200000000000000000; do
	out=$(printf '{"id":3,"cmd":"powerdown","vm":"one","args":{"timeout_ms":%s}}\n' $ms | "$CTLRAW" "$SOCK")
	check "powerdown timeout_ms $ms is out of range ($out)" contains "$out" '"code":"invalid"'
done
printf '[vm]\nname = bad1\nmemory = lots\n' >"$T/vms/bad1.ini"
out=$("$QVMD" -n -c "$T/qvmd.conf" 2>&1)
check "qvmd -n prints each error once ($out)" [ "$(printf '%s\n' "$out" | grep -c "bad1.ini:")" -eq 1 ]
rm -f "$T/vms/bad1.ini"
out=$("$QVMD" -h)
check "qvmd -h says that -f is the default" contains "$out" "default"
ctl start one >/dev/null
sed -i 's/^\[qvmd\]$/[qvmd]\non_daemon_stop = powerdown/' "$T/qvmd.conf"
out=$("$QVMD" --stop -c "$T/qvmd.conf" 2>&1)
check "qvmd --stop prints one line per vm, not the protocol ($out)" contains "$out" "vm one: stopped"
check "... and no raw JSON" lacks "$out" '{"id"'

finish
