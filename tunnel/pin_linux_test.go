package tunnel

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func TestWorkerPin(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	queues := all.Count()
	covered := 0
	for id := range queues {
		p, err := workerPin(id, queues)
		if err != nil {
			t.Fatal(err)
		}
		if p.own == nil {
			continue
		}
		for c := range cpuSetSize {
			if p.own.IsSet(c) && (!all.IsSet(c) || c%queues != id) {
				t.Errorf("worker %d of %d is pinned to CPU %d, which does not steer to it", id, queues, c)
			}
		}
		covered += p.own.Count()
	}
	if covered != all.Count() {
		t.Errorf("the workers' pins cover %d CPUs, want all %d of the affinity mask", covered, all.Count())
	}
	if p, _ := workerPin(cpuSetSize, cpuSetSize+1); p.own != nil {
		t.Errorf("a worker no CPU steers to is pinned to %d CPUs", p.own.Count())
	}
}

// pin and unpin act on the calling thread: the routine's, whoever runs it.
func TestPinMovesTheCallingThread(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skip("needs two CPUs")
	}
	p, err := workerPin(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the thread exits with the goroutine
		var got unix.CPUSet
		y := newYielder(nil, p)
		unix.SchedGetaffinity(0, &got)
		if got != *p.own {
			t.Errorf("after newYielder the thread may run on %d CPUs, want the worker's %d", got.Count(), p.own.Count())
		}
		y.pin.unpin()
		unix.SchedGetaffinity(0, &got)
		if got != all {
			t.Errorf("after unpin the thread may run on %d CPUs, want all %d", got.Count(), all.Count())
		}
	}()
	<-done
}
