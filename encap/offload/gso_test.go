package offload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/encap/encaptest"
)

const testMSS = 1420 // a TUN MTU of 1472 less 20 + 20 + 12 (timestamps)

// splitAll runs SplitGSO with plenty of buffers and checks what every
// split must satisfy: valid wire packets of at most GSOSize payload each
// that carry the super-packet's payload in order.
func splitAll(t *testing.T, h VirtioNetHdr, pkt []byte) [][]byte {
	t.Helper()
	const offset = 7
	bufs, sizes := newBufs(max(128, len(pkt)/max(1, int(h.GSOSize))+1), offset+1500)
	orig := bytes.Clone(pkt)
	n, _, err := SplitGSO(pkt, h, bufs, sizes, offset, SplitOptions{})
	if err != nil {
		t.Fatalf("SplitGSO: %v", err)
	}
	if !bytes.Equal(pkt, orig) {
		t.Error("SplitGSO modified its input")
	}
	segs := make([][]byte, n)
	for i := range n {
		segs[i] = bufs[i][offset : offset+sizes[i]]
		checkWirePacket(t, segs[i])
		if got := len(l4Payload(segs[i])); h.GSOType != GSONone && got > int(h.GSOSize) {
			t.Errorf("segment %d carries %d bytes, more than GSOSize %d", i, got, h.GSOSize)
		}
	}
	if got, want := joinPayloads(segs...), l4Payload(orig); !bytes.Equal(got, want) {
		t.Errorf("segments carry %d bytes that differ from the super-packet's %d", len(got), len(want))
	}
	return segs
}

func TestSplitGSOTCP(t *testing.T) {
	t.Parallel()
	for _, v6 := range []bool{false, true} {
		const payload = 65535 - 20 - 32 - 3 // odd, so the last segment is short
		s := segSpec{v6: v6, seq: 0xfffff000, ack: 77, id: 0xfffe, tcpOpts: timestamps(1, 2),
			flags: tcpFlagACK | tcpFlagPSH | tcpFlagFIN | tcpFlagCWR, payload: pattern(payload, 0)}
		h, pkt := superPacket(t, s, testMSS)
		segs := splitAll(t, h, pkt)
		if want := (payload + testMSS - 1) / testMSS; len(segs) != want {
			t.Fatalf("v6=%v: %d segments, want %d", v6, len(segs), want)
		}
		for i, seg := range segs {
			seq, flags := tcpSeqFlags(seg)
			if want := s.seq + uint32(i*testMSS); seq != want { // wraps past 2^32
				t.Errorf("v6=%v segment %d: seq %#x, want %#x", v6, i, seq, want)
			}
			last := i == len(segs)-1
			if got := flags&(tcpFlagFIN|tcpFlagPSH) != 0; got != last {
				t.Errorf("v6=%v segment %d: FIN/PSH %v, want %v", v6, i, got, last)
			}
			if got := flags&tcpFlagCWR != 0; got != (i == 0) {
				t.Errorf("v6=%v segment %d: CWR %v", v6, i, got)
			}
			if !v6 {
				if id := be16(seg[4:]); id != uint16(0xfffe+i) {
					t.Errorf("segment %d: IPv4 ID %#x, want %#x", i, id, uint16(0xfffe+i))
				}
			}
			if v6 && !bytes.Equal(seg[:4], pkt[:4]) {
				t.Errorf("segment %d: IPv6 first word changed", i)
			}
		}
	}
}

func TestSplitGSOUDP(t *testing.T) {
	t.Parallel()
	for _, v6 := range []bool{false, true} {
		h, pkt := superPacket(t, segSpec{v6: v6, udp: true, payload: pattern(10000, 3)}, 1400)
		segs := splitAll(t, h, pkt)
		if len(segs) != 8 {
			t.Errorf("v6=%v: %d datagrams, want 8", v6, len(segs))
		}
	}
}

// TestSplitGSOIPv4Options checks that IP options are carried into every
// segment and the IPv4 header checksum covers them.
func TestSplitGSOIPv4Options(t *testing.T) {
	t.Parallel()
	opts := []byte{1, 1, 1, 0} // NOP NOP NOP EOL
	h, pkt := superPacket(t, segSpec{payload: pattern(5000, 1)}, 1000)
	// Insert the options by hand: 4 more header bytes.
	pkt = append(append(append([]byte{}, pkt[:20]...), opts...), pkt[20:]...)
	pkt[0] = 0x46
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	h.CsumStart = 24
	for _, seg := range splitAll(t, h, pkt) {
		if !bytes.Equal(seg[20:24], opts) {
			t.Fatalf("options %x, want %x", seg[20:24], opts)
		}
	}
}

