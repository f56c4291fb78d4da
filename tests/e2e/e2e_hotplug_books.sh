#!/bin/sh
# The daemon's books (devices.json, the definition file) and QEMU never disagree silently:
# live and persistent device lists can be brought back in line on a running VM (re-attach of a
# definition's device detached live, detach --persist of a device only in the file), --persist
# is refused when the definition file is gone, and with run_dir on a full file system an attach
# or detach is refused before QEMU is touched (then works once there is space, and survives a
# daemon restart).
. "$(dirname "$0")/lib.sh"

# run_dir on its own small tmpfs (tests run as root); unmounted on every exit path.
mount -t tmpfs -o size=1m qvmd-e2e "$T/run" || { not_ok "mount a tmpfs as run_dir"; finish; exit 1; }
trap 'cleanup 2>/dev/null; umount -l "$T/run" 2>/dev/null; [ "$FAILED" -gt 0 ] || rm -rf "$T"' EXIT

for v in f1 f3; do qemu-img create -q -f qcow2 "$T/images/$v-d1.qcow2" 16M; done
qemu-img create -q -f qcow2 "$T/images/d2.qcow2" 16M
guest_vm gb q35 "$(printf '[net lan0]\ntype = user\nrestrict = yes')"
fw_vm f1 q35
fw_vm f2 q35
fw_vm f3 pc
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }

quiet() { "$@" >/dev/null; }
# absent VM ID...: `devices` lists none of the ids.
absent() {
	l=$(jctl devices "$1"); shift
	for id in "$@"; do lacks "$l" "\"id\":\"$id\"" || return 1; done
}
in_devices() { jctl devices "$1" | grep -q "{\"id\":\"$2\",[^}]*$3"; }
# qemu_view VM: QEMU's devices and block nodes, sorted (to compare before/after).
qemu_view() {
	jctl qmp "$1" qom-list '{"path":"/machine/peripheral"}' | grep -o '"name":"[^"]*"' | sort
	jctl qmp "$1" query-named-block-nodes | grep -o '"node-name":"[^"]*"' | sort
	jctl qmp "$1" human-monitor-command '{"command-line":"info network"}' | grep -o '[a-z0-9]*\.net'
}

# ---- live and persistent lists back in line (the Linux guest releases what it is asked to) ----
spawn quiet ctl start gb
for v in f1 f2 f3; do spawn quiet ctl start $v; done
wait_spawned
check "gb: guest ready" wait_console gb GUEST-READY 1 120
check "gb: detach lan0 (live only)" quiet ctl detach gb lan0
check "gb: the guest saw it go" wait_console gb "GUEST-EVENT remove net/eth" 1 20
check "gb: devices: lan0 not live, still in the definition" in_devices gb lan0 '"live":false,"persistent":true'
out=$(ctl attach-net gb lan0 --restrict 2>&1)
check "gb: attach-net lan0 again: its id is free live ($out)" [ $? -eq 0 ]
check "gb: the guest sees it again" wait_console gb "GUEST-EVENT add net/eth" 2 20
check "gb: devices: lan0 live and persistent" in_devices gb lan0 '"live":true,"persistent":true'
out=$(ctl attach-net gb lan0 --restrict 2>&1); rc=$?
check "gb: a second attach of the live lan0 is refused ($out)" failed_with $rc "$out" "already in use"
out=$(ctl attach-net gb lan9 --restrict --persist 2>&1)
check "gb: attach-net --persist ($out)" [ $? -eq 0 ]
# The guest polls its devices: let it see lan9 come before it goes, or it sees neither.
check "gb: the guest sees lan9" wait_console gb "GUEST-EVENT add net/eth" 3 20
out=$(ctl detach gb lan9 2>&1)
check "gb: ... then detach live only ($out)" [ $? -eq 0 ]
check "gb: the guest saw lan9 go" wait_console gb "GUEST-EVENT remove net/eth" 2 20
out=$(ctl attach-net gb lan9 --restrict --persist 2>&1); rc=$?
check "gb: --persist of an id already in the file is refused up front ($out)" \
	failed_with $rc "$out" "already in the definition"
