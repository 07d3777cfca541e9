package tunnel

// Two engines forwarding to each other in one process: the in-memory
// registry (subnettest), channel-backed TUN queues (tuntest) and an
// in-memory underlay network (underlaytest). No root, kernel or etcd: what is
// left is the engine itself, from the registry to the data path and back.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/encap/offload"
	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/subnet/subnettest"
	"github.com/overlayd/overlayd/tunnel/tun"
	"github.com/overlayd/overlayd/tunnel/tun/tuntest"
	"github.com/overlayd/overlayd/tunnel/underlay"
	"github.com/overlayd/overlayd/tunnel/underlay/underlaytest"
)

// memHost is a Host whose devices live in memory: one TUN queue and one
// underlay Conn on a shared underlaytest.Network.
type memHost struct {
	iface     ExtIface
	net       *underlaytest.Network
	listenErr error // what ListenUnderlay fails with, if not nil

	mu  sync.Mutex
	tun *tuntest.ChannelDevice
}

var _ Host = (*memHost)(nil)

func (h *memHost) ExtIface(string) (ExtIface, error) { return h.iface, nil }
func (h *memHost) IPForwarding() (bool, error)       { return true, nil }

func (h *memHost) OpenTUN(name string, queues int, _ ...tun.Option) ([]tun.Device, error) {
	if queues != 1 {
		return nil, fmt.Errorf("memHost: %d queues; it has one", queues)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tun = tuntest.NewChannelDevice(name, 0)
	return []tun.Device{h.tun}, nil
}

func (h *memHost) ConfigureTUN(string, int, netip.Prefix, netip.Prefix) error { return nil }

func (h *memHost) ListenUnderlay(_ string, _ ExtIface, laddr netip.AddrPort, workers int, _ time.Duration) ([]underlay.Conn, error) {
	if workers != 1 {
		return nil, fmt.Errorf("memHost: %d workers; it has one", workers)
	}
	if h.listenErr != nil {
		return nil, h.listenErr
	}
	c, err := h.net.Listen(laddr)
	if err != nil {
		return nil, err
	}
	return []underlay.Conn{c}, nil
}

// testEngine is one engine of a pair, running in its own goroutine.
type testEngine struct {
	host       *memHost
	subnetFile string
	socket     string       // its control socket (status, /metrics)
	subnet     netip.Prefix // the leased subnet, once ready
	cancel     context.CancelFunc
	done       chan error
}

// pairNetworkConfig is the overlay of every pair: udp backend, the test ranges.
const pairNetworkConfig = `{"Network":"100.96.0.0/16","SubnetLen":24,"Backend":{"Type":"udp","Port":8285}}`

func newPairRegistry(t testing.TB) *subnettest.Registry {
	t.Helper()
	cfg, err := subnet.ParseConfig([]byte(pairNetworkConfig))
	if err != nil {
		t.Fatal(err)
	}
	return subnettest.New(cfg)
}

// startEngine runs an engine for host n (underlay 198.18.0.n) and waits
// until it is ready. dir keeps its subnet file, so that an engine started
// again with the same dir gets its subnet back.
func startEngine(t testing.TB, reg subnet.Registry, net *underlaytest.Network, n int, dir string) *testEngine {
	t.Helper()
	return startEngineWith(t, reg, net, n, dir, nil)
}

// startEngineWith is startEngine with a Firewall.
func startEngineWith(t testing.TB, reg subnet.Registry, net *underlaytest.Network, n int, dir string, fw Firewall) *testEngine {
	t.Helper()
	e := &testEngine{
		host: &memHost{
			iface: ExtIface{Name: "ext0", Index: 2, Addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(n)}), MTU: 1500},
			net:   net,
		},
		subnetFile: filepath.Join(dir, "subnet.env"),
		socket:     filepath.Join(dir, "ctl.sock"),
		done:       make(chan error, 1),
	}
	cfg := Config{
		SubnetFile:    e.subnetFile,
		RenewMargin:   time.Hour,
		LeaseTTL:      24 * time.Hour,
		TunName:       "flannel0",
		Queues:        1,
		ReleaseOnExit: true,
		ControlSocket: e.socket,
		Version:       "test",
		Logger:        slog.New(slog.DiscardHandler),
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	old, _ := os.Stat(e.subnetFile) // an earlier run's
	go func() { e.done <- Run(ctx, cfg, Deps{Registry: reg, Host: e.host, Firewall: fw}) }()

	// Ready means the subnet file is written (anew: it is replaced whole).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(e.subnetFile); err == nil && (old == nil || !os.SameFile(old, fi)) {
			sn, err := subnet.ReadSubnetFile(e.subnetFile)
			if err != nil {
				t.Fatalf("engine %d: subnet file: %v", n, err)
			}
			e.subnet = sn
			return e
		}
		select {
		case err := <-e.done:
			t.Fatalf("engine %d stopped before it was ready: %v", n, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("engine %d not ready after 10s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop ends the engine and returns Run's error.
func (e *testEngine) stop() error {
	e.cancel()
	return <-e.done
}

// tun is the engine's TUN queue, as the kernel side sees it.
func (e *testEngine) tun() *tuntest.ChannelDevice {
	e.host.mu.Lock()
	defer e.host.mu.Unlock()
	return e.host.tun
}

// addr is a container address on this engine's bridge.
func (e *testEngine) addr(host byte) string {
	a := e.subnet.Addr().As4()
	a[3] = host
	return netip.AddrFrom4(a).String()
}

// startConnectedPair starts two engines on one registry and in-memory
// underlay, stopped when the test ends, and returns once a's packets reach
// b: each has learnt the other, so what the test sends next is not lost to
// a peer not yet known. probe is the packet that went through; a's TUN
// holds nothing else yet, though its counters may (see sendUntil).
func startConnectedPair(t testing.TB) (a, b *testEngine, probe []byte) {
	t.Helper()
	reg := newPairRegistry(t)
	mem := underlaytest.NewNetwork()
	a = startEngine(t, reg, mem, 1, t.TempDir())
	b = startEngine(t, reg, mem, 2, t.TempDir())
	t.Cleanup(func() { b.stop(); a.stop() })
	probe = ipv4UDP(t, a.addr(2), b.addr(2), 64, false)
	sendUntil(t, a.tun(), b.tun(), probe, func(p []byte) bool { return string(p) == string(probe) })
	// The probes a sent before it knew b came back as ICMP errors.
	for len(a.tun().Outbound) > 0 {
		<-a.tun().Outbound
	}
	return a, b, probe
}

// sendUntil pushes pkt into from's TUN until one packet that match accepts
// comes out of to's TUN: the first packets may go before the sender has
// learnt its peer from the registry.
func sendUntil(t testing.TB, from, to *tuntest.ChannelDevice, pkt []byte, match func([]byte) bool) []byte {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		from.Inbound <- pkt
		for {
			select {
			case got := <-to.Outbound:
				if match(got) {
					return got
				}
				continue
			case <-tick.C:
			case <-deadline:
				t.Fatal("no packet came through in 10s")
			}
			break
		}
	}
}

// receive takes n packets from d's Outbound, skipping copies of the probes
// that sendUntil may have sent more than once.
func receive(t *testing.T, d *tuntest.ChannelDevice, n int, probes ...[]byte) [][]byte {
	t.Helper()
	out := make([][]byte, 0, n)
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case p := <-d.Outbound:
			if !slices.ContainsFunc(probes, func(probe []byte) bool { return bytes.Equal(p, probe) }) {
				out = append(out, p)
			}
		case <-deadline:
			t.Fatalf("received %d of %d packets in 10s", len(out), n)
		}
	}
	return out
}

