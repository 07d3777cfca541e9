package tun

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/encap/offload"
	ovdnetns "github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/perf/netns/netnstest"
)

// TestWriteSuperFrames: TCP super-frames, as a kernel VTEP sends them over
// a veth with TX offloads on (whole, up to 64 KiB, checksum partial),
// written into a TUN whose kernel forwards them to a container behind it,
// reach the container: Write cuts them at the TUN's MTU, by GSO with a
// virtio-net header and in user space without. Written whole, the kernel
// would drop them at the container's link (IpFragFails).
func TestWriteSuperFrames(t *testing.T) {
	t.Parallel()
	for _, offloads := range []bool{true, false} {
		t.Run("offloads="+strconv.FormatBool(offloads), func(t *testing.T) {
			t.Parallel()
			a := newHost(t, "100.96.1.1", true) // its kernel hands Read super-packets
			b := newHost(t, "100.96.2.1", offloads)
			ct := addContainer(t, b, netip.MustParseAddr("100.96.2.5"))

			var wg sync.WaitGroup
			var biggest atomic.Int64
			vtepPump(t, a.dev, b.dev, &biggest, &wg)
			pump(t, b.dev, a.dev, b.dev.BatchSize(), &wg)
			t.Cleanup(func() {
				a.dev.Close()
				b.dev.Close()
				wg.Wait()
			})

			ln, err := ct.Listen("tcp4", "100.96.2.5:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			const size = 8 << 20
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i*7 + i>>11)
			}
			go func() {
				var c net.Conn
				var err error
				a.ns.Do(func() { c, err = net.Dial("tcp4", ln.Addr().String()) })
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				if _, err := c.Write(data); err != nil {
					t.Error(err)
				}
			}()
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			// Not a timed assertion: a stalled transfer fails instead of
			// hanging the test.
			server.SetDeadline(time.Now().Add(2 * time.Minute))
			got, err := io.ReadAll(server)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("received %d of %d bytes (%v); FragFails %d", len(got), size, err, fragFails(t, b))
			}
			if biggest.Load() <= testMTU {
				t.Errorf("no super-frame written: the largest packet was %d bytes", biggest.Load())
			}
			if n := fragFails(t, b); n != 0 {
				t.Errorf("%d packets dropped by the kernel as too big to forward", n)
			}
			t.Logf("largest packet written %d bytes, TUN MTU %d", biggest.Load(), testMTU)
		})
	}
}

// vtepPump moves packets from one TUN to another as a kernel VTEP on a veth
// with offloads moves them: the segments of each TCP flow that Read hands
// over are merged back into super-frames of up to 64 KiB (Coalesce), which
// go on whole, their checksums partial; a packet left alone goes complete.
func vtepPump(t testing.TB, from, to Device, biggest *atomic.Int64, wg *sync.WaitGroup) {
	const offset = 64
	bufs, sizes := newBatch(from.BatchSize(), offset+65535)
	pkts := make([][]byte, 0, len(bufs))
	var gro offload.GROTable
	var written []offload.Coalesced
	wg.Go(func() {
		for {
			n, err := from.Read(bufs, sizes, offset)
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("Read: %v", err)
			}
			for i := range n {
				bufs[i] = bufs[i][:offset+sizes[i]]
			}
			written = offload.Coalesce(bufs[:n], offset, &gro, written)
			pkts = pkts[:0]
			for _, w := range written {
				p := bufs[w.Index]
				if w.Packets == 1 {
					offload.CompleteChecksum(p[offset:])
				}
				biggest.Store(max(biggest.Load(), int64(len(p)-offset)))
				pkts = append(pkts, p)
			}
			if _, err := to.Write(pkts, offset); errors.Is(err, os.ErrClosed) {
				return
			} else if err != nil {
				t.Errorf("Write: %v", err)
			}
			for i := range n {
				bufs[i] = bufs[i][:cap(bufs[i])]
			}
		}
	})
}

// addContainer makes a namespace behind host h's TUN holding addr, on a
// veth of the TUN's MTU, and has h forward to it.
func addContainer(t *testing.T, h *host, addr netip.Addr) *ovdnetns.NS {
	t.Helper()
	ct := netnstest.New(t, "tunct")
	ctx := context.Background()
	mtu := strconv.Itoa(testMTU)
	for _, step := range [][]string{
		{h.ns.ns.Name, "link", "add", "v0", "mtu", mtu, "type", "veth", "peer", "name", "v1", "mtu", mtu, "netns", ct.Name},
		{h.ns.ns.Name, "addr", "add", "198.18.70.1/30", "dev", "v0"},
		{h.ns.ns.Name, "link", "set", "v0", "up"},
		{h.ns.ns.Name, "route", "add", addr.String() + "/32", "via", "198.18.70.2"},
		{ct.Name, "addr", "add", "198.18.70.2/30", "dev", "v1"},
		{ct.Name, "addr", "add", addr.String() + "/32", "dev", "v1"},
		{ct.Name, "link", "set", "v1", "up"},
		{ct.Name, "link", "set", "lo", "up"},
		{ct.Name, "route", "add", overlay.String(), "via", "198.18.70.1"},
	} {
		ns := h.ns.ns
		if step[0] == ct.Name {
			ns = ct
		}
		if err := ns.IP(ctx, step[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.ns.ns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	return ct
}

// fragFails reads the host's count of packets it could not forward for
// being too big (Ip FragFails).
func fragFails(t *testing.T, h *host) int {
	t.Helper()
	out, err := h.ns.ns.Exec(context.Background(), "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "FragFails" && i < len(f) {
				v, _ := strconv.Atoi(f[i])
				return v
			}
		}
	}
	t.Fatal("no Ip FragFails in /proc/net/snmp")
	return 0
}

// TestSegmenterResumes: a segmenter whose writes block (EAGAIN) goes on
// where it stopped when called again with the same packet, so every
// segment is written once, in order. A nonblocking SOCK_SEQPACKET pair
// with a small buffer stands in for a full TUN queue.
func TestSegmenterResumes(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	const mtu = 1000
	payload := make([]byte, 30000)
	for i := range payload {
		payload[i] = byte(i * 13)
	}
	pkt := tcpSegment(t, netip.AddrPortFrom(remote, 5201), 1, payload)
	var s segmenter
	s.reset(mtu)
	var got []byte
	blocked, segs := 0, 0
	buf := make([]byte, 2*mtu)
	for done := false; !done; {
		switch err := s.write(fds[0], pkt); err {
		case nil:
			done = true
		case unix.EAGAIN:
			blocked++
		default:
			t.Fatal(err)
		}
		for {
			n, err := unix.Read(fds[1], buf)
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if n > mtu {
				t.Fatalf("segment %d: %d bytes, MTU %d", segs, n, mtu)
			}
			ihl := int(buf[0]&0x0f) * 4
			got = append(got, buf[ihl+int(buf[ihl+12]>>4)*4:n]...)
			segs++
		}
	}
	if blocked == 0 {
		t.Error("the writes never blocked: the test proves nothing")
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("%d segments carried %d bytes that differ from the %d sent", segs, len(got), len(payload))
	}
	if s.rest != nil || s.seg != 0 {
		t.Error("segmenter keeps state after the packet")
	}
}
