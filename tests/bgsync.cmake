# supervisor/qvmd/bgsync: a file's data written to disk in the background (Linux AIO fdatasync).
qvmd_unit_test(test_bgsync
  SOURCES test_bgsync.c
  LIBS qvmd_daemon)
