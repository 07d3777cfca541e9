// Package tuntest provides a channel-backed tun.Device, so that the engine
// can be tested without root, a TUN interface or a kernel.
package tuntest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/overlayd/overlayd/encap/offload"
	"github.com/overlayd/overlayd/tunnel/tun"
)

// BatchSize is the batch size a ChannelDevice reports.
const BatchSize = 64

// queueLen is the capacity of the Inbound and Outbound channels.
const queueLen = 1024

var _ tun.Device = (*ChannelDevice)(nil)

// ChannelDevice is a tun.Device whose "kernel" side is two channels.
type ChannelDevice struct {
	// Inbound carries packets into the device: what a test sends here,
	// Read returns, in order. The device never closes it.
	Inbound chan []byte
	// Outbound carries the packets Write was given, each a copy the test
	// owns. Write blocks while it is full.
	Outbound chan []byte
	// InboundGSO carries super-packets into the device, as a kernel TUN
	// with IFF_VNET_HDR offloads hands them over: Read cuts each into
	// MTU-sized packets with complete checksums (offload.SplitGSO), as the
	// native Device does, so that the engine can be fed TSO-sized writes.
	InboundGSO chan GSOPacket

	name      string
	mtu       int
	closed    chan struct{}
	closeOnce sync.Once
	deleted   bool                                  // set before closed is closed: calls fail with tun.ErrDeleted
	refuse    atomic.Pointer[func(pkt []byte) bool] // set by Refuse; nil refuses none
}

// NewChannelDevice returns an open ChannelDevice that reports the given
// name and MTU. Its channels are buffered (1024 packets).
func NewChannelDevice(name string, mtu int) *ChannelDevice {
	return &ChannelDevice{
		Inbound:    make(chan []byte, queueLen),
		Outbound:   make(chan []byte, queueLen),
		InboundGSO: make(chan GSOPacket, queueLen),
		name:       name,
		mtu:        mtu,
		closed:     make(chan struct{}),
	}
}

// GSOPacket is a super-packet with the virtio-net header that describes it.
type GSOPacket struct {
	Hdr offload.VirtioNetHdr
	Pkt []byte
}

// Read blocks for one packet from Inbound, then takes any others already
// queued, up to len(bufs). A packet too large for its buffer is an
// io.ErrShortBuffer error, returned after the packets before it. A
// super-packet from InboundGSO is returned alone, cut into its segments;
// one with more segments than bufs, or a header that does not describe it,
// is dropped with a tun.ErrBadPacket error.
func (d *ChannelDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.isClosed() {
		return 0, d.closedErr()
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	var pkt []byte
	select {
	case <-d.closed:
		return 0, d.closedErr()
	case pkt = <-d.Inbound:
	case gso := <-d.InboundGSO:
		n, _, err := offload.SplitGSO(gso.Pkt, gso.Hdr, bufs, sizes, offset, offload.SplitOptions{})
		if err != nil { // dropped, as the native Device drops it
			return 0, fmt.Errorf("tuntest: split super-packet: %w: %w", tun.ErrBadPacket, err)
		}
		return n, nil
	}
	n := 0
	for {
		dst := bufs[n][offset:]
		if len(pkt) > len(dst) {
			return n, fmt.Errorf("tuntest: %d-byte packet in %d-byte buffer: %w", len(pkt), len(dst), io.ErrShortBuffer)
		}
		sizes[n] = copy(dst, pkt)
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case pkt = <-d.Inbound:
		default:
			return n, nil
		}
	}
}

// Refuse makes Write refuse the packets pick chooses, as the kernel refuses
// some (EINVAL, EIO): they are left out of Outbound and reported in a
// *tun.WriteError. A nil pick refuses none.
func (d *ChannelDevice) Refuse(pick func(pkt []byte) bool) {
	if pick == nil {
		d.refuse.Store(nil)
		return
	}
	d.refuse.Store(&pick)
}

// Write sends a copy of each bufs[i][offset:] to Outbound, but for those
// Refuse picks.
func (d *ChannelDevice) Write(bufs [][]byte, offset int) (int, error) {
	written := 0
	var refused []int
	pick := d.refuse.Load()
	for i, buf := range bufs {
		if d.isClosed() {
			return written, d.closedErr()
		}
		if pick != nil && (*pick)(buf[offset:]) {
			refused = append(refused, i)
			continue
		}
		pkt := append([]byte(nil), buf[offset:]...)
		select {
		case <-d.closed:
			return written, d.closedErr()
		case d.Outbound <- pkt:
			written++
		}
	}
	if refused != nil {
		return written, &tun.WriteError{Dropped: len(refused), Refused: refused, Err: errRefused}
	}
	return written, nil
}

// errRefused is why a packet Refuse picked was refused.
var errRefused = errors.New("tuntest: refused")

func (d *ChannelDevice) BatchSize() int { return BatchSize }

func (d *ChannelDevice) MTU() (int, error) {
	if d.isClosed() {
		return 0, d.closedErr()
	}
	return d.mtu, nil
}

func (d *ChannelDevice) Name() string { return d.name }

// Close unblocks pending Reads and Writes. Packets left in the channels stay
// there.
func (d *ChannelDevice) Close() error {
	err := os.ErrClosed
	d.closeOnce.Do(func() {
		close(d.closed)
		err = nil
	})
	return err
}

// Delete makes the device a queue whose interface someone deleted:
// pending and later Reads and Writes fail with tun.ErrDeleted (wrapped),
// as the native Device's do. A device already closed stays closed.
func (d *ChannelDevice) Delete() {
	d.closeOnce.Do(func() {
		d.deleted = true
		close(d.closed)
	})
}

// closedErr is what a call on a closed or deleted device returns.
func (d *ChannelDevice) closedErr() error {
	if d.deleted {
		return fmt.Errorf("tuntest: %s: %w", d.name, tun.ErrDeleted)
	}
	return os.ErrClosed
}

func (d *ChannelDevice) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}
