package ringbuf

import (
	"fmt"
	"net/netip"
)

// Batch is a reusable vector of buffers carved from one slab, shaped for
// batch I/O calls such as Read(bufs [][]byte, sizes []int, offset int). A
// Batch belongs to one goroutine at a time and is never reallocated: the
// data path re-slices Bufs[i] freely and calls Reset to get the full views
// back.
type Batch struct {
	// Bufs[i] is buffer i, initially its full capacity (len == cap ==
	// BufSize). Each has its own capacity limit, so an append can never
	// spill into the next buffer.
	Bufs [][]byte
	// Sizes[i] is the length of the packet in Bufs[i], as I/O calls report.
	Sizes []int
	// Addrs[i] is the peer address of packet i (source on receive).
	Addrs []netip.AddrPort

	slab    []byte
	bufSize int
}

// NewBatch returns a batch of n buffers of bufSize bytes each.
func NewBatch(n, bufSize int) *Batch {
	if n < 0 || bufSize <= 0 {
		panic(fmt.Sprintf("ringbuf: NewBatch(%d, %d): need n >= 0 and bufSize > 0", n, bufSize))
	}
	b := &Batch{
		Bufs:    make([][]byte, n),
		Sizes:   make([]int, n),
		Addrs:   make([]netip.AddrPort, n),
		slab:    make([]byte, n*bufSize),
		bufSize: bufSize,
	}
	b.Reset(n)
	return b
}

// Reset restores Bufs[:used] to full-length views of their buffers and
// clears Sizes[:used] and Addrs[:used]; used must not exceed Len. It
// touches nothing past used, so a worker resets only the entries its last
// batch consumed. The buffers' contents are left as they are.
func (b *Batch) Reset(used int) {
	for i := range b.Bufs[:used] {
		off := i * b.bufSize
		b.Bufs[i] = b.slab[off : off+b.bufSize : off+b.bufSize]
	}
	clear(b.Sizes[:used])
	clear(b.Addrs[:used])
}

// Len returns the number of buffers in the batch.
func (b *Batch) Len() int { return len(b.Bufs) }

// BufSize returns the size of each buffer.
func (b *Batch) BufSize() int { return b.bufSize }
