# supervisor/qvmd/qcow2_new: the empty qcow2 image of a backup target, compared with qemu-img's.
qvmd_unit_test(test_qcow2_new
  SOURCES test_qcow2_new.c util/scratch.c
  LIBS qvmd_daemon)
