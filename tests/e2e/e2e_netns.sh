#!/bin/sh
# Tap and bridge NICs, cold and hot-plugged, into the real Linux guest. Everything runs inside a
# network namespace this script creates (unshare --net): the bridge, the taps qvmd opens and the
# one the operator made are never visible to the host, and no packet can leave it.
if [ "${QVMD_IN_NETNS:-}" != 1 ]; then
	QVMD_IN_NETNS=1 exec unshare --net sh "$0" "$@"
fi
. "$(dirname "$0")/lib.sh"

# members: the interfaces enslaved to br0, one name per line.
members() { ip -o link show master br0 | awk -F': ' '{print $2}' | cut -d@ -f1; }
carrier() { ip -o link show "$1" | grep -qv NO-CARRIER; }
no_carrier() { ! carrier "$1"; }
has_link() { ip link show "$1" >/dev/null 2>&1; }
no_link() { ! has_link "$1"; }

ip link set lo up
ip link add br0 type bridge && ip link set br0 up
ip tuntap add qt0 mode tap && ip link set qt0 up
check "private namespace: bridge br0 and the operator's tap qt0 exist" has_link qt0
guest_vm gn q35 "[net c0]
type = bridge
bridge = br0
ifname = qc0"
start_qvmd || { not_ok "qvmd starts"; finish; exit 1; }
check "start gn with a bridge nic in its definition" ctl start gn
check "guest ready" wait_console gn GUEST-READY 1 90
check "the guest sees its cold nic" wait_console gn "GUEST-EVENT add net/eth" 1 20
check "qvmd made tap qc0 and put it into br0 ($(members | tr '\n' ' '))" [ "$(members)" = qc0 ]
check "... and QEMU holds it (carrier)" carrier qc0

out=$(ctl attach-net gn b1 --type bridge --bridge br0 --ifname qb1 2>&1)
check "attach-net --type bridge ($out)" [ $? -eq 0 ]
check "the guest sees the hot-plugged bridge nic" wait_console gn "GUEST-EVENT add net/eth" 2 20
check "br0 has qc0 and qb1 ($(members | tr '\n' ' '))" [ "$(members | sort | tr '\n' ' ')" = "qb1 qc0 " ]
check "qb1 has carrier" carrier qb1

check "the operator's tap has no carrier while nobody holds it" no_carrier qt0
out=$(ctl attach-net gn t1 --type tap --ifname qt0 2>&1)
check "attach-net --type tap --ifname qt0 ($out)" [ $? -eq 0 ]
check "the guest sees the tap nic" wait_console gn "GUEST-EVENT add net/eth" 3 20
check "QEMU opened qt0 (carrier)" carrier qt0
check "devices lists the three nics with their backends" \
	[ "$(jctl devices gn | grep -oE '"type":"(bridge|tap)"' | sort | tr '\n' ' ')" = '"type":"bridge" "type":"bridge" "type":"tap" ' ]

# Bad input: the tap qvmd opens for a missing bridge is closed again, nothing is attached.
before=$(ip -o link | wc -l)
out=$(ctl attach-net gn b2 --type bridge --bridge br9 2>&1); rc=$?
check "a bridge that does not exist: clear error ($out)" failed_with $rc "$out" br9
check "... no tap left behind" [ "$(ip -o link | wc -l)" -eq "$before" ]
check "... and no device b2" lacks "$(jctl devices gn)" '"id":"b2"'
out=$(ctl attach-net gn b3 --type bridge 2>&1); rc=$?
check "--type bridge without --bridge is refused ($out)" exited_with $rc 2 "$out" "bridge: required for type = bridge"
out=$(ctl attach-net gn t2 --type tap 2>&1); rc=$?
check "--type tap without --ifname is refused ($out)" exited_with $rc 2 "$out" "ifname: required for type = tap"

check "detach b1" ctl detach gn b1
check "the guest saw it go" wait_console gn "GUEST-EVENT remove net/eth" 1 20
n=0
while has_link qb1 && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
check "qvmd's tap qb1 is gone with its netdev" no_link qb1
check "detach t1" ctl detach gn t1
check "the guest saw the tap nic go" wait_console gn "GUEST-EVENT remove net/eth" 2 20
n=0
while carrier qt0 && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
check "QEMU let go of the operator's tap qt0 (no carrier)" no_carrier qt0
check "... which still exists (it is the operator's)" has_link qt0

out=$(ctl powerdown gn 2>&1)
check "powerdown gn ($out)" [ $? -eq 0 ]
n=0
while has_link qc0 && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
check "the cold nic's tap is gone with QEMU" no_link qc0
check "br0 has no members left" [ -z "$(members)" ]
finish
