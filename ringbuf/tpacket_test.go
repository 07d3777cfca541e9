package ringbuf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"
)

// The kernel's frame layout with PACKET_VNET_HDR on an Ethernet device:
// tpacket3_hdr, sockaddr_ll, padding, virtio_net_hdr, then the frame.
const (
	testMac = 92  // TPACKET_ALIGN(48+20+16) + 10 - 14
	testNet = 106 // testMac + 14
)

// ringMem returns 8-byte aligned memory for a ring, as mmap would.
func ringMem(size int) []byte {
	words := make([]uint64, (size+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), size)
}

// fillBlock lays out packets in block i as the kernel's tpacket_rcv and
// prb_close_block do, and hands it to user space when user is set.
func fillBlock(t testing.TB, mem []byte, blockSize, i int, user bool, packets ...[]byte) {
	t.Helper()
	b := mem[i*blockSize : (i+1)*blockSize]
	clear(b)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], 3) // TPACKET_V3
	ne.PutUint32(b[4:], TPacketBlockHeaderLen)
	ne.PutUint32(b[blkNumPkts:], uint32(len(packets)))
	ne.PutUint32(b[blkFirstPkt:], TPacketBlockHeaderLen)
	off := TPacketBlockHeaderLen
	for k, p := range packets {
		size := (testMac + len(p) + tpacketAlign - 1) &^ (tpacketAlign - 1)
		if off+size > len(b) {
			t.Fatalf("block %d: packet %d does not fit", i, k)
		}
		h := b[off:]
		if k < len(packets)-1 {
			ne.PutUint32(h[frmNextOffset:], uint32(size))
		}
		ne.PutUint32(h[frmSnaplen:], uint32(len(p)))
		ne.PutUint32(h[frmLen:], uint32(len(p)))
		ne.PutUint32(h[frmStatus:], tpStatusUser|0x80) // TP_STATUS_CSUM_VALID
		ne.PutUint16(h[frmMac:], testMac)
		ne.PutUint16(h[frmNet:], testNet)
		copy(h[testMac:], p)
		off += size
	}
	if user {
		ne.PutUint32(b[blkStatus:], tpStatusUser)
	}
}

func blockStatus(mem []byte, blockSize, i int) uint32 {
	return binary.NativeEndian.Uint32(mem[i*blockSize+blkStatus:])
}

func newTestRing(t testing.TB, blockSize, blocks int) (*V3Ring, []byte) {
	t.Helper()
	mem := ringMem(blockSize * blocks)
	r, err := NewV3Ring(mem, blockSize, blocks)
	if err != nil {
		t.Fatal(err)
	}
	return r, mem
}

func packet(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }

func TestV3RingWalksBlocksInOrder(t *testing.T) {
	t.Parallel()
	const bs, nb = 4096, 3
	r, mem := newTestRing(t, bs, nb)
	if r.Ready() {
		t.Fatal("Ready on a ring the kernel has not filled")
	}
	if _, ok := r.Next(); ok {
		t.Fatal("Next returned a frame from a kernel-owned block")
	}

	fillBlock(t, mem, bs, 0, true, packet(60, 1), packet(1500, 2))
	fillBlock(t, mem, bs, 1, true, packet(98, 3))
	want := [][]byte{packet(60, 1), packet(1500, 2), packet(98, 3)}
	for k, w := range want {
		f, ok := r.Next()
		if !ok {
			t.Fatalf("frame %d: none", k)
		}
		if !bytes.Equal(f.Data(), w) || f.Len != len(w) || f.Mac != testMac || f.Net != testNet || f.Status&0x80 == 0 {
			t.Fatalf("frame %d: %d bytes at mac %d net %d status %#x, want %d bytes of %d", k, len(f.Data()), f.Mac, f.Net, f.Status, len(w), w[0])
		}
		if k == 2 && blockStatus(mem, bs, 0) != tpStatusKernel {
			t.Fatal("block 0 not given back once its frames were read")
		}
	}
	if blockStatus(mem, bs, 1) != tpStatusUser {
		t.Fatal("block 1 given back while its last frame may still be in use")
	}
	r.Release()
	if blockStatus(mem, bs, 1) != tpStatusKernel {
		t.Fatal("Release did not give back a block read to the end")
	}
	if _, ok := r.Next(); ok {
		t.Fatal("a frame from block 2, which the kernel still owns")
	}

	// Round the ring: 2, then 0 again.
	fillBlock(t, mem, bs, 2, true, packet(10, 4))
	fillBlock(t, mem, bs, 0, true, packet(11, 5))
	for _, w := range [][]byte{packet(10, 4), packet(11, 5)} {
		f, ok := r.Next()
		if !ok || !bytes.Equal(f.Data(), w) {
			t.Fatalf("after wrapping: got %v %x, want %x", ok, f.Data(), w)
		}
	}
	if r.Corrupt() != 0 {
		t.Fatalf("Corrupt = %d on well-formed blocks", r.Corrupt())
	}
}

