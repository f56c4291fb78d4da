# Installation: `cmake --install` into a throw-away prefix puts every file where the README says, and
# the systemd unit names the binaries of that prefix.
add_test(NAME install_tree COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/install/install_test.sh)
set_tests_properties(install_tree PROPERTIES TIMEOUT 120 LABELS "install"
  ENVIRONMENT "BIN_DIR=${CMAKE_BINARY_DIR};SRC_DIR=${CMAKE_SOURCE_DIR}")
