#!/bin/sh
# backup --all, the nightly job of a host: every VM (running, paused, stopped), at most N at once,
# carrying on past a VM that fails and exiting 1 with the failures listed. Firmware-only VMs, their
# disks written from the host through HMP qemu-io (as e2e_backup does).
#  - r (running), p (paused), s (stopped), bad (running, but its store backup_dir/bad is a file:
#    its backup cannot work): exit 1, bad listed on stderr, r and p backed up (backups --json),
#    s backed up or failed with a clear error (backups of stopped VMs are a feature of their own);
#  - --json: one entry per VM in the order of `list`, checked key by key; the second run's
#    backups are incremental;
#  - --keep 1 prunes each VM whose backup succeeded (when the daemon has backup-prune);
#  - usage errors (exit 2): --parallel 0 / 65 / x, NAME with --all, --to with --all.
. "$(dirname "$0")/lib.sh"

for v in r p s bad; do
	qemu-img create -q -f qcow2 "$T/images/$v.qcow2" 16M
	fw_vm $v q35 "[disk d1]
file = $T/images/$v.qcow2"
done
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
for v in r p bad; do
	check "start $v" ctl start $v
done
check "pause p" ctl pause p
mkdir -p "$T/state/backups"
echo "not a directory" >"$T/state/backups/bad"

wr() {
	ctl qmp "$1" human-monitor-command \
		"{\"command-line\":\"qemu-io -d /machine/peripheral/d1/virtio-backend \\\"write -P $2 $3 $4\\\"\"}" >/dev/null
}
check "write to r" wr r 0xaa 0 2M
check "write to p" wr p 0xbb 1M 1M

# --- usage errors: nothing is sent ----------------------------------------------------------
for a in "--parallel 0" "--parallel 65" "--parallel x" "--parallel -1" "--keep 0" "--keep x"; do
	# shellcheck disable=SC2086 # two words
	out=$(ctl backup --all $a 2>&1); rc=$?
	check "backup --all $a is a usage error ($out)" exited_with $rc 2 "$out" "give a number"
done
out=$(ctl backup r --all 2>&1); rc=$?
check "backup NAME --all is a usage error ($out)" exited_with $rc 2 "$out" "takes no NAME"
out=$(ctl backup --all --to "$T/images" 2>&1); rc=$?
check "backup --all --to is a usage error ($out)" exited_with $rc 2 "$out" "no --to"
out=$(ctl backup --all --full --incremental 2>&1); rc=$?
check "backup --all --full --incremental is a usage error" [ $rc -eq 2 ]
out=$(ctl backup 2>&1); rc=$?
check "backup without NAME or --all is a usage error ($out)" exited_with $rc 2 "$out" "NAME or --all"
out=$(ctl backup r --parallel 2 2>&1); rc=$?
check "backup NAME --parallel is a usage error ($out)" exited_with $rc 2 "$out" "with --all"
check "no backup was made by the usage errors" sh -c '! ls "$0"/*/* >/dev/null 2>&1' "$T/state/backups"

# overlap FROM: the backups the daemon logged after line FROM of its log, as one letter each: S a
# backup started, E one ended ("SSE" = two ran at once).
overlap() {
	tail -n +$(($1 + 1)) "$T/qvmd.log" |
		sed -n 's/.* info: vm [a-z]*: backup [0-9T.Z]*: .*/S/p; s/.* info: vm [a-z]*: job backup-[0-9]* .*/E/p' |
		tr -d '\n'
}

