package tunnel

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/subnet"
)

var (
	localSubnet = netip.MustParsePrefix("100.96.1.0/24")
	peerA       = subnet.Peer{Subnet: netip.MustParsePrefix("100.96.2.0/24"), Underlay: netip.MustParseAddrPort("198.18.0.2:8285")}
	peerB       = subnet.Peer{Subnet: netip.MustParsePrefix("100.96.3.0/24"), Underlay: netip.MustParseAddrPort("198.18.0.3:8285")}
)

func testWorker() *worker {
	w := &worker{
		hdr:     encap.FlannelUDP,
		peers:   new(atomic.Pointer[subnet.Table]),
		local:   localSubnet,
		tunAddr: localSubnet.Addr(),
		mtu:     1472,
		stats:   new(Stats),
		log:     slog.New(slog.DiscardHandler),
	}
	w.peers.Store(subnet.NewTable([]subnet.Peer{peerA, peerB}))
	return w
}

// ipv4UDP builds a valid IPv4/UDP packet of exactly size bytes with gopacket.
func ipv4UDP(t testing.TB, src, dst string, size int, df bool) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: netip.MustParseAddr(src).AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice()}
	if df {
		ip.Flags = layers.IPv4DontFragment
	}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 5000}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(make([]byte, size-28))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ipv4TCP builds a valid IPv4/TCP segment of payload bytes with gopacket.
