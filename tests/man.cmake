# Manual pages (contrib/man): clean under `mandoc -T lint`, and they cannot drift from the code:
# test_man links qvmctl's verb table (every source of the qvmctl target but its main) and reads the
# schema tables from config/.
get_target_property(QVMD_CTL_SOURCES qvmctl SOURCES)
list(FILTER QVMD_CTL_SOURCES EXCLUDE REGEX "ctl_main\\.c$")
qvmd_unit_test(test_man
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_man.c ${QVMD_CTL_SOURCES}
  LIBS qvmd_common qvmd_config_units PkgConfig::JSONC)
target_include_directories(test_man PRIVATE ${CMAKE_SOURCE_DIR}/supervisor/qvmctl)
target_compile_definitions(test_man PRIVATE QVMD_SRC_DIR="${CMAKE_SOURCE_DIR}")

# Every page, warnings included (mandoc exits non-zero on any). contrib/deps.sh installs mandoc.
file(GLOB QVMD_MAN_PAGES ${CMAKE_SOURCE_DIR}/contrib/man/*.[1-8])
find_program(QVMD_MANDOC mandoc)
if(QVMD_MANDOC)
  add_test(NAME man_lint COMMAND ${QVMD_MANDOC} -T lint -W warning ${QVMD_MAN_PAGES})
else()
  add_test(NAME man_lint COMMAND sh -c "echo 'mandoc not found: run sh contrib/deps.sh' >&2; exit 1")
endif()
set_tests_properties(man_lint PROPERTIES TIMEOUT 60)
