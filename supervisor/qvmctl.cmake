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
)
target_include_directories(qvmctl PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(qvmctl PRIVATE qvmd_config PkgConfig::JSONC)
install(TARGETS qvmctl)
