package afpacket

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/ringbuf"
	"github.com/overlayd/overlayd/tunnel/busypoll"
	"github.com/overlayd/overlayd/tunnel/pollwake"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

var (
	_ underlay.Conn     = (*conn)(nil)
	_ underlay.Counting = (*conn)(nil)
	_ Configured        = (*conn)(nil)
)

// Listen opens an AF_PACKET underlay on the Ethernet interface iface for
// the UDP address laddr (IPv4, port not 0): ReadBatch returns the
// datagrams that arrive on iface for laddr, WriteBatch sends datagrams
// from laddr out of iface. It installs the Guard of opts (shared through
// opts.Group) before it returns. The socket, the Guard and the neighbour
// lookups belong to the network namespace of the calling thread, whatever
// goroutine later uses or closes the Conn.
func Listen(iface string, laddr netip.AddrPort, opts Options) (underlay.Conn, error) {
	c, err := listen(iface, laddr, opts)
	if err != nil {
		return nil, fmt.Errorf("afpacket: listen on %s %v: %w", iface, laddr, err)
	}
	return c, nil
}

func listen(iface string, laddr netip.AddrPort, opts Options) (*conn, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	laddr = netip.AddrPortFrom(laddr.Addr().Unmap(), laddr.Port())
	if !laddr.Addr().Is4() || laddr.Port() == 0 {
		return nil, errors.New("need an IPv4 address and a port")
	}
	g := opts.Group
	if g == nil {
		g = new(Group) // a group of one: no fanout
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s, err := g.join(iface, laddr, opts.Guard)
	if err != nil {
		return nil, err
	}
	c, err := open(s, laddr, opts, opts.Group != nil)
	if err != nil {
		g.leave()
		return nil, err
	}
	c.group = g
	opts.Group = nil // Effective should not keep the group alive or expose it
	opts.Guard = s.guardKind
	c.opts = opts
	return c, nil
}

// conn is a Conn on one AF_PACKET socket.
type conn struct {
	// The socket: nonblocking and out of Go's netpoller (see the package
	// doc). Used under rx.mu or tx.mu, or under statsMu while not closed;
	// Close closes it holding all three.
	fd     int
	txConn fdWriter
	ring   rxRing
	mem    []byte // the mmap'd receive ring
	laddr  netip.AddrPort
	opts   Options
	group  *Group
	closed atomic.Bool

	rx     rxState
	tx     txLayout
	sender *underlay.Sender

	stats      counters
	statsMu    sync.Mutex
	ringDrops  uint64 // PACKET_STATISTICS drops, read-and-cleared by the kernel
	closeOnce  sync.Once
	closeError error
}

// rxRing is a receive ring, ringbuf.V2Ring or ringbuf.V3Ring.
type rxRing interface {
	Next() (ringbuf.Frame, bool)
	Ready() bool
	Release()
	Corrupt() uint64
}

// counters are the Stats updated once per batch; the Sender counts what
// it sent.
type counters struct {
	received, malformed, badChecksum, truncated atomic.Uint64
	copied                                      atomic.Uint64
	noNeighbour, unroutable                     atomic.Uint64
}

// open makes the socket and its ring, bound to s's interface.
func open(s *shared, laddr netip.AddrPort, opts Options, fanout bool) (_ *conn, err error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	c := &conn{laddr: laddr}
	defer func() {
		if err != nil {
			if c.rx.wake != nil {
				c.rx.wake.Close()
			}
			if c.mem != nil {
				unix.Munmap(c.mem)
			}
			unix.Close(fd)
		}
	}()
	// Protocol 0 receives nothing: the filter is in place before bind
	// lets the first frame in.
	prog, err := filterProgram(laddr, ringMatch)
	if err != nil {
		return nil, err
	}
	if err := attachFilter(fd, prog); err != nil {
		return nil, fmt.Errorf("SO_ATTACH_FILTER: %w", err)
	}
	for _, o := range []struct {
		name     string
		opt, val int
	}{
		{"PACKET_VERSION", unix.PACKET_VERSION, tpacketVersion[opts.Ring]},
		// Every frame read or written starts with a virtio_net_hdr,
		// which tells GSO super-datagrams apart and carries their
		// segment size.
		{"PACKET_VNET_HDR", unix.PACKET_VNET_HDR, 1},
		// Straight to the driver: the qdisc would only add a lock and
		// a queue (and tcpdump on this interface misses the frames).
		{"PACKET_QDISC_BYPASS", unix.PACKET_QDISC_BYPASS, 1},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, o.opt, o.val); err != nil {
			return nil, fmt.Errorf("%s: %w", o.name, err)
		}
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, opts.SendBuffer) != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, opts.SendBuffer); err != nil {
			return nil, fmt.Errorf("SO_SNDBUF: %w", err)
		}
	}

	if err := c.mapRing(fd, opts, s.link.mtu); err != nil {
		return nil, err
	}

	// ETH_P_ALL: the tap runs before tc ingress, where GuardTC drops.
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: s.link.index}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("bind to %s: %w", s.iface, err)
	}
	if fanout {
		if err := s.joinFanout(fd); err != nil {
			return nil, err
		}
	} else {
		// Best effort (Linux 4.20): the filter rejects our own frames
		// anyway, this spares the kernel running it on them.
		unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}

	c.fd = fd
	if c.rx.wake, err = pollwake.New(); err != nil {
		return nil, err
	}
	c.rx.poll = c.rx.wake.Set(fd, unix.POLLIN)
	c.txConn = fdWriter{c: c, poll: c.rx.wake.Set(fd, unix.POLLOUT)}
	c.rx.win.Init(opts.BusyPoll)
	// Bound once: a closure made per call would allocate. A Close
	// during a look ends it.
	c.rx.ready = func() bool { return c.closed.Load() || c.ring.Ready() }
	c.tx.init(opts.BatchSize, s, laddr)
	c.sender = underlay.NewSender(underlay.SenderConfig{
		Conn:     &c.txConn,
		Messages: opts.BatchSize,
		Layout:   &c.tx,
		GSO:      opts.GSO,
		NoGSO:    unix.EINVAL, // no UDP GSO from packet sockets before Linux 6.2
		Fail:     c.fail,
	})
	return c, nil
}

