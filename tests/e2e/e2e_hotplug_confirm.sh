#!/bin/sh
# An attach tells the truth at every moment of a VM's life: right after start (the firmware has not
# numbered the root ports' buses yet, so query-pci does not list the device), right after reset,
# while paused. Presence comes from QEMU's device model (QOM); the PCI address follows once the
# firmware has run. Firmware-only VMs on q35 and pc (KVM when usable, else TCG; TCG explicitly
# too when KVM is usable), a port filled behind qvmd's back right after start, and the Linux test
# guest attached to at once after start.
. "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-20}
qemu-img create -q -f qcow2 "$T/images/d1.qcow2" 16M
qemu-img create -q -f qcow2 "$T/images/d2.qcow2" 16M
qemu-img create -q -f qcow2 "$T/images/d3.qcow2" 16M
qemu-img create -q -f qcow2 "$T/images/g1.qcow2" 16M

VMS="fq fp"
fw_vm fq q35
fw_vm fp pc
if [ "$FW_ACCEL" = kvm ]; then
	fw_vm tq q35
	fw_vm tp pc
	sed -i 's/^accel = kvm/accel = tcg/' "$T/vms/tq.ini" "$T/vms/tp.ini"
	VMS="$VMS tq tp"
fi
guest_vm gl q35
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }

# peripheral VM ID: QEMU's device model has a device with this id.
peripheral() { contains "$(jctl qmp "$1" qom-list '{"path":"/machine/peripheral"}')" "\"name\":\"$2\""; }
# live_in_devices VM ID: `devices` lists ID as live.
live_in_devices() { jctl devices "$1" | grep -q "{\"id\":\"$2\",[^}]*\"live\":true"; }
quiet() { "$@" >/dev/null; }
# devices_has VM ID KEY VALUE-PREFIX: `devices` shows ID with "KEY":"VALUE-PREFIX...
devices_has() { jctl devices "$1" | grep -q "{\"id\":\"$2\",[^}]*\"$3\":\"$4"; }

for vm in $VMS; do
	bad=0
	r=0
	while [ $r -lt "$ROUNDS" ]; do
		r=$((r + 1))
		out=$(ctl start $vm 2>&1 && ctl attach-disk $vm d1 --file "$T/images/d1.qcow2" 2>&1)
		if [ $? -ne 0 ]; then
			bad=$((bad + 1)); echo "# $vm round $r: $out"
		elif ! live_in_devices $vm d1 || ! peripheral $vm d1; then
			bad=$((bad + 1)); echo "# $vm round $r: d1 not live: $(jctl devices $vm)"
		fi
		# A NIC every other round (netdev + device in the same two batches).
		if [ $((r % 2)) -eq 0 ]; then
			out=$(ctl attach-net $vm n1 --restrict 2>&1) || {
				bad=$((bad + 1)); echo "# $vm round $r: attach-net: $out"; }
		fi
		ctl kill $vm >/dev/null 2>&1
	done
	check "$vm: $ROUNDS start-then-attach rounds: every attach exits 0, devices and QOM show it" \
		[ $bad -eq 0 ]
done

# Right after reset, and paused right after reset (the firmware has not run again yet); the
# address fills in once the firmware ran.
for vm in fq fp; do
	ctl start $vm >/dev/null
	out=$(ctl reset $vm 2>&1 && ctl attach-disk $vm d2 --file "$T/images/d2.qcow2" 2>&1)
	check "$vm: attach right after reset ($out)" [ $? -eq 0 ]
	check "$vm: devices shows it live" live_in_devices $vm d2
	out=$(ctl reset $vm 2>&1 && ctl pause $vm 2>&1 &&
		ctl attach-disk $vm d3 --file "$T/images/d3.qcow2" 2>&1)
	check "$vm: attach while paused right after reset ($out)" [ $? -eq 0 ]
	check "$vm: devices shows it live" live_in_devices $vm d3
	check "$vm: resume" quiet ctl resume $vm
	n=0
	while ! devices_has $vm d3 pci_addr 0 && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
	check "$vm: devices shows its PCI address once the firmware numbered the bus" \
		devices_has $vm d3 pci_addr 0
	ctl kill $vm >/dev/null
done

# A device put on the first spare port behind qvmd's back right after reset (query-pci cannot
# see it yet): that port counts as busy, the disk goes onto another one.
ctl start fq >/dev/null
ctl reset fq >/dev/null
ctl qmp fq device_add '{"driver":"virtio-rng-pci","id":"rng","bus":"hp.0"}' >/dev/null
out=$(ctl attach-disk fq d1 --file "$T/images/d1.qcow2" 2>&1)
check "fq: attach with hp.0 taken behind qvmd's back ($out)" [ $? -eq 0 ]
bus=$(jctl qmp fq qom-get '{"path":"/machine/peripheral/d1","property":"parent_bus"}')
port=$(printf '%s\n' "$bus" | sed -n 's|.*/machine/peripheral/\(hp\.[0-9]*\)/hp\.[0-9]*.*|\1|p')
check "... it went onto another port than hp.0 ($bus)" [ -n "$port" -a "$port" != hp.0 ]
check "... and devices says which ($port)" devices_has fq d1 bus "$port\""
ctl kill fq >/dev/null

# The Linux guest: start, then attach at once; the guest sees the disk.
out=$(ctl start gl 2>&1 && ctl attach-disk gl g1 --file "$T/images/g1.qcow2" 2>&1)
check "gl: start then attach at once ($out)" [ $? -eq 0 ]
check "gl: devices shows it live" live_in_devices gl g1
check "gl: the guest sees the disk" wait_console gl "GUEST-EVENT add block/vd" 1 120
ctl kill gl >/dev/null

finish
