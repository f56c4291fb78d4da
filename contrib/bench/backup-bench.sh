#!/bin/bash
# Backup benchmark of qvmd (prints figures; not a test). Builds qvmd and qvmctl in Release without
# sanitizers, runs a private qvmd in a temp dir with one running firmware-only VM (q35, KVM when
# /dev/kvm works, else TCG; no guest OS is needed: the disk is written from the host through the
# VM's own block nodes with HMP qemu-io, so its dirty bitmap sees every write) whose disk is a
# 1 GiB qcow2 holding 512 MiB of random data, and measures, BB_RUNS times each, alternating:
#   full:     "qvmctl backup --full" (process start to exit: the copy, xxh3 of the file, fsync,
#             manifest) vs "qemu-img convert -O qcow2 -t writeback" of an identical copy of the
#             disk (the limit: the same data copied and flushed, nothing else). Target <= 1.5 x.
#   inc:      1% of the disk (164 writes of 64 KiB at scattered offsets) rewritten, then
#             "qvmctl backup --incremental". Target <= 5% of the full backup. Also printed: QEMU's
#             own copy job within it (JOB_STATUS_CHANGE running -> pending, from "qvmctl events").
#   restore:  "qvmctl restore --to" of the last incremental (a standalone qcow2 of its chain) vs
#             "qemu-img convert -O qcow2 -t writeback" of the same chain. Target <= 1.5 x.
# Every restore is compared with its convert (qemu-img compare) before it counts.
# Environment: QVMD_BENCH_DIR (build dir, default build-bench), BB_RUNS (3), BB_DATA_MB (512),
# BB_DISK_MB (1024). The last line sums it up (its fields are a contract):
#   backup-bench: full_ms=.. convert_ms=.. full_ratio=.. inc_ms=.. inc_ratio=.. restore_ms=.. restore_ratio=.. inc_copy_ms=..
set -eu
cd "$(dirname "$0")/../.."
. contrib/bench/bench-lib.sh
BUILD=${QVMD_BENCH_DIR:-build-bench}
RUNS=${BB_RUNS:-3}
DATA_MB=${BB_DATA_MB:-512}
DISK_MB=${BB_DISK_MB:-1024}

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DQVMD_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" --target qvmd qvmctl -j"$(nproc)" >/dev/null
B=$(cd "$BUILD" && pwd)
QVMD=$B/bin/qvmd
QVMCTL=$B/bin/qvmctl

T=$(bench_tmpdir backup-bench)
QVMD_PID=

cleanup() { bench_cleanup "$T" "$QVMD_PID"; }
bench_traps cleanup

ACCEL=$(bench_accel)
bench_conf "$T"
mkdir -p "$T/ref"
cat >"$T/vms/bb.ini" <<INI
[vm]
name = bb
memory = 64M
machine = q35
accel = $ACCEL
[disk d]
file = $T/images/disk.qcow2
INI

# The disk: DATA_MB of random data at the start of a DISK_MB qcow2, and an identical copy that
# only qemu-img reads (the VM's image is locked by its QEMU).
head -c "$((DATA_MB * 1024 * 1024))" /dev/urandom >"$T/ref/data.raw"
truncate -s "${DISK_MB}M" "$T/ref/data.raw"
qemu-img convert -q -f raw -O qcow2 "$T/ref/data.raw" "$T/images/disk.qcow2"
qemu-img convert -q -f raw -O qcow2 "$T/ref/data.raw" "$T/ref/disk.qcow2"
rm -f "$T/ref/data.raw"

echo "# machine: $(bench_machine)"
echo "# $(qemu-system-x86_64 --version | head -n 1); VM: firmware only, q35, accel $ACCEL;" \
	"disk: ${DISK_MB} MiB qcow2, ${DATA_MB} MiB random data; file system of $T:" \
	"$(df -T "$T" | awk 'NR == 2 {print $2}')"

bench_start_qvmd "$QVMD" "$T"
ctl() { "$QVMCTL" -s "$SOCK" "$@"; }
ctl start bb >/dev/null

