#!/bin/sh
# Config-driven deployments on the real Linux guest: edit the VM's file, `qvmctl apply` makes the
# running VM what it says (devices hot-plugged and unplugged, the guest sees them), what cannot
# change live is pending until the restart, --dry-run and a broken file change nothing, auto_apply
# applies on reload, a hot-plug with --persist and apply agree, and a qvmd killed during an apply
# leaves books, QEMU and file that the next apply brings together.
. "$(dirname "$0")/lib.sh"

for i in a b c d e f; do qemu-img create -q -f qcow2 "$T/images/$i.qcow2" 32M; done
guest_vm ga q35 "hotplug_slots = 12"
INI="$T/vms/ga.ini"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "start ga" ctl start ga >/dev/null
check "guest ready" wait_console ga GUEST-READY 1 120
pid=$(jctl status ga | field .pid)

# live_ids: the ids QEMU's device model has (peripheral children), sorted.
live_ids() {
	jctl qmp ga qom-list '{"path":"/machine/peripheral"}' | grep -o '"name":"[^"]*","type":"child<[^"]*' |
		sed 's/"name":"\([^"]*\)".*/\1/' | grep -v '^hp\.' | sort | tr '\n' ' '
}
adds() { console ga | grep -c "GUEST-EVENT add $1"; }
removes() { console ga | grep -c "GUEST-EVENT remove $1"; }

out=$(ctl apply ga 2>&1)
check "apply with nothing changed: no changes ($out)" contains "$out" "no changes"
check "diff: nothing" contains "$(ctl diff ga)" "no differences"

# Two disks and a NIC added to the file.
cat >>"$INI" <<EOF

[disk d1]
file = $T/images/a.qcow2

[disk d2]
file = $T/images/b.qcow2
cache = writeback

[net n1]
restrict = yes
EOF
before=$(live_ids)
out=$(ctl apply ga --dry-run 2>&1); rc=$?
check "apply --dry-run lists the plan ($out)" eval '[ $rc -eq 0 ] && contains "$out" "disk d1" &&
	contains "$out" "net n1" && contains "$out" "planned" && contains "$out" "nothing changed"'
check "... and changes nothing in QEMU" [ "$(live_ids)" = "$before" ]
check "... nor in qvmd's books" lacks "$(jctl devices ga)" '"live":true,"persistent":true'
out=$(ctl diff ga)
check "diff: one line per difference, marked live ($out)" \
	[ "$(printf '%s\n' "$out" | grep -c '^live     add ')" -eq 3 ]
check "status lists them as pending (not applied yet)" \
	[ "$(ctl status ga | grep -c '^pending: .*not applied yet')" -eq 3 ]
out=$(ctl apply ga 2>&1); rc=$?
check "apply: three changes applied ($out)" [ $rc -eq 0 ]
check "... one line each" [ "$(printf '%s\n' "$out" | grep -c '^[dn][ie][st]k* [a-z0-9]* *add .* applied')" -eq 3 ]
check "... and the sum" contains "$out" "3 applied, 0 pending, 0 failed"
check "the guest sees both disks" wait_console ga "GUEST-EVENT add block/vd" 2 60
check "the guest sees the NIC" wait_console ga "GUEST-EVENT add net/eth" 1 60
check "QEMU has d1 d2 n1" contains "$(live_ids)" "d1 d2 n1"
check "the hot-plugged disk got its section's cache mode" \
	contains "$(jctl devices ga)" '"id":"d2","kind":"disk","file":"'"$T"'/images/b.qcow2","format":"qcow2","readonly":false,"cache":"writeback"'
out=$(ctl apply ga 2>&1)
check "a second apply: no changes ($out)" contains "$out" "no changes"
check "status: definition not changed" [ "$(jctl status ga | field .definition_changed)" = false ]
check "status: nothing pending" lacks "$(ctl status ga)" "pending:"

# One disk removed from the file.
r0=$(removes block/vd)
sed -i '/^\[disk d2\]/,/^cache/d' "$INI"
out=$(jctl apply ga 2>&1)
check "apply: disk d2 removed ($out)" \
	contains "$out" '"what":"disk d2","action":"remove","old":"file='"$T"'/images/b.qcow2 cache=writeback","new":null,"result":"applied"'
check "the guest lost it" wait_console ga "GUEST-EVENT remove block/vd" $((r0 + 1)) 60
check "QEMU no longer has d2" lacks "$(live_ids)" "d2"

# A changed section: pending unless it says apply = replace; then unplugged and plugged again.
sed -i 's|^file = '"$T"'/images/a.qcow2$|&\ncache = writeback|' "$INI"
out=$(jctl apply ga 2>&1)
check "changed disk without apply = replace: pending ($out)" \
	contains "$out" '"what":"disk d1","action":"change","old":"cache=none","new":"cache=writeback","result":"pending","reason":"restart needed (or apply = replace in its section)"'
