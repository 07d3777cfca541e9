package ringbuf

import (
	"fmt"
	"sync"
)

// Pool recycles buffers of one fixed size between goroutines. Get and Put
// do not allocate in the steady state; like sync.Pool, which it is built
// on, it lets the garbage collector reclaim buffers that sit idle.
//
// A buffer's contents are not cleared between uses.
type Pool struct {
	size int
	bufs sync.Pool // *[]byte holding a buffer
	// boxes holds empty *[]byte: putting a []byte into a sync.Pool as is
	// would allocate an interface box each time, so the boxes are recycled
	// as well.
	boxes sync.Pool
}

// NewPool returns a pool of buffers of bufSize bytes.
func NewPool(bufSize int) *Pool {
	if bufSize <= 0 {
		panic(fmt.Sprintf("ringbuf: NewPool(%d): need bufSize > 0", bufSize))
	}
	return &Pool{size: bufSize}
}

// Get returns a buffer with len and cap equal to the pool's size.
func (p *Pool) Get() []byte {
	box, _ := p.bufs.Get().(*[]byte)
	if box == nil {
		return make([]byte, p.size)
	}
	b := *box
	*box = nil // the box must not keep the buffer alive once handed out
	p.boxes.Put(box)
	return b[:p.size]
}

// Put returns b to the pool for reuse and reports whether it was taken. A
// buffer whose capacity is not the pool's size, such as one re-sliced past
// its start or one from elsewhere, is refused. The caller must not use b
// after a successful Put.
func (p *Pool) Put(b []byte) bool {
	if cap(b) != p.size {
		return false
	}
	box, _ := p.boxes.Get().(*[]byte)
	if box == nil {
		box = new([]byte)
	}
	*box = b[:p.size]
	p.bufs.Put(box)
	return true
}

// BufSize returns the size of the pool's buffers.
func (p *Pool) BufSize() int { return p.size }
