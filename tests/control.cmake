# supervisor/control: the control socket's limits. ctlflood is the crowd of clients that never read
# used by tests/e2e/e2e_control_limits.sh.
add_executable(ctlflood util/ctlflood.c)
