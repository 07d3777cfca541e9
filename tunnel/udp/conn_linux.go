package udp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/tunnel/busypoll"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

var (
	_ underlay.Conn     = (*stdConn)(nil)
	_ underlay.Counting = (*stdConn)(nil)
	_ Configured        = (*stdConn)(nil)
)

// Listen opens a UDP socket bound to laddr, which must be IPv4, exactly as
// flanneld binds <interface address>:8285. Port 0 lets the kernel choose;
// LocalAddr reports its choice. With opts.Queues > 1 it also opens the
// Conn's sending socket (see Options.Queue). The sockets belong to the
// network namespace of the calling thread.
func Listen(laddr netip.AddrPort, opts Options) (underlay.Conn, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("udp: listen on %v: %w", laddr, err)
	}
	addr := laddr.Addr().Unmap()
	if !addr.Is4() {
		return nil, fmt.Errorf("udp: listen on %v: not an IPv4 address", laddr)
	}
	laddr = netip.AddrPortFrom(addr, laddr.Port())

	fd, err := bind(laddr, opts.ReusePort)
	if err != nil {
		return nil, fmt.Errorf("udp: listen on %v: %w", laddr, err)
	}
	txFd, err := steer(fd, addr, opts)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udp: listen on %v: %w", laddr, err)
	}
	c, err := newStdConn(fd, txFd, opts)
	if err != nil {
		unix.Close(fd)
		if txFd != fd {
			unix.Close(txFd)
		}
		return nil, fmt.Errorf("udp: listen on %v: %w", laddr, err)
	}
	return c, nil
}

// steer returns the socket that Conn opts.Queue of a group of opts.Queues
// sends from: fd itself with one queue, else a socket of its own on addr
// whose port mod Queues is Queue. Conn 0 attaches the group's steering,
// which hands a datagram from port p to the group's socket p mod Queues.
func steer(fd int, addr netip.Addr, opts Options) (txFd int, err error) {
	if opts.Queues <= 1 {
		return fd, nil
	}
	if opts.Queue == 0 {
		if err := attachSteering(fd, opts.Queues); err != nil {
			return -1, err
		}
	}
	txFd, _, err = bindSourcePort(addr, opts.Queue, opts.Queues)
	if err != nil {
		return -1, fmt.Errorf("source port for queue %d of %d: %w", opts.Queue, opts.Queues, err)
	}
	return txFd, nil
}

// bind opens a blocking UDP socket bound to laddr. It stays out of Go's
// netpoller: a socket registered there would wake the netpoller's thread
// for every datagram, to find nobody waiting.
func bind(laddr netip.AddrPort, reusePort bool) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("SO_REUSEPORT: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: laddr.Addr().As4(), Port: int(laddr.Port())}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// stdConn is a Conn on a kernel UDP socket in blocking mode: a ReadBatch
// sleeps in recvmmsg and the kernel wakes its thread directly when a
// datagram arrives, with no netpoller and no goroutine hand-off on the way
// (see doc/DESIGN-NOTES.md, "Latency"). Close wakes such calls with
// shutdown(2), then closes the descriptor once none is using it.
//
// With Options.Queues > 1 it sends from a socket of its own, txFd, bound to
// sendAddr; else txFd is fd.
type stdConn struct {
	fd, txFd int // -1 once closed; under both rx.mu and tx.mu
	closed   atomic.Bool
	laddr    netip.AddrPort
	sendAddr netip.AddrPort
	opts     Options // as granted; the Sender may turn GSO off later
	unsup    error   // the offloads asked for that the kernel lacks

	rx       rxBatch
	received atomic.Uint64
	tx       txLayout
	txConn   blockingWriter
	sender   *underlay.Sender
}

func newStdConn(fd, txFd int, opts Options) (*stdConn, error) {
	c := &stdConn{fd: fd, txFd: txFd}
	var err error
	if c.laddr, err = sockname(fd); err != nil {
		return nil, err
	}
	if c.sendAddr, err = sockname(txFd); err != nil {
		return nil, err
	}
	if c.unsup, err = configure(fd, &opts); err != nil {
		return nil, err
	}
	if txFd != fd {
		// Only the send side matters here: the socket receives nothing.
		txOpts := opts
		txOpts.RecvBuffer, txOpts.GRO = -1, false
		if _, err = configure(txFd, &txOpts); err != nil {
			return nil, fmt.Errorf("sending socket: %w", err)
		}
		opts.SendBuffer, opts.GSO = txOpts.SendBuffer, opts.GSO && txOpts.GSO
	}
	c.opts = opts
	c.rx.init(fd, &c.closed, opts.BatchSize, opts.GRO)
	c.rx.win.Init(opts.BusyPoll)
	c.initTx(nil)
	return c, nil
}

// sockname is the IPv4 address fd is bound to.
func sockname(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockname: %w", err)
	}
	sa4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("getsockname: %T, want an IPv4 address", sa)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(sa4.Port)), nil
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
func (c *stdConn) SendAddr() netip.AddrPort  { return c.sendAddr }

