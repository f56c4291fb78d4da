#!/bin/sh
# Backups of a running VM (firmware only: the disks are written from the host through HMP
# qemu-io, which goes through the VM's own block nodes, so dirty bitmaps see every write).
# The test keeps a raw reference copy of each disk, applying the same writes to it; at each
# backup point it keeps a copy of the reference, and at the end every point is restored into new
# images and compared with the copy of its instant.
#  - full, then incremental (only the changed clusters are written), a raw disk (full copy each
#    time, the reason says so), a clean stop and start (still incremental), QEMU killed (the next
#    backup is full, saying why), job-cancel and a full target file system (the backup fails, and
#    the next incremental still holds every change), qvmd killed mid-backup;
#  - backups --json, backup-verify (and a flipped byte detected), bad input.
. "$(dirname "$0")/lib.sh"

. "$(dirname "$0")/backup_lib.sh"
backup_vm_b
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "start b" ctl start b

restored_ok() { # restored_ok POINT: restore and compare both disks
	id=$(jf "$1" .id)
	rm -rf "$T/images/r-$1"
	ctl restore b "$id" --to "$T/images/r-$1" >/dev/null 2>"$T/r-$1.err" &&
		qemu-img compare -q -f qcow2 -F raw "$T/images/r-$1/d1.qcow2" "$T/$1-d1.raw" &&
		qemu-img compare -q -f qcow2 -F raw "$T/images/r-$1/d2.qcow2" "$T/$1-d2.raw" &&
		[ -z "$(qemu-img info --output=json "$T/images/r-$1/d1.qcow2" | field .backing-filename 2>/dev/null)" ]
}

check "write A" wr d1 0xaa 0 4M
check "write A on the raw disk" wr d2 0x11 0 1M
check "first backup" bk p1
check "first backup is full" [ "$(jf p1 .type)" = full ]
check "... and says why ($(jf p1 .reason))" contains "$(jf p1 .reason)" "no complete backup"
check "... complete" [ "$(jf p1 .status)" = complete ]

check "write B over part of it" wr d1 0xbb 1M 512k
check "write B on the raw disk" wr d2 0x22 64k 64k
check "second backup" bk p2
check "second backup is incremental" [ "$(jf p2 .type)" = incremental ]
check "... its parent is the first" [ "$(jf p2 .parent)" = "$(jf p1 .id)" ]
# The entry qvmctl printed came with the job's end event (no second request): the job says so.
check "the backup's job carries its entry ($(ctl --json jobs b | tr -d '\n' | cut -c1-160))" \
	sh -c '"$0" --json jobs b | tr -d " \n" | grep -q "\"result\":{\"id\":\"$1\",\"type\":\"incremental\""' "$QVMCTL" "$(jf p2 .id)"
check "... the raw disk's full copy is said ($(jf p2 .reason))" contains "$(jf p2 .reason)" "d2 is raw"
d1=$(ls "$T/state/backups/b/$(jf p2 .id)/")
check "the incremental's d1 file has the full one as backing file (relative)" \
	[ "$(qemu-img info --output=json "$T/state/backups/b/$(jf p2 .id)/d1.qcow2" | field .backing-filename)" = "../$(jf p1 .id)/d1.qcow2" ]
sz1=$(stat -c %s "$T/state/backups/b/$(jf p1 .id)/d1.qcow2")
sz2=$(stat -c %s "$T/state/backups/b/$(jf p2 .id)/d1.qcow2")
check "the incremental holds only the change ($sz2 < $sz1 bytes)" [ "$sz2" -lt $((sz1 / 2)) ]
check "qemu-img sees the chain" sh -c 'qemu-img info --backing-chain "$0" | grep -q "$1"' \
	"$T/state/backups/b/$(jf p2 .id)/d1.qcow2" "$(jf p1 .id)"

# --incremental and --full
check "write C" wr d1 0xcc 8M 1M
check "--incremental" bk p3 --incremental
check "... is incremental" [ "$(jf p3 .type)" = incremental ]

# A clean stop and start keeps the bitmap: still incremental.
check "powerdown (quit: firmware ignores ACPI) and start" sh -c '"$0" kill b >/dev/null && "$0" start b >/dev/null' "$QVMCTL"
check "write D after the restart" wr d1 0xdd 2M 1M
check "backup after a clean stop and start" bk p4
check "... is still incremental ($(jf p4 .reason))" [ "$(jf p4 .type)" = incremental ]

# QEMU killed: its persistent bitmap is inconsistent, the next backup is full and says why.
qpid=$(ctl --json status b | field .pid)
kill -9 "$qpid"
check "b crashed" wait_state b crashed 30
check "start b again" ctl start b
check "write E" wr d1 0xee 3M 1M
check "--incremental refuses after a crash" sh -c '! "$0" backup b --incremental >/dev/null 2>&1' "$QVMCTL"
check "backup after the crash" bk p5
check "... is full" [ "$(jf p5 .type)" = full ]
check "... because the bitmap is inconsistent ($(jf p5 .reason))" contains "$(jf p5 .reason)" "inconsistent"

