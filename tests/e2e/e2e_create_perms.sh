#!/bin/sh
# qvmctl create by a socket_group member who is not root, with the real qvmd, qvmctl and qemu-img:
# a --disk path= (existing, or to be created with a size) or a --cdrom outside image_dirs is
# `denied` (exit 1), naming the path and image_dirs, and leaves no definition and no image; so is
# one that only looks inside (a symbolic link to a file or a directory outside, a "..") and one
# that does not exist outside (the refusal does not tell whether it does). The same member may
# name files below image_dirs; root may name the paths the member may not. The throwaway user and
# group are removed on every exit path.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ] || ! command -v useradd >/dev/null || ! command -v setpriv >/dev/null; then
	echo "# skip: needs root, useradd and setpriv"
	echo "0 passed, 0 failed"
	exit 0
fi

G="qvmdct$$"
MEMBER="qvmdcm$$"
del_users() {
	userdel "$MEMBER" 2>/dev/null
	groupdel "$G" 2>/dev/null
}
trap 'cleanup; del_users' EXIT
del_users
groupadd --system "$G" || exit 1
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
	--gid nogroup --groups "$G" "$MEMBER" || exit 1
# member CMD...: qvmctl as the member, with the member's groups.
member() { setpriv --reuid="$MEMBER" --regid=nogroup --init-groups "$QVMCTL" "$@"; }

echo "socket_group = $G" >>"$T/qvmd.conf"
chgrp "$G" "$T/run"
chmod 0710 "$T/run"
start_qvmd || { not_ok "qvmd started"; finish; exit 1; }

O="$T/outside"
mkdir -p "$O"
qemu-img create -q -f qcow2 "$O/out.qcow2" 8M
printf 'not really an iso\n' >"$O/inst.iso"
qemu-img create -q -f qcow2 "$T/images/in.qcow2" 8M
printf 'not really an iso\n' >"$T/images/inst.iso"
ln -s "$O/out.qcow2" "$T/images/link.qcow2"
ln -s "$O" "$T/images/outdir"
ls "$O" >"$T/outside.before"

# denied NAME PATH DESCRIPTION ARGS...: the member's create is denied, naming PATH and image_dirs.
denied() {
	name=$1 path=$2 what=$3
	shift 3
	out=$(member create "$name" --memory 64M "$@" 2>&1); rc=$?
	check "$what is denied to a socket_group member ($out)" failed_with $rc "$out" \
		"$path is not below an image directory qvmd may use (image_dirs in qvmd.conf)"
	check "... the message names the vm" contains "$out" "vm $name: "
}
denied p1 "$O/out.qcow2" "an existing --disk path= outside image_dirs" --disk "path=$O/out.qcow2"
denied p2 "$O/new.qcow2" "a --disk path=,size= to create outside image_dirs" --disk "path=$O/new.qcow2,size=8M"
denied p3 "$O/inst.iso" "a --cdrom outside image_dirs" --disk 8M --cdrom "$O/inst.iso"
denied p4 "$T/images/link.qcow2" "a symbolic link in image_dirs to an image outside" \
	--disk "path=$T/images/link.qcow2"
denied p5 "$T/images/outdir/new.qcow2" "a new image in a linked directory outside" \
	--disk "path=$T/images/outdir/new.qcow2,size=8M"
denied p6 "$T/images/../outside/new.qcow2" "a new image by way of .." \
	--disk "path=$T/images/../outside/new.qcow2,size=8M"
denied p7 "$O/missing.qcow2" "a --disk path= that does not exist outside" --disk "path=$O/missing.qcow2"
denied p8 "$O/missing.iso" "a --cdrom that does not exist outside" --disk 8M --cdrom "$O/missing.iso"
denied p9 "/dev/zero" "a device outside image_dirs as --cdrom" --disk 8M --cdrom /dev/zero
out=$(member --json create p1 --memory 64M --disk "path=$O/out.qcow2" 2>/dev/null); rc=$?
check "... the code is denied ($out)" failed_with $rc "$out" '"code":"denied"'
check "no refusal left a definition" sh -c "! ls '$T/vms' | grep -q '^p'"
check "... or an image in image_dirs" sh -c "! ls '$T/images' | grep -q '^p'"
check "... or a file outside" sh -c "ls '$O' | cmp -s - '$T/outside.before'"
check "... or a vm" sh -c "! '$QVMCTL' list | grep -q '^p'"
check "... none got as far as creating" sh -c \
	"! grep -q 'creating (qvmctl create, uid $(id -u "$MEMBER"))' '$T/qvmd.log'"

# Below image_dirs the member may: an existing image, a new one, an installer.
out=$(member create m1 --memory 64M --disk "path=$T/images/m1-missing.qcow2" 2>&1); rc=$?
check "a missing file below image_dirs is not denied but missing ($out)" failed_with $rc "$out" \
	"No such file or directory (give a size to create it)"
out=$(member create m1 --memory 64M --disk 8M --cdrom "$T/images/missing.iso" 2>&1); rc=$?
check "... a missing ISO below image_dirs too ($out)" failed_with $rc "$out" \
	"cdrom: $T/images/missing.iso: No such file or directory"
out=$(member create m1 --memory 64M --disk "path=$T/images/in.qcow2" \
	--disk "path=$T/images/m1-new.qcow2,size=8M" --cdrom "$T/images/inst.iso" 2>&1); rc=$?
check "the member may name files below image_dirs ($out)" [ $rc -eq 0 ]
check "... the definition is written" [ -f "$T/vms/m1.ini" ]
check "... the new image is made" [ -f "$T/images/m1-new.qcow2" ]
check "... and the vm is loaded" sh -c "'$QVMCTL' list | grep -q '^m1 '"

# Root may name what the member may not.
out=$(ctl create r1 --memory 64M --disk "path=$O/out.qcow2" --disk "path=$O/new.qcow2,size=8M" \
	--cdrom "$O/inst.iso" 2>&1); rc=$?
check "root may name the same paths outside image_dirs ($out)" [ $rc -eq 0 ]
check "... the image outside is made" [ -f "$O/new.qcow2" ]
check "... the definition names them" sh -c \
	"grep -qx 'file = $O/out.qcow2' '$T/vms/r1.ini' && grep -qx 'file = $O/inst.iso' '$T/vms/r1.ini'"

# undefine as the member: the file goes; --remove-disks removes only what is below image_dirs.
out=$(member undefine r1 --remove-disks 2>&1); rc=$?
check "the member may undefine ($out)" [ $rc -eq 0 ]
check "... images outside image_dirs are kept" sh -c "[ -f '$O/out.qcow2' ] && [ -f '$O/new.qcow2' ]"
finish
