package tunnel

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// cpuPin is the CPUs whose packets a worker's TUN queue gets under
// --steering=cpu (CPU c feeds queue c mod queues): its routines run there,
// so the kernel wakes them on the CPU the packet came from rather than on
// another, idle one. On a virtual machine a wake-up across CPUs is an
// interrupt to a halted vCPU, several times dearer than a switch on the
// same CPU (doc/DESIGN-NOTES.md, "Steering by CPU"). The zero cpuPin pins
// nothing.
type cpuPin struct {
	own, all *unix.CPUSet
}

// cpuSetSize is CPU_SETSIZE, the CPUs a unix.CPUSet holds.
const cpuSetSize = 1024

// workerPins are the pins of the workers of queues under CPU steering:
// worker i's CPUs are those of the process's affinity (its main thread's,
// which overlayd never pins) that steer to queue i. A worker no CPU steers
// to (more queues than CPUs) is not pinned.
func workerPins(queues int) ([]cpuPin, error) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(unix.Getpid(), &all); err != nil {
		return nil, fmt.Errorf("CPU affinity: %w", err)
	}
	own := make([]unix.CPUSet, queues)
	for c := range cpuSetSize {
		if all.IsSet(c) {
			own[c%queues].Set(c)
		}
	}
	pins := make([]cpuPin, queues)
	for i := range pins {
		if own[i].Count() > 0 {
			pins[i] = cpuPin{own: &own[i], all: &all}
		}
	}
	return pins, nil
}

// threadPin is a routine's cpuPin and the thread it holds pinned. Pinning
// is best effort: a failure leaves a thread where it was (slower, never
// wrong), and a thread the Go runtime clones from a pinned one starts
// pinned too.
type threadPin struct {
	cpuPin
	tid int // the pinned thread; 0: none
}

// hold pins the calling thread, which runs the routine.
func (p *threadPin) hold() {
	if p.own == nil {
		return
	}
	p.tid = unix.Gettid()
	unix.SchedSetaffinity(0, p.own)
}

// release gives the pinned thread back every CPU of the process: the
// routine is about to leave it to the scheduler, which may run other
// goroutines on it, or has already left it (a goroutine also changes
// threads when it comes back from a system call to find its P taken).
func (p *threadPin) release() {
	if p.tid == 0 {
		return
	}
	unix.SchedSetaffinity(p.tid, p.all) // ESRCH: the thread is gone
	p.tid = 0
}