func TestSplitGSOSingleSegment(t *testing.T) {
	t.Parallel()
	// A super-packet no longer than one segment (the kernel does not send
	// these, but they are valid), and one with no payload at all.
	for _, n := range []int{testMSS, 0} {
		h, pkt := superPacket(t, segSpec{payload: pattern(n, 0)}, testMSS)
		if segs := splitAll(t, h, pkt); len(segs) != 1 {
			t.Errorf("payload %d: %d segments, want 1", n, len(segs))
		}
	}
}

func TestSplitGSOCompletesChecksum(t *testing.T) {
	t.Parallel()
	for _, s := range []segSpec{
		{payload: pattern(999, 0)},
		{udp: true, payload: pattern(999, 0)},
		{v6: true, udp: true, payload: pattern(100, 0)},
	} {
		h, pkt := superPacket(t, s, 1)
		h.GSOType, h.GSOSize, h.HdrLen = GSONone, 0, 0
		segs := splitAll(t, h, pkt)
		if len(segs) != 1 {
			t.Fatalf("%d packets, want 1", len(segs))
		}
	}

	// Without NEEDS_CSUM the packet is copied as it is, checksum and all.
	pkt := buildSeg(t, segSpec{payload: []byte("as is")})
	pkt[len(pkt)-1] ^= 0xff
	out, sizes := newBufs(1, 100)
	if n, _, err := SplitGSO(pkt, VirtioNetHdr{}, out, sizes, 0, SplitOptions{}); n != 1 || err != nil || !bytes.Equal(out[0][:sizes[0]], pkt) {
		t.Errorf("plain packet: %d, %v, copy equal %v", n, err, bytes.Equal(out[0][:sizes[0]], pkt))
	}
}

// TestSplitGSOZeroChecksum completes a UDP checksum that comes out as 0,
// which on the wire would mean "no checksum": it must be sent as 0xffff.
func TestSplitGSOZeroChecksum(t *testing.T) {
	t.Parallel()
	// The payload word that makes the sum 0xffff, hence the checksum 0.
	zero := buildSeg(t, segSpec{udp: true, payload: []byte{0, 0}})
	zero[26], zero[27] = 0, 0
	pseudo := append(append([]byte(nil), zero[12:20]...), 0, protoUDP, 0, 10)
	word := ^encaptest.NaiveChecksum(append(pseudo, zero[20:]...), 0)

	for _, gso := range []bool{false, true} {
		h, pkt := superPacket(t, segSpec{udp: true, payload: []byte{byte(word >> 8), byte(word)}}, 100)
		if !gso {
			h.GSOType, h.GSOSize = GSONone, 0
		}
		segs := splitAll(t, h, pkt)
		if got := be16(segs[0][26:]); got != 0xffff {
			t.Errorf("gso=%v: checksum %#04x, want 0xffff", gso, got)
		}
	}
}

