package encap

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/overlayd/overlayd/encap/encaptest"
)

var tunAddr = netip.MustParseAddr("100.96.1.0")

// checkICMPError decodes reply with gopacket and checks everything an ICMP
// destination-unreachable answering orig must carry, including both
// checksums as gopacket recomputes them.
func checkICMPError(t *testing.T, reply, orig []byte, code uint8, mtu uint16) {
	t.Helper()
	pkt := gopacket.NewPacket(reply, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ip == nil || icmp == nil {
		t.Fatalf("gopacket decoded %v", pkt)
	}
	if _, _, err := ParseIPv4(reply); err != nil {
		t.Errorf("reply does not parse: %v", err)
	}
	checkIPv4Checksum(t, ip)
	if got := reserialize(t, icmp, gopacket.Payload(icmp.Payload)); be16(got[2:]) != icmp.Checksum {
		t.Errorf("ICMP checksum %#04x, gopacket computes %#04x", icmp.Checksum, be16(got[2:]))
	}

	if !ip.SrcIP.Equal(net.IP(tunAddr.AsSlice())) || !ip.DstIP.Equal(net.IP(orig[12:16])) {
		t.Errorf("reply %v > %v, want %v > %v", ip.SrcIP, ip.DstIP, tunAddr, net.IP(orig[12:16]))
	}
	if ip.TTL != 64 || ip.Flags&layers.IPv4DontFragment != 0 || ip.FragOffset != 0 || ip.Protocol != layers.IPProtocolICMPv4 || ip.IHL != 5 {
		t.Errorf("reply header: ttl %d flags %v frag %d proto %v ihl %d", ip.TTL, ip.Flags, ip.FragOffset, ip.Protocol, ip.IHL)
	}
	if ip.TOS&0xe0 != 0xc0 {
		t.Errorf("reply TOS %#x, want precedence internetwork control", ip.TOS)
	}
	if icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, code) {
		t.Errorf("ICMP %v, want type 3 code %d", icmp.TypeCode, code)
	}
	if icmp.Id != 0 || icmp.Seq != mtu {
		t.Errorf("ICMP unused %#04x, next-hop MTU %d; want 0, %d", icmp.Id, icmp.Seq, mtu)
	}
	ihl := int(orig[0]&0x0f) * 4
	if want := orig[:min(len(orig), ihl+8)]; !bytes.Equal(icmp.Payload, want) {
		t.Errorf("quoted\n%x\nwant\n%x", icmp.Payload, want)
	}
}

func TestFragNeeded(t *testing.T) {
	t.Parallel()
	dst := make([]byte, MaxICMPErrorLen)
	for _, orig := range [][]byte{
		makeIPv4(ipv4Opts{proto: 6, df: true, payload: make([]byte, 1500)}),
		makeIPv4(ipv4Opts{proto: 17, df: true, payload: []byte{1, 2, 3}}), // shorter than 8 bytes of payload
		makeIPv4(ipv4Opts{proto: 6, df: true, options: make([]byte, 40), payload: make([]byte, 1500)}),
		makeIPv4(ipv4Opts{proto: 1, df: true, payload: append([]byte{8, 0, 0, 0, 0, 1, 0, 1}, make([]byte, 1500)...)}), // echo request
	} {
		n := FragNeeded(dst, orig, tunAddr, 1450)
		if n != 20+8+int(orig[0]&0x0f)*4+min(8, len(orig)-int(orig[0]&0x0f)*4) {
			t.Fatalf("FragNeeded wrote %d bytes", n)
		}
		checkICMPError(t, dst[:n], orig, 4, 1450)
	}
}

func TestNetUnreachable(t *testing.T) {
	t.Parallel()
	dst := make([]byte, MaxICMPErrorLen+10)
	orig := makeIPv4(ipv4Opts{src: "100.96.1.2", dst: "100.96.9.9", proto: 17, payload: make([]byte, 100)})
	orig[1] = 0xb8 // DSCP EF: not copied, the TOS bits are
	encaptest.FixIPv4Checksum(orig)
	n := NetUnreachable(dst, orig, tunAddr)
	if n != 20+8+28 {
		t.Fatalf("NetUnreachable wrote %d bytes", n)
	}
	checkICMPError(t, dst[:n], orig, 0, 0)
	if !bytes.Equal(dst[n:], make([]byte, len(dst)-n)) {
		t.Error("NetUnreachable wrote past its length")
	}
}

