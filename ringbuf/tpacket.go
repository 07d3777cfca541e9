package ringbuf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// A TPACKET_V3 receive ring (PACKET_RX_RING, see the kernel's
// Documentation/networking/packet_mmap.rst) is memory shared with the
// kernel: a run of equal blocks, each a block descriptor followed by frames
// of varying size. The kernel fills one block at a time and hands it to
// user space whole, by setting TP_STATUS_USER in the block's status, when
// it is full or its retire timer expires; user space reads every frame and
// hands the block back by setting the status to TP_STATUS_KERNEL. Blocks go
// round in order, so the reader only ever looks at one of them.
//
// Everything here is pure memory walking: it works on the mmap'd ring as on
// synthetic memory in tests, and trusts nothing it reads. The layouts are
// those of <linux/if_packet.h>, the same on every architecture.

// Block descriptor (struct tpacket_block_desc with struct tpacket_hdr_v1).
const (
	TPacketBlockHeaderLen = 48 // BLK_HDR_LEN: the descriptor, 8-byte aligned

	blkStatus      = 8  // hdr.bh1.block_status
	blkNumPkts     = 12 // hdr.bh1.num_pkts
	blkFirstPkt    = 16 // hdr.bh1.offset_to_first_pkt
	tpStatusKernel = 0  // TP_STATUS_KERNEL
	tpStatusUser   = 1  // TP_STATUS_USER
	tpacketAlign   = 8  // V3_ALIGNMENT of frames in a block
)

// Frame header (struct tpacket3_hdr).
const (
	TPacket3HeaderLen = 48

	frmNextOffset = 0  // tp_next_offset: 0 on a block's last frame
	frmSnaplen    = 12 // tp_snaplen: bytes captured from tp_mac on
	frmLen        = 16 // tp_len: the packet's length on the wire
	frmStatus     = 20 // tp_status: TP_STATUS_* of this frame
	frmMac        = 24 // tp_mac: offset of the link-layer header
	frmNet        = 26 // tp_net: offset of the network header
)

// A Frame is one packet the kernel handed to user space in a ring, V3Ring's
// or V2Ring's. Its memory is the ring's: it is valid until the ring's next
// Next or Release call.
type Frame struct {
	Status uint32 // TP_STATUS_* bits, e.g. TP_STATUS_CSUM_VALID
	Len    int    // the packet's length as received; > len(Data()) if truncated
	Mac    int    // offset of the link-layer header in Raw
	Net    int    // offset of the network header in Raw
	// Raw is the frame from its tpacket3_hdr (tpacket2_hdr) up to the end
	// of the captured bytes; what lies between the header and Mac (a
	// virtio_net_hdr with PACKET_VNET_HDR) belongs to the frame too.
	Raw []byte
}

// Data is the captured packet, from its link-layer header on.
func (f *Frame) Data() []byte { return f.Raw[f.Mac:] }

// V3Ring reads a TPACKET_V3 receive ring. It is not safe for concurrent
// use; one goroutine reads a ring.
type V3Ring struct {
	mem       []byte
	blockSize int
	blocks    int

	cur  int  // block being read
	held bool // cur is ours (TP_STATUS_USER) and not yet released
	left int  // frames of cur not yet returned by Next
	off  int  // offset in cur of the next frame

	corrupt atomic.Uint64 // blocks whose frames did not add up
}

// ErrRingLayout reports ring geometry that the kernel could not have made.
var ErrRingLayout = errors.New("ringbuf: invalid TPACKET ring layout")

// NewV3Ring reads the ring in mem: blocks blocks of blockSize bytes each,
// as given to PACKET_RX_RING (tp_block_size, tp_block_nr). mem must be at
// least blocks*blockSize long and 8-byte aligned, as an mmap'd ring is.
func NewV3Ring(mem []byte, blockSize, blocks int) (*V3Ring, error) {
	switch {
	case blockSize <= TPacketBlockHeaderLen+TPacket3HeaderLen || blockSize%tpacketAlign != 0:
		return nil, fmt.Errorf("%w: block size %d", ErrRingLayout, blockSize)
	case blocks <= 0 || blockSize > len(mem)/blocks:
		return nil, fmt.Errorf("%w: %d blocks of %d bytes in %d bytes of memory", ErrRingLayout, blocks, blockSize, len(mem))
	case uintptr(unsafe.Pointer(unsafe.SliceData(mem)))%tpacketAlign != 0:
		return nil, fmt.Errorf("%w: memory not 8-byte aligned", ErrRingLayout)
	}
	return &V3Ring{mem: mem[:blocks*blockSize], blockSize: blockSize, blocks: blocks}, nil
}

