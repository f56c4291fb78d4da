#!/bin/sh
# qvmctl create and undefine with the real qvmd, qvmctl, qemu-img and QEMU (firmware-only VMs):
# create with every option writes vm_dir/NAME.ini (the text the reply carries, byte for byte, and
# qvmd -n finds it valid), creates the images and loads the VM; each kind of bad option leaves no
# file and no image; --start runs the VM; undefine is refused while it runs, and removes the file,
# with --remove-disks the images below image_dirs only (one outside is kept and reported).
. "$(dirname "$0")/lib.sh"

start_qvmd || { not_ok "qvmd started"; finish; exit 1; }
mkdir -p "$T/outside"
# nothing_left: no definition, no image of NAME.
nothing_left() { [ ! -e "$T/vms/$1.ini" ] && [ -z "$(ls "$T/images" | grep "^$1-")" ]; }

# ---- create with every option ----
qemu-img create -q -f raw "$T/images/lvm-like.raw" 4M
printf 'not really an iso\n' >"$T/images/install.iso"
out=$(ctl --json create full --memory 128M --vcpus 2 --disk 8M --disk "path=$T/images/lvm-like.raw,format=raw" \
	--disk "path=$T/images/full-extra.qcow2,size=16M,id=extra" --net user,restrict --net user \
	--cdrom "$T/images/install.iso" --machine pc --accel "$FW_ACCEL" --os-variant linux \
	--autostart 2>&1); rc=$?
check "create with every option ($out)" [ $rc -eq 0 ]
out=$(printf '%s\n' "$out" | "$BIN_DIR/tests/jget" .)
check "... wrote vm_dir/full.ini" [ -f "$T/vms/full.ini" ]
check "... created the bare --disk image in image_dirs[0]" [ -f "$T/images/full-disk0.qcow2" ]
check "... and the path=,size= image" [ -f "$T/images/full-extra.qcow2" ]
check "... the reply lists both created images" contains "$out" "full-disk0.qcow2"
check "... (the raw one was not created)" lacks "$out" '"images_created":[^]]*lvm-like'
printf "%s\n" "$out" | "$BIN_DIR/tests/jget" .definition | head -c -1 >"$T/reply.ini" # jget adds a newline
check "the reply's definition is the file, byte for byte" cmp -s "$T/reply.ini" "$T/vms/full.ini"
ini=$(cat "$T/vms/full.ini")
check "the file says how it was made" contains "$ini" "# Written by qvmctl create"
check "... memory 128M, vcpus 2, machine pc, autostart" sh -c \
	"grep -qx 'memory = 128M' '$T/vms/full.ini' && grep -qx 'vcpus = 2' '$T/vms/full.ini' &&
	 grep -qx 'machine = pc' '$T/vms/full.ini' && grep -qx 'autostart = yes' '$T/vms/full.ini'"
check "... disk0 boots, the named disk keeps its id" sh -c \
	"grep -qx '\[disk disk0\]' '$T/vms/full.ini' && grep -qx 'boot = yes' '$T/vms/full.ini' &&
	 grep -qx '\[disk extra\]' '$T/vms/full.ini' && grep -qx 'format = raw' '$T/vms/full.ini'"
check "... net0 restricted, net1 not" sh -c \
	"grep -qx '\[net net0\]' '$T/vms/full.ini' && grep -qx '\[net net1\]' '$T/vms/full.ini' &&
	 [ \$(grep -c '^restrict = yes' '$T/vms/full.ini') -eq 1 ]"
check "... the cdrom boots after the disks" sh -c \
	"grep -qx '\[cdrom cdrom0\]' '$T/vms/full.ini' && grep -qx 'file = $T/images/install.iso' '$T/vms/full.ini'"
out=$("$QVMD" -n -c "$T/qvmd.conf" 2>&1); rc=$?
check "qvmd -n reads the written file without errors ($out)" exited_with $rc 0 "$out" "0 errors"
out=$(ctl list 2>&1)
check "the vm is loaded" contains "$out" full

# ---- bad options: usage errors in qvmctl (exit 2), refusals in qvmd (exit 1); nothing left ----
out=$(ctl create bad1 --memory 64M --disk 12X 2>&1); rc=$?
check "a bad size is a usage error ($out)" exited_with $rc 2 "$out" "'12X' is not a size"
out=$(ctl create bad1 --memory 64M --disk "fmt=raw" 2>&1); rc=$?
check "an unknown --disk key names the keys ($out)" exited_with $rc 2 "$out" \
	"--disk: unknown key 'fmt' (use path, format, size, id)"
out=$(ctl create bad1 --memory 64M --os-variant beos 2>&1); rc=$?
check "an unknown variant lists the known ones ($out)" exited_with $rc 2 "$out" \
	"unknown --os-variant 'beos' (known: linux, windows, generic)"
