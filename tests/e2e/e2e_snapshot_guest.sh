#!/bin/sh
# Snapshots seen from inside the real Linux guest. With qvmd.data=vda the guest keeps a counter in
# RAM, prints it every few hundred ms as "GUEST-TICK N DISK TEXT" and writes "tickN" to its data
# disk, TEXT being what the disk held before: "tickN-1" while nothing turns anything back.
#  - running VM, snapshot with VM state, revert: the guest goes on from the counter it had at the
#    snapshot (lower than the one it had reached), its disk holds the value of that same instant, and
#    it did not reboot;
#  - stopped VM, disk-only snapshot, revert: the next boot reads the disk as it was at the snapshot.
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f qcow2 "$T/images/data.qcow2" 16M
cat >"$T/vms/g.ini" <<INI
[vm]
name = g
memory = 256M
machine = q35
accel = tcg
kernel = $GUEST_DIR/vmlinuz
initrd = $GUEST_DIR/initrd.img
append = console=ttyS0 quiet panic=-1 qvmd.data=vda
shutdown_timeout = 30s
[disk data]
file = $T/images/data.qcow2
INI
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "start g" ctl start g
check "the guest ticks" wait_console g "GUEST-TICK" 5 120

last_tick() { console g | grep "GUEST-TICK" | tail -n 1 | awk '{ print $2 }'; }
ticks() { console g | grep -c "GUEST-TICK"; }
inits() { console g | grep -c "GUEST-INIT"; }

before=$(last_tick)
out=$(ctl snapshot g live --note "tick $before" 2>&1); rc=$?
check "snapshot with VM state ($out)" [ $rc -eq 0 ]
after=$(last_tick)
# Let the guest go on well past the snapshot.
n=$(ticks)
check "the guest ticks on" wait_console g "GUEST-TICK" $((n + 6)) 120
reached=$(last_tick)
boots=$(inits)
n=$(ticks)
out=$(ctl revert g live 2>&1); rc=$?
check "revert ($out)" [ $rc -eq 0 ]
check "the guest ticks after the revert" wait_console g "GUEST-TICK" $((n + 2)) 60
# The first line after the revert is the first whose counter is not above the one before it.
first=$(console g | tr -d '\r' | grep "GUEST-TICK" | awk '$2 <= prev { print; exit } { prev = $2 }')
t=$(echo "$first" | awk '{ print $2 }')
disk=$(echo "$first" | awk '{ print $4 }')
check "RAM went back: the counter resumed from the snapshot ($before..$after), not from $reached ($first)" \
	sh -c '[ "$0" -ge $(($1 + 1)) ] && [ "$0" -le $(($2 + 1)) ] && [ "$0" -lt "$3" ]' \
	"${t:-0}" "${before:-0}" "${after:-0}" "${reached:-0}"
check "the disk went back with it: it held tick$((t - 1)) ($first)" [ "$disk" = "tick$((${t:-0} - 1))" ]
check "no reboot" [ "$(inits)" -eq "$boots" ]

# Stopped VM: disk-only.
check "kill g" ctl kill g
out=$(ctl snapshot g cold 2>&1); rc=$?
check "offline snapshot ($out)" [ $rc -eq 0 ]
check "start g" ctl start g
n=$(inits)
check "the guest boots and ticks" wait_console g "GUEST-TICK 1 " 2 120
snapdisk=$(console g | grep "GUEST-TICK 1 " | tail -n 1 | awk '{ print $4 }')
check "it reads what the disk held at kill time ($snapdisk)" [ "$snapdisk" != none ]
check "it ticks on (writes to its disk)" wait_console g "GUEST-TICK 4 " 1 120
check "kill g again" ctl kill g
out=$(ctl revert g cold 2>&1); rc=$?
check "offline revert ($out)" [ $rc -eq 0 ]
check "start g" ctl start g
check "the guest boots and ticks" wait_console g "GUEST-TICK 1 " 3 120
disk=$(console g | grep "GUEST-TICK 1 " | tail -n 1 | awk '{ print $4 }')
check "its disk is as it was at the snapshot: $snapdisk ($disk)" [ "$disk" = "$snapdisk" ]
check "delete both" sh -c '"$0" snapshot-delete g live && "$0" snapshot-delete g cold' "$QVMCTL"
ctl kill g >/dev/null
finish