var tpacketVersion = [...]int{RingV2: unix.TPACKET_V2, RingV3: unix.TPACKET_V3}

// v2FrameSize is a RingV2's slot size for an interface MTU: the
// tpacket2_hdr, sockaddr_ll, virtio_net_hdr and an Ethernet header (the
// kernel puts the IP header at TPACKET_ALIGN(52+16)+10 = 90), then the
// datagram, rounded up to a power of two to divide the block.
func v2FrameSize(mtu, blockSize int) int {
	size := 2048
	for size < 96+mtu && size < blockSize {
		size *= 2
	}
	return size
}

// copyBufSize holds any frame the kernel queues whole: a virtio_net_hdr,
// an Ethernet header and an IPv4 packet of up to 64 KiB.
const copyBufSize = vnetLen + 14 + 65535

// copyQueueBuffer is a RingV2 socket's receive buffer, which bounds the
// frames queued whole: some 30 to 60 GSO super-datagrams.
const copyQueueBuffer = 4 << 20

// mapRing sets up and maps the receive ring of opts.Ring.
func (c *conn) mapRing(fd int, opts Options, mtu int) error {
	size := opts.Blocks * opts.BlockSize
	if opts.Ring == RingV2 {
		frameSize := v2FrameSize(mtu, opts.BlockSize)
		// Larger frames are queued whole on the socket as well as cut
		// to their slot (TP_STATUS_COPY), up to the receive buffer.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_COPY_THRESH, 1); err != nil {
			return fmt.Errorf("PACKET_COPY_THRESH: %w", err)
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, copyQueueBuffer) != nil {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, copyQueueBuffer); err != nil {
				return fmt.Errorf("SO_RCVBUF: %w", err)
			}
		}
		req := unix.TpacketReq{
			Block_size: uint32(opts.BlockSize),
			Block_nr:   uint32(opts.Blocks),
			Frame_size: uint32(frameSize),
			Frame_nr:   uint32(opts.Blocks * (opts.BlockSize / frameSize)),
		}
		if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
			return fmt.Errorf("PACKET_RX_RING of %d blocks of %d bytes, frames of %d: %w", opts.Blocks, opts.BlockSize, frameSize, err)
		}
		var err error
		if c.mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			return fmt.Errorf("mmap ring: %w", err)
		}
		c.rx.hdrLen = ringbuf.TPacket2HeaderLen
		c.rx.copyBuf = make([]byte, copyBufSize)
		c.ring, err = ringbuf.NewV2Ring(c.mem, opts.BlockSize, opts.Blocks, frameSize)
		return err
	}
	const frameSize = 2048 // V3 packs frames as they come; this only has to divide the block
	req := unix.TpacketReq3{
		Block_size:     uint32(opts.BlockSize),
		Block_nr:       uint32(opts.Blocks),
		Frame_size:     frameSize,
		Frame_nr:       uint32(size / frameSize),
		Retire_blk_tov: uint32(opts.BlockTimeout.Milliseconds()),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("PACKET_RX_RING of %d blocks of %d bytes: %w", opts.Blocks, opts.BlockSize, err)
	}
	var err error
	if c.mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return fmt.Errorf("mmap ring: %w", err)
	}
	c.rx.hdrLen = ringbuf.TPacket3HeaderLen
	c.ring, err = ringbuf.NewV3Ring(c.mem, opts.BlockSize, opts.Blocks)
	return err
}

