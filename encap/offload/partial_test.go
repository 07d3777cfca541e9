package offload

import (
	"bytes"
	"testing"

	"github.com/google/gopacket/layers"
	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/encap/encaptest"
)

// partialCopy returns pkt, a valid packet, with its TCP or UDP checksum
// made partial as the kernel leaves it: the pseudo-header sum.
func partialCopy(tb testing.TB, pkt []byte) []byte {
	tb.Helper()
	p := bytes.Clone(pkt)
	l4Off, csumOff, ok := transportChecksum(p)
	if !ok {
		tb.Fatalf("no transport checksum in %x", p[:min(len(p), 64)])
	}
	proto := p[ipv4OffProto]
	if p[0]>>4 == 6 {
		_, proto = ipv6Transport(p)
	}
	setPartialChecksum(p, p[0]>>4 == 6, proto, l4Off, csumOff)
	return p
}

// TestCompleteChecksum completes the checksums of packets that gopacket
// built, after making them partial: it must write what gopacket wrote.
func TestCompleteChecksum(t *testing.T) {
	t.Parallel()
	h, v6 := superPacket(t, segSpec{v6: true, payload: pattern(900, 0)}, 1)
	_, v6opts := withIPv6Ext(h, v6, 0)
	_, v6udpOpts := withIPv6Ext(h, buildSeg(t, segSpec{v6: true, udp: true, payload: pattern(33, 1)}), 60)
	for _, tt := range []struct {
		name string
		pkt  []byte
	}{
		{"tcp4", buildSeg(t, segSpec{tcpOpts: timestamps(1, 2), payload: pattern(1420, 0)})},
		{"tcp4 odd", buildSeg(t, segSpec{payload: pattern(1, 0)})},
		{"tcp4 empty", buildSeg(t, segSpec{flags: tcpFlagSYN})},
		{"tcp4 ip options", buildSeg(t, segSpec{ipOpts: routerAlert(), payload: pattern(77, 5)})},
		{"udp4", buildSeg(t, segSpec{udp: true, payload: pattern(1443, 2)})},
		{"udp4 empty", buildSeg(t, segSpec{udp: true})},
		{"tcp6", buildSeg(t, segSpec{v6: true, payload: pattern(1400, 3)})},
		{"udp6", buildSeg(t, segSpec{v6: true, udp: true, payload: pattern(999, 4)})},
		{"tcp6 hop-by-hop", fixV6Checksum(t, v6opts)},
		{"udp6 destination options", fixV6Checksum(t, v6udpOpts)},
	} {
		checkWirePacket(t, tt.pkt)
		p := partialCopy(t, tt.pkt)
		if err := CompleteChecksum(p); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !bytes.Equal(p, tt.pkt) {
			t.Errorf("%s: completed\n%x\nwant\n%x", tt.name, p, tt.pkt)
		}
	}
}

// routerAlert is an IPv4 option that routers pass on: 4 more header bytes.
func routerAlert() []layers.IPv4Option {
	return []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
}

// fixV6Checksum recomputes the transport checksum of an IPv6 packet whose
// extension headers withIPv6Ext inserted.
func fixV6Checksum(tb testing.TB, pkt []byte) []byte {
	tb.Helper()
	p := partialCopy(tb, pkt)
	l4Off, csumOff, _ := transportChecksum(p)
	finishChecksum(p[l4Off+csumOff:], encap.Checksum(p[l4Off:], 0))
	return p
}

// TestCompleteChecksumZero writes a UDP checksum that comes out 0 as
// 0xffff: 0 on the wire means "no checksum".
func TestCompleteChecksumZero(t *testing.T) {
	t.Parallel()
	zero := buildSeg(t, segSpec{udp: true, payload: []byte{0, 0}})
	zero[26], zero[27] = 0, 0
	pseudo := append(append([]byte(nil), zero[12:20]...), 0, protoUDP, 0, 10)
	word := ^encaptest.NaiveChecksum(append(pseudo, zero[20:]...), 0)
	pkt := buildSeg(t, segSpec{udp: true, payload: []byte{byte(word >> 8), byte(word)}})
	p := partialCopy(t, pkt)
	if err := CompleteChecksum(p); err != nil {
		t.Fatal(err)
	}
	if got := be16(p[26:]); got != 0xffff {
		t.Errorf("checksum %#04x, want 0xffff", got)
	}
	checkWirePacket(t, p)
}

