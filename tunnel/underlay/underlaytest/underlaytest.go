// Package underlaytest provides channel-backed underlay.Conns joined by an
// in-memory network, so that engines can be tested without sockets.
package underlaytest

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/overlayd/overlayd/tunnel/underlay"
)

// BatchSize is the batch size a Conn reports.
const BatchSize = 64

// queueLen is how many datagrams a Conn holds unread before senders block.
const queueLen = 1024

var _ underlay.Conn = (*Conn)(nil)

// Network delivers datagrams between the Conns listening on it by exact
// address and port, in order and without loss: a sender blocks while the
// receiver's queue (1024 datagrams) is full. Datagrams to an address
// nobody listens on vanish, as they would on a real network.
type Network struct {
	mu    sync.Mutex
	conns map[netip.AddrPort]*Conn
}

// NewNetwork returns an empty Network.
func NewNetwork() *Network {
	return &Network{conns: make(map[netip.AddrPort]*Conn)}
}

// NewPair returns two Conns on a Network of their own.
func NewPair(a, b netip.AddrPort) (*Conn, *Conn) {
	n := NewNetwork()
	ca, err := n.Listen(a)
	if err != nil {
		panic(err)
	}
	cb, err := n.Listen(b)
	if err != nil {
		panic(err)
	}
	return ca, cb
}

// Listen returns a Conn that receives the datagrams sent to addr.
func (n *Network) Listen(addr netip.AddrPort) (*Conn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.conns[addr]; ok {
		return nil, fmt.Errorf("underlaytest: listen on %v: address in use", addr)
	}
	c := &Conn{
		net:    n,
		addr:   addr,
		inbox:  make(chan datagram, queueLen),
		closed: make(chan struct{}),
	}
	n.conns[addr] = c
	return c, nil
}

func (n *Network) lookup(addr netip.AddrPort) *Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.conns[addr]
}

type datagram struct {
	src  netip.AddrPort
	data []byte
}

// Conn is an underlay.Conn on a Network.
type Conn struct {
	net       *Network
	addr      netip.AddrPort
	inbox     chan datagram
	closed    chan struct{}
	closeOnce sync.Once
}

// ReadBatch blocks for one datagram, then takes any others already queued,
// up to len(bufs). A datagram longer than its buffer is truncated, as by
// the kernel.
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, srcs []netip.AddrPort) (int, error) {
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	var d datagram
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	case d = <-c.inbox:
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n], d.data)
		srcs[n] = d.src
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case d = <-c.inbox:
		default:
			return n, nil
		}
	}
}

// WriteBatch delivers a copy of each bufs[i] to the Conn listening on
// dsts[i], if any.
func (c *Conn) WriteBatch(bufs [][]byte, dsts []netip.AddrPort) (int, error) {
	for i, buf := range bufs {
		if c.isClosed() {
			return i, net.ErrClosed
		}
		dst := c.net.lookup(dsts[i])
		if dst == nil {
			continue
		}
		d := datagram{src: c.addr, data: append([]byte(nil), buf...)}
		select {
		case dst.inbox <- d:
		case <-dst.closed:
		case <-c.closed:
			return i, net.ErrClosed
		}
	}
	return len(bufs), nil
}

func (c *Conn) BatchSize() int            { return BatchSize }
func (c *Conn) LocalAddr() netip.AddrPort { return c.addr }

// Close unblocks pending calls and frees the Conn's address.
func (c *Conn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		close(c.closed)
		c.net.mu.Lock()
		delete(c.net.conns, c.addr)
		c.net.mu.Unlock()
		err = nil
	})
	return err
}

func (c *Conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}
