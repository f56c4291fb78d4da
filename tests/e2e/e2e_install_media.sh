#!/bin/sh
# Install media through the real daemon and QEMU (firmware only): a machine with a bus = sata disk
# created on first start, cdroms (a medium and an empty drive), an e1000 NIC and display = vnc.
# A missing medium fails the start with a clear message; qvmd opens the medium read-only and
# QEMU shows it read-only; `apply` leaves a cdrom or sata disk added to the file pending.
. "$(dirname "$0")/lib.sh"

ISO="$T/images/install.iso"
fw_vm m1 q35 "display = vnc

[disk root]
file = $T/images/m1-root.qcow2
size = 32M
bus = sata
boot = yes

[cdrom cd0]
file = $ISO
boot = yes

[cdrom cd1]

[net lan0]
model = e1000
restrict = yes"
INI="$T/vms/m1.ini"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }

out=$(ctl start m1 2>&1); rc=$?
check "a missing medium fails the start ($out)" \
	failed_with $rc "$out" "vm m1: cdrom cd0: $ISO: No such file or directory"
check "... and the machine stays stopped" contains "$(ctl status m1)" "stopped"
check "... and the medium is never created" [ ! -e "$ISO" ]

qemu-img create -q -f raw "$ISO" 4M
chmod 0444 "$ISO"
check "start with the medium" ctl start m1 >/dev/null
blk=$(jctl qmp m1 query-block)
check "cd0 holds the medium, read-only" eval 'printf "%s" "$blk" |
	grep -q "\"node-name\":\"cd0.fmt\"" && printf "%s" "$blk" | tr "}" "\n" |
	grep "\"node-name\":\"cd0.fmt\"" | grep -q "\"ro\":true"'
check "cd1 is an empty drive" eval 'printf "%s" "$blk" | tr "{" "\n" | grep "\"qdev\":\"cd1\"" |
	grep -qv "inserted"'
check "the sata disk is an ide-hd" contains \
	"$(jctl qmp m1 qom-get '{"path":"/machine/peripheral/root","property":"type"}')" "ide-hd"
check "the NIC is an e1000" contains \
	"$(jctl qmp m1 qom-get '{"path":"/machine/peripheral/lan0","property":"type"}')" "e1000"
check "the image of the sata disk was created" [ -s "$T/images/m1-root.qcow2" ]

cat >>"$INI" <<EOF

[cdrom cd2]
file = $ISO

[disk data]
file = $T/images/m1-data.qcow2
size = 32M
bus = sata
EOF
out=$(ctl apply m1 2>&1); rc=$?
check "apply: a cdrom and a sata disk added are pending, nothing fails ($out)" \
	eval '[ $rc -eq 0 ] && contains "$out" "0 applied, 2 pending, 0 failed"'
check "... saying why" contains "$out" "sata/ide devices cannot be hot-plugged"
check "... and QEMU has neither" lacks "$(jctl qmp m1 query-block)" '"qdev":"cd2"'

check "kill m1" ctl kill m1 >/dev/null
finish
