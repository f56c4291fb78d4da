# qmp/: the QMP client against the scripted fake peer.
qvmd_unit_test(test_qmp
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_qmp.c ${CMAKE_CURRENT_SOURCE_DIR}/util/fake_qmp.c
  LIBS qvmd_qmp
  TIMEOUT 600)
