# Shared by the backup tests (source after lib.sh): the firmware-only VM b with a qcow2 disk d1
# (64 MiB) and a raw disk d2 (8 MiB), written from the host through the VM's own block nodes
# (HMP qemu-io, so its dirty bitmaps see every write), with a raw reference copy of each disk that
# gets the same writes; the copy of the references at a backup's instant is what its restore must
# equal.

# backup_vm_b: the images, the references and b's definition (BACKUP_DEF, its disk sections).
backup_vm_b() {
	qemu-img create -q -f qcow2 "$T/images/d1.qcow2" 64M
	qemu-img create -q -f raw "$T/images/d2.raw" 8M
	qemu-img create -q -f raw "$T/ref-d1.raw" 64M
	qemu-img create -q -f raw "$T/ref-d2.raw" 8M
	BACKUP_DEF="[disk d1]
file = $T/images/d1.qcow2
[disk d2]
file = $T/images/d2.raw
format = raw"
	fw_vm b q35 "$BACKUP_DEF"
}

# wr DISK PATTERN OFFSET LEN: writes through b's device and into the reference.
wr() {
	ctl qmp b human-monitor-command \
		"{\"command-line\":\"qemu-io -d /machine/peripheral/$1/virtio-backend \\\"write -P $2 $3 $4\\\"\"}" \
		>/dev/null &&
		qemu-io -f raw -c "write -P $2 $3 $4" "$T/ref-$1.raw" >/dev/null
}
# point NAME: keeps the references as they are now (the instant of a backup).
point() { cp "$T/ref-d1.raw" "$T/$1-d1.raw" && cp "$T/ref-d2.raw" "$T/$1-d2.raw"; }
# bk NAME ARGS...: a backup of b, paused for its instant, its --json entry in $T/NAME.json.
bk() {
	n=$1
	shift
	ctl pause b >/dev/null
	point "$n"
	ctl --json backup b "$@" >"$T/$n.json" 2>"$T/$n.err"
	r=$?
	ctl resume b >/dev/null
	return $r
}
# jf NAME PATH: a field of backup NAME's entry.
jf() { field "$2" <"$T/$1.json"; }