func attachFilter(fd int, prog []bpf.RawInstruction) error {
	filters := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filters[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filters)), Filter: &filters[0]}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *conn) BatchSize() int            { return c.opts.BatchSize }
func (c *conn) LocalAddr() netip.AddrPort { return c.laddr }
func (c *conn) Effective() Options {
	o := c.opts
	o.GSO = c.sender.GSO()
	return o
}

func (c *conn) Stats() Stats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	c.countRingDrops()
	return Stats{
		Received:    c.stats.received.Load(),
		Sent:        c.sender.Sent(),
		Malformed:   c.stats.malformed.Load(),
		BadChecksum: c.stats.badChecksum.Load(),
		Truncated:   c.stats.truncated.Load(),
		Copied:      c.stats.copied.Load(),
		RingDrops:   c.ringDrops,
		Corrupt:     c.ring.Corrupt(),
		NoNeighbour: c.stats.noNeighbour.Load(),
		Unroutable:  c.stats.unroutable.Load(),
		GSODisabled: c.sender.GSODisabled(),
	}
}

// countRingDrops adds the kernel's ring drop count, which reading clears,
// to c.ringDrops. The caller holds statsMu, under which Close marks the
// socket closed before it closes it.
func (c *conn) countRingDrops() {
	if c.closed.Load() {
		return
	}
	if st, err := unix.GetsockoptTpacketStatsV3(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
		c.ringDrops += uint64(st.Drops)
	}
}

// BusyPollStats reports what ReadBatch's busy-poll window did.
func (c *conn) BusyPollStats() busypoll.Stats { return c.rx.win.Stats() }

