package offload

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/google/gopacket/layers"
)

// vtepMTU is a vxlan host's TUN MTU: 1500 less VXLAN's 50.
const vtepMTU = 1450

// kernelVTEPFrame builds the inner packet of a super-frame as a kernel
// VXLAN device sends it over a veth with TX offloads on (captured with
// Linux 6.18, flannel.1 MTU 1450 over a 1500 veth): IPv4 with DF, TCP with
// timestamps, ACK|PSH, payload bytes (46 segments of MSS 1398 at most,
// 64308 bytes), and the TCP checksum left partial: the pseudo-header sum
// over the whole length, not complemented. The capture's virtio-net
// header (AF_PACKET) said GSOTCPv4, gso_size 1398, NEEDS_CSUM.
func kernelVTEPFrame(tb testing.TB, payload int) []byte {
	tb.Helper()
	pkt := buildSeg(tb, segSpec{
		src: "100.96.1.0", dst: "100.96.2.0", id: 21323, seq: 1e6, ack: 7,
		flags: tcpFlagACK | tcpFlagPSH, tcpOpts: timestamps(9, 8), payload: pattern(payload, 3),
	})
	setPartialChecksum(pkt, false, protoTCP, ipv4MinHeaderLen, tcpOffChecksum)
	return pkt
}

func TestSuperPacketHdrKernelVTEP(t *testing.T) {
	t.Parallel()
	pkt := kernelVTEPFrame(t, 46*1398)
	if len(pkt) != 64360 {
		t.Fatalf("built %d bytes, the capture had 64360", len(pkt))
	}
	h, ok := SuperPacketHdr(pkt, vtepMTU)
	want := VirtioNetHdr{Flags: VirtioNeedsCsum, GSOType: GSOTCPv4, HdrLen: 52, GSOSize: 1398, CsumStart: 20, CsumOffset: 16}
	if !ok || h != want {
		t.Fatalf("SuperPacketHdr = %+v, %v; want %+v", h, ok, want)
	}
	orig := bytes.Clone(pkt)
	out, sizes := newBufs(64, 2000)
	n, _, err := SplitGSO(pkt, h, out, sizes, 0, SplitOptions{})
	if err != nil || n != 46 {
		t.Fatalf("SplitGSO = %d, %v; want 46 segments", n, err)
	}
	if !bytes.Equal(pkt, orig) {
		t.Fatal("SuperPacketHdr or SplitGSO changed the packet")
	}
	segs := make([][]byte, n)
	for i := range n {
		segs[i] = out[i][:sizes[i]]
		checkWirePacket(t, segs[i])
		if len(segs[i]) != vtepMTU {
			t.Errorf("segment %d: %d bytes, want %d", i, len(segs[i]), vtepMTU)
		}
		seq, flags := tcpSeqFlags(segs[i])
		if seq != 1e6+uint32(i*1398) {
			t.Errorf("segment %d: seq %d", i, seq)
		}
		if psh := flags&tcpFlagPSH != 0; psh != (i == n-1) {
			t.Errorf("segment %d: PSH %v", i, psh)
		}
		if id := binary.BigEndian.Uint16(segs[i][ipv4OffID:]); id != 21323+uint16(i) {
			t.Errorf("segment %d: IP ID %d", i, id)
		}
	}
	if !bytes.Equal(joinPayloads(segs...), l4Payload(orig)) {
		t.Fatal("segments do not carry the payload")
	}
}