# job-cancel: the failed backup is marked failed, its files gone, the next incremental has all.
# (A small backup may complete before the cancel arrives; either way nothing may be lost.)
check "write F" wr d1 0x0f 5M 1M
ctl pause b >/dev/null
out=$(ctl --json backup b --no-wait 2>&1)
job=$(printf '%s' "$out" | field .job)
cid=$(printf '%s' "$out" | field .id)
check "a backup started without waiting ($job)" [ -n "$job" ]
cout=$(ctl job-cancel b "$job" 2>&1)
n=0
while [ $n -lt 600 ] && grep -q '"running"' "$T/state/backups/b/$cid/manifest.json"; do sleep 0.1; n=$((n + 1)); done
ctl resume b >/dev/null
if grep -q '"failed"' "$T/state/backups/b/$cid/manifest.json"; then
	check "the cancelled backup is failed and left no image ($cout)" sh -c '! ls "$0"/*.qcow2 2>/dev/null | grep -q .' "$T/state/backups/b/$cid"
else
	check "the backup ended before the cancel ($cout)" grep -q '"complete"' "$T/state/backups/b/$cid/manifest.json"
fi
check "write G" wr d1 0x77 6M 64k
check "backup after the cancel" bk p6
check "... is incremental" [ "$(jf p6 .type)" = incremental ]

# A full target file system: a 2M tmpfs below image_dirs.
mkdir -p "$T/images/small"
if mount -t tmpfs -o size=2M tmpfs "$T/images/small" 2>/dev/null; then
	SMALL=1
	check "write H" wr d1 0x48 10M 8M
	ctl pause b >/dev/null
	out=$(ctl backup b --full --to "$T/images/small" 2>&1); rc=$?
	ctl resume b >/dev/null
	check "a backup to a full file system fails ($out)" [ $rc -ne 0 ]
	check "... and leaves no image behind" sh -c '! ls "$0"/*/*.qcow2 2>/dev/null | grep -q .' "$T/images/small"
	check "... it is failed or removed" sh -c '! grep -q "\"running\"\|\"complete\"" "$0"/*/manifest.json 2>/dev/null' "$T/images/small"
	# QEMU 7.2 closes removed fdset descriptors lazily: detach the mount even if still held.
	umount "$T/images/small" 2>/dev/null || umount -l "$T/images/small"
	# Room for the manifest but not for a qcow2's metadata (a fresh 2M tmpfs, 8 KiB left): QEMU
	# cannot format the targets.
	mkdir -p "$T/images/tiny"
	mount -t tmpfs -o size=2M tmpfs "$T/images/tiny"
	head -c 8k /dev/zero >"$T/images/tiny/reserve"
	dd if=/dev/zero of="$T/images/tiny/filler" bs=4k 2>/dev/null
	rm -f "$T/images/tiny/reserve"
	out=$(ctl backup b --full --to "$T/images/tiny" 2>&1); rc=$?
	check "a backup whose targets cannot be formatted fails, saying so ($out)" \
		sh -c '[ "$0" -ne 0 ] && echo "$1" | grep -q "creating .*No space left on device"' "$rc" "$out"
	check "... and leaves no image behind" sh -c '! ls "$0"/*/*.qcow2 2>/dev/null | grep -q .' "$T/images/tiny"
	check "... nor a QEMU job or target node" sh -c '! "$0" -s "$1" qmp b query-jobs | grep -q "bk-" &&
		! "$0" -s "$1" qmp b query-named-block-nodes | grep -q "\"bk-"' "$QVMCTL" "$SOCK"
	umount "$T/images/tiny" 2>/dev/null || umount -l "$T/images/tiny"
	check "backup after the failed one" bk p7
	check "... is incremental on p6" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p7 .type)" "$(jf p7 .parent)" "$(jf p6 .id)"
else
	ok "# skip: no tmpfs mount here"
	check "backup p7" bk p7
fi

# A backup whose end could not be recorded (its state write failed, after its copy had cleared
# the bitmaps): the state still names it as running with its copy started.
st="$T/state/b/backups.json"
check "the state names no running backup" grep -q '"running_id": *null' "$st"
sed -i 's/"running_id": *null/"running_id": "20260101T000000.000Z"/; s/"running_copy": *false/"running_copy": true/' "$st"
check "write I" wr d1 0x49 7M 64k
check "backup after one whose end was not recorded" bk p8
check "... is full, saying why ($(jf p8 .type): $(jf p8 .reason))" sh -c '[ "$0" = full ] && echo "$1" | grep -q "20260101T000000.000Z.*its end was not recorded"' \
	"$(jf p8 .type)" "$(jf p8 .reason)"
