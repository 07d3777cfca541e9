package tunnel

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/subnet"
)

// flanneldVXLANLease is a vxlan lease as flanneld v0.28.9 wrote it into
// etcd (FLANNEL.md §3), for the VTEP of testdata/packets/vxlan_kernel_vni1.hex.
const flanneldVXLANLease = `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"a6:d7:18:cf:e6:cb"}}`

var (
	kernelVtepMAC = [6]byte{0xa6, 0xd7, 0x18, 0xcf, 0xe6, 0xcb} // the capture's sender, 198.18.0.1
	peerVtepMAC   = [6]byte{0x92, 0x9d, 0xe4, 0x12, 0x31, 0xdf} // the capture's receiver, 198.18.0.2
)

func vxlanConfig(t testing.TB, vni int) subnet.BackendConfig {
	t.Helper()
	return subnet.BackendConfig{Type: subnet.BackendVXLAN, Port: subnet.DefaultVXLANPort, VNI: vni}
}

// Our lease is byte for byte the one flanneld writes for the same VTEP.
func TestVXLANLeaseMatchesFlanneld(t *testing.T) {
	attrs := subnet.LeaseAttrs{
		PublicIP:    netip.MustParseAddr("198.18.0.1"),
		BackendType: subnet.BackendVXLAN,
		BackendData: vxlanLeaseData(1, kernelVtepMAC, false),
	}
	got, err := json.Marshal(attrs)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != flanneldVXLANLease {
		t.Errorf("lease\n got %s\nwant %s", got, flanneldVXLANLease)
	}

	b, err := newVXLANBackend(vxlanConfig(t, 1), netip.MustParseAddr("198.18.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b.LeaseData(false)), `{"VNI":1,"VtepMAC":"02:01:c6:12:00:01"}`; got != want {
		t.Errorf("BackendData %s, want %s", got, want)
	}
	// An overlayd that takes partial checksums says so behind flanneld's
	// keys, which stay as they are: flanneld reads them, and ignores it.
	withCaps := b.LeaseData(true)
	if got, want := string(withCaps), `{"VNI":1,"VtepMAC":"02:01:c6:12:00:01","PartialChecksums":true}`; got != want {
		t.Errorf("BackendData %s, want %s", got, want)
	}
	var flanneld struct { // flannel's vxlanLeaseAttrs
		VNI     uint16
		VtepMAC string
	}
	if err := json.Unmarshal(withCaps, &flanneld); err != nil || flanneld.VNI != 1 || flanneld.VtepMAC != "02:01:c6:12:00:01" {
		t.Errorf("flanneld would read %s as %+v, %v", withCaps, flanneld, err)
	}
	if b.Type() != "vxlan" {
		t.Errorf("BackendType %q", b.Type())
	}
}

// The VtepMAC depends on the public IP and VNI only: a restarted host, or
// one that switches data plane, keeps it; hosts never share one.
func TestVtepMACIsStable(t *testing.T) {
	ip := netip.MustParseAddr("198.18.0.3")
	mac := VtepMAC(ip, 1)
	if mac[0]&0x01 != 0 || mac[0]&0x02 == 0 {
		t.Errorf("%x is not a locally administered unicast address", mac)
	}
	if again := VtepMAC(netip.MustParseAddr("198.18.0.3"), 1); again != mac {
		t.Errorf("VtepMAC changed from %x to %x", mac, again)
	}
	if mapped := VtepMAC(netip.AddrFrom16(ip.As16()), 1); mapped != mac {
		t.Errorf("IPv4-mapped address gives %x, want %x", mapped, mac)
	}
	seen := map[[6]byte]netip.Addr{}
	for i := 1; i < 255; i++ {
		a := netip.AddrFrom4([4]byte{198, 18, 0, byte(i)})
		m := VtepMAC(a, 1)
		if other, dup := seen[m]; dup {
			t.Fatalf("%s and %s share VtepMAC %x", a, other, m)
		}
		seen[m] = a
	}
	if VtepMAC(ip, 2) == mac {
		t.Error("VNI 1 and 2 give the same VtepMAC")
	}

	// Two starts of the same host write the same lease.
	first, err := newVXLANBackend(vxlanConfig(t, 1), ip)
	if err != nil {
		t.Fatal(err)
	}
	second, err := newVXLANBackend(vxlanConfig(t, 1), ip)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.LeaseData(true), second.LeaseData(true)) || first.mac != mac {
		t.Errorf("restart changed the lease: %s then %s", first.LeaseData(true), second.LeaseData(true))
	}
}