func TestSplitGSOErrors(t *testing.T) {
	t.Parallel()
	h4, tcp4 := superPacket(t, segSpec{payload: pattern(4000, 0)}, 1000)
	h6, tcp6 := superPacket(t, segSpec{v6: true, payload: pattern(4000, 0)}, 1000)
	hu, udp4 := superPacket(t, segSpec{udp: true, payload: pattern(4000, 0)}, 1000)
	frag := bytes.Clone(tcp4)
	frag[6] |= 0x20 // MF
	noDoff := bytes.Clone(tcp4)
	noDoff[20+12] = 0x40 // data offset 4 words
	bigDoff := bytes.Clone(tcp4[:70])
	bigDoff[20+12] = 0xf0 // 60-byte TCP header in a 70-byte packet

	with := func(h VirtioNetHdr, f func(*VirtioNetHdr)) VirtioNetHdr { f(&h); return h }
	tests := []struct {
		name string
		h    VirtioNetHdr
		pkt  []byte
		want error
	}{
		{"GSO size 0", with(h4, func(h *VirtioNetHdr) { h.GSOSize = 0 }), tcp4, ErrVirtioHdr},
		{"unknown type", with(h4, func(h *VirtioNetHdr) { h.GSOType = 2 }), tcp4, ErrGSOType},
		{"UFO", with(h4, func(h *VirtioNetHdr) { h.GSOType = GSOUDP }), tcp4, ErrGSOType},
		{"ECN", with(h4, func(h *VirtioNetHdr) { h.GSOType |= GSOECN }), tcp4, ErrGSOType},
		{"no NEEDS_CSUM", with(h4, func(h *VirtioNetHdr) { h.Flags = 0 }), tcp4, ErrVirtioHdr},
		{"csum start not at TCP", with(h4, func(h *VirtioNetHdr) { h.CsumStart = 24 }), tcp4, ErrVirtioHdr},
		{"csum offset not TCP's", with(h4, func(h *VirtioNetHdr) { h.CsumOffset = 6 }), tcp4, ErrVirtioHdr},
		{"UDP csum offset", with(hu, func(h *VirtioNetHdr) { h.CsumOffset = 16 }), udp4, ErrVirtioHdr},
		{"HdrLen past the end", with(h4, func(h *VirtioNetHdr) { h.HdrLen = uint16(len(tcp4) + 1) }), tcp4, ErrVirtioHdr},
		{"TCPv4 on IPv6", h4, tcp6, ErrVirtioHdr},
		{"TCPv6 on IPv4", h6, tcp4, ErrVirtioHdr},
		{"TCP type on UDP", h4, udp4, ErrVirtioHdr},
		{"UDP type on TCP", hu, tcp4, ErrVirtioHdr},
		{"fragment", h4, frag, ErrVirtioHdr},
		{"TCP data offset < 5", h4, noDoff, ErrVirtioHdr},
		{"not IP", h4, make([]byte, 100), ErrVirtioHdr},
		{"empty", h4, nil, encap.ErrTruncated},
		{"short IPv4 header", h4, tcp4[:19], encap.ErrTruncated},
		{"short TCP header", h4, tcp4[:39], encap.ErrTruncated},
		{"short options", with(h4, func(h *VirtioNetHdr) { h.HdrLen = 0 }), bigDoff, encap.ErrTruncated},
		{"csum past the end", VirtioNetHdr{Flags: VirtioNeedsCsum, CsumStart: 20, CsumOffset: 4000}, tcp4[:100], ErrVirtioHdr},
		{"csum inside the IP header", VirtioNetHdr{Flags: VirtioNeedsCsum, CsumStart: 10, CsumOffset: 16}, tcp4[:100], ErrVirtioHdr},
		{"csum on non-IP", VirtioNetHdr{Flags: VirtioNeedsCsum, CsumStart: 20, CsumOffset: 16}, make([]byte, 100), ErrVirtioHdr},
	}
	out, sizes := newBufs(16, 1500)
	for _, tt := range tests {
		n, _, err := SplitGSO(tt.pkt, tt.h, out, sizes, 0, SplitOptions{})
		if n != 0 || err != tt.want {
			t.Errorf("%s: SplitGSO = %d, %v, want 0, %v", tt.name, n, err, tt.want)
		}
	}

	// Too few buffers: nothing written, the packet is kept for later.
	clear(sizes)
	if n, _, err := SplitGSO(tcp4, h4, out[:3], sizes, 0, SplitOptions{}); n != 0 || err != ErrTooManySegments || sizes[0] != 0 {
		t.Errorf("3 buffers for 4 segments: %d, %v (sizes[0] %d), want 0, ErrTooManySegments", n, err, sizes[0])
	}
	if n, _, err := SplitGSO(tcp4, h4, out, sizes[:3], 0, SplitOptions{}); n != 0 || err != ErrTooManySegments {
		t.Errorf("3 sizes for 4 segments: %d, %v, want 0, ErrTooManySegments", n, err)
	}
	if n, _, err := SplitGSO(tcp4[:100], VirtioNetHdr{}, nil, nil, 0, SplitOptions{}); n != 0 || err != ErrTooManySegments {
		t.Errorf("no buffers for a plain packet: %d, %v, want 0, ErrTooManySegments", n, err)
	}
	// Buffers too short.
	if n, _, err := SplitGSO(tcp4, h4, out, sizes, 1500-1000, SplitOptions{}); n != 0 || !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("short buffers: %d, %v, want 0, io.ErrShortBuffer", n, err)
	}
	if n, _, err := SplitGSO(tcp4[:100], VirtioNetHdr{}, out, sizes, 1450, SplitOptions{}); n != 0 || !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("short buffer for a plain packet: %d, %v, want 0, io.ErrShortBuffer", n, err)
	}
}

