# Benchmarks of qvmd as a whole (contrib/bench/lifecycle-, hotplug- and snapshot-bench.sh build and run
# them): they print figures and are not tests. Included from the top-level CMakeLists.txt.
add_library(qvmd_bench_util STATIC ${CMAKE_SOURCE_DIR}/contrib/bench/bench_util.c
                                   ${CMAKE_SOURCE_DIR}/tests/util/qmp_sync.c)
target_include_directories(qvmd_bench_util PUBLIC ${CMAKE_SOURCE_DIR}/contrib/bench
                                                  ${CMAKE_SOURCE_DIR}/tests/util)
target_link_libraries(qvmd_bench_util PUBLIC PkgConfig::JSONC)

add_executable(lifecycle_bench ${CMAKE_SOURCE_DIR}/contrib/bench/lifecycle_bench.c)
target_link_libraries(lifecycle_bench PRIVATE qvmd_bench_util)

add_executable(hotplug_bench ${CMAKE_SOURCE_DIR}/contrib/bench/hotplug_bench.c)
target_link_libraries(hotplug_bench PRIVATE qvmd_bench_util)

# The floor under a qvmctl call: an empty program, linked the way qvmctl is (qvmctl.cmake).
add_executable(exec_floor ${CMAKE_SOURCE_DIR}/contrib/bench/exec_floor.c)
if(QVMD_CLI_LINKAGE STREQUAL static)
  target_link_options(exec_floor PRIVATE -static)
endif()

add_executable(snapshot_bench ${CMAKE_SOURCE_DIR}/contrib/bench/snapshot_bench.c)
target_link_libraries(snapshot_bench PRIVATE qvmd_bench_util)
