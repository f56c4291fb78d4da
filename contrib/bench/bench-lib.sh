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