func TestCompleteChecksumErrors(t *testing.T) {
	t.Parallel()
	tcp4 := buildSeg(t, segSpec{payload: pattern(100, 0)})
	udp6 := buildSeg(t, segSpec{v6: true, udp: true, payload: pattern(100, 0)})
	frag := bytes.Clone(tcp4)
	frag[6] |= 0x20 // MF
	late := bytes.Clone(tcp4)
	late[7] = 1 // fragment offset 8
	icmp := bytes.Clone(tcp4)
	icmp[9] = 1
	shortIHL := bytes.Clone(tcp4)
	shortIHL[0] = 0x44
	h, v6 := superPacket(t, segSpec{v6: true, payload: pattern(100, 0)}, 1)
	_, routing := withIPv6Ext(h, v6, 43)
	_, v6frag := withIPv6Ext(h, v6, 44)
	for _, tt := range []struct {
		name string
		pkt  []byte
	}{
		{"empty", nil},
		{"not IP", make([]byte, 60)},
		{"short IPv4 header", tcp4[:19]},
		{"IHL below 5", shortIHL},
		{"short TCP header", tcp4[:39]},
		{"short UDP header", udp6[:47]},
		{"IPv4 fragment", frag},
		{"later IPv4 fragment", late},
		{"ICMP", icmp},
		{"IPv6 routing header", routing},
		{"IPv6 fragment", v6frag},
		{"IPv6 options past the end", v6opt(udp6[:48], 0, 200)},
	} {
		orig := bytes.Clone(tt.pkt)
		if err := CompleteChecksum(tt.pkt); err != ErrNoTransportChecksum {
			t.Errorf("%s: %v, want ErrNoTransportChecksum", tt.name, err)
		}
		if !bytes.Equal(tt.pkt, orig) {
			t.Errorf("%s: packet changed", tt.name)
		}
	}
}

// v6opt rewrites an IPv6 packet to claim an extension header of type ext
// right behind its fixed header, of (words+1)*8 bytes.
func v6opt(pkt []byte, ext byte, words byte) []byte {
	p := bytes.Clone(pkt)
	p[40], p[41] = p[6], words
	p[6] = ext
	return p
}

// partialSplit splits h and pkt with partial checksums and with complete
// ones, checks that completing the first gives the second, and returns
// the first.
func partialSplit(t *testing.T, h VirtioNetHdr, pkt []byte, wantPartial bool) [][]byte {
	t.Helper()
	const offset = 5
	n := max(1, len(pkt)/max(1, int(h.GSOSize))+1)
	out, sizes := newBufs(n, offset+1500)
	np, partial, err := SplitGSO(pkt, h, out, sizes, offset, SplitOptions{PartialChecksums: true})
	if err != nil || partial != wantPartial {
		t.Fatalf("SplitGSO partial = %d, %v, %v; want partial %v", np, partial, err, wantPartial)
	}
	want := splitAll(t, h, pkt)
	if np != len(want) {
		t.Fatalf("%d packets with partial checksums, %d complete", np, len(want))
	}
	segs := make([][]byte, np)
	for i := range np {
		segs[i] = bytes.Clone(out[i][offset : offset+sizes[i]])
		if !partial {
			if !bytes.Equal(segs[i], want[i]) {
				t.Fatalf("packet %d, reported complete, differs from SplitGSO's", i)
			}
			continue
		}
		// The field holds the pseudo-header sum over this segment's own
		// length, as the kernel would have put there.
		if exp := partialCopy(t, want[i]); !bytes.Equal(segs[i], exp) {
			t.Fatalf("segment %d is not the complete one with the kernel's partial checksum", i)
		}
		completed := bytes.Clone(segs[i])
		if err := CompleteChecksum(completed); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(completed, want[i]) {
			t.Fatalf("segment %d completed differs from SplitGSO's", i)
		}
	}
	return segs
}

