# The daemon: its pieces live in the qvmd_supervisor library so tests can link them.
target_sources(qvmd_supervisor PRIVATE
  lockfile.c
  log.c
  proc.c
  vm.c
  vm_images.c
  vm_taps.c
  vm_devices.c
  vm_hotplug.c
  vm_query.c
  rundir.c
  control.c
  control_cmds.c
  daemon.c
)
add_executable(qvmd qvmd.c)
target_link_libraries(qvmd PRIVATE qvmd_supervisor)
install(TARGETS qvmd DESTINATION ${CMAKE_INSTALL_SBINDIR})