func ipv4TCP(t testing.TB, src, dst string, payload int) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
		SrcIP: netip.MustParseAddr(src).AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice()}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 5201, Seq: 7, Ack: 9, ACK: true, Window: 502}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	if err := gopacket.SerializeLayers(buf, opts, ip, tcp, gopacket.Payload(data)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// partialOf returns a valid IPv4 TCP or UDP packet with its checksum left
// partial, as a TUN with offloads hands it over: the pseudo-header sum.
func partialOf(pkt []byte) []byte {
	p := append([]byte(nil), pkt...)
	src, dst, _ := encap.ParseIPv4(p)
	at := 20 + 16 // TCP
	if p[9] == 17 {
		at = 20 + 6
	}
	binary.BigEndian.PutUint16(p[at:], uint16(encap.PseudoHeaderSum(src, dst, p[9], len(p)-20)))
	return p
}

func loadTx(tx *txScratch, pkts ...[]byte) int {
	for i, p := range pkts {
		tx.batch.Sizes[i] = copy(tx.batch.Bufs[i][Headroom:], p)
	}
	return len(pkts)
}

func TestEncapsulate(t *testing.T) {
	w := testWorker()
	tx := newTxScratch(8)
	toA := ipv4UDP(t, "100.96.1.2", "100.96.2.7", 100, false)
	toB := ipv4UDP(t, "100.96.1.2", "100.96.3.9", 1472, true)
	nowhere := ipv4UDP(t, "100.96.1.2", "100.96.77.1", 60, false)
	tooBigDF := ipv4UDP(t, "100.96.1.2", "100.96.2.7", 1473, true)
	tooBig := ipv4UDP(t, "100.96.1.2", "100.96.2.7", 1473, false)
	ipv6 := make([]byte, 60)
	ipv6[0] = 0x60

	n := loadTx(tx, toA, ipv6, toB, nowhere, tooBigDF, tooBig)
	w.encapsulate(tx, n, w.peers.Load())

	if len(tx.frames) != 2 {
		t.Fatalf("%d frames, want 2", len(tx.frames))
	}
	if string(tx.frames[0]) != string(toA) || tx.dsts[0] != peerA.Underlay {
		t.Errorf("frame 0 to %s is not the packet for peer A", tx.dsts[0])
	}
	if string(tx.frames[1]) != string(toB) || tx.dsts[1] != peerB.Underlay {
		t.Errorf("frame 1 to %s is not the packet for peer B", tx.dsts[1])
	}
	// ICMP net unreachable for the unrouted packet, frag needed for the DF
	// one; nothing for the non-DF oversize packet.
	if len(tx.replies) != 2 {
		t.Fatalf("%d ICMP replies, want 2", len(tx.replies))
	}
	// From the subnet of the destination, not from the TUN's own address
	// (a martian source to the kernel).
	checkICMP(t, tx.replies[0][Headroom:], "100.96.77.0", "100.96.1.2", 3, 0, 0)
	checkICMP(t, tx.replies[1][Headroom:], "100.96.2.0", "100.96.1.2", 3, 4, 1472)

	checkDrops(t, tx.counts, map[DropReason]uint64{DropNotIPv4: 1, DropNoRoute: 1, DropTooBig: 2})
	if tx.counts.packets() != 2 || tx.counts.bytes() != uint64(len(toA)+len(toB)) {
		t.Errorf("counted %d packets %d bytes", tx.counts.packets(), tx.counts.bytes())
	}
	tx.counts.flushTx(w.stats)
	if w.stats.TxPackets.Load() != 2 || w.stats.Drops[DropTooBig].Load() != 2 {
		t.Errorf("stats not flushed: %+v", w.stats.Snapshot())
	}
}

// TestEncapsulatePartialChecksums: a checksum the TUN left partial goes
// out so to a peer that takes it so, and complete, as gopacket computes
// it, to the others; a complete one goes out as it is.
func TestEncapsulatePartialChecksums(t *testing.T) {
	w := testWorker()
	capable, legacy := peerA, peerB
	capable.PartialChecksums = true
	w.peers.Store(subnet.NewTable([]subnet.Peer{capable, legacy}))
	toCapable, toLegacy := "100.96.2.7", "100.96.3.9"
	tcp := func(dst string) []byte { return ipv4TCP(t, "100.96.1.2", dst, 1400) }
	udp := func(dst string) []byte { return ipv4UDP(t, "100.96.1.2", dst, 333, false) }

	for _, tt := range []struct {
		name    string
		pkt     []byte // complete, as gopacket built it
		partial bool   // handed over partial
		to      subnet.Peer
		want    string // "partial" or "complete"
	}{
		{"tcp partial to capable", tcp(toCapable), true, capable, "partial"},
		{"tcp partial to legacy", tcp(toLegacy), true, legacy, "complete"},
		{"udp partial to capable", udp(toCapable), true, capable, "partial"},
		{"udp partial to legacy", udp(toLegacy), true, legacy, "complete"},
		{"tcp complete to capable", tcp(toCapable), false, capable, "complete"},
		{"tcp complete to legacy", tcp(toLegacy), false, legacy, "complete"},
	} {
		tx := newTxScratch(4)
		in := tt.pkt
		if tt.partial {
			in = partialOf(tt.pkt)
		}
		n := loadTx(tx, in)
		tx.partial[0] = tt.partial
		w.encapsulate(tx, n, w.peers.Load())
		if len(tx.frames) != 1 || tx.dsts[0] != tt.to.Underlay {
			t.Fatalf("%s: %d frames to %v", tt.name, len(tx.frames), tx.dsts)
		}
		want := tt.pkt
		if tt.want == "partial" {
			want = partialOf(tt.pkt)
		}
		if got := tx.frames[0]; string(got) != string(want) {
			t.Errorf("%s: sent\n%x\nwant\n%x", tt.name, got[:40], want[:40])
		}
		if tt.want == "complete" {
			checkTransportChecksum(t, tx.frames[0])
		}
	}
}

// A packet the TUN marked partial whose checksum cannot be completed (it
// has no TCP or UDP header) is dropped as a checksum error, not as
// something that is not IPv4.
func TestEncapsulateDropsUncompletableChecksum(t *testing.T) {
	w := testWorker()
	tx := newTxScratch(4)
	pkt := ipv4UDP(t, "100.96.1.2", "100.96.3.9", 100, false)
	pkt[9] = 1 // ICMP: no transport checksum to complete
	n := loadTx(tx, pkt)
	tx.partial[0] = true
	w.encapsulate(tx, n, w.peers.Load())
	if len(tx.frames) != 0 {
		t.Fatalf("%d frames sent, want none", len(tx.frames))
	}
	checkDrops(t, tx.counts, map[DropReason]uint64{DropChecksumError: 1})
}

// checkDrops compares a batch's drops with want, reason by reason.
func checkDrops(t *testing.T, got batchStats, want map[DropReason]uint64) {
	t.Helper()
	for r := DropReason(0); r < numDropReasons; r++ {
		if got.drops[r] != want[r] {
			t.Errorf("drops[%s] = %d, want %d", r, got.drops[r], want[r])
		}
	}
}

// checkTransportChecksum has gopacket decode pkt and serialize it again,
// computing its checksums afresh: it must come out as it went in.
func checkTransportChecksum(t *testing.T, pkt []byte) {
	t.Helper()
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := p.NetworkLayer().(*layers.IPv4)
	l4, ok := p.TransportLayer().(interface {
		gopacket.SerializableLayer
		SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
	})
	if ip == nil || !ok {
		t.Fatalf("no IPv4 and TCP or UDP layers in %x", pkt[:min(len(pkt), 40)])
	}
	l4.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, l4, gopacket.Payload(p.TransportLayer().LayerPayload())); err != nil {
		t.Fatal(err)
	}
	if string(buf.Bytes()) != string(pkt) {
		t.Errorf("gopacket computes other checksums:\n%x\nsent\n%x", buf.Bytes()[:40], pkt[:40])
	}
}

