package encap

import (
	"bytes"
	"slices"
	"testing"

	"github.com/google/gopacket/layers"
)

const groOffset = 64 // as the forwarder writes decapsulated packets

// groBatch copies pkts into buffers behind groOffset bytes of headroom,
// each with room to grow to capacity bytes of packet.
func groBatch(pkts [][]byte, capacity int) [][]byte {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = make([]byte, groOffset+len(p), groOffset+max(capacity, len(p)))
		copy(bufs[i][groOffset:], p)
	}
	return bufs
}

// kernelView decodes what CoalesceTCP left in front of packet i and hands
// header and packet to SplitGSO, which does what the kernel would do with
// them before a receiver checks them: segment and complete checksums. If
// valid, it asserts that the result is valid wire packets (unless the
// header is zero: the packet went untouched).
func kernelView(t testing.TB, buf []byte, offset int, valid bool) (VirtioNetHdr, [][]byte) {
	t.Helper()
	var h VirtioNetHdr
	if err := h.Decode(buf[offset-VirtioNetHdrLen:]); err != nil {
		t.Fatal(err)
	}
	pkt := buf[offset:]
	out, sizes := newBufs(len(pkt)/max(1, int(h.GSOSize))+1, len(pkt))
	n, err := SplitGSO(pkt, h, out, sizes, 0)
	if err != nil {
		t.Fatalf("the kernel would refuse header %+v: %v", h, err)
	}
	segs := make([][]byte, n)
	for i := range n {
		segs[i] = out[i][:sizes[i]]
		if p := wireProblem(segs[i]); p != "" && valid && h != (VirtioNetHdr{}) {
			t.Fatalf("after the kernel, packet %d: %s (header %+v)", i, p, h)
		}
	}
	return h, segs
}

// TestCoalesceTCPRoundTrip splits super-packets into segments, coalesces
// them back and gets the very same super-packets, header included.
func TestCoalesceTCPRoundTrip(t *testing.T) {
	t.Parallel()
	for _, s := range []segSpec{
		{seq: 0xffff0000, id: 0xffff, flags: tcpFlagACK | tcpFlagPSH, tcpOpts: timestamps(7, 9), payload: pattern(65535-52, 0)},
		{v6: true, flow: 0x12345, tos: 0x10, tcpOpts: timestamps(7, 9), payload: pattern(65535-72, 1)},
		{payload: pattern(testMSS*3+1, 2)},
	} {
		hIn, super := superPacket(t, s, testMSS)
		out, sizes := newBufs(64, 1500)
		n, err := SplitGSO(super, hIn, out, sizes, 0)
		if err != nil {
			t.Fatal(err)
		}
		segs := make([][]byte, n)
		for i := range n {
			segs[i] = out[i][:sizes[i]]
		}
		bufs := groBatch(segs, 65535)
		var table GROTable
		toWrite := CoalesceTCP(bufs, groOffset, &table, nil)
		if !slices.Equal(toWrite, []int{0}) || table.Packets(0) != n {
			t.Fatalf("toWrite %v, Packets(0) %d; want [0], %d", toWrite, table.Packets(0), n)
		}
		got := bufs[0][groOffset:]
		if !bytes.Equal(got, super) {
			t.Fatalf("v6=%v: coalesced packet differs from the super-packet", s.v6)
		}
		h, again := kernelView(t, bufs[0], groOffset, true)
		want := hIn
		want.HdrLen = uint16(len(super) - len(s.payload))
		if h != want {
			t.Errorf("header %+v, want %+v", h, want)
		}
		for i := range again {
			if !bytes.Equal(again[i], segs[i]) {
				t.Fatalf("segment %d differs after the round trip", i)
			}
		}
	}
}

