package tunnel

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/tunnel/underlay/underlaytest"
)

// scrape returns what /metrics serves for v, in the text format.
func scrape(t *testing.T, v metricsView) string {
	t.Helper()
	rec := httptest.NewRecorder()
	metricsHandler(func() metricsView { return v }).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// Every drop reason has a name of its own, and status and /metrics show
// each one with its own count.
func TestEveryDropReasonIsShownByName(t *testing.T) {
	var s Stats
	seen := map[string]DropReason{}
	for r := DropReason(0); r < numDropReasons; r++ {
		name := r.String()
		if name == "" {
			t.Fatalf("drop reason %d has no name", r)
		}
		if other, dup := seen[name]; dup {
			t.Fatalf("drop reasons %d and %d are both %q", other, r, name)
		}
		seen[name] = r
		s.Drops[r].Add(uint64(r) + 1)
	}
	snap := s.Snapshot()
	metrics := scrape(t, metricsView{Status: Status{Stats: snap}})
	for name, r := range seen {
		if got := snap.Drops[name]; got != uint64(r)+1 {
			t.Errorf("status drops[%s] = %d, want %d", name, got, uint64(r)+1)
		}
		if line := fmt.Sprintf("overlayd_drops_total{reason=%q} %d\n", name, uint64(r)+1); !strings.Contains(metrics, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func TestBatchHistogramBuckets(t *testing.T) {
	var h batchHistogram
	for _, n := range []int{0, 1, 2, 3, 4, 5, 64, 65, 128, 129, 1000} {
		h.observe(n)
	}
	var s batchSizes
	s.add(&h)
	//            le: 1  2  4  8  16 32 64 128 +Inf
	want := [...]uint64{1, 1, 2, 1, 0, 0, 1, 2, 2}
	if s.counts != want {
		t.Errorf("buckets %v, want %v", s.counts, want)
	}
	if s.sum != 1+2+3+4+5+64+65+128+129+1000 {
		t.Errorf("sum %d", s.sum)
	}
}

// The names and labels dashboards rely on, the new ones, and the
// library's own process and Go runtime metrics.
func TestMetricsNamesAndLabels(t *testing.T) {
	var s Stats
	s.TxPackets.Add(7)
	s.FirewallChecks.Add(3)
	s.FirewallRepairs.Add(1)
	now := time.Unix(1_700_000_000, 0)
	v := metricsView{
		Status: Status{Ready: true, Backend: "udp", Subnet: "100.96.1.0/24", Stats: s.Snapshot(),
			Peers: []PeerStatus{{Subnet: "100.96.2.0/24"}}, Underlay: map[string]uint64{"sent": 9},
			BusyPoll: &BusyPollStatus{Max: "50µs", Caught: 11, Slept: 4}},
		Version:     "v1.2.3",
		PeerTraffic: []peerTraffic{{Subnet: "100.96.2.0/24", TxPackets: 5, TxBytes: 500, RxPackets: 4, RxBytes: 400, RxDrop: 2}},
		Batches:     map[string]batchSizes{routineTx: {counts: [9]uint64{3, 0, 1}, sum: 6}},
		LeaseExpiry: now.Add(90 * time.Minute),
		Now:         now,
	}
	out := scrape(t, v)
	for _, line := range []string{
		`overlayd_build_info{backend="udp",subnet="100.96.1.0/24",version="v1.2.3"} 1`,
		`overlayd_ready 1`,
		`overlayd_peers 1`,
		`overlayd_packets_total{dir="tx"} 7`,
		`overlayd_bytes_total{dir="rx"} 0`,
		`overlayd_icmp_sent_total 0`,
		`overlayd_underlay_total{kind="sent"} 9`,
		`overlayd_peer_packets_total{dir="tx",peer="100.96.2.0/24"} 5`,
		`overlayd_peer_bytes_total{dir="rx",peer="100.96.2.0/24"} 400`,
		`overlayd_peer_drops_total{dir="rx",peer="100.96.2.0/24"} 2`,
		`overlayd_peer_drops_total{dir="tx",peer="100.96.2.0/24"} 0`,
		`overlayd_lease_remaining_seconds 5400`,
		`overlayd_lease_expiry_timestamp_seconds 1.7000054e+09`,
		`overlayd_firewall_checks_total 3`,
		`overlayd_firewall_repairs_total 1`,
		`overlayd_busy_poll_caught_total 11`,
		`overlayd_busy_poll_slept_total 4`,
		`overlayd_batch_size_bucket{routine="tun-to-underlay",le="1"} 3`,
		`overlayd_batch_size_bucket{routine="tun-to-underlay",le="4"} 4`,
		`overlayd_batch_size_bucket{routine="tun-to-underlay",le="+Inf"} 4`,
		`overlayd_batch_size_sum{routine="tun-to-underlay"} 6`,
		`overlayd_batch_size_count{routine="tun-to-underlay"} 4`,
		`# TYPE overlayd_batch_size histogram`,
		`# TYPE overlayd_peer_packets_total counter`,
		`# TYPE overlayd_lease_remaining_seconds gauge`,
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_start_time_seconds"} {
		if !strings.Contains(out, "\n"+name+" ") {
			t.Errorf("/metrics lacks the library's %s", name)
		}
	}
	// No lease known, no kernel-forwarded peers: those series are absent.
	out = scrape(t, metricsView{Status: Status{Backend: "vxlan"}})
	for _, name := range []string{"overlayd_lease_remaining_seconds", "overlayd_peer_packets_total{", "overlayd_batch_size_bucket", "overlayd_busy_poll"} {
		if strings.Contains(out, name) {
			t.Errorf("/metrics has %s without data for it", name)
		}
	}
}

// scrapeSocket scrapes a running engine's /metrics over its control socket.
func scrapeSocket(t *testing.T, socket string) string {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://overlayd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// metricValue returns the value of the series named by name and labels
// (as written in the text format), and whether it is there.
func metricValue(out, series string) (float64, bool) {
	m := regexp.MustCompile("(?m)^" + regexp.QuoteMeta(series) + " (\\S+)$").FindStringSubmatch(out)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// waitMetrics scrapes until ok accepts what the engine serves.
func waitMetrics(t *testing.T, socket, what string, ok func(out string) bool) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := scrapeSocket(t, socket)
		if ok(out) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, still not %s:\n%s", what, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A running pair counts each other's traffic per peer, and a peer that
// leaves takes its series with it.
func TestEngineMetricsPerPeer(t *testing.T) {
	reg := newPairRegistry(t)
	mem := underlaytest.NewNetwork()
	a := startEngine(t, reg, mem, 1, t.TempDir())
	b := startEngine(t, reg, mem, 2, t.TempDir())
	defer a.stop()
	bStopped := false
	defer func() {
		if !bStopped {
			b.stop()
		}
	}()

	probe := ipv4UDP(t, a.addr(2), b.addr(2), 64, false)
	sendUntil(t, a.tun(), b.tun(), probe, func(p []byte) bool { return string(p) == string(probe) })
	const n = 50
	for i := range n {
		a.tun().Inbound <- ipv4UDP(t, a.addr(2), b.addr(byte(3+i)), 100, false)
	}
	receive(t, b.tun(), n, probe)

	bPeer := fmt.Sprintf(`{dir="tx",peer="%s"}`, b.subnet)
	aPeer := fmt.Sprintf(`{dir="rx",peer="%s"}`, a.subnet)
	out := waitMetrics(t, a.socket, "counting the packets sent to b", func(out string) bool {
		v, _ := metricValue(out, "overlayd_peer_packets_total"+bPeer)
		return v >= n+1
	})
	if v, _ := metricValue(out, "overlayd_peer_bytes_total"+bPeer); v < n*100+64 {
		t.Errorf("a's bytes to b: %v, want >= %d", v, n*100+64)
	}
	if v, ok := metricValue(out, `overlayd_lease_remaining_seconds`); !ok || v <= 0 || v > 24*3600 {
		t.Errorf("lease remaining %v (present %v), want within the 24h TTL", v, ok)
	}
	if v, _ := metricValue(out, `overlayd_batch_size_count{routine="tun-to-underlay"}`); v < 1 {
		t.Errorf("no tun-to-underlay batches counted:\n%s", out)
	}
	waitMetrics(t, b.socket, "counting the packets received from a", func(out string) bool {
		v, _ := metricValue(out, "overlayd_peer_packets_total"+aPeer)
		return v >= n+1
	})

	// b leaves (--release-on-exit): a drops b's series.
	bStopped = true
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, a.socket, "without b's series", func(out string) bool {
		return !strings.Contains(out, `peer="`+b.subnet.String()+`"`)
	})
}

// TestEngineCountsMalformedTUNPackets: super-packets whose virtio-net
// header does not describe them are counted as malformed and dropped; any
// number of them in a row does not end the forwarder, as a failing
// device would.
func TestEngineCountsMalformedTUNPackets(t *testing.T) {
	a, b, probe := startConnectedPair(t)
	const bad = 3 * maxConsecutiveErrors
	for range bad {
		super := superPacket(t, a.addr(2), b.addr(2), 4000, 1000)
		super.Hdr.GSOSize = 0
		a.tun().InboundGSO <- super
	}
	after := ipv4UDP(t, a.addr(2), b.addr(3), 64, false)
	a.tun().Inbound <- after
	if got := receive(t, b.tun(), 1, probe); string(got[0]) != string(after) {
		t.Fatalf("b got %x, want the packet sent after the malformed ones", got[0])
	}
	waitMetrics(t, a.socket, "the malformed packets counted", func(out string) bool {
		v, _ := metricValue(out, `overlayd_drops_total{reason="malformed"}`)
		return v == bad
	})
}

// Packets the kernel refuses on the TUN are counted as tun_write_error
// drops: decapsulated packets on the receiving side, and on the sending side
// the ICMP errors written back for what could not be sent, which are then
// not counted as sent.
func TestEngineCountsRefusedTUNWrites(t *testing.T) {
	a, b, probe := startConnectedPair(t)

	// b's kernel refuses what goes to b.addr(9).
	refusedDst := netip.MustParseAddr(b.addr(9)).As4()
	b.tun().Refuse(func(pkt []byte) bool { return [4]byte(pkt[16:20]) == refusedDst })
	const refused = 5
	for range refused {
		a.tun().Inbound <- ipv4UDP(t, a.addr(2), b.addr(9), 64, false)
	}
	after := ipv4UDP(t, a.addr(2), b.addr(10), 64, false)
	a.tun().Inbound <- after
	if got := receive(t, b.tun(), 1, probe); string(got[0]) != string(after) {
		t.Fatalf("b got %x, want the packet sent after the refused ones", got[0])
	}
	waitMetrics(t, b.socket, "the refused packets counted", func(out string) bool {
		v, _ := metricValue(out, `overlayd_drops_total{reason="tun_write_error"}`)
		return v == refused
	})

	// a's kernel refuses ICMP: the net-unreachable errors for packets to a
	// subnet nobody holds are lost, and counted so.
	third := byte(1)
	for third == a.subnet.Addr().As4()[2] || third == b.subnet.Addr().As4()[2] {
		third++
	}
	nowhere := fmt.Sprintf("100.96.%d.1", third)
	// Probes sent before a knew b got ICMP errors too: count from here.
	const (
		icmpSent   = `overlayd_icmp_sent_total`
		noRoute    = `overlayd_drops_total{reason="no_route"}`
		tunRefused = `overlayd_drops_total{reason="tun_write_error"}`
	)
	base := scrapeSocket(t, a.socket)
	since := func(out, series string) float64 {
		t.Helper()
		v, ok := metricValue(out, series)
		if !ok {
			t.Fatalf("no %s in a's metrics:\n%s", series, out)
		}
		b, _ := metricValue(base, series) // a series not yet served is 0
		return v - b
	}
	a.tun().Refuse(func(pkt []byte) bool { return pkt[9] == 1 })
	for range refused {
		a.tun().Inbound <- ipv4UDP(t, a.addr(2), nowhere, 64, false)
	}
	out := waitMetrics(t, a.socket, "the refused ICMP errors counted", func(out string) bool {
		v, _ := metricValue(out, tunRefused)
		return v == refused
	})
	if v := since(out, icmpSent); v != 0 {
		t.Errorf("%v more ICMP errors counted as sent while the TUN refused every one, want 0", v)
	}
	if v := since(out, noRoute); v != refused {
		t.Errorf("no_route drops grew by %v, want %d", v, refused)
	}

	// Once the kernel takes them again, the error reaches the sender.
	a.tun().Refuse(nil)
	a.tun().Inbound <- ipv4UDP(t, a.addr(2), nowhere, 64, false)
	select {
	case icmp := <-a.tun().Outbound:
		checkICMP(t, icmp, fmt.Sprintf("100.96.%d.0", third), a.addr(2), 3, 0, 0)
	case <-time.After(10 * time.Second):
		t.Fatal("no ICMP error in 10s once the TUN accepted them")
	}
	waitMetrics(t, a.socket, "the ICMP error counted as sent", func(out string) bool {
		_, ok := metricValue(out, icmpSent)
		return ok && since(out, icmpSent) == 1
	})
}
