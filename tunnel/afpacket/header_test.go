package afpacket

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"unsafe"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// sent is what the wire would carry for one WriteBatch datagram: the
// headers of write, minus the virtio_net_hdr, then the payload.
func sent(h *header, dst netip.AddrPort, payload []byte, id uint16) (vnet, frame []byte) {
	hdr := make([]byte, txHeaderLen)
	h.write(hdr, peerMAC, dst, payload, id)
	return hdr[:vnetLen], append(hdr[vnetLen:], payload...)
}

// TestHeaderWrite decodes frames built by write with gopacket and checks
// every field, then has gopacket rebuild them with its own checksums: the
// bytes must be identical.
func TestHeaderWrite(t *testing.T) {
	t.Parallel()
	h := newHeader(testMAC, testLocal)
	for _, n := range []int{0, 1, 2, 63, 64, 1421, 1472} {
		payload := payloadOf(n)
		vnet, frame := sent(h, testPeer, payload, uint16(1000+n))
		if !bytes.Equal(vnet, make([]byte, vnetLen)) {
			t.Fatalf("%d bytes: virtio_net_hdr %x, want zeros (no offloads)", n, vnet)
		}
		pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		if err := pkt.ErrorLayer(); err != nil {
			t.Fatalf("%d bytes: gopacket cannot decode: %v", n, err.Error())
		}
		eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		udp := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		switch {
		case !bytes.Equal(eth.SrcMAC, testMAC[:]) || !bytes.Equal(eth.DstMAC, peerMAC[:]):
			t.Errorf("%d bytes: Ethernet %v > %v", n, eth.SrcMAC, eth.DstMAC)
		case ip.Version != 4 || ip.IHL != 5 || ip.TTL != 64 || ip.Flags != layers.IPv4DontFragment ||
			ip.Id != uint16(1000+n) || int(ip.Length) != 28+n || ip.Protocol != layers.IPProtocolUDP:
			t.Errorf("%d bytes: IPv4 header %+v", n, ip)
		case !ip.SrcIP.Equal(testLocal.Addr().AsSlice()) || !ip.DstIP.Equal(testPeer.Addr().AsSlice()):
			t.Errorf("%d bytes: IPv4 %v > %v", n, ip.SrcIP, ip.DstIP)
		case int(udp.SrcPort) != int(testLocal.Port()) || int(udp.DstPort) != int(testPeer.Port()) || int(udp.Length) != 8+n:
			t.Errorf("%d bytes: UDP %+v", n, udp)
		case !bytes.Equal(udp.Payload, payload):
			t.Errorf("%d bytes: payload differs", n)
		}

		// gopacket's own checksums over the same fields.
		ip2, udp2 := *ip, *udp
		udp2.SetNetworkLayerForChecksum(&ip2)
		buf := gopacket.NewSerializeBuffer()
		err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true},
			eth, &ip2, &udp2, gopacket.Payload(payload))
		if err != nil {
			t.Fatal(err)
		}
		// (gopacket pads short frames to Ethernet's 60 bytes.)
		if !bytes.Equal(buf.Bytes()[:len(frame)], frame) {
			t.Errorf("%d bytes: checksums differ from gopacket's: IP %#04x vs %#04x, UDP %#04x vs %#04x", n,
				binary.BigEndian.Uint16(frame[ethLen+10:]), binary.BigEndian.Uint16(buf.Bytes()[ethLen+10:]),
				binary.BigEndian.Uint16(frame[ethLen+ipLen+6:]), binary.BigEndian.Uint16(buf.Bytes()[ethLen+ipLen+6:]))
		}
	}
}

