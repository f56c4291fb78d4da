# supervisor/qvmd/control: the control socket's limits. ctlflood is the crowd of clients that never read
# used by tests/e2e/e2e_control_limits.sh.
add_executable(ctlflood util/ctlflood.c)

# The control server on a real event_base with a stub command table (control_dispatch).
qvmd_unit_test(test_control
  SOURCES test_control.c ${PROJECT_SOURCE_DIR}/supervisor/qvmd/control.c
    ${PROJECT_SOURCE_DIR}/supervisor/qvmd/vm_console.c
    ${PROJECT_SOURCE_DIR}/supervisor/qvmd/log.c
  LIBS qvmd_common qvmd_config PkgConfig::JSONC PkgConfig::LIBEVENT)
target_include_directories(test_control PRIVATE ${PROJECT_SOURCE_DIR}/supervisor/qvmd)

# The control server with the real command table and a real daemon (stopped VMs; fakeqemu where a
# running one is needed).
qvmd_unit_test(test_control_cmds
  SOURCES test_control_cmds.c
  LIBS qvmd_daemon
  TIMEOUT 120)
target_compile_definitions(test_control_cmds PRIVATE FAKEQEMU_BIN="$<TARGET_FILE:fakeqemu>")
add_dependencies(test_control_cmds fakeqemu)
