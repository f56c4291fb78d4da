#!/bin/sh
# backup-prune on a running VM (firmware only: the disks are written from the host through HMP
# qemu-io, as e2e_backup.sh does, with a raw reference copy of each disk kept per backup point).
#  - an older chain in a --to store (q1 full, q2 incremental), then a chain in backup_dir (p1
#    full, p2 p3 p4 incremental); prune --keep 2 keeps p3 and p4: p3 is made standalone (its
#    file rewritten under its own name, the manifest full without parent), everything older is
#    deleted, both kept points restore bit for bit, backup-verify is clean on them, p4 still has
#    p3's file as backing file, and the next incremental (on p4) restores bit for bit;
#  - prune --keep 1 makes the last backup (the one the bitmaps count from) standalone: the next
#    incremental builds on it and restores bit for bit;
#  - qvmd killed during a prune: every point still listed restores and verifies, the next prune
#    finishes the work;
#  - --keep 0 / -1 / x refused (usage), keep 0 through the protocol refused, unknown vm.
. "$(dirname "$0")/lib.sh"

. "$(dirname "$0")/backup_lib.sh"
backup_vm_b
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "start b" ctl start b

dir_of() { jf "$1" .dir; }
restored_ok() { # restored_ok POINT
	id=$(jf "$1" .id)
	rm -rf "$T/images/r-$1"
	ctl restore b "$id" --to "$T/images/r-$1" >/dev/null 2>"$T/r-$1.err" &&
		qemu-img compare -q -f qcow2 -F raw "$T/images/r-$1/d1.qcow2" "$T/$1-d1.raw" &&
		qemu-img compare -q -f qcow2 -F raw "$T/images/r-$1/d2.qcow2" "$T/$1-d2.raw"
}

mkdir -p "$T/images/other"
check "write A" wr d1 0xaa 0 4M
check "write A on the raw disk" wr d2 0x11 0 1M
check "q1: full into another store" bk q1 --to "$T/images/other"
check "write B" wr d1 0xbb 1M 512k
check "q2: incremental there" bk q2 --to "$T/images/other"
check "... is incremental" [ "$(jf q2 .type)" = incremental ]
check "write C" wr d1 0xcc 8M 1M
check "p1: back in backup_dir (full)" bk p1
check "... is full" [ "$(jf p1 .type)" = full ]
check "write D" wr d1 0xdd 2M 1M
check "write D on the raw disk" wr d2 0x22 64k 64k
check "p2" bk p2
# Zeros over data an older point has: a standalone copy must not let the old data through.
check "write zeros over A" sh -c 'ctl() { "$0" "$@"; }; ctl qmp b human-monitor-command "{\"command-line\":\"qemu-io -d /machine/peripheral/d1/virtio-backend \\\"write -z 0 64k\\\"\"}" >/dev/null && qemu-io -f raw -c "write -z 0 64k" "$1" >/dev/null' "$QVMCTL" "$T/ref-d1.raw"
check "write E" wr d1 0xee 12M 1M
check "p3" bk p3
check "write F" wr d1 0x0f 3M 256k
check "p4" bk p4
for p in p2 p3 p4; do
	check "$p is incremental" [ "$(jf $p .type)" = incremental ]
done
p3file="$(dir_of p3)/d1.qcow2"
ino_before=$(stat -c %i "$p3file")

out=$(ctl --json backup-prune b --keep 2 2>&1); rc=$?
printf '%s\n' "$out" >"$T/prune1.json"
check "backup-prune --keep 2 ($rc)" [ $rc -eq 0 ]
P() { field "$1" <"$T/prune1.json"; }
check "kept: p3 p4" [ "$(P .kept[0]) $(P .kept[1]) $(P .kept[2])" = "$(jf p3 .id) $(jf p4 .id) " ]
check "deleted: q1 q2 p1 p2" [ "$(P .deleted[0]) $(P .deleted[1]) $(P .deleted[2]) $(P .deleted[3])" = "$(jf q1 .id) $(jf q2 .id) $(jf p1 .id) $(jf p2 .id)" ]
check "merged: p3" [ "$(P .merged[0])" = "$(jf p3 .id)" ]
for p in q1 q2 p1 p2; do
	check "$p's directory is gone" [ ! -e "$(dir_of $p)" ]
done
check "backups lists only p3 and p4" [ "$(ctl --json backups b | field .backups[0].id) $(ctl --json backups b | field .backups[2].id)" = "$(jf p3 .id) " ]
check "p3 is full now, without parent" sh -c '[ "$("$0" --json backups b | "$1" .backups[0].type)" = full ] && [ "$("$0" --json backups b | "$1" .backups[0].parent)" = "" ]' "$QVMCTL" "$BIN_DIR/tests/jget"
check "p3's d1 file was rewritten under its own name" [ "$(stat -c %i "$p3file")" != "$ino_before" ]
check "p3's d1 file has no backing file" [ -z "$(qemu-img info --output=json "$p3file" | field .backing-filename 2>/dev/null)" ]
check "p4's d1 file still has p3's as backing file" \
	[ "$(qemu-img info --output=json "$(dir_of p4)/d1.qcow2" | field .backing-filename)" = "../$(jf p3 .id)/d1.qcow2" ]
