# supervisor/qvmd/proc: /proc facts, pidfds, spawning.
qvmd_unit_test(test_proc SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_proc.c LIBS qvmd_daemon)
