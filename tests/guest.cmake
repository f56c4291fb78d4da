# The test guest (contrib/guest). guest_build builds it into QVMD_GUEST_DIR (a no-op when up to date) as
# the CTest fixture "qvmd_guest": a test that boots the guest declares FIXTURES_REQUIRED qvmd_guest.
# test_guest_boots checks every marker of the guest's /init with plain QEMU, no qvmd involved.
add_test(NAME guest_build COMMAND sh ${PROJECT_SOURCE_DIR}/contrib/guest/build.sh ${QVMD_GUEST_DIR})
set_tests_properties(guest_build PROPERTIES FIXTURES_SETUP qvmd_guest TIMEOUT 600 LABELS "guest")

add_test(NAME test_guest_boots
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/guest_boot_test.sh ${QVMD_TEST_QEMU} ${QVMD_GUEST_DIR})
set_tests_properties(test_guest_boots PROPERTIES FIXTURES_REQUIRED qvmd_guest TIMEOUT 600
  LABELS "guest;integration")
