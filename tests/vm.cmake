# supervisor/qvmd/vm*.c: the VM state machine and its jobs, adopting a stand-in "QEMU" (a process with
# QEMU's -pidfile and -name, and a QMP socket served by the scripted fake peer); no real QEMU.
qvmd_unit_test(test_vm
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_vm.c ${CMAKE_CURRENT_SOURCE_DIR}/util/fake_qmp.c
  LIBS qvmd_daemon
  TIMEOUT 300)