func TestSuperPacketHdrShapes(t *testing.T) {
	t.Parallel()
	big := pattern(5000, 0)
	v4 := func(s segSpec) []byte { s.payload = big; return buildSeg(t, s) }
	for _, c := range []struct {
		name string
		pkt  []byte
		mtu  int
		want VirtioNetHdr // zero: refused
	}{
		{"ipv4", v4(segSpec{}), 1500, VirtioNetHdr{Flags: 1, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1460, CsumStart: 20, CsumOffset: 16}},
		{"ipv4 options", v4(segSpec{ipOpts: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}}), 1000,
			VirtioNetHdr{Flags: 1, GSOType: GSOTCPv4, HdrLen: 44, GSOSize: 956, CsumStart: 24, CsumOffset: 16}},
		{"ipv6", buildSeg(t, segSpec{v6: true, payload: big}), 1280, VirtioNetHdr{Flags: 1, GSOType: GSOTCPv6, HdrLen: 60, GSOSize: 1220, CsumStart: 40, CsumOffset: 16}},
		{"fin cwr ece", v4(segSpec{flags: tcpFlagACK | tcpFlagFIN | tcpFlagCWR | 0x40}), 1500, VirtioNetHdr{Flags: 1, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1460, CsumStart: 20, CsumOffset: 16}},
		{"one byte over", buildSeg(t, segSpec{payload: pattern(1461, 0)}), 1500, VirtioNetHdr{Flags: 1, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1460, CsumStart: 20, CsumOffset: 16}},
		{"fits", buildSeg(t, segSpec{payload: pattern(1460, 0)}), 1500, VirtioNetHdr{}},
		{"udp", v4(segSpec{udp: true}), 1500, VirtioNetHdr{}},
		{"syn", v4(segSpec{flags: tcpFlagSYN}), 1500, VirtioNetHdr{}},
		{"rst", v4(segSpec{flags: tcpFlagRST | tcpFlagACK}), 1500, VirtioNetHdr{}},
		{"urg", v4(segSpec{flags: 0x20 | tcpFlagACK}), 1500, VirtioNetHdr{}},
		{"headers fill the mtu", v4(segSpec{tcpOpts: timestamps(1, 2)}), 52, VirtioNetHdr{}},
		{"no mtu", v4(segSpec{}), 0, VirtioNetHdr{}},
		{"fragment", func() []byte { p := v4(segSpec{noDF: true}); p[ipv4OffFlags] |= ipv4FlagMF; return p }(), 1500, VirtioNetHdr{}},
		{"total length", func() []byte { p := v4(segSpec{}); return p[:len(p)-1] }(), 1500, VirtioNetHdr{}},
		{"truncated tcp header", v4(segSpec{})[:30], 20, VirtioNetHdr{}},
		{"data offset past the end", func() []byte {
			p := buildSeg(t, segSpec{payload: pattern(20, 0)})
			p[20+tcpOffDataOff] = 0xf0
			return p
		}(), 40, VirtioNetHdr{}},
		{"garbage", bytes.Repeat([]byte{0xff}, 3000), 1500, VirtioNetHdr{}},
	} {
		h, ok := SuperPacketHdr(c.pkt, c.mtu)
		if ok != (c.want != VirtioNetHdr{}) || h != c.want && ok {
			t.Errorf("%s: SuperPacketHdr = %+v, %v; want %+v", c.name, h, ok, c.want)
		}
	}
}

// TestCoalesceOversize: with the TUN's MTU, a super-frame goes into the
// TUN as a super-packet cut at the MTU, between the ordinary segments of
// its flow, which merge as before; without it, or for UDP, it goes whole.
func TestCoalesceOversize(t *testing.T) {
	t.Parallel()
	super := kernelVTEPFrame(t, 10*1398+100)
	seq := binary.BigEndian.Uint32(super[20+tcpOffSeq:])
	next := seq + uint32(len(l4Payload(super)))
	seg := func(i int) []byte {
		p := buildSeg(t, segSpec{src: "100.96.1.0", dst: "100.96.2.0", seq: next + uint32(i*1398), ack: 7,
			tcpOpts: timestamps(9, 8), payload: pattern(1398, i)})
		setPartialChecksum(p, false, protoTCP, ipv4MinHeaderLen, tcpOffChecksum)
		return p
	}
	before := buildSeg(t, segSpec{src: "100.96.1.0", dst: "100.96.2.0", seq: seq - 1398, ack: 7,
		tcpOpts: timestamps(9, 8), payload: pattern(1398, 9)})
	bigUDP := buildSeg(t, segSpec{udp: true, payload: pattern(3000, 0)})
	pkts := [][]byte{before, super, seg(0), seg(1), bigUDP}

	var table GROTable
	table.MTU = vtepMTU
	bufs := groBatch(pkts, maxIPPacket)
	written := Coalesce(bufs, groOffset, &table, nil)
	if got := indices(written); !slices.Equal(got, []int{0, 1, 2, 4}) {
		t.Fatalf("written %v, want [0 1 2 4]", got)
	}
	h, segs := kernelView(t, bufs[1], groOffset, true)
	if h.GSOType != GSOTCPv4 || h.GSOSize != 1398 || len(segs) != 11 || packets(written, 1) != 1 {
		t.Fatalf("super-frame: header %+v, %d segments, %d packets", h, len(segs), packets(written, 1))
	}
	for i, s := range segs {
		if len(s) > vtepMTU {
			t.Errorf("segment %d: %d bytes, MTU %d", i, len(s), vtepMTU)
		}
	}
	if !bytes.Equal(joinPayloads(segs...), l4Payload(super)) {
		t.Error("super-frame's payload changed")
	}
	if h, segs := kernelView(t, bufs[2], groOffset, true); h.GSOType != GSOTCPv4 || len(segs) != 2 {
		t.Errorf("segments after the super-frame: header %+v, %d segments; want merged", h, len(segs))
	}
	if h, _ := kernelView(t, bufs[4], groOffset, true); h.GSOType != GSONone {
		t.Errorf("oversize UDP: header %+v, want none (datagram boundaries are not known)", h)
	}

	// Without the MTU, the super-frame goes as one packet.
	table.MTU = 0
	bufs = groBatch([][]byte{kernelVTEPFrame(t, 5000)}, maxIPPacket)
	Coalesce(bufs, groOffset, &table, nil)
	if h, _ := kernelView(t, bufs[0], groOffset, true); h.GSOType != GSONone {
		t.Errorf("without MTU: header %+v, want none", h)
	}
}