func leaseFromJSON(t testing.TB, sn, value string) subnet.Lease {
	t.Helper()
	var attrs subnet.LeaseAttrs
	if err := json.Unmarshal([]byte(value), &attrs); err != nil {
		t.Fatalf("%s: %v", value, err)
	}
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: attrs}
}

func TestVXLANPeer(t *testing.T) {
	b, err := newVXLANBackend(vxlanConfig(t, 1), netip.MustParseAddr("198.18.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.Peer(leaseFromJSON(t, "100.96.1.0/24", flanneldVXLANLease))
	if err != nil {
		t.Fatalf("flanneld's vxlan lease: %v", err)
	}
	if p.Subnet != netip.MustParsePrefix("100.96.1.0/24") || p.Underlay != netip.MustParseAddrPort("198.18.0.1:8472") {
		t.Errorf("peer %s at %s", p.Subnet, p.Underlay)
	}
	if p.Encap.VNI != 1 || p.Encap.DstMAC != kernelVtepMAC || p.Encap.SrcMAC != VtepMAC(netip.MustParseAddr("198.18.0.2"), 1) {
		t.Errorf("encap params %+v", p.Encap)
	}

	// JSON keys are case-insensitive and MACs may use dashes, as in flannel;
	// a lease without VNI is taken to be in ours.
	for _, ok := range []string{
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"vni":1,"vtepmac":"A6-D7-18-CF-E6-CB"}}`,
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"a6:d7:18:cf:e6:cb"}}`,
	} {
		if p, err := b.Peer(leaseFromJSON(t, "100.96.1.0/24", ok)); err != nil || p.Encap.DstMAC != kernelVtepMAC {
			t.Errorf("%s: %v, mac %x", ok, err, p.Encap.DstMAC)
		}
	}

	other := []string{
		`{"PublicIP":"198.18.0.1","PublicIPv6":null}`, // flanneld udp
		`{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}`,
	}
	for _, l := range other {
		if _, err := b.Peer(leaseFromJSON(t, "100.96.1.0/24", l)); !errors.Is(err, errOtherBackend) {
			t.Errorf("%s: %v, want errOtherBackend", l, err)
		}
	}

	malformed := []string{
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan"}`,
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":"a6:d7:18:cf:e6:cb"}`,
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1}}`,
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"not a mac"}}`,
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":42}}`,
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}}`,
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}}`,
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"a6:d7:18:ff:fe:cf:e6:cb"}}`,
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":2,"VtepMAC":"a6:d7:18:cf:e6:cb"}}`,
		`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":-1,"VtepMAC":"a6:d7:18:cf:e6:cb"}}`,
		`{"PublicIP":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"a6:d7:18:cf:e6:cb"}}`,
	}
	for _, l := range malformed {
		_, err := b.Peer(leaseFromJSON(t, "100.96.1.0/24", l))
		if err == nil || errors.Is(err, errOtherBackend) {
			t.Errorf("%s: %v, want an error naming what is wrong", l, err)
		}
	}
}