a0=$(adds block/vd)
r0=$(removes block/vd)
sed -i 's|^cache = writeback$|&\napply = replace|' "$INI"
out=$(jctl apply ga 2>&1)
check "with apply = replace: replaced ($out)" \
	contains "$out" '"what":"disk d1","action":"replace","old":"cache=none","new":"cache=writeback","result":"applied"'
check "the guest saw it go" wait_console ga "GUEST-EVENT remove block/vd" $((r0 + 1)) 60
check "... and come back" wait_console ga "GUEST-EVENT add block/vd" $((a0 + 1)) 60
check "it runs with the new cache mode" contains "$(jctl devices ga)" '"id":"d1","kind":"disk","file":"'"$T"'/images/a.qcow2","format":"qcow2","readonly":false,"cache":"writeback"'

# Failure half-way: one device QEMU cannot get fails and leaves nothing behind, the other is
# applied; the next apply tries the failed one again.
printf '\n[disk m1]\nfile = %s/images/missing.qcow2\n\n[net m2]\nrestrict = yes\n' "$T" >>"$INI"
out=$(ctl --json apply ga 2>&1); rc=$?
out=$(printf '%s\n' "$out" | field .)
check "apply with one bad device: exit 1 ($out)" [ $rc -eq 1 ]
check "... the bad one failed with why" \
	contains "$out" '"what":"disk m1","action":"add","old":null,"new":"file='"$T"'/images/missing.qcow2","result":"failed","error":"vm ga: '"$T"'/images/missing.qcow2: No such file or directory"'
check "... the other applied" eval 'contains "$out" "\"what\":\"net m2\",\"action\":\"add\"" &&
	contains "$out" "\"applied\":1,\"pending\":0,\"failed\":1"'
check "QEMU has m2, not m1" eval 'contains "$(live_ids)" m2 && lacks "$(live_ids)" m1'
check "diff still shows m1 to add" contains "$(ctl diff ga)" "live     add disk m1"
qemu-img create -q -f qcow2 "$T/images/missing.qcow2" 16M
out=$(ctl apply ga 2>&1)
check "the next apply plugs it ($out)" contains "$out" "1 applied, 0 pending, 0 failed"
check "QEMU has m1 now" contains "$(live_ids)" m1

# Memory changed: pending until the restart, the VM keeps running.
sed -i 's/^memory = 256M/memory = 512M/' "$INI"
out=$(ctl apply ga 2>&1); rc=$?
check "apply: memory pending, restart needed ($out)" eval '[ $rc -eq 0 ] &&
	contains "$out" "memory  change  256M  512M  pending  restart needed"'
check "the vm keeps running" [ "$(jctl status ga | field .state)" = running ]
check "... the same QEMU" [ "$(jctl status ga | field .pid)" = "$pid" ]
out=$(ctl status ga)
check "status: pending: memory 256M -> 512M (restart needed)" \
	contains "$out" "pending: memory 256M -> 512M (restart needed)"
check "status --json has it in pending" \
	contains "$(jctl status ga)" '"pending":[{"what":"memory","action":"change","old":"256M","new":"512M","live":false'
check "diff marks it pending" contains "$(ctl diff ga)" "pending  change memory: 256M -> 512M (restart needed)"

# A broken file changes nothing and says where.
cp "$INI" "$T/ga.good"
printf '\n[disk d3]\nfile = %s\ncache = fast\n' "$T/images/c.qcow2" >>"$INI"
line=$(grep -n '^cache = fast' "$INI" | cut -d: -f1)
before=$(live_ids)
out=$(ctl apply ga 2>&1); rc=$?
check "broken file: apply fails with file:line ($out)" failed_with $rc "$out" "ga.ini:$line: [disk d3] cache"
check "... and nothing changed" [ "$(live_ids)" = "$before" ]
out=$(ctl diff ga 2>&1); rc=$?
check "diff of a broken file says where too" failed_with $rc "$out" "ga.ini:$line:"
cp "$T/ga.good" "$INI"

# A hot-plug with --persist and apply are the same state.
check "attach-disk --persist" ctl attach-disk ga p1 --file "$T/images/d.qcow2" --persist
check "attach-net --persist" ctl attach-net ga p2 --restrict --persist
out=$(jctl apply ga 2>&1)
check "apply after --persist: no device change, the memory still pending ($out)" \
	contains "$out" '"changes":[{"what":"memory","action":"change","old":"256M","new":"512M","result":"pending","reason":"restart needed"}],"dry_run":false,"applied":0,"pending":1,"failed":0'
