package udp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	_ Conn       = (*stdConn)(nil)
	_ Configured = (*stdConn)(nil)
)

// Listen opens a UDP socket bound to laddr, which must be IPv4, exactly as
// flanneld binds <interface address>:8285. Port 0 lets the kernel choose;
// LocalAddr reports its choice. The socket belongs to the network namespace
// of the calling thread.
func Listen(laddr netip.AddrPort, opts Options) (Conn, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("udp: listen on %v: %w", laddr, err)
	}
	addr := laddr.Addr().Unmap()
	if !addr.Is4() {
		return nil, fmt.Errorf("udp: listen on %v: not an IPv4 address", laddr)
	}
	laddr = netip.AddrPortFrom(addr, laddr.Port())

	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		if !opts.ReusePort {
			return nil
		}
		return control(rc, func(fd int) error {
			return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", laddr.String())
	if err != nil {
		return nil, fmt.Errorf("udp: listen on %v: %w", laddr, err)
	}
	c, err := newStdConn(pc.(*net.UDPConn), opts)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("udp: listen on %v: %w", laddr, err)
	}
	return c, nil
}

// control runs f on rc's descriptor.
func control(rc syscall.RawConn, f func(fd int) error) error {
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// stdConn is a Conn on a kernel UDP socket.
type stdConn struct {
	pc    *net.UDPConn
	rc    syscall.RawConn
	laddr netip.AddrPort
	opts  Options     // as granted; GSO may be turned off later
	gso   atomic.Bool // UDP_SEGMENT in use
	unsup error       // the offloads asked for that the kernel lacks

	rx rxBatch
	tx txBatch
}

func newStdConn(pc *net.UDPConn, opts Options) (*stdConn, error) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &stdConn{pc: pc, rc: rc}
	c.laddr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	c.laddr = netip.AddrPortFrom(c.laddr.Addr().Unmap(), c.laddr.Port())
	if err := control(rc, func(fd int) (err error) { c.unsup, err = configure(fd, &opts); return err }); err != nil {
		return nil, err
	}
	c.opts = opts
	c.gso.Store(opts.GSO)
	c.rx.init(opts.BatchSize, opts.GRO)
	c.tx.init(opts.BatchSize, opts.GSO)
	return c, nil
}

// configure sets the socket's buffers and offloads, and records in opts
// what the kernel granted. The offloads it lacks come back as unsupported
// (*OffloadError values), which is no failure: the Conn works without.
func configure(fd int, opts *Options) (unsupported, err error) {
	if opts.RecvBuffer, err = setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, opts.RecvBuffer); err != nil {
		return nil, fmt.Errorf("receive buffer: %w", err)
	}
	if opts.SendBuffer, err = setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, opts.SendBuffer); err != nil {
		return nil, fmt.Errorf("send buffer: %w", err)
	}
	var missing []error
	if opts.GSO {
		// Readable since the kernel learnt UDP_SEGMENT.
		if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err != nil {
			opts.GSO = false
			missing = append(missing, &OffloadError{Offload: "UDP_SEGMENT (GSO, Linux 4.18)", Err: err})
		}
	}
	if opts.GRO {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1); err != nil {
			opts.GRO = false
			missing = append(missing, &OffloadError{Offload: "UDP_GRO (Linux 5.0)", Err: err})
		}
	}
	return errors.Join(missing...), nil
}

// Unsupported reports the offloads asked for that the kernel lacks, as
// *OffloadError values (errors.Is ErrOffloadUnsupported), or nil.
func (c *stdConn) Unsupported() error { return c.unsup }

// setBuffer sets a socket buffer to size, with the privileged option force
// if allowed, and returns the size the kernel settled on. A negative size
// leaves the buffer alone.
func setBuffer(fd, force, opt, size int) (int, error) {
	if size >= 0 && unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, size); err != nil {
			return 0, err
		}
	}
	got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
	return got / 2, err // the kernel doubles the size it is given
}

func (c *stdConn) BatchSize() int            { return c.opts.BatchSize }
func (c *stdConn) LocalAddr() netip.AddrPort { return c.laddr }

func (c *stdConn) Effective() Options {
	o := c.opts
	o.GSO = c.gso.Load()
	return o
}

func (c *stdConn) Close() error {
	if err := c.pc.Close(); err != nil {
		return c.fail("close", err)
	}
	return nil
}

// fail maps the error of a closed socket to net.ErrClosed and wraps others.
func (c *stdConn) fail(op string, err error) error {
	if errors.Is(err, net.ErrClosed) {
		return net.ErrClosed
	}
	return fmt.Errorf("udp: %s on %v: %w", op, c.laddr, err)
}