check "... and the state names no running backup again" grep -q '"running_id": *null' "$st"
# One whose job record was never written (qvmd died right after making its directory): the
# record names it as running, its directory says running and holds a file.
sid=$(date -u +%Y%m%dT%H%M%S).000Z
stale="$T/state/backups/b/$sid"
mkdir -p "$stale"
printf '{"format":1,"vm":"b","id":"%s","type":"full","parent":null,"created":"x","status":"running","disks":[]}\n' "$sid" >"$stale/manifest.json"
: >"$stale/d1.qcow2"
sed -i "s|\"running_id\": *null|\"running_id\": \"$sid\"|; s|\"running_dir\": *null|\"running_dir\": \"$stale\"|" "$st"
check "write J" wr d1 0x4a 9M 64k
check "backup after one that was never settled" bk p9
check "... is incremental on p8 (its copy had not started: $(jf p9 .type) $(jf p9 .reason))" \
	sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p9 .type)" "$(jf p9 .parent)" "$(jf p8 .id)"
check "... the stale one is failed now, its file removed" \
	sh -c 'grep -q "\"status\": *\"failed\"" "$0/manifest.json" && [ ! -e "$0/d1.qcow2" ]' "$stale"

# The next incremental starts on a guess (the last backup's plan) before QEMU lists its block
# nodes: one batch asks for them and starts the copy. The nodes are checked against the guess
# before the copy is finalized; what changed behind qvmd's back makes it plan anew.
qmplog() { grep -n 'vm b: qmp ' "$T/qvmd.log"; }
check "write K" wr d1 0x4b 11M 64k
l0=$(qmplog | wc -l)
check "a steady-state incremental" bk p10
check "... is incremental on p9" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p10 .type)" "$(jf p10 .parent)" "$(jf p9 .id)"
# Its copy went to QEMU before QEMU's answer about the nodes came back.
qmplog | tail -n +"$((l0 + 1))" >"$T/p10.qmp"
check "... its copy was sent before QEMU listed the block nodes" 	sh -c 'sed -n "/qmp out.*query-named-block-nodes/,/qmp out.*blockdev-backup/p" "$0" | grep -q "qmp out.*blockdev-backup" &&
		! sed -n "/qmp out.*query-named-block-nodes/,/qmp out.*blockdev-backup/p" "$0" | grep -q "qmp in"' "$T/p10.qmp"
anew() { grep -c "planned anew" "$T/qvmd.log"; }
a0=$(anew)
check "the bitmap disabled behind qvmd's back" ctl qmp b block-dirty-bitmap-disable '{"node":"d1.fmt","name":"qvmd-backup"}'
check "write L (the disabled bitmap misses it)" wr d1 0x4c 12M 64k
check "backup after that" bk p11
check "... is full, saying why ($(jf p11 .type): $(jf p11 .reason))" sh -c '[ "$0" = full ] && echo "$1" | grep -q "not recording"' "$(jf p11 .type)" "$(jf p11 .reason)"
check "... planned anew from QEMU's nodes" [ "$(anew)" -eq $((a0 + 1)) ]
check "write M" wr d1 0x4d 13M 64k
check "the next one is incremental again (its bitmap was made anew)" bk p12
check "... is incremental on p11" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p12 .type)" "$(jf p12 .parent)" "$(jf p11 .id)"
check "the bitmap removed behind qvmd's back" ctl qmp b block-dirty-bitmap-remove '{"node":"d1.fmt","name":"qvmd-backup"}'
check "write N" wr d1 0x4e 14M 64k
check "backup after that" bk p13
check "... is full, saying why ($(jf p13 .type): $(jf p13 .reason))" sh -c '[ "$0" = full ] && echo "$1" | grep -q "no bitmap"' "$(jf p13 .type)" "$(jf p13 .reason)"
check "d1 grown behind qvmd's back (block_resize)" ctl qmp b block_resize '{"node-name":"d1.fmt","size":83886080}'
truncate -s 80M "$T/ref-d1.raw"
check "write O beyond the old end" wr d1 0x4f 70M 64k
check "backup after that" bk p14
check "... is full, saying why ($(jf p14 .type): $(jf p14 .reason))" sh -c '[ "$0" = full ] && echo "$1" | grep -q "changed size"' "$(jf p14 .type)" "$(jf p14 .reason)"
check "... planned anew twice more" [ "$(anew)" -eq $((a0 + 3)) ]
check "write P" wr d1 0x50 15M 64k
check "backup after that" bk p15
check "... is incremental on p14" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p15 .type)" "$(jf p15 .parent)" "$(jf p14 .id)"
# A backup whose manifest was never written (qvmd died right after sending its first batch): the
# record names its directory, which holds a target and no manifest; the next backup removes it.
sid=$(date -u +%Y%m%dT%H%M%S).001Z
stale="$T/state/backups/b/$sid"
mkdir -p "$stale"
: >"$stale/d1.qcow2"
sed -i "s|\"running_id\": *null|\"running_id\": \"$sid\"|; s|\"running_dir\": *null|\"running_dir\": \"$stale\"|" "$st"
check "write Q" wr d1 0x51 16M 64k
check "backup after one that left no manifest" bk p16
check "... is incremental on p15" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p16 .type)" "$(jf p16 .parent)" "$(jf p15 .id)"
check "... the directory without a manifest is gone" [ ! -e "$stale" ]

