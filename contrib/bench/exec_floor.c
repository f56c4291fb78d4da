/*
 * exec_floor: does nothing. Built like qvmctl (statically, when qvmctl is), its spawn-to-exit time
 * is the floor under any qvmctl call on the machine: process creation, exec, the C library's start
 * and exit, and the page faults of all that (lifecycle-bench.sh prints it beside qvmctl status).
 */
int
main(void)
{
	return 0;
}
