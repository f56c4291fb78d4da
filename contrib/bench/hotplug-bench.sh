#!/bin/bash
# Hot-plug benchmark of qvmd (prints figures; not a test). Builds qvmd, qvmctl and hotplug_bench in
# Release without sanitizers and the Linux test guest (contrib/guest/build.sh), runs a private qvmd
# in a temp dir with one guest VM, and an identical VM (same definition, its own directories) that
# hotplug_bench starts by hand from qvmd --print-cmdline. Then, 50 times each, alternating:
# "qvmctl attach-disk", "qvmctl attach-net --restrict" and "qvmctl detach" of both (timed from
# spawn to exit) against the same raw QMP sequences (see hotplug_bench.c). Target: qvmctl <= 1.2 x
# raw + 3 ms. The guest runs under KVM when the test guest boots under it (bench_guest_accel), TCG
# otherwise.
# Then, HB_APPLY_RUNS times each, alternating: six devices (4 disks, 2 NICs) as six "qvmctl
# attach-*" in a row against the same six as sections added to the VM's file and one "qvmctl apply"
# (both timed from the first spawn to the last exit; the devices are removed again by an untimed
# apply between runs). Target: apply <= 0.5 x the six attaches.
# Environment: QVMD_BENCH_DIR (build dir, default build-bench), QVMD_GUEST_DIR (default
# BUILD/guest), HB_RUNS (50), HB_APPLY_RUNS (10), HB_MACHINE (q35 or pc; default q35). The last
# line sums it up (its fields are a contract):
#   hotplug-bench: attach_disk_ms=.. raw_disk_ms=.. attach_net_ms=.. raw_net_ms=.. apply6_ms=..
#   attach6_ms=..
set -eu
cd "$(dirname "$0")/../.."
. contrib/bench/bench-lib.sh
BUILD=${QVMD_BENCH_DIR:-build-bench}
RUNS=${HB_RUNS:-50}
APPLY_RUNS=${HB_APPLY_RUNS:-10}
MACHINE=${HB_MACHINE:-q35}

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DQVMD_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" --target qvmd qvmctl hotplug_bench -j"$(nproc)" >/dev/null
B=$(cd "$BUILD" && pwd)
GUEST=${QVMD_GUEST_DIR:-$B/guest}
sh contrib/guest/build.sh "$GUEST"
QVMD=$B/bin/qvmd
QVMCTL=$B/bin/qvmctl

T=$(bench_tmpdir hotplug-bench)
QVMD_PID=
HB_PID=

cleanup() { bench_cleanup "$T" "$HB_PID" "$QVMD_PID"; }
bench_traps cleanup

ACCEL=$(bench_guest_accel "$GUEST" "$T" "$MACHINE")

# conf DIR: a private qvmd's directories and configuration (bench_conf) and the guest VM h1.
conf() {
	bench_conf "$1"
	cat >"$1/vms/h1.ini" <<INI
[vm]
name = h1
memory = 256M
vcpus = 1
machine = $MACHINE
accel = $ACCEL
kernel = $GUEST/vmlinuz
initrd = $GUEST/initrd.img
append = console=ttyS0 quiet panic=-1
$([ "$MACHINE" = q35 ] && echo "hotplug_slots = 8")
INI
}
conf "$T"
conf "$T/raw"
bench_raw_argv "$QVMD" "$T/raw/qvmd.conf" h1 "$T/raw/h1.argv"
qemu-img create -q -f qcow2 "$T/images/disk.qcow2" 64M
qemu-img create -q -f qcow2 "$T/raw/images/disk.qcow2" 64M

echo "# machine: $(bench_machine)"
echo "# $(qemu-system-x86_64 --version | head -n 1); guest: machine $MACHINE, accel $ACCEL, 256M"

bench_start_qvmd "$QVMD" "$T"
"$QVMCTL" -s "$SOCK" start h1 >/dev/null

