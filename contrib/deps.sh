#!/bin/sh
# Installs the Debian 12 packages qvmd needs to build, run and test, plus any packages named as
# arguments (contrib/fuzz.sh adds clang). Idempotent: apt runs only when something is missing.
set -eu
PKGS="build-essential cmake pkg-config libjson-c-dev libevent-dev libinih-dev libcmocka-dev
qemu-system-x86 qemu-utils ovmf busybox-static cpio iproute2 procps libxxhash-dev
mandoc dpkg-dev debhelper lintian tmux strace $*"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "qvmd: installing:$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# What udev does on a normal Debian host (none runs here): /dev/kvm for group kvm, so that the
# unprivileged QEMUs (in group kvm) can use it. qvmd never falls back to running QEMU as root.
if [ -c /dev/kvm ] && [ "$(id -u)" -eq 0 ]; then
	getent group kvm >/dev/null || groupadd -r kvm
	chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi
