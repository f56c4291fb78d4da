#!/bin/sh
# Firmware-only VMs (no kernel, no disk) ignore ACPI: powerdown must escalate and say so; kill,
# pause/resume and the raw QMP passthrough.
. "$(dirname "$0")/lib.sh"

fw_vm fw1 q35
fw_vm fw2 pc
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }

check "start fw1" ctl start fw1
check "start fw2" ctl start fw2
pid1=$(ctl --json status fw1 | field .pid)

t0=$(date +%s%N)
out=$(ctl --json powerdown fw1 --timeout 2s 2>&1)
t1=$(date +%s%N)
check "powerdown of a guest ignoring ACPI escalates to quit ($out)" \
	[ "$(echo "$out" | field .ended_by)" = quit ]
check "escalation waited for the 2 s timeout" [ $(((t1 - t0) / 1000000)) -ge 1900 ]
check "fw1 stopped" [ "$(ctl --json status fw1 | field .state)" = stopped ]
check "fw1 qemu gone" gone $pid1
check "last exit says how it ended" contains "$(ctl --json status fw1 | field .last_exit.text)" "ended by quit"

out=$(ctl powerdown fw1 --timeout 2s --no-wait 2>&1); rc=$?
check "powerdown of a stopped vm fails with exit 1 ($out)" [ $rc -eq 1 ]

check "pause fw2" ctl pause fw2
check "status shows paused" [ "$(ctl --json status fw2 | field .state)" = paused ]
check "qemu agrees: paused" [ "$(ctl --json qmp fw2 query-status | field .status)" = paused ]
check "resume fw2" ctl resume fw2
check "status shows running" [ "$(ctl --json status fw2 | field .state)" = running ]
check "qemu agrees: running" [ "$(ctl --json qmp fw2 query-status | field .running)" = true ]
out=$(ctl qmp fw2 no-such-command 2>&1); rc=$?
check "unknown qmp command: exit 1 with QEMU's error ($out)" failed_with $rc "$out" CommandNotFound

pid2=$(ctl --json status fw2 | field .pid)
out=$(ctl --json kill fw2 2>&1)
check "kill stops it ($out)" [ "$(ctl --json status fw2 | field .state)" = stopped ]
check "kill ended it with quit" [ "$(echo "$out" | field .ended_by)" = quit ]
check "fw2 qemu gone" gone $pid2

check "start fw2 again" ctl start fw2
# A long guest timeout: the powerdown is surely still in flight when reset arrives (a loaded
# machine can take a second to start qvmctl); then the escalation is forced with a short one.
check "powerdown --no-wait returns stopping at once" \
	[ "$(ctl --json powerdown fw2 --timeout 10m --no-wait | field .state)" = stopping ]
out=$(ctl reset fw2 2>&1); rc=$?
check "a second operation meanwhile is busy ($out)" failed_with $rc "$out" busy
out=$(ctl --json powerdown --all --timeout 1s 2>&1)
check "powerdown --all joins it with the shorter timeout ($out)" contains "$(echo "$out" | field .)" '"ended_by":"quit"'
check "the escalation still stops it" wait_state fw2 stopped 15
check "no qemu left" [ -z "$(qemu_pids)" ]
finish