# --- the run --------------------------------------------------------------------------------
mark=$(wc -l <"$T/qvmd.log")
ctl backup --all --parallel 2 >"$T/all1.out" 2>"$T/all1.err"; rc=$?
sed 's/^/# out: /' "$T/all1.out"
sed 's/^/# err: /' "$T/all1.err"
check "backup --all exits 1 when a vm failed" [ $rc -eq 1 ]
check "... bad is listed on stderr" grep -q "failed for .*bad" "$T/all1.err"
check "... bad has its failed line" grep -q "^bad: failed: .*not a directory\|^bad: failed: .*Not a directory" "$T/all1.out"
check "... r has its backup line (full, with the reason)" grep -q "^r: backup [0-9T.Z]* full (.*no complete backup" "$T/all1.out"
check "... p has its backup line" grep -q "^p: backup [0-9T.Z]* full" "$T/all1.out"
check "... a summary" grep -q "^backup --all: [23] of 4 vms backed up" "$T/all1.out"
check "... one line per vm and the summary" [ "$(wc -l <"$T/all1.out")" -eq 5 ]
seq=$(overlap "$mark")
check "... never more than 2 at once ($seq)" sh -c 'echo "$0" | grep -q S && ! echo "$0" | grep -q SSS' "$seq"
J() { "$BIN_DIR/tests/jget" "$2" <"$T/$1.json"; }
# null FILE PATH: the value is null (jget prints nothing and fails for null; keys are checked below)
null() { [ -z "$(J "$1" "$2" 2>/dev/null)" ]; }
for v in r p; do
	ctl --json backups $v >"$T/b-$v.json"
	check "backups $v: one complete full backup" \
		sh -c '[ "$0" = full ] && [ "$1" = complete ] && [ -z "$2" ]' \
		"$(J b-$v .backups[0].type)" "$(J b-$v .backups[0].status)" "$(J b-$v .backups[1].id 2>/dev/null)"
done
check "p is still paused" [ "$(ctl --json status p | field .state)" = paused ]
if grep -q "^s: failed" "$T/all1.out"; then
	check "the stopped vm's failure is clear ($(grep "^s:" "$T/all1.out"))" \
		grep -q "^s: failed: vm s: .*\(not running\|stopped\)" "$T/all1.out"
	check "... and it is listed with bad" grep -q "failed for 2 of 4 vms: .*s" "$T/all1.err"
	S_OK=0
else
	ctl --json backups s >"$T/b-s.json"
	check "the stopped vm is backed up ($(grep "^s:" "$T/all1.out"))" [ "$(J b-s .backups[0].status)" = complete ]
	S_OK=1
fi
check "the run left the stopped vm stopped" [ "$(ctl --json status s | field .state)" = stopped ]

# --- --json ---------------------------------------------------------------------------------
check "write more to r" wr r 0xcc 4M 1M
ctl --json backup --all >"$T/all2.json" 2>"$T/all2.err"; rc=$?
check "backup --all --json exits 1" [ $rc -eq 1 ]
check "... and says nothing on stderr" [ ! -s "$T/all2.err" ]
names=$(ctl --json list | "$BIN_DIR/tests/jget" .vms | grep -o '"name": *"[a-z]*"' | sed 's/.*"\([a-z]*\)"$/\1/' | tr '\n' ' ')
i=0
for v in $names; do
	check "results[$i].vm is $v (the order of list)" [ "$(J all2 .results[$i].vm)" = "$v" ]
	case $v in
	r | p)
		check "results[$i] ($v): ok true" [ "$(J all2 .results[$i].ok)" = true ]
		check "results[$i] ($v): backup is the entry, incremental on the first" \
			sh -c '[ "$0" = incremental ] && [ "$1" = complete ] && [ "$2" = "$3" ] && [ -n "$4" ]' \
			"$(J all2 .results[$i].backup.type)" "$(J all2 .results[$i].backup.status)" \
			"$(J all2 .results[$i].backup.parent)" "$(J b-$v .backups[0].id)" \
			"$(J all2 .results[$i].backup.disks[0].file)"
		check "results[$i] ($v): backups lists the same id" \
			sh -c '"$0" --json backups "$1" | grep -q "\"id\": *\"$2\""' "$QVMCTL" $v "$(J all2 .results[$i].backup.id)"
		check "results[$i] ($v): prune and error are null" \
			sh -c '[ -z "$0" ] && [ -z "$1" ]' "$(J all2 .results[$i].prune 2>/dev/null)" "$(J all2 .results[$i].error 2>/dev/null)"
		;;
	bad)
		check "results[$i] (bad): ok false, backup and prune null" \
			sh -c '[ "$0" = false ] && [ -z "$1" ] && [ -z "$2" ]' "$(J all2 .results[$i].ok)" \
			"$(J all2 .results[$i].backup 2>/dev/null)" "$(J all2 .results[$i].prune 2>/dev/null)"
		check "results[$i] (bad): error.code and error.message ($(J all2 .results[$i].error.message))" \
			sh -c '[ -n "$0" ] && [ "$0" != null ] && echo "$1" | grep -q "vm bad: backup"' \
			"$(J all2 .results[$i].error.code)" "$(J all2 .results[$i].error.message)"
		;;
	s)
		if [ $S_OK = 1 ]; then
			check "results[$i] (s): ok" [ "$(J all2 .results[$i].ok)" = true ]
		else
			check "results[$i] (s): ok false, error.code not-running" \
				sh -c '[ "$0" = false ] && [ "$1" = not-running ]' "$(J all2 .results[$i].ok)" "$(J all2 .results[$i].error.code)"
		fi
		;;
	esac
	i=$((i + 1))