// readHex reads an annotated hex dump from testdata: '#' starts a comment.
func readHex(t testing.TB, path string) []byte {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for _, line := range strings.Split(string(text), "\n") {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// goldenVXLANPayload is the UDP payload of the kernel's VXLAN frame, after
// outer Ethernet, IPv4 and UDP.
func goldenVXLANPayload(t testing.TB) []byte {
	return readHex(t, "../testdata/packets/vxlan_kernel_vni1.hex")[14+20+8:]
}

// vxlanWorker is a userspace vxlan worker for the host at publicIP, whose
// subnet is local, with the others' leases as peers. Its VtepMAC is mac
// when given, VtepMAC(publicIP, 1) otherwise.
func vxlanWorker(t testing.TB, publicIP, local string, mac *[6]byte, leases ...subnet.Lease) *worker {
	t.Helper()
	vb, err := newVXLANBackend(vxlanConfig(t, 1), netip.MustParseAddr(publicIP))
	if err != nil {
		t.Fatal(err)
	}
	if mac != nil {
		vb.mac = *mac
	}
	b := userspaceVXLAN{vxlanBackend: vb}
	var peers []subnet.Peer
	for _, l := range leases {
		p, err := b.Peer(l)
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, p)
	}
	w := &worker{
		hdr:     b.Header(),
		peers:   new(atomic.Pointer[subnet.Table]),
		local:   netip.MustParsePrefix(local),
		tunAddr: netip.MustParsePrefix(local).Addr(),
		mtu:     1450,
		stats:   new(Stats),
		log:     slog.New(slog.DiscardHandler),
	}
	w.peers.Store(subnet.NewTable(peers))
	return w
}

func vxlanPeerLease(sn, publicIP string, mac [6]byte) subnet.Lease {
	return subnet.Lease{
		Subnet: netip.MustParsePrefix(sn),
		Attrs: subnet.LeaseAttrs{
			PublicIP:    netip.MustParseAddr(publicIP),
			BackendType: subnet.BackendVXLAN,
			BackendData: vxlanLeaseData(1, mac, false),
		},
	}
}

// In the kernel VTEP's place, overlayd sends what the kernel sent, byte for
// byte; in its peer's place, it takes the kernel's frame.
func TestVXLANWorkerMatchesKernel(t *testing.T) {
	golden := goldenVXLANPayload(t)
	inner := golden[22:]

	sender := vxlanWorker(t, "198.18.0.1", "100.96.1.0/24", &kernelVtepMAC, vxlanPeerLease("100.96.2.0/24", "198.18.0.2", peerVtepMAC))
	tx := newTxScratch(4)
	sender.encapsulate(tx, loadTx(tx, inner), sender.peers.Load())
	if len(tx.frames) != 1 {
		t.Fatalf("%d frames, want 1 (drops %v)", len(tx.frames), tx.counts.drops)
	}
	if !bytes.Equal(tx.frames[0], golden) {
		t.Errorf("frame differs from the kernel's:\n got %x\nwant %x", tx.frames[0], golden)
	}
	if want := netip.MustParseAddrPort("198.18.0.2:8472"); tx.dsts[0] != want {
		t.Errorf("sent to %s, want %s", tx.dsts[0], want)
	}

	receiver := vxlanWorker(t, "198.18.0.2", "100.96.2.0/24", &peerVtepMAC,
		leaseFromJSON(t, "100.96.1.0/24", flanneldVXLANLease))
	rx := newRxScratch(4)
	// The kernel sends from its flow-hash port: only the address counts.
	n := loadRx(rx, []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:44568")}, golden)
	receiver.decapsulate(rx, n, receiver.peers.Load())
	if len(rx.packets) != 1 {
		t.Fatalf("kernel frame not delivered (drops %v)", rx.counts.drops)
	}
	if got := rx.packets[0][Headroom+22:]; !bytes.Equal(got, inner) {
		t.Errorf("delivered %x, want %x", got, inner)
	}
}

// Frames the kernel's VTEP would drop are dropped and counted, beside the
// engine's own checks.
func TestVXLANWorkerDropsWhatTheKernelWould(t *testing.T) {
	golden := goldenVXLANPayload(t)
	receiver := vxlanWorker(t, "198.18.0.2", "100.96.2.0/24", &peerVtepMAC,
		leaseFromJSON(t, "100.96.1.0/24", flanneldVXLANLease))
	mutate := func(f func(b []byte)) []byte {
		b := bytes.Clone(golden)
		f(b)
		return b
	}
	wrongVNI := mutate(func(b []byte) { b[6] = 2 })
	wrongMAC := mutate(func(b []byte) { b[13] ^= 0xff })
	gbpFlags := mutate(func(b []byte) { b[0] = 0x88 })
	arp := mutate(func(b []byte) { b[20], b[21] = 0x08, 0x06 })
	spoofed := mutate(func(b []byte) { b[22+14] = 3; fixIPv4Checksum(b[22:]) }) // 100.96.3.0: not the peer's subnet
	peer := netip.MustParseAddrPort("198.18.0.1:40000")
	stranger := netip.MustParseAddrPort("198.18.0.9:8472")
	rx := newRxScratch(8)
	n := loadRx(rx, []netip.AddrPort{peer, peer, peer, peer, peer, stranger, peer},
		wrongVNI, wrongMAC, gbpFlags, arp, spoofed, golden, golden[:30])
	receiver.decapsulate(rx, n, receiver.peers.Load())
	if len(rx.packets) != 0 {
		t.Fatalf("%d bad frames delivered", len(rx.packets))
	}
	checkDrops(t, rx.counts, map[DropReason]uint64{DropMalformed: 5, DropSpoofed: 1, DropUnknownPeer: 1})
}

// A peer whose header cannot be written (its VNI does not fit in 24 bits)
// gets nothing, counted as an encapsulation error.
func TestVXLANWorkerDropsWhatItCannotEncapsulate(t *testing.T) {
	a, _ := vxlanPair(t)
	p, ok := a.peers.Load().Lookup(netip.MustParseAddr("100.96.2.7"))
	if !ok {
		t.Fatal("no peer for 100.96.2.7")
	}
	bad := *p
	bad.Encap.VNI = encap.MaxVNI + 1
	a.peers.Store(subnet.NewTable([]subnet.Peer{bad}))
	tx := newTxScratch(4)
	a.encapsulate(tx, loadTx(tx, ipv4UDP(t, "100.96.1.2", "100.96.2.7", 100, false)), a.peers.Load())
	if len(tx.frames) != 0 {
		t.Fatalf("%d frames sent, want none", len(tx.frames))
	}
	checkDrops(t, tx.counts, map[DropReason]uint64{DropEncapError: 1})
}

func fixIPv4Checksum(h []byte) {
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	h[10], h[11] = byte(^sum>>8), byte(^sum)
}

// vxlanPair is two overlayd hosts' workers, each with the other as peer.
func vxlanPair(t testing.TB) (a, b *worker) {
	macA, macB := VtepMAC(netip.MustParseAddr("198.18.0.1"), 1), VtepMAC(netip.MustParseAddr("198.18.0.2"), 1)
	a = vxlanWorker(t, "198.18.0.1", "100.96.1.0/24", nil, vxlanPeerLease("100.96.2.0/24", "198.18.0.2", macB))
	b = vxlanWorker(t, "198.18.0.2", "100.96.2.0/24", nil, vxlanPeerLease("100.96.1.0/24", "198.18.0.1", macA))
	return a, b
}

// sendBatch encapsulates pkts on a and loads the frames into rx as b would
// receive them.
func sendBatch(t testing.TB, a *worker, rx *rxScratch, pkts [][]byte) int {
	t.Helper()
	tx := newTxScratch(len(pkts))
	a.encapsulate(tx, loadTx(tx, pkts...), a.peers.Load())
	if len(tx.frames) != len(pkts) {
		t.Fatalf("encapsulated %d of %d", len(tx.frames), len(pkts))
	}
	from := make([]netip.AddrPort, len(pkts))
	for i := range from {
		from[i] = netip.MustParseAddrPort("198.18.0.1:8472")
	}
	return loadRx(rx, from, tx.frames...)
}

// Two overlayd hosts understand each other, and neither direction
// allocates per batch.
func TestVXLANForwardingDoesNotAllocate(t *testing.T) {
	a, b := vxlanPair(t)
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = ipv4UDP(t, "100.96.1.2", "100.96.2.7", 64+i*20, false)
	}
	tx := newTxScratch(64)
	n := loadTx(tx, pkts...)
	ta := a.peers.Load()
	if allocs := testing.AllocsPerRun(100, func() { a.encapsulate(tx, n, ta); tx.counts.flushTx(a.stats) }); allocs != 0 {
		t.Errorf("encapsulate: %v allocs per batch", allocs)
	}
	rx := newRxScratch(64)
	m := sendBatch(t, a, rx, pkts)
	tb := b.peers.Load()
	if allocs := testing.AllocsPerRun(100, func() { b.decapsulate(rx, m, tb); rx.counts.flushRx(b.stats) }); allocs != 0 {
		t.Errorf("decapsulate: %v allocs per batch", allocs)
	}
	if len(rx.packets) != len(pkts) {
		t.Fatalf("decapsulated %d of %d (drops %v)", len(rx.packets), len(pkts), rx.counts.drops)
	}
	for i, p := range rx.packets {
		if !bytes.Equal(p[Headroom+22:], pkts[i]) {
			t.Fatalf("packet %d changed on the way", i)
		}
	}
}

func BenchmarkVXLANEncapsulate(b *testing.B) {
	a, _ := vxlanPair(b)
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = ipv4UDP(b, "100.96.1.2", "100.96.2.7", 1400, false)
	}
	benchEncapsulate(b, a, pkts, false)
}

func BenchmarkVXLANDecapsulate(b *testing.B) {
	a, w := vxlanPair(b)
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = ipv4UDP(b, "100.96.1.2", "100.96.2.7", 1400, false)
	}
	rx := newRxScratch(64)
	benchDecapsulate(b, w, rx, sendBatch(b, a, rx, pkts))
}

func TestConfigValidateDataplane(t *testing.T) {
	for _, dp := range []string{"", DataplaneUserspace, DataplaneKernel} {
		c := validConfig()
		c.VXLANDataplane = dp
		if err := c.Validate(); err != nil {
			t.Errorf("--vxlan-dataplane %q: %v", dp, err)
		}
	}
	c := validConfig()
	c.VXLANDataplane = "ebpf"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--vxlan-dataplane") {
		t.Errorf("--vxlan-dataplane ebpf: %v, want an error naming the flag", err)
	}
}
