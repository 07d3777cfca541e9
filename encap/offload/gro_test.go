package offload

import (
	"bytes"
	"slices"
	"testing"

	"github.com/google/gopacket/layers"
	"github.com/overlayd/overlayd/encap/encaptest"
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

// kernelView decodes what Coalesce left in front of packet i and hands
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
	n, _, err := SplitGSO(pkt, h, out, sizes, 0, SplitOptions{})
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

// indices returns the Index of each packet Coalesce left to write.
func indices(written []Coalesced) []int {
	idx := make([]int, len(written))
	for k, w := range written {
		idx[k] = w.Index
	}
	return idx
}

// packets returns how many input packets bufs[i] carries by written: 0 if
// it was merged into another.
func packets(written []Coalesced, i int) int {
	for _, w := range written {
		if w.Index == i {
			return w.Packets
		}
	}
	return 0
}

// coalescePair coalesces a batch of two packets, the first one's buffer
// with room for capacity bytes of packet if not 0, and checks that the
// second was merged into the first, or not, as merged says. It returns the
// batch and the indices written, nil once it has reported that they are
// not those.
func coalescePair(t *testing.T, name string, pkts [][]byte, capacity int, table *GROTable, merged bool) (bufs [][]byte, toWrite []int) {
	t.Helper()
	bufs = groBatch(pkts, 65535)
	if capacity != 0 {
		bufs[0] = append(make([]byte, 0, groOffset+capacity), bufs[0]...)
	}
	toWrite = indices(Coalesce(bufs, groOffset, table, nil))
	want := []int{0, 1}
	if merged {
		want = want[:1]
	}
	if !slices.Equal(toWrite, want) {
		t.Errorf("%s: toWrite %v, want %v", name, toWrite, want)
		return bufs, nil
	}
	return bufs, toWrite
}

// coalesceRoundTrip cuts the super-packet super into segments and
// coalesces them back with table: they must come out as one packet,
// bufs[0], that carries them all. It returns the segments and the batch.
func coalesceRoundTrip(t *testing.T, h VirtioNetHdr, super []byte, table *GROTable) (segs, bufs [][]byte) {
	t.Helper()
	segs = splitAll(t, h, super)
	bufs = groBatch(segs, 65535)
	written := Coalesce(bufs, groOffset, table, nil)
	if toWrite := indices(written); !slices.Equal(toWrite, []int{0}) || packets(written, 0) != len(segs) {
		t.Fatalf("header %+v: toWrite %v, Packets(0) %d; want [0], %d", h, toWrite, packets(written, 0), len(segs))
	}
	return segs, bufs
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
		segs, bufs := coalesceRoundTrip(t, hIn, super, &GROTable{})
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
		mangle   func(first, second []byte) // after building
		capacity int                        // of the first packet's buffer; 0 for 65535
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
		{name: "control DF, IDs counting up", second: func(s *segSpec) { s.id = 1 }, merged: true},
		{name: "control no DF, IDs counting up", first: func(s *segSpec) { s.noDF = true; s.id = 0xffff }, second: func(s *segSpec) { s.noDF = true; s.id = 0 }, merged: true},
		{name: "no DF, same ID", first: func(s *segSpec) { s.noDF = true; s.id = 7 }, second: func(s *segSpec) { s.noDF = true; s.id = 7 }},
		{name: "no DF, ID skips", first: func(s *segSpec) { s.noDF = true }, second: func(s *segSpec) { s.noDF = true; s.id = 2 }},
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
		{name: "bad IPv4 header checksum", mangle: func(_, b []byte) { b[ipv4OffChecksum] ^= 1 }},
		{name: "bad IPv4 header checksum first", mangle: func(a, _ []byte) { a[ipv4OffChecksum] ^= 1 }},
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
		if tt.mangle != nil {
			tt.mangle(pkts[0], pkts[1])
		}
		bufs, toWrite := coalescePair(t, tt.name, pkts, tt.capacity, &GROTable{}, tt.merged)
		if toWrite == nil {
			continue
		}
		var segs [][]byte
		for _, i := range toWrite {
			_, s := kernelView(t, bufs[i], groOffset, tt.mangle == nil)
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
	encaptest.FixIPv4Checksum(icmp)
	frag := buildSeg(t, segSpec{sport: 9, payload: pattern(100, 0)})
	frag[6] |= 0x20
	encaptest.FixIPv4Checksum(frag)

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
	written := Coalesce(bufs, groOffset, &table, make([]Coalesced, 0, len(bufs)))
	toWrite := indices(written)
	if want := []int{0, 1, 3, 4, 5, 7, 8, 9, 12}; !slices.Equal(toWrite, want) {
		t.Fatalf("toWrite %v, want %v", toWrite, want)
	}
	carried := map[int]int{0: 2, 1: 3, 3: 1, 4: 1, 5: 2, 7: 1, 8: 1, 9: 1, 12: 1}
	total := 0
	for i := range bufs {
		if got := packets(written, i); got != carried[i] {
			t.Errorf("Packets(%d) = %d, want %d", i, got, carried[i])
		}
		total += packets(written, i)
	}
	if total != len(bufs) {
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
		written := Coalesce(bufs, groOffset, &table, nil)
		toWrite := indices(written)
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
		if packets(written, 2) != 2 {
			t.Errorf("Packets(2) = %d, want 2 (segments after the corrupt one)", packets(written, 2))
		}
	}
}

// restorer undoes what Coalesce does to a batch (lengthened buffers,
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

// coalesceFunc is Coalesce or CoalesceGather, with the room their buffers
// need for packet and payloads.
type coalesceFunc struct {
	name     string
	fn       func([][]byte, int, *GROTable, []Coalesced) []Coalesced
	capacity int
}

var coalesceFuncs = []coalesceFunc{{"Coalesce", Coalesce, maxIPPacket}, {"CoalesceGather", CoalesceGather, 0}}

func TestCoalesceTCPAllocs(t *testing.T) {
	for _, c := range coalesceFuncs {
		pkts, _ := segmentBatch(t, 128, 3)
		bufs := groBatch(pkts, c.capacity)
		batch := newRestorer(bufs)
		var table GROTable
		toWrite := make([]Coalesced, 0, len(bufs))
		allocs := testing.AllocsPerRun(100, func() {
			batch.restore()
			toWrite = c.fn(bufs, groOffset, &table, toWrite)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations, want 0", c.name, allocs)
		}
		if len(toWrite) != 3 { // 43 segments of a flow fit in one super-packet
			t.Errorf("%s: %d packets to write, want 3", c.name, len(toWrite))
		}
	}
}

// BenchmarkCoalesceTCP coalesces batches of 128 MSS 1420 segments of one
// or several interleaved flows; bytes are payload bytes.
func BenchmarkCoalesceTCP(b *testing.B) { benchCoalesceTCP(b, coalesceFuncs[0]) }

// BenchmarkCoalesceGatherTCP is BenchmarkCoalesceTCP without the copy.
func BenchmarkCoalesceGatherTCP(b *testing.B) { benchCoalesceTCP(b, coalesceFuncs[1]) }

func benchCoalesceTCP(b *testing.B, c coalesceFunc) {
	for _, flows := range []int{1, 8} {
		b.Run(map[int]string{1: "1flow", 8: "8flows"}[flows], func(b *testing.B) {
			pkts, payload := segmentBatch(b, 128, flows)
			bufs := groBatch(pkts, c.capacity)
			batch := newRestorer(bufs)
			var table GROTable
			toWrite := make([]Coalesced, 0, len(bufs))
			b.SetBytes(int64(payload))
			b.ReportAllocs()
			for b.Loop() {
				batch.restore()
				toWrite = c.fn(bufs, groOffset, &table, toWrite)
			}
		})
	}
}

// datagramsMatch reports whether the datagram got, as the kernel cuts it
// from a super-packet, is want byte for byte, checksums aside (the kernel
// completes them). With anyID, a DF datagram may also differ in its IPv4
// ID, which the kernel numbers up for a run of fixed IDs.
func datagramsMatch(got, want []byte, anyID bool) bool {
	if len(got) != len(want) || len(got) < 1 {
		return false
	}
	g, w := bytes.Clone(got), bytes.Clone(want)
	l4Off := ipv6HeaderLen
	if g[0]>>4 == 4 {
		l4Off = int(g[0]&0x0f) * 4
		clear(g[ipv4OffChecksum : ipv4OffChecksum+2])
		clear(w[ipv4OffChecksum : ipv4OffChecksum+2])
		if anyID && w[ipv4OffFlags]&ipv4FlagDF != 0 {
			clear(g[ipv4OffID : ipv4OffID+2])
			clear(w[ipv4OffID : ipv4OffID+2])
		}
	}
	if len(g) < l4Off+udpHeaderLen {
		return false
	}
	clear(g[l4Off+udpOffChecksum : l4Off+udpHeaderLen])
	clear(w[l4Off+udpOffChecksum : l4Off+udpHeaderLen])
	return bytes.Equal(g, w)
}

// udpFlow returns n datagrams of payload bytes each, and a last one of
// last bytes if last > 0, numbered as Linux sends them (IPv4 IDs counting
// up from s.id).
func udpFlow(tb testing.TB, s segSpec, n, payload, last int) [][]byte {
	s.udp = true
	var pkts [][]byte
	for i := range n + min(last, 1) {
		size := payload
		if i == n {
			size = last
		}
		s.payload = pattern(size, i)
		pkts = append(pkts, buildSeg(tb, s))
		s.id++
	}
	return pkts
}

// TestCoalesceUDPRoundTrip splits UDP super-packets into datagrams,
// coalesces them back and gets the very same super-packets, header
// included.
func TestCoalesceUDPRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		s       segSpec
		gsoSize int
	}{
		{segSpec{udp: true, id: 7, payload: pattern(8*64+30, 0)}, 64},
		{segSpec{udp: true, v6: true, flow: 0x12345, tos: 0x10, payload: pattern(5*1232, 1)}, 1232},
		{segSpec{udp: true, id: 0xfff0, noDF: true, payload: pattern(64*100, 2)}, 100}, // 64 datagrams; IDs wrap
		{segSpec{udp: true, payload: pattern(65535-28, 3)}, 1100},                      // 60 datagrams, 65535 bytes
	} {
		hIn, super := superPacket(t, tt.s, tt.gsoSize)
		dgrams, bufs := coalesceRoundTrip(t, hIn, super, &GROTable{UDP: true})
		if !bytes.Equal(bufs[0][groOffset:], super) {
			t.Fatalf("v6=%v: coalesced packet differs from the super-packet", tt.s.v6)
		}
		h, again := kernelView(t, bufs[0], groOffset, true)
		want := hIn
		want.HdrLen = want.CsumStart + udpHeaderLen
		if h != want {
			t.Errorf("header %+v, want %+v", h, want)
		}
		for i := range again {
			if !bytes.Equal(again[i], dgrams[i]) {
				t.Fatalf("v6=%v: datagram %d differs after the round trip", tt.s.v6, i)
			}
		}
	}
}

// TestCoalesceUDPRefuses checks each reason not to merge the second of two
// datagrams into the first, and that merged ones come back out of the
// kernel as they went in.
func TestCoalesceUDPRefuses(t *testing.T) {
	t.Parallel()
	routerAlert := []layers.IPv4Option{{OptionType: 0x94, OptionLength: 4, OptionData: []byte{0, 0}}}
	noChecksum := func(p []byte) { clear(p[ipv4MinHeaderLen+udpOffChecksum:][:2]) }
	v6 := func(s *segSpec) { s.v6 = true }
	base := segSpec{udp: true, id: 100, payload: pattern(64, 0)}
	tests := []struct {
		name     string
		first    func(*segSpec)
		second   func(*segSpec) // after its ID was set to the first's + 1
		mangle   func(first, second []byte)
		capacity int // of the first packet's buffer; 0 for 65535
		noUDP    bool
		merged   bool
	}{
		{name: "control", merged: true},
		{name: "control IPv6", first: v6, second: v6, merged: true},
		{name: "control short last", second: func(s *segSpec) { s.payload = s.payload[:1] }, merged: true},
		{name: "control ID wraps", first: func(s *segSpec) { s.id = 0xffff }, merged: true},
		{name: "control fixed ID with DF", second: func(s *segSpec) { s.id-- }, merged: true},
		{name: "control no DF", first: func(s *segSpec) { s.noDF = true }, second: func(s *segSpec) { s.noDF = true }, merged: true},
		{name: "control exact fit", capacity: 28 + 2*64, merged: true},
		{name: "UDP off", noUDP: true},
		{name: "other source port", second: func(s *segSpec) { s.sport++ }},
		{name: "other destination port", second: func(s *segSpec) { s.dport++ }},
		{name: "other source address", second: func(s *segSpec) { s.src = "100.96.1.3" }},
		{name: "other destination address", second: func(s *segSpec) { s.dst = "100.96.2.3" }},
		{name: "TCP on the same ports", second: func(s *segSpec) { s.udp = false }},
		{name: "TCP first", first: func(s *segSpec) { s.udp = false }},
		{name: "TOS", second: func(s *segSpec) { s.tos = 4 }},
		{name: "TTL", second: func(s *segSpec) { s.ttl = 63 }},
		{name: "DF", second: func(s *segSpec) { s.noDF = true }},
		{name: "IP options", first: func(s *segSpec) { s.ipOpts = routerAlert }, second: func(s *segSpec) { s.ipOpts = routerAlert }},
		{name: "IP options length", second: func(s *segSpec) { s.ipOpts = routerAlert }},
		{name: "ID gap", second: func(s *segSpec) { s.id++ }},
		{name: "ID backwards", second: func(s *segSpec) { s.id -= 2 }},
		{name: "fixed ID without DF", first: func(s *segSpec) { s.noDF = true }, second: func(s *segSpec) { s.noDF = true; s.id-- }},
		{name: "larger payload", second: func(s *segSpec) { s.payload = pattern(65, 0) }},
		{name: "empty payload", second: func(s *segSpec) { s.payload = nil }},
		{name: "empty first", first: func(s *segSpec) { s.payload = nil }},
		{name: "no checksum", mangle: func(_, b []byte) { noChecksum(b) }},
		{name: "no checksum first", mangle: func(a, _ []byte) { noChecksum(a) }},
		{name: "bad IPv4 header checksum", mangle: func(_, b []byte) { b[ipv4OffChecksum] ^= 1 }},
		{name: "bad IPv4 header checksum first", mangle: func(a, _ []byte) { a[ipv4OffChecksum] ^= 1 }},
		{name: "fragment", mangle: func(_, b []byte) { b[ipv4OffFlags] |= ipv4FlagMF; encaptest.FixIPv4Checksum(b) }},
		{name: "over 65535", first: func(s *segSpec) { s.payload = pattern(40000, 0) }, second: func(s *segSpec) { s.payload = pattern(30000, 0) }, capacity: 1 << 17},
		{name: "no capacity", capacity: 28 + 2*64 - 1},
		{name: "IPv4 and IPv6", second: v6},
		{name: "traffic class", first: v6, second: func(s *segSpec) { s.v6 = true; s.tos = 4 }},
		{name: "flow label", first: v6, second: func(s *segSpec) { s.v6 = true; s.flow = 1 }},
		{name: "hop limit", first: v6, second: func(s *segSpec) { s.v6 = true; s.ttl = 1 }},
	}
	for _, tt := range tests {
		a, b := base, base
		if tt.first != nil {
			tt.first(&a)
		}
		b.id = a.id + 1
		b.payload = pattern(len(b.payload), 1)
		if tt.second != nil {
			tt.second(&b)
		}
		pkts := [][]byte{buildSeg(t, a), buildSeg(t, b)}
		if tt.mangle != nil {
			tt.mangle(pkts[0], pkts[1])
		}
		bufs, toWrite := coalescePair(t, tt.name, pkts, tt.capacity, &GROTable{UDP: !tt.noUDP}, tt.merged)
		if toWrite == nil {
			continue
		}
		var out [][]byte
		for _, i := range toWrite {
			h, s := kernelView(t, bufs[i], groOffset, tt.mangle == nil)
			if tt.merged && (h.GSOType != GSOUDPL4 || h.GSOSize != uint16(len(a.payload))) {
				t.Errorf("%s: header %+v", tt.name, h)
			}
			out = append(out, s...)
		}
		for i := range out {
			if !datagramsMatch(out[i], pkts[i], true) {
				t.Errorf("%s: packet %d differs after the kernel", tt.name, i)
			}
		}
	}
}

// TestCoalesceUDPSegmentLimit sends more datagrams of one flow than the
// kernel takes in one super-packet.
func TestCoalesceUDPSegmentLimit(t *testing.T) {
	t.Parallel()
	pkts := udpFlow(t, segSpec{}, 130, 16, 0)
	bufs := groBatch(pkts, 65535)
	table := GROTable{UDP: true}
	written := Coalesce(bufs, groOffset, &table, nil)
	toWrite := indices(written)
	if want := []int{0, 64, 128}; !slices.Equal(toWrite, want) {
		t.Fatalf("toWrite %v, want %v", toWrite, want)
	}
	var out [][]byte
	for _, i := range toWrite {
		_, s := kernelView(t, bufs[i], groOffset, true)
		out = append(out, s...)
	}
	if len(out) != len(pkts) {
		t.Fatalf("%d datagrams after the kernel, want %d", len(out), len(pkts))
	}
	for i := range out {
		if !bytes.Equal(out[i], pkts[i]) {
			t.Fatalf("datagram %d differs", i)
		}
	}
}

// TestCoalesceUDPOrder interleaves UDP flows with each other, with a TCP
// flow on the same addresses and ports, and with other packets: each flow
// comes out of the kernel whole and in order.
func TestCoalesceUDPOrder(t *testing.T) {
	t.Parallel()
	a := udpFlow(t, segSpec{id: 1}, 4, 100, 0)
	b := udpFlow(t, segSpec{v6: true, sport: 1}, 3, 200, 50)
	c := udpFlow(t, segSpec{id: 9, sport: 2}, 2, 100, 0)
	tcp := func(seq uint32) []byte { return buildSeg(t, segSpec{seq: seq, payload: pattern(100, int(seq))}) }
	icmp := buildSeg(t, segSpec{udp: true, payload: []byte("x")})
	icmp[ipv4OffProto] = 1
	encaptest.FixIPv4Checksum(icmp)

	pkts := [][]byte{
		a[0],     // 0: run A
		b[0],     // 1: run B
		tcp(0),   // 2: TCP run, same ports as A
		a[1],     // 3: into A
		icmp,     // 4: zero header
		b[1],     // 5: into B
		tcp(100), // 6: into the TCP run
		a[2],     // 7: into A
		b[2],     // 8: into B
		c[1],     // 9: run C, starts with its second datagram
		b[3],     // 10: into B, short: ends B
		c[0],     // 11: ID goes back: run C'
		a[3],     // 12: into A
	}
	bufs := groBatch(pkts, 65535)
	table := GROTable{UDP: true}
	written := Coalesce(bufs, groOffset, &table, nil)
	toWrite := indices(written)
	if want := []int{0, 1, 2, 4, 9, 11}; !slices.Equal(toWrite, want) {
		t.Fatalf("toWrite %v, want %v", toWrite, want)
	}
	carried := map[int]int{0: 4, 1: 4, 2: 2, 4: 1, 9: 1, 11: 1}
	for i := range bufs {
		if got := packets(written, i); got != carried[i] {
			t.Errorf("Packets(%d) = %d, want %d", i, got, carried[i])
		}
	}
	wantHdr := map[int]VirtioNetHdr{
		0:  {Flags: VirtioNeedsCsum, GSOType: GSOUDPL4, HdrLen: 28, GSOSize: 100, CsumStart: 20, CsumOffset: 6},
		1:  {Flags: VirtioNeedsCsum, GSOType: GSOUDPL4, HdrLen: 48, GSOSize: 200, CsumStart: 40, CsumOffset: 6},
		2:  {Flags: VirtioNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 100, CsumStart: 20, CsumOffset: 16},
		9:  {Flags: VirtioNeedsCsum, HdrLen: 28, CsumStart: 20, CsumOffset: 6},
		11: {Flags: VirtioNeedsCsum, HdrLen: 28, CsumStart: 20, CsumOffset: 6},
	}
	var out [][]byte
	for _, i := range toWrite {
		h, s := kernelView(t, bufs[i], groOffset, true)
		if h != wantHdr[i] {
			t.Errorf("packet %d: header %+v, want %+v", i, h, wantHdr[i])
		}
		out = append(out, s...)
	}
	for name, flow := range map[string][][]byte{"A": a, "B": b, "C": {c[1], c[0]}} {
		var got [][]byte
		for _, s := range out {
			if slices.ContainsFunc(flow, func(p []byte) bool { return datagramsMatch(s, p, false) }) {
				got = append(got, s)
			}
		}
		if len(got) != len(flow) {
			t.Fatalf("flow %s: %d datagrams out, want %d", name, len(got), len(flow))
		}
		for i := range got {
			if !datagramsMatch(got[i], flow[i], false) {
				t.Errorf("flow %s: datagram %d out of order", name, i)
			}
		}
	}
}

// TestCoalesceUDPVerify corrupts one datagram: with Verify it is neither
// merged nor marked NEEDS_CSUM, and nothing later in its flow passes it.
func TestCoalesceUDPVerify(t *testing.T) {
	t.Parallel()
	pkts := udpFlow(t, segSpec{}, 5, 64, 0)
	pkts[2][40] ^= 1
	for _, verify := range []bool{false, true} {
		bufs := groBatch(pkts, 65535)
		table := GROTable{UDP: true, Verify: verify}
		written := Coalesce(bufs, groOffset, &table, nil)
		toWrite := indices(written)
		want, carried := []int{0}, []int{5, 0, 0, 0, 0}
		if verify {
			want, carried = []int{0, 2, 3}, []int{2, 0, 1, 2, 0}
		}
		if !slices.Equal(toWrite, want) {
			t.Errorf("verify=%v: toWrite %v, want %v", verify, toWrite, want)
			continue
		}
		for i, c := range carried {
			if packets(written, i) != c {
				t.Errorf("verify=%v: Packets(%d) = %d, want %d", verify, i, packets(written, i), c)
			}
		}
		if verify {
			var h VirtioNetHdr
			h.Decode(bufs[2][groOffset-VirtioNetHdrLen:])
			if h != (VirtioNetHdr{}) || !bytes.Equal(bufs[2][groOffset:], pkts[2]) {
				t.Errorf("corrupt datagram: header %+v, modified %v", h, !bytes.Equal(bufs[2][groOffset:], pkts[2]))
			}
		}
	}
}

// goldenUSO is a UDP/IPv4 super-packet read from a real TUN with offloads
// (see the file's comments), virtio-net header first.
const goldenUSO = "testdata/uso_udp4_kernel.hex"

// TestGoldenKernelUSO splits what the kernel handed over into datagrams and
// coalesces them back into exactly what the kernel made: the kernel takes
// what Coalesce writes as it takes its own.
func TestGoldenKernelUSO(t *testing.T) {
	t.Parallel()
	raw := encaptest.LoadHex(t, goldenUSO)
	var h VirtioNetHdr
	if err := h.Decode(raw); err != nil {
		t.Fatal(err)
	}
	want := VirtioNetHdr{Flags: VirtioNeedsCsum, GSOType: GSOUDPL4, HdrLen: 28, GSOSize: 64, CsumStart: 20, CsumOffset: 6}
	if h != want {
		t.Fatalf("header %+v, want %+v", h, want)
	}
	super := raw[VirtioNetHdrLen:]
	out, sizes := newBufs(16, 1472)
	n, _, err := SplitGSO(super, h, out, sizes, 0, SplitOptions{})
	if err != nil || n != 9 {
		t.Fatalf("SplitGSO = %d, %v, want 9 datagrams", n, err)
	}
	dgrams := make([][]byte, n)
	firstID := be16(super[ipv4OffID:])
	for i := range n {
		dgrams[i] = out[i][:sizes[i]]
		p := checkWirePacket(t, dgrams[i])
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		udp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		size := min(64, len(super)-28-64*i)
		if ip.Id != firstID+uint16(i) || int(udp.Length) != 8+size || !bytes.Equal(udp.Payload, super[28+64*i:][:size]) {
			t.Errorf("datagram %d: IP ID %d, UDP length %d, or payload differs", i, ip.Id, udp.Length)
		}
	}

	bufs := groBatch(dgrams, 65535)
	table := GROTable{UDP: true}
	if written := Coalesce(bufs, groOffset, &table, nil); len(written) != 1 {
		t.Fatalf("coalesced into %d packets, want 1", len(written))
	}
	if !bytes.Equal(bufs[0][groOffset-VirtioNetHdrLen:], raw) {
		t.Error("coalesced packet and header differ from the kernel's")
	}
}

// datagramBatch returns n datagrams of size payload bytes of flows
// interleaved UDP flows, each flow in order, as iperf3 -u -l 64 sends
// with several streams.
func datagramBatch(tb testing.TB, n, flows, size int) [][]byte {
	var pkts [][]byte
	for i := range n {
		s := segSpec{udp: true, sport: uint16(1 + i%flows), id: uint16(i / flows), payload: pattern(size, i)}
		pkts = append(pkts, buildSeg(tb, s))
	}
	return pkts
}

func TestCoalesceUDPAllocs(t *testing.T) {
	bufs := groBatch(datagramBatch(t, 128, 3, 64), 65535)
	batch := newRestorer(bufs)
	table := GROTable{UDP: true}
	toWrite := make([]Coalesced, 0, len(bufs))
	allocs := testing.AllocsPerRun(100, func() {
		batch.restore()
		toWrite = Coalesce(bufs, groOffset, &table, toWrite)
	})
	if allocs != 0 {
		t.Errorf("Coalesce: %v allocations, want 0", allocs)
	}
	if len(toWrite) != 3 { // 43 datagrams per flow
		t.Errorf("%d packets to write, want 3", len(toWrite))
	}
}

// BenchmarkCoalesceUDP coalesces batches of 128 datagrams of 64 bytes of
// one or several interleaved flows, with UDP merging on and off (every
// datagram then only gets its header); bytes are payload bytes.
func BenchmarkCoalesceUDP(b *testing.B) {
	for _, bc := range []struct {
		name  string
		flows int
		udp   bool
	}{{"1flow", 1, true}, {"8flows", 8, true}, {"off", 1, false}} {
		b.Run(bc.name, func(b *testing.B) {
			const n, size = 128, 64
			bufs := groBatch(datagramBatch(b, n, bc.flows, size), 65535)
			batch := newRestorer(bufs)
			table := GROTable{UDP: bc.udp}
			toWrite := make([]Coalesced, 0, len(bufs))
			b.SetBytes(n * size)
			b.ReportAllocs()
			for b.Loop() {
				batch.restore()
				toWrite = Coalesce(bufs, groOffset, &table, toWrite)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/datagram")
			b.ReportMetric(float64(len(toWrite)), "writes/batch")
		})
	}
}
