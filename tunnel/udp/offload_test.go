package udp

import (
	"bytes"
	"net/netip"
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
		{"segment limit", repeat(100, 100), nil, maxSegments},
		{"payload limit", repeat(64, 1400), nil, maxGSOPayload / 1400},
		{"payload limit exactly", append(repeat(2, 30000), 5507), nil, 3},
		{"payload limit plus one", append(repeat(2, 30000), 5508), nil, 2},
	} {
		if got := run(tc.sizes, tc.dsts); got != tc.want {
			t.Errorf("%s: segmentRun = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestSplitSegments(t *testing.T) {
	data := []byte("aaaabbbbcc")
	bufs := [][]byte{make([]byte, 8), make([]byte, 8), make([]byte, 3)}
	sizes := make([]int, 3)

	n, used := splitSegments(bufs, sizes, data, 4)
	if n != 3 || used != 10 || string(bufs[0][:sizes[0]]) != "aaaa" ||
		string(bufs[1][:sizes[1]]) != "bbbb" || string(bufs[2][:sizes[2]]) != "cc" {
		t.Errorf("split by 4 = %d, %d, %q", n, used, bufs)
	}
	n, used = splitSegments(bufs[:2], sizes, data, 4)
	if n != 2 || used != 8 {
		t.Errorf("split by 4 into 2 buffers = %d, %d, want 2, 8", n, used)
	}
	n, used = splitSegments(bufs, sizes, data, 0)
	if n != 1 || used != 10 || sizes[0] != 8 {
		t.Errorf("unsegmented into 8 bytes = %d, %d, size %d, want 1, 10, 8 (truncated)", n, used, sizes[0])
	}
	n, used = splitSegments(bufs, sizes, nil, 4)
	if n != 1 || used != 0 || sizes[0] != 0 {
		t.Errorf("empty datagram = %d, %d, size %d, want 1, 0, 0", n, used, sizes[0])
	}
	if n, used := splitSegments(nil, nil, data, 4); n != 0 || used != 0 {
		t.Errorf("no buffers = %d, %d", n, used)
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
		n, used := splitSegments(bufs, sizes, data, seg)
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
