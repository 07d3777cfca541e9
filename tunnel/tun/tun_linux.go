package tun

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/encap/offload"
	"github.com/overlayd/overlayd/tunnel/busypoll"
	"github.com/overlayd/overlayd/tunnel/pollwake"
)

// nativeBatchSize is how many packets a native Device is designed to move
// per call. Without IFF_VNET_HDR each packet still costs one read(2) or
// write(2); the batch saves the netpoller round trips between them.
const nativeBatchSize = 64

// offloadBatchSize is the batch size with offloads: room for the 46
// segments of a 64 KiB super-packet at an MSS of 1432, and then some.
const offloadBatchSize = 128

const tunPath = "/dev/net/tun"

var _ Device = (*nativeDevice)(nil)

// Create opens the TUN interface name through /dev/net/tun, creating it if
// absent, and returns one Device per queue. The interface is opened with
// IFF_TUN|IFF_NO_PI, plus IFF_MULTI_QUEUE when queues > 1, plus
// IFF_VNET_HDR with WithOffloads; an existing interface must have been
// created with the same multi-queue flag. A name such as "tun%d" lets the
// kernel choose; Name reports its choice.
//
// The queues' file descriptors are nonblocking but stay out of Go's
// netpoller: a Read that finds its queue empty sleeps in poll(2), holding
// its thread, and the kernel wakes that thread directly when a packet
// comes (see doc/DESIGN-NOTES.md, "Latency"). The interface is left down
// and unconfigured: the caller sets its MTU, addresses and routes.
//
// The Devices belong to the network namespace of the calling thread. They
// implement FeatureReporter.
func Create(name string, queues int, opts ...Option) ([]Device, error) {
	if queues < 1 {
		return nil, fmt.Errorf("tun: create %q: %d queues, want at least 1", name, queues)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if queues > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	devs := make([]Device, 0, queues)
	for i := range queues {
		var d *nativeDevice
		var err error
		if i == 0 {
			// The first queue settles the flags: the kernel applies
			// each queue's flags to the whole interface, so the others
			// must repeat them.
			d, err = openFirstQueue(name, &flags, &o)
		} else {
			d, err = openQueue(name, flags, &o)
			if err == nil {
				first := devs[0].(*nativeDevice)
				d.setFeatures(first.features, first.offloadErr)
			}
		}
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			return nil, fmt.Errorf("tun: create %q queue %d: %w", name, i, err)
		}
		// Attach the later queues to the interface the first one
		// created, not to a new one from the same pattern.
		name = d.name
		devs = append(devs, d)
	}
	if o.steerCPU && queues > 1 {
		if err := steerByCPU(devs[0].(*nativeDevice)); err != nil {
			for _, d := range devs {
				d.Close()
			}
			return nil, fmt.Errorf("tun: create %q: %w", name, err)
		}
	}
	return devs, nil
}

// privilegeHint says what a refusal for want of privilege needs: access
// to the device file (its mode, or a container's device list) to open it,
// CAP_NET_ADMIN to create an interface with it.
func privilegeHint(op string, err error) string {
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
		return ""
	}
	if op == "open" {
		return " (no access to " + tunPath + ": run as root; in a container, give it the device, e.g. docker run --device " + tunPath + ")"
	}
	return " (creating a TUN interface needs CAP_NET_ADMIN: run as root; in a container, e.g. docker run --cap-add NET_ADMIN)"
}

func openQueue(name string, flags uint16, o *options) (*nativeDevice, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("interface name: %w", err)
	}
	ifr.SetUint16(flags)

	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w%s", tunPath, err, privilegeHint("open", err))
	}
	if err := o.ioctl(unix.TUNSETIFF, uint32(flags), func() error {
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF: %w%s", err, privilegeHint("TUNSETIFF", err))
	}
	vnet := flags&unix.IFF_VNET_HDR != 0
	if vnet {
		// 10 is the kernel's default, but a persistent interface may
		// have been left with another size.
		if err := o.ioctl(unix.TUNSETVNETHDRSZ, offload.VirtioNetHdrLen, func() error {
			return unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, offload.VirtioNetHdrLen)
		}); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
		}
	}
	// Nonblocking, so that a Read takes what is queued without sleeping
	// again; it sleeps in poll.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set nonblocking: %w", err)
	}
	// MTU needs an ioctl on a socket of the interface's network
	// namespace, which is the calling thread's only now.
	ctl, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("control socket: %w", err)
	}

	d, err := newDevice(ifr.Name(), fd, ctl)
	if err != nil {
		unix.Close(fd)
		unix.Close(ctl)
		return nil, err
	}
	d.readWin.Init(o.busyPoll)
	d.mtuReq, _ = unix.NewIfreq(d.name) // valid: it named the interface
	if vnet {
		d.initOffloads(o)
	}
	return d, nil
}

