package pollwake

import (
	"testing"

	"golang.org/x/sys/unix"
)

func pipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

func newWaker(t *testing.T) *Waker {
	t.Helper()
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func TestWaitReturnsWhenReady(t *testing.T) {
	w := newWaker(t)
	r, wr := pipe(t)
	s := w.Set(r, unix.POLLIN)
	if _, err := unix.Write(wr, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
	if s.Revents()&unix.POLLIN == 0 {
		t.Errorf("Revents = %#x, want POLLIN", s.Revents())
	}
}

// A Wait asleep on a descriptor that never becomes ready ends with Wake
// (the test hangs until its timeout otherwise), and so does every later
// Wait, on any Set of the Waker.
func TestWakeEndsWaitsForGood(t *testing.T) {
	w := newWaker(t)
	r, _ := pipe(t)
	s := w.Set(r, unix.POLLIN)
	done := make(chan error)
	go func() { done <- s.Wait() }()
	if err := w.Wake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s.Revents() != 0 {
		t.Errorf("Revents = %#x on a descriptor never ready, want 0", s.Revents())
	}
	other := w.Set(r, unix.POLLIN)
	if err := other.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestWaitDoesNotAllocate(t *testing.T) {
	w := newWaker(t)
	r, wr := pipe(t)
	if _, err := unix.Write(wr, []byte{1}); err != nil {
		t.Fatal(err)
	}
	s := w.Set(r, unix.POLLIN)
	if allocs := testing.AllocsPerRun(100, func() { s.Wait() }); allocs != 0 {
		t.Errorf("Wait: %v allocations, want 0", allocs)
	}
}
