package busypoll

import (
	"testing"
	"time"
)

// The window grows while packets come within twice the maximum, keeps its size
// while polls catch them, and shrinks to nothing when they come later.
func TestAdapt(t *testing.T) {
	const max = 40 * time.Microsecond
	var w Window
	w.Init(max)
	steps := []struct {
		waited time.Duration
		want   time.Duration
	}{
		{30 * time.Microsecond, 10 * time.Microsecond}, // starts at a quarter
		{30 * time.Microsecond, 20 * time.Microsecond},
		{horizon * max, 40 * time.Microsecond},        // a sleeper's wait, within reach
		{max, max},                                    // capped
		{horizon*max + 1, 20 * time.Microsecond},      // wasted: halves
		{time.Millisecond, 10 * time.Microsecond},     // still the start
		{time.Millisecond, 0},                         // below it: off
		{time.Second, 0},                              // stays off
		{5 * time.Microsecond, 10 * time.Microsecond}, // and learns again
	}
	for i, s := range steps {
		w.adapt(s.waited)
		if got := w.Current(); got != s.want {
			t.Fatalf("step %d: after a wait of %v the window is %v, want %v", i, s.waited, got, s.want)
		}
	}
}

// A window of 0 never polls and never learns.
func TestOff(t *testing.T) {
	var w Window
	w.Init(0)
	for range 3 {
		w.Sleeping()
		w.Woke()
	}
	if w.Current() != 0 {
		t.Fatalf("window %v with polling off", w.Current())
	}
	if w.Poll(func() bool { t.Fatal("Poll called try with polling off"); return true }) {
		t.Fatal("Poll reported a packet with polling off")
	}
}

// Poll stops at the first try that succeeds, and gives up when the window
// has passed.
func TestPoll(t *testing.T) {
	var w Window
	w.Init(time.Millisecond)
	w.cur = time.Millisecond
	calls := 0
	if !w.Poll(func() bool { calls++; return calls == 3 }) {
		t.Fatal("Poll missed a try that succeeded")
	}
	if calls != 3 {
		t.Fatalf("Poll made %d tries, want 3", calls)
	}
	w.cur = time.Microsecond
	calls = 0
	if w.Poll(func() bool { calls++; return false }) {
		t.Fatal("Poll reported a packet no try found")
	}
	if calls == 0 {
		t.Fatal("Poll made no try")
	}
}

// A short sleep, as Sleeping and Woke measure it, opens the window.
func TestSleepingWoke(t *testing.T) {
	var w Window
	w.Init(time.Hour) // any real sleep is within it
	w.Sleeping()
	w.Woke()
	if w.Current() != time.Hour/growStart {
		t.Fatalf("window %v after a short sleep, want %v", w.Current(), time.Hour/growStart)
	}
}

var sink bool

func BenchmarkPollMiss(b *testing.B) {
	var w Window
	w.Init(time.Microsecond)
	w.cur = time.Nanosecond
	try := func() bool { return false }
	b.ReportAllocs()
	for b.Loop() {
		sink = w.Poll(try)
		w.Sleeping()
		w.Woke()
	}
}

// After a read that delivered a large batch, Poll does not poll: bulk
// traffic's wake-ups cost little per packet. A small batch polls again.
func TestBulkDoesNotPoll(t *testing.T) {
	var w Window
	w.Init(time.Millisecond)
	w.cur = time.Millisecond
	w.Delivered(smallBatch + 1)
	if w.Poll(func() bool { t.Fatal("Poll polled after a large batch"); return true }) {
		t.Fatal("Poll reported a packet after a large batch")
	}
	w.Delivered(1)
	if !w.Poll(func() bool { return true }) {
		t.Fatal("Poll did not poll after a small batch")
	}
}

// Stats count the polls that caught a packet and the sleeps.
func TestStats(t *testing.T) {
	var w Window
	w.Init(time.Millisecond)
	w.cur = time.Millisecond
	w.Poll(func() bool { return true })
	w.Poll(func() bool { return true })
	w.Sleeping()
	w.Woke()
	if got, want := w.Stats(), (Stats{Caught: 2, Slept: 1}); got != want {
		t.Fatalf("Stats() = %+v, want %+v", got, want)
	}
	var sum Stats
	sum.Add(w.Stats())
	sum.Add(w.Stats())
	if want := (Stats{Caught: 4, Slept: 2}); sum != want {
		t.Fatalf("summed %+v, want %+v", sum, want)
	}
}
