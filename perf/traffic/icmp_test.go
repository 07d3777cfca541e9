package traffic

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func TestBuildEchoAgreesWithGopacket(t *testing.T) {
	for _, size := range []int{MinPingSize, MinPingSize + 1, 84, 1500} {
		msg := make([]byte, size-ipv4HeaderLen)
		buildEcho(msg, 0x1234, 0xbeef)

		var icmp layers.ICMPv4
		if err := icmp.DecodeFromBytes(msg, gopacket.NilDecodeFeedback); err != nil {
			t.Fatal(err)
		}
		if icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0) || icmp.Id != 0x1234 || icmp.Seq != 0xbeef {
			t.Errorf("size %d: decoded %v id %#x seq %#x", size, icmp.TypeCode, icmp.Id, icmp.Seq)
		}
		buf := gopacket.NewSerializeBuffer()
		icmp.Checksum = 0
		err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &icmp, gopacket.Payload(icmp.Payload))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(msg), string(buf.Bytes()); got != want {
			t.Errorf("size %d: buildEcho and gopacket disagree (checksum %#04x vs %#04x)", size, msg[2:4], buf.Bytes()[2:4])
		}
	}
}

// icmpMessage serialises an ICMPv4 message (no outer IP header). For errors
// the 16-bit Seq field is where the next-hop MTU goes.
func icmpMessage(t *testing.T, typ, code uint8, id, seq uint16, payload []byte) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true},
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: id, Seq: seq},
		gopacket.Payload(payload))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// quote is the start of echo as a router quotes it: its IPv4 header and the
// first 8 bytes of the ICMP message.
func quote(t *testing.T, echo []byte, src, dst netip.Addr) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.IPv4{Version: 4, TTL: 63, Protocol: layers.IPProtocolICMPv4, Flags: layers.IPv4DontFragment,
			SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())},
		gopacket.Payload(echo))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()[:ipv4HeaderLen+icmpHeaderLen]
}

func TestMatch(t *testing.T) {
	src, dst := netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.2.1")
	router, other := netip.MustParseAddr("198.18.1.254"), netip.MustParseAddr("198.18.2.2")
	echo := make([]byte, 1400-ipv4HeaderLen)
	buildEcho(echo, 7, 9)
	reply := icmpMessage(t, icmpEchoReply, 0, 7, 9, echo[icmpHeaderLen:])

	corrupt := icmpMessage(t, icmpEchoReply, 0, 7, 9, echo[icmpHeaderLen:])
	corrupt[100] ^= 1
	truncated := icmpMessage(t, icmpEchoReply, 0, 7, 9, echo[icmpHeaderLen:1000])

	otherEcho := make([]byte, len(echo))
	buildEcho(otherEcho, 7, 10)

	tests := []struct {
		name    string
		msg     []byte
		from    netip.Addr
		want    PingResult
		ok      bool
		corrupt bool
	}{
		{name: "reply", msg: reply, from: dst, want: PingResult{Reply: true, From: dst}, ok: true},
		{name: "reply from elsewhere", msg: reply, from: other},
		{name: "reply to another seq", msg: icmpMessage(t, icmpEchoReply, 0, 7, 10, echo[icmpHeaderLen:]), from: dst},
		{name: "corrupt reply", msg: corrupt, from: dst, corrupt: true},
		{name: "truncated reply", msg: truncated, from: dst, corrupt: true},
		{
			name: "fragmentation needed",
			msg:  icmpMessage(t, icmpDestUnreach, icmpCodeFragNeeded, 0, 1300, quote(t, echo, src, dst)),
			from: router,
			want: PingResult{FragNeeded: true, NextHopMTU: 1300, From: router, ICMPType: 3, ICMPCode: 4},
			ok:   true,
		},
		{
			name: "host unreachable",
			msg:  icmpMessage(t, icmpDestUnreach, 1, 0, 0, quote(t, echo, src, dst)),
			from: router,
			want: PingResult{Unreachable: true, From: router, ICMPType: 3, ICMPCode: 1},
			ok:   true,
		},
		{
			name: "time exceeded",
			msg:  icmpMessage(t, icmpTimeExceeded, 0, 0, 0, quote(t, echo, src, dst)),
			from: router,
			want: PingResult{Unreachable: true, From: router, ICMPType: 11},
			ok:   true,
		},
		{name: "error about another echo", msg: icmpMessage(t, icmpDestUnreach, icmpCodeFragNeeded, 0, 1300, quote(t, otherEcho, src, dst)), from: router},
		{name: "error about another destination", msg: icmpMessage(t, icmpDestUnreach, 1, 0, 0, quote(t, echo, src, other)), from: router},
		{name: "error quoting too little", msg: icmpMessage(t, icmpDestUnreach, 1, 0, 0, quote(t, echo, src, dst)[:24]), from: router},
		{name: "echo request", msg: echo, from: dst},
		{name: "runt", msg: reply[:4], from: dst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := match(tt.msg, tt.from, echo, dst)
			if tt.corrupt != errors.Is(err, errCorruptReply) {
				t.Fatalf("err = %v, want corrupt %v", err, tt.corrupt)
			}
			if ok != tt.ok || got != tt.want {
				t.Errorf("match = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestPingResultString(t *testing.T) {
	for r, want := range map[PingResult]string{
		{}: "no answer",
		{Reply: true, RTT: time.Millisecond, From: netip.MustParseAddr("198.18.0.2")}: "reply from 198.18.0.2 in 1ms",
		{LocalTooBig: true, LocalMTU: 1500}:                                           "message too long for the local route (MTU 1500)",
	} {
		if got := r.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

func TestGbps(t *testing.T) {
	if got := Gbps(125_000_000, time.Second); got != 1 {
		t.Errorf("Gbps(125 MB, 1s) = %v, want 1", got)
	}
	if got := Gbps(1, 0); got != 0 {
		t.Errorf("Gbps(1, 0) = %v, want 0", got)
	}
}