func TestSplitGSOPartial(t *testing.T) {
	t.Parallel()
	for _, s := range []segSpec{
		{seq: 0xfffff000, id: 0xfffe, tcpOpts: timestamps(1, 2), flags: tcpFlagACK | tcpFlagPSH, payload: pattern(65535-52, 0)},
		{v6: true, payload: pattern(30001, 1)},
		{udp: true, payload: pattern(10000, 2)},
		{v6: true, udp: true, payload: pattern(4321, 3)},
		{ipOpts: routerAlert(), payload: pattern(5000, 4)},
	} {
		h, pkt := superPacket(t, s, testMSS)
		partialSplit(t, h, pkt, true)

		// A single packet the kernel left partial stays so.
		single := s
		single.payload = s.payload[:1000]
		sp := partialCopy(t, buildSeg(t, single))
		hs := VirtioNetHdr{Flags: VirtioNeedsCsum, CsumStart: h.CsumStart, CsumOffset: h.CsumOffset}
		if segs := partialSplit(t, hs, sp, true); !bytes.Equal(segs[0], sp) {
			t.Error("a single partial packet changed")
		}
	}
	h, pkt := superPacket(t, segSpec{v6: true, udp: true, payload: pattern(5000, 0)}, 1000)
	for _, ext := range []byte{0, 60} {
		he, pe := withIPv6Ext(h, pkt, ext)
		partialSplit(t, he, pe, true)
	}

	// A checksum the kernel left partial deeper in the packet (a tunnel's
	// inner header) is completed: CompleteChecksum would not find it.
	inner := buildSeg(t, segSpec{src: "10.0.0.1", dst: "10.0.0.2", payload: pattern(300, 0)})
	outer := buildSeg(t, segSpec{udp: true, payload: append(make([]byte, 8), inner...)})
	ih := VirtioNetHdr{Flags: VirtioNeedsCsum, CsumStart: 28 + 8 + 20, CsumOffset: tcpOffChecksum}
	setPartialChecksum(outer[28+8:], false, protoTCP, 20, tcpOffChecksum)
	out, sizes := newBufs(1, 1500)
	if n, partial, err := SplitGSO(outer, ih, out, sizes, 0, SplitOptions{PartialChecksums: true}); n != 1 || partial || err != nil {
		t.Fatalf("tunnel packet: SplitGSO = %d, %v, %v; want 1 complete packet", n, partial, err)
	}
	checkWirePacket(t, out[0][:sizes[0]])
	checkWirePacket(t, out[0][28+8:sizes[0]])

	// Nothing to do: copied as is, complete.
	plain := buildSeg(t, segSpec{payload: []byte("plain")})
	partialSplit(t, VirtioNetHdr{}, plain, false)
}

// TestSplitGSOHeadPartial: the parts SplitGSOHead hands over are partial
// too, and complete to what SplitGSO makes.
func TestSplitGSOHeadPartial(t *testing.T) {
	t.Parallel()
	h, pkt := superPacket(t, segSpec{seq: 7, tcpOpts: timestamps(1, 2), payload: pattern(20000, 0)}, 1000)
	want := splitAll(t, h, bytes.Clone(pkt))
	var got [][]byte
	for rest := pkt; rest != nil; {
		out, sizes := newBufs(3, 1500)
		n, r, partial, err := SplitGSOHead(rest, &h, out, sizes, 0, SplitOptions{PartialChecksums: true})
		if err != nil || n == 0 || !partial {
			t.Fatalf("SplitGSOHead = %d, %v, %v", n, partial, err)
		}
		for i := range n {
			seg := out[i][:sizes[i]]
			if err := CompleteChecksum(seg); err != nil {
				t.Fatal(err)
			}
			got = append(got, seg)
		}
		rest = r
	}
	if len(got) != len(want) {
		t.Fatalf("%d segments, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("segment %d differs", i)
		}
	}
}

