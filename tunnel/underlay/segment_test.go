package underlay

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
)

func TestSegmentRunLimits(t *testing.T) {
	p := netip.MustParseAddrPort("198.18.0.2:8285")
	q := netip.MustParseAddrPort("198.18.0.3:8285")
	run := func(sizes []int, dsts []netip.AddrPort) int {
		bufs := make([][]byte, len(sizes))
		for i, s := range sizes {
			bufs[i] = make([]byte, s)
		}
		if dsts == nil {
			dsts = make([]netip.AddrPort, len(sizes))
			for i := range dsts {
				dsts[i] = p
			}
		}
		return SegmentRun(bufs, dsts)
	}
	repeat := func(n, size int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = size
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		sizes []int
		dsts  []netip.AddrPort
		want  int
	}{
		{"one", []int{1400}, nil, 1},
		{"equal", []int{1400, 1400, 1400}, nil, 3},
		{"short last", []int{1400, 1400, 100, 1400}, nil, 3},
		{"longer second", []int{100, 1400}, nil, 1},
		{"empty first", []int{0, 0}, nil, 1},
		{"empty second", []int{1400, 0}, nil, 1},
		{"other destination", []int{1400, 1400, 1400}, []netip.AddrPort{p, p, q}, 2},
		{"segment limit", repeat(100, 100), nil, MaxSegments},
		{"payload limit", repeat(64, 1400), nil, MaxGSOPayload / 1400},
		{"payload limit exactly", append(repeat(2, 30000), 5507), nil, 3},
		{"payload limit plus one", append(repeat(2, 30000), 5508), nil, 2},
	} {
		if got := run(tc.sizes, tc.dsts); got != tc.want {
			t.Errorf("%s: SegmentRun = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestSplitSegments(t *testing.T) {
	data := []byte("aaaabbbbcc")
	bufs := [][]byte{make([]byte, 8), make([]byte, 8), make([]byte, 3)}
	sizes := make([]int, 3)

	n, used := SplitSegments(bufs, sizes, data, 4, 0)
	if n != 3 || used != 10 || string(bufs[0][:sizes[0]]) != "aaaa" ||
		string(bufs[1][:sizes[1]]) != "bbbb" || string(bufs[2][:sizes[2]]) != "cc" {
		t.Errorf("split by 4 = %d, %d, %q", n, used, bufs)
	}
	n, used = SplitSegments(bufs[:2], sizes, data, 4, 0)
	if n != 2 || used != 8 {
		t.Errorf("split by 4 into 2 buffers = %d, %d, want 2, 8", n, used)
	}
	n, used = SplitSegments(bufs, sizes, data, 0, 0)
	if n != 1 || used != 10 || sizes[0] != 8 {
		t.Errorf("unsegmented into 8 bytes = %d, %d, size %d, want 1, 10, 8 (truncated)", n, used, sizes[0])
	}
	n, used = SplitSegments(bufs, sizes, nil, 4, 0)
	if n != 1 || used != 0 || sizes[0] != 0 {
		t.Errorf("empty datagram = %d, %d, size %d, want 1, 0, 0", n, used, sizes[0])
	}
	if n, used := SplitSegments(nil, nil, data, 4, 0); n != 0 || used != 0 {
		t.Errorf("no buffers = %d, %d", n, used)
	}
}

// TestSplitSegmentsResume cuts a GSO super-datagram of 2500 bytes into
// 1000-byte segments, in one go and resumed half way.
func TestSplitSegmentsResume(t *testing.T) {
	payload := make([]byte, 2500)
	for i := range payload {
		payload[i] = byte(i)
	}
	bufs := [][]byte{make([]byte, 2000), make([]byte, 2000), make([]byte, 500)}
	sizes := make([]int, 3)

	// Segments of 1000: all three fit, the last short.
	if n, off := SplitSegments(bufs, sizes, payload, 1000, 0); n != 3 || off != 2500 || !slices.Equal(sizes, []int{1000, 1000, 500}) {
		t.Fatalf("split into 1000s: n %d off %d sizes %v", n, off, sizes)
	}
	// Resumed half way, with fewer buffers than segments.
	if n, off := SplitSegments(bufs[:1], sizes, payload, 1000, 1000); n != 1 || off != 2000 || !bytes.Equal(bufs[0][:sizes[0]], payload[1000:2000]) {
		t.Fatalf("resumed split: n %d off %d", n, off)
	}
	// A single datagram longer than its buffer is truncated to it.
	if n, off := SplitSegments(bufs[2:], sizes, payload, 0, 0); n != 1 || off != 2500 || sizes[0] != 500 {
		t.Fatalf("truncated: n %d off %d size %d", n, off, sizes[0])
	}
}

// FuzzSplitSegments checks that splitting never overruns and, given room,
// reproduces the datagram piece by piece.
func FuzzSplitSegments(f *testing.F) {
	f.Add([]byte("aaaabbbbcc"), 4, uint8(3), uint8(8))
	f.Add([]byte{}, 0, uint8(1), uint8(1))
	f.Add(bytes.Repeat([]byte{1}, 1500), 1400, uint8(2), uint8(255))
	f.Fuzz(func(t *testing.T, data []byte, seg int, nbufs, bufSize uint8) {
		bufs := make([][]byte, nbufs)
		for i := range bufs {
			bufs[i] = make([]byte, bufSize)
		}
		sizes := make([]int, len(bufs))
		n, used := SplitSegments(bufs, sizes, data, seg, 0)
		if n < 0 || n > len(bufs) || used < 0 || used > len(data) {
			t.Fatalf("n %d of %d buffers, used %d of %d bytes", n, len(bufs), used, len(data))
		}
		if len(bufs) > 0 && n == 0 {
			t.Fatal("no progress")
		}
		var joined []byte
		for i := range n {
			if sizes[i] > len(bufs[i]) {
				t.Fatalf("size %d in a %d-byte buffer", sizes[i], len(bufs[i]))
			}
			joined = append(joined, bufs[i][:sizes[i]]...)
		}
		if seg > 0 && seg <= int(bufSize) && !bytes.Equal(joined, data[:used]) {
			t.Fatalf("pieces %x, want %x", joined, data[:used])
		}
	})
}
