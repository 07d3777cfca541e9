package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/traffic"
	"github.com/overlayd/overlayd/tunnel"
)

// TestBusyPoll checks --busy-poll (on by default) from the outside: echoes
// sent back to back between two containers, each as soon as the last one's
// reply came, all come back, and both daemons' forwarding threads caught
// some of them by polling instead of sleeping.
func TestBusyPoll(t *testing.T) {
	c := startCluster(t, 2, cluster.Options{})
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
		if s.Max != tunnel.DefaultBusyPoll.String() {
			t.Errorf("%s: busy poll up to %s, want the default %s", d.Name(), s.Max, tunnel.DefaultBusyPoll)
		}
		if s.Caught == 0 {
			t.Errorf("%s: no read caught a packet by polling over %d back-to-back echoes", d.Name(), st.Received)
		}
	}
}

func busyPoll(t *testing.T, d *cluster.Daemon) tunnel.BusyPollStatus {
	t.Helper()
	s, err := d.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.BusyPoll == nil {
		t.Fatalf("%s: status has no busy_poll, with --busy-poll on by default", d.Name())
	}
	return *s.BusyPoll
}