// Counters reports Stats by name, for `overlayd status` and /metrics.
func (c *conn) Counters() underlay.Counters {
	st := c.Stats()
	gsoOff := uint64(0)
	if st.GSODisabled {
		gsoOff = 1
	}
	return underlay.Counters{
		underlay.CounterReceived: st.Received, underlay.CounterSent: st.Sent,
		underlay.CounterGSODisabled: gsoOff,
		"malformed":                 st.Malformed, "bad_checksum": st.BadChecksum, "truncated": st.Truncated, "copied": st.Copied,
		"ring_drops": st.RingDrops, "corrupt_blocks": st.Corrupt,
		"no_neighbour": st.NoNeighbour, "unroutable": st.Unroutable,
	}
}

// Close closes the socket, waits for ReadBatch and WriteBatch to return,
// unmaps the ring and, for the last Conn of its Group, removes the Guard.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.statsMu.Lock()
		c.countRingDrops() // the kernel's drop count dies with the socket
		c.closed.Store(true)
		c.statsMu.Unlock()
		// Wakes a ReadBatch or WriteBatch asleep in poll now and keeps
		// a later poll from sleeping; once both have returned, nothing
		// uses the socket.
		err := c.rx.wake.Wake()
		c.rx.mu.Lock()
		c.tx.mu.Lock()
		if cerr := unix.Close(c.fd); cerr != nil && err == nil {
			err = cerr
		}
		if merr := unix.Munmap(c.mem); merr != nil && err == nil {
			err = merr
		}
		if werr := c.rx.wake.Close(); werr != nil && err == nil {
			err = werr
		}
		c.tx.mu.Unlock()
		c.rx.mu.Unlock()
		c.group.mu.Lock()
		if gerr := c.group.leave(); gerr != nil && err == nil {
			err = gerr
		}
		c.group.mu.Unlock()
		if err != nil {
			c.closeError = fmt.Errorf("afpacket: close %v: %w", c.laddr, err)
		}
	})
	return c.closeError
}

// WaitsInKernel reports that ReadBatch and WriteBatch sleep in the kernel
// (poll(2)), holding their thread, not in Go's netpoller: the kernel wakes
// the very thread that then reads or sends, with no goroutine hand-off, as
// with the UDP socket.
func (c *conn) WaitsInKernel() bool { return true }

// fail maps the error of a closed socket to net.ErrClosed and wraps others.
func (c *conn) fail(op string, err error) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return fmt.Errorf("afpacket: %s on %v: %w", op, c.laddr, err)
}

// rxState is ReadBatch's, reused by every call.
type rxState struct {
	mu sync.Mutex
	// ReadBatch sleeps in poll(2) on the socket and on wake, which Close
	// wakes (see WaitsInKernel); poll is that set. WriteBatch's fdWriter
	// waits on wake too.
	wake    *pollwake.Waker
	poll    pollwake.Set
	wakeups atomic.Uint64 // poll returns, for tests
	win     busypoll.Window
	ready   func() bool // whether the ring has a frame, for win.Poll

	hdrLen int // the ring's frame header: a virtio_net_hdr may follow

	// A RingV2 frame marked TP_STATUS_COPY is read whole from the
	// socket into copyBuf.
	copyBuf []byte

	// A GSO super-datagram not yet delivered whole: payload[off:] is
	// still to be cut into segment-byte datagrams from src. It lies in
	// the ring, whose block is not released until it is done.
	rest    []byte
	segment int
	off     int
	src     netip.AddrPort
}

func (c *conn) ReadBatch(bufs [][]byte, sizes []int, srcs []netip.AddrPort) (int, error) {
	r := &c.rx
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(bufs) == 0 {
		return 0, nil
	}
	for {
		if c.closed.Load() {
			return 0, net.ErrClosed
		}
		if n := c.fill(bufs, sizes, srcs); n > 0 {
			if r.rest == nil {
				c.ring.Release() // the kernel may have it back now
			}
			r.win.Delivered(n)
			return n, nil
		}
		// Nothing handed over yet: watch the ring for the busy-poll
		// window, then sleep until the kernel hands over a frame
		// (RingV2) or a block (RingV3), or Close wakes us.
		caught, err := r.win.Wait(r.ready, r.poll.Wait)
		if caught {
			continue
		}
		if err != nil {
			return 0, c.fail("poll", err)
		}
		r.wakeups.Add(1)
		if r.poll.Revents()&unix.POLLERR != 0 {
			// A socket error (ENETDOWN while the interface is down)
			// keeps poll from sleeping until it is read, which clears
			// it.
			unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		}
	}
}

