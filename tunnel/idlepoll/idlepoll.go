// Package idlepoll keeps the CPUs polling, rather than halting, while
// packets flow.
//
// A packet crossing overlayd wakes a thread at each hop. When the CPU that
// thread wakes on has gone idle, the CPU must first leave its idle state:
// on a virtual machine, a halted vCPU is woken through the hypervisor,
// which cost ~25 µs per wake-up on the project's 2-core KVM guest and made
// a 64 B TCP request/response across two hosts take 110 µs instead of
// 37 µs. The kernel's answer is a PM QoS request for a CPU wake-up latency
// of 0 (/dev/cpu_dma_latency, as tuned's latency profiles use): idle CPUs
// then poll for work instead of halting. It costs the time the CPUs spend
// polling, so a Governor holds the request only while packets flow and
// drops it after a quiet period: an idle host never polls. The request is
// the whole machine's, every CPU's, so overlayd makes it only when asked
// (--idle-poll).
package idlepoll

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// A Request is a system-wide request for idle CPUs to poll.
type Request interface {
	// Hold asks for it; Release drops it. Each is called only after the
	// other, Hold first.
	Hold() error
	Release() error
}

// A Governor holds its Request while packets flow: from the first packet
// it hears of (Busy) until a whole tick of its quiet period passes without
// one.
type Governor struct {
	req   Request
	quiet time.Duration
	log   *slog.Logger

	seen atomic.Bool           // Busy was called since the last tick
	held atomic.Bool           // the request is held, or failed: Busy need not kick
	err  atomic.Pointer[error] // why the request could not be held: Run gave up
	kick chan struct{}

	// newTicker is time.NewTicker's channel and Stop; tests tick by hand.
	newTicker func(time.Duration) (<-chan time.Time, func())

	holds atomic.Uint64 // times the request was taken, for /metrics
}

// New returns a Governor that holds req while packets flow, and releases
// it once a tick of quiet passes without any: between one and two quiet
// periods after the last packet.
func New(req Request, quiet time.Duration, log *slog.Logger) *Governor {
	return &Governor{req: req, quiet: quiet, log: log, kick: make(chan struct{}, 1), newTicker: newTicker}
}

func newTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// Busy tells g that packets flow. The forwarding routines call it once per
// batch: it allocates nothing, and costs a load or two of atomics shared
// by the routines, which they write only once per quiet period. A nil
// Governor does nothing.
func (g *Governor) Busy() {
	if g == nil {
		return
	}
	if !g.seen.Load() {
		g.seen.Store(true)
	}
	if !g.held.Load() {
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
}

// Held reports whether the request is held now.
func (g *Governor) Held() bool {
	return g != nil && g.held.Load() && g.err.Load() == nil
}

// Err is why the request could not be held, once Run gave up; nil before.
func (g *Governor) Err() error {
	if g == nil {
		return nil
	}
	if e := g.err.Load(); e != nil {
		return *e
	}
	return nil
}

// Holds is how many times the request was taken.
func (g *Governor) Holds() uint64 {
	if g == nil {
		return 0
	}
	return g.holds.Load()
}

// Run holds and releases the request until ctx is done, and releases it
// then. If the request cannot be held (no /dev/cpu_dma_latency, or no
// permission), Run logs why once and stops trying: packets flow as before.
// While no packets flow it sleeps, with no timer.
func (g *Governor) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.kick:
		}
		if err := g.req.Hold(); err != nil {
			g.err.Store(&err)
			g.held.Store(true) // stops Busy's kicks for good
			g.log.Warn("--idle-poll: cannot keep idle CPUs polling while packets flow; it needs write access to /dev/cpu_dma_latency "+
				"(run as root, or pass the device into the container), or leave --idle-poll at 0", "error", err)
			return
		}
		g.held.Store(true)
		// A Busy during Hold, before held was set, kicked again: this
		// hold answers it, and a kick left waiting would take the
		// request once more after the release, with no packets.
		select {
		case <-g.kick:
		default:
		}
		if g.holds.Add(1) == 1 {
			g.log.Info("idle CPUs poll while packets flow (PM QoS CPU latency 0), until they stop for --idle-poll", "idle_poll", g.quiet)
		}
		stopped := g.waitQuiet(ctx)
		if err := g.req.Release(); err != nil {
			g.log.Warn("release the CPU latency request", "error", err)
		}
		// A Busy between the last tick and here saw held and did not
		// kick; the next batch will.
		g.held.Store(false)
		g.log.Debug("packets stopped: idle CPUs may halt again")
		if stopped {
			return
		}
	}
}

// waitQuiet returns once a whole tick of the quiet period passes without
// Busy (so between one and two periods after the last packet), or with
// true once ctx is done.
func (g *Governor) waitQuiet(ctx context.Context) bool {
	ticks, stop := g.newTicker(g.quiet)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return true
		case <-ticks:
			if !g.seen.Swap(false) {
				return false
			}
		}
	}
}