// A UDP checksum that comes out as 0 is sent as 0xffff: 0 means none.
func TestHeaderWriteZeroChecksum(t *testing.T) {
	t.Parallel()
	h := newHeader(testMAC, testLocal)
	_, frame := sent(h, testPeer, []byte{0, 0}, 1)
	udp := frame[ethLen+ipLen:]
	sum := binary.BigEndian.Uint16(udp[6:])
	// Choose the payload that makes the checksum field exactly 0, then
	// check it is written as 0xffff.
	// Adding the field's value to the sum makes it 0xffff, whose
	// complement is 0.
	binary.BigEndian.PutUint16(frame[ethLen+ipLen+8:], sum)
	payload := slices.Clone(frame[ethLen+ipLen+8:])
	_, frame = sent(h, testPeer, payload, 1)
	if got := binary.BigEndian.Uint16(frame[ethLen+ipLen+6:]); got != 0xffff {
		t.Fatalf("checksum field %#04x, want 0xffff", got)
	}
	if _, why := parse(make([]byte, vnetLen), frame, len(frame), 0, testPeer); why != delivered {
		t.Fatalf("a 0xffff checksum does not verify: %v", why)
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	h := newHeader(testMAC, testPeer) // from the peer, to testLocal
	zeros := make([]byte, vnetLen)
	good := func(n int) []byte { _, f := sent(h, testLocal, payloadOf(n), 9); return f }

	gso := slices.Clone(zeros)
	gso[vnetGSOType] = vnetGSOUDPL4
	binary.LittleEndian.PutUint16(gso[vnetGSOSize:], 1000)
	gsoZero := slices.Clone(gso)
	binary.LittleEndian.PutUint16(gsoZero[vnetGSOSize:], 0)
	// A kernel VTEP's super-frame, as captured: TCPv4 GSO of the inner
	// packet, checksum to do at the inner TCP header.
	tcpGSO := slices.Clone(zeros)
	tcpGSO[vnetFlags] = vnetNeedsCsum
	tcpGSO[vnetGSOType] = vnetGSOTCPv4
	binary.LittleEndian.PutUint16(tcpGSO[vnetHdrLen:], 116)
	binary.LittleEndian.PutUint16(tcpGSO[vnetGSOSize:], 1398)
	binary.LittleEndian.PutUint16(tcpGSO[vnetCsumStart:], 84)
	binary.LittleEndian.PutUint16(tcpGSO[vnetCsumOffset:], 16)
	tcp6ECN := slices.Clone(tcpGSO)
	tcp6ECN[vnetGSOType] = vnetGSOTCPv6 | vnetGSOECN
	ufo := slices.Clone(zeros)
	ufo[vnetGSOType] = 3 // VIRTIO_NET_HDR_GSO_UDP

	mutate := func(f func(b []byte)) []byte { b := good(100); f(b); return b }
	ip := func(b []byte) []byte { return b[ethLen:] }
	udp := func(b []byte) []byte { return b[ethLen+ipLen:] }
	padded := append(good(4), make([]byte, 60-(ethLen+ipLen+udpLen+4))...) // Ethernet minimum
	opts := udpFrame(testPeer, testLocal, payloadOf(30))
	opts.options = true
	noSum := mutate(func(b []byte) { binary.BigEndian.PutUint16(udp(b)[6:], 0) })
	badSum := mutate(func(b []byte) { udp(b)[6] ^= 1 })
	longIP := mutate(func(b []byte) { // UDP says 100 bytes less than IP carries: trimmed
		binary.BigEndian.PutUint16(udp(b)[4:], udpLen)
		binary.BigEndian.PutUint16(udp(b)[6:], 0)
	})

	for _, c := range []struct {
		name    string
		vnet    []byte
		frame   []byte
		wireLen int // 0: len(frame)
		status  uint32
		want    dropReason
		payload int // length delivered
		segment int
	}{
		{"datagram", zeros, good(1400), 0, 0, delivered, 1400, 0},
		{"empty datagram", zeros, good(0), 0, 0, delivered, 0, 0},
		{"Ethernet padding ignored", zeros, padded, 0, 0, delivered, 4, 0},
		{"IP options skipped", zeros, opts.build(t), 0, 0, delivered, 30, 0},
		{"no UDP checksum", zeros, noSum, 0, 0, delivered, 100, 0},
		{"bad UDP checksum", zeros, badSum, 0, 0, dropChecksum, 0, 0},
		{"bad UDP checksum the driver vouched for", zeros, badSum, 0, tpStatusCsumValid, delivered, 100, 0},
		{"checksum left to offload", zeros, badSum, 0, tpStatusCsumNotReady, delivered, 100, 0},
		{"IP payload longer than UDP", zeros, longIP, 0, 0, delivered, 0, 0},
		{"GSO super-datagram", gso, good(2500), 0, tpStatusCsumNotReady, delivered, 2500, 1000},
		{"GSO of size 0", gsoZero, good(2500), 0, 0, dropMalformed, 0, 0},
		{"kernel VTEP super-frame", tcpGSO, good(60000), 0, tpStatusCsumNotReady, delivered, 60000, 0},
		{"TCPv6 GSO with ECN", tcp6ECN, good(3000), 0, tpStatusCsumNotReady, delivered, 3000, 0},
		{"UFO", ufo, good(3000), 0, tpStatusCsumNotReady, dropMalformed, 0, 0},
		{"no virtio_net_hdr", nil, good(100), 0, 0, dropMalformed, 0, 0},
		{"truncated by the ring", zeros, good(100), 200, 0, dropTruncated, 0, 0},
		{"shorter than the headers", zeros, good(100)[:ethLen+ipLen+udpLen-1], 0, 0, dropMalformed, 0, 0},
		{"not IPv4", zeros, mutate(func(b []byte) { b[12] = 0x86; b[13] = 0xdd }), 0, 0, dropMalformed, 0, 0},
		{"IP version 6", zeros, mutate(func(b []byte) { ip(b)[0] = 0x65 }), 0, 0, dropMalformed, 0, 0},
		{"IHL below 5", zeros, mutate(func(b []byte) { ip(b)[0] = 0x44 }), 0, 0, dropMalformed, 0, 0},
		{"IP length past frame", zeros, mutate(func(b []byte) { binary.BigEndian.PutUint16(ip(b)[2:], 1000) }), 0, 0, dropMalformed, 0, 0},
		{"IP length below headers", zeros, mutate(func(b []byte) { binary.BigEndian.PutUint16(ip(b)[2:], 27) }), 0, 0, dropMalformed, 0, 0},
		{"bad IP checksum", zeros, mutate(func(b []byte) { ip(b)[8]-- }), 0, 0, dropChecksum, 0, 0},
		{"fragment", zeros, mutate(func(b []byte) { ip(b)[6] |= 0x20 }), 0, 0, dropNotOurs, 0, 0},
		{"other address", zeros, good2(t, netip.MustParseAddrPort("198.18.0.9:8285")), 0, 0, dropNotOurs, 0, 0},
		{"other port", zeros, good2(t, netip.MustParseAddrPort("198.18.0.1:8472")), 0, 0, dropNotOurs, 0, 0},
		{"UDP length past IP", zeros, mutate(func(b []byte) { binary.BigEndian.PutUint16(udp(b)[4:], 200) }), 0, 0, dropMalformed, 0, 0},
		{"UDP length below header", zeros, mutate(func(b []byte) { binary.BigEndian.PutUint16(udp(b)[4:], 7) }), 0, 0, dropMalformed, 0, 0},
	} {
		wire := c.wireLen
		if wire == 0 {
			wire = len(c.frame)
		}
		d, why := parse(c.vnet, c.frame, wire, c.status, testLocal)
		if why != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, why, c.want)
			continue
		}
		if why != delivered {
			continue
		}
		if len(d.payload) != c.payload || d.segment != c.segment || d.src != testPeer {
			t.Errorf("%s: %d bytes from %v in segments of %d, want %d from %v in %d", c.name, len(d.payload), d.src, d.segment, c.payload, testPeer, c.segment)
		}
		if c.payload > 0 && !bytes.Equal(d.payload, payloadOf(c.payload)) {
			t.Errorf("%s: payload differs", c.name)
		}
	}
}

