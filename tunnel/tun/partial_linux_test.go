package tun

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/encap/offload"
)

// socketDevice is a native Device whose queue is one end of a socket pair
// instead of a TUN (no root needed): the test writes what the kernel
// would hand over, virtio-net header first, into the other end.
func socketDevice(t testing.TB, vnet bool, opts ...Option) (d *nativeDevice, kernel int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if d, err = newDevice("socketpair", fds[0], -1); err != nil {
		t.Fatal(err)
	}
	if vnet {
		d.initOffloads(&o)
	}
	t.Cleanup(func() {
		d.Close()
		unix.Close(fds[1])
	})
	return d, fds[1]
}

// kernelHands writes pkt behind h into the kernel's end of a socketDevice.
func kernelHands(t testing.TB, fd int, h offload.VirtioNetHdr, pkt []byte) {
	t.Helper()
	b := make([]byte, offload.VirtioNetHdrLen+len(pkt))
	h.Encode(b)
	copy(b[offload.VirtioNetHdrLen:], pkt)
	if _, err := unix.Write(fd, b); err != nil {
		t.Fatal(err)
	}
}

// partialTCP returns a TCP segment to dst of payload bytes as the kernel
// hands it over with TUN_F_CSUM: its checksum partial, and the header that
// says so.
func partialTCP(t testing.TB, dst netip.AddrPort, payload []byte) (offload.VirtioNetHdr, []byte) {
	t.Helper()
	pkt := tcpSegment(t, dst, 1000, payload)
	sum := encap.PseudoHeaderSum(remote, dst.Addr(), 6, len(pkt)-20)
	pkt[36], pkt[37] = byte(sum>>8), byte(sum)
	return offload.VirtioNetHdr{Flags: offload.VirtioNeedsCsum, HdrLen: 40, CsumStart: 20, CsumOffset: 16}, pkt
}

// TestReadPartial hands a Device a plain packet, a TCP super-packet and a
// single segment with its checksum left to do: ReadPartial leaves the
// last two kinds partial with WithPartialChecksums, and completed they are
// what Read gives; without the option, or without a virtio-net header,
// ReadPartial is Read.
func TestReadPartial(t *testing.T) {
	t.Parallel()
	dst := netip.AddrPortFrom(local, 80)
	plain := udpPacket(t, 1, netip.AddrPortFrom(local, 2), []byte("plain"))
	hs, super := partialTCP(t, dst, bytes.Repeat([]byte("0123456789"), 1000))
	hs.GSOType, hs.GSOSize = offload.GSOTCPv4, 1000 // 10 segments
	h1, single := partialTCP(t, dst, []byte("single"))
	handOver := func(fd int) {
		kernelHands(t, fd, offload.VirtioNetHdr{}, plain)
		kernelHands(t, fd, hs, super)
		kernelHands(t, fd, h1, single)
	}
	wantPartial := []bool{false, true, true, true, true, true, true, true, true, true, true, true}

	// What Read makes of it: complete checksums.
	d, fd := socketDevice(t, true, WithOffloads(), WithPartialChecksums())
	handOver(fd)
	bufs, sizes := newBatch(16, testOffset+1500)
	n, err := d.Read(bufs, sizes, testOffset)
	if n != len(wantPartial) || err != nil {
		t.Fatalf("Read = %d, %v; want %d", n, err, len(wantPartial))
	}
	var complete [][]byte
	for i := range n {
		complete = append(complete, bytes.Clone(bufs[i][testOffset:testOffset+sizes[i]]))
	}

	for _, tt := range []struct {
		name    string
		vnet    bool
		opts    []Option
		partial bool
	}{
		{"partial", true, []Option{WithOffloads(), WithPartialChecksums()}, true},
		{"without WithPartialChecksums", true, []Option{WithOffloads()}, false},
	} {
		d, fd := socketDevice(t, tt.vnet, tt.opts...)
		handOver(fd)
		partial := make([]bool, 16)
		for i := range partial {
			partial[i] = !tt.partial // all to be overwritten
		}
		n, err := d.ReadPartial(bufs, sizes, partial, testOffset)
		if n != len(complete) || err != nil {
			t.Fatalf("%s: ReadPartial = %d, %v", tt.name, n, err)
		}
		for i := range n {
			pkt := bufs[i][testOffset : testOffset+sizes[i]]
			if partial[i] != (tt.partial && wantPartial[i]) {
				t.Fatalf("%s: packet %d partial %v", tt.name, i, partial[i])
			}
			if partial[i] {
				if bytes.Equal(pkt, complete[i]) {
					t.Errorf("%s: packet %d reported partial is complete", tt.name, i)
				}
				if err := offload.CompleteChecksum(pkt); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(pkt, complete[i]) {
				t.Errorf("%s: packet %d differs from Read's", tt.name, i)
			}
		}
		if d.vread.partial != nil {
			t.Errorf("%s: the device keeps the caller's slice", tt.name)
		}
	}

	// Without a virtio-net header the kernel completes checksums itself.
	d, fd = socketDevice(t, false, WithPartialChecksums())
	if _, err := unix.Write(fd, plain); err != nil {
		t.Fatal(err)
	}
	partial := []bool{true, true}
	if n, err := d.ReadPartial(bufs[:2], sizes, partial, testOffset); n != 1 || err != nil || partial[0] {
		t.Errorf("without IFF_VNET_HDR: ReadPartial = %d, %v, partial %v", n, err, partial[0])
	}
}

// TestReadPartialAllocs: ReadPartial allocates nothing.
func TestReadPartialAllocs(t *testing.T) {
	d, fd := socketDevice(t, true, WithOffloads(), WithPartialChecksums())
	hs, super := partialTCP(t, netip.AddrPortFrom(local, 80), make([]byte, 14200))
	hs.GSOType, hs.GSOSize = offload.GSOTCPv4, 1420
	frame := make([]byte, offload.VirtioNetHdrLen+len(super))
	hs.Encode(frame)
	copy(frame[offload.VirtioNetHdrLen:], super)
	bufs, sizes := newBatch(16, testOffset+1500)
	partial := make([]bool, 16)
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		if _, err = unix.Write(fd, frame); err != nil {
			return
		}
		_, err = d.ReadPartial(bufs, sizes, partial, testOffset)
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("ReadPartial: %v allocations per call, want 0", allocs)
	}
}

