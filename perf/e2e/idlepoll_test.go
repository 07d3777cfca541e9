package e2e

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/traffic"
	"github.com/overlayd/overlayd/tunnel"
	"github.com/overlayd/overlayd/tunnel/idlepoll"
)

// TestIdlePoll checks --idle-poll from the outside: packets between the
// containers make each daemon take a CPU latency request (its process has
// /dev/cpu_dma_latency open, and no CPU enters halt meanwhile), and once
// the packets stop each lets it go.
func TestIdlePoll(t *testing.T) {
	if _, err := os.Stat("/dev/cpu_dma_latency"); err != nil {
		t.Skipf("no PM QoS CPU latency request on this kernel: %v", err)
	}
	c := startCluster(t, 2, cluster.Options{DaemonArgs: []string{"--idle-poll=300ms"}})
	waitFullMesh(t, c)
	a, b := c.Daemons[0], c.Daemons[1]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Pings 10 ms apart keep packets flowing in both daemons.
	var pingErr error
	pinging := make(chan struct{}) // closed when the pinger stops
	go func() {
		defer close(pinging)
		_, pingErr = traffic.PingRTT(ctx, a.Container.NS, b.Container.Addr.Addr(), 64, 1<<30, 10*time.Millisecond, time.Second)
	}()

	t.Run("HeldWhilePacketsFlow", func(t *testing.T) {
		for _, d := range c.Daemons {
			s := waitIdlePoll(t, d, true, pinging, &pingErr)
			t.Logf("%s: idle polling held, %d holds", d.Name(), s.Holds)
			if !slices.Contains(idlepoll.Holders(), d.Proc.Pid()) {
				t.Errorf("%s (pid %d) says it holds idle polling, but has no /dev/cpu_dma_latency open", d.Name(), d.Proc.Pid())
			}
		}
		idle, err := idlepoll.ReadIdleCounters("")
		if err != nil {
			t.Fatal(err)
		}
		if !idle.CanPoll {
			t.Skip("no cpuidle polling state beside halting ones: the request keeps nothing out of halt here")
		}
		// Count halts between two looks at one daemon that find the same
		// hold in place; a hold that ended meanwhile (a stalled pinger on
		// a busy machine) is looked at again.
		for try := 0; ; try++ {
			before, halts0 := idlePoll(t, a), haltEntries(t)
			time.Sleep(100 * time.Millisecond)
			after, halts1 := idlePoll(t, a), haltEntries(t)
			if before.Held && after.Held && before.Holds == after.Holds {
				if halts1 != halts0 {
					t.Fatalf("CPUs entered halt %d times while %s held idle polling", halts1-halts0, a.Name())
				}
				break
			}
			if try == 10 {
				t.Fatalf("%s never held idle polling across 100 ms while pinged every 10 ms", a.Name())
			}
		}
	})

	cancel()
	<-pinging
	if pingErr != nil && !errors.Is(pingErr, context.Canceled) {
		t.Fatalf("ping: %v", pingErr)
	}

	t.Run("ReleasedWhenQuiet", func(t *testing.T) {
		for _, d := range c.Daemons {
			s := waitIdlePoll(t, d, false, nil, nil)
			t.Logf("%s: idle polling released after %d holds", d.Name(), s.Holds)
			if slices.Contains(idlepoll.Holders(), d.Proc.Pid()) {
				t.Errorf("%s (pid %d) says it released idle polling, but still has /dev/cpu_dma_latency open", d.Name(), d.Proc.Pid())
			}
		}
	})
}

func idlePoll(t *testing.T, d *cluster.Daemon) tunnel.IdlePollStatus {
	t.Helper()
	s, err := d.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.IdlePoll == nil {
		t.Fatalf("%s: status has no idle_poll, with --idle-poll on", d.Name())
	}
	if s.IdlePoll.Error != "" {
		t.Fatalf("%s: idle polling failed: %s", d.Name(), s.IdlePoll.Error)
	}
	return *s.IdlePoll
}

// waitIdlePoll waits for d's idle polling to be held (or not), and returns
// the status that says so. The traffic stopping (stopped closed, with why
// in *why) ends the wait.
func waitIdlePoll(t *testing.T, d *cluster.Daemon, held bool, stopped <-chan struct{}, why *error) tunnel.IdlePollStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := idlePoll(t, d)
		if s.Held == held {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: idle polling held = %v after 30 s, want %v", d.Name(), s.Held, held)
		}
		select {
		case <-stopped:
			t.Fatalf("ping stopped: %v", *why)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func haltEntries(t *testing.T) uint64 {
	t.Helper()
	c, err := idlepoll.ReadIdleCounters("")
	if err != nil {
		t.Fatal(err)
	}
	return c.Halts
}