// TestICMPSource: never the TUN's own address, which the kernel drops as a
// martian source.
func TestICMPSource(t *testing.T) {
	w := testWorker()
	for dst, want := range map[string]string{
		"100.96.77.1": "100.96.77.0", // no peer: that subnet answers
		"100.96.2.7":  "100.96.2.0",  // too big for peer A
		"100.96.1.9":  "100.96.1.9",  // our own subnet, in the TUN: not 100.96.1.0
	} {
		if got := w.icmpSource(netip.MustParseAddr(dst)); got.String() != want || got == w.tunAddr {
			t.Errorf("icmpSource(%s) = %s, want %s", dst, got, want)
		}
	}
}

// checkICMP decodes an ICMP error written back into the TUN.
func checkICMP(t *testing.T, pkt []byte, from, to string, typ, code uint8, mtu int) {
	t.Helper()
	src, dst, err := encap.ParseIPv4(pkt)
	if err != nil {
		t.Fatalf("ICMP reply is not valid IPv4: %v", err)
	}
	if src != netip.MustParseAddr(from) || dst != netip.MustParseAddr(to) {
		t.Errorf("ICMP reply %s -> %s, want %s -> %s", src, dst, from, to)
	}
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok {
		t.Fatal("no ICMP layer")
	}
	if icmp.TypeCode.Type() != typ || icmp.TypeCode.Code() != code {
		t.Errorf("ICMP %v, want type %d code %d", icmp.TypeCode, typ, code)
	}
	if mtu != 0 && int(icmp.Seq) != mtu {
		t.Errorf("next-hop MTU %d, want %d", icmp.Seq, mtu)
	}
}

func loadRx(rx *rxScratch, from []netip.AddrPort, dgrams ...[]byte) int {
	for i, d := range dgrams {
		rx.batch.Sizes[i] = copy(rx.views[i], d)
		rx.batch.Addrs[i] = from[i]
	}
	return len(dgrams)
}

