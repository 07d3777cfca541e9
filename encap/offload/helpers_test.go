package offload

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/overlayd/overlayd/encap/encaptest"
)

// segSpec shapes a TCP or UDP packet built by buildSeg. Zero fields take
// the defaults of a bulk TCP/IPv4 transfer from 100.96.1.2:40000 to
// 100.96.2.2:5201.
type segSpec struct {
	v6       bool
	udp      bool
	src, dst string
	sport    uint16
	dport    uint16
	seq, ack uint32
	flags    uint8 // tcpFlag*; 0 means ACK
	window   uint16
	tos      uint8 // or IPv6 traffic class
	flow     uint32
	ttl      uint8
	noDF     bool
	id       uint16
	ipOpts   []layers.IPv4Option
	tcpOpts  []layers.TCPOption
	payload  []byte
}

// timestamps is a TCP timestamp option padded to 12 bytes, as Linux sends.
func timestamps(val, ecr uint32) []layers.TCPOption {
	data := binary.BigEndian.AppendUint32(nil, val)
	data = binary.BigEndian.AppendUint32(data, ecr)
	return []layers.TCPOption{
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: data},
	}
}

// buildSeg builds a packet with gopacket, which computes its lengths and
// checksums independently of this package.
func buildSeg(tb testing.TB, s segSpec) []byte {
	tb.Helper()
	src, dst := cmp.Or(s.src, "100.96.1.2"), cmp.Or(s.dst, "100.96.2.2")
	if s.v6 {
		src, dst = "::ffff:"+src, "::ffff:"+dst
	}
	if s.sport == 0 {
		s.sport = 40000
	}
	if s.dport == 0 {
		s.dport = 5201
	}
	if s.ttl == 0 {
		s.ttl = 64
	}
	if s.flags == 0 {
		s.flags = tcpFlagACK
	}
	if s.window == 0 {
		s.window = 502
	}
	proto := layers.IPProtocolTCP
	if s.udp {
		proto = layers.IPProtocolUDP
	}
	var ip gopacket.NetworkLayer
	var ipLayer gopacket.SerializableLayer
	if s.v6 {
		ip6 := &layers.IPv6{
			Version: 6, TrafficClass: s.tos, FlowLabel: s.flow, HopLimit: s.ttl, NextHeader: proto,
			SrcIP: netip.MustParseAddr(src).AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice(),
		}
		ip, ipLayer = ip6, ip6
	} else {
		ip4 := &layers.IPv4{
			Version: 4, TOS: s.tos, Id: s.id, TTL: s.ttl, Protocol: proto, Options: s.ipOpts,
			SrcIP: netip.MustParseAddr(src).AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice(),
		}
		if !s.noDF {
			ip4.Flags = layers.IPv4DontFragment
		}
		ip, ipLayer = ip4, ip4
	}
	var l4 interface {
		gopacket.SerializableLayer
		SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
	}
	if s.udp {
		l4 = &layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: layers.UDPPort(s.dport)}
	} else {
		f := s.flags
		l4 = &layers.TCP{
			SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport),
			Seq: s.seq, Ack: s.ack, Window: s.window, Options: s.tcpOpts,
			FIN: f&tcpFlagFIN != 0, SYN: f&tcpFlagSYN != 0, RST: f&tcpFlagRST != 0, PSH: f&tcpFlagPSH != 0,
			ACK: f&tcpFlagACK != 0, URG: f&0x20 != 0, ECE: f&0x40 != 0, CWR: f&tcpFlagCWR != 0,
		}
	}
	if err := l4.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ipLayer, l4, gopacket.Payload(s.payload)); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// pattern returns n bytes that differ from one offset to the next, so that
// a misplaced byte shows.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((i+seed)*7 + (i+seed)>>8)
	}
	return b
}

// superPacket builds a TCP (or UDP) super-packet of payload bytes as a TUN
// hands it over with TSO (or USO): one packet with the whole payload, the
// pseudo-header sum in its checksum field, and a virtio-net header whose
// HdrLen is the kernel's hint (here the whole linear part, as when the
// kernel forwards). It returns the header and the packet.
func superPacket(tb testing.TB, s segSpec, mss int) (VirtioNetHdr, []byte) {
	tb.Helper()
	pkt := buildSeg(tb, s)
	h := VirtioNetHdr{Flags: VirtioNeedsCsum, GSOSize: uint16(mss), HdrLen: uint16(len(pkt))}
	l4Off := ipv4MinHeaderLen + 4*len(s.ipOpts)
	if s.v6 {
		l4Off = ipv6HeaderLen
	}
	h.CsumStart = uint16(l4Off)
	switch {
	case s.udp:
		h.GSOType, h.CsumOffset = GSOUDPL4, udpOffChecksum
	case s.v6:
		h.GSOType, h.CsumOffset = GSOTCPv6, tcpOffChecksum
	default:
		h.GSOType, h.CsumOffset = GSOTCPv4, tcpOffChecksum
	}
	setPartialChecksum(pkt, s.v6, map[bool]uint8{false: protoTCP, true: protoUDP}[s.udp], l4Off, int(h.CsumOffset))
	return h, pkt
}

