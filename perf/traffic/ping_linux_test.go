package traffic

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// answerWithin bounds how long a test waits for an answer that must come;
// it only matters when something is broken.
const answerWithin = 5 * time.Second

func TestPingReply(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, _, dst := l.pair(1500)

	for _, df := range []bool{true, false} {
		r, err := Ping(context.Background(), a, dst, 84, df, answerWithin)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Reply || r.From != dst || r.RTT <= 0 {
			t.Errorf("df=%v: got %v, want a reply from %s", df, r, dst)
		}
	}
}

func TestPingLocalTooBig(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, _, dst := l.pair(1500)
	ctx := context.Background()

	r, err := Ping(ctx, a, dst, 1501, true, answerWithin)
	if err != nil {
		t.Fatal(err)
	}
	if !r.LocalTooBig || r.LocalMTU != 1500 {
		t.Errorf("DF 1501 over MTU 1500: got %v, want local too big, MTU 1500", r)
	}
	if r, err := Ping(ctx, a, dst, 1500, true, answerWithin); err != nil || !r.Reply {
		t.Errorf("DF 1500 over MTU 1500: got %v, %v; want a reply", r, err)
	}
	if r, err := Ping(ctx, a, dst, 1501, false, answerWithin); err != nil || !r.Reply {
		t.Errorf("1501 without DF: got %v, %v; want a reply (fragmented)", r, err)
	}
}

func TestPingFragNeeded(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, _, _ := l.routed(1300)
	dst, router := netip.MustParseAddr("198.18.2.1"), netip.MustParseAddr("198.18.1.254")
	ctx := context.Background()

	r, err := Ping(ctx, a, dst, 1400, true, answerWithin)
	if err != nil {
		t.Fatal(err)
	}
	if !r.FragNeeded || r.NextHopMTU != 1300 || r.From != router {
		t.Fatalf("DF 1400 into a 1300 link: got %v, want fragmentation needed from %s, MTU 1300", r, router)
	}
	// a has learnt the path MTU, so now its own kernel refuses.
	if r, err := Ping(ctx, a, dst, 1400, true, answerWithin); err != nil || !r.LocalTooBig || r.LocalMTU != 1300 {
		t.Errorf("DF 1400 after learning the path MTU: got %v, %v; want local too big, MTU 1300", r, err)
	}
	if r, err := Ping(ctx, a, dst, 1300, true, answerWithin); err != nil || !r.Reply {
		t.Errorf("DF 1300: got %v, %v; want a reply", r, err)
	}
	if r, err := Ping(ctx, a, dst, 1400, false, answerWithin); err != nil || !r.Reply {
		t.Errorf("1400 without DF: got %v, %v; want a reply", r, err)
	}
}

func TestPingUnreachable(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, _, _ := l.routed(1500)
	router := netip.MustParseAddr("198.18.1.254")

	r, err := Ping(context.Background(), a, netip.MustParseAddr("198.18.3.1"), 84, true, answerWithin)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Unreachable || r.ICMPType != 3 || r.ICMPCode != 1 || r.From != router {
		t.Errorf("got %v, want host unreachable (3/1) from %s", r, router)
	}
}

func TestPingSilence(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, _, _ := l.pair(1500)
	// A neighbour that exists only in a's ARP table: the request leaves, and
	// b drops it as addressed to another MAC.
	l.ip(a, "neigh", "add", "198.18.1.99", "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "permanent")

	r, err := Ping(context.Background(), a, netip.MustParseAddr("198.18.1.99"), 84, true, 50*time.Millisecond)
	if err != nil || r != (PingResult{}) {
		t.Errorf("got %v, %v; want no answer and no error", r, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Ping(ctx, a, netip.MustParseAddr("198.18.1.99"), 84, true, 0); err == nil {
		t.Error("Ping with a cancelled context returned no error")
	}
}

func TestPingConcurrent(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, b, dst := l.pair(1500)
	back := netip.MustParseAddr("198.18.1.1")

	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			from, to := a, dst
			if i%2 == 1 {
				from, to = b, back
			}
			r, err := Ping(context.Background(), from, to, 64+i*80, true, answerWithin)
			if err != nil || !r.Reply || r.From != to {
				t.Errorf("ping %d from %s: got %v, %v; want a reply from %s", i, from.Name, r, err, to)
			}
		})
	}
	wg.Wait()
}

func TestPingArguments(t *testing.T) {
	l := newLab(t)
	a := l.ns("a")
	ctx := context.Background()
	v4 := netip.MustParseAddr("198.18.1.2")
	for _, tt := range []struct {
		name string
		dst  netip.Addr
		size int
	}{
		{"IPv6", netip.MustParseAddr("2001:db8::1"), 84},
		{"invalid address", netip.Addr{}, 84},
		{"too small", v4, MinPingSize - 1},
		{"too big", v4, MaxPingSize + 1},
	} {
		if _, err := Ping(ctx, a, tt.dst, tt.size, true, time.Millisecond); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
	if _, err := Ping(ctx, nil, v4, 84, true, time.Millisecond); err == nil {
		t.Error("nil namespace: no error")
	}
}
