#!/bin/sh
# QEMU never runs as root: every VM's QEMU runs under a uid of its own from qemu_uid_range (gid the
# same), without capabilities and with no_new_privs; the uid is recorded, survives a VM restart and
# a qvmd restart (re-attach checks it), is released with the definition; one VM's uid cannot open
# another VM's disk or qvmd's files; qemu_user runs every QEMU as one user; bad ranges and users
# are refused at start; a kernel the uid cannot reach fails the start naming the directory.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "# not root: qemu runs as qvmd's own uid, nothing to check"
	finish
	exit 0
fi

TESTUSER=qvmdt$$
privsep_cleanup() {
	userdel "$TESTUSER" 2>/dev/null
	cleanup
}
trap privsep_cleanup EXIT

FIRST=270000
LAST=270009
echo "qemu_uid_range = $FIRST-$LAST" >>"$T/qvmd.conf"

# status_of PID KEY: one line of /proc/PID/status, e.g. status_of 123 CapEff -> 0000000000000000
status_of() { awk -v k="$2:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "/proc/$1/status"; }
uid_of() { status_of "$1" Uid | awk '{ print $1 }'; }
pid_of() { ctl --json status "$1" | field .pid; }
# as_uid UID CMD...: runs CMD as UID (gid the same), no supplementary groups.
as_uid() { u=$1; shift; setpriv --reuid="$u" --regid="$u" --clear-groups "$@"; }
# cannot UID SHELL-COMMAND: the command fails when run as UID.
cannot() { ! as_uid "$1" sh -c "$2" >/dev/null 2>&1; }

fw_vm a
fw_vm b
fw_vm d1 q35 "[disk root]
file = $T/images/d1.qcow2
size = 16M"
fw_vm d2 q35 "[disk root]
file = $T/images/d2.qcow2
size = 16M"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
for v in a b d1 d2; do spawn "$QVMCTL" start $v; done >/dev/null
wait_spawned
check "all 4 running" [ "$(ctl list | grep -c ' running ')" -eq 4 ]

# --- every QEMU under its own uid, nothing privileged left ---
pa=$(pid_of a)
pb=$(pid_of b)
ua=$(uid_of "$pa")
ub=$(uid_of "$pb")
check "a's qemu is not root but a uid of the range ($ua)" [ "${ua:-0}" -ge $FIRST -a "${ua:-0}" -le $LAST ]
check "b's qemu has a uid of its own ($ub)" [ "${ub:-0}" -ge $FIRST -a "${ub:-0}" -le $LAST -a "$ua" != "$ub" ]
n=0
for v in a b d1 d2; do
	p=$(pid_of $v)
	u=$(uid_of "$p")
	[ "$(status_of "$p" Uid)" = "$u $u $u $u" ] || continue
	[ "$(status_of "$p" Gid)" = "$u $u $u $u" ] || continue
	[ "$(status_of "$p" CapEff)" = 0000000000000000 ] || continue
	[ "$(status_of "$p" CapPrm)" = 0000000000000000 ] || continue
	[ "$(status_of "$p" CapBnd)" = 0000000000000000 ] || continue
	[ "$(status_of "$p" NoNewPrivs)" = 1 ] || continue
	n=$((n + 1))
done
check "every qemu: uid = gid, no capabilities (effective, permitted, bounding), no_new_privs" [ $n -eq 4 ]
check "four distinct uids" [ "$(for v in a b d1 d2; do uid_of "$(pid_of $v)"; done | sort -u | wc -l)" -eq 4 ]
check "ps shows no qemu of this test as root" [ -z "$(for p in $(qemu_pids); do [ "$(uid_of "$p")" = 0 ] && echo "$p"; done)" ]
check "a's uid is recorded in its state directory" [ "$(cat "$T/state/a/qemu-uid")" = "$ua $ua" ]
check "the record is root's" [ "$(stat -c %u "$T/state/a/qemu-uid")" = 0 ]

# --- what a uid can reach ---
ud1=$(uid_of "$(pid_of d1)")
check "d1's uid cannot read d2's disk" cannot "$ud1" "cat '$T/images/d2.qcow2'"
check "d1's uid cannot write d2's disk" cannot "$ud1" "echo x >>'$T/images/d2.qcow2'"
check "d1's uid cannot open its own disk by name either (qvmd passes it)" cannot "$ud1" "cat '$T/images/d1.qcow2'"
check "a's uid cannot read a's run state" cannot "$ua" "cat '$T/run/a/state.json'"
check "a's uid cannot create files beside it" cannot "$ua" "echo {} >'$T/run/a/state.json.tmp'"
check "a's uid cannot remove it" cannot "$ua" "rm -f '$T/run/a/state.json'"
check "a's uid cannot enter b's run directory" cannot "$ua" "ls '$T/run/b/qemu'"
check "a's uid cannot list the run directory" cannot "$ua" "ls '$T/run'"
check "a's uid cannot connect to the control socket" cannot "$ua" "'$QVMCTL' list"
check "a's qemu owns its pidfile directory, nothing else" \
	[ "$(stat -c %u "$T/run/a/qemu")" = "$ua" -a "$(stat -c %u:%a "$T/run/a")" = 0:710 ]
check "a's uid can list its pidfile" as_uid "$ua" test -r "$T/run/a/qemu/qemu.pid"

# --- hot-plug with --create: qemu-img runs as root, the image stays root's, QEMU gets descriptors ---
out=$(ctl attach-disk a x1 --file "$T/images/a-x1.qcow2" --format qcow2 --create 16M 2>&1)
check "attach-disk --create works on an unprivileged qemu ($out)" [ $? -eq 0 ]
check "the created image is root's, mode 0600" [ "$(stat -c %u:%a "$T/images/a-x1.qcow2")" = 0:600 ]
check "b's uid cannot read it" cannot "$ub" "cat '$T/images/a-x1.qcow2'"
check "qemu has it open through an fdset" \
	contains "$(ctl --json qmp a query-fdsets | field .)" '"opaque":"x1.file"'

# --- the uid survives a qvmd restart (re-attach) and a VM restart ---
kill -9 "$QVMD_PID"; wait "$QVMD_PID" 2>/dev/null; QVMD_PID=
start_qvmd
check "a re-attached with the same pid after a qvmd restart" [ "$(pid_of a)" = "$pa" ]
check "a still runs as its uid" [ "$(uid_of "$pa")" = "$ua" ]
ctl kill a >/dev/null
ctl start a >/dev/null
pa2=$(pid_of a)
check "a's new qemu (pid $pa2) runs as the same uid" [ -n "$pa2" -a "$pa2" != "$pa" -a "$(uid_of "$pa2")" = "$ua" ]

# --- re-attach refuses a qemu whose uid is not the recorded one, and leaves it running ---
ctl kill b >/dev/null
kill -9 "$QVMD_PID"; wait "$QVMD_PID" 2>/dev/null; QVMD_PID=
echo "$ub $ub" >"$T/state/a/qemu-uid"
start_qvmd
check "a with a foreign uid is not re-attached" [ -z "$(pid_of a)" ]
check "the refusal is logged with both uids" grep -q "vm a: qemu pid $pa2 runs as uid $ua but the vm's recorded qemu uid is $ub" "$T/qvmd.log"
check "its qemu was left running" kill -0 "$pa2"
out=$(ctl start a 2>&1)
check "start does not run a second qemu beside it" contains "$out" "cannot be re-attached"
out=$(ctl start b 2>&1)
check "b (whose uid a's record claims too) is refused while both records hold it" contains "$out" "qemu uid $ub is recorded for vm a too"
check "the duplicate records are logged at start-up" grep -q "vm a and vm b: both record qemu uid $ub" "$T/qvmd.log"
kill -9 "$QVMD_PID"; wait "$QVMD_PID" 2>/dev/null; QVMD_PID=
echo "$ua $ua" >"$T/state/a/qemu-uid"
start_qvmd
check "with the record right again, a is re-attached" [ "$(pid_of a)" = "$pa2" ]

# --- a removed definition releases its uid; the next vm gets the lowest free one ---
rm "$T/vms/b.ini"
ctl reload >/dev/null
check "b's record is gone with its definition" [ ! -e "$T/state/b/qemu-uid" ]
fw_vm c
ctl reload >/dev/null
ctl start c >/dev/null
check "a new vm gets the lowest free uid (b's, $ub)" [ "$(uid_of "$(pid_of c)")" = "$ub" ]
# A running vm keeps its uid until it stops.
rm "$T/vms/c.ini"
ctl reload >/dev/null
check "a running vm whose definition was removed keeps its record" [ -e "$T/state/c/qemu-uid" ]
ctl kill c >/dev/null
check "and releases it when it stops" [ ! -e "$T/state/c/qemu-uid" ]
# Removed while qvmd was down.
ctl kill d2 >/dev/null
stop_qvmd
rm "$T/vms/d2.ini"
start_qvmd
check "a definition removed while qvmd was down releases its uid at start" [ ! -e "$T/state/d2/qemu-uid" ]

# --- a kernel the uid cannot reach: the start fails at once, naming the directory and the uid ---
mkdir -p "$T/private/boot"
chmod 0700 "$T/private"
cp "$GUEST_DIR/vmlinuz" "$T/private/boot/vmlinuz"
fw_vm k q35 "kernel = $T/private/boot/vmlinuz"
ctl reload >/dev/null
out=$(ctl start k 2>&1)
uk=$(cat "$T/state/k/qemu-uid" | awk '{ print $1 }')
check "start fails naming the directory and the uid" \
	contains "$out" "vm k: kernel $T/private/boot/vmlinuz: directory $T/private (mode 0700, owner 0:0) is not traversable by uid $uk gid $uk"
check "and no qemu of k is left" [ -z "$(pid_of k)" ]
stop_qvmd
for p in $(qemu_pids); do kill -9 "$p"; done

# --- bad ranges and users are refused at start, with clear errors ---
# bad_start CONF-LINES: qvmd exits at once (rc, stderr in $out); $line: the first added line.
bad_start() {
	sed '/^qemu_uid_range\|^qemu_user/d' "$T/qvmd.conf" >"$T/bad.conf"
	line=$(($(wc -l <"$T/bad.conf") + 1))
	echo "$1" >>"$T/bad.conf"
	out=$(timeout 20 "$QVMD" -f -c "$T/bad.conf" 2>&1 </dev/null)
	rc=$?
}
bad_start "qemu_uid_range = 0-100"
check "a range with 0 in it is refused (file:line)" exited_with $rc 1 "$out" "bad.conf:$line: [qvmd] qemu_uid_range: '0-100' includes 0 (root)"
nobody=$(id -u nobody)
bad_start "qemu_uid_range = $((nobody - 1))-$((nobody + 1))"
check "a range holding an existing user is refused, naming it" exited_with $rc 1 "$out" "overlaps user nobody (uid $nobody)"
bad_start "qemu_user = qvmd-no-such-user"
check "a qemu_user that does not exist is refused" exited_with $rc 1 "$out" "qemu_user qvmd-no-such-user: no such user"
bad_start "qemu_user = root"
check "qemu_user root is refused" exited_with $rc 1 "$out" "qemu_user root is uid 0 gid 0: qemu never runs as root"
bad_start "qemu_uid_range = 270000-270009
qemu_user = nobody"
check "qemu_user with an explicit range is refused (file:line)" exited_with $rc 1 "$out" "bad.conf:$((line + 1)): [qvmd] qemu_user: cannot be combined with qemu_uid_range (line $line)"

# --- qemu_user: every qemu as that one user ---
useradd --system --no-create-home --shell /usr/sbin/nologin "$TESTUSER"
tu=$(id -u "$TESTUSER")
tg=$(id -g "$TESTUSER")
sed -i "s/^qemu_uid_range = .*/qemu_user = $TESTUSER/" "$T/qvmd.conf"
start_qvmd || not_ok "qvmd starts with qemu_user"
ctl start a >/dev/null
fw_vm e
ctl reload >/dev/null
ctl start e >/dev/null
check "with qemu_user, a runs as that user" [ "$(status_of "$(pid_of a)" Uid)" = "$tu $tu $tu $tu" ]
check "and e too" [ "$(status_of "$(pid_of e)" Uid)" = "$tu $tu $tu $tu" -a "$(status_of "$(pid_of e)" Gid)" = "$tg $tg $tg $tg" ]
check "its record says so" [ "$(cat "$T/state/e/qemu-uid")" = "$tu $tg" ]
check "and no capabilities" [ "$(status_of "$(pid_of e)" CapEff)" = 0000000000000000 ]
ctl kill a >/dev/null
ctl kill e >/dev/null

finish
