#!/bin/sh
# socket_group and qmp_passthrough with the real qvmd, qvmctl and QEMU (a firmware-only VM): a
# throwaway user in socket_group (a supplementary group) can list, query, start, power down and
# hot-plug, but raw qmp is `denied` (exit 1) and leaves the VM untouched; with
# qmp_passthrough = group (after a restart) it is allowed. A user outside the group is refused at
# connect, by the socket's mode and, with the socket opened up, by the daemon itself. The users and
# the group are removed on every exit path.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ] || ! command -v useradd >/dev/null || ! command -v setpriv >/dev/null; then
	echo "# skip: needs root, useradd and setpriv"
	echo "0 passed, 0 failed"
	exit 0
fi

# Names unique to this run (at most 32 characters).
G="qvmdt$$"
MEMBER="qvmdm$$"
OUTSIDER="qvmdo$$"
del_users() {
	userdel "$MEMBER" 2>/dev/null
	userdel "$OUTSIDER" 2>/dev/null
	groupdel "$G" 2>/dev/null
}
trap 'cleanup; del_users' EXIT
del_users
groupadd --system "$G" || exit 1
# Their primary group is nogroup: membership of $G is a supplementary group, as on a real host.
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
	--gid nogroup --groups "$G" "$MEMBER" || exit 1
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
	--gid nogroup "$OUTSIDER" || exit 1

# as USER CMD...: runs CMD as USER with USER's groups.
as() {
	u=$1
	shift
	setpriv --reuid="$u" --regid=nogroup --init-groups "$@"
}

echo "socket_group = $G" >>"$T/qvmd.conf"
chmod 0711 "$T"
chgrp "$G" "$T/run"
chmod 0710 "$T/run"
fw_vm web1 q35 "hotplug_slots = 2"
sed -i 's/^shutdown_timeout = .*/shutdown_timeout = 1s/' "$T/vms/web1.ini"
start_qvmd || { not_ok "qvmd started"; finish; exit 1; }

out=$(as "$MEMBER" "$QVMCTL" list 2>&1); rc=$?
check "a socket_group member may list ($out)" exited_with $rc 0 "$out" web1
out=$(as "$MEMBER" "$QVMCTL" attach-net web1 lan0 --persist 2>&1); rc=$?
check "... may attach-net --persist on a stopped vm ($out)" [ $rc -eq 0 ]
out=$(as "$MEMBER" "$QVMCTL" start web1 2>&1); rc=$?
check "... may start ($out)" [ $rc -eq 0 ]
check "... and the vm runs" wait_state web1 running 60
pid=$(ctl --json status web1 | field .pid)
out=$(as "$MEMBER" "$QVMCTL" --json status web1 2>&1); rc=$?
st=$(printf '%s\n' "$out" | field .state)
check "... may ask for status ($st)" exited_with $rc 0 "$st" running
out=$(as "$MEMBER" "$QVMCTL" attach-net web1 lan1 2>&1); rc=$?
check "... may hot-plug a NIC ($out)" [ $rc -eq 0 ]
out=$(as "$MEMBER" "$QVMCTL" devices web1 2>&1); rc=$?
check "... may list devices ($out)" exited_with $rc 0 "$out" lan1
check "... which show the cold-plugged one too" contains "$out" lan0

# Raw qmp can do anything QEMU can: refused, with the reason, and nothing reaches QEMU.
out=$(as "$MEMBER" "$QVMCTL" qmp web1 stop 2>&1); rc=$?
check "raw qmp is denied to a socket_group member ($out)" failed_with $rc "$out" "raw qmp"
check "... naming the vm and the setting" contains "$out" "vm web1: "
check "... and qmp_passthrough" contains "$out" "qmp_passthrough = root"
out=$(as "$MEMBER" "$QVMCTL" --json qmp web1 human-monitor-command \
	'{"command-line":"info version"}' 2>/dev/null); rc=$?
check "... HMP through qmp too, code denied in --json ($out)" failed_with $rc "$out" '"code":"denied"'
check "the vm is untouched: still running" [ "$(ctl --json status web1 | field .qemu_status)" = running ]
check "... same pid" [ "$(ctl --json status web1 | field .pid)" = "$pid" ]
out=$(ctl qmp web1 query-status 2>&1); rc=$?
check "root may use raw qmp ($out)" exited_with $rc 0 "$out" running
check "the denial is logged" grep -q "raw qmp denied to uid $(id -u "$MEMBER")" "$T/qvmd.log"

# A user outside the group: the socket's mode keeps it out, and the daemon too when the mode
# would let it in.
out=$(as "$OUTSIDER" "$QVMCTL" list 2>&1); rc=$?
check "a user outside socket_group cannot connect ($out)" exited_with $rc 3 "$out" "ermission denied"
chmod 0711 "$T/run"
chmod 0666 "$SOCK"
out=$(as "$OUTSIDER" "$QVMCTL" --json list 2>/dev/null); rc=$?
check "... and is refused by the daemon with the socket open ($out)" failed_with $rc "$out" '"code":"denied"'
chmod 0660 "$SOCK"
chmod 0710 "$T/run"

out=$(as "$MEMBER" "$QVMCTL" powerdown web1 --timeout 1s 2>&1); rc=$?
check "a socket_group member may power down ($out)" [ $rc -eq 0 ]
check "... and the vm stops" wait_state web1 stopped 60
out=$(as "$MEMBER" "$QVMCTL" detach web1 lan0 --persist 2>&1); rc=$?
check "... may detach --persist on a stopped vm ($out)" [ $rc -eq 0 ]
check "... and the definition lost it" sh -c "! grep -q 'net lan0' '$T/vms/web1.ini'"

# qmp_passthrough = group: qvmd.conf is read at start.
stop_qvmd
echo "qmp_passthrough = group" >>"$T/qvmd.conf"
start_qvmd || not_ok "qvmd restarted"
out=$(as "$MEMBER" "$QVMCTL" start web1 2>&1); rc=$?
check "after a restart with qmp_passthrough = group: start ($out)" [ $rc -eq 0 ]
out=$(as "$MEMBER" "$QVMCTL" qmp web1 query-status 2>&1); rc=$?
check "... raw qmp is allowed to the member ($out)" exited_with $rc 0 "$out" running
out=$(as "$OUTSIDER" "$QVMCTL" list 2>&1); rc=$?
check "... and still not to a user outside the group ($out)" [ $rc -ne 0 ]
check "kill web1" ctl kill web1
finish
