package traffic

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/netns"
)

// startRRServer runs an RRServer inside ns until the test ends.
func startRRServer(t *testing.T, ns *netns.NS, addr netip.AddrPort) *RRServer {
	t.Helper()
	var srv *RRServer
	if err := ns.Do(func() error {
		var err error
		srv, err = ListenRR(addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv
}

// dialRR dials from inside ns.
func dialRR(t *testing.T, ns *netns.NS, opts RROptions) *RRClient {
	t.Helper()
	var c *RRClient
	if err := ns.Do(func() error {
		var err error
		c, err = DialRR(context.Background(), opts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRR(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, b, dst := l.pair(1500)
	srv := startRRServer(t, b, netip.AddrPortFrom(dst, 0))

	for _, proto := range []string{"tcp", "udp"} {
		for _, size := range []int{0, 1400} {
			c := dialRR(t, a, RROptions{Protocol: proto, Addr: srv.Addr(), Size: size, Duration: 200 * time.Millisecond})
			r, err := c.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %d B: %d transactions, %d timeouts, %.0f/s, p50 %.1f µs, p99 %.1f µs",
				proto, r.Size, r.Transactions, r.Timeouts, r.TPS, r.RTT.P50US, r.RTT.P99US)
			want := size
			if size == 0 {
				want = DefaultRRSize
			}
			if r.Protocol != proto || r.Size != want {
				t.Errorf("result for %s %d B", r.Protocol, r.Size)
			}
			if r.Transactions == 0 || r.RTT.Count != r.Transactions || r.TPS <= 0 || r.Seconds <= 0 {
				t.Errorf("%s: %+v: want transactions, each with a round trip", proto, r)
			}
			if s := r.RTT; !(0 < s.MinUS && s.MinUS <= s.P50US && s.P50US <= s.P99US && s.P99US <= s.MaxUS) {
				t.Errorf("%s: round trips out of order: %+v", proto, s)
			}
			if proto == "tcp" && r.Timeouts != 0 {
				t.Errorf("tcp counted %d timeouts", r.Timeouts)
			}
		}
	}
}

// TestRRUDPLoss answers only even-numbered requests: the odd ones must be
// counted as timeouts, and the run must still end.
func TestRRUDPLoss(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, b, dst := l.pair(1500)
	var pc net.PacketConn
	if err := b.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(dst, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n >= 8 && binary.LittleEndian.Uint64(buf)%2 == 0 {
				pc.WriteTo(buf[:n], from)
			}
		}
	}()
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	c := dialRR(t, a, RROptions{Protocol: "udp", Addr: netip.AddrPortFrom(dst, addr.Port()), Duration: 300 * time.Millisecond, Timeout: 20 * time.Millisecond})
	r, err := c.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if r.Transactions == 0 || r.Timeouts == 0 {
		t.Errorf("got %d transactions and %d timeouts; want both", r.Transactions, r.Timeouts)
	}
	// Every other request is never answered, so at least every other one
	// times out; on a loaded machine an answered one may time out too (its
	// late reply is then skipped), but no reply counts for a request that
	// got none.
	if r.Timeouts < r.Transactions-1 {
		t.Errorf("%d answered, %d timed out: a reply counted for an unanswered request", r.Transactions, r.Timeouts)
	}
}

func TestRRNoServer(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, _, dst := l.pair(1500)
	for _, proto := range []string{"tcp", "udp"} {
		err := a.Do(func() error {
			_, err := DialRR(context.Background(), RROptions{Protocol: proto, Addr: netip.AddrPortFrom(dst, 9), Duration: time.Second, Wait: 100 * time.Millisecond})
			return err
		})
		if err == nil {
			t.Errorf("%s: DialRR to a port nobody listens on: no error", proto)
		}
	}
}

func TestRROptions(t *testing.T) {
	ok := RROptions{Protocol: "tcp", Addr: netip.MustParseAddrPort("198.18.1.2:5301"), Duration: time.Second}
	if o, err := ok.withDefaults(); err != nil || o.Size != DefaultRRSize || o.Timeout != DefaultRRTimeout || o.Wait != DefaultRRWait {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	for name, mod := range map[string]func(*RROptions){
		"protocol": func(o *RROptions) { o.Protocol = "sctp" },
		"ipv6":     func(o *RROptions) { o.Addr = netip.MustParseAddrPort("[2001:db8::1]:5301") },
		"port":     func(o *RROptions) { o.Addr = netip.MustParseAddrPort("198.18.1.2:0") },
		"size":     func(o *RROptions) { o.Size = 4 },
		"duration": func(o *RROptions) { o.Duration = 0 },
	} {
		o := ok
		mod(&o)
		if _, err := o.withDefaults(); err == nil {
			t.Errorf("%s: no error for %+v", name, o)
		}
	}
}

func TestRRServerClose(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	_, b, dst := l.pair(1500)
	var srv *RRServer
	if err := b.Do(func() error {
		var err error
		srv, err = ListenRR(netip.AddrPortFrom(dst, 0))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil { // never served
		t.Fatal(err)
	}
	if err := srv.Serve(); err == nil {
		t.Error("Serve after Close: no error")
	}
}

func TestPingRTT(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, _, dst := l.pair(1500)
	st, err := PingRTT(context.Background(), a, dst, 84, 20, time.Millisecond, answerWithin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", st)
	if st.Sent != 20 || st.Received != 20 || st.RTT.Count != 20 || st.RTT.P50US <= 0 {
		t.Errorf("got %+v, want 20 replies", st)
	}
	// Nobody has 198.18.1.3: every echo is lost, none is an error.
	st, err = PingRTT(context.Background(), a, netip.MustParseAddr("198.18.1.3"), 84, 2, 0, 50*time.Millisecond)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if st.Sent != 2 || st.Received != 0 {
		t.Errorf("to nobody: %+v, want 2 sent, none received", st)
	}
}

// TestRRRunAllocs checks that a run allocates nothing per transaction.
// MemStats count the whole process (client, server, the runtime making
// threads when a loaded machine preempts a wait: a few dozen at most
// however long the run), so the bound grows with the transactions by a
// fiftieth: an allocation per transaction, or per few, still fails it.
// Not parallel: MemStats count every goroutine's allocations.
func TestRRRunAllocs(t *testing.T) {
	l := newLab(t)
	a, b, dst := l.pair(1500)
	srv := startRRServer(t, b, netip.AddrPortFrom(dst, 0))
	for _, proto := range []string{"tcp", "udp"} {
		c := dialRR(t, a, RROptions{Protocol: proto, Addr: srv.Addr(), Duration: 200 * time.Millisecond})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := c.Run(context.Background())
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		n, limit := after.Mallocs-before.Mallocs, 20+r.Transactions/50
		t.Logf("%s: %d allocations in %d transactions (at most %d)", proto, n, r.Transactions, limit)
		if n > uint64(limit) {
			t.Errorf("%s: %d allocations in %d transactions, more than %d", proto, n, r.Transactions, limit)
		}
	}
}
