package ringbuf

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// A TPACKET_V2 receive ring is a run of equal frame slots, packed into
// blocks (frames do not cross a block's end). The kernel copies each packet
// into the next slot and hands that slot over at once, by setting
// TP_STATUS_USER in its header, and wakes the reader for every packet: no
// timer stands between a packet and its reader, as with V3's blocks. User
// space hands each slot back by setting it to TP_STATUS_KERNEL. A packet
// that does not fit a slot is cut to it; with PACKET_COPY_THRESH the kernel
// also queues it whole on the socket, to be read with recvmsg, and says so
// with TP_STATUS_COPY.

// Frame header (struct tpacket2_hdr).
const (
	TPacket2HeaderLen = 32

	f2Status  = 0  // tp_status
	f2Len     = 4  // tp_len
	f2Snaplen = 8  // tp_snaplen
	f2Mac     = 12 // tp_mac
	f2Net     = 14 // tp_net

	// TPStatusCopy (TP_STATUS_COPY) marks a V2 frame cut to its slot
	// whose packet the kernel also queued whole on the socket.
	TPStatusCopy = 1 << 1
)

// V2Ring reads a TPACKET_V2 receive ring. It is not safe for concurrent
// use; one goroutine reads a ring.
type V2Ring struct {
	mem       []byte
	blockSize int
	frameSize int
	perBlock  int // frames in a block
	frames    int

	cur  int  // slot of the next frame
	held bool // cur was returned by Next and is not released yet

	corrupt atomic.Uint64 // frames whose header did not fit their slot
}

// NewV2Ring reads the ring in mem: blocks blocks of blockSize bytes, each
// holding blockSize/frameSize frames of frameSize bytes, as given to
// PACKET_RX_RING (tp_block_size, tp_block_nr, tp_frame_size). mem must be
// at least blocks*blockSize long and 8-byte aligned, as an mmap'd ring is.
func NewV2Ring(mem []byte, blockSize, blocks, frameSize int) (*V2Ring, error) {
	switch {
	case frameSize <= TPacket2HeaderLen || frameSize%16 != 0 || frameSize > blockSize:
		return nil, fmt.Errorf("%w: frame size %d in blocks of %d", ErrRingLayout, frameSize, blockSize)
	case blocks <= 0 || blockSize > len(mem)/blocks:
		return nil, fmt.Errorf("%w: %d blocks of %d bytes in %d bytes of memory", ErrRingLayout, blocks, blockSize, len(mem))
	case uintptr(unsafe.Pointer(unsafe.SliceData(mem)))%tpacketAlign != 0:
		return nil, fmt.Errorf("%w: memory not 8-byte aligned", ErrRingLayout)
	}
	perBlock := blockSize / frameSize
	return &V2Ring{
		mem:       mem[:blocks*blockSize],
		blockSize: blockSize,
		frameSize: frameSize,
		perBlock:  perBlock,
		frames:    perBlock * blocks,
	}, nil
}

// slot returns frame slot i's memory.
func (r *V2Ring) slot(i int) []byte {
	off := i/r.perBlock*r.blockSize + i%r.perBlock*r.frameSize
	return r.mem[off : off+r.frameSize : off+r.frameSize]
}

// status is the word the kernel and user space pass a slot with; see
// V3Ring.status for why atomics order the rest.
func (r *V2Ring) status(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.slot(i)[f2Status]))
}

// Ready reports whether Next has a frame to return without waiting for the
// kernel. The frame Next returned last is released on the way.
func (r *V2Ring) Ready() bool {
	r.Release()
	return atomic.LoadUint32(r.status(r.cur))&tpStatusUser != 0
}

// Next returns the next frame of the ring, or false if the kernel has not
// handed one over. The frame returned by the previous call is released
// first and must not be used any more.
func (r *V2Ring) Next() (Frame, bool) {
	for r.Ready() {
		r.held = true
		if f, ok := r.frame(r.slot(r.cur)); ok {
			return f, true
		}
		r.corrupt.Add(1)
	}
	return Frame{}, false
}

// frame decodes the frame header at the start of slot s.
func (r *V2Ring) frame(s []byte) (Frame, bool) {
	ne := binary.NativeEndian
	snap := int(ne.Uint32(s[f2Snaplen:]))
	mac := int(ne.Uint16(s[f2Mac:]))
	end := mac + snap
	if mac < TPacket2HeaderLen || end > len(s) {
		return Frame{}, false
	}
	return Frame{
		Status: ne.Uint32(s[f2Status:]),
		Len:    int(ne.Uint32(s[f2Len:])),
		Mac:    mac,
		Net:    int(ne.Uint16(s[f2Net:])),
		Raw:    s[:end:end],
	}, true
}

// Release hands the frame Next returned last back to the kernel. Call it
// when done with that frame, so that the kernel can fill the slot again.
func (r *V2Ring) Release() {
	if !r.held {
		return
	}
	atomic.StoreUint32(r.status(r.cur), tpStatusKernel)
	r.held = false
	if r.cur++; r.cur == r.frames {
		r.cur = 0
	}
}

// Corrupt counts the frames whose header did not fit their slot: it stays
// 0 with a sane kernel.
func (r *V2Ring) Corrupt() uint64 { return r.corrupt.Load() }
