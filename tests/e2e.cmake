# End-to-end tests: the real qvmd, the real qvmctl and the real QEMU, driven by shell scripts in
# tests/e2e/ (helpers in tests/e2e/lib.sh). Each prints TAP-like lines and "N passed, N failed".
add_executable(jget util/jget.c)
target_link_libraries(jget PRIVATE PkgConfig::JSONC)
add_executable(ctlraw util/ctlraw.c)
add_executable(notifyrecv util/notifyrecv.c)

function(qvmd_e2e_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "" ${ARGN})
  add_test(NAME ${name} COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/e2e/${name}.sh)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 900)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "e2e;qemu" FIXTURES_REQUIRED qvmd_guest
    ENVIRONMENT "BIN_DIR=${CMAKE_BINARY_DIR};GUEST_DIR=${QVMD_GUEST_DIR};SRC_DIR=${CMAKE_SOURCE_DIR};ASAN_OPTIONS=detect_leaks=1")
endfunction()

file(GLOB QVMD_E2E_SCRIPTS ${CMAKE_CURRENT_SOURCE_DIR}/e2e/e2e_*.sh)
list(SORT QVMD_E2E_SCRIPTS)
foreach(s ${QVMD_E2E_SCRIPTS})
  get_filename_component(n ${s} NAME_WE)
  qvmd_e2e_test(${n})
endforeach()
