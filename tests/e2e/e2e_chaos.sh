#!/bin/sh
# Chaos: CHAOS_ITER (200) random operations (start, powerdown, reset, kill, pause, resume) on random
# vms among 10, some left running in the background, with qvmd killed with kill -9 and restarted at
# random points (at least 30 times). At the end every vm's reported state must match reality (/proc
# and its own QMP), with no orphaned or duplicated QEMU and no leaked run directory.
# CHAOS_SEED fixes the sequence (default 42; printed); CHAOS_ITER=2000 for a longer run.
. "$(dirname "$0")/lib.sh"

SEED=${CHAOS_SEED:-42}
ITER=${CHAOS_ITER:-200}
echo "# chaos seed $SEED, $ITER iterations"
for i in 0 1 2 3 4 5 6 7 8 9; do
	fw_vm "c$i" "$([ $((i % 2)) -eq 0 ] && echo q35 || echo pc)"
done
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }

# One line per iteration: op vm background(0/1) sleep-ms kill-qvmd(0/1)
awk -v seed="$SEED" -v n="$ITER" 'BEGIN {
	srand(seed)
	split("start start start powerdown reset kill pause resume", ops, " ")
	for (i = 0; i < n; i++) {
		k = (i % int(n / 32 + 1) == 0) ? 1 : (rand() < 0.05)
		printf "%s c%d %d %d %d\n", ops[int(rand() * 8) + 1], int(rand() * 10), rand() < 0.5, int(rand() * 150), k
	}
}' >"$T/plan"
restarts=0
while read -r op vm bg ms kq; do
	case $op in
	powerdown) args="--timeout 1s" ;;
	*) args= ;;
	esac
	if [ "$bg" = 1 ]; then
		"$QVMCTL" -t 30 $op $vm $args >>"$T/ops.log" 2>&1 &
	else
		"$QVMCTL" -t 30 $op $vm $args >>"$T/ops.log" 2>&1
	fi
	sleep "$(awk -v m="$ms" 'BEGIN{printf "%.3f", m/1000}')"
	if [ "$kq" = 1 ]; then
		kill -9 "$QVMD_PID"
		wait "$QVMD_PID" 2>/dev/null
		QVMD_PID=
		restarts=$((restarts + 1))
		start_qvmd || not_ok "qvmd restarts after kill -9 #$restarts"
	fi
done <"$T/plan"
wait_bg() { for j in $(jobs -p); do [ "$j" = "$QVMD_PID" ] || wait "$j" 2>/dev/null; done; }
wait_bg
check "qvmd was killed and restarted at least 30 times ($restarts)" [ $restarts -ge 30 ]

# Let in-flight jobs (escalations, restarts) settle.
n=0
while [ $n -lt 200 ]; do
	busy=$(jctl list | grep -oE '"state":"(starting|stopping)"' | wc -l)
	[ "$busy" -eq 0 ] && break
	sleep 0.1
	n=$((n + 1))
done
sleep 0.5

bad=0
for i in 0 1 2 3 4 5 6 7 8 9; do
	v="c$i"
	st=$(ctl --json status $v)
	state=$(echo "$st" | field .state)
	pid=$(echo "$st" | field .pid)
	procs=$(pgrep -f "guest=$v -nodefaults.*$T/run/$v/" | wc -l)
	case $state in
	running | paused)
		q=$(ctl --json qmp $v query-status | field .return.status)
		want=$state
		if [ "$procs" -ne 1 ] || ! kill -0 "$pid" 2>/dev/null || [ "$q" != "$want" ] || [ ! -d "$T/run/$v" ]; then
			echo "# $v: reported $state pid $pid, $procs processes, qemu says $q"
			bad=$((bad + 1))
		fi
		;;
	stopped | crashed)
		if [ "$procs" -ne 0 ] || [ -e "$T/run/$v" ]; then
			echo "# $v: reported $state but $procs processes, run dir $(ls -d "$T/run/$v" 2>/dev/null)"
			bad=$((bad + 1))
		fi
		;;
	*)
		echo "# $v: unexpected state $state"
		bad=$((bad + 1))
		;;
	esac
done
check "every vm's reported state matches /proc and its QMP" [ $bad -eq 0 ]
active=$(jctl list | grep -oE '"state":"(running|paused)"' | wc -l)
check "no orphaned or duplicated qemu ($(qemu_pids | wc -l) processes, $active active vms)" \
	[ "$(qemu_pids | wc -l)" -eq "$active" ]
leaked=0
for d in "$T"/run/*/; do
	[ -d "$d" ] || continue
	v=$(basename "$d")
	s=$(ctl --json status "$v" | field .state)
	case $s in running | paused) ;; *) leaked=$((leaked + 1)); echo "# leaked run dir $d ($s)" ;; esac
done
check "no leaked run directories" [ $leaked -eq 0 ]
check "daemon alive at the end" kill -0 "$QVMD_PID"
ctl powerdown --all --timeout 1s >/dev/null 2>&1
finish