// TestCoalesceTCPRefuses checks each reason not to merge the second of
// two segments into the first.
func TestCoalesceTCPRefuses(t *testing.T) {
	t.Parallel()
	routerAlert := func(v byte) []layers.IPv4Option {
		return []layers.IPv4Option{{OptionType: 0x94, OptionLength: 4, OptionData: []byte{0, v}}}
	}
	base := segSpec{seq: 1000, ack: 5, tcpOpts: timestamps(1, 2), payload: pattern(1000, 0)}
	tests := []struct {
		name     string
		first    func(*segSpec)
		second   func(*segSpec)
		capacity int // of the first packet's buffer; 0 for 65535
		merged   bool
	}{
		{name: "control", merged: true},
		{name: "control IPv6", first: func(s *segSpec) { s.v6 = true }, second: func(s *segSpec) { s.v6 = true }, merged: true},
		{name: "control PSH last", second: func(s *segSpec) { s.flags = tcpFlagACK | tcpFlagPSH }, merged: true},
		{name: "control short last", second: func(s *segSpec) { s.payload = s.payload[:1] }, merged: true},
		{name: "control same IP options", first: func(s *segSpec) { s.ipOpts = routerAlert(0) }, second: func(s *segSpec) { s.ipOpts = routerAlert(0) }, merged: true},
		{name: "control exact fit", capacity: 2052, merged: true},
		{name: "sequence gap", second: func(s *segSpec) { s.seq++ }},
		{name: "retransmission", second: func(s *segSpec) { s.seq = 1000 }},
		{name: "other ack", second: func(s *segSpec) { s.ack++ }},
		{name: "other port", second: func(s *segSpec) { s.sport++ }},
		{name: "other address", second: func(s *segSpec) { s.src = "100.96.1.3" }},
		{name: "TOS", second: func(s *segSpec) { s.tos = 4 }},
		{name: "TTL", second: func(s *segSpec) { s.ttl = 63 }},
		{name: "DF", second: func(s *segSpec) { s.noDF = true }},
		{name: "IP options", first: func(s *segSpec) { s.ipOpts = routerAlert(0) }, second: func(s *segSpec) { s.ipOpts = routerAlert(1) }},
		{name: "IP options length", second: func(s *segSpec) { s.ipOpts = routerAlert(0) }},
		{name: "TCP options", second: func(s *segSpec) { s.tcpOpts = timestamps(2, 2) }},
		{name: "TCP options length", second: func(s *segSpec) { s.tcpOpts = nil }},
		{name: "PSH on the first", first: func(s *segSpec) { s.flags = tcpFlagACK | tcpFlagPSH }},
		{name: "SYN", second: func(s *segSpec) { s.flags = tcpFlagACK | tcpFlagSYN }},
		{name: "FIN", second: func(s *segSpec) { s.flags = tcpFlagACK | tcpFlagFIN }},
		{name: "RST", second: func(s *segSpec) { s.flags = tcpFlagACK | tcpFlagRST }},
		{name: "URG", second: func(s *segSpec) { s.flags = tcpFlagACK | 0x20 }},
		{name: "ECE", second: func(s *segSpec) { s.flags = tcpFlagACK | 0x40 }},
		{name: "CWR", second: func(s *segSpec) { s.flags = tcpFlagACK | tcpFlagCWR }},
		{name: "CWR on the first", first: func(s *segSpec) { s.flags = tcpFlagACK | tcpFlagCWR }},
		{name: "no ACK", second: func(s *segSpec) { s.flags = tcpFlagPSH }},
		{name: "larger payload", second: func(s *segSpec) { s.payload = pattern(1001, 0) }},
		{name: "empty payload", second: func(s *segSpec) { s.payload = nil }},
		{name: "empty first", first: func(s *segSpec) { s.payload = nil }, second: func(s *segSpec) { s.seq = 1000 }},
		{name: "over 65535", first: func(s *segSpec) { s.payload = pattern(40000, 0) }, second: func(s *segSpec) { s.seq = 41000; s.payload = pattern(30000, 0) }, capacity: 1 << 17},
		{name: "no capacity", capacity: 2051},
		{name: "IPv4 and IPv6", second: func(s *segSpec) { s.v6 = true }},
		{name: "traffic class", first: func(s *segSpec) { s.v6 = true }, second: func(s *segSpec) { s.v6 = true; s.tos = 4 }},
		{name: "flow label", first: func(s *segSpec) { s.v6 = true }, second: func(s *segSpec) { s.v6 = true; s.flow = 1 }},
		{name: "hop limit", first: func(s *segSpec) { s.v6 = true }, second: func(s *segSpec) { s.v6 = true; s.ttl = 1 }},
	}
	for _, tt := range tests {
		a, b := base, base
		if tt.first != nil {
			tt.first(&a)
		}
		b.seq = a.seq + uint32(len(a.payload))
		if tt.second != nil {
			tt.second(&b)
		}
		pkts := [][]byte{buildSeg(t, a), buildSeg(t, b)}
		bufs := groBatch(pkts, 65535)
		if tt.capacity != 0 {
			bufs[0] = append(make([]byte, 0, groOffset+tt.capacity), bufs[0]...)
		}
		var table GROTable
		toWrite := CoalesceTCP(bufs, groOffset, &table, nil)
		want := []int{0, 1}
		if tt.merged {
			want = want[:1]
		}
		if !slices.Equal(toWrite, want) {
			t.Errorf("%s: toWrite %v, want %v", tt.name, toWrite, want)
			continue
		}
		var segs [][]byte
		for _, i := range toWrite {
			_, s := kernelView(t, bufs[i], groOffset, true)
			segs = append(segs, s...)
		}
		if got, want := joinPayloads(segs...), joinPayloads(pkts...); !bytes.Equal(got, want) {
			t.Errorf("%s: the kernel would see other payloads", tt.name)
		}
	}
}