check "no temporary left" sh -c '! ls "$0"/*/*.tmp 2>/dev/null | grep -q .' "$T/state/backups/b"
check "restore p3 (made standalone) bit for bit" restored_ok p3
check "restore p4 (on the rewritten p3) bit for bit" restored_ok p4
check "qemu-img reads p4's chain alone (no qvmd)" qemu-img compare -q -F raw "$(dir_of p4)/d1.qcow2" "$T/p4-d1.raw"
check "backup-verify p3" ctl backup-verify b "$(jf p3 .id)"
check "backup-verify p4" ctl backup-verify b "$(jf p4 .id)"

check "write G" wr d1 0x77 20M 1M
check "p5 after the prune" bk p5
check "... is incremental on p4" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p5 .type)" "$(jf p5 .parent)" "$(jf p4 .id)"
check "restore p5 bit for bit" restored_ok p5

# --keep 1: the last backup (the bitmaps count from it) becomes standalone; the chain goes on.
out=$(ctl --json backup-prune b --keep 1 2>&1); rc=$?
check "backup-prune --keep 1 ($out)" sh -c '[ "$0" -eq 0 ] && [ "$(printf "%s" "$1" | "$2" .merged[0])" = "$3" ]' $rc "$out" "$BIN_DIR/tests/jget" "$(jf p5 .id)"
check "p3 and p4 are gone" sh -c '[ ! -e "$0" ] && [ ! -e "$1" ]' "$(dir_of p3)" "$(dir_of p4)"
check "restore p5 (standalone now) bit for bit" restored_ok p5
check "backup-verify p5" ctl backup-verify b "$(jf p5 .id)"
check "write H" wr d1 0x48 30M 1M
check "p6 after the second prune" bk p6
check "... is incremental on p5" sh -c '[ "$0" = incremental ] && [ "$1" = "$2" ]' "$(jf p6 .type)" "$(jf p6 .parent)" "$(jf p5 .id)"
check "restore p6 bit for bit" restored_ok p6
check "backup-verify p6" ctl backup-verify b "$(jf p6 .id)"
out=$(ctl jobs b 2>&1)
check "jobs shows the prunes ($out)" contains "$out" "backup-prune"

# qvmd killed during a prune (wherever it is): every point still listed restores bit for bit and
# verifies, and the next prune finishes the work and leaves no temporary.
check "write I" wr d1 0x49 40M 8M
check "p7" bk p7
check "write J" wr d1 0x4a 44M 8M
check "p8" bk p8
out=$(ctl --json backup-prune b --keep 1 --no-wait 2>&1)
kill -9 "$QVMD_PID"
wait "$QVMD_PID" 2>/dev/null
QVMD_PID=
check "qvmd killed during a prune ($out), started again" start_qvmd
check "b was re-attached" wait_state b running 10
for p in p5 p6 p7 p8; do
	if [ -e "$(dir_of $p)/manifest.json" ]; then
		check "after the kill: $p restores bit for bit" restored_ok $p
		check "after the kill: backup-verify $p" ctl backup-verify b "$(jf $p .id)"
	fi
done
out=$(ctl --json backup-prune b --keep 1 2>&1); rc=$?
check "the next prune ($out)" [ $rc -eq 0 ]
check "only p8 is left" sh -c '[ "$("$0" --json backups b | "$1" .backups[0].id)" = "$2" ] && ! "$0" --json backups b | "$1" .backups[1] >/dev/null' "$QVMCTL" "$BIN_DIR/tests/jget" "$(jf p8 .id)"
check "p8 restores bit for bit" restored_ok p8
check "backup-verify p8" ctl backup-verify b "$(jf p8 .id)"
check "no temporary and no half-deleted backup left" sh -c '! ls "$0"/*/*.tmp "$0"/*/manifest.deleted 2>/dev/null | grep -q .' "$T/state/backups/b"

# Bad input
for k in 0 -1 x; do
	out=$(ctl backup-prune b --keep "$k" 2>&1); rc=$?
	check "--keep $k refused ($out)" exited_with $rc 2 "$out" "keep"
done
out=$(ctl backup-prune b 2>&1); rc=$?
check "--keep is required ($out)" exited_with $rc 2 "$out" "--keep"
out=$(printf '{"id":1,"cmd":"backup-prune","vm":"b","args":{"keep":0}}\n' | "$CTLRAW" "$SOCK" 2>&1)
check "keep 0 through the protocol refused ($out)" contains "$out" '"invalid"'
out=$(ctl backup-prune nosuch --keep 2 2>&1); rc=$?
check "prune of an unknown vm ($out)" failed_with $rc "$out" "no such vm"
ctl kill b >/dev/null
finish
