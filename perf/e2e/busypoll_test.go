package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/traffic"
	"github.com/overlayd/overlayd/tunnel"
)

// TestBusyPoll checks --busy-poll from the outside: echoes sent back to
// back between two containers, each as soon as the last one's reply came,
// all come back, and both daemons' forwarding threads caught some of them
// by polling instead of sleeping. The window is 1ms, not the default 50µs,
// so that a round trip slowed by a busy machine still opens it.
func TestBusyPoll(t *testing.T) {
	const window = "1ms"
	c := startCluster(t, 2, cluster.Options{DaemonArgs: []string{"--busy-poll=" + window}})
	waitFullMesh(t, c)
	a, b := c.Daemons[0], c.Daemons[1]

	const echoes = 2000
	st, err := traffic.PingRTT(context.Background(), a.Container.NS, b.Container.Addr.Addr(), 64, echoes, 0, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sent != echoes || st.Received != st.Sent {
		t.Fatalf("%d of %d echoes sent, %d came back", st.Sent, echoes, st.Received)
	}
	for _, d := range c.Daemons {
		s := busyPoll(t, d)
		t.Logf("%s: busy poll up to %s caught %d packets, slept %d times", d.Name(), s.Max, s.Caught, s.Slept)
		if s.Max != window {
			t.Errorf("%s: busy poll up to %s, want %s", d.Name(), s.Max, window)
		}
		if s.Caught == 0 {
			t.Errorf("%s: no read caught a packet by polling over %d back-to-back echoes", d.Name(), st.Received)
		}
		checkReaders(t, d.Name(), s)
	}
}

func busyPoll(t *testing.T, d *cluster.Daemon) tunnel.BusyPollStatus {
	t.Helper()
	s, err := d.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.BusyPoll == nil {
		t.Fatalf("%s: status has no busy_poll, with --busy-poll on", d.Name())
	}
	return *s.BusyPoll
}

// checkReaders checks status's busy-poll counts per reader: a TUN queue
// and an underlay socket for every worker, adding up to the totals.
func checkReaders(t *testing.T, name string, s tunnel.BusyPollStatus) {
	t.Helper()
	var caught, slept uint64
	kinds := map[string]int{}
	for _, r := range s.Readers {
		t.Logf("%s: worker %d %s: %d caught, %d slept", name, r.Worker, r.Reads, r.Caught, r.Slept)
		caught += r.Caught
		slept += r.Slept
		kinds[r.Reads]++
	}
	if caught != s.Caught || slept != s.Slept {
		t.Errorf("%s: readers add up to %d caught, %d slept; the totals say %d, %d", name, caught, slept, s.Caught, s.Slept)
	}
	if len(s.Readers) == 0 || kinds["tun"] != kinds["underlay"] || kinds["tun"]+kinds["underlay"] != len(s.Readers) {
		t.Errorf("%s: readers %v, want a tun and an underlay reader per worker", name, kinds)
	}
}
