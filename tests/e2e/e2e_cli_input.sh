#!/bin/sh
# Issue 10 end to end: what vm_dir holds never blocks or breaks the daemon (a FIFO named x.ini, a
# definition of 100,000 sections, names that collide with qvmd's own files or read as options);
# reload says so with exit 1; qvmctl refuses locally, with exit 2, what the daemon would refuse; and
# -t bounds an unresponsive daemon, not a slow powerdown.
. "$(dirname "$0")/lib.sh"

fw_vm ok1 pc
mkfifo "$T/vms/x.ini"
printf '[vm]\nname = -web\nmemory = 64M\n' >"$T/vms/-web.ini"
printf '[vm]\nname = qvmd.sock\nmemory = 64M\n' >"$T/vms/qvmd.sock.ini"
awk 'BEGIN { print "[vm]\nname = many\nmemory = 64M"; for (i = 0; i < 100000; i++) printf "[x%d]\n", i }' \
	>"$T/vms/many.ini"

# A blocking open of the FIFO would wait for a writer forever: timeout turns that into a failure.
out=$(timeout 60 "$QVMD" -n -c "$T/qvmd.conf" 2>&1); rc=$?
check "qvmd -n does not block on a FIFO and fails (rc $rc)" test "$rc" -ne 0 -a "$rc" -ne 124
check "qvmd -n: x.ini is not a regular file" contains "$out" "x.ini: not a regular file"
check "qvmd -n: 100,000 sections stop at the bound" contains "$out" "many.ini:67: too many sections"
check "qvmd -n: '-web' is not a valid name" contains "$out" "'-web' is not a valid name"
check "qvmd -n: 'qvmd.sock' is reserved" contains "$out" "'qvmd.sock' is reserved"

start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "the good vm loaded beside the bad files" contains "$(ctl list)" ok1
out=$(timeout 60 "$QVMCTL" reload 2>&1); rc=$?
check "reload with broken definitions: exit 1 ($rc)" [ "$rc" -eq 1 ]
check "reload lists the FIFO" contains "$out" "x.ini: not a regular file"
out=$(timeout 60 "$QVMCTL" --json reload 2>/dev/null); rc=$?
check "reload --json with broken definitions: exit 1 ($rc), result printed" \
	exited_with "$rc" 1 "$out" '"errors"'
rm -f "$T/vms/x.ini" "$T/vms/-web.ini" "$T/vms/qvmd.sock.ini" "$T/vms/many.ini"
out=$(ctl reload 2>&1); rc=$?
check "reload without errors: exit 0 ($out)" [ "$rc" -eq 0 ]

# Usage errors are 2, and nothing reaches the daemon.
out=$(ctl attach-disk ok1 d1 --file rel.img 2>&1); rc=$?
check "relative --file: exit 2 ($out)" exited_with "$rc" 2 "$out" "not an absolute path"
out=$(ctl attach-net ok1 n1 --type tap --ifname tap0 --restrict 2>&1); rc=$?
check "tap --restrict: exit 2 live as with --persist ($out)" \
	exited_with "$rc" 2 "$out" "restrict: only for type = user"
out=$(ctl powerdown ok1 --timeout 0 2>&1); rc=$?
check "--timeout 0: exit 2 ($out)" exited_with "$rc" 2 "$out" "out of range (1s..1h)"
out=$(ctl powerdown ok1 --timeout 2h 2>&1); rc=$?
check "--timeout 2h: exit 2 ($out)" [ "$rc" -eq 2 ]
check "the vm was not touched" [ "$(ctl --json status ok1 | field .state)" = stopped ]

# A firmware-only vm ignores the ACPI powerdown: qvmd waits the 2 s --timeout, then quits it. With
# -t 500ms qvmctl keeps waiting because the daemon answers its probes meanwhile.
check "start ok1" ctl start ok1
out=$(ctl -t 500ms powerdown ok1 --timeout 2s 2>&1); rc=$?
check "-t 500ms powerdown taking 2 s: exit 0 ($out)" exited_with "$rc" 0 "$out" "stopped"
check "-t: a stopped daemon is still a timeout (exit 3)" sh -c '
	kill -STOP '"$QVMD_PID"'; "$1" -t 300ms list >/dev/null 2>&1; rc=$?
	kill -CONT '"$QVMD_PID"'; [ "$rc" -eq 3 ]' sh "$QVMCTL"
check "the daemon answers after SIGCONT" contains "$(ctl list)" ok1

finish
