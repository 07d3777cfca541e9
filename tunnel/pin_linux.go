package tunnel

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// cpuPin keeps a routine's thread on the CPUs whose packets its worker's
// TUN queue gets under --steering=cpu (CPU c feeds queue c mod queues), so
// the kernel wakes it on the CPU the packet came from rather than on
// another, idle one: on a virtual machine a wake-up across CPUs is an
// interrupt to a halted vCPU, several times dearer than a switch on the
// same CPU (doc/DESIGN-NOTES.md, "Steering by CPU"). The zero cpuPin pins
// nothing.
type cpuPin struct {
	own, all *unix.CPUSet
}

// workerPin is the pin of worker id of queues under CPU steering: the CPUs
// of the process's affinity that steer to its queue. A worker no CPU
// steers to (more queues than CPUs) is not pinned.
func workerPin(id, queues int) (cpuPin, error) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return cpuPin{}, fmt.Errorf("CPU affinity: %w", err)
	}
	var own unix.CPUSet
	for c := range cpuSetSize {
		if all.IsSet(c) && c%queues == id {
			own.Set(c)
		}
	}
	if own.Count() == 0 {
		return cpuPin{}, nil
	}
	return cpuPin{own: &own, all: &all}, nil
}

// cpuSetSize is CPU_SETSIZE, the CPUs a unix.CPUSet holds.
const cpuSetSize = 1024

// pin moves the calling thread onto the worker's CPUs. A failure leaves
// the thread where it was: slower, never wrong.
func (p cpuPin) pin() {
	if p.own != nil {
		unix.SchedSetaffinity(0, p.own)
	}
}

// unpin gives the calling thread back every CPU of the process, before
// the routine leaves it for the scheduler (which may run other goroutines
// on it).
func (p cpuPin) unpin() {
	if p.all != nil {
		unix.SchedSetaffinity(0, p.all)
	}
}
