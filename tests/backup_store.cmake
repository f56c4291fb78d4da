# supervisor/qvmd/vm_backup_store: backup ids, allowed directories, manifests, listing, checksums.
qvmd_unit_test(test_backup_store
  SOURCES test_backup_store.c
  LIBS qvmd_daemon)
