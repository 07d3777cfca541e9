package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/traffic"
	"github.com/overlayd/overlayd/tunnel"
	"github.com/overlayd/overlayd/tunnel/idlepoll"
)

// TestIdlePoll checks --idle-poll from the outside: packets between the
// containers make each daemon keep the CPUs polling (none enters halt
// while it holds), and once the packets stop each lets them halt again.
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
	pinging := make(chan error, 1)
	go func() {
		_, err := traffic.PingRTT(ctx, a.Container.NS, b.Container.Addr.Addr(), 64, 1<<30, 10*time.Millisecond, time.Second)
		pinging <- err
	}()

	t.Run("HeldWhilePacketsFlow", func(t *testing.T) {
		for _, d := range c.Daemons {
			s := waitIdlePoll(t, d, true)
			t.Logf("%s: idle polling held, %d holds", d.Name(), s.Holds)
		}
		if !haltStates(t) {
			t.Skip("no cpuidle state with an exit latency here: nothing to keep CPUs out of")
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
	if err := <-pinging; err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}

	t.Run("ReleasedWhenQuiet", func(t *testing.T) {
		for _, d := range c.Daemons {
			s := waitIdlePoll(t, d, false)
			t.Logf("%s: idle polling released after %d holds", d.Name(), s.Holds)
		}
		if !haltStates(t) {
			return
		}
		// Another test's daemons may hold their own request: only when
		// none does must the CPUs halt again.
		halts0 := haltEntries(t)
		time.Sleep(100 * time.Millisecond)
		if haltEntries(t) == halts0 && !otherHolders() {
			t.Fatal("no CPU entered halt with both daemons released and nothing else holding")
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
	return *s.IdlePoll
}

// waitIdlePoll waits for d's idle polling to be held (or not), and returns
// the status that says so.
func waitIdlePoll(t *testing.T, d *cluster.Daemon, held bool) tunnel.IdlePollStatus {
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
		time.Sleep(20 * time.Millisecond)
	}
}

// haltStates reports whether the CPUs have an idle state with an exit
// latency, which a held request keeps them out of.
func haltStates(t *testing.T) bool {
	t.Helper()
	c, err := idlepoll.ReadIdleCounters("")
	if err != nil {
		t.Fatal(err)
	}
	return c.HaltStates
}

func haltEntries(t *testing.T) uint64 {
	t.Helper()
	c, err := idlepoll.ReadIdleCounters("")
	if err != nil {
		t.Fatal(err)
	}
	return c.Halts
}

// otherHolders reports whether a process other than this test's daemons
// has /dev/cpu_dma_latency open (such as another test's overlayd).
func otherHolders() bool {
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && target == "/dev/cpu_dma_latency" {
			return true
		}
	}
	return false
}