func TestICMPErrorRefusals(t *testing.T) {
	t.Parallel()
	echo := append([]byte{8, 0, 0, 0, 0, 1, 0, 1}, make([]byte, 56)...)
	icmpOf := func(typ uint8) []byte {
		return makeIPv4(ipv4Opts{proto: 1, payload: append([]byte{typ, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 28)...)})
	}
	valid := makeIPv4(ipv4Opts{df: true, payload: make([]byte, 100)})
	for _, tc := range []struct {
		name string
		dst  []byte
		orig []byte
		from netip.Addr
	}{
		{"dst too small", make([]byte, MaxICMPErrorLen-1), valid, tunAddr},
		{"from IPv6", nil, valid, netip.MustParseAddr("fd00::1")},
		{"from zero Addr", nil, valid, netip.Addr{}},
		{"orig empty", nil, nil, tunAddr},
		{"orig truncated", nil, valid[:50], tunAddr},
		{"orig bad checksum", nil, func() []byte { p := bytes.Clone(valid); p[10]++; return p }(), tunAddr},
		{"orig IPv6", nil, func() []byte { p := bytes.Clone(valid); p[0] = 0x60; return p }(), tunAddr},
		{"dest unreachable", nil, icmpOf(3), tunAddr},
		{"source quench", nil, icmpOf(4), tunAddr},
		{"redirect", nil, icmpOf(5), tunAddr},
		{"time exceeded", nil, icmpOf(11), tunAddr},
		{"parameter problem", nil, icmpOf(12), tunAddr},
		{"unknown ICMP type", nil, icmpOf(200), tunAddr},
		{"ICMP without header", nil, makeIPv4(ipv4Opts{proto: 1}), tunAddr},
		{"non-first fragment", nil, makeIPv4(ipv4Opts{fragOff: 185, payload: echo}), tunAddr},
		{"multicast dst", nil, makeIPv4(ipv4Opts{dst: "224.0.0.251", payload: echo}), tunAddr},
		{"broadcast dst", nil, makeIPv4(ipv4Opts{dst: "255.255.255.255", payload: echo}), tunAddr},
		{"zero src", nil, makeIPv4(ipv4Opts{src: "0.0.0.0", payload: echo}), tunAddr},
		{"loopback src", nil, makeIPv4(ipv4Opts{src: "127.0.0.1", payload: echo}), tunAddr},
		{"multicast src", nil, makeIPv4(ipv4Opts{src: "239.1.1.1", payload: echo}), tunAddr},
		{"class E src", nil, makeIPv4(ipv4Opts{src: "240.0.0.1", payload: echo}), tunAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := tc.dst
			if dst == nil {
				dst = make([]byte, MaxICMPErrorLen)
			}
			if n := NetUnreachable(dst, tc.orig, tc.from); n != 0 {
				t.Errorf("NetUnreachable wrote %d bytes", n)
			}
			if n := FragNeeded(dst, tc.orig, tc.from, 1400); n != 0 {
				t.Errorf("FragNeeded wrote %d bytes", n)
			}
		})
	}

	// Answerable ICMP: informational messages and the first fragment.
	dst := make([]byte, MaxICMPErrorLen)
	for _, orig := range [][]byte{icmpOf(0), icmpOf(8), icmpOf(13), makeIPv4(ipv4Opts{proto: 1, fragOff: 0x2000, payload: echo})} {
		if n := NetUnreachable(dst, orig, tunAddr); n == 0 {
			t.Errorf("no answer to ICMP type %d", orig[20])
		}
	}
	mapped := netip.AddrFrom16(tunAddr.As16())
	if n := NetUnreachable(dst, valid, mapped); n == 0 || netip.AddrFrom4([4]byte(dst[12:16])) != tunAddr {
		t.Errorf("from IPv4-mapped %v: wrote %d bytes from %v", mapped, n, dst[12:16])
	}
	for _, mtu := range []int{-1, 0, 67, 65536} {
		if n := FragNeeded(dst, valid, tunAddr, mtu); n != 0 {
			t.Errorf("FragNeeded with MTU %d wrote %d bytes", mtu, n)
		}
	}
}

func TestICMPErrorAllocs(t *testing.T) {
	dst := make([]byte, MaxICMPErrorLen)
	orig := makeIPv4(ipv4Opts{df: true, payload: make([]byte, 1400)})
	if n := testing.AllocsPerRun(1000, func() {
		if FragNeeded(dst, orig, tunAddr, 1400) == 0 || NetUnreachable(dst, orig, tunAddr) == 0 {
			t.Fatal("no ICMP error written")
		}
	}); n != 0 {
		t.Errorf("FragNeeded+NetUnreachable allocate %v times", n)
	}
}

func BenchmarkFragNeeded(b *testing.B) {
	dst := make([]byte, MaxICMPErrorLen)
	orig := makeIPv4(ipv4Opts{df: true, payload: make([]byte, 1480)})
	b.ReportAllocs()
	b.SetBytes(int64(len(orig)))
	for b.Loop() {
		if FragNeeded(dst, orig, tunAddr, 1400) == 0 {
			b.Fatal("no ICMP error written")
		}
	}
}
