package idlepoll

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

// fakeRequest reports each Hold and Release on events. With gate set, Hold
// waits for it after reporting.
type fakeRequest struct {
	events  chan string
	holdErr error
	gate    chan struct{}
}

func (f *fakeRequest) Hold() error {
	f.events <- "hold"
	if f.gate != nil {
		<-f.gate
	}
	return f.holdErr
}
func (f *fakeRequest) Release() error { f.events <- "release"; return nil }

// handTicked is a Governor whose quiet-period ticks the test sends.
func handTicked(t *testing.T, req Request) (*Governor, chan time.Time) {
	t.Helper()
	g := New(req, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ticks := make(chan time.Time)
	g.newTicker = func(time.Duration) (<-chan time.Time, func()) { return ticks, func() {} }
	return g, ticks
}

// tick sends a tick and waits until the Governor has looked for packets
// (it clears seen, which only Busy sets).
func tick(ticks chan time.Time, g *Governor) {
	ticks <- time.Time{}
	for g.seen.Load() {
		time.Sleep(time.Millisecond)
	}
}

func start(t *testing.T, g *Governor) (cancel func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return cancel
}

func want(t *testing.T, events chan string, event string) {
	t.Helper()
	select {
	case got := <-events:
		if got != event {
			t.Fatalf("request got %s, want %s", got, event)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("request never got %s", event)
	}
}

func wantNone(t *testing.T, events chan string) {
	t.Helper()
	select {
	case got := <-events:
		t.Fatalf("request got %s, want nothing", got)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestHeldWhilePacketsFlowReleasedWhenQuiet(t *testing.T) {
	req := &fakeRequest{events: make(chan string, 4)}
	g, ticks := handTicked(t, req)
	start(t, g)

	wantNone(t, req.events) // no packets: never held
	g.Busy()
	want(t, req.events, "hold")

	// A tick after packets keeps the request; one without releases it.
	tick(ticks, g) // taken once the hold is in place
	if !g.Held() {
		t.Fatal("Held() = false after the hold")
	}
	g.Busy()
	tick(ticks, g)
	wantNone(t, req.events)
	ticks <- time.Time{}
	want(t, req.events, "release")

	// Packets again: held again.
	g.Busy()
	want(t, req.events, "hold")
	if n := g.Holds(); n != 2 {
		t.Fatalf("Holds() = %d, want 2", n)
	}
}

// Packets seen while the request is being taken are answered by that hold:
// after the release, nothing takes it again.
func TestBusyDuringHoldTakesNoSecondHold(t *testing.T) {
	req := &fakeRequest{events: make(chan string, 4), gate: make(chan struct{})}
	g, ticks := handTicked(t, req)
	start(t, g)
	g.Busy()
	want(t, req.events, "hold") // Run is inside Hold now
	g.Busy()                    // another worker's batch
	close(req.gate)
	tick(ticks, g)
	ticks <- time.Time{}
	want(t, req.events, "release")
	wantNone(t, req.events)
	if n := g.Holds(); n != 1 {
		t.Fatalf("Holds() = %d, want 1", n)
	}
}

func TestReleasedOnStop(t *testing.T) {
	req := &fakeRequest{events: make(chan string, 4)}
	g, _ := handTicked(t, req)
	cancel := start(t, g)
	g.Busy()
	want(t, req.events, "hold")
	cancel()
	want(t, req.events, "release")
}

func TestGivesUpWhenTheRequestFails(t *testing.T) {
	req := &fakeRequest{events: make(chan string, 4), holdErr: errors.New("permission denied")}
	g, _ := handTicked(t, req)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()

	g.Busy()
	want(t, req.events, "hold")
	select {
	case <-done: // Run returned without ctx
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running after a failed hold")
	}
	g.Busy() // must not block or kick anything
	if g.Held() {
		t.Fatal("Held() = true after a failed hold")
	}
	if err := g.Err(); err == nil || err.Error() != "permission denied" {
		t.Fatalf("Err() = %v, want the Hold's error", err)
	}
	wantNone(t, req.events)
}

func TestNilGovernor(t *testing.T) {
	var g *Governor
	g.Busy()
	if g.Held() || g.Holds() != 0 {
		t.Fatal("a nil Governor reports a hold")
	}
}

func TestBusyAllocatesNothing(t *testing.T) {
	g, _ := handTicked(t, &fakeRequest{events: make(chan string, 4)})
	if n := testing.AllocsPerRun(1000, g.Busy); n != 0 {
		t.Fatalf("Busy allocates %v times per call", n)
	}
}

func BenchmarkBusy(b *testing.B) {
	g := New(&fakeRequest{events: make(chan string, 4)}, time.Hour, slog.Default())
	g.held.Store(true) // as while packets flow
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.Busy()
		}
	})
}