# No target node is left, and no target's descriptor ever joined another one's fdset (QEMU 7.2
# keeps removed descriptors while the VM is paused, as it is for each backup here).
ctl qmp b query-fdsets >"$T/fdsets.json"
check "no target node is left in QEMU" sh -c '! "$0" -s "$1" qmp b query-named-block-nodes | grep -q "\"bk-"' "$QVMCTL" "$SOCK"
check "each backup's fdset held its own target alone" awk '
	/"fd":/ { n++ }
	/"fdset-id":/ { id = $2 + 0; if (id >= 100000) { seen++; if (n != 1) bad++ } n = 0 }
	END { exit !(seen > 0 && bad == 0) }' "$T/fdsets.json"

for p in p1 p2 p3 p4 p5 p6 p7 p8 p9 p10 p11 p12 p13 p14 p15 p16; do
	check "restore $p and compare with the disks of its instant" restored_ok $p
done

# backups --json and the table
ctl --json backups b >"$T/list.json"
J() { "$BIN_DIR/tests/jget" "$1" <"$T/list.json"; }
check "backups --json: the first is full, complete, with created and disks' sizes" \
	sh -c '[ "$0" = full ] && [ "$1" = complete ] && [ -n "$2" ] && [ "$3" -gt 0 ]' \
	"$(J ".backups[0].type")" "$(J ".backups[0].status")" "$(J ".backups[0].created")" "$(J ".backups[0].disks[0].size")"
check "backups --json: the second's parent is the first" [ "$(J ".backups[1].parent")" = "$(jf p1 .id)" ]
check "backups table" sh -c '"$0" backups b | head -n 1 | grep -q "ID *TYPE *PARENT *CREATED *SIZE *STATUS"' "$QVMCTL"

# backup-verify, and a flipped byte
check "backup-verify p2" ctl backup-verify b "$(jf p2 .id)"
f="$T/state/backups/b/$(jf p1 .id)/d1.qcow2"
printf '\377' | dd of="$f" bs=1 seek=$((3 * 1024 * 1024 + 4096)) conv=notrunc 2>/dev/null
out=$(ctl backup-verify b "$(jf p2 .id)" 2>&1); rc=$?
check "backup-verify of p2 detects a flipped byte in p1 ($out)" failed_with $rc "$out" "checksum"

# Bad input
out=$(ctl backup nosuch 2>&1); rc=$?
check "unknown vm ($out)" failed_with $rc "$out" "no such vm"
out=$(ctl restore b 20990101T000000.000Z --to "$T/images/x" 2>&1); rc=$?
check "unknown backup ($out)" failed_with $rc "$out" "no backup"
out=$(ctl restore b nonsense --to "$T/images/x" 2>&1); rc=$?
check "not a backup id ($out)" exited_with $rc 2 "$out" "not a backup id"
out=$(ctl backup b --to /tmp 2>&1); rc=$?
check "--to outside the allowed directories ($out)" failed_with $rc "$out" "neither below"
out=$(ctl restore b "$(jf p1 .id)" --to /tmp/qvmd-nope 2>&1); rc=$?
check "restore --to outside ($out)" failed_with $rc "$out" "neither below"
# QEMU stopped: the first backup waits for its answers, however fast it would be.
qpid=$(ctl --json status b | field .pid)
kill -STOP "$qpid"
nodes() { grep -c '"execute":"query-named-block-nodes"' "$T/qvmd.log"; }
c0=$(nodes)
ctl backup b --full >/dev/null 2>&1 &
first=$!
# Admitted once its first step went to QEMU (jobs lists it only once QEMU answered).
n=0
while [ $n -lt 300 ] && [ "$(nodes)" -le "$c0" ]; do sleep 0.1; n=$((n + 1)); done
out=$(ctl backup b 2>&1); rc=$?
check "two backups of one vm at once ($out)" failed_with $rc "$out" "busy"
kill -CONT "$qpid"
wait "$first"
ctl kill b >/dev/null
finish
