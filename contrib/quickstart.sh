#!/bin/sh
# qvmd quickstart: installs what is needed (Debian 12, as root), builds qvmd, checks the example
# definitions and prints the QEMU command line each would run, then runs a demo: the tiny test guest
# under a private qvmd in a temp dir -- start, list, status, powerdown.
set -eu
cd "$(dirname "$0")/.."
sh contrib/deps.sh
BUILD=${QVMD_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQVMD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null
QVMD="$BUILD/bin/qvmd"
QVMCTL="$BUILD/bin/qvmctl"

T=$(mktemp -d /tmp/qvmd-demo.XXXXXX)
chmod 0711 "$T" # QEMU runs as an unprivileged uid per VM and must traverse it
cleanup() {
	[ -n "${QVMD_PID:-}" ] && kill "$QVMD_PID" 2>/dev/null
	for p in $(pgrep -f "$T/run" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT INT TERM

echo "== checking the example definitions (qvmd -n) and their QEMU command lines"
mkdir -p "$T/examples"
cp contrib/examples/*.ini "$T/examples/"
printf '[qvmd]\nvm_dir = %s/examples\nrun_dir = %s/run\nstate_dir = %s/state\n' "$T" "$T" "$T" \
	>"$T/examples.conf"
"$QVMD" -n -c "$T/examples.conf"
for f in "$T"/examples/*.ini; do
	name=$(basename "$f" .ini)
	echo "-- $name:"
	"$QVMD" --print-cmdline "$name" -c "$T/examples.conf" | sed 's/^/   /'
done

echo "== building the test guest (kernel from Debian's linux-image-cloud-amd64, busybox initramfs)"
sh contrib/guest/build.sh "$BUILD/guest"

echo "== starting qvmd in $T"
mkdir -p "$T/vms"
cat >"$T/qvmd.conf" <<CONF
[qvmd]
vm_dir = $T/vms
run_dir = $T/run
state_dir = $T/state
control_socket = $T/run/qvmd.sock
CONF
# The demo guest boots Linux, so it uses TCG: it runs anywhere, with or without /dev/kvm.
cat >"$T/vms/demo.ini" <<INI
[vm]
name = demo
memory = 256M
vcpus = 1
machine = q35
accel = tcg
kernel = $PWD/$BUILD/guest/vmlinuz
initrd = $PWD/$BUILD/guest/initrd.img
append = console=ttyS0 quiet panic=-1
shutdown_timeout = 30s

[disk data]
file = $T/state/demo-data.qcow2
format = qcow2
size = 1G

[net lan0]
type = user
restrict = yes
INI
"$QVMD" -c "$T/qvmd.conf" 2>"$T/qvmd.log" &
QVMD_PID=$!
export QVMD_SOCKET="$T/run/qvmd.sock"
i=0
while [ ! -S "$QVMD_SOCKET" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done

echo "\$ qvmctl start demo"
"$QVMCTL" start demo
echo "   (waiting for the guest to boot)"
i=0
while ! grep -q GUEST-READY "$T/state/demo/console.log" 2>/dev/null && [ $i -lt 600 ]; do
	sleep 0.1
	i=$((i + 1))
done
echo "\$ qvmctl list"
"$QVMCTL" list
echo "\$ qvmctl status demo"
"$QVMCTL" status demo
echo "\$ qvmctl powerdown demo"
"$QVMCTL" powerdown demo
echo "== guest console:"
sed 's/^/   /' "$T/state/demo/console.log" | grep GUEST- || true
echo "== qvmd log:"
sed 's/^/   /' "$T/qvmd.log"
