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
		{probeHorizon*max + 1, 20 * time.Microsecond}, // wasted: halves
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

// hop is one forwarding thread in a simulated chain: its window, and when
// it last finished a read and began to poll.
type hop struct {
	w    Window
	done time.Duration
}

// chain returns n hops whose windows poll up to max, all shut for now.
func chain(n int, max time.Duration) []hop {
	hops := make([]hop, n)
	for i := range hops {
		hops[i].w.Init(max)
	}
	return hops
}

// polling reports whether h is polling at time at.
func (h *hop) polling(at time.Duration) bool {
	return h.w.Open() && at >= h.done && at < h.done+h.w.Current()
}

// A chain's wake-ups: a thread woken while another thread polls finds a CPU
// that is running and is soon scheduled; one woken while every CPU halts
// waits for the hypervisor (doc/DESIGN-NOTES.md, "Busy-polling before
// sleeping").
const (
	wakeBusy = 5 * time.Microsecond
	proc     = 2 * time.Microsecond
)

// pass takes a packet that reaches hops[i] at time at, as Wait would: a
// window that covers the wait since the hop's last read catches it;
// otherwise the hop polls the whole window, sleeps, and pays a wake-up,
// wakeIdle unless another hop is polling. It returns when the hop has passed
// the packet on.
func pass(hops []hop, i int, at, wakeIdle time.Duration) (out time.Duration, caught bool) {
	h := &hops[i]
	if h.w.Open() && at-h.done <= h.w.Current() {
		caught = h.w.Poll(func() bool { return true })
		h.done = at + proc
		return h.done, caught
	}
	wake := wakeIdle
	for j := range hops {
		if j != i && hops[j].polling(at) {
			wake = wakeBusy
		}
	}
	h.w.adapt(at - h.done + wake) // Woke's measure: the poll, the sleep, the wake-up
	h.done = at + wake + proc
	return h.done, false
}

// roundTrips runs n request/response transactions from time start through
// hops in turn (each way: the sender's TUN reader, then the receiver's UDP
// reader), between ends that answer at once. It returns when the last
// ended, and in how many of the last half every hop caught its packet.
func roundTrips(hops []hop, start, wakeIdle time.Duration, n int) (end time.Duration, allCaught int) {
	t := start
	for i := range n {
		all := true
		for j := range hops {
			var caught bool
			t, caught = pass(hops, j, t, wakeIdle)
			all = all && caught
		}
		if all && i >= n/2 {
			allCaught++
		}
	}
	return t, allCaught
}

// A request/response whose hops all sleep takes every hop's wake-up each
// round trip, so each thread's wait is far beyond twice the window: the
// windows must still open, or the chain stays slow because it is slow. Once
// they are open the round trip is short and every hop catches its packet.
func TestChainOpensFromSlowWakeUps(t *testing.T) {
	const max = 50 * time.Microsecond
	for _, wake := range []time.Duration{10 * time.Microsecond, 35 * time.Microsecond, 80 * time.Microsecond} {
		hops := chain(4, max)
		const n = 40
		if _, caught := roundTrips(hops, time.Second, wake, n); caught != n/2 {
			t.Errorf("wake-ups of %v (a sleeping round trip of %v): every hop caught the packet in %d of the last %d round trips, want all",
				wake, 4*(wake+proc), caught, n/2)
		}
	}
}

// streamWake is a lone hop's wake-up in the stream tests.
const streamWake = 30 * time.Microsecond

// stream sends n packets gap apart to a lone hop, from time start, and
// returns when the last was passed on and how many found the window open,
// to poll in vain.
func stream(t *testing.T, h []hop, start, gap time.Duration, n int) (end time.Duration, polledInVain int) {
	t.Helper()
	at := start
	for i := range n {
		if h[0].w.Open() {
			polledInVain++
		}
		at += gap
		if _, caught := pass(h, 0, at, streamWake); caught {
			t.Fatalf("packet %d, %v after the last, caught by a %v window", i, gap, h[0].w.Current())
		}
	}
	return at, polledInVain
}

// A steady stream whose gaps are longer than the window, but within a
// probe's reach, is not a chain: polling cannot shorten its gaps. The
// window probes it a bounded number of times and shuts, and probes again
// after a rest, or at once after a pause.
func TestSteadyStreamStopsProbing(t *testing.T) {
	const max = 50 * time.Microsecond
	const gap = 150 * time.Microsecond // beyond the horizon, within a probe's
	hops := chain(4, max)
	alone := hops[:1] // the other hops are idle
	end, vain := stream(t, alone, time.Second, gap, probes+rest/2)
	if hops[0].w.Current() != 0 {
		t.Fatalf("window %v after %d packets %v apart, want shut", hops[0].w.Current(), probes+rest/2, gap)
	}
	if limit := probes + growStart; vain > limit {
		t.Fatalf("%d of %d packets found the window open, want at most %d", vain, probes+rest/2, limit)
	}
	end, vain = stream(t, alone, end, gap, rest)
	if vain == 0 || vain > probes+growStart {
		t.Fatalf("over the next %d packets %d found the window open, want a probe again (1 to %d)", rest, vain, probes+growStart)
	}
	end, _ = stream(t, alone, end, gap, probes+growStart) // spent again
	if hops[0].w.Current() != 0 {
		t.Fatalf("window %v after the probe, want shut", hops[0].w.Current())
	}

	// The stream stops; after a pause, a packet a probe's reach after the
	// next one opens the window again.
	done, _ := pass(alone, 0, end+idleGap*max+time.Millisecond, streamWake)
	pass(alone, 0, done+gap, streamWake)
	if hops[0].w.Current() == 0 {
		t.Fatalf("window shut after a pause and a wait of %v, want a probe", gap+streamWake)
	}

	// A request/response after it opens every hop's window.
	const n = 40
	if _, caught := roundTrips(hops, hops[0].done+time.Millisecond, 35*time.Microsecond, n); caught != n/2 {
		t.Fatalf("every hop caught the packet in %d of the last %d round trips, want all", caught, n/2)
	}
}

// Probing goes on while at least one poll in catchPays+1 catches a packet:
// a chain that has not yet settled, or a jittery stream that polls pay.
func TestProbesPayByCatches(t *testing.T) {
	const max = 50 * time.Microsecond
	for _, c := range []struct {
		every    int  // one poll in every catches
		mostOpen bool // the window open at most polls, not at few
	}{{catchPays, true}, {2 * (catchPays + 1), false}} {
		var w Window
		w.Init(max)
		w.cur = max
		const n = 10 * (probes + rest)
		open := 0
		for i := range n {
			if w.Open() {
				open++
				if i%c.every == 0 {
					w.Poll(func() bool { return true })
					continue
				}
			}
			w.adapt(probeHorizon * max) // a probe's wait
		}
		if c.mostOpen && open < n*9/10 || !c.mostOpen && open > n/5 {
			t.Errorf("one catch in %d polls: the window was open at %d of %d reads", c.every, open, n)
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
