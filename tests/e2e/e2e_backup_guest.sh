#!/bin/sh
# Backups seen from inside the real Linux guest (issue 14's main scenario). The guest writes random
# data to its data disk when told to (qvmd.cmd=vdb: a read-only disk the test writes commands into)
# and reports the sha256 of the whole disk afterwards (GUEST-SUM), so every checksum below is the
# guest's own view of its disk at the instant of a backup:
#   A written, full backup; B over part of it, incremental; a clean powerdown and start; C,
#   incremental (still: the persistent bitmap survived); QEMU killed with SIGKILL and started again
#   by restart = on-failure; D, backup: full, saying why (the bitmap is inconsistent).
# Every point is then restored into new images (standalone qcow2) and each one's data is checked
# against the checksum the guest reported at that point.
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f qcow2 "$T/images/data.qcow2" 16M
truncate -s 1M "$T/images/cmd.raw"
cat >"$T/vms/g.ini" <<INI
[vm]
name = g
memory = 256M
machine = q35
accel = tcg
kernel = $GUEST_DIR/vmlinuz
initrd = $GUEST_DIR/initrd.img
append = console=ttyS0 quiet panic=-1 qvmd.cmd=vdb
shutdown_timeout = 60s
restart = on-failure
[disk data]
file = $T/images/data.qcow2
[disk cmd]
file = $T/images/cmd.raw
format = raw
readonly = yes
INI
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "start g" ctl start g
check "the guest is ready" wait_console g "GUEST-READY" 1 180

# guest N VERB ARGS...: has the guest run "qvmd-cmd N VERB ARGS" and prints its GUEST-SUM checksum.
# (The command goes straight into the image file: the guest reads that disk with O_DIRECT.)
guest() {
	seq=$1
	shift
	dd if=/dev/zero of="$T/images/cmd.raw" bs=512 count=1 conv=notrunc 2>/dev/null
	printf 'qvmd-cmd %s %s\n' "$seq" "$*" | dd of="$T/images/cmd.raw" conv=notrunc 2>/dev/null
	wait_console g "GUEST-SUM $seq " 1 300 || return 1
	dd if=/dev/zero of="$T/images/cmd.raw" bs=512 count=1 conv=notrunc 2>/dev/null
	console g | tr -d '\r' | grep "^GUEST-SUM $seq " | tail -n 1 | awk '{ print $4 }'
}
# bk NAME ARGS...: a backup of the running guest, its --json entry in $T/NAME.json.
bk() {
	b=$1
	shift
	ctl --json backup g "$@" >"$T/$b.json" 2>"$T/$b.err"
}
jf() { field "$2" <"$T/$1.json"; }
zero=$(head -c 16M /dev/zero | sha256sum | awk '{ print $1 }')
sum0=$(guest 1 sum vda)
check "the guest reads its data disk as vda, zeros ($sum0)" [ "$sum0" = "$zero" ]

sumA=$(guest 2 fill vda 0 12288)
check "the guest wrote A (12 MiB) and reports its checksum ($sumA)" sh -c '[ -n "$0" ] && [ "$0" != "$1" ]' "$sumA" "$zero"
check "backup A" bk A
check "... full, and says why ($(jf A .reason))" sh -c '[ "$0" = full ] && [ "$1" = complete ]' "$(jf A .type)" "$(jf A .status)"

sumB=$(guest 3 fill vda 2048 3072)
check "the guest wrote B over part of A ($sumB)" sh -c '[ -n "$0" ] && [ "$0" != "$1" ]' "$sumB" "$sumA"
check "backup B" bk B
check "... incremental on A" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf B .type)" "$(jf B .parent)" "$(jf A .id)"
szA=$(stat -c %s "$(jf A .disks[0].file)")
szB=$(stat -c %s "$(jf B .disks[0].file)")
check "... holding about the 3 MiB changed ($szB bytes; the full one $szA)" [ "$szB" -lt $((szA / 2)) ]

out=$(ctl powerdown g 2>&1); rc=$?
check "powerdown: the guest powers off ($out)" sh -c '[ "$0" -eq 0 ] && echo "$1" | grep -q "ended by guest"' $rc "$out"
check "start g again" ctl start g
check "the guest is ready again" wait_console g "GUEST-READY" 2 180
sumC=$(guest 4 fill vda 8192 6144)
check "the guest wrote C, past the end of A ($sumC)" sh -c '[ -n "$0" ] && [ "$0" != "$1" ]' "$sumC" "$sumB"
check "backup C" bk C --incremental
check "... still incremental after a clean stop and start, on B" \
	sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf C .type)" "$(jf C .parent)" "$(jf B .id)"

pid=$(ctl --json status g | field .pid)
kill -9 "$pid"
n=0
while [ $n -lt 600 ]; do
	p=$(ctl --json status g 2>/dev/null | field .pid 2>/dev/null)
	[ -n "$p" ] && [ "$p" != "$pid" ] && break
	sleep 0.1
	n=$((n + 1))
done
check "QEMU killed with SIGKILL: restarted by restart = on-failure (pid $pid -> ${p:-none})" \
	sh -c '[ -n "$0" ] && [ "$0" != "$1" ] && [ "$2" -ge 1 ]' "${p:-}" "$pid" "$(ctl --json status g | field .restarts)"
check "the guest is ready after the restart" wait_console g "GUEST-READY" 3 180
sumD=$(guest 5 fill vda 5120 1024)
check "the guest wrote D ($sumD)" sh -c '[ -n "$0" ] && [ "$0" != "$1" ]' "$sumD" "$sumC"
out=$(ctl backup g --incremental 2>&1); rc=$?
check "--incremental refuses after the crash ($out)" failed_with $rc "$out" "inconsistent"
check "backup D" bk D
check "... falls back to full, saying why ($(jf D .reason))" \
	sh -c '[ "$0" = full ] && echo "$1" | grep -q inconsistent' "$(jf D .type)" "$(jf D .reason)"

# Every point, restored into new images, holds what the guest reported at that point.
for p in A B C D; do
	id=$(jf $p .id)
	dir="$T/images/restore-$p"
	out=$(ctl restore g "$id" --to "$dir" 2>&1)
	check "restore $p ($id)" [ -f "$dir/data.qcow2" ]
	check "... standalone (no backing file)" \
		sh -c '! qemu-img info --output=json "$0" | grep -q backing-filename' "$dir/data.qcow2"
	qemu-img convert -O raw "$dir/data.qcow2" "$T/restored-$p.raw"
	got=$(sha256sum <"$T/restored-$p.raw" | awk '{ print $1 }')
	eval want=\$sum$p
	check "... its data is the guest's at $p ($got)" [ "$got" = "$want" ]
	rm -f "$T/restored-$p.raw"
done
ctl kill g >/dev/null
finish
