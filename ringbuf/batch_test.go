package ringbuf

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestNewBatch(t *testing.T) {
	t.Parallel()
	const n, size = 8, 100
	b := NewBatch(n, size)
	if b.Len() != n || b.BufSize() != size || len(b.Sizes) != n || len(b.Addrs) != n {
		t.Fatalf("Len %d BufSize %d Sizes %d Addrs %d", b.Len(), b.BufSize(), len(b.Sizes), len(b.Addrs))
	}
	for i, buf := range b.Bufs {
		if len(buf) != size || cap(buf) != size {
			t.Fatalf("Bufs[%d]: len %d cap %d", i, len(buf), cap(buf))
		}
		for j := range buf {
			buf[j] = byte(i)
		}
	}
	for i, buf := range b.Bufs { // no buffer overlaps another
		for j, c := range buf {
			if c != byte(i) {
				t.Fatalf("Bufs[%d][%d] = %d: buffers overlap", i, j, c)
			}
		}
	}
	// Appending past a buffer's end must not reach the next one.
	_ = append(b.Bufs[0], 0xff)
	if b.Bufs[1][0] != 1 {
		t.Fatal("append to Bufs[0] overwrote Bufs[1]")
	}
	if empty := NewBatch(0, size); empty.Len() != 0 {
		t.Fatalf("NewBatch(0) has %d buffers", empty.Len())
	}
}

func TestNewBatchPanics(t *testing.T) {
	t.Parallel()
	for _, args := range [][2]int{{-1, 10}, {1, 0}, {1, -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewBatch(%d, %d) did not panic", args[0], args[1])
				}
			}()
			NewBatch(args[0], args[1])
		}()
	}
}

func TestBatchReset(t *testing.T) {
	t.Parallel()
	const n, size, headroom = 4, 64, 16
	b := NewBatch(n, size)
	for i := range b.Bufs {
		b.Bufs[i] = b.Bufs[i][headroom : headroom+10]
		b.Sizes[i] = 10
		b.Addrs[i] = netip.MustParseAddrPort("198.18.0.2:8285")
	}
	b.Bufs[0][0] = 42

	b.Reset(2)
	for i := range 2 {
		if len(b.Bufs[i]) != size || cap(b.Bufs[i]) != size || b.Sizes[i] != 0 || b.Addrs[i].IsValid() {
			t.Errorf("entry %d not reset: len %d cap %d size %d addr %v", i, len(b.Bufs[i]), cap(b.Bufs[i]), b.Sizes[i], b.Addrs[i])
		}
	}
	if b.Bufs[0][headroom] != 42 {
		t.Error("Reset changed a buffer's contents or moved it")
	}
	for i := 2; i < n; i++ {
		if len(b.Bufs[i]) != 10 || b.Sizes[i] != 10 || !b.Addrs[i].IsValid() {
			t.Errorf("entry %d past used was touched", i)
		}
	}
	b.Reset(n)
	for i := range b.Bufs {
		if &b.Bufs[i][0] != &b.slab[i*size] {
			t.Errorf("Bufs[%d] does not start at its slot in the slab", i)
		}
	}
}

func TestBatchResetAllocs(t *testing.T) {
	b := NewBatch(128, 2048)
	if n := testing.AllocsPerRun(1000, func() {
		for i := range b.Bufs {
			b.Bufs[i] = b.Bufs[i][64:100]
		}
		b.Reset(b.Len())
	}); n != 0 {
		t.Errorf("Reset allocates %v times", n)
	}
}

func BenchmarkBatchReset(b *testing.B) {
	batch := NewBatch(128, 65535+64)
	b.ReportAllocs()
	for b.Loop() {
		batch.Reset(batch.Len())
	}
}

// A TX worker reads packets at an offset that leaves room for the
// encapsulation header, writes the header in front of each in place, and
// resets the views for the next batch.
func ExampleBatch() {
	const headroom = 22 // VXLAN + inner Ethernet
	b := NewBatch(2, headroom+1500)

	// Stand-in for tun.Read(b.Bufs, b.Sizes, headroom).
	for i := range b.Bufs {
		b.Sizes[i] = copy(b.Bufs[i][headroom:], "packet")
	}
	for i := range b.Bufs {
		frame := b.Bufs[i][:headroom+b.Sizes[i]]
		copy(frame, strings.Repeat("H", headroom)) // stand-in for hdr.Encap
		b.Bufs[i] = frame
	}
	fmt.Printf("%s\n", b.Bufs[0])
	b.Reset(2)
	fmt.Println(len(b.Bufs[0]))
	// Output:
	// HHHHHHHHHHHHHHHHHHHHHHpacket
	// 1522
}
