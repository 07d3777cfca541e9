//go:build !linux

package udp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/overlayd/overlayd/tunnel/underlay"
)

var (
	_ underlay.Conn = (*portableConn)(nil)
	_ Configured    = (*portableConn)(nil)
)

// Listen opens a UDP socket bound to laddr, which must be IPv4. Off Linux
// each datagram costs one system call (BatchSize is 1), ReusePort, Queues and
// the offloads are ignored, and buffer sizes go through the standard library.
func Listen(laddr netip.AddrPort, opts Options) (underlay.Conn, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("udp: listen on %v: %w", laddr, err)
	}
	addr := laddr.Addr().Unmap()
	if !addr.Is4() {
		return nil, fmt.Errorf("udp: listen on %v: not an IPv4 address", laddr)
	}
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, laddr.Port())))
	if err != nil {
		return nil, fmt.Errorf("udp: listen on %v: %w", laddr, err)
	}
	var unsup []error
	if opts.GSO {
		unsup = append(unsup, &OffloadError{Offload: "UDP_SEGMENT (GSO)", Err: errors.ErrUnsupported})
	}
	if opts.GRO {
		unsup = append(unsup, &OffloadError{Offload: "UDP_GRO", Err: errors.ErrUnsupported})
	}
	opts.BatchSize, opts.ReusePort, opts.GSO, opts.GRO = 1, false, false, false
	opts.Queue, opts.Queues = 0, 0
	if opts.RecvBuffer > 0 {
		pc.SetReadBuffer(opts.RecvBuffer)
	}
	if opts.SendBuffer > 0 {
		pc.SetWriteBuffer(opts.SendBuffer)
	}
	la := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	return &portableConn{pc: pc, laddr: netip.AddrPortFrom(la.Addr().Unmap(), la.Port()), opts: opts, unsup: errors.Join(unsup...)}, nil
}

// portableConn is a Conn that moves one datagram per system call.
type portableConn struct {
	pc      *net.UDPConn
	laddr   netip.AddrPort
	opts    Options
	unsup   error
	readMu  sync.Mutex
	writeMu sync.Mutex
}

func (c *portableConn) ReadBatch(bufs [][]byte, sizes []int, srcs []netip.AddrPort) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if len(bufs) == 0 {
		return 0, nil
	}
	n, src, err := c.pc.ReadFromUDPAddrPort(bufs[0])
	if err != nil {
		return 0, c.fail("read", err)
	}
	sizes[0], srcs[0] = n, netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	return 1, nil
}

func (c *portableConn) WriteBatch(bufs [][]byte, dsts []netip.AddrPort) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	sent := 0
	var werr *underlay.WriteError
	for i, buf := range bufs {
		if _, err := c.pc.WriteToUDPAddrPort(buf, dsts[i]); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return sent, net.ErrClosed
			}
			if werr == nil {
				werr = &underlay.WriteError{Addr: dsts[i], Err: err}
			}
			werr.Dropped++
			continue
		}
		sent++
	}
	if werr != nil {
		return sent, werr
	}
	return sent, nil
}

func (c *portableConn) fail(op string, err error) error {
	if errors.Is(err, net.ErrClosed) {
		return net.ErrClosed
	}
	return fmt.Errorf("udp: %s on %v: %w", op, c.laddr, err)
}

func (c *portableConn) Unsupported() error        { return c.unsup }
func (c *portableConn) BatchSize() int            { return c.opts.BatchSize }
func (c *portableConn) LocalAddr() netip.AddrPort { return c.laddr }
func (c *portableConn) SendAddr() netip.AddrPort  { return c.laddr }
func (c *portableConn) Effective() Options        { return c.opts }

func (c *portableConn) Close() error {
	if err := c.pc.Close(); err != nil {
		return c.fail("close", err)
	}
	return nil
}
