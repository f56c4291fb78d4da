#!/bin/sh
# qvmctl media with the real qvmd and QEMU (firmware-only VMs): an empty [cdrom] drive gets an
# image, another one replaces it, eject leaves the drive empty and closed, each as QEMU itself
# shows it (query-block: the medium is /dev/fdset/N, read-only; the old fdsets and nodes are
# gone); a drive started with a file; the refusals (unknown drive, stopped VM, missing file, a
# directory, a path outside image_dirs for a requester that is not root); and a qvmd killed and
# started again still knows which file each drive holds and can eject it. --persist writes the
# medium into the definition (a stopped VM: only there; the next start boots with it), eject
# --persist removes the line, and devices lists the drives.
. "$(dirname "$0")/lib.sh"

# Any file is a raw medium for QEMU: no ISO tools needed.
head -c 1048576 /dev/urandom >"$T/images/a.iso"
head -c 2097152 /dev/urandom >"$T/images/b.iso"
mkdir -p "$T/elsewhere" "$T/images/dir.iso"
head -c 65536 /dev/urandom >"$T/elsewhere/c.iso"
fw_vm m1 q35 "
[cdrom cd0]"
fw_vm m2 pc "
[cdrom cd1]
file = $T/images/a.iso
boot = yes"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
# qvmd's own events: a changed medium is one ("device inserted cdrom cd0 FILE").
"$QVMCTL" -s "$SOCK" events m1 >"$T/events.log" 2>&1 &

# The drive as QEMU shows it: "empty", or "FILE ro" (FILE: its file node's filename).
drive() {
	ctl --json qmp "$1" query-block | field . | tr '{' '\n' |
		awk -v id="\"qdev\":\"$2\"" '
		/"filename":/ { f = $0; sub(/.*"filename":"/, "", f); sub(/".*/, "", f) }
		/"ro":true/ { ro = " ro" }
		index($0, id) { print (f == "" ? "empty" : f ro); exit }
		/"qdev":/ { f = ""; ro = "" }'
}
# How many fdsets carry the drive's opaque, and whether its nodes exist.
fdsets() { ctl --json qmp "$1" query-fdsets | field . | grep -o "\"opaque\":\"$2.file\"" | wc -l; }
nodes() { ctl --json qmp "$1" query-named-block-nodes | field . | grep -o "\"node-name\":\"$2\.[a-z]*\"" | sort -u | tr '\n' ' '; }

out=$(ctl media m1 cd0 --insert "$T/images/a.iso" 2>&1); rc=$?
check "media on a stopped vm: not running ($out)" failed_with $rc "$out" "not running"
for v in m1 m2; do spawn "$QVMCTL" start $v; done >/dev/null
wait_spawned
check "both running" wait_state m1 running 30
check "m2 running" wait_state m2 running 30

# An empty drive.
check "m1: qemu shows cd0 empty" [ "$(drive m1 cd0)" = empty ]
st=$(jctl status m1)
check "m1: status shows cd0 empty, tray closed ($st)" contains "$st" \
	'"cdroms":[{"id":"cd0","medium":null,"tray":"closed","boot":false}]'
check "m1: status says display none, no socket" contains "$st" '"display":"none","vnc_socket":null'

# Insert.
out=$(ctl media m1 cd0 --insert "$T/images/a.iso" 2>&1); rc=$?
check "m1: insert a.iso ($out)" exited_with $rc 0 "$out" "cdrom cd0: $T/images/a.iso inserted"
d=$(drive m1 cd0)
check "m1: qemu shows a read-only medium on an fdset ($d)" contains "$d" "/dev/fdset/"
check "m1: ... read-only" contains "$d" " ro"
check "m1: one fdset for cd0" [ "$(fdsets m1 cd0)" -eq 1 ]
st=$(jctl status m1)
check "m1: status shows the path" contains "$st" "\"id\":\"cd0\",\"medium\":\"$T/images/a.iso\",\"tray\":\"closed\""
out=$(ctl status m1)
check "m1: human status: the cdrom cd0 line" contains "$out" "cdrom cd0:          $T/images/a.iso (tray closed)"