check "gb: ... and nothing was attached" in_devices gb lan9 '"live":false'
check "gb: detach lan0 (live only) again" quiet ctl detach gb lan0
check "gb: the guest saw it go" wait_console gb "GUEST-EVENT remove net/eth" 3 20
out=$(ctl detach gb lan0 2>&1); rc=$?
check "gb: detach of a file-only device without --persist says how ($out)" \
	failed_with $rc "$out" "use --persist"
out=$(ctl --json detach gb lan0 --persist 2>&1)
check "gb: detach --persist of a file-only device works ($out)" [ $? -eq 0 ]
check "gb: ... says it was not live" contains "$(printf '%s' "$out" | tr -d ' \n')" '"live":false'
check "gb: ... and removed it from the file only" [ "$(grep -c '^\[net lan0\]' "$T/vms/gb.ini")" -eq 0 ]
check "gb: devices no longer lists lan0" absent gb lan0

# ---- --persist without a definition file: refused before QEMU is touched ----
view0=$(qemu_view f2)
rm "$T/vms/f2.ini"
ctl reload >/dev/null
out=$(ctl attach-disk f2 x1 --file "$T/images/d2.qcow2" --persist 2>&1); rc=$?
check "f2: attach-disk --persist with the file removed is refused ($out)" \
	failed_with $rc "$out" "vm f2: definition file was removed; cannot persist"
out=$(ctl attach-net f2 x2 --restrict --persist 2>&1); rc=$?
check "f2: attach-net --persist likewise ($out)" \
	failed_with $rc "$out" "vm f2: definition file was removed; cannot persist"
check "f2: QEMU unchanged" [ "$view0" = "$(qemu_view f2)" ]
check "f2: attach without --persist still works" quiet ctl attach-disk f2 x1 --file "$T/images/d2.qcow2"

# ---- run_dir full: refused before QEMU is touched, works once there is space ----
for v in f1 f3; do
	view0=$(qemu_view $v)
	dd if=/dev/zero of="$T/run/fill" bs=4k 2>/dev/null
	out=$(ctl attach-disk $v d1 --file "$T/images/$v-d1.qcow2" 2>&1); rc=$?
	check "$v: attach-disk with run_dir full is refused ($out)" failed_with $rc "$out" "vm $v: cannot record d1"
	out=$(ctl attach-net $v n1 --restrict 2>&1); rc=$?
	check "$v: attach-net likewise ($out)" failed_with $rc "$out" "vm $v: cannot record n1"
	check "$v: QEMU unchanged (no device, block node or netdev)" [ "$view0" = "$(qemu_view $v)" ]
	check "$v: devices lists neither" absent $v d1 n1
	rm -f "$T/run/fill"
	check "$v: with space again, attach-disk works" quiet ctl attach-disk $v d1 --file "$T/images/$v-d1.qcow2"
	check "$v: ... and attach-net" quiet ctl attach-net $v n1 --restrict
	# A detach whose record cannot be written is refused too (device_del not sent).
	dd if=/dev/zero of="$T/run/fill" bs=4k 2>/dev/null
	out=$(ctl detach $v d1 --timeout 1s 2>&1); rc=$?
	check "$v: detach with run_dir full is refused ($out)" failed_with $rc "$out" "nothing was changed"
	rm -f "$T/run/fill"
	check "$v: ... d1 is still live, not being removed" in_devices $v d1 '"pending_removal":false'
done

# The books survive a daemon restart: the devices are known, their ids still taken.
stop_qvmd
start_qvmd || { not_ok "qvmd starts again"; finish; exit 1; }
for v in f1 f3; do
	check "$v: after a restart devices lists d1 live" in_devices $v d1 '"live":true'
	check "$v: ... and n1" in_devices $v n1 '"live":true'
	out=$(ctl attach-disk $v d1 --file "$T/images/$v-d1.qcow2" 2>&1); rc=$?
	check "$v: re-attach says the id is in use ($out)" failed_with $rc "$out" "already in use"
	out=$(ctl detach $v d1 --timeout 1s 2>&1); rc=$?
	check "$v: detach finds it (a firmware VM never releases it: pending) ($out)" \
		failed_with $rc "$out" "removal pending"
done
for v in gb f1 f2 f3; do ctl kill $v >/dev/null 2>&1; done

finish