// good2 is a well-formed frame from testPeer to dst.
func good2(t *testing.T, dst netip.AddrPort) []byte {
	return udpFrame(testPeer, dst, payloadOf(50)).build(t)
}

func TestHeaderAndParseAllocs(t *testing.T) {
	h := newHeader(testMAC, testPeer)
	payload := payloadOf(1400)
	hdr := make([]byte, txHeaderLen)
	frame := make([]byte, ethLen+ipLen+udpLen+len(payload))
	allocs := testing.AllocsPerRun(1000, func() {
		h.write(hdr, peerMAC, testLocal, payload, 1)
		copy(frame, hdr[vnetLen:])
		copy(frame[ethLen+ipLen+udpLen:], payload)
		if _, why := parse(hdr[:vnetLen], frame, len(frame), 0, testLocal); why != delivered {
			t.Fatal(why)
		}
	})
	if allocs != 0 {
		t.Errorf("write+parse allocate %v times", allocs)
	}
}

func BenchmarkHeaderWrite(b *testing.B) {
	h := newHeader(testMAC, testLocal)
	payload := payloadOf(1400)
	hdr := make([]byte, txHeaderLen)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		h.write(hdr, peerMAC, testPeer, payload, 1)
	}
}

func BenchmarkParse(b *testing.B) {
	h := newHeader(testMAC, testPeer)
	vnet, frame := sent(h, testLocal, payloadOf(1400), 1)
	for _, c := range []struct {
		name   string
		status uint32
	}{{"verify", 0}, {"vouched", tpStatusCsumValid}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(1400)
			for b.Loop() {
				parse(vnet, frame, len(frame), c.status, testLocal)
			}
		})
	}
}

