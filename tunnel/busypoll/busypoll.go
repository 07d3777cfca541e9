package busypoll

import (
	"sync/atomic"
	"time"
)

// Window is one reader's adaptive busy-poll window. It is not safe for
// concurrent use: a reader keeps it under the lock that serialises its
// reads.
//
// A reader reports each read's packets to Delivered. When a read finds its
// queue empty, it calls Poll; if Poll reports false, the reader sleeps in
// the kernel between Sleeping and Woke, which adapt the window to how long
// the packet took.
type Window struct {
	max    time.Duration // 0: Poll never polls
	cur    time.Duration // the window now, 0 to max
	polled time.Duration // how long the last Poll polled in vain
	sleep  time.Time     // Sleeping's time
	bulk   bool          // the last read delivered more than smallBatch

	// fruitless counts the polls that found nothing, less catchPays for each
	// that caught a packet: how far probing has not paid.
	fruitless int

	caught, slept atomic.Uint64 // for Stats, read by other goroutines
}

// Stats count what a Window did, for `overlayd status` and /metrics.
type Stats struct {
	Caught uint64 // polls that found a packet
	Slept  uint64 // sleeps in the kernel, with polling on
}

// Add adds o's counts into s.
func (s *Stats) Add(o Stats) {
	s.Caught += o.Caught
	s.Slept += o.Slept
}

// Reporter is implemented by the readers that keep a Window.
type Reporter interface {
	BusyPollStats() Stats
}

// Stats returns the window's counts; any goroutine may call it.
func (w *Window) Stats() Stats {
	return Stats{Caught: w.caught.Load(), Slept: w.slept.Load()}
}

// smallBatch is the most packets a read may deliver and still be followed
// by a poll. Bulk traffic comes in large batches, whose wake-ups cost
// little per packet: there a poll would spend CPU for nothing.
const smallBatch = 4

// Delivered notes how many packets the reader's last read delivered.
func (w *Window) Delivered(n int) { w.bulk = n > smallBatch }

// Init sets the most the window polls, shut for now; 0 turns polling off.
// A Window holds atomics, so it is set up in place rather than copied.
func (w *Window) Init(max time.Duration) {
	w.max, w.cur, w.polled, w.bulk, w.fruitless = max, 0, 0, false, 0
}

// Open reports whether the next Poll would poll. A reader whose queue may
// already hold a packet tries it once first: Poll yields before each try.
func (w *Window) Open() bool { return w.cur > 0 && !w.bulk }

// Current is the window as it stands.
func (w *Window) Current() time.Duration { return w.cur }

// Poll calls try until it reports true or the window has passed, yielding
// the CPU before each call, and reports whether try did. With the window
// at 0, or after a read that delivered more than a few packets, it returns
// false at once, without calling try.
func (w *Window) Poll(try func() bool) bool {
	w.polled = 0
	if !w.Open() {
		return false
	}
	start := time.Now()
	deadline := start.Add(w.cur)
	for {
		yield()
		if try() {
			w.fruitless = max(w.fruitless-catchPays, 0)
			w.caught.Add(1)
			return true
		}
		if now := time.Now(); !now.Before(deadline) {
			w.polled = now.Sub(start)
			return false
		}
	}
}

// Wait polls with try for the window and, if no packet came, calls sleep,
// the reader's wait in the kernel, between Sleeping and Woke. It reports
// whether a poll caught the packet, and sleep's error. A nil Window only
// sleeps: a writer's wait has no window.
func (w *Window) Wait(try func() bool, sleep func() error) (caught bool, err error) {
	if w == nil {
		return false, sleep()
	}
	if w.Poll(try) {
		return true, nil
	}
	w.Sleeping()
	err = sleep()
	w.Woke()
	return false, err
}

// Sleeping notes that the reader goes to sleep in the kernel now, after a
// Poll that found nothing.
func (w *Window) Sleeping() {
	if w.max > 0 {
		w.sleep = time.Now()
		w.slept.Add(1)
	}
}

// Woke notes that the reader's sleep ended, and adapts the window to the
// time the packet took since the poll began: the poll plus the sleep.
func (w *Window) Woke() {
	if w.max > 0 {
		w.adapt(w.polled + time.Since(w.sleep))
	}
}

// horizon is how many windows a wait may take and still open the window
// for sure: a longer window would likely have caught the packet.
const horizon = 2

// A request/response is a chain: each thread in it waits for the whole
// round trip, and the round trip is short only once every thread polls.
// While they all sleep, each wait carries every hop's wake-up, and on a
// slow VM that can be far beyond the horizon: the windows would stay shut
// because they are shut. So a wait up to probeHorizon windows also opens the
// window, as a probe, while the probes pay: until the polls that found
// nothing outnumber catchPays times the polls that caught a packet by
// probes. A chain whose threads all poll catches most packets; a steady
// stream whose gaps are longer than the window (polling cannot shorten
// them) catches few, and stops probing. It probes again after rest more
// sleeps, or after a pause longer than idleGap windows: the traffic may have
// changed.
const (
	probeHorizon = 8
	probes       = 64
	catchPays    = 4
	rest         = 1024
	idleGap      = 100
)

// growStart is the first window, as a fraction of the maximum; cpuidle-
// haltpoll starts at a quarter of its own (50 of 200 µs).
const growStart = 4

// adapt sets the window after a wait of waited that polling did not cover.
// A wait within the horizon, or a probe's (see probeHorizon), doubles the
// window, up to the maximum. A longer one means polling was wasted: the
// window halves, and falls to 0 below its starting size.
func (w *Window) adapt(waited time.Duration) {
	if w.Open() || w.fruitless >= probes { // it polled in vain, or rests
		w.fruitless++
	}
	if waited > idleGap*w.max || w.fruitless >= probes+rest {
		w.fruitless = 0
	}
	start := w.max / growStart
	switch {
	case waited <= horizon*w.max,
		waited <= probeHorizon*w.max && w.fruitless < probes:
		w.cur = min(max(2*w.cur, start), w.max)
	case w.cur/2 < start:
		w.cur = 0
	default:
		w.cur /= 2
	}
}