func TestDecapsulateChecksEverySource(t *testing.T) {
	w := testWorker()
	rx := newRxScratch(8)
	stranger := netip.MustParseAddrPort("198.18.0.99:8285")
	good := ipv4UDP(t, "100.96.2.7", "100.96.1.2", 200, false)
	spoofed := ipv4UDP(t, "100.96.3.7", "100.96.1.2", 200, false) // peer B's subnet, sent by A
	notLocal := ipv4UDP(t, "100.96.2.7", "100.96.3.2", 200, false)
	long := append(append([]byte{}, good...), 0, 0) // lengths disagree
	// good from B right after good from A: decapsulate looks a sender up
	// once per run of datagrams from it, and this one is B's.
	from := []netip.AddrPort{peerA.Underlay, stranger, peerA.Underlay, peerA.Underlay, peerA.Underlay, peerA.Underlay, peerB.Underlay}
	n := loadRx(rx, from, good, good, spoofed, notLocal, long, good[:19], good)

	w.decapsulate(rx, n, w.peers.Load())

	if len(rx.packets) != 1 {
		t.Fatalf("%d packets for the TUN, want 1", len(rx.packets))
	}
	if got := rx.packets[0][Headroom:]; string(got) != string(good) {
		t.Errorf("delivered packet differs from the one sent")
	}
	checkDrops(t, rx.counts, map[DropReason]uint64{DropUnknownPeer: 1, DropSpoofed: 2, DropNotLocal: 1, DropMalformed: 2})
}

// TestDecapsulateSuperFrames: a TCP super-frame from a kernel VTEP (longer
// than the TUN MTU) goes to the TUN, which cuts it; so does an oversize
// packet without DF, for the kernel to fragment; an oversize one with DF
// that is not TCP cannot be cut, and is counted.
func TestDecapsulateSuperFrames(t *testing.T) {
	w := testWorker()
	rx := newRxScratch(8)
	super := partialOf(ipv4TCP(t, "100.96.2.7", "100.96.1.2", 46*1420))
	udpDF := ipv4UDP(t, "100.96.2.7", "100.96.1.2", 6000, true)
	udp := ipv4UDP(t, "100.96.2.7", "100.96.1.2", 6000, false)
	from := []netip.AddrPort{peerA.Underlay, peerA.Underlay, peerA.Underlay}
	n := loadRx(rx, from, super, udpDF, udp)

	w.decapsulate(rx, n, w.peers.Load())

	if len(rx.packets) != 2 || string(rx.packets[0][Headroom:]) != string(super) || string(rx.packets[1][Headroom:]) != string(udp) {
		t.Fatalf("%d packets for the TUN, want the TCP super-frame and the UDP packet without DF", len(rx.packets))
	}
	checkDrops(t, rx.counts, map[DropReason]uint64{DropOversize: 1})
	if a := testing.AllocsPerRun(100, func() { w.decapsulate(rx, n, w.peers.Load()) }); a != 0 {
		t.Errorf("decapsulate: %v allocs per batch of super-frames", a)
	}
}

// The per-packet work of both directions allocates nothing.
func TestForwardingDoesNotAllocate(t *testing.T) {
	w := testWorker()
	tx := newTxScratch(64)
	rx := newRxScratch(64)
	pkts := make([][]byte, 64)
	from := make([]netip.AddrPort, 64)
	for i := range pkts {
		pkts[i] = ipv4UDP(t, "100.96.1.2", "100.96.2.7", 64+i*20, false)
		from[i] = peerA.Underlay
	}
	table := w.peers.Load()
	n := loadTx(tx, pkts...)
	for i := range n {
		tx.partial[i] = i%2 == 0 // completed for peer A, which does not take them so
	}
	if a := testing.AllocsPerRun(100, func() { w.encapsulate(tx, n, table); tx.counts.flushTx(w.stats) }); a != 0 {
		t.Errorf("encapsulate: %v allocs per batch", a)
	}
	for i := range pkts {
		pkts[i] = ipv4UDP(t, "100.96.2.7", "100.96.1.2", 64+i*20, false)
	}
	m := loadRx(rx, from, pkts...)
	if a := testing.AllocsPerRun(100, func() { w.decapsulate(rx, m, table); rx.counts.flushRx(w.stats) }); a != 0 {
		t.Errorf("decapsulate: %v allocs per batch", a)
	}
	if len(rx.packets) != 64 {
		t.Fatalf("decapsulated %d of 64", len(rx.packets))
	}
}

