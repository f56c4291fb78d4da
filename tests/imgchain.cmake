# supervisor/qvmd/imgchain: opening a disk image and its backing chain from the qcow2 header.
qvmd_unit_test(test_imgchain
  SOURCES test_imgchain.c util/scratch.c
  LIBS qvmd_daemon)
