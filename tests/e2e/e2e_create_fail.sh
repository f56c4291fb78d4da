#!/bin/sh
# qvmctl create when things go wrong after the checks, with the real qvmd, qvmctl and qemu-img:
# - create --start whose start fails (a corrupt image; a QEMU that exits at once): exit 1 with an
#   error saying the VM stays defined, the file and the images it made are there, the VM is listed
#   stopped, and undefine removes it;
# - qvmd killed (-9) while create makes the images (qemu_img is a wrapper that waits at a gate the
#   test opens): no definition and no temporary file in vm_dir, no VM after a restart; qemu-img
#   goes on without qvmd and leaves the images, and the next create of the name refuses, naming
#   them, until they are removed; then it succeeds and no record is left.
. "$(dirname "$0")/lib.sh"

# The wrapper: on "create" while $T/gate exists it notes its pid in $T/waiting and waits.
cat >"$T/slow-qemu-img" <<EOF
#!/bin/sh
if [ "\$1" = create ] && [ -e "$T/gate" ]; then
	echo \$\$ >>"$T/waiting"
	while [ -e "$T/gate" ]; do sleep 0.05; done
fi
exec qemu-img "\$@"
EOF
chmod 0755 "$T/slow-qemu-img"
echo "qemu_img = $T/slow-qemu-img" >>"$T/qvmd.conf"
# The wrappers outlive a killed qvmd: they are ours to end.
kill_wrappers() {
	[ -f "$T/waiting" ] && for p in $(cat "$T/waiting"); do kill -9 "$p" 2>/dev/null; done
	rm -f "$T/gate"
}
trap 'kill_wrappers; cleanup' EXIT
# until_true SECONDS SHELL-COMMAND: polls until it succeeds (false after SECONDS).
until_true() {
	n=0
	while [ $n -lt $(($1 * 20)) ]; do
		if sh -c "$2"; then return 0; fi
		sleep 0.05
		n=$((n + 1))
	done
	return 1
}
start_qvmd || { not_ok "qvmd started"; finish; exit 1; }

# ---- the start fails: the definition stays ----
head -c 65536 /dev/urandom >"$T/images/corrupt.qcow2"
out=$(ctl create sf1 --memory 64M --disk "path=$T/images/corrupt.qcow2" --accel "$FW_ACCEL" --start 2>&1); rc=$?
check "create --start of a corrupt image fails, saying the vm stays defined ($out)" failed_with $rc \
	"$out" "vm sf1: defined in $T/vms/sf1.ini, but the start failed: "
check "... the definition is there" [ -f "$T/vms/sf1.ini" ]
check "... qvmd -n finds it valid" "$QVMD" -n -c "$T/qvmd.conf"
check "... the vm is listed stopped" sh -c "'$QVMCTL' list | grep -q '^sf1  *stopped'"
out=$(ctl undefine sf1 2>&1); rc=$?
check "... undefine removes it ($out)" exited_with $rc 0 "$out" "vm sf1: undefined"
check "... the file is gone, the image kept" sh -c "[ ! -e '$T/vms/sf1.ini' ] && [ -f '$T/images/corrupt.qcow2' ]"

# ---- qvmd killed while create makes the images ----
touch "$T/gate"
ctl create cr1 --memory 64M --disk 8M --disk "path=$T/images/cr1-data.qcow2,size=8M" >"$T/cr1.out" 2>&1 &
ctl_pid=$!
check "both qemu-img wait at the gate" until_true 60 "[ \$(cat '$T/waiting' 2>/dev/null | wc -l) -eq 2 ]"
check "... with their record in the state directory" sh -c \
	"grep -qx '$T/images/cr1-disk0.qcow2' '$T/state/cr1/creating' &&
	 grep -qx '$T/images/cr1-data.qcow2' '$T/state/cr1/creating'"
kill -9 "$QVMD_PID"
wait "$QVMD_PID" 2>/dev/null
QVMD_PID=
wait "$ctl_pid"
rc=$?
check "qvmctl says qvmd went away (exit $rc: $(cat "$T/cr1.out"))" [ $rc -eq 3 ]
check "no definition in vm_dir, no temporary file either" [ -z "$(ls -A "$T/vms")" ]
check "no scratch definition left in run_dir" sh -c "[ -z \"\$(ls -A '$T/run/qvmd.define' 2>/dev/null)\" ]"
start_qvmd || not_ok "qvmd restarted"
out=$(ctl status cr1 2>&1); rc=$?
check "the restarted qvmd has no vm cr1 ($out)" failed_with $rc "$out" "no such vm"
# qemu-img goes on without qvmd: the images appear, maybe after the restart.
rm -f "$T/gate"
check "the orphaned qemu-img finish" until_true 60 \
	"for p in \$(cat '$T/waiting'); do kill -0 \$p 2>/dev/null && exit 1; done; exit 0"
check "... and leave the images" sh -c "[ -f '$T/images/cr1-disk0.qcow2' ] && [ -f '$T/images/cr1-data.qcow2' ]"
out=$(ctl create cr1 --memory 64M --disk "path=$T/images/cr1-data.qcow2,size=8M" 2>&1); rc=$?
check "the next create of cr1 refuses, naming what is left ($out)" failed_with $rc "$out" \
	"vm cr1: a create of it that qvmd did not finish left $T/images/cr1-disk0.qcow2, $T/images/cr1-data.qcow2 (perhaps half-written)"
check "... and how to go on" contains "$out" "remove $T/state/cr1/creating to use them"
check "... it wrote nothing" [ ! -e "$T/vms/cr1.ini" ]
rm -f "$T/images/cr1-data.qcow2"
out=$(ctl create cr1 --memory 64M --disk 8M 2>&1); rc=$?
check "... as long as one is there ($out)" failed_with $rc "$out" "left $T/images/cr1-disk0.qcow2 (perhaps"
rm -f "$T/images/cr1-disk0.qcow2"
out=$(ctl create cr1 --memory 64M --disk 8M --disk "path=$T/images/cr1-data.qcow2,size=8M" 2>&1); rc=$?
check "once they are removed, create succeeds ($out)" [ $rc -eq 0 ]
check "... makes both images again" sh -c "[ -f '$T/images/cr1-disk0.qcow2' ] && [ -f '$T/images/cr1-data.qcow2' ]"
check "... and leaves no record" [ ! -e "$T/state/cr1/creating" ]

# ---- a QEMU that cannot start: the images made stay with the definition ----
stop_qvmd
echo "qemu = /bin/false" >>"$T/qvmd.conf"
start_qvmd || not_ok "qvmd restarted with qemu = /bin/false"
out=$(ctl create sf2 --memory 64M --disk 8M --accel "$FW_ACCEL" --start 2>&1); rc=$?
check "create --start whose QEMU exits fails, saying the vm stays defined ($out)" failed_with $rc \
	"$out" "vm sf2: defined in $T/vms/sf2.ini, but the start failed: "
check "... the definition and the image are there" sh -c \
	"[ -f '$T/vms/sf2.ini' ] && [ -f '$T/images/sf2-disk0.qcow2' ]"
check "... no record of images being made" [ ! -e "$T/state/sf2/creating" ]
check "... the vm is listed stopped" sh -c "'$QVMCTL' list | grep -q '^sf2  *stopped'"
out=$(ctl undefine sf2 --remove-disks 2>&1); rc=$?
check "... undefine --remove-disks removes it ($out)" [ $rc -eq 0 ]
check "... file and image" sh -c "[ ! -e '$T/vms/sf2.ini' ] && [ ! -e '$T/images/sf2-disk0.qcow2' ]"
finish
