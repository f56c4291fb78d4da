# qvmctl: the command-line client. Links only the config value parsers (durations, sizes, MACs) and
# json-c; log.c gives it the same x*alloc/fatal helpers as the daemon.
add_executable(qvmctl
  ${CMAKE_CURRENT_LIST_DIR}/ctl_main.c
  ${CMAKE_CURRENT_LIST_DIR}/ctl_client.c
  ${CMAKE_CURRENT_LIST_DIR}/ctl_verbs.c
  ${CMAKE_CURRENT_LIST_DIR}/ctl_vm.c
  ${CMAKE_CURRENT_LIST_DIR}/ctl_events.c
  ${CMAKE_CURRENT_LIST_DIR}/ctl_admin.c
  ${CMAKE_CURRENT_LIST_DIR}/ctl_dev.c
  ${CMAKE_CURRENT_LIST_DIR}/ctl_print.c
  ${CMAKE_CURRENT_LIST_DIR}/log.c
  ${CMAKE_CURRENT_LIST_DIR}/clock.c
  ${CMAKE_CURRENT_LIST_DIR}/protocol.c
)
target_include_directories(qvmctl PRIVATE ${CMAKE_CURRENT_LIST_DIR})

# A qvmctl call is mostly process start: on the reference machine an empty dynamically linked
# program costs 2.2 ms from spawn to exit and a static one 1.6 ms (page faults of the loader and
# relocations), so qvmctl is linked statically when libjson-c.a is there. Sanitizer builds stay
# dynamic (ASan cannot be linked statically). -DQVMD_STATIC_CLI=OFF for a distribution build.
option(QVMD_STATIC_CLI "Link qvmctl statically (faster start)" ON)
set(QVMD_CLI_LINKAGE dynamic)
if(QVMD_STATIC_CLI AND NOT QVMD_SANITIZE)
  find_library(QVMD_JSONC_STATIC NAMES libjson-c.a HINTS ${JSONC_LIBRARY_DIRS})
  if(QVMD_JSONC_STATIC)
    set(QVMD_CLI_LINKAGE static)
  else()
    message(STATUS "qvmctl: libjson-c.a not found, linking dynamically")
  endif()
endif()
if(QVMD_CLI_LINKAGE STREQUAL static)
  target_include_directories(qvmctl PRIVATE ${JSONC_INCLUDE_DIRS})
  target_link_options(qvmctl PRIVATE -static)
  target_link_libraries(qvmctl PRIVATE qvmd_config_units ${QVMD_JSONC_STATIC})
else()
  target_link_libraries(qvmctl PRIVATE qvmd_config_units PkgConfig::JSONC)
endif()
message(STATUS "qvmctl: ${QVMD_CLI_LINKAGE} linking")
set(QVMD_CLI_LINKAGE ${QVMD_CLI_LINKAGE} PARENT_SCOPE) # for contrib/bench/exec_floor
install(TARGETS qvmctl)
