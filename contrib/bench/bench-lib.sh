# Shared by the benchmark scripts (sourced, bash).
#
# Every script cleans up (its qvmd, its QEMUs, its temp dir) on every exit path: a cleanup function
# that never stops half-way (set +e inside), run by an EXIT trap, and HUP/INT/TERM traps that exit
# through it (bench_traps).

# bench_traps FUNCTION: runs FUNCTION at exit, and makes HUP, INT and TERM exit through it.
bench_traps() {
	trap "$1" EXIT
	trap 'exit 129' HUP
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# bench_now_us VAR: sets VAR to the wall clock in microseconds, from bash's own clock (no process
# and no subshell: a "date" forked for a timestamp adds its start-up, 1-15 ms here, to every
# figure measured with it).
bench_now_us() {
	printf -v "$1" '%s' "${EPOCHREALTIME/[.,]/}"
}

# bench_accel: "kvm" when /dev/kvm works, else "tcg". A QEMU that initialises KVM runs until
# timeout kills it (exit 124); on a machine whose /dev/kvm is missing or unusable it fails at once.
bench_accel() {
	local rc=1
	if [ -c /dev/kvm ]; then
		timeout 2 qemu-system-x86_64 -accel kvm -machine none -nodefaults -display none -S \
			>/dev/null 2>&1 </dev/null && rc=0 || rc=$?
	fi
	if [ "$rc" -eq 124 ]; then echo kvm; else echo tcg; fi
}

# bench_guest_accel GUEST_DIR WORK_DIR [MACHINE]: the accel for a Linux guest. A software KVM
# (kvm_pvm) runs firmware-only VMs, so bench_accel says kvm, but a Linux guest hangs under it: KVM
# is chosen only after the test guest (GUEST_DIR's vmlinuz and initrd.img) actually printed its
# GUEST-READY console marker under -accel kvm within BENCH_KVM_PROBE_S seconds (default 60). The
# probe's QEMU runs under timeout -s KILL, so it never outlives the probe even if the caller dies;
# its files stay in WORK_DIR (the caller's temp dir, which its cleanup removes).
bench_guest_accel() {
	local guest=$1 work=$2 machine=${3:-q35} limit=${BENCH_KVM_PROBE_S:-60} pid i=0
	local accel=tcg
	if [ "$(bench_accel)" != kvm ]; then
		echo tcg
		return 0
	fi
	mkdir -p "$work"
	: >"$work/kvm-probe.serial"
	timeout -s KILL "$((limit + 5))" qemu-system-x86_64 -accel kvm -machine "$machine" \
		-m 256M -nodefaults -display none \
		-chardev "file,id=ser0,path=$work/kvm-probe.serial" -serial chardev:ser0 \
		-kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
		-append "console=ttyS0 quiet panic=-1" >/dev/null 2>&1 </dev/null &
	pid=$!
	while [ "$i" -lt "$((limit * 10))" ] && kill -0 "$pid" 2>/dev/null; do
		if grep -q GUEST-READY "$work/kvm-probe.serial" 2>/dev/null; then
			accel=kvm
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	# TERM to timeout, which passes it on to the QEMU (a KILL would orphan the QEMU).
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	echo "$accel"
}

# bench_machine: one line describing the machine a figure comes from.
bench_machine() {
	echo "$(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
		"$(awk '/^MemTotal/ {print int($2 / 1024)}' /proc/meminfo) MiB RAM" \
		"($(awk '/^MemAvailable/ {print int($2 / 1024)}' /proc/meminfo) MiB available)," \
		"kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# bench_tmpdir NAME: a new temp dir for one run, traversable by the unprivileged uids QEMU runs as.
bench_tmpdir() {
	local t
	t=$(mktemp -d "/tmp/qvmd-$1.XXXXXX") && chmod 0711 "$t" && echo "$t"
}

# bench_cleanup DIR PID...: stops the given processes (the daemon, the driver), then SIGKILLs every
# QEMU whose pidfile lies under DIR (DIR/run/VM/qemu/qemu.pid or DIR/*/run/...) and whose command
# line names DIR (qvmd leaves its VMs running when it stops: on_daemon_stop = leave), then removes
# DIR unless KEEP=1. Never stops half-way (set +e): it runs from EXIT traps.
bench_cleanup() {
	local dir=$1 f p
	shift
	set +e
	for p in "$@"; do
		[ -n "$p" ] || continue
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	for f in "$dir"/*/run/*/qemu/qemu.pid "$dir"/run/*/qemu/qemu.pid; do
		[ -f "$f" ] || continue
		p=$(cat "$f" 2>/dev/null) || continue
		[ -n "$p" ] && tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF "$dir/" &&
			kill -9 "$p" 2>/dev/null
	done
	if [ "${KEEP:-0}" = 1 ]; then echo "# kept $dir"; else rm -rf "$dir"; fi
	return 0
}

# bench_raw_argv QVMD CONF NAME OUT [IMAGE]: the command line qvmd would run for NAME (qvmd
# --print-cmdline), for the benchmark to start by hand as the raw baseline: its run directories
# made, and since qvmd hands QEMU its images as descriptors (-add-fd, /dev/fdset/N) that only
# qvmd opens, every fdset stands for IMAGE by name instead (a VM with at most one image).
bench_raw_argv() {
	local qvmd=$1 conf=$2 name=$3 out=$4 image=${5:-}
	local run state
	run=$(sed -n 's/^run_dir *= *//p' "$conf")
	state=$(sed -n 's/^state_dir *= *//p' "$conf")
	mkdir -p "$run/$name/qemu" "$state/$name"
	"$qvmd" --print-cmdline "$name" -c "$conf" |
		awk -v img="$image" '
			skip { skip = 0; next }
			$0 == "-add-fd" { skip = 1; next }
			{ gsub(/\/dev\/fdset\/[0-9]+/, img); print }' >"$out"
}

# bench_conf DIR [LINE...]: a private qvmd's configuration DIR/qvmd.conf, its directories (vms,
# run, state, images, backups) under DIR, log level BENCH_LOG_LEVEL (default info), and any
# further qvmd.conf LINEs ("qemu = PATH").
bench_conf() {
	local dir=$1 line
	shift
	mkdir -p "$dir/vms" "$dir/run" "$dir/state" "$dir/images" "$dir/backups"
	{
		echo "[qvmd]"
		echo "vm_dir = $dir/vms"
		echo "run_dir = $dir/run"
		echo "state_dir = $dir/state"
		echo "control_socket = $dir/run/qvmd.sock"
		echo "image_dirs = $dir/images"
		echo "backup_dir = $dir/backups"
		echo "log_level = ${BENCH_LOG_LEVEL:-info}"
		for line in "$@"; do echo "$line"; done
	} >"$dir/qvmd.conf"
}

# bench_start_qvmd QVMD DIR: runs QVMD in the foreground mode on DIR/qvmd.conf (bench_conf), in
# the background, logging to DIR/qvmd.log; sets QVMD_PID and SOCK and waits for the control
# socket (exits if it never comes).
bench_start_qvmd() {
	local i=0
	"$1" -f -c "$2/qvmd.conf" >>"$2/qvmd.log" 2>&1 &
	QVMD_PID=$!
	SOCK=$2/run/qvmd.sock
	while [ ! -S "$SOCK" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
	[ -S "$SOCK" ] || { echo "qvmd did not start" >&2; tail "$2/qvmd.log" >&2; exit 1; }
}

# bench_verdict WHAT QVMCTL_MS RAW_MS: the line judging a qvmctl figure against the raw QMP one
# (target: qvmctl <= 1.2 x raw + 3 ms).
bench_verdict() {
	awk -v q="$2" -v r="$3" -v what="$1" 'BEGIN {
		lim = 1.2 * r + 3
		printf "-> %s: qvmctl %.3f ms vs raw %.3f ms: %.2fx, limit 1.2x + 3 ms = %.3f ms: %s\n",
		       what, q, r, q / r, lim, q <= lim ? "met" : "NOT met" }'
}