done
check "four results" sh -c '[ "$0" -eq 4 ] && [ -z "$1" ]' $i "$(J all2 .results[4].vm 2>/dev/null)"
# Every entry has the same keys, absent values null (as powerdown --all's entries).
"$BIN_DIR/tests/jget" . <"$T/all2.json" >"$T/all2.compact"
for k in vm ok backup prune error; do
	check "every entry has the key $k" [ "$(grep -o "\"$k\":" "$T/all2.compact" | wc -l)" -ge 4 ]
done
check "nothing but results at the top" sh -c '[ "$(head -c 12 "$0")" = "{\"results\":[" ]' "$T/all2.compact"

# --- --parallel 1 --------------------------------------------------------------------------
# One at a time: no backup starts before the previous one ended (the daemon logs both).
rm -f "$T/state/backups/bad"
mark=$(wc -l <"$T/qvmd.log")
ctl backup --all --parallel 1 >"$T/all3.out" 2>&1; rc=$?
sed 's/^/# out: /' "$T/all3.out"
check "backup --all --parallel 1 (bad fixed): exit 0, or 1 for the stopped vm alone" \
	sh -c '[ "$0" -eq 0 ] || { [ "$1" = 0 ] && [ "$0" -eq 1 ]; }' $rc $S_OK
check "... bad is backed up now" grep -q "^bad: backup " "$T/all3.out"
seq=$(overlap "$mark")
check "... one backup at a time ($seq)" sh -c '[ "$0" = SESESE ] || [ "$0" = SESESESE ]' "$seq"

# --- --keep ---------------------------------------------------------------------------------
probe=$(printf '{"id":1,"cmd":"backup-prune","vm":"nosuch","args":{"keep":1}}\n' | "$CTLRAW" "$SOCK" 2>&1)
if contains "$probe" "unknown command"; then
	ok "# skip: --keep: this daemon has no backup-prune yet ($probe)"
else
	ctl --json backup --all --keep 1 >"$T/all4.json" 2>&1; rc=$?
	i=0
	for v in $names; do
		if [ "$(J all4 .results[$i].ok)" = true ]; then
			check "--keep 1: $v pruned after its backup (kept: $(J all4 .results[$i].prune.kept))" \
				sh -c '[ "$("$0" --json backups "$1" | grep -c "\"status\": *\"complete\"")" -eq 1 ]' "$QVMCTL" $v
			check "--keep 1: $v's result has prune.kept, .deleted, .merged" \
				sh -c '[ "$0" != null ] && [ "$1" != null ] && [ "$2" != null ]' \
				"$(J all4 .results[$i].prune.kept)" "$(J all4 .results[$i].prune.deleted)" "$(J all4 .results[$i].prune.merged)"
		fi
		i=$((i + 1))
	done
fi

for v in r p bad; do ctl kill $v >/dev/null 2>&1; done
finish