// rxBatch holds what recvmmsg needs, reused by every ReadBatch.
type rxBatch struct {
	mu    sync.Mutex
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	recv  func(fd uintptr) bool // r.do, bound once

	// Per call.
	want  int // messages to receive
	n     int // messages received
	errno syscall.Errno

	// With GRO only: datagrams land in the Conn's own buffers, each up
	// to 64 KiB, and are split from there into the caller's. Messages
	// [next, n) of the last recvmmsg are not delivered yet, message next
	// from byte off on.
	gro       bool
	ctrl      []byte // ctrlSpace bytes per message
	scratch   [][]byte
	next, off int
}

func (r *rxBatch) init(batch int, gro bool) {
	msgs := batch
	if gro {
		// Each message may carry up to 64 datagrams: fewer messages
		// still fill a batch, and save memory.
		msgs = max(1, batch/8)
		r.gro = true
		r.ctrl = make([]byte, msgs*ctrlSpace)
		r.scratch = make([][]byte, msgs)
		for i := range r.scratch {
			r.scratch[i] = make([]byte, groBufSize)
		}
	}
	r.msgs = make([]unix.Mmsghdr, msgs)
	r.iovs = make([]unix.Iovec, msgs)
	r.names = make([]unix.RawSockaddrInet4, msgs)
	for i := range r.msgs {
		h := &r.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		if gro {
			setIovec(&r.iovs[i], r.scratch[i])
			h.Control = &r.ctrl[i*ctrlSpace]
		}
	}
	r.recv = r.do
}

// do receives r.want messages. It returns false, asking the netpoller to
// wait, while none is queued.
func (r *rxBatch) do(fd uintptr) bool {
	for {
		n, errno := recvmmsg(fd, r.msgs[:r.want])
		switch errno {
		case 0:
			r.n = n
			return true
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			r.errno = errno
			return true
		}
	}
}

// receive runs one recvmmsg of want messages through the netpoller.
func (c *stdConn) receive(want int) error {
	r := &c.rx
	for i := range want {
		r.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		r.msgs[i].Hdr.Flags = 0
		if r.gro {
			r.msgs[i].Hdr.SetControllen(ctrlSpace)
		}
	}
	r.want, r.n, r.errno = want, 0, 0
	if err := c.rc.Read(r.recv); err != nil {
		return c.fail("recvmmsg", err)
	}
	if r.errno != 0 {
		return c.fail("recvmmsg", r.errno)
	}
	return nil
}

func (c *stdConn) ReadBatch(bufs [][]byte, sizes []int, srcs []netip.AddrPort) (int, error) {
	r := &c.rx
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(bufs) == 0 {
		return 0, nil
	}
	if r.gro {
		return c.readSplit(bufs, sizes, srcs)
	}

	want := min(len(bufs), len(r.msgs))
	for i := range want {
		setIovec(&r.iovs[i], bufs[i])
	}
	err := c.receive(want)
	clear(r.iovs[:want]) // keep none of the caller's buffers alive
	if err != nil {
		return 0, err
	}
	for i := range r.n {
		sizes[i] = int(r.msgs[i].Len)
		srcs[i] = addrPort(&r.names[i])
	}
	return r.n, nil
}

// readSplit is ReadBatch with GRO: it delivers what is left of the last
// recvmmsg, or receives anew, splitting coalesced datagrams.
func (c *stdConn) readSplit(bufs [][]byte, sizes []int, srcs []netip.AddrPort) (int, error) {
	r := &c.rx
	if r.next >= r.n {
		r.next, r.off = 0, 0
		if err := c.receive(len(r.msgs)); err != nil {
			r.n = 0
			return 0, err
		}
	}
	filled := 0
	for filled < len(bufs) && r.next < r.n {
		m := &r.msgs[r.next]
		data := r.scratch[r.next][:m.Len]
		seg := groSize(r.ctrl[r.next*ctrlSpace:][:m.Hdr.Controllen])
		k, used := splitSegments(bufs[filled:], sizes[filled:], data[r.off:], seg)
		src := addrPort(&r.names[r.next])
		for i := filled; i < filled+k; i++ {
			srcs[i] = src
		}
		filled += k
		if r.off += used; r.off >= len(data) {
			r.next, r.off = r.next+1, 0
		}
	}
	return filled, nil
}

// txBatch holds what sendmmsg needs, reused by every WriteBatch. A batch is
// sent in chunks of len(iovs) datagrams; message k of a chunk carries
// segs[k] datagrams from first[k] on.
type txBatch struct {
	mu       sync.Mutex
	msgs     []unix.Mmsghdr
	iovs     []unix.Iovec // one per datagram
	names    []unix.RawSockaddrInet4
	ctrl     []byte // ctrlSpace bytes per message, for UDP_SEGMENT
	first    []int
	segs     []int
	sendmmsg mmsgFunc
	send     func(fd uintptr) bool // t.do, bound once

	// Per chunk.
	count int // messages built
	next  int // next message to send
	// When a segmented message fails, the rest of the chunk is sent
	// unsegmented from datagram resend on; gsoBroken turns GSO off.
	resend    int
	gsoBroken bool

	// Per call.
	sent    int
	dropped int
	errAddr netip.AddrPort
	err     error
}

