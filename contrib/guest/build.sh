#!/bin/sh
# Builds the qvmd test guest: OUTDIR/vmlinuz (Debian's cloud kernel) and OUTDIR/initrd.img (static
# busybox, the virtio/ACPI-button/evdev modules and contrib/guest/init, as a gzipped newc cpio).
#
# Usage: sh contrib/guest/build.sh OUTDIR
#
# Needs root on Debian 12 with Debian's repositories reachable. The kernel package is downloaded with
# apt-get and unpacked with dpkg-deb into a temporary directory: it is never installed on the host.
# OUTDIR/.stamp records the inputs (kernel package and version, busybox, init, this script); when they
# did not change and both outputs exist, nothing is done.
# shellcheck disable=SC3043 # 'local': dash (Debian's sh), bash and busybox sh all have it
set -eu

# The modules the guest loads, besides their dependencies. Those built into the kernel are skipped.
WANT="virtio virtio_ring virtio_pci virtio_blk failover net_failover virtio_net button evdev"
META=linux-image-cloud-amd64
BUSYBOX=/bin/busybox

die() {
	echo "guest/build.sh: $*" >&2
	exit 1
}
log() {
	echo "guest/build.sh: $*" >&2
}

[ $# -eq 1 ] || die "usage: sh contrib/guest/build.sh OUTDIR"
OUT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

apt_updated=0
apt_update() {
	[ $apt_updated -eq 1 ] && return 0
	log "running apt-get update"
	apt-get update -qq >&2
	apt_updated=1
}

# The kernel package the metapackage's candidate depends on (linux-image-<abi>-cloud-amd64) and its
# version: the metapackage pins it with "(= VERSION)", else the candidate is taken. One apt-cache run
# where possible, as each one parses all package lists.
resolve_kernel() {
	dep=$(apt-cache show --no-all-versions "$META" 2>/dev/null | sed -n 's/^Depends: //p' | head -n 1 |
		tr , '\n' | sed -n 's/^ *\(linux-image-[^ ]*\)\( (= \([^)]*\))\)\{0,1\} *$/\1 \3/p' | head -n 1)
	KPKG=${dep%% *}
	KVER=${dep#* }
	[ -n "$KPKG" ] || return 1
	if [ -z "$KVER" ]; then
		KVER=$(apt-cache policy "$KPKG" | sed -n 's/^ *Candidate: *//p')
	fi
	[ -n "$KVER" ] && [ "$KVER" != "(none)" ]
}
# Host tools: a static busybox (copied into the guest) and cpio.
is_static() {
	[ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1
}
if ! is_static "$BUSYBOX" || ! command -v cpio >/dev/null 2>&1; then
	log "installing busybox-static cpio"
	apt-get install -y -qq busybox-static cpio >/dev/null 2>&1 ||
		{ apt_update && apt-get install -y -qq busybox-static cpio >/dev/null; }
	is_static "$BUSYBOX" || die "$BUSYBOX is not a static binary"
fi

# Cache. OUTDIR/.stamp holds two keys. The first covers the state of apt's configuration and package
# lists: while they are unchanged the kernel package cannot have changed either, and the check costs no
# apt-cache run (which takes over a second when apt keeps no binary cache). The second names the
# resolved kernel package and version: after an apt-get update that brought no new kernel, only the
# first key is refreshed.
files=$(sha256sum "$BUSYBOX" "$HERE/init" "$HERE/build.sh" | cut -d' ' -f1)
apt_key() {
	(
		echo "$files"
		find /etc/apt /var/lib/apt/lists -type f ! -name lock ! -path '*/partial/*' \
			-printf '%p %s %T@\n' 2>/dev/null | sort
	) | sha256sum | cut -d' ' -f1
}
aptkey=$(apt_key)
# Concurrent builds into one OUTDIR (parallel tests) wait for each other, then find the cache valid.
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
have_outputs() {
	[ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ]
}
if have_outputs && [ "$(sed -n 1p "$OUT/.stamp" 2>/dev/null)" = "$aptkey" ]; then
	log "$OUT is up to date"
	exit 0
fi
resolve_kernel || { apt_update && resolve_kernel; } || die "cannot resolve the kernel package of $META"
if [ $apt_updated -eq 1 ]; then # the lists changed under the first key
	aptkey=$(apt_key)
fi
kernkey=$(printf '%s\n%s\n' "$files" "$KPKG=$KVER" | sha256sum | cut -d' ' -f1)
if have_outputs && [ "$(sed -n 2p "$OUT/.stamp" 2>/dev/null)" = "$kernkey" ]; then
	printf '%s\n%s\n' "$aptkey" "$kernkey" >"$OUT/.stamp"
	log "$OUT is up to date ($KPKG $KVER)"
	exit 0
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
trap 'exit 1' HUP INT TERM

# apt drops privileges to _apt for downloads: give it the download directory.
mkdir "$TMP/deb"
if id _apt >/dev/null 2>&1; then
	chown _apt "$TMP/deb"
fi
fetch() {
	(cd "$TMP/deb" && apt-get download -q "$KPKG=$KVER" >/dev/null 2>&1)
}
fetch || { apt_update && fetch; } || die "cannot download $KPKG=$KVER"
log "unpacking $KPKG $KVER"
dpkg-deb -x "$TMP"/deb/*.deb "$TMP/k"

vmlinuz=$(ls "$TMP"/k/boot/vmlinuz-*)
MODDIR=$(ls -d "$TMP"/k/lib/modules/*)
if [ ! -f "$vmlinuz" ] || [ ! -d "$MODDIR" ]; then
	die "unexpected layout in $KPKG"
fi

# Initramfs tree.
R=$TMP/root
mkdir -p "$R/bin" "$R/dev" "$R/proc" "$R/sys" "$R/run" "$R/lib/modules" "$R/etc/acpi/PWRF"
cp "$BUSYBOX" "$R/bin/busybox"
ln -s busybox "$R/bin/sh" # /init adds the other applet links at boot (one ln per applet is slow here)
cp "$HERE/init" "$R/init"
chmod 755 "$R/init"
# busybox acpid maps the ACPI power button to the action PWRF/00000080 under its -c directory.
cat >"$R/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo GUEST-POWERDOWN >/dev/console
exec poweroff -f
EOF
chmod 755 "$R/etc/acpi/PWRF/00000080"

# Modules: located by name ('-' and '_' are the same in module names), decompressed if needed (busybox
# insmod reads plain .ko only), and loaded by /init in file-name order: dependencies first.
mkdir "$TMP/ko"
ko_file() { # NAME -> path of the plain .ko in $TMP/ko, empty when not a module
	local n pat f
	n=$1
	if [ -f "$TMP/ko/$n.ko" ]; then
		echo "$TMP/ko/$n.ko"
		return 0
	fi
	pat=$(echo "$n" | sed 's/[-_]/[-_]/g')
	f=$(find "$MODDIR/kernel" -name "$pat.ko" -o -name "$pat.ko.xz" -o -name "$pat.ko.zst" \
		-o -name "$pat.ko.gz" | head -n 1)
	[ -n "$f" ] || return 0
	case $f in
	*.xz) xz -dc "$f" >"$TMP/ko/$n.ko" ;;
	*.zst) zstd -qdc "$f" >"$TMP/ko/$n.ko" ;;
	*.gz) gzip -dc "$f" >"$TMP/ko/$n.ko" ;;
	*) cp "$f" "$TMP/ko/$n.ko" ;;
	esac
	echo "$TMP/ko/$n.ko"
}
ORDER=""
VISITING=""
visit() { # depth-first: a module's dependencies are appended to ORDER before the module
	local m f d deps
	m=$(echo "$1" | tr - _)
	case " $ORDER " in *" $m "*) return 0 ;; esac
	case " $VISITING " in *" $m "*) die "module dependency cycle at $m" ;; esac
	f=$(ko_file "$m")
	if [ -z "$f" ]; then
		if grep -q "/$(echo "$m" | sed 's/[-_]/[-_]/g')\.ko" "$MODDIR/modules.builtin"; then
			return 0
		fi
		die "module $m is neither a module nor built into $KPKG"
	fi
	VISITING="$VISITING $m"
	deps=$(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p' | head -n 1 | tr , ' ')
	for d in $deps; do
		visit "$d"
	done
	ORDER="$ORDER $m"
}
for m in $WANT; do
	visit "$m"
done
i=10
for m in $ORDER; do
	cp "$TMP/ko/$m.ko" "$R/lib/modules/$i-$m.ko"
	i=$((i + 1))
done

rm -f "$OUT/.stamp"
cp "$vmlinuz" "$OUT/.vmlinuz.tmp"
(cd "$R" && find . | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -9 >"$OUT/.initrd.img.tmp"
mv "$OUT/.vmlinuz.tmp" "$OUT/vmlinuz"
mv "$OUT/.initrd.img.tmp" "$OUT/initrd.img"
printf '%s\n%s\n' "$aptkey" "$kernkey" >"$OUT/.stamp"
log "built $OUT/vmlinuz and $OUT/initrd.img from $KPKG $KVER; modules:$ORDER"
