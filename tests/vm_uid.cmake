# supervisor/qvmd/vm_uid: per-VM QEMU uids, their records and the checks against the system.
qvmd_unit_test(test_vm_uid SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_vm_uid.c LIBS qvmd_daemon)
