package busypoll

import "golang.org/x/sys/unix"

// yield gives the CPU to any other runnable thread on it. It goes through
// the runtime's system call path, not a raw one: the other thread may run
// for a whole time slice before this one comes back.
func yield() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
