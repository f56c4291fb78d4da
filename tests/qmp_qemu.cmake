# qmp/ against the real qemu-system-x86_64; and the QMP benchmark (contrib/bench, not a test).
qvmd_unit_test(test_qmp_qemu
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_qmp_qemu.c ${CMAKE_CURRENT_SOURCE_DIR}/util/host.c
  LIBS qvmd_qmp
  TIMEOUT 180
  LABELS qemu)

# The benchmark (contrib/bench/qmp-bench.sh builds it in Release and runs it).
add_executable(qmp_bench ${CMAKE_SOURCE_DIR}/contrib/bench/qmp_bench.c ${CMAKE_CURRENT_SOURCE_DIR}/util/host.c)
target_include_directories(qmp_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/util)
target_link_libraries(qmp_bench PRIVATE qvmd_qmp)
target_compile_definitions(qmp_bench PRIVATE
  QMP_BENCH_QEMU="${QVMD_TEST_QEMU}"
  QMP_BENCH_FAKEQEMU="$<TARGET_FILE:fakeqemu>")
add_dependencies(qmp_bench fakeqemu)
