#!/bin/sh
# The Debian package: builds it with contrib/package.sh (or takes the .deb in $QVMD_DEB_DIR), runs
# lintian (no errors), inspects it (files, modes, conffiles, dependencies, maintainer scripts, the
# unit), then installs, upgrades, removes and purges it in a throw-away root with `dpkg --root`:
# a busybox chroot whose addgroup, getent, systemctl and deb-systemd-* are stubs that log their
# calls, so nothing touches this machine's /etc or its services. The installed qvmd checks a
# configuration (-n) and serves the installed qvmctl's `version` from a private directory.
# Needs root (chroot) and the packages contrib/deps.sh installs.
set -u
PASSED=0
FAILED=0
T=$(mktemp -d /tmp/qvmd-package.XXXXXX)
QVMD_PID=
cleanup() {
	if [ -n "$QVMD_PID" ]; then
		kill "$QVMD_PID" 2>/dev/null
		wait "$QVMD_PID" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
ok() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $*"; }
check() {
	d=$1
	shift
	if "$@"; then ok "$d"; else not_ok "$d"; fi
}
finish() {
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
	exit
}
SRC_DIR=${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}

for tool in dpkg-buildpackage dh lintian busybox; do
	if ! command -v "$tool" >/dev/null; then
		not_ok "$tool is installed (run sh contrib/deps.sh)"
		finish
	fi
done
if [ "$(id -u)" != 0 ]; then
	not_ok "running as root (dpkg --root runs the maintainer scripts in a chroot)"
	finish
fi

# --- build -----------------------------------------------------------------------------------
version=$(dpkg-parsechangelog -l "$SRC_DIR/contrib/debian/changelog" -S Version)
if [ -n "${QVMD_DEB_DIR:-}" ]; then
	OUT=$QVMD_DEB_DIR
else
	# No debug symbols package: not inspected here, and it costs build time.
	OUT=$(DEB_BUILD_OPTIONS="noddebs ${DEB_BUILD_OPTIONS:-}" sh "$SRC_DIR/contrib/package.sh" "$T/out") ||
		OUT=
fi
DEB="$OUT/qvmd_${version}_amd64.deb"
check "contrib/package.sh builds qvmd_${version}_amd64.deb" [ -n "$OUT" ] && [ -f "$DEB" ]
[ -f "$DEB" ] || finish

# --- lintian ---------------------------------------------------------------------------------
lintian --fail-on error "$DEB" >"$T/lintian" 2>&1
rc=$?
grep -v "^running with root privileges" "$T/lintian" | sed "s/^/# lintian: /"
check "lintian reports no errors" [ "$rc" -eq 0 ]

# --- what the package holds ------------------------------------------------------------------
dpkg-deb -c "$DEB" | awk '{ print $1, $6 }' >"$T/files"
has() { grep -qx -- "$1" "$T/files"; }
for f in ./usr/sbin/qvmd ./usr/bin/qvmctl; do
	check "package: $f, executable" has "-rwxr-xr-x $f"
done
for f in ./usr/share/man/man1/qvmctl.1.gz ./usr/share/man/man5/qvmd.conf.5.gz \
	./usr/share/man/man5/qvmd.ini.5.gz ./usr/share/man/man8/qvmd.8.gz \
	./usr/share/bash-completion/completions/qvmctl ./lib/systemd/system/qvmd.service \
	./lib/systemd/system/qvmd-backup.service ./lib/systemd/system/qvmd-backup.timer \
	./usr/share/doc/qvmd/examples/web1.ini ./usr/share/doc/qvmd/examples/qvmd.conf \
	./usr/share/doc/qvmd/README.md ./usr/share/doc/qvmd/copyright ./etc/qvmd/qvmd.conf \
	./lib/udev/rules.d/60-qvmd.rules; do
	check "package: $f" has "-rw-r--r-- $f"
done
check "package: /etc/qvmd/vms/" has "drwxr-xr-x ./etc/qvmd/vms/"
check "package: /var/lib/qvmd/, mode 0750" has "drwxr-x--- ./var/lib/qvmd/"
check "package: no file outside the FHS places it uses" \
	sh -c "! grep -v ' \./\(etc/qvmd\|usr/sbin\|usr/bin\|usr/share\|lib/systemd\|lib/udev\|var/lib/qvmd\|var/lib/\$\|var/\$\|etc/\$\|lib/\$\|usr/\$\|\$\)' '$T/files'"

dpkg-deb -f "$DEB" Depends >"$T/depends"
sed 's/^/# Depends: /' "$T/depends"
for dep in 'libc6 (' 'libjson-c5 (' 'libevent-2.1-7 (' 'libinih1 (' qemu-system-x86 qemu-utils adduser; do
	check "Depends: $dep" grep -qF "$dep" "$T/depends"
done
check "Architecture: amd64" [ "$(dpkg-deb -f "$DEB" Architecture)" = amd64 ]
check "Version: $version" [ "$(dpkg-deb -f "$DEB" Version)" = "$version" ]

mkdir "$T/ctrl" "$T/data"
dpkg-deb -e "$DEB" "$T/ctrl"
dpkg-deb -x "$DEB" "$T/data"
check "conffiles: /etc/qvmd/qvmd.conf" grep -qx /etc/qvmd/qvmd.conf "$T/ctrl/conffiles"
check "postinst creates the qvmd group" grep -q 'addgroup --quiet --system qvmd' "$T/ctrl/postinst"
check "postinst enables the unit" grep -q "deb-systemd-helper enable 'qvmd.service'" "$T/ctrl/postinst"
check "prerm stops qvmd on remove only" \
	grep -q '"$1" = remove .*then' "$T/ctrl/prerm"
check "no maintainer script touches /var/lib/qvmd" \
	sh -c "! cat '$T/ctrl/postinst' '$T/ctrl/prerm' '$T/ctrl/postrm' | grep -v '^[[:space:]]*#' | grep -q /var/lib"
check "postrm removes /etc/qvmd/vms on purge only" \
	sh -c "sed -n '/\"\$1\" = purge/,/^fi/p' '$T/ctrl/postrm' | grep -q 'rm -rf /etc/qvmd/vms'"
unit="$T/data/lib/systemd/system/qvmd.service"
check "unit: ExecStart=/usr/sbin/qvmd -f" grep -qx 'ExecStart=/usr/sbin/qvmd -f' "$unit"
check "unit: KillMode=process (QEMUs outlive a stop, restart or upgrade)" \
	grep -qx 'KillMode=process' "$unit"
check "unit: Restart=on-failure" grep -qx 'Restart=on-failure' "$unit"
bunit="$T/data/lib/systemd/system/qvmd-backup.service"
check "backup unit: ExecStart=/usr/bin/qvmctl backup --all" \
	grep -qx 'ExecStart=/usr/bin/qvmctl backup --all $QVMD_BACKUP_ARGS' "$bunit"
check "backup timer: Persistent=true" grep -qx 'Persistent=true' "$T/data/lib/systemd/system/qvmd-backup.timer"
# The nightly timer is the operator's choice: never started, enabled again only if it was enabled.
check "postinst never starts the backup units (on upgrade: try-restart of the timer, if active)" \
	sh -c "! grep 'invoke .*qvmd-backup' '$T/ctrl/postinst' | grep -qv 'invoke try-restart .qvmd-backup.timer.'"
check "no maintainer script stops the backup units on upgrade" \
	sh -c "! grep -q 'qvmd-backup' '$T/ctrl/preinst' 2>/dev/null"
check "postinst enables the backup timer only where it was enabled before" \
	sh -c "[ \$(grep -c \"enable 'qvmd-backup.timer'\" '$T/ctrl/postinst') -eq 1 ] &&
		sed -n \"/was-enabled 'qvmd-backup.timer'/,/fi/p\" '$T/ctrl/postinst' | grep -q \"enable 'qvmd-backup.timer'\""
check "prerm stops the backup timer on remove only" \
	sh -c "grep -B3 'stop qvmd-backup.timer' '$T/ctrl/prerm' | grep -q '\"\$1\" = remove'"
check "shipped qvmd.conf sets socket_group = qvmd" \
	grep -qx 'socket_group = qvmd' "$T/data/etc/qvmd/qvmd.conf"

# --- the throw-away root ---------------------------------------------------------------------
R="$T/root"
mkdir -p "$R/bin" "$R/usr/bin" "$R/usr/sbin" "$R/etc" "$R/tmp" "$R/dev" "$R/run/systemd/system" \
	"$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/log"
touch "$R/var/lib/dpkg/status" "$R/var/lib/dpkg/available"
cp "$(command -v busybox)" "$R/bin/busybox"
for a in sh cat grep stat chgrp chmod rm rmdir mkdir ls echo true; do
	ln -s busybox "$R/bin/$a"
done
printf 'root:x:0:\n' >"$R/etc/group"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
# Stubs: each logs "name args" to /stub.log inside the root.
stub() {
	printf '#!/bin/sh\necho "%s $*" >>/stub.log\n%s\n' "$1" "${2:-exit 0}" >"$R/$3/$1"
	chmod 0755 "$R/$3/$1"
}
stub getent 'grep -q "^$2:" /etc/$1' usr/bin
stub addgroup 'for n; do :; done; echo "$n:x:$((900 + $(grep -c . /etc/group))):" >>/etc/group' usr/sbin
stub systemctl '' bin
stub deb-systemd-helper '' usr/bin
stub deb-systemd-invoke '' usr/sbin
# /dev/kvm as a system without udev has it: root's group, 0600 (skipped where mknod is refused).
kvm_node=no
if mknod -m 0600 "$R/dev/kvm" c 10 232 2>/dev/null; then
	kvm_node=yes
fi
logged() { grep -qx "$1" "$R/stub.log"; }
dpkg_root() { dpkg --root="$R" --force-depends --force-not-root "$@" >>"$T/dpkg.log" 2>&1; }

: >"$R/stub.log"
dpkg_root -i "$DEB"
check "dpkg --root installs the package" [ $? -eq 0 ]
check "install: qvmd group created" logged 'addgroup --quiet --system qvmd'
check "install: kvm group created where missing" logged 'addgroup --quiet --system kvm'
check "install: the unit is enabled" logged 'deb-systemd-helper enable qvmd.service'
check "install: qvmd is started" logged 'deb-systemd-invoke start qvmd.service'
check "install: the backup timer is neither started nor enabled" \
	sh -c "! grep -q 'invoke start qvmd-backup\|systemctl.* enable.*qvmd-backup' '$R/stub.log'"
if [ $kvm_node = yes ]; then
	check "install: /dev/kvm given to group kvm, rw" \
		[ "$(chroot "$R" stat -c '%G %A' /dev/kvm)" = "kvm crw-rw----" ]
fi
check "installed: /usr/sbin/qvmd" [ -x "$R/usr/sbin/qvmd" ]
check "installed: /etc/qvmd/vms/" [ -d "$R/etc/qvmd/vms" ]
check "installed: /var/lib/qvmd/ mode 0750" [ "$(stat -c %a "$R/var/lib/qvmd")" = 750 ]
check "installed: qvmd.8 manual page" [ -f "$R/usr/share/man/man8/qvmd.8.gz" ]
check "nothing was installed on this machine" \
	sh -c "! dpkg-query -W -f='\${Status}' qvmd 2>/dev/null | grep -q installed"

# The installed programs (they use this machine's libraries), on private directories.
cp "$R/usr/share/doc/qvmd/examples/web1.ini" "$R/etc/qvmd/vms/web1.ini"
{
	cat "$R/etc/qvmd/qvmd.conf"
	echo "vm_dir = $R/etc/qvmd/vms"
	echo "run_dir = $T/run"
	echo "state_dir = $T/state"
} >"$T/check.conf"
"$R/usr/sbin/qvmd" -n -c "$T/check.conf" >"$T/qvmd-n.out" 2>&1
check "installed qvmd -n accepts the shipped qvmd.conf and the example definition" [ $? -eq 0 ]
echo '[vm]' >"$R/etc/qvmd/vms/bad.ini"
"$R/usr/sbin/qvmd" -n -c "$T/check.conf" >"$T/qvmd-n.out" 2>&1
check "installed qvmd -n refuses a bad definition" [ $? -ne 0 ]
rm -f "$R/etc/qvmd/vms/bad.ini"

mkdir "$T/vms"
printf '[qvmd]\nvm_dir = %s\nrun_dir = %s\nstate_dir = %s\n' "$T/vms" "$T/run" "$T/state" \
	>"$T/daemon.conf"
"$R/usr/sbin/qvmd" -c "$T/daemon.conf" >"$T/qvmd.log" 2>&1 &
QVMD_PID=$!
i=0
while [ ! -S "$T/run/qvmd.sock" ] && [ $i -lt 100 ] && kill -0 "$QVMD_PID" 2>/dev/null; do
	sleep 0.1
	i=$((i + 1))
done
"$R/usr/bin/qvmctl" -s "$T/run/qvmd.sock" version >"$T/version.out" 2>&1
check "installed qvmctl version talks to the installed qvmd" [ $? -eq 0 ]
check "both say version $version" [ "$(grep -c " $version\$" "$T/version.out")" -eq 2 ]
sed 's/^/# /' "$T/version.out"
kill "$QVMD_PID" 2>/dev/null
wait "$QVMD_PID" 2>/dev/null
QVMD_PID=

# Upgrade (the same version again runs the upgrade paths): qvmd restarted, never stopped first.
mkdir -p "$R/var/lib/qvmd/web1"
echo image >"$R/var/lib/qvmd/web1-root.qcow2"
echo log >"$R/var/lib/qvmd/web1/console.log"
echo '; changed by the operator' >>"$R/etc/qvmd/qvmd.conf"
: >"$R/stub.log"
mkdir -p "$R/run/qvmd"
rm -f "$R/run/qvmd/qvmd.restarting"
dpkg_root --force-confold -i "$DEB"
check "dpkg --root upgrades the package" [ $? -eq 0 ]
check "upgrade: the stopping qvmd is told it is a restart (run_dir/qvmd.restarting)" \
	[ -f "$R/run/qvmd/qvmd.restarting" ]
check "upgrade: qvmd is restarted" logged 'deb-systemd-invoke restart qvmd.service'
check "upgrade: qvmd is not stopped first" sh -c "! grep -q 'invoke stop' '$R/stub.log'"
check "upgrade: the qvmd group is not created again" \
	sh -c "! grep -q 'addgroup --quiet --system qvmd' '$R/stub.log'"
check "upgrade: the operator's qvmd.conf is kept" \
	grep -qx '; changed by the operator' "$R/etc/qvmd/qvmd.conf"

# Remove: qvmd stopped (its unit's KillMode=process leaves the VMs), configuration and data kept.
: >"$R/stub.log"
dpkg_root -r qvmd
check "dpkg --root removes the package" [ $? -eq 0 ]
check "remove: qvmd is stopped" logged 'deb-systemd-invoke stop qvmd.service'
check "remove: the backup timer is stopped" logged 'deb-systemd-invoke stop qvmd-backup.timer'
check "remove: nothing but qvmd and its backup timer is stopped or started" \
	sh -c "! grep -v 'qvmd.service\|qvmd-backup.timer\|^systemctl --system daemon-reload' '$R/stub.log' | grep -q ."
check "remove: the binaries are gone" [ ! -e "$R/usr/sbin/qvmd" ]
check "remove: qvmd.conf kept" [ -f "$R/etc/qvmd/qvmd.conf" ]
check "remove: the definitions kept" [ -f "$R/etc/qvmd/vms/web1.ini" ]

# Purge: configuration gone; images, logs and the group stay.
: >"$R/stub.log"
dpkg_root -P qvmd
check "dpkg --root purges the package" [ $? -eq 0 ]
check "purge: /etc/qvmd is gone" [ ! -e "$R/etc/qvmd" ]
check "purge: the unit's state is purged" logged 'deb-systemd-helper purge qvmd.service'
check "purge: the backup timer's state is purged" logged 'deb-systemd-helper purge qvmd-backup.timer'
check "purge: VM images under /var/lib/qvmd are kept" [ -f "$R/var/lib/qvmd/web1-root.qcow2" ]
check "purge: per-VM state under /var/lib/qvmd is kept" [ -f "$R/var/lib/qvmd/web1/console.log" ]
check "purge: the qvmd group stays" grep -q '^qvmd:' "$R/etc/group"
if [ "$FAILED" -ne 0 ]; then
	sed 's/^/# dpkg: /' "$T/dpkg.log"
fi
finish
