#!/bin/sh
# Builds qmp_bench and fakeqemu in Release without sanitizers (in $QVMD_BENCH_DIR, default
# build-bench) and runs the QMP benchmark: qmp/ round trip against a real QEMU versus a blocking
# client, then 1,000 and 5,000 fake QEMUs on one event loop, served by one fakeqemu process per cpu
# in serve mode (fakeqemu --serve-dir), with the client's CPU time per phase. Extra arguments go
# to qmp_bench (e.g. -n 1000 -r 2000, -s 1 for one server process).
set -eu
cd "$(dirname "$0")/../.."
BUILD=${QVMD_BENCH_DIR:-build-bench}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DQVMD_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" --target qmp_bench fakeqemu -j"$(nproc)" >/dev/null
exec "$BUILD/tests/qmp_bench" "$@"
