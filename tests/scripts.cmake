# Every shell script of the project parses with the interpreter its first line names.
file(GLOB QVMD_SCRIPTS
  ${CMAKE_SOURCE_DIR}/contrib/*.sh ${CMAKE_SOURCE_DIR}/contrib/bench/*.sh
  ${CMAKE_SOURCE_DIR}/contrib/guest/*.sh ${CMAKE_SOURCE_DIR}/tests/*.sh
  ${CMAKE_SOURCE_DIR}/tests/e2e/*.sh ${CMAKE_SOURCE_DIR}/tests/install/*.sh
  ${CMAKE_SOURCE_DIR}/.ci/run)
add_test(NAME scripts_syntax
  COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/scripts_syntax.sh ${QVMD_SCRIPTS})
set_tests_properties(scripts_syntax PROPERTIES TIMEOUT 60)