"$B/hotplug_bench" "$QVMCTL" "$SOCK" h1 "$T/state/h1/console.log" "$T/raw/h1.argv" \
	"$T/raw/qemu.log" "$T/raw/state/h1/console.log" "$T/images/disk.qcow2" \
	"$T/raw/images/disk.qcow2" "$RUNS" "$MACHINE" >"$T/hb.out" &
HB_PID=$!
wait "$HB_PID"
HB_PID=
grep -v '^[a-z_]*=' "$T/hb.out"
get() { sed -n "s/^$1=//p" "$T/hb.out"; }
disk=$(get attach_disk_ms)
rdisk=$(get raw_disk_ms)
net=$(get attach_net_ms)
rnet=$(get raw_net_ms)
det=$(get detach_ms)
rdet=$(get raw_detach_ms)
echo "-> qvmd's own share (qvmctl - raw - qvmctl version floor $(get version_ms) ms):" \
	"disk $(awk -v a="$disk" -v b="$rdisk" -v c="$(get version_ms)" 'BEGIN {printf "%.3f", a - b - c}') ms," \
	"NIC $(awk -v a="$net" -v b="$rnet" -v c="$(get version_ms)" 'BEGIN {printf "%.3f", a - b - c}') ms"
bench_verdict "attach-disk" "$disk" "$rdisk"
bench_verdict "attach-net" "$net" "$rnet"
bench_verdict "detach" "$det" "$rdet"

# Six devices at once: one apply against six attaches (medians of APPLY_RUNS each).
for i in 1 2 3 4; do qemu-img create -q -f qcow2 "$T/images/a$i.qcow2" 16M; done
cp "$T/vms/h1.ini" "$T/h1.base"
# settle: the file back to its base and the devices gone (an untimed apply waits for the guest).
settle() {
	cp "$T/h1.base" "$T/vms/h1.ini"
	"$QVMCTL" -s "$SOCK" apply h1 >/dev/null || { echo "apply (cleanup) failed" >&2; exit 1; }
}
sections() {
	for i in 1 2 3 4; do printf '\n[disk a%s]\nfile = %s\n' "$i" "$T/images/a$i.qcow2"; done
	printf '\n[net n1]\nrestrict = yes\n\n[net n2]\nrestrict = yes\n'
}
: >"$T/apply6"
: >"$T/attach6"
for r in $(seq "$APPLY_RUNS"); do
	bench_now_us t0
	for i in 1 2 3 4; do
		"$QVMCTL" -s "$SOCK" attach-disk h1 "a$i" --file "$T/images/a$i.qcow2" >/dev/null
	done
	"$QVMCTL" -s "$SOCK" attach-net h1 n1 --restrict >/dev/null
	"$QVMCTL" -s "$SOCK" attach-net h1 n2 --restrict >/dev/null
	bench_now_us t1
	echo $((t1 - t0)) >>"$T/attach6"
	settle
	sections >>"$T/vms/h1.ini"
	bench_now_us t0
	out=$("$QVMCTL" -s "$SOCK" apply h1)
	bench_now_us t1
	case $out in *"6 applied, 0 pending, 0 failed"*) ;; *) echo "apply: $out" >&2; exit 1 ;; esac
	echo $((t1 - t0)) >>"$T/apply6"
	settle
done
median_ms() { sort -n "$1" | awk '{v[NR] = $1} END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f", m / 1000}'; }
apply6=$(median_ms "$T/apply6")
attach6=$(median_ms "$T/attach6")
awk -v a="$apply6" -v b="$attach6" 'BEGIN {
	printf "-> apply of 4 disks + 2 NICs: %.3f ms vs six attaches %.3f ms: %.2fx, target <= 0.5x: %s\n",
	       a, b, a / b, a <= 0.5 * b ? "met" : "NOT met" }'
echo "hotplug-bench: attach_disk_ms=$disk raw_disk_ms=$rdisk attach_net_ms=$net raw_net_ms=$rnet" \
	"apply6_ms=$apply6 attach6_ms=$attach6"
