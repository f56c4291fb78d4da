# Shared helpers for qvmd's end-to-end tests: a private qvmd (its own temp dir, socket, run and state
# dirs) driven by the real qvmctl against the real qemu-system-x86_64. Source it; it needs BIN_DIR
# (build dir), GUEST_DIR (test guest) and SRC_DIR in the environment (set by CTest).
set -u

QVMD="$BIN_DIR/bin/qvmd"
QVMCTL="$BIN_DIR/bin/qvmctl"
CTLRAW="$BIN_DIR/tests/ctlraw"
PASSED=0
FAILED=0
T=$(mktemp -d /tmp/qvmd-e2e.XXXXXX)
# QEMU runs as an unprivileged uid per VM and must traverse the test dir to its run directory.
chmod 0711 "$T"
SOCK="$T/run/qvmd.sock"
export QVMD_SOCKET="$SOCK"
QVMD_PID=

# Firmware-only VMs use KVM where it works; this machine's /dev/kvm may be missing or unusable
# (a QEMU that initialises KVM runs until timeout kills it: exit 124). Guest VMs always use
# accel = tcg: a software KVM (kvm_pvm) runs firmware but hangs a Linux guest.
# As root, qvmd runs QEMU under an unprivileged uid (in group kvm when there is one): probe as such.
FW_ACCEL=tcg
if [ -c /dev/kvm ]; then
	AS=
	if [ "$(id -u)" -eq 0 ]; then
		g=$(getent group kvm | cut -d: -f3)
		if [ -n "$g" ]; then
			AS="setpriv --reuid=299999 --regid=299999 --groups=$g"
		else
			AS="setpriv --reuid=299999 --regid=299999 --clear-groups"
		fi
	fi
	timeout 2 $AS qemu-system-x86_64 -accel kvm -machine none -nodefaults -display none -S \
		>/dev/null 2>&1 </dev/null
	[ $? -eq 124 ] && FW_ACCEL=kvm
fi

cleanup() {
	[ -n "$QVMD_PID" ] && kill -9 "$QVMD_PID" 2>/dev/null
	# Every QEMU of this test has its pidfile under $T.
	for p in $(pgrep -f "$T/run" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
	sleep 0.2
	if [ "${KEEP:-0}" = 1 ] || [ "$FAILED" -gt 0 ]; then
		echo "# test dir kept: $T"
		[ -f "$T/qvmd.log" ] && tail -n 40 "$T/qvmd.log" | sed 's/^/# qvmd: /'
	else
		rm -rf "$T"
	fi
}
trap cleanup EXIT
# dash runs the EXIT trap only when the script exits, not when a signal kills it: exit instead.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

ok() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $*"; }
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
	d=$1; shift
	if "$@"; then ok "$d"; else not_ok "$d"; fi
}
finish() {
	# Stop qvmd the normal way so that LeakSanitizer runs, then look for any sanitizer report.
	if [ -n "$QVMD_PID" ]; then
		kill -TERM "$QVMD_PID" 2>/dev/null
		wait "$QVMD_PID" 2>/dev/null
		QVMD_PID=
	fi
	if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$T/qvmd.log" "$T"/*.err 2>/dev/null; then
		not_ok "qvmd ran clean under ASan/UBSan (see $T/qvmd.log)"
		grep -hE -A20 "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$T/qvmd.log" | head -40 | sed 's/^/# /'
	else
		ok "qvmd ran clean under ASan/UBSan"
	fi
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
}

mkdir -p "$T/vms" "$T/run" "$T/state" "$T/images"
cat >"$T/qvmd.conf" <<CONF
[qvmd]
vm_dir = $T/vms
run_dir = $T/run
state_dir = $T/state
control_socket = $SOCK
image_dirs = $T/images $T/state
log_level = debug
CONF

# guest_vm NAME [MACHINE] [EXTRA-LINES]: the real Linux test guest under TCG.
guest_vm() {
	cat >"$T/vms/$1.ini" <<INI
[vm]
name = $1
memory = 256M
vcpus = 1
machine = ${2:-q35}
accel = tcg
kernel = $GUEST_DIR/vmlinuz
initrd = $GUEST_DIR/initrd.img
append = console=ttyS0 quiet panic=-1
shutdown_timeout = 30s
${3:-}
INI
}

# fw_vm NAME [MACHINE] [EXTRA-LINES]: firmware only (no kernel, no disk): ignores ACPI powerdown.
fw_vm() {
	cat >"$T/vms/$1.ini" <<INI
[vm]
name = $1
memory = 64M
machine = ${2:-q35}
accel = $FW_ACCEL
shutdown_timeout = 30s
console = none
${3:-}
INI
}

start_qvmd() {
	rm -f "$SOCK" # a killed qvmd leaves its socket behind: wait for the new one
	"$QVMD" -f -c "$T/qvmd.conf" >>"$T/qvmd.log" 2>&1 &
	QVMD_PID=$!
	i=0
	while [ ! -S "$SOCK" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	[ -S "$SOCK" ]
}

stop_qvmd() {
	kill "$QVMD_PID" 2>/dev/null
	wait "$QVMD_PID" 2>/dev/null
	QVMD_PID=
}

ctl() { "$QVMCTL" "$@"; }
# ctl_json PATH-EXPR ARGS...: one field of the --json result, e.g. ctl_json .state status web1
field() { "$BIN_DIR/tests/jget" "$1"; }

console() { cat "$T/state/$1/console.log" 2>/dev/null; }
# wait_console NAME MARKER COUNT SECONDS: until MARKER appeared COUNT times on NAME's console.
wait_console() {
	n=0
	while [ "$n" -lt $(($4 * 10)) ]; do
		c=$(console "$1" | grep -c "$2")
		[ "$c" -ge "$3" ] && return 0
		sleep 0.1
		n=$((n + 1))
	done
	return 1
}
# wait_state NAME STATE SECONDS
wait_state() {
	n=0
	while [ "$n" -lt $(($3 * 20)) ]; do
		s=$(ctl --json status "$1" 2>/dev/null | field .state)
		[ "$s" = "$2" ] && return 0
		sleep 0.05
		n=$((n + 1))
	done
	return 1
}
qemu_pids() { pgrep -f "$T/run" 2>/dev/null | sort; }
# contains TEXT PATTERN: grep -q for a fixed string.
contains() { printf '%s\n' "$1" | grep -qF -- "$2"; }
lacks() { ! contains "$1" "$2"; }
# failed_with RC TEXT PATTERN: the command exited 1 (operation failed) and said PATTERN.
failed_with() { [ "$1" -eq 1 ] && contains "$2" "$3"; }
# exited_with RC WANT TEXT PATTERN: the command exited WANT and said PATTERN.
exited_with() { [ "$1" -eq "$2" ] && contains "$3" "$4"; }
gone() { ! kill -0 "$1" 2>/dev/null; }
# spawn CMD...: runs a command in the background and remembers it for wait_spawned.
SPAWNED=
spawn() { "$@" & SPAWNED="$SPAWNED $!"; }
wait_spawned() { [ -n "$SPAWNED" ] && wait $SPAWNED; SPAWNED=; }
# jctl VERB...: qvmctl --json with its result as one compact line, for grep -o.
jctl() { "$QVMCTL" --json "$@" | "$BIN_DIR/tests/jget" .; }
