#!/bin/sh
# How QEMU reaches its disks: qvmd opens every image (a qcow2's backing chain too, and the UEFI
# variable store) and QEMU gets descriptors in fdsets, never a name. Checked on real QEMU: no image
# path on its command line or in its block nodes, a backing chain as explicit nodes, one image
# refused to a second VM (and twice to one VM), clear errors for images that cannot be opened,
# hot-plug attach/detach cycles that leave query-fdsets as they found it, also across a qvmd
# restart.
. "$(dirname "$0")/lib.sh"

I="$T/images"
chmod 0700 "$I"
qemu-img create -q -f qcow2 "$I/base.qcow2" 64M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$I/top.qcow2"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$I/top2.qcow2"
qemu-img create -q -f raw "$I/data.raw" 16M
qemu-img create -q -f qcow2 "$I/hot.qcow2" 16M
qemu-img create -q -f qcow2 -u -b nobase.qcow2 -F qcow2 "$I/orphan.qcow2" 16M
qemu-img create -q -f qcow2 -u -b loop2.qcow2 -F qcow2 "$I/loop1.qcow2" 16M
qemu-img create -q -f qcow2 -u -b loop1.qcow2 -F qcow2 "$I/loop2.qcow2" 16M
mkfifo "$I/fifo"
qemu-img create -q -f raw "$I/iso.raw" 1M
ln -s iso.raw "$I/link.raw" # the same image under another name
chmod 0600 "$I"/*

# a: UEFI, a qcow2 with a backing file and a raw disk.
fw_vm a q35 "firmware = uefi
hotplug_slots = 2

[disk root]
file = $I/top.qcow2

[disk data]
file = $I/data.raw
format = raw"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
out=$(ctl start a 2>&1)
check "a (uefi, backing chain, raw disk) starts ($out)" [ $? -eq 0 ]
pid=$(jctl status a | field .pid)
cmdline=$(tr '\0' '\n' <"/proc/$pid/cmdline")
check "a: no image path on qemu's command line" lacks "$cmdline" "$I/"
check "a: nor the uefi variable store's" lacks "$cmdline" "OVMF_VARS"
check "a: -add-fd on qemu's command line" contains "$cmdline" "-add-fd"
nodes=$(jctl qmp a query-named-block-nodes)
check "a: file nodes open /dev/fdset/N" \
	[ "$(printf '%s' "$nodes" | grep -o '"file":"/dev/fdset/[0-9]*"' | wc -l)" -ge 4 ]
check "a: no block node has an image's name" lacks "$nodes" "\"file\":\"$I/"
check "a: the backing file is its own node (root.fmt1)" contains "$nodes" '"node-name":"root.fmt1"'
check "a: query-block shows the chain (depth 1)" \
	contains "$(jctl qmp a query-block)" '"backing_file_depth":1'
check "a: qemu holds base.qcow2 (opened by qvmd)" \
	sh -c "ls -l /proc/$pid/fd | grep -q '$I/base.qcow2'"
sets=$(jctl qmp a query-fdsets)
for o in root.file root.file1 data.file qvmd.fw-vars; do
	check "a: fdset for $o" contains "$sets" "\"opaque\":\"$o\""
done
check "images stay root-owned 0600" [ "$(stat -c %u:%a "$I/top.qcow2" "$I/base.qcow2" | sort -u)" = "0:600" ]

# One image, two VMs.
fw_vm b q35 "[disk root]
file = $I/top.qcow2"
fw_vm b2 q35 "[disk base]
file = $I/base.qcow2"
fw_vm c q35 "[disk base]
file = $I/base.qcow2
readonly = yes"
fw_vm d q35 "[disk one]
file = $I/iso.raw
format = raw
readonly = yes

[disk two]
file = $I/link.raw
format = raw
readonly = yes"
ctl reload >/dev/null
out=$(ctl start b 2>&1); rc=$?
check "b on a's image is refused, naming the image and a ($out)" \
	failed_with $rc "$out" "vm b: disk root: image $I/top.qcow2 is in use by vm a"
check "b stays stopped" [ "$(jctl status b | field .state)" = stopped ]
out=$(ctl start b2 2>&1); rc=$?
check "b2 writing a's backing file is refused ($out)" failed_with $rc "$out" "base.qcow2 is in use by vm a"
out=$(ctl start c 2>&1)
check "c reading a's backing file read-only starts ($out)" [ $? -eq 0 ]
out=$(ctl start d 2>&1); rc=$?
check "d naming one image twice (by two names) is refused ($out)" \
	failed_with $rc "$out" "vm d: disk two: image $I/link.raw is also used by disk one"

# A cdrom's medium is held read-only: other VMs may read it too, none may write it, and a VM
# never has its own medium as a writable disk.
qemu-img create -q -f raw "$I/inst.iso" 1M
qemu-img create -q -f raw "$I/inst2.iso" 1M
qemu-img create -q -f raw "$I/own.raw" 1M
ln -s own.raw "$I/own.iso"
chmod 0600 "$I/inst.iso" "$I/inst2.iso" "$I/own.raw"
fw_vm cd1 q35 "hotplug_slots = 1

[cdrom inst]
file = $I/inst.iso"
fw_vm cd2 q35 "[cdrom inst]
file = $I/inst.iso"
fw_vm w1 q35 "[disk data]
file = $I/inst.iso
format = raw"
fw_vm w2 q35 "[disk data]
file = $I/inst2.iso
format = raw"
fw_vm cd3 q35 "[cdrom inst]
file = $I/inst2.iso"
fw_vm own q35 "[disk data]
file = $I/own.raw
format = raw

[cdrom inst]
file = $I/own.iso"
ctl reload >/dev/null
out=$(ctl start cd1 2>&1)
check "cd1 with inst.iso in its cdrom starts ($out)" [ $? -eq 0 ]
out=$(ctl attach-disk cd1 hx --file "$I/inst.iso" --format raw 2>&1); rc=$?
check "cd1: its own medium as a writable disk is refused ($out)" \
	failed_with $rc "$out" "vm cd1: disk hx: image $I/inst.iso is the medium in cdrom inst of this vm"
out=$(ctl start w1 2>&1); rc=$?
check "w1 writing cd1's medium is refused ($out)" \
	failed_with $rc "$out" "vm w1: disk data: image $I/inst.iso is in use by vm cd1"
out=$(ctl attach-disk a hx --file "$I/inst.iso" --format raw 2>&1); rc=$?
check "attaching cd1's medium writable to a is refused ($out)" failed_with $rc "$out" "in use by vm cd1"
out=$(ctl start cd2 2>&1)
check "cd2 reading the same medium starts ($out)" [ $? -eq 0 ]
out=$(ctl start w2 2>&1)
check "w2 writing inst2.iso starts ($out)" [ $? -eq 0 ]
out=$(ctl start cd3 2>&1); rc=$?
check "cd3 with w2's disk as its medium is refused ($out)" \
	failed_with $rc "$out" "vm cd3: cdrom inst: image $I/inst2.iso is in use by vm w2"
check "cd3 stays stopped" [ "$(jctl status cd3 | field .state)" = stopped ]
out=$(ctl start own 2>&1); rc=$?
check "own: its disk as its medium (by another name) is refused ($out)" \
	failed_with $rc "$out" "vm own: cdrom inst: image $I/own.iso is also used by disk data"
for v in cd1 cd2 w2; do ctl kill "$v" >/dev/null 2>&1; done

# Images that cannot be opened.
fw_vm m q35 "[disk gone]
file = $I/missing.qcow2"
fw_vm e1 q35 "[disk dir]
file = $I
format = raw"
fw_vm e2 q35 "[disk pipe]
file = $I/fifo
format = raw"
fw_vm e3 q35 "[disk orphan]
file = $I/orphan.qcow2"
fw_vm e4 q35 "[disk loop]
file = $I/loop1.qcow2"
ctl reload >/dev/null
out=$(ctl start m 2>&1); rc=$?
check "missing image: vm, disk and path named ($out)" \
	failed_with $rc "$out" "vm m: disk gone: $I/missing.qcow2: No such file or directory"
check "m stays stopped" [ "$(jctl status m | field .state)" = stopped ]
out=$(ctl start e1 2>&1); rc=$?
check "a directory as image ($out)" failed_with $rc "$out" "vm e1: disk dir: $I: is a directory"
out=$(ctl start e2 2>&1); rc=$?
check "a FIFO as image: refused, qvmd not blocked ($out)" \
	failed_with $rc "$out" "not a regular file or block device"
out=$(ctl start e3 2>&1); rc=$?
check "missing backing file: named with its overlay ($out)" failed_with $rc "$out" \
	"disk orphan: backing file $I/nobase.qcow2: No such file or directory (of $I/orphan.qcow2)"
out=$(ctl start e4 2>&1); rc=$?
check "a backing loop is an error ($out)" failed_with $rc "$out" "loops back to $I/loop1.qcow2"
check "qvmd still answers" [ "$(jctl status a | field .state)" = running ]

# Hot-plug on the real guest: attach/detach cycles leave query-fdsets as they were.
guest_vm g pc
ctl reload >/dev/null
ctl start g >/dev/null
check "guest ready" wait_console g GUEST-READY 1 120
sets0=$(jctl qmp g query-fdsets)
out=$(ctl attach-disk g h1 --file "$I/hot.qcow2" 2>&1)
check "g: attach-disk ($out)" [ $? -eq 0 ]
check "g: the guest sees it" wait_console g "GUEST-EVENT add block/vd" 1 30
sets=$(jctl qmp g query-fdsets)
check "g: its fdset is there" contains "$sets" '"opaque":"h1.file"'
check "g: read-write and read-only descriptors in it" \
	[ "$(printf '%s' "$sets" | grep -o '"opaque":"h1.file"' | wc -l)" -eq 2 ]
out=$(ctl attach-disk a h2 --file "$I/hot.qcow2" 2>&1); rc=$?
check "the same image to a second vm is refused ($out)" failed_with $rc "$out" "in use by vm g"
check "g: detach" ctl detach g h1
check "g: the guest saw it go" wait_console g "GUEST-EVENT remove block/vd" 1 30
check "g: query-fdsets as before the attach" [ "$(jctl qmp g query-fdsets)" = "$sets0" ]
out=$(ctl attach-disk g h3 --file "$I/top2.qcow2" 2>&1)
check "g: attach a qcow2 with a backing file shared read-only with a and c ($out)" [ $? -eq 0 ]
check "g: its backing file is a node of its own" \
	contains "$(jctl qmp g query-named-block-nodes)" '"node-name":"h3.fmt1"'
check "g: the guest sees it" wait_console g "GUEST-EVENT add block/vd" 2 30
check "g: detach it" ctl detach g h3
check "g: the guest saw it go" wait_console g "GUEST-EVENT remove block/vd" 2 30
check "g: no node of it left" lacks "$(jctl qmp g query-named-block-nodes)" '"h3.'
check "g: query-fdsets as before" [ "$(jctl qmp g query-fdsets)" = "$sets0" ]
out=$(ctl attach-disk g h4 --file "$I/new.qcow2" --create 16M 2>&1)
check "g: attach-disk --create ($out)" [ $? -eq 0 ]
check "g: the guest sees it" wait_console g "GUEST-EVENT add block/vd" 3 30
check "g: detach it" ctl detach g h4
check "g: the guest saw it go" wait_console g "GUEST-EVENT remove block/vd" 3 30
check "g: query-fdsets as before" [ "$(jctl qmp g query-fdsets)" = "$sets0" ]
# An attach QEMU refuses is rolled back, its fdset removed.
ctl qmp g device_add '{"driver":"virtio-rng-pci","id":"dupe"}' >/dev/null
out=$(ctl attach-disk g dupe --file "$I/hot.qcow2" 2>&1); rc=$?
check "g: refused device_add ($out)" failed_with $rc "$out" "Duplicate"
check "g: query-fdsets as before after the rollback" [ "$(jctl qmp g query-fdsets)" = "$sets0" ]

# After a qvmd restart: the images of adopted VMs are known, their fdsets found by name.
check "g: attach h5" ctl attach-disk g h5 --file "$I/hot.qcow2"
check "g: the guest sees it" wait_console g "GUEST-EVENT add block/vd" 4 30
stop_qvmd
start_qvmd || { not_ok "qvmd starts again"; finish; exit 1; }
out=$(ctl attach-disk a h6 --file "$I/hot.qcow2" 2>&1); rc=$?
check "after the restart, g's image is still refused to a ($out)" failed_with $rc "$out" "in use by vm g"
out=$(ctl start b 2>&1); rc=$?
check "after the restart, a's image is still refused to b ($out)" failed_with $rc "$out" "in use by vm a"
check "g: detach h5 after the restart" ctl detach g h5
check "g: the guest saw it go" wait_console g "GUEST-EVENT remove block/vd" 4 30
check "g: query-fdsets as before" [ "$(jctl qmp g query-fdsets)" = "$sets0" ]
check "g: attach h5 again after the restart" ctl attach-disk g h5 --file "$I/hot.qcow2"
check "g: one fdset for it" \
	[ "$(jctl qmp g query-fdsets | grep -o '"opaque":"h5.file"' | wc -l)" -eq 2 ]

for v in a c g; do ctl kill $v >/dev/null 2>&1; done
finish
