# supervisor/qvmd/vm_console: the ring of recent output, log rotation, and the relay on a real
# event_base against a stand-in for QEMU's console socket.
qvmd_unit_test(test_vm_console
  SOURCES test_vm_console.c ${PROJECT_SOURCE_DIR}/supervisor/qvmd/vm_console.c
    ${PROJECT_SOURCE_DIR}/supervisor/qvmd/log.c
  LIBS qvmd_common qvmd_config PkgConfig::LIBEVENT)
target_include_directories(test_vm_console PRIVATE ${PROJECT_SOURCE_DIR}/supervisor/qvmd)
