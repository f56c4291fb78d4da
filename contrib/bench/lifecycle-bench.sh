#!/bin/bash
# Lifecycle benchmark of qvmd (prints figures; not a test). Builds qvmd, qvmctl, fakeqemu and
# lifecycle_bench in Release without sanitizers, then, each part under its own private qvmd in a
# temp dir:
#   1. "qvmctl status NAME" end to end (median of 200) beside raw QMP query-status against an
#      identical QEMU this script starts itself, the spawn-to-exit time of an empty program linked
#      like qvmctl, and "virsh domstate" of an equivalent domain when virsh is installed and a
#      libvirt daemon answers (qemu:///session, else qemu:///system);
#   2. daemon-added latency: 10,000 "status" on one control connection vs 10,000 raw QMP
#      query-status round trips (one request in flight);
#   3. start overhead: "qvmctl start" -> running vs exec'ing the same QEMU argv by hand until the
#      QMP greeting (and until qmp_capabilities + cont are answered), medians of 20;
#   4. scale: 200 real paused QEMUs (firmware only, 64 MiB; fewer if memory is short) and 5,000
#      fakeqemu VMs: time to start all (32 parallel clients), "qvmctl list", qvmd RSS and qvmd's
#      context switches over 10 idle seconds.
# Firmware-only VMs use KVM when /dev/kvm works, TCG otherwise.
# Environment: QVMD_BENCH_DIR (build dir, default build-bench), LB_REAL (200), LB_FAKE (5000),
# LB_PAR (32). The last line sums it up (its fields are a contract):
#   lifecycle-bench: status_ms=.. added_ratio=.. start_overhead_ms=.. list200_ms=.. list5000_ms=.. rss5000_kib=..
set -eu
cd "$(dirname "$0")/../.."
. contrib/bench/bench-lib.sh
BUILD=${QVMD_BENCH_DIR:-build-bench}
REAL=${LB_REAL:-200}
FAKE=${LB_FAKE:-5000}
PAR=${LB_PAR:-32}

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DQVMD_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" --target qvmd qvmctl fakeqemu lifecycle_bench exec_floor -j"$(nproc)" >/dev/null
B=$(cd "$BUILD" && pwd)
QVMD=$B/bin/qvmd
QVMCTL=$B/bin/qvmctl
FAKEQEMU=$B/tests/fakeqemu
LB=$B/lifecycle_bench
FLOOR=$B/exec_floor

T=$(bench_tmpdir lifecycle-bench)
QVMD_PID=

# Kills what this script started: the daemon by its pid, every QEMU/fakeqemu by the pid in its
# pidfile, after checking that the process's command line names this run's temp dir.
kill_vms() { "$LB" killvms "$T" >/dev/null; }
stop_qvmd() {
	if [ -n "$QVMD_PID" ]; then
		kill "$QVMD_PID" 2>/dev/null || true
		wait "$QVMD_PID" 2>/dev/null || true
	fi
	QVMD_PID=
}
cleanup() {
	set +e
	stop_qvmd
	kill_vms
	if [ "${KEEP:-0}" = 1 ]; then echo "# kept $T"; else rm -rf "$T"; fi
}
bench_traps cleanup

ACCEL=$(bench_accel)