// pumpPartial is pump with ReadPartial: it completes what was left partial
// when complete is set, as the forwarder does for a peer that checks, and
// counts the packets read partial.
func pumpPartial(t testing.TB, from, to Device, complete bool, partials *atomic.Int64, wg *sync.WaitGroup) {
	const offset = 64
	bufs, sizes := newBatch(from.BatchSize(), offset+65535)
	partial := make([]bool, len(bufs))
	pkts := make([][]byte, len(bufs))
	wg.Go(func() {
		for {
			n, err := from.(PartialReader).ReadPartial(bufs, sizes, partial, offset)
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("ReadPartial: %v", err)
			}
			for i := range n {
				pkts[i] = bufs[i][:offset+sizes[i]]
				if !partial[i] {
					continue
				}
				partials.Add(1)
				if !complete {
					continue
				}
				if err := offload.CompleteChecksum(pkts[i][offset:]); err != nil {
					t.Errorf("CompleteChecksum: %v", err)
				}
			}
			if _, err := to.Write(pkts[:n], offset); errors.Is(err, os.ErrClosed) {
				return
			} else if err != nil {
				t.Errorf("Write: %v", err)
			}
		}
	})
}

// TestOffloadTCPPartial sends TCP through two TUNs, the sender's reads
// leaving checksums partial: a receiving TUN with offloads takes them as
// they are; one without, whose kernel checks every checksum, and one that
// verifies them itself get them completed.
func TestOffloadTCPPartial(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		recv     []Option // of the receiving host's TUN
		complete bool
	}{
		{"capable receiver", []Option{WithOffloads()}, false},
		{"receiver without offloads", nil, true},
		{"verifying receiver", []Option{WithOffloads(), WithChecksumVerify()}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := newHost(t, "100.96.1.1", true, WithPartialChecksums())
			b := newHost(t, "100.96.2.1", false, tt.recv...)
			var wg sync.WaitGroup
			var partials atomic.Int64
			pumpPartial(t, a.dev, b.dev, tt.complete, &partials, &wg)
			pump(t, b.dev, a.dev, b.dev.BatchSize(), &wg)
			t.Cleanup(func() {
				a.dev.Close()
				b.dev.Close()
				wg.Wait()
			})
			client, server := dialPair(t, a, b)

			data := make([]byte, 8<<20)
			for i := range data {
				data[i] = byte(i*7 + i>>11)
			}
			go func() {
				if _, err := client.Write(data); err != nil {
					t.Error(err)
				}
				client.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(server)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(data))
			}
			if partials.Load() == 0 {
				t.Error("no packet was read with its checksum partial")
			}
			t.Logf("%d packets read partial, completed: %v", partials.Load(), tt.complete)
		})
	}
}