check "diff: only the memory, still pending" [ "$(ctl diff ga)" = "pending  change memory: 256M -> 512M (restart needed)" ]
# ... and the section --persist wrote, rewritten by hand as an operator would (no mac: derived).
sed -i '/^\[net p2\]/,$d' "$INI"
printf '[net p2]\nrestrict = yes\n' >>"$INI"
out=$(jctl apply ga 2>&1)
check "the same NIC written by hand: no change ($out)" \
	contains "$out" '"changes":[{"what":"memory","action":"change","old":"256M","new":"512M","result":"pending","reason":"restart needed"}],"dry_run":false,"applied":0,"pending":1,"failed":0'
check "diff after that: only the memory" [ "$(ctl diff ga)" = "pending  change memory: 256M -> 512M (restart needed)" ]

# auto_apply: reload applies every running VM whose file changed.
stop_qvmd
printf 'auto_apply = yes\n' >>"$T/qvmd.conf"
start_qvmd || { not_ok "qvmd starts again"; finish; exit 1; }
check "re-attached" wait_state ga running 20
n0=$(adds net/eth)
printf '\n[net n2]\nrestrict = yes\n' >>"$INI"
out=$(ctl reload 2>&1)
check "reload lists the vm it applies to ($out)" contains "$out" "apply: ga"
applied() { contains "$(live_ids)" "n2"; }
n=0
while ! applied && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
check "reload with auto_apply plugged n2" applied
check "the guest sees it" wait_console ga "GUEST-EVENT add net/eth" $((n0 + 1)) 60
out=$(ctl reload 2>&1)
check "nothing to apply on the next reload ($out)" contains "$out" "apply: none"

# qvmd killed during an apply of several devices: the next qvmd and apply bring books, QEMU and
# the file together. QEMU is stopped (SIGSTOP) so that the apply is caught half-way: its devices
# recorded as attaching, its first commands written to the socket, no answer yet.
printf '\n[disk k1]\nfile = %s\n\n[disk k2]\nfile = %s\n\n[net k3]\nrestrict = yes\n' \
	"$T/images/e.qcow2" "$T/images/f.qcow2" >>"$INI"
qpid=$(jctl status ga | field .pid)
kill -STOP "$qpid"
ctl apply ga >/dev/null 2>&1 &
APPLY=$!
attaching() { grep -o '"pending_attach":true' "$T/run/ga/devices.json" 2>/dev/null | wc -l; }
n=0
while [ "$(attaching)" -lt 3 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
check "the apply is under way: three devices recorded as attaching" [ "$(attaching)" -eq 3 ]
kill -9 "$QVMD_PID"
wait "$QVMD_PID" 2>/dev/null
QVMD_PID=
kill -CONT "$qpid"
wait "$APPLY"
start_qvmd || { not_ok "qvmd starts after kill -9"; finish; exit 1; }
check "re-attached after kill -9" wait_state ga running 20
# books: the devices qvmd tracks (its run directory's devices.json), sorted like live_ids.
books() {
	grep -o '"id":"[^"]*"' "$T/run/ga/devices.json" | sed 's/"id":"\([^"]*\)"/\1/' | sort |
		tr '\n' ' '
}
n=0
while { [ "$(attaching)" -ne 0 ] || [ "$(books)" != "$(live_ids)" ]; } && [ $n -lt 100 ]; do
	sleep 0.1
	n=$((n + 1))
done
check "the next qvmd settled the interrupted attaches ($(books) / $(live_ids))" \
	eval '[ "$(attaching)" -eq 0 ] && [ "$(books)" = "$(live_ids)" ]'
out=$(ctl apply ga 2>&1)
check "the next apply finishes the job ($out)" contains "$out" "0 failed"
check "the file and the running vm agree (only the memory differs)" \
	[ "$(ctl diff ga)" = "pending  change memory: 256M -> 512M (restart needed)" ]
check "qvmd's books and QEMU agree ($(books) / $(live_ids))" [ "$(books)" = "$(live_ids)" ]
check "QEMU has the killed apply's devices" contains "$(live_ids)" "k1 k2 k3"
check "each disk's block nodes once" \
	[ "$(jctl qmp ga query-named-block-nodes | grep -o '"node-name":"k1.fmt"' | wc -l)" -eq 1 ]

# Restart: the pending change is live.
check "powerdown" ctl powerdown ga >/dev/null
check "start" ctl start ga >/dev/null
check "memory is now 512M" [ "$(jctl status ga | field .memory_bytes)" = 536870912 ]
check "nothing pending any more" lacks "$(ctl status ga)" "pending:"
check "diff: nothing" contains "$(ctl diff ga)" "no differences"

out=$(ctl kill ga 2>&1)
out=$(ctl apply ga 2>&1); rc=$?
check "apply on a stopped vm: not running ($out)" failed_with $rc "$out" "not running"

finish
