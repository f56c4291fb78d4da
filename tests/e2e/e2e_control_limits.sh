#!/bin/sh
# The control socket's limits: clients that pipeline requests without reading stall themselves (or
# are dropped) instead of growing qvmd; another client is still answered; memory comes back; with a
# low descriptor limit a crowd of idle connections cannot make `start` fail or wait; idle
# connections are closed, subscribers and requests in flight are not; an oversized request is
# refused and qvmd keeps running.
. "$(dirname "$0")/lib.sh"

FLOOD="$BIN_DIR/tests/ctlflood"
FLOOD_PID=
EVENTS_PID=
flood_cleanup() {
	[ -n "$FLOOD_PID" ] && kill "$FLOOD_PID" 2>/dev/null
	[ -n "$EVENTS_PID" ] && kill "$EVENTS_PID" 2>/dev/null
	cleanup
}
trap flood_cleanup EXIT

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$QVMD_PID/status"; }
# ASan keeps freed memory in a quarantine (256 MiB by default) that would hide what qvmd itself
# holds: a small one makes RSS measure qvmd.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}:quarantine_size_mb=8"

# qvmd under a descriptor limit of 256 (it raises its soft limit to the hard one: lower both).
cat >"$T/qvmd-lowfd" <<SH
#!/bin/sh
ulimit -n 256
exec "$QVMD" "\$@"
SH
chmod +x "$T/qvmd-lowfd"
REAL_QVMD=$QVMD
QVMD="$T/qvmd-lowfd"

for i in 1 2 3 4 5; do fw_vm "listed-vm-with-a-long-name-$i"; done
fw_vm fw1
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }

# --- 100 clients pipelining `list` without reading -------------------------------------------
ctl list >/dev/null
rss0=$(rss_kb)
# Bounds in kB. Before the limits, this flood took a plain qvmd from 2 MiB to 450 MiB; now it peaks
# near 10 MiB and ends near 4 MiB. Under ASan freed heap and its shadow are not given back.
if grep -q libasan "/proc/$QVMD_PID/maps"; then
	peak_mib=48 after_mib=32
else
	peak_mib=32 after_mib=8
fi
bound=$((rss0 + peak_mib * 1024))
"$FLOOD" "$SOCK" 100 262144 120 >"$T/flood.out" 2>&1 &
FLOOD_PID=$!
# Sample RSS until the flood has been written and qvmd has settled (no CPU time used for 1 s):
# whatever the flood makes qvmd do is done by then.
peak=$rss0
over=0
version_ok=0
still=0
ticks=
while [ $still -lt 5 ] && kill -0 "$FLOOD_PID" 2>/dev/null; do
	r=$(rss_kb)
	[ "$r" -gt "$peak" ] && peak=$r
	if [ "$r" -gt "$bound" ]; then
		over=1
		break
	fi
	t=$(awk '{ print $14 + $15 }' "/proc/$QVMD_PID/stat")
	if grep -q '^flooded' "$T/flood.out" && [ "$t" = "$ticks" ]; then
		still=$((still + 1))
	else
		still=0
	fi
	ticks=$t
	sleep 0.2
done
v=$(ctl -t 30 version 2>&1) && contains "$v" qvmd && version_ok=1
kill "$FLOOD_PID" 2>/dev/null
wait "$FLOOD_PID" 2>/dev/null
FLOOD_PID=
echo "# $(grep '^flooded' "$T/flood.out") rss ${rss0} kB -> peak ${peak} kB"
check "qvmd's RSS stays within $peak_mib MiB of its start while 100 clients flood it" [ "$over" = 0 ]
check "another client's version is answered during the flood" [ $version_ok = 1 ]
# flooded connected C refused R written W dropped D stalled S
stats=$(grep '^flooded' "$T/flood.out")
set -- ${stats:-flooded connected 0 refused 0 written 0 dropped 0 stalled 0}
shift
check "all 100 flooding clients connected" [ "$2" = 100 ]
check "every flooding client was stalled or dropped" [ "$(($8 + ${10}))" = 100 ]
check "qvmd did not take all the flooding clients' requests" [ "$6" -lt $((100 * 262144)) ]
# The clients are gone: qvmd's memory comes back near where it started.
i=0
while [ "$(rss_kb)" -gt $((rss0 + after_mib * 1024)) ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "# rss after the flood: $(rss_kb) kB"
check "qvmd's RSS is back within $after_mib MiB of its start after the flood" \
	[ "$(rss_kb)" -le $((rss0 + after_mib * 1024)) ]

# --- 1000 idle connections against a limit of 256 descriptors ------------------------------------
"$FLOOD" "$SOCK" 1000 0 60 >"$T/idle.out" 2>&1 &
FLOOD_PID=$!
i=0
while ! grep -q '^ready' "$T/idle.out" && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
echo "# idle crowd: $(head -n 1 "$T/idle.out")"
out=$(ctl -t 60 start fw1 2>&1)
rc=$?
check "start succeeds while 1000 idle clients crowd a 256-descriptor qvmd ($out)" [ $rc -eq 0 ]
check "fw1 is running" [ "$(ctl --json status fw1 | field .state)" = running ]
kill "$FLOOD_PID" 2>/dev/null
wait "$FLOOD_PID" 2>/dev/null
FLOOD_PID=
check "qvmd never ran out of descriptors" sh -c "! grep -q 'Too many open files' '$T/qvmd.log'"
ctl kill fw1 >/dev/null 2>&1
wait_state fw1 stopped 30
stop_qvmd
QVMD=$REAL_QVMD

# --- idle connections are closed; subscribers and requests in flight are not -----------------
export QVMD_TEST_IDLE_TIMEOUT=2
sed -i 's/^shutdown_timeout = .*/shutdown_timeout = 5s/' "$T/vms/fw1.ini"
start_qvmd || { not_ok "qvmd restarts"; finish; exit 1; }
ctl events >"$T/events.out" 2>&1 &
EVENTS_PID=$!
ctl start fw1 >/dev/null
out=$("$FLOOD" "$SOCK" 1 0 6)
echo "# $out" | tr '\n' ' '
echo
check "a silent connection is closed after the idle limit" contains "$out" "dropped 1"
check "it is told why" contains "$out" '"code":"idle"'
out=$(ctl -t 60 powerdown fw1 2>&1)
check "a powerdown longer than the idle limit gets its answer ($out)" [ $? -eq 0 ]
check "a subscriber outlives the idle limit" kill -0 "$EVENTS_PID"
kill "$EVENTS_PID" 2>/dev/null
wait "$EVENTS_PID" 2>/dev/null
EVENTS_PID=

# --- an oversized request is refused and qvmd keeps running -----------------------------------
out=$(head -c 1100000 /dev/zero | tr '\0' 'x' | "$CTLRAW" "$SOCK")
check "an oversized request is refused with too-large" contains "$out" too-large
check "qvmd still answers after it" contains "$(ctl version 2>&1)" qvmd

unset QVMD_TEST_IDLE_TIMEOUT
finish
