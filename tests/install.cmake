# Installation: `cmake --install` into a throw-away prefix puts every file where the README says, and
# the systemd unit names the binaries of that prefix.
add_test(NAME install_tree COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/install/install_test.sh)
set_tests_properties(install_tree PROPERTIES TIMEOUT 120 LABELS "install"
  ENVIRONMENT "BIN_DIR=${CMAKE_BINARY_DIR};SRC_DIR=${CMAKE_SOURCE_DIR}")

# The Debian package (contrib/package.sh, contrib/debian): built, checked with lintian, inspected,
# installed, upgraded, removed and purged in a throw-away root (dpkg --root, stubbed systemd).
add_test(NAME package COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/install/package_test.sh)
set_tests_properties(package PROPERTIES TIMEOUT 600 LABELS "install"
  ENVIRONMENT "SRC_DIR=${CMAKE_SOURCE_DIR}")