// newDevice makes a Device of the queue fd, nonblocking, and ctl, a
// control socket or -1. It owns both once it succeeds.
func newDevice(name string, fd, ctl int) (*nativeDevice, error) {
	wake, err := pollwake.New()
	if err != nil {
		return nil, err
	}
	d := &nativeDevice{name: name, fd: fd, wake: wake, ctl: ctl}
	d.readPoll = wake.Set(fd, unix.POLLIN)
	d.writePoll = wake.Set(fd, unix.POLLOUT)
	// Bound once here: a method value or closure made per call would
	// allocate on every Read and Write.
	d.readFn = d.read.do
	d.writeFn = d.write.do
	// A Close during a poll ends it: the queue stays open, and empty,
	// until the poll lets go of readMu.
	d.readTry = func() bool { return d.closed.Load() || d.readFn(uintptr(d.fd)) }
	return d, nil
}

// nativeDevice is one queue of a TUN interface opened through /dev/net/tun.
//
// Read and Write sleep in poll(2) on the queue and on wake (pollwake),
// which Close wakes; once it holds every lock below, no call uses the
// descriptors, and it closes them.
type nativeDevice struct {
	name   string // as created; Name asks the kernel for the current one
	closed atomic.Bool

	// fd is the queue, -1 once closed (written under all three locks, so
	// any one of them keeps it valid).
	fd   int
	wake *pollwake.Waker

	ctlMu sync.Mutex
	ctl   int // AF_INET socket for SIOCGIFMTU, or -1

	readMu   sync.Mutex
	read     readOp
	readFn   func(fd uintptr) bool
	readPoll pollwake.Set // the queue for POLLIN, and wake
	readWin  busypoll.Window
	readTry  func() bool // readFn on the queue, for readWin.Poll
	// The last Read found the queue empty: the next one polls first,
	// saving a read(2) that would say EAGAIN.
	readEmpty bool

	writeMu   sync.Mutex
	write     writeOp
	writeFn   func(fd uintptr) bool
	writePoll pollwake.Set // the queue for POLLOUT, and wake

	// With IFF_VNET_HDR (see offload_linux.go).
	vnet       bool
	features   Features
	offloadErr error
	vread      vnetReadOp          // under readMu
	gro        offload.GROTable    // under writeMu
	toWrite    []offload.Coalesced // under writeMu
	iovs       []unix.Iovec        // under writeMu: the super-packets of a Write, gathered
	stats      offloadCounters

	// Cutting TCP packets longer than the MTU (oversize_linux.go).
	mtu    int         // under writeMu: the last MTU read, 0 before the first Write
	mtuReq *unix.Ifreq // for SIOCGIFMTU, with the interface's name
	seg    segmenter   // under writeMu; without IFF_VNET_HDR
}

// readOp is the state of one Read, kept in the device so that its RawConn
// callback can be bound once.
type readOp struct {
	bufs   [][]byte
	sizes  []int
	offset int
	n      int   // packets read so far
	err    error // read(2) error that ended the batch
	empty  bool  // the batch ended with the queue empty (EAGAIN)
}

// do drains the queue into op.bufs. It returns false, asking the caller to
// wait, only while nothing has been read.
func (op *readOp) do(fd uintptr) bool {
	for op.n < len(op.bufs) {
		n, err := unix.Read(int(fd), op.bufs[op.n][op.offset:])
		switch err {
		case nil:
			op.sizes[op.n] = n
			op.n++
		case unix.EINTR:
		case unix.EAGAIN:
			op.empty = true
			return op.n > 0
		default:
			op.err = err
			return true
		}
	}
	return true
}