// superPacket is what a TCP sender's kernel hands a TUN with TSO: one
// IPv4/TCP packet of payload bytes, to be cut into mss-sized segments.
func superPacket(t testing.TB, src, dst string, payload, mss int) tuntest.GSOPacket {
	pkt := ipv4TCP(t, src, dst, payload)
	return tuntest.GSOPacket{Pkt: pkt, Hdr: offload.VirtioNetHdr{
		Flags: offload.VirtioNeedsCsum, GSOType: offload.GSOTCPv4, HdrLen: 40,
		GSOSize: uint16(mss), CsumStart: 20, CsumOffset: 16,
	}}
}

// checkSegments checks that segs are super's segments, in order, each a
// valid IPv4/TCP packet of at most mtu bytes carrying the next part of its
// payload.
func checkSegments(t *testing.T, super tuntest.GSOPacket, segs [][]byte, mtu int) {
	t.Helper()
	var payload []byte
	for i, s := range segs {
		if len(s) > mtu {
			t.Fatalf("segment %d: %d bytes, more than the MTU %d", i, len(s), mtu)
		}
		if _, _, err := encap.ParseIPv4(s); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		checkTransportChecksum(t, s)
		payload = append(payload, s[40:]...)
	}
	if !bytes.Equal(payload, super.Pkt[40:]) {
		t.Fatalf("segments carry %d bytes that differ from the %d sent", len(payload), len(super.Pkt)-40)
	}
}