# timed VAR CMD...: runs CMD, appends its wall time in ms to the list in VAR.
timed() {
	local var=$1 t0 t1
	shift
	bench_now_us t0
	"$@"
	bench_now_us t1
	eval "$var=\"\${$var:-} $(((t1 - t0) / 1000))\""
}
median() { printf '%s\n' $1 | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
id_of() { grep -o '"id": *"[0-9T.Z]*"' "$1" | head -n 1 | sed 's/.*"\([0-9T.Z]*\)"$/\1/'; }
# The same cache mode qvmd's restore uses: the output is flushed before qemu-img exits.
convert() { qemu-img convert -q -O qcow2 -t writeback "$1" "$2"; }
# job_ms EVENTS: ms from the backup job's JOB_STATUS_CHANGE "running" to "pending" (QEMU's clock).
job_ms() {
	grep '"JOB_STATUS_CHANGE"' "$1" | grep '"bk-d"' | awk '
		/"status": *"running"/ && !r { match($0, /"ts": *[0-9]+/); r = substr($0, RSTART, RLENGTH) }
		/"status": *"pending"/ && !p { match($0, /"ts": *[0-9]+/); p = substr($0, RSTART, RLENGTH) }
		END { gsub(/[^0-9]/, "", r); gsub(/[^0-9]/, "", p); print (r != "" && p != "") ? p - r : "?" }'
}

# Full backups vs convert, alternating; each run's output removed before the next.
for r in $(seq "$RUNS"); do
	timed full ctl --json backup bb --full >"$T/full.json"
	last=$(id_of "$T/full.json")
	[ -n "$last" ] || { echo "backup-bench: the full backup failed: $(cat "$T/full.json")" >&2; exit 1; }
	timed conv convert "$T/ref/disk.qcow2" "$T/ref/conv.qcow2"
	rm -f "$T/ref/conv.qcow2"
	# Keep the last full: the incrementals build on it.
	[ "$r" -lt "$RUNS" ] && rm -rf "${T:?}/backups/bb/$last"
done

# Incrementals: 1% of the disk rewritten (164 x 64 KiB, scattered), then a backup.
for r in $(seq "$RUNS"); do
	for k in $(seq 164); do
		off=$(((k * 2654435761 + r * 40503) % ((DISK_MB * 16) - 1) * 65536))
		ctl qmp bb human-monitor-command \
			"{\"command-line\":\"qemu-io -d /machine/peripheral/d/virtio-backend \\\"write -P $((k % 250 + 1)) $off 64k\\\"\"}" \
			>/dev/null
	done
	# QEMU's own share: its copy job from "running" to "pending" (QMP event timestamps).
	ctl --json events bb >"$T/events.$r" 2>/dev/null &
	ev_pid=$!
	sleep 0.2
	timed inc ctl --json backup bb --incremental >"$T/inc.json"
	kill "$ev_pid" 2>/dev/null || true
	wait "$ev_pid" 2>/dev/null || true
	qcopy="${qcopy:-} $(job_ms "$T/events.$r")"
	last=$(id_of "$T/inc.json")
	grep -q '"type": *"incremental"' "$T/inc.json" ||
		{ echo "backup-bench: not an incremental: $(cat "$T/inc.json")" >&2; exit 1; }
done

# Restore of the last point vs convert of its chain.
top=$T/backups/bb/$last/d.qcow2
for r in $(seq "$RUNS"); do
	timed rest ctl restore bb "$last" --to "$T/images/restore" >/dev/null
	timed rconv convert "$top" "$T/ref/chain.qcow2"
	qemu-img compare -q "$T/images/restore/d.qcow2" "$T/ref/chain.qcow2" ||
		{ echo "backup-bench: the restore differs from the chain" >&2; exit 1; }
	rm -rf "$T/images/restore" "$T/ref/chain.qcow2"
done

full_ms=$(median "$full")
convert_ms=$(median "$conv")
inc_ms=$(median "$inc")
restore_ms=$(median "$rest")
rconv_ms=$(median "$rconv")
echo "full backup (qvmctl backup --full) ms:       $full  median $full_ms"
echo "qemu-img convert -O qcow2 of the disk ms:    $conv  median $convert_ms"
inc_copy_ms=$(median "$qcopy")
echo "incremental after 1% rewritten ms:           $inc  median $inc_ms"
echo "  of it, QEMU's copy job (running -> pending): $qcopy  median $inc_copy_ms"
echo "restore of the last incremental ms:          $rest  median $restore_ms"
echo "qemu-img convert -O qcow2 of its chain ms:   $rconv  median $rconv_ms"
ratios=$(awk -v f="$full_ms" -v c="$convert_ms" -v i="$inc_ms" -v r="$restore_ms" -v rc="$rconv_ms" \
	'BEGIN {printf "%.2f %.3f %.2f", f / c, i / f, r / rc}')
set -- $ratios
verdict() { awk -v v="$2" -v lim="$3" -v what="$1" 'BEGIN {printf "-> %s: %s (target <= %s): %s\n", what, v, lim, v <= lim ? "met" : "NOT met"}'; }
verdict "full / convert" "$1" 1.5
verdict "incremental / full" "$2" 0.05
verdict "restore / convert of the chain" "$3" 1.5
echo "backup-bench: full_ms=$full_ms convert_ms=$convert_ms full_ratio=$1 inc_ms=$inc_ms inc_ratio=$2 restore_ms=$restore_ms restore_ratio=$3 inc_copy_ms=$inc_copy_ms"