out=$(ctl create bad1 --memory 64M --net wifi 2>&1); rc=$?
check "a bad --net is a usage error ($out)" exited_with $rc 2 "$out" "--net: 'wifi'"
# The daemon checks the same (a client that is not qvmctl).
out=$(printf '%s\n' '{"id":1,"cmd":"create","vm":"bad1","args":{"memory_bytes":67108864,"os_variant":"beos"}}' | "$CTLRAW" "$SOCK" 2>&1)
check "qvmd refuses an unknown variant too ($out)" contains "$out" "known: linux, windows, generic"
out=$(printf '%s\n' '{"id":1,"cmd":"create","vm":"bad1","args":{"memory_bytes":67108864,"nets":[{"type":"user","bridge":"br0"}]}}' | "$CTLRAW" "$SOCK" 2>&1)
check "qvmd refuses a bad NIC ($out)" contains "$out" '"ok":false'
out=$(printf '%s\n' '{"id":1,"cmd":"create","vm":"bad1","args":{"memory_bytes":67108864,"disks":[{"size_bytes":1000}]}}' | "$CTLRAW" "$SOCK" 2>&1)
check "qvmd refuses an image size the loader refuses ($out)" contains "$out" '"ok":false'
out=$(ctl create bad1 --memory 64M --disk 8M --disk "path=$T/nowhere/x.qcow2" 2>&1); rc=$?
check "a missing disk file without a size is refused ($out)" failed_with $rc "$out" "No such file"
out=$(ctl create bad1 --memory 64M --disk 8M --cdrom "$T/images/missing.iso" 2>&1); rc=$?
check "a missing ISO is refused ($out)" failed_with $rc "$out" "missing.iso"
out=$(ctl create full --memory 64M --disk 8M 2>&1); rc=$?
check "a name already defined is refused ($out)" failed_with $rc "$out" "vm full: already defined"
printf '[vm]\nname = broken\nmemory = lots\n' >"$T/vms/broken.ini"
out=$(ctl create broken --memory 64M --disk 8M 2>&1); rc=$?
check "an existing NAME.ini (not loaded) is refused ($out)" failed_with $rc "$out" "already exists"
check "... and left as it was" grep -qx "memory = lots" "$T/vms/broken.ini"
rm -f "$T/vms/broken.ini"
# A loader error found only in the whole text (memory out of range): after validation, before
# any image.
out=$(ctl create bad1 --memory 1K --disk 8M 2>&1); rc=$?
check "a definition the loader refuses is refused with its error ($out)" failed_with $rc "$out" "memory"
check "no bad option left a file or an image" sh -c \
	"[ ! -e '$T/vms/bad1.ini' ] && ! ls '$T/images' | grep -q '^bad1-'"
# An image that cannot be created (qemu-img fails: size beyond the file system's limits is not
# reliable; a directory in the way is): nothing left, the other image removed again.
mkdir "$T/images/bad2-disk1.qcow2"
out=$(ctl create bad2 --memory 64M --disk 8M --disk path="$T/images/bad2-x/y.qcow2,size=8M" 2>&1); rc=$?
check "a failing image creation is refused ($out)" [ $rc -ne 0 ]
check "... and leaves no file and no image" sh -c \
	"[ ! -e '$T/vms/bad2.ini' ] && [ ! -e '$T/images/bad2-disk0.qcow2' ]"
rmdir "$T/images/bad2-disk1.qcow2"

# ---- --start ----
out=$(ctl create run1 --memory 64M --disk 8M --net user,restrict --accel "$FW_ACCEL" --start 2>&1); rc=$?
check "create --start ($out)" exited_with $rc 0 "$out" "vm run1: started"
check "... the vm runs" wait_state run1 running 60
out=$(ctl undefine run1 2>&1); rc=$?
check "undefine is refused while it runs ($out)" failed_with $rc "$out" "vm run1: running (stop it first)"
check "... the file stays" [ -f "$T/vms/run1.ini" ]
ctl kill run1 >/dev/null 2>&1
wait_state run1 stopped 60

# ---- undefine ----
out=$(ctl undefine run1 2>&1); rc=$?
check "undefine without --remove-disks ($out)" exited_with $rc 0 "$out" "kept image"
check "... removed the file" [ ! -e "$T/vms/run1.ini" ]
check "... kept the image" [ -f "$T/images/run1-disk0.qcow2" ]
check "... removed its state directory" [ ! -e "$T/state/run1" ]
check "... and the vm is gone" sh -c "! '$QVMCTL' list | grep -q run1"
# An image outside image_dirs (root may name one) is kept with the reason.
qemu-img create -q -f qcow2 "$T/outside/out.qcow2" 8M
out=$(ctl create gone --memory 64M --disk 8M --disk "path=$T/outside/out.qcow2" 2>&1); rc=$?
check "root may name an image outside image_dirs ($out)" [ $rc -eq 0 ]
out=$(ctl --json undefine gone --remove-disks 2>&1); rc=$?
check "undefine --remove-disks ($out)" [ $rc -eq 0 ]
check "... removed the image below image_dirs" [ ! -e "$T/images/gone-disk0.qcow2" ]
check "... kept the one outside" [ -f "$T/outside/out.qcow2" ]
check "... and says why" contains "$out" "not below image_dirs"
check "... the file is gone" [ ! -e "$T/vms/gone.ini" ]
out=$("$QVMD" -n -c "$T/qvmd.conf" 2>&1); rc=$?
check "qvmd -n is still clean ($out)" [ $rc -eq 0 ]

finish
