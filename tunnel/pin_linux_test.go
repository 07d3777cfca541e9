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
	pins, err := workerPins(queues)
	if err != nil {
		t.Fatal(err)
	}
	covered := 0
	for id, p := range pins {
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
	pins, err = workerPins(cpuSetSize + 1)
	if err != nil {
		t.Fatal(err)
	}
	if p := pins[cpuSetSize]; p.own != nil {
		t.Errorf("a worker no CPU steers to is pinned to %d CPUs", p.own.Count())
	}
}

// onThread runs f on a thread of its own, which exits afterwards (pinned
// or not), and waits for it.
func onThread(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
		f()
	}()
	<-done
}

// affinity is the CPU mask of thread tid (0: the calling thread).
func affinity(t *testing.T, tid int) unix.CPUSet {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		t.Error(err)
	}
	return set
}

// A routine's yielder pins the thread that runs it, and releases that
// thread, by id, from whichever thread the routine ends on.
func TestYielderPinsTheRoutinesThread(t *testing.T) {
	all := affinity(t, unix.Getpid())
	pins, err := workerPins(2)
	if err != nil {
		t.Fatal(err)
	}
	p := pins[0]
	if p.own == nil || *p.own == all {
		t.Skip("needs CPUs that steer to both queues of two")
	}
	onThread(func() {
		newYielder(struct{}{}, p) // parks in Go: nothing to pin
		if got := affinity(t, 0); got != all {
			t.Errorf("a yielder for a source that parks in Go pinned its thread to %d CPUs", got.Count())
		}
	})
	var y yielder
	var tid int
	onThread(func() {
		y, tid = newYielder(sleeper{}, p), unix.Gettid()
		if got := affinity(t, 0); got != *p.own {
			t.Errorf("after newYielder the thread may run on %d CPUs, want the worker's %d", got.Count(), p.own.Count())
		}
		onThread(func() { // the routine moved to another thread
			y.done()
		})
		if got := affinity(t, tid); got != all {
			t.Errorf("after done on another thread the pinned one may run on %d CPUs, want all %d", got.Count(), all.Count())
		}
	})
}

// sleeper is a source whose reads sleep in the kernel (kernelWaiter).
type sleeper struct{}

func (sleeper) WaitsInKernel() bool { return true }