// TestEnginePairForwards runs two engines against one in-memory registry
// and underlay: small packets and TSO super-packets both ways, a peer that
// leaves (and is answered for with ICMP) and joins again, and a shutdown
// that leaves no goroutine behind.
func TestEnginePairForwards(t *testing.T) {
	baseline := runtime.NumGoroutine()
	reg := newPairRegistry(t)
	mem := underlaytest.NewNetwork()
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startEngine(t, reg, mem, 1, dirA)
	b := startEngine(t, reg, mem, 2, dirB)
	if a.subnet == b.subnet {
		t.Fatalf("both engines leased %s", a.subnet)
	}
	const mtu = 1500 - 28 // udp backend over a 1500-byte underlay

	// The first packet each way, sent until it comes through.
	probes := [][]byte{ipv4UDP(t, a.addr(2), b.addr(2), 64, false), ipv4UDP(t, b.addr(2), a.addr(2), 64, false)}

	t.Run("SmallBothWays", func(t *testing.T) {
		for i, dir := range []struct{ from, to *testEngine }{{a, b}, {b, a}} {
			first := probes[i]
			sendUntil(t, dir.from.tun(), dir.to.tun(), first, func(p []byte) bool { return bytes.Equal(p, first) })
			var sent [][]byte
			for i := range 100 {
				p := ipv4UDP(t, dir.from.addr(2), dir.to.addr(byte(3+i%100)), 64+i, false)
				sent = append(sent, p)
				dir.from.tun().Inbound <- p
			}
			for i, got := range receive(t, dir.to.tun(), len(sent), probes...) {
				if !bytes.Equal(got, sent[i]) {
					t.Fatalf("%s -> %s: packet %d arrived as\n%x\nsent\n%x", dir.from.subnet, dir.to.subnet, i, got, sent[i])
				}
			}
		}
	})

	t.Run("SuperPacketsBothWays", func(t *testing.T) {
		const mss = mtu - 40
		for _, dir := range []struct{ from, to *testEngine }{{a, b}, {b, a}} {
			super := superPacket(t, dir.from.addr(2), dir.to.addr(2), 65535-40, mss)
			dir.from.tun().InboundGSO <- super
			segs := receive(t, dir.to.tun(), (65535-40+mss-1)/mss, probes...)
			checkSegments(t, super, segs, mtu)
		}
	})

	t.Run("PeerLeavesAndJoins", func(t *testing.T) {
		if err := b.stop(); err != nil {
			t.Fatalf("engine b: %v", err)
		}
		// Once a has seen b's lease go (--release-on-exit), a packet for
		// b's subnet is answered with "net unreachable" into a's TUN.
		toB := ipv4UDP(t, a.addr(2), b.addr(2), 64, false)
		reply := sendUntil(t, a.tun(), a.tun(), toB, func(p []byte) bool { return len(p) > 20 && p[9] == 1 })
		// From b's subnet address: a's own TUN address would be a martian.
		if src, dst, _ := encap.ParseIPv4(reply); src != b.subnet.Addr() || dst.String() != a.addr(2) {
			t.Fatalf("ICMP reply %s -> %s, want %s -> %s", src, dst, b.subnet.Addr(), a.addr(2))
		}
		if typ, code := reply[20], reply[21]; typ != 3 || code != 0 {
			t.Fatalf("ICMP type %d code %d, want 3/0 (net unreachable)", typ, code)
		}

		prev := b.subnet
		b = startEngine(t, reg, mem, 2, dirB)
		if b.subnet != prev {
			t.Fatalf("rejoined with %s, want its old subnet %s", b.subnet, prev)
		}
		back := ipv4UDP(t, a.addr(2), b.addr(2), 64, false)
		sendUntil(t, a.tun(), b.tun(), back, func(p []byte) bool { return bytes.Equal(p, back) })
	})

	for name, e := range map[string]*testEngine{"a": a, "b": b} {
		if err := e.stop(); err != nil {
			t.Errorf("engine %s: %v", name, err)
		}
	}
	if got := len(reg.Leases()); got != 0 {
		t.Errorf("%d leases left after both released theirs", got)
	}
	checkNoGoroutinesLeft(t, baseline)
}

