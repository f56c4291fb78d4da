#!/bin/sh
# Installs the build into a temporary prefix (and once with the default /usr/local prefix under a
# DESTDIR) and checks the files and the systemd unit's paths.
set -u
PASSED=0
FAILED=0
T=$(mktemp -d /tmp/qvmd-install.XXXXXX)
trap 'rm -rf "$T"' EXIT
trap 'exit 1' INT TERM HUP
ok() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $*"; }
check() {
	d=$1; shift
	if "$@"; then ok "$d"; else not_ok "$d"; fi
}

# A separate build tree configured with another prefix: the unit must follow it.
cmake -S "$SRC_DIR" -B "$T/build" -DQVMD_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/opt/qv >/dev/null 2>&1
cmake --build "$T/build" -j2 >/dev/null 2>&1
check "configure and build with prefix /opt/qv" [ -x "$T/build/bin/qvmd" ]
DESTDIR="$T/root" cmake --install "$T/build" >/dev/null 2>&1
unit="$T/root/opt/qv/lib/systemd/system/qvmd.service"
check "the unit is installed" [ -f "$unit" ]
check "ExecStart names the prefix's qvmd" grep -qx 'ExecStart=/opt/qv/sbin/qvmd -f' "$unit"
check "ExecStop names the prefix's qvmd" grep -qx 'ExecStop=/opt/qv/sbin/qvmd --stop' "$unit"
check "no path outside the prefix" sh -c "! grep -n '/usr/sbin\|/usr/share' '$unit'"
check "no unexpanded @VAR@" sh -c "! grep -n '@' '$unit'"
# The nightly backup (contrib/systemd): a oneshot service running the prefix's qvmctl, and its timer.
bunit="$T/root/opt/qv/lib/systemd/system/qvmd-backup.service"
btimer="$T/root/opt/qv/lib/systemd/system/qvmd-backup.timer"
check "the backup service is installed" [ -f "$bunit" ]
check "the backup timer is installed" [ -f "$btimer" ]
check "backup service: oneshot" grep -qx 'Type=oneshot' "$bunit"
check "backup service: ExecStart runs the prefix's qvmctl backup --all" \
	grep -qx 'ExecStart=/opt/qv/bin/qvmctl backup --all $QVMD_BACKUP_ARGS' "$bunit"
check "backup service: after and requiring qvmd.service" \
	sh -c "grep -qx 'After=qvmd.service' '$bunit' && grep -qx 'Requires=qvmd.service' '$bunit'"
check "backup service: no unexpanded @VAR@" sh -c "! grep -n '@' '$bunit'"
check "backup timer: nightly, Persistent=true" \
	sh -c "grep -q '^OnCalendar=.* 02:00:00' '$btimer' && grep -qx 'Persistent=true' '$btimer'"
check "backup timer: enabled only by the operator (timers.target)" grep -qx 'WantedBy=timers.target' "$btimer"
# systemd-analyze verify (where systemd is installed) on copies whose paths point into the tree.
if command -v systemd-analyze >/dev/null 2>&1; then
	mkdir "$T/units"
	for u in qvmd.service qvmd-backup.service qvmd-backup.timer; do
		sed "s#^\(Exec[A-Za-z]*=\)/opt/qv/#\1$T/root/opt/qv/#" \
			"$T/root/opt/qv/lib/systemd/system/$u" >"$T/units/$u"
	done
	out=$(cd "$T/units" && systemd-analyze verify --man=no ./qvmd-backup.service ./qvmd-backup.timer 2>&1)
	check "systemd-analyze verify: the backup service and timer ($out)" [ -z "$out" ]
else
	ok "# skip: systemd-analyze is not installed (the checks above are static)"
fi
check "qvmd installed in sbin" [ -x "$T/root/opt/qv/sbin/qvmd" ]
check "qvmctl installed in bin" [ -x "$T/root/opt/qv/bin/qvmctl" ]
check "bash completion installed" [ -f "$T/root/opt/qv/share/bash-completion/completions/qvmctl" ]
check "example definition installed" [ -f "$T/root/opt/qv/share/doc/qvmd/examples/web1.ini" ]
for page in man1/qvmctl.1 man5/qvmd.conf.5 man5/qvmd.ini.5 man8/qvmd.8; do
	check "manual page $page installed" [ -f "$T/root/opt/qv/share/man/$page" ]
done
check "the installed qvmd runs" "$T/root/opt/qv/sbin/qvmd" --version
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