# Replace: the old image's nodes and fdset go.
old=$d
out=$(ctl media m1 cd0 --insert "$T/images/b.iso" 2>&1); rc=$?
check "m1: insert b.iso over a.iso ($out)" exited_with $rc 0 "$out" "b.iso inserted"
d=$(drive m1 cd0)
check "m1: qemu shows another fdset" [ "$d" != "$old" ] && contains "$d" "/dev/fdset/"
check "m1: still one fdset for cd0 ($(fdsets m1 cd0))" [ "$(fdsets m1 cd0)" -eq 1 ]
check "m1: the new medium is 2 MiB (b.iso)" \
	contains "$(ctl --json qmp m1 query-block | field .)" '"virtual-size":2097152'

# Eject.
out=$(ctl media m1 cd0 --eject 2>&1); rc=$?
check "m1: eject ($out)" exited_with $rc 0 "$out" "cdrom cd0: empty"
i=0
while ! grep -q "device ejected cdrom cd0" "$T/events.log" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "events: the insert, with its medium" grep -q "device inserted cdrom cd0 $T/images/b.iso" "$T/events.log"
check "events: the eject" grep -q "device ejected cdrom cd0" "$T/events.log"
check "m1: qemu shows cd0 empty" [ "$(drive m1 cd0)" = empty ]
check "m1: no fdset left for cd0" [ "$(fdsets m1 cd0)" -eq 0 ]
check "m1: no node left for cd0 ($(nodes m1 cd0))" [ -z "$(nodes m1 cd0)" ]
check "m1: tray closed" contains "$(jctl status m1)" '"medium":null,"tray":"closed"'
out=$(ctl media m1 cd0 --eject 2>&1); rc=$?
check "m1: eject of an empty drive is fine ($out)" exited_with $rc 0 "$out" "empty"

# Refusals: QEMU is not touched.
out=$(ctl media m1 x --eject 2>&1); rc=$?
check "unknown drive ($out)" failed_with $rc "$out" "vm m1: no cdrom 'x' (cdroms: cd0)"
out=$(ctl media m1 cd0 --insert "$T/images/none.iso" 2>&1); rc=$?
check "missing file ($out)" failed_with $rc "$out" "$T/images/none.iso: No such file or directory"
out=$(ctl media m1 cd0 --insert "$T/images/dir.iso" 2>&1); rc=$?
check "a directory ($out)" failed_with $rc "$out" "not a regular file"
out=$(ctl media m1 cd0 2>&1); rc=$?
check "neither --insert nor --eject: usage ($out)" exited_with $rc 2 "$out" "--insert ISO and --eject"
out=$(ctl media m1 cd0 --insert rel.iso 2>&1); rc=$?
check "a relative path: usage ($out)" exited_with $rc 2 "$out" "not an absolute path"
check "m1: still empty after the refusals" [ "$(drive m1 cd0)" = empty ]

# A drive started with a medium (pc: PIIX IDE).
d=$(drive m2 cd1)
check "m2: qemu shows cd1's medium at start ($d)" contains "$d" "/dev/fdset/"
check "m2: status shows a.iso, boot" \
	contains "$(jctl status m2)" "\"id\":\"cd1\",\"medium\":\"$T/images/a.iso\",\"tray\":\"closed\",\"boot\":true"
check "m2: eject" ctl media m2 cd1 --eject
check "m2: qemu shows cd1 empty" [ "$(drive m2 cd1)" = empty ]
check "m2: no fdset left for cd1" [ "$(fdsets m2 cd1)" -eq 0 ]
check "m2: insert b.iso" ctl media m2 cd1 --insert "$T/images/b.iso"

# A requester that is not root names only images below image_dirs.
if [ "$(id -u)" -eq 0 ] && command -v useradd >/dev/null && command -v setpriv >/dev/null; then
	G="qvmdt$$"
	U="qvmdm$$"
	del_users() { userdel "$U" 2>/dev/null; groupdel "$G" 2>/dev/null; }
	trap 'cleanup; del_users' EXIT
	del_users
	groupadd --system "$G" && useradd --system --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin --gid nogroup --groups "$G" "$U"
	echo "socket_group = $G" >>"$T/qvmd.conf"
	chgrp "$G" "$T/run"
	chmod 0710 "$T/run"
	stop_qvmd
	start_qvmd || { not_ok "qvmd starts with socket_group"; finish; exit 1; }
	as_user() { setpriv --reuid="$U" --regid=nogroup --init-groups "$@"; }
	out=$(as_user "$QVMCTL" media m1 cd0 --insert "$T/elsewhere/c.iso" 2>&1); rc=$?
	check "non-root: outside image_dirs is denied ($out)" failed_with $rc "$out" \
		"is not below an image directory"
	check "non-root: the drive is untouched" [ "$(drive m1 cd0)" = empty ]
	out=$(as_user "$QVMCTL" media m1 cd0 --insert "$T/images/a.iso" 2>&1); rc=$?
	check "non-root: below image_dirs is fine ($out)" exited_with $rc 0 "$out" "a.iso inserted"
	out=$(ctl media m1 cd0 --insert "$T/elsewhere/c.iso" 2>&1); rc=$?
	check "root: any path ($out)" exited_with $rc 0 "$out" "c.iso inserted"
	check "m1: qemu has it (64 KiB)" \
		contains "$(ctl --json qmp m1 query-block | field .)" '"virtual-size":65536'
