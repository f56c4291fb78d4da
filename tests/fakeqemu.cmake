# fakeqemu: a stand-in for qemu-system-x86_64 (tests/fakeqemu/fakeqemu.c documents it) for scale
# tests and faults on demand; other tests run it as $<TARGET_FILE:fakeqemu>. It is built without
# sanitizers even in sanitized builds: thousands of instances must stay small.
add_executable(fakeqemu ${CMAKE_CURRENT_SOURCE_DIR}/fakeqemu/fakeqemu.c
  ${PROJECT_SOURCE_DIR}/supervisor/xalloc.c)
target_include_directories(fakeqemu PRIVATE ${PROJECT_SOURCE_DIR}/supervisor)
target_link_libraries(fakeqemu PRIVATE PkgConfig::JSONC)
# Bind symbols at startup, not during the first QMP exchange (see warm_up() in fakeqemu.c).
target_link_options(fakeqemu PRIVATE -Wl,-z,now)
get_target_property(_fakeqemu_copts fakeqemu COMPILE_OPTIONS)
if(_fakeqemu_copts)
  list(FILTER _fakeqemu_copts EXCLUDE REGEX "sanitize")
  set_property(TARGET fakeqemu PROPERTY COMPILE_OPTIONS "${_fakeqemu_copts}")
endif()
get_target_property(_fakeqemu_lopts fakeqemu LINK_OPTIONS)
if(_fakeqemu_lopts)
  list(FILTER _fakeqemu_lopts EXCLUDE REGEX "sanitize")
  set_property(TARGET fakeqemu PROPERTY LINK_OPTIONS "${_fakeqemu_lopts}")
endif()

qvmd_unit_test(test_fakeqemu
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_fakeqemu.c ${CMAKE_CURRENT_SOURCE_DIR}/util/host.c
  LIBS PkgConfig::JSONC
  TIMEOUT 60)
target_compile_definitions(test_fakeqemu PRIVATE FAKEQEMU_BIN="$<TARGET_FILE:fakeqemu>")
add_dependencies(test_fakeqemu fakeqemu)
