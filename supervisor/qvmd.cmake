# The daemon: its pieces live in the qvmd_supervisor library so tests can link them.
target_sources(qvmd_supervisor PRIVATE
  lockfile.c
  protocol.c
  clock.c
  log.c
  proc.c
  vm.c
  vm_job.c
  vm_start.c
  vm_power.c
  vm_adopt.c
  vm_host.c
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