func (c *stdConn) Effective() Options {
	o := c.opts
	o.GSO = c.sender.GSO()
	return o
}

// WaitsInKernel reports that ReadBatch and WriteBatch wait in the kernel,
// holding their thread, not in Go's netpoller.
func (c *stdConn) WaitsInKernel() bool { return true }

func (c *stdConn) Close() error {
	if c.closed.Swap(true) {
		return net.ErrClosed
	}
	// Closing a descriptor does not wake the calls sleeping on it;
	// shutdown does.
	errs := []error{shutdown(c.fd)}
	if c.txFd != c.fd {
		errs = append(errs, shutdown(c.txFd))
	}
	// Once both locks are held, no call uses the descriptors any more.
	c.rx.mu.Lock()
	c.tx.mu.Lock()
	errs = append(errs, unix.Close(c.fd))
	if c.txFd != c.fd {
		errs = append(errs, unix.Close(c.txFd))
	}
	c.fd, c.txFd = -1, -1
	c.tx.mu.Unlock()
	c.rx.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("udp: close on %v: %w", c.laddr, err)
	}
	return nil
}

// shutdown wakes the calls asleep on fd and makes later ones return at
// once. On a socket that is not connected it also says ENOTCONN, which
// means nothing.
func shutdown(fd int) error {
	if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil && !errors.Is(err, unix.ENOTCONN) {
		return err
	}
	return nil
}

// fail wraps err, or says net.ErrClosed once the socket is closed: the
// error of a call that Close woke means nothing more.
func (c *stdConn) fail(op string, err error) error {
	if c.closed.Load() || errors.Is(err, net.ErrClosed) {
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

	fd    int // the receiving socket, for try
	win   busypoll.Window
	try   func() bool  // one recvmmsg that does not wait, for win.Poll
	block func() error // recvmmsg until the first message, for win.Wait

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

func (r *rxBatch) init(fd int, closed *atomic.Bool, batch int, gro bool) {
	r.fd = fd
	// Bound once: a closure made per call would allocate. A Close during
	// a poll ends it: a recvmmsg that does not wait says EAGAIN even after
	// shutdown(2).
	r.try = func() bool {
		if closed.Load() {
			return true
		}
		n, errno := recvmmsgNow(uintptr(r.fd), r.msgs[:r.want])
		if errno == unix.EAGAIN || errno == unix.EINTR {
			return false
		}
		r.n, r.errno = n, errno
		return true
	}
	r.block = func() error {
		for {
			n, errno := recvmmsgWait(uintptr(r.fd), r.msgs[:r.want])
			if errno != unix.EINTR {
				r.n, r.errno = n, errno
				return nil // errno is the caller's to read
			}
		}
	}
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
			underlay.SetIovec(&r.iovs[i], r.scratch[i])
			h.Control = &r.ctrl[i*ctrlSpace]
		}
	}
}

// do receives up to r.want messages, sleeping until the first arrives,
// after polling for the busy-poll window.
func (r *rxBatch) do() {
	// With the window open, a datagram already queued is taken at once:
	// Poll would yield the CPU before its first try.
	if r.win.Open() && r.try() {
		return
	}
	r.win.Wait(r.try, r.block)
}

// receive runs one recvmmsg of want messages. The caller holds r.mu.
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
	if c.closed.Load() {
		return net.ErrClosed
	}
	r.do()
	switch {
	case c.closed.Load():
		// Woken by Close's shutdown: what was received, if anything,
		// is empty.
		r.n = 0
		return net.ErrClosed
	case r.errno != 0:
		r.n = 0
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
		underlay.SetIovec(&r.iovs[i], bufs[i])
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
	c.received.Add(uint64(r.n))
	r.win.Delivered(r.n)
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
		k, off := underlay.SplitSegments(bufs[filled:], sizes[filled:], data, seg, r.off)
		src := addrPort(&r.names[r.next])
		for i := filled; i < filled+k; i++ {
			srcs[i] = src
		}
		filled += k
		if r.off = off; r.off >= len(data) {
			r.next, r.off = r.next+1, 0
		}
	}
	c.received.Add(uint64(filled))
	r.win.Delivered(filled)
	return filled, nil
}

