package tun

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/encap/offload"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// TUNSETOFFLOAD flags, from linux/if_tun.h (x/sys/unix lacks them).
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
	tunFUSO4 = 0x20
	tunFUSO6 = 0x40
)

// maxPacketLen bounds what the kernel hands over through a TUN: an IPv4
// total length, and the kernel's default GSO size for a TUN.
const maxPacketLen = 65535

var (
	_ FeatureReporter = (*nativeDevice)(nil)
	_ PartialReader   = (*nativeDevice)(nil)
)

// ioctl runs call, an ioctl with request req and argument flags, unless
// the fault hook stands in for the kernel and refuses it.
func (o *options) ioctl(req uint, flags uint32, call func() error) error {
	if o.fault != nil {
		if err := o.fault(req, flags); err != nil {
			return err
		}
	}
	return call()
}

// openFirstQueue opens a TUN interface's first queue, with IFF_VNET_HDR and
// offloads if asked for and the kernel agrees, and otherwise without. It
// adds IFF_VNET_HDR to *flags when the later queues must have it too.
func openFirstQueue(name string, flags *uint16, o *options) (*nativeDevice, error) {
	if !o.offloads {
		return openQueue(name, *flags, o)
	}
	d, err := openQueue(name, *flags|unix.IFF_VNET_HDR, o)
	if err != nil {
		// If the queue cannot be opened without IFF_VNET_HDR either, the
		// error was not about offloads.
		plain, perr := openQueue(name, *flags, o)
		if perr != nil {
			return nil, perr
		}
		plain.offloadErr = &OffloadError{Op: "IFF_VNET_HDR", Err: err}
		return plain, nil
	}
	*flags |= unix.IFF_VNET_HDR
	d.negotiateOffloads(o)
	return d, nil
}

// negotiateOffloads asks the kernel for checksum, TCP and UDP segmentation
// offloads for the whole interface. USO came with Linux 6.2; earlier
// kernels refuse the request with EINVAL, and then get it without USO.
func (d *nativeDevice) negotiateOffloads(o *options) {
	const tso = tunFCsum | tunFTSO4 | tunFTSO6
	f := Features{VirtioHdr: true}
	err := d.setOffload(o, tso|tunFUSO4|tunFUSO6)
	if err == nil {
		f.TSO, f.USO = true, true
		d.setFeatures(f, nil)
		return
	}
	if errors.Is(err, unix.EINVAL) {
		if err = d.setOffload(o, tso); err == nil {
			f.TSO = true
			d.setFeatures(f, nil)
			return
		}
	}
	// IFF_VNET_HDR stays: Write can still hand the kernel merged
	// segments, and Read gets packets whose checksums are done.
	d.setFeatures(f, &OffloadError{Op: "TUNSETOFFLOAD", Err: err})
}

// setFeatures records what the interface negotiated. Write merges UDP
// datagrams only if the kernel has USO: a kernel that lacks it refuses
// GSOUDPL4 packets too.
func (d *nativeDevice) setFeatures(f Features, err error) {
	d.features, d.offloadErr = f, err
	d.gro.UDP = f.USO
}

func (d *nativeDevice) setOffload(o *options, flags uint32) error {
	return o.ioctl(unix.TUNSETOFFLOAD, flags, func() error {
		return unix.IoctlSetInt(d.fd, unix.TUNSETOFFLOAD, int(flags))
	})
}

// initOffloads sets up a queue opened with IFF_VNET_HDR.
func (d *nativeDevice) initOffloads(o *options) {
	d.vnet = true
	d.gro.Verify = o.verify
	d.features.VirtioHdr = true
	d.vread.buf = make([]byte, offload.VirtioNetHdrLen+maxPacketLen)
	d.vread.stats = &d.stats
	d.vread.leavePartial = o.partial
	d.readFn = d.vread.do
	d.toWrite = make([]offload.Coalesced, 0, offloadBatchSize)
}

func (d *nativeDevice) Features() (Features, error) { return d.features, d.offloadErr }

// gatherIovecs lays out the super-packets of order (offload.CoalesceGather's
// result for bufs at offset) in d.iovs, in order, each as its first packet
// behind its virtio-net header, then the payloads merged into it. Packets
// written alone get none. It allocates only when bufs outgrows every
// batch before: a batch needs at most one iovec per packet.
func (d *nativeDevice) gatherIovecs(bufs [][]byte, offset int, order []offload.Coalesced) []unix.Iovec {
	if cap(d.iovs) < len(bufs) {
		d.iovs = make([]unix.Iovec, len(bufs))
	}
	iovs := d.iovs[:cap(d.iovs)]
	n := 0
	for _, c := range order {
		if len(c.Tail) == 0 {
			continue
		}
		underlay.SetIovec(&iovs[n], bufs[c.Index][offset-offload.VirtioNetHdrLen:])
		n++
		for _, j := range c.Tail {
			underlay.SetIovec(&iovs[n], bufs[j][offset+c.HdrLen:])
			n++
		}
	}
	return iovs[:n]
}

// writev writes the packet gathered from iovs with one writev(2), which
// x/sys/unix offers only with an allocation per call.
func writev(fd int, iovs []unix.Iovec) error {
	_, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iovs[0])), uintptr(len(iovs)))
	if errno != 0 {
		return errno
	}
	return nil
}