// fill delivers the datagrams the ring holds into bufs without waiting.
func (c *conn) fill(bufs [][]byte, sizes []int, srcs []netip.AddrPort) int {
	r := &c.rx
	var n int
	var malformed, badSum, truncated, copied uint64
	for n < len(bufs) {
		if r.rest != nil {
			k, off := underlay.SplitSegments(bufs[n:], sizes[n:], r.rest, r.segment, r.off)
			for i := n; i < n+k; i++ {
				srcs[i] = r.src
			}
			n += k
			if r.off = off; off >= len(r.rest) {
				r.rest = nil
			}
			continue
		}
		f, ok := c.ring.Next()
		if !ok {
			break
		}
		var vnet []byte
		if f.Mac >= r.hdrLen+vnetLen {
			vnet = f.Raw[f.Mac-vnetLen : f.Mac]
		}
		data, size := f.Data(), f.Len
		if f.Status&ringbuf.TPStatusCopy != 0 {
			vnet, data, size = c.readCopied()
			copied++
		}
		d, why := parse(vnet, data, size, f.Status, c.laddr)
		switch why {
		case delivered:
			r.rest, r.segment, r.off, r.src = d.payload, d.segment, 0, d.src
		case dropChecksum:
			badSum++
		case dropTruncated:
			truncated++
		default:
			malformed++
		}
	}
	c.stats.received.Add(uint64(n))
	if copied > 0 {
		c.stats.copied.Add(copied)
	}
	if malformed+badSum+truncated > 0 {
		c.stats.malformed.Add(malformed)
		c.stats.badChecksum.Add(badSum)
		c.stats.truncated.Add(truncated)
	}
	return n
}

// readCopied reads the frame the kernel queued whole on the socket for the
// RingV2 frame just taken (TP_STATUS_COPY): the next on the queue, in
// order. Failing that, it returns nothing, which parse counts as malformed.
func (c *conn) readCopied() (vnet, data []byte, size int) {
	r := &c.rx
	// Queued before the frame was handed over: no waiting.
	n, err := unix.Read(c.fd, r.copyBuf)
	if err != nil || n < vnetLen {
		return nil, nil, 0
	}
	data = r.copyBuf[vnetLen:n]
	return r.copyBuf[:vnetLen], data, len(data)
}

// txLayout lays out WriteBatch's datagrams as sendmmsg messages for the
// Sender: one per datagram or, with GSO, one per SegmentRun as a UDP GSO
// super-datagram. A message's iovecs are its Ethernet, IPv4 and UDP
// headers (in hdrs) and then the payloads, so that nothing is copied.
type txLayout struct {
	mu     sync.Mutex
	iovs   []unix.Iovec // a header and the payloads of each message, in order
	hdrs   []byte       // txHeaderLen per message
	header *header
	nb     *neighbours
	mtu    int
	id     uint16 // IP identification of the last datagram sent
	used   int    // iovecs of the last chunk

	// Per WriteBatch: the refusals to count, and the last destination's
	// next hop (batches tend to go to one peer).
	noNeigh, noRoute uint64
	lastDst          netip.Addr
	lastHop          hop
	lastValid        bool
}

func (t *txLayout) init(batch int, s *shared, laddr netip.AddrPort) {
	t.iovs = make([]unix.Iovec, 2*batch)
	t.hdrs = make([]byte, batch*txHeaderLen)
	t.header = newHeader(s.link.mac, laddr)
	t.nb = s.neighbours
	t.mtu = s.link.mtu
}

