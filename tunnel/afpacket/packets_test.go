package afpacket

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var (
	testLocal = netip.MustParseAddrPort("198.18.0.1:8285")
	testPeer  = netip.MustParseAddrPort("198.18.0.2:8285")
	testMAC   = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	peerMAC   = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

// frameSpec describes an Ethernet frame for tests; gopacket builds it.
type frameSpec struct {
	src, dst  netip.AddrPort
	payload   []byte
	proto     layers.IPProtocol
	flags     layers.IPv4Flag
	fragOff   uint16
	options   bool // one 4-byte IP option (NOP NOP NOP EOL)
	etherType layers.EthernetType
}

func udpFrame(src, dst netip.AddrPort, payload []byte) frameSpec {
	return frameSpec{src: src, dst: dst, payload: payload, proto: layers.IPProtocolUDP, flags: layers.IPv4DontFragment, etherType: layers.EthernetTypeIPv4}
}

// build serializes the frame with correct lengths and checksums.
func (s frameSpec) build(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(peerMAC[:]), DstMAC: net.HardwareAddr(testMAC[:]), EthernetType: s.etherType}
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Protocol: s.proto, Flags: s.flags, FragOffset: s.fragOff, Id: 7,
		SrcIP: s.src.Addr().AsSlice(), DstIP: s.dst.Addr().AsSlice(),
	}
	if s.options {
		ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
	}
	var l4 gopacket.SerializableLayer
	switch s.proto {
	case layers.IPProtocolUDP:
		u := &layers.UDP{SrcPort: layers.UDPPort(s.src.Port()), DstPort: layers.UDPPort(s.dst.Port())}
		u.SetNetworkLayerForChecksum(ip)
		l4 = u
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(s.src.Port()), DstPort: layers.TCPPort(s.dst.Port()), Window: 100}
		tcp.SetNetworkLayerForChecksum(ip)
		l4 = tcp
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, l4, gopacket.Payload(s.payload)); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func payloadOf(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + 3)
	}
	return p
}