func TestV3RingReleaseKeepsUnreadBlock(t *testing.T) {
	t.Parallel()
	const bs = 4096
	r, mem := newTestRing(t, bs, 2)
	fillBlock(t, mem, bs, 0, true, packet(20, 1), packet(20, 2))
	if _, ok := r.Next(); !ok {
		t.Fatal("no frame")
	}
	r.Release()
	if blockStatus(mem, bs, 0) != tpStatusUser {
		t.Fatal("Release gave back a block with frames left to read")
	}
	if f, ok := r.Next(); !ok || f.Data()[0] != 2 {
		t.Fatalf("second frame lost: %v", ok)
	}
}

func TestV3RingSkipsEmptyBlocks(t *testing.T) {
	t.Parallel()
	const bs = 4096
	r, mem := newTestRing(t, bs, 3)
	fillBlock(t, mem, bs, 0, true) // retired by the timer with nothing in it
	fillBlock(t, mem, bs, 1, true, packet(30, 7))
	f, ok := r.Next()
	if !ok || f.Data()[0] != 7 {
		t.Fatalf("frame after an empty block: %v", ok)
	}
	if blockStatus(mem, bs, 0) != tpStatusKernel {
		t.Fatal("empty block not given back")
	}
}

// Headers that do not fit their block end the block, never a read out of
// it: the frames before are delivered, the rest skipped and counted.
func TestV3RingCorruptBlocks(t *testing.T) {
	t.Parallel()
	const bs = 4096
	ne := binary.NativeEndian
	cases := []struct {
		name    string
		corrupt func(b []byte)
		frames  int // delivered before the damage
	}{
		{"first offset past block", func(b []byte) { ne.PutUint32(b[blkFirstPkt:], bs+8) }, 0},
		{"first offset inside descriptor", func(b []byte) { ne.PutUint32(b[blkFirstPkt:], 8) }, 0},
		{"snaplen past block", func(b []byte) { ne.PutUint32(b[TPacketBlockHeaderLen+frmSnaplen:], bs) }, 0},
		{"mac inside header", func(b []byte) { ne.PutUint16(b[TPacketBlockHeaderLen+frmMac:], 8) }, 0},
		{"next offset past block", func(b []byte) { ne.PutUint32(b[TPacketBlockHeaderLen+frmNextOffset:], bs) }, 1},
		{"next offset unaligned", func(b []byte) { ne.PutUint32(b[TPacketBlockHeaderLen+frmNextOffset:], 131) }, 1},
		{"next offset into own data", func(b []byte) { ne.PutUint32(b[TPacketBlockHeaderLen+frmNextOffset:], 8) }, 1},
		{"more packets than frames", func(b []byte) { ne.PutUint32(b[blkNumPkts:], 1000) }, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r, mem := newTestRing(t, bs, 2)
			fillBlock(t, mem, bs, 0, true, packet(100, 1), packet(100, 2), packet(100, 3))
			c.corrupt(mem[:bs])
			fillBlock(t, mem, bs, 1, true, packet(50, 9))
			got := 0
			for {
				f, ok := r.Next()
				if !ok {
					t.Fatal("the good block after the bad one was not read")
				}
				if f.Data()[0] == 9 {
					break
				}
				got++
			}
			if got != c.frames {
				t.Errorf("%d frames delivered from the damaged block, want %d", got, c.frames)
			}
			if r.Corrupt() == 0 {
				t.Error("damage not counted")
			}
			if blockStatus(mem, bs, 0) != tpStatusKernel {
				t.Error("damaged block not given back")
			}
		})
	}
}