func (t *txBatch) init(batch int, gso bool) {
	t.msgs = make([]unix.Mmsghdr, batch)
	t.iovs = make([]unix.Iovec, batch)
	t.names = make([]unix.RawSockaddrInet4, batch)
	t.first = make([]int, batch)
	t.segs = make([]int, batch)
	if gso {
		t.ctrl = make([]byte, batch*ctrlSpace)
	}
	for i := range t.msgs {
		t.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&t.names[i]))
	}
	t.sendmmsg = sendmmsg
	t.send = t.do
}

// sendable reports whether dst is an address this IPv4 socket can send to.
func sendable(dst netip.AddrPort) bool {
	return dst.Addr().Unmap().Is4()
}

// refuse records that segs datagrams to dst were refused.
func (t *txBatch) refuse(dst netip.AddrPort, err error, segs int) {
	if t.dropped == 0 {
		t.errAddr, t.err = dst, err
	}
	t.dropped += segs
}

// build lays out one chunk of datagrams as messages, one per datagram or,
// with gso, one per segmentRun. Datagrams to unsendable destinations are
// skipped: WriteBatch has refused them already.
func (t *txBatch) build(bufs [][]byte, dsts []netip.AddrPort, gso bool) {
	t.count, t.next, t.resend, t.gsoBroken = 0, 0, -1, false
	for i := 0; i < len(bufs); {
		if !sendable(dsts[i]) {
			i++
			continue
		}
		segs := 1
		if gso {
			segs = SegmentRun(bufs[i:], dsts[i:])
		}
		for j := i; j < i+segs; j++ {
			setIovec(&t.iovs[j], bufs[j])
		}
		k := t.count
		putSockaddr(&t.names[k], dsts[i])
		h := &t.msgs[k].Hdr
		h.Namelen = unix.SizeofSockaddrInet4
		h.Iov = &t.iovs[i]
		h.SetIovlen(segs)
		if segs > 1 {
			ctrl := t.ctrl[k*ctrlSpace:]
			h.Control = &ctrl[0]
			h.SetControllen(putSegmentCmsg(ctrl, len(bufs[i])))
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
		t.first[k], t.segs[k] = i, segs
		t.count++
		i += segs
	}
}

// do sends the chunk's messages from t.next on. It returns false, asking
// the netpoller to wait, when the send buffer is full. sendmmsg stops at
// the first message it cannot send; that one is refused and the rest sent
// by the next round of the loop.
func (t *txBatch) do(fd uintptr) bool {
	for t.next < t.count {
		n, errno := t.sendmmsg(fd, t.msgs[t.next:t.count])
		if errno == 0 && n <= 0 {
			errno = unix.EIO // impossible for a nonempty batch; do not spin on it
		}
		switch {
		case errno == 0:
			for _, s := range t.segs[t.next : t.next+n] {
				t.sent += s
			}
			t.next += n
		case errno == unix.EINTR:
		case errno == unix.EAGAIN:
			return false
		case t.segs[t.next] > 1:
			// EIO: the egress device cannot segment UDP. Others, such
			// as EINVAL for a segment above the path MTU, would refuse
			// the whole run; sent unsegmented, only its oversized
			// datagrams are.
			t.resend = t.first[t.next]
			t.gsoBroken = errno == unix.EIO
			return true
		default:
			t.refuse(addrPort(&t.names[t.next]), errno, 1)
			t.next++
		}
	}
	return true
}

func (c *stdConn) WriteBatch(bufs [][]byte, dsts []netip.AddrPort) (int, error) {
	t := &c.tx
	t.mu.Lock()
	defer t.mu.Unlock()

	t.sent, t.dropped, t.errAddr, t.err = 0, 0, netip.AddrPort{}, nil
	for i := range bufs {
		if !sendable(dsts[i]) {
			t.refuse(dsts[i], unix.EAFNOSUPPORT, 1)
		}
	}
	gso := c.gso.Load()
	for pos := 0; pos < len(bufs); {
		end := min(pos+len(t.iovs), len(bufs))
		t.build(bufs[pos:end], dsts[pos:end], gso)
		err := c.rc.Write(t.send)
		clear(t.iovs[:end-pos]) // keep none of the caller's buffers alive
		if err != nil {
			return t.sent, c.fail("sendmmsg", err)
		}
		if t.resend >= 0 {
			if t.gsoBroken {
				c.gso.Store(false)
			}
			pos, gso = pos+t.resend, false
			continue
		}
		pos = end
	}
	if t.dropped > 0 {
		return t.sent, &WriteError{Dropped: t.dropped, Addr: t.errAddr, Err: t.err}
	}
	return t.sent, nil
}
