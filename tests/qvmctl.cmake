# qvmctl: the real binary against a fake control server (a thread of the test).
find_package(Threads REQUIRED)
qvmd_unit_test(test_qvmctl
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_qvmctl.c
  LIBS qvmd_common PkgConfig::JSONC Threads::Threads
  TIMEOUT 120)
target_compile_definitions(test_qvmctl PRIVATE QVMCTL_BIN="$<TARGET_FILE:qvmctl>")
add_dependencies(test_qvmctl qvmctl)
