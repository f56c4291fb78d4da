#!/bin/sh
# Builds the Debian package: copies the source tree and contrib/debian/ (as debian/) into a
# temporary tree, runs `dpkg-buildpackage -us -uc -b` there and prints the folder holding
# qvmd_<version>_amd64.deb (argument 1, or a new temp dir). Needs the packages contrib/deps.sh
# installs. The build log is kept in that folder as build.log.
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$(mktemp -d /tmp/qvmd-deb.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# The package's version is the project's: the changelog must say what CMakeLists.txt says.
version=$(dpkg-parsechangelog -l "$SRC/contrib/debian/changelog" -S Version)
project=$(sed -n 's/^project(qvmd VERSION \([^ )]*\).*/\1/p' "$SRC/CMakeLists.txt")
case $version in
"$project" | "$project"[+~]*) ;;
*)
	echo "package.sh: contrib/debian/changelog says $version, CMakeLists.txt $project" >&2
	exit 1
	;;
esac

WORK=$(mktemp -d /tmp/qvmd-pkg.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
trap 'exit 1' INT TERM HUP
TREE="$WORK/qvmd-$version"
mkdir "$TREE"
# The files git knows (committed or not, ignored ones left out), else everything but build trees.
if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git -C "$SRC" ls-files -z --cached --others --exclude-standard |
		(cd "$SRC" && xargs -0 cp --parents -t "$TREE" 2>/dev/null || true)
else
	tar -C "$SRC" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$TREE" -xf -
fi
rm -rf "$TREE/debian"
cp -r "$SRC/contrib/debian" "$TREE/debian"

if ! (cd "$TREE" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" \
	dpkg-buildpackage -us -uc -b) >"$OUT/build.log" 2>&1; then
	tail -n 40 "$OUT/build.log" >&2
	echo "package.sh: dpkg-buildpackage failed (log: $OUT/build.log)" >&2
	exit 1
fi
mv "$WORK"/*.deb "$WORK"/*.changes "$WORK"/*.buildinfo "$OUT/"
echo "$OUT"
