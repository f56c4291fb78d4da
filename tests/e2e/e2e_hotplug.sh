#!/bin/sh
# Hot-plug from the CLI: disks and NICs into the real Linux guest on q35 and pc (the guest sees them
# come and go), slot exhaustion, rollback of a failed device_add, removal a guest never completes,
# bad input, --persist round trips, and 50 attach/detach cycles without leaking anything.
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f qcow2 "$T/images/a.qcow2" 64M
qemu-img create -q -f qcow2 "$T/images/b.qcow2" 64M
qemu-img create -q -f qcow2 "$T/images/c.qcow2" 64M
qemu-img create -q -f raw "$T/images/r.raw" 16M
guest_vm gq q35 "hotplug_slots = 3"
guest_vm gp pc
fw_vm fw q35 "hotplug_slots = 5"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
for v in gq gp fw; do spawn "$QVMCTL" start $v; done >/dev/null
wait_spawned
check "guests ready" wait_console gq GUEST-READY 1 90
check "pc guest ready" wait_console gp GUEST-READY 1 90
"$QVMCTL" --json events >"$T/events.log" 2>&1 &
EV=$!

for vm in gq gp; do
	out=$(ctl attach-disk $vm d1 --file "$T/images/new-$vm.qcow2" --create 32M 2>&1)
	check "$vm: attach-disk --create ($out)" [ $? -eq 0 ]
	check "$vm: the guest sees the disk" wait_console $vm "GUEST-EVENT add block/vd" 1 20
	out=$(ctl attach-net $vm n1 --restrict 2>&1)
	check "$vm: attach-net ($out)" [ $? -eq 0 ]
	check "$vm: the guest sees the NIC" wait_console $vm "GUEST-EVENT add net/eth" 1 20
	check "$vm: devices lists both live with PCI addresses" \
		[ "$(jctl devices $vm | grep -o '"pci_addr":"[0-9a-f:.]*"' | wc -l)" -ge 2 ]
	check "$vm: detach disk" ctl detach $vm d1
	check "$vm: the guest saw the disk go" wait_console $vm "GUEST-EVENT remove block/vd" 1 20
	check "$vm: detach nic" ctl detach $vm n1
	check "$vm: the guest saw the NIC go" wait_console $vm "GUEST-EVENT remove net/eth" 1 20
	check "$vm: DEVICE_DELETED events for both" \
		[ "$(grep "\"vm\":\"$vm\"" "$T/events.log" | grep DEVICE_DELETED | grep -c '"device"')" -ge 2 ]
	check "$vm: attach again into the freed slot" ctl attach-disk $vm d2 --file "$T/images/new-$vm.qcow2"
	check "$vm: the guest sees it" wait_console $vm "GUEST-EVENT add block/vd" 2 20
	check "$vm: detach it" ctl detach $vm d2
done

# A removal the guest completes while qvmd is away: the next qvmd finishes it by itself.
qemu-img create -q -f qcow2 "$T/images/away.qcow2" 16M
adds=$(console gq | grep -c "GUEST-EVENT add block")
removes=$(console gq | grep -c "GUEST-EVENT remove block")
check "gq: attach disk 'away'" ctl attach-disk gq away --file "$T/images/away.qcow2"
check "gq: the guest sees it" wait_console gq "GUEST-EVENT add block/vd" $((adds + 1)) 20
check "pause gq (its guest cannot release anything now)" ctl pause gq
out=$(ctl detach gq away --timeout 1s 2>&1); rc=$?
check "detach of the paused guest's disk: removal pending ($out)" failed_with $rc "$out" "removal pending"
stop_qvmd
printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"cont"}' |
	"$CTLRAW" "$T/run/gq/qmp.sock" --hang 1
check "gq resumed behind qvmd's back: the guest lets the disk go" \
	wait_console gq "GUEST-EVENT remove block/vd" $((removes + 1)) 20
