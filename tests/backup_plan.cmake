# supervisor/qvmd/vm_backup_plan: full or incremental, and why, from QEMU's nodes and the chain.
qvmd_unit_test(test_backup_plan
  SOURCES test_backup_plan.c util/scratch.c
  LIBS qvmd_daemon)