// txLayout lays out WriteBatch's datagrams as sendmmsg messages for the
// Sender: one per datagram or, with GSO, one per SegmentRun, each with its
// destination's sockaddr and, for a run, a UDP_SEGMENT control message.
type txLayout struct {
	mu    sync.Mutex
	iovs  []unix.Iovec // one per datagram
	names []unix.RawSockaddrInet4
	ctrl  []byte // ctrlSpace bytes per message, for UDP_SEGMENT
	built int    // datagrams of the last chunk
	msgs  int    // messages of the last chunk
}

func (t *txLayout) init(batch int, gso bool) {
	t.iovs = make([]unix.Iovec, batch)
	t.names = make([]unix.RawSockaddrInet4, batch)
	if gso {
		t.ctrl = make([]byte, batch*ctrlSpace)
	}
}

// initTx sets up WriteBatch, sending with send (nil: sendmmsg(2) with
// MSG_NOSIGNAL).
func (c *stdConn) initTx(send underlay.MmsgFunc) {
	if send == nil {
		send = sendmmsg
	}
	c.tx.init(c.opts.BatchSize, c.opts.GSO)
	c.txConn.c = c
	c.sender = underlay.NewSender(underlay.SenderConfig{
		Conn:     &c.txConn,
		Messages: c.opts.BatchSize,
		Layout:   &c.tx,
		GSO:      c.opts.GSO,
		NoGSO:    unix.EIO, // the egress device cannot segment UDP
		Fail:     c.fail,
		Sendmmsg: send,
	})
}

// blockingWriter runs the Sender's sendmmsg calls on the blocking socket.
// They sleep while the send buffer is full; should one nevertheless say
// EAGAIN (a send timeout), Write sleeps in poll(2) until the socket is
// writable or shut down. The caller holds tx.mu.
type blockingWriter struct {
	c    *stdConn
	poll [1]unix.PollFd // here so as not to allocate
}

func (w *blockingWriter) Write(f func(fd uintptr) (done bool)) error {
	c := w.c
	if c.closed.Load() {
		return net.ErrClosed
	}
	for !f(uintptr(c.txFd)) && !c.closed.Load() {
		w.poll[0] = unix.PollFd{Fd: int32(c.txFd), Events: unix.POLLOUT}
		if _, err := unix.Poll(w.poll[:], -1); err != nil && err != unix.EINTR {
			return fmt.Errorf("poll: %w", err)
		}
	}
	if c.closed.Load() {
		// Woken by Close's shutdown: what sendmmsg said since means
		// nothing more.
		return net.ErrClosed
	}
	return nil
}

// sendable reports whether dst is an address this IPv4 socket can send to.
func sendable(dst netip.AddrPort) bool {
	return dst.Addr().Unmap().Is4()
}

// Build lays out one chunk. Datagrams to destinations that are not IPv4
// are refused.
func (t *txLayout) Build(s *underlay.Sender, bufs [][]byte, dsts []netip.AddrPort, gso bool) {
	t.built, t.msgs = len(bufs), 0
	for i := 0; i < len(bufs); {
		if !sendable(dsts[i]) {
			s.Refuse(i, dsts[i], unix.EAFNOSUPPORT)
			i++
			continue
		}
		segs := 1
		if gso {
			segs = underlay.SegmentRun(bufs[i:], dsts[i:])
		}
		for j := i; j < i+segs; j++ {
			underlay.SetIovec(&t.iovs[j], bufs[j])
		}
		k, h := s.Add(i, segs, dsts[i])
		putSockaddr(&t.names[k], dsts[i])
		h.Name = (*byte)(unsafe.Pointer(&t.names[k]))
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
		t.msgs++
		i += segs
	}
}

// Release forgets the chunk's buffers.
func (t *txLayout) Release() { clear(t.iovs[:t.built]) }

func (c *stdConn) WriteBatch(bufs [][]byte, dsts []netip.AddrPort) (int, error) {
	c.tx.mu.Lock()
	defer c.tx.mu.Unlock()
	return c.sender.Write(bufs, dsts)
}

// BusyPollStats reports what ReadBatch's busy-poll window did.
func (c *stdConn) BusyPollStats() busypoll.Stats { return c.rx.win.Stats() }

// Counters reports the datagrams received and sent, and whether GSO was
// turned off.
func (c *stdConn) Counters() underlay.Counters {
	return underlay.Counters{
		underlay.CounterReceived:    c.received.Load(),
		underlay.CounterSent:        c.sender.Sent(),
		underlay.CounterGSODisabled: b2u(c.sender.GSODisabled()),
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