// newBufs returns n buffers of size bytes.
func newBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

// checkWirePacket asserts that pkt is a whole, valid IPv4 or IPv6 packet as
// a peer's kernel would check it: lengths, IPv4 header checksum and the
// TCP/UDP checksum, all verified without this package's code, and that
// gopacket decodes it cleanly.
func checkWirePacket(tb testing.TB, pkt []byte) gopacket.Packet {
	tb.Helper()
	if err := wireProblem(pkt); err != "" {
		tb.Fatalf("%s: %x", err, pkt[:min(len(pkt), 64)])
	}
	first := layers.LayerTypeIPv4
	if pkt[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	p := gopacket.NewPacket(pkt, first, gopacket.NoCopy)
	if el := p.ErrorLayer(); el != nil {
		tb.Fatalf("gopacket: %v", el.Error())
	}
	return p
}

// wireProblem returns what is wrong with pkt as a wire packet, or "".
func wireProblem(pkt []byte) string {
	var pseudo, l4 []byte
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || ihl > len(pkt) || int(be16(pkt[2:])) != len(pkt) {
			return "bad IPv4 lengths"
		}
		if encaptest.NaiveChecksum(pkt[:ihl], 0) != 0xffff {
			return "bad IPv4 header checksum"
		}
		l4 = pkt[ihl:]
		pseudo = append(append([]byte(nil), pkt[12:20]...), 0, pkt[9], byte(len(l4)>>8), byte(len(l4)))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		if int(be16(pkt[4:])) != len(pkt)-40 {
			return "bad IPv6 payload length"
		}
		off, next := v6Transport(pkt)
		if off > len(pkt) {
			return "truncated IPv6 extension header"
		}
		l4 = pkt[off:]
		pseudo = append(append([]byte(nil), pkt[8:40]...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, next)
	default:
		return "not IPv4 or IPv6"
	}
	proto := pseudo[len(pseudo)-1]
	if pkt[0]>>4 == 4 {
		proto = pkt[9]
	}
	switch proto {
	case protoTCP:
		if len(l4) < 20 {
			return "short TCP header"
		}
	case protoUDP:
		if len(l4) < 8 || int(be16(l4[4:])) != len(l4) {
			return "bad UDP length"
		}
	default:
		return ""
	}
	if encaptest.NaiveChecksum(append(pseudo, l4...), 0) != 0xffff {
		return "bad transport checksum"
	}
	return ""
}

// v6Transport skips the options extension headers of an IPv6 packet.
func v6Transport(pkt []byte) (off int, next byte) {
	off, next = 40, pkt[6]
	for (next == 0 || next == 60) && len(pkt) >= off+8 {
		next, off = pkt[off], off+8*(1+int(pkt[off+1]))
	}
	return off, next
}

// l4Payload returns the TCP or UDP payload of a valid packet.
func l4Payload(pkt []byte) []byte {
	off := int(pkt[0]&0x0f) * 4
	proto := pkt[9]
	if pkt[0]>>4 == 6 {
		off, proto = v6Transport(pkt)
	}
	if proto == protoUDP {
		return pkt[off+8:]
	}
	return pkt[off+int(pkt[off+12]>>4)*4:]
}

// tcpSeqFlags returns the sequence number and flags of a TCP packet.
func tcpSeqFlags(pkt []byte) (uint32, uint8) {
	off := int(pkt[0]&0x0f) * 4
	if pkt[0]>>4 == 6 {
		off, _ = v6Transport(pkt)
	}
	return binary.BigEndian.Uint32(pkt[off+4:]), pkt[off+13]
}

// joinPayloads concatenates the payloads of packets.
func joinPayloads(pkts ...[]byte) []byte {
	var all bytes.Buffer
	for _, p := range pkts {
		all.Write(l4Payload(p))
	}
	return all.Bytes()
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
