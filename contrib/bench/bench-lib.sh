# Shared by the benchmark scripts (sourced, bash).

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

# bench_machine: one line describing the machine a figure comes from.
bench_machine() {
	echo "$(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
		"$(awk '/^MemTotal/ {print int($2 / 1024)}' /proc/meminfo) MiB RAM" \
		"($(awk '/^MemAvailable/ {print int($2 / 1024)}' /proc/meminfo) MiB available)," \
		"kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
}