func TestCoalesceOversizeAllocs(t *testing.T) {
	table := GROTable{MTU: vtepMTU}
	bufs := groBatch([][]byte{kernelVTEPFrame(t, 40000), kernelVTEPFrame(t, 3000)}, maxIPPacket)
	out := Coalesce(bufs, groOffset, &table, nil)
	if n := testing.AllocsPerRun(100, func() { out = Coalesce(bufs, groOffset, &table, out) }); n != 0 {
		t.Errorf("Coalesce with a super-frame allocates %v times per batch", n)
	}
}

// FuzzSuperPacketHdr: bytes 0-1 are the MTU (big-endian), the rest the
// packet. Whatever SuperPacketHdr accepts, SplitGSO must cut with its
// header into valid packets no longer than the MTU that carry the payload.
func FuzzSuperPacketHdr(f *testing.F) {
	for _, s := range superSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(fuzzSuperPacketHdr)
}

func superSeed(mtu int, pkt []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(mtu)), pkt...)
}

func superSeeds(tb testing.TB) [][]byte {
	return [][]byte{
		superSeed(vtepMTU, kernelVTEPFrame(tb, 3*1398+1)),
		superSeed(1280, buildSeg(tb, segSpec{v6: true, payload: pattern(3000, 0)})),
		superSeed(576, buildSeg(tb, segSpec{udp: true, payload: pattern(1000, 0)})),
	}
}

func fuzzSuperPacketHdr(t *testing.T, data []byte) {
	if len(data) < 2 {
		return
	}
	mtu, pkt := int(binary.BigEndian.Uint16(data)), data[2:]
	h, ok := SuperPacketHdr(pkt, mtu)
	if !ok {
		return
	}
	orig := bytes.Clone(pkt)
	out, sizes := newBufs(len(pkt)/int(h.GSOSize)+1, mtu)
	n, _, err := SplitGSO(pkt, h, out, sizes, 0, SplitOptions{})
	if err != nil {
		t.Fatalf("SplitGSO refuses header %+v from SuperPacketHdr: %v", h, err)
	}
	if n < 2 {
		t.Fatalf("%d segments of a packet longer than the MTU", n)
	}
	var payload []byte
	for i := range n {
		s := out[i][:sizes[i]]
		if len(s) > mtu {
			t.Fatalf("segment %d: %d bytes, MTU %d", i, len(s), mtu)
		}
		if p := wireProblem(s); p != "" {
			t.Fatalf("segment %d: %s", i, p)
		}
		payload = append(payload, s[h.HdrLen:]...)
	}
	if !bytes.Equal(payload, orig[h.HdrLen:]) {
		t.Fatal("segments do not carry the payload")
	}
}