// checkNoGoroutinesLeft waits for the goroutine count to come back to
// baseline: a stopped engine's goroutines may still be returning.
func checkNoGoroutinesLeft(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			var stacks strings.Builder
			pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			t.Fatalf("%d goroutines, %d before the engines started:\n%s", runtime.NumGoroutine(), baseline, stacks.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchOneWay measures the engine's per-packet cost one way: b.N packets
// of size bytes pushed into x's TUN and taken out of y's. The in-memory
// devices copy each packet once on the way: their cost is included.
func benchOneWay(b *testing.B, size int) {
	x, y, _ := startConnectedPair(b)
	pkt := ipv4UDP(b, x.addr(2), y.addr(2), size, false)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for range b.N {
			x.tun().Inbound <- pkt
		}
	}()
	out := y.tun().Outbound
	for range b.N {
		<-out
	}
}

func BenchmarkEnginePairSmallPackets(b *testing.B) { benchOneWay(b, 64) }
func BenchmarkEnginePairLargePackets(b *testing.B) { benchOneWay(b, 1472) }

// BenchmarkEnginePairRoundTrip measures one 64-byte request and its reply
// at a time, as TCP_RR does: x's container asks, y's answers.
func BenchmarkEnginePairRoundTrip(b *testing.B) {
	x, y, _ := startConnectedPair(b)
	request := ipv4UDP(b, x.addr(2), y.addr(2), 64, false)
	reply := ipv4UDP(b, y.addr(2), x.addr(2), 64, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // y's container answers every request
		for {
			select {
			case <-y.tun().Outbound:
				y.tun().Inbound <- reply
			case <-ctx.Done():
				return
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		x.tun().Inbound <- request
		<-x.tun().Outbound
	}
}

// TestEngineStopsWhenTUNDeleted: a TUN interface deleted under a running
// overlayd ends it with an error that says so, rather than leaving a
// daemon that reports ready and forwards nothing.
func TestEngineStopsWhenTUNDeleted(t *testing.T) {
	e := startEngine(t, newPairRegistry(t), underlaytest.NewNetwork(), 1, t.TempDir())
	e.tun().Delete()
	select {
	case err := <-e.done:
		if !errors.Is(err, tun.ErrDeleted) || !strings.Contains(err.Error(), "start it again") {
			t.Errorf("Run: %v; want tun.ErrDeleted, saying to start overlayd again", err)
		}
	case <-time.After(30 * time.Second): // a guard against a hang, not a timing
		e.cancel()
		<-e.done
		t.Fatal("the engine still runs 30 s after its TUN was deleted")
	}
}
