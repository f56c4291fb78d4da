# config/: parsing, validation, golden error files (tests/data/cfg), writer.
qvmd_unit_test(test_config SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_config.c LIBS qvmd_config)