// TestCoalesceTakesPartialChecksums pins down what makes partial checksums
// safe to send to an overlayd peer: its TUN's Write (Coalesce) marks every
// TCP and UDP packet VirtioNeedsCsum with the checksum field rewritten, so
// the partial checksum it came with is never looked at, and the kernel
// completes a right one. With Verify it does look, and would hand the
// packets over unmarked, for the kernel to drop: such a host must not
// take partial checksums.
func TestCoalesceTakesPartialChecksums(t *testing.T) {
	t.Parallel()
	for _, s := range []segSpec{
		{tcpOpts: timestamps(1, 2), payload: pattern(20000, 0)},
		{v6: true, payload: pattern(20000, 1)},
		{udp: true, payload: pattern(5000, 2)},
	} {
		h, pkt := superPacket(t, s, 1000)
		out, sizes := newBufs(32, 1500)
		n, _, err := SplitGSO(pkt, h, out, sizes, 0, SplitOptions{PartialChecksums: true})
		if err != nil {
			t.Fatal(err)
		}
		segs := make([][]byte, n)
		for i := range n {
			segs[i] = out[i][:sizes[i]]
		}
		for _, verify := range []bool{false, true} {
			for _, udp := range []bool{false, true} {
				bufs := groBatch(segs, 65535)
				table := GROTable{Verify: verify, UDP: udp}
				for _, w := range Coalesce(bufs, groOffset, &table, nil) {
					i := w.Index
					var wh VirtioNetHdr
					if err := wh.Decode(bufs[i][groOffset-VirtioNetHdrLen:]); err != nil {
						t.Fatal(err)
					}
					marked := wh.Flags&VirtioNeedsCsum != 0
					if marked == verify {
						t.Fatalf("%+v verify=%v: written with header %+v", s, verify, wh)
					}
					if verify {
						continue
					}
					// What the kernel does with it: split as needed, and
					// complete from the checksum field.
					for _, seg := range splitAll(t, wh, bufs[i][groOffset:]) {
						checkWirePacket(t, seg)
					}
				}
			}
		}
	}
}