func TestNewV3RingRejectsBadLayouts(t *testing.T) {
	t.Parallel()
	mem := ringMem(8192)
	for _, c := range []struct {
		mem           []byte
		size, nblocks int
	}{
		{mem, 64, 2},       // smaller than two headers
		{mem, 4100, 2},     // more than the memory
		{mem, 4096, 0},     // no blocks
		{mem, 4095, 1},     // unaligned block size
		{mem[1:], 1024, 2}, // unaligned memory
	} {
		if _, err := NewV3Ring(c.mem, c.size, c.nblocks); !errors.Is(err, ErrRingLayout) {
			t.Errorf("NewV3Ring(%d bytes, %d, %d) = %v, want ErrRingLayout", len(c.mem), c.size, c.nblocks, err)
		}
	}
}

func TestV3RingAllocs(t *testing.T) {
	const bs = 1 << 16
	r, mem := newTestRing(t, bs, 2)
	pkts := make([][]byte, 32)
	for i := range pkts {
		pkts[i] = packet(1400, byte(i))
	}
	block := 0
	allocs := testing.AllocsPerRun(100, func() {
		fillBlock(t, mem, bs, block, true, pkts...)
		block ^= 1
		n := 0
		for {
			if _, ok := r.Next(); !ok {
				break
			}
			n++
		}
		r.Release()
		if n != len(pkts) {
			t.Fatalf("read %d frames, want %d", n, len(pkts))
		}
	})
	if allocs != 0 {
		t.Errorf("walking a block allocates %v times", allocs)
	}
}

func BenchmarkV3RingNext(b *testing.B) {
	const bs, frames = 1 << 18, 128
	r, mem := newTestRing(b, bs, 2)
	pkts := make([][]byte, frames)
	for i := range pkts {
		pkts[i] = packet(1400, byte(i))
	}
	fillBlock(b, mem, bs, 0, false, pkts...)
	fillBlock(b, mem, bs, 1, false, pkts...)
	b.ReportAllocs()
	b.SetBytes(frames * 1400)
	block := 0
	for b.Loop() {
		binary.NativeEndian.PutUint32(mem[block*bs+blkStatus:], tpStatusUser)
		block ^= 1
		for {
			if _, ok := r.Next(); !ok {
				break
			}
		}
		r.Release()
	}
}

// FuzzV3Ring feeds arbitrary bytes as a block handed to user space: the
// walker must never panic nor return a frame outside the block.
func FuzzV3Ring(f *testing.F) {
	const bs = 2048
	good := ringMem(bs)
	fillBlock(f, good, bs, 0, true, packet(60, 1), packet(200, 2))
	f.Add(good)
	f.Add(make([]byte, bs))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, mem := newTestRing(t, bs, 2)
		copy(mem[:bs], data)
		binary.NativeEndian.PutUint32(mem[blkStatus:], tpStatusUser)
		lo := uintptr(unsafe.Pointer(&mem[0]))
		for n := 0; ; n++ {
			if n > bs {
				t.Fatal("more frames than a block can hold")
			}
			fr, ok := r.Next()
			if !ok {
				break
			}
			start := uintptr(unsafe.Pointer(unsafe.SliceData(fr.Raw)))
			if start < lo || start+uintptr(len(fr.Raw)) > lo+bs || fr.Mac > len(fr.Raw) {
				t.Fatalf("frame %d outside its block: %d bytes at +%d", n, len(fr.Raw), start-lo)
			}
		}
		if blockStatus(mem, bs, 0) != tpStatusKernel {
			t.Fatal("block not given back after reading it")
		}
	})
}
