#!/bin/sh
# Installs what is needed, builds qvmd with AddressSanitizer + UBSan (and once optimised, for its
# warnings), builds the test guest, runs every fuzz harness briefly and every test. Exits non-zero
# if anything fails.
set -eu
cd "$(dirname "$0")/.."
sh contrib/deps.sh
BUILD=${QVMD_BUILD_DIR:-build-test}
cmake -S . -B "$BUILD" -DQVMD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
# The optimised build quickstart.sh and the package make (gcc -O2 warns about what -O0 cannot see;
# -Werror makes that a failure here rather than on an operator's machine).
cmake -S . -B "$BUILD-release" -DQVMD_SANITIZE=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD-release" -j"$(nproc)" >/dev/null
sh contrib/guest/build.sh "$BUILD/guest"
# Every fuzz harness (libFuzzer, clang) for a short time from its seed corpus: any crash fails.
sh contrib/fuzz.sh "${QVMD_FUZZ_SECONDS:-20}"
cd "$BUILD"
ctest --output-on-failure --timeout 900