else
	echo "# skip: the non-root requester needs root, useradd and setpriv"
	check "root: any path" ctl media m1 cd0 --insert "$T/elsewhere/c.iso"
fi

# qvmd killed and started again: which file each drive holds survives (the run directory).
kill -9 "$QVMD_PID"
wait "$QVMD_PID" 2>/dev/null
QVMD_PID=
start_qvmd || { not_ok "qvmd starts again"; finish; exit 1; }
check "m1 re-attached" wait_state m1 running 30
st=$(jctl status m1)
check "m1: status still shows c.iso ($st)" contains "$st" "\"medium\":\"$T/elsewhere/c.iso\""
check "m2: status still shows b.iso" contains "$(jctl status m2)" "\"medium\":\"$T/images/b.iso\""
check "m1: eject after the restart" ctl media m1 cd0 --eject
check "m1: qemu shows cd0 empty" [ "$(drive m1 cd0)" = empty ]
check "m1: no fdset left" [ "$(fdsets m1 cd0)" -eq 0 ]

# QEMU gone: the drive is the definition's again, and media is refused.
check "kill m1" ctl kill m1
out=$(ctl media m1 cd0 --eject 2>&1); rc=$?
check "media after kill: not running ($out)" failed_with $rc "$out" "not running"
check "m1 stopped: status shows the definition's (empty) drive, tray unknown" \
	contains "$(jctl status m1)" '"cdroms":[{"id":"cd0","medium":null,"tray":null'
check "m1's run directory has no media record" [ ! -e "$T/run/m1/media.json" ]
check "kill m2" ctl kill m2

# --persist on a stopped VM: only the definition changes; the next start boots with it.
# section FILE HEADER: the lines of that section, each ended by '|'.
section() { awk -v h="$2" '$0 == h { p = 1; print; next } /^\[/ { p = 0 } p' "$1" | tr '\n' '|'; }
loads() { "$QVMD" -n -c "$T/qvmd.conf" >/dev/null 2>&1; }
echo "# the operator's note" >>"$T/vms/m1.ini"
out=$(ctl media m1 cd0 --insert "$T/images/a.iso" --persist 2>&1); rc=$?
check "m1 stopped: --persist insert ($out)" exited_with $rc 0 "$out" \
	"cdrom cd0: $T/images/a.iso in the definition (not running"
s1=$(section "$T/vms/m1.ini" "[cdrom cd0]")
check "m1.ini: file = a.iso right below [cdrom cd0], the comment kept ($s1)" \
	[ "$s1" = "[cdrom cd0]|file = $T/images/a.iso|# the operator's note|" ]
check "m1.ini: qvmd -n accepts it" eval 'loads && grep -qxF "file = $T/images/a.iso" "$T/vms/m1.ini"'
st=$(jctl status m1)
check "m1 stays stopped, its definition's drive holds a.iso ($st)" eval \
	'contains "$st" "\"state\":\"stopped\"" && contains "$st" "\"id\":\"cd0\",\"medium\":\"$T/images/a.iso\""'
out=$(ctl devices m1)
check "m1 stopped: devices lists cd0 with a.iso, not live ($out)" \
	contains "$(printf '%s\n' "$out" | grep '^cd0 ' | tr -s ' ')" "cd0 cdrom $T/images/a.iso raw - - no yes"
st=$(jctl devices m1)
check "m1 stopped: devices --json: the cdrom row ($st)" contains "$st" \
	"{\"id\":\"cd0\",\"kind\":\"cdrom\",\"medium\":\"$T/images/a.iso\",\"boot\":false"