func TestPartialAllocs(t *testing.T) {
	h, pkt := superPacket(t, segSpec{tcpOpts: timestamps(1, 2), payload: pattern(65535-52, 0)}, testMSS)
	out, sizes := newBufs(64, 1600)
	opts := SplitOptions{PartialChecksums: true}
	var n int
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if n, _, err = SplitGSO(pkt, h, out, sizes, 64, opts); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("SplitGSO with partial checksums: %v allocations, want 0", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() {
		for i := range n {
			if err := CompleteChecksum(out[i][64 : 64+sizes[i]]); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("CompleteChecksum: %v allocations, want 0", allocs)
	}
}

// BenchmarkSplitGSOPartial is BenchmarkSplitGSO's tcp4 case with partial
// checksums, then completed: what a capable receiver saves, and what a
// legacy one costs.
func BenchmarkSplitGSOPartial(b *testing.B) {
	h, pkt := superPacket(b, segSpec{tcpOpts: timestamps(1, 2), payload: pattern(65535-52, 0)}, testMSS)
	out, sizes := newBufs(128, 64+1500)
	opts := SplitOptions{PartialChecksums: true}
	for _, complete := range []bool{false, true} {
		b.Run(map[bool]string{false: "partial", true: "completed"}[complete], func(b *testing.B) {
			b.SetBytes(int64(len(pkt) - 52))
			b.ReportAllocs()
			for b.Loop() {
				n, _, err := SplitGSO(pkt, h, out, sizes, 64, opts)
				if err != nil {
					b.Fatal(err)
				}
				for i := range n {
					if complete {
						CompleteChecksum(out[i][64 : 64+sizes[i]])
					}
				}
			}
		})
	}
}

// FuzzCompleteChecksum takes what FuzzSplitGSO takes (byte 0 the number of
// buffers, then a virtio-net header and a packet). Splitting with partial
// checksums and completing each packet reported partial must give what
// splitting with complete checksums gives; and CompleteChecksum on the
// raw packet either fails and leaves it alone, or changes its checksum
// field only.
func FuzzCompleteChecksum(f *testing.F) {
	for _, s := range splitSeeds(f) {
		f.Add(s)
	}
	f.Add(splitSeed(1, VirtioNetHdr{}, buildSeg(f, segSpec{v6: true, udp: true, payload: []byte("v6")})))
	f.Fuzz(func(t *testing.T, data []byte) {
		nbufs, h, pkt, ok := splitInput(data)
		if !ok {
			return
		}
		checkCompleteChecksum(t, pkt)

		nbufs = min(nbufs, 64)
		complete, csizes := newBufs(nbufs, 2000)
		partial, psizes := newBufs(nbufs, 2000)
		n, _, err := SplitGSO(pkt, h, complete, csizes, 0, SplitOptions{})
		np, isPartial, perr := SplitGSO(pkt, h, partial, psizes, 0, SplitOptions{PartialChecksums: true})
		if n != np || err != perr {
			t.Fatalf("complete split %d, %v; partial split %d, %v", n, err, np, perr)
		}
		if err != nil {
			if isPartial {
				t.Fatal("partial reported with an error")
			}
			return
		}
		if isPartial && h.Flags&VirtioNeedsCsum == 0 {
			t.Fatal("partial checksums of a packet the kernel left none to do")
		}
		for i := range n {
			seg := partial[i][:psizes[i]]
			if isPartial {
				if err := CompleteChecksum(seg); err != nil {
					t.Fatalf("packet %d reported partial: %v", i, err)
				}
			}
			if !bytes.Equal(seg, complete[i][:csizes[i]]) {
				t.Fatalf("packet %d (partial %v) differs from the complete split", i, isPartial)
			}
		}
	})
}

// checkCompleteChecksum runs CompleteChecksum on a copy of pkt.
func checkCompleteChecksum(t *testing.T, pkt []byte) {
	p := bytes.Clone(pkt)
	err := CompleteChecksum(p)
	if err != nil {
		if err != ErrNoTransportChecksum || !bytes.Equal(p, pkt) {
			t.Fatalf("CompleteChecksum: %v, packet changed %v", err, !bytes.Equal(p, pkt))
		}
		return
	}
	l4Off, csumOff, _ := transportChecksum(pkt)
	at := l4Off + csumOff
	if !bytes.Equal(p[:at], pkt[:at]) || !bytes.Equal(p[at+2:], pkt[at+2:]) {
		t.Fatal("CompleteChecksum changed more than the checksum field")
	}
	// Completed from the right partial sum, the checksum verifies.
	proto := pkt[ipv4OffProto]
	if pkt[0]>>4 == 6 {
		_, proto = ipv6Transport(pkt)
	}
	setPartialChecksum(p, pkt[0]>>4 == 6, proto, l4Off, csumOff)
	if err := CompleteChecksum(p); err != nil {
		t.Fatal(err)
	}
	if !transportChecksumValid(p, l4Off, proto) {
		t.Fatal("completed checksum does not verify")
	}
}

// transportChecksumValid verifies the TCP or UDP checksum of pkt, whose
// transport header is at l4Off, the slow and obvious way.
func transportChecksumValid(pkt []byte, l4Off int, proto uint8) bool {
	l4 := pkt[l4Off:]
	var pseudo []byte
	if pkt[0]>>4 == 6 {
		pseudo = append(pseudo, pkt[8:40]...)
	} else {
		pseudo = append(pseudo, pkt[12:20]...)
	}
	// IPv6's form (RFC 8200 §8.1) sums to IPv4's too (RFC 768).
	n := len(l4)
	pseudo = append(pseudo, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, proto)
	return encaptest.NaiveChecksum(append(pseudo, l4...), 0) == 0xffff
}
