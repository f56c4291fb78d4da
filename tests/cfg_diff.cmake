# config/cfg_diff: the difference between a running VM's definition and its file (apply, diff).
qvmd_unit_test(test_cfg_diff SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_cfg_diff.c LIBS qvmd_config)