// TestCoalesceTCPOrder mixes flows and other packets and checks that every
// flow keeps its order and every packet gets the right header.
func TestCoalesceTCPOrder(t *testing.T) {
	t.Parallel()
	f1 := func(seq uint32, n int) segSpec { return segSpec{seq: seq, payload: pattern(n, int(seq))} }
	f2 := func(seq uint32, n int) segSpec {
		return segSpec{v6: true, sport: 1, seq: seq, payload: pattern(n, int(seq))}
	}
	icmp := buildSeg(t, segSpec{udp: true, payload: []byte("x")})
	icmp[9] = 1 // no longer UDP: some other protocol
	fixIPv4Checksum(icmp)
	frag := buildSeg(t, segSpec{sport: 9, payload: pattern(100, 0)})
	frag[6] |= 0x20
	fixIPv4Checksum(frag)

	pkts := [][]byte{
		buildSeg(t, f1(0, 1000)),                                     // 0: run A
		buildSeg(t, f2(0, 1200)),                                     // 1: run B
		buildSeg(t, f1(1000, 1000)),                                  // 2: into A
		buildSeg(t, segSpec{udp: true, payload: []byte("datagram")}), // 3: UDP, NEEDS_CSUM
		buildSeg(t, f1(2000, 0)),                                     // 4: pure ACK: ends A
		buildSeg(t, f1(2000, 1000)),                                  // 5: run C, after the ACK
		buildSeg(t, f2(1200, 1200)),                                  // 6: into B
		icmp,                                                         // 7: other protocol: zero header
		frag,                                                         // 8: fragment: zero header
		{0x60, 0, 0},                                                 // 9: garbage: zero header
		buildSeg(t, f1(3000, 1000)),                                  // 10: into C
		buildSeg(t, f2(2400, 1000)),                                  // 11: into B, short: ends B
		buildSeg(t, f2(3400, 1000)),                                  // 12: run D
	}
	bufs := groBatch(pkts, 65535)
	for i := range bufs { // stale headers must be overwritten
		for j := range groOffset {
			bufs[i][j] = 0xee
		}
	}
	var table GROTable
	toWrite := CoalesceTCP(bufs, groOffset, &table, make([]int, 0, len(bufs)))
	if want := []int{0, 1, 3, 4, 5, 7, 8, 9, 12}; !slices.Equal(toWrite, want) {
		t.Fatalf("toWrite %v, want %v", toWrite, want)
	}
	carried := map[int]int{0: 2, 1: 3, 3: 1, 4: 1, 5: 2, 7: 1, 8: 1, 9: 1, 12: 1}
	total := 0
	for i := range bufs {
		if got := table.Packets(i); got != carried[i] {
			t.Errorf("Packets(%d) = %d, want %d", i, got, carried[i])
		}
		total += table.Packets(i)
	}
	if total != len(bufs) || table.Packets(-1) != 0 || table.Packets(len(bufs)) != 0 {
		t.Errorf("Packets sum to %d, want %d", total, len(bufs))
	}

	wantHdr := map[int]VirtioNetHdr{
		0:  {Flags: VirtioNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1000, CsumStart: 20, CsumOffset: 16},
		1:  {Flags: VirtioNeedsCsum, GSOType: GSOTCPv6, HdrLen: 60, GSOSize: 1200, CsumStart: 40, CsumOffset: 16},
		3:  {Flags: VirtioNeedsCsum, HdrLen: 28, CsumStart: 20, CsumOffset: 6},
		4:  {Flags: VirtioNeedsCsum, HdrLen: 40, CsumStart: 20, CsumOffset: 16},
		5:  {Flags: VirtioNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1000, CsumStart: 20, CsumOffset: 16},
		12: {Flags: VirtioNeedsCsum, HdrLen: 60, CsumStart: 40, CsumOffset: 16},
	}
	flows := map[bool][][]byte{}
	for _, i := range toWrite {
		h, segs := kernelView(t, bufs[i], groOffset, true)
		if h != wantHdr[i] {
			t.Errorf("packet %d: header %+v, want %+v", i, h, wantHdr[i])
		}
		if h == (VirtioNetHdr{}) && !bytes.Equal(bufs[i][groOffset:], pkts[i]) {
			t.Errorf("packet %d with a zero header was modified", i)
		}
		for _, s := range segs {
			v6 := s[0]>>4 == 6
			if len(s) >= 40 && (v6 || s[9] == protoTCP) && s[6]&0x20 == 0 {
				flows[v6] = append(flows[v6], s)
			}
		}
	}
	for v6, segs := range flows {
		var next uint32
		for _, s := range segs {
			if seq, _ := tcpSeqFlags(s); seq != next {
				t.Errorf("v6=%v: seq %d, want %d: out of order", v6, seq, next)
			}
			next += uint32(len(l4Payload(s)))
		}
		if next != 4400 && next != 4000 {
			t.Errorf("v6=%v: flow ends at %d", v6, next)
		}
	}
}

