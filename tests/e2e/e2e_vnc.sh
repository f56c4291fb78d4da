#!/bin/sh
# display = vnc with the real qvmd and QEMU (firmware-only VMs): QEMU runs "-vnc none" (no socket
# of its own, no TCP port) and qvmd listens on run_dir/NAME/vnc.sock, mode 0600, handing each
# client to QEMU: a client reads the RFB banner, two at once are both QEMU's clients; the socket
# goes with the QEMU (kill) and comes back with a restarted qvmd that re-attaches; status shows
# it; display = none has no socket.
. "$(dirname "$0")/lib.sh"

fw_vm v1 q35 "display = vnc"
fw_vm v0 pc
SOCKV="$T/run/v1/vnc.sock"

cmdline=$("$QVMD" -c "$T/qvmd.conf" --print-cmdline v1 2>&1)
check "print-cmdline: -vnc none" contains "$cmdline" "$(printf -- '-vnc\nnone')"
check "print-cmdline: the standard VGA device" contains "$cmdline" '"driver":"VGA"'
check "print-cmdline: no tcp anywhere" lacks "$cmdline" "tcp"
check "print-cmdline: no vnc listening address" lacks "$cmdline" "5900"

start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "no socket before the vm runs" [ ! -e "$SOCKV" ]
for v in v1 v0; do spawn "$QVMCTL" start $v; done >/dev/null
wait_spawned
check "v1 running" wait_state v1 running 30
check "v0 running" wait_state v0 running 30

check "the socket exists" [ -S "$SOCKV" ]
check "mode 0600 ($(stat -c %a "$SOCKV"))" [ "$(stat -c %a "$SOCKV")" = 600 ]
check "owned by qvmd's user" [ "$(stat -c %u "$SOCKV")" = "$(id -u)" ]
st=$(jctl status v1)
check "status: display vnc and the socket ($st)" contains "$st" "\"display\":\"vnc\",\"vnc_socket\":\"$SOCKV\""
check "human status: display line" contains "$(ctl status v1)" "display:            vnc $SOCKV"
st=$(jctl status v0)
check "display = none: status says so, no socket" contains "$st" '"display":"none","vnc_socket":null'
check "display = none: no socket file" [ ! -e "$T/run/v0/vnc.sock" ]
check "no tcp listener of qemu" lacks "$(ctl --json qmp v1 query-vnc-servers | field .)" '"family":"ipv'

out=$("$CTLRAW" "$SOCKV" </dev/null 2>&1)
check "a client reads the RFB banner ($out)" contains "$out" "RFB 003.008"

# Two clients at once: each holds its connection (stdin a fifo kept open) until QEMU lists both.
mkfifo "$T/fa" "$T/fb"
"$CTLRAW" "$SOCKV" <"$T/fa" >"$T/a.out" 2>&1 &
PA=$!
exec 3>"$T/fa"
"$CTLRAW" "$SOCKV" <"$T/fb" >"$T/b.out" 2>&1 &
PB=$!
exec 4>"$T/fb"
clients() { ctl --json qmp v1 query-vnc-servers | field . | grep -o '"family":"unix"' | wc -l; }
both() {
	n=0
	while [ "$n" -lt 200 ]; do
		[ "$(clients)" -ge 2 ] && return 0
		sleep 0.1
		n=$((n + 1))
	done
	return 1
}
check "qemu has both clients at once" both
exec 3>&- 4>&-
wait $PA $PB
check "first client read the banner" grep -q "RFB 003.008" "$T/a.out"
check "second client read the banner" grep -q "RFB 003.008" "$T/b.out"

# A restarted qvmd (killed) listens again once it has re-attached.
kill -9 "$QVMD_PID"
wait "$QVMD_PID" 2>/dev/null
QVMD_PID=
start_qvmd || { not_ok "qvmd starts again"; finish; exit 1; }
check "v1 re-attached" wait_state v1 running 30
back() {
	n=0
	while [ "$n" -lt 100 ]; do
		contains "$(jctl status v1)" "\"vnc_socket\":\"$SOCKV\"" && return 0
		sleep 0.1
		n=$((n + 1))
	done
	return 1
}
check "after the restart: status shows the socket" back
check "after the restart: mode 0600" [ "$(stat -c %a "$SOCKV")" = 600 ]
out=$("$CTLRAW" "$SOCKV" </dev/null 2>&1)
check "after the restart: a client reads the banner ($out)" contains "$out" "RFB 003.008"

check "kill v1" ctl kill v1
check "the socket is gone with the qemu" [ ! -e "$SOCKV" ]
check "status: no socket" contains "$(jctl status v1)" '"display":"vnc","vnc_socket":null'
check "kill v0" ctl kill v0
finish
