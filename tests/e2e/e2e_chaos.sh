#!/bin/sh
# Chaos: CHAOS_ITER (200) random operations (start, powerdown, reset, kill, pause, resume,
# attach-disk, attach-net, detach) on random vms among 10, some left running in the background, with
# qvmd killed with kill -9 and restarted at random points (at least 30 times). At the end every
# vm's reported state must match reality (/proc and its own QMP), with no orphaned or duplicated
# QEMU and no leaked run directory, and every running vm's devices must match QEMU's: the same ids
# in QOM, a block node pair per disk and a netdev per NIC, nothing else and nothing left
# half-attached.
# CHAOS_SEED fixes the sequence (default 42; printed); CHAOS_ITER=2000 for a longer run.
. "$(dirname "$0")/lib.sh"

SEED=${CHAOS_SEED:-42}
ITER=${CHAOS_ITER:-200}
echo "# chaos seed $SEED, $ITER iterations"
for i in 0 1 2 3 4 5 6 7 8 9; do
	fw_vm "c$i" "$([ $((i % 2)) -eq 0 ] && echo q35 || echo pc)"
	for k in 0 1 2; do truncate -s 1M "$T/images/c$i-d$k.raw"; done
done
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }

# One line per iteration: op vm background(0/1) sleep-ms kill-qvmd(0/1) device
awk -v seed="$SEED" -v n="$ITER" 'BEGIN {
	srand(seed)
	split("start start start powerdown reset kill pause resume attach-disk attach-net detach", ops, " ")
	for (i = 0; i < n; i++) {
		k = (i % int(n / 32 + 1) == 0) ? 1 : (rand() < 0.05)
		printf "%s c%d %d %d %d %s%d\n", ops[int(rand() * 11) + 1], int(rand() * 10), rand() < 0.5,
			int(rand() * 150), k, rand() < 0.5 ? "d" : "n", int(rand() * 3)
	}
}' >"$T/plan"
restarts=0
while read -r op vm bg ms kq dev; do
	case $op in
	powerdown) args="--timeout 1s" ;;
	attach-disk) args="d${dev#?} --file $T/images/$vm-d${dev#?}.raw --format raw" ;;
	attach-net) args="n${dev#?} --restrict" ;;
	detach) args="$dev --timeout 1s" ;; # firmware-only guests never let go: removal pending
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
		q=$(ctl --json qmp $v query-status | field .status)
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

attaching=0
n=0
while [ $n -lt 50 ]; do # re-attached vms reconcile right after qvmd starts
	attaching=$(for i in 0 1 2 3 4 5 6 7 8 9; do jctl devices "c$i"; done | grep -c '"pending_attach":true')
	[ "$attaching" -eq 0 ] && break
	sleep 0.1
	n=$((n + 1))
done
check "no device is left half-attached ($attaching)" [ "$attaching" -eq 0 ]
hbad=0
hp=0
for i in 0 1 2 3 4 5 6 7 8 9; do
	v="c$i"
	case $(ctl --json status $v | field .state) in running | paused) ;; *) continue ;; esac
	books=$(jctl devices $v | grep -oE '"id":"[dn][0-2]"' | grep -oE '[dn][0-2]' | sort -u | tr '\n' ' ')
	# QOM, not query-pci: that one hides devices behind bridges the firmware has not numbered
	# yet (a reset moments ago).
	qom=$(jctl qmp $v qom-list '{"path":"/machine/peripheral"}' |
		grep -oE '"name":"[dn][0-2]"' | grep -oE '[dn][0-2]' | sort -u | tr '\n' ' ')
	nodes=$(jctl qmp $v query-named-block-nodes | grep -oE '"node-name":"d[0-2][.](file|fmt)"' | sort -u)
	fmt=$(echo "$nodes" | grep -oE 'd[0-2][.]fmt' | cut -c1-2 | tr '\n' ' ')
	file=$(echo "$nodes" | grep -oE 'd[0-2][.]file' | cut -c1-2 | tr '\n' ' ')
	nets=$(ctl qmp $v human-monitor-command '{"command-line":"info network"}' |
		grep -oE 'n[0-2][.]net' | cut -c1-2 | sort -u | tr '\n' ' ')
	backends=$(printf '%s\n' $fmt $nets | grep . | sort -u | tr '\n' ' ')
	hp=$((hp + $(echo "$books" | wc -w)))
	if [ "$books" != "$qom" ] || [ "$fmt" != "$file" ] || [ "$books" != "$backends" ]; then
		echo "# $v: devices [$books] qom [$qom] fmt nodes [$fmt] file nodes [$file] netdevs [$nets]"
		hbad=$((hbad + 1))
	fi
done
echo "# $hp hot-plugged devices on the running vms at the end"
check "every running vm's devices match QEMU's devices, block nodes and netdevs" [ $hbad -eq 0 ]
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