start_qvmd || { not_ok "qvmd starts again"; finish; exit 1; }
released() {
	lacks "$(jctl devices gq)" '"id":"away"' &&
		lacks "$(jctl qmp gq query-named-block-nodes)" '"away.'
}
n=0
while ! released && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
check "the next qvmd finished the removal: no device 'away', no block nodes" released
check "... and says so" grep -q "away left the guest while qvmd was away" "$T/qvmd.log"
check "gq runs" [ "$(jctl status gq | field .state)" = running ]
"$QVMCTL" --json events >>"$T/events.log" 2>&1 &
EV=$!

# Slot exhaustion on a firmware-only VM (5 spare ports).
nodes0=$(ctl --json qmp fw query-named-block-nodes | field . | grep -o '"node-name":"[^"]*"' | sort)
ctl attach-disk fw x1 --file "$T/images/a.qcow2" >/dev/null &&
	ctl attach-disk fw x2 --file "$T/images/b.qcow2" >/dev/null &&
	ctl attach-disk fw x3 --file "$T/images/c.qcow2" >/dev/null &&
	ctl attach-net fw y1 --restrict >/dev/null && ctl attach-net fw y2 --restrict >/dev/null
check "three disks and two NICs attached to the firmware VM" [ $? -eq 0 ]
out=$(ctl attach-net fw y3 2>&1); rc=$?
check "sixth device: no free slot, says how to fix it ($out)" failed_with $rc "$out" hotplug_slots
# The backend goes to QEMU together with the port check (one round trip): it must be gone again.
netinfo=$(ctl qmp fw human-monitor-command '{"command-line":"info network"}')
check "info network lists the attached NICs' netdevs" contains "$netinfo" y2.net
check "... and not the refused one's (removed again)" lacks "$netinfo" y3.net
nodes_full=$(ctl --json qmp fw query-named-block-nodes | field . | grep -o '"node-name":"[^"]*"' | sort)
out=$(ctl attach-disk fw x4 --file "$T/images/r.raw" --format raw 2>&1); rc=$?
check "a disk when no slot is free: refused ($out)" failed_with $rc "$out" hotplug_slots
check "... and its block nodes are removed again" \
	[ "$nodes_full" = "$(ctl --json qmp fw query-named-block-nodes | field . | grep -o '"node-name":"[^"]*"' | sort)" ]
out=$(ctl detach fw x1 --timeout 1s 2>&1); rc=$?
check "a guest that never releases: timeout ($out)" failed_with $rc "$out" "removal pending"
check "devices shows removal pending" contains "$(jctl devices fw)" '"id":"x1","kind":"disk"'
check "... flagged pending" [ "$(jctl devices fw | grep -o '"pending_removal":true' | wc -l)" -eq 1 ]
out=$(ctl detach fw x1 2>&1); rc=$?
check "detaching it again while pending is refused ($out)" failed_with $rc "$out" "busy: removal of x1 in progress"
out=$(ctl attach-net fw y4 2>&1); rc=$?
check "its slot stays taken until DEVICE_DELETED" failed_with $rc "$out" hotplug_slots

# Rollback: QEMU refuses device_add (its own device already has the id): nothing is left behind.
ctl powerdown fw --timeout 1s >/dev/null
ctl start fw >/dev/null
ctl qmp fw device_add '{"driver":"virtio-rng-pci","id":"dupe","bus":"hp.4"}' >/dev/null
nodes1=$(ctl --json qmp fw query-named-block-nodes | field . | grep -o '"node-name":"[^"]*"' | sort)
out=$(ctl attach-disk fw dupe --file "$T/images/gone.qcow2" --create 16M 2>&1); rc=$?
check "device_add failure reported with QEMU's words ($out)" failed_with $rc "$out" "Duplicate"
nodes2=$(ctl --json qmp fw query-named-block-nodes | field . | grep -o '"node-name":"[^"]*"' | sort)
check "block nodes rolled back" [ "$nodes1" = "$nodes2" ]
check "the image made by --create is removed again" [ ! -e "$T/images/gone.qcow2" ]
check "the vm still has its books straight (no dupe)" [ "$(jctl devices fw | grep -o dupe | wc -l)" -eq 0 ]

# Bad input.
out=$(ctl attach-disk fw z1 --file /etc/passwd --format raw 2>&1); rc=$?
check "image outside image_dirs is denied ($out)" failed_with $rc "$out" "image director"
out=$(ctl attach-disk fw z1 --file "$T/images/missing.qcow2" 2>&1); rc=$?
check "missing image file ($out)" failed_with $rc "$out" "No such file"
out=$(ctl attach-disk fw z1 --file "$T/images/r.raw" 2>&1); rc=$?
check "raw file attached as qcow2 is refused ($out)" failed_with $rc "$out" "not a qcow2"
out=$(ctl attach-disk fw z1 --file "$T/images/a.qcow2" --format raw 2>&1); rc=$?
check "qcow2 file attached as raw is refused ($out)" failed_with $rc "$out" "qcow2 image"
out=$(ctl attach-net fw z2 --mac 01:00:5e:00:00:01 2>&1); rc=$?
check "multicast MAC refused ($out)" [ $rc -ne 0 ]
out=$(ctl attach-net fw z2 --mac nonsense 2>&1); rc=$?
check "malformed MAC: usage error ($out)" [ $rc -eq 2 ]
ctl attach-net fw z3 --restrict >/dev/null
out=$(ctl attach-net fw z3 2>&1); rc=$?
check "duplicate id refused ($out)" failed_with $rc "$out" "already in use"
out=$(ctl detach fw nosuch 2>&1); rc=$?
check "detach of an unknown device ($out)" failed_with $rc "$out" "no device"
ctl kill fw >/dev/null
out=$(ctl attach-net fw z4 2>&1); rc=$?
check "stopped vm without --persist ($out)" failed_with $rc "$out" "not running"

# --persist round trip on the pc guest; comments and layout of the file are kept.
cp "$T/vms/gp.ini" "$T/gp.orig"
printf '; operator comment\n' >>"$T/vms/gp.ini"
cp "$T/vms/gp.ini" "$T/gp.commented"
check "attach-disk --persist" ctl attach-disk gp pd --file "$T/images/b.qcow2" --persist
check "attach-net --persist" ctl attach-net gp pn --restrict --persist
check "sections written" [ "$(grep -c '^\[disk pd\]\|^\[net pn\]' "$T/vms/gp.ini")" -eq 2 ]
check "definition loads" "$QVMD" -n -c "$T/qvmd.conf"
ctl powerdown gp >/dev/null
check "start after persist" ctl start gp
check "persisted devices present via query-pci" \
	[ "$(jctl qmp gp query-pci | grep -o '"qdev_id":"p[dn]"' | wc -l)" -eq 2 ]
check "guest ready" wait_console gp GUEST-READY 2 90
check "detach --persist disk" ctl detach gp pd --persist
check "detach --persist nic" ctl detach gp pn --persist
check "sections gone, comments and layout unchanged" cmp -s "$T/vms/gp.ini" "$T/gp.commented"

# 50 cycles of three disks and two NICs on the pc guest: nothing leaks.
before_nodes=$(ctl --json qmp gp query-named-block-nodes | field . | grep -o '"node-name":"[^"]*"' | sort)
before_pci=$(jctl qmp gp query-pci | grep -o '"qdev_id":"[^"]*"' | sort)
fails=0
for i in $(seq 1 ${HOTPLUG_CYCLES:-50}); do
	for d in a b c; do ctl attach-disk gp c$d --file "$T/images/$d.qcow2" >/dev/null || fails=$((fails + 1)); done
	for n in 1 2; do ctl attach-net gp cn$n --restrict >/dev/null || fails=$((fails + 1)); done
	for id in ca cb cc cn1 cn2; do ctl detach gp $id >/dev/null || fails=$((fails + 1)); done
done
check "50 attach/detach cycles without a failure ($fails)" [ $fails -eq 0 ]
after_nodes=$(ctl --json qmp gp query-named-block-nodes | field . | grep -o '"node-name":"[^"]*"' | sort)
after_pci=$(jctl qmp gp query-pci | grep -o '"qdev_id":"[^"]*"' | sort)
check "query-named-block-nodes unchanged" [ "$before_nodes" = "$after_nodes" ]
check "query-pci unchanged" [ "$before_pci" = "$after_pci" ]
kill $EV 2>/dev/null
finish