# setup DIR [QEMU]: a qvmd.conf for a private daemon under $T/DIR.
setup() { BENCH_LOG_LEVEL=${LB_LOG_LEVEL:-info} bench_conf "$T/$1" ${2:+"qemu = $2"}; }
# fw_vm DIR NAME: firmware only, 64 MiB.
fw_vm() {
	printf '[vm]\nname = %s\nmemory = 64M\nmachine = q35\naccel = %s\nconsole = none\n' \
		"$2" "$ACCEL" >"$T/$1/vms/$2.ini"
}
start_qvmd() { bench_start_qvmd "$QVMD" "$T/$1"; }
ctl() { "$QVMCTL" -s "$SOCK" "$@"; }
# get KEY FILE: the value of a KEY=VALUE line.
get() { sed -n "s/^$1=//p" "$2" | tail -n 1; }
# Context switches of every thread of a process.
ctxt() {
	cat /proc/"$1"/task/*/status 2>/dev/null |
		awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {s += $2} END {print s + 0}'
}
rss() { awk '/^VmRSS/ {print $2}' /proc/"$1"/status; }
mem_avail_mib() { awk '/^MemAvailable/ {print int($2 / 1024)}' /proc/meminfo; }

echo "# machine: $(bench_machine), accel $ACCEL"
echo "# $(qemu-system-x86_64 --version | head -n 1)"
"$LB" cli exec_floor_ms 200 /bin/true | tee "$T/floor.out" |
	grep -v '^[a-z0-9_]*='
"$LB" cli exec_floor_cli_ms 200 "$FLOOR" | tee -a "$T/floor.out" |
	grep -v '^[a-z0-9_]*='
if readelf -l "$QVMCTL" | grep -q 'program interpreter'; then linkage=dynamic; else linkage=static; fi
echo "  (exec_floor: an empty program linked like qvmctl: $linkage)"
echo

# ---- 1-3: one VM ----
setup one
fw_vm one b1
setup raw # the identical VM, run by hand: same definition, its own directories
cp "$T/one/vms/b1.ini" "$T/raw/vms/"
bench_raw_argv "$QVMD" "$T/raw/qvmd.conf" b1 "$T/raw/b1.argv"
start_qvmd one
ctl start b1 >/dev/null
ctl pause b1 >/dev/null
echo "== status (qvmd's VM and the raw one both paused) [t=${SECONDS}s]"
"$LB" cli status_ms 200 "$QVMCTL" -s "$SOCK" status b1 | tee "$T/status.out" |
	grep -v '^[a-z0-9_]*='
virsh_ms=
if command -v virsh >/dev/null 2>&1; then
	# An equivalent transient libvirt domain (firmware only, 64 MiB, paused), on the session
	# daemon, or on the system one where root's session has none.
	cat >"$T/dom.xml" <<XML
<domain type='$([ "$ACCEL" = kvm ] && echo kvm || echo qemu)'>
  <name>qvmdbench$$</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><emulator>$(command -v qemu-system-x86_64)</emulator></devices>
</domain>
XML
	vuri=
	for u in qemu:///session qemu:///system; do
		if timeout 60 virsh -c "$u" create "$T/dom.xml" >/dev/null 2>&1; then vuri=$u; break; fi
	done
	if [ -n "$vuri" ]; then
		virsh -c "$vuri" suspend "qvmdbench$$" >/dev/null 2>&1 || true
		"$LB" cli virsh_ms 200 "$(command -v virsh)" -c "$vuri" domstate "qvmdbench$$" |
			tee "$T/virsh.out" | grep -v '^[a-z0-9_]*=' || true
		virsh_ms=$(get virsh_ms "$T/virsh.out")
		virsh -c "$vuri" destroy "qvmdbench$$" >/dev/null 2>&1 || true
	else
		echo "virsh: installed, but no libvirt daemon answered: skipped"
	fi
else
	echo "virsh: not installed: virsh domstate skipped"
fi
"$LB" qmp "$T/raw/b1.argv" "$T/raw/qemu.log" "$SOCK" b1 10000 | tee "$T/qmp.out" | grep -v '^[a-z0-9_]*='
status_ms=$(get status_ms "$T/status.out")
raw_ms=$(get raw_rtt_ms "$T/qmp.out")
ratio=$(get added_ratio "$T/qmp.out")
floor=$(get exec_floor_cli_ms "$T/floor.out")
echo "-> qvmctl status: $status_ms ms (target <= 1.5 ms); under it: an empty program linked like" \
	"qvmctl $floor ms, QEMU's own query-status round trip $raw_ms ms"
if [ -n "$virsh_ms" ]; then
	echo "-> virsh domstate of an equivalent libvirt domain: $virsh_ms ms:" \
		"qvmctl status is $(awk -v a="$virsh_ms" -v b="$status_ms" 'BEGIN {printf "%.1f", a / b}')x faster (target >= 10x)"
fi
echo "-> daemon-added latency: status $(get ctl_rtt_ms "$T/qmp.out") ms vs raw query-status $raw_ms ms:" \
	"ratio $ratio (target <= 1.5)"
echo

echo "== start overhead (20 runs each, alternating) [t=${SECONDS}s]"
ctl kill b1 >/dev/null
"$LB" startcmp "$QVMCTL" "$SOCK" b1 "$T/raw/b1.argv" "$T/raw/qemu.log" 20 | tee "$T/start.out" |
	grep -v '^[a-z0-9_]*='
start_overhead=$(get start_overhead_ms "$T/start.out")
echo "-> start overhead: $start_overhead ms over exec->greeting," \
	"$(get start_overhead_vs_ready_ms "$T/start.out") ms over exec->cont answered (target <= 10 ms)"
stop_qvmd
kill_vms
echo

# ---- 4: scale ----
# scale DIR PREFIX N LIST_RUNS CMD... : starts N VMs over $PAR clients, then list, RSS, idle
# wakeups.
scale() {
	local dir=$1 prefix=$2 n=$3 runs=$4
	shift 4
	local s0 s1
	echo "start all: $n VMs, $PAR clients, '$*' per VM"
	s0=$(awk '{print $14 + $15}' /proc/"$QVMD_PID"/stat)
	"$LB" many "$SOCK" "$PAR" "$prefix" "$n" "$@" >"$T/$dir/many.out"
	s1=$(awk '{print $14 + $15}' /proc/"$QVMD_PID"/stat)
	echo "  all done in $(get many_s "$T/$dir/many.out") s, $(get many_failed "$T/$dir/many.out") failed"
	# CPU time is what load does not stretch: qvmd's own share of the wall time above.
	echo "  qvmd CPU for it: $(((s1 - s0) * 1000 / $(getconf CLK_TCK))) ms," \
		"$(awk -v t="$((s1 - s0))" -v n="$n" -v hz="$(getconf CLK_TCK)" \
			'BEGIN { printf "%.2f", t * 1000 / hz / n }') ms per VM"
	echo "  running/paused now: $(ctl list | grep -cE ' (running|paused) ')" \
		"($(ctl list | grep -c ' paused ') paused)"
	"$LB" cli list_ms "$runs" "$QVMCTL" -s "$SOCK" list |
		tee "$T/$dir/list.out" | grep -v '^[a-z0-9_]*=' | sed 's/^/  /'
	echo "  qvmd RSS: $(rss "$QVMD_PID") KiB, open fds: $(find /proc/"$QVMD_PID"/fd -mindepth 1 | wc -l)" |
		tee "$T/$dir/rss.out"
	sleep 2
	local c0 c1 cpu0 cpu1
	c0=$(ctxt "$QVMD_PID")
	cpu0=$(awk '{print $14 + $15}' /proc/"$QVMD_PID"/stat)
	sleep 10
	c1=$(ctxt "$QVMD_PID")
	cpu1=$(awk '{print $14 + $15}' /proc/"$QVMD_PID"/stat)
	echo "  idle 10 s: qvmd context switches $((c1 - c0)), CPU $((cpu1 - cpu0)) ticks (target: 0)" |
		tee "$T/$dir/idle.out"
}

echo "== scale: real QEMUs (firmware only, 64 MiB, accel $ACCEL; started, then paused with qvmctl pause) [t=${SECONDS}s]"
# Measure one paused VM's memory first; keep 2 GiB of headroom.
setup real
fw_vm real r1
start_qvmd real
ctl start r1 >/dev/null && ctl pause r1 >/dev/null
one_kib=$(rss "$(cat "$T/real/run/r1/qemu/qemu.pid")")
ctl kill r1 >/dev/null
fit=$((($(mem_avail_mib) - 2048) * 1024 / (one_kib * 3 / 2)))
nreal=$REAL
[ "$fit" -lt "$nreal" ] && nreal=$fit
echo "one paused QEMU: $one_kib KiB RSS; room for ~$fit; using $nreal"
for i in $(seq 2 "$nreal"); do fw_vm real "r$i"; done
ctl reload >/dev/null
scale real r "$nreal" 20 start pause
qemu_rss=0
for f in "$T"/real/run/*/qemu/qemu.pid; do
	p=$(cat "$f") && qemu_rss=$((qemu_rss + $(rss "$p")))
done
echo "  QEMUs: $((qemu_rss / 1024)) MiB RSS in all"
list200=$(get list_ms "$T/real/list.out")
stop_qvmd
kill_vms
echo

echo "== scale: $FAKE fakeqemu VMs (started) [t=${SECONDS}s]"
ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n)"
setup fake "$FAKEQEMU"
for i in $(seq 1 "$FAKE"); do
	printf '[vm]\nname = f%s\nmemory = 64M\nmachine = q35\naccel = %s\nconsole = none\n' \
		"$i" "$ACCEL" >"$T/fake/vms/f$i.ini"
done
t0=$(date +%s%N)
start_qvmd fake
echo "qvmd up with $FAKE definitions in $((($(date +%s%N) - t0) / 1000000)) ms," \
	"RSS $(rss "$QVMD_PID") KiB"
scale fake f "$FAKE" 10 start
list5000=$(get list_ms "$T/fake/list.out")
rss5000=$(rss "$QVMD_PID")
t0=$(date +%s%N)
stop_qvmd
echo "  qvmd stop with $FAKE VMs running: $((($(date +%s%N) - t0) / 1000000)) ms (the VMs stay)"
kill_vms
echo

echo "# total ${SECONDS}s"
echo "lifecycle-bench: status_ms=$status_ms added_ratio=$ratio start_overhead_ms=$start_overhead" \
	"list200_ms=$list200 list5000_ms=$list5000 rss5000_kib=$rss5000"