// FuzzParse: arbitrary frames never panic, and what is delivered lies
// inside the frame.
func FuzzParse(f *testing.F) {
	h := newHeader(testMAC, testPeer)
	vnet, frame := sent(h, testLocal, payloadOf(64), 1)
	f.Add(vnet, frame, uint32(0))
	f.Add(vnet, frame[:40], uint32(tpStatusCsumValid))
	f.Fuzz(func(t *testing.T, vnet, frame []byte, status uint32) {
		d, why := parse(vnet, frame, len(frame), status, testLocal)
		if why != delivered {
			return
		}
		lo, hi := uintptr(unsafe.Pointer(unsafe.SliceData(frame))), uintptr(unsafe.Pointer(unsafe.SliceData(frame)))+uintptr(len(frame))
		p := uintptr(unsafe.Pointer(unsafe.SliceData(d.payload)))
		if len(d.payload) > 0 && (p < lo || p+uintptr(len(d.payload)) > hi) {
			t.Fatal("payload outside the frame")
		}
		if d.segment < 0 || !d.src.IsValid() {
			t.Fatalf("delivered %+v", d)
		}
	})
}

// TestHeaderWriteGSO checks a super-datagram's headers as the kernel will
// use them: lengths of the whole, a virtio_net_hdr asking for UDP GSO and
// the checksum, and a checksum field that, completed over the UDP header
// and payload as the kernel completes it, verifies. parse then cuts the
// super-datagram up as the receiving end of a veth sees it.
func TestHeaderWriteGSO(t *testing.T) {
	t.Parallel()
	h := newHeader(testMAC, testPeer)
	bufs := datagrams(5, func(i int) int { return map[bool]int{true: 300, false: 1200}[i == 4] })
	var payload []byte
	for _, b := range bufs {
		payload = append(payload, b...)
	}
	hdr := make([]byte, txHeaderLen)
	h.writeGSO(hdr, peerMAC, testLocal, len(payload), 1200, 77)
	v := hdr[:vnetLen]
	if v[vnetFlags] != vnetNeedsCsum || v[vnetGSOType] != vnetGSOUDPL4 ||
		binary.LittleEndian.Uint16(v[vnetGSOSize:]) != 1200 || binary.LittleEndian.Uint16(v[vnetHdrLen:]) != 42 ||
		binary.LittleEndian.Uint16(v[vnetCsumStart:]) != 34 || binary.LittleEndian.Uint16(v[vnetCsumOffset:]) != 6 {
		t.Fatalf("virtio_net_hdr % x", v)
	}
	frame := append(slices.Clone(hdr[vnetLen:]), payload...)
	ip, udp := frame[ethLen:ethLen+ipLen], frame[ethLen+ipLen:]
	if binary.BigEndian.Uint16(ip[2:]) != uint16(28+len(payload)) || binary.BigEndian.Uint16(udp[4:]) != uint16(8+len(payload)) ||
		binary.BigEndian.Uint16(ip[4:]) != 77 {
		t.Fatalf("lengths or id: IP %x, UDP %x", ip, udp[:8])
	}
	if encap.Checksum(ip, 0) != 0xffff {
		t.Fatal("IPv4 header checksum wrong")
	}
	// What the kernel does with CHECKSUM_PARTIAL: sum from csum_start on,
	// the field holding the pseudo-header sum, and store the complement.
	binary.BigEndian.PutUint16(udp[6:], ^encap.Checksum(udp, 0))
	if _, why := parse(make([]byte, vnetLen), frame, len(frame), 0, testLocal); why != delivered {
		t.Fatalf("completed checksum does not verify: %v", why)
	}

	d, why := parse(v, frame, len(frame), tpStatusCsumNotReady, testLocal)
	if why != delivered || d.segment != 1200 || len(d.payload) != len(payload) {
		t.Fatalf("parse: %v %d %d", why, d.segment, len(d.payload))
	}
	out := make([][]byte, 8)
	for i := range out {
		out[i] = make([]byte, 2000)
	}
	sizes := make([]int, len(out))
	n, _ := underlay.SplitSegments(out, sizes, d.payload, d.segment, 0)
	if n != len(bufs) {
		t.Fatalf("%d datagrams out, %d in", n, len(bufs))
	}
	for i, b := range bufs {
		if !bytes.Equal(out[i][:sizes[i]], b) {
			t.Fatalf("datagram %d differs", i)
		}
	}
}

func datagrams(count int, size func(i int) int) [][]byte {
	out := make([][]byte, count)
	for i := range out {
		out[i] = make([]byte, size(i))
		for j := range out[i] {
			out[i][j] = byte(i + 3*j)
		}
	}
	return out
}