check "m2 stopped: --persist insert b.iso" ctl media m2 cd1 --insert "$T/images/b.iso" --persist
s2=$(section "$T/vms/m2.ini" "[cdrom cd1]")
check "m2.ini: the file line replaced in place, boot kept ($s2)" \
	[ "$s2" = "[cdrom cd1]|file = $T/images/b.iso|boot = yes|" ]
out=$(ctl media m1 cd0 --eject 2>&1); rc=$?
check "m1 stopped: without --persist: not running, use --persist ($out)" \
	failed_with $rc "$out" "not running; use --persist"
check "start m1 (with the persisted medium)" ctl start m1
check "m1 running" wait_state m1 running 30
d=$(drive m1 cd0)
check "m1: qemu has a medium in cd0 at start ($d)" contains "$d" "/dev/fdset/"
check "m1: ... 1 MiB, a.iso" contains "$(ctl --json qmp m1 query-block | field .)" '"virtual-size":1048576'
check "m1: status shows a.iso" contains "$(jctl status m1)" "\"id\":\"cd0\",\"medium\":\"$T/images/a.iso\""
st=$(jctl devices m1)
check "m1 running: devices --json: cd0 live and persistent ($st)" contains "$st" \
	"\"medium\":\"$T/images/a.iso\",\"boot\":false,\"bus\":null,\"pending_attach\":false,\"pending_removal\":false,\"pci_addr\":null,\"live\":true,\"persistent\":true"

# --persist on a running VM: the drive and the file.
out=$(ctl media m1 cd0 --insert "$T/images/b.iso" --persist 2>&1); rc=$?
check "m1: --persist insert b.iso ($out)" exited_with $rc 0 "$out" "b.iso inserted (persisted)"
s1=$(section "$T/vms/m1.ini" "[cdrom cd0]")
check "m1.ini: the file line replaced ($s1)" \
	[ "$s1" = "[cdrom cd0]|file = $T/images/b.iso|# the operator's note|" ]
check "m1: qemu has b.iso" contains "$(ctl --json qmp m1 query-block | field .)" '"virtual-size":2097152'
check "m1: qvmd -n accepts the file, and it agrees with the drive (diff)" \
	eval 'loads && grep -qxF "file = $T/images/b.iso" "$T/vms/m1.ini" && [ "$(ctl diff m1 2>&1)" = "no differences" ]'
out=$(ctl media m1 cd0 --eject --persist 2>&1); rc=$?
check "m1: --persist eject ($out)" exited_with $rc 0 "$out" "cdrom cd0: empty (persisted)"
s1=$(section "$T/vms/m1.ini" "[cdrom cd0]")
check "m1.ini: the file line removed, the rest kept ($s1)" \
	[ "$s1" = "[cdrom cd0]|# the operator's note|" ]
check "m1: qemu shows cd0 empty, qvmd -n accepts the file" \
	eval '[ "$(drive m1 cd0)" = empty ] && loads && [ "$(grep -c "^file" "$T/vms/m1.ini")" -eq 0 ]'

# Refused before QEMU is touched: a path a definition cannot carry.
head -c 65536 /dev/urandom >"$T/images/c,d.iso"
check "m1: an insert to refuse next" ctl media m1 cd0 --insert "$T/images/b.iso"
out=$(ctl media m1 cd0 --insert "$T/images/c,d.iso" --persist 2>&1); rc=$?
check "m1: --persist of a path with ',' refused, the drive untouched ($out)" \
	eval 'failed_with $rc "$out" "must not contain '"','"'" && contains "$(ctl --json qmp m1 query-block | field .)" "\"virtual-size\":2097152"'

# The file changed behind qvmd's back (the drive gone from it): the drive changes, the command
# fails saying so (as attach --persist does).
cp "$T/vms/m1.ini" "$T/m1.ini.saved"
grep -vxF "[cdrom cd0]" "$T/m1.ini.saved" >"$T/vms/m1.ini"
out=$(ctl media m1 cd0 --insert "$T/images/a.iso" --persist 2>&1); rc=$?
check "m1: drive changed, file not: failed, saying both ($out)" failed_with $rc "$out" \
	"vm m1: cdrom cd0: $T/images/a.iso inserted live, but not persisted"
check "m1: ... and why" contains "$out" "[cdrom cd0]: no such section"
check "m1: qemu has a.iso" contains "$(ctl --json qmp m1 query-block | field .)" '"virtual-size":1048576'
cp "$T/m1.ini.saved" "$T/vms/m1.ini"
check "kill m1 again" ctl kill m1
finish
