package encap

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/overlayd/overlayd/encap/encaptest"
)

// The golden frames are captures of the Linux kernel's vxlan device and of
// a flanneld-style UDP socket; see testdata/packets/capture.sh.
const (
	goldenVXLAN      = "../testdata/packets/vxlan_kernel_vni1.hex"
	goldenFlannelUDP = "../testdata/packets/flannel_udp.hex"
)

// decodeUnderlay decodes a captured Ethernet frame with gopacket, checks
// the outer headers and their checksums, and returns the UDP payload.
func decodeUnderlay(t *testing.T, frame []byte, dstPort layers.UDPPort) []byte {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if err := pkt.ErrorLayer(); err != nil {
		t.Fatalf("gopacket: %v", err.Error())
	}
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ip == nil || udp == nil {
		t.Fatalf("gopacket found no IPv4/UDP in %v", pkt)
	}
	if udp.DstPort != dstPort {
		t.Errorf("UDP destination port %d, want %d", udp.DstPort, dstPort)
	}
	checkIPv4Checksum(t, ip)

	// The outer UDP checksum, by gopacket and by Checksum with the
	// pseudo-header.
	want := udp.Checksum
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	if got := reserialize(t, udp, gopacket.Payload(udp.Payload)); be16(got[6:]) != want {
		t.Errorf("outer UDP checksum %#04x, gopacket computes %#04x", want, be16(got[6:]))
	}
	src, dst := netip.AddrFrom4([4]byte(ip.SrcIP.To4())), netip.AddrFrom4([4]byte(ip.DstIP.To4()))
	segment := frame[14+int(ip.IHL)*4:]
	if got := Checksum(segment, PseudoHeaderSum(src, dst, 17, len(segment))); got != 0xffff {
		t.Errorf("outer UDP checksum does not verify with Checksum: sum %#04x", got)
	}
	return udp.Payload
}

// checkIPv4Checksum compares a decoded header's checksum with the one
// gopacket computes when it serializes the header again.
func checkIPv4Checksum(t *testing.T, ip *layers.IPv4) {
	t.Helper()
	if got := reserialize(t, ip, gopacket.Payload(ip.Payload)); be16(got[10:]) != ip.Checksum {
		t.Errorf("IPv4 %v > %v: checksum %#04x, gopacket computes %#04x", ip.SrcIP, ip.DstIP, ip.Checksum, be16(got[10:]))
	}
}

func reserialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestGoldenVXLAN(t *testing.T) {
	t.Parallel()
	payload := decodeUnderlay(t, encaptest.LoadHex(t, goldenVXLAN), 8472)
	flannel1 := [6]byte{0xa6, 0xd7, 0x18, 0xcf, 0xe6, 0xcb} // the sender's VTEP

	// Our decoder.
	h := NewVXLAN(1, testLocalMAC)
	inner, err := h.Decap(payload)
	if err != nil {
		t.Fatalf("Decap: %v", err)
	}
	src, dst, err := ParseIPv4(inner)
	if err != nil {
		t.Fatal(err)
	}
	if src != netip.MustParseAddr("100.96.1.0") || dst != netip.MustParseAddr("100.96.2.1") {
		t.Errorf("inner %v > %v", src, dst)
	}

	// gopacket's decoders on the same bytes.
	pkt := gopacket.NewPacket(payload, layers.LayerTypeVXLAN, gopacket.Default)
	if err := pkt.ErrorLayer(); err != nil {
		t.Fatalf("gopacket: %v", err.Error())
	}
	vx, _ := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if vx == nil || eth == nil || ip == nil || icmp == nil {
		t.Fatalf("gopacket decoded %v", pkt)
	}
	if !vx.ValidIDFlag || vx.VNI != 1 || vx.GBPExtension {
		t.Errorf("gopacket VXLAN: %+v", vx)
	}
	if !bytes.Equal(eth.DstMAC, testLocalMAC[:]) || !bytes.Equal(eth.SrcMAC, flannel1[:]) || eth.EthernetType != layers.EthernetTypeIPv4 {
		t.Errorf("gopacket Ethernet: %v > %v type %v", eth.DstMAC, eth.SrcMAC, eth.EthernetType)
	}
	if !ip.SrcIP.Equal(net.IP(src.AsSlice())) || !ip.DstIP.Equal(net.IP(dst.AsSlice())) {
		t.Errorf("gopacket IPv4 %v > %v, ParseIPv4 %v > %v", ip.SrcIP, ip.DstIP, src, dst)
	}
	if !bytes.Equal(append(ip.Contents, ip.Payload...), inner) {
		t.Error("gopacket's inner IPv4 packet differs from Decap's")
	}
	checkIPv4Checksum(t, ip)
	if icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0) {
		t.Errorf("inner ICMP %v", icmp.TypeCode)
	}

	// Encap reproduces the kernel's header byte for byte.
	frame := withHeadroom(h.Len(), inner)
	if err := h.Encap(frame, &Params{VNI: 1, SrcMAC: flannel1, DstMAC: testLocalMAC}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(frame, payload) {
		t.Errorf("Encap wrote\n%x\nthe kernel sent\n%x", frame[:h.Len()], payload[:h.Len()])
	}
}

func TestGoldenFlannelUDP(t *testing.T) {
	t.Parallel()
	payload := decodeUnderlay(t, encaptest.LoadHex(t, goldenFlannelUDP), 8285)

	inner, err := FlannelUDP.Decap(payload)
	if err != nil {
		t.Fatalf("Decap: %v", err)
	}
	if !bytes.Equal(inner, payload) || &inner[0] != &payload[0] {
		t.Error("Decap did not return the payload itself")
	}
	src, dst, err := ParseIPv4(inner)
	if err != nil || src != netip.MustParseAddr("100.96.1.2") || dst != netip.MustParseAddr("100.96.2.2") {
		t.Errorf("ParseIPv4 = %v > %v, %v", src, dst, err)
	}

	pkt := gopacket.NewPacket(payload, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ip == nil || icmp == nil {
		t.Fatalf("gopacket decoded %v", pkt)
	}
	if ip.TTL != 62 || int(ip.Length) != len(payload) || !ip.DstIP.Equal(net.IP(dst.AsSlice())) {
		t.Errorf("gopacket IPv4: ttl %d length %d dst %v", ip.TTL, ip.Length, ip.DstIP)
	}
	checkIPv4Checksum(t, ip)
	if icmp.Id != 0x4f56 || icmp.Seq != 1 {
		t.Errorf("gopacket ICMP: %+v", icmp)
	}
}

func TestLoadHexIgnoresComments(t *testing.T) {
	t.Parallel()
	b := encaptest.LoadHex(t, goldenVXLAN)
	// 14 Ethernet + 20 IPv4 + 8 UDP + 8 VXLAN + 14 Ethernet + 44 inner.
	if len(b) != 108 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		t.Fatalf("loaded %d bytes: %x", len(b), b)
	}
}