// hop returns the next hop of dst.
func (t *txLayout) hop(dst netip.Addr) hop {
	if !t.lastValid || dst != t.lastDst {
		t.lastDst, t.lastHop, t.lastValid = dst, t.nb.lookup(dst), true
	}
	return t.lastHop
}

// refuse refuses datagram i of the chunk, counting the reasons of its own.
func (t *txLayout) refuse(s *underlay.Sender, i int, dst netip.AddrPort, err error) {
	if !s.Refuse(i, dst, err) {
		return
	}
	switch err {
	case ErrNoNeighbour:
		t.noNeigh++
	case ErrUnroutable:
		t.noRoute++
	}
}

// Build lays out a chunk, skipping the datagrams that cannot go: no IPv4
// destination, too large, next hop unknown.
func (t *txLayout) Build(s *underlay.Sender, bufs [][]byte, dsts []netip.AddrPort, gso bool) {
	t.used = 0
	for i := 0; i < len(bufs); {
		dst := netip.AddrPortFrom(dsts[i].Addr().Unmap(), dsts[i].Port())
		if !dst.Addr().Is4() {
			t.refuse(s, i, dst, unix.EAFNOSUPPORT)
			i++
			continue
		}
		if overhead+len(bufs[i]) > t.mtu {
			t.refuse(s, i, dst, unix.EMSGSIZE)
			i++
			continue
		}
		h := t.hop(dst.Addr())
		if h.state != hopResolved {
			err := ErrNoNeighbour
			if h.state == hopUnroutable {
				err = ErrUnroutable
			}
			t.refuse(s, i, dst, err)
			i++
			continue
		}
		segs := 1
		if gso {
			segs = underlay.SegmentRun(bufs[i:], dsts[i:])
		}
		k, m := s.Add(i, segs, dst)
		hdr := t.hdrs[k*txHeaderLen : (k+1)*txHeaderLen]
		if segs == 1 {
			t.id++
			t.header.write(hdr, h.mac, dst, bufs[i], t.id)
		} else {
			total := 0
			for _, b := range bufs[i : i+segs] {
				total += len(b)
			}
			t.header.writeGSO(hdr, h.mac, dst, total, len(bufs[i]), t.id+1)
			t.id += uint16(segs) // the kernel numbers the segments on
		}
		iov := t.iovs[t.used : t.used+1+segs]
		underlay.SetIovec(&iov[0], hdr)
		for j, b := range bufs[i : i+segs] {
			underlay.SetIovec(&iov[1+j], b)
		}
		m.Iov = &iov[0]
		m.SetIovlen(len(iov))
		t.used += len(iov)
		i += segs
	}
}

// Release forgets the chunk's buffers.
func (t *txLayout) Release() { clear(t.iovs[:t.used]) }

// fdWriter runs the Sender's sendmmsg calls on the nonblocking socket. On
// EAGAIN (the send buffer full) it sleeps in poll(2) until the socket is
// writable or Close wakes it. The caller holds tx.mu.
type fdWriter struct {
	c    *conn
	poll pollwake.Set
}

func (w *fdWriter) Write(f func(fd uintptr) (done bool)) error {
	for {
		if w.c.closed.Load() {
			return net.ErrClosed
		}
		if f(uintptr(w.c.fd)) {
			return nil
		}
		if err := w.poll.Wait(); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
	}
}

// WriteBatch sends through the Sender. An unsegmented datagram the driver
// refuses (ENOBUFS when the device queue is full, with the qdisc bypassed)
// is dropped and the rest sent.
func (c *conn) WriteBatch(bufs [][]byte, dsts []netip.AddrPort) (int, error) {
	t := &c.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	t.noNeigh, t.noRoute, t.lastValid = 0, 0, false
	n, err := c.sender.Write(bufs, dsts)
	c.stats.noNeighbour.Add(t.noNeigh)
	c.stats.unroutable.Add(t.noRoute)
	return n, err
}
