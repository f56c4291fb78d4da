#!/bin/bash
# Snapshot benchmark of qvmd (prints figures; not a test). Builds qvmd, qvmctl and snapshot_bench in
# Release without sanitizers and the Linux test guest (contrib/guest/build.sh), runs a private qvmd
# in a temp dir with one guest VM (256 MiB, one qcow2 disk), and an identical VM (same definition,
# its own directories and image) that snapshot_bench starts by hand from qvmd --print-cmdline.
# Then, SB_RUNS times each, alternating: "qvmctl snapshot", "qvmctl revert" and "qvmctl
# snapshot-delete" (timed from spawn to exit) against the same QMP job sequences written by hand
# (snapshot-save / snapshot-load / snapshot-delete with a job-id, JOB_STATUS_CHANGE concluded,
# query-jobs, job-dismiss; see snapshot_bench.c). Target: qvmctl <= 1.2 x raw + 3 ms for each.
# The guest runs under KVM when the test guest boots under it (bench_guest_accel), TCG otherwise.
# Environment: QVMD_BENCH_DIR (build dir, default build-bench), QVMD_GUEST_DIR (default
# BUILD/guest), SB_RUNS (20). The last line sums it up (its fields are a contract):
#   snapshot-bench: create_ms=.. raw_create_ms=.. revert_ms=.. raw_revert_ms=.. delete_ms=.. raw_delete_ms=..
set -eu
cd "$(dirname "$0")/../.."
. contrib/bench/bench-lib.sh
BUILD=${QVMD_BENCH_DIR:-build-bench}
RUNS=${SB_RUNS:-20}

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DQVMD_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" --target qvmd qvmctl snapshot_bench -j"$(nproc)" >/dev/null
B=$(cd "$BUILD" && pwd)
GUEST=${QVMD_GUEST_DIR:-$B/guest}
sh contrib/guest/build.sh "$GUEST"
QVMD=$B/bin/qvmd
QVMCTL=$B/bin/qvmctl

T=$(bench_tmpdir snapshot-bench)
QVMD_PID=
SB_PID=

cleanup() { bench_cleanup "$T" "$SB_PID" "$QVMD_PID"; }
bench_traps cleanup

ACCEL=$(bench_guest_accel "$GUEST" "$T" q35)

# conf DIR: a private qvmd's directories and configuration (bench_conf), and the guest VM s1
# with the qcow2 disk DIR/images/disk.qcow2.
conf() {
	bench_conf "$1"
	cat >"$1/vms/s1.ini" <<INI
[vm]
name = s1
memory = 256M
vcpus = 1
machine = q35
accel = $ACCEL
kernel = $GUEST/vmlinuz
initrd = $GUEST/initrd.img
append = console=ttyS0 quiet panic=-1
[disk d]
file = $1/images/disk.qcow2
INI
	qemu-img create -q -f qcow2 "$1/images/disk.qcow2" 64M
}
conf "$T"
conf "$T/raw"
bench_raw_argv "$QVMD" "$T/raw/qvmd.conf" s1 "$T/raw/s1.argv" "$T/raw/images/disk.qcow2"

echo "# machine: $(bench_machine)"
echo "# $(qemu-system-x86_64 --version | head -n 1); guest: machine q35, accel $ACCEL, 256M, one qcow2 disk"

bench_start_qvmd "$QVMD" "$T"
"$QVMCTL" -s "$SOCK" start s1 >/dev/null

"$B/snapshot_bench" "$QVMCTL" "$SOCK" s1 "$T/state/s1/console.log" "$T/raw/s1.argv" \
	"$T/raw/qemu.log" "$T/raw/state/s1/console.log" d "$RUNS" >"$T/sb.out" &
SB_PID=$!
wait "$SB_PID"
SB_PID=
grep -v '^[a-z_]*=' "$T/sb.out"
get() { sed -n "s/^$1=//p" "$T/sb.out"; }
create=$(get create_ms)
rcreate=$(get raw_create_ms)
revert=$(get revert_ms)
rrevert=$(get raw_revert_ms)
delete=$(get delete_ms)
rdelete=$(get raw_delete_ms)
bench_verdict "snapshot" "$create" "$rcreate"
bench_verdict "revert" "$revert" "$rrevert"
bench_verdict "snapshot-delete" "$delete" "$rdelete"
echo "snapshot-bench: create_ms=$create raw_create_ms=$rcreate revert_ms=$revert raw_revert_ms=$rrevert delete_ms=$delete raw_delete_ms=$rdelete"