func (d *nativeDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.readMu.Lock()
	defer d.readMu.Unlock()

	if d.vnet {
		return d.readVnet(bufs, sizes, offset)
	}
	if d.closed.Load() {
		return 0, os.ErrClosed
	}
	d.read = readOp{bufs: bufs, sizes: sizes, offset: offset}
	err := d.run(d.readFn, &d.readPoll, d.readEmpty, &d.readWin, d.readTry)
	n, opErr := d.read.n, d.read.err
	d.readEmpty = d.read.empty
	d.readWin.Delivered(n)
	d.read = readOp{} // keep none of the caller's buffers alive

	if err != nil { // only possible before the first packet
		return 0, d.fail("read", err)
	}
	if opErr != nil {
		return n, d.fail("read", opErr)
	}
	return n, nil
}

// writeOp is the state of one Write; see readOp.
type writeOp struct {
	bufs    [][]byte
	offset  int
	vnet    bool                // with offloads: write what order lists, not each of bufs
	order   []offload.Coalesced // with offloads: what CoalesceGather left to write
	iovs    []unix.Iovec        // with offloads: the super-packets of order, in turn
	iov     int                 // in iovs: the next super-packet's first
	seg     *segmenter          // without offloads: cuts TCP packets longer than the MTU
	next    int                 // how many of the packets to write were tried
	n       int                 // packets accepted
	refused []int               // indices in bufs of the packets refused: allocated only when one is
	first   error               // why the first refused packet was refused
	fatal   error               // error that ended the batch
}

// do writes the packets from op.next on. It returns false, asking the
// caller to wait, when the queue is full.
func (op *writeOp) do(fd uintptr) bool {
	count := len(op.bufs)
	if op.vnet {
		count = len(op.order)
	}
	for op.next < count {
		i, packets, iovs := op.next, 1, 0
		if op.vnet {
			c := &op.order[op.next]
			i, packets = c.Index, c.Packets
			if len(c.Tail) > 0 {
				iovs = 1 + len(c.Tail)
			}
		}
		var err error
		if iovs > 0 {
			err = writev(int(fd), op.iovs[op.iov:op.iov+iovs])
		} else {
			err = op.writePacket(int(fd), op.bufs[i][op.offset:])
		}
		switch err {
		case nil:
			op.n += packets
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case unix.EBADF, unix.EBADFD:
			op.fatal = err
			return true
		default:
			if len(op.refused) == 0 {
				op.first = err
			}
			op.refused = append(op.refused, i) // and its Tail: CoalesceGather links every packet it merges
			if op.vnet {
				op.refused = append(op.refused, op.order[op.next].Tail...)
			}
		}
		op.next++
		op.iov += iovs
	}
	return true
}

// writePacket writes one packet (see segmenter.write).
func (op *writeOp) writePacket(fd int, pkt []byte) error {
	if op.seg != nil {
		return op.seg.write(fd, pkt)
	}
	_, err := unix.Write(fd, pkt)
	return err
}

func (d *nativeDevice) Write(bufs [][]byte, offset int) (int, error) {
	d.writeMu.Lock()
	defer d.writeMu.Unlock()

	if d.closed.Load() {
		return 0, os.ErrClosed
	}
	op := writeOp{bufs: bufs, offset: offset}
	if d.vnet {
		if offset < offload.VirtioNetHdrLen {
			return 0, ErrNoHeadroom
		}
		// Each packet goes with the virtio-net header CoalesceGather wrote
		// in front of it; a super-packet gathers its payloads from where
		// they were received.
		d.gro.MTU = d.writeMTU(bufs, offset)
		d.toWrite = offload.CoalesceGather(bufs, offset, &d.gro, d.toWrite)
		op.vnet, op.order = true, d.toWrite
		op.offset = offset - offload.VirtioNetHdrLen
		op.iovs = d.gatherIovecs(bufs, offset, d.toWrite)
		d.stats.wrote(d.toWrite)
	} else {
		d.seg.reset(d.writeMTU(bufs, offset))
		op.seg = &d.seg
	}
	d.write = op
	err := d.run(d.writeFn, &d.writePoll, false, nil, nil)
	op = d.write
	d.write = writeOp{} // keep none of the caller's buffers alive
	clear(op.iovs)

	switch {
	case err != nil:
		return op.n, d.fail("write", err)
	case op.fatal != nil:
		return op.n, d.fail("write", op.fatal)
	case len(op.refused) > 0:
		// A super-packet's packets need not follow each other in bufs.
		slices.Sort(op.refused)
		return op.n, &WriteError{Dropped: len(op.refused), Refused: op.refused, Err: op.first}
	}
	return op.n, nil
}

