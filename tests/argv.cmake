# supervisor/qvmd/argv: golden files and unit tests, then the same vectors against the real QEMU.
qvmd_unit_test(test_argv
  SOURCES test_argv.c util/scratch.c
  LIBS qvmd_daemon)

qvmd_unit_test(test_argv_qemu
  SOURCES test_argv_qemu.c util/qmp_sync.c util/host.c util/scratch.c
  LIBS qvmd_daemon
  TIMEOUT 180
  LABELS qemu)
