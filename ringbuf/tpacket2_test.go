package ringbuf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// The kernel's V2 frame layout with PACKET_VNET_HDR on an Ethernet device:
// tpacket2_hdr, sockaddr_ll, padding, virtio_net_hdr, then the frame.
const (
	testMac2 = 76 // TPACKET_ALIGN(32+20+16) + 10 - 14
	testNet2 = 90
)

// fillSlot lays out packet p in slot i as the kernel's tpacket_rcv does
// for TPACKET_V2, cut to the slot, and hands it to user space.
func fillSlot(t testing.TB, r *V2Ring, i int, status uint32, p []byte) {
	t.Helper()
	s := r.slot(i)
	clear(s)
	snap := min(len(p), len(s)-testMac2)
	ne := binary.NativeEndian
	ne.PutUint32(s[f2Len:], uint32(len(p)))
	ne.PutUint32(s[f2Snaplen:], uint32(snap))
	ne.PutUint16(s[f2Mac:], testMac2)
	ne.PutUint16(s[f2Net:], testNet2)
	copy(s[testMac2:], p[:snap])
	ne.PutUint32(s[f2Status:], tpStatusUser|status)
}

func slotStatus(r *V2Ring, i int) uint32 {
	return binary.NativeEndian.Uint32(r.slot(i)[f2Status:])
}

func newTestV2Ring(t testing.TB, blockSize, blocks, frameSize int) *V2Ring {
	t.Helper()
	r, err := NewV2Ring(ringMem(blockSize*blocks), blockSize, blocks, frameSize)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestV2RingWalksFramesInOrder(t *testing.T) {
	t.Parallel()
	// 3 frames of 1360 in each 4096-byte block (the last 16 bytes unused), 2
	// blocks: 6 slots, the fourth at the start of block 1.
	const bs, nb, fs = 4096, 2, 1360
	r := newTestV2Ring(t, bs, nb, fs)
	if r.frames != 6 {
		t.Fatalf("%d slots, want 6", r.frames)
	}
	if &r.slot(3)[0] != &r.mem[bs] {
		t.Fatal("slot 3 does not start block 1")
	}
	if r.Ready() {
		t.Fatal("Ready on a ring the kernel has not filled")
	}
	for round := range 2 { // and round the ring again
		for i := range r.frames {
			fillSlot(t, r, i, 0x80, packet(60+i, byte(i+round)))
		}
		for i := range r.frames {
			f, ok := r.Next()
			if !ok {
				t.Fatalf("round %d frame %d: none", round, i)
			}
			if !bytes.Equal(f.Data(), packet(60+i, byte(i+round))) || f.Len != 60+i || f.Mac != testMac2 || f.Net != testNet2 || f.Status&0x80 == 0 {
				t.Fatalf("round %d frame %d: %d bytes at mac %d net %d status %#x", round, i, len(f.Data()), f.Mac, f.Net, f.Status)
			}
			if slotStatus(r, i) == tpStatusKernel {
				t.Fatalf("slot %d given back while its frame may be in use", i)
			}
			if i > 0 && slotStatus(r, i-1) != tpStatusKernel {
				t.Fatalf("slot %d not given back by the next Next", i-1)
			}
		}
		if _, ok := r.Next(); ok {
			t.Fatal("a frame from a slot the kernel owns")
		}
		if slotStatus(r, r.frames-1) != tpStatusKernel {
			t.Fatal("the last slot not given back")
		}
	}
	if r.Corrupt() != 0 {
		t.Fatalf("Corrupt = %d on well-formed frames", r.Corrupt())
	}
}

// A slot the kernel hands over is seen at once, one at a time: nothing
// waits for a block to fill.
func TestV2RingLoneFrame(t *testing.T) {
	t.Parallel()
	r := newTestV2Ring(t, 1<<16, 4, 2048)
	fillSlot(t, r, 0, 0, packet(64, 1))
	if !r.Ready() {
		t.Fatal("a lone frame is not ready")
	}
	if f, ok := r.Next(); !ok || f.Data()[0] != 1 {
		t.Fatal("a lone frame is not returned")
	}
	r.Release()
	if slotStatus(r, 0) != tpStatusKernel || r.Ready() {
		t.Fatal("Release did not give back the slot, or Ready after it")
	}
}

// A packet larger than its slot comes cut to it, TP_STATUS_COPY set when
// the kernel queued it whole.
func TestV2RingCutFrame(t *testing.T) {
	t.Parallel()
	r := newTestV2Ring(t, 1<<16, 2, 2048)
	fillSlot(t, r, 0, TPStatusCopy, packet(5000, 1))
	f, ok := r.Next()
	if !ok || f.Len != 5000 || len(f.Data()) != 2048-testMac2 || f.Status&TPStatusCopy == 0 {
		t.Fatalf("cut frame: %v, len %d, %d bytes, status %#x", ok, f.Len, len(f.Data()), f.Status)
	}
}

// Headers that do not fit their slot are skipped and counted, never read
// out of the slot; the next frame is delivered.
func TestV2RingCorruptFrames(t *testing.T) {
	t.Parallel()
	ne := binary.NativeEndian
	for name, corrupt := range map[string]func(s []byte){
		"snaplen past slot": func(s []byte) { ne.PutUint32(s[f2Snaplen:], 2048) },
		"mac inside header": func(s []byte) { ne.PutUint16(s[f2Mac:], 8) },
		"mac past slot":     func(s []byte) { ne.PutUint16(s[f2Mac:], 4000) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newTestV2Ring(t, 1<<14, 2, 2048)
			fillSlot(t, r, 0, 0, packet(100, 1))
			corrupt(r.slot(0))
			fillSlot(t, r, 1, 0, packet(50, 9))
			if f, ok := r.Next(); !ok || f.Data()[0] != 9 {
				t.Fatalf("the good frame after the bad one: %v", ok)
			}
			if r.Corrupt() != 1 {
				t.Errorf("Corrupt = %d, want 1", r.Corrupt())
			}
			if slotStatus(r, 0) != tpStatusKernel {
				t.Error("damaged slot not given back")
			}
		})
	}
}

