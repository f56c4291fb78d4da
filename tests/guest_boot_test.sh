#!/bin/sh
# test_guest_boots: boots the test guest (contrib/guest) with plain qemu-system-x86_64 on q35 and on pc
# and checks every marker of its /init: GUEST-INIT and GUEST-READY at boot, GUEST-EVENT add/remove for
# a hot-plugged virtio disk and NIC (PCIe root port on q35, ACPI hotplug on pci.0 on pc) together with
# QEMU's two DEVICE_DELETED events per unplug, GUEST-INIT/GUEST-READY again after system_reset, and
# GUEST-POWERDOWN plus a clean QEMU exit with SHUTDOWN reason guest-shutdown after system_powerdown.
#
# Usage: guest_boot_test.sh QEMU GUEST_DIR
# QMP runs over a pipe chardev (two FIFOs), so no socket client is needed.
set -eu

QEMU=$1
GUEST=$2
TIMEOUT=${QVMD_GUEST_TIMEOUT:-90} # seconds per expected marker: TCG on 2 busy cores is slow
APPEND="console=ttyS0 quiet panic=-1"

# A Linux guest needs a real KVM; the software kvm_pvm one does not deliver ACPI events to it.
ACCEL=tcg
if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then
	ACCEL=kvm
fi
ACCEL=${QVMD_GUEST_ACCEL:-$ACCEL}

D=$(mktemp -d)
QPID=""
CATPID=""
cleanup() {
	[ -n "$QPID" ] && kill -9 "$QPID" 2>/dev/null
	[ -n "$CATPID" ] && kill "$CATPID" 2>/dev/null
	rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

fail() {
	echo "FAIL [$M]: $*" >&2
	if [ -f "$D/serial" ]; then
		echo "--- serial:" >&2
		cat "$D/serial" >&2
	fi
	if [ -f "$D/qmp.log" ]; then
		echo "--- qmp:" >&2
		cat "$D/qmp.log" >&2
	fi
	exit 1
}
now_ms() {
	echo $(($(date +%s%N) / 1000000))
}
# count FILE STRING: number of lines of FILE containing STRING.
count() {
	grep -c -F -e "$2" "$1" 2>/dev/null || true
}
# wait_count FILE STRING N: waits until FILE has N lines containing STRING.
wait_count() {
	end=$(($(now_ms) + TIMEOUT * 1000))
	while [ "$(count "$1" "$2")" -lt "$3" ]; do
		[ "$(now_ms)" -lt "$end" ] || fail "no ${3}x '$2' in ${1##*/} after ${TIMEOUT}s"
		sleep 0.02
	done
}
# qmp JSON: sends one command and waits for its answer, which must be a "return".
qmp() {
	n=$(($(count "$D/qmp.log" '"return"') + $(count "$D/qmp.log" '"error"') + 1))
	printf '%s\n' "$1" >&3
	end=$(($(now_ms) + TIMEOUT * 1000))
	while [ $(($(count "$D/qmp.log" '"return"') + $(count "$D/qmp.log" '"error"'))) -lt $n ]; do
		[ "$(now_ms)" -lt "$end" ] || fail "no answer to $1"
		sleep 0.01
	done
	if grep -q -F '"error"' "$D/qmp.log"; then
		fail "QMP error for $1"
	fi
}
# marker TEXT N: waits for the Nth line TEXT on the serial console and prints how long it took.
marker() {
	mt0=$(now_ms)
	wait_count "$D/serial" "$1" "$2"
	echo "[$M] $1 (#$2) after $(($(now_ms) - mt0)) ms"
}

run_machine() {
	M=$1
	BUS=$2
	rm -f "$D/serial" "$D/qmp.log" "$D/qmp.in" "$D/qmp.out"
	mkfifo "$D/qmp.in" "$D/qmp.out"
	truncate -s 1M "$D/disk.raw"
	set -- -nodefaults -display none -machine "$M" -accel "$ACCEL" -m 256M \
		-chardev "file,id=ser0,path=$D/serial" -serial chardev:ser0 \
		-chardev "pipe,id=qmp0,path=$D/qmp" -mon chardev=qmp0,mode=control \
		-kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img" -append "$APPEND"
	if [ "$M" = q35 ]; then
		set -- "$@" -device pcie-root-port,id=hp.0,bus=pcie.0,chassis=1
	fi
	# O_RDWR opens of the FIFOs never block, whether or not QEMU has opened them yet.
	exec 3<>"$D/qmp.in" 4<>"$D/qmp.out"
	cat <&4 >"$D/qmp.log" &
	CATPID=$!
	t0=$(now_ms)
	"$QEMU" "$@" &
	QPID=$!
	qmp '{"execute":"qmp_capabilities"}'
	wait_count "$D/serial" GUEST-INIT 1
	echo "[$M] GUEST-INIT after $(($(now_ms) - t0)) ms"
	marker GUEST-READY 1
	echo "[$M] boot to GUEST-READY: $(($(now_ms) - t0)) ms"

	qmp "{\"execute\":\"blockdev-add\",\"arguments\":{\"node-name\":\"d1\",\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"$D/disk.raw\"}}}"
	qmp "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"virtio-blk-pci\",\"id\":\"vd1\",\"drive\":\"d1\",\"bus\":\"$BUS\"}}"
	marker "GUEST-EVENT add block/vda" 1
	qmp '{"execute":"device_del","arguments":{"id":"vd1"}}'
	marker "GUEST-EVENT remove block/vda" 1
	wait_count "$D/qmp.log" DEVICE_DELETED 2
	qmp '{"execute":"blockdev-del","arguments":{"node-name":"d1"}}'

	qmp '{"execute":"netdev_add","arguments":{"type":"user","id":"n1","restrict":true}}'
	qmp "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"virtio-net-pci\",\"id\":\"nic1\",\"netdev\":\"n1\",\"bus\":\"$BUS\"}}"
	marker "GUEST-EVENT add net/eth0" 1
	qmp '{"execute":"device_del","arguments":{"id":"nic1"}}'
	marker "GUEST-EVENT remove net/eth0" 1
	wait_count "$D/qmp.log" DEVICE_DELETED 4
	qmp '{"execute":"netdev_del","arguments":{"id":"n1"}}'

	qmp '{"execute":"system_reset"}'
	marker GUEST-INIT 2
	marker GUEST-READY 2

	qmp '{"execute":"system_powerdown"}'
	marker GUEST-POWERDOWN 1
	wait_count "$D/qmp.log" '"guest-shutdown"' 1
	rc=0
	wait "$QPID" || rc=$?
	QPID=""
	[ $rc -eq 0 ] || fail "QEMU exited with status $rc"

	if grep -q GUEST-ERROR "$D/serial"; then
		fail "the guest reported an error"
	fi
	[ "$(count "$D/serial" GUEST-EVENT)" -eq 4 ] || fail "unexpected GUEST-EVENT lines"
	kill "$CATPID" 2>/dev/null || true
	wait "$CATPID" 2>/dev/null || true
	CATPID=""
	exec 3>&- 4<&-
}

if [ ! -f "$GUEST/vmlinuz" ] || [ ! -f "$GUEST/initrd.img" ]; then
	M=setup
	fail "no guest in $GUEST: run sh contrib/guest/build.sh $GUEST"
fi
echo "accel: $ACCEL"
run_machine q35 hp.0
run_machine pc pci.0
echo "PASS"