// block returns block i's memory.
func (r *V3Ring) block(i int) []byte {
	return r.mem[i*r.blockSize : (i+1)*r.blockSize]
}

// status is the word the kernel and user space pass a block with. The
// kernel writes it last (after a write barrier) when it closes a block and
// reads it first when it wants the block again, so an atomic load here
// orders every later read of the block after the kernel's writes, and an
// atomic store orders our reads before the kernel reuses it.
func (r *V3Ring) status(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.mem[i*r.blockSize+blkStatus]))
}

// Ready reports whether Next has a frame to return without waiting for the
// kernel: the block being read still has frames, or a later one has been
// handed over. Blocks read to the end are released on the way.
func (r *V3Ring) Ready() bool {
	for {
		if r.held {
			if r.left > 0 {
				return true
			}
			r.Release()
		}
		if !r.acquire() {
			return false
		}
	}
}

// acquire takes the current block if the kernel has handed it over.
func (r *V3Ring) acquire() bool {
	if atomic.LoadUint32(r.status(r.cur))&tpStatusUser == 0 {
		return false
	}
	b := r.block(r.cur)
	r.held = true
	r.left = int(binary.NativeEndian.Uint32(b[blkNumPkts:]))
	r.off = int(binary.NativeEndian.Uint32(b[blkFirstPkt:]))
	if r.off < TPacketBlockHeaderLen || r.off > len(b) {
		r.skipBlock()
	}
	return true
}

// Next returns the next frame of the ring, or false if the kernel has not
// handed over the next block yet. A block that has been read to the end is
// released first, so the frame returned by the previous call must not be
// used any more.
func (r *V3Ring) Next() (Frame, bool) {
	for r.Ready() {
		if f, ok := r.frame(); ok {
			return f, true
		}
		r.skipBlock()
	}
	return Frame{}, false
}

// frame decodes the frame at r.off of the held block and advances past it.
func (r *V3Ring) frame() (Frame, bool) {
	b := r.block(r.cur)
	if r.off+TPacket3HeaderLen > len(b) {
		return Frame{}, false
	}
	h := b[r.off:]
	next := int(binary.NativeEndian.Uint32(h[frmNextOffset:]))
	snap := int(binary.NativeEndian.Uint32(h[frmSnaplen:]))
	mac := int(binary.NativeEndian.Uint16(h[frmMac:]))
	net := int(binary.NativeEndian.Uint16(h[frmNet:]))
	end := mac + snap
	if mac < TPacket3HeaderLen || end > len(h) {
		return Frame{}, false
	}
	r.left--
	switch {
	case r.left == 0:
		// The last frame; its next offset is 0.
	case next < end || next%tpacketAlign != 0 || next > len(h):
		r.left = 0 // the rest of the block cannot be found
		r.corrupt.Add(1)
	default:
		r.off += next
	}
	return Frame{
		Status: binary.NativeEndian.Uint32(h[frmStatus:]),
		Len:    int(binary.NativeEndian.Uint32(h[frmLen:])),
		Mac:    mac,
		Net:    net,
		Raw:    h[:end:end],
	}, true
}

// skipBlock gives up on the rest of the held block.
func (r *V3Ring) skipBlock() {
	r.corrupt.Add(1)
	r.left = 0
}

// Release hands the block being read back to the kernel if every frame of
// it has been returned by Next. Call it when done with the last frame
// rather than waiting for the next Next, so that the kernel has the block
// back as soon as possible.
func (r *V3Ring) Release() {
	if !r.held || r.left > 0 {
		return
	}
	atomic.StoreUint32(r.status(r.cur), tpStatusKernel)
	r.held = false
	r.cur++
	if r.cur == r.blocks {
		r.cur = 0
	}
}

// Corrupt counts the blocks whose frames could not all be read because
// their headers did not fit the block: it stays 0 with a sane kernel.
func (r *V3Ring) Corrupt() uint64 { return r.corrupt.Load() }