// offloadCounters count what the offloads did, for tests and profiles.
type offloadCounters struct {
	superPackets atomic.Uint64 // super-packets Read got from the kernel
	segments     atomic.Uint64 // packets Read made of them
	coalesced    atomic.Uint64 // super-packets Write handed the kernel
	merged       atomic.Uint64 // packets Write merged into them
}

// wrote counts the super-packets of one Write.
func (c *offloadCounters) wrote(toWrite []offload.Coalesced) {
	var supers, merged uint64
	for _, w := range toWrite {
		if w.Packets > 1 {
			supers++
			merged += uint64(w.Packets)
		}
	}
	if supers > 0 {
		c.coalesced.Add(supers)
		c.merged.Add(merged)
	}
}

// vnetReadOp is the state of Reads with IFF_VNET_HDR. A super-packet is
// read whole into buf and split into the caller's buffers; what does not
// fit stays pending for the next Read.
type vnetReadOp struct {
	bufs   [][]byte
	sizes  []int
	offset int
	n      int   // packets delivered so far
	err    error // error that ended the batch
	empty  bool  // the batch ended with the queue empty (EAGAIN)

	buf     []byte               // VirtioNetHdrLen+maxPacketLen bytes, for read(2)
	pending []byte               // in buf: a packet read but not yet delivered
	hdr     offload.VirtioNetHdr // pending's header
	stats   *offloadCounters

	// partial is ReadPartial's: whether each packet delivered is left
	// with a partial checksum; nil for Read, which completes them all.
	partial      []bool
	leavePartial bool // WithPartialChecksums
}

// do delivers the pending packet, then drains the queue into op.bufs. It
// returns false, asking the caller to wait, only while nothing has been
// delivered.
func (op *vnetReadOp) do(fd uintptr) bool {
	for op.n < len(op.bufs) {
		if op.pending == nil {
			m, err := unix.Read(int(fd), op.buf)
			switch err {
			case nil:
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				op.empty = true
				return op.n > 0
			default:
				op.err = err
				return true
			}
			if err := op.hdr.Decode(op.buf[:m]); err != nil {
				op.err = fmt.Errorf("%w: %w", ErrBadPacket, err)
				return true
			}
			op.pending = op.buf[offload.VirtioNetHdrLen:m]
		}
		if !op.deliver() {
			return true
		}
	}
	return true
}

// deliver splits the pending packet into the free buffers. It reports
// whether there may be room for more.
func (op *vnetReadOp) deliver() bool {
	bufs, sizes := op.bufs[op.n:], op.sizes[op.n:]
	gso := op.hdr.GSOType != offload.GSONone
	split := offload.SplitOptions{PartialChecksums: op.leavePartial && op.partial != nil}
	n, partial, err := offload.SplitGSO(op.pending, op.hdr, bufs, sizes, op.offset, split)
	var rest []byte
	if err == offload.ErrTooManySegments && op.n == 0 {
		// More segments than the caller has buffers at all: hand over
		// what fits and keep the rest.
		n, rest, partial, err = offload.SplitGSOHead(op.pending, &op.hdr, bufs, sizes, op.offset, split)
	}
	switch err {
	case nil:
	case offload.ErrTooManySegments:
		return false // for the next Read, which has more buffers
	default:
		op.pending = nil // dropped
		op.err = fmt.Errorf("%w: %w", ErrBadPacket, err)
		return false
	}
	if op.partial != nil {
		for i := range n {
			op.partial[op.n+i] = partial
		}
	}
	op.n += n
	if gso {
		if rest == nil {
			op.stats.superPackets.Add(1)
		}
		op.stats.segments.Add(uint64(n))
	}
	op.pending = rest
	return rest == nil
}

func (d *nativeDevice) readVnet(bufs [][]byte, sizes []int, offset int) (int, error) {
	op := &d.vread
	if d.closed.Load() {
		return 0, os.ErrClosed
	}
	pollFirst := d.readEmpty && op.pending == nil
	op.bufs, op.sizes, op.offset, op.n, op.err, op.empty = bufs, sizes, offset, 0, nil, false
	err := d.run(d.readFn, &d.readPoll, pollFirst, &d.readWin, d.readTry)
	d.readEmpty = op.empty
	n, opErr := op.n, op.err
	d.readWin.Delivered(n)
	op.bufs, op.sizes, op.err = nil, nil, nil // keep none of the caller's buffers alive

	if err != nil { // only possible before the first packet
		return 0, d.fail("read", err)
	}
	if opErr != nil {
		return n, d.fail("read", opErr)
	}
	return n, nil
}

// ReadPartial is Read, leaving checksums partial with WithPartialChecksums.
func (d *nativeDevice) ReadPartial(bufs [][]byte, sizes []int, partial []bool, offset int) (int, error) {
	if !d.vnet {
		// Without a virtio-net header the kernel completes every checksum.
		n, err := d.Read(bufs, sizes, offset)
		clear(partial[:n])
		return n, err
	}
	d.readMu.Lock()
	defer d.readMu.Unlock()
	d.vread.partial = partial[:len(bufs)]
	n, err := d.readVnet(bufs, sizes, offset)
	d.vread.partial = nil // keep none of the caller's slices alive
	return n, err
}