// TestCoalesceTCPVerify corrupts one segment: with Verify it is neither
// merged nor marked NEEDS_CSUM, and nothing later in its flow passes it.
func TestCoalesceTCPVerify(t *testing.T) {
	t.Parallel()
	var pkts [][]byte
	for i := range 4 {
		pkts = append(pkts, buildSeg(t, segSpec{seq: uint32(i * 1000), payload: pattern(1000, i)}))
	}
	pkts = append(pkts, buildSeg(t, segSpec{udp: true, payload: []byte("good")}))
	pkts = append(pkts, buildSeg(t, segSpec{udp: true, payload: []byte("bad!")}))
	pkts[1][100] ^= 1
	pkts[5][30] ^= 1
	for _, verify := range []bool{false, true} {
		bufs := groBatch(pkts, 65535)
		table := GROTable{Verify: verify}
		toWrite := CoalesceTCP(bufs, groOffset, &table, nil)
		want := []int{0, 4, 5}
		if verify {
			want = []int{0, 1, 2, 4, 5}
		}
		if !slices.Equal(toWrite, want) {
			t.Errorf("verify=%v: toWrite %v, want %v", verify, toWrite, want)
			continue
		}
		if !verify {
			continue
		}
		for _, i := range []int{1, 5} {
			var h VirtioNetHdr
			h.Decode(bufs[i][groOffset-VirtioNetHdrLen:])
			if h != (VirtioNetHdr{}) || !bytes.Equal(bufs[i][groOffset:], pkts[i]) {
				t.Errorf("corrupt packet %d: header %+v, modified %v", i, h, !bytes.Equal(bufs[i][groOffset:], pkts[i]))
			}
		}
		if table.Packets(2) != 2 {
			t.Errorf("Packets(2) = %d, want 2 (segments after the corrupt one)", table.Packets(2))
		}
	}
}

// restorer undoes what CoalesceTCP does to a batch (lengthened buffers,
// rewritten headers), so that benchmarks and allocation tests can run it
// again on the same input without allocating.
type restorer struct {
	bufs  [][]byte
	lens  []int
	heads [][]byte
}

func newRestorer(bufs [][]byte) *restorer {
	r := &restorer{bufs: bufs}
	for _, b := range bufs {
		r.lens = append(r.lens, len(b))
		r.heads = append(r.heads, bytes.Clone(b[:min(len(b), groOffset+128)]))
	}
	return r
}

func (r *restorer) restore() {
	for i, h := range r.heads {
		r.bufs[i] = r.bufs[i][:r.lens[i]]
		copy(r.bufs[i], h)
	}
}

// segmentBatch returns n full-size segments of flows interleaved TCP
// flows, each flow in order.
func segmentBatch(tb testing.TB, n, flows int) ([][]byte, int) {
	var pkts [][]byte
	payload := 0
	for i := range n {
		s := segSpec{sport: uint16(1 + i%flows), seq: uint32(i/flows) * testMSS, tcpOpts: timestamps(1, 2), payload: pattern(testMSS, i)}
		pkts = append(pkts, buildSeg(tb, s))
		payload += testMSS
	}
	return pkts, payload
}

func TestCoalesceTCPAllocs(t *testing.T) {
	pkts, _ := segmentBatch(t, 128, 3)
	bufs := groBatch(pkts, 65535)
	batch := newRestorer(bufs)
	var table GROTable
	toWrite := make([]int, 0, len(bufs))
	allocs := testing.AllocsPerRun(100, func() {
		batch.restore()
		toWrite = CoalesceTCP(bufs, groOffset, &table, toWrite)
	})
	if allocs != 0 {
		t.Errorf("CoalesceTCP: %v allocations, want 0", allocs)
	}
	if len(toWrite) != 3 { // 43 segments of a flow fit in one super-packet
		t.Errorf("%d packets to write, want 3", len(toWrite))
	}
}

// BenchmarkCoalesceTCP coalesces batches of 128 MSS 1420 segments of one
// or several interleaved flows; bytes are payload bytes.
func BenchmarkCoalesceTCP(b *testing.B) {
	for _, flows := range []int{1, 8} {
		b.Run(map[int]string{1: "1flow", 8: "8flows"}[flows], func(b *testing.B) {
			pkts, payload := segmentBatch(b, 128, flows)
			bufs := groBatch(pkts, 65535)
			batch := newRestorer(bufs)
			var table GROTable
			toWrite := make([]int, 0, len(bufs))
			b.SetBytes(int64(payload))
			b.ReportAllocs()
			for b.Loop() {
				batch.restore()
				toWrite = CoalesceTCP(bufs, groOffset, &table, toWrite)
			}
		})
	}
}