// benchEncapsulate times w.encapsulate over a batch of pkts; partial
// marks every checksum as left partial by the TUN.
func benchEncapsulate(b *testing.B, w *worker, pkts [][]byte, partial bool) {
	tx := newTxScratch(len(pkts))
	n := loadTx(tx, pkts...)
	table := w.peers.Load()
	b.ReportAllocs()
	b.SetBytes(int64(len(pkts) * len(pkts[0])))
	for b.Loop() {
		for i := range n {
			tx.partial[i] = partial
		}
		w.encapsulate(tx, n, table)
		tx.counts.flushTx(w.stats)
	}
}

// benchDecapsulate times w.decapsulate over n datagrams already in rx.
func benchDecapsulate(b *testing.B, w *worker, rx *rxScratch, n int) {
	table := w.peers.Load()
	b.ReportAllocs()
	b.SetBytes(int64(n * 1400))
	for b.Loop() {
		w.decapsulate(rx, n, table)
		rx.counts.flushRx(w.stats)
	}
}

func BenchmarkEncapsulate(b *testing.B) {
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = ipv4UDP(b, "100.96.1.2", "100.96.2.7", 1400, false)
	}
	benchEncapsulate(b, testWorker(), pkts, false)
}

// BenchmarkEncapsulateCompleting is BenchmarkEncapsulate with checksums
// left partial by the TUN, for a peer that needs them complete: the cost
// of a legacy peer.
func BenchmarkEncapsulateCompleting(b *testing.B) {
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = partialOf(ipv4TCP(b, "100.96.1.2", "100.96.2.7", 1400-40))
	}
	benchEncapsulate(b, testWorker(), pkts, true)
}

func BenchmarkDecapsulate(b *testing.B) {
	rx := newRxScratch(64)
	pkts := make([][]byte, 64)
	from := make([]netip.AddrPort, 64)
	for i := range pkts {
		pkts[i] = ipv4UDP(b, "100.96.2.7", "100.96.1.2", 1400, false)
		from[i] = peerA.Underlay
	}
	benchDecapsulate(b, testWorker(), rx, loadRx(rx, from, pkts...))
}

// A routine asleep in a system call keeps its thread; each needs a P of its
// own on top of the runtime's default, or waking ones queue for Ps.
func TestReserveProcsAddsAPPerSleeper(t *testing.T) {
	t.Setenv("GOMAXPROCS", "") // Setenv forbids t.Parallel; unset below
	os.Unsetenv("GOMAXPROCS")
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	base := baseProcs()
	if got, want := reserveProcs(4), max(prev, base+4); got != want {
		t.Errorf("reserveProcs(4) = %d, want %d (base %d + 4 sleepers, or more if already set)", got, want, base)
	}
	if got, again := runtime.GOMAXPROCS(0), reserveProcs(4); again != got {
		t.Errorf("second reserveProcs(4) moved GOMAXPROCS from %d to %d: want it idempotent", got, again)
	}
}

// The runtime ignores a GOMAXPROCS that is not a positive number, and so
// does reserveProcs.
func TestReserveProcsIgnoresAnInvalidGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "all")
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	if got, want := reserveProcs(4), max(prev, baseProcs()+4); got != want {
		t.Errorf("with GOMAXPROCS=all reserveProcs(4) = %d, want %d", got, want)
	}
}

func TestReserveProcsLeavesTheOperatorsChoice(t *testing.T) {
	t.Setenv("GOMAXPROCS", "1")
	before := runtime.GOMAXPROCS(0)
	if got := reserveProcs(8); got != before {
		t.Errorf("with GOMAXPROCS in the environment reserveProcs changed it from %d to %d", before, got)
	}
}