// run calls op on the queue until it is done, sleeping on pfd (the queue
// and wake) in between, and first if pollFirst. A reader passes its
// busy-poll window and what to poll with (op on the queue, or Close), which
// run tries before each sleep. The caller holds readMu or writeMu, and has
// checked that the Device is not closed.
func (d *nativeDevice) run(op func(fd uintptr) bool, pfd *pollwake.Set, pollFirst bool, win *busypoll.Window, try func() bool) error {
	for pollFirst || !op(uintptr(d.fd)) {
		pollFirst = false
		caught, err := win.Wait(try, pfd.Wait)
		switch {
		case err != nil:
			return fmt.Errorf("poll: %w", err)
		case d.closed.Load():
			return os.ErrClosed
		case caught:
			return nil
		}
	}
	return nil
}

// fail maps the errors of a closed queue to os.ErrClosed, those of a queue
// whose interface was deleted to ErrDeleted, and wraps the others.
func (d *nativeDevice) fail(op string, err error) error {
	if d.closed.Load() || errors.Is(err, os.ErrClosed) {
		return os.ErrClosed
	}
	// When the interface is deleted, an ioctl gets the kernel's EBADFD.
	if _, nerr := d.currentName(); isDetached(err) || isDetached(nerr) {
		err = ErrDeleted
	}
	return fmt.Errorf("tun: %s %s: %w", op, d.name, err)
}

// isDetached reports whether err says that the queue no longer has an
// interface: EBADFD once the interface was deleted.
func isDetached(err error) bool {
	return errors.Is(err, unix.EBADFD) || errors.Is(err, unix.EBADF)
}

func (d *nativeDevice) BatchSize() int {
	if d.vnet {
		return offloadBatchSize
	}
	return nativeBatchSize
}

// Name asks the kernel for the interface's name, which follows renames, and
// falls back to the name it was created with.
func (d *nativeDevice) Name() string {
	if name, err := d.currentName(); err == nil {
		return name
	}
	return d.name
}

func (d *nativeDevice) currentName() (string, error) {
	d.ctlMu.Lock()
	defer d.ctlMu.Unlock()
	if d.fd < 0 {
		return "", os.ErrClosed
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", err
	}
	if err := unix.IoctlIfreq(d.fd, unix.TUNGETIFF, ifr); err != nil {
		return "", err
	}
	return ifr.Name(), nil
}

func (d *nativeDevice) MTU() (int, error) {
	name, err := d.currentName()
	if err != nil {
		return 0, d.fail("get MTU of", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, fmt.Errorf("tun: get MTU of %s: %w", name, err)
	}

	d.ctlMu.Lock()
	defer d.ctlMu.Unlock()
	if d.fd < 0 {
		return 0, os.ErrClosed
	}
	if err := unix.IoctlIfreq(d.ctl, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, fmt.Errorf("tun: get MTU of %s: %w", name, err)
	}
	return int(int32(ifr.Uint32())), nil
}

func (d *nativeDevice) Close() error {
	if d.closed.Swap(true) {
		return os.ErrClosed
	}
	err := d.wake.Wake()

	d.readMu.Lock()
	d.writeMu.Lock()
	d.ctlMu.Lock()
	errs := []error{err, unix.Close(d.fd), d.wake.Close()}
	if d.ctl >= 0 {
		errs = append(errs, unix.Close(d.ctl))
	}
	d.fd, d.ctl = -1, -1
	d.ctlMu.Unlock()
	d.writeMu.Unlock()
	d.readMu.Unlock()

	if err = errors.Join(errs...); err != nil {
		return fmt.Errorf("tun: close %s: %w", d.name, err)
	}
	return nil
}

// BusyPollStats reports what Read's busy-poll window did.
func (d *nativeDevice) BusyPollStats() busypoll.Stats { return d.readWin.Stats() }

// WaitsInKernel reports that Read sleeps in the kernel, holding its thread,
// not in Go's netpoller.
func (d *nativeDevice) WaitsInKernel() bool { return true }