// TestSplitGSOHead splits a super-packet a few buffers at a time and gets
// what one SplitGSO with buffers enough gives.
func TestSplitGSOHead(t *testing.T) {
	t.Parallel()
	for _, s := range []segSpec{
		{seq: 1000, id: 65530, flags: tcpFlagACK | tcpFlagPSH | tcpFlagCWR, tcpOpts: timestamps(5, 6), payload: pattern(30000, 0)},
		{v6: true, payload: pattern(30001, 0)},
		{udp: true, payload: pattern(3000, 0)},
	} {
		for _, mss := range []int{1, 7, 536, 1400} {
			spec := s
			if mss < 100 {
				spec.payload = spec.payload[:2000] // a few thousand segments at most
			}
			h, pkt := superPacket(t, spec, mss)
			want := splitAll(t, h, bytes.Clone(pkt))

			var got [][]byte
			rest := pkt
			for rest != nil {
				out, sizes := newBufs(3, 1500)
				n, r, _, err := SplitGSOHead(rest, &h, out, sizes, 0, SplitOptions{})
				if err != nil || n == 0 {
					t.Fatalf("mss %d: SplitGSOHead = %d, %v", mss, n, err)
				}
				for i := range n {
					got = append(got, out[i][:sizes[i]])
				}
				rest = r
				if rest != nil && int(h.HdrLen) > len(rest) {
					t.Fatalf("HdrLen %d > rest %d", h.HdrLen, len(rest))
				}
			}
			if len(got) != len(want) {
				t.Fatalf("mss %d: %d segments in parts, %d at once", mss, len(got), len(want))
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("mss %d: segment %d differs:\n%x\n%x", mss, i, got[i][:60], want[i][:60])
				}
			}
		}
	}

	// A single packet, and no buffers.
	pkt := buildSeg(t, segSpec{payload: []byte("x")})
	out, sizes := newBufs(1, 100)
	var h VirtioNetHdr
	if n, rest, _, err := SplitGSOHead(pkt, &h, out, sizes, 0, SplitOptions{}); n != 1 || rest != nil || err != nil {
		t.Errorf("plain packet: %d, %v, %v", n, rest, err)
	}
	h, pkt = superPacket(t, segSpec{payload: pattern(3000, 0)}, 1000)
	if n, rest, _, err := SplitGSOHead(pkt, &h, nil, nil, 0, SplitOptions{}); n != 0 || rest != nil || err != ErrTooManySegments {
		t.Errorf("no buffers: %d, %v, %v", n, rest, err)
	}
}

func TestSplitGSOAllocs(t *testing.T) {
	h, pkt := superPacket(t, segSpec{tcpOpts: timestamps(1, 2), payload: pattern(65535-52, 0)}, testMSS)
	out, sizes := newBufs(64, 1600)
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := SplitGSO(pkt, h, out, sizes, 64, SplitOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("SplitGSO: %v allocations, want 0", allocs)
	}
}

// BenchmarkSplitGSO splits 64 KiB TCP super-packets into MSS 1420
// segments with complete checksums; bytes are payload bytes.
func BenchmarkSplitGSO(b *testing.B) {
	for _, bc := range []struct {
		name string
		s    segSpec
	}{
		{"tcp4", segSpec{tcpOpts: timestamps(1, 2), payload: pattern(65535-52, 0)}},
		{"tcp6", segSpec{v6: true, tcpOpts: timestamps(1, 2), payload: pattern(65535-72, 0)}},
		{"udp4", segSpec{udp: true, payload: pattern(65535-28, 0)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h, pkt := superPacket(b, bc.s, testMSS)
			out, sizes := newBufs(128, 64+1500)
			b.SetBytes(int64(len(bc.s.payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := SplitGSO(pkt, h, out, sizes, 64, SplitOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// withIPv6Ext inserts an 8-byte extension header of type ext in front of
// the transport header of an IPv6 super-packet.
func withIPv6Ext(h VirtioNetHdr, pkt []byte, ext byte) (VirtioNetHdr, []byte) {
	hdr := []byte{pkt[6], 0, 1, 4, 0, 0, 0, 0} // next header, length, PadN
	if ext == 43 {
		hdr = []byte{pkt[6], 0, 4, 0, 0, 0, 0, 0} // routing: type 4, no segments left
	}
	out := append(append(append([]byte{}, pkt[:40]...), hdr...), pkt[40:]...)
	out[6] = ext
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	h.CsumStart += 8
	return h, out
}

func TestSplitGSOIPv6Extensions(t *testing.T) {
	t.Parallel()
	for _, udp := range []bool{false, true} {
		h, pkt := superPacket(t, segSpec{v6: true, udp: udp, payload: pattern(5000, 0)}, 1000)
		for _, ext := range []byte{0, 60} { // hop-by-hop, destination options
			he, pe := withIPv6Ext(h, pkt, ext)
			for _, seg := range splitAll(t, he, pe) {
				if !bytes.Equal(seg[40:48], pe[40:48]) {
					t.Fatalf("extension header %x, want %x", seg[40:48], pe[40:48])
				}
			}
		}
		// A routing header changes the pseudo-header's destination.
		he, pe := withIPv6Ext(h, pkt, 43)
		out, sizes := newBufs(8, 1500)
		if n, _, err := SplitGSO(pe, he, out, sizes, 0, SplitOptions{}); n != 0 || err != ErrVirtioHdr {
			t.Errorf("routing header: %d, %v, want ErrVirtioHdr", n, err)
		}
		// CsumStart past the options, but the next header says TCP/UDP.
		he, pe = withIPv6Ext(h, pkt, 0)
		pe[6] = pkt[6]
		if n, _, err := SplitGSO(pe, he, out, sizes, 0, SplitOptions{}); n != 0 || err != ErrVirtioHdr {
			t.Errorf("csum start past an absent extension: %d, %v, want ErrVirtioHdr", n, err)
		}
	}
}
