# supervisor/control: the control socket's limits. ctlflood is the crowd of clients that never read
# used by tests/e2e/e2e_control_limits.sh.
add_executable(ctlflood util/ctlflood.c)

# The control server on a real event_base with a stub command table (control_dispatch).
qvmd_unit_test(test_control
  SOURCES test_control.c ${PROJECT_SOURCE_DIR}/supervisor/control.c ${PROJECT_SOURCE_DIR}/supervisor/log.c
    ${PROJECT_SOURCE_DIR}/supervisor/protocol.c
    ${PROJECT_SOURCE_DIR}/supervisor/clock.c
  LIBS qvmd_config PkgConfig::JSONC PkgConfig::LIBEVENT)
target_include_directories(test_control PRIVATE ${PROJECT_SOURCE_DIR}/supervisor)