func TestNewV2RingRejectsBadLayouts(t *testing.T) {
	t.Parallel()
	mem := ringMem(8192)
	for _, c := range []struct {
		mem                  []byte
		size, nblocks, frame int
	}{
		{mem, 4096, 2, 16},     // no room past the header
		{mem, 4096, 2, 1000},   // frames not 16-byte aligned
		{mem, 4096, 2, 8192},   // frames larger than blocks
		{mem, 4096, 3, 2048},   // more than the memory
		{mem, 4096, 0, 2048},   // no blocks
		{mem[1:], 2048, 2, 64}, // unaligned memory
	} {
		if _, err := NewV2Ring(c.mem, c.size, c.nblocks, c.frame); !errors.Is(err, ErrRingLayout) {
			t.Errorf("NewV2Ring(%d bytes, %d, %d, %d) = %v, want ErrRingLayout", len(c.mem), c.size, c.nblocks, c.frame, err)
		}
	}
}

func TestV2RingAllocs(t *testing.T) {
	r := newTestV2Ring(t, 1<<16, 2, 2048)
	p := packet(1400, 1)
	allocs := testing.AllocsPerRun(100, func() {
		for i := range 32 {
			fillSlot(t, r, (r.cur+i)%r.frames, 0, p)
		}
		n := 0
		for {
			if _, ok := r.Next(); !ok {
				break
			}
			n++
		}
		if n != 32 {
			t.Fatalf("read %d frames, want 32", n)
		}
	})
	if allocs != 0 {
		t.Errorf("walking frames allocates %v times", allocs)
	}
}

func BenchmarkV2RingNext(b *testing.B) {
	const frames = 128
	r := newTestV2Ring(b, 1<<18, 1, 2048)
	for i := range frames {
		fillSlot(b, r, i, 0, packet(1400, byte(i)))
	}
	b.ReportAllocs()
	b.SetBytes(frames * 1400)
	for b.Loop() {
		for i := range frames {
			binary.NativeEndian.PutUint32(r.slot(i)[f2Status:], tpStatusUser)
		}
		for {
			if _, ok := r.Next(); !ok {
				break
			}
		}
	}
}

// FuzzV2Ring feeds arbitrary bytes as a slot handed to user space: the
// walker must never panic nor return a frame outside the slot.
func FuzzV2Ring(f *testing.F) {
	const fs = 2048
	r := newTestV2Ring(f, fs, 2, fs)
	fillSlot(f, r, 0, 0, packet(200, 1))
	f.Add(bytes.Clone(r.slot(0)))
	f.Add(make([]byte, fs))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newTestV2Ring(t, fs, 2, fs)
		s := r.slot(0)
		copy(s, data)
		binary.NativeEndian.PutUint32(s[f2Status:], tpStatusUser)
		if fr, ok := r.Next(); ok {
			if &fr.Raw[0] != &s[0] || len(fr.Raw) > fs || fr.Mac > len(fr.Raw) {
				t.Fatalf("frame outside its slot: %d bytes, mac %d", len(fr.Raw), fr.Mac)
			}
		}
		if _, ok := r.Next(); ok || slotStatus(r, 0) != tpStatusKernel {
			t.Fatal("slot 0 not given back, or a frame from slot 1")
		}
	})
}
